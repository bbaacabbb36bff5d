#!/usr/bin/python3
"""gateway: btfs-mount's HTTP gateway against a FUSE mount and rqbit's HTTP stream.

Runs inside a private network and mount namespace (only loopback), like
bench.py; nothing leaves the machine. Python 3 stdlib only, plus
python3-libtorrent in the seeders (mountpoint-tests/lt/ltnode.py).

  unshare --net --mount --propagation private -- sh -c \\
    'ip link set lo up && /usr/bin/python3 scripts/bench.d/gateway.py \\
       --bin target/release/btfs-mount --work /var/tmp/gw-bench [--rqbit ~/.cargo/bin/rqbit]'

`scripts/bench --gateway` runs it inside its own namespace with `--section
bench/RESULTS.md`: the rows as ratios with their goals (gateway >= rqbit in
every row, >= 90 % of FUSE throughput) replace the gateway section of
RESULTS.md. (`--out FILE` appends the plain table to FILE; `--json FILE`
writes the raw samples.)

The swarm: one libtorrent seeder per torrent, each dialled directly by
every client (btfs-mount `--no-dht --peer`, rqbit `--disable-dht` and
`initial_peers`): torrent A holds big.bin (--size-mib, 256 KiB pieces) and
small.txt; torrent B holds 50 files of 2 MiB (256 KiB pieces).

Rows (each --reps times, fresh cache every time, median and min-max):
  first byte     from starting the daemon (`btfs-mount serve` / `rqbit server
                 start`) or the mount (`btfs-mount MAGNET MNT`, background
                 mode) until small.txt has been read whole (HTTP GET, or cat).
  cold read      MB/s of reading big.bin whole, sequentially: HTTP GET read
                 with 1 MiB recv calls / 128 KiB read(2)s on the mount.
  random 4 KiB   p50 and p90 of 20 single-range 4 KiB GETs (keep-alive) at
                 random 4 KiB-aligned offsets / 20 preads on the mount; the
                 archive is opened first (small.txt), so lookup is excluded.
  50 clients     50 concurrent clients each reading a different 2 MiB file of
                 torrent B whole: aggregate MB/s and the slowest client.
"""

import argparse
import http.client
import json
import os
import queue
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
LTNODE = os.path.join(ROOT, "mountpoint-tests", "lt", "ltnode.py")
PY = "/usr/bin/python3"
KIB = 1024
MIB = 1024 * KIB
START = time.monotonic()


def log(msg):
    sys.stderr.write(f"[gateway-bench {time.monotonic() - START:6.1f}s] {msg}\n")
    sys.stderr.flush()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child with JSON events on stdout (ltnode), killed by PID."""

    def __init__(self, argv, name, logdir):
        self.name = name
        self.errpath = os.path.join(logdir, name + ".stderr")
        self.err = open(self.errpath, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, cwd=ROOT)
        self.q = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        for line in self.p.stdout:
            try:
                self.q.put(json.loads(line))
            except ValueError:
                pass
        self.q.put(None)

    def wait_event(self, name, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no {name!r} within {timeout} s")
            try:
                e = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if e is None:
                raise RuntimeError(f"{self.name} exited; see {self.errpath}")
            if e.get("event") == name:
                return e

    def stop(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
            except OSError:
                pass
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.err.close()


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def wait_until(timeout, fn, step=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(step)
    return fn()


def find_daemon(binary, mnt):
    """PID of the btfs-mount process whose command line names MNT."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if exe.startswith(binary) and mnt.encode() in args:
            return int(pid)
    return None


# ------------------------------------------------------------- HTTP readers

