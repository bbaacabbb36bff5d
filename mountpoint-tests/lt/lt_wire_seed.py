#!/usr/bin/python3
"""A libtorrent 2.0 seeder on loopback, for the peer wire integration test.

Usage: lt_wire_seed.py WORKDIR [PIECE_SIZE] [--hybrid]

Creates a few files of random bytes under WORKDIR/content (plus 250 small
files with long names so the info dictionary is about 40 KB), makes a torrent
of them with lt.create_torrent (v1 only unless --hybrid), seeds it from a
session listening on 127.0.0.1 (ephemeral port, no DHT/LSD/UPnP/NAT-PMP;
set up by ltsession.py),
then prints one JSON event line:
  {"event": "seeding", "port", "info_hash" (v1, hex), "piece_length",
   "num_pieces", "total_size", "info_size", "piece_sha1" [hex per piece]}
(or {"event": "error", "message"} and exit 1).
Piece hashes are computed here with hashlib over the file bytes and checked
against libtorrent's own. Then it reads stdin line by line:
  "connect PORT"  -> handle.connect_peer(("127.0.0.1", PORT))
  "magnet HEX PORT" -> adds a torrent by info-hash only (metadata unknown)
                     and makes it dial 127.0.0.1:PORT, to fetch the
                     metadata from us over ut_metadata (BEP 9)
  "has_metadata HEX" -> prints {"event": "has_metadata", "has_metadata": bool}
                     for that torrent
  "status"        -> prints {"event": "status", "num_peers", "total_upload"}
and exits when stdin closes.
"""
import hashlib
import os
import sys

import libtorrent as lt

import ltsession
from btcommon import emit


def fail(msg):
    emit("error", message=msg)
    sys.exit(1)


def main():
    if len(sys.argv) < 2:
        fail("usage: lt_wire_seed.py WORKDIR [PIECE_SIZE] [--hybrid]")
    workdir = sys.argv[1]
    args = sys.argv[2:]
    hybrid = "--hybrid" in args
    args = [a for a in args if a != "--hybrid"]
    piece_size = int(args[0]) if args else 32768

    content = os.path.join(workdir, "content")
    os.makedirs(content, exist_ok=True)
    # a few files; sizes chosen so files straddle piece boundaries
    for name, size in [("a.bin", 100_000), ("b/c.bin", 250_000), ("d.txt", 5_000)]:
        path = os.path.join(content, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
    # many small files with long names, so the info dictionary spans several
    # 16 KiB ut_metadata pieces (about 40 KB)
    for i in range(250):
        path = os.path.join(content, "many", "small-file-%04d-" % i + "x" * 100)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(os.urandom(1 + i * 7 % 300))

    ti, _ = ltsession.make_torrent(content, piece_size, hybrid=hybrid, creator="btfs wire test")
    fs = ti.files()

    # piece hashes computed independently (pad files are zeros)
    data = bytearray()
    for i in range(fs.num_files()):
        if fs.file_flags(i) & lt.file_storage.flag_pad_file:
            data += bytes(fs.file_size(i))
        else:
            with open(os.path.join(workdir, fs.file_path(i)), "rb") as f:
                data += f.read()
    pl = ti.piece_length()
    piece_sha1 = [hashlib.sha1(data[i * pl:(i + 1) * pl]).hexdigest()
                  for i in range(ti.num_pieces())]
    for i, h in enumerate(piece_sha1):
        theirs = ti.hash_for_piece(i)
        theirs = theirs.hex() if isinstance(theirs, bytes) else str(theirs)
        if theirs != h:
            fail("piece %d: libtorrent says %s, hashlib %s" % (i, theirs, h))
    info_section = ti.info_section()
    info_hash = ti.info_hashes().v1.to_bytes().hex()
    if hashlib.sha1(info_section).hexdigest() != info_hash:
        fail("info-hash mismatch")

    # No DHT: the router list is a placeholder (never empty).
    ses = lt.session(ltsession.settings(
        "127.0.0.1:0", "127.0.0.1:1",
        alert_mask=lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification))
    h = ses.add_torrent({"ti": ti, "save_path": workdir})
    why = ltsession.wait_seeding(ses, h, 30)
    if why:
        fail(why)

    emit("seeding",
         port=ses.listen_port(),
         info_hash=info_hash,
         piece_length=pl,
         num_pieces=ti.num_pieces(),
         total_size=ti.total_size(),
         info_size=len(info_section),
         piece_sha1=piece_sha1)

    magnets = {}
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["connect"] and len(words) == 2:
            h.connect_peer(("127.0.0.1", int(words[1])))
        elif words[:1] == ["magnet"] and len(words) == 3:
            if words[1] not in magnets:
                p = lt.parse_magnet_uri("magnet:?xt=urn:btih:" + words[1])
                p.save_path = os.path.join(workdir, "magnet-" + words[1])
                magnets[words[1]] = ses.add_torrent(p)
            magnets[words[1]].connect_peer(("127.0.0.1", int(words[2])))
        elif words[:1] == ["has_metadata"] and len(words) == 2:
            m = magnets.get(words[1])
            emit("has_metadata", has_metadata=bool(m and m.status().has_metadata))
        elif words[:1] == ["status"]:
            st = h.status()
            emit("status", num_peers=st.num_peers, total_upload=st.total_payload_upload)
        ses.pop_alerts()


if __name__ == "__main__":
    main()
