"""The call-record updates waiting for the writer's next round (every 0.5 s).

One record per call: each update is merged into the call's pending one, in order (a None
field keeps the value before it), exactly as `Store.record_calls` would merge them. A short
call's decision, answer and hang-up thus become one row to write, and one whose decision
was taken by an earlier round still gets only its new fields (merged into the stored row)."""

from __future__ import annotations

from datetime import datetime

from .records import CallRecord


class PendingRecords:
    def __init__(self) -> None:
        self._records: dict[str, CallRecord] = {}

    def add(self, update: CallRecord) -> None:
        """`update` is ours from now on (merged into in place)."""
        pending = self._records.get(update.uniqueid)
        if pending is None:
            self._records[update.uniqueid] = update
        else:
            pending.absorb(update)

    def answered(self, uniqueid: str, at: datetime) -> None:
        """`add(CallRecord(uniqueid, answered_at=at))`, without the record."""
        pending = self._records.get(uniqueid)
        if pending is None:
            self._records[uniqueid] = CallRecord(uniqueid, answered_at=at)
        else:
            pending.answered_at = at

    def ended(self, uniqueid: str, at: datetime, cause: int | None) -> None:
        """`add(CallRecord(uniqueid, ended_at=at, hangup_cause=cause))`, without the record."""
        pending = self._records.get(uniqueid)
        if pending is None:
            self._records[uniqueid] = CallRecord(uniqueid, ended_at=at, hangup_cause=cause)
        else:
            pending.ended_at = at
            if cause is not None:
                pending.hangup_cause = cause

    def __len__(self) -> int:
        return len(self._records)

    def peek(self) -> list[CallRecord]:
        return list(self._records.values())

    def take(self) -> list[CallRecord]:
        """The pending records, handed over (no longer merged into)."""
        records, self._records = self._records, {}
        return list(records.values())


__all__ = ["PendingRecords"]
