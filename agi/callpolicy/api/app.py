"""The FastAPI application: `create_app(settings, tokens)`.

Every route is under /v1 and needs a bearer token (auth.require_scope); every error is a
problem (problems.py). The OpenAPI document is at /v1/openapi.json; no Swagger UI nor
ReDoc: they load unpinned CDN JavaScript on the origin where the status page keeps its token.
More routers (the status page) join with `create_app(..., routers=[router])` or
`app.include_router(router)`: they reuse `require_scope("read")` for their auth (checked
before the body is read only for the routers given to create_app).

Order of the checks: a body over the bound (413), the token and its scope (401/403), the
body's media type (415), then FastAPI's validation (422) and the route. HEAD is answered as
GET without the body (`HeadAsGet`): uptime monitors probe with it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..service.config import Settings
from ..service.logging import EpisodeLog
from . import calls, customers, idempotency, inspect, overview, status_page, unblocks
from .auth import TokenSource, authenticate_first, guarded_routes, matched_route, required_scope
from .problems import PROBLEM_JSON, Problem, install_problem_handlers, problem_response

__all__ = ["API_PREFIX", "create_app"]

log = structlog.get_logger("callpolicy.api")

MAX_BODY_BYTES = 64 * 1024 * 1024  # as an import file (store/import_file.py MAX_IMPORT_BYTES)

API_PREFIX = "/v1"
#: polled every 1-2 s by each open status page: an info line each would be 86 400 a day
QUIET_POLLS = frozenset({f"{API_PREFIX}/overview"})
DESCRIPTION = """The operator's systems' way in to callpolicy (billing, provisioning,
support): the same operations as the `callpolicy` CLI, with the same checks, errors and
audit. Authenticate with `Authorization: Bearer TOKEN`; the token's name is the audit's
`by`, and every change carries a `ticket`. Writes accept an `Idempotency-Key` header.
Errors are `application/problem+json`."""


def create_app(settings: Settings, tokens: TokenSource | Path, *,
               routers: Iterable[APIRouter] = ()) -> FastAPI:
    """The API over the database and daemon that `settings` name, trusting `tokens` (a
    token file, re-read when it changes)."""
    app = FastAPI(title="callpolicy API", version="1", description=DESCRIPTION,
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=None, redoc_url=None,
                  redirect_slashes=False)  # its 307 is built from Host: wrong behind a proxy
    app.state.settings = settings
    app.state.tokens = tokens if isinstance(tokens, TokenSource) else TokenSource(tokens)
    app.state.idempotency_lock = asyncio.Lock()
    app.state.episodes = EpisodeLog(log)  # polled failures: a line per outage, not per poll
    app.state.guarded = []  # what auth.authenticate_first and _json_bodies_only match
    install_problem_handlers(app)
    # innermost first: 413 before the token, the token before 415 and before the body is read
    app.middleware("http")(_json_bodies_only)
    app.middleware("http")(authenticate_first)
    app.middleware("http")(_log_request)
    app.middleware("http")(_bounded_body)
    app.add_middleware(HeadAsGet)  # outermost: every check sees the GET it answers as
    for module in (customers, unblocks, calls, inspect, overview):
        app.include_router(_document_scopes(module.router), prefix=API_PREFIX)
        app.state.guarded.extend(guarded_routes(module.router, API_PREFIX))
    app.include_router(status_page.router)  # /status: the page (public, no data)
    for router in routers:
        app.include_router(_document_scopes(router))
        app.state.guarded.extend(guarded_routes(router))
    return app


#: set in the scope of a HEAD request answered as GET (for the request's log line)
HEAD_AS_GET = "callpolicy.head"


class _Answered(Exception):
    """A HEAD's headers are sent: the GET behind it stops there."""


class HeadAsGet:
    """HEAD is GET without the body (RFC 9110 9.3.2): the same status and headers
    (Content-Length included), the same authentication. FastAPI's routes answer only the
    methods they declare, so a monitor's HEAD /status was a 405. The GET stops at its first
    body part: a HEAD on a streamed export (/v1/calls.csv) does not read the table."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] != "http.response.body":
                await send(message)
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            raise _Answered

        with contextlib.suppress(_Answered):
            await self.app({**scope, "method": "GET", HEAD_AS_GET: True}, receive,
                           headers_only)


async def _bounded_body(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                        ) -> Response:
    """A body announced over MAX_BODY_BYTES is refused before it is read (413)."""
    length = request.headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_BODY_BYTES:
        return problem_response(Problem(413, "Request too large", "the body must be at most "
                                        f"{MAX_BODY_BYTES} bytes"))
    return await call_next(request)


async def _json_bodies_only(request: Request,
                            call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """A body sent to a route that takes JSON must say so: a form or no Content-Type is a
    415, not a confusing validation error about the body's type."""
    has_body = (request.headers.get("content-length", "0") != "0"
                or "transfer-encoding" in request.headers)
    if has_body and not _is_json(request.headers.get("content-type", "")):
        route = matched_route(request)
        if route is not None and route.takes_body:
            return problem_response(Problem(
                415, "Unsupported media type", "send application/json (Content-Type: "
                "application/json) with a JSON body"))
    return await call_next(request)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/")
                                            and media.endswith("+json"))


async def _log_request(request: Request, call_next: Callable[[Request], Awaitable[Response]]
                       ) -> Response:
    """One `api_request` line per request: method, path, status, the token's name, time;
    never a header (the token) nor a body. The status page's successful polls are debug."""
    started = time.perf_counter()
    response = await call_next(request)
    token = getattr(request.state, "token", None)
    quiet = (request.method == "GET" and request.url.path in QUIET_POLLS
             and response.status_code < 400)
    emit = log.debug if quiet else log.info
    method = "HEAD" if request.scope.get(HEAD_AS_GET) else request.method
    emit("api_request", method=method, path=request.url.path,
         status=response.status_code, token=token.name if token else None,
         ms=round((time.perf_counter() - started) * 1000, 1))
    return response


def _document_scopes(router: APIRouter) -> APIRouter:
    """Each route's scope in its OpenAPI operation (`x-required-scope`); on writes, the
    Idempotency-Key header (read by idempotency.run_write, not a route parameter)."""
    for route in router.routes:
        if isinstance(route, APIRoute) and (scope := required_scope(route.dependant)):
            route.openapi_extra = {**(route.openapi_extra or {}), "x-required-scope": scope}
            if (route.methods or set()) & WRITES:
                route.openapi_extra.update(_idempotency_extra(route.status_code or 200))
    return router


WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _idempotency_extra(status_code: int) -> dict[str, Any]:
    """Set, not appended: the module routers are documented again by every create_app."""
    return {
        "parameters": [{
            "name": idempotency.HEADER, "in": "header", "required": False,
            "description": "a retry with the same key and request is answered the stored "
            f"response (for {int(idempotency.IDEMPOTENCY_TTL.total_seconds() // 3600)} h) "
            "without doing it again; the same key for another request is a 422; a key whose "
            "first request has not answered (still running, or its server stopped during "
            "it) is a 409",
            "schema": {"type": "string", "minLength": 1,
                       "maxLength": idempotency.MAX_KEY_LENGTH}}],
        "responses": {
            str(status_code): {"headers": {idempotency.REPLAYED: {
                "description": "`true` when this is the stored response of an earlier "
                "request with the same Idempotency-Key", "schema": {"type": "string"}}}},
            "409": {"description": "refused by the store, or the Idempotency-Key's first "
                    "request has not answered", "content": {
                        PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}},
            "415": {"description": "the body is not sent as application/json", "content": {
                PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}}},
    }
