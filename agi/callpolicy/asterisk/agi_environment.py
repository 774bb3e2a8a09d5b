"""The AGI environment block (res_agi's `agi_*: value` lines up to a blank line) as a
sans-I/O parser: bytes in, the environment or a BadPeer out. Written for hostile peers: a
size cap and a line cap; EOF anywhere, non-UTF-8 bytes or garbage end that one connection.
The FastAGI server (fastagi.py) feeds it and owns the deadlines."""

from __future__ import annotations

from .variables import ENV_PREFIX

__all__ = [
    "BAD_PEER_REASONS", "CONNECTION_ERROR", "ENV_LATE", "EOF_EARLY", "FIRST_LINE_LATE",
    "MAX_ENV_BYTES", "MAX_LINE", "MAX_LINES", "NOT_AGI", "TOO_LARGE", "BadPeer",
    "EnvironmentParser",
]

MAX_ENV_BYTES = 16 * 1024  # a real environment block is ~1 KiB
MAX_LINE = 4 * 1024
MAX_LINES = 128

#: why a peer was dropped before its decision (the `reason` label of
#: callpolicy_agi_bad_peers_total): a small fixed set
EOF_EARLY, TOO_LARGE, NOT_AGI = "eof", "too_large", "not_agi"
FIRST_LINE_LATE, ENV_LATE, CONNECTION_ERROR = (
    "first_line_deadline", "environment_deadline", "connection_error")
BAD_PEER_REASONS = (EOF_EARLY, TOO_LARGE, NOT_AGI, FIRST_LINE_LATE, ENV_LATE, CONNECTION_ERROR)


class BadPeer(Exception):
    """The peer is not a well-behaved Asterisk; close the connection."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # one of BAD_PEER_REASONS


class EnvironmentParser:
    """Sans-I/O reader of the agi_* block up to its blank line: `feed` bytes as they come;
    it returns the environment once the block is complete (None before), and raises BadPeer
    for anything odd. Bytes after the blank line are kept in `rest`."""

    __slots__ = ("_buffer", "env", "first_line", "lines", "rest", "total")

    def __init__(self) -> None:
        self.env: dict[str, str] = {}
        self.total = 0  # bytes of complete lines
        self.first_line = False  # a complete line has arrived
        self.lines = 0
        self.rest = b""
        self._buffer = b""

    def feed(self, data: bytes) -> dict[str, str] | None:
        buffer = self._buffer + data if self._buffer else data
        env = self.env
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            self.first_line = True
            self.lines += 1
            self.total += end + 1 - start
            if self.total > MAX_ENV_BYTES:
                raise BadPeer(TOO_LARGE, f"environment block larger than {MAX_ENV_BYTES} bytes")
            if end + 1 - start > MAX_LINE:
                raise BadPeer(TOO_LARGE, f"environment line longer than {MAX_LINE} bytes")
            line = buffer[start:end].decode("utf-8", "replace").rstrip("\r")
            start = end + 1
            if not line:
                if not env:
                    raise BadPeer(NOT_AGI, "empty environment block")
                self.rest = buffer[start:]
                return env
            key, sep, value = line.partition(":")
            if not sep or not key.startswith(ENV_PREFIX):
                raise BadPeer(NOT_AGI, "not an AGI environment line")
            if self.lines >= MAX_LINES:
                raise BadPeer(TOO_LARGE, f"more than {MAX_LINES} environment lines")
            env[key.strip()] = value.strip()
        self._buffer = buffer[start:]
        if len(self._buffer) > MAX_LINE:
            raise BadPeer(TOO_LARGE, f"environment line longer than {MAX_LINE} bytes")
        return None

    def eof(self) -> BadPeer:
        """What an EOF before the blank line means."""
        return BadPeer(EOF_EARLY, f"EOF after {self.total + len(self._buffer)} bytes of "
                       "environment")
