"""The PostgreSQL backend: the Store's operations over asyncpg (see connection.py).

Opening is PostgreSQL's own: connect (bounded), then, as on SQLite, a writer migrates the
schema (under the write lock: two daemons starting together migrate once) and a reader
(`readonly`) upgrades nothing and refuses another version. The database itself must exist
(`createdb`); `create` lets an empty one receive the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

from ..model import StoreError
from ..schema import SCHEMA_VERSION, TABLES
from ..sqlite import Store
from ..url import redacted
from .connection import WRITE_LOCK_KEY, DatabaseName, PgConnection
from .schema import MIGRATIONS, VERSION_TABLE

CONNECT_TIMEOUT = 10.0  # seconds to reach the server and log in
STATEMENT_TIMEOUT_MS = 300_000  # no statement of the store runs longer (a stuck server)
LOCK_TIMEOUT_MS = 5_000  # as SQLite's busy_timeout: a writer waits this long for another

if len(MIGRATIONS) != SCHEMA_VERSION:  # pragma: no cover - caught by any test run
    raise ImportError("store/postgres/schema.py and store/schema.py disagree on the version")


def connect_kwargs(readonly: bool, application_name: str = "callpolicy") -> dict[str, Any]:
    settings = {"application_name": application_name, "lock_timeout": str(LOCK_TIMEOUT_MS),
                "statement_timeout": str(STATEMENT_TIMEOUT_MS)}
    if readonly:
        settings["default_transaction_read_only"] = "on"
    return {"timeout": CONNECT_TIMEOUT, "server_settings": settings,
            "statement_cache_size": 256}


async def connect(url: str, *, readonly: bool = False,
                  application_name: str = "callpolicy") -> asyncpg.Connection:
    """A connection, or StoreError with the reason in one line."""
    try:
        return await asyncpg.connect(url, **connect_kwargs(readonly, application_name))
    except TimeoutError as exc:
        raise StoreError(f"cannot open database {redacted(url)}: no answer within "
                         f"{CONNECT_TIMEOUT:g} s") from exc
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StoreError(f"cannot open database {redacted(url)}: {detail}") from exc


async def schema_version(conn: asyncpg.Connection) -> int | None:
    """The schema version; None if the database has no callpolicy schema at all (empty)."""
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        tables = await conn.fetchval(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
        return None if tables == 0 else 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


async def migrate(conn: asyncpg.Connection, name: str) -> tuple[int, int]:
    """Bring the schema to SCHEMA_VERSION, one transaction per migration. (before, after)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK_KEY)
        await conn.execute(VERSION_TABLE)
    before = await schema_version(conn) or 0
    _refuse_newer(before, name)
    for number in range(before, SCHEMA_VERSION):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK_KEY)
            if (await schema_version(conn) or 0) > number:
                continue  # another process migrated it meanwhile
            await conn.execute(MIGRATIONS[number])
            await conn.execute(
                "INSERT INTO schema_version (version) VALUES ($1)"
                " ON CONFLICT (only_row) DO UPDATE SET version = excluded.version", number + 1)
    return before, SCHEMA_VERSION


def _refuse_newer(version: int, name: str) -> None:
    if version > SCHEMA_VERSION:
        raise StoreError(f"database {name} has schema version {version}, newer than this "
                         f"callpolicy ({SCHEMA_VERSION}): upgrade callpolicy")


async def check_schema(conn: asyncpg.Connection, name: str) -> None:
    """The database is a callpolicy database of this version (as Store._check_schema)."""
    version = await schema_version(conn) or 0
    _refuse_newer(version, name)
    if version < SCHEMA_VERSION:
        raise StoreError(f"database {name} has schema version {version}, older than this "
                         f"callpolicy ({SCHEMA_VERSION}): `callpolicy db migrate` (or a write "
                         "command, or the daemon starting) upgrades it")
    tables = {r[0] for r in await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    missing = sorted(set(TABLES) - tables)
    if missing:
        raise StoreError(f"database {name} is not a callpolicy database: no table "
                         f"{', '.join(missing)} (schema version {version})")


class PostgresStore(Store):
    """The Store on PostgreSQL. `path` is the URL without its password (DatabaseName)."""

    @classmethod
    async def open(cls, path: str | Path, *, create: bool = False,
                   readonly: bool = False) -> PostgresStore:
        url = str(path)
        name = redacted(url)
        conn = await connect(url, readonly=readonly)
        try:
            await _prepare(conn, name, create=create, readonly=readonly)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            conn.terminate()
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(f"cannot use database {name}: {detail}") from exc
        except BaseException:
            conn.terminate()
            raise
        # The Store is typed for aiosqlite and a file: these stand in for both (see
        # connection.py).
        return cls(PgConnection(conn, url, connect_kwargs(readonly)),  # type: ignore[arg-type]
                   DatabaseName(name))  # type: ignore[arg-type]


async def _prepare(conn: asyncpg.Connection, name: str, *, create: bool,
                   readonly: bool) -> None:
    if await schema_version(conn) is None and (readonly or not create):
        raise StoreError(
            f"database {name} has no callpolicy schema (create it with `callpolicy db "
            "migrate`, or `callpolicy customer import FILE`)")
    if not readonly:
        await migrate(conn, name)
    await check_schema(conn, name)
