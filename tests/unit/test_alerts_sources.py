"""What raises alerts (alerts/sources.py): decisions, the dialplan's UserEvents, the
daemon's state; and the per-call hook's cost."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from callpolicy.alerts.aggregate import Condition
from callpolicy.alerts.alerter import Alerter
from callpolicy.alerts.config import parse_alerts
from callpolicy.alerts.kinds import RESOLVED
from callpolicy.alerts.sources import (
    Noted,
    ami_condition,
    node_conditions,
    occurrences,
    store_condition,
    user_event_occurrence,
    worth_noting,
)
from callpolicy.live.cluster import NodeState, OtherNodes
from callpolicy.policy import CallRequest
from callpolicy.service.metrics import Metrics

NOW = datetime(2026, 11, 30, 21, 0, tzinfo=UTC)


def test_decisions_worth_an_alert(decide) -> None:
    plain = decide("092101299")
    assert not worth_noting(plain) and occurrences(Noted(plain, "acme-101", None, "1", 0)) == []
    spoof = decide("092101299", caller_id="+3225551234")
    [occurrence] = occurrences(Noted(spoof, "acme-101", None, "1.2", 5.0))
    assert (occurrence.kind, occurrence.key, occurrence.details["requested"]) == (
        "spoofing_attempt", "acme", "+3225551234")
    emergency = decide("112", source_ip="198.51.100.9")
    assert worth_noting(emergency)
    [call] = occurrences(Noted(emergency, "acme-101", "198.51.100.9", "1.3", 6.0))
    assert (call.kind, call.details["location"], call.details["source_ip"]) == (
        "emergency_call", "nomadic", "198.51.100.9")


def test_the_dialplans_last_resort_user_event() -> None:
    # The fallback AGI's decisions come from its journal (test_fallback_journal.py): its
    # UserEvent would count a call twice while the daemon is up.
    assert user_event_occurrence({"UserEvent": "CallpolicyFallback", "Uniqueid": "1.5"},
                                 1.0) is None
    last = user_event_occurrence({"UserEvent": "CallpolicyLastResort", "Uniqueid": "1.6"}, 1.0)
    assert last is not None and (last.kind, last.key) == ("fallback_decision", "last_resort")
    assert last.details["by"] == "last_resort"
    assert user_event_occurrence({"UserEvent": "SomethingElse"}, 1.0) is None


def test_state_conditions() -> None:
    assert ami_condition(False, False, "a:1", 0.0) == []  # not configured: no alert
    assert ami_condition(True, True, "a:1", 0.0) == []
    [down] = ami_condition(True, False, "127.0.0.1:5038", 0.0)
    assert down.kind == "ami_link_down" and down.details["address"] == "127.0.0.1:5038"
    assert store_condition(None, None, "db") == []
    [store] = store_condition("disk I/O error", 10.0, "/var/lib/callpolicy/callpolicy.db")
    assert store.details["error"] == "disk I/O error"
    view = OtherNodes("pbx-a", timeout=5.0)
    assert node_conditions(view) is None  # never read: cannot tell
    view.update([NodeState("pbx-a", 0.1, "connected", 0.1, 0, 0.0),
                 NodeState("pbx-b", 0.5, "connected", 0.1, 0, 0.0),
                 NodeState("pbx-c", 9.0, "down", None, None, 0.0)], [])
    assert [c.key for c in node_conditions(view) or []] == ["pbx-c"]


async def test_a_state_alert_is_raised_then_resolved_through_the_alerter(
        tmp_path: Path) -> None:
    clock = [1000.0]
    holding: list[Condition] = ami_condition(True, False, "127.0.0.1:5038", 1000.0)
    alerter = Alerter(parse_alerts({}, tmp_path), "pbx-a", Metrics(), tmp_path / "o.sqlite",
                      lambda: clock[0])
    alerter.conditions = lambda: (list(holding), {"ami_link_down"})
    await alerter.open()
    try:
        await alerter.round()
        assert alerter.status(clock[0])["open"] == []  # not yet: a blip is no alert
        clock[0] += 3
        await alerter.round()
        [open_alert] = alerter.status(clock[0])["open"]
        assert (open_alert["kind"], open_alert["status"]) == ("ami_link_down", "open")
        holding.clear()
        clock[0] += 1
        await alerter.round()
        assert alerter.status(clock[0])["open"] == []
        assert alerter.states.open() == [] and RESOLVED == "resolved"
    finally:
        await alerter.close()


def test_the_per_call_hook_queues_only_alert_worthy_calls(decide, tmp_path: Path) -> None:
    """Its cost is printed (a plain call ~0.1 µs, an alert-worthy one ~2 µs), not asserted."""
    plain, emergency = decide("092101299"), decide("112")
    request = CallRequest("112", NOW, endpoint="acme-101")
    alerter = Alerter(parse_alerts({}, tmp_path), "n", Metrics(), tmp_path / "o.sqlite")
    n = 100_000
    began = time.perf_counter()
    for _ in range(n):
        alerter.note(plain, request, {})  # as the daemon calls it, for every decision
    skip = (time.perf_counter() - began) / n
    began = time.perf_counter()
    for _ in range(n // 10):
        alerter.note(emergency, request, {"agi_uniqueid": "1.1"})
    noted = (time.perf_counter() - began) / (n // 10)
    print(f"per-call hook: {skip * 1e9:.0f} ns for a plain call, {noted * 1e6:.2f} µs to queue "
          "an alert-worthy one")
    assert len(alerter._queue) == n // 10  # the plain calls queued nothing
