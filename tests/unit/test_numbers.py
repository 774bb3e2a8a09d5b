"""Dial strings -> E.164 / short numbers (policy/numbers.py)."""

from __future__ import annotations

import pytest

from callpolicy.policy import (
    Action,
    Category,
    Presentation,
    Reason,
    build_policy_config,
    geographic_zone,
    national_form,
    normalise,
    normalise_number,
    normalise_prefix,
)

NBSP = "\u00a0"


# --- national and international forms ---------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("09 210 12 34", "+3292101234"),
        ("092101234", "+3292101234"),
        ("09.210.12.34", "+3292101234"),
        ("09-210-12-34", "+3292101234"),
        ("09/210.12-34", "+3292101234"),
        ("(09) 210 12 34", "+3292101234"),
        ("  09 210 12 34\t\n", "+3292101234"),
        (f"09{NBSP}210{NBSP}12{NBSP}34", "+3292101234"),
        ("0032 9 210 12 34", "+3292101234"),
        ("00 32 9 210 12 34", "+3292101234"),
        ("+32 9 210 12 34", "+3292101234"),
        ("+32 (9) 210-12-34", "+3292101234"),
        ("(+32) 92101234", "+3292101234"),
        ("0475 12 34 56", "+32475123456"),
        ("+32 475 12 34 56", "+32475123456"),
        ("02 649 95 55", "+3226499555"),
        ("070 245 245", "+3270245245"),
        ("0800 32 123", "+3280032123"),
        ("0903123456", "+32903123456"),  # over-long premium stays a (premium) number
        ("0033 1 42 68 53 00", "+33142685300"),
        ("+33 1 42 68 53 00", "+33142685300"),
        ("+44 20 7946 0958", "+442079460958"),
        ("00882 1234 5678", "+88212345678"),
        ("+1 721 542 5678", "+17215425678"),
        ("+49" + "1" * 13, "+49" + "1" * 13),  # exactly the 15 digits of E.164
    ],
    ids=lambda v: repr(v),
)
def test_normalise_full_numbers(raw: str, expected: str) -> None:
    dialled = normalise(raw)
    assert dialled.destination == expected
    assert dialled.valid
    assert not dialled.short
    assert not dialled.restriction_requested
    assert dialled.raw == raw


@pytest.mark.parametrize(
    "raw",
    ["112", "100", "101", "102", "103", "104", "106", "107", "108", "110", "1813", "116000",
     "1120", "116111"],
)
def test_short_numbers_stay_short(raw: str) -> None:
    dialled = normalise(raw)
    assert dialled.destination == raw
    assert dialled.short
    assert dialled.country_code_digits == ""


def test_short_number_with_separators_stays_short() -> None:
    dialled = normalise("116 000")
    assert (dialled.destination, dialled.short) == ("116000", True)


def test_national_and_international_forms_are_one_number() -> None:
    forms = ["09 210 12 34", "0032 9 210 12 34", "+32 9 210 12 34", "+3292101234"]
    assert {normalise(f).destination for f in forms} == {"+3292101234"}


def test_country_code_digits() -> None:
    assert normalise("0033 1 42 68 53 00").country_code_digits == "33142685300"


# --- caller-ID restriction prefix -------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("#31#09 210 12 34", "+3292101234"),
        ("#31# 09 210 12 34", "+3292101234"),
        ("  #31#0032 9 210 12 34", "+3292101234"),
        ("#31#+33142685300", "+33142685300"),
        ("#31#112", "112"),
        ("#31#070245245", "+3270245245"),
    ],
    ids=repr,
)
def test_restriction_prefix_is_stripped_and_recorded(raw: str, expected: str) -> None:
    dialled = normalise(raw)
    assert dialled.destination == expected
    assert dialled.restriction_requested


