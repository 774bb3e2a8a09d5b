"""The contract's call rules: (customer, dialled string, call context) -> Decision.

Order (the first rule that applies decides):
1. must-reach numbers are always allowed, for anyone in any state (emergency for 112/100/101);
2. unknown customer -> block;
3. suspended customer (art. 5.7), or one whose scheduled suspension time has come -> block;
4. premium ranges (art. 3.10) -> block unless an active unblock covers them; longest prefix wins;
5. outside the EU (art. 3.10) -> block unless unblocked for the country or the category;
6. allow.
An invalid dial string is blocked before any of these: it cannot be a must-reach number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Literal

from .callerid import CallerIdResult, decide_caller_id
from .destinations import Classifier, Destination
from .location import locate, parse_ip
from .model import (
    Action,
    Address,
    CallerId,
    CallRequest,
    Category,
    Customer,
    Decision,
    Endpoint,
    Event,
    LiveCounts,
    Location,
    PolicyConfig,
    Presentation,
    Reason,
    Snapshot,
    Unblock,
    UnblockKind,
)
from .numbers import Dialled, national_form

PrefixUnblockEffect = Literal["opens", "too_short", "not_blocked"]


def opens_premium(unblock_prefix: str, destination: str, blocked_prefix: str) -> bool:
    """The longest-prefix rule: a prefix unblock opens a premium destination only if it is at
    least as long as the blocked prefix that matched: an unblock of `09` does not open `0905`."""
    return destination.startswith(unblock_prefix) and len(unblock_prefix) >= len(blocked_prefix)


def prefix_unblock_effect(prefix: str, premium_prefixes: Iterable[str]) -> PrefixUnblockEffect:
    """What a prefix unblock of a Belgian number does to the blocked premium ranges: it
    opens them ("opens"), covers longer blocked prefixes that it does not open
    ("too_short"), or matches no blocked prefix and so changes nothing ("not_blocked")."""
    premium = tuple(premium_prefixes)
    if any(not opens_premium(prefix, p, p) for p in premium if p.startswith(prefix)):
        return "too_short"
    if not any(prefix.startswith(p) for p in premium):
        return "not_blocked"
    return "opens"


def _premium_unblock(
    customer: Customer, destination: str, blocked_prefix: str, now: datetime
) -> Unblock | None:
    """An active unblock that opens this premium destination (see opens_premium)."""
    best: Unblock | None = None
    for unblock in customer.unblocks:
        if not unblock.active(now):
            continue
        if unblock.kind is UnblockKind.CATEGORY and unblock.value == Category.PREMIUM:
            best = best or unblock
        elif (
            unblock.kind is UnblockKind.PREFIX
            and opens_premium(unblock.value, destination, blocked_prefix)
            and (best is None or best.kind is UnblockKind.CATEGORY
                 or len(unblock.value) > len(best.value))
        ):
            best = unblock
    return best


def _non_eu_unblock(
    customer: Customer, destination: str, dest: Destination, now: datetime,
    region_of: Callable[[str], str | None],
) -> Unblock | None:
    for unblock in customer.unblocks:
        if not unblock.active(now):
            continue
        if unblock.kind is UnblockKind.COUNTRY:
            region = dest.region
            if region is None and unblock.value in dest.candidates:
                region = region_of(destination)
            if region is not None and unblock.value == region:
                return unblock
        elif (unblock.kind is UnblockKind.CATEGORY and unblock.value == Category.NON_EU) or (
            unblock.kind is UnblockKind.PREFIX and destination.startswith(unblock.value)
        ):
            return unblock
    return None


class Engine:
    """Decides calls against one in-memory snapshot. Pure: no I/O, no clock of its own."""

    def __init__(self, snapshot: Snapshot, classifier: Classifier | None = None) -> None:
        self.snapshot = snapshot
        if classifier is None or classifier.config != snapshot.config:
            classifier = Classifier(snapshot.config)
        self.classifier = classifier

    def with_snapshot(self, snapshot: Snapshot) -> Engine:
        """A new engine for a new snapshot, keeping the classification cache if it can."""
        return Engine(snapshot, self.classifier)

    def _resolve(self, request: CallRequest) -> tuple[Customer | None, Endpoint | None]:
        snapshot = self.snapshot
        endpoint = snapshot.endpoints.get(request.endpoint) if request.endpoint else None
        customer_id = request.customer_id
        if customer_id is None and endpoint is not None:
            customer_id = endpoint.customer_id
        if customer_id is None and request.forwarded_from:
            customer_id = snapshot.number_owners.get(
                self.classifier.number(request.forwarded_from) or "")
        customer = snapshot.customers.get(customer_id) if customer_id else None
        if endpoint is not None and (customer is None or endpoint.customer_id != customer.id):
            endpoint = None
        return customer, endpoint

    def fail_safe(self, request: CallRequest, why: str) -> Decision:
        """The answer when the real decision is not available in time: must-reach numbers
        pass, everything else is refused. Needs no customer data."""
        return fail_safe_decision(self.classifier, request, why)

    def customer_of(self, request: CallRequest) -> str | None:
        """Whose rights decide this call (to look up its live counts before deciding)."""
        customer, _ = self._resolve(request)
        return customer.id if customer else None

    def decide(self, request: CallRequest) -> Decision:
        decision = self._decide(request)
        if request.live is None or not counts_toward_limits(decision):
            return decision  # must-reach numbers are never limited
        customer = self.snapshot.customers.get(decision.customer_id or "")
        if customer is None:
            return decision
        return _fraud_limited(decision, customer, self.snapshot.config, request.live)

    def _decide(self, request: CallRequest) -> Decision:
        """The rules in the order of the module docstring (README "The rules")."""
        call = self._call(request)
        if not call.dialled.valid:  # 0. before all: an invalid string is no must-reach number
            return call.answer(Action.BLOCK, Reason.INVALID_NUMBER,
                               f"invalid number: {call.dest.why}")
        category = call.dest.category
        if category is Category.EMERGENCY:  # 1. must-reach numbers: nothing below blocks them
            return _emergency(call)
        if category is Category.MUST_REACH:
            return call.answer(Action.ALLOW, Reason.MUST_REACH, f"{call.dest.why}: always allowed")
        customer = call.customer
        if customer is None:  # 2.
            return _unknown_customer(call)
        if customer.is_suspended(request.now):  # 3. art. 5.7, also a scheduled suspension
            return call.answer(Action.BLOCK, Reason.SUSPENDED, _suspension_rule(customer))
        if category is Category.PREMIUM:  # 4.
            return _premium(call, customer)
        if category is Category.NON_EU:  # 5.
            return _non_eu(call, customer, self.classifier.region)
        return call.answer(Action.ALLOW, Reason.ALLOWED, call.dest.why)  # 6.

    def _call(self, request: CallRequest) -> _Call:
        """What the rules read: the dial string normalised and classified, the customer, and
        the caller ID to present."""
        dialled = self.classifier.normalise(request.dialled)
        customer, endpoint = self._resolve(request)
        restricted = dialled.restriction_requested or request.privacy
        if not dialled.valid:
            dest = Destination(Category.INVALID, None, dialled.problem or "invalid")
        else:
            dest = self.classifier.classify(dialled.destination, dialled.short)
        caller = decide_caller_id(
            customer,
            endpoint,
            requested=request.caller_id,
            restricted=restricted,
            emergency=dest.category is Category.EMERGENCY,
            destination=dialled.destination,
            forwarded_from=request.forwarded_from,
            number_of=self.classifier.number,
        )
        return _Call(request, dialled, dest, customer, caller, restricted)


class _Call:
    """One call being decided: what the rules read, and `answer` to build the Decision.
    A plain slotted class, never changed after __init__ (0.2 µs cheaper per call than a
    NamedTuple)."""

    __slots__ = ("caller", "customer", "dest", "dialled", "request", "restricted")

    def __init__(self, request: CallRequest, dialled: Dialled, dest: Destination,
                 customer: Customer | None, caller: CallerIdResult, restricted: bool) -> None:
        self.request = request
        self.dialled = dialled
        self.dest = dest
        self.customer = customer
        self.caller = caller
        self.restricted = restricted

    def answer(self, action: Action, reason: Reason, rule: str, location: Location | None = None,
               address: Address | None = None, events: tuple[Event, ...] = ()) -> Decision:
        request, dialled, dest, customer = self.request, self.dialled, self.dest, self.customer
        return Decision(
            number=request.dialled if isinstance(request.dialled, str) else dialled.raw,
            destination=dialled.destination, action=action, reason=reason,
            category=dest.category, rule=rule, caller_id=self.caller.caller_id,
            region=dest.region, customer_id=customer.id if customer else None,
            emergency=dest.category is Category.EMERGENCY, location=location,
            location_address=address, diversion=self.caller.diversion,
            restriction_requested=self.restricted, events=(*self.caller.events, *events),
            region_candidates=dest.candidates,
        )


def _emergency(call: _Call) -> Decision:
    """Rule 1, emergency numbers: allowed, with the caller's location (art. 3.7)."""
    request = call.request
    if call.customer is not None:
        location, address = locate(call.customer, request.source_ip)
    else:
        ip = parse_ip(request.source_ip)
        location, address = (Location.UNKNOWN if ip is None else Location.NOMADIC), None
    events: tuple[Event, ...] = ()
    if location is not Location.VERIFIED:
        events = (Event(f"{location.value}_emergency",
                        {"source_ip": request.source_ip, "destination": call.dialled.destination}),)
    return call.answer(Action.ALLOW, Reason.EMERGENCY,
                       f"{call.dest.why}: always allowed (EECC art. 109)",
                       location, address, events)


