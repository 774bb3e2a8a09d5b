"""The daemon's call-record writer: to the database, else to the spool; bounded; nothing lost.

Every round (`flush`, each 0.5 s) takes the new record updates and:
1. replays the spool first if it holds any (`records_spool`): older updates go first, because
   `Store.record_calls` merges a call's updates in order;
2. writes the updates in one transaction. If the database refuses a record (a constraint, a
   value it cannot store), the batch is halved until the bad record is alone: the others are
   written, the bad one goes to the spool as rejected (`call_record_rejected`, with its
   uniqueid and the error) and the writer goes on;
3. if the database is unavailable (locked, read-only, disk full, its file removed or replaced,
   the connection lost), the updates go to the spool (`call_records_db_unavailable`, once per
   episode; `call_records_db_available` when a write succeeds again) and the connection is
   reopened on the next round;
4. what neither takes (spool full or unwritable: `call_spool_full`, `call_spool_failed`) stays
   in memory, up to `max_pending` updates; beyond that the newest are dropped:
   `call_records_dropped` (error, once per episode, with the count) and
   callpolicy_call_records_dropped_total.
`close` does a last round at shutdown: the last updates go to the database, else the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import structlog

from ..service.metrics import Metrics
from ..store import StoreBackend, StoreError, StoreLocation, file_identity, open_store
from .records import CallRecord
from .records_spool import CallSpool

log = structlog.get_logger("callpolicy.records")

MAX_PENDING = 100_000  # record updates in memory that neither the database nor the spool took
REPLAY_CHUNK = 2_000  # spooled updates per transaction on replay

#: errors that say the database cannot take any write now (not the record's fault)
DATABASE_FAULTS = (sqlite3.OperationalError, sqlite3.InternalError, StoreError)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def database_fault(exc: BaseException) -> bool:
    # a plain DatabaseError (not a subclass) is "file is not a database" / "malformed"
    return isinstance(exc, DATABASE_FAULTS) or type(exc) is sqlite3.DatabaseError


class _Unavailable(Exception):
    """The database stopped taking writes; `index`: the first record not written."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