def http_get(port, path, headers=None, conn=None, sink=True):
    """GET; returns (status, bytes read or body). Reads with 1 MiB recv calls."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    if sink:
        buf = bytearray(MIB)
        n = 0
        while True:
            k = r.readinto(buf)
            if not k:
                break
            n += k
        out = n
    else:
        out = r.read()
    if own:
        conn.close()
    return r.status, out


def wait_http(port, timeout=30):
    def up():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False
    if not wait_until(timeout, up, 0.002):
        raise RuntimeError(f"nothing listens on {port}")


# ------------------------------------------------------------- systems

class Gateway:
    """`btfs-mount serve` (HTTP) over one fresh cache."""

    label = "btfs-mount HTTP"

    def __init__(self, b, peers):
        self.b, self.peers = b, peers

    def start(self):
        self.port = free_port()
        self.cache = self.b.fresh("cache")
        argv = [self.b.bin, "serve", "-f", "--http", f"127.0.0.1:{self.port}", "--cache-dir",
                self.cache, "--no-dht", "--no-lsd", "--timeout", "60"]
        for p in self.peers:
            argv += ["--peer", p]
        argv += self.b.extra
        self.err = open(os.path.join(self.b.logdir, f"serve-{self.b.counter}.stderr"), "wb")
        t0 = time.monotonic()
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err)
        wait_http(self.port)
        return t0

    def url(self, t, rel):
        return f"/bt/{t['info_hash']}/{t['name']}/{rel}"

    def get(self, t, rel, **kw):
        return http_get(self.port, self.url(t, rel), **kw)

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def open_archive(self, t):
        st, _ = self.get(t, "small.txt")
        assert st == 200, st

    def range_path(self, t, rel):
        return self.url(t, rel)

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.err.close()
        shutil.rmtree(self.cache, ignore_errors=True)


class Rqbit:
    """rqbit's server and its /torrents/{id}/stream/{file} (HTTP, Range)."""

    label = "rqbit HTTP stream"

    def __init__(self, b, peers, binary):
        self.b, self.peers, self.bin = b, peers, binary
        self.ids = {}

    def start(self):
        self.port = free_port()
        self.out = self.b.fresh("rqbit")
        argv = [self.bin, "--disable-dht", "--disable-dht-persistence", "--disable-upnp-port-forward",
                "--disable-lsd", "--disable-trackers", "--http-api-listen-addr",
                f"127.0.0.1:{self.port}", "--listen-port", str(free_port()),
                "server", "start", "--disable-persistence", self.out]
        self.err = open(os.path.join(self.b.logdir, f"rqbit-{self.b.counter}.stderr"), "wb")
        env = dict(os.environ, HOME=self.out, XDG_CONFIG_HOME=self.out, XDG_CACHE_HOME=self.out)
        t0 = time.monotonic()
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err,
                                  env=env)
        wait_http(self.port)
        self.ids = {}
        return t0

    def add(self, t):
        if t["info_hash"] in self.ids:
            return self.ids[t["info_hash"]]
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        q = f"/torrents?overwrite=true&initial_peers={','.join(self.peers)}"
        c.request("POST", q, body=t["magnet"].encode())
        r = c.getresponse()
        body = r.read()
        c.close()
        if r.status != 200:
            raise RuntimeError(f"rqbit add: {r.status} {body[:300]!r}")
        tid = json.loads(body)["id"]
        self.ids[t["info_hash"]] = tid
        return tid

    def file_index(self, t, rel):
        return [f["path"] for f in t["files"]].index(f"{t['name']}/{rel}")

    def range_path(self, t, rel):
        return f"/torrents/{self.add(t)}/stream/{self.file_index(t, rel)}"

    def get(self, t, rel, **kw):
        return http_get(self.port, self.range_path(t, rel), **kw)

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

    def open_archive(self, t):
        st, _ = self.get(t, "small.txt")
        assert st in (200, 206), st

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.err.close()
        shutil.rmtree(self.out, ignore_errors=True)


