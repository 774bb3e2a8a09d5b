"""The load benchmark's data: N bench customers (import TOML) and the call mix (SIPp CSV).

Customers: `bench-<n>` (n = 0 … N-1), one number +3292000000 + n each (Gent zone 09, installed
at 9030 Gent), one endpoint `bench-<n>` with that number, site network 127.0.0.7/32 (the
bench phone's address, so an emergency call is `verified`).

Calls (one CSV line each, drawn with a fixed seed): a random customer, its own number as the
caller ID, and a destination from the mix

    79 %  allowed: Belgian national (02/03/09/050/0475 …, national, 0032 or +32 form) and EU
          (+33 +49 +31 +34 +43 +351 +352 +358, 00 or + form)       -> 180/200 from the trunk
     1 %  must-reach (112, 101, 1813, 070 245 245, 116000 …)      -> 180/200 from the trunk
    10 %  premium 0903/0904/0905/0906/0907/0909                    -> 403
    10 %  outside the EU (+41 +44 +1 +7 +90 +212 +47 +61 …)         -> 403

The expected outcome and the destination the trunk must see are written here, from how the
number was built, not by asking the engine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

BENCH_NET = "127.0.0.7/32"
NATIONAL = [("02", 7), ("03", 7), ("09", 7), ("04", 7), ("050", 6), ("011", 6), ("016", 6),
            ("0475", 6), ("0486", 6), ("0497", 6)]
EU = ["33", "49", "31", "34", "43", "351", "352", "358"]
NON_EU = ["41", "44", "1", "7", "90", "212", "47", "61", "81", "86"]
PREMIUM = ["0903", "0904", "0905", "0906", "0907", "0909"]
# (dialled, destination the trunk sees)
MUST_REACH = [("112", "112"), ("101", "101"), ("1813", "1813"), ("070245245", "+3270245245"),
              ("116000", "116000"), ("080032123", "+3280032123"), ("026499555", "+3226499555")]


@dataclass(frozen=True, slots=True)
class Call:
    endpoint: str
    caller: str  # the customer's number, E.164
    dialled: str
    expect: str  # allow | block
    category: str  # national | eu | must_reach | premium | non_eu
    dest: str  # what the trunk's Request-URI must carry for an allowed call ("" if blocked)


def customer_number(n: int) -> str:
    return f"+329{2_000_000 + n:07d}"


def write_customers(path: Path, customers: int) -> None:
    """The import TOML for `callpolicy customer import`."""
    if customers > 8_000_000:
        raise ValueError("at most 8 000 000 customers (+3292000000 … +3299999999)")
    with path.open("w") as out:
        for n in range(customers):
            number = customer_number(n)
            out.write(
                f'[[customer]]\nid = "bench-{n}"\nname = "Bench {n}"\nstatus = "active"\n'
                f'main_number = "{number}"\nnumbers = ["{number}"]\n'
                f'site_networks = ["{BENCH_NET}"]\n'
                '[customer.install_address]\nstreet = "Breebroekstraat"\nhouse_number = "61"\n'
                'postcode = "9030"\nmunicipality = "Gent"\ncountry = "BE"\n'
                f'[[customer.endpoint]]\nname = "bench-{n}"\nnumber = "{number}"\n\n')


def _digits(rng: random.Random, count: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(count))


def make_call(rng: random.Random, customers: int) -> Call:
    n = rng.randrange(customers)
    endpoint, caller = f"bench-{n}", customer_number(n)
    roll = rng.random()
    if roll < 0.55:
        prefix, length = rng.choice(NATIONAL)
        # a subscriber number never starts with 0 or 1 (09 0x… would be premium 090x)
        rest = prefix[1:] + rng.choice("23456789") + _digits(rng, length - 1)
        form = rng.random()
        dialled = "0" + rest if form < 0.8 else ("0032" + rest if form < 0.9 else "+32" + rest)
        return Call(endpoint, caller, dialled, "allow", "national", "+32" + rest)
    if roll < 0.79:
        rest = rng.choice(EU) + "1" + _digits(rng, 7)
        dialled = ("00" if rng.random() < 0.5 else "+") + rest
        return Call(endpoint, caller, dialled, "allow", "eu", "+" + rest)
    if roll < 0.80:
        dialled, dest = rng.choice(MUST_REACH)
        return Call(endpoint, caller, dialled, "allow", "must_reach", dest)
    if roll < 0.90:
        dialled = rng.choice(PREMIUM) + _digits(rng, 5)
        return Call(endpoint, caller, dialled, "block", "premium", "")
    rest = rng.choice(NON_EU) + "2" + _digits(rng, 7)
    dialled = ("00" if rng.random() < 0.5 else "+") + rest
    return Call(endpoint, caller, dialled, "block", "non_eu", "")


def make_calls(count: int, customers: int, seed: int = 5) -> list[Call]:
    rng = random.Random(seed)
    return [make_call(rng, customers) for _ in range(count)]


def write_sipp_csv(path: Path, calls: list[Call]) -> None:
    """SIPp -inf file: [field0] endpoint, [field1] caller, [field2] dialled, [field3] expect,
    [field4] line number (to tie each SIPp call back to its CSV line)."""
    with path.open("w") as out:
        out.write("SEQUENTIAL\n")
        for index, call in enumerate(calls):
            out.write(f"{call.endpoint};{call.caller};{call.dialled};{call.expect};{index}\n")
