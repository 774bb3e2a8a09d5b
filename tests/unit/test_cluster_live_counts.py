"""Cluster-wide live control (issue 13 point 3): two daemons (PolicyService, each with its
own live table and a stand-in for its Asterisk's AMI) on one PostgreSQL database. The fraud
limits count a customer's calls on both nodes, a node whose heartbeat stops stops counting,
a suspension hangs up the customer's calls on both nodes, and `status` shows every node."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from structlog.testing import capture_logs

from callpolicy.asterisk.ami import AmiLink, ChannelStatus
from callpolicy.live.cluster import NodeState, OtherNodes, PublishedCall
from callpolicy.live.control import CallControl
from callpolicy.policy import CallRequest, Decision, FraudLimits, LiveCounts
from callpolicy.service.config import AmiSettings, load_settings, load_zones
from callpolicy.service.daemon import PolicyService
from callpolicy.service.status import build_status, render
from callpolicy.store import Actor, open_store
from callpolicy.store.import_file import read_import_file
from callpolicy.store.url import StoreLocation

#: The over-admission bound stated in the README: a call decided on one node counts on the
#: others within this (PUBLISH_INTERVAL + a NOTIFY + a read, with a loaded machine's margin).
VISIBLE_WITHIN = 0.5
ACTOR = Actor("tests", "T-13", "cluster test")


class FakeAmi(AmiLink):
    """A configured AMI link, logged in, over an Asterisk with no channels; hang-ups are
    recorded (the thing under test is the cluster, not the AMI protocol)."""

    def __init__(self) -> None:
        super().__init__(AmiSettings(username="callpolicy", secret="test"))
        self.hangups: list[tuple[str, float]] = []

    async def channels(self, variables: Sequence[str] = ()) -> list[ChannelStatus]:
        return []

    async def hangup(self, channel: str, cause: int = 21) -> bool:
        self.hangups.append((channel, time.time()))
        return True

    async def log_in(self, control: CallControl) -> None:
        self.logins += 1
        self._set_connected(True)
        await control.resync()


class Node:
    def __init__(self, service: PolicyService, ami: FakeAmi) -> None:
        self.service = service
        self.ami = ami
        self.tasks: list[asyncio.Task[None]] = []

    def place(self, uniqueid: str, dialled: str = "092101299") -> Decision:
        """What the daemon does per call (FastAGI aside): decide, then on_decision."""
        request = CallRequest(dialled, datetime.now(UTC), endpoint="acme-101")
        decision = self.service.decide(request)
        self.service.on_decision(decision, "daemon", 0.0001, request, {
            "agi_uniqueid": uniqueid, "agi_channel": f"PJSIP/acme-101-{uniqueid}"})
        return decision

    def hang_up(self, uniqueid: str) -> None:
        self.service.control._hangup({"Event": "Hangup", "Uniqueid": uniqueid, "Cause": "16"})

    def others(self, customer: str = "acme") -> tuple[int | None, int]:
        """The customer's counts as this node sees them (its own + the other nodes')."""
        counts = self.service.control.with_live_counts(
            CallRequest("092101299", datetime.now(UTC), endpoint="acme-101")).live
        assert counts is not None
        return counts.concurrent, counts.last_minute


async def start_node(url: str, name: str, repo: Path, timeout: float = 5.0) -> Node:
    settings = replace(load_settings(str(repo / "config" / "callpolicy.toml")),
                       db_url=url, ami=AmiSettings(), node=name, node_timeout=timeout)
    service = PolicyService(settings, None, None)
    ami = FakeAmi()
    service.ami = ami
    service.control = CallControl(service._current_engine, ami, service.metrics)
    service.control.node = name
    await service.load()
    await ami.log_in(service.control)
    node = Node(service, ami)
    node.tasks = service.start_cluster()
    return node


async def stop(node: Node) -> None:
    for task in node.tasks:
        task.cancel()
    await asyncio.gather(*node.tasks, return_exceptions=True)
    if node.service.store is not None:
        await node.service.store.close()


async def until(condition: Callable[[], bool], within: float, what: str) -> float:
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < within, f"{what}: not within {within} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - began


@pytest.fixture
async def cluster_db(pg_url: str, demo_customers: Path) -> str:
    plan = read_import_file(demo_customers, load_zones())
    async with await open_store(StoreLocation(None, pg_url), create=True) as store:
        await store.import_customers(plan.records, ACTOR)
        await store.set_limits("acme", FraudLimits(max_concurrent=2, max_per_minute=4,
                                                   max_concurrent_risky=2), ACTOR)
    return pg_url


@pytest.fixture
async def nodes(cluster_db: str, repo: Path) -> AsyncIterator[tuple[Node, Node]]:
    a = await start_node(cluster_db, "node-a", repo, timeout=2.0)
    b = await start_node(cluster_db, "node-b", repo, timeout=2.0)
    try:
        for node, other in ((a, "node-b"), (b, "node-a")):
            link = node.service.cluster
            assert link is not None
            await until(lambda link=link, other=other: other in link.view.counted, 5,
                        f"{node.service.settings.node} sees {other}")
        yield a, b
    finally:
        await stop(a)
        await stop(b)


async def test_max_concurrent_counts_the_calls_of_both_nodes(
        nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    began = time.monotonic()
    assert [a.place("a1").reason.value, a.place("a2").reason.value] == ["allowed"] * 2
    lag = await until(lambda: b.others()[0] == 2, VISIBLE_WITHIN, "node A's calls on B")
    print(f"\na call on node A counted on node B after {lag * 1000:.0f} ms")
    await asyncio.sleep(max(0.0, began + VISIBLE_WITHIN - time.monotonic()))
    third = b.place("b1")
    assert third.reason.value == "fraud_limit"
    assert third.events[-1].detail["limit"] == "max_concurrent"
    assert b.place("sos", "112").allowed  # never the emergency services
    a.hang_up("a1")
    await asyncio.sleep(VISIBLE_WITHIN)
    assert b.place("b2").reason.value == "allowed"
    await until(lambda: a.others()[0] == 2, VISIBLE_WITHIN, "node B's call on A")
    assert a.place("a3").reason.value == "fraud_limit"  # a2 here, b2 there


async def test_per_minute_is_counted_over_both_nodes(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    for uid in ("a1", "a2", "a3"):  # short calls: they end, their starts still count
        assert a.place(uid).allowed
        a.hang_up(uid)
    await asyncio.sleep(VISIBLE_WITHIN)
    assert b.others() == (0, 3)
    assert b.place("b1").allowed  # the 4th of the minute
    refused = b.place("b2")
    assert refused.reason.value == "fraud_limit"
    assert refused.events[-1].detail["limit"] == "max_per_minute"


async def test_a_node_whose_heartbeat_stops_stops_counting(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    assert a.place("a1").allowed and a.place("a2").allowed
    await asyncio.sleep(VISIBLE_WITHIN)
    assert b.place("b1").reason.value == "fraud_limit"
    for task in a.tasks:  # node A's daemon stops publishing (killed, its host gone)
        task.cancel()
    await asyncio.gather(*a.tasks, return_exceptions=True)
    link = b.service.cluster
    assert link is not None
    gone = await until(lambda: "node-a" not in link.view.counted, 15, "node A timed out")
    print(f"\nnode A not counted any more {gone:.2f} s later (node_timeout 2 s)")
    assert b.others()[0] == 0
    assert b.place("b2").allowed
    status = build_status(b.service)
    [row] = [n for n in status["cluster"]["nodes"] if n["node"] == "node-a"]
    assert row["counted"] is False and row["heartbeat_age_s"] > 2.0
    assert "NOT COUNTED" in render(status)


async def test_a_suspension_hangs_up_the_calls_on_every_node(
        nodes: tuple[Node, Node], cluster_db: str) -> None:
    a, b = nodes
    assert a.place("a1").allowed and b.place("b1").allowed and a.place("sos", "112").allowed
    loops = []
    for node in (a, b):
        loops += [asyncio.create_task(node.service.refresh_forever()),
                  asyncio.create_task(node.service.control.revoke_forever(
                      node.service.policy_changed))]
    try:
        await asyncio.sleep(0.3)  # both refresh loops listening
        async with await open_store(StoreLocation(None, cluster_db)) as store:
            suspended = time.time()
            await store.suspend("acme", ACTOR)
        for node in (a, b):
            await until(lambda node=node: bool(node.ami.hangups), 2.0,
                        f"{node.service.settings.node} hangs up its call")
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
    assert [c for c, _ in a.ami.hangups] == ["PJSIP/acme-101-a1"]  # 112 stays up
    assert [c for c, _ in b.ami.hangups] == ["PJSIP/acme-101-b1"]
    print("\nhung up after " + ", ".join(
        f"{n.service.settings.node} {(n.ami.hangups[0][1] - suspended) * 1000:.0f} ms"
        for n in (a, b)))


async def test_status_shows_every_node_and_records_their_node(
        nodes: tuple[Node, Node], cluster_db: str) -> None:
    a, b = nodes
    assert a.place("a1").allowed and b.place("b1").allowed
    await asyncio.sleep(VISIBLE_WITHIN + 1.0)  # a heartbeat with the new counts
    link = a.service.cluster
    assert link is not None
    await until(lambda: {n.live_calls for n in link.view.nodes} == {1}, 10, "live counts")
    status = json.loads(json.dumps(build_status(a.service)))
    cluster = status["cluster"]
    assert cluster["node"] == "node-a" and cluster["link"] == "connected"
    assert [(n["node"], n["this"], n["ami"], n["live_calls"], n["counted"])
            for n in cluster["nodes"]] == [("node-a", True, "connected", 1, True),
                                           ("node-b", False, "connected", 1, True)]
    assert all(0 <= n["heartbeat_age_s"] < 2 and n["snapshot_age_s"] is not None
               for n in cluster["nodes"])
    text = render(status)
    assert "cluster      node node-a, link connected, 2 node(s)" in text
    assert "node-b" in text
    for node in (a, b):
        await node.service.records.flush(node.service.control.take_pending())
    async with await open_store(StoreLocation(None, cluster_db)) as store:
        records = await store.calls()
    assert sorted((r.uniqueid, r.node) for r in records) == [("a1", "node-a"),
                                                            ("b1", "node-b")]


def test_the_view_adds_only_fresh_nodes_and_keeps_unknown_counts_unknown() -> None:
    now = time.time()
    view = OtherNodes("a", timeout=5.0)
    fresh, stale = NodeState("b", 0.3, "connected", 0.1, 2, now), NodeState(
        "c", 6.0, "connected", 0.1, 1, now)
    view.update([fresh, stale], [
        ("b", PublishedCall("acme", "national", False, True, now - 1)),
        ("b", PublishedCall("acme", "international", True, True, now - 90)),  # up 90 s
        ("b", PublishedCall("acme", "national", False, False, now - 61)),  # out of the minute
        ("c", PublishedCall("acme", "national", False, True, now - 1))])  # c timed out
    assert view.counted == frozenset({"b"})
    own = LiveCounts(concurrent=1, last_minute=1, risky=0)
    assert view.added_to("acme", own) == LiveCounts(concurrent=3, last_minute=2, risky=1)
    assert view.added_to("other", own) == own
    unknown = LiveCounts(concurrent=None, last_minute=1, risky=None)  # own AMI link down
    assert view.added_to("acme", unknown) == LiveCounts(None, 2, None)
    view.read_at = time.monotonic() - 6.0  # not read for longer than the timeout
    assert view.added_to("acme", own) == own


async def sql(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def test_a_lost_connection_is_reopened_and_publishes_everything_again(
        nodes: tuple[Node, Node], cluster_db: str) -> None:
    a, b = nodes
    assert a.place("a1").allowed
    await until(lambda: b.others()[0] == 1, VISIBLE_WITHIN, "node A's call on B")
    registry = b.service.metrics.registry
    assert registry.get_sample_value("callpolicy_cluster_link_connected") == 1
    assert registry.get_sample_value("callpolicy_cluster_nodes_counted") == 2
    link = a.service.cluster
    assert link is not None
    with capture_logs() as logs:
        # the rows lost with the connection, say: deleted in the same round trip, before a
        # reconnected node A could publish them again (it reconnects after 0.25 s)
        await sql(cluster_db, "DELETE FROM live_calls; "
                              "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = 'callpolicy-cluster' "
                              "AND datname = current_database()")
        await until(lambda: not link.connected, 10, "node A's link lost")
        await until(lambda: link.connected, 10, "node A's link back")
        await until(lambda: b.others()[0] == 1, 10, "node A's call on B again")
        await until(lambda: all(n.service.cluster and n.service.cluster.connected
                                for n in (a, b)), 10, "both links back")
    events = [e["event"] for e in logs]
    assert events.count("cluster_link_lost") == 2  # once per node and episode
    assert events.count("cluster_link_restored") == 2


async def test_two_daemons_with_one_node_id_are_an_error(
        nodes: tuple[Node, Node], cluster_db: str, repo: Path) -> None:
    with capture_logs() as logs:
        twin = await start_node(cluster_db, "node-a", repo)
        try:
            await until(lambda: any(e["event"] == "cluster_node_id_conflict" for e in logs),
                        10, "the conflict is logged")
        finally:
            await stop(twin)
    [conflict] = [e for e in logs if e["event"] == "cluster_node_id_conflict"]
    assert conflict["log_level"] == "error" and conflict["node"] == "node-a"
