"""Waiting with a deadline without losing a cancellation.

On Python 3.11, `asyncio.wait_for` can swallow the cancellation of the task that awaits it
when the awaited thing completes in the same loop iteration (CPython gh-86296; 3.12 rebuilt
`wait_for` on `asyncio.timeout`). A background loop around it then never ends, and the
daemon's shutdown waits for it forever: a node's cluster link did exactly that in the tests.
So every deadline in the package goes through `asyncio.timeout`, here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def event_or_timeout(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set or `seconds` have passed; whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    """`await awaitable`; TimeoutError (and `awaitable` cancelled) after `seconds`."""
    async with asyncio.timeout(seconds):
        return await awaitable
