"""The local snapshot: a SQLite copy of the PostgreSQL policy for the fallback AGI.

With PostgreSQL the fallback AGI (agi/fallback-agi, pyst2) still reads SQLite at `[store] path`:
when the daemon is dead and the database unreachable, that file is what it decides from. The
daemon writes it (service/local_snapshot.py): every table the decisions read, read from
PostgreSQL in one read-only repeatable-read transaction, written into a new file beside the
target and renamed over it, so a reader sees the old copy or the new one, never half of one.
Call records and the audit log stay out (the fallback reads neither; they are the large ones).

The copy is marked (`PRAGMA application_id`): a SQLite file already at that path that is not a
copy (the node's database before it moved to PostgreSQL) is renamed aside once, never
overwritten."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from .model import StoreError
from .schema import MIGRATIONS, SCHEMA_VERSION, TABLES, statements

#: marks a file written here ("cpLS"): only such a file is ever replaced
APPLICATION_ID = 0x63704C53
SKIPPED_TABLES = ("audit", "calls")
COPIED_TABLES = tuple(t for t in TABLES if t not in SKIPPED_TABLES)
ASIDE_SUFFIX = ".before-postgresql"
READ_BATCH = 2000  # rows per fetch: a few ms of decoding between other tasks

Tables = dict[str, tuple[list[str], list[tuple[Any, ...]]]]


async def read_postgresql(url: str) -> Tables:
    """The copied tables' columns and rows, one consistent read (StoreError if it fails)."""
    import asyncpg  # only here: see url.open_store

    from .postgres.store import connect
    from .url import redacted

    conn = await connect(url, readonly=True, application_name="callpolicy-local-snapshot")
    try:
        tables: Tables = {}
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            for table in COPIED_TABLES:
                stmt = await conn.prepare(f"SELECT * FROM {table}")
                columns = [a.name for a in stmt.get_attributes()]
                # in batches: decoding 100 000 rows at once would hold the event loop
                rows = [tuple(r) async for r in stmt.cursor(prefetch=READ_BATCH)]
                tables[table] = (columns, rows)
        return tables
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"cannot read {redacted(url)} for the local snapshot: {detail}") from exc
    finally:
        conn.terminate()


def is_local_copy(path: Path) -> bool:
    """Is `path` a file written by write_sqlite (False if absent or anything else)?"""
    if not path.is_file():
        return False
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return bool(db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID)
        finally:
            db.close()
    except sqlite3.Error:
        return False


def set_aside(path: Path) -> Path | None:
    """Rename a file at `path` that is not a local copy (with its -wal/-shm) to
    `<path>.before-postgresql[.N]`; its new name, None if there was nothing to move."""
    if not path.exists() or is_local_copy(path):
        return None
    target = path.with_name(path.name + ASIDE_SUFFIX)
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}{ASIDE_SUFFIX}.{n}")
        n += 1
    for suffix in ("-wal", "-shm"):  # before the database: never a database without its WAL
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.rename(target.with_name(target.name + suffix))
    path.rename(target)
    return target


def write_sqlite(path: Path, tables: Tables) -> None:
    """Write `tables` as a complete callpolicy SQLite database at `path`, atomically (a temp
    file beside it, fsync'ed, renamed over it). Blocking: run it in a thread."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(name)
    try:
        os.fchmod(fd, 0o644)  # as the database SQLite would create here (the fallback reads it)
        os.close(fd)
        db = sqlite3.connect(temp, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = DELETE")  # one file: nothing stale beside it
            db.execute("BEGIN")
            for migration in MIGRATIONS:
                for statement in statements(migration):
                    db.execute(statement)
            for table, (columns, rows) in tables.items():
                if rows:
                    marks = ", ".join("?" * len(columns))
                    db.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "
                                   f"VALUES ({marks})", rows)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("COMMIT")
        finally:
            db.close()
        with open(temp, "rb") as fh:
            os.fsync(fh.fileno())
        for suffix in ("-wal", "-shm"):  # a previous WAL-mode file's: must not apply to ours
            path.with_name(path.name + suffix).unlink(missing_ok=True)
        os.replace(temp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"cannot write the local snapshot {path}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()
