"""`callpolicy`: the ops CLI.

Exit codes: 0 success, 1 operational error (unknown customer, missing database, bad file…),
2 bad usage. Each error is one line on stderr; never a traceback (CALLPOLICY_DEBUG=1 shows one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import getpass
import io
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import phonenumbers
import structlog

from ..live.records import CSV_COLUMNS, CallRecord
from ..policy import (
    CallRequest,
    Decision,
    Engine,
    FraudLimits,
    Snapshot,
    UnblockKind,
    national_form,
    normalise_prefix,
)
from ..policy.destinations import EU_REGIONS, country_code
from ..policy.location import parse_ip
from ..policy.model import UNBLOCKABLE_CATEGORIES
from ..service.config import ConfigError, Settings, load_settings
from ..service.logging import configure_logging
from ..store import (
    LIMIT_FIELDS,
    REMINDER_GRACE_DAYS,
    Actor,
    Store,
    StoreError,
    contract_today,
    contract_zone,
    iso,
    limits_dict,
    parse_iso,
)
from ..store.importer import paused_gc, read_import_file
from ..store.sqlite_errors import explain
from .text import CUT, clip, escaped, printable

PROG = "callpolicy"
log = structlog.get_logger("callpolicy.cli")


class UsageError(Exception):
    """Bad usage found after parsing (exit 2)."""


class OperationalError(Exception):
    """Exit 1 with this message."""


# options that take a value (to find a command's first positional word)
_VALUE_OPTIONS = frozenset({"--db", "--config", "--since", "--until", "--limit", "--older-than",
                            "--by", "--ticket", "--reason"})


class _Parser(argparse.ArgumentParser):
    #: (implicit action, explicit actions): `calls ID` means `calls list ID`
    implicit_action: tuple[str, tuple[str, ...]] | None = None

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)

    def parse_known_args(self, args=None, namespace=None):
        if self.implicit_action is not None and args is not None:
            implicit, actions = self.implicit_action
            args = list(args)
            first = _first_positional(args)
            asks_help = any(a in ("-h", "--help") for a in args)
            if first not in actions and not (first is None and asks_help):
                args.insert(0, implicit)
        return super().parse_known_args(args, namespace)


def _first_positional(args: Sequence[str]) -> str | None:
    skip = False
    for index, arg in enumerate(args):
        if skip:
            skip = False
        elif arg == "--":
            return args[index + 1] if index + 1 < len(args) else None
        elif arg.startswith("-") and len(arg) > 1:
            skip = arg in _VALUE_OPTIONS
        else:
            return arg
    return None


# -- helpers ------------------------------------------------------------------------------

_DURATION = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The ranges every value on the command line is checked against (documented in --help/README).
MAX_SPAN = timedelta(days=3650)  # durations, and times from now: 10 years
MAX_SPAN_TEXT = "3650d (10 years)"
MAX_COUNT = 1_000_000  # fraud limits and --limit
MAX_AUDIT_TEXT = 200  # --by, --ticket, --reason: characters


def parse_duration(text: str, option: str = "--for") -> timedelta:
    """'7d', '12h', '1h30m', '1s' -> timedelta, from 1 s to MAX_SPAN."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise UsageError(
            f"{option} {_quoted(text)}: use a duration like 30m, 12h, 7d, 2w or 1h30m")
    # a long digit string is out of range anyway (and int() refuses over 4300 digits)
    too_long = any(len(n.lstrip("0")) > 12 for n, _ in parts)
    seconds = 0 if too_long else sum(int(n) * _UNITS[u] for n, u in parts)
    if too_long or seconds > MAX_SPAN.total_seconds():
        raise UsageError(f"{option} {_quoted(text)}: the duration can be at most "
                         f"{MAX_SPAN_TEXT}")
    if seconds <= 0:
        raise UsageError(f"{option} {_quoted(text)}: the duration must be positive")
    return timedelta(seconds=seconds)


def _quoted(text: str, width: int = 60) -> str:
    """A value the user gave, quoted for an error line: escaped (repr), and cut if long."""
    return repr(text[:width]) + (CUT if len(text) > width else "")