def _unknown_customer(call: _Call) -> Decision:
    """Rule 2."""
    request = call.request
    who = request.customer_id or request.endpoint or request.forwarded_from or "?"
    return call.answer(Action.BLOCK, Reason.UNKNOWN_CUSTOMER, f"no customer known for {who!r}")


def _premium(call: _Call, customer: Customer) -> Decision:
    """Rule 4, premium ranges (art. 3.10): blocked unless an active unblock opens them."""
    destination, prefix = call.dialled.destination, call.dest.premium_prefix
    assert destination is not None and prefix is not None
    shown = national_form(prefix)
    unblock = _premium_unblock(customer, destination, prefix, call.request.now)
    if unblock is None:
        return call.answer(Action.BLOCK, Reason.PREMIUM,
                           f"art. 3.10: premium prefix {shown} is blocked by default")
    return call.answer(Action.ALLOW, Reason.UNBLOCKED,
                       f"premium prefix {shown} open by {unblock.describe()}")


def _non_eu(call: _Call, customer: Customer,
            region_of: Callable[[str], str | None]) -> Decision:
    """Rule 5, outside the EU (art. 3.10): blocked unless unblocked."""
    destination, dest = call.dialled.destination, call.dest
    assert destination is not None
    unblock = _non_eu_unblock(customer, destination, dest, call.request.now, region_of)
    if unblock is None:
        return call.answer(Action.BLOCK, Reason.NON_EU,
                           f"art. 3.10: {dest.why}; blocked by default")
    return call.answer(Action.ALLOW, Reason.UNBLOCKED, f"{dest.why}; open by {unblock.describe()}")


