"""Property tests: the policy core never raises, and its rules hold for any input."""

from __future__ import annotations

from datetime import datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from callpolicy.policy import (
    Action,
    CallRequest,
    Category,
    Engine,
    Presentation,
    Reason,
    Snapshot,
    build_policy_config,
    normalise,
)

PROPERTY_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    database=None,  # no example database written into the tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

ACME_NUMBERS = frozenset({"+3292101234", "+3292101235"})

# --- strategies -------------------------------------------------------------------------------

SEPARATORS = [" ", ".", "-", "/", "(", ")", "\t", "\u00a0"]
DIAL_ALPHABET = list("0123456789+#*") + SEPARATORS + [":", ";", "@", "<", ">", "s", "p"]

any_text = st.text()  # unicode (hypothesis excludes surrogates), control characters included
dialish = st.text(alphabet=st.sampled_from(DIAL_ALPHABET), max_size=40)
digits = st.text(alphabet="0123456789", min_size=1, max_size=24)
prefixed = st.tuples(
    st.sampled_from(["", "#31#", "+", "00", "0", "0032", "+32", "+32 0", "#31#+", " "]),
    digits,
).map("".join)
dial_strings = st.one_of(any_text, dialish, prefixed)

customer_ids = st.sampled_from(["acme", "brol", "nobody", None])
endpoints = st.sampled_from([None, "acme-101", "acme-102", "brol-201", "ghost"])
source_ips = st.one_of(
    st.none(), any_text, st.sampled_from(["192.0.2.10", "192.0.2.10:5060", "[::1]:5060",
                                          "127.0.0.2", "127.0.0.2:5060", ":", "[", "]:"])
)
caller_ids = st.one_of(
    st.none(),
    any_text,
    dialish,
    prefixed,
    st.sampled_from(["+3292101234", "092101235", "+3225551234", "anonymous", "sipp",
                     "+32475123456", "0032 9 210 12 35"]),
)


def with_separators(parts: list[str], seps: list[str]) -> str:
    """Join characters with the given separators (one, possibly empty, between each pair)."""
    out = []
    for i, part in enumerate(parts):
        out.append(part)
        if i < len(seps):
            out.append(seps[i])
    return "".join(out)


separator_runs = st.lists(st.sampled_from(["", "", "", *SEPARATORS]), min_size=20, max_size=20)


# --- (a) never raises -------------------------------------------------------------------------

@PROPERTY_SETTINGS
@given(raw=dial_strings, prefix=st.sampled_from(["#31#", "", "*31#"]))
def test_normalise_never_raises(raw: str, prefix: str) -> None:
    dialled = normalise(raw, restriction_prefix=prefix)
    if dialled.valid:
        assert dialled.destination is not None
        if dialled.short:
            assert dialled.destination.isdecimal() and 3 <= len(dialled.destination) <= 6
        else:
            assert dialled.destination.startswith("+")
            assert dialled.destination[1:].isascii() and dialled.destination[1:].isdecimal()
            assert 4 <= len(dialled.destination) - 1 <= 15
            assert not dialled.destination.startswith("+320")
    else:
        assert dialled.problem


@PROPERTY_SETTINGS
@given(
    dialled=dial_strings,
    customer_id=customer_ids,
    endpoint=endpoints,
    source_ip=source_ips,
    caller_id=caller_ids,
    privacy=st.booleans(),
    forwarded_from=st.one_of(st.none(), dial_strings, st.sampled_from(["092101234"])),
)
def test_decide_never_raises(
    engine: Engine,
    now: datetime,
    dialled: str,
    customer_id: str | None,
    endpoint: str | None,
    source_ip: str | None,
    caller_id: str | None,
    privacy: bool,
    forwarded_from: str | None,
) -> None:
    decision = engine.decide(
        CallRequest(
            dialled,
            now,
            customer_id=customer_id,
            endpoint=endpoint,
            source_ip=source_ip,
            caller_id=caller_id,
            privacy=privacy,
            forwarded_from=forwarded_from,
        )
    )
    decision.to_dict()
    assert decision.number == dialled
    if decision.destination is None:
        assert (decision.action, decision.reason) == (Action.BLOCK, Reason.INVALID_NUMBER)
    if decision.action is Action.ALLOW:
        assert decision.destination is not None
        assert decision.reason in {
            Reason.ALLOWED, Reason.UNBLOCKED, Reason.EMERGENCY, Reason.MUST_REACH
        }
    if decision.customer_id is None and decision.action is Action.ALLOW:
        assert decision.category in {Category.EMERGENCY, Category.MUST_REACH}
    assert (decision.location is not None) == decision.emergency


# --- (b) 0…, 0032… and +32… forms decide alike ------------------------------------------------

belgian_nsn = st.text(alphabet="0123456789", min_size=1, max_size=13).filter(
    lambda s: s[0] != "0"
)


@PROPERTY_SETTINGS
@given(
    nsn=belgian_nsn,
    seps=st.tuples(separator_runs, separator_runs, separator_runs),
    customer_id=st.sampled_from(["acme", "brol", "nobody"]),
    restricted=st.booleans(),
)
def test_national_and_international_forms_decide_alike(
    engine: Engine,
    now: datetime,
    nsn: str,
    seps: tuple[list[str], list[str], list[str]],
    customer_id: str,
    restricted: bool,
) -> None:
    national = with_separators(["0", *nsn], seps[0])
    international = with_separators(["0", "0", "3", "2", *nsn], seps[1])
    e164 = with_separators(["+", "3", "2", *nsn], seps[2])
    prefix = "#31#" if restricted else ""
    decisions = [
        engine.decide(CallRequest(prefix + form, now, customer_id=customer_id))
        for form in (national, international, e164)
    ]
    summaries = {(d.action, d.reason, d.destination, d.category) for d in decisions}
    assert len(summaries) == 1, (national, international, e164, summaries)
    (summary,) = summaries
    if summary[2] is not None:
        assert summary[2] == "+32" + nsn


