"""Call records: one row per call leg the policy decided (contract art. 4.3).

A record is written in steps as the daemon learns about the call: at the decision (who, what,
which rule), at the answer, at the hang-up. Each step is a `CallRecord` with only what is new;
`Store.record_calls` merges it into the stored row (a field left None keeps the stored value).

Duration (art. 4.3) is the whole seconds, rounded up, from the answer to the hang-up; a call
that was refused or never answered is recorded too, with 0. Billable time is that duration,
except for a free call (BIPT: emergency services, must-reach and 0800 numbers never appear on
the invoice; `policy.free_call`): 0 billable seconds, the real duration kept.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from ..policy import Decision, free_call

#: the columns of `callpolicy calls --csv`, in order (also the keys of `to_dict`)
CSV_COLUMNS = (
    "uniqueid", "linkedid", "customer_id", "endpoint", "dialled", "destination", "category",
    "action", "reason", "rule", "source", "node", "started_at", "answered_at", "ended_at",
    "hangup_cause", "free", "duration_seconds", "billable_seconds",
)
#: the columns computed from the others (never taken from a caller or a stored row)
DERIVED = ("free", "duration_seconds", "billable_seconds")
#: what a record is made of (stored, spooled): every column but the derived ones
FIELDS = tuple(name for name in CSV_COLUMNS if name not in DERIVED)
TIMESTAMPS = ("started_at", "answered_at", "ended_at")
TEXTS = ("linkedid", "customer_id", "endpoint", "dialled", "destination", "category", "action",
         "reason", "rule", "source", "node")


def duration_seconds(answered_at: datetime | None, ended_at: datetime | None) -> int:
    """Art. 4.3: whole seconds from answer to hang-up, rounded up; 0 if not both known."""
    if answered_at is None or ended_at is None:
        return 0
    return max(0, math.ceil((ended_at - answered_at).total_seconds()))


def derived_columns(category: str | None, destination: str | None,
                    answered_at: datetime | None, ended_at: datetime | None
                    ) -> tuple[int, int, int]:
    """The DERIVED columns of a record with these values: free (0/1), duration, billable."""
    duration = duration_seconds(answered_at, ended_at)
    free = free_call(category, destination)
    return int(free), duration, 0 if free else duration


def timestamp(moment: datetime | None) -> str | None:
    """The stored (and printed) form: UTC, microseconds, so text order is time order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds") if moment else None


