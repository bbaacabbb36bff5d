"""inet_report: the internet-like swarm's section of bench/RESULTS.md.

`report(ib, ...)` turns an InternetBench's samples into a Markdown section
(table with the goals of issue 18 marked met / missed, notes, raw samples)
between two marker lines; `write_section(path, section)` puts it into
RESULTS.md, replacing the previous internet section and keeping everything
else; `keep_section(old, new)` is what the loopback benchmark calls so that
rewriting its part keeps the internet section.
"""

import json
import os
import time

import bench
import sections
from bench import MIB

BEGIN = "<!-- BEGIN internet-swarm section (scripts/bench --internet rewrites it) -->"
END = "<!-- END internet-swarm section -->"
NAMES = {"256k": "256 KiB", "4m": "4 MiB"}
COLS = ("btfs-mount", "lt-download", "lt-stream", "rqbit")


def extract(text):
    """The internet section of a RESULTS.md text (markers included), or ""."""
    return sections.extract(text, "internet-swarm")


def keep_section(old, new):
    """`new` (a loopback report) followed by every marked section of `old`
    (this one, and those of --transports, --gateway, --compare)."""
    return sections.keep_all(old, new)


def write_section(path, section):
    sections.write(path, "internet-swarm", section)


def ms(v):
    return "n/a" if v is None else f"{v * 1000:.0f}"


def p(xs, q):
    return bench.pct(xs, q) if xs else None


def cell_pct(xs, q, scale=1000, digits=0):
    v = p(xs, q)
    if v is None:
        return "–"
    return f"{v * scale:.{digits}f}"


def ahead(bm, others):
    """Met text for 'ahead of the others' (lower is better)."""
    parts = []
    for name, v in others:
        if v is None or bm is None:
            parts.append(f"vs {name}: n/a")
        elif bm < v:
            parts.append(f"vs {name}: yes")
        else:
            parts.append(f"vs {name}: **no** ({bm * 1000:.0f} ≥ {v * 1000:.0f})")
    return "; ".join(parts)


def limit(v, goal, unit="ms", scale=1000, fmtd="{:.0f}"):
    if v is None:
        return f"≤ {fmtd.format(goal)}: n/a"
    x = v * scale
    if x <= goal:
        return f"≤ {fmtd.format(goal)}: yes"
    unit = f" {unit}" if unit else ""
    return f"≤ {fmtd.format(goal)}: **no** (+{fmtd.format(x - goal)}{unit}, ×{x / goal:.2f})"


def seeder_rates(ib, windows):
    """From the seeders' 0.1 s samples: (mean rate of each seeder over the
    windows, highest 1-s rate of any seeder), bytes/s."""
    path = os.path.join(ib.logdir, "seeder-samples.jsonl")
    try:
        samples = [json.loads(x) for x in open(path)]
    except (OSError, ValueError):
        return None, None
    means, peak = [], 0.0
    for (t0, t1) in windows:
        inside = [s for s in samples if t0 <= s["t"] <= t1]
        if len(inside) < 2:
            continue
        secs = inside[-1]["t"] - inside[0]["t"]
        means.extend((b - a) / secs for a, b in zip(inside[0]["up"], inside[-1]["up"]))
        j = 0
        for s in inside:
            # the latest sample at least 1 s before this one
            while j + 1 < len(inside) and inside[j + 1]["t"] <= s["t"] - 1.0:
                j += 1
            dt = s["t"] - inside[j]["t"]
            if dt >= 1.0:
                peak = max(peak, max((b - a) / dt for a, b in zip(inside[j]["up"], s["up"])))
    return means, peak


