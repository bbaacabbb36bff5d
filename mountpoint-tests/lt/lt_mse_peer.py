#!/usr/bin/python3
"""A libtorrent 2.0 seeder on loopback with a chosen encryption policy, for
the MSE interop test (tests/mse_libtorrent.rs).

Usage: lt_mse_peer.py WORKDIR ENC
  ENC = forced   : out_enc_policy = in_enc_policy = pe_forced (0),
                   allowed_enc_level = pe_rc4 (2): MSE with RC4 only
        enabled  : libtorrent's defaults (pe_enabled, pe_both, prefer_rc4 off)
        disabled : out_enc_policy = in_enc_policy = pe_disabled (2): no MSE

Writes WORKDIR/content/data.bin (300 000 random bytes), makes a v1 torrent of
it (32 KiB pieces), seeds it from a session on 127.0.0.1 (ephemeral port,
TCP only: uTP off so a dial goes straight to TCP; no DHT, LSD, UPnP,
NAT-PMP), then prints one JSON line:
  {"port", "info_hash" (hex), "piece_length", "num_pieces", "total_size",
   "data_path"}
Then reads stdin line by line:
  "connect PORT" -> handle.connect_peer(("127.0.0.1", PORT))
  "enc ENC"      -> applies another policy (same meanings as above)
  "peers"        -> prints {"peers": [{"port", "rc4", "plaintext_encrypted"}]}
and exits when stdin closes. Peer errors and disconnects go to stderr.
"""
import json
import os
import select
import sys
import time

import libtorrent as lt


def fail(msg):
    print(json.dumps({"error": msg}), flush=True)
    sys.exit(1)


def enc_settings(enc):
    if enc == "forced":
        return {"out_enc_policy": 0, "in_enc_policy": 0, "allowed_enc_level": 2}
    if enc == "enabled":
        return {"out_enc_policy": 1, "in_enc_policy": 1, "allowed_enc_level": 3,
                "prefer_rc4": False}
    if enc == "disabled":
        return {"out_enc_policy": 2, "in_enc_policy": 2, "allowed_enc_level": 3}
    fail("unknown encryption policy %r" % enc)


def main():
    if len(sys.argv) != 3:
        fail("usage: lt_mse_peer.py WORKDIR forced|enabled|disabled")
    workdir, enc = sys.argv[1], sys.argv[2]
    content = os.path.join(workdir, "content")
    os.makedirs(content, exist_ok=True)
    data_path = os.path.join(content, "data.bin")
    with open(data_path, "wb") as f:
        f.write(os.urandom(300_000))

    fs = lt.file_storage()
    lt.add_files(fs, data_path)
    ct = lt.create_torrent(fs, 32768, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(ct, content)
    ti = lt.torrent_info(ct.generate())

    settings = {
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.error_notification
                      | lt.alert.category_t.status_notification
                      | lt.alert.category_t.peer_notification
                      | lt.alert.category_t.connect_notification,
    }
    settings.update(enc_settings(enc))
    ses = lt.session(settings)
    h = ses.add_torrent({"ti": ti, "save_path": content})
    deadline = time.time() + 30
    while h.status().state != lt.torrent_status.seeding or ses.listen_port() == 0:
        if time.time() > deadline:
            fail("not seeding after 30 s: %s" % h.status().state)
        time.sleep(0.05)

    print(json.dumps({
        "port": ses.listen_port(),
        "info_hash": ti.info_hashes().v1.to_bytes().hex(),
        "piece_length": ti.piece_length(),
        "num_pieces": ti.num_pieces(),
        "total_size": ti.total_size(),
        "data_path": data_path,
    }), flush=True)

    while True:
        for a in ses.pop_alerts():
            if isinstance(a, (lt.peer_error_alert, lt.peer_disconnected_alert,
                              lt.peer_connect_alert)):
                print("lt: %s" % a.message(), file=sys.stderr, flush=True)
        ready, _, _ = select.select([sys.stdin], [], [], 0.1)
        if not ready:
            continue
        line = sys.stdin.readline()
        if not line:
            return
        words = line.split()
        if words[:1] == ["connect"] and len(words) == 2:
            h.connect_peer(("127.0.0.1", int(words[1])))
        elif words[:1] == ["enc"] and len(words) == 2:
            ses.apply_settings(enc_settings(words[1]))
        elif words[:1] == ["peers"]:
            peers = []
            for p in h.get_peer_info():
                peers.append({
                    "port": p.ip[1],
                    "rc4": bool(p.flags & lt.peer_info.rc4_encrypted),
                    "plaintext_encrypted":
                        bool(p.flags & lt.peer_info.plaintext_encrypted),
                })
            print(json.dumps({"peers": peers}), flush=True)


if __name__ == "__main__":
    main()
