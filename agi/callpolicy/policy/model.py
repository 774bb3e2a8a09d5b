"""Plain data the policy engine works on: a snapshot of customers in, a Decision out.

Nothing here does I/O. The store builds these objects; the adapters (CLI, FastAGI) translate
them to and from the outside world.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Literal, TypeVar

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Action(StrEnum):
    ALLOW = "allow"
    BLOCK = "block"


class Reason(StrEnum):
    ALLOWED = "allowed"
    UNBLOCKED = "unblocked"
    EMERGENCY = "emergency"
    MUST_REACH = "must_reach"
    PREMIUM = "premium"
    NON_EU = "non_eu"
    SUSPENDED = "suspended"
    UNKNOWN_CUSTOMER = "unknown_customer"
    INVALID_NUMBER = "invalid_number"
    FAIL_SAFE = "fail_safe"  # no real decision in time: only must-reach numbers pass
    FRAUD_LIMIT = "fraud_limit"  # over a concurrent / per-minute / risky-call limit


class Category(StrEnum):
    """What kind of destination a call goes to (independent of the customer)."""

    EMERGENCY = "emergency"  # 112, 100, 101
    MUST_REACH = "must_reach"  # other numbers that must always be reachable
    SHORT = "short"  # other Belgian short numbers
    NATIONAL = "national"  # +32, not premium-blocked
    PREMIUM = "premium"  # +32 in a blocked premium range (art. 3.10)
    EU = "eu"  # another EU member state or outermost region
    NON_EU = "non_eu"  # everything else, including unknown country codes
    INVALID = "invalid"


class Presentation(StrEnum):
    ALLOWED = "allowed"
    RESTRICTED = "restricted"


class Location(StrEnum):
    VERIFIED = "verified"
    NOMADIC = "nomadic"
    UNKNOWN = "unknown"


class UnblockKind(StrEnum):
    PREFIX = "prefix"
    COUNTRY = "country"
    CATEGORY = "category"


UNBLOCKABLE_CATEGORIES = (Category.PREMIUM.value, Category.NON_EU.value)


@dataclass(frozen=True, slots=True)
class Address:
    street: str
    house_number: str
    postcode: str
    municipality: str
    country: str

    def to_dict(self) -> dict[str, str]:
        return {"street": self.street, "house_number": self.house_number,
                "postcode": self.postcode, "municipality": self.municipality,
                "country": self.country}


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    customer_id: str
    number: str | None = None


UnblockState = Literal["active", "expired", "reblocked"]


def unblock_state(revoked: bool, expires_at: datetime | None, now: datetime) -> UnblockState:
    """The one rule for whether an unblock is in force: not reblocked and not yet expired
    (an unblock stops at `expires_at` itself)."""
    if revoked:
        return "reblocked"
    if expires_at is not None and expires_at <= now:
        return "expired"
    return "active"


@dataclass(frozen=True, slots=True)
class Unblock:
    """A customer's exception to a default block (art. 3.10: "op eenvoudig verzoek").

    `value` is an E.164 prefix for PREFIX ("+32905"), an ISO region for COUNTRY ("CH"),
    or a Category value for CATEGORY ("premium", "non_eu").
    """

    id: int
    kind: UnblockKind
    value: str
    ticket: str = ""
    expires_at: datetime | None = None  # timezone-aware UTC; None = until reblocked

    def active(self, now: datetime) -> bool:
        return unblock_state(False, self.expires_at, now) == "active"

    def describe(self) -> str:
        until = f", until {self.expires_at.isoformat()}" if self.expires_at else ""
        ticket = f", ticket {self.ticket}" if self.ticket else ""
        return f"unblock #{self.id} ({self.kind.value} {self.value}{ticket}{until})"


@dataclass(frozen=True, slots=True)
class FraudLimits:
    """Caps on a customer's external calls (anchor: OpenSIPS fraud_detection). None = no cap
    (in a customer's overrides: use the operator default)."""

    max_concurrent: int | None = None  # external calls up at once
    max_per_minute: int | None = None  # external calls started in the last 60 s
    max_concurrent_risky: int | None = None  # non-EU or unblocked premium calls up at once

    def over(self, defaults: FraudLimits) -> FraudLimits:
        """These overrides on top of the operator defaults."""
        return FraudLimits(
            self.max_concurrent if self.max_concurrent is not None else defaults.max_concurrent,
            self.max_per_minute if self.max_per_minute is not None else defaults.max_per_minute,
            self.max_concurrent_risky if self.max_concurrent_risky is not None
            else defaults.max_concurrent_risky,
        )


@dataclass(frozen=True, slots=True)
class LiveCounts:
    """A customer's live calls, from the AMI live-call table (the daemon fills this in).

    None: not known (the daemon cannot verify which calls are up, e.g. its AMI link is down);
    the fraud guard then does not apply that limit rather than refuse on a guess."""

    concurrent: int | None = 0  # external calls up now
    last_minute: int = 0  # external calls started in the last 60 s
    risky: int | None = 0  # non-EU or unblocked premium calls up now


@dataclass(frozen=True, slots=True)
class Customer:
    id: str
    name: str
    suspended: bool
    main_number: str
    numbers: frozenset[str]
    install_address: Address | None = None
    site_networks: tuple[IPNetwork, ...] = ()
    verified_forward_targets: frozenset[str] = frozenset()
    unblocks: tuple[Unblock, ...] = ()
    suspension_ticket: str = ""
    limits: FraudLimits = FraudLimits()  # per-customer overrides of the operator defaults
    # A pending scheduled suspension (art. 5.7): from this moment (timezone-aware) the customer
    # is suspended, whether or not the daemon has written the suspension to the database yet.
    suspend_at: datetime | None = None
    suspend_at_ticket: str = ""

    def is_suspended(self, now: datetime) -> bool:
        return self.suspended or (self.suspend_at is not None and now >= self.suspend_at)

    def next_change(self, now: datetime) -> datetime | None:
        """The first instant after `now` at which this customer's decisions can change with
        time alone: a scheduled suspension begins, an unblock expires. None: none ahead."""
        times = [u.expires_at for u in self.unblocks
                 if u.expires_at is not None and u.expires_at > now]
        if not self.suspended and self.suspend_at is not None and self.suspend_at > now:
            times.append(self.suspend_at)
        return min(times, default=None)


#: entries per decision cache unless `[policy] cache_entries` says otherwise: at ~85 new
#: numbers a second they are full within a minute; real traffic repeats numbers
DEFAULT_CACHE_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """Operator-wide rules. Lists hold normalised destinations / E.164 prefixes."""

    premium_prefixes: tuple[str, ...]  # E.164 prefixes, e.g. "+32905"
    must_reach: frozenset[str]  # normalised destinations (short numbers or E.164)
    emergency: frozenset[str]  # short numbers that are emergency services
    restriction_prefix: str = "#31#"
    fraud_limits: FraudLimits = FraudLimits(10, 20, 2)  # operator defaults
    # entries in each of the classifier's caches (normalised dial strings, classifications,
    # regions): bounded, because every key is a number a caller chose
    cache_entries: int = DEFAULT_CACHE_ENTRIES


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a decision needs, held in memory by a long-running process."""

    config: PolicyConfig
    customers: Mapping[str, Customer] = field(default_factory=dict)
    endpoints: Mapping[str, Endpoint] = field(default_factory=dict)
    number_owners: Mapping[str, str] = field(default_factory=dict)  # E.164 -> customer id


@dataclass(frozen=True, slots=True)
class CallRequest:
    """One call to decide, as the adapters see it. Every string is untrusted."""

    dialled: str
    now: datetime
    customer_id: str | None = None  # if absent: from the endpoint, or the forwarding number
    endpoint: str | None = None
    source_ip: str | None = None
    caller_id: str | None = None  # what the phone asked to present (or original caller)
    privacy: bool = False  # SIP Privacy: id / anonymous From from the phone
    forwarded_from: str | None = None  # the customer's number that forwards this call
    live: LiveCounts | None = None  # the customer's live calls (None: limits not checked)


@dataclass(frozen=True, slots=True)
class CallerId:
    number: str | None  # what the called party sees (when allowed)
    presentation: Presentation
    asserted: str | None  # the real identity, for P-Asserted-Identity


@dataclass(frozen=True, slots=True)
class Event:
    """Something an adapter must log (the engine does no I/O)."""

    kind: str  # "spoofing_attempt", "nomadic_emergency", "unknown_emergency"
    detail: Mapping[str, str | None]


_Frozen = TypeVar("_Frozen")


def _init_through_slots(cls: type[_Frozen]) -> type[_Frozen]:
    """Give a frozen, slotted, keyword-only dataclass an `__init__` that stores each field
    through its slot descriptor: same signature and defaults, same frozen instance. The one
    dataclasses writes calls object.__setattr__ per field: ~1 µs more per Decision (issue 11)."""
    namespace: dict[str, object] = {}
    params, body = [], []
    for f in fields(cls):  # type: ignore[arg-type]
        assert f.kw_only and f.default_factory is MISSING, f.name
        namespace[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        namespace[f"_default_{f.name}"] = f.default
        params.append(f.name if f.default is MISSING else f"{f.name}=_default_{f.name}")
        body.append(f"\n    _set_{f.name}(self, {f.name})")
    exec(f"def __init__(self, *, {', '.join(params)}):{''.join(body)}", namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # type: ignore[attr-defined]
    setattr(cls, "__init__", init)  # noqa: B010 (mypy: a method cannot be assigned)
    return cls


@_init_through_slots
@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    number: str  # as dialled
    destination: str | None  # E.164, a short number, or None when invalid
    action: Action
    reason: Reason
    category: Category
    rule: str
    caller_id: CallerId
    region: str | None = None
    customer_id: str | None = None
    emergency: bool = False
    location: Location | None = None
    location_address: Address | None = None
    diversion: str | None = None  # the forwarding number, for the Diversion header
    restriction_requested: bool = False
    events: tuple[Event, ...] = ()
    region_candidates: tuple[str, ...] = ()  # when the code is shared and region unresolved

    @property
    def allowed(self) -> bool:
        return self.action is Action.ALLOW

    def resolved_region(self) -> str | None:
        """The exact region, asking libphonenumber if the engine did not need to (slow)."""
        if self.region is None and self.region_candidates and self.destination:
            from .destinations import region_from_metadata

            return region_from_metadata(self.destination)
        return self.region

    def to_dict(self) -> dict[str, object]:
        return {
            "number": self.number,
            "destination": self.destination,
            "action": self.action.value,
            "reason": self.reason.value,
            "category": self.category.value,
            "region": self.resolved_region(),
            "customer": self.customer_id,
            "caller_id": {
                "number": self.caller_id.number,
                "presentation": self.caller_id.presentation.value,
                "asserted": self.caller_id.asserted,
            },
            "emergency": self.emergency,
            "location": self.location.value if self.location else None,
            "location_address": (self.location_address.to_dict()
                                 if self.location_address else None),
            "diversion": self.diversion,
            "restriction_requested": self.restriction_requested,
            "rule": self.rule,
            "events": [{"kind": e.kind, **e.detail} for e in self.events],
        }
