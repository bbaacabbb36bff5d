#!/usr/bin/python3
"""relay: a userspace TCP/UDP relay that makes a loopback path look like the internet.

This kernel has no `netem`, so the benchmark's internet-like swarm (and tests
that want a slow, jittery path) put this relay between a client and a peer.
Python 3 stdlib only (asyncio); one process can run many relays.

TCP mode. Each relay listens on LISTEN and, for every connection accepted,
dials TARGET and copies bytes both ways. Every chunk read from one side is
written to the other side no earlier than

    arrival + delay + U(-jitter, +jitter)

and never before the chunk read before it (a byte stream is never
reordered), so a request/response round trip through the relay costs about
2 x delay. Each direction of each relay also stalls now and then: stalls
start at random (a Poisson process of `--stall-rate` stalls per second) and
hold back every byte that would have been written during the stall for
`--stall-ms` (a lost packet waiting for its retransmission). The relay
buffers at most `--max-queue` bytes per direction and connection; past that
it stops reading, so back-pressure reaches the sender as in a real path.
With --rate, the target-to-client direction is shaped like an uplink: a
token bucket of that many bytes/s with a 32 KiB burst, shared by all the
relay's connections (without it the peer's own limit alone sets the rate;
libtorrent's upload_rate_limit lets up to 3 s of unused quota out in a
burst, which no uplink does).

UDP mode. The relay listens on LISTEN; for each client address it opens a
socket towards TARGET (like a NAT mapping, dropped after 120 s idle) and
forwards datagrams both ways, each delayed by delay + U(-jitter, +jitter)
on its own (datagrams may be reordered, as on the internet), dropped with
probability `--loss`, and held during stalls as above.

Tracing (TCP): with `--trace FILE` the relay parses the BitTorrent peer wire
protocol (BEP 3; plaintext connections only, MSE-encrypted ones are not
traced) in both directions and writes one JSON line per message of interest,
with the time the relay forwarded it (t) and the time it read the bytes
that completed the message's header (t_in: when the sender sent it, give or
take a loopback hop), both CLOCK_MONOTONIC seconds, the clock Python's
time.monotonic() reads in every process:
    {"t": 12.345678, "t_in": 12.320001, "relay": "10.99.0.1:6881", "conn": 3,
     "dir": "c2s"|"s2c",
     "msg": "request"|"cancel"|"piece"|"reject"|"choke"|"unchoke"|"have",
     "index": I, "begin": B, "length": L}
("c2s": from the client that dialled the relay to its target.) A piece
message is logged when its header is forwarded; its payload follows.

Usage:
  relay.py [options] LISTEN=TARGET [LISTEN=TARGET ...]
  relay.py --selftest            measure the relay itself (throughput, added delay)
Options:
  --udp                 relay UDP datagrams instead of TCP
  --delay-ms D          one-way delay, default 25
  --jitter-ms J         uniform jitter +-J, default 5
  --stall-rate R        stalls per second per direction, default 0.05
  --stall-ms S          stall length, default 250
  --loss P              UDP only: drop probability per datagram, default 0
  --max-queue BYTES     TCP only: most bytes buffered per direction, default 4 MiB
  --rate BYTES_PER_S    TCP only: shape TARGET -> client to this rate (a token
                        bucket of 32 KiB shared by the relay's connections, as
                        one host's uplink; that direction then buffers at most
                        64 KiB and reads the target with a 64 KiB SO_RCVBUF,
                        so back-pressure reaches the sender); default 0
  --seed N              random seed (default: from the OS)
  --trace FILE          TCP only: BitTorrent message trace (JSON lines)

Events on stdout, one JSON object a line: `ready` {relays: [{listen,
target}]} once every listener is bound; on SIGTERM/SIGINT or end of stdin
(when stdin is a pipe), `stats` {relays: {LISTEN: {connections, bytes_c2s,
bytes_s2c, late_p50_ms, late_p99_ms, late_max_ms, chunks}}, cpu_s} and exit.
`late` is how long after its scheduled time each chunk was written:
it measures the relay itself (a relay that keeps up stays within a
millisecond or two; stalls and back-pressure from a slow reader are not
counted as lateness).

As a module: `Path(delay, jitter, stall_rate, stall_ms, rng)` is the
delay model, `serve_tcp(listen, target, path_args, ...)` and
`serve_udp(...)` are coroutines that run one relay.
"""

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import stat
import struct
import sys
import time

