"""/v1/calls: call records (art. 4.3) as JSON, or as a CSV export streamed from the database
(months of calls never sit in memory); the same filters and columns as `callpolicy calls`."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from .. import ops
from ..live.records import CSV_COLUMNS, CallRecord
from ..ops.calls import Period, calls, iter_calls
from ..ops.values import MAX_COUNT, within_span
from ..store import Store
from .auth import require_scope
from .deps import ReadStore, problems
from .models import CallView
from .strict_json import StrictJsonRoute
from .tokens import Token

__all__ = ["router"]

router = APIRouter(tags=["calls"], route_class=StrictJsonRoute)

Reader = Annotated[Token, Depends(require_scope("read"))]
DEFAULT_LIMIT = 1000
CSV_ROWS_PER_CHUNK = 500
Customer = Annotated[str | None, Query(max_length=64, description="one customer's calls")]
Since = Annotated[datetime | None, Query(description="calls started at or after (ISO 8601 "
                                                     "with a timezone)")]
Until = Annotated[datetime | None, Query(description="calls started before")]


def _period(since: datetime | None, until: datetime | None) -> Period:
    now = datetime.now(UTC)
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise ops.InvalidRequest(ops.Field(name), " has no timezone: add one (+01:00, "
                                     "+02:00, Z)")
    return Period(within_span(since, "since", now) if since else None,
                  within_span(until, "until", now) if until else None)


@router.get("/calls", response_model=list[CallView], responses=problems(401, 403, 404, 422,
                                                                           503))
async def list_calls(token: Reader, store: ReadStore, customer: Customer = None,
                     since: Since = None, until: Until = None,
                     limit: Annotated[int, Query(ge=1, le=MAX_COUNT)] = DEFAULT_LIMIT
                     ) -> list[dict]:
    """The last `limit` calls of the period (of one customer), oldest first."""
    records = await calls(store, customer, _period(since, until), limit)
    return [record.to_dict() for record in records]


@router.get("/calls.csv", response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}},
                             "description": "a header row, then one row per call"},
                       **problems(401, 403, 404, 422, 503)})
async def export_calls(token: Reader, request: Request, customer: Customer = None,
                       since: Since = None, until: Until = None) -> StreamingResponse:
    """Every call of the period (of one customer), oldest first, as CSV (the columns of
    `callpolicy calls --csv`; cells that a spreadsheet would run as a formula are
    neutralised). The store is opened here and closed when the stream ends."""
    period = _period(since, until)
    store = await ops.open_store(request.app.state.settings, readonly=True)
    try:  # the customer is checked before the first byte: a 404 is still possible
        stream = await iter_calls(store, customer, period)
    except BaseException:
        await store.close()
        raise
    return _ClosedStream(_csv(store, stream), media_type="text/csv; charset=utf-8",
                         headers={"Content-Disposition": 'attachment; filename="calls.csv"'})


class _ClosedStream(StreamingResponse):
    """Closes its iterator when the response ends however it ends (a client gone, a HEAD
    stopped at the headers): Starlette cancels the task paused in it but does not close
    it, so the export's store (a PostgreSQL connection in a transaction) stayed open until
    the garbage collector found it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    await aclose()


async def _csv(store: Store, stream: AsyncGenerator[CallRecord, None]) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    try:
        async with contextlib.aclosing(stream):
            count = 0
            async for record in stream:
                writer.writerow(record.csv_row())
                count += 1
                if count % CSV_ROWS_PER_CHUNK == 0:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()
    finally:
        await store.close()
