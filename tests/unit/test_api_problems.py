"""Every error of the HTTP API is application/problem+json with a clear title and a one-line
detail; bad input is a 4xx, never a 500; the database or the daemon down is a 503."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
import structlog
from api_server import LiveApi, serve
from fastapi import APIRouter, Depends

from callpolicy.api import require_scope


def problem(response: httpx.Response, status: int, title: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["status"], body["title"]) == (status, title)
    assert body["detail"] and "\n" not in body["detail"]
    return body


def test_unknown_customer_is_404(api: LiveApi) -> None:
    with api.client("ops") as client:
        for response in (client.get("/v1/customers/nobody"),
                         client.get("/v1/customers/nobody/limits"),
                         client.get("/v1/audit", params={"customer": "nobody"}),
                         client.post("/v1/customers/nobody/suspend", json={"ticket": "T"}),
                         client.post("/v1/customers/nobody/unblocks",
                                     json={"ticket": "T", "category": "premium"})):
            body = problem(response, 404, "Unknown customer")
            assert body["detail"] == "unknown customer 'nobody'"


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("POST", "/v1/customers/acme/unblocks", {"ticket": "T", "prefix": "abc"}, "prefix"),
    ("POST", "/v1/customers/acme/unblocks", {"ticket": "T", "country": "FR"}, "country"),
    ("POST", "/v1/customers/acme/unblocks", {"ticket": "T", "prefix": "0905",
                                              "country": "CH"}, "prefix"),
    ("POST", "/v1/customers/acme/unblocks", {"ticket": "T", "prefix": "0905",
                                              "expires_at": "2020-01-01T00:00:00Z"},
     "expires_at"),
    ("POST", "/v1/customers/acme/suspend", {"ticket": "T", "at": "9999-12-31T00:00:00+14:00"},
     "at"),
    ("POST", "/v1/customers/acme/reminders", {"ticket": "T", "sent_on": "2999-01-01"},
     "sent_on"),
    ("PATCH", "/v1/customers/acme/limits", {"ticket": "T"}, "default"),
    ("PUT", "/v1/customers/acme", {"ticket": "T", "customer": {
        "id": "other", "name": "x", "main_number": "1", "numbers": [],
        "install_address": {"street": "s", "house_number": "1", "postcode": "9030",
                            "municipality": "Gent", "country": "BE"}}}, "customer.id"),
])
def test_bad_values_are_422_naming_the_field(api: LiveApi, method: str, path: str,
                                             body: dict, field: str) -> None:
    before = api.audit_count()
    with api.client("ops") as client:
        found = problem(client.request(method, path, json=body), 422, "Invalid request")
    assert field in found["fields"]
    assert api.audit_count() == before


# wrong JSON types are refused, not coerced (true was limit 1, "3" was 3, "yes" was true)
@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("PATCH", "/v1/customers/acme/limits", {"ticket": "L1", "max_concurrent": True},
     "max_concurrent"),
    ("PATCH", "/v1/customers/acme/limits", {"ticket": "L1", "max_per_minute": "3"},
     "max_per_minute"),
    ("PATCH", "/v1/customers/acme/limits", {"ticket": "L1", "max_concurrent_risky": 2.0},
     "max_concurrent_risky"),
    ("POST", "/v1/customers/acme/unblocks", {"ticket": "S1", "prefix": "0905",
                                              "lasting_seconds": True}, "lasting_seconds"),
    ("POST", "/v1/customers/acme/unblocks", {"ticket": "S1", "prefix": "0905",
                                              "lasting_seconds": "3600"}, "lasting_seconds"),
    ("PUT", "/v1/customers/newco", {"ticket": "T", "accept_zone_violations": "yes",
                                     "customer": {
        "name": "x", "main_number": "+3292102000", "numbers": ["+3292102000"],
        "install_address": {"street": "s", "house_number": "1", "postcode": "9030",
                            "municipality": "Gent", "country": "BE"}}},
     "accept_zone_violations"),
])
def test_wrong_json_types_are_422_not_coerced(api: LiveApi, method: str, path: str,
                                              body: dict, field: str) -> None:
    before = api.audit_count()
    with api.client("ops") as client:
        found = problem(client.request(method, path, json=body), 422, "Invalid request")
    assert found["detail"].startswith(f"{field}: "), found
    assert found["fields"] == [field] and "errors" not in found
    assert api.audit_count() == before


def test_a_typo_in_a_key_is_named_first_as_an_unknown_key(api: LiveApi) -> None:
    with api.client("ops") as client:
        found = problem(client.post("/v1/customers/acme/suspend", json={"tickt": "T-1"}),
                        422, "Invalid request")
    assert found["detail"] == "tickt: unknown key (and 1 more: ticket)", found
    assert found["fields"] == ["tickt", "ticket"]


def test_malformed_requests_are_422_not_500(api: LiveApi) -> None:
    with api.client("ops") as client:
        for response in (
                client.post("/v1/customers/acme/suspend", json=["T"]),
                client.post("/v1/customers/acme/suspend", json={"ticket": "T", "tikket": 1}),
                client.patch("/v1/customers/acme/limits",
                             json={"ticket": "T", "max_concurrent": -1}),
                client.get("/v1/calls", params={"since": "yesterday"}),
                client.get("/v1/calls", params={"since": "2026-01-01T00:00:00"}),
                client.get("/v1/calls", params={"since": "0001-01-01T00:00:00+05:00"}),
                client.get("/v1/audit", params={"limit": 0}),
                client.get("/v1/check", params={"customer": "acme"}),
                client.get("/v1/check", params={"number": "112"}),
                client.get("/v1/check", params={"customer": "acme", "number": "112",
                                                "source_ip": "not-an-ip"})):
            body = problem(response, 422, "Invalid request")
            assert len(body["detail"]) < 300


def test_an_import_problem_lists_every_problem(api: LiveApi) -> None:
    customer = {"name": "New", "main_number": "+3292101234", "numbers": ["+3292101234"],
                "install_address": {"street": "s", "house_number": "1", "postcode": "9030",
                                    "municipality": "Gent", "country": "NL"}}
    with api.client("ops") as client:
        body = problem(client.put("/v1/customers/newco", json={"ticket": "T",
                                                               "customer": customer}),
                       422, "Import rejected")
    assert any("Belgium" in p or "BE" in p for p in body["problems"]), body["problems"]


def test_a_refused_change_is_409(api: LiveApi) -> None:
    with api.client("billing") as client:
        body = problem(client.post("/v1/customers/bakkerij/suspend", json={"ticket": "T"}),
                       409, "Refused by the store")
    assert body["detail"] == "customer 'bakkerij' is already suspended"


def test_unknown_routes_and_methods_are_problems(api: LiveApi) -> None:
    with api.client("ops") as client:
        problem(client.get("/v1/nothing-here"), 404, "Not found")
        problem(client.delete("/v1/customers/acme"), 405, "Method not allowed")
        # no 307 to the slashless path: its Location comes from Host, wrong behind a proxy
        for path in ("/v1/customers/", "/v1/customers/acme/", "/status/"):
            problem(client.get(path, follow_redirects=False), 404, "Not found")


def test_no_swagger_ui_nor_redoc_only_the_openapi_document(api: LiveApi) -> None:
    """Swagger UI / ReDoc load CDN JavaScript on the origin of the status page's token."""
    with api.client("read") as client:
        for path in ("/v1/docs", "/v1/redoc", "/docs", "/redoc", "/v1/docs/oauth2-redirect"):
            assert client.get(path).status_code == 404, path
        assert client.get("/v1/openapi.json").json()["info"]["title"] == "callpolicy API"


