"""/v1/overview: what the status page shows, as one JSON document (any token: `read`).

From the running daemon (its `[metrics] listen` address): its /status (AMI link, database,
change feed, cluster nodes with their heartbeats, live calls per customer, alerts when the
daemon has them) and the live calls per category from its /metrics. From the database: the
last refusals (call records with action `block`), with their reason and rule. Either part
can be unavailable (no daemon answering, database down): the overview then says why in that
part's `error` instead of failing as a whole, since a status page is read during an outage.
"""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from prometheus_client.parser import text_string_to_metric_families

from .. import ops
from ..ops.calls import Period, calls
from ..service.config import Settings
from ..service.logging import EpisodeLog
from ..service.status import StatusUnavailable, problems, status_url
from ..store import StoreError
from .auth import require_scope
from .deps import daemon_status
from .deps import problems as problem_responses
from .problems import DATABASE_UNAVAILABLE
from .strict_json import StrictJsonRoute
from .tokens import Token

__all__ = ["REFUSALS", "router"]

router = APIRouter(tags=["status page"], route_class=StrictJsonRoute)

Reader = Annotated[Token, Depends(require_scope("read"))]
REFUSALS = 20  # the last refusals shown
SCANNED_CALLS = 1000  # recent call records searched for them
REFUSAL_WINDOW = timedelta(days=1)
METRICS_TIMEOUT = 2.0  # s
_RECORD_FIELDS = ("started_at", "customer_id", "endpoint", "dialled", "destination",
                  "category", "reason", "rule", "source", "node")


def _metrics_url(settings: Settings) -> str:
    return status_url(settings.metrics_host, settings.metrics_port).removesuffix("/status") \
        + "/metrics"


def _live_by_category(url: str) -> dict[str, int]:
    """callpolicy_live_calls by category from the daemon's /metrics (blocking: a thread)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=METRICS_TIMEOUT) as response:
        text = response.read(10_000_000).decode("utf-8", "replace")
    return {sample.labels["category"]: int(sample.value)
            for family in text_string_to_metric_families(text)
            if family.name == "callpolicy_live_calls"
            for sample in family.samples if "category" in sample.labels}


def _nodes(status: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node with its links: the cluster's `nodes` table as the daemon last read it
    (PostgreSQL), else this one node; the links of this node from its own status."""
    cluster = status.get("cluster") or {}
    snapshot, ami = status["snapshot"], status["ami"]
    own = {"ami": ami["state"], "ami_since": ami.get("since"),
           "database": "ok" if snapshot.get("store_ok") else "down",
           "database_problem": snapshot.get("store_problem"),
           "change_feed": snapshot.get("change_feed"), "cluster_link": cluster.get("link"),
           "snapshot_age_s": snapshot.get("age_s"),
           "live_calls": status["live_calls"].get("up")}
    if not cluster.get("nodes"):
        return [{"node": cluster.get("node"), "this": True, "heartbeat_age_s": None,
                 "counted": True, **own}]
    rows = []
    for node in cluster["nodes"]:
        row = {"node": node["node"], "this": node["this"],
               "heartbeat_age_s": node.get("heartbeat_age_s"), "counted": node.get("counted"),
               "ami": "connected" if node.get("ami") else "down",
               "snapshot_age_s": node.get("snapshot_age_s"),
               "live_calls": node.get("live_calls")}
        rows.append({**own, **row} if node["this"] else row)
    return rows


async def _daemon(request: Request) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    try:
        status = await daemon_status(request)
    except StatusUnavailable as exc:
        return {"error": exc.public, "nodes": [], "live": None, "alerts": None}
    try:
        by_category: dict[str, int] | None = await asyncio.to_thread(
            _live_by_category, _metrics_url(settings))
    except (OSError, ValueError):
        by_category = None  # the status part still shows
    live = status["live_calls"]
    trouble = problems(status)
    return {"error": None, "published_at": status.get("published_at"),
            "node": (status.get("cluster") or {}).get("node"),
            "healthy": not trouble, "problems": trouble,
            "nodes": _nodes(status),
            "live": {"up": live.get("up"), "customers": live.get("customers"),
                     "by_customer": live.get("by_customer", {}),
                     "by_category": by_category},
            "alerts": status.get("alerts")}  # None: this daemon has no alerts section


async def _refusals(settings: Settings, episodes: EpisodeLog) -> dict[str, Any]:
    since = datetime.now(UTC) - REFUSAL_WINDOW
    try:
        async with await ops.open_store(settings, readonly=True) as store:
            records = await calls(store, None, Period(since=since), SCANNED_CALLS)
    except (ops.OpsError, StoreError) as exc:  # names the server's files: the log only
        episodes.failing("api_database_unavailable", str(exc), "error")
        return {"error": DATABASE_UNAVAILABLE, "calls": []}
    episodes.ok("api_database_unavailable", "api_database_available")
    refused = [r for r in reversed(records) if r.action == "block"][:REFUSALS]
    return {"error": None, "calls": [
        {name: (value.isoformat() if isinstance(value, datetime) else value)
         for name in _RECORD_FIELDS for value in (getattr(r, name),)} for r in refused]}


@router.get("/overview", response_model=dict[str, Any],
            responses=problem_responses(401, 403))
async def overview(token: Reader, request: Request) -> dict[str, Any]:
    """The status page's data: the nodes and their links (AMI, database, change feed,
    heartbeat), live calls per customer and per category, the last refusals (newest first)
    with their reason and rule, and the daemon's open alerts (null: it reports none). A
    part that cannot be read has its `error` set; the others are still given."""
    settings: Settings = request.app.state.settings
    episodes: EpisodeLog = request.app.state.episodes
    daemon, refusals = await asyncio.gather(_daemon(request), _refusals(settings, episodes))
    return {"generated_at": datetime.now(UTC).isoformat(), "daemon": daemon,
            "refusals": refusals}
