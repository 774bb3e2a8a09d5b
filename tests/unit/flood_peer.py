"""Hostile local peers for the flood tests, run as their own process (so that the flood's CPU
and GIL do not distort the measuring client):

    python flood_peer.py idle  PORT COUNT SECONDS   # connect, send nothing, reconnect when closed
    python flood_peer.py loris PORT COUNT SECONDS   # trickle an environment block at 1 byte/s
    python flood_peer.py http  PORT COUNT SECONDS   # COUNT connections held ~1.5 s, released, again

Loopback only, bounded in count and time: it stops when its stdin is closed (the test's
measurement is done, however long that took) or after SECONDS at most. Prints `ready` once
COUNT connections were made, and one JSON line of counts at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time

HOST = "127.0.0.1"
BLOCK = b"agi_network: yes\nagi_network_script: decide\nagi_uniqueid: 1.1\n\n"
HTTP_HOLD = 1.5


class End:
    """When the flood ends: SECONDS from the start, or now once stdin is closed (a cancel alone
    is not enough: Python 3.11's wait_for can swallow it when its inner future just finished,
    and a peer would go on until the time limit)."""

    at = 0.0

    @classmethod
    def left(cls) -> float:
        return max(0.01, cls.at - time.monotonic())

    @classmethod
    def passed(cls) -> bool:
        return time.monotonic() >= cls.at


def raise_nofile(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


async def connect(port: int, counts: dict[str, int]):
    try:
        pair = await asyncio.wait_for(asyncio.open_connection(HOST, port),
                                      End.left())
    except (OSError, TimeoutError):
        counts["connect_failed"] += 1
        await asyncio.sleep(0.01)
        return None
    counts["connected"] += 1
    return pair


async def idle(port: int, counts: dict[str, int]) -> None:
    while not End.passed():
        pair = await connect(port, counts)
        if pair is None:
            continue
        reader, writer = pair
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(reader.read(), End.left())
        writer.close()


async def loris(port: int, counts: dict[str, int]) -> None:
    while not End.passed():
        pair = await connect(port, counts)
        if pair is None:
            continue
        reader, writer = pair
        try:
            for i in range(len(BLOCK)):
                writer.write(BLOCK[i:i + 1])
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(100), 1.0) == b"":
                        break  # the server closed
                except TimeoutError:
                    pass
                if End.passed():
                    break
        except OSError:
            pass
        writer.close()


async def http_hold(port: int, count: int, counts: dict[str, int]) -> None:
    while not End.passed():
        held: list[asyncio.StreamWriter] = []

        async def one(i: int, held: list[asyncio.StreamWriter] = held) -> None:
            pair = await connect(port, counts)
            if pair is not None:
                if i % 4:
                    pair[1].write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                held.append(pair[1])

        await asyncio.gather(*(one(i) for i in range(count)))
        await asyncio.sleep(min(HTTP_HOLD, End.left()))
        for writer in held:
            writer.close()
        counts["released"] += len(held)
        await asyncio.sleep(0.2)


async def main(mode: str, port: int, count: int, seconds: float) -> dict[str, int]:
    counts = {"connected": 0, "connect_failed": 0, "released": 0}
    End.at = time.monotonic() + seconds
    if mode == "http":
        peers = [http_hold(port, count, counts)]
    else:
        peer = {"idle": idle, "loris": loris}[mode]
        peers = [peer(port, counts) for _ in range(count)]
    flood = asyncio.ensure_future(asyncio.gather(*peers))
    stdin_closed = asyncio.ensure_future(asyncio.to_thread(sys.stdin.read))
    while counts["connected"] < count and not flood.done():
        await asyncio.sleep(0.01)
    print("ready", flush=True)
    await asyncio.wait({flood, stdin_closed}, return_when=asyncio.FIRST_COMPLETED)
    End.at = time.monotonic()
    flood.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await flood
    return counts


if __name__ == "__main__":
    mode, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(
        sys.argv[4])
    raise_nofile(count)
    print(json.dumps(asyncio.run(main(mode, port, count, seconds))), flush=True)
    os._exit(0)  # the thread still reading stdin (flood over by its time limit) must not wait
