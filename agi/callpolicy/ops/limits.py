"""A customer's fraud limits: show, set (a limit, or back to the operator default)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from ..policy import FraudLimits
from ..store import LIMIT_FIELDS, Actor, Store, limits_dict
from .errors import Field, InvalidRequest, store_problems
from .session import require_customer

__all__ = ["LimitChange", "LimitsSet", "limits_view", "set_limits", "show_limits"]


def limits_view(customer_id: str, own: FraudLimits, defaults: FraudLimits) -> dict[str, Any]:
    """The effective limits, where each comes from, the customer's own and the defaults."""
    effective = own.over(defaults)
    return {
        "customer": customer_id,
        "effective": limits_dict(effective),
        "source": {name: "customer" if getattr(own, name) is not None else "default"
                   for name in LIMIT_FIELDS},
        "customer_limits": limits_dict(own),
        "defaults": limits_dict(defaults),
    }


@dataclass(frozen=True, slots=True)
class LimitChange:
    """New values for some limits, and limits set back to the default (field `default`)."""

    values: Mapping[str, int]
    to_default: tuple[str, ...] = ()

    @classmethod
    def of(cls, values: Mapping[str, int], to_default: Iterable[str] = ()) -> LimitChange:
        change = cls(MappingProxyType(dict(values)), tuple(dict.fromkeys(to_default)))
        unknown = [n for n in (*change.values, *change.to_default) if n not in LIMIT_FIELDS]
        if unknown:
            raise InvalidRequest(f"{unknown[0]!r} is not a limit (one of "
                                 f"{', '.join(LIMIT_FIELDS)})")
        if not change.values and not change.to_default:
            limits = [part for i, name in enumerate(LIMIT_FIELDS)
                      for part in ((", " if i else ""), Field(name))]
            raise InvalidRequest("nothing to change: give ", *limits, " or ", Field("default"),
                                 " FIELD")
        for name in change.to_default:
            if name in change.values:
                raise InvalidRequest(Field(name), " and ", Field("default"),
                                     f" {name} contradict each other")
        return change

    def applied_to(self, own: FraudLimits) -> FraudLimits:
        return replace(own, **self.values, **dict.fromkeys(self.to_default))


@store_problems
async def show_limits(store: Store, customer_id: str, defaults: FraudLimits
                      ) -> dict[str, Any]:
    """limits_view of the customer (`defaults`: the config's [fraud])."""
    await require_customer(store, customer_id)
    return limits_view(customer_id, await store.limits(customer_id), defaults)


@dataclass(frozen=True, slots=True)
class LimitsSet:
    changed: bool  # False: already so, nothing written
    view: dict[str, Any]  # limits_view after the change


@store_problems
async def set_limits(store: Store, customer_id: str, change: LimitChange, actor: Actor,
                     defaults: FraudLimits) -> LimitsSet:
    await require_customer(store, customer_id)
    new = change.applied_to(await store.limits(customer_id))
    changed = await store.set_limits(customer_id, new, actor)
    return LimitsSet(changed, limits_view(customer_id, new, defaults))
