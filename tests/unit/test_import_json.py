"""The import as JSON (a file whose name ends in .json): the same document as the TOML one,
the same checks and the same records; JSON's own traps (a key given twice, NaN, a top level
that is not an object, deep nesting) are one-line errors that import nothing."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from cli_runner import REPO, run

from callpolicy.service.config import load_zones
from callpolicy.store.import_file import read_import_file

ZONES = load_zones()
DEMO = REPO / "config" / "demo-customers.toml"


def demo_as_json(tmp_path: Path, name: str = "customers.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(tomllib.loads(DEMO.read_text())))
    return path


def test_the_demo_data_as_json_gives_the_same_records_as_its_toml(tmp_path: Path) -> None:
    from_toml = read_import_file(DEMO, ZONES)
    from_json = read_import_file(demo_as_json(tmp_path), ZONES)
    assert from_toml.errors == [] and from_json.errors == []
    assert from_json.records == from_toml.records and len(from_json.records) == 2
    upper = read_import_file(demo_as_json(tmp_path, "CUSTOMERS.JSON"), ZONES)
    assert upper.records == from_toml.records  # the suffix in any case


def test_a_problem_in_json_is_named_like_in_toml(tmp_path: Path) -> None:
    data = tomllib.loads(DEMO.read_text())
    data["customer"][0]["main_number"] = "+41441234567"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    [error] = read_import_file(path, ZONES).errors
    assert error.startswith(f"{path}: customer #1 (") and "not a Belgian number" in error


@pytest.mark.parametrize(("text", "error"), [
    ('{"customer": [{"id": "a", "id": "b"}]}',
     "not valid JSON: key 'id' given twice in one object, in customer #1"),
    ('{"customer": [{"id": "a"}, {"id": "b", "install_address": {"street": "x", '
     '"street": "y"}}]}', "key 'street' given twice in one object, in customer #2"),
    ('{"customer": [], "customer": []}', "key 'customer' given twice in one object, at the top "
                                        "level"),
    ('{"customer": [{"id": NaN}]}', "not valid JSON: NaN is not a value an import takes"),
    ('[{"id": "acme"}]', 'not valid JSON: the document must be an object {"customer"'),
    ('{"customer": [', "not valid JSON: Expecting value: line 1 column 15"),
    ("[" * 100_000 + "]" * 100_000, "not valid JSON: nested too deeply"),
    ('{"customer": 1' + "0" * 5000 + "}", "not valid JSON: nested too deeply or a number too long"),
    ('{"customer": []}', "no [[customer]] entries"),
])
def test_json_traps_are_one_line_errors(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "customers.json"
    path.write_text(text)
    plan = read_import_file(path, ZONES)
    assert plan.records == [] and len(plan.errors) == 1, plan.errors
    assert error in plan.errors[0] and "\n" not in plan.errors[0]


def test_the_cli_imports_json_and_a_retry_changes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "callpolicy.toml"
    config.write_text('[store]\npath = "cp.db"\n')
    path = demo_as_json(tmp_path)
    first = run("customer", "import", str(path), "--by", "tests", "--ticket", "T-1",
                config=config)
    assert first.returncode == 0, first.stderr
    assert " created" in first.stdout and "0 created" not in first.stdout
    again = run("customer", "import", str(path), "--by", "tests", "--ticket", "T-2",
                config=config)
    assert again.returncode == 0 and "0 created" in again.stdout, again.stdout
    shown = run("customer", "show", "acme", config=config)
    assert shown.returncode == 0 and "ACME" in shown.stdout
    path.write_text('{"customer": [{"id": "x", "id": "y"}]}')
    refused = run("customer", "import", str(path), "--by", "tests", "--ticket", "T-3",
                  config=config)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "key 'id' given twice" in refused.stderr
