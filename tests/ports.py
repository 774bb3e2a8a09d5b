"""Ports for the servers the tests start (daemons, receivers, API, PostgreSQL).

`bind(("127.0.0.1", 0))`, close, and hand the number to a server is racy: the kernel hands out
that number from its ephemeral range, where every outgoing connection on the machine (the
tests' own clients, SIPp, the other pytest-xdist workers) also takes its source port, and
another worker's probe can be given the same number before our server binds it. So each
worker draws from its own block of ports BELOW the ephemeral range (the kernel never hands
those out by itself), one after another, and checks each is free before handing it out.
The room between FIRST and the ephemeral range is shared by PYTEST_XDIST_WORKER_COUNT
workers; when a worker's share would be under MIN_BLOCK ports, the kernel chooses (port 0).
Two suites run at once on one machine share the blocks: the random start makes a clash
unlikely, and each port is probed."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

__all__ = ["free_port"]

FIRST = 20_000  # below this: well-known services, the product's own defaults
BLOCK = 2_000  # ports per xdist worker at most (fewer when many workers share the room)
MIN_BLOCK = 100
_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    try:
        return int(_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _worker() -> int:
    """gw0 -> 0, gw1 -> 1 … (0 without xdist)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name[2:]) if name[2:].isdigit() else 0


def _block() -> range | None:
    """This worker's share of FIRST .. the ephemeral range (None: too little room)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    size = min(BLOCK, (_ephemeral_low() - FIRST) // max(workers, 1))
    if size < MIN_BLOCK:
        return None
    start = FIRST + _worker() * size
    return range(start, start + size)


_BLOCK = _block()
# where this worker goes on from: a random start, so two runs of the suite on one machine
# seldom walk the same ports at the same time
_next = random.randrange(BLOCK)


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port nothing is bound to now, and that nothing else in this test
    run is handed (this worker's block, in turn)."""
    global _next
    if _BLOCK is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(len(_BLOCK)):
        port = _BLOCK[_next % len(_BLOCK)]
        _next += 1
        if _free(port):
            return port
    raise RuntimeError(f"no free port in {_BLOCK.start}-{_BLOCK.stop - 1}")
