#!/usr/bin/python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/<target>/.

Deterministic: running it again rewrites the same files. Seeds are named
`seed-*`; regression cases found by fuzzing are added by hand as
`regress-*` and never touched here. Real info dictionaries come from
python3-libtorrent's `create_torrent` over small generated trees (no file
is copied from anywhere); the rest is built by hand, malformed cases
included.
"""
import hashlib
import os
import struct
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

# The tests' bencode encoder (keys sorted as raw bytes), one for the tree.
sys.path.insert(0, os.path.join(HERE, "..", "mountpoint-tests", "lt"))
from btcommon import encode as benc  # noqa: E402


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def pieces_of(content, plen):
    return b"".join(hashlib.sha1(content[i:i + plen]).digest() for i in range(0, len(content), plen)) or b""


def magnet_seeds():
    ih = "c0fda1edafdbdbb96443424e0b3899af7159d10e"
    pk = "77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548"
    seeds = {
        "hex": f"magnet:?xt=urn:btih:{ih}",
        "full": f"magnet:?xt=urn:btih:{ih}&dn=hello%20world&tr=udp%3A%2F%2Ft.example%3A80&x.pe=127.0.0.1:6881&x.pe=[::1]:51413",
        "base32": "magnet:?xt=urn:btih:YD62D3NPXXJVPZCDIJAA4GMZV54XDUIO",
        "upper": f"MAGNET:?XT=urn:btih:{ih.upper()}",
        "btmh": "magnet:?xt=urn:btmh:1220caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e",
        "hybrid": f"magnet:?xt=urn:btih:{ih}&xt=urn:btmh:1220caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e",
        "bep46": f"magnet:?xs=urn:btpk:{pk}",
        "bep46_salt": f"magnet:?xs=urn:btpk:{pk}&s=6e",
        "bad_salt": f"magnet:?xs=urn:btpk:{pk}&s=zz",
        "long_salt": f"magnet:?xs=urn:btpk:{pk}&s=" + "ab" * 65,
        "bad_peer": f"magnet:?xt=urn:btih:{ih}&x.pe=host.example:1",
        "short": "magnet:?xt=urn:btih:abc",
        "not": "http://example.com/x.torrent",
        "empty_q": "magnet:?",
        "junk": "magnet:?&&=&xt&xt=&%zz=%ff&dn=%C3%28",
        "dn_utf8": f"magnet:?xt=urn:btih:{ih}&dn=caf%C3%A9+na%C3%AFve",
        "v2": "magnet:?xt=urn:btmh:1220" + "95e04d0c4bad94ab206efa884666fd89777dbe4f7bd9945af1829037a85c6192",
        "btmh_sha1": "magnet:?xt=urn:btmh:1114" + "ab" * 20,
    }
    for k, v in seeds.items():
        write("magnet", k, v)


def libtorrent_infos():
    """Info dicts of small trees, made by python3-libtorrent (if present)."""
    try:
        import libtorrent as lt
    except ImportError:
        print("python3-libtorrent missing: no libtorrent-made info dicts", file=sys.stderr)
        return {}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "site")
        os.makedirs(os.path.join(root, "media", "deep"))
        files = {
            "index.html": b"<h1>hello</h1>\n",
            "empty.txt": b"",
            "media/a.bin": bytes(range(256)) * 70,
            "media/deep/b.bin": b"\x01" * 20000,
            "caf\xc3\xa9.txt".encode().decode("utf-8", "surrogateescape"): b"x",
        }
        for rel, data in files.items():
            with open(os.path.join(root, rel), "wb") as f:
                f.write(data)
        fs = lt.file_storage()
        lt.add_files(fs, root)
        ct = lt.create_torrent(fs, 16384, flags=lt.create_torrent.v1_only)
        lt.set_piece_hashes(ct, tmp)
        out["lt_multi"] = benc_lt(lt.bencode(ct.generate()))
        single = os.path.join(tmp, "one.bin")
        with open(single, "wb") as f:
            f.write(b"z" * 40000)
        fs = lt.file_storage()
        lt.add_files(fs, single)
        ct = lt.create_torrent(fs, 32768)
        lt.set_piece_hashes(ct, tmp)
        out["lt_single"] = benc_lt(lt.bencode(ct.generate()))
        # hybrid (v1 + v2) torrent
        fs = lt.file_storage()
        lt.add_files(fs, root)
        ct = lt.create_torrent(fs, 16384)
        lt.set_piece_hashes(ct, tmp)
        out["lt_hybrid"] = benc_lt(lt.bencode(ct.generate()))
    return out


def benc_lt(torrent):
    """The raw `info` value of a whole .torrent (libtorrent writes canonical
    bencoding, so the span is found by decoding)."""
    def skip(b, i):
        c = b[i:i + 1]
        if c == b"i":
            return b.index(b"e", i) + 1
        if c in (b"l", b"d"):
            i += 1
            while b[i:i + 1] != b"e":
                i = skip(b, i)
            return i + 1
        colon = b.index(b":", i)
        return colon + 1 + int(b[i:colon])
    i = 1
    while torrent[i:i + 1] != b"e":
        kend = skip(torrent, i)
        key = torrent[torrent.index(b":", i) + 1:kend]
        vend = skip(torrent, kend)
        if key == b"info":
            return torrent[kend:vend]
        i = vend
    raise ValueError("no info")


def info_seeds():
    t = "bencode_info"
    for k, v in libtorrent_infos().items():
        write(t, k, v)
    content = b"hello world\n" * 40
    single = {"name": "temp", "piece length": 16384, "length": len(content), "pieces": pieces_of(content, 16384)}
    write(t, "single", benc(single))
    a, b = b"a" * 300, b"b" * 125
    multi = {
        "name": "temp", "piece length": 256,
        "files": [{"length": 300, "path": ["foo", "a.txt"]}, {"length": 125, "path": ["b.txt"], "attr": "x"}],
        "pieces": pieces_of(a + b, 256),
    }
    write(t, "multi", benc(multi))
    hostile = dict(multi, files=[
        {"length": 300, "path": ["..", "..", "etc", "passwd"]},
        {"length": 0, "path": ["/abs", "a\\b", "", ".", "nul\x00x"]},
        {"length": 125, "path": [b"\xff\xfe-bad-utf8"]},
    ])
    write(t, "hostile_paths", benc(hostile))
    dup = dict(multi, files=[{"length": 300, "path": ["x.txt"]}, {"length": 125, "path": ["x.txt"]}])
    write(t, "duplicates", benc(dup))
    filedir = dict(multi, files=[{"length": 300, "path": ["d"]}, {"length": 125, "path": ["d", "e"]}])
    write(t, "file_and_dir", benc(filedir))
    pad = dict(multi, files=[{"length": 300, "path": ["a"]}, {"length": 212, "path": [".pad", "212"], "attr": "p"},
                             {"length": 125, "path": ["b"]}], pieces=pieces_of(a + b"\0" * 212 + b, 256))
    write(t, "pad", benc(pad))
    sym = dict(multi, files=[{"length": 425, "path": ["a", "f"]},
                             {"length": 0, "path": ["a", "l"], "attr": "l", "symlink path": ["..", "..", "f"]}],
               pieces=pieces_of(a + b, 256))
    write(t, "symlink", benc(sym))
    write(t, "long_name", benc(dict(single, name="n" * 300 + ".mkv")))
    write(t, "utf8_keys", benc(dict(single, **{"name.utf-8": "caf\u00e9"})))
    write(t, "unsorted", b"d4:name4:temp6:lengthi425e12:piece lengthi16384e6:pieces20:" + b"\x01" * 20 + b"e")
    write(t, "v2_only", benc({"name": "v2", "piece length": 16384, "meta version": 2,
                               "file tree": {"a": {"": {"length": 5, "pieces root": b"\x00" * 32}}}}))
    write(t, "zero_pl", benc(dict(single, **{"piece length": 0})))
    write(t, "neg_len", benc(dict(single, length=-1)))
    write(t, "huge_len", benc(dict(single, length=2 ** 62, pieces=b"")))
    write(t, "many_pieces", benc(dict(single, length=2 ** 40, **{"piece length": 1})))
    write(t, "zero_files", benc(dict(multi, files=[{"length": 0, "path": ["a"]}], pieces=b"")))
    write(t, "deep", b"l" * 200 + b"e" * 200)
    write(t, "truncated", benc(single)[:-7])
    write(t, "trailing", benc(single) + b"xx")
    write(t, "torrent_file", benc({"announce": "udp://t:1", "info": single}))
    write(t, "ints", b"li-0ei03ei-1ei9223372036854775807ei9223372036854775808ee")
    write(t, "strlen_overflow", b"99999999999999999999:x")


def wire_seeds():
    ih = bytes(range(20))
    hs = b"\x13BitTorrent protocol" + b"\x00\x00\x00\x00\x00\x10\x00\x01" + ih + b"-BF0100-" + b"x" * 12

    def msg(id_, payload=b""):
        return struct.pack(">I", 1 + len(payload)) + bytes([id_]) + payload
    msgs = [
        struct.pack(">I", 0), msg(0), msg(1), msg(2), msg(3), msg(4, struct.pack(">I", 7)),
        msg(5, b"\xff\xe0"), msg(6, struct.pack(">III", 1, 0, 16384)),
        msg(7, struct.pack(">II", 1, 0) + b"data" * 10), msg(8, struct.pack(">III", 1, 0, 16384)),
        msg(9, struct.pack(">H", 6881)), msg(20, b"\x00d1:md11:ut_metadatai1eee"), msg(13, b"\x00\x00\x00\x01"),
    ]
    # first byte selects the frame length limit (0: the default)
    write("wire", "handshake", hs)
    write("wire", "all_messages", b"\x00" + b"".join(msgs))
    write("wire", "too_long", b"\x00" + struct.pack(">I", 0xFFFFFFFF) + b"\x07")
    write("wire", "bad_have", b"\x00" + struct.pack(">I", 3) + b"\x04\x00\x00")
    write("wire", "partial", b"\x00" + msg(7, b"\x00" * 8 + b"abc")[:-2])
    write("wire", "small_limit", b"\x02" + msg(6, struct.pack(">III", 1, 0, 16384)) + msg(2))
    write("wire", "bad_protocol", b"\x13BitTorrent protocoX" + b"\x00" * 48)


def extension_seeds():
    t = "extension"
    write(t, "handshake", benc({"m": {"ut_metadata": 1, "ut_pex": 2}, "metadata_size": 425, "p": 6881,
                                "v": "libtorrent/2.0.8", "yourip": b"\x7f\x00\x00\x01", "reqq": 500}))
    write(t, "handshake6", benc({"m": {"ut_metadata": 300, "x": -1, "ut_pex": 0}, "metadata_size": -5,
                                 "p": 70000, "yourip": b"\x00" * 15 + b"\x01"}))
    write(t, "md_request", benc({"msg_type": 0, "piece": 0}))
    write(t, "md_data", benc({"msg_type": 1, "piece": 0, "total_size": 425}) + b"d4:name4:temp")
    write(t, "md_reject", benc({"msg_type": 2, "piece": 3}))
    write(t, "md_unknown", benc({"msg_type": 7}))
    write(t, "md_bad_piece", benc({"msg_type": 0, "piece": 2 ** 33}))
    write(t, "md_data_big", benc({"msg_type": 1, "piece": 0, "total_size": 1}) + b"\x00" * 16385)
    v4 = b"\x7f\x00\x00\x01\x1a\xe1" * 3
    v6 = b"\x00" * 15 + b"\x01" + b"\x1a\xe1"
    write(t, "pex", benc({"added": v4, "added.f": b"\x01\x02\x10", "added6": v6, "added6.f": b"\x04",
                          "dropped": v4[:6], "dropped6": v6 + v6[:5]}))
    write(t, "pex_port0", benc({"added": b"\x7f\x00\x00\x01\x00\x00"}))
    write(t, "not_dict", b"li1ee")


def krpc_seeds():
    t = "krpc"
    nid = bytes(range(20))
    q = lambda meth, a: benc({"t": "aa", "y": "q", "q": meth, "a": dict(id=nid, **a), "v": "LT20"})
    write(t, "ping", q("ping", {}))
    write(t, "find_node", q("find_node", {"target": b"\x01" * 20}))
    write(t, "get_peers", q("get_peers", {"info_hash": b"\x02" * 20}))
    # BEP 32 `want`: both families, one, unknown entries, not a list.
    write(t, "find_node_want", q("find_node", {"target": b"\x01" * 20, "want": ["n4", "n6"]}))
    write(t, "get_peers_want6", q("get_peers", {"info_hash": b"\x02" * 20, "want": ["n6", "x", 4]}))
    write(t, "want_not_list", q("find_node", {"target": b"\x01" * 20, "want": "n4"}))
    write(t, "announce", q("announce_peer", {"info_hash": b"\x02" * 20, "port": 6881, "token": "tok", "implied_port": 1}))
    write(t, "get", q("get", {"target": b"\x03" * 20, "seq": 4}))
    write(t, "put", q("put", {"token": "tok", "v": {"ih": b"\x04" * 20}, "k": b"\x05" * 32, "sig": b"\x06" * 64,
                              "seq": 1, "salt": "s", "cas": 0}))
    write(t, "put_bad_sig", q("put", {"token": "tok", "v": "x", "sig": b"\x06" * 63}))
    write(t, "unknown_method", q("vote", {}))
    node = nid + b"\x7f\x00\x00\x01\x1a\xe1"
    node6 = nid + b"\x00" * 15 + b"\x01\x1a\xe1"
    write(t, "response", benc({"t": "aa", "y": "r", "ip": b"\x7f\x00\x00\x01\x1a\xe1", "ro": 1,
                               "r": {"id": nid, "nodes": node * 2 + b"abc", "nodes6": node6, "token": "tk",
                                     "values": [b"\x7f\x00\x00\x01\x1a\xe1", b"short", b"\x00" * 16 + b"\x00\x01"]}}))
    write(t, "response_item", benc({"t": "bb", "y": "r", "r": {"id": nid, "v": b"12:Hello World!", "k": b"\x05" * 32,
                                                              "sig": b"\x06" * 64, "seq": 9, "token": "x"}}))
    write(t, "error", benc({"t": "cc", "y": "e", "e": [201, "A Generic Error Ocurred"]}))
    write(t, "error_bad", benc({"t": "cc", "y": "e", "e": ["x", b"\xff"]}))
    write(t, "no_tid", benc({"y": "q", "q": "ping", "a": {"id": nid}}))
    write(t, "long_tid", benc({"t": "x" * 33, "y": "q", "q": "ping", "a": {"id": nid}}))


def utp_packet_seeds():
    """uTP datagrams (BEP 29): each packet type, the selective ACK and
    libtorrent close-reason extensions, and broken ones."""
    t = "utp_packet"

    def pkt(ty, conn, seq, ack, wnd=1 << 20, exts=(), payload=b""):
        first = exts[0][0] if exts else 0
        out = struct.pack(">BBHIIIHH", (ty << 4) | 1, first, conn, 0x01020304, 0x0a0b0c0d, wnd, seq, ack)
        for i, (_, data) in enumerate(exts):
            nxt = exts[i + 1][0] if i + 1 < len(exts) else 0
            out += bytes([nxt, len(data)]) + data
        return out + payload

    write(t, "syn", pkt(4, 0x1234, 1, 0, 0))
    write(t, "state", pkt(2, 0x1235, 100, 1))
    write(t, "data", pkt(0, 0x1235, 2, 100, payload=b"\x13BitTorrent protocol" + bytes(48)))
    write(t, "fin_close_reason", pkt(1, 0x1235, 3, 100, exts=[(3, b"\x00\x0f\x00\x00")]))
    write(t, "reset", pkt(3, 0x1235, 0, 100, 0))
    write(t, "state_sack", pkt(2, 0x1235, 101, 3, exts=[(1, b"\x05\x00\x00\x80")]))
    write(t, "sack_then_unknown", pkt(2, 0x1235, 101, 3, exts=[(1, b"\xff" * 8), (42, b"xyz")]))
    write(t, "sack_long", pkt(2, 0x1235, 101, 3, exts=[(1, b"\xaa" * 255)]))
    write(t, "ext_overrun", pkt(2, 1, 1, 1)[:1] + b"\x01" + pkt(2, 1, 1, 1)[2:] + b"\x00\xc8ab")
    write(t, "version2", bytes([0x42]) + pkt(4, 1, 1, 0)[1:])
    write(t, "type7", bytes([0x71]) + pkt(4, 1, 1, 0)[1:])
    write(t, "short", pkt(4, 1, 1, 0)[:19])
    write(t, "krpc_ping", benc({"t": "aa", "y": "q", "q": "ping", "a": {"id": b"\x01" * 20}}))
def mse_seeds():
    """Seeds for `mse` (fuzz/targets.rs): byte 0 picks the mode, then the
    fields in the order the target reads them."""
    t = "mse"
    u16 = lambda v: struct.pack(">H", v)
    u32 = lambda v: struct.pack(">I", v)

    def stream(tag, n):
        out = b""
        i = 0
        while len(out) < n:
            out += hashlib.sha1(b"%s %d" % (tag, i)).digest()
            i += 1
        return out[:n]

    hs = b"\x13BitTorrent protocol" + b"\x00" * 5 + b"\x10\x00\x01" + b"\x5a" * 20 + b"-FM0100-abcdefghijkl"
    x = stream(b"x", 20)
    # 0: raw bytes to our responder (byte 1: read size - 1)
    write(t, "raw_responder_garbage", b"\x00\x3f" + stream(b"garbage", 800))
    write(t, "raw_responder_plaintext", b"\x00\x04" + hs + b"\x00\x00\x00\x01\x02")
    write(t, "raw_responder_half_prefix", b"\x00\x00" + hs[:11])
    # 1: raw bytes as the answer to our initiator
    write(t, "raw_initiator_garbage", b"\x01\xff" + stream(b"answer", 700))
    write(t, "raw_initiator_plaintext", b"\x01\x10" + hs + b"\x00" * 40)
    # 2: scripted initiator
    def init(flags, pad_a=100, skey=b"", vc=b"", provide=b"\x03", pad_c=17, pad_c_field=b"",
             ia=hs, ia_field=b"", cut=b"", after=b"\x00\x00\x00\x01\x02"):
        return (b"\x02" + x + bytes([flags]) + u16(pad_a) + skey + vc + provide + u16(pad_c)
                + pad_c_field + u16(len(ia)) + ia_field + cut + ia + after)
    write(t, "init_honest_rc4", init(0))
    write(t, "init_honest_plaintext", init(0, provide=b"\x01", pad_a=512, pad_c=512))
    write(t, "init_no_ia", init(0, ia=b"", pad_a=0, pad_c=0, after=hs))
    write(t, "init_unknown_skey", init(1, skey=b"\x77" * 20))
    write(t, "init_bad_vc", init(2, vc=b"\x00" * 7 + b"\x01"))
    write(t, "init_provide_raw", init(4, provide=u32(0xFFFFFFFC)))
    write(t, "init_pad_c_field", init(8, pad_c_field=u16(0xFFFF)))
    write(t, "init_ia_field", init(16, ia_field=u16(1025)))
    write(t, "init_truncated", init(32, cut=u16(30)))
    write(t, "init_pad_a_513", init(0, pad_a=513))
    # 3: scripted responder
    def resp(flags, pad_b=200, vc=b"", select=b"\x02", pad_d=10, pad_d_field=b"", cut=b"",
             after=hs + b"\x00\x00\x00\x05\x05\xff"):
        return (b"\x03" + x + bytes([flags]) + u16(pad_b) + vc + select + u16(pad_d) + pad_d_field
                + cut + after)
    write(t, "resp_honest_rc4", resp(0))
    write(t, "resp_honest_plaintext", resp(0, select=b"\x01", pad_b=512, pad_d=512))
    write(t, "resp_require_plaintext", resp(1, select=b"\x01"))
    write(t, "resp_plaintext_reply", resp(2))
    write(t, "resp_bad_vc", resp(4, vc=b"\x01" * 8))
    write(t, "resp_select_raw", resp(8, select=u32(3)))
    write(t, "resp_pad_d_field", resp(16, pad_d_field=u16(513)))
    write(t, "resp_truncated", resp(32, cut=u16(100)))
def v2_torrents():
    """Whole v2-only and hybrid .torrent files (with `piece layers`, without
    the creation date) of a small tree, made by python3-libtorrent."""
    try:
        import libtorrent as lt
    except ImportError:
        print("python3-libtorrent missing: no libtorrent-made v2 torrents", file=sys.stderr)
        return {}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "tree")
        os.makedirs(os.path.join(root, "sub"))
        files = {"a.txt": b"a" * 100, "empty": b"", "sub/big.bin": bytes(range(256)) * 300,
                 "sub/c": b"c" * 40000}
        for rel, data in files.items():
            with open(os.path.join(root, rel), "wb") as f:
                f.write(data)
        for name, flags in (("lt_v2", lt.create_torrent.v2_only), ("lt_hybrid", 0)):
            fs = lt.file_storage()
            lt.add_files(fs, root)
            ct = lt.create_torrent(fs, 16384, flags=flags)
            lt.set_piece_hashes(ct, tmp)
            t = ct.generate()
            out[name] = lt.bencode({b"info": t[b"info"], b"piece layers": t[b"piece layers"]})
    return out


def v2_info_seeds():
    t = "v2_info"
    root = bytes(range(1, 33))
    leaf = lambda n, r=root: {"": {"length": n, "pieces root": r}}
    single = {"file tree": {"f": leaf(5)}, "meta version": 2, "name": "f", "piece length": 16384}
    write(t, "single", benc(single))
    multi = {"file tree": {"a": leaf(100), "e": {"": {"length": 0}}, "d": {"x": leaf(40000)}},
             "meta version": 2, "name": "m", "piece length": 16384}
    write(t, "multi", benc(multi))
    write(t, "hostile_names", benc(dict(multi, **{"file tree": {"..": leaf(1), "//": leaf(2), "\\": leaf(3),
                                                               "a\x00b": {".": leaf(4)}}})))
    write(t, "bad_root", benc(dict(single, **{"file tree": {"f": leaf(5, b"\x00" * 32)}})))
    write(t, "pad_attr", benc(dict(single, **{"file tree": {"f": {"": {"attr": "p", "length": 5,
                                                                         "pieces root": root}}}})))
    write(t, "symlink", benc(dict(multi, **{"file tree": {"l": {"": {"attr": "l", "length": 0,
                                                                      "symlink path": ["d", "x"]}},
                                                          "d": {"x": leaf(1)}}})))
    write(t, "huge", benc(dict(multi, **{"file tree": {"a": leaf(2 ** 43), "b": leaf(2 ** 43)}})))
    write(t, "unsorted", b"d12:meta versioni2e9:file treed1:fd0:d6:lengthi5e11:pieces root32:" + root
          + b"eee4:name1:f12:piece lengthi16384ee")
    write(t, "with_layers", benc({"info": multi, "piece layers": {root: b"\x07" * 96, b"x" * 33: b""}}))
    for k, v in v2_torrents().items():
        write(t, k, v)


def hash_messages_seeds():
    """First byte: 0 = hash request (21), 1 = hashes (22), 2 = hash reject
    (23), 3 = another id; then the payload."""
    t = "hash_messages"
    root = b"\xab" * 32
    header = lambda base, index, length, proof: root + struct.pack(">IIII", base, index, length, proof)
    write(t, "request_leaves", b"\x00" + header(0, 0, 2, 3))
    write(t, "request_pieces", b"\x00" + header(1, 0, 8, 2))
    write(t, "request_one", b"\x00" + header(0, 13, 1, 3))
    write(t, "request_out_of_range", b"\x00" + header(0, 4294967294, 2, 4294967295))
    write(t, "reject", b"\x02" + header(2, 2, 2, 0))
    write(t, "hashes_pair", b"\x01" + header(0, 2, 2, 3) + b"\x11" * 32 * 5)
    write(t, "hashes_one", b"\x01" + header(0, 5, 1, 0) + b"\x22" * 64)
    write(t, "hashes_bad_count", b"\x01" + header(0, 0, 4, 0) + b"\x33" * 32 * 3)
    write(t, "hashes_partial", b"\x01" + header(0, 0, 2, 0) + b"\x44" * 40)
    write(t, "other", b"\x03" + header(0, 0, 2, 0))


def holepunch_seeds():
    """BEP 55 ut_holepunch payloads: each type, IPv4 and IPv6, libtorrent's
    form without err_code, and broken ones."""
    t = "holepunch"
    v4 = bytes([203, 0, 113, 12]) + struct.pack(">H", 6881)
    v6 = bytes.fromhex("20010db8000000000000000000000010") + struct.pack(">H", 51413)
    write(t, "rendezvous4", b"\x00\x00" + v4 + struct.pack(">I", 0))
    write(t, "connect6", b"\x01\x01" + v6 + struct.pack(">I", 0))
    write(t, "error4_no_self", b"\x02\x00" + v4 + struct.pack(">I", 4))
    write(t, "error6_unknown", b"\x02\x01" + v6 + struct.pack(">I", 77))
    write(t, "lt_connect4_no_err", b"\x01\x00" + v4)
    write(t, "lt_rendezvous6_no_err", b"\x00\x01" + v6)
    write(t, "error_no_code", b"\x02\x00" + v4)
    write(t, "bad_type", b"\x07\x00" + v4 + b"\x00" * 4)
    write(t, "bad_addr_type", b"\x00\x05" + v4 + b"\x00" * 4)
    write(t, "short", b"\x00\x01\x20\x01")


def main():
    utp_packet_seeds()
    magnet_seeds()
    info_seeds()
    wire_seeds()
    extension_seeds()
    krpc_seeds()
    mse_seeds()
    v2_info_seeds()
    hash_messages_seeds()
    holepunch_seeds()


if __name__ == "__main__":
    main()
