"""The CLI against hostile input and hostile stored text (issue 10): every bad value on the
command line is one line naming the option, exit 2, nothing written; stored control
characters never reach the terminal raw; a huge stored name does not blow up a table."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
import time
import unittest.mock
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_runner import REPO, copy_database, demo_database, one_error_line, run
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from callpolicy.cli import main
from callpolicy.policy import UnblockKind
from callpolicy.service.status import render
from callpolicy.store import Actor, Store

HOSTILE = "a\u0000b\u001b[31mRED\r\nFAKE LINE"
EVIL_BY = "evil\x1b[2J"
RAW = ("\x00", "\x1b", "\r", "\u202e")  # none of these may reach a terminal
WHO = ("--by", "alice", "--ticket", "T-1")
NOW = datetime.now(UTC)
IN_11_YEARS = (NOW + timedelta(days=11 * 365)).date().isoformat() + "T00:00Z"


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_database(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def db(demo_db: Path, tmp_path: Path) -> Path:
    """The demo customers, imported once per module (CI time): this test's own copy."""
    return copy_database(demo_db, tmp_path / "cp.db")


def audit_count(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute("SELECT count(*) FROM audit").fetchone()[0]


# -- every bad value: exit 2, one line naming the option and its range ---------------------

BAD_VALUES = [
    (["unblock", "acme", "--prefix", "0905", "--for", "99999999999w", *WHO],
     "--for '99999999999w': the duration can be at most 3650d"),
    (["unblock", "acme", "--prefix", "0905", "--for", "9" * 5000 + "s", *WHO],
     "the duration can be at most 3650d"),
    (["unblock", "acme", "--prefix", "0905", "--for", "3651d", *WHO], "at most 3650d"),
    (["unblock", "acme", "--prefix", "0905", "--expires", "9999-12-31T23:59:59-14:00", *WHO],
     "--expires '9999-12-31T23:59:59-14:00' is more than 3650d (10 years) ahead"),
    (["unblock", "acme", "--prefix", "0905", "--expires", IN_11_YEARS, *WHO],
     "--expires"),
    (["limits", "set", "acme", "--max-concurrent", "1e23", *WHO],
     "--max-concurrent: '1e23' is not a whole number from 0 to 1000000"),
    (["limits", "set", "acme", "--max-per-minute", "9" * 30, *WHO],
     "--max-per-minute: '" + "9" * 30 + "' is not a whole number from 0 to 1000000"),
    (["limits", "set", "acme", "--max-concurrent-risky", "1000001", *WHO],
     "--max-concurrent-risky: '1000001' is not a whole number from 0 to 1000000"),
    (["audit", "--limit", "1e20"], "--limit: '1e20' is not a whole number from 1 to 1000000"),
    (["audit", "--limit", "9" * 30], "--limit"),
    (["customer", "suspend", "acme", "--at", "9999-12-31T23:59:59-14:00", *WHO],
     "--at '9999-12-31T23:59:59-14:00' is more than 3650d (10 years) ahead"),
    (["customer", "suspend", "acme", "--at", IN_11_YEARS, *WHO], "--at"),
    (["customer", "remind", "acme", "--sent", "0001-01-01", *WHO],
     "--sent '0001-01-01' is more than 3650d (10 years) ago"),
    (["calls", "--since", "99999999999w"], "--since '99999999999w': the duration can be at most"),
    (["calls", "--since", "0001-01-01T00:00+14:00"], "--since '0001-01-01T00:00+14:00' is more "
     "than 3650d (10 years) from now"),
    (["calls", "--until", "9999-12-31T23:59:59-14:00"], "--until"),
    (["calls", "--limit", "9" * 30], "--limit"),
    (["calls", "--limit", "1e3"], "--limit: '1e3' is not a whole number from 1 to 1000000"),
    (["calls", "purge", "--older-than", "99999999999w", *WHO], "--older-than '99999999999w'"),
    (["check", "--customer", "acme", "--source-ip", "999.1.1.1", "112"],
     "--source-ip: '999.1.1.1' is not an IP address"),
    (["watchdog", "--watchdog-sec", "inf"], "--watchdog-sec: 'inf' is not a number of seconds "
     "from 0.1 to 600"),
]


@pytest.mark.parametrize(("command", "text"), BAD_VALUES,
                         ids=lambda v: " ".join(v)[:60] if isinstance(v, list) else None)
def test_a_bad_value_is_one_line_naming_the_option_exit_2(db: Path, command: list[str],
                                                          text: str) -> None:
    before = audit_count(db)
    one_error_line(run(*command, db=db), 2, text)
    assert audit_count(db) == before


def test_a_huge_bad_value_is_quoted_short(db: Path) -> None:
    result = run("unblock", "acme", "--prefix", "0905", "--for", "x" * 100_000, *WHO, db=db)
    one_error_line(result, 2, "--for 'xxxx")
    assert len(result.stderr) < 300


# -- property: whatever string an option gets, never an internal error ----------------------

OPTIONS = {
    "--for": ["unblock", "acme", "--prefix", "0905", *WHO],
    "--expires": ["unblock", "acme", "--prefix", "0905", *WHO],
    "--at": ["customer", "suspend", "acme", *WHO],
    "--sent": ["customer", "remind", "acme", *WHO],
    "--max-concurrent": ["limits", "set", "acme", *WHO],
    "--max-per-minute": ["limits", "set", "acme", *WHO],
    "--max-concurrent-risky": ["limits", "set", "acme", *WHO],
    "--limit": ["audit"],
    "--since": ["calls", "list"],
    "--until": ["calls", "list"],
    "--older-than": ["calls", "purge", *WHO],
    "--source-ip": ["check", "--customer", "acme", "112"],
    "--by": ["unblock", "acme", "--prefix", "0905", "--ticket", "T-1"],
    "--ticket": ["unblock", "acme", "--prefix", "0905", "--by", "alice"],
    "--reason": ["unblock", "acme", "--prefix", "0905", *WHO],
}
values = st.one_of(
    st.text(),
    st.from_regex(r"-?[0-9]{1,30}(\.[0-9]+)?(e[0-9]{1,3})?", fullmatch=True),
    st.from_regex(r"([0-9]{1,20}[smhdw]){1,3}", fullmatch=True),
    st.from_regex(r"[0-9]{1,5}-[0-9]{1,2}-[0-9]{1,2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2})?)?"
                  r"(Z|[+-][0-9]{2}:[0-9]{2})?", fullmatch=True),
    st.integers().map(str),
    st.floats().map(str),
)


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One database for the property test (accepted values really run, and write)."""
    path = tmp_path_factory.mktemp("property") / "cp.db"
    result = run("customer", "import", str(REPO / "config" / "demo-customers.toml"),
                 "--by", "tester", db=path)
    assert result.returncode == 0, result.stderr
    return path


def run_in_process(argv: list[str]) -> tuple[int, str]:
    stderr, stdout = io.StringIO(), io.StringIO()
    # main() configures structlog for the whole process (level WARNING, loggers cached on
    # first use, writing to this StringIO): that would leak into every later test.
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout), \
            unittest.mock.patch("callpolicy.cli.commands.configure_logging"):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, stderr.getvalue()


@pytest.mark.parametrize("option", sorted(OPTIONS))
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(value=values)
@example(value="9" * 25)  # past SQLite's 64-bit integers
@example(value="99999999999w")  # past timedelta
@example(value="9999-12-31T23:59:59-14:00")  # past datetime, in UTC
def test_any_value_is_accepted_or_refused_by_name_never_an_internal_error(
        shared_db: Path, option: str, value: str) -> None:
    argv = [*OPTIONS[option], f"{option}={value}", "--db", str(shared_db),
            "--config", str(REPO / "config" / "callpolicy.toml")]
    code, stderr = run_in_process(argv)
    assert "internal error" not in stderr and "Traceback" not in stderr, stderr
    assert code in (0, 1, 2), (code, stderr)
    if code == 2:
        assert option in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1, stderr


# -- --by, --ticket, --reason: non-empty, printable, bounded --------------------------------

@pytest.mark.parametrize(
    ("who", "text"),
    [(["--by", "", "--ticket", "T-1"], "--by: empty"),
     (["--by", "alice", "--ticket", ""], "--ticket: empty"),
     (["--by", "  ", "--ticket", "T-1"], "--by: empty"),
     (["--by", EVIL_BY, "--ticket", "T-1"], "--by: 'evil\\x1b[2J' contains control characters"),
     (["--by", "alice", "--ticket", "T\n1"], "--ticket: 'T\\n1' contains control characters"),
     (["--by", "alice", "--ticket", "T-1", "--reason", "x\u202ey"], "--reason"),
     (["--by", "alice", "--ticket", "T-1", "--reason", ""], "--reason: empty"),
     (["--by", "a" * 201, "--ticket", "T-1"], "--by: 201 characters: at most 200")],
    ids=lambda v: repr(v)[:50] if isinstance(v, list) else None,
)
def test_audit_text_must_be_non_empty_printable_and_bounded(db: Path, who: list[str],
                                                            text: str) -> None:
    before = audit_count(db)
    one_error_line(run("unblock", "acme", "--prefix", "0905", *who, db=db), 2, text)
    one_error_line(run("customer", "suspend", "acme", *who, db=db), 2, text)
    assert audit_count(db) == before


@pytest.mark.parametrize(("who", "text"), [(["--by", ""], "--by: empty"),
                                           (["--by", EVIL_BY], "--by"),
                                           (["--ticket", ""], "--ticket: empty"),
                                           (["--ticket", "a\x07b"], "--ticket")])
def test_import_audit_text_is_checked_too(db: Path, who: list[str], text: str) -> None:
    before = audit_count(db)
    one_error_line(run("customer", "import", str(REPO / "config" / "demo-customers.toml"),
                       *who, db=db), 2, text)
    assert audit_count(db) == before


def test_audit_text_is_stored_stripped(db: Path) -> None:
    result = run("unblock", "acme", "--prefix", "0905", "--by", " alice ", "--ticket",
                 "T-9 ", "--reason", "asked by mail", db=db)
    assert result.returncode == 0, result.stderr
    last = json.loads(run("audit", "--json", "--limit", "1", db=db).stdout)
    assert (last["actor"], last["ticket"], last["reason"]) == ("alice", "T-9", "asked by mail")


# -- stored control characters: escaped in every human-readable output, exact in --json -----

@pytest.fixture
async def hostile(db: Path) -> Path:
    """acme as a pre-fix database could hold it: control characters and escape sequences
    in its name, street, and in the audit text of its suspension and unblock."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("UPDATE customers SET name = ?, street = ? WHERE id = 'acme'",
                           (HOSTILE, "Breebroek\u202estraat\x9b2J"))
        connection.commit()
    actor = Actor(EVIL_BY, HOSTILE, "why\r\nFAKE")  # the store API does not judge text
    async with await Store.open(db) as store:
        await store.add_unblock("acme", UnblockKind.PREFIX, "+32905", actor, None)
        await store.suspend("acme", actor)
    return db