@pytest.mark.parametrize(
    "raw",
    ["#31#", "#31# ", "#31#abc", "#31#sip:112@1.2.3.4", "#31##31#092101234"],
    ids=repr,
)
def test_restriction_prefix_before_garbage_is_invalid_but_recorded(raw: str) -> None:
    dialled = normalise(raw)
    assert dialled.destination is None
    assert dialled.restriction_requested


@pytest.mark.parametrize(
    "raw",
    ["092101234#31#", "09#31#2101234", "#31092101234", "*31#092101234", "# 31 #092101234"],
    ids=repr,
)
def test_restriction_prefix_elsewhere_is_not_stripped(raw: str) -> None:
    dialled = normalise(raw)
    assert dialled.destination is None
    assert not dialled.restriction_requested


def test_custom_restriction_prefix() -> None:
    dialled = normalise("*31#092101234", restriction_prefix="*31#")
    assert (dialled.destination, dialled.restriction_requested) == ("+3292101234", True)
    # ... and then the default prefix is just an invalid dial string.
    other = normalise("#31#092101234", restriction_prefix="*31#")
    assert (other.destination, other.restriction_requested) == (None, False)


def test_empty_restriction_prefix_disables_stripping() -> None:
    dialled = normalise("#31#092101234", restriction_prefix="")
    assert dialled.destination is None
    assert not dialled.restriction_requested


# --- not dialable: invalid, never an exception ------------------------------------------------

INVALID_DIAL_STRINGS = [
    pytest.param("", id="empty"),
    pytest.param("   ", id="blanks"),
    pytest.param("\t\n", id="whitespace"),
    pytest.param("---", id="only-dashes"),
    pytest.param("(). -/", id="only-separators"),
    pytest.param("+", id="plus-only"),
    pytest.param("++3292101234", id="double-plus"),
    pytest.param("+32+92101234", id="plus-inside"),
    pytest.param("0921O1234", id="letter-O-for-zero"),
    pytest.param("abc", id="letters"),
    pytest.param("sipp", id="sipp"),
    pytest.param("anonymous", id="anonymous"),
    pytest.param("sip:0921012345@1.2.3.4", id="sip-uri"),
    pytest.param("<sip:0921012345@1.2.3.4>", id="sip-uri-angle"),
    pytest.param("sip:+3292101234@pbx;user=phone", id="sip-uri-user-phone"),
    pytest.param("0921012345;user=phone", id="user-phone-param"),
    pytest.param("tel:+3292101234", id="tel-uri"),
    pytest.param("092101234@1.2.3.4", id="at-host"),
    pytest.param("*31#092101234", id="star-service-code"),
    pytest.param("092101234##", id="two-trailing-hashes"),
    pytest.param("*#06#", id="imei-code"),
    pytest.param("#21#", id="gsm-service-code"),
    pytest.param("#", id="hash-only"),
    pytest.param("09 210 12 34 ext 5", id="extension-text"),
    pytest.param("0x92101234", id="hex-looking"),
    pytest.param("٠٩٢١٠١٢٣٤", id="arabic-indic-digits"),
    pytest.param("０９２１０１２３４", id="fullwidth-digits"),
    pytest.param("09\u200b2101234", id="zero-width-space"),
    pytest.param("09\x002101234", id="nul-byte"),
    pytest.param("1" * 21, id="21-digits"),
    pytest.param("+" + "3" * 21, id="plus-21-digits"),
    pytest.param("00" + "1" * 19, id="00-and-19-digits"),
    pytest.param("+49" + "1" * 14, id="16-digit-e164"),
    pytest.param("0" + "9" * 15, id="national-too-long-for-e164"),
    pytest.param("0", id="trunk-prefix-only"),
    pytest.param("00", id="international-prefix-only"),
    pytest.param("000", id="three-zeros"),
    pytest.param("0032", id="country-code-only"),
    pytest.param("+32", id="plus-country-code-only"),
    pytest.param("+32 0905 12 34 56", id="plus32-extra-zero-premium"),
    pytest.param("+32 0 9 210 12 34", id="plus32-extra-zero"),
    pytest.param("+32 (0)9 210 12 34", id="plus32-bracketed-zero"),
    pytest.param("0032 0905 12 34 56", id="0032-extra-zero-premium"),
    pytest.param("12", id="two-digits"),
    pytest.param("1234567", id="seven-digits-no-prefix"),
    pytest.param("+12", id="plus-too-short"),
    pytest.param("9" * 65, id="longer-than-64-chars"),
]


