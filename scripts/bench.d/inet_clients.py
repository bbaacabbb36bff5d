"""inet_clients: the clients of the internet-like benchmark (internet.py).

Each test of internet.py starts a fresh client instance: btfs-mount (a FUSE
mount read with pread(2)), libtorrent's streaming mode (lt_stream.py, driven
over its stdin) or rqbit (its HTTP API and stream). libtorrent's own
download has no reader and is run by internet.py itself. Every client
answers `had(pieces)`, the question behind the cold-read rows: which of
those pieces it has just now.
"""

import glob
import http.client
import json
import os
import shutil
import signal
import subprocess
import time

import bench
from bench import KIB, MIB, PY

HERE = os.path.dirname(os.path.abspath(__file__))
LT_STREAM = os.path.join(HERE, "lt_stream.py")
LABELS = (("256k", 256 * KIB), ("4m", 4 * MIB))
# The mse test's clients: (client, encryption) pairs, plaintext and RC4.
MSE_KINDS = ("btfs-mount/off", "btfs-mount/require", "lt-download/off", "lt-download/require")
MSE_FLAGS = {"btfs-mount/off": ["--encryption", "off"],
             "btfs-mount/require": ["--encryption", "require"],
             "lt-download/off": ["--no-encryption"],
             "lt-download/require": ["--require-encryption"],
             # A client of every test (--inet-clients btfs-mount/tcp): this
             # binary with the only transport it had before MSE and uTP
             # (issue 16), plaintext TCP, to tell what they cost a first
             # byte on this swarm.
             "btfs-mount/tcp": ["--no-utp", "--encryption", "off"]}


class Proc(bench.Proc):
    """bench.Proc that stamps each event with its arrival time (`_t`)."""

    def _reader(self):
        for line in self.p.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            e["_t"] = time.monotonic()
            self.q.put(e)
        self.q.put(None)


def find_rqbit(explicit):
    for c in [explicit, shutil.which("rqbit"), os.path.expanduser("~/.cargo/bin/rqbit"),
              "/root/.cargo/bin/rqbit"]:
        if c and os.access(c, os.X_OK):
            return c
    return None


# ---------------------------------------------------------------- clients

class Client:
    """One fresh client instance for one test. `start()` returns the
    monotonic time the client was started (the first-byte clock);
    `pread(off, n)` reads n bytes at file offset off; `seek()` tells it
    the reader jumped; `stop()` returns (VmHWM bytes, CPU seconds)."""

    pid = None

    def seek(self):
        pass

    def had(self, pieces):
        """For each piece index: whether the client had it (or, btfs-mount,
        any byte of it) just now; None when the client cannot tell."""
        return None

    def usage(self):
        rss, cpu = bench.proc_usage(self.pid)
        return rss, cpu


