"""The contract's default lists, and how configured lists become a PolicyConfig."""

from __future__ import annotations

from collections.abc import Iterable

from .model import PolicyConfig
from .numbers import normalise, normalise_prefix

# Art. 3.10. 0900-0902 stay open and 0908 is not an assigned range.
PREMIUM_PREFIXES = ("0903", "0904", "0905", "0906", "0907", "0909")

EMERGENCY_NUMBERS = ("112", "100", "101")

# Royal Decree of 2 Feb 2007 art. 2 and BIPT's short-number list: reachable for free, even for
# a suspended customer (shared/reference/numbering.md).
MUST_REACH_NUMBERS = (
    "112", "100", "101",  # emergency, police
    "070 245 245",  # anti-poison centre (inside the 070 premium range)
    "1813", "0800 32 123", "02 649 95 55",  # suicide prevention
    "102", "103", "104",  # child helplines
    "106", "107", "108",  # Tele-Onthaal / helplines
    "110", "116000",  # missing children
)

RESTRICTION_PREFIX = "#31#"


def _destination(entry: str, what: str) -> str:
    dialled = normalise(entry, restriction_prefix="")
    if not dialled.valid or dialled.destination is None:
        raise ValueError(f"{what}: {entry!r} is not a number ({dialled.problem})")
    return dialled.destination


def build_policy_config(
    premium_prefixes: Iterable[str] = PREMIUM_PREFIXES,
    must_reach: Iterable[str] = MUST_REACH_NUMBERS,
    emergency: Iterable[str] = EMERGENCY_NUMBERS,
    restriction_prefix: str = RESTRICTION_PREFIX,
) -> PolicyConfig:
    """Normalise configured lists. Raises ValueError naming the bad entry."""
    prefixes = []
    for entry in premium_prefixes:
        prefix = normalise_prefix(entry)
        if prefix is None:
            raise ValueError(f"premium_prefixes: {entry!r} is not a number prefix")
        prefixes.append(prefix)
    emergency_set = frozenset(_destination(e, "emergency_numbers") for e in emergency)
    must = frozenset(_destination(e, "must_reach") for e in must_reach) | emergency_set
    if restriction_prefix and any(c.isdigit() for c in restriction_prefix[-1:]):
        raise ValueError("restriction_prefix must end in a non-digit (like #31#)")
    return PolicyConfig(
        premium_prefixes=tuple(dict.fromkeys(prefixes)),
        must_reach=must,
        emergency=emergency_set,
        restriction_prefix=restriction_prefix,
    )
