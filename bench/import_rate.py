"""Import rate and writer wait: `callpolicy customer import` of N customers (the benchmark's
customers, bench/mix.py) into a fresh database, while another process keeps writing as an
operator and the daemon would: `unblock`/`reblock` in a loop (the real CLI `main`) and a
batch of call records every 0.5 s (`Store.record_calls`, as the daemon's record writer).

Prints the import's wall and CPU time, customers/s, and how long the other writers waited
(p50 / p99 / max) and whether any of them failed. Then the same import again (every customer
unchanged). `--format json`: the same customers as a .json file.

`--compare-formats N`: no writer; N rounds of TOML then JSON, each into a fresh database,
interleaved (T J T J: the machine is shared), and the JSON/TOML ratio of each round.

    python bench/import_rate.py [--customers 100000] [--no-writer] [--format toml|json]
    python bench/import_rate.py --customers 100000 --compare-formats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import mix

HERE = Path(__file__).resolve().parent
STARTED = 0.0  # when the (last) import started, time.time()
REPO = HERE.parent

WRITER = """
import asyncio, json, os, sys, time
from datetime import UTC, datetime
from callpolicy.cli import main
from callpolicy.live.records import CallRecord
from callpolicy.store import Store

db, stop = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + float(sys.argv[3])


def cli_writes(results):
    while not os.path.exists(stop) and time.monotonic() < deadline:
        for command in ("unblock", "reblock"):
            start = time.monotonic()
            code = main(["--db", db, command, "acme", "--prefix", "0905", "--by", "bench",
                         "--ticket", "BENCH"])
            results.append(("cli", code, time.monotonic() - start, time.time()))


async def records(results):
    store = await Store.open(db)
    n = 0
    while not os.path.exists(stop) and time.monotonic() < deadline:
        batch = [CallRecord(f"bench-{n + i}", customer_id="acme",
                            started_at=datetime.now(UTC)) for i in range(10)]
        n += 10
        start = time.monotonic()
        try:
            await store.record_calls(batch)
            results.append(("records", 0, time.monotonic() - start, time.time()))
        except Exception as exc:
            results.append(("records", repr(exc), time.monotonic() - start, time.time()))
        await asyncio.sleep(0.5)
    await store.close()


async def both():
    results = []
    await asyncio.gather(asyncio.to_thread(cli_writes, results), records(results))
    print("RESULTS " + json.dumps(results))

asyncio.run(both())
"""


def env() -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLPOLICY_")}
    environ["CALLPOLICY_CONFIG"] = str(REPO / "config" / "callpolicy.toml")
    environ["PYTHONPATH"] = str(REPO / "agi")
    return environ


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "callpolicy.cli", *args], capture_output=True,
                          text=True, env=env(), check=False, timeout=900)


def timed_import(path: Path, db: Path) -> tuple[float, float, str]:
    global STARTED
    STARTED = time.time()
    start, before = time.monotonic(), os.times()
    done = cli("customer", "import", str(path), "--by", "bench", "--db", str(db))
    wall, after = time.monotonic() - start, os.times()
    if done.returncode != 0:
        raise SystemExit(f"import failed: {done.stderr}")
    cpu = (after.children_user - before.children_user
           + after.children_system - before.children_system)
    return wall, cpu, done.stdout.strip()


def summary(waits: list[float]) -> str:
    waits = sorted(waits)
    if not waits:
        return "none"
    def pick(q: float) -> float:
        return waits[min(len(waits) - 1, int(q * len(waits)))]
    return (f"{len(waits)} writes, wait p50 {pick(0.5) * 1000:.0f} ms, "
            f"p99 {pick(0.99) * 1000:.0f} ms, max {waits[-1] * 1000:.0f} ms")


def write_customers(path: Path, customers: int) -> None:
    mix.write_customers(path.with_suffix(".toml"), customers)
    if path.suffix == ".json":
        data = tomllib.loads(path.with_suffix(".toml").read_text())
        path.write_text(json.dumps(data))


def compare_formats(customers: int, rounds: int) -> int:
    with tempfile.TemporaryDirectory(prefix="cp-import-") as tmp:
        work = Path(tmp)
        files = {fmt: work / f"customers.{fmt}" for fmt in ("toml", "json")}
        write_customers(files["json"], customers)  # writes both
        for n in range(1, rounds + 1):
            walls = {}
            for fmt, path in files.items():
                db = work / f"{fmt}-{n}.db"
                wall, cpu, _ = timed_import(path, db)
                walls[fmt] = wall
                print(f"round {n} {fmt}: {wall:.1f} s wall, {cpu:.1f} s CPU "
                      f"({customers / wall:.0f} customers/s)", flush=True)
                for leftover in work.glob(f"{fmt}-{n}.db*"):
                    leftover.unlink()
            print(f"round {n}: JSON/TOML wall {walls['json'] / walls['toml']:.2f}", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--no-writer", action="store_true")
    parser.add_argument("--format", choices=("toml", "json"), default="toml")
    parser.add_argument("--compare-formats", type=int, metavar="ROUNDS", default=0)
    args = parser.parse_args()
    if args.compare_formats:
        return compare_formats(args.customers, args.compare_formats)
    with tempfile.TemporaryDirectory(prefix="cp-import-") as tmp:
        work = Path(tmp)
        db, path, stop = work / "cp.db", work / f"customers.{args.format}", work / "stop"
        write_customers(path, args.customers)
        if cli("customer", "import", str(REPO / "config" / "demo-customers.toml"),
               "--db", str(db)).returncode:
            raise SystemExit("cannot import the demo customers")
        writer = None
        if not args.no_writer:
            writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), str(stop), "900"],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env())
            time.sleep(1.0)
        try:
            wall, cpu, said = timed_import(path, db)
        finally:
            stop.touch()
        print(f"import of {args.customers} customers: {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"({args.customers / wall:.0f} customers/s; load average "
              f"{os.getloadavg()[0]:.1f}): {said}")
        if writer is not None:
            out, err = writer.communicate(timeout=120)
            line = next((x for x in out.splitlines() if x.startswith("RESULTS ")), None)
            if line is None:
                raise SystemExit(f"the writer failed: {err[-2000:]}")
            results = json.loads(line.removeprefix("RESULTS "))
            for kind in ("cli", "records"):
                mine = [r for r in results if r[0] == kind]
                failed = [r for r in mine if r[1] != 0]
                slowest = sorted(mine, key=lambda r: -r[2])[:3]
                when = ", ".join(f"{r[2] * 1000:.0f} ms at +{r[3] - r[2] - STARTED:.1f} s"
                                 for r in slowest)
                print(f"  other writer {kind}: {summary([r[2] for r in mine])}; "
                      f"{len(failed)} failed {failed[:3]}; slowest: {when}")
        wall, cpu, said = timed_import(path, db)
        print(f"again (unchanged): {wall:.1f} s wall, {cpu:.1f} s CPU: {said}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
