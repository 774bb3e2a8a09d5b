"""A bounded number of open connections that a flood cannot fill (FastAGI and /metrics).

When every slot is taken, a newcomer takes the slot of the OLDEST connection still waiting
for its request (not yet `settle`d): a real client sends its whole request at once (Asterisk
its environment block, Prometheus its GET), so the oldest unfinished connection is the one
most likely idle or trickling. A settled connection (request received, answer under way) is
never evicted; only when every slot is settled is the newcomer refused.

Single-threaded (one event loop): no locking.
"""

from __future__ import annotations

import contextlib
import resource
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(eq=False, slots=True)
class Slot:
    close: Callable[[], None]  # drops the connection (called on eviction)
    settled: bool = False
    evicted: bool = False


@dataclass(frozen=True, slots=True)
class Admission:
    slot: Slot | None  # None: refused (every slot is settled)
    evicted: Slot | None = None  # the connection that gave up its slot


class ConnectionSlots:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._open: dict[Slot, None] = {}
        self._waiting: dict[Slot, None] = {}  # not settled, oldest first (insertion order)

    def __len__(self) -> int:
        return len(self._open)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def admit(self, close: Callable[[], None]) -> Admission:
        """A new connection (`close` drops it): its slot, evicting the oldest unsettled
        connection if all are taken, or a refusal if all are settled."""
        victim = None
        if len(self._open) >= self.capacity:
            if not self._waiting:
                return Admission(None)
            victim = next(iter(self._waiting))
            self.release(victim)
            victim.evicted = True
            victim.close()
        slot = Slot(close)
        self._open[slot] = None
        self._waiting[slot] = None
        return Admission(slot, victim)

    def settle(self, slot: Slot) -> None:
        """The connection sent its whole request: it keeps its slot until released."""
        slot.settled = True
        self._waiting.pop(slot, None)

    def release(self, slot: Slot) -> None:
        """The connection ended (idempotent)."""
        self._open.pop(slot, None)
        self._waiting.pop(slot, None)


# Both listeners full (FastAGI 512 + HTTP 256) plus the database, AMI and log files: a soft
# limit of 1024 would make asyncio stop accepting for a second when they fill.
WANTED_OPEN_FILES = 4096


def raise_open_files_limit(wanted: int = WANTED_OPEN_FILES) -> int:
    """Raise the soft RLIMIT_NOFILE towards `wanted` (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
