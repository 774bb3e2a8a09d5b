"""`callpolicy status`: the status a daemon publishes (built from a real PolicyService), its
/status endpoint on the metrics listener, and how the CLI judges and shows it."""

from __future__ import annotations

import copy
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from callpolicy.policy import CallRequest
from callpolicy.service.config import AmiSettings, load_settings, load_zones
from callpolicy.service.daemon import PolicyService
from callpolicy.service.metrics import Metrics
from callpolicy.service.status import (
    STORE_PROBLEM_PUBLIC,
    StatusUnavailable,
    build_status,
    fetch,
    problems,
    public_status,
    render,
    status_url,
)
from callpolicy.store import Actor, Store
from callpolicy.store.import_file import read_import_file


@pytest.fixture
async def service(tmp_path: Path, repo: Path, demo_customers: Path
                  ) -> AsyncIterator[PolicyService]:
    plan = read_import_file(demo_customers, load_zones())
    store = await Store.open(tmp_path / "cp.db", create=True)
    await store.import_customers(plan.records, Actor("tests", "T-1", "test"))
    await store.close()
    settings = replace(load_settings(str(repo / "config" / "callpolicy.toml")),
                       db_path=tmp_path / "cp.db", ami=AmiSettings())  # no AMI user
    service = PolicyService(settings, None, None)
    await service.load()
    yield service
    if service.store is not None:
        await service.store.close()


def place(service: PolicyService, uniqueid: str, dialled: str = "092101299") -> None:
    request = CallRequest(dialled, datetime.now(UTC), endpoint="acme-101")
    decision = service.decide(request)
    service.on_decision(decision, "daemon", 0.0001, request, {"agi_uniqueid": uniqueid})


async def test_status_of_a_daemon_without_ami(service: PolicyService) -> None:
    for i in range(3):
        place(service, f"u{i}")
    place(service, "p1", "0905123456")
    status = json.loads(json.dumps(build_status(service)))  # JSON as /status serves it
    assert status["ami"]["state"] == "not_configured"
    guard = status["fraud_guard"]
    assert (guard["concurrency_enforced"], guard["reason"]) == (False, "ami_unconfigured")
    assert guard["per_minute_enforced"] is True
    assert status["live_calls"]["by_customer"] == {
        "acme": {"concurrent": None, "last_minute": 3, "risky": None}}
    assert status["live_calls"]["up"] is None  # not known without AMI
    assert status["decisions"]["total"] == 4
    assert status["decisions"]["by_reason"] == {"allowed": 3, "premium": 1}
    snapshot = status["snapshot"]
    assert snapshot["customers"] >= 2 and snapshot["audit_high_water"] >= 1
    assert 0 <= snapshot["age_s"] < 5
    assert status["healthy"] is False
    assert problems(status) == ["AMI link not configured: concurrent-call limits not enforced"]
    text = render(status)
    assert "NOT CONFIGURED" in text and "NOT ENFORCED" in text
    assert "acme" in text and "DEGRADED" in text
    node = service.settings.node  # SQLite: one node, its records carry its id too
    assert status["cluster"] == {"node": node, "link": None, "nodes": None}
    assert f"node         {node} (SQLite: one node)" in text
    assert {r.node for r in service.control.pending} == {node}


async def test_problems_healthy_and_stale(service: PolicyService) -> None:
    status = json.loads(json.dumps(build_status(service)))
    healthy = copy.deepcopy(status)
    healthy["ami"]["state"] = "connected"
    healthy["fraud_guard"].update(concurrency_enforced=True, reason=None, detail=None)
    assert problems(healthy) == []
    assert render(healthy).rstrip().endswith("health       OK")
    # Read 10 s later (the daemon stopped publishing: its loop is stuck or the store fails)
    later = time.time() + 10
    found = problems(healthy, later)
    assert any(p.startswith("snapshot not refreshed for 10 s") for p in found), found
    assert any(p.startswith("status not updated for 10 s") for p in found), found
    rebuilding = copy.deepcopy(healthy)
    rebuilding["fraud_guard"].update(concurrency_enforced=False, reason="ami_resync_pending",
                                     detail="AMI logged in, live-call table not yet rebuilt")
    assert problems(rebuilding) == ["concurrent-call limits not enforced: AMI logged in, "
                                    "live-call table not yet rebuilt"]



