"""Stored or untrusted text made safe for a terminal (every human-readable output uses this).

Control characters (C0, DEL, C1, bidi overrides, line separators: whatever `str.isprintable`
rejects) are shown as Python escapes, so a stored name cannot move the cursor, clear the
screen or forge a table row. Long text can be cut to a width, with a marker. JSON output does
not go through here: it stays exact.
"""

from __future__ import annotations

from typing import Any

CUT = "…"


def printable(text: str) -> str:
    """`text` with every non-printable character escaped ('\\x1b', '\\n', '\\u202e')."""
    if text.isprintable():  # the common case, at C speed
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def clip(text: str, width: int) -> str:
    """printable(text), at most `width` characters: a longer one ends with CUT.

    Only the first width + 1 characters are looked at, so a 50 MB name costs nothing."""
    shown = printable(text[: width + 1])
    if len(shown) > width or len(text) > width + 1:
        return shown[: width - len(CUT)] + CUT
    return shown


def escaped(item: Any, width: int | None = None) -> Any:
    """A copy of a JSON-like value with printable() (or clip() to `width`) applied to every
    string, keys included."""
    if isinstance(item, str):
        return printable(item) if width is None else clip(item, width)
    if isinstance(item, dict):
        return {escaped(k, width): escaped(v, width) for k, v in item.items()}
    if isinstance(item, list | tuple):
        return [escaped(v, width) for v in item]
    return item
