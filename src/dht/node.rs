//! The node task: owns the UDP socket, answers queries (server side of BEP 5,
//! 43 and 44), matches responses to our pending queries, times them out, and
//! keeps the routing table, storage and token secrets fresh.
//!
//! Other tasks (lookups, the public API) talk to it through [`Cmd`]s and read
//! the shared [`State`] under a short-lived lock; nothing awaits while holding
//! it, and no task holds two nodes' locks at once.
//!
//! BEP 32: a dual-stack DHT is two such nodes, one per address family, each
//! with its own socket and routing table (as libtorrent runs one DHT node
//! per listen socket). Each knows the other as its [`Sibling`]: it answers
//! `want = ["n4", "n6"]` with nodes from both tables, asks for the other
//! family's nodes while the sibling's table is thin, and hands the nodes of
//! the other family it learns to the sibling, which pings them.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::DhtConfig;
use super::id::{bep42_id, bep42_valid, is_exempt, random_id};
use super::krpc::{self, Body, DecodeError, Id, Message, NodeInfo, Query, Response, Want};
use super::routing::{Insert, K, QUESTIONABLE_AFTER, RoutingTable, Unresponsive};
use super::rtt::RoundTrip;
use super::storage::{ItemStore, MAX_VALUES, PeerStore, Tokens};

/// Pending outgoing queries, at most (memory bound).
pub const MAX_PENDING: usize = 4096;
/// Name of the state file in [`DhtConfig::state_dir`] (the IPv4 node's, or
/// a single node's).
pub const STATE_FILE: &str = "dht_nodes";
/// Name of the IPv6 node's state file of a dual-stack DHT (BEP 32).
pub const STATE_FILE6: &str = "dht_nodes6";
/// Nodes of the other family handed to the sibling per answer, at most.
const MAX_HANDOVER: usize = K;
/// Distinct voters needed before we believe an external IP (BEP 42).
const IP_VOTES_NEEDED: usize = 3;
/// Votes remembered.
const MAX_VOTES: usize = 50;
/// Period of housekeeping (expiry, token rotation, bucket refresh).
const HOUSEKEEPING: Duration = Duration::from_secs(60);
/// Period of saving the routing table.
const SAVE_EVERY: Duration = Duration::from_secs(5 * 60);

/// Why a query to another node got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RpcError {
    #[error("no response within the request timeout")]
    Timeout,
    #[error("remote error {code}: {message}")]
    Remote { code: i64, message: String },
    #[error("too many pending queries")]
    Busy,
    #[error("the DHT node has shut down")]
    Closed,
}

/// Starts lookups of the given targets in the background (bucket refresh,
/// BEP 5): given to [`run`] by the handle's side, which runs lookups, so
/// the node task needs no lookup code of its own.
pub type Refresh = Box<dyn Fn(Vec<Id>) + Send + Sync>;

/// Requests to the node task.
pub enum Cmd {
    /// Send `query` to `addr`; answer on `reply` (if any) with the response,
    /// an error reply, or a timeout.
    Query {
        addr: SocketAddr,
        query: Box<Query>,
        reply: Option<oneshot::Sender<Result<Response, RpcError>>>,
    },
    /// Save state and stop; acknowledge on the sender.
    Shutdown(oneshot::Sender<()>),
}

/// Counters read by [`super::Dht::stats`].
#[derive(Debug, Default)]
pub struct Counters {
    pub queries_in: AtomicU64,
    pub queries_out: AtomicU64,
    pub responses_in: AtomicU64,
    pub errors_in: AtomicU64,
    pub timeouts: AtomicU64,
    pub soft_timeouts: AtomicU64,
    pub late_answers: AtomicU64,
    pub dropped_datagrams: AtomicU64,
    pub pending: AtomicUsize,
}

