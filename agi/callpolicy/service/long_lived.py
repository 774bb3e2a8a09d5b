"""The daemon's snapshot is exempt from Python's cyclic garbage collector.

100 000 customers are over a million objects that live as long as the snapshot. A full
(generation 2) collection walks every one of them: about 1 s of CPU with the event loop
stopped. Objects that survive per call (cache entries, records) trigger one every few tens of
thousands of calls, so a daemon at 60 calls/s froze for a second every ~10 minutes (the
bench's soak: SIP retransmits, p99 setup 1.2 s), and the loads themselves ran a dozen of them.

`loading_long_lived` wraps a whole snapshot load: the collector is off during it, and what
exists when it succeeds is moved to the permanent generation (gc.freeze), which collections
skip. Reference counting still frees a frozen object as soon as nothing refers to it (the
snapshot objects form no cycles), so a later refresh or reload releases the old customers.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def loading_long_lived() -> Iterator[None]:
    """Collector off while the block loads; on success, everything alive is frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if enabled:
            gc.enable()
