"""State alerts across a daemon restart (their ids kept in the outbox file's open_states):
a condition still holding is not raised again, one that cleared meanwhile is resolved."""

from __future__ import annotations

import json
from pathlib import Path

from callpolicy.alerts.aggregate import Condition
from callpolicy.alerts.alerter import Alerter
from callpolicy.alerts.config import parse_alerts
from callpolicy.alerts.sources import ami_condition
from callpolicy.service.metrics import Metrics

START = 1_800_000_000.0


class Daemon:
    """One run of the daemon's alerting: its clock, the AMI link's state, its outbox file."""

    def __init__(self, tmp_path: Path, now: float, ami_down: bool) -> None:
        (tmp_path / "hook.secret").write_text("s")
        settings = parse_alerts({"webhook": [{"name": "ops", "url": "http://127.0.0.1:9/",
                                              "secret_file": "hook.secret"}]}, tmp_path)
        self.now = now
        self.holding: list[Condition] = (
            ami_condition(True, False, "127.0.0.1:5038", now) if ami_down else [])
        self.alerter = Alerter(settings, "pbx-a", Metrics(), tmp_path / "o.sqlite",
                               lambda: self.now)
        self.alerter.conditions = lambda: (list(self.holding), {"ami_link_down"})

    async def rounds_until(self, until: float) -> None:
        while self.now < until:
            await self.alerter.round()
            self.now += 0.5
        await self.alerter.round()

    async def sent(self) -> list[dict]:
        """The payloads written to the outbox so far (none is delivered: port 9)."""
        assert self.alerter.outbox is not None
        rows = await self.alerter.outbox.pending("webhook:ops", now=self.now, limit=1000)
        return [json.loads(r.payload) for r in rows]


async def first_run(tmp_path: Path) -> str:
    """The AMI link goes down and stays down for 10 s: raised; then the daemon stops."""
    run = Daemon(tmp_path, START, ami_down=True)
    await run.alerter.open()
    try:
        await run.rounds_until(START + 10)
        [raised] = await run.sent()
        assert (raised["kind"], raised["status"]) == ("ami_link_down", "raised")
        return str(raised["id"])
    finally:
        await run.alerter.close()


async def test_a_condition_still_holding_after_a_restart_keeps_its_alert(tmp_path: Path) -> None:
    raised_id = await first_run(tmp_path)
    run = Daemon(tmp_path, START + 60, ami_down=True)  # restarted, AMI still down
    await run.alerter.open()
    try:
        await run.rounds_until(START + 80)
        sent = await run.sent()
        assert [(a["status"], a["id"]) for a in sent] == [("raised", raised_id)], sent
        [open_alert] = run.alerter.status(run.now)["open"]
        assert open_alert["kind"] == "ami_link_down"
        assert open_alert["since"].startswith("2027-01-15T08:00:00")  # the first run's
        run.holding.clear()  # AMI back
        await run.alerter.round()
        resolved = (await run.sent())[-1]
        assert resolved["status"] == "resolved" and resolved["id"] != raised_id
        assert resolved["details"]["raised_id"] == raised_id
        assert resolved["details"]["lasted_s"] == 80.0  # since the first run's raise
    finally:
        await run.alerter.close()
    again = Daemon(tmp_path, START + 100, ami_down=False)  # nothing is left open
    await again.alerter.open()
    try:
        await again.rounds_until(START + 110)
        assert [a["status"] for a in await again.sent()] == ["raised", "resolved"]
    finally:
        await again.alerter.close()


async def test_a_condition_cleared_while_the_daemon_was_down_is_resolved(
        tmp_path: Path) -> None:
    raised_id = await first_run(tmp_path)
    run = Daemon(tmp_path, START + 60, ami_down=False)  # restarted, AMI is up
    await run.alerter.open()
    try:
        await run.rounds_until(START + 62.5)
        assert len(await run.sent()) == 1  # the start-up grace: not resolved yet
        await run.rounds_until(START + 70)
        [_, resolved] = await run.sent()
        assert (resolved["kind"], resolved["status"]) == ("ami_link_down", "resolved")
        assert resolved["details"]["raised_id"] == raised_id
        assert resolved["first_seen"] == (await run.sent())[0]["first_seen"]
        assert run.alerter.status(run.now)["open"] == []
    finally:
        await run.alerter.close()


async def test_an_outbox_file_that_cannot_be_opened_still_alerts_then_keeps_the_state(
        tmp_path: Path) -> None:
    run = Daemon(tmp_path, START, ami_down=True)
    run.alerter.outbox_path = tmp_path / "not-yet" / "o.sqlite"  # its directory is missing
    metrics = run.alerter.metrics
    await run.alerter.open()
    try:
        await run.rounds_until(START + 5)
        assert run.alerter.outbox is None
        [open_alert] = run.alerter.status(run.now)["open"]  # logged, counted, in the status
        assert open_alert["kind"] == "ami_link_down"
        assert 'callpolicy_alerts_raised_total{kind="ami_link_down",status="raised"} 1.0' in (
            metrics.render().decode())
        (tmp_path / "not-yet").mkdir()  # the disk is back: the next round writes it all
        await run.rounds_until(START + 6)
        assert run.alerter.outbox is not None
        [stored] = await run.alerter.outbox.open_states()
        assert (stored.kind, stored.alert_id) == ("ami_link_down", (await run.sent())[0]["id"])
    finally:
        await run.alerter.close()
