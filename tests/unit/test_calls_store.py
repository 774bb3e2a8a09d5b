"""Migration 2: fraud limits and call records in the store, and the `calls` CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from backends import query, script
from cli_runner import one_error_line, run

from callpolicy.live.records import CSV_COLUMNS, CallRecord
from callpolicy.policy import (
    CallRequest,
    Category,
    Customer,
    Engine,
    FraudLimits,
    Reason,
    Snapshot,
    build_policy_config,
    free_call,
)
from callpolicy.service.config import ConfigError, load_settings
from callpolicy.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Actor,
    SnapshotSource,
    Store,
    StoreError,
    open_store,
)
from callpolicy.store.import_file import read_import_file
from callpolicy.store.postgres.schema import MIGRATIONS as PG_MIGRATIONS
from callpolicy.store.schema import statements as _statements

REPO = Path(__file__).resolve().parents[2]
CONFIG = build_policy_config()
ALICE = Actor("alice", "T-1", "test")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture
async def store(db_location: str, demo_customers: Path, repo: Path) -> Store:
    from callpolicy.service.config import load_zones

    zones = load_zones(repo / "agi" / "callpolicy" / "data" / "telephone-zones.toml")
    plan = read_import_file(demo_customers, zones)
    assert not plan.errors
    store = await open_store(db_location, create=True)
    await store.import_customers(plan.records, ALICE)
    yield store
    await store.close()


def decided(uniqueid: str, customer: str = "acme", at: datetime = T0,
            dialled: str = "092101299") -> CallRecord:
    decision = Engine(_snapshot_for_records()).decide(
        CallRequest(dialled, at, customer_id=customer))
    return CallRecord.from_decision(uniqueid, decision, started_at=at, linkedid=uniqueid,
                                    endpoint="acme-101", node="pbx-a")


def _snapshot_for_records() -> Snapshot:
    acme = Customer(id="acme", name="ACME", suspended=False, main_number="+3292101234",
                    numbers=frozenset({"+3292101234"}))
    return Snapshot(CONFIG, {"acme": acme}, {}, {"+3292101234": "acme"})


# -- records --------------------------------------------------------------------------------

def test_billable_seconds_rounds_up_from_answer_to_hang_up() -> None:
    call = CallRecord("1", answered_at=T0, ended_at=T0 + timedelta(seconds=61, milliseconds=1))
    assert call.billable_seconds == 62
    assert CallRecord("1", answered_at=T0, ended_at=T0 + timedelta(seconds=60)
                      ).billable_seconds == 60
    assert CallRecord("1", answered_at=T0, ended_at=T0 + timedelta(microseconds=1)
                      ).billable_seconds == 1
    assert CallRecord("1", answered_at=T0, ended_at=T0).billable_seconds == 0
    assert CallRecord("1", answered_at=T0).billable_seconds == 0  # still up
    assert CallRecord("1", started_at=T0, ended_at=T0 + timedelta(seconds=9)
                      ).billable_seconds == 0  # never answered (refused, no answer)
    assert CallRecord("1", answered_at=T0, ended_at=T0 - timedelta(seconds=1)
                      ).billable_seconds == 0  # clock went back: never negative


def test_record_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CallRecord("1", started_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="uniqueid"):
        CallRecord("")
    with pytest.raises(ValueError, match="hangup_cause"):
        CallRecord("1", hangup_cause="16")  # type: ignore[arg-type]
    record = CallRecord("1", category=Category.PREMIUM, reason=Reason.PREMIUM)
    assert type(record.category) is str and record.category == "premium"


def test_from_decision_and_merge() -> None:
    first = decided("1700000000.1")
    assert (first.customer_id, first.action, first.reason, first.category, first.source) == (
        "acme", "allow", "allowed", "national", "daemon")
    assert first.destination == "+3292101299" and first.dialled == "092101299"
    answered = first.merged(CallRecord("1700000000.1", answered_at=T0 + timedelta(seconds=3)))
    assert answered.reason == "allowed" and answered.answered_at is not None
    with pytest.raises(ValueError):
        first.merged(CallRecord("other"))


# -- free calls (BIPT: emergency, must-reach and 0800 numbers are never billed) ------------

@pytest.mark.parametrize(("dialled", "category", "free"), [
    ("112", "emergency", True),
    ("1813", "must_reach", True),
    ("0800 32 123", "must_reach", True),
    ("0800 12 345", "national", True),  # any Belgian freephone number
    ("+32 800 12 345", "national", True),
    ("0032 800 12 345", "national", True),
    ("09 210 12 99", "national", False),
    ("080 12 34 56", "national", False),  # zone 080 (Stavelot), not 0800
    ("0905123456", "premium", False),
])
def test_free_flag_of_a_record(dialled: str, category: str, free: bool) -> None:
    record = decided("f", dialled=dialled).merged(CallRecord(
        "f", answered_at=T0 + timedelta(seconds=1), ended_at=T0 + timedelta(seconds=31.5)))
    assert (record.category, record.free) == (category, free)
    assert record.duration_seconds == 31  # the real duration, kept either way
    assert record.billable_seconds == (0 if free else 31)
    assert record.to_dict()["free"] is free
    assert free_call(category, record.destination) is free


def test_free_call_is_decided_by_category_or_freephone_prefix() -> None:
    assert free_call(Category.EMERGENCY, "112") and free_call("must_reach", "+3270245245")
    assert free_call(None, "+3280012345") and not free_call(None, None)
    assert not free_call("national", "+3292101299") and not free_call(None, "0800")


async def test_free_calls_are_stored_with_their_duration_and_no_billable_seconds(
        store: Store) -> None:
    answer, end = T0 + timedelta(seconds=2), T0 + timedelta(seconds=42.2)
    await store.record_calls([
        decided("sos", dialled="112"), decided("green", dialled="0800 12 345"),
        decided("paid", dialled="092101299"),
        *(CallRecord(u, answered_at=answer) for u in ("sos", "green", "paid")),
        *(CallRecord(u, ended_at=end, hangup_cause=16) for u in ("sos", "green", "paid")),
    ])
    stored = await query(
        store.path,
        "SELECT uniqueid, free, duration_seconds, billable_seconds FROM calls ORDER BY uniqueid")
    assert stored == [("green", 1, 41, 0), ("paid", 0, 41, 41), ("sos", 1, 41, 0)]
    by_id = {c.uniqueid: c for c in await store.calls()}
    assert (by_id["sos"].free, by_id["sos"].billable_seconds) == (True, 0)
    assert (by_id["paid"].free, by_id["paid"].billable_seconds) == (False, 41)


# -- migration ----------------------------------------------------------------------------

async def test_version_1_database_migrates_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    db = sqlite3.connect(path)
    for statement in _statements(MIGRATIONS[0]):
        db.execute(statement)
    db.execute("INSERT INTO customers VALUES ('old', 'Old BV', 'active', '+3292101234', 's',"
               " '1', '9000', 'Gent', 'BE', 'x', 'x')")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    async with await Store.open(path) as store:
        assert SCHEMA_VERSION >= 2  # migrates through every later migration too
        assert (await store.load_customers())["old"].limits == FraudLimits()
        assert (await store.load_customers())["old"].suspend_at is None
        assert await store.limits("old") == FraudLimits()
        assert await store.calls() == []
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert {"fraud_limits", "calls", "calls_by_customer", "calls_by_start"} <= tables
    assert {"payment_reminders", "scheduled_suspensions"} <= tables


async def test_version_2_database_migrates_its_calls_to_free_and_duration(
        tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    for migration in MIGRATIONS[:2]:
        for statement in _statements(migration):
            db.execute(statement)
    rows = [  # uniqueid, category, destination, billable_seconds (as schema 2 billed them)
        ("national", "national", "+3292101299", 61),
        ("sos", "emergency", "112", 30),
        ("helpline", "must_reach", "+3280032123", 12),
        ("green", "national", "+3280012345", 20),
        ("refused", "premium", "+32905123456", 0),
    ]
    db.executemany("INSERT INTO calls (uniqueid, category, destination, billable_seconds,"
                   " started_at) VALUES (?, ?, ?, ?, '2026-03-02T09:00:00.000000+00:00')", rows)
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    async with await Store.open(path) as store:
        assert [c.uniqueid for c in await store.calls()] == sorted(r[0] for r in rows)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    migrated = db.execute("SELECT uniqueid, free, duration_seconds, billable_seconds FROM calls"
                          " ORDER BY uniqueid").fetchall()
    assert migrated == [("green", 1, 20, 0), ("helpline", 1, 12, 0), ("national", 0, 61, 61),
                        ("refused", 0, 0, 0), ("sos", 1, 30, 0)]
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE calls SET free = 2")


async def test_version_2_postgresql_database_migrates_its_calls_and_keeps_them(
        pg_url: str) -> None:
    for migration in PG_MIGRATIONS[:2]:
        await script(pg_url, migration)
    await query(pg_url, "CREATE TABLE schema_version (only_row BOOLEAN PRIMARY KEY DEFAULT TRUE,"
                " version INTEGER NOT NULL)")
    await query(pg_url, "INSERT INTO schema_version (version) VALUES (2)")
    await query(pg_url, "INSERT INTO calls (uniqueid, category, destination, billable_seconds,"
                " started_at) VALUES ('sos', 'emergency', '112', 30, ?),"
                " ('national', 'national', '+3292101299', 61, ?)",
                ("2026-03-02T09:00:00.000000+00:00", "2026-03-02T09:01:00.000000+00:00"))
    with pytest.raises(StoreError, match="older than this callpolicy"):
        await open_store(pg_url, readonly=True)  # a reader upgrades nothing
    async with await open_store(pg_url) as store:
        assert [c.uniqueid for c in await store.calls()] == ["sos", "national"]
    assert await query(pg_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert await query(pg_url, "SELECT uniqueid, free, duration_seconds, billable_seconds"
                       " FROM calls ORDER BY uniqueid") == [("national", 0, 61, 61),
                                                          ("sos", 1, 30, 0)]


# -- fraud limits -------------------------------------------------------------------------

async def test_set_limits_is_audited_and_reaches_the_snapshot(store: Store) -> None:
    source = SnapshotSource(store, CONFIG)
    await source.load()
    assert source.snapshot.customers["acme"].limits == FraudLimits()
    assert await store.set_limits("acme", FraudLimits(max_concurrent=3), ALICE)
    assert await source.refresh()
    assert source.snapshot.customers["acme"].limits == FraudLimits(max_concurrent=3)
    assert source.snapshot.customers["acme"].limits.over(CONFIG.fraud_limits) == FraudLimits(
        3, CONFIG.fraud_limits.max_per_minute, CONFIG.fraud_limits.max_concurrent_risky)
    assert source.snapshot.customers["bakkerij"].limits == FraudLimits()
    entry = (await store.audit_log("acme"))[-1]
    assert (entry["action"], entry["actor"], entry["ticket"]) == ("limits.set", "alice", "T-1")
    assert entry["before"] == {"max_concurrent": None, "max_per_minute": None,
                               "max_concurrent_risky": None}
    assert entry["after"] == {"max_concurrent": 3, "max_per_minute": None,
                              "max_concurrent_risky": None}
    # the same again: nothing written, nothing to reload
    high_water = await store.audit_high_water()
    assert not await store.set_limits("acme", FraudLimits(max_concurrent=3), ALICE)
    assert await store.audit_high_water() == high_water
    # back to all defaults: the row goes
    assert await store.set_limits("acme", FraudLimits(), ALICE)
    assert await store.limits("acme") == FraudLimits()
    assert await query(store.path, "SELECT count(*) FROM fraud_limits") == [(0,)]


async def test_limits_of_unknown_customer_and_bad_values_are_refused(store: Store) -> None:
    with pytest.raises(StoreError, match="unknown customer 'ghost'"):
        await store.limits("ghost")
    with pytest.raises(StoreError, match="unknown customer 'ghost'"):
        await store.set_limits("ghost", FraudLimits(1), ALICE)
    with pytest.raises(StoreError, match="0"):
        await store.set_limits("acme", FraudLimits(-1), ALICE)
    with pytest.raises(StoreError):
        await store.set_limits("acme", FraudLimits(True), ALICE)  # type: ignore[arg-type]
    assert await store.limits("acme") == FraudLimits()


async def test_limits_zero_is_a_value_not_the_default(store: Store) -> None:
    await store.set_limits("acme", FraudLimits(0, 0, 0), ALICE)
    assert await store.limits("acme") == FraudLimits(0, 0, 0)
    assert (await store.load_customers(["acme"]))["acme"].limits == FraudLimits(0, 0, 0)


# -- call records -------------------------------------------------------------------------

async def test_record_calls_upserts_without_erasing_earlier_fields(store: Store) -> None:
    await store.record_calls([decided("a"), decided("b", dialled="0905123456")])
    await store.record_calls([
        CallRecord("a", answered_at=T0 + timedelta(seconds=2)),
        CallRecord("b", ended_at=T0 + timedelta(seconds=1), hangup_cause=21),
    ])
    await store.record_calls([CallRecord("a", ended_at=T0 + timedelta(seconds=62.5),
                                         hangup_cause=16)])
    a, b = await store.calls()
    assert (a.uniqueid, a.customer_id, a.endpoint, a.reason, a.destination) == (
        "a", "acme", "acme-101", "allowed", "+3292101299")
    assert a.started_at == T0 and a.hangup_cause == 16
    assert a.billable_seconds == 61  # 60.5 s answered -> 61
    assert (b.action, b.reason, b.billable_seconds, b.hangup_cause) == ("block", "premium", 0,
                                                                        21)
    stored = await query(store.path,
                         "SELECT uniqueid, billable_seconds FROM calls ORDER BY uniqueid")
    assert stored == [("a", 61), ("b", 0)]
    assert (a.node, b.node) == ("pbx-a", "pbx-a")  # the node that decided (both backends)


async def test_record_calls_batch_is_one_transaction_in_order(store: Store) -> None:
    batch = [decided("x"), CallRecord("x", answered_at=T0 + timedelta(seconds=1)),
             CallRecord("x", ended_at=T0 + timedelta(seconds=11))]
    await store.record_calls(batch)
    (x,) = await store.calls()
    assert (x.reason, x.billable_seconds) == ("allowed", 10)
    # a failing batch writes nothing of itself
    broken = CallRecord("z")
    broken.endpoint = object()  # type: ignore[assignment]  # not storable
    with pytest.raises(sqlite3.Error):
        await store.record_calls([decided("y"), broken])
    assert [c.uniqueid for c in await store.calls()] == ["x"]
    await store.record_calls([])  # nothing to do


async def test_record_calls_of_unknown_customer_and_partial_first_record(store: Store) -> None:
    """A record must never be lost: no foreign key, and a hang-up may come first."""
    await store.record_calls([
        CallRecord("u1", customer_id="ghost", action="block", reason="unknown_customer",
                   started_at=T0),
        CallRecord("u2", ended_at=T0, hangup_cause=16),
    ])
    assert {c.uniqueid for c in await store.calls()} == {"u1", "u2"}


async def test_concurrent_batches_on_one_connection_queue(store: Store) -> None:
    await asyncio.gather(*(store.record_calls([decided(f"c{i}")]) for i in range(20)),
                         store.set_limits("acme", FraudLimits(5), ALICE))
    assert len(await store.calls()) == 20


async def test_calls_filters_limit_and_stream(store: Store) -> None:
    await store.record_calls([decided(f"{i:02}", at=T0 + timedelta(minutes=i))
                              for i in range(10)])
    await store.record_calls([CallRecord("zz", customer_id="bakkerij",
                                         started_at=T0 + timedelta(minutes=5))])
    assert len(await store.calls()) == 11
    assert [c.uniqueid for c in await store.calls("bakkerij")] == ["zz"]
    window = await store.calls("acme", since=T0 + timedelta(minutes=2),
                               until=T0 + timedelta(minutes=5))
    assert [c.uniqueid for c in window] == ["02", "03", "04"]  # since inclusive, until not
    assert [c.uniqueid for c in await store.calls("acme", limit=3)] == ["07", "08", "09"]
    streamed = [c.uniqueid async for c in store.iter_calls("acme", since=T0 + timedelta(
        minutes=8))]
    assert streamed == ["08", "09"]
    # other timezones compare as the same instant
    brussels = T0.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Brussels"))
    assert len(await store.calls("acme", since=brussels)) == 10


async def test_purge_deletes_old_records_and_is_audited(store: Store) -> None:
    now = datetime.now(UTC)
    await store.record_calls([
        decided("old", at=now - timedelta(days=200)),
        decided("new", at=now - timedelta(days=1)),
        CallRecord("nostart-old", ended_at=now - timedelta(days=300)),
    ])
    count = await store.purge_calls(now - timedelta(days=180), ALICE)
    assert count == 2
    assert [c.uniqueid for c in await store.calls()] == ["new"]
    entry = (await store.audit_log())[-1]
    assert (entry["action"], entry["customer_id"], entry["after"]["deleted"]) == (
        "calls.purge", None, 2)
    with pytest.raises(StoreError, match="future"):
        await store.purge_calls(now + timedelta(days=1), ALICE)
    with pytest.raises(StoreError, match="timezone"):
        await store.purge_calls(datetime(2020, 1, 1), ALICE)


async def test_purge_does_not_reload_any_customer(store: Store) -> None:
    source = SnapshotSource(store, CONFIG)
    await source.load()
    high_water = await store.audit_high_water()
    await store.purge_calls(datetime.now(UTC) - timedelta(days=1), ALICE)
    changed, new_high_water = await store.changed_customers(high_water)
    assert changed == set() and new_high_water == high_water + 1
    assert await source.refresh()  # moves past the purge row, reloads no customer
    assert source.snapshot.customers["acme"].name == "ACME BV"


async def test_audit_tail_reads_the_anchor_the_changes_and_the_new_mark_at_once(
        store: Store) -> None:
    """The daemon's refresh (4 times a second) in one query: the row it stands on, the
    customers changed after it, the new high-water mark and its row's time."""
    high_water = await store.audit_high_water()
    at = await store.audit_at(high_water)
    assert at is not None
    quiet = await store.audit_tail(high_water)
    assert (quiet.since_at, quiet.changed, quiet.high_water, quiet.high_water_at) == (
        at, frozenset(), high_water, at)
    await store.suspend("acme", ALICE)
    await store.purge_calls(datetime.now(UTC) - timedelta(days=1), ALICE)
    moved = await store.audit_tail(high_water)
    assert moved.since_at == at and moved.changed == {"acme"}
    assert moved.high_water == high_water + 2
    assert moved.high_water_at == await store.audit_at(high_water + 2)
    assert (await store.changed_customers(high_water)) == ({"acme"}, high_water + 2)
    # row 0 does not exist: everything after it, no anchor
    whole = await store.audit_tail(0)
    assert whole.since_at is None and whole.high_water == high_water + 2
    assert "acme" in whole.changed
    # a row that is not there (rolled back, restored backup): no anchor
    assert (await store.audit_tail(high_water + 5)).since_at is None


