"""`callpolicy api serve`: the app on uvicorn, at `[api] host:port` (loopback by default).

It speaks systemd's notify protocol as the daemon does (service/watchdog.py): READY=1 once
listening, WATCHDOG=1 from its event loop, STOPPING=1; so `callpolicy api watchdog`, or
systemd's `Type=notify` + `WatchdogSec`, kills and restarts an API whose loop is stuck (a
billing system must be able to reactivate a customer who paid)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn

from ..service.config import Settings
from ..service.watchdog import notify, ping_forever
from .app import create_app
from .settings import ApiSettings

__all__ = ["listen", "serve"]


def listen(api: ApiSettings) -> socket.socket:
    """The API's listening socket, bound before anything says it listens; OSError (address
    in use, not ours) here, in the caller. An IPv6 host is IPv6 only (create_server)."""
    family = socket.AF_INET6 if ":" in api.host else socket.AF_INET
    return socket.create_server((api.host, api.port), family=family, backlog=128)


def serve(settings: Settings, api: ApiSettings, sock: socket.socket) -> int:
    """Run on `sock` until SIGINT/SIGTERM. uvicorn's access log is off: it would log every
    request line, and ours log no token (the Authorization header is never logged)."""
    app = create_app(settings, api.tokens)
    config = uvicorn.Config(app, access_log=False, log_level="warning", server_header=False,
                            timeout_graceful_shutdown=5)
    _NotifyingServer(config).run(sockets=[sock])
    return 0


class _NotifyingServer(uvicorn.Server):
    _pinger: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            notify(b"READY=1")
            self._pinger = asyncio.create_task(ping_forever())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        notify(b"STOPPING=1")
        if self._pinger is not None:
            self._pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pinger
        await super().shutdown(sockets=sockets)
