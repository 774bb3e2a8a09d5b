from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from pg import pg_server, pg_url  # noqa: F401 - fixtures for every test directory

REPO = Path(__file__).resolve().parents[1]

# No per-example time limit (hypothesis' default 200 ms is a timed assertion: a busy CI host
# fails it with DeadlineExceeded although the code is right), nor a "generation too slow" one.
settings.register_profile("callpolicy", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("callpolicy")
INTEGRATION = Path(__file__).resolve().parent / "integration"
PACKAGE = Path(__file__).resolve().parent / "package"


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist (`-n N --dist loadgroup`, as `make test` runs), the integration
    tests all run in ONE worker, one after another: they share that session's Asterisk (its
    ports, chroot and lock); the package tests in one too (setuptools builds the wheel in
    the checkout's build/); the other tests are spread over the workers."""
    for item in items:
        if INTEGRATION in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("asterisk"))
        elif PACKAGE in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("wheel"))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    """The group reaches xdist's scheduler through the node ids; pytest >= 9.2 silently loses
    it (pytest-xdist#1386), and integration tests spread over the workers would each wait
    300 s for another worker's Asterisk: stop at once and say why."""
    lost = [i for i in ids if i.startswith("tests/integration/") and "@asterisk" not in i]
    if lost:
        pytest.exit(f"pytest-xdist did not group {lost[0]} (and {len(lost) - 1} more) with the "
                    "Asterisk tests: run it with `--dist loadgroup` (as `make test` does); "
                    "with that, see the pytest pin in pyproject.toml", returncode=4)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def demo_customers() -> Path:
    return REPO / "config" / "demo-customers.toml"
