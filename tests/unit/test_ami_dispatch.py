"""AmiLink's event dispatch: one handler's bug must not stop the others, nor escape."""

from __future__ import annotations

from callpolicy.asterisk.ami import AmiLink, EventProtocol
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


async def test_the_event_fast_path_delivers_wanted_events_whole_and_leaves_the_rest_to_panoramisk(
        ) -> None:
    """EventProtocol: Newstate/Hangup/UserEvent as plain dicts, in order, whatever the chunk
    boundaries; an action's response and its event list (ActionID) still complete the action;
    another event goes to panoramisk's dispatch."""
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
            {"Event": "Newstate", "Privilege": "call,all", "Channel": "PJSIP/acme-101-1",
             "ChannelState": "6", "ChannelStateDesc": "Up", "CallerIDName": "a: b",
             "Uniqueid": "17.1"},
            {"Event": "Hangup", "Uniqueid": "17.1", "Cause": "16"},
            {"Event": "UserEvent", "UserEvent": "CallpolicyFallback"},
        ]
        assert factory.dispatched == ["Newchannel"]
        assert future.done()
        items = future.result()
        assert [m.get("Event") or m.get("Response") for m in items] == [
            "Success", "Hangup", "CoreShowChannelsComplete"]
