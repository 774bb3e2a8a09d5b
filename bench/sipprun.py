"""One load step: a SIPp trunk UAS and a SIPp phone UAC, and what they saw.

Everything SIPp writes goes into the step's own directory; results come from SIPp's files:
  uac.csv / uas.csv        -trace_stat: FailedCall(C), Retransmissions(C), OutgoingCall(C) …
  uac.screen / uas.screen  -trace_screen: per-message counters, incl. retransmissions RECEIVED
  uac.log                  OUTCOME <csv line> <expect> <final status>, one per finished call
  uas.log                  REACHED <Request-URI> | <From header>, one per INVITE at the trunk
  uac_<pid>_rtt.csv        -trace_rtt: per call, INVITE -> 180 ("ring") / 403 ("reject")
  uac.msg                  -trace_msg (latency runs only): every message with a µs timestamp

Why both -trace_rtt and -trace_msg: Debian's SIPp 3.6.1 reads its response-time clock with
CLOCK_MONOTONIC_COARSE (`objdump -d /usr/bin/sipp`: clock_gettime with clock id 6), which
ticks every 4 ms on this kernel (HZ=250): every RTT-trace value is a multiple of 4 ms. The
message trace is stamped with gettimeofday() (µs). The latency figures are therefore taken
per call from the message trace: the first INVITE sent -> the first 180 or 403 received for
it (100 Trying ignored), the same two events the RTT timers bracket; the RTT-trace figures
are kept next to them.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from mix import Call, write_sipp_csv

HERE = Path(__file__).resolve().parent
UAC_XML = HERE / "sipp" / "uac.xml"
UAS_XML = HERE / "sipp" / "uas.xml"
ASTERISK = ("127.0.0.1", 5060)
TRUNK = ("127.0.0.3", 5080)
# bench-bare ([bare]), bench-bare-agi ([bare-agi]: [bare] plus one AGI call to
# bench/floor_agi.py), bench-phone ([bench] = the policy dialplan; "floor": the same dialplan
# with bench/floor_agi.py in the daemon's place)
PHONES = {"bare": "127.0.0.8", "bare_agi": "127.0.0.9", "policy": "127.0.0.7",
          "floor": "127.0.0.7"}
BARE = ("bare", "bare_agi")  # [bare] and [bare-agi] match _X. only

_TS = re.compile(r"^-{10,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6})")
_SIP_USER = re.compile(r"sip:([^@;>]+)@")


class StepError(RuntimeError):
    """The step itself could not run (not a load failure)."""


@dataclass
class StepResult:
    dialplan: str
    rate: float
    calls: int
    seconds: float = 0.0  # wall time of the UAC
    achieved_cps: float = 0.0
    failed: int = 0  # SIPp failed calls (UAC + UAS) + calls with no/unusable final answer
    retransmissions: int = 0  # sent and received, UAC and UAS
    outcomes: Counter = field(default_factory=Counter)  # final status -> count
    mismatches: list[str] = field(default_factory=list)
    checked: int = 0
    ring_ms: list[float] = field(default_factory=list)  # RTT trace (4 ms clock)
    reject_ms: list[float] = field(default_factory=list)
    msg_ring_ms: list[float] = field(default_factory=list)  # message trace (µs)
    msg_reject_ms: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds in the step
    notes: list[str] = field(default_factory=list)
    directory: str = ""

    @property
    def clean(self) -> bool:
        return self.failed == 0 and self.retransmissions == 0 and not self.mismatches \
            and self.achieved_cps >= 0.97 * self.rate


def udp_bound(ip: str, port: int) -> bool:
    wanted = socket_hex(ip, port)
    with open("/proc/net/udp") as handle:
        return any(line.split()[1] == wanted for line in list(handle)[1:] if line.strip())


def socket_hex(ip: str, port: int) -> str:
    packed = bytes(int(p) for p in ip.split("."))
    return packed[::-1].hex().upper() + f":{port:04X}"


class Sipp:
    """A SIPp process we started; stopped by its pid only."""

    def __init__(self, argv: list[str], cwd: Path, cpus: set[int] | None) -> None:
        self.argv = argv
        (cwd / "command.txt").open("a").write(" ".join(argv) + "\n")
        self.out = (cwd / f"{Path(argv[2]).stem}.out").open("w")

        def pin() -> None:
            if cpus:
                os.sched_setaffinity(0, cpus)

        self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=subprocess.STDOUT, preexec_fn=pin)
        self.rusage: object | None = None

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                pid, status, rusage = os.wait4(self.proc.pid, os.WNOHANG)
            except ChildProcessError:  # already reaped (e.g. by Popen's own handling)
                if self.proc.returncode is None:
                    self.proc.returncode = -1
                self.out.close()
                return self.proc.returncode
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.rusage = rusage
                self.out.close()
                return self.proc.returncode
            time.sleep(0.02)
        return None

    def stop(self, graceful: bool = True) -> None:
        """USR1 (SIPp: stop calling, finish the calls in progress, write stats, exit), then
        TERM, then KILL."""
        steps = ([(signal.SIGUSR1, 12.0)] if graceful else []) + [(signal.SIGTERM, 2.0),
                                                                 (signal.SIGKILL, 5.0)]
        for sig, wait in steps:
            if self.proc.returncode is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            if self.wait(wait) is not None:
                return

    @property
    def cpu_seconds(self) -> float:
        ru = self.rusage
        return (ru.ru_utime + ru.ru_stime) if ru is not None else 0.0  # type: ignore[attr-defined]


def sipp_binary() -> str:
    path = shutil.which("sipp")
    if not path:
        raise StepError("sipp not found (Debian package sip-tester: scripts/install-deps.sh)")
    return path


def start_uas(directory: Path, cpus: set[int] | None) -> Sipp:
    argv = [sipp_binary(), "-sf", str(UAS_XML), "-i", TRUNK[0], "-p", str(TRUNK[1]),
            "-nostdin", "-mi", TRUNK[0], "-recv_timeout", "10000",
            "-trace_logs", "-log_file", "uas.log",
            "-trace_stat", "-stf", "uas.csv", "-trace_screen", "-screen_file", "uas.screen",
            "-trace_err", "-error_file", "uas.err"]
    uas = Sipp(argv, directory, cpus)
    deadline = time.monotonic() + 5
    while not udp_bound(*TRUNK):
        if uas.proc.poll() is not None or time.monotonic() > deadline:
            uas.stop(graceful=False)
            raise StepError(f"the trunk UAS did not start (see {directory}/uas.out)")
        time.sleep(0.02)
    return uas


def run_uac(directory: Path, dialplan: str, rate: float, calls: int,
            cpus: set[int] | None, trace_msg: bool) -> Sipp:
    limit = max(200, int(rate * 10))
    budget = calls / rate + 40
    argv = [sipp_binary(), "-sf", str(UAC_XML), "-inf", "calls.csv",
            "-i", PHONES[dialplan], "-p", "5060", "-mi", PHONES[dialplan],
            "-m", str(calls), "-r", f"{rate:g}", "-l", str(limit), "-nostdin",
            "-recv_timeout", "10000", "-timeout", f"{int(budget)}s",
            "-trace_logs", "-log_file", "uac.log", "-trace_rtt", "-rtt_freq", "1",
            "-trace_stat", "-stf", "uac.csv", "-trace_screen", "-screen_file", "uac.screen",
            "-trace_err", "-error_file", "uac.err"]
    if trace_msg:
        argv += ["-trace_msg", "-message_file", "uac.msg"]
    argv.append(f"{ASTERISK[0]}:{ASTERISK[1]}")
    uac = Sipp(argv, directory, cpus)
    if uac.wait(budget + 10) is None:
        uac.stop(graceful=False)
        raise StepError(f"the UAC outlived its {budget + 10:.0f} s budget ({directory})")
    return uac


# ------------------------------------------------------------------------------ parsing

def stat_counters(path: Path) -> dict[str, str]:
    """The last line of a -trace_stat file, by column name."""
    try:
        with path.open() as handle:
            rows = list(csv.reader(handle, delimiter=";"))
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def screen_retransmissions(path: Path) -> int:
    """Sum of the Retrans column of the scenario screen (messages SIPp re-sent, and
    retransmissions it received, e.g. Asterisk re-sending a 200 OK)."""
    total = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0
    # the last scenario screen in the file; message lines are "NAME ---> …" (UAC) or
    # "---> NAME …" (UAS), then Messages, Retrans, …
    start = text.rfind("Scenario Screen")
    end = text.find("Statistics Screen", start)
    for line in text[start:end if end > 0 else None].splitlines():
        tokens = line.split()
        arrows = [i for i, t in enumerate(tokens) if re.fullmatch(r"-{5,}>|<-{5,}", t)]
        if not arrows:
            continue
        rest = tokens[arrows[0] + 2:] if arrows[0] == 0 else tokens[arrows[0] + 1:]
        numbers = [t for t in rest if not re.fullmatch(r"[BE]-RTD\d+", t)]
        if len(numbers) >= 2 and numbers[1].isdigit():
            total += int(numbers[1])
    return total


def rtt_values(directory: Path) -> tuple[list[float], list[float]]:
    ring: list[float] = []
    reject: list[float] = []
    for path in directory.glob("uac_*_rtt.csv"):
        with path.open() as handle:
            for line in handle:
                parts = line.strip().split(";")
                if len(parts) != 3 or parts[0].startswith("Date"):
                    continue
                (ring if parts[2] == "ring" else reject).append(float(parts[1]))
    return ring, reject


def message_latencies(path: Path) -> tuple[list[float], list[float]]:
    """Per call, from the message trace: first INVITE sent -> first 180 / 403 received."""
    sent: dict[str, float] = {}
    ring: dict[str, float] = {}
    reject: dict[str, float] = {}
    if not path.exists():
        return [], []
    stamp = 0.0
    direction = ""
    first = ""
    call_id = ""
    cseq = ""

    def flush() -> None:
        if not call_id:
            return
        if direction == "sent" and first.startswith("INVITE ") and call_id not in sent:
            sent[call_id] = stamp
        elif direction == "received" and "INVITE" in cseq:
            if first.startswith("SIP/2.0 180") and call_id not in ring:
                ring[call_id] = stamp
            elif first.startswith("SIP/2.0 403") and call_id not in reject:
                reject[call_id] = stamp

    with path.open(errors="replace") as handle:
        for raw in handle:
            match = _TS.match(raw)
            if match:
                flush()
                stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
                direction, first, call_id, cseq = "", "", "", ""
                continue
            line = raw.rstrip("\r\n")
            if not direction:
                if " message sent" in line:
                    direction = "sent"
                elif " message received" in line:
                    direction = "received"
                continue
            if not first:
                if line:
                    first = line
                continue
            lower = line[:8].lower()
            if lower.startswith("call-id:") and not call_id:
                call_id = line.split(":", 1)[1].strip()
            elif lower.startswith("cseq:") and not cseq:
                cseq = line
        flush()
    to_ms = 1000.0
    return ([(ring[c] - sent[c]) * to_ms for c in ring if c in sent],
            [(reject[c] - sent[c]) * to_ms for c in reject if c in sent])


def check_outcomes(result: StepResult, directory: Path, calls: list[Call],
                   earlier: set[tuple[str, str]] | None = None) -> None:
    """Every call: the expected final answer at the phone, and the trunk saw exactly the
    allowed calls (destination and caller ID). An INVITE the trunk saw twice with the same
    Call-ID (a retransmission SIPp took for a new call) counts once; one that belongs to an
    earlier step's call (`earlier`: Asterisk still retransmitting after an overload) is noted,
    not a mismatch."""
    policy = result.dialplan == "policy"
    statuses: dict[int, str] = {}
    for line in (directory / "uac.log").read_text(errors="replace").splitlines() \
            if (directory / "uac.log").exists() else []:
        parts = line.split()
        if len(parts) >= 4 and parts[0] == "OUTCOME" and parts[1].isdigit():
            statuses[int(parts[1])] = parts[3].split(".")[0] or "?"
    must_reach_trunk: Counter = Counter()  # answered: the trunk must have seen them
    may_reach_trunk: Counter = Counter()  # allowed but failed (overload): it may have
    for index, call in enumerate(calls):
        status = statuses.get(index)
        result.outcomes[status or "none"] += 1
        want = call.expect if policy else "allow"
        key = (call.dest if policy else call.dialled, call.caller)
        if status is None or status not in ("200", "403", "404"):
            result.failed += 1  # no final answer, or 5xx (fail-safe), 408 …: overload
            if want == "allow":
                may_reach_trunk[key] += 1
            continue
        result.checked += 1
        if (want == "allow") != (status == "200"):
            result.mismatches.append(
                f"line {index}: {call.endpoint} dialled {call.dialled} ({call.category}):"
                f" expected {'200' if want == 'allow' else '403'}, got {status}")
            continue
        if status == "200":
            must_reach_trunk[key] += 1
    reached: Counter = Counter()
    seen: set[str] = set()
    stale = 0
    for line in (directory / "uas.log").read_text(errors="replace").splitlines() \
            if (directory / "uas.log").exists() else []:
        if not line.startswith("REACHED "):
            continue
        ruri, _, rest = line[len("REACHED "):].partition(" | ")
        from_header, _, call_id = rest.partition(" | ")
        if call_id in seen:
            continue
        seen.add(call_id)
        ruri_user = _SIP_USER.search(ruri)
        from_user = _SIP_USER.search(from_header)
        key = (ruri_user.group(1) if ruri_user else ruri,
               from_user.group(1) if from_user else from_header)
        if earlier and key in earlier and not (must_reach_trunk[key] or may_reach_trunk[key]):
            stale += 1
            continue
        reached[key] += 1
    if stale:
        result.notes.append(f"{stale} INVITE(s) of earlier steps' calls reached the trunk")
    extra = reached - must_reach_trunk - may_reach_trunk
    missing = must_reach_trunk - reached
    for (dest, caller), count in extra.items():
        result.mismatches.append(f"the trunk got {count} call(s) to {dest} from {caller} that "
                                 "no allowed call explains")
    for (dest, caller), count in missing.items():
        result.mismatches.append(
            f"{count} answered call(s) to {dest} from {caller} never reached the trunk as such")


def bare_form(call: Call) -> Call:
    """[bare] and [bare-agi] match _X. only: a "+" number is dialled in its 00 form there."""
    if call.dialled.startswith("+"):
        return replace(call, dialled="00" + call.dialled[1:])
    return call


def run_step(directory: Path, dialplan: str, rate: float, calls: list[Call],
             cpus: set[int] | None, trace_msg: bool = False,
             earlier: set[tuple[str, str]] | None = None) -> StepResult:
    directory.mkdir(parents=True, exist_ok=True)
    if dialplan in BARE:
        calls = [bare_form(c) for c in calls]
    write_sipp_csv(directory / "calls.csv", calls)
    result = StepResult(dialplan, rate, len(calls), directory=str(directory))
    uas = start_uas(directory, cpus)
    try:
        started = time.monotonic()
        uac = run_uac(directory, dialplan, rate, len(calls), cpus, trace_msg)
        result.seconds = time.monotonic() - started
    finally:
        uas.stop()
    result.cpu["sipp_uac"] = uac.cpu_seconds
    result.cpu["sipp_uas"] = uas.cpu_seconds
    uac_stats = stat_counters(directory / "uac.csv")
    uas_stats = stat_counters(directory / "uas.csv")
    if not uac_stats:
        raise StepError(f"no SIPp statistics in {directory}/uac.csv (see uac.out)")

    def count(stats: dict[str, str], name: str) -> int:
        with contextlib.suppress(ValueError):
            return int(float(stats.get(name, "0") or 0))
        return 0

    # failed calls: per call, from the phone's outcomes (check_outcomes). The trunk's own
    # failed-call count is only noted: after an overload it also counts stray INVITEs of an
    # earlier step's calls; an overload of this step shows at the phone or as retransmissions.
    sipp_failed = count(uac_stats, "FailedCall(C)")
    if sipp_failed:
        result.notes.append(f"SIPp counted {sipp_failed} failed call(s) at the phone")
    trunk_failed = count(uas_stats, "FailedCall(C)")
    if trunk_failed:
        result.notes.append(f"SIPp counted {trunk_failed} failed call(s) at the trunk")
    sent_retrans = count(uac_stats, "Retransmissions(C)") + count(uas_stats, "Retransmissions(C)")
    seen_retrans = screen_retransmissions(directory / "uac.screen") + \
        screen_retransmissions(directory / "uas.screen")
    result.retransmissions = max(sent_retrans, seen_retrans)
    if seen_retrans > sent_retrans:
        result.notes.append(f"{seen_retrans - sent_retrans} retransmission(s) received")
    created = count(uac_stats, "OutgoingCall(C)")
    if created < len(calls):
        result.notes.append(f"only {created} of {len(calls)} calls created")
    result.ring_ms, result.reject_ms = rtt_values(directory)
    # achieved call rate: spread of the calls' answer times (RTT-trace dates)
    result.achieved_cps = achieved_rate(directory, len(calls), rate)
    if trace_msg:
        result.msg_ring_ms, result.msg_reject_ms = message_latencies(directory / "uac.msg")
    check_outcomes(result, directory, calls, earlier)
    if earlier is not None:
        earlier.update((c.dest if dialplan == "policy" else c.dialled, c.caller) for c in calls)
    return result


def sink(directory: Path, cpus: set[int] | None, quiet: float = 6.0, limit: float = 45.0
         ) -> int:
    """After an overloaded step: a trunk UAS that answers whatever Asterisk still sends
    (INVITE retransmissions of calls it gave up on go on until timer B, 32 s) until nothing
    has come for `quiet` seconds. Returns how many INVITEs it absorbed."""
    directory.mkdir(parents=True, exist_ok=True)
    uas = start_uas(directory, cpus)
    log = directory / "uas.log"
    started = last_change = time.monotonic()
    size = -1
    try:
        while time.monotonic() - started < limit:
            time.sleep(0.5)
            now_size = log.stat().st_size if log.exists() else 0
            if now_size != size:
                size, last_change = now_size, time.monotonic()
            elif time.monotonic() - last_change >= quiet:
                break
    finally:
        uas.stop()
    return sum(1 for line in log.read_text(errors="replace").splitlines()
               if line.startswith("REACHED ")) if log.exists() else 0


def achieved_rate(directory: Path, calls: int, rate: float) -> float:
    dates: list[float] = []
    for path in directory.glob("uac_*_rtt.csv"):
        with path.open() as handle:
            for line in handle:
                parts = line.split(";")
                if len(parts) == 3 and not parts[0].startswith("Date"):
                    dates.append(float(parts[0]))
    if len(dates) < 2:
        return 0.0
    span = (max(dates) - min(dates)) / 1000.0
    # n calls started 1/rate apart span (n-1)/rate
    return (len(dates) - 1) / span if span > 0 else float(rate)
