"""The outbox (persistence, bound), delivery to a real local webhook receiver and SMTP sink
with back-off, and the Alerter from decisions to deliveries, across a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from alert_receivers import SmtpSink, WebhookReceiver, free_port

from callpolicy.alerts.alerter import Alerter
from callpolicy.alerts.config import parse_alerts
from callpolicy.alerts.delivery import Delivery
from callpolicy.alerts.outbox import NewRow, Outbox
from callpolicy.alerts.senders import DeliveryError, EmailSender, WebhookSender
from callpolicy.policy import (
    Action,
    CallerId,
    CallRequest,
    Category,
    Decision,
    Event,
    Location,
    Presentation,
    Reason,
)
from callpolicy.service.metrics import Metrics

SECRET = b"test-secret"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    hook = WebhookReceiver().start()
    yield hook
    hook.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
async def closing() -> AsyncIterator[list]:
    """Outboxes and Alerters a test opened: closed even when it fails (an open aiosqlite
    connection's thread would keep the test process from exiting)."""
    opened: list = []
    yield opened
    for thing in opened:
        with contextlib.suppress(Exception):
            await thing.close()


def row(n: int, channel: str = "webhook:ops", kind: str = "fraud_limit") -> NewRow:
    body = json.dumps({"id": f"a{n}", "kind": kind, "status": "raised", "summary": "s",
                       "severity": "critical", "node": "n", "count": 1, "first_seen": "t",
                       "last_seen": "t"}).encode()
    return NewRow(f"a{n}", kind, channel, body)


async def test_the_outbox_keeps_its_rows_across_a_restart(tmp_path: Path, closing) -> None:
    path = tmp_path / "outbox.sqlite"
    box = await Outbox.open(path, max_rows=100)
    closing.append(box)
    await box.add([row(1), row(2), row(3, "email:m")], now=10.0)
    [first, _] = await box.pending("webhook:ops", now=100.0)
    await box.delivered(first.id, now=11.0)
    await box.close()
    box = await Outbox.open(path, max_rows=100)  # the daemon restarted
    assert [r.alert_id for r in await box.pending("webhook:ops", now=100.0)] == ["a2"]
    assert [r.alert_id for r in await box.pending("email:m", now=100.0)] == ["a3"]
    assert await box.pending_count() == 2
    assert await box.expire(now=100.0, give_up_after=1000.0) == []
    assert await box.expire(now=2000.0, give_up_after=1000.0) == [
        ("fraud_limit", "webhook:ops"), ("fraud_limit", "email:m")]
    assert await box.pending_count() == 0
    assert await box.purge(now=2000.0 + 7 * 86400 + 1) == 3  # done rows go after a week
    await box.close()


async def test_the_outbox_is_bounded_dropping_delivered_rows_first(tmp_path: Path, closing) -> None:
    box = await Outbox.open(tmp_path / "o.sqlite", max_rows=3)
    closing.append(box)
    await box.add([row(1), row(2)], now=0.0)
    [one, _] = await box.pending("webhook:ops", now=100.0)
    await box.delivered(one.id, now=1.0)
    assert await box.add([row(3)], now=2.0) == []
    assert await box.add([row(4)], now=3.0) == []  # the delivered a1 made room
    assert [r.alert_id for r in await box.pending("webhook:ops", now=100.0)] == ["a2", "a3", "a4"]
    assert await box.add([row(5, kind="spoofing_attempt")], now=4.0) == ["fraud_limit"]
    assert [r.alert_id for r in await box.pending("webhook:ops", now=100.0)] == ["a3", "a4", "a5"]
    await box.close()


async def test_an_alert_whose_content_is_refused_waits_alone_the_channel_goes_on(
        tmp_path: Path, receiver: WebhookReceiver, closing) -> None:
    """A 400 refuses that alert, not the channel: the later alerts are delivered (no
    head-of-line blocking), the refused one is retried on its own back-off, not dropped; a
    503 is the channel's and holds everything back."""
    settings = webhook_settings(receiver.url, tmp_path)
    box = await Outbox.open(tmp_path / "o.sqlite", 100)
    closing.append(box)
    now = [1000.0]
    sender = WebhookSender(settings.channels["webhook:ops"], SECRET)
    delivery = Delivery(box, {"webhook:ops": sender}, Metrics(), retry_max=60.0,
                        clock=lambda: now[0])
    await box.add([row(1), row(2), row(3)], now=now[0])
    receiver.status_for = {"a1": 400}
    assert await delivery.deliver_pending("webhook:ops") is None
    assert receiver.attempts == ["a1", "a2", "a3"]
    assert [d.payload["id"] for d in receiver.deliveries] == ["a2", "a3"]
    assert not delivery.channels["webhook:ops"].as_status()["failing"]
    assert [r.alert_id for r in await box.pending("webhook:ops", now=now[0] + 0.5)] == []
    [waiting] = await box.pending("webhook:ops", now=now[0] + 1.0)  # its own back-off: 1 s
    assert waiting.alert_id == "a1" and waiting.attempts == 1
    receiver.status_for = {}
    now[0] += 1.0
    assert await delivery.deliver_pending("webhook:ops") is None
    assert [d.payload["id"] for d in receiver.deliveries] == ["a2", "a3", "a1"]
    await box.add([row(4), row(5)], now=now[0])
    receiver.status = 503  # the channel's failure: nothing after it is tried
    assert await delivery.deliver_pending("webhook:ops") == 1.0
    assert receiver.attempts[-1] == "a4"  # a5 not tried while the channel fails
    assert await box.pending_count() == 2
    await sender.close()
    await box.close()


def webhook_settings(url: str, tmp_path: Path, **route: object):
    (tmp_path / "hook.secret").write_text(SECRET.decode())
    table: dict = {"webhook": [{"name": "ops", "url": url, "secret_file": "hook.secret",
                                "timeout": 2}], "retry_max": 0.2}
    if route:
        table["route"] = {"fraud_limit": route}
    return parse_alerts(table, tmp_path)


async def test_a_webhook_delivery_is_signed_and_a_refused_one_retried_with_back_off(
        tmp_path: Path, receiver: WebhookReceiver, closing) -> None:
    settings = webhook_settings(receiver.url, tmp_path)
    box = await Outbox.open(tmp_path / "o.sqlite", 100)
    closing.append(box)
    metrics = Metrics()
    sender = WebhookSender(settings.channels["webhook:ops"], SECRET)
    delivery = Delivery(box, {"webhook:ops": sender}, metrics, retry_max=60.0)
    await box.add([row(1), row(2)], now=0.0)
    receiver.status = 503
    assert await delivery.deliver_pending("webhook:ops") == 1.0
    assert await delivery.deliver_pending("webhook:ops") == 2.0  # doubled
    state = delivery.channels["webhook:ops"].as_status()
    assert state["last_error"] == "HTTP 503 Service Unavailable" and state["failing"]
    receiver.status = 200
    assert await delivery.deliver_pending("webhook:ops") is None
    assert [d.payload["id"] for d in receiver.deliveries] == ["a1", "a2"]  # in order
    assert all(d.signed_with(SECRET) and not d.signed_with(b"other")
               for d in receiver.deliveries)
    assert receiver.deliveries[0].headers["X-Callpolicy-Alert-Id"] == "a1"
    assert not delivery.channels["webhook:ops"].as_status()["failing"]
    assert await box.pending_count() == 0
    text = metrics.render().decode()
    assert 'callpolicy_alerts_failed_total{channel="webhook:ops",kind="fraud_limit"} 2.0' in text
    assert ('callpolicy_alerts_delivered_total{channel="webhook:ops",kind="fraud_limit"} 2.0'
            in text)
    await sender.close()
    await box.close()


async def test_a_closed_port_and_an_smtp_sink(tmp_path: Path, smtp: SmtpSink) -> None:
    settings = webhook_settings(f"http://127.0.0.1:{free_port()}/", tmp_path)
    sender = WebhookSender(settings.channels["webhook:ops"], SECRET)
    with pytest.raises(DeliveryError, match="ConnectError"):
        await sender.send("a1", row(1).payload)
    await sender.close()
    mail = parse_alerts({"email": [{"name": "m", "host": "127.0.0.1", "port": smtp.port,
                                    "from": "cp@pbx.example", "to": ["oncall@example.com"]}]},
                        tmp_path).channels["email:m"]
    await EmailSender(mail).send("a1", row(1, kind="emergency_call").payload)
    [message] = smtp.messages
    assert message["Subject"] == "[callpolicy] emergency_call raised: s"
    assert message["To"] == "oncall@example.com"
    assert '"kind": "emergency_call"' in message.get_payload(decode=True).decode()
    closed = parse_alerts({"email": [{"name": "m", "host": "127.0.0.1", "port": free_port(),
                                      "from": "cp@pbx.example", "to": ["o@example.com"]}]},
                          tmp_path).channels["email:m"]
    with pytest.raises(DeliveryError, match=r"SMTP 127.0.0.1:.*ConnectionRefused"):
        await EmailSender(closed).send("a1", row(1).payload)


def refused(n: int) -> tuple[Decision, CallRequest, dict[str, str]]:
    decision = Decision(
        number=f"0882{n:06d}", destination=f"+882{n:06d}", action=Action.BLOCK,
        reason=Reason.FRAUD_LIMIT, category=Category.NON_EU, customer_id="acme",
        rule="fraud guard: max_concurrent 2 reached (2 live) for customer acme",
        caller_id=CallerId("+3292101234", Presentation.ALLOWED, "+3292101234"),
        events=(Event("fraud_limit", {"limit": "max_concurrent", "value": "2", "max": "2",
                                      "destination": f"+882{n:06d}"}),))
    return decision, CallRequest(dialled=decision.number, now=None, endpoint="acme-101"), {
        "agi_uniqueid": f"1.{n}"}


def emergency() -> tuple[Decision, CallRequest, dict[str, str]]:
    decision = Decision(
        number="112", destination="112", action=Action.ALLOW, reason=Reason.EMERGENCY,
        category=Category.EMERGENCY, customer_id="acme", rule="112: always allowed",
        caller_id=CallerId("+3292101234", Presentation.ALLOWED, "+3292101234"),
        emergency=True, location=Location.NOMADIC,
        events=(Event("nomadic_emergency", {"source_ip": "198.51.100.7"}),))
    return decision, CallRequest(dialled="112", now=None, source_ip="198.51.100.7"), {
        "agi_uniqueid": "9.1"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_500_refusals_are_one_delivery_and_a_restart_loses_nothing(
        tmp_path: Path, receiver: WebhookReceiver, closing) -> None:
    settings = webhook_settings(receiver.url, tmp_path, window=10)
    clock, metrics, path = Clock(), Metrics(), tmp_path / "outbox.sqlite"
    alerter = Alerter(settings, "pbx-a", metrics, path, clock)
    closing.append(alerter)
    await alerter.open()
    receiver.status = 500  # the receiver is down: nothing gets through before the restart
    for n in range(500):
        alerter.note(*refused(n))
    alerter.note(*emergency())
    await alerter.round()
    assert alerter.pending == 1  # the emergency call, at once; the refusals wait 10 s
    clock.now += 10
    await alerter.round()
    assert alerter.pending == 2
    assert await alerter.delivery.deliver_pending("webhook:ops") == 0.2  # retry_max
    status = alerter.status(clock.now)
    assert status["outbox_pending"] == 2
    assert status["channels"]["webhook:ops"]["last_error"] == "HTTP 500 Internal Server Error"
    assert {(a["kind"], a["count"]) for a in status["open"]} == {("fraud_limit", 500),
                                                                 ("emergency_call", 1)}
    await alerter.close()

    receiver.status = 200
    again = Alerter(settings, "pbx-a", Metrics(), path, clock)  # the daemon restarted
    closing.append(again)
    await again.open()
    assert again.pending == 2
    assert await again.delivery.deliver_pending("webhook:ops") is None
    await again.close()
    [fraud] = receiver.of_kind("fraud_limit")
    payload = fraud.payload
    assert (payload["version"], payload["count"], payload["node"], payload["window_s"]) == (
        1, 500, "pbx-a", 10.0)
    assert payload["details"]["customer"] == "acme" and payload["details"]["limit"] == (
        "max_concurrent")
    assert len(payload["details"]["numbers"]) == 10 and fraud.signed_with(SECRET)
    [urgent] = receiver.of_kind("emergency_call")
    assert urgent.payload["details"]["location"] == "nomadic"
    assert urgent.payload["severity"] == "critical"


async def test_open_windows_go_to_the_outbox_at_shutdown(tmp_path: Path, closing) -> None:
    settings = webhook_settings("http://127.0.0.1:9/", tmp_path)
    path = tmp_path / "o.sqlite"
    alerter = Alerter(settings, "n", Metrics(), path, Clock())
    closing.append(alerter)
    await alerter.open()
    alerter.note(*refused(1))
    alerter.note(*refused(2))
    await alerter.close()  # before the 60 s window ended
    box = await Outbox.open(path, 100)
    closing.append(box)
    [stored] = await box.pending("webhook:ops", now=100.0)
    assert json.loads(stored.payload)["count"] == 2
    await box.close()


async def test_without_channels_alerts_are_logged_and_counted(tmp_path: Path, closing) -> None:
    metrics = Metrics()
    alerter = Alerter(parse_alerts({}, tmp_path), "n", metrics, tmp_path / "o.sqlite", Clock())
    closing.append(alerter)
    await alerter.open()
    alerter.note(*emergency())
    await alerter.round()
    assert alerter.pending == 0
    assert 'callpolicy_alerts_raised_total{kind="emergency_call",status="raised"} 1.0' in (
        metrics.render().decode())
    await alerter.close()


async def first_delivery(receiver: WebhookReceiver, within: float = 2.5) -> None:
    """Until the receiver has a delivery (the event loop keeps running the Alerter)."""
    for _ in range(int(within / 0.05)):
        if receiver.deliveries:
            return
        await asyncio.sleep(0.05)


async def test_the_run_task_delivers_within_a_second(tmp_path: Path,
                                                     receiver: WebhookReceiver) -> None:
    alerter = Alerter(webhook_settings(receiver.url, tmp_path), "n", Metrics(),
                      tmp_path / "o.sqlite")
    task = asyncio.create_task(alerter.run())
    try:
        await asyncio.sleep(0.3)
        alerter.note(*emergency())
        await first_delivery(receiver)
        assert [d.payload["kind"] for d in receiver.deliveries] == ["emergency_call"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_sighups_in_a_row_replace_the_delivery_and_the_run_still_stops(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    """Two reconfigures in one loop iteration, one more while the first replacement waits,
    then the stop: the run ends (a replaced delivery task that swallowed its own cancel kept
    the daemon's shutdown waiting for ever) and later alerts still go out."""
    settings = webhook_settings(receiver.url, tmp_path)
    alerter = Alerter(settings, "n", Metrics(), tmp_path / "o.sqlite")
    task = asyncio.create_task(alerter.run())
    try:
        await asyncio.sleep(0.3)
        alerter.reconfigure(settings, alerter.outbox_path)
        alerter.reconfigure(settings, alerter.outbox_path)
        await asyncio.sleep(0)
        alerter.reconfigure(settings, alerter.outbox_path)
        alerter.note(*emergency())
        await first_delivery(receiver)
        assert [d.payload["kind"] for d in receiver.deliveries] == ["emergency_call"]
        alerter.reconfigure(settings, alerter.outbox_path)
    finally:
        task.cancel()
        stopped, _ = await asyncio.wait({task}, timeout=5)
    assert stopped, "the alerter's run did not stop after its delivery task was replaced"
    assert alerter._delivering is None
    alerter.reconfigure(settings, alerter.outbox_path)  # a SIGHUP during shutdown: nothing
    assert alerter._delivering is None and not alerter._retired


async def test_waiting_for_a_cancelled_task_does_not_swallow_our_own_cancel() -> None:
    """`_cancelled` (the alerter's way to stop its delivery task) must stay cancellable
    while it waits: `await task` under suppress(CancelledError) took the caller's cancel as
    the task's and returned, so a shutdown went on waiting for a delivery that never ended."""
    from callpolicy.alerts.alerter import _cancelled

    gate = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await gate.wait()
            raise

    inner = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    outer = asyncio.create_task(_cancelled(inner))
    await asyncio.sleep(0.01)  # outer waits for inner to end
    outer.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert inner.cancelled()
