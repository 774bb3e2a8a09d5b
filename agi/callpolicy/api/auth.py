"""Bearer-token authentication and scopes, as one FastAPI dependency per scope.

`Depends(require_scope("read"))` on a route (or a router) lets in a token that grants `read`
(every token: billing and ops include it) and gives the route the `Token` (its name is the
audit's `by`). No or an unknown token: 401 with `WWW-Authenticate: Bearer`; a token without
the scope: 403, and the route never runs (nothing written). `authenticate_first` (a
middleware) makes that check before the body is read: 401/403 come before any 415 or 422.

The token file is re-read when it changes (its size, mtime or inode), so `api token add` and
removing a token take effect without a restart. A file that has become unreadable or invalid
refuses every request (503) until fixed, logged once per episode."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.routing import compile_path

from ..service.config_file import ConfigError
from .problems import Problem, problem_response
from .tokens import SCOPES, Token, TokenFile, load_tokens

__all__ = ["TokenSource", "authenticate", "authenticate_first", "guarded_routes", "matched_route",
           "require_scope",
           "required_scope"]

log = structlog.get_logger("callpolicy.api")

_CHALLENGE = 'Bearer realm="callpolicy"'


class TokenSource:
    """The token file, re-read when it changes."""

    def __init__(self, path: Path, *, missing_ok: bool = False) -> None:
        self.path = path
        self._identity: tuple[int, int, int] | None = None
        # a bad file at start: the server does not start
        self._tokens = load_tokens(path, missing_ok=missing_ok)
        self._identity = self._stat()
        self._broken: str | None = None

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def current(self) -> TokenFile:
        identity = self._stat()
        if identity != self._identity:
            self._identity = identity
            try:
                self._tokens, self._broken = load_tokens(self.path), None
                log.info("api_tokens_reloaded", path=str(self.path),
                         tokens=len(self._tokens.tokens))
            except ConfigError as exc:
                self._broken = str(exc)
                log.error("api_tokens_invalid", error=str(exc))
        if self._broken is not None:
            raise Problem(503, "Token file unusable", "the API's token file cannot be read; "
                          "every request is refused until it is fixed")
        return self._tokens


# Declares the scheme in the OpenAPI document; the checks are ours (problems, not HTTPException).
_bearer = HTTPBearer(auto_error=False, description="a token from `callpolicy api token add`")


async def authenticate(request: Request, scope: str) -> Token:
    """The request's token if it grants `scope`; else the 401/403/503 Problem."""
    tokens: TokenSource = request.app.state.tokens
    credentials = await _bearer(request)
    presented = credentials.credentials.strip() if credentials else ""
    if not presented:
        raise Problem(401, "Unauthenticated", "give a token: Authorization: Bearer TOKEN",
                      headers={"WWW-Authenticate": _CHALLENGE})
    token = tokens.current().find(presented)
    if token is None:
        raise Problem(401, "Unauthenticated", "the token is not valid",
                      headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'})
    if not token.grants(scope):
        raise Problem(403, "Forbidden", f"token {token.name!r} (scopes "
                      f"{', '.join(token.scopes)}) may not do this: it needs scope {scope}",
                      token=token.name, required_scope=scope)
    request.state.token = token
    return token


def require_scope(scope: str) -> Callable[..., Awaitable[Token]]:
    """The dependency admitting a token that grants `scope` (one of SCOPES)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    async def authorised(request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Token:
        return await authenticate(request, scope)

    authorised.__name__ = f"require_scope_{scope}"
    authorised.required_scope = scope  # type: ignore[attr-defined]  # for the reference
    return authorised


async def authenticate_first(request: Request,
                             call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Middleware: the token is checked before FastAPI reads the body, so a client without a
    valid token (or scope) learns nothing about validation: 401/403 before any 415/422.
    The route's dependency checks again (cheap); this only moves the check first."""
    route = matched_route(request)
    scope = route.scope if route else None
    if scope is not None:
        try:
            await authenticate(request, scope)
        except Problem as problem:
            return problem_response(problem)
    return await call_next(request)


@dataclass(frozen=True, slots=True)
class Guarded:
    """A route as the middlewares see it before routing: its path and methods, its scope,
    whether it takes a JSON body."""

    pattern: re.Pattern[str]
    methods: frozenset[str]
    scope: str | None
    takes_body: bool


def guarded_routes(router: APIRouter, prefix: str = "") -> list[Guarded]:
    return [Guarded(compile_path(prefix + route.path)[0], frozenset(route.methods or ()),
                    required_scope(route.dependant), route.body_field is not None)
            for route in router.routes if isinstance(route, APIRoute)]


def matched_route(request: Request) -> Guarded | None:
    """The route that will answer the request (path and method), before routing
    (`app.state.guarded`, filled by create_app)."""
    path = request.url.path
    for route in request.app.state.guarded:
        if request.method in route.methods and route.pattern.match(path):
            return route
    return None


def required_scope(dependant: Dependant) -> str | None:
    """The scope a route's dependencies require (None: no token needed)."""
    for dependency in dependant.dependencies:
        found = getattr(dependency.call, "required_scope", None) or required_scope(dependency)
        if found:
            return found
    return None
