"""Which number the called party sees (art. 3.5; no forged identifiers).

- Default: the endpoint's number, else the customer's main number, presentation allowed.
- A number the phone asks for is used only if the customer owns it; anything else numeric is
  a spoofing attempt, replaced by the default and reported.
- Per-call restriction (#31# or the phone's SIP privacy request): presentation restricted, the
  real number still carried for the network (P-Asserted-Identity).
- Emergency calls always present a geographic number of the customer, presentation allowed.
- Forwarded legs present the forwarding customer's number, or the original caller's number
  when the customer proved it owns the forward target (a verified forward target).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .model import CallerId, Customer, Endpoint, Event, Presentation
from .numbers import geographic_zone, normalise_number

# What phones put in From when they do not mean a number: not a spoofing attempt.
_NO_REQUEST = frozenset({"", "anonymous", "unknown", "restricted", "unavailable"})


@dataclass(frozen=True, slots=True)
class CallerIdResult:
    caller_id: CallerId
    diversion: str | None
    events: tuple[Event, ...]


def default_number(customer: Customer, endpoint: Endpoint | None) -> str:
    if endpoint and endpoint.customer_id == customer.id and endpoint.number:
        return endpoint.number
    return customer.main_number


def geographic_number(customer: Customer, endpoint: Endpoint | None) -> str:
    """The number an emergency service sees: a geographic one whenever the customer has one."""
    candidates = [default_number(customer, endpoint), customer.main_number]
    candidates += sorted(customer.numbers)
    for number in candidates:
        if geographic_zone(number):
            return number
    return candidates[0]


def _requested_number(raw: str | None,
                      number_of: Callable[[str], str | None]) -> str | None:
    """The E.164 number the phone asked for, or None if it asked for nothing usable."""
    if raw is None or raw.strip().lower() in _NO_REQUEST:
        return None
    return number_of(raw)


def decide_caller_id(
    customer: Customer | None,
    endpoint: Endpoint | None,
    *,
    requested: str | None,
    restricted: bool,
    emergency: bool,
    destination: str | None,
    forwarded_from: str | None,
    number_of: Callable[[str], str | None] = normalise_number,
) -> CallerIdResult:
    """`number_of`: normalise_number, or the engine's cached one (Classifier.number)."""
    if customer is None:
        # Nobody to vouch for: present nothing rather than whatever the phone sent.
        presentation = Presentation.ALLOWED if emergency else Presentation.RESTRICTED
        return CallerIdResult(CallerId(None, presentation, None), None, ())

    presentation = Presentation.RESTRICTED if restricted else Presentation.ALLOWED
    # Adapters pass unset channel variables as "": only a real number makes a forwarded leg,
    # anything else keeps the spoofing rules on.
    forwarding = number_of(forwarded_from) if forwarded_from else None
    if forwarding is not None and not emergency:
        diversion = forwarding if forwarding in customer.numbers else customer.main_number
        original = _requested_number(requested, number_of)
        if destination in customer.verified_forward_targets and original:
            number = original
        else:
            number = diversion
        return CallerIdResult(CallerId(number, presentation, number), diversion, ())

    fallback = (geographic_number if emergency else default_number)(customer, endpoint)
    asked = _requested_number(requested, number_of)
    events: tuple[Event, ...] = ()
    if asked is not None and asked not in customer.numbers:
        detail = {"requested": asked, "replaced_by": fallback,
                  "endpoint": endpoint.name if endpoint else None}
        events = (Event("spoofing_attempt", detail),)
    if emergency:
        # Always the geographic number, presentation allowed, even if restriction was asked.
        number, presentation = fallback, Presentation.ALLOWED
    else:
        number = asked if asked is not None and asked in customer.numbers else fallback
    return CallerIdResult(CallerId(number, presentation, number), None, events)
