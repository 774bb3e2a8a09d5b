"""asyncio FastAGI server: Asterisk asks, the policy answers with one command.

One connection = one decision:
  Asterisk -> environment block (agi_* lines, the call's 7 arguments, blank line)
  daemon   -> EXEC MSet with every CP_* variable of the decision   (one round trip)
  Asterisk -> 200 result=0
  daemon closes; the dialplan enforces the variables.

The reader is written for hostile peers (panoramisk 1.4's loop freezes on an early EOF): the
environment block has a deadline, a size cap and a line cap; EOF anywhere, non-UTF-8 bytes or
garbage just end that one connection. Nothing here blocks the event loop.

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
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from ..policy import CallRequest, Decision
from ..service.connection_slots import ConnectionSlots, Slot
from ..service.logging import RateLimitedLog
from .variables import (
    ENV_CHANNEL,
    ENV_PREFIX,
    ENV_UNIQUEID,
    AgiCall,
    call_arguments,
    decision_variables,
    mset_command,
    safe_value,
)

log = structlog.get_logger("callpolicy.fastagi")

MAX_ENV_BYTES = 16 * 1024  # a real environment block is ~1 KiB
MAX_LINE = 4 * 1024
MAX_LINES = 128
# Asterisk (res_agi) writes the block line by line right after its connect succeeds, from the
# channel's thread: on loopback or a LAN it all arrives within a millisecond or two. 250 ms
# leaves two orders of magnitude for a loaded Asterisk host or a daemon loop busy for a
# moment; a call whose block does not arrive in time still gets its answer from the fallback
# AGI (the dialplan runs it when the FastAGI step fails).
FIRST_LINE_DEADLINE = 0.25  # s from accept to the first complete line
ENV_DEADLINE = 0.3  # s from accept to the blank line that ends the block
REPLY_DEADLINE = 2.0  # s for Asterisk's "200 result=" after our command
MAX_CONNECTIONS = 512
# The kernel's queue of connections not yet accepted (capped by net.core.somaxconn): a flood
# of reconnecting peers must not make a real Asterisk's SYN wait for a retransmit (1 s).
BACKLOG = 1024

#: CP_SOURCE of a real decision, and of the fail-safe answer when the engine raised
SOURCE_DAEMON = "daemon"
SOURCE_ERROR = "error"


#: why a peer was dropped before its decision (the `reason` label of
#: callpolicy_agi_bad_peers_total): a small fixed set
EOF_EARLY, TOO_LARGE, NOT_AGI = "eof", "too_large", "not_agi"
FIRST_LINE_LATE, ENV_LATE, CONNECTION_ERROR = (
    "first_line_deadline", "environment_deadline", "connection_error")
BAD_PEER_REASONS = (EOF_EARLY, TOO_LARGE, NOT_AGI, FIRST_LINE_LATE, ENV_LATE, CONNECTION_ERROR)
#: `on_drop` outcomes
REFUSED, EVICTED, BAD_PEER = "refused", "evicted", "bad_peer"


class BadPeer(Exception):
    """The peer is not a well-behaved Asterisk; close the connection."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason  # one of BAD_PEER_REASONS


@dataclass(frozen=True, slots=True)
class Limits:
    first_line_deadline: float = FIRST_LINE_DEADLINE
    env_deadline: float = ENV_DEADLINE
    reply_deadline: float = REPLY_DEADLINE
    max_connections: int = MAX_CONNECTIONS


async def read_environment(reader: asyncio.StreamReader,
                           on_first_line: Callable[[], None] | None = None) -> dict[str, str]:
    """Read the agi_* block up to its blank line. Raises BadPeer for anything odd."""
    env: dict[str, str] = {}
    total = 0
    for _ in range(MAX_LINES):
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            raise BadPeer(EOF_EARLY, f"EOF after {total + len(exc.partial)} bytes of "
                          "environment") from exc
        except asyncio.LimitOverrunError as exc:
            raise BadPeer(TOO_LARGE, f"environment line longer than {MAX_LINE} bytes") from exc
        if not total and on_first_line is not None:
            on_first_line()
        total += len(raw)
        if total > MAX_ENV_BYTES:
            raise BadPeer(TOO_LARGE, f"environment block larger than {MAX_ENV_BYTES} bytes")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if not env:
                raise BadPeer(NOT_AGI, "empty environment block")
            return env
        key, sep, value = line.partition(":")
        if not sep or not key.startswith(ENV_PREFIX):
            raise BadPeer(NOT_AGI, "not an AGI environment line")
        env[key.strip()] = value.strip()
    raise BadPeer(TOO_LARGE, f"more than {MAX_LINES} environment lines")



