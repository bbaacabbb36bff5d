#!/usr/bin/python3
"""inet_seeders: what each seeder was doing when a read started, and when it
answered (player seeks and random reads of an internet-like run).

Reads what `scripts/bench --internet --inet-trace --inet-keep DIR` kept in
DIR (reads.jsonl, relay-trace.jsonl) and prints, for every read that waited
(5 ms or more):

- `player`: each seek of the player test: its wait; per seeder asked for
  its blocks, the requests the client had outstanding there at the seek
  (readahead queued ahead of the read: `q`), the blocks it sent in the
  second before (`1s`), and when its first and last block of the read
  arrived (ms after the seek); then the median wait, and the wait of the
  seeks where a seeder asked had readahead queued against those where
  none had;
- `random` (256 KiB pieces): per seeder asked, the blocks it sent for the
  read and when the first and last arrived after the request, and whether
  it was asked for the read before (`again`); then, over all reads, how
  often a seeder's last block came within 75 ms of the request (one round
  trip) rather than a libtorrent tick later, for seeders asked for the
  read before and for those that were not, and how many distinct seeders
  the reads went to.

Usage: inet_seeders.py DIR [--client btfs-mount] [--test player|random]
                           [--pieces 256k|4m]
"""

import argparse
import bisect
import collections
import json
import statistics
import sys

PIECE = {"256k": 256 * 1024, "4m": 4 * 1024 * 1024}
PROMPT = 0.075


def load(keep):
    reads = []
    with open(f"{keep}/reads.jsonl") as f:
        for line in f:
            try:
                reads.append(json.loads(line))
            except ValueError:
                pass
    trace = []
    with open(f"{keep}/relay-trace.jsonl") as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if e.get("msg") in ("request", "piece", "cancel"):
                # The client's messages when it sent them, the seeders' when
                # they reached it.
                e["t"] = e["t_in"] if e["dir"] == "c2s" else e["t"]
                e["seeder"] = e["relay"].split(":")[0]
                trace.append(e)
    trace.sort(key=lambda e: e["t"])
    return reads, trace


def waited(reads, client, test, label):
    return [r for r in reads if r.get("test") == test and r.get("client") == client
            and r.get("label") == label and "t1" in r and r["t2"] - r["t1"] >= 0.005
            and (test != "player" or r.get("seek"))]


def pieces_of(r, plen):
    return set(range(r["off"] // plen, (r["off"] + r["len"] - 1) // plen + 1))


def player(reads, trace, client, label):
    times = [e["t"] for e in trace]
    plen = PIECE[label]
    rows = []
    for r in waited(reads, client, "player", label):
        t1, t2 = r["t1"], r["t2"]
        pieces = pieces_of(r, plen)
        # Requests outstanding at the seek (20 s back is far more than any
        # request lives), per seeder and connection.
        out = collections.defaultdict(dict)
        for e in trace[bisect.bisect_left(times, t1 - 20):bisect.bisect_right(times, t1)]:
            k = (e["conn"], e["index"], e["begin"])
            if e["msg"] == "request":
                out[e["seeder"]][k] = True
            elif e["msg"] == "piece":
                out[e["seeder"]].pop(k, None)
            elif k in out[e["seeder"]]:
                out[e["seeder"]][k] = False
        before = collections.Counter(
            e["seeder"] for e in trace[bisect.bisect_left(times, t1 - 1):bisect.bisect_left(times, t1)]
            if e["msg"] == "piece")
        got = collections.defaultdict(list)
        for e in trace[bisect.bisect_left(times, t1):bisect.bisect_right(times, t2 + 0.001)]:
            if e["msg"] == "piece" and e["index"] in pieces:
                got[e["seeder"]].append(e["t"] - t1)
        cells = []
        queued = False
        for s in sorted(got):
            q = sum(out[s].values())
            queued |= q > 0
            cells.append(f"{s.split('.')[-1]}: q {q} 1s {before[s]} "
                         f"{1000 * min(got[s]):.0f}-{1000 * max(got[s]):.0f}")
        rows.append((t2 - t1, queued))
        print(f"  seek to {r['off'] / 2**20:.1f} MiB, wait {1000 * (t2 - t1):.0f} ms | "
              + " | ".join(cells))
    if rows:
        med = statistics.median(w for w, _ in rows)
        q = [w for w, b in rows if b]
        nq = [w for w, b in rows if not b]
        print(f"  {len(rows)} seeks that waited: median {1000 * med:.0f} ms; with readahead "
              f"queued at a seeder asked: {len(q)} (median "
              f"{1000 * statistics.median(q) if q else 0:.0f} ms), none queued: {len(nq)} "
              f"(median {1000 * statistics.median(nq) if nq else 0:.0f} ms)")


def random_reads(reads, trace, client, label):
    times = [e["t"] for e in trace]
    plen = PIECE[label]
    asked_before = set()
    prompt = collections.defaultdict(lambda: [0, 0])
    used = collections.Counter()
    for r in waited(reads, client, "random", label):
        t1, t2 = r["t1"], r["t2"]
        pieces = pieces_of(r, plen)
        req = {}
        got = collections.defaultdict(list)
        for e in trace[bisect.bisect_left(times, t1):bisect.bisect_right(times, t2 + 0.001)]:
            if e["index"] not in pieces:
                continue
            if e["msg"] == "request":
                req.setdefault(e["seeder"], e["t"])
            elif e["msg"] == "piece":
                got[e["seeder"]].append(e["t"])
        cells = []
        for s in sorted(req):
            if not got[s]:
                continue
            last = max(got[s]) - req[s]
            again = s in asked_before
            prompt[again][0] += last <= PROMPT
            prompt[again][1] += 1
            used[s] += 1
            cells.append(f"{s.split('.')[-1]}: {len(got[s])} blocks "
                         f"{1000 * (min(got[s]) - req[s]):.0f}-{1000 * last:.0f}"
                         f"{' again' if again else ''}")
        asked_before |= set(req)
        print(f"  wait {1000 * (t2 - t1):.0f} ms | " + " | ".join(cells))
    for again in (False, True):
        n, total = prompt[again]
        if total:
            print(f"  seeders {'asked before' if again else 'asked for the first time'}: "
                  f"last block within {PROMPT * 1000:.0f} ms of the request in {n} of {total}")
    print(f"  reads per seeder: {dict(sorted((s.split('.')[-1], n) for s, n in used.items()))}")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("keep")
    p.add_argument("--client", default="btfs-mount")
    p.add_argument("--test", default="player", choices=("player", "random"))
    p.add_argument("--pieces", default="256k", choices=tuple(PIECE))
    a = p.parse_args(argv)
    reads, trace = load(a.keep)
    print(f"{a.client}, {a.test}, {a.pieces} pieces")
    if a.test == "player":
        player(reads, trace, a.client, a.pieces)
    else:
        random_reads(reads, trace, a.client, a.pieces)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
