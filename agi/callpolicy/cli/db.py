"""`callpolicy db status|migrate`: the database's schema version, and its upgrade."""

from __future__ import annotations

import argparse
import sys

from ..service.config import Settings
from ..store import StoreURLError, parse_location
from ..store.copy import copy_to_postgresql
from ..store.migration import SchemaStatus, migrate, schema_status
from .args import UsageError
from .output import print_json

_STATE = {
    "current": "up to date",
    "older": "older: `callpolicy db migrate` upgrades it",
    "newer": "NEWER than this callpolicy: upgrade callpolicy",
    "absent": "no callpolicy schema: `callpolicy db migrate` creates it",
}


def _text(status: SchemaStatus) -> str:
    version = "none" if status.version is None else str(status.version)
    return (f"backend: {status.backend}\ndatabase: {status.database}\n"
            f"schema: {version} (this callpolicy: {status.latest}): {_STATE[status.state]}\n")


async def cmd_db_status(args: argparse.Namespace, settings: Settings) -> int:
    status = await schema_status(settings.db)
    if args.json:
        print_json({"backend": status.backend, "database": status.database,
                    "schema_version": status.version, "latest": status.latest,
                    "state": status.state})
    else:
        sys.stdout.write(_text(status))
    return 0 if status.state == "current" else 1


async def cmd_db_migrate(args: argparse.Namespace, settings: Settings) -> int:
    before, after = await migrate(settings.db)
    if before.version == after:
        sys.stdout.write(f"{before.database}: schema {after}, already up to date\n")
    else:
        start = "nothing" if before.version is None else f"schema {before.version}"
        sys.stdout.write(f"{before.database}: migrated from {start} to schema {after}\n")
    return 0


async def cmd_db_copy(args: argparse.Namespace, settings: Settings) -> int:
    try:
        source = parse_location(args.source)
    except StoreURLError as exc:
        raise UsageError(f"--from: {exc}") from exc
    if source.path is None:
        raise UsageError("--from: the source is a SQLite file (PATH or sqlite:///PATH)")
    if settings.db.url is None:
        raise UsageError("the target (--db, $CALLPOLICY_DB or [store] url) is not a "
                         "postgresql:// URL")
    counts = await copy_to_postgresql(source.path, settings.db.url)
    sys.stdout.write(f"copied {source.path} into {settings.db}: " + ", ".join(
        f"{table} {count}" for table, count in counts.items()) + "\n")
    return 0
