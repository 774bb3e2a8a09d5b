"""The HTTP API's idempotency keys (schema migration 7): the stored response of a write, per
(owner, key), until it expires. Operational state, not policy: not audited.

A key is claimed (a row with status PENDING) in its own committed transaction before the write
runs, then given the write's response, or released if the write was refused. The primary key
makes the claim atomic across processes (several API servers on one PostgreSQL); a claim left
PENDING by a server that stopped mid-write says "outcome unknown" instead of the write being
done a second time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..model import IDEMPOTENCY_PENDING as PENDING
from ..model import iso, utcnow
from .connection import Connection
from .transaction import Transaction

__all__ = ["IdempotencyKeys"]


class IdempotencyKeys(Connection):
    async def idempotent_response(self, owner: str, key: str,
                                  now: datetime) -> dict[str, Any] | None:
        rows = await self._rows(
            "SELECT request_hash, status, body, created_at FROM idempotency_keys"
            " WHERE owner = ? AND key = ? AND expires_at > ?", (owner, key, iso(now)))
        if not rows:
            return None
        request_hash, status, body, created_at = rows[0]
        return {"request_hash": request_hash, "status": status, "body": body,
                "created_at": created_at}

    async def claim_idempotency_key(self, owner: str, key: str, request_hash: str,
                                    now: datetime, expires_at: datetime
                                    ) -> dict[str, Any] | None:
        async with Transaction(self._db, self._write_lock):
            await self._db.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?",
                                   (iso(now),))
            cursor = await self._db.execute(
                "INSERT INTO idempotency_keys (owner, key, request_hash, status, body,"
                " created_at, expires_at) VALUES (?, ?, ?, ?, '', ?, ?)"
                " ON CONFLICT (owner, key) DO NOTHING",
                (owner, key, request_hash, PENDING, iso(now), iso(expires_at)))
            if cursor.rowcount == 1:
                return None
        found = await self.idempotent_response(owner, key, now)
        if found is None:  # expired between the two: claimed by nobody, so claim it
            return await self.claim_idempotency_key(owner, key, request_hash, now, expires_at)
        return found

    async def release_idempotency_key(self, owner: str, key: str) -> None:
        async with Transaction(self._db, self._write_lock):
            await self._db.execute(
                "DELETE FROM idempotency_keys WHERE owner = ? AND key = ? AND status = ?",
                (owner, key, PENDING))

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
