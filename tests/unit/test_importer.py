"""Import files: every problem reported, one line each; any problem means nothing imported."""

from __future__ import annotations

from pathlib import Path

import pytest

from callpolicy.service.config import load_zones
from callpolicy.store.import_file import read_import_file

ZONES = load_zones()  # the table shipped in the package

GOOD = """
[[customer]]
id = "acme"
name = "ACME BV"
main_number = "09 210 12 34"
numbers = ["+3292101234", "0032 9 210 12 35"]
site_networks = ["192.0.2.7/24"]
verified_forward_targets = ["0475 12 34 56"]
[customer.install_address]
street = "Breebroekstraat"
house_number = "61"
postcode = "9030"
municipality = "Gent"
country = "be"
[[customer.endpoint]]
name = "acme-101"
number = "092101235"
"""


def load(tmp_path: Path, text: str, **kwargs):
    path = tmp_path / "customers.toml"
    path.write_text(text)
    return read_import_file(path, ZONES, **kwargs)


def test_good_file_is_normalised(tmp_path: Path) -> None:
    plan = load(tmp_path, GOOD)
    assert plan.errors == []
    (record,) = plan.records
    assert record.main_number == "+3292101234"
    assert record.numbers == ("+3292101234", "+3292101235")
    assert record.site_networks == ("192.0.2.0/24",)
    assert record.verified_forward_targets == ("+32475123456",)
    assert record.install_address.country == "BE"
    assert record.endpoints[0].number == "+3292101235"
    assert record.status == "active"


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ('id = "acme"', 'id = "ac me"', "id 'ac me' must be"),
        ('name = "ACME BV"', "", "missing name"),
        ('main_number = "09 210 12 34"', 'main_number = "+41441234567"', "not a Belgian number"),
        ('main_number = "09 210 12 34"', 'main_number = "09 210 12 99"',
         "is not one of the customer's numbers"),
        ('"0032 9 210 12 35"', '"09x"', "number '09x' is not a Belgian number"),
        ('["192.0.2.7/24"]', '["192.0.2.300/24"]', "is not a network"),
        ('["192.0.2.7/24"]', '["0.0.0.0/0"]', "'0.0.0.0/0' is too broad (at most /8 for IPv4"),
        ('["192.0.2.7/24"]', '["::/0"]', "'::/0' is too broad"),
        ('["192.0.2.7/24"]', '["10.0.0.0/7"]', "is too broad"),
        ('["0475 12 34 56"]', '["hello"]', "forward target 'hello' is not a number"),
        ('country = "be"', 'country = "NL"', "must be in Belgium"),
        ('postcode = "9030"', 'postcode = "1000"', "is in zone 09, but installation postcode "
                                                  "1000 is in zone 02"),
        ('number = "092101235"', 'number = "092101299"', "endpoint acme-101: number"),
        ('name = "acme-101"', 'name = "acme 101"', "must be 1-64 letters"),
        ("site_networks", "site_network", "unknown keys ['site_network']"),
        ('name = "ACME BV"', 'name = "ACME \u202eVB"', "holds control or formatting"),
        ('name = "ACME BV"', 'name = "ACME\tBV"', "holds control or formatting"),
        ('name = "ACME BV"', 'name = "ACME\u2028BV"', "holds control or formatting"),
        ('street = "Breebroekstraat"', "", "install_address: missing street"),
        ('status', 'status = "gone"\nxstatus', "status must be 'active' or 'suspended'"),
    ],
    ids=lambda v: str(v)[:25],
)
def test_each_problem_is_reported_and_nothing_imported(
        tmp_path: Path, old: str, new: str, error: str) -> None:
    text = GOOD.replace(old, new, 1) if old != "status" else GOOD.replace(
        'name = "ACME BV"', 'name = "ACME BV"\nstatus = "gone"', 1)
    plan = load(tmp_path, text)
    assert plan.records == []
    assert any(error in e for e in plan.errors), plan.errors
    assert all(e.startswith(str(tmp_path)) for e in plan.errors)


def test_a_no_break_space_in_a_name_is_fine(tmp_path: Path) -> None:
    plan = load(tmp_path, GOOD.replace('name = "ACME BV"', 'name = "ACME\u00a0BV"'))
    assert plan.errors == [] and plan.records[0].name == "ACME\u00a0BV"


def test_zone_violation_can_be_accepted_loudly(tmp_path: Path) -> None:
    text = GOOD.replace('postcode = "9030"', 'postcode = "1000"')
    plan = load(tmp_path, text, accept_zone_violations=True)
    assert plan.errors == [] and len(plan.records) == 1
    assert any("accepted with --accept-zone-violations" in w for w in plan.warnings)


def test_duplicates_across_customers(tmp_path: Path) -> None:
    plan = load(tmp_path, GOOD + GOOD)
    assert plan.records == []
    assert any("appears twice" in e for e in plan.errors)
    plan = load(tmp_path, GOOD + GOOD.replace('id = "acme"', 'id = "other"'))
    assert plan.records == []
    assert any("number +3292101234 also listed for 'acme'" in e for e in plan.errors)
    assert any("endpoint 'acme-101' also listed for 'acme'" in e for e in plan.errors)


@pytest.mark.parametrize(
    ("text", "error"),
    [("", "no [[customer]] entries"), ("customer = 3", "no [[customer]] entries"),
     ("[[customer]\n", "not valid TOML"), ("foo = 1\n" + GOOD, "unknown top-level keys"),
     ("customer = [1]", "not a table")],
)
def test_malformed_files(tmp_path: Path, text: str, error: str) -> None:
    plan = load(tmp_path, text)
    assert plan.records == []
    assert any(error in e for e in plan.errors), plan.errors


def test_missing_and_binary_files(tmp_path: Path) -> None:
    assert "no such file" in read_import_file(tmp_path / "nope.toml", ZONES).errors[0]
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert read_import_file(binary, ZONES).errors
    assert "is a directory" in read_import_file(tmp_path, ZONES).errors[0]


def test_numbers_all_refused_are_said_one_by_one_not_as_an_empty_list(tmp_path: Path) -> None:
    plan = load(tmp_path, GOOD.replace('numbers = ["+3292101234", "0032 9 210 12 35"]',
                                       'numbers = ["+41441234567"]'))
    assert any("not a Belgian number" in e for e in plan.errors), plan.errors
    assert not any("numbers is empty" in e for e in plan.errors), plan.errors
    empty = load(tmp_path, GOOD.replace('numbers = ["+3292101234", "0032 9 210 12 35"]',
                                        "numbers = []"))
    assert any("numbers is empty" in e for e in empty.errors), empty.errors
