"""The Docker-less Asterisk path end to end: cached sid rootfs, chroot Asterisk 22 (the session's
`asterisk`), a SIPp phone calling through the plain dialplan to a SIPp trunk. The policy tests
build on this.

It is scripts/smoke-call.sh's call (092101299, answered, 1 s talk, hung up by the phone),
placed through the harness from `bare-phone` (127.0.0.6, context [bare]): the script's phone is
acme-101, whose calls go through the call policy, and the script has no setting for the phone.
"""

from __future__ import annotations

from harness import PHONES, Asterisk, Trunk


def test_real_call_reaches_the_trunk(asterisk: Asterisk, call, trunk: Trunk) -> None:
    mark = asterisk.log_mark()
    r = call(PHONES["bare-phone"], "092101299", caller_id="092101101", hold=1.0)
    # the phone: 200 OK, ACK, then its BYE answered 200
    assert r.status == 200, r
    assert any(m.direction == "sent" and m.method == "ACK" for m in r.messages), r
    assert r.bye_completed and r.hung_up_by == "phone", r
    # the trunk: one INVITE for sip:092101299@127.0.0.3, and Asterisk's BYE
    invite = trunk.wait_for_invites(1)[0]
    assert [i.ruri_user for i in trunk.invites] == ["092101299"], trunk.describe()
    assert invite.ruri.host == "127.0.0.3", trunk.describe()
    assert any(m.method == "BYE" for m in trunk.received), trunk.describe()
    # through the plain dialplan
    line = asterisk.wait_for_log(r"\[092101299@bare:1\]", since=mark)
    assert "PJSIP/bare-phone-" in line, line
