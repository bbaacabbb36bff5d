#!/usr/bin/python3
"""inet_trace: where the bytes and the time of a seek test went.

Reads what `scripts/bench --internet --inet-trace --inet-keep DIR` kept in
DIR: reads.jsonl (every measured read with its start and end times),
relay-trace.jsonl (every BitTorrent request, cancel, reject and piece
message the relays forwarded, with the time), ftrace.txt (the kernel's FUSE
requests and page cache readahead, CLOCK_MONOTONIC), and prints, for each
seek/random test of the chosen client:

- per read: its pieces; how long after the read started the first request
  for them left the client and the last of their blocks arrived; how many
  seeders were sent requests while it waited and how many sent its blocks;
  how many requests went out for its blocks, and for how many blocks more
  than one seeder was asked; the blocks the client already had outstanding (asked
  for, not yet received or cancelled) when the read started and how long
  they kept arriving; bytes delivered while the read waited, split into
  `this read` (its own pieces), `ahead` (pieces after it: readahead for the
  new position), `stale` (pieces of or after an earlier read: demand left
  from old positions) and `other`, with `dup` the second and later copies of
  its own blocks; cancels sent; the kernel's FUSE READ
  requests in flight when it started and the readahead the kernel issued
  during the read;
- totals over the test: bytes by class, from the start of the measured
  reads to the client's exit, and the bytes seeders sent for blocks the
  client had already cancelled (the cancel arrived too late), and the
  chokes the seeders sent (each discards the client's requests, BEP 3).

Usage: inet_trace.py DIR [--client btfs-mount] [--test seek|random]
                         [--ahead-mib 32]
"""

import argparse
import bisect
import json
import os
import re
import sys
from collections import defaultdict

KIB = 1024
MIB = KIB * KIB
PIECE = {"256k": 256 * KIB, "4m": 4 * MIB}
BLOCK = 16 * KIB


def load_jsonl(path):
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def load_ftrace(path):
    """[(t, kind, fields)] from an ftrace text dump (trace_clock mono)."""
    out = []
    if not os.path.exists(path):
        return out
    pat = re.compile(r"\s(\d+\.\d+): (\w+): (.*)$")
    with open(path) as f:
        for line in f:
            m = pat.search(line)
            if not m:
                continue
            kind, rest = m.group(2), m.group(3)
            if kind.startswith("fuse_"):
                # "connection C req U [opcode N (NAME)] len L ..."; C is the
                # kernel dev_t of the mount: (major << 20) | minor.
                f = re.match(r"connection (\d+) req (\d+)(?: opcode \d+ \((\w+)\))?", rest)
                if not f:
                    continue
                c = int(f.group(1))
                fields = {"dev": f"{c >> 20}:{c & 0xfffff}", "unique": f.group(2),
                          "opcode": f.group(3)}
            else:
                fields = dict(kv.split("=", 1) for kv in rest.split() if "=" in kv)
            out.append((float(m.group(1)), kind, fields, rest))
    return out


def classify(piece, cur, earlier, ahead_pieces):
    """`this read` (under the read), `stale` (under an earlier read, or in
    the readahead window after one), `ahead` (in the window after this read)
    or `other`; an earlier read's own pieces count as stale first."""
    first, last = cur
    if first <= piece <= last:
        return "this read"
    if any(f <= piece <= l for f, l in earlier):
        return "stale"
    if last < piece <= last + ahead_pieces:
        return "ahead"
    if any(l < piece <= l + ahead_pieces for f, l in earlier):
        return "stale"
    return "other"


