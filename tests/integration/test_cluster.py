"""Two Asterisk nodes, one policy in PostgreSQL (issue 13's acceptance, cluster-wide live
control included): real Asterisk x2 + SIPp + PostgreSQL (cluster.py: the `make run-cluster`
topology, node a on 127.0.1.1, node b on 127.0.2.1, the trunk on 127.0.0.3:5080)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cluster import Cluster, wait_for
from harness import CallResult, Trunk
from policy_env import ACME_101, ACME_102

from callpolicy.live.records_spool import spool_path


@pytest.fixture
def shared_trunk(each_node_clean: Cluster, tmp_path: Path) -> Iterator[Trunk]:
    """The trunk both nodes dial (127.0.0.3:5080), answering 200."""
    t = Trunk(tmp_path / "trunk")
    t.start()
    try:
        yield t
    finally:
        for node in each_node_clean.nodes.values():
            node.asterisk.hangup_all()
        t.stop()


def events(log: Path, name: str, since: int = 0) -> list[dict]:
    return [json.loads(line) for line in log.read_bytes()[since:].splitlines()
            if f'"event": "{name}"'.encode() in line]


def counted_live_calls(cluster: Cluster, seen_by: str, of: str) -> int | None:
    """The live calls of node `of` as node `seen_by`'s daemon counts them (`status`: its last
    read of the cluster tables); None while it does not count that node."""
    state = json.loads(cluster.nodes[seen_by].daemon.status("--json").stdout)
    other = f"node-{cluster.nodes[of].ip}"
    return next((n["live_calls"] for n in state["cluster"]["nodes"] or []
                 if n["node"] == other and n["counted"]), None)


def test_an_unblock_made_with_the_cli_passes_the_next_call_on_both_nodes(
        cluster: Cluster, shared_trunk: Trunk, tmp_path: Path) -> None:
    trunk = shared_trunk
    a, b = (cluster.nodes[n].client(tmp_path) for n in ("a", "b"))
    assert a.call(ACME_101, "0905123456").status == 403
    assert b.call(ACME_102, "0905123456").status == 403
    assert trunk.invites == []
    cluster.cli("unblock", "acme", "--prefix", "0905", "--by", "tests", "--ticket", "T-1")
    try:
        time.sleep(1.0)  # live in every daemon within a second (LISTEN/NOTIFY: milliseconds)
        on_a, on_b = a.call(ACME_101, "0905123456"), b.call(ACME_102, "0905123456")
        assert (on_a.status, on_b.status) == (200, 200), (on_a.describe(), on_b.describe())
        assert [i.ruri_user for i in trunk.invites] == ["+32905123456"] * 2
    finally:
        cluster.cli("reblock", "acme", "--prefix", "0905", "--by", "tests", "--ticket", "T-2")
    time.sleep(1.0)
    assert a.call(ACME_101, "0905123456").status == 403
    assert b.call(ACME_102, "0905123456").status == 403
    assert len(trunk.invites) == 2


def test_postgresql_stopped_during_calls_decisions_go_on_and_records_are_replayed(
        cluster: Cluster, shared_trunk: Trunk, tmp_path: Path) -> None:
    trunk = shared_trunk
    a, b = (cluster.nodes[n].client(tmp_path) for n in ("a", "b"))
    marks = {n: node.daemon.log.stat().st_size for n, node in cluster.nodes.items()}
    long_call: list[CallResult] = []
    up = threading.Thread(target=lambda: long_call.append(
        b.call(ACME_102, "092101311", hold=4, timeout=20)))
    up.start()
    try:
        wait_for(lambda: trunk.invites, 10, "the long call did not reach the trunk")
        with cluster.postgresql_stopped():
            outage = {"a": [a.call(ACME_101, "092101312"), a.call(ACME_101, "0905123456")],
                      "b": [b.call(ACME_102, "092101313"), b.call(ACME_102, "0905123456")]}
            for node, (national, premium) in outage.items():
                assert national.status == 200, (node, national.describe())
                assert premium.status == 403, (node, premium.describe())
            up.join(30)
            assert long_call and long_call[0].status == 200, long_call
            # the records wait in each daemon's spool beside its local snapshot
            for name, node in cluster.nodes.items():
                wait_for(lambda n=node, m=marks[name]: events(n.daemon.log,
                                                              "call_records_spooled", m),
                         10, f"node {name}: no record spooled while PostgreSQL is down")
                assert spool_path(node.local_snapshot).stat().st_size > 0
            assert [i.ruri_user for i in trunk.invites] == [
                "+3292101311", "+3292101312", "+3292101313"]
    finally:
        up.join(30)
    dialled = {"092101311", "092101312", "092101313", "0905123456"}
    seen: set[str] = set()

    def recorded() -> bool:
        seen.update(r["dialled"] for r in cluster.calls())
        return dialled <= seen

    deadline = time.monotonic() + 20
    while not recorded():
        assert time.monotonic() < deadline, (
            f"records of the calls made during the outage are not in PostgreSQL: "
            f"{sorted(dialled - seen)} missing; the calls table: "
            f"{cluster.pg.sql('SELECT dialled, uniqueid FROM calls', 'callpolicy')}")
        time.sleep(0.2)
    refused = [r for r in cluster.calls() if r["dialled"] == "0905123456"]
    assert {(r["action"], r["reason"]) for r in refused} >= {("block", "premium")}
    for name, node in cluster.nodes.items():
        assert events(node.daemon.log, "call_spool_replayed", marks[name]), name


def test_node_a_fallback_decides_with_its_daemon_dead_and_postgresql_stopped(
        cluster: Cluster, shared_trunk: Trunk, tmp_path: Path) -> None:
    trunk = shared_trunk
    node = cluster.nodes["a"]
    a = node.client(tmp_path)
    node.daemon.stop()
    with cluster.postgresql_stopped():
        mark = node.asterisk.log_mark()
        premium, national, emergency = (a.call(ACME_101, number) for number in
                                        ("0905123456", "092101321", "112"))
        assert premium.status == 403, premium.describe()
        assert national.status == 200, national.describe()
        assert emergency.status == 200, emergency.describe()
        assert [i.ruri_user for i in trunk.invites] == ["+3292101321", "112"]
        # decided by the fallback, from node a's local snapshot (not the last resort, which
        # refuses a national number); production logging: a NOTICE for the block only
        log = node.asterisk.log_since(mark)
        warnings = [line for line in log.splitlines()
                    if "] WARNING[" in line or "] ERROR[" in line or "] NOTICE[" in line]
        assert sum("using the fallback AGI" in line for line in warnings) == 3, warnings
        blocks = [line for line in warnings if "callpolicy: BLOCK" in line]
        assert len(blocks) == 1 and "source=fallback" in blocks[0], warnings
        assert "last resort" not in log, log[-3000:]


def test_a_suspension_hangs_up_a_live_call_on_node_b_but_not_112_on_node_a(
        cluster: Cluster, shared_trunk: Trunk, tmp_path: Path) -> None:
    trunk = shared_trunk
    a, b = (cluster.nodes[n].client(tmp_path) for n in ("a", "b"))
    log_b = cluster.nodes["b"].daemon.log
    mark = log_b.stat().st_size
    with ThreadPoolExecutor(max_workers=2) as pool:
        national = pool.submit(b.call, ACME_102, "092101331", hold=20, timeout=40)
        sos = pool.submit(a.call, ACME_101, "112", hold=6, timeout=40)
        trunk.wait_for_invites(2, timeout=10)
        time.sleep(0.5)  # both answered
        before = time.time()
        cluster.cli("customer", "suspend", "acme", "--by", "tests", "--ticket", "T-SUSP")
        committed = time.time()  # the suspension committed between `before` and now
        try:
            national_result = national.result(timeout=40)
            sos_result = sos.result(timeout=40)
        finally:
            cluster.cli("customer", "reactivate", "acme", "--by", "tests", "--ticket", "T-BACK")
    assert national_result.status == 200, national_result.describe()
    assert national_result.hung_up_by == "remote", national_result.describe()
    bye = next(m for m in national_result.messages
               if m.method == "BYE" and m.direction == "received")
    print(f"node b's BYE {bye.timestamp - committed:.2f}-{bye.timestamp - before:.2f} s after "
          "the suspension's commit")
    assert bye.timestamp - committed < 2.0, (
        f"node b hung up {bye.timestamp - committed:.2f} s after the suspension")
    assert sos_result.status == 200, sos_result.describe()
    assert sos_result.hung_up_by == "phone", sos_result.describe()  # 112 on node a stayed up
    revoked = events(log_b, "call_revoked", mark)
    assert [e.get("reason") for e in revoked] == ["suspended"], revoked


def test_max_concurrent_counts_the_calls_of_both_nodes(
        cluster: Cluster, shared_trunk: Trunk, tmp_path: Path) -> None:
    trunk = shared_trunk
    a, b = (cluster.nodes[n].client(tmp_path) for n in ("a", "b"))
    cluster.cli("limits", "set", "acme", "--max-concurrent", "2", "--max-per-minute", "100",
                "--by", "tests", "--ticket", "T-LIM")
    try:
        time.sleep(1.0)  # live in every daemon within a second
        with ThreadPoolExecutor(max_workers=2) as pool:
            short, long = (pool.submit(a.call, ACME_101, number, hold=hold, timeout=30)
                           for number, hold in (("092101341", 3), ("092101342", 20)))
            trunk.wait_for_invites(2, timeout=10)
            wait_for(lambda: counted_live_calls(cluster, "b", "a") == 2, 5,
                     "node b does not count node a's two calls")
            third = b.call(ACME_102, "092101343")
            assert third.status == 403, third.describe()
            assert short.result(timeout=30).status == 200
            wait_for(lambda: counted_live_calls(cluster, "b", "a") == 1, 5,
                     "node b still counts node a's ended call")
            assert not long.done()
            after_one_ended = b.call(ACME_102, "092101344")
            assert after_one_ended.status == 200, after_one_ended.describe()
            assert not long.done()
            cluster.nodes["a"].asterisk.hangup_all()  # its hold (a ceiling) is not needed now
            assert long.result(timeout=30).status == 200
    finally:
        cluster.cli("limits", "set", "acme", "--default", "max_concurrent", "max_per_minute",
                    "--by", "tests", "--ticket", "T-LIM2")
    assert sorted(i.ruri_user for i in trunk.invites) == [
        "+3292101341", "+3292101342", "+3292101344"]  # the refused call never reached it
    refused: list[dict] = []

    def recorded() -> bool:
        refused[:] = [r for r in cluster.calls() if r["dialled"] == "092101343"]
        return bool(refused)

    wait_for(recorded, 5, "no record of the refused call")
    assert [(r["node"], r["action"], r["reason"]) for r in refused] == [
        (f"node-{cluster.nodes['b'].ip}", "block", "fraud_limit")], refused
