"""`callpolicy db status|migrate`: the database's schema version, and its upgrade."""

from __future__ import annotations

import argparse
import sys

from ..service.config import Settings
from ..store.migration import SchemaStatus, migrate, schema_status
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
