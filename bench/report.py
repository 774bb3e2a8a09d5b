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


def fmt_spread(values: list[float | None], digits: int = 0) -> str:
    """median [min-max] of interleaved repeats."""
    got = sorted(v for v in values if v is not None)
    if not got:
        return "-"
    mid = got[len(got) // 2] if len(got) % 2 else (got[len(got) // 2 - 1] + got[len(got) // 2]) / 2
    if len(got) == 1:
        return fmt(float(mid), digits)
    return f"{fmt(float(mid), digits)} [{fmt(float(got[0]), digits)}-{fmt(float(got[-1]), digits)}]"


COLUMNS = ("bare", "bare_agi", "floor", "policy")


def table(result: dict[str, Any]) -> str:
    targets = result["targets"]

    def verdict(name: str) -> str:
        t = targets.get(name)
        if t is None or t.get("met") is None:
            return ""
        return f"{t['goal']} {'met' if t['met'] else 'MISSED'}"

    def cell(block: dict[str, Any] | None, key: str) -> str:
        if not block or block.get(key) is None:
            return "-"
        return fmt(block[key]) + ("" if block.get("clean", True) else "*")

    Row = tuple[str, str, str, str, str, str, str]
    rows: list[Row] = [
        ("knee (calls/s)", fmt(result["bare_knee_cps"], 0),
         fmt(result.get("bare_agi_knee_cps"), 0), "", fmt(result["policy_knee_cps"], 0),
         f"ratio {fmt(result['ratio'], 3)}", verdict("ratio"))]
    blocks = [(result["latency_half_bare_knee"], "half the bare knee")]
    if result.get("latency_half_policy_knee"):
        blocks.insert(0, (result["latency_half_policy_knee"], "half the policy knee"))
    runs = result.get("interleaved", {}).get("runs", {})
    for block, label in blocks:
        rate = block["rate_cps"]
        key_rate = f"{rate:g}"
        head = block is result["latency_half_bare_knee"]
        rows.append((f"at {rate:g} calls/s ({label})", "", "", "", "", "", ""))
        for key in ("p50", "p95", "p99"):
            over = None
            if block["policy"].get(key) is not None and block["bare_agi"].get(key) is not None:
                over = block["policy"][key] - block["bare_agi"][key]
            rows.append((f"  setup {key} (ms)", *(cell(block[c], key) for c in COLUMNS),
                         f"policy - bare_agi {over:+.2f}" if over is not None else "",
                         verdict(f"{key}_over_bare_agi_ms") if head and key != "p95" else ""))
        rows.append(("  setup p99, allowed calls (ms)",
                     *(cell(block.get(f"{c}_ring"), "p99") for c in COLUMNS), "", ""))
        spreads = [runs.get(c, {}).get(key_rate, {}) for c in COLUMNS]
        rows.append(("  Asterisk CPU (µs/call)",
                     *(fmt_spread(s.get("asterisk_cpu_us", [])) for s in spreads),
                     f"policy - bare_agi {fmt(result.get('asterisk_over_bare_agi_us'), 0)}"
                     if key_rate == f"{result.get('asterisk_cpu_rate_cps', 0):g}" else "",
                     verdict("asterisk_over_bare_agi_us")
                     if key_rate == f"{result.get('asterisk_cpu_rate_cps', 0):g}" else ""))
        rows.append(("  AGI server CPU (µs/call)",
                     *(fmt_spread(s.get("agi_server_cpu_us", [])) for s in spreads), "", ""))
    rows.append(("daemon CPU, whole run (µs/call)", "", "", "",
                 fmt(result["daemon_cpu_us_per_call"], 0),
                 f"{result['daemon_calls']} calls", verdict("daemon_cpu_us_per_call")))
    lives = result["rss"]["lives"]
    if lives:
        life = lives[0]
        rows.append(("daemon RSS, knee search (MB)", "", "", "", fmt(result["rss_mb"], 1),
                     f"{fmt(life['after_load_mb'], 1)} -> {fmt(life.get('end_mb'), 1)}"
                     f" ({fmt(result['rss']['growth_kb_per_call'], 2)} KB/call)", ""))
    soak = result.get("soak") or {}
    if soak.get("minutes"):
        rows.append((f"soak {soak['minutes']} min at {soak['rate_cps']:g}/s, RSS (MB)", "", "",
                     "", "", f"{fmt(soak['rss_mb_start'], 1)} after 1 min -> "
                     f"{fmt(soak['rss_mb_end'], 1)}", verdict("soak_rss_growth_mb")))
    else:
        rows.append(("soak", "", "", "", "", "skipped (--soak-minutes 0)", ""))
    head = (f"callpolicy SIPp load benchmark: {result['customers']} customers, "
            f"{result['machine']['cores']} cores ({result['machine']['model']}), "
            f"pinning {result['pinning']['mode']}, daemon log level {result['log_level']}")
    lines = [head, "", f"{'':36}" + "".join(f"{c:>17}" for c in COLUMNS) + f"   {'':30}target"]
    for name, *cells, extra, v in rows:
        lines.append(f"{name:36}" + "".join(f"{c:>17}" for c in cells) + f"   {extra:30}{v}")
    lines += ["",
              "setup latency: INVITE -> 180 (allowed) / 403 (blocked), per call (µs message "
              "trace), all calls of the interleaved repeats; * = over its knee (failed calls "
              "or retransmissions); CPU: median [min-max] of the repeats "
              f"({result.get('interleaved', {}).get('repeats', 1)}, A B C D, D C B A …)",
              "bare_agi: [bare] plus one AGI call to bench/floor_agi.py (a do-nothing asyncio "
              "FastAGI server); floor: the policy dialplan with that server in the daemon's place",
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
    colours = {"bare": "tab:blue", "bare_agi": "tab:green", "policy": "tab:red",
               "floor": "tab:gray"}
    for dialplan in COLUMNS:
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
                  if b.get(dialplan, {}).get("p50") is not None]
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
    ax.set_title(f"callpolicy vs bare Asterisk and bare AGI, {result['customers']} customers "
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
