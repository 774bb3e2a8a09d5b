"""The Grafana dashboard (config/grafana/callpolicy-dashboard.json) queries only metrics that
the real daemon serves: every metric name in its PromQL (panels and template variables) is
on the /metrics of a `callpolicy serve` on PostgreSQL (which has every series: the change
feed and cluster gauges exist only there)."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

from cli_runner import run
from prometheus_client.parser import text_string_to_metric_families
from test_daemon import free_port, wait_port
from test_postgres_backend import DEMO, ask, serve, stop

DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana" / "callpolicy-dashboard.json"

#: PromQL words that look like identifiers but are not metric names
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                      "and", "or", "unless", "offset", "inf", "nan"})
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")  # label matchers (strings already removed)
_RANGES = re.compile(r"\[[^\]]*\]")  # [5m], [$__rate_interval], subqueries [1h:5m]
_VARIABLES = re.compile(r"\$\{[^}]*\}|\$\w+")  # Grafana's $instance, ${DS}, $__range
_LABEL_LISTS = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE)
_NAME = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*),)?\s*[A-Za-z_]\w*\s*\)\s*$", re.S)


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (function names, label names, keywords
    and Grafana variables are not)."""
    if match := _LABEL_VALUES.match(expr):  # Grafana: label_values([metric,] label)
        expr = match.group(1) or ""
    expr = _STRINGS.sub('""', expr)
    expr = _VARIABLES.sub(" ", expr)
    expr = _MATCHERS.sub(" ", expr)
    expr = _RANGES.sub(" ", expr)
    expr = _LABEL_LISTS.sub(" ", expr)
    names = {m.group(1) for m in _NAME.finditer(expr)}
    return {n for n in names if n.lower() not in KEYWORDS}


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target (rows' nested panels too) and query variable."""
    found: list[tuple[str, str]] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    found.append((f"panel {panel.get('title')!r}", target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            found.append((f"variable ${variable['name']}", query))
    return found


def missing(dashboard: dict[str, Any], served: set[str]) -> list[str]:
    return [f"{where} queries {name}: not on /metrics" for where, expr in queries(dashboard)
            for name in sorted(metric_names(expr) - served)]


def served_names(exposition: str) -> set[str]:
    """Every series name /metrics can have: its samples, and its families' series names
    (a labelled counter has no sample before its first increment)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                                 "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return answer.read().decode()


def test_the_query_parser_finds_metric_names_only() -> None:
    assert metric_names('sum by (action) (rate(callpolicy_decisions_total{instance=~"$instance"'
                        ', reason!="x"}[$__rate_interval]))') == {"callpolicy_decisions_total"}
    assert metric_names("histogram_quantile(0.99, sum without (instance) (rate(a_bucket[5m]))) "
                        "/ on(job) group_left(node) b offset 1h > bool 0") == {"a_bucket", "b"}
    assert metric_names("sum(rate(x_sum[1h:5m])) / sum(rate(x_count[$__range]))") == {
        "x_sum", "x_count"}
    assert metric_names("label_values(callpolicy_decision_seconds_count, instance)") == {
        "callpolicy_decision_seconds_count"}
    assert metric_names("label_values(instance)") == set()
    assert metric_names('up{job="a"} or vector(0) and c unless d') == {"up", "c", "d"}
    assert metric_names("count(foo) * 1e3 + 2.5 * Inf") == {"foo"}


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]
    assert len(queries(dashboard)) >= 20


def test_every_metric_the_dashboard_queries_is_on_the_daemons_metrics(
        pg_url: str, tmp_path: Path) -> None:
    assert run("customer", "import", DEMO, db=pg_url).returncode == 0
    metrics_port = free_port()
    daemon, port, log = serve(pg_url, tmp_path, metrics_port)
    try:
        wait_port(port)
        assert ask(port, "0905123456", "grafana.1")["CP_REASON"] == "premium"
        deadline = time.monotonic() + 15  # the cluster link's gauges come with its first round
        while "callpolicy_cluster_link_connected" not in (exposition := scrape(metrics_port)):
            assert time.monotonic() < deadline, f"no cluster gauges:\n{log.read_text()[-2000:]}"
            time.sleep(0.1)
    finally:
        stop(daemon)
    served = served_names(exposition)
    dashboard = json.loads(DASHBOARD.read_text())
    queried = set().union(*(metric_names(expr) for _, expr in queries(dashboard)))
    print(f"the dashboard queries {len(queried)} metric names, all served")
    assert missing(dashboard, served) == []
    # The check would see a panel querying a metric the daemon does not have.
    dashboard["panels"][-1]["targets"].append(
        {"refId": "Z", "expr": 'sum(rate(callpolicy_decisions_totl{instance=~"$instance"}[5m]))'})
    assert missing(dashboard, served) == [
        f"panel {dashboard['panels'][-1]['title']!r} queries callpolicy_decisions_totl: "
        "not on /metrics"]
