"""Demo credentials live only in demo files; what ships for production has no secret."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECRET = re.compile(r"^\s*(secret|password)\s*=\s*\S", re.IGNORECASE | re.MULTILINE)


def test_shipped_asterisk_config_has_no_secret() -> None:
    for path in sorted((REPO / "config" / "asterisk").glob("*.conf")):
        assert not SECRET.search(path.read_text()), f"{path} holds a secret"


def test_production_daemon_config_has_no_secret() -> None:
    assert not SECRET.search((REPO / "config" / "callpolicy.toml").read_text())


def test_demo_secret_is_marked_demo_only() -> None:
    for path in (REPO / "config" / "demo" / "manager-users.conf", REPO / "config" / "demo.toml"):
        text = path.read_text()
        assert "demo-only-change-me" in text and "DEMO" in text
