"""What the store takes and gives besides policy values: records, actors, results, errors,
and the contract's time helpers (timestamps, Brussels dates, suspension due dates)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from ..policy import Address, FraudLimits

LIMIT_FIELDS = ("max_concurrent", "max_per_minute", "max_concurrent_risky")
# Art. 5.7: the operator may deactivate the service 15 calendar days after the first payment
# reminder. The days are Belgian calendar days: the suspension is due at 00:00 Brussels time.
REMINDER_GRACE_DAYS = 15
IDEMPOTENCY_PENDING = 0  # an Idempotency-Key claimed by a write that has not answered yet
CONTRACT_TIMEZONE = "Europe/Brussels"
SCHEDULER = "callpolicy-scheduler"  # the audit actor of a scheduled suspension coming due


def _span(ids: Sequence[str], first: int) -> str:
    """Customers by their position in the import: '#1-#3 (a, b, c)' or '#1-#900 (a … z)'."""
    last = first + len(ids) - 1
    names = ", ".join(ids) if len(ids) <= 10 else f"{ids[0]} … {ids[-1]}"
    return f"#{first}-#{last} ({names})"


class StoreError(Exception):
    """An operational error with a message fit for an ops engineer."""


class StoreReplaced(StoreError):
    """The database under a long-running reader is no longer the one it loaded."""


class ImportIncomplete(StoreError):
    """An import failed after some of its transactions were committed: `written` (the first
    customers of the file, committed and audited) and `not_written` (the rest)."""

    def __init__(self, records: Sequence[CustomerRecord], done: int, cause: BaseException
                 ) -> None:
        self.written = [r.id for r in records[:done]]
        self.not_written = [r.id for r in records[done:]]
        super().__init__(
            f"import stopped: {cause}; written and audited: customers "
            f"{_span(self.written, 1)}; NOT written: customers "
            f"{_span(self.not_written, done + 1)}; import the same file again to finish "
            "(the written customers come out unchanged)")


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds") if moment else None


def parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@functools.cache
def contract_zone() -> ZoneInfo:
    """Brussels time, looked up on first use (the fallback AGI never needs it)."""
    return ZoneInfo(CONTRACT_TIMEZONE)


def contract_today(now: datetime) -> date:
    return now.astimezone(contract_zone()).date()


def suspension_due(first_reminder: date) -> datetime:
    """When a first payment reminder sent on this date lets the operator suspend (art. 5.7):
    00:00 Brussels time, 15 calendar days later."""
    day = first_reminder + timedelta(days=REMINDER_GRACE_DAYS)
    return datetime.combine(day, time(0), tzinfo=contract_zone())


@dataclass(frozen=True, slots=True)
class AuditTail:
    """The audit log from row `since` on, read in one query (a daemon's refresh, 4 times a
    second: one round trip when nothing changed)."""

    since_at: str | None  # the `at` of row `since`; None: no such row (or `since` is 0)
    changed: frozenset[str]  # customers named in the rows after it
    high_water: int  # the last row's id (`since` when none came after)
    high_water_at: str | None  # its `at` (`since_at` when none came after)


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    name: str
    number: str | None


@dataclass(frozen=True, slots=True)
class CustomerRecord:
    """A customer as imported: validated and normalised (see store/importer.py)."""

    id: str
    name: str
    status: str
    main_number: str
    numbers: tuple[str, ...]
    install_address: Address
    site_networks: tuple[str, ...] = ()
    verified_forward_targets: tuple[str, ...] = ()
    endpoints: tuple[EndpointRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class Actor:
    by: str
    ticket: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class ImportResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, other: ImportResult) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.warnings += other.warnings


@dataclass(frozen=True, slots=True)
class ReminderResult:
    reminder_id: int
    first: bool  # the first reminder of the customer's open episode
    schedule: dict[str, Any] | None  # the pending scheduled suspension after the reminder
    created: bool  # this reminder created that schedule
    suspended: bool  # the customer is (already) suspended


@dataclass(frozen=True, slots=True)
class Settlement:
    """What `reactivate` or `paid` changed."""

    reactivated: bool
    cancelled: dict[str, Any] | None  # the pending scheduled suspension it cancelled
    closed_reminders: int = 0


def limits_dict(limits: FraudLimits) -> dict[str, int | None]:
    return {name: getattr(limits, name) for name in LIMIT_FIELDS}
