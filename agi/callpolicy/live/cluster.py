"""Cluster-wide live control, the in-memory part (PostgreSQL: store/postgres/cluster.py does
the I/O).

Each daemon owns the live calls of its own Asterisk (only it can hang them up) and publishes
what the fraud guard counts of them: `published_rows` turns its live table into rows (calls
up now, and calls started in the last minute, for the per-minute limit). The other nodes'
rows are read into `OtherNodes`, which adds them to this node's own counts at decision time:
a dict lookup, no query per call. A node whose heartbeat is older than `[cluster]
node_timeout` is not counted (nor anyone, when this daemon has not read the table for that
long): a paying customer is never refused on counts nobody keeps up to date.

Revocation needs nothing cluster-wide: every daemon re-decides its OWN live calls whenever its
snapshot changes (control.py), and a change reaches every daemon's snapshot within a second
(LISTEN/NOTIFY), so a suspension hangs up the customer's calls on every node.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..policy import LiveCounts
from .control import CallControl
from .livecalls import MINUTE, LiveCalls


@dataclass(frozen=True, slots=True)
class PublishedCall:
    """One row of `live_calls`: a call that counts toward its customer's fraud limits."""

    customer_id: str
    category: str | None
    risky: bool
    up: bool  # in the live table now (else: ended, or not tracked, started < 1 min ago)
    started: float  # epoch seconds, the publishing node's clock


@dataclass(frozen=True, slots=True)
class NodeState:
    """One row of `nodes`, as read (ages by the database server's clock)."""

    node: str
    heartbeat_age: float  # s since its last heartbeat
    ami: str  # connected / down / not_configured
    snapshot_age: float | None
    live_calls: int | None  # None: not known (its AMI link down)
    started_at: float  # epoch: when that daemon started


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What this node writes in its `nodes` row besides the heartbeat."""

    ami: str  # connected / down / not_configured
    snapshot_age: float | None
    live_calls: int | None  # None: not known (AMI link down)


def local_report(control: CallControl, snapshot_checked_at: float | None) -> NodeReport:
    ami = control.ami
    return NodeReport(
        "not_configured" if not ami.configured else "connected" if ami.connected else "down",
        None if snapshot_checked_at is None else round(time.time() - snapshot_checked_at, 3),
        len(control.live.calls) if control.concurrency_enforced else None)


def published_rows(live: LiveCalls, previous: Mapping[str, PublishedCall],
                   now: float | None = None) -> dict[str, PublishedCall]:
    """What this node publishes: its calls up, and its counted starts of the last minute.
    A call that ended keeps the category it was published with."""
    rows: dict[str, PublishedCall] = {}
    for started, customer, uniqueid in live.recent_starts(now):
        call = live.calls.get(uniqueid)
        if call is not None:
            rows[uniqueid] = PublishedCall(customer, call.category.value, call.risky, True,
                                           started)
        else:
            before = previous.get(uniqueid)
            rows[uniqueid] = PublishedCall(customer, before.category if before else None,
                                           False, False, started)
    for uniqueid, call in live.calls.items():
        if uniqueid not in rows:  # up for more than a minute
            rows[uniqueid] = PublishedCall(call.customer_id, call.category.value, call.risky,
                                           True, call.started)
    return rows


def changes(previous: Mapping[str, PublishedCall], rows: Mapping[str, PublishedCall]
            ) -> tuple[dict[str, PublishedCall], list[str]]:
    """(rows to write, uniqueids to delete) to turn `previous` into `rows`."""
    written = {uid: row for uid, row in rows.items() if previous.get(uid) != row}
    return written, [uid for uid in previous if uid not in rows]


class OtherNodes:
    """The other nodes' live calls, per customer, as of the last read of the tables."""

    def __init__(self, node: str, timeout: float) -> None:
        self.node = node
        self.timeout = timeout
        self.nodes: tuple[NodeState, ...] = ()  # every node, this one too (status)
        self.counted: frozenset[str] = frozenset()  # the other nodes whose calls count
        self.read_at: float | None = None  # time.monotonic() of the last read
        self.read_at_epoch: float | None = None
        self._concurrent: dict[str, int] = {}
        self._risky: dict[str, int] = {}
        self._starts: dict[str, list[float]] = {}  # sorted start times

    def update(self, nodes: Iterable[NodeState],
               calls: Iterable[tuple[str, PublishedCall]]) -> None:
        """Replace the view with a read of `nodes` and `live_calls` (node, row)."""
        self.nodes = tuple(sorted(nodes, key=lambda n: n.node))
        self.counted = frozenset(n.node for n in self.nodes if n.node != self.node
                                 and n.heartbeat_age <= self.timeout)
        concurrent: dict[str, int] = defaultdict(int)
        risky: dict[str, int] = defaultdict(int)
        starts: dict[str, list[float]] = defaultdict(list)
        for node, row in calls:
            if node not in self.counted:
                continue
            if row.up:
                concurrent[row.customer_id] += 1
                risky[row.customer_id] += row.risky
            starts[row.customer_id].append(row.started)
        for times in starts.values():
            times.sort()
        self._concurrent, self._risky, self._starts = dict(concurrent), dict(risky), dict(starts)
        self.read_at, self.read_at_epoch = time.monotonic(), time.time()

    @property
    def current(self) -> bool:
        """Read within `timeout`: else nothing of it counts (the database is unreachable)."""
        return self.read_at is not None and time.monotonic() - self.read_at <= self.timeout

    def added_to(self, customer: str, counts: LiveCounts) -> LiveCounts:
        """`counts` (this node's) plus the customer's calls on the other nodes. A count this
        node does not know (None) stays not known."""
        starts = self._starts.get(customer)
        if starts is None or not self.current:
            return counts
        since = time.time() - MINUTE
        last_minute = len(starts) - bisect.bisect_left(starts, since)
        return LiveCounts(
            concurrent=None if counts.concurrent is None
            else counts.concurrent + self._concurrent.get(customer, 0),
            last_minute=counts.last_minute + last_minute,
            risky=None if counts.risky is None else counts.risky + self._risky.get(customer, 0))


__all__ = ["NodeReport", "NodeState", "OtherNodes", "PublishedCall", "changes",
           "local_report", "published_rows"]
