"""What the routes share: the store opened read-only for a request, the settings, the
audit's actor from the token and the request's ticket, the problem responses a route
documents."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, Path, Request

from .. import ops
from ..ops.values import audit_text
from ..service.config import Settings
from ..service.status import StatusUnavailable, fetch, public_status, status_url
from ..store import Actor, Store
from .models import Change, ProblemBody
from .problems import PROBLEM_JSON
from .tokens import Token

__all__ = ["CustomerId", "ReadStore", "actor", "daemon_status", "problems", "settings_of"]


async def _read_store(request: Request) -> AsyncIterator[Store]:
    """Read requests open the database read-only, as the CLI's read commands: they work on a
    full disk and never migrate."""
    async with await ops.open_store(request.app.state.settings, readonly=True) as store:
        yield store


ReadStore = Annotated[Store, Depends(_read_store)]
CustomerId = Annotated[str, Path(min_length=1, max_length=64,
                                 description="the customer's id (1-64 letters, digits, . _ -)")]


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


async def daemon_status(request: Request) -> dict[str, Any]:
    """The running daemon's /status as an API client may see it (public_status). Not
    answering: StatusUnavailable, whose address goes to the log once per outage."""
    settings = settings_of(request)
    episodes = request.app.state.episodes
    try:
        found = public_status(await asyncio.to_thread(
            fetch, status_url(settings.metrics_host, settings.metrics_port)))
    except StatusUnavailable as exc:
        episodes.failing("api_daemon_unavailable", str(exc))
        raise
    episodes.ok("api_daemon_unavailable", "api_daemon_answering")
    return found


def actor(token: Token, change: Change) -> Actor:
    """The audit's who and why: the token's name, the request's ticket and reason."""
    reason = change.reason
    return Actor(token.name, audit_text(change.ticket, "ticket", "a ticket reference"),
                 audit_text(reason, "reason", "a reason") if reason else None)


_TITLES = {401: "no or an unknown token", 403: "the token lacks the scope",
           404: "unknown customer", 409: "refused by the store (e.g. already suspended)",
           422: "invalid request", 503: "database (or daemon) unavailable"}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The problem responses a route documents (OpenAPI)."""
    return {code: {"model": ProblemBody, "description": _TITLES[code],
                   "content": {PROBLEM_JSON: {}}} for code in codes}
