"""A parsed customer import (`{"customer": [{…}, …]}`, from a file: import_file.py, or an
API body) -> validated CustomerRecords.

Every problem in the file is reported, one line each, naming the customer and the key; if
there is any, nothing is imported. Unknown keys are errors: a typo (`site_network`) must not
silently drop a customer's site networks.

Inputs are bounded (the file: import_file.py), every text value at most MAX_TEXT_LENGTH
characters. Validation is linear
in the size of the file (sets, not list scans, for a customer's numbers and endpoints).
"""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ..policy import Address, normalise_number
from ..policy.zones import ZoneTable, check_installation
from .model import CustomerRecord, EndpointRecord

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_CUSTOMER_KEYS = {"id", "name", "status", "main_number", "numbers", "site_networks",
                  "verified_forward_targets", "install_address", "endpoint"}
_ADDRESS_KEYS = {"street", "house_number", "postcode", "municipality", "country"}
_ENDPOINT_KEYS = {"name", "number"}
MAX_TEXT_LENGTH = 200  # characters in any text value (name, street, a number, a network…)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while an import runs: a big file makes millions of acyclic
    objects (parsed TOML, records, audit images) that each collection would scan again
    (a quarter of the time of a 100 000-customer import). The input is bounded."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class ImportPlan:
    records: list[CustomerRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def plan_customers(data: dict[str, Any], source: str, zones: ZoneTable, *,
                   accept_zone_violations: bool = False) -> ImportPlan:
    """`{"customer": [ … ]}` as parsed from an import file (or a JSON body), checked; each
    problem names `source` and the customer."""
    plan = ImportPlan()
    path = source
    extra = set(data) - {"customer"}
    if extra:
        plan.errors.append(
            f"{path}: unknown top-level keys {sorted(extra)} (expected only customer: "
            "[[customer]] tables, or a JSON list)")
    customers = data.get("customer")
    if not isinstance(customers, list) or not customers:
        plan.errors.append(f"{path}: no [[customer]] entries")
        return plan

    seen_ids: dict[str, int] = {}
    seen_numbers: dict[str, str] = {}
    seen_endpoints: dict[str, str] = {}
    for index, raw in enumerate(customers, start=1):
        where = f"{path}: customer #{index}"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str) and _ID.fullmatch(raw["id"]):
            where += f" ({raw['id']!r})"
        if not isinstance(raw, dict):
            plan.errors.append(f"{where}: not a table")
            continue
        errors: list[str] = []
        record = _record(raw, errors, zones, plan.warnings, accept_zone_violations)
        if record is not None:
            where = f"{path}: customer {record.id!r}"
            if record.id in seen_ids:
                errors.append(f"appears twice (also customer #{seen_ids[record.id]})")
            seen_ids[record.id] = index
            for number in record.numbers:
                if seen_numbers.setdefault(number, record.id) != record.id:
                    errors.append(f"number {number} also listed for {seen_numbers[number]!r}")
            for endpoint in record.endpoints:
                if seen_endpoints.setdefault(endpoint.name, record.id) != record.id:
                    errors.append(
                        f"endpoint {endpoint.name!r} also listed for "
                        f"{seen_endpoints[endpoint.name]!r}")
        plan.errors.extend(f"{where}: {e}" for e in errors)
        if record is not None and not errors:
            plan.records.append(record)
    if plan.errors:
        plan.records.clear()
    return plan


def _too_long(value: str, what: str, errors: list[str]) -> bool:
    if len(value) <= MAX_TEXT_LENGTH:
        return False
    errors.append(f"{what} is {len(value)} characters long (at most {MAX_TEXT_LENGTH})")
    return True


def _string(raw: dict[str, Any], key: str, errors: list[str], *, required: bool = True,
            default: str = "") -> str:
    value = raw.get(key)
    if value is None:
        if required:
            errors.append(f"missing {key}")
        return default
    if not isinstance(value, str) or not value.strip():
        errors.append(f"{key} must be a non-empty string")
        return default
    if _too_long(value, key, errors):
        return default
    if not value.isprintable() and any(
            unicodedata.category(c) in _UNSHOWABLE for c in value):  # not just a no-break space
        errors.append(f"{key} {value!r} holds control or formatting characters")
        return default
    return value.strip()


