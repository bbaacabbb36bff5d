#!/usr/bin/python3
"""bep46_put: an independent BEP 46 publisher for btfs-mount's tests.

It shares no code with btfs-mount: it signs with python3-cryptography's
Ed25519PrivateKey and speaks raw KRPC (BEP 5) over UDP with its own small
bencode codec. Two modes:

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
import threading

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization


class Raw(bytes):
    """Already-bencoded bytes, inserted as is by `benc`."""


def benc(x):
    """Bencode ints, bytes, str, lists and dicts (keys sorted as raw bytes)."""
    if isinstance(x, Raw):
        return bytes(x)
    if isinstance(x, bool):
        raise TypeError("bool")
    if isinstance(x, int):
        return b"i%de" % x
    if isinstance(x, str):
        x = x.encode()
    if isinstance(x, bytes):
        return b"%d:%s" % (len(x), x)
    if isinstance(x, list):
        return b"l" + b"".join(benc(i) for i in x) + b"e"
    if isinstance(x, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in x.items())
        return b"d" + b"".join(benc(k) + benc(v) for k, v in items) + b"e"
    raise TypeError(type(x))


def bdec(buf, i=0):
    """Decode one value at buf[i:]; returns (value, end). Dict values under
    the key b"v" are returned as Raw (their exact bytes)."""
    c = buf[i:i + 1]
    if c == b"i":
        j = buf.index(b"e", i)
        return int(buf[i + 1:j]), j + 1
    if c == b"l":
        i += 1
        out = []
        while buf[i:i + 1] != b"e":
            v, i = bdec(buf, i)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while buf[i:i + 1] != b"e":
            k, i = bdec(buf, i)
            start = i
            v, i = bdec(buf, i)
            out[k] = Raw(buf[start:i]) if k == b"v" else v
        return out, i + 1
    if c.isdigit():
        j = buf.index(b":", i)
        n = int(buf[i:j])
        if j + 1 + n > len(buf):
            raise ValueError("truncated string")
        return buf[j + 1:j + 1 + n], j + 1 + n
    raise ValueError("bad bencode at %d" % i)


def signed_buffer(salt, seq, v_raw):
    """BEP 44 'signature verification': salt (if any), seq and v."""
    out = b""
    if salt:
        out += b"4:salt" + benc(salt)
    return out + b"3:seqi%de1:v" % seq + v_raw


def parse_hostport(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


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
        self.sock.sendto(benc(msg), addr)
        while True:
            data, src = self.sock.recvfrom(65536)
            try:
                r, _ = bdec(data)
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
    sk = Ed25519PrivateKey.from_private_bytes(seed)
    pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return sk, pk


def put(args):
    sk, pk = load_key(args)
    salt = bytes.fromhex(args.salt)
    target = hashlib.sha1(pk + salt).digest()
    if args.raw_value:
        v_raw = bytes.fromhex(args.raw_value)
    else:
        v_raw = benc({"ih": bytes.fromhex(args.ih)})
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
    v_raw = benc({"ih": bytes.fromhex(args.ih or "00" * 20)})
    seq = args.seq or 1
    sig = bytearray(sk.sign(signed_buffer(salt, seq, v_raw)))
    sig[0] ^= 0xFF  # a signature that does not verify
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", args.port))
    node_id = os.urandom(20)
    print(json.dumps({"port": sock.getsockname()[1]}), flush=True)

    def watch_stdin():
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    while True:
        data, src = sock.recvfrom(65536)
        try:
            m, _ = bdec(data)
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
        sock.sendto(benc({"t": m.get(b"t", b""), "y": "r", "r": r}), src)


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
