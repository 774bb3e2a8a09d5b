"""The SQLite connection: opening (create, readonly, integrity and schema checks, WAL set-up,
migrations), the query helpers every part of the backend uses, and the file's identity."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Self

import aiosqlite

from ..model import StoreError
from ..schema import MIGRATIONS, SCHEMA_VERSION, TABLES, statements
from ..sqlite_errors import explain
from .transaction import WriteLock

__all__ = ["Connection", "file_identity"]


class Connection:
    """One aiosqlite connection to a callpolicy database (the base of `Store`)."""

    path: Path  # the database file

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        # One connection, one transaction at a time: concurrent writers on it (the daemon's
        # record batches, a purge) queue here instead of nesting BEGINs.
        self._write_lock = WriteLock(path)

    # -- opening ------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path, *, create: bool = False,
                   readonly: bool = False) -> Self:
        """Open the database. Without `create`, a missing file is an error.

        A writer (the default) checks the file (PRAGMA quick_check: a damaged or foreign file
        is refused before anything is written), sets up WAL and migrates the schema. A reader
        (`readonly`) writes nothing, not even the WAL set-up: it works on a full disk and for
        a user who may only read; an older schema is an error that says how to upgrade."""
        path = Path(path)
        if not path.exists():
            if not create or readonly:
                raise StoreError(
                    f"database {path} does not exist (set --db or CALLPOLICY_DB, "
                    "or create it with `callpolicy customer import FILE`)"
                )
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create {path.parent}: {exc.strerror}") from exc
        if readonly:
            return await cls._open_readonly(path)
        store = await cls._connect(path, str(path), uri=False)
        await store._checked(store._setup)
        return store

    @classmethod
    async def _open_readonly(cls, path: Path) -> Self:
        try:
            store = await cls._connect(path, f"{path.resolve().as_uri()}?mode=ro", uri=True)
            await store._checked(store._check_schema)
            return store
        except StoreError as exc:
            if not (_cannot_map_wal_index(exc.__cause__) and _wal_empty(path)):
                raise
        # The WAL index (-shm) cannot be created (full disk, read-only directory) and the
        # WAL holds nothing: the main file alone is the whole committed database.
        store = await cls._connect(path, f"{path.resolve().as_uri()}?mode=ro&immutable=1",
                                   uri=True)
        await store._checked(store._check_schema)
        return store

    @classmethod
    async def _connect(cls, path: Path, target: str, *, uri: bool) -> Self:
        try:
            db = await aiosqlite.connect(target, uri=uri, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {explain(exc, path)}") from exc
        db.row_factory = sqlite3.Row
        return cls(db, path)

    async def _checked(self, step: Callable[[], Awaitable[None]]) -> None:
        """Run an opening step; on any failure the connection is closed."""
        try:
            await step()
        except sqlite3.Error as exc:
            await self._db.close()
            raise StoreError(f"cannot use database {self.path}: {explain(exc, self.path)}"
                             ) from exc
        except BaseException:
            await self._db.close()
            raise

    async def _setup(self) -> None:
        db = self._db
        await db.execute("PRAGMA busy_timeout = 5000")
        await db.execute("PRAGMA foreign_keys = ON")
        await self._check_integrity()
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        version = await self._scalar("PRAGMA user_version")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {self.path} has schema version {version}, newer than this "
                f"callpolicy ({SCHEMA_VERSION}): upgrade callpolicy"
            )
        for number in range(version, SCHEMA_VERSION):
            await db.execute("BEGIN IMMEDIATE")
            try:
                for statement in statements(MIGRATIONS[number]):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version = {number + 1}")
                await db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        await db.execute("ROLLBACK")
                raise
        await self._check_schema()

    async def _check_integrity(self) -> None:
        problems = [r[0] for r in await self._rows("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise StoreError(
                f"database {self.path} fails its integrity check ({'; '.join(problems)}): "
                "restore a good copy; nothing was written")

    async def _check_schema(self) -> None:
        """The file is a callpolicy database of this version (a reader upgrades nothing)."""
        await self._db.execute("PRAGMA busy_timeout = 5000")
        version = await self._scalar("PRAGMA user_version")
        if version != SCHEMA_VERSION:
            newer = version > SCHEMA_VERSION
            raise StoreError(
                f"database {self.path} has schema version {version}, "
                f"{'newer' if newer else 'older'} than this callpolicy ({SCHEMA_VERSION}): "
                + ("upgrade callpolicy" if newer else
                   "a write command (or the daemon starting) upgrades it"))
        tables = {r[0] for r in await self._rows(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = sorted(set(TABLES) - tables)
        if missing:
            raise StoreError(f"database {self.path} is not a callpolicy database: no table "
                             f"{', '.join(missing)} (schema version {version}); restore a "
                             "good copy")

    async def close(self) -> None:
        await self._db.close()

    async def ping(self) -> None:
        """A trivial query: raises if the connection is gone."""
        await self._scalar("SELECT 1")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- helpers ------------------------------------------------------------------------

    # One hop to the connection's thread per query (execute, fetch and close in one): the
    # daemon polls the audit log 4 times a second, and each hop wakes its event loop.
    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._rows(sql, params)
        return rows[0][0] if rows else None

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(await self._db.execute_fetchall(sql, params))


def _cannot_map_wal_index(exc: BaseException | None) -> bool:
    """A reader's error when it cannot create or grow the -shm file."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (
        sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY)


def _wal_empty(path: Path) -> bool:
    """No committed change waits in the WAL (absent or empty): the main file is complete."""
    try:
        return os.stat(f"{path}-wal").st_size == 0
    except FileNotFoundError:
        return True
    except OSError:
        return False


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path` now: another one means the file was replaced
    (a connection keeps reading the file it opened, even once unlinked)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
