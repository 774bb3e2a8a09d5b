"""A decision as the two texts each call sends: the `EXEC MSet` command for Asterisk and the
`decision` JSON log line. Byte for byte what `mset_command(decision_variables(...))` and
`json_line` of log_decision's fields write, but rendered from parts: what repeats from call
to call (action, reason, category, presentation, rule, source, level…) is rendered once per
kind of decision and cached; only the call's own values (uniqueid, channel, numbers,
customer, latency…) are filled in per call. Issue 12: this was ~40 µs of each call's CPU.

Why no escaping is needed for the per-call values: every one that goes into the command
passes `safe_value` (a whitelist with no quote, backslash, comma or newline, so `agi_quote`
leaves the pairs as they are), and in the log line the strings not passed through
`encode_basestring_ascii` (what json.dumps uses) are `safe_value`s or a KINDS member, whose
characters JSON never escapes.
"""

from __future__ import annotations

import json.encoder
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from ..policy import Decision, Presentation
from ..service.logging import JSON_LEVELS, iso_utc, json_threshold, json_write
from .variables import (
    ACTION,
    ASSERTED,
    CALLER_NUM,
    CALLER_PRES,
    CATEGORY,
    DESTINATION,
    DIVERSION,
    EMERGENCY,
    ENV_CHANNEL,
    ENV_UNIQUEID,
    LOCATION,
    LOCATION_INFO,
    REASON,
    RULE,
    SIP_CODE,
    SOURCE,
    AgiCall,
    civic_location_info,
    safe_value,
)

log = structlog.get_logger("callpolicy.fastagi")
_json_str = json.encoder.encode_basestring_ascii  # json.dumps(str) with ensure_ascii, in C
MAX_KINDS = 4096  # kinds of decision kept rendered (a rule names its customer: bounded)


@dataclass(frozen=True, slots=True)
class Parts:
    """What a kind of decision renders the same way every time."""

    level: str  # of the log line: warning for a fail-safe answer or an emergency call
    level_no: int
    log_mid: str  # '"action": …, "caller_id": '
    log_tail: str  # ', "presentation": …, "latency_ms": '
    log_end: str  # ', "event": "decision", "level": …, "timestamp": "'
    mset_head: str  # 'EXEC MSet "CP_ACTION=…,CP_DEST='
    mset_pres: str  # ',CP_CID_PRES=…,CP_PAI='
    mset_loc: str  # ',CP_EMERGENCY=…,CP_LOC_INFO='
    mset_tail: str  # ',CP_SIP_CODE=…,CP_SOURCE=…"\n'


def _dumps(value: object) -> str:
    return json.dumps(value)


def _parts(decision: Decision, source: str) -> Parts:
    cid = decision.caller_id
    action, reason, category = (decision.action.value, decision.reason.value,
                                decision.category.value)
    location = decision.location.value if decision.location else None
    level = "warning" if source != "daemon" or decision.emergency else "info"
    blocked_code = "503" if reason == "fail_safe" else "403"
    return Parts(
        level=level,
        level_no=JSON_LEVELS[level.upper()],
        log_mid=(f'"action": {_dumps(action)}, "reason": {_dumps(reason)}, '
                 f'"category": {_dumps(category)}, "caller_id": '),
        log_tail=(f', "presentation": {_dumps(cid.presentation.value)}, '
                  f'"emergency": {_dumps(decision.emergency)}, "location": {_dumps(location)}, '
                  f'"rule": {_dumps(decision.rule)}, "source": {_dumps(source)}, '
                  '"latency_ms": '),
        log_end=f', "event": "decision", "level": {_dumps(level)}, "timestamp": "',
        mset_head=(f'EXEC MSet "{ACTION}={safe_value(action)},{REASON}={safe_value(reason)},'
                   f'{CATEGORY}={safe_value(category)},{DESTINATION}='),
        mset_pres=(f",{CALLER_PRES}="
                   f"{'prohib' if cid.presentation is Presentation.RESTRICTED else 'allowed'},"
                   f"{ASSERTED}="),
        mset_loc=(f",{EMERGENCY}={'1' if decision.emergency else '0'},"
                  f"{LOCATION}={safe_value(location or '')},{LOCATION_INFO}="),
        mset_tail=(f",{SIP_CODE}={'' if decision.allowed else blocked_code},"
                   f"{RULE}={safe_value(decision.rule)},{SOURCE}={safe_value(source)}\"\n"),
    )


