#!/usr/bin/python3
"""rqbit: rqbit 9.1.0 (`cargo install rqbit --version 9.1.0 --locked`) as a
test peer for btfs-mount.

Runs `rqbit download` (fetch) or `rqbit share` (seed), stateless, with
DHT, LSD, trackers and UPnP off and its HTTP API on 127.0.0.1 (a random
port), polls the API (`/torrents`, `/torrents/0/stats/v1`), and reports
JSON events on stdout (see common.py: ready, torrent, seeding, progress,
finished, error, exit). rqbit's own log (RUST_LOG, default debug for
librqbit) goes to stderr.

rqbit can be handed peers: `download --initial-peers`, and later the API's
`POST /torrents/0/add_peers`; this driver gives --peer addresses both ways
(again every 2 s while no peer is live). With --dht-bootstrap H:P the DHT
is on, bootstrapped from that node only, without persistence.

Roles (exactly one):
  --fetch MAGNET --save DIR   download; `finished` once rqbit has every byte
  --seed PATH                 `rqbit share PATH`: rqbit makes the v1 torrent
                              itself and seeds PATH in place

rqbit 9.1.0 has no MSE/PE encryption (plaintext only), and speaks uTP only
with --utp (`--experimental-enable-utp-listen`). The binary is $RQBIT, else
`rqbit` on PATH, else ~/.cargo/bin/rqbit.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    Progress, Run, completed, emit, exit_with, free_port, log, pdeathsig, wait_port,
)


def rqbit_binary():
    """The rqbit executable, or None if it is not installed."""
    env = os.environ.get("RQBIT")
    if env:
        return env if os.access(env, os.X_OK) else None
    found = shutil.which("rqbit")
    if found:
        return found
    home = os.path.expanduser("~/.cargo/bin/rqbit")
    return home if os.access(home, os.X_OK) else None


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    role = p.add_mutually_exclusive_group(required=True)
    role.add_argument("--fetch", metavar="MAGNET")
    role.add_argument("--seed", metavar="PATH")
    p.add_argument("--save", help="output folder (with --fetch)")
    p.add_argument("--port", type=int, default=0, help="peer listen port (0: a free one)")
    p.add_argument("--peer", action="append", default=[], metavar="HOST:PORT")
    p.add_argument("--dht-bootstrap", action="append", default=[], metavar="HOST:PORT")
    p.add_argument("--utp", action="store_true", help="also listen and dial over uTP")
    args = p.parse_args(argv)
    if args.fetch and not args.save:
        p.error("--fetch needs --save DIR")
    return args


class Api:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=10) as r:
            return json.loads(r.read())

    def post(self, path, body):
        req = urllib.request.Request(self.base + path, body.encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


def forward_stdout(proc, found):
    """Copy rqbit's stdout to our stderr; remember the `share` magnet."""
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        sys.stderr.write(f"rqbit> {line}\n")
        m = re.search(r"(magnet:\?\S+)", line)
        if m and "magnet" not in found:
            found["magnet"] = m.group(1)


def version(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return out.split()[-1] if out.split() else "?"


def main(argv):
    args = parse_args(argv)
    binary = rqbit_binary()
    if binary is None:
        emit("error", message="rqbit is not installed (cargo install rqbit --version 9.1.0 "
                              "--locked, or set RQBIT)")
        return 2
    return Run("rqbit-driver-").drive(lambda run: drive(args, binary, run))


def drive(args, binary, run):
    """The driver's work once its Run is set up: starts the client, adds the
    torrent and reports events until `run.stop`; an exit code for a failure
    it reported, else None."""
    stop, tmp = run.stop, run.tmp
    args.port = args.port or free_port()
    api_port = free_port("127.0.0.1")
    cmd = [binary, "--disable-lsd", "--disable-trackers", "--disable-upnp-port-forward",
           "--listen-port", str(args.port), "--listen-ip", "0.0.0.0", "--ipv4-only",
           "--http-api-listen-addr", f"127.0.0.1:{api_port}", "--peer-connect-timeout", "2s"]
    if args.dht_bootstrap:
        cmd += ["--dht-bootstrap-addrs", ",".join(args.dht_bootstrap),
                "--disable-dht-persistence"]
    else:
        cmd += ["--disable-dht"]
    if args.utp:
        cmd += ["--experimental-enable-utp-listen"]
    if args.seed:
        cmd += ["share", os.path.abspath(args.seed)]
    else:
        os.makedirs(args.save, exist_ok=True)
        cmd += ["download", args.fetch, "-o", os.path.abspath(args.save), "--overwrite"]
        if args.peer:
            cmd += ["--initial-peers", ",".join(args.peer)]
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info,librqbit=debug,librqbit_core=debug")
    env["RQBIT_LOG_LEVEL_CONSOLE"] = env.get("RQBIT_LOG_LEVEL_CONSOLE", "debug")
    log("running " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=sys.stderr, preexec_fn=pdeathsig, cwd=tmp, env=env)
    run.proc = proc
    found = {}
    threading.Thread(target=forward_stdout, args=(proc, found), daemon=True).start()
    if not wait_port("127.0.0.1", api_port, 30):
        emit("error", message=f"rqbit HTTP API did not come up within 30 s (exit {proc.poll()})")
        return 2
    api = Api(api_port)
    emit("ready", client="rqbit", version=version(binary), port=args.port,
         rpc_port=api_port, pid=proc.pid)
    added = time.monotonic()
    reported_torrent = False
    done = False
    last_peers = 0.0
    progress = Progress()
    while not stop.wait(0.25):
        if proc.poll() is not None:
            emit("error", message=f"rqbit exited with {proc.returncode}")
            return 1
        try:
            ts = api.get("/torrents").get("torrents", [])
        except (urllib.error.URLError, OSError) as e:
            log(f"api: {e}")
            continue
        if not ts:
            continue
        t = ts[0]
        tid = t.get("id", 0)
        try:
            st = api.get(f"/torrents/{tid}/stats/v1")
        except (urllib.error.URLError, OSError) as e:
            log(f"api stats: {e}")
            continue
        ih = t["info_hash"]
        if not reported_torrent and st.get("total_bytes"):
            if args.seed and "magnet" not in found:
                continue
            reported_torrent = True
            emit("torrent", info_hash=ih,
                 magnet=found.get("magnet") or f"magnet:?xt=urn:btih:{ih}",
                 name=t.get("name"), total_size=st["total_bytes"])
        live = st.get("live") or {}
        peers = ((live.get("snapshot") or {}).get("peer_stats") or {}).get("live", 0)
        now = time.monotonic()
        if args.peer and peers == 0 and now - last_peers >= 2.0 and st.get("state") == "live":
            last_peers = now
            try:
                r = api.post(f"/torrents/{tid}/add_peers", "\n".join(args.peer))
                log(f"add_peers: {r}")
            except (urllib.error.URLError, OSError) as e:
                log(f"add_peers: {e}")
        mbps = lambda k: int(float((live.get(k) or {}).get("mbps", 0)) * 1e6 / 8)  # noqa: E731
        progress.report(info_hash=ih, state=st.get("state"), done=st.get("progress_bytes", 0),
                        total=st.get("total_bytes", 0), peers=peers,
                        download_rate=mbps("download_speed"),
                        upload_rate=mbps("upload_speed"),
                        uploaded=st.get("uploaded_bytes", 0))
        if st.get("error"):
            emit("error", message=f"rqbit: {st['error']}")
        if st.get("finished") and reported_torrent and not done:
            done = True
            completed(args.seed, ih, added)


if __name__ == "__main__":
    exit_with(main)
