//! The routing table (BEP 5, section "Routing Table"): Kademlia buckets of at
//! most [`K`] nodes; the bucket that covers our own id splits when full.
//!
//! Buckets are kept as a list where bucket `i` (for all but the last) holds
//! nodes whose id shares exactly `i` leading bits with ours, and the last
//! bucket holds every node sharing at least `len - 1` bits: splitting it is
//! the Kademlia split of the bucket containing our id.
//!
//! Node states (BEP 5): *good* if it answered one of our queries within the
//! last 15 minutes, or answered once and queried us within 15 minutes;
//! *questionable* after 15 minutes of silence or when it never answered; *bad*
//! after [`BAD_AFTER_FAILS`] unanswered queries in a row.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::id::{common_prefix_bits, distance, random_id_with_prefix};
use super::krpc::{Id, NodeInfo};

/// Bucket size (BEP 5: k = 8).
pub const K: usize = 8;
/// Silence after which a node is questionable and a bucket is stale.
pub const QUESTIONABLE_AFTER: Duration = Duration::from_secs(15 * 60);
/// Unanswered queries in a row that make a node bad.
pub const BAD_AFTER_FAILS: u32 = 2;

/// Addresses remembered by [`Unresponsive`], at most (memory bound).
pub const MAX_UNRESPONSIVE: usize = 4096;
/// How long an address stays in [`Unresponsive`] after its last unanswered
/// query: 15 minutes, the time after which BEP 5 calls a silent node
/// questionable.
pub const UNRESPONSIVE_FOR: Duration = QUESTIONABLE_AFTER;

/// Addresses whose last query from us went unanswered: past a lookup's soft
/// timeout (see [`super::rtt`]) or the request timeout, table members or
/// not. Lookups learn most nodes from others'
/// `nodes` lists, not from our table; those lists keep handing out nodes
/// that left (BEP 5 only makes a node bad in the table that queried it).
/// A lookup still asks such an address but does not wait for it (see
/// `lookup`); an answer from it clears it.
#[derive(Debug, Default)]
pub struct Unresponsive {
    since: HashMap<SocketAddr, Instant>,
}

impl Unresponsive {
    /// Records a query to `addr` unanswered at `now`. When full, the entry
    /// recorded longest ago makes room.
    pub fn record(&mut self, addr: SocketAddr, now: Instant) {
        if self.since.len() >= MAX_UNRESPONSIVE
            && !self.since.contains_key(&addr)
            && let Some(oldest) = self.since.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a)
        {
            self.since.remove(&oldest);
        }
        self.since.insert(addr, now);
    }

    /// Records an answer from `addr`.
    pub fn answered(&mut self, addr: &SocketAddr) {
        self.since.remove(addr);
    }

    /// True when a query to `addr` went unanswered less than
    /// [`UNRESPONSIVE_FOR`] before `now`, and no answer came since.
    pub fn contains(&self, addr: &SocketAddr, now: Instant) -> bool {
        self.since
            .get(addr)
            .is_some_and(|t| now.saturating_duration_since(*t) < UNRESPONSIVE_FOR)
    }

    /// Forgets entries older than [`UNRESPONSIVE_FOR`].
    pub fn expire(&mut self, now: Instant) {
        self.since
            .retain(|_, t| now.saturating_duration_since(*t) < UNRESPONSIVE_FOR);
    }

    /// Number of addresses remembered.
    pub fn len(&self) -> usize {
        self.since.len()
    }

    /// True when no address is remembered.
    pub fn is_empty(&self) -> bool {
        self.since.is_empty()
    }
}

/// Liveness of a node (BEP 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Good,
    Questionable,
    Bad,
}

/// A node in the table and what we know of its liveness.
#[derive(Debug, Clone)]
pub struct Entry {
    pub info: NodeInfo,
    /// Last answer to one of our queries.
    pub last_response: Option<Instant>,
    /// Last query it sent us.
    pub last_query: Option<Instant>,
    /// Unanswered queries in a row.
    pub fails: u32,
}

impl Entry {
    /// The node's state at `now`.
    pub fn state(&self, now: Instant) -> NodeState {
        if self.fails >= BAD_AFTER_FAILS {
            return NodeState::Bad;
        }
        match self.last_response {
            Some(r) if now.duration_since(r) < QUESTIONABLE_AFTER => NodeState::Good,
            Some(_)
                if self
                    .last_query
                    .is_some_and(|q| now.duration_since(q) < QUESTIONABLE_AFTER) =>
            {
                NodeState::Good
            }
            _ => NodeState::Questionable,
        }
    }
}

