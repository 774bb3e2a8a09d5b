"""Prometheus metrics: updates, and /metrics scraped over HTTP on loopback."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from callpolicy.policy import (
    CallRequest,
    Customer,
    Engine,
    Snapshot,
    build_policy_config,
)
from callpolicy.service.config import ConfigError, load_settings
from callpolicy.service.metrics import Metrics
from ports import free_port

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def engine() -> Engine:
    acme = Customer(id="acme", name="ACME", suspended=False, main_number="+3292101234",
                    numbers=frozenset({"+3292101234"}))
    return Engine(Snapshot(build_policy_config(), {"acme": acme}, {},
                           {"+3292101234": "acme"}))


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics()
    yield m
    m.stop()


def decide(engine: Engine, dialled: str):
    return engine.decide(CallRequest(dialled, NOW, customer_id="acme"))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    result = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return result


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return samples(response.read().decode())



def test_decisions_are_counted_and_scraped_over_http(metrics: Metrics, engine: Engine) -> None:
    port = metrics.start("127.0.0.1", free_port())
    before = scrape(port)
    assert before[("callpolicy_ami_connected", ())] == 0
    assert before[("callpolicy_fail_safe_total", ())] == 0
    assert before[("callpolicy_live_calls", (("category", "non_eu"),))] == 0
    assert before[("callpolicy_fraud_limit_total", (("limit", "max_per_minute"),))] == 0

    allowed = decide(engine, "092101299")
    premium = decide(engine, "0905123456")
    for seconds in (0.00002, 0.0003, 0.004):
        metrics.observe_decision(allowed, "daemon", seconds)
    metrics.observe_decision(premium, "daemon", 0.00004)
    metrics.observe_decision(engine.fail_safe(CallRequest("092101299", NOW), "test"),
                             "fail_safe", 0.2)
    metrics.count_fallback_decision()
    metrics.set_ami_connected(True)
    metrics.set_live_calls({"national": 3, "premium": 1})
    metrics.call_hung_up("fraud_limit")
    metrics.fraud_limit_hit("max_concurrent")

    after = scrape(port)
    assert after[("callpolicy_decisions_total", (("action", "allow"), ("reason", "allowed"),
                                                 ("source", "daemon")))] == 3
    assert after[("callpolicy_decisions_total", (("action", "block"), ("reason", "premium"),
                                                 ("source", "daemon")))] == 1
    assert after[("callpolicy_decisions_total", (("action", "block"), ("reason", "fail_safe"),
                                                 ("source", "fail_safe")))] == 1
    assert after[("callpolicy_fail_safe_total", ())] == 1
    assert after[("callpolicy_fallback_decisions_total", ())] == 1
    assert after[("callpolicy_decision_seconds_count", ())] == 5
    assert after[("callpolicy_decision_seconds_bucket", (("le", "2.5e-05"),))] == 1
    assert after[("callpolicy_decision_seconds_bucket", (("le", "0.001"),))] == 3
    assert after[("callpolicy_decision_seconds_bucket", (("le", "0.2"),))] == 5
    assert after[("callpolicy_ami_connected", ())] == 1
    assert after[("callpolicy_live_calls", (("category", "national"),))] == 3
    assert after[("callpolicy_live_calls", (("category", "premium"),))] == 1
    assert after[("callpolicy_calls_hung_up_total", (("rule", "fraud_limit"),))] == 1
    assert after[("callpolicy_fraud_limit_total", (("limit", "max_concurrent"),))] == 1

    # live calls are a level: categories not named go back to 0
    metrics.set_live_calls({"eu": 2})
    metrics.set_ami_connected(False)
    later = scrape(port)
    assert later[("callpolicy_live_calls", (("category", "national"),))] == 0
    assert later[("callpolicy_live_calls", (("category", "eu"),))] == 2
    assert later[("callpolicy_ami_connected", ())] == 0


def test_engine_errors_and_call_record_trouble_are_counted(metrics: Metrics,
                                                           engine: Engine) -> None:
    before = samples(metrics.render().decode())
    for name in ("callpolicy_decision_errors_total", "callpolicy_call_records_spooled",
                 "callpolicy_call_records_rejected_total", "callpolicy_call_records_dropped_total"):
        assert before[(name, ())] == 0  # there from the start, for alerts
    failed = engine.fail_safe(CallRequest("092101299", NOW), "the policy engine failed")
    metrics.observe_decision(failed, "error", 0.0001)
    metrics.observe_decision(decide(engine, "092101299"), "daemon", 0.0001)
    metrics.set_call_records_spooled(7)
    metrics.call_records_rejected_add(1)
    metrics.call_records_dropped_add(3)
    metrics.call_records_dropped_add(2)
    after = samples(metrics.render().decode())
    assert after[("callpolicy_decision_errors_total", ())] == 1
    assert after[("callpolicy_fail_safe_total", ())] == 1
    assert after[("callpolicy_decisions_total", (("action", "block"), ("reason", "fail_safe"),
                                                 ("source", "error")))] == 1
    assert after[("callpolicy_call_records_spooled", ())] == 7
    assert after[("callpolicy_call_records_rejected_total", ())] == 1
    assert after[("callpolicy_call_records_dropped_total", ())] == 5


def test_own_registry_not_the_global_one(engine: Engine) -> None:
    first, second = Metrics(), Metrics()  # no "duplicated timeseries" error
    first.observe_decision(decide(engine, "092101299"), "daemon", 0.001)
    assert samples(second.render().decode())[("callpolicy_decision_seconds_count", ())] == 0
    assert samples(first.render().decode())[("callpolicy_decision_seconds_count", ())] == 1
    assert REGISTRY.get_sample_value("callpolicy_decision_seconds_count") is None


def test_port_zero_picks_a_free_port_and_stop_frees_it(metrics: Metrics) -> None:
    port = metrics.start("127.0.0.1", 0)
    assert port > 0 and metrics.port == port
    assert scrape(port)[("callpolicy_ami_connected", ())] == 0
    with pytest.raises(RuntimeError, match="already started"):
        metrics.start("127.0.0.1", 0)
    metrics.stop()
    metrics.stop()  # idempotent
    assert metrics.port is None
    with pytest.raises(OSError):
        scrape(port)
    again = Metrics()
    try:
        assert again.start("127.0.0.1", port) == port  # the port was released
    finally:
        again.stop()


def test_busy_port_is_an_os_error(metrics: Metrics) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            metrics.start("127.0.0.1", taken.getsockname()[1])


# -- config [metrics] ---------------------------------------------------------------------

def settings_from(tmp_path: Path, text: str):
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_settings(str(path))


def test_metrics_listen_config(tmp_path: Path) -> None:
    default = settings_from(tmp_path, "")
    assert (default.metrics_host, default.metrics_port) == ("127.0.0.1", 9464)
    shipped = load_settings(str(REPO / "config" / "callpolicy.toml"))
    assert (shipped.metrics_host, shipped.metrics_port) == ("127.0.0.1", 9464)
    v6 = settings_from(tmp_path, '[metrics]\nlisten = "[::1]:9100"\n')
    assert (v6.metrics_host, v6.metrics_port) == ("::1", 9100)
    for bad, error in (('listen = "localhost:9464"', "IP literal"),
                       ('listen = "127.0.0.1"', "IP literal"),
                       ('listen = "127.0.0.1:70000"', "between 0 and 65535"),
                       ("listen = 9464", "must be a str"),
                       ('port = 9464', "unknown key metrics.port")):
        with pytest.raises(ConfigError, match=error):
            settings_from(tmp_path, f"[metrics]\n{bad}\n")


def test_the_http_server_is_bounded_and_keeps_answering_under_held_connections(
        metrics: Metrics) -> None:
    """One thread whatever the clients do (the WSGI server had one per connection), idle
    clients are dropped (evicted when full, else at the request deadline), a scrape still
    gets through, and only GET/HEAD are answered."""
    import threading
    import time

    from callpolicy.service import http_server

    port = metrics.start("127.0.0.1", 0)
    threads = threading.active_count()
    held = []
    try:
        for _ in range(http_server.MAX_CONNECTIONS + 100):
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.2)
        assert threading.active_count() == threads
        assert ("callpolicy_decision_seconds_count", ()) in scrape(port)
        # the oldest idle ones were evicted to make room; the rest go at the deadline
        started = time.monotonic()
        for sock in held:
            sock.settimeout(http_server.REQUEST_DEADLINE + 2)
            assert sock.recv(10) == b""
        assert time.monotonic() - started < http_server.REQUEST_DEADLINE + 1
    finally:
        for sock in held:
            sock.close()

    def raw(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            return b"".join(iter(lambda: sock.recv(65536), b""))

    head = raw(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert raw(b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 405 ")
    assert raw(b"\x16\x03\x01 not http\r\n\r\n") == b""
    assert raw(b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"y" * 20_000 + b"\r\n\r\n") == b""
