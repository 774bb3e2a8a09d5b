"""Hostile local peers for the flood tests, run as their own process (so that the flood's CPU
and GIL do not distort the measuring client):

    python flood_peer.py idle  PORT COUNT SECONDS   # connect, send nothing, reconnect when closed
    python flood_peer.py loris PORT COUNT SECONDS   # trickle an environment block at 1 byte/s
    python flood_peer.py http  PORT COUNT SECONDS   # COUNT connections held ~1.5 s, released, again

Loopback only, bounded in count and time; prints one JSON line of counts at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time

HOST = "127.0.0.1"
BLOCK = b"agi_network: yes\nagi_network_script: decide\nagi_uniqueid: 1.1\n\n"
HTTP_HOLD = 1.5


def raise_nofile(count: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))


async def connect(port: int, deadline: float, counts: dict[str, int]):
    try:
        pair = await asyncio.wait_for(asyncio.open_connection(HOST, port),
                                      max(0.01, deadline - time.monotonic()))
    except (OSError, TimeoutError):
        counts["connect_failed"] += 1
        await asyncio.sleep(0.01)
        return None
    counts["connected"] += 1
    return pair


async def idle(port: int, deadline: float, counts: dict[str, int]) -> None:
    while time.monotonic() < deadline:
        pair = await connect(port, deadline, counts)
        if pair is None:
            continue
        reader, writer = pair
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(reader.read(), max(0.01, deadline - time.monotonic()))
        writer.close()


async def loris(port: int, deadline: float, counts: dict[str, int]) -> None:
    while time.monotonic() < deadline:
        pair = await connect(port, deadline, counts)
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
                if time.monotonic() >= deadline:
                    break
        except OSError:
            pass
        writer.close()


async def http_hold(port: int, count: int, deadline: float, counts: dict[str, int]) -> None:
    while time.monotonic() < deadline:
        held: list[asyncio.StreamWriter] = []

        async def one(i: int, held: list[asyncio.StreamWriter] = held) -> None:
            pair = await connect(port, deadline, counts)
            if pair is not None:
                if i % 4:
                    pair[1].write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                held.append(pair[1])

        await asyncio.gather(*(one(i) for i in range(count)))
        await asyncio.sleep(min(HTTP_HOLD, max(0.0, deadline - time.monotonic())))
        for writer in held:
            writer.close()
        counts["released"] += len(held)
        await asyncio.sleep(0.2)


async def main(mode: str, port: int, count: int, seconds: float) -> dict[str, int]:
    counts = {"connected": 0, "connect_failed": 0, "released": 0}
    deadline = time.monotonic() + seconds
    if mode == "http":
        await http_hold(port, count, deadline, counts)
    else:
        peer = {"idle": idle, "loris": loris}[mode]
        await asyncio.gather(*(peer(port, deadline, counts) for _ in range(count)))
    return counts


if __name__ == "__main__":
    mode, port, count, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(
        sys.argv[4])
    raise_nofile(count)
    print(json.dumps(asyncio.run(main(mode, port, count, seconds))), flush=True)
