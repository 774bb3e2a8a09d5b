"""Customers as `customer show` and `customer list` see them, and the image of a customer
(the audit rows' before/after) in its two forms: read from the database, or of a record
about to be written."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ..model import CustomerRecord, StoreError
from .audit import AuditLog

__all__ = ["JSON_LIST", "Customers", "customer_view"]

JSON_LIST = "(SELECT value FROM json_each(?))"  # `x IN` a JSON array: one parameter, any size


class Customers(AuditLog):
    """Reading customers; the base of every part that changes one."""

    async def customer(self, customer_id: str) -> dict[str, Any] | None:
        return (await self._customer_views([customer_id])).get(customer_id)

    async def _customer_views(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The given customers in full (as `customer` shows them), one query per table."""
        param = (json.dumps(list(ids)),)
        children: dict[str, dict[str, list[Any]]] = {}
        for table, columns in (("numbers", "number"), ("endpoints", "name, number"),
                               ("site_networks", "cidr"), ("forward_targets", "number")):
            children[table] = defaultdict(list)
            for r in await self._rows(
                    f"SELECT customer_id, {columns} FROM {table} "
                    f"WHERE customer_id IN {JSON_LIST} ORDER BY {columns.split(',')[0]}",
                    param):
                children[table][r[0]].append(
                    {"name": r[1], "number": r[2]} if table == "endpoints" else r[1])
        views = {}
        for row in await self._rows(f"SELECT * FROM customers WHERE id IN {JSON_LIST}", param):
            cid = row["id"]
            views[cid] = {
                "id": cid,
                "name": row["name"],
                "status": row["status"],
                "main_number": row["main_number"],
                "numbers": children["numbers"][cid],
                "install_address": {
                    "street": row["street"],
                    "house_number": row["house_number"],
                    "postcode": row["postcode"],
                    "municipality": row["municipality"],
                    "country": row["country"],
                },
                "site_networks": children["site_networks"][cid],
                "verified_forward_targets": children["forward_targets"][cid],
                "endpoints": children["endpoints"][cid],
            }
        return views

    async def customers(self) -> list[dict[str, Any]]:
        rows = await self._rows(
            """
            SELECT c.id, c.name, c.status, c.main_number,
                   (SELECT count(*) FROM numbers n WHERE n.customer_id = c.id) AS numbers,
                   (SELECT count(*) FROM endpoints e WHERE e.customer_id = c.id) AS endpoints,
                   (SELECT s.due_at FROM scheduled_suspensions s
                    WHERE s.customer_id = c.id AND s.state = 'pending') AS scheduled
            FROM customers c ORDER BY c.id
            """
        )
        return [dict(row) for row in rows]

    async def _customer_exists(self, customer_id: str) -> bool:
        return await self._scalar("SELECT 1 FROM customers WHERE id = ?", (customer_id,)) == 1

    async def _require_customer(self, customer_id: str) -> dict[str, Any]:
        customer = await self.customer(customer_id)
        if customer is None:
            raise StoreError(f"unknown customer {customer_id!r}")
        return customer


def customer_view(record: CustomerRecord, status: str) -> dict[str, Any]:
    """What `Store.customer` will show once the record is written with this status."""
    a = record.install_address
    return {
        "id": record.id,
        "name": record.name,
        "status": status,
        "main_number": record.main_number,
        "numbers": sorted(record.numbers),
        "install_address": {"street": a.street, "house_number": a.house_number,
                            "postcode": a.postcode, "municipality": a.municipality,
                            "country": a.country},
        "site_networks": sorted(record.site_networks),
        "verified_forward_targets": sorted(record.verified_forward_targets),
        "endpoints": [{"name": e.name, "number": e.number}
                      for e in sorted(record.endpoints, key=lambda e: e.name)],
    }
