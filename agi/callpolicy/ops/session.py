"""Opening the store for operations, and the customer check they share."""

from __future__ import annotations

from typing import Any

from ..service.config import Settings
from ..store import Store
from ..store import open_store as open_backend
from .errors import UnknownCustomer, store_problems

__all__ = ["open_store", "require_customer"]


@store_problems
async def open_store(settings: Settings, *, create: bool = False, readonly: bool = False
                     ) -> Store:
    """The configured database (`async with await open_store(...) as store`). Read commands
    open it read-only: they work on a full disk and for a user who may only read, and never
    migrate or set anything up. `create` makes a missing database (the first import)."""
    return await open_backend(settings.db, create=create, readonly=readonly)


async def require_customer(store: Store, customer_id: str) -> dict[str, Any]:
    """The customer's view; UnknownCustomer if there is none."""
    customer = await store.customer(customer_id)
    if customer is None:
        raise UnknownCustomer(customer_id)
    return customer
