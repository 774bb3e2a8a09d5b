"""The store: migrations, durability of changes, audit, snapshot refresh across processes."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from backends import query

from callpolicy.policy import (
    Action,
    CallRequest,
    Engine,
    Reason,
    UnblockKind,
    build_policy_config,
)
from callpolicy.service.config import load_zones
from callpolicy.store import (
    SCHEMA_VERSION,
    Actor,
    SnapshotSource,
    Store,
    StoreError,
    open_store,
    parse_iso,
    suspension_due,
)
from callpolicy.store.import_file import read_import_file
from callpolicy.store.postgres import PostgresStore

CONFIG = build_policy_config()
ALICE = Actor("alice", "T-1", "test")


@pytest.fixture
def zones(repo: Path):
    return load_zones(repo / "agi" / "callpolicy" / "data" / "telephone-zones.toml")


@pytest.fixture
async def store(db_location: str, demo_customers: Path, zones) -> Store:
    plan = read_import_file(demo_customers, zones)
    assert not plan.errors
    store = await open_store(db_location, create=True)
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


async def test_schema_is_versioned_wal_and_foreign_keys(tmp_path: Path) -> None:
    await (await Store.open(tmp_path / "cp.db", create=True)).close()
    db = sqlite3.connect(tmp_path / "cp.db")
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
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await query(store.path, "UPDATE audit SET actor = 'mallory'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await query(store.path, "DELETE FROM audit")


async def test_postgresql_schema_is_versioned_with_foreign_keys(pg_url: str) -> None:
    async with await open_store(pg_url, create=True) as store:
        assert isinstance(store, PostgresStore)
    assert await query(pg_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    with pytest.raises(sqlite3.IntegrityError):
        await query(pg_url, "INSERT INTO numbers (number, customer_id) VALUES ('+3220', 'ghost')")


async def test_postgresql_empty_newer_or_missing_database_is_a_clear_error(
        pg_server, pg_url: str) -> None:
    with pytest.raises(StoreError, match="has no callpolicy schema"):
        await open_store(pg_url)
    with pytest.raises(StoreError, match="has no callpolicy schema"):
        await open_store(pg_url, create=True, readonly=True)
    await (await open_store(pg_url, create=True)).close()
    await query(pg_url, "UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this callpolicy"):
        await open_store(pg_url)
    with pytest.raises(StoreError, match=r"cannot open database .*nope.* does not exist"):
        await open_store(pg_server.url("nope"))
    with pytest.raises(StoreError, match="cannot open database"):
        await open_store("postgresql://nobody@127.0.0.1:1/x")


async def test_a_snapshot_refresh_after_a_big_import_asks_for_every_customer_at_once(
        store: Store) -> None:
    """PostgreSQL takes at most 32 767 parameters a statement: IN lists go as one array."""
    ids = ["acme", *(f"nobody-{n}" for n in range(40_000))]
    assert list(await store.load_customers(ids)) == ["acme"]
    assert [e.name for e in await store.load_endpoints(ids)] == ["acme-101", "acme-102"]


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

    other = await open_store(store.path)
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
    # a fresh reader sees it: it was committed
    assert await query(store.path, "SELECT status FROM customers WHERE id='acme'") == [
        ("suspended",)]


# -- scheduled suspensions and payment reminders (art. 5.7) ------------------------------------

BRUSSELS = ZoneInfo("Europe/Brussels")


def actions(entries: list[dict]) -> list[str]:
    return [e["action"] for e in entries]


@pytest.mark.parametrize(
    ("sent", "due_utc"),
    [(date(2026, 3, 14), "2026-03-28T23:00:00+00:00"),  # due 29 March: DST starts at 02:00
     (date(2026, 3, 15), "2026-03-29T22:00:00+00:00"),  # due 30 March: summer time, +02:00
     (date(2026, 10, 10), "2026-10-24T22:00:00+00:00"),  # due 25 October: DST ends at 03:00
     (date(2026, 10, 11), "2026-10-25T23:00:00+00:00"),
     (date(2026, 2, 14), "2026-02-28T23:00:00+00:00")],  # 15 calendar days over a month end
)
def test_suspension_is_due_at_brussels_midnight_15_days_after_the_reminder(
        sent: date, due_utc: str) -> None:
    due = suspension_due(sent)
    assert due.astimezone(UTC).isoformat() == due_utc
    local = due.astimezone(BRUSSELS)
    assert (local.date() - sent).days == 15 and (local.hour, local.minute) == (0, 0)


async def test_first_reminder_schedules_later_ones_do_not_move_it(store: Store) -> None:
    today = datetime.now(BRUSSELS).date()
    first = await store.record_reminder("acme", today - timedelta(days=2), ALICE)
    assert first.first and first.created and first.schedule is not None
    due = suspension_due(today - timedelta(days=2))
    assert parse_iso(first.schedule["due_at"]) == due
    second = await store.record_reminder("acme", today, Actor("bob", "T-2"))
    assert not second.first and not second.created
    assert second.schedule is not None and second.schedule["id"] == first.schedule["id"]
    assert parse_iso((await store.scheduled_suspension("acme"))["due_at"]) == due
    assert [r["sent_on"] for r in await store.open_reminders("acme")] == [
        (today - timedelta(days=2)).isoformat(), today.isoformat()]
    assert actions(await store.audit_log("acme"))[-3:] == [
        "customer.remind", "customer.suspend_scheduled", "customer.remind"]
    assert (await store.customer("acme"))["status"] == "active"  # not yet due


async def test_reminder_in_the_future_is_refused(store: Store) -> None:
    tomorrow = datetime.now(BRUSSELS).date() + timedelta(days=1)
    with pytest.raises(StoreError, match="in the future"):
        await store.record_reminder("acme", tomorrow, ALICE)
    assert await store.open_reminders("acme") == []


async def test_snapshot_sees_a_schedule_and_decides_by_it_before_anything_is_applied(
        store: Store) -> None:
    source = SnapshotSource(store, CONFIG)
    await source.load()
    at = datetime.now(UTC) + timedelta(hours=2)
    other = await open_store(store.path)  # the CLI: another connection
    try:
        await other.schedule_suspension("acme", at, Actor("alice", "T-AT"))
    finally:
        await other.close()
    assert await source.refresh()
    customer = source.snapshot.customers["acme"]
    assert customer.suspend_at == at.replace(microsecond=at.microsecond // 1000 * 1000)
    assert customer.suspend_at_ticket == "T-AT" and not customer.suspended
    assert decide(source.snapshot, "092101299", now=at - timedelta(seconds=1)).allowed
    late = decide(source.snapshot, "092101299", now=at + timedelta(seconds=1))
    assert late.reason is Reason.SUSPENDED and "T-AT" in late.rule
    assert decide(source.snapshot, "112", now=at + timedelta(seconds=1)).allowed


async def test_schedule_is_refused_in_the_past_twice_or_when_suspended(store: Store) -> None:
    now = datetime.now(UTC)
    with pytest.raises(StoreError, match="not in the future"):
        await store.schedule_suspension("acme", now - timedelta(seconds=1), ALICE)
    with pytest.raises(StoreError, match="unknown customer 'ghost'"):
        await store.schedule_suspension("ghost", now + timedelta(hours=1), ALICE)
    with pytest.raises(StoreError, match="already suspended"):
        await store.schedule_suspension("bakkerij", now + timedelta(hours=1), ALICE)
    await store.schedule_suspension("acme", now + timedelta(hours=1), ALICE)
    with pytest.raises(StoreError, match="already has a suspension scheduled"):
        await store.schedule_suspension("acme", now + timedelta(hours=2), ALICE)


async def test_reactivate_cancels_a_schedule_and_errors_only_with_nothing_to_do(
        store: Store) -> None:
    await store.schedule_suspension("acme", datetime.now(UTC) + timedelta(hours=1), ALICE)
    done = await store.reactivate("acme", Actor("bob", "T-OFF"))
    assert not done.reactivated and done.cancelled is not None
    assert await store.scheduled_suspension("acme") is None
    assert actions(await store.audit_log("acme"))[-1] == "customer.schedule_cancelled"
    assert (await store.load_customers(["acme"]))["acme"].suspend_at is None
    with pytest.raises(StoreError, match="not suspended and has no scheduled suspension"):
        await store.reactivate("acme", ALICE)


async def test_paid_cancels_the_schedule_and_closes_the_episode(store: Store) -> None:
    today = datetime.now(BRUSSELS).date()
    await store.record_reminder("acme", today, ALICE)
    done = await store.record_payment("acme", Actor("bob", "PAY-1"))
    assert done.cancelled is not None and not done.reactivated and done.closed_reminders == 1
    assert await store.scheduled_suspension("acme") is None
    assert await store.open_reminders("acme") == []
    assert actions(await store.audit_log("acme"))[-2:] == [
        "customer.schedule_cancelled", "customer.paid"]
    # A new episode: the next reminder is a first one again.
    assert (await store.record_reminder("acme", today, ALICE)).created
    await store.record_payment("acme", ALICE)
    with pytest.raises(StoreError, match="nothing to settle"):
        await store.record_payment("acme", ALICE)


async def test_reminder_long_ago_is_due_at_once_and_paid_reactivates(store: Store) -> None:
    source = SnapshotSource(store, CONFIG)
    await source.load()
    result = await store.record_reminder("acme", date(2026, 1, 1), ALICE)
    assert result.created
    await source.refresh()
    assert decide(source.snapshot, "092101299").reason is Reason.SUSPENDED  # before applying
    assert await store.apply_due_suspensions(datetime.now(UTC)) == ["acme"]
    assert await store.apply_due_suspensions(datetime.now(UTC)) == []  # idempotent
    suspension = await store.suspension("acme")
    assert suspension is not None and suspension["ticket"] == "T-1"
    assert suspension["suspended_by"] == "alice"
    # in force since the schedule was made (its due time was already past then)
    assert parse_iso(suspension["suspended_at"]) >= parse_iso(result.schedule["created_at"])
    later = await store.record_reminder("acme", date(2026, 1, 20), ALICE)
    assert later.suspended and not later.created
    done = await store.record_payment("acme", Actor("bob", "PAY-2"))
    assert done.reactivated and done.cancelled is None and done.closed_reminders == 2
    await source.refresh()
    assert decide(source.snapshot, "092101299").allowed
    assert (await store.customer("acme"))["status"] == "active"
    entries = await store.audit_log("acme")
    assert [(e["action"], e["actor"], e["ticket"]) for e in entries[-6:]] == [
        ("customer.remind", "alice", "T-1"), ("customer.suspend_scheduled", "alice", "T-1"),
        ("customer.suspend", "callpolicy-scheduler", "T-1"),
        ("customer.remind", "alice", "T-1"),
        ("customer.paid", "bob", "PAY-2"), ("customer.reactivate", "bob", "PAY-2")]
    assert "2026-01-01" in entries[-4]["reason"]


async def test_apply_due_waits_for_the_time_and_two_processes_apply_it_once(
        store: Store) -> None:
    at = datetime.now(UTC) + timedelta(seconds=0.3)
    await store.schedule_suspension("acme", at, Actor("alice", "T-AT", "unpaid"))
    assert await store.apply_due_suspensions(at - timedelta(seconds=0.1)) == []
    assert (await store.customer("acme"))["status"] == "active"
    await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 0.05)
    other = await open_store(store.path)
    try:
        now = datetime.now(UTC)
        results = await asyncio.gather(store.apply_due_suspensions(now),
                                       other.apply_due_suspensions(now))
    finally:
        await other.close()
    assert sorted(results) == [[], ["acme"]]
    assert (await store.customer("acme"))["status"] == "suspended"
    suspend_rows = [e for e in await store.audit_log("acme") if e["action"] == "customer.suspend"]
    assert len(suspend_rows) == 1 and suspend_rows[0]["actor"] == "callpolicy-scheduler"
    suspension = await store.suspension("acme")
    assert suspension["reason"] == "unpaid" and suspension["ticket"] == "T-AT"
    assert await store.scheduled_suspension("acme") is None
    assert (await store.load_customers(["acme"]))["acme"].suspended


async def test_immediate_suspend_replaces_a_schedule(store: Store) -> None:
    await store.schedule_suspension("acme", datetime.now(UTC) + timedelta(hours=1), ALICE)
    await store.suspend("acme", Actor("bob", "T-NOW"))
    assert await store.scheduled_suspension("acme") is None
    assert actions(await store.audit_log("acme"))[-2:] == [
        "customer.schedule_cancelled", "customer.suspend"]
    assert await store.apply_due_suspensions(datetime.now(UTC) + timedelta(hours=2)) == []


async def test_customers_list_shows_the_pending_schedule(store: Store) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    await store.schedule_suspension("acme", at, ALICE)
    rows = {r["id"]: r for r in await store.customers()}
    assert parse_iso(rows["acme"]["scheduled"]) == at.replace(
        microsecond=at.microsecond // 1000 * 1000)
    assert rows["bakkerij"]["scheduled"] is None
