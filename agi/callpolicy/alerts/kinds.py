"""The alert kinds, an alert as a value, and its versioned JSON payload (README: Alerts).

Event kinds happen (a refused call, a 112 call): occurrences of one (kind, key) within the
kind's window are one alert with a count. State kinds are conditions (the AMI link is down):
one alert when the condition starts, one with status "resolved" when it clears."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PAYLOAD_VERSION = 1

FRAUD_LIMIT = "fraud_limit"
SPOOFING_ATTEMPT = "spoofing_attempt"
EMERGENCY_CALL = "emergency_call"
FALLBACK_DECISION = "fallback_decision"
AMI_LINK_DOWN = "ami_link_down"
DATABASE_UNREACHABLE = "database_unreachable"
NODE_HEARTBEAT_LOST = "node_heartbeat_lost"

EVENT_KINDS = (FRAUD_LIMIT, SPOOFING_ATTEMPT, EMERGENCY_CALL, FALLBACK_DECISION)
STATE_KINDS = (AMI_LINK_DOWN, DATABASE_UNREACHABLE, NODE_HEARTBEAT_LOST)
KINDS = EVENT_KINDS + STATE_KINDS

#: seconds of aggregation per event kind unless `[alerts.route.<kind>] window` says otherwise:
#: a burst is one alert with a count; an emergency call goes out at once
DEFAULT_WINDOWS: Mapping[str, float] = {
    FRAUD_LIMIT: 60.0, SPOOFING_ATTEMPT: 300.0, EMERGENCY_CALL: 0.0, FALLBACK_DECISION: 60.0,
    AMI_LINK_DOWN: 0.0, DATABASE_UNREACHABLE: 0.0, NODE_HEARTBEAT_LOST: 0.0,
}

SEVERITIES: Mapping[str, str] = {
    FRAUD_LIMIT: "critical", SPOOFING_ATTEMPT: "warning", EMERGENCY_CALL: "warning",
    FALLBACK_DECISION: "warning", AMI_LINK_DOWN: "critical", DATABASE_UNREACHABLE: "critical",
    NODE_HEARTBEAT_LOST: "warning",
}

RAISED = "raised"
RESOLVED = "resolved"


def severity(kind: str, details: Mapping[str, Any]) -> str:
    """An emergency call without a verified location, and a last-resort decision, are
    critical; otherwise the kind's severity."""
    if kind == EMERGENCY_CALL and details.get("location") != "verified":
        return "critical"
    if kind == FALLBACK_DECISION and details.get("by") == "last_resort":
        return "critical"
    return SEVERITIES[kind]


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert to deliver: `count` occurrences of (kind, key) from first to last seen."""

    id: str  # unique (receivers deduplicate retried deliveries by it)
    kind: str
    key: str  # what the occurrences have in common: a customer, a node, "ami"...
    status: str  # RAISED or RESOLVED
    count: int
    first_seen: float  # epoch seconds
    last_seen: float
    window: float  # the aggregation window it was counted in (s)
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return "info" if self.status == RESOLVED else severity(self.kind, self.details)

    def summary(self) -> str:
        return summary(self)

    def payload(self, node: str) -> dict[str, Any]:
        return {
            "version": PAYLOAD_VERSION, "id": self.id, "kind": self.kind, "status": self.status,
            "severity": self.severity, "node": node, "key": self.key, "count": self.count,
            "first_seen": iso(self.first_seen), "last_seen": iso(self.last_seen),
            "window_s": self.window, "summary": self.summary(), "details": dict(self.details),
        }


def encode(payload: Mapping[str, Any]) -> bytes:
    """The bytes that are posted, signed and stored (compact, keys sorted)."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()


def summary(alert: Alert) -> str:
    d = alert.details
    times = f"{alert.count} calls" if alert.count != 1 else "1 call"
    if alert.kind == FRAUD_LIMIT:
        return (f"{times} of customer {d.get('customer')} refused over "
                f"{d.get('limit')} {d.get('max')}")
    if alert.kind == SPOOFING_ATTEMPT:
        return f"{times} of customer {d.get('customer')} asked to present a number it does not own"
    if alert.kind == EMERGENCY_CALL:
        return (f"emergency call to {d.get('number')} by customer {d.get('customer')}, "
                f"location {d.get('location')}" + (f" ({alert.count} calls)"
                                                   if alert.count > 1 else ""))
    if alert.kind == FALLBACK_DECISION:
        return f"{times} decided by the {str(d.get('by', 'fallback')).replace('_', ' ')}"
    what = {AMI_LINK_DOWN: "AMI link down", DATABASE_UNREACHABLE: "database unreachable",
            NODE_HEARTBEAT_LOST: f"node {alert.key}: heartbeat lost"}[alert.kind]
    return what + (": resolved" if alert.status == RESOLVED else "")
