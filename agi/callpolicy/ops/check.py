"""How a call would be decided, and why: the engine over the customer as stored now.

An unknown customer or endpoint is not an error: a live call from it gets a decision too
(refused; must-reach numbers pass), so it is decided, with a warning saying so."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import structlog

from ..policy import CallRequest, Decision, Engine, PolicyConfig, Snapshot
from ..store import Store
from .errors import Field, InvalidRequest, store_problems

__all__ = ["Caller", "Check", "prepare_check"]

log = structlog.get_logger("callpolicy.ops")


@dataclass(frozen=True, slots=True)
class Caller:
    """Whose call to decide: a customer, an endpoint (which names its customer), or both."""

    customer_id: str | None = None
    endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.customer_id is None and self.endpoint is None:
            raise InvalidRequest("give ", Field("customer"), " ID or ", Field("endpoint"),
                                 " NAME (whose call to decide)")


@dataclass(frozen=True, slots=True)
class Check:
    """The engine over one customer's snapshot, ready to decide numbers as its calls."""

    caller: Caller
    customer_id: str | None  # the caller's customer, or the endpoint's owner
    engine: Engine
    warnings: tuple[str, ...]  # the customer or endpoint is unknown: decided as a live call

    def decide(self, number: str, now: datetime, *, source_ip: str | None = None,
               caller_id: str | None = None, privacy: bool = False,
               forwarded_from: str | None = None) -> Decision:
        """The decision on a call to `number`; its events are logged as the daemon logs
        them, marked `dry_run` (a log monitor can tell a support engineer's check from a
        live call)."""
        decision = self.engine.decide(CallRequest(
            dialled=number, now=now, customer_id=self.customer_id,
            endpoint=self.caller.endpoint, source_ip=source_ip, caller_id=caller_id,
            privacy=privacy, forwarded_from=forwarded_from))
        for event in decision.events:
            log.warning(event.kind, dry_run=True, customer=self.customer_id, number=number,
                        **event.detail)
        return decision


@store_problems
async def prepare_check(store: Store, caller: Caller, policy: PolicyConfig) -> Check:
    """Load the caller's customer and endpoints (the store is not needed after this)."""
    customer_id = caller.customer_id
    endpoint = caller.endpoint
    if customer_id is None:  # as a live call: the endpoint names the customer
        assert endpoint is not None  # Caller has one or the other
        owners = {e.name: e.customer_id for e in await store.load_endpoints_named([endpoint])}
        customer_id = owners.get(endpoint)
    customers = await store.load_customers([customer_id]) if customer_id else {}
    endpoints = ({e.name: e for e in await store.load_endpoints([customer_id])}
                 if customer_id else {})
    customer = customers.get(customer_id) if customer_id else None
    warnings = []
    if customer is None:
        who = (f"customer {customer_id!r}" if customer_id
               else f"endpoint {endpoint!r} (no customer has it)")
        warnings.append(f"{who} is unknown: decided as a live call from it would be "
                        "(refused; must-reach numbers pass)")
    elif endpoint is not None and endpoint not in endpoints:
        warnings.append(f"customer {customer_id!r} has no endpoint {endpoint!r}: deciding "
                        "without it, as a live call would (caller ID from the main number)")
    number_owners = {n: customer.id for n in customer.numbers} if customer else {}
    engine = Engine(Snapshot(policy, customers, endpoints, number_owners))
    return Check(caller, customer_id, engine, tuple(warnings))
