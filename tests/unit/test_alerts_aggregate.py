"""Alert aggregation and state tracking (alerts/aggregate.py): pure, the time passed in."""

from __future__ import annotations

from collections import defaultdict
from itertools import count, pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from callpolicy.alerts.aggregate import Aggregator, Condition, Occurrence, StateTracker
from callpolicy.alerts.kinds import (
    AMI_LINK_DOWN,
    EMERGENCY_CALL,
    FRAUD_LIMIT,
    NODE_HEARTBEAT_LOST,
    RAISED,
    RESOLVED,
    Alert,
)

WINDOWS = {FRAUD_LIMIT: 60.0, EMERGENCY_CALL: 0.0, "spoofing_attempt": 300.0}


def aggregator() -> Aggregator:
    ids = count()
    return Aggregator(WINDOWS.__getitem__, lambda: f"a{next(ids)}")


def test_a_burst_of_500_refusals_of_one_customer_is_one_alert_with_a_count() -> None:
    agg = aggregator()
    out = []
    for i in range(500):
        out += agg.add(Occurrence(FRAUD_LIMIT, "acme", 1000.0 + i * 0.05,
                                  {"customer": "acme", "number": f"+88216{i % 20:04d}"}))
    out += agg.due(1059.9)
    assert out == []  # the window (60 s from the first) is still open
    [alert] = agg.due(1060.0)
    assert (alert.kind, alert.key, alert.count, alert.status) == (FRAUD_LIMIT, "acme", 500,
                                                                  RAISED)
    assert (alert.first_seen, alert.last_seen) == (1000.0, 1000.0 + 499 * 0.05)
    assert len(alert.details["numbers"]) == 10  # a sample of the distinct numbers, bounded
    assert agg.due(5000.0) == [] and agg.open_windows == 0


def test_each_customer_has_its_own_window_and_a_later_burst_a_new_alert() -> None:
    agg = aggregator()
    agg.add(Occurrence(FRAUD_LIMIT, "acme", 0.0))
    agg.add(Occurrence(FRAUD_LIMIT, "bakkerij", 1.0))
    assert sorted((a.key, a.count) for a in agg.due(61.0)) == [("acme", 1), ("bakkerij", 1)]
    # an occurrence after the window opens a new one: the old one goes out at once if still open
    agg.add(Occurrence(FRAUD_LIMIT, "acme", 100.0))
    [first] = agg.add(Occurrence(FRAUD_LIMIT, "acme", 170.0))
    assert (first.first_seen, first.count) == (100.0, 1)


def test_an_emergency_call_goes_out_at_once() -> None:
    agg = aggregator()
    [alert] = agg.add(Occurrence(EMERGENCY_CALL, "acme", 5.0, {"location": "nomadic"}))
    assert (alert.count, alert.window, alert.severity) == (1, 0.0, "critical")
    [again] = agg.add(Occurrence(EMERGENCY_CALL, "acme", 5.1, {"location": "verified"}))
    assert again.severity == "warning" and again.id != alert.id


def test_flush_sends_every_open_window_now() -> None:
    agg = aggregator()
    agg.add(Occurrence(FRAUD_LIMIT, "acme", 0.0))
    agg.add(Occurrence(FRAUD_LIMIT, "acme", 1.0))
    [alert] = agg.flush()
    assert alert.count == 2 and agg.open_windows == 0


occurrence_lists = st.lists(
    st.tuples(st.sampled_from(sorted(WINDOWS)), st.sampled_from(["acme", "bakkerij", "x"]),
              st.floats(0, 1000, allow_nan=False)), max_size=200)


