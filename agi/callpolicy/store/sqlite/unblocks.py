"""Unblocks: a customer's exceptions to the restricted destinations (`unblock`, `reblock`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ...policy import UnblockKind, unblock_state
from ..model import Actor, StoreError, iso, parse_iso, utcnow
from .customers import Customers
from .transaction import Transaction

__all__ = ["Unblocks"]


class Unblocks(Customers):
    """Listing, adding and revoking unblocks."""

    async def unblocks(
        self, customer_id: str | None = None, *, include_inactive: bool = False,
        now: datetime | None = None,
    ) -> list[dict[str, Any]]:
        now = now or utcnow()
        sql = "SELECT * FROM unblocks"
        where, params = [], []
        if customer_id is not None:
            where.append("customer_id = ?")
            params.append(customer_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY customer_id, id"
        result = []
        for row in await self._rows(sql, params):
            item = dict(row)
            item["state"] = unblock_state(
                bool(row["revoked_at"]), parse_iso(row["expires_at"]), now)
            if include_inactive or item["state"] == "active":
                result.append(item)
        return result

    async def add_unblock(
        self, customer_id: str, kind: UnblockKind, value: str, actor: Actor,
        expires_at: datetime | None,
    ) -> int:
        now = utcnow()
        async with Transaction(self._db, self._write_lock):
            await self._require_customer(customer_id)
            cursor = await self._db.execute(
                "INSERT INTO unblocks (customer_id, kind, value, created_at, created_by, ticket,"
                " reason, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (customer_id, kind.value, value, iso(now), actor.by, actor.ticket,
                 actor.reason, iso(expires_at)))
            unblock_id = cursor.lastrowid
            assert unblock_id is not None
            await self._audit(actor, "unblock.add", customer_id, None,
                              {"id": unblock_id, "kind": kind.value, "value": value,
                               "expires_at": iso(expires_at)}, now)
        return unblock_id

    async def reblock(
        self, customer_id: str, kind: UnblockKind, value: str, actor: Actor
    ) -> list[int]:
        """Revoke every active unblock of this kind and value. Error if there is none."""
        now = utcnow()
        async with Transaction(self._db, self._write_lock):
            await self._require_customer(customer_id)
            rows = await self._rows(
                "SELECT id, expires_at FROM unblocks WHERE customer_id = ? AND kind = ?"
                " AND value = ? AND revoked_at IS NULL",
                (customer_id, kind.value, value))
            # `revoked_at IS NULL` pre-filters; policy.unblock_state is the rule.
            ids = [r["id"] for r in rows
                   if unblock_state(False, parse_iso(r["expires_at"]), now) == "active"]
            if not ids:
                raise StoreError(
                    f"customer {customer_id!r} has no active unblock for {kind.value} {value}")
            await self._db.executemany(
                "UPDATE unblocks SET revoked_at = ?, revoked_by = ?, revoked_ticket = ?"
                " WHERE id = ?",
                [(iso(now), actor.by, actor.ticket, i) for i in ids])
            await self._audit(actor, "unblock.reblock", customer_id,
                              {"ids": ids, "kind": kind.value, "value": value}, None, now)
        return ids
