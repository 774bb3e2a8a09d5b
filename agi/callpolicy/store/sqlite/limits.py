"""A customer's own fraud limits (None: the operator default from config [fraud])."""

from __future__ import annotations

from ...policy import FraudLimits
from ..model import LIMIT_FIELDS, Actor, StoreError, iso, limits_dict, utcnow
from .customers import Customers
from .transaction import Transaction

__all__ = ["Limits"]


class Limits(Customers):
    """Reading and setting a customer's fraud limits."""

    async def limits(self, customer_id: str) -> FraudLimits:
        """The customer's own fraud limits; None = the operator default (config [fraud])."""
        if not await self._customer_exists(customer_id):
            raise StoreError(f"unknown customer {customer_id!r}")
        return await self._limits(customer_id)

    async def _limits(self, customer_id: str) -> FraudLimits:
        rows = await self._rows(
            f"SELECT {', '.join(LIMIT_FIELDS)} FROM fraud_limits WHERE customer_id = ?",
            (customer_id,))
        return FraudLimits(*rows[0]) if rows else FraudLimits()

    async def set_limits(self, customer_id: str, limits: FraudLimits, actor: Actor) -> bool:
        """Set the customer's own fraud limits (all three: None = the operator default).

        Audited as "limits.set" with the old and new overrides, which also makes a running
        daemon reload the customer. False, and nothing written, if they are already these."""
        for name in LIMIT_FIELDS:
            value = getattr(limits, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 0):
                raise StoreError(f"{name} must be a whole number >= 0 (or the default), "
                                 f"got {value!r}")
        now = utcnow()
        async with Transaction(self._db, self._write_lock):
            if not await self._customer_exists(customer_id):
                raise StoreError(f"unknown customer {customer_id!r}")
            before = await self._limits(customer_id)
            if before == limits:
                return False
            if limits == FraudLimits():
                await self._db.execute("DELETE FROM fraud_limits WHERE customer_id = ?",
                                       (customer_id,))
            else:
                await self._db.execute(
                    "INSERT INTO fraud_limits (customer_id, max_concurrent, max_per_minute,"
                    " max_concurrent_risky, updated_at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (customer_id) DO UPDATE SET"
                    " max_concurrent = excluded.max_concurrent,"
                    " max_per_minute = excluded.max_per_minute,"
                    " max_concurrent_risky = excluded.max_concurrent_risky,"
                    " updated_at = excluded.updated_at",
                    (customer_id, limits.max_concurrent, limits.max_per_minute,
                     limits.max_concurrent_risky, iso(now)))
            await self._audit(actor, "limits.set", customer_id, limits_dict(before),
                              limits_dict(limits), now)
        return True
