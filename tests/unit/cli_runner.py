"""Running the real `callpolicy` CLI in a subprocess, as a user would (shared by CLI tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run(*args: str, db: Path | None = None, config: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CALLPOLICY_")}
    environ["CALLPOLICY_CONFIG"] = str(config or REPO / "config" / "callpolicy.toml")
    environ.update(env or {})
    argv = [sys.executable, "-m", "callpolicy.cli", *args]
    if db is not None:
        argv += ["--db", str(db)]
    result = subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=60,
                            check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def one_error_line(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "error" in lines[0] and text in lines[0], lines[0]


def demo_database(directory: Path) -> Path:
    """The demo customers imported with the real CLI into directory/cp.db (~0.3 s: a module
    imports once and gives each test a copy, copy_database)."""
    path = directory / "cp.db"
    result = run("customer", "import", str(REPO / "config" / "demo-customers.toml"),
                 "--by", "tester", db=path)
    assert result.returncode == 0, result.stderr
    assert "2 created" in result.stdout, result.stdout
    return path


def copy_database(source: Path, target: Path) -> Path:
    """A test's own copy of a closed SQLite database (its WAL too, if one was left)."""
    for suffix in ("", "-wal"):
        if Path(f"{source}{suffix}").exists():
            shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")
    return target
