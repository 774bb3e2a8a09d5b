"""The fallback journal: the fallback AGI's decisions, for the daemon's `fallback_decision`
alerts, also the ones made while the daemon was down.

A file beside the database (`<db>.fallback-journal.jsonl`; inside Asterisk's chroot the state
dir is at the same path), one JSON object per line:

    {"at": 1764540000.5, "uniqueid": "...", "kind": "outbound", "endpoint": "...",
     "customer": "...", "number": "...", "action": "allow", "reason": "allowed"}
    {"journal_full": true}                  once the file holds MAX_BYTES: later ones not kept

- `append` (the fallback AGI, one process per call): ONE O_APPEND write of a line shorter
  than PIPE_BUF, so concurrent writers never interleave; values cut to MAX_VALUE characters.
  Raises OSError; the caller logs it and goes on (the call never fails for the journal).
- `take` (the daemon, in a thread, every round in which `might_hold`): a `.taking` file
  (renamed in an earlier round, or left by a crash) is read and deleted; else the journal
  is renamed to it, to be read in the next round (a writer that opened the journal just
  before the rename has finished its single write by then). A crash after the read raises
  those again at the next start (at least once, never lost).

Standard library only: the fallback AGI imports it (asterisk-docker/fallback-requirements.txt).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOURNAL_SUFFIX = ".fallback-journal.jsonl"
TAKING_SUFFIX = ".taking"
MAX_BYTES = 1024 * 1024  # ~7 000 decisions (~145 B each); then one `journal_full` line
MAX_VALUE = 64  # characters per value: 64 × 6 (\uXXXX) × 8 fields stays under PIPE_BUF
MAX_LINE = 4000  # bytes, < PIPE_BUF (4096 on Linux): one atomic append
MAX_READ = 4 * MAX_BYTES  # bytes read of a (hand-grown) file; the rest is dropped
FIELDS = ("uniqueid", "kind", "endpoint", "customer", "number", "action", "reason")
FULL_LINE = b'{"journal_full":true}\n'


def journal_path(db_path: Path) -> Path:
    """The fallback journal of database `db_path` (the daemon and the fallback AGI agree)."""
    return db_path.with_name(db_path.name + JOURNAL_SUFFIX)


def taking_path(journal: Path) -> Path:
    return journal.with_name(journal.name + TAKING_SUFFIX)


def encode(at: float, values: dict[str, Any]) -> bytes:
    """One journal line: known fields only, each a string cut to MAX_VALUE (None kept)."""
    entry: dict[str, Any] = {"at": round(at, 3)}
    for name in FIELDS:
        value = values.get(name)
        entry[name] = None if value is None else str(value)[:MAX_VALUE]
    line = json.dumps(entry, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
    if len(line) > MAX_LINE:  # cannot happen with the caps above; never a torn line anyway
        line = json.dumps({"at": entry["at"], "action": entry["action"]}).encode() + b"\n"
    return line


def append(path: Path, at: float, values: dict[str, Any]) -> bool:
    """Append one decision; False if the journal is full (the marker written once).
    Raises OSError."""
    line = encode(at, values)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o660)
    try:
        size = os.fstat(fd).st_size
        if size + len(line) <= MAX_BYTES:
            os.write(fd, line)
            return True
        # Full: only the marker follows, so a file ending with it already has it.
        if size < len(FULL_LINE) or os.pread(fd, len(FULL_LINE),
                                             size - len(FULL_LINE)) != FULL_LINE:
            os.write(fd, FULL_LINE)
        return False
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Entry:
    """One journaled decision, as read back (every value untrusted, cut)."""

    at: float
    values: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class Taken:
    entries: list[Entry]
    full: bool = False  # the writers found the journal full: decisions were not kept
    unreadable: int = 0  # lines that are not a journal entry (skipped)


def take(path: Path) -> Taken:
    """See the module doc. Raises OSError (nothing deleted) if a file cannot be read/renamed."""
    taking = taking_path(path)
    try:
        with taking.open("rb") as handle:
            data = handle.read(MAX_READ)
    except FileNotFoundError:
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, taking)
        return Taken([])
    taken = parse(data)
    taking.unlink(missing_ok=True)
    return taken


def might_hold(path: Path) -> bool:
    """False when neither the journal nor its `.taking` file is there: `take` would find
    nothing (two stat calls on the event loop instead of a round trip to a thread each
    round). Any other error says True: `take` reports it."""
    for candidate in (path, taking_path(path)):
        try:
            os.stat(candidate)
        except FileNotFoundError:
            continue
        except OSError:
            return True
        return True
    return False


def parse(data: bytes) -> Taken:
    entries: list[Entry] = []
    full, unreadable = False, 0
    for raw in data.splitlines():
        if not raw.strip():
            continue
        if raw + b"\n" == FULL_LINE:
            full = True
            continue
        entry = _entry(raw)
        if entry is None:
            unreadable += 1
        else:
            entries.append(entry)
    return Taken(entries, full, unreadable)


def _entry(raw: bytes) -> Entry | None:
    try:
        obj = json.loads(raw)
        at = float(obj["at"])
    except (ValueError, TypeError, KeyError, RecursionError):
        return None
    if at != at or at in (float("inf"), float("-inf")):
        return None
    values = {name: (v[:MAX_VALUE] if isinstance(v := obj.get(name), str) else None)
              for name in FIELDS}
    return Entry(at, values)
