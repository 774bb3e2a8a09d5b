"""The must-reach list: numbers every customer reaches, for free, in every state.

The list itself is data with its source and the date it was checked
(`callpolicy/data/must-reach.toml`); this module parses it. It is read once, at import, like
`phonenumbers` reads its metadata: a decision never touches a file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from importlib import resources
from typing import Any

from .numbers import normalise


@dataclass(frozen=True, slots=True)
class MustReachNumber:
    number: str  # as the source lists it ("0800 30 030", "112")
    destination: str  # normalised: "+3280030030", "112"
    service: str
    emergency: bool = False


@dataclass(frozen=True, slots=True)
class MustReachList:
    source: str
    checked: date
    numbers: tuple[MustReachNumber, ...]

    def destinations(self) -> frozenset[str]:
        return frozenset(n.destination for n in self.numbers)

    def emergency(self) -> frozenset[str]:
        return frozenset(n.destination for n in self.numbers if n.emergency)

    def service(self, destination: str) -> str | None:
        return next((n.service for n in self.numbers if n.destination == destination), None)


def parse_must_reach(data: Mapping[str, Any]) -> MustReachList:
    """The parsed TOML document -> MustReachList. Raises ValueError naming the bad entry."""
    source, checked, entries = data.get("source"), data.get("checked"), data.get("number")
    if not isinstance(source, str) or not source.strip():
        raise ValueError("must-reach list: `source` (where the list comes from) is missing")
    if not isinstance(checked, date):
        raise ValueError("must-reach list: `checked` (a date, 2026-11-30) is missing")
    if not isinstance(entries, list) or not entries:
        raise ValueError("must-reach list: no [[number]] entries")
    numbers = []
    for entry in entries:
        number, service = entry.get("number"), entry.get("service")
        emergency = entry.get("emergency", False)
        if not isinstance(number, str) or not isinstance(service, str) or not service:
            raise ValueError(f"must-reach list: {entry!r} needs a number and a service")
        if not isinstance(emergency, bool):
            raise ValueError(f"must-reach list: {number}: emergency must be true or false")
        dialled = normalise(number, restriction_prefix="")
        if dialled.destination is None:
            raise ValueError(f"must-reach list: {number!r} is not a number ({dialled.problem})")
        numbers.append(MustReachNumber(number, dialled.destination, service, emergency))
    return MustReachList(" ".join(source.split()), checked, tuple(numbers))


def _packaged() -> MustReachList:
    text = resources.files("callpolicy").joinpath("data", "must-reach.toml").read_text("utf-8")
    return parse_must_reach(tomllib.loads(text))


#: The regulator's list (BIPT), shipped with the package. The config may extend it, never shrink it.
BIPT_MUST_REACH = _packaged()
