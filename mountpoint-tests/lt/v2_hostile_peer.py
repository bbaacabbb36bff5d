#!/usr/bin/python3
"""v2_hostile_peer: a scripted peer of a v2-only torrent (BEP 52) that
misbehaves in the hash exchange, for mountpoint-tests/v2.rs.

It knows the torrent from the .torrent file libtorrent wrote (`--torrent`)
and its piece count (`--num-pieces`): a handshake for the truncated v2
info-hash, the extension handshake with ut_metadata (BEP 10, BEP 9: it
serves the real info dictionary), a full bitfield and an unchoke. It
answers no block request unless told. Then, as `--behaviour` says:

  bad-hashes   answers every `hash request` (id 21) with a `hashes` message
               (id 22) of the right length whose hashes are random: well
               formed, proving nothing
  wrong-data   answers hash requests truly (from the .torrent's `piece
               layers`, whole-layer requests only), and every block request
               with random bytes
  one-bad-block  (needs --data, the torrent's one file) answers every hash
               request truly from the file's whole tree (block layer
               included, with the uncles asked for) and every block request
               with the file's bytes, except its first answered block, whose
               bytes are random (after --bad-delay seconds)
  unasked      asks the client three hash requests it must reject (a range
               past the end of the layer, a length of 2^20, the block layer
               of a tree the client keeps only from its piece layer), then
               sends `hashes` messages nobody asked for until the client
               closes the connection (at most 64)

Events, one JSON object per line on stdout: `ready` {port, info_hash},
`handshake` {addr}, `sent` {what} (the first time each kind is sent),
`hash_answer` {id (22 hashes / 23 reject), index, length, base_layer}
(each answer the client sends to our requests), `closed` {addr, by}. Logs
on stderr. Exits on SIGTERM or when stdin closes.
"""

import argparse
import hashlib
import os
import signal
import socket
import struct
import sys
import threading
import time

from btcommon import PROTOCOL, Stop, decode, emit, encode, handshake, log, msg, read_messages, recv_exact, watch_stdin

UT_METADATA = 3


def uncle_count(length, proof_layers):
    log2 = max(length, 1).bit_length() - 1
    if (1 << log2) < length:
        log2 += 1
    return max(proof_layers + 1 - log2, 0)


def pad_hash(layer):
    """The root of an all-zero subtree 2^layer leaves wide (BEP 52)."""
    h = b"\0" * 32
    for _ in range(layer):
        h = hashlib.sha256(h + h).digest()
    return h


def tree_layers(data, piece_length):
    """Every layer of a file's Merkle tree (BEP 52), leaves first, each
    padded to its full width (a power of two)."""
    leaves = [hashlib.sha256(data[i:i + 16384]).digest() for i in range(0, len(data), 16384)]
    width = 1
    while width < len(leaves):
        width *= 2
    layers = [leaves + [b"\0" * 32] * (width - len(leaves))]
    while len(layers[-1]) > 1:
        prev = layers[-1]
        layers.append([hashlib.sha256(prev[i] + prev[i + 1]).digest() for i in range(0, len(prev), 2)])
    return layers


def tree_answer(layers, base, index, length, proof):
    """The hashes of a true `hashes` answer: the nodes, then the uncles
    from layer base + log2(length) up, as libtorrent counts them."""
    log2 = max(length, 1).bit_length() - 1
    if base >= len(layers) or index + length > len(layers[base]):
        return None
    out = list(layers[base][index:index + length])
    for k in range(uncle_count(length, proof)):
        layer = base + log2 + k
        if layer >= len(layers) - 1:
            return None
        out.append(layers[layer][(index >> (log2 + k)) ^ 1])
    return out


def first_root(file_tree):
    """The `pieces root` of the first file of a `file tree` with one."""
    for k, v in file_tree.items():
        if k == b"" and isinstance(v, dict):
            r = v.get(b"pieces root")
            if r:
                return r
        elif isinstance(v, dict):
            r = first_root(v)
            if r:
                return r
    return None


