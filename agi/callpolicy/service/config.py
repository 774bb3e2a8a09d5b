"""The daemon/CLI config file (TOML).

Which file: `--config PATH`, else $CALLPOLICY_CONFIG, else /etc/callpolicy/callpolicy.toml if it
exists, else the repository's config/callpolicy.toml. Relative paths in the file are relative
to the file. Secrets (the AMI secret) may come from the environment instead of the file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from ..policy import FraudLimits, PolicyConfig, build_policy_config
from ..policy.defaults import PREMIUM_PREFIXES, RESTRICTION_PREFIX
from ..policy.model import DEFAULT_CACHE_ENTRIES
from ..policy.zones import ZoneTable
from ..store.url import StoreLocation, StoreURLError, parse_location
from .config_file import ConfigError, read_text, read_toml

SYSTEM_CONFIG = Path("/etc/callpolicy/callpolicy.toml")
#: The zone table shipped with the package (art. 3.8); `[policy] zones_file` replaces it.
PACKAGED_ZONES = "telephone-zones.toml"

#: Every key each section may have: anything else is a typo, refused at start-up, so that
#: `[store] pth = …` cannot silently open a fresh empty database.
SECTIONS: dict[str, tuple[str, ...]] = {
    "store": ("path", "url", "listen"),
    "policy": ("premium_prefixes", "must_reach", "emergency_numbers", "restriction_prefix",
               "zones_file", "cache_entries"),
    "agi": ("listen", "decision_deadline_ms"),
    "ami": ("host", "port", "username", "secret"),
    "fraud": ("max_concurrent", "max_per_minute", "max_concurrent_risky"),
    "calls": ("retention_days",),
    "metrics": ("listen",),
    "log": ("format",),
    "cluster": ("node", "node_timeout"),
    "api": ("host", "port", "tokens"),  # read by api/settings.py (`callpolicy api serve`)
}
#: [policy] cache_entries: entries per decision cache (Classifier: dial strings, caller IDs,
#: classifications, regions); about 0.6 KB per dialled number over all (4096: ~3 MB). The
#: upper bound keeps a typo from costing gigabytes.
MAX_CACHE_ENTRIES = 1_000_000
#: Keys still accepted but no longer used: a warning, not an error (operators have them).
DEPRECATED = {
    ("agi", "decision_deadline_ms"): "the decision is made in memory; the daemon listens "
    "only once it can decide (Asterisk uses the fallback until then)",
}
#: What the fallback AGI needs: a bad line elsewhere ([metrics], [ami]) must not stop it.
FALLBACK_SECTIONS = ("store", "policy")

REPO_CONFIG = Path(__file__).resolve().parents[3] / "config" / "callpolicy.toml"


@dataclass(frozen=True)
class AmiSettings:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = ""
    secret: str = field(default="", repr=False)  # never logged


@dataclass(frozen=True)
class Settings:
    path: Path | None
    db_path: Path  # the SQLite file; with db_url, the local file the call spool sits beside
    policy: PolicyConfig
    zones: ZoneTable
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    ami: AmiSettings = field(default_factory=AmiSettings)
    log_format: str = "auto"
    # [calls]: call records older than this are purged (`callpolicy calls purge`)
    calls_retention_days: int = 180
    # [metrics]: Prometheus /metrics (an IP literal; loopback unless the operator says so)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    warnings: tuple[str, ...] = ()  # deprecated keys…: logged by the daemon at start
    db_url: str | None = None  # [store] url / --db postgresql://…: the shared database
    # [store] listen: on PostgreSQL, changes arrive by LISTEN/NOTIFY (false: by the poll only,
    # e.g. behind a transaction-pooling proxy, where LISTEN does not work)
    db_listen: bool = True
    # [cluster] (PostgreSQL): this daemon's node id (its live calls, its call records), and
    # how long another node's heartbeat may be silent before its live calls stop counting
    node: str = field(default_factory=lambda: default_node())
    node_timeout: float = 5.0

    @property
    def db(self) -> StoreLocation:
        """The store to open (store.open_store): PostgreSQL at db_url, else SQLite."""
        return StoreLocation(None, self.db_url) if self.db_url else StoreLocation(self.db_path)

    def with_db(self, text: str) -> Settings:
        """These settings on the database `text` (--db, relative to the current directory).
        Raises StoreURLError (a ValueError) for a location that is neither."""
        where = parse_location(text)
        if where.url:
            return replace(self, db_url=where.url)
        assert where.path is not None
        return replace(self, db_path=where.path, db_url=None)


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
        # Never echo a secret, whatever its type.
        shown = "a " + type(value).__name__ if "secret" in key else repr(value)[:80]
        raise ConfigError(f"{where}.{key} must be a {kind.__name__}, got {shown}")
    return value


def _store_location(store: dict[str, Any], base: Path) -> tuple[Path, str | None]:
    """[store] path and url, overridden by $CALLPOLICY_DB: (SQLite file, PostgreSQL URL).

    `url` is a path, sqlite:///PATH or postgresql://…; a SQLite `url` replaces `path` (both
    is an error). With a PostgreSQL url, `path` stays the local file (the call spool)."""
    path = base / _get(store, "path", str, "callpolicy.db", "store")
    url = None
    for name, text, relative_to in (
            ("store.url", _get(store, "url", str, "", "store"), base),
            ("CALLPOLICY_DB", os.environ.get("CALLPOLICY_DB", ""), None)):
        if not text:
            continue
        try:
            where = parse_location(text, relative_to)
        except StoreURLError as exc:
            raise ConfigError(f"{name}: {exc}") from exc
        if where.url:
            url = where.url
        else:
            if name == "store.url" and "path" in store:
                raise ConfigError("store.path and a SQLite store.url both name the database: "
                                  "keep one")
            assert where.path is not None
            path, url = where.path, None
    return path, url


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


NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# at least twice the heartbeat interval (1 s, store/postgres/cluster.py): a live node never
# flaps in and out of the count
NODE_TIMEOUT_MIN = 2.0
NODE_TIMEOUT_MAX = 3600.0


def default_node() -> str:
    """The host name, cut to a valid node id ("node" if it has nothing usable)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname().split(".")[0])[:64]
    return name if NODE_ID.fullmatch(name) else "node"


