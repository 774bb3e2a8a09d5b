"""Delivery from the outbox: one task per channel, oldest row first, a failed attempt paused
with capped exponential back-off (`backoff`); one channel down never holds up another.

A failing channel is one error line per episode (`alert_delivery_failed`) and one when it
works again (`alert_delivery_recovered`); its last error is in `callpolicy status`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from ..service.metrics import Metrics
from ..service.waiting import event_or_timeout
from .kinds import iso
from .outbox import Outbox, OutboxRow
from .senders import DeliveryError, Sender

log = structlog.get_logger("callpolicy.alerts")

RETRY_FIRST = 1.0  # s after the first failed attempt; doubles up to `[alerts] retry_max`
IDLE_CHECK = 5.0  # s: a channel with nothing pending looks again at least this often
BATCH = 20


def backoff(failures: int, cap: float, first: float = RETRY_FIRST) -> float:
    """The pause after `failures` consecutive failed attempts (>= 1)."""
    return min(cap, first * 2.0 ** min(max(failures, 1) - 1, 30))


@dataclass
class ChannelState:
    failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_delivered_at: float | None = None
    delivered: int = 0

    def as_status(self) -> dict[str, object]:
        return {"failing": self.failures > 0, "consecutive_failures": self.failures,
                "last_error": self.last_error,
                "last_error_at": iso(self.last_error_at) if self.last_error_at else None,
                "last_delivered_at": iso(self.last_delivered_at)
                if self.last_delivered_at else None,
                "delivered": self.delivered}


class Delivery:
    def __init__(self, outbox: Outbox, senders: Mapping[str, Sender], metrics: Metrics,
                 retry_max: float, clock: Callable[[], float] = time.time) -> None:
        self.outbox = outbox
        self.senders = senders
        self.metrics = metrics
        self.retry_max = retry_max
        self.clock = clock
        self.channels = {ref: ChannelState() for ref in senders}
        self._wake = {ref: asyncio.Event() for ref in senders}

    def wake(self) -> None:
        for event in self._wake.values():
            event.set()

    async def run(self) -> None:
        await asyncio.gather(*(self._run_channel(ref) for ref in self.senders))

    async def _run_channel(self, ref: str) -> None:
        wake = self._wake[ref]
        while True:
            wake.clear()
            try:
                pause = await self.deliver_pending(ref)
            except Exception as exc:  # the outbox file failing: retried, logged once
                pause = self._failed(ref, f"outbox: {type(exc).__name__}: {exc}", None)
            if pause is not None:
                await asyncio.sleep(pause)
                continue
            await event_or_timeout(wake, IDLE_CHECK)

    async def deliver_pending(self, ref: str) -> float | None:
        """Send the channel's pending rows, oldest first, until one fails: then the pause
        before the next attempt (None: nothing left)."""
        sender, state = self.senders[ref], self.channels[ref]
        while rows := await self.outbox.pending(ref, self.clock(), BATCH):
            for row in rows:
                try:
                    await sender.send(row.alert_id, row.payload)
                except DeliveryError as exc:
                    self.metrics.alert_failed(row.kind, ref)
                    if exc.content:  # this alert refused, not the channel: go on
                        await self._set_aside(ref, row, str(exc))
                        continue
                    await self.outbox.failed(row.id, str(exc))
                    return self._failed(ref, str(exc), row.kind)
                now = self.clock()
                await self.outbox.delivered(row.id, now)
                self.metrics.alert_delivered(row.kind, ref)
                if state.failures:
                    log.info("alert_delivery_recovered", channel=ref,
                             failed_attempts=state.failures)
                state.failures = 0
                state.last_delivered_at = now
                state.delivered += 1
                log.info("alert_delivered", channel=ref, kind=row.kind, alert_id=row.alert_id,
                         attempts=row.attempts + 1, waited_s=round(now - row.created, 1))
        return None

    async def _set_aside(self, ref: str, row: OutboxRow, error: str) -> None:
        """The receiver refused this alert's content: it alone waits (its own back-off,
        until delivered or expired); the channel's later alerts are not held up by it."""
        pause = backoff(row.attempts + 1, self.retry_max)
        await self.outbox.failed(row.id, error, not_before=self.clock() + pause)
        log.warning("alert_refused_by_receiver", channel=ref, kind=row.kind,
                    alert_id=row.alert_id, error=error, attempts=row.attempts + 1,
                    retry_in_s=round(pause, 1))

    def _failed(self, ref: str, error: str, kind: str | None) -> float:
        state = self.channels[ref]
        state.failures += 1
        state.last_error, state.last_error_at = error, self.clock()
        pause = backoff(state.failures, self.retry_max)
        if state.failures == 1:
            log.error("alert_delivery_failed", channel=ref, kind=kind, error=error,
                      retry="with back-off, up to every "
                            f"{self.retry_max:g} s, until delivered or expired")
        return pause
