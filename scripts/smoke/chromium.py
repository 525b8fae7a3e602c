"""Headless Chromium for the smoke tests: start it with a DevTools endpoint."""

import re
import shutil
import subprocess
import time


def start(profile, window_size, fail):
    """Start Debian's chromium headless with its own profile directory; returns the process and
    its DevTools WebSocket URL. Calls `fail(reason)` if it cannot."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        fail("chromium is not installed (Debian package: chromium)")
    proc = subprocess.Popen(
        [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--window-size={window_size}", "--remote-debugging-port=0",
         f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stderr.readline()
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            return proc, m.group(1)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    fail("chromium did not announce its DevTools endpoint")