def _cluster(cluster: dict[str, Any]) -> tuple[str, float]:
    node = _get(cluster, "node", str, "", "cluster") or default_node()
    if not NODE_ID.fullmatch(node):
        raise ConfigError(f"cluster.node must be 1-64 letters, digits, '.', '_' or '-' "
                          f"(starting with a letter or digit), got {node[:80]!r}")
    timeout = cluster.get("node_timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise ConfigError(f"cluster.node_timeout must be a number of seconds, "
                          f"got {repr(timeout)[:80]}")
    if not NODE_TIMEOUT_MIN <= timeout <= NODE_TIMEOUT_MAX:
        raise ConfigError(f"cluster.node_timeout must be between {NODE_TIMEOUT_MIN:g} and "
                          f"{NODE_TIMEOUT_MAX:g} seconds, got {timeout}")
    return node, float(timeout)


DEFAULT_FRAUD_LIMITS = FraudLimits(max_concurrent=10, max_per_minute=20, max_concurrent_risky=2)
FRAUD_KEYS = ("max_concurrent", "max_per_minute", "max_concurrent_risky")


def _fraud_limits(fraud: dict[str, Any]) -> FraudLimits:
    values = {}
    for key in FRAUD_KEYS:
        value = _get(fraud, key, int, getattr(DEFAULT_FRAUD_LIMITS, key), "fraud")
        if value < 0:
            raise ConfigError(f"fraud.{key} must be 0 or more, got {value}")
        values[key] = value
    return FraudLimits(**values)


def _parse_zones(text: str, where: str) -> ZoneTable:
    try:
        return ZoneTable.from_mapping(tomllib.loads(text).get("zones", {}))
    except (tomllib.TOMLDecodeError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"zone table {where}: {exc}") from exc


def load_zones(path: Path | None = None) -> ZoneTable:
    """The art. 3.8 zone table: `path`, else the one shipped with the package."""
    if path is None:
        packaged = resources.files("callpolicy").joinpath("data", PACKAGED_ZONES)
        return _parse_zones(packaged.read_text("utf-8"), f"(packaged) {PACKAGED_ZONES}")
    return _parse_zones(read_text(path, "zone table"), str(path))


