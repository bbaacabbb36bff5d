#!/usr/bin/python3
"""fake_peer: a scripted BitTorrent peer that speaks the wire protocol badly
on purpose, for btfs-mount's hostile-peer tests.

It knows the torrent (the .torrent file ltnode `--write-torrent` wrote, and
the data directory it seeds from), so it looks convincing: a correct
handshake for the info-hash, a full bitfield, the extension handshake with
ut_metadata (BEP 9, BEP 10). Then it misbehaves as `--behaviour` says:

  good             an honest seeder (checks the fake peer itself)
  wrong-data       every block it sends has wrong bytes (hash failures)
  oversize         after the handshakes, a message whose length prefix is
                   far over any sane limit (16 MiB), then silence
  bad-bitfield     a bitfield 3 bytes too long, with spare bits set
  unrequested      claims only the even pieces and answers requests honestly,
                   but first sends garbage for every block of the next (odd)
                   piece, which it never has, so it was never asked for it
                   (they are in progress from the honest peer)
  bad-block        answers each request with a block one byte short, or at
                   an offset one byte off, or for a piece past the end
  meta-wrong-size  announces metadata_size 1000 bytes too large and serves
                   that many bytes (the real info dictionary plus junk)
  meta-total-size  announces the right metadata_size but every ut_metadata
                   data message says another total_size
  meta-wrong-info  serves an info dictionary of the right size with one byte
                   changed (its SHA-1 is not the info-hash)
  silent           accepts the TCP connection and never sends a byte
  stall            handshakes, sends a full bitfield and unchokes, then
                   never answers a request

Or, with `--flood HOST:PORT --count N`, it is a client that opens N TCP
connections to HOST:PORT from `--listen-ip` (each sends a valid handshake
for the info-hash with `--flood-handshake`, else nothing) and holds them
for `--hold` seconds.

Events, one JSON object per line on stdout: `ready` {port, info_hash},
`connection` {addr} (a connection that starts with the plaintext protocol
string; others, e.g. MSE attempts, are closed unreported), `handshake` {addr}, `sent` {what, addr} (the first
time each kind of bad thing is sent on a connection), `closed` {addr,
seconds, by} (by: "peer" when the other side closed, "us"), `request`
{index, begin, length} (first 20 only), `flood` {opened, failed, closed_by_peer,
seconds} and `exit`. Logs on stderr. Exits on SIGTERM or when stdin closes.
"""

import argparse
import hashlib
import os
import resource
import signal
import socket
import struct
import sys
import threading
import time

from btcommon import PROTOCOL, Stop, decode, emit, encode, handshake, log, msg, read_messages, recv_exact, watch_stdin


class Torrent:
    """The torrent's info dictionary (raw), its pieces, and its content."""

    def __init__(self, torrent_file, data_dir):
        raw = open(torrent_file, "rb").read()
        top, _ = decode(raw, raw_keys=(b"info",))
        self.info_raw = bytes(top[b"info"])
        self.info_hash = hashlib.sha1(self.info_raw).digest()
        info, _ = decode(self.info_raw)
        self.piece_length = info[b"piece length"]
        name = info[b"name"].decode()
        if b"files" in info:
            paths = [(os.path.join(data_dir, name, *[c.decode() for c in f[b"path"]]), f[b"length"])
                     for f in info[b"files"]]
        else:
            paths = [(os.path.join(data_dir, name), info[b"length"])]
        chunks = []
        for p, length in paths:
            if os.path.exists(p):
                chunks.append(open(p, "rb").read()[:length].ljust(length, b"\0"))
            else:  # BEP 47 pad files, or data we do not hold: zeros
                chunks.append(b"\0" * length)
        self.content = b"".join(chunks)
        self.num_pieces = len(info[b"pieces"]) // 20

    def piece_size(self, i):
        return min(self.piece_length, len(self.content) - i * self.piece_length)

    def block(self, index, begin, length):
        off = index * self.piece_length + begin
        return self.content[off:off + length]


# ---- wire --------------------------------------------------------------------

UT_METADATA = 3  # our id for ut_metadata


