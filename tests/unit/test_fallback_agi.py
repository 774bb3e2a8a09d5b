"""The fallback AGI (agi/fallback-agi) as Asterisk runs it: a real process on the host's Python,
speaking the AGI protocol with a fake Asterisk on its stdin/stdout, against a real database
imported from config/demo-customers.toml by the CLI.

The in-chroot run (sid's python3, the asterisk user, the WAL seen through the bind-mounted state
dir) is tests/integration/test_fallback.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callpolicy.asterisk.variables import ALL, AgiCall, decision_variables, safe_value
from callpolicy.policy import CallRequest, Engine
from callpolicy.service.config import load_settings
from callpolicy.store import SnapshotSource, Store
from fake_asterisk import AgiRun, agi_env_block, b64, drive_agi

REPO = Path(__file__).resolve().parents[2]
FALLBACK = REPO / "agi" / "fallback-agi"
ZONES = REPO / "agi" / "callpolicy" / "data" / "telephone-zones.toml"
SECRET = "s3cret-never-logged"



def base_env(config: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPOLICY_")}
    env["CALLPOLICY_AMI_SECRET"] = SECRET
    if config is not None:
        env["CALLPOLICY_CONFIG"] = str(config)
    return env


def cli(env: Mapping[str, str], *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "callpolicy.cli", *args], env=dict(env),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


@dataclass
class State:
    dir: Path
    config: Path
    db: Path
    env: dict[str, str]

    def fallback(self, *args: str, **kwargs: object) -> AgiRun:
        return drive_agi([sys.executable, str(FALLBACK)], args, self.env, **kwargs)


@pytest.fixture
def state(tmp_path: Path) -> State:
    """A state dir as in production: config (with a secret in it), zones, the imported DB."""
    shutil.copy(ZONES, tmp_path / "telephone-zones.toml")
    config = tmp_path / "callpolicy.toml"
    config.write_text(
        f'[store]\npath = "{tmp_path / "callpolicy.db"}"\n'
        '[policy]\nzones_file = "telephone-zones.toml"\n'
        f'[ami]\nusername = "callpolicy"\nsecret = "{SECRET}"\n')
    env = base_env(config)
    env.pop("CALLPOLICY_AMI_SECRET")  # the secret comes from the file here
    cli(env, "customer", "import", str(REPO / "config" / "demo-customers.toml"),
        "--by", "tester", "--ticket", "T-1")
    return State(tmp_path, config, tmp_path / "callpolicy.db", env)


def assert_clean_success(run: AgiRun) -> dict[str, str]:
    assert run.returncode == 0, run.stderr
    assert [c.split()[0:2] for c in run.commands] == [["EXEC", "MSet"]], run.commands
    variables = run.variables
    assert list(variables) == list(ALL)
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("callpolicy-fallback-agi: decided"), lines
    return variables


def assert_no_decision(run: AgiRun, text: str) -> None:
    assert run.returncode != 0
    assert run.msets == [], run.commands
    assert not any("CP_ACTION" in c for c in run.commands), run.commands
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, lines
    assert text in lines[0], lines[0]
    assert SECRET not in run.stderr and SECRET not in "".join(run.commands)


# -- the decisions --------------------------------------------------------------------------

def test_national_call_is_allowed_with_the_endpoint_number(state: State) -> None:
    run = state.fallback("outbound", "acme-101", b64("092101299"), b64("+3292101234"), "0",
                         "127.0.0.2:5060", "")
    v = assert_clean_success(run)
    assert v["CP_ACTION"] == "allow" and v["CP_REASON"] == "allowed"
    assert v["CP_DEST"] == "+3292101299"
    assert v["CP_SOURCE"] == "fallback"
    assert v["CP_CID_NUM"] == "+3292101234" and v["CP_CID_PRES"] == "allowed"
    assert v["CP_SIP_CODE"] == "" and v["CP_EMERGENCY"] == "0"
    assert "customer=acme" in run.stderr and SECRET not in run.stderr
    # pyst2's own chatter (ENV LINE/ARGS/the environment dump) must not reach Asterisk's log
    assert "agi_arg" not in run.stderr and "ENV" not in run.stderr


def test_premium_0905_is_blocked_with_403(state: State) -> None:
    v = assert_clean_success(state.fallback("outbound", "acme-101", b64("0905 12 345"), "", "0",
                                            "127.0.0.2:5060", ""))
    assert (v["CP_ACTION"], v["CP_REASON"], v["CP_SIP_CODE"]) == ("block", "premium", "403")
    assert v["CP_DEST"] == "+3290512345"
    assert "0905" in v["CP_RULE"]


def test_suspended_customer_reaches_112_but_nothing_else(state: State) -> None:
    emergency = assert_clean_success(state.fallback(
        "outbound", "bakkerij-201", b64("112"), "", "0", "127.0.0.5:5060", ""))
    assert (emergency["CP_ACTION"], emergency["CP_REASON"]) == ("allow", "emergency")
    assert emergency["CP_EMERGENCY"] == "1" and emergency["CP_DEST"] == "112"
    # the customer was found: its geographic number and its verified installation address
    assert emergency["CP_CID_NUM"] == "+3225551234"
    assert emergency["CP_LOCATION"] == "verified"
    assert "PC=1000" in emergency["CP_LOC_INFO"] and "A3=Brussel" in emergency["CP_LOC_INFO"]
    national = assert_clean_success(state.fallback(
        "outbound", "bakkerij-201", b64("092101299"), "", "0", "127.0.0.5:5060", ""))
    assert (national["CP_ACTION"], national["CP_REASON"], national["CP_SIP_CODE"]) == (
        "block", "suspended", "403")


@pytest.mark.parametrize("garbage", ["!!not*base64!!", "MDky!MTAx", "%%%", "é"])
def test_garbage_base64_is_an_invalid_number(state: State, garbage: str) -> None:
    v = assert_clean_success(state.fallback("outbound", "acme-101", garbage, garbage, "0",
                                            "127.0.0.2:5060", garbage))
    assert (v["CP_ACTION"], v["CP_REASON"], v["CP_SIP_CODE"]) == (
        "block", "invalid_number", "403")


def test_quotes_and_commas_in_attacker_strings_cannot_inject(state: State) -> None:
    """A caller ID that tries to close the MSet quote and set CP_ACTION itself, and an
    environment block with a quote and invalid UTF-8 in the caller name."""
    evil = 'x",CP_ACTION=allow,CP_DEST=+3290512345 "'
    args = ("outbound", "acme-101", b64("0905123456"), b64(evil), "0", "127.0.0.2:5060",
            b64(evil))
    block = agi_env_block(args, {"agi_calleridname": 'Evil" "x'})
    block = block.replace(b"Evil", b"Ev\xff\xfeil")
    v = assert_clean_success(state.fallback(*args, env_block=block))
    assert (v["CP_ACTION"], v["CP_REASON"]) == ("block", "premium")
    assert v["CP_CID_NUM"] == "+3292101234"  # the spoofed caller ID was replaced


def test_unknown_endpoint_is_unknown_customer_but_112_passes(state: State) -> None:
    v = assert_clean_success(state.fallback("outbound", "nobody-999", b64("092101299"), "",
                                            "0", "", ""))
    assert (v["CP_ACTION"], v["CP_REASON"]) == ("block", "unknown_customer")
    v = assert_clean_success(state.fallback("outbound", "nobody-999", b64("112"), "", "0",
                                            "", ""))
    assert (v["CP_ACTION"], v["CP_REASON"], v["CP_LOCATION"]) == (
        "allow", "emergency", "unknown")


CASES = [
    ("outbound", "acme-101", "092101299", "+3292101234", "0", "127.0.0.2:5060", ""),
    ("outbound", "acme-102", "#31#092101299", "+3292101236", "0", "127.0.0.4:5060", ""),
    ("outbound", "acme-102", "0478123456", "+3299999999", "1", "127.0.0.4:5060", ""),
    ("outbound", "acme-101", "112", "", "0", "127.0.0.4:5060", ""),
    ("outbound", "acme-101", "+41 44 668 18 00", "", "0", "127.0.0.2:5060", ""),
    ("outbound", "acme-101", "070 245 245", "", "0", "127.0.0.2:5060", ""),
    ("outbound", "bakkerij-201", "101", "", "0", "", ""),
    ("outbound", "bakkerij-201", "0905123456", "", "0", "127.0.0.5:5060", ""),
    ("forward", "", "+32475123456", "+3225551234", "0", "", "+3292101235"),
    ("forward", "", "0478999999", "+33123456789", "0", "", "092101236"),
    ("forward", "", "0478999999", "+33123456789", "0", "", "+3225551234"),
    ("forward", "", "092101299", "", "0", "", "+3299000000"),
    ("transfer", "acme-102", "0905123456", "", "0", "127.0.0.4:5060", ""),
    ("outbound", "nobody", "", "", "0", "", ""),
]


def test_same_decisions_as_a_full_snapshot_of_the_same_database(state: State) -> None:
    """The daemon holds every customer; the fallback loads one. Same variables either way."""
    settings = load_settings(str(state.config))

    async def full_engine() -> Engine:
        async with await Store.open(state.db) as store:
            return Engine(await SnapshotSource(store, settings.policy).load())

    engine = asyncio.run(full_engine())
    outcomes = set()
    for case in CASES:
        kind, endpoint, dialled, caller, privacy, addr, forwarded = case
        args = [kind, endpoint, b64(dialled), b64(caller), privacy, addr, b64(forwarded)]
        call = AgiCall.from_args(args)
        decision = engine.decide(CallRequest(
            dialled=call.dialled, now=datetime.now(UTC), endpoint=call.endpoint or None,
            caller_id=call.caller_id or None, privacy=call.privacy,
            source_ip=call.remote_addr or None, forwarded_from=call.forwarded_from or None))
        # what MSet carries: every value reduced to the safe character set
        expected = {name: safe_value(value)
                    for name, value in decision_variables(decision, "fallback").items()}
        assert state.fallback(*args).variables == expected, case
        outcomes.add((expected["CP_ACTION"], expected["CP_REASON"]))
    # the cases cover most rules, not one outcome many times
    assert len(outcomes) >= 8, outcomes


def test_a_suspension_still_only_in_the_wal_is_seen(state: State) -> None:
    """The daemon is not running, but something (a hung daemon) keeps the database open, so
    the CLI's commit stays in the -wal file; the fallback must read it from there."""
    holder = sqlite3.connect(state.db, isolation_level=None)
    try:
        holder.execute("SELECT count(*) FROM customers").fetchone()
        cli(state.env, "customer", "suspend", "acme", "--by", "ops", "--ticket", "T-57")
        wal = state.db.with_name(state.db.name + "-wal")
        assert wal.exists() and wal.stat().st_size > 0
        # honest: the database file alone still says active
        only_file = sqlite3.connect(f"{state.db.as_uri()}?immutable=1", uri=True)
        status = only_file.execute("SELECT status FROM customers WHERE id='acme'").fetchone()
        only_file.close()
        assert status == ("active",)
        v = assert_clean_success(state.fallback("outbound", "acme-101", b64("092101299"), "",
                                                "0", "127.0.0.2:5060", ""))
        assert (v["CP_ACTION"], v["CP_REASON"]) == ("block", "suspended")
        assert "T-57" in v["CP_RULE"]
    finally:
        holder.close()


