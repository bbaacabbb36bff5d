#!/usr/bin/python3
"""ltnode: one libtorrent (python3-libtorrent 2.0.8) peer for btfs-mount's tests.

A real, independent BitTorrent peer that end-to-end tests start as a child
process. It is driven by flags and reports what happens as JSON lines on
stdout (one object per line, flushed at once); human-readable logs go to
stderr. It stays on loopback (or on an address given with --listen-ip inside
a test's own network namespace) and never contacts public DHT routers: with
the DHT on, --bootstrap is required.

It stops cleanly on SIGTERM or SIGINT, and when its stdin is a pipe that
closes (so a test that dies leaves no orphan behind). With stdin a terminal
or /dev/null the stdin watch is off.

Roles (at most one of them; none gives a bare DHT node):
  --seed DIR                      make a v1 torrent of DIR (a directory or a
                                  single file) and seed it from DIR's parent
                                  (--flavor hybrid / v2: BEP 52 torrents)
  --seed-torrent F.torrent --save DIR   seed an existing torrent from DIR
  --fetch MAGNET|F.torrent --save DIR   download; report `finished` once every
                                  piece is had (checked piece by piece)

Events (each line has "event"; other fields as listed):
  ready        port (TCP and UDP listen port), dht_port, node_id (40 hex or null)
  torrent      info_hash (40 hex, v1; zeros for v2-only), info_hash_v2 (64
               hex, "" without v2), magnet, name, files [{path, size}],
               piece_length (bytes), num_pieces, total_size (bytes),
               torrent_file (path or null)
  seeding      info_hash                      (a seeder has checked all pieces)
  progress     info_hash, state, progress (0..1), total_done, total_wanted
               (bytes), num_peers, download_rate, upload_rate (bytes/s),
               total_upload (payload bytes); at most once a second, on change
  finished     info_hash, seconds (since the torrent was added)
  dht_nodes    count (live nodes in the routing table); every 2 s with the DHT on
  dht_announce info_hash, ip, port          (another node announced to us)
  peer_connected / peer_disconnected   addr ("ip:port"), info_hash
  portmap      transport ("upnp" or "natpmp"), protocol ("tcp" or "udp"),
               external_port; with --upnp / --natpmp, when the router maps
               a listen port
  portmap_error transport, message
  peer_pieces  addr, num_pieces, have (count), missing (indices the peer has
               not told us it has, by bitfield or HAVE); with --report-peers,
               checked every 0.25 s, emitted when a peer's set changes
  error        message
  exit         reason

The session is set up by ltsession.py (the settings that keep libtorrent on
loopback and make DHT discovery fast; mountpoint-tests/README.md explains
them); `session_settings` below adds this node's flags.
"""

import argparse
import os
import signal
import sys
import time
import warnings

import libtorrent as lt

import btcommon
import ltsession
from btcommon import Stop, emit, log, watch_stdin

