"""Call records (art. 4.3): list or stream them, purge old ones."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..live.records import CallRecord
from ..store import Actor, Store, StoreError
from .errors import Field, InvalidRequest, StoreProblem, store_problems
from .session import require_customer

__all__ = ["Period", "PurgePlan", "calls", "iter_calls", "plan_purge", "purge_calls"]


@dataclass(frozen=True, slots=True)
class Period:
    """Calls that started at or after `since` and before `until` (either open)."""

    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidRequest(Field("since"), " must be before ", Field("until"))


@store_problems
async def calls(store: Store, customer_id: str | None, period: Period, limit: int
                ) -> list[CallRecord]:
    """The last `limit` calls of the period (of one customer), oldest first."""
    if customer_id is not None:
        await require_customer(store, customer_id)
    return await store.calls(customer_id, period.since, period.until, limit)


@store_problems
async def iter_calls(store: Store, customer_id: str | None, period: Period
                     ) -> AsyncGenerator[CallRecord, None]:
    """Every call of the period (of one customer), oldest first, streamed: an export of
    months of calls does not sit in memory. The customer is checked here, before the first
    record; close the stream (contextlib.aclosing) when done."""
    if customer_id is not None:
        await require_customer(store, customer_id)
    return _stream(store, customer_id, period)


async def _stream(store: Store, customer_id: str | None, period: Period
                  ) -> AsyncGenerator[CallRecord, None]:
    stream = store.iter_calls(customer_id, period.since, period.until)
    try:
        async for record in stream:
            yield record
    except StoreError as exc:
        raise StoreProblem(str(exc)) from exc
    finally:
        await stream.aclose()


@dataclass(frozen=True, slots=True)
class PurgePlan:
    age: timedelta  # records of calls that started longer ago than this go
    cutoff: datetime
    within_retention: bool  # shorter than calls.retention_days: records it keeps go too


def plan_purge(older_than: timedelta | None, retention_days: int) -> PurgePlan:
    """What a purge of calls older than `older_than` (default: the retention) deletes."""
    age = older_than if older_than is not None else timedelta(days=retention_days)
    if age <= timedelta(0):
        raise InvalidRequest(Field("older_than"), " must be positive")
    return PurgePlan(age, datetime.now(UTC) - age, age < timedelta(days=retention_days))


@store_problems
async def purge_calls(store: Store, plan: PurgePlan, actor: Actor) -> int:
    """Delete the records of calls that started before the plan's cut-off (audited with the
    count); returns that count."""
    return await store.purge_calls(plan.cutoff, actor)
