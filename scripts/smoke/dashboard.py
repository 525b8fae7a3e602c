#!/usr/bin/env python3
"""Drive the admin dashboard in headless Chromium and check that its numbers move under load.

    dashboard.py ADMIN_URL APP_WS_URL HIOLOAD_WS_BINARY [SCREENSHOT.png]

Opens ADMIN_URL/ in Chromium (DevTools protocol over its own WebSocket, with the `websockets`
package), waits until the page is live, reads the message rate and open connections, applies
load with `hioload-ws bench echo` against APP_WS_URL, and requires both figures to rise while
the load runs. Saves a screenshot taken under load when a path is given. Exits 1 with the reason
otherwise.
"""

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import websockets

from chromium import start as chromium_start


def fail(msg):
    print(f"dashboard.py: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


class Cdp:
    """A minimal DevTools client: one browser connection, one attached page session."""

    def __init__(self, ws):
        self.ws, self.next_id, self.session = ws, 0, None

    async def call(self, method, params=None, session=True):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        await self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    fail(f"{method}: {reply['error']}")
                return reply["result"]

    async def read(self):
        expr = ("JSON.stringify({state: document.getElementById('state').textContent,"
                " rate: document.getElementById('rate').textContent,"
                " conns: document.getElementById('conns').textContent})")
        r = await self.call("Runtime.evaluate", {"expression": expr, "returnByValue": True})
        value = r.get("result", {}).get("value")
        if value is None:  # the page is still loading (its elements do not exist yet)
            return {"state": "loading", "rate": "–", "conns": "–"}
        return json.loads(value)


def number(text):
    """'12.3K' -> 12300.0; '–' -> 0."""
    m = re.fullmatch(r"([0-9.]+)([KM]?)", text.strip())
    if not m:
        return 0.0
    return float(m.group(1)) * {"": 1, "K": 1e3, "M": 1e6}[m.group(2)]


async def main():
    if len(sys.argv) < 4:
        fail(__doc__)
    admin, app_url, binary = sys.argv[1], sys.argv[2], sys.argv[3]
    shot = sys.argv[4] if len(sys.argv) > 4 else None
    profile = tempfile.mkdtemp(prefix="hioload-chromium-")
    chromium, endpoint = chromium_start(profile, "1280,800", fail)
    load = None
    try:
        async with websockets.connect(endpoint, max_size=None) as ws:
            cdp = Cdp(ws)
            target = await cdp.call("Target.createTarget", {"url": admin.rstrip("/") + "/"}, session=False)
            attached = await cdp.call("Target.attachToTarget",
                                      {"targetId": target["targetId"], "flatten": True}, session=False)
            cdp.session = attached["sessionId"]
            deadline = time.time() + 15
            while True:
                v = await cdp.read()
                if v["state"] == "live" and v["rate"] != "–":
                    break
                if time.time() > deadline:
                    fail(f"the dashboard never went live: {v}")
                await asyncio.sleep(0.2)
            before = v
            print(f"dashboard.py: idle: {before}")
            load = subprocess.Popen(
                [binary, "bench", "echo", "--url", app_url, "--connections", "20", "--depth", "4",
                 "--duration", "5s", "--warmup", "0s"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 8
            while True:
                await asyncio.sleep(0.5)
                v = await cdp.read()
                if number(v["rate"]) > max(1000.0, 10 * number(before["rate"])) and number(v["conns"]) >= 20:
                    break
                if time.time() > deadline:
                    fail(f"the numbers did not move under load: before {before}, now {v}")
            print(f"dashboard.py: under load: {v}")
            if shot:
                await asyncio.sleep(1.5)  # let the chart draw a few points
                png = await cdp.call("Page.captureScreenshot", {"format": "png"})
                with open(shot, "wb") as f:
                    f.write(base64.b64decode(png["data"]))
                print(f"dashboard.py: screenshot in {shot}")
    finally:
        if load:
            load.wait(timeout=30)
        chromium.kill()
        chromium.wait()
        shutil.rmtree(profile, ignore_errors=True)
    print("dashboard.py: ok")


if __name__ == "__main__":
    asyncio.run(main())
