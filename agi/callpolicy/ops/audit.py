"""The audit log: every change, who made it and why."""

from __future__ import annotations

from typing import Any

from ..store import Store
from .errors import store_problems
from .session import require_customer

__all__ = ["audit_log"]


@store_problems
async def audit_log(store: Store, customer_id: str | None, limit: int) -> list[dict[str, Any]]:
    """The last `limit` audit entries (of one customer)."""
    if customer_id is not None:
        await require_customer(store, customer_id)
    return await store.audit_log(customer_id, limit)
