"""Two nodes, one policy: the cluster of `make run-cluster` for the integration tests.

    PostgreSQL   tests/pg.py's throw-away server (a free port), database `callpolicy` with the
                 demo customers
    node a       Asterisk (harness.Asterisk, asterisk-run.sh --node-ip 127.0.1.1) + its daemon
                 (policy_env.Live, config from scripts/callpolicy-node-config.sh) on 127.0.1.1
    node b       the same on 127.0.2.1
    the trunk    a harness.Trunk on 127.0.0.3:5080 per test, shared by both nodes

The fixture `cluster` is module-scoped: one cluster for the module's tests. After each test
every channel of both nodes is hung up, and the daemons and the server are running again.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import ASTERISK_PORT, Asterisk, AsteriskError, SipClient
from policy_env import REPO, Live, load_forwards

from pg import PgServer, destroy, start_server

NODES = {"a": "127.0.1.1", "b": "127.0.2.1"}


@dataclass
class Node:
    name: str
    ip: str
    asterisk: Asterisk
    daemon: Live

    @property
    def local_snapshot(self) -> Path:
        return self.daemon.state / "callpolicy.db"

    def client(self, artifacts: Path) -> SipClient:
        """Calls to this node's Asterisk."""
        return SipClient(artifacts / f"sip-{self.name}", target=f"{self.ip}:{ASTERISK_PORT}")


@dataclass
class Cluster:
    pg: PgServer
    url: str
    nodes: dict[str, Node]

    def cli(self, *args: str) -> str:
        """The ops CLI on the shared database (node a's config)."""
        return self.nodes["a"].daemon.cli(*args)

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.cli("calls", "--json").splitlines()]

    def database_up(self) -> bool:
        return (self.pg.data / "postmaster.pid").exists()

    @contextlib.contextmanager
    def postgresql_stopped(self) -> Iterator[None]:
        """PostgreSQL down for the block, always back afterwards."""
        self.pg.stop("immediate")
        try:
            yield
        finally:
            if not self.database_up():
                self.pg.start()


def wait_for(predicate: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _start_asterisk(name: str, ip: str, base: Path, nodes: dict[str, Node]) -> None:
    state = base / f"node-{name}" / "state"
    state.mkdir(parents=True)
    asterisk = Asterisk(base / f"node-{name}", state_dir=state, node_ip=ip)
    config = state / "callpolicy.toml"  # written by _start_daemon, once the database is up
    daemon = Live(state, config, state / "daemon.log", state / "daemon.pid", host=ip)
    nodes[name] = Node(name, ip, asterisk, daemon)  # before start: torn down whatever happens
    asterisk.add_start_hook(load_forwards, run_now=False)
    try:
        asterisk.start()
    except AsteriskError as exc:
        pytest.fail(f"could not start node {name}'s Asterisk: {exc}", pytrace=False)


def _start_daemon(node: Node, url: str) -> None:
    node.daemon.config.write_text(subprocess.run(
        [str(REPO / "scripts" / "callpolicy-node-config.sh"), node.ip, url],
        capture_output=True, text=True, timeout=30, check=True).stdout)
    node.daemon.start()


def _database() -> tuple[PgServer, str]:
    """The throw-away PostgreSQL server with the demo customers; its URL."""
    try:
        pg = start_server()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        pg.sql("CREATE DATABASE callpolicy")
        url = pg.url("callpolicy")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPOLICY_")}
        imported = subprocess.run(
            [sys.executable, "-m", "callpolicy.cli", "--db", url, "customer", "import",
             str(REPO / "config" / "demo-customers.toml"), "--by", "tests", "--ticket", "setup"],
            capture_output=True, text=True, timeout=60, env=env, check=False)
        assert imported.returncode == 0, imported.stderr
    except BaseException:
        destroy(pg)
        raise
    return pg, url


def _stop(nodes: dict[str, Node], pg: PgServer | None) -> None:
    try:
        for node in nodes.values():
            with contextlib.suppress(Exception):
                node.daemon.stop()
    finally:
        try:
            for node in nodes.values():
                node.asterisk.stop()
        finally:
            if pg is not None:
                destroy(pg)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster")
    nodes: dict[str, Node] = {}
    pg: PgServer | None = None
    started = time.monotonic()
    try:
        # In parallel (CI time): PostgreSQL with the customers beside the two Asterisks (one
        # after the other: they share the harness's machine lock), then the two daemons.
        with ThreadPoolExecutor(max_workers=2) as pool:
            database = pool.submit(_database)
            try:
                for name, ip in NODES.items():
                    _start_asterisk(name, ip, base, nodes)
            finally:
                pg, url = database.result()
            for daemon in [pool.submit(_start_daemon, node, url) for node in nodes.values()]:
                daemon.result()
        cluster = Cluster(pg, url, nodes)
        print(f"cluster: two nodes up in {time.monotonic() - started:.1f} s")
        yield cluster
    finally:
        _stop(nodes, pg)


@pytest.fixture
def each_node_clean(cluster: Cluster) -> Iterator[Cluster]:
    """After the test: no channel left on either node, PostgreSQL and both daemons up."""
    try:
        yield cluster
    finally:
        for node in cluster.nodes.values():
            node.asterisk.hangup_all()
        if not cluster.database_up():
            cluster.pg.start()
        for node in cluster.nodes.values():
            if node.daemon.supervisor is None or node.daemon.supervisor.poll() is not None:
                node.daemon.start()
