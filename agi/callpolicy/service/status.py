"""`callpolicy status`: the running daemon's state, as it serves it on /status and as the CLI
shows it.

The daemon builds the status on its event loop every STATUS_INTERVAL and hands it to the
metrics HTTP thread as one immutable JSON document (Metrics.publish_status). The CLI fetches
it from `[metrics] listen`, prints it, and exits 0 when healthy, 3 when degraded (AMI link
down or not configured, so concurrent-call limits are not enforced; snapshot or status stale).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import structlog

from ..cli.text import clip, escaped
from ..live.control import DEGRADED_REASONS

if TYPE_CHECKING:
    from .daemon import PolicyService

log = structlog.get_logger("callpolicy.status")

STATUS_INTERVAL = 0.5  # s between two publications of the status
SNAPSHOT_STALE_AFTER = 5.0  # s without a successful snapshot refresh check: degraded
STATUS_STALE_AFTER = 5.0  # s since the last publication: the event loop is stuck
TOP_CUSTOMERS = 50  # customers listed with their live calls (the busiest first)
FETCH_TIMEOUT = 2.0
EXIT_DEGRADED = 3
CUSTOMER_WIDTH = 48  # a longer customer ID is cut in the table
STATUS_KEYS = frozenset({"published_at", "daemon", "ami", "fraud_guard", "snapshot",
                         "live_calls", "decisions"})


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _age(epoch: float | None, now: float) -> float | None:
    return None if epoch is None else round(max(0.0, now - epoch), 3)


def _ami_state(service: PolicyService) -> str:
    if not service.ami.configured:
        return "not_configured"
    return "connected" if service.ami.connected else "down"


def _change_feed(service: PolicyService) -> dict[str, Any]:
    """How changes reach the snapshot: `listening` (PostgreSQL LISTEN), `down` (its
    connection lost: the catch-up poll only), `poll` (SQLite, or `[store] listen = false`)."""
    feed = service.change_feed
    if feed is None:
        return {"change_feed": "poll", "change_feed_since": None}
    return {"change_feed": "listening" if feed.connected else "down",
            "change_feed_since": _iso(feed.since)}


def _live_calls(service: PolicyService, now: float) -> dict[str, Any]:
    control = service.control
    known = control.concurrency_enforced
    rows: dict[str, dict[str, Any]] = {}
    for customer in control.live.customers(now):
        counts = control.live.counts(customer, now, concurrency_known=known)
        rows[customer] = {"concurrent": counts.concurrent, "last_minute": counts.last_minute,
                          "risky": counts.risky}
    busiest = sorted(rows, key=lambda c: (-(rows[c]["concurrent"] or 0),
                                          -rows[c]["last_minute"], c))[:TOP_CUSTOMERS]
    return {"up": len(control.live.calls) if known else None,
            "started_last_minute": sum(r["last_minute"] for r in rows.values()),
            "customers": len(rows),
            "by_customer": {c: rows[c] for c in busiest}}


def _cluster(service: PolicyService, now: float) -> dict[str, Any]:
    """This node's id and, on PostgreSQL, every node of the `nodes` table as last read
    (live/cluster.py): its heartbeat, AMI link, snapshot age, live calls, whether counted."""
    node = service.settings.node
    link = service.cluster
    if link is None:
        return {"node": node, "link": None, "nodes": None}
    view = link.view
    lag = 0.0 if view.read_at_epoch is None else max(0.0, now - view.read_at_epoch)
    nodes = [{"node": n.node, "this": n.node == node,
              "heartbeat_at": _iso(now - n.heartbeat_age - lag),
              "heartbeat_age_s": round(n.heartbeat_age + lag, 3),
              "ami": n.ami, "snapshot_age_s": n.snapshot_age, "live_calls": n.live_calls,
              "counted": n.node == node or n.node in view.counted}
             for n in view.nodes]
    return {"node": node, "link": "connected" if link.connected else "down",
            "read_at": _iso(view.read_at_epoch), "node_timeout_s": view.timeout,
            "nodes": nodes}


def _decisions(service: PolicyService) -> dict[str, Any]:
    by_action: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    for (action, reason, source), count in service.metrics.decision_counts().items():
        by_action[action] += count
        by_reason[reason] += count
        by_source[source] += count
    return {"total": sum(by_action.values()), "by_action": dict(by_action),
            "by_reason": dict(by_reason), "by_source": dict(by_source)}


def build_status(service: PolicyService, now: float | None = None) -> dict[str, Any]:
    """The daemon's status as a JSON-able dict (on the event loop: reads live state)."""
    now = time.time() if now is None else now
    settings, control, ami = service.settings, service.control, service.ami
    reason = control.guard_degraded_reason()
    snapshot = service.engine.snapshot if service.engine is not None else None
    source = service.source
    status: dict[str, Any] = {
        "published_at": _iso(now),
        "daemon": {
            "pid": os.getpid(),
            "started_at": _iso(service.started_at),
            "uptime_s": _age(service.started_at, now),
            "fastagi": f"{settings.agi_host}:{settings.agi_port}",
            "server": dict(service.server.stats) if service.server is not None else {},
        },
        "ami": {
            "state": _ami_state(service),
            "address": f"{settings.ami.host}:{settings.ami.port}",
            "since": _iso(ami.since),
            "for_s": _age(ami.since, now),
            "logins": ami.logins,
        },
        "fraud_guard": {
            "concurrency_enforced": reason is None,
            "per_minute_enforced": True,
            "reason": reason,
            "detail": DEGRADED_REASONS.get(reason or ""),
            "degraded_since": _iso(control.degraded_since),
            "revocations_pending": control.revocations_pending,
        },
        "snapshot": {
            "customers": len(snapshot.customers) if snapshot is not None else 0,
            "endpoints": len(snapshot.endpoints) if snapshot is not None else 0,
            "audit_high_water": source.high_water if source is not None else None,
            "checked_at": _iso(service.snapshot_checked_at),
            "age_s": _age(service.snapshot_checked_at, now),
            "store_ok": service.store_problem is None,
            "store_problem": service.store_problem,
            "store_problem_since": _iso(service.store_problem_since),
            **_change_feed(service),
        },
        "live_calls": _live_calls(service, now),
        "decisions": _decisions(service),
        "cluster": _cluster(service, now),
        "alerts": service.alerts.status(now),
    }
    found = problems(status, now)
    status["healthy"] = not found
    status["problems"] = found
    return status


