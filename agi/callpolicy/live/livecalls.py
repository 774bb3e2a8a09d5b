"""The daemon's table of live calls: what the fraud guard counts and revocation re-decides.

A call enters at decision time (so simultaneous calls count before Asterisk reports them),
is answered and ended by AMI events, and is reconciled with Asterisk's channel list whenever
the AMI link (re)connects. Only while that link is up: nothing else could take a call out.

Call starts (the per-minute limit) are counted separately, whatever the AMI link does: one
time-ordered window of the last minute's starts, pruned as time passes, so its size is the
number of calls started in the last minute. Plain data, no I/O.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime

from ..policy import CallRequest, Category, Decision, LiveCounts
from ..policy.engine import counts_toward_limits, is_risky

MINUTE = 60.0


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
    # when revocation must re-decide it even if the policy did not change (a scheduled
    # suspension, an unblock's expiry); None: at the next round
    recheck_at: datetime | None = None


@dataclass
class LiveCalls:
    calls: dict[str, LiveCall] = field(default_factory=dict)
    _by_customer: dict[str, dict[str, LiveCall]] = field(
        default_factory=lambda: defaultdict(dict))
    # the last minute's call starts, oldest first: (started, customer id, uniqueid)
    _starts: deque[tuple[float, str, str]] = field(default_factory=deque)
    _started_ids: set[str] = field(default_factory=set)
    _last_minute: dict[str, int] = field(default_factory=dict)
    # each customer's risky calls in the table, kept as calls enter and leave: the fraud
    # guard reads it on every call, a call centre may have hundreds up
    _risky: dict[str, int] = field(default_factory=dict)

    def count_start(self, uniqueid: str, decision: Decision,
                    started: float | None = None) -> bool:
        """Count a call start for the per-minute limit (once per uniqueid), without putting
        the call in the table. False if the call does not count against the limits."""
        if not counts_toward_limits(decision) or decision.customer_id is None:
            return False
        now = time.time()
        started = now if started is None else started
        self._prune(now)
        if uniqueid not in self._started_ids and started >= now - MINUTE:
            entry = (started, decision.customer_id, uniqueid)
            if not self._starts or self._starts[-1] <= entry:
                self._starts.append(entry)
            else:  # an older start (a call found again by a resync)
                bisect.insort(self._starts, entry)
            self._started_ids.add(uniqueid)
            customer = decision.customer_id
            self._last_minute[customer] = self._last_minute.get(customer, 0) + 1
        return True

    def add(self, uniqueid: str, channel: str, request: CallRequest, decision: Decision,
            started: float | None = None) -> LiveCall | None:
        """Put an allowed external call in the table (and count its start)."""
        started = time.time() if started is None else started
        if not self.count_start(uniqueid, decision, started):
            return None
        assert decision.customer_id is not None
        call = LiveCall(uniqueid, channel, decision.customer_id, request,
                        decision.destination or "", decision.category, decision.reason.value,
                        is_risky(decision), started)
        self.end(uniqueid)  # a call found again (resync): its old entry leaves first
        self.calls[uniqueid] = call
        self._by_customer[call.customer_id][uniqueid] = call
        if call.risky:
            self._risky[call.customer_id] = self._risky.get(call.customer_id, 0) + 1
        return call

    def _prune(self, now: float) -> None:
        starts = self._starts
        while starts and starts[0][0] < now - MINUTE:
            _, customer, uniqueid = starts.popleft()
            self._started_ids.discard(uniqueid)
            left = self._last_minute[customer] - 1
            if left:
                self._last_minute[customer] = left
            else:
                del self._last_minute[customer]

    def answer(self, uniqueid: str, at: float | None = None) -> LiveCall | None:
        call = self.calls.get(uniqueid)
        if call is not None and call.answered is None:
            call.answered = time.time() if at is None else at
        return call

    def end(self, uniqueid: str) -> LiveCall | None:
        call = self.calls.pop(uniqueid, None)
        if call is not None:
            customer = call.customer_id
            mine = self._by_customer.get(customer)
            if mine is not None:
                mine.pop(uniqueid, None)
                if not mine:
                    del self._by_customer[customer]
            if call.risky:
                left = self._risky[customer] - 1
                if left:
                    self._risky[customer] = left
                else:
                    del self._risky[customer]
        return call

    def counts(self, customer_id: str, now: float | None = None, *,
               concurrency_known: bool = True) -> LiveCounts:
        """The customer's counts for the fraud guard. `concurrency_known` False: the table
        cannot be trusted (AMI link down), concurrent and risky are None (not known)."""
        self._prune(time.time() if now is None else now)
        last_minute = self._last_minute.get(customer_id, 0)
        if not concurrency_known:
            return LiveCounts(concurrent=None, last_minute=last_minute, risky=None)
        mine = self._by_customer.get(customer_id, {})
        return LiveCounts(concurrent=len(mine), last_minute=last_minute,
                          risky=self._risky.get(customer_id, 0))

    def customers(self, now: float | None = None) -> set[str]:
        """Customers with a call in the table or a call started in the last minute."""
        self._prune(time.time() if now is None else now)
        return set(self._by_customer) | set(self._last_minute)

    def recent_starts(self, now: float | None = None) -> list[tuple[float, str, str]]:
        """The last minute's counted call starts, oldest first: (started, customer, uniqueid)."""
        self._prune(time.time() if now is None else now)
        return list(self._starts)

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
