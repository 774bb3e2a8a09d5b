"""The daemon's snapshot is exempt from Python's cyclic garbage collector.

100 000 customers are over a million objects that live as long as the snapshot. A full
(generation 2) collection walks every one of them: about 1 s of CPU with the event loop
stopped. Objects that survive per call (cache entries, records) trigger one every few tens of
thousands of calls, so a daemon at 62 calls/s stopped for a second about every 10 minutes
(the bench's soak: SIP retransmits, p99 setup 1.2 s), and a load itself ran a dozen of them.

`long_lived` awaits a whole snapshot load with the collector off, and on success moves what
exists then to the permanent generation (gc.freeze), which collections skip. Reference
counting still frees a frozen object once nothing refers to it (snapshot objects form no
cycles), so a later refresh or reload releases the customers it replaces.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def long_lived(load: Awaitable[T]) -> T:
    """`await load` with the collector off; on success, everything alive is frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        result = await load
        gc.freeze()
        return result
    finally:
        if enabled:
            gc.enable()
