#!/usr/bin/python3
"""bep46_lt_get: read a BEP 44 mutable item with libtorrent (2.0.8).

Starts a libtorrent session on loopback (set up by ltsession.py) whose DHT
bootstraps from --bootstrap (never the public routers), calls
`dht_get_mutable_item(public_key, salt)` until an item arrives or --timeout
passes, and prints one JSON line with the highest-seq item libtorrent
returned: {"public_key", "salt", "seq", "v" (the bencoded value, hex),
"sig", "ih" (hex, when v is {ih: <20 bytes>}), "verified"}. libtorrent
accepts only items whose signature verifies; "verified" re-checks it here
with python3-cryptography over the BEP 44 signed buffer. Prints
{"error": ...} and exits 1 when nothing arrives.

The 2.0.8 binding cannot convert a dictionary value (`alert.item` raises);
then the value is rebuilt from `alert.message()`, which prints a BEP 46
value as `{ 'ih': '<40 hex>' }`; the signature check proves the rebuilt
bytes are the ones signed.
"""

import argparse
import json
import re
import sys
import time
import warnings

import libtorrent as lt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import ltsession
from btcommon import signed_buffer

warnings.simplefilter("ignore", DeprecationWarning)


def as_bytes(x):
    """The binding gives some byte fields as str (latin-1) and some as bytes."""
    return x.encode("latin-1") if isinstance(x, str) else bytes(x)


def value_of(alert):
    """The item's raw bencoded value, or None."""
    try:
        return lt.bencode(alert.item)
    except Exception:  # noqa: BLE001 - the binding cannot convert dictionaries
        pass
    msg = alert.message()
    m = re.search(r"\[ \{\s*'ih': '([^']*)' \} \]", msg)
    if not m:
        return None
    text = m.group(1)
    if re.fullmatch(r"[0-9a-f]{40}", text):
        ih = bytes.fromhex(text)  # libtorrent prints binary strings as hex
    else:
        ih = text.encode("latin-1")
    return b"d2:ih%d:%se" % (len(ih), ih)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--public-key", required=True, help="64 hex")
    p.add_argument("--salt", default="", help="hex")
    p.add_argument("--bootstrap", action="append", required=True, help="HOST:PORT, repeatable")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--want-seq", type=int, default=None,
                   help="stop as soon as an item with at least this seq arrives")
    args = p.parse_args(argv)
    pk = bytes.fromhex(args.public_key)
    salt = bytes.fromhex(args.salt)
    ses = lt.session(ltsession.settings(
        "127.0.0.1:0", ",".join(args.bootstrap), dht=True,
        alert_mask=lt.alert.category_t.dht_notification | lt.alert.category_t.error_notification))
    best = None
    deadline = time.monotonic() + args.timeout
    last_ask = 0.0
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now - last_ask > 2.0 and (best is None or not best["authoritative"]):
            ses.dht_get_mutable_item(pk, salt)
            last_ask = now
        ltsession.wait_for_alerts(ses, 200)
        for a in ses.pop_alerts():
            if not isinstance(a, lt.dht_mutable_item_alert):
                continue
            if a.seq == 0 and not as_bytes(a.signature).strip(b"\0"):
                continue  # no item (libtorrent reports an empty one)
            v_raw = value_of(a)
            if v_raw is None:
                sys.stderr.write("cannot read the item's value: %s\n" % a.message())
                continue
            if best is None or a.seq > best["seq"] or a.authoritative:
                best = {"seq": a.seq, "v": v_raw, "sig": as_bytes(a.signature),
                        "key": as_bytes(a.key), "salt": as_bytes(a.salt),
                        "authoritative": a.authoritative}
        if best is not None and (best["authoritative"]
                                 or (args.want_seq is not None and best["seq"] >= args.want_seq)):
            break
    if best is None:
        print(json.dumps({"error": "no item within %.0f s" % args.timeout}), flush=True)
        return 1
    try:
        Ed25519PublicKey.from_public_bytes(best["key"]).verify(
            best["sig"], signed_buffer(best["salt"], best["seq"], best["v"]))
        verified = True
    except InvalidSignature:
        verified = False
    v = best["v"]
    ih = None
    if v.startswith(b"d2:ih20:") and len(v) == 8 + 20 + 1:
        ih = v[8:28].hex()
    print(json.dumps({"public_key": best["key"].hex(), "salt": best["salt"].hex(),
                      "seq": best["seq"], "v": v.hex(), "sig": best["sig"].hex(),
                      "ih": ih, "verified": verified,
                      "authoritative": best["authoritative"]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