# Several handy accessors (dht_state, status) are deprecated in 2.0 but work.
warnings.simplefilter("ignore", DeprecationWarning)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen-ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--listen-port", type=int, default=0, help="TCP+UDP port; 0 picks a free one")
    dht = p.add_mutually_exclusive_group()
    dht.add_argument("--dht", dest="dht", action="store_true", help="enable the DHT (needs --bootstrap)")
    dht.add_argument("--no-dht", dest="dht", action="store_false", help="disable the DHT (default)")
    p.set_defaults(dht=False)
    p.add_argument("--bootstrap", action="append", default=[], metavar="HOST:PORT",
                   help="DHT node to join through (pinged, so it enters the routing table); "
                        "repeatable; required with --dht")
    p.add_argument("--router", action="append", default=[], metavar="HOST:PORT",
                   help="DHT router (dht_bootstrap_nodes: used to start lookups, never "
                        "put in the routing table); repeatable")
    p.add_argument("--lsd", action="store_true", help="enable local service discovery (BEP 14)")
    p.add_argument("--upnp", action="store_true",
                   help="map the listen port with UPnP IGD (only inside a test's own simulated "
                        "internet, see support/netsim.rs)")
    p.add_argument("--natpmp", action="store_true",
                   help="map the listen port with NAT-PMP (same caveat as --upnp)")
    p.add_argument("--announce-interval", type=int, default=2, metavar="S",
                   help="dht_announce_interval in seconds (default 2)")
    role = p.add_mutually_exclusive_group()
    role.add_argument("--seed", metavar="DIR", help="create a v1 torrent of DIR and seed it")
    role.add_argument("--seed-torrent", metavar="FILE", help="seed FILE.torrent from --save")
    role.add_argument("--fetch", metavar="MAGNET_OR_TORRENT", help="download a magnet or .torrent into --save")
    p.add_argument("--save", metavar="DIR", help="save path for --seed-torrent and --fetch")
    p.add_argument("--piece-size", type=int, default=0, help="piece length for --seed (bytes, power of 2)")
    p.add_argument("--flavor", choices=["v1", "hybrid", "v2"], default="v1",
                   help="with --seed: a v1 (default), hybrid v1+v2 or v2-only (BEP 52) torrent")
    p.add_argument("--write-torrent", metavar="FILE", help="with --seed: also write the .torrent here")
    p.add_argument("--connect", action="append", default=[], metavar="HOST:PORT",
                   help="dial this peer now and every 2 s until a peer is connected; repeatable")
    p.add_argument("--upload-only", action="store_true", help="upload mode: never download")
    p.add_argument("--upload-limit", type=int, default=0, metavar="BYTES",
                   help="upload rate limit in bytes/s (0: none), to make a slow seeder")
    p.add_argument("--no-utp", action="store_true", help="TCP only (libtorrent dials uTP first otherwise)")
    p.add_argument("--no-encryption", action="store_true", help="plaintext only (no MSE handshake)")
    p.add_argument("--utp-only", action="store_true", help="uTP only: no TCP in or out")
    p.add_argument("--require-encryption", action="store_true",
                   help="MSE with RC4 forced both ways (out/in_enc_policy forced, allowed_enc_level rc4)")
    p.add_argument("--keep-redundant", action="store_true",
                   help="keep connections where neither side wants data "
                        "(close_redundant_connections off), e.g. a seed and an upload-only peer")
    p.add_argument("--ignore-pex", action="store_true",
                   help="take no peers from peer exchange (max_pex_peers 0): this node dials only "
                        "--connect peers and peers a BEP 55 holepunch relay names")
    p.add_argument("--verbose", action="store_true", help="log DHT and peer traffic on stderr")
    p.add_argument("--report-peers", action="store_true",
                   help="emit peer_pieces events: which pieces each connected peer advertised")
    args = p.parse_args(argv)
    if args.dht and not args.bootstrap:
        p.error("--dht needs at least one --bootstrap HOST:PORT (never the public routers)")
    if (args.seed_torrent or args.fetch) and not args.save:
        p.error("--seed-torrent and --fetch need --save DIR")
    args.bootstrap = [parse_hostport(p, s) for s in args.bootstrap]
    args.router = [parse_hostport(p, s) for s in args.router]
    args.connect = [parse_hostport(p, s) for s in args.connect]
    return args


def parse_hostport(parser, text):
    try:
        return btcommon.parse_hostport(text)
    except ValueError as e:
        parser.error(str(e))


