#!/usr/bin/python3
"""bep46_put: an independent BEP 46 publisher for btfs-mount's tests.

It shares no code with btfs-mount: it signs with python3-cryptography's
Ed25519PrivateKey and speaks raw KRPC (BEP 5) over UDP with the test
scripts' own small bencode codec (btcommon.py). Two modes:

put (default)   BEP 44 `get` to every --node (for a write token and the
                highest seq stored), then `put` of the signed mutable item
                `v = {ih: <20 bytes>}` (BEP 46) to each of them. The seq is
                --seq, or 1 + the highest seq any node returned (1 if none).
                Prints one JSON line: {"public_key", "salt", "seq",
                "target", "stored": [addr...], "errors": {addr: msg}}.
                Exit 0 when at least one node stored the item.

--serve-bad     Run a minimal DHT node on --port that answers every `get`
                with a mutable item whose signature is wrong (and `ping`,
                `find_node`, `get_peers` with no nodes), so a test can check
                that such items are refused. Prints {"port": P} once
                listening; stops on SIGTERM or when stdin closes.

Key: --seed-hex (64 hex, the ed25519 seed) or --key FILE (btfs-mount's key
file format: 64 hex characters and a newline).
Value: --ih HEX40 gives {ih: <20 raw bytes>}; --raw-value HEX puts any
bencoded value instead (for bad-value tests).
"""

import argparse
import hashlib
import json
import os
import socket
import sys

from btcommon import Raw, decode, ed25519_keys, encode, parse_hostport, signed_buffer, watch_stdin


class Krpc:
    """A UDP socket sending queries and matching responses by transaction id."""

    def __init__(self, timeout=2.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(timeout)
        self.id = os.urandom(20)
        self.tid = 0

    def query(self, addr, q, args):
        self.tid = (self.tid + 1) % 65536
        t = self.tid.to_bytes(2, "big")
        msg = {"t": t, "y": "q", "q": q, "a": dict(args, id=self.id)}
        self.sock.sendto(encode(msg), addr)
        while True:
            data, src = self.sock.recvfrom(65536)
            try:
                r, _ = decode(data, raw_keys=(b"v",))
            except (ValueError, IndexError):
                continue
            if r.get(b"t") != t:
                continue
            if r.get(b"y") == b"e":
                e = r.get(b"e", [0, b"?"])
                raise RuntimeError("error %s: %s" % (e[0], e[1].decode(errors="replace")))
            return r.get(b"r", {})


def load_key(args):
    if args.key:
        with open(args.key) as f:
            seed = bytes.fromhex(f.read().strip())
    else:
        seed = bytes.fromhex(args.seed_hex)
    if len(seed) != 32:
        sys.exit("the seed must be 32 bytes")
    sk, pk, _ = ed25519_keys(seed)
    return sk, pk


def put(args):
    sk, pk = load_key(args)
    salt = bytes.fromhex(args.salt)
    target = hashlib.sha1(pk + salt).digest()
    if args.raw_value:
        v_raw = bytes.fromhex(args.raw_value)
    else:
        v_raw = encode({"ih": bytes.fromhex(args.ih)})
    k = Krpc()
    tokens, errors, highest = {}, {}, None
    for node in args.node:
        addr = parse_hostport(node)
        try:
            r = k.query(addr, "get", {"target": target})
        except Exception as e:  # noqa: BLE001 - reported per node
            errors[node] = "get: %s" % e
            continue
        if b"token" in r:
            tokens[node] = (addr, r[b"token"])
        if b"seq" in r and b"sig" in r and b"v" in r:
            highest = max(highest or 0, r[b"seq"])
    seq = args.seq if args.seq is not None else (highest or 0) + 1
    sig = sk.sign(signed_buffer(salt, seq, v_raw))
    stored = []
    for node, (addr, token) in tokens.items():
        a = {"token": token, "k": pk, "seq": seq, "sig": sig, "v": Raw(v_raw)}
        if salt:
            a["salt"] = salt
        try:
            k.query(addr, "put", a)
            stored.append(node)
        except Exception as e:  # noqa: BLE001 - reported per node
            errors[node] = "put: %s" % e
    print(json.dumps({"public_key": pk.hex(), "salt": salt.hex(), "seq": seq,
                      "target": target.hex(), "stored": stored, "errors": errors}), flush=True)
    return 0 if stored else 1


def serve_bad(args):
    sk, pk = load_key(args)
    salt = bytes.fromhex(args.salt)
    v_raw = encode({"ih": bytes.fromhex(args.ih or "00" * 20)})
    seq = args.seq or 1
    sig = bytearray(sk.sign(signed_buffer(salt, seq, v_raw)))
    sig[0] ^= 0xFF  # a signature that does not verify
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", args.port))
    node_id = os.urandom(20)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)
    watch_stdin(lambda: os._exit(0))
    while True:
        data, src = sock.recvfrom(65536)
        try:
            m, _ = decode(data, raw_keys=(b"v",))
        except (ValueError, IndexError):
            continue
        if m.get(b"y") != b"q":
            continue
        q = m.get(b"q")
        r = {"id": node_id}
        if q in (b"find_node", b"get_peers"):
            r["nodes"] = b""
            r["token"] = b"tok"
        elif q == b"get":
            r.update(token=b"tok", nodes=b"", k=pk, seq=seq, sig=bytes(sig), v=Raw(v_raw))
        sock.sendto(encode({"t": m.get(b"t", b""), "y": "r", "r": r}), src)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--seed-hex", help="the ed25519 seed, 64 hex")
    key.add_argument("--key", help="a btfs-mount key file")
    p.add_argument("--salt", default="", help="salt, hex")
    p.add_argument("--ih", help="info-hash, 40 hex: v = {ih: <20 bytes>}")
    p.add_argument("--raw-value", help="put this bencoded value (hex) instead")
    p.add_argument("--seq", type=int, help="sequence number (default: highest found + 1)")
    p.add_argument("--node", action="append", default=[], help="DHT node HOST:PORT, repeatable")
    p.add_argument("--serve-bad", action="store_true", help="serve a badly signed item instead")
    p.add_argument("--port", type=int, default=0, help="UDP port for --serve-bad")
    args = p.parse_args(argv)
    if args.serve_bad:
        return serve_bad(args)
    if not args.node:
        p.error("put needs at least one --node")
    if not (args.ih or args.raw_value):
        p.error("put needs --ih or --raw-value")
    return put(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
