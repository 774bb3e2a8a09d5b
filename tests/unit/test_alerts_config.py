"""The [alerts] section (alerts/config.py), the webhook signature and the back-off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callpolicy.alerts.config import Route, outbox_path, parse_alerts, read_secret
from callpolicy.alerts.delivery import backoff
from callpolicy.alerts.signature import sign, verify
from callpolicy.service.config import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]

GOOD = """
[alerts]
retry_max = 30
[[alerts.webhook]]
name = "ops"
url = "https://hooks.example/callpolicy"
secret_file = "hook.secret"
[[alerts.email]]
name = "oncall"
host = "127.0.0.1"
port = 2525
from = "callpolicy@pbx.example"
to = ["oncall@example.com"]
[alerts.route.fraud_limit]
to = ["webhook:ops", "email:oncall"]
window = 30
[alerts.route.spoofing_attempt]
to = []
"""


def write(tmp_path: Path, text: str) -> Path:
    config = tmp_path / "callpolicy.toml"
    config.write_text(f'[store]\npath = "cp.db"\n{text}')
    return config


def test_a_good_section_and_its_defaults(tmp_path: Path) -> None:
    settings = load_settings(str(write(tmp_path, GOOD)))
    alerts = settings.alerts
    assert list(alerts.channels) == ["webhook:ops", "email:oncall"]
    assert alerts.route("fraud_limit") == Route(("webhook:ops", "email:oncall"), 30.0)
    assert alerts.route("spoofing_attempt") == Route((), 300.0)  # only logged
    # a kind without a route: every channel, its default window (emergency: at once)
    assert alerts.route("emergency_call") == Route(("webhook:ops", "email:oncall"), 0.0)
    assert alerts.retry_max == 30
    assert outbox_path(alerts, settings.db_path) == tmp_path / "cp.db.alerts-outbox.sqlite"


def test_no_section_means_no_channel_and_alerts_only_logged(tmp_path: Path) -> None:
    alerts = load_settings(str(write(tmp_path, ""))).alerts
    assert alerts.channels == {} and alerts.route("fraud_limit") == Route((), 60.0)


@pytest.mark.parametrize(("text", "message"), [
    ("[alerts]\nretries = 3", "unknown key alerts.retries (expected one of outbox,"),
    ("[alerts]\nretry_max = 0", "alerts.retry_max must be between 0.1 and 3600, got 0"),
    ("[alerts]\nretry_max = 'soon'", "alerts.retry_max must be a number, got 'soon'"),
    ("[alerts.webhook]\nname = 'ops'", "alerts.webhook must be written [[alerts.webhook]]"),
    ("[[alerts.webhook]]\nname = 'ops'\nurl = 'ftp://x'\nsecret_env = 'S'",
     "alerts.webhook 'ops'.url must be an http:// or https:// URL, got 'ftp://x'"),
    ("[[alerts.webhook]]\nname = 'ops'\nurl = 'http://x'",
     "alerts.webhook 'ops': give exactly one of secret_file"),
    ("[[alerts.webhook]]\nname = 'ops'\nurl = 'http://x'\nsecret = 'abc'",
     "unknown key alerts.webhook.secret (expected one of name, url, secret_file, secret_env"),
    ("[[alerts.webhook]]\nurl = 'http://x'\nsecret_env = 'S'",
     "alerts.webhook.name is required"),
    ("[[alerts.email]]\nname = 'm'\nhost = 'h'\nfrom = 'a@b'\nto = []",
     "alerts.email 'm'.to must be a non-empty list of e-mail addresses"),
    ("[[alerts.email]]\nname = 'm'\nhost = 'h'\nfrom = 'a@b'\nto = ['c@d']\nport = 99999",
     "alerts.email 'm'.port must be between 1 and 65535, got 99999"),
    ("[alerts.route.fraud]\nto = []", "unknown alert kind [alerts.route.fraud] (expected one of "
                                      "fraud_limit, spoofing_attempt, emergency_call"),
    ("[alerts.route.fraud_limit]\nto = ['webhook:nope']",
     "alerts.route.fraud_limit.to: no channel 'webhook:nope' (configured: none"),
    ("[alerts.route.fraud_limit]\nwindow = -1",
     "alerts.route.fraud_limit.window must be between 0 and 86400, got -1"),
    ("[alerts.route.fraud_limit]\nwindw = 1", "unknown key alerts.route.fraud_limit.windw"),
    ("[[alerts.email]]\nname = 'm'\nhost = 'h'\nfrom = 'a@b'\nto = ['c@d', 'nope']",
     "alerts.email 'm'.to must be a list of e-mail addresses, got 'nope'"),
    ("[alerts.route.ami_link_down]\nwindow = 60",  # a state: a window would be ignored
     "alerts.route.ami_link_down.window: ami_link_down is a state (raised once, resolved once)"),
])
def test_bad_keys_and_values_are_one_line_errors_naming_the_key(tmp_path: Path, text: str,
                                                                message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(str(write(tmp_path, text)))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.bad_value


def test_the_cli_exits_2_on_a_bad_alerts_key_and_other_sections_still_refuse_typos(
        tmp_path: Path) -> None:
    config = write(tmp_path, "[alerts]\nretries = 3\n")
    result = subprocess.run([sys.executable, "-m", "callpolicy.cli", "--config", str(config),
                             "serve"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "alerts.retries" in result.stderr
    with pytest.raises(ConfigError, match=r"unknown section \[alert\] .*alerts"):
        load_settings(str(write(tmp_path, "[alert]\n")))


def test_the_secret_is_read_from_its_file_or_variable_and_never_shown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hook.secret").write_text("s3cr3t-value\n")
    alerts = parse_alerts({"webhook": [{"name": "ops", "url": "http://x",
                                        "secret_file": "hook.secret"}]}, tmp_path)
    hook = alerts.channels["webhook:ops"]
    assert read_secret(hook) == b"s3cr3t-value"
    assert "s3cr3t" not in repr(alerts)
    (tmp_path / "hook.secret").unlink()
    with pytest.raises(ConfigError, match=r"secret_file .*hook.secret does not exist") as caught:
        read_secret(hook)
    assert not caught.value.bad_value  # a missing file: operational, exit 1
    by_env = parse_alerts({"webhook": [{"name": "e", "url": "http://x",
                                        "secret_env": "CP_TEST_HOOK"}]}, tmp_path)
    monkeypatch.delenv("CP_TEST_HOOK", raising=False)
    with pytest.raises(ConfigError, match=r"CP_TEST_HOOK .* is not set"):
        read_secret(by_env.channels["webhook:e"])
    monkeypatch.setenv("CP_TEST_HOOK", "from-env")
    assert read_secret(by_env.channels["webhook:e"]) == b"from-env"


def test_the_production_config_has_no_alert_secret() -> None:
    assert load_settings(str(REPO / "config" / "callpolicy.toml")).alerts.channels == {}


def test_signature_verifies_and_refuses_a_changed_body_key_or_old_timestamp() -> None:
    body = b'{"kind":"fraud_limit"}'
    signature = sign(b"key", 1_700_000_000, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    assert verify(b"key", "1700000000", signature, body, now=1_700_000_010)
    assert not verify(b"key", "1700000000", signature, body + b" ", now=1_700_000_010)
    assert not verify(b"other", "1700000000", signature, body, now=1_700_000_010)
    assert not verify(b"key", "1700000001", signature, body, now=1_700_000_010)
    assert not verify(b"key", "1700000000", signature, body, now=1_700_001_000)  # replayed
    assert not verify(b"key", "soon", signature, body, now=1_700_000_010)


def test_backoff_doubles_from_one_second_up_to_the_cap() -> None:
    assert [backoff(n, 60.0) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff(10_000, 60.0) == 60.0


@given(st.integers(1, 5000), st.floats(0.1, 3600))
def test_backoff_is_never_longer_than_the_cap_and_never_shrinks(failures: int,
                                                                cap: float) -> None:
    assert 0 < backoff(failures, cap) <= cap
    assert backoff(failures + 1, cap) >= backoff(failures, cap)
