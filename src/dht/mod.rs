//! Our mainline DHT node: BEP 5 (KRPC, routing table, peers), BEP 42 (node id
//! tied to the external IP), BEP 43 (read-only nodes), BEP 44 (immutable and
//! mutable items) and room for BEP 32 (IPv6 `nodes6`).
//!
//! A [`Dht`] is a cheap, cloneable handle to a node running as a tokio task
//! that owns the UDP socket. Start one with [`Dht::start`], fill its routing
//! table with [`Dht::bootstrap`], then find peers ([`Dht::get_peers`], which
//! streams batches as they arrive), announce ([`Dht::announce_peer`]) and
//! get or put BEP 44 items. [`Dht::shutdown`] saves the routing table in
//! [`DhtConfig::state_dir`] so the next start bootstraps without routers.
//!
//! Modules: [`krpc`] (messages), [`routing`] (buckets), `lookup`
//! (iterative lookups), [`rtt`] (round trips, soft timeouts), [`storage`] (what we store for others), [`bep44`]
//! (items and signatures), [`id`] (distances, BEP 42), `node` (the task).

pub mod bep44;
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

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

pub use bep44::{MutableItem, immutable_target, mutable_target, signed_buffer};
pub use krpc::NodeInfo;
pub use node::RpcError;

use crate::bencode::{self, Kind, Limits};
use crate::hash::InfoHash;
use krpc::{PutArgs, Query, Response};
use lookup::Lookup;
use node::{Cmd, Shared, State};
use routing::K;
use storage::{MAX_SALT_LEN, MAX_V_LEN};