# -- config -------------------------------------------------------------------------------

def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def test_calls_retention_config(tmp_path: Path) -> None:
    assert load_settings(str(REPO / "config" / "callpolicy.toml")).calls_retention_days == 180
    assert load_settings(write_config(tmp_path, "")).calls_retention_days == 180
    assert load_settings(write_config(tmp_path, "[calls]\nretention_days = 30\n")
                         ).calls_retention_days == 30
    for bad, text in (("retention_days = 0", "at least 1"), ("retention_days = '9'", "int"),
                      ("retain = 9", "unknown key calls.retain")):
        with pytest.raises(ConfigError, match=text):
            load_settings(write_config(tmp_path, f"[calls]\n{bad}\n"))


# -- the calls CLI ------------------------------------------------------------------------





@pytest.fixture
async def recorded(store: Store) -> Path:
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(hours=2)
    await store.record_calls([
        decided("1.1", at=start),
        CallRecord("1.1", answered_at=start + timedelta(seconds=5),
                   ended_at=start + timedelta(seconds=65, milliseconds=200), hangup_cause=16),
        decided("1.2", at=start + timedelta(minutes=1), dialled="0905123456"),
        CallRecord("1.3", customer_id="bakkerij", dialled="=HYPERLINK(\"x\")\x1b[31m",
                   action="block", reason="suspended", started_at=start + timedelta(minutes=2)),
        decided("1.4", at=now - timedelta(days=200)),
    ])
    return store.path


