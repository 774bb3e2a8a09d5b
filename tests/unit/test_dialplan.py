"""The committed last-resort dialplan matches the config's must-reach list."""

from __future__ import annotations

from pathlib import Path

from callpolicy.asterisk.dialplan import dial_forms, must_reach_context
from callpolicy.service.config import load_settings

REPO = Path(__file__).resolve().parents[2]


def test_committed_must_reach_dialplan_is_generated_from_the_config() -> None:
    settings = load_settings(str(REPO / "config" / "callpolicy.toml"))
    committed = (REPO / "dialplan" / "must-reach.conf").read_text()
    assert committed == must_reach_context(settings.policy), (
        "regenerate: callpolicy --config config/callpolicy.toml must-reach-dialplan "
        "> dialplan/must-reach.conf")


def test_every_dial_form_of_the_poison_centre_is_recognised() -> None:
    forms = dial_forms("+3270245245", "#31#")
    assert forms == ["070245245", "003270245245", "+3270245245", "#31#070245245",
                     "#31#003270245245", "#31#+3270245245"]


def test_emergency_numbers_are_flagged() -> None:
    settings = load_settings(str(REPO / "config" / "callpolicy.toml"))
    text = must_reach_context(settings.policy)
    assert "exten => 112,1,Return(112/1)" in text
    assert "exten => #31#112,1,Return(112/1)" in text
    assert "exten => 1813,1,Return(1813/0)" in text


def test_the_last_resort_sets_only_contract_variables() -> None:
    import re

    from callpolicy.asterisk import variables

    text = must_reach_context(load_settings(str(REPO / "config" / "callpolicy.toml")).policy)
    assert "[callpolicy-last-resort]" in text
    msets = re.findall(r"MSet\(([^)]*)\)", text)
    assert len(msets) == 2
    for mset in msets:
        assert {pair.split("=")[0] for pair in mset.split(",")} <= set(variables.ALL)