@settings(max_examples=200, deadline=None)
@given(occurrence_lists)
def test_counts_add_up_and_no_alert_spans_more_than_its_window(raw) -> None:
    agg = aggregator()
    out = []
    for kind, key, at in sorted(raw, key=lambda r: r[2]):
        out += agg.add(Occurrence(kind, key, at))
    out += agg.due(10_000.0)
    assert sum(a.count for a in out) == len(raw)
    by_slot = defaultdict(list)
    for alert in out:
        assert alert.last_seen - alert.first_seen < max(WINDOWS[alert.kind], 1e-9) \
            or alert.count == 1
        by_slot[alert.kind, alert.key].append(alert)
    for (kind, _key), alerts in by_slot.items():
        if WINDOWS[kind] == 0:
            assert all(a.count == 1 for a in alerts)
        starts = [a.first_seen for a in alerts]
        # a new alert's window opens only after the previous one ended
        assert all(b - a >= WINDOWS[kind] for a, b in pairwise(starts))


def test_a_condition_is_raised_once_after_confirm_and_resolved_when_it_clears() -> None:
    tracker = StateTracker(confirm=3.0)
    down = Condition(AMI_LINK_DOWN, "ami", {"address": "127.0.0.1:5038"})
    covers = [AMI_LINK_DOWN]
    assert tracker.observe(0.0, [down], covers) == []
    assert tracker.observe(2.9, [down], covers) == []
    [raised] = tracker.observe(3.0, [down], covers)
    assert (raised.status, raised.first_seen, raised.severity) == (RAISED, 0.0, "critical")
    assert tracker.observe(10.0, [down], covers) == [] and tracker.open() == [raised]
    [resolved] = tracker.observe(12.0, [], covers)
    assert (resolved.status, resolved.severity, resolved.details["lasted_s"]) == (
        RESOLVED, "info", 12.0)
    assert tracker.open() == []


def test_a_blip_is_no_alert_and_an_unread_source_keeps_its_state() -> None:
    tracker = StateTracker(confirm=3.0)
    assert tracker.observe(0.0, [Condition(AMI_LINK_DOWN, "ami")], [AMI_LINK_DOWN]) == []
    assert tracker.observe(1.0, [], [AMI_LINK_DOWN]) == []  # cleared before confirm: nothing
    node = Condition(NODE_HEARTBEAT_LOST, "pbx-b")
    tracker.observe(0.0, [node], [NODE_HEARTBEAT_LOST])
    [raised] = tracker.observe(5.0, [node], [NODE_HEARTBEAT_LOST])
    assert raised.key == "pbx-b"
    # the cluster table could not be read: not resolved on a guess
    assert tracker.observe(6.0, [], []) == [] and tracker.open() == [raised]


def test_restored_state_alerts_keep_their_id_and_wait_the_grace_before_resolving() -> None:
    ids = count()
    states = StateTracker(3.0, lambda: f"s{next(ids)}")
    down = [Condition(AMI_LINK_DOWN, "ami")]
    # this run raised the AMI link under a new id before the last run's could be read
    states.observe(0.0, down, [AMI_LINK_DOWN])
    [new] = states.observe(3.0, down, [AMI_LINK_DOWN])
    earlier = [Alert("old-ami", AMI_LINK_DOWN, "ami", RAISED, 1, -50.0, -50.0, 0.0, {}),
               Alert("old-node", NODE_HEARTBEAT_LOST, "pbx-b", RAISED, 1, -40.0, -40.0, 0.0,
                     {})]
    [superseded] = states.restore(4.0, earlier)
    assert (superseded.status, superseded.details["raised_id"]) == (RESOLVED, "old-ami")
    assert superseded.details["superseded_by"] == new.id
    assert states.observe(6.9, down, [AMI_LINK_DOWN, NODE_HEARTBEAT_LOST]) == []  # grace
    [gone] = states.observe(7.0, down, [AMI_LINK_DOWN, NODE_HEARTBEAT_LOST])
    assert (gone.key, gone.details["raised_id"], gone.details["lasted_s"]) == ("pbx-b",
                                                                            "old-node", 47.0)
    assert [a.id for a in states.open()] == [new.id]
