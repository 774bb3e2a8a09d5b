"""The shipped Asterisk config is a production one (issue 12): no verbose logging, no log line
per allowed call, a per-call dialplan path without subroutine calls; the tests and `make run`
get their verbose log from config/demo/asterisk-local.conf, never from the shipped files."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "asterisk"
POLICY = (REPO / "dialplan" / "policy.conf").read_text()


def settings(text: str, section: str) -> dict[str, str]:
    """`key = value` lines of one [section] (also `[section](+)`), comments dropped."""
    found: dict[str, str] = {}
    inside = False
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if line.startswith("["):
            inside = re.match(rf"\[{section}\](\(\+\))?$", line) is not None
        elif inside and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip().lstrip(">").strip()
    return found


def context(name: str) -> list[str]:
    """The dialplan lines of one context of policy.conf, comments dropped."""
    body = POLICY[POLICY.index(f"[{name}]\n") + len(name) + 3:]
    lines = []
    for raw in body.splitlines():
        if raw.startswith("["):
            break
        line = raw.split(";", 1)[0].strip() if not raw.lstrip().startswith(";") else ""
        if line:
            lines.append(line)
    return lines


def test_shipped_asterisk_conf_has_verbose_off_and_only_an_optional_override() -> None:
    text = (SHIPPED / "asterisk.conf").read_text()
    assert settings(text, "options")["verbose"] == "0"
    assert "#tryinclude asterisk-local.conf" in text
    assert not (SHIPPED / "asterisk-local.conf").exists()


def test_shipped_logger_channels_follow_the_verbose_level() -> None:
    """A channel with `verbose(N)` or `*` would log (and make Asterisk build) every dialplan
    step whatever asterisk.conf says; plain `verbose` follows its level (0)."""
    channels = settings((SHIPPED / "logger.conf").read_text(), "logfiles")
    assert channels, "no [logfiles] channels"
    for name, levels in channels.items():
        parts = [p.strip() for p in levels.split(",")]
        assert "*" not in parts and not any(p.startswith("verbose(") for p in parts), name


def test_tests_and_the_demo_raise_the_verbose_level_in_their_own_config() -> None:
    local = (REPO / "config" / "demo" / "asterisk-local.conf").read_text()
    assert settings(local, "options")["verbose"] == "3"
    assert "[options](+)" in local


def test_allowed_calls_leave_no_asterisk_log_line_blocked_calls_a_notice() -> None:
    enforce = context("callpolicy-enforce")
    allow = next(i for i, line in enumerate(enforce) if "n(allow)," in line)
    block = next(line for line in enforce if "n(block)," in line)
    assert not any("Log(" in line for line in enforce[allow:]), enforce[allow:]
    assert "Log(NOTICE,callpolicy: BLOCK " in block


def test_the_phones_per_call_path_has_no_subroutine_before_the_decision() -> None:
    """[from-phones] runs the AGI directly (the fallback is a Gosub only when it failed)."""
    phones = context("from-phones")
    agi = next(i for i, line in enumerate(phones) if "AGI(${CALLPOLICY_AGI}" in line)
    assert not any("Gosub(" in line for line in phones[:agi]), phones[:agi]
    # an allowed decision jumps straight to enforce's allow label, any other to its start;
    # only no decision at all reaches the fallback
    assert phones[agi + 1].endswith('?callpolicy-enforce,s,allow)'), phones[agi + 1]
    assert '"${CP_ACTION}" = "allow" & "${CP_DEST}" != ""' in phones[agi + 1]
    assert phones[agi + 2].endswith('?callpolicy-enforce,s,1)'), phones[agi + 2]
    assert "Gosub(callpolicy-fallback,s,1)" in phones[agi + 3]
