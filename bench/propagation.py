"""Propagation: how long from a change committed in PostgreSQL to a daemon deciding with it.

Two real daemons (`callpolicy serve --db postgresql://…`) on one database of N customers (the
benchmark's, bench/mix.py, plus the demo customers): one with its change feed (LISTEN/NOTIFY,
the default), one with `[store] listen = false` (the poll alone, every 0.25 s: what every
daemon did before). Each round commits one change as `callpolicy unblock`/`reblock` does (the
Store's operation, in this process: the clock starts when the commit has returned), then asks
both daemons over FastAGI, about every millisecond, whether acme's 0905 call is now decided
with it; the time to the first answer that is, per daemon. Rounds are interleaved (both
daemons see every change) and start at a random moment (the poll's phase).

    python bench/propagation.py [--customers 100000] [--changes 60] [--db postgresql://…]

Without --db it starts a throw-away PostgreSQL server (tests/pg.py: as the `postgres` user
when run as root) and removes it at the end. Exits 1 if a change did not arrive within
--timeout (5 s) or the LISTEN p99 is over the target (200 ms)."""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO / "agi"), str(REPO / "tests"), str(REPO / "tests" / "unit")]

from agi_peer import env_block, parse_mset  # noqa: E402

import mix  # noqa: E402
from callpolicy.policy import FraudLimits, UnblockKind  # noqa: E402
from callpolicy.store import Actor, open_store  # noqa: E402
from pg import PgServer, destroy, start_server  # noqa: E402

DEMO = REPO / "config" / "demo-customers.toml"
TARGET_P99_MS = 200.0
ACTOR = Actor("bench", "BENCH-PROPAGATION", "bench")
PROBE_GAP = 0.002  # s between two questions to one daemon
LABELS = {"listen": "LISTEN/NOTIFY", "poll": "poll only (0.25 s)"}
START_TIMEOUT = 600  # s for a daemon to load N customers and listen


def free_port() -> int:
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_daemon(url: str, work: Path, name: str, listen: bool) -> tuple[subprocess.Popen[bytes],
                                                                        int]:
    port = free_port()
    text = (REPO / "config" / "callpolicy.toml").read_text()
    text = text.replace('path = "/var/lib/callpolicy/callpolicy.db"',
                        f'path = "{work / f"{name}.db"}"\nlisten = {str(listen).lower()}')
    text = text.replace('listen = "127.0.0.1:4573"', f'listen = "127.0.0.1:{port}"')
    text = text.replace('listen = "127.0.0.1:9464"', 'listen = "127.0.0.1:0"')
    config = work / f"{name}.toml"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLPOLICY_", "NOTIFY_"))}
    env["PYTHONPATH"] = str(REPO / "agi")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "callpolicy.cli", "--config", str(config), "serve",
         "--log-level", "WARNING", "--db", url],
        stdout=(work / f"{name}.log").open("wb"), stderr=subprocess.STDOUT, env=env)
    return daemon, port


