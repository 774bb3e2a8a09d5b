"""The audit log: its rows are written in the transaction of the change they record
(triggers make the table append-only), and read back by `audit log`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..model import Actor, iso
from .connection import Connection

__all__ = ["AUDIT_INSERT", "AuditLog", "audit_json", "audit_row"]

AUDIT_INSERT = ("INSERT INTO audit (at, actor, ticket, reason, action, customer_id, before,"
                " after) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


class AuditLog(Connection):
    """Writing an audit row inside a transaction, and reading the log."""

    async def _audit(
        self,
        actor: Actor,
        action: str,
        customer_id: str | None,
        before: object,
        after: object,
        at: datetime,
    ) -> None:
        await self._db.execute(
            AUDIT_INSERT, audit_row(actor, action, customer_id, before, after, at))

    async def audit_log(self, customer_id: str | None = None, limit: int = 50) -> list[dict]:
        if customer_id is None:
            rows = await self._rows(
                "SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = await self._rows(
                "SELECT * FROM audit WHERE customer_id = ? ORDER BY id DESC LIMIT ?",
                (customer_id, limit),
            )
        result = []
        for row in reversed(rows):
            item = dict(row)
            item["before"] = json.loads(row["before"]) if row["before"] else None
            item["after"] = json.loads(row["after"]) if row["after"] else None
            result.append(item)
        return result


def audit_row(actor: Actor, action: str, customer_id: str | None, before: object,
              after: object, at: datetime) -> tuple[Any, ...]:
    return (iso(at), actor.by, actor.ticket, actor.reason, action, customer_id,
            audit_json(before) if before is not None else None,
            audit_json(after) if after is not None else None)


def audit_json(value: object) -> str:
    """An audit image."""
    return json.dumps(value, sort_keys=True)
