"""btcommon: what btfs-mount's test scripts share, libtorrent aside.

Standard library only (python3-cryptography is imported by `ed25519_keys`
when it is called). The libtorrent session setup is in ltsession.py.

- bencode (BEP 3): `encode`, `decode`, `Raw` (bytes already bencoded);
- BEP 44: `signed_buffer`, `ed25519_keys`;
- JSON events on stdout (`emit`) and stamped logs on stderr (`log`);
- `parse_hostport` ("HOST:PORT" arguments);
- stopping: `Stop`, `watch_stdin` (end of a stdin pipe), `die_with_parent`.
"""

import ctypes
import hashlib
import json
import os
import signal
import stat
import struct
import sys
import threading
import time

START = time.monotonic()
NAME = os.path.splitext(os.path.basename(sys.argv[0] or "python"))[0]
_OUT = threading.Lock()


# --- bencode ---------------------------------------------------------------

class Raw(bytes):
    """Bytes that are already bencoded: `encode` inserts them as they are,
    `decode` returns them for the keys it is told to keep raw."""


def encode(x):
    """Bencodes ints, bytes, str (UTF-8), lists and dicts (keys sorted as raw
    bytes); a `Raw` value goes in as is. TypeError on anything else (a bool
    too: it is no bencode integer)."""
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
        return b"l" + b"".join(encode(i) for i in x) + b"e"
    if isinstance(x, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in x.items())
        return b"d" + b"".join(encode(k) + encode(v) for k, v in items) + b"e"
    raise TypeError(type(x))


def decode(buf, i=0, raw_keys=(), depth=0):
    """Decodes the one value at buf[i:]; returns (value, end).

    Lenient where libtorrent is: dictionary keys in any order, a repeated key
    keeps its first value, a key that is not a string is skipped. Strict
    where it must be: ValueError (or IndexError) on truncated or malformed
    input, and on nesting deeper than 200. A dictionary value under a key in
    `raw_keys` (bytes) comes back as `Raw`, its exact bytes: what an
    info-hash or a BEP 44 signature is computed over.
    """
    if depth > 200:
        raise ValueError("too deep")
    c = buf[i:i + 1]
    if c == b"i":
        end = buf.index(b"e", i)
        return int(buf[i + 1:end]), end + 1
    if c == b"l":
        i += 1
        out = []
        while buf[i:i + 1] != b"e":
            if i >= len(buf):
                raise ValueError("truncated")
            v, i = decode(buf, i, raw_keys, depth + 1)
            out.append(v)
        return out, i + 1
    if c == b"d":
        i += 1
        out = {}
        while buf[i:i + 1] != b"e":
            if i >= len(buf):
                raise ValueError("truncated")
            k, i = decode(buf, i, raw_keys, depth + 1)
            start = i
            v, i = decode(buf, i, raw_keys, depth + 1)
            if isinstance(k, bytes) and k not in out:
                out[k] = Raw(buf[start:i]) if k in raw_keys else v
        return out, i + 1
    if c.isdigit():
        colon = buf.index(b":", i)
        n = int(buf[i:colon])
        s = buf[colon + 1:colon + 1 + n]
        if len(s) != n:
            raise ValueError("truncated string")
        return s, colon + 1 + n
    raise ValueError("bad bencode at %d" % i)


# --- BEP 44 ----------------------------------------------------------------

def signed_buffer(salt, seq, v_raw):
    """BEP 44 "signature verification": the salt (if any), seq and the
    bencoded value `v_raw`, as signed."""
    out = b""
    if salt:
        out += b"4:salt" + encode(salt)
    return out + b"3:seqi%de1:v" % seq + v_raw


def ed25519_keys(seed):
    """From a 32-byte ed25519 seed: (python3-cryptography private key, the
    32-byte public key, libtorrent's 64-byte secret key: SHA-512(seed),
    clamped as ref10 does)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    sk = Ed25519PrivateKey.from_private_bytes(seed)
    pk = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    h = bytearray(hashlib.sha512(seed).digest())
    h[0] &= 248
    h[31] &= 63
    h[31] |= 64
    return sk, pk, bytes(h)


# --- events and logs -------------------------------------------------------

def emit(event, **fields):
    """Writes one JSON event line {"event": EVENT, FIELDS..} on stdout and
    flushes it (one line at a time, whichever thread calls)."""
    line = json.dumps({"event": event, **fields})
    with _OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def log(message):
    """Writes one log line on stderr: `NAME[pid] SECONDS message`, seconds
    since the script started."""
    sys.stderr.write(f"{NAME}[{os.getpid()}] {time.monotonic() - START:7.3f} {message}\n")
    sys.stderr.flush()


# ---- BitTorrent wire (BEP 3, BEP 10), for the scripted peers ----------------

PROTOCOL = b"\x13BitTorrent protocol"


def handshake(info_hash, peer_id):
    """The 68-byte BitTorrent handshake, with the BEP 10 extension bit."""
    reserved = bytearray(8)
    reserved[5] |= 0x10  # BEP 10 extension protocol
    return PROTOCOL + bytes(reserved) + info_hash + peer_id


def msg(mid, payload=b""):
    """One length-prefixed peer message: id `mid`, then `payload`."""
    return struct.pack(">IB", 1 + len(payload), mid) + payload


def recv_exact(sock, n):
    """Exactly `n` bytes from `sock`, or None if it closes first."""
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_messages(sock, on_message, who, max_length=1 << 21):
    """Reads length-prefixed peer messages (BEP 3) from `sock`, calling
    on_message(id, payload) for each (keep-alives skipped), until the peer
    closes the connection (True) or sends a length over `max_length` bytes
    (False, logged with `who`: the caller then closes it)."""
    while True:
        head = recv_exact(sock, 4)
        if head is None:
            return True
        (length,) = struct.unpack(">I", head)
        if length > max_length:
            log(f"{who}: message of {length} bytes")
            return False
        body = recv_exact(sock, length) if length else b""
        if body is None:
            return True
        if length:
            on_message(body[0], body[1:])


def parse_hostport(text):
    """"HOST:PORT" (or "[V6]:PORT") as (host, port); ValueError if it is
    not one, or the port is not in 1..65535."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host.strip("[]"), int(port)


# --- stopping --------------------------------------------------------------

class Stop:
    """Set by a signal or by stdin closing; a main loop polls `reason`, or
    sleeps in `wait`."""

    def __init__(self):
        self.reason = None
        self.event = threading.Event()

    def set(self, reason):
        if self.reason is None:
            self.reason = reason
        self.event.set()

    def wait(self, seconds):
        """Sleeps up to `seconds`; True if a stop was asked for."""
        return self.event.wait(seconds)


def watch_stdin(on_close):
    """Calls `on_close()` from a thread once stdin, if it is a pipe or a
    socket, reaches end of file: a test that dies (closing our stdin) leaves
    no orphan behind. With stdin a terminal or /dev/null nothing is
    watched."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return

    def run():
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        on_close()

    threading.Thread(target=run, daemon=True, name="stdin-watch").start()


def die_with_parent():
    """Asks the kernel to send us SIGTERM when our parent dies
    (PR_SET_DEATHSIG); exits at once if it is already gone."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:
            sys.exit(0)
    except OSError:
        pass
