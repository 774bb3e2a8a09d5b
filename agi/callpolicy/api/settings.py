"""The `[api]` section of the config file: where `callpolicy api serve` listens and which
token file it trusts.

```toml
[api]
host = "127.0.0.1"   # an IP literal; loopback by default (a TLS proxy in front: README)
port = 8480
tokens = "/etc/callpolicy/api-tokens.toml"   # relative to the config file
```
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..service.config import Settings
from ..service.config_file import ConfigError, read_toml

__all__ = ["DEFAULT_PORT", "ApiSettings", "load_api_settings"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8480
DEFAULT_TOKENS = "api-tokens.toml"


@dataclass(frozen=True, slots=True)
class ApiSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tokens: Path = Path(DEFAULT_TOKENS)


def load_api_settings(settings: Settings) -> ApiSettings:
    """[api] of the config file `settings` came from (the defaults without a file); the
    other sections were checked by load_settings."""
    if settings.path is None:
        return ApiSettings(tokens=Path.cwd() / DEFAULT_TOKENS)
    base = settings.path.resolve().parent
    try:
        return _api(read_toml(settings.path, ("api",)).get("api", {}), base)
    except ConfigError as exc:
        raise ConfigError(f"{settings.path}: {exc}", bad_value=exc.bad_value) from exc


def _api(table: Any, base: Path) -> ApiSettings:
    if not isinstance(table, dict):
        raise ConfigError("[api] must be a table")
    host = table.get("host", DEFAULT_HOST)
    try:
        ipaddress.ip_address(host if isinstance(host, str) else "")
    except ValueError:
        raise ConfigError(f"api.host must be an IP literal, got {repr(host)[:80]}") from None
    port = table.get("port", DEFAULT_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"api.port must be a whole number from 1 to 65535, "
                          f"got {repr(port)[:80]}")
    tokens = table.get("tokens", DEFAULT_TOKENS)
    if not isinstance(tokens, str) or not tokens.strip():
        raise ConfigError(f"api.tokens must be a file path, got {repr(tokens)[:80]}")
    return ApiSettings(host, port, base / tokens)
