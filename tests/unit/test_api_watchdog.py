"""`callpolicy api watchdog`: the real `api serve` in its own process pings over systemd's
notify protocol from its event loop; a frozen API (SIGSTOP) is killed and restarted on the
same port, and SIGTERM stops the supervisor and its API, leaving nothing behind."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from api_server import import_demo, write_config
from test_daemon import freeze_until_replaced, start, stop_supervisor, wait_port

from callpolicy.api.tokens import add_token
from ports import free_port


def answers(port: int) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/status", method="HEAD")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        return response.status


def test_a_frozen_api_is_killed_and_restarted_and_sigterm_stops_everything(
        tmp_path: Path) -> None:
    config = write_config(tmp_path)
    port = free_port()
    config.write_text(config.read_text() + f"port = {port}\n")  # [api] is the last section
    import_demo(tmp_path / "cp.db")
    add_token(tmp_path / "api-tokens.toml", "ops-bot", ["ops"])
    pidfile, log = tmp_path / "api.pid", tmp_path / "watchdog.log"
    supervisor = start(["api", "watchdog", "--watchdog-sec", "0.5", "--pidfile", str(pidfile)],
                       config, log)
    try:
        wait_port(port)
        assert answers(port) == 200
        frozen = freeze_until_replaced(pidfile, "API")
        wait_port(port)
        assert answers(port) == 200  # the same port again
        stop_supervisor(supervisor, frozen, pidfile, log)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    events = [json.loads(line) for line in log.read_text().splitlines()
              if line.startswith("{")]
    frozen_killed = [e for e in events if e["event"] == "daemon_frozen_killed"]
    assert [(e["role"], e["pid"]) for e in frozen_killed] == [("api", frozen)]
    assert any(e["event"] == "daemon_stopped" and e["role"] == "api" for e in events)
