#!/usr/bin/python3
"""bench: btfs-mount against btfs, plain libtorrent and bindfs, on one local swarm.

Run by scripts/bench inside a private network and mount namespace (only
loopback exists); it never reaches outside the machine. Python 3 stdlib
only, plus python3-libtorrent in the seeder (swarm.py) and ltnode.py.

The swarm: one libtorrent seeder (swarm.py, built on ltnode.py's loopback
settings) seeding the same 1 GiB file (plus a small file) as two torrents,
with 256 KiB and 4 MiB pieces; it is also a DHT node, and two more
libtorrent DHT nodes (swarm.py without torrents) make a small local DHT.

What is measured, each `--reps` times, reported as median (min-max):
  first byte   btfs-mount MAGNET MNT --bootstrap SEEDER (default background
               mode: the command returns once mounted), from starting the
               command until `cat MNT/NAME/small.txt` returns. DHT lookup and
               metadata exchange included; fresh cache dir each time.
               btfs: from starting `btfs T.torrent MNT` (it takes no
               bootstrap node and no peer) until `cat` returns; the seeder is
               told to dial btfs's port at once (retry every 0.25 s).
  cold read    read the 1 GiB file with 128 KiB read(2) calls (what cat
               does) into nothing; fresh cache dir, page cache cold for this
               file. MB/s = 10^6 bytes/s. btfs is capped (see --btfs-cap-*).
               libtorrent: ltnode --fetch T.torrent --connect SEEDER (TCP,
               plaintext), 1 GiB / seconds from adding the torrent to having
               every piece checked (its `finished` event).
  cached read  the same read on a fresh btfs-mount mount of a cache dir that
               holds every piece (--no-dht and no peer: the data can only
               come from the cache), after `echo 3 > drop_caches`; bindfs of
               the seeder's directory and the plain file likewise.
  random read  fresh mount and fresh cache dir each repetition, then 20
               pread(2)s of 4 KiB at random 4 KiB-aligned offsets of the
               1 GiB file (the same offsets for btfs-mount and btfs); p50 and
               p90 over all repetitions' samples.
  RSS / CPU    of the mount process (the background daemon) of each cold
               read, read from /proc/PID/status VmHWM and /proc/PID/stat
               utime+stime just before unmounting; CPU is also given per GiB
               read (btfs reads less than 1 GiB).
"""

import argparse
import json
import os
import platform
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
LTNODE = os.path.join(ROOT, "mountpoint-tests", "lt", "ltnode.py")
SWARM = os.path.join(HERE, "swarm.py")
PY = "/usr/bin/python3"
KIB = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB
CLK_TCK = os.sysconf("SC_CLK_TCK")
START = time.monotonic()


