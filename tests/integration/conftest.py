"""Fixtures for the acceptance tests: real SIP (SIPp) through a real Asterisk 22.

    asterisk        (session) harness.Asterisk: .rx(cmd), .full_log, .reload_dialplan(),
                    .restart(), .hangup_all(), .log_mark()/.log_since(mark)/.wait_for_log(),
                    .state_dir (CALLPOLICY_STATE_DIR of the run), .run_dir
    trunk           harness.Trunk on 127.0.0.3:5080 for the test: .invites, .reinvites,
                    .messages, .invite_for(user), .wait_for_invites(n), .reconfigure(...).
                    Answers 200 unless the test says otherwise:
                        @pytest.mark.trunk(reply=486)
                        @pytest.mark.trunk(routes={"092101486": 486, "092101180": Reply(180)})
                        @pytest.mark.trunk(reply=200, ring=0.5, hold=3)
    call            SipClient.call(from_ip, dialled, *, caller_id=None, display=None,
                    privacy=False, extra_headers=None, hold=1.0, timeout=10) -> CallResult
    inbound_call    SipClient.inbound_call(dialled, caller_id, ...) -> CallResult
    transfer_call   SipClient.transfer_call(from_ip, first_dialled, refer_to, ...)
                    -> TransferResult
    sip_client      the SipClient behind the three above (artefacts under the test's tmp_path)

Every test that places a call gets the trunk (so nothing waits for a carrier that is not
there); after each test every Asterisk channel is hung up, then the trunk is stopped. When a
test fails, its report gets a "callpolicy harness" section: the trunk's message ladder, every
call's outcome and artefact directory, and the Asterisk log of the test.

Needs root (Asterisk runs in a chroot): without it the tests FAIL, they are not skipped.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import (
    Asterisk,
    AsteriskError,
    CallResult,
    HarnessError,
    SipClient,
    TransferResult,
    Trunk,
    sipp_binary,
)

_TRUNK = pytest.StashKey[Trunk]()
_CLIENT = pytest.StashKey[SipClient]()
_ASTERISK = pytest.StashKey[tuple[Asterisk, int]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "trunk(reply=200, routes=None, ring=0.0, hold=10.0): how the `trunk` fixture answers "
        "(harness.Trunk arguments)",
    )


@pytest.fixture(scope="session")
def asterisk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Asterisk]:
    if os.geteuid() != 0:
        pytest.fail("the integration tests need root: Asterisk runs in a chroot with its own "
                    "mount namespace (scripts/asterisk-run.sh)", pytrace=False)
    try:
        sipp_binary()
    except HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)

    base = tmp_path_factory.mktemp("asterisk")
    ast = Asterisk(base, state_dir=tmp_path_factory.mktemp("callpolicy-state"))

    # Stop Asterisk whatever happens: normal end, failures, Ctrl-C (pytest tears the session
    # down on KeyboardInterrupt), SIGTERM/SIGHUP (turned into KeyboardInterrupt here), and
    # atexit as the last resort. A SIGKILLed session's Asterisk is stopped by the next one.
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        def interrupt(signum: int, _frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous[sig] = signal.signal(sig, interrupt)
    atexit.register(ast.stop)
    try:
        try:
            ast.start()
        except AsteriskError as exc:
            pytest.fail(f"could not start Asterisk: {exc}", pytrace=False)
        yield ast
    finally:
        try:
            ast.stop()
        finally:
            atexit.unregister(ast.stop)
            for sig, handler in previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]


@pytest.fixture
def trunk(request: pytest.FixtureRequest, asterisk: Asterisk,
          tmp_path: Path) -> Iterator[Trunk]:
    marker = request.node.get_closest_marker("trunk")
    kwargs = dict(marker.kwargs) if marker else {}
    if marker and marker.args:
        kwargs.setdefault("reply", marker.args[0])
    t = Trunk(tmp_path / "sip", **kwargs)
    request.node.stash[_TRUNK] = t
    request.node.stash[_ASTERISK] = (asterisk, asterisk.log_mark())
    t.start()
    try:
        yield t
    finally:
        asterisk.hangup_all()
        t.stop()


@pytest.fixture
def sip_client(request: pytest.FixtureRequest, asterisk: Asterisk, trunk: Trunk,
               tmp_path: Path) -> SipClient:
    client = SipClient(tmp_path / "sip")
    request.node.stash[_CLIENT] = client
    return client


@pytest.fixture
def call(sip_client: SipClient) -> Callable[..., CallResult]:
    return sip_client.call


@pytest.fixture
def inbound_call(sip_client: SipClient) -> Callable[..., CallResult]:
    return sip_client.inbound_call


@pytest.fixture
def transfer_call(sip_client: SipClient) -> Callable[..., TransferResult]:
    return sip_client.transfer_call


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed or report.when == "teardown":
        return
    parts: list[str] = []
    client = item.stash.get(_CLIENT, None)
    if client is not None:
        for r in client.results:
            parts.append(r.describe().split("\n  artefacts: ")[0] + f"\n  artefacts: "
                         f"{r.artifacts}")
    t = item.stash.get(_TRUNK, None)
    if t is not None:
        parts.append(t.describe())
    ast = item.stash.get(_ASTERISK, None)
    if ast is not None:
        asterisk, mark = ast
        lines = asterisk.log_since(mark).splitlines()
        parts.append(f"{asterisk.describe()}\n-- full log of this test (last 60 lines):\n"
                     + "\n".join(lines[-60:]))
    if parts:
        report.sections.append(("callpolicy harness", "\n\n".join(parts)))


# The call-policy environment (demo customers, daemon): fixtures `live`, `daemon_up`; two
# nodes on PostgreSQL (cluster.py): `cluster`, `each_node_clean`.
from cluster import cluster, each_node_clean  # noqa: E402, F401
from policy_env import daemon_up, live  # noqa: E402, F401
