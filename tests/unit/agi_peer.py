"""A fake Asterisk for FastAGI tests: builds environment blocks, parses our reply."""

from __future__ import annotations

import shlex

from fake_asterisk import b64


def env_block(dialled: str, caller: str | bytes = "sipp", endpoint: str = "acme-101") -> bytes:
    args = ["outbound", endpoint, b64(dialled), b64(caller), "0", "127.0.0.2:5060", ""]
    lines = ["agi_network: yes", "agi_network_script: decide", "agi_uniqueid: 1.1",
             "agi_channel: PJSIP/acme-101-0001"]
    lines += [f"agi_arg_{i}: {a}" for i, a in enumerate(args, start=1)]
    return ("\n".join(lines) + "\n\n").encode()


def parse_mset(line: str) -> dict[str, str]:
    """Parse our reply like res_agi does: split on spaces honouring quotes and backslashes."""
    words = shlex.split(line)
    assert words[:2] == ["EXEC", "MSet"] and len(words) == 3, line
    return dict(pair.split("=", 1) for pair in words[2].split(","))