class DecisionRenderer:
    """The per-kind parts, cached (bounded: cleared when MAX_KINDS are held)."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[tuple[object, ...], Parts] = {}

    def parts(self, decision: Decision, source: str) -> Parts:
        cid = decision.caller_id
        key = (decision.action, decision.reason, decision.category, cid.presentation,
               decision.emergency, decision.location, decision.rule, source)
        parts = self._cache.get(key)
        if parts is None:
            if len(self._cache) >= MAX_KINDS:
                self._cache.clear()
            parts = self._cache[key] = _parts(decision, source)
        return parts


def mset(parts: Parts, decision: Decision) -> str:
    """`mset_command(decision_variables(decision, source))`, from `parts`."""
    cid = decision.caller_id
    address = decision.location_address
    return (f"{parts.mset_head}{safe_value(decision.destination)},{CALLER_NUM}="
            f"{safe_value(cid.number)}{parts.mset_pres}{safe_value(cid.asserted)}"
            f"{parts.mset_loc}{safe_value(civic_location_info(decision)) if address else ''},"
            f"{DIVERSION}={safe_value(decision.diversion)}{parts.mset_tail}")


def log_line(parts: Parts, decision: Decision, uniqueid: str, channel: str, kind: str,
             endpoint: str, dialled: str, latency_ms: float, timestamp: str) -> str:
    """The `decision` JSON line (uniqueid, channel, endpoint, dialled: `safe_value`s; kind:
    a KINDS member), as json_line writes it from log_decision's fields."""
    customer, destination, number = (decision.customer_id, decision.destination,
                                     decision.caller_id.number)
    return (f'{{"uniqueid": "{uniqueid}", "channel": "{channel}", "kind": "{kind}", '
            f'"endpoint": "{endpoint}", '
            f'"customer": {"null" if customer is None else _json_str(customer)}, '
            f'"dialled": "{dialled}", '
            f'"destination": {"null" if destination is None else _json_str(destination)}, '
            f'{parts.log_mid}{"null" if number is None else _json_str(number)}'
            f'{parts.log_tail}{latency_ms!r}{parts.log_end}{timestamp}"}}\n')


def log_decision(parts: Parts, decision: Decision, call: AgiCall, env: dict[str, str],
                 source: str, elapsed: float) -> None:
    """The `decision` line every call leaves (JSON: rendered from `parts`), and the
    decision's events (alerts)."""
    uniqueid = safe_value(env.get(ENV_UNIQUEID))
    threshold = json_threshold()
    if threshold is None:  # not JSON: structlog renders it
        getattr(log, parts.level)("decision",
                                  **decision_fields(decision, call, env, source, elapsed))
    elif parts.level_no >= threshold:
        json_write(log_line(parts, decision, uniqueid, safe_value(env.get(ENV_CHANNEL)),
                            call.kind, safe_value(call.endpoint), safe_value(call.dialled),
                            round(elapsed * 1000, 3), iso_utc(datetime.now(UTC))))
    for event in decision.events:
        emit = log.error if event.kind == "fraud_limit" else log.warning  # an alert
        emit(event.kind, uniqueid=uniqueid, customer=decision.customer_id,
             **{k: safe_value(v) for k, v in event.detail.items()})


def decision_fields(decision: Decision, call: AgiCall, env: dict[str, str], source: str,
                    elapsed: float) -> dict[str, object]:
    """The `decision` line's fields, in their order (what log_line renders)."""
    cid = decision.caller_id
    return {
        "uniqueid": safe_value(env.get(ENV_UNIQUEID)),
        "channel": safe_value(env.get(ENV_CHANNEL)),
        "kind": call.kind,
        "endpoint": safe_value(call.endpoint),
        "customer": decision.customer_id,
        "dialled": safe_value(call.dialled),
        "destination": decision.destination,
        "action": decision.action.value,
        "reason": decision.reason.value,
        "category": decision.category.value,
        "caller_id": cid.number,
        "presentation": cid.presentation.value,
        "emergency": decision.emergency,
        "location": decision.location.value if decision.location else None,
        "rule": decision.rule,
        "source": source,
        "latency_ms": round(elapsed * 1000, 3),
    }
