"""Which database: a path or `sqlite:///path` (SQLite, one node), or `postgresql://…`.

`[store] url`, `--db` and `$CALLPOLICY_DB` all take one of these; `open_store` opens it with
the backend it names. A relative SQLite path is relative to the config file's directory
(config) or the current directory (--db, the environment)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePath
from urllib.parse import unquote, urlsplit, urlunsplit

from .model import StoreError
from .sqlite import Store


class StoreURLError(ValueError):
    """Not a database location this callpolicy knows (one line, naming what is allowed)."""


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """A parsed location: `url` for PostgreSQL, else None and `path` is the SQLite file."""

    path: Path | None
    url: str | None = None

    @property
    def backend(self) -> str:
        return "postgresql" if self.url else "sqlite"

    def __str__(self) -> str:  # for messages: never the password
        return redacted(self.url) if self.url else str(self.path)


def parse_location(text: str | PurePath, base: Path | None = None) -> StoreLocation:
    """A path, `sqlite:///abs/path` / `sqlite:rel/path`, or `postgresql://…` (also a
    PostgreSQL store's `path`, which prints as its URL)."""
    if isinstance(text, Path):
        return StoreLocation(text if base is None else base / text)
    value = str(text).strip()
    if not value:
        raise StoreURLError("the database location is empty (a path, sqlite:///PATH or "
                            "postgresql://USER@HOST/DB)")
    is_url = "://" in value or value.lower().startswith("sqlite:")
    scheme = value.split(":", 1)[0].lower() if is_url else ""
    if not scheme:
        path = Path(value)
        return StoreLocation(path if base is None or path.is_absolute() else base / path)
    if scheme == "sqlite":
        raw = unquote(value[len("sqlite:"):])
        if raw.startswith("//") and not raw.startswith("///"):
            raise StoreURLError(f"{value!r}: not a file (sqlite:///ABSOLUTE/PATH or "
                                "sqlite:RELATIVE/PATH)")
        if not raw.strip("/"):
            raise StoreURLError(f"{value!r}: no file after sqlite: (sqlite:///PATH)")
        # sqlite:///abs/path (as file:///), also SQLAlchemy's sqlite:////abs/path
        path = Path("/" + raw.lstrip("/")) if raw.startswith("/") else Path(raw)
        return StoreLocation(path if base is None or path.is_absolute() else base / path)
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(value)
        if not parts.hostname and "host=" not in (parts.query or ""):
            raise StoreURLError(f"{redacted(value)}: no host (postgresql://USER@HOST[:PORT]/DB)")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise StoreURLError(f"{redacted(value)}: bad port ({exc})") from exc
        return StoreLocation(None, value)
    raise StoreURLError(f"{redacted(value)}: unknown database scheme {scheme!r} (allowed: a "
                        "path, sqlite:///PATH, postgresql://USER@HOST[:PORT]/DB)")


def redacted(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


async def open_store(location: str | PurePath | StoreLocation, *, create: bool = False,
                     readonly: bool = False) -> Store:
    """Open the store at `location` with the backend it names (see parse_location).

    asyncpg is imported only to open a PostgreSQL URL: the fallback AGI inside Asterisk
    imports this package and has no asyncpg (its image takes pure-Python wheels only)."""
    try:
        where = location if isinstance(location, StoreLocation) else parse_location(location)
    except StoreURLError as exc:
        raise StoreError(str(exc)) from exc
    if where.url:
        from .postgres import PostgresStore
        return await PostgresStore.open(where.url, create=create, readonly=readonly)
    assert where.path is not None
    return await Store.open(where.path, create=create, readonly=readonly)
