"""`callpolicy`: the ops CLI.

Exit codes: 0 success, 1 operational error (unknown customer, missing database, bad file…),
2 bad usage (including a bad value in the config file). Each error is one line on stderr;
never a traceback (CALLPOLICY_DEBUG=1 shows one).
`main` runs one command; parser.py declares them, one module per family implements them
(customers, exceptions, inspect, limits, calls, daemon).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..ops import ImportRejected, InvalidRequest, OpsError
from ..service.config import ConfigError, Settings, load_settings
from ..service.logging import configure_logging
from ..store import StoreError, StoreURLError
from ..store.sqlite_errors import explain
from .args import PROG, OperationalError, UsageError, option_name
from .parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[..., Any] = args.func
    try:
        settings = load_settings(getattr(args, "config", None))
        # The audit table records every change; stderr is for errors and warnings.
        configure_logging(settings.log_format, level="WARNING")
        if getattr(args, "db", None):
            settings = _with_db(settings, args.db)
        if not asyncio.iscoroutinefunction(func):
            return func(args, settings)
        # `serve` runs on uvloop when it is installed (cli/daemon.py: serve_event_loop)
        with asyncio.Runner(loop_factory=getattr(func, "loop_factory", None)) as runner:
            return runner.run(func(args, settings))
    except (UsageError, InvalidRequest) as exc:
        command = " ".join(filter(None, (PROG, args.command, getattr(args, "action", None))))
        text = exc.render(option_name) if isinstance(exc, InvalidRequest) else str(exc)
        sys.stderr.write(f"{command}: error: {text} (see {command} --help)\n")
        return 2
    except ConfigError as exc:  # a bad value in the config is bad usage; a missing file not
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 2 if exc.bad_value else 1
    except ImportRejected as exc:  # each problem on its line, then the verdict
        for problem in exc.problems:
            sys.stderr.write(f"{PROG}: error: {problem}\n")
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 1
    except (OpsError, OperationalError, StoreError) as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return 1
    except sqlite3.Error as exc:  # a read that failed after opening: say why, in one line
        sys.stderr.write(f"{PROG}: error: database {settings.db}: "
                         f"{explain(exc, settings.db_path)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:  # `callpolicy calls --csv | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:
        if os.environ.get("CALLPOLICY_DEBUG"):
            raise
        sys.stderr.write(f"{PROG}: internal error: {type(exc).__name__}: {exc} "
                         "(CALLPOLICY_DEBUG=1 for details)\n")
        return 1


def _with_db(settings: Settings, db: str) -> Settings:
    try:
        return settings.with_db(db)
    except StoreURLError as exc:
        raise UsageError(f"--db: {exc}") from exc


