"""`callpolicy limits show|set`: a customer's fraud limits."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from ..policy import FraudLimits
from ..service.config import Settings
from ..store import LIMIT_FIELDS, Actor, limits_dict
from .args import UsageError
from .output import open_store, print_json


def _limits_view(customer_id: str, own: FraudLimits, defaults: FraudLimits) -> dict[str, Any]:
    effective = own.over(defaults)
    return {
        "customer": customer_id,
        "effective": limits_dict(effective),
        "source": {name: "customer" if getattr(own, name) is not None else "default"
                   for name in LIMIT_FIELDS},
        "customer_limits": limits_dict(own),
        "defaults": limits_dict(defaults),
    }


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
    async with await open_store(settings, readonly=True) as store:
        own = await store.limits(args.id)
    view = _limits_view(args.id, own, settings.policy.fraud_limits)
    if args.json:
        print_json(view)
    else:
        sys.stdout.write(f"fraud limits of {args.id}\n" + _limits_text(view))
    return 0


async def cmd_limits_set(args: argparse.Namespace, settings: Settings) -> int:
    changes = {name: getattr(args, name) for name in LIMIT_FIELDS
               if getattr(args, name) is not None}
    defaults = list(dict.fromkeys(args.default or ()))
    if not changes and not defaults:
        raise UsageError("nothing to change: give --max-concurrent, --max-per-minute, "
                         "--max-concurrent-risky or --default FIELD")
    for name in defaults:
        if name in changes:
            raise UsageError(f"--{name.replace('_', '-')} and --default {name} contradict "
                             "each other")
    actor = Actor(args.by, args.ticket, args.reason)
    async with await open_store(settings) as store:
        own = await store.limits(args.id)
        new = replace(own, **changes, **dict.fromkeys(defaults))
        changed = await store.set_limits(args.id, new, actor)
    view = _limits_view(args.id, new, settings.policy.fraud_limits)
    if changed:
        sys.stdout.write(f"fraud limits of {args.id} set (ticket {args.ticket}); a running "
                         "daemon applies them within a second\n")
    else:
        sys.stdout.write(f"fraud limits of {args.id} unchanged (already so); nothing written\n")
    sys.stdout.write(_limits_text(view))
    return 0
