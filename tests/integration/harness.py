"""Real SIP through a real Asterisk 22: the integration-test harness.

    Asterisk      scripts/asterisk-run.sh in a chroot, PJSIP on 127.0.0.1:5060
    phones        SIPp UACs from 127.0.0.2 (acme-101), 127.0.0.4 (acme-102), 127.0.0.5
                  (bakkerij-201), port 5060 unless that is taken (endpoints are identified
                  by IP only, so any port works)
    the network   a SIPp UAC from 127.0.0.3:5070 (identified as endpoint `trunk`, lands in
                  the from-trunk context)
    the trunk     a SIPp UAS on 127.0.0.3:5080 that records every message it gets

Scenarios: tests/sipp/harness_phone_uac.xml, harness_transfer_uac.xml, harness_trunk_uas.xml.
Every SIPp run writes its message trace (-trace_msg), error and scenario logs, its exact command
line and its screen output into its own artefact directory; results are parsed from the
message trace (sip.py), never from SIPp's exit status, and every result/`describe()` names
those files so a failing assertion says where to look.

Everything is bounded: every SIPp gets -timeout and a subprocess deadline, and is killed
(USR1, TERM, KILL) if it outlives it; the test fixtures (conftest.py) also hang up every
Asterisk channel after each test and stop Asterisk at the end of the session.

SIPp 3.6.1 quirks met on the way (the scenarios work around them):
  * a non-2xx final response must be ACKed with the INVITE's branch; [branch] makes a new one,
    so the ACK copies the response's Via ([last_Via:]);
  * optional="global" receptions are looked up only BEHIND the call's current position: the
    BYE/CANCEL/re-INVITE handlers sit early in each scenario;
  * a message that arrives while a call sits on a <nop> between a <send> and the next <recv>
    is "unexpected" and aborts the call: conditional jumps go on the <send> (test=/next=);
  * a <recv timeout=...> is not re-armed when a loop comes back to it: loops are unrolled;
  * <ereg> in a <nop> can crash SIPp: regexps run in a <recv>'s action;
  * a response's status code cannot come from a variable ("Response codes must be in the
    range of 100-700" at load time): the trunk has one branch per supported code;
  * [$var] of a double 0 prints as an empty string in logs.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sip import SipMessage, flow, parse_message_file, quote_display

REPO = Path(__file__).resolve().parents[2]
SIPP_DIR = REPO / "tests" / "sipp"
RUN_SCRIPT = REPO / "scripts" / "asterisk-run.sh"
PHONE_SCENARIO = SIPP_DIR / "harness_phone_uac.xml"
TRANSFER_SCENARIO = SIPP_DIR / "harness_transfer_uac.xml"
TRUNK_SCENARIO = SIPP_DIR / "harness_trunk_uas.xml"

ASTERISK_IP, ASTERISK_PORT = "127.0.0.1", 5060
TRUNK_IP, TRUNK_PORT = "127.0.0.3", 5080
NETWORK_IP, NETWORK_PORT = "127.0.0.3", 5070
PHONES = {"acme-101": "127.0.0.2", "acme-102": "127.0.0.4", "bakkerij-201": "127.0.0.5",
          "bare-phone": "127.0.0.6"}
ENDPOINT_BY_IP = {ip: name for name, ip in PHONES.items()}
#: s a phone stays in an answered call before its BYE unless the test says `hold=`: short,
#: since a call's length matters only where a test sets it (it was 1.0: ~0.8 s of CI per call)
HOLD = 0.2

# Final responses the trunk can give (the scenario has one branch per code), plus
# 200 (answer) and 180 (ring, never answer).
TRUNK_REPLY_CODES = frozenset(
    {180, 200, 403, 404, 408, 480, 484, 486, 487, 488, 500, 502, 503, 504, 600, 603})

_FORBIDDEN_IN_FIELDS = re.compile(r"[\r\n\x00]")


class HarnessError(RuntimeError):
    """The harness itself could not do what was asked (not a test assertion)."""


class AsteriskError(HarnessError):
    pass


# --------------------------------------------------------------------------- processes
_live_lock = threading.Lock()
_live: set[subprocess.Popen] = set()


_REGISTRY = Path(os.environ.get("CALLPOLICY_IT_REGISTRY", "/tmp/callpolicy-integration"))
# the machine lock of this session, shared by its Asterisks (Asterisk._take_machine_lock)
_lock_fd: int | None = None
_lock_holders: set[Asterisk] = set()


def _proc_identity(pid: int) -> str | None:
    """comm + start time of a live process (None if gone): tells a pid from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = stat[stat.index("(") + 1: stat.rindex(")")]
    return f"{comm} {stat[stat.rindex(')') + 2:].split()[19]}"


def _register(proc: subprocess.Popen) -> None:
    with _live_lock:
        _live.add(proc)
        # Recorded so that the next session can end it if this one is SIGKILLed.
        with contextlib.suppress(OSError):
            _REGISTRY.mkdir(parents=True, exist_ok=True)
            ident = _proc_identity(proc.pid)
            if ident:
                with (_REGISTRY / f"{os.getpid()}.procs").open("a") as fh:
                    fh.write(f"{proc.pid} {ident}\n")


