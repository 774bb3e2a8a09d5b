"""The rules in order (policy/engine.py): must-reach, unknown, suspended, premium, non-EU, allow.

Plus emergency location (art. 3.7/3.8) and unblocks (art. 3.10 "op eenvoudig verzoek").
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime, timedelta

import pytest

from callpolicy.policy import (
    Action,
    Address,
    CallRequest,
    Category,
    Customer,
    Decision,
    Engine,
    FraudLimits,
    LiveCounts,
    Location,
    Reason,
    Snapshot,
    Unblock,
    UnblockKind,
    build_policy_config,
    unblock_state,
)
from callpolicy.policy.destinations import in_eu
from callpolicy.policy.engine import opens_premium, prefix_unblock_effect

EMERGENCY = ["112", "100", "101"]
OTHER_MUST_REACH = [
    "070 245 245", "1813", "0800 32 123", "02 649 95 55",
    "102", "103", "104", "106", "107", "108", "110", "116000",
    "0800 30 030", "0800 98 100", "1712",  # BIPT "Toegang tot de nooddiensten"
]
MUST_REACH_FORMS = [
    "+32 70 245 245", "0032 70 245 245", "070/245.245", "+3280032123", "0032 2 649 95 55",
    "+32 800 30 030", "0032 800 30 030", "+32 800 98 100", "0032 800 98 100", "#31#1712",
]

# How a call can name (or fail to name) its customer.
CUSTOMER_STATES = {
    "active": {"customer_id": "acme"},
    "active-by-endpoint": {"customer_id": None, "endpoint": "acme-101"},
    "suspended": {"customer_id": "brol"},
    "suspended-by-endpoint": {"customer_id": None, "endpoint": "brol-201"},
    "unknown-id": {"customer_id": "nobody"},
    "unknown-endpoint": {"customer_id": None, "endpoint": "ghost-1"},
    "no-customer-at-all": {"customer_id": None},
}


# --- 1. must-reach numbers --------------------------------------------------------------------

@pytest.mark.parametrize("state", CUSTOMER_STATES)
@pytest.mark.parametrize("dialled", EMERGENCY)
def test_emergency_numbers_always_allowed(decide, dialled: str, state: str) -> None:
    decision = decide(dialled, **CUSTOMER_STATES[state])
    assert decision.action is Action.ALLOW
    assert decision.reason is Reason.EMERGENCY
    assert decision.emergency is True
    assert decision.category is Category.EMERGENCY
    assert decision.destination == dialled


@pytest.mark.parametrize("state", CUSTOMER_STATES)
@pytest.mark.parametrize("dialled", OTHER_MUST_REACH + MUST_REACH_FORMS)
def test_must_reach_numbers_always_allowed(decide, dialled: str, state: str) -> None:
    decision = decide(dialled, **CUSTOMER_STATES[state])
    assert decision.action is Action.ALLOW
    assert decision.reason is Reason.MUST_REACH
    assert decision.emergency is False
    assert decision.category is Category.MUST_REACH
    assert decision.location is None


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"dialled": "#31#112"}, id="restriction-prefix"),
        pytest.param({"dialled": "112", "privacy": True}, id="privacy"),
        pytest.param({"dialled": "#31#070 245 245", "privacy": True}, id="antipoison-both"),
        pytest.param({"dialled": "#31#1813"}, id="1813-restricted"),
    ],
)
@pytest.mark.parametrize("state", ["active", "suspended", "unknown-id"])
def test_must_reach_allowed_with_restriction(decide, fields: dict, state: str) -> None:
    decision = decide(**fields, **CUSTOMER_STATES[state])
    assert decision.action is Action.ALLOW
    assert decision.reason in {Reason.EMERGENCY, Reason.MUST_REACH}
    assert decision.restriction_requested


def test_anti_poison_centre_allowed_while_suspended(decide) -> None:
    decision = decide("070 245 245", customer_id="brol")
    assert (decision.action, decision.reason) == (Action.ALLOW, Reason.MUST_REACH)
    assert decision.customer_id == "brol"


def test_112_allowed_for_unknown_customer(decide) -> None:
    decision = decide("112", customer_id="nobody")
    assert (decision.action, decision.reason, decision.emergency) == (
        Action.ALLOW, Reason.EMERGENCY, True
    )
    assert decision.customer_id is None


@pytest.mark.parametrize("dialled", ["1120", "1000", "1011", "11200", "0112", "+32112"])
def test_near_emergency_numbers_are_not_emergency(decide, dialled: str) -> None:
    decision = decide(dialled, customer_id="brol")
    assert decision.emergency is False
    assert decision.action is Action.BLOCK
    assert decision.reason is Reason.SUSPENDED


def test_1120_is_an_ordinary_short_number(decide) -> None:
    active = decide("1120")
    assert (active.action, active.reason, active.category, active.emergency) == (
        Action.ALLOW, Reason.ALLOWED, Category.SHORT, False
    )
    assert active.location is None
    unknown = decide("1120", customer_id="nobody")
    assert (unknown.action, unknown.reason) == (Action.BLOCK, Reason.UNKNOWN_CUSTOMER)


def test_the_config_extends_the_must_reach_list_but_cannot_shrink_it(make_engine,
                                                                     decide) -> None:
    engine = make_engine(config=build_policy_config(must_reach=["1813", "0800 12 345"],
                                                    emergency=["112"]))
    assert decide("0800 12 345", customer_id="brol", engine=engine).reason is Reason.MUST_REACH
    for kept in ("116000", "1712", "0800 30 030", "070 245 245"):
        assert decide(kept, customer_id="brol", engine=engine).reason is Reason.MUST_REACH
    assert decide("0800 12 346", customer_id="brol", engine=engine).reason is Reason.SUSPENDED


# --- 2. unknown customer ----------------------------------------------------------------------

@pytest.mark.parametrize("state", ["unknown-id", "unknown-endpoint", "no-customer-at-all"])
@pytest.mark.parametrize(
    "dialled", ["09 210 12 34", "0033 1 42 68 53 00", "0905 12 345", "+41212345678", "1207"]
)
def test_unknown_customer_is_blocked(decide, dialled: str, state: str) -> None:
    decision = decide(dialled, **CUSTOMER_STATES[state])
    assert decision.action is Action.BLOCK
    assert decision.reason is Reason.UNKNOWN_CUSTOMER
    assert decision.customer_id is None


def test_endpoint_of_another_customer_does_not_lend_its_number(decide) -> None:
    # customer_id wins; an endpoint that belongs to someone else is ignored.
    decision = decide("09 210 12 99", customer_id="acme", endpoint="brol-201")
    assert decision.customer_id == "acme"
    assert decision.caller_id.number == "+3292101234"


def test_unknown_customer_with_foreign_endpoint_stays_unknown(decide) -> None:
    decision = decide("09 210 12 99", customer_id="nobody", endpoint="acme-101")
    assert (decision.action, decision.reason) == (Action.BLOCK, Reason.UNKNOWN_CUSTOMER)


# --- 3. suspended (art. 5.7) ------------------------------------------------------------------

@pytest.mark.parametrize(
    "dialled",
    ["09 210 12 34", "0475 12 34 56", "0033 1 42 68 53 00", "0905 12 345", "+41212345678",
     "1207", "116111", "0900 12 345"],
)
@pytest.mark.parametrize("state", ["suspended", "suspended-by-endpoint"])
def test_suspended_customer_is_blocked(decide, dialled: str, state: str) -> None:
    decision = decide(dialled, **CUSTOMER_STATES[state])
    assert decision.action is Action.BLOCK
    assert decision.reason is Reason.SUSPENDED
    assert decision.customer_id == "brol"
    assert "T-5.7-42" in decision.rule


def test_unblocks_do_not_lift_a_suspension(make_engine, decide, customer_factory) -> None:
    customer = customer_factory(
        "late",
        suspended=True,
        unblocks=[Unblock(1, UnblockKind.CATEGORY, "non_eu"), Unblock(2, UnblockKind.CATEGORY,
                                                                         "premium")],
    )
    engine = make_engine(customer)
    for dialled in ("+41212345678", "0905 12 345", "09 210 12 99"):
        decision = decide(dialled, customer_id="late", engine=engine)
        assert (decision.action, decision.reason) == (Action.BLOCK, Reason.SUSPENDED), dialled


def test_reactivation_with_new_snapshot(engine, decide, customer_factory) -> None:
    suspended = engine.with_snapshot(
        Snapshot(
            engine.snapshot.config,
            customers={"acme": customer_factory(suspended=True)},
            endpoints=engine.snapshot.endpoints,
            number_owners=engine.snapshot.number_owners,
        )
    )
    assert suspended.classifier is engine.classifier  # the cache survives a reload
    assert decide("09 210 12 99", engine=suspended).reason is Reason.SUSPENDED
    assert decide("09 210 12 99", engine=engine).reason is Reason.ALLOWED


def test_scheduled_suspension_applies_from_its_second(make_engine, decide, customer_factory,
                                                     now) -> None:
    """suspend_at: the customer is suspended from that moment on, before anything is written
    to the database (the daemon does that later); the rule names the schedule and ticket."""
    due = now + timedelta(hours=1)
    engine = make_engine(customer_factory(suspend_at=due, suspend_at_ticket="R-5.7"))
    before = decide("09 210 12 99", engine=engine, now=due - timedelta(microseconds=1))
    assert (before.action, before.reason) == (Action.ALLOW, Reason.ALLOWED)
    for moment in (due, due + timedelta(days=3)):
        decision = decide("09 210 12 99", engine=engine, now=moment)
        assert (decision.action, decision.reason) == (Action.BLOCK, Reason.SUSPENDED)
        assert "scheduled suspension" in decision.rule and "R-5.7" in decision.rule
        assert due.isoformat() in decision.rule
    for dialled in ("112", "070 245 245"):  # must-reach numbers still pass
        assert decide(dialled, engine=engine, now=due).allowed


def test_an_active_suspension_names_its_own_ticket_not_the_schedule(
        make_engine, decide, customer_factory, now) -> None:
    engine = make_engine(customer_factory(suspended=True, suspension_ticket="T-NOW",
                                          suspend_at=now + timedelta(days=1),
                                          suspend_at_ticket="R-LATER"))
    decision = decide("09 210 12 99", engine=engine)
    assert decision.reason is Reason.SUSPENDED
    assert "T-NOW" in decision.rule and "scheduled" not in decision.rule


# --- 4. premium (art. 3.10) -------------------------------------------------------------------

NOW_FOR_UNBLOCKS = datetime.fromisoformat("2025-06-02T14:30:00+00:00")  # conftest's NOW


def _unblock(kind: str, value: str, expires: timedelta | None = None, uid: int = 7) -> Unblock:
    return Unblock(uid, UnblockKind(kind), value, ticket="MAIL-1",
                   expires_at=None if expires is None else NOW_FOR_UNBLOCKS + expires)


@pytest.fixture(scope="module")
def with_unblocks(
    make_engine, decide, customer_factory, now: datetime
) -> Callable[..., object]:
    assert now == NOW_FOR_UNBLOCKS

    def run(dialled: str, *unblocks: Unblock, **fields: object):
        customer = customer_factory("open", unblocks=unblocks)
        return decide(dialled, customer_id="open", engine=make_engine(customer), **fields)

    return run


@pytest.mark.parametrize(
    ("dialled", "unblocks", "action", "reason"),
    [
        pytest.param("0905 12 345", [], Action.BLOCK, Reason.PREMIUM, id="no-unblock"),
        pytest.param("0905 12 345", [("prefix", "+32905")], Action.ALLOW, Reason.UNBLOCKED,
                     id="exact-prefix"),
        pytest.param("0905 12 345", [("prefix", "+3290512")], Action.ALLOW, Reason.UNBLOCKED,
                     id="longer-prefix-matching"),
        pytest.param("0905 99 999", [("prefix", "+3290512")], Action.BLOCK, Reason.PREMIUM,
                     id="longer-prefix-not-matching"),
        pytest.param("0905 12 345", [("prefix", "+329")], Action.BLOCK, Reason.PREMIUM,
                     id="shorter-prefix-329-does-not-open"),
        pytest.param("0905 12 345", [("prefix", "+3290")], Action.BLOCK, Reason.PREMIUM,
                     id="shorter-prefix-3290-does-not-open"),
        pytest.param("0905 12 345", [("prefix", "+32")], Action.BLOCK, Reason.PREMIUM,
                     id="country-prefix-does-not-open"),
        pytest.param("0905 12 345", [("prefix", "+32906")], Action.BLOCK, Reason.PREMIUM,
                     id="other-range"),
        pytest.param("0906 12 345", [("prefix", "+32905")], Action.BLOCK, Reason.PREMIUM,
                     id="0905-unblock-does-not-open-0906"),
        pytest.param("0909 12 345", [("category", "premium")], Action.ALLOW, Reason.UNBLOCKED,
                     id="category-premium"),
        pytest.param("0903123456", [("category", "premium")], Action.ALLOW, Reason.UNBLOCKED,
                     id="category-premium-over-long"),
        pytest.param("0905 12 345", [("category", "non_eu")], Action.BLOCK, Reason.PREMIUM,
                     id="category-non-eu-does-not-open-premium"),
        pytest.param("0905 12 345", [("country", "BE")], Action.BLOCK, Reason.PREMIUM,
                     id="country-be-does-not-open-premium"),
        pytest.param("0905 12 345", [("prefix", "+32905", -1)], Action.BLOCK, Reason.PREMIUM,
                     id="expired-prefix"),
        pytest.param("0905 12 345", [("category", "premium", -1)], Action.BLOCK, Reason.PREMIUM,
                     id="expired-category"),
        pytest.param("0905 12 345", [("prefix", "+32905", 0)], Action.BLOCK, Reason.PREMIUM,
                     id="expires-exactly-now"),
        pytest.param("0905 12 345", [("prefix", "+32905", 1)], Action.ALLOW, Reason.UNBLOCKED,
                     id="expires-in-a-second"),
        pytest.param("0905 12 345", [("prefix", "+32905", -1), ("prefix", "+329")],
                     Action.BLOCK, Reason.PREMIUM, id="expired-plus-too-short"),
        pytest.param("0905 12 345", [("prefix", "+329"), ("category", "premium")],
                     Action.ALLOW, Reason.UNBLOCKED, id="too-short-plus-category"),
        pytest.param("0905 12 345", [("prefix", "+32905", -1), ("prefix", "+32905")],
                     Action.ALLOW, Reason.UNBLOCKED, id="expired-and-active-duplicate"),
        pytest.param("0032 905 12 345", [("prefix", "+32905")], Action.ALLOW, Reason.UNBLOCKED,
                     id="0032-form-unblocked"),
    ],
)
def test_premium_unblocks(with_unblocks, dialled: str, unblocks: list[tuple], action: Action,
                          reason: Reason) -> None:
    built = [
        _unblock(u[0], u[1], None if len(u) == 2 else timedelta(seconds=u[2]), uid=i)
        for i, u in enumerate(unblocks, 1)
    ]
    decision = with_unblocks(dialled, *built)
    assert decision.action is action
    assert decision.reason is reason
    assert decision.category is Category.PREMIUM


def test_unblocked_rule_names_the_unblock(with_unblocks) -> None:
    decision = with_unblocks("0905 12 345", _unblock("prefix", "+32905", timedelta(days=3)))
    assert "unblock #7" in decision.rule
    assert "MAIL-1" in decision.rule


def test_longest_configured_premium_prefix_decides(make_engine, decide, customer_factory) -> None:
    # A longer blocked prefix inside an unblocked one stays blocked (longest prefix wins).
    config = build_policy_config(premium_prefixes=("0905", "09051"))
    customer = customer_factory("open", unblocks=[_unblock("prefix", "+32905")])
    engine = make_engine(customer, config=config)
    assert decide("0905 22 345", customer_id="open", engine=engine).reason is Reason.UNBLOCKED
    assert decide("0905 12 345", customer_id="open", engine=engine).reason is Reason.PREMIUM


# --- 5. outside the EU ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("dialled", "unblocks", "action", "reason"),
    [
        pytest.param("+41212345678", [], Action.BLOCK, Reason.NON_EU, id="none"),
        pytest.param("+41212345678", [("country", "CH")], Action.ALLOW, Reason.UNBLOCKED,
                     id="country-ch"),
        pytest.param("+441212345678", [("country", "CH")], Action.BLOCK, Reason.NON_EU,
                     id="country-ch-not-gb"),
        pytest.param("+441212345678", [("country", "GB")], Action.ALLOW, Reason.UNBLOCKED,
                     id="country-gb"),
        pytest.param("+441534456789", [("country", "GB")], Action.BLOCK, Reason.NON_EU,
                     id="country-gb-not-jersey"),
        pytest.param("+441534456789", [("country", "JE")], Action.ALLOW, Reason.UNBLOCKED,
                     id="country-jersey-on-shared-44"),
        pytest.param("+441481256789", [("country", "JE")], Action.BLOCK, Reason.NON_EU,
                     id="country-jersey-not-guernsey"),
        pytest.param("+79123456789", [("country", "RU")], Action.ALLOW, Reason.UNBLOCKED,
                     id="country-ru-on-shared-7"),
        pytest.param("+79123456789", [("country", "KZ")], Action.BLOCK, Reason.NON_EU,
                     id="country-kz-not-ru"),
        pytest.param("+441212345678", [("country", "JE"), ("country", "GB")], Action.ALLOW,
                     Reason.UNBLOCKED, id="second-country-unblock-matches"),
        pytest.param("+441212345678", [("category", "non_eu")], Action.ALLOW, Reason.UNBLOCKED,
                     id="category-non-eu"),
        pytest.param("+8823421234", [("category", "non_eu")], Action.ALLOW, Reason.UNBLOCKED,
                     id="category-non-eu-882"),
        pytest.param("+9991234567", [("category", "non_eu")], Action.ALLOW, Reason.UNBLOCKED,
                     id="category-non-eu-unassigned"),
        pytest.param("+41212345678", [("category", "premium")], Action.BLOCK, Reason.NON_EU,
                     id="category-premium-does-not-open"),
        pytest.param("+41212345678", [("prefix", "+41")], Action.ALLOW, Reason.UNBLOCKED,
                     id="prefix-41"),
        pytest.param("+41212345678", [("prefix", "+4121")], Action.ALLOW, Reason.UNBLOCKED,
                     id="prefix-4121"),
        pytest.param("+41312345678", [("prefix", "+4121")], Action.BLOCK, Reason.NON_EU,
                     id="prefix-4121-not-4131"),
        pytest.param("+41212345678", [("country", "CH", -60)], Action.BLOCK, Reason.NON_EU,
                     id="expired-country"),
        pytest.param("+41212345678", [("country", "CH", 0)], Action.BLOCK, Reason.NON_EU,
                     id="country-expires-now"),
        pytest.param("+41212345678", [("category", "non_eu", -1)], Action.BLOCK, Reason.NON_EU,
                     id="expired-category"),
        pytest.param("+390669812345", [("country", "IT")], Action.BLOCK, Reason.NON_EU,
                     id="country-it-not-vatican"),
        pytest.param("+390669812345", [("country", "VA")], Action.ALLOW, Reason.UNBLOCKED,
                     id="country-va"),
        pytest.param("+390549123456", [("country", "SM")], Action.ALLOW, Reason.UNBLOCKED,
                     id="country-sm-over-39"),
        pytest.param("+3780549886377", [("country", "SM")], Action.ALLOW, Reason.UNBLOCKED,
                     id="country-sm-378"),
        pytest.param("+590590271234", [("country", "BL")], Action.ALLOW, Reason.UNBLOCKED,
                     id="country-bl"),
        pytest.param("+590590271234", [("country", "GP")], Action.BLOCK, Reason.NON_EU,
                     id="country-gp-not-bl"),
        pytest.param("+9991234567", [("country", "CH")], Action.BLOCK, Reason.NON_EU,
                     id="unassigned-country-code"),
    ],
)
def test_non_eu_unblocks(with_unblocks, dialled: str, unblocks: list[tuple], action: Action,
                         reason: Reason) -> None:
    built = [
        _unblock(u[0], u[1], None if len(u) == 2 else timedelta(seconds=u[2]), uid=i)
        for i, u in enumerate(unblocks, 1)
    ]
    decision = with_unblocks(dialled, *built)
    assert decision.action is action
    assert decision.reason is reason
    assert decision.category is Category.NON_EU


def test_non_eu_unblock_does_not_open_premium(with_unblocks) -> None:
    decision = with_unblocks("0905 12 345", _unblock("category", "non_eu"),
                             _unblock("country", "BE"), _unblock("prefix", "+41"))
    assert (decision.action, decision.reason) == (Action.BLOCK, Reason.PREMIUM)


# --- 6. allow ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("dialled", "category", "destination"),
    [
        ("09 210 12 99", Category.NATIONAL, "+3292101299"),
        ("0475 99 99 99", Category.NATIONAL, "+32475999999"),
        ("0033 1 42 68 53 00", Category.EU, "+33142685300"),
        ("1207", Category.SHORT, "1207"),
    ],
)
def test_everything_else_is_allowed(decide, dialled: str, category: Category,
                                    destination: str) -> None:
    decision = decide(dialled)
    assert (decision.action, decision.reason) == (Action.ALLOW, Reason.ALLOWED)
    assert decision.category is category
    assert decision.destination == destination
    assert decision.number == dialled
    assert decision.customer_id == "acme"
    assert decision.allowed
    assert decision.location is None
    assert decision.events == ()


def test_invalid_number_is_blocked_before_must_reach_and_customer(decide) -> None:
    for fields in ({"customer_id": "nobody"}, {"customer_id": "brol"}, {}):
        decision = decide("sip:112@1.2.3.4", **fields)
        assert (decision.action, decision.reason) == (Action.BLOCK, Reason.INVALID_NUMBER)
        assert decision.emergency is False


def test_non_string_dial_string_does_not_raise(engine, now: datetime) -> None:
    decision = engine.decide(CallRequest(None, now, customer_id="acme"))  # type: ignore[arg-type]
    assert (decision.action, decision.reason) == (Action.BLOCK, Reason.INVALID_NUMBER)


def test_config_change_gets_its_own_classifier(engine, make_engine, decide) -> None:
    other = make_engine(config=build_policy_config(premium_prefixes=("0902",)))
    reused = engine.with_snapshot(other.snapshot)
    assert reused.classifier is not engine.classifier
    assert decide("0902 12 345", engine=engine).reason is Reason.ALLOWED
    assert decide("0902 12 345", engine=reused).reason is Reason.PREMIUM
    assert decide("0905 12 345", engine=reused).reason is Reason.PREMIUM


@pytest.mark.parametrize("configured", [(), ("0093",), ("0902",)])
def test_the_config_adds_premium_prefixes_and_never_opens_the_contracts(
        make_engine, decide, configured: tuple[str, ...]) -> None:
    """Art. 3.10's six stay blocked whatever the list says (empty, a typo that names another
    country): only an audited unblock opens one for a customer."""
    engine = make_engine(config=build_policy_config(premium_prefixes=configured))
    for dialled in ("0903 12 345", "0904 12 345", "0905 12 345", "0906 12 345",
                    "0907 12 345", "0909 12 345"):
        assert decide(dialled, engine=engine).reason is Reason.PREMIUM, (configured, dialled)


def test_to_dict(decide) -> None:
    data = decide("#31#0905 12 345").to_dict()
    assert data["action"] == "block"
    assert data["reason"] == "premium"
    assert data["category"] == "premium"
    assert data["destination"] == "+3290512345"
    assert data["restriction_requested"] is True
    assert data["caller_id"] == {
        "number": "+3292101234", "presentation": "restricted", "asserted": "+3292101234"
    }


# --- emergency location (art. 3.7, 3.8) -------------------------------------------------------

ACME_INSTALL = Address("Breebroekstraat", "61", "9030", "Gent", "BE")


@pytest.mark.parametrize(
    ("source_ip", "location"),
    [
        pytest.param("192.0.2.10", Location.VERIFIED, id="site-ip"),
        pytest.param("192.0.2.10:5060", Location.VERIFIED, id="site-ip-port"),
        pytest.param(" 192.0.2.254 ", Location.VERIFIED, id="site-ip-blanks"),
        pytest.param("198.51.100.7", Location.NOMADIC, id="other-ip"),
        pytest.param("198.51.100.7:5060", Location.NOMADIC, id="other-ip-port"),
        pytest.param("192.0.3.1", Location.NOMADIC, id="next-network"),
        pytest.param("[2001:db8::1]:5060", Location.NOMADIC, id="ipv6-port"),
        pytest.param("2001:db8::1", Location.NOMADIC, id="ipv6"),
        pytest.param(None, Location.UNKNOWN, id="none"),
        pytest.param("", Location.UNKNOWN, id="empty"),
        pytest.param("garbage", Location.UNKNOWN, id="garbage"),
        pytest.param("999.1.1.1", Location.UNKNOWN, id="bad-octet"),
        pytest.param("192.0.2.10:5060:1", Location.UNKNOWN, id="two-ports"),
        pytest.param("[2001:db8::1", Location.UNKNOWN, id="unclosed-bracket"),
        pytest.param("sip:192.0.2.10", Location.UNKNOWN, id="sip-debris"),
    ],
)
def test_emergency_location(decide, source_ip: str | None, location: Location) -> None:
    decision = decide("112", source_ip=source_ip)
    assert decision.action is Action.ALLOW
    assert decision.location is location
    if location is Location.VERIFIED:
        assert decision.location_address == ACME_INSTALL
        assert not [e for e in decision.events if e.kind.endswith("_emergency")]
    elif location is Location.NOMADIC:
        assert decision.location_address is None
        assert [e.kind for e in decision.events] == ["nomadic_emergency"]
    else:
        # model.Event documents "unknown_location_emergency", the engine emits
        # "unknown_emergency": hold only what both agree on.
        assert decision.location_address is None
        (event,) = decision.events
        assert event.kind.startswith("unknown")
        assert event.kind.endswith("_emergency")


def test_nomadic_emergency_event(decide) -> None:
    decision = decide("112", source_ip="198.51.100.7:5060")
    (event,) = decision.events
    assert event.kind == "nomadic_emergency"
    assert event.detail["source_ip"] == "198.51.100.7:5060"
    assert event.detail["destination"] == "112"


@pytest.mark.parametrize("source_ip", ["127.0.0.2", "127.0.0.2:5060"])
def test_loopback_site_network(make_engine, decide, customer_factory, source_ip: str) -> None:
    customer: Customer = customer_factory(site_networks=("127.0.0.0/8", "2001:db8:1::/48"))
    engine = make_engine(customer)
    decision = decide("112", engine=engine, source_ip=source_ip)
    assert decision.location is Location.VERIFIED
    assert decision.location_address == ACME_INSTALL
    v6 = decide("100", engine=engine, source_ip="[2001:db8:1::5]:5060")
    assert v6.location is Location.VERIFIED


def test_site_network_of_another_customer_is_nomadic(decide) -> None:
    # 198.51.100.0/24 is the suspended customer's site, not acme's.
    assert decide("112", source_ip="198.51.100.7").location is Location.NOMADIC
    assert decide("112", customer_id="brol", source_ip="198.51.100.7").location is (
        Location.VERIFIED
    )


@pytest.mark.parametrize(
    "dialled", ["070 245 245", "1813", "116000", "09 210 12 99", "0905 12 345", "1120"]
)
def test_no_location_for_non_emergency_calls(decide, dialled: str) -> None:
    decision = decide(dialled, source_ip="192.0.2.10")
    assert decision.location is None
    assert decision.location_address is None
    assert not [e for e in decision.events if e.kind.endswith("_emergency")]


@pytest.mark.parametrize(
    ("source_ip", "location"),
    [("192.0.2.10", Location.NOMADIC), ("garbage", Location.UNKNOWN), (None, Location.UNKNOWN)],
)
def test_unknown_customer_emergency_location(decide, source_ip: str | None,
                                             location: Location) -> None:
    decision = decide("112", customer_id="nobody", source_ip=source_ip)
    assert decision.action is Action.ALLOW
    assert decision.location is location
    assert decision.location_address is None


def test_emergency_location_for_suspended_customer(decide) -> None:
    decision = decide("101", customer_id="brol", source_ip="198.51.100.9")
    assert decision.action is Action.ALLOW
    assert decision.location is Location.VERIFIED
    assert decision.location_address is not None
    assert decision.location_address.municipality == "Brussel"


# ------------------------------------------------------------------ fraud guard (issue 4)
def _fraud_engine(limits: FraudLimits | None = None) -> Engine:
    config = replace(build_policy_config(), fraud_limits=FraudLimits(2, 5, 1))
    customer = Customer(
        id="acme", name="A", suspended=False, main_number="+3292101234",
        numbers=frozenset({"+3292101234"}),
        unblocks=(Unblock(1, UnblockKind.CATEGORY, "non_eu"),
                  Unblock(2, UnblockKind.PREFIX, "+32905")),
        limits=limits or FraudLimits())
    return Engine(Snapshot(config, {"acme": customer}))


def _live_decide(engine: Engine, dialled: str, **counts: int | None):
    return engine.decide(CallRequest(dialled, datetime.now(UTC), customer_id="acme",
                                     live=LiveCounts(**counts)))


@pytest.mark.parametrize(
    ("dialled", "counts", "reason"),
    [("092101299", {"concurrent": 1}, "allowed"),
     ("092101299", {"concurrent": 2}, "fraud_limit"),
     ("092101299", {"last_minute": 5}, "fraud_limit"),
     ("092101299", {"risky": 5}, "allowed"),  # a national call is not risky
     ("+41441234567", {"risky": 1}, "fraud_limit"),  # unblocked non-EU is
     ("0905123456", {"risky": 1}, "fraud_limit"),  # unblocked premium is
     ("0905123456", {"risky": 0}, "unblocked"),
     ("112", {"concurrent": 99, "last_minute": 99, "risky": 99}, "emergency"),
     ("070245245", {"concurrent": 99}, "must_reach"),
     ("0906123456", {"concurrent": 99}, "premium")],  # blocked anyway: the real reason
    ids=lambda v: str(v),
)
def test_fraud_guard(dialled: str, counts: dict[str, int], reason: str) -> None:
    decision = _live_decide(_fraud_engine(), dialled, **counts)
    assert decision.reason.value == reason
    if reason == "fraud_limit":
        assert decision.action.value == "block"
        assert [e.kind for e in decision.events][-1] == "fraud_limit"


def test_fraud_guard_customer_override_and_no_counts() -> None:
    engine = _fraud_engine(FraudLimits(max_concurrent=5))
    assert _live_decide(engine, "092101299", concurrent=4).reason.value == "allowed"
    assert _live_decide(engine, "092101299", concurrent=5).reason.value == "fraud_limit"
    # Without live counts (CLI check, revocation) the guard does not apply.
    decision = engine.decide(CallRequest("092101299", datetime.now(UTC), customer_id="acme"))
    assert decision.reason.value == "allowed"


@pytest.mark.parametrize(
    ("dialled", "counts", "reason"),
    [("092101299", {"concurrent": None, "risky": None}, "allowed"),
     ("+41441234567", {"concurrent": None, "risky": None}, "unblocked"),
     ("0905123456", {"concurrent": None, "risky": None, "last_minute": 4}, "unblocked"),
     # the per-minute limit does not depend on the live table: it still refuses
     ("092101299", {"concurrent": None, "risky": None, "last_minute": 5}, "fraud_limit"),
     # a known count still applies when the other one is not known
     ("+41441234567", {"concurrent": None, "risky": 1}, "fraud_limit"),
     ("092101299", {"concurrent": 2, "risky": None}, "fraud_limit")],
    ids=lambda v: str(v),
)
def test_fraud_guard_never_refuses_on_an_unknown_count(
        dialled: str, counts: dict[str, int | None], reason: str) -> None:
    """None: the daemon cannot verify the live calls (AMI down); that limit is skipped."""
    decision = _live_decide(_fraud_engine(), dialled, **counts)
    assert decision.reason.value == reason, decision.rule
    if reason == "fraud_limit":  # refused over a limit whose count is known
        field = {"max_concurrent": "concurrent", "max_per_minute": "last_minute",
                 "max_concurrent_risky": "risky"}[decision.events[-1].detail["limit"]]
        assert counts[field] is not None


def test_a_decision_is_immutable_and_built_by_keyword(decide) -> None:
    decision = decide("092101299", customer_id="acme")
    with pytest.raises(FrozenInstanceError):
        decision.action = Action.BLOCK  # type: ignore[misc]
    with pytest.raises(TypeError):
        Decision(decision.number, decision.destination, decision.action,  # type: ignore[misc]
                 decision.reason, decision.category, decision.rule, decision.caller_id)
    fields = dataclasses.fields(Decision)
    params = inspect.signature(Decision).parameters.values()
    assert [(p.name, p.kind, p.default) for p in params] == [
        (f.name, inspect.Parameter.KEYWORD_ONLY,
         inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
        for f in fields]
    rebuilt = Decision(**{f.name: getattr(decision, f.name) for f in fields})
    assert rebuilt == decision
    assert hash(rebuilt) == hash(decision)


def test_unblock_state_is_the_one_rule_for_active_expired_reblocked():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert unblock_state(False, None, now) == "active"
    assert unblock_state(False, now + timedelta(seconds=1), now) == "active"
    assert unblock_state(False, now, now) == "expired"
    assert unblock_state(True, now + timedelta(days=1), now) == "reblocked"


def test_prefix_unblock_effect_follows_the_longest_prefix_rule():
    premium = ["+32900", "+32905", "+3270"]
    assert prefix_unblock_effect("+3290", premium) == "too_short"
    assert prefix_unblock_effect("+32905", premium) == "opens"
    assert prefix_unblock_effect("+329051", premium) == "opens"
    assert prefix_unblock_effect("+3202", premium) == "not_blocked"
    assert opens_premium("+32905", "+32905123456", "+32905")
    assert not opens_premium("+3290", "+32905123456", "+32905")


def test_the_eu_test_takes_an_unresolved_region_as_eu_only_if_every_candidate_is():
    assert in_eu("FR") and in_eu("RE") and not in_eu("CH") and not in_eu(None)
    assert in_eu(None, ("FI", "AX")) and not in_eu(None, ("GB", "IE"))


def test_only_allowed_calls_to_external_destinations_count_toward_the_fraud_limits():
    from callpolicy.policy.destinations import Classifier
    from callpolicy.policy.engine import counts_toward_limits, fail_safe_decision

    classifier = Classifier(build_policy_config())
    now = datetime(2026, 1, 1, tzinfo=UTC)
    emergency = fail_safe_decision(classifier, CallRequest(dialled="112", now=now), "test")
    national = fail_safe_decision(classifier, CallRequest(dialled="025551234", now=now), "t")
    assert emergency.allowed and not counts_toward_limits(emergency)
    assert not national.allowed and not counts_toward_limits(national)
    assert counts_toward_limits(replace(national, action=Action.ALLOW))


@pytest.mark.parametrize(("dialled", "reason"), [
    ("112#", Reason.EMERGENCY), ("101#", Reason.EMERGENCY), ("0905 12 345#", Reason.PREMIUM)])
def test_a_trailing_dial_now_key_changes_nothing_for_a_suspended_customer(
        make_engine, decide, customer_factory, dialled: str, reason: Reason) -> None:
    """112# reaches the emergency services (art. 5.7: must-reach in every state); a premium
    number with the key is still premium."""
    engine = make_engine(customer_factory("acme", suspended=True))
    decision = decide(dialled, customer_id="acme", engine=engine)
    assert decision.reason in (reason, Reason.SUSPENDED), decision
    assert decision.allowed is (reason is Reason.EMERGENCY), decision
