"""AmiLink's event dispatch: one handler's bug must not stop the others, nor escape."""

from __future__ import annotations

import pytest

from callpolicy.asterisk.ami import _SLIM, AmiLink, EventProtocol, slim_event
from callpolicy.service.config import AmiSettings


def test_a_failing_handler_is_logged_and_the_others_still_run(capsys) -> None:
    link = AmiLink(AmiSettings())
    seen: list[str] = []

    def broken(_event: dict[str, str]) -> None:
        raise ValueError("bug in a handler")

    link.on("Hangup", broken)
    link.on("Hangup", lambda event: seen.append(event["Uniqueid"]))
    link._dispatch(None, {"Event": "Hangup", "Uniqueid": "1.1"})
    assert seen == ["1.1"]
    logged = capsys.readouterr()
    assert "ami_handler_failed" in logged.out + logged.err
    assert "Hangup" in logged.out + logged.err


class _Transport:
    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class _Factory:
    def __init__(self) -> None:
        self.dispatched: list[str] = []

    def dispatch(self, message) -> None:
        self.dispatched.append(message["Event"])


async def test_the_event_fast_path_delivers_wanted_events_and_leaves_the_rest_to_panoramisk(
        ) -> None:
    """EventProtocol: Newstate/Hangup as plain dicts of the headers their handlers read,
    UserEvent whole, in order, whatever the chunk boundaries; an action's response and its
    event list (ActionID) still complete the action; another event goes to panoramisk's
    dispatch."""
    seen: list[dict[str, str]] = []
    protocol = EventProtocol(seen.append)
    protocol.connection_made(_Transport())
    protocol.factory = factory = _Factory()
    future = protocol.send({"Action": "CoreShowChannels", "ActionID": "a1"}, as_list=True)
    stream = (
        b"Asterisk Call Manager/9.0.0\r\n"
        b"Event: Newstate\r\nPrivilege: call,all\r\nChannel: PJSIP/acme-101-1\r\n"
        b"ChannelState: 6\r\nChannelStateDesc: Up\r\nCallerIDName: a: b\r\n"
        b"Uniqueid: 17.1\r\n\r\n"
        b"Response: Success\r\nActionID: a1\r\nEventList: start\r\n\r\n"
        b"Event: Hangup\r\nActionID: a1\r\nUniqueid: 17.9\r\n\r\n"  # an action's list item
        b"Event: CoreShowChannelsComplete\r\nActionID: a1\r\nEventList: Complete\r\n\r\n"
        b"Event: Newchannel\r\nUniqueid: 17.2\r\n\r\n"
        b"Event: Hangup\r\nUniqueid: 17.1\r\nCause: 16\r\n\r\n"
        b"Event: UserEvent\r\nUserEvent: CallpolicyFallback\r\n\r\n"
    )
    for size in (1, 7, 64, len(stream)):
        seen.clear()
        factory.dispatched.clear()
        protocol.version = None
        if size != 1:  # a fresh action for each pass
            future = protocol.send({"Action": "CoreShowChannels", "ActionID": "a1"},
                                   as_list=True)
        for start in range(0, len(stream), size):
            protocol.data_received(stream[start:start + size])
        assert protocol.version == "9.0.0"
        assert seen == [
            {"Event": "Newstate", "ChannelState": "6", "Uniqueid": "17.1"},
            {"Event": "Hangup", "Uniqueid": "17.1", "Cause": "16"},
            {"Event": "UserEvent", "UserEvent": "CallpolicyFallback"},
        ]
        assert factory.dispatched == ["Newchannel"]
        assert future.done()
        items = future.result()
        assert [m.get("Event") or m.get("Response") for m in items] == [
            "Success", "Hangup", "CoreShowChannelsComplete"]


def _whole(raw: str) -> dict[str, str]:
    """What a dict of all the message's lines says (the parse the fast path replaces)."""
    return dict(line.split(": ", 1) for line in raw.strip().split("\r\n") if ": " in line)


def _snapshot(state: str, desc: str, name: str = "<unknown>", exten: str = "s") -> str:
    """Asterisk 22's channel snapshot headers, in its order."""
    return (f"Channel: PJSIP/acme-101-00000001\r\nChannelState: {state}\r\n"
            f"ChannelStateDesc: {desc}\r\nCallerIDNum: +3292101234\r\nCallerIDName: {name}\r\n"
            "ConnectedLineNum: 092101299\r\nConnectedLineName: <unknown>\r\nLanguage: en\r\n"
            f"AccountCode: \r\nContext: callpolicy-enforce\r\nExten: {exten}\r\nPriority: 14\r\n"
            "Uniqueid: 1700000000.42\r\nLinkedid: 1700000000.41\r\n")


@pytest.mark.parametrize("raw", [
    "Event: Newstate\r\nPrivilege: call,all\r\nTimestamp: 1.5\r\n" + _snapshot("6", "Up"),
    "Event: Newstate\r\nPrivilege: call,all\r\n" + _snapshot("5", "Ringing", name="a: b"),
    "Event: Hangup\r\nPrivilege: call,all\r\n" + _snapshot("6", "Up")
    + "Cause: 16\r\nCause-txt: Normal Clearing\r\n",
    "Event: Hangup\r\nUniqueid: 1.2\r\nCause: ",  # an empty last value, no line end
    "Event: Hangup\r\nUniqueid: 1.2: x\r\nCause: 1\r\nCause-txt: a\r\n",
    "Event: Hangup\r\nUniqueid: 1.2\r\n",  # no Cause: none delivered
    "Event: Newstate\r\nChannelStateDesc: Up\r\nUniqueidX: 3\r\nUniqueid:4\r\n",  # neither
])
def test_the_headers_read_are_those_the_whole_parse_gives(raw: str) -> None:
    name = raw[7:raw.find("\r\n")]
    slim = slim_event(name, raw.strip(), _SLIM[name])
    whole = _whole(raw)
    assert slim == {key: whole[key] for key in ("Event", *(h[0] for h in _SLIM[name]))
                    if key in whole}


def test_a_caller_chosen_value_with_line_breaks_cannot_change_the_state_or_the_call() -> None:
    """Should a caller ID or dialled string ever carry a line break into the snapshot, the
    headers Asterisk wrote itself still win: ChannelState comes before such values, Uniqueid
    and Cause after them."""
    forged = "x\r\nChannelState: 6\r\nUniqueid: 9.9\r\nCause: 16"
    raw = "Event: Newstate\r\nPrivilege: call,all\r\n" + _snapshot("5", "Ringing", name=forged)
    assert slim_event("Newstate", raw, _SLIM["Newstate"]) == {
        "Event": "Newstate", "ChannelState": "5", "Uniqueid": "1700000000.42"}
    raw = ("Event: Hangup\r\n" + _snapshot("6", "Up", exten=forged)
           + "Cause: 21\r\nCause-txt: Call Rejected\r\n")
    assert slim_event("Hangup", raw, _SLIM["Hangup"]) == {
        "Event": "Hangup", "Uniqueid": "1700000000.42", "Cause": "21"}