async def publish_forever(service: PolicyService) -> None:
    """Publish the status for /status every STATUS_INTERVAL (first one at once)."""
    failing = False
    while True:
        try:
            service.metrics.publish_status(build_status(service))
            failing = False
        except Exception as exc:  # the status is not worth stopping for; once per episode
            if not failing:
                log.error("status_publish_failed", error=f"{type(exc).__name__}: {exc}")
            failing = True
        await asyncio.sleep(STATUS_INTERVAL)


# -- reading it (the CLI) -------------------------------------------------------------------

def _epoch(iso: str | None) -> float | None:
    return None if not iso else datetime.fromisoformat(iso).timestamp()


STORE_PROBLEM_PUBLIC = "the database is unusable (the daemon's log says why)"


def public_status(status: dict[str, Any]) -> dict[str, Any]:
    """The status for an API client, without the server's paths: the database error (it names
    the files, in its driver's words) replaced by STORE_PROBLEM_PUBLIC, the alert outbox by its
    file name (`callpolicy status` on the host, and the daemon's log, say them whole)."""
    public = dict(status)
    snapshot = status.get("snapshot")
    if isinstance(snapshot, dict) and snapshot.get("store_problem"):
        public["snapshot"] = {**snapshot, "store_problem": STORE_PROBLEM_PUBLIC}
    alerts = status.get("alerts")
    if isinstance(alerts, dict) and isinstance(alerts.get("outbox"), str):
        public["alerts"] = {**alerts, "outbox": PurePath(alerts["outbox"]).name}
    return public