#[derive(Debug, Clone)]
struct Bucket {
    nodes: Vec<Entry>,
    /// Nodes seen while the bucket was full, newest last (at most K).
    replacements: Vec<Entry>,
    /// Last time a node in this bucket was added or answered.
    last_changed: Instant,
}

impl Bucket {
    fn new(now: Instant) -> Bucket {
        Bucket {
            nodes: Vec::new(),
            replacements: Vec::new(),
            last_changed: now,
        }
    }
}

/// What [`RoutingTable::heard_from`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    /// A new node went into a bucket.
    Added,
    /// The node was already there; its liveness was updated.
    Updated,
    /// The bucket is full: the node was kept as a replacement, and these
    /// questionable nodes should be pinged (a failure makes room).
    Full { ping: Vec<SocketAddr> },
    /// Not added (our own id, or a full bucket of good nodes).
    Rejected,
}

/// Kademlia routing table around our own id.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    own: Id,
    buckets: Vec<Bucket>,
}

impl RoutingTable {
    /// An empty table for our id `own`.
    pub fn new(own: Id) -> RoutingTable {
        RoutingTable {
            own,
            buckets: vec![Bucket::new(Instant::now())],
        }
    }

    /// Our id.
    pub fn own_id(&self) -> Id {
        self.own
    }

    /// Number of nodes in buckets (not counting replacements).
    pub fn len(&self) -> usize {
        self.buckets.iter().map(|b| b.nodes.len()).sum()
    }