@pytest.mark.parametrize(("raw", "destination"), [
    ("112#", "112"), ("101 #", "101"), ("#31#112#", "112"), ("092101234#", "+3292101234"),
    ("+32 9 210 12 34#", "+3292101234"), ("070 245 245#", "+3270245245"),
    ("0905 12 34 56#", "+32905123456"),  # still premium: the prefix decides, not the key
])
def test_one_trailing_hash_is_the_phones_dial_now_key(raw: str, destination: str) -> None:
    assert normalise(raw).destination == destination


@pytest.mark.parametrize("raw", INVALID_DIAL_STRINGS)
def test_not_dialable_is_invalid(raw: str) -> None:
    dialled = normalise(raw)
    assert dialled.destination is None
    assert not dialled.valid
    assert dialled.problem


@pytest.mark.parametrize("raw", INVALID_DIAL_STRINGS)
def test_not_dialable_is_blocked_as_invalid_number(raw: str, decide) -> None:
    decision = decide(raw)
    assert decision.action is Action.BLOCK
    assert decision.reason is Reason.INVALID_NUMBER
    assert decision.category is Category.INVALID
    assert decision.destination is None
    assert decision.number == raw


@pytest.mark.parametrize(
    "raw", [None, 112, 3292101234, b"112", ["112"], 1.5], ids=lambda v: type(v).__name__
)
def test_normalise_non_strings_is_invalid(raw: object) -> None:
    dialled = normalise(raw)
    assert dialled.destination is None
    assert dialled.problem


# --- helpers for config and import data -------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("092101234", "+3292101234"),
        ("09 210 12 34", "+3292101234"),
        ("+32 9 210 12 34", "+3292101234"),
        ("0033142685300", "+33142685300"),
        ("112", None),  # short numbers are not full numbers
        ("1813", None),
        ("#31#092101234", None),  # no restriction prefix in config/import data
        ("sipp", None),
        ("", None),
        ("+32 0 9 210 12 34", None),
    ],
    ids=repr,
)
def test_normalise_number(raw: str, expected: str | None) -> None:
    assert normalise_number(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0905", "+32905"),
        ("09 05", "+32905"),
        ("+32905", "+32905"),
        ("0032905", "+32905"),
        ("0044", "+44"),
        ("+41", "+41"),
        ("09", "+329"),
        ("0", None),
        ("00", None),
        ("000", None),
        ("+", None),
        ("", None),
        ("905", None),  # neither national nor international
        ("abc", None),
        ("+0905", None),
    ],
    ids=repr,
)
def test_normalise_prefix(raw: str, expected: str | None) -> None:
    assert normalise_prefix(raw) == expected


@pytest.mark.parametrize(
    ("e164", "expected"),
    [
        ("+3292101234", "092101234"),
        ("+32475123456", "0475123456"),
        ("+33142685300", "+33142685300"),
    ],
)
def test_national_form(e164: str, expected: str) -> None:
    assert national_form(e164) == expected


# --- geographic zones (art. 3.8) --------------------------------------------------------------

