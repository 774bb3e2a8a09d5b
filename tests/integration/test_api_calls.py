"""Issue 14 acceptance, over the HTTP API with the real Asterisk, SIPp and the daemon: a
`billing` token suspends a customer, whose live national call is hung up within 2 s and whose
new call gets 403; the same token cannot unblock (403, nothing written); an `ops` token's
unblock shows in `callpolicy audit` with the token's name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from harness import Trunk
from policy_env import ACME_101, Live


@pytest.fixture(scope="module")
def api(live: Live) -> Iterator[tuple[str, dict[str, str]]]:
    """`callpolicy api serve` on the demo config's [api] (loopback), a token per scope."""
    tokens = {scope: live.cli("api", "token", "add", "--name", f"{scope}-system", "--scope",
                              scope).strip() for scope in ("billing", "ops")}
    port = tomllib.loads(live.config.read_text())["api"]["port"]
    log = live.state / "api.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLPOLICY_")}
    server = subprocess.Popen([sys.executable, "-m", "callpolicy.cli", "--config",
                               str(live.config), "api", "serve"],
                              stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/v1/openapi.json", timeout=1, trust_env=False)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield url, tokens
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(15)
    assert all(token not in log.read_text() for token in tokens.values())


def client(api: tuple[str, dict[str, str]], scope: str) -> httpx.Client:
    url, tokens = api
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens[scope]}"},
                        timeout=10, trust_env=False)


def audit_rows(live: Live) -> list[dict]:
    return [json.loads(line) for line in live.cli("audit", "--json", "--limit", "100000")
            .splitlines()]


def test_billing_suspends_over_the_api_and_the_live_call_is_hung_up(live: Live, api, call,
                                                                    trunk: Trunk) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool, client(api, "billing") as billing:
        national = pool.submit(call, ACME_101, "092101299", hold=20, timeout=40)
        trunk.wait_for_request("ACK", timeout=10)  # answered
        try:
            response = billing.post("/v1/customers/acme/suspend",
                                    headers={"Idempotency-Key": "inv-2026-031-suspend"},
                                    json={"ticket": "INV-2026-031", "reason": "unpaid"})
            suspended = time.time()
            assert response.status_code == 200, response.text
            result = national.result(timeout=40)
            ended = time.time()
            refused = call(ACME_101, "092101299", hold=1, timeout=20)
        finally:
            with client(api, "ops") as ops:
                ops.post("/v1/customers/acme/reactivate", json={"ticket": "T-BACK"})
    assert result.status == 200 and result.hung_up_by == "remote", result
    hung_up = result.remote_bye_at
    print(f"national call's BYE {hung_up - suspended:.2f} s after the API's answer "
          f"({ended - suspended:.2f} s with SIPp's end)")
    assert hung_up - suspended < 2.0
    assert refused.status == 403, refused
    assert "call_revoked" in live.log.read_text()


def test_billing_cannot_unblock_and_ops_unblock_is_audited_with_its_name(live: Live,
                                                                         api) -> None:
    body = {"ticket": "MAIL-4711", "prefix": "0905", "lasting_seconds": 3600}
    before = audit_rows(live)
    with client(api, "billing") as billing:
        forbidden = billing.post("/v1/customers/acme/unblocks", json=body)
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == "application/problem+json"
    assert forbidden.json()["title"] == "Forbidden"
    assert audit_rows(live) == before  # nothing written
    with client(api, "ops") as ops:
        done = ops.post("/v1/customers/acme/unblocks", json=body)
        assert done.status_code == 201, done.text
        ops.post("/v1/customers/acme/reblock", json={"ticket": "MAIL-4712", "prefix": "0905"})
    table = live.cli("audit", "acme", "--limit", "2")
    unblocked = [row for row in audit_rows(live) if row["action"] == "unblock.add"][-1]
    assert (unblocked["actor"], unblocked["ticket"]) == ("ops-system", "MAIL-4711")
    assert "ops-system" in table and "unblock.add" in table
