"""What raises alerts, read from the daemon: decisions and AMI UserEvents become occurrences
(event kinds), the daemon's state becomes conditions (state kinds).

All pure functions of their inputs: the Alerter calls them off the per-call path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..asterisk.variables import LAST_RESORT_EVENT
from ..live.cluster import OtherNodes
from ..policy import Decision, Reason
from .aggregate import Condition, Occurrence
from .fallback_journal import Entry
from .kinds import (
    AMI_LINK_DOWN,
    DATABASE_UNREACHABLE,
    EMERGENCY_CALL,
    FALLBACK_DECISION,
    FRAUD_LIMIT,
    NODE_HEARTBEAT_LOST,
    SPOOFING_ATTEMPT,
    iso,
)

MAX_TEXT = 200  # characters of a value from the network
# The fallback AGI's decisions come from its journal (journal_occurrence), also when the
# daemon was down; its UserEvent (CallpolicyFallback) would count them twice.
USER_EVENTS = {LAST_RESORT_EVENT: "last_resort"}


@dataclass(frozen=True, slots=True)
class Noted:
    """An alert-worthy decision as the per-call hook queues it (no work done yet)."""

    decision: Decision
    endpoint: str | None
    source_ip: str | None
    uniqueid: str
    at: float


def worth_noting(decision: Decision) -> bool:
    """The per-call test: fraud-limit refusals and spoofing attempts carry an event, every
    emergency call has `emergency`."""
    return bool(decision.events) or decision.emergency


def occurrences(noted: Noted) -> list[Occurrence]:
    d = noted.decision
    customer = d.customer_id or "?"
    call = {"customer": d.customer_id, "number": _safe(d.number),
            "destination": d.destination, "endpoint": _safe(noted.endpoint),
            "uniqueid": noted.uniqueid or None, "rule": d.rule, "reason": d.reason.value}
    found = []
    for event in d.events:
        detail = {k: _safe(v) for k, v in event.detail.items()}
        if event.kind == "fraud_limit" and d.reason is Reason.FRAUD_LIMIT:
            found.append(Occurrence(FRAUD_LIMIT, customer, noted.at, {
                **call, "limit": detail.get("limit"), "max": _int(detail.get("max")),
                "live": _int(detail.get("value"))}))
        elif event.kind == SPOOFING_ATTEMPT:
            found.append(Occurrence(SPOOFING_ATTEMPT, customer, noted.at, {
                **call, "requested": detail.get("requested"),
                "replaced_by": detail.get("replaced_by")}))
    if d.emergency:
        address = d.location_address
        found.append(Occurrence(EMERGENCY_CALL, customer, noted.at, {
            **call, "location": d.location.value if d.location else "unknown",
            "address": None if address is None else address.to_dict(),
            "source_ip": _safe(noted.source_ip), "caller_id": d.caller_id.number}))
    return found


def user_event_occurrence(event: dict[str, str], at: float) -> Occurrence | None:
    """A CallpolicyLastResort UserEvent of the dialplan (over AMI)."""
    by = USER_EVENTS.get(event.get("UserEvent", ""))
    if by is None:
        return None
    return Occurrence(FALLBACK_DECISION, by, at, {
        "by": by, "uniqueid": _safe(event.get("Uniqueid")),
        "channel": _safe(event.get("Channel"))})


def journal_occurrence(entry: Entry, now: float) -> Occurrence:
    """A decision of the fallback AGI, read from its journal, at its time (never later
    than `now`: a clock ahead must not hold the alert back)."""
    return Occurrence(FALLBACK_DECISION, "fallback", min(entry.at, now),
                      {"by": "fallback", **entry.values})


def journal_full_occurrence(now: float) -> Occurrence:
    return Occurrence(FALLBACK_DECISION, "fallback", now, {
        "by": "fallback", "journal_full": True,
        "note": "the fallback journal was full: later fallback decisions were not counted"})


def ami_condition(configured: bool, connected: bool, address: str,
                  since: float) -> list[Condition]:
    if configured and not connected:
        return [Condition(AMI_LINK_DOWN, "ami", {"address": address, "since": iso(since)})]
    return []


def store_condition(problem: str | None, since: float | None, db: str) -> list[Condition]:
    if problem is None:
        return []
    return [Condition(DATABASE_UNREACHABLE, "store", {
        "db": db, "error": problem, "since": iso(since) if since else None})]


def node_conditions(view: OtherNodes) -> list[Condition] | None:
    """Other nodes whose heartbeat is older than the timeout; None when this node has not
    read the table lately (it cannot tell: no node is raised or resolved)."""
    if not view.current:
        return None
    return [Condition(NODE_HEARTBEAT_LOST, n.node, {
        "node": n.node, "heartbeat_age_s": round(n.heartbeat_age, 1),
        "node_timeout_s": view.timeout, "ami": n.ami})
        for n in view.nodes if n.node != view.node and n.heartbeat_age > view.timeout]


def _safe(value: Any) -> Any:
    """Text from the network, cut (JSON and e-mail encoding escape the rest)."""
    return value[:MAX_TEXT] if isinstance(value, str) else value


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