@pytest.mark.parametrize(
    ("e164", "zone"),
    [
        pytest.param("+3292101234", "09", id="gent-09"),
        pytest.param("+3225551234", "02", id="brussel-02"),
        pytest.param("+3226499555", "02", id="brussel-02-suicide-line"),
        pytest.param("+3232123456", "03", id="antwerpen-03"),
        pytest.param("+3250123456", "050", id="brugge-050"),
        pytest.param("+3242123456", "04", id="liege-042"),
        pytest.param("+3243123456", "04", id="liege-043"),
        pytest.param("+3214123456", "014", id="herentals-014"),
        pytest.param("+3215123456", "015", id="mechelen-015"),
        pytest.param("+3216123456", "016", id="leuven-016"),
        pytest.param("+3219123456", "019", id="waremme-019"),
        pytest.param("+3259123456", "059", id="oostende-059"),
        pytest.param("+3263123456", "063", id="arlon-063"),
        pytest.param("+3271123456", "071", id="charleroi-071"),
        pytest.param("+3280800123", "080", id="stavelot-080"),
        pytest.param("+3287123456", "087", id="verviers-087"),
        pytest.param("+3289123456", "089", id="genk-089"),
        pytest.param("+32475123456", None, id="mobile-0475"),
        pytest.param("+32456123456", None, id="mobile-0456"),
        pytest.param("+32499123456", None, id="mobile-0499"),
        pytest.param("+3270245245", None, id="070-anti-poison"),
        pytest.param("+3270223344", None, id="070-premium"),
        pytest.param("+3278151515", None, id="078-uan"),
        pytest.param("+3280032123", None, id="0800-freephone-suicide-line"),
        pytest.param("+3280012345", None, id="0800-freephone"),
        pytest.param("+3290012345", None, id="0900-premium"),
        pytest.param("+3290512345", None, id="0905-premium"),
        pytest.param("+3262123456", None, id="062-not-a-zone"),
        pytest.param("+3217123456", None, id="017-not-a-zone"),
        pytest.param("+3241234567", None, id="041-not-a-zone"),
        pytest.param("+329210123", None, id="too-short"),
        pytest.param("+32921012345", None, id="too-long"),
        pytest.param("+33142685300", None, id="france"),
        pytest.param("+313212345678", None, id="nl-starting-like-be"),
        pytest.param("112", None, id="short-number"),
        pytest.param("", None, id="empty"),
    ],
)
def test_geographic_zone(e164: str, zone: str | None) -> None:
    assert geographic_zone(e164) == zone


# --- default configuration --------------------------------------------------------------------

def test_default_premium_prefixes_are_art_3_10() -> None:
    config = build_policy_config()
    assert set(config.premium_prefixes) == {
        "+32903", "+32904", "+32905", "+32906", "+32907", "+32909"
    }


def test_default_must_reach_and_emergency_lists(config) -> None:
    assert config.emergency == frozenset({"112", "100", "101"})
    assert config.must_reach == frozenset(
        {
            "112", "100", "101", "+3270245245", "1813", "+3280032123", "+3226499555",
            "102", "103", "104", "106", "107", "108", "110", "116000",
            "+3280030030", "+3280098100", "1712",  # BIPT's current list (numbering.md)
        }
    )
    assert config.restriction_prefix == "#31#"


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"premium_prefixes": ["0905", "09x5"]}, id="bad-premium-prefix"),
        pytest.param({"premium_prefixes": ["905"]}, id="premium-prefix-without-0"),
        pytest.param({"must_reach": ["112", "help"]}, id="bad-must-reach"),
        pytest.param({"emergency": ["11 2a"]}, id="bad-emergency"),
        pytest.param({"restriction_prefix": "*31"}, id="restriction-prefix-ends-in-digit"),
    ],
)
def test_build_policy_config_rejects_bad_entries(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        build_policy_config(**kwargs)  # type: ignore[arg-type]


def test_build_policy_config_emergency_numbers_are_must_reach() -> None:
    config = build_policy_config(emergency=["1717"])
    assert {"1717", "112"} <= config.emergency
    assert {"1717", "112", "1813"} <= config.must_reach


def test_restriction_presentation_recorded_in_decision(decide) -> None:
    decision = decide("#31#09 210 12 35")
    assert decision.restriction_requested
    assert decision.caller_id.presentation is Presentation.RESTRICTED
    assert decision.destination == "+3292101235"