def test_the_database_gone_is_503_for_reads_and_writes(api: LiveApi) -> None:
    """The client learns the database is unavailable; the path and the CLI's options are
    for the server's log only."""
    api.db.rename(api.db.with_suffix(".moved"))
    with structlog.testing.capture_logs() as logs, api.client("ops") as client:
        read = problem(client.get("/v1/customers"), 503, "Database unavailable")
        write = problem(client.post("/v1/customers/acme/suspend", json={"ticket": "T"}),
                        503, "Database unavailable")
    for body in (read, write):
        assert body["detail"].startswith("the database is unavailable"), body
        for secret in (str(api.db), "cp.db", "--db", "CALLPOLICY_DB", "callpolicy "):
            assert secret not in str(body), (secret, body)
    logged = [e["error"] for e in logs if e["event"] == "api_database_unavailable"]
    assert len(logged) == 2 and all(str(api.db) in error for error in logged), logged
    assert not api.db.exists()  # a write never creates a fresh empty database


def test_the_daemon_down_is_503_for_status(api: LiveApi) -> None:
    with structlog.testing.capture_logs() as logs, api.client("read") as client:
        bodies = [problem(client.get("/v1/status"), 503, "Daemon unavailable")
                  for _ in range(3)]  # a monitor polling it
    assert {b["detail"] for b in bodies} == {"no daemon answering: connection refused"}
    [logged] = [e["error"] for e in logs if e["event"] == "api_daemon_unavailable"]  # once
    assert "http://127.0.0.1:" in logged and "/status" in logged  # the address: the log only


