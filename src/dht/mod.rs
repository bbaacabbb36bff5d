//! Our mainline DHT node: BEP 5 (KRPC, routing table, peers), BEP 32 (IPv6:
//! a dual-stack DHT, `nodes6`, `want`), BEP 42 (node id tied to the external
//! IP), BEP 43 (read-only nodes), BEP 44 (immutable and mutable items).
//!
//! A [`Dht`] is a cheap, cloneable handle to one node per address family,
//! each running as a tokio task that owns its UDP socket and its routing
//! table: by default an IPv4 node on `0.0.0.0` and an IPv6 node on `[::]`
//! (`IPV6_V6ONLY`, the same port when free), as libtorrent runs one DHT
//! node per listen socket (BEP 32). Start them with [`Dht::start`], fill
//! their routing tables with [`Dht::bootstrap`] (bootstrap nodes of either
//! family), then find peers ([`Dht::get_peers`], which streams batches as
//! they arrive from lookups over both tables), announce
//! ([`Dht::announce_peer`], over both) and get or put BEP 44 items.
//! [`Dht::shutdown`] saves the routing tables in [`DhtConfig::state_dir`]
//! so the next start bootstraps without routers.
//!
//! Modules: [`krpc`] (messages), [`routing`] (buckets), `family` (one
//! address family's node and the operations over its table), `lookup`
//! (iterative lookups), [`rtt`] (round trips, soft timeouts), [`storage`] (what we store for others), [`bep44`]
//! (items and signatures), [`id`] (distances, BEP 42), `node` (the task).

pub mod bep44;
mod family;
mod handle;
pub mod id;
pub mod krpc;
mod lookup;
mod node;
pub mod routing;
pub mod rtt;
pub mod storage;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

pub use bep44::{MutableItem, immutable_target, mutable_target, signed_buffer};
pub use krpc::NodeInfo;
pub use node::RpcError;

use crate::bencode::{self, Kind, Limits};
use crate::hash::InfoHash;
use handle::Inner;
use krpc::{PutArgs, Query};
use node::Cmd;
use routing::K;
use storage::{MAX_SALT_LEN, MAX_V_LEN};

/// Configuration of a DHT node.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// UDP address of the first node: IPv4, or IPv6 for an IPv6-only DHT
    /// (its socket is `IPV6_V6ONLY`). Default `0.0.0.0:6881`.
    pub bind: SocketAddr,
    /// BEP 32: when `bind` is IPv4, the IPv6 address of a second node (its
    /// own socket, `IPV6_V6ONLY`, and routing table), bound to `bind`'s
    /// port when that is free on it, else to any free port. A bind error
    /// (no IPv6 on this host) leaves the DHT IPv4 only, logged. Ignored
    /// when `bind` is IPv6. `None`: IPv4 only. Default `Some(::)`.
    pub bind6: Option<IpAddr>,
    /// Bootstrap routers as `"host:port"`, resolved with
    /// `tokio::net::lookup_host` at bootstrap. Default: the public mainline
    /// routers. Tests must set their own.
    pub bootstrap: Vec<String>,
    /// Directory for the state file `dht_nodes` (our id and good nodes);
    /// `None` keeps nothing between runs.
    pub state_dir: Option<PathBuf>,
    /// How long to wait for one response before the node counts as failed
    /// (BEP 5: unanswered queries make a node questionable, then bad).
    /// Default 2 s. Lookups stop waiting for a query much sooner, after its
    /// soft timeout (see [`rtt`]), but still take a late answer until this
    /// timeout.
    pub request_timeout: Duration,
    /// Bound on one whole lookup. Default 30 s.
    pub lookup_timeout: Duration,
    /// BEP 43: send `ro = 1`, answer no queries, stay out of others' tables.
    pub read_only: bool,
    /// Parallel requests per lookup (Kademlia α). Default 3. Requests past
    /// their soft timeout (see [`rtt`]) no longer count.
    pub alpha: usize,
    /// BEP 42: keep nodes at public IPs out of the table unless their id
    /// matches their IP. Default true.
    pub enforce_node_id: bool,
    /// A fixed node id (tests); default: the saved id, else a random one
    /// (BEP 42 fixes it once our external IP is known).
    pub node_id: Option<[u8; 20]>,
}