# -- failures: non-zero, nothing set, one line ------------------------------------------------

ARGS = ("outbound", "acme-101", b64("092101299"), "", "0", "127.0.0.2:5060", "")


def test_missing_database_sets_nothing(state: State) -> None:
    state.db.unlink()
    run = state.fallback(*ARGS)
    assert_no_decision(run, "does not exist")
    assert not state.db.exists()  # read-only: never created
    # the reason also went to Asterisk's log (VERBOSE), quoted as one argument, at level 0:
    # logged with the production config's verbose = 0 too
    assert [c.split()[0] for c in run.commands] == ["VERBOSE"]
    assert run.commands[0].endswith('" 0')


def test_missing_config_sets_nothing(state: State, tmp_path: Path) -> None:
    env = base_env(tmp_path / "nope.toml")
    assert_no_decision(drive_agi([sys.executable, str(FALLBACK)], ARGS, env), "nope.toml")


def test_broken_config_sets_nothing(state: State) -> None:
    state.config.write_text(state.config.read_text() + "\n[store\n")
    assert_no_decision(state.fallback(*ARGS), "not valid TOML")


def test_a_malformed_secret_in_the_config_is_not_logged(state: State) -> None:
    """The fallback does not read [ami]: a bad secret there costs no call its decision, and
    the secret is never echoed."""
    state.config.write_text(state.config.read_text().replace(f'"{SECRET}"', "73952468"))
    run = state.fallback(*ARGS)
    assert_clean_success(run)
    assert "73952468" not in run.stderr and "73952468" not in "".join(run.commands)


