"""What a destination is, independent of who calls it: region, EU membership, premium range.

Classification is by prefix on the normalised number, not by `phonenumbers.number_type`: an
over-long `0903123456` has type UNKNOWN and would slip through a type check. `phonenumbers`
is only asked for a region where a country code is shared by several regions, and the answer
is cached, so a decision costs microseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

from .model import Category, PolicyConfig
from .numbers import MAX_INPUT, Dialled, fixed_line_pattern, normalise, normalise_number

# EU-27 plus the territories that are EU although they have their own region code in
# libphonenumber: Åland (+358 18), and the outermost regions Guadeloupe, French Guiana,
# Martinique, Mayotte, Réunion and Saint-Martin. The Canaries, Azores and Madeira share
# Spain's and Portugal's codes. Saint-Barthélemy left the EU in 2012.
EU_MEMBER_STATES = frozenset({
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
    "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
})
EU_REGIONS = EU_MEMBER_STATES | {"AX", "GP", "GF", "MQ", "YT", "RE", "MF"}

#: Belgian freephone numbers (0800 …, +32 800 …): free to the caller
FREEPHONE_PREFIX = "+32800"
#: destinations whose calls are free by law: emergency services and the must-reach numbers
FREE_CATEGORIES = frozenset({Category.EMERGENCY, Category.MUST_REACH})


def free_call(category: str | None, destination: str | None) -> bool:
    """BIPT ("facturen"): calls to emergency services, to the must-reach numbers and to 0800
    numbers never appear on the invoice. `category` is a Category value, `destination` the
    normalised number (E.164 or a short number); either may be unknown (None)."""
    return category in FREE_CATEGORIES or (
        destination is not None and destination.startswith(FREEPHONE_PREFIX))


def in_eu(region: str | None, candidates: tuple[str, ...] = ()) -> bool:
    """The EU test: the region is in the EU, or, when the number's region is not resolved,
    every region it could be is."""
    return region in EU_REGIONS or bool(candidates and EU_REGIONS.issuperset(candidates))


def country_code(digits: str) -> int | None:
    for length in (1, 2, 3):
        code = int(digits[:length]) if len(digits) >= length else -1
        if code in COUNTRY_CODE_TO_REGION_CODE:
            return code
    return None


def _bl_fixed_pattern() -> re.Pattern[str]:
    return re.compile(fixed_line_pattern("BL"))


_BL_FIXED = _bl_fixed_pattern()


def region_from_metadata(e164: str) -> str | None:
    """libphonenumber's region for a number (about 17 µs): only where it matters. Uncached;
    the engine asks through its Classifier's bounded cache."""
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return None


def region_of(e164: str) -> tuple[str | None, tuple[str, ...], str]:
    """(ISO region, candidate regions, why) for an E.164 number. Never raises.

    Where a country code is shared by several regions with the same EU status (+1, +44,
    +358…), the region is left None and the candidates are given: EU membership is already
    known, and the exact region is resolved only if a country unblock needs it.
    """
    digits = e164[1:]
    code = country_code(digits)
    if code is None:
        return None, (), f"+{digits[:3]}… is no assigned country code"
    regions = COUNTRY_CODE_TO_REGION_CODE[code]
    national = digits[len(str(code)) :]
    if code == 39:
        # Italy's code also reaches two non-EU states. libphonenumber resolves the Vatican
        # (06 698) but gives San Marino over +39 0549 as IT.
        if national.startswith("0549"):
            return "SM", (), "+39 0549 is San Marino over the Italian code"
        if national.startswith("06698"):
            return "VA", (), "+39 06 698 is the Vatican over the Italian code"
        return "IT", (), "+39"
    if code == 590:
        # +590 is shared by Guadeloupe and Saint-Martin (EU) and Saint-Barthélemy (not EU);
        # the fixed-line ranges overlap, so libphonenumber cannot tell them apart. Explicit
        # rule: a number in a range Saint-Barthélemy may use is treated as Saint-Barthélemy
        # (fail safe: blocked unless unblocked); everything else (mobiles…) as GP/MF.
        if _BL_FIXED.fullmatch(national):
            return "BL", (), "+590 range shared with Saint-Barthélemy (treated as BL)"
        return None, ("GP", "MF"), "+590 outside Saint-Barthélemy's ranges (GP/MF)"
    if len(regions) == 1:
        return regions[0], (), f"+{code}"
    shown = "/".join(regions) if len(regions) <= 5 else f"{'/'.join(regions[:4])}/…"
    return None, regions, f"+{code} ({shown})"