impl Default for DhtConfig {
    fn default() -> Self {
        DhtConfig {
            bind: SocketAddr::from(([0, 0, 0, 0], 6881)),
            bind6: Some(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)),
            bootstrap: vec![
                "router.bittorrent.com:6881".into(),
                "dht.transmissionbt.com:6881".into(),
                "router.utorrent.com:6881".into(),
            ],
            state_dir: None,
            request_timeout: Duration::from_secs(2),
            lookup_timeout: Duration::from_secs(30),
            read_only: false,
            alpha: 3,
            enforce_node_id: true,
            node_id: None,
        }
    }
}

/// Why a BEP 44 put failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhtError {
    /// The value is not one valid bencoded value.
    #[error("the value is not valid bencode")]
    InvalidValue,
    /// The bencoded value is longer than 1000 bytes (BEP 44).
    #[error("the value is {0} bytes; BEP 44 allows 1000")]
    ValueTooLarge(usize),
    /// The salt is longer than 64 bytes (BEP 44).
    #[error("the salt is {0} bytes; BEP 44 allows 64")]
    SaltTooLarge(usize),
    /// The item's signature does not verify.
    #[error("the item's signature is invalid")]
    InvalidSignature,
    /// No node near the target answered with a write token.
    #[error("no DHT node accepted the item")]
    NoNodes,
    /// Every node refused the item; the first refusal (e.g. 302: a newer
    /// sequence number is stored).
    #[error("DHT nodes refused the item: error {code}: {message}")]
    Rejected { code: i64, message: String },
    /// The node was shut down.
    #[error("the DHT node has shut down")]
    Shutdown,
}

/// Counters and sizes of a running node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtStats {
    /// Our current node id (the IPv4 node's in a dual-stack DHT).
    pub node_id: [u8; 20],
    /// Nodes in the routing tables (both families).
    pub nodes: usize,
    /// Of those, nodes in the IPv6 routing table (BEP 32).
    pub nodes6: usize,
    /// Queries received (answered or not).
    pub queries_in: u64,
    /// Queries sent.
    pub queries_out: u64,
    /// Responses to our queries received.
    pub responses_in: u64,
    /// Error replies to our queries received.
    pub errors_in: u64,
    /// Our queries that timed out (no answer within
    /// [`DhtConfig::request_timeout`]).
    pub timeouts: u64,
    /// Lookup queries unanswered past the soft timeout (see [`rtt`]): each
    /// let the lookup ask another node in its place.
    pub soft_timeouts: u64,
    /// Answers to lookup queries that no longer held an α slot (past their
    /// soft timeout, or sent to an address that recently did not answer)
    /// and were still used by their lookup.
    pub late_answers: u64,
    /// Smoothed round-trip time of our answered queries, once measured.
    pub round_trip: Option<Duration>,
    /// Datagrams dropped: malformed, oversized, or unsolicited responses.
    pub dropped_datagrams: u64,
    /// Queries now waiting for a response.
    pub pending_queries: usize,
    /// Peers stored for others (all info-hashes).
    pub peers_stored: usize,
    /// BEP 44 items stored for others.
    pub items_stored: usize,
    /// Our external IP as voted by other nodes (BEP 42), once known (the
    /// IPv4 node's first).
    pub external_ip: Option<IpAddr>,
}

/// What [`Dht::get_mutable_report`] saw (BEP 44 `get` of a mutable item).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MutableLookup {
    /// The valid item with the highest `seq`, if any.
    pub item: Option<MutableItem>,
    /// Nodes that answered the `get` (our own store not counted).
    pub answered: usize,
    /// Answers (and our own store) carrying a valid item, any `seq`.
    pub valid: usize,
    /// Answers carrying an item that was refused: another key, a value over
    /// 1000 bytes, or a signature that does not verify for this key and salt.
    pub refused: usize,
}

/// A handle to a running DHT: one node per address family (BEP 32), the
/// IPv4 one first. Cloning is cheap; the nodes stop when [`Dht::shutdown`]
/// is called or every handle is dropped.
#[derive(Clone)]
pub struct Dht {
    nodes: Arc<[Arc<Inner>]>,
}

impl std::fmt::Debug for Dht {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<SocketAddr> = self.local_addrs();
        write!(f, "Dht({addrs:?})")
    }
}