class RecordWriter:
    def __init__(self, db_path: Path | StoreLocation, spool: CallSpool, metrics: Metrics,
                 max_pending: int = MAX_PENDING) -> None:
        self.db_path = db_path
        self.spool = spool
        self.metrics = metrics
        self.max_pending = max_pending
        self.backlog: list[CallRecord] = []  # in neither the database nor the spool, in order
        self._store: StoreBackend | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._scanned = False
        self._db_down = False  # episode flags: log once, then once when it ends
        self._spool_problem: str | None = None
        self._dropped = 0  # in the current drop episode

    # -- the rounds --------------------------------------------------------------------------

    async def flush(self, new: Sequence[CallRecord]) -> None:
        if not self._scanned:
            await self._scan_spool()
        self.backlog.extend(new)
        if self.backlog or self.spool.pending:
            store = await self._connection()
            if store is not None and self.spool.pending:
                await self._replay(store)
            if self._store is not None and not self.spool.pending and self.backlog:
                handled, rejected = await self._write(self._store, self.backlog)
                self.backlog = self.backlog[handled:]
                await self._keep_rejected(rejected)
            if self.backlog and (self._store is None or self.spool.pending):
                await self._spool_backlog()
        self._bound()
        self.metrics.set_call_records_spooled(self.spool.pending)

    async def close(self, last: Sequence[CallRecord]) -> None:
        """Shutdown: a last round; whatever is still in memory then is lost (and said so)."""
        await self.flush(last)
        if self.backlog:
            log.error("call_records_dropped", count=len(self.backlog),
                      reason="shutdown: neither the database nor the spool took them",
                      spool=str(self.spool.path))
            self.metrics.call_records_dropped_add(len(self.backlog))
            self.backlog = []
        await self._close_store()

    def _bound(self) -> None:
        """Keep at most max_pending updates in memory: the newest beyond it are dropped."""
        dropped = len(self.backlog) - self.max_pending
        if dropped > 0:
            del self.backlog[self.max_pending:]
            if not self._dropped:
                log.error("call_records_dropped", count=dropped, max_pending=self.max_pending,
                          reason="neither the database nor the spool takes them, memory full",
                          spool=str(self.spool.path))
            self._dropped += dropped
            self.metrics.call_records_dropped_add(dropped)
        elif self._dropped and len(self.backlog) < self.max_pending:  # room again
            log.warning("call_records_dropping_ended", dropped=self._dropped)
            self._dropped = 0

    # -- the database ------------------------------------------------------------------------

    async def _connection(self) -> StoreBackend | None:
        """The writer's own connection, (re)opened as needed; None if the database is not
        there or not usable."""
        if self._store is not None and self._identity != self._file_identity():
            self._unavailable(StoreError(f"database file {self.db_path} removed or replaced"))
            await self._close_store()
        if self._store is None:
            try:
                self._store = await open_store(self.db_path)
            except Exception as exc:
                self._unavailable(exc)
                return None
            self._identity = self._file_identity()
        return self._store

    def _file_identity(self) -> tuple[int, int] | None:
        path = self.db_path.path if isinstance(self.db_path, StoreLocation) else self.db_path
        return None if path is None else file_identity(path)  # PostgreSQL: no file

    async def _close_store(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()

    def _unavailable(self, exc: BaseException) -> None:
        if not self._db_down:
            log.error("call_records_db_unavailable", error=_describe(exc), db=str(self.db_path),
                      spool=str(self.spool.path))
        self._db_down = True

    async def _write(self, store: StoreBackend, records: list[CallRecord]
                     ) -> tuple[int, list[tuple[CallRecord, str]]]:
        """Write `records` in order, isolating the ones the database refuses. Returns how many
        were handled (written or refused: all of them unless the database became unavailable,
        which closes the connection) and the refused ones with their error."""
        rejected: list[tuple[CallRecord, str]] = []
        try:
            await self._put(store, records, 0, len(records), rejected)
        except _Unavailable as stop:
            await self._close_store()
            return stop.index, rejected
        if self._db_down:
            log.info("call_records_db_available", db=str(self.db_path))
        self._db_down = False
        return len(records), rejected

    async def _put(self, store: StoreBackend, records: list[CallRecord], lo: int, hi: int,
                   rejected: list[tuple[CallRecord, str]]) -> None:
        """records[lo:hi] in one transaction, else by halves (raises _Unavailable(lo))."""
        try:
            await store.record_calls(records[lo:hi])
            return
        except Exception as exc:
            if database_fault(exc) or not await self._alive(store):
                self._unavailable(exc)
                raise _Unavailable(lo) from exc
            if hi - lo == 1:
                record = records[lo]
                log.error("call_record_rejected", uniqueid=record.uniqueid, error=_describe(exc),
                          spool=str(self.spool.path))
                rejected.append((record, _describe(exc)))
                return
        middle = (lo + hi) // 2
        await self._put(store, records, lo, middle, rejected)
        await self._put(store, records, middle, hi, rejected)

    @staticmethod
    async def _alive(store: StoreBackend) -> bool:
        try:
            await store.ping()
        except Exception:
            return False
        return True

    # -- the spool ---------------------------------------------------------------------------

    async def _scan_spool(self) -> None:
        try:
            await asyncio.to_thread(self.spool.scan)
        except OSError as exc:
            log.error("call_spool_failed", error=_describe(exc), spool=str(self.spool.path))
        self._scanned = True
        if self.spool.pending or self.spool.rejected:
            log.warning("call_spool_found", pending=self.spool.pending,
                        rejected=self.spool.rejected, spool=str(self.spool.path))
        if self.spool.unreadable:
            log.error("call_spool_unreadable_lines", count=self.spool.unreadable,
                      spool=str(self.spool.path), detail="kept in the file, not replayed")

    async def _replay(self, store: StoreBackend) -> None:
        """The spool's pending records into the database, oldest first, until done or the
        database fails; then the spool is rewritten without what was committed."""
        offset, consumed, before = 0, 0, self.spool.pending
        rejected: list[tuple[CallRecord, str]] = []
        while True:
            try:
                chunk, offset = await asyncio.to_thread(self.spool.read_pending, offset,
                                                        REPLAY_CHUNK)
            except OSError as exc:
                self._spool_failed(exc)
                break
            if not chunk:
                if consumed == 0:  # counted lines that are not there (the file was edited)
                    with contextlib.suppress(OSError):
                        await asyncio.to_thread(self.spool.scan)
                break
            handled, chunk_rejected = await self._write(store, chunk)
            consumed += handled
            rejected += chunk_rejected
            if handled < len(chunk):
                break
        try:
            await asyncio.to_thread(self.spool.consume, consumed, rejected)
        except OSError as exc:  # committed but still spooled: replayed again, harmlessly
            self._spool_failed(exc)
            return
        self.metrics.call_records_rejected_add(len(rejected))
        if consumed:
            log.info("call_spool_replayed", records=consumed, rejected=len(rejected),
                     left=self.spool.pending, before=before)

    async def _keep_rejected(self, rejected: list[tuple[CallRecord, str]]) -> None:
        if not rejected:
            return
        self.metrics.call_records_rejected_add(len(rejected))
        try:
            await asyncio.to_thread(self.spool.reject, rejected)
        except OSError as exc:  # not even on disk: the log line is all that is left
            self._spool_failed(exc)
            for record, error in rejected:
                log.error("call_record_lost", uniqueid=record.uniqueid, error=error,
                          record=record.to_fields())
            self.metrics.call_records_dropped_add(len(rejected))

    async def _spool_backlog(self) -> None:
        try:
            taken = await asyncio.to_thread(self.spool.append, self.backlog)
        except OSError as exc:
            self._spool_failed(exc)
            return
        if taken:
            log.info("call_records_spooled", records=taken, pending=self.spool.pending,
                     spool=str(self.spool.path))
        self.backlog = self.backlog[taken:]
        if self.backlog:
            if self._spool_problem != "full":
                log.error("call_spool_full", max_bytes=self.spool.max_bytes,
                          in_memory=len(self.backlog), max_pending=self.max_pending,
                          spool=str(self.spool.path))
            self._spool_problem = "full"
        elif self._spool_problem is not None:
            log.info("call_spool_writable", spool=str(self.spool.path))
            self._spool_problem = None

    def _spool_failed(self, exc: OSError) -> None:
        if self._spool_problem != "failed":
            log.error("call_spool_failed", error=_describe(exc), spool=str(self.spool.path),
                      in_memory=len(self.backlog), max_pending=self.max_pending)
        self._spool_problem = "failed"
