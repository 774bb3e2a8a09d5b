"""RateLimitedLog: a few lines per second per event, the rest counted, the count never lost."""

from __future__ import annotations

import asyncio
import json

import structlog
from structlog.testing import capture_logs

from callpolicy.service import logging as logging_module
from callpolicy.service.logging import EpisodeLog, RateLimitedLog, configure_logging, json_line

LOG = structlog.get_logger("test")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_logs_a_few_lines_and_the_next_line_carries_the_count() -> None:
    clock = Clock()
    with capture_logs() as logs:
        limited = RateLimitedLog(LOG, burst=3,
                                 interval=1.0, clock=clock)
        logged = [limited("warning", "agi_bad_peer", n=i) for i in range(1000)]
        assert logged[:3] == [True] * 3 and not any(logged[3:])
        clock.now += 1.0
        assert limited("warning", "agi_bad_peer", n=1000)
    assert [e["n"] for e in logs] == [0, 1, 2, 1000]
    assert "suppressed" not in logs[0]
    assert logs[-1]["suppressed"] == 997 and logs[-1]["log_level"] == "warning"


def test_events_have_their_own_budget() -> None:
    clock = Clock()
    with capture_logs() as logs:
        limited = RateLimitedLog(LOG, burst=1,
                                 interval=1.0, clock=clock)
        for _ in range(10):
            limited("warning", "a")
            limited("error", "b")
    assert [(e["event"], e["log_level"]) for e in logs] == [("a", "warning"), ("b", "error")]


def test_flush_logs_the_held_back_count_with_the_last_fields() -> None:
    clock = Clock()
    with capture_logs() as logs:
        limited = RateLimitedLog(LOG, burst=1,
                                 interval=1.0, clock=clock)
        for i in range(5):
            limited("error", "refused", n=i)
        limited.flush()
        limited.flush()  # nothing more held back: nothing logged
    assert [(e["n"], e.get("suppressed")) for e in logs] == [(0, None), (4, 4)]


async def test_on_an_event_loop_the_count_goes_out_at_the_end_of_the_interval() -> None:
    """The tail of a burst is reported even if the event never happens again, and an idle
    limiter logs nothing."""
    with capture_logs() as logs:
        limited = RateLimitedLog(LOG, burst=2,
                                 interval=0.2)
        for i in range(50):
            limited("warning", "agi_connection_evicted", n=i)
        assert len(logs) == 2
        await asyncio.sleep(0.35)
        assert [(e["n"], e.get("suppressed")) for e in logs] == [(0, None), (1, None),
                                                                 (49, 48)]
        await asyncio.sleep(0.5)
    assert len(logs) == 3  # idle: no more lines


def test_the_pre_rendered_decision_line_is_structlogs_json_line(capsys) -> None:
    """json_line writes what configure_logging's structlog chain writes (bar the time), at
    the configured level; with console output it leaves the line to structlog."""
    fields = {"uniqueid": "1.1", "customer": None, "emergency": False, "latency_ms": 0.012,
              "dialled": 'é"\\x'}
    try:
        configure_logging("json", "INFO")
        structlog.get_logger("t").info("decision", **fields)
        assert json_line("info", "decision", dict(fields))
        configure_logging("json", "WARNING")
        assert json_line("info", "decision", dict(fields))  # filtered: nothing written
        assert json_line("warning", "decision", dict(fields))
        configure_logging("console", "INFO")
        assert not json_line("info", "decision", dict(fields))
    finally:
        structlog.reset_defaults()
        logging_module._json_from = logging_module._json_stream = None
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3, lines
    structlog_line, fast, warning = (json.loads(line) for line in lines)
    assert list(fast) == list(structlog_line)  # same keys, same order
    assert {k: v for k, v in fast.items() if k != "timestamp"} == {
        k: v for k, v in structlog_line.items() if k != "timestamp"}
    assert fast["timestamp"].endswith("Z") and len(fast["timestamp"]) == len(
        structlog_line["timestamp"])
    assert warning["level"] == "warning"


def test_an_episode_is_one_line_when_it_starts_one_when_its_error_changes_one_when_over(
        ) -> None:
    with capture_logs() as logs:
        episodes = EpisodeLog(LOG)
        episodes.ok("db_down", "db_back")  # nothing was failing: nothing to say
        for _ in range(100):  # polled every second
            episodes.failing("db_down", "disk full")
        episodes.failing("db_down", "read-only", level="error")
        episodes.failing("other_down", "refused")
        episodes.ok("db_down", "db_back")
        episodes.ok("db_down", "db_back")
        episodes.failing("db_down", "disk full")  # a new episode
    assert [(e["event"], e.get("error"), e["log_level"]) for e in logs] == [
        ("db_down", "disk full", "warning"), ("db_down", "read-only", "error"),
        ("other_down", "refused", "warning"), ("db_back", None, "info"),
        ("db_down", "disk full", "warning")]
