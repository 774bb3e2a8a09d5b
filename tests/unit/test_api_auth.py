"""The HTTP API's bearer tokens and scopes, over real HTTP: who may do what, and a refused
request writes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from api_server import SCOPES, LiveApi, serve

from callpolicy.api.tokens import add_token, hash_token, load_tokens, remove_token

# (method, path, JSON body, the scope it needs); every family of the API
T = {"ticket": "T-1"}
ROUTES = [
    ("GET", "/v1/customers", None, "read"),
    ("GET", "/v1/customers/acme", None, "read"),
    ("GET", "/v1/unblocks", None, "read"),
    ("GET", "/v1/customers/acme/limits", None, "read"),
    ("GET", "/v1/check?customer=acme&number=0905123456", None, "read"),
    ("GET", "/v1/calls", None, "read"),
    ("GET", "/v1/calls.csv", None, "read"),
    ("GET", "/v1/audit", None, "read"),
    ("POST", "/v1/customers/acme/suspend", T, "billing"),
    ("POST", "/v1/customers/bakkerij/reactivate", T, "billing"),
    ("POST", "/v1/customers/acme/reminders", {**T, "sent_on": "2026-11-01"}, "billing"),
    ("POST", "/v1/customers/acme/payment", T, "billing"),
    ("POST", "/v1/customers/acme/unblocks", {**T, "prefix": "0905"}, "ops"),
    ("POST", "/v1/customers/acme/reblock", {**T, "prefix": "0905"}, "ops"),
    ("PATCH", "/v1/customers/acme/limits", {**T, "max_concurrent": 3}, "ops"),
    ("PUT", "/v1/customers/acme", {**T, "customer": {
        "name": "ACME", "main_number": "+3292101234", "numbers": ["+3292101234"],
        "install_address": {"street": "Breebroekstraat", "house_number": "61",
                            "postcode": "9030", "municipality": "Gent", "country": "BE"}}},
     "ops"),
]
GRANTED = {"read": {"read"}, "billing": {"read", "billing"}, "ops": set(SCOPES)}


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    """One server for the matrix (a refusal must write nothing whatever came before)."""
    with serve(tmp_path_factory.mktemp("auth")) as live:
        yield live


@pytest.mark.parametrize(("method", "path", "body", "needs"), ROUTES,
                         ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_each_scope_may_do_what_it_grants_and_nothing_else(shared_api: LiveApi, method: str,
                                                            path: str, body: dict | None,
                                                            needs: str) -> None:
    api = shared_api
    for scope in SCOPES:
        before = api.audit_count()
        with api.client(scope) as client:
            response = client.request(method, path, json=body)
        if needs in GRANTED[scope]:  # done, or refused by the store (already suspended)
            assert response.status_code in (200, 201, 409), (scope, response.text)
            continue
        assert response.status_code == 403, (scope, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["title"] == "Forbidden"
        assert f"needs scope {needs}" in problem["detail"]
        assert api.audit_count() == before  # nothing written


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer not-a-token", "Basic dXNlcjpwdw==",
                                    "bearer cpt_" + "A" * 43])
def test_no_or_an_unknown_token_is_401_with_a_challenge(shared_api: LiveApi,
                                                        header: str | None) -> None:
    api = shared_api
    headers = {"Authorization": header} if header else {}
    with api.client(None, **headers) as client:
        for method, path, body, _ in ROUTES:
            response = client.request(method, path, json=body)
            assert response.status_code == 401, (path, response.text)
            assert response.headers["www-authenticate"].startswith('Bearer realm="callpolicy"')
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["title"] == "Unauthenticated"


def test_the_token_name_is_the_audits_by_and_the_ticket_is_required(api: LiveApi) -> None:
    with api.client("billing") as client:
        missing = client.post("/v1/customers/acme/suspend", json={})
        assert missing.status_code == 422
        assert "ticket" in missing.json()["detail"]
        control = client.post("/v1/customers/acme/suspend", json={"ticket": "a\x1bb"})
        assert control.status_code == 422
        assert control.json()["fields"] == ["ticket"]
        done = client.post("/v1/customers/acme/suspend",
                           json={"ticket": " INV-7 ", "reason": "unpaid"})
        assert done.status_code == 200, done.text
        last = client.get("/v1/audit", params={"customer": "acme", "limit": 1}).json()[-1]
    assert (last["actor"], last["ticket"], last["reason"], last["action"]) == (
        "billing-bot", "INV-7", "unpaid", "customer.suspend")


def test_a_token_added_while_running_works_at_once(api: LiveApi) -> None:
    token = add_token(api.token_file, "late", ["read"])
    with api.client(None, Authorization=f"Bearer {token}") as client:
        assert client.get("/v1/customers").status_code == 200


def test_a_token_removed_while_running_is_refused_at_once(api: LiveApi) -> None:
    with api.client("billing") as client:
        assert client.get("/v1/customers").status_code == 200
        remove_token(api.token_file, "billing-bot")
        assert client.get("/v1/customers").status_code == 401
    with api.client("read") as client:  # the others are kept
        assert client.get("/v1/customers").status_code == 200
    assert [t.name for t in load_tokens(api.token_file).tokens] == ["read-bot", "ops-bot"]
    assert api.token_file.stat().st_mode & 0o777 == 0o600


def test_the_token_file_holds_hashes_only(api: LiveApi) -> None:
    text = api.token_file.read_text()
    for token in api.tokens.values():
        assert token not in text
        assert hash_token(token) in text
    assert api.token_file.stat().st_mode & 0o777 == 0o600
    assert [(t.name, t.scopes) for t in load_tokens(api.token_file).tokens] == [
        ("read-bot", ("read",)), ("billing-bot", ("billing",)), ("ops-bot", ("ops",))]
