"""Cluster-wide live control on PostgreSQL: publish this node's live calls, read the others'.

One connection per daemon, one task (`ClusterLink.run`), never awaited by a decision:
- every PUBLISH_INTERVAL, this node's rows of `live_calls` are brought up to date (only what
  changed; all of them after a (re)connection) with its `nodes` row, and the other daemons are
  told on LIVE_CHANNEL (payload: the node id); with nothing new, the heartbeat alone is
  written every HEARTBEAT_INTERVAL;
- on a notification from another node, and every READ_INTERVAL anyway (heartbeats age, a
  notification can be lost), `nodes` and the others' `live_calls` are read whole into the
  in-memory view (live/cluster.py OtherNodes) that the decisions add to their own counts.

A lost connection is one warning per episode (`cluster_link_lost`), reopened with a growing
delay; meanwhile this node decides on its own counts plus the last view, which stops counting
once it is older than `[cluster] node_timeout` (`cluster_link_restored` when back)."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
import structlog

from ...live.cluster import NodeReport, NodeState, OtherNodes, PublishedCall, changes
from ...service.waiting import event_or_timeout, within
from ..model import StoreError
from ..url import redacted
from .schema import LIVE_CHANNEL
from .store import connect

log = structlog.get_logger("callpolicy.cluster")

APPLICATION_NAME = "callpolicy-cluster"
PUBLISH_INTERVAL = 0.1  # s between two publications of this node's live calls
HEARTBEAT_INTERVAL = 1.0  # s between two heartbeats when nothing else changed
READ_INTERVAL = 1.0  # s between two reads of the other nodes when nobody notified
OPERATION_TIMEOUT = 5.0  # s: a round that takes longer is a lost connection
RECONNECT_FIRST = 0.25
RECONNECT_MAX = 5.0
_LOST = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError, StoreError)

#: this node's rows of `live_calls` now, given those last published (live/cluster.py)
RowsSource = Callable[[Mapping[str, PublishedCall]], dict[str, PublishedCall]]

_UPSERT_CALL = """
INSERT INTO live_calls (node, uniqueid, customer_id, category, risky, up, started)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (node, uniqueid) DO UPDATE SET customer_id = excluded.customer_id,
    category = excluded.category, risky = excluded.risky, up = excluded.up,
    started = excluded.started
"""
_HEARTBEAT = """
INSERT INTO nodes (node, heartbeat, started_at, ami, snapshot_age, live_calls)
VALUES ($1, now(), to_timestamp($2), $3, $4, $5)
ON CONFLICT (node) DO UPDATE SET heartbeat = now(), started_at = excluded.started_at,
    ami = excluded.ami, snapshot_age = excluded.snapshot_age, live_calls = excluded.live_calls
"""
_READ_NODES = """
SELECT node, extract(epoch FROM now() - heartbeat)::float8 AS age, ami, snapshot_age,
       live_calls, extract(epoch FROM started_at)::float8 AS started_at
