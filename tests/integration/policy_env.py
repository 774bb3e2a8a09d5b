"""The call-policy environment for integration tests: demo customers in the Asterisk run's
state dir, the daemon under its watchdog, the demo forwards in AstDB. Fixtures `live` (module)
and `daemon_up` (restores the daemon after a test stopped or froze it)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import Asterisk

REPO = Path(__file__).resolve().parents[2]
ACME_101, ACME_102, BAKKERIJ = "127.0.0.2", "127.0.0.4", "127.0.0.5"
AGI_PORT = 4573


def agi_listening(host: str = "127.0.0.1") -> bool:
    try:
        socket.create_connection((host, AGI_PORT), timeout=0.2).close()
        return True
    except OSError:
        return False


@dataclass
class Live:
    state: Path
    config: Path
    log: Path
    pidfile: Path
    supervisor: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"  # its FastAGI address (a cluster node's)

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "callpolicy.cli", "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, f"callpolicy {' '.join(args)}: {result.stderr}"
        return result.stdout

    def start(self, config: Path | None = None) -> None:
        """The daemon under its watchdog, on `config` (default: the normal one)."""
        assert not agi_listening(self.host), f"something else listens on {self.host}:4573"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPOLICY_")}
        self.supervisor = subprocess.Popen(
            [sys.executable, "-m", "callpolicy.cli", "--config", str(config or self.config),
             "watchdog",
             "--watchdog-sec", "1", "--pidfile", str(self.pidfile)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        try:
            while not agi_listening(self.host):
                assert self.supervisor.poll() is None, self.log.read_text()[-2000:]
                assert time.monotonic() < deadline, (
                    f"daemon did not start listening:\n{self.log.read_text()[-2000:]}")
                time.sleep(0.05)
        except BaseException:
            self.stop()  # never leave a supervisor restarting a broken daemon behind
            raise

    def stop(self) -> None:
        if self.supervisor is not None and self.supervisor.poll() is None:
            self.supervisor.send_signal(signal.SIGTERM)
            try:
                self.supervisor.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.supervisor.kill()
                self.supervisor.wait(timeout=5)
        self.supervisor = None
        deadline = time.monotonic() + 5
        while agi_listening(self.host):
            assert time.monotonic() < deadline, "daemon still listening after stop"
            time.sleep(0.05)

    @contextlib.contextmanager
    def running_with(self, config: Path) -> Iterator[None]:
        """The daemon restarted on another config (keep it in `state`, where the relative
        paths resolve) for the block; always back on the normal one afterwards."""
        self.stop()
        try:
            self.start(config)
            yield
        finally:
            self.stop()
            self.start()

    def status(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`callpolicy status` (any exit code: 3 is a normal answer)."""
        return subprocess.run(
            [sys.executable, "-m", "callpolicy.cli", "--config", str(self.config), "status",
             *args], capture_output=True, text=True, timeout=30, check=False)

    @property
    def daemon_pid(self) -> int:
        return int(self.pidfile.read_text())


def load_forwards(asterisk: Asterisk) -> None:
    for line in (REPO / "config" / "demo-forwards.txt").read_text().splitlines():
        fields = line.split("#")[0].split()
        if len(fields) >= 2:
            asterisk.rx(f"database put callforward {fields[0]} {fields[1]}")


@pytest.fixture(scope="module")
def live(asterisk: Asterisk) -> Iterator[Live]:
    state = asterisk.state_dir
    for name in ("callpolicy.db", "callpolicy.db-wal", "callpolicy.db-shm"):
        (state / name).unlink(missing_ok=True)
    shutil.copy(REPO / "config" / "demo.toml", state / "callpolicy.toml")
    live = Live(state, state / "callpolicy.toml", state / "daemon.log", state / "daemon.pid")
    live.cli("customer", "import", str(REPO / "config" / "demo-customers.toml"),
             "--by", "tests", "--ticket", "setup")
    asterisk.add_start_hook(load_forwards)
    live.start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
def daemon_up(live: Live) -> Iterator[Live]:
    """Tests that stop or freeze the daemon get it back afterwards."""
    yield live
    if live.supervisor is None or live.supervisor.poll() is not None:
        live.start()
    deadline = time.monotonic() + 10
    while not agi_listening():
        assert time.monotonic() < deadline
        time.sleep(0.05)
