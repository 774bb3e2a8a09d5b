"""The status page's routes in the API app (no daemon running here: the integration test
test_status_page.py drives the page in Chromium with the daemon and Asterisk).

/status and /status.js are public and hold no data; /v1/overview needs a token (any scope:
billing and ops read too), gives the last refusals newest first as stored (markup included:
the page sets text, never HTML), and still answers when no daemon does."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import structlog
from cli_runner import run
from test_daemon import free_port

from callpolicy.api import create_app
from callpolicy.api.problems import DATABASE_UNAVAILABLE
from callpolicy.api.tokens import add_token
from callpolicy.live.records import CallRecord
from callpolicy.service.config import load_settings
from callpolicy.store import open_store

REPO = Path(__file__).resolve().parents[2]
MARKUP = '<img src=x onerror="alert(1)">0905'
T0 = datetime.now(UTC) - timedelta(minutes=5)


def record(uniqueid: str, dialled: str, action: str, minutes: int, **fields: str) -> CallRecord:
    return CallRecord(uniqueid, customer_id="acme", dialled=dialled, action=action,
                      started_at=T0 + timedelta(minutes=minutes), **fields)


@pytest.fixture
async def client(tmp_path: Path):
    config = tmp_path / "callpolicy.toml"
    config.write_text(f'[store]\npath = "cp.db"\n[metrics]\nlisten = "127.0.0.1:{free_port()}"\n')
    imported = run("customer", "import", str(REPO / "config" / "demo-customers.toml"),
                   "--by", "tests", "--ticket", "T-0", config=config)
    assert imported.returncode == 0, imported.stderr
    async with await open_store(tmp_path / "cp.db") as store:
        await store.record_calls([
            record("1.1", "0905123456", "block", 0, reason="premium", rule="art. 3.10"),
            record("1.2", "092101299", "allow", 1, reason="allowed"),
            record("1.3", MARKUP, "block", 2, reason="premium", rule="<b>rule</b>")])
    token_file = tmp_path / "api-tokens.toml"
    tokens = {scope: add_token(token_file, f"{scope}-bot", [scope])
              for scope in ("read", "billing", "ops")}
    app = create_app(load_settings(str(config)), token_file)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://api") as http:
        yield http, tokens


async def test_the_page_is_public_and_holds_no_data(client) -> None:
    client, _ = client
    page = await client.get("/status")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "acme" not in page.text and "0905" not in page.text
    script = await client.get("/status.js")
    assert script.status_code == 200 and "/v1/overview" in script.text
    assert "sessionStorage" in script.text and "Authorization" in script.text
    assert not re.search(r"\.innerHTML\s*=|insertAdjacentHTML|document\.write|outerHTML",
                         script.text), "the page must set text, never HTML"


async def test_the_overview_needs_a_token_and_every_scope_reads_it(client) -> None:
    client, tokens = client
    assert (await client.get("/v1/overview")).status_code == 401
    wrong = await client.get("/v1/overview", headers={"Authorization": "Bearer cpt_nope"})
    assert wrong.status_code == 401
    for scope, token in tokens.items():
        answer = await client.get("/v1/overview", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, (scope, answer.text)


async def test_the_overview_lists_refusals_newest_first_and_says_no_daemon_answers(
        client) -> None:
    client, tokens = client
    token = tokens["read"]
    overview = (await client.get("/v1/overview",
                                 headers={"Authorization": f"Bearer {token}"})).json()
    refused = overview["refusals"]
    assert refused["error"] is None
    assert [(r["dialled"], r["rule"]) for r in refused["calls"]] == [
        (MARKUP, "<b>rule</b>"), ("0905123456", "art. 3.10")]  # the allowed call is not one
    daemon = overview["daemon"]
    assert daemon["error"] == "no daemon answering: connection refused", daemon
    assert daemon["nodes"] == [] and daemon["alerts"] is None


async def test_a_database_gone_is_said_without_its_path(client, tmp_path: Path) -> None:
    client, tokens = client
    (tmp_path / "cp.db").rename(tmp_path / "moved.db")
    with structlog.testing.capture_logs() as logs:
        overview = (await client.get("/v1/overview", headers={
            "Authorization": f"Bearer {tokens['read']}"})).json()
    assert overview["refusals"] == {"error": DATABASE_UNAVAILABLE, "calls": []}
    [logged] = [e["error"] for e in logs if e["event"] == "api_database_unavailable"]
    assert str(tmp_path / "cp.db") in logged and str(tmp_path) not in str(overview)
