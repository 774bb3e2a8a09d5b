"""Issue 4 acceptance: live-call control over AMI with the real Asterisk, SIPp and the daemon.
Uses the `live` fixture of test_live_calls (demo customers, daemon under its watchdog)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from harness import Asterisk, Trunk
from policy_env import ACME_101, Live

MOROCCO = "+212522123456"


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_unblock_expiry_hangs_up_a_live_non_eu_call(live: Live, call, trunk: Trunk) -> None:
    live.cli("unblock", "acme", "--country", "MA", "--for", "3s", "--by", "tests",
             "--ticket", "T-MA")
    expires = time.time() + 3
    time.sleep(1.0)  # the daemon sees the unblock within a second
    result = call(ACME_101, MOROCCO, hold=20, timeout=40)
    ended = time.time()
    assert result.status == 200, result
    assert result.hung_up_by == "remote", result  # the phone got a BYE, it did not hang up
    assert ended - expires < 2.5, f"BYE {ended - expires:.1f} s after the unblock expired"
    assert trunk.invites[0].ruri_user == MOROCCO
    assert "call_revoked" in live.log.read_text()


def test_suspension_hangs_up_a_national_call_but_not_112(live: Live, call, trunk: Trunk,
                                                         asterisk: Asterisk) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        national = pool.submit(call, ACME_101, "092101299", hold=20, timeout=40)
        sos = pool.submit(call, ACME_101, "112", hold=6, timeout=40)
        trunk.wait_for_invites(2, timeout=10)
        time.sleep(0.5)  # both answered
        live.cli("customer", "suspend", "acme", "--by", "tests", "--ticket", "T-SUSP")
        suspended = time.time()
        try:
            national_result = national.result(timeout=40)
            national_ended = time.time()
            sos_result = sos.result(timeout=40)
        finally:
            live.cli("customer", "reactivate", "acme", "--by", "tests", "--ticket", "T-BACK")
    assert national_result.status == 200 and national_result.hung_up_by == "remote"
    assert national_ended - suspended < 2.5 + 1.0  # live within 1 s, hung up within 2 s
    assert sos_result.status == 200
    assert sos_result.hung_up_by == "phone", sos_result  # 112 survived the suspension
    log = live.log.read_text()
    assert '"reason": "suspended"' in log and "call_revoked" in log


def ami_logins(live: Live) -> int:
    return live.log.read_text().count('"event": "ami_connected"')


def test_ami_link_is_back_within_5_s_after_an_asterisk_restart(live: Live, asterisk: Asterisk,
                                                               call, trunk: Trunk) -> None:
    wait_for(lambda: ami_logins(live) >= 1, 10, "daemon never logged in to AMI")
    before = ami_logins(live)
    asterisk.restart()
    restarted = time.monotonic()
    wait_for(lambda: ami_logins(live) > before, 5, "AMI link not back within 5 s")
    print(f"AMI link back {time.monotonic() - restarted:.2f} s after Asterisk was up again")
    assert call(ACME_101, "092101299").status == 200  # and the tests go on


def test_daemon_restart_rebuilds_the_live_table(live: Live, call, trunk: Trunk) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        calls = [pool.submit(call, ACME_101, number, hold=12, timeout=40)
                 for number in ("092101299", MOROCCO)]
        trunk.wait_for_invites(1, timeout=10)
        time.sleep(1.0)
        live.stop()
        live.start()
        wait_for(lambda: '"event": "live_table_rebuilt"' in live.log.read_text(), 10,
                 "live table not rebuilt after the daemon restart")
        results = [c.result(timeout=40) for c in calls]
    rebuilt = [line for line in live.log.read_text().splitlines()
               if '"event": "live_table_rebuilt"' in line][-1]
    assert '"added": 1' in rebuilt, rebuilt  # the national call; Morocco was refused (403)
    assert results[0].status == 200 and results[1].status == 403
