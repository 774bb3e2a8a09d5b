"""`callpolicy unblock`, `reblock`, `unblocks`: a customer's exceptions to the default blocks."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import phonenumbers

from ..policy import UnblockKind, national_form, normalise_prefix
from ..policy.destinations import country_code, in_eu
from ..policy.engine import prefix_unblock_effect
from ..policy.model import UNBLOCKABLE_CATEGORIES
from ..service.config import Settings
from ..store import Actor
from .args import PROG, OperationalError, UsageError, parse_duration, parse_future
from .output import open_store, print_json, render_table


def _unblock_target(args: argparse.Namespace, settings: Settings) -> tuple[UnblockKind, str,
                                                                           list[str]]:
    """(kind, normalised value, warnings) from --prefix/--country/--category."""
    warnings: list[str] = []
    if args.prefix is not None:
        prefix = normalise_prefix(args.prefix)
        if prefix is None:
            raise UsageError(
                f"--prefix {args.prefix!r} is not a number prefix (national like 0905, or +41…)")
        if country_code(prefix[1:]) is None:
            raise UsageError(f"--prefix {args.prefix!r} does not start with a country code")
        if prefix.startswith("+32"):
            effect = prefix_unblock_effect(prefix, settings.policy.premium_prefixes)
            if effect == "too_short":
                warnings.append(
                    f"prefix {national_form(prefix)} is shorter than the blocked premium "
                    "prefixes it covers; it opens none of them (longest prefix wins): "
                    "give the full prefix (e.g. 0905) or use --category premium")
            elif effect == "not_blocked":
                warnings.append(f"prefix {national_form(prefix)} is not blocked by default; "
                                "this unblock changes nothing")
        return UnblockKind.PREFIX, prefix, warnings
    if args.country is not None:
        region = args.country.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise UsageError(f"--country {args.country!r} is not an ISO 3166 country code")
        if in_eu(region):
            raise UsageError(f"--country {region} is in the EU: calls there are not blocked")
        return UnblockKind.COUNTRY, region, warnings
    category = args.category.strip().lower()
    if category not in UNBLOCKABLE_CATEGORIES:
        raise UsageError(f"--category must be one of {', '.join(UNBLOCKABLE_CATEGORIES)}")
    return UnblockKind.CATEGORY, category, warnings


async def cmd_unblock(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(UTC)
    kind, value, warnings = _unblock_target(args, settings)
    expires = None
    if args.expires is not None:
        expires = parse_future(args.expires, "--expires", now)
    elif args.for_ is not None:
        expires = now + parse_duration(args.for_)
    for warning in warnings:
        sys.stderr.write(f"{PROG}: warning: {warning}\n")
    actor = Actor(args.by, args.ticket, args.reason)
    async with await open_store(settings) as store:
        unblock_id = await store.add_unblock(args.id, kind, value, actor, expires)
    until = f"until {expires.isoformat(timespec='seconds')}" if expires else "until reblocked"
    shown = national_form(value) if kind is UnblockKind.PREFIX else value
    sys.stdout.write(f"unblock #{unblock_id}: {args.id} may call {kind.value} {shown} {until}\n")
    return 0


async def cmd_reblock(args: argparse.Namespace, settings: Settings) -> int:
    kind, value, _ = _unblock_target(args, settings)
    actor = Actor(args.by, args.ticket, args.reason)
    async with await open_store(settings) as store:
        ids = await store.reblock(args.id, kind, value, actor)
    shown = national_form(value) if kind is UnblockKind.PREFIX else value
    sys.stdout.write(f"{args.id}: {kind.value} {shown} blocked again "
                     f"(revoked unblock {', '.join('#' + str(i) for i in ids)})\n")
    return 0


async def cmd_unblocks(args: argparse.Namespace, settings: Settings) -> int:
    async with await open_store(settings, readonly=True) as store:
        if args.id is not None and await store.customer(args.id) is None:
            raise OperationalError(f"unknown customer {args.id!r}")
        rows = await store.unblocks(args.id, include_inactive=args.all)
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
