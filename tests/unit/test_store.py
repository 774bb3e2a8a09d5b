"""The store: migrations, durability of changes, audit, snapshot refresh across processes."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callpolicy.config import load_zones
from callpolicy.importer import read_import_file
from callpolicy.policy import (
    Action,
    CallRequest,
    Engine,
    Reason,
    UnblockKind,
    build_policy_config,
)
from callpolicy.store import SCHEMA_VERSION, Actor, SnapshotSource, Store, StoreError

CONFIG = build_policy_config()
ALICE = Actor("alice", "T-1", "test")


@pytest.fixture
def zones(repo: Path):
    return load_zones(repo / "agi" / "callpolicy" / "data" / "telephone-zones.toml")


@pytest.fixture
async def store(tmp_path: Path, demo_customers: Path, zones) -> Store:
    plan = read_import_file(demo_customers, zones)
    assert not plan.errors
    store = await Store.open(tmp_path / "cp.db", create=True)
    await store.import_customers(plan.records, ALICE)
    yield store
    await store.close()


def decide(snapshot, dialled: str, customer: str = "acme", now: datetime | None = None):
    return Engine(snapshot).decide(
        CallRequest(dialled, now or datetime.now(UTC), customer_id=customer))


async def test_missing_database_is_an_error_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nope.db"
    with pytest.raises(StoreError, match="does not exist"):
        await Store.open(path)
    assert not path.exists()


async def test_schema_is_versioned_wal_and_foreign_keys(store: Store) -> None:
    db = sqlite3.connect(store.path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("INSERT INTO numbers (number, customer_id) VALUES ('+3220000000', 'ghost')")


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    sqlite3.connect(path).execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer than this callpolicy"):
        await Store.open(path)


async def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot use database"):
        await Store.open(path)


async def test_audit_log_is_append_only(store: Store) -> None:
    db = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("UPDATE audit SET actor = 'mallory'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit")


async def test_import_is_audited_with_after_image(store: Store) -> None:
    entries = await store.audit_log("acme")
    assert entries[0]["action"] == "customer.create"
    assert entries[0]["before"] is None
    assert entries[0]["after"]["numbers"] == [
        "+3292101234", "+3292101235", "+3292101236", "+3292101237", "+3292101238"]


async def test_reimport_unchanged_writes_no_audit(store: Store, demo_customers: Path,
                                                  zones) -> None:
    before = await store.audit_high_water()
    result = await store.import_customers(read_import_file(demo_customers, zones).records,
                                          ALICE)
    assert result.unchanged == ["acme", "bakkerij"]
    assert await store.audit_high_water() == before


async def test_reimport_never_lifts_a_suspension(store: Store, demo_customers: Path,
                                                 zones, tmp_path: Path) -> None:
    text = demo_customers.read_text().replace('status = "suspended"', 'status = "active"')
    changed = tmp_path / "reactivate.toml"
    changed.write_text(text)
    result = await store.import_customers(read_import_file(changed, zones).records, ALICE)
    assert (await store.customer("bakkerij"))["status"] == "suspended"
    assert any("status kept" in w for w in result.warnings)


async def test_number_owned_by_another_customer_aborts_whole_import(
        store: Store, tmp_path: Path, zones) -> None:
    path = tmp_path / "steal.toml"
    path.write_text("""
[[customer]]
id = "newco"
name = "New Co"
main_number = "+3292101299"
numbers = ["+3292101299"]
[customer.install_address]
street = "X"
house_number = "1"
postcode = "9000"
municipality = "Gent"
country = "BE"

