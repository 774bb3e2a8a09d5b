"""The FastAGI server against well-behaved and hostile fake AGI peers (no Asterisk needed)."""

from __future__ import annotations

import asyncio
import time

import pytest
from agi_peer import env_block, parse_mset
from structlog.testing import capture_logs

from callpolicy.asterisk.agi_environment import (
    EOF_EARLY,
    MAX_LINE,
    MAX_LINES,
    NOT_AGI,
    TOO_LARGE,
    BadPeer,
    EnvironmentParser,
)
from callpolicy.asterisk.fastagi import SWEEP_INTERVAL, FastAgiServer, Limits
from callpolicy.policy import (
    Address,
    Customer,
    Endpoint,
    Engine,
    Snapshot,
    build_policy_config,
)
from callpolicy.service.metrics import Metrics

CONFIG = build_policy_config()
ACME = Customer(
    id="acme", name="ACME", suspended=False, main_number="+3292101234",
    numbers=frozenset({"+3292101234", "+3292101235"}),
    install_address=Address("Breebroekstraat", "61", "9030", "Gent", "BE"),
)
SNAPSHOT = Snapshot(CONFIG, {"acme": ACME},
                    {"acme-101": Endpoint("acme-101", "acme", "+3292101234")},
                    {"+3292101234": "acme", "+3292101235": "acme"})


@pytest.fixture
async def server():
    engine = Engine(SNAPSHOT)
    srv = FastAgiServer(engine.decide, engine.fail_safe,
                        Limits(env_deadline=0.5, reply_deadline=0.5))
    await srv.start("127.0.0.1", 0)
    yield srv
    await srv.stop()


async def ask(port: int, block: bytes, *, reply: bytes = b"200 result=0\n") -> dict[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(block)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 2)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    writer.write(reply)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""  # the server closes
    writer.close()
    return parse_mset(line.decode())


def port_of(server: FastAgiServer) -> int:
    return server.sockets[0][1]


async def test_one_round_trip_sets_every_variable(server: FastAgiServer) -> None:
    variables = await ask(port_of(server), env_block("09 210 12 99"))
    assert variables["CP_ACTION"] == "allow"
    assert variables["CP_DEST"] == "+3292101299"
    assert variables["CP_CID_NUM"] == "+3292101234"
    assert variables["CP_CID_PRES"] == "allowed"
    assert variables["CP_SOURCE"] == "daemon"
    blocked = await ask(port_of(server), env_block("0905123456"))
    assert (blocked["CP_ACTION"], blocked["CP_REASON"], blocked["CP_SIP_CODE"]) == (
        "block", "premium", "403")


@pytest.mark.parametrize(
    "caller",
    ['Evil" "x', 'a,b=c', "line1\nline2\r\n", '\\"; EXEC Dial PJSIP/0905@trunk', "$[1+1]"],
    ids=["quotes", "commas", "newlines", "backslash-injection", "expression"],
)
async def test_hostile_caller_ids_are_quoted(server: FastAgiServer, caller: str) -> None:
    variables = await ask(port_of(server), env_block("092101299", caller=caller))
    assert set(variables) >= {"CP_ACTION", "CP_CID_NUM"}
    assert variables["CP_CID_NUM"] == "+3292101234"  # never the phone's string
    for value in variables.values():
        assert not set(value) & set('",\\\n$[')


async def test_non_utf8_caller_name(server: FastAgiServer) -> None:
    variables = await ask(port_of(server), env_block("092101299", caller=b"\xff\xfe\x80abc"))
    assert variables["CP_ACTION"] == "allow"
    raw = env_block("092101299").replace(b"agi_channel: PJSIP", b"agi_channel: \xff\xfePJSIP")
    assert (await ask(port_of(server), raw))["CP_ACTION"] == "allow"


async def test_garbage_dialled_string_is_an_invalid_number(server: FastAgiServer) -> None:
    block = env_block("x").replace(b"agi_arg_3: eA==", b"agi_arg_3: !!not-base64!!")
    variables = await ask(port_of(server), block)
    assert (variables["CP_ACTION"], variables["CP_REASON"]) == ("block", "invalid_number")


