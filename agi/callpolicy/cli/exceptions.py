"""`callpolicy unblock`, `reblock`, `unblocks`: a customer's exceptions to the default blocks."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from .. import ops
from ..ops.unblocks import UnblockTarget, list_unblocks, reblock, unblock
from ..policy import UnblockKind
from ..service.config import Settings
from ..store import Actor
from .args import parse_duration, parse_future
from .output import print_json, render_table, warn


def _unblock_target(args: argparse.Namespace, settings: Settings) -> UnblockTarget:
    """The target of --prefix, --country or --category (one of them: the parser sees to it)."""
    kind, text = ((UnblockKind.PREFIX, args.prefix) if args.prefix is not None
                  else (UnblockKind.COUNTRY, args.country) if args.country is not None
                  else (UnblockKind.CATEGORY, args.category))
    return UnblockTarget.parse(kind, text, settings.policy.premium_prefixes)


async def cmd_unblock(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(UTC)
    target = _unblock_target(args, settings)
    expires = parse_future(args.expires, "--expires", now) if args.expires is not None else None
    lasting = parse_duration(args.for_) if args.for_ is not None else None
    for warning in target.warnings:
        warn(warning)
    actor = Actor(args.by, args.ticket, args.reason)
    async with await ops.open_store(settings) as store:
        done = await unblock(store, args.id, target, actor, expires_at=expires, lasting=lasting)
    until = (f"until {done.expires_at.isoformat(timespec='seconds')}" if done.expires_at
             else "until reblocked")
    sys.stdout.write(f"unblock #{done.id}: {args.id} may call {target.kind.value} "
                     f"{target.shown} {until}\n")
    return 0


async def cmd_reblock(args: argparse.Namespace, settings: Settings) -> int:
    target = _unblock_target(args, settings)
    actor = Actor(args.by, args.ticket, args.reason)
    async with await ops.open_store(settings) as store:
        ids = await reblock(store, args.id, target, actor)
    sys.stdout.write(f"{args.id}: {target.kind.value} {target.shown} blocked again "
                     f"(revoked unblock {', '.join('#' + str(i) for i in ids)})\n")
    return 0


async def cmd_unblocks(args: argparse.Namespace, settings: Settings) -> int:
    async with await ops.open_store(settings, readonly=True) as store:
        rows = await list_unblocks(store, args.id, include_inactive=args.all)
    if args.json:
        for row in rows:
            print_json(row)
    elif rows:
        sys.stdout.write(render_table(rows, ("id", "customer_id", "kind", "value", "state",
                                             "expires_at", "ticket", "created_by",
                                             "created_at")))
    else:
        sys.stdout.write("no active unblocks\n" if not args.all else "no unblocks\n")
    return 0
