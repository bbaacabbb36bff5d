#!/usr/bin/python3
"""aria2: aria2c 1.36 (Debian `aria2`) as a test peer for btfs-mount.

Starts `aria2c` with its JSON-RPC interface on 127.0.0.1 (a random port),
adds one download or one seed through it, and reports JSON events on
stdout (see common.py: ready, torrent, seeding, progress, finished, error,
exit). aria2c's own debug log goes to stderr (or --log FILE).

aria2 cannot be handed a peer address: it learns peers from trackers, the
DHT (BEP 5) and PEX. Give it --dht-entry HOST:PORT (a DHT node of the test,
never a public router) or --tracker URL (the harness's tracker.py). LPD is
off. Its DHT routing table lives in the temp dir, not ~/.cache/aria2.

Roles (exactly one):
  --fetch MAGNET --save DIR   download; `finished` once aria2 has every byte
  --seed PATH                 make a v1 torrent of PATH (file or directory,
                              with python3-libtorrent: aria2 cannot make
                              torrents), check it and seed it from PATH's
                              parent directory

Encryption (MSE/PE): --encryption prefer (default: aria2's defaults, which
accept both and dial plaintext first), require (--bt-require-crypto=true
--bt-min-crypto-level=arc4), or plain (--bt-require-crypto=false
--bt-min-crypto-level=plain).
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    Progress, Run, completed, emit, exit_with, free_port, log, make_torrent, pdeathsig, wait_port,
)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    role = p.add_mutually_exclusive_group(required=True)
    role.add_argument("--fetch", metavar="MAGNET")
    role.add_argument("--seed", metavar="PATH")
    p.add_argument("--save", help="download directory (with --fetch)")
    p.add_argument("--port", type=int, default=0, help="peer TCP listen port (0: a free one)")
    p.add_argument("--dht-port", type=int, default=0, help="DHT UDP port (0: a free one)")
    p.add_argument("--dht-entry", action="append", default=[], metavar="HOST:PORT",
                   help="DHT entry point (aria2 takes one; the first is used); "
                        "without it the DHT is off")
    p.add_argument("--tracker", action="append", default=[], metavar="URL",
                   help="HTTP tracker to announce to (repeatable)")
    p.add_argument("--encryption", choices=["prefer", "require", "plain"], default="prefer")
    p.add_argument("--log", metavar="FILE", default="/dev/stderr",
                   help="aria2c's debug log (default: our stderr)")
    p.add_argument("--log-level", default="debug")
    p.add_argument("--piece-size", type=int, default=0, help="with --seed; 0: libtorrent's choice")
    args = p.parse_args(argv)
    if args.fetch and not args.save:
        p.error("--fetch needs --save DIR")
    return args


class Rpc:
    """aria2's JSON-RPC over HTTP on loopback."""

    def __init__(self, port):
        self.url = f"http://127.0.0.1:{port}/jsonrpc"
        self.n = 0

    def call(self, method, *params):
        self.n += 1
        body = json.dumps({"jsonrpc": "2.0", "id": str(self.n), "method": method,
                           "params": list(params)}).encode()
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            reply = json.loads(r.read())
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]


def aria2_command(args, tmp, rpc_port):
    cmd = [
        "aria2c", "--no-conf=true", "--enable-rpc=true", "--rpc-listen-all=false",
        f"--rpc-listen-port={rpc_port}", "--rpc-allow-origin-all=false",
        f"--listen-port={args.port}", f"--dht-listen-port={args.dht_port}",
        f"--dht-file-path={tmp}/dht.dat", f"--dht-file-path6={tmp}/dht6.dat",
        "--enable-dht6=false", "--disable-ipv6=true", "--bt-enable-lpd=false",
        "--enable-peer-exchange=true", "--bt-save-metadata=false",
        "--follow-torrent=mem", "--file-allocation=none", "--seed-ratio=0.0",
        "--bt-stop-timeout=0", "--bt-max-peers=55", "--summary-interval=0",
        "--console-log-level=warn", f"--log={args.log}", f"--log-level={args.log_level}",
        "--auto-save-interval=0", "--save-session-interval=0", "--allow-overwrite=true",
        "--bt-detach-seed-only=false", "--max-overall-upload-limit=0",
        "--max-overall-download-limit=0", "--check-certificate=false",
    ]
    if args.dht_entry:
        cmd += ["--enable-dht=true", f"--dht-entry-point={args.dht_entry[0]}"]
    else:
        cmd += ["--enable-dht=false"]
    if args.tracker:
        cmd += ["--bt-tracker=" + ",".join(args.tracker)]
    if args.encryption == "require":
        cmd += ["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"]
    elif args.encryption == "plain":
        cmd += ["--bt-require-crypto=false", "--bt-min-crypto-level=plain"]
    return cmd