MIB = 1 << 20


def emit(event, **fields):
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def parse_addr(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {text!r}")
    return host.strip("[]"), int(port)


class Path:
    """The delay model of one direction of one relay.

    `release(arrival)` gives the time (time.monotonic() seconds) a chunk
    that arrived at `arrival` may be written: arrival + delay + jitter,
    clamped to be no earlier than the previous chunk's (`ordered`, for a
    byte stream), and pushed past any stall it falls into.
    """

    def __init__(self, delay, jitter, stall_rate, stall_s, rng, ordered=True):
        self.delay = delay
        self.jitter = jitter
        self.stall_rate = stall_rate
        self.stall_s = stall_s
        self.rng = rng
        self.ordered = ordered
        self.last = 0.0
        now = time.monotonic()
        self.stall_start = now + self._gap()
        self.stalls = 0

    def _gap(self):
        if self.stall_rate <= 0 or self.stall_s <= 0:
            return float("inf")
        return self.rng.expovariate(self.stall_rate)

    def release(self, arrival):
        t = arrival + self.delay + self.rng.uniform(-self.jitter, self.jitter)
        t = max(t, arrival)
        # Advance the stall schedule up to t; a chunk due inside a stall
        # waits for its end.
        while t >= self.stall_start + self.stall_s:
            self.stall_start += self.stall_s + self._gap()
            self.stalls += 1
        if t >= self.stall_start:
            t = self.stall_start + self.stall_s
        if self.ordered:
            t = max(t, self.last)
            self.last = t
        return t


class Shaper:
    """A token bucket: at most `rate` bytes/s, bursts of at most `burst`
    bytes (an uplink has no burst credit to speak of). Shared by every
    connection of a relay direction, like one host's uplink."""

    def __init__(self, rate, burst=32 * 1024):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = time.monotonic()

    async def take(self, n):
        while True:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= n:
                self.tokens -= n
                return
            await asyncio.sleep((n - self.tokens) / self.rate)


class Stats:
    """Counters of one relay (all its connections)."""

    def __init__(self):
        self.connections = 0
        self.bytes = {"c2s": 0, "s2c": 0}
        self.late = []  # seconds, one per written batch (kept bounded)

    def add_late(self, x):
        if len(self.late) < 200000:
            self.late.append(x)

    def summary(self):
        s = sorted(self.late)

        def q(p):
            return round(s[min(len(s) - 1, int(p * len(s)))] * 1000, 3) if s else None
        return {"connections": self.connections, "bytes_c2s": self.bytes["c2s"],
                "bytes_s2c": self.bytes["s2c"], "chunks": len(s), "late_p50_ms": q(0.5),
                "late_p99_ms": q(0.99), "late_max_ms": round(s[-1] * 1000, 3) if s else None}


class WireTrace:
    """Parses one direction of a BitTorrent peer connection (BEP 3) and logs
    the messages named in the module docs. Plaintext only: the first 68 bytes
    must be a BitTorrent handshake, else tracing stops for this direction."""

    NAMES = {0: "choke", 1: "unchoke", 4: "have", 6: "request", 7: "piece",
             8: "cancel", 16: "reject"}

    def __init__(self, out, relay, conn, direction):
        self.out = out
        self.tag = (relay, conn, direction)
        self.buf = b""
        self.handshake = 68
        self.skip = 0
        self.dead = False

    def feed(self, data, t_in, t):
        """Parse `data`, read by the relay at t_in and written at t."""
        self.t_in = t_in
        if self.dead or self.out is None:
            return
        self.buf += data
        while True:
            if self.skip:
                n = min(self.skip, len(self.buf))
                self.buf = self.buf[n:]
                self.skip -= n
                if self.skip:
                    return
            if self.handshake:
                if len(self.buf) < self.handshake:
                    return
                if self.buf[:20] != b"\x13BitTorrent protocol":
                    self.dead = True
                    return
                self.buf = self.buf[self.handshake:]
                self.handshake = 0
                continue
            if len(self.buf) < 4:
                return
            (length,) = struct.unpack(">I", self.buf[:4])
            if length == 0:
                self.buf = self.buf[4:]
                continue
            if len(self.buf) < 5:
                return
            mid = self.buf[4]
            name = self.NAMES.get(mid)
            if mid == 7:
                if len(self.buf) < 13:
                    return
                index, begin = struct.unpack(">II", self.buf[5:13])
                self._log(t, name, index=index, begin=begin, length=length - 9)
                self.buf = self.buf[13:]
                self.skip = length - 9
                continue
            if len(self.buf) < 4 + length:
                if length > 1 << 20:
                    self.dead = True
                return
            body = self.buf[5:4 + length]
            if mid in (6, 8, 16) and len(body) == 12:
                index, begin, ln = struct.unpack(">III", body)
                self._log(t, name, index=index, begin=begin, length=ln)
            elif mid == 4 and len(body) == 4:
                self._log(t, name, index=struct.unpack(">I", body)[0])
            elif mid in (0, 1):
                self._log(t, name)
            self.buf = self.buf[4 + length:]

    def _log(self, t, msg, **kw):
        relay, conn, d = self.tag
        self.out.write(json.dumps({"t": round(t, 6), "t_in": round(self.t_in, 6), "relay": relay,
                                   "conn": conn, "dir": d, "msg": msg, **kw}) + "\n")


async def pump(reader, writer, path, stats, direction, max_queue, trace, shaper=None):
    """Copy reader -> writer through `path`'s delay model."""
    queue = asyncio.Queue()
    queued = [0]
    room = asyncio.Event()
    room.set()

    async def write_side():
        while True:
            item = await queue.get()
            if item is None:
                break
            due, arrived, data = item
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            # Everything else already due goes out in the same write.
            batch = [(arrived, data)]
            while not queue.empty():
                nxt = queue._queue[0]  # peek (asyncio.Queue has no peek)
                if nxt is None or nxt[0] > time.monotonic():
                    break
                batch.append(queue.get_nowait()[1:])
            out = b"".join(d for _, d in batch) if len(batch) > 1 else data
            stats.add_late(max(0.0, time.monotonic() - due))
            if trace is not None:
                t_out = time.monotonic()
                for t_in, d in batch:
                    trace.feed(d, t_in, t_out)
            try:
                if shaper is None:
                    writer.write(out)
                else:
                    for i in range(0, len(out), 16 * 1024):
                        part = out[i:i + 16 * 1024]
                        await shaper.take(len(part))
                        writer.write(part)
                await writer.drain()
            except (ConnectionError, OSError):
                break
            stats.bytes[direction] += len(out)
            queued[0] -= len(out)
            if queued[0] <= max_queue:
                room.set()
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - closing a broken socket
            pass

    task = asyncio.ensure_future(write_side())
    try:
        while True:
            await room.wait()
            try:
                data = await reader.read(256 * 1024)
            except (ConnectionError, OSError):
                break
            if not data:
                break
            now = time.monotonic()
            queue.put_nowait((path.release(now), now, data))
            queued[0] += len(data)
            if queued[0] > max_queue:
                room.clear()
    finally:
        queue.put_nowait(None)
        await task


async def serve_tcp(listen, target, path_factory, stats, max_queue=4 * MIB, trace_out=None,
                    rate=0):
    """Run one TCP relay from `listen` to `target` ((host, port) tuples)
    until cancelled. `path_factory(direction)` gives the Path of each
    direction of the relay (shared by its connections); `rate` > 0 shapes
    the target-to-client direction to that many bytes/s (one Shaper for
    all the relay's connections)."""
    paths = {"c2s": path_factory("c2s"), "s2c": path_factory("s2c")}
    shaper = Shaper(rate) if rate > 0 else None
    rcvbuf = 64 * 1024 if rate > 0 else 0
    s2c_queue = min(max_queue, 64 * 1024) if rate > 0 else max_queue
    label = f"{listen[0]}:{listen[1]}"
    counter = [0]

    async def handle(creader, cwriter):
        counter[0] += 1
        conn = counter[0]
        try:
            if rcvbuf:
                # A small receive buffer towards the target: with a shaped
                # downstream, back-pressure reaches the sender instead of
                # a queue building up in this host's socket buffers.
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                sock.setblocking(False)
                await asyncio.get_running_loop().sock_connect(sock, target)
                sreader, swriter = await asyncio.open_connection(sock=sock)
            else:
                sreader, swriter = await asyncio.open_connection(*target)
        except OSError:
            cwriter.close()
            return
        for w in (cwriter, swriter):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stats.connections += 1
        t1 = WireTrace(trace_out, label, conn, "c2s") if trace_out else None
        t2 = WireTrace(trace_out, label, conn, "s2c") if trace_out else None
        await asyncio.gather(
            pump(creader, swriter, paths["c2s"], stats, "c2s", max_queue, t1),
            pump(sreader, cwriter, paths["s2c"], stats, "s2c", s2c_queue, t2, shaper))

    server = await asyncio.start_server(handle, listen[0], listen[1], reuse_address=True)
    async with server:
        await server.serve_forever()


class _UdpSide(asyncio.DatagramProtocol):
    def __init__(self, on_datagram):
        self.on_datagram = on_datagram
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.on_datagram(data, addr)


async def serve_udp(listen, target, path_factory, stats, loss=0.0, rng=None, idle=120.0):
    """Run one UDP relay from `listen` to `target` until cancelled (see the
    module docs: a mapping per client address, per-datagram delay, loss)."""
    loop = asyncio.get_running_loop()
    rng = rng or random.Random()
    up = path_factory("c2s")
    down = path_factory("s2c")
    up.ordered = down.ordered = False
    mappings = {}  # client addr -> [transport, last_used]

    def later(path, direction, send, data):
        if loss and rng.random() < loss:
            return
        due = path.release(time.monotonic())

        def fire():
            stats.add_late(max(0.0, time.monotonic() - due))
            stats.bytes[direction] += len(data)
            send(data)
        loop.call_at(loop.time() + max(0.0, due - time.monotonic()), fire)

    front_holder = {}

    def from_client(data, addr):
        m = mappings.get(addr)
        if m is None:
            stats.connections += 1
            m = [None, time.monotonic()]
            mappings[addr] = m

            def from_target(d, _a, addr=addr):
                mappings[addr][1] = time.monotonic()
                later(down, "s2c", lambda x: front_holder["t"].sendto(x, addr), d)
            loop.create_task(_open_mapping(loop, m, target, from_target))
        m[1] = time.monotonic()

        def send_up(x, m=m):
            if m[0] is not None:
                m[0].sendto(x)
        later(up, "c2s", send_up, data)

    front, _ = await loop.create_datagram_endpoint(lambda: _UdpSide(from_client),
                                                   local_addr=listen)
    front_holder["t"] = front
    try:
        while True:
            await asyncio.sleep(idle / 4)
            now = time.monotonic()
            for addr, m in list(mappings.items()):
                if now - m[1] > idle:
                    if m[0] is not None:
                        m[0].close()
                    del mappings[addr]
    finally:
        front.close()
        for m in mappings.values():
            if m[0] is not None:
                m[0].close()


async def _open_mapping(loop, m, target, from_target):
    t, _ = await loop.create_datagram_endpoint(lambda: _UdpSide(from_target),
                                               remote_addr=target)
    m[0] = t


def cpu_seconds():
    t = os.times()
    return t.user + t.system


# ---------------------------------------------------------------- self-test

async def selftest(delay_ms):
    """Measures the relay itself on loopback: one connection's throughput
    with no stalls (a sink that drops everything, a source that writes as
    fast as it can), and the round trip of 1-byte ping-pongs."""
    rng = random.Random(1)
    d = delay_ms / 1000

    async def sink(r, w):
        while await r.read(1 << 20):
            pass

    async def echo(r, w):
        while True:
            b = await r.read(1)
            if not b:
                return
            w.write(b)
            await w.drain()

    out = {}
    for name, handler in (("throughput", sink), ("rtt", echo)):
        srv = await asyncio.start_server(handler, "127.0.0.1", 0)
        tport = srv.sockets[0].getsockname()[1]
        stats = Stats()
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lport = lsock.getsockname()[1]
        lsock.close()
        relay = asyncio.ensure_future(serve_tcp(
            ("127.0.0.1", lport), ("127.0.0.1", tport),
            lambda _d: Path(d, 0.005, 0, 0, rng), stats))
        await asyncio.sleep(0.2)
        r, w = await asyncio.open_connection("127.0.0.1", lport)
        if name == "throughput":
            chunk = b"x" * (256 * 1024)
            c0 = cpu_seconds()
            t0 = time.monotonic()
            n = 0
            while time.monotonic() - t0 < 3:
                w.write(chunk)
                await w.drain()
                n += len(chunk)
            w.close()
            await asyncio.sleep(d * 2 + 0.1)
            secs = time.monotonic() - t0
            out["throughput_MBps"] = round(stats.bytes["c2s"] / secs / 1e6, 1)
            out["cpu_s_per_100MB"] = round((cpu_seconds() - c0) / (n / 1e8), 3)
        else:
            rtts = []
            for _ in range(20):
                t0 = time.monotonic()
                w.write(b"p")
                await w.drain()
                await r.readexactly(1)
                rtts.append(time.monotonic() - t0)
            w.close()
            rtts.sort()
            out["rtt_p50_ms"] = round(rtts[10] * 1000, 2)
            out["rtt_max_ms"] = round(rtts[-1] * 1000, 2)
            out["rtt_expected_ms"] = 2 * delay_ms
        out[name + "_late"] = stats.summary()
        relay.cancel()
        srv.close()
    return out


# ---------------------------------------------------------------- main

def main(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pairs", nargs="*", metavar="LISTEN=TARGET")
    p.add_argument("--udp", action="store_true")
    p.add_argument("--delay-ms", type=float, default=25.0)
    p.add_argument("--jitter-ms", type=float, default=5.0)
    p.add_argument("--stall-rate", type=float, default=0.05)
    p.add_argument("--stall-ms", type=float, default=250.0)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--max-queue", type=int, default=4 * MIB)
    p.add_argument("--rate", type=int, default=0)
    p.add_argument("--seed", type=int)
    p.add_argument("--trace", metavar="FILE")
    p.add_argument("--selftest", action="store_true")
    a = p.parse_args(argv)
    if a.selftest:
        emit("selftest", **asyncio.run(selftest(a.delay_ms)))
        return 0
    if not a.pairs:
        p.error("give at least one LISTEN=TARGET (or --selftest)")
    if a.jitter_ms > a.delay_ms:
        p.error("--jitter-ms must not exceed --delay-ms")
    pairs = []
    for s in a.pairs:
        left, sep, right = s.partition("=")
        if not sep:
            p.error(f"not LISTEN=TARGET: {s!r}")
        try:
            pairs.append((parse_addr(left), parse_addr(right)))
        except ValueError as e:
            p.error(str(e))
    rng = random.Random(a.seed)
    trace = open(a.trace, "w", buffering=1 << 16) if a.trace else None

    def factory(_direction):
        return Path(a.delay_ms / 1000, a.jitter_ms / 1000, a.stall_rate, a.stall_ms / 1000, rng)

    all_stats = {}

    async def run():
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            mode = os.fstat(0).st_mode
            if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                def on_stdin():
                    try:
                        if not os.read(0, 4096):
                            loop.remove_reader(0)
                            stop.set()
                    except OSError:
                        loop.remove_reader(0)
                        stop.set()
                loop.add_reader(0, on_stdin)
        except OSError:
            pass
        tasks = []
        for listen, target in pairs:
            st = Stats()
            all_stats[f"{listen[0]}:{listen[1]}"] = st
            if a.udp:
                coro = serve_udp(listen, target, factory, st, a.loss, rng)
            else:
                coro = serve_tcp(listen, target, factory, st, a.max_queue, trace, a.rate)
            tasks.append(asyncio.ensure_future(coro))
        await asyncio.sleep(0.05)
        for t in tasks:
            if t.done():
                t.result()  # raise the bind error
        emit("ready", relays=[{"listen": f"{lh}:{lp}", "target": f"{th}:{tp}"}
                              for (lh, lp), (th, tp) in pairs])
        await stop.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run(run())
    finally:
        if trace:
            trace.close()
        emit("stats", relays={k: v.summary() for k, v in all_stats.items()},
             cpu_s=round(cpu_seconds(), 2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(0)