def _kill_stale_processes() -> None:
    """SIPps started by a harness session that no longer exists (by pid, if the pid still
    names the same process)."""
    for entry in _REGISTRY.glob("*.procs"):
        owner = int(entry.stem) if entry.stem.isdigit() else -1
        if owner == os.getpid() or _proc_identity(owner) is not None:
            continue
        for line in entry.read_text().splitlines():
            pid, _, ident = line.partition(" ")
            if pid.isdigit() and _proc_identity(int(pid)) == ident:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        entry.unlink(missing_ok=True)


def _unregister(proc: subprocess.Popen) -> None:
    with _live_lock:
        _live.discard(proc)


def stop_process(proc: subprocess.Popen, *, graceful: signal.Signals | None = None,
                 grace: float = 3.0) -> int | None:
    """End a process we started: optional graceful signal, then TERM, then KILL."""
    steps: list[tuple[signal.Signals | None, float]] = []
    if graceful is not None:
        steps.append((graceful, grace))
    steps += [(signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)]
    for sig, wait in steps:
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
    _unregister(proc)
    return proc.poll()


@atexit.register
def _kill_leftovers() -> None:
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        stop_process(proc)


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if not path:
        raise HarnessError("sipp not found: install Debian's sip-tester (scripts/install-deps.sh)")
    return path


def _hex_addr(ip: str, port: int) -> str:
    return socket.inet_aton(ip)[::-1].hex().upper() + f":{port:04X}"


def udp_bound(ip: str, port: int) -> bool:
    """Is ip:port (or 0.0.0.0:port) bound by any process (per /proc/net/udp)?"""
    wanted = {_hex_addr(ip, port), _hex_addr("0.0.0.0", port)}
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] in wanted for line in lines if len(line.split()) > 1)


