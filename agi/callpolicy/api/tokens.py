"""The API's bearer tokens: a TOML file of their SHA-256 hashes, each with a name (the audit's
`by`) and scopes.

```toml
[[token]]
name = "billing-system"
scopes = ["billing"]
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
created_at = "2026-11-30T21:00:00+00:00"
```

A token is 32 random bytes (`secrets.token_urlsafe`, 256 bits): a plain SHA-256 of it cannot
be brute-forced, so the file needs no slow password hash, and a stolen file gives no token.
A request's token is hashed and compared with every entry in constant time
(`hmac.compare_digest`, no early exit). The token itself is printed once by `api token add`
and never stored nor logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..service.config_file import ConfigError, read_text

__all__ = ["SCOPES", "TOKEN_PREFIX", "Token", "TokenExists", "TokenFile", "add_token",
           "hash_token", "load_tokens", "new_token", "remove_token"]

#: read: every GET; billing: read + suspend, reactivate, payment reminders and payments;
#: ops: everything
SCOPES = ("read", "billing", "ops")
#: what each scope grants (a route asks for one of SCOPES)
GRANTS = {"read": frozenset({"read"}), "billing": frozenset({"read", "billing"}),
          "ops": frozenset(SCOPES)}
TOKEN_PREFIX = "cpt_"  # recognisable in a leaked config or a secret scanner
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEYS = {"name", "scopes", "sha256", "created_at"}
_HEADER = ("# callpolicy API tokens: SHA-256 of each token (never the token), "
           "`callpolicy api token add`\n")


@dataclass(frozen=True, slots=True)
class Token:
    name: str
    scopes: tuple[str, ...]
    sha256: str  # hex digest of the token

    def grants(self, scope: str) -> bool:
        return any(scope in GRANTS[own] for own in self.scopes)


@dataclass(frozen=True, slots=True)
class TokenFile:
    path: Path
    tokens: tuple[Token, ...]

    def find(self, presented: str) -> Token | None:
        """The token whose hash matches, compared with every entry in constant time."""
        digest = hash_token(presented)
        found = None
        for token in self.tokens:
            if hmac.compare_digest(digest, token.sha256):
                found = token
        return found


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def load_tokens(path: Path, *, missing_ok: bool = False) -> TokenFile:
    """The token file, checked (one-line ConfigError naming the entry and key)."""
    if not path.exists():
        if missing_ok:
            return TokenFile(path, ())
        raise ConfigError(f"token file {path} does not exist: create it with `callpolicy api "
                          "token add --name N --scope S` ([api] tokens, default "
                          "api-tokens.toml beside the config file)", bad_value=False)
    try:
        data = tomllib.loads(read_text(path, "token file"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"token file {path} is not valid TOML: {exc}") from None
    extra = set(data) - {"token"}
    if extra:
        raise ConfigError(f"token file {path}: unknown keys {sorted(extra)} (expected "
                          "[[token]] entries)")
    entries = data.get("token", [])
    if not isinstance(entries, list):
        raise ConfigError(f"token file {path}: token must be [[token]] entries")
    tokens: list[Token] = []
    for index, entry in enumerate(entries, start=1):
        token = _entry(entry, f"token file {path}: token #{index}")
        if any(t.name == token.name for t in tokens):
            raise ConfigError(f"token file {path}: name {token.name!r} appears twice")
        tokens.append(token)
    return TokenFile(path, tuple(tokens))


def _entry(entry: Any, where: str) -> Token:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: not a table")
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]} (expected one of "
                          f"{', '.join(sorted(_KEYS))})")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{where}: name must be 1-64 letters, digits, . _ @ -")
    scopes = entry.get("scopes")
    if (not isinstance(scopes, list) or not scopes
            or not all(isinstance(s, str) and s in SCOPES for s in scopes)):
        raise ConfigError(f"{where} ({name}): scopes must be a non-empty list of "
                          f"{', '.join(SCOPES)}")
    digest = entry.get("sha256")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise ConfigError(f"{where} ({name}): sha256 must be 64 lowercase hex digits")
    return Token(name, tuple(dict.fromkeys(scopes)), digest)


class TokenExists(ValueError):
    """A token of that name is in the file already: a conflict, not a usage mistake."""


def add_token(path: Path, name: str, scopes: list[str]) -> str:
    """Append a new token's hash to the file (created 0600); returns the token, which is
    stored nowhere."""
    if not NAME.fullmatch(name):
        raise ValueError("--name must be 1-64 letters, digits, . _ @ - (starting with a "
                         "letter or digit)")
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ValueError(f"--scope must be one of {', '.join(SCOPES)}")
    existing = load_tokens(path, missing_ok=True)
    if any(t.name == name for t in existing.tokens):
        raise TokenExists(f"a token named {name!r} is already in {path} (`api token remove "
                          f"--name {name}` first to replace it)")
    token = new_token()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    entry = _render(name, list(dict.fromkeys(scopes)), hash_token(token), created)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        if out.tell() == 0:
            out.write(_HEADER)
        out.write(entry)
        out.flush()
        os.fsync(out.fileno())
    return token


def remove_token(path: Path, name: str) -> None:
    """Revoke: rewrite the file without `name`'s entry, atomically (a temporary file in the
    same directory, fsynced, renamed over it; mode 0600). A running API re-reads it at once.
    LookupError when no token has that name."""
    if not any(t.name == name for t in load_tokens(path).tokens):  # checks the whole file
        raise LookupError(f"no token named {name!r} in {path}")
    entries = tomllib.loads(read_text(path, "token file")).get("token", [])
    kept = "".join(_render(e["name"], e["scopes"], e["sha256"], e.get("created_at"))
                   for e in entries if e["name"] != name)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:  # mkstemp: mode 0600
            out.write(_HEADER + kept)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _render(name: str, scopes: list[str], digest: str, created: Any) -> str:
    if isinstance(created, datetime):  # written unquoted by hand: a TOML date-time
        created = created.isoformat()
    created_line = f"created_at = {json.dumps(str(created))}\n" if created else ""
    return (f'\n[[token]]\nname = "{name}"\nscopes = {json.dumps(scopes)}\n'
            f'sha256 = "{digest}"\n{created_line}')
