"""A database file replaced under the running daemon (an operator "restoring a backup"), here
with a damaged copy: the CLI refuses to write to it, the daemon keeps deciding from its last
good snapshot and says so (status, metrics, one error line), and recovers when a good file is
back (issue 10)."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

from agi_peer import env_block, parse_mset
from test_daemon import cli, free_port, start, wait_port
from test_store_io import damage_calls_table

REPO = Path(__file__).resolve().parents[2]


def decide(port: int, dialled: str, endpoint: str) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(env_block(dialled, endpoint=endpoint))
        line = sock.makefile("rb").readline().decode()
        sock.sendall(b"200 result=0\n")
    return parse_mset(line)["CP_REASON"]


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def backup(db: Path, to: Path) -> None:
    with sqlite3.connect(db) as source, sqlite3.connect(to) as target:
        source.backup(target)
    target.close()


def wait_for(check, what: str, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_damaged_database_replacing_the_live_one(tmp_path: Path) -> None:
    port, metrics_port, db = free_port(), free_port(), tmp_path / "cp.db"
    config = tmp_path / "callpolicy.toml"
    text = (REPO / "config" / "callpolicy.toml").read_text()
    text = text.replace('path = "/var/lib/callpolicy/callpolicy.db"', f'path = "{db}"')
    text = text.replace('listen = "127.0.0.1:4573"', f'listen = "127.0.0.1:{port}"')
    text = text.replace('listen = "127.0.0.1:9464"', f'listen = "127.0.0.1:{metrics_port}"')
    config.write_text(text)
    assert cli("customer", "import", str(REPO / "config" / "demo-customers.toml"),
               config=config).returncode == 0
    damaged, good = tmp_path / "damaged.db", tmp_path / "good.db"
    backup(db, damaged)
    damage_calls_table(damaged)
    backup(db, good)
    log = tmp_path / "serve.log"
    daemon = start(["serve"], config, log)
    try:
        wait_port(port)
        assert decide(port, "092101299", "acme-101") == "allowed"
        assert decide(port, "092101299", "bakkerij-201") == "suspended"
        os.replace(damaged, db)  # `cp --remove-destination backup.db cp.db`: a new inode

        result = cli("customer", "suspend", "acme", "--by", "alice", "--ticket", "T-1",
                     config=config)
        assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result
        assert "damaged" in result.stderr or "integrity" in result.stderr, result.stderr

        wait_for(lambda: metric(metrics_port, "callpolicy_store_ok") == 0,
                 "the daemon did not notice the replaced database")
        for _ in range(3):  # still deciding from the last good snapshot
            assert decide(port, "092101299", "bakkerij-201") == "suspended"
            assert decide(port, "092101299", "acme-101") == "allowed"
            time.sleep(0.5)
        status = cli("status", config=config)
        assert status.returncode == 3 and "database unusable" in status.stdout, status
        assert "restore a good copy" in status.stdout and "last good snapshot" in status.stdout
        assert log.read_text().count('"store_unusable"') == 1  # once per episode

        # the operator puts a good copy back, where acme is suspended
        assert cli("--db", str(good), "customer", "suspend", "acme", "--by", "alice",
                   "--ticket", "T-2", config=config).returncode == 0
        shutil.copy(good, tmp_path / "good2.db")
        os.replace(tmp_path / "good2.db", db)
        wait_for(lambda: metric(metrics_port, "callpolicy_store_ok") == 1,
                 "the daemon did not recover from a good database")
        assert decide(port, "092101299", "acme-101") == "suspended"
        assert decide(port, "092101299", "bakkerij-201") == "suspended"
        # the status is published every 0.5 s
        wait_for(lambda: "database unusable" not in cli("status", config=config).stdout,
                 "status still says the database is unusable")
        assert '"store_recovered"' in log.read_text()
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()


async def test_a_backup_restored_in_place_is_noticed_by_the_snapshot(tmp_path: Path) -> None:
    """Restored over the same file (same inode, e.g. with SQLite's backup API): the audit
    log lost the rows the snapshot was built up to. Before, the refresh saw "no change" and
    the daemon went on with a snapshot the database no longer matched."""
    from callpolicy.policy import build_policy_config
    from callpolicy.store import Actor, SnapshotSource, Store, StoreReplaced

    db, old = tmp_path / "cp.db", tmp_path / "old.db"
    assert cli("--db", str(db), "customer", "import",
               str(REPO / "config" / "demo-customers.toml"),
               config=REPO / "config" / "callpolicy.toml").returncode == 0
    backup(db, old)
    async with await Store.open(db) as store:
        await store.suspend("acme", Actor("alice", "T-1"))
        source = SnapshotSource(store, build_policy_config())
        await source.load()
        assert source.snapshot.customers["acme"].suspended
        backup(old, db)  # the older state, written into the same file
        try:
            await source.refresh()
            raise AssertionError("the restored database went unnoticed")
        except StoreReplaced as exc:
            assert "replaced or rolled back" in str(exc)
