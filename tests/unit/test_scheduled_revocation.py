"""A scheduled suspension hangs up live calls at its time, without any database write first:
the revocation loop (live/control.py) re-decides live calls with the clock, and the snapshot's
Customer.suspend_at decides. Must-reach calls are never hung up. AMI is a stand-in here."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from callpolicy.asterisk.ami import AmiLink
from callpolicy.live.control import REVOKE_INTERVAL, CallControl
from callpolicy.policy import CallRequest, Decision, Engine
from callpolicy.policy.model import Unblock, UnblockKind
from callpolicy.service.config import AmiSettings


class FakeAmi(AmiLink):
    """A configured, connected AMI link whose hang-ups are only recorded (the thing under
    test is the revocation loop, not the AMI protocol)."""

    def __init__(self) -> None:
        super().__init__(AmiSettings(username="callpolicy", secret="test"))
        self.hangups: list[tuple[str, float]] = []
        self._set_connected(True)

    async def hangup(self, channel: str, cause: int = 21) -> bool:
        self.hangups.append((channel, time.time()))
        return True


async def test_live_calls_are_hung_up_at_the_scheduled_time_but_not_112(
        make_engine, customer_factory) -> None:
    due = datetime.now(UTC) + timedelta(seconds=0.6)
    engine: Engine = make_engine(customer_factory(suspend_at=due, suspend_at_ticket="T-AT"))
    ami = FakeAmi()
    control = CallControl(lambda: engine, ami)
    for uniqueid, dialled in (("1.1", "092101299"), ("1.2", "112")):
        request = CallRequest(dialled, datetime.now(UTC), endpoint="acme-101")
        decision = engine.decide(request)
        assert decision.allowed
        control.decided(request, decision, {"agi_uniqueid": uniqueid,
                                            "agi_channel": f"PJSIP/acme-101-{uniqueid}"})
    changed = asyncio.Event()
    loop = asyncio.create_task(control.revoke_forever(changed))
    try:
        deadline = time.monotonic() + 10
        while not ami.hangups:
            assert time.monotonic() < deadline, "national call not hung up"
            await asyncio.sleep(0.02)
        assert await control.revoke_once() == 0  # nothing else to hang up: 112 stays
    finally:
        loop.cancel()
    [(channel, at)] = ami.hangups
    assert channel == "PJSIP/acme-101-1.1"
    assert at >= due.timestamp()  # not before its time...
    # ...and in a revocation round soon after (slack: a loaded machine), not at the 5 s
    # FULL_RECHECK that would pass a clock-blind revocation
    assert at - due.timestamp() < REVOKE_INTERVAL + 2.0


async def test_a_live_call_is_hung_up_when_its_unblock_expires(make_engine, customer_factory
                                                               ) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=0.6)
    unblock = Unblock(1, UnblockKind.PREFIX, "+32905", ticket="T-1", expires_at=expires)
    engine: Engine = make_engine(customer_factory(unblocks=(unblock,)))
    ami = FakeAmi()
    control = CallControl(lambda: engine, ami)
    request = CallRequest("0905123456", datetime.now(UTC), endpoint="acme-101")
    decision = engine.decide(request)
    assert decision.allowed  # premium, unblocked until `expires`
    control.decided(request, decision, {"agi_uniqueid": "2.1",
                                        "agi_channel": "PJSIP/acme-101-2.1"})
    loop = asyncio.create_task(control.revoke_forever(asyncio.Event()))
    try:
        deadline = time.monotonic() + 10
        while not ami.hangups:
            assert time.monotonic() < deadline, "premium call not hung up at the expiry"
            await asyncio.sleep(0.02)
    finally:
        loop.cancel()
    [(_, at)] = ami.hangups
    assert expires.timestamp() <= at < expires.timestamp() + REVOKE_INTERVAL + 2.0


class CountingEngine(Engine):
    """The real engine, counting its decisions (how much work a revocation round does)."""

    decisions = 0

    def decide(self, request: CallRequest) -> Decision:
        self.decisions += 1
        return super().decide(request)


async def test_between_policy_changes_a_round_does_not_re_decide_every_call(
        make_engine, customer_factory, monkeypatch) -> None:
    engine = CountingEngine(make_engine(customer_factory()).snapshot)
    control = CallControl(lambda: engine, FakeAmi())
    for n in range(50):
        request = CallRequest("092101299", datetime.now(UTC), endpoint="acme-101")
        control.decided(request, engine.decide(request),
                        {"agi_uniqueid": f"3.{n}", "agi_channel": f"PJSIP/acme-101-{n}"})
    engine.decisions = 0
    assert await control.revoke_once(policy_changed=True) == 0
    assert engine.decisions == 50  # a policy change: every live call again
    for _ in range(3):  # rounds on the clock: no boundary ahead for acme, no decision
        assert await control.revoke_once(policy_changed=False) == 0
    assert engine.decisions == 50
    monkeypatch.setattr("callpolicy.live.control.FULL_RECHECK", 0.0)
    assert await control.revoke_once(policy_changed=False) == 0
    assert engine.decisions == 100  # the safety net: all of them at least every FULL_RECHECK


def test_next_change_is_the_first_boundary_ahead(customer_factory) -> None:
    now = datetime.now(UTC)
    soon, later = now + timedelta(minutes=5), now + timedelta(hours=1)
    past = now - timedelta(minutes=1)
    unblocks = (Unblock(1, UnblockKind.PREFIX, "+32905", expires_at=later),
                Unblock(2, UnblockKind.CATEGORY, "non_eu", expires_at=past),
                Unblock(3, UnblockKind.COUNTRY, "CH"))
    assert customer_factory().next_change(now) is None
    assert customer_factory(unblocks=unblocks).next_change(now) == later
    assert customer_factory(unblocks=unblocks, suspend_at=soon).next_change(now) == soon
    assert customer_factory(suspend_at=past).next_change(now) is None
    assert customer_factory(suspended=True, suspend_at=soon).next_change(now) is None
