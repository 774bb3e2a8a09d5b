"""SIPp load benchmark: the policy against bare Asterisk, in one run (`make bench`, as root).

    python bench/load.py [--customers N] [--pin split|none] [--log-level INFO|WARNING] …

Everything (Asterisk via scripts/asterisk-run.sh, the daemon, every SIPp) runs in a private
network namespace that this script creates (`unshare --net`, loopback up): the demo addresses
127.0.0.1:5060, :4573, :5038, 127.0.0.3:5080 … exist only in there, so other runs on this
machine neither see nor disturb them. See bench/README.md for the method.

Phases, each with a fresh Asterisk (no phase inherits what an earlier overload left behind):
  1. bare knee: calls from `bench-bare` (127.0.0.8, context [bare]: Dial to the trunk UAS, no
     AGI) with the daemon NOT running: Asterisk alone, no AGI, no AMI client;
  2. bare-AGI knee: `bench-bare-agi` (127.0.0.9, [bare-agi]: [bare] plus exactly one AGI call
     to bench/floor_agi.py, the do-nothing server): the mechanism's floor;
  3. policy knee: the daemon (`callpolicy serve`, AMI on, INFO logging by default) and calls
     from `bench-phone` (127.0.0.7, context [bench] = [from-phones] with the customer's endpoint
     from X-Bench-Endpoint), the 80/10/10 mix over N customers; then the daemon stops;
  4. latency and CPU per call at half the bare knee (and first at half the policy knee when
     that is lower), interleaved: --repeats rounds of bare, bare_agi, floor (the policy
     dialplan with bench/floor_agi.py, lower rate only), policy (a daemon), every other round
     reversed; each dialplan with only the AGI server it needs;
  5. the soak: --soak-minutes of policy calls at half the policy knee on a fresh daemon (RSS
     after the first minute and at the end);
  then the JSON, the plot and the table. Every call of every step is checked.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mix
import report
from sipprun import StepResult, run_step, sink, udp_bound

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUN = REPO / "scripts" / "asterisk-run.sh"
VENV_PY = Path(sys.executable)
NETNS_ENV = "CALLPOLICY_BENCH_NETNS"
HOST_NETNS_ENV = "CALLPOLICY_BENCH_HOST_NETNS"  # the namespace the bench was started in
MARKER = ".callpolicy-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEMO_AMI = REPO / "config" / "demo" / "manager-users.conf"
# issue 12's targets: knee ratio policy/bare, daemon CPU per call over the run, Asterisk CPU
# per policy call over one bare AGI call, setup latency over bare-AGI at half the bare knee,
# daemon RSS growth over the soak after its first minute
TARGETS = {"ratio": 0.75, "daemon_cpu_us_per_call": 400.0, "asterisk_over_bare_agi_us": 300.0,
           "p50_over_bare_agi_ms": 0.5, "p99_over_bare_agi_ms": 2.0, "soak_growth_mb": 5.0}
# the dialplans of the latency runs, and the AGI server each needs (Bench.serve)
DIALPLANS = ["bare", "bare_agi", "floor", "policy"]
SERVER = {"bare": None, "bare_agi": "floor", "floor": "floor", "policy": "daemon"}


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def merged(steps: list[StepResult]) -> StepResult:
    """The interleaved repeats of one dialplan at one rate as one step (all their calls)."""
    out = StepResult(steps[0].dialplan, steps[0].rate, sum(s.calls for s in steps))
    for s in steps:
        out.failed += s.failed
        out.retransmissions += s.retransmissions
        out.mismatches += s.mismatches
        out.checked += s.checked
        out.ring_ms += s.ring_ms
        out.reject_ms += s.reject_ms
        out.msg_ring_ms += s.msg_ring_ms
        out.msg_reject_ms += s.msg_reject_ms
    out.achieved_cps = min(s.achieved_cps for s in steps)
    return out


def log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ /proc helpers

def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def system_cpu() -> tuple[float, float]:
    """(busy in user+nice+system, total) seconds over all CPUs, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system = fields[0], fields[1], fields[2]
    return (user + nice + system) / CLK_TCK, sum(fields[:8]) / CLK_TCK


def proc_identity(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return f"{stat[stat.index('(') + 1:stat.rindex(')')]} {stat[stat.rindex(')') + 2:].split()[19]}"


def machine() -> dict[str, Any]:
    model = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cores": os.cpu_count(), "model": model, "kernel": platform.release(),
            "online_cpus": sorted(os.sched_getaffinity(0))}


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CALLPOLICY_")}


# ----------------------------------------------------------------------------- the run

