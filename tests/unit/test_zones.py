"""Art. 3.8: installation address in Belgium, geographic numbers in its telephone zone."""

from __future__ import annotations

import pytest

from callpolicy.policy import Address
from callpolicy.policy.zones import ZoneTable, check_installation
from callpolicy.service.config import load_zones


@pytest.fixture(scope="module")
def table() -> ZoneTable:
    return load_zones()  # the table shipped in the package


def address(postcode: str, country: str = "BE") -> Address:
    return Address("Straat", "1", postcode, "Ergens", country)


@pytest.mark.parametrize(
    ("postcode", "zone"),
    [("1000", "02"), ("1210", "02"), ("2000", "03"), ("2060", "03"), ("9000", "09"),
     ("9030", "09"), ("9052", "09"), ("8000", "050"), ("8380", "050"),
     ("2200", "014"), ("2800", "015")],
)
def test_shipped_table_has_the_sourced_zones(table: ZoneTable, postcode: str, zone: str) -> None:
    assert table.zone_of(postcode) == zone


@pytest.mark.parametrize("postcode", ["1211", "2010", "9033", "9999", "abcd", ""])
def test_no_guessing_by_first_digits(table: ZoneTable, postcode: str) -> None:
    assert table.zone_of(postcode) is None


def test_number_in_zone_passes(table: ZoneTable) -> None:
    check = check_installation(address("9030"), ["+3292101234", "+32475123456"], table)
    assert (check.address_errors, check.zone_violations, check.warnings) == ([], [], [])


def test_number_outside_zone_is_a_violation(table: ZoneTable) -> None:
    check = check_installation(address("9030"), ["+3225551234"], table)
    assert check.zone_violations == [
        "geographic number 025551234 is in zone 02, but installation postcode 9030 is in "
        "zone 09 (art. 3.8)"
    ]


def test_herentals_is_not_antwerp(table: ZoneTable) -> None:
    """2200 Herentals starts with 2 but is zone 014, not 03."""
    assert check_installation(address("2200"), ["+3232123456"], table).zone_violations
    assert not check_installation(address("2200"), ["+3214123456"], table).zone_violations


def test_unknown_postcode_warns_instead_of_rejecting(table: ZoneTable) -> None:
    check = check_installation(address("9830"), ["+3292101234"], table)
    assert check.zone_violations == [] and check.address_errors == []
    assert "not verified" in check.warnings[0]


def test_mobiles_and_non_geographic_numbers_are_not_zone_checked(table: ZoneTable) -> None:
    check = check_installation(address("9830"), ["+32475123456", "+3270245245"], table)
    assert check.warnings == []


@pytest.mark.parametrize("country", ["NL", "FR", "be "])
def test_address_outside_belgium_is_refused(table: ZoneTable, country: str) -> None:
    check = check_installation(address("9030", country), [], table)
    assert "must be in Belgium" in check.address_errors[0]


@pytest.mark.parametrize("postcode", ["0999", "903", "90300", "B-9030"])
def test_malformed_postcode_is_refused(table: ZoneTable, postcode: str) -> None:
    assert check_installation(address(postcode), [], table).address_errors


@pytest.mark.parametrize(
    ("data", "message"),
    [({"2": ["1000"]}, "not a Belgian zone"), ({"02": ["1000-999"]}, "postcode range"),
     ({"02": ["1000"], "03": ["1000"]}, "in zones 02 and 03"), ({"02": ["x"]}, "not a postcode")],
)
def test_bad_zone_data_is_refused(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ZoneTable.from_mapping(data)
