"""A scheduled suspension hangs up live calls at its time, without any database write first:
the revocation loop (live/control.py) re-decides live calls with the clock, and the snapshot's
Customer.suspend_at decides. Must-reach calls are never hung up. AMI is a stand-in here."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from callpolicy.asterisk.ami import AmiLink
from callpolicy.live.control import REVOKE_INTERVAL, CallControl
from callpolicy.policy import CallRequest, Engine
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
        deadline = time.monotonic() + 3
        while not ami.hangups:
            assert time.monotonic() < deadline, "national call not hung up"
            await asyncio.sleep(0.02)
        assert await control.revoke_once() == 0  # nothing else to hang up: 112 stays
    finally:
        loop.cancel()
    [(channel, at)] = ami.hangups
    assert channel == "PJSIP/acme-101-1.1"
    assert at >= due.timestamp()  # not before its time...
    assert at - due.timestamp() < REVOKE_INTERVAL + 0.25  # ...and within one revocation round
