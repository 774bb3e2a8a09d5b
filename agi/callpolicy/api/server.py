"""`callpolicy api serve`: the app on uvicorn, at `[api] host:port` (loopback by default)."""

from __future__ import annotations

import uvicorn

from ..service.config import Settings
from .app import create_app
from .settings import ApiSettings

__all__ = ["serve"]


def serve(settings: Settings, api: ApiSettings) -> int:
    """Run until SIGINT/SIGTERM. uvicorn's access log is off: it would log every request
    line, and ours log no token (the Authorization header is never logged)."""
    app = create_app(settings, api.tokens)
    config = uvicorn.Config(app, host=api.host, port=api.port, access_log=False,
                            log_level="warning", server_header=False,
                            timeout_graceful_shutdown=5)
    uvicorn.Server(config).run()
    return 0
