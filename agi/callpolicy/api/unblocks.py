"""/v1/…/unblocks, reblock, limits: a customer's exceptions to the default blocks
(art. 3.10) and its fraud limits (the `ops` scope)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from ..ops import Field, InvalidRequest
from ..ops import limits as limit_ops
from ..ops.unblocks import UnblockTarget, list_unblocks, reblock, unblock
from ..ops.values import within_span
from ..policy import UnblockKind
from ..store import LIMIT_FIELDS, Store
from .auth import require_scope
from .deps import CustomerId, ReadStore, actor, problems, settings_of
from .idempotency import run_write
from .models import (
    LimitsIn,
    LimitsSet,
    LimitsView,
    Reblocked,
    TargetIn,
    Unblocked,
    UnblockIn,
    UnblockView,
)
from .strict_json import StrictJsonRoute
from .tokens import Token

__all__ = ["router"]

router = APIRouter(tags=["unblocks and limits"], route_class=StrictJsonRoute)

Reader = Annotated[Token, Depends(require_scope("read"))]
Ops = Annotated[Token, Depends(require_scope("ops"))]
READ_PROBLEMS = problems(401, 403, 404, 422, 503)
WRITE_PROBLEMS = problems(401, 403, 404, 409, 422, 503)


def _target(body: TargetIn, request: Request) -> UnblockTarget:
    given = [(kind, text) for kind, text in ((UnblockKind.PREFIX, body.prefix),
                                             (UnblockKind.COUNTRY, body.country),
                                             (UnblockKind.CATEGORY, body.category))
             if text is not None]
    if len(given) != 1:
        raise InvalidRequest("give exactly one of ", Field("prefix"), ", ", Field("country"),
                             " or ", Field("category"))
    kind, text = given[0]
    return UnblockTarget.parse(kind, text, settings_of(request).policy.premium_prefixes)


@router.get("/unblocks", response_model=list[UnblockView], responses=READ_PROBLEMS)
async def unblocks(token: Reader, store: ReadStore,
                   customer: Annotated[str | None, Query(max_length=64)] = None,
                   all: bool = False) -> list[dict]:
    """Active unblocks (of one customer); `all`: also expired and reblocked ones."""
    return await list_unblocks(store, customer, include_inactive=all)


@router.post("/customers/{customer_id}/unblocks", response_model=Unblocked, status_code=201,
             responses=WRITE_PROBLEMS)
async def add_unblock(customer_id: CustomerId, body: UnblockIn, token: Ops,
                      request: Request) -> JSONResponse:
    """Open a default block for the customer: a prefix (longest prefix wins), a country
    outside the EU or a category; until `expires_at`, for `lasting_seconds`, or until
    reblocked."""
    target = _target(body, request)
    expires = (within_span(body.expires_at, "expires_at", datetime.now(UTC), future=True)
               if body.expires_at else None)
    lasting = body.lasting_seconds
    who = actor(token, body)

    async def write(store: Store) -> Unblocked:
        done = await unblock(store, customer_id, target, who, expires_at=expires,
                             lasting=timedelta(seconds=lasting) if lasting else None)
        return Unblocked(id=done.id, customer=customer_id, kind=target.kind.value,
                         value=target.value,
                         expires_at=done.expires_at.isoformat() if done.expires_at else None,
                         warnings=list(target.warnings))

    return await run_write(request, token, write, status_code=201)


@router.post("/customers/{customer_id}/reblock", response_model=Reblocked,
             responses=WRITE_PROBLEMS)
async def reblock_target(customer_id: CustomerId, body: TargetIn, token: Ops,
                         request: Request) -> JSONResponse:
    """Revoke the customer's active unblock(s) of the target."""
    target = _target(body, request)
    who = actor(token, body)

    async def write(store: Store) -> Reblocked:
        ids = await reblock(store, customer_id, target, who)
        return Reblocked(customer=customer_id, kind=target.kind.value, value=target.value,
                         revoked=ids)

    return await run_write(request, token, write)


@router.get("/customers/{customer_id}/limits", response_model=LimitsView,
            responses=READ_PROBLEMS)
async def show_limits(customer_id: CustomerId, token: Reader, store: ReadStore,
                      request: Request) -> dict:
    """The effective fraud limits, where each comes from (customer or [fraud] default)."""
    return await limit_ops.show_limits(store, customer_id,
                                       settings_of(request).policy.fraud_limits)


@router.patch("/customers/{customer_id}/limits", response_model=LimitsSet,
              responses=WRITE_PROBLEMS)
async def set_limits(customer_id: CustomerId, body: LimitsIn, token: Ops,
                     request: Request) -> JSONResponse:
    """Set some limits, or set them back to the default (`default`); live within a second.
    `changed` is false (nothing written) when they already were so."""
    values = {name: getattr(body, name) for name in LIMIT_FIELDS
              if getattr(body, name) is not None}
    change = limit_ops.LimitChange.of(values, body.default)
    who = actor(token, body)
    defaults = settings_of(request).policy.fraud_limits

    async def write(store: Store) -> LimitsSet:
        done = await limit_ops.set_limits(store, customer_id, change, who, defaults)
        return LimitsSet(changed=done.changed, **done.view)

    return await run_write(request, token, write)
