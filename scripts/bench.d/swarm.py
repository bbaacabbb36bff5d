#!/usr/bin/python3
"""swarm: the benchmark's libtorrent seeder, with a control channel on stdin.

One python3-libtorrent session that seeds several torrents at once (each made
here from a directory, v1, with its own piece length) and is a DHT node. It
reuses the loopback settings of mountpoint-tests/lt/ltnode.py (imported, not
copied) and adds what the benchmark needs and ltnode has not:

- several torrents in one seeder (the same 1 GiB file with 256 KiB and with
  4 MiB pieces), added in seed mode right after hashing (no second check);
- a control channel: one command per line on stdin, so the running seeder
  can dial a peer that cannot be told where the seeder is (Debian's btfs has
  no DHT bootstrap option and no peer option):
      connect INFO_HASH HOST:PORT   dial HOST:PORT for that torrent now and
                                    every 0.25 s until it is connected
      stats                         emit `stats` {upload: {INFO_HASH: payload
                                    bytes sent so far}}
      quit                          stop (so does end of file on stdin)
- outgoing connections are TCP and plaintext only (libtorrent otherwise
  tries uTP and MSE first and reaches a TCP peer seconds later).

Usage: swarm.py --listen-port P --bootstrap H:P.. [--seed DIR:PIECE_BYTES..]
                --torrent-dir DIR
Without --seed it is a bare DHT node.
Events on stdout, one JSON object a line (ltnode's shapes): ready {port},
torrent {...,torrent_file} for each seed, seeding {info_hash} once all are
added, peer_connected / peer_disconnected {addr, info_hash}, connect_done
{info_hash, addr, seconds}, dht_nodes {count}, dht_announce {info_hash, ip,
port}, exit {reason}.
"""

import argparse
import os
import queue
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "mountpoint-tests", "lt"))

import libtorrent as lt  # noqa: E402
import ltnode  # noqa: E402  (session_settings, make_torrent, start_dht, emit, log)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen-port", type=int, default=0)
    p.add_argument("--bootstrap", action="append", default=[], metavar="HOST:PORT")
    p.add_argument("--seed", action="append", default=[], metavar="DIR:PIECE_BYTES")
    p.add_argument("--torrent-dir", required=True, help="where to write NAME.torrent files")
    a = p.parse_args(argv)
    # The attributes ltnode.session_settings and ltnode.start_dht read:
    # ltnode's own defaults (whatever options it grows), then ours.
    for k, v in vars(ltnode.parse_args([])).items():
        if not hasattr(a, k):
            setattr(a, k, v)
    a.listen_ip = "127.0.0.1"
    a.lsd = False
    a.announce_interval = 2
    a.router = []
    a.no_utp = False
    a.no_encryption = False
    a.verbose = False
    a.upload_limit = 0
    a.keep_redundant = False
    a.dht = True
    a.bootstrap = [ltnode.parse_hostport(p, s) for s in a.bootstrap]
    if not a.bootstrap:
        p.error("--bootstrap is required (never the public routers)")
    seeds = []
    for s in a.seed:
        d, sep, n = s.rpartition(":")
        if not sep or not n.isdigit():
            p.error(f"not DIR:PIECE_BYTES: {s!r}")
        seeds.append((d, int(n)))
    a.seeds = seeds
    return a


def stdin_commands(q):
    """Read command lines into q; put None at end of file."""
    for line in sys.stdin:
        q.put(line.strip())
    q.put(None)


def connected_to(handle, port):
    """True when a handshaken peer of this torrent has remote port `port`."""
    for pi in handle.get_peer_info():
        if pi.ip[1] == port and not pi.flags & (lt.peer_info.connecting | lt.peer_info.handshake):
            return True
    return False