def analyse(keep, client, test, ahead_mib):
    reads = load_jsonl(os.path.join(keep, "reads.jsonl"))
    trace = load_jsonl(os.path.join(keep, "relay-trace.jsonl"))
    # Each message at the time the client saw it: its own messages when it
    # sent them (the relay read them), the seeders' when they reached it.
    for e in trace:
        if e["dir"] == "c2s" and "t_in" in e:
            e["t"] = e["t_in"]
    trace.sort(key=lambda e: e["t"])
    times = [e["t"] for e in trace]
    ft = load_ftrace(os.path.join(keep, "ftrace.txt"))
    mounts = [r for r in reads if r.get("event") == "mount"]
    tests = [r for r in reads if r.get("event") == "test" and r["client"] == client
             and r["test"] == test]
    for tst in tests:
        label = tst["label"]
        plen = PIECE[label]
        ahead_pieces = max(1, ahead_mib * MIB // plen)
        rs = [r for r in reads if r.get("test") == test and r.get("client") == client
              and r.get("label") == label and "t1" in r
              and tst["t_measure"] <= r["t1"] <= tst["t_stop"]]
        dev = None
        for m in mounts:
            if m["label"] == label and m["t0"] <= tst["t_measure"] and m["t0"] >= tst["t0"] - 1:
                dev = m["dev"]
        print(f"\n== {client} {test}, {label} pieces: {len(rs)} reads, test window "
              f"{tst['t_measure']:.3f}..{tst['t_end']:.3f}, seeders sent "
              f"{tst['sent'] / MIB:.1f} MiB for {len(rs) * rs[0]['len'] / MIB:.2f} MiB read"
              + (f", FUSE dev {dev}" if dev else ""))
        lo = bisect.bisect_left(times, tst["t_measure"] - 5)
        hi = bisect.bisect_right(times, tst["t_end"])
        window = trace[lo:hi]
        # outstanding requests per (relay, conn), replayed in time order
        outstanding = defaultdict(dict)  # (relay, conn) -> {(index, begin): t_requested}
        earlier = [(0, (128 * KIB - 1) // plen)]  # the warm-up read at 0
        totals = defaultdict(int)
        cancels_total = 0
        split = []  # per read: (wait, last block, FUSE reply), s after its start
        answer = []  # per read and seeder: its first block of the read, s after asked
        wi = 0
        fuse_out = {}  # unique -> t_send, READ (opcode 15) only
        fi = 0
        ftw = [x for x in ft if x[0] >= tst["t_measure"] - 5] if ft else []
        print("                                   ms      |  requests sent     | stale reqs  |"
              "  KiB delivered while the read waited     |        | kernel")
        print(" read  piece(s)   wait 1st-req last-blk asked/sent| reqs blocks >1 peer"
              "| at start drained| this   dup ahead stale other| cancels| FUSE READs "
              "pending, readahead")
        for k, r in enumerate(rs):
            first, last = r["off"] // plen, (r["off"] + r["len"] - 1) // plen
            t1, t2 = r["t1"], r["t2"]
            # replay the trace up to t1
            while wi < len(window) and window[wi]["t"] < t1:
                e = window[wi]
                wi += 1
                key = (e["relay"], e["conn"])
                blk = (e.get("index"), e.get("begin"))
                if e["msg"] == "request" and e["dir"] == "c2s":
                    outstanding[key][blk] = e["t"]
                elif e["msg"] in ("piece", "reject") and e["dir"] == "s2c":
                    outstanding[key].pop(blk, None)
                elif e["msg"] == "cancel" and e["dir"] == "c2s":
                    outstanding[key].pop(blk, None)
            out_now = [(key, blk) for key, d in outstanding.items() for blk in d]
            stale_now = [(key, blk) for key, blk in out_now
                         if not first <= blk[0] <= last]
            # during the read
            deliver = defaultdict(int)
            seeders = set()
            first_req = last_blk = None
            cancels = 0
            drained = None
            stale_set = set(stale_now)
            asked = defaultdict(set)  # block of this read -> relays asked during the read
            got = defaultdict(int)  # block of this read -> deliveries during the read
            peers_asked = set()
            req_t = {}  # (relay, index, begin) -> when this read's block was asked
            per_seeder = defaultdict(list)  # relay -> its blocks' times since asked
            j = wi
            while j < len(window) and window[j]["t"] <= t2:
                e = window[j]
                j += 1
                idx = e.get("index")
                if e["dir"] == "c2s" and e["msg"] == "request":
                    peers_asked.add(e["relay"])
                    if first <= idx <= last:
                        asked[(idx, e["begin"])].add(e["relay"])
                if e["dir"] == "c2s" and e["msg"] == "request" and first <= idx <= last:
                    req_t.setdefault((e["relay"], idx, e["begin"]), e["t"])
                if e["dir"] == "s2c" and e["msg"] == "piece":
                    sent_at = req_t.get((e["relay"], idx, e["begin"]))
                    if sent_at is not None:
                        per_seeder[e["relay"]].append(e["t"] - sent_at)
                    c = classify(idx, (first, last), earlier, ahead_pieces)
                    deliver[c] += e["length"]
                    if c == "this read":
                        seeders.add(e["relay"])
                        last_blk = e["t"] - t1
                        got[(idx, e["begin"])] += 1
                    key = ((e["relay"], e["conn"]), (idx, e["begin"]))
                    if key in stale_set:
                        stale_set.discard(key)
                        if not stale_set:
                            drained = e["t"] - t1
                elif e["dir"] == "c2s" and e["msg"] == "request":
                    if first <= idx <= last and first_req is None:
                        first_req = e["t"] - t1
                elif e["dir"] == "c2s" and e["msg"] == "cancel":
                    cancels += 1
                    key = ((e["relay"], e["conn"]), (idx, e["begin"]))
                    stale_set.discard(key)
            # kernel side
            rd_inflight = None
            fuse_end = None
            ra = []
            if ftw and dev:  # only a FUSE client has kernel-side requests to show
                while fi < len(ftw) and ftw[fi][0] < t1:
                    t, kind, f, _raw = ftw[fi]
                    fi += 1
                    if dev and f.get("dev") != dev:
                        continue
                    if kind == "fuse_request_send" and f.get("opcode") == "FUSE_READ":
                        fuse_out[f["unique"]] = t
                    elif kind == "fuse_request_end":
                        fuse_out.pop(f.get("unique"), None)
                rd_inflight = len(fuse_out)
                mine = set()
                for t, kind, f, _raw in ftw[fi:]:
                    if t > t2 + 0.05:
                        break
                    if dev and f.get("dev") != dev:
                        continue
                    if t <= t2 and kind == "fuse_request_send" and f.get("opcode") == "FUSE_READ":
                        mine.add(f["unique"])
                    elif kind == "fuse_request_end" and f.get("unique") in mine:
                        fuse_end = max(fuse_end or 0.0, t - t1)
                    if t <= t2 and kind.startswith("page_cache_"):
                        ra.append(f"{kind[11:13]}@{int(f['index']) * 4096 / MIB:.1f}M"
                                  f"+{int(f.get('size', 0)) * 4}K")
            dup = sum(n - 1 for n in got.values()) * BLOCK
            multi = sum(1 for r in asked.values() if len(r) > 1)
            totals["this read, duplicate"] += dup
            deliver["this read"] -= dup
            for c, v in deliver.items():
                totals[c] += v
            cancels_total += cancels
            pieces = f"{first}" if first == last else f"{first}-{last}"
            print(f" {k:3d} {pieces:>10} {(t2 - t1) * 1000:6.0f} "
                  f"{'-' if first_req is None else f'{first_req * 1000:.0f}':>7} "
                  f"{'-' if last_blk is None else f'{last_blk * 1000:.0f}':>8} {len(peers_asked):2d}/{len(seeders):<3d}| "
                  f"{sum(len(r) for r in asked.values()):5d} {len(asked):5d} {multi:5d} | "
                  f"{len(stale_now):5d} {'-' if drained is None else f'{drained * 1000:.0f}':>6} | "
                  f"{deliver['this read'] // KIB:5d} {dup // KIB:5d} {deliver['ahead'] // KIB:5d} "
                  f"{deliver['stale'] // KIB:5d} {deliver['other'] // KIB:5d} | {cancels:5d} | "
                  f"{'-' if rd_inflight is None else rd_inflight:>3} {' '.join(ra[:4])}")
            earlier.append((first, last))
            split.append((t2 - t1, last_blk, fuse_end))
            for key, ts in per_seeder.items():
                answer.append(min(ts))
        # after the last read until the client exits
        tail = defaultdict(int)
        while wi < len(window):
            e = window[wi]
            wi += 1
            if e["t"] > tst["t_end"]:
                break
            if e["dir"] == "s2c" and e["msg"] == "piece" and e["t"] > rs[-1]["t2"]:
                tail[classify(e["index"], (rs[-1]["off"] // plen,
                                           (rs[-1]["off"] + rs[-1]["len"] - 1) // plen),
                              earlier[:-1], ahead_pieces)] += e["length"]
        # Blocks the seeders sent after the client had cancelled them on that
        # connection (the cancel reached the seeder too late).
        cancelled = defaultdict(set)
        late = 0
        for e in window:
            if e["t"] > tst["t_end"]:
                break
            key = (e["relay"], e["conn"])
            blk = (e.get("index"), e.get("begin"))
            if e["dir"] == "c2s" and e["msg"] == "cancel":
                cancelled[key].add(blk)
            elif e["dir"] == "c2s" and e["msg"] == "request":
                cancelled[key].discard(blk)
            elif e["dir"] == "s2c" and e["msg"] == "piece" and blk in cancelled[key]:
                cancelled[key].discard(blk)
                if e["t"] >= tst["t_measure"]:
                    late += e["length"]
        tot = sum(totals.values()) + sum(tail.values())
        print(" where the wait went, p50 / p90 ms over the reads: " + wait_split(split, answer))
        print(f" totals while reads waited, MiB: " + ", ".join(
            f"{c} {v / MIB:.1f}" for c, v in sorted(totals.items())))
        print(f" after the last read until exit, MiB: " + ", ".join(
            f"{c} {v / MIB:.1f}" for c, v in sorted(tail.items())))
        # A choke discards our requests (BEP 3): the client asks for them
        # again, and a seeder that had queued them sends them twice.
        chokes = sum(1 for e in window if e["dir"] == "s2c" and e["msg"] == "choke"
                     and tst["t_measure"] <= e["t"] <= tst["t_end"])
        print(f" relayed piece payload in the test: {tot / MIB:.1f} MiB; cancels sent: "
              f"{cancels_total}; blocks delivered after their cancel was sent: "
              f"{late / MIB:.1f} MiB; chokes received: {chokes}")


def pct(xs, q):
    """Nearest-rank percentile of a non-empty list."""
    s = sorted(xs)
    return s[max(0, min(len(s) - 1, -(-q * len(s) // 100) - 1))]


def wait_split(split, answer):
    """The wait of a read split into: the network (its last block reached
    btfs-mount), btfs-mount after it (hash, store, the FUSE reply: the
    kernel's FUSE_READ ended) and the reader's wake-up (FUSE reply to the
    pread returning), plus each seeder's first block of a read after it
    was asked."""
    def pp(xs):
        return f"{pct(xs, 50) * 1000:.0f} / {pct(xs, 90) * 1000:.0f}" if xs else "-"
    net = [lb for _, lb, _ in split if lb is not None]
    ours = [fe - lb for _, lb, fe in split if lb is not None and fe is not None]
    wake = [w - fe for w, _, fe in split if fe is not None]
    return (f"wait {pp([w for w, _, _ in split])}; last block arrived {pp(net)}; "
            f"then btfs-mount to the FUSE reply {pp(ours)}; then the reader's wake-up "
            f"{pp(wake)}; a seeder's first block of a read after it was asked {pp(answer)}")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("keep")
    p.add_argument("--client", default="btfs-mount")
    p.add_argument("--test", default="seek")
    p.add_argument("--ahead-mib", type=int, default=32)
    a = p.parse_args(argv)
    analyse(a.keep, a.client, a.test, a.ahead_mib)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