def reads_rows(rows, get, test, label, name, note, title, goals):
    """The rows of the seek or random test: cold reads (p50, p90, with the
    goals of issue 18), how the first session's reads were classified, and
    every read of the first session (for reference)."""
    def row(metric, cells, goal="", met=""):
        rows.append((metric,) + tuple(cells) + (goal, met))

    for q in (50, 90):
        cells = []
        for c in COLS:
            xs = get(f"{test}_cold", c, label)
            cells.append("–" if c == "lt-download" or not get(test, c, label) else
                         f"{cell_pct(xs, q)} (n={len(xs)})")
        bm = p(get(f"{test}_cold", "btfs-mount", label), q)
        others = [("libtorrent streaming", p(get(f"{test}_cold", "lt-stream", label), q)),
                  ("rqbit", p(get(f"{test}_cold", "rqbit", label), q))]
        g = goals.get((label, q))
        goal = (f"≤ {g} ms; " if g else "") + "ahead of libtorrent streaming and rqbit"
        met = (limit(bm, g) + "; " if g else "") + ahead(bm, others)
        row(f"{title}, cold reads only, p{q} (ms), {name} pieces {note} ¹²", cells, goal, met)
    cells = []
    for c in COLS:
        n = [get(f"{test}_n{x}1", c, label) for x in ("cold", "partial", "warm")]
        if c == "lt-download" or not n[0]:
            cells.append("–")
            continue
        # A test that failed after its first session has no session count.
        sessions = get(f"{test}_sessions", c, label)
        never = get(f"{test}_nevercold", c, label)
        cells.append(f"{sum(n[0])} / {sum(n[1])} / {sum(n[2])}; "
                     f"{max(sessions) if sessions else '? (failed)'}; "
                     f"{sum(never) if never else '?'}")
    row(f"{test} test: first session's reads cold / partial / warm; sessions; offsets never "
        f"read cold, {name} pieces ¹²", cells, "", "")
    for q in (50, 90):
        cells = [cell_pct(get(test, c, label), q) if c != "lt-download" else "–" for c in COLS]
        row(f"{title}, every read of the first session (cold or not), p{q} (ms), {name} "
            f"pieces {note}", cells, "for reference", "")