def session_settings(args):
    """The settings_pack for this node: ltsession's, for a small swarm
    (`ltsession.FAST`), and this node's flags."""
    mask = ltsession.ALERTS | lt.alert.category_t.port_mapping_notification
    if args.verbose:
        mask |= lt.alert.category_t.dht_log_notification | lt.alert.category_t.peer_log_notification
    # The DHT starts once the listen port is known (see start_dht); until
    # then the routers are a placeholder, never empty.
    s = ltsession.settings(f"{args.listen_ip}:{args.listen_port}", routers(args, 0),
                           lsd=args.lsd, upnp=args.upnp, natpmp=args.natpmp,
                           announce_interval=args.announce_interval,
                           alert_mask=mask)
    s.update(ltsession.FAST)
    s["user_agent"] = ltsession.USER_AGENT
    if args.upload_limit:
        s["upload_rate_limit"] = args.upload_limit
    if args.no_utp:
        s["enable_outgoing_utp"] = False
        s["enable_incoming_utp"] = False
    if args.keep_redundant:
        s["close_redundant_connections"] = False
    if args.ignore_pex:
        s["max_pex_peers"] = 0
    if args.no_encryption:
        s["out_enc_policy"] = int(lt.enc_policy.pe_disabled)
        s["in_enc_policy"] = int(lt.enc_policy.pe_disabled)
    if args.utp_only:
        s["enable_outgoing_tcp"] = False
        s["enable_incoming_tcp"] = False
        s["enable_outgoing_utp"] = True
        s["enable_incoming_utp"] = True
    if args.require_encryption:
        s["out_enc_policy"] = int(lt.enc_policy.pe_forced)
        s["in_enc_policy"] = int(lt.enc_policy.pe_forced)
        s["allowed_enc_level"] = int(lt.enc_level.rc4)
    return s


def routers(args, own_port):
    """The dht_bootstrap_nodes value: the --router list, else this node itself.

    libtorrent never puts a router into its routing table, so --bootstrap
    nodes are not routers: they are pinged with add_dht_node and become
    ordinary routing-table entries. A router list is still needed (an empty
    one means the public routers), and an unanswered router stalls every
    lookup that includes it for seconds, so the default router is this very
    node: it answers at once and is never a routing-table candidate anyway.
    """
    if args.router:
        return ",".join(f"{h}:{p}" for h, p in args.router)
    return f"{args.listen_ip}:{own_port or 1}"


def start_dht(ses, args, port):
    """Turn the DHT on now that this node's UDP port is known."""
    ltsession.start_dht(ses, routers(args, port), args.bootstrap)


def node_id(ses):
    """The DHT node id as 40 hex digits, or None while the DHT is not up."""
    try:
        state = ses.dht_state() or {}
    except Exception:  # noqa: BLE001 - binding differences; the id is informative only
        return None
    ids = state.get(b"node-id") or []
    if isinstance(ids, bytes):
        ids = [ids]
    for raw in ids:
        if len(raw) >= 20:
            return raw[:20].hex()
    return None


class Torrent:
    """The one torrent this node seeds or fetches, and what it reported."""

    def __init__(self, handle, role, ti=None):
        self.handle = handle
        self.role = role
        self.ti = ti
        self.info_hash = str(handle.info_hashes().v1)
        self.added = time.monotonic()
        self.reported_torrent = ti is not None
        self.done = False
        self.last_progress = None
        self.last_progress_time = 0.0
        self.last_peer_pieces = {}
        self.last_peers_time = 0.0

    def all_pieces_had(self):
        st = self.handle.status()
        ti = self.handle.torrent_file()
        if ti is None or not st.has_metadata:
            return False
        n = ti.num_pieces()
        return n > 0 and all(self.handle.have_piece(i) for i in range(n))

    def check_done(self):
        """Report `seeding` or `finished` once every piece is had."""
        if self.done:
            return
        st = self.handle.status()
        if st.state in (lt.torrent_status.checking_files, lt.torrent_status.checking_resume_data):
            return
        if not self.all_pieces_had():
            return
        self.done = True
        if self.role == "fetch":
            emit("finished", info_hash=self.info_hash,
                 seconds=round(time.monotonic() - self.added, 3))
        else:
            emit("seeding", info_hash=self.info_hash)
        # libtorrent does not announce while checking files: announce now
        # instead of one dht_announce_interval later (a no-op without DHT).
        self.handle.force_dht_announce()

    def report_progress(self, force=False):
        now = time.monotonic()
        if not force and now - self.last_progress_time < 1.0:
            return
        st = self.handle.status()
        key = (str(st.state), st.total_done, st.num_peers, st.total_payload_upload)
        if key == self.last_progress and not force:
            return
        self.last_progress = key
        self.last_progress_time = now
        emit("progress", info_hash=self.info_hash, state=str(st.state).rsplit(".", 1)[-1],
             progress=round(st.progress, 4), total_done=st.total_done,
             total_wanted=st.total_wanted, num_peers=st.num_peers,
             download_rate=st.download_payload_rate, upload_rate=st.upload_payload_rate,
             total_upload=st.total_payload_upload)

    def report_peers(self):
        """Emit peer_pieces for each connected peer whose advertised set changed."""
        now = time.monotonic()
        if now - self.last_peers_time < 0.25:
            return
        self.last_peers_time = now
        for p in self.handle.get_peer_info():
            if p.flags & (lt.peer_info.connecting | lt.peer_info.handshake):
                continue
            pieces = list(p.pieces)
            if not pieces:
                continue
            addr = f"{p.ip[0]}:{p.ip[1]}"
            missing = [i for i, h in enumerate(pieces) if not h]
            if self.last_peer_pieces.get(addr) == missing:
                continue
            self.last_peer_pieces[addr] = missing
            emit("peer_pieces", addr=addr, num_pieces=len(pieces),
                 have=len(pieces) - len(missing), missing=missing)

    def connected_peers(self):
        n = 0
        for p in self.handle.get_peer_info():
            if not p.flags & (lt.peer_info.connecting | lt.peer_info.handshake):
                n += 1
        return n


