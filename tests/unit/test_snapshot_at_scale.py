"""The daemon's snapshot refresh at 100 000 customers: a CLI change must not block the event
loop (every live call's decision waits while it is blocked). Issue 10: 80-107 ms per change
before; the bound is < 10 ms, asserted here generously (the machine is shared)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from callpolicy.policy import build_policy_config
from callpolicy.store import Actor, SnapshotSource, Store
from callpolicy.store.shared_map import SHARDS, SharedMap

CUSTOMERS = 100_000
CHANGES = 20
CONFIG = build_policy_config()


def build_database(path: Path, customers: int) -> None:
    """`customers` customers with two numbers and an endpoint each, written directly (the
    import path is not under test here, and this takes ~2 s instead of minutes)."""
    now = "2026-01-01T00:00:00.000+00:00"
    ids = [f"c{i:06d}" for i in range(customers)]
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO customers VALUES (?, ?, 'active', ?, 'Straat', '1', '9000', 'Gent',"
            " 'BE', ?, ?)",
            ((cid, cid, f"+329{i:07d}", now, now) for i, cid in enumerate(ids)))
        db.executemany("INSERT INTO numbers VALUES (?, ?)",
                       ((f"+329{i:07d}", cid) for i, cid in enumerate(ids)))
        db.executemany("INSERT INTO numbers VALUES (?, ?)",
                       ((f"+322{i:07d}", cid) for i, cid in enumerate(ids)))
        db.executemany("INSERT INTO endpoints VALUES (?, ?, NULL)",
                       ((f"{cid}-101", cid) for cid in ids))
        db.executemany("INSERT INTO site_networks VALUES (?, '192.0.2.0/24')",
                       ((cid,) for cid in ids))
        db.execute("INSERT INTO audit (at, actor, action) VALUES (?, 'test', 'build')", (now,))


async def _probe_lag(stop: asyncio.Event, worst: list[float]) -> None:
    """The event loop's worst delay: how late a 1 ms sleep wakes up."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.001)
        worst[0] = max(worst[0], time.perf_counter() - before - 0.001)


async def test_a_change_at_100k_customers_does_not_block_the_event_loop(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    await (await Store.open(path, create=True)).close()
    build_database(path, CUSTOMERS)
    store = await Store.open(path)
    writer = await Store.open(path)
    try:
        source = SnapshotSource(store, CONFIG)
        await source.load()
        assert len(source.snapshot.customers) == CUSTOMERS
        worst = [0.0]
        blocks = []
        for change in range(CHANGES):
            customer = f"c{change * 997:06d}"
            await writer.suspend(customer, Actor("t", "T-1"))
            stop = asyncio.Event()
            worst[0] = 0.0
            probe = asyncio.create_task(_probe_lag(stop, worst))
            await asyncio.sleep(0.005)  # the probe is running
            old = source.snapshot
            assert await source.refresh()
            stop.set()
            await probe
            blocks.append(worst[0])
            assert source.snapshot.customers[customer].suspended
            assert source.snapshot.endpoints[f"{customer}-101"].customer_id == customer
            assert source.snapshot.number_owners[f"+322{change * 997:07d}"] == customer
            # structural: the new snapshot shares all but the changed entries' shards
            new = source.snapshot
            for name in ("customers", "endpoints", "number_owners"):
                assert getattr(new, name).shared_shards(getattr(old, name)) >= SHARDS - 2
        blocks.sort()
        figures = (f"event-loop block per refresh at {CUSTOMERS} customers: "
                   f"median {blocks[len(blocks) // 2] * 1000:.1f} ms, "
                   f"max {blocks[-1] * 1000:.1f} ms")
        print(figures)
        # The median is the claim (before: ~100 ms); a single worst round only has to stay
        # under the old median, because a loaded machine can pause any thread for tens of ms.
        assert blocks[len(blocks) // 2] < 0.010 and blocks[-1] < 0.100, figures
    finally:
        await writer.close()
        await store.close()


@given(st.dictionaries(st.text(max_size=3), st.integers()),
       st.dictionaries(st.text(max_size=3), st.integers()),
       st.lists(st.text(max_size=3)))
def test_shared_map_update_is_a_dict_update_and_leaves_the_original(
        start: dict[str, int], put: dict[str, int], remove: list[str]) -> None:
    original = SharedMap(start)
    updated = original.updated(put, remove)
    expected = {k: v for k, v in start.items() if k not in remove} | put
    assert dict(updated) == expected and len(updated) == len(expected)
    assert dict(original) == start and len(original) == len(start)
    assert all(updated.get(k) == v and k in updated for k, v in expected.items())
    assert updated.get("absent-key") is None and "absent-key" not in updated
