#!/usr/bin/python3
"""lt_stream: libtorrent's streaming mode as a player would drive it.

A python3-libtorrent client for the internet-like benchmark: it adds a
magnet (DHT only, through --bootstrap), downloads nothing on its own (the
torrent is added in upload mode; once the metadata is in, every piece gets
priority 0 and upload mode ends),
and fetches exactly what it is asked to read, with libtorrent's
time-critical piece picker (`set_piece_deadline`, libtorrent's
docs/streaming.rst), which is what libtorrent offers players.

Commands on stdin, one JSON object a line (offsets in torrent byte space):
  {"op": "read", "id": N, "off": O, "len": L, "ahead": A, "rate": R}
      Deadlines on the pieces under [O, O+L): 0 ms for the first, +1 ms for
      each next one (so they complete in order); with A > 0, also on the
      pieces of the readahead window [O+L, O+L+A), each with the deadline
      at which a reader going at R bytes/s would reach it (set once per
      piece until the next seek). When libtorrent says every piece under
      [O, O+L) can be read (a read_piece_alert, asked for with
      alert_when_available: the piece passed its hash check and is written
      to the file under --save), emits `done` {id, t}. The caller then
      reads the file itself. (piece_finished_alert comes too early: it is
      posted when the hash passes, before the write, and have_piece()
      is still false then.)
  {"op": "have", "id": N, "pieces": [I, ...]}
      Emits `have` {id, had: [bool, ...]}: whether libtorrent has each of
      those pieces now (have_piece: hashed and written). The benchmark asks
      before each read, to tell cold reads from reads of pieces already had.
  {"op": "seek"}
      A seek: clear_piece_deadlines(), and every piece that had a deadline
      and is not had yet goes back to priority 0 (not downloaded).
Events on stdout (JSON lines; t is CLOCK_MONOTONIC seconds, which every
process on the machine shares): ready {port}, added {t}, metadata {t,
piece_length, num_pieces, total_size, files: [{path, size, offset}]},
done {id, t}, have {id, had}, error {message}, exit {reason}. It stops when stdin closes.

Usage: lt_stream.py --magnet M --save DIR --bootstrap HOST:PORT
Settings: ltnode.py's loopback settings, close_redundant_connections off
(with every piece at priority 0 libtorrent would otherwise drop every seed
between reads), TCP only (--no-utp: the relays of
the benchmark carry TCP), plaintext (like the other clients).
"""

import argparse
import json
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "mountpoint-tests", "lt"))

