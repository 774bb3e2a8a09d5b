"""`callpolicy limits show|set`: a customer's fraud limits."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import ops
from ..ops.limits import LimitChange, set_limits, show_limits
from ..service.config import Settings
from ..store import LIMIT_FIELDS, Actor
from .output import print_json


def _limits_text(view: dict[str, Any]) -> str:
    lines = []
    for name in LIMIT_FIELDS:
        value = view["effective"][name]
        shown = "no cap" if value is None else str(value)
        source = ("customer" if view["source"][name] == "customer"
                  else "operator default, config [fraud]")
        lines.append(f"{name:<22}{shown:>6}  ({source})")
    return "\n".join(lines) + "\n"


async def cmd_limits_show(args: argparse.Namespace, settings: Settings) -> int:
    async with await ops.open_store(settings, readonly=True) as store:
        view = await show_limits(store, args.id, settings.policy.fraud_limits)
    if args.json:
        print_json(view)
    else:
        sys.stdout.write(f"fraud limits of {args.id}\n" + _limits_text(view))
    return 0


async def cmd_limits_set(args: argparse.Namespace, settings: Settings) -> int:
    change = LimitChange.of({name: getattr(args, name) for name in LIMIT_FIELDS
                             if getattr(args, name) is not None}, args.default or ())
    actor = Actor(args.by, args.ticket, args.reason)
    async with await ops.open_store(settings) as store:
        done = await set_limits(store, args.id, change, actor, settings.policy.fraud_limits)
    if done.changed:
        sys.stdout.write(f"fraud limits of {args.id} set (ticket {args.ticket}); a running "
                         "daemon applies them within a second\n")
    else:
        sys.stdout.write(f"fraud limits of {args.id} unchanged (already so); nothing written\n")
    sys.stdout.write(_limits_text(done.view))
    return 0
