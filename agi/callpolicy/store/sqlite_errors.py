"""What a SQLite error means for an ops engineer: "disk full", "read-only", "locked by …".

SQLite's own texts hide the cause ("disk I/O error" when the WAL index cannot grow on a full
disk, "database is locked" without saying by whom); `explain` names it in one line.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

LOW_DISK = 1 << 20  # bytes: below this, an I/O error is most likely the full disk
#: errors SQLite gives when it may not create or write its files
_FILE_ERRORS = (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_PERM)


def explain(exc: sqlite3.Error, path: Path) -> str:
    """`exc`'s cause in the user's terms (falls back to SQLite's text)."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    free = disk_free(path)
    if primary == sqlite3.SQLITE_FULL or (
            primary == sqlite3.SQLITE_IOERR and free is not None and free < LOW_DISK):
        return f"disk full ({free if free is not None else '?'} bytes free on {path.parent})"
    if primary == sqlite3.SQLITE_READONLY or (primary in _FILE_ERRORS and not writable(path)):
        return f"read-only: this user may not write {path} or its directory ({exc})"
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        holder = lock_holder(path)
        return "locked by another writer" + (f" ({holder})" if holder else "") + \
            ", still busy after the 5 s wait: try again"
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return (f"the file is damaged or not a callpolicy database ({exc}): restore a good "
                "copy; nothing was written")
    if primary == sqlite3.SQLITE_CANTOPEN:
        return f"cannot open the file or its journal in {path.parent} ({exc})"
    if primary == sqlite3.SQLITE_IOERR:
        return f"disk I/O error ({exc})"
    return str(exc)


def writable(path: Path) -> bool:
    """This user may write the database and create its journal files (not on a read-only
    file system, not without permission)."""
    return os.access(path.parent, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


def disk_free(path: Path) -> int | None:
    """Bytes this user may still write on the file system of `path`."""
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return None
    blocks = stat.f_bfree if os.geteuid() == 0 else stat.f_bavail
    return blocks * stat.f_frsize


def lock_holder(path: Path) -> str | None:
    """The process holding a write lock on the database or its WAL index (Linux
    /proc/locks), as "pid 123: callpolicy customer import …"; None if unknown."""
    inodes = set()
    for name in (str(path), f"{path}-shm"):
        try:
            stat = os.stat(name)
        except OSError:
            continue
        inodes.add((os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino))
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[3] != "WRITE" or not fields[4].isdigit():
            continue
        try:
            major, minor, inode = fields[5].split(":")
            key = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if key in inodes and int(fields[4]) != os.getpid():
            return f"pid {fields[4]}: {_command(int(fields[4]))}"
    return None


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    text = " ".join(words)
    return "".join(c if c.isprintable() else "?" for c in text)[:120]