import libtorrent as lt  # noqa: E402
import ltnode  # noqa: E402
import ltsession  # noqa: E402


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--magnet", required=True)
    p.add_argument("--save", required=True)
    p.add_argument("--bootstrap", action="append", default=[], required=True)
    a = p.parse_args(argv)
    # ltnode's own defaults for every option it reads, with ours on top.
    args = ltnode.parse_args(["--dht", "--no-utp", "--no-encryption", "--keep-redundant"]
                             + sum((["--bootstrap", b] for b in a.bootstrap), []))
    settings = ltnode.session_settings(args)
    ses = lt.session(settings)
    stop = ltnode.Stop()
    port = ltsession.wait_listening(ses, stop)
    if port is None:
        return 2
    ltnode.start_dht(ses, args, port)
    ltnode.emit("ready", port=port)

    os.makedirs(a.save, exist_ok=True)
    atp = lt.parse_magnet_uri(a.magnet)
    atp.save_path = os.path.abspath(a.save)
    # Nothing is downloaded before the metadata is here and every piece has
    # priority 0 (upload mode: no requests at all). File priorities stay
    # non-zero so that libtorrent writes pieces into the file itself (pieces
    # of a priority-0 file go to a part file), and prioritize_files is not
    # used: it applies piece priorities later, after a disk job.
    atp.flags = (atp.flags | lt.torrent_flags.upload_mode) \
        & ~lt.torrent_flags.paused & ~lt.torrent_flags.auto_managed
    h = ses.add_torrent(atp)
    ltnode.emit("added", t=time.monotonic())

    lock = threading.Lock()
    pending = {}  # read id -> set of pieces still missing
    deadlined = set()  # pieces given a deadline since the last seek
    started = {}  # read id -> when it came in (for the watchdog)
    avail = set()  # pieces libtorrent said it can read (read_piece_alert)
    meta = {}  # piece_length, num_pieces, total_size once known
    have_meta = threading.Event()

    def finish_if_done(rid):
        if rid in pending and not pending[rid]:
            del pending[rid]
            started.pop(rid, None)
            ltnode.emit("done", id=rid, t=time.monotonic())

    def watchdog():
        """A read waiting over 5 s: look at its pieces again and give the
        missing ones their deadline again, and log it. (Twice in a dozen
        runs a read waited forever: every deadlined piece had, the torrent
        'finished', the read's piece never requested; this says which.)"""
        now = time.monotonic()
        with lock:
            late = [(rid, set(p)) for rid, p in pending.items() if now - started.get(rid, now) > 5]
        for rid, pieces in late:
            had = {i for i in pieces if h.have_piece(i)}
            prios = {i: h.piece_priority(i) for i in pieces - had}
            ltnode.log(f"watchdog: read {rid} waits {now - started[rid]:.1f} s for pieces "
                       f"{sorted(pieces)}; had now {sorted(had)}; priorities {prios}")
            for i in pieces - had:
                h.set_piece_deadline(i, 0)
            with lock:
                if rid in pending:
                    pending[rid].difference_update(had)
                    started[rid] = now
                    finish_if_done(rid)

    def do_read(cmd):
        have_meta.wait()
        plen, n, total = meta["piece_length"], meta["num_pieces"], meta["total_size"]
        off, ln = cmd["off"], cmd["len"]
        first, last = off // plen, min(n - 1, (off + ln - 1) // plen)
        under = list(range(first, last + 1))
        ahead = []
        if cmd.get("ahead"):
            end = min(total, off + ln + cmd["ahead"])
            ahead = list(range(last + 1, min(n - 1, (end - 1) // plen) + 1))
        rid = cmd["id"]
        with lock:
            # Pieces libtorrent already said it can read need nothing more
            # (and asking again would make it read a whole piece back each
            # time: 32 times per 4 MiB piece in a cat).
            need = [i for i in under if i not in avail]
            pending[rid] = set(need)
            started[rid] = time.monotonic()
            fresh = [i for i in ahead if i not in deadlined]
            deadlined.update(under)
            deadlined.update(ahead)
        # alert_when_available: a read_piece_alert once the piece can be read
        # back (at once for a piece already had). piece_finished_alert is
        # not enough: libtorrent posts it when the hash passes, before the
        # piece is written and have_piece() turns true.
        for k, i in enumerate(need):
            h.set_piece_deadline(i, k, lt.deadline_flags_t.alert_when_available)
        with lock:
            finish_if_done(rid)
        rate = max(1, cmd.get("rate") or 1)
        for i in fresh:
            h.set_piece_deadline(i, int(((i * plen) - (off + ln)) / rate * 1000) + len(under))

    def do_seek():
        h.clear_piece_deadlines()
        with lock:
            undo = [i for i in deadlined if not h.have_piece(i)]
            deadlined.clear()
        for i in undo:
            h.piece_priority(i, 0)

    def commands():
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                cmd = json.loads(line)
                if cmd["op"] == "read":
                    do_read(cmd)
                elif cmd["op"] == "seek":
                    do_seek()
                elif cmd["op"] == "have":
                    have_meta.wait()
                    ltnode.emit("have", id=cmd["id"],
                                had=[bool(h.have_piece(i)) for i in cmd["pieces"]])
                else:
                    ltnode.emit("error", message=f"bad op {cmd['op']!r}")
            except (ValueError, KeyError, TypeError) as e:
                ltnode.emit("error", message=f"bad command {line!r}: {e}")
        stop.set("stdin closed")

    threading.Thread(target=commands, daemon=True).start()
    last_ping = last_stats = last_watch = 0.0
    table_empty = True
    while stop.reason is None:
        ltsession.wait_for_alerts(ses, 50 if table_empty else 100)
        now = time.monotonic()
        if now - last_watch > 1.0:
            last_watch = now
            watchdog()
        if not have_meta.is_set() and now - last_ping > 2.0:
            last_ping = now
            for node in args.bootstrap:
                ses.add_dht_node(node)
        if table_empty and now - last_stats > 0.1:
            last_stats = now
            ses.post_dht_stats()
        for al in ses.pop_alerts():
            if isinstance(al, lt.read_piece_alert):
                if al.error.value():
                    ltnode.log(f"read_piece {al.piece}: {al.error.message()}")
                with lock:
                    if not al.error.value():
                        avail.add(al.piece)
                    for rid in list(pending):
                        pending[rid].discard(al.piece)
                        finish_if_done(rid)
            elif isinstance(al, lt.dht_stats_alert) and table_empty:
                if sum(b["num_nodes"] for b in al.routing_table):
                    # As ltnode does: the announce made at add_torrent went
                    # nowhere (empty routing table); a long-running session
                    # would have had a full table. Look the torrent up now.
                    table_empty = False
                    h.force_dht_announce()
            elif isinstance(al, lt.metadata_received_alert) and not have_meta.is_set():
                ti = h.torrent_file()
                fs = ti.files()
                files = [{"path": fs.file_path(i), "size": fs.file_size(i),
                          "offset": fs.file_offset(i)} for i in range(fs.num_files())
                         if not fs.file_flags(i) & lt.file_storage.flag_pad_file]
                meta.update(piece_length=ti.piece_length(), num_pieces=ti.num_pieces(),
                            total_size=ti.total_size())
                h.prioritize_pieces([0] * ti.num_pieces())
                h.unset_flags(lt.torrent_flags.upload_mode)
                have_meta.set()
                ltnode.emit("metadata", t=time.monotonic(), files=files, **meta)
            elif isinstance(al, (lt.torrent_error_alert, lt.file_error_alert,
                                 lt.hash_failed_alert)):
                ltnode.emit("error", message=al.message())
            elif isinstance(al, (lt.peer_connect_alert, lt.peer_disconnected_alert,
                                 lt.torrent_finished_alert, lt.state_changed_alert)):
                ltnode.log(f"{type(al).__name__}: {al.message()}")
    ltnode.emit("exit", reason=stop.reason)
    ses.pause()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(0)
