"""Art. 3.8: a geographic number must be in the telephone zone of the installation address,
and the installation address must be in Belgium.

No offline package maps Belgian postcodes to telephone zones, so the mapping is data
(callpolicy/data/telephone-zones.toml). Postcodes and zones do not line up by first digits (2200
Herentals is 014, 2800 Mechelen 015): a postcode missing from the table is reported as
"not verified", never guessed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .model import Address
from .numbers import geographic_zone, national_form


@dataclass(frozen=True, slots=True)
class ZoneTable:
    by_postcode: Mapping[int, str]  # 9030 -> "09"

    @classmethod
    def from_mapping(cls, zones: Mapping[str, Iterable[str]]) -> ZoneTable:
        """{"09": ["9000", "9030-9032"]} -> ZoneTable. Raises ValueError on bad data."""
        by_postcode: dict[int, str] = {}
        for zone, entries in zones.items():
            if not (zone.startswith("0") and zone[1:].isdigit() and 2 <= len(zone) <= 3):
                raise ValueError(f"zone {zone!r} is not a Belgian zone like '02' or '050'")
            for entry in entries:
                low, _, high = str(entry).partition("-")
                if not (low.isdigit() and (not high or high.isdigit())):
                    raise ValueError(f"zone {zone}: {entry!r} is not a postcode or range")
                first, last = int(low), int(high or low)
                if not 1000 <= first <= last <= 9999:
                    raise ValueError(f"zone {zone}: {entry!r} is not a Belgian postcode range")
                for postcode in range(first, last + 1):
                    if by_postcode.setdefault(postcode, zone) != zone:
                        raise ValueError(
                            f"postcode {postcode} is in zones {by_postcode[postcode]} and {zone}"
                        )
        return cls(by_postcode)

    def zone_of(self, postcode: str) -> str | None:
        return self.by_postcode.get(int(postcode)) if postcode.isdigit() else None


@dataclass(frozen=True, slots=True)
class InstallationCheck:
    address_errors: list[str]  # the address itself is not acceptable
    zone_violations: list[str]  # a geographic number outside the address's zone
    warnings: list[str]  # could not verify


def check_installation(
    address: Address, numbers: Iterable[str], table: ZoneTable
) -> InstallationCheck:
    """Art. 3.8 checks of a customer's installation address and numbers."""
    violations: list[str] = []
    warnings: list[str] = []
    if address.country.upper() != "BE":
        return InstallationCheck(
            [f"installation address must be in Belgium (art. 3.8), got {address.country!r}"],
            [], [])
    if not (address.postcode.isdigit() and len(address.postcode) == 4
            and address.postcode[0] != "0"):
        return InstallationCheck(
            [f"postcode {address.postcode!r} is not a Belgian postcode"], [], [])
    expected = table.zone_of(address.postcode)
    geographic = [(n, geographic_zone(n)) for n in sorted(numbers)]
    geographic = [(n, z) for n, z in geographic if z]
    if expected is None:
        if geographic:
            warnings.append(
                f"telephone zone of postcode {address.postcode} is not in the zone table: "
                f"geographic numbers {', '.join(national_form(n) for n, _ in geographic)} "
                "not verified against the installation address (art. 3.8)"
            )
        return InstallationCheck([], violations, warnings)
    for number, zone in geographic:
        if zone != expected:
            violations.append(
                f"geographic number {national_form(number)} is in zone {zone}, but installation "
                f"postcode {address.postcode} is in zone {expected} (art. 3.8)"
            )
    return InstallationCheck([], violations, warnings)
