#!/usr/bin/python3
"""inet_swarm: the seeders of the internet-like swarm, and who announces them.

One process runs N python3-libtorrent sessions, each a seeder of the same
torrents (made here once from directories, v1, each with its own piece
length), each listening on its own 127.0.0.1 port that nobody is told
about: clients reach seeder i only through relay i (relay.py), which
listens on its own address (10.99.0.i:6881 in the benchmark) and forwards
to the seeder with an internet-like delay.

Seeders:
- `upload_rate_limit` per session (--rate, bytes/s of payload:
  `rate_limit_ip_overhead` is off, so the payload rate reaches the limit);
  libtorrent puts 127.0.0.0/8 (and 10/8, 192.168/16...) in its unlimited
  "local" peer class, and every relay connects from 127.0.0.1: a peer class
  filter puts every IPv4 address in the global class, so the limit applies.
  `tick_interval` is --tick-ms (libtorrent hands out rate-limit quota once
  per tick; its default 500 ms makes a limited seeder send in half-second
  bursts, which no internet uplink does);
- no DHT, no LSD, no PEX, no uTP, no outgoing connections: a seeder is never
  announced or advertised at its own address;
- torrents added with every piece marked had (no hash check: the data was
  just hashed here; no seed-mode hashing on first request, which would slow
  the first client and not the next ones).

Announcer: for each relay address (--relay IP:PORT, one per seeder, same
order) a small DHT node on a UDP socket bound to the relay's IP: every
--announce-every seconds it sends, for each torrent, get_peers and then
announce_peer (BEP 5, `implied_port` 0, port = the relay's port) to every
--dht node, which records the peer as SOURCE_IP:port, i.e. the relay. The
DHT nodes also put it in their routing tables (libtorrent 2.0.8 does so even
for queries flagged read-only, BEP 43) and hand it to clients, so it answers
queries as a live node would: ping, find_node (no nodes), get_peers (the
relays as values), announce_peer (ignored). A dead announcer would leave
clients whose DHT trusts those hints (rqbit) with nothing but dead nodes.

Control channel, one command a line on stdin:
    stats    emit `stats` {t, upload: [[bytes for torrent 0, 1..], ...one
             list per seeder], rates: [bytes/s over the last second, per
             seeder]}
    peers    emit `peers` {t, conns: [{seeder, torrent, rc4,
             plaintext_encrypted}]}: every connection each seeder has now
             (libtorrent's peer_info flags `rc4_encrypted`: MSE with RC4;
             `plaintext_encrypted`: an MSE handshake that chose plaintext;
             neither: a plain BitTorrent handshake)
    quit     stop (so does end of file on stdin)
With --samples FILE, every 0.1 s a line {t, up: [total payload uploaded by
each seeder, all torrents]} is appended to FILE (CLOCK_MONOTONIC seconds).

Events on stdout (JSON lines): torrent {info_hash, magnet, name, files,
piece_length, num_pieces, total_size, torrent_file} per torrent, seeding
{ports: [listen port of each seeder]}, announced {relay, info_hash,
nodes_ok} once per relay and torrent (when a first DHT node accepted the
announce), error {message}, exit {reason}.

Usage: inet_swarm.py --seed DIR:PIECE_BYTES.. --torrent-dir DIR
                     --relay IP:PORT.. --dht HOST:PORT.. [--rate B] [--tick-ms MS]
"""

import argparse
import os
import queue
import random
import select
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "mountpoint-tests", "lt"))

import libtorrent as lt  # noqa: E402
import ltnode  # noqa: E402
import ltsession  # noqa: E402
from btcommon import Stop  # noqa: E402


# ---------------------------------------------------------------- bencode (KRPC only)

def benc(x):
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in x.items())
        return b"d" + b"".join(benc(k) + benc(v) for k, v in items) + b"e"
    if isinstance(x, list):
        return b"l" + b"".join(benc(v) for v in x) + b"e"
    raise TypeError(type(x))


