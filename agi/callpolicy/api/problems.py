"""Errors as RFC 9457 problem details (`application/problem+json`): a status, a short title, a
one-line detail. Every error the API answers goes through here; bad input never gives a 500.

An ops error keeps its one-line message as the detail, its CLI commands put as API routes
(api_wording): `UnknownCustomer` 404, `InvalidRequest` / `ImportRejected` 422 (with `fields` /
`problems`), a `StoreProblem` 409 when the store refused the change (already suspended…) or
503 when the database could not be used (the store's message, naming the server's files, is
logged, not answered). Every invalid-input 422 has `fields` (the names the client sent:
`max_concurrent`, `customer.id`, `since`; `body` for the body as a whole); a body that is not
JSON is "Invalid JSON body". Anything else is a bug: logged with its traceback
(`api_internal_error`) and answered 500 with no detail."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..ops import ImportRejected, InvalidRequest, OpsError, StoreProblem, UnknownCustomer
from ..store import StoreError
from ..store.import_file import DuplicateKey

__all__ = ["PROBLEM_JSON", "Problem", "install_problem_handlers", "problem_response"]

log = structlog.get_logger("callpolicy.api")

PROBLEM_JSON = "application/problem+json"

# A StoreProblem whose message starts so is the database failing, not a refused change.
_UNAVAILABLE = ("cannot ", "database ")
_FASTAPI_PARSE_ERROR = "There was an error parsing the body"


class Problem(Exception):
    """Answer this problem (raised by the API's own checks: auth, idempotency, status)."""

    def __init__(self, status: int, title: str, detail: str, *,
                 headers: Mapping[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.headers = dict(headers or {})
        self.extra = extra


def problem_response(problem: Problem) -> JSONResponse:
    body = {"type": "about:blank", "title": problem.title, "status": problem.status,
            "detail": problem.detail, **problem.extra}
    return JSONResponse(body, status_code=problem.status, headers=problem.headers,
                        media_type=PROBLEM_JSON)


def ops_problem(exc: OpsError, customer: str | None = None) -> Problem:
    """The ops error as a problem, its CLI wording put in API terms (api_wording)."""
    if isinstance(exc, UnknownCustomer):
        return Problem(404, "Unknown customer", str(exc), customer=exc.customer_id)
    if isinstance(exc, InvalidRequest):
        return Problem(422, "Invalid request", api_wording(str(exc), customer),
                       fields=list(exc.fields))
    if isinstance(exc, ImportRejected):
        return Problem(422, "Import rejected", str(exc),
                       problems=[api_wording(p, customer) for p in exc.problems])
    if isinstance(exc, StoreProblem):
        return store_problem(str(exc), customer)
    return Problem(422, "Refused", api_wording(str(exc), customer))


def store_problem(message: str, customer: str | None = None) -> Problem:
    if message.startswith(_UNAVAILABLE):
        # the message names the server's files and the CLI's options: for the log only
        log.error("api_database_unavailable", error=message)
        return Problem(503, "Database unavailable", DATABASE_UNAVAILABLE)
    return Problem(409, "Refused by the store", api_wording(message, customer))


DATABASE_UNAVAILABLE = "the database is unavailable (the server's log says why); try again later"

# The shared ops/store messages tell a CLI user what to type; an API client gets the route.
_CLI_COMMAND = re.compile(r"`(?:callpolicy )?customer (suspend|reactivate|paid)`")
_ROUTE_OF = {"suspend": "suspend", "reactivate": "reactivate", "paid": "payment"}
_CLI_PHRASES = ((" or default FIELD", " or default (a list of limit names)"),
                ("--accept-zone-violations", '"accept_zone_violations": true'))


def api_wording(message: str, customer: str | None) -> str:
    """`message` with the CLI's commands and syntax replaced by the API's routes and keys."""
    where = customer or "{customer_id}"
    message = _CLI_COMMAND.sub(
        lambda m: f"POST {_PREFIX}/customers/{where}/{_ROUTE_OF[m.group(1)]}", message)
    for cli, api in _CLI_PHRASES:
        message = message.replace(cli, api)
    return message


_PREFIX = "/v1"
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


def _field_name(loc: tuple[Any, ...]) -> str:
    """A validation error's location as the client names it: `max_concurrent`,
    `customer.id`, `since` (not `body.max_concurrent`); the whole body is `body`."""
    parts = [str(part) for part in loc]
    if len(parts) > 1 and parts[0] in _LOCATIONS:
        parts = parts[1:]
    return ".".join(parts) or "request"


def _validation_problem(exc: RequestValidationError) -> Problem:
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        error = next(e for e in errors if e.get("type") == "json_invalid")
        loc, reason = error.get("loc", ()), str(error.get("ctx", {}).get("error", ""))
        at = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        return invalid_json(f"the body is not valid JSON ({reason.lower()}{at})"
                            if reason else f"the body is not valid JSON{at}")
    # an unknown key first: a typo (`tickt`) also makes its right key "Field required"
    errors.sort(key=lambda e: e.get("type") != "extra_forbidden")
    fields = list(dict.fromkeys(_field_name(tuple(e.get("loc", ()))) for e in errors))
    first = errors[0] if errors else {}
    name = fields[0] if fields else "request"
    message = ("unknown key" if first.get("type") == "extra_forbidden"
               else str(first.get("msg", "invalid"))[:200])
    more = f" (and {len(errors) - 1} more: {', '.join(fields[1:4])})" if len(errors) > 1 else ""
    return Problem(422, "Invalid request", f"{name}: {message}{more}", fields=fields)


def invalid_json(detail: str) -> Problem:
    return Problem(422, "Invalid JSON body", detail, fields=["body"])


def _unparsable_body(exc: BaseException | None) -> Problem:
    """FastAPI's 400 "There was an error parsing the body", said precisely."""
    if isinstance(exc, UnicodeDecodeError):
        return invalid_json(f"the body is not valid JSON: not UTF-8 (byte {exc.start})")
    if isinstance(exc, RecursionError):
        return invalid_json("the body is not valid JSON: nested too deeply")
    if isinstance(exc, DuplicateKey):
        return invalid_json(f"the body is not valid JSON: {exc}")
    return invalid_json("the body is not valid JSON")


def install_problem_handlers(app: FastAPI) -> None:
    """Every error as a problem: ours, the ops layer's, FastAPI's validation and routing,
    the database's, and a last resort for bugs."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(OpsError)
    async def _ops(request: Request, exc: OpsError) -> JSONResponse:
        return problem_response(ops_problem(exc, request.path_params.get("customer_id")))

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        return problem_response(store_problem(str(exc)))

    @app.exception_handler(sqlite3.Error)
    async def _sqlite(request: Request, exc: sqlite3.Error) -> JSONResponse:
        log.error("api_database_error", path=request.url.path, error=str(exc))
        return problem_response(Problem(503, "Database unavailable", DATABASE_UNAVAILABLE))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(_validation_problem(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == _FASTAPI_PARSE_ERROR:
            return problem_response(_unparsable_body(exc.__cause__))
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        return problem_response(Problem(exc.status_code, title, str(exc.detail),
                                        headers=exc.headers))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api_internal_error", method=request.method, path=request.url.path)
        return problem_response(Problem(500, "Internal error",
                                        "the request failed on the server (logged)"))
