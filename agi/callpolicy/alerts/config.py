"""The `[alerts]` section of the config file (README: Alerts): channels, routes, outbox.

Parsed with the rest of the config (a bad key is a one-line error naming it); secrets are
only named here (`secret_file` / `secret_env`, `password_file` / `password_env`) and read
when the daemon starts (`read_secret`, `read_password`), so that other commands never need
them and nothing prints them."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..service.config_file import ConfigError, read_text
from .kinds import DEFAULT_WINDOWS, KINDS, STATE_KINDS

OUTBOX_SUFFIX = ".alerts-outbox.sqlite"
MAX_WINDOW = 86400.0  # s: a day of aggregation at most
DEFAULT_RETRY_MAX = 60.0  # s: the longest pause between two delivery attempts
DEFAULT_GIVE_UP_AFTER = 172800.0  # s: an undelivered alert is kept two days, then expired
DEFAULT_OUTBOX_ROWS = 10_000

_TOP = ("outbox", "outbox_max_rows", "retry_max", "give_up_after", "webhook", "email", "route")
_WEBHOOK = ("name", "url", "secret_file", "secret_env", "timeout")
_EMAIL = ("name", "host", "port", "from", "to", "starttls", "implicit_tls", "cafile",
          "username", "password_file", "password_env", "timeout")
_ROUTE = ("to", "window")


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    secret_file: Path | None = None
    secret_env: str | None = None
    timeout: float = 5.0

    @property
    def ref(self) -> str:
        return f"webhook:{self.name}"


@dataclass(frozen=True)
class Email:
    name: str
    host: str
    port: int = 25
    sender: str = ""
    to: tuple[str, ...] = ()
    starttls: bool = False
    timeout: float = 10.0
    implicit_tls: bool = False  # SMTPS (port 465): TLS from the first byte
    cafile: Path | None = None  # the relay's CA when not a public one (else the system's)
    username: str | None = None  # SMTP AUTH, only ever over a verified TLS connection
    password_file: Path | None = None
    password_env: str | None = None

    @property
    def ref(self) -> str:
        return f"email:{self.name}"

    @property
    def tls(self) -> bool:
        return self.starttls or self.implicit_tls


Channel = Webhook | Email


@dataclass(frozen=True)
class Route:
    to: tuple[str, ...]  # channel refs "webhook:<name>", "email:<name>"
    window: float  # s (event kinds)


@dataclass(frozen=True)
class AlertSettings:
    outbox: Path | None = None  # None: next to the database (outbox_path)
    outbox_max_rows: int = DEFAULT_OUTBOX_ROWS
    retry_max: float = DEFAULT_RETRY_MAX
    give_up_after: float = DEFAULT_GIVE_UP_AFTER
    channels: Mapping[str, Channel] = field(default_factory=dict)  # by ref
    routes: Mapping[str, Route] = field(default_factory=dict)  # by kind, every kind

    def route(self, kind: str) -> Route:
        return self.routes.get(kind) or Route(tuple(self.channels), DEFAULT_WINDOWS[kind])


def outbox_path(settings: AlertSettings, db_path: Path) -> Path:
    """The outbox's SQLite file: `[alerts] outbox`, else beside the database (like the call
    spool): a local file, never the policy database, which may be what is down."""
    return settings.outbox or db_path.with_name(db_path.name + OUTBOX_SUFFIX)


def read_secret(hook: Webhook) -> bytes:
    """The webhook's HMAC key (ConfigError naming where it should be, never the value)."""
    return _read_secret(f"alerts.webhook {hook.name!r}", "secret", hook.secret_env,
                        hook.secret_file).encode()


def read_password(mail: Email) -> str | None:
    """The e-mail channel's SMTP AUTH password (None: no AUTH configured)."""
    if mail.username is None:
        return None
    where = f"alerts.email {mail.name!r}"
    password = _read_secret(where, "password", mail.password_env, mail.password_file)
    if not (mail.username + password).isascii():  # what SMTP AUTH carries (smtplib: ASCII)
        raise ConfigError(f"{where}: username and password must be ASCII for SMTP AUTH",
                          bad_value=False)
    return password


def _read_secret(where: str, what: str, env: str | None, file: Path | None) -> str:
    if env is not None:
        value = os.environ.get(env, "")
        if not value:
            raise ConfigError(f"{where}: environment variable {env} ({what}_env) "
                              "is not set", bad_value=False)
        return value
    assert file is not None
    value = read_text(file, f"{where} {what}_file").strip()
    if not value:
        raise ConfigError(f"{where}: {what}_file {file} is empty")
    return value


def parse_alerts(table: Any, base: Path) -> AlertSettings:
    """`[alerts]` as read from the file; relative paths are relative to `base`."""
    if not isinstance(table, dict):
        raise ConfigError("[alerts] must be a table")
    _keys(table, _TOP, "alerts")
    channels: dict[str, Channel] = {}
    for hook in _tables(table, "webhook"):
        _add(channels, _webhook(hook, base))
    for mail in _tables(table, "email"):
        _add(channels, _email(mail, base))
    routes = _routes(table.get("route", {}), channels)
    outbox = _value(table, "outbox", str, "", "alerts")
    return AlertSettings(
        outbox=base / outbox if outbox else None,
        outbox_max_rows=_bounded(table, "outbox_max_rows", DEFAULT_OUTBOX_ROWS, 100, 10_000_000,
                                 "alerts", int),
        retry_max=_bounded(table, "retry_max", DEFAULT_RETRY_MAX, 0.1, 3600.0, "alerts"),
        give_up_after=_bounded(table, "give_up_after", DEFAULT_GIVE_UP_AFTER, 60.0,
                               30 * 86400.0, "alerts"),
        channels=channels, routes=routes)


