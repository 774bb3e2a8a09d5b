"""The HTTP API (FastAPI on uvicorn): a thin layer over `ops`, like the CLI.

Modules: `app` (create_app), `settings` ([api] of the config), `tokens` (the token file),
`auth` (require_scope), `problems` (problem+json), `idempotency` (Idempotency-Key),
`models` (request and response bodies), one module per route family (`customers`,
`unblocks`, `calls`, `inspect`), `server` (uvicorn), `reference` (the API reference in
Markdown, from the OpenAPI document).
"""

from .app import API_PREFIX, create_app
from .auth import require_scope

__all__ = ["API_PREFIX", "create_app", "require_scope"]
