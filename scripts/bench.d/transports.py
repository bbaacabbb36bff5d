#!/usr/bin/python3
"""transports: cold reads over plaintext TCP, MSE (RC4) and uTP, btfs-mount
against libtorrent's own download on the same transport (issue 16 item 7).

Run by `scripts/bench --transports` inside a private network and mount
namespace (only loopback exists), like bench.py, whose helpers it imports.

The swarm: three python3-libtorrent seeders (swarm.py, no DHT), each
seeding the same file (--tr-size-mib, 256 KiB pieces, one v1 torrent) and
letting peers in by one transport only (swarm.py --transport):
  tcp   plaintext TCP (incoming uTP off, encryption disabled)
  mse   MSE/PE over TCP with RC4 forced (in_enc_policy forced,
        allowed_enc_level RC4; incoming uTP off)
  utp   uTP only, plaintext (enable_incoming_tcp off)
Each client is given the seeder's address and nothing else, and asks for
the same transport:
  btfs-mount  MAGNET MNT --no-dht --no-lsd --peer SEEDER and
              tcp: --no-utp --encryption off; mse: --no-utp --encryption
              require; utp: --encryption off (btfs-mount has no TCP-off
              flag: it dials uTP first and TCP 250 ms later, and the
              seeder refuses TCP)
  libtorrent  ltnode.py --fetch T.torrent --connect SEEDER and tcp:
              --no-utp --no-encryption; mse: --no-utp --require-encryption
              (out_enc_policy forced, allowed_enc_level RC4); utp:
              --utp-only --no-encryption
The seeder records each connection's transport and encryption as it sees
them (libtorrent's peer_info flags utp_socket, rc4_encrypted), and a run
whose connections were not the intended ones is reported as such.

Measured, each --tr-reps times, the two clients taking turns (order
swapped every repetition), fresh cache / save directory each time:
  cold read   btfs-mount: the file read whole with 128 KiB read(2)s from a
              fresh mount (background mode; timed from open to end of
              file); libtorrent: file size / seconds from adding the
              torrent to every piece checked. MB/s = 10^6 bytes/s.
  RSS / CPU   the client process's VmHWM and RssAnon and utime+stime just
              before it stops; CPU per GiB of the file; the seeder's CPU
              per GiB during the run too (its /proc stat before and after).
Measured processes (seeders, btfs-mount, ltnode) run at `nice --tr-nice`
(default -5), the same for both sides.

With --tr-rate-mbit N, loopback itself is limited to N Mbit/s (a `tbf`
qdisc on lo, in this run's network namespace: the kernel has no netem, but
tbf works), so that neither end is short of CPU: the question is then what
MSE costs where the network, not RC4, is the limit (issue 16's 10 % goal).
That run writes its own section, transports-limited, and keeps the
unlimited one.
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
import sections  # noqa: E402
from bench import GIB, KIB, MIB, LTNODE, PY, Proc, fmt, fr, log, med, ok, ratio  # noqa: E402

SWARM = os.path.join(HERE, "swarm.py")
SECTION = "transports"
LIMITED = "transports-limited"

# mode -> (title, seeder --transport, btfs-mount flags, ltnode flags, expected (utp, rc4))
MODES = {
    "tcp": ("plaintext TCP", ["--no-utp", "--encryption", "off"],
            ["--no-utp", "--no-encryption"], (False, False)),
    "mse": ("MSE (RC4) over TCP", ["--no-utp", "--encryption", "require"],
            ["--no-utp", "--require-encryption"], (False, True)),
    "utp": ("uTP (plaintext)", ["--encryption", "off"],
            ["--utp-only", "--no-encryption"], (True, False)),
}


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / bench.CLK_TCK


class Transports:
    def __init__(self, a):
        self.a = a
        self.work = a.work
        self.logdir = os.path.join(self.work, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        self.bin = os.path.realpath(a.bin)
        self.nice = ["nice", "-n", str(a.nice)]
        self.procs = []
        self.results = {}
        self.notes = []
        self.counter = 0
        self.modes = [m for m in a.modes.split(",") if m]
        for m in self.modes:
            if m not in MODES:
                raise SystemExit(f"transports.py: unknown mode {m!r} (tcp, mse, utp)")

    def fresh(self, kind):
        self.counter += 1
        d = os.path.join(self.work, f"{kind}-{self.counter}")
        os.makedirs(d)
        return d

    def add(self, key, v):
        self.results.setdefault(key, []).append(v)

    def limit_loopback(self):
        """--tr-rate-mbit: a tbf qdisc at the root of lo (every byte on
        loopback, both directions, shares the rate). The burst is 10 ms of
        the rate but at least 256 KiB (lo's MTU is 64 KiB, and GSO packets
        are as large); packets wait up to 100 ms before tbf drops them."""
        rate = self.a.rate_mbit
        burst = max(256 * KIB, rate * 1_000_000 // 8 // 100)
        bench.subprocess.run(["tc", "qdisc", "replace", "dev", "lo", "root", "tbf", "rate",
                              f"{rate}mbit", "burst", str(burst), "latency", "100ms"],
                             check=True)
        out = bench.subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True,
                                   text=True).stdout.strip()
        log(f"loopback limited: {out}")
        self.qdisc = out

    def setup(self):
        if self.a.rate_mbit:
            self.limit_loopback()
        self.size = self.a.size_mib * MIB
        d = os.path.join(self.work, "seed", "bench-transports")
        os.makedirs(d)
        log(f"writing {self.a.size_mib} MiB of random data")
        with open(os.path.join(d, "big.bin"), "wb") as f:
            left = self.size
            while left:
                n = min(left, 8 * MIB)
                f.write(os.urandom(n))
                left -= n
        self.seeders = {}
        for m in self.modes:
            port = bench.free_ports(1)[0]
            tdir = os.path.join(self.work, f"torrents-{m}")
            s = Proc(self.nice + [PY, SWARM, "--no-dht", "--listen-port", str(port),
                                  "--torrent-dir", tdir, "--seed", f"{d}:{256 * KIB}",
                                  "--transport", m, "--record-peers"],
                     f"seed-{m}", self.logdir)
            self.procs.append(s)
            s.wait_event("ready", 30)
            t = s.wait_event("torrent", 300)
            s.wait_event("seeding", 60)
            self.seeders[m] = (s, port, t)
        log("seeders ready: " + ", ".join(f"{m} 127.0.0.1:{p}" for m, (_, p, _t) in
                                          self.seeders.items()))

    def seeder_state(self, m):
        """(payload bytes sent so far, CPU seconds so far) of mode m's seeder."""
        s, _, t = self.seeders[m]
        s.send("stats")
        e = s.wait_event("stats", 10)
        return e["upload"][t["info_hash"]], cpu_of(s.p.pid)

    def seen_peers(self, m):
        """The connections mode m's seeder saw since the last call."""
        s, _, _ = self.seeders[m]
        s.send("peers")
        return s.wait_event("peers", 10)["peers"]

    def check_peers(self, m, who):
        """Records the connections mode m's seeder saw since the last call;
        a note when one of them used another transport or encryption."""
        peers = self.seen_peers(m)
        want = MODES[m][3]
        got = sorted({(p["utp"], p["rc4"]) for p in peers})
        self.add(f"conn_{m}_{who}", [f"{'uTP' if u else 'TCP'}{', RC4' if r else ''}"
                                     for u, r in got])
        if got != [want]:
            self.notes.append(f"{MODES[m][0]}, {who}: the seeder saw connections {got} "
                              f"((uTP, RC4) flags), expected only {want}")

    def bm_cold(self, m):
        s, port, t = self.seeders[m]
        cache = self.fresh("cache")
        mnt = self.fresh("mnt")
        argv = self.nice + [self.bin, t["magnet"], mnt, "--cache-dir", cache, "--no-dht",
                            "--no-lsd", "--peer", f"127.0.0.1:{port}"] + MODES[m][1]
        self.seen_peers(m)
        up0, cpu0 = self.seeder_state(m)
        with open(os.path.join(self.logdir, f"btfs-mount-{self.counter}.stderr"), "wb") as err:
            r = bench.subprocess.run(argv, stdin=bench.subprocess.DEVNULL, stdout=err,
                                     stderr=err, timeout=120)
        if r.returncode != 0 or not bench.is_mounted(mnt):
            raise RuntimeError(f"btfs-mount failed (rc {r.returncode}): {bench.tail(err.name)}")
        pid = bench.find_daemon(self.bin, mnt)
        perf = self.perf_start(m, pid)
        n, secs = bench.read_file(os.path.join(mnt, t["name"], "big.bin"))
        self.perf_stop(perf)
        if n != self.size:
            raise RuntimeError(f"btfs-mount read {n} bytes of {self.size}")
        rss, cpu = bench.proc_usage(pid)
        anon = bench.LAST_ANON.get(pid, 0)
        up1, cpu1 = self.seeder_state(m)
        self.check_peers(m, "btfs-mount")
        bench.unmount(mnt, pid)
        shutil.rmtree(cache)
        return n / secs, rss, anon, cpu, cpu1 - cpu0, (up1 - up0) / n

    def perf_start(self, m, pid):
        """With --tr-perf DIR: perf record (cpu-clock samples, call graphs)
        of the btfs-mount daemon during its cold read."""
        if not self.a.perf:
            return None
        os.makedirs(self.a.perf, exist_ok=True)
        data = os.path.join(self.a.perf, f"{m}-{self.counter}.perf.data")
        p = bench.subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "999",
                                    "--call-graph", "dwarf,16384", "-p", str(pid), "-o", data],
                                   stdout=bench.subprocess.DEVNULL,
                                   stderr=bench.subprocess.DEVNULL)
        time.sleep(0.5)  # perf attaches
        return p, data, m

    def perf_stop(self, perf):
        if perf is None:
            return
        p, data, m = perf
        p.send_signal(bench.signal.SIGINT)
        p.wait(60)
        with open(data + ".txt", "w") as out:
            bench.subprocess.run(["perf", "report", "-i", data, "--stdio", "--no-children",
                                  "--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.5"],
                                 stdout=out, stderr=bench.subprocess.DEVNULL)
        log(f"perf profile of btfs-mount ({m}): {data}.txt")

    def lt_cold(self, m):
        s, port, t = self.seeders[m]
        save = self.fresh("ltsave")
        self.seen_peers(m)
        up0, cpu0 = self.seeder_state(m)
        node = Proc(self.nice + [PY, LTNODE, "--fetch", t["torrent_file"], "--save", save,
                                 "--connect", f"127.0.0.1:{port}"] + MODES[m][2],
                    f"ltfetch-{m}-{self.counter}", self.logdir)
        try:
            # ltnode reports every second; the seeder notes the connection
            # while it lives (a finished fetcher and the seeder part).
            e = node.wait_event("finished", 900)
            rss, cpu = bench.proc_usage(node.p.pid)
            anon = bench.LAST_ANON.get(node.p.pid, 0)
            up1, cpu1 = self.seeder_state(m)
            self.check_peers(m, "libtorrent")
        finally:
            node.stop()
        shutil.rmtree(save)
        return self.size / e["seconds"], rss, anon, cpu, cpu1 - cpu0, (up1 - up0) / self.size

    def run(self):
        self.setup()
        for rep in range(self.a.reps):
            for m in self.modes:
                order = ("bm", "lt") if rep % 2 == 0 else ("lt", "bm")
                for who in order:
                    rate, rss, anon, cpu, scpu, sent = (self.bm_cold if who == "bm"
                                                        else self.lt_cold)(m)
                    for k, v in (("rate", rate), ("rss", rss), ("anon", anon), ("cpu", cpu),
                                 ("seeder_cpu", scpu), ("sent", sent)):
                        self.add(f"{who}_{k}_{m}", v)
                    log(f"rep {rep + 1} {m:3} {'btfs-mount' if who == 'bm' else 'libtorrent':10} "
                        f"{rate / 1e6:6.0f} MB/s, RSS {rss / MIB:6.1f} MiB, CPU {cpu:.2f} s, "
                        f"seeder CPU {scpu:.2f} s, sent {sent:.3f}")

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


