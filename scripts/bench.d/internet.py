#!/usr/bin/python3
"""internet: btfs-mount, libtorrent and rqbit on an internet-like swarm.

Run by `scripts/bench --internet` (or as part of the default `scripts/bench`)
inside a private network and mount namespace where only loopback exists.
Python 3 stdlib, plus python3-libtorrent in the swarm's processes.

The swarm (bench/README.md has the picture):
- N seeders (default 8), python3-libtorrent sessions in one process
  (inet_swarm.py), each with upload_rate_limit --inet-rate (default 3 MB/s of
  payload) that applies to loopback peers too (peer class filter), each
  listening on a 127.0.0.1 port that no client is told about; libtorrent's
  limiter lets up to 3 s of unused quota out in a burst after idle
  (--inet-relay-shape also shapes at the relays; off by default);
- in front of each seeder a relay (relay.py, one asyncio process for all of
  them) on its own address 10.99.0.i:6881 (an alias on lo, added here),
  adding --inet-delay-ms (25) each way, +- --inet-jitter-ms (5), and stalls
  of --inet-stall-ms (250) at --inet-stall-rate (0.05 per second per
  direction: one every 20 s);
- three libtorrent DHT nodes (swarm.py without torrents); the seeders are
  not on the DHT: a small DHT node per relay address (in inet_swarm.py)
  announces that relay (announce_peer from a socket bound to 10.99.0.i,
  port 6881) to every DHT node and answers queries, so a client that looks
  the torrent up finds the relays and only the relays;
- the data: one file of --inet-size-mib (256) random bytes, as two v1
  torrents (directories inet-256k and inet-4m holding big.bin and a 5 KB
  small.txt) with 256 KiB and 4 MiB pieces.
The network side (DHT nodes, seeders, relays) runs at nice -10, so other jobs
on the machine slow it less; the clients run at normal priority.

Clients: each gets only the magnet link and one DHT bootstrap node, and
each test starts a fresh one (fresh cache, fresh session):
- btfs-mount: `btfs-mount MAGNET MNT --cache-dir C --bootstrap NODE`
  (default background mode, every other setting default); reads go through
  the mount with pread(2);
- libtorrent download: `ltnode.py --fetch MAGNET --dht --bootstrap NODE
  --no-utp --no-encryption` (its own rarest-first download of everything);
- libtorrent streaming: lt_stream.py, `set_piece_deadline` on the pieces
  under each read and, for sequential reads (cat, player), on a readahead
  window of --inet-lt-ahead-mib (32, btfs-mount's largest window) with the
  deadlines of a reader at the read rate; priority 0 everywhere else; the
  driver reads the bytes from its file;
- rqbit: `rqbit server start DIR` (DHT bootstrap NODE, no persistence, LSD,
  UPnP off), the magnet POSTed to its HTTP API, reads as HTTP GETs of
  /torrents/ID/stream/FILE with a Range header. rqbit downloads the whole
  torrent in the background once added (its streams go first), so the later
  reads of a test often find their data already there;
  --inet-rqbit-stream-only selects only small.txt instead (big.bin is then
  fetched only for its streams, 32 MiB ahead of each). Skipped when rqbit is
  absent.

Tests, for each piece length, each client:
  cat     read the whole file in 128 KiB reads from offset 0; first byte =
          from starting the client (btfs-mount command; libtorrent
          add_torrent; rqbit POST) to the first read returning; MB/s = size
          / (first read issued .. last read returned). libtorrent download:
          size / (metadata received .. every piece checked).
  seek    one 128 KiB read at 0, --inet-settle s of quiet, then 1 MiB reads at
          --inet-seeks random offsets, back to back; latency of each.
  random  the same start, then --inet-random 4 KiB reads at random offsets.
          Cold reads (seek, random): before each read the client is asked
          which pieces under it it has (rqbit: GET /torrents/ID/haves;
          libtorrent streaming: have_piece; btfs-mount: SEEK_DATA on its
          cache file, i.e. any byte of the piece, stricter than "verified");
          a read is cold when it had none. Offsets whose read was not cold
          are read again, in order, in a fresh session (same start and
          settle), up to --inet-cold-sessions sessions in all. The cold rows
          hold the first cold read of each offset; the "every read" rows the
          first session, cold or not. rqbit downloads the whole file in the
          background in piece order, so offsets behind its download front
          are never cold for it (counted as such).
  player  reads 256 KiB every 131 ms (2 MB/s) from offset 0 and every
          --inet-seek-every s (5) seeks to a random offset, for
          --inet-player-seconds (30); a read issued late (the previous one
          took longer than its slot) goes at once, with no catching up.
          Reports the longest wait of any read but the first, and the wait
          of the first read after each seek (all, and those whose pieces
          were not had).
  mse     a cat by btfs-mount with --encryption off and with require, and
          by libtorrent's download with encryption disabled and forced
          (issue 16's "MSE costs at most 10 %" on the path users have);
          half-way through, the seeders' peer_info tells how each of their
          connections is encrypted; client CPU and the seeders' CPU per GiB.
Seeder bytes: sum over the seeders of libtorrent's total_payload_upload for
the torrent, from the moment the measured reads start (after the settle) to
the client's exit, divided by the bytes read. Peak RSS (VmHWM) and CPU
(utime+stime) of the client process, read just before it is stopped.
Before each client's test, --inet-between s (3) of quiet. A client that
starts right after one that downloaded at full rate (a `cat`, rqbit's
background download) still gets its first byte later (1.1-2.3 s where the
next client gets it in 0.7-0.9 s, whatever the binary; the pause did not
remove that; bench/internet-diagnosis.md). So the clients' order changes
from test to test (--inet-order: by default the rows of a Williams design,
in which every client directly follows every other one equally often),
the first-byte row is the median over every start, and a second row splits
the starts by whether a full-rate transfer ran just before.
Every offset list is drawn from a seeded RNG, the same for every client.
Every fresh start's first read (at offset 0) is also a first-byte sample.

Other modes: --inet-trace (relay wire trace, btfs-mount debug log, kernel
FUSE/readahead trace; analyse with inet_trace.py), --inet-serve S (only the
swarm, for experiments), --inet-clients/--inet-tests (a subset),
--inet-bin REV=PATH (another btfs-mount binary as client btfs-mount@REV, in
the same run; the section then compares the two side by side).
"""

