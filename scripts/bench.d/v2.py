#!/usr/bin/python3
"""v2: the same data as a v1 and as a v2 torrent (BEP 52), side by side in one run.

Run by `scripts/bench --v2` inside a private network and mount namespace
(only loopback exists). Issue 14 item 7: v2 reads are answered block by
block, each 16 KiB block checked against its file's Merkle tree as it
arrives (src/swarm/block_verify.rs), where a v1 read must wait for its
whole piece and its SHA-1.

The swarm: four python3-libtorrent 2.0.8 seeders (mountpoint-tests/lt/
ltnode.py --seed, no DHT, no upload limit), each seeding the same directory
(a 1 GiB file of random bytes and a small file) as one torrent: v1 and v2
(v2-only, `--flavor v2`), each with 256 KiB and with 4 MiB pieces.
btfs-mount mounts each by its magnet (`xt=urn:btih` for v1, `xt=urn:btmh`
for v2) with `--peer` naming its seeder, `--no-dht`, default settings
otherwise, a fresh cache directory and a fresh mount for every sample.

What is measured, each `--reps` times, v1 and v2 taking turns (order
swapped every repetition):
  random read  20 pread(2)s of 4 KiB at random 4 KiB-aligned offsets of the
               1 GiB file (the same offsets for v1 and v2 in a repetition),
               each checked against the source; p50 and p90 over all
               samples (nearest rank); and the seeder's payload bytes sent
               per byte read (libtorrent's total_payload_upload, before and
               1.5 s after the reads).
  cold read    the 1 GiB file read whole with 128 KiB read(2) calls (what
               cat does); MB/s = 10^6 bytes/s; seeder bytes sent per byte.

With --v2-base-bin, a second btfs-mount binary (say main's) takes every
sample too, right after this one's with the same offsets: a second table
gives its cells and this binary's v2 against it, from the same run.

Writes the `v2` section of bench/RESULTS.md (sections.py).
"""

import argparse
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
import sections  # noqa: E402
from bench import KIB, MIB, Proc, fmt, fr, log, med, pct  # noqa: E402

SECTION = "v2"
PIECES = (("256k", 256 * KIB), ("4m", 4 * MIB))
FLAVORS = ("v1", "v2")


class Seeder:
    """One ltnode seeding DIR as a `flavor` torrent with `piece`-byte pieces."""

    def __init__(self, data, flavor, piece, logdir):
        self.flavor = flavor
        self.proc = Proc([bench.PY, bench.LTNODE, "--seed", data, "--piece-size", str(piece),
                          "--flavor", flavor], f"seed-{flavor}-{piece}", logdir)
        self.port = self.proc.wait_event("ready", 30)["port"]
        self.torrent = self.proc.wait_event("torrent", 600)
        self.proc.wait_event("seeding", 600)
        if flavor == "v2":
            self.magnet = f"magnet:?xt=urn:btmh:1220{self.torrent['info_hash_v2']}"
        else:
            self.magnet = f"magnet:?xt=urn:btih:{self.torrent['info_hash']}"
        self.sent = 0

    def uploaded(self, settle=1.5):
        """Payload bytes sent so far: the last `progress` event after `settle` s."""
        time.sleep(settle)
        while True:
            try:
                e = self.proc.q.get_nowait()
            except queue.Empty:
                break
            if e is None:
                raise RuntimeError(f"{self.proc.name} exited")
            if e.get("event") == "progress" and "total_upload" in e:
                self.sent = max(self.sent, e["total_upload"])
        return self.sent


class Run:
    def __init__(self, a):
        self.a = a
        self.work = a.work
        self.logdir = os.path.join(self.work, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.counter = 0
        self.R = {}

    def add(self, key, v):
        self.R.setdefault(key, []).append(v)

    def fresh(self, kind):
        self.counter += 1
        d = os.path.join(self.work, f"{kind}-{self.counter}")
        os.makedirs(d)
        return d

    def make_data(self):
        self.data = os.path.join(self.work, "data")
        os.makedirs(self.data)
        self.size = self.a.size_mib * MIB
        self.src = os.path.join(self.data, "big.bin")
        log(f"writing {self.a.size_mib} MiB of random data")
        with open(self.src, "wb") as f:
            left = self.size
            while left:
                n = min(left, 16 * MIB)
                f.write(os.urandom(n))
                left -= n
        with open(os.path.join(self.data, "small.txt"), "w") as f:
            f.write("a small file\n")

    def expect(self, off):
        with open(self.src, "rb") as f:
            f.seek(off)
            return f.read(4 * KIB)

    def mount(self, seeder, binary):
        cache, mnt = self.fresh("cache"), self.fresh("mnt")
        argv = [binary, seeder.magnet, mnt, "--cache-dir", cache, "--no-dht",
                "--peer", f"127.0.0.1:{seeder.port}"]
        with open(os.path.join(self.logdir, f"btfs-mount-{self.counter}.stderr"), "wb") as err:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                               timeout=120)
        if r.returncode != 0 or not bench.is_mounted(mnt):
            raise RuntimeError(f"btfs-mount failed (rc {r.returncode}): {bench.tail(err.name)}")
        pid = bench.find_daemon(binary, mnt)
        return mnt, pid, cache

    def path(self, mnt, seeder):
        return os.path.join(mnt, seeder.torrent["name"], "big.bin")

    def random(self, seeder, offsets, binary):
        mnt, pid, cache = self.mount(seeder, binary)
        up0 = seeder.uploaded(0.5)
        lat = bench.random_reads(self.path(mnt, seeder), offsets, self.expect)
        sent = seeder.uploaded() - up0
        bench.unmount(mnt, pid)
        shutil.rmtree(cache)
        return lat, sent / (len(offsets) * 4 * KIB)

    def cold(self, seeder, binary):
        mnt, pid, cache = self.mount(seeder, binary)
        up0 = seeder.uploaded(0.5)
        n, secs = bench.read_file(self.path(mnt, seeder))
        if n != self.size:
            raise RuntimeError(f"read {n} bytes of {self.size}")
        sent = seeder.uploaded() - up0
        bench.unmount(mnt, pid)
        shutil.rmtree(cache)
        return n / secs, sent / n


