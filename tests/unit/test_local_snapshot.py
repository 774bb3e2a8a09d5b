"""The local snapshot: a daemon on PostgreSQL keeps a SQLite copy at `[store] path`, and the
fallback AGI (a real process, driven by tests/fake_asterisk.py) decides from it with the daemon
dead and PostgreSQL stopped."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_runner import run
from test_daemon import wait_port
from test_fallback_agi import FALLBACK, base_env
from test_postgres_backend import DEMO, serve, stop

from callpolicy.service.local_snapshot import WRITE_INTERVAL
from callpolicy.store.local_copy import (
    APPLICATION_ID,
    ASIDE_SUFFIX,
    is_local_copy,
    set_aside,
    write_sqlite,
)
from fake_asterisk import AgiRun, b64, drive_agi
from pg import PgServer, destroy, start_server

MAX_AGE = 5.0  # s: the bound on the copy's age


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    """A server of its own: this test stops it."""
    server = start_server()
    try:
        yield server
    finally:
        destroy(server)


def fallback(config: Path, dialled: str, endpoint: str = "acme-101") -> dict[str, str]:
    result: AgiRun = drive_agi([sys.executable, str(FALLBACK)],
                               ["outbound", endpoint, b64(dialled), "", "0", "127.0.0.2:5060",
                                ""], base_env(config))
    assert result.returncode == 0, result.stderr
    return result.variables


def test_the_fallback_decides_from_the_local_snapshot_with_postgresql_stopped(
        own_server: PgServer, tmp_path: Path) -> None:
    url = own_server.new_database()
    assert run("customer", "import", DEMO, db=url).returncode == 0
    daemon, port, log = serve(url, tmp_path)
    config, local = tmp_path / "callpolicy.toml", tmp_path / "local.db"
    try:
        wait_port(port)
        deadline = time.monotonic() + MAX_AGE
        while not is_local_copy(local):
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        assert fallback(config, "0905123456")["CP_REASON"] == "premium"

        assert run("unblock", "acme", "--prefix", "0905", "--by", "t", "--ticket", "T",
                   db=url).returncode == 0
        changed = time.monotonic()
        while fallback(config, "0905123456")["CP_REASON"] != "unblocked":
            assert time.monotonic() - changed < MAX_AGE, "the local copy is older than 5 s"
            time.sleep(0.1)
        print(f"local snapshot: a change reached the fallback after "
              f"{time.monotonic() - changed:.2f} s (copies at most every {WRITE_INTERVAL} s)")
    finally:
        stop(daemon)
        own_server.stop("immediate")
    # the daemon dead, PostgreSQL down: the fallback still decides, from the copy
    assert run("customer", "list", db=url).returncode == 1
    assert fallback(config, "0905123456")["CP_REASON"] == "unblocked"
    blocked = fallback(config, "0906123456")
    assert (blocked["CP_ACTION"], blocked["CP_REASON"]) == ("block", "premium")
    assert fallback(config, "092101299")["CP_ACTION"] == "allow"
    assert fallback(config, "112", "bakkerij-201")["CP_REASON"] == "emergency"
    suspended = fallback(config, "092101299", "bakkerij-201")
    assert (suspended["CP_ACTION"], suspended["CP_REASON"]) == ("block", "suspended")


def test_a_database_at_the_path_is_set_aside_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "callpolicy.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE mine (x)")
        db.execute("INSERT INTO mine VALUES (1)")
    db.close()
    moved = set_aside(path)
    assert moved == tmp_path / f"callpolicy.db{ASIDE_SUFFIX}" and not path.exists()
    with sqlite3.connect(moved) as db:
        assert db.execute("SELECT x FROM mine").fetchall() == [(1,)]
    db.close()
    write_sqlite(path, {"customers": ([], [])})
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    db.close()
    assert set_aside(path) is None  # a copy is replaced in place, not moved
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
