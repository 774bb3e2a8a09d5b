"""`callpolicy audit` and `callpolicy check` (how a call would be decided, and why)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

import structlog

from ..policy import CallRequest, Decision, Engine, Snapshot
from ..service.config import Settings
from .args import OperationalError, UsageError
from .output import open_store, print_json, render_table, warn
from .text import printable

log = structlog.get_logger("callpolicy.cli")


async def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    async with await open_store(settings, readonly=True) as store:
        if args.id is not None and await store.customer(args.id) is None:
            raise OperationalError(f"unknown customer {args.id!r}")
        rows = await store.audit_log(args.id, args.limit)
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
    """Decide as a live call would: an unknown customer or endpoint is not an error (a live
    call from it gets a decision too: blocked, but must-reach numbers pass)."""
    if args.customer is None and args.endpoint is None:
        raise UsageError("give --customer ID or --endpoint NAME (whose call to decide)")
    async with await open_store(settings, readonly=True) as store:
        customer_id = args.customer
        if customer_id is None:  # as a live call: the endpoint names the customer
            owners = {e.name: e.customer_id for e in await store.load_endpoints_named(
                [args.endpoint])}
            customer_id = owners.get(args.endpoint)
        customers = await store.load_customers([customer_id]) if customer_id else {}
        endpoints = ({e.name: e for e in await store.load_endpoints([customer_id])}
                     if customer_id else {})
    customer = customers.get(customer_id) if customer_id else None
    if customer is None:
        who = (f"customer {customer_id!r}" if customer_id
               else f"endpoint {args.endpoint!r} (no customer has it)")
        warn(f"{who} is unknown: decided as a live call from it would be "
             "(refused; must-reach numbers pass)")
    elif args.endpoint is not None and args.endpoint not in endpoints:
        warn(f"customer {customer_id!r} has no endpoint {args.endpoint!r}: deciding "
             "without it, as a live call would (caller ID from the main number)")
    owners = {n: customer.id for n in customer.numbers} if customer else {}
    engine = Engine(Snapshot(settings.policy, customers, endpoints, owners))
    now = datetime.now(UTC)
    for number in args.numbers:
        decision = engine.decide(CallRequest(
            dialled=number, now=now, customer_id=customer_id, endpoint=args.endpoint,
            source_ip=args.source_ip, caller_id=args.caller_id, privacy=args.privacy,
            forwarded_from=args.forwarded_from))
        for event in decision.events:
            log.warning(event.kind, customer=customer_id, number=number, **event.detail)
        if args.json:
            print_json(decision.to_dict())
        else:
            sys.stdout.write(_describe(decision))
    return 0
