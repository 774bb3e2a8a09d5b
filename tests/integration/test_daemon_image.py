"""The daemon's container image (asterisk-docker/callpolicy.Dockerfile, built by
scripts/images.sh with buildah) runs `callpolicy`: --help, a customer import and a `check` on a
state directory mounted into it, and `serve` answering one FastAGI conversation on loopback.

Needs root and buildah (scripts/install-deps.sh): without them the test FAILS. A cold build
takes minutes (bases from mmdebstrap, apt and pip in the RUN steps); a cached one a second.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit"))
from agi_peer import env_block, parse_mset  # noqa: E402

from ports import free_port  # noqa: E402

IMAGES = REPO / "scripts" / "images.sh"


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("buildah") is None:
        pytest.fail("the image tests need root and buildah (scripts/install-deps.sh)",
                    pytrace=False)
    start = time.monotonic()
    built = subprocess.run([str(IMAGES), "build", "callpolicy"], capture_output=True,
                           text=True, timeout=1500, check=False)
    assert built.returncode == 0, built.stderr[-4000:]
    ref = built.stdout.split()[-1]
    print(f"daemon image {ref} ready in {time.monotonic() - start:.1f}s")
    ctr = subprocess.run(["buildah", "from", "--quiet", "--pull-never", ref],
                         capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    try:
        yield ctr
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True, timeout=120, check=False)


@pytest.fixture
def state(tmp_path: Path) -> tuple[Path, int]:
    """A state dir for /state in the container: the repo's config (database and FastAGI port
    changed), the demo customers. World-writable: the image runs as nobody."""
    port = free_port()
    text = (REPO / "config" / "callpolicy.toml").read_text()
    for old, new in (('path = "/var/lib/callpolicy/callpolicy.db"', 'path = "/state/cp.db"'),
                     ('listen = "127.0.0.1:4573"', f'listen = "127.0.0.1:{port}"'),
                     ('listen = "127.0.0.1:9464"', 'listen = "127.0.0.1:0"')):
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "callpolicy.toml").write_text(text)
    shutil.copy(REPO / "config" / "demo-customers.toml", tmp_path / "customers.toml")
    tmp_path.chmod(0o777)
    return tmp_path, port


def run_args(ctr: str, state_dir: Path, *args: str) -> list[str]:
    return ["buildah", "run", "--isolation", "chroot", "-v", f"{state_dir}:/state", ctr, "--",
            "callpolicy", "--config", "/state/callpolicy.toml", *args]


def run(ctr: str, state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(run_args(ctr, state_dir, *args), capture_output=True, text=True,
                          timeout=120, check=False)


def ask(port: int, dialled: str, deadline: float) -> dict[str, str]:
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    with sock:
        sock.settimeout(5)
        sock.sendall(env_block(dialled))
        line = sock.makefile("rb").readline().decode()
        sock.sendall(b"200 result=0\n")
    return parse_mset(line)


def test_help_check_and_serve_in_the_daemon_image(container: str, state) -> None:
    state_dir, port = state
    helped = subprocess.run(["buildah", "run", "--isolation", "chroot", container, "--",
                             "callpolicy", "--help"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert helped.returncode == 0 and "usage: callpolicy" in helped.stdout, helped

    imported = run(container, state_dir, "customer", "import", "/state/customers.toml",
                   "--by", "image-test", "--ticket", "T-IMG")
    assert imported.returncode == 0, imported.stderr
    checked = run(container, state_dir, "check", "--json", "--customer", "acme", "0905123456",
                  "092101299")
    assert checked.returncode == 0, checked.stderr
    decided = [json.loads(line) for line in checked.stdout.splitlines()]
    assert [(d["action"], d["reason"]) for d in decided] == [("block", "premium"),
                                                           ("allow", "allowed")], decided

    log = (state_dir / "serve.log").open("wb")
    daemon = subprocess.Popen(run_args(container, state_dir, "serve"), stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        reply = ask(port, "0905123456", deadline=time.monotonic() + 60)
        assert reply["CP_ACTION"] == "block" and reply["CP_REASON"] == "premium", reply
        assert reply["CP_SOURCE"] == "daemon", reply
    finally:
        daemon.terminate()  # buildah passes the signal on to the daemon
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=20)
        log.close()
    served = (state_dir / "serve.log").read_text()
    assert '"event": "decision"' in served, served[-2000:]
