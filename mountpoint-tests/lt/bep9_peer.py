#!/usr/bin/python3
"""A minimal scripted BitTorrent peer that serves given raw info-dictionary
bytes over ut_metadata (BEP 9), and optionally piece data, on loopback.

It trusts nothing about the info dictionary: the bytes are served exactly as
given (hostile or malformed ones included), and the info-hash is the SHA-1
of those bytes. Only the standard library is used (and btcommon.py, the
scripts' bencode codec).

Usage:
  bep9_peer.py --info FILE [--port P] [--blob OFFSET:FILE ...]
               [--no-data] [--piece-length N] [--total-length N]
               [--v2 [--torrent FILE] [--have-pieces N]]

  --info FILE            the raw info dictionary to serve
  --port P               TCP listen port on 127.0.0.1 (0: any; default 0)
  --blob OFFSET:FILE     content of the torrent's piece space: FILE's bytes
                         at absolute OFFSET; every byte not covered by a
                         blob is zero (so a huge torrent of zeros with a
                         patterned tail costs nothing); repeatable
  --no-data              serve only the metadata: no bitfield, no pieces
  --piece-length N,      used for piece requests; by default read from the
  --total-length N       info dictionary (when it can be read)
  --v2                   a BEP 52 torrent found by its v2 info-hash: the
                         handshake's info-hash is the SHA-256 of the info
                         dictionary truncated to 20 bytes, the magnet a
                         `xt=urn:btmh` link
  --torrent FILE         with --v2: answer `hash request`s (BEP 52) for a
                         whole piece layer from FILE's `piece layers` (a
                         request it cannot answer gets `hash reject`)
  --have-pieces N        with --no-data: still send a bitfield of N pieces
                         and unchoke (so a v2 client asks for hashes); no
                         block is ever sent

Per connection (one thread each): read the peer's 68-byte handshake (refuse
another info-hash), answer with ours (extension bit, BEP 10), send an
extension handshake {m: {ut_metadata: 3}, metadata_size}, then (unless
--no-data) a bitfield of every piece and unchoke. Answers ut_metadata
requests with data (16 KiB pieces) or reject, `request` with `piece`
(blocks cut from the blobs/zeros), ignores every other message.

Events, one JSON object per line on stdout:
  ready {port, info_hash, magnet, metadata_size, piece_length, total_length}
  peer_connected {addr}, peer_disconnected {addr, reason}
  metadata_request {piece}, request {index, begin, length}
  exit {reason}
Exits on SIGTERM, SIGINT, or when stdin closes.
"""
import argparse
import hashlib
import os
import signal
import socket
import struct
import threading

from btcommon import decode, emit, encode, watch_stdin

METADATA_PIECE = 16384
OUR_UT_METADATA = 3


# --- content --------------------------------------------------------------

class Content:
    """The torrent's piece space: zeros overlaid with blobs."""

    def __init__(self, blobs):
        self.blobs = sorted(blobs)  # [(offset, bytes)]

    def read(self, offset, length):
        out = bytearray(length)
        for boff, data in self.blobs:
            lo = max(offset, boff)
            hi = min(offset + length, boff + len(data))
            if lo < hi:
                out[lo - offset:hi - offset] = data[lo - boff:hi - boff]
        return bytes(out)


# --- one connection ---------------------------------------------------------

def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return bytes(buf)


def send_msg(sock, msg_id, payload=b""):
    sock.sendall(struct.pack(">IB", 1 + len(payload), msg_id) + payload)


def pad_hash(layer):
    """The root of an all-zero subtree 2^layer leaves wide (BEP 52)."""
    h = b"\0" * 32
    for _ in range(layer):
        h = hashlib.sha256(h + h).digest()
    return h


def hash_answer(payload, layers, piece_length):
    """(message id, payload) answering a `hash request`: the piece layer's
    nodes (pads past the data) when it asks for them with no uncle, else a
    `hash reject`."""
    root = payload[:32]
    base, index, length, proof = struct.unpack(">IIII", payload[32:48])
    layer = layers.get(root)
    piece_layer = (piece_length or 0).bit_length() - 15 if piece_length else -1
    log2 = max(length, 1).bit_length() - 1
    if layer is None or base != piece_layer or proof + 1 != log2 or length & (length - 1):
        return 23, payload
    nodes = [layer[i:i + 32] for i in range(0, len(layer), 32)][index:index + length]
    nodes += [pad_hash(base)] * (length - len(nodes))
    return 22, payload + b"".join(nodes)