class _Ports:
    """Local UDP ports for our SIPp UACs: the preferred one (5060) when free, else an
    ephemeral one. Thread-safe; ports stay reserved until released."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._used: dict[str, set[int]] = {}

    @staticmethod
    def _bindable(ip: str, port: int) -> bool:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((ip, port))
            return True
        except OSError:
            return False
        finally:
            s.close()

    def acquire(self, ip: str, preferred: int | None) -> int:
        with self._lock:
            used = self._used.setdefault(ip, set())
            if preferred is not None and preferred not in used and self._bindable(ip, preferred):
                used.add(preferred)
                return preferred
            for _ in range(50):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind((ip, 0))
                port = s.getsockname()[1]
                s.close()
                if port not in used and port not in (ASTERISK_PORT, TRUNK_PORT, NETWORK_PORT):
                    used.add(port)
                    return port
            raise HarnessError(f"no free UDP port on {ip}")

    def release(self, ip: str, port: int) -> None:
        with self._lock:
            self._used.get(ip, set()).discard(port)


PORTS = _Ports()


def _check_field(name: str, value: str) -> str:
    if _FORBIDDEN_IN_FIELDS.search(value):
        raise ValueError(f"{name} must not contain CR, LF or NUL (use extra_headers for raw "
                         f"header lines): {value!r}")
    return value


def _safe_name(text: str, limit: int = 40) -> str:
    return (re.sub(r"[^A-Za-z0-9+#*._-]", "_", text) or "empty")[:limit]


# --------------------------------------------------------------------------- Asterisk


class Asterisk:
    """One Asterisk run (scripts/asterisk-run.sh) with its own RUN_DIR.

    `rx(cmd)` runs `asterisk -rx`, `full_log` is the full log, `reload_dialplan()` copies the
    repo's dialplan/*.conf into the run and reloads it, `restart()` restarts with the repo's
    current config (the script wipes the run dir, AstDB included: the previous logs are kept
    next to it first, and `add_start_hook()` callbacks run again after every start).
    """

    def __init__(self, base: Path, *, state_dir: Path | None = None,
                 boot_timeout: float = 30.0, node_ip: str = ASTERISK_IP) -> None:
        self.base = Path(base)
        self.node_ip = node_ip  # a cluster node's address (asterisk-run.sh --node-ip)
        self.run_dir = self.base / "run"
        # must not be inside RUN_DIR (wiped at each start)
        self.state_dir = Path(state_dir) if state_dir else self.base / "state"
        self.boot_timeout = boot_timeout
        self.started = False
        self._restarts = 0
        self._lock_fd: int | None = None
        self._start_hooks: list[Callable[[Asterisk], None]] = []

    # ---------------------------------------------------------------- paths
    @property
    def full_log(self) -> Path:
        return self.run_dir / "log" / "full"

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    def describe(self) -> str:
        return (f"Asterisk run dir {self.run_dir}\n  full log    {self.full_log}\n"
                f"  console log {self.console_log}\n  state dir   {self.state_dir}\n"
                f"  CLI: RUN_DIR={self.run_dir} {RUN_SCRIPT} rx 'core show channels'")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RUN_DIR"] = str(self.run_dir)
        env["CALLPOLICY_STATE_DIR"] = str(self.state_dir)
        env["ASTERISK_EXTRA_CONFIG"] = str(REPO / "config" / "demo")  # demo AMI user
        env["ASTERISK_BOOT_TIMEOUT"] = str(int(self.boot_timeout))
        env["ASTERISK_NODE_IP"] = self.node_ip
        return env

    def _script(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([str(RUN_SCRIPT), "--run-dir", str(self.run_dir), *args],
                                  env=self._env(), capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise AsteriskError(f"asterisk-run.sh {' '.join(args)} took more than {timeout}s\n"
                                f"{self.describe()}") from exc

    # ---------------------------------------------------------------- lifecycle
    def _take_machine_lock(self, timeout: float) -> None:
        """One harness session per machine at a time (they all need 127.0.0.1:5060 and the
        cluster nodes' addresses): wait for another session's, and stop the Asterisks of a
        session that died (SIGKILL). The Asterisks of this session share the lock."""
        global _lock_fd
        if _lock_fd is not None:
            self._lock_fd = _lock_fd
            _lock_holders.add(self)
            with (_REGISTRY / f"{os.getpid()}.run").open("a") as fh:
                fh.write(str(self.run_dir) + "\n")
            return
        _REGISTRY.mkdir(parents=True, exist_ok=True)
        fd = os.open(_REGISTRY / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise AsteriskError(
                        f"another test session holds {_REGISTRY}/.lock (its Asterisk owns "
                        f"127.0.0.1:5060) for more than {timeout:.0f}s") from None
                if not told:
                    print(f"harness: waiting for another test session's Asterisk "
                          f"({_REGISTRY}/.lock)", file=sys.__stderr__, flush=True)
                    told = True
                time.sleep(0.5)
        self._lock_fd = _lock_fd = fd
        _lock_holders.add(self)
        # We hold the lock, so every registered run is a dead session's leftover.
        _kill_stale_processes()
        for entry in _REGISTRY.glob("*.run"):
            for run_dir in entry.read_text().split("\n"):
                if run_dir.strip():
                    subprocess.run([str(RUN_SCRIPT), "--run-dir", run_dir.strip(), "stop"],
                                   capture_output=True, timeout=60, check=False)
            entry.unlink(missing_ok=True)
        (_REGISTRY / f"{os.getpid()}.run").write_text(str(self.run_dir) + "\n")

    def _release_machine_lock(self) -> None:
        global _lock_fd
        if self._lock_fd is None:
            return
        self._lock_fd = None
        _lock_holders.discard(self)
        runs = _REGISTRY / f"{os.getpid()}.run"
        if _lock_holders:  # another Asterisk of this session still runs
            with contextlib.suppress(OSError):
                kept = [r for r in runs.read_text().split("\n") if r and r != str(self.run_dir)]
                runs.write_text("".join(f"{r}\n" for r in kept))
            return
        runs.unlink(missing_ok=True)
        _kill_leftovers()
        (_REGISTRY / f"{os.getpid()}.procs").unlink(missing_ok=True)
        if _lock_fd is not None:
            os.close(_lock_fd)
            _lock_fd = None

    def start(self, *, lock_timeout: float = 300.0, port_wait: float = 30.0) -> None:
        if os.geteuid() != 0:
            raise AsteriskError("the Asterisk chroot needs root (chroot, mount namespace)")
        if self._lock_fd is None:
            self._take_machine_lock(lock_timeout)
        self.base.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + port_wait
        while udp_bound(self.node_ip, ASTERISK_PORT) and time.monotonic() < deadline:
            time.sleep(0.2)  # another Asterisk (not under our lock) is stopping, maybe
        # first start may build the Asterisk image (scripts/images.sh, minutes): allow for it
        res = self._script("start", timeout=self.boot_timeout + 900)
        if res.returncode != 0:
            raise AsteriskError(f"Asterisk did not start (exit {res.returncode}):\n"
                                f"{res.stderr[-4000:]}\n{self.describe()}")
        self.started = True
        deadline = time.monotonic() + 10
        while not udp_bound(self.node_ip, ASTERISK_PORT):
            if time.monotonic() > deadline:
                raise AsteriskError(f"Asterisk booted but {self.node_ip}:5060 is not bound\n"
                                    f"{self.describe()}")
            time.sleep(0.05)
        for hook in self._start_hooks:
            hook(self)

    def add_start_hook(self, hook: Callable[[Asterisk], None], *, run_now: bool = True) -> None:
        """Run `hook(asterisk)` after every (re)start, e.g. to seed AstDB: a restart wipes the
        run dir (AstDB included). With run_now, also now if Asterisk is up."""
        self._start_hooks.append(hook)
        if run_now and self.started:
            hook(self)

    def stop(self) -> None:
        """Stop Asterisk (idempotent); asterisk-run.sh also ends anything left in the run's
        mount namespace, so no process or mount outlives it."""
        try:
            if self.started or (self.run_dir / "state").exists():
                res = self._script("stop", timeout=90)
                if res.returncode != 0:
                    raise AsteriskError(f"asterisk-run.sh stop failed:\n{res.stderr[-3000:]}")
            self.started = False
        finally:
            self._release_machine_lock()

    def restart(self) -> None:
        """Restart with the repo's current config. asterisk-run.sh wipes RUN_DIR on start:
        the old full/console logs are kept as base/before-restart-N.*"""
        self._restarts += 1
        for src, name in ((self.full_log, "full"), (self.console_log, "console.log")):
            if src.exists():
                shutil.copy2(src, self.base / f"before-restart-{self._restarts}.{name}")
        res = self._script("stop", timeout=90)
        if res.returncode != 0:
            raise AsteriskError(f"asterisk-run.sh stop failed:\n{res.stderr[-3000:]}")
        self.started = False
        self.start()

    def is_running(self) -> bool:
        return self._script("status", timeout=30).returncode == 0

    # ---------------------------------------------------------------- CLI
    def rx(self, command: str, *, timeout: float = 30.0) -> str:
        """`asterisk -rx COMMAND`; raises AsteriskError if the CLI command fails."""
        res = self._script("rx", command, timeout=timeout + 5)
        if res.returncode != 0:
            raise AsteriskError(f"rx {command!r} failed (exit {res.returncode}): "
                                f"{(res.stderr or res.stdout).strip()[-2000:]}")
        return res.stdout

    def reload_dialplan(self) -> str:
        """Copy the repo's dialplan/*.conf into the run's /etc/asterisk and `dialplan
        reload`. Raises AsteriskError if the reload logged an error."""
        etc = self.run_dir / "etc" / "asterisk"
        gid = etc.stat().st_gid
        for src in sorted((REPO / "dialplan").glob("*.conf")):
            dst = etc / src.name
            shutil.copyfile(src, dst)
            os.chown(dst, 0, gid)
            dst.chmod(0o640)
        mark = self.log_mark()
        out = self.rx("dialplan reload")
        time.sleep(0.2)
        errors = [line for line in self.log_since(mark).splitlines()
                  if " ERROR[" in line or ("WARNING[" in line and "pbx_config" in line)]
        if errors:
            raise AsteriskError("dialplan reload logged errors:\n" + "\n".join(errors[-20:]))
        return out

    def active_channels(self) -> int:
        out = self.rx("core show channels count")
        m = re.search(r"(\d+) active channels?", out)
        return int(m.group(1)) if m else 0

    def hangup_all(self, *, wait: float = 5.0) -> bool:
        """Hang up every channel and wait until there are none. True if clean."""
        if not self.started:
            return True
        with contextlib.suppress(AsteriskError):
            if self.active_channels() == 0:
                return True
            self.rx("channel request hangup all")
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(AsteriskError):
                if self.active_channels() == 0:
                    return True
            time.sleep(0.1)
        return False

    # ---------------------------------------------------------------- log
    def log_mark(self) -> int:
        """A position in the full log; log_since(mark) is what was logged after it."""
        try:
            return self.full_log.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, mark: int) -> str:
        try:
            with self.full_log.open("rb") as fh:
                fh.seek(mark)
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, *, since: int = 0, timeout: float = 5.0) -> str:
        """Wait until a line matching the regex appears in the full log after `since`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_since(since).splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line matching {pattern!r} within {timeout}s "
                                     f"in {self.full_log}")
            time.sleep(0.05)


