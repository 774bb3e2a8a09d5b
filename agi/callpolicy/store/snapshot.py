"""The daemons' in-memory Snapshot, kept up to date from the store's audit log.

Long-running processes call `SnapshotSource.refresh()` a few times a second: it reads the audit
log's high-water mark and reloads only the customers that changed, so a CLI change is live within
a second and no decision queries the database. It uses the store only through its methods."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from ..policy import Customer, Endpoint, PolicyConfig, Snapshot
from .interface import StoreBackend
from .model import StoreReplaced
from .shared_map import SharedMap
from .sqlite import file_identity


class SnapshotSource:
    """Keeps a Snapshot in memory and brings it up to date from the audit log.

    The snapshot's maps are SharedMaps: a refresh replaces only the changed customers'
    entries and shares the rest with the previous snapshot, so a change costs the same on the
    event loop with 10 or 100 000 customers. A full load builds everything off the loop."""

    def __init__(self, store: StoreBackend, config: PolicyConfig) -> None:
        self.store = store
        self.config = config
        self.snapshot = Snapshot(config, SharedMap(), SharedMap(), SharedMap())
        self._high_water = 0
        self._anchor: str | None = None  # the `at` of audit row _high_water
        self._endpoints_of: dict[str, tuple[str, ...]] = {}  # customer -> endpoint names
        self._identity: tuple[int, int] | None = None  # the file loaded from

    async def load(self) -> Snapshot:
        """Everything, from the store's current database."""
        self._identity = file_identity(self.store.path)
        high_water = await self.store.audit_high_water()
        anchor = await self.store.audit_at(high_water)
        customers = await self.store.load_customers()
        endpoints = await self.store.load_endpoints()
        self.snapshot, self._endpoints_of = await asyncio.to_thread(
            _build, self.config, customers, endpoints)
        self._high_water, self._anchor = high_water, anchor
        return self.snapshot

    async def refresh(self) -> bool:
        """Reload customers changed since the last look. True if the snapshot changed.

        Raises StoreReplaced if the file at the path is another one (a new inode: the open
        connection would go on reading the old, unlinked file) or if the audit log no longer
        holds the row the snapshot was built up to (overwritten in place, rolled back): the
        caller reopens and reloads it whole."""
        if file_identity(self.store.path) != self._identity:
            raise StoreReplaced(f"database file {self.store.path} was replaced or removed")
        tail = await self.store.audit_tail(self._high_water)
        if tail.since_at != self._anchor:
            raise StoreReplaced(f"database {self.store.path} was replaced or rolled back: "
                                f"audit row {self._high_water} is gone or different")
        if tail.high_water == self._high_water:
            return False
        changed, high_water, anchor = tail.changed, tail.high_water, tail.high_water_at
        fresh = await self.store.load_customers(changed)
        fresh_endpoints = await self.store.load_endpoints(changed)
        old = self.snapshot
        gone_numbers = [number for cid in changed if (customer := old.customers.get(cid))
                        for number in customer.numbers if old.number_owners.get(number) == cid]
        gone_endpoints = [name for cid in changed for name in self._endpoints_of.get(cid, ())
                          if (e := old.endpoints.get(name)) and e.customer_id == cid]
        owners = {number: cid for cid, customer in fresh.items() for number in customer.numbers}
        self.snapshot = Snapshot(
            self.config,
            _updated(old.customers, fresh, changed),
            _updated(old.endpoints, {e.name: e for e in fresh_endpoints}, gone_endpoints),
            _updated(old.number_owners, owners, gone_numbers))
        for cid in changed:
            self._endpoints_of.pop(cid, None)
        self._endpoints_of.update(_endpoint_index(fresh_endpoints))
        self._high_water, self._anchor = high_water, anchor
        return True

    @property
    def high_water(self) -> int:
        """The last audit row the snapshot reflects."""
        return self._high_water

    def set_config(self, config: PolicyConfig) -> None:
        self.config = config
        self.snapshot = Snapshot(config, self.snapshot.customers, self.snapshot.endpoints,
                                 self.snapshot.number_owners)


def _updated(old: Mapping[str, Any], put: Mapping[str, Any], remove: Iterable[str]
             ) -> SharedMap[str, Any]:
    if not isinstance(old, SharedMap):  # a snapshot built elsewhere: converted once
        old = SharedMap(old)
    return old.updated(put, remove)


def _endpoint_index(endpoints: Iterable[Endpoint]) -> dict[str, tuple[str, ...]]:
    names: dict[str, list[str]] = defaultdict(list)
    for endpoint in endpoints:
        names[endpoint.customer_id].append(endpoint.name)
    return {cid: tuple(n) for cid, n in names.items()}


def _build(config: PolicyConfig, customers: dict[str, Customer], endpoints: list[Endpoint]
           ) -> tuple[Snapshot, dict[str, tuple[str, ...]]]:
    """The snapshot and its customer -> endpoint names index (O(customers): off the loop)."""
    owners = {n: c.id for c in customers.values() for n in c.numbers}
    snapshot = Snapshot(config, SharedMap(customers), SharedMap((e.name, e) for e in endpoints),
                        SharedMap(owners))
    return snapshot, _endpoint_index(endpoints)
