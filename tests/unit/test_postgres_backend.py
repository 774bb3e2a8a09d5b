"""The PostgreSQL backend end to end: the location rules, `callpolicy --db postgresql://…`
(customer import, check, unblock, audit, db status/migrate) and `serve --db postgresql://…`
deciding FastAGI calls. The store's own tests run on both backends (db_location)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from agi_peer import env_block, parse_mset
from backends import query, script
from cli_runner import one_error_line, run
from test_daemon import free_port, wait_port

from callpolicy.live.records import CallRecord
from callpolicy.live.records_spool import CallSpool
from callpolicy.live.records_writer import RecordWriter
from callpolicy.policy import FraudLimits, UnblockKind
from callpolicy.service.config import ConfigError, load_settings
from callpolicy.service.metrics import Metrics
from callpolicy.store import (
    SCHEMA_VERSION,
    Actor,
    StoreLocation,
    StoreURLError,
    contract_today,
    open_store,
    parse_location,
)
from callpolicy.store.local_copy import is_local_copy
from callpolicy.store.postgres.changes import APPLICATION_NAME, ChangeFeed
from callpolicy.store.postgres.connection import folded, plan
from callpolicy.store.url import redacted

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "config" / "demo-customers.toml")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


# -- where the database is ----------------------------------------------------------------

def test_a_location_is_a_path_a_sqlite_url_or_a_postgresql_url(tmp_path: Path) -> None:
    assert parse_location("cp.db") == StoreLocation(Path("cp.db"))
    assert parse_location("cp.db", tmp_path) == StoreLocation(tmp_path / "cp.db")
    assert parse_location("/var/lib/cp.db", tmp_path) == StoreLocation(Path("/var/lib/cp.db"))
    assert parse_location("sqlite:///var/lib/cp.db") == StoreLocation(Path("/var/lib/cp.db"))
    assert parse_location("sqlite:////var/lib/cp.db") == StoreLocation(Path("/var/lib/cp.db"))
    assert parse_location("sqlite:cp.db", tmp_path) == StoreLocation(tmp_path / "cp.db")
    url = "postgresql://cp:s3cret@db.example:5433/callpolicy"
    where = parse_location(url, tmp_path)
    assert (where.backend, where.url, where.path) == ("postgresql", url, None)
    assert str(where) == "postgresql://cp:***@db.example:5433/callpolicy"
    assert redacted("postgresql://cp@db/x") == "postgresql://cp@db/x"
    for bad, says in (("mysql://h/db", "unknown database scheme 'mysql'"),
                      ("sqlite://host/x", "not a file"), ("sqlite:", "no file"),
                      ("postgresql:///db", "no host"), ("postgresql://h:99999/db", "bad port"),
                      ("  ", "empty")):
        with pytest.raises(StoreURLError, match=says):
            parse_location(bad)


def test_store_url_in_the_config_and_the_environment(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CALLPOLICY_DB", raising=False)
    config = tmp_path / "callpolicy.toml"
    url = "postgresql://cp:pw@127.0.0.1/cp"
    config.write_text(f'[store]\nurl = "{url}"\npath = "local.db"\n')
    settings = load_settings(str(config))
    assert (settings.db.url, settings.db_path) == (url, tmp_path / "local.db")
    assert settings.db_listen  # LISTEN/NOTIFY unless told otherwise
    config.write_text(f'[store]\nurl = "{url}"\nlisten = false\n')
    assert not load_settings(str(config)).db_listen
    config.write_text(f'[store]\nurl = "{url}"\nlisten = "no"\n')
    with pytest.raises(ConfigError, match=r"store\.listen must be a bool, got 'no'"):
        load_settings(str(config))
    config.write_text('[store]\nurl = "sqlite:data/cp.db"\n')
    settings = load_settings(str(config))
    assert (settings.db.url, settings.db.path) == (None, tmp_path / "data" / "cp.db")
    config.write_text('[store]\nurl = "sqlite:///x.db"\npath = "y.db"\n')
    with pytest.raises(ConfigError, match=r"store\.path and a SQLite store\.url"):
        load_settings(str(config))
    config.write_text('[store]\nurl = "oracle://h/db"\n')
    with pytest.raises(ConfigError, match=r"store\.url: .*unknown database scheme"):
        load_settings(str(config))
    config.write_text('[store]\nurl = "sqlite:///x.db"\nuri = "typo"\n')
    with pytest.raises(ConfigError, match="uri"):
        load_settings(str(config))
    config.write_text('[store]\npath = "local.db"\n')
    monkeypatch.setenv("CALLPOLICY_DB", url)
    assert load_settings(str(config)).db.url == url
    monkeypatch.setenv("CALLPOLICY_DB", "other.db")
    settings = load_settings(str(config))
    assert (settings.db.url, settings.db.path) == (None, Path("other.db"))


def test_the_fallback_agi_imports_no_asyncpg() -> None:
    """The fallback runs inside Asterisk's image, which has no asyncpg."""
    code = ("import sys, callpolicy.store, callpolicy.service.config, callpolicy.policy; "
            "sys.exit('asyncpg' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "agi")}
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0


# -- the CLI -----------------------------------------------------------------------------

def test_cli_on_postgresql(pg_url: str) -> None:
    status = run("db", "status", db=pg_url)
    assert status.returncode == 1 and "schema: none" in status.stdout, status
    migrated = run("db", "migrate", db=pg_url)
    assert migrated.returncode == 0, migrated.stderr
    assert f"migrated from nothing to schema {SCHEMA_VERSION}" in migrated.stdout
    assert "already up to date" in run("db", "migrate", db=pg_url).stdout
    status = run("db", "status", "--json", db=pg_url)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == {
        "backend": "postgresql", "database": pg_url, "schema_version": SCHEMA_VERSION,
        "latest": SCHEMA_VERSION, "state": "current"}

    imported = run("customer", "import", DEMO, db=pg_url)
    assert imported.returncode == 0, imported.stderr
    assert f"into {pg_url}: 2 created" in imported.stdout
    checked = run("check", "--customer", "acme", "--json", "0905123456", db=pg_url)
    assert json.loads(checked.stdout)["reason"] == "premium", checked
    unblocked = run("unblock", "acme", "--prefix", "0905", "--by", "alice", "--ticket", "T-9",
                    db=pg_url)
    assert unblocked.returncode == 0, unblocked.stderr
    checked = run("check", "--customer", "acme", "--json", "0905123456", db=pg_url)
    assert json.loads(checked.stdout)["reason"] == "unblocked", checked
    audit = run("audit", "acme", "--json", db=pg_url)
    entries = [json.loads(line) for line in audit.stdout.splitlines()]
    assert [e["action"] for e in entries] == ["customer.create", "unblock.add"]
    assert (entries[-1]["actor"], entries[-1]["ticket"]) == ("alice", "T-9")
    assert run("customer", "suspend", "acme", "--by", "a", "--ticket", "T", db=pg_url
               ).returncode == 0
    one_error_line(run("customer", "suspend", "acme", "--by", "a", "--ticket", "T",
                       db=pg_url), 1, "already suspended")


def test_cli_database_errors_are_one_line(pg_server, pg_url: str) -> None:
    one_error_line(run("customer", "list", db="mysql://h/db"), 2, "unknown database scheme")
    one_error_line(run("customer", "list", db=pg_url), 1, "has no callpolicy schema")
    one_error_line(run("db", "status", db=pg_server.url("absent")), 1, "does not exist")
    refused = run("customer", "list", db="postgresql://cp:s3cret@127.0.0.1:1/cp")
    one_error_line(refused, 1, "cannot open database postgresql://cp:***@127.0.0.1:1/cp")
    assert "s3cret" not in refused.stderr
    assert run("db", "migrate", db=pg_url).returncode == 0
    asyncio.run(query(pg_url, "UPDATE schema_version SET version = 99"))
    one_error_line(run("db", "migrate", db=pg_url), 1, "newer than this callpolicy")
    assert run("db", "status", db=pg_url).returncode == 1


# -- the daemon ----------------------------------------------------------------------------

def ask(port: int, dialled: str, uniqueid: str) -> dict[str, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(env_block(dialled).replace(b"agi_uniqueid: 1.1",
                                                f"agi_uniqueid: {uniqueid}".encode()))
        line = sock.makefile("rb").readline().decode()
        sock.sendall(b"200 result=0\n")
    return parse_mset(line)


def serve(url: str, tmp_path: Path, metrics_port: int = 0
          ) -> tuple[subprocess.Popen[bytes], int, Path]:
    """`callpolicy serve --db URL` on a free port (its log in tmp_path/serve.log, its config
    tmp_path/callpolicy.toml)."""
    port = free_port()
    config = tmp_path / "callpolicy.toml"
    text = (REPO / "config" / "callpolicy.toml").read_text()
    text = text.replace('path = "/var/lib/callpolicy/callpolicy.db"',
                        f'path = "{tmp_path / "local.db"}"')
    text = text.replace('listen = "127.0.0.1:4573"', f'listen = "127.0.0.1:{port}"')
    text = text.replace('listen = "127.0.0.1:9464"', f'listen = "127.0.0.1:{metrics_port}"')
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLPOLICY_", "NOTIFY_"))}
    log = tmp_path / "serve.log"
    daemon = subprocess.Popen(
        [sys.executable, "-m", "callpolicy.cli", "--config", str(config), "serve", "--db",
         url], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    return daemon, port, log


def stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.kill()
        daemon.wait(timeout=10)


def test_serve_decides_from_postgresql_and_sees_cli_changes(pg_url: str, tmp_path: Path
                                                            ) -> None:
    assert run("customer", "import", DEMO, db=pg_url).returncode == 0
    daemon, port, log = serve(pg_url, tmp_path)
    try:
        wait_port(port)
        assert ask(port, "0905123456", "pg.1")["CP_REASON"] == "premium"
        assert ask(port, "092101299", "pg.2")["CP_ACTION"] == "allow"
        assert run("unblock", "acme", "--prefix", "0905", "--by", "t", "--ticket", "T",
                   db=pg_url).returncode == 0
        changed = time.monotonic()
        while ask(port, "0905123456", "pg.3")["CP_REASON"] != "unblocked":
            assert time.monotonic() - changed < 1.0, "change not live within 1 s"
            time.sleep(0.05)
        print(f"postgresql: CLI change live in the daemon after "
              f"{(time.monotonic() - changed) * 1000:.0f} ms")
        deadline = time.monotonic() + 10  # the daemon's call records land in PostgreSQL
        while True:
            listed = run("calls", "--json", db=pg_url)
            ids = {json.loads(line)["uniqueid"] for line in listed.stdout.splitlines()}
            if {"pg.1", "pg.2"} <= ids:
                break
            assert time.monotonic() < deadline, (ids, listed.stderr)
            time.sleep(0.3)
        daemon.terminate()
        assert daemon.wait(timeout=10) == 0
    finally:
        stop(daemon)
    output = log.read_text()
    assert '"snapshot_loaded"' in output and "postgresql://" in output, output[-2000:]
    # the store is PostgreSQL; the local file is only the fallback's copy (test_local_snapshot)
    assert is_local_copy(tmp_path / "local.db")


def test_the_store_sql_in_postgresql_dialect() -> None:
    assert plan("SELECT a FROM t WHERE b = ? AND c IN (?, ?,?) AND d > ? LIMIT ?") == (
        "SELECT a FROM t WHERE b = $1 AND c = ANY($2) AND d > $3 LIMIT $4", ((1, 4),))
    assert folded(("b", "c1", "c2", "c3", "d", 5), ((1, 4),)) == (
        "b", ["c1", "c2", "c3"], "d", 5)
    assert plan("DELETE FROM n WHERE customer_id IN (SELECT value FROM json_each(?))")[0] == (
        "DELETE FROM n WHERE customer_id IN (SELECT json_array_elements_text($1::json))")
    assert plan("SELECT '?' FROM t WHERE x = ?")[0] == "SELECT '?' FROM t WHERE x = $1"


async def test_call_records_the_database_refuses_are_rejected_not_spooled_forever(
        pg_url: str, tmp_path: Path) -> None:
    """The record writer tells the record's fault (rejected, kept aside) from the database's
    (spooled, replayed) by the error's class: PostgreSQL's errors must sort the same way."""
    await (await open_store(pg_url, create=True)).close()
    await script(pg_url, """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
            IF NEW.uniqueid = 'bad' THEN RAISE EXCEPTION 'refused by a constraint'; END IF;
            RETURN NEW; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON calls FOR EACH ROW EXECUTE FUNCTION refuse();
        """)
    huge = CallRecord("huge", started_at=T0, ended_at=T0, hangup_cause=1 << 40)  # > INTEGER
    unsendable = CallRecord("odd", started_at=T0)
    unsendable.endpoint = object()  # type: ignore[assignment]
    writer = RecordWriter(StoreLocation(None, pg_url), CallSpool(tmp_path / "spool.jsonl"),
                          Metrics())
    await writer.flush([CallRecord("ok1", started_at=T0), CallRecord("bad", started_at=T0),
                        huge, unsendable, CallRecord("ok2", started_at=T0)])
    assert await query(pg_url, "SELECT uniqueid FROM calls ORDER BY uniqueid") == [
        ("ok1",), ("ok2",)]
    assert (writer.spool.pending, writer.spool.rejected) == (0, 3)
    await writer.close([])


def metric(port: int, name: str) -> float | None:
    """One unlabelled series of the daemon's /metrics; None if it has none."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
    return None


def wait_until(check: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll `check` every 20 ms until true; the seconds it took (fails past `seconds`)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"{what}: not within {seconds:g} s"
        time.sleep(0.02)
    return time.monotonic() - started


def log_events(log: Path) -> list[str]:
    return [json.loads(line)["event"] for line in log.read_text().splitlines()
            if line.startswith("{")]


def flips(port: int, reason: str, tag: str) -> Callable[[], bool]:
    """A check: the daemon now answers `reason` for acme's 0905 call."""
    count = iter(range(1_000_000))
    return lambda: ask(port, "0905123456", f"{tag}.{next(count)}")["CP_REASON"] == reason


def test_serve_keeps_deciding_while_postgresql_is_down_and_recovers(
        pg_server, pg_url: str, tmp_path: Path) -> None:
    """Decisions never query the database: with the server stopped the daemon decides from
    its snapshot, says so once (store_unusable, change_feed_lost), in its metrics and in
    `callpolicy status`, and reloads once the server is back, its change feed too."""
    assert run("customer", "import", DEMO, db=pg_url).returncode == 0
    metrics_port = free_port()
    daemon, port, log = serve(pg_url, tmp_path, metrics_port)
    config = tmp_path / "callpolicy.toml"
    try:
        wait_port(port)
        wait_until(lambda: metric(metrics_port, "callpolicy_change_feed_connected") == 1, 10,
                   "change feed listening")
        pg_server.stop()
        try:
            time.sleep(1.0)  # several refresh rounds fail meanwhile
            assert ask(port, "0905123456", "down.1")["CP_REASON"] == "premium"
            assert ask(port, "092101299", "down.2")["CP_ACTION"] == "allow"
            one_error_line(run("customer", "list", db=pg_url), 1, "cannot open database")
            wait_until(lambda: metric(metrics_port, "callpolicy_store_ok") == 0, 10,
                       "store_ok 0")
            wait_until(lambda: metric(metrics_port, "callpolicy_change_feed_connected") == 0,
                       10, "change feed down")
            wait_until(lambda: "database unusable" in run("status", config=config).stdout, 15,
                       "status showing the outage")
            status = run("status", config=config)
            assert status.returncode == 3, status
            assert "changes by poll (LISTEN DOWN)" in status.stdout, status.stdout
            assert "change feed (PostgreSQL LISTEN) down" in status.stdout, status.stdout
            time.sleep(1.0)  # more failed reconnections: still one line each
        finally:
            pg_server.start()
        wait_until(lambda: '"store_recovered"' in log.read_text(), 15, "store_recovered")
        wait_until(lambda: metric(metrics_port, "callpolicy_change_feed_connected") == 1, 10,
                   "change feed back")
        assert metric(metrics_port, "callpolicy_store_ok") == 1
        assert run("unblock", "acme", "--prefix", "0905", "--by", "t", "--ticket", "T",
                   db=pg_url).returncode == 0
        took = wait_until(flips(port, "unblocked", "up"), 1.0, "a change after the outage")
        print(f"after the outage: change live in {took * 1000:.0f} ms")
        status = run("status", config=config).stdout  # (its AMI link is down: no Asterisk)
        assert "changes by LISTEN/NOTIFY" in status and "database" not in status, status
    finally:
        stop(daemon)
    events = log_events(log)
    assert events.count("store_unusable") == 1, events
    assert events.count("change_feed_lost") == 1, events
    assert events.count("change_feed_restored") == 1, events


async def test_a_committed_change_is_announced_to_the_change_feed(pg_url: str) -> None:
    """A commit NOTIFYs the daemons' LISTEN connection (the audit log's trigger); an import
    of several customers is one notification (one transaction)."""
    store = await open_store(pg_url, create=True)
    told = asyncio.Event()
    states: list[bool] = []
    feed = ChangeFeed(pg_url, told.set, states.append)
    task = asyncio.create_task(feed.run())
    try:
        await asyncio.wait_for(told.wait(), 10)  # connected: one catch-up call
        assert states == [True] and feed.connected
        told.clear()
        assert run("customer", "import", DEMO, db=pg_url).returncode == 0
        await asyncio.wait_for(told.wait(), 5.0)
        await asyncio.sleep(0.2)
        assert feed.notifications == 1
        told.clear()
        started = time.monotonic()
        await store.add_unblock("acme", UnblockKind.PREFIX, "+32905", Actor("t", "T"), None)
        await asyncio.wait_for(told.wait(), 5.0)  # the alternative: never
        print(f"NOTIFY after a commit: {(time.monotonic() - started) * 1000:.1f} ms")
        assert feed.notifications == 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()


def test_a_lost_listen_connection_loses_no_change(pg_server, pg_url: str,
                                                  tmp_path: Path) -> None:
    """The daemon's LISTEN connection killed (pg_terminate_backend) and kept out (the
    database refuses new connections): a change still reaches the daemon within 1 s by the
    catch-up poll. The episode is one line and the metric; the feed comes back by itself."""
    assert run("customer", "import", DEMO, db=pg_url).returncode == 0
    database = pg_url.rsplit("/", 1)[1]
    metrics_port = free_port()
    daemon, port, log = serve(pg_url, tmp_path, metrics_port)

    async def change_while_the_feed_is_out() -> float:
        store = await open_store(pg_url)  # before the database refuses connections
        try:
            pg_server.sql(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
            killed = pg_server.sql("SELECT count(pg_terminate_backend(pid)) FROM "
                                   f"pg_stat_activity WHERE application_name = "
                                   f"'{APPLICATION_NAME}' AND datname = '{database}'")
            assert killed == "1", killed
            await asyncio.to_thread(wait_until, lambda: metric(
                metrics_port, "callpolicy_change_feed_connected") == 0, 5, "feed lost")
            await store.add_unblock("acme", UnblockKind.PREFIX, "+32905", Actor("t", "T"), None)
            return await asyncio.to_thread(wait_until, flips(port, "unblocked", "out"), 1.0,
                                           "a change with the feed out")
        finally:
            await store.close()
            pg_server.sql(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")

    try:
        wait_port(port)
        wait_until(lambda: metric(metrics_port, "callpolicy_change_feed_connected") == 1, 10,
                   "change feed listening")
        took = asyncio.run(change_while_the_feed_is_out())
        print(f"feed out: change live by the catch-up poll in {took * 1000:.0f} ms")
        wait_until(lambda: metric(metrics_port, "callpolicy_change_feed_connected") == 1, 10,
                   "change feed back")
        assert run("reblock", "acme", "--prefix", "0905", "--by", "t", "--ticket", "T",
                   db=pg_url).returncode == 0
        took = wait_until(flips(port, "premium", "back"), 1.0, "a change with the feed back")
        print(f"feed back: change live in {took * 1000:.0f} ms")
    finally:
        stop(daemon)
    events = log_events(log)
    assert events.count("change_feed_lost") == 1, events
    assert events.count("change_feed_restored") == 1, events
    assert "store_unusable" not in events, events


# -- the move from SQLite ------------------------------------------------------------------

async def test_db_copy_moves_everything_with_its_ids_and_the_daemons_see_the_same(
        pg_url: str, tmp_path: Path) -> None:
    source = tmp_path / "cp.db"
    assert run("customer", "import", DEMO, "--by", "alice", "--ticket", "T-1", db=source
               ).returncode == 0
    alice = Actor("alice", "T-2", "test")
    async with await open_store(source) as store:
        await store.add_unblock("acme", UnblockKind.PREFIX, "+32905", alice, None)
        await store.reblock("acme", UnblockKind.PREFIX, "+32905", alice)
        await store.add_unblock("acme", UnblockKind.COUNTRY, "CH", alice, None)
        await store.set_limits("acme", FraudLimits(max_concurrent=3), alice)
        await store.record_reminder("acme", contract_today(datetime.now(UTC)), alice)
        await store.record_calls([CallRecord("c1", customer_id="acme", started_at=T0,
                                             answered_at=T0, ended_at=T0, hangup_cause=16)])
    usage = run("db", "copy", "--from", str(source), db=tmp_path / "other.db")
    one_error_line(usage, 2, "not a postgresql:// URL")
    copied = run("db", "copy", "--from", str(source), db=pg_url)
    assert copied.returncode == 0, copied.stderr
    assert "customers 2" in copied.stdout and "audit 8" in copied.stdout, copied.stdout
    one_error_line(run("db", "copy", "--from", str(source), db=pg_url), 1,
                   "already holds callpolicy data")

    async with await open_store(source) as old, await open_store(pg_url) as new:
        for read in (lambda s: s.customer("acme"), lambda s: s.audit_log(limit=100),
                     lambda s: s.unblocks(include_inactive=True), lambda s: s.calls(),
                     lambda s: s.scheduled_suspension("acme"), lambda s: s.load_customers(),
                     lambda s: s.open_reminders("acme"), lambda s: s.audit_high_water()):
            assert await read(new) == await read(old)
        # the ids go on after the copied ones
        unblock = await new.add_unblock("bakkerij", UnblockKind.COUNTRY, "CH", alice, None)
        assert unblock == 3
        assert await new.audit_high_water() == 9