async def test_an_api_client_is_told_the_database_is_unusable_without_its_path(
        service: PolicyService) -> None:
    status = json.loads(json.dumps(build_status(service)))
    status["ami"]["state"] = "connected"
    status["fraud_guard"].update(concurrency_enforced=True, reason=None, detail=None)
    path = "/var/lib/callpolicy/callpolicy.db"
    status["snapshot"].update(store_ok=False, store_problem=f"cannot use database {path}: "
                              "disk I/O error", store_problem_since=status["published_at"])
    assert any(path in p for p in problems(status))  # the host's `callpolicy status`
    public = public_status(status)
    assert public["snapshot"]["store_problem"] == STORE_PROBLEM_PUBLIC
    assert path not in json.dumps(public) and path not in " ".join(problems(public))
    assert [p.split(":")[0] for p in problems(public)] == [
        p.split(":")[0] for p in problems(status)]  # the same problems, said without it
    assert public_status(json.loads(json.dumps(build_status(service))))["snapshot"][
        "store_problem"] is None  # a usable database: nothing to replace
    status["alerts"] = {"outbox": "/var/lib/callpolicy/callpolicy.db.alerts-outbox.sqlite",
                        "open": []}
    assert public_status(status)["alerts"] == {
        "outbox": "callpolicy.db.alerts-outbox.sqlite", "open": []}  # its name, not its path


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    yield m
    m.stop()


def test_status_endpoint_on_the_metrics_listener(metrics: Metrics) -> None:
    port = metrics.start("127.0.0.1", 0)
    url = status_url("127.0.0.1", port)
    with pytest.raises(urllib.error.HTTPError) as starting:
        urllib.request.urlopen(url, timeout=5)
    assert starting.value.code == 503
    with pytest.raises(StatusUnavailable, match="still starting"):
        fetch(url)
    published = {"ami": {"state": "down"}, "n": 1}
    metrics.publish_status(published)
    published["n"] = 2  # the published document is a copy: later changes do not leak
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.headers["Content-Type"] == "application/json"
        assert json.loads(response.read()) == {"ami": {"state": "down"}, "n": 1}
    with pytest.raises(StatusUnavailable, match="did not answer a callpolicy status"):
        fetch(url)  # JSON, but not a whole status
    metrics.set_fraud_guard_degraded(True)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert "callpolicy_fraud_guard_degraded 1.0" in response.read().decode()


def test_fetch_errors_are_one_clear_line(metrics: Metrics) -> None:
    port = metrics.start("127.0.0.1", 0)
    metrics.stop()
    url = status_url("127.0.0.1", port)
    with pytest.raises(StatusUnavailable) as refused:
        fetch(url)
    assert str(refused.value) == f"no daemon answering on {url}: connection refused"
    assert status_url("0.0.0.0", 9464) == "http://127.0.0.1:9464/status"
    assert status_url("::", 9464) == "http://[::1]:9464/status"


async def test_the_alerts_section(service: PolicyService) -> None:
    place(service, "e1", "112")  # the daemon's per-call hook queues it
    place(service, "n1")  # an ordinary call: nothing
    await service.alerts.open()
    try:
        await service.alerts.round()
        status = json.loads(json.dumps(build_status(service)))
    finally:
        await service.alerts.close()
    alerts = status["alerts"]
    assert [(a["kind"], a["key"], a["count"]) for a in alerts["open"]] == [
        ("emergency_call", "acme", 1)]
    assert (alerts["outbox_pending"], alerts["channels"]) == (0, {})  # no channel: only logged
    assert "alerts       1 open or in the last hour, 0 waiting in the outbox" in render(status)