def log(msg):
    sys.stderr.write(f"[bench {time.monotonic() - START:6.1f}s] {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- processes

class Proc:
    """A child process with JSON events on stdout (ltnode / swarm), killed by PID."""

    def __init__(self, argv, name, logdir):
        self.name = name
        self.errpath = os.path.join(logdir, name + ".stderr")
        self.err = open(self.errpath, "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.err, cwd=ROOT)
        self.q = queue.Queue()
        threading.Thread(target=self._reader, daemon=True).start()
        self.events = []

    def _reader(self):
        for line in self.p.stdout:
            try:
                self.q.put(json.loads(line))
            except ValueError:
                pass
        self.q.put(None)

    def wait_event(self, name, timeout, pred=lambda e: True):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{self.name}: no {name!r} event within {timeout} s; "
                                   f"stderr tail:\n{tail(self.errpath)}")
            try:
                e = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if e is None:
                raise RuntimeError(f"{self.name} exited (rc {self.p.wait()}); stderr tail:\n"
                                   f"{tail(self.errpath)}")
            self.events.append(e)
            if e.get("event") == name and pred(e):
                return e

    def send(self, line):
        self.p.stdin.write((line + "\n").encode())
        self.p.stdin.flush()

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


def tail(path, n=30):
    try:
        with open(path, "rb") as f:
            return b"".join(f.readlines()[-n:]).decode(errors="replace")
    except OSError:
        return ""


def proc_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


LAST_ANON = {}


def proc_usage(pid):
    """(peak RSS in bytes from VmHWM, CPU seconds utime+stime) of a live process.

    Also keeps its current RssAnon (bytes) in LAST_ANON[pid]: libtorrent maps
    the files it writes, so its VmHWM counts file pages as well."""
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * KIB
            elif line.startswith("RssAnon:"):
                LAST_ANON[pid] = int(line.split()[1]) * KIB
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (stat fields 14, 15)
    return hwm, cpu


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if line.split()[4].replace("\\040", " ") == path:
                return True
    return False


def wait_until(timeout, fn, step=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(step)
    return fn()


KILLED = []


def unmount(mnt, pid, timeout=20):
    """Unmount MNT and wait for the process PID to exit (killed after timeout;
    such kills are listed in KILLED and reported)."""
    if is_mounted(mnt):
        r = subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["umount", mnt], capture_output=True)
    if not wait_until(timeout, lambda: not is_mounted(mnt), 0.02):
        subprocess.run(["umount", "-l", mnt], capture_output=True)
    if pid and not wait_until(timeout, lambda: not proc_alive(pid), 0.02):
        log(f"pid {pid} still alive {timeout} s after unmount: SIGKILL")
        KILLED.append(f"{os.path.basename(os.path.realpath(f'/proc/{pid}/exe'))} (pid {pid}, "
                      f"{mnt}) had not exited {timeout} s after its unmount: killed")
        os.kill(pid, signal.SIGKILL)
        wait_until(5, lambda: not proc_alive(pid), 0.02)


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        log(f"cannot drop caches: {e}")
        return False


# ---------------------------------------------------------------- readers

def read_file(path, max_bytes=None, max_seconds=None, block=128 * KIB):
    """Read PATH with BLOCK-byte read(2)s, like cat; returns (bytes, seconds).

    Stops early after max_bytes or once max_seconds have passed (checked
    between reads)."""
    buf = bytearray(block)
    total = 0
    t0 = time.monotonic()
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            n = os.readv(fd, [buf])
            if n == 0:
                break
            total += n
            if max_bytes is not None and total >= max_bytes:
                break
            if max_seconds is not None and time.monotonic() - t0 >= max_seconds:
                break
    finally:
        os.close(fd)
    return total, time.monotonic() - t0


def random_offsets(size, n, seed):
    rng = random.Random(seed)
    return [rng.randrange(0, (size - 4 * KIB) // (4 * KIB)) * 4 * KIB for _ in range(n)]


def random_reads(path, offsets, expect=None):
    """pread 4 KiB at each offset; latencies in seconds. `expect(off)` gives the bytes."""
    out = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for off in offsets:
            t0 = time.monotonic()
            data = os.pread(fd, 4 * KIB, off)
            out.append(time.monotonic() - t0)
            if expect is not None and data != expect(off):
                raise RuntimeError(f"wrong data at offset {off} of {path}")
    finally:
        os.close(fd)
    return out


# ---------------------------------------------------------------- systems under test

class Bench:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.logdir = os.path.join(self.work, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.bin = os.path.realpath(args.bin)
        self.procs = []
        self.results = {}  # key -> list of samples
        self.notes = []
        self.counter = 0
        self.last_pid = None
        # More btfs-mount flags for every mount (compare.py's variants).
        self.extra_args = []

    def fresh(self, kind):
        self.counter += 1
        d = os.path.join(self.work, f"{kind}-{self.counter}")
        os.makedirs(d)
        return d

    def add(self, key, value):
        self.results.setdefault(key, []).append(value)

    # -- setup --------------------------------------------------------------
    def make_data(self):
        size = self.args.size_mib * MIB
        self.size = size
        src = os.path.join(self.work, "data", "big.bin")
        os.makedirs(os.path.dirname(src))
        log(f"writing {self.args.size_mib} MiB of random data")
        with open(src, "wb") as f:
            left = size
            while left:
                n = min(left, 8 * MIB)
                f.write(os.urandom(n))
                left -= n
        self.small = b"btfs-mount bench: a small file for the first-byte test.\n" * 300
        self.dirs = {}
        for label, piece in (("256k", 256 * KIB), ("4m", 4 * MIB)):
            d = os.path.join(self.work, "seed", f"bench-{label}")
            os.makedirs(d)
            os.link(src, os.path.join(d, "big.bin"))
            with open(os.path.join(d, "small.txt"), "wb") as f:
                f.write(self.small)
            self.dirs[label] = (d, piece)
        self.src = src

    def start_swarm(self):
        ports = free_ports(3)
        self.seed_port = ports[0]
        boot = [f"127.0.0.1:{p}" for p in ports]
        argv = [PY, SWARM, "--listen-port", str(ports[0]), "--torrent-dir",
                os.path.join(self.work, "torrents")]
        for b in boot[1:]:
            argv += ["--bootstrap", b]
        for label, (d, piece) in self.dirs.items():
            argv += ["--seed", f"{d}:{piece}"]
        self.dht = []
        for i, p in enumerate(ports[1:]):
            node = Proc([PY, SWARM, "--listen-port", str(p), "--torrent-dir", self.work]
                        + sum((["--bootstrap", b] for b in boot if b != f"127.0.0.1:{p}"), []),
                        f"dht{i}", self.logdir)
            self.procs.append(node)
            node.wait_event("ready", 20)
            self.dht.append(node)
        self.swarm = Proc(argv, "swarm", self.logdir)
        self.procs.append(self.swarm)
        self.swarm.wait_event("ready", 20)
        log("seeder hashing the torrents")
        self.torrents = {}
        for label in self.dirs:
            e = self.swarm.wait_event("torrent", 300)
            lab = "256k" if e["piece_length"] == 256 * KIB else "4m"
            self.torrents[lab] = e
        self.swarm.wait_event("seeding", 60)
        # Wait until the seeder's announces reached the other DHT nodes.
        for ih in [t["info_hash"] for t in self.torrents.values()]:
            for node in self.dht:
                if not any(x.get("event") == "dht_announce" and x.get("info_hash") == ih
                           for x in node.events):
                    node.wait_event("dht_announce", 60, lambda e, ih=ih: e["info_hash"] == ih)
        log("swarm ready: " + ", ".join(f"{k}={v['info_hash']}" for k, v in self.torrents.items()))

    def uploaded(self, label):
        """Payload bytes the seeder has sent for this torrent so far."""
        self.swarm.send("stats")
        e = self.swarm.wait_event("stats", 10)
        return e["upload"][self.torrents[label]["info_hash"]]

    def stop_all(self):
        for p in reversed(self.procs):
            p.stop()

    # -- btfs-mount --------------------------------------------------------
    def bm_mount(self, label, cache, offline=False, port=None):
        """Run btfs-mount in background mode; returns (daemon pid, seconds the command took)."""
        t = self.torrents[label]
        mnt = self.fresh("mnt")
        argv = [self.bin, t["magnet"], mnt, "--cache-dir", cache]
        if port is not None:
            argv += ["--port", str(port)]
        if offline:
            argv += ["--no-dht"]
        else:
            argv += ["--bootstrap", f"127.0.0.1:{self.seed_port}"]
        argv += self.extra_args
        t0 = time.monotonic()
        with open(os.path.join(self.logdir, f"btfs-mount-{self.counter}.stderr"), "wb") as err:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, timeout=90)
        took = time.monotonic() - t0
        if r.returncode != 0 or not is_mounted(mnt):
            raise RuntimeError(f"btfs-mount failed (rc {r.returncode}): "
                               f"{tail(err.name)}")
        pid = find_daemon(self.bin, mnt)
        return mnt, pid, took, t0

    def bm_first_byte(self, label):
        cache = self.fresh("cache")
        t = self.torrents[label]
        mnt, pid, took, t0 = self.bm_mount(label, cache)
        path = os.path.join(mnt, t["name"], "small.txt")
        out = subprocess.run(["cat", path], capture_output=True).stdout
        elapsed = time.monotonic() - t0
        if out != self.small:
            raise RuntimeError("btfs-mount: small.txt differs")
        unmount(mnt, pid)
        shutil.rmtree(cache)
        return elapsed, took

    def bm_cold(self, label, keep):
        cache = self.fresh("cache")
        t = self.torrents[label]
        up0 = self.uploaded(label)
        mnt, pid, _, _ = self.bm_mount(label, cache)
        n, secs = read_file(os.path.join(mnt, t["name"], "big.bin"))
        if n != self.size:
            raise RuntimeError(f"btfs-mount read {n} bytes of {self.size}")
        rss, cpu = proc_usage(pid)
        self.last_pid = pid
        unmount(mnt, pid)
        sent = self.uploaded(label) - up0
        if not keep:
            shutil.rmtree(cache)
        return n / secs, rss, cpu, cache, sent / n

    def bm_cached(self, label, cache):
        t = self.torrents[label]
        mnt, pid, took, _ = self.bm_mount(label, cache, offline=True)
        self.add(f"bm_cached_mount_{label}", took)
        drop_caches()
        path = os.path.join(mnt, t["name"], "big.bin")
        n, secs = read_file(path)
        if n != self.size:
            raise RuntimeError(f"btfs-mount (cached) read {n} bytes of {self.size}")
        # The first read hashed every piece it served (cached pieces are
        # verified lazily after a mount); a second open of the now verified
        # file is served by FUSE passthrough.
        drop_caches()
        n2, secs2 = read_file(path)
        if n2 != self.size:
            raise RuntimeError(f"btfs-mount (cached, again) read {n2} bytes of {self.size}")
        unmount(mnt, pid)
        return n / secs, n2 / secs2

    def bm_upload(self, label, cache):
        """libtorrent downloads the torrent from a btfs-mount mount whose cache
        holds all of it (no other peer): MB/s as libtorrent measures it."""
        port = free_ports(1)[0]
        mnt, pid, _, _ = self.bm_mount(label, cache, offline=True, port=port)
        save = self.fresh("ltsave")
        node = Proc([PY, LTNODE, "--fetch", self.torrents[label]["torrent_file"], "--save", save,
                     "--connect", f"127.0.0.1:{port}", "--no-utp", "--no-encryption"],
                    f"ltfetch-from-bm-{self.counter}", self.logdir)
        try:
            e = node.wait_event("finished", 600)
        finally:
            node.stop()
        shutil.rmtree(save)
        unmount(mnt, pid)
        return self.size / e["seconds"]

    def bm_random(self, label, offsets):
        cache = self.fresh("cache")
        t = self.torrents[label]
        mnt, pid, _, _ = self.bm_mount(label, cache)
        up0 = self.uploaded(label)
        lat = random_reads(os.path.join(mnt, t["name"], "big.bin"), offsets, self.expect)
        # Give requests still in flight a moment to arrive before counting.
        time.sleep(0.5)
        sent = self.uploaded(label) - up0
        unmount(mnt, pid)
        shutil.rmtree(cache)
        self.add(f"bm_random_sent_per_read_{label}", sent / len(offsets))
        return lat

    def expect(self, off):
        with open(self.src, "rb") as f:
            f.seek(off)
            return f.read(4 * KIB)

    # -- btfs (Debian) -----------------------------------------------------
    def btfs_start(self, label):
        t = self.torrents[label]
        mnt = self.fresh("mnt")
        data = self.fresh("btfsdata")
        port = free_ports(1)[0]
        argv = ["btfs", "-f", f"--data-directory={data}", f"--min-port={port}",
                f"--max-port={port}", t["torrent_file"], mnt]
        err = open(os.path.join(self.logdir, f"btfs-{self.counter}.log"), "wb")
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        err.close()
        # btfs takes no bootstrap node and no peer: the seeder dials it.
        self.swarm.send(f"connect {t['info_hash']} 127.0.0.1:{port}")
        if not wait_until(30, lambda: is_mounted(mnt) or p.poll() is not None):
            raise RuntimeError("btfs did not mount")
        if p.poll() is not None:
            raise RuntimeError(f"btfs exited with {p.returncode}: {tail(err.name)}")
        return p, mnt, data, port, t0

    def btfs_stop(self, p, mnt, data):
        unmount(mnt, p.pid, timeout=5)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        shutil.rmtree(data, ignore_errors=True)

    def wait_connected(self, label, port, timeout=30):
        ih = self.torrents[label]["info_hash"]
        self.swarm.wait_event("connect_done", timeout,
                              lambda e: e["info_hash"] == ih and e["addr"].endswith(f":{port}"))

    def btfs_first_byte(self, label):
        t = self.torrents[label]
        p, mnt, data, port, t0 = self.btfs_start(label)
        path = os.path.join(mnt, t["name"], "small.txt")
        # btfs lists the files only once its torrent is added (asynchronously
        # after mounting): until then the path does not exist; retry.
        out = b""
        deadline = t0 + 60
        while time.monotonic() < deadline:
            r = subprocess.run(["cat", path], capture_output=True)
            if r.returncode == 0:
                out = r.stdout
                break
            time.sleep(0.005)
        elapsed = time.monotonic() - t0
        ok = out == self.small
        self.wait_connected(label, port)
        self.btfs_stop(p, mnt, data)
        if not ok:
            raise RuntimeError("btfs: small.txt differs or never came")
        return elapsed

    def btfs_cold(self, label):
        t = self.torrents[label]
        p, mnt, data, port, _ = self.btfs_start(label)
        self.wait_connected(label, port)
        path = os.path.join(mnt, t["name"], "big.bin")
        wait_until(30, lambda: os.path.exists(path), 0.01)
        n, secs = read_file(path, max_bytes=self.args.btfs_cap_mib * MIB,
                            max_seconds=self.args.btfs_cap_seconds)
        rss, cpu = proc_usage(p.pid)
        self.last_pid = p.pid
        self.btfs_stop(p, mnt, data)
        return n, secs, rss, cpu

    def btfs_random(self, label, offsets):
        t = self.torrents[label]
        p, mnt, data, port, _ = self.btfs_start(label)
        self.wait_connected(label, port)
        path = os.path.join(mnt, t["name"], "big.bin")
        wait_until(30, lambda: os.path.exists(path), 0.01)
        lat = random_reads(path, offsets, self.expect)
        self.btfs_stop(p, mnt, data)
        return lat

    # -- libtorrent ----------------------------------------------------------
    def lt_fetch(self, label):
        t = self.torrents[label]
        save = self.fresh("ltsave")
        up0 = self.uploaded(label)
        node = Proc([PY, LTNODE, "--fetch", t["torrent_file"], "--save", save,
                     "--connect", f"127.0.0.1:{self.seed_port}", "--no-utp", "--no-encryption"],
                    f"ltfetch-{self.counter}", self.logdir)
        try:
            e = node.wait_event("finished", 600)
            rss, cpu = proc_usage(node.p.pid)
            self.last_pid = node.p.pid
        finally:
            node.stop()
        shutil.rmtree(save)
        sent = self.uploaded(label) - up0
        return self.size / e["seconds"], rss, cpu, sent / self.size

    # -- bindfs / plain ------------------------------------------------------
    def bindfs_cached(self):
        mnt = self.fresh("mnt")
        subprocess.run(["bindfs", os.path.dirname(self.src), mnt], check=True)
        drop_caches()
        n, secs = read_file(os.path.join(mnt, "big.bin"))
        unmount(mnt, None)
        return n / secs

    def plain_cached(self):
        drop_caches()
        n, secs = read_file(self.src)
        return n / secs


def find_daemon(binpath, mnt):
    """PID of the btfs-mount process serving MNT (found by executable and mountpoint)."""
    want = os.fsencode(mnt)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.path.realpath(f"/proc/{name}/exe") != binpath:
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if want in f.read().split(b"\0") and proc_alive(int(name)):
                    return int(name)
        except OSError:
            continue
    raise RuntimeError(f"no btfs-mount process for {mnt}")


def free_ports(n):
    """n ports free for both TCP and UDP on 127.0.0.1."""
    import socket
    out = []
    while len(out) < n:
        t = socket.socket()
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            t.close()
            continue
        t.close()
        u.close()
        if port not in out:
            out.append(port)
    return out


# ---------------------------------------------------------------- report

def med(xs):
    return statistics.median(xs) if xs else None


def pct(xs, p):
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def fmt(xs, scale=1.0, digits=0, stat="median"):
    if not xs:
        return "n/a"
    v = [x * scale for x in xs]
    m = med(v)
    f = f"{{:.{digits}f}}"
    if len(v) == 1:
        return f.format(m)
    return f"{f.format(m)} ({f.format(min(v))}–{f.format(max(v))})"


def ratio(a, b):
    if not a or not b:
        return None
    return med(a) / med(b)


def fr(r, digits=2):
    return "n/a" if r is None else f"{r:.{digits}f}"


def machine_info(args):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def out(argv):
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip()
        except (OSError, subprocess.TimeoutExpired):
            return "?"
    btfs_v = re.search(r"btfs version: (\S+)", out(["btfs", "--version"]))
    lt_v = out([PY, "-c", "import libtorrent; print(libtorrent.__version__)"])
    commit = out(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = out(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "src"])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB, 1),
        "btfs-mount": out([args.bin, "--version"]) + f" (git {commit}{' + local changes' if dirty else ''})",
        "btfs": btfs_v.group(1) if btfs_v else "?",
        "libtorrent": "python3-libtorrent " + lt_v,
        "bindfs": out(["bindfs", "--version"]),
        "rustc": out(["rustc", "--version"]),
    }


def report(b, info, started, load_before, load_after):
    R = b.results
    a = b.args
    cap = f"first {a.btfs_cap_mib} MiB or {a.btfs_cap_seconds} s, whichever first"

    def btfs_rates(label):
        return [n / s for n, s in R.get(f"btfs_cold_{label}", [])]

    def btfs_cpu_gib(label):
        return [c / (n / GIB) for (n, _s), c in zip(R.get(f"btfs_cold_{label}", []),
                                                    R.get(f"btfs_cpu_{label}", []))]

    def bm_cpu_gib(label):
        return [c / (b.size / GIB) for c in R.get(f"bm_cpu_{label}", [])]

    def lt_cpu_gib(label):
        return [c / (b.size / GIB) for c in R.get(f"lt_cpu_{label}", [])]

    rows = []
    # (metric, btfs-mount, btfs, libtorrent, bindfs/plain, r_btfs, r_lt, goal, met)
    fb = R.get("bm_first_byte", [])
    rows.append(("mount start → first byte of small.txt (s), 256 KiB pieces",
                 fmt(fb, digits=3), fmt(R.get("btfs_first_byte", []), digits=3) + " ¹", "", "",
                 fr(ratio(fb, R.get("btfs_first_byte"))), "",
                 "≤ 0.25 s", ok(med(fb), lambda v: v <= 0.25)))
    for label, name in (("256k", "256 KiB"), ("4m", "4 MiB")):
        bm = [x / 1e6 for x in R.get(f"bm_cold_{label}", [])]
        bt = [x / 1e6 for x in btfs_rates(label)]
        lt = [x / 1e6 for x in R.get(f"lt_cold_{label}", [])]
        r_lt = ratio(bm, lt)
        rows.append((f"cold read of {b.size // MIB} MiB (MB/s), {name} pieces",
                     fmt(bm), fmt(bt, digits=1) + " ²", fmt(lt) + " ³", "",
                     fr(ratio(bm, bt)), fr(r_lt), "≥ libtorrent (ratio ≥ 1)",
                     ok(r_lt, lambda v: v >= 1)))
    for label, name in (("256k", "256 KiB"), ("4m", "4 MiB")):
        bm = R.get(f"bm_sent_{label}", [])
        lt = R.get(f"lt_sent_{label}", [])
        rows.append((f"seeder payload bytes sent per byte read, cold read, {name} pieces ⁸",
                     fmt(bm, digits=3), "", fmt(lt, digits=3), "", "", fr(ratio(bm, lt), 3),
                     "", ""))
    bind = [x / 1e6 for x in R.get("bindfs_cached", [])]
    plain = [x / 1e6 for x in R.get("plain_cached", [])]
    for label, name in (("256k", "256 KiB"), ("4m", "4 MiB")):
        bm = [x / 1e6 for x in R.get(f"bm_cached_first_{label}", [])]
        r_b = ratio(bm, bind)
        rows.append((f"cached read, first after mount: every piece hashed (MB/s), {name} pieces ¹¹",
                     fmt(bm), "n/a ⁴", "", f"bindfs {fmt(bind)}; plain file {fmt(plain)}",
                     "", "", "", ""))
    for label, name in (("256k", "256 KiB"), ("4m", "4 MiB")):
        bm = [x / 1e6 for x in R.get(f"bm_cached_{label}", [])]
        r_b = ratio(bm, bind)
        rows.append((f"cached read, page cache dropped (MB/s), {name} pieces ¹¹",
                     fmt(bm), "n/a ⁴", "", f"bindfs {fmt(bind)}; plain file {fmt(plain)}",
                     "", "", f"≥ 80% of bindfs (now {fr(r_b and r_b * 100, 0)}%)",
                     ok(r_b, lambda v: v >= 0.8)))
    for label, name in (("256k", "256 KiB"), ("4m", "4 MiB")):
        bm = [x / 1e6 for x in R.get(f"bm_upload_{label}", [])]
        lt = [x / 1e6 for x in R.get(f"lt_cold_{label}", [])]
        r_lt = ratio(bm, lt)
        rows.append((f"upload: libtorrent downloads {b.size // MIB} MiB from btfs-mount (MB/s), "
                     f"{name} pieces ¹⁰",
                     fmt(bm), "", fmt(lt) + " (from libtorrent)", "", "", fr(r_lt),
                     "≥ libtorrent seeding (ratio ≥ 1)", ok(r_lt, lambda v: v >= 1)))
    for label, name in (("256k", "256 KiB"), ("4m", "4 MiB")):
        rows.append((f"mount command with every piece cached (s), {name} pieces",
                     fmt(R.get(f"bm_cached_mount_{label}", []), digits=3), "", "", "", "", "",
                     "", ""))
    for label, name, goal in (("256k", "256 KiB", 5.0), ("4m", "4 MiB", 12.0)):
        bm = R.get(f"bm_random_{label}", [])
        bt = R.get(f"btfs_random_{label}", [])
        for p in (50, 90):
            vb, vt = pct(bm, p), pct(bt, p)
            rows.append((f"cold random 4 KiB read p{p} (ms), {name} pieces",
                         fms(vb) + (f" (min {fms(min(bm))}, max {fms(max(bm))})" if bm and p == 50 else ""),
                         fms(vt) + (f" (min {fms(min(bt))}, max {fms(max(bt))})" if bt and p == 50 else ""),
                         "", "", fr(vb / vt if vb and vt else None), "",
                         f"≤ {goal:g} ms" if p == 50 else "",
                         ok(vb and vb * 1000, lambda v, g=goal: v <= g) if p == 50 else ""))
    for label, name in (("256k", "256 KiB"), ("4m", "4 MiB")):
        bm = R.get(f"bm_random_sent_per_read_{label}", [])
        rows.append((f"cold random 4 KiB read: seeder payload KiB sent per read, {name} pieces",
                     fmt(bm, 1 / KIB), "", "", "", "", "", "one piece per read", ""))
    for label, name in (("256k", "256 KiB"), ("4m", "4 MiB")):
        bm = R.get(f"bm_rss_{label}", [])
        bt = R.get(f"btfs_rss_{label}", [])
        lt = R.get(f"lt_rss_{label}", [])
        rows.append((f"peak RSS of the cold read (MiB), {name} pieces",
                     fmt(bm, 1 / MIB, 1), fmt(bt, 1 / MIB, 1), fmt(lt, 1 / MIB, 1) + " ⁵", "",
                     fr(ratio(bm, bt)), fr(ratio(bm, lt)), "≤ 64 MiB",
                     ok(med(bm), lambda v: v <= 64 * MIB)))
    for label, name in (("256k", "256 KiB"), ("4m", "4 MiB")):
        bm = R.get(f"bm_anon_{label}", [])
        bt = R.get(f"btfs_anon_{label}", [])
        lt = R.get(f"lt_anon_{label}", [])
        rows.append((f"anonymous RSS at the end of the cold read (MiB), {name} pieces ⁹",
                     fmt(bm, 1 / MIB, 1), fmt(bt, 1 / MIB, 1), fmt(lt, 1 / MIB, 1), "",
                     fr(ratio(bm, bt)), fr(ratio(bm, lt)), "", ""))
    for label, name in (("256k", "256 KiB"), ("4m", "4 MiB")):
        bm, bt, lt = bm_cpu_gib(label), btfs_cpu_gib(label), lt_cpu_gib(label)
        r = ratio(bm, bt)
        rows.append((f"CPU s per GiB read, cold read, {name} pieces",
                     fmt(bm, digits=2), fmt(bt, digits=2), fmt(lt, digits=2) + " ⁵", "",
                     fr(r), fr(ratio(bm, lt)), "≤ 1/4 of btfs (ratio ≤ 0.25)",
                     ok(r, lambda v: v <= 0.25)))

    head = ("metric", "btfs-mount", "btfs", "libtorrent", "bindfs / plain",
            "btfs-mount/btfs", "btfs-mount/libtorrent", "goal", "met")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(r) + " |")
    table = "\n".join(lines)

    md = []
    md.append("# btfs-mount benchmark results\n")
    md.append(f"Written by `scripts/bench` on {time.strftime('%Y-%m-%d %H:%M %Z', started)}; "
              f"{a.reps} repetitions of each measurement, all in the same run on one local "
              f"swarm. Cells: median (min–max); random reads: nearest-rank percentiles over "
              f"all {a.reps}×{a.random_reads} samples. MB/s = 10^6 bytes/s.\n")
    md.append(table + "\n")
    md.append("Notes:\n")
    md.append(f"1. btfs cannot be given a DHT bootstrap node or a peer: it is started with "
              f"the .torrent file (no metadata exchange) on a fixed port, and the seeder is "
              f"told at the same moment to dial that port (retried every 0.25 s). btfs lists "
              f"its files only once its torrent is added, so `cat` is retried until it "
              f"succeeds. btfs-mount is given only the magnet and one DHT bootstrap node.")
    md.append(f"2. btfs is capped: it reads the {cap} (btfs with 256 KiB pieces runs at a "
              f"few MB/s); MB/s over what it read. Its CPU per GiB is over what it read too.")
    md.append("3. libtorrent: `ltnode.py --fetch T.torrent --connect SEEDER --no-utp "
              "--no-encryption` (TCP, plaintext, .torrent given: no metadata exchange); "
              "size / seconds from adding the torrent to every piece checked. It writes to "
              "disk (page cache) and verifies, as btfs-mount does.")
    md.append("4. btfs keeps no data between mounts (each mount makes a new temporary "
              "directory under --data-directory and deletes it on unmount), so it has no "
              "cached read.")
    md.append("5. the libtorrent process is python3 + libtorrent (ltnode.py): its RSS and CPU "
              "include the Python interpreter.")
    md.append("6. reads are 128 KiB read(2) calls into one buffer (what `cat` does), timed "
              "from open to end of file; the mount command's own time is not included except "
              "in the first-byte row. btfs-mount runs in its default background mode; its "
              "RSS and CPU are the daemon's (VmHWM, utime+stime) just before unmount.")
    md.append("7. one seeder (python3-libtorrent 2.0.8) serves every run; seeder, client and "
              "reader share the machine's cores, and other jobs may be running: load "
              f"average before {load_before}, after {load_after}.")
    md.append("8. payload bytes the seeder sent for the torrent during the run, divided by "
              "the bytes read (1.000: nothing sent twice; more: blocks sent again, e.g. after "
              "cancelled requests, or sent for pieces that were never read).")
    md.append("9. RssAnon from /proc/PID/status just before unmounting (the peak is not "
              "kept for it). libtorrent 2.0 writes through memory-mapped files, so the VmHWM "
              "of btfs and of the libtorrent fetcher counts the torrent's file pages too; "
              "this row leaves them out.")
    md.append("10. a btfs-mount mount (background, `--no-dht`, fixed `--port`) of a cache "
              "that holds the whole torrent (the one the cold read filled) is the only peer; "
              "libtorrent fetches as in note 3, dialling it. The page cache is dropped only "
              "before the cached-read rows, so the first repetition may read from disk. "
              "Compared with libtorrent's own download from the libtorrent seeder (the cold "
              "read rows' libtorrent column).")
    md.append("11. the cache filled by the cold read, mounted again with no peer, page cache "
              "dropped, file read whole; then page cache dropped and the file read again from "
              "a new open. Cached pieces are verified lazily after a mount (the mount is up at "
              "once), so the first read hashes every piece it serves (bindfs and a plain file "
              "verify nothing); the second open, every piece verified, is FUSE passthrough "
              "(the kernel reads the cache file).")
    md.append("")
    md.append("## Machine and versions\n")
    for k, v in info.items():
        md.append(f"- {k}: {v}")
    md.append(f"- file size: {b.size} bytes; random reads per repetition: {a.random_reads}")
    md.append(f"- run time: {time.monotonic() - START:.0f} s")
    md.append("")
    md.append("## Raw samples\n")
    md.append("```json")
    md.append(json.dumps(b.results, indent=None, sort_keys=True, default=str)
              .replace("], ", "],\n "))
    md.append("```")
    b.notes.extend(KILLED)
    if b.notes:
        md.append("\n## Problems seen during the run\n")
        for n in b.notes:
            md.append(f"- {n}")
    return table, "\n".join(md) + "\n"


