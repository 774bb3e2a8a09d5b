"""The contract's default lists, and how configured lists become a PolicyConfig."""

from __future__ import annotations

from collections.abc import Iterable

from .model import PolicyConfig
from .must_reach import BIPT_MUST_REACH
from .numbers import normalise, normalise_prefix

# Art. 3.10. 0900-0902 stay open and 0908 is not an assigned range.
PREMIUM_PREFIXES = ("0903", "0904", "0905", "0906", "0907", "0909")

RESTRICTION_PREFIX = "#31#"


def _destination(entry: str, what: str) -> str:
    dialled = normalise(entry, restriction_prefix="")
    if not dialled.valid or dialled.destination is None:
        raise ValueError(f"{what}: {entry!r} is not a number ({dialled.problem})")
    return dialled.destination


def build_policy_config(
    premium_prefixes: Iterable[str] = PREMIUM_PREFIXES,
    must_reach: Iterable[str] = (),
    emergency: Iterable[str] = (),
    restriction_prefix: str = RESTRICTION_PREFIX,
) -> PolicyConfig:
    """Normalise configured lists. Raises ValueError naming the bad entry.

    `must_reach` and `emergency` ADD to the regulator's list (BIPT_MUST_REACH): nothing a
    config says can make 112 or a helpline unreachable. `premium_prefixes` ADD to the
    contract's (art. 3.10, PREMIUM_PREFIXES): an empty or mistyped list must not open 0905;
    a customer's premium is opened by an audited unblock, never by the config."""
    prefixes = []
    for entry in (*PREMIUM_PREFIXES, *premium_prefixes):
        prefix = normalise_prefix(entry)
        if prefix is None:
            raise ValueError(f"premium_prefixes: {entry!r} is not a number prefix")
        prefixes.append(prefix)
    emergency_set = BIPT_MUST_REACH.emergency() | frozenset(
        _destination(e, "emergency_numbers") for e in emergency)
    must = (BIPT_MUST_REACH.destinations() | emergency_set
            | frozenset(_destination(e, "must_reach") for e in must_reach))
    if restriction_prefix and any(c.isdigit() for c in restriction_prefix[-1:]):
        raise ValueError("restriction_prefix must end in a non-digit (like #31#)")
    return PolicyConfig(
        premium_prefixes=tuple(dict.fromkeys(prefixes)),
        must_reach=must,
        emergency=emergency_set,
        restriction_prefix=restriction_prefix,
    )
