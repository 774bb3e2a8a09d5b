"""The environment parser's batch reading (a block, or several lines, decoded at once) gives
exactly what reading each line in turn gives, whatever the bytes and however they are cut."""

from __future__ import annotations

import itertools

from agi_peer import env_block
from hypothesis import given, settings
from hypothesis import strategies as st

from callpolicy.asterisk.agi_environment import (
    MAX_ENV_BYTES,
    MAX_LINE,
    MAX_LINES,
    NOT_AGI,
    TOO_LARGE,
    BadPeer,
    EnvironmentParser,
)


def reference(payload: bytes) -> tuple[object, ...]:
    """res_agi's block read the plain way, one line at a time, every check on every line:
    ("block", env, rest), ("bad", reason) or ("incomplete",)."""
    env: dict[str, str] = {}
    total = lines = start = 0
    while (end := payload.find(b"\n", start)) >= 0:
        lines += 1
        total += end + 1 - start
        if total > MAX_ENV_BYTES or end + 1 - start > MAX_LINE:
            return ("bad", TOO_LARGE)
        line = payload[start:end].decode("utf-8", "replace").rstrip("\r")
        start = end + 1
        if not line:
            return ("bad", NOT_AGI) if not env else ("block", env, payload[start:])
        key, sep, value = line.partition(":")
        if not sep or not key.startswith("agi_"):
            return ("bad", NOT_AGI)
        if lines >= MAX_LINES:
            return ("bad", TOO_LARGE)
        env[key.strip()] = value.strip()
    return ("bad", TOO_LARGE) if len(payload) - start > MAX_LINE else ("incomplete",)


def parse(chunks: list[bytes]) -> tuple[object, ...]:
    """What the parser makes of `chunks` fed one by one; the rest is what follows the
    block (in its chunk and the ones not fed)."""
    parser = EnvironmentParser()
    try:
        for i, chunk in enumerate(chunks):
            if (env := parser.feed(chunk)) is not None:
                return ("block", env, parser.rest + b"".join(chunks[i + 1:]))
    except BadPeer as exc:
        return ("bad", exc.reason)
    return ("incomplete",)


PIECES = [b"agi_", b"x", b":", b" ", b"\t", b"\n", b"\r", b"\r\n", b"\n\n", b"\xff", b"\xe2\x82",
          b"\x1c", b"agi_a: b\n", b"GET / ", b"200 result=0\n", b"A" * 1500,
          b"agi_long: " + b"B" * 3000 + b"\n"]


@st.composite
def payloads(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    if draw(st.booleans()):  # a real block, perhaps damaged, perhaps with the reply after it
        base = bytearray(env_block(draw(st.sampled_from(["092101299", "112", "é"]))))
        for _ in range(draw(st.integers(0, 3))):
            at = draw(st.integers(0, len(base)))
            base[at:at] = draw(st.sampled_from(PIECES))
        payload = bytes(base) + draw(st.sampled_from([b"", b"200 result=0\n", b"\n"]))
    else:
        payload = b"".join(draw(st.lists(st.sampled_from(PIECES), min_size=1, max_size=60)))
    if draw(st.booleans()):  # line by line, as res_agi writes it
        cuts = [i + 1 for i, byte in enumerate(payload) if byte == 10]
    else:
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=8)))
    return payload, cuts


@settings(max_examples=600, deadline=None, database=None)
@given(payloads())
def test_any_cut_of_any_bytes_reads_as_line_by_line(case: tuple[bytes, list[int]]) -> None:
    payload, cuts = case
    bounds = [0, *cuts, len(payload)]
    chunks = [payload[a:b] for a, b in itertools.pairwise(bounds)]
    assert parse(chunks) == reference(payload)


def by_line(payload: bytes) -> list[bytes]:
    return [line + b"\n" for line in payload.split(b"\n")[:-1]]


def test_the_caps_hold_at_their_edges_in_one_read_and_line_by_line() -> None:
    line = b"agi_x: " + b"A" * (MAX_LINE - 8) + b"\n"  # exactly MAX_LINE bytes
    near = line * 3 + line[:-2] + b"\n"  # with the blank line: exactly MAX_ENV_BYTES
    cases = [
        (b"agi_x: y\n" * MAX_LINES + b"\n", "bad"),
        (b"agi_x: y\n" * (MAX_LINES - 1) + b"\n", "block"),
        (near + b"\n", "block"),
        (b"agi_" + near + b"\n", "bad"),
        (near + b"agi_y: z\n\n", "bad"),
        (line * 4 + b"\n", "bad"),  # the blank line is one byte too many
        (line * 3 + line[:-6] + b"\nagi_:\n", "bad"),  # its last line is one byte too many
        (line + b"\n", "block"),
        (b"agi_x: " + b"A" * (MAX_LINE - 7) + b"\n\n", "bad"),
    ]
    assert len(near) + 1 == MAX_ENV_BYTES
    for payload, outcome in cases:
        for chunks in ([payload], by_line(payload)):
            assert parse(chunks)[0] == outcome == reference(payload)[0], payload[-40:]
