"""The per-call texts rendered from cached parts are byte for byte the generic ones: the
MSet command of `mset_command(decision_variables(...))` and the JSON line of json_line."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from callpolicy.asterisk import decision_render
from callpolicy.asterisk.decision_render import DecisionRenderer, decision_fields, log_line, mset
from callpolicy.asterisk.variables import (
    KINDS,
    AgiCall,
    decision_variables,
    mset_command,
    safe_value,
)
from callpolicy.policy import (
    Action,
    Address,
    CallerId,
    CallRequest,
    Category,
    Decision,
    Engine,
    Location,
    Presentation,
    Reason,
)
from callpolicy.service.logging import iso_utc

from test_fastagi import SNAPSHOT  # isort: skip

texts = st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["", "+3292101234", '"q"', "a,b=c", "é\\\n$[x]", "x" * 250])
maybe = st.none() | texts
addresses = st.none() | st.builds(Address, texts, texts, texts, texts, texts)
decisions = st.builds(
    Decision, number=texts, destination=maybe, action=st.sampled_from(Action),
    reason=st.sampled_from(Reason), category=st.sampled_from(Category), rule=texts,
    caller_id=st.builds(CallerId, maybe, st.sampled_from(Presentation), maybe),
    customer_id=maybe, emergency=st.booleans(), location=st.none() | st.sampled_from(Location),
    location_address=addresses, diversion=maybe)
calls = st.builds(AgiCall, st.sampled_from(KINDS), texts, texts, texts, st.booleans(), texts,
                  texts)


def reference_line(decision: Decision, call: AgiCall, env: dict[str, str], source: str,
                   elapsed: float, level: str, timestamp: str) -> str:
    """What json_line writes for log_decision's fields."""
    fields = decision_fields(decision, call, env, source, elapsed)
    return json.dumps({**fields, "event": "decision", "level": level,
                       "timestamp": timestamp}) + "\n"


def check(renderer: DecisionRenderer, decision: Decision, call: AgiCall, env: dict[str, str],
          source: str, elapsed: float) -> None:
    parts = renderer.parts(decision, source)
    assert mset(parts, decision) == mset_command(decision_variables(decision, source))
    level = "warning" if source != "daemon" or decision.emergency else "info"
    assert parts.level == level
    timestamp = iso_utc(datetime.now(UTC))
    line = log_line(parts, decision, safe_value(env.get("agi_uniqueid")),
                    safe_value(env.get("agi_channel")), call.kind, safe_value(call.endpoint),
                    safe_value(call.dialled), round(elapsed * 1000, 3), timestamp)
    assert line == reference_line(decision, call, env, source, elapsed, level, timestamp)


@settings(max_examples=200, deadline=None, database=None)
@given(decisions, calls, maybe, maybe, st.sampled_from(["daemon", "error", "x\"y"]),
       st.floats(0, 5))
def test_any_decision_renders_as_the_generic_texts(decision, call, uniqueid, channel, source,
                                                   elapsed) -> None:
    env = {k: v for k, v in (("agi_uniqueid", uniqueid), ("agi_channel", channel)) if v}
    renderer = DecisionRenderer()
    check(renderer, decision, call, env, source, elapsed)
    check(renderer, decision, call, env, source, elapsed)  # from the cached parts


def test_the_engines_decisions_render_as_the_generic_texts() -> None:
    engine = Engine(SNAPSHOT)
    renderer = DecisionRenderer()
    now = datetime.now(UTC)
    for dialled in ["092101299", "0905123456", "112", "0014155550123", "+33145678901", "x",
                    "070 245 245", "101"]:
        for endpoint in ["acme-101", "nobody", ""]:
            call = AgiCall("outbound", endpoint, dialled, "+3292101234", False, "", "")
            request = call.request(now)
            env = {"agi_uniqueid": "1700000000.1", "agi_channel": f"PJSIP/{endpoint}-01"}
            for decision, source in [(engine.decide(request), "daemon"),
                                     (engine.fail_safe(request, "boom"), "error")]:
                check(renderer, decision, call, env, source, 0.0123)
    assert (renderer.parts(engine.decide(CallRequest("092101299", now, endpoint="acme-101")),
                           "daemon")
            is renderer.parts(engine.decide(CallRequest("092101234", now, endpoint="acme-101")),
                              "daemon"))  # one kind of decision: one set of parts


def test_the_cache_of_parts_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(decision_render, "MAX_KINDS", 10)
    engine = Engine(SNAPSHOT)
    renderer = DecisionRenderer()
    decision = engine.decide(CallRequest("092101299", datetime.now(UTC), endpoint="acme-101"))
    for i in range(25):
        renderer.parts(decision, f"source-{i}")
        assert len(renderer._cache) <= 10
