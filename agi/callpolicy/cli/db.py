"""`callpolicy db status|migrate`: the database's schema version, and its upgrade."""

from __future__ import annotations

import argparse
import sys

from ..service.config import Settings
from ..store import StoreURLError, parse_location
from ..store.copy import copy_to_postgresql
from ..store.migration import SchemaStatus, migrate, schema_status
from .args import Parents, Parser, Subparsers, UsageError
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


def add_db_parsers(sub: Subparsers[Parser], parents: Parents) -> None:
    common, json_flag = parents.common, parents.json_flag
    db = sub.add_parser(
        "db", parents=[common], help="the database's schema: status, migrate; copy to "
        "PostgreSQL",
        description="The database (--db, $CALLPOLICY_DB, [store] url or path) is SQLite (one "
        "node) or PostgreSQL (several nodes); both have the same schema, versioned. A write "
        "command or the daemon starting upgrades an older schema anyway; these commands show "
        "the version and upgrade it on their own (e.g. before starting a cluster's daemons).")
    dsub = db.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    dsub.required = True
    p = dsub.add_parser(
        "status", parents=[common, json_flag],
        help="backend, database and schema version; whether it needs `db migrate`",
        description="Print the backend, the database (a URL without its password) and its "
        "schema version against this callpolicy's. Reads only: upgrades nothing.",
        epilog="Exit codes: 0 up to date; 1 older (run `callpolicy db migrate`), newer "
        "(upgrade callpolicy), no schema yet, or the database cannot be read; 2 bad usage.")
    p.set_defaults(func=cmd_db_status)
    p = dsub.add_parser(
        "migrate", parents=[common],
        help="create or upgrade the schema to this callpolicy's version",
        description="Create the schema in a new database (a SQLite file is created; a "
        "PostgreSQL database must exist: createdb) or apply the missing migrations, one "
        "transaction each. Safe to run twice or from two nodes at once.",
        epilog="Exit codes: 0 done or already up to date; 1 the database cannot be reached "
        "or is newer than this callpolicy; 2 bad usage.")
    p.set_defaults(func=cmd_db_migrate)
    p = dsub.add_parser(
        "copy", parents=[common],
        help="copy a SQLite database into an empty PostgreSQL one (the move to a cluster)",
        description="Copy every table of the SQLite database FILE, ids kept, into the "
        "PostgreSQL database --db (or $CALLPOLICY_DB, [store] url), in one transaction: all "
        "or nothing. The target must hold no callpolicy data; its schema is created first. "
        "Stop the daemon and CLI writes to FILE meanwhile (what they write after the copy "
        "began is not copied); then point [store] url at the PostgreSQL database.",
        epilog="Exit codes: 0 copied; 1 the source or target cannot be used, the target is "
        "not empty, or the source's schema is older (run `db migrate` on it first); 2 bad "
        "usage (the source is not a file, the target not postgresql://).")
    p.add_argument("--from", dest="source", required=True, metavar="FILE",
                   help="the SQLite database to copy (PATH or sqlite:///PATH)")
    p.set_defaults(func=cmd_db_copy)