def test_a_bug_is_a_500_problem_logged_with_its_traceback(tmp_path: Path) -> None:
    broken = APIRouter()

    @broken.get("/v1/broken", dependencies=[Depends(require_scope("read"))])
    async def fails() -> None:
        raise RuntimeError("boom")

    with structlog.testing.capture_logs() as logs, \
            serve(tmp_path, routers=[broken]) as live, live.client("read") as client:
        body = problem(client.get("/v1/broken"), 500, "Internal error")
    assert "boom" not in body["detail"]
    assert [entry["event"] for entry in logs if entry["log_level"] == "error"] == [
        "api_internal_error"]


def test_status_page_polls_log_at_debug_errors_and_writes_at_info(api: LiveApi) -> None:
    with structlog.testing.capture_logs() as logs:
        with api.client("read") as client:
            assert client.get("/v1/overview").status_code == 200
            assert client.get("/v1/customers").status_code == 200
        with api.client(None) as anonymous:
            assert anonymous.get("/v1/overview").status_code == 401
        with api.client("ops") as client:
            assert client.post("/v1/customers/acme/suspend",
                               json={"ticket": "T-1"}).status_code == 200
    lines = [(e["log_level"], e["method"], e["path"], e["status"]) for e in logs
             if e["event"] == "api_request"]
    assert lines == [("debug", "GET", "/v1/overview", 200),
                     ("info", "GET", "/v1/customers", 200),
                     ("info", "GET", "/v1/overview", 401),
                     ("info", "POST", "/v1/customers/acme/suspend", 200)]


def test_a_body_over_the_bound_is_refused_before_it_is_read(api: LiveApi) -> None:
    host, port = api.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        # announces 64 MiB + 1, sends 2 bytes: answered at once, before the token is checked
        sock.sendall(b"POST /v1/customers/acme/suspend HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\n"
                     b"Content-Length: 67108865\r\n\r\n{}")
        head = ""
        while "}" not in head:  # the status line, headers and the problem's JSON
            chunk = sock.recv(65536).decode()
            assert chunk, head
            head += chunk
    assert head.startswith("HTTP/1.1 413 ")
    assert "application/problem+json" in head and "Request too large" in head


@pytest.mark.parametrize(("body", "detail"), [
    (b'{"ticket":', "the body is not valid JSON (expecting value at character 10)"),
    (b'{"ticket":"\xff\xfe"}', "the body is not valid JSON: not UTF-8 (byte 11)"),
    (b"[" * 100_000 + b"]" * 100_000, "the body is not valid JSON: nested too deeply"),
    # "the last one wins" would act on another request than a proxy or a log read
    (b'{"ticket": "T-1", "ticket": "T-2"}',
     "the body is not valid JSON: key 'ticket' given twice in one object"),
])
def test_a_body_that_is_not_json_says_so(api: LiveApi, body: bytes, detail: str) -> None:
    before = api.audit_count()
    with api.client("ops") as client:
        found = problem(client.post("/v1/customers/acme/suspend", content=body,
                                    headers={"Content-Type": "application/json"}),
                        422, "Invalid JSON body")
    assert (found["detail"], found["fields"]) == (detail, ["body"])
    assert api.audit_count() == before


def test_a_key_given_twice_inside_a_customer_changes_nothing(api: LiveApi) -> None:
    before = api.audit_count()
    body = (b'{"ticket": "T-1", "customer": {"id": "acme", "name": "ACME BV", '
            b'"name": "Forged BV"}}')
    with api.client("ops") as client:
        found = problem(client.put("/v1/customers/acme", content=body,
                                   headers={"Content-Type": "application/json"}),
                        422, "Invalid JSON body")
        assert "key 'name' given twice" in found["detail"]
        assert client.get("/v1/customers/acme").json()["name"] != "Forged BV"
    assert api.audit_count() == before


def test_a_form_or_an_untyped_body_is_415(api: LiveApi) -> None:
    before = api.audit_count()
    with api.client("ops") as client:
        for response in (client.post("/v1/customers/acme/suspend", data={"ticket": "T"}),
                         client.post("/v1/customers/acme/suspend", content=b'{"ticket": "T"}'),
                         client.patch("/v1/customers/acme/limits", content=b"{}",
                                      headers={"Content-Type": "text/plain"})):
            body = problem(response, 415, "Unsupported media type")
            assert "application/json" in body["detail"]
        # +json and a charset are JSON
        assert client.post("/v1/customers/acme/suspend", content=b'{"ticket": "T"}', headers={
            "Content-Type": "application/merge-patch+json; charset=utf-8"}).status_code == 200
    assert api.audit_count() == before + 1


