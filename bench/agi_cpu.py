"""The daemon's CPU per call, without Asterisk: a synthetic Asterisk drives `callpolicy serve`.

    python bench/agi_cpu.py                                   # this tree, 4 rounds
    python bench/agi_cpu.py --tree /work/main --tree .        # A B A B …, interleaved
    python bench/agi_cpu.py --tree . --rounds 1 --profile /tmp/prof   # + py-spy, summarised

Each run starts a fresh daemon (the tree's `agi/` first on PYTHONPATH) on free loopback
ports with the demo customers, logged in to a fake AMI server played by this script. Then it
plays Asterisk at a fixed rate (`--rate` calls/s): per call one FastAGI session as res_agi
sends it (the full environment block, our `EXEC MSet` answered `200 result=0`, close), and
on the AMI link the events Asterisk 22 sends a client filtered to Newstate/Hangup/UserEvent
for a call that rings and is answered (trunk leg Ringing and Up, caller leg Up, two Hangups),
with Asterisk's full channel-snapshot headers. The daemon's CPU (utime+stime from
/proc/PID/stat) over the measured calls, divided by their count, is the figure: it includes
its background work at that rate (refresh, revocation rounds, record writes, status), as a
whole `make bench` run does. `--idle` seconds measure the background alone.

`--soak SECONDS` instead keeps one daemon per tree busy that long at `--rate`, every call a
new dialled number (national, mobile, EU and non-EU international, premium), and prints the
daemon's RSS (/proc/PID/status VmRSS) every 10 s, at 1 minute and at the end: the caches
must fill within the first minute and then stay flat. It also prints the daemon's CPU per
call each 10 s and per minute (with the rest of the machine's load, to read noise by): it
must not creep as the call records pile up. `--customers-db FILE` starts the daemon on a
copy of that store (e.g. make bench's cached 100 000 customers,
/var/cache/callpolicy/bench/customers-100000-*.db) and spreads the calls over its
`bench-<n>` customers instead of one demo customer.

Runs of different trees are interleaved (A B A B …) so that machine noise spreads over all;
the table gives each run and, per tree, the median and the spread (min-max).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import itertools
import os
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
FLOOR = "floor"
UVLOOP = "+uvloop"  # a --tree suffix
# what the demo customers dial: allowed national and mobile, premium and non-EU refused,
# an emergency call, an unknown endpoint
MIX = (
    ("acme-101", "092101299", "+3292101234"),
    ("acme-101", "0475123456", "+3292101235"),
    ("acme-102", "0905123456", "+3292101234"),
    ("acme-101", "0014155550123", "+3292101234"),
    ("bakkerij-1", "025551299", "+3225551234"),
    ("acme-101", "112", "+3292101234"),
    ("nobody", "092101299", "+3299999999"),
    ("bakkerij-1", "+33145678901", "+3225551234"),
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def env_block(n: int, endpoint: str, dialled: str, caller: str) -> bytes:
    """What res_agi (Asterisk 22) writes for `AGI(agi://…/decide,…)` with our 7 arguments."""
    uid = f"1700000000.{2 * n}"
    env = {
        "agi_network": "yes", "agi_network_script": "decide",
        "agi_request": "agi://127.0.0.1:4573/decide", "agi_channel": f"PJSIP/{endpoint}-{n:08x}",
        "agi_language": "en", "agi_type": "PJSIP", "agi_uniqueid": uid, "agi_version": "22.5.2",
        "agi_callerid": caller, "agi_calleridname": "unknown", "agi_callingpres": "0",
        "agi_callingani2": "0", "agi_callington": "0", "agi_callingtns": "0",
        "agi_dnid": dialled, "agi_rdnis": "unknown", "agi_context": "callpolicy-decide",
        "agi_extension": "s", "agi_priority": "9", "agi_enhanced": "0.0",
        "agi_accountcode": "", "agi_threadid": "140234567890123",
    }
    args = ["outbound", endpoint, b64(dialled), b64(caller), "0", "127.0.0.2:5060", ""]
    lines = [f"{k}: {v}" for k, v in env.items()]
    lines += [f"agi_arg_{i}: {a}" for i, a in enumerate(args, start=1)]
    return ("\n".join(lines) + "\n\n").encode()


def ami_event(event: str, channel: str, state: str, desc: str, uid: str, linked: str,
              extra: str = "") -> bytes:
    return (f"Event: {event}\r\nPrivilege: call,all\r\nTimestamp: {time.time():.6f}\r\n"
            f"Channel: {channel}\r\nChannelState: {state}\r\nChannelStateDesc: {desc}\r\n"
            "CallerIDNum: +3292101234\r\nCallerIDName: <unknown>\r\n"
            "ConnectedLineNum: 092101299\r\nConnectedLineName: <unknown>\r\nLanguage: en\r\n"
            "AccountCode: \r\nContext: callpolicy-enforce\r\nExten: s\r\nPriority: 14\r\n"
            f"Uniqueid: {uid}\r\nLinkedid: {linked}\r\n{extra}\r\n").encode()


def call_events(n: int, endpoint: str) -> bytes:
    """The filtered AMI events of one answered call: caller leg 2n, trunk leg 2n+1."""
    caller, trunk = f"1700000000.{2 * n}", f"1700000000.{2 * n + 1}"
    cchan, tchan = f"PJSIP/{endpoint}-{n:08x}", f"PJSIP/trunk-{n:08x}"
    bye = "Cause: 16\r\nCause-txt: Normal Clearing\r\n"
    return b"".join((
        ami_event("Newstate", tchan, "5", "Ringing", trunk, caller),
        ami_event("Newstate", tchan, "6", "Up", trunk, caller),
        ami_event("Newstate", cchan, "6", "Up", caller, caller),
        ami_event("Hangup", tchan, "6", "Up", trunk, caller, bye),
        ami_event("Hangup", cchan, "6", "Up", caller, caller, bye),
    ))


#: the AMI actions answered as a list (the daemon's live-table rebuild after a login: `Status`)
LIST_ACTIONS = ("Status", "CoreShowChannels")


class FakeAmi:
    """Just enough of Asterisk's manager for the daemon: Login, Filter, Ping, Status and
    CoreShowChannels (no channel up), and the events `emit` is given."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.logged_in = asyncio.Event()
        self.actions: collections.Counter[str] = collections.Counter()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/9.0.0\r\n")
        try:
            while True:
                block = await reader.readuntil(b"\r\n\r\n")
                fields = dict(line.split(": ", 1) for line in
                              block.decode().strip().split("\r\n") if ": " in line)
                action = fields.get("Action", "")
                self.actions[action] += 1
                aid = fields.get("ActionID", "")
                if action in LIST_ACTIONS:  # no channel up: an empty list
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\n"
                                 "Message: Channels will follow\r\n\r\n"
                                 f"Event: {action}Complete\r\nActionID: {aid}\r\n"
                                 "EventList: Complete\r\nListItems: 0\r\n\r\n".encode())
                else:
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\n"
                                 "Message: OK\r\n\r\n".encode())
                if action == "Login":
                    self.writers.append(writer)
                    self.logged_in.set()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the daemon went, or this run ends
        finally:
            if writer in self.writers:
                self.writers.remove(writer)
            writer.close()

    def emit(self, data: bytes) -> None:
        for writer in self.writers:
            writer.write(data)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Daemon:
    tree: Path
    workdir: Path
    ami_port: int
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    pid: int = 0  # the daemon's (under py-spy, the spy's child)
    log_start: int = 0  # where this start's lines begin in serve.log

    uvloop_path: str | None = None  # run the daemon on uvloop, importable from here ("" : venv)
    customers_db: Path | None = None  # a prepared store (--customers-db) instead of the demo

    @property
    def floor(self) -> bool:
        """--tree floor: bench/floor_agi.py, the do-nothing AGI server (no AMI)."""
        return self.tree.name == FLOOR

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CALLPOLICY_", "NOTIFY_"))}
        path = [str(self.tree / "agi"), *([self.uvloop_path] if self.uvloop_path else [])]
        env.update(PYTHONPATH=os.pathsep.join(path), CALLPOLICY_AMI_SECRET="bench")
        return env

    def configure(self) -> Path:
        config = self.workdir / "callpolicy.toml"
        text = (self.tree / "config" / "callpolicy.toml").read_text()
        text = text.replace('path = "/var/lib/callpolicy/callpolicy.db"',
                            f'path = "{self.workdir / "cp.db"}"')
        text = text.replace('listen = "127.0.0.1:4573"', f'listen = "127.0.0.1:{self.port}"')
        text = text.replace('listen = "127.0.0.1:9464"', 'listen = "127.0.0.1:0"')
        text = text.replace("port = 5038", f"port = {self.ami_port}")
        text = text.replace('format = "auto"', 'format = "json"')
        # a handful of demo customers make every call: the fraud guard must not refuse them
        # (make bench spreads its calls over 100 000 customers)
        for key in ("max_concurrent", "max_per_minute", "max_concurrent_risky"):
            text = re.sub(rf"^{key} = \d+", f"{key} = 1000000", text, flags=re.M)
        config.write_text(text)
        if self.customers_db is not None and not (self.workdir / "cp.db").exists():
            shutil.copy(self.customers_db, self.workdir / "cp.db")
        if not (self.workdir / "cp.db").exists():
            subprocess.run([sys.executable, "-m", "callpolicy.cli", "--config", str(config),
                            "customer", "import", str(self.tree / "config/demo-customers.toml")],
                           env=self.env(), check=True, capture_output=True, timeout=120)
        return config

    def start(self, profile: Path | None = None) -> None:
        """Start `serve`; with `profile`, under `py-spy record` (attaching to a running
        process is refused on this machine, spawning works)."""
        log = (self.workdir / "serve.log").open("ab")
        self.log_start = log.tell()  # the log is appended to by every round of this tree
        if self.floor:
            argv = [sys.executable, str(REPO / "bench" / "floor_agi.py"),
                    "--listen", f"127.0.0.1:{self.port}"]
        else:
            config = self.configure()
            argv = [sys.executable, "-m", "callpolicy.cli", "--config", str(config), "serve"]
            if self.uvloop_path is not None:  # asyncio.run() then makes a uvloop loop
                argv[1:3] = ["-c", "import runpy, sys, uvloop; uvloop.install(); "
                             "sys.argv[0] = 'callpolicy'; "
                             "runpy.run_module('callpolicy.cli', run_name='__main__')"]
        if profile is not None:
            argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                    "--rate", "250", "--nonblocking", "--output", str(profile), "--", *argv]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     env=self.env())
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                self.pid = self.proc.pid
                if profile is not None:
                    children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
                    self.pid = int(children.read_text().split()[0])
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"daemon of {self.tree} did not start: see "
                                     f"{self.workdir / 'serve.log'}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.pid and self.pid != self.proc.pid:  # py-spy: stop the daemon, it follows
                os.kill(self.pid, 15)
            else:
                self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for {pid}")