async fn resolve(hosts: &[String], limit: Duration) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for h in hosts {
        if let Ok(Ok(addrs)) =
            tokio::time::timeout(limit, tokio::net::lookup_host(h.as_str())).await
        {
            out.extend(addrs);
        } else {
            tracing::debug!("DHT: cannot resolve bootstrap node {h}");
        }
    }
    out
}

fn check_value(v: &[u8]) -> Result<(), DhtError> {
    if v.len() > MAX_V_LEN {
        return Err(DhtError::ValueTooLarge(v.len()));
    }
    bencode::decode(v, krpc::LIMITS).map_err(|_| DhtError::InvalidValue)?;
    Ok(())
}

impl Dht {
    /// Binds the UDP sockets and starts the node tasks: a node on
    /// [`DhtConfig::bind`], and with [`DhtConfig::bind6`] (when `bind` is
    /// IPv4) a second node on IPv6, on the same port when it is free there
    /// (BEP 32). Loads each node's state file from
    /// [`DhtConfig::state_dir`] if there is one (`dht_nodes`, `dht_nodes6`;
    /// their nodes become bootstrap seeds). Errors: the bind error of
    /// `bind` (the IPv6 node's is logged, and the DHT runs IPv4 only).
    pub async fn start(cfg: DhtConfig) -> std::io::Result<Dht> {
        let socket = family::bind(cfg.bind)?;
        let port = socket.local_addr()?.port();
        let first = if cfg.bind.is_ipv4() {
            node::STATE_FILE
        } else {
            node::STATE_FILE6
        };
        let mut nodes = vec![family::start(cfg.clone(), socket, first, None)?];
        if let (true, Some(ip6)) = (cfg.bind.is_ipv4(), cfg.bind6) {
            let bound = family::bind(SocketAddr::new(ip6, port))
                .or_else(|_| family::bind(SocketAddr::new(ip6, 0)));
            match bound {
                Ok(s) => {
                    let id = nodes[0].shared.lock().table.own_id();
                    let six = family::start(cfg, s, node::STATE_FILE6, Some(id))?;
                    family::pair(&nodes[0], &six);
                    nodes.push(six);
                }
                Err(e) => tracing::info!("DHT: no IPv6 node on [{ip6}] ({e}): IPv4 only"),
            }
        }
        Ok(Dht {
            nodes: nodes.into(),
        })
    }

    fn primary(&self) -> &Arc<Inner> {
        &self.nodes[0]
    }

    /// The node of `addr`'s family, if we run one.
    fn node_for(&self, addr: &SocketAddr) -> Option<&Arc<Inner>> {
        self.nodes.iter().find(|n| n.is_v4() == addr.is_ipv4())
    }

    /// The bound UDP address (with the real port when 0 was asked) of the
    /// first node: the IPv4 one in a dual-stack DHT.
    pub fn local_addr(&self) -> SocketAddr {
        self.primary().shared.local_addr
    }

