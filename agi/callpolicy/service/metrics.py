"""Prometheus metrics of the daemon, on their own registry, served on /metrics; the daemon's
status (`callpolicy status`) as JSON on /status of the same listener.

The registry is the Metrics object's own (not prometheus_client's global one), so tests and
several daemons in one process never share counters. `start(host, port)` serves both from a
background thread with its own event loop and a bounded number of connections
(http_server.py: a flood of HTTP clients cannot stall decisions); the update methods are
cheap (a lock and an add) and safe to call from the event loop on every decision. The status
is published by the event loop as one immutable bytes object that the HTTP thread only reads:
no state shared between the threads is ever mutated.

Labels are small fixed sets (a policy Action/Reason/Category value, a rule or limit name):
never a customer id, a number or a Decision.rule text, which would make a series per call.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from ..asterisk.agi_environment import BAD_PEER_REASONS
from ..asterisk.fastagi import BAD_PEER, EVICTED, REFUSED, SOURCE_ERROR
from ..policy import Category, Decision, Reason
from .http_server import HttpServer

#: seconds: from a few µs (an in-memory decision) to half a second (a daemon in trouble)
DECISION_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.5,
)
FRAUD_LIMITS = ("max_concurrent", "max_per_minute", "max_concurrent_risky")
_CATEGORIES = tuple(category.value for category in Category)


class Metrics:
    # long: every metric declared in one place, names and help texts read as one list
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.decisions = Counter(
            "callpolicy_decisions", "Calls decided, by outcome and by who decided",
            ("action", "reason", "source"), registry=r)
        self._decided: dict[tuple[str, str, str], Counter] = {}
        self.decision_seconds = Histogram(
            "callpolicy_decision_seconds", "Time to decide one call",
            buckets=DECISION_BUCKETS, registry=r)
        self.live_calls = Gauge(
            "callpolicy_live_calls", "Calls up now, by destination category", ("category",),
            registry=r)
        self.fail_safe = Counter(
            "callpolicy_fail_safe", "Fail-safe answers (must-reach passes, the rest 503)",
            registry=r)
        self.decision_errors = Counter(
            "callpolicy_decision_errors",
            "Calls the policy engine failed on (answered fail-safe, source error)", registry=r)
        self.call_records_spooled = Gauge(
            "callpolicy_call_records_spooled",
            "Call record updates in the spool file, waiting for the database", registry=r)
        self.call_records_rejected = Counter(
            "callpolicy_call_records_rejected",
            "Call record updates the database refused (kept in the spool as rejected)",
            registry=r)
        self.call_records_dropped = Counter(
            "callpolicy_call_records_dropped",
            "Call record updates lost: database, spool and memory bound all full", registry=r)
        self.fallback_decisions = Counter(
            "callpolicy_fallback_decisions",
            "Calls decided by the fallback AGI (the daemon did not answer)", registry=r)
        self.ami_connected = Gauge(
            "callpolicy_ami_connected", "1 while the AMI connection is up and logged in",
            registry=r)
        self.calls_hung_up = Counter(
            "callpolicy_calls_hung_up", "Live calls the daemon hung up, by rule", ("rule",),
            registry=r)
        self.fraud_limit = Counter(
            "callpolicy_fraud_limit", "Calls refused or hung up over a fraud limit",
            ("limit",), registry=r)
        self.fraud_guard_degraded = Gauge(
            "callpolicy_fraud_guard_degraded",
            "1 while the fraud guard's concurrent-call limits cannot be enforced (AMI link "
            "down or not configured); per-minute limits still hold", registry=r)
        self.agi_refused = Counter(
            "callpolicy_agi_refused",
            "FastAGI connections refused: every slot busy answering", registry=r)
        self.agi_evicted = Counter(
            "callpolicy_agi_evicted",
            "FastAGI connections dropped to make room: the oldest still sending its "
            "environment when all slots were taken", registry=r)
        self.agi_bad_peers = Counter(
            "callpolicy_agi_bad_peers",
            "FastAGI connections dropped before a decision: not a well-behaved Asterisk",
            ("reason",), registry=r)
        self.store_ok = Gauge(
            "callpolicy_store_ok",
            "1 while the database reads and passes its checks; 0: decisions come from the last "
            "good snapshot (see callpolicy_snapshot_age_seconds)", registry=r)
        self.snapshot_age = Gauge(
            "callpolicy_snapshot_age_seconds",
            "Seconds since the snapshot was last checked against the database", registry=r)
        self.alerts_raised = Counter(
            "callpolicy_alerts_raised", "Alerts raised (README: Alerts), by kind and status "
            "(raised / resolved)", ("kind", "status"), registry=r)
        self.alerts_delivered = Counter(
            "callpolicy_alerts_delivered", "Alert deliveries that succeeded, by kind and channel",
            ("kind", "channel"), registry=r)
        self.alerts_failed = Counter(
            "callpolicy_alerts_failed", "Alert delivery attempts that failed (retried with "
            "back-off), by kind and channel", ("kind", "channel"), registry=r)
        self.alerts_expired = Counter(
            "callpolicy_alerts_expired", "Alerts given up: undelivered for [alerts] "
            "give_up_after", ("kind", "channel"), registry=r)
        self.alerts_dropped = Counter(
            "callpolicy_alerts_dropped", "Alerts lost to a bound: the outbox full of pending "
            "ones, or alert-worthy calls beyond the queue", registry=r)
        self.alerts_pending = Gauge(
            "callpolicy_alerts_pending", "Alert deliveries waiting in the outbox", registry=r)
        self.store_ok.set(1)
        self.change_feed_connected: Gauge | None = None  # PostgreSQL only: see below
        self.cluster_gauges: tuple[Gauge, Gauge] | None = None  # PostgreSQL only
        # Series that exist from the start (0), so rate() and alerts see them before the
        # first event.
        for reason in BAD_PEER_REASONS:
            self.agi_bad_peers.labels(reason)
        for category in Category:
            self.live_calls.labels(category.value)
        for limit in FRAUD_LIMITS:
            self.fraud_limit.labels(limit)
        self.ami_connected.set(0)
        self._server: HttpServer | None = None
        self._status: bytes | None = None  # replaced whole by publish_status, never mutated

    # -- updates --------------------------------------------------------------------------

    def observe_decision(self, decision: Decision, source: str, seconds: float) -> None:
        """One call decided. `source`: who decided ("daemon", "error", "fallback"...);
        a fail-safe decision (Reason.FAIL_SAFE) also counts in callpolicy_fail_safe_total, and
        source "error" (the engine raised) in callpolicy_decision_errors_total."""
        key = (decision.action, decision.reason, source)
        child = self._decided.get(key)
        if child is None:  # labels() is ~2 µs a call: its children, kept (a few dozen)
            child = self._decided[key] = self.decisions.labels(
                decision.action.value, decision.reason.value, source)
        child.inc()
        self.decision_seconds.observe(seconds)
        if decision.reason is Reason.FAIL_SAFE:
            self.fail_safe.inc()
        if source == SOURCE_ERROR:
            self.decision_errors.inc()

    def agi_dropped(self, outcome: str, reason: str) -> None:
        """A FastAGI connection dropped without a decision (FastAgiServer's on_drop)."""
        if outcome == REFUSED:
            self.agi_refused.inc()
        elif outcome == EVICTED:
            self.agi_evicted.inc()
        elif outcome == BAD_PEER:
            self.agi_bad_peers.labels(reason if reason in BAD_PEER_REASONS else "other").inc()

    def set_call_records_spooled(self, count: int) -> None:
        self.call_records_spooled.set(count)

    def call_records_rejected_add(self, count: int) -> None:
        self.call_records_rejected.inc(count)

    def call_records_dropped_add(self, count: int) -> None:
        self.call_records_dropped.inc(count)

    def count_fallback_decision(self, count: int = 1) -> None:
        """Calls the fallback AGI decided (seen over AMI: it runs outside the daemon)."""
        self.fallback_decisions.inc(count)

    def set_live_calls(self, counts: Mapping[str, int]) -> None:
        """The live-call table by category (Category values); categories not named are 0."""
        counts = {str(category): count for category, count in counts.items()}
        for category in _CATEGORIES:
            self.live_calls.labels(category).set(counts.pop(category, 0))
        for category, count in counts.items():
            self.live_calls.labels(category).set(count)

    def set_ami_connected(self, connected: bool) -> None:
        self.ami_connected.set(1 if connected else 0)

    def set_change_feed_connected(self, connected: bool) -> None:
        """PostgreSQL's LISTEN connection: the series exists only on a daemon that has one."""
        if self.change_feed_connected is None:
            self.change_feed_connected = Gauge(
                "callpolicy_change_feed_connected",
                "1 while the daemon listens for committed changes (PostgreSQL LISTEN): they "
                "are live within milliseconds; 0: they arrive by the catch-up poll (0.5 s)",
                registry=self.registry)
        self.change_feed_connected.set(1 if connected else 0)

    def set_cluster(self, connected: bool, nodes_counted: int) -> None:
        """The cluster link (PostgreSQL only: the series exist only on such a daemon)."""
        if self.cluster_gauges is None:
            self.cluster_gauges = (
                Gauge("callpolicy_cluster_link_connected",
                      "1 while this node publishes its live calls and reads the other nodes' "
                      "(PostgreSQL); 0: only its own calls count once node_timeout passed",
                      registry=self.registry),
                Gauge("callpolicy_cluster_nodes_counted",
                      "Nodes whose live calls the fraud limits count (this one included): "
                      "a node whose heartbeat is older than node_timeout is not",
                      registry=self.registry))
        self.cluster_gauges[0].set(1 if connected else 0)
        self.cluster_gauges[1].set(nodes_counted + 1 if connected else 1)

    def set_store_ok(self, ok: bool) -> None:
        self.store_ok.set(1 if ok else 0)

    def track_snapshot_age(self, age: Callable[[], float]) -> None:
        """`age()` is read at each scrape (from the HTTP thread: it must only read)."""
        self.snapshot_age.set_function(age)

    def set_fraud_guard_degraded(self, degraded: bool) -> None:
        self.fraud_guard_degraded.set(1 if degraded else 0)

    def decision_counts(self) -> dict[tuple[str, str, str], int]:
        """Calls decided so far by (action, reason, source)."""
        return {(s.labels["action"], s.labels["reason"], s.labels["source"]): int(s.value)
                for family in self.decisions.collect() for s in family.samples
                if s.name.endswith("_total")}

    def alert_raised(self, kind: str, status: str) -> None:
        self.alerts_raised.labels(kind, status).inc()

    def alert_delivered(self, kind: str, channel: str) -> None:
        """`channel`: a configured channel ("webhook:ops"): a small set fixed by the config."""
        self.alerts_delivered.labels(kind, channel).inc()

    def alert_failed(self, kind: str, channel: str) -> None:
        self.alerts_failed.labels(kind, channel).inc()

    def alert_expired(self, kind: str, channel: str) -> None:
        self.alerts_expired.labels(kind, channel).inc()

    def alerts_dropped_add(self, count: int) -> None:
        self.alerts_dropped.inc(count)

    def set_alerts_pending(self, count: int) -> None:
        self.alerts_pending.set(count)

    def call_hung_up(self, rule: str) -> None:
        """The daemon hung up a live call; `rule` is a short fixed name ("fraud_limit",
        "suspended"...), never a Decision.rule text."""
        self.calls_hung_up.labels(str(rule)).inc()

    def fraud_limit_hit(self, limit: str) -> None:
        """A call refused or hung up over `limit` (max_concurrent, max_per_minute,
        max_concurrent_risky)."""
        self.fraud_limit.labels(str(limit)).inc()

    # -- exposition -----------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition, as /metrics serves it."""
        return generate_latest(self.registry)

    def publish_status(self, status: Mapping[str, Any]) -> None:
        """The daemon's status for /status (called from the event loop)."""
        self._status = json.dumps(status, sort_keys=True).encode()

    def _answer(self, path: str) -> tuple[str, str, bytes]:
        """The HTTP thread's answer for `path`: /status, else the metrics."""
        if path != "/status":
            return "200 OK", CONTENT_TYPE_LATEST, self.render()  # /metrics (any other path too)
        body = self._status  # one read of an immutable object
        if body is None:
            return "503 Service Unavailable", "application/json", b'{"error": "starting"}'
        return "200 OK", "application/json", body

    def start(self, host: str = "127.0.0.1", port: int = 9464) -> int:
        """Serve /metrics and /status on host:port from a daemon thread; returns the port
        (port 0: a free one). Raises OSError if the address cannot be bound."""
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        server = HttpServer(self._answer)
        port = server.start(host, port)
        self._server = server
        return port

    @property
    def port(self) -> int | None:
        return self._server.port if self._server is not None else None

    def stop(self) -> None:
        """Stop serving and free the port (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.stop()