def report(ib, info, started, load_before, load_after, run_seconds):
    R = ib.results
    a = ib.args
    nominal = a.inet_seeders * a.inet_rate
    rows = []

    def get(metric, col, label):
        return R.get(f"{metric}_{col}_{label}", [])

    def row(metric, cells, goal="", met=""):
        rows.append((metric,) + tuple(cells) + (goal, met))

    for label in ("256k", "4m"):
        name = NAMES[label]
        # first byte
        cells = []
        for c in COLS:
            v = get("first_byte", c, label)
            cells.append(bench.fmt(v, digits=2) if v else "–")
        row(f"start → first byte (s), median of every fresh start, {name} pieces ¹", cells,
            "no worse than before the seek work", "")
        cells = []
        for c in COLS:
            parts = []
            for after in ("other", "full"):
                v = get(f"first_byte_after_{after}", c, label)
                parts.append(f"{bench.med(v):.2f} (n={len(v)})" if v else "–")
            cells.append(" / ".join(parts))
        row(f"start → first byte (s), median of the starts after any other client / right "
            f"after a full-rate transfer, {name} pieces ¹", cells, "", "")
        # cat
        cells = [bench.fmt([x / 1e6 for x in get("cat", c, label)], digits=1)
                 if get("cat", c, label) else "–" for c in COLS]
        bm = bench.med(get("cat", "btfs-mount", label))
        goal = 0.95 * nominal
        met = "n/a" if bm is None else (
            f"yes ({bm / nominal * 100:.0f}%)" if bm >= goal
            else f"**no** ({bm / 1e6:.2f} MB/s, {bm / nominal * 100:.1f}% of "
                 f"{nominal / 1e6:.0f} MB/s)")
        row(f"cold `cat` of {ib.size // MIB} MiB (MB/s), {name} pieces ²", cells,
            f"≥ 95% of the seeders' {nominal / 1e6:.0f} MB/s ({goal / 1e6:.1f})", met)
        cells = [bench.fmt(get("cat_sent", c, label), digits=3) if get("cat_sent", c, label)
                 else "–" for c in COLS]
        bm = bench.med(get("cat_sent", "btfs-mount", label))
        row(f"seeders' bytes sent per byte read, `cat`, {name} pieces ³", cells, "≤ 1.05",
            limit(bm, 1.05, "", 1, "{:.3f}"))
        # seek
        reads_rows(rows, get, "seek", label, name, "⁴",
                   "seek: 1 MiB read at a random offset",
                   {("256k", 50): 200, ("256k", 90): 400, ("4m", 50): 350})
        cells = [bench.fmt(get("seek_sent", c, label), digits=2) if get("seek_sent", c, label)
                 else "–" for c in COLS]
        bm = bench.med(get("seek_sent", "btfs-mount", label))
        floor = bench.med(R.get(f"seek_floor_{label}", []))
        if label == "256k" or floor is None:
            row(f"seeders' bytes sent per byte read, seek test, {name} pieces ³", cells, "≤ 1.3",
                limit(bm, 1.3, "", 1, "{:.2f}"))
        else:
            # A 1 MiB read needs its whole 4 MiB pieces (they are hashed
            # whole): the goal is read against that floor.
            row(f"seeders' bytes sent per byte read, seek test, {name} pieces ³", cells,
                f"≤ 1.3 × the whole-piece floor ({floor:.2f}) = {1.3 * floor:.2f}",
                limit(bm, 1.3 * floor, "", 1, "{:.2f}"))
        # random
        reads_rows(rows, get, "random", label, name, "⁵", "random 4 KiB read",
                   {("256k", 50): 80, ("4m", 50): 300})
        cells = [bench.fmt([x * 4 for x in get("random_sent", c, label)], digits=0)
                 if get("random_sent", c, label) else "–" for c in COLS]
        row(f"random 4 KiB reads: seeders' KiB sent per read, {name} pieces ³", cells,
            f"whole pieces under the reads: "
            f"{(bench.med(R.get(f'random_floor_{label}', [])) or 0) * 4:.0f} KiB per read", "")
        # player
        cells = [bench.fmt(get("player_max", c, label), 1000) if get("player_max", c, label)
                 else "–" for c in COLS]
        row(f"player (2 MB/s, seek every {a.inet_seek_every:g} s): longest wait (ms), "
            f"{name} pieces ⁶", cells, "", "")
        cells = [f"{cell_pct(get('player_seek', c, label), 50)} / "
                 f"{cell_pct(get('player_seek', c, label), 90)}"
                 if get("player_seek", c, label) else "–" for c in COLS]
        row(f"player: wait after a seek p50 / p90 (ms), {name} pieces ⁶", cells, "", "")
        cells = [f"{cell_pct(get('player_seek_cold', c, label), 50)} / "
                 f"{cell_pct(get('player_seek_cold', c, label), 90)} "
                 f"(n={len(get('player_seek_cold', c, label))} of "
                 f"{len(get('player_seek', c, label))})"
                 if get("player_seek", c, label) else "–" for c in COLS]
        row(f"player: wait after a seek whose pieces were not had, p50 / p90 (ms), {name} "
            f"pieces ⁶ ¹²", cells, "", "")
        cells = [bench.fmt(get("player_sent", c, label), digits=2)
                 if get("player_sent", c, label) else "–" for c in COLS]
        row(f"player: seeders' bytes sent per byte read, {name} pieces ³", cells, "", "")
        # resources
        cells = [bench.fmt([max(get("rss", c, label)) / MIB], digits=0)
                 if get("rss", c, label) else "–" for c in COLS]
        row(f"peak RSS, highest over the tests (MiB), {name} pieces ⁷", cells,
            "no worse than before the seek work", "")
        cells = [bench.fmt(get("cat_cpu", c, label), digits=1) if get("cat_cpu", c, label)
                 else "–" for c in COLS]
        row(f"CPU of the `cat` (s), {name} pieces ⁷", cells, "", "")
        cells, peaks = [], []
        for c in COLS:
            means, peak = seeder_rates(ib, get("cat_window", c, label))
            if means:
                cells.append(f"{min(means) / 1e6:.2f}–{max(means) / 1e6:.2f} / {peak / 1e6:.2f}")
                peaks.append(peak)
            else:
                cells.append("–")
        if peaks:
            row(f"each seeder's rate during the `cat`: mean (lowest–highest seeder) / highest "
                f"1-s rate of any seeder (MB/s), {name} pieces ⁸", cells,
                f"mean ≤ {a.inet_rate / 1e6:g} (the limit)",
                "yes" if max(peaks) <= a.inet_rate * 1.05 else
                f"bursts to {max(peaks) / 1e6:.2f} MB/s after idle (note 8)")

    head = ("metric", "btfs-mount", "libtorrent download", "libtorrent streaming (deadlines)",
            "rqbit stream (HTTP)", "goal (issue 18)", "met")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)

    md = [BEGIN, "", "## Internet-like swarm", ""]
    md.append(f"Written by `scripts/bench --internet` on "
              f"{time.strftime('%Y-%m-%d %H:%M %Z', started)}, all rows in one run "
              f"({a.inet_reps} repetition{'s' if a.inet_reps > 1 else ''}). "
              f"{a.inet_seeders} python3-libtorrent seeders, each limited to "
              f"{a.inet_rate / 1e6:g} MB/s of upload, each behind a relay adding "
              f"{a.inet_delay_ms:g} ms ± {a.inet_jitter_ms:g} ms each way with "
              f"{a.inet_stall_ms:g} ms stalls ({a.inet_stall_rate:g} per second per direction); "
              f"peers found only through the local DHT, which lists the relays. "
              f"One {ib.size // MIB} MiB file as two v1 torrents (256 KiB and 4 MiB pieces). "
              f"Each client got only the magnet link and one DHT bootstrap node. "
              f"Design: bench/README.md. Cells: median (min–max) over repetitions, or "
              f"nearest-rank percentiles over all samples. MB/s = 10^6 bytes/s.\n")
    md.append(table + "\n")
    mse = mse_table(ib)
    if mse:
        md.append(mse + "\n")
    for rev in getattr(ib, "extra_bins", {}):
        md.append(side_by_side(ib, f"btfs-mount@{rev}", ib.extra_bins[rev]) + "\n")
    from inet_clients import MSE_FLAGS
    for c in getattr(ib, "clients", []):
        if c.startswith("btfs-mount/"):
            md.append(side_by_side(ib, c, "this binary with " + " ".join(MSE_FLAGS[c])) + "\n")
    md.append("Notes:\n")
    orders = getattr(ib, "orders", [])
    md.append(f"1. every test starts a fresh client, after {a.inet_between:g} s of quiet "
              f"(--inet-between), and reads 128 KiB at offset 0 first; median (min–max) over "
              f"every such start of the run (cat, seek, random, player, and the extra sessions "
              f"of note 12). A client that starts right after a full-rate transfer (a `cat`, "
              f"libtorrent's download, or any rqbit session: rqbit downloads everything) gets "
              f"its first byte later, whatever the client; so the order of the clients "
              f"changes from test to test (--inet-order {a.inet_order}: "
              + ("rows of a Williams design, in which each client directly follows each other "
                 "one equally often" if a.inet_order == "williams" else
                 f"a shuffle seeded with {a.inet_order_seed}" if a.inet_order == "random" else
                 "as given")
              + "), and the second first-byte row splits the starts by what ran just before. "
              + ("Orders used: " + "; ".join(f"{t} {NAMES[lab]}: {' → '.join(o)}"
                                             for _, lab, t, o in orders) + ". " if orders else "")
              + "btfs-mount: from starting the mount "
              "command (DHT lookup, metadata, mount) to that read returning. libtorrent streaming: from "
              "add_torrent(magnet) to the first read's pieces (deadline 0) being had. rqbit: "
              "from POSTing the magnet to the first 128 KiB of the HTTP stream. libtorrent's "
              "own download has no reader.")
    md.append(f"2. 128 KiB reads from offset 0 to the end, from the first read to the last; "
              f"the data is compared with the source. libtorrent download: size / (metadata "
              f"received → every piece checked), `ltnode.py --fetch MAGNET --dht --bootstrap "
              f"NODE --no-utp --no-encryption`. libtorrent streaming reads with a readahead "
              f"window of {a.inet_lt_ahead_mib} MiB (deadlines for a reader at "
              f"{nominal / 1e6:g} MB/s); rqbit's is one open-ended HTTP GET.")
    md.append("3. payload bytes the seeders sent for the torrent (libtorrent's "
              "total_payload_upload, summed over seeders) from the start of the measured "
              "reads to the client's exit, divided by the bytes read. "
              + ("rqbit was added with only the torrent's small.txt selected "
                 "(--inet-rqbit-stream-only), so it fetched big.bin only for its streams "
                 "(32 MiB ahead of each)."
                 if a.inet_rqbit_stream_only else
                 "rqbit downloads the whole torrent in the background from the moment it is "
                 "added, at the swarm's full rate, its streams first, so its bytes count the "
                 "background download, and many of its reads find their data already there "
                 "(note 12)."))
    md.append(f"4. one 128 KiB read at 0, {a.inet_settle:g} s of quiet (peers connect), "
              f"then {a.inet_seeks} preads of 1 MiB at random 4 KiB-aligned offsets, back to "
              f"back (libtorrent streaming: clear_piece_deadlines before each, then deadlines "
              f"on the pieces under the read; rqbit: a GET with Range of 1 MiB).")
    md.append(f"5. the same start, then {a.inet_random} preads of 4 KiB at random offsets.")
    md.append(f"6. 256 KiB reads every 131 ms from offset 0; every {a.inet_seek_every:g} s a "
              f"seek to a random offset, for {a.inet_player_seconds:g} s. Longest wait: the "
              f"slowest read but the first; after a seek: the first read after each seek.")
    md.append("7. VmHWM and utime+stime of the client process just before it is stopped "
              "(btfs-mount: the background daemon; libtorrent: python3 + libtorrent, whose "
              "VmHWM counts the memory-mapped file pages it wrote; rqbit: the server). "
              + ("btfs-mount runs with its default `--encryption prefer` and the seeders "
                 "accept MSE, so its connections are RC4-encrypted; the libtorrent clients "
                 "and rqbit speak plaintext."
                 if getattr(ib, "bin_has_encryption_flag", False) and not a.inet_trace else ""))
    md.append(f"8. from the seeders' own counters (total_payload_upload) sampled every 0.1 s "
              f"during each client's `cat`: how evenly it used the seeders, and whether the "
              f"limit held. libtorrent's upload_rate_limit lets up to 3 s of unused quota out "
              f"in a burst (bandwidth_channel::update_quota), so a seeder that was idle "
              f"sends faster for a second or two; over a whole `cat` the mean holds. "
              + ("Each relay also shaped its seeder's stream to the same rate "
                 "(--inet-relay-shape), and these counters are taken before the relay."
                 if a.inet_relay_shape else
                 "The relays did not shape (see --inet-relay-shape)."))
    rs = getattr(ib, "relay_stats", None)
    if rs:
        lates = [v for v in rs["relays"].values() if v.get("late_p50_ms") is not None]
        if lates:
            md.append(f"9. the relays themselves (one asyncio process, nice -10): "
                      f"{rs['cpu_s']} CPU s in the whole run; a chunk was written after its "
                      f"scheduled time by p50 {max(v['late_p50_ms'] for v in lates):.1f} ms, "
                      f"p99 {max(v['late_p99_ms'] for v in lates):.1f} ms, at most "
                      f"{max(v['late_max_ms'] for v in lates):.0f} ms (worst relay), "
                      f"{sum(v['bytes_s2c'] for v in lates) / 1e6:.0f} MB relayed.")
    md.append(f"10. the machine has {info['nproc']} cores shared with other jobs: load "
              f"average before {load_before}, after {load_after}; run time "
              f"{run_seconds:.0f} s.")
    md.append("11. what limits the missed goals, from a trace of the seek and random "
              "tests (`--inet-trace`, `inet_trace.py`): bench/internet-diagnosis.md.")
    md.append(f"12. **cold reads**: just before each read the client is asked which pieces "
              f"under the read it has: rqbit its bitfield of verified pieces (`GET "
              f"/torrents/ID/haves`, `Accept: application/octet-stream`), libtorrent streaming "
              f"`have_piece`, btfs-mount whether its cache file holds any byte of the piece "
              f"(`SEEK_DATA`; blocks are written there before the piece is hashed, so this is "
              f"stricter on btfs-mount than on the others). A read is cold when none of its "
              f"pieces was had, warm when all were, partial otherwise. The seek and random "
              f"tests read every offset in a first session (the \"every read\" rows, as "
              f"before); each offset whose read was not cold is read again in a fresh session "
              f"(new client, same start and settle, same order), up to "
              f"{a.inet_cold_sessions} sessions in all (--inet-cold-sessions); the cold rows "
              f"hold the first cold read of each offset (n = how many). btfs-mount and "
              f"libtorrent streaming fetch only what is read (plus readahead), so nearly "
              f"every read is cold in the first session. rqbit downloads the whole file in "
              f"the background, in piece order (first and last piece first), from the moment "
              f"it is added: an offset below its download front when read is warm in every "
              f"session, so the cold rows can never hold those (\"never read cold\"). A "
              f"piece rqbit or libtorrent is downloading but has not verified counts as not "
              f"had, so a few of their cold reads are fast (the piece was nearly in); the same "
              f"piece counts as had for btfs-mount. The "
              f"player row counts only the first read after each seek whose pieces were not "
              f"had (no extra sessions).")
    md.append("13. the mse table: see its own heading.")
    md.append("")
    md.append("### Versions\n")
    for k in ("btfs-mount", "libtorrent", "kernel", "cpu"):
        md.append(f"- {k}: {info.get(k)}")
    md.append(f"- rqbit: {rqbit_version(ib)}")
    md.append("")
    md.append("### Raw samples (internet-like swarm)\n")
    md.append("```json")
    md.append(json.dumps(R, sort_keys=True, default=str).replace("], ", "],\n "))
    md.append("```")
    if ib.notes or bench.KILLED:
        md.append("\n### Problems seen during the run\n")
        for n in ib.notes + bench.KILLED:
            md.append(f"- {n}")
    md.append("")
    md.append(END)
    return "\n".join(md) + "\n"


