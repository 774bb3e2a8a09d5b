"""The Docker-less Asterisk path end to end: cached sid rootfs, chroot Asterisk 22, a SIPp phone
calling through the plain dialplan to a SIPp trunk. The policy tests build on this."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_real_call_reaches_the_trunk(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "the Asterisk chroot needs root (CI runs as root)"
    result = subprocess.run(
        [str(REPO / "scripts" / "smoke-call.sh")],
        env={**os.environ, "SMOKE_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PASS" in result.stderr