def test_a_broken_metrics_section_does_not_stop_the_fallback(state: State) -> None:
    state.config.write_text(state.config.read_text()
                            + '\n[metrics]\nlisten = "not an address"\nlistn = [[[\n')
    assert_clean_success(state.fallback(*ARGS))


def test_unreadable_zones_file_sets_nothing(state: State) -> None:
    (state.dir / "telephone-zones.toml").unlink()
    assert_no_decision(state.fallback(*ARGS), "zone table")


def test_not_a_database_sets_nothing(state: State) -> None:
    state.db.write_bytes(b"this is not SQLite" * 100)
    assert_no_decision(state.fallback(*ARGS), "database")


def test_older_schema_sets_nothing(state: State) -> None:
    db = sqlite3.connect(state.db, isolation_level=None)
    db.execute("PRAGMA user_version = 0")
    db.close()
    assert_no_decision(state.fallback(*ARGS), "schema version 0")


@pytest.mark.parametrize("answer", ["200 result=-1", "510 Invalid or unknown command",
                                    "520 Invalid command syntax."])
def test_asterisk_refusing_the_mset_is_a_failure(state: State, answer: str) -> None:
    run = state.fallback(*ARGS, answer=answer)
    assert run.returncode != 0
    assert len(run.msets) == 1  # it tried once, then gave up without a traceback
    assert "Traceback" not in run.stderr and len(run.stderr.splitlines()) == 1