class BtfsMount(Client):
    name = "btfs-mount"

    def __init__(self, ib, label, name="btfs-mount"):
        # "btfs-mount@REV": the binary given by --inet-bin REV=PATH;
        # "btfs-mount/off", "btfs-mount/require": with that --encryption.
        self.ib, self.label, self.name = ib, label, name
        base = name.split("/", 1)[0]
        self.bin = ib.bin if base == "btfs-mount" else ib.extra_bins[base.split("@", 1)[1]]
        self.extra = MSE_FLAGS.get(name, [])

    def start(self):
        ib = self.ib
        t = ib.torrents[self.label]
        self.cache = ib.fresh("cache")
        self.mnt = ib.fresh("mnt")
        argv = [self.bin, t["magnet"], self.mnt, "--cache-dir", self.cache,
                "--bootstrap", f"127.0.0.1:{ib.dht_ports[0]}"] + self.extra
        env = dict(os.environ)
        if ib.args.inet_trace:
            env["RUST_LOG"] = "btfs=debug"
            # The relays can only trace plaintext connections; btfs-mount
            # dials encrypted (MSE) by default where it can.
            if ib.has_encryption_flag(self.bin) and not self.extra:
                argv += ["--encryption", "off"]
        t0 = time.monotonic()
        errp = os.path.join(ib.logdir, f"{self.name.replace('/', '-')}-{ib.counter}.stderr")
        with open(errp, "wb") as err:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                               timeout=120, env=env)
        if r.returncode != 0 or not bench.is_mounted(self.mnt):
            raise RuntimeError(f"btfs-mount failed (rc {r.returncode}): {bench.tail(errp)}")
        self.t_meta = time.monotonic()
        self.pid = bench.find_daemon(self.bin, self.mnt)
        self.path = os.path.join(self.mnt, t["name"], "big.bin")
        self.fd = os.open(self.path, os.O_RDONLY)
        st = os.fstat(self.fd)
        ib.record(event="mount", client=self.name, label=self.label, t0=t0,
                  dev=f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}", ino=st.st_ino,
                  pid=self.pid, n=ib.counter)
        return t0

    def had(self, pieces):
        """Whether any byte of each piece is in the cache file (SEEK_DATA):
        blocks are written there as they arrive, before the piece is
        hashed, so a piece partly downloaded already counts as had, which
        is stricter on btfs-mount than "verified" is on the others."""
        if getattr(self, "cfd", None) is None:
            # DIR/<info-hash>/files/<torrent name>/big.bin (README "cache").
            ih = self.ib.torrents[self.label]["info_hash"]
            found = glob.glob(os.path.join(self.cache, ih, "files", "**", "big.bin"),
                              recursive=True)
            if not found:
                self.ib.notes.append(f"{self.name}: no cache file under {self.cache}; "
                                     "its reads are not classified cold or warm")
                return None
            self.cfd = os.open(found[0], os.O_RDONLY)
        plen = dict(LABELS)[self.label]
        out = []
        for i in pieces:
            try:
                nxt = os.lseek(self.cfd, i * plen, os.SEEK_DATA)
            except OSError:  # ENXIO: no data from there on
                nxt = None
            out.append(nxt is not None and nxt < (i + 1) * plen)
        return out

    def pread(self, off, n):
        out = []
        while n > 0:
            b = os.pread(self.fd, n, off)
            if not b:
                break
            out.append(b)
            off += len(b)
            n -= len(b)
        return b"".join(out)

    def stop(self):
        rss, cpu = self.usage()
        os.close(self.fd)
        if getattr(self, "cfd", None) is not None:
            os.close(self.cfd)
            self.cfd = None
        if self.ib.args.inet_trace:
            src = os.path.join(self.cache, self.ib.torrents[self.label]["info_hash"],
                               "btfs-mount.log")
        bench.unmount(self.mnt, self.pid)
        if self.ib.args.inet_trace and os.path.exists(src):
            shutil.copy(src, os.path.join(self.ib.logdir,
                                          f"{self.name.replace('/', '-')}-{self.ib.counter}.log"))
        shutil.rmtree(self.cache, ignore_errors=True)
        return rss, cpu


class LtStream(Client):
    name = "lt-stream"

    def __init__(self, ib, label):
        self.ib, self.label = ib, label
        self.rid = 0

    def start(self):
        ib = self.ib
        self.save = ib.fresh("ltstream")
        self.node = Proc([PY, LT_STREAM, "--magnet", ib.torrents[self.label]["magnet"],
                          "--save", self.save, "--bootstrap", f"127.0.0.1:{ib.dht_ports[0]}"],
                         f"lt-stream-{ib.counter}", ib.logdir)
        self.pid = self.node.p.pid
        added = self.node.wait_event("added", 30)
        meta = self.node.wait_event("metadata", 120)
        self.t_meta = meta["t"]
        f = next(x for x in meta["files"] if x["path"].endswith("big.bin"))
        self.foff = f["offset"]
        self.path = os.path.join(self.save, f["path"])
        self.fd = None
        return added["t"]

    def _read(self, off, n, ahead=0, rate=0):
        self.rid += 1
        rid = self.rid
        self.node.send(json.dumps({"op": "read", "id": rid, "off": self.foff + off, "len": n,
                                   "ahead": ahead, "rate": rate}))
        done = self.node.wait_event("done", 120, lambda e: e["id"] == rid)
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)
        data = os.pread(self.fd, n, off)
        want = self.ib.expect(off, n)
        tries = 0
        while data != want and tries < 200:
            # Seen once: libtorrent reported the piece before its bytes read
            # back right. Wait for them (the wait counts in the latency) and
            # say so in the report.
            tries += 1
            time.sleep(0.01)
            data = os.pread(self.fd, n, off)
        if tries:
            self.ib.notes.append(
                f"lt-stream ({self.label}): the bytes at offset {off} read back wrong after "
                f"libtorrent reported their pieces; "
                + (f"right {time.monotonic() - done['t']:.3f} s after" if data == want
                   else "still wrong 2 s later"))
        return data

    def pread(self, off, n):
        return self._read(off, n)

    def had(self, pieces):
        self.rid += 1
        rid = self.rid
        self.node.send(json.dumps({"op": "have", "id": rid, "pieces": list(pieces)}))
        return self.node.wait_event("have", 30, lambda e: e["id"] == rid)["had"]

    def stream_read(self, off, n, rate):
        return self._read(off, n, self.ib.args.inet_lt_ahead_mib * MIB, rate)

    def seek(self):
        self.node.send(json.dumps({"op": "seek"}))

    def stop(self):
        rss, cpu = self.usage()
        if self.fd is not None:
            os.close(self.fd)
        self.node.stop()
        shutil.rmtree(self.save, ignore_errors=True)
        return rss, cpu


