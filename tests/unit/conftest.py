"""Shared fixtures for the pure policy core (agi/callpolicy/policy).

Everything here is immutable (frozen dataclasses), so the fixtures are session-scoped: that
keeps them usable from hypothesis tests (no function-scoped fixture health check) and cheap.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import pytest

from callpolicy.policy import (
    Address,
    CallRequest,
    Customer,
    Decision,
    Endpoint,
    Engine,
    PolicyConfig,
    Snapshot,
    Unblock,
    build_policy_config,
)

# The engine has no clock: every request carries its own `now`.
NOW = datetime(2025, 6, 2, 14, 30, tzinfo=UTC)

ACME_MAIN = "+3292101234"
ACME_SECOND = "+3292101235"
ACME_NUMBERS = frozenset({ACME_MAIN, ACME_SECOND})
ACME_FORWARD_TARGET = "+32475123456"
ACME_SITE = ipaddress.ip_network("192.0.2.0/24")
ACME_ADDRESS = Address(
    street="Breebroekstraat",
    house_number="61",
    postcode="9030",
    municipality="Gent",
    country="BE",
)

SUSPENDED_MAIN = "+3225551234"
SUSPENDED_NUMBERS = frozenset({SUSPENDED_MAIN, "+3225551235"})

# Endpoints: acme-101 has its own number, acme-102 falls back to the main number.
ACME_ENDPOINT = "acme-101"
ACME_ENDPOINT_NUMBER = ACME_SECOND
ACME_BARE_ENDPOINT = "acme-102"
SUSPENDED_ENDPOINT = "brol-201"


def make_customer(
    customer_id: str = "acme",
    *,
    name: str | None = None,
    suspended: bool = False,
    main_number: str = ACME_MAIN,
    numbers: Iterable[str] = ACME_NUMBERS,
    install_address: Address | None = ACME_ADDRESS,
    site_networks: Iterable[str] = (str(ACME_SITE),),
    verified_forward_targets: Iterable[str] = (ACME_FORWARD_TARGET,),
    unblocks: Iterable[Unblock] = (),
    suspension_ticket: str = "",
    suspend_at: datetime | None = None,
    suspend_at_ticket: str = "",
) -> Customer:
    """A Customer, by default the demo customer "acme" (active, no unblocks)."""
    return Customer(
        id=customer_id,
        name=name or customer_id.title(),
        suspended=suspended,
        main_number=main_number,
        numbers=frozenset(numbers),
        install_address=install_address,
        site_networks=tuple(ipaddress.ip_network(n) for n in site_networks),
        verified_forward_targets=frozenset(verified_forward_targets),
        unblocks=tuple(unblocks),
        suspension_ticket=suspension_ticket,
        suspend_at=suspend_at,
        suspend_at_ticket=suspend_at_ticket,
    )


def make_suspended_customer() -> Customer:
    return make_customer(
        "brol",
        name="Brol bvba",
        suspended=True,
        main_number=SUSPENDED_MAIN,
        numbers=SUSPENDED_NUMBERS,
        install_address=Address("Wetstraat", "16", "1000", "Brussel", "BE"),
        site_networks=("198.51.100.0/24",),
        verified_forward_targets=(),
        suspension_ticket="T-5.7-42",
    )


DEFAULT_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(ACME_ENDPOINT, "acme", ACME_ENDPOINT_NUMBER),
    Endpoint(ACME_BARE_ENDPOINT, "acme", None),
    Endpoint(SUSPENDED_ENDPOINT, "brol", SUSPENDED_MAIN),
)


def make_snapshot(
    customers: Iterable[Customer],
    *,
    config: PolicyConfig | None = None,
    endpoints: Iterable[Endpoint] = DEFAULT_ENDPOINTS,
    number_owners: Mapping[str, str] | None = None,
) -> Snapshot:
    """A snapshot; number_owners defaults to every customer's numbers."""
    customers = tuple(customers)
    if number_owners is None:
        number_owners = {n: c.id for c in customers for n in c.numbers}
    return Snapshot(
        config or build_policy_config(),
        customers={c.id: c for c in customers},
        endpoints={e.name: e for e in endpoints},
        number_owners=dict(number_owners),
    )


class EngineFactory(Protocol):
    def __call__(
        self,
        *customers: Customer,
        config: PolicyConfig | None = None,
        endpoints: Iterable[Endpoint] = ...,
    ) -> Engine: ...


Decide = Callable[..., Decision]


# Test modules get these through fixtures, not `from conftest import ...` (ambiguous once
# several conftest.py files exist outside packages).


@pytest.fixture(scope="session")
def now() -> datetime:
    return NOW


@pytest.fixture(scope="session")
def config() -> PolicyConfig:
    return build_policy_config()


@pytest.fixture(scope="session")
def customer_factory() -> Callable[..., Customer]:
    """make_customer(customer_id="acme", **overrides): acme's defaults unless overridden."""
    return make_customer


@pytest.fixture(scope="session")
def acme() -> Customer:
    return make_customer()


@pytest.fixture(scope="session")
def suspended_customer() -> Customer:
    return make_suspended_customer()


@pytest.fixture(scope="session")
def make_engine(config: PolicyConfig) -> EngineFactory:
    """Engine factory: with no customers given, the demo acme and the suspended customer."""

    def factory(
        *customers: Customer,
        config: PolicyConfig | None = config,
        endpoints: Iterable[Endpoint] = DEFAULT_ENDPOINTS,
    ) -> Engine:
        if not customers:
            customers = (make_customer(), make_suspended_customer())
        return Engine(make_snapshot(customers, config=config, endpoints=endpoints))

    return factory


@pytest.fixture(scope="session")
def engine(make_engine: EngineFactory) -> Engine:
    return make_engine()


@pytest.fixture(scope="session")
def decide(engine: Engine) -> Decide:
    """decide("09 210 12 34", customer_id="acme", **CallRequest fields) -> Decision.

    customer_id defaults to "acme"; pass customer_id=None to resolve from the endpoint or the
    forwarding number; pass engine=... to use another engine.
    """

    def _decide(
        dialled: str,
        *,
        customer_id: str | None = "acme",
        now: datetime = NOW,
        engine: Engine = engine,
        **fields: Any,
    ) -> Decision:
        return engine.decide(CallRequest(dialled, now, customer_id=customer_id, **fields))

    return _decide


@pytest.fixture(params=["sqlite", "postgresql"])
def db_location(request: pytest.FixtureRequest, tmp_path) -> str:
    """Where a store test keeps its database: a SQLite file, or a fresh PostgreSQL database
    on the session's test server (tests/pg.py). The store's tests take this to run on both."""
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "cp.db")


@pytest.fixture
def api(tmp_path):
    """A live HTTP API (tests/unit/api_server.py) over the demo customers."""
    from api_server import serve

    with serve(tmp_path) as live:
        yield live
