"""What the daemons' Snapshot is loaded and refreshed from (store/snapshot.py): customers and
endpoints as the policy sees them, and the audit log's high-water mark."""

from __future__ import annotations

import asyncio
import ipaddress
import sqlite3
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from ...policy import Address, Customer, Endpoint, FraudLimits, Unblock, UnblockKind
from ..model import LIMIT_FIELDS, AuditTail, iso, parse_iso, utcnow
from .connection import Connection

__all__ = ["SnapshotQueries"]


class SnapshotQueries(Connection):
    """The snapshot's reads: policy values and the audit high-water mark."""

    async def audit_high_water(self) -> int:
        return int(await self._scalar("SELECT coalesce(max(id), 0) FROM audit"))

    async def audit_at(self, audit_id: int) -> str | None:
        """When audit row `audit_id` was written (None: no such row; 0 is "no row yet")."""
        if audit_id == 0:
            return None
        return await self._scalar("SELECT at FROM audit WHERE id = ?", (audit_id,))

    async def changed_customers(self, since: int) -> tuple[set[str], int]:
        tail = await self.audit_tail(since)
        return set(tail.changed), tail.high_water

    async def audit_tail(self, since: int) -> AuditTail:
        rows = await self._rows(
            "SELECT id, customer_id, at FROM audit WHERE id >= ? ORDER BY id", (since,))
        since_at = rows[0]["at"] if rows and rows[0]["id"] == since and since else None
        later = rows[1:] if since_at is not None else rows
        if not later:
            return AuditTail(since_at, frozenset(), since, since_at)
        return AuditTail(since_at, frozenset(r["customer_id"] for r in later if r["customer_id"]),
                         later[-1]["id"], later[-1]["at"])

    async def load_customers(self, ids: Iterable[str] | None = None) -> dict[str, Customer]:
        """Customers as the policy sees them: all of them, or the given ids. All of them are
        built off the event loop (100 000 customers take a second or more)."""
        id_list = None if ids is None else list(ids)
        if id_list is not None and not id_list:
            return {}
        rows = await self._customer_rows(id_list)
        if id_list is None:
            return await asyncio.to_thread(_customers_from_rows, rows)
        return _customers_from_rows(rows)

    async def _customer_rows(self, ids: list[str] | None) -> _CustomerRows:
        params: tuple[str, ...]
        if ids is None:
            where, params = "", ()
        else:
            where = f" WHERE customer_id IN ({','.join('?' * len(ids))})"
            params = tuple(ids)
        also = " AND" if where else " WHERE"
        now = iso(utcnow())
        return _CustomerRows(
            customers=await self._rows(
                f"SELECT * FROM customers{where.replace('customer_id', 'id')}", params),
            numbers=await self._rows(f"SELECT customer_id, number FROM numbers{where}", params),
            networks=await self._rows(
                f"SELECT customer_id, cidr FROM site_networks{where}", params),
            targets=await self._rows(
                f"SELECT customer_id, number FROM forward_targets{where}", params),
            # The same rule as policy.unblock_state, in SQL so that revoked and expired rows
            # are not loaded; the engine applies Unblock.active again at decision time.
            unblocks=await self._rows(
                "SELECT id, customer_id, kind, value, ticket, expires_at FROM unblocks"
                f"{where}{also} revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)",
                (*params, now)),
            suspensions=await self._rows(
                f"SELECT customer_id, ticket FROM suspensions{where}{also} lifted_at IS NULL"
                " ORDER BY id", params),
            schedules=await self._rows(
                f"SELECT customer_id, due_at, ticket FROM scheduled_suspensions{where}{also}"
                " state = 'pending'", params),
            limits=await self._rows(
                f"SELECT customer_id, {', '.join(LIMIT_FIELDS)} FROM fraud_limits{where}",
                params),
        )

    async def load_endpoints_named(self, names: Iterable[str]) -> list[Endpoint]:
        name_list = list(names)
        if not name_list:
            return []
        rows = await self._rows(
            "SELECT name, customer_id, number FROM endpoints WHERE name IN "
            f"({','.join('?' * len(name_list))})", name_list)
        return [Endpoint(r[0], r[1], r[2]) for r in rows]

    async def load_endpoints(self, ids: Iterable[str] | None = None) -> list[Endpoint]:
        if ids is None:
            rows = await self._rows("SELECT name, customer_id, number FROM endpoints")
        else:
            id_list = list(ids)
            rows = await self._rows(
                "SELECT name, customer_id, number FROM endpoints WHERE customer_id IN "
                f"({','.join('?' * len(id_list))})", id_list) if id_list else []
        return [Endpoint(r[0], r[1], r[2]) for r in rows]


@dataclass(frozen=True, slots=True)
class _CustomerRows:
    """What load_customers reads, before it becomes Customer values."""

    customers: list[sqlite3.Row]
    numbers: list[sqlite3.Row]
    networks: list[sqlite3.Row]
    targets: list[sqlite3.Row]
    unblocks: list[sqlite3.Row]
    suspensions: list[sqlite3.Row]
    schedules: list[sqlite3.Row]
    limits: list[sqlite3.Row]


def _customers_from_rows(rows: _CustomerRows) -> dict[str, Customer]:
    numbers: dict[str, list[str]] = defaultdict(list)
    for r in rows.numbers:
        numbers[r[0]].append(r[1])
    networks: dict[str, list] = defaultdict(list)
    for r in rows.networks:
        networks[r[0]].append(ipaddress.ip_network(r[1]))
    targets: dict[str, list[str]] = defaultdict(list)
    for r in rows.targets:
        targets[r[0]].append(r[1])
    unblocks: dict[str, list[Unblock]] = defaultdict(list)
    for r in rows.unblocks:
        unblocks[r["customer_id"]].append(
            Unblock(r["id"], UnblockKind(r["kind"]), r["value"], r["ticket"],
                    parse_iso(r["expires_at"])))
    tickets = {r[0]: r[1] for r in rows.suspensions}
    schedules = {r[0]: (parse_iso(r[1]), r[2]) for r in rows.schedules}
    limits = {r[0]: FraudLimits(r[1], r[2], r[3]) for r in rows.limits}
    result = {}
    for r in rows.customers:
        cid = r["id"]
        suspend_at, suspend_at_ticket = schedules.get(cid, (None, ""))
        result[cid] = Customer(
            id=cid,
            name=r["name"],
            suspended=r["status"] == "suspended",
            main_number=r["main_number"],
            numbers=frozenset(numbers[cid]),
            install_address=Address(r["street"], r["house_number"], r["postcode"],
                                    r["municipality"], r["country"]),
            site_networks=tuple(networks[cid]),
            verified_forward_targets=frozenset(targets[cid]),
            unblocks=tuple(unblocks[cid]),
            suspension_ticket=tickets.get(cid, ""),
            limits=limits.get(cid, FraudLimits()),
            suspend_at=suspend_at,
            suspend_at_ticket=suspend_at_ticket,
        )
    return result