def _keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"unknown key {where}.{key} (expected one of "
                              f"{', '.join(allowed)})")


def _value(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any,
           where: str) -> Any:
    value = table.get(key, default)
    if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "number"
        raise ConfigError(f"{where}.{key} must be a {names}, got {value!r}")
    return value


def _bounded(table: Mapping[str, Any], key: str, default: float, low: float, high: float,
             where: str, kind: type | tuple[type, ...] = (int, float)) -> Any:
    value = _value(table, key, kind, default, where)
    if not low <= value <= high:
        raise ConfigError(f"{where}.{key} must be between {low:g} and {high:g}, got {value}")
    return value


def _text(table: Mapping[str, Any], key: str, where: str) -> str:
    value = _value(table, key, str, "", where)
    if not value.strip():
        raise ConfigError(f"{where}.{key} is required (non-empty text)")
    return value.strip()


def _tables(table: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    found = table.get(key, [])
    if not isinstance(found, list) or not all(isinstance(t, dict) for t in found):
        raise ConfigError(f"alerts.{key} must be written [[alerts.{key}]] (a list of tables)")
    return found


def _add(channels: dict[str, Channel], channel: Channel) -> None:
    if channel.ref in channels:
        raise ConfigError(f"two channels named {channel.ref}")
    channels[channel.ref] = channel


def _webhook(hook: dict[str, Any], base: Path) -> Webhook:
    _keys(hook, _WEBHOOK, "alerts.webhook")
    name = _text(hook, "name", "alerts.webhook")
    where = f"alerts.webhook {name!r}"
    url = _text(hook, "url", where)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}.url must be an http:// or https:// URL, got {url!r}")
    secret_file = _value(hook, "secret_file", str, "", where)
    secret_env = _value(hook, "secret_env", str, "", where)
    if bool(secret_file) == bool(secret_env):
        raise ConfigError(f"{where}: give exactly one of secret_file (a file holding the HMAC "
                          "key) or secret_env (an environment variable holding it)")
    return Webhook(name, url, base / secret_file if secret_file else None, secret_env or None,
                   _bounded(hook, "timeout", 5.0, 0.1, 60.0, where))


def _email(mail: dict[str, Any], base: Path) -> Email:
    _keys(mail, _EMAIL, "alerts.email")
    name = _text(mail, "name", "alerts.email")
    where = f"alerts.email {name!r}"
    to = _value(mail, "to", list, [], where)
    if not to:
        raise ConfigError(f"{where}.to must be a non-empty list of e-mail addresses")
    for address in to:
        if not (isinstance(address, str) and "@" in address):
            raise ConfigError(f"{where}.to must be a list of e-mail addresses, got {address!r}")
    sender = _text(mail, "from", where)
    if "@" not in sender:
        raise ConfigError(f"{where}.from must be an e-mail address, got {sender!r}")
    starttls = _value(mail, "starttls", bool, False, where)
    implicit_tls = _value(mail, "implicit_tls", bool, False, where)
    if starttls and implicit_tls:
        raise ConfigError(f"{where}: starttls (upgrade, port 587) and implicit_tls (SMTPS, "
                          "port 465) exclude each other")
    cafile = _value(mail, "cafile", str, "", where)
    if cafile and not (starttls or implicit_tls):
        raise ConfigError(f"{where}.cafile needs starttls = true or implicit_tls = true")
    username = _value(mail, "username", str, "", where).strip()
    password_file = _value(mail, "password_file", str, "", where)
    password_env = _value(mail, "password_env", str, "", where)
    if username:
        if bool(password_file) == bool(password_env):
            raise ConfigError(f"{where}: with username, give exactly one of password_file (a "
                              "file holding the password) or password_env (an environment "
                              "variable holding it)")
        if not (starttls or implicit_tls):
            raise ConfigError(f"{where}.username: the password is only sent over TLS; set "
                              "starttls = true (port 587) or implicit_tls = true (port 465)")
    elif password_file or password_env:
        raise ConfigError(f"{where}: a password without username")
    return Email(name, _text(mail, "host", where),
                 _bounded(mail, "port", 465 if implicit_tls else 25, 1, 65535, where, int),
                 sender, tuple(to), starttls,
                 _bounded(mail, "timeout", 10.0, 0.1, 120.0, where),
                 implicit_tls=implicit_tls, cafile=base / cafile if cafile else None,
                 username=username or None,
                 password_file=base / password_file if password_file else None,
                 password_env=password_env or None)


def _routes(table: Any, channels: Mapping[str, Channel]) -> dict[str, Route]:
    if not isinstance(table, dict):
        raise ConfigError("alerts.route must be a table of [alerts.route.<kind>] tables")
    routes = {}
    for kind, route in table.items():
        if kind not in KINDS:
            raise ConfigError(f"unknown alert kind [alerts.route.{kind}] (expected one of "
                              f"{', '.join(KINDS)})")
        where = f"alerts.route.{kind}"
        if not isinstance(route, dict):
            raise ConfigError(f"[{where}] must be a table")
        _keys(route, _ROUTE, where)
        if kind in STATE_KINDS and "window" in route:
            raise ConfigError(f"{where}.window: {kind} is a state (raised once, resolved "
                              "once), not counted in a window; remove it")
        to = _value(route, "to", list, list(channels), where)
        for ref in to:
            if ref not in channels:
                raise ConfigError(f"{where}.to: no channel {ref!r} (configured: "
                                  f"{', '.join(channels) or 'none'}; write webhook:<name> "
                                  "or email:<name>)")
        routes[kind] = Route(tuple(dict.fromkeys(to)),
                             float(_bounded(route, "window", DEFAULT_WINDOWS[kind], 0.0,
                                            MAX_WINDOW, where)))
    return routes