def _iso_moment(text: str, option: str, example: str) -> datetime:
    """An ISO 8601 time with a timezone (not yet range-checked)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise UsageError(
            f"{option} {_quoted(text)} is not an ISO 8601 time (like {example})") from exc
    if moment.tzinfo is None:
        raise UsageError(f"{option} {_quoted(text)} has no timezone: add one "
                         "(+01:00 for Belgian winter time, +02:00 summer, Z for UTC)")
    return moment


def parse_moment(text: str, option: str, now: datetime) -> datetime:
    """An ISO 8601 time with a timezone, or a duration meaning that long ago ('24h'); within
    MAX_SPAN of `now` (--since, --until)."""
    if re.fullmatch(r"(\d+[smhdw])+", text.strip().lower()):
        return now - parse_duration(text, option)
    moment = _iso_moment(text, option, "2026-06-01T00:00+02:00, or a duration like 24h, 7d")
    if abs(moment - now) > MAX_SPAN:  # aware subtraction: no overflow near year 1 or 9999
        raise UsageError(f"{option} {_quoted(text)} is more than {MAX_SPAN_TEXT} from now")
    return moment.astimezone(UTC)


def parse_future(text: str, option: str, now: datetime) -> datetime:
    """An ISO 8601 time with a timezone, after `now`, at most MAX_SPAN ahead (--expires,
    --at)."""
    moment = _iso_moment(text, option, "2026-12-01T18:00+01:00")
    if moment <= now:
        raise UsageError(f"{option} {_quoted(text)} is in the past")
    if moment - now > MAX_SPAN:
        raise UsageError(f"{option} {_quoted(text)} is more than {MAX_SPAN_TEXT} ahead")
    return moment.astimezone(UTC)


def _whole(low: int, high: int) -> Callable[[str], int]:
    """argparse type: a whole number from low to high."""
    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:  # also a number of over 4300 digits
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"{_quoted(text)} is not a whole number from {low} to {high}")
        return value
    return whole


def _audit_text(what: str) -> Callable[[str], str]:
    """argparse type for --by/--ticket/--reason: non-empty, printable, bounded (the audit log
    is read on terminals and must say who and why)."""
    def audit_text(text: str) -> str:
        value = text.strip()
        if not value:
            raise argparse.ArgumentTypeError(f"empty: give {what}")
        if not value.isprintable():
            raise argparse.ArgumentTypeError(
                f"{_quoted(value)} contains control characters (give {what} as plain text)")
        if len(value) > MAX_AUDIT_TEXT:
            raise argparse.ArgumentTypeError(
                f"{len(value)} characters: at most {MAX_AUDIT_TEXT}")
        return value
    audit_text.__name__ = what  # argparse names the type in some messages
    return audit_text


def _source_ip(text: str) -> str:
    """argparse type for check --source-ip: an IP address, as Asterisk reports it."""
    if parse_ip(text) is None:
        raise argparse.ArgumentTypeError(
            f"{_quoted(text)} is not an IP address (like 192.0.2.10, 192.0.2.10:5060 or "
            "2001:db8::1)")
    return text.strip()


def _seconds(low: float, high: float) -> Callable[[str], float]:
    """argparse type: a number of seconds from low to high."""
    def seconds(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:  # also NaN
            raise argparse.ArgumentTypeError(
                f"{_quoted(text)} is not a number of seconds from {low:g} to {high:g}")
        return value
    return seconds


def _limit_field(text: str) -> str:
    """argparse type: a fraud-limit name, max_concurrent or max-concurrent."""
    name = text.strip().lower().replace("-", "_")
    if name not in LIMIT_FIELDS:
        raise argparse.ArgumentTypeError(
            f"{_quoted(text)} is not a limit (one of {', '.join(LIMIT_FIELDS)})")
    return name


def parse_sent_date(text: str, now: datetime) -> date:
    """--sent: a calendar date YYYY-MM-DD, not after today in Brussels, within MAX_SPAN."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            raise ValueError(text)
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--sent {_quoted(text)} is not a date like 2026-03-01 (YYYY-MM-DD)") from None
    today = contract_today(now)
    if day > today:
        raise UsageError(
            f"--sent {_quoted(text)} is in the future (today is {today} in Brussels)")
    if today - day > MAX_SPAN:
        raise UsageError(f"--sent {_quoted(text)} is more than {MAX_SPAN_TEXT} ago")
    return day


def _local(moment: str | datetime | None) -> str:
    """A stored UTC time as Brussels time (the contract's calendar), to the second."""
    if isinstance(moment, str):
        moment = parse_iso(moment)
    return moment.astimezone(contract_zone()).isoformat(timespec="seconds") if moment else "-"


def _default_actor() -> str:
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except Exception:  # no user name in this environment
        return "unknown"


def _print_json(item: object) -> None:
    sys.stdout.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")


TABLE_CELL_WIDTH = 48  # a longer cell is cut, ending with CUT (--json has it all)
SHOW_TEXT_WIDTH = 1000  # the same for one stored text in `customer show`


def _cell(value: object) -> str:
    return clip(str(value if value is not None else ""), TABLE_CELL_WIDTH)


