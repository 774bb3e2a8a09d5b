"""Customer import files -> an ImportPlan: TOML, or JSON when the name ends in .json (the same
document, `{"customer": [{…}, …]}`, parsed ~7x faster than TOML: for a provisioning system's
big exports). A key given twice is an error in both.

Inputs are bounded: a regular file only (a FIFO, a device or a directory is refused before it
is read, so `/dev/zero` or a FIFO without a writer cannot hang or exhaust memory), at most
MAX_IMPORT_BYTES; the values are checked by importer.plan_customers.
"""

from __future__ import annotations

import json
import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from ..policy.zones import ZoneTable
from .importer import ImportPlan, plan_customers

__all__ = ["MAX_IMPORT_BYTES", "DuplicateKey", "read_import_file", "unique_keys"]

MAX_IMPORT_BYTES = 64 * 1024 * 1024  # ~190 000 customers of the bench's shape; split bigger files


def read_import_file(path: Path, zones: ZoneTable, *, accept_zone_violations: bool = False
                     ) -> ImportPlan:
    plan = ImportPlan()
    as_json = path.suffix.lower() == ".json"
    kind = "JSON" if as_json else "TOML"
    try:
        text = _read_bounded(path)
        data = _json_document(text) if as_json else tomllib.loads(text)
    except _Unreadable as exc:
        plan.errors.append(f"{path}: {exc}")
        return plan
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, _NotAnImport, DuplicateKey) as exc:
        plan.errors.append(f"{path}: not valid {kind}: {exc}")
        return plan
    except (RecursionError, ValueError):  # 100 000 nested `[`, an integer of 5 000 digits
        plan.errors.append(f"{path}: not valid {kind}: nested too deeply or a number too long")
        return plan
    return plan_customers(data, str(path), zones, accept_zone_violations=accept_zone_violations)


class _NotAnImport(ValueError):
    pass


def _json_document(text: str) -> dict[str, Any]:
    customers_done = 0

    def keys_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        """unique_keys, saying which customer (objects end inner first: a customer ends
        after its address and endpoints, so #done + 1 is the one being read)."""
        nonlocal customers_done
        try:
            table = unique_keys(pairs)
        except DuplicateKey as exc:
            where = ("at the top level" if any(k == "customer" for k, _ in pairs)
                     else f"in customer #{customers_done + 1}")
            raise DuplicateKey(f"{exc}, {where}") from None
        customers_done += "id" in table
        return table

    data = json.loads(text, object_pairs_hook=keys_once, parse_constant=_no_constant)
    if not isinstance(data, dict):
        raise _NotAnImport('the document must be an object {"customer": [ … ]}')
    return data


class DuplicateKey(ValueError):
    """A key given twice in one JSON object: refused, never "the last one wins" (another
    reader of the same text, a proxy or a log, may have taken the first)."""


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads(…, object_pairs_hook=unique_keys)`: an object, unless a key is twice."""
    table = dict(pairs)
    if len(table) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                shown = key if len(key) <= 60 else key[:60] + "…"
                raise DuplicateKey(f"key {shown!r} given twice in one object")
            seen.add(key)
    return table


def _no_constant(name: str) -> Any:
    raise _NotAnImport(f"{name} is not a value an import takes")


class _Unreadable(Exception):
    """The import file cannot be read as it is (the message says why)."""


def _read_bounded(path: Path) -> str:
    """The file's text, if it is a regular file of at most MAX_IMPORT_BYTES.

    Opened with O_NONBLOCK so that a FIFO without a writer does not block the open; the type
    is checked on the open descriptor (no race between a check and the open)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _Unreadable("no such file") from None
    except OSError as exc:
        raise _Unreadable(f"cannot read: {exc.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _Unreadable(f"is {_file_kind(mode)}, not a regular file "
                          "(import reads regular files only)")
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(MAX_IMPORT_BYTES + 1)
        except OSError as exc:
            raise _Unreadable(f"cannot read: {exc.strerror}") from None
    if len(data) > MAX_IMPORT_BYTES:
        raise _Unreadable(f"larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MiB "
                          "(the import limit): split it into several files")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"cannot read: not UTF-8 text ({exc.reason} at byte {exc.start})"
                          ) from None


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")
