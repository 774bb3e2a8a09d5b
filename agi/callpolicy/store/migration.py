"""`callpolicy db status|migrate` on either backend: the schema version, and the upgrade.

A writer opening the store migrates anyway (the daemon starting, a write command); these
let ops see and do it on their own, e.g. before starting the daemons of a cluster."""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path, PurePath

from .model import StoreError
from .postgres import PostgresStore
from .postgres.store import connect, schema_version
from .schema import SCHEMA_VERSION
from .sqlite import Store
from .sqlite_errors import explain
from .url import StoreLocation, StoreURLError, parse_location


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    backend: str  # sqlite, postgresql
    database: str  # the path, or the URL without its password
    version: int | None  # None: no database (SQLite) or an empty one (PostgreSQL)
    latest: int = SCHEMA_VERSION  # this callpolicy's

    @property
    def state(self) -> str:
        if self.version is None:
            return "absent"
        if self.version < self.latest:
            return "older"
        return "newer" if self.version > self.latest else "current"


def _location(location: str | PurePath | StoreLocation) -> StoreLocation:
    if isinstance(location, StoreLocation):
        return location
    try:
        return parse_location(location)
    except StoreURLError as exc:
        raise StoreError(str(exc)) from exc


async def schema_status(location: str | PurePath | StoreLocation) -> SchemaStatus:
    """The schema version of the database, read without writing or upgrading anything."""
    where = _location(location)
    if where.url:
        conn = await connect(where.url, readonly=True)
        try:
            version = await schema_version(conn)
        except Exception as exc:
            raise StoreError(f"cannot read database {where}: {exc}") from exc
        finally:
            conn.terminate()
        return SchemaStatus("postgresql", str(where), version)
    assert where.path is not None
    return SchemaStatus("sqlite", str(where.path), await asyncio.to_thread(
        _sqlite_version, where.path))


def _sqlite_version(path: Path) -> int | None:
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return int(db.execute("PRAGMA user_version").fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read database {path}: {explain(exc, path)}") from exc


async def migrate(location: str | PurePath | StoreLocation) -> tuple[SchemaStatus, int]:
    """Create or upgrade the schema to this callpolicy's version (a newer one is an error).
    Returns the status before and the version after."""
    where = _location(location)
    before = await schema_status(where)
    if where.url:
        store: Store = await PostgresStore.open(where.url, create=True)
    else:
        assert where.path is not None
        store = await Store.open(where.path, create=True)
    await store.close()
    return before, SCHEMA_VERSION
