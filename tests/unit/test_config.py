"""The config file: every unknown key is an error naming it; the fallback reads only what a
decision needs; deprecated keys warn; secrets are never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from callpolicy.service.config import FALLBACK_SECTIONS, SECTIONS, ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "callpolicy.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_a_typo_in_any_section_is_an_error_naming_the_key(tmp_path: Path,
                                                          section: str) -> None:
    path = write(tmp_path, f"[{section}]\npth = 1\n")
    with pytest.raises(ConfigError, match=rf"unknown key {section}\.pth \(expected one of"):
        load_settings(str(path))


def test_store_pth_no_longer_opens_a_fresh_database(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\npth = "/var/lib/callpolicy/callpolicy.db"\n')
    with pytest.raises(ConfigError, match=r"store\.pth"):
        load_settings(str(path))


def test_an_unknown_section_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[polcy\]"):
        load_settings(str(write(tmp_path, "[polcy]\n")))


def test_a_section_that_is_not_a_table_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[store\] must be a table"):
        load_settings(str(write(tmp_path, 'store = "x"\n')))


def test_the_shipped_configs_load_without_warnings() -> None:
    for name in ("callpolicy.toml", "demo.toml"):
        settings = load_settings(str(REPO / "config" / name))
        assert settings.warnings == (), name
        assert settings.zones.by_postcode[9030] == "09"  # the packaged zone table


def test_decision_deadline_ms_is_accepted_with_a_warning(tmp_path: Path) -> None:
    settings = load_settings(str(write(tmp_path, "[agi]\ndecision_deadline_ms = 200\n")))
    assert len(settings.warnings) == 1
    assert "agi.decision_deadline_ms is no longer used" in settings.warnings[0]


def test_the_fallback_ignores_a_bad_value_in_metrics_and_ami(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\npath = "x.db"\n[metrics]\nlisten = "nonsense"\n'
                           '[ami]\nport = "5038"\nsecrte = 1\n')
    with pytest.raises(ConfigError):
        load_settings(str(path))
    settings = load_settings(str(path), only=FALLBACK_SECTIONS)
    assert settings.db_path == tmp_path / "x.db"


def test_the_fallback_survives_a_syntax_error_in_another_section(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\npath = "x.db"\n[ami]\nsecret = oops no quotes\n'
                           '[policy]\nmust_reach = [\n  "0800 12 345",\n]\n'
                           '[metrics]\nlisten = [[[\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(str(path))
    settings = load_settings(str(path), only=FALLBACK_SECTIONS)
    assert settings.db_path == tmp_path / "x.db"
    assert "+3280012345" in settings.policy.must_reach


@pytest.mark.parametrize("text", [
    '[store]\npath = x.db\n',  # in a section the fallback needs
    'this is not toml [\n[store]\npath = "x.db"\n',  # before any section
    '[store]\npath = "x.db"\n[metrics\nlisten = "127.0.0.1:9464"\n',  # a broken header
], ids=["store", "root", "header"])
def test_a_syntax_error_the_fallback_cannot_set_aside_is_still_an_error(
        tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(str(write(tmp_path, text)), only=FALLBACK_SECTIONS)


@pytest.mark.parametrize("value", ["987654321", "true", "[1, 2]", "{ a = 1 }"])
def test_a_secret_of_the_wrong_type_is_never_echoed(tmp_path: Path, value: str) -> None:
    path = write(tmp_path, f"[ami]\nsecret = {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    assert "ami.secret must be a str" in str(caught.value)
    assert value not in str(caught.value) and "987654321" not in str(caught.value)


def test_zones_file_naming_a_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "zones").mkdir()
    path = write(tmp_path, '[policy]\nzones_file = "zones"\n')
    with pytest.raises(ConfigError, match=r"cannot read zone table .*zones"):
        load_settings(str(path))


def test_deeply_nested_toml_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, "x = " + "[" * 100_000 + "\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(str(path))


def test_a_5000_digit_integer_is_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[fraud]\nmax_concurrent = 1" + "0" * 5000 + "\n")
    with pytest.raises(ConfigError, match="not valid TOML: a number too long to read"):
        load_settings(str(path))


def test_cluster_node_and_timeout(tmp_path: Path) -> None:
    settings = load_settings(str(write(tmp_path, '[cluster]\nnode = "pbx-a"\n'
                                                 "node_timeout = 7.5\n")))
    assert (settings.node, settings.node_timeout) == ("pbx-a", 7.5)
    default = load_settings(str(write(tmp_path, "")))
    assert default.node and default.node_timeout == 5.0  # the host name, 5 s


@pytest.mark.parametrize(("text", "message"), [
    ('node = "pbx a"', r"cluster\.node must be 1-64 letters"),
    ('node = "-x"', r"cluster\.node must be 1-64 letters"),
    (f'node = "{"n" * 65}"', r"cluster\.node must be 1-64 letters"),
    ("node = 3", r"cluster\.node must be a str"),
    ("node_timeout = 1", r"cluster\.node_timeout must be between 2 and 3600 seconds, got 1"),
    ('node_timeout = "5"', r"cluster\.node_timeout must be a number of seconds"),
    ("node_timeout = true", r"cluster\.node_timeout must be a number of seconds"),
])
def test_a_bad_cluster_value_is_a_one_line_error(tmp_path: Path, text: str,
                                                 message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(str(write(tmp_path, f"[cluster]\n{text}\n")))
