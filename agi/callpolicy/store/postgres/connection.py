"""An asyncpg connection that speaks the part of aiosqlite's API the Store uses.

The PostgreSQL backend runs the very Store of store/sqlite.py (its operations, audit rows,
messages and transactions) over this connection, so the two backends cannot drift. What
differs is here, in one small translation:
- `?` placeholders become `$1, $2, …`; `json_each(?)` (a JSON array parameter) becomes
  `json_array_elements_text($n::json)`; `IN (?, ?, …)` becomes `= ANY($n)` with the values
  as one array (PostgreSQL takes at most 32 767 parameters; SQLite here 250 000, and a
  snapshot refresh after a big import asks for that many customers);
- `BEGIN IMMEDIATE` (SQLite: one writer at a time) becomes `BEGIN` plus a transaction-scoped
  advisory lock, held until COMMIT/ROLLBACK: writers from every process queue as on SQLite,
  so audit row ids commit in increasing order and a reader polling the audit high-water
  mark (store/snapshot.py) never skips a change;
- an INSERT into a table with an `id` identity returns it (`cursor.lastrowid`); the command
  status gives `cursor.rowcount`;
- asyncpg's errors become the sqlite3 exception classes the Store (and the call-record
  writer) already handle: the data's fault (a constraint -> IntegrityError, a value out of
  range -> DataError, one that cannot be sent -> ProgrammingError) apart from the database's
  (the rest -> OperationalError; a lock wait past the timeout carries SQLITE_BUSY), with
  PostgreSQL's one-line message.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import sqlite3
from collections.abc import AsyncIterator, Generator, Iterable, Sequence
from pathlib import PurePosixPath
from typing import Any

import asyncpg
from asyncpg.exceptions._base import DataError as ClientDataError

#: The advisory lock key of the store's write transactions ("callpolicy" in ASCII, truncated)
WRITE_LOCK_KEY = 0x63616C6C706F6C
#: Tables whose INSERT returns the new row's id (SQLite's cursor.lastrowid)
ID_TABLES = frozenset({"unblocks", "suspensions", "audit", "payment_reminders",
                       "scheduled_suspensions"})
STREAM_PREFETCH = 1000  # rows per round trip of a streamed SELECT (iter_calls)
_JSON_EACH = re.compile(r"\(SELECT value FROM json_each\(\?\)\)")
_IN_LIST = re.compile(r"IN \((\?(?:\s*,\s*\?)*)\)")
_INSERT_INTO = re.compile(r"\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)
_CONNECTION_LOST = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                    asyncio.TimeoutError)


class DatabaseName(PurePosixPath):
    """The Store's `path` for a PostgreSQL database: its URL without the password.

    The shared Store code names its database in messages through `path`; this one prints as
    the URL (a PurePosixPath would fold the `//`) and is no file (stat and statvfs fail)."""

    _display = ""

    def __new__(cls, url: str) -> DatabaseName:
        name = super().__new__(cls, "/nonexistent/postgresql-database")
        name._display = url
        return name

    def __str__(self) -> str:
        return self._display

    def __repr__(self) -> str:
        return f"DatabaseName({self._display!r})"


def translate(sql: str) -> str:
    """SQLite's dialect, as the Store writes it, in PostgreSQL's (no IN lists: see plan)."""
    return plan(sql)[0]


@functools.lru_cache(maxsize=512)
def plan(sql: str) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The statement in PostgreSQL's dialect, and the parameter slices (start, stop) that
    its `= ANY($n)` take as one array each, in order."""
    sql = _JSON_EACH.sub("(SELECT json_array_elements_text(?::json))", sql)
    slices, parts, last = [], [], 0
    for match in _IN_LIST.finditer(sql):
        start = sql.count("?", 0, match.start())
        slices.append((start, start + match.group(1).count("?")))
        parts += [sql[last:match.start()], "= ANY(?)"]
        last = match.end()
    return _numbered("".join([*parts, sql[last:]])), tuple(slices)


def folded(params: Sequence[Any], slices: tuple[tuple[int, int], ...]) -> tuple[Any, ...]:
    """`params` with each slice of an IN list made one list (see plan)."""
    if not slices:
        return tuple(params)
    out: list[Any] = []
    last = 0
    for start, stop in slices:
        out += [*params[last:start], list(params[start:stop])]
        last = stop
    return (*out, *params[last:])


def _numbered(sql: str) -> str:
    out, number, quoted = [], 0, False
    for char in sql:
        if char == "'":
            quoted = not quoted
        if char == "?" and not quoted:
            number += 1
            out.append(f"${number}")
        else:
            out.append(char)
    return "".join(out)


def _returns_id(sql: str) -> bool:
    match = _INSERT_INTO.match(sql)
    return bool(match and match.group(1) in ID_TABLES and "RETURNING" not in sql.upper())