    /// True when no node is in a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of buckets.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    fn index(&self, id: &Id) -> usize {
        common_prefix_bits(&self.own, id).min(self.buckets.len() - 1)
    }

    /// Records that `info` answered us (`responded`) or queried us. A node
    /// that only queried us is added only where there is room.
    pub fn heard_from(&mut self, info: NodeInfo, responded: bool, now: Instant) -> Insert {
        if info.id == self.own {
            return Insert::Rejected;
        }
        let touch = |e: &mut Entry| {
            if responded {
                e.last_response = Some(now);
                e.fails = 0;
            } else {
                e.last_query = Some(now);
            }
        };
        // Same address under another id: the node restarted; forget the old.
        for b in &mut self.buckets {
            if let Some(pos) = b
                .nodes
                .iter()
                .position(|e| e.info.addr == info.addr && e.info.id != info.id)
            {
                b.nodes.remove(pos);
            }
        }
        loop {
            let count = self.buckets.len();
            let last = count - 1;
            let i = self.index(&info.id);
            let b = &mut self.buckets[i];
            if let Some(e) = b.nodes.iter_mut().find(|e| e.info.id == info.id) {
                if e.info.addr != info.addr {
                    // Another address claims a known id: keep the one we know.
                    return Insert::Rejected;
                }
                touch(e);
                if responded {
                    b.last_changed = now;
                }
                return Insert::Updated;
            }
            let mut entry = Entry {
                info,
                last_response: None,
                last_query: None,
                fails: 0,
            };
            touch(&mut entry);
            if b.nodes.len() < K {
                b.nodes.push(entry);
                b.last_changed = now;
                return Insert::Added;
            }
            if i == last && count < 160 {
                self.split();
                continue;
            }
            if !responded {
                return Insert::Rejected;
            }
            if let Some(pos) = b.nodes.iter().position(|e| e.state(now) == NodeState::Bad) {
                b.nodes[pos] = entry;
                b.last_changed = now;
                return Insert::Added;
            }
            let ping: Vec<SocketAddr> = b
                .nodes
                .iter()
                .filter(|e| e.state(now) == NodeState::Questionable)
                .take(2)
                .map(|e| e.info.addr)
                .collect();
            if ping.is_empty() {
                return Insert::Rejected;
            }
            b.replacements.retain(|e| e.info.id != info.id);
            if b.replacements.len() >= K {
                b.replacements.remove(0);
            }
            b.replacements.push(entry);
            return Insert::Full { ping };
        }
    }

    fn split(&mut self) {
        let last = self.buckets.len() - 1;
        let now = Instant::now();
        let mut new = Bucket::new(now);
        let own = self.own;
        let moving = |e: &Entry| common_prefix_bits(&own, &e.info.id) > last;
        let old = &mut self.buckets[last];
        let (go, stay): (Vec<Entry>, Vec<Entry>) = old.nodes.drain(..).partition(moving);
        old.nodes = stay;
        new.nodes = go;
        let (go, stay): (Vec<Entry>, Vec<Entry>) = old.replacements.drain(..).partition(moving);
        old.replacements = stay;
        new.replacements = go;
        // Fill the old bucket from its replacements.
        while old.nodes.len() < K {
            match old.replacements.pop() {
                Some(e) => old.nodes.push(e),
                None => break,
            }
        }
        self.buckets.push(new);
    }

    /// Records an unanswered query to `addr`. A bad node is replaced by the
    /// newest replacement; a node that never answered is removed at once.
    pub fn failed(&mut self, addr: &SocketAddr) {
        let now = Instant::now();
        for b in &mut self.buckets {
            if let Some(pos) = b.nodes.iter().position(|e| e.info.addr == *addr) {
                let e = &mut b.nodes[pos];
                e.fails += 1;
                let never_answered = e.last_response.is_none();
                if e.state(now) == NodeState::Bad || never_answered {
                    if let Some(r) = b.replacements.pop() {
                        b.nodes[pos] = r;
                    } else if never_answered || e.fails >= 2 * BAD_AFTER_FAILS {
                        b.nodes.remove(pos);
                    }
                }
                return;
            }
        }
    }

    /// Up to `n` non-bad nodes closest to `target`: first the nodes whose
    /// last query to them was answered (or that we never queried), closest
    /// first, then those that failed to answer our last query, closest first.
    /// BEP 5 gives nodes known to be good priority over nodes of unknown
    /// status; a node that just failed is likely gone, and each one a lookup
    /// starts from costs it a soft timeout.
    pub fn closest(&self, target: &Id, n: usize) -> Vec<NodeInfo> {
        let now = Instant::now();
        let mut all: Vec<(bool, Id, NodeInfo)> = self
            .buckets
            .iter()
            .flat_map(|b| b.nodes.iter())
            .filter(|e| e.state(now) != NodeState::Bad)
            .map(|e| (e.fails > 0, distance(&e.info.id, target), e.info))
            .collect();
        all.sort_unstable_by_key(|a| (a.0, a.1));
        all.into_iter().take(n).map(|(_, _, i)| i).collect()
    }

    /// Every node currently good (for persistence).
    pub fn good_nodes(&self) -> Vec<NodeInfo> {
        let now = Instant::now();
        self.buckets
            .iter()
            .flat_map(|b| b.nodes.iter())
            .filter(|e| e.state(now) == NodeState::Good)
            .map(|e| e.info)
            .collect()
    }

    /// Every node in a bucket.
    pub fn all_nodes(&self) -> Vec<NodeInfo> {
        self.buckets
            .iter()
            .flat_map(|b| b.nodes.iter())
            .map(|e| e.info)
            .collect()
    }

    /// Random targets inside each bucket unchanged for `stale` (BEP 5:
    /// refresh with a `find_node` for a random id in the bucket's range).
    /// Marks them refreshed.
    pub fn stale_targets(&mut self, stale: Duration, now: Instant) -> Vec<Id> {
        let last = self.buckets.len() - 1;
        let own = self.own;
        let mut out = Vec::new();
        for (i, b) in self.buckets.iter_mut().enumerate() {
            if now.duration_since(b.last_changed) >= stale {
                b.last_changed = now;
                out.push(random_id_with_prefix(&own, i, i != last));
            }
        }
        out
    }

    /// Questionable nodes at `now` (to ping).
    pub fn questionable(&self, now: Instant) -> Vec<SocketAddr> {
        self.buckets
            .iter()
            .flat_map(|b| b.nodes.iter())
            .filter(|e| e.state(now) == NodeState::Questionable)
            .map(|e| e.info.addr)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: Id, port: u16) -> NodeInfo {
        NodeInfo {
            id,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    #[test]
    fn splits_the_bucket_holding_our_id() {
        let own = [0u8; 20];
        let mut t = RoutingTable::new(own);
        let now = Instant::now();
        // 8 nodes far away (first bit 1), then 8 closer (prefix 01).
        for i in 0..8u8 {
            let mut id = [0u8; 20];
            id[0] = 0x80;
            id[19] = i;
            assert_eq!(
                t.heard_from(node(id, 1000 + i as u16), true, now),
                Insert::Added
            );
        }
        assert_eq!(t.bucket_count(), 1);
        for i in 0..8u8 {
            let mut id = [0u8; 20];
            id[0] = 0x40;
            id[19] = i;
            assert_eq!(
                t.heard_from(node(id, 2000 + i as u16), true, now),
                Insert::Added
            );
        }
        assert_eq!(t.bucket_count(), 2);
        assert_eq!(t.len(), 16);
        // A ninth far node: its bucket (0) can't split and is full of good nodes.
        let mut id = [0u8; 20];
        id[0] = 0xC0;
        assert_eq!(t.heard_from(node(id, 3000), true, now), Insert::Rejected);
        // Closest to own: the 0x40 ones.
        let c = t.closest(&own, 8);
        assert!(c.iter().all(|n| n.id[0] == 0x40));
        // Updating a node.
        let mut id = [0u8; 20];
        id[0] = 0x80;
        assert_eq!(t.heard_from(node(id, 1000), false, now), Insert::Updated);
    }

    #[test]
    fn full_bucket_pings_questionable_and_replaces_bad() {
        let own = [0u8; 20];
        let mut t = RoutingTable::new(own);
        let now = Instant::now();
        // Fill bucket 0 after one split: ids with first bit 1.
        for i in 0..8u8 {
            let mut id = [0u8; 20];
            id[0] = 0x40 + i; // forces a split later
            t.heard_from(node(id, 100 + i as u16), true, now);
        }
        for i in 0..8u8 {
            let mut id = [0u8; 20];
            id[0] = 0x80;
            id[19] = i;
            t.heard_from(node(id, 200 + i as u16), false, now);
        }
        // Bucket 0 holds 8 nodes that only queried us (questionable).
        let mut id = [0u8; 20];
        id[0] = 0xF0;
        match t.heard_from(node(id, 300), true, now) {
            Insert::Full { ping } => assert!(!ping.is_empty()),
            o => panic!("{o:?}"),
        }
        // The pinged node never answers: it is replaced by the waiting one.
        let victim = SocketAddr::from(([127, 0, 0, 1], 200));
        t.failed(&victim);
        assert!(t.all_nodes().iter().any(|n| n.addr.port() == 300));
        assert!(!t.all_nodes().iter().any(|n| n.addr == victim));
    }

    #[test]
    fn bad_nodes_and_stale_buckets() {
        let mut t = RoutingTable::new([0; 20]);
        let now = Instant::now();
        let n = node([1; 20], 5);
        t.heard_from(n, true, now);
        t.failed(&n.addr);
        assert_eq!(t.len(), 1);
        t.failed(&n.addr);
        assert!(
            t.closest(&[0; 20], 8).is_empty(),
            "bad nodes are not offered"
        );
        assert_eq!(t.len(), 1, "a bad node without replacement stays a while");
        let later = now + QUESTIONABLE_AFTER;
        assert_eq!(t.stale_targets(QUESTIONABLE_AFTER, later).len(), 1);
        assert!(t.stale_targets(QUESTIONABLE_AFTER, later).is_empty());
    }

    #[test]
    fn nodes_that_just_failed_come_last() {
        let own = [0u8; 20];
        let mut t = RoutingTable::new(own);
        let now = Instant::now();
        let (near, mid, far) = (node([1; 20], 1), node([2; 20], 2), node([0x40; 20], 3));
        for n in [near, mid, far] {
            t.heard_from(n, true, now);
        }
        let order = |t: &RoutingTable| -> Vec<u16> {
            t.closest(&own, 8).iter().map(|n| n.addr.port()).collect()
        };
        assert_eq!(order(&t), vec![1, 2, 3]);
        // The nearest node misses one query: offered after the others.
        t.failed(&near.addr);
        assert_eq!(order(&t), vec![2, 3, 1]);
        assert_eq!(t.closest(&own, 2).len(), 2);
        assert!(!t.closest(&own, 2).contains(&near));
        // It answers again: back in its place.
        t.heard_from(near, true, now);
        assert_eq!(order(&t), vec![1, 2, 3]);
        // Two misses in a row: bad, not offered at all.
        t.failed(&mid.addr);
        t.failed(&mid.addr);
        assert_eq!(order(&t), vec![1, 3]);
        // A node that never answered is dropped at its first miss.
        let stranger = node([3; 20], 4);
        t.heard_from(stranger, false, now);
        assert_eq!(order(&t), vec![1, 4, 3]);
        t.failed(&stranger.addr);
        assert_eq!(order(&t), vec![1, 3]);
    }

    #[test]
    fn unresponsive_addresses_are_bounded_and_expire() {
        let now = Instant::now();
        let mut u = Unresponsive::default();
        let a = node([1; 20], 1).addr;
        assert!(!u.contains(&a, now));
        u.record(a, now);
        assert!(u.contains(&a, now + UNRESPONSIVE_FOR - Duration::from_secs(1)));
        assert!(!u.contains(&a, now + UNRESPONSIVE_FOR));
        u.answered(&a);
        assert!(!u.contains(&a, now) && u.is_empty());
        for p in 0..MAX_UNRESPONSIVE as u16 + 10 {
            u.record(
                node([1; 20], p).addr,
                now + Duration::from_millis(u64::from(p)),
            );
        }
        assert_eq!(u.len(), MAX_UNRESPONSIVE);
        assert!(!u.contains(&node([1; 20], 0).addr, now), "oldest made room");
        u.expire(now + UNRESPONSIVE_FOR + Duration::from_secs(60));
        assert!(u.is_empty());
    }
}
