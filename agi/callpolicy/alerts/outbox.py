"""The persistent outbox: every alert is written here, one row per channel, before any
delivery is tried; a delivered row is marked, and purged after KEEP_DONE.

Its own local SQLite file (config.outbox_path), never the policy database: alerts must go out
when the database is what is down, and each node delivers its own. Bounded: over `max_rows`
the oldest delivered/expired rows go first, then (counted as dropped) the oldest pending
ones. Through aiosqlite: the event loop never waits on the disk.

The same file keeps the open state alerts (table open_states: written when one is raised,
deleted when it is resolved), so that a restarted daemon keeps their ids and resolves
them (aggregate.StateTracker.restore)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

KEEP_DONE = 7 * 86400.0  # s: delivered / expired rows are kept this long (for inspection)
SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    channel TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'expired')),
    done_at REAL,
    not_before REAL NOT NULL DEFAULT 0  -- a row whose content a receiver refused waits
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (state, channel, id);
CREATE TABLE IF NOT EXISTS open_states (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    since REAL NOT NULL,
    details TEXT NOT NULL,  -- JSON
    PRIMARY KEY (kind, key)
);
"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    alert_id: str
    kind: str
    channel: str
    payload: bytes
    created: float
    attempts: int


@dataclass(frozen=True, slots=True)
class NewRow:
    alert_id: str
    kind: str
    channel: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class OpenState:
    """A raised, not yet resolved state alert."""

    kind: str
    key: str
    alert_id: str
    since: float
    details: Mapping[str, Any]


#: alert id -> the state alert it raised, or None: resolved (its row is deleted)
StateChanges = Mapping[str, OpenState | None]


class Outbox:
    def __init__(self, conn: aiosqlite.Connection, path: Path, max_rows: int) -> None:
        self._conn = conn
        self.path = path
        self.max_rows = max_rows

    @classmethod
    async def open(cls, path: Path, max_rows: int) -> Outbox:
        conn = await aiosqlite.connect(path, isolation_level=None)
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=FULL")  # a written alert survives a crash
            await conn.execute("PRAGMA busy_timeout=5000")
            await conn.executescript(SCHEMA)
            columns = {row[1] for row in await conn.execute_fetchall(
                "PRAGMA table_info(outbox)")}
            if "not_before" not in columns:  # an outbox file of the first release
                await conn.execute(
                    "ALTER TABLE outbox ADD COLUMN not_before REAL NOT NULL DEFAULT 0")
        except BaseException:
            await conn.close()
            raise
        return cls(conn, path, max_rows)

    async def close(self) -> None:
        await self._conn.close()

    async def add(self, rows: list[NewRow], now: float,
                  states: StateChanges | None = None) -> list[str]:
        """Write `rows` and the open state alerts' `states` changes (one transaction);
        returns the kinds of pending rows dropped to stay within max_rows (the oldest; only
        when every kept row is pending)."""
        if not rows and not states:
            return []
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            await self._conn.executemany(
                "INSERT INTO outbox (alert_id, kind, channel, payload, created) "
                "VALUES (?, ?, ?, ?, ?)",
                [(r.alert_id, r.kind, r.channel, r.payload, now) for r in rows])
            await self._write_states(states or {})
            dropped = await self._trim() if rows else []
            await self._conn.execute("COMMIT")
        except BaseException:
            await self._conn.execute("ROLLBACK")
            raise
        return dropped

    async def _write_states(self, states: StateChanges) -> None:
        await self._conn.executemany(
            "DELETE FROM open_states WHERE alert_id = ?",
            [(alert_id,) for alert_id, state in states.items() if state is None])
        await self._conn.executemany(
            "INSERT OR REPLACE INTO open_states (kind, key, alert_id, since, details) "
            "VALUES (?, ?, ?, ?, ?)",
            [(s.kind, s.key, s.alert_id, s.since, json.dumps(dict(s.details), default=str))
             for s in states.values() if s is not None])

    async def open_states(self) -> list[OpenState]:
        """The state alerts raised and not resolved (by an earlier run of the daemon)."""
        rows = await self._conn.execute_fetchall(
            "SELECT kind, key, alert_id, since, details FROM open_states ORDER BY since")
        return [OpenState(r[0], r[1], r[2], r[3], _details(r[4])) for r in rows]

    async def _trim(self) -> list[str]:
        (count,), = await self._conn.execute_fetchall("SELECT count(*) FROM outbox")
        excess = count - self.max_rows
        if excess <= 0:
            return []
        await self._conn.execute(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state != 'pending' "
            "ORDER BY id LIMIT ?)", (excess,))
        (count,), = await self._conn.execute_fetchall("SELECT count(*) FROM outbox")
        excess = count - self.max_rows
        if excess <= 0:
            return []
        oldest = await self._conn.execute_fetchall(
            "SELECT id, kind FROM outbox ORDER BY id LIMIT ?", (excess,))
        await self._conn.executemany("DELETE FROM outbox WHERE id = ?",
                                     [(row[0],) for row in oldest])
        return [str(row[1]) for row in oldest]

    async def pending(self, channel: str, now: float, limit: int = 20) -> list[OutboxRow]:
        """The channel's undelivered rows due at `now`, oldest first."""
        rows = await self._conn.execute_fetchall(
            "SELECT id, alert_id, kind, channel, payload, created, attempts FROM outbox "
            "WHERE state = 'pending' AND channel = ? AND not_before <= ? ORDER BY id LIMIT ?",
            (channel, now, limit))
        return [OutboxRow(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6]) for r in rows]

    async def delivered(self, row_id: int, now: float) -> None:
        await self._conn.execute(
            "UPDATE outbox SET state = 'delivered', done_at = ?, attempts = attempts + 1 "
            "WHERE id = ?", (now, row_id))

    async def failed(self, row_id: int, error: str, not_before: float = 0.0) -> None:
        """One more failed attempt; `not_before`: the row alone waits until then."""
        await self._conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, not_before = ? "
            "WHERE id = ?", (error[:500], not_before, row_id))

    async def expire(self, now: float, give_up_after: float) -> list[tuple[str, str]]:
        """Mark rows pending for longer than `give_up_after` expired: their (kind, channel)."""
        cutoff = now - give_up_after
        rows = await self._conn.execute_fetchall(
            "SELECT id, kind, channel FROM outbox WHERE state = 'pending' AND created < ? "
            "ORDER BY id",
            (cutoff,))
        await self._conn.executemany(
            "UPDATE outbox SET state = 'expired', done_at = ? WHERE id = ?",
            [(now, r[0]) for r in rows])
        return [(str(r[1]), str(r[2])) for r in rows]

    async def purge(self, now: float, keep: float = KEEP_DONE) -> int:
        cursor = await self._conn.execute(
            "DELETE FROM outbox WHERE state != 'pending' AND done_at < ?", (now - keep,))
        return cursor.rowcount

    async def pending_count(self) -> int:
        (count,), = await self._conn.execute_fetchall(
            "SELECT count(*) FROM outbox WHERE state = 'pending'")
        return int(count)


def _details(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
