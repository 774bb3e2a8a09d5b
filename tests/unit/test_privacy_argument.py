"""Argument 5 of the AGI call: the dialplan passes CALLERID(pres) and the Privacy header as they
came; the daemon and the fallback AGI decide whether the caller asked for privacy."""

from __future__ import annotations

import pytest

from callpolicy.asterisk.variables import AgiCall, encode_arg, privacy_requested


def arg(pres: str, header: str) -> str:
    """What [from-phones] builds: ${CALLERID(pres):0:6}:${BASE64_ENCODE(<Privacy header>)}."""
    return f"{pres[:6]}:{encode_arg(header) if header else ''}"


@pytest.mark.parametrize(("pres", "header", "private"), [
    ("allowed_not_screened", "", False),
    ("allowed", "none", False),
    ("prohib_not_screened", "", True),  # PAI/RPID privacy
    ("prohib", "none", True),
    ("allowed", "id", True),  # RFC 3325
    ("allowed", "user", True),  # RFC 3323
    ("allowed", "header", True),
    ("allowed", "Header;Critical", True),  # case does not matter
    ("allowed", "session", False),
    ("unavailable", "", False),
    ("allowed", "none, id", True),
])
def test_privacy_from_the_raw_facts(pres: str, header: str, private: bool) -> None:
    assert privacy_requested(arg(pres, header)) is private


@pytest.mark.parametrize(("raw", "private"), [("1", True), ("0", False), ("", False)])
def test_a_plain_flag_is_taken_as_it_is(raw: str, private: bool) -> None:
    assert privacy_requested(raw) is private


@pytest.mark.parametrize("raw", [
    "allowe:!!not-base64!!", "allowe:", ":", "allowe", "allowe:" + "A" * 10_000,
    "allowe:" + encode_arg("\x00\r\nEXEC Hangup"),
])
def test_garbage_does_not_raise_and_is_not_private(raw: str) -> None:
    assert privacy_requested(raw) is False


def test_the_call_carries_the_flag() -> None:
    args = ["outbound", "acme-101", encode_arg("092101299"), encode_arg("+3292101234"),
            arg("allowed_not_screened", "id"), "127.0.0.2:5060", ""]
    assert AgiCall.from_args(args).privacy is True
    args[4] = arg("allowed_not_screened", "")
    assert AgiCall.from_args(args).privacy is False
