"""/v1/check (how calls would be decided, and which rule decided), /v1/audit, /v1/status (the
running daemon's, as `callpolicy status`): reads, any token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ..ops.audit import audit_log
from ..ops.check import Caller, prepare_check
from ..ops.values import MAX_COUNT
from ..policy.location import parse_ip
from ..service.status import StatusUnavailable, problems
from .auth import require_scope
from .deps import ReadStore, daemon_status, settings_of
from .deps import problems as problem_responses
from .models import AuditEntry, CheckResult
from .problems import Problem
from .strict_json import StrictJsonRoute
from .tokens import Token

__all__ = ["router"]

router = APIRouter(tags=["inspect"], route_class=StrictJsonRoute)

Reader = Annotated[Token, Depends(require_scope("read"))]
MAX_NUMBERS = 100  # numbers decided in one check


@router.get("/check", response_model=CheckResult,
            responses=problem_responses(401, 403, 422, 503))
async def check(
        token: Reader, store: ReadStore, request: Request,
        number: Annotated[list[str], Query(min_length=1, max_length=MAX_NUMBERS,
                                           description="the dialled numbers")],
        customer: Annotated[str | None, Query(max_length=64)] = None,
        endpoint: Annotated[str | None, Query(max_length=200)] = None,
        source_ip: Annotated[str | None, Query(max_length=100)] = None,
        caller_id: Annotated[str | None, Query(max_length=200)] = None,
        privacy: bool = False,
        forwarded_from: Annotated[str | None, Query(max_length=200)] = None) -> dict:
    """Decide each number as a live call of the customer (or endpoint) would be decided now,
    with the rule that decided. An unknown customer or endpoint is decided too (refused;
    must-reach numbers pass), with a warning."""
    if source_ip is not None and parse_ip(source_ip) is None:
        raise Problem(422, "Invalid request", f"source_ip {source_ip[:60]!r} is not an IP "
                      "address", fields=["source_ip"])
    prepared = await prepare_check(store, Caller(customer, endpoint),
                                   settings_of(request).policy)
    now = datetime.now(UTC)
    decisions = [prepared.decide(n, now, source_ip=source_ip, caller_id=caller_id,
                                 privacy=privacy, forwarded_from=forwarded_from).to_dict()
                 for n in number]
    return {"warnings": list(prepared.warnings), "decisions": decisions}


@router.get("/audit", response_model=list[AuditEntry],
            responses=problem_responses(401, 403, 404, 422, 503))
async def audit(token: Reader, store: ReadStore,
                customer: Annotated[str | None, Query(max_length=64)] = None,
                limit: Annotated[int, Query(ge=1, le=MAX_COUNT)] = 50) -> list[dict]:
    """The append-only audit log (of one customer), the last `limit` entries, oldest first:
    who (a token's name for API changes), when, ticket, reason, before/after."""
    return await audit_log(store, customer, limit)


@router.get("/status", response_model=dict[str, Any],
            responses=problem_responses(401, 403, 503))
async def status(token: Reader, request: Request) -> dict[str, Any]:
    """The running daemon's status (from its `[metrics] listen` address, `/status`), with
    `healthy` and `problems` as `callpolicy status --json`. No daemon answering: 503."""
    try:
        found = await daemon_status(request)
    except StatusUnavailable as exc:
        raise Problem(503, "Daemon unavailable", exc.public) from None
    trouble = problems(found)
    return {**found, "healthy": not trouble, "problems": trouble}
