//! One address family's DHT node (BEP 32): its UDP socket, node task and
//! routing table, and the operations of [`super::Dht`] run over that one
//! table. [`super::Dht`] starts one per family and merges what they find.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::bep44::MutableItem;
use super::handle::Inner;
use super::krpc::{Id, PutArgs, Query};
use super::lookup::Lookup;
use super::node::{self, RpcError, Shared, Sibling, State};
use super::routing::K;
use super::{DhtConfig, DhtError, MutableLookup, id, storage};

/// Binds a UDP socket: an IPv6 one with `IPV6_V6ONLY` (its IPv4 twin is
/// the other node's), an IPv4 one plainly. Errors: the bind error.
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    if addr.is_ipv4() {
        let s = std::net::UdpSocket::bind(addr)?;
        s.set_nonblocking(true)?;
        return UdpSocket::from_std(s);
    }
    let s = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_only_v6(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// Starts one node task on `socket`, loading `state_file` from
/// [`DhtConfig::state_dir`] (its nodes become bootstrap seeds). The node
/// id: [`DhtConfig::node_id`], else the saved one, else `same_as` (BEP 32:
/// a dual-stack node should use one id in both tables), else a random one
/// (BEP 42 when bound to a public address).
pub(crate) fn start(
    cfg: DhtConfig,
    socket: UdpSocket,
    state_file: &'static str,
    same_as: Option<Id>,
) -> std::io::Result<Arc<Inner>> {
    let local_addr = socket.local_addr()?;
    let (saved_id, saved_nodes) = match &cfg.state_dir {
        Some(d) => node::load_state(d, state_file),
        None => (None, Vec::new()),
    };
    let own = cfg.node_id.or(saved_id).or(same_as).unwrap_or_else(|| {
        let ip = local_addr.ip();
        if ip.is_unspecified() || id::is_exempt(&ip) {
            id::random_id()
        } else {
            id::bep42_id(&ip, id::random_id()[0])
        }
    });
    let seeds = saved_nodes
        .iter()
        .map(|n| n.addr)
        .filter(|a| a.is_ipv4() == local_addr.is_ipv4())
        .collect();
    let shared = Arc::new(Shared {
        cfg,
        local_addr,
        state_file,
        state: std::sync::Mutex::new(State::new(own, seeds)),
        counters: Default::default(),
        sibling: Default::default(),
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
    Ok(Arc::new(Inner { shared, cmd: tx }))
}

/// Makes `a` and `b` (the IPv4 and IPv6 nodes) each other's sibling.
pub(crate) fn pair(a: &Inner, b: &Inner) {
    let _ = a.shared.sibling.set(Sibling {
        shared: Arc::downgrade(&b.shared),
        cmd: b.cmd.downgrade(),
    });
    let _ = b.shared.sibling.set(Sibling {
        shared: Arc::downgrade(&a.shared),
        cmd: a.cmd.downgrade(),
    });
}

/// Bootstraps one node: looks up our own id through the seeds and the
/// table, then a random id.
pub(crate) async fn bootstrap(inner: &Arc<Inner>) {
    let own = inner.shared.lock().table.own_id();
    Lookup::new(inner, own, Query::FindNode { target: own }, true)
        .run()
        .await;
    let t = id::random_id();
    Lookup::new(inner, t, Query::FindNode { target: t }, false)
        .run()
        .await;
}

/// One `get_peers` lookup over this node's table: new peers (not in
/// `seen`) go to `tx` in batches as nodes answer. Ends with the lookup or
/// when the receiver is gone.
pub(crate) async fn get_peers(
    inner: Arc<Inner>,
    ih: [u8; 20],
    tx: mpsc::Sender<Vec<SocketAddr>>,
    seen: Arc<Mutex<HashSet<SocketAddr>>>,
) {
    let mut l = Lookup::new(&inner, ih, Query::GetPeers { info_hash: ih }, false);
    while let Some((_, r)) = l.next().await {
        let batch: Vec<SocketAddr> = {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            r.values
                .into_iter()
                .filter(|p| p.port() != 0 && seen.insert(*p))
                .collect()
        };
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            return;
        }
    }
}

/// Announces `ih` to the K closest nodes of this table that gave a token,
/// with `port` (`None`: `implied_port`, our DHT source port). Returns how
/// many accepted.
pub(crate) async fn announce(inner: Arc<Inner>, ih: [u8; 20], port: Option<u16>) -> usize {
    let mut l = Lookup::new(&inner, ih, Query::GetPeers { info_hash: ih }, false);
    l.run().await;
    let port_arg = port.unwrap_or(inner.shared.local_addr.port());
    let mut set = tokio::task::JoinSet::new();
    for (n, token) in l.closest_answered(K) {
        let Some(token) = token else { continue };
        let inner = inner.clone();
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

impl MutableLookup {
    /// Counts `item` (from a node, or our own store) for `public_key`:
    /// refused when it is another key's, too large, or badly signed; else
    /// valid, and kept when its `seq` is the highest so far.
    pub(crate) fn consider(&mut self, item: MutableItem, public_key: &[u8; 32]) {
        if item.public_key != *public_key || item.value.len() > storage::MAX_V_LEN || !item.verify()
        {
            self.refused += 1;
            return;
        }
        self.valid += 1;
        if self.item.as_ref().is_none_or(|b| item.seq > b.seq) {
            self.item = Some(item);
        }
    }

    /// Adds what another lookup (the other family's) saw.
    pub(crate) fn merge(&mut self, other: MutableLookup) {
        self.answered += other.answered;
        self.valid += other.valid;
        self.refused += other.refused;
        if let Some(i) = other.item
            && self.item.as_ref().is_none_or(|b| i.seq > b.seq)
        {
            self.item = Some(i);
        }
    }
}

/// Our own store's mutable item at `target`, if any.
pub(crate) fn local_mutable(inner: &Inner, target: &[u8; 20]) -> Option<MutableItem> {
    let st = inner.shared.lock();
    let i = st.items.get(target, Instant::now())?;
    let m = i.mutable.as_ref()?;
    Some(MutableItem {
        public_key: m.k,
        salt: m.salt.clone(),
        seq: m.seq,
        value: i.v.clone(),
        signature: m.sig,
    })
}

/// A BEP 44 `get` lookup of a mutable item over this node's table.
pub(crate) async fn get_mutable(
    inner: Arc<Inner>,
    public_key: [u8; 32],
    salt: Vec<u8>,
) -> MutableLookup {
    let target = super::mutable_target(&public_key, &salt);
    let mut report = MutableLookup::default();
    let mut l = Lookup::new(&inner, target, Query::Get { target, seq: None }, false);
    while let Some((_, r)) = l.next().await {
        report.answered += 1;
        if let (Some(k), Some(seq), Some(v), Some(sig)) = (r.k, r.seq, r.v, r.sig) {
            let item = MutableItem {
                public_key: k,
                salt: salt.clone(),
                seq,
                value: v,
                signature: sig,
            };
            report.consider(item, &public_key);
        }
    }
    report
}

/// A BEP 44 `get` lookup of an immutable item over this node's table: the
/// first value whose SHA-1 is `target`.
pub(crate) async fn get_immutable(inner: Arc<Inner>, target: [u8; 20]) -> Option<Vec<u8>> {
    let mut l = Lookup::new(&inner, target, Query::Get { target, seq: None }, false);
    while let Some((_, r)) = l.next().await {
        if let Some(v) = r.v
            && super::immutable_target(&v) == target
        {
            return Some(v);
        }
    }
    None
}

/// A BEP 44 `put` over this node's table: stores in our own store, then
/// on the K closest nodes that gave a write token. Returns how many
/// accepted and the first refusal.
pub(crate) async fn put(
    inner: Arc<Inner>,
    target: [u8; 20],
    args: PutArgs,
) -> (usize, Option<DhtError>) {
    // Our own store: a refusal here (e.g. a newer seq) is not fatal.
    let _ = inner.shared.lock().items.put(&args, Instant::now());
    let mut l = Lookup::new(&inner, target, Query::Get { target, seq: None }, false);
    l.run().await;
    let mut set = tokio::task::JoinSet::new();
    for (n, token) in l.closest_answered(K) {
        let Some(token) = token else { continue };
        let inner = inner.clone();
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
    (ok, refusal)
}
