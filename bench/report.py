"""Percentiles, the summary table, the plot and the py-spy breakdown of the load benchmark."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path
from typing import Any


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, Any]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {"p50": r(percentile(values, 50)), "p95": r(percentile(values, 95)),
            "p99": r(percentile(values, 99)), "mean": r(sum(values) / len(values))
            if values else None, "max": r(max(values)) if values else None, "n": len(values)}


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(result: dict[str, Any]) -> str:
    targets = result["targets"]

    def verdict(name: str) -> str:
        t = targets.get(name)
        if t is None or t.get("met") is None:
            return ""
        return f"{t['goal']} {'met' if t['met'] else 'MISSED'}"

    def cell(block: dict[str, Any], key: str) -> str:
        if not block or block.get(key) is None:
            return "-"
        return fmt(block[key]) + ("" if block.get("clean", True) else "*")

    rows: list[tuple[str, str, str, str, str, str]] = [
        ("knee (calls/s)", fmt(result["bare_knee_cps"], 0), "", fmt(result["policy_knee_cps"], 0),
         f"ratio {fmt(result['ratio'], 3)}", verdict("ratio"))]
    blocks = [(result["latency_half_bare_knee"], "half the bare knee",
               result["added_latency_ms"])]
    if result.get("latency_half_policy_knee"):
        blocks.append((result["latency_half_policy_knee"], "half the policy knee",
                       result["added_latency_half_policy_knee_ms"]))
    for index, (block, label, added) in enumerate(blocks):
        rate = block["rate_cps"]
        rows.append((f"at {rate:g} calls/s ({label})", "", "", "", "", ""))
        for key in ("p50", "p95", "p99"):
            rows.append((f"  setup {key} (ms)", cell(block["bare"], key),
                         cell(block["floor"], key), cell(block["policy"], key),
                         f"+{fmt(added[key])}" if added[key] is not None else "-",
                         verdict("added_p99_ms") if key == "p99" and index == 0 else ""))
        ring = [block.get(k) or {} for k in ("bare_ring", "floor_ring", "policy_ring")]
        added_ring = None if ring[0].get("p99") is None or ring[2].get("p99") is None \
            else ring[2]["p99"] - ring[0]["p99"]
        rows.append(("  setup p99, allowed calls (ms)", cell(ring[0], "p99"), cell(ring[1], "p99"),
                     cell(ring[2], "p99"), f"+{fmt(added_ring)}" if added_ring is not None
                     else "-", ""))
        ast = result["asterisk_cpu_us_per_call"]
        rows.append(("  Asterisk CPU (µs/call)", fmt(ast["bare"].get(f"{rate:g}"), 0),
                     fmt(ast["floor"].get(f"{rate:g}"), 0), fmt(ast["policy"].get(f"{rate:g}"), 0),
                     "", ""))
        by_run = result["cpu_us_per_call_by_latency_run"]
        rows.append(("  AGI server CPU (µs/call)", "", fmt(by_run.get(f"floor_agi {rate:g}"), 0),
                     fmt(by_run.get(f"{rate:g}"), 0), "", ""))
    rows.append(("daemon CPU, whole run (µs/call)", "", "", fmt(result["cpu_us_per_call"], 0),
                 f"{result['daemon_calls']} calls", verdict("cpu_us_per_call")))
    lives = result["rss"]["lives"]
    if lives:
        life = lives[0]
        rows.append(("daemon RSS (MB)", "", "", fmt(result["rss_mb"], 1),
                     f"{fmt(life['after_load_mb'], 1)} -> {fmt(life.get('end_mb'), 1)}"
                     f" ({fmt(result['rss']['growth_kb_per_call'], 2)} KB/call)",
                     verdict("rss_flat")))
    head = (f"callpolicy SIPp load benchmark: {result['customers']} customers, "
            f"{result['machine']['cores']} cores ({result['machine']['model']}), "
            f"pinning {result['pinning']['mode']}, daemon log level {result['log_level']}")
    lines = [head, "", f"{'':34}{'bare':>9}{'floor':>9}{'policy':>9}   {'':32}target"]
    for name, b, f, p, extra, v in rows:
        lines.append(f"{name:34}{b:>9}{f:>9}{p:>9}   {extra:32}{v}")
    lines += ["",
              "setup latency: INVITE -> 180 (allowed) / 403 (blocked), per call (µs message "
              "trace); * = that run was over its knee (failed calls or retransmissions)",
              "floor: the policy dialplan with bench/floor_agi.py (a bare asyncio FastAGI "
              "server that allows everything) in the daemon's place",
              f"calls checked {result['calls_checked']} of {result['calls_total']}, mismatches "
              f"{result['mismatches']}, failed calls over the knees "
              f"{result['failed_calls_over_knee']}; run {fmt(result['runtime_s'], 0)} s"]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> str | None:
    """Rate vs. setup latency (p50 and p99 of each knee step, RTT trace) for both dialplans,
    plus the precise half-knee points (message trace). Returns an error text or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # the plot is optional; the JSON says why it is missing
        return f"no plot: {exc}"
    fig, ax = plt.subplots(figsize=(9.5, 5.8))
    colours = {"bare": "tab:blue", "policy": "tab:red", "floor": "tab:gray"}
    for dialplan in ("bare", "floor", "policy"):
        last = {s["rate"]: s for s in result["steps"] if s["dialplan"] == dialplan
                and s["phase"] == "knee" and s["rtt_ms"]["p50"] is not None}
        steps = [last[rate] for rate in sorted(last)]  # a repeated rate: its last attempt
        if steps:
            rates = [s["rate"] for s in steps]
            ax.plot(rates, [s["rtt_ms"]["p50"] for s in steps], "o-", color=colours[dialplan],
                    label=f"{dialplan} p50 (RTT trace, 4 ms clock)")
            ax.plot(rates, [s["rtt_ms"]["p99"] for s in steps], "s--",
                    color=colours[dialplan], alpha=0.6, label=f"{dialplan} p99 (RTT trace)")
            for s in steps:
                if not s["clean"]:
                    ax.plot([s["rate"]], [s["rtt_ms"]["p99"]], "x", color="black", ms=9)
        blocks = [b for b in (result["latency_half_bare_knee"],
                              result.get("latency_half_policy_knee")) if b]
        points = [(b["rate_cps"], b[dialplan]["p50"], b[dialplan]["p99"]) for b in blocks
                  if b[dialplan]["p50"] is not None]
        if points:
            ax.plot([p[0] for p in points] * 2, [p[1] for p in points] + [p[2] for p in points],
                    "D", color=colours[dialplan], ms=8, mfc="white",
                    label=f"{dialplan} p50/p99 of the latency runs (µs message trace)")
        knee = result.get(f"{dialplan}_knee_cps")
        if knee:
            ax.axvline(knee, color=colours[dialplan], lw=1, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("offered call rate (calls/s)")
    ax.set_ylabel("call setup latency, INVITE -> 180/403 (ms)")
    ax.set_title(f"callpolicy vs bare Asterisk, {result['customers']} customers "
                 f"(x: step with failures/retransmissions; dotted: knees)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# py-spy "raw" output: one collapsed stack per line, "frame;frame;... count" (idle samples are
# not recorded). A sample goes to the first bucket that matches, walking from the leaf up.
_BUCKETS = [
    ("logging (structlog JSON)", re.compile(r"structlog|log_decision|json/encoder")),
    ("decision (engine, variables)", re.compile(
        r"callpolicy/policy/|PolicyService\.decide|decision_variables|mset_command|"
        r"callpolicy/variables\.py")),
    ("AMI events + live-call table", re.compile(
        r"panoramisk|callpolicy/ami\.py|callpolicy/livecalls\.py|callpolicy/control\.py")),
    ("call records / store", re.compile(r"callpolicy/store\.py|callpolicy/records\.py|"
                                        r"aiosqlite|sqlite3")),
    ("metrics", re.compile(r"callpolicy/metrics\.py|prometheus")),
    ("AGI reader/writer (fastagi, streams)", re.compile(r"callpolicy/fastagi\.py|streams\.py")),
    ("socket I/O (asyncio transports, syscalls)", re.compile(r"selector_events\.py|socket\.py")),
    ("event loop wait (epoll)", re.compile(r"selectors\.py")),
]


def profile_breakdown(raw: Path) -> dict[str, Any]:
    """Share of the daemon's busy samples per part of the daemon."""
    totals: Counter = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        samples += n
        bucket = "asyncio / other"
        for frame in reversed(stack.split(";")):
            hit = next((name for name, rx in _BUCKETS if rx.search(frame)), None)
            if hit:
                bucket = hit
                break
        totals[bucket] += n
    return {"samples": samples,
            "share": {k: round(v / samples, 3) for k, v in totals.most_common()}
            if samples else {}}
