"""The daemon's call-record writer and its spool: bounded, a bad record blocks nothing, nothing
lost up to the bounds, the spool replayed in order when the database is back."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callpolicy.live.records import CallRecord
from callpolicy.live.records_spool import CallSpool, spool_path
from callpolicy.live.records_writer import RecordWriter
from callpolicy.service.metrics import Metrics
from callpolicy.store import Store

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def decided(uniqueid: str, dialled: str = "092101299") -> CallRecord:
    return CallRecord(uniqueid, customer_id="acme", endpoint="acme-101", dialled=dialled,
                      destination="+3292101299", category="national", action="allow",
                      reason="allowed", rule="anything else", source="daemon", started_at=T0)


def answered(uniqueid: str, after: float = 2) -> CallRecord:
    return CallRecord(uniqueid, answered_at=T0 + timedelta(seconds=after))


def ended(uniqueid: str, after: float, cause: int | None = 16) -> CallRecord:
    return CallRecord(uniqueid, ended_at=T0 + timedelta(seconds=after), hangup_cause=cause)


async def new_database(path: Path) -> Path:
    store = await Store.open(path, create=True)
    await store.close()
    return path


def stored(path: Path) -> dict[str, tuple]:
    with sqlite3.connect(path) as db:
        return {row[0]: row[1:] for row in db.execute(
            "SELECT uniqueid, reason, answered_at IS NOT NULL, ended_at, hangup_cause,"
            " billable_seconds FROM calls")}


def metric(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


def events(logs: list[dict], name: str) -> list[dict]:
    return [entry for entry in logs if entry["event"] == name]


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    (tmp_path / "db").mkdir()
    return await new_database(tmp_path / "db" / "cp.db")


def writer_for(db: Path, spool: Path | None = None, *, max_bytes: int = 1 << 20,
               max_pending: int = 1000) -> RecordWriter:
    return RecordWriter(db, CallSpool(spool or spool_path(db), max_bytes), Metrics(),
                        max_pending=max_pending)


async def test_a_refused_record_is_spooled_as_rejected_and_the_others_are_written(
        db: Path) -> None:
    with sqlite3.connect(db) as conn:  # a database that refuses one call (a constraint)
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON calls WHEN NEW.uniqueid = 'bad'"
                     " BEGIN SELECT RAISE(ABORT, 'refused by a constraint'); END")
    writer = writer_for(db)
    batch = [decided("g1"), decided("g2"), decided("bad"), answered("g1"), decided("g3"),
             ended("g1", 12), decided("g4")]
    with capture_logs() as logs:
        await writer.flush(batch)
        await writer.flush([decided("g5"), ended("g2", 1)])  # the bad one blocks nothing
    rows = stored(db)
    assert sorted(rows) == ["g1", "g2", "g3", "g4", "g5"]
    assert rows["g1"] == ("allowed", 1, "2026-03-02T09:00:12.000000+00:00", 16, 10)
    rejected = events(logs, "call_record_rejected")
    assert [(e["uniqueid"], e["log_level"]) for e in rejected] == [("bad", "error")]
    assert "refused by a constraint" in rejected[0]["error"]
    lines = [json.loads(line) for line in spool_path(db).read_text().splitlines()]
    assert [(line["record"]["uniqueid"], "refused by a constraint" in line["rejected"]["error"])
            for line in lines] == [("bad", True)]
    assert CallRecord.from_fields(lines[0]["record"]) == decided("bad")  # recoverable
    assert (writer.spool.pending, writer.spool.rejected) == (0, 1)
    assert metric(writer.metrics, "callpolicy_call_records_rejected_total") == 1
    assert metric(writer.metrics, "callpolicy_call_records_spooled") == 0
    assert not events(logs, "call_records_db_unavailable")
    await writer.close([])


async def test_an_unavailable_database_spools_bounded_then_replays_in_order(
        tmp_path: Path, db: Path) -> None:
    spool_file = tmp_path / "spool" / "cp.db.calls-spool.jsonl"
    spool_file.parent.mkdir()
    writer = writer_for(db, spool_file, max_bytes=4096, max_pending=5)
    await writer.flush([decided("a")])
    assert "a" in stored(db)
    (tmp_path / "db").rename(tmp_path / "db-away")  # the database's directory is gone
    with capture_logs() as logs:
        await writer.flush([answered("a"), ended("a", 5, cause=None)])  # (an AMI resync)
        await writer.flush([ended("a", 9)])  # the real hang-up: must win over the resync
        assert writer.spool.pending == 3 and not writer.backlog
        fillers = [decided(f"f{i:02}") for i in range(30)]
        await writer.flush(fillers[:15])
        await writer.flush(fillers[15:])
    spooled = writer.spool.pending - 3
    assert 0 < spooled < 15 and writer.spool.size <= 4096  # bounded on disk
    assert len(writer.backlog) == 5  # bounded in memory
    dropped = 30 - spooled - 5
    assert metric(writer.metrics, "callpolicy_call_records_dropped_total") == dropped
    assert metric(writer.metrics, "callpolicy_call_records_spooled") == 3 + spooled
    assert [e["log_level"] for e in events(logs, "call_records_db_unavailable")] == ["error"]
    assert [e["count"] for e in events(logs, "call_records_dropped")] == [15 - spooled - 5]
    assert len(events(logs, "call_spool_full")) == 1  # once per episode, not per round

    (tmp_path / "db-away").rename(tmp_path / "db")  # back
    with capture_logs() as logs:
        await writer.flush([])
    rows = stored(db)
    assert rows["a"] == ("allowed", 1, "2026-03-02T09:00:09.000000+00:00", 16, 7)
    assert sorted(u for u in rows if u.startswith("f")) == [
        f"f{i:02}" for i in range(spooled + 5)]  # the oldest: only the newest were dropped
    assert not spool_file.exists() and writer.spool.pending == 0 and not writer.backlog
    assert metric(writer.metrics, "callpolicy_call_records_spooled") == 0
    assert events(logs, "call_records_db_available")
    # nothing is replayed twice: a later update is not undone by a later round
    await writer.flush([ended("a", 30, cause=17)])
    await writer.flush([])
    assert stored(db)["a"] == ("allowed", 1, "2026-03-02T09:00:30.000000+00:00", 17, 28)
    await writer.close([])


async def test_a_replaced_database_file_is_noticed_and_reopened(tmp_path: Path,
                                                                db: Path) -> None:
    writer = writer_for(db)
    await writer.flush([decided("a")])
    db.rename(tmp_path / "old.db")  # an open connection would write into the removed file
    await writer.flush([answered("a")])
    assert writer.spool.pending == 1
    await new_database(db)  # ops restore a database at the path
    await writer.flush([ended("a", 4)])
    assert stored(db) == {"a": (None, 1, "2026-03-02T09:00:04.000000+00:00", 16, 2)}
    assert writer.spool.pending == 0
    await writer.close([])


async def test_shutdown_spools_the_last_records_and_the_next_start_replays_them(
        tmp_path: Path, db: Path) -> None:
    writer = writer_for(db)
    await writer.flush([decided("a"), answered("a")])
    away = db.rename(tmp_path / "away.db")  # the file is gone, its directory is not
    await writer.close([ended("a", 8), decided("b")])
    assert writer.spool.pending == 2 and spool_path(db).exists()
    away.rename(db)
    restarted = writer_for(db)
    with capture_logs() as logs:
        await restarted.flush([])
    assert [e["pending"] for e in events(logs, "call_spool_found")] == [2]
    assert stored(db) == {"a": ("allowed", 1, "2026-03-02T09:00:08.000000+00:00", 16, 6),
                          "b": ("allowed", 0, None, None, 0)}
    assert not spool_path(db).exists()
    await restarted.close([])


def test_spool_keeps_unreadable_and_rejected_lines_and_survives_a_torn_write(
        tmp_path: Path) -> None:
    path = tmp_path / "x.calls-spool.jsonl"
    good = json.dumps({"record": decided("p1").to_fields()})
    refused = json.dumps({"record": decided("r").to_fields(), "rejected": {"error": "x"}})
    path.write_text(f"{good}\nnot json\n{refused}\n{{\"record\": {{\"uniqueid\"")  # torn
    spool = CallSpool(path)
    spool.scan()
    assert (spool.pending, spool.rejected, spool.unreadable) == (1, 1, 2)
    assert spool.append([decided("p2")]) == 1
    records, offset = spool.read_pending(0, 10)
    assert [r.uniqueid for r in records] == ["p1", "p2"]
    assert spool.read_pending(offset, 10) == ([], offset)
    spool.consume(1)
    lines = path.read_text().splitlines()
    assert lines[:3] == ["not json", refused, '{"record": {"uniqueid"'] and len(lines) == 4
    assert [r.uniqueid for r in spool.read_pending(0, 10)[0]] == ["p2"]
    fresh = CallSpool(path)
    fresh.scan()
    assert (fresh.pending, fresh.rejected, fresh.unreadable, fresh.size) == (
        1, 1, 2, path.stat().st_size)
    small = CallSpool(tmp_path / "small.jsonl", max_bytes=1000)
    taken = small.append([decided(f"s{i}") for i in range(10)])
    assert 0 < taken < 10 and small.size == (tmp_path / "small.jsonl").stat().st_size <= 1000


async def test_a_spool_removed_by_hand_does_not_hold_up_new_records(tmp_path: Path,
                                                                   db: Path) -> None:
    writer = writer_for(db)
    away = db.rename(tmp_path / "away.db")
    await writer.flush([decided("a")])
    assert writer.spool.pending == 1
    away.rename(db)
    spool_path(db).unlink()  # ops took the file away (to replay it elsewhere)
    await writer.flush([decided("b")])
    assert sorted(stored(db)) == ["b"] and writer.spool.pending == 0
    await writer.close([])