class Fuse:
    """`btfs-mount MAGNET MNT` (background mode) read with read(2)."""

    label = "btfs-mount FUSE"

    def __init__(self, b, peers):
        self.b, self.peers = b, peers
        self.mounts = {}

    def start(self):
        self.cache = self.b.fresh("cache")
        self.mounts = {}
        return time.monotonic()

    def mount(self, t):
        if t["info_hash"] in self.mounts:
            return self.mounts[t["info_hash"]]
        mnt = self.b.fresh("mnt")
        argv = [self.b.bin, t["magnet"], mnt, "--cache-dir", self.cache, "--no-dht", "--no-lsd"]
        for p in self.peers:
            argv += ["--peer", p]
        argv += self.b.extra
        with open(os.path.join(self.b.logdir, f"mount-{self.b.counter}.stderr"), "wb") as err:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=90)
        if r.returncode != 0 or not is_mounted(mnt):
            raise RuntimeError(f"btfs-mount failed ({r.returncode})")
        self.mounts[t["info_hash"]] = (mnt, find_daemon(self.b.bin, mnt))
        return self.mounts[t["info_hash"]]

    def path(self, t, rel):
        return os.path.join(self.mount(t)[0], t["name"], rel)

    def read(self, t, rel, block=128 * KIB):
        buf = bytearray(block)
        n = 0
        fd = os.open(self.path(t, rel), os.O_RDONLY)
        try:
            while True:
                k = os.readv(fd, [buf])
                if not k:
                    break
                n += k
        finally:
            os.close(fd)
        return n

    def open_archive(self, t):
        self.read(t, "small.txt")

    def stop(self):
        for mnt, pid in self.mounts.values():
            subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
            if not wait_until(20, lambda: not is_mounted(mnt), 0.02):
                subprocess.run(["umount", "-l", mnt], capture_output=True)
            if pid:
                wait_until(20, lambda: not os.path.exists(f"/proc/{pid}"), 0.02)
        shutil.rmtree(self.cache, ignore_errors=True)


# ------------------------------------------------------------- the bench

