"""Each family of the HTTP API over real HTTP and a real SQLite store: what it changes is what
the CLI's operations change, audited with the token's name."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

from api_server import LiveApi, daemon_status, serve

from callpolicy.live.records import CSV_COLUMNS, CallRecord
from callpolicy.service.metrics import Metrics
from callpolicy.store import open_store

NEWCO = {"name": "NewCo BV", "main_number": "09 210 20 00", "numbers": ["+3292102000"],
         "site_networks": ["192.0.2.0/24"],
         "install_address": {"street": "Breebroekstraat", "house_number": "1",
                             "postcode": "9030", "municipality": "Gent", "country": "BE"},
         "endpoint": [{"name": "newco-1", "number": "+3292102000"}]}


def test_customers_create_update_unchanged_show_list(api: LiveApi) -> None:
    with api.client("ops") as client:
        created = client.put("/v1/customers/newco", json={"ticket": "PROV-1",
                                                          "customer": NEWCO})
        again = client.put("/v1/customers/newco", json={"ticket": "PROV-1", "customer": NEWCO})
        renamed = client.put("/v1/customers/newco", json={
            "ticket": "PROV-2", "customer": {**NEWCO, "name": "NewCo NV", "id": "newco"}})
        shown = client.get("/v1/customers/newco").json()
        listed = client.get("/v1/customers").json()
        audit = client.get("/v1/audit", params={"customer": "newco"}).json()
    assert (created.status_code, created.json()["result"]) == (200, "created")
    assert again.json()["result"] == "unchanged"
    assert renamed.json()["result"] == "updated"
    assert shown["name"] == "NewCo NV" and shown["main_number"] == "+3292102000"
    assert shown["endpoints"] == [{"name": "newco-1", "number": "+3292102000"}]
    assert [row["id"] for row in listed] == ["acme", "bakkerij", "newco"]
    assert [(a["actor"], a["ticket"]) for a in audit] == [("ops-bot", "PROV-1"),
                                                          ("ops-bot", "PROV-2")]


def test_a_number_outside_the_installation_zone_says_how_to_accept_it(api: LiveApi) -> None:
    brussels = {**NEWCO, "install_address": {**NEWCO["install_address"], "postcode": "1000",
                                             "municipality": "Brussel"}}
    with api.client("ops") as client:
        refused = client.put("/v1/customers/newco", json={"ticket": "P", "customer": brussels})
        accepted = client.put("/v1/customers/newco", json={
            "ticket": "P", "customer": brussels, "accept_zone_violations": True})
    assert refused.status_code == 422
    [problem] = refused.json()["problems"]
    assert "is in zone 09, but installation postcode 1000 is in zone 02" in problem
    assert problem.endswith('"accept_zone_violations": true imports it with a warning')
    assert "--accept" not in problem  # the API's key, not the CLI's option
    assert accepted.json()["result"] == "created"


def test_suspend_schedule_reactivate_remind_pay(api: LiveApi) -> None:
    at = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    with api.client("billing") as client:
        scheduled = client.post("/v1/customers/acme/suspend", json={"ticket": "B-1", "at": at})
        assert scheduled.status_code == 200, scheduled.text
        assert scheduled.json()["suspended"] is False
        assert client.get("/v1/customers/acme").json()["scheduled_suspension"] is not None
        settled = client.post("/v1/customers/acme/reactivate", json={"ticket": "B-2"}).json()
        assert settled["reactivated"] is False and settled["cancelled_schedule"] is not None
        reminded = client.post("/v1/customers/acme/reminders",
                               json={"ticket": "INV-9", "sent_on": "2020-01-01"})
        assert reminded.status_code == 201
        assert reminded.json()["suspended_now"] is True  # 15 days after 2020-01-01: past
        assert client.get("/v1/customers/acme").json()["status"] == "suspended"
        paid = client.post("/v1/customers/acme/payment", json={"ticket": "PAY-1"}).json()
        assert paid == {"customer": "acme", "reactivated": True, "cancelled_schedule": None,
                        "closed_reminders": 1}
        actions = [a["action"] for a in client.get(
            "/v1/audit", params={"customer": "acme", "limit": 7}).json()]
    assert actions == ["customer.suspend_scheduled", "customer.schedule_cancelled",
                       "customer.remind", "customer.suspend_scheduled", "customer.suspend",
                       "customer.paid", "customer.reactivate"], actions


def test_unblock_check_reblock_and_list(api: LiveApi) -> None:
    with api.client("ops") as client:
        def decide() -> dict:
            found = client.get("/v1/check", params={"customer": "acme",
                                                    "number": ["0905123456", "112"]}).json()
            return {d["number"]: (d["action"], d["reason"]) for d in found["decisions"]}

        assert decide() == {"0905123456": ("block", "premium"), "112": ("allow", "emergency")}
        done = client.post("/v1/customers/acme/unblocks",
                           json={"ticket": "MAIL-4711", "prefix": "0905",
                                 "lasting_seconds": 7 * 86400})
        assert done.status_code == 201
        assert done.json()["value"] == "+32905"
        assert decide()["0905123456"] == ("allow", "unblocked")
        rule = client.get("/v1/check", params={"customer": "acme", "number": "0905123456"}
                          ).json()["decisions"][0]["rule"]
        assert "MAIL-4711" in rule
        assert [u["id"] for u in client.get("/v1/unblocks").json()] == [done.json()["id"]]
        reblocked = client.post("/v1/customers/acme/reblock",
                                json={"ticket": "MAIL-4712", "prefix": "+32905"}).json()
        assert reblocked["revoked"] == [done.json()["id"]]
        assert decide()["0905123456"] == ("block", "premium")
        assert client.get("/v1/unblocks").json() == []
        assert len(client.get("/v1/unblocks", params={"all": True}).json()) == 1
        unknown = client.get("/v1/check", params={"customer": "ghost", "number": "112"}).json()
    assert unknown["warnings"] and unknown["decisions"][0]["action"] == "allow"


def test_limits_show_set_and_back_to_default(api: LiveApi) -> None:
    with api.client("ops") as client:
        assert client.get("/v1/customers/acme/limits").json()["source"]["max_concurrent"] == \
            "default"
        done = client.patch("/v1/customers/acme/limits",
                            json={"ticket": "T-9", "max_concurrent": 2}).json()
        assert (done["changed"], done["effective"]["max_concurrent"]) == (True, 2)
        same = client.patch("/v1/customers/acme/limits",
                            json={"ticket": "T-9", "max_concurrent": 2}).json()
        assert same["changed"] is False
        back = client.patch("/v1/customers/acme/limits",
                            json={"ticket": "T-10", "default": ["max_concurrent"]}).json()
    assert back["source"]["max_concurrent"] == "default"


def records(db: Path) -> list[CallRecord]:
    t0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    calls = [CallRecord("c1", customer_id="acme", dialled="092101299", action="allow",
                        started_at=t0, answered_at=t0, ended_at=t0 + timedelta(seconds=61)),
             CallRecord("c2", customer_id="bakkerij", dialled="=HYPERLINK(\"x\")",
                        action="block", started_at=t0 + timedelta(hours=1)),
             CallRecord("c3", customer_id="acme", dialled="112", destination="112",
                        category="emergency", action="allow",
                        started_at=t0 + timedelta(days=2))]

    async def write() -> None:
        async with await open_store(db) as store:
            await store.record_calls(calls)

    asyncio.run(write())
    return calls


def test_calls_json_filters_and_csv_export(api: LiveApi) -> None:
    records(api.db)
    with api.client("read") as client:
        everything = client.get("/v1/calls").json()
        acme = client.get("/v1/calls", params={"customer": "acme"}).json()
        window = client.get("/v1/calls", params={"since": "2026-11-01T09:30:00+01:00",
                                                 "until": "2026-11-02T00:00:00Z"}).json()
        exported = client.get("/v1/calls.csv", params={"customer": "acme"})
        unknown = client.get("/v1/calls.csv", params={"customer": "ghost"})
        all_csv = client.get("/v1/calls.csv").text
    assert [c["uniqueid"] for c in everything] == ["c1", "c2", "c3"]
    assert [c["uniqueid"] for c in acme] == ["c1", "c3"]
    assert [c["uniqueid"] for c in window] == ["c1", "c2"]  # 09:30+01:00 is 08:30Z
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.text)))
    assert rows[0] == list(CSV_COLUMNS)
    assert [(r[0], r[CSV_COLUMNS.index("billable_seconds")]) for r in rows[1:]] == [
        ("c1", "61"), ("c3", "0")]  # 112 is free
    assert unknown.status_code == 404
    assert "'=HYPERLINK" in all_csv  # a formula is neutralised for spreadsheets


def test_status_is_the_running_daemons(tmp_path: Path) -> None:
    metrics = Metrics()
    port = metrics.start("127.0.0.1", 0)
    try:
        with serve(tmp_path, metrics_port=port) as live, live.client("read") as client:
            starting = client.get("/v1/status")
            status = daemon_status()
            metrics.publish_status(status)
            answered = client.get("/v1/status")
    finally:
        metrics.stop()
    assert starting.status_code == 503 and "still starting" in starting.json()["detail"]
    assert answered.status_code == 200
    assert answered.json() == {**status, "healthy": True, "problems": []}
