"""The event filters AmiLink asks Asterisk for at login: advanced ones (Asterisk 21+), and
the legacy ones for an Asterisk that refuses them, so that what the live table needs always
comes through."""

from __future__ import annotations

import asyncio

import pytest

from callpolicy.asterisk.ami import FILTERS, AmiLink
from callpolicy.service.config import AmiSettings


class _Manager:
    """A TCP AMI server answering Login and Filter (refusing the MatchCriteria in `refuse`)
    and recording every Filter action's headers."""

    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.filters: list[dict[str, str]] = []
        self.done = asyncio.Event()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        try:
            while True:
                block = (await reader.readuntil(b"\r\n\r\n")).decode()
                fields = dict(line.split(": ", 1) for line in block.strip().split("\r\n"))
                refused = fields.get("MatchCriteria") in self.refuse
                if fields.get("Action") == "Filter":
                    self.filters.append({k: v for k, v in fields.items()
                                         if k in ("MatchCriteria", "Filter")})
                    if len(self.filters) == len(FILTERS):
                        self.done.set()
                reply = ("Error\r\nMessage: Filter was formatted incorrectly" if refused
                         else "Success\r\nMessage: OK")
                writer.write(f"Response: {reply}\r\nActionID: {fields.get('ActionID', '')}"
                             "\r\n\r\n".encode())
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _filters_asked(refuse: set[str]) -> list[dict[str, str]]:
    manager = _Manager(refuse)
    server = await asyncio.start_server(manager.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = AmiLink(AmiSettings(port=port, username="callpolicy", secret="s"))
    link.start()
    try:
        await asyncio.wait_for(manager.done.wait(), 5)
        await asyncio.sleep(0.05)  # nothing more comes
        return manager.filters
    finally:
        link.stop()
        server.close()


ADVANCED = [{"MatchCriteria": "action(include),name(Hangup),method(none)"},
            {"MatchCriteria": "action(include),name(Newstate),header(ChannelState),"
                              "method(exact)", "Filter": "6"},
            {"MatchCriteria": "action(include),name(UserEvent),header(UserEvent),"
                              "method(starts_with)", "Filter": "Callpolicy"}]
LEGACY = [{"Filter": "Event: Hangup"}, {"Filter": "Event: Newstate"},
          {"Filter": "Event: UserEvent"}]


async def test_asterisk_21_and_later_get_the_advanced_filters() -> None:
    assert await _filters_asked(set()) == ADVANCED


async def test_an_asterisk_that_refuses_them_gets_the_legacy_filters() -> None:
    """Before 21 there was no MatchCriteria: the first filter (every Hangup) is refused, and
    every event is then whitelisted with a regex on its Event line."""
    assert await _filters_asked({ADVANCED[0]["MatchCriteria"]}) == [ADVANCED[0], *LEGACY]


@pytest.mark.parametrize("refused", [1, 2])
async def test_a_refused_filter_is_replaced_by_a_wider_one_for_its_event_and_the_next(
        refused: int) -> None:
    asked = await _filters_asked({ADVANCED[refused]["MatchCriteria"]})
    assert asked == ADVANCED[:refused + 1] + LEGACY[refused:]