class Bench:
    def __init__(self, a):
        self.a = a
        self.bin = os.path.realpath(a.bin)
        self.work = a.work
        os.makedirs(self.work, exist_ok=True)
        self.logdir = os.path.join(self.work, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.counter = 0
        self.samples = {}
        self.procs = []
        self.failures = []
        # More flags for both `btfs-mount serve` and the FUSE mounts.
        self.extra = shlex.split(a.btfs_args or "")

    def fresh(self, kind):
        self.counter += 1
        d = os.path.join(self.work, f"{kind}-{self.counter}")
        os.makedirs(d)
        return d

    def add(self, key, v):
        self.samples.setdefault(key, []).append(v)

    def setup(self):
        size = self.a.size_mib * MIB
        a = os.path.join(self.work, "seed", "gw-big")
        os.makedirs(a)
        log(f"writing {self.a.size_mib} MiB of random data and 50 x 2 MiB files")
        with open(os.path.join(a, "big.bin"), "wb") as f:
            left = size
            while left:
                n = min(left, 8 * MIB)
                f.write(os.urandom(n))
                left -= n
        self.small = b"btfs-mount gateway bench: the first-byte file.\n" * 300
        with open(os.path.join(a, "small.txt"), "wb") as f:
            f.write(self.small)
        bdir = os.path.join(self.work, "seed", "gw-many")
        os.makedirs(bdir)
        for i in range(50):
            with open(os.path.join(bdir, f"f{i:02}.bin"), "wb") as f:
                f.write(os.urandom(2 * MIB))
        with open(os.path.join(bdir, "small.txt"), "wb") as f:
            f.write(self.small)
        self.size = size
        self.t = {}
        self.peers = []
        for key, d in (("big", a), ("many", bdir)):
            p = Proc([PY, LTNODE, "--seed", d, "--piece-size", str(256 * KIB)]
                     + shlex.split(self.a.seeder_args or ""), f"seed-{key}", self.logdir)
            self.procs.append(p)
            ready = p.wait_event("ready", 30)
            self.t[key] = p.wait_event("torrent", 300)
            p.wait_event("seeding", 600)
            self.peers.append(f"127.0.0.1:{ready['port']}")
        log("seeders ready")

    def rqbit_path(self):
        return self.a.rqbit or os.path.expanduser("~/.cargo/bin/rqbit")

    def systems(self):
        out = [Gateway(self, self.peers), Fuse(self, self.peers)]
        if self.a.only:
            out = [x for x in out if x.label in self.a.only.split(",")]
        rq = self.rqbit_path()
        if self.a.only and "rqbit HTTP stream" not in self.a.only.split(","):
            pass
        elif os.path.exists(rq) and not self.a.no_rqbit:
            out.append(Rqbit(self, self.peers, rq))
        else:
            log("rqbit not found: its rows are skipped")
        return out

    def first_byte(self, s):
        t = self.t["big"]
        t0 = s.start()
        try:
            if isinstance(s, Fuse):
                n = s.read(t, "small.txt")
            else:
                if isinstance(s, Rqbit):
                    s.add(t)
                _, n = s.get(t, "small.txt")
            el = time.monotonic() - t0
            assert n == len(self.small), n
            return el
        finally:
            s.stop()

    def cold(self, s):
        t = self.t["big"]
        s.start()
        try:
            t0 = time.monotonic()
            if isinstance(s, Fuse):
                s.mount(t)
                t0 = time.monotonic()
                n = s.read(t, "big.bin")
            else:
                if isinstance(s, Rqbit):
                    s.add(t)
                st, n = s.get(t, "big.bin")
                assert st in (200, 206), st
            el = time.monotonic() - t0
            if n != self.size:
                log(f"{s.label}: cold read ended after {n} of {self.size} bytes")
                self.failures.append(f"{s.label}, cold read: the body ended after {n} of "
                                     f"{self.size} bytes; MB/s counts what arrived")
            return n / el / 1e6
        finally:
            s.stop()

    def random(self, s, seed):
        t = self.t["big"]
        rng = random.Random(seed)
        offs = [rng.randrange(0, (self.size - 4 * KIB) // (4 * KIB)) * 4 * KIB for _ in range(20)]
        s.start()
        out = []
        try:
            s.open_archive(t)
            if isinstance(s, Fuse):
                fd = os.open(s.path(t, "big.bin"), os.O_RDONLY)
                try:
                    for o in offs:
                        t0 = time.monotonic()
                        d = os.pread(fd, 4 * KIB, o)
                        out.append(time.monotonic() - t0)
                        assert len(d) == 4 * KIB
                finally:
                    os.close(fd)
            else:
                c = s.conn()
                path = s.range_path(t, "big.bin")
                for o in offs:
                    t0 = time.monotonic()
                    st, body = http_get(0, path, {"Range": f"bytes={o}-{o + 4 * KIB - 1}"}, conn=c,
                                        sink=False)
                    out.append(time.monotonic() - t0)
                    assert st == 206 and len(body) == 4 * KIB, (st, len(body))
                c.close()
            return out
        finally:
            s.stop()

    def many(self, s):
        t = self.t["many"]
        s.start()
        try:
            s.open_archive(t)
            nc = self.a.clients
            done = [None] * nc
            errors = []

            def one(i):
                t1 = time.monotonic()
                try:
                    if self.a.many_with == "processes":
                        n = self.read_by_process(s, t, f"f{i:02}.bin")
                    elif isinstance(s, Fuse):
                        n = s.read(t, f"f{i:02}.bin")
                    else:
                        _, n = s.get(t, f"f{i:02}.bin")
                    assert n == 2 * MIB, n
                    done[i] = time.monotonic() - t1
                except Exception as e:  # reported below
                    errors.append(repr(e))
            if isinstance(s, Fuse):
                s.mount(t)
            if isinstance(s, Rqbit):
                s.add(t)
            t0 = time.monotonic()
            th = [threading.Thread(target=one, args=(i,)) for i in range(nc)]
            for x in th:
                x.start()
            for x in th:
                x.join()
            el = time.monotonic() - t0
            ok = [d for d in done if d is not None]
            if errors:
                log(f"{s.label}: {len(errors)} of {nc} clients failed: {errors[0]}")
                self.failures.append(f"{s.label}, {nc} clients: {len(errors)} of {nc} failed "
                                     f"({errors[0]}); MB/s counts the bytes of the others")
            return len(ok) * 2 * MIB / el / 1e6, max(ok) if ok else float("nan")
        finally:
            s.stop()

    def read_by_process(self, s, t, rel):
        """Bytes read by one client process: `curl` for HTTP, `cat` for FUSE
        (--many-with processes: no Python in the clients' data path)."""
        if isinstance(s, Fuse):
            argv = ["sh", "-c", 'cat "$1" | wc -c', "sh", s.path(t, rel)]
        else:
            argv = ["curl", "-sS", "--max-time", "120", "-o", "/dev/null", "-w",
                    "%{size_download}", f"http://127.0.0.1:{s.port}{s.range_path(t, rel)}"]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=150)
        if r.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {r.returncode}: {r.stderr.strip()[:200]}")
        return int(r.stdout.strip() or 0)

    def run(self):
        self.setup()
        systems = self.systems()
        for rep in range(self.a.reps):
            for s in systems:
                log(f"rep {rep + 1}: {s.label}")
                rows = self.a.rows.split(",")
                if "first" in rows:
                    self.add(("first", s.label), self.first_byte(s))
                if "cold" in rows:
                    self.add(("cold", s.label), self.cold(s))
                if "random" in rows:
                    for v in self.random(s, 1000 + rep):
                        self.add(("rand", s.label), v)
                if "many" in rows:
                    mbs, slowest = self.many(s)
                    self.add(("many", s.label), mbs)
                    self.add(("many_slowest", s.label), slowest)
                    log(f"  {self.a.clients} clients: {mbs:.0f} MB/s, slowest {slowest:.2f} s")
        return systems

    def stop(self):
        for p in self.procs:
            p.stop()


def fmt(samples, unit, scale=1.0, digits=2):
    v = [x * scale for x in samples if x == x]  # NaN: every client of that run failed
    if not v:
        return "failed"
    return f"{statistics.median(v):.{digits}f} {unit} ({min(v):.{digits}f}-{max(v):.{digits}f})"


def pct(samples, q):
    v = sorted(samples)
    return v[min(len(v) - 1, int(q * len(v)))]


def table(b, systems):
    labels = [s.label for s in systems]
    S = b.samples
    rows = [
        ("first byte (s, lower is better)", lambda L: fmt(S[("first", L)], "s", digits=3)),
        ("cold sequential read (MB/s)", lambda L: fmt(S[("cold", L)], "MB/s", digits=0)),
        ("random 4 KiB p50 / p90 (ms)", lambda L: f"{pct(S[('rand', L)], .5) * 1e3:.2f} / "
                                                  f"{pct(S[('rand', L)], .9) * 1e3:.2f} ms"),
        ("50 clients, aggregate (MB/s)", lambda L: fmt(S[("many", L)], "MB/s", digits=0)),
        ("50 clients, slowest client (s)", lambda L: fmt(S[("many_slowest", L)], "s", digits=2)),
    ]
    out = ["| row | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]

    def safe(f, L):
        try:
            return f(L)
        except (KeyError, IndexError, statistics.StatisticsError):
            return "n/a"
    for name, f in rows:
        out.append(f"| {name} | " + " | ".join(safe(f, L) for L in labels) + " |")
    gw = "btfs-mount HTTP"
    med = lambda k, L: statistics.median(S[(k, L)])
    out.append("")
    if not all(("cold", L) in S and ("many", L) in S and ("first", L) in S and ("rand", L) in S
               for L in labels):
        return "\n".join(out)
    if gw in labels and "btfs-mount FUSE" in labels:
        out.append(f"HTTP / FUSE cold throughput: "
                   f"{med('cold', gw) / med('cold', 'btfs-mount FUSE'):.0%} (goal >= 90 %)")
    if "rqbit HTTP stream" in labels and gw in labels:
        rq = "rqbit HTTP stream"
        checks = [
            ("first byte", med("first", gw) <= med("first", rq)),
            ("cold read", med("cold", gw) >= med("cold", rq)),
            ("random p50", pct(S[("rand", gw)], .5) <= pct(S[("rand", rq)], .5)),
            ("50 clients", med("many", gw) >= med("many", rq)),
        ]
        out.append("gateway vs rqbit: " + ", ".join(
            f"{n} {'met' if ok else 'MISSED'}" for n, ok in checks))
    return "\n".join(out)


GW, FU, RQ = "btfs-mount HTTP", "btfs-mount FUSE", "rqbit HTTP stream"


def section(b, systems, started, load_before, load_after):
    """The gateway section of RESULTS.md: each row for the three systems,
    the gateway's ratios to FUSE and to rqbit, the goals, met or not."""
    import sections
    S = b.samples
    labels = [s.label for s in systems]
    have_rq = RQ in labels
    med = statistics.median

    def vals(k, L):
        return [x for x in S.get((k, L), []) if x == x]

    def stat(k, L, q=None):
        v = vals(k, L)
        if not v:
            return None
        return pct(v, q) if q is not None else med(v)

    def cell(k, L, unit, digits, scale=1.0, q=None):
        if L not in labels:
            return "rqbit not installed" if L == RQ else "n/a"
        v = vals(k, L)
        if not v:
            return "failed"
        if q is not None:
            return f"{pct(v, q) * scale:.{digits}f}"
        v = [x * scale for x in v]
        return f"{med(v):.{digits}f} ({min(v):.{digits}f}–{max(v):.{digits}f})"

    def r(k, L, q=None):
        a, c = stat(k, GW, q), stat(k, L, q) if L in labels else None
        return a / c if a is not None and c else None

    def f2(x):
        # A ratio over 100 means the other side delivered next to nothing
        # (its clients timed out; see the problems under the table).
        if x is not None and x > 100:
            return "> 100 (other side stalled)"
        return "n/a" if x is None else f"{x:.2f}"

    def yes(x):
        return "n/a" if x is None else ("yes" if x else "**no**")

    rows = []
    # (title, key, unit digits scale q, higher is better, FUSE goal?)
    specs = [
        ("first byte: start → small.txt read (ms)", "first", 1, 1000, None, False, False),
        (f"cold sequential read of {b.size // MIB} MiB (MB/s)", "cold", 0, 1, None, True, True),
        ("random 4 KiB range p50 (ms)", "rand", 2, 1000, .5, False, False),
        ("random 4 KiB range p90 (ms)", "rand", 2, 1000, .9, False, None),
        (f"{b.a.clients} clients, different 2 MiB files: aggregate (MB/s)", "many", 0, 1, None,
         True, True),
        (f"{b.a.clients} clients: slowest client (s)", "many_slowest", 2, 1, None, False, None),
    ]
    for title, k, digits, scale, q, higher, fuse_goal in specs:
        rf, rr = r(k, FU, q), (r(k, RQ, q) if have_rq else None)
        goals, mets = [], []
        if fuse_goal is None:
            pass
        else:
            if fuse_goal:
                goals.append("≥ 90 % of FUSE")
                mets.append(None if rf is None else rf >= 0.9)
            if higher:
                goals.append("≥ rqbit")
                mets.append(None if rr is None else rr >= 1)
            else:
                goals.append("≤ rqbit")
                mets.append(None if rr is None else rr <= 1)
        rows.append((title, cell(k, GW, "", digits, scale, q), cell(k, FU, "", digits, scale, q),
                     cell(k, RQ, "", digits, scale, q), f2(rf), f2(rr), "; ".join(goals),
                     "; ".join(yes(m) for m in mets)))
    head = ("metric", "gateway (HTTP)", "FUSE cat", "rqbit HTTP stream", "gateway/FUSE",
            "gateway/rqbit", "goal", "met")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(x) + " |" for x in rows]
    rq_v = "not installed"
    if have_rq:
        try:
            rq_v = subprocess.run([b.rqbit_path(), "--version"], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            rq_v = "?"
    bm_v = subprocess.run([b.bin, "--version"], capture_output=True, text=True).stdout.strip()
    md = [sections.begin("gateway", "--gateway"), "", "## HTTP gateway (btfs-mount serve)", ""]
    md.append(f"Written by `scripts/bench --gateway` on "
              f"{time.strftime('%Y-%m-%d %H:%M %Z', started)} ({bm_v}; rqbit: {rq_v}); "
              f"{b.a.reps} repetitions, the three systems taking turns in the same run "
              f"(`scripts/bench.d/gateway.py`, whose docstring defines each row). One "
              f"python3-libtorrent seeder per torrent (256 KiB pieces), dialled directly by "
              f"every client (`--no-dht --peer`; rqbit `--disable-dht` and `initial_peers`); "
              f"fresh cache each time. Cells: median (min–max); random reads: nearest-rank "
              f"percentiles over {b.a.reps}×20 samples. MB/s = 10^6 bytes/s. Ratios are "
              f"gateway / other (for times, lower is better).\n")
    md.append("\n".join(lines) + "\n")
    if b.a.btfs_args or b.a.seeder_args:
        md.append(f"Flags: btfs-mount `{b.a.btfs_args or ''}`, seeders (ltnode.py) "
                  f"`{b.a.seeder_args or ''}`.\n")
    md.append(f"Load average before {load_before}, after {load_after} (shared machine).\n")
    for f in b.failures:
        md.append(f"- problem: {f}")
    if b.failures:
        md.append("")
    md.append("<details><summary>Raw samples (gateway)</summary>\n")
    md.append("```json")
    md.append(json.dumps({f"{k[0]}/{k[1]}": v for k, v in S.items()}, sort_keys=True)
              .replace("], ", "],\n "))
    md.append("```\n</details>\n")
    md.append(sections.end("gateway"))
    return "\n".join(md)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True, help="the btfs-mount binary (release build)")
    p.add_argument("--work", required=True, help="scratch directory (created; deleted at the end)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--size-mib", type=int, default=512)
    p.add_argument("--rqbit", help="rqbit binary (default ~/.cargo/bin/rqbit when present)")
    p.add_argument("--no-rqbit", action="store_true")
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (at most 50)")
    p.add_argument("--many-with", choices=("threads", "processes"), default="threads",
                   help="the concurrent clients: Python threads (http.client, read(2)), "
                        "or one curl / cat process each")
    p.add_argument("--btfs-args", metavar="FLAGS",
                   help="more flags for btfs-mount serve and the FUSE mounts (e.g. --no-utp)")
    p.add_argument("--seeder-args", metavar="FLAGS",
                   help="more flags for the libtorrent seeders (ltnode.py), e.g. --utp-only: "
                        "every client then reads over uTP")
    p.add_argument("--rows", default="first,cold,random,many",
                   help="comma-separated rows to measure (default: all)")
    p.add_argument("--only", help="comma-separated system labels to run (default: all)")
    p.add_argument("--out", help="append the table (markdown) to this file")
    p.add_argument("--json", help="write the raw samples here")
    p.add_argument("--section", metavar="RESULTS_MD",
                   help="rewrite the gateway section of this RESULTS.md (ratios, goals)")
    p.add_argument("--keep-logs", metavar="DIR", help="copy the processes' logs here")
    a = p.parse_args()
    if [n for _, n in socket.if_nameindex() if n != "lo"]:
        sys.exit("gateway.py: run me inside a private network namespace (only lo), see --help")
    b = Bench(a)
    started = time.localtime()
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    sec = None
    try:
        systems = b.run()
        t = table(b, systems)
        load_after = " ".join(open("/proc/loadavg").read().split()[:3])
        sec = section(b, systems, started, load_before, load_after)
        if b.failures:
            t += "\n\nFailures:\n" + "\n".join(f"- {f}" for f in b.failures)
    finally:
        b.stop()
        if a.keep_logs:
            shutil.copytree(b.logdir, a.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(a.work, ignore_errors=True)
    print(t)
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n### HTTP gateway (scripts/bench.d/gateway.py)\n\n" + t + "\n")
    if a.section and sec:
        sys.path.insert(0, HERE)
        import sections
        sections.write(a.section, "gateway", sec)
        log(f"wrote the gateway section of {a.section}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({f"{k[0]}/{k[1]}": v for k, v in b.samples.items()}, f, indent=1)


if __name__ == "__main__":
    main()