class Conn:
    def __init__(self, sock, addr, args, t):
        self.sock, self.addr, self.args = sock, f"{addr[0]}:{addr[1]}", args
        self.info_raw, self.info_hash, self.root = t["info_raw"], t["info_hash"], t["root"]
        self.layers, self.piece_layer = t["layers"], t["piece_layer"]
        self.sent_kinds = set()
        self.full_tree = t.get("full_tree")
        self.data = t.get("data")
        self.bad_sent = False
        self.their_ut_metadata = None

    def once(self, what):
        if what not in self.sent_kinds:
            self.sent_kinds.add(what)
            emit("sent", what=what, addr=self.addr)

    def send(self, data):
        self.sock.sendall(data)

    def run(self):
        by = "us"
        announced = False
        try:
            prefix = recv_exact(self.sock, 20)
            if prefix != PROTOCOL:
                return  # MSE: the client dials again in plaintext
            rest = recv_exact(self.sock, 48)
            if rest is None or rest[8:28] != self.info_hash:
                log(f"{self.addr}: bad handshake")
                return
            self.send(handshake(self.info_hash, b"-FK0002-" + os.urandom(12)))
            emit("handshake", addr=self.addr)
            announced = True
            ext = {"m": {"ut_metadata": UT_METADATA}, "metadata_size": len(self.info_raw),
                   "v": "v2_hostile_peer"}
            self.send(msg(20, b"\x00" + encode(ext)))
            n = self.args.num_pieces
            bf = bytearray((n + 7) // 8)
            for i in range(n):
                bf[i // 8] |= 0x80 >> (i % 8)
            self.send(msg(5, bytes(bf)))
            self.send(msg(1))
            if self.args.behaviour == "unasked":
                threading.Thread(target=self.provoke, daemon=True).start()
            if read_messages(self.sock, self.on_message, self.addr):
                by = "peer"
        except OSError as e:
            by = "peer"
            log(f"{self.addr}: {e}")
        finally:
            if announced:
                emit("closed", addr=self.addr, by=by)
            try:
                self.sock.close()
            except OSError:
                pass

    def provoke(self):
        """Three requests to reject, then unasked `hashes` messages."""
        try:
            time.sleep(0.5)
            for base, index, length, proof in [(2, 1 << 20, 2, 0), (0, 0, 1 << 20, 0), (0, 0, 2, 0)]:
                self.send(msg(21, self.root + struct.pack(">IIII", base, index, length, proof)))
            self.once("bad-requests")
            time.sleep(1.0)
            for k in range(64):
                payload = os.urandom(32) + struct.pack(">IIII", 0, 2 * k, 2, 0) + os.urandom(64)
                self.send(msg(22, payload))
                self.once("unasked-hashes")
                time.sleep(0.05)
        except OSError:
            pass

    def on_message(self, mid, payload):
        if mid in (22, 23) and len(payload) >= 48:
            base, index, length, _ = struct.unpack(">IIII", payload[32:48])
            emit("hash_answer", id=mid, index=index, length=length, base_layer=base)
        elif mid == 21 and len(payload) == 48 and self.args.behaviour == "bad-hashes":
            _, _, length, proof = struct.unpack(">IIII", payload[32:48])
            count = length + uncle_count(length, proof)
            self.send(msg(22, payload + os.urandom(32 * count)))
            self.once("bad-hashes")
        elif mid == 21 and len(payload) == 48 and self.args.behaviour == "wrong-data":
            root = payload[:32]
            base, index, length, proof = struct.unpack(">IIII", payload[32:48])
            layer = self.layers.get(root)
            if layer is None or base != self.piece_layer or uncle_count(length, proof) != 0:
                self.send(msg(23, payload))
                return
            nodes = [layer[i:i + 32] for i in range(0, len(layer), 32)][index:index + length]
            nodes += [pad_hash(base)] * (length - len(nodes))
            self.send(msg(22, payload + b"".join(nodes)))
            self.once("true-hashes")
        elif mid == 6 and len(payload) == 12 and self.args.behaviour == "wrong-data":
            index, begin, length = struct.unpack(">III", payload)
            self.send(msg(7, struct.pack(">II", index, begin) + os.urandom(min(length, 16384))))
            self.once("wrong-data")
        elif mid == 21 and len(payload) == 48 and self.args.behaviour == "one-bad-block":
            base, index, length, proof = struct.unpack(">IIII", payload[32:48])
            nodes = tree_answer(self.full_tree, base, index, length, proof) if payload[:32] == self.root else None
            if nodes is None:
                self.send(msg(23, payload))
                return
            self.send(msg(22, payload + b"".join(nodes)))
            self.once("block-hashes" if base == 0 else "true-hashes")
        elif mid == 6 and len(payload) == 12 and self.args.behaviour == "one-bad-block":
            index, begin, length = struct.unpack(">III", payload)
            start = index * self.args.piece_length + begin
            block = self.data[start:start + min(length, 16384)]
            if not self.bad_sent:
                self.bad_sent = True
                time.sleep(self.args.bad_delay)
                block = os.urandom(len(block))
                emit("bad_block", index=index, begin=begin)
            self.send(msg(7, struct.pack(">II", index, begin) + block))
            self.once("data")
        elif mid == 20 and payload:
            self.on_extended(payload[0], payload[1:])

    def on_extended(self, eid, payload):
        if eid == 0:
            hs, _ = decode(payload)
            self.their_ut_metadata = hs.get(b"m", {}).get(b"ut_metadata")
            return
        if eid != UT_METADATA or self.their_ut_metadata is None:
            return
        req, _ = decode(payload)
        if req.get(b"msg_type") != 0:
            return
        piece = req.get(b"piece", 0)
        chunk = self.info_raw[piece * 16384:(piece + 1) * 16384]
        head = encode({"msg_type": 1, "piece": piece, "total_size": len(self.info_raw)})
        self.send(msg(20, bytes([self.their_ut_metadata]) + head + chunk))


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--torrent", required=True, help="the v2 .torrent file")
    p.add_argument("--num-pieces", type=int, required=True)
    p.add_argument("--behaviour", choices=["bad-hashes", "wrong-data", "unasked", "one-bad-block"],
                   required=True)
    p.add_argument("--data", help="the torrent's one file (one-bad-block)")
    p.add_argument("--bad-delay", type=float, default=0.5,
                   help="seconds before the bad block is sent (one-bad-block)")
    p.add_argument("--listen-ip", default="127.0.0.1")
    args = p.parse_args(argv)
    raw = open(args.torrent, "rb").read()
    top, _ = decode(raw, raw_keys=(b"info",))
    info_raw = bytes(top[b"info"])
    info_hash = hashlib.sha256(info_raw).digest()[:20]
    info, _ = decode(info_raw)
    t = {
        "info_raw": info_raw,
        "info_hash": info_hash,
        "root": first_root(info[b"file tree"]) or b"\0" * 32,
        "layers": top.get(b"piece layers", {}),
        "piece_layer": (info[b"piece length"] // 16384).bit_length() - 1,
    }
    args.piece_length = info[b"piece length"]
    if args.data:
        t["data"] = open(args.data, "rb").read()
        t["full_tree"] = tree_layers(t["data"], args.piece_length)
    stop = Stop()
    signal.signal(signal.SIGTERM, lambda *_: stop.set("SIGTERM"))
    watch_stdin(lambda: stop.set("stdin closed"))
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((args.listen_ip, 0))
    ls.listen(64)
    ls.settimeout(0.2)
    emit("ready", port=ls.getsockname()[1], info_hash=info_hash.hex())
    while stop.reason is None:
        try:
            s, addr = ls.accept()
        except socket.timeout:
            continue
        threading.Thread(target=Conn(s, addr, args, t).run, daemon=True).start()
    emit("exit", reason=stop.reason or "done")


if __name__ == "__main__":
    main(sys.argv[1:])