@dataclass(frozen=True, slots=True)
class Destination:
    category: Category
    region: str | None
    why: str  # human-readable, for the decision's rule
    premium_prefix: str | None = None  # the longest blocked premium prefix that matched
    candidates: tuple[str, ...] = ()  # possible regions when `region` is not resolved


class Classifier:
    """Normalises and classifies destinations for one PolicyConfig. Its caches hold at most
    `config.cache_entries` entries each: every key is a string a caller chose, so a flood of
    distinct numbers only evicts (a long-running daemon's memory stays flat)."""

    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        # Longest first, so the first match is the longest prefix.
        self._premium = tuple(sorted(config.premium_prefixes, key=len, reverse=True))
        size = config.cache_entries
        self._normalised = lru_cache(maxsize=size)(self._normalise)
        self._numbers = lru_cache(maxsize=size)(normalise_number)  # caller IDs, forwarders
        self.classify = lru_cache(maxsize=size)(self._classify)
        self.region = lru_cache(maxsize=size)(region_from_metadata)

    def clear(self) -> None:
        """Empty the caches: a replaced classifier may be frozen out of the garbage collector
        (service/long_lived.py), its cycles never collected; what its caches held is not kept."""
        for cache in (self._normalised, self._numbers, self.classify, self.region):
            cache.cache_clear()

    def caches(self) -> dict[str, int]:
        """Entries held per cache (for tests and the status page)."""
        return {name: cache.cache_info().currsize for name, cache in
                (("normalise", self._normalised), ("number", self._numbers),
                 ("classify", self.classify),
                 ("region", self.region))}

    def normalise(self, raw: object) -> Dialled:
        """`numbers.normalise` with this config's restriction prefix, cached (what is not a
        string of at most MAX_INPUT characters is refused there, uncached)."""
        if isinstance(raw, str) and len(raw) <= MAX_INPUT:
            return self._normalised(raw)
        return normalise(raw, self.config.restriction_prefix)

    def number(self, raw: str) -> str | None:
        """`numbers.normalise_number` (a caller ID, a forwarding number), cached likewise."""
        if isinstance(raw, str) and len(raw) <= MAX_INPUT:
            return self._numbers(raw)
        return normalise_number(raw)

    def _normalise(self, raw: str) -> Dialled:
        return normalise(raw, self.config.restriction_prefix)

    def _classify(self, destination: str, short: bool) -> Destination:
        config = self.config
        if destination in config.emergency:
            return Destination(Category.EMERGENCY, "BE", f"emergency number {destination}")
        if destination in config.must_reach:
            return Destination(Category.MUST_REACH, "BE", "must-reach number (RD 2 Feb 2007)")
        if short:
            return Destination(Category.SHORT, "BE", "Belgian short number")
        for prefix in self._premium:
            if destination.startswith(prefix):
                return Destination(
                    Category.PREMIUM, "BE", "premium range (art. 3.10)", premium_prefix=prefix
                )
        if destination.startswith("+32"):
            return Destination(Category.NATIONAL, "BE", "Belgian number")
        region, candidates, why = region_of(destination)
        if in_eu(region, candidates):
            return Destination(Category.EU, region, f"{why}: in the EU", None, candidates)
        # Not EU, including unknown country codes and regions libphonenumber cannot name.
        return Destination(Category.NON_EU, region, f"{why}: outside the EU", None, candidates)
