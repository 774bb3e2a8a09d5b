"""Alerts from a real `callpolicy serve`: a 112 call over FastAGI reaches a local webhook
receiver and SMTP sink, /status has the `alerts` section, a missing secret stops the start."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from agi_peer import env_block, parse_mset
from alert_receivers import SmtpSink, WebhookReceiver, free_port, wait_until
from test_daemon import REPO, cli, start, wait_port


def ask(port: int, dialled: str) -> dict[str, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        sock.sendall(env_block(dialled))
        line = sock.makefile("rb").readline().decode()
        sock.sendall(b"200 result=0\n")
    return parse_mset(line)


@pytest.fixture
def receivers() -> Iterator[tuple[WebhookReceiver, SmtpSink]]:
    hook, sink = WebhookReceiver().start(), SmtpSink().start()
    yield hook, sink
    hook.stop()
    sink.stop()


def configure(tmp_path: Path, hook: WebhookReceiver, sink: SmtpSink) -> tuple[Path, int]:
    port = free_port()
    text = (REPO / "config" / "callpolicy.toml").read_text()
    text = text.replace('path = "/var/lib/callpolicy/callpolicy.db"',
                        f'path = "{tmp_path / "cp.db"}"')
    text = text.replace('listen = "127.0.0.1:4573"', f'listen = "127.0.0.1:{port}"')
    text = text.replace('listen = "127.0.0.1:9464"', 'listen = "127.0.0.1:0"')
    (tmp_path / "hook.secret").write_text("daemon-test-secret\n")
    text += f"""
[[alerts.webhook]]
name = "ops"
url = "{hook.url}"
secret_file = "hook.secret"
[[alerts.email]]
name = "oncall"
host = "127.0.0.1"
port = {sink.port}
from = "callpolicy@pbx.example"
to = ["oncall@example.com"]
"""
    config = tmp_path / "callpolicy.toml"
    config.write_text(text)
    result = cli("customer", "import", str(REPO / "config" / "demo-customers.toml"),
                 config=config)
    assert result.returncode == 0, result.stderr
    return config, port


def status_of(log: Path) -> dict:
    line = next(json.loads(x) for x in log.read_text().splitlines() if '"event": "metrics"' in x)
    with urllib.request.urlopen(line["status"], timeout=3) as response:
        return json.loads(response.read())


def test_a_112_call_is_alerted_by_webhook_and_mail_and_shown_in_status(
        tmp_path: Path, receivers) -> None:
    hook, sink = receivers
    config, port = configure(tmp_path, hook, sink)
    log = tmp_path / "serve.log"
    daemon = start(["serve"], config, log)
    try:
        wait_port(port)
        asked = time.monotonic()
        assert ask(port, "112")["CP_ACTION"] == "allow"
        wait_until(lambda: hook.of_kind("emergency_call") and sink.messages, 5,
                   "no emergency alert by webhook and mail within 5 s")
        took = time.monotonic() - asked
        [delivery] = hook.of_kind("emergency_call")
        assert delivery.signed_with(b"daemon-test-secret")
        payload = delivery.payload
        assert (payload["details"]["customer"], payload["details"]["number"]) == ("acme", "112")
        assert payload["details"]["location"] in ("verified", "nomadic", "unknown")
        assert sink.messages[0]["Subject"].startswith("[callpolicy] emergency_call raised: ")
        # the status is published and the outbox recounted about every second: poll for it
        def delivered() -> dict | None:
            alerts = status_of(log)["alerts"]
            done = (alerts["channels"].get("email:oncall", {}).get("delivered")
                    and alerts["outbox_pending"] == 0)
            return alerts if done else None

        alerts = wait_until(delivered, 5, "status: delivered, nothing pending")
        assert [(a["kind"], a["count"]) for a in alerts["open"]] == [("emergency_call", 1)]
        assert alerts["channels"]["webhook:ops"]["last_error"] is None
        print(f"112 -> webhook and mail in {took:.2f} s")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert "daemon-test-secret" not in log.read_text()
    assert (tmp_path / "cp.db.alerts-outbox.sqlite").exists()


def test_a_missing_webhook_secret_stops_the_start_with_one_line(tmp_path: Path,
                                                                receivers) -> None:
    config, _ = configure(tmp_path, *receivers)
    (tmp_path / "hook.secret").unlink()
    result = subprocess.run([sys.executable, "-m", "callpolicy.cli", "--config", str(config),
                             "serve"], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 1, result.stderr
    [line] = [x for x in result.stderr.splitlines() if "error" in x]
    assert "alerts.webhook 'ops' secret_file" in line and "does not exist" in line


def test_sighup_takes_new_alert_channels_and_keeps_the_old_on_a_bad_secret(
        tmp_path: Path, receivers) -> None:
    """[alerts] is re-read on SIGHUP like the policy lists: channels added, a webhook whose
    secret went missing refused (the channels in use kept), channels removed."""
    hook, sink = receivers
    config, port = configure(tmp_path, hook, sink)
    alerted = config.read_text()
    quiet = alerted[:alerted.index("\n[[alerts.webhook]]")] + "\n"
    config.write_text(quiet)
    log = tmp_path / "serve.log"
    daemon = start(["serve"], config, log)

    def reloaded(times: int) -> None:
        wait_until(lambda: log.read_text().count('"config_reloaded"') >= times, 5,
                   f"SIGHUP {times} not taken")

    try:
        wait_port(port)
        assert ask(port, "112")["CP_ACTION"] == "allow"  # no channel: logged, not sent
        wait_until(lambda: '"to": []' in log.read_text(), 5, "the first 112 not alerted")
        config.write_text(alerted)
        daemon.send_signal(signal.SIGHUP)
        reloaded(1)
        assert '"alerts_reconfigured"' in log.read_text()
        assert ask(port, "112")["CP_ACTION"] == "allow"
        wait_until(lambda: len(hook.of_kind("emergency_call")) == 1 and len(sink.messages) == 1,
                   5, "the channels added by SIGHUP got no alert")
        (tmp_path / "hook.secret").unlink()
        daemon.send_signal(signal.SIGHUP)
        reloaded(2)
        failed = [json.loads(x) for x in log.read_text().splitlines()
                  if '"config_reload_failed"' in x]
        assert "secret_file" in failed[-1]["error"], failed
        assert ask(port, "112")["CP_ACTION"] == "allow"
        wait_until(lambda: len(hook.of_kind("emergency_call")) == 2, 5,
                   "a bad [alerts] on SIGHUP must keep the channels in use")
        config.write_text(quiet)
        daemon.send_signal(signal.SIGHUP)
        reloaded(3)
        assert ask(port, "112")["CP_ACTION"] == "allow"
        time.sleep(1.5)  # a round and a delivery pass: nothing more may come
        assert len(hook.of_kind("emergency_call")) == 2 and len(sink.messages) == 2
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0
    finally:
        if daemon.poll() is None:
            daemon.kill()
