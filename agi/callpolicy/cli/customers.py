"""`callpolicy customer …`: import, show, list, suspend, remind, paid, reactivate."""

from __future__ import annotations

import argparse
import io
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import ops
from ..ops import customers as customer_ops
from ..policy import national_form
from ..service.config import Settings
from ..store import REMINDER_GRACE_DAYS, Actor, iso
from .args import parse_future, parse_sent_date
from .output import SHOW_TEXT_WIDTH, default_actor, local_time, print_json, render_table, warn
from .text import escaped


async def cmd_customer_import(args: argparse.Namespace, settings: Settings) -> int:
    plan = customer_ops.plan_import(Path(args.file), settings.zones,
                                    accept_zone_violations=args.accept_zone_violations)
    for warning in plan.warnings:
        warn(warning)
    customer_ops.check_import(plan)
    if args.dry_run:
        sys.stdout.write(f"{len(plan.records)} customer(s) valid; nothing written (--dry-run)\n")
        return 0
    actor = Actor(args.by or default_actor(), args.ticket, f"import {args.file}")
    async with await ops.open_store(settings, create=True) as store:
        result = await customer_ops.import_customers(store, plan, actor)
    for warning in result.warnings:
        warn(warning)
    sys.stdout.write(
        f"imported {args.file} into {settings.db}: {len(result.created)} created, "
        f"{len(result.updated)} updated, {len(result.unchanged)} unchanged\n")
    return 0


async def cmd_customer_show(args: argparse.Namespace, settings: Settings) -> int:
    async with await ops.open_store(settings, readonly=True) as store:
        customer = await customer_ops.show(store, args.id)
    if args.json:
        print_json(customer)
        return 0
    customer = escaped(customer, SHOW_TEXT_WIDTH)  # stored text, shown safe and bounded
    a = customer["install_address"]
    out = io.StringIO()
    out.write(f"customer      {customer['id']} ({customer['name']})\n")
    out.write(f"status        {customer['status']}")
    if customer["suspension"]:
        s = customer["suspension"]
        out.write(f" since {s['suspended_at']} by {s['suspended_by']}, ticket {s['ticket']}")
    out.write("\n")
    if customer["scheduled_suspension"]:
        out.write(f"scheduled     {_schedule_text(customer['scheduled_suspension'])}\n")
    for r in customer["payment_reminders"]:
        out.write(f"reminder      sent {r['sent_on']} (unpaid; ticket {r['ticket']}, "
                  f"by {r['recorded_by']})\n")
    out.write(f"main number   {national_form(customer['main_number'])}\n")
    out.write(f"numbers       {', '.join(national_form(n) for n in customer['numbers'])}\n")
    out.write(f"address       {a['street']} {a['house_number']}, {a['postcode']} "
              f"{a['municipality']}, {a['country']}\n")
    out.write(f"site networks {', '.join(customer['site_networks']) or '-'}\n")
    out.write("forward targets (verified) "
              f"{', '.join(customer['verified_forward_targets']) or '-'}\n")
    for e in customer["endpoints"]:
        out.write(f"endpoint      {e['name']} -> {e['number'] or '(main number)'}\n")
    for u in customer["unblocks"]:
        out.write(f"unblock #{u['id']:<5} {u['kind']} {u['value']} until "
                  f"{u['expires_at'] or 'reblocked'} "
                  f"(ticket {u['ticket']}, by {u['created_by']})\n")
    sys.stdout.write(out.getvalue())
    return 0


def _schedule_text(schedule: dict[str, Any]) -> str:
    why = (f"{REMINDER_GRACE_DAYS} days after the first payment reminder of "
           f"{schedule['reminder_sent_on']}" if schedule["reminder_sent_on"]
           else "suspend --at" + (f": {schedule['reason']}" if schedule["reason"] else ""))
    due = local_time(schedule["due_at"])
    if schedule["due_at"] <= iso(datetime.now(UTC)):  # both UTC ISO 8601
        due += " (due: in force for calls; the daemon records the suspension)"
    return (f"suspension at {due}, {why} (ticket {schedule['ticket']}, "
            f"by {schedule['created_by']})")


async def cmd_customer_list(args: argparse.Namespace, settings: Settings) -> int:
    async with await ops.open_store(settings, readonly=True) as store:
        rows = await customer_ops.customers(store)
    if args.json:
        for row in rows:
            print_json(row)
    elif rows:
        for row in rows:
            row["scheduled"] = local_time(row["scheduled"]) if row["scheduled"] else ""
        sys.stdout.write(render_table(rows, ("id", "name", "status", "main_number", "numbers",
                                             "endpoints", "scheduled")))
    else:
        sys.stdout.write("no customers\n")
    return 0


