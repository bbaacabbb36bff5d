"""ltsession: the one place where btfs-mount's test scripts set up a
python3-libtorrent (2.0.8) session.

Every script that runs libtorrent takes its settings from `settings`
(ltnode.py, lt_dht.py, lt_wire_seed.py, bep46_lt_get.py, and the benchmark's
scripts/bench.d/swarm.py): they keep libtorrent on the address it is given
(loopback, or an address inside a test's own network namespace), never let
it reach the public DHT routers, and relax the rules that assume every peer
has an IP address of its own. mountpoint-tests/README.md says why each
setting is there. Also here: `ALERTS` and `USER_AGENT` (what a test peer
reports and is called), `FAST` (small swarms on one machine),
`wait_listening`, `wait_seeding`, `start_dht`, and `make_torrent` /
`torrent_event`.
"""

import os
import select
import time

import libtorrent as lt

from btcommon import emit, log


def settings(listen, routers, *, dht=False, lsd=False, upnp=False, natpmp=False,
             announce_interval=None, alert_mask=None):
    """The settings_pack (a dict) of a session that listens on `listen`
    ("IP:PORT", port 0 for any) and stays there.

    `routers` is dht_bootstrap_nodes ("HOST:PORT,..."): never empty, even
    with the DHT off, since an empty list means the public routers
    (ValueError). `dht` and `lsd` turn the DHT and local service discovery
    (BEP 14) on; `upnp` and `natpmp` port mapping, only ever inside a
    test's own simulated internet (support/netsim.rs). `announce_interval`
    (seconds) replaces the default 15 minutes between DHT announces;
    `alert_mask` is libtorrent's alert category mask.
    """
    if not routers:
        raise ValueError("dht_bootstrap_nodes must not be empty (it would mean the public routers)")
    s = {
        "listen_interfaces": listen,
        "enable_lsd": bool(lsd),
        "enable_upnp": bool(upnp),
        "enable_natpmp": bool(natpmp),
        "enable_dht": bool(dht),
        "dht_bootstrap_nodes": routers,
        # Every node of a test shares one IP: relax the anti-sybil rules.
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False,
        "dht_prefer_verified_node_ids": False,
        "dht_ignore_dark_internet": False,
        "allow_multiple_connections_per_ip": True,
        # libtorrent would otherwise block that one IP for minutes after 5
        # DHT queries a second.
        "dht_block_ratelimit": 1000000,
    }
    if announce_interval is not None:
        s["dht_announce_interval"] = max(1, announce_interval)
    if alert_mask is not None:
        s["alert_mask"] = alert_mask
    return s


# The alerts a test peer reports on: errors, status, storage, DHT,
# connections and peers (add dht_log and peer_log for a verbose log).
ALERTS = (lt.alert.category_t.error_notification | lt.alert.category_t.status_notification
          | lt.alert.category_t.storage_notification | lt.alert.category_t.dht_notification
          | lt.alert.category_t.connect_notification | lt.alert.category_t.peer_notification)

# The user agent of the test peers (ltnode.py, the benchmark's swarm.py).
USER_AGENT = "ltnode/libtorrent-" + lt.__version__

# Small swarms on one machine: look up torrents at once and often, no rate
# limits, connect quickly, every torrent active.
FAST = {
    "outgoing_interfaces": "",
    "dht_aggressive_lookups": True,
    "dht_max_fail_count": 100,
    "alert_queue_size": 100000,
    "connection_speed": 100,
    "min_reconnect_time": 1,
    "peer_connect_timeout": 3,
    "unchoke_slots_limit": -1,
    "auto_manage_startup": 1,
    "auto_manage_interval": 1,
    "active_downloads": -1,
    "active_seeds": -1,
    "active_limit": -1,
    "seeding_outgoing_connections": True,
}


# Read ends of the pipes libtorrent writes to when alerts arrive, by session.
_alert_pipes = {}


def wait_for_alerts(ses, ms):
    """Waits up to `ms` milliseconds for libtorrent alerts to be pending
    (then `ses.pop_alerts()` takes them). Use this, never
    `ses.wait_for_alert`: python3-libtorrent 2.0.8's binding of
    wait_for_alert turns the returned `alert const*` into a Python object
    while the network thread may already be rewriting the alert queue, and
    the test peer dies of SIGSEGV (seen in about 1 run in 10 of
    holepunch.rs's relay test; a core showed the crash in
    `caller_py_function_impl<... alert const* (*)(session&, int) ...>`).
    Here libtorrent itself writes a byte to a pipe when alerts arrive
    (`set_alert_fd`), and Python only waits on the pipe."""
    r = _alert_pipes.get(id(ses))
    if r is None:
        r, w = os.pipe()
        os.set_blocking(r, False)
        os.set_blocking(w, False)
        ses.set_alert_fd(w)
        _alert_pipes[id(ses)] = r
    select.select([r], [], [], ms / 1000.0)
    try:
        os.read(r, 4096)
    except BlockingIOError:
        pass