def assert_escaped(text: str) -> None:
    for raw in RAW:
        assert raw not in text, (raw, text)
    assert "\x9b" not in text  # a C1 CSI: also a cursor command for some terminals
    assert not any(line.startswith("FAKE") for line in text.splitlines()), text


@pytest.mark.parametrize("command", [["customer", "show", "acme"], ["customer", "list"],
                                     ["audit"], ["audit", "acme"], ["unblocks"],
                                     ["unblocks", "acme", "--all"],
                                     ["check", "--customer", "acme", "0905123456"]],
                         ids=" ".join)
def test_stored_control_characters_are_shown_escaped(hostile: Path,
                                                     command: list[str]) -> None:
    result = run(*command, db=hostile)
    assert result.returncode == 0, result.stderr
    assert_escaped(result.stdout)
    assert_escaped(result.stderr)
    assert "\\x1b" in result.stdout  # shown, not hidden


def test_customer_show_escapes_name_street_and_audit_text(hostile: Path) -> None:
    out = run("customer", "show", "acme", db=hostile).stdout
    assert "a\\x00b\\x1b[31mRED\\r\\nFAKE LINE" in out
    assert "Breebroek\\u202estraat\\x9b2J" in out
    assert "evil\\x1b[2J" in out


def test_json_output_stays_exact(hostile: Path) -> None:
    shown = json.loads(run("customer", "show", "acme", "--json", db=hostile).stdout)
    assert shown["name"] == HOSTILE
    assert shown["install_address"]["street"] == "Breebroek\u202estraat\x9b2J"
    assert shown["suspension"]["suspended_by"] == EVIL_BY
    listed = [json.loads(line) for line in run("customer", "list", "--json",
                                               db=hostile).stdout.splitlines()]
    assert HOSTILE in {row["name"] for row in listed}
    audit = [json.loads(line) for line in run("audit", "--json", db=hostile).stdout.splitlines()]
    assert {EVIL_BY} <= {row["actor"] for row in audit}
    assert "why\r\nFAKE" in {row["reason"] for row in audit}