class Conn:
    def __init__(self, sock, addr, t, args):
        self.sock, self.addr, self.t, self.args = sock, f"{addr[0]}:{addr[1]}", t, args
        self.sent_kinds = set()
        self.their_ut_metadata = None
        self.requests_seen = 0
        self.started = time.monotonic()

    def once(self, what):
        if what not in self.sent_kinds:
            self.sent_kinds.add(what)
            emit("sent", what=what, addr=self.addr)

    def send(self, data):
        self.sock.sendall(data)

    def run(self):
        b = self.args.behaviour
        by = "us"
        announced = False
        try:
            if b == "silent":
                # Never a byte; wait until the other side gives up.
                emit("connection", addr=self.addr)
                announced = True
                while self.sock.recv(65536):
                    pass
                by = "peer"
                return
            # A plaintext-only peer, like many real ones: a connection that
            # does not start with the protocol string (an MSE attempt) is
            # closed at once and is not one of the connections the events
            # report (the client then dials again in plaintext).
            prefix = recv_exact(self.sock, 20)
            if prefix != PROTOCOL:
                log(f"{self.addr}: not a plaintext handshake (MSE?); closed")
                return
            emit("connection", addr=self.addr)
            announced = True
            rest = recv_exact(self.sock, 48)
            hs = None if rest is None else prefix + rest
            if hs is None or hs[28:48] != self.t.info_hash:
                log(f"{self.addr}: bad handshake")
                return
            self.send(handshake(self.t.info_hash, b"-FK0001-" + os.urandom(12)))
            emit("handshake", addr=self.addr)
            meta_size = len(self.t.info_raw) + (1000 if b == "meta-wrong-size" else 0)
            ext = {"m": {"ut_metadata": UT_METADATA}, "metadata_size": meta_size, "v": "fake_peer"}
            self.send(msg(20, b"\x00" + encode(ext)))
            n = self.t.num_pieces
            bf = bytearray((n + 7) // 8)
            for i in range(n):
                if b != "unrequested" or i % 2 == 0:
                    bf[i // 8] |= 0x80 >> (i % 8)
            if b == "bad-bitfield":
                bf += b"\xff\xff\xff"
                for i in range(n, len(bf) * 8):
                    bf[i // 8] |= 0x80 >> (i % 8)
                self.once("bad-bitfield")
            self.send(msg(5, bytes(bf)))
            self.send(msg(1))  # unchoke
            if b == "oversize":
                self.send(struct.pack(">IB", 16 << 20, 7) + b"\0" * 4096)
                self.once("oversize")
            if read_messages(self.sock, self.on_message, self.addr):
                by = "peer"
        except OSError as e:
            by = "peer"
            log(f"{self.addr}: {e}")
        finally:
            if announced:
                emit("closed", addr=self.addr, seconds=round(time.monotonic() - self.started, 3), by=by)
            try:
                self.sock.close()
            except OSError:
                pass

    def on_message(self, mid, payload):
        b = self.args.behaviour
        if mid == 6 and len(payload) == 12:  # request
            index, begin, length = struct.unpack(">III", payload)
            self.requests_seen += 1
            if self.requests_seen <= 20:
                emit("request", index=index, begin=begin, length=length)
            if b == "stall":
                self.once("stall")
                return
            if b == "unrequested":
                self.send_unrequested(index, begin)
            if b == "bad-block":
                kind = self.requests_seen % 3
                if kind == 0:
                    data = self.t.block(index, begin, length)[:-1]
                    self.send(msg(7, struct.pack(">II", index, begin) + data))
                    self.once("short-block")
                elif kind == 1:
                    data = self.t.block(index, begin, length)
                    self.send(msg(7, struct.pack(">II", index, begin + 1) + data))
                    self.once("offset-block")
                else:
                    data = self.t.block(index, begin, length)
                    self.send(msg(7, struct.pack(">II", self.t.num_pieces + 5, begin) + data))
                    self.once("index-block")
                return
            data = self.t.block(index, begin, length)
            if b == "wrong-data":
                data = bytes(x ^ 0x5A for x in data)
                self.once("wrong-data")
            self.send(msg(7, struct.pack(">II", index, begin) + data))
        elif mid == 20 and payload:
            self.on_extended(payload[0], payload[1:])

    def send_unrequested(self, index, begin):
        """Garbage for every block of the odd piece after `index`."""
        block = 16384
        p = index + 1 if index % 2 == 0 else index + 2
        if begin != 0 or p >= self.t.num_pieces:
            return
        size = self.t.piece_size(p)
        for off in range(0, size, block):
            n = min(block, size - off)
            self.send(msg(7, struct.pack(">II", p, off) + os.urandom(n)))
            self.once("unrequested")

    def on_extended(self, eid, payload):
        b = self.args.behaviour
        if eid == 0:
            hs, _ = decode(payload)
            m = hs.get(b"m", {})
            self.their_ut_metadata = m.get(b"ut_metadata")
            return
        if eid != UT_METADATA or self.their_ut_metadata is None:
            return
        req, _ = decode(payload)
        if req.get(b"msg_type") != 0:
            return
        piece = req.get(b"piece", 0)
        info = self.t.info_raw
        total = len(info)
        if b == "meta-wrong-size":
            info = info + b"x" * 1000
            total = len(info)
            self.once("meta-wrong-size")
        elif b == "meta-wrong-info":
            flip = bytearray(info)
            flip[len(flip) // 2] ^= 0x01
            info = bytes(flip)
            self.once("meta-wrong-info")
        elif b == "meta-total-size":
            total = total + 1
            self.once("meta-total-size")
        chunk = info[piece * 16384:(piece + 1) * 16384]
        head = encode({"msg_type": 1, "piece": piece, "total_size": total})
        self.send(msg(20, bytes([self.their_ut_metadata]) + head + chunk))


def serve(args, t, stop):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.listen_ip, args.listen_port))
    ls.listen(512)
    ls.settimeout(0.2)
    emit("ready", port=ls.getsockname()[1], info_hash=t.info_hash.hex())
    while stop.reason is None:
        try:
            s, addr = ls.accept()
        except socket.timeout:
            continue
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=Conn(s, addr, t, args).run, daemon=True).start()


def flood(args, t, stop):
    host, _, port = args.flood.rpartition(":")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.count + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.count + 100), hard))
    emit("ready", port=0, info_hash=t.info_hash.hex())
    socks, failed = [], 0
    started = time.monotonic()
    for _ in range(args.count):
        if stop.reason is not None:
            break
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((args.listen_ip, 0))
            s.settimeout(5)
            s.connect((host, int(port)))
            if args.flood_handshake:
                s.sendall(handshake(t.info_hash, b"-FL0001-" + os.urandom(12)))
            s.setblocking(False)
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    emit("flood_open", opened=len(socks), failed=failed,
         seconds=round(time.monotonic() - started, 3))
    deadline = time.monotonic() + args.hold
    closed = set()
    while time.monotonic() < deadline and stop.reason is None:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            try:
                if s.recv(65536) == b"":
                    closed.add(i)
            except BlockingIOError:
                pass
            except OSError:
                closed.add(i)
        time.sleep(0.2)
    emit("flood", opened=len(socks), failed=failed, closed_by_peer=len(closed),
         seconds=round(time.monotonic() - started, 3))
    for s in socks:
        s.close()


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--torrent", required=True, help=".torrent file (ltnode --write-torrent)")
    p.add_argument("--data", required=True, help="directory holding the torrent's top-level name")
    p.add_argument("--behaviour", default="good")
    p.add_argument("--listen-ip", default="127.0.0.2")
    p.add_argument("--listen-port", type=int, default=0)
    p.add_argument("--flood", metavar="HOST:PORT")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--hold", type=float, default=5.0)
    p.add_argument("--flood-handshake", action="store_true")
    args = p.parse_args(argv)
    t = Torrent(args.torrent, args.data)
    stop = Stop()
    signal.signal(signal.SIGTERM, lambda *_: stop.set("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: stop.set("SIGINT"))
    watch_stdin(lambda: stop.set("stdin closed"))
    if args.flood:
        flood(args, t, stop)
    else:
        serve(args, t, stop)
    emit("exit", reason=stop.reason or "done")


if __name__ == "__main__":
    main(sys.argv[1:])