# --------------------------------------------------------------------------- trunk
@dataclass(frozen=True)
class Reply:
    """How the trunk answers an INVITE.

    code 200: (180 + `ring` s if ring > 0) 200 OK with SDP, then wait up to `hold` s for
              Asterisk's BYE (answered 200); if none came, the trunk sends BYE itself.
    code 180: 180 Ringing and never answer: a CANCEL is answered 200 + 487; after `hold` s
              the trunk gives up with 480.
    other:    (180 + `ring` s if ring > 0) that final response (one of TRUNK_REPLY_CODES).
    """

    code: int = 200
    ring: float = 0.0
    hold: float = 10.0

    def __post_init__(self) -> None:
        if self.code not in TRUNK_REPLY_CODES:
            raise ValueError(f"trunk reply code {self.code} not supported; one of "
                             f"{sorted(TRUNK_REPLY_CODES)}")
        if self.ring < 0 or self.hold < 0:
            raise ValueError("ring and hold are seconds >= 0")


def _as_reply(value: int | Reply, *, ring: float, hold: float) -> Reply:
    return value if isinstance(value, Reply) else Reply(int(value), ring=ring, hold=hold)


class Trunk:
    """The carrier: a SIPp UAS on 127.0.0.3:5080 that answers per `reply` (every number) and
    `routes` (Request-URI user -> reply), and records every message it gets.

        with Trunk(tmp_path, reply=200, routes={"092101486": 486}) as trunk:
            ...
            assert trunk.invites[0].ruri_user == "092101299"

    `invites` are the initial INVITEs received (retransmissions and re-INVITEs left out),
    `reinvites` the in-dialog ones, `messages` everything sent and received. The parsed
    objects are sip.SipMessage. It stops by itself after `duration` s at the latest.
    `reconfigure(...)` restarts it with other answers; what it recorded so far is kept.
    """

    def __init__(self, artifacts: Path, reply: int | Reply = 200,
                 routes: Mapping[str, int | Reply] | None = None, *, ring: float = 0.0,
                 hold: float = 10.0, duration: float = 120.0, ip: str = TRUNK_IP,
                 port: int = TRUNK_PORT) -> None:
        self.artifacts = Path(artifacts)
        self.ip, self.port = ip, port
        self.duration = duration
        self._configure(reply, routes, ring=ring, hold=hold)
        self._proc: subprocess.Popen | None = None
        self._runs: list[Path] = []

    def _configure(self, reply: int | Reply, routes: Mapping[str, int | Reply] | None, *,
                   ring: float, hold: float) -> None:
        self.default = _as_reply(reply, ring=ring, hold=hold)
        self.routes: dict[str, Reply] = {}
        for user, r in (routes or {}).items():
            user = str(user)
            if not user or user == "*" or re.search(r"[;\s\x00]", user):
                raise ValueError(f"trunk route key {user!r}: a Request-URI user, without ';' "
                                 f"or spaces ('*' is the default)")
            self.routes[user] = _as_reply(r, ring=ring, hold=hold)

    # ---------------------------------------------------------------- lifecycle
    @property
    def run_dir(self) -> Path | None:
        return self._runs[-1] if self._runs else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Trunk:
        if self.running:
            raise HarnessError("trunk already running")
        run = self.artifacts / f"trunk-{len(self._runs) + 1}"
        run.mkdir(parents=True, exist_ok=True)
        self._runs.append(run)

        def ms(seconds: float) -> int:
            return round(seconds * 1000)

        lines = ["SEQUENTIAL", f"*;{self.default.code};{ms(self.default.ring)};"
                 f"{ms(self.default.hold)}"]
        lines += [f"{u};{r.code};{ms(r.ring)};{ms(r.hold)}" for u, r in self.routes.items()]
        (run / "routes.csv").write_text("\n".join(lines) + "\n")
        if udp_bound(self.ip, self.port):
            raise HarnessError(f"UDP {self.ip}:{self.port} is already in use (a stray SIPp? "
                               f"`ss -ulpn | grep {self.port}`); trunk artefacts: {run}")
        cmd = [sipp_binary(), "-sf", str(TRUNK_SCENARIO), "-i", self.ip, "-p", str(self.port),
               "-nostdin", "-aa", "-inf", "routes.csv", "-infindex", "routes.csv", "0",
               "-timeout", f"{max(1, round(self.duration))}s",
               "-trace_msg", "-message_file", str(run / "messages.log"),
               "-trace_err", "-error_file", str(run / "errors.log"),
               "-trace_logs", "-log_file", str(run / "scenario.log")]
        (run / "command.txt").write_text(f"cd {shlex.quote(str(run))} && {shlex.join(cmd)}\n")
        out = (run / "sipp.out").open("wb")
        try:
            self._proc = subprocess.Popen(cmd, cwd=run, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT)
        finally:
            out.close()
        _register(self._proc)
        deadline = time.monotonic() + 5
        while not udp_bound(self.ip, self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                stop_process(self._proc)
                tail = (run / "sipp.out").read_text(errors="replace")[-2000:]
                raise HarnessError(f"trunk SIPp did not bind {self.ip}:{self.port}:\n{tail}\n"
                                   f"artefacts: {run}")
            time.sleep(0.02)
        return self

    def stop(self) -> int | None:
        """Stop SIPp: USR1 (finish the calls in progress, take no new ones), then TERM/KILL.
        Hang up Asterisk's channels first (Asterisk.hangup_all) for a quick clean stop."""
        if self._proc is None:
            return None
        # A SIPp that has had a call lingers ~6 s after USR1 even with none in progress (its
        # dead-call timers): a longer grace only delays every test by it (it was 0.3 s).
        rc = stop_process(self._proc, graceful=signal.SIGUSR1, grace=0.05)
        self._proc = None
        return rc

    def reconfigure(self, reply: int | Reply = 200,
                    routes: Mapping[str, int | Reply] | None = None, *, ring: float = 0.0,
                    hold: float = 10.0) -> Trunk:
        """Restart with other answers (SIPp reads its routes at start)."""
        self.stop()
        self._configure(reply, routes, ring=ring, hold=hold)
        return self.start()

    def __enter__(self) -> Trunk:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- what it got
    @property
    def messages(self) -> list[SipMessage]:
        out: list[SipMessage] = []
        for run in self._runs:
            out += parse_message_file(run / "messages.log")
        return out

    @property
    def received(self) -> list[SipMessage]:
        return [m for m in self.messages if m.direction == "received"]

    @property
    def invites(self) -> list[SipMessage]:
        """Initial INVITEs received (no To tag), in arrival order, retransmissions removed."""
        return [m for m in self.received
                if m.method == "INVITE" and not (m.to and m.to.tag)]

    @property
    def reinvites(self) -> list[SipMessage]:
        return [m for m in self.received if m.method == "INVITE" and m.to and m.to.tag]

    def invite_for(self, user: str) -> SipMessage:
        """The (first) INVITE whose Request-URI user is `user`."""
        for inv in self.invites:
            if inv.ruri_user == user:
                return inv
        raise AssertionError(f"the trunk got no INVITE for {user!r}\n{self.describe()}")

    def wait_for_invites(self, count: int = 1, *, timeout: float = 5.0) -> list[SipMessage]:
        """Wait until at least `count` INVITEs arrived; returns them (fails on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            invites = self.invites
            if len(invites) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if len(invites) < count:
            raise AssertionError(f"the trunk got {len(invites)} INVITE(s), expected "
                                 f"{count}, within {timeout}s\n{self.describe()}")
        return invites

    def wait_for_request(self, method: str, count: int = 1, *,
                         timeout: float = 5.0) -> list[SipMessage]:
        """The `method` requests the trunk received, once there are `count` (Asterisk's BYE
        to the trunk leaves after the phone's own BYE was answered, its ACK after the 200:
        ms later, not at once)."""
        deadline = time.monotonic() + timeout
        while len(found := [m for m in self.received if m.method == method]) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"the trunk got {len(found)} {method}, expected {count}, "
                                     f"within {timeout}s\n{self.describe()}")
            time.sleep(0.05)
        return found

    def describe(self) -> str:
        runs = ", ".join(str(r) for r in self._runs) or "(never started)"
        routes = ", ".join(f"{u}->{r.code}" for u, r in self.routes.items())
        return (f"trunk {self.ip}:{self.port} default {self.default.code}"
                f"{' routes ' + routes if routes else ''}; artefacts: {runs} "
                f"(messages.log, sipp.out, command.txt)\n{flow(self.messages)}")

    def __repr__(self) -> str:
        return f"<Trunk {self.ip}:{self.port} runs={len(self._runs)} running={self.running}>"


# --------------------------------------------------------------------------- calls
@dataclass
class CallResult:
    """What a phone (SIPp UAC) saw of one call. `status` is the final response code to its
    INVITE (None: none came), `provisional` the 1xx codes, `responses` every response to the
    INVITE (sip.SipMessage, so `result.final.header("X-Callpolicy-Reason")` works),
    `setup_latency` seconds from sending the INVITE to the first 18x or final response,
    `bye_completed` whether a BYE got its 200 (`hung_up_by`: "phone" or "remote")."""

    status: int | None
    provisional: list[int]
    responses: list[SipMessage]
    final: SipMessage | None
    invite: SipMessage | None
    setup_latency: float | None
    bye_completed: bool
    hung_up_by: str | None
    messages: list[SipMessage]
    returncode: int | None
    timed_out: bool
    artifacts: Path
    command: list[str] = field(repr=False, default_factory=list)

    @property
    def answered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def reason_phrase(self) -> str | None:
        return self.final.reason_phrase if self.final else None

    def header(self, name: str) -> str | None:
        """A header of the final response (None if no final response / no such header)."""
        return self.final.header(name) if self.final else None

    @property
    def remote_bye_at(self) -> float:
        """When the phone received Asterisk's BYE (epoch seconds, as SIPp logged it): the
        moment a hang-up reached the phone, without SIPp's own teardown after it."""
        bye = next((m for m in self.messages if m.method == "BYE" and m.direction == "received"),
                   None)
        assert bye is not None, f"the phone received no BYE\n{self.describe()}"
        return bye.timestamp

    def describe(self) -> str:
        lat = f"{self.setup_latency * 1000:.1f} ms" if self.setup_latency is not None else "-"
        return (f"call: final {self.status} {self.reason_phrase or ''}, provisional "
                f"{self.provisional}, setup {lat}, bye_completed={self.bye_completed} "
                f"({self.hung_up_by}), sipp exit {self.returncode}"
                f"{' TIMED OUT' if self.timed_out else ''}\n"
                f"  artefacts: {self.artifacts} (messages.log = every SIP message; sipp.out, "
                f"errors.log, command.txt to re-run it)\n{flow(self.messages)}")

    def __str__(self) -> str:
        return self.describe()


@dataclass
class TransferResult(CallResult):
    """A call, then a blind transfer: `refer_status` is the final response to the REFER
    (None if none), `sipfrag_statuses` the status in each NOTIFY (message/sipfrag), in
    order, `final_sipfrag` the last final one (>= 200) or None."""

    refer: SipMessage | None = None
    refer_response: SipMessage | None = None
    notifies: list[SipMessage] = field(default_factory=list)

    @property
    def refer_status(self) -> int | None:
        return self.refer_response.status if self.refer_response else None

    @property
    def sipfrag_statuses(self) -> list[int | None]:
        return [n.sipfrag_status for n in self.notifies]

    @property
    def final_sipfrag(self) -> int | None:
        finals = [s for s in self.sipfrag_statuses if s is not None and s >= 200]
        return finals[-1] if finals else None

    def describe(self) -> str:
        return (f"transfer: REFER -> {self.refer_status}, NOTIFY sipfrags "
                f"{self.sipfrag_statuses}\n" + super().describe())


def _analyse(messages: list[SipMessage]) -> dict:
    invite = next((m for m in messages if m.direction == "sent" and m.method == "INVITE"), None)
    responses: list[SipMessage] = []
    if invite is not None:
        # the INVITE's own responses: same CSeq AND Call-ID (a stray message from another
        # SIP peer on loopback must not pass for this call's answer)
        responses = [m for m in messages if m.direction == "received" and m.is_response
                     and m.cseq == invite.cseq and m.call_id == invite.call_id]
    finals = [r for r in responses if r.status is not None and r.status >= 200]
    final = finals[0] if finals else None
    first = next((r for r in responses if r.status is not None and r.status >= 180), None)
    latency = first.timestamp - invite.timestamp if (first and invite) else None
    bye_completed, hung_up_by = False, None
    for bye in (m for m in messages if m.method == "BYE"):
        if bye.direction == "sent":
            ok = any(m.direction == "received" and m.status == 200 and m.cseq == bye.cseq
                     for m in messages)
            who = "phone"
        else:
            ok = any(m.direction == "sent" and m.status == 200 and m.cseq == bye.cseq
                     and m.call_id == bye.call_id for m in messages)
            who = "remote"
        if ok:
            bye_completed, hung_up_by = True, who
            break
    return {
        "status": final.status if final else None,
        "provisional": [r.status for r in responses
                        if r.status is not None and r.status < 200],
        "responses": responses, "final": final, "invite": invite,
        "setup_latency": latency, "bye_completed": bye_completed, "hung_up_by": hung_up_by,
    }


class SipClient:
    """Places calls with SIPp; every call gets its own SIPp process and artefact directory,
    so calls can run in parallel threads (a second call from the same IP gets an ephemeral
    local port: endpoints are identified by IP only)."""

    def __init__(self, artifacts: Path, target: str = f"{ASTERISK_IP}:{ASTERISK_PORT}") -> None:
        self.artifacts = Path(artifacts)
        self.target = target  # the Asterisk (node) the calls go to
        self._seq = itertools.count(1)
        self._lock = threading.Lock()
        self.results: list[CallResult] = []

    def _new_dir(self, kind: str, ip: str, dialled: str) -> Path:
        with self._lock:
            n = next(self._seq)
        d = self.artifacts / f"{n:03d}-{kind}-{ip}-{_safe_name(dialled)}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    # ---------------------------------------------------------------- public API
    def call(self, from_ip: str, dialled: str, *, caller_id: str | None = None,
             display: str | None = None, raw_display: bool = False, privacy: bool = False,
             pai: str | None = None, extra_headers: Mapping[str, str] | Iterable[str] | None
             = None, hold: float = HOLD, timeout: float = 10.0, port: int | None = None
             ) -> CallResult:
        """A phone at `from_ip` dials `dialled` (INVITE sip:<dialled>@127.0.0.1:5060).

        caller_id  From user (default: the endpoint's name, e.g. "acme-101", i.e. the phone
                   asks for no particular number; "phone" for unknown IPs)
        display    From display name, sent as an RFC 3261 quoted-string (backslash and
                   double quote escaped); raw_display=True sends it verbatim instead (then
                   it must bring its own quotes if it wants them)
        privacy    adds "Privacy: id" and "P-Asserted-Identity: <sip:<pai or caller_id>@<ip>>"
                   (the From stays as given)
        extra_headers  raw header lines: a mapping name -> value, or "Name: value" string(s)
        hold       seconds in the call after the 200 before the phone sends BYE
        timeout    seconds the phone waits for the call to be set up (SIPp's -timeout is
                   timeout + hold); the result then has status None and timed_out True
        port       local port (default 5060 if free, else an ephemeral one)
        CR, LF and NUL are refused in dialled/caller_id/display/header lines (ValueError).
        """
        return self._run(PHONE_SCENARIO, "call", from_ip, dialled, port=port,
                         preferred_port=5060, caller_id=caller_id, display=display,
                         raw_display=raw_display, privacy=privacy, pai=pai,
                         extra_headers=extra_headers, hold=hold, timeout=timeout)

    def inbound_call(self, dialled: str, caller_id: str, *, display: str | None = None,
                     raw_display: bool = False, privacy: bool = False, pai: str | None = None,
                     extra_headers: Mapping[str, str] | Iterable[str] | None = None,
                     hold: float = HOLD, timeout: float = 10.0, port: int | None = None
                     ) -> CallResult:
        """A call from the network (127.0.0.3:5070, endpoint `trunk`, context from-trunk) to
        `dialled`, from `caller_id`. Same options and result as call()."""
        return self._run(PHONE_SCENARIO, "inbound", NETWORK_IP, dialled, port=port,
                         preferred_port=NETWORK_PORT, caller_id=caller_id, display=display,
                         raw_display=raw_display, privacy=privacy, pai=pai,
                         extra_headers=extra_headers, hold=hold, timeout=timeout)

    def transfer_call(self, from_ip: str, first_dialled: str, refer_to: str, *,
                      caller_id: str | None = None, display: str | None = None,
                      wait_before_refer: float = 0.3,
                      extra_headers: Mapping[str, str] | Iterable[str] | None = None,
                      timeout: float = 15.0, port: int | None = None) -> TransferResult:
        """The phone calls `first_dialled`; once answered (200) and ACKed it waits
        `wait_before_refer` s, sends REFER (Refer-To: <sip:<refer_to>@127.0.0.1>), answers
        the NOTIFYs until a final sipfrag, then sends BYE. If the call is not answered, the
        result is that of a plain call (refer is None)."""
        result = self._run(TRANSFER_SCENARIO, "transfer", from_ip, first_dialled, port=port,
                           preferred_port=5060, caller_id=caller_id, display=display,
                           raw_display=False, privacy=False, pai=None,
                           extra_headers=extra_headers, hold=wait_before_refer,
                           timeout=timeout, keys={"refer_to": _check_field("refer_to",
                                                                          refer_to)})
        assert isinstance(result, TransferResult)
        return result

    # ---------------------------------------------------------------- internals
    def _run(self, scenario: Path, kind: str, ip: str, dialled: str, *, port: int | None,
             preferred_port: int, caller_id: str | None, display: str | None,
             raw_display: bool, privacy: bool, pai: str | None,
             extra_headers: Mapping[str, str] | Iterable[str] | None, hold: float,
             timeout: float, keys: Mapping[str, str] | None = None) -> CallResult:
        _check_field("dialled", dialled)
        if caller_id is None:
            caller_id = ENDPOINT_BY_IP.get(ip, "phone")
        _check_field("caller_id", caller_id)
        if display is None:
            display_part = ""
        else:
            _check_field("display", display)
            display_part = (display if raw_display else quote_display(display)) + " "
        headers: list[str] = []
        if privacy:
            headers += ["Privacy: id", f"P-Asserted-Identity: <sip:{pai or caller_id}@{ip}>"]
        if isinstance(extra_headers, str):
            headers.append(extra_headers)
        elif isinstance(extra_headers, Mapping):
            headers += [f"{k}: {v}" for k, v in extra_headers.items()]
        elif extra_headers is not None:
            headers += list(extra_headers)
        for h in headers:
            _check_field("header line", h)
        all_keys = {
            "ruri_user": dialled,
            "from_user": caller_id,
            "from_display": display_part,
            "extra_headers": "".join("\r\n" + h for h in headers),
            "hold_ms": str(round(hold * 1000)),
            **(keys or {}),
        }
        run = self._new_dir(kind, ip, dialled)
        sipp_timeout = max(1, round(timeout + hold))
        result: CallResult | None = None
        for attempt in range(3):
            local_port = port if port is not None else PORTS.acquire(ip, preferred_port)
            try:
                result = self._sipp(scenario, run, ip, local_port, all_keys, sipp_timeout,
                                    transfer=scenario == TRANSFER_SCENARIO)
            finally:
                if port is None:
                    PORTS.release(ip, local_port)
            out = (run / "sipp.out").read_text(errors="replace")
            if port is None and attempt < 2 and re.search(r"[Bb]ind|in use", out) \
                    and not result.messages:
                continue  # lost a race for the port: another one
            break
        assert result is not None
        with self._lock:
            self.results.append(result)
        return result

    def _sipp(self, scenario: Path, run: Path, ip: str, port: int, keys: Mapping[str, str],
              sipp_timeout: int, *, transfer: bool) -> CallResult:
        msgs = run / "messages.log"
        msgs.unlink(missing_ok=True)
        cmd = [sipp_binary(), "-sf", str(scenario), "-i", ip, "-p", str(port), "-m", "1",
               "-nostdin", "-timeout", f"{sipp_timeout}s", "-timeout_error",
               "-trace_msg", "-message_file", str(msgs),
               "-trace_err", "-error_file", str(run / "errors.log"),
               "-trace_logs", "-log_file", str(run / "scenario.log")]
        if not transfer:
            cmd.append("-aa")  # 200 to INFO/NOTIFY/OPTIONS/UPDATE the scenario doesn't expect
        for k, v in keys.items():
            cmd += ["-key", k, v]
        cmd.append(self.target)
        (run / "command.txt").write_text(f"cd {shlex.quote(str(run))} && {shlex.join(cmd)}\n")
        timed_out = False
        with (run / "sipp.out").open("wb") as out:
            proc = subprocess.Popen(cmd, cwd=run, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT)
            _register(proc)
            try:
                proc.wait(sipp_timeout + 5)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                rc = stop_process(proc)
        for log in ("sipp.out", "errors.log"):
            with contextlib.suppress(OSError):
                if "timed out after" in (run / log).read_text(errors="replace"):
                    timed_out = True
        messages = parse_message_file(msgs)
        info = _analyse(messages)
        common = dict(messages=messages, returncode=rc, timed_out=timed_out, artifacts=run,
                      command=cmd, **info)
        if not transfer:
            return CallResult(**common)
        refer = next((m for m in messages if m.direction == "sent" and m.method == "REFER"),
                     None)
        refer_response = None
        if refer is not None:
            refer_response = next((m for m in messages if m.direction == "received"
                                   and m.is_response and m.cseq == refer.cseq
                                   and (m.status or 0) >= 200), None)
        notifies = [m for m in messages if m.direction == "received" and m.method == "NOTIFY"]
        return TransferResult(**common, refer=refer, refer_response=refer_response,
                              notifies=notifies)