# --- (c) the presented number always belongs to the customer ----------------------------------

@PROPERTY_SETTINGS
@given(
    dialled=st.one_of(
        dial_strings,
        st.sampled_from(["09 210 12 99", "112", "#31#112", "0475 12 34 56", "0905 12 345",
                         "+41212345678", "070 245 245", "1813", "0033 1 42 68 53 00"]),
    ),
    caller_id=caller_ids,
    endpoint=st.sampled_from([None, "acme-101", "acme-102", "brol-201", "ghost"]),
    privacy=st.booleans(),
)
def test_presented_number_is_always_the_customers(
    engine: Engine,
    now: datetime,
    dialled: str,
    caller_id: str | None,
    endpoint: str | None,
    privacy: bool,
) -> None:
    decision = engine.decide(
        CallRequest(dialled, now, customer_id="acme", endpoint=endpoint, caller_id=caller_id,
                    privacy=privacy)
    )
    assert decision.caller_id.number in ACME_NUMBERS
    assert decision.caller_id.asserted in ACME_NUMBERS
    assert decision.diversion is None
    if not decision.emergency and caller_id is not None:
        requested = normalise(caller_id, restriction_prefix="")
        if requested.valid and not requested.short and requested.destination not in ACME_NUMBERS:
            assert [e.kind for e in decision.events if e.kind == "spoofing_attempt"] == [
                "spoofing_attempt"
            ]


# --- (d) must-reach numbers are always allowed ------------------------------------------------

MUST_REACH_DIGITS = {
    # number -> (national digits, whether it is an emergency number, is it a short number)
    "112": ("112", True, True),
    "100": ("100", True, True),
    "101": ("101", True, True),
    "1813": ("1813", False, True),
    "102": ("102", False, True),
    "103": ("103", False, True),
    "104": ("104", False, True),
    "106": ("106", False, True),
    "107": ("107", False, True),
    "108": ("108", False, True),
    "110": ("110", False, True),
    "116000": ("116000", False, True),
    "070 245 245": ("70245245", False, False),
    "0800 32 123": ("80032123", False, False),
    "02 649 95 55": ("26499555", False, False),
}

CUSTOMER_CONTEXTS = [
    {"customer_id": "acme"},
    {"customer_id": None, "endpoint": "acme-101"},
    {"customer_id": "brol"},
    {"customer_id": None, "endpoint": "brol-201"},
    {"customer_id": "nobody"},
    {"customer_id": None, "endpoint": "ghost"},
    {"customer_id": None},
    {"customer_id": None, "forwarded_from": "092101234"},
    {"customer_id": None, "forwarded_from": "02 555 12 34"},
]


@st.composite
def must_reach_dial_strings(draw: st.DrawFn) -> tuple[str, bool]:
    key = draw(st.sampled_from(sorted(MUST_REACH_DIGITS)))
    nsn, emergency, short = MUST_REACH_DIGITS[key]
    if short:
        chars = list(nsn)
    else:
        head = draw(st.sampled_from(["0", "0032", "+32"]))
        chars = [*head, *nsn]
    text = with_separators(chars, draw(separator_runs))
    prefix = draw(st.sampled_from(["", "#31#", "#31# ", " "]))
    return prefix + text, emergency


@PROPERTY_SETTINGS
@given(
    case=must_reach_dial_strings(),
    context=st.sampled_from(CUSTOMER_CONTEXTS),
    privacy=st.booleans(),
    caller_id=caller_ids,
    source_ip=source_ips,
)
def test_must_reach_is_always_allowed(
    engine: Engine,
    now: datetime,
    case: tuple[str, bool],
    context: dict,
    privacy: bool,
    caller_id: str | None,
    source_ip: str | None,
) -> None:
    dialled, emergency = case
    decision = engine.decide(
        CallRequest(dialled, now, privacy=privacy, caller_id=caller_id, source_ip=source_ip,
                    **context)
    )
    assert decision.action is Action.ALLOW, decision.rule
    assert decision.reason is (Reason.EMERGENCY if emergency else Reason.MUST_REACH)
    assert decision.emergency is emergency
    if emergency:
        assert decision.caller_id.presentation is Presentation.ALLOWED


# No customers at all: must-reach numbers still pass, with a configured restriction prefix.
_CUSTOM_PREFIX_ENGINE = Engine(Snapshot(build_policy_config(restriction_prefix="*31#")))


@PROPERTY_SETTINGS
@given(case=must_reach_dial_strings(), privacy=st.booleans())
def test_must_reach_with_another_restriction_prefix(now: datetime, case: tuple[str, bool],
                                                    privacy: bool) -> None:
    dialled, emergency = case
    dialled = dialled.replace("#31#", "*31#")
    decision = _CUSTOM_PREFIX_ENGINE.decide(CallRequest(dialled, now, privacy=privacy))
    assert decision.action is Action.ALLOW
    assert decision.reason is (Reason.EMERGENCY if emergency else Reason.MUST_REACH)
    assert decision.restriction_requested is (privacy or dialled.startswith("*31#"))