    /// The bound UDP address of every node, IPv4 first (BEP 32: one per
    /// address family).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.shared.local_addr).collect()
    }

    /// Tells the node of `ip`'s family our external IP, as the home router
    /// reported it (UPnP or NAT-PMP/PCP): like enough matching BEP 42
    /// votes, it gives a node id valid for that address (BEP 42) unless
    /// ours already is.
    pub fn set_external_ip(&self, ip: IpAddr) {
        if let Some(n) = self.node_for(&SocketAddr::new(ip, 0)) {
            n.shared.lock().adopt_external_ip(ip);
        }
    }

    /// Our current node id (the first node's).
    pub fn node_id(&self) -> [u8; 20] {
        self.primary().shared.lock().table.own_id()
    }

    /// Fills the routing tables: resolves the bootstrap routers (each
    /// address goes to the node of its family), then each node looks up
    /// its own id through them, its saved nodes and its table, then a
    /// random id; both families at once. A node whose table is still thin
    /// then runs again, with the nodes of its family the other node learned
    /// (BEP 32 `nodes6`/`nodes` answers to `want`). Returns the number of
    /// nodes in the tables afterwards (both families).
    pub async fn bootstrap(&self) -> usize {
        let cfg = &self.primary().shared.cfg;
        let routers = resolve(&cfg.bootstrap, cfg.request_timeout).await;
        for n in self.nodes.iter() {
            let mut st = n.shared.lock();
            for r in routers.iter().filter(|r| r.is_ipv4() == n.is_v4()) {
                if !st.seeds.contains(r) {
                    st.seeds.push(*r);
                }
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for n in self.nodes.iter() {
            let n = n.clone();
            set.spawn(async move { family::bootstrap(&n).await });
        }
        set.join_all().await;
        if self.nodes.len() > 1 {
            for n in self.nodes.iter() {
                let len = n.shared.lock().table.len();
                if len < K {
                    family::bootstrap(n).await;
                }
            }
        }
        self.stats().nodes
    }

    /// Adds a node we know is alive (e.g. from a peer's BEP 5 `PORT`
    /// message) by pinging it from the node of its family. Returns true
    /// when it answered.
    pub async fn add_node(&self, addr: SocketAddr) -> bool {
        match self.node_for(&addr) {
            Some(n) => n.query(addr, Query::Ping).await.is_ok(),
            None => false,
        }
    }

    /// Finds peers for `info_hash` (BEP 5 `get_peers` lookup, over every
    /// family's table at once, BEP 32). Batches of new peers (no repeats;
    /// IPv4 and IPv6, from 6- and 18-byte compact `values`) arrive on the
    /// channel as nodes answer, the ones stored on our own nodes first; the
    /// channel closes when the lookups end (at most
    /// [`DhtConfig::lookup_timeout`]). Dropping the receiver stops them.
    /// Must be called inside a tokio runtime (it spawns tasks).
    pub fn get_peers(&self, info_hash: InfoHash) -> mpsc::Receiver<Vec<SocketAddr>> {
        let (tx, rx) = mpsc::channel(64);
        let nodes = self.nodes.clone();
        tokio::spawn(async move {
            let ih = info_hash.0;
            let seen = Arc::new(std::sync::Mutex::new(HashSet::new()));
            let local: Vec<SocketAddr> = {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let mut out = Vec::new();
                for n in nodes.iter() {
                    let got = n.shared.lock().peers.get(
                        &ih,
                        storage::MAX_PEERS_PER_TORRENT,
                        Instant::now(),
                    );
                    out.extend(got.into_iter().filter(|p| seen.insert(*p)));
                }
                out
            };
            if !local.is_empty() && tx.send(local).await.is_err() {
                return;
            }
            let mut set = tokio::task::JoinSet::new();
            for n in nodes.iter() {
                set.spawn(family::get_peers(n.clone(), ih, tx.clone(), seen.clone()));
            }
            drop(tx);
            set.join_all().await;
        });
        rx
    }

    /// Announces that we have `info_hash` (BEP 5 `announce_peer`) to the K
    /// closest nodes of each family's table that gave us a token, with
    /// `port`, or with `implied_port = 1` when `None` (peers then use our
    /// DHT source port, which helps behind NAT). An announce over IPv6
    /// makes us an IPv6 peer for the nodes that store it. Returns how many
    /// nodes accepted (both families).
    pub async fn announce_peer(&self, info_hash: InfoHash, port: Option<u16>) -> usize {
        self.announce_peer_ports(info_hash, port, port).await
    }

    /// Like [`Dht::announce_peer`], with a port per address family: `v4`
    /// to the IPv4 table's nodes (BEP 5), `v6` to the IPv6 table's (BEP
    /// 32). Behind a router that maps an IPv4 port other than our listen
    /// port, IPv6 peers must still be given the listen port.
    pub async fn announce_peer_ports(
        &self,
        info_hash: InfoHash,
        v4: Option<u16>,
        v6: Option<u16>,
    ) -> usize {
        let mut set = tokio::task::JoinSet::new();
        for n in self.nodes.iter() {
            let port = if n.is_v4() { v4 } else { v6 };
            set.spawn(family::announce(n.clone(), info_hash.0, port));
        }
        set.join_all().await.into_iter().sum()
    }

    /// Gets a mutable item (BEP 44 `get`) for `public_key` and `salt`: the
    /// verified item with the highest `seq` among the closest nodes (and our
    /// own store). `None` when no node has a valid one.
    pub async fn get_mutable(&self, public_key: [u8; 32], salt: &[u8]) -> Option<MutableItem> {
        self.get_mutable_report(public_key, salt).await.item
    }

    /// Like [`Dht::get_mutable`], and also counts what was seen, so a caller
    /// can tell "no node has an item" from "items were found but none had a
    /// valid signature for this key and salt". Asks both families' nodes.
    pub async fn get_mutable_report(&self, public_key: [u8; 32], salt: &[u8]) -> MutableLookup {
        let target = mutable_target(&public_key, salt);
        let mut report = MutableLookup::default();
        if let Some(item) = self
            .nodes
            .iter()
            .filter_map(|n| family::local_mutable(n, &target))
            .max_by_key(|i| i.seq)
        {
            report.consider(item, &public_key);
        }
        let mut set = tokio::task::JoinSet::new();
        for n in self.nodes.iter() {
            set.spawn(family::get_mutable(n.clone(), public_key, salt.to_vec()));
        }
        for r in set.join_all().await {
            report.merge(r);
        }
        report
    }

    /// Stores a signed mutable item (BEP 44 `put`) on the K closest nodes
    /// of each family that gave a write token, and on our own nodes.
    /// Returns how many remote nodes accepted it. Errors:
    /// [`DhtError::InvalidSignature`], [`DhtError::InvalidValue`],
    /// [`DhtError::ValueTooLarge`], [`DhtError::SaltTooLarge`] before
    /// sending; [`DhtError::Rejected`] when every node refused;
    /// [`DhtError::NoNodes`] when none answered.
    pub async fn put_mutable(&self, item: MutableItem) -> Result<usize, DhtError> {
        check_value(&item.value)?;
        if item.salt.len() > MAX_SALT_LEN {
            return Err(DhtError::SaltTooLarge(item.salt.len()));
        }
        if !item.verify() {
            return Err(DhtError::InvalidSignature);
        }
        let args = PutArgs {
            token: Vec::new(),
            v: item.value.clone(),
            k: Some(item.public_key),
            sig: Some(item.signature),
            seq: Some(item.seq),
            salt: item.salt.clone(),
            cas: None,
        };
        self.put(item.target(), args).await
    }

    /// Gets an immutable item (BEP 44 `get`): the raw bencoded value whose
    /// SHA-1 is `target`, or `None`. Returns as soon as one node (of either
    /// family) has it.
    pub async fn get_immutable(&self, target: [u8; 20]) -> Option<Vec<u8>> {
        for n in self.nodes.iter() {
            if let Some(i) = n.shared.lock().items.get(&target, Instant::now())
                && i.mutable.is_none()
            {
                return Some(i.v.clone());
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for n in self.nodes.iter() {
            set.spawn(family::get_immutable(n.clone(), target));
        }
        while let Some(r) = set.join_next().await {
            if let Ok(Some(v)) = r {
                return Some(v);
            }
        }
        None
    }

    /// Stores an immutable item (BEP 44 `put`): `v` is one raw bencoded
    /// value of at most 1000 bytes. Returns its target (SHA-1 of `v`).
    /// Errors as [`Dht::put_mutable`].
    pub async fn put_immutable(&self, v: Vec<u8>) -> Result<[u8; 20], DhtError> {
        check_value(&v)?;
        let target = immutable_target(&v);
        let args = PutArgs {
            v,
            ..Default::default()
        };
        self.put(target, args).await.map(|_| target)
    }

    async fn put(&self, target: [u8; 20], args: PutArgs) -> Result<usize, DhtError> {
        if self.primary().cmd.is_closed() {
            return Err(DhtError::Shutdown);
        }
        let mut set = tokio::task::JoinSet::new();
        for n in self.nodes.iter() {
            set.spawn(family::put(n.clone(), target, args.clone()));
        }
        let mut ok = 0;
        let mut refusal = None;
        for (n, r) in set.join_all().await {
            ok += n;
            if refusal.is_none() {
                refusal = r;
            }
        }
        match (ok, refusal) {
            (0, Some(e)) => Err(e),
            (0, None) => Err(DhtError::NoNodes),
            (n, _) => Ok(n),
        }
    }

    /// Counters and sizes, summed over both families' nodes.
    pub fn stats(&self) -> DhtStats {
        let mut out = DhtStats {
            node_id: self.node_id(),
            nodes: 0,
            nodes6: 0,
            queries_in: 0,
            queries_out: 0,
            responses_in: 0,
            errors_in: 0,
            timeouts: 0,
            soft_timeouts: 0,
            late_answers: 0,
            round_trip: None,
            dropped_datagrams: 0,
            pending_queries: 0,
            peers_stored: 0,
            items_stored: 0,
            external_ip: None,
        };
        for n in self.nodes.iter() {
            let s = &n.shared;
            let c = &s.counters;
            let st = s.lock();
            out.nodes += st.table.len();
            if !n.is_v4() {
                out.nodes6 += st.table.len();
            }
            out.queries_in += c.queries_in.load(Ordering::Relaxed);
            out.queries_out += c.queries_out.load(Ordering::Relaxed);
            out.responses_in += c.responses_in.load(Ordering::Relaxed);
            out.errors_in += c.errors_in.load(Ordering::Relaxed);
            out.timeouts += c.timeouts.load(Ordering::Relaxed);
            out.soft_timeouts += c.soft_timeouts.load(Ordering::Relaxed);
            out.late_answers += c.late_answers.load(Ordering::Relaxed);
            out.round_trip = out.round_trip.or(st.rtt.smoothed());
            out.dropped_datagrams += c.dropped_datagrams.load(Ordering::Relaxed);
            out.pending_queries += c.pending.load(Ordering::Relaxed);
            out.peers_stored += st.peers.len();
            out.items_stored += st.items.len();
            out.external_ip = out.external_ip.or(st.external_ip);
        }
        out
    }

    /// Nodes in the routing tables (id and address), IPv4 table first.
    pub fn routing_nodes(&self) -> Vec<NodeInfo> {
        self.nodes
            .iter()
            .flat_map(|n| n.shared.lock().table.all_nodes())
            .collect()
    }

    /// Stops the node tasks, saving the routing tables (state files in
    /// [`DhtConfig::state_dir`]). Later calls on any handle find no nodes.
    pub async fn shutdown(&self) {
        for n in self.nodes.iter() {
            let (tx, rx) = oneshot::channel();
            if n.cmd.send(Cmd::Shutdown(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
    }
}

/// Shows a bencoded value for people: integers as numbers, printable UTF-8
/// strings quoted, other byte strings as bare lowercase hex (a BEP 46 item
/// `{ih: <20 bytes>}` shows as `{ih: <40 hex characters>}`), lists as
/// `[a, b]`, dictionaries as `{key: value, ...}`. Invalid bencode shows as
/// `<invalid bencode: HEX>`.
pub fn format_value(raw: &[u8]) -> String {
    fn printable(b: &[u8]) -> Option<&str> {
        std::str::from_utf8(b)
            .ok()
            .filter(|s| s.chars().all(|c| !c.is_control()))
    }
    fn fmt(v: &bencode::Value<'_>, out: &mut String) {
        match &v.kind {
            Kind::Int(i) => out.push_str(&i.to_string()),
            Kind::Bytes(b) => match printable(b) {
                Some(s) => out.push_str(&format!("{s:?}")),
                None => out.push_str(&hex::encode(b)),
            },
            Kind::List(l) => {
                out.push('[');
                for (i, x) in l.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    fmt(x, out);
                }
                out.push(']');
            }
            Kind::Dict(d) => {
                out.push('{');
                for (i, (k, x)) in d.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    match printable(k) {
                        Some(s) => out.push_str(s),
                        None => out.push_str(&hex::encode(k)),
                    }
                    out.push_str(": ");
                    fmt(x, out);
                }
                out.push('}');
            }
        }
    }
    match bencode::decode(raw, Limits::default()) {
        Ok(v) => {
            let mut s = String::new();
            fmt(&v, &mut s);
            s
        }
        Err(_) => format!("<invalid bencode: {}>", hex::encode(raw)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_values() {
        let mut v = b"d2:ih20:".to_vec();
        v.extend(0u8..20);
        v.push(b'e');
        assert_eq!(
            format_value(&v),
            "{ih: 000102030405060708090a0b0c0d0e0f10111213}"
        );
        assert_eq!(
            format_value(b"l5:helloi-3ed1:ai1eee"),
            "[\"hello\", -3, {a: 1}]"
        );
        assert_eq!(format_value(b"12:Hello World!"), "\"Hello World!\"");
        assert_eq!(format_value(b"x"), "<invalid bencode: 78>");
    }
}
