#!/usr/bin/python3
"""tracker: a minimal HTTP BitTorrent tracker (BEP 3, compact peers BEP 23)
that exists only inside a test's network namespace.

btfs-mount is trackerless; this tracker is test harness, not product. It
lets clients that cannot be handed a peer address (Transmission, aria2)
learn one: every announce is answered with the --peer addresses given on
the command line plus the peers that announced the same info-hash (never
the announcing peer itself), as a compact peer list, interval 5 s.

  tracker.py --listen 10.77.0.1 [--port N] [--peer HOST:PORT]...

Events (JSON lines on stdout, see common.py):
  ready     port, url (the announce URL)
  announce  info_hash (40 hex), ip, port, kind (the announce's `event`:
            started, completed, stopped or empty), left, returned (peers sent)
"""

import argparse
import ipaddress
import os
import socket
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, host_port, install_stop, log  # noqa: E402


def bencode(v):
    """Bencode ints, bytes, str, lists and dicts (keys sorted)."""
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(bencode(k) + bencode(x) for k, x in items) + b"e"
    raise TypeError(type(v))


def compact(peers):
    out = b""
    for ip, port in peers:
        a = ipaddress.ip_address(ip)
        if a.version == 4:
            out += a.packed + port.to_bytes(2, "big")
    return out


class Tracker:
    def __init__(self, static):
        self.static = static
        self.swarms = {}  # info_hash bytes -> {(ip, port)}
        self.lock = threading.Lock()

    def announce(self, ih, ip, port, event):
        with self.lock:
            swarm = self.swarms.setdefault(ih, set())
            if event == "stopped":
                swarm.discard((ip, port))
            else:
                swarm.add((ip, port))
            peers = [p for p in list(self.static) + sorted(swarm) if p != (ip, port)]
        return list(dict.fromkeys(peers))


def handler(tracker):
    class H(BaseHTTPRequestHandler):
        def log_message(self, fmt, *a):
            log("http " + fmt % a)

        def reply(self, body):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            q = urllib.parse.parse_qs(url.query, keep_blank_values=True, encoding="latin-1")
            if url.path.endswith("/scrape"):
                # BEP 48: nothing to report; an empty `files` is valid.
                self.reply(bencode({"files": {}}))
                return
            ih = q.get("info_hash", [""])[0].encode("latin-1")
            port = q.get("port", ["0"])[0]
            if not url.path.endswith("/announce") or len(ih) != 20 or not port.isdigit():
                self.reply(bencode({"failure reason": "bad announce"}))
                return
            ip = q.get("ip", [self.client_address[0]])[0]
            event = q.get("event", [""])[0]
            peers = tracker.announce(ih, ip, int(port), event)
            emit("announce", info_hash=ih.hex(), ip=ip, port=int(port), kind=event,
                 left=q.get("left", [None])[0], returned=[f"{h}:{p}" for h, p in peers])
            self.reply(bencode({"interval": 5, "min interval": 2, "complete": len(peers),
                                "incomplete": 0, "peers": compact(peers)}))

    return H


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--peer", action="append", default=[], metavar="HOST:PORT")
    args = p.parse_args(argv)
    stop = install_stop()
    tracker = Tracker([host_port(x) for x in args.peer])
    ThreadingHTTPServer.address_family = socket.AF_INET
    srv = ThreadingHTTPServer((args.listen, args.port), handler(tracker))
    srv.daemon_threads = True
    port = srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    emit("ready", port=port, url=f"http://{args.listen}:{port}/announce")
    stop.wait(1e9)
    srv.shutdown()
    emit("exit", reason=stop.reason)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(0)
