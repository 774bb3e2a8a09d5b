"""The call-record spool: record updates the database could not take, kept on disk until it can.

A file next to the database (`<db>.calls-spool.jsonl`), one JSON object per line:

    {"record": {...CallRecord.to_fields()...}}                         waits for the database
    {"record": {...}, "rejected": {"error": "...", "at": "..."}}       the database refused it

- `append` writes and fsyncs before it returns: what it took survives a crash. The file is
  bounded (`max_bytes`): `append` takes what fits and says how many; the rest stays with the
  caller.
- Pending lines are replayed oldest first (`read_pending`), before any newer update, because
  `Store.record_calls` merges a call's updates in order. A replayed line leaves the file only
  after its transaction committed (`consume`: temp file, fsync, rename). A crash between the
  commit and the rewrite replays that prefix again, which is harmless: applying a prefix of the
  updates twice and then the rest leaves every field with its last value, as once would.
- Rejected lines stay for ops (fix the line, delete its "rejected", and the next start replays
  it). A line that is not a record (a torn write) is kept as it is and never replayed.

All methods do blocking file I/O: the daemon calls them through `asyncio.to_thread`, one at a
time (only the record writer uses the spool).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .records import CallRecord

SPOOL_SUFFIX = ".calls-spool.jsonl"
MAX_SPOOL_BYTES = 256 * 1024 * 1024  # ~500 000 record updates (a day or more of calls)

PENDING, REJECTED, UNREADABLE = "pending", "rejected", "unreadable"


def spool_path(db_path: Path) -> Path:
    """Where the daemon spools the call records of database `db_path`."""
    return db_path.with_name(db_path.name + SPOOL_SUFFIX)


def _line(record: CallRecord, rejected: str | None = None) -> bytes:
    entry: dict[str, Any] = {"record": record.to_fields()}
    if rejected is not None:
        entry["rejected"] = {"error": rejected,
                             "at": datetime.now(UTC).isoformat(timespec="seconds")}
    return json.dumps(entry, separators=(",", ":"), default=repr).encode() + b"\n"


def _classify(raw: bytes) -> tuple[str, CallRecord | None]:
    """(PENDING, record) | (REJECTED, None) | (UNREADABLE, None) for one line."""
    try:
        entry = json.loads(raw)
        if not isinstance(entry, dict) or set(entry) - {"record", "rejected"}:
            return UNREADABLE, None
        record = CallRecord.from_fields(entry["record"])
    except (ValueError, TypeError, KeyError):
        return UNREADABLE, None
    return (REJECTED, None) if "rejected" in entry else (PENDING, record)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CallSpool:
    """The spool file of one database. `pending`, `rejected`, `unreadable`: line counts;
    `size`: bytes. Call `scan` once before the rest (it reads what an earlier run left)."""

    def __init__(self, path: Path, max_bytes: int = MAX_SPOOL_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.pending = 0
        self.rejected = 0
        self.unreadable = 0
        self.size = 0
        self._torn = False  # the file does not end with a newline (a write cut short)

    def scan(self) -> None:
        """Count what the file holds. Raises OSError if it exists but cannot be read."""
        self.pending = self.rejected = self.unreadable = self.size = 0
        self._torn = False
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return
        counts = {PENDING: 0, REJECTED: 0, UNREADABLE: 0}
        with handle:
            for raw in handle:
                counts[_classify(raw)[0]] += 1
                self.size += len(raw)
                self._torn = not raw.endswith(b"\n")
        self.pending, self.rejected, self.unreadable = (
            counts[PENDING], counts[REJECTED], counts[UNREADABLE])

    # -- adding -----------------------------------------------------------------------------

    def append(self, records: Sequence[CallRecord]) -> int:
        """Append as many of `records` (in order) as fit in `max_bytes`, fsync'ed; returns how
        many. Raises OSError (nothing appended) if the file cannot be written."""
        lines = []
        room = self.max_bytes - self.size
        for record in records:
            line = _line(record)
            if len(line) > room:
                break
            lines.append(line)
            room -= len(line)
        if lines:
            self._write(lines)
            self.pending += len(lines)
        return len(lines)

    def reject(self, rejected: Sequence[tuple[CallRecord, str]]) -> None:
        """Keep records the database refused, with the error (not bounded: a refused record
        is never dropped for space while the disk takes it). Raises OSError."""
        if rejected:
            self._write([_line(record, error) for record, error in rejected])
            self.rejected += len(rejected)

    def _write(self, lines: list[bytes]) -> None:
        created = not self.path.exists()
        data = b"".join(lines)
        if self._torn:
            data = b"\n" + data  # the torn line stays a line of its own
        with self.path.open("ab") as handle:
            try:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            except OSError:
                with contextlib.suppress(OSError):  # no half line to glue the next one onto
                    handle.truncate(self.size)
                raise
        if created:
            _fsync_dir(self.path.parent)
        self.size += len(data)
        self._torn = False

    # -- replay -----------------------------------------------------------------------------

    def read_pending(self, offset: int, limit: int) -> tuple[list[CallRecord], int]:
        """Up to `limit` pending records from byte `offset` on, oldest first, and the offset to
        read on from. ([], offset) at the end."""
        records: list[CallRecord] = []
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return records, offset
        with handle:
            handle.seek(offset)
            while len(records) < limit:
                raw = handle.readline()
                if not raw:
                    break
                offset += len(raw)
                kind, record = _classify(raw)
                if kind == PENDING and record is not None:
                    records.append(record)
        return records, offset

    def consume(self, count: int, rejected: Sequence[tuple[CallRecord, str]] = ()) -> None:
        """The first `count` pending records are in the database (or among `rejected`, which
        stay as rejected lines): rewrite the file without them, atomically, and recount it.
        Removes the file when nothing is left. Raises OSError (the file unchanged)."""
        if count == 0 and not rejected:
            return
        temp = self.path.with_name(self.path.name + ".tmp")
        counts = {PENDING: 0, REJECTED: 0, UNREADABLE: 0}
        size, seen, torn = 0, 0, False
        source: IO[bytes]
        try:
            source = self.path.open("rb")
        except FileNotFoundError:  # gone (by hand): nothing left to replay
            source = io.BytesIO()
        with source, temp.open("wb") as target:
            for raw in source:
                kind = _classify(raw)[0]
                if seen < count and kind == PENDING:
                    seen += 1
                    continue
                counts[kind] += 1
                line = (b"\n" if torn else b"") + raw
                target.write(line)
                size += len(line)
                torn = not raw.endswith(b"\n")
            for record, error in rejected:
                line = (b"\n" if torn else b"") + _line(record, error)
                target.write(line)
                size += len(line)
                counts[REJECTED] += 1
                torn = False
            target.flush()
            os.fsync(target.fileno())
        if size == 0:
            temp.unlink()
            self.path.unlink(missing_ok=True)
        else:
            os.replace(temp, self.path)
        _fsync_dir(self.path.parent)
        self.pending, self.rejected, self.unreadable = (
            counts[PENDING], counts[REJECTED], counts[UNREADABLE])
        self.size = size
        self._torn = torn