def _table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A text table: cells escaped (stored text cannot forge a row or move the cursor) and
    cut at TABLE_CELL_WIDTH."""
    if not rows:
        return ""
    cells = [[_cell(row.get(c, "") or "") for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
              for line in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


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
            premium = settings.policy.premium_prefixes
            if any(p.startswith(prefix) and p != prefix for p in premium):
                warnings.append(
                    f"prefix {national_form(prefix)} is shorter than the blocked premium "
                    "prefixes it covers; it opens none of them (longest prefix wins): "
                    "give the full prefix (e.g. 0905) or use --category premium")
            elif not any(prefix.startswith(p) for p in premium):
                warnings.append(f"prefix {national_form(prefix)} is not blocked by default; "
                                "this unblock changes nothing")
        return UnblockKind.PREFIX, prefix, warnings
    if args.country is not None:
        region = args.country.strip().upper()
        if region not in phonenumbers.SUPPORTED_REGIONS:
            raise UsageError(f"--country {args.country!r} is not an ISO 3166 country code")
        if region in EU_REGIONS:
            raise UsageError(f"--country {region} is in the EU: calls there are not blocked")
        return UnblockKind.COUNTRY, region, warnings
    category = args.category.strip().lower()
    if category not in UNBLOCKABLE_CATEGORIES:
        raise UsageError(f"--category must be one of {', '.join(UNBLOCKABLE_CATEGORIES)}")
    return UnblockKind.CATEGORY, category, warnings


# -- commands -----------------------------------------------------------------------------

async def _open(settings: Settings, *, create: bool = False, readonly: bool = False) -> Store:
    """Read commands open the database read-only: they work on a full disk and for a user
    who may only read, and never migrate or set anything up."""
    return await Store.open(settings.db_path, create=create, readonly=readonly)


async def cmd_customer_import(args: argparse.Namespace, settings: Settings) -> int:
    with paused_gc():
        return await _customer_import(args, settings)


async def _customer_import(args: argparse.Namespace, settings: Settings) -> int:
    plan = read_import_file(Path(args.file), settings.zones,
                            accept_zone_violations=args.accept_zone_violations)
    for warning in plan.warnings:
        sys.stderr.write(f"{PROG}: warning: {warning}\n")
    if plan.errors:
        for error in plan.errors:
            sys.stderr.write(f"{PROG}: error: {error}\n")
        sys.stderr.write(f"{PROG}: error: nothing imported ({len(plan.errors)} problem(s))\n")
        return 1
    if args.dry_run:
        sys.stdout.write(f"{len(plan.records)} customer(s) valid; nothing written (--dry-run)\n")
        return 0
    actor = Actor(args.by or _default_actor(), args.ticket, f"import {args.file}")
    async with await _open(settings, create=True) as store:
        result = await store.import_customers(plan.records, actor)
    for warning in result.warnings:
        sys.stderr.write(f"{PROG}: warning: {warning}\n")
    sys.stdout.write(
        f"imported {args.file} into {settings.db_path}: {len(result.created)} created, "
        f"{len(result.updated)} updated, {len(result.unchanged)} unchanged\n")
    return 0


async def cmd_customer_show(args: argparse.Namespace, settings: Settings) -> int:
    async with await _open(settings, readonly=True) as store:
        customer = await store.customer(args.id)
        if customer is None:
            raise OperationalError(f"unknown customer {args.id!r}")
        customer["unblocks"] = await store.unblocks(args.id)
        customer["suspension"] = await store.suspension(args.id)
        customer["scheduled_suspension"] = await store.scheduled_suspension(args.id)
        customer["payment_reminders"] = await store.open_reminders(args.id)
    if args.json:
        _print_json(customer)
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
    due = _local(schedule["due_at"])
    if schedule["due_at"] <= iso(datetime.now(UTC)):  # both UTC ISO 8601
        due += " (due: in force for calls; the daemon records the suspension)"
    return (f"suspension at {due}, {why} (ticket {schedule['ticket']}, "
            f"by {schedule['created_by']})")


async def cmd_customer_list(args: argparse.Namespace, settings: Settings) -> int:
    async with await _open(settings, readonly=True) as store:
        rows = await store.customers()
    if args.json:
        for row in rows:
            _print_json(row)
    elif rows:
        for row in rows:
            row["scheduled"] = _local(row["scheduled"]) if row["scheduled"] else ""
        sys.stdout.write(_table(rows, ("id", "name", "status", "main_number", "numbers",
                                       "endpoints", "scheduled")))
    else:
        sys.stdout.write("no customers\n")
    return 0


async def cmd_customer_suspend(args: argparse.Namespace, settings: Settings) -> int:
    actor = Actor(args.by, args.ticket, args.reason)
    if args.at is not None:
        at = parse_future(args.at, "--at", datetime.now(UTC))
        async with await _open(settings) as store:
            schedule = await store.schedule_suspension(args.id, at, actor)
        sys.stdout.write(f"customer {args.id}: suspension scheduled at "
                         f"{_local(schedule['due_at'])} (ticket {args.ticket}); from then on "
                         "only must-reach numbers pass and live calls are hung up; "
                         "`customer reactivate` cancels it\n")
        return 0
    async with await _open(settings) as store:
        await store.suspend(args.id, actor)
    sys.stdout.write(f"customer {args.id} suspended (ticket {args.ticket}); "
                     "only must-reach numbers pass\n")
    return 0


async def cmd_customer_remind(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(UTC)
    sent = parse_sent_date(args.sent, now)
    actor = Actor(args.by, args.ticket, args.reason)
    async with await _open(settings) as store:
        result = await store.record_reminder(args.id, sent, actor)
        schedule = result.schedule
        due_now = result.created and schedule is not None and schedule["due_at"] <= iso(
            datetime.now(UTC))
        if due_now:  # write it now, as the daemon would within a second
            try:
                await store.apply_due_suspensions(datetime.now(UTC), args.id)
            except StoreError as exc:  # the reminder is recorded; calls are refused anyway
                sys.stderr.write(f"{PROG}: warning: suspension not written yet ({exc}); "
                                 "calls are refused already, the daemon writes it\n")
    out = [f"payment reminder of {sent} recorded for {args.id} (ticket {args.ticket})"]
    if due_now:
        assert schedule is not None
        out.append(f"first reminder: {REMINDER_GRACE_DAYS} calendar days after {sent} is "
                   f"{_local(schedule['due_at'])}, already past: the suspension is due at "
                   f"once; customer {args.id} is suspended now, only must-reach numbers pass")
    elif result.created:
        assert schedule is not None
        out.append(f"first reminder: suspension scheduled at {_local(schedule['due_at'])} "
                   f"(00:00 Brussels, {REMINDER_GRACE_DAYS} calendar days after {sent}, art. "
                   "5.7); `customer paid` or `customer reactivate` cancels it")
    elif result.suspended:
        out.append(f"customer {args.id} is already suspended: nothing scheduled")
    elif schedule is not None:
        out.append(f"{'first' if result.first else 'not the first'} reminder of this unpaid "
                   f"episode: the suspension stays scheduled at {_local(schedule['due_at'])} "
                   f"(ticket {schedule['ticket']})")
    else:
        out.append("not the first reminder of this unpaid episode and no suspension is "
                   "scheduled (it was cancelled): use `customer suspend --at` to schedule one")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def _cancelled_text(schedule: dict[str, Any]) -> str:
    return (f"cancelled the suspension scheduled at {_local(schedule['due_at'])} "
            f"(ticket {schedule['ticket']})")


async def cmd_customer_paid(args: argparse.Namespace, settings: Settings) -> int:
    actor = Actor(args.by, args.ticket, args.reason)
    async with await _open(settings) as store:
        done = await store.record_payment(args.id, actor)
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
    async with await _open(settings) as store:
        done = await store.reactivate(args.id, actor)
    cancelled = f"; {_cancelled_text(done.cancelled)}" if done.cancelled else ""
    if done.reactivated:
        sys.stdout.write(f"customer {args.id} reactivated (ticket {args.ticket}){cancelled}\n")
    else:
        sys.stdout.write(f"customer {args.id} stays active (ticket {args.ticket}){cancelled}\n")
    return 0


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
    async with await _open(settings) as store:
        unblock_id = await store.add_unblock(args.id, kind, value, actor, expires)
    until = f"until {expires.isoformat(timespec='seconds')}" if expires else "until reblocked"
    shown = national_form(value) if kind is UnblockKind.PREFIX else value
    sys.stdout.write(f"unblock #{unblock_id}: {args.id} may call {kind.value} {shown} {until}\n")
    return 0


async def cmd_reblock(args: argparse.Namespace, settings: Settings) -> int:
    kind, value, _ = _unblock_target(args, settings)
    actor = Actor(args.by, args.ticket, args.reason)
    async with await _open(settings) as store:
        ids = await store.reblock(args.id, kind, value, actor)
    shown = national_form(value) if kind is UnblockKind.PREFIX else value
    sys.stdout.write(f"{args.id}: {kind.value} {shown} blocked again "
                     f"(revoked unblock {', '.join('#' + str(i) for i in ids)})\n")
    return 0


async def cmd_unblocks(args: argparse.Namespace, settings: Settings) -> int:
    async with await _open(settings, readonly=True) as store:
        if args.id is not None and await store.customer(args.id) is None:
            raise OperationalError(f"unknown customer {args.id!r}")
        rows = await store.unblocks(args.id, include_inactive=args.all)
    if args.json:
        for row in rows:
            _print_json(row)
    elif rows:
        sys.stdout.write(_table(rows, ("id", "customer_id", "kind", "value", "state",
                                       "expires_at", "ticket", "created_by", "created_at")))
    else:
        sys.stdout.write("no active unblocks\n" if not args.all else "no unblocks\n")
    return 0


async def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    async with await _open(settings, readonly=True) as store:
        if args.id is not None and await store.customer(args.id) is None:
            raise OperationalError(f"unknown customer {args.id!r}")
        rows = await store.audit_log(args.id, args.limit)
    if args.json:
        for row in rows:
            _print_json(row)
    elif rows:
        sys.stdout.write(_table(rows, ("id", "at", "actor", "action", "customer_id", "ticket",
                                       "reason")))
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


def _warn(message: str) -> None:
    sys.stderr.write(f"{PROG}: warning: {message}\n")


async def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """Decide as a live call would: an unknown customer or endpoint is not an error (a live
    call from it gets a decision too: blocked, but must-reach numbers pass)."""
    if args.customer is None and args.endpoint is None:
        raise UsageError("give --customer ID or --endpoint NAME (whose call to decide)")
    async with await _open(settings, readonly=True) as store:
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
        _warn(f"{who} is unknown: decided as a live call from it would be "
              "(refused; must-reach numbers pass)")
    elif args.endpoint is not None and args.endpoint not in endpoints:
        _warn(f"customer {customer_id!r} has no endpoint {args.endpoint!r}: deciding "
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
            _print_json(decision.to_dict())
        else:
            sys.stdout.write(_describe(decision))
    return 0


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from ..service.daemon import serve  # the CLI's other commands don't need the daemon's imports

    configure_logging(settings.log_format, level=args.log_level)
    return await serve(settings, getattr(args, "config", None), getattr(args, "db", None))


def cmd_watchdog(args: argparse.Namespace, settings: Settings) -> int:
    """Not async: the supervisor owns the main thread and its signals."""
    from ..service.watchdog import supervise

    configure_logging(settings.log_format, level="INFO")
    command = [sys.executable, "-m", "callpolicy.cli", "serve", "--log-level", args.log_level]
    if getattr(args, "config", None):
        command += ["--config", args.config]
    if getattr(args, "db", None):
        command += ["--db", args.db]
    return supervise(command, args.watchdog_sec, args.pidfile)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Not async: one short blocking HTTP request."""
    from ..service.status import (
        EXIT_DEGRADED,
        StatusUnavailable,
        fetch,
        problems,
        render,
        status_url,
    )

    url = status_url(settings.metrics_host, settings.metrics_port)
    try:
        status = fetch(url)
    except StatusUnavailable as exc:
        raise OperationalError(str(exc)) from None
    found = problems(status)
    if args.json:
        _print_json({**status, "healthy": not found, "problems": found})
    else:
        sys.stdout.write(render(status))
    return EXIT_DEGRADED if found else 0


