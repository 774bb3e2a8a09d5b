"""`supervise` stopping: a stop signal reaches the daemon whenever it comes, and the daemon is
reaped, never left behind (CI once saw a stop signal land between starting a daemon and
naming it, which left that daemon running and unreaped after the supervisor exited)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from callpolicy.service import watchdog

# A stand-in daemon: pings like the real one, exits 0 on SIGTERM, else sleeps.
DAEMON = """
import os, signal, socket, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
while True:
    sock.sendto(b"WATCHDOG=1", os.environ["NOTIFY_SOCKET"])
    time.sleep(0.05)
"""


@pytest.fixture(autouse=True)
def keep_signal_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def reaped(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_stop_signal_between_start_and_naming_the_daemon_still_stops_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen_then_sigterm(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        process = real_popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(process)
        os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before supervise names it
        return process

    monkeypatch.setattr(watchdog.subprocess, "Popen", popen_then_sigterm)
    began = time.monotonic()
    assert watchdog.supervise([sys.executable, "-c", DAEMON], watchdog_sec=5.0) == 0
    assert time.monotonic() - began < watchdog.STOP_GRACE, "the daemon never got the signal"
    [daemon] = started
    # it got SIGTERM (here before its handler was installed) and supervise reaped it
    assert daemon.returncode == -signal.SIGTERM
    assert reaped(daemon.pid)


def test_a_daemon_that_ignores_sigterm_is_killed_after_the_grace_and_reaped(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(watchdog, "STOP_GRACE", 0.3)
    stubborn = DAEMON.replace("lambda *_: sys.exit(0)", "signal.SIG_IGN")
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen_and_stop_soon(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        process = real_popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(process)
        signal.setitimer(signal.ITIMER_REAL, 3.0)  # SIGALRM -> SIGTERM to ourselves
        return process

    signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    monkeypatch.setattr(watchdog.subprocess, "Popen", popen_and_stop_soon)
    try:
        assert watchdog.supervise([sys.executable, "-c", stubborn], watchdog_sec=5.0) == 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
    [daemon] = started
    assert daemon.returncode == -signal.SIGKILL and reaped(daemon.pid)
    assert "daemon_stop_timeout_killed" in capsys.readouterr().out
