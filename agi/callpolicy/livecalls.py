"""The daemon's table of live calls: what the fraud guard counts and revocation re-decides.

A call enters at decision time (so simultaneous calls count before Asterisk reports them),
is answered and ended by AMI events, and is reconciled with Asterisk's channel list whenever
the AMI link (re)connects. Plain data, no I/O.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from .policy import CallRequest, Category, Decision, LiveCounts
from .policy.engine import is_risky

MINUTE = 60.0
EXTERNAL = frozenset({Category.NATIONAL, Category.EU, Category.NON_EU, Category.PREMIUM,
                      Category.SHORT})


@dataclass(slots=True)
class LiveCall:
    uniqueid: str
    channel: str
    customer_id: str
    request: CallRequest  # for re-deciding under a new policy (revocation)
    destination: str
    category: Category
    reason: str
    risky: bool
    started: float  # epoch seconds
    answered: float | None = None
    hung_up: bool = False  # a hang-up was asked for (revocation); the call is still up


@dataclass
class LiveCalls:
    calls: dict[str, LiveCall] = field(default_factory=dict)
    _by_customer: dict[str, dict[str, LiveCall]] = field(
        default_factory=lambda: defaultdict(dict))
    _starts: dict[str, deque[float]] = field(default_factory=lambda: defaultdict(deque))

    @staticmethod
    def counts_against_limits(decision: Decision) -> bool:
        """Allowed external calls count; must-reach numbers never do."""
        return decision.allowed and decision.category in EXTERNAL

    def add(self, uniqueid: str, channel: str, request: CallRequest, decision: Decision,
            started: float | None = None) -> LiveCall | None:
        if not self.counts_against_limits(decision) or decision.customer_id is None:
            return None
        started = time.time() if started is None else started
        call = LiveCall(uniqueid, channel, decision.customer_id, request,
                        decision.destination or "", decision.category, decision.reason.value,
                        is_risky(decision), started)
        self.calls[uniqueid] = call
        self._by_customer[call.customer_id][uniqueid] = call
        self._starts[call.customer_id].append(started)
        return call

    def answer(self, uniqueid: str, at: float | None = None) -> LiveCall | None:
        call = self.calls.get(uniqueid)
        if call is not None and call.answered is None:
            call.answered = time.time() if at is None else at
        return call

    def end(self, uniqueid: str) -> LiveCall | None:
        call = self.calls.pop(uniqueid, None)
        if call is not None:
            mine = self._by_customer.get(call.customer_id)
            if mine is not None:
                mine.pop(uniqueid, None)
                if not mine:
                    del self._by_customer[call.customer_id]
        return call

    def counts(self, customer_id: str, now: float | None = None) -> LiveCounts:
        now = time.time() if now is None else now
        starts = self._starts.get(customer_id)
        if starts is not None:
            while starts and starts[0] < now - MINUTE:
                starts.popleft()
        mine = self._by_customer.get(customer_id, {})
        return LiveCounts(concurrent=len(mine), last_minute=len(starts or ()),
                          risky=sum(c.risky for c in mine.values()))

    def by_category(self) -> dict[str, int]:
        result: dict[str, int] = defaultdict(int)
        for call in self.calls.values():
            result[call.category.value] += 1
        return dict(result)

    def reconcile(self, alive: set[str]) -> list[LiveCall]:
        """Drop calls whose channel Asterisk no longer has (hang-ups missed while the AMI
        link was down). Returns them."""
        gone = [c for uid, c in self.calls.items() if uid not in alive]
        for call in gone:
            self.end(call.uniqueid)
        return gone
