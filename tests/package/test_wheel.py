"""`pip install .` outside the checkout decides exactly as the repo: the zone table (art. 3.8),
the must-reach list and the defaults travel inside the wheel.

The wheel is built from this checkout and installed into a fresh venv; its dependencies come
from the test's own environment (no download), but not this checkout's callpolicy."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NUMBERS = ["092101299", "0905123456", "+41212345678", "+33142685300", "112", "1712",
           "0800 30 030", "+32 800 98 100", "070 245 245", "#31#092101299", "help"]
ZONE_VIOLATION = """
[[customer]]
id = "zonefail"
name = "Wrong Zone"
status = "active"
main_number = "+3225551299"
numbers = ["+3225551299"]
[customer.install_address]
street = "Breebroekstraat"
house_number = "1"
postcode = "9030"
municipality = "Gent"
country = "BE"
"""


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("CALLPOLICY_") and k not in ("PYTHONPATH", "PYTHONHOME")}


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=env or clean_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from this checkout; returns its bin directory."""
    base = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "-q", "-w", str(base / "dist"), str(REPO)], cwd=base, timeout=300)
    assert built.returncode == 0, built.stderr
    wheel = next((base / "dist").glob("callpolicy-*.whl"))
    venv = base / "venv"
    made = run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    fresh_site = run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                     cwd=base).stdout.strip()
    # The dependencies (phonenumbers, structlog…) from this environment's site-packages, as
    # a plain path: its .pth files (this checkout as an editable install) are not processed.
    Path(fresh_site, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    done = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                "--no-index", "-q", str(wheel)], cwd=base, timeout=300)
    assert done.returncode == 0, done.stderr
    return venv / "bin"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory far from the checkout, with a minimal config: no zones_file, no lists."""
    (tmp_path / "callpolicy.toml").write_text('[store]\npath = "cp.db"\n')
    return tmp_path


def test_the_wheel_imports_its_own_package(installed: Path, outside: Path) -> None:
    where = run([str(installed / "python"), "-c",
                 "import callpolicy; print(callpolicy.__file__)"], cwd=outside)
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(installed.parent)), where.stdout
    assert not where.stdout.startswith(str(REPO))


def test_installed_check_decides_exactly_as_the_repo(installed: Path, outside: Path) -> None:
    config = ["--config", str(outside / "callpolicy.toml")]
    imported = run([str(installed / "callpolicy"), *config, "customer", "import",
                    str(REPO / "config" / "demo-customers.toml"), "--by", "t", "--ticket", "w"],
                   cwd=outside)
    assert imported.returncode == 0, imported.stderr
    check = ["check", "--customer", "acme", "--endpoint", "acme-101", "--source-ip",
             "127.0.0.2", "--json", *NUMBERS]
    from_wheel = run([str(installed / "callpolicy"), *config, *check], cwd=outside)
    repo_env = {**clean_env(), "PYTHONPATH": str(REPO / "agi")}
    from_repo = run([sys.executable, "-m", "callpolicy.cli", *config, *check], cwd=outside,
                    env=repo_env)
    assert from_wheel.returncode == from_repo.returncode == 0, from_wheel.stderr
    wheel_decisions = [json.loads(line) for line in from_wheel.stdout.splitlines()]
    assert wheel_decisions == [json.loads(line) for line in from_repo.stdout.splitlines()]
    assert [d["reason"] for d in wheel_decisions] == [
        "allowed", "premium", "non_eu", "allowed", "emergency", "must_reach", "must_reach",
        "must_reach", "must_reach", "allowed", "invalid_number"]
    assert wheel_decisions[4]["location"] == "verified"


def test_installed_import_still_checks_the_zone_of_art_3_8(installed: Path,
                                                           outside: Path) -> None:
    path = outside / "zonefail.toml"
    path.write_text(ZONE_VIOLATION)
    result = run([str(installed / "callpolicy"), "--config", str(outside / "callpolicy.toml"),
                  "customer", "import", str(path), "--dry-run"], cwd=outside)
    assert result.returncode == 1, result.stdout
    assert "zone" in result.stderr and "09" in result.stderr, result.stderr


def test_installed_last_resort_dialplan_is_the_committed_one(installed: Path,
                                                             outside: Path) -> None:
    result = run([str(installed / "callpolicy"), "--config", str(REPO / "config" /
                  "callpolicy.toml"), "must-reach-dialplan"], cwd=outside)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (REPO / "dialplan" / "must-reach.conf").read_text()