import argparse
import http.client
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402  (Proc, proc_usage, unmount, find_daemon, free_ports, log...)
from bench import KIB, MIB, PY, log  # noqa: E402
from inet_clients import (LABELS, MSE_FLAGS, MSE_KINDS, BtfsMount, LtStream, Proc,  # noqa: E402
                          Rqbit, find_rqbit)

RELAY = os.path.join(HERE, "relay.py")
SWARM = os.path.join(HERE, "swarm.py")
INET_SWARM = os.path.join(HERE, "inet_swarm.py")
CLIENTS = ("btfs-mount", "lt-download", "lt-stream", "rqbit")
TESTS = ("cat", "seek", "random", "player", "mse")
RELAY_PORT = 6881
NICE = ["nice", "-n", "-10"]


# ---------------------------------------------------------------- the bench

class InternetBench:
    def __init__(self, args):
        self.args = args
        self.work = os.path.join(args.work, "inet")
        self.logdir = os.path.join(self.work, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.bin = os.path.realpath(args.bin)
        # --inet-bin REV=PATH: more btfs-mount binaries, run as the client
        # "btfs-mount@REV" in the same run (before/after comparisons).
        self.extra_bins = {}
        for spec in args.inet_bin or []:
            rev, _, path = spec.partition("=")
            if not rev or not path:
                raise SystemExit(f"--inet-bin {spec!r}: want REV=PATH")
            self.extra_bins[rev] = os.path.realpath(path)
        self._enc_flag = {}
        self.bin_has_encryption_flag = self.has_encryption_flag(self.bin)
        self.rqbit = find_rqbit(args.rqbit)
        self.procs = []
        self.results = {}
        self.notes = []
        self.counter = 0
        self.timeline = open(os.path.join(self.logdir, "reads.jsonl"), "w")

    def has_encryption_flag(self, path):
        """Whether that btfs-mount binary has --encryption (MSE) at all."""
        if path not in self._enc_flag:
            self._enc_flag[path] = "--encryption" in subprocess.run(
                [path, "--help"], capture_output=True, text=True).stdout
        return self._enc_flag[path]

    def fresh(self, kind):
        self.counter += 1
        d = os.path.join(self.work, f"{kind}-{self.counter}")
        os.makedirs(d)
        return d

    def add(self, key, value):
        self.results.setdefault(key, []).append(value)

    # -- setup --------------------------------------------------------------
    def setup(self):
        a = self.args
        self.size = a.inet_size_mib * MIB
        src = os.path.join(self.work, "data", "big.bin")
        os.makedirs(os.path.dirname(src))
        log(f"internet: writing {a.inet_size_mib} MiB of random data")
        with open(src, "wb") as f:
            left = self.size
            while left:
                n = min(left, 8 * MIB)
                f.write(os.urandom(n))
                left -= n
        self.src = src
        self.srcfd = os.open(src, os.O_RDONLY)
        seeds = []
        for label, piece in LABELS:
            d = os.path.join(self.work, "seed", f"inet-{label}")
            os.makedirs(d)
            os.link(src, os.path.join(d, "big.bin"))
            # A second, small file: rqbit can then be given only it as
            # "selected" and stream big.bin on demand (see Rqbit).
            with open(os.path.join(d, "small.txt"), "wb") as f:
                f.write(b"btfs-mount bench: the small file of the torrent.\n" * 100)
            seeds.append(f"{d}:{piece}")
        # The relays' addresses: aliases on lo, only inside this namespace.
        self.relays = [f"10.99.0.{i + 1}" for i in range(a.inet_seeders)]
        for ip in self.relays:
            subprocess.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"], check=True)
        # DHT nodes.
        self.dht_ports = bench.free_ports(3)
        boot = [f"127.0.0.1:{p}" for p in self.dht_ports]
        for i, p in enumerate(self.dht_ports):
            node = Proc(NICE + [PY, SWARM, "--listen-port", str(p), "--torrent-dir", self.work]
                        + sum((["--bootstrap", b] for b in boot if b != f"127.0.0.1:{p}"), []),
                        f"inet-dht{i}", self.logdir)
            self.procs.append(node)
            node.wait_event("ready", 20)
        # Seeders (and the announcer).
        argv = NICE + [PY, INET_SWARM, "--torrent-dir", os.path.join(self.work, "torrents"),
                       "--rate", str(a.inet_rate), "--tick-ms", str(a.inet_tick_ms),
                       "--low-watermark", str(a.inet_low_watermark),
                       "--sndbuf", str(64 * KIB if a.inet_relay_shape else 0),
                       "--samples", os.path.join(self.logdir, "seeder-samples.jsonl")]
        for s in seeds:
            argv += ["--seed", s]
        for ip in self.relays:
            argv += ["--relay", f"{ip}:{RELAY_PORT}"]
        for b in boot:
            argv += ["--dht", b]
        log(f"internet: hashing, starting {a.inet_seeders} seeders")
        self.swarm = Proc(argv, "inet-swarm", self.logdir)
        self.procs.append(self.swarm)
        self.torrents = {}
        self.tindex = {}
        for i in range(len(LABELS)):
            e = self.swarm.wait_event("torrent", 300)
            lab = "256k" if e["piece_length"] == 256 * KIB else "4m"
            self.torrents[lab] = e
            self.tindex[lab] = i
        seeding = self.swarm.wait_event("seeding", 120)
        # Relays.
        argv = NICE + [PY, RELAY, "--delay-ms", str(a.inet_delay_ms),
                       "--jitter-ms", str(a.inet_jitter_ms), "--stall-rate", str(a.inet_stall_rate),
                       "--stall-ms", str(a.inet_stall_ms), "--seed", "7",
                       "--rate", str(a.inet_rate if a.inet_relay_shape else 0),
                       "--max-queue", str(a.inet_relay_queue)]
        if a.inet_trace:
            argv += ["--trace", os.path.join(self.logdir, "relay-trace.jsonl")]
        for ip, port in zip(self.relays, seeding["ports"]):
            argv.append(f"{ip}:{RELAY_PORT}=127.0.0.1:{port}")
        self.relay = Proc(argv, "relays", self.logdir)
        self.procs.append(self.relay)
        self.relay.wait_event("ready", 20)
        # Every relay announced for every torrent to at least one DHT node.
        want = {(f"{ip}:{RELAY_PORT}", t["info_hash"]) for ip in self.relays
                for t in self.torrents.values()}
        while want:
            e = self.swarm.wait_event("announced", 60)
            if e["nodes_ok"] > 0:
                want.discard((e["relay"], e["info_hash"]))
        if a.inet_trace:
            self.start_ftrace()
        log("internet: swarm ready: " + ", ".join(f"{k}={v['info_hash']}"
                                                  for k, v in self.torrents.items()))

    def kill_live(self):
        """After a failed test: stop its client if it is still there."""
        c, self.live = getattr(self, "live", None), None
        if c is None:
            return
        try:
            if getattr(c, "pid", None) and bench.proc_alive(c.pid):
                c.stop()
        except Exception as e:  # noqa: BLE001 - best effort, reported
            self.notes.append(f"stopping {c.name} after a failure: {e}")

    def start_ftrace(self):
        """--inet-trace: record the kernel's FUSE requests and page cache
        readahead (tracepoints fuse:fuse_request_send/end and
        readahead:page_cache_sync_ra/async_ra) in a tracing instance of our
        own, stamped with CLOCK_MONOTONIC (trace_clock mono). tracefs is
        mounted in this run's private mount namespace."""
        mnt = os.path.join(self.work, "tracefs")
        os.makedirs(mnt, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tracefs", "nodev", mnt], capture_output=True)
        if r.returncode != 0:
            self.notes.append(f"no kernel trace: cannot mount tracefs: {r.stderr.decode()}")
            return
        self.tracefs = mnt
        inst = os.path.join(mnt, "instances", f"btfs-bench-{os.getpid()}")
        try:
            os.mkdir(inst)
            for k, v in (("trace_clock", "mono"), ("buffer_size_kb", "65536"),
                         ("events/fuse/enable", "1"),
                         ("events/readahead/page_cache_sync_ra/enable", "1"),
                         ("events/readahead/page_cache_async_ra/enable", "1"),
                         ("tracing_on", "1")):
                with open(os.path.join(inst, k), "w") as f:
                    f.write(v)
            self.ftrace = inst
        except OSError as e:
            self.notes.append(f"no kernel trace: {e}")

    def stop_ftrace(self):
        inst = getattr(self, "ftrace", None)
        if inst:
            try:
                with open(os.path.join(inst, "tracing_on"), "w") as f:
                    f.write("0")
                shutil.copy(os.path.join(inst, "trace"), os.path.join(self.logdir, "ftrace.txt"))
                for k in ("events/fuse/enable", "events/readahead/page_cache_sync_ra/enable",
                          "events/readahead/page_cache_async_ra/enable"):
                    with open(os.path.join(inst, k), "w") as f:
                        f.write("0")
                os.rmdir(inst)
            except OSError as e:
                self.notes.append(f"kernel trace: {e}")
        if getattr(self, "tracefs", None):
            subprocess.run(["umount", self.tracefs], capture_output=True)

    def stop_all(self):
        self.kill_live()
        self.stop_ftrace()
        for p in reversed(self.procs):
            if p is self.relay:
                # The relays report their own lateness on the way out.
                p.p.stdin.close()
                try:
                    e = p.wait_event("stats", 10)
                    self.relay_stats = e
                except RuntimeError:
                    pass
            p.stop()
        for ip in getattr(self, "relays", []):
            subprocess.run(["ip", "addr", "del", f"{ip}/32", "dev", "lo"], capture_output=True)

    def seeder_stats(self):
        self.swarm.send("stats")
        return self.swarm.wait_event("stats", 10)

    def uploaded(self, label):
        """Payload bytes all seeders have sent for this torrent so far."""
        i = self.tindex[label]
        return sum(per[i] for per in self.seeder_stats()["upload"])

    def expect(self, off, n):
        return os.pread(self.srcfd, n, off)

    def record(self, **kw):
        self.timeline.write(json.dumps(kw) + "\n")

    def offsets(self, n, length, seed):
        rng = random.Random(seed)
        return [rng.randrange(0, (self.size - length) // (4 * KIB)) * 4 * KIB for _ in range(n)]

    # -- tests --------------------------------------------------------------
    # A client that transfers at the swarm's full rate: every `cat`, and
    # every rqbit session (it downloads the whole torrent in the background).
    def full_rate(self, kind, test):
        return test in ("cat", "mse") or kind == "rqbit"

    def done_client(self, kind, test):
        """A client instance has stopped: the next one's predecessor."""
        self.prev = (kind, test)

    def first_byte(self, kind, label, secs):
        """A first-byte sample, also filed by what ran just before it
        (--inet-order: which client a start follows changes its first byte)."""
        k = f"{kind}_{label}"
        self.add(f"first_byte_{k}", secs)
        prev = getattr(self, "prev", None)
        after = "full" if prev and self.full_rate(*prev) else "other"
        self.add(f"first_byte_after_{after}_{k}", secs)
        self.record(event="first_byte", client=kind, label=label, secs=secs,
                    prev=list(prev) if prev else None)

    def new_client(self, kind, label):
        if kind.startswith("btfs-mount@") or kind.startswith("btfs-mount/"):
            c = BtfsMount(self, label, kind)
        else:
            c = {"btfs-mount": BtfsMount, "lt-stream": LtStream, "rqbit": Rqbit}[kind](self, label)
        self.live = c
        return c

    def test_cat(self, kind, label, midway=None):
        """Cold sequential read; `midway()` is called once, half-way."""
        c = self.new_client(kind, label)
        u0 = self.uploaded(label)
        t0 = c.start()
        block = 128 * KIB
        t_open = time.monotonic()
        first = None
        pos = 0
        rate = self.args.inet_seeders * self.args.inet_rate
        while pos < self.size:
            n = min(block, self.size - pos)
            data = (c.stream_read(pos, n, rate) if hasattr(c, "stream_read")
                    else c.pread(pos, n))
            if data != self.expect(pos, n):
                raise RuntimeError(f"{kind}: wrong data at {pos}")
            if first is None:
                first = time.monotonic()
            pos += n
            if midway and pos >= self.size // 2:
                midway()
                midway = None
        t_end = time.monotonic()
        rss, cpu = c.stop()
        sent = self.uploaded(label) - u0
        self.record(test="cat", client=kind, label=label, t_start=t0, t_open=t_open,
                    t_first=first, t_end=t_end)
        self.done_client(kind, "cat")
        k = f"{kind}_{label}"
        self.first_byte(kind, label, first - t0)
        self.add(f"ready_{k}", c.t_meta - t0)
        self.add(f"cat_{k}", self.size / (t_end - t_open))
        self.add(f"cat_sent_{k}", sent / self.size)
        self.add(f"cat_rss_{k}", rss)
        self.add(f"cat_cpu_{k}", cpu)
        self.add(f"rss_{k}", rss)
        self.add(f"cat_window_{k}", (t_open, t_end))
        log(f"  {kind} {label}: cat {self.size / (t_end - t_open) / 1e6:.1f} MB/s, first byte "
            f"{first - t0:.3f} s, sent/read {sent / self.size:.3f}, RSS {rss / MIB:.0f} MiB, "
            f"CPU {cpu:.1f} s")

    def test_lt_download(self, label, kind="lt-download", midway=None):
        """libtorrent's own download; `midway()` is called (from a timer
        thread) when about half the file should be in."""
        t = self.torrents[label]
        save = self.fresh("ltsave")
        u0 = self.uploaded(label)
        enc = MSE_FLAGS.get(kind, ["--no-encryption"])
        node = Proc([PY, bench.LTNODE, "--fetch", t["magnet"], "--save", save, "--dht",
                     "--bootstrap", f"127.0.0.1:{self.dht_ports[0]}", "--no-utp"] + enc,
                    f"{kind.replace('/', '-')}-{self.counter}", self.logdir)
        timer = None
        try:
            meta = node.wait_event("torrent", 120)
            if midway:
                rate = self.args.inet_seeders * self.args.inet_rate
                timer = threading.Timer(self.size / 2 / rate, midway)
                timer.start()
            fin = node.wait_event("finished", 600)
            rss, cpu = bench.proc_usage(node.p.pid)
        finally:
            if timer:
                timer.cancel()
                timer.join()
            node.stop()
        shutil.rmtree(save, ignore_errors=True)
        self.done_client(kind, "cat")
        sent = self.uploaded(label) - u0
        secs = fin["_t"] - meta["_t"]
        k = f"{kind}_{label}"
        self.add(f"cat_{k}", self.size / secs)
        self.add(f"cat_sent_{k}", sent / self.size)
        self.add(f"cat_rss_{k}", rss)
        self.add(f"cat_cpu_{k}", cpu)
        self.add(f"rss_{k}", rss)
        self.add(f"cat_window_{k}", (meta["_t"], fin["_t"]))
        self.record(test="cat", client=kind, label=label, t_open=meta["_t"],
                    t_end=fin["_t"])
        log(f"  {kind} {label}: {self.size / secs / 1e6:.1f} MB/s, sent/read "
            f"{sent / self.size:.3f}, RSS {rss / MIB:.0f} MiB, CPU {cpu:.1f} s")

    def warm(self, c, label, t0):
        """The start of the seek and random tests: one read at 0 (a first-byte
        sample), then quiet."""
        data = c.pread(0, 128 * KIB)
        if data != self.expect(0, 128 * KIB):
            raise RuntimeError(f"{c.name}: wrong data at 0")
        self.first_byte(c.name, label, time.monotonic() - t0)
        self.add(f"ready_{c.name}_{label}", c.t_meta - t0)
        time.sleep(self.args.inet_settle)

    def pieces_under(self, label, off, length):
        plen = dict(LABELS)[label]
        return list(range(off // plen, (off + length - 1) // plen + 1))

    @staticmethod
    def warmth(had):
        """"cold" (no piece under the read had when it started), "warm"
        (every one), "partial", or "unknown" (the client cannot tell)."""
        if had is None:
            return "unknown"
        return "cold" if not any(had) else "warm" if all(had) else "partial"

    def test_reads(self, kind, label, test, rep):
        """seek (1 MiB reads) or random (4 KiB reads) at random offsets.

        Session 1 reads every offset (the all-reads rows). Before each read
        the client is asked which pieces under it it has; a read is cold
        when it had none of them. An offset whose read was not cold is read
        again in a fresh session (new client, same warm-up and settle), in
        the same order, up to --inet-cold-sessions sessions in all: the
        cold rows hold each offset's first cold read. rqbit downloads the
        whole file in the background, in order, so offsets its download
        front passed before the read can never be read cold (counted)."""
        a = self.args
        n, length = (a.inet_seeks, MIB) if test == "seek" else (a.inet_random, 4 * KIB)
        offs = self.offsets(n, length, seed={"seek": 1000, "random": 2000}[test] + rep)
        k = f"{kind}_{label}"
        pending = list(range(n))
        session = 0
        while pending and session < a.inet_cold_sessions:
            session += 1
            c = self.new_client(kind, label)
            t0 = c.start()
            self.warm(c, label, t0)
            u0 = self.uploaded(label)
            t_measure = time.monotonic()
            lat, states, cold_now = [], [], []
            for i in pending:
                off = offs[i]
                state = self.warmth(c.had(self.pieces_under(label, off, length)))
                c.seek()
                t1 = time.monotonic()
                data = c.pread(off, length)
                t2 = time.monotonic()
                if data != self.expect(off, length):
                    raise RuntimeError(f"{kind}: wrong data at {off}")
                lat.append(t2 - t1)
                states.append(state)
                if state in ("cold", "unknown"):
                    cold_now.append(i)
                    self.add(f"{test}_cold_{k}", t2 - t1)
                self.record(test=test, client=kind, label=label, off=off, len=length, t1=t1,
                            t2=t2, session=session, state=state)
            t_stop = time.monotonic()
            rss, cpu = c.stop()
            self.done_client(kind, test)
            sent = self.uploaded(label) - u0
            self.record(event="test", test=test, client=kind, label=label, t0=t0,
                        t_measure=t_measure, t_stop=t_stop, t_end=time.monotonic(), sent=sent,
                        session=session)
            self.add(f"rss_{k}", rss)
            s_ = sorted(lat)
            counts = {x: states.count(x) for x in ("cold", "partial", "warm", "unknown")
                      if x in states}
            log(f"  {kind} {label}: {test} session {session}: {len(lat)} reads "
                f"({', '.join(f'{v} {x}' for x, v in counts.items())}), p50 "
                f"{bench.pct(s_, 50) * 1000:.0f} ms, p90 {bench.pct(s_, 90) * 1000:.0f} ms, "
                f"max {s_[-1] * 1000:.0f} ms, sent/read {sent / (len(lat) * length):.2f}")
            if session == 1:
                plen = dict(LABELS)[label]
                pieces = {j for off in offs for j in self.pieces_under(label, off, length)}
                self.add(f"{test}_floor_{label}", len(pieces) * plen / (n * length))
                for x in lat:
                    self.add(f"{test}_{k}", x)
                self.add(f"{test}_sent_{k}", sent / (n * length))
                for x in ("cold", "partial", "warm"):
                    self.add(f"{test}_n{x}1_{k}", states.count(x))
            pending = [i for i in pending if i not in cold_now]
        self.add(f"{test}_sessions_{k}", session)
        self.add(f"{test}_nevercold_{k}", len(pending))

    def test_player(self, kind, label, rep):
        a = self.args
        rate = 2_000_000
        block = 256 * KIB
        interval = block / rate
        c = self.new_client(kind, label)
        t0 = c.start()
        rng = random.Random(9000 + rep)
        u0 = self.uploaded(label)
        waits, after_seek, after_seek_cold = [], [], []
        pos, nbytes = 0, 0
        t_begin = time.monotonic()
        next_read = t_begin
        last_seek = t_begin
        seeked = False
        first = True
        while time.monotonic() - t_begin < a.inet_player_seconds:
            now = time.monotonic()
            if now - last_seek >= a.inet_seek_every:
                pos = rng.randrange(0, (self.size - 8 * MIB) // (4 * KIB)) * 4 * KIB
                c.seek()
                last_seek = now
                seeked = True
            if next_read > now:
                time.sleep(next_read - now)
            state = (self.warmth(c.had(self.pieces_under(label, pos, block))) if seeked
                     else None)
            t1 = time.monotonic()
            data = (c.stream_read(pos, block, rate) if hasattr(c, "stream_read")
                    else c.pread(pos, block))
            t2 = time.monotonic()
            if data != self.expect(pos, block):
                raise RuntimeError(f"{kind}: wrong data at {pos}")
            self.record(test="player", client=kind, label=label, off=pos, len=block, t1=t1,
                        t2=t2, seek=seeked, state=state)
            if first:
                self.first_byte(kind, label, t2 - t0)
                self.add(f"ready_{kind}_{label}", c.t_meta - t0)
            else:
                waits.append(t2 - t1)
            if seeked:
                after_seek.append(t2 - t1)
                if state in ("cold", "unknown"):
                    after_seek_cold.append(t2 - t1)
            first = seeked = False
            pos += block
            nbytes += block
            next_read = max(next_read + interval, time.monotonic())
            if pos + block > self.size:
                pos = 0
        rss, cpu = c.stop()
        self.done_client(kind, "player")
        sent = self.uploaded(label) - u0
        k = f"{kind}_{label}"
        self.add(f"player_max_{k}", max(waits))
        for x in after_seek:
            self.add(f"player_seek_{k}", x)
        for x in after_seek_cold:
            self.add(f"player_seek_cold_{k}", x)
        self.add(f"player_sent_{k}", sent / nbytes)
        self.add(f"player_slow_{k}", sum(1 for w in waits if w > 1.0))
        self.add(f"rss_{k}", rss)
        log(f"  {kind} {label}: player longest wait {max(waits) * 1000:.0f} ms, after seeks "
            + ", ".join(f"{x * 1000:.0f}" for x in after_seek)
            + f" ms ({len(after_seek_cold)} cold), sent/read {sent / nbytes:.2f}")

    def test_mse(self, kind, label):
        """One `cat` of the mse test: btfs-mount or libtorrent's download
        with encryption off or required (MSE_FLAGS), the seeders' CPU over
        the whole test, and, half-way, how the seeders' connections of this
        torrent are encrypted (libtorrent's peer_info flags)."""
        conns = {}

        def midway():
            self.swarm.send("peers")
            e = self.swarm.wait_event("peers", 10)
            for x in e["conns"]:
                if x["torrent"] == self.tindex[label]:
                    how = ("rc4" if x["rc4"] else
                           "mse-plaintext" if x["plaintext_encrypted"] else "plaintext")
                    conns[how] = conns.get(how, 0) + 1

        cpu0 = bench.proc_usage(self.swarm.p.pid)[1]
        if kind.startswith("lt-download"):
            self.test_lt_download(label, kind, midway)
        else:
            self.test_cat(kind, label, midway)
        k = f"{kind}_{label}"
        self.add(f"mse_seeder_cpu_{k}", bench.proc_usage(self.swarm.p.pid)[1] - cpu0)
        self.add(f"mse_conns_{k}", conns)
        log(f"  {kind} {label}: seeders' connections half-way: {conns}")

    def order(self, clients, step):
        """The order of the clients in the step-th test that has this set
        of clients (--inet-order). williams: rows of a Williams design (a
        Latin square in which every client directly follows every other
        one equally often; 2n rows for an odd n), one row per step; random:
        a shuffle from --inet-order-seed and the step; fixed: as given."""
        mode, n = self.args.inet_order, len(clients)
        if mode == "fixed" or n < 2:
            return list(clients)
        if mode == "random":
            rng = random.Random(f"{self.args.inet_order_seed}/{','.join(clients)}/{step}")
            out = list(clients)
            rng.shuffle(out)
            return out
        base = [0]
        for j in range(1, n):
            base.append((j + 1) // 2 if j % 2 else n - j // 2)
        rows = [[clients[(x + r) % n] for x in base] for r in range(n)]
        if n % 2:
            rows += [list(reversed(r)) for r in rows]
        return rows[step % len(rows)]

    def run(self):
        a = self.args
        clients = [c for c in a.inet_clients.split(",") if c]
        tests = [t for t in a.inet_tests.split(",") if t]
        if "rqbit" in clients and not self.rqbit:
            self.notes.append("rqbit is not installed (looked in PATH, ~/.cargo/bin, "
                              "/root/.cargo/bin): its column is empty.")
            clients.remove("rqbit")
        for c in clients:
            if c.startswith("btfs-mount@") and c.split("@", 1)[1] not in self.extra_bins:
                raise SystemExit(f"--inet-clients {c}: no --inet-bin {c.split('@', 1)[1]}=PATH")
        self.clients = clients
        steps = {}
        self.orders = []
        for rep in range(a.inet_reps):
            for label, _ in LABELS:
                for test in tests:
                    if test == "mse":
                        who = [m for m in MSE_KINDS if m.split("/")[0] in clients]
                    elif test == "cat":
                        who = list(clients)
                    else:
                        who = [c for c in clients if c != "lt-download"]
                    key = (test == "mse", tuple(who))
                    order = self.order(who, steps.get(key, 0))
                    steps[key] = steps.get(key, 0) + 1
                    self.orders.append((rep, label, test, order))
                    log(f"internet: {test}, {label} pieces (rep {rep + 1}/{a.inet_reps}), "
                        f"order {', '.join(order)}")
                    for kind in order:
                        # The seeders idle a moment first (a client right
                        # after a full-rate download starts slower; see the
                        # module docs).
                        time.sleep(a.inet_between)
                        try:
                            if test == "mse":
                                self.test_mse(kind, label)
                            elif test == "cat":
                                if kind == "lt-download":
                                    self.test_lt_download(label)
                                else:
                                    self.test_cat(kind, label)
                            elif test in ("seek", "random"):
                                self.test_reads(kind, label, test, rep)
                            elif test == "player":
                                self.test_player(kind, label, rep)
                        except (RuntimeError, OSError, http.client.HTTPException) as e:
                            msg = f"{kind}, {test}, {label} pieces: {e}"
                            log("  FAILED: " + msg)
                            self.notes.append(msg)
                            self.kill_live()
        self.timeline.close()


def add_args(p):
    """The --inet-* options (shared with scripts/bench)."""
    g = p.add_argument_group("internet-like swarm")
    g.add_argument("--inet-seeders", type=int, default=8)
    g.add_argument("--inet-rate", type=int, default=3_000_000,
                   help="upload_rate_limit of each seeder, payload bytes/s")
    g.add_argument("--inet-tick-ms", type=int, default=50, help="seeders' tick_interval")
    g.add_argument("--inet-relay-shape", action="store_true",
                   help="also shape each relay's downstream to --inet-rate (libtorrent's limit "
                        "alone lets 3 s of unused quota out in a burst); experimental: the "
                        "python shaper delivers only ~2.3 MB/s of 3")
    g.add_argument("--inet-relay-queue", type=int, default=1 << 20,
                   help="bytes a relay buffers per direction before it stops reading")
    g.add_argument("--inet-low-watermark", type=int, default=0,
                   help="seeders' send_buffer_low_watermark, bytes (0: libtorrent's default)")
    g.add_argument("--inet-delay-ms", type=float, default=25.0)
    g.add_argument("--inet-jitter-ms", type=float, default=5.0)
    g.add_argument("--inet-stall-rate", type=float, default=0.05)
    g.add_argument("--inet-stall-ms", type=float, default=250.0)
    g.add_argument("--inet-size-mib", type=int, default=256)
    g.add_argument("--inet-reps", type=int, default=1)
    g.add_argument("--inet-seeks", type=int, default=20)
    g.add_argument("--inet-random", type=int, default=30)
    g.add_argument("--inet-settle", type=float, default=2.0)
    g.add_argument("--inet-between", type=float, default=3.0,
                   help="seconds of quiet before each client's test (libtorrent seeders "
                        "keep up to 3 s of unused upload quota)")
    g.add_argument("--inet-player-seconds", type=float, default=30.0)
    g.add_argument("--inet-seek-every", type=float, default=5.0)
    g.add_argument("--inet-lt-ahead-mib", type=int, default=32,
                   help="libtorrent streaming: readahead window of sequential reads (btfs-mount's "
                        "grows to 32 MiB)")
    g.add_argument("--inet-clients", default=",".join(CLIENTS),
                   help="clients to run, in this order for each test; btfs-mount@REV is the "
                        "binary of --inet-bin REV=PATH")
    g.add_argument("--inet-bin", action="append", metavar="REV=PATH",
                   help="another btfs-mount binary, run as client btfs-mount@REV (repeatable); "
                        "the section then gets a table of btfs-mount against each, side by side")
    g.add_argument("--inet-tests", default=",".join(TESTS),
                   help="mse: a `cat` by btfs-mount with --encryption off and require, and by "
                        "libtorrent's download with encryption disabled and forced (when "
                        "btfs-mount / lt-download are among --inet-clients)")
    g.add_argument("--inet-order", choices=("williams", "random", "fixed"), default="williams",
                   help="the clients' order in each test: williams (balanced: each client "
                        "follows each other equally often), random (seeded shuffle), fixed "
                        "(as in --inet-clients)")
    g.add_argument("--inet-order-seed", type=int, default=1, help="seed of --inet-order random")
    g.add_argument("--inet-cold-sessions", type=int, default=4,
                   help="seek and random tests: fresh sessions in which to read again the "
                        "offsets whose reads found a piece already had (see test_reads)")
    g.add_argument("--inet-trace", action="store_true",
                   help="relay wire trace, RUST_LOG=btfs=debug, btfs-mount with --encryption off "
                        "(the relays parse plaintext only); logs kept with --inet-keep")
    g.add_argument("--inet-keep", metavar="DIR", help="copy the logs and traces here")
    g.add_argument("--rqbit", help="the rqbit binary (default: PATH, ~/.cargo/bin)")
    g.add_argument("--inet-rqbit-stream-only", action="store_true",
                   help="add the torrent to rqbit with only small.txt selected, so that it "
                        "fetches big.bin only for its streams (rqbit 9.1.0 then keeps one "
                        "peer and logs 'peer was in a wrong state')")
    g.add_argument("--inet-serve", type=float, metavar="SECONDS",
                   help="only set the swarm up, print its magnets and DHT node, and keep it "
                        "for SECONDS (experiments; enter with nsenter -t PID -n -m)")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", help="RESULTS.md to write the internet section into")
    add_args(p)
    args = p.parse_args(argv)
    import inet_report
    started = time.localtime()
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    ib = InternetBench(args)
    t_begin = time.monotonic()
    try:
        ib.setup()
        if args.inet_serve:
            # Only the swarm, for experiments: clients in this namespace
            # (nsenter -t PID -n -m) use the magnets and the bootstrap node.
            for label, t in ib.torrents.items():
                print(json.dumps({"label": label, "magnet": t["magnet"],
                                  "bootstrap": f"127.0.0.1:{ib.dht_ports[0]}",
                                  "pid": os.getpid()}), flush=True)
            try:
                time.sleep(args.inet_serve)
            except KeyboardInterrupt:
                pass
            return 0
        ib.run()
    finally:
        ib.stop_all()
        if args.inet_keep:
            shutil.copytree(ib.logdir, args.inet_keep, dirs_exist_ok=True)
    load_after = " ".join(open("/proc/loadavg").read().split()[:3])
    section = inet_report.report(ib, bench.machine_info(args), started, load_before, load_after,
                                 time.monotonic() - t_begin)
    print(section)
    if args.out:
        inet_report.write_section(args.out, section)
        log(f"wrote the internet section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