/// Configuration of a DHT node.
#[derive(Debug, Clone)]
pub struct DhtConfig {
    /// UDP address to bind (IPv4 or IPv6). Default `0.0.0.0:6881`.
    pub bind: SocketAddr,
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
    /// Our current node id.
    pub node_id: [u8; 20],
    /// Nodes in the routing table.
    pub nodes: usize,
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
    /// Our external IP as voted by other nodes (BEP 42), once known.
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

/// A handle to a running DHT node. Cloning is cheap; the node stops when
/// [`Dht::shutdown`] is called or every handle is dropped.
#[derive(Clone)]
pub struct Dht {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Dht {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dht({})", self.inner.shared.local_addr)
    }
}

/// What handles and lookups hold: the shared state and the way to the task.
pub(crate) struct Inner {
    shared: Arc<Shared>,
    cmd: mpsc::Sender<Cmd>,
}

impl Inner {
    /// Sends one query and waits for its response (bounded by the request
    /// timeout).
    async fn query(&self, addr: SocketAddr, query: Query) -> Result<Response, RpcError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Query {
                addr,
                query: Box::new(query),
                reply: Some(tx),
            })
            .await
            .map_err(|_| RpcError::Closed)?;
        let limit = self.shared.cfg.request_timeout + Duration::from_millis(500);
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RpcError::Closed),
            Err(_) => Err(RpcError::Timeout),
        }
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
    /// Binds the UDP socket and starts the node task. Loads the state file
    /// from [`DhtConfig::state_dir`] if there is one (its nodes become
    /// bootstrap seeds). Errors: the bind error.
    pub async fn start(cfg: DhtConfig) -> std::io::Result<Dht> {
        let socket = UdpSocket::bind(cfg.bind).await?;
        let local_addr = socket.local_addr()?;
        let (saved_id, saved_nodes) = match &cfg.state_dir {
            Some(d) => node::load_state(d),
            None => (None, Vec::new()),
        };
        let own = cfg.node_id.or(saved_id).unwrap_or_else(|| {
            let ip = local_addr.ip();
            if ip.is_unspecified() || id::is_exempt(&ip) {
                id::random_id()
            } else {
                id::bep42_id(&ip, id::random_id()[0])
            }
        });
        let seeds = saved_nodes.iter().map(|n| n.addr).collect();
        let shared = Arc::new(Shared {
            cfg,
            local_addr,
            state: std::sync::Mutex::new(State::new(own, seeds)),
            counters: Default::default(),
        });
        let (tx, rx) = mpsc::channel(1024);
        let weak = tx.downgrade();
        let refresh_shared = shared.clone();
        let refresh: node::Refresh = Box::new(move |targets| {
            let Some(cmd) = weak.upgrade() else { return };
            let inner = Arc::new(Inner {
                shared: refresh_shared.clone(),
                cmd,
            });
            tokio::spawn(async move {
                for t in targets {
                    let mut l = Lookup::new(&inner, t, Query::FindNode { target: t }, false);
                    while l.next().await.is_some() {}
                }
            });
        });
        tokio::spawn(node::run(socket, shared.clone(), rx, refresh));
        Ok(Dht {
            inner: Arc::new(Inner { shared, cmd: tx }),
        })
    }

    /// The bound UDP address (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.shared.local_addr
    }

    /// Tells the node our external IP, as the home router reported it
    /// (UPnP or NAT-PMP/PCP): like enough matching BEP 42 votes, it gives a
    /// node id valid for that address (BEP 42) unless ours already is.
    pub fn set_external_ip(&self, ip: IpAddr) {
        self.inner.shared.lock().adopt_external_ip(ip);
    }

    /// Our current node id.
    pub fn node_id(&self) -> [u8; 20] {
        self.inner.shared.lock().table.own_id()
    }

    /// Fills the routing table: resolves the bootstrap routers, then looks
    /// up our own id through them, the saved nodes and the table, then a
    /// random id. Returns the number of nodes in the table afterwards.
    pub async fn bootstrap(&self) -> usize {
        let cfg = &self.inner.shared.cfg;
        let routers = resolve(&cfg.bootstrap, cfg.request_timeout).await;
        {
            let mut st = self.inner.shared.lock();
            for r in routers {
                if !st.seeds.contains(&r) {
                    st.seeds.push(r);
                }
            }
        }
        let own = self.node_id();
        Lookup::new(&self.inner, own, Query::FindNode { target: own }, true)
            .run()
            .await;
        let t = id::random_id();
        Lookup::new(&self.inner, t, Query::FindNode { target: t }, false)
            .run()
            .await;
        self.inner.shared.lock().table.len()
    }

    /// Adds a node we know is alive (e.g. from a peer's BEP 5 `PORT`
    /// message) by pinging it. Returns true when it answered.
    pub async fn add_node(&self, addr: SocketAddr) -> bool {
        self.inner.query(addr, Query::Ping).await.is_ok()
    }

    /// Finds peers for `info_hash` (BEP 5 `get_peers` lookup). Batches of new
    /// peers (no repeats) arrive on the channel as nodes answer, the ones
    /// stored on our own node first; the channel closes when the lookup ends
    /// (at most [`DhtConfig::lookup_timeout`]). Dropping the receiver stops
    /// the lookup. Must be called inside a tokio runtime (it spawns a task).
    pub fn get_peers(&self, info_hash: InfoHash) -> mpsc::Receiver<Vec<SocketAddr>> {
        let (tx, rx) = mpsc::channel(64);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let ih = info_hash.0;
            let mut seen = HashSet::new();
            let local =
                inner
                    .shared
                    .lock()
                    .peers
                    .get(&ih, storage::MAX_PEERS_PER_TORRENT, Instant::now());
            let local: Vec<SocketAddr> = local.into_iter().filter(|p| seen.insert(*p)).collect();
            if !local.is_empty() && tx.send(local).await.is_err() {
                return;
            }
            let mut l = Lookup::new(&inner, ih, Query::GetPeers { info_hash: ih }, false);
            while let Some((_, r)) = l.next().await {
                let batch: Vec<SocketAddr> = r
                    .values
                    .into_iter()
                    .filter(|p| p.port() != 0 && seen.insert(*p))
                    .collect();
                if !batch.is_empty() && tx.send(batch).await.is_err() {
                    return;
                }
            }
        });
        rx
    }

    /// Announces that we have `info_hash` (BEP 5 `announce_peer`) to the K
    /// closest nodes that gave us a token, with `port`, or with
    /// `implied_port = 1` when `None` (peers then use our DHT source port,
    /// which helps behind NAT). Returns how many nodes accepted.
    pub async fn announce_peer(&self, info_hash: InfoHash, port: Option<u16>) -> usize {
        let ih = info_hash.0;
        let mut l = Lookup::new(&self.inner, ih, Query::GetPeers { info_hash: ih }, false);
        l.run().await;
        let port_arg = port.unwrap_or(self.local_addr().port());
        let mut set = tokio::task::JoinSet::new();
        for (n, token) in l.closest_answered(K) {
            let Some(token) = token else { continue };
            let inner = self.inner.clone();
            let q = Query::AnnouncePeer {
                info_hash: ih,
                port: port_arg,
                implied_port: port.is_none(),
                token,
            };
            set.spawn(async move { inner.query(n.addr, q).await.is_ok() });
        }
        set.join_all().await.into_iter().filter(|ok| *ok).count()
    }

    /// Gets a mutable item (BEP 44 `get`) for `public_key` and `salt`: the
    /// verified item with the highest `seq` among the closest nodes (and our
    /// own store). `None` when no node has a valid one.
    pub async fn get_mutable(&self, public_key: [u8; 32], salt: &[u8]) -> Option<MutableItem> {
        self.get_mutable_report(public_key, salt).await.item
    }

    /// Like [`Dht::get_mutable`], and also counts what was seen, so a caller
    /// can tell "no node has an item" from "items were found but none had a
    /// valid signature for this key and salt".
    pub async fn get_mutable_report(&self, public_key: [u8; 32], salt: &[u8]) -> MutableLookup {
        let target = mutable_target(&public_key, salt);
        let mut report = MutableLookup::default();
        let consider = |item: MutableItem, report: &mut MutableLookup| {
            if item.public_key != public_key || item.value.len() > MAX_V_LEN || !item.verify() {
                report.refused += 1;
                return;
            }
            report.valid += 1;
            if report.item.as_ref().is_none_or(|b| item.seq > b.seq) {
                report.item = Some(item);
            }
        };
        let local = self
            .inner
            .shared
            .lock()
            .items
            .get(&target, Instant::now())
            .cloned();
        if let Some(m) = local
            .as_ref()
            .and_then(|i| i.mutable.clone().map(|m| (i.v.clone(), m)))
        {
            let (v, m) = m;
            let item = MutableItem {
                public_key: m.k,
                salt: m.salt,
                seq: m.seq,
                value: v,
                signature: m.sig,
            };
            consider(item, &mut report);
        }
        let mut l = Lookup::new(&self.inner, target, Query::Get { target, seq: None }, false);
        while let Some((_, r)) = l.next().await {
            report.answered += 1;
            if let (Some(k), Some(seq), Some(v), Some(sig)) = (r.k, r.seq, r.v, r.sig) {
                let item = MutableItem {
                    public_key: k,
                    salt: salt.to_vec(),
                    seq,
                    value: v,
                    signature: sig,
                };
                consider(item, &mut report);
            }
        }
        report
    }

    /// Stores a signed mutable item (BEP 44 `put`) on the K closest nodes
    /// that gave a write token, and on our own node. Returns how many remote
    /// nodes accepted it. Errors: [`DhtError::InvalidSignature`],
    /// [`DhtError::InvalidValue`], [`DhtError::ValueTooLarge`],
    /// [`DhtError::SaltTooLarge`] before sending; [`DhtError::Rejected`]
    /// when every node refused; [`DhtError::NoNodes`] when none answered.
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
    /// SHA-1 is `target`, or `None`. Returns as soon as one node has it.
    pub async fn get_immutable(&self, target: [u8; 20]) -> Option<Vec<u8>> {
        if let Some(i) = self.inner.shared.lock().items.get(&target, Instant::now())
            && i.mutable.is_none()
        {
            return Some(i.v.clone());
        }
        let mut l = Lookup::new(&self.inner, target, Query::Get { target, seq: None }, false);
        while let Some((_, r)) = l.next().await {
            if let Some(v) = r.v
                && immutable_target(&v) == target
            {
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
        if self.inner.cmd.is_closed() {
            return Err(DhtError::Shutdown);
        }
        // Our own store: a refusal here (e.g. a newer seq) is not fatal.
        let _ = self.inner.shared.lock().items.put(&args, Instant::now());
        let mut l = Lookup::new(&self.inner, target, Query::Get { target, seq: None }, false);
        l.run().await;
        let mut set = tokio::task::JoinSet::new();
        for (n, token) in l.closest_answered(K) {
            let Some(token) = token else { continue };
            let inner = self.inner.clone();
            let q = Query::Put(PutArgs {
                token,
                ..args.clone()
            });
            set.spawn(async move { inner.query(n.addr, q).await });
        }
        let mut ok = 0;
        let mut refusal = None;
        for r in set.join_all().await {
            match r {
                Ok(_) => ok += 1,
                Err(RpcError::Remote { code, message }) => {
                    refusal.get_or_insert(DhtError::Rejected { code, message });
                }
                Err(_) => {}
            }
        }
        match (ok, refusal) {
            (0, Some(e)) => Err(e),
            (0, None) => Err(DhtError::NoNodes),
            (n, _) => Ok(n),
        }
    }

    /// Counters and sizes.
    pub fn stats(&self) -> DhtStats {
        let s = &self.inner.shared;
        let c = &s.counters;
        let st = s.lock();
        DhtStats {
            node_id: st.table.own_id(),
            nodes: st.table.len(),
            queries_in: c.queries_in.load(Ordering::Relaxed),
            queries_out: c.queries_out.load(Ordering::Relaxed),
            responses_in: c.responses_in.load(Ordering::Relaxed),
            errors_in: c.errors_in.load(Ordering::Relaxed),
            timeouts: c.timeouts.load(Ordering::Relaxed),
            soft_timeouts: c.soft_timeouts.load(Ordering::Relaxed),
            late_answers: c.late_answers.load(Ordering::Relaxed),
            round_trip: st.rtt.smoothed(),
            dropped_datagrams: c.dropped_datagrams.load(Ordering::Relaxed),
            pending_queries: c.pending.load(Ordering::Relaxed),
            peers_stored: st.peers.len(),
            items_stored: st.items.len(),
            external_ip: st.external_ip,
        }
    }

    /// Nodes in the routing table (id and address).
    pub fn routing_nodes(&self) -> Vec<NodeInfo> {
        self.inner.shared.lock().table.all_nodes()
    }

    /// Stops the node task, saving the routing table (state file in
    /// [`DhtConfig::state_dir`]). Later calls on any handle find no nodes.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.cmd.send(Cmd::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
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
