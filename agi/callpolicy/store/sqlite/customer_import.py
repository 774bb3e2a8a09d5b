"""Writing an import: checked whole first, then written in batches of transactions that let
other writers in between (see `import_customers`)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..model import (
    Actor,
    CustomerRecord,
    ImportIncomplete,
    ImportResult,
    StoreError,
    iso,
    utcnow,
)
from .audit import AUDIT_INSERT, audit_json
from .customers import JSON_LIST, Customers, customer_view
from .transaction import Transaction

__all__ = ["IMPORT_BATCH_ROWS", "IMPORT_PAUSE_SECONDS", "CustomerImport"]

# An import writes in transactions of about this many rows (a customer, its numbers, endpoints,
# networks, forward targets, its audit row): ~50-150 ms each, so another writer (the CLI, the
# daemon's call records) waits well under a second; the pause between them lets its busy
# handler (retrying every <= 100 ms) in before the next one.
IMPORT_BATCH_ROWS = 20_000
IMPORT_PAUSE_SECONDS = 0.1
_CHILD_TABLES = ("numbers", "endpoints", "site_networks", "forward_targets")


class CustomerImport(Customers):
    """`customer import`."""

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
            f"SELECT id FROM customers WHERE id IN {JSON_LIST}", (ids,))}
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
                async with Transaction(self._db, self._write_lock):
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
            f"SELECT {key}, customer_id FROM {table} WHERE {key} IN {JSON_LIST}",
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
                              item.after_json or audit_json(item.after)))
                result.created.append(record.id)
                continue
            after, after_json = item.after, item.after_json
            if record.status != before["status"]:
                result.warnings.append(
                    f"{record.id}: file says status {record.status!r} but the customer is "
                    f"{before['status']!r}; status kept (use `callpolicy customer "
                    f"{'suspend' if record.status == 'suspended' else 'reactivate'}`)")
                after, after_json = customer_view(record, before["status"]), None
            if after == before:
                result.unchanged.append(record.id)
                continue
            updated.append(record)
            audit.append(("customer.update", record.id, audit_json(before),
                          after_json or audit_json(after)))
            result.updated.append(record.id)
        await self._write_customers(created, updated, actor, now)
        at = iso(now)
        await self._db.executemany(AUDIT_INSERT, [
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
                await db.execute(f"DELETE FROM {table} WHERE customer_id IN {JSON_LIST}", ids)
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
        after = customer_view(record, record.status)
        return cls(record, after, audit_json(after) if new else None)


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