def serve(sock, addr, args, info, info_hash, content):
    peer = "%s:%d" % addr
    emit("peer_connected", addr=peer)
    reason = "closed"
    try:
        hs = recv_exact(sock, 68)
        if hs[:20] != b"\x13BitTorrent protocol":
            reason = "bad handshake"
            return
        if hs[28:48] != info_hash:
            reason = "other info-hash " + hs[28:48].hex()
            return
        reserved = bytearray(8)
        reserved[5] |= 0x10
        sock.sendall(b"\x13BitTorrent protocol" + bytes(reserved) + info_hash + b"-BP0001-" + os.urandom(12))
        ext = {"m": {"ut_metadata": OUR_UT_METADATA}, "metadata_size": len(info), "v": "bep9_peer"}
        send_msg(sock, 20, b"\x00" + encode(ext))
        num_pieces = 0
        if args.no_data and args.have_pieces:
            bits = bytearray((args.have_pieces + 7) // 8)
            for i in range(args.have_pieces):
                bits[i // 8] |= 0x80 >> (i % 8)
            send_msg(sock, 5, bytes(bits))
            send_msg(sock, 1)  # unchoke
        elif not args.no_data and args.piece_length and args.total_length:
            num_pieces = -(-args.total_length // args.piece_length)
            bits = bytearray((num_pieces + 7) // 8)
            for i in range(num_pieces):
                bits[i // 8] |= 0x80 >> (i % 8)
            send_msg(sock, 5, bytes(bits))
            send_msg(sock, 1)  # unchoke
        their_ut_metadata = None
        while True:
            (length,) = struct.unpack(">I", recv_exact(sock, 4))
            if length == 0:
                continue
            if length > (1 << 22):
                reason = "frame of %d bytes" % length
                return
            body = recv_exact(sock, length)
            mid, payload = body[0], body[1:]
            if mid == 20 and payload:
                eid, rest = payload[0], payload[1:]
                if eid == 0:
                    try:
                        d, _ = decode(rest)
                        their_ut_metadata = d.get(b"m", {}).get(b"ut_metadata")
                    except (ValueError, AttributeError):
                        pass
                elif eid == OUR_UT_METADATA:
                    d, _ = decode(rest)
                    if d.get(b"msg_type") != 0 or their_ut_metadata is None:
                        continue
                    piece = d.get(b"piece", -1)
                    emit("metadata_request", piece=piece)
                    start = piece * METADATA_PIECE
                    if 0 <= start < len(info):
                        data = info[start:start + METADATA_PIECE]
                        msg = encode({"msg_type": 1, "piece": piece, "total_size": len(info)}) + data
                    else:
                        msg = encode({"msg_type": 2, "piece": piece})
                    send_msg(sock, 20, bytes([their_ut_metadata]) + msg)
            elif mid == 21 and len(payload) == 48:  # hash request (BEP 52)
                send_msg(sock, *hash_answer(payload, args.layers, args.layer_piece_length))
            elif mid == 2 and num_pieces:  # interested
                send_msg(sock, 1)
            elif mid == 6 and num_pieces and len(payload) == 12:
                index, begin, blen = struct.unpack(">III", payload)
                emit("request", index=index, begin=begin, length=blen)
                offset = index * args.piece_length + begin
                if index >= num_pieces or blen > (1 << 17) or offset + blen > args.total_length:
                    reason = "bad request %d/%d/%d" % (index, begin, blen)
                    return
                data = content.read(offset, blen)
                send_msg(sock, 7, struct.pack(">II", index, begin) + data)
    except (ConnectionError, OSError, ValueError) as e:
        reason = str(e) or type(e).__name__
    finally:
        emit("peer_disconnected", addr=peer, reason=reason)
        try:
            sock.close()
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--info", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--blob", action="append", default=[])
    ap.add_argument("--no-data", action="store_true")
    ap.add_argument("--piece-length", type=int)
    ap.add_argument("--total-length", type=int)
    ap.add_argument("--v2", action="store_true")
    ap.add_argument("--torrent")
    ap.add_argument("--have-pieces", type=int, default=0)
    args = ap.parse_args()

    with open(args.info, "rb") as f:
        info = f.read()
    info_hash = hashlib.sha1(info).digest()
    magnet = "magnet:?xt=urn:btih:" + info_hash.hex()
    if args.v2:
        full = hashlib.sha256(info).digest()
        info_hash = full[:20]
        magnet = "magnet:?xt=urn:btmh:1220" + full.hex()
    args.layers = {}
    args.layer_piece_length = None
    if args.torrent:
        with open(args.torrent, "rb") as f:
            top, _ = decode(f.read())
        if isinstance(top.get(b"piece layers"), dict):
            args.layers = top[b"piece layers"]
    # piece length and total length from the info dict, when readable
    try:
        d, _ = decode(info)
        if isinstance(d.get(b"piece length"), int):
            args.layer_piece_length = d[b"piece length"]
        if args.piece_length is None and isinstance(d.get(b"piece length"), int):
            args.piece_length = d[b"piece length"]
        if args.total_length is None:
            if isinstance(d.get(b"files"), list):
                args.total_length = sum(f.get(b"length", 0) for f in d[b"files"])
            elif isinstance(d.get(b"length"), int):
                args.total_length = d[b"length"]
    except (ValueError, AttributeError, TypeError, IndexError):
        pass
    if not (isinstance(args.piece_length, int) and args.piece_length > 0
            and isinstance(args.total_length, int) and args.total_length > 0):
        args.piece_length = args.total_length = None
    blobs = []
    for spec in args.blob:
        off, path = spec.split(":", 1)
        with open(path, "rb") as f:
            blobs.append((int(off), f.read()))
    content = Content(blobs)

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.port))
    srv.listen(16)
    port = srv.getsockname()[1]

    def stop(reason):
        emit("exit", reason=reason)
        os._exit(0)

    signal.signal(signal.SIGTERM, lambda *_: stop("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: stop("SIGINT"))

    watch_stdin(lambda: stop("stdin closed"))
    emit("ready", port=port, info_hash=info_hash.hex(),
         magnet=magnet, metadata_size=len(info),
         piece_length=args.piece_length, total_length=args.total_length)
    while True:
        sock, addr = srv.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve, args=(sock, addr, args, info, info_hash, content), daemon=True).start()


if __name__ == "__main__":
    main()