def test_status_render_escapes_what_the_daemon_sends() -> None:
    now = time.time()
    stamp = datetime.fromtimestamp(now, UTC).isoformat()
    status = {
        "published_at": stamp,
        "daemon": {"pid": 1, "uptime_s": 60, "fastagi": "127.0.0.1:4573\x1b[2J"},
        "ami": {"state": "connected", "address": "127.0.0.1:5038", "since": stamp,
                "for_s": 60},
        "fraud_guard": {"concurrency_enforced": False, "detail": HOSTILE,
                        "degraded_since": stamp, "revocations_pending": 0},
        "snapshot": {"customers": 1, "audit_high_water": 1, "age_s": 0.1},
        "live_calls": {"up": 1, "started_last_minute": 1, "customers": 2,
                       "by_customer": {HOSTILE: {"concurrent": 1, "last_minute": 1,
                                                 "risky": 0},
                                       "x" * 10_000: {"concurrent": 1, "last_minute": 1,
                                                      "risky": 0}}},
        "decisions": {"total": 1, "by_action": {"allow": 1}, "by_reason": {HOSTILE: 1},
                      "by_source": {"daemon": 1}},
    }
    text = render(status, now)
    assert_escaped(text)
    assert "a\\x00b\\x1b[31mRED\\r\\nFAKE LINE" in text and "4573\\x1b[2J" in text
    assert max(len(line) for line in text.splitlines()) < 400  # the long ID is cut
    assert "…" in text


# -- wide columns are cut ----------------------------------------------------------------------

def test_a_huge_name_keeps_the_table_small_and_json_complete(db: Path) -> None:
    name = "N" * 1_000_000
    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("UPDATE customers SET name = ? WHERE id = 'acme'", (name,))
        connection.commit()
    table = run("customer", "list", db=db)
    assert table.returncode == 0, table.stderr
    assert len(table.stdout) < 10_000, len(table.stdout)
    acme = next(line for line in table.stdout.splitlines() if line.startswith("acme"))
    assert "N" * 40 + "…" in acme and len(acme) < 200, acme
    assert len(run("customer", "show", "acme", db=db).stdout) < 10_000
    listed = [json.loads(line) for line in run("customer", "list", "--json",
                                               db=db).stdout.splitlines()]
    assert name in {row["name"] for row in listed}