class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
        self.work = Path(args.work_dir)
        self.run_dir = self.work / f"run-{self.stamp}-c{args.customers}"
        self.state = self.run_dir / "state"
        self.ast_dir = self.run_dir / "asterisk-1"  # one per phase: a fresh Asterisk each
        self.asterisk_pid: int | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_log: Path | None = None
        self.steps: list[dict[str, Any]] = []
        self.step_count = 0
        self.samples: list[dict[str, Any]] = []
        self.sampling = threading.Event()
        self.sampler: threading.Thread | None = None
        self.phase = "setup"
        self.registry = self.work / f"procs-{os.getpid()}"
        cores = sorted(os.sched_getaffinity(0))
        if args.pin == "split" and len(cores) >= 2:
            half = len(cores) // 2
            self.sut_cpus: set[int] | None = set(cores[:half])
            self.gen_cpus: set[int] | None = set(cores[half:])
        else:
            self.sut_cpus = self.gen_cpus = None
        self.notes: list[str] = []
        self.daemon_cpu_base = 0.0
        self.daemon_calls = 0  # policy calls in the current daemon's life
        self.lives: list[dict[str, Any]] = []  # one per daemon start: CPU, calls, RSS
        self.floor: subprocess.Popen[bytes] | None = None
        self.earlier_keys: set[tuple[str, str]] = set()  # (trunk destination, caller) so far
        self.import_info: dict[str, Any] = {}
        self.netns = os.readlink("/proc/self/ns/net")

    # -------------------------------------------------------------- set-up / tear-down
    def check_isolation(self) -> None:
        host = os.environ.get(HOST_NETNS_ENV, "")
        if not host or self.netns == host:
            raise SystemExit("bench: refusing to run in the host's network namespace")
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True,
                               check=True).stdout.split("\n")
        names = [line.split(":")[1].strip() for line in links if line.strip()]
        if names != ["lo"]:
            raise SystemExit(f"bench: the namespace has interfaces {names}, expected only lo")
        for port in (("127.0.0.1", 5060), ("127.0.0.3", 5080)):
            if udp_bound(*port):
                raise SystemExit(f"bench: {port} already bound inside the new namespace?!")
        log(f"private network namespace {self.netns} (host: {host}); only lo, nothing bound")

    def register(self, pid: int) -> None:
        ident = proc_identity(pid)
        if ident:
            with self.registry.open("a") as handle:
                handle.write(f"{pid} {ident}\n")

    def clean_stale(self) -> None:
        """Leftovers of a bench that was SIGKILLed: its processes (by pid + identity, only if
        that bench is gone) and its Asterisk (by its run dir's state)."""
        self.work.mkdir(parents=True, exist_ok=True)
        for entry in self.work.glob("procs-*"):
            owner = entry.name.removeprefix("procs-")
            if owner.isdigit() and proc_identity(int(owner)) is not None:
                continue
            for line in entry.read_text().splitlines():
                pid, _, ident = line.partition(" ")
                if pid.isdigit() and proc_identity(int(pid)) == ident:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            entry.unlink(missing_ok=True)
        runs = sorted(p for p in self.work.glob("run-*") if (p / MARKER).exists())
        for old in runs:
            for ast in old.glob("asterisk-*"):
                if (ast / "state").exists():
                    subprocess.run([str(RUN), "--run-dir", str(ast), "stop"],
                                   capture_output=True, timeout=60, env=clean_env(), check=False)
        for old in runs[:-1] if not self.args.keep_runs else []:
            shutil.rmtree(old, ignore_errors=True)  # keep the previous run for comparison

    def prepare_store(self) -> None:
        self.state.mkdir(parents=True)
        db = self.state / "callpolicy.db"
        (self.state / "callpolicy.toml").write_text(
            "# callpolicy load benchmark (bench/load.py): a private copy, in a private netns\n"
            f'[store]\npath = "{db}"\n'
            '[agi]\nlisten = "127.0.0.1:4573"\n'
            '[ami]\nhost = "127.0.0.1"\n'
            f'port = {5038 if self.args.ami else 5039}\nusername = "callpolicy"\n'
            "# The fraud guard counts every call, with caps the bench never reaches (10\n"
            "# customers at hundreds of calls/s would hit the production defaults at once).\n"
            "[fraud]\nmax_concurrent = 1000000\nmax_per_minute = 1000000000\n"
            "max_concurrent_risky = 1000000\n"
            '[log]\nformat = "json"\n')
        n = self.args.customers
        digest = hashlib.sha256(str(n).encode())
        store = REPO / "agi" / "callpolicy" / "store"
        for path in (HERE / "mix.py", *sorted(store.glob("*.py"))):
            digest.update(path.read_bytes())
        cache = Path(self.args.cache_dir) / f"customers-{n}-{digest.hexdigest()[:16]}.db"
        meta = cache.with_suffix(".json")
        if cache.exists() and meta.exists() and not self.args.no_cache:
            shutil.copy(cache, db)
            self.import_info = {**json.loads(meta.read_text()), "cached": True}
            log(f"store: {n} customers from the cache {cache} (import took "
                f"{self.import_info['import_seconds']:.1f} s when it was built)")
            return
        toml = self.run_dir / f"customers-{n}.toml"
        mix.write_customers(toml, n)
        log(f"store: importing {n} customers with `callpolicy customer import` …")
        env = {**clean_env(), "CALLPOLICY_CONFIG": str(self.state / "callpolicy.toml")}
        t0 = time.monotonic()
        done = subprocess.run([str(VENV_PY), "-m", "callpolicy.cli", "customer", "import",
                               str(toml), "--by", "bench", "--ticket", "BENCH"],
                              env=env, capture_output=True, text=True, timeout=3600,
                              check=False)
        seconds = time.monotonic() - t0
        if done.returncode != 0:
            raise SystemExit(f"bench: import failed: {done.stderr[-2000:]}")
        log(f"store: imported {n} customers in {seconds:.1f} s ({n / seconds:.0f}/s)")
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.import_info = {"customers": n, "import_seconds": round(seconds, 1),
                            "built": self.stamp, "cached": False}
        cache.parent.mkdir(parents=True, exist_ok=True)
        for old in cache.parent.glob(f"customers-{n}-*"):
            old.unlink()
        shutil.copy(db, cache)
        meta.write_text(json.dumps(self.import_info))
        toml.unlink()

    def stop_asterisk(self) -> None:
        if (self.ast_dir / "state").exists():
            subprocess.run([str(RUN), "--run-dir", str(self.ast_dir), "stop"],
                           capture_output=True, timeout=60, env=clean_env(), check=False)
        status = subprocess.run([str(RUN), "--run-dir", str(self.ast_dir), "status"],
                                capture_output=True, timeout=30, env=clean_env(), check=False)
        if status.returncode != 3:
            log(f"WARNING: Asterisk status after stop: {status.stdout.strip()}")

    def fresh_asterisk(self) -> None:
        """Each phase gets a fresh Asterisk, so that no phase inherits what an earlier
        overload left behind (channels, transactions, memory)."""
        self.stop_asterisk()
        number = int(self.ast_dir.name.rsplit("-", 1)[1]) + 1
        self.ast_dir = self.run_dir / f"asterisk-{number}"
        self.start_asterisk()

    def rx(self, command: str, timeout: float = 15) -> str:
        done = subprocess.run([str(RUN), "--run-dir", str(self.ast_dir), "rx", command],
                              capture_output=True, text=True, timeout=timeout + 5,
                              env={**clean_env(), "RX_TIMEOUT": str(int(timeout))},
                              check=False)
        return done.stdout

    def start_asterisk(self) -> None:
        # The shipped (production) config plus only the demo AMI user: not config/demo's
        # asterisk-local.conf, which turns verbose logging on for the tests and `make run`.
        extra = self.run_dir / "asterisk-extra"
        extra.mkdir(exist_ok=True)
        shutil.copy(DEMO_AMI, extra / DEMO_AMI.name)
        env = {**clean_env(), "ASTERISK_EXTRA_CONFIG": str(extra)}
        log("starting Asterisk (scripts/asterisk-run.sh) in the namespace …")
        done = subprocess.run([str(RUN), "--run-dir", str(self.ast_dir), "--state-dir",
                               str(self.state), "start"], capture_output=True, text=True,
                              timeout=900, env=env, check=False)
        (self.ast_dir.parent / f"{self.ast_dir.name}-start.log").write_text(done.stderr)
        if done.returncode != 0:
            raise SystemExit(f"bench: Asterisk did not start:\n{done.stderr[-3000:]}")
        state = dict(line.split("=", 1) for line in
                     (self.ast_dir / "state").read_text().splitlines() if "=" in line)
        self.asterisk_pid = int(state["PID"])
        if "bench-phone" not in self.rx("pjsip show endpoints"):
            raise SystemExit("bench: no bench-phone endpoint: config/asterisk/pjsip.conf "
                             "lacks the bench endpoints")
        if "_[0-9a-zA-Z+*#]." not in self.rx("dialplan show bench"):
            # extensions.conf does not #include bench.conf: add it at run time
            context = "bench"
            for line in (REPO / "dialplan" / "bench.conf").read_text().splitlines():
                if line.startswith("["):
                    context = line[1:line.index("]")]
                elif line.startswith("exten => "):
                    self.rx(f"dialplan add extension {line[len('exten => '):]} into {context}")
            note = ("dialplan/bench.conf loaded at run time with `dialplan add extension` "
                    "(extensions.conf does not #include it)")
            if note not in self.notes:
                self.notes.append(note)
        self.check_bench_context()
        shown = self.rx("dialplan show bench")
        if "from-phones" not in shown:
            raise SystemExit(f"bench: the [bench] context did not load:\n{shown}")
        if "AGI" not in self.rx("dialplan show bare-agi"):
            raise SystemExit("bench: the [bare-agi] context did not load")
        if self.sut_cpus:
            self.pin_all_threads(self.asterisk_pid, self.sut_cpus)
        log(f"Asterisk pid {self.asterisk_pid} up ({self.ast_dir})")

    def check_bench_context(self) -> None:
        """[bench] sets the customer's endpoint from X-Bench-Endpoint and jumps to priority 2
        of [from-phones]: that is the policy dialplan as long as [from-phones]'s priority 1
        is exactly what [bench]'s replaces (the endpoint from ${CHANNEL(endpoint)})."""
        text = (REPO / "dialplan" / "policy.conf").read_text()
        body = text[text.index("[from-phones]"):]
        first = next(line for line in body.splitlines() if line.startswith("exten => _"))
        if not first.endswith(",1,Set(__CP_ENDPOINT=${CHANNEL(endpoint)})"):
            self.notes.append("policy.conf's [from-phones] no longer starts with the endpoint "
                              "(priority 1): update dialplan/bench.conf, which replaces it")
            log("WARNING: " + self.notes[-1])

    @staticmethod
    def pin_all_threads(pid: int, cpus: set[int]) -> None:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)

    def asterisk_channels(self) -> int:
        match = re.search(r"(\d+) active channel", self.rx("core show channels count"))
        return int(match.group(1)) if match else -1

    def settle(self, seconds: float = 20.0) -> None:
        """Wait until Asterisk has no channel left and the daemon is idle again (it may still
        be working through AMI events after an overload)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self.asterisk_channels() > 0:
            time.sleep(0.3)
        if self.daemon is not None:
            while time.monotonic() < deadline:
                before = proc_cpu(self.daemon.pid)
                time.sleep(0.5)
                if proc_cpu(self.daemon.pid) - before < 0.03:
                    break
        left = self.asterisk_channels()
        if left > 0:
            # calls SIPp gave up on (overload) keep their channels until the Dial timeout:
            # they would hold RTP ports and CPU in the next step
            self.rx("channel request hangup all")
            time.sleep(1.0)
            self.notes.append(f"{left} channel(s) still up after {seconds:.0f} s of settling "
                              f"after step {self.step_count}: hung up")

    def start_daemon(self) -> None:
        secret = ""
        for line in DEMO_AMI.read_text().splitlines():
            if line.strip().startswith("secret"):
                secret = line.split("=", 1)[1].strip()
        env = {**clean_env(), "CALLPOLICY_CONFIG": str(self.state / "callpolicy.toml"),
               "CALLPOLICY_AMI_SECRET": secret}
        self.daemon_log = self.run_dir / f"daemon-{len(self.lives) + 1}.log"
        handle = self.daemon_log.open("wb")
        cpus = self.sut_cpus

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        argv = [str(VENV_PY), "-m", "callpolicy.cli", "serve", "--log-level",
                self.args.log_level]
        t0 = time.monotonic()
        self.daemon = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                       stdout=handle, stderr=handle, preexec_fn=pin)
        handle.close()
        self.register(self.daemon.pid)
        deadline = time.monotonic() + 300
        while True:
            if self.daemon.poll() is not None:
                raise SystemExit("bench: the daemon exited:\n" + self.daemon_tail())
            text = self.daemon_log.read_text(errors="replace")
            if '"listening"' in text:
                break
            if time.monotonic() > deadline:
                raise SystemExit("bench: the daemon did not listen:\n" + self.daemon_tail())
            time.sleep(0.1)
        self.daemon_ready_s = round(time.monotonic() - t0, 2)
        ami_deadline = time.monotonic() + 15
        while '"ami_connected"' not in self.daemon_log.read_text(errors="replace"):
            if time.monotonic() > ami_deadline:
                self.notes.append("the daemon did not log ami_connected within 15 s")
                break
            time.sleep(0.1)
        self.daemon_cpu_base = proc_cpu(self.daemon.pid)
        self.daemon_calls = 0
        rss = proc_rss_mb(self.daemon.pid) or 0.0
        self.lives.append({"pid": self.daemon.pid, "ready_s": self.daemon_ready_s,
                           "after_load_mb": round(rss, 2), "rss": []})
        log(f"daemon pid {self.daemon.pid} listening after {self.daemon_ready_s} s "
            f"(RSS {rss:.1f} MB)")

    def daemon_tail(self) -> str:
        if self.daemon_log is None or not self.daemon_log.exists():
            return ""
        return "\n".join(self.daemon_log.read_text(errors="replace").splitlines()[-15:])

    def stop_daemon(self) -> None:
        if self.daemon is None:
            return
        if self.daemon.poll() is None:
            if self.lives:
                life = self.lives[-1]
                life["cpu_s"] = round(proc_cpu(self.daemon.pid) - self.daemon_cpu_base, 3)
                life["calls"] = self.daemon_calls
                life["end_mb"] = proc_rss_mb(self.daemon.pid)
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait(5)
            if self.lives and self.daemon_log is not None:
                # every policy call must have been decided by the daemon itself
                sources: dict[str, int] = {}
                for line in self.daemon_log.read_text(errors="replace").splitlines():
                    if '"event": "decision"' in line:
                        match = re.search(r'"source": "([a-z_]+)"', line)
                        key = match.group(1) if match else "?"
                        sources[key] = sources.get(key, 0) + 1
                self.lives[-1]["decisions_by_source"] = sources
                self.lives[-1]["log_bytes"] = self.daemon_log.stat().st_size
        self.daemon = None

    def start_floor(self) -> None:
        cpus = self.sut_cpus

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        self.floor = subprocess.Popen([str(VENV_PY), str(HERE / "floor_agi.py")],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, preexec_fn=pin)
        self.register(self.floor.pid)
        assert self.floor.stdout is not None
        if b"listening" not in self.floor.stdout.readline():
            raise SystemExit("bench: bench/floor_agi.py did not start")

    def stop_floor(self) -> None:
        if self.floor is not None and self.floor.poll() is None:
            self.floor.terminate()
            try:
                self.floor.wait(5)
            except subprocess.TimeoutExpired:
                self.floor.kill()
                self.floor.wait(5)
        self.floor = None

    def cleanup(self) -> None:
        self.sampling.set()
        if self.sampler is not None:
            self.sampler.join(5)
        self.stop_daemon()
        self.stop_floor()
        self.stop_asterisk()
        # Anything still in this private namespace was started by this bench.
        mine = {os.getpid(), os.getppid()}
        left = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in mine:
                continue
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns" / "net") == self.netns:
                    left.append(int(entry.name))
        for pid in left:
            log(f"WARNING: process {pid} ({proc_identity(pid)}) left in the namespace: killed")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.registry.unlink(missing_ok=True)

    # ------------------------------------------------------------------- measuring
    def sample_forever(self) -> None:
        while not self.sampling.wait(0.5):
            sample: dict[str, Any] = {"t": round(time.monotonic() - self.started, 2),
                                      "phase": self.phase}
            if self.daemon is not None and self.daemon.poll() is None:
                sample["daemon_rss_mb"] = proc_rss_mb(self.daemon.pid)
                sample["daemon_cpu_s"] = proc_cpu(self.daemon.pid)
                sample["daemon_calls"] = self.daemon_calls
                if self.lives and sample["daemon_rss_mb"]:
                    self.lives[-1]["rss"].append((sample["t"], round(sample["daemon_rss_mb"], 2),
                                                  self.daemon_calls, self.phase))
            self.samples.append(sample)

    def step(self, dialplan: str, rate: float, seconds: float, kind: str,
             trace_msg: bool = False) -> StepResult:
        self.step_count += 1
        count = max(10, round(rate * seconds))
        calls = mix.make_calls(count, self.args.customers, seed=1000 + self.step_count)
        directory = self.run_dir / "steps" / f"{self.step_count:03d}-{dialplan}-{kind}-{rate:g}"
        self.phase = f"{dialplan} {kind} {rate:g}/s"
        agi = self.daemon or self.floor
        ours = [self.asterisk_pid] + ([agi.pid] if agi else [])
        cpu0 = {pid: proc_cpu(pid) for pid in ours if pid}
        sys0 = system_cpu()
        me0 = proc_cpu(os.getpid())
        result = run_step(directory, dialplan, rate, calls, self.gen_cpus, trace_msg,
                          self.earlier_keys)
        if dialplan == "policy":
            self.daemon_calls += len(calls)
        self.settle()
        if not result.clean:
            absorbed = sink(directory / "sink", self.gen_cpus)
            if absorbed:
                result.notes.append(f"after the step, a sink UAS absorbed {absorbed} late "
                                    "INVITE(s)")
            self.settle(5)
        sys1 = system_cpu()
        result.cpu["asterisk"] = proc_cpu(self.asterisk_pid or 0) - cpu0.get(self.asterisk_pid, 0)
        if agi:
            name = "daemon" if agi is self.daemon else "floor_agi"
            result.cpu[name] = proc_cpu(agi.pid) - cpu0.get(agi.pid, 0)
        result.cpu["bench"] = proc_cpu(os.getpid()) - me0
        busy, total = sys1[0] - sys0[0], sys1[1] - sys0[1]
        others = busy - sum(result.cpu.values())
        rtt = report.summary(result.ring_ms + result.reject_ms)
        entry = {
            "n": self.step_count, "dialplan": dialplan, "phase": kind, "rate": rate,
            "calls": len(calls), "clean": result.clean, "achieved_cps": round(
                result.achieved_cps, 1), "failed": result.failed,
            "retransmissions": result.retransmissions, "mismatches": len(result.mismatches),
            "checked": result.checked, "outcomes": dict(result.outcomes),
            "rtt_ms": rtt, "seconds": round(result.seconds, 2),
            "cpu_s": {k: round(v, 3) for k, v in result.cpu.items()},
            "cpu_us_per_call": {k: round(v / len(calls) * 1e6, 1)
                                for k, v in result.cpu.items()},
            "other_load_cores": round(max(others, 0.0) / max(total, 1e-9)
                                      * (os.cpu_count() or 1), 3),
            "notes": result.notes, "directory": str(directory),
        }
        if trace_msg:
            entry["msg_ms"] = {"all": report.summary(result.msg_ring_ms + result.msg_reject_ms),
                               "ring": report.summary(result.msg_ring_ms),
                               "reject": report.summary(result.msg_reject_ms)}
        self.steps.append(entry)
        status = "clean" if result.clean else "NOT clean"
        log(f"  {dialplan:8} {kind:7} {rate:6g}/s x {len(calls):5}: {status}; failed "
            f"{result.failed}, retrans {result.retransmissions}, achieved "
            f"{result.achieved_cps:.0f}/s, rtt p50/p99 {report.fmt(rtt['p50'], 0)}/"
            f"{report.fmt(rtt['p99'], 0)} ms, Asterisk {entry['cpu_us_per_call']['asterisk']:.0f}"
            f" µs/call" + "".join(f", {k} {v:.0f} µs/call"
                                  for k, v in entry["cpu_us_per_call"].items()
                                  if k in ("daemon", "floor_agi"))
            + (f", other load {entry['other_load_cores']:.2f} cores"
               if entry["other_load_cores"] > 0.1 else ""))
        if result.mismatches:
            for line in result.mismatches[:10]:
                log(f"    MISMATCH {line}")
        return result

    def knee(self, dialplan: str) -> float:
        a = self.args
        good, bad = 0.0, None
        rate = float(a.start)
        while rate <= a.max_rate:
            ok = self.step(dialplan, rate, a.step_seconds, "knee").clean
            if not ok and a.confirm:
                log(f"  {dialplan}: {rate:g}/s not clean: once more to tell load from noise")
                ok = self.step(dialplan, rate, a.step_seconds, "knee").clean
            if not ok:
                bad = rate
                break
            good = rate
            rate += a.rate_step
        if bad is None:
            self.notes.append(f"{dialplan}: clean up to --max-rate {a.max_rate}: the knee is "
                              "higher")
            return good
        while bad - good > a.resolution:
            mid = round((good + bad) / 2 / 5) * 5
            if mid <= good or mid >= bad:
                break
            if self.step(dialplan, mid, a.step_seconds, "knee").clean:
                good = mid
            else:
                bad = mid
        log(f"{dialplan} knee: {good:g} calls/s (first failing step {bad:g}/s)")
        return good

    def profile_daemon(self, seconds: float) -> subprocess.Popen[bytes] | None:
        spy = shutil.which("py-spy", path=str(VENV_PY.parent)) or shutil.which("py-spy")
        if not spy or self.daemon is None:
            self.notes.append("--profile: py-spy not found (pip install -e '.[bench]')")
            return None
        out = self.run_dir / "profile.raw"
        return subprocess.Popen([spy, "record", "--pid", str(self.daemon.pid), "--duration",
                                 str(int(seconds)), "--rate", "250", "--format", "raw",
                                 "--nonblocking", "--output", str(out)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def serve(self, server: str | None) -> None:
        """Run the AGI server a dialplan needs and nothing else: none (bare: Asterisk alone,
        no AMI client either), the do-nothing server (bare_agi, floor), or a fresh daemon with
        its warm-up (policy)."""
        if server != "daemon" and self.daemon is not None:
            self.stop_daemon()
        if server != "floor" and self.floor is not None:
            self.stop_floor()
        if server == "floor" and self.floor is None:
            self.start_floor()
        if server == "daemon" and self.daemon is None:
            self.start_daemon()
            self.step("policy", 20, 5, "warmup")

    def interleaved(self, rates: list[float], kind: str, dialplans: list[str]
                    ) -> dict[str, dict[float, list[StepResult]]]:
        """Per rate (lower first), --repeats rounds over the dialplans, every other round in
        reverse order (A B C D D C B A …), so that a drift of the shared machine falls on all
        of them alike. The floor runs at the lowest rate only: it is not much cheaper than the
        policy, so above the policy knee it is overloaded too."""
        a = self.args
        out: dict[str, dict[float, list[StepResult]]] = {name: {} for name in dialplans}
        for rate in rates:
            for repeat in range(a.repeats):
                order = dialplans if repeat % 2 == 0 else dialplans[::-1]
                for name in order:
                    if name == "floor" and rate != rates[0] and kind != "probe":
                        continue
                    self.serve(SERVER[name])
                    spy = self.profile_daemon(a.latency_seconds) if a.profile \
                        and name == "policy" and repeat == 0 and rate == rates[0] else None
                    out[name].setdefault(rate, []).append(
                        self.step(name, rate, a.latency_seconds, kind, True))
                    if spy is not None:
                        spy.wait(a.latency_seconds + 30)
                        log(f"py-spy profile: {self.run_dir / 'profile.raw'}")
        self.serve(None)
        return out

    def soak(self, rate: float) -> dict[str, Any]:
        """--soak-minutes one-minute steps of policy calls at `rate` (half the policy knee)
        on a fresh daemon; its RSS after the first minute and at the end."""
        minutes = self.args.soak_minutes
        if minutes <= 0:
            return {"minutes": 0, "rss_mb_start": None, "rss_mb_end": None,
                    "rate_cps": None, "skipped": "--soak-minutes 0"}
        self.serve(None)
        self.serve("daemon")
        assert self.daemon is not None
        rss: list[float | None] = []
        clean = calls = 0
        for _ in range(minutes):
            step = self.step("policy", rate, 60, "soak")
            clean += step.clean
            calls += step.calls
            rss.append(proc_rss_mb(self.daemon.pid))
        self.serve(None)
        start, end = rss[0], rss[-1]
        log(f"soak: {minutes} min at {rate:g}/s, daemon RSS {start} -> {end} MB")
        return {"minutes": minutes, "rate_cps": rate, "calls": calls, "clean_minutes": clean,
                "rss_mb_start": None if start is None else round(start, 2),
                "rss_mb_end": None if end is None else round(end, 2),
                "growth_mb": None if start is None or end is None else round(end - start, 2),
                "rss_mb_by_minute": [None if x is None else round(x, 2) for x in rss]}

    def probe(self, rates: list[float]) -> int:
        """Quick A/B tool: the chosen dialplans at fixed rates on one Asterisk, interleaved
        (--repeats); per step the CPU per call and the setup latency. No knee search, no
        JSON."""
        self.prepare_store()
        self.start_asterisk()
        self.step("bare", 20, 3, "warmup")
        self.interleaved(rates, "probe", self.args.dialplans)
        print(f"{'dialplan':8} {'rate':>5} {'clean':>5} {'Asterisk':>9} {'AGI srv':>8} "
              f"{'p50':>7} {'p95':>7} {'p99':>7}   (µs/call, ms INVITE -> 180/403)")
        mismatches = 0
        for entry in self.steps:
            if entry["phase"] != "probe":
                continue
            mismatches += entry["mismatches"]
            per = entry["cpu_us_per_call"]
            srv = per.get("daemon", per.get("floor_agi"))
            msg = entry["msg_ms"]["all"]
            print(f"{entry['dialplan']:8} {entry['rate']:5g} {entry['clean']!s:>5} "
                  f"{per['asterisk']:9.0f} {srv if srv is not None else '-':>8} "
                  + " ".join(report.fmt(msg[k], 2).rjust(7) for k in ("p50", "p95", "p99")))
        print("\nmedian [min-max] over the repeats (µs/call):")
        for name in self.args.dialplans:
            for rate in rates:
                spread = self.spread(name, rate, "probe")
                print(f"{name:8} {rate:5g} Asterisk {report.fmt_spread(spread['asterisk_cpu_us'])}"
                      f"  AGI server {report.fmt_spread(spread['agi_server_cpu_us'])}"
                      f"  p50 {report.fmt_spread(spread['p50_ms'], 2)} ms")
        return 1 if mismatches else 0

    def spread(self, name: str, rate: float, kind: str) -> dict[str, Any]:
        """The interleaved repeats of one dialplan at one rate: each measure's values."""
        entries = [e for e in self.steps if e["dialplan"] == name and e["phase"] == kind
                   and e["rate"] == rate]
        per = [e["cpu_us_per_call"] for e in entries]
        return {"asterisk_cpu_us": [x["asterisk"] for x in per],
                "agi_server_cpu_us": [x[k] for x in per for k in ("daemon", "floor_agi")
                                      if k in x],
                "p50_ms": [e["msg_ms"]["all"]["p50"] for e in entries if "msg_ms" in e],
                "p99_ms": [e["msg_ms"]["all"]["p99"] for e in entries if "msg_ms" in e],
                "clean": [e["clean"] for e in entries]}

    # ------------------------------------------------------------------------- main
    def run(self) -> int:
        a = self.args
        if self.gen_cpus:
            os.sched_setaffinity(0, self.gen_cpus)
        self.check_isolation()
        self.clean_stale()
        self.run_dir.mkdir(parents=True)
        (self.run_dir / MARKER).touch()
        log(f"run dir {self.run_dir}; pinning: "
            + (f"Asterisk + daemon on CPU {sorted(self.sut_cpus)}, SIPp + bench on CPU "
               f"{sorted(self.gen_cpus or [])}" if self.sut_cpus else "none"))
        if a.probe:
            try:
                return self.probe(a.probe)
            finally:
                self.cleanup()
        try:
            self.prepare_store()
            self.start_asterisk()
            self.sampler = threading.Thread(target=self.sample_forever, daemon=True)
            self.sampler.start()
            # 1. bare knee, Asterisk alone
            self.step("bare", 20, 3, "warmup")
            bare_knee = self.knee("bare")
            # 2. bare-AGI knee: [bare] plus one AGI call to the do-nothing server
            self.fresh_asterisk()
            self.serve("floor")
            self.step("bare_agi", 20, 3, "warmup")
            bare_agi_knee = self.knee("bare_agi")
            # 3. policy knee
            self.fresh_asterisk()
            self.serve("daemon")
            policy_knee = self.knee("policy")
            self.serve(None)
            # 4. latency and CPU per call, interleaved: half the bare knee, and half the
            # policy knee if that is lower (first: a run over the policy knee must not
            # precede one below it)
            half_bare = max(10.0, float(round(bare_knee / 2)))
            low = max(10.0, float(round(policy_knee / 2)))
            rates = [low, half_bare] if low < 0.9 * half_bare else [half_bare]
            self.fresh_asterisk()
            self.step("bare", 20, 3, "warmup")
            found = self.interleaved(rates, "latency", a.dialplans)
            lat = {name: {rate: merged(steps) for rate, steps in by_rate.items()}
                   for name, by_rate in found.items()}
            for name in DIALPLANS:
                lat.setdefault(name, {})
            # 5. the soak: a fresh daemon at half the policy knee
            soak = self.soak(low)
            result = self.results(bare_knee, bare_agi_knee, policy_knee, rates, lat,
                                  soak)
        finally:
            self.cleanup()
        return self.write(result)

    def latency_block(self, lat: dict[str, dict[float, StepResult]], rate: float
                      ) -> dict[str, Any]:
        def of(name: str, which: str = "all") -> dict[str, Any]:
            step = lat[name].get(rate)
            if step is None:
                return report.summary([])
            values = {"all": step.msg_ring_ms + step.msg_reject_ms, "ring": step.msg_ring_ms,
                      "reject": step.msg_reject_ms}[which]
            return {**report.summary(values), "clean": step.clean}

        block = {"rate_cps": rate, "bare": of("bare"), "bare_agi": of("bare_agi"),
                 "policy": of("policy"), "floor": of("floor"), "bare_ring": of("bare", "ring"),
                 "bare_agi_ring": of("bare_agi", "ring"),
                 "policy_ring": of("policy", "ring"), "policy_reject": of("policy", "reject"),
                 "floor_ring": of("floor", "ring")}
        for name in DIALPLANS:
            step = lat[name].get(rate)
            block[f"{name}_rtt_trace"] = report.summary(step.ring_ms + step.reject_ms) \
                if step else None
        return block

    def results(self, bare_knee: float, bare_agi_knee: float, policy_knee: float,
                rates: list[float], lat: dict[str, dict[float, StepResult]],
                soak: dict[str, Any]) -> dict[str, Any]:
        half_bare = self.latency_block(lat, rates[-1])
        half_policy = self.latency_block(lat, rates[0]) if len(rates) > 1 else None

        def added(block: dict[str, Any], a: str = "policy", b: str = "bare"
                  ) -> dict[str, float | None]:
            out: dict[str, float | None] = {}
            for key in ("p50", "p95", "p99"):
                x, y = block[a][key], block[b][key]
                out[key] = None if x is None or y is None else round(x - y, 3)
            return out

        lives = [life for life in self.lives if "calls" in life]
        cpu_total = sum(life["cpu_s"] for life in lives)
        calls_total = sum(life["calls"] for life in lives)
        cpu_per_call = cpu_total / calls_total * 1e6 if calls_total else None
        # CPU per call of the interleaved latency runs: the median of the repeats (their
        # values in "interleaved"), at the lower rate (below the policy knee) for the
        # headline figures
        per_rate_cpu: dict[str, float | None] = {}
        ast_by_rate: dict[str, dict[str, float | None]] = {}
        interleaved: dict[str, dict[str, Any]] = {}
        for name in DIALPLANS:
            ast_by_rate[name] = {}
            interleaved[name] = {}
            for rate in rates:
                spread = self.spread(name, rate, "latency")
                if not spread["clean"]:
                    continue
                interleaved[name][f"{rate:g}"] = spread
                ast_by_rate[name][f"{rate:g}"] = median(spread["asterisk_cpu_us"])
                server = median(spread["agi_server_cpu_us"])
                if name == "policy":
                    per_rate_cpu[f"{rate:g}"] = server
                elif name in ("floor", "bare_agi"):
                    per_rate_cpu[f"{name} floor_agi {rate:g}"] = server
        cpu_rate = f"{rates[0]:g}"
        ast_cpu = {name: ast_by_rate[name].get(cpu_rate) for name in ("bare", "bare_agi",
                                                                       "policy")}
        server_cpu = {name: (median(interleaved[name][cpu_rate]["agi_server_cpu_us"])
                             if cpu_rate in interleaved[name] else None)
                      for name in ("bare_agi", "floor", "policy")}
        for life in lives:
            series = life["rss"]
            loaded = [mb for _, mb, _, phase in series if "warmup" not in phase
                      and phase != "setup"]
            life["after_warmup_mb"] = loaded[0] if loaded else None
            life["max_mb"] = max((mb for _, mb, _, _ in series), default=None)
            life["growth_after_warmup_mb"] = None if not loaded or life.get("end_mb") is None \
                else round(life["end_mb"] - loaded[0], 2)
            life["rss"] = series[::4]
        knee_life = lives[0] if lives else {}
        growth = knee_life.get("growth_after_warmup_mb")
        grown_calls = max(1, knee_life.get("calls", 0) - 100)  # after the 100-call warm-up
        per_call_kb = None if growth is None else round(growth * 1024 / grown_calls, 3)
        # flat: less than 2 MB over the whole policy knee search
        rss_flat = None if growth is None else growth <= 2.0
        rss_max = max((life["max_mb"] for life in lives if life.get("max_mb")), default=None)
        ratio = policy_knee / bare_knee if bare_knee else None
        add_bare = added(half_bare)
        add_agi = added(half_bare, "policy", "bare_agi")
        over_agi = None if ast_cpu["policy"] is None or ast_cpu["bare_agi"] is None \
            else round(ast_cpu["policy"] - ast_cpu["bare_agi"], 1)
        growth_soak = soak.get("growth_mb")

        def target(goal: str, value: float | None, limit: float, above: bool = False
                   ) -> dict[str, Any]:
            met = None if value is None else (value >= limit if above else value <= limit)
            return {"goal": goal, "value": value, "met": met}

        targets = {
            "ratio": target(">= 0.75", ratio, TARGETS["ratio"], above=True),
            "daemon_cpu_us_per_call": target("<= 400 µs", cpu_per_call,
                                             TARGETS["daemon_cpu_us_per_call"]),
            "asterisk_over_bare_agi_us": target("<= 300 µs", over_agi,
                                                TARGETS["asterisk_over_bare_agi_us"]),
            "p50_over_bare_agi_ms": target("<= 0.5 ms", add_agi["p50"],
                                           TARGETS["p50_over_bare_agi_ms"]),
            "p99_over_bare_agi_ms": target("<= 2 ms", add_agi["p99"],
                                           TARGETS["p99_over_bare_agi_ms"]),
            "soak_rss_growth_mb": target("< 5 MB", growth_soak, TARGETS["soak_growth_mb"]),
            "rss_flat": {"goal": "< 2 MB growth over the policy knee search", "value": growth,
                         "met": rss_flat, "kb_per_call": per_call_kb},
        }
        profile = None
        if (self.run_dir / "profile.raw").exists():
            profile = report.profile_breakdown(self.run_dir / "profile.raw")
            (HERE / "results").mkdir(exist_ok=True)
            shutil.copy(self.run_dir / "profile.raw",
                        HERE / "results" / f"{self.stamp}-c{self.args.customers}-profile.raw")
        latency = {k: half_bare[k] for k in ("bare", "bare_agi", "policy", "floor", "bare_ring",
                                               "bare_agi_ring", "policy_ring", "policy_reject",
                                               "floor_ring")}
        return {
            "date": self.stamp,
            "customers": self.args.customers,
            "bare_knee_cps": bare_knee,
            "bare_agi_knee_cps": bare_agi_knee,
            "policy_knee_cps": policy_knee,
            "ratio": None if ratio is None else round(ratio, 3),
            "latency_ms": latency,
            "latency_rate_cps": rates[-1],
            "latency_half_bare_knee": half_bare,
            "latency_half_policy_knee": half_policy,
            "latency_source": "SIPp -trace_msg µs timestamps, per call: first INVITE sent -> "
                              "first 180 (allowed) or 403 (blocked) received; 100 Trying "
                              "ignored. The RTT trace of this SIPp build ticks in 4 ms: "
                              "*_rtt_trace",
            "added_latency_ms": add_bare,
            "added_latency_over_bare_agi_ms": add_agi,
            "added_latency_allowed_calls_ms": added(half_bare, "policy_ring", "bare_ring"),
            "added_latency_half_policy_knee_ms": added(half_policy) if half_policy else None,
            "cpu_us_per_call": None if cpu_per_call is None else round(cpu_per_call, 1),
            "daemon_cpu_us_per_call": None if cpu_per_call is None else round(cpu_per_call, 1),
            "cpu_us_per_call_by_latency_run": per_rate_cpu,
            "daemon_cpu_s": round(cpu_total, 2),
            "daemon_calls": calls_total,
            "asterisk_cpu_us_per_call": ast_cpu,
            "asterisk_cpu_rate_cps": rates[0],
            "asterisk_over_bare_agi_us": over_agi,
            "agi_server_cpu_us_per_call": server_cpu,
            "asterisk_cpu_us_per_call_by_rate": ast_by_rate,
            "interleaved": {"repeats": self.args.repeats, "runs": interleaved},
            "soak": soak,
            "rss_mb": None if rss_max is None else round(rss_max, 1),
            "rss": {"flat": rss_flat, "growth_kb_per_call": per_call_kb, "lives": lives},
            "calls_checked": sum(s["checked"] for s in self.steps),
            "calls_total": sum(s["calls"] for s in self.steps),
            "mismatches": sum(s["mismatches"] for s in self.steps),
            "failed_calls_over_knee": sum(s["failed"] for s in self.steps if not s["clean"]),
            "targets": targets,
            "machine": machine(),
            "pinning": {"mode": self.args.pin if self.sut_cpus else "none",
                        "sut_cpus": sorted(self.sut_cpus or []),
                        "generator_cpus": sorted(self.gen_cpus or [])},
            "log_level": self.args.log_level,
            "import": self.import_info,
            "method": {"step_seconds": self.args.step_seconds, "start": self.args.start,
                       "rate_step": self.args.rate_step, "resolution": self.args.resolution,
                       "confirm_failures": self.args.confirm,
                       "latency_seconds": self.args.latency_seconds,
                       "repeats": self.args.repeats, "soak_minutes": self.args.soak_minutes,
                       "mix": "79 % national/EU, 1 % must-reach, 10 % premium, 10 % non-EU",
                       "hold_ms": 100},
            "profile": profile,
            "netns": self.netns,
            "notes": self.notes,
            "steps": self.steps,
            "runtime_s": round(time.monotonic() - self.started, 1),
            "run_dir": str(self.run_dir),
        }

    def write(self, result: dict[str, Any]) -> int:
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        stem = f"{self.stamp}-c{self.args.customers}"
        png = out / f"{stem}.png"
        problem = report.plot(result, png)
        result["plot"] = None if problem else str(png.relative_to(REPO))
        if problem:
            result["notes"].append(problem)
        path = out / f"{stem}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        tmp.replace(path)
        print(report.table(result))
        print(f"\nresults: {path.relative_to(REPO)}"
              + (f", plot: {result['plot']}" if result["plot"] else ""))
        for note in result["notes"]:
            print(f"note: {note}")
        if result["mismatches"]:
            print(f"FAILED: {result['mismatches']} call(s) did not get the expected outcome")
            return 1
        return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--customers", type=int, default=100_000)
    p.add_argument("--pin", choices=("split", "none"), default="split",
                   help="split: Asterisk + daemon on the first half of the CPUs, SIPp and "
                        "this script on the rest (default); none: let the scheduler place")
    p.add_argument("--log-level", choices=("INFO", "WARNING"), default="INFO",
                   help="the daemon's log level (INFO = production default)")
    p.add_argument("--start", type=float, default=50, help="first knee step (calls/s)")
    p.add_argument("--rate-step", type=float, default=50)
    p.add_argument("--max-rate", type=float, default=1500)
    p.add_argument("--resolution", type=float, default=10,
                   help="refine the knee by bisection down to this many calls/s")
    p.add_argument("--step-seconds", type=float, default=8)
    p.add_argument("--latency-seconds", type=float, default=20)
    p.add_argument("--no-confirm", dest="confirm", action="store_false",
                   help="do not repeat a failing coarse step once before calling it the knee")
    p.add_argument("--no-floor", dest="floor", action="store_false",
                   help="skip the floor runs (bench/floor_agi.py in the daemon's place)")
    p.add_argument("--repeats", type=int, default=2,
                   help="interleaved rounds of the latency runs (and of --probe): A B C D, "
                        "then D C B A, … (default 2)")
    p.add_argument("--soak-minutes", type=int, default=10,
                   help="minutes of policy calls at half the policy knee on a fresh daemon, "
                        "its RSS after the first minute and at the end (0 = skip)")
    p.add_argument("--dialplans", type=lambda text: text.split(","),
                   default=None, metavar="NAME[,NAME…]",
                   help=f"with --probe: which of {','.join(DIALPLANS)} (default all)")
    p.add_argument("--profile", action="store_true",
                   help="py-spy the daemon during the policy latency run")
    p.add_argument("--no-ami", dest="ami", action="store_false",
                   help="point the daemon's AMI client at a closed port (to measure what "
                        "the AMI session costs; the fraud guard then sees no hang-ups)")
    p.add_argument("--probe", type=lambda text: [float(x) for x in text.split(",")],
                   metavar="RATE[,RATE…]",
                   help="quick A/B check instead of the benchmark: bare, floor and policy "
                        "at these rates (--latency-seconds each), CPU per call and latency "
                        "per step; no knee search, no JSON")
    p.add_argument("--no-cache", action="store_true", help="re-import the customers")
    p.add_argument("--keep-runs", action="store_true", help="keep older run dirs")
    p.add_argument("--work-dir", default="/tmp/callpolicy-bench",
                   help="run directories (the last two runs are kept)")
    p.add_argument("--cache-dir", default="/var/cache/callpolicy/bench",
                   help="imported customer databases, by size and code version")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bad = sorted(set(args.dialplans or []) - set(DIALPLANS))
    if bad or args.repeats < 1 or args.soak_minutes < 0:
        print(f"bench: --dialplans takes {','.join(DIALPLANS)} (got {','.join(bad)}); "
              "--repeats >= 1; --soak-minutes >= 0" if bad else
              "bench: --repeats must be >= 1 and --soak-minutes >= 0", file=sys.stderr)
        return 2
    if args.dialplans is None:
        args.dialplans = [d for d in DIALPLANS if d != "floor" or args.floor]
    if os.geteuid() != 0:
        print("bench: run as root (network namespace, chroot)", file=sys.stderr)
        return 2
    if os.environ.get(NETNS_ENV) != "1":
        # Re-run this script inside a new network namespace with loopback up; the inner run
        # does all the work and cleans up (SIGINT reaches it directly: same process group).
        inner = ["unshare", "--net", "--fork", "--", "bash", "-c",
                 'ip link set lo up && exec "$@"', "bench-netns", str(VENV_PY),
                 str(Path(__file__).resolve()), *(argv if argv is not None else sys.argv[1:])]
        # Not SIG_IGN: an ignored signal stays ignored across exec, and the inner run (and
        # every SIPp) would then never see Ctrl-C. A Python handler is reset by exec.
        signal.signal(signal.SIGINT, lambda *_: None)
        env = {**os.environ, NETNS_ENV: "1", HOST_NETNS_ENV: os.readlink("/proc/self/ns/net")}
        return subprocess.run(inner, env=env, check=False).returncode
    # SIGTERM (kill, a CI timeout) cleans up like Ctrl-C: SystemExit runs the finally blocks
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return Bench(args).run()
    except KeyboardInterrupt:  # Bench.run's finally has stopped everything by now
        print("bench: interrupted; Asterisk, the daemon and SIPp are stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