def mse_table(ib):
    """Issue 16's MSE goal on the internet-like swarm: btfs-mount with
    --encryption off and require, libtorrent's download with encryption
    disabled and forced, each a cold `cat` in the same run; "" when the
    mse test did not run."""
    R = ib.results

    def get(metric, col, label):
        return R.get(f"{metric}_{col}_{label}", [])

    if not any(get("cat", k, lab) for k in ("btfs-mount/off", "lt-download/off")
               for lab in NAMES):
        return ""
    gib = ib.size / (1 << 30)
    lines = ["### MSE (RC4) against plaintext on the internet-like swarm (issue 16)\n",
             "Each a cold `cat` of the whole file (128 KiB reads; libtorrent: its own "
             "download), the pair of each client in the same run, in the order of note 1. "
             "btfs-mount `--encryption off` against `--encryption require`; libtorrent "
             "(`ltnode.py --fetch`) `--no-encryption` (out/in_enc_policy disabled) against "
             "`--require-encryption` (forced, allowed_enc_level RC4). The seeders accept "
             "both (in_enc_policy enabled) and were asked half-way through each `cat` how "
             "their connections of that torrent are encrypted (libtorrent's peer_info "
             "flags). Goal (issue 16): MSE costs at most 10 % of plaintext throughput, i.e. "
             "RC4 / plaintext ≥ 0.90. CPU per GiB: utime+stime of the client process "
             "(btfs-mount: the daemon) over the `cat`, and of the seeders' process over the "
             "whole test (8 seeders, their DHT announcer and counters; its idle share is the "
             "same for both).\n",
             "| metric | pieces | btfs-mount plaintext | btfs-mount RC4 | RC4 / plaintext | "
             "libtorrent plaintext | libtorrent RC4 | RC4 / plaintext | goal | met |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def cell(xs, scale, digits):
        return bench.fmt([x * scale for x in xs], digits=digits) if xs else "–"

    def ratio(a, b):
        a, b = bench.med(a), bench.med(b)
        return f"{a / b:.2f}" if a and b else "–"

    for label in NAMES:
        for title, key, scale, digits, goal in (
                ("cold `cat` (MB/s)", "cat", 1e-6, 1, True),
                ("client CPU s per GiB", "cat_cpu", 1 / gib, 2, False),
                ("seeders' CPU s per GiB", "mse_seeder_cpu", 1 / gib, 2, False),
                ("peak RSS (MiB)", "cat_rss", 1 / MIB, 0, False)):
            cells = []
            for base in ("btfs-mount", "lt-download"):
                off, enc = get(key, f"{base}/off", label), get(key, f"{base}/require", label)
                cells += [cell(off, scale, digits), cell(enc, scale, digits), ratio(enc, off)]
            met = ""
            if goal:
                r = ratio(get(key, "btfs-mount/require", label), get(key, "btfs-mount/off", label))
                met = "n/a" if r == "–" else ("yes" if float(r) >= 0.90 else f"**no** ({r})")
            lines.append(f"| {title} | {NAMES[label]} | " + " | ".join(cells)
                         + f" | {'≥ 0.90 (btfs-mount)' if goal else ''} | {met} |")
        cells = []
        for base in ("btfs-mount", "lt-download"):
            for enc in ("off", "require"):
                seen = get("mse_conns", f"{base}/{enc}", label)
                cells.append(", ".join(f"{k} {v}" for d in seen for k, v in sorted(d.items()))
                             or "–")
            cells.append("")
        lines.append(f"| seeders' connections half-way (how encrypted) | {NAMES[label]} | "
                     + " | ".join(cells) + " |  |  |")
    return "\n".join(lines)


def side_by_side(ib, other, what):
    """btfs-mount against another btfs-mount client in the same run (OTHER:
    btfs-mount@REV of --inet-bin, or btfs-mount/tcp, the same binary with
    other flags; WHAT says which): the rows of the main table for both,
    with their ratio."""
    R = ib.results
    rev = other.split("@", 1)[-1] if "@" in other else other

    def get(metric, col, label):
        return R.get(f"{metric}_{col}_{label}", [])

    def med(xs):
        return bench.med(xs)

    metrics = [
        ("start → first byte (s), median", "first_byte", med, 1, 2),
        ("cold `cat` (MB/s)", "cat", med, 1e-6, 1),
        ("seeders' bytes per byte read, `cat`", "cat_sent", med, 1, 3),
        ("seek 1 MiB p50 (ms)", "seek", lambda x: p(x, 50), 1000, 0),
        ("seek 1 MiB p90 (ms)", "seek", lambda x: p(x, 90), 1000, 0),
        ("seeders' bytes per byte read, seek", "seek_sent", med, 1, 2),
        ("cold random 4 KiB p50 (ms)", "random", lambda x: p(x, 50), 1000, 0),
        ("cold random 4 KiB p90 (ms)", "random", lambda x: p(x, 90), 1000, 0),
        ("random: seeders' KiB per read", "random_sent", med, 4, 0),
        ("player: longest wait (ms)", "player_max", med, 1000, 0),
        ("player: wait after a seek p50 (ms)", "player_seek", lambda x: p(x, 50), 1000, 0),
        ("peak RSS (MiB)", "rss", lambda x: max(x) if x else None, 1 / MIB, 0),
        ("CPU of the `cat` (s)", "cat_cpu", med, 1, 1),
    ]
    lines = [f"btfs-mount (this tree, default settings) against {other} ({what}), "
             f"each test run by both in turn in the same run:\n",
             f"| metric | pieces | btfs-mount | {other} | ratio (this / {rev}) |",
             "|---|---|---|---|---|"]
    for label in ("256k", "4m"):
        for title, key, agg, scale, digits in metrics:
            a, b = agg(get(key, "btfs-mount", label)), agg(get(key, other, label))
            if a is None and b is None:
                continue
            cell = (lambda v: "–" if v is None else f"{v * scale:.{digits}f}")
            ratio = f"{a / b:.2f}" if a is not None and b else "–"
            lines.append(f"| {title} | {NAMES[label]} | {cell(a)} | {cell(b)} | {ratio} |")
    return "\n".join(lines)


def rqbit_version(ib):
    if not ib.rqbit:
        return "not installed"
    import subprocess
    try:
        r = subprocess.run([ib.rqbit, "--version"], capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip() or "?"
    except OSError:
        return "?"


