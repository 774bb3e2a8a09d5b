"""Which number the called party sees (art. 3.5, anti-spoofing, emergency, forwarding)."""

from __future__ import annotations

import pytest

from callpolicy.policy import Action, Endpoint, Presentation, Reason

ACME_MAIN = "+3292101234"
ACME_SECOND = "+3292101235"
ACME_NUMBERS = {ACME_MAIN, ACME_SECOND}
VERIFIED_TARGET = "0475 12 34 56"  # acme's verified_forward_targets: +32475123456
ORIGINAL_CALLER = "+33142685300"


def spoofing_events(decision) -> list:
    return [e for e in decision.events if e.kind == "spoofing_attempt"]


# --- default caller ID ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"customer_id": None, "endpoint": "acme-101"}, ACME_SECOND,
                     id="endpoint-number"),
        pytest.param({"endpoint": "acme-101"}, ACME_SECOND, id="endpoint-and-customer"),
        pytest.param({"customer_id": None, "endpoint": "acme-102"}, ACME_MAIN,
                     id="endpoint-without-number"),
        pytest.param({}, ACME_MAIN, id="no-endpoint"),
        pytest.param({"endpoint": "ghost-9"}, ACME_MAIN, id="unknown-endpoint"),
        pytest.param({"endpoint": "brol-201"}, ACME_MAIN, id="endpoint-of-other-customer"),
    ],
)
def test_default_caller_id(decide, fields: dict, expected: str) -> None:
    decision = decide("09 210 12 99", **fields)
    assert decision.action is Action.ALLOW
    assert decision.customer_id == "acme"
    assert decision.caller_id.number == expected
    assert decision.caller_id.asserted == expected
    assert decision.caller_id.presentation is Presentation.ALLOWED
    assert decision.diversion is None
    assert decision.events == ()


# --- a caller ID requested by the phone -------------------------------------------------------

@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        pytest.param("+3292101234", ACME_MAIN, id="e164-main"),
        pytest.param("+3292101235", ACME_SECOND, id="e164-second"),
        pytest.param("092101235", ACME_SECOND, id="national"),
        pytest.param("09 210 12 34", ACME_MAIN, id="national-spaced"),
        pytest.param("0032 9 210 12 34", ACME_MAIN, id="0032"),
        pytest.param(" +32 9 210-12-34 ", ACME_MAIN, id="padded"),
    ],
)
def test_owned_caller_id_is_used(decide, requested: str, expected: str) -> None:
    decision = decide("09 210 12 99", customer_id=None, endpoint="acme-101", caller_id=requested)
    assert decision.caller_id.number == expected
    assert decision.caller_id.asserted == expected
    assert decision.caller_id.presentation is Presentation.ALLOWED
    assert spoofing_events(decision) == []


@pytest.mark.parametrize(
    "requested",
    [
        pytest.param("+3225551234", id="other-customers-number"),
        pytest.param("02 555 12 34", id="other-customers-number-national"),
        pytest.param("+3292101236", id="neighbour-of-own-number"),
        pytest.param("0475 99 99 99", id="mobile"),
        pytest.param("+441212345678", id="foreign"),
        pytest.param("0033 1 42 68 53 00", id="foreign-00"),
        pytest.param("+32475123456", id="own-verified-forward-target"),
    ],
)
def test_spoofed_caller_id_is_replaced_and_reported(decide, requested: str) -> None:
    decision = decide("09 210 12 99", customer_id=None, endpoint="acme-101", caller_id=requested)
    assert decision.action is Action.ALLOW
    assert decision.caller_id.number == ACME_SECOND
    assert decision.caller_id.asserted == ACME_SECOND
    (event,) = spoofing_events(decision)
    assert event.detail["replaced_by"] == ACME_SECOND
    assert event.detail["endpoint"] == "acme-101"
    assert event.detail["requested"] is not None
    assert event.detail["requested"].startswith("+")


