"""Customers: import (plan, then write), show, list, suspend now or at a time, payment
reminders, payment, reactivation. Each change is audited and committed by the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from ..policy.zones import ZoneTable
from ..store import Actor, Store, StoreError, iso
from ..store.import_file import read_import_file
from ..store.importer import ImportPlan, paused_gc, plan_customers
from ..store.model import ImportResult, ReminderResult, Settlement
from .errors import ImportRejected, store_problems
from .session import require_customer

__all__ = [
    "Reminder",
    "check_import",
    "customers",
    "import_customers",
    "plan_import",
    "plan_import_data",
    "reactivate",
    "record_payment",
    "record_reminder",
    "schedule_suspension",
    "show",
    "suspend",
]


def plan_import(path: Path, zones: ZoneTable, *, accept_zone_violations: bool = False
                ) -> ImportPlan:
    """The import file read and checked (nothing written): its records, problems and
    warnings."""
    with paused_gc():
        return read_import_file(path, zones, accept_zone_violations=accept_zone_violations)


def plan_import_data(data: dict[str, Any], source: str, zones: ZoneTable, *,
                     accept_zone_violations: bool = False) -> ImportPlan:
    """The same check as plan_import, of customers already parsed (`{"customer": [...]}`,
    from a JSON body); problems name `source`."""
    return plan_customers(data, source, zones, accept_zone_violations=accept_zone_violations)


def check_import(plan: ImportPlan) -> None:
    """ImportRejected if the plan has any problem: then nothing is imported."""
    if plan.errors:
        raise ImportRejected(plan.errors)


@store_problems
async def import_customers(store: Store, plan: ImportPlan, actor: Actor) -> ImportResult:
    """Create or update the plan's customers (batches for big files; see Store)."""
    check_import(plan)
    with paused_gc():
        return await store.import_customers(plan.records, actor)


@store_problems
async def show(store: Store, customer_id: str) -> dict[str, Any]:
    """The customer in full: its view, unblocks, suspension, scheduled suspension and open
    payment reminders."""
    customer = await require_customer(store, customer_id)
    customer["unblocks"] = await store.unblocks(customer_id)
    customer["suspension"] = await store.suspension(customer_id)
    customer["scheduled_suspension"] = await store.scheduled_suspension(customer_id)
    customer["payment_reminders"] = await store.open_reminders(customer_id)
    return customer


@store_problems
async def customers(store: Store) -> list[dict[str, Any]]:
    return await store.customers()


@store_problems
async def suspend(store: Store, customer_id: str, actor: Actor) -> None:
    """Suspend now (art. 5.7): only must-reach numbers pass."""
    await require_customer(store, customer_id)
    await store.suspend(customer_id, actor)


@store_problems
async def schedule_suspension(store: Store, customer_id: str, at: datetime,
                              actor: Actor) -> dict[str, Any]:
    """Suspend at `at` (in the future); returns the schedule."""
    await require_customer(store, customer_id)
    return await store.schedule_suspension(customer_id, at, actor)


@dataclass(frozen=True, slots=True)
class Reminder:
    result: ReminderResult
    due_now: bool  # this first reminder's suspension was already due: suspended at once
    not_applied: str | None = None  # why that suspension is not written yet (the daemon will)


@store_problems
async def record_reminder(store: Store, customer_id: str, sent_on: date,
                          actor: Actor) -> Reminder:
    """Record a payment reminder; a first one schedules the suspension, which is written at
    once if already due (as the daemon would within a second)."""
    await require_customer(store, customer_id)
    result = await store.record_reminder(customer_id, sent_on, actor)
    schedule = result.schedule
    due_now = result.created and schedule is not None and schedule["due_at"] <= iso(
        datetime.now(UTC))
    if not due_now:
        return Reminder(result, due_now=False)
    try:
        await store.apply_due_suspensions(datetime.now(UTC), customer_id)
    except StoreError as exc:  # the reminder is recorded; calls are refused anyway
        return Reminder(result, due_now=True, not_applied=str(exc))
    return Reminder(result, due_now=True)


@store_problems
async def record_payment(store: Store, customer_id: str, actor: Actor) -> Settlement:
    """The customer paid: close reminders, cancel a scheduled suspension, lift a
    suspension."""
    await require_customer(store, customer_id)
    return await store.record_payment(customer_id, actor)


@store_problems
async def reactivate(store: Store, customer_id: str, actor: Actor) -> Settlement:
    """Lift the suspension and cancel a scheduled one."""
    await require_customer(store, customer_id)
    return await store.reactivate(customer_id, actor)