async def test_calls_cli_lists_json_and_csv(recorded: Path) -> None:
    result = run("calls", "--json", db=recorded)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["uniqueid"] for r in rows] == ["1.4", "1.1", "1.2", "1.3"]
    first = rows[1]
    assert list(first) == list(CSV_COLUMNS)
    assert (first["billable_seconds"], first["hangup_cause"], first["reason"]) == (61, 16,
                                                                                   "allowed")
    assert datetime.fromisoformat(first["answered_at"]).tzinfo is not None

    result = run("calls", "acme", "--csv", "--since", "1d", db=recorded)
    assert result.returncode == 0, result.stderr
    table = list(csv.reader(io.StringIO(result.stdout)))
    assert table[0] == list(CSV_COLUMNS)
    assert [r[0] for r in table[1:]] == ["1.1", "1.2"]
    assert table[1][CSV_COLUMNS.index("billable_seconds")] == "61"
    assert table[2][CSV_COLUMNS.index("billable_seconds")] == "0"
    assert table[1][CSV_COLUMNS.index("destination")] == "+3292101299"  # a number stays as is
    assert table[0][-3:] == ["free", "duration_seconds", "billable_seconds"]
    assert table[1][CSV_COLUMNS.index("free")] == "false"
    assert table[1][CSV_COLUMNS.index("duration_seconds")] == "61"

    bakkerij = list(csv.reader(io.StringIO(run("calls", "list", "bakkerij", "--csv",
                                               db=recorded).stdout)))
    assert bakkerij[1][CSV_COLUMNS.index("dialled")].startswith("'=HYPERLINK")  # no formula

    table_text = run("calls", db=recorded)
    assert table_text.returncode == 0
    assert "1.1" not in table_text.stdout  # the table shows no uniqueid, but the calls:
    assert "+3292101299" in table_text.stdout and "\x1b" not in table_text.stdout
    assert table_text.stdout.split()[:2] == ["STARTED_AT", "NODE"]
    assert "pbx-a" in table_text.stdout
    assert first["node"] == "pbx-a"
    assert len(run("calls", "--limit", "1", "--json", db=recorded).stdout.splitlines()) == 1