def rows_of(run, b=""):
    """The table's rows for binary `b` ("": --bin, "base": --v2-base-bin)."""
    R = {k[:3]: v for k, v in run.R.items() if (k[3] if len(k) > 3 else "") == b}
    rows = []
    for label, nm in (("4m", "4 MiB"), ("256k", "256 KiB")):
        for q in (50, 90):
            v1 = R.get(("rand", label, "v1"), [])
            v2 = R.get(("rand", label, "v2"), [])
            p1 = pct(v1, q) * 1000 if v1 else None
            p2 = pct(v2, q) * 1000 if v2 else None
            rows.append([f"cold random 4 KiB read p{q} (ms), {nm} pieces", fr(p1, 1), fr(p2, 1),
                         fr(p2 / p1 if p1 and p2 else None)])
    for label, nm in (("4m", "4 MiB"), ("256k", "256 KiB")):
        v1, v2 = R.get(("rsent", label, "v1"), []), R.get(("rsent", label, "v2"), [])
        rows.append([f"seeder bytes sent per byte read, random reads, {nm} pieces",
                     fmt(v1, digits=0), fmt(v2, digits=0),
                     fr(med(v2) / med(v1) if v1 and v2 and med(v1) else None)])
    for label, nm in (("4m", "4 MiB"), ("256k", "256 KiB")):
        v1, v2 = R.get(("cold", label, "v1"), []), R.get(("cold", label, "v2"), [])
        rows.append([f"cold sequential read of {run.size // MIB} MiB (MB/s), {nm} pieces",
                     fmt(v1), fmt(v2), fr(med(v2) / med(v1) if v1 and v2 else None)])
    for label, nm in (("4m", "4 MiB"), ("256k", "256 KiB")):
        v1, v2 = R.get(("csent", label, "v1"), []), R.get(("csent", label, "v2"), [])
        rows.append([f"seeder bytes sent per byte read, cold read, {nm} pieces",
                     fmt(v1, digits=3), fmt(v2, digits=3),
                     fr(med(v2) / med(v1) if v1 and v2 and med(v1) else None, 3)])
    return rows


def v2_of(run, b, row):
    """Row `row`'s v2 value for binary `b`: p50/p90 or median."""
    R = {k[:3]: v for k, v in run.R.items() if (k[3] if len(k) > 3 else "") == b}
    label = "4m" if "4 MiB" in row else "256k"
    if row.startswith("cold random"):
        v = R.get(("rand", label, "v2"), [])
        return pct(v, 50 if " p50 " in row else 90) * 1000 if v else None
    key = {"seeder bytes sent per byte read, random": "rsent", "cold sequential": "cold",
           "seeder bytes sent per byte read, cold": "csent"}
    for pre, k in key.items():
        if row.startswith(pre):
            v = R.get((k, label, "v2"), [])
            return med(v) if v else None
    return None


