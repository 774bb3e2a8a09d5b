"""`callpolicy calls list|purge`: call records (art. 4.3)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .. import ops
from ..live.records import CSV_COLUMNS, CallRecord
from ..ops.calls import Period, calls, iter_calls, plan_purge, purge_calls
from ..service.config import Settings
from ..store import Actor
from .args import parse_duration, parse_moment
from .output import print_json, render_table, warn

TABLE_LIMIT = 100


_CALL_TABLE = ("started_at", "node", "customer_id", "endpoint", "dialled", "destination",
               "action", "reason", "free", "billable_seconds", "hangup_cause")


def _table_row(record: CallRecord) -> dict[str, Any]:
    row = {name: getattr(record, name) for name in _CALL_TABLE}
    row["started_at"] = (record.started_at.astimezone(UTC).isoformat(timespec="seconds")
                         if record.started_at else "?")
    row["node"] = record.node or ""
    row["free"] = "free" if record.free else ""
    row["billable_seconds"] = str(record.billable_seconds)
    return row


def _exporter(*, csv_format: bool) -> Callable[[CallRecord], None]:
    """Writes one record as a CSV row (the header row first) or a JSON line."""
    if not csv_format:
        return lambda record: print_json(record.to_dict())
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    return lambda record: writer.writerow(record.csv_row())


async def cmd_calls_list(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(UTC)
    since = parse_moment(args.since, "--since", now) if args.since else None
    until = parse_moment(args.until, "--until", now) if args.until else None
    period = Period(since, until)
    async with await ops.open_store(settings, readonly=True) as store:
        if args.json or args.csv:  # the customer is checked before the first line
            if args.limit is not None:
                records = await calls(store, args.id, period, args.limit)
                emit = _exporter(csv_format=args.csv)
                for record in records:
                    emit(record)
            else:  # streamed: an export of months of calls does not sit in memory
                stream = await iter_calls(store, args.id, period)
                emit = _exporter(csv_format=args.csv)
                async with contextlib.aclosing(stream):
                    async for record in stream:
                        emit(record)
            return 0
        limit = args.limit or TABLE_LIMIT
        rows = await calls(store, args.id, period, limit + 1)
    truncated = len(rows) > limit
    rows = rows[1:] if truncated else rows
    if not rows:
        sys.stdout.write("no calls\n")
        return 0
    sys.stdout.write(render_table([_table_row(r) for r in rows], _CALL_TABLE))
    if truncated:
        sys.stdout.write(f"(the last {limit} calls; --limit N, --since or --csv for more)\n")
    return 0


async def cmd_calls_purge(args: argparse.Namespace, settings: Settings) -> int:
    retention = settings.calls_retention_days
    text = args.older_than or f"{retention}d"
    plan = plan_purge(parse_duration(text, "--older-than"), retention)
    if plan.within_retention:
        warn(f"--older-than {text} is shorter than the retention "
             f"(calls.retention_days = {retention}): deleting records within it")
    actor = Actor(args.by, args.ticket, args.reason)
    async with await ops.open_store(settings) as store:
        count = await purge_calls(store, plan, actor)
    sys.stdout.write(f"deleted {count} call record(s) that started before "
                     f"{plan.cutoff.isoformat(timespec='seconds')} (ticket {args.ticket})\n")
    return 0
