#!/usr/bin/python3
"""swarm: the benchmark's libtorrent seeder, with a control channel on stdin.

One python3-libtorrent session that seeds several torrents at once (each made
here from a directory, v1, with its own piece length) and is a DHT node. Its
session is set up as ltnode.py's is, by mountpoint-tests/lt/ltsession.py
(imported, not copied), and it adds what the benchmark needs and ltnode has
not:

- several torrents in one seeder (the same 1 GiB file with 256 KiB and with
  4 MiB pieces), added in seed mode right after hashing (no second check);
- a control channel: one command per line on stdin, so the running seeder
  can dial a peer that cannot be told where the seeder is (Debian's btfs has
  no DHT bootstrap option and no peer option):
      connect INFO_HASH HOST:PORT   dial HOST:PORT for that torrent now and
                                    every 0.25 s until it is connected
      stats                         emit `stats` {upload: {INFO_HASH: payload
                                    bytes sent so far}}
      peers                         emit `peers` {peers: [{addr, info_hash,
                                    utp, rc4, plaintext_encrypted}]} seen
                                    since the last `peers` (--record-peers)
      quit                          stop (so does end of file on stdin)
- outgoing connections are TCP and plaintext only (libtorrent otherwise
  tries uTP and MSE first and reaches a TCP peer seconds later);
- `--transport tcp|mse|utp` (the transport benchmark, transports.py) lets
  incoming peers in by one transport only: plaintext TCP; MSE with RC4
  forced over TCP (`in_enc_policy` forced, `allowed_enc_level` RC4); uTP
  only, plaintext (`enable_incoming_tcp` off). Without it, incoming peers
  may use TCP or uTP, plaintext or MSE (libtorrent's defaults);
- `--record-peers`: every handshaken connection is noted with its
  transport and encryption (polled every 50-250 ms), and the `peers`
  command reports (and forgets) them.

Usage: swarm.py --listen-port P (--bootstrap H:P.. | --no-dht)
                [--seed DIR:PIECE_BYTES..] [--transport tcp|mse|utp]
                [--record-peers] --torrent-dir DIR
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
import ltsession  # noqa: E402  (settings, wait_listening, start_dht, make_torrent)
from btcommon import Stop, emit, log, parse_hostport  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen-port", type=int, default=0)
    p.add_argument("--bootstrap", action="append", default=[], metavar="HOST:PORT")
    p.add_argument("--seed", action="append", default=[], metavar="DIR:PIECE_BYTES")
    p.add_argument("--torrent-dir", required=True, help="where to write NAME.torrent files")
    p.add_argument("--no-dht", action="store_true", help="no DHT node (then no --bootstrap)")
    p.add_argument("--transport", choices=sorted(TRANSPORTS),
                   help="let incoming peers in by this transport only")
    p.add_argument("--record-peers", action="store_true",
                   help="note each connection's transport and encryption (`peers` command)")
    a = p.parse_args(argv)
    try:
        a.bootstrap = [parse_hostport(s) for s in a.bootstrap]
    except ValueError as e:
        p.error(str(e))
    if not a.bootstrap and not a.no_dht:
        p.error("--bootstrap is required (never the public routers), or --no-dht")
    seeds = []
    for s in a.seed:
        d, sep, n = s.rpartition(":")
        if not sep or not n.isdigit():
            p.error(f"not DIR:PIECE_BYTES: {s!r}")
        seeds.append((d, int(n)))
    a.seeds = seeds
    return a


# Incoming connections allowed by --transport (settings over the defaults).
TRANSPORTS = {
    "tcp": {"enable_incoming_utp": False,
            "in_enc_policy": int(lt.enc_policy.pe_disabled)},
    "mse": {"enable_incoming_utp": False,
            "in_enc_policy": int(lt.enc_policy.pe_forced),
            "allowed_enc_level": int(lt.enc_level.rc4)},
    "utp": {"enable_incoming_tcp": False,
            "in_enc_policy": int(lt.enc_policy.pe_disabled)},
}
# peer_info::utp_socket (bit 17 of peer_flags_t; the binding lacks the name).
UTP_SOCKET = int(getattr(lt.peer_info, "utp_socket", 1 << 17))


def note_peers(handles, seen):
    """Add each handshaken connection of every torrent to `seen`
    ((addr, info_hash) -> transport and encryption flags)."""
    for ih, h in handles.items():
        for pi in h.get_peer_info():
            if pi.flags & (lt.peer_info.connecting | lt.peer_info.handshake):
                continue
            seen[(f"{pi.ip[0]}:{pi.ip[1]}", ih)] = {
                "utp": bool(pi.flags & UTP_SOCKET),
                "rc4": bool(pi.flags & lt.peer_info.rc4_encrypted),
                "plaintext_encrypted": bool(pi.flags & lt.peer_info.plaintext_encrypted),
            }


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
    # ltnode's settings: 127.0.0.1 (a placeholder router until the DHT
    # starts), announces every 2 s, a small swarm.
    settings = ltsession.settings(f"127.0.0.1:{args.listen_port}", "127.0.0.1:1",
                                  announce_interval=2, alert_mask=ltsession.ALERTS)
    settings.update(ltsession.FAST)
    settings["user_agent"] = ltsession.USER_AGENT
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
    if args.transport:
        settings.update(TRANSPORTS[args.transport])
    ses = lt.session(settings)

    stop = Stop()
    port = ltsession.wait_listening(ses, stop)
    if port is None:
        return 2
    # The node itself is its router (it answers at once, and libtorrent
    # never puts a router in its routing table); --bootstrap nodes are pinged.
    if not args.no_dht:
        ltsession.start_dht(ses, f"127.0.0.1:{port}", args.bootstrap)
    emit("ready", port=port, dht_port=None if args.no_dht else port)

    handles = {}
    os.makedirs(args.torrent_dir, exist_ok=True)
    for d, piece in args.seeds:
        src = os.path.abspath(d)
        log(f"hashing {src} with {piece}-byte pieces")
        ti, data = ltsession.make_torrent(src, piece, creator="btfs-mount ltnode")
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
        ltsession.torrent_event(ti, tf)
    if not args.no_dht:
        for h in handles.values():
            h.force_dht_announce()
    emit("seeding", info_hashes=sorted(handles))
    seen = {}

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
                emit("stats", upload={ih: h.status().total_payload_upload
                                             for ih, h in handles.items()})
            elif cmd == "peers":
                note_peers(handles, seen)
                emit("peers", peers=[dict(addr=a, info_hash=ih, **f)
                                     for (a, ih), f in sorted(seen.items())])
                seen = {}
            elif cmd:
                emit("error", message=f"bad command {cmd!r}")
        now = time.monotonic()
        for key, (started, last) in list(pending.items()):
            ih, addr = key
            if connected_to(handles[ih], addr[1]):
                del pending[key]
                emit("connect_done", info_hash=ih, addr=f"{addr[0]}:{addr[1]}",
                            seconds=round(now - started, 3))
            elif now - last >= 0.25:
                handles[ih].connect_peer(addr)
                pending[key] = (started, now)
        if args.record_peers:
            note_peers(handles, seen)
        if now - last_stats >= 2.0 and not args.no_dht:
            last_stats = now
            ses.post_dht_stats()
        if now - last_announce >= 2.0 and not args.no_dht:
            last_announce = now
            for h in handles.values():
                h.force_dht_announce()
        ltsession.wait_for_alerts(ses, 50 if pending else 250)
        for a in ses.pop_alerts():
            if isinstance(a, lt.dht_stats_alert):
                emit("dht_nodes", count=sum(b["num_nodes"] for b in a.routing_table))
            elif isinstance(a, lt.dht_announce_alert):
                emit("dht_announce", info_hash=str(a.info_hash), ip=str(a.ip), port=a.port)
            elif isinstance(a, lt.peer_connect_alert):
                emit("peer_connected", addr=f"{a.endpoint[0]}:{a.endpoint[1]}",
                            info_hash=str(a.handle.info_hashes().v1))
            elif isinstance(a, lt.peer_disconnected_alert):
                emit("peer_disconnected", addr=f"{a.endpoint[0]}:{a.endpoint[1]}",
                            info_hash=str(a.handle.info_hashes().v1))
            elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert)):
                emit("error", message=a.message())
    emit("exit", reason=stop.reason)
    ses.pause()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(0)
