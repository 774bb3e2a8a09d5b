"""Playing Asterisk's res_agi towards a process AGI script (agi/fallback-agi): the environment
block, a reply to every command line, and the `EXEC MSet` it sent back. Shared by the unit and
integration tests (tests/ is on the import path through tests/conftest.py)."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import select
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MSET = re.compile(r'^EXEC MSet "(?P<pairs>[^"\\]*)"$')


def b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


@dataclass
class AgiRun:
    returncode: int
    commands: list[str]
    stderr: str
    seconds: float = 0.0

    @property
    def msets(self) -> list[str]:
        return [c for c in self.commands if c.startswith("EXEC MSet")]

    @property
    def variables(self) -> dict[str, str]:
        assert len(self.msets) == 1, self.commands
        match = MSET.match(self.msets[0])
        assert match, self.msets[0]
        pairs = [p.partition("=") for p in match["pairs"].split(",")]
        names = [name for name, _, _ in pairs]
        assert len(names) == len(set(names)), names
        return {name: value for name, _, value in pairs}


def agi_env_block(args: Sequence[str], extra: Mapping[str, str] | None = None) -> bytes:
    """What res_agi sends first: `agi_key: value` lines, then an empty line."""
    env = {"agi_request": "/opt/callpolicy/fallback-agi", "agi_channel": "PJSIP/acme-101-0001",
           "agi_language": "en", "agi_type": "PJSIP", "agi_callerid": "+3292101234",
           "agi_calleridname": "ACME", "agi_context": "from-phones", "agi_extension": "s",
           "agi_priority": "2", "agi_enhanced": "0.0", "agi_accountcode": "",
           "agi_threadid": "140000000000"}
    env.update(extra or {})
    lines = [f"{key}: {value}" for key, value in env.items()]
    lines += [f"agi_arg_{i}: {value}" for i, value in enumerate(args, start=1)]
    return ("\n".join(lines) + "\n\n").encode()


def drive_agi(argv: Sequence[str], args: Sequence[str], env: Mapping[str, str] | None = None,
              *, env_block: bytes | None = None, answer: str = "200 result=0",
              timeout: float = 20.0) -> AgiRun:
    """Be Asterisk: send the environment block, answer every command line, collect them."""
    started = time.monotonic()
    deadline = started + timeout
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(env) if env is not None else None)
    assert proc.stdin and proc.stdout and proc.stderr
    commands: list[str] = []
    try:
        proc.stdin.write(env_block if env_block is not None else agi_env_block(args))
        proc.stdin.flush()
        buffer = b""
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"the AGI did not finish in {timeout}s: {commands}"
            ready, _, _ = select.select([proc.stdout], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                command = line.decode()
                commands.append(command)
                reply = "200 result=1" if command.startswith("VERBOSE") else answer
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(f"{reply}\n".encode())
                    proc.stdin.flush()
        proc.wait(timeout=max(deadline - time.monotonic(), 1))
        seconds = time.monotonic() - started
        stderr = proc.stderr.read().decode("utf-8", "replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(BrokenPipeError):
                stream.close()
    return AgiRun(proc.returncode, commands, stderr, seconds)