def _suspension_rule(customer: Customer) -> str:
    if customer.suspended:
        ticket = customer.suspension_ticket
        what = "is suspended"
    else:
        assert customer.suspend_at is not None
        ticket = customer.suspend_at_ticket
        what = f"is suspended since {customer.suspend_at.isoformat()} (scheduled suspension)"
    shown = f", ticket {ticket}" if ticket else ""
    return f"art. 5.7: customer {customer.id} {what}{shown}; only must-reach numbers pass"


def fail_safe_decision(classifier: Classifier, request: CallRequest, why: str) -> Decision:
    dialled = classifier.normalise(request.dialled)
    if dialled.valid:
        dest = classifier.classify(dialled.destination, dialled.short)
    else:
        dest = Destination(Category.INVALID, None, dialled.problem or "invalid")
    must_reach = dest.category in (Category.EMERGENCY, Category.MUST_REACH)
    emergency = dest.category is Category.EMERGENCY
    return Decision(
        number=request.dialled if isinstance(request.dialled, str) else dialled.raw,
        destination=dialled.destination,
        action=Action.ALLOW if must_reach else Action.BLOCK,
        reason=Reason.FAIL_SAFE,
        category=dest.category,
        rule=f"fail-safe ({why}): {'must-reach number passes' if must_reach else 'refused'}",
        caller_id=CallerId(None, Presentation.ALLOWED if emergency else Presentation.RESTRICTED,
                           None),
        region=dest.region,
        emergency=emergency,
        location=Location.UNKNOWN if emergency else None,
        restriction_requested=dialled.restriction_requested,
    )


#: destinations whose allowed calls count toward the fraud limits: everything but the
#: must-reach numbers (and invalid numbers, which are never allowed)
LIMITED_CATEGORIES = frozenset({Category.NATIONAL, Category.EU, Category.NON_EU,
                                Category.PREMIUM, Category.SHORT})


def counts_toward_limits(decision: Decision) -> bool:
    """The one rule for which calls the fraud guard limits and counts: allowed calls to
    external destinations; must-reach numbers never (nor a fail-safe decision, which only
    ever allows them)."""
    return decision.allowed and decision.category in LIMITED_CATEGORIES


def is_risky(decision: Decision) -> bool:
    """Calls the fraud guard caps separately: outside the EU, or to an unblocked premium range."""
    return decision.category is Category.NON_EU or (
        decision.category is Category.PREMIUM and decision.allowed)


def _fraud_limited(decision: Decision, customer: Customer, config: PolicyConfig,
                   live: LiveCounts) -> Decision:
    """Rule 7: the fraud guard (counts exclude this call, so a limit of 2 allows two).
    A count that is not known (None) never refuses a call."""
    limits = customer.limits.over(config.fraud_limits)
    checks: list[tuple[str, int | None, int | None]] = [
        ("max_concurrent", live.concurrent, limits.max_concurrent),
        ("max_per_minute", live.last_minute, limits.max_per_minute)]
    if is_risky(decision):
        checks.append(("max_concurrent_risky", live.risky, limits.max_concurrent_risky))
    for name, value, cap in checks:
        if cap is not None and value is not None and value >= cap:
            return replace(
                decision, action=Action.BLOCK, reason=Reason.FRAUD_LIMIT,
                rule=f"fraud guard: {name} {cap} reached ({value} live) for customer {customer.id}",
                events=(*decision.events, Event(
                    "fraud_limit", {"limit": name, "value": str(value), "max": str(cap),
                                    "destination": decision.destination})))
    return decision