def test_spoofing_without_endpoint_falls_back_to_main(decide) -> None:
    decision = decide("09 210 12 99", caller_id="+3225551234")
    assert decision.caller_id.number == ACME_MAIN
    (event,) = spoofing_events(decision)
    assert event.detail["requested"] == "+3225551234"
    assert event.detail["replaced_by"] == ACME_MAIN


def test_spoofing_is_reported_even_when_the_call_is_blocked(decide) -> None:
    decision = decide("0905 12 345", caller_id="+3225551234")
    assert decision.reason is Reason.PREMIUM
    assert len(spoofing_events(decision)) == 1


@pytest.mark.parametrize(
    "requested",
    ["sipp", "anonymous", "Anonymous", "ANONYMOUS ", "unknown", "restricted", "unavailable",
     "", "   ", "asterisk"],
    ids=repr,
)
def test_non_numeric_caller_id_is_ignored_without_event(decide, requested: str) -> None:
    decision = decide("09 210 12 99", customer_id=None, endpoint="acme-101", caller_id=requested)
    assert decision.caller_id.number == ACME_SECOND
    assert decision.events == ()


# --- restriction (#31#, privacy) --------------------------------------------------------------

@pytest.mark.parametrize(
    ("dialled", "privacy"),
    [
        pytest.param("#31#09 210 12 99", False, id="prefix"),
        pytest.param("09 210 12 99", True, id="privacy"),
        pytest.param("#31#09 210 12 99", True, id="both"),
        pytest.param("#31#0033 1 42 68 53 00", False, id="prefix-international"),
        pytest.param("#31#070 245 245", False, id="prefix-must-reach"),
    ],
)
def test_restriction_hides_but_asserts_the_real_number(decide, dialled: str,
                                                       privacy: bool) -> None:
    decision = decide(dialled, customer_id=None, endpoint="acme-101", privacy=privacy)
    assert decision.action is Action.ALLOW
    assert decision.restriction_requested
    assert decision.caller_id.presentation is Presentation.RESTRICTED
    assert decision.caller_id.asserted == ACME_SECOND
    assert decision.caller_id.number == ACME_SECOND


def test_restriction_with_spoofed_request_still_asserts_own_number(decide) -> None:
    decision = decide("#31#09 210 12 99", caller_id="+3225551234")
    assert decision.caller_id.presentation is Presentation.RESTRICTED
    assert decision.caller_id.asserted == ACME_MAIN
    assert len(spoofing_events(decision)) == 1


def test_no_restriction_by_default(decide) -> None:
    decision = decide("09 210 12 99")
    assert not decision.restriction_requested
    assert decision.caller_id.presentation is Presentation.ALLOWED


# --- emergency calls --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("dialled", "privacy"),
    [
        pytest.param("112", False, id="112"),
        pytest.param("#31#112", False, id="112-prefix"),
        pytest.param("100", True, id="100-privacy"),
        pytest.param("#31#101", True, id="101-both"),
    ],
)
def test_emergency_presents_a_geographic_number(decide, dialled: str, privacy: bool) -> None:
    decision = decide(dialled, customer_id=None, endpoint="acme-101", privacy=privacy,
                      caller_id="+3225551234")
    assert decision.emergency
    assert decision.caller_id.presentation is Presentation.ALLOWED
    assert decision.caller_id.number == ACME_SECOND  # the endpoint's number is geographic
    assert decision.caller_id.asserted == ACME_SECOND