def report(b, started, load_before, load_after, info):
    R = b.results
    gib = b.size / GIB
    rows = []

    def mbs(key):
        return [x / 1e6 for x in R.get(key, [])]

    for m in b.modes:
        title = MODES[m][0]
        bm, lt = mbs(f"bm_rate_{m}"), mbs(f"lt_rate_{m}")
        r = ratio(bm, lt)
        goal, met = "", ""
        if m == "utp":
            goal, met = "≥ libtorrent's uTP (ratio ≥ 1)", ok(r, lambda v: v >= 1)
        rows.append((f"cold read of {b.size // MIB} MiB (MB/s), {title}", fmt(bm), fmt(lt),
                     fr(r), goal, met))
    if "tcp" in b.modes and "mse" in b.modes:
        rb = ratio(mbs("bm_rate_mse"), mbs("bm_rate_tcp"))
        rl = ratio(mbs("lt_rate_mse"), mbs("lt_rate_tcp"))
        rows.append(("MSE (RC4) throughput / plaintext TCP throughput (same client)",
                     fr(rb), fr(rl), "", f"btfs-mount ≥ 0.90 (MSE costs ≤ 10 %)",
                     ok(rb, lambda v: v >= 0.9)))
    if "tcp" in b.modes and "utp" in b.modes:
        rows.append(("uTP throughput / plaintext TCP throughput (same client)",
                     fr(ratio(mbs("bm_rate_utp"), mbs("bm_rate_tcp"))),
                     fr(ratio(mbs("lt_rate_utp"), mbs("lt_rate_tcp"))), "", "", ""))
    for m in b.modes:
        bm, lt = R.get(f"bm_rss_{m}", []), R.get(f"lt_rss_{m}", [])
        rows.append((f"peak RSS (MiB), {MODES[m][0]} ¹", fmt(bm, 1 / MIB, 1), fmt(lt, 1 / MIB, 1),
                     fr(ratio(bm, lt)), "", ""))
    for m in b.modes:
        bm, lt = R.get(f"bm_anon_{m}", []), R.get(f"lt_anon_{m}", [])
        rows.append((f"anonymous RSS at the end (MiB), {MODES[m][0]} ¹", fmt(bm, 1 / MIB, 1),
                     fmt(lt, 1 / MIB, 1), fr(ratio(bm, lt)), "", ""))
    for m in b.modes:
        bm = [c / gib for c in R.get(f"bm_cpu_{m}", [])]
        lt = [c / gib for c in R.get(f"lt_cpu_{m}", [])]
        rows.append((f"client CPU s per GiB, {MODES[m][0]} ¹", fmt(bm, digits=2),
                     fmt(lt, digits=2), fr(ratio(bm, lt)), "", ""))
    for m in b.modes:
        bm = [c / gib for c in R.get(f"bm_seeder_cpu_{m}", [])]
        lt = [c / gib for c in R.get(f"lt_seeder_cpu_{m}", [])]
        rows.append((f"seeder CPU s per GiB sent to the client, {MODES[m][0]}",
                     fmt(bm, digits=2), fmt(lt, digits=2), fr(ratio(bm, lt)), "", ""))
    for m in b.modes:
        bm, lt = R.get(f"bm_sent_{m}", []), R.get(f"lt_sent_{m}", [])
        rows.append((f"seeder payload bytes sent per byte of the file, {MODES[m][0]}",
                     fmt(bm, digits=3), fmt(lt, digits=3), "", "", ""))
    for m in b.modes:
        def conns(who):
            seen = sorted({c for x in R.get(f"conn_{m}_{who}", []) for c in x})
            return ", ".join(seen) or "none seen"
        rows.append((f"connections the seeder saw, {MODES[m][0]}", conns("btfs-mount"),
                     conns("libtorrent"), "", "", ""))

    head = ("metric", "btfs-mount", "libtorrent", "btfs-mount/libtorrent", "goal", "met")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    table = "\n".join(lines)
    rate = b.a.rate_mbit
    name = LIMITED if rate else SECTION
    flag = f"--transports --tr-rate-mbit {rate}" if rate else "--transports"
    md = [sections.begin(name, flag), "",
          f"## Transports over loopback limited to {rate} Mbit/s: TCP, MSE, uTP" if rate
          else "## Transports: TCP, MSE, uTP", ""]
    md.append(f"Written by `scripts/bench --transports` on "
              f"{time.strftime('%Y-%m-%d %H:%M %Z', started)} ({info['btfs-mount']}); "
              f"{b.a.reps} repetitions of each, btfs-mount and libtorrent taking turns in the "
              f"same run (`scripts/bench.d/transports.py`). One seeder per transport "
              f"(python3-libtorrent, 256 KiB pieces, one {b.size // MIB} MiB file), letting "
              f"peers in by that transport only; each client is told its address and asks for "
              f"that transport. Cells: median (min–max). MB/s = 10^6 bytes/s."
              + (f" Loopback was limited to {rate} Mbit/s ({rate / 8:g} MB/s, both directions "
                 f"together) by a tbf qdisc in the run's network namespace (`{b.qdisc}`), so "
                 f"that the network, not the CPU, limits every transfer: the MSE row then "
                 f"shows what RC4 costs where a user's link is the limit (issue 16's goal: MSE "
                 f"costs at most 10 % of plaintext throughput)."
                 if rate else "") + "\n")
    md.append(table + "\n")
    md.append("Notes:\n")
    md.append("1. btfs-mount: the background daemon just before unmount (VmHWM, RssAnon, "
              "utime+stime); libtorrent: the ltnode.py process (python3 + libtorrent, which "
              "writes through memory-mapped files: its VmHWM counts file pages, the anonymous "
              "row leaves them out) when its download finished.")
    md.append("2. btfs-mount's cold read is timed from open to end of file on a fresh mount "
              "(the mount returns once the metadata is in, so the connection is up); "
              "libtorrent's from adding the .torrent to every piece checked.")
    md.append(f"3. every process measured (seeders, btfs-mount, ltnode) runs at nice "
              f"{b.a.nice}; the machine is shared (other builds may run): load average "
              f"before {load_before}, after {load_after}.")
    md.append("4. flags: btfs-mount `--no-dht --no-lsd --peer SEEDER` plus tcp `--no-utp "
              "--encryption off`, mse `--no-utp --encryption require`, uTP `--encryption off`; "
              "ltnode `--fetch T.torrent --connect SEEDER` plus tcp `--no-utp --no-encryption`, "
              "mse `--no-utp --require-encryption`, uTP `--utp-only --no-encryption`. Seeders: "
              "`swarm.py --transport tcp|mse|utp`.")
    if not rate and "mse" in b.modes:
        md.append("5. the MSE row measures RC4 where the CPU is the limit (both ends on 2 "
                  "shared cores); `--tr-rate-mbit N` measures it with the network as the "
                  "limit (section transports-limited), and so does the internet-like swarm's "
                  "mse table.")
    for n in b.notes + bench.KILLED:
        md.append(f"- problem: {n}")
    md.append("")
    md.append("<details><summary>Raw samples (transports)</summary>\n")
    md.append("```json")
    md.append(json.dumps(b.results, sort_keys=True, default=str).replace("], ", "],\n "))
    md.append("```\n</details>\n")
    md.append(sections.end(name))
    return table, "\n".join(md)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", required=True, help="the btfs-mount binary")
    p.add_argument("--work", required=True, help="scratch directory")
    p.add_argument("--out", help="RESULTS.md whose transports section to rewrite")
    p.add_argument("--tr-reps", dest="reps", type=int, default=3)
    p.add_argument("--tr-size-mib", dest="size_mib", type=int, default=256)
    p.add_argument("--tr-modes", dest="modes", default="tcp,mse,utp",
                   help="comma-separated: tcp, mse, utp")
    p.add_argument("--tr-nice", dest="nice", type=int, default=-5)
    p.add_argument("--tr-rate-mbit", dest="rate_mbit", type=int, default=0,
                   help="limit loopback to this many Mbit/s (tbf on lo) and write the "
                        "transports-limited section instead")
    p.add_argument("--tr-perf", dest="perf", metavar="DIR",
                   help="perf record the btfs-mount daemon during each cold read (kept in DIR)")
    a = p.parse_args(argv)
    started = time.localtime()
    load_before = " ".join(open("/proc/loadavg").read().split()[:3])
    info = bench.machine_info(argparse.Namespace(bin=a.bin))
    b = Transports(a)
    try:
        b.run()
    finally:
        b.stop()
    load_after = " ".join(open("/proc/loadavg").read().split()[:3])
    table, md = report(b, started, load_before, load_after, info)
    print(table)
    if a.out:
        name = LIMITED if a.rate_mbit else SECTION
        sections.write(a.out, name, md)
        log(f"wrote the {name} section of {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
