#!/usr/bin/python3
"""rss: peak RSS and throughput of cold 1 GiB reads, btfs-mount binaries side by side.

Run by `bench/rss` inside a private network and mount namespace (only
loopback exists; nothing leaves the machine). Uses the loopback swarm of
scripts/bench.d/bench.py (one libtorrent seeder of the same random file as
two torrents, 256 KiB and 4 MiB pieces, plus a small local DHT) and its
cold read: a fresh cache dir, the background daemon mounted with the magnet
and one DHT bootstrap node, the file read with 128 KiB read(2) calls, then
the daemon's VmHWM read just before unmount.

Each `--bin NAME=PATH` is measured `--reps` times per piece size, the
binaries taking turns (A B A B ...) so that load on the machine falls on
both alike. Prints a Markdown table (median, min-max) and the load average.
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts", "bench.d"))
import bench  # noqa: E402

MIB = bench.MIB


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", action="append", required=True, metavar="NAME=PATH",
                   help="a btfs-mount binary to measure (repeatable)")
    p.add_argument("--work", required=True, help="scratch directory")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--size-mib", type=int, default=1024)
    p.add_argument("--pieces", default="256k,4m",
                   help="piece sizes to measure, comma-separated (256k, 4m)")
    p.add_argument("--arg", action="append", default=[], metavar="ARG",
                   help="one more argument for every btfs-mount binary (repeatable), e.g. "
                        "--arg=--no-utp: every binary gets the same")
    args = p.parse_args(argv)
    labels = [x for x in args.pieces.split(",") if x]
    if not set(labels) <= {"256k", "4m"}:
        p.error("--pieces takes 256k and 4m")
    bins = [b.split("=", 1) for b in args.bin]
    first = bins[0][1]
    bargs = argparse.Namespace(bin=first, work=args.work, reps=args.reps,
                               size_mib=args.size_mib, random_reads=0, btfs_cap_mib=0,
                               btfs_cap_seconds=0, skip_btfs=True, out=None)
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    b = bench.Bench(bargs)
    b.extra_args = list(args.arg)
    rows = {}
    try:
        b.make_data()
        b.start_swarm()
        for label in labels:
            for i in range(args.reps):
                for name, path in bins:
                    b.bin = os.path.realpath(path)
                    rate, rss, cpu, _, sent = b.bm_cold(label, keep=False)
                    rows.setdefault((name, label), []).append((rate, rss, cpu))
                    bench.log(f"{name} {label}: {rate / 1e6:.0f} MB/s, VmHWM {rss / MIB:.1f} MiB, "
                              f"CPU {cpu:.2f} s, seeder sent {sent:.3f} per byte read")
    finally:
        b.stop_all()
    load_after = " ".join(open("/proc/loadavg").read().split()[:3])

    def cell(xs, scale, digits):
        m = statistics.median(xs)
        return f"{m * scale:.{digits}f} ({min(xs) * scale:.{digits}f}–{max(xs) * scale:.{digits}f})"

    extra = f", every binary run with `{' '.join(args.arg)}`" if args.arg else ", default flags"
    print(f"cold read of {args.size_mib} MiB, {args.reps} repetitions per binary and piece size, "
          f"binaries taking turns{extra}; load average before {load_before}, after {load_after}\n")
    print("| binary | pieces | peak RSS, VmHWM (MiB) | cold read (MB/s) | CPU s |")
    print("|---|---|---|---|---|")
    for label in labels:
        for name, _ in bins:
            xs = rows[(name, label)]
            print(f"| {name} | {label} | {cell([x[1] for x in xs], 1 / MIB, 1)} | "
                  f"{cell([x[0] for x in xs], 1e-6, 0)} | {cell([x[2] for x in xs], 1, 2)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
