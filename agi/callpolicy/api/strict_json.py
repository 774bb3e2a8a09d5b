"""JSON bodies read as strictly as an import file: a key given twice in one object is an
invalid body (422), not "the last one wins" (a proxy, a log or a billing system's own record
of the request may have read the first value; the audit must never act on another)."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from ..store.import_file import unique_keys

__all__ = ["StrictJsonRoute"]


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = json.loads(await self.body(), object_pairs_hook=unique_keys)
        return self._json


class StrictJsonRoute(APIRoute):
    """`APIRouter(route_class=StrictJsonRoute)`: the route's body parsed by StrictJsonRequest
    (a DuplicateKey reaches problems.py as FastAPI's "error parsing the body")."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict
