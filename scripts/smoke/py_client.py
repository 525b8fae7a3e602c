"""Smoke test of the echo appliance with the Python `websockets` client.

usage: py_client.py ws://HOST:PORT/path

Checks that permessage-deflate is negotiated (the client offers it by default), then text,
binary, 1 MiB of compressible JSON and of random bytes, fragmented messages, ping/pong, 50
concurrent sessions, a session without compression, and the close handshake. Exits non-zero
with a message on the first failure.
"""
import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect


async def one_session(url: str, n: int) -> None:
    async with connect(url, max_size=None) as ws:
        for i in range(20):
            msg = f"session {n} message {i} κόσμε"
            await ws.send(msg)
            got = await ws.recv()
            assert got == msg, f"text echo mismatch: {got!r} != {msg!r}"


async def main(url: str) -> None:
    async with connect(url, max_size=None) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        assert "permessage-deflate" in ext, f"permessage-deflate not negotiated: {ext!r}"
        await ws.send("hello")
        assert await ws.recv() == "hello", "text echo"
        records = json.dumps([{"type": "message", "user": f"u{i % 97}", "seq": i} for i in range(25000)])
        await ws.send(records)
        assert await ws.recv() == records, f"{len(records)}-byte JSON echo"
        blob = os.urandom(1000)
        await ws.send(blob)
        assert await ws.recv() == blob, "binary echo"
        big = os.urandom(1 << 20)
        await ws.send(big)
        assert await ws.recv() == big, "1 MiB echo"
        # An iterable is sent as a fragmented message, one frame per item.
        await ws.send(["frag", "men", "ted"])
        assert await ws.recv() == "fragmented", "fragmented echo"
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, 5)
        await ws.close(code=1000, reason="done")
        assert ws.close_code == 1000, f"close code {ws.close_code}"
    await asyncio.gather(*(one_session(url, n) for n in range(50)))
    async with connect(url, max_size=None, compression=None) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers, "nothing offered, nothing answered"
        await ws.send("plain " * 100)
        assert await ws.recv() == "plain " * 100, "echo without compression"
    print("python websockets smoke: ok (permessage-deflate, text, binary, JSON and 1 MiB, "
          "fragmented, ping, 50 concurrent, without compression, close)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1]), 60))
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        sys.exit(f"python websockets smoke: FAILED: {type(e).__name__}: {e}")
