"""The AMI link (panoramisk's Manager): events about live calls, and hang-ups.

panoramisk 1.4's actions have no timeout and it reconnects at a fixed delay: every action here
is wrapped in a timeout, and the reconnect delay backs off (0.5 s doubling to 5 s, back to
0.5 s once logged in). Actions are pipelined on the one session, at most MAX_IN_FLIGHT
awaiting their response at once (a revocation sends hundreds of Hangups in one go). On every
login the owner's `on_login` rebuilds its view from one `Status` action (every channel with
the variables it names), so nothing is lost or counted twice across an Asterisk or daemon
restart. Never logs the secret.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from ..service.config import AmiSettings
from ..service.logging import RateLimitedLog
from ..service.waiting import within

log = structlog.get_logger("callpolicy.ami")
logging.getLogger("panoramisk").setLevel(logging.CRITICAL)  # its own logs may echo actions

ACTION_TIMEOUT = 2.0
LIST_TIMEOUT = 10.0  # Status: one response for every channel (500 channels: ~0.7 MB)
# Actions awaiting their response at once. Asterisk runs one session's actions one after
# another; pipelining them saves a round trip each, the bound keeps a burst from queueing
# thousands of actions (and their timeouts) at once.
MAX_IN_FLIGHT = 64
# Status reads each requested variable into a 512-byte buffer (main/manager.c
# generate_status): a value this long may have been cut, read it again with Getvar.
STATUS_VALUE_MAX = 511
MIN_BACKOFF, MAX_BACKOFF = 0.5, 5.0
# Asterisk sends every event of the classes a session asks for: a Newexten per dialplan step,
# a VarSet per Set()… dozens per call, each parsed in Python. Ask for two classes only, and
# have Asterisk (21+, advanced filters) send only what the handlers use: Hangup, Newstate to
# Up (not Ringing…), the dialplan's Callpolicy* UserEvents. Responses to actions (Status,
# CoreShowChannels…) are not filtered.
EVENT_CLASSES = "call,user"
WANTED_EVENTS = ("Newstate", "Hangup", "UserEvent")
# (event, MatchCriteria, Filter) of the Filter actions sent at login. Once Asterisk refuses
# one (it does not know advanced filters: before 21), that event and the next get the legacy
# filter "Event: <event>" (a regex on the whole event, Asterisk 10+), which lets through a
# superset; an Asterisk that accepts MatchCriteria-less "" lets everything through.
FILTERS = (
    ("Hangup", "action(include),name(Hangup),method(none)", ""),
    ("Newstate", "action(include),name(Newstate),header(ChannelState),method(exact)", "6"),
    ("UserEvent", "action(include),name(UserEvent),header(UserEvent),method(starts_with)",
     "Callpolicy"),
)

EventHandler = Callable[[dict[str, str]], None]
_EOM = "\r\n\r\n"  # the end of an AMI message
# The headers the handlers read, per event; an event not named here (UserEvent: rare, its
# handlers read caller-chosen headers) is delivered whole. A header's value is read from its
# LAST line for Uniqueid and Cause, its FIRST for ChannelState: Asterisk writes the channel
# snapshot as Channel, ChannelState, …, CallerIDNum/Name, ConnectedLine…, Exten, …,
# Uniqueid, Linkedid (then Hangup's Cause), so a caller-chosen value that smuggled in a
# line break could only add lines after the real ChannelState and before the real
# Uniqueid and Cause.
_FIRST, _LAST = False, True
_SLIM: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "Newstate": (("Uniqueid", "\r\nUniqueid: ", _LAST),
                 ("ChannelState", "\r\nChannelState: ", _FIRST)),
    "Hangup": (("Uniqueid", "\r\nUniqueid: ", _LAST), ("Cause", "\r\nCause: ", _LAST)),
}


def slim_event(name: str, raw: str, headers: tuple[tuple[str, str, bool], ...]
               ) -> dict[str, str]:
    """The `headers` of one AMI message `raw` (its "\\r\\n"-separated lines), as the dict
    of all its lines would have them (a header absent is absent), and Event: `name`."""
    fields = {"Event": name}
    for key, marker, last in headers:
        start = raw.rfind(marker) if last else raw.find(marker)
        if start >= 0:
            start += len(marker)
            end = raw.find("\r\n", start)
            fields[key] = raw[start:] if end < 0 else raw[start:end]
    return fields


class EventProtocol(AMIProtocol):
    """panoramisk's protocol with a fast path for the events the daemon uses (several per
    call): a WANTED_EVENTS event is handed to `on_event` as a plain dict (of the headers
    its handlers read, _SLIM), with no case-insensitive Message, pattern matching or copy.
    Everything else (action responses and their event lists, which carry an ActionID, and
    whatever an Asterisk that does not filter sends) goes panoramisk's way."""

    version: str | None  # set by panoramisk's __init__ (None until the greeting)

    def __init__(self, on_event: EventHandler) -> None:
        super().__init__()
        self._on_event = on_event
        self._partial = ""

    def data_received(self, data: bytes) -> None:
        text = self._partial + data.decode(getattr(self, "encoding", "utf8"), "ignore")
        if self.version is None and text.startswith("Asterisk Call Manager/") \
                and "\r\n" in text:
            line, _, text = text.partition("\r\n")
            self.version = line.partition("/")[2].strip()
        *messages, self._partial = text.split(_EOM)
        for raw in messages:
            raw = raw.strip()
            if raw.startswith("Event: "):
                end = raw.find("\r\n")
                name = raw[7:] if end < 0 else raw[7:end]
                if name in WANTED_EVENTS and "\r\nActionID: " not in raw:
                    headers = _SLIM.get(name)
                    self._on_event(
                        slim_event(name, raw, headers) if headers is not None
                        else dict(line.split(": ", 1) for line in raw.split("\r\n")
                                  if ": " in line))
                    continue
            message = Message.from_line(raw)
            if message is not None:
                self.handle_message(message)