def report(run, seeders, started, load_before, load_after, a):
    rows = rows_of(run)
    head = ["metric", "v1", "v2", "v2 / v1"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    base = []
    if a.base_bin:
        bhead = ["metric", "base v1", "base v2", "base v2 / v1", "v2: this / base"]
        base = ["", f"The same run with the base binary (`--v2-base-bin {a.base_bin}`), "
                "each sample right after this binary's, same offsets:", "",
                "| " + " | ".join(bhead) + " |", "|" + "---|" * len(bhead)]
        for r, br in zip(rows, rows_of(run, "base")):
            this, other = v2_of(run, "", r[0]), v2_of(run, "base", r[0])
            ratio = fr(this / other if this and other else None, 2)
            base.append("| " + " | ".join(br + [ratio]) + " |")
    commit = subprocess.run(["git", "-C", bench.ROOT, "log", "-1", "--format=%h %s"],
                            capture_output=True, text=True).stdout.strip()[:90]
    md = [sections.begin(SECTION, "--v2"), "",
          "## v1 and v2 torrents of the same data (scripts/bench --v2)", "",
          f"Written by `scripts/bench --v2` on {time.strftime('%Y-%m-%d %H:%M %Z', started)} "
          f"at `{commit}`; {a.reps} repetitions, v1 and v2 in turns (order swapped each "
          f"repetition), load average {load_before} before, {load_after} after. One "
          f"python3-libtorrent 2.0.8 seeder per torrent (ltnode.py --seed, loopback, no "
          f"limits), the same {run.size // MIB} MiB file as v1 (`btih` magnet) and v2-only "
          f"(`btmh` magnet) torrents; btfs-mount with `--peer` and `--no-dht`, default "
          f"settings, fresh cache and mount per sample. Random reads: {a.random_reads} "
          f"preads of 4 KiB at random offsets per sample, nearest-rank percentiles over "
          f"{a.reps}×{a.random_reads} samples. Cells: median (min–max). MB/s = 10^6 bytes/s.",
          "", "\n".join(lines + base), "",
          "v1: a read waits for every piece under it and its SHA-1. v2: for the 16 KiB "
          "blocks under it, each checked against its file's Merkle tree as it arrives "
          "(leaf hashes asked with a BEP 52 `hash request` of base layer 0, proven up to "
          "the `pieces root`); a piece is still had (advertised, uploaded) only once "
          "verified whole. Only reads that leave at least 32 blocks (512 KiB) of their piece "
          "out, not asked for yet, go block by block: with 256 KiB pieces (16 blocks) every "
          "v2 read waits for its whole piece too, so those rows compare the whole-piece "
          "paths (SHA-1 against the Merkle root of the piece); a sequential reader's pieces "
          "are fetched ahead and mostly wait whole as well. On a loaded 2-core machine the "
          "absolute latencies are noisy: compare the ratios of the same run.", "",
          sections.end(SECTION), ""]
    return "\n".join(md)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", help="RESULTS.md whose v2 section to rewrite")
    p.add_argument("--v2-reps", dest="reps", type=int, default=3)
    p.add_argument("--v2-size-mib", dest="size_mib", type=int, default=1024)
    p.add_argument("--v2-random-reads", dest="random_reads", type=int, default=20)
    p.add_argument("--v2-no-cold", dest="no_cold", action="store_true",
                   help="random reads only")
    p.add_argument("--v2-base-bin", dest="base_bin",
                   help="a second btfs-mount binary measured in the same run (e.g. main's)")
    a = p.parse_args(argv)
    os.makedirs(a.work, exist_ok=True)
    started = time.localtime()
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    run = Run(a)
    seeders = {}
    try:
        run.make_data()
        for label, piece in PIECES:
            for fl in FLAVORS:
                log(f"seeder {fl} {label}: hashing")
                seeders[(label, fl)] = Seeder(run.data, fl, piece, run.logdir)
        bins = [("", a.bin)] + ([("base", a.base_bin)] if a.base_bin else [])
        for rep in range(a.reps):
            order = FLAVORS if rep % 2 == 0 else FLAVORS[::-1]
            border = bins if rep % 2 == 0 else bins[::-1]
            for label, _ in PIECES:
                offs = bench.random_offsets(run.size, a.random_reads, seed=3000 + rep)
                for fl in order:
                    for b, binary in border:
                        tag = (b,) if b else ()
                        lat, per = run.random(seeders[(label, fl)], offs, binary)
                        for x in lat:
                            run.add(("rand", label, fl) + tag, x)
                        run.add(("rsent", label, fl) + tag, per)
                        log(f"rep {rep + 1} {fl} {label} {b or 'this'}: random p50 "
                            f"{pct(lat, 50) * 1000:.1f} ms, p90 {pct(lat, 90) * 1000:.1f} ms, "
                            f"{per:.0f} bytes sent per byte")
                if a.no_cold:
                    continue
                for fl in order:
                    for b, binary in border:
                        tag = (b,) if b else ()
                        rate, per = run.cold(seeders[(label, fl)], binary)
                        run.add(("cold", label, fl) + tag, rate / 1e6)
                        run.add(("csent", label, fl) + tag, per)
                        log(f"rep {rep + 1} {fl} {label} {b or 'this'}: cold "
                            f"{rate / 1e6:.0f} MB/s, {per:.3f} bytes sent per byte")
    finally:
        for s in seeders.values():
            s.proc.stop()
    load_after = " ".join(open("/proc/loadavg").read().split()[:3])
    md = report(run, seeders, started, load_before, load_after, a)
    print(md)
    print(json.dumps({"/".join(k): v for k, v in run.R.items()}), file=sys.stderr)
    if a.out:
        sections.write(a.out, SECTION, md)
        log(f"wrote the v2 section of {a.out}")


if __name__ == "__main__":
    main(sys.argv[1:])
