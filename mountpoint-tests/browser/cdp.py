#!/usr/bin/python3
"""cdp: load a page in headless Chromium and print what it computed, as JSON.

Usage: cdp.py URL [--chromium PATH] [--timeout SECS] [--expr JS]

Starts Debian's chromium headless with --remote-debugging-pipe (the
DevTools protocol over fds 3 and 4, NUL-separated JSON: no websocket and
no chromedriver needed), opens URL in a new tab, waits for the load event,
then evaluates JS (default: `window.results`, which the page may set to a
Promise) with awaitPromise and prints one JSON line on stdout:
  {"ok": true, "value": <the value>, "dom": "<outerHTML of the body>"}
or {"ok": false, "error": "..."}. Exits non-zero on failure. Python 3
stdlib only. Never reaches anything but URL (background networking, sync,
component updates and the first-run wizard are off).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--expr", default="window.results")
    a = p.parse_args()
    profile = tempfile.mkdtemp(prefix="cdp-profile-")
    to_chrome_r, to_chrome_w = os.pipe()
    from_chrome_r, from_chrome_w = os.pipe()

    def child_fds():
        os.dup2(to_chrome_r, 3)
        os.dup2(from_chrome_w, 4)

    args = [a.chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--no-default-browser-check", "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
    proc = subprocess.Popen(args, preexec_fn=child_fds, pass_fds=(3, 4),
                            stdout=subprocess.DEVNULL, stderr=sys.stderr)
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    out = os.fdopen(to_chrome_w, "wb", buffering=0)
    inp = os.fdopen(from_chrome_r, "rb", buffering=0)
    deadline = time.monotonic() + a.timeout
    buf = b""
    next_id = [0]
    events = []

    def send(method, params=None, session=None):
        next_id[0] += 1
        msg = {"id": next_id[0], "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        out.write(json.dumps(msg).encode() + b"\0")
        return next_id[0]

    def read_msg():
        nonlocal buf
        while b"\0" not in buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from chromium in time")
            chunk = inp.read(65536)
            if not chunk:
                raise EOFError("chromium closed the pipe")
            buf += chunk
        raw, buf = buf.split(b"\0", 1)
        return json.loads(raw)

    def call(method, params=None, session=None):
        want = send(method, params, session)
        while True:
            m = read_msg()
            if m.get("id") == want:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            events.append(m)

    try:
        target = call("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        call("Page.enable", session=sid)
        call("Page.navigate", {"url": a.url}, session=sid)
        loaded = any(e.get("method") == "Page.loadEventFired" for e in events)
        while not loaded:
            m = read_msg()
            loaded = m.get("method") == "Page.loadEventFired"
        left = max(1.0, deadline - time.monotonic())
        expr = f"Promise.race([Promise.resolve({a.expr}), new Promise((_, rej) => setTimeout(() => rej(new Error('timed out')), {int(left * 1000) - 500}))])"
        r = call("Runtime.evaluate", {"expression": expr, "awaitPromise": True, "returnByValue": True},
                 session=sid)
        if "exceptionDetails" in r:
            raise RuntimeError(json.dumps(r["exceptionDetails"])[:2000])
        dom = call("Runtime.evaluate", {"expression": "document.body ? document.body.outerHTML : ''",
                                        "returnByValue": True}, session=sid)
        print(json.dumps({"ok": True, "value": r["result"].get("value"),
                          "dom": dom["result"].get("value")}))
        code = 0
    except Exception as e:  # one JSON line whatever went wrong
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        code = 1
    finally:
        try:
            send("Browser.close")
        except OSError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(["rm", "-rf", profile])
    sys.exit(code)


if __name__ == "__main__":
    main()
