"""The API's request and response bodies (pydantic): the OpenAPI document is made from them.

Requests refuse unknown keys, like the import format: a typo must not silently drop a value.
Their numbers and booleans are strict (StrictInt, StrictBool): `true` or `"3"` for a count is a
422, not a silent 1 or 3. Responses mirror the ops layer's values; views of stored rows allow
keys added later (`extra="allow"`)."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
)

from ..ops.values import MAX_AUDIT_TEXT, MAX_COUNT, MAX_SPAN

_TEXT = Field(max_length=1000)


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Change(Request):
    """What every write carries: the ticket it is done for (the audit's `ticket`) and an
    optional reason; the token's name is the audit's `by`."""

    ticket: str = Field(min_length=1, max_length=MAX_AUDIT_TEXT,
                        description="the ticket or reference this change is done for")
    reason: str | None = Field(default=None, max_length=MAX_AUDIT_TEXT)


class View(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- customers -------------------------------------------------------------------------

class AddressIn(Request):
    street: str = _TEXT
    house_number: str = _TEXT
    postcode: str = _TEXT
    municipality: str = _TEXT
    country: str = _TEXT


class EndpointIn(Request):
    name: str = _TEXT
    number: str | None = Field(default=None, max_length=1000)


class CustomerIn(Request):
    """The import format's keys (README "Customer import format"), as JSON; `id` is the
    path's (may be repeated here)."""

    id: str | None = Field(default=None, max_length=1000)
    name: str = _TEXT
    status: Literal["active", "suspended"] = "active"
    main_number: str = _TEXT
    numbers: list[str] = Field(max_length=100_000)
    site_networks: list[str] = Field(default=[], max_length=10_000)
    verified_forward_targets: list[str] = Field(default=[], max_length=10_000)
    install_address: AddressIn
    endpoint: list[EndpointIn] = Field(default=[], max_length=10_000)


class CustomerPut(Change):
    customer: CustomerIn
    accept_zone_violations: StrictBool = False


class Address(View):
    street: str
    house_number: str
    postcode: str
    municipality: str
    country: str


class EndpointView(View):
    name: str
    number: str | None


class UnblockView(View):
    id: int
    customer_id: str
    kind: str
    value: str
    created_at: str
    created_by: str
    ticket: str
    reason: str | None
    expires_at: str | None
    state: str


class CustomerView(View):
    id: str
    name: str
    status: str
    main_number: str
    numbers: list[str]
    install_address: Address
    site_networks: list[str]
    verified_forward_targets: list[str]
    endpoints: list[EndpointView]
    unblocks: list[UnblockView]
    suspension: dict[str, Any] | None
    scheduled_suspension: dict[str, Any] | None
    payment_reminders: list[dict[str, Any]]


class CustomerRow(View):
    id: str
    name: str
    status: str
    main_number: str
    numbers: int
    endpoints: int
    scheduled: str | None


class CustomerWritten(BaseModel):
    result: Literal["created", "updated", "unchanged"]
    warnings: list[str]
    customer: CustomerView


# -- suspension, reactivation, payment reminders --------------------------------------

class SuspendIn(Change):
    at: AwareDatetime | None = Field(
        default=None, description="suspend at this time (future, with a timezone); "
        "absent: now")


class ReminderIn(Change):
    sent_on: date = Field(description="the day the reminder was sent (YYYY-MM-DD, not in "
                          "the future)")


class Suspended(BaseModel):
    customer: str
    suspended: bool  # now; False: scheduled
    scheduled_at: str | None


class Settled(BaseModel):
    customer: str
    reactivated: bool
    cancelled_schedule: dict[str, Any] | None
    closed_reminders: int


class ReminderRecorded(BaseModel):
    customer: str
    reminder_id: int
    first: bool
    schedule_created: bool
    suspended_now: bool
    already_suspended: bool
    schedule: dict[str, Any] | None
    warnings: list[str]


# -- unblocks, limits --------------------------------------------------------------------

class TargetIn(Change):
    """Exactly one of prefix, country, category."""

    prefix: str | None = Field(default=None, max_length=1000,
                               description="0905 or +32905, +41…")
    country: str | None = Field(default=None, max_length=1000,
                                description="ISO 3166 code outside the EU")
    category: Literal["premium", "non_eu"] | None = None


class UnblockIn(TargetIn):
    expires_at: AwareDatetime | None = None
    lasting_seconds: StrictInt | None = Field(default=None, ge=1,
                                        le=int(MAX_SPAN.total_seconds()),
                                        description="for this long from now")


class Unblocked(BaseModel):
    id: int
    customer: str
    kind: str
    value: str
    expires_at: str | None
    warnings: list[str]


class Reblocked(BaseModel):
    customer: str
    kind: str
    value: str
    revoked: list[int]


class LimitsIn(Change):
    max_concurrent: StrictInt | None = Field(default=None, ge=0, le=MAX_COUNT)
    max_per_minute: StrictInt | None = Field(default=None, ge=0, le=MAX_COUNT)
    max_concurrent_risky: StrictInt | None = Field(default=None, ge=0, le=MAX_COUNT)
    default: list[Literal["max_concurrent", "max_per_minute", "max_concurrent_risky"]] = (
        Field(default=[], max_length=3, description="limits set back to the [fraud] default"))


class LimitValues(BaseModel):
    max_concurrent: int | None
    max_per_minute: int | None
    max_concurrent_risky: int | None


class LimitsView(BaseModel):
    customer: str
    effective: LimitValues
    source: dict[str, Literal["customer", "default"]]
    customer_limits: LimitValues
    defaults: LimitValues


class LimitsSet(LimitsView):
    changed: bool


# -- check, calls, audit ------------------------------------------------------------------

class CheckResult(BaseModel):
    warnings: list[str]
    decisions: list[dict[str, Any]] = Field(
        description="one per number: action, reason, rule (which rule decided and why), "
        "category, caller_id, location…")


class CallView(View):
    uniqueid: str
    customer_id: str | None
    action: str | None
    started_at: str | None
    free: bool
    duration_seconds: int
    billable_seconds: int


class AuditEntry(View):
    id: int
    at: str
    actor: str
    ticket: str | None
    reason: str | None
    action: str
    customer_id: str | None
    before: Any
    after: Any


class ProblemBody(BaseModel):
    """application/problem+json (RFC 9457); some problems add keys (fields, problems…)."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    fields: list[str] | None = Field(
        default=None, description="422 invalid input: the inputs at fault, named as sent "
        "(`max_concurrent`, `customer.id`, `since`; `body` for the body as a whole)")
    problems: list[str] | None = Field(default=None, description="422 import rejected: "
                                       "each problem of the customer, one line each")