async def test_calls_cli_usage_errors(recorded: Path) -> None:
    one_error_line(run("calls", "--json", "--csv", db=recorded), 2, "not allowed with")
    one_error_line(run("calls", "--since", "2026-01-01", db=recorded), 2, "no timezone")
    one_error_line(run("calls", "--since", "yesterday", db=recorded), 2, "not an ISO 8601")
    one_error_line(run("calls", "--since", "1d", "--until", "2d", db=recorded), 2,
                   "--since must be before --until")
    one_error_line(run("calls", "--limit", "0", db=recorded), 2,
                   "--limit: '0' is not a whole number from 1 to")
    one_error_line(run("calls", "ghost", db=recorded), 1, "unknown customer 'ghost'")
    one_error_line(run("calls", "purge", db=recorded), 2, "required: --by, --ticket")
    one_error_line(run("calls", "purge", "--older-than", "7x", "--by", "a", "--ticket", "t",
                       db=recorded), 2, "--older-than '7x'")
    for command in (["calls"], ["calls", "list"], ["calls", "purge"]):
        result = run(*command, "--help", db=recorded)
        assert result.returncode == 0 and "usage: callpolicy calls" in result.stdout
    assert "calls purge" in run("calls", "--help", db=recorded).stdout


async def test_calls_purge_cli_uses_retention_and_reports_count(recorded: Path,
                                                                tmp_path: Path) -> None:
    result = run("calls", "purge", "--by", "ops", "--ticket", "RET-1", db=recorded)
    assert result.returncode == 0, result.stderr
    assert "deleted 1 call record(s)" in result.stdout and result.stderr == ""
    assert [json.loads(line)["uniqueid"] for line in
            run("calls", "--json", db=recorded).stdout.splitlines()] == ["1.1", "1.2", "1.3"]
    result = run("calls", "purge", "--older-than", "1h", "--by", "ops", "--ticket", "RET-2",
                 db=recorded)
    assert result.returncode == 0 and "deleted 3 call record(s)" in result.stdout
    assert "shorter than the retention" in result.stderr  # a warning, not an error
    audit = [json.loads(line) for line in run("audit", "--json", db=recorded).stdout
             .splitlines()]
    assert [(a["action"], a["ticket"], a["after"]["deleted"]) for a in audit[-2:]] == [
        ("calls.purge", "RET-1", 1), ("calls.purge", "RET-2", 3)]