async def cmd_customer_suspend(args: argparse.Namespace, settings: Settings) -> int:
    actor = Actor(args.by, args.ticket, args.reason)
    if args.at is not None:
        at = parse_future(args.at, "--at", datetime.now(UTC))
        async with await ops.open_store(settings) as store:
            schedule = await customer_ops.schedule_suspension(store, args.id, at, actor)
        sys.stdout.write(f"customer {args.id}: suspension scheduled at "
                         f"{local_time(schedule['due_at'])} (ticket {args.ticket}); from then on "
                         "only must-reach numbers pass and live calls are hung up; "
                         "`customer reactivate` cancels it\n")
        return 0
    async with await ops.open_store(settings) as store:
        await customer_ops.suspend(store, args.id, actor)
    sys.stdout.write(f"customer {args.id} suspended (ticket {args.ticket}); "
                     "only must-reach numbers pass\n")
    return 0


async def cmd_customer_remind(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(UTC)
    sent = parse_sent_date(args.sent, now)
    actor = Actor(args.by, args.ticket, args.reason)
    async with await ops.open_store(settings) as store:
        reminder = await customer_ops.record_reminder(store, args.id, sent, actor)
    result, schedule, due_now = reminder.result, reminder.result.schedule, reminder.due_now
    if reminder.not_applied is not None:
        warn(f"suspension not written yet ({reminder.not_applied}); "
             "calls are refused already, the daemon writes it")
    out = [f"payment reminder of {sent} recorded for {args.id} (ticket {args.ticket})"]
    if due_now:
        assert schedule is not None
        out.append(f"first reminder: {REMINDER_GRACE_DAYS} calendar days after {sent} is "
                   f"{local_time(schedule['due_at'])}, already past: the suspension is due at "
                   f"once; customer {args.id} is suspended now, only must-reach numbers pass")
    elif result.created:
        assert schedule is not None
        out.append(f"first reminder: suspension scheduled at {local_time(schedule['due_at'])} "
                   f"(00:00 Brussels, {REMINDER_GRACE_DAYS} calendar days after {sent}, art. "
                   "5.7); `customer paid` or `customer reactivate` cancels it")
    elif result.suspended:
        out.append(f"customer {args.id} is already suspended: nothing scheduled")
    elif schedule is not None:
        out.append(f"{'first' if result.first else 'not the first'} reminder of this unpaid "
                   f"episode: the suspension stays scheduled at {local_time(schedule['due_at'])} "
                   f"(ticket {schedule['ticket']})")
    else:
        out.append("not the first reminder of this unpaid episode and no suspension is "
                   "scheduled (it was cancelled): use `customer suspend --at` to schedule one")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _cancelled_text(schedule: dict[str, Any]) -> str:
    return (f"cancelled the suspension scheduled at {local_time(schedule['due_at'])} "
            f"(ticket {schedule['ticket']})")


async def cmd_customer_paid(args: argparse.Namespace, settings: Settings) -> int:
    actor = Actor(args.by, args.ticket, args.reason)
    async with await ops.open_store(settings) as store:
        done = await customer_ops.record_payment(store, args.id, actor)
    parts = [f"closed {done.closed_reminders} payment reminder(s)"]
    if done.cancelled is not None:
        parts.append(_cancelled_text(done.cancelled))
    if done.reactivated:
        parts.append(f"customer {args.id} reactivated")
    sys.stdout.write(f"payment recorded for {args.id} (ticket {args.ticket}): "
                     f"{'; '.join(parts)}\n")
    return 0


async def cmd_customer_reactivate(args: argparse.Namespace, settings: Settings) -> int:
    actor = Actor(args.by, args.ticket, args.reason)
    async with await ops.open_store(settings) as store:
        done = await customer_ops.reactivate(store, args.id, actor)
    cancelled = f"; {_cancelled_text(done.cancelled)}" if done.cancelled else ""
    if done.reactivated:
        sys.stdout.write(f"customer {args.id} reactivated (ticket {args.ticket}){cancelled}\n")
    else:
        sys.stdout.write(f"customer {args.id} stays active (ticket {args.ticket}){cancelled}\n")
    return 0
