"""The change feed: one LISTEN connection per daemon, told of every committed change.

Every transaction that writes the audit log NOTIFYs CHANGES_CHANNEL at COMMIT (a trigger,
schema.py migration 5). The feed calls `on_change()` for each notification, and once each
time it (re)connects (changes committed while it was away were announced to no one). It holds
no data: the daemon's refresh reads what changed from the audit log, and also polls it now and
then, so a notification lost with its connection delays a change, never loses it.

The connection is watched (asyncpg's termination callback, and a SELECT 1 every KEEPALIVE
seconds for a peer that vanished without closing) and reopened with a growing, jittered
delay. One warning line per episode (`change_feed_lost`), one line when it is back
(`change_feed_restored`); `on_state(connected)` feeds the metric."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from ...service.waiting import event_or_timeout, within
from ..model import StoreError
from ..url import redacted
from .schema import CHANGES_CHANNEL
from .store import connect

log = structlog.get_logger("callpolicy.changes")

APPLICATION_NAME = "callpolicy-changes"  # pg_stat_activity: the daemons' LISTEN connections
RECONNECT_FIRST = 0.25  # s before the first new attempt; doubles up to RECONNECT_MAX
RECONNECT_MAX = 5.0
KEEPALIVE = 5.0  # s between two checks that an idle connection is still there
KEEPALIVE_TIMEOUT = 5.0


class ChangeFeed:
    """LISTEN on `url` until cancelled (`run`); `connected` says whether it is listening."""

    def __init__(self, url: str, on_change: Callable[[], None],
                 on_state: Callable[[bool], None] = lambda connected: None) -> None:
        self.url = url
        self._on_change = on_change
        self._on_state = on_state
        self.connected = False
        self.since: float | None = None  # when `connected` last changed (time.time())
        self.notifications = 0
        self._lost_at: float | None = None  # the current episode's start (monotonic)
        self._attempts = 0

    async def run(self) -> None:
        delay = RECONNECT_FIRST
        while True:
            try:
                conn = await connect(self.url, readonly=True, application_name=APPLICATION_NAME)
            except StoreError as exc:
                self._lost(str(exc))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            try:
                why = await self._listen(conn)
            finally:
                conn.terminate()
                self._set(False)
            self._lost(why)
            delay = RECONNECT_FIRST

    async def _listen(self, conn: asyncpg.Connection) -> str:
        """Listen until the connection is lost; why it was."""
        gone = asyncio.Event()
        conn.add_termination_listener(lambda _conn: gone.set())
        try:
            await conn.add_listener(CHANGES_CHANNEL, self._notified)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            return f"LISTEN failed: {_one_line(exc)}"
        self._set(True)
        self._restored()
        self._on_change()  # what was committed while nobody listened
        while not gone.is_set():
            if await event_or_timeout(gone, KEEPALIVE):
                break
            try:
                await within(conn.fetchval("SELECT 1"), KEEPALIVE_TIMEOUT)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError,
                    TimeoutError) as exc:
                return f"keepalive failed: {_one_line(exc)}"
        return "connection closed by the server or the network"

    def _notified(self, *_args: Any) -> None:
        self.notifications += 1
        self._on_change()

    def _set(self, connected: bool) -> None:
        if connected != self.connected:
            self.connected, self.since = connected, time.time()
            self._on_state(connected)

    def _lost(self, why: str) -> None:
        self._attempts += 1
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            log.warning("change_feed_lost", error=why, db=redacted(self.url),
                        meanwhile="changes arrive by the catch-up poll")

    def _restored(self) -> None:
        if self._lost_at is not None:
            log.info("change_feed_restored", db=redacted(self.url), attempts=self._attempts,
                     down_for_s=round(time.monotonic() - self._lost_at, 1))
        else:
            log.info("change_feed_listening", db=redacted(self.url), channel=CHANGES_CHANNEL)
        self._lost_at, self._attempts = None, 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__
