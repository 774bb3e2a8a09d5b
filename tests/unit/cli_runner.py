"""Running the real `callpolicy` CLI in a subprocess, as a user would (shared by CLI tests)."""

from __future__ import annotations

import os
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
