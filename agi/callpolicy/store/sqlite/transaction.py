"""The write path: one transaction at a time on a connection, all or nothing."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import aiosqlite

from ..model import StoreError
from ..sqlite_errors import explain

__all__ = ["Transaction", "WriteLock"]


class WriteLock(asyncio.Lock):
    """The store's write lock; knows the database it guards (for error messages)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path


class Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (nothing half-written).

    Holds the store's write lock: one transaction at a time on the connection. A database
    that cannot take the write (disk full, read-only, locked, damaged) raises StoreError
    naming the cause; SQLite may already have rolled back (SQLITE_FULL does): the ROLLBACK is
    only sent while a transaction is open, so its own error never hides the cause."""

    def __init__(self, db: aiosqlite.Connection, lock: WriteLock) -> None:
        self._db = db
        self._lock = lock

    def _error(self, exc: sqlite3.Error) -> StoreError:
        path = self._lock.path
        return StoreError(f"cannot write to database {path}: {explain(exc, path)}")

    async def __aenter__(self) -> None:
        await self._lock.acquire()
        try:
            await self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._lock.release()
            raise self._error(exc) from exc
        except BaseException:
            self._lock.release()
            raise

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                try:
                    await self._db.execute("COMMIT")
                    return
                except sqlite3.Error as failed:
                    await self._rollback()
                    raise self._error(failed) from failed
            await self._rollback()
            if isinstance(exc, sqlite3.OperationalError | sqlite3.InternalError) or (
                    type(exc) is sqlite3.DatabaseError):  # not the data's fault: the file's
                raise self._error(exc) from exc
        finally:
            self._lock.release()

    async def _rollback(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                await self._db.execute("ROLLBACK")
