"""Call-record updates merged in memory (live/pending.py) and written in batches whose calls
are new (no read of their rows) store exactly the rows that the same updates store when each
is written alone, merged into the stored row one after another: on both backends, for a
mixed sequence with calls decided in an earlier round, a hang-up that never had a decision,
a call answered before its decision was stored, a call decided twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backends import query

from callpolicy.live.pending import PendingRecords
from callpolicy.live.records import FIELDS, CallRecord
from callpolicy.store import open_store

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def decision(uid: str, started: float, dialled: str = "092101299", *,
             refused: bool = False) -> CallRecord:
    free = dialled.startswith("0800")
    return CallRecord(
        uid, linkedid=uid, customer_id="acme", endpoint="acme-101", dialled=dialled,
        destination="+32" + dialled[1:], category="freephone" if free else "national",
        action="block" if refused else "allow", reason="premium" if refused else "allowed",
        rule="a rule", source="daemon", node="pbx-a", started_at=at(started),
        ended_at=at(started) if refused else None)


def answer(uid: str, seconds: float) -> CallRecord:
    return CallRecord(uid, answered_at=at(seconds))


def hang_up(uid: str, seconds: float, cause: int | None = 16) -> CallRecord:
    return CallRecord(uid, ended_at=at(seconds), hangup_cause=cause)


def rounds(p: str) -> list[list[CallRecord]]:
    """The updates of three writer rounds; `p` prefixes every uniqueid."""
    return [
        [decision(p + "a", 0), decision(p + "g", 0), answer(p + "h", 1)],
        [decision(p + "b", 1, "0905123456", refused=True), decision(p + "c", 1),
         answer(p + "c", 2), decision(p + "d", 2), answer(p + "d", 3), hang_up(p + "d", 9.2),
         hang_up(p + "e", 3, cause=None), answer(p + "a", 2.5),
         decision(p + "f", 3, "080012345"), answer(p + "f", 4), hang_up(p + "f", 64)],
        [hang_up(p + "a", 62.4), decision(p + "g", 5, "092101277"), hang_up(p + "c", 30),
         hang_up(p + "c", 31, cause=None), decision(p + "h", 0.5), answer(p + "h", 1.5),
         hang_up(p + "h", 2.5, cause=17), answer(p + "d", 3.5)],
    ]


async def rows(location: str, prefix: str) -> list[tuple[object, ...]]:
    found = await query(location, "SELECT * FROM calls WHERE uniqueid LIKE ? ORDER BY uniqueid",
                        (prefix + "%",))
    return [tuple(v[len(prefix):] if isinstance(v, str) and v.startswith(prefix) else v
                  for v in row) for row in found]


async def test_batched_rows_equal_the_rows_of_each_update_written_alone(
        db_location: str) -> None:
    store = await open_store(db_location, create=True)
    try:
        for batch in rounds("one-"):
            for update in batch:
                await store.record_calls([update])
        for batch in rounds("all-"):
            pending = PendingRecords()
            for update in batch:
                pending.add(update)
            merged = pending.take()
            assert len(merged) == len({u.uniqueid for u in batch})
            await store.record_calls(merged)
        alone, batched = await rows(db_location, "one-"), await rows(db_location, "all-")
        assert batched == alone
        assert len(alone) == 8
        by_uid = {r.uniqueid: r for r in await store.calls()}
    finally:
        await store.close()
    a, f, h = by_uid["all-a"], by_uid["all-f"], by_uid["all-h"]
    assert (a.action, a.billable_seconds, a.hangup_cause) == ("allow", 60, 16)  # 59.9 s -> 60
    assert (f.free, f.duration_seconds, f.billable_seconds) == (True, 60, 0)
    assert (h.started_at, h.answered_at, h.hangup_cause) == (at(0.5), at(1.5), 17)
    assert by_uid["all-g"].dialled == "092101277"  # decided again: the newer decision
    assert by_uid["all-c"].hangup_cause == 16  # a later hang-up without a cause keeps it


def test_pending_records_merge_like_merged() -> None:
    updates = [decision("x", 0), answer("x", 1), hang_up("x", 5, cause=None),
               hang_up("x", 6, cause=21), answer("x", 2)]
    expected = updates[0]
    for update in updates[1:]:
        expected = expected.merged(update)
    pending = PendingRecords()
    pending.add(decision("x", 0))
    pending.answered("x", at(1))
    pending.ended("x", at(5), None)
    pending.ended("x", at(6), 21)
    pending.add(answer("x", 2))
    pending.ended("y", at(7), None)
    x, y = pending.take()
    assert x.to_fields() == expected.to_fields()
    assert y.to_fields() == hang_up("y", 7, cause=None).to_fields()
    assert pending.take() == []
    assert FIELDS[0] == "uniqueid"
