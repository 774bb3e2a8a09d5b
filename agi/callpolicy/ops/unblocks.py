"""A customer's exceptions to the default blocks (art. 3.10): unblock, reblock, list."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers

from ..policy import UnblockKind, national_form, normalise_prefix
from ..policy.destinations import country_code, in_eu
from ..policy.engine import prefix_unblock_effect
from ..policy.model import UNBLOCKABLE_CATEGORIES
from ..store import Actor, Store
from .errors import Field, InvalidRequest, store_problems
from .session import require_customer

__all__ = ["UnblockTarget", "Unblocked", "list_unblocks", "reblock", "unblock"]


@dataclass(frozen=True, slots=True)
class UnblockTarget:
    """What an unblock opens: a number prefix (E.164), a country outside the EU, or a
    category; `warnings` say when it opens less than it seems."""

    kind: UnblockKind
    value: str
    warnings: tuple[str, ...] = ()

    @classmethod
    def parse(cls, kind: UnblockKind, text: str, premium_prefixes: Iterable[str]
              ) -> UnblockTarget:
        """The target as given (a prefix national or E.164, a country code, a category),
        checked and normalised; InvalidRequest names the kind's field."""
        if kind is UnblockKind.PREFIX:
            return _prefix(text, premium_prefixes)
        if kind is UnblockKind.COUNTRY:
            region = text.strip().upper()
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise InvalidRequest(Field("country"), f" {text!r} is not an ISO 3166 "
                                     "country code")
            if in_eu(region):
                raise InvalidRequest(Field("country"), f" {region} is in the EU: calls there "
                                     "are not blocked")
            return cls(kind, region)
        category = text.strip().lower()
        if category not in UNBLOCKABLE_CATEGORIES:
            raise InvalidRequest(Field("category"),
                                 f" must be one of {', '.join(UNBLOCKABLE_CATEGORIES)}")
        return cls(kind, category)

    @property
    def shown(self) -> str:
        """The value as ops write it (a Belgian prefix in national form)."""
        return national_form(self.value) if self.kind is UnblockKind.PREFIX else self.value


def _prefix(text: str, premium_prefixes: Iterable[str]) -> UnblockTarget:
    prefix = normalise_prefix(text)
    if prefix is None:
        raise InvalidRequest(Field("prefix"), f" {text!r} is not a number prefix (national "
                             "like 0905, or +41…)")
    if country_code(prefix[1:]) is None:
        raise InvalidRequest(Field("prefix"), f" {text!r} does not start with a country code")
    warnings = []
    if prefix.startswith("+32"):
        effect = prefix_unblock_effect(prefix, tuple(premium_prefixes))
        if effect == "too_short":
            warnings.append(
                f"prefix {national_form(prefix)} is shorter than the blocked premium "
                "prefixes it covers; it opens none of them (longest prefix wins): "
                "give the full prefix (e.g. 0905) or use --category premium")
        elif effect == "not_blocked":
            warnings.append(f"prefix {national_form(prefix)} is not blocked by default; "
                            "this unblock changes nothing")
    return UnblockTarget(UnblockKind.PREFIX, prefix, tuple(warnings))


@dataclass(frozen=True, slots=True)
class Unblocked:
    id: int
    expires_at: datetime | None  # None: until reblocked


@store_problems
async def unblock(store: Store, customer_id: str, target: UnblockTarget, actor: Actor, *,
                  expires_at: datetime | None = None, lasting: timedelta | None = None
                  ) -> Unblocked:
    """Let the customer call `target` until `expires_at`, for `lasting` from now, or (neither)
    until reblocked."""
    if expires_at is not None and lasting is not None:
        raise InvalidRequest("give ", Field("expires"), " or ", Field("for"), ", not both")
    if lasting is not None:
        expires_at = datetime.now(UTC) + lasting
    await require_customer(store, customer_id)
    unblock_id = await store.add_unblock(customer_id, target.kind, target.value, actor,
                                         expires_at)
    return Unblocked(unblock_id, expires_at)


@store_problems
async def reblock(store: Store, customer_id: str, target: UnblockTarget,
                  actor: Actor) -> list[int]:
    """Revoke every active unblock of `target`; returns their ids."""
    await require_customer(store, customer_id)
    return await store.reblock(customer_id, target.kind, target.value, actor)


@store_problems
async def list_unblocks(store: Store, customer_id: str | None = None, *,
                        include_inactive: bool = False) -> list[dict[str, Any]]:
    """The unblocks (of one customer), active ones only unless `include_inactive`."""
    if customer_id is not None:
        await require_customer(store, customer_id)
    return await store.unblocks(customer_id, include_inactive=include_inactive)
