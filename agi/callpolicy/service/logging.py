"""structlog setup: JSON lines in production, readable console on a terminal. To stderr.
RateLimitedLog: for errors that can repeat fast (a flood, a failing dependency)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import structlog

#: set by configure_logging: the lowest level that JSON lines are written at (json_line), or
#: None when the output is not structlog's JSON (console, or not configured: tests)
_json_from: int | None = None
_json_stream: TextIO | None = None
JSON_LEVELS = logging.getLevelNamesMapping()  # "INFO" -> 20 …


def json_line(level: str, event: str, fields: dict[str, Any]) -> bool:
    """The one line every call writes, rendered without structlog's processor chain: the
    same JSON as configure_logging's (the fields, event, level, timestamp, in that order),
    written to stderr. False (nothing written) when the output is not JSON: the caller logs
    through structlog then. True also when `level` is filtered out."""
    if _json_from is None or _json_stream is None:
        return False
    if JSON_LEVELS[level.upper()] >= _json_from:
        fields["event"] = event
        fields["level"] = level
        fields["timestamp"] = iso_utc(datetime.now(UTC))
        json_write(json.dumps(fields) + "\n")
    return True


def json_threshold() -> int | None:
    """The lowest level (a JSON_LEVELS number) that JSON lines are written at, or None when
    the output is not JSON: for a caller that renders its own line (json_write)."""
    return _json_from


def json_write(line: str) -> None:
    """One rendered JSON line (with its newline) to the log, flushed: as json_line does."""
    assert _json_stream is not None
    _json_stream.write(line)
    _json_stream.flush()


def iso_utc(moment: datetime) -> str:
    """The `timestamp` of a JSON line (structlog's TimeStamper(fmt="iso", utc=True))."""
    return moment.isoformat().replace("+00:00", "Z")


def configure_logging(fmt: str = "auto", level: str = "INFO") -> None:
    global _json_from, _json_stream
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    _json_from = JSON_LEVELS.get(level.upper(), logging.INFO) if fmt == "json" else None
    _json_stream = sys.stderr
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


class RateLimitedLog:
    """At most `burst` lines per `interval` seconds for each event name; the lines held back
    are counted, and the count goes out as `suppressed=N` (lines not logged since the previous
    one of that event) on the next line of that event or, when an event loop is running, in a
    summary line at the end of the interval, so that a burst is never hidden and nothing is
    logged while idle. One instance per thread (it is not locked).

        limited = RateLimitedLog(log)
        limited("warning", "agi_connection_refused", reason="...")
    """

    def __init__(self, logger: Any, *, burst: int = 3, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self.burst = burst
        self.interval = interval
        self._clock = clock
        self._events: dict[str, _EventState] = {}

    def __call__(self, level: str, event: str, **fields: Any) -> bool:
        """Log `event` at `level` unless its budget is spent; True if it was logged."""
        now = self._clock()
        state = self._events.get(event)
        if state is None:
            state = self._events[event] = _EventState(now)
        elif now - state.window_start >= self.interval:
            state.window_start, state.logged = now, 0
        if state.logged < self.burst:
            self._emit(level, event, state, fields)
            return True
        state.suppressed += 1
        state.level, state.last = level, fields
        if not state.flush_scheduled:
            self._schedule(state.window_start + self.interval - now)
            state.flush_scheduled = True
        return False

    def flush(self) -> None:
        """Log the count of every event held back so far, now (one line each, with the
        fields of its last occurrence); it starts a new interval for that event."""
        now = self._clock()
        for event, state in self._events.items():
            state.flush_scheduled = False
            if state.suppressed:
                state.window_start, state.logged = now, 0
                self._emit(state.level, event, state, state.last)

    def _emit(self, level: str, event: str, state: _EventState, fields: dict[str, Any]) -> None:
        if state.suppressed:
            fields = {**fields, "suppressed": state.suppressed}
        state.suppressed = 0
        state.logged += 1
        getattr(self._log, level)(event, **fields)

    def _schedule(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: the count goes out with the event's next line
            return
        loop.call_later(max(0.0, delay), self.flush)


@dataclass(slots=True)
class _EventState:
    window_start: float
    logged: int = 0  # lines logged in the current window
    suppressed: int = 0  # held back since the last line
    level: str = "warning"
    last: dict[str, Any] = field(default_factory=dict)
    flush_scheduled: bool = False


class EpisodeLog:
    """One line when a condition starts failing (again when its error changes), one when it
    recovers: for what is polled (a status page asks every second), so that an outage is one
    line, not one per poll.

        episodes = EpisodeLog(log)
        episodes.failing("api_daemon_unavailable", "no daemon answering on …")
        episodes.ok("api_daemon_unavailable", "api_daemon_answering")
    """

    def __init__(self, logger: Any) -> None:
        self._log = logger
        self._failing: dict[str, str] = {}

    def failing(self, event: str, error: str, level: str = "warning") -> None:
        if self._failing.get(event) != error:
            self._failing[event] = error
            getattr(self._log, level)(event, error=error)

    def ok(self, event: str, recovered: str) -> None:
        if self._failing.pop(event, None) is not None:
            self._log.info(recovered)
