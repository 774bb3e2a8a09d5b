"""The floor of the load benchmark: the cheapest FastAGI server asyncio can be.

It speaks the same one-round-trip protocol as the daemon (environment block, ONE
`EXEC MSet`, "200 result=", close) on 127.0.0.1:4573 and always allows the call to the number
dialled (agi_arg_3, or agi_extension when the dialplan passes no arguments), with no policy,
no logging, no AMI, no store. It serves two dialplans of the bench: [bare-agi] ([bare] plus
this one AGI call: the mechanism's floor) and "floor" (the policy dialplan with this server in
the daemon's place), so that what Asterisk's AGI handling, the policy dialplan and the
daemon's own work (decision, logging, AMI, call records) cost can be told apart.

    python bench/floor_agi.py [--listen 127.0.0.1:4573]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import re
import signal

_SAFE = re.compile(r"[^0-9+*#]")


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        dialled = ""
        while True:
            line = await reader.readline()
            if not line or line == b"\n":
                break
            if line.startswith(b"agi_arg_3:"):
                with contextlib.suppress(binascii.Error, ValueError):
                    dialled = base64.b64decode(line[10:].strip()).decode("ascii", "replace")
            elif line.startswith(b"agi_extension:") and not dialled:
                dialled = line[14:].strip().decode("ascii", "replace")
        if line:
            dest = _SAFE.sub("", dialled)
            writer.write(f'EXEC MSet "CP_ACTION=allow,CP_REASON=allowed,CP_DEST={dest},'
                         f'CP_CID_PRES=allowed,CP_EMERGENCY=0,CP_SOURCE=floor"\n'.encode())
            await reader.readline()
    finally:
        writer.close()


async def main(host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port, reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("listening", flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:4573")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    asyncio.run(main(host, int(port)))
