"""The fallback AGI inside the real Asterisk's chroot (root): sid's python3, the asterisk user,
Asterisk's environment, the state dir bind-mounted at the same path by
`scripts/asterisk-run.sh --state-dir`, the database written by the host's CLI (root).

Two ways in, both real:
- `asterisk-run.sh exec /opt/callpolicy/fallback-agi`: the run's mount namespace and chroot,
  Asterisk's uid/gid and environment, with this test speaking AGI on its stdin/stdout;
- Asterisk itself running `AGI(/opt/callpolicy/fallback-agi,…)` on a Local channel (a context
  added at run time with `dialplan add extension`), the variables read back from its log.

Asterisk runs in its own network namespace: nothing here uses SIP, and another Asterisk on
this machine's 127.0.0.1:5060 must not stop (or be disturbed by) this one.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import stat
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from callpolicy.alerts.fallback_journal import journal_path, take, taking_path
from fake_asterisk import AgiRun, agi_env_block, b64, drive_agi

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "scripts" / "asterisk-run.sh"
FALLBACK = "/opt/callpolicy/fallback-agi"
NAMES = ("CP_ACTION", "CP_REASON", "CP_CATEGORY", "CP_DEST", "CP_CID_NUM", "CP_CID_PRES",
         "CP_PAI", "CP_EMERGENCY", "CP_LOCATION", "CP_LOC_INFO", "CP_DIVERSION", "CP_SIP_CODE",
         "CP_RULE", "CP_SOURCE")



def call_args(endpoint: str, dialled: str, remote: str = "", caller: str = "",
              kind: str = "outbound", forwarded_from: str = "") -> list[str]:
    return [kind, endpoint, b64(dialled), b64(caller), "0", remote, b64(forwarded_from)]


class ChrootRun(AgiRun):
    """The fallback run by Asterisk's way into the chroot: it must succeed and set exactly the
    variables of agi/callpolicy/asterisk/variables.py, in that order."""

    @property
    def variables(self) -> dict[str, str]:
        assert self.returncode == 0, self.stderr
        variables = super().variables
        assert tuple(variables) == NAMES
        return variables


@dataclass
class Run:
    run_dir: Path
    state: Path
    config: Path
    db: Path

    def script(self, *args: str, check: bool = True, timeout: float = 60,
               input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run([str(RUN), "--run-dir", str(self.run_dir), *args],
                                capture_output=True, input=input, timeout=timeout,
                                env=clean_env(), check=False)
        if check:
            assert result.returncode == 0, result.stderr.decode()
        return result

    def exec(self, *argv: str) -> str:
        return self.script("exec", *argv).stdout.decode()

    def fallback(self, args: Sequence[str], *prefix: str) -> ChrootRun:
        """The fallback AGI as Asterisk's child would be: chroot, uid, environment."""
        argv = [str(RUN), "--run-dir", str(self.run_dir), "exec", *prefix, FALLBACK]
        result = drive_agi(argv, args, env_block=agi_env_block(
            args, {"agi_channel": "PJSIP/acme-101-00000001", "agi_calleridname": 'Evil" "x'}))
        assert "Traceback" not in result.stderr, result.stderr
        return ChrootRun(result.returncode, result.commands, result.stderr, result.seconds)

    def cli(self, *args: str, config: Path | None = None) -> None:
        env = {**clean_env(), "CALLPOLICY_CONFIG": str(config or self.config)}
        result = subprocess.run([sys.executable, "-m", "callpolicy.cli", *args], env=env,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr

    def rx(self, command: str) -> str:
        return self.script("rx", command).stdout.decode()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CALLPOLICY_")}


def write_config(path: Path, db: Path) -> Path:
    path.write_text(f'[store]\npath = "{db}"\n')
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    assert os.geteuid() == 0, "the Asterisk chroot needs root (CI runs as root)"
    base = tmp_path_factory.mktemp("fallback")
    state = base / "state"
    state.mkdir()
    config = write_config(state / "callpolicy.toml", state / "callpolicy.db")
    handle = Run(base / "asterisk", state, config, state / "callpolicy.db")
    handle.cli("customer", "import", str(REPO / "config" / "demo-customers.toml"),
               "--by", "tester", "--ticket", "T-1")
    # its own network namespace (see the module docstring); the mounts are in Asterisk's
    # own mount namespace, as always with asterisk-run.sh
    command = [str(RUN), "--run-dir", str(handle.run_dir), "--state-dir", str(state), "start"]
    if shutil.which("ip") and shutil.which("unshare"):
        command = ["unshare", "--net", "--", "bash", "-c", 'ip link set lo up && exec "$@"',
                   "netns", *command]
    start = subprocess.run(command, capture_output=True, text=True, timeout=600,
                           env=clean_env(), check=False)
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        # the start-up check ran the fallback as Asterisk would, and it could decide
        assert "fallback AGI: ok:" in start.stderr and "2 customers" in start.stderr, \
            start.stderr[-2000:]
        yield handle
    finally:
        stop = handle.script("stop", check=False)
        status = handle.script("status", check=False)
        assert status.returncode == 3, (stop.stderr, status.stdout)


# -- the chroot as Asterisk's children see it ---------------------------------------------------

def test_state_dir_is_shared_at_the_same_path_with_the_asterisk_group(run: Run) -> None:
    assert run.exec("id", "-un").strip() == "asterisk"
    gid = int(run.exec("id", "-g"))
    assert run.exec("id", "-G").split() == [str(gid)]  # no supplementary groups, like Asterisk
    info = run.state.stat()
    assert info.st_gid == gid
    assert info.st_mode & stat.S_ISGID and info.st_mode & stat.S_IWGRP
    assert info.st_mode & stat.S_ISVTX  # asterisk can create -wal/-shm, not delete root's files
    assert run.db.stat().st_gid == gid and run.db.stat().st_mode & stat.S_IRGRP
    # same absolute path inside; Asterisk's environment names the config there
    environment = run.exec("/bin/sh", "-c", 'echo "$CALLPOLICY_CONFIG|${CALLPOLICY_DB-unset}"')
    assert environment.strip() == f"{run.config}|unset"
    assert run.exec("/bin/sh", "-c", f'test -r "{run.db}" && echo yes').strip() == "yes"
    assert run.script("paths").stdout.decode().splitlines()[-1] == f"STATE_DIR={run.state}"


def test_the_fallback_runs_on_sids_python_with_its_own_path(run: Run) -> None:
    # callpolicy needs 3.11+ (tomllib, datetime.UTC, StrEnum); the rootfs's, not the host's
    new_enough = run.exec("/usr/bin/python3", "-c",
                          "import sys; print(sys.version_info >= (3, 11))")
    assert new_enough.strip() == "True"
    script = run.exec("/bin/sh", "-c", f"readlink -f {FALLBACK}; head -n1 {FALLBACK}")
    assert script.split() == ["/opt/callpolicy/agi/fallback-agi", "#!/usr/bin/python3", "-IS"]
    # the code is the repo's, byte-compiled for this python (read-only at run time)
    compiled = run.exec("/bin/sh", "-c", "ls /opt/callpolicy/agi/callpolicy/asterisk/__pycache__")
    assert "variables.cpython-" in compiled
    denied = run.script("exec", "/bin/sh", "-c", "touch /opt/callpolicy/agi/x", check=False)
    assert denied.returncode != 0


# -- decisions ----------------------------------------------------------------------------------

def test_national_call_allowed(run: Run) -> None:
    v = run.fallback(call_args("acme-101", "092101299", "127.0.0.2:5060", "+3292101234")) \
        .variables
    assert (v["CP_ACTION"], v["CP_REASON"], v["CP_DEST"], v["CP_SOURCE"]) == (
        "allow", "allowed", "+3292101299", "fallback")
    assert v["CP_CID_NUM"] == "+3292101234" and v["CP_SIP_CODE"] == ""


def test_premium_blocked_with_403(run: Run) -> None:
    v = run.fallback(call_args("acme-101", "0905123456", "127.0.0.2:5060")).variables
    assert (v["CP_ACTION"], v["CP_REASON"], v["CP_SIP_CODE"]) == ("block", "premium", "403")


def test_suspended_customer_reaches_112_only(run: Run) -> None:
    v = run.fallback(call_args("bakkerij-201", "112", "127.0.0.5:5060")).variables
    assert (v["CP_ACTION"], v["CP_REASON"], v["CP_EMERGENCY"], v["CP_LOCATION"]) == (
        "allow", "emergency", "1", "verified")
    assert "PC=1000" in v["CP_LOC_INFO"] and v["CP_CID_NUM"] == "+3225551234"
    v = run.fallback(call_args("bakkerij-201", "092101299", "127.0.0.5:5060")).variables
    assert (v["CP_ACTION"], v["CP_REASON"]) == ("block", "suspended")


def test_forward_decided_with_the_forwarding_customer(run: Run) -> None:
    v = run.fallback(call_args("", "+32475123456", caller="+33123456789", kind="forward",
                               forwarded_from="092101235")).variables
    assert (v["CP_ACTION"], v["CP_DIVERSION"]) == ("allow", "+3292101235")
    assert v["CP_CID_NUM"] == "+33123456789"  # a verified forward target sees the caller


def test_garbage_arguments_are_an_invalid_number(run: Run) -> None:
    v = run.fallback(["outbound", "acme-101", "!!garbage**", "@@", "0", "x", "%%"]).variables
    assert (v["CP_ACTION"], v["CP_REASON"], v["CP_SIP_CODE"]) == (
        "block", "invalid_number", "403")


def test_missing_database_is_no_decision(run: Run) -> None:
    config = write_config(run.state / "missing.toml", run.state / "missing.db")
    result = run.fallback(call_args("acme-101", "092101299"),
                          "/usr/bin/env", f"CALLPOLICY_CONFIG={config}")
    assert result.returncode != 0 and result.msets == []
    assert len(result.stderr.splitlines()) == 1 and "does not exist" in result.stderr
    assert not (run.state / "missing.db").exists()


def test_seven_fallback_runs_in_a_row_decide_the_same_call_alike(run: Run) -> None:
    """Each run is a whole process start-up (Asterisk pays it per call while the daemon is down):
    no state carried between runs, the same variables every time. Its latency is printed for
    the log, not asserted (a shared machine's timing is not a test)."""
    args = call_args("acme-101", "092101299", "127.0.0.2:5060")
    runs = [run.fallback(args) for _ in range(7)]
    assert runs[0].variables["CP_ACTION"] == "allow"
    assert all(r.variables == runs[0].variables for r in runs[1:])
    times = [r.seconds for r in runs]
    print(f"fallback AGI in the chroot: median {statistics.median(times) * 1000:.0f} ms, "
          f"min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")


# -- the WAL: a change the CLI committed that is not in the database file yet -------------------

def hold_and_suspend(run: Run, db: Path, config: Path, customer: str) -> sqlite3.Connection:
    """A hung daemon keeps the database open (so the CLI's close does not checkpoint), the
    daemon is not answering, the CLI suspends: the change is only in the -wal file."""
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("SELECT count(*) FROM customers").fetchone()
    run.cli("customer", "suspend", customer, "--by", "ops", "--ticket", "T-WAL",
            config=config)
    wal = db.with_name(db.name + "-wal")
    assert wal.stat().st_size > 0
    file_only = sqlite3.connect(f"{db.as_uri()}?immutable=1", uri=True)
    try:
        assert file_only.execute("SELECT status FROM customers WHERE id = ?",
                                 (customer,)).fetchone() == ("active",)
    finally:
        file_only.close()
    return holder


def test_suspension_only_in_the_wal_is_seen(run: Run) -> None:
    args = call_args("acme-101", "092101299", "127.0.0.2:5060")
    assert run.fallback(args).variables["CP_ACTION"] == "allow"
    holder = hold_and_suspend(run, run.db, run.config, "acme")
    try:
        v = run.fallback(args).variables
        assert (v["CP_ACTION"], v["CP_REASON"]) == ("block", "suspended")
        assert "T-WAL" in v["CP_RULE"]
        assert run.fallback(call_args("acme-101", "112", "127.0.0.2:5060")) \
            .variables["CP_ACTION"] == "allow"
    finally:
        holder.close()
        run.cli("customer", "reactivate", "acme", "--by", "ops", "--ticket", "T-WAL2")
    assert run.fallback(args).variables["CP_ACTION"] == "allow"


def test_database_created_after_start_with_a_read_only_shm(run: Run) -> None:
    """A database the CLI creates after Asterisk started: SQLite's default 0644, so the root-
    created -shm is not writable by asterisk. The fallback still reads the WAL."""
    db = run.state / "late.db"
    config = write_config(run.state / "late.toml", db)
    run.cli("customer", "import", str(REPO / "config" / "demo-customers.toml"),
            "--by", "tester", "--ticket", "T-2", config=config)
    holder = hold_and_suspend(run, db, config, "acme")
    try:
        shm = db.with_name(db.name + "-shm")
        assert shm.stat().st_uid == 0 and not shm.stat().st_mode & stat.S_IWGRP
        result = run.fallback(call_args("acme-101", "092101299", "127.0.0.2:5060"),
                              "/usr/bin/env", f"CALLPOLICY_CONFIG={config}")
        assert (result.variables["CP_ACTION"], result.variables["CP_REASON"]) == (
            "block", "suspended")
    finally:
        holder.close()


# -- Asterisk itself runs it --------------------------------------------------------------------

def asterisk_runs_fallback(run: Run, args: Sequence[str]) -> dict[str, str]:
    """AGI(/opt/callpolicy/fallback-agi,…) on a Local channel; the variables from the log."""
    marker = f"CPTEST{uuid.uuid4().hex[:8]}"
    context = f"cp-fallback-{marker}"
    shown = "~".join(["${AGISTATUS}", *(f"${{{name}}}" for name in NAMES)])
    run.rx("module load res_clioriginate.so")
    run.rx(f"dialplan add extension s,1,AGI({FALLBACK},{','.join(args)}) into {context}")
    run.rx(f"dialplan add extension s,2,Verbose(0,{marker}~{shown}) into {context}")
    run.rx(f"dialplan add extension s,3,Hangup() into {context}")
    run.rx(f"channel originate Local/s@{context} application NoOp")
    log = run.run_dir / "log" / "full"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lines = [line for line in log.read_text(errors="replace").splitlines()
                 if f"app_verbose.c: {marker}~" in line]
        if lines:
            values = lines[0].split(f"app_verbose.c: {marker}~", 1)[1].split("~")
            return dict(zip(("AGISTATUS", *NAMES), values, strict=True))
        time.sleep(0.1)
    raise AssertionError(f"Asterisk did not run {context}: see {log}")


def test_asterisk_runs_the_fallback_and_gets_the_variables(run: Run) -> None:
    journal = journal_path(run.db)
    journal.unlink(missing_ok=True)
    v = asterisk_runs_fallback(run, call_args("acme-101", "0905 123 456", "127.0.0.2:5060"))
    assert v["AGISTATUS"] == "SUCCESS"
    assert (v["CP_ACTION"], v["CP_REASON"], v["CP_SIP_CODE"], v["CP_SOURCE"]) == (
        "block", "premium", "403", "fallback")
    # journaled by the asterisk user in the chroot, at the host's path; the daemon takes it
    assert journal.stat().st_uid == int(run.exec("id", "-u"))
    assert take(journal).entries == []  # renamed; read in the next round
    [entry] = take(journal).entries
    assert (entry.values["action"], entry.values["reason"], entry.values["customer"]) == (
        "block", "premium", "acme")
    assert re.fullmatch(r"\d+\.\d+", entry.values["uniqueid"] or ""), entry.values
    assert not journal.exists() and not taking_path(journal).exists()
    v = asterisk_runs_fallback(run, call_args("bakkerij-201", "112", "127.0.0.5:5060"))
    assert (v["AGISTATUS"], v["CP_ACTION"], v["CP_LOCATION"]) == ("SUCCESS", "allow",
                                                                   "verified")
    assert "A3=Brussel" in v["CP_LOC_INFO"]


def test_asterisk_sees_failure_and_no_cp_action_without_database(run: Run) -> None:
    hidden = run.db.with_name("hidden.db")
    run.db.rename(hidden)
    try:
        v = asterisk_runs_fallback(run, call_args("acme-101", "092101299", "127.0.0.2:5060"))
    finally:
        hidden.rename(run.db)
    assert v["AGISTATUS"] == "FAILURE"
    assert all(v[name] == "" for name in NAMES), v
    assert "does not exist" in (run.run_dir / "log" / "full").read_text(errors="replace")
