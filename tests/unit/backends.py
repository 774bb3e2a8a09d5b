"""The store tests run on both backends: `db_location` (a fixture of conftest.py) is a SQLite
file or a fresh PostgreSQL database; `query` reads or writes it behind the Store's back, the
way the tests look at what was committed (errors as the sqlite3 classes on both)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import asyncpg

from callpolicy.store.postgres.connection import folded, plan, sqlite_error

BACKENDS = ("sqlite", "postgresql")


def is_postgresql(location: object) -> bool:
    return str(location).startswith("postgresql://")


async def query(location: object, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """Run one statement on a connection of its own (committed at once); its rows."""
    if not is_postgresql(location):
        with sqlite3.connect(str(location)) as db:
            return [tuple(r) for r in db.execute(sql, params).fetchall()]
    conn = await asyncpg.connect(str(location), timeout=10)
    try:
        statement, slices = plan(sql)
        return [tuple(r) for r in await conn.fetch(statement, *folded(params, slices))]
    except asyncpg.PostgresError as exc:
        raise sqlite_error(exc) from exc
    finally:
        await conn.close()


async def script(url: str, sql: str) -> None:
    """Several statements on PostgreSQL (a migration by hand), in one implicit transaction."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
