"""`callpolicy serve`: the long-running daemon.

- Loads the snapshot first, then listens: while it cannot decide, Asterisk gets "connection
  refused" and uses the fallback AGI at once. Once listening, every decision is in memory.
- Brings its snapshot up to date from the audit log: on PostgreSQL when told of a commit
  (LISTEN/NOTIFY, store/postgres/changes.py), with a poll every 0.5 s that catches up after
  a lost notification; on SQLite (or `[store] listen = false`) by a poll every 0.25 s.
- Every second, writes scheduled suspensions that came due to the database (the decisions
  already follow them to the second: the snapshot holds each customer's `suspend_at`).
- SIGHUP re-reads the config file (policy lists, [alerts]); a bad file is logged and ignored.
- PostgreSQL: keeps a SQLite copy of the policy at `[store] path` for the fallback AGI, at
  most a few seconds behind (service/local_snapshot.py).
- Call records: written every 0.5 s by `RecordWriter` (spooled when the database cannot take them).
- SIGTERM/SIGINT: stop accepting, let in-flight answers finish, write the last records, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import structlog

from ..alerts.config import outbox_path
from ..alerts.daemon_alerts import daemon_alerter
from ..asterisk.ami import AmiLink
from ..asterisk.fastagi import FastAgiServer
from ..live.cluster import local_report, published_rows
from ..live.control import CallControl
from ..live.records_spool import CallSpool, spool_path
from ..live.records_writer import RecordWriter
from ..policy import CallRequest, Decision, Engine, Snapshot
from ..store import (
    Actor,
    SnapshotSource,
    StoreBackend,
    StoreError,
    file_identity,
    open_store,
)
from .config import ConfigError, Settings, load_settings
from .connection_slots import WANTED_OPEN_FILES, raise_open_files_limit
from .local_snapshot import LocalSnapshot
from .long_lived import long_lived
from .metrics import Metrics
from .status import publish_forever
from .waiting import event_or_timeout, within
from .watchdog import notify, ping_forever

if TYPE_CHECKING:
    from ..store.postgres.changes import ChangeFeed
    from ..store.postgres.cluster import ClusterLink

log = structlog.get_logger("callpolicy.daemon")

REFRESH_INTERVAL = 0.25  # s between polls of the audit log without a change feed
# s between polls with a feed: they only catch up on notices lost with the LISTEN connection,
# and keep a change live within 1 s (the bound) while it is down
CATCH_UP_INTERVAL = 0.5
REFRESH_TIMEOUT = 30.0  # s: a refresh that hangs (a server gone silent) is a store failure
RECORD_FLUSH_INTERVAL = 0.5
RELOAD_INTERVAL = 2.0  # s between attempts to reopen a database that failed
SCHEDULE_INTERVAL = 1.0  # only the database catches up: decisions follow suspend_at exactly


class PolicyService:
    """The daemon's state: settings, the store, the in-memory engine."""

    def __init__(self, settings: Settings, config_arg: str | None, db_arg: str | None) -> None:
        self.settings = settings
        self._config_arg = config_arg
        self._db_arg = db_arg
        self.engine: Engine | None = None
        self.store: StoreBackend | None = None
        self.source: SnapshotSource | None = None
        self.server: FastAgiServer | None = None
        # Answers fail-safe decisions from the config alone, before any snapshot exists.
        self._config_only = Engine(Snapshot(settings.policy))
        self.policy_changed = asyncio.Event()
        self.metrics = Metrics()
        self.ami = AmiLink(settings.ami, on_login=self._ami_login,
                           on_state=self.metrics.set_ami_connected)
        self.control = CallControl(lambda: self._current_engine(), self.ami, self.metrics)
        self.control.node = settings.node
        self.cluster: ClusterLink | None = None  # PostgreSQL: the other nodes' live calls
        # its own connection: record writes never hold up the snapshot refresh
        self.records = RecordWriter(settings.db, CallSpool(spool_path(settings.db_path)),
                                    self.metrics)
        self.started_at = time.time()
        self.snapshot_checked_at: float | None = None  # last successful load/refresh (status)
        self.store_problem: str | None = None  # why the database is not usable (None: it is)
        self.store_problem_since: float | None = None
        self.change_feed: ChangeFeed | None = None  # PostgreSQL's LISTEN connection
        self._changed = asyncio.Event()  # set by the change feed: refresh now
        # PostgreSQL: the SQLite copy at [store] path that the fallback AGI decides from
        self.local_snapshot = (LocalSnapshot(settings.db_url, settings.db_path)
                               if settings.db_url else None)
        self.metrics.track_snapshot_age(
            lambda: time.time() - (self.snapshot_checked_at or self.started_at))
        self.alerts = daemon_alerter(self)  # README: Alerts

    def start_cluster(self) -> list[asyncio.Task[None]]:
        """PostgreSQL: publish this node's live calls, count the other nodes' (a task)."""
        if not self.settings.db_url:
            return []
        from ..store.postgres.cluster import ClusterLink  # asyncpg: PostgreSQL only
        self.cluster = ClusterLink(
            self.settings.db_url, self.settings.node, self.settings.node_timeout,
            functools.partial(published_rows, self.control.live),
            lambda: local_report(self.control, self.snapshot_checked_at), self.metrics.set_cluster)
        self.control.others = self.cluster.view
        return [asyncio.create_task(self.cluster.run())]

    def _current_engine(self) -> Engine:
        return self.engine or self._config_only

    async def _ami_login(self) -> None:
        await self.control.resync()
        self.policy_changed.set()

    # called per call, synchronously: no I/O
    def decide(self, request: CallRequest) -> Decision:
        assert self.engine is not None
        return self.engine.decide(self.control.with_live_counts(request))

    def on_decision(self, decision: Decision, source: str, seconds: float,
                    request: CallRequest, env: dict[str, str]) -> None:
        self.metrics.observe_decision(decision, source, seconds)
        self.control.decided(request, decision, env, source)
        self.alerts.note(decision, request, env)  # O(1); most calls return at once

    async def write_records_forever(self, stop: asyncio.Event) -> None:
        """Call records to the database every 0.5 s (else the spool: RecordWriter), until
        `stop`. Never cancelled mid-round: a round cut short could write a batch twice."""
        while not stop.is_set():
            if await event_or_timeout(stop, RECORD_FLUSH_INTERVAL):
                return  # the last round is RecordWriter.close's, after the server stopped
            try:
                await self.records.flush(self.control.take_pending())
            except Exception:  # a bug: the taken records wait in the writer's backlog
                log.exception("call_records_flush_failed")

    async def purge_forever(self) -> None:
        """Art. 4.3 records are kept `[calls] retention_days`, then purged (daily)."""
        while True:
            cutoff = datetime.now(UTC) - timedelta(days=self.settings.calls_retention_days)
            try:
                async with await open_store(self.settings.db) as store:
                    count = await store.purge_calls(cutoff, Actor("callpolicy", "retention"))
                if count:
                    log.info("call_records_purged", count=count, older_than=cutoff.isoformat())
            except Exception as exc:
                log.error("call_records_purge_failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(86400)

    async def apply_schedules_forever(self) -> None:
        """Write scheduled suspensions that came due to the database (art. 5.7), so that
        `customer show`, billing and the audit log see them. Calls are refused from the due
        time on anyway: the snapshot's Customer.suspend_at decides. Its own connection,
        reopened after a failure."""
        failing = False
        store: StoreBackend | None = None
        identity = None
        try:
            while True:
                try:
                    if store is not None and file_identity(store.path) != identity:
                        await store.close()  # replaced: never write to the old, unlinked file
                        store = None
                    if store is None:
                        identity = self._file_identity()
                        store = await open_store(self.settings.db)
                    for customer in await store.apply_due_suspensions(datetime.now(UTC)):
                        log.info("scheduled_suspension_applied", customer=customer)
                    if failing:
                        log.info("scheduled_suspensions_recovered")
                    failing = False
                except Exception as exc:
                    if not failing:
                        log.error("scheduled_suspensions_failed",
                                  error=f"{type(exc).__name__}: {exc}")
                    failing = True
                    if store is not None:
                        with contextlib.suppress(Exception):
                            await store.close()
                        store = None
                await asyncio.sleep(SCHEDULE_INTERVAL)
        finally:
            if store is not None:
                with contextlib.suppress(Exception):
                    await store.close()

    def _file_identity(self) -> tuple[int, int] | None:
        """The SQLite file's identity (a replaced file is reopened); PostgreSQL: None."""
        return None if self.settings.db_url else file_identity(self.settings.db_path)

    def fail_safe(self, request: CallRequest, why: str) -> Decision:
        return self._config_only.fail_safe(request, why)

    async def load(self) -> None:
        self.store = await open_store(self.settings.db)
        self.source = SnapshotSource(self.store, self.settings.policy)
        snapshot = await long_lived(self.source.load())  # not walked by full GCs
        self.engine = Engine(snapshot, self._config_only.classifier)  # one set of caches
        self.snapshot_checked_at = time.time()
        log.info("snapshot_loaded", customers=len(snapshot.customers),
                 endpoints=len(snapshot.endpoints), db=str(self.settings.db))

    async def refresh_forever(self) -> None:
        """Bring the snapshot up to date when the change feed says something was committed
        (PostgreSQL), and at least every CATCH_UP_INTERVAL (without a feed: REFRESH_INTERVAL).
        Notifications that come during a refresh make one more. If the database fails (a
        query error, no answer, the file replaced or damaged), decisions go on from the last
        good snapshot, the episode is one error line (`store_unusable`), callpolicy_store_ok 0
        and `callpolicy status`; every RELOAD_INTERVAL (or at once when the feed is back) the
        database is reopened (integrity and schema checked) and, once it passes, loaded whole
        (`store_recovered`)."""
        assert self.source is not None
        feed = self._start_change_feed()
        interval = REFRESH_INTERVAL if feed is None else CATCH_UP_INTERVAL
        next_reload = 0.0
        try:
            while True:
                told = await self._next_round(interval)
                if self.store_problem is not None:
                    if told or time.monotonic() >= next_reload:
                        next_reload = time.monotonic() + RELOAD_INTERVAL
                        await self._reload()
                    continue
                try:
                    if await within(self.source.refresh(), REFRESH_TIMEOUT):
                        self._use(self.source.snapshot)
                    self.snapshot_checked_at = time.time()
                except Exception as exc:  # keep deciding on the last good snapshot
                    self._store_failed(exc)
                    next_reload = 0.0  # a replaced file: reload at once
        finally:
            if feed is not None:
                feed.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feed

    def _start_change_feed(self) -> asyncio.Task[None] | None:
        if not (self.settings.db_url and self.settings.db_listen):
            return None
        from ..store.postgres.changes import ChangeFeed  # asyncpg: PostgreSQL only
        self.change_feed = ChangeFeed(self.settings.db_url, self._changed.set,
                                      self.metrics.set_change_feed_connected)
        self.metrics.set_change_feed_connected(False)
        return asyncio.create_task(self.change_feed.run())

    async def _next_round(self, interval: float) -> bool:
        """Wait for a change notice or `interval`; True if told of a change."""
        told = await event_or_timeout(self._changed, interval)
        self._changed.clear()  # before the refresh reads: a later notice makes another round
        return told

    def _use(self, snapshot: Snapshot) -> None:
        assert self.engine is not None
        self.engine = self.engine.with_snapshot(snapshot)
        self.policy_changed.set()
        if self.local_snapshot is not None:
            self.local_snapshot.changed()
        log.info("snapshot_refreshed", customers=len(snapshot.customers))

    def _store_failed(self, exc: BaseException) -> None:
        if isinstance(exc, TimeoutError):
            self.store_problem = f"no answer to a snapshot refresh within {REFRESH_TIMEOUT:g} s"
        else:
            self.store_problem = f"{type(exc).__name__}: {exc}" if not isinstance(
                exc, StoreError) else str(exc)
        self.store_problem_since = time.time()
        self.metrics.set_store_ok(False)
        log.error("store_unusable", error=self.store_problem, db=str(self.settings.db),
                  kept="the last good snapshot", audit_high_water=self.source.high_water
                  if self.source is not None else None)

    async def _reload(self) -> None:
        """Reopen the database and load it whole; on success it replaces the old one."""
        try:
            store = await open_store(self.settings.db)
        except Exception as exc:
            self.store_problem = str(exc) if isinstance(exc, StoreError) else repr(exc)
            return
        source = SnapshotSource(store, self.settings.policy)
        try:
            snapshot = await long_lived(source.load())
        except Exception as exc:
            await store.close()
            self.store_problem = f"{type(exc).__name__}: {exc}"
            return
        old, self.store, self.source = self.store, store, source
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        self._use(snapshot)
        self.snapshot_checked_at = time.time()
        log.warning("store_recovered", db=str(self.settings.db),
                    customers=len(snapshot.customers), audit_high_water=source.high_water,
                    unusable_for_s=round(time.time() - (self.store_problem_since or 0), 1))
        self.store_problem = self.store_problem_since = None
        self.metrics.set_store_ok(True)

    def reload_config(self) -> None:
        try:
            settings = load_settings(self._config_arg)
        except ConfigError as exc:
            log.error("config_reload_failed", error=str(exc), kept=str(self.settings.path))
            return
        if self._db_arg:
            settings = settings.with_db(self._db_arg)
        if settings.db != self.settings.db or (
                (settings.agi_host, settings.agi_port)
                != (self.settings.agi_host, self.settings.agi_port)):
            log.warning("config_reload_partial",
                        detail="db path and listen address need a restart; kept the old ones")
            settings = replace(settings, db_path=self.settings.db_path,
                               db_url=self.settings.db_url,
                               agi_host=self.settings.agi_host, agi_port=self.settings.agi_port)
        self.settings = settings
        assert self.source is not None and self.engine is not None
        self.source.set_config(settings.policy)
        self._config_only.classifier.clear()  # frozen (long_lived.py): keep none of its entries
        self._config_only = Engine(Snapshot(settings.policy))
        self.engine = Engine(self.source.snapshot, self._config_only.classifier)
        self.policy_changed.set()
        self.alerts.reconfigure(settings.alerts, outbox_path(settings.alerts, settings.db_path))
        log.info("config_reloaded", path=str(settings.path),
                 premium_prefixes=list(settings.policy.premium_prefixes),
                 must_reach=sorted(settings.policy.must_reach))


async def serve(settings: Settings, config_arg: str | None = None,
                db_arg: str | None = None) -> int:
    for warning in settings.warnings:
        log.warning("config_warning", detail=warning)
    open_files = raise_open_files_limit()
    if open_files < WANTED_OPEN_FILES:
        log.warning("open_files_limit_low", soft_limit=open_files, wanted=WANTED_OPEN_FILES)
    service = PolicyService(settings, config_arg, db_arg)
    await service.load()
    server = FastAgiServer(service.decide, service.fail_safe, on_decision=service.on_decision,
                           on_drop=service.metrics.agi_dropped)
    service.server = server
    await server.start(settings.agi_host, settings.agi_port)
    log.info("listening", fastagi=f"{settings.agi_host}:{settings.agi_port}",
             loop=type(asyncio.get_running_loop()).__module__.partition(".")[0])

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    loop.add_signal_handler(signal.SIGHUP, service.reload_config)
    try:
        port = service.metrics.start(settings.metrics_host, settings.metrics_port)
        log.info("metrics", url=f"http://{settings.metrics_host}:{port}/metrics",
                 status=f"http://{settings.metrics_host}:{port}/status")
    except OSError as exc:  # metrics are not worth refusing calls for
        log.error("metrics_unavailable", error=str(exc))
    service.ami.start()
    background = [asyncio.create_task(service.refresh_forever()),
                  asyncio.create_task(ping_forever()), asyncio.create_task(service.alerts.run()),
                  asyncio.create_task(service.control.revoke_forever(service.policy_changed)),
                  asyncio.create_task(service.purge_forever()),
                  asyncio.create_task(publish_forever(service)),
                  asyncio.create_task(service.apply_schedules_forever()), *service.start_cluster()]
    if service.local_snapshot is not None:
        background.append(asyncio.create_task(service.local_snapshot.run_forever()))
    records = asyncio.create_task(service.write_records_forever(stopping))
    notify(b"READY=1")
    try:
        await stopping.wait()
    finally:
        log.info("stopping")
        notify(b"STOPPING=1")
        stopping.set()  # also when we got here by an exception: the record writer ends
        for task in background:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*background, return_exceptions=True)
        await server.stop()
        service.ami.stop()
        service.metrics.stop()
        try:  # the last records: to the database, else the spool
            await records  # its current round first
            await service.records.close(service.control.take_pending())
        except Exception:
            log.exception("call_records_flush_failed")
        if service.store is not None:
            await service.store.close()
        log.info("stopped", **server.stats)
    return 0
