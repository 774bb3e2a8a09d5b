"""Persistent customers, exceptions and audit log: the SQLite backend (aiosqlite).

- WAL, foreign keys, `synchronous=FULL`: a change is on disk when its transaction commits, and
  the CLI reports success only after the commit.
- Every change writes an audit row (who, when, ticket, reason, before/after) in the same
  transaction; triggers make the audit table append-only.
- The daemons' Snapshot is loaded and refreshed from here by `snapshot.SnapshotSource`
  (`load_customers`, `changed_customers`, the audit high-water mark).
- Call records (`calls`, art. 4.3) are billing data, not the audit log: the daemon upserts them
  in batches (`record_calls`), and `purge_calls` deletes old ones (the purge itself is audited).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import sqlite3
from collections import defaultdict
from collections.abc import (
    AsyncGenerator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Sequence,
)
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from ..live.records import DERIVED, FIELDS, CallRecord, timestamp
from ..policy import (
    Address,
    Customer,
    Endpoint,
    FraudLimits,
    Unblock,
    UnblockKind,
    unblock_state,
)
from .model import (
    LIMIT_FIELDS,
    REMINDER_GRACE_DAYS,
    SCHEDULER,
    Actor,
    CustomerRecord,
    ImportIncomplete,
    ImportResult,
    ReminderResult,
    Settlement,
    StoreError,
    contract_today,
    iso,
    limits_dict,
    parse_iso,
    suspension_due,
    utcnow,
)
from .schema import MIGRATIONS, SCHEMA_VERSION, TABLES, statements
from .sqlite_errors import explain

_BATCH = 500  # uniqueids per lookup (well under SQLite's bound-parameter limit)
# An import writes in transactions of about this many rows (a customer, its numbers, endpoints,
# networks, forward targets, its audit row): ~50-150 ms each, so another writer (the CLI, the
# daemon's call records) waits well under a second; the pause between them lets its busy
# handler (retrying every <= 100 ms) in before the next one.
IMPORT_BATCH_ROWS = 20_000
IMPORT_PAUSE_SECONDS = 0.1
_CHILD_TABLES = ("numbers", "endpoints", "site_networks", "forward_targets")
_JSON_LIST = "(SELECT value FROM json_each(?))"  # `x IN` a JSON array: one parameter, any size
_AUDIT_INSERT = ("INSERT INTO audit (at, actor, ticket, reason, action, customer_id, before,"
                 " after) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")




































class Store:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        # One connection, one transaction at a time: concurrent writers on it (the daemon's
        # record batches, a purge) queue here instead of nesting BEGINs.
        self._write_lock = _WriteLock(path)

    # -- opening ------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | Path, *, create: bool = False,
                   readonly: bool = False) -> Store:
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
    async def _open_readonly(cls, path: Path) -> Store:
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
    async def _connect(cls, path: Path, target: str, *, uri: bool) -> Store:
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

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- helpers ------------------------------------------------------------------------

    async def _scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._db.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return row[0] if row else None

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._db.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def _audit(
        self,
        actor: Actor,
        action: str,
        customer_id: str | None,
        before: object,
        after: object,
        at: datetime,
    ) -> None:
        await self._db.execute(
            _AUDIT_INSERT, _audit_row(actor, action, customer_id, before, after, at))

    # -- reads --------------------------------------------------------------------------

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        return (await self._customer_views([customer_id])).get(customer_id)

    async def _customer_views(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The given customers in full (as `customer` shows them), one query per table."""
        param = (json.dumps(list(ids)),)
        children: dict[str, dict[str, list[Any]]] = {}
        for table, columns in (("numbers", "number"), ("endpoints", "name, number"),
                               ("site_networks", "cidr"), ("forward_targets", "number")):
            children[table] = defaultdict(list)
            for r in await self._rows(
                    f"SELECT customer_id, {columns} FROM {table} "
                    f"WHERE customer_id IN {_JSON_LIST} ORDER BY {columns.split(',')[0]}",
                    param):
                children[table][r[0]].append(
                    {"name": r[1], "number": r[2]} if table == "endpoints" else r[1])
        views = {}
        for row in await self._rows(f"SELECT * FROM customers WHERE id IN {_JSON_LIST}", param):
            cid = row["id"]
            views[cid] = {
                "id": cid,
                "name": row["name"],
                "status": row["status"],
                "main_number": row["main_number"],
                "numbers": children["numbers"][cid],
                "install_address": {
                    "street": row["street"],
                    "house_number": row["house_number"],
                    "postcode": row["postcode"],
                    "municipality": row["municipality"],
                    "country": row["country"],
                },
                "site_networks": children["site_networks"][cid],
                "verified_forward_targets": children["forward_targets"][cid],
                "endpoints": children["endpoints"][cid],
            }
        return views

    async def customers(self) -> list[dict[str, Any]]:
        rows = await self._rows(
            """
            SELECT c.id, c.name, c.status, c.main_number,
                   (SELECT count(*) FROM numbers n WHERE n.customer_id = c.id) AS numbers,
                   (SELECT count(*) FROM endpoints e WHERE e.customer_id = c.id) AS endpoints,
                   (SELECT s.due_at FROM scheduled_suspensions s
                    WHERE s.customer_id = c.id AND s.state = 'pending') AS scheduled
            FROM customers c ORDER BY c.id
            """
        )
        return [dict(row) for row in rows]

    async def unblocks(
        self, customer_id: str | None = None, *, include_inactive: bool = False,
        now: datetime | None = None,
    ) -> list[dict[str, Any]]:
        now = now or utcnow()
        sql = "SELECT * FROM unblocks"
        where, params = [], []
        if customer_id is not None:
            where.append("customer_id = ?")
            params.append(customer_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY customer_id, id"
        result = []
        for row in await self._rows(sql, params):
            item = dict(row)
            item["state"] = unblock_state(
                bool(row["revoked_at"]), parse_iso(row["expires_at"]), now)
            if include_inactive or item["state"] == "active":
                result.append(item)
        return result

    async def audit_log(self, customer_id: str | None = None, limit: int = 50) -> list[dict]:
        if customer_id is None:
            rows = await self._rows(
                "SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        else:
            rows = await self._rows(
                "SELECT * FROM audit WHERE customer_id = ? ORDER BY id DESC LIMIT ?",
                (customer_id, limit),
            )
        result = []
        for row in reversed(rows):
            item = dict(row)
            item["before"] = json.loads(row["before"]) if row["before"] else None
            item["after"] = json.loads(row["after"]) if row["after"] else None
            result.append(item)
        return result

    async def suspension(self, customer_id: str) -> dict[str, Any] | None:
        rows = await self._rows(
            "SELECT * FROM suspensions WHERE customer_id = ? AND lifted_at IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (customer_id,),
        )
        return dict(rows[0]) if rows else None

    async def scheduled_suspension(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's pending scheduled suspension, with `reminder_sent_on` when a
        payment reminder scheduled it (None: scheduled with `suspend --at`)."""
        rows = await self._rows(
            "SELECT s.*, r.sent_on AS reminder_sent_on FROM scheduled_suspensions s"
            " LEFT JOIN payment_reminders r ON r.id = s.reminder_id"
            " WHERE s.customer_id = ? AND s.state = 'pending'", (customer_id,))
        return dict(rows[0]) if rows else None

    async def open_reminders(self, customer_id: str) -> list[dict[str, Any]]:
        """The payment reminders of the customer's open episode (not yet paid), oldest first."""
        rows = await self._rows(
            "SELECT id, sent_on, recorded_at, recorded_by, ticket FROM payment_reminders"
            " WHERE customer_id = ? AND closed_at IS NULL ORDER BY id", (customer_id,))
        return [dict(row) for row in rows]

    async def _customer_exists(self, customer_id: str) -> bool:
        return await self._scalar("SELECT 1 FROM customers WHERE id = ?", (customer_id,)) == 1

    async def limits(self, customer_id: str) -> FraudLimits:
        """The customer's own fraud limits; None = the operator default (config [fraud])."""
        if not await self._customer_exists(customer_id):
            raise StoreError(f"unknown customer {customer_id!r}")
        return await self._limits(customer_id)

    async def _limits(self, customer_id: str) -> FraudLimits:
        rows = await self._rows(
            f"SELECT {', '.join(LIMIT_FIELDS)} FROM fraud_limits WHERE customer_id = ?",
            (customer_id,))
        return FraudLimits(*rows[0]) if rows else FraudLimits()

    async def calls(
        self, customer_id: str | None = None, since: datetime | None = None,
        until: datetime | None = None, limit: int | None = None,
    ) -> list[CallRecord]:
        """Call records by start time (since <= started_at < until), oldest first; with
        `limit`, the most recent `limit` of them (still oldest first)."""
        if limit is None:
            return [r async for r in self.iter_calls(customer_id, since, until)]
        if limit < 1:
            raise ValueError("limit must be at least 1")
        sql, params = _calls_query(customer_id, since, until)
        rows = await self._rows(sql + " ORDER BY started_at DESC, uniqueid DESC LIMIT ?",
                                (*params, limit))
        return [_call_from_row(row) for row in reversed(rows)]

    async def iter_calls(
        self, customer_id: str | None = None, since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncGenerator[CallRecord, None]:
        """Like `calls` without a limit, streamed (an export of months of calls)."""
        sql, params = _calls_query(customer_id, since, until)
        async with self._db.execute(sql + " ORDER BY started_at, uniqueid", params) as cursor:
            async for row in cursor:
                yield _call_from_row(row)

    async def _require_customer(self, customer_id: str) -> dict[str, Any]:
        customer = await self.customer(customer_id)
        if customer is None:
            raise StoreError(f"unknown customer {customer_id!r}")
        return customer

    # -- changes ------------------------------------------------------------------------

    async def import_customers(
        self, records: Sequence[CustomerRecord], actor: Actor, *,
        batch_rows: int = IMPORT_BATCH_ROWS,
    ) -> ImportResult:
        """Create or update customers. Status changes of existing customers are not taken from
        a file: suspensions go through suspend/reactivate (audited with a ticket), so
        re-importing an old file never lifts a suspension by accident.

        Everything is checked first (a number or endpoint of another customer: nothing is
        written). Then the customers are written in file order, in transactions of about
        `batch_rows` rows (a customer is never split; customers that take numbers from each
        other are in one transaction), with a pause between them so that other writers (the
        CLI, the daemon's call records) wait well under a second. A file that fits one batch
        is all or nothing. If a later transaction fails, ImportIncomplete says which customers
        are written (committed and audited) and which not; importing the file again finishes
        it (the written ones come out unchanged)."""
        records = list(records)
        reach = await self._check_import(records)
        ids = json.dumps([r.id for r in records])
        known = {r[0] for r in await self._rows(
            f"SELECT id FROM customers WHERE id IN {_JSON_LIST}", (ids,))}
        result = ImportResult()
        now = utcnow()
        done = 0
        loop = asyncio.get_running_loop()
        for batch in _import_batches(records, reach, batch_rows):
            # The audit images are made outside the transaction: that work is (part of) the
            # pause in which other writers get the database.
            paused = loop.time()
            prepared = [_Prepared.of(r, r.id not in known)
                        for r in records[batch.start:batch.stop]]
            if done:
                await asyncio.sleep(IMPORT_PAUSE_SECONDS - (loop.time() - paused))
            try:
                async with _Transaction(self._db, self._write_lock):
                    written = await self._import_batch(prepared, actor, now)
            except StoreError as exc:
                if not done:
                    raise
                raise ImportIncomplete(records, done, exc) from exc
            except sqlite3.Error as exc:
                if not done:
                    raise StoreError(f"nothing imported: {exc}") from exc
                raise ImportIncomplete(records, done, exc) from exc
            result.add(written)
            done = batch.stop
        return result

    async def _check_import(self, records: Sequence[CustomerRecord]) -> dict[int, int]:
        """Refuse an import that would take a number or endpoint from a customer not in it.

        Returns the moves: position of a customer taking a number (or endpoint) from one later
        in the file -> the giver's position (both must be written in one transaction)."""
        position: dict[str, int] = {}
        numbers: dict[str, str] = {}
        endpoints: dict[str, str] = {}
        for index, record in enumerate(records):
            if position.setdefault(record.id, index) != index:
                raise StoreError(f"customer {record.id!r} appears twice in the import")
            for what, claimed, keys in (("number", numbers, record.numbers),
                                        ("endpoint", endpoints,
                                         [e.name for e in record.endpoints])):
                for key in keys:
                    if claimed.setdefault(key, record.id) != record.id:
                        raise StoreError(f"{record.id}: {what} {key} is also listed for "
                                         f"{claimed[key]!r}")
        reach: dict[int, int] = {}
        conflicts: list[str] = []
        for what, claimed, table, key in (("number", numbers, "numbers", "number"),
                                          ("endpoint", endpoints, "endpoints", "name")):
            for value, owner in (await self._owners(table, key, list(claimed))).items():
                taker = claimed[value]
                if owner == taker:
                    continue
                if owner not in position:
                    conflicts.append(
                        f"{taker}: {what} {value} belongs to customer {owner!r}")
                elif position[taker] < position[owner]:
                    reach[position[taker]] = max(reach.get(position[taker], 0), position[owner])
        if conflicts:
            more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
            raise StoreError(f"{conflicts[0]}{more}; nothing imported")
        return reach

    async def _owners(self, table: str, key: str, values: Sequence[str]) -> dict[str, str]:
        """{value: customer_id} of the given numbers or endpoint names that exist."""
        if not values:
            return {}
        rows = await self._rows(
            f"SELECT {key}, customer_id FROM {table} WHERE {key} IN {_JSON_LIST}",
            (json.dumps(list(values)),))
        return {r[0]: r[1] for r in rows}

    async def _import_batch(self, batch: Sequence[_Prepared], actor: Actor,
                            now: datetime) -> ImportResult:
        """One import transaction: read the batch's customers, write only what changed."""
        records = [p.record for p in batch]
        ids = [r.id for r in records]
        befores = await self._customer_views(ids)
        await self._recheck_owners(records, set(ids))
        result = ImportResult()
        created: list[CustomerRecord] = []
        updated: list[CustomerRecord] = []
        audit: list[tuple[str, str, str | None, str]] = []
        for item in batch:
            record, before = item.record, befores.get(item.record.id)
            if before is None:
                created.append(record)
                audit.append(("customer.create", record.id, None,
                              item.after_json or _json(item.after)))
                result.created.append(record.id)
                continue
            after, after_json = item.after, item.after_json
            if record.status != before["status"]:
                result.warnings.append(
                    f"{record.id}: file says status {record.status!r} but the customer is "
                    f"{before['status']!r}; status kept (use `callpolicy customer "
                    f"{'suspend' if record.status == 'suspended' else 'reactivate'}`)")
                after, after_json = _customer_view(record, before["status"]), None
            if after == before:
                result.unchanged.append(record.id)
                continue
            updated.append(record)
            audit.append(("customer.update", record.id, _json(before),
                          after_json or _json(after)))
            result.updated.append(record.id)
        await self._write_customers(created, updated, actor, now)
        at = iso(now)
        await self._db.executemany(_AUDIT_INSERT, [
            (at, actor.by, actor.ticket, actor.reason, action, cid, before, after)
            for action, cid, before, after in audit])
        return result

    async def _recheck_owners(self, batch: Sequence[CustomerRecord], ids: set[str]) -> None:
        """In the write transaction: has another writer given one of the batch's numbers or
        endpoints to a customer outside it since `_check_import`?"""
        for what, table, key, values in (
                ("number", "numbers", "number", {n: r.id for r in batch for n in r.numbers}),
                ("endpoint", "endpoints", "name",
                 {e.name: r.id for r in batch for e in r.endpoints})):
            for value, owner in (await self._owners(table, key, list(values))).items():
                if owner != values[value] and owner not in ids:
                    raise StoreError(f"{values[value]}: {what} {value} now belongs to customer "
                                     f"{owner!r} (changed during the import)")

    async def _write_customers(self, created: Sequence[CustomerRecord],
                               updated: Sequence[CustomerRecord], actor: Actor,
                               now: datetime) -> None:
        db, stamp = self._db, iso(now)
        if updated:
            ids = (json.dumps([r.id for r in updated]),)
            for table in _CHILD_TABLES:  # all first: a number may move between them
                await db.execute(f"DELETE FROM {table} WHERE customer_id IN {_JSON_LIST}", ids)
            await db.executemany(
                "UPDATE customers SET name = ?, main_number = ?, street = ?, house_number = ?,"
                " postcode = ?, municipality = ?, country = ?, updated_at = ? WHERE id = ?",
                [(r.name, r.main_number, *_address_row(r), stamp, r.id) for r in updated])
        await db.executemany(
            "INSERT INTO customers (id, name, status, main_number, street, house_number,"
            " postcode, municipality, country, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r.id, r.name, r.status, r.main_number, *_address_row(r), stamp, stamp)
             for r in created])
        await db.executemany(
            "INSERT INTO suspensions (customer_id, suspended_at, suspended_by, ticket, reason)"
            " VALUES (?, ?, ?, ?, ?)",
            [(r.id, stamp, actor.by, actor.ticket or "import", "suspended in import file")
             for r in created if r.status == "suspended"])
        written = [*created, *updated]
        await db.executemany("INSERT INTO numbers (number, customer_id) VALUES (?, ?)",
                             [(n, r.id) for r in written for n in r.numbers])
        await db.executemany(
            "INSERT INTO endpoints (name, customer_id, number) VALUES (?, ?, ?)",
            [(e.name, r.id, e.number) for r in written for e in r.endpoints])
        await db.executemany("INSERT INTO site_networks (customer_id, cidr) VALUES (?, ?)",
                             [(r.id, c) for r in written for c in r.site_networks])
        await db.executemany("INSERT INTO forward_targets (customer_id, number) VALUES (?, ?)",
                             [(r.id, n) for r in written for n in r.verified_forward_targets])

    async def suspend(self, customer_id: str, actor: Actor) -> None:
        """Suspend now. A pending scheduled suspension is cancelled: this one replaces it."""
        now = utcnow()
        async with _Transaction(self._db, self._write_lock):
            before = await self._require_customer(customer_id)
            if before["status"] == "suspended":
                raise StoreError(f"customer {customer_id!r} is already suspended")
            await self._cancel_schedule(customer_id, actor, now,
                                        "replaced by an immediate suspension")
            await self._suspend(customer_id, now, now, actor.by, actor.ticket, actor.reason)
            await self._audit(actor, "customer.suspend", customer_id,
                              {"status": "active"}, {"status": "suspended"}, now)

    async def _suspend(self, customer_id: str, since: datetime, now: datetime, by: str,
                       ticket: str | None, reason: str | None) -> None:
        await self._db.execute(
            "UPDATE customers SET status = 'suspended', updated_at = ? WHERE id = ?",
            (iso(now), customer_id))
        await self._db.execute(
            "INSERT INTO suspensions (customer_id, suspended_at, suspended_by, ticket,"
            " reason) VALUES (?, ?, ?, ?, ?)",
            (customer_id, iso(since), by, ticket, reason))

    async def reactivate(self, customer_id: str, actor: Actor) -> Settlement:
        """Lift the suspension and cancel a pending scheduled one. Error if neither exists."""
        now = utcnow()
        async with _Transaction(self._db, self._write_lock):
            before = await self._require_customer(customer_id)
            suspended = before["status"] == "suspended"
            if not suspended and await self.scheduled_suspension(customer_id) is None:
                raise StoreError(f"customer {customer_id!r} is not suspended and has no "
                                 "scheduled suspension")
            cancelled = await self._cancel_schedule(customer_id, actor, now, "reactivated")
            if suspended:
                await self._reactivate(customer_id, actor, now)
        return Settlement(suspended, cancelled)

    async def _reactivate(self, customer_id: str, actor: Actor, now: datetime) -> None:
        await self._db.execute(
            "UPDATE customers SET status = 'active', updated_at = ? WHERE id = ?",
            (iso(now), customer_id))
        await self._db.execute(
            "UPDATE suspensions SET lifted_at = ?, lifted_by = ?, lifted_ticket = ?"
            " WHERE customer_id = ? AND lifted_at IS NULL",
            (iso(now), actor.by, actor.ticket, customer_id))
        await self._audit(actor, "customer.reactivate", customer_id,
                          {"status": "suspended"}, {"status": "active"}, now)

    async def _cancel_schedule(self, customer_id: str, actor: Actor, now: datetime,
                               why: str) -> dict[str, Any] | None:
        """Cancel the pending scheduled suspension, if any (audited). Inside a transaction."""
        schedule = await self.scheduled_suspension(customer_id)
        if schedule is None:
            return None
        await self._db.execute(
            "UPDATE scheduled_suspensions SET state = 'cancelled', closed_at = ?, closed_by = ?,"
            " closed_ticket = ? WHERE id = ?",
            (iso(now), actor.by, actor.ticket, schedule["id"]))
        await self._audit(actor, "customer.schedule_cancelled", customer_id,
                          _schedule_view(schedule), {"state": "cancelled", "why": why}, now)
        return schedule

    async def schedule_suspension(self, customer_id: str, at: datetime,
                                  actor: Actor) -> dict[str, Any]:
        """Suspend the customer at `at` (in the future). The policy treats the customer as
        suspended from that moment; the daemon writes the suspension (apply_due_suspensions)."""
        if at.utcoffset() is None:
            raise StoreError("a scheduled suspension needs a timezone-aware time")
        now = utcnow()
        if at <= now:
            raise StoreError(f"the suspension time {at.isoformat()} is not in the future")
        async with _Transaction(self._db, self._write_lock):
            before = await self._require_customer(customer_id)
            if before["status"] == "suspended":
                raise StoreError(f"customer {customer_id!r} is already suspended")
            await self._refuse_second_schedule(customer_id)
            return await self._schedule(customer_id, at, None, actor, now)

    async def _refuse_second_schedule(self, customer_id: str) -> None:
        pending = await self.scheduled_suspension(customer_id)
        if pending is not None:
            raise StoreError(
                f"customer {customer_id!r} already has a suspension scheduled at "
                f"{pending['due_at']} (ticket {pending['ticket']}); `customer reactivate` "
                "cancels it")

    async def _schedule(self, customer_id: str, at: datetime, reminder_id: int | None,
                        actor: Actor, now: datetime) -> dict[str, Any]:
        await self._db.execute(
            "INSERT INTO scheduled_suspensions (customer_id, due_at, reminder_id, created_at,"
            " created_by, ticket, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (customer_id, iso(at), reminder_id, iso(now), actor.by, actor.ticket, actor.reason))
        schedule = await self.scheduled_suspension(customer_id)
        assert schedule is not None
        await self._audit(actor, "customer.suspend_scheduled", customer_id, None,
                          _schedule_view(schedule), now)
        return schedule

    async def record_reminder(self, customer_id: str, sent_on: date,
                              actor: Actor) -> ReminderResult:
        """Record a payment reminder sent on `sent_on` (a Brussels calendar date, not in the
        future). The first reminder of an open episode schedules the suspension at
        suspension_due(sent_on) (art. 5.7), unless the customer is already suspended or
        already has one scheduled; later reminders never move it. A due time already past
        is due at once."""
        now = utcnow()
        if sent_on > contract_today(now):
            raise StoreError(f"the reminder date {sent_on.isoformat()} is in the future")
        async with _Transaction(self._db, self._write_lock):
            customer = await self._require_customer(customer_id)
            first = not await self.open_reminders(customer_id)
            cursor = await self._db.execute(
                "INSERT INTO payment_reminders (customer_id, sent_on, recorded_at, recorded_by,"
                " ticket) VALUES (?, ?, ?, ?, ?)",
                (customer_id, sent_on.isoformat(), iso(now), actor.by, actor.ticket))
            reminder_id = cursor.lastrowid
            assert reminder_id is not None
            await self._audit(actor, "customer.remind", customer_id, None,
                              {"id": reminder_id, "sent_on": sent_on.isoformat(),
                               "first": first}, now)
            suspended = customer["status"] == "suspended"
            schedule = await self.scheduled_suspension(customer_id)
            created = first and not suspended and schedule is None
            if created:
                schedule = await self._schedule(customer_id, suspension_due(sent_on),
                                                reminder_id, actor, now)
        return ReminderResult(reminder_id, first, schedule, created, suspended)

    async def record_payment(self, customer_id: str, actor: Actor) -> Settlement:
        """The customer paid (art. 5.7): close the reminder episode, cancel a pending
        scheduled suspension, and lift a suspension. Error if there is none of these."""
        now = utcnow()
        async with _Transaction(self._db, self._write_lock):
            before = await self._require_customer(customer_id)
            suspended = before["status"] == "suspended"
            reminders = await self.open_reminders(customer_id)
            cancelled = await self._cancel_schedule(customer_id, actor, now, "paid")
            if not (suspended or reminders or cancelled):
                raise StoreError(f"customer {customer_id!r} has no open payment reminder, "
                                 "scheduled suspension or suspension: nothing to settle")
            await self._db.execute(
                "UPDATE payment_reminders SET closed_at = ?, closed_by = ?, closed_ticket = ?"
                " WHERE customer_id = ? AND closed_at IS NULL",
                (iso(now), actor.by, actor.ticket, customer_id))
            await self._audit(actor, "customer.paid", customer_id,
                              {"status": before["status"],
                               "reminders": [r["sent_on"] for r in reminders]},
                              {"status": "active", "reminders": []}, now)
            if suspended:
                await self._reactivate(customer_id, actor, now)
        return Settlement(suspended, cancelled, len(reminders))

    async def apply_due_suspensions(self, now: datetime,
                                    customer_id: str | None = None) -> list[str]:
        """Write the scheduled suspensions due at `now` to the database: status suspended, a
        suspension row (the schedule's author and ticket, in force since its due time), the
        schedule marked applied, an audit row by SCHEDULER. One transaction per customer;
        the state is re-read inside it, so two processes running this apply each schedule
        once. Returns the customers suspended."""
        sql = "SELECT id FROM scheduled_suspensions WHERE state = 'pending' AND due_at <= ?"
        params: tuple[Any, ...] = (iso(now),)
        if customer_id is not None:
            sql += " AND customer_id = ?"
            params += (customer_id,)
        applied = []
        for row in await self._rows(sql + " ORDER BY due_at", params):
            async with _Transaction(self._db, self._write_lock):
                done = await self._apply_schedule(row["id"], now)
            if done is not None:
                applied.append(done)
        return applied

    async def _apply_schedule(self, schedule_id: int, due_by: datetime) -> str | None:
        now = utcnow()
        rows = await self._rows(
            "SELECT s.*, r.sent_on AS reminder_sent_on, c.status FROM scheduled_suspensions s"
            " JOIN customers c ON c.id = s.customer_id"
            " LEFT JOIN payment_reminders r ON r.id = s.reminder_id"
            " WHERE s.id = ? AND s.state = 'pending' AND s.due_at <= ?",
            (schedule_id, iso(due_by)))
        if not rows:
            return None  # cancelled, or applied by another process meanwhile
        schedule = dict(rows[0])
        customer_id = schedule["customer_id"]
        why = _schedule_why(schedule)
        actor = Actor(SCHEDULER, schedule["ticket"],
                      f"scheduled suspension #{schedule['id']} by {schedule['created_by']}: "
                      f"{why}")
        if schedule["status"] == "suspended":  # not reachable through this API; be safe
            await self._cancel_schedule(customer_id, actor, now, "already suspended")
            return None
        await self._db.execute(
            "UPDATE scheduled_suspensions SET state = 'applied', closed_at = ?, closed_by = ?,"
            " closed_ticket = ? WHERE id = ?", (iso(now), SCHEDULER, schedule["ticket"],
                                                schedule_id))
        # In force since its due time, or since it was made if that was already past.
        since = max(schedule["due_at"], schedule["created_at"])  # both UTC ISO 8601
        await self._suspend(customer_id, parse_iso(since) or now, now,
                            schedule["created_by"], schedule["ticket"], why)
        await self._audit(actor, "customer.suspend", customer_id, {"status": "active"},
                          {"status": "suspended", "schedule": _schedule_view(schedule)}, now)
        return customer_id

    async def add_unblock(
        self, customer_id: str, kind: UnblockKind, value: str, actor: Actor,
        expires_at: datetime | None,
    ) -> int:
        now = utcnow()
        async with _Transaction(self._db, self._write_lock):
            await self._require_customer(customer_id)
            cursor = await self._db.execute(
                "INSERT INTO unblocks (customer_id, kind, value, created_at, created_by, ticket,"
                " reason, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (customer_id, kind.value, value, iso(now), actor.by, actor.ticket,
                 actor.reason, iso(expires_at)))
            unblock_id = cursor.lastrowid
            assert unblock_id is not None
            await self._audit(actor, "unblock.add", customer_id, None,
                              {"id": unblock_id, "kind": kind.value, "value": value,
                               "expires_at": iso(expires_at)}, now)
        return unblock_id

    async def reblock(
        self, customer_id: str, kind: UnblockKind, value: str, actor: Actor
    ) -> list[int]:
        """Revoke every active unblock of this kind and value. Error if there is none."""
        now = utcnow()
        async with _Transaction(self._db, self._write_lock):
            await self._require_customer(customer_id)
            rows = await self._rows(
                "SELECT id, expires_at FROM unblocks WHERE customer_id = ? AND kind = ?"
                " AND value = ? AND revoked_at IS NULL",
                (customer_id, kind.value, value))
            # `revoked_at IS NULL` pre-filters; policy.unblock_state is the rule.
            ids = [r["id"] for r in rows
                   if unblock_state(False, parse_iso(r["expires_at"]), now) == "active"]
            if not ids:
                raise StoreError(
                    f"customer {customer_id!r} has no active unblock for {kind.value} {value}")
            await self._db.executemany(
                "UPDATE unblocks SET revoked_at = ?, revoked_by = ?, revoked_ticket = ?"
                " WHERE id = ?",
                [(iso(now), actor.by, actor.ticket, i) for i in ids])
            await self._audit(actor, "unblock.reblock", customer_id,
                              {"ids": ids, "kind": kind.value, "value": value}, None, now)
        return ids

    async def set_limits(self, customer_id: str, limits: FraudLimits, actor: Actor) -> bool:
        """Set the customer's own fraud limits (all three: None = the operator default).

        Audited as "limits.set" with the old and new overrides, which also makes a running
        daemon reload the customer. False, and nothing written, if they are already these."""
        for name in LIMIT_FIELDS:
            value = getattr(limits, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise StoreError(f"{name} must be a whole number >= 0 (or the default), "
                                 f"got {value!r}")
        now = utcnow()
        async with _Transaction(self._db, self._write_lock):
            if not await self._customer_exists(customer_id):
                raise StoreError(f"unknown customer {customer_id!r}")
            before = await self._limits(customer_id)
            if before == limits:
                return False
            if limits == FraudLimits():
                await self._db.execute("DELETE FROM fraud_limits WHERE customer_id = ?",
                                       (customer_id,))
            else:
                await self._db.execute(
                    "INSERT INTO fraud_limits (customer_id, max_concurrent, max_per_minute,"
                    " max_concurrent_risky, updated_at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (customer_id) DO UPDATE SET"
                    " max_concurrent = excluded.max_concurrent,"
                    " max_per_minute = excluded.max_per_minute,"
                    " max_concurrent_risky = excluded.max_concurrent_risky,"
                    " updated_at = excluded.updated_at",
                    (customer_id, limits.max_concurrent, limits.max_per_minute,
                     limits.max_concurrent_risky, iso(now)))
            await self._audit(actor, "limits.set", customer_id, limits_dict(before),
                              limits_dict(limits), now)
        return True

    async def record_calls(self, records: Sequence[CallRecord]) -> None:
        """Insert or update call records, all in one transaction (the daemon batches).

        A record with only some fields (the answer, the hang-up) updates those: a None field
        keeps the stored value. Several records of one uniqueid in a batch apply in order.
        The DERIVED columns (free, duration_seconds, billable_seconds) are computed from the
        merged record."""
        if not records:
            return
        async with _Transaction(self._db, self._write_lock):
            merged: dict[str, CallRecord] = {}
            ids = list(dict.fromkeys(r.uniqueid for r in records))
            for start in range(0, len(ids), _BATCH):
                chunk = ids[start:start + _BATCH]
                for row in await self._rows(
                        f"SELECT * FROM calls WHERE uniqueid IN ({','.join('?' * len(chunk))})",
                        chunk):
                    merged[row["uniqueid"]] = _call_from_row(row)
            for record in records:
                old = merged.get(record.uniqueid)
                merged[record.uniqueid] = old.merged(record) if old else record
            columns = (*FIELDS, *DERIVED)
            updates = ", ".join(f"{c} = excluded.{c}" for c in columns[1:])
            await self._db.executemany(
                f"INSERT INTO calls ({', '.join(columns)})"
                f" VALUES ({', '.join('?' * len(columns))})"
                f" ON CONFLICT (uniqueid) DO UPDATE SET {updates}",
                [_call_row(merged[i]) for i in ids])

    async def purge_calls(self, older_than: datetime, actor: Actor) -> int:
        """Delete the call records that started before `older_than`; audited ("calls.purge",
        with the count). Records without a start time go by their answer or hang-up time."""
        now = utcnow()
        if older_than.utcoffset() is None:
            raise StoreError("purge_calls needs a timezone-aware time")
        if older_than > now:
            raise StoreError("purge_calls: the cut-off is in the future "
                             "(that would delete calls still going on)")
        cutoff = timestamp(older_than)
        async with _Transaction(self._db, self._write_lock):
            cursor = await self._db.execute(
                "DELETE FROM calls WHERE started_at < ?"
                " OR (started_at IS NULL AND coalesce(ended_at, answered_at) < ?)",
                (cutoff, cutoff))
            count = cursor.rowcount
            await self._audit(actor, "calls.purge", None, None,
                              {"deleted": count, "older_than": iso(older_than)}, now)
        return count

    # -- snapshot -----------------------------------------------------------------------

    async def audit_high_water(self) -> int:
        return int(await self._scalar("SELECT coalesce(max(id), 0) FROM audit"))

    async def audit_at(self, audit_id: int) -> str | None:
        """When audit row `audit_id` was written (None: no such row; 0 is "no row yet")."""
        if audit_id == 0:
            return None
        return await self._scalar("SELECT at FROM audit WHERE id = ?", (audit_id,))

    async def changed_customers(self, since: int) -> tuple[set[str], int]:
        rows = await self._rows(
            "SELECT id, customer_id FROM audit WHERE id > ? ORDER BY id", (since,))
        if not rows:
            return set(), since
        return {r["customer_id"] for r in rows if r["customer_id"]}, rows[-1]["id"]

    async def load_customers(self, ids: Iterable[str] | None = None) -> dict[str, Customer]:
        """Customers as the policy sees them: all of them, or the given ids. All of them are
        built off the event loop (100 000 customers take a second or more)."""
        id_list = None if ids is None else list(ids)
        if id_list is not None and not id_list:
            return {}
        rows = await self._customer_rows(id_list)
        if id_list is None:
            return await asyncio.to_thread(_customers_from_rows, rows)
        return _customers_from_rows(rows)

    async def _customer_rows(self, ids: list[str] | None) -> _CustomerRows:
        params: tuple[str, ...]
        if ids is None:
            where, params = "", ()
        else:
            where = f" WHERE customer_id IN ({','.join('?' * len(ids))})"
            params = tuple(ids)
        also = " AND" if where else " WHERE"
        now = iso(utcnow())
        return _CustomerRows(
            customers=await self._rows(
                f"SELECT * FROM customers{where.replace('customer_id', 'id')}", params),
            numbers=await self._rows(f"SELECT customer_id, number FROM numbers{where}", params),
            networks=await self._rows(
                f"SELECT customer_id, cidr FROM site_networks{where}", params),
            targets=await self._rows(
                f"SELECT customer_id, number FROM forward_targets{where}", params),
            # The same rule as policy.unblock_state, in SQL so that revoked and expired rows
            # are not loaded; the engine applies Unblock.active again at decision time.
            unblocks=await self._rows(
                "SELECT id, customer_id, kind, value, ticket, expires_at FROM unblocks"
                f"{where}{also} revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
                (*params, now)),
            suspensions=await self._rows(
                f"SELECT customer_id, ticket FROM suspensions{where}{also} lifted_at IS NULL"
                " ORDER BY id", params),
            schedules=await self._rows(
                f"SELECT customer_id, due_at, ticket FROM scheduled_suspensions{where}{also}"
                " state = 'pending'", params),
            limits=await self._rows(
                f"SELECT customer_id, {', '.join(LIMIT_FIELDS)} FROM fraud_limits{where}",
                params),
        )

    async def load_endpoints_named(self, names: Iterable[str]) -> list[Endpoint]:
        name_list = list(names)
        if not name_list:
            return []
        rows = await self._rows(
            "SELECT name, customer_id, number FROM endpoints WHERE name IN "
            f"({','.join('?' * len(name_list))})", name_list)
        return [Endpoint(r[0], r[1], r[2]) for r in rows]

    async def load_endpoints(self, ids: Iterable[str] | None = None) -> list[Endpoint]:
        if ids is None:
            rows = await self._rows("SELECT name, customer_id, number FROM endpoints")
        else:
            id_list = list(ids)
            rows = await self._rows(
                "SELECT name, customer_id, number FROM endpoints WHERE customer_id IN "
                f"({','.join('?' * len(id_list))})", id_list) if id_list else []
        return [Endpoint(r[0], r[1], r[2]) for r in rows]


@dataclass(frozen=True, slots=True)
class _CustomerRows:
    """What load_customers reads, before it becomes Customer values."""

    customers: list[sqlite3.Row]
    numbers: list[sqlite3.Row]
    networks: list[sqlite3.Row]
    targets: list[sqlite3.Row]
    unblocks: list[sqlite3.Row]
    suspensions: list[sqlite3.Row]
    schedules: list[sqlite3.Row]
    limits: list[sqlite3.Row]


def _customers_from_rows(rows: _CustomerRows) -> dict[str, Customer]:
    numbers: dict[str, list[str]] = defaultdict(list)
    for r in rows.numbers:
        numbers[r[0]].append(r[1])
    networks: dict[str, list] = defaultdict(list)
    for r in rows.networks:
        networks[r[0]].append(ipaddress.ip_network(r[1]))
    targets: dict[str, list[str]] = defaultdict(list)
    for r in rows.targets:
        targets[r[0]].append(r[1])
    unblocks: dict[str, list[Unblock]] = defaultdict(list)
    for r in rows.unblocks:
        unblocks[r["customer_id"]].append(
            Unblock(r["id"], UnblockKind(r["kind"]), r["value"], r["ticket"],
                    parse_iso(r["expires_at"])))
    tickets = {r[0]: r[1] for r in rows.suspensions}
    schedules = {r[0]: (parse_iso(r[1]), r[2]) for r in rows.schedules}
    limits = {r[0]: FraudLimits(r[1], r[2], r[3]) for r in rows.limits}
    result = {}
    for r in rows.customers:
        cid = r["id"]
        suspend_at, suspend_at_ticket = schedules.get(cid, (None, ""))
        result[cid] = Customer(
            id=cid,
            name=r["name"],
            suspended=r["status"] == "suspended",
            main_number=r["main_number"],
            numbers=frozenset(numbers[cid]),
            install_address=Address(r["street"], r["house_number"], r["postcode"],
                                    r["municipality"], r["country"]),
            site_networks=tuple(networks[cid]),
            verified_forward_targets=frozenset(targets[cid]),
            unblocks=tuple(unblocks[cid]),
            suspension_ticket=tickets.get(cid, ""),
            limits=limits.get(cid, FraudLimits()),
            suspend_at=suspend_at,
            suspend_at_ticket=suspend_at_ticket,
        )
    return result


class _WriteLock(asyncio.Lock):
    """The store's write lock; knows the database it guards (for error messages)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path


def _audit_row(actor: Actor, action: str, customer_id: str | None, before: object,
               after: object, at: datetime) -> tuple[Any, ...]:
    return (iso(at), actor.by, actor.ticket, actor.reason, action, customer_id,
            _json(before) if before is not None else None,
            _json(after) if after is not None else None)


def _json(value: object) -> str:
    """An audit image."""
    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A customer to import with its audit image (as it will be if its status is kept), in
    JSON too if the customer is new (most of an import's images are of new customers; an
    existing one is often unchanged: no image)."""

    record: CustomerRecord
    after: dict[str, Any]
    after_json: str | None

    @classmethod
    def of(cls, record: CustomerRecord, new: bool) -> _Prepared:
        after = _customer_view(record, record.status)
        return cls(record, after, _json(after) if new else None)


def _customer_view(record: CustomerRecord, status: str) -> dict[str, Any]:
    """What `Store.customer` will show once the record is written with this status."""
    a = record.install_address
    return {
        "id": record.id,
        "name": record.name,
        "status": status,
        "main_number": record.main_number,
        "numbers": sorted(record.numbers),
        "install_address": {"street": a.street, "house_number": a.house_number,
                            "postcode": a.postcode, "municipality": a.municipality,
                            "country": a.country},
        "site_networks": sorted(record.site_networks),
        "verified_forward_targets": sorted(record.verified_forward_targets),
        "endpoints": [{"name": e.name, "number": e.number}
                      for e in sorted(record.endpoints, key=lambda e: e.name)],
    }


def _address_row(record: CustomerRecord) -> tuple[str, ...]:
    a = record.install_address
    return (a.street, a.house_number, a.postcode, a.municipality, a.country)


def _import_batches(records: Sequence[CustomerRecord], reach: dict[int, int],
                    batch_rows: int) -> Iterator[range]:
    """Consecutive positions of the import, about `batch_rows` rows each. Never cuts between a
    customer taking a number from a later one and that later one (`reach`)."""
    start, rows, furthest = 0, 0, -1
    for index, record in enumerate(records):
        if rows >= batch_rows and index > furthest:
            yield range(start, index)
            start, rows = index, 0
        rows += (2 + len(record.numbers) + len(record.endpoints) + len(record.site_networks)
                 + len(record.verified_forward_targets))
        furthest = max(furthest, reach.get(index, index))
    if start < len(records):
        yield range(start, len(records))


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any exception (nothing half-written).

    Holds the store's write lock: one transaction at a time on the connection. A database
    that cannot take the write (disk full, read-only, locked, damaged) raises StoreError
    naming the cause; SQLite may already have rolled back (SQLITE_FULL does): the ROLLBACK is
    only sent while a transaction is open, so its own error never hides the cause."""

    def __init__(self, db: aiosqlite.Connection, lock: _WriteLock) -> None:
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




def _schedule_why(schedule: dict[str, Any]) -> str:
    if schedule.get("reminder_sent_on"):
        return (f"first payment reminder sent {schedule['reminder_sent_on']} "
                f"+ {REMINDER_GRACE_DAYS} days (art. 5.7)")
    return schedule.get("reason") or "scheduled with suspend --at"


def _schedule_view(schedule: dict[str, Any]) -> dict[str, Any]:
    """A schedule as the audit log shows it."""
    return {"id": schedule["id"], "due_at": schedule["due_at"], "ticket": schedule["ticket"],
            "reminder_sent_on": schedule.get("reminder_sent_on"),
            "created_by": schedule["created_by"]}


def _calls_query(customer_id: str | None, since: datetime | None,
                 until: datetime | None) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if customer_id is not None:
        where.append("customer_id = ?")
        params.append(customer_id)
    if since is not None:
        where.append("started_at >= ?")
        params.append(timestamp(since))
    if until is not None:
        where.append("started_at < ?")
        params.append(timestamp(until))
    sql = f"SELECT {', '.join(FIELDS)} FROM calls"
    return (sql + " WHERE " + " AND ".join(where) if where else sql), params


def _call_from_row(row: sqlite3.Row) -> CallRecord:
    return CallRecord.from_fields({name: row[name] for name in FIELDS})


def _call_row(record: CallRecord) -> tuple[Any, ...]:
    derived = {"free": int(record.free), "duration_seconds": record.duration_seconds,
               "billable_seconds": record.billable_seconds}
    return (*record.to_fields().values(), *(derived[name] for name in DERIVED))








