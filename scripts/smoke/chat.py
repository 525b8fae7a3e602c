#!/usr/bin/env python3
"""Drive the pub/sub chat page in two headless Chromium pages and check that they talk.

    chat.py APP_HTTP_URL [SCREENSHOT.png] [--bob-url SECOND_NODE_HTTP_URL]

APP_HTTP_URL is `hioload-ws pubsub`'s listener (http://HOST:PORT/, where `GET /` serves the
page). With --bob-url the second page is served by another node (nodes joined through Redis:
`pubsub --redis`), so every step crosses nodes. Two pages in separate browser contexts (separate storage, like two people) choose names,
join one room, see each other in presence, exchange messages both ways, survive a dropped
connection (the page reconnects and recovers what was sent meanwhile with `since`), see the other
leave, and after a reload see the history. DevTools protocol over its own WebSocket, with the
`websockets` package. Saves a screenshot of a page mid-conversation when a path is given. Exits 1
with the reason otherwise.
"""

import asyncio
import base64
import json
import shutil
import sys
import tempfile
import time

import websockets

from chromium import start as chromium_start


def fail(msg):
    print(f"chat.py: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


class Browser:
    """A minimal DevTools client: one connection, any number of attached page sessions."""

    def __init__(self, ws):
        self.ws, self.next_id = ws, 0

    async def call(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        await self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    fail(f"{method}: {reply['error']}")
                return reply["result"]

    async def page(self, url):
        """A page in a browser context of its own; returns its session."""
        ctx = await self.call("Target.createBrowserContext")
        target = await self.call("Target.createTarget",
                                 {"url": url, "browserContextId": ctx["browserContextId"]})
        attached = await self.call("Target.attachToTarget",
                                   {"targetId": target["targetId"], "flatten": True})
        return attached["sessionId"]

    async def eval(self, session, expr):
        r = await self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True},
                            session=session)
        return r.get("result", {}).get("value")


# What a test reads of a page: status line, users present, messages shown (with seq).
READ = """JSON.stringify({
  status: document.getElementById('status').textContent,
  users: [...document.querySelectorAll('#users li')].map(li => li.textContent),
  rooms: [...document.querySelectorAll('#rooms li')].map(li => li.dataset.room),
  messages: [...document.querySelectorAll('#messages .msg')].map(d =>
      [d.querySelector('.user').textContent, d.querySelector('.text').textContent, +d.dataset.seq]),
})"""


async def read(b, page):
    v = await b.eval(page, READ)
    return json.loads(v) if v else {"status": "", "users": [], "rooms": [], "messages": []}


async def until(b, page, what, check, limit=10.0):
    deadline = time.time() + limit
    while True:
        v = await read(b, page)
        if check(v):
            return v
        if time.time() > deadline:
            fail(f"{what}: the page shows {v}")
        await asyncio.sleep(0.1)


async def join(b, page, name, room):
    await until(b, page, "page loaded", lambda v: True)
    await b.eval(page, f"document.getElementById('name').value = {json.dumps(name)};"
                       f"document.getElementById('room').value = {json.dumps(room)};"
                       "document.getElementById('join').click(); true")


async def say(b, page, text):
    await b.eval(page, f"document.getElementById('text').value = {json.dumps(text)};"
                       "document.getElementById('send').click(); true")


def texts(v):
    return [m[1] for m in v["messages"]]


async def main():
    if len(sys.argv) < 2:
        fail(__doc__)
    args = sys.argv[1:]
    bob_url = None
    if "--bob-url" in args:
        i = args.index("--bob-url")
        if i + 1 >= len(args):
            fail("--bob-url needs a URL")
        bob_url = args[i + 1].rstrip("/") + "/"
        del args[i:i + 2]
    url = args[0].rstrip("/") + "/"
    bob_url = bob_url or url
    shot = args[1] if len(args) > 1 else None
    profile = tempfile.mkdtemp(prefix="hioload-chat-")
    chromium, endpoint = chromium_start(profile, "1100,650", fail)
    try:
        async with websockets.connect(endpoint, max_size=None) as ws:
            b = Browser(ws)
            ann, bob = await b.page(url), await b.page(bob_url)
            if bob_url != url:
                print(f"chat.py: ann's page from {url}, bob's from {bob_url}")
            for _ in range(100):  # both pages have run their script
                if await b.eval(ann, "typeof handle") == "function" and \
                        await b.eval(bob, "typeof handle") == "function":
                    break
                await asyncio.sleep(0.1)

            await join(b, ann, "ann", "lobby")
            await until(b, ann, "ann joined", lambda v: v["status"].startswith("connected") and v["users"] == ["ann"])
            await join(b, bob, "bob", "lobby")
            await until(b, bob, "bob sees both", lambda v: v["users"] == ["ann", "bob"])
            await until(b, ann, "ann sees bob arrive", lambda v: v["users"] == ["ann", "bob"])
            print("chat.py: presence: both pages list ann and bob")

            await say(b, ann, "hello from ann")
            await until(b, bob, "bob gets ann's message", lambda v: "hello from ann" in texts(v))
            await say(b, bob, "hi ann, bob here")
            v = await until(b, ann, "ann gets bob's message", lambda v: "hi ann, bob here" in texts(v))
            if texts(v) != ["hello from ann", "hi ann, bob here"]:
                fail(f"ann's page shows {v['messages']}")
            print("chat.py: messages both ways")
            if shot:
                png = await b.call("Page.captureScreenshot", {"format": "png"}, session=ann)
                with open(shot, "wb") as f:
                    f.write(base64.b64decode(png["data"]))
                print(f"chat.py: screenshot in {shot}")

            # Ann's connection drops; bob writes meanwhile; ann's page reconnects with `since`
            # and shows the message once.
            await b.eval(ann, "ws.close(); true")
            await until(b, ann, "ann's page notices", lambda v: "reconnecting" in v["status"], 5)
            await say(b, bob, "while you were away")
            v = await until(b, ann, "ann recovers what she missed",
                            lambda v: "while you were away" in texts(v) and v["status"].startswith("connected"))
            if texts(v).count("while you were away") != 1 or [m[2] for m in v["messages"]] != [1, 2, 3]:
                fail(f"recovery shows {v['messages']}")
            print("chat.py: reconnect recovered the missed message (seq 1, 2, 3, once each)")

            await b.eval(bob, "document.querySelector('#rooms li[data-room=\"lobby\"] button.leave').click(); true")
            await until(b, bob, "bob's page drops the room", lambda v: v["rooms"] == [])
            await until(b, ann, "ann sees bob leave", lambda v: v["users"] == ["ann"])
            print("chat.py: ann saw bob leave")

            await b.call("Page.reload", {}, session=ann)
            await asyncio.sleep(0.3)
            v = await until(b, ann, "history after a reload",
                            lambda v: texts(v) == ["hello from ann", "hi ann, bob here", "while you were away"])
            print(f"chat.py: after a reload ann's page shows the history: {texts(v)}")
    finally:
        chromium.kill()
        chromium.wait()
        shutil.rmtree(profile, ignore_errors=True)
    print("chat.py: ok")


if __name__ == "__main__":
    asyncio.run(main())
