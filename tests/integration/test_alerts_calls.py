"""Issue 14 acceptance, alerts, with real calls through Asterisk 22 (SIPp):

- a customer with max_concurrent = 2 places five calls held up: three are refused over the
  limit, and a local webhook receiver gets ONE delivery with count 3, although it is down
  (port closed) for the first 10 s; the signature is valid;
- a 112 call produces an emergency alert by webhook AND by mail (aiosmtpd) within 5 s.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import Trunk
from policy_env import ACME_101, Live

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from alert_receivers import SmtpSink, WebhookReceiver, free_port, wait_until

SECRET = "integration-demo-secret"
RECEIVER_DOWN_FOR = 10.0


def alerts_config(live: Live, hook_port: int, smtp_port: int) -> Path:
    (live.state / "alerts-hook.secret").write_text(SECRET + "\n")
    config = live.state / "callpolicy-alerts.toml"
    config.write_text(live.config.read_text() + f"""
[alerts]
retry_max = 2
[[alerts.webhook]]
name = "ops"
url = "http://127.0.0.1:{hook_port}/callpolicy"
secret_file = "alerts-hook.secret"
timeout = 2
[[alerts.email]]
name = "oncall"
host = "127.0.0.1"
port = {smtp_port}
from = "callpolicy@pbx.example"
to = ["oncall@example.com"]
[alerts.route.fraud_limit]
to = ["webhook:ops"]
window = 4
[alerts.route.emergency_call]
to = ["webhook:ops", "email:oncall"]
""")
    return config


def test_a_burst_over_max_concurrent_is_one_delivery_and_112_alerts_by_webhook_and_mail(
        live: Live, call, trunk: Trunk) -> None:
    hook_port = free_port()  # nothing listens there yet: the receiver is down
    sink = SmtpSink().start()
    hook = WebhookReceiver(port=hook_port)
    config = alerts_config(live, hook_port, sink.port)
    live.cli("limits", "set", "acme", "--max-concurrent", "2", "--by", "tests",
             "--ticket", "T-ALERT")
    mark = len(live.log.read_bytes())
    try:
        with live.running_with(config):
            wait_until(lambda: b'"live_table_rebuilt"' in live.log.read_bytes()[mark:], 10,
                       "live table not rebuilt after the restart")
            down_since = time.monotonic()
            with ThreadPoolExecutor(max_workers=2) as pool:
                held = [pool.submit(call, ACME_101, n, hold=5, timeout=30)
                        for n in ("092101241", "092101242")]
                trunk.wait_for_invites(2, timeout=10)
                refused = [call(ACME_101, f"09210124{3 + i}") for i in range(3)]
                assert [r.status for r in refused] == [403] * 3, refused
                assert [f.result(timeout=30).status for f in held] == [200, 200]
            wait_until(lambda: b'"alert_delivery_failed"' in live.log.read_bytes()[mark:], 20,
                       "no failed delivery while the receiver was down")
            time.sleep(max(0.0, down_since + RECEIVER_DOWN_FOR - time.monotonic()))
            hook.start()  # up after 10 s: the retries (back-off capped at 2 s) get through
            up_at = time.monotonic()
            wait_until(lambda: hook.of_kind("fraud_limit"), 10,
                       "the fraud alert never reached the receiver once it was up")
            delivered_after = time.monotonic() - up_at
            time.sleep(1.0)  # nothing more comes for the burst
            [fraud] = hook.of_kind("fraud_limit")
            payload = fraud.payload
            assert (payload["count"], payload["details"]["customer"],
                    payload["details"]["limit"], payload["details"]["max"]) == (
                3, "acme", "max_concurrent", 2)
            assert fraud.signed_with(SECRET.encode()) and not fraud.signed_with(b"x")
            assert sorted(payload["details"]["numbers"]) == [
                "092101243", "092101244", "092101245"]

            with ThreadPoolExecutor(max_workers=1) as pool:
                started = time.monotonic()
                emergency = pool.submit(call, ACME_101, "112", hold=2, timeout=30)
                wait_until(lambda: hook.of_kind("emergency_call") and sink.messages, 5,
                           "no emergency alert by webhook and mail within 5 s")
                alerted_after = time.monotonic() - started
                assert emergency.result(timeout=30).status == 200
            [urgent] = hook.of_kind("emergency_call")
            assert urgent.payload["details"]["number"] == "112"
            assert urgent.payload["details"]["location"] in ("verified", "nomadic", "unknown")
            [mail] = sink.messages
            assert mail["Subject"].startswith("[callpolicy] emergency_call raised: ")
            state = json.loads(live.status("--json").stdout)["alerts"]
            assert {a["kind"]: a["count"] for a in state["open"]}.items() >= {
                "fraud_limit": 3, "emergency_call": 1}.items()
            assert state["outbox_pending"] == 0
            print(f"fraud alert delivered {delivered_after:.2f} s after the receiver came up; "
                  f"112 alerted by webhook and mail {alerted_after:.2f} s after the call began")
    finally:
        hook.stop()
        sink.stop()
        live.cli("limits", "set", "acme", "--default", "max_concurrent", "--by", "tests",
                 "--ticket", "T-ALERT2")
    assert SECRET not in live.log.read_text()
