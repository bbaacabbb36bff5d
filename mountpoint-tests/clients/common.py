"""Shared plumbing of the interop client drivers in this directory.

Each driver (transmission.py, aria2.py, rqbit.py; webtorrent.mjs is the
same contract in JavaScript) runs one other BitTorrent client as a test
peer for btfs-mount and reports what happens as JSON event lines on stdout,
one object per line, flushed at once; human-readable logs go to stderr.
The events, shared by every driver:

  ready      client, version, port (peer TCP listen port), rpc_port (or
             null), pid (of the client process the driver started, or of
             the driver itself when the client runs in-process)
  torrent    info_hash (40 hex), magnet, name, total_size (bytes);
             a seeder after adding, a fetcher once it has the metadata
  seeding    info_hash                 (a seeder checked every piece)
  progress   info_hash, state, done, total (bytes), peers, download_rate,
             upload_rate (bytes/s), uploaded (bytes); about once a second,
             on change
  finished   info_hash, seconds (since the download was added)
  error      message
  exit       reason

A driver stops on SIGTERM or SIGINT, and when its stdin is a pipe that
closes (so a test that dies leaves no orphan behind), stopping the client
it started by PID.
"""

import hashlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

# The test scripts' shared plumbing (events, logs, stopping, HOST:PORT) and
# libtorrent session setup live in ../lt/ (btcommon.py, ltsession.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lt"))
from btcommon import Stop, emit, log, watch_stdin  # noqa: E402,F401  (re-exported)
from btcommon import encode as bencode  # noqa: E402,F401  (re-exported)
from btcommon import parse_hostport as host_port  # noqa: E402,F401  (re-exported)


def install_stop():
    """A Stop set by SIGTERM, SIGINT, or stdin (a pipe) reaching EOF."""
    stop = Stop()
    signal.signal(signal.SIGTERM, lambda *_: stop.set("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: stop.set("SIGINT"))
    watch_stdin(lambda: stop.set("stdin closed"))
    return stop


def free_port(ip="0.0.0.0"):
    """A port free for TCP and UDP on `ip` at the time of the call."""
    for _ in range(100):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind((ip, 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind((ip, port))
        except OSError:
            continue
        finally:
            u.close()
            t.close()
        return port
    raise RuntimeError("no free TCP+UDP port")


def host_port(s):
    """'HOST:PORT' (or '[v6]:PORT') -> (host, port)."""
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {s!r}")
    return host.strip("[]"), int(port)


def wait_port(host, port, timeout):
    """Wait until a TCP connect to host:port succeeds; True if it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def make_torrent(path, piece_size=0):
    """A v1 .torrent of `path` (a directory or a file), made by
    python3-libtorrent 2.0.8 (Debian): returns (bytes, info_hash hex, bare
    magnet, name, total size in bytes). Used by clients that cannot make torrents themselves (aria2)
    or only through a separate tool."""
    import ltsession  # imports libtorrent: only the drivers that need it

    ti, data = ltsession.make_torrent(path, piece_size, creator="btfs-mount interop driver")
    ih = str(ti.info_hashes().v1)
    return data, ih, f"magnet:?xt=urn:btih:{ih}", ti.name(), ti.total_size()


def sha256_tree(root):
    """{relative path: sha256 hex} of every regular file under `root`
    (or {basename: sha256} when `root` is a file)."""
    out = {}
    if os.path.isfile(root):
        files = [(os.path.basename(root), root)]
    else:
        files = []
        for d, _, names in os.walk(root):
            for n in names:
                p = os.path.join(d, n)
                files.append((os.path.relpath(p, root), p))
    for rel, p in sorted(files):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        out[rel] = h.hexdigest()
    return out


def kill_child(proc, grace=3.0):
    """SIGTERM the process we started (by PID), SIGKILL after `grace`."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired
        proc.kill()
        proc.wait()


def pdeathsig():
    """preexec_fn: the client dies with its driver (PR_SET_PDEATHSIG)."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


class Progress:
    """Emits `progress` about once a second, and only when it changed."""

    def __init__(self):
        self.last = None
        self.at = 0.0

    def report(self, **fields):
        now = time.monotonic()
        key = tuple(sorted((k, v) for k, v in fields.items() if not k.endswith("_rate")))
        if key == self.last and now - self.at < 5.0:
            return
        if now - self.at < 1.0:
            return
        self.last, self.at = key, now
        emit("progress", **fields)


class Run:
    """One run of a driver: its Stop (install_stop), a scratch directory
    `tmp` (made with `prefix`), and `proc`, the client process once the
    driver has started it (stopped by PID at the end)."""

    def __init__(self, prefix):
        self.stop = install_stop()
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.proc = None

    def drive(self, body):
        """Calls body(self) and gives the driver's exit code: body's own
        when it returns one (a failure it reported), else, once it returned
        on stop, 0 after the `exit` event. An exception becomes an `error`
        event and 1. Whatever happens, the client is stopped and `tmp`
        removed."""
        try:
            code = body(self)
            if code is not None:
                return code
            log(f"stopping: {self.stop.reason}")
            emit("exit", reason=self.stop.reason)
            return 0
        except Exception as e:  # noqa: BLE001 - reported as an event, then exit 1
            emit("error", message=f"{type(e).__name__}: {e}")
            return 1
        finally:
            kill_child(self.proc)
            shutil.rmtree(self.tmp, ignore_errors=True)


def completed(seed, info_hash, added):
    """The event of a torrent just complete: `seeding` for a seeder (`seed`
    true: it checked every piece), else `finished` with the seconds since
    `added` (a time.monotonic())."""
    if seed:
        emit("seeding", info_hash=info_hash)
    else:
        emit("finished", info_hash=info_hash, seconds=round(time.monotonic() - added, 3))


def exit_with(main):
    """A driver's `__main__`: exits with main(argv)'s code; a closed stdout
    (the test went away) is a clean exit."""
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(0)
