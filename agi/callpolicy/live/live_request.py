"""`with_live(request, counts)`: the request with the customer's live counts, per call.

The same as `dataclasses.replace(request, live=counts)` at ~1.5 µs instead of ~3.6: a copy
through CallRequest's slot descriptors, written out once for its fields (replace looks the
fields up and runs the frozen __init__, one object.__setattr__ per field, on every call)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

from ..policy import CallRequest
from ..policy.model import LiveCounts


def _copier() -> Callable[[CallRequest, LiveCounts], CallRequest]:
    names = [f.name for f in fields(CallRequest)]
    assert "live" in names
    namespace: dict[str, Any] = {f"_set_{n}": getattr(CallRequest, n).__set__ for n in names}
    namespace.update(_new=object.__new__, _cls=CallRequest)
    body = "".join(f"    _set_{n}(copy, {'counts' if n == 'live' else f'request.{n}'})\n"
                   for n in names)
    exec(f"def with_live(request, counts):\n    copy = _new(_cls)\n{body}    return copy\n",
         namespace)
    copier: Callable[[CallRequest, LiveCounts], CallRequest] = namespace["with_live"]
    return copier


with_live = _copier()

__all__ = ["with_live"]
