"""Suspensions and what leads to them (art. 5.7): suspend and reactivate, suspensions
scheduled with `suspend --at` or by a first payment reminder, payments, and the daemon
applying the schedules that come due."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from ..model import (
    REMINDER_GRACE_DAYS,
    SCHEDULER,
    Actor,
    ReminderResult,
    Settlement,
    StoreError,
    contract_today,
    iso,
    parse_iso,
    suspension_due,
    utcnow,
)
from .customers import Customers
from .transaction import Transaction

__all__ = ["Suspensions"]


class Suspensions(Customers):
    """Suspensions, scheduled suspensions and payment reminders."""

    async def suspension(self, customer_id: str) -> dict[str, Any] | None:
        rows = await self._rows(
            "SELECT * FROM suspensions WHERE customer_id = ? AND lifted_at IS NULL "
            "ORDER BY id DESC LIMIT 1",
            (customer_id,),
        )
        return dict(rows[0]) if rows else None

    async def scheduled_suspension(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's pending scheduled suspension, with `reminder_sent_on` when a
        payment reminder scheduled it (None: scheduled with `suspend --at`)."""
        rows = await self._rows(
            "SELECT s.*, r.sent_on AS reminder_sent_on FROM scheduled_suspensions s"
            " LEFT JOIN payment_reminders r ON r.id = s.reminder_id"
            " WHERE s.customer_id = ? AND s.state = 'pending'", (customer_id,))
        return dict(rows[0]) if rows else None

    async def open_reminders(self, customer_id: str) -> list[dict[str, Any]]:
        """The payment reminders of the customer's open episode (not yet paid), oldest first."""
        rows = await self._rows(
            "SELECT id, sent_on, recorded_at, recorded_by, ticket FROM payment_reminders"
            " WHERE customer_id = ? AND closed_at IS NULL ORDER BY id", (customer_id,))
        return [dict(row) for row in rows]

    async def suspend(self, customer_id: str, actor: Actor) -> None:
        """Suspend now. A pending scheduled suspension is cancelled: this one replaces it."""
        now = utcnow()
        async with Transaction(self._db, self._write_lock):
            before = await self._require_customer(customer_id)
            if before["status"] == "suspended":
                raise StoreError(f"customer {customer_id!r} is already suspended")
            await self._cancel_schedule(customer_id, actor, now,
                                        "replaced by an immediate suspension")
            await self._suspend(customer_id, now, now, actor.by, actor.ticket, actor.reason)
            await self._audit(actor, "customer.suspend", customer_id,
                              {"status": "active"}, {"status": "suspended"}, now)

    async def _suspend(self, customer_id: str, since: datetime, now: datetime, by: str,
                       ticket: str | None, reason: str | None) -> None:
        await self._db.execute(
            "UPDATE customers SET status = 'suspended', updated_at = ? WHERE id = ?",
            (iso(now), customer_id))
        await self._db.execute(
            "INSERT INTO suspensions (customer_id, suspended_at, suspended_by, ticket,"
            " reason) VALUES (?, ?, ?, ?, ?)",
            (customer_id, iso(since), by, ticket, reason))

    async def reactivate(self, customer_id: str, actor: Actor) -> Settlement:
        """Lift the suspension and cancel a pending scheduled one. Error if neither exists."""
        now = utcnow()
        async with Transaction(self._db, self._write_lock):
            before = await self._require_customer(customer_id)
            suspended = before["status"] == "suspended"
            if not suspended and await self.scheduled_suspension(customer_id) is None:
                raise StoreError(f"customer {customer_id!r} is not suspended and has no "
                                 "scheduled suspension")
            cancelled = await self._cancel_schedule(customer_id, actor, now, "reactivated")
            if suspended:
                await self._reactivate(customer_id, actor, now)
        return Settlement(suspended, cancelled)

    async def _reactivate(self, customer_id: str, actor: Actor, now: datetime) -> None:
        await self._db.execute(
            "UPDATE customers SET status = 'active', updated_at = ? WHERE id = ?",
            (iso(now), customer_id))
        await self._db.execute(
            "UPDATE suspensions SET lifted_at = ?, lifted_by = ?, lifted_ticket = ?"
            " WHERE customer_id = ? AND lifted_at IS NULL",
            (iso(now), actor.by, actor.ticket, customer_id))
        await self._audit(actor, "customer.reactivate", customer_id,
                          {"status": "suspended"}, {"status": "active"}, now)

    async def _cancel_schedule(self, customer_id: str, actor: Actor, now: datetime,
                               why: str) -> dict[str, Any] | None:
        """Cancel the pending scheduled suspension, if any (audited). Inside a transaction."""
        schedule = await self.scheduled_suspension(customer_id)
        if schedule is None:
            return None
        await self._db.execute(
            "UPDATE scheduled_suspensions SET state = 'cancelled', closed_at = ?, closed_by = ?,"
            " closed_ticket = ? WHERE id = ?",
            (iso(now), actor.by, actor.ticket, schedule["id"]))
        await self._audit(actor, "customer.schedule_cancelled", customer_id,
                          _schedule_view(schedule), {"state": "cancelled", "why": why}, now)
        return schedule

    async def schedule_suspension(self, customer_id: str, at: datetime,
                                  actor: Actor) -> dict[str, Any]:
        """Suspend the customer at `at` (in the future). The policy treats the customer as
        suspended from that moment; the daemon writes the suspension (apply_due_suspensions)."""
        if at.utcoffset() is None:
            raise StoreError("a scheduled suspension needs a timezone-aware time")
        now = utcnow()
        if at <= now:
            raise StoreError(f"the suspension time {at.isoformat()} is not in the future")
        async with Transaction(self._db, self._write_lock):
            before = await self._require_customer(customer_id)
            if before["status"] == "suspended":
                raise StoreError(f"customer {customer_id!r} is already suspended")
            await self._refuse_second_schedule(customer_id)
            return await self._schedule(customer_id, at, None, actor, now)

    async def _refuse_second_schedule(self, customer_id: str) -> None:
        pending = await self.scheduled_suspension(customer_id)
        if pending is not None:
            raise StoreError(
                f"customer {customer_id!r} already has a suspension scheduled at "
                f"{pending['due_at']} (ticket {pending['ticket']}); `customer reactivate` "
                "cancels it")

    async def _schedule(self, customer_id: str, at: datetime, reminder_id: int | None,
                        actor: Actor, now: datetime) -> dict[str, Any]:
        await self._db.execute(
            "INSERT INTO scheduled_suspensions (customer_id, due_at, reminder_id, created_at,"
            " created_by, ticket, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (customer_id, iso(at), reminder_id, iso(now), actor.by, actor.ticket, actor.reason))
        schedule = await self.scheduled_suspension(customer_id)
        assert schedule is not None
        await self._audit(actor, "customer.suspend_scheduled", customer_id, None,
                          _schedule_view(schedule), now)
        return schedule

    async def record_reminder(self, customer_id: str, sent_on: date,
                              actor: Actor) -> ReminderResult:
        """Record a payment reminder sent on `sent_on` (a Brussels calendar date, not in the
        future). The first reminder of an open episode schedules the suspension at
        suspension_due(sent_on) (art. 5.7), unless the customer is already suspended or
        already has one scheduled; later reminders never move it. A due time already past
        is due at once."""
        now = utcnow()
        if sent_on > contract_today(now):
            raise StoreError(f"the reminder date {sent_on.isoformat()} is in the future")
        async with Transaction(self._db, self._write_lock):
            customer = await self._require_customer(customer_id)
            first = not await self.open_reminders(customer_id)
            cursor = await self._db.execute(
                "INSERT INTO payment_reminders (customer_id, sent_on, recorded_at, recorded_by,"
                " ticket) VALUES (?, ?, ?, ?, ?)",
                (customer_id, sent_on.isoformat(), iso(now), actor.by, actor.ticket))
            reminder_id = cursor.lastrowid
            assert reminder_id is not None
            await self._audit(actor, "customer.remind", customer_id, None,
                              {"id": reminder_id, "sent_on": sent_on.isoformat(),
                               "first": first}, now)
            suspended = customer["status"] == "suspended"
            schedule = await self.scheduled_suspension(customer_id)
            created = first and not suspended and schedule is None
            if created:
                schedule = await self._schedule(customer_id, suspension_due(sent_on),
                                                reminder_id, actor, now)
        return ReminderResult(reminder_id, first, schedule, created, suspended)

    async def record_payment(self, customer_id: str, actor: Actor) -> Settlement:
        """The customer paid (art. 5.7): close the reminder episode, cancel a pending
        scheduled suspension, and lift a suspension. Error if there is none of these."""
        now = utcnow()
        async with Transaction(self._db, self._write_lock):
            before = await self._require_customer(customer_id)
            suspended = before["status"] == "suspended"
            reminders = await self.open_reminders(customer_id)
            cancelled = await self._cancel_schedule(customer_id, actor, now, "paid")
            if not (suspended or reminders or cancelled):
                raise StoreError(f"customer {customer_id!r} has no open payment reminder, "
                                 "scheduled suspension or suspension: nothing to settle")
            await self._db.execute(
                "UPDATE payment_reminders SET closed_at = ?, closed_by = ?, closed_ticket = ?"
                " WHERE customer_id = ? AND closed_at IS NULL",
                (iso(now), actor.by, actor.ticket, customer_id))
            await self._audit(actor, "customer.paid", customer_id,
                              {"status": before["status"],
                               "reminders": [r["sent_on"] for r in reminders]},
                              {"status": "active", "reminders": []}, now)
            if suspended:
                await self._reactivate(customer_id, actor, now)
        return Settlement(suspended, cancelled, len(reminders))

    async def apply_due_suspensions(self, now: datetime,
                                    customer_id: str | None = None) -> list[str]:
        """Write the scheduled suspensions due at `now` to the database: status suspended, a
        suspension row (the schedule's author and ticket, in force since its due time), the
        schedule marked applied, an audit row by SCHEDULER. One transaction per customer;
        the state is re-read inside it, so two processes running this apply each schedule
        once. Returns the customers suspended."""
        sql = "SELECT id FROM scheduled_suspensions WHERE state = 'pending' AND due_at <= ?"
        params: tuple[Any, ...] = (iso(now),)
        if customer_id is not None:
            sql += " AND customer_id = ?"
            params += (customer_id,)
        applied = []
        for row in await self._rows(sql + " ORDER BY due_at", params):
            async with Transaction(self._db, self._write_lock):
                done = await self._apply_schedule(row["id"], now)
            if done is not None:
                applied.append(done)
        return applied

    async def _apply_schedule(self, schedule_id: int, due_by: datetime) -> str | None:
        now = utcnow()
        rows = await self._rows(
            "SELECT s.*, r.sent_on AS reminder_sent_on, c.status FROM scheduled_suspensions s"
            " JOIN customers c ON c.id = s.customer_id"
            " LEFT JOIN payment_reminders r ON r.id = s.reminder_id"
            " WHERE s.id = ? AND s.state = 'pending' AND s.due_at <= ?",
            (schedule_id, iso(due_by)))
        if not rows:
            return None  # cancelled, or applied by another process meanwhile
        schedule = dict(rows[0])
        customer_id = schedule["customer_id"]
        why = _schedule_why(schedule)
        actor = Actor(SCHEDULER, schedule["ticket"],
                      f"scheduled suspension #{schedule['id']} by {schedule['created_by']}: "
                      f"{why}")
        if schedule["status"] == "suspended":  # not reachable through this API; be safe
            await self._cancel_schedule(customer_id, actor, now, "already suspended")
            return None
        await self._db.execute(
            "UPDATE scheduled_suspensions SET state = 'applied', closed_at = ?, closed_by = ?,"
            " closed_ticket = ? WHERE id = ?", (iso(now), SCHEDULER, schedule["ticket"],
                                                schedule_id))
        # In force since its due time, or since it was made if that was already past.
        since = max(schedule["due_at"], schedule["created_at"])  # both UTC ISO 8601
        await self._suspend(customer_id, parse_iso(since) or now, now,
                            schedule["created_by"], schedule["ticket"], why)
        await self._audit(actor, "customer.suspend", customer_id, {"status": "active"},
                          {"status": "suspended", "schedule": _schedule_view(schedule)}, now)
        return customer_id


def _schedule_why(schedule: dict[str, Any]) -> str:
    if schedule.get("reminder_sent_on"):
        return (f"first payment reminder sent {schedule['reminder_sent_on']} "
                f"+ {REMINDER_GRACE_DAYS} days (art. 5.7)")
    return schedule.get("reason") or "scheduled with suspend --at"


def _schedule_view(schedule: dict[str, Any]) -> dict[str, Any]:
    """A schedule as the audit log shows it."""
    return {"id": schedule["id"], "due_at": schedule["due_at"], "ticket": schedule["ticket"],
            "reminder_sent_on": schedule.get("reminder_sent_on"),
            "created_by": schedule["created_by"]}
