"""Errors as RFC 9457 problem details (`application/problem+json`): a status, a short title, a
one-line detail. Every error the API answers goes through here; bad input never gives a 500.

An ops error keeps its one-line message as the detail: `UnknownCustomer` 404,
`InvalidRequest` / `ImportRejected` 422 (with `fields` / `problems`), a `StoreProblem` 409
when the store refused the change (already suspended…) or 503 when the database could not be
used. Anything else is a bug: logged with its traceback (`api_internal_error`) and answered
500 with no detail."""

from __future__ import annotations

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

__all__ = ["PROBLEM_JSON", "Problem", "install_problem_handlers", "problem_response"]

log = structlog.get_logger("callpolicy.api")

PROBLEM_JSON = "application/problem+json"

# A StoreProblem whose message starts so is the database failing, not a refused change.
_UNAVAILABLE = ("cannot ", "database ")


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


def ops_problem(exc: OpsError) -> Problem:
    if isinstance(exc, UnknownCustomer):
        return Problem(404, "Unknown customer", str(exc), customer=exc.customer_id)
    if isinstance(exc, InvalidRequest):
        return Problem(422, "Invalid request", str(exc), fields=list(exc.fields))
    if isinstance(exc, ImportRejected):
        return Problem(422, "Import rejected", str(exc), problems=list(exc.problems))
    if isinstance(exc, StoreProblem):
        return store_problem(str(exc))
    return Problem(422, "Refused", str(exc))


def store_problem(message: str) -> Problem:
    if message.startswith(_UNAVAILABLE):
        return Problem(503, "Database unavailable", message)
    return Problem(409, "Refused by the store", message)


def _validation_detail(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    errors = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()))
        errors.append({"field": where, "message": str(error.get("msg", ""))[:200]})
    first = errors[0] if errors else {"field": "request", "message": "invalid"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{first['field']}: {first['message']}{more}", errors


def install_problem_handlers(app: FastAPI) -> None:
    """Every error as a problem: ours, the ops layer's, FastAPI's validation and routing,
    the database's, and a last resort for bugs."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(OpsError)
    async def _ops(request: Request, exc: OpsError) -> JSONResponse:
        return problem_response(ops_problem(exc))

    @app.exception_handler(StoreError)
    async def _store(request: Request, exc: StoreError) -> JSONResponse:
        return problem_response(store_problem(str(exc)))

    @app.exception_handler(sqlite3.Error)
    async def _sqlite(request: Request, exc: sqlite3.Error) -> JSONResponse:
        log.error("api_database_error", path=request.url.path, error=str(exc))
        return problem_response(Problem(503, "Database unavailable", f"database error: {exc}"))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail, errors = _validation_detail(exc)
        return problem_response(Problem(422, "Invalid request", detail, errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        return problem_response(Problem(exc.status_code, title, str(exc.detail),
                                        headers=exc.headers))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api_internal_error", method=request.method, path=request.url.path)
        return problem_response(Problem(500, "Internal error",
                                        "the request failed on the server (logged)"))