async def cmd_must_reach_dialplan(args: argparse.Namespace, settings: Settings) -> int:
    from ..asterisk.dialplan import must_reach_context

    sys.stdout.write(must_reach_context(settings.policy))
    return 0


def _limits_view(customer_id: str, own: FraudLimits, defaults: FraudLimits) -> dict[str, Any]:
    effective = own.over(defaults)
    return {
        "customer": customer_id,
        "effective": limits_dict(effective),
        "source": {name: "customer" if getattr(own, name) is not None else "default"
                   for name in LIMIT_FIELDS},
        "customer_limits": limits_dict(own),
        "defaults": limits_dict(defaults),
    }


def _limits_text(view: dict[str, Any]) -> str:
    lines = []
    for name in LIMIT_FIELDS:
        value = view["effective"][name]
        shown = "no cap" if value is None else str(value)
        source = ("customer" if view["source"][name] == "customer"
                  else "operator default, config [fraud]")
        lines.append(f"{name:<22}{shown:>6}  ({source})")
    return "\n".join(lines) + "\n"


async def cmd_limits_show(args: argparse.Namespace, settings: Settings) -> int:
    async with await _open(settings, readonly=True) as store:
        own = await store.limits(args.id)
    view = _limits_view(args.id, own, settings.policy.fraud_limits)
    if args.json:
        _print_json(view)
    else:
        sys.stdout.write(f"fraud limits of {args.id}\n" + _limits_text(view))
    return 0