def test_authentication_comes_before_any_body_check(api: LiveApi) -> None:
    """A client without a (valid) token learns nothing about validation."""
    bodies = ({"content": b'{"ticket":', "headers": {"Content-Type": "application/json"}},
              {"content": b'{"ticket":"\xff"}', "headers": {"Content-Type": "application/json"}},
              {"data": {"ticket": "T"}}, {"json": {"ticket": 1, "nope": 2}})
    with api.client(None) as anonymous, api.client("read") as reader, \
            api.client(None, Authorization="Bearer cpt_wrong") as wrong:
        for kwargs in bodies:
            problem(anonymous.post("/v1/customers/acme/suspend", **kwargs), 401,
                    "Unauthenticated")
            problem(wrong.post("/v1/customers/acme/suspend", **kwargs), 401,
                    "Unauthenticated")
            problem(reader.post("/v1/customers/acme/suspend", **kwargs), 403, "Forbidden")


def test_every_invalid_input_problem_has_fields(api: LiveApi) -> None:
    """One shape: `fields`, the names as the client sent them (README: Errors)."""
    with api.client("ops") as client:
        cases = {
            "max_concurrent": client.patch("/v1/customers/acme/limits",
                                           json={"ticket": "T", "max_concurrent": -1}),
            "since": client.get("/v1/calls", params={"since": "yesterday"}),
            "source_ip": client.get("/v1/check", params={"customer": "acme", "number": "112",
                                                         "source_ip": "x"}),
            "prefix": client.post("/v1/customers/acme/unblocks",
                                  json={"ticket": "T", "prefix": "abc"}),
            "Idempotency-Key": client.post("/v1/customers/acme/suspend", json={"ticket": "T"},
                                           headers={"Idempotency-Key": "a\tb"}),
        }
    for field, response in cases.items():
        assert response.status_code == 422, response.text
        body = response.json()
        assert "errors" not in body and field in body["fields"], body
        assert all(isinstance(name, str) for name in body["fields"])


def test_problems_name_api_routes_not_cli_commands(api: LiveApi) -> None:
    with api.client("ops") as client:
        assert client.post("/v1/customers/acme/suspend", json={
            "ticket": "T", "at": "2030-01-01T00:00:00+00:00"}).status_code == 200
        twice = problem(client.post("/v1/customers/acme/suspend", json={
            "ticket": "T", "at": "2030-02-01T00:00:00+00:00"}), 409, "Refused by the store")
        nothing = problem(client.patch("/v1/customers/acme/limits", json={"ticket": "T"}),
                          422, "Invalid request")
        customer = {"name": "ACME BV", "status": "suspended", "main_number": "+3292101234",
                    "numbers": ["+3292101234"], "install_address": {
                        "street": "Breebroekstraat", "house_number": "61", "postcode": "9030",
                        "municipality": "Gent", "country": "BE"}}
        put = client.put("/v1/customers/ops-test", json={"ticket": "T", "customer": {
            **customer, "numbers": ["+3292109999"], "main_number": "+3292109999",
            "status": "active"}})
        assert put.status_code == 200, put.text
        updated = client.put("/v1/customers/ops-test", json={"ticket": "T", "customer": {
            **customer, "numbers": ["+3292109999"], "main_number": "+3292109999"}})
    assert "POST /v1/customers/acme/reactivate cancels it" in twice["detail"], twice
    assert "or default (a list of limit names)" in nothing["detail"], nothing
    warnings = updated.json()["warnings"]
    assert any("use POST /v1/customers/ops-test/suspend" in w for w in warnings), warnings
    for text in (twice["detail"], nothing["detail"], *warnings):
        assert "`" not in text and "FIELD" not in text and "callpolicy " not in text, text


def test_head_is_get_without_the_body(api: LiveApi) -> None:
    """Uptime monitors probe with HEAD: the same status and headers as GET, no body, the
    same authentication (it was a 405)."""
    with api.client("read") as client:
        for path in ("/status", "/v1/customers/acme", "/v1/openapi.json"):
            got, head = client.get(path), client.head(path)
            assert (head.status_code, got.status_code) == (200, 200), path
            assert head.content == b""
            assert head.headers["content-type"] == got.headers["content-type"]
            assert head.headers["content-length"] == str(len(got.content))
        assert client.head("/v1/customers/nobody").status_code == 404
        csv = client.head("/v1/calls.csv")  # streamed: stops at the headers
        assert (csv.status_code, csv.content) == (200, b"")
        assert csv.headers["content-type"].startswith("text/csv")
        assert client.get("/v1/customers/acme").status_code == 200  # the server goes on
        assert client.head("/v1/customers/acme/suspend").status_code == 405  # POST only
    with api.client(None) as anonymous:
        assert anonymous.head("/v1/customers/acme").status_code == 401

