"""`callpolicy api serve`: the app on uvicorn, at `[api] host:port` (loopback by default)."""

from __future__ import annotations

import socket

import uvicorn

from ..service.config import Settings
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
    uvicorn.Server(config).run(sockets=[sock])
    return 0
