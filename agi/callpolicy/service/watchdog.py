"""Keeping a frozen daemon from holding calls.

Asterisk waits forever for a connected FastAGI server: a daemon that is alive but frozen
(SIGSTOP, a blocked event loop, swapped out) would hold every call. Closing the socket releases
them (the dialplan then uses the fallback AGI), so a frozen daemon must be killed, fast.

The daemon speaks systemd's notify protocol: READY=1 once listening, then WATCHDOG=1 from its
event loop every WATCHDOG_USEC/4. Under systemd use `Type=notify`, `WatchdogSec=1`,
`Restart=always`. Without systemd, `callpolicy watchdog -- callpolicy serve …` does the same:
it kills the daemon (SIGKILL) when pings stop for the watchdog interval and restarts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("callpolicy.watchdog")

STOP_GRACE = 5.0  # the daemon's own shutdown waits at most ~2 s for in-flight answers


def _notify_address() -> str | None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    return "\0" + address[1:] if address.startswith("@") else address


def notify(message: bytes) -> None:
    """sd_notify(): best effort, never raises."""
    address = _notify_address()
    if address is None:
        return
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.sendto(message, address)


async def ping_forever() -> None:
    """Send WATCHDOG=1 at a quarter of the interval, from the event loop itself: if the
    loop is blocked, the pings stop and the supervisor kills the process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or _notify_address() is None:
        return
    interval = max(int(usec) / 4e6, 0.05)
    while True:
        notify(b"WATCHDOG=1")
        await asyncio.sleep(interval)


def supervise(command: Sequence[str], watchdog_sec: float = 1.0, pidfile: str | None = None,
              role: str = "daemon") -> int:
    """Run `command` with NOTIFY_SOCKET/WATCHDOG_USEC; SIGKILL and restart it when its pings
    stop; forward SIGTERM/SIGINT/SIGHUP; return when stopped by a signal. `role` ("daemon",
    "api") is in every log line (the events keep their daemon_* names)."""
    logger = log.bind(role=role)
    directory = tempfile.mkdtemp(prefix="callpolicy-watchdog-")
    path = str(Path(directory) / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.05)
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(int(watchdog_sec * 1e6))}
    stopping: list[int] = []
    child: list[subprocess.Popen[bytes] | None] = [None]

    def forward(signum: int, _frame: object) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping.append(signum)
        process = child[0]
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signum)

    previous = {signum: signal.signal(signum, forward)
                for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    backoff = 0.2
    try:
        while not stopping:
            process = subprocess.Popen(list(command), env=env)
            child[0] = process
            if stopping:  # the signal may have come before child[0] named this process
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, stopping[-1])
            if pidfile:
                Path(pidfile).write_text(f"{process.pid}\n")
            logger.info("daemon_started", pid=process.pid, watchdog_sec=watchdog_sec)
            started = time.monotonic()
            _watch(process, sock, watchdog_sec, stopping, logger)
            if stopping:
                _stop(process, logger)
                child[0] = None
                break
            code = process.wait()
            child[0] = None  # reaped: its pid may be reused, never signal it again
            logger.warning("daemon_exited", pid=process.pid, code=code, restart_in_s=backoff)
            resume = time.monotonic() + backoff
            while not stopping and time.monotonic() < resume:  # stay responsive to SIGTERM
                time.sleep(0.05)
            backoff = min(backoff * 2, 5.0) if time.monotonic() - started < 10 else 0.2
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
            os.rmdir(directory)
    return 0


def _stop(process: subprocess.Popen[bytes], logger: Any) -> None:
    """Give a stopping daemon STOP_GRACE to write its last records, then SIGKILL it; reap it
    either way (a supervisor must not leave its daemon behind, stopped or as a zombie)."""
    try:
        code = process.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        logger.error("daemon_stop_timeout_killed", pid=process.pid, grace_s=STOP_GRACE)
        process.kill()
        code = process.wait()
    logger.info("daemon_stopped", pid=process.pid, code=code)


def _watch(process: subprocess.Popen[bytes], sock: socket.socket, watchdog_sec: float,
           stopping: list[int], logger: Any) -> None:
    """Until the daemon exits or a stop signal comes: read its pings, SIGKILL it when they
    stop for `watchdog_sec`."""
    started = time.monotonic()
    last_ping = None
    while process.poll() is None and not stopping:
        try:
            message = sock.recv(4096)
            if b"WATCHDOG=1" in message or b"READY=1" in message:
                last_ping = time.monotonic()
        except (TimeoutError, BlockingIOError):
            pass
        now = time.monotonic()
        # Before READY it may be loading a large snapshot: allow 60 s for that.
        limit = watchdog_sec if last_ping is not None else 60.0
        if now - (last_ping or started) > limit:
            logger.error("daemon_frozen_killed", pid=process.pid,
                      silent_for_s=round(now - (last_ping or started), 2))
            process.kill()
            return