def add_torrent(ses, args):
    """Add the torrent of this node's role; returns a Torrent or None."""
    flags_on = lt.torrent_flags.upload_mode if args.upload_only else 0
    if args.seed:
        src = os.path.abspath(args.seed)
        log(f"hashing {src}")
        ti, data = ltsession.make_torrent(src, args.piece_size, creator="btfs-mount ltnode",
                                          hybrid=args.flavor == "hybrid",
                                          v2_only=args.flavor == "v2")
        if args.write_torrent:
            with open(args.write_torrent, "wb") as f:
                f.write(data)
        atp = lt.add_torrent_params()
        atp.ti = ti
        atp.save_path = os.path.dirname(src)
        role = "seed"
    elif args.seed_torrent:
        ti = lt.torrent_info(args.seed_torrent)
        atp = lt.add_torrent_params()
        atp.ti = ti
        atp.save_path = os.path.abspath(args.save)
        role = "seed"
    elif args.fetch:
        os.makedirs(args.save, exist_ok=True)
        if args.fetch.startswith("magnet:"):
            atp = lt.parse_magnet_uri(args.fetch)
            ti = None
        else:
            ti = lt.torrent_info(args.fetch)
            atp = lt.add_torrent_params()
            atp.ti = ti
        atp.save_path = os.path.abspath(args.save)
        role = "fetch"
    else:
        return None
    atp.flags = (atp.flags | flags_on) & ~lt.torrent_flags.paused & ~lt.torrent_flags.auto_managed
    handle = ses.add_torrent(atp)
    t = Torrent(handle, role, ti)
    if ti is not None:
        ltsession.torrent_event(
            ti, os.path.abspath(args.write_torrent) if args.write_torrent else None)
    log(f"added {role} torrent {t.info_hash}")
    return t


def portmap_transport(a):
    """"upnp" or "natpmp": which protocol a portmap alert is about."""
    return "upnp" if a.map_transport == lt.portmap_transport.upnp else "natpmp"


