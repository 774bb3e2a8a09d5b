"""`callpolicy serve` and `callpolicy watchdog` as real processes, spoken to over FastAGI."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from agi_peer import env_block, parse_mset

from callpolicy.live.records import CallRecord
from callpolicy.live.records_spool import CallSpool, spool_path
from ports import free_port

REPO = Path(__file__).resolve().parents[2]



def ask(port: int, dialled: str, timeout: float = 3.0) -> dict[str, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(env_block(dialled))
        line = sock.makefile("rb").readline().decode()
        sock.sendall(b"200 result=0\n")
    return parse_mset(line)


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port}")


def cli(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callpolicy.cli", "--config", str(config),
                           *args], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    port = free_port()
    config = tmp_path / "callpolicy.toml"
    text = (REPO / "config" / "callpolicy.toml").read_text()
    text = text.replace('path = "/var/lib/callpolicy/callpolicy.db"',
                        f'path = "{tmp_path / "cp.db"}"')
    text = text.replace('listen = "127.0.0.1:4573"', f'listen = "127.0.0.1:{port}"')
    text = text.replace('listen = "127.0.0.1:9464"', 'listen = "127.0.0.1:0"')
    config.write_text(text)
    result = cli("customer", "import", str(REPO / "config" / "demo-customers.toml"),
                 config=config)
    assert result.returncode == 0, result.stderr
    yield config, port


def start(args: list[str], config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLPOLICY_", "NOTIFY_"))}
    return subprocess.Popen([sys.executable, "-m", "callpolicy.cli", "--config", str(config),
                             *args], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)


def test_cli_changes_are_live_within_a_second_and_sighup_reloads(setup, tmp_path) -> None:
    config, port = setup
    daemon = start(["serve"], config, tmp_path / "serve.log")
    try:
        wait_port(port)
        assert ask(port, "0905123456")["CP_REASON"] == "premium"
        assert cli("unblock", "acme", "--prefix", "0905", "--by", "t", "--ticket", "T",
                   config=config).returncode == 0
        changed = time.monotonic()
        while ask(port, "0905123456")["CP_REASON"] != "unblocked":
            assert time.monotonic() - changed < 1.0, "CLI change not live within 1 s"
            time.sleep(0.05)
        # SIGHUP: 0908 becomes a premium prefix without a restart.
        assert ask(port, "0908123456")["CP_ACTION"] == "allow"
        config.write_text(config.read_text().replace('"0909"]', '"0909", "0908"]'))
        daemon.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 2
        while ask(port, "0908123456")["CP_ACTION"] != "block":
            assert time.monotonic() < deadline, "SIGHUP did not reload the premium list"
            time.sleep(0.05)
        # A broken config on SIGHUP is refused, the daemon keeps the last good one.
        config.write_text("[policy]\npremium_prefixes = ['junk']\n")
        daemon.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert ask(port, "0908123456")["CP_ACTION"] == "block"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    log = (tmp_path / "serve.log").read_text()
    assert '"config_reload_failed"' in log and '"event": "decision"' in log
    # uvloop is a dependency: where it is installed, the daemon runs on it
    listening = next(json.loads(line) for line in log.splitlines()
                     if '"event": "listening"' in line)
    assert listening["loop"] == ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio")
    assert any(dep.startswith("uvloop") for dep in tomllib.loads(
        (REPO / "pyproject.toml").read_text())["project"]["dependencies"])


def freeze_until_replaced(pidfile: Path, what: str) -> int:
    """SIGSTOP the supervised process named in `pidfile`; its pid once another replaced it."""
    frozen = int(pidfile.read_text())
    os.kill(frozen, signal.SIGSTOP)
    stopped = time.monotonic()
    while pidfile.read_text().strip() == str(frozen):  # watchdog 0.5 s, back-off 0.2 s
        assert time.monotonic() - stopped < 15, f"frozen {what} not replaced"
        time.sleep(0.05)
    print(f"frozen {what} replaced after {time.monotonic() - stopped:.2f} s")
    return frozen


def stop_supervisor(supervisor: subprocess.Popen[bytes], frozen: int, pidfile: Path,
                    log: Path) -> None:
    """The frozen process killed and reaped; SIGTERM stops the supervisor and its child."""
    with pytest.raises(ProcessLookupError):
        os.kill(frozen, 0)  # killed and reaped, not left stopped
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=15) == 0
    last = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(last, 0)
        pytest.fail(f"{last} left behind by its supervisor:\n{log.read_text()[-4000:]}")


def test_watchdog_kills_a_frozen_daemon_and_restarts_it(setup, tmp_path) -> None:
    config, port = setup
    pidfile, log = tmp_path / "daemon.pid", tmp_path / "watchdog.log"
    supervisor = start(["watchdog", "--watchdog-sec", "0.5", "--pidfile", str(pidfile)],
                       config, log)
    try:
        wait_port(port)
        assert ask(port, "092101299")["CP_ACTION"] == "allow"
        frozen = freeze_until_replaced(pidfile, "daemon")
        wait_port(port)
        assert ask(port, "092101299")["CP_ACTION"] == "allow"
        stop_supervisor(supervisor, frozen, pidfile, log)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    assert '"daemon_frozen_killed"' in log.read_text()


def test_daemon_refuses_from_the_scheduled_second_and_writes_the_suspension(
        setup, tmp_path) -> None:
    config, port = setup
    daemon = start(["serve"], config, tmp_path / "serve.log")
    try:
        wait_port(port)
        # far enough ahead for a slow host's CLI start-up (else "in the past") and a refresh
        due = datetime.now(UTC) + timedelta(seconds=5)
        result = cli("customer", "suspend", "acme", "--at", due.isoformat(), "--by", "alice",
                     "--ticket", "T-AT", config=config)
        assert result.returncode == 0, result.stderr
        while datetime.now(UTC) < due - timedelta(seconds=0.2):
            assert ask(port, "092101299")["CP_ACTION"] == "allow"  # not before its time
            time.sleep(0.1)
        time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()))
        refused = ask(port, "092101299")  # exact to the second: no database write needed
        assert (refused["CP_ACTION"], refused["CP_REASON"]) == ("block", "suspended")
        assert ask(port, "112")["CP_ACTION"] == "allow"
        deadline = time.monotonic() + 15
        while json.loads(cli("customer", "show", "acme", "--json", config=config).stdout
                         )["status"] != "suspended":
            assert time.monotonic() < deadline, "the daemon did not write the due suspension"
            time.sleep(0.1)
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    entries = [json.loads(line) for line in cli("audit", "acme", "--json", config=config)
               .stdout.splitlines()]
    assert [(e["action"], e["actor"], e["ticket"]) for e in entries[-2:]] == [
        ("customer.suspend_scheduled", "alice", "T-AT"),
        ("customer.suspend", "callpolicy-scheduler", "T-AT")]
    assert '"scheduled_suspension_applied"' in (tmp_path / "serve.log").read_text()


def test_serve_without_database_is_one_clear_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "callpolicy.cli", "serve", "--db",
                             str(tmp_path / "none.db")], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 1
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_status_of_a_daemon_without_ami_then_of_no_daemon(setup, tmp_path) -> None:
    config, port = setup
    metrics_port = free_port()
    config.write_text(config.read_text().replace('listen = "127.0.0.1:0"',
                                                 f'listen = "127.0.0.1:{metrics_port}"'))
    daemon = start(["serve"], config, tmp_path / "serve.log")  # no AMI secret: not configured
    try:
        wait_port(port)
        wait_port(metrics_port)
        assert ask(port, "092101299")["CP_ACTION"] == "allow"
        deadline = time.monotonic() + 15
        while True:  # published every 0.5 s
            result = cli("status", "--json", config=config)
            status = json.loads(result.stdout)
            if status["decisions"]["total"] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert result.returncode == 3, result.stderr
        assert status["ami"]["state"] == "not_configured"
        assert status["fraud_guard"]["concurrency_enforced"] is False
        assert status["live_calls"]["by_customer"]["acme"]["last_minute"] == 1
        assert status["decisions"]["by_reason"] == {"allowed": 1}
        text = cli("status", config=config)
        assert text.returncode == 3 and text.stderr == ""
        assert "AMI link     NOT CONFIGURED" in text.stdout
        assert "DEGRADED: AMI link not configured" in text.stdout
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    gone = cli("status", config=config)
    assert gone.returncode == 1 and gone.stdout == ""
    assert gone.stderr.splitlines() == [
        f"callpolicy: error: no daemon answering on http://127.0.0.1:{metrics_port}/status: "
        "connection refused"]
    log = (tmp_path / "serve.log").read_text()
    assert log.count('"event": "fraud_guard_degraded"') == 1


def test_a_restarted_daemon_replays_the_call_record_spool(setup, tmp_path) -> None:
    """Records an earlier run could not write (spooled next to the database) reach the
    database when the daemon starts, in order, and leave the spool."""
    config, port = setup
    spool_file = spool_path(tmp_path / "cp.db")
    start_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    spool = CallSpool(spool_file)
    spool.scan()
    assert spool.append([
        CallRecord("spool.1", customer_id="acme", dialled="0800 12 345",
                   destination="+3280012345", category="national", action="allow",
                   reason="allowed", source="daemon", started_at=start_at),
        CallRecord("spool.1", answered_at=start_at + timedelta(seconds=1)),
        CallRecord("spool.1", ended_at=start_at + timedelta(seconds=4), hangup_cause=None),
        CallRecord("spool.1", ended_at=start_at + timedelta(seconds=31), hangup_cause=16),
        CallRecord("spool.2", customer_id="acme", dialled="0905123456", action="block",
                   reason="premium", started_at=start_at, ended_at=start_at),
    ]) == 5
    daemon = start(["serve"], config, tmp_path / "serve.log")
    try:
        wait_port(port)
        started = time.monotonic()
        while spool_file.exists():
            assert time.monotonic() - started < 5, "spool not replayed within 5 s"
            time.sleep(0.1)
        result = cli("calls", "--json", config=config)
        assert result.returncode == 0, result.stderr
        rows = {r["uniqueid"]: r for r in map(json.loads, result.stdout.splitlines())}
        assert set(rows) == {"spool.1", "spool.2"}
        one = rows["spool.1"]
        assert (one["hangup_cause"], one["free"], one["duration_seconds"],
                one["billable_seconds"]) == (16, True, 30, 0)
        assert rows["spool.2"]["reason"] == "premium"
        # a call decided just before SIGTERM: its record is written before the daemon exits
        assert ask(port, "0905123456")["CP_REASON"] == "premium"
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    log = (tmp_path / "serve.log").read_text()
    assert '"call_spool_found"' in log and '"call_spool_replayed"' in log
    last = [json.loads(line) for line in cli("calls", "--json", config=config).stdout
            .splitlines() if json.loads(line)["uniqueid"] == "1.1"]
    assert [(r["reason"], r["source"]) for r in last] == [("premium", "daemon")]
    assert not spool_file.exists()


def test_the_daemon_raises_its_open_files_soft_limit() -> None:
    """Both listeners full need more than the common soft limit of 1024 descriptors."""
    import resource

    from callpolicy.service.connection_slots import WANTED_OPEN_FILES, raise_open_files_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        raised = raise_open_files_limit()
        assert raised == (WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY
                          else min(WANTED_OPEN_FILES, hard))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