/// State shared between the node task and lookups.
#[derive(Debug)]
pub struct State {
    pub table: RoutingTable,
    pub peers: PeerStore,
    pub items: ItemStore,
    pub tokens: Tokens,
    /// BEP 42 votes: (voter IP, the IP it says we have), newest last.
    votes: VecDeque<(IpAddr, IpAddr)>,
    pub external_ip: Option<IpAddr>,
    /// Nodes to contact when the table is thin: resolved bootstrap routers
    /// and nodes saved by a previous run.
    pub seeds: Vec<SocketAddr>,
    /// Round trips of our answered queries (the soft timeout of lookups).
    pub rtt: RoundTrip,
    /// Addresses that recently left a query of ours unanswered.
    pub unresponsive: Unresponsive,
}

/// The other family's node of a dual-stack DHT (BEP 32).
#[derive(Debug)]
pub struct Sibling {
    /// Its shared state (its routing table answers `want` for its family).
    pub shared: Weak<Shared>,
    /// Its task, to ping the nodes of its family we learn.
    pub cmd: mpsc::WeakSender<Cmd>,
}

/// Everything the node task and the handles share.
#[derive(Debug)]
pub struct Shared {
    pub cfg: DhtConfig,
    pub local_addr: SocketAddr,
    /// File name of the state file in [`DhtConfig::state_dir`].
    pub state_file: &'static str,
    pub state: Mutex<State>,
    pub counters: Counters,
    /// The other family's node, in a dual-stack DHT; set once after both
    /// started.
    pub sibling: OnceLock<Sibling>,
}

impl Shared {
    /// The IPv4 and IPv6 nodes closest to `target` wanted by `want` for a
    /// query that came in on our family (BEP 32): up to K of each, from our
    /// table and the sibling's. Takes one lock at a time.
    pub fn closest_wanted(&self, target: &Id, want: Want) -> Vec<NodeInfo> {
        let (n4, n6) = want.families(self.local_addr.is_ipv4());
        let ours = if self.local_addr.is_ipv4() { n4 } else { n6 };
        let theirs = if self.local_addr.is_ipv4() { n6 } else { n4 };
        let mut out = Vec::new();
        if ours {
            out = self.lock().table.closest(target, K);
        }
        if theirs && let Some(s) = self.sibling_shared() {
            out.extend(s.lock().table.closest(target, K));
        }
        out
    }

    /// The sibling's shared state, while it runs.
    pub fn sibling_shared(&self) -> Option<Arc<Shared>> {
        self.sibling.get()?.shared.upgrade()
    }

    /// True when there is a sibling whose routing table holds fewer than K
    /// nodes: our queries then ask for both families (BEP 32 `want`).
    fn sibling_thin(&self) -> bool {
        self.sibling_shared()
            .is_some_and(|s| s.lock().table.len() < K)
    }

