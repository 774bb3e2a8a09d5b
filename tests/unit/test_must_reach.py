"""The must-reach list: one data file with its source, every number of numbering.md's table,
and the floor that no config can lower."""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path

import pytest

from callpolicy.asterisk.dialplan import must_reach_context
from callpolicy.policy import build_policy_config
from callpolicy.policy.must_reach import BIPT_MUST_REACH, parse_must_reach
from callpolicy.service.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "agi" / "callpolicy" / "data" / "must-reach.toml"

# shared/reference/numbering.md, "Numbers that must always be reachable" (normalised).
NUMBERING_MD = {
    "112": True, "100": True, "101": True,  # emergency
    "+3270245245": False,  # anti-poison centre
    "1813": False, "+3280032123": False, "+3226499555": False,  # suicide prevention
    "106": False, "107": False, "108": False,  # Tele-Onthaal / helplines
    "102": False, "103": False, "104": False,  # child helplines
    "110": False, "116000": False,  # missing children
    "+3280030030": False,  # partner-violence helpline
    "+3280098100": False,  # SOS rape
    "1712": False,  # violence and child-abuse helpline
}


def test_the_list_is_numbering_md_s_table_with_emergency_flags() -> None:
    assert {n.destination: n.emergency for n in BIPT_MUST_REACH.numbers} == NUMBERING_MD


def test_the_list_names_its_source_and_date() -> None:
    assert "Royal Decree of 2 February 2007" in BIPT_MUST_REACH.source
    assert "Toegang tot de nooddiensten" in BIPT_MUST_REACH.source
    assert BIPT_MUST_REACH.checked >= date(2026, 11, 30)
    assert all(n.service for n in BIPT_MUST_REACH.numbers)


def test_one_home_no_copy_in_the_shipped_configs() -> None:
    for name in ("callpolicy.toml", "demo.toml"):
        policy = tomllib.loads((REPO / "config" / name).read_text())["policy"]
        assert "must_reach" not in policy and "emergency_numbers" not in policy, name


@pytest.mark.parametrize("broken, message", [
    ({"checked": date(2026, 11, 30), "number": [{"number": "112", "service": "x"}]},
     "source"),
    ({"source": "BIPT", "number": [{"number": "112", "service": "x"}]}, "checked"),
    ({"source": "BIPT", "checked": date(2026, 11, 30), "number": []}, "no [[number]]"),
    ({"source": "BIPT", "checked": date(2026, 11, 30),
      "number": [{"number": "11x2", "service": "x"}]}, "not a number"),
    ({"source": "BIPT", "checked": date(2026, 11, 30),
      "number": [{"number": "112", "service": "x", "emergency": "yes"}]}, "true or false"),
])
def test_a_broken_list_is_refused_naming_the_problem(broken: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        parse_must_reach(broken)


def test_the_shipped_file_parses_as_the_loaded_list() -> None:
    assert parse_must_reach(tomllib.loads(DATA.read_text())) == BIPT_MUST_REACH


def test_a_config_that_lists_fewer_numbers_keeps_the_whole_floor(tmp_path: Path) -> None:
    config = tmp_path / "callpolicy.toml"
    config.write_text('[policy]\nmust_reach = ["1813"]\nemergency_numbers = ["112"]\n')
    settings = load_settings(str(config))
    assert BIPT_MUST_REACH.destinations() <= settings.policy.must_reach
    assert settings.policy.emergency == {"112", "100", "101"}


def test_a_config_can_add_must_reach_numbers(tmp_path: Path) -> None:
    config = tmp_path / "callpolicy.toml"
    config.write_text('[policy]\nmust_reach = ["0800 12 345"]\n')
    settings = load_settings(str(config))
    assert settings.policy.must_reach == BIPT_MUST_REACH.destinations() | {"+3280012345"}
    text = must_reach_context(settings.policy)
    assert "; +3280012345: added by the config" in text
    assert "exten => 080012345,1,Return(+3280012345/0)" in text


@pytest.mark.parametrize("form, destination", [
    ("080030030", "+3280030030"), ("003280030030", "+3280030030"),
    ("+3280030030", "+3280030030"), ("080098100", "+3280098100"),
    ("003280098100", "+3280098100"), ("+3280098100", "+3280098100"),
    ("1712", "1712"), ("#31#1712", "1712"), ("#31#080098100", "+3280098100"),
])
def test_the_last_resort_dialplan_knows_every_dial_form(form: str, destination: str) -> None:
    text = must_reach_context(build_policy_config())
    assert f"exten => {form},1,Return({destination}/0)\n" in text


def test_a_bad_added_number_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "callpolicy.toml"
    config.write_text('[policy]\nmust_reach = ["help"]\n')
    with pytest.raises(ConfigError, match="must_reach: 'help' is not a number"):
        load_settings(str(config))


@pytest.mark.parametrize("policy", ['must_reach = []', 'emergency_numbers = ["999"]',
                                    'must_reach = []\nemergency_numbers = []'])
def test_an_empty_or_foreign_list_in_the_config_shrinks_nothing(tmp_path: Path,
                                                                policy: str) -> None:
    """Issue 10: `must_reach = []` refused 1813 to suspended customers; `emergency_numbers =
    ["999"]` made 112 an ordinary number."""
    config = tmp_path / "callpolicy.toml"
    config.write_text(f"[policy]\n{policy}\n")
    settings = load_settings(str(config))
    assert BIPT_MUST_REACH.destinations() <= settings.policy.must_reach
    assert {"112", "100", "101"} <= settings.policy.emergency