def handle_alert(a, t, args):
    """Turn one libtorrent alert into events or log lines."""
    if isinstance(a, lt.metadata_received_alert) and t is not None and not t.reported_torrent:
        t.reported_torrent = True
        ltsession.torrent_event(a.handle.torrent_file())
    elif isinstance(a, (lt.torrent_error_alert, lt.file_error_alert, lt.metadata_failed_alert,
                        lt.listen_failed_alert, lt.hash_failed_alert)):
        emit("error", message=a.message())
    elif isinstance(a, lt.portmap_alert):
        emit("portmap", transport=portmap_transport(a),
             protocol="tcp" if a.map_protocol == lt.portmap_protocol.tcp else "udp",
             external_port=a.external_port)
    elif isinstance(a, lt.portmap_error_alert):
        emit("portmap_error", transport=portmap_transport(a), message=a.message())
    elif isinstance(a, lt.dht_announce_alert):
        emit("dht_announce", info_hash=str(a.info_hash), ip=str(a.ip), port=a.port)
    elif isinstance(a, lt.peer_connect_alert):
        emit("peer_connected", addr=f"{a.endpoint[0]}:{a.endpoint[1]}",
             info_hash=str(a.handle.info_hashes().v1))
    elif isinstance(a, lt.peer_disconnected_alert):
        emit("peer_disconnected", addr=f"{a.endpoint[0]}:{a.endpoint[1]}",
             info_hash=str(a.handle.info_hashes().v1), reason=a.message())
    elif isinstance(a, (lt.dht_log_alert, lt.dht_pkt_alert, lt.peer_log_alert)):
        if args.verbose:
            log(a.message())
        return
    if isinstance(a, lt.dht_stats_alert):
        return
    log(f"{type(a).__name__}: {a.message()}")


def main(argv):
    args = parse_args(argv)
    stop = Stop()
    signal.signal(signal.SIGTERM, lambda *_: stop.set("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: stop.set("SIGINT"))
    watch_stdin(lambda: stop.set("stdin closed"))

    ses = lt.session(session_settings(args))
    if args.upload_limit:
        # Loopback peers are in libtorrent's unlimited "local" peer class:
        # put every address in the global class so the limit applies.
        f = lt.ip_filter()
        f.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        ses.set_peer_class_filter(f)
    port = ltsession.wait_listening(ses, stop)
    if port is None:
        return 2
    nid = None
    if args.dht:
        start_dht(ses, args, port)
        deadline = time.monotonic() + 3.0
        while nid is None and time.monotonic() < deadline:
            nid = node_id(ses)
            if nid is None:
                time.sleep(0.05)
    emit("ready", port=port, dht_port=port if args.dht else None, node_id=nid)
    log(f"listening on {args.listen_ip}:{port}, dht={'on' if args.dht else 'off'}")

    try:
        t = add_torrent(ses, args)
    except Exception as e:  # noqa: BLE001 - reported as an event, then exit 1
        emit("error", message=f"cannot add torrent: {type(e).__name__}: {e}")
        return 1

    last_connect = 0.0
    last_dht_stats = 0.0
    last_ping = 0.0
    last_nodes_event = 0.0
    dht_nodes = 0
    while stop.reason is None:
        now = time.monotonic()
        # Ping the --bootstrap nodes at once, then every 2 s while the
        # routing table has fewer nodes than were given.
        if args.dht and now - last_ping >= 2.0 and dht_nodes < len(args.bootstrap):
            last_ping = now
            for node in args.bootstrap:
                ses.add_dht_node(node)
        # Routing table size: every 0.25 s while it is empty, then every 2 s.
        if args.dht and now - last_dht_stats >= (2.0 if dht_nodes else 0.25):
            last_dht_stats = now
            ses.post_dht_stats()
        ltsession.wait_for_alerts(ses, 250)
        for a in ses.pop_alerts():
            if isinstance(a, lt.dht_stats_alert):
                count = sum(b["num_nodes"] for b in a.routing_table)
                if count and not dht_nodes and t is not None:
                    # The first announce went nowhere (empty table); announce
                    # now rather than one dht_announce_interval later.
                    log("routing table no longer empty: force_dht_announce")
                    t.handle.force_dht_announce()
                if count != dht_nodes or now - last_nodes_event >= 2.0:
                    last_nodes_event = now
                    emit("dht_nodes", count=count)
                dht_nodes = count
            handle_alert(a, t, args)
        now = time.monotonic()
        if t is not None:
            if args.connect and now - last_connect >= 2.0 and t.connected_peers() == 0:
                last_connect = now
                for host, p in args.connect:
                    log(f"connect_peer {host}:{p}")
                    t.handle.connect_peer((host, p))
            t.check_done()
            t.report_progress()
            if args.report_peers:
                t.report_peers()

    log(f"stopping: {stop.reason}")
    emit("exit", reason=stop.reason)
    ses.pause()
    del ses
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BrokenPipeError:
        sys.exit(0)
