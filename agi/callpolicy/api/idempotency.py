"""`Idempotency-Key` on writes: billing systems retry.

A write sent with the header has its response stored in the database for IDEMPOTENCY_TTL
(24 h) under (token name, key), with a hash of the request (method, path, query, JSON body).
The same key again with the same request is answered the stored response (status and body,
header `Idempotent-Replayed: true`) without doing anything; with a different request it is a
422 problem. Only successes are stored: a refused request changed nothing, so retrying it
does what a first attempt would. Keyed writes run one at a time in this process (a retry
sent while the first attempt is still running waits for it and gets its answer). Expired
keys are purged whenever a response is stored."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import structlog
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from .. import ops
from ..store import Store, StoreError
from .problems import Problem
from .tokens import Token

__all__ = ["IDEMPOTENCY_TTL", "run_write"]

log = structlog.get_logger("callpolicy.api")

IDEMPOTENCY_TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 200
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
        stored = await _stored(store, token, key)
        if stored is not None:
            if stored["request_hash"] != fingerprint:
                raise Problem(422, "Idempotency-Key reused", f"{HEADER} {key!r} was used "
                              "for a different request; use a new key for a new request")
            return JSONResponse(json.loads(stored["body"]), status_code=stored["status"],
                                headers={REPLAYED: "true"})
        result = await operation(store)
        body = result.model_dump(mode="json")
        try:
            await store.save_idempotent_response(
                token.name, key, fingerprint, status_code, json.dumps(body),
                datetime.now(UTC) + IDEMPOTENCY_TTL)
        except StoreError as exc:  # done and committed: say so; a retry would do it again
            log.error("api_idempotency_not_saved", token=token.name, error=str(exc))
    return JSONResponse(body, status_code=status_code)


async def _stored(store: Store, token: Token, key: str) -> dict | None:
    try:
        return await store.idempotent_response(token.name, key, datetime.now(UTC))
    except StoreError as exc:
        raise ops.StoreProblem(str(exc)) from exc