def problems(status: dict[str, Any], now: float | None = None) -> list[str]:
    """What makes this status degraded, as of `now` (the status may be a little old)."""
    now = time.time() if now is None else now
    lag = max(0.0, now - (_epoch(status.get("published_at")) or now))
    found = []
    ami = status["ami"]
    guard = status["fraud_guard"]
    if ami["state"] == "not_configured":
        found.append("AMI link not configured: concurrent-call limits not enforced")
    elif ami["state"] == "down":
        found.append(f"AMI link down since {_clock(ami['since'])}: concurrent-call limits "
                     "not enforced")
    elif not guard["concurrency_enforced"]:
        found.append(f"concurrent-call limits not enforced: {guard['detail']}")
    snapshot = status["snapshot"]
    if snapshot.get("store_problem"):
        found.append(f"database unusable since {_clock(snapshot.get('store_problem_since'))}: "
                     f"{snapshot['store_problem']}; deciding from the last good snapshot "
                     f"(audit high-water {snapshot.get('audit_high_water')})")
    if snapshot.get("change_feed") == "down":
        found.append(f"change feed (PostgreSQL LISTEN) down since "
                     f"{_clock(snapshot.get('change_feed_since'))}: changes arrive by the "
                     "catch-up poll (within about a second)")
    age = snapshot["age_s"]
    if age is None:
        found.append("no snapshot loaded")
    elif age + lag > SNAPSHOT_STALE_AFTER:
        found.append(f"snapshot not refreshed for {age + lag:.0f} s (store failing?)")
    cluster = status.get("cluster") or {}
    if cluster.get("link") == "down":
        found.append(f"cluster link (PostgreSQL) down: other nodes' live calls stop counting "
                     f"after {cluster.get('node_timeout_s')} s")
    if lag > STATUS_STALE_AFTER:
        found.append(f"status not updated for {lag:.0f} s (daemon event loop stuck?)")
    return found


def status_url(host: str, port: int) -> str:
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/status"


class StatusUnavailable(Exception):
    """The daemon could not be asked (one line, for the CLI). `public`: the same without the
    address asked, for an API client."""

    def __init__(self, message: str, public: str) -> None:
        super().__init__(message)
        self.public = public


