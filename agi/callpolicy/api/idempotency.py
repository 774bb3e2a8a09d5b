"""`Idempotency-Key` on writes: billing systems retry.

A write sent with the header claims (token name, key) in the database before it runs, with a
hash of the request (method, path, query, JSON body), then stores its response there for
IDEMPOTENCY_TTL (24 h). The same key again with the same request is answered the stored
response (status and body, header `Idempotent-Replayed: true`) without doing anything; with a
different request it is a 422 problem. A key whose write has not answered is a 409: still
running (in another API process: `Retry-After`), or left by a server that stopped during the
write, whose change may or may not be made: the write is never done twice. Only successes are
stored: a refused write releases its key (it changed nothing, so retrying it does what a first
attempt would). Keyed writes run one at a time in this process (a retry sent while the first
attempt is still running here waits for it and gets its answer). Expired keys are purged
whenever a key is claimed or a response stored."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .. import ops
from ..ops.errors import OpsError
from ..store import IDEMPOTENCY_PENDING, Store, StoreError, parse_iso
from .problems import Problem
from .tokens import Token

__all__ = ["IDEMPOTENCY_TTL", "run_write"]

log = structlog.get_logger("callpolicy.api")

IDEMPOTENCY_TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 200
STILL_RUNNING = timedelta(seconds=60)  # a PENDING claim older than this: its server stopped
HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"

Operation = Callable[[Store], Awaitable[BaseModel]]


def _key(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(422, "Invalid Idempotency-Key", f"{HEADER} must be 1 to "
                      f"{MAX_KEY_LENGTH} printable characters", fields=[HEADER])
    return key


async def _fingerprint(request: Request) -> str:
    body = await request.body()
    try:  # the same JSON with its keys in another order is the same request
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("utf-8", "replace")
    text = "\n".join((request.method, request.url.path, str(request.url.query), canonical))
    return hashlib.sha256(text.encode()).hexdigest()


async def run_write(request: Request, token: Token, operation: Operation, *,
                    status_code: int = 200) -> JSONResponse:
    """Open the store for writing, run `operation`, answer its value as JSON; with an
    Idempotency-Key, answer a stored response instead when there is one."""
    key = _key(request)
    settings = request.app.state.settings
    if key is None:
        async with await ops.open_store(settings) as store:
            result = await operation(store)
        return JSONResponse(result.model_dump(mode="json"), status_code=status_code)
    fingerprint = await _fingerprint(request)
    lock: asyncio.Lock = request.app.state.idempotency_lock
    async with lock, await ops.open_store(settings) as store:
        now = datetime.now(UTC)
        found = await _store_call(store.claim_idempotency_key(
            token.name, key, fingerprint, now, now + IDEMPOTENCY_TTL))
        if found is not None:
            return _answer_again(key, fingerprint, found, now)
        try:
            result = await operation(store)
        except (Problem, OpsError, StoreError, HTTPException, RequestValidationError):
            # refused: nothing changed, so the key is free for a retry (anything else, a bug
            # or a cancelled request, may have changed something: the claim stays, a 409)
            await _release(store, token, key)
            raise
        body = result.model_dump(mode="json")
        try:
            await store.save_idempotent_response(
                token.name, key, fingerprint, status_code, json.dumps(body),
                datetime.now(UTC) + IDEMPOTENCY_TTL)
        except StoreError as exc:  # done and committed: say so; a retry gets a 409
            log.error("api_idempotency_not_saved", token=token.name, error=str(exc))
    return JSONResponse(body, status_code=status_code)


def _answer_again(key: str, fingerprint: str, found: dict[str, Any],
                  now: datetime) -> JSONResponse:
    if found["request_hash"] != fingerprint:
        raise Problem(422, "Idempotency-Key reused", f"{HEADER} {key!r} was used "
                      "for a different request; use a new key for a new request")
    if found["status"] != IDEMPOTENCY_PENDING:
        return JSONResponse(json.loads(found["body"]), status_code=found["status"],
                            headers={REPLAYED: "true"})
    claimed = parse_iso(found["created_at"])
    if claimed is not None and now - claimed < STILL_RUNNING:
        raise Problem(409, "Idempotency-Key in use", f"the request with {HEADER} {key!r} "
                      "has not answered yet (still running, or it failed moments ago); retry "
                      "it in a moment", headers={"Retry-After": "1"})
    raise Problem(409, "Idempotency-Key outcome unknown", f"the request with {HEADER} "
                  f"{key!r} did not answer within {STILL_RUNNING.seconds} s (it failed, or "
                  "its server stopped during it): its change may or may not be made; check "
                  "the state, then send a new key if still needed")


async def _store_call(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except StoreError as exc:
        raise ops.StoreProblem(str(exc)) from exc


async def _release(store: Store, token: Token, key: str) -> None:
    try:
        await store.release_idempotency_key(token.name, key)
    except StoreError as exc:  # the key stays claimed: a retry gets a 409, never a double
        log.error("api_idempotency_not_released", token=token.name, error=str(exc))
