"""Micro-benchmark: policy decisions per second on a mixed corpus.

Runs the real engine on an in-memory snapshot of N customers (10 and 100 000 by default) and
prints decisions/s for two corpora of the same mix (~55 % national, 25 % EU, 10 % premium,
8 % non-EU, 1 % must-reach, 1 % garbage), each call from a random customer:
- distinct: every call dials a number never seen before, with empty caches (worst case);
- pool: calls drawn from a working set of 20 000 destinations, measured after one pass
  (steady state of an operator whose customers call the same numbers again), with the
  engine's caches of `--cache-entries` entries each (default: the config's default); the
  hit rate of its classification cache is printed.
Ratios within one run are what matters on a shared machine.

    python bench/decisions.py [--calls 200000] [--customers 10 100000] [--cache-entries N]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import random
import time
from dataclasses import replace
from datetime import UTC, datetime

from callpolicy.policy import (
    Address,
    CallRequest,
    Customer,
    Endpoint,
    Engine,
    Snapshot,
    Unblock,
    UnblockKind,
    build_policy_config,
)

NON_EU = ["+41", "+44", "+1", "+7", "+90", "+212", "+882", "+47", "+39066", "+590590"]
EU = ["+33", "+49", "+31", "+352", "+34", "+39", "+358", "+262262"]


def make_snapshot(customers: int, rng: random.Random, cache_entries: int | None) -> Snapshot:
    config = build_policy_config()
    if cache_entries is not None:
        config = replace(config, cache_entries=cache_entries)
    people: dict[str, Customer] = {}
    endpoints: dict[str, Endpoint] = {}
    owners: dict[str, str] = {}
    address = Address("Breebroekstraat", "61", "9030", "Gent", "BE")
    for i in range(customers):
        cid = f"c{i:06d}"
        main = f"+329{2000000 + i:07d}"
        unblocks = ()
        if i % 10 == 0:
            unblocks = (Unblock(i, UnblockKind.PREFIX, "+32905", "T"),
                        Unblock(i + 1, UnblockKind.COUNTRY, "CH", "T"))
        people[cid] = Customer(
            id=cid, name=cid, suspended=(i % 50 == 0), main_number=main,
            numbers=frozenset({main}), install_address=address,
            site_networks=(ipaddress.ip_network(f"10.{i // 65536 % 256}.{i // 256 % 256}."
                                                f"{i % 256}/32"),),
            unblocks=unblocks)
        endpoints[f"{cid}-1"] = Endpoint(f"{cid}-1", cid, main)
        owners[main] = cid
    return Snapshot(config, people, endpoints, owners)


def make_corpus(calls: int, customers: int, rng: random.Random,
                pool: int | None = None) -> list[CallRequest]:
    now = datetime.now(UTC)
    corpus = []
    dial_rng = random.Random(rng.random()) if pool else rng
    for index in range(calls):
        if pool:
            dial_rng.seed(rng.randrange(pool))
        else:
            dial_rng.seed(index)
        roll = dial_rng.random()
        digits = f"{index if not pool else dial_rng.randrange(10**7):07d}"
        if roll < 0.55:
            dialled = dial_rng.choice(["09", "02", "03", "050", "0475"]) + digits
        elif roll < 0.80:
            dialled = dial_rng.choice(EU) + digits + "1"
        elif roll < 0.90:
            dialled = dial_rng.choice(["0903", "0905", "0909", "0032905"]) + digits[-5:] + "1"
        elif roll < 0.98:
            dialled = dial_rng.choice(NON_EU) + digits + "12"
        elif roll < 0.99:
            dialled = dial_rng.choice(["112", "070 245 245", "1813", "#31#112"])
        else:
            dialled = dial_rng.choice(["abc", "", "sip:1@2", "+" * 3, "0" * 25]) + digits
        cid = f"c{rng.randrange(customers):06d}"
        corpus.append(CallRequest(dialled, now, endpoint=f"{cid}-1",
                                  source_ip="10.0.0.1:5060", caller_id="+3200000000"))
    return corpus


def run(customers: int, calls: int, seed: int,
        cache_entries: int | None = None) -> dict[str, float]:
    rng = random.Random(seed)
    t0 = time.perf_counter()
    snapshot = make_snapshot(customers, rng, cache_entries)
    build_s = time.perf_counter() - t0
    corpora = {"distinct": make_corpus(calls, customers, rng),
               "pool": make_corpus(calls, customers, rng, pool=20_000)}
    results = {}
    for name, corpus in corpora.items():
        engine = Engine(snapshot)  # its own caches, empty
        if name == "pool":
            for request in corpus:
                engine.decide(request)
        before = engine.classifier.classify.cache_info()
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            for request in corpus:
                engine.decide(request)
            results[name] = calls / (time.perf_counter() - t0)
        finally:
            gc.enable()
        after = engine.classifier.classify.cache_info()
        looked_up = after.hits + after.misses - before.hits - before.misses
        results[f"{name}_hit_rate"] = (after.hits - before.hits) / max(1, looked_up)
    results["snapshot_build_s"] = build_s
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--customers", type=int, nargs="+", default=[10, 100_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache-entries", type=int, help="[policy] cache_entries")
    args = parser.parse_args()
    print(f"{'customers':>10} {'distinct dec/s':>15} {'pool dec/s':>12} {'pool hits':>10} "
          f"{'snapshot build':>15}")
    rows = []
    for customers in args.customers:
        r = run(customers, args.calls, args.seed, args.cache_entries)
        rows.append(r)
        print(f"{customers:>10} {r['distinct']:>15,.0f} {r['pool']:>12,.0f} "
              f"{r['pool_hit_rate']:>10.0%} {r['snapshot_build_s']:>14.2f}s")
    if len(rows) > 1:
        for name in ("distinct", "pool"):
            print(f"{name}: {args.customers[-1]} vs {args.customers[0]} customers: "
                  f"{rows[-1][name] / rows[0][name]:.2f}")


if __name__ == "__main__":
    main()
