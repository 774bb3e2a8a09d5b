"""Belgian dial strings -> E.164 or short numbers.

Belgium has a closed numbering plan: national numbers are dialled with the trunk prefix 0,
international ones with 00 or +. `09 210 12 34`, `0032 9 210 12 34` and `+32 9 210 12 34` are
one number, +3292101234. Short numbers (112, 1813, 116000) have no prefix and stay short.

Everything here is attacker-controlled input: the functions never raise, and anything that is
not plainly a number is INVALID.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

# Separators people and phones put in numbers. `#` and `*` are not separators: they are
# service codes and must make a number invalid rather than vanish. One exception: a single `#`
# at the very end is the phone's "dial now" key (112#): dropped, so that what is left is judged
# as dialled without it (a service code keeps its other `#`/`*`: still invalid).
_SEPARATORS = re.compile(r"[\s.\-/()\u00a0]+")
_DIALLABLE = re.compile(r"\+?[0-9]+")

MAX_DIGITS = 20  # a dial string with more digits is never a number
MAX_E164_DIGITS = 15  # ITU-T E.164
MAX_INPUT = 64  # characters; longer input is rejected before any work
SHORT_MIN, SHORT_MAX = 3, 6  # Belgian short numbers: 100 … 116000


@dataclass(frozen=True, slots=True)
class Dialled:
    """A normalised dial string."""

    raw: str
    destination: str | None  # "+3292101234", "112", or None when invalid
    short: bool = False
    restriction_requested: bool = False
    problem: str | None = None  # why it is invalid, for the decision's rule text

    @property
    def valid(self) -> bool:
        return self.destination is not None

    @property
    def country_code_digits(self) -> str:
        """Digits after the '+', for prefix look-ups."""
        return self.destination[1:] if self.destination and not self.short else ""


def _invalid(raw: str, problem: str, restricted: bool = False) -> Dialled:
    return Dialled(raw=raw, destination=None, restriction_requested=restricted, problem=problem)


def normalise(raw: object, restriction_prefix: str = "#31#") -> Dialled:
    """Turn a dial string into a destination. Never raises."""
    if not isinstance(raw, str):
        return _invalid("" if raw is None else repr(raw)[:MAX_INPUT], "not a string")
    if len(raw) > MAX_INPUT:
        return _invalid(raw[:MAX_INPUT], f"longer than {MAX_INPUT} characters")
    return _normalise(raw, restriction_prefix)


def _normalise(raw: str, restriction_prefix: str) -> Dialled:
    text = raw.strip()
    restricted = False
    if restriction_prefix and text.startswith(restriction_prefix):
        restricted = True
        text = text[len(restriction_prefix) :]
    if text.endswith("#"):
        text = text[:-1].rstrip()

    if text.isascii() and text.isdigit():  # what Asterisk passes almost always
        compact = text
    else:
        compact = _SEPARATORS.sub("", text)
        if not compact:
            return _invalid(raw, "empty", restricted)
        if not (compact.isascii() and _DIALLABLE.fullmatch(compact)):
            return _invalid(raw, "not a dialable number (only digits, an optional leading +)",
                            restricted)
    digits = compact.lstrip("+")
    if len(digits) > MAX_DIGITS:
        return _invalid(raw, f"more than {MAX_DIGITS} digits", restricted)

    if compact.startswith("+"):
        international = digits
    elif digits.startswith("00"):
        international = digits[2:]
    elif digits.startswith("0"):
        national = digits[1:]
        if not national or national.startswith("0"):
            return _invalid(raw, "no national number after the trunk prefix 0", restricted)
        international = "32" + national
    elif SHORT_MIN <= len(digits) <= SHORT_MAX:
        return Dialled(raw=raw, destination=digits, short=True, restriction_requested=restricted)
    else:
        return _invalid(raw, "neither a short number nor a number with 0, 00 or +", restricted)

    if not international or international.startswith("0"):
        return _invalid(raw, "no country code after the international prefix", restricted)
    if len(international) > MAX_E164_DIGITS:
        return _invalid(raw, f"longer than the {MAX_E164_DIGITS} digits of E.164", restricted)
    if international.startswith("320"):
        # No Belgian national number starts with 0. `+32 0905…` must not slip past the
        # premium prefixes as "+320905…" if a network downstream drops the extra 0.
        return _invalid(raw, "a Belgian number cannot start with 0 after +32", restricted)
    if len(international) < 4:
        return _invalid(raw, "too short for an international number", restricted)
    return Dialled(raw=raw, destination="+" + international, restriction_requested=restricted)


def normalise_number(raw: str) -> str | None:
    """E.164 form of a full (non-short) number, or None. For config and import data."""
    dialled = normalise(raw, restriction_prefix="")
    if dialled.valid and not dialled.short:
        return dialled.destination
    return None


def normalise_prefix(raw: str) -> str | None:
    """E.164 form of a number prefix given in national (0905) or E.164 (+32905) form."""
    compact = _SEPARATORS.sub("", raw.strip()) if isinstance(raw, str) else ""
    if not _DIALLABLE.fullmatch(compact or "x"):
        return None
    digits = compact.lstrip("+")
    if compact.startswith("+"):
        result = digits
    elif digits.startswith("00"):
        result = digits[2:]
    elif digits.startswith("0") and len(digits) > 1 and digits[1] != "0":
        result = "32" + digits[1:]
    else:
        return None
    if not result or result.startswith("0") or len(result) > MAX_E164_DIGITS:
        return None
    return "+" + result


def national_form(e164: str) -> str:
    """'+3292101234' -> '092101234'; other countries keep their E.164 form."""
    return "0" + e164[3:] if e164.startswith("+32") else e164


# Belgian geographic numbers: libphonenumber's fixed-line pattern for BE (BIPT ranges), e.g.
# 80[2-8]… (Stavelot) but not 0800 (freephone), 9[2-4]… (Gent) but not 090x (premium).
def fixed_line_pattern(region: str) -> str:
    """libphonenumber's national pattern of `region`'s fixed-line numbers."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    pattern = metadata.fixed_line.national_number_pattern \
        if metadata is not None and metadata.fixed_line is not None else None
    if pattern is None:
        raise LookupError(f"libphonenumber has no fixed-line pattern for {region}")
    return pattern


_BE_FIXED_LINE = re.compile(fixed_line_pattern("BE"))
_ONE_DIGIT_ZONES = frozenset("2349")  # Brussels, Antwerp, Liège (42/43), Gent


def geographic_zone(e164: str) -> str | None:
    """The telephone zone of a Belgian geographic number, in national form ('09', '050').

    None for anything that is not a Belgian geographic number (mobiles 045x-049x, 070, 0800,
    090x, foreign numbers…).
    """
    if not e164.startswith("+32"):
        return None
    nsn = e164[3:]
    if not _BE_FIXED_LINE.fullmatch(nsn):
        return None
    return "0" + (nsn[0] if nsn[0] in _ONE_DIGIT_ZONES else nsn[:2])
