"""Rate limiting, pure (the caller passes the time): occurrences of one (kind, key) within
the kind's window become ONE alert with a count; conditions become raised/resolved alerts.

- An event occurrence opens a window of `window` s for its (kind, key); the ones that follow
  within it are counted; when it ends the alert goes out (first/last seen, count, the latest
  details, up to MAX_NUMBERS distinct numbers). Window 0: at once, count 1.
- A condition (AMI link down…) that holds `confirm` s is raised once; when it no longer holds
  it is resolved (never resolved if it was never raised: a blip is no alert).
- Alerts raised by an earlier run (`restore`) keep their ids: still holding, not raised
  again; no longer holding `confirm` s after the restore, resolved.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .kinds import RAISED, RESOLVED, Alert

MAX_NUMBERS = 10  # distinct numbers listed in an aggregated alert's details
MAX_OPEN_WINDOWS = 10_000  # (kind, key) windows open at once: beyond, the oldest goes out early


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Occurrence:
    kind: str
    key: str
    at: float  # epoch seconds
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Window:
    first: Occurrence
    ends: float
    count: int = 1
    last_at: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict)
    numbers: dict[str, None] = field(default_factory=dict)


class Aggregator:
    def __init__(self, window: Callable[[str], float],
                 make_id: Callable[[], str] = new_id) -> None:
        self._window = window  # kind -> seconds
        self._make_id = make_id
        self._open: dict[tuple[str, str], _Window] = {}  # in order of opening

    def add(self, occurrence: Occurrence) -> list[Alert]:
        """Count one occurrence; the alerts that must go out now (window 0, or an open
        window pushed out by the bound)."""
        slot = (occurrence.kind, occurrence.key)
        current = self._open.get(slot)
        if current is not None and occurrence.at < current.ends:
            current.count += 1
            current.last_at = max(current.last_at, occurrence.at)
            current.details = occurrence.details
            _note_number(current, occurrence)
            return []
        out = [self._close(slot)] if current is not None else []
        window = self._window(occurrence.kind)
        opened = _Window(occurrence, occurrence.at + window, last_at=occurrence.at,
                         details=occurrence.details)
        _note_number(opened, occurrence)
        if window <= 0:
            return [*out, self._alert(opened)]
        self._open[slot] = opened
        while len(self._open) > MAX_OPEN_WINDOWS:
            out.append(self._close(next(iter(self._open))))
        return out

    def due(self, now: float) -> list[Alert]:
        """The alerts whose window has ended by `now`."""
        ended = [slot for slot, w in self._open.items() if w.ends <= now]
        return [self._close(slot) for slot in ended]

    def flush(self) -> list[Alert]:
        """Every open window, now (at shutdown: they go to the outbox, not lost)."""
        return [self._close(slot) for slot in list(self._open)]

    @property
    def open_windows(self) -> int:
        return len(self._open)

    def _close(self, slot: tuple[str, str]) -> Alert:
        return self._alert(self._open.pop(slot))

    def _alert(self, w: _Window) -> Alert:
        details = dict(w.details)
        if w.numbers and w.count > 1:
            details["numbers"] = list(w.numbers)
        return Alert(self._make_id(), w.first.kind, w.first.key, RAISED, w.count, w.first.at,
                     w.last_at, self._window(w.first.kind), details)


def _note_number(w: _Window, occurrence: Occurrence) -> None:
    number = occurrence.details.get("number")
    if number is not None and len(w.numbers) < MAX_NUMBERS:
        w.numbers[str(number)] = None


@dataclass(frozen=True, slots=True)
class Condition:
    """A state kind's condition as observed now (kind, key: e.g. a node id)."""

    kind: str
    key: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Held:
    since: float
    details: Mapping[str, Any]
    raised: Alert | None = None
    keep_until: float = 0.0  # not resolved before (a restored alert: the start-up grace)


class StateTracker:
    """Conditions in, raised / resolved alerts out. `observe` gets every condition that
    holds now, for the kinds it `covers` (a kind not covered keeps its state: its source
    could not be read)."""

    def __init__(self, confirm: float, make_id: Callable[[], str] = new_id) -> None:
        self._confirm = confirm
        self._make_id = make_id
        self._held: dict[tuple[str, str], _Held] = {}

    def observe(self, now: float, holding: Iterable[Condition],
                covers: Iterable[str]) -> list[Alert]:
        covered = set(covers)
        seen = set()
        out: list[Alert] = []
        for condition in holding:
            slot = (condition.kind, condition.key)
            seen.add(slot)
            held = self._held.setdefault(slot, _Held(now, condition.details))
            held.details = condition.details
            if held.raised is None and now - held.since >= self._confirm:
                held.raised = Alert(self._make_id(), condition.kind, condition.key, RAISED, 1,
                                    held.since, now, 0.0, condition.details)
                out.append(held.raised)
        for slot in [s for s, h in self._held.items()
                     if s[0] in covered and s not in seen and now >= h.keep_until]:
            held = self._held.pop(slot)
            if held.raised is not None:
                out.append(self._resolved(held.raised, held.details, now,
                                          lasted_s=round(now - held.since, 1)))
        return out

    def _resolved(self, raised: Alert, details: Mapping[str, Any], now: float,
                  **more: Any) -> Alert:
        """`raised` resolved: an alert of its own id (receivers deduplicate deliveries by
        id) naming the raised one's (`raised_id`)."""
        return Alert(self._make_id(), raised.kind, raised.key, RESOLVED, 1, raised.first_seen,
                     now, 0.0, {**details, "raised_id": raised.id, **more})

    def restore(self, now: float, raised: Iterable[Alert]) -> list[Alert]:
        """State alerts an earlier run raised and did not resolve: tracked under their own
        id. One this run raised already under a new id is resolved now (returned)."""
        out = []
        for alert in raised:
            slot = (alert.kind, alert.key)
            held = self._held.get(slot)
            if held is not None and held.raised is not None:
                if held.raised.id != alert.id:
                    out.append(self._resolved(alert, alert.details, now,
                                              superseded_by=held.raised.id))
                continue
            self._held[slot] = _Held(alert.first_seen, held.details if held else alert.details,
                                     alert, now + self._confirm)
        return out

    def open(self) -> list[Alert]:
        """The raised, not yet resolved alerts."""
        return [h.raised for h in self._held.values() if h.raised is not None]
