"""`callpolicy api watchdog`: the real `api serve` in its own process pings over systemd's
notify protocol from its event loop; a frozen API (SIGSTOP) is killed and restarted on the
same port, and SIGTERM stops the supervisor and its API, leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from api_server import import_demo, write_config
from test_daemon import start, wait_port

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
        frozen = int(pidfile.read_text())
        os.kill(frozen, signal.SIGSTOP)
        stopped = time.monotonic()
        while pidfile.read_text().strip() == str(frozen):  # watchdog 0.5 s, back-off 0.2 s
            assert time.monotonic() - stopped < 15, "frozen API not replaced"
            time.sleep(0.05)
        print(f"frozen API replaced after {time.monotonic() - stopped:.2f} s")
        wait_port(port)
        assert answers(port) == 200  # the same port again
        with pytest.raises(ProcessLookupError):
            os.kill(frozen, 0)  # killed and reaped, not left stopped
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=15) == 0
        last = int(pidfile.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(last, 0)
            pytest.fail(f"API {last} left behind by its supervisor:\n{log.read_text()[-4000:]}")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    events = [json.loads(line) for line in log.read_text().splitlines()
              if line.startswith("{")]
    frozen_killed = [e for e in events if e["event"] == "daemon_frozen_killed"]
    assert [(e["role"], e["pid"]) for e in frozen_killed] == [("api", frozen)]
    assert any(e["event"] == "daemon_stopped" and e["role"] == "api" for e in events)
