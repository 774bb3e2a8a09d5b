"""`callpolicy serve`, `watchdog`, `status`, `must-reach-dialplan`: the daemon's commands."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ..service.config import Settings
from ..service.logging import configure_logging
from .args import OperationalError
from .output import print_json


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from ..service.daemon import serve  # the CLI's other commands don't need the daemon's imports

    configure_logging(settings.log_format, level=args.log_level)
    return await serve(settings, getattr(args, "config", None), getattr(args, "db", None))


def serve_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when it is installed (a dependency): it takes ~30 % off the daemon's CPU
    per call (bench/agi_cpu.py); else asyncio's own. The `listening` line names it."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


cmd_serve.loop_factory = serve_event_loop  # type: ignore[attr-defined]


def cmd_watchdog(args: argparse.Namespace, settings: Settings) -> int:
    return supervised(args, settings, "serve", "--log-level", args.log_level, role="daemon")


def supervised(args: argparse.Namespace, settings: Settings, *subcommand: str,
               role: str) -> int:
    """`callpolicy SUBCOMMAND` (with this run's --config/--db) under the watchdog. Not async:
    the supervisor owns the main thread and its signals."""
    from ..service.watchdog import supervise

    configure_logging(settings.log_format, level="INFO")
    command = [sys.executable, "-m", "callpolicy.cli", *subcommand]
    if getattr(args, "config", None):
        command += ["--config", args.config]
    if getattr(args, "db", None):
        command += ["--db", args.db]
    return supervise(command, args.watchdog_sec, args.pidfile, role=role)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """Not async: one short blocking HTTP request."""
    from ..service.status import (
        EXIT_DEGRADED,
        StatusUnavailable,
        fetch,
        problems,
        render,
        status_url,
    )

    url = status_url(settings.metrics_host, settings.metrics_port)
    try:
        status = fetch(url)
    except StatusUnavailable as exc:
        raise OperationalError(str(exc)) from None
    found = problems(status)
    if args.json:
        print_json({**status, "healthy": not found, "problems": found})
    else:
        sys.stdout.write(render(status))
    return EXIT_DEGRADED if found else 0


async def cmd_must_reach_dialplan(args: argparse.Namespace, settings: Settings) -> int:
    from ..asterisk.dialplan import must_reach_context

    sys.stdout.write(must_reach_context(settings.policy))
    return 0
