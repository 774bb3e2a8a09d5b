"""Live-call control: the live table, AMI events, revocation hang-ups, call records.

- Each decision (daemon) adds the allowed external call to the live table (the fraud guard
  counts it at once) and opens a call record; refused calls are recorded at once, 0 s.
- AMI Newstate(Up) answers, Hangup ends (art. 4.3: billable = answer to hang-up, by the second).
- Every 250 ms, and right after each policy change, every live call is decided again under the
  current policy; one the policy now refuses is hung up over AMI, with a log line naming the
  call, the customer and the rule. Must-reach calls are never hung up (the policy allows them).
- On each AMI login the table is rebuilt from CoreShowChannels (daemon or Asterisk restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from .ami import AmiError, AmiLink
from .livecalls import LiveCall, LiveCalls
from .metrics import Metrics
from .policy import CallRequest, Decision, Engine
from .records import CallRecord
from .variables import AgiCall, safe_value

if TYPE_CHECKING:
    from collections.abc import Callable

log = structlog.get_logger("callpolicy.control")

REVOKE_INTERVAL = 0.25
UP = "6"  # AST_STATE_UP
OUR_CONTEXT = "callpolicy-enforce"
MAX_OPEN_RECORDS = 100_000  # calls whose record still waits for answer/hang-up


def _now() -> datetime:
    return datetime.now(UTC)


class CallControl:
    def __init__(self, engine: Callable[[], Engine], ami: AmiLink,
                 metrics: Metrics | None = None) -> None:
        self._engine = engine
        self.ami = ami
        self.metrics = metrics or Metrics()
        self.live = LiveCalls()
        self.revoked = 0
        self.pending: list[CallRecord] = []  # record updates waiting for the writer
        self._open: dict[str, None] = {}  # uniqueids with an open record (insertion order)
        ami.on("Newstate", self._newstate)
        ami.on("Hangup", self._hangup)
        ami.on("UserEvent", self._user_event)

    # -- per call ------------------------------------------------------------------------
    def with_live_counts(self, request: CallRequest) -> CallRequest:
        customer = self._engine().customer_of(request)
        if customer is None:
            return request
        return replace(request, live=self.live.counts(customer))

    def decided(self, request: CallRequest, decision: Decision, env: dict[str, str],
                source: str = "daemon") -> None:
        uniqueid = env.get("agi_uniqueid", "")
        for event in decision.events:
            if event.kind == "fraud_limit":
                self.metrics.fraud_limit_hit(str(event.detail.get("limit")))
        if not uniqueid:
            return
        now = _now()
        self.live.add(uniqueid, env.get("agi_channel", ""), request, decision,
                      started=now.timestamp())
        record = CallRecord.from_decision(
            uniqueid, decision, started_at=now, linkedid=env.get("agi_linkedid") or None,
            endpoint=request.endpoint, source=source)
        if decision.allowed:
            self._open[uniqueid] = None
            while len(self._open) > MAX_OPEN_RECORDS:  # AMI lost for very long: forget
                self._open.pop(next(iter(self._open)))
        else:  # refused: the record is complete, 0 billable seconds
            record = record.merged(CallRecord(uniqueid, ended_at=now))
        self.pending.append(record)

    def _newstate(self, event: dict[str, str]) -> None:
        uniqueid = event.get("Uniqueid", "")
        if event.get("ChannelState") == UP and uniqueid in self._open:
            self.live.answer(uniqueid)
            self.pending.append(CallRecord(uniqueid, answered_at=_now()))

    def _hangup(self, event: dict[str, str]) -> None:
        uniqueid = event.get("Uniqueid", "")
        self.live.end(uniqueid)
        if uniqueid in self._open:
            del self._open[uniqueid]
            cause = event.get("Cause", "")
            self.pending.append(CallRecord(uniqueid, ended_at=_now(),
                                           hangup_cause=int(cause) if cause.isdigit() else None))

    def _user_event(self, event: dict[str, str]) -> None:
        if event.get("UserEvent") in ("CallpolicyFallback", "CallpolicyLastResort"):
            self.metrics.count_fallback_decision()

    def take_pending(self) -> list[CallRecord]:
        batch, self.pending = self.pending, []
        return batch

    # -- revocation ----------------------------------------------------------------------
    async def revoke_forever(self, changed: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), REVOKE_INTERVAL)
            changed.clear()
            await self.revoke_once()
            self.metrics.set_live_calls(self.live.by_category())

    async def revoke_once(self) -> int:
        engine = self._engine()
        now = datetime.now(UTC)
        hung_up = 0
        for call in list(self.live.calls.values()):
            if call.hung_up:
                continue
            decision = engine.decide(replace(call.request, now=now, live=None))
            if decision.allowed:
                continue
            if not self.ami.connected:
                log.error("revocation_pending", uniqueid=call.uniqueid, customer=call.customer_id,
                          reason="AMI not connected: cannot hang up", rule=decision.rule)
                continue
            call.hung_up = True
            log.warning("call_revoked", uniqueid=call.uniqueid, channel=call.channel,
                        customer=call.customer_id, destination=call.destination,
                        reason=decision.reason.value, rule=decision.rule,
                        up_for_s=round(time.time() - call.started, 1))
            try:
                await self.ami.hangup(call.channel)
                hung_up += 1
                self.revoked += 1
                self.metrics.call_hung_up(decision.reason.value)
            except AmiError as exc:
                call.hung_up = False  # try again on the next round
                log.error("revocation_hangup_failed", uniqueid=call.uniqueid, error=str(exc))
        return hung_up

    # -- (re)connect ---------------------------------------------------------------------
    async def resync(self) -> None:
        """Rebuild the live table from Asterisk's channels (after any AMI login)."""
        channels = await self.ami.channels()
        alive = {c.get("Uniqueid", "") for c in channels}
        gone = self.live.reconcile(alive)
        for uniqueid in [u for u in self._open if u not in alive]:  # ended while we were away
            del self._open[uniqueid]
            self.pending.append(CallRecord(uniqueid, ended_at=_now()))
        added = 0
        engine = self._engine()
        now = time.time()
        for channel in channels:
            uniqueid = channel.get("Uniqueid", "")
            if uniqueid in self.live.calls or channel.get("Context") != OUR_CONTEXT:
                continue
            name = channel.get("Channel", "")
            if await self.ami.getvar(name, "CP_ACTION") != "allow":
                continue
            args = (await self.ami.getvar(name, "CP_REQUEST")).split(",")
            call = AgiCall.from_args(args)
            request = CallRequest(
                dialled=call.dialled, now=datetime.now(UTC), endpoint=call.endpoint or None,
                source_ip=call.remote_addr or None, caller_id=call.caller_id or None,
                privacy=call.privacy, forwarded_from=call.forwarded_from or None)
            decision = engine.decide(request)
            started = now - _seconds(channel.get("Duration", ""))
            live = self.live.add(uniqueid, name, request, decision, started=started)
            if live is not None:
                added += 1
                self._open[uniqueid] = None
                if channel.get("ChannelState") == UP:
                    live.answered = started  # approximate: the exact time is in the record
        log.info("live_table_rebuilt", channels=len(channels), added=added,
                 dropped=[safe_value(c.uniqueid) for c in gone], live=len(self.live.calls))


def _seconds(duration: str) -> float:
    """CoreShowChannel's Duration 'HH:MM:SS' -> seconds (0 if unparseable)."""
    try:
        hours, minutes, seconds = (int(p) for p in duration.split(":"))
    except ValueError:
        return 0.0
    return hours * 3600 + minutes * 60 + seconds


__all__ = ["CallControl", "LiveCall"]