def version():
    out = subprocess.run(["aria2c", "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0].split()[-1] if out else "?"


def status_fields(st):
    total = int(st.get("totalLength", 0))
    done = int(st.get("completedLength", 0))
    return {
        "info_hash": st.get("infoHash"),
        "state": st.get("status"),
        "done": done,
        "total": total,
        "peers": int(st.get("connections", 0)),
        "download_rate": int(st.get("downloadSpeed", 0)),
        "upload_rate": int(st.get("uploadSpeed", 0)),
        "uploaded": int(st.get("uploadLength", 0)),
    }


def main(argv):
    args = parse_args(argv)
    return Run("aria2-driver-").drive(lambda run: drive(args, run))


def drive(args, run):
    """The driver's work once its Run is set up: starts the client, adds the
    torrent and reports events until `run.stop`; an exit code for a failure
    it reported, else None."""
    stop, tmp = run.stop, run.tmp
    args.port = args.port or free_port()
    args.dht_port = args.dht_port or free_port()
    rpc_port = free_port("127.0.0.1")
    if args.seed:
        data, ih, magnet, name, total = make_torrent(args.seed, args.piece_size)
    cmd = aria2_command(args, tmp, rpc_port)
    log("running " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sys.stderr,
                            preexec_fn=pdeathsig, cwd=tmp)
    run.proc = proc
    if not wait_port("127.0.0.1", rpc_port, 20):
        emit("error", message="aria2c RPC did not come up within 20 s")
        return 2
    rpc = Rpc(rpc_port)
    emit("ready", client="aria2", version=version(), port=args.port,
         dht_port=args.dht_port if args.dht_entry else None, rpc_port=rpc_port, pid=proc.pid)
    added = time.monotonic()
    if args.seed:
        src = os.path.abspath(args.seed)
        gid = rpc.call("aria2.addTorrent", base64.b64encode(data).decode(), [],
                       {"dir": os.path.dirname(src), "check-integrity": "true",
                        "bt-hash-check-seed": "true", "seed-ratio": "0.0"})
        emit("torrent", info_hash=ih, magnet=magnet, name=name, total_size=total)
    else:
        os.makedirs(args.save, exist_ok=True)
        gid = rpc.call("aria2.addUri", [args.fetch], {"dir": os.path.abspath(args.save)})
    log(f"added gid {gid}")
    reported_torrent = bool(args.seed)
    done = False
    progress = Progress()
    while not stop.wait(0.25):
        if proc.poll() is not None:
            emit("error", message=f"aria2c exited with {proc.returncode}")
            return 1
        st = rpc.call("aria2.tellStatus", gid)
        # A magnet first downloads the metadata as its own gid, which
        # is then followed by the real download.
        if st.get("followedBy"):
            gid = st["followedBy"][0]
            log(f"metadata done; following gid {gid}")
            continue
        if st.get("status") == "error":
            emit("error", message=f"aria2: {st.get('errorCode')} {st.get('errorMessage')}")
        f = status_fields(st)
        bt = st.get("bittorrent", {})
        if not reported_torrent and bt.get("info") and f["total"] > 0:
            reported_torrent = True
            emit("torrent", info_hash=f["info_hash"], magnet=args.fetch,
                 name=bt["info"].get("name"), total_size=f["total"])
        progress.report(**f)
        complete = f["total"] > 0 and f["done"] == f["total"] and bt.get("info")
        if complete and not done:
            done = True
            completed(args.seed, f["info_hash"], added)


if __name__ == "__main__":
    exit_with(main)
