"""The small HTTP server behind /metrics and /status: its own thread running its own event
loop, so that no flood of HTTP clients can stall the daemon's decisions.

Bounded whatever the clients do: one thread (not one per connection, as the WSGI server had:
2 000 held connections made ~500 threads), at most MAX_CONNECTIONS open (a newcomer evicts the
oldest one that has not sent its request yet: connection_slots.py), the request within
REQUEST_DEADLINE and MAX_REQUEST bytes, the answer taken within WRITE_DEADLINE, then the
connection is closed (HTTP/1.0 style, one request per connection). GET and HEAD only.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable

from .connection_slots import ConnectionSlots

# Real clients are a scraper or two and `callpolicy status`. The loop accepts up to BACKLOG
# connections per turn and reads a request a turn or two after accepting it: with several
# turns' worth of slots, a scrape that sends its request at once is never the oldest one
# waiting when a flood arrives.
MAX_CONNECTIONS = 256
BACKLOG = 64
REQUEST_DEADLINE = 2.0  # s to send the request line and headers
WRITE_DEADLINE = 5.0  # s to take the answer
MAX_REQUEST = 8 * 1024  # bytes of request line and headers

#: path -> (status line, content type, body)
Handler = Callable[[str], tuple[str, str, bytes]]


class HttpServer:
    def __init__(self, handler: Handler, name: str = "callpolicy-http") -> None:
        self._handler = handler
        self._name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.port: int | None = None

    def start(self, host: str, port: int) -> int:
        """Listen on host:port (0: a free port) and serve from a daemon thread; returns the
        port. Raises OSError here, in the caller, if the address cannot be bound."""
        if self._thread is not None:
            raise RuntimeError("HTTP server already started")
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                    flags=socket.AI_PASSIVE)[0][0]
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
        self.port = int(sock.getsockname()[1])
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(sock, ready), name=self._name,
                                        daemon=True)
        self._thread.start()
        ready.wait(5)
        return self.port

    def stop(self) -> None:
        """Stop serving and free the port (idempotent)."""
        thread, loop, stop = self._thread, self._loop, self._stop
        self._thread = self._loop = self._stop = None
        self.port = None
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(timeout=5)

    def _run(self, sock: socket.socket, ready: threading.Event) -> None:
        asyncio.run(self._serve(sock, ready))

    async def _serve(self, sock: socket.socket, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        slots = ConnectionSlots(MAX_CONNECTIONS)

        async def connection(reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
            slot = slots.admit(writer.transport.abort).slot
            if slot is None:  # every slot is answering: try again later
                writer.transport.abort()
                return
            try:
                async with asyncio.timeout(REQUEST_DEADLINE):
                    request = await read_request(reader)
                slots.settle(slot)
                writer.write(self._answer(request))
                async with asyncio.timeout(WRITE_DEADLINE):
                    await writer.drain()
                writer.close()  # the answer is with the kernel
            except (TimeoutError, ConnectionError, ValueError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError):
                writer.transport.abort()  # a client that does not behave loses its connection
            finally:
                slots.release(slot)

        server = await asyncio.start_server(connection, sock=sock, limit=MAX_REQUEST)
        ready.set()
        async with server:
            await self._stop.wait()

    def _answer(self, request: tuple[str, str]) -> bytes:
        method, path = request
        if method not in ("GET", "HEAD"):
            status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET or HEAD\n"
        else:
            status, ctype, body = self._handler(path)
        head = (f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}"
                "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n").encode()
        return head if method == "HEAD" else head + body


async def read_request(reader: asyncio.StreamReader) -> tuple[str, str]:
    """(method, path) of one request; its headers are read and ignored. ValueError if it is
    not HTTP or longer than MAX_REQUEST."""
    line = await reader.readuntil(b"\n")
    total = len(line)
    parts = line.decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("not an HTTP request line")
    while (header := await reader.readuntil(b"\n")).strip():
        total += len(header)
        if total > MAX_REQUEST:
            raise ValueError("request too large")
    return parts[0], parts[1].split("?", 1)[0]