class AmiError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ChannelStatus:
    """One live channel, as the Status action reports it."""

    uniqueid: str
    name: str
    context: str  # the dialplan context it is in now
    state: str  # ChannelState: "6" is up
    seconds: float  # since the channel was created
    variables: Mapping[str, str]  # the variables asked for ("" when not set)

    def possibly_cut(self, variable: str) -> bool:
        return len(self.variables.get(variable, "")) >= STATUS_VALUE_MAX


class AmiLink:
    def __init__(self, settings: AmiSettings,
                 on_login: Callable[[], Awaitable[None]] | None = None,
                 on_state: Callable[[bool], None] | None = None) -> None:
        self.settings = settings
        self.connected = False
        self.since = time.time()  # when `connected` last changed (or the link was created)
        self.logins = 0  # successful logins so far
        self._on_login = on_login
        self._on_state = on_state
        self._handlers: dict[str, list[EventHandler]] = {}
        self._manager: Manager | None = None
        self._backoff = MIN_BACKOFF
        self._tasks: set[asyncio.Task[None]] = set()
        self._limited = RateLimitedLog(log)  # a handler bug would log once per event
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)

    @property
    def configured(self) -> bool:
        """A user and a secret are set: the link tries to log in (start() does nothing
        otherwise)."""
        return bool(self.settings.username and self.settings.secret)

    def on(self, event: str, handler: EventHandler) -> None:
        self._handlers.setdefault(event, []).append(handler)

    def start(self) -> None:
        if not self.configured:
            log.warning("ami_disabled", reason="no AMI username/secret configured "
                        "(set [ami] username and CALLPOLICY_AMI_SECRET)")
            return
        manager = Manager(
            loop=asyncio.get_running_loop(), host=self.settings.host, port=self.settings.port,
            username=self.settings.username, secret=self.settings.secret,
            events=EVENT_CLASSES, ping_delay=5, ping_interval=5, reconnect_timeout=1,
            on_login=self._logged_in, on_disconnect=self._disconnected,
            on_connect=lambda _m: None, log=logging.getLogger("panoramisk"),
            protocol_factory=functools.partial(EventProtocol, self.deliver))
        manager.reconnect_timeout = MIN_BACKOFF  # panoramisk casts to int; we want 0.5 s
        for event in WANTED_EVENTS:
            manager.register_event(event, self._dispatch)
        self._manager = manager
        manager.connect()

    def stop(self) -> None:
        if self._manager is not None:
            self._manager.connection_lost = lambda _exc: None  # no reconnect
            self._manager.close()
        self._set_connected(False)

    def _set_connected(self, value: bool) -> None:
        if value != self.connected:
            self.connected = value
            self.since = time.time()
            if self._on_state is not None:
                self._on_state(value)

    def _logged_in(self, manager: Manager) -> None:
        self._backoff = MIN_BACKOFF
        manager.reconnect_timeout = MIN_BACKOFF
        self.logins += 1
        self._set_connected(True)
        log.info("ami_connected", host=self.settings.host, port=self.settings.port)
        task = asyncio.ensure_future(self._run_on_login())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_on_login(self) -> None:
        try:
            await self._add_filters()
            if self._on_login is not None:
                await self._on_login()
        except Exception as exc:
            log.error("ami_resync_failed", error=f"{type(exc).__name__}: {exc}")

    async def _add_filters(self) -> None:
        """Ask Asterisk for the FILTERS (see there)."""
        advanced = True
        for event, criteria, pattern in FILTERS:
            if advanced:
                request = {"Action": "Filter", "Operation": "Add", "MatchCriteria": criteria}
                if pattern:
                    request["Filter"] = pattern
                reply = dict(await self.action(request))
                if str(reply.get("Response", "")).lower() == "success":
                    continue
                log.warning("ami_filter_refused", match_criteria=criteria, filter=pattern,
                            message=str(reply.get("Message", "")), instead="legacy filters")
                advanced = False
            await self.action({"Action": "Filter", "Operation": "Add",
                               "Filter": f"Event: {event}"})

    def _disconnected(self, manager: Manager, exc: Exception | None) -> None:
        was = self.connected
        self._set_connected(False)
        self._backoff = min(self._backoff * 2, MAX_BACKOFF)
        manager.reconnect_timeout = self._backoff
        if was:
            log.warning("ami_disconnected", retry_in_s=self._backoff)

    def _dispatch(self, _manager: Manager, event: Any) -> None:
        """An event that came panoramisk's way (EventProtocol takes the usual ones)."""
        self.deliver({str(k): str(v) for k, v in dict(event).items()})

    def deliver(self, fields: dict[str, str]) -> None:
        """One AMI event to the handlers registered for its name."""
        for handler in self._handlers.get(fields.get("Event", ""), ()):
            try:
                handler(fields)
            except Exception as exc:  # one bad handler must not stop the others
                self._limited("error", "ami_handler_failed", ami_event=fields.get("Event"),
                              error=f"{type(exc).__name__}: {exc}")

    async def action(self, action: dict[str, str], *, as_list: bool = False,
                     timeout: float = ACTION_TIMEOUT) -> Any:
        """Send one action, await its response: AmiError if the link is down or no response
        came within `timeout` s of sending it (waiting for a free MAX_IN_FLIGHT slot is not
        counted)."""
        async with self._in_flight:
            if self._manager is None or not self.connected:
                raise AmiError("AMI not connected")
            try:
                return await within(self._manager.send_action(action, as_list=as_list), timeout)
            except TimeoutError as exc:
                raise AmiError(f"AMI {action.get('Action')} timed out after {timeout}s") from exc

    async def channels(self, variables: Sequence[str] = ()) -> list[ChannelStatus]:
        """Every live channel with the channel `variables` asked for: ONE Status action,
        whatever the number of channels (no round trip per channel)."""
        request = {"Action": "Status"}
        if variables:
            request["Variables"] = ",".join(variables)
        messages = await self.action(request, as_list=True, timeout=LIST_TIMEOUT)
        found: list[ChannelStatus] = []
        for message in messages:
            fields = dict(message)
            if fields.get("Event") == "Status":
                found.append(_channel_status(fields, variables))
        return found

    async def getvar(self, channel: str, variable: str) -> str:
        reply = await self.action({"Action": "Getvar", "Channel": channel,
                                   "Variable": variable})
        return str(dict(reply).get("Value") or "")

    async def hangup(self, channel: str, cause: int = 21) -> bool:
        reply = await self.action({"Action": "Hangup", "Channel": channel,
                                   "Cause": str(cause)})
        return str(dict(reply).get("Response", "")).lower() == "success"


def _channel_status(fields: dict[str, Any], variables: Sequence[str]) -> ChannelStatus:
    raw = fields.get("Variable") or []
    values: dict[str, str] = dict.fromkeys(variables, "")
    for item in [raw] if isinstance(raw, str) else raw:
        name, _, value = str(item).partition("=")
        if name in values:  # an unset variable comes as "(null)" (printf of NULL)
            values[name] = "" if value == "(null)" else value
    try:
        seconds = float(fields.get("Seconds", 0))
    except ValueError:
        seconds = 0.0
    return ChannelStatus(uniqueid=str(fields.get("Uniqueid", "")),
                         name=str(fields.get("Channel", "")),
                         context=str(fields.get("Context", "")),
                         state=str(fields.get("ChannelState", "")), seconds=seconds,
                         variables=values)
