"""The one-off move of a SQLite database to PostgreSQL (`callpolicy db copy --from FILE`).

Every table, every row, the ids kept (the audit log's ids are its order, the snapshot's
high-water mark), in one PostgreSQL transaction under the store's write lock: the copy is
all there or not at all. The target must be empty of callpolicy data (its schema is created
or upgraded first); the source is read in one read transaction (a consistent state even if
something writes to it meanwhile), and must be at this callpolicy's schema version (a write
command upgrades it)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

from .model import StoreError
from .schema import SCHEMA_VERSION, TABLES
from .sqlite_errors import explain

#: tables whose `id` is an identity: its sequence continues after the copied ids
ID_TABLES = ("unblocks", "suspensions", "audit", "payment_reminders", "scheduled_suspensions")


def read_sqlite(path: Path) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """Every table's columns and rows, in one read transaction (blocking: run in a thread)."""
    if not path.is_file():
        raise StoreError(f"database {path} does not exist")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            db.execute("BEGIN")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"database {path} has schema version {version}, this callpolicy "
                    f"{SCHEMA_VERSION}: `callpolicy --db {path} db migrate` first")
            tables = {}
            for table in TABLES:
                cursor = db.execute(f"SELECT * FROM {table} ORDER BY rowid")
                tables[table] = ([c[0] for c in cursor.description], cursor.fetchall())
            return tables
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read database {path}: {explain(exc, path)}") from exc


async def copy_to_postgresql(source: Path, url: str) -> dict[str, int]:
    """Copy the SQLite database `source` into the PostgreSQL database `url` (empty of
    callpolicy data). Returns the rows copied per table."""
    import asyncpg  # only here: see url.open_store

    from .postgres.connection import WRITE_LOCK_KEY
    from .postgres.store import connect, migrate
    from .url import redacted

    tables = await asyncio.to_thread(read_sqlite, source)
    name = redacted(url)
    conn = await connect(url)
    try:
        await migrate(conn, name)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK_KEY)
            filled = [t for t in TABLES if await conn.fetchval(f"SELECT count(*) FROM {t}")]
            if filled:
                raise StoreError(f"database {name} already holds callpolicy data (tables "
                                 f"{', '.join(filled)}): copy only into an empty database")
            for table in TABLES:
                columns, rows = tables[table]
                if rows:
                    await conn.copy_records_to_table(table, records=rows, columns=columns)
            for table in ID_TABLES:
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" coalesce((SELECT max(id) FROM {table}), 0) + 1, false)")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"copy to {name} failed, nothing copied: {detail}") from exc
    finally:
        conn.terminate()
    return {table: len(tables[table][1]) for table in TABLES}
