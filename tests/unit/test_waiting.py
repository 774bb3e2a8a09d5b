"""Deadlines that never lose a cancellation (service/waiting.py): a background loop that
waits on an event with a deadline must end when cancelled, even when the event is set in the
same loop iteration as the cancellation (on Python 3.11 `asyncio.wait_for` loses it then,
and the daemon's shutdown, waiting for that loop, hung)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from callpolicy.service.waiting import event_or_timeout, within

PACKAGE = Path(__file__).resolve().parents[2] / "agi" / "callpolicy"


async def _loop_until_cancelled(event: asyncio.Event) -> None:
    while True:
        await event_or_timeout(event, 0.001)
        event.clear()


async def _keep_setting(event: asyncio.Event) -> None:
    while True:
        event.set()
        await asyncio.sleep(0)


async def test_a_loop_on_an_event_that_is_always_being_set_ends_when_cancelled() -> None:
    for _ in range(100):
        event = asyncio.Event()
        looping = asyncio.create_task(_loop_until_cancelled(event))
        setter = asyncio.create_task(_keep_setting(event))
        await asyncio.sleep(0.002)
        looping.cancel()
        done, _ = await asyncio.wait([looping], timeout=1.0)
        setter.cancel()
        assert done == {looping}, "the cancellation was lost: the loop goes on"
        assert looping.cancelled()


async def test_event_or_timeout_says_whether_the_event_came() -> None:
    event = asyncio.Event()
    assert await event_or_timeout(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await event_or_timeout(event, 5.0) is True


async def test_within_returns_the_result_or_times_out_and_cancels_the_work() -> None:
    assert await within(asyncio.sleep(0, "done"), 1.0) == "done"
    slow = asyncio.ensure_future(asyncio.sleep(10))
    with pytest.raises(TimeoutError):
        await within(slow, 0.01)
    assert slow.cancelled()


def test_the_package_never_uses_asyncio_wait_for() -> None:
    users = [str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")
             if re.search(r"\bwait_for\(", path.read_text())]
    assert users == [], "use service/waiting.py (asyncio.timeout) instead of wait_for"