async def hostile(port: int, payload: bytes, close: bool) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
    except ConnectionError:
        return b""
    if close:
        writer.close()
        return b""
    try:
        return await asyncio.wait_for(reader.read(), 3)
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def test_bad_peers_never_stop_normal_calls(server: FastAgiServer) -> None:
    port = port_of(server)
    full = env_block("092101299")
    bad = [
        hostile(port, b"", close=True),  # connect and close
        hostile(port, full[: len(full) // 2], close=True),  # half a block, then EOF
        hostile(port, full[: len(full) // 2], close=False),  # half a block, then silence
        hostile(port, b"agi_x: " + b"A" * (1024 * 1024), close=False),  # 1 MB line
        hostile(port, b"agi_x: y\n" * 100_000, close=False),  # 1 MB of headers
        hostile(port, b"GET / HTTP/1.1\r\n\r\n", close=False),  # not AGI
    ]
    tasks = [asyncio.create_task(b) for b in bad]
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    answers = await asyncio.gather(*(ask(port, full) for _ in range(20)))
    assert time.perf_counter() - started < 1.0  # not held up by the silent peers
    assert all(a["CP_ACTION"] == "allow" for a in answers)
    replies = await asyncio.gather(*tasks)
    assert all(r == b"" for r in replies)  # bad peers got nothing but a close
    assert server.stats["bad_peers"] >= 5
    assert (await ask(port, full))["CP_ACTION"] == "allow"  # still answering


async def test_slow_peer_is_dropped_at_the_environment_deadline(server: FastAgiServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    writer.write(b"agi_network: yes\n")
    started = time.perf_counter()
    assert await asyncio.wait_for(reader.read(), 3) == b""
    assert 0.4 < time.perf_counter() - started < 1.5
    writer.close()


async def test_peer_that_never_acknowledges_is_released(server: FastAgiServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    writer.write(env_block("092101299"))
    assert (await reader.readline()).startswith(b"EXEC MSet")
    started = time.perf_counter()
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed after reply_deadline
    assert time.perf_counter() - started < 1.5
    writer.close()


async def test_an_engine_error_gets_the_fail_safe_answer_with_source_error() -> None:
    """A bug in the policy must not leave the call hanging nor pass as a decision: must-reach
    numbers pass, the rest 503, CP_SOURCE=error, logged with the traceback, counted."""
    engine = Engine(SNAPSHOT)
    metrics = Metrics()
    seen: list[str] = []

    def broken(request):
        raise RuntimeError("boom")

    def on_decision(decision, source, seconds, request, env) -> None:
        seen.append(source)
        metrics.observe_decision(decision, source, seconds)

    srv = FastAgiServer(broken, engine.fail_safe, on_decision=on_decision)
    await srv.start("127.0.0.1", 0)
    try:
        with capture_logs() as logs:
            national = await ask(port_of(srv), env_block("092101299"))
        assert (national["CP_ACTION"], national["CP_REASON"], national["CP_SIP_CODE"],
                national["CP_SOURCE"]) == ("block", "fail_safe", "503", "error")
        sos = await ask(port_of(srv), env_block("112"))
        assert (sos["CP_ACTION"], sos["CP_EMERGENCY"], sos["CP_DEST"], sos["CP_SOURCE"]) == (
            "allow", "1", "112", "error")
        poison = await ask(port_of(srv), env_block("070 245 245"))
        assert (poison["CP_ACTION"], poison["CP_DEST"]) == ("allow", "+3270245245")
        premium = await ask(port_of(srv), env_block("0905123456"))
        assert premium["CP_ACTION"] == "block"
        assert srv.stats["errors"] == 4 and srv.stats["decisions"] == 4
    finally:
        await srv.stop()
    assert seen == ["error"] * 4
    failed = [e for e in logs if e["event"] == "decision_failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error"
    assert failed[0]["uniqueid"] == "1.1" and failed[0].get("exc_info")
    scraped = metrics.render().decode()
    assert "callpolicy_decision_errors_total 4.0" in scraped
    assert 'callpolicy_decisions_total{action="block",reason="fail_safe",source="error"} 2.0' \
        in scraped


async def test_a_working_engine_is_never_counted_as_an_error(server: FastAgiServer) -> None:
    assert (await ask(port_of(server), env_block("092101299")))["CP_SOURCE"] == "daemon"
    assert server.stats["errors"] == 0 and server.stats["decisions"] == 1


async def test_an_idle_peer_is_dropped_at_the_first_line_deadline() -> None:
    """Asterisk sends its block at once: a silent peer holds its slot ~250 ms, not 2 s."""
    engine = Engine(SNAPSHOT)
    metrics = Metrics()
    srv = FastAgiServer(engine.decide, engine.fail_safe, on_drop=metrics.agi_dropped)
    await srv.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port_of(srv))
        started = time.perf_counter()
        assert await asyncio.wait_for(reader.read(), 3) == b""
        assert time.perf_counter() - started < 1.5  # the first-line deadline, not the 2 s one
        writer.close()
    finally:
        await srv.stop()
    assert srv.stats["bad_peers"] == 1
    assert 'callpolicy_agi_bad_peers_total{reason="first_line_deadline"} 1.0' in \
        metrics.render().decode()


async def test_when_full_a_newcomer_evicts_the_oldest_silent_peer_never_an_answering_one(
        ) -> None:
    engine = Engine(SNAPSHOT)
    metrics = Metrics()
    srv = FastAgiServer(engine.decide, engine.fail_safe,
                        Limits(first_line_deadline=5, env_deadline=5, reply_deadline=5,
                               max_connections=3),
                        on_drop=metrics.agi_dropped)
    await srv.start("127.0.0.1", 0)
    port = port_of(srv)
    try:
        # one call answered and waiting for Asterisk's "200": it keeps its slot
        answering_r, answering_w = await asyncio.open_connection("127.0.0.1", port)
        answering_w.write(env_block("092101299"))
        assert (await asyncio.wait_for(answering_r.readline(), 2)).startswith(b"EXEC MSet")
        s1 = await asyncio.open_connection("127.0.0.1", port)
        s2 = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.sleep(0.05)
        with capture_logs() as logs:
            assert (await ask(port, env_block("092101299")))["CP_ACTION"] == "allow"
            assert await asyncio.wait_for(s1[0].read(), 2) == b""  # the oldest made room
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(s2[0].read(), 0.2)  # the other one is still open
            s3 = await asyncio.open_connection("127.0.0.1", port)
            await asyncio.sleep(0.05)
            answers = [await ask(port, env_block("092101299")) for _ in range(20)]
        assert all(a["CP_ACTION"] == "allow" for a in answers)
        assert await asyncio.wait_for(s2[0].read(), 2) == b""  # then the next oldest
        answering_w.write(b"200 result=0\n")  # the answering one was never dropped
        await answering_w.drain()
        assert await asyncio.wait_for(answering_r.read(), 2) == b""
        silent = [s1, s2, s3]
        assert srv.stats["decisions"] == 22 and srv.stats["evicted"] == 2
        # all slots answering: the newcomer is refused, not an answering call
        held = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(env_block("092101299"))
            assert (await asyncio.wait_for(reader.readline(), 2)).startswith(b"EXEC MSet")
            held.append(writer)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(), 2) == b""
        assert srv.stats["refused"] == 1
        for w in [*held, writer, answering_w, *(w for _, w in silent)]:
            w.close()
    finally:
        await srv.stop()
    evicted = [e for e in logs if e["event"] == "agi_connection_evicted"]
    assert evicted and len(evicted) <= 3  # rate-limited: at most a few lines a second
    scraped = metrics.render().decode()
    assert f"callpolicy_agi_evicted_total {float(srv.stats['evicted'])}" in scraped
    assert "callpolicy_agi_refused_total 1.0" in scraped


def test_the_environment_parser_gives_the_same_block_whatever_the_chunks() -> None:
    block = env_block("092101299")
    whole = EnvironmentParser().feed(block + b"200 result=0\n")
    assert whole is not None and whole["agi_arg_1"] == "outbound"
    for size in (1, 2, 3, 17, 64):
        parser = EnvironmentParser()
        results = [parser.feed(block[i:i + size]) for i in range(0, len(block), size)]
        assert results[-1] == whole and not any(results[:-1])
    parser = EnvironmentParser()
    assert parser.feed(block + b"200 result=0\n") == whole and parser.rest == b"200 result=0\n"


@pytest.mark.parametrize(("payload", "reason"), [
    (b"agi_x: " + b"A" * (MAX_LINE + 1), TOO_LARGE),  # no newline yet: caught while streaming
    (b"agi_x: y\n" * (MAX_LINES + 1), TOO_LARGE),
    ((b"agi_x: " + b"A" * 4000 + b"\n") * 5, TOO_LARGE),  # 20 KB of lines
    (b"\n", NOT_AGI),
    (b"GET / HTTP/1.1\r\n", NOT_AGI),
])
def test_the_environment_parser_refuses_what_is_not_an_asterisk_block(payload, reason) -> None:
    parser = EnvironmentParser()
    with pytest.raises(BadPeer) as caught:
        for i in range(0, len(payload), 1000):
            parser.feed(payload[i:i + 1000])
    assert caught.value.reason == reason
    assert EnvironmentParser().eof().reason == EOF_EARLY


async def test_deadlines_pass_within_one_sweep_and_the_sweep_stops_when_idle() -> None:
    """No timer per connection: one sweep every SWEEP_INTERVAL ends the connections past
    their deadline (not before it: less the client's connect time), and it is not armed while
    no connection is open."""
    engine = Engine(SNAPSHOT)
    srv = FastAgiServer(engine.decide, engine.fail_safe,
                        Limits(first_line_deadline=0.1, env_deadline=0.2, reply_deadline=0.15))
    await srv.start("127.0.0.1", 0)
    try:
        async def closed_after(payload: bytes, until: bytes = b"") -> float:
            reader, writer = await asyncio.open_connection("127.0.0.1", port_of(srv))
            writer.write(payload)
            started = time.perf_counter()
            if until:
                assert (await reader.readline()).startswith(until)
            assert await asyncio.wait_for(reader.read(), 3) == b""
            writer.close()
            return time.perf_counter() - started

        silent, slow, mute = await asyncio.gather(
            closed_after(b""), closed_after(b"agi_network: yes\n"),
            closed_after(env_block("092101299"), b"EXEC MSet"))
        print(f"closed after {silent:.3f} / {slow:.3f} / {mute:.3f} s")
        # the upper bound's slack is a loaded machine's; a deadline never enforced is 3 s
        assert 0.08 <= silent < 0.1 + SWEEP_INTERVAL + 1.0
        assert 0.18 <= slow < 0.2 + SWEEP_INTERVAL + 1.0
        assert 0.13 <= mute < 0.15 + SWEEP_INTERVAL + 1.0
        assert (await ask(port_of(srv), env_block("092101299")))["CP_ACTION"] == "allow"
        await asyncio.sleep(2 * SWEEP_INTERVAL)
        assert srv._sweeper is None and not srv._connections
    finally:
        await srv.stop()
    assert srv.stats["bad_peers"] == 2