def _rowcount(status: str) -> int:
    """The row count of a command status ("DELETE 3", "INSERT 0 1"); -1 if it has none."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1


def sqlite_error(exc: BaseException) -> sqlite3.Error:
    """asyncpg's error as the sqlite3 class the Store handles, with a one-line message."""
    if isinstance(exc, ClientDataError):  # a value it cannot send (sqlite3: binding)
        return sqlite3.ProgrammingError(str(exc).splitlines()[0])
    if isinstance(exc, asyncpg.DataError):  # a value the server refuses (out of range…)
        return sqlite3.DataError(str(exc).splitlines()[0])
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError | asyncpg.RaiseError):
        return sqlite3.IntegrityError(str(exc).splitlines()[0])
    if isinstance(exc, asyncpg.LockNotAvailableError | asyncpg.DeadlockDetectedError):
        busy = sqlite3.OperationalError(str(exc).splitlines()[0])
        busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
        return busy
    if isinstance(exc, _CONNECTION_LOST) and not (
            isinstance(exc, asyncpg.InterfaceError) and "connection" not in str(exc).lower()):
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return sqlite3.OperationalError(f"connection to PostgreSQL failed ({detail})")
    return sqlite3.OperationalError(str(exc).splitlines()[0] or type(exc).__name__)


@contextlib.contextmanager
def sqlite_errors() -> Generator[None, None, None]:
    try:
        yield
    except (asyncpg.PostgresError, *_CONNECTION_LOST) as exc:
        raise sqlite_error(exc) from exc


class Cursor:
    """The result of `execute`: awaited, it runs the statement (a change); used as an async
    context manager, it runs the query on the first fetch, or streams it when iterated."""

    def __init__(self, connection: PgConnection, sql: str, params: Sequence[Any]) -> None:
        self._connection = connection
        self._sql = sql
        self._params = tuple(params)
        self.lastrowid: int | None = None
        self.rowcount = -1

    def __await__(self) -> Generator[Any, None, Cursor]:
        return self._run().__await__()

    async def _run(self) -> Cursor:
        sql, conn = self._sql, self._connection
        if sql.strip().upper() == "BEGIN IMMEDIATE":
            await conn.begin_write()
        elif _returns_id(sql):
            self.lastrowid = await conn.call("fetchval", f"{sql} RETURNING id", self._params)
            self.rowcount = 1
        else:
            self.rowcount = _rowcount(await conn.call("execute", sql, self._params))
        return self

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def fetchall(self) -> list[asyncpg.Record]:
        return list(await self._connection.call("fetch", self._sql, self._params))

    async def fetchone(self) -> asyncpg.Record | None:
        return await self._connection.call("fetchrow", self._sql, self._params)

    def __aiter__(self) -> AsyncIterator[asyncpg.Record]:
        return self._connection.stream(self._sql, self._params)


class PgConnection:
    """One asyncpg connection, one statement at a time (as aiosqlite's queue)."""

    def __init__(self, conn: asyncpg.Connection, url: str,
                 connect_kwargs: dict[str, Any]) -> None:
        self._conn = conn
        self._url = url
        self._connect_kwargs = connect_kwargs
        self._busy = asyncio.Lock()
        self.row_factory: object = None  # set by the Store; asyncpg's Record already fits

    @property
    def in_transaction(self) -> bool:
        return self._conn.is_in_transaction()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        statement, slices = plan(sql)
        return Cursor(self, statement, folded(params, slices))

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()
                               ) -> list[asyncpg.Record]:
        statement, slices = plan(sql)
        return list(await self.call("fetch", statement, folded(params, slices)))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        statement, slices = plan(sql)
        args = [folded(r, slices) for r in rows]
        if args:
            async with self._busy:
                with sqlite_errors():
                    await self._conn.executemany(statement, args)

    async def call(self, method: str, sql: str, params: Sequence[Any]) -> Any:
        async with self._busy:
            with sqlite_errors():
                return await getattr(self._conn, method)(sql, *params)

    async def begin_write(self) -> None:
        async with self._busy:
            with sqlite_errors():
                await self._conn.execute("BEGIN")
                try:
                    await self._conn.execute("SELECT pg_advisory_xact_lock($1)",
                                             WRITE_LOCK_KEY)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await self._conn.execute("ROLLBACK")
                    raise

    async def stream(self, sql: str, params: Sequence[Any]) -> AsyncIterator[asyncpg.Record]:
        """A long SELECT on a connection of its own (a cursor needs a transaction; the
        store's connection stays free for the changes meanwhile)."""
        with sqlite_errors():
            conn = await asyncpg.connect(self._url, **self._connect_kwargs)
        try:
            with sqlite_errors():
                async with conn.transaction(readonly=True):
                    async for row in conn.cursor(sql, *params, prefetch=STREAM_PREFETCH):
                        yield row
        finally:
            await conn.close()

    async def close(self) -> None:
        async with self._busy:
            with contextlib.suppress(*_CONNECTION_LOST, asyncpg.PostgresError):
                await self._conn.close(timeout=5)
            self._conn.terminate()