FROM nodes
"""
_READ_CALLS = """
SELECT node, customer_id, category, risky, up, started FROM live_calls WHERE node <> $1
"""


class ClusterLink:
    """This node in the cluster: publishes its live calls (`rows`) and state (`report`),
    keeps `view` current."""

    def __init__(self, url: str, node: str, timeout: float, rows: RowsSource,
                 report: Callable[[], NodeReport],
                 on_state: Callable[[bool, int], None] = lambda connected, counted: None
                 ) -> None:
        self.url = url
        self.node = node
        self.view = OtherNodes(node, timeout)
        self._rows = rows
        self._report = report
        self._on_state = on_state  # (connected, other nodes counted): the metrics
        self._conflict_logged = False
        self.connected = False
        self.started_at = time.time()
        self.published: dict[str, PublishedCall] = {}  # what the table holds of this node
        self.publications = 0
        self.reads = 0
        self._notified = asyncio.Event()
        self._heartbeat_at = 0.0
        self._lost_at: float | None = None

    async def run(self) -> None:
        delay = RECONNECT_FIRST
        while True:
            try:
                conn = await connect(self.url, application_name=APPLICATION_NAME)
            except StoreError as exc:
                self._lost(str(exc))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            delay = RECONNECT_FIRST
            try:
                await self._serve(conn)
            except Exception as exc:  # a bug too: reconnect, never stop publishing for good
                self._lost(_one_line(exc) if isinstance(exc, _LOST)
                           else f"{type(exc).__name__}: {exc}")
            finally:
                self.connected = False
                self._on_state(False, 0)
                conn.terminate()
            await asyncio.sleep(RECONNECT_FIRST)

    async def _serve(self, conn: asyncpg.Connection) -> None:
        await conn.add_listener(LIVE_CHANNEL, self._on_notify)
        self.published = {}
        await self._timed(self._publish(conn, full=True))
        await self._timed(self._read(conn))
        self.connected = True
        self._on_state(True, len(self.view.counted))
        self._restored()
        next_publish = next_read = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_publish:
                next_publish = now + PUBLISH_INTERVAL
                await self._timed(self._publish(conn))
            if self._notified.is_set() or now >= next_read:
                self._notified.clear()
                next_read = now + READ_INTERVAL
                await self._timed(self._read(conn))
            wait = min(next_publish, next_read) - time.monotonic()
            if wait > 0:
                await event_or_timeout(self._notified, wait)

    async def _timed(self, operation: Any) -> None:
        await within(operation, OPERATION_TIMEOUT)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload != self.node:  # our own publication changes nothing in the view
            self._notified.set()

    async def _publish(self, conn: asyncpg.Connection, *, full: bool = False) -> None:
        rows = self._rows(self.published)
        written, deleted = changes(self.published, rows)
        beat_due = time.monotonic() - self._heartbeat_at >= HEARTBEAT_INTERVAL
        if not (full or written or deleted or beat_due):
            return
        report = self._report()
        async with conn.transaction():
            if full:
                await conn.execute("DELETE FROM live_calls WHERE node = $1", self.node)
            if deleted:
                await conn.execute("DELETE FROM live_calls WHERE node = $1 AND "
                                   "uniqueid = ANY($2::text[])", self.node, deleted)
            if written:
                await conn.executemany(_UPSERT_CALL, [
                    (self.node, uid, r.customer_id, r.category, r.risky, r.up, r.started)
                    for uid, r in written.items()])
            await conn.execute(_HEARTBEAT, self.node, self.started_at, report.ami,
                               report.snapshot_age, report.live_calls)
            if full or written or deleted:
                await conn.execute("SELECT pg_notify($1, $2)", LIVE_CHANNEL, self.node)
        self.published = rows
        self._heartbeat_at = time.monotonic()
        self.publications += 1

    async def _read(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            nodes = await conn.fetch(_READ_NODES)
            calls = await conn.fetch(_READ_CALLS, self.node)
        self.view.update(
            (NodeState(r["node"], r["age"], r["ami"], r["snapshot_age"], r["live_calls"],
                       r["started_at"]) for r in nodes),
            ((r["node"], PublishedCall(r["customer_id"], r["category"], r["risky"], r["up"],
                                       r["started"])) for r in calls))
        self.reads += 1
        self._on_state(True, len(self.view.counted))
        self._check_unique([r["started_at"] for r in nodes if r["node"] == self.node])

    def _check_unique(self, started: list[float]) -> None:
        """Two daemons with one node id overwrite each other's rows: their calls would not
        count on the other nodes. Our row says when its writer started: not us, another."""
        if started and abs(started[0] - self.started_at) > 0.01 and not self._conflict_logged:
            self._conflict_logged = True
            log.error("cluster_node_id_conflict", node=self.node,
                      detail="another daemon publishes under this node id: give each daemon "
                             "its own [cluster] node")

    def _lost(self, why: str) -> None:
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            log.warning("cluster_link_lost", error=why, db=redacted(self.url), node=self.node,
                        meanwhile="own calls counted; other nodes' calls stop counting "
                                  f"after {self.view.timeout:g} s")

    def _restored(self) -> None:
        if self._lost_at is not None:
            log.info("cluster_link_restored", node=self.node,
                     down_for_s=round(time.monotonic() - self._lost_at, 1))
        else:
            log.info("cluster_link_up", node=self.node, channel=LIVE_CHANNEL)
        self._lost_at = None


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__
