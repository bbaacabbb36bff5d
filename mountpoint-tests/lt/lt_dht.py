#!/usr/bin/python3
"""libtorrent DHT nodes for btfs's DHT tests, driven over stdin/stdout.

Usage: lt_dht.py --nodes N --base-port P --bootstrap HOST:PORT[,HOST:PORT...]

Starts N libtorrent sessions on 127.0.0.1:P..P+N-1 with the DHT on, every
session bootstrapping from the given nodes and from each other (set up by
ltsession.py, which keeps libtorrent on loopback). Then reads one JSON
command per line on stdin and answers with JSON lines on stdout:

  {"cmd":"announce","node":i,"ih":HEX40}               -> {"event":"announced","port":P}
      (adds a torrent without metadata; libtorrent announces it with port P)
  {"cmd":"get_peers","node":i,"ih":HEX40}              -> {"event":"peers","peers":["ip:port",...]}
  {"cmd":"get_mutable","node":i,"pk":HEX64,"salt":HEX} -> {"event":"mutable","found":bool,"seq":n,
        "value_hex":HEX of the bencoded v,"sig_valid":bool,"message":str}
  {"cmd":"put_mutable","node":i,"seed":HEX64,"value":STR,"salt":HEX}
                                                       -> {"event":"put","num_success":n,"seq":n}
  {"cmd":"raw_put","addr":"ip:port","seed":HEX64,"salt":HEX,"seq":n,"v_hex":HEX,"cas":n|null,
        "sig_hex":HEX|null}                            -> {"event":"raw_put","reply":{...}}
      (raw KRPC get + put to one node, signed with python3-cryptography, so
       any bencoded value, e.g. a BEP 46 {ih: ...}, can be stored)
  {"cmd":"nodes","node":i}                             -> {"event":"nodes","count":n}
  {"cmd":"quit"}

Exits when stdin closes, on "quit", or on SIGTERM; asks the kernel to send
it SIGTERM when its parent dies, so no orphan is left.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time

import libtorrent as lt

import ltsession
from btcommon import Raw, decode, die_with_parent, ed25519_keys, emit, encode, signed_buffer


def to_json(x):
    if isinstance(x, bytes):
        try:
            s = x.decode()
            if s.isprintable():
                return s
        except UnicodeDecodeError:
            pass
        return "hex:" + x.hex()
    if isinstance(x, list):
        return [to_json(i) for i in x]
    if isinstance(x, dict):
        return {to_json(k): to_json(v) for k, v in x.items()}
    return x


# --- keys ------------------------------------------------------------------
def keys(seed_hex):
    """(private key, public key, libtorrent's 64-byte secret) of a seed."""
    return ed25519_keys(bytes.fromhex(seed_hex))


def verify(pk, sig, buf):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, buf)
        return True
    except Exception:
        return False


# --- libtorrent sessions ---------------------------------------------------
def make_session(port, bootstrap):
    return lt.session(ltsession.settings(
        "127.0.0.1:%d" % port, bootstrap, dht=True, announce_interval=5,
        alert_mask=lt.alert.category_t.all_categories))


def wait_alert(ses, kind, timeout, pred=lambda a: True):
    end = time.time() + timeout
    found = None
    while time.time() < end:
        ltsession.wait_for_alerts(ses, 200)
        for a in ses.pop_alerts():
            if isinstance(a, kind) and pred(a):
                found = a
                if not isinstance(a, lt.dht_mutable_item_alert) or a.authoritative:
                    return a
    return found


def raw_put(cmd):
    host, port = cmd["addr"].rsplit(":", 1)
    addr = (host, int(port))
    sk, pk, _ = keys(cmd["seed"])
    salt = bytes.fromhex(cmd.get("salt") or "")
    v = bytes.fromhex(cmd["v_hex"])
    seq = int(cmd["seq"])
    my_id = os.urandom(20)
    target = hashlib.sha1(pk + salt).digest()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(3)
    sock.bind(("127.0.0.1", 0))

    def rpc(tid, q, a):
        sock.sendto(encode({"t": tid, "y": "q", "q": q, "a": a}), addr)
        data, _ = sock.recvfrom(4096)
        return decode(data)[0]

    r = rpc(b"g1", "get", {"id": my_id, "target": target})
    token = r[b"r"][b"token"]
    sig = sk.sign(signed_buffer(salt, seq, v))
    if cmd.get("sig_hex"):
        sig = bytes.fromhex(cmd["sig_hex"])
    a = {"id": my_id, "k": pk, "seq": seq, "sig": sig, "token": token, "v": Raw(v)}
    if salt:
        a["salt"] = salt
    if cmd.get("cas") is not None:
        a["cas"] = int(cmd["cas"])
    r = rpc(b"p1", "put", a)
    sock.close()
    return to_json(r)


