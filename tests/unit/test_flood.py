"""The real daemon (`callpolicy serve`) keeps answering under local floods (issue 10): a
normal request is answered within 200 ms for >= 95 % of requests while 600 peers hold idle
FastAGI connections, or trickle bytes, or 2 000 connections to /metrics are held and released;
and the daemon logs at most a few lines per second about them, with counts.

The flood runs in its own process (flood_peer.py); the measuring client here is a plain
blocking socket, one request at a time. Loopback only; every test is bounded (~15 s).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from agi_peer import env_block, parse_mset
from test_daemon import REPO, cli, free_port, start, wait_port

FLOOD_PEER = Path(__file__).with_name("flood_peer.py")
REQUESTS = 150
SPACING = 0.01  # s between two measured requests: the 150 take ~2 s (the suite's CI budget)
FLOOD_SECONDS = 30  # s at most: the flood runs until the measurement ends (stdin closed)
ANSWER_WITHIN = 0.200  # s: the target
TARGET = 0.95
RAMP_UP = 10.0  # s at most for the flood to reach its size (it says `ready`)
#: daemon log lines about hostile peers; the limiter allows a few per second per event
PEER_EVENTS = ("agi_connection_refused", "agi_connection_evicted", "agi_bad_peer")
MAX_PEER_LINES_PER_S = 10
MAX_DAEMON_THREADS = 20  # the event loop, the HTTP server, aiosqlite's: not one per connection


@dataclass(frozen=True)
class Daemon:
    agi_port: int
    metrics_port: int
    log: Path
    pid: int

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def threads(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(x for x in status.splitlines() if x.startswith("Threads:")).split()[1])


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A running `callpolicy serve` on free loopback ports."""
    agi_port, metrics_port = free_port(), free_port()
    config = tmp_path / "callpolicy.toml"
    text = (REPO / "config" / "callpolicy.toml").read_text()
    text = text.replace('path = "/var/lib/callpolicy/callpolicy.db"',
                        f'path = "{tmp_path / "cp.db"}"')
    text = text.replace('listen = "127.0.0.1:4573"', f'listen = "127.0.0.1:{agi_port}"')
    text = text.replace('listen = "127.0.0.1:9464"', f'listen = "127.0.0.1:{metrics_port}"')
    config.write_text(text)
    result = cli("customer", "import", str(REPO / "config" / "demo-customers.toml"),
                 config=config)
    assert result.returncode == 0, result.stderr
    log = tmp_path / "serve.log"
    process = start(["serve"], config, log)
    try:
        wait_port(agi_port)
        wait_port(metrics_port)
        yield Daemon(agi_port, metrics_port, log, process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def one_request(port: int) -> float | None:
    """Seconds to get a decision for a normal call, None if it failed (2 s at most)."""
    started = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
            sock.settimeout(max(0.01, 2.0 - (time.perf_counter() - started)))
            sock.sendall(env_block("092101299"))
            line = sock.makefile("rb").readline().decode()
            elapsed = time.perf_counter() - started
            sock.sendall(b"200 result=0\n")
        return elapsed if parse_mset(line)["CP_ACTION"] == "allow" else None
    except (OSError, AssertionError, ValueError):
        return None


def measure(port: int, count: int = REQUESTS) -> tuple[float, str]:
    """Share of `count` normal requests answered within 200 ms, and a one-line summary."""
    latencies = []
    for _ in range(count):
        latencies.append(one_request(port))
        time.sleep(SPACING)  # spread over the flood
    answered = sorted(x for x in latencies if x is not None)
    fast = sum(1 for x in answered if x <= ANSWER_WITHIN)
    share = fast / count
    p50 = answered[len(answered) // 2] * 1000 if answered else float("nan")
    worst = answered[-1] * 1000 if answered else float("nan")
    summary = (f"{fast}/{count} = {share:.0%} answered within {ANSWER_WITHIN * 1000:.0f} ms "
               f"({count - len(answered)} failed; p50 {p50:.1f} ms, max {worst:.1f} ms)")
    print(summary)
    return share, summary


def flood(mode: str, port: int, count: int, seconds: float = FLOOD_SECONDS
          ) -> subprocess.Popen[str]:
    """The flood, once it holds `count` connections; it goes on until `finish`."""
    process = subprocess.Popen([sys.executable, str(FLOOD_PEER), mode, str(port), str(count),
                                str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout is not None
    ready = threading.Thread(target=process.stdout.readline, daemon=True)
    ready.start()
    ready.join(RAMP_UP)
    assert not ready.is_alive(), f"the flood did not reach {count} connections in {RAMP_UP} s"
    return process


def assert_still_flooding(process: subprocess.Popen[str]) -> None:
    """Every measured request was made under the flood: it has not ended yet."""
    assert process.poll() is None, "the flood ended before the measurement did"


def finish(process: subprocess.Popen[str]) -> dict[str, int]:
    out, _ = process.communicate(timeout=30)  # closes its stdin: the measurement is over
    assert process.returncode == 0
    counts = json.loads(out.splitlines()[-1])
    print("flood:", counts)
    return counts


def peer_lines(log: Path) -> list[dict]:
    lines = []
    for raw in log.read_text(errors="replace").splitlines():
        if any(f'"{event}"' in raw for event in PEER_EVENTS):
            lines.append(json.loads(raw))
    return lines


def assert_few_peer_lines(log: Path, seconds: float) -> None:
    lines = peer_lines(log)
    per_event = {e: sum(1 for x in lines if x["event"] == e) for e in PEER_EVENTS}
    print("peer log lines:", per_event, f"over {seconds:.0f} s")
    for event, count in per_event.items():
        assert count <= MAX_PEER_LINES_PER_S * seconds + 5, (
            f"{count} {event} lines in {seconds:.0f} s")
    # A burst shows how much it stood for: the lines carry counts.
    assert any(x.get("suppressed", 0) > 0 for x in lines), "no line with a count"


@pytest.mark.parametrize("mode", ["idle", "loris"])
def test_normal_requests_are_answered_while_600_peers_hold_fastagi_connections(
        daemon: Daemon, mode: str) -> None:
    agi_port, log = daemon.agi_port, daemon.log
    started = time.monotonic()
    flooder = flood(mode, agi_port, 600)
    cpu, wall = daemon.cpu_seconds(), time.monotonic()
    share, summary = measure(agi_port)
    assert_still_flooding(flooder)
    print(f"daemon CPU {(daemon.cpu_seconds() - cpu) / (time.monotonic() - wall):.0%} of a core")
    counts = finish(flooder)
    elapsed = time.monotonic() - started
    assert counts["connected"] >= 600  # the flood really held its connections
    assert share >= TARGET, f"600 {mode} peers: {summary}"
    assert_few_peer_lines(log, elapsed)


def test_normal_requests_are_answered_while_2000_metrics_connections_come_and_go(
        daemon: Daemon) -> None:
    """Also: the HTTP server is bounded (no thread per connection) and a scrape in the middle
    of the flood is still answered."""
    agi_port, metrics_port = daemon.agi_port, daemon.metrics_port
    flooder = flood("http", metrics_port, 2000)
    most_threads = [daemon.threads()]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            most_threads[0] = max(most_threads[0], daemon.threads())

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        scraped = scrape(metrics_port)
        share, summary = measure(agi_port)
        assert_still_flooding(flooder)
    finally:
        done.set()
        sampler.join()
    threads = most_threads[0]
    print(f"daemon threads during the /metrics flood: {threads}")
    counts = finish(flooder)
    assert counts["released"] >= 2000
    assert share >= TARGET, f"2000 /metrics connections: {summary}"
    assert threads <= MAX_DAEMON_THREADS, f"{threads} threads in the daemon"
    assert b"callpolicy_decisions_total" in scraped, "no scrape answered during the flood"
    assert b"callpolicy_decisions_total" in scrape(metrics_port)  # and after it


def scrape(port: int) -> bytes:
    """GET /metrics; the body, or b"" if it failed (5 s at most)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            sock.settimeout(5)
            reply = b"".join(iter(lambda: sock.recv(65536), b""))
    except OSError:
        return b""
    head, _, body = reply.partition(b"\r\n\r\n")
    return body if b" 200 " in head.split(b"\r\n")[0] else b""
