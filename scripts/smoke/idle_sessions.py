"""Memory of idle sessions: open WebSocket sessions (Python websockets, which offers
permessage-deflate as browsers do), send one SIZE-byte chat-like JSON message on each and check
its echo, and hold them all open. The appliance's RSS is read after the first FIRST sessions
(which pay for what a worker makes once, such as its shared deflate codecs) and after N; the
growth between the two, divided by the sessions between, is what one more idle session costs.

    idle_sessions.py URL FIRST N SIZE PID

Prints one line: "N sessions, deflate: <answer>, RSS +X KiB from FIRST to N: Y bytes per session".
Exits 1 if an echo differs or a session fails.
"""

import asyncio
import json
import random
import sys

import websockets


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def chat(size, seed):
    rng = random.Random(seed)
    words = ["the", "meeting", "is", "at", "noon", "bring", "notes", "release", "plan", "thanks"]
    out = []
    n = 0
    while n < size:
        rec = json.dumps({"type": "message", "user": f"u{rng.randrange(500)}",
                          "text": " ".join(rng.choice(words) for _ in range(8))})
        out.append(rec)
        n += len(rec) + 1
    return "\n".join(out)[:size]


async def main():
    url, first, n, size, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    conns = []
    answer = None
    before = None
    for i in range(n):
        if i == first:
            await asyncio.sleep(1.0)
            before = rss_kib(pid)
        ws = await websockets.connect(url, max_size=None, ping_interval=None)
        answer = ws.response.headers.get("Sec-WebSocket-Extensions")
        msg = chat(size, i)
        await ws.send(msg)
        if await ws.recv() != msg:
            print(f"session {i}: the echo differs", file=sys.stderr)
            sys.exit(1)
        conns.append(ws)
    await asyncio.sleep(1.0)
    after = rss_kib(pid)
    grew = after - before
    print(f"{n} sessions, deflate: {answer or 'none'}, RSS +{grew} KiB from {first} to {n}: "
          f"{grew * 1024 // (n - first)} bytes per session")
    for ws in conns:
        await ws.close()


asyncio.run(main())