def wait_listening(ses, stop, timeout=10.0):
    """Waits for the TCP and UDP listen sockets; returns the port, or None
    (after an `error` event) if they fail or do not open within `timeout`
    seconds. `stop.reason` set meanwhile ends the wait too."""
    tcp = udp = False
    deadline = time.monotonic() + timeout
    while not (tcp and udp) and time.monotonic() < deadline and stop.reason is None:
        wait_for_alerts(ses, 200)
        for a in ses.pop_alerts():
            if isinstance(a, lt.listen_succeeded_alert):
                log(a.message())
                if a.socket_type == lt.socket_type_t.tcp:
                    tcp = True
                elif a.socket_type in (lt.socket_type_t.udp, lt.socket_type_t.utp):
                    udp = True
            elif isinstance(a, lt.listen_failed_alert):
                emit("error", message=a.message())
                return None
    if not (tcp and udp):
        emit("error", message="listen sockets not open within %.0f s" % timeout)
        return None
    return ses.listen_port()


def wait_seeding(ses, handle, timeout):
    """Waits until the torrent of `handle` seeds (every piece checked) and
    the session has a listen port; returns None, or why not once `timeout`
    seconds have passed."""
    deadline = time.monotonic() + timeout
    while handle.status().state != lt.torrent_status.seeding or ses.listen_port() == 0:
        if time.monotonic() > deadline:
            return "not seeding after %.0f s: %s" % (timeout, handle.status().state)
        time.sleep(0.05)
    return None


def start_dht(ses, routers, bootstrap):
    """Turns the DHT on once the node's UDP port is known: `routers` becomes
    dht_bootstrap_nodes, and each (host, port) of `bootstrap` is pinged
    (add_dht_node), so that it enters the routing table. libtorrent never
    puts a router into its routing table: nodes that must know each other
    are bootstrap nodes, not routers."""
    ses.apply_settings({"dht_bootstrap_nodes": routers, "enable_dht": True})
    for node in bootstrap:
        ses.add_dht_node(node)


def make_torrent(path, piece_size, hybrid=False, creator="btfs-mount test", v2_only=False):
    """A torrent of `path` (a directory or a file), v1 only unless `hybrid`
    (v1 + v2) or `v2_only` (BEP 52 only), with `piece_size`-byte pieces (0:
    libtorrent's choice), hashed from `path`'s parent. Returns
    (torrent_info, .torrent bytes)."""
    path = os.path.abspath(path)
    fs = lt.file_storage()
    lt.add_files(fs, path)
    if fs.num_files() == 0:
        raise ValueError(f"no files under {path}")
    if v2_only:
        flags = lt.create_torrent.v2_only
    else:
        flags = 0 if hybrid else lt.create_torrent.v1_only
    ct = lt.create_torrent(fs, piece_size, flags)
    ct.set_creator(creator)
    lt.set_piece_hashes(ct, os.path.dirname(path))
    data = lt.bencode(ct.generate())
    return lt.torrent_info(lt.bdecode(data)), data


def torrent_event(ti, torrent_file=None):
    """Emits the `torrent` event of `ti`: info_hash (v1; 40 zeros for a
    v2-only torrent), info_hash_v2 (64 hex, "" without v2), magnet, name,
    files [{path, size}] (pad files left out), piece_length, num_pieces,
    total_size, torrent_file."""
    fs = ti.files()
    files = []
    for i in range(fs.num_files()):
        if fs.file_flags(i) & lt.file_storage.flag_pad_file:
            continue
        files.append({"path": fs.file_path(i), "size": fs.file_size(i)})
    emit("torrent",
         info_hash=str(ti.info_hashes().v1),
         info_hash_v2=str(ti.info_hashes().v2) if ti.info_hashes().has_v2() else "",
         magnet=lt.make_magnet_uri(ti),
         name=ti.name(),
         files=files,
         piece_length=ti.piece_length(),
         num_pieces=ti.num_pieces(),
         total_size=ti.total_size(),
         torrent_file=torrent_file)
