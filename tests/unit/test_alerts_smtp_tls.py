"""E-mail alerts to a relay that wants TLS and SMTP AUTH: a real aiosmtpd on 127.0.0.1 with a
certificate from a throw-away CA (trustme). The password only ever goes over a TLS connection
whose certificate and name were verified; anything less is a failed delivery, not a plain send."""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from alert_receivers import SmtpSink

from callpolicy.alerts.alerter import senders_for
from callpolicy.alerts.config import Email, parse_alerts, read_password
from callpolicy.alerts.senders import DeliveryError, EmailSender
from callpolicy.service.config_file import ConfigError

PASSWORD = "relay-s3cr3t"
# the SMTPS sink: aiosmtpd does not count implicit TLS as TLS (alert_receivers.SmtpSink)
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def payload(n: int) -> bytes:
    return json.dumps({"id": f"a{n}", "kind": "fraud_limit", "status": "raised", "summary": "s",
                       "severity": "critical", "node": "n", "count": 1, "first_seen": "t",
                       "last_seen": "t"}).encode()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*(names or ("127.0.0.1",))).configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "relay-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def sinks() -> Iterator[list[SmtpSink]]:
    started: list[SmtpSink] = []
    yield started
    for sink in started:
        sink.stop()


def started(sinks: list[SmtpSink], **options: Any) -> SmtpSink:
    sink = SmtpSink(**options).start()
    sinks.append(sink)
    return sink


def channel(tmp_path: Path, port: int, **keys: Any) -> Email:
    table = {"name": "relay", "host": "127.0.0.1", "port": port, "from": "cp@pbx.example",
             "to": ["oncall@example.com"], **keys}
    mail = parse_alerts({"email": [table]}, tmp_path).channels["email:relay"]
    assert isinstance(mail, Email)
    return mail


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_auth_over_verified_tls_delivers(tls: str, ca: trustme.CA, ca_file: Path,
                                               tmp_path: Path, sinks: list[SmtpSink],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    sink = started(sinks, tls=tls, tls_context=server_context(ca), users={"cp": PASSWORD})
    monkeypatch.setenv("CP_TEST_SMTP_PASSWORD", PASSWORD)
    mail = channel(tmp_path, sink.port, username="cp", password_env="CP_TEST_SMTP_PASSWORD",
                   cafile=ca_file.name, **{"starttls" if tls == "starttls" else
                                           "implicit_tls": True})
    [sender] = senders_for(parse_alerts({"email": [{
        "name": "relay", "host": "127.0.0.1", "port": sink.port, "from": "cp@pbx.example",
        "to": ["oncall@example.com"], "username": "cp", "password_env": "CP_TEST_SMTP_PASSWORD",
        "cafile": str(ca_file), "starttls": tls == "starttls",
        "implicit_tls": tls == "implicit"}]}, tmp_path)).values()
    await sender.send("a1", payload(1))
    await EmailSender(mail, PASSWORD).send("a2", payload(2))
    assert sink.logins == [("cp", PASSWORD)] * 2
    assert [m["X-Callpolicy-Alert-Id"] for m in sink.messages] == ["a1", "a2"]


async def test_a_wrong_password_is_a_channel_failure_that_does_not_show_the_password(
        ca: trustme.CA, ca_file: Path, tmp_path: Path, sinks: list[SmtpSink]) -> None:
    sink = started(sinks, tls="starttls", tls_context=server_context(ca), users={"cp": PASSWORD})
    mail = channel(tmp_path, sink.port, username="cp", password_env="X", starttls=True,
                   cafile=str(ca_file))
    with pytest.raises(DeliveryError, match="SMTPAuthenticationError") as caught:
        await EmailSender(mail, "not-the-password").send("a1", payload(1))
    assert not caught.value.content  # the channel's failure: it pauses, the alert waits
    assert "not-the-password" not in str(caught.value)
    assert sink.messages == []


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_an_untrusted_certificate_gets_neither_the_password_nor_the_alert(
        tls: str, tmp_path: Path, sinks: list[SmtpSink]) -> None:
    """The relay's certificate is from a CA the channel does not trust (no cafile: the
    system's CAs): the TLS handshake fails before AUTH."""
    sink = started(sinks, tls=tls, tls_context=server_context(trustme.CA()),
                   users={"cp": PASSWORD})
    mail = channel(tmp_path, sink.port, username="cp", password_env="X",
                   **{"starttls" if tls == "starttls" else "implicit_tls": True})
    with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):
        await EmailSender(mail, PASSWORD).send("a1", payload(1))
    assert sink.logins == [] and sink.messages == []