class FastAgiServer:
    """Serves decisions. `decide` is the policy (sync, in memory, ready before `start`);
    `fail_safe` answers when `decide` raises; `on_drop(outcome, reason)` counts each
    connection dropped without a decision (outcome REFUSED, EVICTED or BAD_PEER; for a bad
    peer, reason is one of BAD_PEER_REASONS)."""

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
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = ConnectionSlots(self.limits.max_connections)
        self._limited = RateLimitedLog(log)
        self.stats = {"decisions": 0, "errors": 0, "bad_peers": 0, "refused": 0, "evicted": 0}

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._accept, host, port, limit=MAX_LINE, reuse_address=True, backlog=BACKLOG)

    @property
    def sockets(self) -> list[tuple[str, int]]:
        return [s.getsockname()[:2] for s in self._server.sockets] if self._server else []

    async def stop(self, grace: float = 2.0) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=grace)
            for task in pending:
                task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        admission = self._slots.admit(writer.transport.abort)
        if admission.evicted is not None:
            self._dropped(EVICTED, "connections full: the oldest still sending its environment",
                          "agi_connection_evicted")
        slot = admission.slot
        if slot is None:
            self._dropped(REFUSED, "connections full, all answering", "agi_connection_refused")
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer, slot)
        finally:
            self._slots.release(slot)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    def _dropped(self, outcome: str, reason: str, event: str, **fields: str) -> None:
        """A connection dropped without a decision: counted, logged (rate-limited)."""
        self.stats[{BAD_PEER: "bad_peers"}.get(outcome, outcome)] += 1
        if self._on_drop is not None:
            self._on_drop(outcome, reason)
        self._limited("warning", event, reason=reason, open=len(self._slots),
                      waiting=self._slots.waiting, **fields)

    def _bad_peer(self, exc: BadPeer | TimeoutError | ConnectionError, first_line: bool,
                  writer: asyncio.StreamWriter) -> None:
        """A peer that sent no valid AGI environment in time: dropped, counted, logged."""
        limits = self.limits
        if isinstance(exc, BadPeer):
            reason, detail = exc.reason, str(exc)
        elif isinstance(exc, TimeoutError):
            reason = ENV_LATE if first_line else FIRST_LINE_LATE
            detail = f"no {'complete environment' if first_line else 'first line'} " \
                f"within {limits.env_deadline if first_line else limits.first_line_deadline} s"
        else:
            reason, detail = CONNECTION_ERROR, type(exc).__name__
        self._dropped(BAD_PEER, reason, "agi_bad_peer", detail=safe_value(detail),
                      peer=str(writer.get_extra_info("peername")))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     slot: Slot) -> None:
        limits = self.limits
        accepted = asyncio.get_running_loop().time()
        first_line = False
        try:
            # asyncio.timeout, not wait_for: wait_for wraps each await in a new Task.
            async with asyncio.timeout(min(limits.first_line_deadline,
                                           limits.env_deadline)) as deadline:
                def on_first_line() -> None:
                    nonlocal first_line
                    first_line = True
                    deadline.reschedule(accepted + limits.env_deadline)

                env = await read_environment(reader, on_first_line)
        except (BadPeer, TimeoutError, ConnectionError) as exc:
            if not slot.evicted:  # else counted and logged when it was evicted
                self._bad_peer(exc, first_line, writer)
            return
        self._slots.settle(slot)
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
        log_decision(decision, call, env, source, elapsed)
        try:
            writer.write(mset_command(decision_variables(decision, source)).encode())
            async with asyncio.timeout(limits.reply_deadline):
                await writer.drain()
                reply = await reader.readline()
        except (TimeoutError, ConnectionError) as exc:
            self._limited("warning", "agi_no_reply",
                          uniqueid=safe_value(env.get(ENV_UNIQUEID)), reason=type(exc).__name__)
            return
        if not reply.startswith(b"200"):
            self._limited("warning", "agi_command_failed",
                          uniqueid=safe_value(env.get(ENV_UNIQUEID)),
                          reply=safe_value(reply[:120].decode("utf-8", "replace").strip()))


def log_decision(decision: Decision, call: AgiCall, env: dict[str, str], source: str,
                 elapsed: float) -> None:
    cid = decision.caller_id
    fields = {
        "uniqueid": safe_value(env.get(ENV_UNIQUEID)),
        "channel": safe_value(env.get(ENV_CHANNEL)),
        "kind": call.kind,
        "endpoint": safe_value(call.endpoint),
        "customer": decision.customer_id,
        "dialled": safe_value(call.dialled),
        "destination": decision.destination,
        "action": decision.action.value,
        "reason": decision.reason.value,
        "category": decision.category.value,
        "caller_id": cid.number,
        "presentation": cid.presentation.value,
        "emergency": decision.emergency,
        "location": decision.location.value if decision.location else None,
        "rule": decision.rule,
        "source": source,
        "latency_ms": round(elapsed * 1000, 3),
    }
    if source != SOURCE_DAEMON or decision.emergency:
        log.warning("decision", **fields)
    else:
        log.info("decision", **fields)
    for event in decision.events:
        emit = log.error if event.kind == "fraud_limit" else log.warning  # an alert
        emit(event.kind, uniqueid=fields["uniqueid"], customer=decision.customer_id,
             **{k: safe_value(v) for k, v in event.detail.items()})
