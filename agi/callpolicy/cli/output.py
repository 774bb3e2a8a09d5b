"""What the CLI commands share: opening the store, tables, JSON lines, local times, warnings."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..service.config import Settings
from ..store import Store, contract_zone, parse_iso
from ..store import open_store as open_backend
from .args import PROG
from .text import clip


def local_time(moment: str | datetime | None) -> str:
    """A stored UTC time as Brussels time (the contract's calendar), to the second."""
    if isinstance(moment, str):
        moment = parse_iso(moment)
    return moment.astimezone(contract_zone()).isoformat(timespec="seconds") if moment else "-"


def default_actor() -> str:
    try:
        return os.environ.get("SUDO_USER") or getpass.getuser()
    except Exception:  # no user name in this environment
        return "unknown"


def print_json(item: object) -> None:
    sys.stdout.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")


TABLE_CELL_WIDTH = 48  # a longer cell is cut, ending with CUT (--json has it all)


SHOW_TEXT_WIDTH = 1000  # the same for one stored text in `customer show`


def _cell(value: object) -> str:
    return clip(str(value if value is not None else ""), TABLE_CELL_WIDTH)


def render_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A text table: cells escaped (stored text cannot forge a row or move the cursor) and
    cut at TABLE_CELL_WIDTH."""
    if not rows:
        return ""
    cells = [[_cell(row.get(c, "") or "") for c in columns] for row in rows]
    widths = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
              for line in cells]
    return "\n".join(line.rstrip() for line in lines) + "\n"


async def open_store(settings: Settings, *, create: bool = False, readonly: bool = False) -> Store:
    """Read commands open the database read-only: they work on a full disk and for a user
    who may only read, and never migrate or set anything up."""
    return await open_backend(settings.db, create=create, readonly=readonly)


def warn(message: str) -> None:
    sys.stderr.write(f"{PROG}: warning: {message}\n")