@pytest.mark.parametrize(
    ("main", "numbers", "endpoint_number", "expected"),
    [
        pytest.param("+32475000001", ["+32475000001", "+3292101299"], None, "+3292101299",
                     id="mobile-main-geo-other"),
        pytest.param("+3292101299", ["+32475000001", "+3292101299"], "+32475000001",
                     "+3292101299", id="mobile-endpoint-geo-main"),
        pytest.param("+32475000001", ["+32475000001", "+3250123456"], "+32475000001",
                     "+3250123456", id="mobile-endpoint-and-main"),
        pytest.param("+32475000001", ["+32475000001", "+3280012345", "+3292101299"], None,
                     "+3292101299", id="freephone-is-not-geographic"),
        pytest.param("+32475000001", ["+32475000001", "+3290512345", "+3292101299"], None,
                     "+3292101299", id="premium-is-not-geographic"),
        pytest.param("+32475000001", ["+32475000001", "+3270112233", "+3292101299"], None,
                     "+3292101299", id="070-is-not-geographic"),
    ],
)
def test_emergency_geographic_number_choice(
    make_engine, decide, customer_factory, main: str, numbers: list[str],
    endpoint_number: str | None, expected: str,
) -> None:
    customer = customer_factory("geo", main_number=main, numbers=numbers)
    engine = make_engine(customer, endpoints=[Endpoint("geo-1", "geo", endpoint_number)])
    for dialled in ("112", "#31#112"):
        decision = decide(dialled, customer_id=None, endpoint="geo-1", engine=engine)
        assert decision.caller_id.number == expected, dialled
        assert decision.caller_id.presentation is Presentation.ALLOWED


def test_emergency_for_unknown_customer_presents_nothing_it_cannot_vouch_for(decide) -> None:
    decision = decide("112", customer_id="nobody", caller_id="+3225551234")
    assert decision.action is Action.ALLOW
    assert decision.caller_id.number is None
    assert decision.caller_id.asserted is None
    assert decision.caller_id.presentation is Presentation.ALLOWED


def test_unknown_customer_never_presents_the_requested_number(decide) -> None:
    decision = decide("070 245 245", customer_id="nobody", caller_id="+3225551234")
    assert decision.action is Action.ALLOW
    assert decision.caller_id.number is None
    assert decision.caller_id.asserted is None


def test_emergency_caller_id_for_suspended_customer(decide) -> None:
    decision = decide("112", customer_id="brol")
    assert decision.caller_id.number == "+3225551234"
    assert decision.caller_id.presentation is Presentation.ALLOWED


# --- forwarding (art. 3.5) --------------------------------------------------------------------

@pytest.mark.parametrize(
    ("fields", "presented", "diversion"),
    [
        pytest.param({"forwarded_from": ACME_MAIN}, ACME_MAIN, ACME_MAIN,
                     id="forwarding-number-presented"),
        pytest.param({"forwarded_from": "092101235"}, ACME_SECOND, ACME_SECOND,
                     id="forwarding-number-national-form"),
        pytest.param({"forwarded_from": "+32 9 210 12 35", "customer_id": None},
                     ACME_SECOND, ACME_SECOND, id="customer-from-forwarded-from"),
        pytest.param({"forwarded_from": "092101234", "customer_id": None},
                     ACME_MAIN, ACME_MAIN, id="customer-from-national-forwarded-from"),
        pytest.param({"forwarded_from": ACME_MAIN, "customer_id": None,
                      "endpoint": "acme-101"}, ACME_MAIN, ACME_MAIN,
                     id="customer-from-endpoint"),
    ],
)
def test_forwarded_leg_presents_the_forwarding_number(decide, fields: dict, presented: str,
                                                      diversion: str) -> None:
    decision = decide("0478 00 00 00", caller_id=ORIGINAL_CALLER, **fields)
    assert decision.action is Action.ALLOW
    assert decision.customer_id == "acme"
    assert decision.caller_id.number == presented
    assert decision.diversion == diversion
    assert spoofing_events(decision) == []  # the original caller is no spoofing attempt


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({}, id="customer-id"),
        pytest.param({"customer_id": None}, id="from-forwarded-from"),
        pytest.param({"customer_id": None, "endpoint": "acme-101"}, id="from-endpoint"),
    ],
)
@pytest.mark.parametrize(
    "dialled", [VERIFIED_TARGET, "+32475123456", "0032 475 12 34 56"]
)
def test_forward_to_verified_target_presents_original_caller(decide, dialled: str,
                                                             fields: dict) -> None:
    decision = decide(dialled, forwarded_from=ACME_MAIN, caller_id=ORIGINAL_CALLER, **fields)
    assert decision.action is Action.ALLOW
    assert decision.caller_id.number == ORIGINAL_CALLER
    assert decision.caller_id.presentation is Presentation.ALLOWED
    assert decision.diversion == ACME_MAIN


