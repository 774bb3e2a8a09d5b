"""Call records (art. 4.3): billing data, not the audit log. The daemon upserts them in
batches (`record_calls`); `purge_calls` deletes old ones (the purge itself is audited)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncGenerator, Sequence
from datetime import datetime
from typing import Any

from ...live.records import DERIVED, FIELDS, CallRecord, derived_columns, timestamp
from ..model import Actor, StoreError, iso, utcnow
from .audit import AuditLog
from .transaction import Transaction

__all__ = ["Calls"]

_BATCH = 500  # uniqueids per lookup (well under SQLite's bound-parameter limit)
_COLUMNS = (*FIELDS, *DERIVED)  # CallRecord.row's order
_UPSERT = (f"INSERT INTO calls ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
           " ON CONFLICT (uniqueid) DO UPDATE SET "
           + ", ".join([f"{c} = coalesce(excluded.{c}, calls.{c})" for c in FIELDS[1:]]
                       + [f"{c} = excluded.{c}" for c in DERIVED]))
_BASIS = ("category", "destination", "answered_at", "ended_at")  # what DERIVED comes from


class Calls(AuditLog):
    """Writing, reading and purging call records."""

    async def calls(
        self, customer_id: str | None = None, since: datetime | None = None,
        until: datetime | None = None, limit: int | None = None,
    ) -> list[CallRecord]:
        """Call records by start time (since <= started_at < until), oldest first; with
        `limit`, the most recent `limit` of them (still oldest first)."""
        if limit is None:
            return [r async for r in self.iter_calls(customer_id, since, until)]
        if limit < 1:
            raise ValueError("limit must be at least 1")
        sql, params = _calls_query(customer_id, since, until)
        rows = await self._rows(sql + " ORDER BY started_at DESC, uniqueid DESC LIMIT ?",
                                (*params, limit))
        return [_call_from_row(row) for row in reversed(rows)]

    async def iter_calls(
        self, customer_id: str | None = None, since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncGenerator[CallRecord, None]:
        """Like `calls` without a limit, streamed (an export of months of calls)."""
        sql, params = _calls_query(customer_id, since, until)
        async with self._db.execute(sql + " ORDER BY started_at, uniqueid", params) as cursor:
            async for row in cursor:
                yield _call_from_row(row)

    async def record_calls(self, records: Sequence[CallRecord]) -> None:
        """Insert or update call records, all in one transaction (the daemon batches).

        A record with only some fields (the answer, the hang-up) updates those: a None field
        keeps the stored value. Several records of one uniqueid in a batch apply in order.
        The DERIVED columns (free, duration_seconds, billable_seconds) are computed from the
        merged record."""
        if not records:
            return
        batch: dict[str, CallRecord] = {}  # each uniqueid's updates merged, in order
        for record in records:
            old = batch.get(record.uniqueid)
            batch[record.uniqueid] = old.merged(record) if old else record
        # A call's first record (its decision, started_at) is normally not stored yet: its
        # row is not read unless a count says one of them is (a replay, a restart). For the
        # others, only what the DERIVED columns need is read; the upsert itself keeps a
        # stored value where the update has None (coalesce), as CallRecord.merged does.
        first = [u for u, r in batch.items() if r.started_at is not None]
        later = [u for u, r in batch.items() if r.started_at is None]
        async with Transaction(self._db, self._write_lock):
            if first and await self._stored_count(first):
                later += first
            stored = await self._stored_basis(later)
            await self._db.executemany(_UPSERT, [_row(r, stored.get(u))
                                                 for u, r in batch.items()])

    async def _stored_count(self, ids: list[str]) -> int:
        count = 0
        for chunk in _chunks(ids):
            (found,), = await self._rows(
                f"SELECT count(*) FROM calls WHERE uniqueid IN ({','.join('?' * len(chunk))})",
                chunk)
            count += found
        return count

    async def _stored_basis(self, ids: list[str]) -> dict[str, tuple[Any, ...]]:
        """uniqueid -> the stored (category, destination, answered_at, ended_at)."""
        stored: dict[str, tuple[Any, ...]] = {}
        for chunk in _chunks(ids):
            for row in await self._rows(
                    f"SELECT uniqueid, {', '.join(_BASIS)} FROM calls"
                    f" WHERE uniqueid IN ({','.join('?' * len(chunk))})", chunk):
                stored[row[0]] = tuple(row[1:])
        return stored

    async def purge_calls(self, older_than: datetime, actor: Actor) -> int:
        """Delete the call records that started before `older_than`; audited ("calls.purge",
        with the count). Records without a start time go by their answer or hang-up time."""
        now = utcnow()
        if older_than.utcoffset() is None:
            raise StoreError("purge_calls needs a timezone-aware time")
        if older_than > now:
            raise StoreError("purge_calls: the cut-off is in the future "
                             "(that would delete calls still going on)")
        cutoff = timestamp(older_than)
        async with Transaction(self._db, self._write_lock):
            cursor = await self._db.execute(
                "DELETE FROM calls WHERE started_at < ?"
                " OR (started_at IS NULL AND coalesce(ended_at, answered_at) < ?)",
                (cutoff, cutoff))
            count = cursor.rowcount
            await self._audit(actor, "calls.purge", None, None,
                              {"deleted": count, "older_than": iso(older_than)}, now)
        return count


def _calls_query(customer_id: str | None, since: datetime | None,
                 until: datetime | None) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if customer_id is not None:
        where.append("customer_id = ?")
        params.append(customer_id)
    if since is not None:
        where.append("started_at >= ?")
        params.append(timestamp(since))
    if until is not None:
        where.append("started_at < ?")
        params.append(timestamp(until))
    sql = f"SELECT {', '.join(FIELDS)} FROM calls"
    return (sql + " WHERE " + " AND ".join(where) if where else sql), params


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[start:start + _BATCH] for start in range(0, len(ids), _BATCH)]


def _row(record: CallRecord, stored: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """The upsert's parameters: the record's fields (None: keep the stored value) and the
    DERIVED columns of the merged row (`stored`: its basis, None if there is no row)."""
    if stored is None:
        return record.row()
    category, destination, answered, ended = stored
    return (*record.fields_row(), *derived_columns(
        record.category if record.category is not None else category,
        record.destination if record.destination is not None else destination,
        record.answered_at if record.answered_at is not None else _moment(answered),
        record.ended_at if record.ended_at is not None else _moment(ended)))


def _moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _call_from_row(row: sqlite3.Row) -> CallRecord:
    return CallRecord.from_fields({name: row[name] for name in FIELDS})