class Rqbit(Client):
    name = "rqbit"

    def __init__(self, ib, label):
        self.ib, self.label = ib, label
        self.conn = None
        self.stream_resp = None

    def start(self):
        ib = self.ib
        d = ib.fresh("rqbit")
        home = os.path.join(d, "home")
        os.makedirs(home)
        api_port, bt_port = bench.free_ports(2)
        self.api = api_port
        env = dict(os.environ, HOME=home, XDG_CONFIG_HOME=home, XDG_CACHE_HOME=home,
                   XDG_DATA_HOME=home)
        argv = [ib.rqbit, *os.environ.get("BENCH_RQBIT_EXTRA", "").split(), "--disable-dht-persistence",
                "--dht-bootstrap-addrs", f"127.0.0.1:{ib.dht_ports[0]}",
                "--disable-lsd", "--disable-trackers", "--disable-upnp-port-forward",
                "--listen-port", str(bt_port), "--http-api-listen-addr", f"127.0.0.1:{api_port}",
                "server", "start", "--disable-persistence", os.path.join(d, "out")]
        self.dir = d
        self.err = open(os.path.join(ib.logdir, f"rqbit-{ib.counter}.stderr"), "wb")
        self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.err,
                                  stderr=self.err, env=env, cwd=d)
        self.pid = self.p.pid
        if not bench.wait_until(30, self._api_up, 0.05):
            raise RuntimeError(f"rqbit API not up: {bench.tail(self.err.name)}")
        t0 = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", api_port, timeout=120)
        # rqbit's default: it downloads the whole torrent in the background
        # and its streams jump the queue. With --inet-rqbit-stream-only,
        # only small.txt is selected and big.bin is fetched only as its
        # streams ask (rqbit streams files that are not selected).
        t = ib.torrents[self.label]
        query = "/torrents?overwrite=true"
        if ib.args.inet_rqbit_stream_only:
            query += "&only_files_regex=small%5C.txt"  # small\.txt
        c.request("POST", query, body=t["magnet"])
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"rqbit add: {r.status} {body[:300]!r}")
        added = json.loads(body)
        self.id = added["id"]
        self.t_meta = time.monotonic()
        c.close()
        files = added["details"]["files"]
        big = next(i for i, f in enumerate(files) if f["name"].endswith("big.bin"))
        self.url = f"/torrents/{self.id}/stream/{big}"
        return t0

    def _api_up(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.api, timeout=1)
            c.request("GET", "/")
            ok = c.getresponse().status == 200
            c.close()
            return ok
        except OSError:
            return False

    def pread(self, off, n):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.api, timeout=300)
        self.conn.request("GET", self.url, headers={"Range": f"bytes={off}-{off + n - 1}"})
        r = self.conn.getresponse()
        data = r.read()
        if r.status not in (200, 206):
            raise RuntimeError(f"rqbit stream: HTTP {r.status}")
        return data

    def had(self, pieces):
        """rqbit's own bitfield of verified pieces: GET /torrents/ID/haves
        with Accept: application/octet-stream (bit 7 of byte 0 is piece 0,
        as in a BitTorrent bitfield)."""
        c = http.client.HTTPConnection("127.0.0.1", self.api, timeout=30)
        try:
            c.request("GET", f"/torrents/{self.id}/haves",
                      headers={"Accept": "application/octet-stream"})
            r = c.getresponse()
            bf = r.read()
            if r.status != 200:
                raise RuntimeError(f"rqbit haves: HTTP {r.status} {bf[:200]!r}")
        finally:
            c.close()
        return [i // 8 < len(bf) and bool(bf[i // 8] >> (7 - i % 8) & 1) for i in pieces]

    def stream_read(self, off, n, rate):
        """Sequential reads go through one open-ended GET (what a player
        does), reopened after a seek."""
        if self.stream_resp is None or self.stream_pos != off:
            self.seek()
            self.stream_conn = http.client.HTTPConnection("127.0.0.1", self.api, timeout=300)
            self.stream_conn.request("GET", self.url, headers={"Range": f"bytes={off}-"})
            self.stream_resp = self.stream_conn.getresponse()
            if self.stream_resp.status not in (200, 206):
                raise RuntimeError(f"rqbit stream: HTTP {self.stream_resp.status}")
            self.stream_pos = off
        data = self.stream_resp.read(n)
        self.stream_pos += len(data)
        return data

    def seek(self):
        if self.stream_resp is not None:
            self.stream_conn.close()
            self.stream_resp = None

    def stop(self):
        rss, cpu = self.usage()
        self.seek()
        if self.conn is not None:
            self.conn.close()
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.err.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return rss, cpu
