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
        last = buffer.rfind(b"\n")
        if last < 0:  # no complete line yet
            self._buffer = buffer
        elif (last == buffer.find(b"\n") and buffer.startswith(b"agi_") and last < MAX_LINE
              and self.lines < MAX_LINES - 1 and self.total + last < MAX_ENV_BYTES):
            # One plain line, well within the caps: res_agi writes the block line by line,
            # so this is the usual read when Asterisk's lines come one at a time. (A "\r"
            # before the "\n" is stripped with the value.)
            key, sep, value = buffer[:last].decode("utf-8", "replace").partition(":")
            if not sep:
                raise BadPeer(NOT_AGI, "not an AGI environment line")
            self.env[key.strip()] = value.strip()
            self.first_line = True
            self.lines += 1
            self.total += last + 1
            self._buffer = buffer[last + 1:]
        else:
            complete = self._batch(buffer, last)
            if complete is None:
                complete = self._line_by_line(buffer)
            if complete:
                return self.env
        if len(self._buffer) > MAX_LINE:
            raise BadPeer(TOO_LARGE, f"environment line longer than {MAX_LINE} bytes")
        return None

    def _batch(self, buffer: bytes, last: int) -> bool | None:
        """The common case at C speed: every complete line in `buffer` starts with agi_ and
        has a ":", well within the caps, maybe then the blank line "\n". Decodes and splits
        them at once; True when the blank line came, False when more is to come. None, with
        nothing changed, when anything is unusual (a "\r\n" blank line fails the agi_
        test): the caller then reads line by line, which finds the exact error."""
        if buffer[0] == 10:  # "\n": the blank line first
            blank, end = True, 0
        else:
            blank_at = buffer.find(b"\n\n")
            blank, end = (True, blank_at + 1) if blank_at >= 0 else (False, last + 1)
        if end > MAX_LINE or self.total + end + blank > MAX_ENV_BYTES:
            return None  # a line or the block may be too large: the per-line checks
        count = buffer.count(b"\n", 0, end)
        if self.lines + count >= MAX_LINES:
            return None
        env = self.env
        if count:
            if not buffer.startswith(b"agi_") or buffer.count(b"\nagi_", 0, end) != count - 1:
                return None
            try:
                pairs = {key.strip(): value.strip() for key, value in
                         [line.split(":", 1) for line in
                          buffer[:end - 1].decode("utf-8", "replace").split("\n")]}
            except ValueError:  # a line without ":"
                return None
            env.update(pairs)
        elif not env:
            return None  # an empty block
        self.first_line = True
        self.lines += count + blank
        self.total += end + blank
        if blank:
            self._buffer = b""
            self.rest = buffer[end + 1:]
            return True
        self._buffer = buffer[end:]
        return False

    def _line_by_line(self, buffer: bytes) -> bool:
        """Each complete line in turn, with every check: True when the blank line came, else
        False (the incomplete line kept)."""
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
                self._buffer = b""
                self.rest = buffer[start:]
                return True
            key, sep, value = line.partition(":")
            if not sep or not key.startswith(ENV_PREFIX):
                raise BadPeer(NOT_AGI, "not an AGI environment line")
            if self.lines >= MAX_LINES:
                raise BadPeer(TOO_LARGE, f"more than {MAX_LINES} environment lines")
            env[key.strip()] = value.strip()
        self._buffer = buffer[start:]
        return False

    def eof(self) -> BadPeer:
        """What an EOF before the blank line means."""
        return BadPeer(EOF_EARLY, f"EOF after {self.total + len(self._buffer)} bytes of "
                       "environment")
