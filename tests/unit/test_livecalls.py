"""The live-call table's counts (live/livecalls.py), kept as calls enter and leave, always
equal what a recount of the table gives, whatever the order of adds, re-adds and ends."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from callpolicy.live.livecalls import LiveCalls
from callpolicy.policy import (
    Action,
    CallerId,
    CallRequest,
    Category,
    Decision,
    Presentation,
    Reason,
)

CUSTOMERS = ("acme", "bakkerij", "garage")
KINDS = {  # (category, allowed): national, unblocked non-EU (risky), unblocked premium (risky)
    "national": (Category.NATIONAL, Reason.ALLOWED),
    "non_eu": (Category.NON_EU, Reason.UNBLOCKED),
    "premium": (Category.PREMIUM, Reason.UNBLOCKED),
}
NOW = 1_800_000_000.0


def decision(customer: str, kind: str) -> Decision:
    category, reason = KINDS[kind]
    return Decision(number="0", destination="+32000", action=Action.ALLOW, reason=reason,
                    category=category, rule="test",
                    caller_id=CallerId(None, Presentation.ALLOWED, None), customer_id=customer)


steps = st.lists(st.tuples(st.sampled_from(("add", "end")), st.integers(0, 7),
                           st.sampled_from(CUSTOMERS), st.sampled_from(sorted(KINDS))),
                 max_size=60)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_counts_equal_a_recount_of_the_table(sequence: list[tuple[str, int, str, str]]) -> None:
    table = LiveCalls()
    request = CallRequest("0", datetime.now(UTC))
    for step, (what, call, customer, kind) in enumerate(sequence):
        uid = f"1.{call}"
        if what == "add":  # the same uniqueid again: a call found again by a resync
            table.add(uid, f"PJSIP/x-{call}", request, decision(customer, kind), NOW + step)
        else:
            table.end(uid)
        for name in CUSTOMERS:
            mine = [c for c in table.calls.values() if c.customer_id == name]
            counts = table.counts(name, NOW + step)
            assert counts.concurrent == len(mine)
            assert counts.risky == sum(c.risky for c in mine)
