"""The harness proves itself: real SIP from SIPp through the real Asterisk 22.

The first part needs no Asterisk (parsing). The rest places real calls, all of them from
`bare-phone` (127.0.0.6, config/asterisk/pjsip.conf), the one phone whose context is [bare]:
Dial(PJSIP/${EXTEN}@trunk,30), no policy, no daemon. So what is checked here (caller ID and
display name passed through, the trunk's 486 passed back, a blind transfer dialled as is in
[bare]) holds whatever [from-phones] does; the customers' phones (acme-101, ...) go through the
call policy and are tested with it. The inbound call lands in [from-trunk], which answers a
number nobody forwards with 404.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import PHONES, Asterisk, Reply, Trunk
from sip import NameAddr, SipMessage, parse_message_file, quote_display, unquote_display

# [bare]: straight to the trunk, whatever [from-phones] runs
BARE_PHONE = PHONES["bare-phone"]


# ------------------------------------------------------------------ parsing (no Asterisk)
def _trace(tmp_path: Path, *msgs: tuple[str, bytes]) -> Path:
    out = bytearray()
    for i, (direction, raw) in enumerate(msgs):
        ts = f"2026-01-01 10:00:0{i}.000000"
        head = (f"UDP message received [{len(raw)}] bytes :" if direction == "received"
                else f"UDP message sent ({len(raw)} bytes):")
        out += f"{'-' * 47} {ts}\n{head}\n\n".encode() + raw + b"\n"
    path = tmp_path / "messages.log"
    path.write_bytes(bytes(out))
    return path


GEO_INVITE = (
    b"INVITE sip:112@127.0.0.3:5080 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bKPj1\r\n"
    b'From: "ACME \\"HQ\\"" <sip:+3292101234@127.0.0.1;user=phone>;tag=abc\r\n'
    b"To: <sip:112@127.0.0.3>\r\n"
    b"Call-ID: geo-1\r\nCSeq: 10 INVITE\r\n"
    b"P-Asserted-Identity: <sip:+3292101234@127.0.0.1>, <tel:+3292101234>\r\n"
    b"Privacy: id\r\n"
    b"Diversion: <sip:+3292101236@127.0.0.1>;reason=unconditional;counter=1\r\n"
    b"Geolocation: <cid:loc-1@127.0.0.1>\r\nGeolocation-Routing: yes\r\n"
    b"X-Callpolicy-Location: verified\r\n"
    b"Content-Type: multipart/mixed;boundary=unique-boundary-1\r\n"
    b"Content-Length: 999\r\n\r\n"
    b"--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\nv=0\r\ns=-\r\n\r\n"
    b"--unique-boundary-1\r\nContent-Type: application/pidf+xml\r\n"
    b"Content-ID: <loc-1@127.0.0.1>\r\n\r\n"
    b'<?xml version="1.0"?>\r\n<presence><civicAddress><A3>Gent</A3><HNO>61</HNO>'
    b"</civicAddress></presence>\r\n"
    b"----------------------------------------------- not a separator, just body\r\n"
    b"--unique-boundary-1--\r\n"
)


def test_trace_parsing_headers_and_multipart_body(tmp_path: Path) -> None:
    path = _trace(tmp_path, ("received", GEO_INVITE), ("received", GEO_INVITE),
                  ("sent", b"SIP/2.0 486 Busy Here\r\nCSeq: 10 INVITE\r\nContent-Length: 0"
                           b"\r\n\r\n"))
    msgs = parse_message_file(path)
    assert [m.direction for m in msgs] == ["received", "sent"]  # retransmission dropped
    inv, resp = msgs
    assert inv.method == "INVITE" and inv.ruri_user == "112"
    assert inv.from_.display == 'ACME "HQ"' and inv.from_.user == "+3292101234"
    assert inv.from_.uri_params == {"user": "phone"} and inv.from_.tag == "abc"
    assert [p.uri.raw for p in inv.pai] == ["sip:+3292101234@127.0.0.1", "tel:+3292101234"]
    assert inv.privacy == "id"
    assert inv.diversion[0].user == "+3292101236"
    assert inv.diversion[0].params == {"reason": "unconditional", "counter": "1"}
    assert inv.geolocation == "<cid:loc-1@127.0.0.1>" and inv.geolocation_routing == "yes"
    assert inv.x_headers == {"X-Callpolicy-Location": "verified"}
    assert inv.content_type.startswith("multipart/mixed")
    assert [p.content_type for p in inv.parts] == ["application/sdp", "application/pidf+xml"]
    assert "<A3>Gent</A3>" in inv.pidf and "not a separator" in inv.pidf
    assert inv.part("application/pidf+xml").header("Content-ID") == "<loc-1@127.0.0.1>"
    assert resp.status == 486 and resp.reason_phrase == "Busy Here"
    assert resp.cseq == (10, "INVITE")


def test_name_addr_and_display_quoting() -> None:
    tricky = 'Evil" \\ <sip:x@y>;tag=1'
    quoted = quote_display(tricky)
    assert quoted == '"Evil\\" \\\\ <sip:x@y>;tag=1"'
    assert unquote_display(quoted) == tricky
    na = NameAddr.parse(f"{quoted} <sip:092101101@127.0.0.2:5060>;tag=9")
    assert na.display == tricky and na.user == "092101101" and na.tag == "9"
    assert na.uri.port == 5060
    bare = NameAddr.parse("sip:0475@127.0.0.1;tag=x")
    assert bare.display is None and bare.user == "0475" and bare.params == {"tag": "x"}


def test_trace_parsing_stops_at_a_half_written_message(tmp_path: Path) -> None:
    path = _trace(tmp_path, ("received", GEO_INVITE))
    data = path.read_bytes()
    path.write_bytes(data + data[:200])  # the writer is in the middle of the next one
    assert len(parse_message_file(path, dedupe=False)) == 1


# ------------------------------------------------------------------ real SIP
def test_phone_call_reaches_the_trunk(call, trunk: Trunk, asterisk: Asterisk) -> None:
    mark = asterisk.log_mark()
    r = call(BARE_PHONE, "092101299", caller_id="092101101", display="Alice",
             extra_headers={"X-Harness": "1"}, hold=0.2)
    assert r.status == 200, r
    assert r.bye_completed and r.hung_up_by == "phone", r
    assert r.setup_latency is not None and 0 < r.setup_latency < 2, r
    # what the phone sent: exactly what was asked for
    assert r.invite.ruri_user == "092101299"
    assert r.invite.from_.display == "Alice" and r.invite.from_.user == "092101101"
    assert r.invite.header("X-Harness") == "1"
    assert r.artifacts.joinpath("messages.log").is_file()

    invite = trunk.wait_for_invites(1)[0]
    assert len(trunk.invites) == 1, trunk.describe()
    assert invite.ruri_user == "092101299", trunk.describe()
    assert invite.ruri.host == "127.0.0.3"
    assert invite.to.user == "092101299"
    assert invite.content_type == "application/sdp" and invite.sdp.startswith("v=0")
    assert invite.body and invite.header("Call-ID")
    # the bare Dial passes the phone's identity on, with send_pai=yes on the trunk
    assert invite.from_.user == "092101101" and invite.from_.display == "Alice"
    assert [p.user for p in invite.pai] == ["092101101"], trunk.describe()
    assert invite.privacy is None and invite.diversion == [] and invite.geolocation is None
    assert invite.x_headers == {}  # Asterisk does not pass the phone's X- headers on
    # identified by its IP as bare-phone, so it ran [bare], not the policy
    line = asterisk.wait_for_log(r"\[092101299@bare:1\]", since=mark)
    assert "PJSIP/bare-phone-" in line, line


def test_privacy_request_is_sent_and_parsed(call, trunk: Trunk) -> None:
    r = call(BARE_PHONE, "092101298", caller_id="092101101", privacy=True, hold=0.1)
    assert r.status == 200, r
    assert r.invite.privacy == "id"
    assert [p.user for p in r.invite.pai] == ["092101101"]
    invite = trunk.invite_for("092101298")
    # trust_id_inbound=yes: Asterisk honours it, keeps the number in PAI, hides it in From
    assert invite.privacy == "id", trunk.describe()
    assert [p.user for p in invite.pai] == ["092101101"], trunk.describe()
    assert invite.from_.user != "092101101", trunk.describe()


@pytest.mark.trunk(routes={"092101486": 486, "092101503": Reply(503, ring=1.0)})
def test_trunk_rejections_reach_the_phone(call, trunk: Trunk) -> None:
    busy = call(BARE_PHONE, "092101486")
    assert busy.status == 486, busy
    assert busy.final.reason_phrase == "Busy Here"
    assert not busy.bye_completed
    # the phone ACKed the 486 in the INVITE's transaction (same branch)
    ack = next(m for m in busy.messages if m.direction == "sent" and m.method == "ACK")
    assert ack.via_branch == busy.invite.via_branch, busy
    assert [i.ruri_user for i in trunk.invites] == ["092101486"], trunk.describe()

    unavailable = call(BARE_PHONE, "092101503")
    assert unavailable.status == 503, unavailable
    assert 180 in unavailable.provisional, unavailable
    # setup latency counts to the 180, which the trunk sends at once (the 503 after 1 s)
    assert unavailable.setup_latency < 0.8, unavailable
    assert [i.ruri_user for i in trunk.invites] == ["092101486", "092101503"]


@pytest.mark.parametrize("display", [
    'Evil" <sip:attacker@evil.example>;tag=x \\',
    'a\\nb\\r\\n[service] [len] [$var] %s %n ]]> <![CDATA[ &amp; \u2028\u0085 \u00e9\u00e8',
])
def test_attacker_display_names_do_not_break_the_scenario(call, trunk: Trunk,
                                                          display: str) -> None:
    r = call(BARE_PHONE, "092101297", caller_id="092101101", display=display, hold=0.1)
    assert r.status == 200, r
    # sent byte for byte: SIPp did not interpret any of it
    assert r.invite.from_.display == display, r
    assert r.invite.from_.user == "092101101" and r.invite.ruri_user == "092101297"
    invite = trunk.invite_for("092101297")
    # Asterisk 22 keeps the escaped form as the caller name and escapes it once more on the
    # way out, so the trunk's display decodes to the phone's quoted-string minus its quotes
    assert invite.from_.display == quote_display(display)[1:-1], trunk.describe()


def test_fields_with_line_breaks_are_refused(call) -> None:
    for kwargs in ({"display": "a\r\nX-Injected: 1"}, {"caller_id": "1\n2"},
                   {"extra_headers": ["X-A: 1\r\nX-B: 2"]}):
        with pytest.raises(ValueError):
            call(BARE_PHONE, "092101299", **kwargs)
    with pytest.raises(ValueError):
        call(BARE_PHONE, "0921\n01299")


def test_inbound_call_lands_in_from_trunk(inbound_call, trunk: Trunk,
                                          asterisk: Asterisk) -> None:
    mark = asterisk.log_mark()
    r = inbound_call("092101234", caller_id="+32475123456", display="Caller", hold=0.1)
    # from 127.0.0.3:5070 = endpoint trunk, context from-trunk
    assert r.invite.header("Via").startswith("SIP/2.0/UDP 127.0.0.3:5070")
    line = asterisk.wait_for_log(r"\[092101234@from-trunk:1\]|context 'from-trunk'",
                                 since=mark)
    assert "PJSIP/trunk-" in line or "trunk: Call (UDP:127.0.0.3:5070)" in line, line
    # nobody forwards 092101234 (no callforward/ entry in AstDB): [from-trunk] refuses it
    # with 404 (PJSIPHangup(404); before the policy it was Hangup(1), cause 1 = 404 in SIP)
    assert r.status == 404, r
    assert trunk.invites == [], trunk.describe()  # the trunk receives nothing


def test_blind_transfer_makes_a_second_invite(transfer_call, trunk: Trunk,
                                              asterisk: Asterisk) -> None:
    assert "res_pjsip_refer.so" in asterisk.rx("module show like res_pjsip_refer"), \
        "REFER needs res_pjsip_refer.so in config/asterisk/modules.conf"
    mark = asterisk.log_mark()
    r = transfer_call(BARE_PHONE, "092101299", "092101300", caller_id="092101101")
    assert r.status == 200, r
    assert r.refer_status == 202, r
    assert r.sipfrag_statuses[-1] == r.final_sipfrag, r
    assert r.bye_completed, r
    invites = trunk.wait_for_invites(2)
    assert [i.ruri_user for i in invites] == ["092101299", "092101300"], trunk.describe()
    assert r.final_sipfrag == 200, r
    # bare-phone's channel has no TRANSFER_CONTEXT, so the transferee (the trunk's leg) dials
    # the Refer-To number in the transferor's context, [bare]: straight back to the trunk
    line = asterisk.wait_for_log(r"\[092101300@bare:1\]", since=mark)
    assert "PJSIP/trunk-" in line, line
    ran = re.findall(r"@(from-phones|callpolicy-[a-z-]+):\d+\]", asterisk.log_since(mark))
    assert not ran, f"the policy ran for a [bare] call: {sorted(set(ran))}"


def test_parallel_calls_from_one_phone(call, trunk: Trunk) -> None:
    numbers = [f"09210140{i}" for i in range(4)]
    started = time.monotonic()
    with ThreadPoolExecutor(len(numbers)) as pool:
        results = list(pool.map(lambda n: call(BARE_PHONE, n, hold=0.5), numbers))
    elapsed = time.monotonic() - started
    for r in results:
        assert r.status == 200 and r.bye_completed, r
    ports = {r.invite.header("Via").split()[1].split(";")[0] for r in results}
    assert len(ports) == len(numbers), ports  # one SIPp, one local port each
    assert f"{BARE_PHONE}:5060" in ports
    assert elapsed < 4, f"calls ran one after the other? {elapsed:.1f}s"
    assert sorted(i.ruri_user for i in trunk.wait_for_invites(4)) == numbers


@pytest.mark.trunk(reply=Reply(180, hold=5))
def test_trunk_that_never_answers_is_cancelled(call, trunk: Trunk, asterisk: Asterisk) -> None:
    r = call(BARE_PHONE, "092101180", hold=0.1, timeout=1.5)
    assert r.status is None and r.timed_out, r
    assert 180 in r.provisional, r
    trunk.wait_for_invites(1)
    assert asterisk.hangup_all(), "channels left in Asterisk"
    trunk.wait_for_request("CANCEL", timeout=10)
    sent = [m.status for m in trunk.messages if m.direction == "sent"]
    assert 487 in sent, trunk.describe()


def test_message_objects_are_sip_messages(call, trunk: Trunk) -> None:
    r = call(BARE_PHONE, "092101296", hold=0.1)
    assert all(isinstance(m, SipMessage) for m in r.messages + trunk.messages)
    assert r.invite.from_.user == "bare-phone"  # default From user: the endpoint's name


def test_reload_dialplan(asterisk: Asterisk, call, trunk: Trunk) -> None:
    """The repo's dialplan/ is copied in and reloaded; the reload must log no error (nor any
    pbx_config warning), and the plain path still works after it."""
    out = asterisk.reload_dialplan()
    assert "reloaded" in out.lower(), out
    r = call(BARE_PHONE, "092101294", hold=0.1)
    assert r.status == 200, r


def test_restart(asterisk: Asterisk, call, trunk: Trunk) -> None:
    """Last in this module: a restart wipes the run (AstDB too); start hooks re-seed it."""
    seeded: list[int] = []

    def seed(ast: Asterisk) -> None:
        ast.rx("database put harness probe yes")
        seeded.append(1)

    asterisk.add_start_hook(seed)
    try:
        old_log = asterisk.full_log.read_text(errors="replace")
        asterisk.restart()
        assert len(seeded) == 2, "start hook not run after the restart"
        assert "yes" in asterisk.rx("database get harness probe")
        kept = sorted(asterisk.base.glob("before-restart-*.full"))
        assert kept, list(asterisk.base.iterdir())
        assert kept[-1].read_text(errors="replace").startswith(old_log)
        r = call(BARE_PHONE, "092101295", hold=0.1)
        assert r.status == 200, r
    finally:
        asterisk._start_hooks.remove(seed)
        asterisk.rx("database del harness probe")