def fetch(url: str, timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    try:
        # never through an http_proxy from the environment: the daemon is on this host
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=timeout) as response:
            body = response.read(10_000_000)
    except urllib.error.HTTPError as exc:
        why = "still starting" if exc.code == 503 else f"HTTP {exc.code} {exc.reason}"
        raise StatusUnavailable(f"daemon on {url} did not answer its status: {why}",
                                f"the daemon did not answer its status: {why}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, TimeoutError):
            why = f"no answer within {timeout:g} s"
        else:
            why = str(getattr(reason, "strerror", None) or reason)
        raise StatusUnavailable(f"no daemon answering on {url}: {why}",
                                f"no daemon answering: {why}") from exc
    try:
        status = json.loads(body)
        if not isinstance(status, dict) or not status.keys() >= STATUS_KEYS:
            raise ValueError("not a status object")
    except ValueError as exc:
        raise StatusUnavailable(f"{url} did not answer a callpolicy status "
                                "(another program on that port, or an older daemon?)",
                                "the daemon's status address did not answer a callpolicy "
                                "status") from exc
    return status


def _clock(iso: str | None) -> str:
    if not iso:
        return "?"
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h"),
             (seconds % 3600 // 60, "m"), (seconds % 60, "s")]
    shown = [f"{value}{unit}" for value, unit in parts if value]
    return " ".join(shown[:2]) or "0s"


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _render_cluster(cluster: dict[str, Any] | None, lag: float) -> list[str]:
    if not cluster:  # an older daemon
        return []
    if cluster.get("nodes") is None:
        return [f"node         {cluster['node']} (SQLite: one node)"]
    lines = [f"cluster      node {cluster['node']}, link {cluster['link']}, "
             f"{len(cluster['nodes'])} node(s)"]
    rows = [(clip(n["node"], CUSTOMER_WIDTH), n) for n in cluster["nodes"]]
    if rows:
        width = max(len("node"), *(len(name) for name, _ in rows))
        lines.append(f"  {'node':<{width}}  heartbeat  AMI             snapshot  live calls")
        for name, n in rows:
            counted = "" if n["counted"] else "  NOT COUNTED (heartbeat too old)"
            snapshot = "?" if n["snapshot_age_s"] is None else f"{n['snapshot_age_s']:.1f} s"
            lines.append(f"  {name:<{width}}  {n['heartbeat_age_s'] + lag:>7.1f} s  "
                         f"{n['ami']:<14}  {snapshot:>8}  {_count(n['live_calls']):>10}"
                         f"{' (this one)' if n['this'] else ''}{counted}")
    return lines


_FEED_TEXT = {"listening": "LISTEN/NOTIFY", "down": "poll (LISTEN DOWN)", "poll": "poll"}


def render(status: dict[str, Any], now: float | None = None) -> str:
    """A readable summary for an on-call engineer (every text escaped: it comes from the
    network and from stored names)."""
    now = time.time() if now is None else now
    status = escaped(status)
    lag = max(0.0, now - (_epoch(status.get("published_at")) or now))
    daemon, ami, guard = status["daemon"], status["ami"], status["fraud_guard"]
    snapshot, live, decisions = status["snapshot"], status["live_calls"], status["decisions"]
    ami_text = {"connected": "connected", "down": "DOWN",
                "not_configured": "NOT CONFIGURED"}.get(ami["state"], ami["state"])
    if guard["concurrency_enforced"]:
        guard_text = "all limits enforced"
    else:
        guard_text = (f"concurrent-call limits NOT ENFORCED since "
                      f"{_clock(guard['degraded_since'])} ({guard['detail']}); "
                      "per-minute limits enforced")
    if guard["revocations_pending"]:
        guard_text += (f"; {guard['revocations_pending']} refused call(s) still up, "
                       "hang-up pending")
    age = snapshot["age_s"]
    lines = [
        f"daemon       pid {daemon['pid']}, up {_duration(daemon['uptime_s'])}, "
        f"FastAGI {daemon['fastagi']} (status {lag:.1f} s old)",
        f"AMI link     {ami_text} ({ami['address']}) since {_clock(ami['since'])}, "
        f"{_duration((ami['for_s'] or 0) + lag)}",
        f"fraud guard  {guard_text}",
        f"snapshot     {snapshot['customers']} customers, audit high-water "
        f"{_count(snapshot['audit_high_water'])}, checked "
        f"{'never' if age is None else f'{age + lag:.1f} s ago'}, changes by "
        f"{_FEED_TEXT.get(snapshot.get('change_feed', 'poll'), '?')}",
        f"live calls   {_count(live['up'])} up, {live['started_last_minute']} started in the "
        f"last minute, {live['customers']} customer(s)",
    ]
    rows = [(clip(c, CUSTOMER_WIDTH), counts) for c, counts in live["by_customer"].items()]
    if rows:
        width = max(len("customer"), *(len(c) for c, _ in rows))
        lines.append(f"  {'customer':<{width}}  concurrent  last minute  risky")
        for customer, counts in rows:
            lines.append(f"  {customer:<{width}}  {_count(counts['concurrent']):>10}  "
                         f"{counts['last_minute']:>11}  {_count(counts['risky']):>5}")
        if live["customers"] > len(rows):
            lines.append(f"  … {live['customers'] - len(rows)} more")
    lines += _render_cluster(status.get("cluster"), lag)
    alerts = status.get("alerts")
    if alerts:  # an older daemon has none
        failing = [ref for ref, channel in alerts["channels"].items() if channel["failing"]]
        lines.append(f"alerts       {len(alerts['open'])} open or in the last hour, "
                     f"{alerts['outbox_pending']} waiting in the outbox"
                     + (f", delivery FAILING: {', '.join(failing)}" if failing else ""))
    by_reason = ", ".join(f"{reason} {count}" for reason, count
                          in sorted(decisions["by_reason"].items(), key=lambda i: -i[1]))
    lines.append(f"decisions    {decisions['total']}"
                 + (f" ({by_reason})" if by_reason else ""))
    found = problems(status, now)
    lines.append("health       " + ("OK" if not found else "DEGRADED: " + "; ".join(found)))
    return "\n".join(lines) + "\n"