async def test_calls_cli_shows_free_calls(store: Store) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    await store.record_calls([
        decided("2.1", at=start, dialled="0800 12 345"),
        CallRecord("2.1", answered_at=start + timedelta(seconds=1),
                   ended_at=start + timedelta(seconds=20), hangup_cause=16),
        decided("2.2", at=start + timedelta(minutes=1)),
        CallRecord("2.2", answered_at=start + timedelta(minutes=1, seconds=1),
                   ended_at=start + timedelta(minutes=1, seconds=20), hangup_cause=16),
    ])
    rows = [json.loads(line) for line in run("calls", "--json", db=store.path)
            .stdout.splitlines()]
    assert [(r["uniqueid"], r["free"], r["duration_seconds"], r["billable_seconds"])
            for r in rows] == [("2.1", True, 19, 0), ("2.2", False, 19, 19)]
    table = list(csv.reader(io.StringIO(run("calls", "--csv", db=store.path).stdout)))
    assert [(r[0], r[CSV_COLUMNS.index("free")], r[CSV_COLUMNS.index("billable_seconds")])
            for r in table[1:]] == [("2.1", "true", "0"), ("2.2", "false", "19")]
    text = run("calls", db=store.path).stdout.splitlines()
    assert "FREE" in text[0]
    assert [" free " in line for line in text[1:]] == [True, False]


def test_csv_cells_a_spreadsheet_would_compute_are_neutralised() -> None:
    """A caller dials what ends up in the export: only a single number stays as it is."""
    from callpolicy.live.records import csv_cell

    for kept in ("+3292101234", "092101234", "-5", "112", "3.5"):
        assert csv_cell(kept) == kept
    for formula in ("-2+3", "+1+1", "+32 9 210 12 34", "=1+1", "@SUM(A1)", "-A1", "\t=1",
                    "+3292101234*2"):
        assert csv_cell(formula) == "'" + formula
    assert csv_cell(True) == "true" and csv_cell(7) == 7