def test_forward_to_verified_target_without_original_caller(decide) -> None:
    decision = decide(VERIFIED_TARGET, forwarded_from=ACME_MAIN, caller_id=None)
    assert decision.caller_id.number == ACME_MAIN
    assert decision.diversion == ACME_MAIN


@pytest.mark.parametrize(
    ("dialled", "reason"),
    [
        pytest.param("0905 12 345", Reason.PREMIUM, id="premium"),
        pytest.param("0032 905 12 345", Reason.PREMIUM, id="premium-0032"),
        pytest.param("+41212345678", Reason.NON_EU, id="non-eu"),
        pytest.param("+8823421234", Reason.NON_EU, id="international-network"),
        pytest.param("sip:0905@evil", Reason.INVALID_NUMBER, id="invalid"),
    ],
)
@pytest.mark.parametrize("customer_id", ["acme", None])
def test_forwarded_leg_is_decided_with_the_customers_rights(
    decide, dialled: str, reason: Reason, customer_id: str | None
) -> None:
    decision = decide(dialled, customer_id=customer_id, forwarded_from="092101234",
                      caller_id=ORIGINAL_CALLER)
    assert decision.action is Action.BLOCK
    assert decision.reason is reason


def test_forwarded_leg_of_suspended_customer_is_blocked(decide) -> None:
    decision = decide("0478 00 00 00", customer_id=None, forwarded_from="02 555 12 34",
                      caller_id=ORIGINAL_CALLER)
    assert decision.customer_id == "brol"
    assert (decision.action, decision.reason) == (Action.BLOCK, Reason.SUSPENDED)


def test_forward_from_unowned_number_is_unknown_customer(decide) -> None:
    decision = decide("0478 00 00 00", customer_id=None, forwarded_from="+3299999999",
                      caller_id=ORIGINAL_CALLER)
    assert (decision.action, decision.reason) == (Action.BLOCK, Reason.UNKNOWN_CUSTOMER)
    assert decision.caller_id.number != ORIGINAL_CALLER


@pytest.mark.parametrize(
    ("dialled", "privacy"),
    [("#31#0478 00 00 00", False), ("0478 00 00 00", True), ("#31#" + VERIFIED_TARGET, False)],
)
def test_forwarded_leg_with_restriction(decide, dialled: str, privacy: bool) -> None:
    decision = decide(dialled, forwarded_from=ACME_MAIN, caller_id=ORIGINAL_CALLER,
                      privacy=privacy)
    assert decision.action is Action.ALLOW
    assert decision.caller_id.presentation is Presentation.RESTRICTED
    assert decision.caller_id.asserted is not None


def test_forward_target_of_another_customer_is_not_verified(make_engine, decide,
                                                            customer_factory) -> None:
    other = customer_factory("other", main_number="+3250123456", numbers=["+3250123456"],
                             verified_forward_targets=["+32478000000"])
    engine = make_engine(customer_factory(), other)
    decision = decide("0478 00 00 00", forwarded_from=ACME_MAIN, caller_id=ORIGINAL_CALLER,
                      engine=engine)
    assert decision.caller_id.number == ACME_MAIN


@pytest.mark.parametrize("forwarded_from", ["", "   "], ids=["empty", "blank"])
def test_empty_forwarded_from_is_not_a_forward(decide, forwarded_from: str) -> None:
    # Adapters (AGI) hand over unset variables as "": that is not a forwarded call. The
    # anti-spoofing rule must still apply, and no Diversion may be invented.
    decision = decide(VERIFIED_TARGET, forwarded_from=forwarded_from, caller_id="+3225551234")
    assert decision.caller_id.number in ACME_NUMBERS
    assert decision.diversion is None
    assert len(spoofing_events(decision)) == 1
