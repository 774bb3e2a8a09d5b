"""CallControl and the fraud guard when the AMI link is not there (issue 9 point 2): the
concurrency limits never lock a customer out on a count nobody can verify, per-minute limits
still hold, and counts are exact again once AMI is back and the table is rebuilt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from callpolicy.asterisk.ami import AmiError, AmiLink, ChannelStatus
from callpolicy.asterisk.variables import ENFORCE_CONTEXT, encode_arg
from callpolicy.live.control import RESYNC_RETRY, CallControl
from callpolicy.policy import (
    CallRequest,
    Customer,
    Decision,
    Endpoint,
    Engine,
    FraudLimits,
    Snapshot,
    build_policy_config,
)
from callpolicy.service.config import AmiSettings


def make_engine(limits: FraudLimits, *, suspended: bool = False) -> Engine:
    config = replace(build_policy_config(), fraud_limits=limits)
    acme = Customer(id="acme", name="ACME", suspended=suspended, main_number="+3292101234",
                    numbers=frozenset({"+3292101234"}))
    return Engine(Snapshot(config, {"acme": acme}, {"acme-101": Endpoint("acme-101", "acme")},
                           {"+3292101234": "acme"}))


class AsteriskChannels(AmiLink):
    """A configured AMI link whose transport is a dict of the channels Asterisk has up (each
    allowed and in callpolicy-enforce, as the dialplan leaves them). The thing under test is
    CallControl, not the AMI protocol."""

    def __init__(self) -> None:
        super().__init__(AmiSettings(username="callpolicy", secret="test"))
        self.up: dict[str, str] = {}  # uniqueid -> dialled
        self.hung_up: list[str] = []
        self.failures = 0  # Status actions that time out


    def login(self) -> None:
        self.logins += 1
        self._set_connected(True)

    def drop(self) -> None:
        self._set_connected(False)

    async def channels(self, variables: Sequence[str] = ()) -> list[ChannelStatus]:
        if self.failures:
            self.failures -= 1
            raise AmiError("AMI Status timed out after 10.0s")
        return [ChannelStatus(uid, f"PJSIP/acme-101-{uid}", ENFORCE_CONTEXT, "6", 5.0,
                              {"CP_ACTION": "allow", "CP_REQUEST": self.request(uid)})
                for uid in self.up]

    def request(self, uid: str) -> str:
        return ",".join(("outbound", "acme-101", encode_arg(self.up[uid]), "", "0",
                         "192.0.2.10", ""))

    async def hangup(self, channel: str, cause: int = 21) -> bool:
        self.hung_up.append(channel)
        return True


def place(control: CallControl, uid: str, dialled: str = "092101299") -> Decision:
    """What the daemon does per call: counts in, decide, then `decided`."""
    request = CallRequest(dialled, datetime.now(UTC), endpoint="acme-101")
    decision = control._engine().decide(control.with_live_counts(request))
    control.decided(request, decision, {"agi_uniqueid": uid,
                                        "agi_channel": f"PJSIP/acme-101-{uid}"})
    return decision


def degraded_gauge(control: CallControl) -> float | None:
    return control.metrics.registry.get_sample_value("callpolicy_fraud_guard_degraded")


def test_without_ami_three_times_max_concurrent_calls_are_all_allowed() -> None:
    engine = make_engine(FraudLimits(max_concurrent=2, max_per_minute=100))
    control = CallControl(lambda: engine, AmiLink(AmiSettings()))
    reasons = [place(control, f"u{i}").reason.value for i in range(6)]
    assert reasons == ["allowed"] * 6
    assert control.live.calls == {}  # nothing enters a table nobody could empty
    counts = control.live.counts("acme", concurrency_known=control.concurrency_enforced)
    assert (counts.concurrent, counts.risky, counts.last_minute) == (None, None, 6)
    assert control.guard_degraded_reason() == "ami_unconfigured"
    assert degraded_gauge(control) == 1


def test_without_ami_the_per_minute_limit_still_refuses() -> None:
    engine = make_engine(FraudLimits(max_concurrent=1, max_per_minute=3))
    control = CallControl(lambda: engine, AmiLink(AmiSettings()))
    decisions = [place(control, f"u{i}") for i in range(5)]
    assert [d.reason.value for d in decisions] == ["allowed"] * 3 + ["fraud_limit"] * 2
    assert decisions[3].events[-1].detail["limit"] == "max_per_minute"
    assert place(control, "sos", "112").reason.value == "emergency"


async def test_counts_are_exact_again_after_login_and_rebuild() -> None:
    engine = make_engine(FraudLimits(max_concurrent=2, max_per_minute=100))
    ami = AsteriskChannels()
    control = CallControl(lambda: engine, ami)
    ami.login()
    await control.resync()
    assert control.concurrency_enforced
    ami.up["u0"] = "092101200"
    assert place(control, "u0").reason.value == "allowed"
    assert set(control.live.calls) == {"u0"}

    ami.drop()
    assert control.guard_degraded_reason() == "ami_down"
    del ami.up["u0"]  # hung up while AMI was down: its Hangup event is lost
    for uid in ("u1", "u2", "u3"):  # the old code refused u2: u0 + u1 = 2 "live"
        ami.up[uid] = "0921012" + uid[1:].zfill(2)
        assert place(control, uid).reason.value == "allowed", uid
    del ami.up["u3"]
    assert set(control.live.calls) == {"u0"}  # kept, reconciled at the next login

    ami.login()  # logged in, table not rebuilt yet: still not trusted
    assert control.guard_degraded_reason() == "ami_resync_pending"
    assert control.live.counts("acme", concurrency_known=control.concurrency_enforced
                               ).concurrent is None
    await control.resync()
    assert control.concurrency_enforced
    assert set(control.live.calls) == {"u1", "u2"}  # decided while down, still up: counted
    counts = control.live.counts("acme")
    assert (counts.concurrent, counts.last_minute) == (2, 4)  # no start counted twice
    refused = place(control, "u4")
    assert refused.reason.value == "fraud_limit"
    assert refused.events[-1].detail["limit"] == "max_concurrent"


def test_degraded_is_logged_once_per_episode_and_restored() -> None:
    engine = make_engine(FraudLimits(2, 100, 1))
    with capture_logs() as logs:
        unconfigured = CallControl(lambda: engine, AmiLink(AmiSettings()))
        for _ in range(10):
            unconfigured.watch_guard()
    degraded = [e for e in logs if e["event"] == "fraud_guard_degraded"]
    assert len(degraded) == 1
    assert (degraded[0]["log_level"], degraded[0]["reason"]) == ("error", "ami_unconfigured")

    ami = AsteriskChannels()
    control = CallControl(lambda: engine, ami)
    start = control.degraded_since
    assert start is not None and degraded_gauge(control) == 1
    with capture_logs() as logs:
        control.watch_guard(start + 0.5)  # the AMI login at start-up is no episode yet
        assert logs == []
        for _ in range(10):
            control.watch_guard(start + 1.5)
        ami.login()
        control.watch_guard(start + 1.6)  # logged in, not rebuilt: same episode
    assert [(e["event"], e["reason"]) for e in logs] == [("fraud_guard_degraded", "ami_down")]


async def test_restored_after_the_rebuild() -> None:
    ami = AsteriskChannels()
    engine = make_engine(FraudLimits(2, 100, 1))
    control = CallControl(lambda: engine, ami)
    assert control.degraded_since is not None
    with capture_logs() as logs:
        control.watch_guard(control.degraded_since + 2)
        ami.login()
        await control.resync()
        control.watch_guard()
        control.watch_guard()
    assert [(e["event"], e["log_level"]) for e in logs if "fraud_guard" in e["event"]] == [
        ("fraud_guard_degraded", "error"), ("fraud_guard_restored", "info")]
    assert degraded_gauge(control) == 0 and control.degraded_since is None


async def test_revocation_pending_is_logged_once_per_call_not_every_round() -> None:
    current = {"engine": make_engine(FraudLimits(10, 100, 2))}
    ami = AsteriskChannels()
    control = CallControl(lambda: current["engine"], ami)
    ami.login()
    await control.resync()
    ami.up["u1"] = "092101201"
    assert place(control, "u1").allowed
    ami.drop()
    current["engine"] = make_engine(FraudLimits(10, 100, 2), suspended=True)
    with capture_logs() as logs:
        for _ in range(40):  # 10 s of rounds at 250 ms
            assert await control.revoke_once() == 0
    assert [e["event"] for e in logs] == ["revocation_pending"]
    assert logs[0]["uniqueid"] == "u1" and control.revocations_pending == 1
    ami.login()
    with capture_logs() as logs:
        assert await control.revoke_once() == 1
    assert ami.hung_up == ["PJSIP/acme-101-u1"] and control.revocations_pending == 0
    assert [e["event"] for e in logs] == ["call_revoked"]


@pytest.mark.parametrize("known", [True, False])
def test_per_minute_window_is_pruned(known: bool) -> None:
    engine = make_engine(FraudLimits(10, 100, 2))
    control = CallControl(lambda: engine, AmiLink(AmiSettings()))
    for i in range(5):
        place(control, f"u{i}")
    later = datetime.now(UTC).timestamp() + 61
    assert control.live.counts("acme", later, concurrency_known=known).last_minute == 0
    assert control.live.customers(later) == set()
    assert len(control.live._starts) == 0 and not control.live._started_ids


async def test_a_failed_rebuild_is_retried_while_ami_stays_up() -> None:
    engine = make_engine(FraudLimits(2, 100, 1))
    ami = AsteriskChannels()
    control = CallControl(lambda: engine, ami)
    ami.up["u1"] = "092101201"
    ami.failures = 1
    ami.login()
    with pytest.raises(AmiError):
        await control.resync()  # the login's rebuild times out
    assert control.guard_degraded_reason() == "ami_resync_pending"
    control._retry_resync()  # too soon: nothing
    assert control._resync_task is None
    ami.since -= RESYNC_RETRY
    control._resync_tried_at -= RESYNC_RETRY
    control._retry_resync()
    assert control._resync_task is not None
    await control._resync_task
    assert control.concurrency_enforced and set(control.live.calls) == {"u1"}
