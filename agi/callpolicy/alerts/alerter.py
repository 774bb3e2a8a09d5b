"""The daemon's alerting: decisions, UserEvents and the daemon's state in; alerts logged
(`alert_raised`), counted, written to the outbox and delivered by background tasks.

The per-call cost is `note`'s test `worth_noting(decision)` (two attribute reads) and,
for an alert-worthy call only, one deque append (`note`); everything else runs every TICK
on the event loop, off the call's path, and the disk work in aiosqlite's thread."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from ..asterisk.variables import ENV_UNIQUEID
from ..policy import CallRequest, Decision
from ..service.config_file import ConfigError
from ..service.metrics import Metrics
from .aggregate import Aggregator, Condition, StateTracker
from .config import AlertSettings, Email, read_password, read_secret
from .delivery import Delivery
from .fallback_journal import might_hold, take
from .kinds import (
    RAISED,
    STATE_KINDS,
    Alert,
    encode,
    iso,
)
from .outbox import NewRow, OpenState, Outbox
from .recent import RecentAlerts
from .senders import EmailSender, Sender, WebhookSender
from .sources import (
    Noted,
    journal_full_occurrence,
    journal_occurrence,
    occurrences,
    user_event_occurrence,
    worth_noting,
)

log = structlog.get_logger("callpolicy.alerts")

TICK = 0.2  # s between two rounds of aggregation and condition checks
STATE_CONFIRM = 3.0  # s a condition must hold before it is raised (no alert for a blip)
QUEUE_MAX = 10_000  # alert-worthy decisions waiting for the next round; beyond: dropped
COUNT_EVERY = 1.0  # s: the outbox's pending rows are counted (for the status) this often
HOUSEKEEPING = 60.0  # s between expiry/purge rounds of the outbox
UNWRITTEN_MAX = 10_000  # outbox rows kept in memory while the outbox file fails

Conditions = Callable[[], tuple[list[Condition], set[str]]]
_LEVEL = {"critical": "error", "warning": "warning", "info": "info"}


class Alerter:
    def __init__(self, settings: AlertSettings, node: str, metrics: Metrics, outbox_path: Path,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.node = node
        self.metrics = metrics
        self.outbox_path = outbox_path
        self.clock = clock
        self.senders = senders_for(settings)  # a missing secret: ConfigError at start
        self.aggregator = Aggregator(lambda kind: self.settings.route(kind).window)
        self.states = StateTracker(STATE_CONFIRM)
        self.outbox: Outbox | None = None
        self.delivery: Delivery | None = None
        self.pending = 0  # outbox rows not yet delivered (as of the last round)
        self.dropped = 0  # alert-worthy decisions or outbox rows lost to a bound
        self._queue: deque[Noted] = deque()
        self._ready: list[Alert] = []
        self._unwritten: list[NewRow] = []
        self._states_unwritten: dict[str, OpenState | None] = {}  # alert id -> open / resolved
        self._restored = False  # the open state alerts of the last run are tracked
        self._recent = RecentAlerts()
        self._outbox_failing = False
        self._housekept = 0.0
        self._counted_at = 0.0  # when `pending` was last read from the outbox
        self.conditions: Conditions = lambda: ([], set())  # the state kinds' sources
        self.journal: Path | None = None  # the fallback AGI's journal, taken every round
        self._journal_failing = False
        self._delivering: asyncio.Task[None] | None = None
        self._retired: list[Sender] = []  # replaced by a SIGHUP, closed once unused
        self._closing = False

    # -- the per-call path -----------------------------------------------------------------
    def note(self, decision: Decision, request: CallRequest, env: dict[str, str]) -> None:
        """A decided call: queued, O(1), when it is alert-worthy (`worth_noting`)."""
        if not worth_noting(decision):
            return
        if len(self._queue) >= QUEUE_MAX:
            self.dropped += 1
            self.metrics.alerts_dropped_add(1)
            return
        self._queue.append(Noted(decision, request.endpoint, request.source_ip,
                                 env.get(ENV_UNIQUEID, ""), self.clock()))

    def on_user_event(self, event: dict[str, str]) -> None:
        occurrence = user_event_occurrence(event, self.clock())
        if occurrence is not None:
            self._ready.extend(self.aggregator.add(occurrence))

    # -- rounds ------------------------------------------------------------------------------
    async def open(self) -> None:
        try:
            self.outbox = await Outbox.open(self.outbox_path, self.settings.outbox_max_rows)
            self.pending = await self.outbox.pending_count()
        except Exception as exc:  # alerts are still logged and counted; retried per round
            self._outbox_failed(exc)
            return
        await self._restore()
        self.metrics.set_alerts_pending(self.pending)
        if self.delivery is None:
            self.delivery = Delivery(self.outbox, self.senders, self.metrics,
                                     self.settings.retry_max, self.clock)
        log.info("alerts_ready", channels=list(self.senders), outbox=str(self.outbox_path),
                 pending=self.pending)

    async def _restore(self) -> None:
        """The state alerts the last run raised and did not resolve: kept under their ids
        (resolved by the next rounds if their condition no longer holds). Once."""
        if self._restored or self.outbox is None:
            return
        try:
            stored = await self.outbox.open_states()
        except Exception as exc:  # retried next round
            self._outbox_failed(exc)
            return
        self._restored = True
        now = self.clock()
        known = [Alert(s.alert_id, s.kind, s.key, RAISED, 1, s.since, s.since, 0.0, s.details)
                 for s in stored if s.kind in STATE_KINDS]
        self._ready.extend(self.states.restore(now, known))
        if known:
            log.info("alerts_restored", open=[f"{a.kind}:{a.key}" for a in known])

    async def run(self) -> None:
        """Rounds every TICK, and the delivery tasks, until cancelled; then `close`."""
        await self.open()
        self._delivering = asyncio.create_task(self._deliver())
        try:
            failing = False
            while True:
                try:
                    await self.round()
                    failing = False
                except Exception:  # a bug must not end alerting for good: logged once
                    if not failing:
                        log.exception("alerts_round_failed")
                    failing = True
                await asyncio.sleep(TICK)
        finally:
            self._closing = True  # a SIGHUP from now on changes nothing
            delivering, self._delivering = self._delivering, None
            await _cancelled(delivering)
            await self.close()

    async def _deliver(self, replaced: asyncio.Task[None] | None = None) -> None:
        """The current Delivery's tasks, once the one they replace (SIGHUP) has stopped
        and the senders it used are closed."""
        try:
            await _cancelled(replaced)
        finally:
            await self._close_retired()
        while self.delivery is None:  # the outbox could not be opened yet
            await asyncio.sleep(1.0)
        await self.delivery.run()

    def reconfigure(self, settings: AlertSettings, outbox: Path) -> None:
        """SIGHUP: these channels, routes, windows and limits from now on. A row queued for
        a channel that is gone stays in the outbox until it expires (`give_up_after`); a
        new outbox path needs a restart. A webhook's secret missing: logged, nothing
        changed."""
        if self._closing:
            return
        try:
            senders = senders_for(settings)
        except ConfigError as exc:
            log.error("config_reload_failed", error=str(exc), kept="the alert channels in use")
            return
        old = self.senders
        self._retired += old.values()
        if outbox != self.outbox_path:
            log.warning("config_reload_partial", detail="[alerts] outbox needs a restart; "
                        "kept the old one", outbox=str(self.outbox_path))
        self.settings, self.senders = settings, senders
        if self.outbox is not None:
            self.outbox.max_rows = settings.outbox_max_rows
        if self.delivery is not None:
            assert self.outbox is not None
            previous, self.delivery = self.delivery, Delivery(
                self.outbox, senders, self.metrics, settings.retry_max, self.clock)
            self.delivery.channels.update(  # back-off and status of the channels kept
                (ref, state) for ref, state in previous.channels.items() if ref in senders)
        if self._delivering is not None:  # run() is running: its delivery task is replaced
            self._delivering = asyncio.create_task(self._deliver(self._delivering))
        log.info("alerts_reconfigured", channels=list(senders),
                 removed=sorted(set(old) - set(senders)))

    def _take_noted(self) -> list[Alert]:
        alerts, self._ready = self._ready, []
        while self._queue:
            for occurrence in occurrences(self._queue.popleft()):
                alerts += self.aggregator.add(occurrence)
        return alerts

    async def _take_journal(self, now: float) -> None:
        """The fallback AGI's decisions (fallback_journal.py), read in a thread."""
        if self.journal is None or not might_hold(self.journal):
            return
        try:
            taken = await asyncio.to_thread(take, self.journal)
        except OSError as exc:
            if not self._journal_failing:
                log.error("fallback_journal_failed", journal=str(self.journal),
                          error=f"{type(exc).__name__}: {exc}",
                          meanwhile="fallback decisions not alerted, retried every round")
            self._journal_failing = True
            return
        if self._journal_failing:
            log.info("fallback_journal_recovered", journal=str(self.journal))
            self._journal_failing = False
        occurrences_ = [journal_occurrence(e, now) for e in taken.entries]
        if taken.full:
            log.error("fallback_journal_full", journal=str(self.journal),
                      taken=len(taken.entries))
            occurrences_.append(journal_full_occurrence(now))
        if taken.unreadable:
            log.warning("fallback_journal_unreadable", journal=str(self.journal),
                        lines=taken.unreadable)
        for occurrence in sorted(occurrences_, key=lambda o: o.at):
            self._ready.extend(self.aggregator.add(occurrence))

    async def round(self) -> None:
        now = self.clock()
        await self._take_journal(now)
        await self._restore()
        alerts = self._take_noted() + self.aggregator.due(now)
        holding, covered = self.conditions()
        alerts += self.states.observe(now, holding, covered)
        await self.raise_alerts(alerts, now)
        if now - self._housekept >= HOUSEKEEPING and self.outbox is not None:
            self._housekept = now
            await self._housekeeping(now)

    async def raise_alerts(self, alerts: list[Alert], now: float) -> None:
        for alert in alerts:
            self._raised(alert, now)
        if self.outbox is None and self.senders:
            await self.open()
        if self.outbox is None:
            self._keep_unwritten()
            return
        if (not self._unwritten and not self._states_unwritten
                and now - self._counted_at < COUNT_EVERY):
            return
        try:
            dropped = await self.outbox.add(self._unwritten, now, self._states_unwritten)
            self._unwritten, self._states_unwritten = [], {}
            self.pending = await self.outbox.pending_count()
            self._counted_at = now
        except Exception as exc:
            self._outbox_failed(exc)
            self._keep_unwritten()
            return
        if self._outbox_failing:
            log.info("alert_outbox_recovered", outbox=str(self.outbox_path))
            self._outbox_failing = False
        if dropped:
            self.dropped += len(dropped)
            self.metrics.alerts_dropped_add(len(dropped))
            log.error("alert_outbox_full", dropped=len(dropped), kinds=sorted(set(dropped)),
                      max_rows=self.settings.outbox_max_rows)
        self.metrics.set_alerts_pending(self.pending)
        if self.delivery is not None and alerts:
            self.delivery.wake()

    def _raised(self, alert: Alert, now: float) -> None:
        route = self.settings.route(alert.kind)
        payload = alert.payload(self.node)
        getattr(log, _LEVEL[alert.severity])(
            "alert_raised", kind=alert.kind, status=alert.status, severity=alert.severity,
            key=alert.key, count=alert.count, summary=payload["summary"], alert_id=alert.id,
            to=list(route.to), details=payload["details"])
        self.metrics.alert_raised(alert.kind, alert.status)
        self._recent.remember(alert, payload, now)
        body = encode(payload)
        self._unwritten += [NewRow(alert.id, alert.kind, ref, body) for ref in route.to]
        if alert.kind in STATE_KINDS:
            self._note_state(alert)

    def _note_state(self, alert: Alert) -> None:
        """A state alert raised / resolved: its row in the outbox file's open_states."""
        if alert.status == RAISED:
            self._states_unwritten[alert.id] = OpenState(alert.kind, alert.key, alert.id,
                                                         alert.first_seen, alert.details)
            return
        raised_id = str(alert.details.get("raised_id"))
        if self._states_unwritten.pop(raised_id, None) is None:  # else: never written
            self._states_unwritten[raised_id] = None

    def _keep_unwritten(self) -> None:
        excess = len(self._unwritten) - UNWRITTEN_MAX
        if excess > 0:
            del self._unwritten[:excess]
            self.dropped += excess
            self.metrics.alerts_dropped_add(excess)

    def _outbox_failed(self, exc: BaseException) -> None:
        if not self._outbox_failing:
            log.error("alert_outbox_failed", outbox=str(self.outbox_path),
                      error=f"{type(exc).__name__}: {exc}",
                      meanwhile="alerts logged and kept in memory, retried every round")
        self._outbox_failing = True

    async def _housekeeping(self, now: float) -> None:
        assert self.outbox is not None
        try:
            expired = await self.outbox.expire(now, self.settings.give_up_after)
            await self.outbox.purge(now)
        except Exception as exc:
            self._outbox_failed(exc)
            return
        for kind, channel in expired:
            self.metrics.alert_expired(kind, channel)
        if expired:
            log.error("alerts_expired", count=len(expired),
                      channels=sorted({c for _, c in expired}),
                      undelivered_for_s=self.settings.give_up_after)

    async def close(self) -> None:
        """At shutdown: open aggregation windows go to the outbox now (not lost)."""
        with contextlib.suppress(Exception):
            await self.raise_alerts(self._take_noted() + self.aggregator.flush(), self.clock())
        await self._close_retired()
        for sender in self.senders.values():
            with contextlib.suppress(Exception):
                await sender.close()
        if self.outbox is not None:
            with contextlib.suppress(Exception):
                await self.outbox.close()

    async def _close_retired(self) -> None:
        retired, self._retired = self._retired, []
        for sender in retired:
            with contextlib.suppress(Exception):
                await sender.close()

    # -- status ------------------------------------------------------------------------------
    def status(self, now: float) -> dict[str, Any]:
        """The `alerts` section of /status: open state alerts, event alerts of the last
        hour (with counts), the outbox's pending rows, each channel's delivery state."""
        open_states = [{"kind": a.kind, "key": a.key, "status": "open", "severity": a.severity,
                        "since": iso(a.first_seen), "summary": a.summary(),
                        "details": dict(a.details)} for a in self.states.open()]
        recent = self._recent.listed(now)
        return {
            "open": open_states + recent[::-1],
            "outbox_pending": self.pending,
            "outbox": str(self.outbox_path),
            "outbox_ok": self.outbox is not None and not self._outbox_failing,
            "dropped": self.dropped,
            "channels": {ref: state.as_status() for ref, state in
                         (self.delivery.channels.items() if self.delivery else ())},
        }



def senders_for(settings: AlertSettings) -> dict[str, Sender]:
    """A sender per configured channel (ConfigError: a secret or a CA file is missing)."""
    return {ref: EmailSender(ch, read_password(ch)) if isinstance(ch, Email)
            else WebhookSender(ch, read_secret(ch)) for ref, ch in settings.channels.items()}


async def _cancelled(task: asyncio.Task[None] | None) -> None:
    """`task` cancelled and ended. Not `await task` under suppress(CancelledError): that
    would also swallow a cancellation of the caller itself while it waits."""
    if task is not None:
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.error("alert_delivery_ended", error=repr(task.exception()))


__all__ = ["Alerter", "senders_for"]