async def cmd_limits_set(args: argparse.Namespace, settings: Settings) -> int:
    changes = {name: getattr(args, name) for name in LIMIT_FIELDS
               if getattr(args, name) is not None}
    defaults = list(dict.fromkeys(args.default or ()))
    if not changes and not defaults:
        raise UsageError("nothing to change: give --max-concurrent, --max-per-minute, "
                         "--max-concurrent-risky or --default FIELD")
    for name in defaults:
        if name in changes:
            raise UsageError(f"--{name.replace('_', '-')} and --default {name} contradict "
                             "each other")
    actor = Actor(args.by, args.ticket, args.reason)
    async with await _open(settings) as store:
        own = await store.limits(args.id)
        new = replace(own, **changes, **dict.fromkeys(defaults))
        changed = await store.set_limits(args.id, new, actor)
    view = _limits_view(args.id, new, settings.policy.fraud_limits)
    if changed:
        sys.stdout.write(f"fraud limits of {args.id} set (ticket {args.ticket}); a running "
                         "daemon applies them within a second\n")
    else:
        sys.stdout.write(f"fraud limits of {args.id} unchanged (already so); nothing written\n")
    sys.stdout.write(_limits_text(view))
    return 0


TABLE_LIMIT = 100
_CALL_TABLE = ("started_at", "customer_id", "endpoint", "dialled", "destination", "action",
               "reason", "free", "billable_seconds", "hangup_cause")
_PHONE_TEXT = re.compile(r"[0-9 +\-.()/#*]*")


