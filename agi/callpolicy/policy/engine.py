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

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Literal

from .callerid import decide_caller_id
from .destinations import Classifier, Destination, region_from_metadata
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
from .numbers import national_form, normalise, normalise_number

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
    customer: Customer, destination: str, dest: Destination, now: datetime
) -> Unblock | None:
    for unblock in customer.unblocks:
        if not unblock.active(now):
            continue
        if unblock.kind is UnblockKind.COUNTRY:
            region = dest.region
            if region is None and unblock.value in dest.candidates:
                region = region_from_metadata(destination)
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
                normalise_number(request.forwarded_from) or "")
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
        config = self.snapshot.config
        dialled = normalise(request.dialled, config.restriction_prefix)
        customer, endpoint = self._resolve(request)
        restricted = dialled.restriction_requested or request.privacy

        if not dialled.valid:
            dest = Destination(Category.INVALID, None, dialled.problem or "invalid")
        else:
            dest = self.classifier.classify(dialled.destination, dialled.short)
        emergency = dest.category is Category.EMERGENCY
        cid = decide_caller_id(
            customer,
            endpoint,
            requested=request.caller_id,
            restricted=restricted,
            emergency=emergency,
            destination=dialled.destination,
            forwarded_from=request.forwarded_from,
        )
        events = list(cid.events)

        def decision(action: Action, reason: Reason, rule: str,
                     location: Location | None = None, address: Address | None = None
                     ) -> Decision:
            return Decision(
                number=request.dialled if isinstance(request.dialled, str) else dialled.raw,
                destination=dialled.destination, action=action, reason=reason,
                category=dest.category, rule=rule, caller_id=cid.caller_id,
                region=dest.region, customer_id=customer.id if customer else None,
                emergency=emergency, location=location, location_address=address,
                diversion=cid.diversion, restriction_requested=restricted,
                events=tuple(events), region_candidates=dest.candidates,
            )

        if not dialled.valid:
            return decision(Action.BLOCK, Reason.INVALID_NUMBER, f"invalid number: {dest.why}")

        # 1. Must-reach numbers: nothing below may block them.
        if emergency:
            if customer is not None:
                location, address = locate(customer, request.source_ip)
            else:
                ip = parse_ip(request.source_ip)
                location, address = (Location.UNKNOWN if ip is None else Location.NOMADIC), None
            if location is not Location.VERIFIED:
                events.append(
                    Event(
                        f"{location.value}_emergency",
                        {"source_ip": request.source_ip, "destination": dialled.destination},
                    )
                )
            return decision(
                Action.ALLOW,
                Reason.EMERGENCY,
                f"{dest.why}: always allowed (EECC art. 109)",
                location,
                address,
            )
        if dest.category is Category.MUST_REACH:
            return decision(Action.ALLOW, Reason.MUST_REACH, f"{dest.why}: always allowed")

        # 2. Unknown customer.
        if customer is None:
            who = request.customer_id or request.endpoint or request.forwarded_from or "?"
            return decision(
                Action.BLOCK, Reason.UNKNOWN_CUSTOMER, f"no customer known for {who!r}"
            )

        # 3. Suspension (art. 5.7), also a scheduled one whose time has come.
        if customer.is_suspended(request.now):
            return decision(Action.BLOCK, Reason.SUSPENDED, _suspension_rule(customer))

        destination = dialled.destination
        assert destination is not None
        # 4. Premium ranges.
        if dest.category is Category.PREMIUM:
            assert dest.premium_prefix is not None
            shown = national_form(dest.premium_prefix)
            unblock = _premium_unblock(customer, destination, dest.premium_prefix, request.now)
            if unblock is None:
                return decision(
                    Action.BLOCK,
                    Reason.PREMIUM,
                    f"art. 3.10: premium prefix {shown} is blocked by default",
                )
            return decision(
                Action.ALLOW, Reason.UNBLOCKED,
                f"premium prefix {shown} open by {unblock.describe()}",
            )

        # 5. Outside the EU.
        if dest.category is Category.NON_EU:
            unblock = _non_eu_unblock(customer, destination, dest, request.now)
            if unblock is None:
                return decision(
                    Action.BLOCK, Reason.NON_EU, f"art. 3.10: {dest.why}; blocked by default"
                )
            return decision(
                Action.ALLOW, Reason.UNBLOCKED, f"{dest.why}; open by {unblock.describe()}"
            )

        # 6. Everything else.
        return decision(Action.ALLOW, Reason.ALLOWED, dest.why)


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
    dialled = normalise(request.dialled, classifier.config.restriction_prefix)
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