@pytest.mark.parametrize("tls", ["starttls", "implicit"])
async def test_a_certificate_for_another_name_is_refused(
        tls: str, ca: trustme.CA, ca_file: Path, tmp_path: Path, sinks: list[SmtpSink]) -> None:
    sink = started(sinks, tls=tls, tls_context=server_context(ca, "relay.example"),
                   users={"cp": PASSWORD})
    mail = channel(tmp_path, sink.port, username="cp", password_env="X", cafile=str(ca_file),
                   **{"starttls" if tls == "starttls" else "implicit_tls": True})
    with pytest.raises(DeliveryError, match=r"CERTIFICATE_VERIFY_FAILED.*(IP address|mismatch)"):
        await EmailSender(mail, PASSWORD).send("a1", payload(1))
    assert sink.logins == [] and sink.messages == []


async def test_a_relay_without_starttls_gets_no_plain_text_alert(
        ca_file: Path, tmp_path: Path, sinks: list[SmtpSink]) -> None:
    sink = started(sinks)  # plain SMTP, STARTTLS not offered
    mail = channel(tmp_path, sink.port, starttls=True, cafile=str(ca_file))
    with pytest.raises(DeliveryError, match="STARTTLS extension not supported"):
        await EmailSender(mail).send("a1", payload(1))
    assert sink.messages == []