# Save path of the magnet-style torrents `announce` adds (they never get
# data); deleted however the script ends (end of stdin, quit, SIGTERM, the
# parent's death).
SCRATCH = tempfile.mkdtemp(prefix="lt_dht_")


def leave():
    """Deletes SCRATCH and exits at once (libtorrent's threads are not
    joined: os._exit)."""
    shutil.rmtree(SCRATCH, ignore_errors=True)
    os._exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--base-port", type=int, required=True)
    ap.add_argument("--bootstrap", default="")
    args = ap.parse_args()
    die_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: leave())

    ports = [args.base_port + i for i in range(args.nodes)]
    boot = [b for b in args.bootstrap.split(",") if b]
    boot += ["127.0.0.1:%d" % p for p in ports]
    sessions = []
    for i, p in enumerate(ports):
        others = [b for b in boot if b != "127.0.0.1:%d" % p]
        ses = make_session(p, ",".join(others))
        sessions.append(ses)
    for ses in sessions:
        for b in boot:
            h, pt = b.rsplit(":", 1)
            ses.add_dht_node((h, int(pt)))
    emit("ready", ports=ports)

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            cmd = json.loads(line)
            c = cmd["cmd"]
            ses = sessions[cmd.get("node", 0)]
            if c == "quit":
                break
            elif c == "announce":
                # The binding cannot build dht_announce's flags, so add a
                # magnet-style torrent: libtorrent announces it to the DHT
                # every dht_announce_interval with its listen port.
                atp = lt.add_torrent_params()
                atp.info_hashes = lt.info_hash_t(lt.sha1_hash(bytes.fromhex(cmd["ih"])))
                atp.save_path = SCRATCH
                ses.add_torrent(atp)
                emit("announced", port=ses.listen_port())
            elif c == "get_peers":
                ih = bytes.fromhex(cmd["ih"])
                ses.pop_alerts()
                ses.dht_get_peers(lt.sha1_hash(ih))
                a = wait_alert(ses, lt.dht_get_peers_reply_alert, 30,
                               lambda a: a.info_hash.to_bytes() == ih)
                peers = ["%s:%d" % p for p in a.peers()] if a else []
                emit("peers", peers=peers)
            elif c == "get_mutable":
                pk = bytes.fromhex(cmd["pk"])
                salt = bytes.fromhex(cmd.get("salt") or "")
                ses.pop_alerts()
                ses.dht_get_mutable_item(pk, salt)
                a = wait_alert(ses, lt.dht_mutable_item_alert, 30)
                res = {"found": False}
                if a is not None and a.seq > 0:
                    res["found"] = True
                    res["seq"] = a.seq
                    res["authoritative"] = a.authoritative
                    res["message"] = a.message()
                    sig = a.signature
                    sig = sig.encode("latin-1") if isinstance(sig, str) else bytes(sig)
                    try:
                        item = a.item
                        v = encode(item.encode("latin-1") if isinstance(item, str) else item)
                        res["value_from"] = "item"
                    except Exception as e:
                        # The binding cannot convert a dictionary value; read
                        # it from the alert's message, where libtorrent shows
                        # {'key': 'value'} with binary strings in hex. The
                        # signature check below catches a wrong reading.
                        res["item_error"] = repr(e)
                        pairs = re.findall(r"'([^']*)': '([^']*)'", a.message())
                        d = {}
                        for k, val in pairs:
                            try:
                                d[k.encode()] = bytes.fromhex(val)
                            except ValueError:
                                d[k.encode()] = val.encode()
                        v = encode(d)
                        res["value_from"] = "message"
                    res["value_hex"] = v.hex()
                    res["sig_valid"] = verify(pk, sig, signed_buffer(salt, a.seq, v))
                emit("mutable", **res)
            elif c == "put_mutable":
                _, pk, sk64 = keys(cmd["seed"])
                salt = bytes.fromhex(cmd.get("salt") or "")
                ses.pop_alerts()
                ses.dht_put_mutable_item(sk64, pk, cmd["value"], salt)
                a = wait_alert(ses, lt.dht_put_alert, 60)
                emit("put", num_success=a.num_success if a else -1, seq=a.seq if a else -1)
            elif c == "raw_put":
                emit("raw_put", reply=raw_put(cmd))
            elif c == "nodes":
                ses.post_dht_stats()
                a = wait_alert(ses, lt.dht_stats_alert, 5)
                n = sum(b["num_nodes"] for b in a.routing_table) if a else -1
                emit("nodes", count=n)
            else:
                emit("error", error="unknown command %s" % c)
        except Exception as e:
            emit("error", error=repr(e))
    leave()


if __name__ == "__main__":
    main()
