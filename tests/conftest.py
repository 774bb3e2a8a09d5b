from __future__ import annotations

from pathlib import Path

import pytest

from pg import pg_server, pg_url  # noqa: F401 - fixtures for every test directory

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def demo_customers() -> Path:
    return REPO / "config" / "demo-customers.toml"