def test_the_password_is_read_from_its_file_or_variable_and_never_shown(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "relay.password").write_text(PASSWORD + "\n")
    by_file = channel(tmp_path, 587, username="cp", password_file="relay.password",
                      starttls=True)
    assert read_password(by_file) == PASSWORD
    assert PASSWORD not in repr(by_file) and PASSWORD not in repr(senders_for(
        parse_alerts({"email": [{"name": "r", "host": "h", "from": "a@b", "to": ["c@d"],
                                 "username": "cp", "password_file": "relay.password",
                                 "starttls": True}]}, tmp_path)))
    (tmp_path / "relay.password").unlink()
    with pytest.raises(ConfigError, match=r"password_file .*relay.password does not exist"):
        read_password(by_file)
    by_env = channel(tmp_path, 465, username="cp", password_env="CP_TEST_SMTP_PASSWORD",
                     implicit_tls=True)
    monkeypatch.delenv("CP_TEST_SMTP_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match=r"CP_TEST_SMTP_PASSWORD \(password_env\) is not set"):
        read_password(by_env)
    assert read_password(channel(tmp_path, 25)) is None  # no AUTH: nothing to read


def test_implicit_tls_defaults_to_port_465(tmp_path: Path) -> None:
    mail = parse_alerts({"email": [{"name": "r", "host": "h", "from": "a@b", "to": ["c@d"],
                                    "implicit_tls": True}]}, tmp_path).channels["email:r"]
    assert isinstance(mail, Email) and mail.port == 465


@pytest.mark.parametrize(("keys", "message"), [
    ({"username": "cp", "password_env": "P"}, r"username: the password is only sent over TLS"),
    ({"username": "cp", "starttls": True}, r"exactly one of password_file .* or password_env"),
    ({"username": "cp", "starttls": True, "password_env": "P", "password_file": "f"},
     r"exactly one of password_file"),
    ({"password_env": "P", "starttls": True}, r"a password without username"),
    ({"starttls": True, "implicit_tls": True}, r"starttls .* and implicit_tls .* exclude"),
    ({"cafile": "ca.pem"}, r"cafile needs starttls = true or implicit_tls = true"),
    ({"implicit_tls": "yes"}, r"implicit_tls must be a bool"),
    ({"user": "cp"}, r"unknown key alerts.email.user"),
])
def test_config_errors_name_the_key(tmp_path: Path, keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        channel(tmp_path, 25, **keys)


def test_a_missing_ca_file_is_a_one_line_error_at_start(tmp_path: Path) -> None:
    settings = parse_alerts({"email": [{"name": "r", "host": "h", "from": "a@b", "to": ["c@d"],
                                        "starttls": True, "cafile": "nowhere.pem"}]}, tmp_path)
    with pytest.raises(ConfigError, match=r"alerts.email 'r' cafile .*nowhere.pem does not "
                       r"exist") as caught:
        senders_for(settings)
    assert not caught.value.bad_value and "\n" not in str(caught.value)


async def test_a_relay_that_wants_auth_pauses_the_channel_not_one_alert(
        ca: trustme.CA, ca_file: Path, tmp_path: Path, sinks: list[SmtpSink]) -> None:
    """530 to MAIL FROM (no username configured): every alert would get it, so it is the
    channel's failure (it pauses and retries), not this alert's content."""
    sink = started(sinks, tls="starttls", tls_context=server_context(ca), users={"cp": PASSWORD})
    mail = channel(tmp_path, sink.port, starttls=True, cafile=str(ca_file))
    with pytest.raises(DeliveryError, match="530") as caught:
        await EmailSender(mail).send("a1", payload(1))
    assert not caught.value.content and sink.messages == []


async def test_a_message_over_the_relays_size_limit_is_refused_as_content(
        tmp_path: Path, sinks: list[SmtpSink]) -> None:
    sink = started(sinks, data_size_limit=200)
    with pytest.raises(DeliveryError, match="552") as caught:
        await EmailSender(channel(tmp_path, sink.port)).send("a1", payload(1))
    assert caught.value.content  # this alert set aside; the channel's others still go
    assert sink.messages == []


async def test_a_non_ascii_password_is_a_config_error_and_never_shown(
        ca: trustme.CA, ca_file: Path, tmp_path: Path, sinks: list[SmtpSink],
        monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "pässwörd-s3cr3t"
    monkeypatch.setenv("CP_TEST_SMTP_PASSWORD", secret)
    mail = channel(tmp_path, 587, username="cp", password_env="CP_TEST_SMTP_PASSWORD",
                   starttls=True, cafile=str(ca_file))
    with pytest.raises(ConfigError, match="must be ASCII") as caught:
        read_password(mail)
    assert "ä" not in str(caught.value) and "s3cr3t" not in str(caught.value)
    sink = started(sinks, tls="starttls", tls_context=server_context(ca), users={"cp": PASSWORD})
    direct = channel(tmp_path, sink.port, username="cp", password_env="X", starttls=True,
                     cafile=str(ca_file))
    with pytest.raises(DeliveryError) as failed:  # a sender built around the check
        await EmailSender(direct, secret).send("a1", payload(1))
    assert "ä" not in str(failed.value) and "UnicodeEncodeError" in str(failed.value)


def test_a_sender_with_a_username_needs_its_password(tmp_path: Path) -> None:
    mail = channel(tmp_path, 587, username="cp", password_env="X", starttls=True)
    with pytest.raises(ValueError, match="a password goes with a username"):
        EmailSender(mail)


def test_a_ca_file_that_is_not_pem_is_a_bad_value(tmp_path: Path) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    settings = parse_alerts({"email": [{"name": "r", "host": "h", "from": "a@b", "to": ["c@d"],
                                        "starttls": True, "cafile": "garbage.pem"}]}, tmp_path)
    with pytest.raises(ConfigError, match=r"cannot read alerts.email 'r' cafile") as caught:
        senders_for(settings)
    assert caught.value.bad_value