def load_settings(explicit: str | None = None, *,
                  only: Collection[str] | None = None) -> Settings:
    """The settings from the config file. `only`: read and check just these sections (the
    fallback AGI: a typo in [metrics] must not cost a call its decision); the others keep
    their defaults."""
    path = config_path(explicit)
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        data = read_toml(path, only)
        base = path.resolve().parent
    if only is not None:
        data = {section: table for section, table in data.items() if section in only}
    try:
        return _settings(path, base, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc),
                          bad_value=exc.bad_value) from exc


def _check_sections(data: dict[str, Any]) -> list[str]:
    """Unknown sections and keys are errors; deprecated keys give warnings."""
    warnings = []
    for section, table in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown section [{section}] (expected one of "
                              f"{', '.join(SECTIONS)})")
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table")
        _check_keys(table, SECTIONS[section], section)
        for key in table:
            if (section, key) in DEPRECATED:
                warnings.append(f"{section}.{key} is no longer used and is ignored: "
                                f"{DEPRECATED[section, key]}")
    return warnings


def _policy_config(policy: dict[str, Any], fraud: dict[str, Any]) -> PolicyConfig:
    """The [policy] and [fraud] sections."""
    try:
        policy_config = build_policy_config(
            premium_prefixes=_get(policy, "premium_prefixes", list, list(PREMIUM_PREFIXES),
                                  "policy"),
            # Additions to the regulator's list (callpolicy/data/must-reach.toml).
            must_reach=_get(policy, "must_reach", list, [], "policy"),
            emergency=_get(policy, "emergency_numbers", list, [], "policy"),
            restriction_prefix=_get(policy, "restriction_prefix", str, RESTRICTION_PREFIX,
                                    "policy"),
        )
    except ValueError as exc:
        raise ConfigError(f"[policy] {exc}") from exc
    # Operator-wide fraud limits; a customer's overrides (`callpolicy limits set`) win.
    return replace(policy_config, fraud_limits=_fraud_limits(fraud),
                   cache_entries=_cache_entries(policy))


def _cache_entries(policy: dict[str, Any]) -> int:
    entries = _get(policy, "cache_entries", int, DEFAULT_CACHE_ENTRIES, "policy")
    if not 0 <= entries <= MAX_CACHE_ENTRIES:
        raise ConfigError(f"policy.cache_entries must be between 0 and {MAX_CACHE_ENTRIES}, "
                          f"got {entries}")
    return entries


def _settings(path: Path | None, base: Path, data: dict[str, Any]) -> Settings:
    warnings = _check_sections(data)
    store = data.get("store", {})
    policy = data.get("policy", {})
    agi = data.get("agi", {})
    ami = data.get("ami", {})
    log = data.get("log", {})
    fraud = data.get("fraud", {})
    calls = data.get("calls", {})
    metrics = data.get("metrics", {})

    db_path, db_url = _store_location(store, base)
    policy_config = _policy_config(policy, fraud)
    zones_file = _get(policy, "zones_file", str, "", "policy")
    zones = load_zones(base / zones_file if zones_file else None)

    listen = _get(agi, "listen", str, "127.0.0.1:4573", "agi")
    host, agi_port = _listen(listen, "agi.listen")

    secret = os.environ.get("CALLPOLICY_AMI_SECRET") or _get(ami, "secret", str, "", "ami")
    log_format = _get(log, "format", str, "auto", "log")
    if log_format not in ("auto", "json", "console"):
        raise ConfigError("log.format must be auto, json or console")

    retention = _get(calls, "retention_days", int, 180, "calls")
    if retention < 1:
        raise ConfigError(f"calls.retention_days must be at least 1, got {retention}")
    metrics_host, metrics_port = _listen(
        _get(metrics, "listen", str, "127.0.0.1:9464", "metrics"), "metrics.listen")
    node, node_timeout = _cluster(data.get("cluster", {}))
    return Settings(
        path=path,
        db_path=db_path,
        db_url=db_url,
        db_listen=_get(store, "listen", bool, True, "store"),
        policy=policy_config,
        zones=zones,
        agi_host=host,
        agi_port=agi_port,
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
        warnings=tuple(warnings),
        node=node,
        node_timeout=node_timeout,
    )
