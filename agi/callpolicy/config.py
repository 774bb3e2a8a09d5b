"""The daemon/CLI config file (TOML).

Which file: `--config PATH`, else $CALLPOLICY_CONFIG, else /etc/callpolicy/callpolicy.toml if it
exists, else the repository's config/callpolicy.toml. Relative paths in the file are relative
to the file. Secrets (the AMI secret) may come from the environment instead of the file.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .policy import FraudLimits, PolicyConfig, build_policy_config
from .policy.defaults import (
    EMERGENCY_NUMBERS,
    MUST_REACH_NUMBERS,
    PREMIUM_PREFIXES,
    RESTRICTION_PREFIX,
)
from .policy.zones import ZoneTable

SYSTEM_CONFIG = Path("/etc/callpolicy/callpolicy.toml")
REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "callpolicy.toml"


class ConfigError(Exception):
    """A config problem, with a message naming the file and the key."""


@dataclass(frozen=True)
class AmiSettings:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = ""
    secret: str = field(default="", repr=False)  # never logged


@dataclass(frozen=True)
class Settings:
    path: Path | None
    db_path: Path
    policy: PolicyConfig
    zones: ZoneTable
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    decision_deadline_ms: int = 200
    ami: AmiSettings = field(default_factory=AmiSettings)
    log_format: str = "auto"
    # [calls]: call records older than this are purged (`callpolicy calls purge`)
    calls_retention_days: int = 180
    # [metrics]: Prometheus /metrics (an IP literal; loopback unless the operator says so)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464


def config_path(explicit: str | None = None) -> Path | None:
    if explicit:
        return Path(explicit)
    if os.environ.get("CALLPOLICY_CONFIG"):
        return Path(os.environ["CALLPOLICY_CONFIG"])
    for candidate in (SYSTEM_CONFIG, REPO_CONFIG):
        if candidate.exists():
            return candidate
    return None


def _get(table: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = table.get(key, default)
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}.{key} must be a list of strings")
        return value
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise ConfigError(f"{where}.{key} must be a {kind.__name__}, got {value!r}")
    return value


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    """A typo in a limit must not silently leave the default in force."""
    for key in table:
        if key not in allowed:
            raise ConfigError(f"unknown key {where}.{key} (expected one of {', '.join(allowed)})")


def _listen(text: str, where: str) -> tuple[str, int]:
    """'127.0.0.1:9464' or '[::1]:9464' -> (host, port); the host must be an IP literal."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError as exc:
        raise ConfigError(f"{where} must be IP:PORT (an IP literal), got {text!r}") from exc
    if not 0 <= number <= 65535:
        raise ConfigError(f"{where}: port {number} is not between 0 and 65535")
    return host, number


DEFAULT_FRAUD_LIMITS = FraudLimits(max_concurrent=10, max_per_minute=20, max_concurrent_risky=2)
FRAUD_KEYS = ("max_concurrent", "max_per_minute", "max_concurrent_risky")


def _fraud_limits(fraud: dict[str, Any]) -> FraudLimits:
    _check_keys(fraud, FRAUD_KEYS, "fraud")
    values = {}
    for key in FRAUD_KEYS:
        value = _get(fraud, key, int, getattr(DEFAULT_FRAUD_LIMITS, key), "fraud")
        if value < 0:
            raise ConfigError(f"fraud.{key} must be 0 or more, got {value}")
        values[key] = value
    return FraudLimits(**values)


def load_zones(path: Path) -> ZoneTable:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
        return ZoneTable.from_mapping(data.get("zones", {}))
    except FileNotFoundError as exc:
        raise ConfigError(f"zone table {path} does not exist") from exc
    except (tomllib.TOMLDecodeError, ValueError, TypeError) as exc:
        raise ConfigError(f"zone table {path}: {exc}") from exc


def load_settings(explicit: str | None = None) -> Settings:
    path = config_path(explicit)
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        base = path.resolve().parent
    try:
        return _settings(path, base, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from exc


def _settings(path: Path | None, base: Path, data: dict[str, Any]) -> Settings:
    for section in data:
        if section not in ("store", "policy", "agi", "ami", "log", "fraud", "calls", "metrics"):
            raise ConfigError(f"unknown section [{section}]")
    store = data.get("store", {})
    policy = data.get("policy", {})
    agi = data.get("agi", {})
    ami = data.get("ami", {})
    log = data.get("log", {})
    fraud = data.get("fraud", {})
    calls = data.get("calls", {})
    metrics = data.get("metrics", {})

    db = _get(store, "path", str, "callpolicy.db", "store")
    db_path = Path(os.environ.get("CALLPOLICY_DB") or (base / db))
    try:
        policy_config = build_policy_config(
            premium_prefixes=_get(policy, "premium_prefixes", list, list(PREMIUM_PREFIXES),
                                  "policy"),
            must_reach=_get(policy, "must_reach", list, list(MUST_REACH_NUMBERS), "policy"),
            emergency=_get(policy, "emergency_numbers", list, list(EMERGENCY_NUMBERS),
                           "policy"),
            restriction_prefix=_get(policy, "restriction_prefix", str, RESTRICTION_PREFIX,
                                    "policy"),
        )
    except ValueError as exc:
        raise ConfigError(f"[policy] {exc}") from exc
    # Operator-wide fraud limits; a customer's overrides (`callpolicy limits set`) win.
    policy_config = replace(policy_config, fraud_limits=_fraud_limits(fraud))
    zones_file = _get(policy, "zones_file", str, "", "policy")
    default_zones = Path(__file__).resolve().parents[2] / "config" / "telephone-zones.toml"
    zones = load_zones(base / zones_file) if zones_file else (
        load_zones(default_zones) if default_zones.exists() else ZoneTable({}))

    listen = _get(agi, "listen", str, "127.0.0.1:4573", "agi")
    host, agi_port = _listen(listen, "agi.listen")
    deadline = _get(agi, "decision_deadline_ms", int, 200, "agi")
    if not 10 <= deadline <= 2000:
        raise ConfigError("agi.decision_deadline_ms must be between 10 and 2000 "
                          "(Asterisk waits forever for an answer; keep it well under 2 s)")

    secret = os.environ.get("CALLPOLICY_AMI_SECRET") or _get(ami, "secret", str, "", "ami")
    log_format = _get(log, "format", str, "auto", "log")
    if log_format not in ("auto", "json", "console"):
        raise ConfigError("log.format must be auto, json or console")

    _check_keys(calls, ("retention_days",), "calls")
    retention = _get(calls, "retention_days", int, 180, "calls")
    if retention < 1:
        raise ConfigError(f"calls.retention_days must be at least 1, got {retention}")
    _check_keys(metrics, ("listen",), "metrics")
    metrics_host, metrics_port = _listen(
        _get(metrics, "listen", str, "127.0.0.1:9464", "metrics"), "metrics.listen")
    return Settings(
        path=path,
        db_path=db_path,
        policy=policy_config,
        zones=zones,
        agi_host=host,
        agi_port=agi_port,
        decision_deadline_ms=deadline,
        ami=AmiSettings(
            host=_get(ami, "host", str, "127.0.0.1", "ami"),
            port=_get(ami, "port", int, 5038, "ami"),
            username=_get(ami, "username", str, "", "ami"),
            secret=secret,
        ),
        log_format=log_format,
        calls_retention_days=retention,
        metrics_host=metrics_host,
        metrics_port=metrics_port,
    )
