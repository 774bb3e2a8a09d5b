"""Live-call control: the live table, AMI events, revocation hang-ups, call records.

- Each decision (daemon) adds the allowed external call to the live table (the fraud guard
  counts it at once) and opens a call record; refused calls are recorded at once, 0 s.
- AMI Newstate(Up) answers, Hangup ends (art. 4.3: billable = answer to hang-up, by the second).
- Every 250 ms, and right after each policy change, every live call is decided again under the
  current policy; one the policy now refuses is hung up over AMI, with a log line naming the
  call, the customer and the rule. Must-reach calls are never hung up (the policy allows them).
  A round's hang-ups go out together (pipelined, AmiLink bounds how many wait at once): 200
  calls of a suspended customer end within the round, not one 2 s timeout after another.
- On each AMI login the table is rebuilt from ONE Status action listing every channel with
  its CP_ACTION and CP_REQUEST (daemon or Asterisk restart). Events that arrive while it runs
  are taken into account: a call that hangs up meanwhile is not put back, one decided
  meanwhile is not dropped.
- The fraud guard's concurrency limits (max_concurrent, max_concurrent_risky) are enforced
  only while the table can be trusted: AMI logged in and the table rebuilt since that login.
  Otherwise the engine gets "not known" counts and those limits do not refuse anyone (a
  paying customer is never refused on a count we cannot verify); calls are not put in the
  table while AMI is down (nothing could take them out again); per-minute limits still hold.
  Each such episode is one error line (`fraud_guard_degraded`), the metric
  callpolicy_fraud_guard_degraded, and `callpolicy status`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from ..asterisk.ami import AmiError, AmiLink, ChannelStatus
from ..asterisk.variables import (
    ACTION,
    ENFORCE_CONTEXT,
    ENV_CHANNEL,
    ENV_LINKEDID,
    ENV_UNIQUEID,
    FALLBACK_EVENT,
    LAST_RESORT_EVENT,
    REQUEST,
    AgiCall,
    safe_value,
)
from ..policy import CallRequest, Decision, Engine
from ..service.logging import RateLimitedLog
from ..service.metrics import Metrics
from ..service.waiting import event_or_timeout
from .live_request import with_live
from .livecalls import LiveCall, LiveCalls
from .pending import PendingRecords
from .records import CallRecord

if TYPE_CHECKING:
    from collections.abc import Callable

    from .cluster import OtherNodes

log = structlog.get_logger("callpolicy.control")

REVOKE_INTERVAL = 0.25
FULL_RECHECK = 5.0  # s: every live call re-decided at least this often, changes or not
NO_RECHECK = datetime.max.replace(tzinfo=UTC)
UP = "6"  # AST_STATE_UP
MAX_OPEN_RECORDS = 100_000  # calls whose record still waits for answer/hang-up
# A degraded fraud guard is logged once it lasts this long (the AMI login at start-up takes
# well under this); not configured at all is logged at once.
DEGRADED_LOG_AFTER = 1.0
RESYNC_RETRY = 5.0  # s between rebuild attempts after a failed one, while AMI stays up

#: why the concurrency limits cannot be enforced (fraud_guard_degraded's `reason`)
DEGRADED_REASONS = {
    "ami_unconfigured": "no AMI user configured ([ami] username, CALLPOLICY_AMI_SECRET): "
                        "live calls cannot be tracked",
    "ami_down": "AMI link down or login refused: live calls cannot be tracked",
    "ami_resync_pending": "AMI logged in, live-call table not yet rebuilt from Asterisk",
}
UNENFORCED_LIMITS = ("max_concurrent", "max_concurrent_risky")


def _now() -> datetime:
    return datetime.now(UTC)


class CallControl:
    def __init__(self, engine: Callable[[], Engine], ami: AmiLink,
                 metrics: Metrics | None = None) -> None:
        self._engine = engine
        self.ami = ami
        self.metrics = metrics or Metrics()
        self.live = LiveCalls()
        self.node: str | None = None  # `[cluster] node`: on each call record
        self.others: OtherNodes | None = None  # the other nodes' live calls (PostgreSQL)
        self.revoked = 0
        self._records = PendingRecords()  # record updates waiting for the writer
        self._open: dict[str, None] = {}  # uniqueids with an open record (insertion order)
        self._synced_login = 0  # the AMI login (AmiLink.logins) the table was rebuilt after
        self._resync_task: asyncio.Task[None] | None = None
        self._resync_tried_at = 0.0
        self._resyncs_running = 0
        self._revocation_pending: set[str] = set()  # logged once each, until AMI is back
        self._full_round_at = 0.0  # time.monotonic() of the last round that re-decided all
        self._limited = RateLimitedLog(log)  # AMI answering but timing out: not a loop
        self._rebuilds: list[_SeenDuringRebuild] = []  # rebuilds running now
        reason = self.guard_degraded_reason()
        self.degraded_since: float | None = time.time() if reason else None
        self._degraded_logged = False
        self.metrics.set_fraud_guard_degraded(reason is not None)
        ami.on("Newstate", self._newstate)
        ami.on("Hangup", self._hangup)
        ami.on("UserEvent", self._user_event)
        ami.on("Hangup", self._note_during_rebuild)
        ami.on("Newstate", self._note_during_rebuild)

    # -- the fraud guard's state ---------------------------------------------------------
    def guard_degraded_reason(self) -> str | None:
        """Why the concurrency limits cannot be enforced now (a DEGRADED_REASONS key), or
        None when the live table is exact."""
        if not self.ami.configured:
            return "ami_unconfigured"
        if not self.ami.connected:
            return "ami_down"
        if self._synced_login != self.ami.logins:
            return "ami_resync_pending"
        return None

    @property
    def concurrency_enforced(self) -> bool:
        return self.guard_degraded_reason() is None

    def watch_guard(self, now: float | None = None) -> None:
        """Log and export changes of the guard's state (called every revocation round)."""
        now = time.time() if now is None else now
        reason = self.guard_degraded_reason()
        if reason is None:
            if self.degraded_since is not None:
                if self._degraded_logged:
                    log.info("fraud_guard_restored", limits=list(UNENFORCED_LIMITS),
                             degraded_for_s=round(now - self.degraded_since, 1))
                self.degraded_since = None
                self._degraded_logged = False
                self.metrics.set_fraud_guard_degraded(False)
            return
        if self.degraded_since is None:
            self.degraded_since = now
            self.metrics.set_fraud_guard_degraded(True)
        if not self._degraded_logged and (reason == "ami_unconfigured"
                                          or now - self.degraded_since >= DEGRADED_LOG_AFTER):
            log.error("fraud_guard_degraded", reason=reason, detail=DEGRADED_REASONS[reason],
                      unenforced=list(UNENFORCED_LIMITS), still_enforced=["max_per_minute"],
                      since=datetime.fromtimestamp(self.degraded_since, UTC).isoformat())
            self._degraded_logged = True

    # -- per call ------------------------------------------------------------------------
    def with_live_counts(self, request: CallRequest) -> CallRequest:
        customer = self._engine().customer_of(request)
        if customer is None:
            return request
        counts = self.live.counts(customer, concurrency_known=self.concurrency_enforced)
        if self.others is not None:  # a cluster: the other nodes' calls count too
            counts = self.others.added_to(customer, counts)
        return with_live(request, counts)

    def decided(self, request: CallRequest, decision: Decision, env: dict[str, str],
                source: str = "daemon") -> None:
        uniqueid = env.get(ENV_UNIQUEID, "")
        for event in decision.events:
            if event.kind == "fraud_limit":
                self.metrics.fraud_limit_hit(str(event.detail.get("limit")))
        if not uniqueid:
            return
        now = _now()
        started = now.timestamp()
        if self.ami.connected:  # its Hangup will take it out again
            self.live.add(uniqueid, env.get(ENV_CHANNEL, ""), request, decision,
                          started=started)
        else:  # the next login's rebuild finds it if it is still up
            self.live.count_start(uniqueid, decision, started=started)
        record = CallRecord.from_decision(
            uniqueid, decision, started_at=now, linkedid=env.get(ENV_LINKEDID) or None,
            endpoint=request.endpoint, source=source, node=self.node)
        if decision.allowed:
            self._open[uniqueid] = None
            while len(self._open) > MAX_OPEN_RECORDS:  # AMI lost for very long: forget
                self._open.pop(next(iter(self._open)))
        else:  # refused: the record is complete, 0 billable seconds
            record.ended_at = now
        self._records.add(record)

    def _newstate(self, event: dict[str, str]) -> None:
        uniqueid = event.get("Uniqueid", "")
        if event.get("ChannelState") == UP and uniqueid in self._open:
            self.live.answer(uniqueid)
            self._records.answered(uniqueid, _now())

    def _hangup(self, event: dict[str, str]) -> None:
        uniqueid = event.get("Uniqueid", "")
        self.live.end(uniqueid)
        if uniqueid in self._open:
            del self._open[uniqueid]
            cause = event.get("Cause", "")
            self._records.ended(uniqueid, _now(), int(cause) if cause.isdigit() else None)

    def _user_event(self, event: dict[str, str]) -> None:
        if event.get("UserEvent") in (FALLBACK_EVENT, LAST_RESORT_EVENT):
            self.metrics.count_fallback_decision()

    @property
    def pending(self) -> list[CallRecord]:
        """The record updates waiting for the writer, one per call (pending.py)."""
        return self._records.peek()

    def take_pending(self) -> list[CallRecord]:
        return self._records.take()

    # -- revocation ----------------------------------------------------------------------
    async def revoke_forever(self, changed: asyncio.Event) -> None:
        failing = False
        while True:
            policy_changed = await event_or_timeout(changed, REVOKE_INTERVAL)
            changed.clear()
            try:
                await self.revoke_once(policy_changed)
                self.metrics.set_live_calls(self.live.by_category())
                self._retry_resync()
                self.watch_guard()
            except Exception:  # a bug must not end revocation for good: log once, go on
                if not failing:
                    log.exception("revocation_round_failed")
                failing = True
            else:
                if failing:
                    log.info("revocation_round_recovered")
                failing = False

    @property
    def revocations_pending(self) -> int:
        """Calls the policy refuses that are still up (AMI down: they cannot be hung up)."""
        return len(self._revocation_pending)

    async def revoke_once(self, policy_changed: bool = True) -> int:
        """Re-decide live calls (unless the policy changed, those at a time boundary only)."""
        engine = self._engine()
        now = datetime.now(UTC)
        if policy_changed or time.monotonic() - self._full_round_at >= FULL_RECHECK:
            policy_changed, self._full_round_at = True, time.monotonic()
        refused: list[tuple[LiveCall, Decision]] = []
        self._revocation_pending.intersection_update(self.live.calls)
        for i, call in enumerate(list(self.live.calls.values())):
            if i % 500 == 499:
                await asyncio.sleep(0)  # thousands of calls up: not one long block of the loop
            if call.hung_up or call.uniqueid not in self.live.calls or (
                    not policy_changed and (call.recheck_at or now) > now):
                continue
            decision = engine.decide(replace(call.request, now=now, live=None))
            if decision.allowed:
                customer = engine.snapshot.customers.get(call.customer_id)
                call.recheck_at = (customer and customer.next_change(now)) or NO_RECHECK
                self._revocation_pending.discard(call.uniqueid)
                continue
            call.recheck_at = None  # refused: every round until it is hung up
            if not self.ami.connected:
                if call.uniqueid not in self._revocation_pending:  # once per call, not per round
                    self._revocation_pending.add(call.uniqueid)
                    log.error("revocation_pending", uniqueid=call.uniqueid,
                              customer=call.customer_id, reason="AMI not connected: cannot "
                              "hang up (retried until AMI is back)", rule=decision.rule)
                continue
            self._revocation_pending.discard(call.uniqueid)
            call.hung_up = True
            log.warning("call_revoked", uniqueid=call.uniqueid, channel=call.channel,
                        customer=call.customer_id, destination=call.destination,
                        reason=decision.reason.value, rule=decision.rule,
                        up_for_s=round(time.time() - call.started, 1))
            refused.append((call, decision))
        if not refused:
            return 0
        done = await asyncio.gather(*(self._hang_up(call, decision)
                                      for call, decision in refused))
        return sum(done)

    async def _hang_up(self, call: LiveCall, decision: Decision) -> bool:
        try:
            await self.ami.hangup(call.channel)
        except AmiError as exc:
            call.hung_up = False  # try again on the next round
            self._limited("error", "revocation_hangup_failed", uniqueid=call.uniqueid,
                          error=str(exc))
            return False
        self.revoked += 1
        self.metrics.call_hung_up(decision.reason.value)
        return True

    # -- (re)connect ---------------------------------------------------------------------
    def _retry_resync(self) -> None:
        """A rebuild that failed (e.g. an AMI timeout) is retried while the link stays up:
        until one succeeds the concurrency limits are not enforced."""
        last_try = max(self.ami.since, self._resync_tried_at)
        if (self.ami.connected and self._synced_login != self.ami.logins
                and not self._resyncs_running and time.time() - last_try >= RESYNC_RETRY):
            self._resync_task = asyncio.create_task(self._resync_logged())

    async def _resync_logged(self) -> None:
        try:
            await self.resync()
        except Exception as exc:  # retried every RESYNC_RETRY s; the state is in `status`
            log.debug("ami_resync_retry_failed", error=f"{type(exc).__name__}: {exc}")

    async def resync(self) -> None:
        """Rebuild the live table from Asterisk's channels (after any AMI login). The
        concurrency limits are enforced again once this completes."""
        login = self.ami.logins
        self._resync_tried_at = time.time()
        self._resyncs_running += 1
        try:
            await self._rebuild()
        finally:
            self._resyncs_running -= 1
        self._synced_login = login

    def _note_during_rebuild(self, event: dict[str, str]) -> None:
        for seen in self._rebuilds:
            seen.note(event)

    async def _rebuild(self) -> None:
        began = time.monotonic()
        seen = _SeenDuringRebuild(set(self.live.calls), set(self._open))
        self._rebuilds.append(seen)
        try:
            channels = await self.ami.channels((ACTION, REQUEST))
            found = [c for c in channels if c.context == ENFORCE_CONTEXT
                     and c.variables[ACTION] == "allow"]
            requests = await self._requests_of(found)
        finally:
            self._rebuilds.remove(seen)
        # Calls decided while Status ran are not in its list: they are alive all the same.
        alive = {c.uniqueid for c in channels} | (set(self.live.calls) - seen.in_table)
        gone = self.live.reconcile(alive)
        for uniqueid in [u for u in self._open if u not in alive and u in seen.open]:
            del self._open[uniqueid]  # ended while we were away
            self._records.add(CallRecord(uniqueid, ended_at=_now()))
        added = 0
        engine = self._engine()
        now = time.time()
        for channel in found:
            uniqueid = channel.uniqueid
            if uniqueid in self.live.calls or uniqueid in seen.ended:
                continue
            request = AgiCall.from_args(requests[uniqueid].split(",")).request(
                datetime.now(UTC))
            decision = engine.decide(request)
            started = now - channel.seconds
            live = self.live.add(uniqueid, channel.name, request, decision, started=started)
            if live is None:
                continue
            added += 1
            self._open[uniqueid] = None
            if channel.state == UP:
                live.answered = started  # approximate: the exact time is in the record
            elif uniqueid in seen.answered:  # its Newstate came while Status ran
                live.answered = seen.answered[uniqueid].timestamp()
                self._records.add(CallRecord(uniqueid, answered_at=seen.answered[uniqueid]))
        log.info("live_table_rebuilt", channels=len(channels), added=added,
                 dropped=[safe_value(c.uniqueid) for c in gone], live=len(self.live.calls),
                 seconds=round(time.monotonic() - began, 3))

    async def _requests_of(self, channels: list[ChannelStatus]) -> dict[str, str]:
        """Each channel's CP_REQUEST; the few that Status may have cut are read again with
        Getvar (all at once)."""
        requests = {c.uniqueid: c.variables[REQUEST] for c in channels}
        cut = [c for c in channels if c.possibly_cut(REQUEST)]
        if cut:
            again = await asyncio.gather(*(self.ami.getvar(c.name, REQUEST) for c in cut))
            requests.update(zip((c.uniqueid for c in cut), again, strict=True))
        return requests


class _SeenDuringRebuild:
    """What AMI events said while a rebuild awaited Asterisk: the Status list is a snapshot
    taken before them. (in_table, open: the table's calls and open records before it.)"""

    def __init__(self, in_table: set[str], open_records: set[str]) -> None:
        self.in_table = in_table
        self.open = open_records
        self.ended: set[str] = set()
        self.answered: dict[str, datetime] = {}

    def note(self, event: dict[str, str]) -> None:
        uniqueid = event.get("Uniqueid", "")
        if event.get("Event") == "Hangup":
            self.ended.add(uniqueid)
        elif event.get("ChannelState") == UP:
            self.answered.setdefault(uniqueid, _now())


__all__ = ["CallControl", "LiveCall"]
