"""`callpolicy limits show|set` as a user runs it, and the config's [fraud] defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import copy_database, demo_database, one_error_line, run

from callpolicy.policy import FraudLimits
from callpolicy.service.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]
WHO = ("--by", "alice", "--ticket", "FRAUD-1")






@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_database(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def db(demo_db: Path, tmp_path: Path) -> Path:
    """The demo customers, imported once per module (CI time): this test's own copy."""
    return copy_database(demo_db, tmp_path / "cp.db")


def show(db: Path, customer: str = "acme", config: Path | None = None) -> dict:
    result = run("limits", "show", customer, "--json", db=db, config=config)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    return json.loads(line)


def audit(db: Path) -> list[dict]:
    return [json.loads(line) for line in
            run("audit", "--json", "--limit", "1000", db=db).stdout.splitlines()]


def test_show_defaults_then_set_and_clear(db: Path) -> None:
    view = show(db)
    assert view == {
        "customer": "acme",
        "effective": {"max_concurrent": 10, "max_per_minute": 20, "max_concurrent_risky": 2},
        "source": dict.fromkeys(("max_concurrent", "max_per_minute", "max_concurrent_risky"),
                                "default"),
        "customer_limits": dict.fromkeys(
            ("max_concurrent", "max_per_minute", "max_concurrent_risky")),
        "defaults": {"max_concurrent": 10, "max_per_minute": 20, "max_concurrent_risky": 2},
    }
    result = run("limits", "set", "acme", "--max-concurrent", "3", "--max-concurrent-risky",
                 "0", *WHO, "--reason", "fraud suspicion", db=db)
    assert result.returncode == 0, result.stderr
    assert "set (ticket FRAUD-1)" in result.stdout
    view = show(db)
    assert view["effective"] == {"max_concurrent": 3, "max_per_minute": 20,
                                 "max_concurrent_risky": 0}
    assert view["source"] == {"max_concurrent": "customer", "max_per_minute": "default",
                              "max_concurrent_risky": "customer"}
    # a second set changes only what it names
    assert run("limits", "set", "acme", "--max-per-minute", "5", *WHO, db=db).returncode == 0
    assert show(db)["customer_limits"] == {"max_concurrent": 3, "max_per_minute": 5,
                                           "max_concurrent_risky": 0}
    # --default gives limits back to the operator default (both spellings)
    result = run("limits", "set", "acme", "--default", "max_concurrent", "max-per-minute",
                 *WHO, db=db)
    assert result.returncode == 0, result.stderr
    assert show(db)["source"] == {"max_concurrent": "default", "max_per_minute": "default",
                                  "max_concurrent_risky": "customer"}
    entries = [e for e in audit(db) if e["action"] == "limits.set"]
    assert [(e["actor"], e["ticket"], e["customer_id"]) for e in entries] == [
        ("alice", "FRAUD-1", "acme")] * 3
    assert entries[0]["reason"] == "fraud suspicion"
    assert entries[0]["before"]["max_concurrent"] is None
    assert entries[0]["after"]["max_concurrent"] == 3
    assert entries[-1]["after"] == {"max_concurrent": None, "max_per_minute": None,
                                    "max_concurrent_risky": 0}
    # other customers untouched
    assert show(db, "bakkerij")["customer_limits"]["max_concurrent"] is None


def test_show_text_names_the_source(db: Path) -> None:
    run("limits", "set", "acme", "--max-concurrent", "4", *WHO, db=db)
    result = run("limits", "show", "acme", db=db)
    assert result.returncode == 0
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "4" in lines["max_concurrent"] and "(customer)" in lines["max_concurrent"]
    assert "20" in lines["max_per_minute"] and "default" in lines["max_per_minute"]


def test_setting_the_same_again_writes_nothing(db: Path) -> None:
    assert run("limits", "set", "acme", "--max-concurrent", "4", *WHO, db=db).returncode == 0
    before = len(audit(db))
    result = run("limits", "set", "acme", "--max-concurrent", "4", *WHO, db=db)
    assert result.returncode == 0 and "unchanged" in result.stdout
    assert len(audit(db)) == before


def test_operator_defaults_come_from_the_config(db: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[fraud]\nmax_concurrent = 7\n")
    view = show(db, config=config)
    assert view["defaults"]["max_concurrent"] == 7
    assert view["effective"]["max_concurrent"] == 7


@pytest.mark.parametrize(
    ("args", "text"),
    [(["acme"], "nothing to change"),
     (["acme", "--max-concurrent", "-1"], "'-1' is not a whole number from 0 to 1000000"),
     (["acme", "--max-concurrent", "x"], "not a whole number"),
     (["acme", "--default", "max_calls"], "is not a limit"),
     (["acme", "--default"], "expected at least one argument"),
     (["acme", "--max-concurrent", "2", "--default", "max_concurrent"], "contradict"),
     (["--max-concurrent", "2"], "required: ID")],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_bad_usage_exits_2_with_one_line_and_writes_nothing(db: Path, args: list[str],
                                                            text: str) -> None:
    before = len(audit(db))
    one_error_line(run("limits", "set", *args, *WHO, db=db), 2, text)
    assert len(audit(db)) == before


def test_by_and_ticket_are_required(db: Path) -> None:
    one_error_line(run("limits", "set", "acme", "--max-concurrent", "2", db=db), 2,
                   "required: --by, --ticket")


def test_unknown_customer_and_missing_database(db: Path, tmp_path: Path) -> None:
    one_error_line(run("limits", "show", "ghost", db=db), 1, "unknown customer 'ghost'")
    one_error_line(run("limits", "set", "ghost", "--max-concurrent", "1", *WHO, db=db), 1,
                   "unknown customer 'ghost'")
    missing = tmp_path / "missing.db"
    one_error_line(run("limits", "show", "acme", db=missing), 1, "does not exist")
    assert not missing.exists()


@pytest.mark.parametrize("command", [["limits"], ["limits", "show"], ["limits", "set"]])
def test_help(db: Path, command: list[str]) -> None:
    result = run(*command, "--help", db=db)
    assert result.returncode == 0 and "usage: callpolicy limits" in result.stdout


# -- config [fraud] -----------------------------------------------------------------------

def settings_from(tmp_path: Path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_settings(str(path))


def test_fraud_defaults(tmp_path: Path) -> None:
    assert settings_from(tmp_path, "").policy.fraud_limits == FraudLimits(10, 20, 2)
    for shipped in ("callpolicy.toml", "demo.toml"):
        settings = load_settings(str(REPO / "config" / shipped))
        assert settings.policy.fraud_limits == FraudLimits(10, 20, 2)
    settings = settings_from(tmp_path, "[fraud]\nmax_concurrent = 0\nmax_per_minute = 100\n")
    assert settings.policy.fraud_limits == FraudLimits(0, 100, 2)
    # the rest of the policy config is untouched by the replace()
    assert "+32905" in settings.policy.premium_prefixes


@pytest.mark.parametrize(
    ("text", "error"),
    [("max_concurrent = -1", "fraud.max_concurrent must be 0 or more"),
     ("max_per_minute = '5'", "fraud.max_per_minute must be a int"),
     ("max_concurrent_risky = true", "fraud.max_concurrent_risky must be a int"),
     ("max_concurrent_risky = 1.5", "must be a int"),
     ("max_concurent = 3", "unknown key fraud.max_concurent")],
)
def test_bad_fraud_config_is_one_clear_error(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        settings_from(tmp_path, f"[fraud]\n{text}\n")