    /// Locks the state (a poisoned lock is still usable: the state has no
    /// invariant a panic elsewhere could break halfway).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads the state file: our previous id and previously good nodes.
/// Format, one item a line: `id <40 hex>` and `node <40 hex> <ip:port>`.
pub fn load_state(dir: &Path, file: &str) -> (Option<Id>, Vec<NodeInfo>) {
    let Ok(text) = std::fs::read_to_string(dir.join(file)) else {
        return (None, Vec::new());
    };
    let mut id = None;
    let mut nodes = Vec::new();
    let parse_id = |s: &str| -> Option<Id> {
        let mut out = [0u8; 20];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(out)
    };
    for line in text.lines().take(10_000) {
        let mut w = line.split_whitespace();
        match (w.next(), w.next(), w.next()) {
            (Some("id"), Some(h), None) => id = parse_id(h),
            (Some("node"), Some(h), Some(a)) => {
                if let (Some(nid), Ok(addr)) = (parse_id(h), a.parse::<SocketAddr>()) {
                    nodes.push(NodeInfo { id: nid, addr });
                }
            }
            _ => {}
        }
    }
    (id, nodes)
}

/// Writes the state file atomically (temporary file, then rename).
pub fn save_state(dir: &Path, file: &str, id: &Id, nodes: &[NodeInfo]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut text = format!("# btfs DHT routing table\nid {}\n", hex::encode(id));
    for n in nodes {
        text.push_str(&format!("node {} {}\n", hex::encode(n.id), n.addr));
    }
    let tmp: PathBuf = dir.join(format!("{file}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(tmp, dir.join(file))
}

impl State {
    /// A fresh state around `own` with `seeds` to bootstrap from.
    pub fn new(own: Id, seeds: Vec<SocketAddr>) -> State {
        State {
            table: RoutingTable::new(own),
            peers: PeerStore::default(),
            items: ItemStore::default(),
            tokens: Tokens::default(),
            votes: VecDeque::new(),
            external_ip: None,
            seeds,
            rtt: RoundTrip::default(),
            unresponsive: Unresponsive::default(),
        }
    }

    /// Records `voter`'s claim that our address is `ip` (BEP 42). When enough
    /// distinct voters agree on a public address our id is not valid for, we
    /// take a new id and rebuild the table around it.
    fn vote(&mut self, voter: IpAddr, ip: IpAddr) {
        self.votes.retain(|(v, _)| *v != voter);
        if self.votes.len() >= MAX_VOTES {
            self.votes.pop_front();
        }
        self.votes.push_back((voter, ip));
        let mut counts: HashMap<IpAddr, usize> = HashMap::new();
        for (_, v) in &self.votes {
            *counts.entry(*v).or_default() += 1;
        }
        let Some((best, n)) = counts.into_iter().max_by_key(|(_, n)| *n) else {
            return;
        };
        if n < IP_VOTES_NEEDED {
            return;
        }
        self.adopt_external_ip(best);
    }

    /// Takes `best` as our external IP (voted by nodes, or learned from
    /// the router by port mapping): when our id is not valid for it (BEP
    /// 42), takes a new id and rebuilds the table around it.
    pub fn adopt_external_ip(&mut self, best: IpAddr) {
        if self.external_ip == Some(best) {
            return;
        }
        self.external_ip = Some(best);
        let own = self.table.own_id();
        if !is_exempt(&best) && !bep42_valid(&own, &best) {
            let mut r = [0u8; 1];
            getrandom::fill(&mut r).expect("OS random source");
            let new_id = bep42_id(&best, r[0]);
            tracing::info!(ip = %best, id = %hex::encode(new_id), "DHT: external IP changed; new BEP 42 node id");
            let old = std::mem::replace(&mut self.table, RoutingTable::new(new_id));
            let now = Instant::now();
            for n in old.good_nodes() {
                self.table.heard_from(n, true, now);
            }
        }
    }
}

/// The node task. Runs until [`Cmd::Shutdown`] or until every sender is
/// dropped; saves the routing table on the way out.
pub async fn run(
    socket: UdpSocket,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Cmd>,
    refresh: Refresh,
) {
    let mut node = Node {
        socket,
        shared,
        pending: HashMap::new(),
        next_tid: u32::from_be_bytes(random_id()[..4].try_into().expect("4 bytes")),
        want_both: WantBoth::default(),
    };
    let mut buf = vec![0u8; 65536];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_housekeeping = Instant::now();
    let mut last_save = Instant::now();
    let ack = loop {
        tokio::select! {
            r = node.socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => node.datagram(&buf[..n], from).await,
                Err(e) => {
                    tracing::debug!("DHT: recv error: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            cmd = rx.recv() => match cmd {
                Some(Cmd::Query { addr, query, reply }) => node.send_query(addr, *query, reply).await,
                Some(Cmd::Shutdown(ack)) => break Some(ack),
                None => break None,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                node.expire_pending(now);
                if now.duration_since(last_housekeeping) >= HOUSEKEEPING {
                    last_housekeeping = now;
                    node.housekeeping(now, &refresh).await;
                }
                if now.duration_since(last_save) >= SAVE_EVERY {
                    last_save = now;
                    node.save();
                }
            }
        }
    };
    node.save();
    for (_, p) in node.pending.drain() {
        if let Some(r) = p.reply {
            let _ = r.send(Err(RpcError::Closed));
        }
    }
    node.shared.counters.pending.store(0, Ordering::Relaxed);
    drop(node);
    if let Some(ack) = ack {
        let _ = ack.send(());
    }
}

struct Pending {
    addr: SocketAddr,
    sent: Instant,
    deadline: Instant,
    reply: Option<oneshot::Sender<Result<Response, RpcError>>>,
}

struct Node {
    socket: UdpSocket,
    shared: Arc<Shared>,
    pending: HashMap<[u8; 4], Pending>,
    next_tid: u32,
    want_both: WantBoth,
}

/// How often a node asks for both families' nodes (BEP 32 `want`) while
/// its sibling's table is thin: freely for the first [`WANT_BOTH_FREE`]
/// queries (bootstrap), then once per [`WANT_BOTH_EVERY`], so a host
/// without working IPv6 (or IPv4) does not ask for, and ping, the other
/// family's nodes on every query forever (BEP 32: "occasionally").
#[derive(Debug, Default)]
struct WantBoth {
    sent: u32,
    last: Option<Instant>,
}

/// Queries that may ask for both families at once (see [`WantBoth`]).
const WANT_BOTH_FREE: u32 = 64;
/// Then one such query per this period (see [`WantBoth`]).
const WANT_BOTH_EVERY: Duration = Duration::from_secs(10);

impl WantBoth {
    /// Whether the next query may ask for both families; counts it if so.
    fn take(&mut self, now: Instant) -> bool {
        let ok = self.sent < WANT_BOTH_FREE
            || self
                .last
                .is_none_or(|t| now.duration_since(t) >= WANT_BOTH_EVERY);
        if ok {
            self.sent = self.sent.saturating_add(1);
            self.last = Some(now);
        }
        ok
    }
}

impl Node {
    fn save(&self) {
        let Some(dir) = &self.shared.cfg.state_dir else {
            return;
        };
        let (id, nodes) = {
            let st = self.shared.lock();
            let mut nodes = st.table.good_nodes();
            if nodes.is_empty() {
                nodes = st.table.all_nodes();
            }
            (st.table.own_id(), nodes)
        };
        if let Err(e) = save_state(dir, self.shared.state_file, &id, &nodes) {
            tracing::warn!("DHT: cannot save routing table in {}: {e}", dir.display());
        }
    }

    async fn send(&self, msg: &Message, to: SocketAddr) {
        let bytes = msg.encode();
        if let Err(e) = self.socket.send_to(&bytes, to).await {
            tracing::debug!("DHT: send to {to} failed: {e}");
        }
    }

    async fn send_query(
        &mut self,
        addr: SocketAddr,
        query: Query,
        reply: Option<oneshot::Sender<Result<Response, RpcError>>>,
    ) {
        if self.pending.len() >= MAX_PENDING {
            if let Some(r) = reply {
                let _ = r.send(Err(RpcError::Busy));
            }
            return;
        }
        let tid = loop {
            self.next_tid = self.next_tid.wrapping_add(1);
            let t = self.next_tid.to_be_bytes();
            if !self.pending.contains_key(&t) {
                break t;
            }
        };
        // BEP 32: while the other family's table is thin, ask for both
        // (rate-limited after the first queries, see `WantBoth`).
        let want = match query {
            Query::FindNode { .. } | Query::GetPeers { .. } | Query::Get { .. }
                if self.shared.sibling_thin() && self.want_both.take(Instant::now()) =>
            {
                Want::BOTH
            }
            _ => Want::default(),
        };
        let own = self.shared.lock().table.own_id();
        let msg = Message {
            tid: tid.to_vec(),
            body: Body::Query {
                id: own,
                query,
                want,
            },
            ip: None,
            read_only: self.shared.cfg.read_only,
        };
        self.send(&msg, addr).await;
        self.shared
            .counters
            .queries_out
            .fetch_add(1, Ordering::Relaxed);
        self.pending.insert(
            tid,
            Pending {
                addr,
                sent: Instant::now(),
                deadline: Instant::now() + self.shared.cfg.request_timeout,
                reply,
            },
        );
        self.shared
            .counters
            .pending
            .store(self.pending.len(), Ordering::Relaxed);
    }

    fn expire_pending(&mut self, now: Instant) {
        let expired: Vec<[u8; 4]> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        if expired.is_empty() {
            return;
        }
        let mut st = self.shared.lock();
        for t in expired {
            if let Some(p) = self.pending.remove(&t) {
                st.table.failed(&p.addr);
                st.unresponsive.record(p.addr, now);
                self.shared
                    .counters
                    .timeouts
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(r) = p.reply {
                    let _ = r.send(Err(RpcError::Timeout));
                }
            }
        }
        self.shared
            .counters
            .pending
            .store(self.pending.len(), Ordering::Relaxed);
    }

    async fn housekeeping(&mut self, now: Instant, refresh: &Refresh) {
        let (targets, questionable) = {
            let mut st = self.shared.lock();
            st.tokens.maybe_rotate(now);
            st.peers.expire(now);
            st.items.expire(now);
            st.unresponsive.expire(now);
            let targets = if st.table.is_empty() {
                Vec::new()
            } else {
                st.table.stale_targets(QUESTIONABLE_AFTER, now)
            };
            (targets, st.table.questionable(now))
        };
        // Ping a few questionable nodes so they become good or get replaced.
        for addr in questionable.into_iter().take(K) {
            self.send_query(addr, Query::Ping, None).await;
        }
        if !targets.is_empty() {
            refresh(targets);
        }
    }

    async fn datagram(&mut self, buf: &[u8], from: SocketAddr) {
        let shared = self.shared.clone();
        let c = &shared.counters;
        if buf.len() > krpc::MAX_DATAGRAM {
            c.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let msg = match krpc::decode(buf) {
            Ok(m) => m,
            Err(DecodeError::Malformed(why)) => {
                tracing::trace!("DHT: dropped datagram from {from}: {why}");
                c.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(DecodeError::Reply { tid, code, message }) => {
                c.queries_in.fetch_add(1, Ordering::Relaxed);
                if !self.shared.cfg.read_only {
                    let reply = Message {
                        tid,
                        body: Body::Error {
                            code,
                            message: message.into(),
                        },
                        ip: Some(from),
                        read_only: false,
                    };
                    self.send(&reply, from).await;
                }
                return;
            }
        };
        match msg.body {
            Body::Query { id, query, want } => {
                c.queries_in.fetch_add(1, Ordering::Relaxed);
                // BEP 43: a read-only node does not answer queries.
                if self.shared.cfg.read_only {
                    return;
                }
                let (body, ping) = self.answer(from, id, query, want, msg.read_only);
                let reply = Message {
                    tid: msg.tid,
                    body,
                    ip: Some(from),
                    read_only: false,
                };
                self.send(&reply, from).await;
                for addr in ping {
                    self.send_query(addr, Query::Ping, None).await;
                }
            }
            Body::Response(r) => {
                let Some(p) = self.take_pending(&msg.tid, from) else {
                    c.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                c.responses_in.fetch_add(1, Ordering::Relaxed);
                let ping = {
                    let mut st = self.shared.lock();
                    st.rtt.sample(p.sent.elapsed());
                    st.unresponsive.answered(&from);
                    if let Some(ip) = msg.ip {
                        st.vote(from.ip(), ip.ip());
                    }
                    let mut ping = Vec::new();
                    if self.id_acceptable(&r.id, &from) && !msg.read_only {
                        let info = NodeInfo {
                            id: r.id,
                            addr: from,
                        };
                        if let Insert::Full { ping: p } =
                            st.table.heard_from(info, true, Instant::now())
                        {
                            ping = p;
                        }
                    }
                    ping
                };
                self.hand_over(&r.nodes);
                if let Some(reply) = p.reply {
                    let _ = reply.send(Ok(r));
                }
                for addr in ping {
                    self.send_query(addr, Query::Ping, None).await;
                }
            }
            Body::Error { code, message } => {
                let Some(p) = self.take_pending(&msg.tid, from) else {
                    c.dropped_datagrams.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                c.errors_in.fetch_add(1, Ordering::Relaxed);
                {
                    let mut st = self.shared.lock();
                    st.rtt.sample(p.sent.elapsed());
                    st.unresponsive.answered(&from);
                }
                if let Some(reply) = p.reply {
                    let _ = reply.send(Err(RpcError::Remote { code, message }));
                }
            }
        }
    }

    /// Removes and returns the pending query with this tid, if it was sent to
    /// `from` (a reply from elsewhere is ignored).
    fn take_pending(&mut self, tid: &[u8], from: SocketAddr) -> Option<Pending> {
        let t: [u8; 4] = tid.try_into().ok()?;
        if self.pending.get(&t)?.addr != from {
            return None;
        }
        let p = self.pending.remove(&t);
        self.shared
            .counters
            .pending
            .store(self.pending.len(), Ordering::Relaxed);
        p
    }

    /// BEP 32: nodes of the other family in an answer (`nodes6` to our IPv4
    /// node, `nodes` to our IPv6 node) go to the sibling, which pings them
    /// into its table, while its table is thin. Bounded per answer; a full
    /// sibling queue drops them.
    fn hand_over(&self, nodes: &[NodeInfo]) {
        let v4 = self.shared.local_addr.is_ipv4();
        let mut other = nodes
            .iter()
            .filter(|n| n.addr.is_ipv4() != v4 && n.addr.port() != 0)
            .peekable();
        if other.peek().is_none() || !self.shared.sibling_thin() {
            return;
        }
        let Some(cmd) = self.shared.sibling.get().and_then(|s| s.cmd.upgrade()) else {
            return;
        };
        for n in other.take(MAX_HANDOVER) {
            let _ = cmd.try_send(Cmd::Query {
                addr: n.addr,
                query: Box::new(Query::Ping),
                reply: None,
            });
        }
    }

    /// BEP 42: ids of nodes at public addresses must match their IP.
    fn id_acceptable(&self, id: &Id, from: &SocketAddr) -> bool {
        !self.shared.cfg.enforce_node_id || bep42_valid(id, &from.ip())
    }

    /// Serves one query; returns the reply body and nodes to ping. Nodes in
    /// `find_node`, `get_peers` and `get` answers are those `want` asks for
    /// (BEP 32; absent: our own family), up to K of each family.
    fn answer(
        &self,
        from: SocketAddr,
        id: Id,
        query: Query,
        want: Want,
        read_only: bool,
    ) -> (Body, Vec<SocketAddr>) {
        let now = Instant::now();
        // Before our own lock: the sibling's table may be read here.
        let closest = match &query {
            Query::FindNode { target } | Query::Get { target, .. } => {
                self.shared.closest_wanted(target, want)
            }
            Query::GetPeers { info_hash } => self.shared.closest_wanted(info_hash, want),
            _ => Vec::new(),
        };
        let mut st = self.shared.lock();
        let own = st.table.own_id();
        let mut ping = Vec::new();
        // BEP 43: read-only nodes are answered but not added.
        if !read_only && self.id_acceptable(&id, &from) {
            if let Insert::Full { ping: p } =
                st.table.heard_from(NodeInfo { id, addr: from }, false, now)
            {
                ping = p;
            }
        }
        let mut r = Response {
            id: own,
            ..Default::default()
        };
        let err = |code: i64, message: &str| Body::Error {
            code,
            message: message.into(),
        };
        let body = match query {
            Query::Ping => Body::Response(r),
            Query::FindNode { .. } => {
                r.nodes = closest;
                Body::Response(r)
            }
            Query::GetPeers { info_hash } => {
                r.token = Some(st.tokens.issue(&from.ip()));
                // Peers announced over this family's socket: compact 6-byte
                // entries from the IPv4 node, 18-byte ones (BEP 7's IPv6
                // form) from the IPv6 node.
                // BEP 32: at most 1024-byte datagrams, so fewer of the
                // longer IPv6 entries; never the other family's.
                let v4 = self.shared.local_addr.is_ipv4();
                let max = if v4 { MAX_VALUES } else { MAX_VALUES / 2 };
                r.values = st.peers.get(&info_hash, max, now);
                r.values.retain(|p| p.is_ipv4() == v4);
                r.nodes = closest;
                Body::Response(r)
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                if !st.tokens.check(&token, &from.ip()) {
                    err(203, "invalid token")
                } else {
                    let port = if implied_port { from.port() } else { port };
                    st.peers
                        .announce(info_hash, SocketAddr::new(from.ip(), port), now);
                    Body::Response(r)
                }
            }
            Query::Get { target, seq } => {
                r.token = Some(st.tokens.issue(&from.ip()));
                r.nodes = closest;
                if let Some(item) = st.items.get(&target, now) {
                    match &item.mutable {
                        None => r.v = Some(item.v.clone()),
                        Some(m) => {
                            r.k = Some(m.k);
                            r.seq = Some(m.seq);
                            if seq.is_none_or(|s| m.seq > s) {
                                r.v = Some(item.v.clone());
                                r.sig = Some(m.sig);
                            }
                        }
                    }
                }
                Body::Response(r)
            }
            Query::Put(p) => {
                if !st.tokens.check(&p.token, &from.ip()) {
                    err(203, "invalid token")
                } else {
                    match st.items.put(&p, now) {
                        Ok(_) => Body::Response(r),
                        Err((code, message)) => err(code, message),
                    }
                }
            }
        };
        (body, ping)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_external_ip_from_the_router_gives_a_bep42_id() {
        let mut st = State::new([0; 20], Vec::new());
        let public: IpAddr = "203.0.113.11".parse().unwrap();
        assert!(!bep42_valid(&st.table.own_id(), &public));
        st.adopt_external_ip(public);
        assert_eq!(st.external_ip, Some(public));
        let id = st.table.own_id();
        assert!(bep42_valid(&id, &public));
        st.adopt_external_ip(public);
        assert_eq!(st.table.own_id(), id, "the same address keeps the id");
    }

    #[test]
    fn bep42_votes_change_our_id() {
        let mut st = State::new([0; 20], Vec::new());
        let public: IpAddr = "124.31.75.21".parse().unwrap();
        st.table.heard_from(
            NodeInfo {
                id: [9; 20],
                addr: "10.0.0.9:1".parse().unwrap(),
            },
            true,
            Instant::now(),
        );
        st.vote("10.0.0.1".parse().unwrap(), public);
        st.vote("10.0.0.1".parse().unwrap(), public); // same voter twice
        assert_eq!(st.external_ip, None);
        st.vote("10.0.0.2".parse().unwrap(), public);
        st.vote("10.0.0.3".parse().unwrap(), public);
        assert_eq!(st.external_ip, Some(public));
        let id = st.table.own_id();
        assert!(bep42_valid(&id, &public));
        assert_eq!(st.table.len(), 1, "good nodes kept across the id change");
        // A private address voted in does not change the id.
        for v in ["10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7"] {
            st.vote(v.parse().unwrap(), "192.168.1.2".parse().unwrap());
        }
        assert_eq!(st.table.own_id(), id);
    }

    #[test]
    fn asking_for_both_families_is_rate_limited_after_bootstrap() {
        let mut w = WantBoth::default();
        let t0 = Instant::now();
        for _ in 0..WANT_BOTH_FREE {
            assert!(w.take(t0));
        }
        assert!(!w.take(t0 + Duration::from_secs(1)));
        assert!(w.take(t0 + WANT_BOTH_EVERY));
        assert!(!w.take(t0 + WANT_BOTH_EVERY + Duration::from_secs(9)));
    }

    #[test]
    fn state_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = vec![
            NodeInfo {
                id: [1; 20],
                addr: "127.0.0.1:5".parse().unwrap(),
            },
            NodeInfo {
                id: [2; 20],
                addr: "[::1]:6".parse().unwrap(),
            },
        ];
        save_state(dir.path(), STATE_FILE, &[7; 20], &nodes).unwrap();
        assert_eq!(load_state(dir.path(), STATE_FILE), (Some([7; 20]), nodes));
        assert_eq!(load_state(dir.path(), STATE_FILE6), (None, vec![]));
        std::fs::write(dir.path().join(STATE_FILE), "garbage\nnode zz 1.2.3.4:5\n").unwrap();
        assert_eq!(load_state(dir.path(), STATE_FILE), (None, vec![]));
    }
}
