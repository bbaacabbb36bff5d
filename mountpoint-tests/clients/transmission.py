#!/usr/bin/python3
"""transmission: transmission-daemon 3.00 (Debian) as a test peer for btfs-mount.

Writes a settings.json into a fresh config directory, starts
`transmission-daemon -f -g DIR` with its RPC on 127.0.0.1 (a random port,
no authentication), adds one download or one seed through the RPC, and
reports JSON events on stdout (see common.py: ready, torrent, seeding,
progress, finished, error, exit). The daemon's log (--log-debug) goes to
stderr, with its deep peer log (TR_DEBUG_FD=2: every peer message, the
peer manager's reconnect decisions such as "incremented atom [IP]:PORT
numFails to 1"), which tests read to see how Transmission judged a peer.

Transmission cannot be handed a peer address, and never dials an address
in 127.0.0.0/8, 0.0.0.0/8 or 224.0.0.0/3 (`isMartianAddr`,
libtransmission/net.c). It learns peers from trackers, the DHT, LPD and
PEX only. Inside a test namespace, put a 10.x address on `lo` and name
peers by it:
  --tracker URL        added to the torrent with RPC `torrent-set
                       trackerAdd` (the magnet stays bare); the harness's
                       tracker.py answers with the peers it was given.
  --dht-bootstrap H:P  writes CONFIG/dht.bootstrap and turns the DHT on.
                       Transmission 3.00 announces and searches only once
                       its routing table holds at least 4 good and more than
                       8 nodes (TR_DHT_POOR, tr-dht.c), so one bootstrap
                       node is not enough for it to find anyone (measured:
                       "IPv4 DHT not ready (broken, 2 nodes)" for 90 s).
                       Not bootstrapped after ~40 s, it then resolves
                       dht.transmissionbt.com: use it only inside a test
                       namespace, where that fails (no route, no DNS).
  --lpd                turns Local Peer Discovery on (off by default).
Without --dht-bootstrap the DHT is off (it would otherwise try the public
bootstrap nodes; a test namespace has no route there, but we do not try).

Roles (exactly one):
  --fetch MAGNET --save DIR   download; `finished` once every wanted byte
                              is verified (leftUntilDone = 0)
  --seed PATH                 make a v1 torrent of PATH (python3-libtorrent,
                              or --torrent FILE) and seed it from PATH's
                              parent directory after Transmission verified it

Encryption (settings.json `encryption`): --encryption 0 (prefer plaintext),
1 (prefer encrypted, Transmission's default) or 2 (require encryption).
--no-utp turns uTP off (Transmission dials uTP first when it is on).
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (  # noqa: E402
    Progress, Run, completed, emit, exit_with, free_port, log, make_torrent, pdeathsig, wait_port,
)

# torrent-get `status` (libtransmission/transmission.h, tr_torrent_activity).
STATUS = {0: "stopped", 1: "check_wait", 2: "check", 3: "download_wait", 4: "download",
          5: "seed_wait", 6: "seed"}
FIELDS = ["id", "hashString", "name", "status", "percentDone", "haveValid", "sizeWhenDone",
          "leftUntilDone", "totalSize", "peersConnected", "rateDownload", "rateUpload",
          "uploadedEver", "metadataPercentComplete", "error", "errorString", "magnetLink",
          "recheckProgress"]


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    role = p.add_mutually_exclusive_group(required=True)
    role.add_argument("--fetch", metavar="MAGNET")
    role.add_argument("--seed", metavar="PATH")
    p.add_argument("--torrent", metavar="FILE", help="with --seed: use this .torrent")
    p.add_argument("--save", help="download directory (with --fetch)")
    p.add_argument("--port", type=int, default=0, help="peer TCP/uTP port (0: a free one)")
    p.add_argument("--listen-ip", default="0.0.0.0", help="bind-address-ipv4")
    p.add_argument("--encryption", type=int, choices=[0, 1, 2], default=1)
    p.add_argument("--no-utp", action="store_true")
    p.add_argument("--lpd", action="store_true")
    p.add_argument("--no-pex", action="store_true")
    p.add_argument("--dht-bootstrap", action="append", default=[], metavar="HOST:PORT")
    p.add_argument("--tracker", action="append", default=[], metavar="URL")
    p.add_argument("--piece-size", type=int, default=0)
    args = p.parse_args(argv)
    if args.fetch and not args.save:
        p.error("--fetch needs --save DIR")
    return args


def settings(args, rpc_port, download_dir):
    return {
        "dht-enabled": bool(args.dht_bootstrap),
        "lpd-enabled": args.lpd,
        "pex-enabled": not args.no_pex,
        "utp-enabled": not args.no_utp,
        "port-forwarding-enabled": False,
        "peer-port": args.port,
        "peer-port-random-on-start": False,
        "bind-address-ipv4": args.listen_ip,
        "encryption": args.encryption,
        "rpc-enabled": True,
        "rpc-bind-address": "127.0.0.1",
        "rpc-port": rpc_port,
        "rpc-authentication-required": False,
        "rpc-whitelist-enabled": False,
        "rpc-host-whitelist-enabled": False,
        "download-dir": download_dir,
        "incomplete-dir-enabled": False,
        "start-added-torrents": True,
        "rename-partial-files": False,
        "trash-original-torrent-files": False,
        "watch-dir-enabled": False,
        "blocklist-enabled": False,
        "ratio-limit-enabled": False,
        "idle-seeding-limit-enabled": False,
        "speed-limit-down-enabled": False,
        "speed-limit-up-enabled": False,
        "alt-speed-enabled": False,
        "download-queue-enabled": False,
        "seed-queue-enabled": False,
        "queue-stalled-enabled": False,
        "scrape-paused-torrents-enabled": False,
        "peer-limit-global": 200,
        "peer-limit-per-torrent": 60,
        "message-level": 3,
        "cache-size-mb": 4,
    }


class Rpc:
    """Transmission's RPC (JSON over HTTP, the X-Transmission-Session-Id
    dance of a 409 reply)."""

    def __init__(self, port):
        self.url = f"http://127.0.0.1:{port}/transmission/rpc"
        self.session_id = ""

    def call(self, method, **arguments):
        body = json.dumps({"method": method, "arguments": arguments}).encode()
        for _ in range(3):
            req = urllib.request.Request(self.url, body, {
                "Content-Type": "application/json",
                "X-Transmission-Session-Id": self.session_id})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    reply = json.loads(r.read())
            except urllib.error.HTTPError as e:
                if e.code == 409:
                    self.session_id = e.headers.get("X-Transmission-Session-Id", "")
                    continue
                raise
            if reply.get("result") != "success":
                raise RuntimeError(f"{method}: {reply.get('result')}")
            return reply.get("arguments", {})
        raise RuntimeError(f"{method}: no session id accepted")


def version():
    out = subprocess.run(["transmission-daemon", "-V"], capture_output=True, text=True)
    text = (out.stdout + out.stderr).split()
    return text[1] if len(text) > 1 else "?"


def main(argv):
    args = parse_args(argv)
    return Run("transmission-driver-").drive(lambda run: drive(args, run))


def drive(args, run):
    """The driver's work once its Run is set up: starts the client, adds the
    torrent and reports events until `run.stop`; an exit code for a failure
    it reported, else None."""
    stop, tmp = run.stop, run.tmp
    args.port = args.port or free_port()
    rpc_port = free_port("127.0.0.1")
    magnet = None
    config = os.path.join(tmp, "config")
    os.makedirs(config)
    if args.seed:
        src = os.path.abspath(args.seed)
        download_dir = os.path.dirname(src)
        if args.torrent:
            with open(args.torrent, "rb") as f:
                data = f.read()
            ih = magnet = name = total = None
        else:
            data, ih, magnet, name, total = make_torrent(src, args.piece_size)
    else:
        download_dir = os.path.abspath(args.save)
        os.makedirs(download_dir, exist_ok=True)
    with open(os.path.join(config, "settings.json"), "w") as f:
        json.dump(settings(args, rpc_port, download_dir), f, indent=1)
    if args.dht_bootstrap:
        with open(os.path.join(config, "dht.bootstrap"), "w") as f:
            for hp in args.dht_bootstrap:
                host, _, port = hp.rpartition(":")
                f.write(f"{host} {port}\n")
    cmd = ["transmission-daemon", "-f", "-g", config, "--log-debug"]
    log("running " + " ".join(cmd))
    env = dict(os.environ, TR_DEBUG_FD="2")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=sys.stderr,
                            preexec_fn=pdeathsig, cwd=tmp, env=env)
    run.proc = proc
    if not wait_port("127.0.0.1", rpc_port, 20):
        emit("error", message="transmission-daemon RPC did not come up within 20 s")
        return 2
    rpc = Rpc(rpc_port)
    emit("ready", client="transmission", version=version(), port=args.port,
         rpc_port=rpc_port, pid=proc.pid)
    added = time.monotonic()
    if args.seed:
        r = rpc.call("torrent-add", metainfo=base64.b64encode(data).decode(),
                     **{"download-dir": download_dir})
    else:
        r = rpc.call("torrent-add", filename=args.fetch, **{"download-dir": download_dir})
    t = r.get("torrent-added") or r.get("torrent-duplicate")
    tid = t["id"]
    log(f"added torrent {t}")
    if args.tracker:
        rpc.call("torrent-set", ids=[tid], trackerAdd=args.tracker)
    if args.seed:
        # Have it check the files we point it at, whatever it assumed.
        rpc.call("torrent-verify", ids=[tid])
    reported_torrent = False
    done = False
    progress = Progress()
    while not stop.wait(0.25):
        if proc.poll() is not None:
            emit("error", message=f"transmission-daemon exited with {proc.returncode}")
            return 1
        ts = rpc.call("torrent-get", ids=[tid], fields=FIELDS)["torrents"]
        if not ts:
            emit("error", message="torrent vanished")
            return 1
        st = ts[0]
        if st.get("error"):
            log(f"torrent error {st['error']}: {st.get('errorString')}")
        has_meta = st.get("metadataPercentComplete", 0) >= 1
        if has_meta and not reported_torrent:
            reported_torrent = True
            emit("torrent", info_hash=st["hashString"],
                 magnet=magnet or f"magnet:?xt=urn:btih:{st['hashString']}",
                 name=st["name"], total_size=st["totalSize"])
        state = STATUS.get(st.get("status"), str(st.get("status")))
        progress.report(info_hash=st["hashString"], state=state, done=st.get("haveValid", 0),
                        total=st.get("sizeWhenDone", 0), peers=st.get("peersConnected", 0),
                        download_rate=st.get("rateDownload", 0),
                        upload_rate=st.get("rateUpload", 0),
                        uploaded=st.get("uploadedEver", 0))
        complete = (has_meta and st.get("leftUntilDone", 1) == 0
                    and st.get("sizeWhenDone", 0) > 0 and state in ("seed", "seed_wait",
                                                                   "stopped"))
        if complete and not done:
            done = True
            completed(args.seed, st["hashString"], added)


if __name__ == "__main__":
    exit_with(main)
