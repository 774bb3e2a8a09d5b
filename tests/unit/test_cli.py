"""The ops CLI as a user runs it: real process, real database, exit codes and stderr lines."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cli_runner import copy_database, demo_database, one_error_line, run

REPO = Path(__file__).resolve().parents[2]
BRUSSELS = ZoneInfo("Europe/Brussels")
IN_A_MONTH = (datetime.now(UTC) + timedelta(days=30)).isoformat(timespec="minutes")
JSON_KEYS = {"number", "destination", "action", "reason", "category", "caller_id",
             "emergency", "location", "rule"}






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


@pytest.mark.parametrize(
    "command",
    [[], ["customer"], ["customer", "import"], ["customer", "show"], ["customer", "list"],
     ["customer", "suspend"], ["customer", "reactivate"], ["customer", "remind"],
     ["customer", "paid"], ["unblock"], ["reblock"],
     ["unblocks"], ["audit"], ["check"]],
    ids=lambda c: " ".join(c) or "top",
)
def test_help_explains_every_command(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0 and "usage: callpolicy" in result.stdout


@pytest.mark.parametrize(
    "command",
    [["customer", "list"], ["customer", "show", "acme"], ["unblocks"], ["audit"],
     ["customer", "suspend", "acme", "--by", "a", "--ticket", "t"],
     ["unblock", "acme", "--prefix", "0905", "--by", "a", "--ticket", "t"],
     ["check", "--customer", "acme", "112"]],
    ids=lambda c: " ".join(c[:2]),
)
def test_missing_database_is_one_error_and_not_created(tmp_path: Path,
                                                       command: list[str]) -> None:
    path = tmp_path / "missing.db"
    one_error_line(run(*command, db=path), 1, "does not exist")
    assert not path.exists()


@pytest.mark.parametrize(
    ("command", "text"),
    [(["bogus"], "invalid choice"),
     (["customer", "list", "--nope"], "unrecognized arguments"),
     (["unblock", "acme", "--prefix", "0905"], "required: --by, --ticket"),
     (["unblock", "acme", "--by", "a", "--ticket", "t"], "one of the arguments"),
     (["unblock", "acme", "--prefix", "0905", "--country", "CH", "--by", "a", "--ticket", "t"],
      "not allowed with"),
     (["unblock", "acme", "--prefix", "abc", "--by", "a", "--ticket", "t"], "not a number"),
     (["unblock", "acme", "--prefix", "0905", "--for", "7x", "--by", "a", "--ticket", "t"],
      "use a duration"),
     (["unblock", "acme", "--prefix", "0905", "--expires", "2020-01-01T00:00Z", "--by", "a",
       "--ticket", "t"], "in the past"),
     (["unblock", "acme", "--country", "FR", "--by", "a", "--ticket", "t"], "is in the EU"),
     (["unblock", "acme", "--country", "XX", "--by", "a", "--ticket", "t"], "not an ISO"),
     (["unblock", "acme", "--category", "mobile", "--by", "a", "--ticket", "t"],
      "--category must be"),
     (["audit", "--limit", "0"], "--limit: '0' is not a whole number from 1 to"),
     (["customer", "suspend", "acme", "--at", "2030-01-01T00:00", "--by", "a", "--ticket", "t"],
      "has no timezone"),
     (["customer", "suspend", "acme", "--at", "2020-01-01T00:00+01:00", "--by", "a",
       "--ticket", "t"], "in the past"),
     (["customer", "suspend", "acme", "--at", "tomorrow", "--by", "a", "--ticket", "t"],
      "not an ISO 8601 time"),
     (["customer", "remind", "acme", "--sent", "2099-01-01", "--by", "a", "--ticket", "t"],
      "in the future"),
     (["customer", "remind", "acme", "--sent", "1/3/2026", "--by", "a", "--ticket", "t"],
      "not a date like"),
     (["customer", "remind", "acme", "--sent", "2026-02-30", "--by", "a", "--ticket", "t"],
      "not a date like"),
     (["customer", "remind", "acme", "--by", "a", "--ticket", "t"], "required: --sent"),
     (["customer", "paid", "acme", "--by", "a"], "required: --ticket"),
     (["check", "--customer", "acme"], "required: NUMBER")],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_bad_usage_exits_2_with_one_line_and_writes_nothing(
        db: Path, command: list[str], text: str) -> None:
    before = audit_count(db)
    one_error_line(run(*command, db=db), 2, text)
    assert audit_count(db) == before


@pytest.mark.parametrize(
    "command",
    [["customer", "show", "ghost"],
     ["customer", "suspend", "ghost", "--by", "a", "--ticket", "t"],
     ["customer", "reactivate", "ghost", "--by", "a", "--ticket", "t"],
     ["customer", "suspend", "ghost", "--at", IN_A_MONTH, "--by", "a", "--ticket", "t"],
     ["customer", "remind", "ghost", "--sent", "2026-01-01", "--by", "a", "--ticket", "t"],
     ["customer", "paid", "ghost", "--by", "a", "--ticket", "t"],
     ["unblock", "ghost", "--prefix", "0905", "--by", "a", "--ticket", "t"],
     ["reblock", "ghost", "--prefix", "0905", "--by", "a", "--ticket", "t"],
     ["unblocks", "ghost"], ["audit", "ghost"]],
    ids=lambda c: " ".join(c[:3]),
)
def test_unknown_customer_is_one_error_line(db: Path, command: list[str]) -> None:
    before = audit_count(db)
    one_error_line(run(*command, db=db), 1, "unknown customer 'ghost'")
    assert audit_count(db) == before


@pytest.mark.parametrize("who", [["--customer", "ghost"], ["--endpoint", "ghost-1"]],
                         ids=["customer", "endpoint"])
def test_check_decides_for_an_unknown_customer_as_a_live_call_would(db: Path,
                                                                   who: list[str]) -> None:
    result = run("check", *who, "--json", "092101299", "0905123456", "112", "1712",
                 "0800 30 030", db=db)
    assert result.returncode == 0, result.stderr
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["action"], d["reason"]) for d in decisions] == [
        ("block", "unknown_customer"), ("block", "unknown_customer"),
        ("allow", "emergency"), ("allow", "must_reach"), ("allow", "must_reach")]
    warning = result.stderr.strip().splitlines()[0]  # then the 112 call's location event
    assert warning.startswith("callpolicy: warning: ") and "ghost" in warning
    assert "is unknown" in warning


def test_check_by_endpoint_decides_with_its_customer(db: Path) -> None:
    result = run("check", "--endpoint", "acme-101", "--json", "0905123456", "092101299", db=db)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["customer"], d["reason"]) for d in decisions] == [
        ("acme", "premium"), ("acme", "allowed")]


def test_check_with_an_endpoint_the_customer_lacks_warns_and_decides(db: Path) -> None:
    result = run("check", "--customer", "acme", "--endpoint", "nope", "092101299", db=db)
    assert result.returncode == 0
    assert "ALLOW" in result.stdout and "has no endpoint 'nope'" in result.stderr


def test_check_needs_a_customer_or_an_endpoint(db: Path) -> None:
    one_error_line(run("check", "112", db=db), 2, "--customer ID or --endpoint NAME")


def test_malformed_toml_writes_nothing(tmp_path: Path, db: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[customer]\nid = 'x'\n")
    fresh = tmp_path / "fresh.db"
    result = run("customer", "import", str(bad), db=fresh)
    assert result.returncode == 1 and "not valid TOML" in result.stderr
    assert not fresh.exists()
    before = audit_count(db)
    assert run("customer", "import", str(bad), db=db).returncode == 1
    assert run("customer", "import", str(tmp_path / "none.toml"), db=db).returncode == 1
    assert audit_count(db) == before


def test_import_dry_run_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "dry.db"
    result = run("customer", "import", str(REPO / "config" / "demo-customers.toml"),
                 "--dry-run", db=path)
    assert result.returncode == 0 and "nothing written" in result.stdout
    assert not path.exists()


def test_db_option_env_and_position(db: Path) -> None:
    assert run("--db", str(db), "customer", "list").returncode == 0
    env_result = run("customer", "list", env={"CALLPOLICY_DB": str(db)})
    assert env_result.returncode == 0 and "acme" in env_result.stdout


def test_bad_config_file_is_one_error(tmp_path: Path, db: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy]\npremium_prefixes = ['09x5']\n")
    # issue 10: a bad value in the config is bad usage (exit 2); a missing file is not
    one_error_line(run("--config", str(bad), "customer", "list", db=db), 2, "09x5")
    one_error_line(run("--config", str(tmp_path / "none.toml"), "customer", "list", db=db), 1,
                   "does not exist")


def test_read_commands_speak_json(db: Path) -> None:
    show = json.loads(run("customer", "show", "acme", "--json", db=db).stdout)
    assert show["numbers"] == ["+3292101234", "+3292101235", "+3292101236",
                                     "+3292101237", "+3292101238"]
    listed = [json.loads(line) for line in
              run("customer", "list", "--json", db=db).stdout.splitlines()]
    assert [c["id"] for c in listed] == ["acme", "bakkerij"]
    assert [c["status"] for c in listed] == ["active", "suspended"]
    audit = [json.loads(line) for line in run("audit", "--json", db=db).stdout.splitlines()]
    assert {a["action"] for a in audit} == {"customer.create"}
    assert run("unblocks", "--json", db=db).stdout == ""


def check(db: Path, *numbers: str, extra: tuple[str, ...] = ()) -> list[dict]:
    result = run("check", "--customer", "acme", "--json", *extra, *numbers, db=db)
    assert result.returncode == 0, result.stderr
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(decisions) == len(numbers)
    for decision in decisions:
        assert decision.keys() >= JSON_KEYS
    return decisions


def test_check_explains_decisions(db: Path) -> None:
    national, premium, swiss, sos, junk = check(
        db, "09 210 12 99", "0905 12 34 56", "+41 44 123 45 67", "112", "sip:1@2.3.4.5",
        extra=("--endpoint", "acme-101", "--source-ip", "127.0.0.2"))
    assert (national["action"], national["reason"]) == ("allow", "allowed")
    assert national["destination"] == "+3292101299"
    assert national["caller_id"] == {"number": "+3292101234", "presentation": "allowed",
                                     "asserted": "+3292101234"}
    assert (premium["action"], premium["reason"]) == ("block", "premium")
    assert "0905" in premium["rule"]
    assert (swiss["reason"], swiss["category"]) == ("non_eu", "non_eu")
    assert sos["emergency"] is True and sos["location"] == "verified"
    assert sos["location_address"]["postcode"] == "9030"
    assert (junk["reason"], junk["destination"]) == ("invalid_number", None)


def test_check_logs_spoofing_attempt(db: Path) -> None:
    result = run("check", "--customer", "acme", "--caller-id", "+3222222222", "--json",
                 "092101299", db=db)
    assert json.loads(result.stdout)["caller_id"]["number"] == "+3292101234"
    logged = next(line for line in result.stderr.splitlines() if "spoofing_attempt" in line)
    assert "dry_run" in logged  # not a live call: a log monitor can leave it out


def test_unblock_reblock_cycle_and_audit(db: Path) -> None:
    assert check(db, "0905123456")[0]["reason"] == "premium"
    result = run("unblock", "acme", "--prefix", "0905", "--by", "alice", "--ticket", "MAIL-1",
                 "--reason", "customer asked", db=db)
    assert result.returncode == 0 and "unblock #1" in result.stdout
    assert check(db, "0905123456")[0]["reason"] == "unblocked"
    assert check(db, "+32905123456")[0]["reason"] == "unblocked"
    result = run("reblock", "acme", "--prefix", "+32905", "--by", "bob", "--ticket", "MAIL-2",
                 db=db)
    assert result.returncode == 0, result.stderr
    assert check(db, "0905123456")[0]["reason"] == "premium"
    one_error_line(run("reblock", "acme", "--prefix", "0905", "--by", "bob", "--ticket", "M",
                       db=db), 1, "no active unblock")
    entries = [json.loads(line) for line in run("audit", "acme", "--json", db=db)
               .stdout.splitlines()]
    assert [(e["action"], e["actor"], e["ticket"]) for e in entries[-2:]] == [
        ("unblock.add", "alice", "MAIL-1"), ("unblock.reblock", "bob", "MAIL-2")]


def test_unblock_for_a_few_seconds_expires(db: Path) -> None:
    began = time.monotonic()  # the unblock ends 3 s after its commit: between these + 3 s
    assert run("unblock", "acme", "--country", "ch", "--for", "3s", "--by", "a",
               "--ticket", "t", db=db).returncode == 0
    committed_by = time.monotonic()
    decided = check(db, "+41441234567")[0]["reason"]
    if time.monotonic() - began < 3:  # two CLI runs on a loaded machine may take longer
        assert decided == "unblocked"
    time.sleep(max(0.0, committed_by + 3.2 - time.monotonic()))
    assert check(db, "+41441234567")[0]["reason"] == "non_eu"
    rows = [json.loads(line) for line in run("unblocks", "--all", "--json", db=db)
            .stdout.splitlines()]
    assert [r["state"] for r in rows] == ["expired"]


def test_short_prefix_unblock_warns_it_opens_nothing(db: Path) -> None:
    result = run("unblock", "acme", "--prefix", "090", "--by", "a", "--ticket", "t", db=db)
    assert result.returncode == 0 and "opens none of them" in result.stderr
    assert check(db, "0905123456")[0]["reason"] == "premium"


def test_suspend_then_must_reach_only(db: Path) -> None:
    assert run("customer", "suspend", "acme", "--by", "a", "--ticket", "t", db=db
               ).returncode == 0
    one_error_line(run("customer", "suspend", "acme", "--by", "a", "--ticket", "t", db=db), 1,
                   "already suspended")
    national, poison, sos = check(db, "092101299", "070 245 245", "112")
    assert national["reason"] == "suspended"
    assert (poison["action"], poison["reason"]) == ("allow", "must_reach")
    assert (sos["action"], sos["reason"]) == ("allow", "emergency")
    assert run("customer", "reactivate", "acme", "--by", "a", "--ticket", "t", db=db
               ).returncode == 0
    assert check(db, "092101299")[0]["reason"] == "allowed"


def show(db: Path, customer: str = "acme") -> dict:
    return json.loads(run("customer", "show", customer, "--json", db=db).stdout)


def test_suspend_at_schedules_check_follows_the_time_and_reactivate_cancels(db: Path) -> None:
    at = datetime.now(UTC) + timedelta(seconds=4)
    result = run("customer", "suspend", "acme", "--at", at.astimezone(BRUSSELS).isoformat(),
                 "--by", "alice", "--ticket", "T-AT", "--reason", "unpaid", db=db)
    assert result.returncode == 0, result.stderr
    assert "suspension scheduled at" in result.stdout and "T-AT" in result.stdout
    decided = check(db, "092101299")[0]["reason"]
    if datetime.now(UTC) < at:  # two CLI runs on a loaded machine may take longer
        assert decided == "allowed"
    text = run("customer", "show", "acme", db=db).stdout
    assert "scheduled     suspension at" in text and "suspend --at: unpaid" in text
    listed = [json.loads(line) for line in run("customer", "list", "--json", db=db)
              .stdout.splitlines()]
    assert listed[0]["scheduled"] is not None and listed[1]["scheduled"] is None
    assert "SCHEDULED" in run("customer", "list", db=db).stdout
    one_error_line(run("customer", "suspend", "acme", "--at", (at + timedelta(hours=1))
                       .isoformat(), "--by", "a", "--ticket", "t", db=db), 1,
                   "already has a suspension scheduled")
    time.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()) + 0.1)
    national, sos = check(db, "092101299", "112")  # no daemon has written anything: the
    assert national["reason"] == "suspended"      # decision follows the schedule
    assert "T-AT" in national["rule"] and sos["action"] == "allow"
    assert show(db)["status"] == "active"
    result = run("customer", "reactivate", "acme", "--by", "bob", "--ticket", "T-OFF", db=db)
    assert result.returncode == 0 and "cancelled the suspension" in result.stdout
    assert check(db, "092101299")[0]["reason"] == "allowed"
    one_error_line(run("customer", "reactivate", "acme", "--by", "bob", "--ticket", "T", db=db),
                   1, "not suspended and has no scheduled suspension")
    entries = [json.loads(line) for line in run("audit", "acme", "--json", db=db)
               .stdout.splitlines()]
    assert [(e["action"], e["ticket"]) for e in entries[-2:]] == [
        ("customer.suspend_scheduled", "T-AT"), ("customer.schedule_cancelled", "T-OFF")]


def test_remind_schedules_15_days_later_and_paid_cancels(db: Path) -> None:
    today = datetime.now(BRUSSELS).date()
    result = run("customer", "remind", "acme", "--sent", today.isoformat(), "--by", "alice",
                 "--ticket", "R-1", db=db)
    assert result.returncode == 0, result.stderr
    due = datetime.combine(today + timedelta(days=15), datetime.min.time(), tzinfo=BRUSSELS)
    assert f"suspension scheduled at {due.isoformat()}" in result.stdout
    result = run("customer", "remind", "acme", "--sent", today.isoformat(), "--by", "alice",
                 "--ticket", "R-2", db=db)
    assert "not the first reminder" in result.stdout and due.isoformat() in result.stdout
    customer = show(db)
    assert customer["scheduled_suspension"]["reminder_sent_on"] == today.isoformat()
    assert [r["ticket"] for r in customer["payment_reminders"]] == ["R-1", "R-2"]
    text = run("customer", "show", "acme", db=db).stdout
    assert f"15 days after the first payment reminder of {today}" in text
    assert text.count("reminder      sent") == 2
    result = run("customer", "paid", "acme", "--by", "bob", "--ticket", "PAY-1", db=db)
    assert result.returncode == 0, result.stderr
    assert "closed 2 payment reminder(s)" in result.stdout and "cancelled" in result.stdout
    customer = show(db)
    assert customer["scheduled_suspension"] is None and customer["payment_reminders"] == []
    one_error_line(run("customer", "paid", "acme", "--by", "bob", "--ticket", "PAY-2", db=db),
                   1, "nothing to settle")


def test_reminder_long_past_suspends_at_once_and_paid_reactivates(db: Path) -> None:
    result = run("customer", "remind", "acme", "--sent", "2026-01-05", "--by", "alice",
                 "--ticket", "R-OLD", db=db)
    assert result.returncode == 0, result.stderr
    assert "already past: the suspension is due at once" in result.stdout
    assert "suspended now" in result.stdout
    assert show(db)["status"] == "suspended"
    assert check(db, "092101299")[0]["reason"] == "suspended"
    result = run("customer", "paid", "acme", "--by", "bob", "--ticket", "PAY-1", db=db)
    assert "customer acme reactivated" in result.stdout
    assert show(db)["status"] == "active"
    assert check(db, "092101299")[0]["reason"] == "allowed"
