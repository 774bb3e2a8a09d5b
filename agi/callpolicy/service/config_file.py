"""Reading the config file: TOML text to a dict, with one-line errors (ConfigError), and
the reading of only some sections from a file broken elsewhere (the fallback AGI reads only
the sections it needs: a mistake in another section must not stop it)."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "read_text", "read_toml"]


class ConfigError(Exception):
    """A config problem, with a message naming the file and the key. `bad_value`: the file
    says something wrong (the CLI exits 2, bad usage), else it could not be read (exit 1)."""

    def __init__(self, message: str, *, bad_value: bool = True) -> None:
        super().__init__(message)
        self.bad_value = bad_value


def read_text(path: Path, what: str) -> str:
    try:
        return path.read_text("utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} {path} does not exist", bad_value=False) from exc
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read {what} {path}: {reason}",
                          bad_value=isinstance(exc, (UnicodeDecodeError, IsADirectoryError))
                          ) from exc


# A table header: [name], [name.sub], [[name]]; the section is the first name.
_SECTION_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_-]+)[A-Za-z0-9_.\s\"-]*\]\]?\s*(#.*)?$")


def _sections_text(text: str, wanted: Collection[str]) -> str | None:
    """The root table and the `wanted` top-level sections (for a file broken elsewhere);
    None if a broken table header makes it unclear where a section starts."""
    keep, lines = True, []  # the root table's lines are kept: garbage there is no section's
    for line in text.splitlines():
        header = _SECTION_HEADER.match(line)
        if header:
            keep = header.group(1) in wanted
        elif line.lstrip().startswith("["):
            return None
        if keep:
            lines.append(line)
    return "\n".join(lines) + "\n"


def read_toml(path: Path, only: Collection[str] | None) -> dict[str, Any]:
    text = read_text(path, "config file")
    try:
        return tomllib.loads(text)
    # RecursionError: 100 000 nested `[`; ValueError: an integer of 5 000 digits
    except (tomllib.TOMLDecodeError, RecursionError, ValueError) as exc:
        why = (exc if isinstance(exc, tomllib.TOMLDecodeError)
               else "nested too deeply" if isinstance(exc, RecursionError)
               else "a number too long to read")
        error = ConfigError(f"config file {path} is not valid TOML: {why}")
        if only is None:
            raise error from None
    wanted = _sections_text(text, only)  # a reader of some sections: others may be broken
    if wanted is None:
        raise error
    try:
        return tomllib.loads(wanted)
    except (tomllib.TOMLDecodeError, RecursionError, ValueError):
        raise error from None
