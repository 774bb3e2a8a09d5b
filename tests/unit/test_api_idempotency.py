"""Idempotency-Key on the API's writes: a retry is answered, not done again."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from datetime import UTC, datetime, timedelta

from api_server import LiveApi
from backends import query

from callpolicy.store import IDEMPOTENCY_PENDING, open_store, parse_iso

UNBLOCK = {"ticket": "MAIL-4711", "prefix": "0905", "lasting_seconds": 3600}


def unblock_rows(api: LiveApi) -> int:
    with sqlite3.connect(api.db) as db:
        return db.execute("SELECT count(*) FROM unblocks").fetchone()[0]


def test_a_retry_with_the_same_key_and_body_returns_the_stored_response(api: LiveApi) -> None:
    with api.client("ops", **{"Idempotency-Key": "req-1"}) as client:
        first = client.post("/v1/customers/acme/unblocks", json=UNBLOCK)
        audit = api.audit_count()
        # the same JSON, keys in another order: the same request
        again = client.post("/v1/customers/acme/unblocks",
                            json=dict(reversed(list(UNBLOCK.items()))))
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert unblock_rows(api) == 1
    assert api.audit_count() == audit  # not done again


def test_the_same_key_with_another_body_is_a_422_problem(api: LiveApi) -> None:
    with api.client("ops", **{"Idempotency-Key": "req-2"}) as client:
        assert client.post("/v1/customers/acme/unblocks", json=UNBLOCK).status_code == 201
        other = client.post("/v1/customers/acme/unblocks", json={**UNBLOCK, "prefix": "0906"})
        elsewhere = client.post("/v1/customers/bakkerij/unblocks", json=UNBLOCK)
    for response in (other, elsewhere):
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["title"] == "Idempotency-Key reused"
    assert unblock_rows(api) == 1


def test_keys_are_per_token_and_without_a_key_each_request_is_done(api: LiveApi) -> None:
    with api.client("ops", **{"Idempotency-Key": "k"}) as ops_client, \
            api.client("billing", **{"Idempotency-Key": "k"}) as billing_client:
        assert billing_client.post("/v1/customers/acme/suspend",
                                   json={"ticket": "INV-1"}).status_code == 200
        # the same key of another token is another key: ops' request is done
        assert ops_client.post("/v1/customers/acme/unblocks", json=UNBLOCK).status_code == 201
    with api.client("ops") as client:
        assert client.post("/v1/customers/acme/unblocks", json=UNBLOCK).status_code == 201
        assert client.post("/v1/customers/acme/unblocks", json=UNBLOCK).status_code == 201
    assert unblock_rows(api) == 3


def test_a_refused_request_is_not_stored_and_a_bad_key_is_refused(api: LiveApi) -> None:
    with api.client("billing", **{"Idempotency-Key": "s-1"}) as client:
        refused = client.post("/v1/customers/bakkerij/suspend", json={"ticket": "INV-1"})
        assert refused.status_code == 409  # already suspended: nothing done, nothing kept
        # the key was not kept: a request under it is done as a first one
        assert client.post("/v1/customers/bakkerij/reactivate",
                           json={"ticket": "INV-1"}).status_code == 200
    with api.client("billing", **{"Idempotency-Key": "x" * 201}) as client:
        long_key = client.post("/v1/customers/acme/suspend", json={"ticket": "INV-1"})
    assert long_key.status_code == 422
    assert "Idempotency-Key" in long_key.json()["detail"]


async def test_stored_responses_expire_and_are_purged_on_both_backends(db_location: str
                                                                      ) -> None:
    """Migration 7 and the two store methods, on SQLite and PostgreSQL."""
    async with await open_store(db_location, create=True) as store:
        now = datetime.now(UTC)
        await store.save_idempotent_response("a", "old", "h", 200, "{}",
                                             now + timedelta(seconds=0.2))
        kept = await store.idempotent_response("a", "old", now)
        await asyncio.sleep(0.3)
        gone = await store.idempotent_response("a", "old", datetime.now(UTC))
        await store.save_idempotent_response("a", "new", "h2", 201, '{"id": 1}',
                                             datetime.now(UTC) + timedelta(hours=24))
        await store.save_idempotent_response("b", "new", "h3", 200, "{}",
                                             datetime.now(UTC) + timedelta(hours=24))
        new = await store.idempotent_response("a", "new", datetime.now(UTC))
    rows = await query(db_location, "SELECT owner, key FROM idempotency_keys ORDER BY owner")
    assert kept is not None and new is not None
    assert (kept["request_hash"], kept["status"], kept["body"]) == ("h", 200, "{}")
    assert gone is None
    assert (new["request_hash"], new["status"], new["body"]) == ("h2", 201, '{"id": 1}')
    assert rows == [("a", "new"), ("b", "new")]  # the expired one was purged


async def test_a_key_is_claimed_once_released_when_refused_and_answered_when_done(
        db_location: str) -> None:
    """The claim is the database's (its primary key): a second claimant, in this process or
    another API server's, finds the first one's PENDING row, never runs the write too."""
    async with await open_store(db_location, create=True) as first, \
            await open_store(db_location) as second:
        now = datetime.now(UTC)
        later = now + timedelta(hours=24)
        assert await first.claim_idempotency_key("a", "k", "h", now, later) is None
        pending = await second.claim_idempotency_key("a", "k", "h", now, later)
        assert pending is not None and pending["status"] == IDEMPOTENCY_PENDING
        assert parse_iso(pending["created_at"]) == now.replace(
            microsecond=now.microsecond // 1000 * 1000)
        await first.release_idempotency_key("a", "k")  # refused: free again
        assert await second.claim_idempotency_key("a", "k", "h", now, later) is None
        await second.save_idempotent_response("a", "k", "h", 201, "{}", later)
        await second.release_idempotency_key("a", "k")  # a stored response is never released
        done = await first.claim_idempotency_key("a", "k", "h", now, later)
        assert done is not None and (done["status"], done["body"]) == (201, "{}")
        expired = now + timedelta(hours=25)  # an expired claim is purged and claimed anew
        assert await first.claim_idempotency_key("a", "k", "h2", expired,
                                                 expired + timedelta(hours=24)) is None


async def left_pending(api: LiveApi, key: str, claimed: datetime) -> None:
    async with await open_store(api.db) as store:
        body = json.dumps({"ticket": "INV-9"}, sort_keys=True, separators=(",", ":"))
        text = "\n".join(("POST", "/v1/customers/acme/suspend", "", body))
        assert await store.claim_idempotency_key(
            "billing-bot", key, hashlib.sha256(text.encode()).hexdigest(), claimed,
            claimed + timedelta(hours=24)) is None


def test_a_key_still_running_elsewhere_or_left_by_a_stopped_server_is_a_409(
        api: LiveApi) -> None:
    before = api.audit_count()
    asyncio.run(left_pending(api, "running", datetime.now(UTC)))
    asyncio.run(left_pending(api, "stopped", datetime.now(UTC) - timedelta(minutes=5)))
    with api.client("billing", **{"Idempotency-Key": "running"}) as client:
        running = client.post("/v1/customers/acme/suspend", json={"ticket": "INV-9"})
    with api.client("billing", **{"Idempotency-Key": "stopped"}) as client:
        stopped = client.post("/v1/customers/acme/suspend", json={"ticket": "INV-9"})
    assert (running.status_code, running.json()["title"]) == (409, "Idempotency-Key in use")
    assert running.headers["Retry-After"] == "1"
    assert (stopped.status_code, stopped.json()["title"]) == (
        409, "Idempotency-Key outcome unknown")
    assert "may or may not be made" in stopped.json()["detail"]  # never done twice
    assert api.audit_count() == before  # neither was done (again)


def test_every_write_documents_the_idempotency_key_header(api: LiveApi) -> None:
    with api.client("read") as client:
        document = client.get("/v1/openapi.json").json()
    writes = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            headers = [p["name"] for p in operation.get("parameters", [])
                       if p["in"] == "header"]
            if method in ("post", "put", "patch", "delete"):
                writes += 1
                assert headers == ["Idempotency-Key"], (method, path)
                success = next(code for code in operation["responses"] if code.startswith("2"))
                assert "Idempotent-Replayed" in operation["responses"][success]["headers"]
            else:
                assert headers == [], (method, path)
    assert writes == 8
