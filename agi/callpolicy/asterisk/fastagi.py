"""asyncio FastAGI server: Asterisk asks, the policy answers with one command.

One connection = one decision:
  Asterisk -> environment block (agi_* lines, the call's 7 arguments, blank line)
  daemon   -> EXEC MSet with every CP_* variable of the decision   (one round trip)
  Asterisk -> 200 result=0
  daemon closes; the dialplan enforces the variables.

The reader is written for hostile peers (panoramisk 1.4's loop freezes on an early EOF): the
environment block has a deadline, a size cap and a line cap; EOF anywhere, non-UTF-8 bytes or
garbage just end that one connection. Nothing here blocks the event loop.

Per call this is the daemon's main CPU cost (issue 12, bench/agi_cpu.py), so a connection is
an `AgiConnection` protocol fed by the event loop, over the sans-I/O `EnvironmentParser`: no
task, no stream reader/writer, no timeout context, no timer of its own: each connection keeps
the time it is due, and one sweep every SWEEP_INTERVAL (armed while connections are open)
ends the ones past it, so a deadline passes at most SWEEP_INTERVAL late.

Local floods (issue 10): Asterisk writes its whole environment block right after connecting,
so a peer that has not sent its first line within FIRST_LINE_DEADLINE, or the whole block
within ENV_DEADLINE, is not an Asterisk and is dropped. When all MAX_CONNECTIONS slots are
taken, a newcomer evicts the oldest connection still sending its environment
(service/connection_slots.py); a connection that has sent it is never evicted, and only when all are
answering is the newcomer refused. Refused, evicted and bad peers are counted (`on_drop`:
the metrics) and logged at most a few lines per second per event, with counts.

The decision itself is synchronous and in memory (~10 µs): the daemon loads its snapshot before
it listens, so there is nothing to wait for. If the engine raises, the call still gets an answer:
the fail-safe decision (must-reach numbers pass, everything else is refused with 503), with
source `error`, a `decision_failed` log line with the traceback, and a count in the metrics.
(Asterisk waits forever for a connected FastAGI server; a frozen daemon is the watchdog's job.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

import structlog

from ..policy import CallRequest, Decision
from ..service.connection_slots import ConnectionSlots, Slot
from ..service.logging import RateLimitedLog
from ..service.waiting import event_or_timeout
from .agi_environment import (
    CONNECTION_ERROR,
    ENV_LATE,
    FIRST_LINE_LATE,
    MAX_LINE,
    BadPeer,
    EnvironmentParser,
)
from .decision_render import DecisionRenderer, log_decision, mset
from .variables import (
    ENV_UNIQUEID,
    AgiCall,
    call_arguments,
    safe_value,
)

log = structlog.get_logger("callpolicy.fastagi")

# Asterisk (res_agi) writes the block line by line right after its connect succeeds, from the
# channel's thread: on loopback or a LAN it all arrives within a millisecond or two. 250 ms
# leaves two orders of magnitude for a loaded Asterisk host or a daemon loop busy for a
# moment; a call whose block does not arrive in time still gets its answer from the fallback
# AGI (the dialplan runs it when the FastAGI step fails).
FIRST_LINE_DEADLINE = 0.25  # s from accept to the first complete line
ENV_DEADLINE = 0.3  # s from accept to the blank line that ends the block
REPLY_DEADLINE = 2.0  # s for Asterisk's "200 result=" after our command
MAX_CONNECTIONS = 512
# How often open connections are checked against their deadlines: a deadline is enforced
# between its time and SWEEP_INTERVAL later (cheaper than a timer per connection and step).
SWEEP_INTERVAL = 0.05
# The kernel's queue of connections not yet accepted (capped by net.core.somaxconn): a flood
# of reconnecting peers must not make a real Asterisk's SYN wait for a retransmit (1 s).
BACKLOG = 1024

#: CP_SOURCE of a real decision, and of the fail-safe answer when the engine raised
SOURCE_DAEMON = "daemon"
SOURCE_ERROR = "error"


#: `on_drop` outcomes
REFUSED, EVICTED, BAD_PEER = "refused", "evicted", "bad_peer"


@dataclass(frozen=True, slots=True)
class Limits:
    first_line_deadline: float = FIRST_LINE_DEADLINE
    env_deadline: float = ENV_DEADLINE
    reply_deadline: float = REPLY_DEADLINE
    max_connections: int = MAX_CONNECTIONS


class FastAgiServer:
    """Serves decisions. `decide` is the policy (sync, in memory, ready before `start`);
    `fail_safe` answers when `decide` raises; `on_drop(outcome, reason)` counts each
    connection dropped without a decision (outcome REFUSED, EVICTED or BAD_PEER; for a bad
    peer, reason is one of BAD_PEER_REASONS).

    Each connection is an `AgiConnection` protocol (no task, no stream objects): the
    per-call cost is the daemon's main one (bench/agi_cpu.py)."""

    def __init__(
        self,
        decide: Callable[[CallRequest], Decision],
        fail_safe: Callable[[CallRequest, str], Decision],
        limits: Limits | None = None,
        on_decision: Callable[[Decision, str, float, CallRequest, dict[str, str]], None]
        | None = None,
        on_drop: Callable[[str, str], None] | None = None,
    ) -> None:
        self._decide = decide
        self._fail_safe = fail_safe
        self.limits = limits or Limits()
        self._on_decision = on_decision
        self._on_drop = on_drop
        self._server: asyncio.Server | None = None
        self._connections: set[AgiConnection] = set()
        self._idle: asyncio.Event | None = None  # set while no connection is open (stop)
        self._slots = ConnectionSlots(self.limits.max_connections)
        self._limited = RateLimitedLog(log)
        self._render = DecisionRenderer()
        self._sweeper: asyncio.TimerHandle | None = None
        self.stats = {"decisions": 0, "errors": 0, "bad_peers": 0, "refused": 0, "evicted": 0}

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: AgiConnection(self), host, port, reuse_address=True, backlog=BACKLOG)

    @property
    def sockets(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for s in self._server.sockets] if self._server else []

    async def stop(self, grace: float = 2.0) -> None:
        if self._server is not None:
            self._server.close()
        if self._connections:
            self._idle = asyncio.Event()
            await event_or_timeout(self._idle, grace)
            for connection in list(self._connections):
                connection.abort()
        if self._server is not None:
            await self._server.wait_closed()
        if self._sweeper is not None and not self._connections:
            self._sweeper.cancel()
            self._sweeper = None

    def _opened(self, connection: AgiConnection, transport: asyncio.Transport) -> Slot | None:
        admission = self._slots.admit(transport.abort)
        if admission.evicted is not None:
            self._dropped(EVICTED, "connections full: the oldest still sending its environment",
                          "agi_connection_evicted")
        if admission.slot is None:
            self._dropped(REFUSED, "connections full, all answering", "agi_connection_refused")
            return None
        self._connections.add(connection)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL, self._sweep)
        return admission.slot

    def _sweep(self) -> None:
        """The open connections past their deadline; again in SWEEP_INTERVAL while any is
        open."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for connection in [c for c in self._connections if c.due <= now]:
            connection.deadline(now)
        self._sweeper = loop.call_later(SWEEP_INTERVAL, self._sweep) if self._connections \
            else None

    def _closed(self, connection: AgiConnection, slot: Slot) -> None:
        self._slots.release(slot)
        self._connections.discard(connection)
        if not self._connections and self._idle is not None:
            self._idle.set()

    def _dropped(self, outcome: str, reason: str, event: str, **fields: str) -> None:
        """A connection dropped without a decision: counted, logged (rate-limited)."""
        self.stats[{BAD_PEER: "bad_peers"}.get(outcome, outcome)] += 1
        if self._on_drop is not None:
            self._on_drop(outcome, reason)
        self._limited("warning", event, reason=reason, open=len(self._slots),
                      waiting=self._slots.waiting, **fields)

    def _bad_peer(self, slot: Slot, reason: str, detail: str, peer: object) -> None:
        if not slot.evicted:  # an evicted one was counted and logged when it was evicted
            self._dropped(BAD_PEER, reason, "agi_bad_peer", detail=safe_value(detail),
                          peer=str(peer))

    def _answer(self, env: dict[str, str]) -> bytes:
        """The decision for a complete environment block, as the command to send."""
        started = time.perf_counter()
        call = AgiCall.from_args(call_arguments(env))
        request = call.request(datetime.now(UTC))
        source = SOURCE_DAEMON
        try:
            decision = self._decide(request)
        except Exception:  # a bug must not leave the call hanging: the fail-safe answer
            log.exception("decision_failed", uniqueid=safe_value(env.get(ENV_UNIQUEID)),
                          dialled=safe_value(call.dialled))
            source = SOURCE_ERROR
            self.stats["errors"] += 1
            decision = self._fail_safe(request, "the policy engine failed")
        elapsed = time.perf_counter() - started
        self.stats["decisions"] += 1
        if self._on_decision is not None:
            try:
                self._on_decision(decision, source, elapsed, request, env)
            except Exception:  # bookkeeping must never cost the call its answer
                log.exception("on_decision_failed")
        parts = self._render.parts(decision, source)
        log_decision(parts, decision, call, env, source, elapsed)
        return mset(parts, decision).encode()

    def _no_reply(self, env: dict[str, str], reason: str) -> None:
        self._limited("warning", "agi_no_reply", uniqueid=safe_value(env.get(ENV_UNIQUEID)),
                      reason=reason)

    def _reply(self, env: dict[str, str], reply: bytes) -> None:
        if not reply.startswith(b"200"):
            self._limited("warning", "agi_command_failed",
                          uniqueid=safe_value(env.get(ENV_UNIQUEID)),
                          reply=safe_value(reply[:120].decode("utf-8", "replace").strip()))


#: AgiConnection states
_READING, _ANSWERED, _DONE = 0, 1, 2
_NEVER = float("inf")


class AgiConnection(asyncio.Protocol):
    """One FastAGI connection: the environment block (first-line and whole-block deadlines,
    EnvironmentParser's caps), the answer, Asterisk's reply line (reply deadline), close.
    `due`: the loop time of its next deadline (the server's sweep calls `deadline`)."""

    __slots__ = ("_accepted", "_env", "_parser", "_reply", "_server", "_slot", "_state",
                 "_transport", "due")

    def __init__(self, server: FastAgiServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._slot: Slot | None = None
        self._parser = EnvironmentParser()
        self._state = _READING
        self.due = _NEVER
        self._accepted = 0.0
        self._env: dict[str, str] = {}
        self._reply = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a TCP transport (uvloop's is not an asyncio.Transport subclass)
        self._transport = cast(asyncio.Transport, transport)
        server = self._server
        self._slot = server._opened(self, self._transport)
        if self._slot is None:
            self._state = _DONE
            self._transport.abort()
            return
        self._accepted = asyncio.get_running_loop().time()
        limits = server.limits
        self.due = self._accepted + min(limits.first_line_deadline, limits.env_deadline)

    def data_received(self, data: bytes) -> None:
        if self._state == _READING:
            try:
                env = self._parser.feed(data)
            except BadPeer as exc:
                self._drop(exc.reason, str(exc))
                return
            if env is not None:
                self._answer(env)
        elif self._state == _ANSWERED:
            self._reply += data
            end = self._reply.find(b"\n")
            if end >= 0:
                self._finish()
                self._server._reply(self._env, self._reply[:end + 1])
                self._close()
            elif len(self._reply) > MAX_LINE:
                self._finish()
                self._server._reply(self._env, self._reply)
                self._close()

    def eof_received(self) -> bool:
        if self._state == _READING:
            exc = self._parser.eof()
            self._drop(exc.reason, str(exc))
        elif self._state == _ANSWERED:  # closed without a reply line
            self._finish()
            self._server._reply(self._env, self._reply)
            self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._state == _READING:
            self._drop(CONNECTION_ERROR, type(exc).__name__ if exc else "connection lost")
        elif self._state == _ANSWERED:
            self._finish()
            self._server._no_reply(self._env, type(exc).__name__ if exc else "ConnectionLost")
        self._finish()
        if self._slot is not None:
            self._server._closed(self, self._slot)
            self._slot = None

    def abort(self) -> None:
        self._finish()
        if self._transport is not None:
            self._transport.abort()

    # -- the steps ----------------------------------------------------------------------
    def _answer(self, env: dict[str, str]) -> None:
        assert self._slot is not None and self._transport is not None
        server = self._server
        server._slots.settle(self._slot)
        self._state, self._env = _ANSWERED, env
        self._transport.write(server._answer(env))
        self.due = asyncio.get_running_loop().time() + server.limits.reply_deadline
        if self._parser.rest:  # the reply came with the block (never from Asterisk)
            rest, self._parser.rest = self._parser.rest, b""
            self.data_received(rest)

    def deadline(self, now: float) -> None:
        """`due` has passed (`now`: the loop's time)."""
        self.due = _NEVER
        limits = self._server.limits
        if self._state == _READING:
            if self._parser.first_line:
                due = self._accepted + limits.env_deadline
                if now < due:  # the first line came in time: the block's deadline
                    self.due = due
                    return
                self._drop(ENV_LATE, f"no complete environment within {limits.env_deadline} s")
            else:
                self._drop(FIRST_LINE_LATE,
                           f"no first line within {limits.first_line_deadline} s")
        elif self._state == _ANSWERED:
            self._finish()
            self._server._no_reply(self._env, "TimeoutError")
            self.abort()

    def _drop(self, reason: str, detail: str) -> None:
        """A bad peer: counted and logged (unless evicted), the connection aborted."""
        self._finish()
        assert self._slot is not None and self._transport is not None
        self._server._bad_peer(self._slot, reason, detail,
                               self._transport.get_extra_info("peername"))
        self._transport.abort()

    def _finish(self) -> None:
        self._state = _DONE
        self.due = _NEVER

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()