# control, formatting (bidi overrides), line/paragraph separators: names are shown on screens
_UNSHOWABLE = frozenset({"Cc", "Cf", "Zl", "Zp"})


def _strings(raw: dict[str, Any], key: str, errors: list[str]) -> list[str]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.append(f"{key} must be a list of strings")
        return []
    if max(map(len, value), default=0) <= MAX_TEXT_LENGTH:
        return value
    return [v for position, v in enumerate(value, start=1)
            if not _too_long(v, f"{key} #{position}", errors)]


def _belgian(number: str, what: str, errors: list[str]) -> str | None:
    e164 = normalise_number(number)
    if e164 is None or not e164.startswith("+32"):
        errors.append(f"{what} {number!r} is not a Belgian number")
        return None
    return e164


def _record(raw: dict[str, Any], errors: list[str], zones: ZoneTable, warnings: list[str],
            accept_zone_violations: bool) -> CustomerRecord | None:
    """One [[customer]] table as a record, or None with every problem in `errors`."""
    unknown = set(raw) - _CUSTOMER_KEYS
    if unknown:
        errors.append(f"unknown keys {sorted(unknown)}")
    customer_id = _string(raw, "id", errors)
    if customer_id and not _ID.fullmatch(customer_id):
        errors.append(f"id {customer_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    name = _string(raw, "name", errors)
    status = _string(raw, "status", errors, required=False, default="active")
    if status not in ("active", "suspended"):
        errors.append(f"status must be 'active' or 'suspended', got {status!r}")
    numbers, main = _numbers(raw, errors)
    networks = _site_networks(raw, errors)
    targets = _forward_targets(raw, errors)
    address = _address(raw.get("install_address"), errors)
    endpoints = _endpoints(raw, numbers, errors)
    if address is not None:
        check = check_installation(address, numbers, zones)
        errors.extend(check.address_errors)
        zone_warnings = list(check.warnings)
        if accept_zone_violations:
            zone_warnings += [f"{v} (accepted with --accept-zone-violations)"
                              for v in check.zone_violations]
        else:
            errors.extend(f"{v}; --accept-zone-violations imports it with a warning"
                          for v in check.zone_violations)
        warnings.extend(f"{customer_id}: {w}" for w in zone_warnings)

    if errors or address is None or main is None:
        return None
    return CustomerRecord(
        id=customer_id,
        name=name,
        status=status,
        main_number=main,
        numbers=tuple(numbers),
        install_address=address,
        site_networks=tuple(dict.fromkeys(networks)),
        verified_forward_targets=tuple(dict.fromkeys(targets)),
        endpoints=tuple(endpoints),
    )


def _numbers(raw: dict[str, Any], errors: list[str]) -> tuple[dict[str, None], str | None]:
    """The customer's numbers (E.164, ordered, deduplicated) and its main number, which is
    added to them when the table lists no numbers."""
    numbers: dict[str, None] = {}  # ordered and deduplicated in linear time
    listed = _strings(raw, "numbers", errors)
    for number in listed:
        e164 = _belgian(number, "number", errors)
        if e164:
            numbers[e164] = None
    if not listed and "numbers" in raw:  # (numbers all refused are said one by one above)
        errors.append("numbers is empty")
    main_raw = _string(raw, "main_number", errors)
    main = _belgian(main_raw, "main_number", errors) if main_raw else None
    if main and main not in numbers:
        if "numbers" in raw:
            errors.append(f"main_number {main_raw!r} is not one of the customer's numbers")
        else:
            numbers[main] = None
    return numbers, main


def _site_networks(raw: dict[str, Any], errors: list[str]) -> list[str]:
    networks: list[str] = []
    for cidr in _strings(raw, "site_networks", errors):
        network = _network(cidr.strip())
        if network is None:
            errors.append(f"site network {cidr!r} is not a network (CIDR like 192.0.2.0/24)")
        elif _too_broad(network):
            errors.append(
                f"site network {cidr!r} is too broad (at most /{WIDEST_SITE_NETWORK[4]} for "
                f"IPv4, /{WIDEST_SITE_NETWORK[6]} for IPv6): an emergency call from anywhere "
                "inside it is taken as made at the customer's address")
        else:
            networks.append(network)
    return networks


# ip version -> the shortest prefix a customer's premises can have: wider would make an
# emergency call from much of the Internet count as located at the customer's address
WIDEST_SITE_NETWORK = {4: 8, 6: 16}


def _too_broad(network: str) -> bool:
    parsed = ipaddress.ip_network(network)
    return parsed.prefixlen < WIDEST_SITE_NETWORK[parsed.version]


def _forward_targets(raw: dict[str, Any], errors: list[str]) -> list[str]:
    targets: list[str] = []
    for number in _strings(raw, "verified_forward_targets", errors):
        e164 = normalise_number(number)
        if e164 is None:
            errors.append(f"verified forward target {number!r} is not a number")
        else:
            targets.append(e164)
    return targets


def _endpoints(raw: dict[str, Any], numbers: dict[str, None],
               errors: list[str]) -> list[EndpointRecord]:
    endpoints: dict[str, EndpointRecord] = {}
    raw_endpoints = raw.get("endpoint", [])
    if not isinstance(raw_endpoints, list):
        errors.append("endpoint must be an array of tables ([[customer.endpoint]])")
        raw_endpoints = []
    for position, item in enumerate(raw_endpoints, start=1):
        if not isinstance(item, dict):
            errors.append(f"endpoint #{position} is not a table")
            continue
        if set(item) - _ENDPOINT_KEYS:
            unknown_keys = sorted(set(item) - _ENDPOINT_KEYS)
            errors.append(f"endpoint #{position}: unknown keys {unknown_keys}")
        endpoint = _endpoint(item, position, numbers, errors)
        if endpoint is not None:
            if endpoint.name in endpoints:
                errors.append(f"endpoint {endpoint.name!r} listed twice")
            endpoints[endpoint.name] = endpoint
    return list(endpoints.values())


def _endpoint(item: dict[str, Any], position: int, numbers: dict[str, None],
              errors: list[str]) -> EndpointRecord | None:
    endpoint_errors: list[str] = []
    endpoint_name = _string(item, "name", endpoint_errors)
    if endpoint_name and not _ID.fullmatch(endpoint_name):
        endpoint_errors.append(
            f"name {endpoint_name!r} must be 1-64 letters, digits, '.', '_' or '-'")
    number_raw = _string(item, "number", endpoint_errors, required=False)
    endpoint_number = _belgian(number_raw, "number", endpoint_errors) if number_raw else None
    if endpoint_number and endpoint_number not in numbers:
        endpoint_errors.append(f"number {number_raw!r} is not one of the customer's numbers")
    label = endpoint_name or f"#{position}"
    errors.extend(f"endpoint {label}: {e}" for e in endpoint_errors)
    if endpoint_name and not endpoint_errors:
        return EndpointRecord(endpoint_name, endpoint_number)
    return None


@lru_cache(maxsize=4096)  # many customers of a file share a network; parsing is the cost
def _network(cidr: str) -> str | None:
    try:
        return str(ipaddress.ip_network(cidr, strict=False))
    except ValueError:
        return None


def _address(raw: object, errors: list[str]) -> Address | None:
    if raw is None:
        errors.append("missing install_address (art. 3.8: every customer has one, in Belgium)")
        return None
    if not isinstance(raw, dict):
        errors.append("install_address must be a table")
        return None
    unknown = set(raw) - _ADDRESS_KEYS
    if unknown:
        errors.append(f"install_address: unknown keys {sorted(unknown)}")
    address_errors: list[str] = []
    values = {key: _string(raw, key, address_errors) for key in sorted(_ADDRESS_KEYS)}
    errors.extend(f"install_address: {e}" for e in address_errors)
    if address_errors:
        return None
    return Address(values["street"], values["house_number"], values["postcode"],
                   values["municipality"], values["country"].upper())