async def ask(port: int, uniqueid: str) -> str:
    """The reason the daemon gives for acme's call to 0905123456."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(env_block("0905123456").replace(
            b"agi_uniqueid: 1.1", f"agi_uniqueid: {uniqueid}".encode()))
        line = (await reader.readline()).decode()
        writer.write(b"200 result=0\n")
        await writer.drain()
        return parse_mset(line)["CP_REASON"]
    finally:
        writer.close()


async def wait_listening(port: int, daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            await ask(port, "warmup")
            return
        except OSError:
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon on port {port} did not start") from None
            await asyncio.sleep(0.2)


async def time_to(port: int, reason: str, committed: float, timeout: float, tag: str
                  ) -> float | None:
    """Seconds from `committed` to the first answer with `reason` (None: not in time)."""
    n = 0
    while time.monotonic() - committed < timeout:
        n += 1
        if await ask(port, f"{tag}.{n}") == reason:
            return time.monotonic() - committed
        await asyncio.sleep(PROBE_GAP)
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(name: str, seconds: list[float]) -> str:
    ms = [s * 1000 for s in seconds]
    return (f"{name:<24} p50 {statistics.median(ms):7.1f} ms   p99 {percentile(ms, 0.99):7.1f} ms"
            f"   max {max(ms):7.1f} ms   (n={len(ms)})")


async def measure(url: str, ports: dict[str, int], changes: int, timeout: float
                  ) -> dict[str, list[float]]:
    got: dict[str, list[float]] = {name: [] for name in ports}
    store = await open_store(url)
    try:
        for i in range(changes):
            await asyncio.sleep(random.uniform(0.05, 0.35))  # a random phase of the poll
            if i % 2 == 0:
                await store.add_unblock("acme", UnblockKind.PREFIX, "+32905", ACTOR, None)
                reason = "unblocked"
            else:
                await store.reblock("acme", UnblockKind.PREFIX, "+32905", ACTOR)
                reason = "premium"
            committed = time.monotonic()
            took = await asyncio.gather(*(time_to(port, reason, committed, timeout,
                                                  f"{name}.{i}")
                                          for name, port in ports.items()))
            for name, seconds in zip(ports, took, strict=True):
                if seconds is None:
                    raise RuntimeError(f"change {i} not live in the {LABELS[name]} daemon "
                                       f"within "
                                       f"{timeout:g} s")
                got[name].append(seconds)
    finally:
        await store.close()
    return got


async def unlimited(url: str, customer: str) -> None:
    big = 1_000_000
    async with await open_store(url) as store:
        await store.set_limits(customer, FraudLimits(big, big, big), ACTOR)


def import_customers(url: str, customers: int, work: Path) -> float:
    """The demo customers and N bench customers; the seconds the N took."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPOLICY_")}
    env["PYTHONPATH"] = str(REPO / "agi")
    command = [sys.executable, "-m", "callpolicy.cli", "--db", url, "customer", "import"]
    subprocess.run([*command, str(DEMO)], check=True, env=env, capture_output=True)
    asyncio.run(unlimited(url, "acme"))  # the probes are calls: not to hit max_per_minute
    bench = work / "customers.toml"
    mix.write_customers(bench, customers)
    started = time.monotonic()
    subprocess.run([*command, str(bench)], check=True, env=env, capture_output=True)
    return time.monotonic() - started


def run(url: str, args: argparse.Namespace, work: Path) -> int:
    print(f"propagation: {args.customers} customers, {args.changes} changes, "
          "PostgreSQL", flush=True)
    took = import_customers(url, args.customers, work)
    print(f"  import of {args.customers} customers: {took:.1f} s", flush=True)
    daemons = {"listen": start_daemon(url, work, "listen", True),
               "poll": start_daemon(url, work, "poll", False)}
    try:
        ports = {name: port for name, (_, port) in daemons.items()}
        started = time.monotonic()
        for daemon, port in daemons.values():
            asyncio.run(wait_listening(port, daemon))
        print(f"  daemons listening after {time.monotonic() - started:.1f} s", flush=True)
        results = asyncio.run(measure(url, ports, args.changes, args.timeout))
    except RuntimeError:
        for name in ("listen", "poll"):
            print(f"--- {name}.log (last lines)", file=sys.stderr)
            print("".join((work / f"{name}.log").read_text().splitlines(True)[-15:]),
                  file=sys.stderr)
        raise
    finally:
        for daemon, _ in daemons.values():
            daemon.terminate()
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
    print("commit -> the daemon decides with it:")
    for name, seconds in results.items():
        print("  " + summary(LABELS[name], seconds))
    p99 = percentile(results["listen"], 0.99) * 1000
    verdict = "OK" if p99 <= TARGET_P99_MS else "OVER TARGET"
    print(f"  target: LISTEN/NOTIFY p99 <= {TARGET_P99_MS:.0f} ms: {verdict}")
    return 0 if p99 <= TARGET_P99_MS else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--changes", type=int, default=60)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--db", help="an empty PostgreSQL database (default: a throw-away "
                        "server)")
    args = parser.parse_args()
    if args.changes < 2 or args.customers < 0:
        parser.error("--changes must be at least 2 and --customers at least 0")
    with tempfile.TemporaryDirectory(prefix="callpolicy-propagation-") as tmp:
        work = Path(tmp)
        if args.db:
            return run(args.db, args, work)
        server: PgServer = start_server()
        try:
            return run(server.new_database(), args, work)
        finally:
            destroy(server)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
