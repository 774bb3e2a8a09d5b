"""/v1/customers: create or update (the import's checks), show, list; suspend now or at a
time, reactivate, payment reminders, payments (the `billing` scope may do these four)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..ops import Field, InvalidRequest
from ..ops import customers as customer_ops
from ..ops.values import within_span
from ..store import Store, contract_today
from ..store.model import Settlement
from .auth import require_scope
from .deps import CustomerId, ReadStore, actor, problems, settings_of
from .idempotency import run_write
from .models import (
    Change,
    CustomerPut,
    CustomerRow,
    CustomerView,
    CustomerWritten,
    ReminderIn,
    ReminderRecorded,
    Settled,
    Suspended,
    SuspendIn,
)
from .problems import api_wording
from .strict_json import StrictJsonRoute
from .tokens import Token

__all__ = ["router"]

router = APIRouter(tags=["customers"], route_class=StrictJsonRoute)

Reader = Annotated[Token, Depends(require_scope("read"))]
Billing = Annotated[Token, Depends(require_scope("billing"))]
Ops = Annotated[Token, Depends(require_scope("ops"))]
READ_PROBLEMS = problems(401, 403, 404, 422, 503)
WRITE_PROBLEMS = problems(401, 403, 404, 409, 422, 503)


@router.get("/customers", response_model=list[CustomerRow], responses=READ_PROBLEMS)
async def list_customers(token: Reader, store: ReadStore) -> list[dict]:
    """Every customer: status, numbers and endpoints (counts), a pending scheduled
    suspension's time."""
    return await customer_ops.customers(store)


@router.get("/customers/{customer_id}", response_model=CustomerView, responses=READ_PROBLEMS)
async def show_customer(customer_id: CustomerId, token: Reader, store: ReadStore) -> dict:
    """The customer in full: numbers, endpoints, networks, active unblocks, suspension,
    scheduled suspension, unpaid payment reminders."""
    return await customer_ops.show(store, customer_id)


@router.put("/customers/{customer_id}", response_model=CustomerWritten,
            responses=WRITE_PROBLEMS)
async def put_customer(customer_id: CustomerId, body: CustomerPut, token: Ops,
                       request: Request) -> JSONResponse:
    """Create or update the customer (the import format's keys, checked as an import:
    art. 3.8 zones, numbers owned by another customer…); never changes an existing
    customer's status."""
    data = body.customer.model_dump(exclude_unset=True)
    if data.setdefault("id", customer_id) != customer_id:
        raise InvalidRequest(Field("customer.id"), f" {data['id']!r} is not the path's "
                             f"{customer_id!r}")
    settings = settings_of(request)
    plan = customer_ops.plan_import_data(
        {"customer": [data]}, "body", settings.zones,
        accept_zone_violations=body.accept_zone_violations)
    customer_ops.check_import(plan)
    who = actor(token, body)

    async def write(store: Store) -> CustomerWritten:
        result = await customer_ops.import_customers(store, plan, who)
        outcome: Literal["created", "updated", "unchanged"] = (
            "created" if result.created else "updated" if result.updated else "unchanged")
        return CustomerWritten(result=outcome, warnings=[
            api_wording(w, customer_id) for w in (*plan.warnings, *result.warnings)],
                               customer=CustomerView(**await customer_ops.show(
                                   store, customer_id)))

    return await run_write(request, token, write)


@router.post("/customers/{customer_id}/suspend", response_model=Suspended,
             responses=WRITE_PROBLEMS)
async def suspend(customer_id: CustomerId, body: SuspendIn, token: Billing,
                  request: Request) -> JSONResponse:
    """Art. 5.7: suspend now (only must-reach numbers pass; live calls are hung up within a
    second or two), or at `at`."""
    at = within_span(body.at, "at", datetime.now(UTC), future=True) if body.at else None
    who = actor(token, body)

    async def write(store: Store) -> Suspended:
        if at is None:
            await customer_ops.suspend(store, customer_id, who)
            return Suspended(customer=customer_id, suspended=True, scheduled_at=None)
        schedule = await customer_ops.schedule_suspension(store, customer_id, at, who)
        return Suspended(customer=customer_id, suspended=False,
                         scheduled_at=schedule["due_at"])

    return await run_write(request, token, write)


@router.post("/customers/{customer_id}/reactivate", response_model=Settled,
             responses=WRITE_PROBLEMS)
async def reactivate(customer_id: CustomerId, body: Change, token: Billing,
                     request: Request) -> JSONResponse:
    """Lift the suspension and cancel a scheduled one (leaves the unpaid episode open)."""
    who = actor(token, body)

    async def write(store: Store) -> Settled:
        return _settled(customer_id, await customer_ops.reactivate(store, customer_id, who))

    return await run_write(request, token, write)


@router.post("/customers/{customer_id}/payment", response_model=Settled,
             responses=WRITE_PROBLEMS)
async def payment(customer_id: CustomerId, body: Change, token: Billing,
                  request: Request) -> JSONResponse:
    """The customer paid: close the payment reminders, cancel a scheduled suspension,
    reactivate a suspended customer."""
    who = actor(token, body)

    async def write(store: Store) -> Settled:
        return _settled(customer_id,
                        await customer_ops.record_payment(store, customer_id, who))

    return await run_write(request, token, write)


@router.post("/customers/{customer_id}/reminders", response_model=ReminderRecorded,
             status_code=201, responses=WRITE_PROBLEMS)
async def remind(customer_id: CustomerId, body: ReminderIn, token: Billing,
                 request: Request) -> JSONResponse:
    """Record a payment reminder sent on `sent_on`; the first of an unpaid episode schedules
    the suspension at 00:00 Brussels 15 calendar days later (at once if already past)."""
    now = datetime.now(UTC)
    today = contract_today(now)
    if body.sent_on > today:
        raise InvalidRequest(Field("sent_on"), f" {body.sent_on} is in the future (today is "
                             f"{today} in Brussels)")
    within_span(datetime(body.sent_on.year, body.sent_on.month, body.sent_on.day,
                         tzinfo=UTC), "sent_on", now)
    who = actor(token, body)

    async def write(store: Store) -> ReminderRecorded:
        done = await customer_ops.record_reminder(store, customer_id, body.sent_on, who)
        result = done.result
        warnings = ([f"suspension not written yet ({done.not_applied}); calls are refused "
                     "already, the daemon writes it"] if done.not_applied else [])
        return ReminderRecorded(
            customer=customer_id, reminder_id=result.reminder_id, first=result.first,
            schedule_created=result.created, suspended_now=done.due_now,
            already_suspended=result.suspended and not done.due_now,
            schedule=result.schedule, warnings=warnings)

    return await run_write(request, token, write, status_code=201)


def _settled(customer_id: str, done: Settlement) -> Settled:
    return Settled(customer=customer_id, reactivated=done.reactivated,
                   cancelled_schedule=done.cancelled, closed_reminders=done.closed_reminders)