def test_asterisk_hanging_up_before_the_answer(state: State) -> None:
    """The channel hangs up: Asterisk closes the pipes. Non-zero, one line, no traceback."""
    proc = subprocess.run([sys.executable, str(FALLBACK)], input=agi_env_block(ARGS),
                          capture_output=True, env=state.env, timeout=20, check=False)
    assert proc.returncode != 0
    assert proc.stdout.decode().startswith("EXEC MSet")
    stderr = proc.stderr.decode()
    assert "Traceback" not in stderr and len(stderr.splitlines()) == 1, stderr


def test_no_environment_block_at_all(state: State) -> None:
    proc = subprocess.run([sys.executable, str(FALLBACK)], input=b"", capture_output=True,
                          env=state.env, timeout=20, check=False)
    assert proc.returncode != 0 and proc.stdout == b""
    assert b"Traceback" not in proc.stderr and b"no AGI environment" in proc.stderr


def test_check_mode(state: State) -> None:
    ok = subprocess.run([sys.executable, str(FALLBACK), "--check"], capture_output=True,
                        text=True, env=state.env, timeout=20, check=False)
    assert ok.returncode == 0 and "2 customers" in ok.stdout, ok.stderr
    state.db.unlink()
    bad = subprocess.run([sys.executable, str(FALLBACK), "--check"], capture_output=True,
                         text=True, env=state.env, timeout=20, check=False)
    assert bad.returncode == 1 and "does not exist" in bad.stderr