def bdec(data, i=0):
    """Decode one bencoded value at data[i:]; returns (value, next index).
    Raises ValueError on malformed input."""
    c = data[i:i + 1]
    if c == b"i":
        j = data.index(b"e", i)
        return int(data[i + 1:j]), j + 1
    if c == b"l":
        out, i = [], i + 1
        while data[i:i + 1] != b"e":
            v, i = bdec(data, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        out, i = {}, i + 1
        while data[i:i + 1] != b"e":
            k, i = bdec(data, i)
            v, i = bdec(data, i)
            out[k] = v
        return out, i + 1
    if c.isdigit():
        j = data.index(b":", i)
        n = int(data[i:j])
        if j + 1 + n > len(data):
            raise ValueError("truncated string")
        return data[j + 1:j + 1 + n], j + 1 + n
    raise ValueError(f"bad bencode at {i}")


class Announcer:
    """One small DHT node (BEP 5) per relay address, on a UDP socket bound to
    that address: it announces the relay (get_peers for a token, then
    announce_peer with port = the relay's port, implied_port 0) to every
    DHT node of the swarm, and it answers queries like a live node, since
    the DHT nodes it queried may hand it to clients as a node to ask:
    ping and find_node (with no nodes), get_peers (the relays of the
    swarm's torrents as values, a token), announce_peer (ignored)."""

    def __init__(self, relays, info_hashes, dht_nodes):
        self.relays = relays
        self.info_hashes = info_hashes
        self.dht_nodes = dht_nodes
        self.values = [socket.inet_aton(ip) + port.to_bytes(2, "big") for ip, port in relays]
        self.socks = []
        for ip, port in relays:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((ip, 0))
            self.socks.append((s, random.randbytes(20), port))
        self.pending = {}  # (sock index, tid) -> (kind, info_hash, node)
        self.accepted = {}  # (relay, info_hash hex) -> DHT nodes that took the announce

    # No BEP 33 `seed` flag in the announces: a libtorrent client whose
    # wanted pieces are all had (lt_stream.py between reads: every piece at
    # priority 0) looks peers up with `noseed`, and the DHT nodes would then
    # leave out every relay.

    def send_round(self):
        for k, (s, nid, _port) in enumerate(self.socks):
            for node in self.dht_nodes:
                for ih in self.info_hashes:
                    tid = random.randbytes(2)
                    self.pending[(k, tid)] = ("get_peers", ih, node)
                    s.sendto(benc({"t": tid, "y": "q", "q": "get_peers",
                                   "a": {"id": nid, "info_hash": ih}}), node)

    def on_packet(self, k, data, addr):
        s, nid, port = self.socks[k]
        try:
            msg, _ = bdec(data)
        except (ValueError, IndexError):
            return
        if not isinstance(msg, dict):
            return
        tid = msg.get(b"t", b"")
        if msg.get(b"y") == b"q":
            q = msg.get(b"q")
            a = msg.get(b"a") if isinstance(msg.get(b"a"), dict) else {}
            r = {"id": nid}
            if q == b"find_node":
                r["nodes"] = b""
            elif q == b"get_peers":
                r["token"] = b"btfs"
                r["nodes"] = b""
                if a.get(b"info_hash") in self.info_hashes:
                    r["values"] = self.values
            elif q not in (b"ping", b"announce_peer"):
                s.sendto(benc({"t": tid, "y": "e", "e": [204, "Method Unknown"]}), addr)
                return
            s.sendto(benc({"t": tid, "y": "r", "r": r}), addr)
            return
        what = self.pending.pop((k, tid), None)
        if what is None:
            return
        kind, ih, node = what
        if kind == "get_peers":
            token = msg.get(b"r", {}).get(b"token") if isinstance(msg.get(b"r"), dict) else None
            if token:
                tid = random.randbytes(2)
                self.pending[(k, tid)] = ("announce", ih, node)
                s.sendto(benc({"t": tid, "y": "q", "q": "announce_peer",
                               "a": {"id": nid, "info_hash": ih, "port": port, "token": token,
                                     "implied_port": 0}}), node)
        elif kind == "announce" and msg.get(b"y") == b"r":
            ip = self.relays[k][0]
            key = (f"{ip}:{port}", ih.hex())
            first = key not in self.accepted
            self.accepted.setdefault(key, set()).add(node)
            if first:
                ltnode.emit("announced", relay=key[0], info_hash=key[1], nodes_ok=1)

    def run(self, every):
        next_round = 0.0
        socks = [s for s, _, _ in self.socks]
        while True:
            now = time.monotonic()
            if now >= next_round:
                self.pending.clear()
                self.send_round()
                next_round = now + every
            ready, _, _ = select.select(socks, [], [], max(0.0, next_round - now))
            for s in ready:
                try:
                    data, addr = s.recvfrom(65536)
                except OSError:
                    continue
                self.on_packet(socks.index(s), data, addr)


# ---------------------------------------------------------------- seeders

def seeder_settings(rate, tick_ms, low_watermark, sndbuf):
    # ltnode's own defaults for every option it reads, with ours on top.
    a = ltnode.parse_args(["--no-utp", "--upload-limit", str(rate),
                           "--announce-interval", "60"])
    s = ltnode.session_settings(a)
    s.update({
        "enable_dht": False,
        "rate_limit_ip_overhead": False,
        "tick_interval": tick_ms,
        "out_enc_policy": int(lt.enc_policy.pe_disabled),
        "in_enc_policy": int(lt.enc_policy.pe_enabled),
        "seeding_outgoing_connections": False,
    })
    if low_watermark:
        s["send_buffer_low_watermark"] = low_watermark
    if sndbuf:
        s["send_socket_buffer_size"] = sndbuf
    return s


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", action="append", default=[], metavar="DIR:PIECE_BYTES", required=True)
    p.add_argument("--torrent-dir", required=True)
    p.add_argument("--relay", action="append", default=[], metavar="IP:PORT", required=True,
                   help="the relay in front of each seeder (one seeder per --relay)")
    p.add_argument("--dht", action="append", default=[], metavar="HOST:PORT", required=True,
                   help="DHT node to announce the relays to (repeatable)")
    p.add_argument("--rate", type=int, default=3_000_000, help="upload_rate_limit, bytes/s")
    p.add_argument("--tick-ms", type=int, default=50)
    p.add_argument("--announce-every", type=float, default=20.0)
    p.add_argument("--sndbuf", type=int, default=0,
                   help="send_socket_buffer_size, bytes (0: the OS default)")
    p.add_argument("--low-watermark", type=int, default=0,
                   help="send_buffer_low_watermark, bytes (0: libtorrent's default)")
    p.add_argument("--samples", metavar="FILE")
    a = p.parse_args(argv)
    relays = [ltnode.parse_hostport(p, r) for r in a.relay]
    dht = [ltnode.parse_hostport(p, d) for d in a.dht]

    # Make the torrents once.
    os.makedirs(a.torrent_dir, exist_ok=True)
    tis = []
    for spec in a.seed:
        d, _, n = spec.rpartition(":")
        src = os.path.abspath(d)
        ti, data = ltsession.make_torrent(src, int(n))
        tf = os.path.join(os.path.abspath(a.torrent_dir), os.path.basename(src) + ".torrent")
        with open(tf, "wb") as f:
            f.write(data)
        ltsession.torrent_event(ti, tf)
        tis.append((ti, os.path.dirname(src)))

    f = lt.ip_filter()
    f.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    sessions, ports = [], []
    for _ in relays:
        ses = lt.session(seeder_settings(a.rate, a.tick_ms, a.low_watermark, a.sndbuf))
        ses.set_peer_class_filter(f)
        port = ltsession.wait_listening(ses, Stop())
        if port is None:
            return 2
        handles = []
        for ti, save in tis:
            atp = lt.add_torrent_params()
            atp.ti = lt.torrent_info(ti)
            atp.save_path = save
            atp.have_pieces = [True] * ti.num_pieces()
            atp.flags = (atp.flags | lt.torrent_flags.disable_pex | lt.torrent_flags.disable_dht
                         | lt.torrent_flags.disable_lsd) \
                & ~lt.torrent_flags.paused & ~lt.torrent_flags.auto_managed
            handles.append(ses.add_torrent(atp))
        sessions.append((ses, handles))
        ports.append(port)
    # Wait until every torrent is seeding (no checking).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(h.status().is_seeding for _, hs in sessions for h in hs):
            break
        time.sleep(0.05)
    else:
        ltnode.emit("error", message="seeders did not reach the seeding state within 60 s")
        return 2
    ltnode.emit("seeding", ports=ports)

    info_hashes = [ti.info_hashes().v1.to_bytes() for ti, _ in tis]

    announcer = Announcer(relays, info_hashes, dht)
    threading.Thread(target=announcer.run, args=(a.announce_every,), daemon=True).start()

    cmds = queue.Queue()

    def stdin_reader():
        for line in sys.stdin:
            cmds.put(line.strip())
        cmds.put(None)
    threading.Thread(target=stdin_reader, daemon=True).start()

    samples = open(a.samples, "a", buffering=1 << 16) if a.samples else None
    history = []  # (t, [per-seeder totals]) over the last ~1.2 s
    reason = None
    while reason is None:
        t = time.monotonic()
        per = [[h.status().total_payload_upload for h in hs] for _, hs in sessions]
        tot = [sum(x) for x in per]
        history.append((t, tot))
        while history and t - history[0][0] > 1.2:
            history.pop(0)
        if samples:
            samples.write('{"t": %.4f, "up": %s}\n' % (t, tot))
        try:
            cmd = cmds.get(timeout=0.1)
        except queue.Empty:
            cmd = ""
        if cmd is None or cmd == "quit":
            reason = "stdin closed" if cmd is None else "quit"
        elif cmd == "stats":
            old_t, old = next(((ht, hv) for ht, hv in history if t - ht <= 1.0), history[0])
            dt = max(t - old_t, 1e-3)
            ltnode.emit("stats", t=t, upload=per, rates=[(n - o) / dt for n, o in zip(tot, old)])
        elif cmd == "peers":
            conns = []
            for k, (_, hs) in enumerate(sessions):
                for j, h in enumerate(hs):
                    for pi in h.get_peer_info():
                        conns.append({
                            "seeder": k, "torrent": j,
                            "rc4": bool(pi.flags & lt.peer_info.rc4_encrypted),
                            "plaintext_encrypted":
                                bool(pi.flags & lt.peer_info.plaintext_encrypted)})
            ltnode.emit("peers", t=t, conns=conns)
        elif cmd:
            ltnode.emit("error", message=f"bad command {cmd!r}")
        for ses, _ in sessions:
            for al in ses.pop_alerts():
                if isinstance(al, (lt.torrent_error_alert, lt.file_error_alert)):
                    ltnode.emit("error", message=al.message())
    if samples:
        samples.close()
    ltnode.emit("exit", reason=reason)
    for ses, _ in sessions:
        ses.pause()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(0)
