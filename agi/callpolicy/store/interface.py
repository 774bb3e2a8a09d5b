"""What a store backend provides: every operation the rest of callpolicy asks of the store.

`Store` (store/sqlite/) is the one backend today; a second one (PostgreSQL) implements
`StoreBackend` with the same method signatures (tests/unit/test_layout.py checks them for every
backend listed there). Opening is the backend's own (`Store.open(path, create=, readonly=)`).

The contract every backend keeps:

- **Audited changes.** Each change writes its audit row (actor, ticket, reason, action,
  customer, before/after images as JSON) in the same transaction as the change itself: both
  are committed or neither. The audit log is append-only and its row ids only grow: the
  daemons' snapshot follows it (`audit_high_water`, `audit_tail`, `audit_at`). Call
  records are billing data, not audited one by one (`purge_calls` is audited).
- **A change reported is committed.** A method that returns has committed; a method that
  raises has written nothing, except the two that commit in steps: `import_customers` (says
  what it wrote in `ImportIncomplete`) and `apply_due_suspensions` (one customer at a time).
- **Errors.** `StoreError` is the root: a refused change (unknown customer, nothing to do,
  bad argument) or a database that cannot take the write (full, read-only, locked, damaged)
  raises it with a one-line message an ops engineer can act on. `StoreReplaced` (a subclass)
  tells a long-running reader to reopen and reload. Exceptions other than StoreError: the
  SQLite backend lets a failed *read* raise the driver's error (the CLI explains sqlite3
  errors), `record_calls` raises the driver's error for a record the database refuses (the
  record writer then isolates that record), `calls(limit=0)` raises ValueError.
- **Timestamps** are stored and returned as text: `iso()` (UTC, milliseconds) for customers,
  suspensions, schedules, reminders, unblocks and the audit log; `live.records.timestamp()`
  (UTC, microseconds, so text order is time order) for call records. Methods take aware
  datetimes; a naive one is a StoreError where a method checks it.
- **readonly.** A store opened readonly writes nothing at all (not even set-up or migration),
  so it works for a user who may only read and on a full disk; it refuses an older schema
  with an error saying how to upgrade. Every read works; every change raises StoreError.
- **Decisions never query the store**: daemons load a Snapshot (`load_customers`,
  `load_endpoints`) and refresh it from the audit log; the fallback AGI loads one customer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, Protocol, Self

from ..live.records import CallRecord
from ..policy import Customer, Endpoint, FraudLimits, UnblockKind
from .model import Actor, AuditTail, CustomerRecord, ImportResult, ReminderResult, Settlement

__all__ = ["StoreBackend"]


class StoreBackend(Protocol):
    """An open store. A default of `...` leaves the value to the backend."""

    #: The database as the user named it (messages; SQLite checks the file was not replaced).
    path: Path

    # -- connection ----------------------------------------------------------------------

    async def close(self) -> None:
        """Release the connection; the store is not used afterwards."""

    async def ping(self) -> None:
        """A trivial query: raises if the connection is gone."""

    async def __aenter__(self) -> Self:
        """`async with await Backend.open(…) as store`: closes on the way out."""

    async def __aexit__(self, *exc: object) -> None:
        """Close the store."""

    # -- customers -----------------------------------------------------------------------

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        """The customer in full as `customer show` prints it (id, name, status, main_number,
        numbers, install_address, site_networks, verified_forward_targets, endpoints; lists
        sorted), None if unknown. The same image is the audit row's before/after."""

    async def customers(self) -> list[dict[str, Any]]:
        """Every customer by id: id, name, status, main_number, numbers and endpoints (counts),
        scheduled (the due time of a pending scheduled suspension, or None)."""

    async def import_customers(
        self, records: Sequence[CustomerRecord], actor: Actor, *,
        batch_rows: int = ...,
    ) -> ImportResult:
        """Create or update customers; audited "customer.create" / "customer.update" (an
        unchanged customer: no row). The status of an existing customer is kept (a warning
        says so). A number or endpoint of a customer not in the import refuses the whole
        import (StoreError, nothing written). Written in transactions of about `batch_rows`
        rows; a failure after the first raises ImportIncomplete naming what is written."""

    # -- suspensions, schedules, payment reminders (art. 5.7) ----------------------------

    async def suspension(self, customer_id: str) -> dict[str, Any] | None:
        """The customer's suspension in force (its row), None if not suspended."""

    async def scheduled_suspension(self, customer_id: str) -> dict[str, Any] | None:
        """The pending scheduled suspension with `reminder_sent_on` (None: scheduled with
        `suspend --at`), None if there is none."""

    async def open_reminders(self, customer_id: str) -> list[dict[str, Any]]:
        """The payment reminders of the open (unpaid) episode, oldest first."""

    async def suspend(self, customer_id: str, actor: Actor) -> None:
        """Suspend now ("customer.suspend"), cancelling a pending scheduled suspension
        ("customer.schedule_cancelled"). StoreError if unknown or already suspended."""

    async def reactivate(self, customer_id: str, actor: Actor) -> Settlement:
        """Lift the suspension ("customer.reactivate") and cancel a pending scheduled one.
        StoreError if there is neither."""

    async def schedule_suspension(self, customer_id: str, at: datetime,
                                  actor: Actor) -> dict[str, Any]:
        """Schedule a suspension at `at` (aware, in the future): "customer.suspend_scheduled".
        StoreError if suspended already or one is already scheduled. Returns the schedule."""

    async def record_reminder(self, customer_id: str, sent_on: date,
                              actor: Actor) -> ReminderResult:
        """Record a payment reminder sent on `sent_on` (a Brussels date, not in the future):
        "customer.remind"; the first of an open episode schedules the suspension at
        suspension_due(sent_on) unless suspended or already scheduled."""

    async def record_payment(self, customer_id: str, actor: Actor) -> Settlement:
        """The customer paid: close the reminders ("customer.paid"), cancel a schedule, lift a
        suspension. StoreError if there is none of these."""

    async def apply_due_suspensions(self, now: datetime,
                                    customer_id: str | None = None) -> list[str]:
        """Write the scheduled suspensions due at `now` (actor SCHEDULER), one transaction per
        customer, each applied once even with several processes. Returns those suspended."""

    # -- unblocks ------------------------------------------------------------------------

    async def unblocks(
        self, customer_id: str | None = None, *, include_inactive: bool = False,
        now: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Unblock rows by customer then id, each with `state` (policy.unblock_state: active,
        expired, reblocked); only the active ones unless `include_inactive`."""

    async def add_unblock(
        self, customer_id: str, kind: UnblockKind, value: str, actor: Actor,
        expires_at: datetime | None,
    ) -> int:
        """Add an unblock ("unblock.add"); returns its id. StoreError if unknown customer."""

    async def reblock(
        self, customer_id: str, kind: UnblockKind, value: str, actor: Actor
    ) -> list[int]:
        """Revoke every active unblock of this kind and value ("unblock.reblock"); returns
        their ids. StoreError if there is none."""

    # -- fraud limits --------------------------------------------------------------------

    async def limits(self, customer_id: str) -> FraudLimits:
        """The customer's own limits (None fields: the operator default). StoreError if
        unknown."""

    async def set_limits(self, customer_id: str, limits: FraudLimits, actor: Actor) -> bool:
        """Set all three limits ("limits.set", old and new). False, nothing written, if they
        are already these. StoreError for a value that is not a whole number >= 0."""

    # -- call records --------------------------------------------------------------------

    async def calls(
        self, customer_id: str | None = None, since: datetime | None = None,
        until: datetime | None = None, limit: int | None = None,
    ) -> list[CallRecord]:
        """Records with since <= started_at < until, oldest first; with `limit`, the most
        recent `limit` of them."""

    def iter_calls(
        self, customer_id: str | None = None, since: datetime | None = None,
        until: datetime | None = None,
    ) -> AsyncGenerator[CallRecord, None]:
        """Like `calls` without a limit, streamed (an async generator)."""

    async def record_calls(self, records: Sequence[CallRecord]) -> None:
        """Upsert records in one transaction: a None field keeps the stored value; several
        updates of one uniqueid apply in order; the DERIVED columns are recomputed."""

    async def purge_calls(self, older_than: datetime, actor: Actor) -> int:
        """Delete records started before `older_than` (aware, not in the future); audited
        "calls.purge" with the count, which it returns."""

    # -- audit log and snapshot loading --------------------------------------------------

    async def audit_log(self, customer_id: str | None = None, limit: int = 50) -> list[dict]:
        """The last `limit` audit rows (of one customer), oldest first, images decoded."""

    async def audit_high_water(self) -> int:
        """The id of the last audit row (0: none)."""

    async def audit_at(self, audit_id: int) -> str | None:
        """The `at` of audit row `audit_id`; None if there is no such row (or id 0)."""

    async def changed_customers(self, since: int) -> tuple[set[str], int]:
        """Customers named in audit rows after `since`, and the new high-water mark
        (`audit_tail` without the anchors)."""

    async def audit_tail(self, since: int) -> AuditTail:
        """Row `since`'s `at`, the customers named in the rows after it and the new
        high-water mark, in one query."""

    async def load_customers(self, ids: Iterable[str] | None = None) -> dict[str, Customer]:
        """Customers as the policy sees them (all, or these ids), without revoked or expired
        unblocks. Loading all of them must not block the event loop."""

    async def load_endpoints_named(self, names: Iterable[str]) -> list[Endpoint]:
        """The endpoints of these names that exist."""

    async def load_endpoints(self, ids: Iterable[str] | None = None) -> list[Endpoint]:
        """The endpoints of all customers, or of these customer ids."""

    # -- the HTTP API's idempotency keys (not policy: not audited) -----------------------

    async def idempotent_response(self, owner: str, key: str,
                                  now: datetime) -> dict[str, Any] | None:
        """The response stored for (owner, key) and not expired at `now`: request_hash,
        status (PENDING: claimed, no response yet), body (JSON text), created_at; None if
        there is none."""

    async def claim_idempotency_key(self, owner: str, key: str, request_hash: str,
                                    now: datetime, expires_at: datetime
                                    ) -> dict[str, Any] | None:
        """Claim (owner, key) for a write about to run (status PENDING, committed): None if
        claimed now, else what is there (as `idempotent_response`: a stored response, or a
        claim PENDING since `created_at`). Atomic across processes; expired keys purged."""

    async def release_idempotency_key(self, owner: str, key: str) -> None:
        """Drop a PENDING claim (its write was refused: nothing changed)."""

    async def save_idempotent_response(self, owner: str, key: str, request_hash: str,
                                       status: int, body: str, expires_at: datetime) -> None:
        """Store (or replace) the response for (owner, key) until `expires_at`; expired
        entries are purged in the same transaction."""
