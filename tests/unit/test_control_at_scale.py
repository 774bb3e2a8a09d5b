"""Issue 12, live control at scale: a revocation's hang-ups go out together (bounded), and the
live table is rebuilt from ONE Status action, exactly, even when events arrive meanwhile.

The Asterisk side is a stand-in for panoramisk's Manager at its transport edge
(`send_action`): AmiLink's own action(), bounds, timeouts and Status parsing (from raw AMI
text, through panoramisk's own parser) are the real ones."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from panoramisk.message import Message
from structlog.testing import capture_logs
from test_control import make_engine

from callpolicy.asterisk.ami import MAX_IN_FLIGHT, STATUS_VALUE_MAX, AmiLink
from callpolicy.asterisk.variables import ENFORCE_CONTEXT, encode_arg
from callpolicy.live.control import CallControl
from callpolicy.policy import CallRequest, FraudLimits
from callpolicy.service.config import AmiSettings

CALLS = 200


def ami_message(**fields: str | list[str]) -> Message:
    """An AMI message as it comes off the wire, parsed by panoramisk."""
    lines: list[str] = []
    for key, value in fields.items():
        for item in [value] if isinstance(value, str) else value:
            lines.append(f"{key}: {item}")
    message = Message.from_line("\r\n".join(lines))
    assert message is not None
    return message


class Asterisk:
    """Answers each action `delay` s after it was sent, with `respond(action)`; counts how
    many actions were awaiting their response at once."""

    def __init__(self, respond: Callable[[dict[str, str]], Any], delay: float = 0.0) -> None:
        self.respond = respond
        self.delay = delay
        self.actions: list[dict[str, str]] = []
        self.in_flight = 0
        self.peak = 0

    def send_action(self, action: dict[str, str], as_list: bool | None = None) -> Any:
        self.actions.append(dict(action))
        return asyncio.ensure_future(self._answer(dict(action)))

    async def _answer(self, action: dict[str, str]) -> Any:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            return self.respond(action)
        finally:
            self.in_flight -= 1


def link_to(asterisk: Asterisk) -> AmiLink:
    link = AmiLink(AmiSettings(username="callpolicy", secret="test"))
    link._manager = asterisk  # type: ignore[assignment]
    link.logins += 1
    link._set_connected(True)
    return link


def place(control: CallControl, uid: str, dialled: str = "092101299") -> None:
    request = CallRequest(dialled, datetime.now(UTC), endpoint="acme-101")
    decision = control._engine().decide(control.with_live_counts(request))
    assert decision.allowed, decision
    control.decided(request, decision, {"agi_uniqueid": uid,
                                        "agi_channel": f"PJSIP/acme-101-{uid}"})


def hung_up_metric(control: CallControl) -> float | None:
    return control.metrics.registry.get_sample_value("callpolicy_calls_hung_up_total",
                                                     {"rule": "suspended"})


async def test_a_suspended_customers_200_calls_are_hung_up_together() -> None:
    engines = {"now": make_engine(FraudLimits(10_000, 10_000, 10_000))}

    def answer(action: dict[str, str]) -> Message:
        return ami_message(Response="Success", Message="Channel Hungup")

    asterisk = Asterisk(answer, delay=0.05)
    control = CallControl(lambda: engines["now"], link_to(asterisk))
    for i in range(CALLS):
        place(control, f"1.{i}")
    engines["now"] = make_engine(FraudLimits(10_000, 10_000, 10_000), suspended=True)
    began = time.monotonic()
    with capture_logs() as logs:
        assert await control.revoke_once() == CALLS
    took = time.monotonic() - began
    print(f"{CALLS} hang-ups answered after 50 ms each: revoke_once took {took:.2f} s "
          f"(one after another: {CALLS * 0.05:.0f} s)")
    assert sorted(a["Channel"] for a in asterisk.actions) == sorted(
        f"PJSIP/acme-101-1.{i}" for i in range(CALLS))
    assert {a["Action"] for a in asterisk.actions} == {"Hangup"}
    assert asterisk.peak == MAX_IN_FLIGHT  # pipelined, and bounded
    assert [e["event"] for e in logs] == ["call_revoked"] * CALLS  # the log lines of before
    assert hung_up_metric(control) == CALLS and control.revoked == CALLS
    assert await control.revoke_once() == 0  # asked once: the Hangup events take them out


async def test_a_hang_up_that_times_out_is_retried_next_round_rate_limited_log() -> None:
    engines = {"now": make_engine(FraudLimits(100, 100, 100))}
    stalled = {f"PJSIP/acme-101-1.{i}" for i in range(0, 30, 3)}

    def answer(action: dict[str, str]) -> Message:
        if action["Channel"] in stalled:
            stalled.discard(action["Channel"])
            raise TimeoutError  # what wait_for raises when no response came in time
        return ami_message(Response="Success", Message="Channel Hungup")

    asterisk = Asterisk(answer, delay=0.01)
    control = CallControl(lambda: engines["now"], link_to(asterisk))
    for i in range(30):
        place(control, f"1.{i}")
    engines["now"] = make_engine(FraudLimits(100, 100, 100), suspended=True)
    with capture_logs() as logs:
        assert await control.revoke_once() == 20
    failed = [e for e in logs if e["event"] == "revocation_hangup_failed"]
    assert 1 <= len(failed) <= 3 and "timed out" in failed[0]["error"]  # a burst, not 10
    assert sum(c.hung_up for c in control.live.calls.values()) == 20
    assert await control.revoke_once() == 10  # the 10 that failed, and only them
    assert hung_up_metric(control) == 30
    assert len(asterisk.actions) == 40


def status_event(uid: str, *, context: str = ENFORCE_CONTEXT, state: str = "6",
                 seconds: str = "42", action: str = "allow",
                 request: str | None = None, dialled: str = "092101299") -> dict[str, Any]:
    if request is None:
        request = ",".join(("outbound", "acme-101", encode_arg(dialled), encode_arg("101"),
                            "0", "127.0.0.2:5060", ""))
    return {"Event": "Status", "Privilege": "Call", "Channel": f"PJSIP/acme-101-{uid}",
            "ChannelState": state, "Context": context, "Exten": "s", "Priority": "3",
            "Uniqueid": uid, "Seconds": seconds, "ActionID": "x",
            "Variable": [f"CP_ACTION={action}", f"CP_REQUEST={request}"]}


def status_reply(*events: dict[str, Any]) -> list[Message]:
    return [ami_message(Response="Success", EventList="start",
                        Message="Channel status will follow"),
            *(ami_message(**e) for e in events),
            ami_message(Event="StatusComplete", EventList="Complete",
                        ListItems=str(len(events)), Items=str(len(events)))]


async def test_the_table_is_rebuilt_from_one_status_action() -> None:
    long_caller = "9" * 400  # the phone's caller ID; base64: 536 characters, Status cuts it
    long_request = ",".join(("outbound", "acme-101", encode_arg("092101288"),
                             encode_arg(long_caller), "0", "127.0.0.2:5060", ""))
    events = [status_event(f"1.{i}", dialled=f"0921013{i:02d}") for i in range(50)]
    events += [
        status_event("2.1", context="from-trunk"),  # the trunk leg of a call
        status_event("2.2", action="block"),
        status_event("2.3", action="(null)", request="(null)"),  # no decision (yet)
        status_event("2.4", state="5", seconds="3"),  # ringing
        status_event("2.5", request=long_request[:STATUS_VALUE_MAX]),  # cut by Status
    ]

    def answer(action: dict[str, str]) -> Any:
        if action["Action"] == "Status":
            assert action["Variables"] == "CP_ACTION,CP_REQUEST"
            return status_reply(*events)
        assert (action["Action"], action["Channel"], action["Variable"]) == (
            "Getvar", "PJSIP/acme-101-2.5", "CP_REQUEST")
        return ami_message(Response="Success", Variable="CP_REQUEST", Value=long_request)

    asterisk = Asterisk(answer)
    control = CallControl(lambda: make_engine(FraudLimits(100, 100, 100)), link_to(asterisk))
    await control.resync()
    assert [a["Action"] for a in asterisk.actions] == ["Status", "Getvar"]
    assert control.concurrency_enforced
    calls = control.live.calls
    assert set(calls) == {f"1.{i}" for i in range(50)} | {"2.4", "2.5"}
    assert calls["1.7"].request.dialled == "092101307"
    assert calls["1.7"].channel == "PJSIP/acme-101-1.7"
    assert abs(calls["1.7"].started - (time.time() - 42)) < 5
    assert calls["1.7"].answered == calls["1.7"].started and calls["2.4"].answered is None
    assert (calls["2.5"].request.dialled, calls["2.5"].request.source_ip) == (
        "092101288", "127.0.0.2:5060")  # the arguments after the cut are there


async def test_events_during_the_rebuild_are_not_lost() -> None:
    """Asterisk lists the channels at one moment; the daemon goes on taking calls and AMI
    events while that list is on its way."""
    control: CallControl

    def answer(action: dict[str, str]) -> Any:
        link = control.ami
        link._dispatch(None, {"Event": "Hangup", "Uniqueid": "1.1", "Cause": "16"})
        link._dispatch(None, {"Event": "Newstate", "Uniqueid": "1.2", "ChannelState": "6"})
        place(control, "1.3")  # decided now: its channel came after the list was made
        return status_reply(status_event("1.1"), status_event("1.2", state="5"),
                            status_event("1.4"))

    control = CallControl(lambda: make_engine(FraudLimits(100, 100, 100)),
                          link_to(Asterisk(answer)))
    control.ami.connected = False  # the daemon restarted: AMI not up yet
    place(control, "1.0")  # decided before the login; hung up before it, unseen
    control.ami.connected = True
    control._open["0.9"] = None  # an open record from before, its call gone meanwhile
    control.take_pending()
    await control.resync()
    assert set(control.live.calls) == {"1.2", "1.3", "1.4"}  # 1.1 ended, 1.3 kept
    assert control.live.calls["1.2"].answered is not None
    assert control.live.counts("acme").concurrent == 3
    records = {(r.uniqueid, r.answered_at is not None, r.ended_at is not None)
               for r in control.take_pending()}
    assert ("0.9", False, True) in records  # ended while away
    assert ("1.2", True, False) in records  # answered while the list was on its way
    assert not any(uid == "1.3" and ended for uid, _, ended in records)
