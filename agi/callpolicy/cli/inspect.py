"""`callpolicy audit` and `callpolicy check` (how a call would be decided, and why)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from .. import ops
from ..ops.audit import audit_log
from ..ops.check import Caller, prepare_check
from ..policy import Decision
from ..service.config import Settings
from .output import print_json, render_table, warn
from .text import printable


async def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    async with await ops.open_store(settings, readonly=True) as store:
        rows = await audit_log(store, args.id, args.limit)
    if args.json:
        for row in rows:
            print_json(row)
    elif rows:
        sys.stdout.write(render_table(rows, ("id", "at", "actor", "action", "customer_id",
                                             "ticket", "reason")))
    else:
        sys.stdout.write("no audit entries\n")
    return 0


def _describe(decision: Decision) -> str:
    cid = decision.caller_id
    parts = [
        f"{decision.number}",
        f"-> {decision.destination or '(invalid)'}",
        decision.action.value.upper(),
        decision.reason.value,
        f"[{decision.category.value} {decision.resolved_region() or '?'}]",
        f"caller-id {cid.number or '-'} ({cid.presentation.value})",
    ]
    if decision.emergency:
        parts.append(f"location {decision.location.value if decision.location else '-'}")
    if decision.diversion:
        parts.append(f"diversion {decision.diversion}")
    # the dialled number, caller ID and the rule's stored tickets: shown escaped
    return "  ".join(map(printable, parts)) + f"\n    rule: {printable(decision.rule)}\n"


async def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """Decide as a live call would (see ops.check)."""
    caller = Caller(args.customer, args.endpoint)
    async with await ops.open_store(settings, readonly=True) as store:
        check = await prepare_check(store, caller, settings.policy)
    for warning in check.warnings:
        warn(warning)
    now = datetime.now(UTC)
    for number in args.numbers:
        decision = check.decide(number, now, source_ip=args.source_ip, caller_id=args.caller_id,
                                privacy=args.privacy, forwarded_from=args.forwarded_from)
        if args.json:
            print_json(decision.to_dict())
        else:
            sys.stdout.write(_describe(decision))
    return 0
