#!/usr/bin/python3
"""A python3-libtorrent 2.0.8 peer restricted to uTP (BEP 29), for btfs's uTP tests.

Usage:
  lt_utp.py seed  WORKDIR SIZE [--piece-size N] [--listen IP[,IP6]] [--port P] [--enc E]
  lt_utp.py fetch TORRENT SAVEDIR [--listen IP[,IP6]] [--port P] [--enc E]

TCP is off both ways (enable_outgoing_tcp / enable_incoming_tcp False), uTP
on both ways, no DHT, LSD, UPnP or NAT-PMP: the session only speaks uTP to
the peers it is told about. It listens on each IP given with --listen
(default 127.0.0.1; an IPv6 address is written bare, e.g. ::1) on port P
(default 0: ephemeral; libtorrent's uTP socket has the same number).
--enc: "plain" (default: outgoing plaintext, incoming both), "default"
(libtorrent's own policy, which tries MSE first when it dials) or "forced"
(MSE/RC4 only, both ways).

seed: writes WORKDIR/content.bin (SIZE random bytes), makes a v1 torrent of
it (WORKDIR/content.torrent) and seeds it. Prints one JSON line:
  {"event": "seeding", "port", "info_hash" (hex), "piece_length",
   "num_pieces", "total_size", "torrent" (path), "file" (path),
   "piece_sha1" [hex per piece]}
fetch: adds TORRENT with SAVEDIR as save path and prints
  {"event": "ready", "port"}; once every piece is had and checked:
  {"event": "finished", "seconds" (since the first connect), "bytes",
   "rate" (bytes/s)}.

Both then read stdin line by line:
  "connect IP PORT" -> handle.connect_peer((IP, PORT)) (over uTP)
  "status"          -> {"event": "status", "num_peers", "total_upload",
                         "total_download", "progress", "utp_peers"}
and exit when stdin closes. Progress lines ({"event": "progress", ...}) are
printed about once a second by fetch while it runs.
"""
import argparse
import hashlib
import json
import os
import select
import sys
import time
import warnings

import libtorrent as lt

warnings.simplefilter("ignore", DeprecationWarning)


def emit(**kw):
    print(json.dumps(kw), flush=True)


ENC = {
    # plaintext out, both accepted in: our test peers speak plaintext
    "plain": {"out_enc_policy": 2, "in_enc_policy": 1},
    # libtorrent's defaults (outgoing MSE attempt first)
    "default": {},
    # MSE with RC4 only, both ways
    "forced": {"out_enc_policy": 0, "in_enc_policy": 0, "allowed_enc_level": 2},
}


def session(listen, port, enc):
    ifaces = ",".join(
        ("[%s]:%d" % (ip, port)) if ":" in ip else ("%s:%d" % (ip, port))
        for ip in listen.split(","))
    settings = {
        "listen_interfaces": ifaces,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_tcp": False,
        "enable_incoming_tcp": False,
        "enable_outgoing_utp": True,
        "enable_incoming_utp": True,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.error_notification
                      | lt.alert.category_t.status_notification
                      | lt.alert.category_t.connect_notification
                      | lt.alert.category_t.peer_notification,
    }
    settings.update(ENC[enc])
    return lt.session(settings)


def wait_port(ses):
    deadline = time.time() + 20
    while ses.listen_port() == 0:
        if time.time() > deadline:
            emit(event="error", message="no listen port after 20 s")
            sys.exit(1)
        time.sleep(0.02)
    return ses.listen_port()


def seed(args):
    os.makedirs(args.dir, exist_ok=True)
    path = os.path.join(args.dir, "content.bin")
    with open(path, "wb") as f:
        left = args.size
        while left > 0:
            n = min(left, 1 << 20)
            f.write(os.urandom(n))
            left -= n
    fs = lt.file_storage()
    lt.add_files(fs, path)
    ct = lt.create_torrent(fs, args.piece_size, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(ct, args.dir)
    ti = lt.torrent_info(ct.generate())
    tpath = os.path.join(args.dir, "content.torrent")
    with open(tpath, "wb") as f:
        f.write(lt.bencode(ct.generate()))
    pl = ti.piece_length()
    hashes = []
    with open(path, "rb") as f:
        while True:
            chunk = f.read(pl)
            if not chunk:
                break
            hashes.append(hashlib.sha1(chunk).hexdigest())
    ses = session(args.listen, args.port, args.enc)
    h = ses.add_torrent({"ti": ti, "save_path": args.dir})
    deadline = time.time() + 60
    while h.status().state != lt.torrent_status.seeding:
        if time.time() > deadline:
            emit(event="error", message="not seeding after 60 s")
            sys.exit(1)
        time.sleep(0.02)
    emit(event="seeding", port=wait_port(ses),
         info_hash=ti.info_hashes().v1.to_bytes().hex(), piece_length=pl,
         num_pieces=ti.num_pieces(), total_size=ti.total_size(),
         torrent=tpath, file=path, piece_sha1=hashes)
    serve(ses, h, None)


def fetch(args):
    ti = lt.torrent_info(args.torrent)
    ses = session(args.listen, args.port, args.enc)
    h = ses.add_torrent({"ti": ti, "save_path": args.save})
    emit(event="ready", port=wait_port(ses))
    serve(ses, h, ti)


def serve(ses, h, fetching):
    """Reads commands from stdin; reports progress and completion of a fetch."""
    first_connect = None
    finished = False
    last_progress = 0.0
    while True:
        r, _, _ = select.select([sys.stdin], [], [], 0.05)
        if r:
            line = sys.stdin.readline()
            if not line:
                return
            words = line.split()
            if words[:1] == ["connect"] and len(words) == 3:
                if first_connect is None:
                    first_connect = time.monotonic()
                h.connect_peer((words[1], int(words[2])))
            elif words[:1] == ["status"]:
                st = h.status()
                utp = sum(1 for p in h.get_peer_info()
                          if p.flags & lt.peer_info.utp_socket)
                emit(event="status", num_peers=st.num_peers,
                     total_upload=st.total_payload_upload,
                     total_download=st.total_payload_download,
                     progress=st.progress, utp_peers=utp)
        for a in ses.pop_alerts():
            print("alert: %s: %s" % (type(a).__name__, a.message()),
                  file=sys.stderr, flush=True)
        if fetching is not None and not finished:
            st = h.status()
            now = time.monotonic()
            if st.is_seeding or st.state == lt.torrent_status.seeding:
                finished = True
                secs = now - (first_connect or now)
                size = fetching.total_size()
                emit(event="finished", seconds=secs, bytes=size,
                     rate=(size / secs if secs > 0 else 0))
            elif now - last_progress >= 1.0:
                last_progress = now
                emit(event="progress", progress=st.progress,
                     total_done=st.total_done, num_peers=st.num_peers,
                     download_rate=st.download_rate)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("seed")
    s.add_argument("dir")
    s.add_argument("size", type=int)
    s.add_argument("--piece-size", type=int, default=262144)
    f = sub.add_parser("fetch")
    f.add_argument("torrent")
    f.add_argument("save")
    for x in (s, f):
        x.add_argument("--listen", default="127.0.0.1")
        x.add_argument("--port", type=int, default=0)
        x.add_argument("--enc", choices=sorted(ENC), default="plain")
    args = p.parse_args()
    if args.role == "seed":
        seed(args)
    else:
        fetch(args)


if __name__ == "__main__":
    main()