@dataclass(slots=True)
class CallRecord:
    """One call leg, keyed by Asterisk's channel `uniqueid`; None = not known (yet)."""

    uniqueid: str
    linkedid: str | None = None  # Asterisk's linkedid: the legs of one call share it
    customer_id: str | None = None
    endpoint: str | None = None  # the PJSIP endpoint that called
    dialled: str | None = None  # as the phone sent it (untrusted text)
    destination: str | None = None  # normalised: E.164 or a short number
    category: str | None = None  # a policy Category value
    action: str | None = None  # allow / block
    reason: str | None = None  # a policy Reason value
    rule: str | None = None  # the rule that decided, in words
    source: str | None = None  # who decided: "daemon", "fallback", ...
    node: str | None = None  # the daemon's `[cluster] node` (None: recorded before there were)
    started_at: datetime | None = None  # when the call was decided (timezone-aware)
    answered_at: datetime | None = None
    ended_at: datetime | None = None  # the hang-up
    hangup_cause: int | None = None  # Q.850 cause code (AMI Hangup "Cause")

    def __post_init__(self) -> None:
        if not isinstance(self.uniqueid, str) or not self.uniqueid:
            raise ValueError("a call record needs its uniqueid")
        for name in TEXTS:  # enum members (Category.PREMIUM...) become their plain value
            value = getattr(self, name)
            if value is not None and type(value) is not str:
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be a string, got {value!r}")
                setattr(self, name, str(value))
        for name in TIMESTAMPS:
            moment = getattr(self, name)
            if moment is not None and moment.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware, got {moment!r}")
        if self.hangup_cause is not None and (
                isinstance(self.hangup_cause, bool) or not isinstance(self.hangup_cause, int)):
            raise ValueError(f"hangup_cause must be an int, got {self.hangup_cause!r}")

    @property
    def duration_seconds(self) -> int:
        """Art. 4.3: whole seconds from answer to hang-up, rounded up; 0 if not both known."""
        return duration_seconds(self.answered_at, self.ended_at)

    @property
    def free(self) -> bool:
        """Not billed: a call to an emergency service, a must-reach or an 0800 number."""
        return free_call(self.category, self.destination)

    @property
    def billable_seconds(self) -> int:
        """The duration, or 0 for a free call."""
        return 0 if self.free else self.duration_seconds

    @classmethod
    def from_decision(
        cls, uniqueid: str, decision: Decision, *, started_at: datetime,
        linkedid: str | None = None, endpoint: str | None = None, source: str = "daemon",
        node: str | None = None,
    ) -> CallRecord:
        """The first record of a call, at its decision."""
        return cls(
            uniqueid=uniqueid,
            linkedid=linkedid,
            customer_id=decision.customer_id,
            endpoint=endpoint,
            dialled=decision.number,
            destination=decision.destination,
            category=decision.category.value,
            action=decision.action.value,
            reason=decision.reason.value,
            rule=decision.rule,
            source=source,
            node=node,
            started_at=started_at,
        )

    def merged(self, newer: CallRecord) -> CallRecord:
        """This record updated with what `newer` knows: its None fields keep our values."""
        merged = self.copy()
        merged.absorb(newer)
        return merged

    def copy(self) -> CallRecord:
        """A copy (both already checked: no second __post_init__)."""
        twin = object.__new__(CallRecord)
        for name in _SLOTS:
            setattr(twin, name, getattr(self, name))
        return twin

    def absorb(self, newer: CallRecord) -> None:
        """`merged`, in place: only for a record nobody else holds (a pending update)."""
        if newer.uniqueid != self.uniqueid:
            raise ValueError(f"cannot merge call {newer.uniqueid} into {self.uniqueid}")
        for name in _SLOTS:
            new = getattr(newer, name)
            if new is not None:
                setattr(self, name, new)

    def row(self) -> tuple[Any, ...]:
        """The stored row: `to_fields`' values then the DERIVED columns (free as 0/1)."""
        return (*self.fields_row(), *derived_columns(self.category, self.destination,
                                                     self.answered_at, self.ended_at))

    def fields_row(self) -> tuple[Any, ...]:
        """`to_fields`' values, in FIELDS order."""
        return (*_TEXTS_FIRST(self), timestamp(self.started_at), timestamp(self.answered_at),
                timestamp(self.ended_at), self.hangup_cause)

    def to_fields(self) -> dict[str, Any]:
        """The FIELDS as plain values (ISO timestamps): what the store and the spool keep."""
        return {name: timestamp(getattr(self, name)) if name in TIMESTAMPS
                else getattr(self, name) for name in FIELDS}

    @classmethod
    def from_fields(cls, values: dict[str, Any]) -> CallRecord:
        """The inverse of `to_fields`. Raises ValueError for an unknown or bad field."""
        unknown = set(values) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown call record fields: {', '.join(sorted(unknown))}")
        values = dict(values)
        for name in TIMESTAMPS:
            text = values.get(name)
            if text is not None:
                if not isinstance(text, str):
                    raise ValueError(f"{name} must be an ISO 8601 time, got {text!r}")
                values[name] = datetime.fromisoformat(text)
        if "uniqueid" not in values:
            raise ValueError("a call record needs its uniqueid")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (ISO timestamps, the derived columns), keys in CSV_COLUMNS order."""
        values: dict[str, Any] = {}
        for name in CSV_COLUMNS:
            if name in TIMESTAMPS:
                values[name] = timestamp(getattr(self, name))
            else:
                values[name] = getattr(self, name)
        return values

    def csv_row(self) -> list[object]:
        """The CSV export's row (CSV_COLUMNS), each cell safe for a spreadsheet."""
        return [csv_cell(value) for value in self.to_dict().values()]


_SLOTS = FIELDS  # CallRecord's fields (checked below)
assert tuple(f.name for f in fields(CallRecord)) == _SLOTS
# CallRecord.row's order
assert FIELDS[12:] == (*TIMESTAMPS, "hangup_cause") and DERIVED == (
    "free", "duration_seconds", "billable_seconds")
_TEXTS_FIRST = attrgetter(*FIELDS[:12])

# one number, which a spreadsheet shows as it is: +3292101234, -5. Anything more after a
# leading + or - is arithmetic it would compute (+1+1, -2+3 dialled by a caller).
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def csv_cell(value: object) -> object:
    """Spreadsheets run a cell starting with = + - @ as a formula: neutralise those (unless
    it is just a number, like +3292101234). A flag (free) is true/false, as in JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if (isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r")
            and not _PLAIN_NUMBER.fullmatch(value)):
        return "'" + value
    return value