def _csv_cell(value: object) -> object:
    """Spreadsheets run a cell starting with = + - @ as a formula: neutralise those (unless
    it is just a number, like +3292101234). A flag (free) is true/false, as in --json."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if (isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r")
            and not _PHONE_TEXT.fullmatch(value)):
        return "'" + value
    return value


def _table_row(record: CallRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in _CALL_TABLE}
    row["started_at"] = (record.started_at.astimezone(UTC).isoformat(timespec="seconds")
                         if record.started_at else "?")
    row["free"] = "free" if record.free else ""
    row["billable_seconds"] = str(record.billable_seconds)
    return row


async def cmd_calls_list(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(UTC)
    since = parse_moment(args.since, "--since", now) if args.since else None
    until = parse_moment(args.until, "--until", now) if args.until else None
    if since is not None and until is not None and since >= until:
        raise UsageError("--since must be before --until")
    async with await _open(settings, readonly=True) as store:
        if args.id is not None and await store.customer(args.id) is None:
            raise OperationalError(f"unknown customer {args.id!r}")
        if args.json or args.csv:
            writer = csv.writer(sys.stdout, lineterminator="\n") if args.csv else None
            if writer is not None:
                writer.writerow(CSV_COLUMNS)

            def emit(record: CallRecord) -> None:
                if writer is not None:
                    writer.writerow([_csv_cell(v) for v in record.to_dict().values()])
                else:
                    _print_json(record.to_dict())

            if args.limit is not None:
                for record in await store.calls(args.id, since, until, args.limit):
                    emit(record)
            else:  # streamed: an export of months of calls does not sit in memory
                async with contextlib.aclosing(store.iter_calls(args.id, since, until)) as stream:
                    async for record in stream:
                        emit(record)
            return 0
        limit = args.limit or TABLE_LIMIT
        rows = await store.calls(args.id, since, until, limit + 1)
    truncated = len(rows) > limit
    rows = rows[1:] if truncated else rows
    if not rows:
        sys.stdout.write("no calls\n")
        return 0
    sys.stdout.write(_table([_table_row(r) for r in rows], _CALL_TABLE))
    if truncated:
        sys.stdout.write(f"(the last {limit} calls; --limit N, --since or --csv for more)\n")
    return 0


async def cmd_calls_purge(args: argparse.Namespace, settings: Settings) -> int:
    retention = settings.calls_retention_days
    text = args.older_than or f"{retention}d"
    age = parse_duration(text, "--older-than")
    if age < timedelta(days=retention):
        sys.stderr.write(f"{PROG}: warning: --older-than {text} is shorter than the retention "
                         f"(calls.retention_days = {retention}): deleting records within it\n")
    cutoff = datetime.now(UTC) - age
    actor = Actor(args.by, args.ticket, args.reason)
    async with await _open(settings) as store:
        count = await store.purge_calls(cutoff, actor)
    sys.stdout.write(f"deleted {count} call record(s) that started before "
                     f"{cutoff.isoformat(timespec='seconds')} (ticket {args.ticket})\n")
    return 0


# -- parser -------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    # --db/--config are accepted before or after the sub-command.
    common = _Parser(add_help=False)  # only a parent: its arguments are copied
    common.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS,
                        help="SQLite database (default: $CALLPOLICY_DB, else the config file's "
                             "[store] path)")
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="config file (default: $CALLPOLICY_CONFIG, else "
                             "/etc/callpolicy/callpolicy.toml, else the repo's "
                             "config/callpolicy.toml)")
    json_flag = _Parser(add_help=False)
    json_flag.add_argument("--json", action="store_true",
                           help="one JSON object per line, for scripts")
    who = _Parser(add_help=False)
    who.add_argument("--by", required=True, metavar="WHO", type=_audit_text("who makes the change"),
                     help="who makes the change (audit; printable, at most "
                          f"{MAX_AUDIT_TEXT} characters, like --ticket and --reason)")
    who.add_argument("--ticket", required=True, metavar="REF",
                     type=_audit_text("the ticket reference"),
                     help="ticket or e-mail reference (audit)")
    who.add_argument("--reason", metavar="TEXT", type=_audit_text("the reason"),
                     help="free text (audit)")
    target = _Parser(add_help=False)
    group = target.add_mutually_exclusive_group(required=True)
    group.add_argument("--prefix", metavar="P",
                       help="number prefix, national (0905) or E.164 (+32905, +4122)")
    group.add_argument("--country", metavar="CC", help="ISO country code outside the EU (CH)")
    group.add_argument("--category", metavar="C", help="premium or non_eu (the whole category)")

    parser = _Parser(
        prog=PROG, parents=[common],
        description="Ops CLI of the call policy: customers, their exceptions to the default "
                    "blocks (contract art. 3.10), suspensions (art. 5.7), fraud limits, call "
                    "records (art. 4.3), the audit log, and `check` to see how a call would be "
                    "decided and why.",
        epilog="Exit codes: 0 ok, 1 operational error, 2 bad usage. "
               "Changes are committed before the command reports success; a running daemon "
               "picks them up within a second.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    customer = sub.add_parser("customer", parents=[common], help="import, show, list, suspend, "
                              "reactivate customers; payment reminders")
    csub = customer.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    csub.required = True
    p = csub.add_parser("import", parents=[common], help="create or update customers from TOML",
                        description="Create or update customers from a TOML file ([[customer]] "
                        "tables, see README). Any problem in the file or with the database "
                        "aborts the import before anything is written; big files are then "
                        "written in batches (a failure names what was written). "
                        "Status of existing customers is not changed by a file: use suspend "
                        "or reactivate.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--by", metavar="WHO", type=_audit_text("who makes the change"),
                   help="who imports (default: your user name)")
    p.add_argument("--ticket", metavar="REF", type=_audit_text("the ticket reference"),
                   help="ticket reference (audit)")
    p.add_argument("--dry-run", action="store_true", help="validate only, write nothing")
    p.add_argument("--accept-zone-violations", action="store_true",
                   help="import geographic numbers outside the installation zone (art. 3.8) "
                        "with a warning instead of refusing")
    p.set_defaults(func=cmd_customer_import)
    p = csub.add_parser("show", parents=[common, json_flag], help="one customer in full")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_customer_show)
    p = csub.add_parser("list", parents=[common, json_flag], help="all customers")
    p.set_defaults(func=cmd_customer_list)
    p = csub.add_parser("suspend", parents=[common, who],
                        help="suspend for non-payment (art. 5.7): only must-reach numbers pass",
                        description="Suspend a customer (art. 5.7): only must-reach numbers "
                        "pass, live calls to other numbers are hung up. Now, or at --at (a "
                        "scheduled suspension: calls are refused from that second on; "
                        "`customer reactivate` or `customer paid` cancels it).")
    p.add_argument("id", metavar="ID")
    p.add_argument("--at", metavar="ISO8601",
                   help="suspend at this future time (at most 10 years ahead), with "
                        "timezone, e.g. 2026-12-01T00:00+01:00")
    p.set_defaults(func=cmd_customer_suspend)
    p = csub.add_parser("reactivate", parents=[common, who],
                        help="lift a suspension and cancel a scheduled one",
                        description="Lift the customer's suspension and cancel a pending "
                        "scheduled suspension (on an active customer: only the latter). "
                        "Does not close the payment-reminder episode: `customer paid` does.")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_customer_reactivate)
    p = csub.add_parser(
        "remind", parents=[common, who],
        help="record a payment reminder; the first one schedules the suspension (art. 5.7)",
        description="Record a payment reminder sent on DATE. Art. 5.7: the FIRST reminder of "
        "an unpaid episode schedules the suspension at 00:00 Europe/Brussels time of DATE + 15 "
        "calendar days (if that is already past, the customer is suspended at once). Later "
        "reminders of the same episode are recorded and do not move the date. `customer "
        "paid` closes the episode and cancels the suspension (or lifts it).")
    p.add_argument("id", metavar="ID")
    p.add_argument("--sent", required=True, metavar="DATE",
                   help="the day the reminder was sent, YYYY-MM-DD, not in the future, at "
                        "most 10 years ago")
    p.set_defaults(func=cmd_customer_remind)
    p = csub.add_parser(
        "paid", parents=[common, who],
        help="record payment: close the reminders, cancel or lift the suspension (art. 5.7)",
        description="Record that the customer paid (art. 5.7, 'reactivated after payment'): "
        "closes the open payment-reminder episode, cancels a pending scheduled suspension "
        "and reactivates a suspended customer. Error if there is nothing of these.")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_customer_paid)

    p = sub.add_parser("unblock", parents=[common, target, who],
                       help="open a blocked prefix, country or category for a customer",
                       description="Open a default block for one customer (art. 3.10, 'op "
                       "eenvoudig verzoek'). Longest prefix wins: --prefix 090 does not open "
                       "0905.")
    p.add_argument("id", metavar="ID")
    expiry = p.add_mutually_exclusive_group()
    expiry.add_argument("--expires", metavar="ISO8601",
                        help="end time with timezone, e.g. 2026-12-01T18:00+01:00 (at "
                             "most 10 years ahead)")
    expiry.add_argument("--for", dest="for_", metavar="DURATION",
                        help=f"duration: 30m, 12h, 7d, 2w, 1h30m (at most {MAX_SPAN_TEXT})")
    p.set_defaults(func=cmd_unblock)
    p = sub.add_parser("reblock", parents=[common, target, who],
                       help="revoke a customer's active unblock(s) of a prefix/country/category")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_reblock)
    p = sub.add_parser("unblocks", parents=[common, json_flag],
                       help="active unblocks (of one customer, or all)")
    p.add_argument("id", metavar="ID", nargs="?")
    p.add_argument("--all", action="store_true", help="include expired and reblocked ones")
    p.set_defaults(func=cmd_unblocks)
    p = sub.add_parser("audit", parents=[common, json_flag], help="the audit log, newest last")
    p.add_argument("id", metavar="ID", nargs="?")
    p.add_argument("--limit", type=_whole(1, MAX_COUNT), default=50, metavar="N",
                   help=f"last N entries (default 50, at most {MAX_COUNT})")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("check", parents=[common, json_flag],
                       help="decide numbers exactly as a live call would, and say why",
                       description="Decide each NUMBER for a customer (or the customer of an "
                       "endpoint) exactly as a live call would, and name the rule that decided. "
                       "An unknown customer or endpoint is decided too, as a live call from it "
                       "would be, with a warning on stderr. Exit 0 whatever the decisions. "
                       "With --json, one JSON object per line.")
    p.add_argument("--customer", metavar="ID",
                   help="whose rights decide (an unknown one is decided as a live call would "
                        "be: refused, must-reach numbers pass; a warning says so)")
    p.add_argument("--endpoint", metavar="NAME",
                   help="the PJSIP endpoint calling; without --customer, its customer decides")
    p.add_argument("--source-ip", metavar="IP", type=_source_ip,
                   help="the calling device's IP (emergency "
                   "location)")
    p.add_argument("--caller-id", metavar="NUM", help="caller ID the phone asks for (or the "
                   "original caller on a forwarded call)")
    p.add_argument("--privacy", action="store_true", help="the phone asked for privacy")
    p.add_argument("--forwarded-from", metavar="NUM",
                   help="decide the forwarded leg of a call to this customer number")
    p.add_argument("numbers", metavar="NUMBER", nargs="+")
    p.set_defaults(func=cmd_check)

    limits = sub.add_parser(
        "limits", parents=[common], help="a customer's fraud limits: show, set",
        description="Fraud limits cap a customer's external calls: up at once "
        "(max_concurrent), started in the last minute (max_per_minute), and non-EU or "
        "unblocked premium calls up at once (max_concurrent_risky). Each is the customer's "
        "own value if set, else the operator default from the config's [fraud] section.")
    lsub = limits.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    lsub.required = True
    p = lsub.add_parser("show", parents=[common, json_flag],
                        help="effective limits, and whether each is the customer's own or the "
                        "operator default")
    p.add_argument("id", metavar="ID")
    p.set_defaults(func=cmd_limits_show)
    p = lsub.add_parser("set", parents=[common, who],
                        help="set or clear (--default) a customer's own limits",
                        description="Set a customer's own fraud limits (N from 0 to "
                        f"{MAX_COUNT}; 0 allows no such calls), or give one back to the "
                        "operator default with --default FIELD. Limits not named keep their "
                        "value. Audited; a running daemon applies the change within a second.")
    p.add_argument("id", metavar="ID")
    p.add_argument("--max-concurrent", type=_whole(0, MAX_COUNT), metavar="N",
                   help="external calls up at once")
    p.add_argument("--max-per-minute", type=_whole(0, MAX_COUNT), metavar="N",
                   help="external calls started in the last 60 s")
    p.add_argument("--max-concurrent-risky", type=_whole(0, MAX_COUNT), metavar="N",
                   help="non-EU or unblocked premium calls up at once")
    p.add_argument("--default", type=_limit_field, nargs="+", action="extend", metavar="FIELD",
                   help="use the operator default for these: max_concurrent, max_per_minute, "
                        "max_concurrent_risky")
    p.set_defaults(func=cmd_limits_set)

    calls = sub.add_parser(
        "calls", parents=[common], help="call records (billable seconds, art. 4.3): list, purge",
        usage=f"{PROG} calls [list] [ID] [--since T] [--until T] [--limit N] [--json | --csv]\n"
              f"       {PROG} calls purge [--older-than DURATION] --by WHO --ticket REF",
        description="Call records: every call the policy decided, with its decision, answer "
        "and hang-up times and billable seconds (art. 4.3: from the answer to the hang-up, "
        "rounded up; 0 for refused or unanswered calls, and for free calls: emergency, "
        "must-reach and 0800 numbers, marked free, their duration kept). `calls` and "
        "`calls ID` are short for "
        "`calls list` and `calls list ID`; `calls purge` deletes old records (a customer "
        "named list or purge: `calls list purge`).")
    calls.implicit_action = ("list", ("list", "purge"))
    ksub = calls.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser,
                                prog=f"{PROG} calls")  # not the two-line usage
    ksub.required = True
    p = ksub.add_parser(
        "list", parents=[common], help="call records, oldest first (the default action)",
        description="Call records by start time, oldest first: all customers or customer ID. "
        "--since/--until take an ISO 8601 time with a timezone (2026-06-01T00:00+02:00) or a "
        "duration ago (24h, 7d); --since is inclusive, --until exclusive. The table shows the "
        f"last {TABLE_LIMIT} unless --limit N; --json (one object per line) and --csv (a "
        "header row, UTC ISO 8601 times, free, duration_seconds, billable_seconds) give all, "
        "for export. In CSV, "
        "text a spreadsheet would run as a formula is prefixed with '.")
    p.add_argument("id", metavar="ID", nargs="?")
    p.add_argument("--since", metavar="T", help="calls that started at or after T (within "
                   "10 years of now)")
    p.add_argument("--until", metavar="T", help="calls that started before T")
    p.add_argument("--limit", type=_whole(1, MAX_COUNT), metavar="N",
                   help=f"only the last N calls (at most {MAX_COUNT})")
    formats = p.add_mutually_exclusive_group()
    formats.add_argument("--json", action="store_true", help="one JSON object per line")
    formats.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.set_defaults(func=cmd_calls_list)
    p = ksub.add_parser(
        "purge", parents=[common, who], help="delete call records older than a duration",
        description="Delete the call records of calls that started more than DURATION ago "
        "(default: the config's calls.retention_days). The purge is audited with the count; "
        "the audit log itself is never purged.")
    p.add_argument("--older-than", metavar="DURATION",
                   help="30d, 26w, 180d, at most 3650d (default: calls.retention_days from "
                        "the config)")
    p.set_defaults(func=cmd_calls_purge)

    p = sub.add_parser("serve", parents=[common],
                       help="run the FastAGI daemon that decides live calls for Asterisk",
                       description="Run the FastAGI policy daemon (listen address and lists from "
                       "the config file). Loads the customers into memory, then "
                       "listens; picks up CLI changes within a second; SIGHUP re-reads the "
                       "config; SIGTERM/SIGINT stop it. Logs one JSON line per decision.")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"),
                   help="INFO logs every decision (default); WARNING only blocks' anomalies")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("watchdog", parents=[common],
                       help="run `serve` under a watchdog (for machines without systemd)",
                       description="Run `callpolicy serve` and kill+restart it when its event "
                       "loop stops pinging (systemd notify protocol). Asterisk waits forever "
                       "on a frozen FastAGI server; a killed one releases the calls to the "
                       "fallback AGI. Under systemd, use Type=notify and WatchdogSec instead.")
    p.add_argument("--watchdog-sec", type=_seconds(0.1, 600), default=1.0, metavar="S",
                   help="kill the daemon after S seconds without a ping (default 1; 0.1 to "
                        "600)")
    p.add_argument("--pidfile", metavar="PATH", help="write the daemon's PID here")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING"))
    p.set_defaults(func=cmd_watchdog)

    p = sub.add_parser(
        "status", parents=[common, json_flag],
        help="the running daemon: AMI link, fraud guard, snapshot age, live calls, decisions",
        description="Ask the running daemon (over HTTP, at the config's [metrics] listen "
        "address, /status) for its state: the AMI link (connected, down, not configured; "
        "since when), whether the fraud guard's concurrent-call limits are enforced (not "
        "while the AMI link is down: live calls cannot be tracked; per-minute limits always "
        "are), the snapshot's age and audit high-water mark, live calls per customer "
        "(concurrent, started in the last minute), and the decision counts.",
        epilog="Exit codes: 0 healthy; 3 degraded (AMI link down or not configured, "
        "snapshot not refreshed for over 5 s); 1 no daemon answering.")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("must-reach-dialplan", parents=[common],
                       help="print the dialplan's last-resort must-reach list (from the config)",
                       description="Print dialplan/must-reach.conf for the config's must-reach "
                       "numbers: what the dialplan lets through when neither the daemon nor "
                       "the fallback can decide. Regenerate after changing the list: "
                       "callpolicy must-reach-dialplan > dialplan/must-reach.conf")
    p.set_defaults(func=cmd_must_reach_dialplan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[..., Any] = args.func
    try:
        settings = load_settings(getattr(args, "config", None))
        # The audit table records every change; stderr is for errors and warnings.
        configure_logging(settings.log_format, level="WARNING")
        if getattr(args, "db", None):
            settings = _with_db(settings, args.db)
        if not asyncio.iscoroutinefunction(func):
            return func(args, settings)
        return asyncio.run(func(args, settings))
    except UsageError as exc:
        command = " ".join(filter(None, (PROG, args.command, getattr(args, "action", None))))
        sys.stderr.write(f"{command}: error: {exc} (see {command} --help)\n")
        return 2
    except (OperationalError, StoreError, ConfigError) as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 1
    except sqlite3.Error as exc:  # a read that failed after opening: say why, in one line
        sys.stderr.write(f"{PROG}: error: database {settings.db_path}: "
                         f"{explain(exc, settings.db_path)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:  # `callpolicy calls --csv | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        if os.environ.get("CALLPOLICY_DEBUG"):
            raise
        sys.stderr.write(f"{PROG}: internal error: {type(exc).__name__}: {exc} "
                         "(CALLPOLICY_DEBUG=1 for details)\n")
        return 1


def _with_db(settings: Settings, db: str) -> Settings:
    return replace(settings, db_path=Path(db))


