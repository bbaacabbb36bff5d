#!/usr/bin/python3
"""python3-libtorrent 2.0.8 as the other side of the BEP 52 (v2) tests.

Usage:
  lt_v2_peer.py check TORRENT DATA_PARENT PIECE_SIZE v2|hybrid
      No session, no socket. Loads TORRENT (bytes made by btfs) with
      lt.torrent_info and prints what libtorrent sees: v1 and v2 info-hashes,
      per file its path, size, offset and `pieces root`. Then makes its own
      torrent of the same files (lt.add_files on DATA_PARENT's one entry,
      create_torrent with PIECE_SIZE and the flavour, set_piece_hashes) and
      prints its info dictionary, its .torrent without the creation date
      (hex) and its roots too. One JSON line.
  lt_v2_peer.py seed TORRENT SAVE_PATH
      Seeds TORRENT (a whole .torrent with piece layers) from SAVE_PATH on
      127.0.0.1 (ephemeral port, TCP only, no encryption, no DHT/LSD/UPnP/
      NAT-PMP); prints {"port"} once seeding, then waits for stdin to close.
  lt_v2_peer.py leech INFO SAVE_PATH PORT
      Adds the torrent from INFO (the raw info dictionary only: no piece
      layers, so libtorrent must fetch them with hash requests) and dials
      127.0.0.1:PORT (again every 2 s) until it has every piece or 60 s pass.
      Prints {"progress", "state", "num_pieces", "total_pieces", "errors",
      "events" (hash failures, bans, disconnections), "missing"} when done.
"""
import json
import os
import sys
import time

import libtorrent as lt

SETTINGS = {
    "listen_interfaces": "127.0.0.1:0",
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "enable_outgoing_utp": False,
    "enable_incoming_utp": False,
    "out_enc_policy": 2,
    "in_enc_policy": 2,
    "allow_multiple_connections_per_ip": True,
    "alert_mask": lt.alert.category_t.error_notification
    | lt.alert.category_t.status_notification,
}


def files_of(ti):
    fs = ti.files()
    out = []
    for i in range(fs.num_files()):
        pad = bool(fs.file_flags(i) & lt.file_storage.flag_pad_file)
        out.append({
            "path": fs.file_path(i),
            "size": fs.file_size(i),
            "offset": fs.file_offset(i),
            "pad": pad,
            "root": fs.root(i).to_bytes().hex(),
        })
    return out


def check(torrent, parent, piece_size, flavour):
    ti = lt.torrent_info(open(torrent, "rb").read())
    ih = ti.info_hashes()
    ours = {
        "v1": ih.v1.to_bytes().hex() if ih.has_v1() else None,
        "v2": ih.v2.to_bytes().hex() if ih.has_v2() else None,
        "files": files_of(ti),
        "num_pieces": ti.num_pieces(),
    }
    fs = lt.file_storage()
    (entry,) = os.listdir(parent)
    lt.add_files(fs, os.path.join(parent, entry))
    flags = lt.create_torrent.v2_only if flavour == "v2" else 0
    ct = lt.create_torrent(fs, piece_size, flags=flags)
    lt.set_piece_hashes(ct, parent)
    made = ct.generate()
    their_ti = lt.torrent_info(made)
    outer = {b"info": made[b"info"]}
    if b"piece layers" in made:
        outer[b"piece layers"] = made[b"piece layers"]
    print(json.dumps({
        "ours": ours,
        "theirs_info": lt.bencode(made[b"info"]).hex(),
        "theirs_torrent": lt.bencode(outer).hex(),
        "theirs_files": files_of(their_ti),
    }), flush=True)


def wait_listening(ses):
    deadline = time.time() + 30
    while ses.listen_port() == 0:
        if time.time() > deadline:
            raise SystemExit("not listening")
        time.sleep(0.05)


def seed(torrent, save_path):
    ses = lt.session(SETTINGS)
    ti = lt.torrent_info(open(torrent, "rb").read())
    h = ses.add_torrent({"ti": ti, "save_path": save_path})
    deadline = time.time() + 30
    alerts = []
    while h.status().state != lt.torrent_status.seeding:
        alerts += [a.message() for a in ses.pop_alerts()]
        if time.time() > deadline:
            st = h.status()
            print(json.dumps({"error": "not seeding: %s %s" % (st.state, st.progress),
                              "alerts": alerts[:20],
                              "files": [(r, f) for r, _, f in os.walk(save_path)]}),
                  flush=True)
            return
        time.sleep(0.05)
    wait_listening(ses)
    print(json.dumps({"port": ses.listen_port()}), flush=True)
    for _ in sys.stdin:
        ses.pop_alerts()


def leech(info, save_path, port):
    ses = lt.session(SETTINGS)
    ti = lt.torrent_info(b"d4:info" + open(info, "rb").read() + b"e")
    h = ses.add_torrent({"ti": ti, "save_path": save_path})
    errors = []
    events = []
    deadline = time.time() + 60
    last_dial = 0
    while time.time() < deadline:
        if time.time() - last_dial > 2:
            h.connect_peer(("127.0.0.1", port))
            last_dial = time.time()
        for a in ses.pop_alerts():
            if a.category() & lt.alert.category_t.error_notification:
                errors.append(a.message())
            elif isinstance(a, (lt.hash_failed_alert, lt.peer_ban_alert,
                                lt.peer_disconnected_alert)):
                events.append(a.message())
        st = h.status()
        if st.is_seeding or st.num_pieces == ti.num_pieces():
            break
        time.sleep(0.1)
    st = h.status()
    print(json.dumps({
        "progress": st.progress,
        "state": str(st.state),
        "num_pieces": st.num_pieces,
        "total_pieces": ti.num_pieces(),
        "errors": errors[:20],
        "events": events[:20],
        "missing": [i for i, have in enumerate(st.pieces) if not have],
    }), flush=True)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "check" and len(sys.argv) == 6:
        check(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif mode == "seed" and len(sys.argv) == 4:
        seed(sys.argv[2], sys.argv[3])
    elif mode == "leech" and len(sys.argv) == 5:
        leech(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
