#!/usr/bin/python3
"""A libtorrent 2.0 seeder on loopback with a chosen encryption policy, for
the MSE interop test (tests/mse_libtorrent.rs).

Usage: lt_mse_peer.py WORKDIR ENC
  ENC = forced   : out_enc_policy = in_enc_policy = pe_forced (0),
                   allowed_enc_level = pe_rc4 (2): MSE with RC4 only
        enabled  : libtorrent's defaults (pe_enabled, pe_both, prefer_rc4 off)
        disabled : out_enc_policy = in_enc_policy = pe_disabled (2): no MSE

Writes WORKDIR/content/data.bin (300 000 random bytes), makes a v1 torrent of
it (32 KiB pieces), seeds it from a session on 127.0.0.1 (set up by
ltsession.py; ephemeral port, TCP only: uTP off so a dial goes straight to
TCP; no DHT, LSD, UPnP, NAT-PMP), then prints one JSON event line:
  {"event": "seeding", "port", "info_hash" (hex), "piece_length",
   "num_pieces", "total_size", "data_path"}
(or {"event": "error", "message"} and exit 1). Then reads stdin line by line:
  "connect PORT" -> handle.connect_peer(("127.0.0.1", PORT))
  "enc ENC"      -> applies another policy (same meanings as above)
  "peers"        -> prints {"event": "peers", "peers": [{"port", "rc4",
                    "plaintext_encrypted"}]}
and exits when stdin closes. Peer errors and disconnects go to stderr.
"""
import os
import select
import sys

import libtorrent as lt

import ltsession
from btcommon import emit


def fail(msg):
    emit("error", message=msg)
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

    ti, _ = ltsession.make_torrent(data_path, 32768, creator="btfs mse test")

    # No DHT: the router list is a placeholder (never empty).
    settings = ltsession.settings(
        "127.0.0.1:0", "127.0.0.1:1",
        alert_mask=lt.alert.category_t.error_notification
        | lt.alert.category_t.status_notification
        | lt.alert.category_t.peer_notification
        | lt.alert.category_t.connect_notification)
    settings["enable_outgoing_utp"] = False
    settings["enable_incoming_utp"] = False
    settings.update(enc_settings(enc))
    ses = lt.session(settings)
    h = ses.add_torrent({"ti": ti, "save_path": content})
    why = ltsession.wait_seeding(ses, h, 30)
    if why:
        fail(why)

    emit("seeding",
         port=ses.listen_port(),
         info_hash=ti.info_hashes().v1.to_bytes().hex(),
         piece_length=ti.piece_length(),
         num_pieces=ti.num_pieces(),
         total_size=ti.total_size(),
         data_path=data_path)

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
            emit("peers", peers=peers)


if __name__ == "__main__":
    main()