# --soak: every call a number never dialled before, of each kind the classifier tells apart
DISTINCT = ("09{:07d}", "047{:07d}", "+3314{:07d}", "+1415{:07d}", "0905{:05d}",
            "+4420{:08d}", "00{:011d}")


def distinct_call(n: int, customers: int = 0) -> tuple[str, str, str]:
    """Call n of a soak: on `customers` bench customers (bench/mix.py's), else the demo's."""
    dialled = DISTINCT[n % len(DISTINCT)].format(n // len(DISTINCT))
    if customers:
        who = (n * 7919) % customers  # spread over all of them
        return f"bench-{who}", dialled, f"+329{2_000_000 + who:07d}"
    return "acme-101", dialled, "+3292101234"


async def one_call(port: int, n: int, ami: FakeAmi, distinct: bool = False,
                   customers: int = 0) -> bool:
    endpoint, dialled, caller = distinct_call(n, customers) if distinct else MIX[n % len(MIX)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(env_block(n, endpoint, dialled, caller))
        line = await asyncio.wait_for(reader.readline(), 5)
        writer.write(b"200 result=0\n")
        await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    ami.emit(call_events(n, endpoint))
    return line.startswith(b'EXEC MSet "CP_ACTION=')


async def drive(port: int, ami: FakeAmi, calls: int, rate: float, first: int,
                distinct: bool = False, customers: int = 0) -> int:
    """`calls` sessions started at `rate` per second; returns how many got a decision."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(calls):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one_call(port, first + i, ami, distinct, customers)))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return sum(r is True for r in results)


async def live_table_rebuilt(daemon: Daemon, timeout: float = 10.0) -> None:
    """Until the daemon says its live table is rebuilt after the AMI login: before that its
    fraud guard is degraded (ami_resync_pending) and every AMI event takes the rebuild's
    path, so a run measured then would not be the production steady state."""
    deadline = time.monotonic() + timeout
    while b'"live_table_rebuilt"' not in (daemon.workdir / "serve.log").read_bytes()[
            daemon.log_start:]:
        if time.monotonic() > deadline:
            raise SystemExit(f"daemon of {daemon.tree}: no live_table_rebuilt within "
                             f"{timeout:g} s of the AMI login: see {daemon.workdir}/serve.log")
        await asyncio.sleep(0.05)


async def run_once(tree: Path, workdir: Path, args: argparse.Namespace,
                   profile: Path | None) -> dict[str, float]:
    ami = FakeAmi()
    server = await asyncio.start_server(ami.serve, "127.0.0.1", 0)
    ami_port = server.sockets[0].getsockname()[1]
    uvloop_path = None
    if tree.name.endswith(UVLOOP):
        tree, uvloop_path = tree.with_name(tree.name[:-len(UVLOOP)]), args.uvloop_path or ""
    daemon = Daemon(tree, workdir, ami_port, uvloop_path=uvloop_path)
    await asyncio.to_thread(daemon.start, profile)
    try:
        if not daemon.floor:
            await asyncio.wait_for(ami.logged_in.wait(), 10)
            await live_table_rebuilt(daemon)
        await asyncio.sleep(1.0)  # its first refresh
        pid = daemon.pid
        ok = await drive(daemon.port, ami, args.warmup, args.rate, 0)
        await asyncio.sleep(0.6)
        idle_cpu = cpu_seconds(pid)
        await asyncio.sleep(args.idle)
        idle_us_s = (cpu_seconds(pid) - idle_cpu) / args.idle * 1e6
        before, wall = cpu_seconds(pid), time.monotonic()
        ok = await drive(daemon.port, ami, args.calls, args.rate, args.warmup)
        await asyncio.sleep(0.6)  # the records of the last calls written
        used = cpu_seconds(pid) - before
        seconds = time.monotonic() - wall
        if ok != args.calls:
            raise SystemExit(f"{tree}: only {ok} of {args.calls} calls got a decision")
        return {"us_per_call": used / args.calls * 1e6, "idle_us_per_s": idle_us_s,
                "cps": args.calls / seconds}
    finally:
        daemon.stop()
        server.close()


def machine_busy_seconds() -> float:
    """All CPUs' busy time (/proc/stat: everything but idle and iowait), in seconds."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICKS


@dataclass
class Soak:
    rss_mb: list[float]  # at start, then each 10 s
    us_per_call: list[float]  # the daemon's CPU per call, each 10 s
    other_cores: list[float]  # the rest of the machine (not the daemon, not this script)
    floor_us: list[float] = field(default_factory=list)  # --soak-floor: its CPU per call
    # --versus-fresh: (which, daemon µs/call, floor µs/call) per 10 s block, interleaved
    versus: list[tuple[str, float, float]] = field(default_factory=list)


SOAK_STEP = 10  # s


async def soak(tree: Path, workdir: Path, args: argparse.Namespace) -> Soak:
    """One daemon driven `args.soak` seconds with distinct numbers: RSS (MB) and CPU per call
    each 10 s; with --soak-floor, the do-nothing server driven alongside at the same rate (the
    machine's speed in that window); with --versus-fresh N, then N blocks of 10 s each on the
    aged daemon and on a fresh one (a fresh copy of the store), interleaved."""
    customers = customer_count(args.customers_db) if args.customers_db else 0
    async with contextlib.AsyncExitStack() as stack:
        aged = await stack.enter_async_context(soak_daemon(tree, workdir / "aged", args))
        floor = None
        if args.soak_floor or args.versus_fresh:
            floor = await stack.enter_async_context(soak_daemon(Path(FLOOR), workdir / "floor",
                                                                args))
        pid = aged.daemon.pid
        result = Soak([rss_mb(pid)], [], [])
        print(f"soak {tree}: {result.rss_mb[0]:.1f} MB at start"
              f"{f' ({customers} customers)' if customers else ''}", flush=True)
        first = 0
        for elapsed in range(SOAK_STEP, int(args.soak) + 1, SOAK_STEP):
            busy = machine_busy_seconds()
            mine = cpu_seconds(os.getpid())
            (used, calls), floor_used = await step(aged, floor, args.rate, first, customers)
            other = machine_busy_seconds() - busy - used - (cpu_seconds(os.getpid()) - mine) \
                - (floor_used or 0) * calls / 1e6
            first += calls
            result.rss_mb.append(rss_mb(pid))
            result.us_per_call.append(used / calls * 1e6)
            result.other_cores.append(max(0.0, other / SOAK_STEP))
            if floor_used is not None:
                result.floor_us.append(floor_used)
            print(f"soak {tree}: {result.rss_mb[-1]:.1f} MB, "
                  f"{result.us_per_call[-1]:5.0f} µs/call"
                  f"{f' (floor {floor_used:4.0f})' if floor_used is not None else ''}, other "
                  f"load {result.other_cores[-1]:.2f} cores at {elapsed} s ({first} calls)",
                  flush=True)
        if args.versus_fresh:
            assert floor is not None
            fresh = await stack.enter_async_context(soak_daemon(tree, workdir / "fresh", args))
            fresh_first = 10_000_000
            for _ in range(args.versus_fresh):
                for name, which in (("aged", aged), ("fresh", fresh)):
                    at = first if name == "aged" else fresh_first
                    (used, calls), floor_used = await step(which, floor, args.rate, at,
                                                           customers)
                    if name == "aged":
                        first += calls
                    else:
                        fresh_first += calls
                    assert floor_used is not None
                    result.versus.append((name, used / calls * 1e6, floor_used))
                    print(f"versus {name:5}: {used / calls * 1e6:5.0f} µs/call "
                          f"(floor {floor_used:4.0f})", flush=True)
        return result


@dataclass
class SoakDaemon:
    daemon: Daemon
    ami: FakeAmi


@contextlib.asynccontextmanager
async def soak_daemon(tree: Path, workdir: Path, args: argparse.Namespace
                      ) -> AsyncIterator[SoakDaemon]:
    """A daemon (or the floor) with its own fake AMI, started; stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    ami = FakeAmi()
    server = await asyncio.start_server(ami.serve, "127.0.0.1", 0)
    daemon = Daemon(tree, workdir, server.sockets[0].getsockname()[1],
                    customers_db=args.customers_db)
    await asyncio.to_thread(daemon.start, None)
    try:
        if not daemon.floor:
            await asyncio.wait_for(ami.logged_in.wait(), 10)
            await live_table_rebuilt(daemon)
            await asyncio.sleep(1.0)
        yield SoakDaemon(daemon, ami)
    finally:
        daemon.stop()
        server.close()


async def step(which: SoakDaemon, floor: SoakDaemon | None, rate: float, first: int,
               customers: int) -> tuple[tuple[float, int], float | None]:
    """SOAK_STEP seconds of calls at `rate` on `which` (and the floor alongside): (CPU
    seconds it used, calls), the floor's µs per call."""
    calls = round(rate * SOAK_STEP)
    pid = which.daemon.pid
    cpu = cpu_seconds(pid)
    floor_cpu = cpu_seconds(floor.daemon.pid) if floor else 0.0
    drives = [drive(which.daemon.port, which.ami, calls, rate, first, True, customers)]
    if floor is not None:
        drives.append(drive(floor.daemon.port, floor.ami, calls, rate, first, True, customers))
    oks = await asyncio.gather(*drives)
    if any(ok != calls for ok in oks):
        raise SystemExit(f"only {oks} of {calls} calls got a decision")
    used = cpu_seconds(pid) - cpu
    floor_us = ((cpu_seconds(floor.daemon.pid) - floor_cpu) / calls * 1e6
                if floor is not None else None)
    return (used, calls), floor_us


def customer_count(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT count(*) FROM customers").fetchone()[0])


def report_soaks(results: dict[Path, Soak], args: argparse.Namespace) -> None:
    print(f"\n{'tree':40} {'start MB':>9} {'1 min MB':>9} {'end MB':>9} {'growth MB':>10}"
          f"  (after the first minute, {args.soak:.0f} s at {args.rate:.0f} calls/s)")
    for tree, result in results.items():
        curve = result.rss_mb
        at_minute = curve[min(6, len(curve) - 1)]
        print(f"{tree!s:40} {curve[0]:9.1f} {at_minute:9.1f} {curve[-1]:9.1f} "
              f"{curve[-1] - at_minute:10.1f}")
        print("  RSS curve (each 10 s): " + " ".join(f"{mb:.1f}" for mb in curve))
        minutes = [result.us_per_call[i:i + 6] for i in range(0, len(result.us_per_call), 6)]
        others = [result.other_cores[i:i + 6] for i in range(0, len(result.other_cores), 6)]
        print("  daemon µs/call per minute (median of its 10 s steps): "
              + " ".join(f"{statistics.median(m):.0f}" for m in minutes))
        print("  other load per minute (cores):                        "
              + " ".join(f"{statistics.median(o):.2f}" for o in others))
        if result.floor_us:
            floors = [result.floor_us[i:i + 6] for i in range(0, len(result.floor_us), 6)]
            print("  floor µs/call per minute (alongside):                 "
                  + " ".join(f"{statistics.median(f):.0f}" for f in floors))
            ratios = [[d / f for d, f in zip(m, fl, strict=True)]
                      for m, fl in zip(minutes, floors, strict=True)]
            print("  daemon/floor per minute:                              "
                  + " ".join(f"{statistics.median(r):.2f}" for r in ratios))
        for name in ("aged", "fresh"):
            runs = [(d, f) for n, d, f in result.versus if n == name]
            if runs:
                print(f"  {name:5} (interleaved 10 s blocks): median "
                      f"{statistics.median(d for d, _ in runs):.0f} µs/call, "
                      f"daemon/floor {statistics.median(d / f for d, f in runs):.2f}; "
                      + " ".join(f"{d:.0f}" for d, _ in runs))


def answered_and_ended(workdir: Path) -> tuple[int, int]:
    """Call records with an answer / an end time: the AMI events reached the live table."""
    with contextlib.closing(sqlite3.connect(workdir / "cp.db")) as db:
        answered, ended = db.execute("SELECT count(answered_at), count(ended_at) FROM calls "
                                     "WHERE action = 'allow'").fetchone()
    return answered, ended


def summarise_profile(path: Path, top: int = 30) -> None:
    """py-spy's raw (collapsed) stacks, busy samples only (not waiting in epoll, not the
    start-up's imports): the functions with the largest inclusive and self share."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.strip() for f in stack.split(";")]
        if "select (selectors.py" in frames[-1] or any("_find_and_load" in f for f in frames):
            continue
        total += int(count)
        for frame in {f.split(":")[0] + ")" for f in frames}:  # function (file), any line
            inclusive[frame] += int(count)
        own[frames[-1]] += int(count)
    print(f"\nprofile {path}: {total} busy samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"-- {title}")
        for frame, count in counter.most_common(top):
            print(f"{100 * count / total:5.1f}%  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=Path,
                        help="a checkout whose agi/ runs the daemon (repeat: interleaved); "
                        "`floor`: bench/floor_agi.py, the do-nothing AGI server; "
                        f"DIR{UVLOOP}: that tree's daemon on uvloop")
    parser.add_argument("--uvloop-path", help="where uvloop can be imported from, for the "
                        f"trees named with a {UVLOOP} suffix (default: the venv)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--calls", type=int, default=3000, help="measured calls per run")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rate", type=float, default=150.0, help="calls per second")
    parser.add_argument("--idle", type=float, default=3.0, help="seconds of idle measured")
    parser.add_argument("--profile", type=Path, help="py-spy raw output prefix (per run)")
    parser.add_argument("--soak", type=float, metavar="SECONDS",
                        help="instead: one daemon per tree (one after another) driven this "
                        "long with distinct numbers, its RSS and CPU per call each 10 s")
    parser.add_argument("--soak-floor", action="store_true",
                        help="--soak: drive the do-nothing server alongside at the same rate, "
                        "as the machine's speed reference (daemon/floor per minute)")
    parser.add_argument("--versus-fresh", type=int, default=0, metavar="N",
                        help="--soak: then N 10 s blocks each on the aged daemon and on a "
                        "fresh one, interleaved (with the floor alongside)")
    parser.add_argument("--customers-db", type=Path, metavar="FILE",
                        help="--soak on a copy of this store, calls spread over its bench-<n> "
                        "customers (make bench's cache: /var/cache/callpolicy/bench/)")
    args = parser.parse_args()
    trees = [t if str(t) == FLOOR else t.parent.resolve() / t.name if t.name.endswith(UVLOOP)
             else t.resolve() for t in (args.tree or [REPO])]
    results: dict[Path, list[dict[str, float]]] = {t: [] for t in trees}
    with tempfile.TemporaryDirectory(prefix="agi-cpu-") as tmp:
        workdirs = {t: Path(tmp) / f"tree{i}" for i, t in enumerate(trees)}
        for workdir in workdirs.values():
            workdir.mkdir()
        if args.soak:
            soaks = {t: asyncio.run(soak(t, workdirs[t], args)) for t in trees}
            report_soaks(soaks, args)
            return
        for round_no, tree in itertools.product(range(args.rounds), trees):
            profile = (Path(f"{args.profile}-{round_no}-{trees.index(tree)}.txt")
                       if args.profile else None)
            result = asyncio.run(run_once(tree, workdirs[tree], args, profile))
            results[tree].append(result)
            events = "" if str(tree) == FLOOR else \
                " (allowed calls answered/ended in the records: {}/{})".format(
                    *answered_and_ended(workdirs[tree]))
            print(f"round {round_no + 1} {tree}: {result['us_per_call']:7.0f} µs/call "
                  f"at {result['cps']:.0f} calls/s, idle {result['idle_us_per_s']:.0f} µs/s"
                  f"{events}", flush=True)
            if profile is not None and profile.exists():
                summarise_profile(profile)
    print(f"\n{'tree':40} {'median µs/call':>15} {'min-max':>15} {'idle µs/s':>10}")
    for tree, runs in results.items():
        per_call = [r["us_per_call"] for r in runs]
        idle = statistics.median(r["idle_us_per_s"] for r in runs)
        print(f"{tree!s:40} {statistics.median(per_call):15.0f} "
              f"{min(per_call):7.0f}-{max(per_call):<7.0f} {idle:10.0f}")


if __name__ == "__main__":
    main()
