"""asyncio FastAGI server: Asterisk asks, the policy answers with one command.

One connection = one decision:
  Asterisk -> environment block (agi_* lines, the call's 7 arguments, blank line)
  daemon   -> EXEC MSet "CP_ACTION=…,CP_REASON=…,…"   (one round trip)
  Asterisk -> 200 result=0
  daemon closes; the dialplan enforces the variables.

The reader is written for hostile peers (panoramisk 1.4's loop freezes on an early EOF): the
environment block has a deadline, a size cap and a line cap; EOF anywhere, non-UTF-8 bytes or
garbage just end that one connection. Nothing here blocks the event loop.

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

from .policy import CallRequest, Decision
from .variables import AgiCall, decision_variables, mset_command, safe_value

log = structlog.get_logger("callpolicy.fastagi")

MAX_ENV_BYTES = 16 * 1024  # a real environment block is ~1 KiB
MAX_LINE = 4 * 1024
MAX_LINES = 128

#: CP_SOURCE of a real decision, and of the fail-safe answer when the engine raised
SOURCE_DAEMON = "daemon"
SOURCE_ERROR = "error"


class BadPeer(Exception):
    """The peer is not a well-behaved Asterisk; close the connection."""


@dataclass(frozen=True, slots=True)
class Limits:
    env_deadline: float = 2.0  # seconds to deliver the whole environment block
    reply_deadline: float = 2.0  # seconds for Asterisk's "200 result=" after our command
    max_connections: int = 512


async def read_environment(reader: asyncio.StreamReader) -> dict[str, str]:
    """Read the agi_* block up to its blank line. Raises BadPeer for anything odd."""
    env: dict[str, str] = {}
    total = 0
    for _ in range(MAX_LINES):
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            raise BadPeer(f"EOF after {total + len(exc.partial)} bytes of environment") from exc
        except asyncio.LimitOverrunError as exc:
            raise BadPeer(f"environment line longer than {MAX_LINE} bytes") from exc
        total += len(raw)
        if total > MAX_ENV_BYTES:
            raise BadPeer(f"environment block larger than {MAX_ENV_BYTES} bytes")
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if not env:
                raise BadPeer("empty environment block")
            return env
        key, sep, value = line.partition(":")
        if not sep or not key.startswith("agi_"):
            raise BadPeer("not an AGI environment line")
        env[key.strip()] = value.strip()
    raise BadPeer(f"more than {MAX_LINES} environment lines")


def call_arguments(env: dict[str, str]) -> list[str]:
    return [env.get(f"agi_arg_{i}", "") for i in range(1, 8)]


class FastAgiServer:
    """Serves decisions. `decide` is the policy (sync, in memory, ready before `start`);
    `fail_safe` answers when `decide` raises."""

    def __init__(
        self,
        decide: Callable[[CallRequest], Decision],
        fail_safe: Callable[[CallRequest, str], Decision],
        limits: Limits | None = None,
        on_decision: Callable[[Decision, str, float, CallRequest, dict[str, str]], None]
        | None = None,
    ) -> None:
        self._decide = decide
        self._fail_safe = fail_safe
        self.limits = limits or Limits()
        self._on_decision = on_decision
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = {"decisions": 0, "errors": 0, "bad_peers": 0, "refused": 0}

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(
            self._accept, host, port, limit=MAX_LINE, reuse_address=True)

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
        if len(self._tasks) >= self.limits.max_connections:
            self.stats["refused"] += 1
            log.warning("agi_connection_refused", reason="too many connections",
                        active=len(self._tasks))
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        limits = self.limits
        try:
            # asyncio.timeout, not wait_for: wait_for wraps each await in a new Task.
            async with asyncio.timeout(limits.env_deadline):
                env = await read_environment(reader)
        except (BadPeer, TimeoutError, ConnectionError) as exc:
            self.stats["bad_peers"] += 1
            reason = "environment deadline" if isinstance(exc, TimeoutError) else str(exc)
            log.warning("agi_bad_peer", peer=str(peer), reason=safe_value(reason))
            return
        started = time.perf_counter()
        call = AgiCall.from_args(call_arguments(env))
        request = CallRequest(
            dialled=call.dialled,
            now=datetime.now(UTC),
            endpoint=call.endpoint or None,
            source_ip=call.remote_addr or None,
            caller_id=call.caller_id or None,
            privacy=call.privacy,
            forwarded_from=call.forwarded_from or None,
        )
        source = SOURCE_DAEMON
        try:
            decision = self._decide(request)
        except Exception:  # a bug must not leave the call hanging: the fail-safe answer
            log.exception("decision_failed", uniqueid=safe_value(env.get("agi_uniqueid")),
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
            log.warning("agi_no_reply", uniqueid=safe_value(env.get("agi_uniqueid")),
                        reason=type(exc).__name__)
            return
        if not reply.startswith(b"200"):
            log.warning("agi_command_failed", uniqueid=safe_value(env.get("agi_uniqueid")),
                        reply=safe_value(reply[:120].decode("utf-8", "replace").strip()))


def log_decision(decision: Decision, call: AgiCall, env: dict[str, str], source: str,
                 elapsed: float) -> None:
    cid = decision.caller_id
    fields = {
        "uniqueid": safe_value(env.get("agi_uniqueid")),
        "channel": safe_value(env.get("agi_channel")),
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