# -- what goes into the Asterisk rootfs/image ---------------------------------------------------

def test_fallback_requirements_are_exact_pins_inside_pyproject_ranges() -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    text = (REPO / "asterisk-docker" / "fallback-requirements.txt").read_text()
    logical = re.sub(r"\\\n", " ", text)
    pins = {}
    for line in logical.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        spec, _, rest = line.partition(" ")
        assert "--hash=sha256:" in rest, line
        requirement = Requirement(spec)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", line
        pins[canonicalize_name(requirement.name)] = specifier.version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        if name in ("phonenumbers", "structlog", "aiosqlite", "pyst2"):
            assert name in pins, name
            assert requirement.specifier.contains(pins[name]), (name, pins[name])
    assert {"phonenumbers", "structlog", "aiosqlite", "pyst2", "six"} <= set(pins)


def test_script_is_executable_with_sids_python_and_no_site() -> None:
    first = FALLBACK.read_text().splitlines()[0]
    assert first == "#!/usr/bin/python3 -IS"
    assert os.access(FALLBACK, os.X_OK)


def test_a_locked_database_fails_fast_instead_of_holding_the_call(state: State) -> None:
    """A writer holding the database exclusively: give up within the busy timeout."""
    locker = sqlite3.connect(state.db, isolation_level=None)
    try:
        locker.execute("PRAGMA locking_mode = EXCLUSIVE")
        locker.execute("BEGIN EXCLUSIVE")
        locker.execute("UPDATE customers SET name = name")
        started = time.monotonic()
        run = state.fallback(*ARGS)
        elapsed = time.monotonic() - started
    finally:
        locker.close()
    assert_no_decision(run, "locked")  # its busy timeout, not the 3 s watchdog's message
    print(f"locked database: no decision after {elapsed:.2f} s")


# -- the journal (alerts/fallback_journal.py: the daemon alerts on it, also after a downtime) --

def journaled(state: State) -> list[dict[str, object]]:
    from callpolicy.alerts.fallback_journal import journal_path

    path = journal_path(state.db)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_fallback_call_is_journaled_beside_the_database(state: State) -> None:
    before = time.time()
    run = state.fallback(*ARGS, env_block=agi_env_block(ARGS, {"agi_uniqueid": "1764.5"}))
    assert_clean_success(run)
    state.fallback("outbound", "acme-101", b64("0905 12 345"), "", "0", "127.0.0.2:5060", "")
    state.fallback(*ARGS, answer="200 result=-1")  # decided, but Asterisk refused the MSet
    state.db.unlink()
    state.fallback(*ARGS)  # no decision: the last resort decides
    first, premium, refused, failed = journaled(state)
    assert before <= first.pop("at") <= time.time()  # type: ignore[operator]
    assert first == {"uniqueid": "1764.5", "kind": "outbound", "endpoint": "acme-101",
                     "customer": "acme", "number": "092101299", "action": "allow",
                     "reason": "allowed"}
    assert (premium["action"], premium["reason"], premium["uniqueid"]) == ("block", "premium",
                                                                            None)
    assert (refused["action"], refused["reason"]) == ("allow", "not_set")
    assert (failed["action"], failed["reason"], failed["customer"]) == ("none", "no_decision",
                                                                        None)


def test_a_journal_that_cannot_be_written_never_fails_the_call(state: State) -> None:
    from callpolicy.alerts.fallback_journal import journal_path

    journal_path(state.db).mkdir()  # not a file: every append fails
    run = state.fallback(*ARGS)
    assert run.returncode == 0 and run.variables["CP_ACTION"] == "allow"
    lines = run.stderr.splitlines()
    assert len(lines) == 2 and "cannot write the fallback journal: IsADirectoryError" in lines[0]
    assert lines[1].startswith("callpolicy-fallback-agi: decided")
