#!/usr/bin/python3
"""compare: the loopback rows for several btfs-mount binaries in one run
(before/after a change, issue 13: "the benchmark passes with unchanged
numbers, within noise, in the same run before and after").

Run by `scripts/bench --compare REV` inside a private network and mount
namespace (only loopback exists). scripts/bench builds REV's binary
(`git archive REV` into /var/tmp/btfs-bench-rev, its own target dir)
before entering the namespace and passes `--bin REV=PATH --bin HEAD=PATH`;
`--variant 'LABEL=FLAGS'` adds the last binary again, mounted with FLAGS
(e.g. `HEAD tcp=--no-utp --encryption off`); `--variant
'LABEL@BIN=FLAGS'` adds the binary labelled BIN instead.

The swarm and the measurements are bench.py's (one libtorrent seeder with
the same file as a 256 KiB and a 4 MiB torrent, a local DHT; btfs-mount
given the magnet and one bootstrap node, default settings):
  first byte   mount start until small.txt was read (256 KiB pieces)
  cold read    the file read whole with 128 KiB read(2)s, fresh cache
  random read  20 preads of 4 KiB at random offsets (the same offsets for
               every binary), fresh mount and cache each repetition
  RSS / CPU    of the mount daemon during the cold read
Each repetition runs every binary once per row, in an order rotated every
repetition, so drift on a shared machine spreads over all of them. The first
binary is the baseline: every other column has its ratio to it.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
import sections  # noqa: E402
from bench import GIB, MIB, fmt, fr, log, med, pct  # noqa: E402

SECTION = "compare"


def parse_bins(a):
    """[(label, binary path, extra flags)] from --bin and --variant."""
    out = []
    for spec in a.bin:
        label, sep, path = spec.partition("=")
        if not sep or not os.path.exists(path):
            raise SystemExit(f"compare.py: --bin {spec!r}: want LABEL=PATH of a binary")
        out.append((label, os.path.realpath(path), []))
    for spec in a.variant:
        label, sep, flags = spec.partition("=")
        label, at, base = label.partition("@")
        bases = [b for b in out if b[0] == base] if at else out[-1:]
        if not sep or not bases:
            raise SystemExit(f"compare.py: --variant {spec!r}: want LABEL[@BIN_LABEL]=FLAGS "
                             "(default: the last --bin)")
        out.append((label, bases[0][1], shlex.split(flags)))
    if len(out) < 2:
        raise SystemExit("compare.py: give at least two binaries (--bin / --variant)")
    return out


def version_of(path):
    r = subprocess.run([path, "--version"], capture_output=True, text=True)
    return (r.stdout + r.stderr).strip()


def within_noise(before, after, higher_is_better):
    """'yes' when after's median is within ±10 % of before's, or inside
    before's min–max; '**no**' (worse) or 'better' otherwise."""
    if not before or not after:
        return "n/a"
    b, x = med(before), med(after)
    if min(before) <= x <= max(before) or abs(x / b - 1) <= 0.10:
        return "yes"
    better = x > b if higher_is_better else x < b
    return "better" if better else "**no**"


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", action="append", default=[], metavar="LABEL=PATH")
    p.add_argument("--variant", "--cmp-variant", action="append", default=[],
                   metavar="LABEL=FLAGS")
    p.add_argument("--work", required=True)
    p.add_argument("--out", help="RESULTS.md whose compare section to rewrite")
    p.add_argument("--cmp-reps", dest="reps", type=int, default=3)
    p.add_argument("--cmp-size-mib", dest="size_mib", type=int, default=1024)
    p.add_argument("--cmp-random-reads", dest="random_reads", type=int, default=20)
    a = p.parse_args(argv)
    bins = parse_bins(a)
    started = time.localtime()
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    # bench.Bench wants bench.py's arguments; only bin, work and size are used.
    ba = argparse.Namespace(bin=bins[0][1], work=a.work, size_mib=a.size_mib)
    b = bench.Bench(ba)
    labels = ("256k", "4m")
    R = {}

    def add(key, v):
        R.setdefault(key, []).append(v)

    def use(i):
        b.bin, b.extra_args = bins[i][1], bins[i][2]
        return bins[i][0]

    try:
        b.make_data()
        b.start_swarm()
        n = len(bins)
        for rep in range(a.reps):
            order = [(rep + k) % n for k in range(n)]
            for i in order:
                name = use(i)
                fb, _ = b.bm_first_byte("256k")
                add(("first", name), fb)
                log(f"rep {rep + 1} {name}: first byte {fb:.3f} s")
            for label in labels:
                for i in order:
                    name = use(i)
                    rate, rss, cpu, _cache, sent = b.bm_cold(label, keep=False)
                    add(("cold", label, name), rate / 1e6)
                    add(("rss", label, name), rss)
                    add(("cpu", label, name), cpu / (b.size / GIB))
                    add(("sent", label, name), sent)
                    log(f"rep {rep + 1} {name}: cold {label} {rate / 1e6:.0f} MB/s, "
                        f"RSS {rss / MIB:.1f} MiB, CPU {cpu:.2f} s")
                offs = bench.random_offsets(b.size, a.random_reads, seed=2000 + rep)
                for i in order:
                    name = use(i)
                    lat = b.bm_random(label, offs)
                    for x in lat:
                        add(("rand", label, name), x)
                    log(f"rep {rep + 1} {name}: random {label} p50 "
                        f"{pct(lat, 50) * 1000:.1f} ms")
    finally:
        b.stop_all()
    load_after = " ".join(open("/proc/loadavg").read().split()[:3])

    names = [x[0] for x in bins]
    base = names[0]
    rows = []

    def row(title, key, show, higher_is_better, digits=0, scale=1.0, stat=None):
        cells = []
        for nm in names:
            v = R.get(key + (nm,), [])
            cells.append(show(v))
        ratios, checks = [], []
        for nm in names[1:]:
            bv, xv = R.get(key + (base,), []), R.get(key + (nm,), [])
            if stat:
                bv, xv = [stat(bv)] if bv else [], [stat(xv)] if xv else []
            ratios.append(fr(med(xv) / med(bv) if bv and xv and med(bv) else None))
            checks.append(within_noise(bv, xv, higher_is_better))
        rows.append([title] + cells + ratios + ["; ".join(checks)])

    ms = lambda v: fmt(v, 1000, 1)  # noqa: E731
    row("mount start → first byte of small.txt (ms), 256 KiB pieces", ("first",), ms, False)
    for label, nm in (("256k", "256 KiB"), ("4m", "4 MiB")):
        row(f"cold read of {b.size // MIB} MiB (MB/s), {nm} pieces", ("cold", label),
            lambda v: fmt(v), True)
    for label, nm in (("256k", "256 KiB"), ("4m", "4 MiB")):
        for q in (50, 90):
            row(f"cold random 4 KiB read p{q} (ms), {nm} pieces", ("rand", label),
                lambda v, q=q: fr(pct(v, q) * 1000 if v else None, 1), False,
                stat=lambda v, q=q: pct(v, q))
    for label, nm in (("256k", "256 KiB"), ("4m", "4 MiB")):
        row(f"peak RSS of the cold read (MiB), {nm} pieces", ("rss", label),
            lambda v: fmt(v, 1 / MIB, 1), False)
    for label, nm in (("256k", "256 KiB"), ("4m", "4 MiB")):
        row(f"CPU s per GiB, cold read, {nm} pieces", ("cpu", label),
            lambda v: fmt(v, digits=2), False)
    for label, nm in (("256k", "256 KiB"), ("4m", "4 MiB")):
        row(f"seeder bytes sent per byte read, cold read, {nm} pieces", ("sent", label),
            lambda v: fmt(v, digits=3), False)

    head = (["metric"] + names + [f"{nm} / {base}" for nm in names[1:]]
            + ["unchanged within noise? ¹"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    md = [sections.begin(SECTION, "--compare REV"), "",
          "## Before and after (scripts/bench --compare)", ""]
    md.append(f"Written by `scripts/bench --compare` on "
              f"{time.strftime('%Y-%m-%d %H:%M %Z', started)}; {a.reps} repetitions, every "
              f"binary once per row and repetition, in turns (order rotated each repetition), "
              f"on bench.py's loopback swarm (one libtorrent seeder, local DHT, "
              f"{b.size // MIB} MiB file). Cells: median (min–max); random reads: "
              f"nearest-rank percentiles over {a.reps}×{a.random_reads} samples. "
              f"MB/s = 10^6 bytes/s.\n")
    md.append("Binaries:\n")
    head = subprocess.run(["git", "-C", bench.ROOT, "log", "-1", "--format=%h %s"],
                          capture_output=True, text=True).stdout.strip()[:90]
    dirty = subprocess.run(["git", "-C", bench.ROOT, "status", "--porcelain",
                            "--untracked-files=no", "src"], capture_output=True,
                           text=True).stdout.strip()
    for nm, path, extra in bins:
        what = (f" (this tree: git {head}{', src/ changed' if dirty else ''})"
                if nm == "HEAD" else "")
        md.append(f"- `{nm}`{what}: {version_of(path)}, `{path}`"
                  + (f", mounted with `{' '.join(extra)}`" if extra else ", default flags"))
    md.append("")
    md.append(table + "\n")
    md.append("Notes:\n")
    md.append(f"1. yes: the median is within ±10 % of `{base}`'s, or inside its min–max; "
              f"better / **no**: outside both, in that direction. One cell per other binary. "
              f"The machine is shared: load average before {load_before}, after {load_after}.")
    for n_ in b.notes + bench.KILLED:
        md.append(f"- problem: {n_}")
    md.append("")
    md.append("<details><summary>Raw samples (compare)</summary>\n")
    md.append("```json")
    md.append(json.dumps({"/".join(k): v for k, v in R.items()}, sort_keys=True)
              .replace("], ", "],\n "))
    md.append("```\n</details>\n")
    md.append(sections.end(SECTION))
    print(table)
    if a.out:
        sections.write(a.out, SECTION, "\n".join(md))
        log(f"wrote the compare section of {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