[[customer]]
id = "thief"
name = "Thief"
main_number = "+3292101234"
numbers = ["+3292101234"]
[customer.install_address]
street = "X"
house_number = "1"
postcode = "9000"
municipality = "Gent"
country = "BE"
""")
    plan = read_import_file(path, zones)
    assert not plan.errors
    with pytest.raises(StoreError, match="belongs to customer 'acme'"):
        await store.import_customers(plan.records, ALICE)
    assert await store.customer("newco") is None  # rolled back, nothing half-written


async def test_suspend_and_reactivate(store: Store) -> None:
    source = SnapshotSource(store, CONFIG)
    await source.load()
    assert decide(source.snapshot, "092101299").allowed
    await store.suspend("acme", Actor("alice", "T-9", "unpaid"))
    await source.refresh()
    decision = decide(source.snapshot, "092101299")
    assert decision.reason is Reason.SUSPENDED and "T-9" in decision.rule
    assert decide(source.snapshot, "112").allowed
    with pytest.raises(StoreError, match="already suspended"):
        await store.suspend("acme", ALICE)
    await store.reactivate("acme", Actor("bob", "T-10"))
    await source.refresh()
    assert decide(source.snapshot, "092101299").allowed
    actions = [e["action"] for e in await store.audit_log("acme")]
    assert actions[-2:] == ["customer.suspend", "customer.reactivate"]


async def test_unknown_customer_changes_are_errors(store: Store) -> None:
    for change in (store.suspend("ghost", ALICE), store.reactivate("ghost", ALICE),
                   store.add_unblock("ghost", UnblockKind.COUNTRY, "CH", ALICE, None)):
        with pytest.raises(StoreError, match="unknown customer 'ghost'"):
            await change


async def test_unblock_for_one_second_expires_without_anyone_acting(store: Store) -> None:
    source = SnapshotSource(store, CONFIG)
    await source.load()
    now = datetime.now(UTC)
    await store.add_unblock("acme", UnblockKind.PREFIX, "+32905", ALICE,
                            now + timedelta(seconds=1))
    await source.refresh()
    assert decide(source.snapshot, "0905123456").reason is Reason.UNBLOCKED
    await asyncio.sleep(1.1)
    assert not await source.refresh()  # nothing changed in the store...
    blocked = decide(source.snapshot, "0905123456")  # ...and yet the unblock is over
    assert blocked.action is Action.BLOCK and blocked.reason is Reason.PREMIUM
    states = {u["id"]: u["state"] for u in await store.unblocks("acme", include_inactive=True)}
    assert list(states.values()) == ["expired"]


async def test_reblock_revokes_and_errors_when_nothing_to_revoke(store: Store) -> None:
    await store.add_unblock("acme", UnblockKind.COUNTRY, "CH", ALICE, None)
    ids = await store.reblock("acme", UnblockKind.COUNTRY, "CH", Actor("bob", "T-2"))
    assert len(ids) == 1
    with pytest.raises(StoreError, match="no active unblock"):
        await store.reblock("acme", UnblockKind.COUNTRY, "CH", Actor("bob", "T-2"))
    assert (await store.unblocks("acme", include_inactive=True))[0]["state"] == "reblocked"


async def test_another_process_change_is_seen_within_a_second(store: Store) -> None:
    """The CLI runs in another process: simulate it with a second connection."""
    source = SnapshotSource(store, CONFIG)
    await source.load()
    assert decide(source.snapshot, "+41441234567").reason is Reason.NON_EU

    async def poll() -> None:
        while not await source.refresh():
            await asyncio.sleep(0.1)

    other = await Store.open(store.path)
    try:
        await other.add_unblock("acme", UnblockKind.COUNTRY, "CH", ALICE, None)
    finally:
        await other.close()
    await asyncio.wait_for(poll(), timeout=1.0)
    assert decide(source.snapshot, "+41441234567").reason is Reason.UNBLOCKED
    # Untouched customers keep their state, endpoints still resolve.
    assert source.snapshot.customers["bakkerij"].suspended
    assert source.snapshot.endpoints["acme-101"].customer_id == "acme"


async def test_committed_change_survives_a_new_connection(store: Store) -> None:
    await store.suspend("acme", ALICE)
    db = sqlite3.connect(store.path)  # a fresh reader sees it: it was committed
    assert db.execute("SELECT status FROM customers WHERE id='acme'").fetchone()[0] == \
        "suspended"
