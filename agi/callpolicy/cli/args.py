"""Argument parsing for the ops CLI: the parser class, option value types and limits, usage
and operational errors."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import NoReturn

from ..ops.values import MAX_AUDIT_TEXT, MAX_SPAN, MAX_SPAN_TEXT
from ..ops.values import MAX_COUNT as MAX_COUNT  # re-exported: the parser's --limit
from ..policy.location import parse_ip
from ..store import LIMIT_FIELDS, contract_today
from .text import CUT

PROG = "callpolicy"


class UsageError(Exception):
    """Bad usage found after parsing (exit 2)."""


class OperationalError(Exception):
    """Exit 1 with this message (the CLI's own; an operation raises ops.OpsError)."""


def option_name(field: str) -> str:
    """The option that gives an operation's input (`older_than` -> `--older-than`)."""
    return "--" + field.replace("_", "-")


# options that take a value (to find a command's first positional word)
_VALUE_OPTIONS = frozenset({"--db", "--config", "--since", "--until", "--limit", "--older-than",
                            "--by", "--ticket", "--reason"})


class Parser(argparse.ArgumentParser):
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


_DURATION = re.compile(r"(\d+)([smhdw])")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# The ranges every value on the command line is checked against (documented in --help/README),
# shared with the HTTP API: ops/values.py.


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


def whole_type(low: int, high: int) -> Callable[[str], int]:
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


def audit_text_type(what: str) -> Callable[[str], str]:
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


def source_ip_type(text: str) -> str:
    """argparse type for check --source-ip: an IP address, as Asterisk reports it."""
    if parse_ip(text) is None:
        raise argparse.ArgumentTypeError(
            f"{_quoted(text)} is not an IP address (like 192.0.2.10, 192.0.2.10:5060 or "
            "2001:db8::1)")
    return text.strip()


def seconds_type(low: float, high: float) -> Callable[[str], float]:
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


def limit_field(text: str) -> str:
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


Subparsers = argparse._SubParsersAction  # what add_subparsers returns: add_parser() on it


@dataclass(frozen=True)
class Parents:
    """Option sets several commands share, copied in through argparse's `parents=`."""

    common: Parser  # --db, --config
    json_flag: Parser  # --json
    who: Parser  # --by, --ticket, --reason: the audit of a change
    target: Parser  # --prefix | --country | --category of an unblock or reblock


def add_watchdog_options(parser: argparse.ArgumentParser, what: str, default: float) -> None:
    """--watchdog-sec and --pidfile of `watchdog` and `api watchdog` (`what`: "the daemon")."""
    parser.add_argument("--watchdog-sec", type=seconds_type(0.1, 600), default=default,
                        metavar="S", help=f"kill {what} after S seconds without a ping "
                        f"(default {default:g}; 0.1 to 600)")
    parser.add_argument("--pidfile", metavar="PATH", help=f"write the PID of {what} here")
