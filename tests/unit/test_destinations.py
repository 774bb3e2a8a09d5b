"""Where a destination is: EU membership, region traps, premium ranges (art. 3.10).

The region facts are those of shared/reference/numbering.md, for the pinned phonenumbers.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import phonenumbers
import pytest
from phonenumbers import shortnumberinfo

from callpolicy.policy import (
    Action,
    Category,
    Classifier,
    Decision,
    Reason,
    build_policy_config,
    normalise,
)
from callpolicy.policy.destinations import EU_REGIONS, region_of

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def region_in(decision: Decision) -> str | None:
    """The region as reported (to_dict resolves a region the engine left to candidates)."""
    region = decision.to_dict()["region"]
    assert region is None or isinstance(region, str)
    return region


# --- EU-27 ------------------------------------------------------------------------------------

# A real (valid for phonenumbers 9.0.43) fixed and mobile number for each member state.
EU_27 = [
    ("AT", "+431234567890", "+43664123456"),
    ("BG", "+3592123456", "+35943012345"),
    ("HR", "+38512345678", "+385921234567"),
    ("CY", "+35722345678", "+35796123456"),
    ("CZ", "+420212345678", "+420601123456"),
    ("DK", "+4532123456", "+4534412345"),
    ("EE", "+3723212345", "+37251234567"),
    ("FI", "+358912345678", "+358412345678"),
    ("FR", "+33142685300", "+33612345678"),
    ("DE", "+4930123456", "+4915123456789"),
    ("GR", "+302123456789", "+306912345678"),
    ("HU", "+3612345678", "+36201234567"),
    ("IE", "+3532212345", "+353850123456"),
    ("IT", "+390212345678", "+393123456789"),
    ("LV", "+37163123456", "+37121234567"),
    ("LT", "+37031234567", "+37061234567"),
    ("LU", "+35227123456", "+352628123456"),
    ("MT", "+35621001234", "+35696961234"),
    ("NL", "+31101234567", "+31612345678"),
    ("PL", "+48123456789", "+48512345678"),
    ("PT", "+351212345678", "+351912345678"),
    ("RO", "+40211234567", "+40712034567"),
    ("SK", "+421221234567", "+421912123456"),
    ("SI", "+38612345678", "+38631234567"),
    ("ES", "+34810123456", "+34612345678"),
    ("SE", "+468123456", "+46701234567"),
]


def test_eu_27_table_is_complete() -> None:
    assert len({region for region, _, _ in EU_27} | {"BE"}) == 27


@pytest.mark.parametrize(
    ("region", "number"),
    [pytest.param(r, n, id=f"{r}-{kind}") for r, f, m in EU_27 for kind, n in
     (("fixed", f), ("mobile", m))],
)
def test_eu_member_states_are_allowed(decide, region: str, number: str) -> None:
    assert phonenumbers.is_valid_number(phonenumbers.parse(number))  # a real number
    for dialled in (number, "00" + number[1:]):
        decision = decide(dialled)
        assert decision.action is Action.ALLOW, dialled
        assert decision.reason is Reason.ALLOWED
        assert decision.category is Category.EU
        assert region_in(decision) == region
        assert decision.destination == number


@pytest.mark.parametrize(
    ("dialled", "region"),
    [
        pytest.param("+35818123456", "AX", id="aland-short-fixed"),
        pytest.param("+358181234567", "AX", id="aland-fixed"),
        pytest.param("+262262161234", "RE", id="reunion-fixed"),
        pytest.param("+262692123456", "RE", id="reunion-mobile"),
        pytest.param("+262269601234", "YT", id="mayotte-fixed"),
        pytest.param("+262639012345", "YT", id="mayotte-mobile"),
        pytest.param("+594594101234", "GF", id="french-guiana-fixed"),
        pytest.param("+594694201234", "GF", id="french-guiana-mobile"),
        pytest.param("+596596301234", "MQ", id="martinique-fixed"),
        pytest.param("+596696201234", "MQ", id="martinique-mobile"),
        pytest.param("+590690001234", "GP", id="guadeloupe-mobile"),
        pytest.param("+590690301234", "GP", id="guadeloupe-mobile-2"),
        pytest.param("+590590201234", "GP", id="guadeloupe-fixed"),
        pytest.param("+590590071234", "MF", id="saint-martin-fixed-outside-bl-ranges"),
        pytest.param("+34928123456", "ES", id="canaries"),
        pytest.param("+351296123456", "PT", id="azores"),
        pytest.param("+351291123456", "PT", id="madeira"),
        pytest.param("+35722345678", "CY", id="cyprus"),
    ],
)
def test_eu_territories_are_allowed(decide, dialled: str, region: str) -> None:
    decision = decide(dialled)
    assert decision.action is Action.ALLOW
    assert decision.reason is Reason.ALLOWED
    assert decision.category is Category.EU
    assert region_in(decision) == region


# --- outside the EU ---------------------------------------------------------------------------

NON_EU = [
    pytest.param("+441212345678", "GB", id="uk-fixed"),
    pytest.param("+447400123456", "GB", id="uk-mobile"),
    pytest.param("0044 20 7946 0958", "GB", id="uk-london-00"),
    pytest.param("+441481256789", "GG", id="guernsey"),
    pytest.param("+441534456789", "JE", id="jersey"),
    pytest.param("+441624756789", "IM", id="isle-of-man"),
    pytest.param("+41212345678", "CH", id="switzerland"),
    pytest.param("+4721234567", "NO", id="norway"),
    pytest.param("+4232345678", "LI", id="liechtenstein"),
    pytest.param("+3544101234", "IS", id="iceland"),
    pytest.param("+390669812345", "VA", id="vatican-over-39"),
    pytest.param("0039 06 698 12345", "VA", id="vatican-over-0039"),
    pytest.param("+390549123456", "SM", id="san-marino-over-39"),
    pytest.param("0039 0549 886377", "SM", id="san-marino-over-0039"),
    pytest.param("+3780549886377", "SM", id="san-marino-378"),
    pytest.param("+37866661212", "SM", id="san-marino-378-mobile"),
    pytest.param("+37799123456", "MC", id="monaco"),
    pytest.param("+376712345", "AD", id="andorra"),
    pytest.param("+35020012345", "GI", id="gibraltar"),
    pytest.param("+298201234", "FO", id="faroe"),
    pytest.param("+299321000", "GL", id="greenland"),
    pytest.param("+902123456789", "TR", id="turkey"),
    pytest.param("+903922123456", "TR", id="northern-cyprus-90-392"),
    pytest.param("+508430123", "PM", id="saint-pierre-et-miquelon"),
    pytest.param("+68940412345", "PF", id="french-polynesia"),
    pytest.param("+687201234", "NC", id="new-caledonia"),
    pytest.param("+681721234", "WF", id="wallis-and-futuna"),
    pytest.param("+59994351234", "CW", id="curacao"),
    pytest.param("+5997151234", "BQ", id="bonaire"),
    pytest.param("+2975212345", "AW", id="aruba"),
    pytest.param("+17215425678", "SX", id="sint-maarten"),
    pytest.param("+590590271234", "BL", id="saint-barthelemy-fixed-range"),
    pytest.param("+590590331234", "BL", id="saint-barthelemy-fixed-range-2"),
    pytest.param("+12015550123", "US", id="usa"),
    pytest.param("+79123456789", "RU", id="russia"),
    pytest.param("+870301234567", "001", id="inmarsat-870"),
    pytest.param("+881612345678", "001", id="satellite-881"),
    pytest.param("+8823421234", "001", id="international-networks-882"),
    pytest.param("00882 342 1234", "001", id="international-networks-00882"),
    pytest.param("+883510012345", "001", id="international-networks-883"),
]


@pytest.mark.parametrize(("dialled", "region"), NON_EU)
def test_outside_the_eu_is_blocked(decide, dialled: str, region: str) -> None:
    decision = decide(dialled)
    assert decision.action is Action.BLOCK
    assert decision.reason is Reason.NON_EU
    assert decision.category is Category.NON_EU
    assert region_in(decision) == region


@pytest.mark.parametrize(
    "dialled",
    [
        pytest.param("+9991234567", id="999"),
        pytest.param("+2891234567", id="289"),
        pytest.param("+3841234567", id="384"),
        pytest.param("+801234567", id="80"),
        pytest.param("+3791234567", id="379-vatican-reserved"),
        pytest.param("00999 123 4567", id="00999"),
    ],
)
def test_unknown_country_codes_are_blocked(decide, dialled: str) -> None:
    decision = decide(dialled)
    assert decision.action is Action.BLOCK
    assert decision.reason is Reason.NON_EU
    assert decision.category is Category.NON_EU
    assert region_in(decision) is None


def test_eu_regions_are_exactly_eu_territory() -> None:
    eu_27 = {r for r, _, _ in EU_27} | {"BE"}
    assert eu_27 | {"AX", "GP", "GF", "MQ", "YT", "RE", "MF"} == EU_REGIONS
    for not_eu in ("BL", "VA", "SM", "GB", "GG", "JE", "IM", "CH", "NO", "SJ", "FO", "GL",
                   "PM", "PF", "NC", "WF", "CW", "BQ", "AW", "SX", "TR", "001"):
        assert not_eu not in EU_REGIONS


@pytest.mark.parametrize(
    ("e164", "region"),
    [
        pytest.param("+390549123456", "SM", id="san-marino-over-39"),
        pytest.param("+390669812345", "VA", id="vatican"),
        pytest.param("+390612345678", "IT", id="rome"),
        pytest.param("+590590271234", "BL", id="bl-range"),
        pytest.param("+3780549886377", "SM", id="san-marino-378"),
        pytest.param("+9991234567", None, id="unassigned"),
    ],
)
def test_region_of_explicit_rules(e164: str, region: str | None) -> None:
    assert region_of(e164)[0] == region


# --- premium ranges (art. 3.10) ---------------------------------------------------------------

@pytest.mark.parametrize(
    "dialled",
    [
        pytest.param("0903 12 345", id="0903"),
        pytest.param("0904 12 345", id="0904"),
        pytest.param("0905 12 345", id="0905"),
        pytest.param("0906 12 345", id="0906"),
        pytest.param("0907 12 345", id="0907"),
        pytest.param("0909 12 345", id="0909"),
        pytest.param("0905.12.345", id="0905-dots"),
        pytest.param("0032 905 12 345", id="0032-905"),
        pytest.param("0032 9 05 12 345", id="0032-9-05"),
        pytest.param("+32 905 12 345", id="plus32-905"),
        pytest.param("+32903123456", id="plus32-903-over-long"),
        pytest.param("0903123456", id="0903-over-long"),
        pytest.param("0909123456789", id="0909-very-long"),
        pytest.param("#31#0905 12 345", id="0905-with-restriction"),
    ],
)
def test_premium_ranges_are_blocked(decide, dialled: str) -> None:
    decision = decide(dialled)
    assert decision.action is Action.BLOCK
    assert decision.reason is Reason.PREMIUM
    assert decision.category is Category.PREMIUM
    assert region_in(decision) == "BE"


@pytest.mark.parametrize(
    "dialled",
    [
        pytest.param("0900 12 345", id="0900"),
        pytest.param("0901 12 345", id="0901"),
        pytest.param("0902 12 345", id="0902"),
        pytest.param("0908 12 345", id="0908-unassigned"),
        pytest.param("+32 900 12 345", id="plus32-900"),
        pytest.param("070 22 33 44", id="070-premium-not-blocked"),
        pytest.param("0800 12 345", id="0800-freephone"),
        pytest.param("078 15 15 15", id="078-uan"),
        pytest.param("09 210 12 34", id="gent"),
        pytest.param("0475 12 34 56", id="mobile"),
    ],
)
def test_open_belgian_ranges_are_allowed(decide, dialled: str) -> None:
    decision = decide(dialled)
    assert decision.action is Action.ALLOW
    assert decision.reason is Reason.ALLOWED
    assert decision.category is Category.NATIONAL


def test_0090_is_turkey_not_premium(decide) -> None:
    # "0090…" is the international prefix + Turkey, not 090x: blocked as non-EU, not premium.
    decision = decide("0090 312 345 67 89")
    assert (decision.action, decision.reason, region_in(decision)) == (
        Action.BLOCK, Reason.NON_EU, "TR"
    )


def test_premium_by_prefix_not_by_phonenumbers_type() -> None:
    # phonenumbers gives the over-long number type UNKNOWN: a type check would let it through.
    number = phonenumbers.parse("+32903123456")
    assert phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.UNKNOWN
    classifier = Classifier(build_policy_config())
    dest = classifier.classify("+32903123456", False)
    assert dest.category is Category.PREMIUM
    assert dest.premium_prefix == "+32903"


def test_classifier_reports_longest_premium_prefix() -> None:
    classifier = Classifier(build_policy_config(premium_prefixes=("09", "0905", "09051")))
    assert classifier.classify("+3290512345", False).premium_prefix == "+329051"
    assert classifier.classify("+3290522345", False).premium_prefix == "+32905"
    assert classifier.classify("+3290022345", False).premium_prefix == "+329"


# --- emergency and must-reach classification --------------------------------------------------

@pytest.mark.parametrize(
    ("dialled", "category"),
    [
        ("112", Category.EMERGENCY),
        ("100", Category.EMERGENCY),
        ("101", Category.EMERGENCY),
        ("1813", Category.MUST_REACH),
        ("070 245 245", Category.MUST_REACH),
        ("0800 32 123", Category.MUST_REACH),
        ("02 649 95 55", Category.MUST_REACH),
        ("116000", Category.MUST_REACH),
        ("1120", Category.SHORT),
        ("1000", Category.SHORT),
        ("1011", Category.SHORT),
        ("11200", Category.SHORT),
        ("116111", Category.SHORT),
        ("105", Category.SHORT),
        ("109", Category.SHORT),
    ],
    ids=repr,
)
def test_classification_of_short_and_must_reach(config, dialled: str, category: Category) -> None:
    dialled_number = normalise(dialled)
    assert dialled_number.destination is not None
    dest = Classifier(config).classify(dialled_number.destination, dialled_number.short)
    assert dest.category is category


def test_phonenumbers_prefix_match_trap_for_1120() -> None:
    # The fact from numbering.md: phonenumbers' prefix match would call 1120 an emergency
    # number; the policy must not.
    assert shortnumberinfo.connects_to_emergency_number("1120", "BE")
    assert not shortnumberinfo.is_emergency_number("1120", "BE")
    for number in ("112", "100", "101"):
        assert shortnumberinfo.is_emergency_number(number, "BE")


# --- the phonenumbers pin ---------------------------------------------------------------------

def test_phonenumbers_version_is_the_pinned_one() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = [d for d in dependencies if d.replace(" ", "").startswith("phonenumbers==")]
    assert pins, "phonenumbers must be pinned (metadata changes between releases)"
    assert phonenumbers.__version__ == pins[0].split("==", 1)[1]


@pytest.mark.parametrize(
    ("e164", "region"),
    [
        pytest.param("+35818123456", "AX", id="aland"),
        pytest.param("+262262161234", "RE", id="reunion"),
        pytest.param("+262269601234", "YT", id="mayotte"),
        pytest.param("+594694201234", "GF", id="french-guiana"),
        pytest.param("+596696201234", "MQ", id="martinique"),
        pytest.param("+590690001234", "GP", id="590-mobile"),
        pytest.param("+590590271234", "BL", id="590-shared-landline"),
        pytest.param("+390549123456", "IT", id="san-marino-over-39-is-IT"),
        pytest.param("+390669812345", "VA", id="vatican"),
        pytest.param("+8823421234", "001", id="882"),
    ],
)
def test_pinned_metadata_facts(e164: str, region: str) -> None:
    """What the pinned phonenumbers returns; the policy's explicit rules rely on these."""
    assert phonenumbers.region_code_for_number(phonenumbers.parse(e164)) == region
