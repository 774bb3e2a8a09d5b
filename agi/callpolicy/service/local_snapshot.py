"""The daemon's local snapshot for the fallback AGI (PostgreSQL only; store/local_copy.py).

Written at start and after every snapshot change, at most every WRITE_INTERVAL: the file is
at most WRITE_INTERVAL + one copy behind the daemon's own snapshot (the issue's bound: 5 s).
While PostgreSQL is unreachable nothing changes, so the last copy stays right; a copy that
fails is retried at the next round, logged once per episode (`local_snapshot_failed`, error;
`local_snapshot_recovered`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import structlog

from ..store.local_copy import read_postgresql, set_aside, write_sqlite

log = structlog.get_logger("callpolicy.local_snapshot")

WRITE_INTERVAL = 2.0  # s: at most one copy per interval (a copy of 100 000 customers is work)


class LocalSnapshot:
    def __init__(self, url: str, path: Path) -> None:
        self.url = url
        self.path = path
        self.written_at: float | None = None  # wall clock of the last good copy (status)
        self._dirty = asyncio.Event()
        self._dirty.set()  # the first copy at start
        self._failing = False

    def changed(self) -> None:
        """The daemon's snapshot changed: copy it (soon)."""
        self._dirty.set()

    async def run_forever(self) -> None:
        moved = await asyncio.to_thread(set_aside, self.path)
        if moved is not None:
            log.warning("local_snapshot_set_aside", path=str(self.path), moved_to=str(moved),
                        detail="a SQLite database that is not a local snapshot was there")
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            started = time.monotonic()
            if not await self._write():
                self._dirty.set()  # again at the next round
            await asyncio.sleep(max(0.0, WRITE_INTERVAL - (time.monotonic() - started)))

    async def _write(self) -> bool:
        try:
            tables = await read_postgresql(self.url)
            await asyncio.to_thread(write_sqlite, self.path, tables)
        except Exception as exc:
            if not self._failing:
                log.error("local_snapshot_failed", path=str(self.path),
                          error=f"{type(exc).__name__}: {exc}",
                          kept="the last copy" if self.written_at else "none yet")
            self._failing = True
            return False
        self.written_at = time.time()
        if self._failing:
            log.info("local_snapshot_recovered", path=str(self.path))
        self._failing = False
        return True