def main(argv):
    args = parse_args(argv)
    settings = ltnode.session_settings(args)
    settings.update({
        # Dial TCP, plaintext: the peers we dial (btfs) take both.
        "enable_outgoing_utp": False,
        "out_enc_policy": int(lt.enc_policy.pe_disabled),
        "in_enc_policy": int(lt.enc_policy.pe_enabled),
        # Every client of the benchmark has the address 127.0.0.1: without
        # these, libtorrent blocks 127.0.0.1's DHT queries for 5 minutes once
        # all of them together send more than 5 a second, and answers at
        # most 8000 bytes/s of DHT traffic.
        "dht_block_ratelimit": 1000000,
        "dht_block_timeout": 1,
        "dht_upload_rate_limit": 100000000,
    })
    ses = lt.session(settings)

    class Stop:
        reason = None

        def set(self, r):
            self.reason = self.reason or r

    stop = Stop()
    port = ltnode.wait_listening(ses, args, stop)
    if port is None:
        return 2
    ltnode.start_dht(ses, args, port)
    ltnode.emit("ready", port=port, dht_port=port)

    handles = {}
    os.makedirs(args.torrent_dir, exist_ok=True)
    for d, piece in args.seeds:
        src = os.path.abspath(d)
        ltnode.log(f"hashing {src} with {piece}-byte pieces")
        ti, data = ltnode.make_torrent(src, piece)
        tf = os.path.join(os.path.abspath(args.torrent_dir), os.path.basename(src) + ".torrent")
        with open(tf, "wb") as f:
            f.write(data)
        atp = lt.add_torrent_params()
        atp.ti = ti
        atp.save_path = os.path.dirname(src)
        # Just hashed: no need for libtorrent to check the files again.
        atp.flags = (atp.flags | lt.torrent_flags.seed_mode) & ~lt.torrent_flags.paused \
            & ~lt.torrent_flags.auto_managed
        h = ses.add_torrent(atp)
        ih = str(h.info_hashes().v1)
        handles[ih] = h
        ltnode.torrent_event(ti, tf)
    for h in handles.values():
        h.force_dht_announce()
    ltnode.emit("seeding", info_hashes=sorted(handles))

    q = queue.Queue()
    threading.Thread(target=stdin_commands, args=(q,), daemon=True).start()
    pending = {}  # (info_hash, (host, port)) -> (started, last_dial)
    last_stats = 0.0
    last_announce = time.monotonic()
    while stop.reason is None:
        while True:
            try:
                cmd = q.get_nowait()
            except queue.Empty:
                break
            if cmd is None or cmd == "quit":
                stop.set("stdin closed" if cmd is None else "quit")
                break
            parts = cmd.split()
            if len(parts) == 3 and parts[0] == "connect" and parts[1] in handles:
                host, _, p = parts[2].rpartition(":")
                pending[(parts[1], (host, int(p)))] = (time.monotonic(), 0.0)
            elif cmd == "stats":
                ltnode.emit("stats", upload={ih: h.status().total_payload_upload
                                             for ih, h in handles.items()})
            elif cmd:
                ltnode.emit("error", message=f"bad command {cmd!r}")
        now = time.monotonic()
        for key, (started, last) in list(pending.items()):
            ih, addr = key
            if connected_to(handles[ih], addr[1]):
                del pending[key]
                ltnode.emit("connect_done", info_hash=ih, addr=f"{addr[0]}:{addr[1]}",
                            seconds=round(now - started, 3))
            elif now - last >= 0.25:
                handles[ih].connect_peer(addr)
                pending[key] = (started, now)
        if now - last_stats >= 2.0:
            last_stats = now
            ses.post_dht_stats()
        if now - last_announce >= 2.0:
            last_announce = now
            for h in handles.values():
                h.force_dht_announce()
        ses.wait_for_alert(50 if pending else 250)
        for a in ses.pop_alerts():
            if isinstance(a, lt.dht_stats_alert):
                ltnode.emit("dht_nodes", count=sum(b["num_nodes"] for b in a.routing_table))
            elif isinstance(a, lt.dht_announce_alert):
                ltnode.emit("dht_announce", info_hash=str(a.info_hash), ip=str(a.ip), port=a.port)
            elif isinstance(a, lt.peer_connect_alert):
                ltnode.emit("peer_connected", addr=f"{a.endpoint[0]}:{a.endpoint[1]}",
                            info_hash=str(a.handle.info_hashes().v1))
            elif isinstance(a, lt.peer_disconnected_alert):
                ltnode.emit("peer_disconnected", addr=f"{a.endpoint[0]}:{a.endpoint[1]}",
                            info_hash=str(a.handle.info_hashes().v1))
            elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                ltnode.emit("error", message=a.message())
    ltnode.emit("exit", reason=stop.reason)
    ses.pause()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(0)
