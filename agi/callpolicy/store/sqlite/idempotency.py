"""The HTTP API's idempotency keys (schema migration 7): the stored response of a write, per
(owner, key), until it expires. Operational state, not policy: not audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..model import iso, utcnow
from .connection import Connection
from .transaction import Transaction

__all__ = ["IdempotencyKeys"]


class IdempotencyKeys(Connection):
    async def idempotent_response(self, owner: str, key: str,
                                  now: datetime) -> dict[str, Any] | None:
        rows = await self._rows(
            "SELECT request_hash, status, body FROM idempotency_keys"
            " WHERE owner = ? AND key = ? AND expires_at > ?", (owner, key, iso(now)))
        if not rows:
            return None
        request_hash, status, body = rows[0]
        return {"request_hash": request_hash, "status": status, "body": body}

    async def save_idempotent_response(self, owner: str, key: str, request_hash: str,
                                       status: int, body: str, expires_at: datetime) -> None:
        now = utcnow()
        async with Transaction(self._db, self._write_lock):
            await self._db.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?",
                                   (iso(now),))
            await self._db.execute(
                "INSERT INTO idempotency_keys (owner, key, request_hash, status, body,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (owner, key) DO UPDATE SET request_hash = excluded.request_hash,"
                " status = excluded.status, body = excluded.body,"
                " created_at = excluded.created_at, expires_at = excluded.expires_at",
                (owner, key, request_hash, status, body, iso(now), iso(expires_at)))
