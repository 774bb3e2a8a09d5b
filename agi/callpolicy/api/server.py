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
    in use, not ours) here, in the caller."""
    family = socket.AF_INET6 if ":" in api.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:  # "::" is IPv6 only, as asyncio's servers make it
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((api.host, api.port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def serve(settings: Settings, api: ApiSettings, sock: socket.socket) -> int:
    """Run on `sock` until SIGINT/SIGTERM. uvicorn's access log is off: it would log every
    request line, and ours log no token (the Authorization header is never logged)."""
    app = create_app(settings, api.tokens)
    config = uvicorn.Config(app, access_log=False, log_level="warning", server_header=False,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