def fms(v):
    return "n/a" if v is None else f"{v * 1000:.1f}"


def ok(v, pred):
    if v is None:
        return "n/a"
    return "yes" if pred(v) else "**no**"


# ---------------------------------------------------------------- main

def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True, help="the btfs-mount binary")
    p.add_argument("--work", required=True, help="scratch directory (deleted by scripts/bench)")
    p.add_argument("--out", help="write the Markdown report here")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--random-reads", type=int, default=20)
    p.add_argument("--btfs-cap-mib", type=int, default=256)
    p.add_argument("--btfs-cap-seconds", type=float, default=20)
    p.add_argument("--skip-btfs", action="store_true")
    args = p.parse_args(argv)

    started = time.localtime()
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    info = machine_info(args)
    b = Bench(args)
    try:
        b.make_data()
        b.start_swarm()
        reps = range(args.reps)
        labels = ("256k", "4m")

        log("first byte")
        for i in reps:
            fb, took = b.bm_first_byte("256k")
            b.add("bm_first_byte", fb)
            b.add("bm_mount_cmd", took)
            log(f"  btfs-mount first byte {fb:.3f} s (mount command {took:.3f} s)")
        if not args.skip_btfs:
            for i in reps:
                fb = b.btfs_first_byte("256k")
                b.add("btfs_first_byte", fb)
                log(f"  btfs first byte {fb:.3f} s")

        kept = {}
        for label in labels:
            log(f"cold read, {label} pieces")
            for i in reps:
                rate, rss, cpu, cache, sent = b.bm_cold(label, keep=(i == args.reps - 1))
                b.add(f"bm_cold_{label}", rate)
                b.add(f"bm_sent_{label}", sent)
                b.add(f"bm_rss_{label}", rss)
                b.add(f"bm_anon_{label}", LAST_ANON.get(b.last_pid, 0))
                b.add(f"bm_cpu_{label}", cpu)
                kept[label] = cache
                log(f"  btfs-mount {rate / 1e6:.0f} MB/s, RSS {rss / MIB:.1f} MiB, CPU {cpu:.2f} s, "
                    f"seeder sent {sent:.3f} bytes per byte read")
            for i in reps:
                rate, rss, cpu, sent = b.lt_fetch(label)
                b.add(f"lt_cold_{label}", rate)
                b.add(f"lt_sent_{label}", sent)
                b.add(f"lt_rss_{label}", rss)
                b.add(f"lt_anon_{label}", LAST_ANON.get(b.last_pid, 0))
                b.add(f"lt_cpu_{label}", cpu)
                log(f"  libtorrent {rate / 1e6:.0f} MB/s, RSS {rss / MIB:.1f} MiB, CPU {cpu:.2f} s")
            if not args.skip_btfs:
                for i in reps:
                    n, secs, rss, cpu = b.btfs_cold(label)
                    b.add(f"btfs_cold_{label}", (n, secs))
                    b.add(f"btfs_rss_{label}", rss)
                    b.add(f"btfs_anon_{label}", LAST_ANON.get(b.last_pid, 0))
                    b.add(f"btfs_cpu_{label}", cpu)
                    log(f"  btfs {n / MIB:.0f} MiB in {secs:.1f} s = {n / secs / 1e6:.1f} MB/s, "
                        f"RSS {rss / MIB:.1f} MiB, CPU {cpu:.2f} s")

        for label in labels:
            log(f"random 4 KiB reads, {label} pieces")
            for i in reps:
                offs = random_offsets(b.size, args.random_reads, seed=1000 + i)
                lat = b.bm_random(label, offs)
                for x in lat:
                    b.add(f"bm_random_{label}", x)
                log(f"  btfs-mount p50 {pct(lat, 50) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms, "
                    f"seeder sent {b.results[f'bm_random_sent_per_read_{label}'][-1] / KIB:.0f} KiB "
                    "per read")
                if not args.skip_btfs:
                    lat = b.btfs_random(label, offs)
                    for x in lat:
                        b.add(f"btfs_random_{label}", x)
                    log(f"  btfs p50 {pct(lat, 50) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms")

        # Last: dropping the page cache also makes the seeder's file cold.
        log("cached reads (page cache dropped before each)")
        for label in labels:
            for i in reps:
                first, again = b.bm_cached(label, kept[label])
                b.add(f"bm_cached_first_{label}", first)
                b.add(f"bm_cached_{label}", again)
                log(f"  btfs-mount {label}: first read after mount {first / 1e6:.0f} MB/s, "
                    f"again {again / 1e6:.0f} MB/s")
        log("upload: libtorrent downloads from a btfs-mount holding the torrent")
        for label in labels:
            for i in reps:
                rate = b.bm_upload(label, kept[label])
                b.add(f"bm_upload_{label}", rate)
                log(f"  {label}: {rate / 1e6:.0f} MB/s")
        for i in reps:
            rate = b.bindfs_cached()
            b.add("bindfs_cached", rate)
            log(f"  bindfs {rate / 1e6:.0f} MB/s")
            rate = b.plain_cached()
            b.add("plain_cached", rate)
            log(f"  plain file {rate / 1e6:.0f} MB/s")
    finally:
        b.stop_all()
    load_after = " ".join(open("/proc/loadavg").read().split()[:3])
    table, md = report(b, info, started, load_before, load_after)
    print(table)
    if args.out:
        # Keep the internet-like swarm's section (scripts/bench --internet).
        import inet_report
        old = open(args.out).read() if os.path.exists(args.out) else ""
        md = inet_report.keep_section(old, md)
        with open(args.out, "w") as f:
            f.write(md)
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
