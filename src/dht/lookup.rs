//! Iterative lookups (BEP 5; Kademlia's node lookup): query the closest known
//! nodes to a target, α at a time, learn closer nodes from their answers, and
//! stop when the [`K`] closest nodes that answer have all been asked, or when
//! the whole-lookup bound passes. Answers are yielded as they arrive so
//! callers can stream results (first peers before the lookup ends).
//!
//! Dead nodes (a large share of any routing table on the Internet) would
//! otherwise hold a slot for the whole request timeout each. A query not
//! answered within the *soft timeout* (from measured round trips, see
//! [`super::rtt`]) is *slow*: it stops counting against α, so the next
//! candidate is asked in its place, yet it stays outstanding and a late
//! answer is used like any other. Only the request timeout marks the node
//! failed (and tells the routing table). The lookup ends when the K closest
//! candidates that are neither failed nor slow have answered; slow queries
//! are waited for only while no node at all has answered.
//! An address that left one of our queries unanswered past its soft
//! timeout, in any lookup, and has not answered since (see
//! [`super::routing::Unresponsive`]) is *suspect*: it is still asked, but as
//! if already slow, so a node that left costs nothing the next time others
//! hand it out.
//!
//! [`Traversal`] holds that state and is driven with explicit instants;
//! [`Lookup`] runs it over the node's socket.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::handle::Inner;
use super::id::distance;
use super::krpc::{Id, NodeInfo, Query, Response};
use super::node::RpcError;
use super::routing::K;

/// Candidates remembered per lookup, at most (memory bound).
const MAX_CANDIDATES: usize = 256;
/// Seed addresses (routers, saved nodes) queried per lookup, at most.
const MAX_SEEDS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CandState {
    /// Not asked yet.
    New,
    /// Asked; the soft timeout has not passed.
    Asked,
    /// Asked, unanswered past the soft timeout, still outstanding: no longer
    /// counted against α nor among the K closest, until it answers.
    Slow,
    /// Answered.
    Done,
    /// No answer within the request timeout, or an error reply.
    Failed,
}

#[derive(Debug)]
struct Cand {
    info: NodeInfo,
    state: CandState,
    token: Option<Vec<u8>>,
}

/// Key of a candidate: distance to the target, then address.
type Key = (Id, SocketAddr);

/// One outstanding query of a traversal.
#[derive(Debug)]
struct Req {
    /// The candidate asked; `None` for a seed (router or saved node) whose
    /// id we do not know.
    key: Option<Key>,
    addr: SocketAddr,
    /// When the query was sent.
    sent: Instant,
    slow: bool,
}

/// The state of one iterative lookup (BEP 5), without I/O: candidates
/// ordered by XOR distance to the target, the queries outstanding, and the
/// rules for what to ask next and when to stop. Request numbers returned by
/// [`Traversal::launch`] are handed back with each outcome.
#[derive(Debug)]
pub(crate) struct Traversal {
    target: Id,
    own: Id,
    local: SocketAddr,
    alpha: usize,
    cands: BTreeMap<Key, Cand>,
    seeds: Vec<SocketAddr>,
    reqs: HashMap<u64, Req>,
    next_req: u64,
    suspects: HashSet<SocketAddr>,
}

impl Traversal {
    /// A traversal towards `target` for the node `own` bound at `local`
    /// (neither is ever queried), `alpha` queries at a time (at least 1),
    /// starting from `closest` (our routing table's nodes) and `seeds`
    /// (addresses without ids, all asked at once).
    pub fn new(
        target: Id,
        own: Id,
        local: SocketAddr,
        alpha: usize,
        closest: Vec<NodeInfo>,
        seeds: Vec<SocketAddr>,
    ) -> Traversal {
        let mut t = Traversal {
            target,
            own,
            local,
            alpha: alpha.max(1),
            cands: BTreeMap::new(),
            seeds,
            reqs: HashMap::new(),
            next_req: 0,
            suspects: HashSet::new(),
        };
        for n in closest {
            t.add(n);
        }
        t
    }

    /// Learns a candidate (from a `nodes` list of an answer). Nodes of the
    /// other address family than our socket's are not candidates (BEP 32:
    /// each family's node looks up over its own socket).
    pub fn add(&mut self, n: NodeInfo) {
        if n.id == self.own
            || n.addr.port() == 0
            || n.addr == self.local
            || n.addr.is_ipv4() != self.local.is_ipv4()
        {
            return;
        }
        let key = (distance(&n.id, &self.target), n.addr);
        if self.cands.contains_key(&key) {
            return;
        }
        if self.cands.len() >= MAX_CANDIDATES {
            // Forget the farthest not-yet-asked candidate, if it is farther.
            let far = self
                .cands
                .iter()
                .rev()
                .find(|(_, c)| c.state == CandState::New)
                .map(|(k, _)| *k);
            match far {
                Some(f) if f > key => {
                    self.cands.remove(&f);
                }
                _ => return,
            }
        }
        self.cands.insert(
            key,
            Cand {
                info: n,
                state: CandState::New,
                token: None,
            },
        );
    }

    /// Marks `addr` as suspect: it recently left a query unanswered. When
    /// its turn comes it is asked as if already slow: it holds no α slot and
    /// is not waited for, and an answer is used as any late answer.
    pub fn suspect(&mut self, addr: SocketAddr) {
        self.suspects.insert(addr);
    }

    /// Queries outstanding that still count against α (not slow).
    pub fn active(&self) -> usize {
        self.reqs.values().filter(|r| !r.slow).count()
    }

    /// Queries outstanding, slow ones included.
    #[cfg(test)]
    pub fn outstanding(&self) -> usize {
        self.reqs.len()
    }

    fn start(&mut self, key: Option<Key>, addr: SocketAddr, now: Instant, slow: bool) -> u64 {
        let id = self.next_req;
        self.next_req += 1;
        self.reqs.insert(
            id,
            Req {
                key,
                addr,
                sent: now,
                slow,
            },
        );
        id
    }

    /// What to send now, as `(request number, address)`: every seed not yet
    /// asked, then the closest not-yet-asked candidates among the K closest
    /// that are neither failed nor slow, while fewer than α queries are
    /// active, all sent at `now`. Suspects are slow at once.
    pub fn launch(&mut self, now: Instant) -> Vec<(u64, SocketAddr)> {
        let mut out = Vec::new();
        while let Some(s) = self.seeds.pop() {
            let slow = self.suspects.contains(&s);
            out.push((self.start(None, s, now, slow), s));
        }
        while self.active() < self.alpha {
            let pick = self
                .cands
                .iter()
                .filter(|(_, c)| !matches!(c.state, CandState::Failed | CandState::Slow))
                .take(K)
                .find(|(_, c)| c.state == CandState::New)
                .map(|(k, c)| (*k, c.info.addr));
            let Some((key, addr)) = pick else { break };
            let slow = self.suspects.contains(&addr);
            if let Some(c) = self.cands.get_mut(&key) {
                c.state = if slow {
                    CandState::Slow
                } else {
                    CandState::Asked
                };
            }
            out.push((self.start(Some(key), addr, now, slow), addr));
        }
        out
    }

    /// Marks the queries sent `soft` or longer before `now` as slow. The
    /// soft timeout is the current one, not the one when a query was sent:
    /// the first round trips measured shorten the wait for queries already
    /// out. Returns the addresses of the queries that became slow.
    pub fn expire(&mut self, now: Instant, soft: Duration) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for r in self.reqs.values_mut() {
            if r.slow || r.sent + soft > now {
                continue;
            }
            r.slow = true;
            out.push(r.addr);
            if let Some(k) = r.key
                && let Some(c) = self.cands.get_mut(&k)
                && c.state == CandState::Asked
            {
                c.state = CandState::Slow;
            }
        }
        out
    }

    /// The next instant a query becomes slow with soft timeout `soft`, if
    /// any active one is left.
    pub fn wake_at(&self, soft: Duration) -> Option<Instant> {
        self.reqs
            .values()
            .filter(|r| !r.slow)
            .map(|r| r.sent + soft)
            .min()
    }

    /// Records the answer to request `req` from `info` (its id as it
    /// answered), with its write token and the nodes it gave. Returns true
    /// when the answer came late (after the soft timeout).
    pub fn answered(
        &mut self,
        req: u64,
        info: NodeInfo,
        token: Option<Vec<u8>>,
        nodes: &[NodeInfo],
    ) -> bool {
        let late = match self.reqs.remove(&req) {
            Some(r) => {
                if let Some(k) = r.key {
                    self.cands.remove(&k);
                }
                r.slow
            }
            None => false,
        };
        let key = (distance(&info.id, &self.target), info.addr);
        self.cands.insert(
            key,
            Cand {
                info,
                state: CandState::Done,
                token,
            },
        );
        for n in nodes {
            self.add(*n);
        }
        late
    }

    /// Records that request `req` got no answer within the request timeout
    /// (or an error reply): its candidate has failed.
    pub fn failed(&mut self, req: u64) {
        if let Some(Req { key: Some(k), .. }) = self.reqs.remove(&req)
            && let Some(c) = self.cands.get_mut(&k)
            && matches!(c.state, CandState::Asked | CandState::Slow)
        {
            c.state = CandState::Failed;
        }
    }

    /// True when the K closest candidates that are neither failed nor slow
    /// have all answered. With fewer such candidates known (a small
    /// network, or most nodes dead): when every one has answered and no
    /// query is active, or, while none has answered yet, when nothing is
    /// outstanding any more (slow queries included: their late answers are
    /// then all there is to learn from).
    pub fn finished(&self) -> bool {
        let mut n = 0;
        for c in self.cands.values() {
            match c.state {
                CandState::Failed | CandState::Slow => {}
                CandState::New | CandState::Asked => return false,
                CandState::Done => {
                    n += 1;
                    if n == K {
                        return true;
                    }
                }
            }
        }
        self.reqs.is_empty() || (n > 0 && self.active() == 0)
    }

    /// Forgets the seeds not yet asked.
    pub fn clear_seeds(&mut self) {
        self.seeds.clear();
    }

    /// Up to `n` nodes that answered, closest to the target first, with the
    /// write token each gave (if any).
    pub fn closest_answered(&self, n: usize) -> Vec<(NodeInfo, Option<Vec<u8>>)> {
        self.cands
            .values()
            .filter(|c| c.state == CandState::Done)
            .take(n)
            .map(|c| (c.info, c.token.clone()))
            .collect()
    }
}

type Answer = (u64, SocketAddr, Result<Response, RpcError>);

/// One iterative lookup in progress.
pub(crate) struct Lookup {
    inner: Arc<Inner>,
    query: Query,
    t: Traversal,
    inflight: JoinSet<Answer>,
    /// Request number of each task in `inflight`.
    tasks: HashMap<tokio::task::Id, u64>,
    deadline: Instant,
}

impl Lookup {
    /// Starts a lookup for `target` sending `query` to each node, seeded with
    /// the closest nodes of our table; with `use_seeds` (or a thin table) the
    /// bootstrap seeds are queried too.
    pub fn new(inner: &Arc<Inner>, target: Id, query: Query, use_seeds: bool) -> Lookup {
        let shared = &inner.shared;
        let (own, closest, seeds, suspects) = {
            let st = shared.lock();
            let closest = st.table.closest(&target, 2 * K);
            let seeds: Vec<SocketAddr> = if use_seeds || closest.len() < K {
                st.seeds.iter().take(MAX_SEEDS).copied().collect()
            } else {
                Vec::new()
            };
            let now = std::time::Instant::now();
            let suspects: Vec<SocketAddr> = closest
                .iter()
                .map(|n| n.addr)
                .chain(seeds.iter().copied())
                .filter(|a| st.unresponsive.contains(a, now))
                .collect();
            (st.table.own_id(), closest, seeds, suspects)
        };
        let mut t = Traversal::new(
            target,
            own,
            shared.local_addr,
            shared.cfg.alpha,
            closest,
            seeds,
        );
        for a in suspects {
            t.suspect(a);
        }
        Lookup {
            inner: inner.clone(),
            query,
            t,
            inflight: JoinSet::new(),
            tasks: HashMap::new(),
            deadline: Instant::now() + shared.cfg.lookup_timeout,
        }
    }

    /// Sends what the traversal asks for.
    fn launch(&mut self, now: Instant) {
        for (req, addr) in self.t.launch(now) {
            let inner = self.inner.clone();
            let q = self.query.clone();
            let h = self
                .inflight
                .spawn(async move { (req, addr, inner.query(addr, q).await) });
            self.tasks.insert(h.id(), req);
        }
    }

    /// The next answer, as `(responder, response)`; `None` when the lookup
    /// is over (converged, exhausted, or past the whole-lookup bound).
    pub async fn next(&mut self) -> Option<(NodeInfo, Response)> {
        let inner = self.inner.clone();
        let counters = &inner.shared.counters;
        loop {
            if Instant::now() >= self.deadline {
                self.inflight.abort_all();
                self.t.clear_seeds();
                return None;
            }
            // Answers that arrived while our caller was busy (verifying a
            // signature, say) came in time: take them before judging soft
            // timeouts.
            let joined = match self.inflight.try_join_next_with_id() {
                Some(j) => j,
                None => {
                    let now = Instant::now();
                    let (soft, slowed) = {
                        let shared = &inner.shared;
                        let mut st = shared.lock();
                        let soft = st.rtt.soft_timeout(shared.cfg.request_timeout);
                        let slowed = self.t.expire(now, soft);
                        // Other lookups need not wait for them either (an
                        // answer, even late, clears them).
                        let at = std::time::Instant::now();
                        for a in &slowed {
                            st.unresponsive.record(*a, at);
                        }
                        (soft, slowed.len())
                    };
                    if slowed > 0 {
                        counters
                            .soft_timeouts
                            .fetch_add(slowed as u64, Ordering::Relaxed);
                    }
                    self.launch(now);
                    if self.t.finished() {
                        self.inflight.abort_all();
                        return None;
                    }
                    let wake = self
                        .t
                        .wake_at(soft)
                        .map_or(self.deadline, |w| w.min(self.deadline));
                    match tokio::time::timeout_at(wake, self.inflight.join_next_with_id()).await {
                        // A soft timeout or the whole-lookup bound: both are
                        // handled at the top of the loop.
                        Err(_) => continue,
                        Ok(None) => return None,
                        Ok(Some(j)) => j,
                    }
                }
            };
            let joined = match joined {
                Ok((id, a)) => {
                    self.tasks.remove(&id);
                    a
                }
                Err(e) => {
                    // The task ended without an answer (cannot happen short
                    // of a panic): count its node as failed.
                    if let Some(req) = self.tasks.remove(&e.id()) {
                        self.t.failed(req);
                    }
                    continue;
                }
            };
            let (req, addr, res) = joined;
            match res {
                Ok(resp) => {
                    if !resp.nodes.is_empty() {
                        let st = inner.shared.lock();
                        let now = std::time::Instant::now();
                        for n in &resp.nodes {
                            if st.unresponsive.contains(&n.addr, now) {
                                self.t.suspect(n.addr);
                            }
                        }
                    }
                    let info = NodeInfo { id: resp.id, addr };
                    if self.t.answered(req, info, resp.token.clone(), &resp.nodes) {
                        counters.late_answers.fetch_add(1, Ordering::Relaxed);
                    }
                    return Some((info, resp));
                }
                Err(_) => self.t.failed(req),
            }
        }
    }

    /// Runs the lookup to its end, ignoring answers.
    pub async fn run(&mut self) {
        while self.next().await.is_some() {}
    }

    /// Up to `n` nodes that answered, closest to the target first, with the
    /// write token each gave (if any).
    pub fn closest_answered(&self, n: usize) -> Vec<(NodeInfo, Option<Vec<u8>>)> {
        self.t.closest_answered(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOFT: Duration = Duration::from_millis(200);

    /// A node at XOR distance `i` from the all-zero target.
    fn node(i: u8) -> NodeInfo {
        let mut id = [0u8; 20];
        id[19] = i;
        NodeInfo {
            id,
            addr: SocketAddr::from(([127, 0, 0, 1], 1000 + u16::from(i))),
        }
    }

    fn traversal(alpha: usize, ids: impl IntoIterator<Item = u8>) -> Traversal {
        Traversal::new(
            [0; 20],
            [0xff; 20],
            "127.0.0.1:1".parse().unwrap(),
            alpha,
            ids.into_iter().map(node).collect(),
            Vec::new(),
        )
    }

    /// Sends what `t` asks for at `now`: the distances asked, by request.
    fn launch(t: &mut Traversal, now: Instant) -> Vec<(u64, u8)> {
        t.launch(now)
            .into_iter()
            .map(|(r, a)| (r, (a.port() - 1000) as u8))
            .collect()
    }

    fn answer(t: &mut Traversal, (req, i): (u64, u8), nodes: &[NodeInfo]) -> bool {
        t.answered(req, node(i), Some(vec![i]), nodes)
    }

    fn answered(t: &Traversal) -> Vec<u8> {
        t.closest_answered(K)
            .iter()
            .map(|(n, _)| n.id[19])
            .collect()
    }

    #[test]
    fn dead_nodes_are_passed_over_after_the_soft_timeout() {
        let t0 = Instant::now();
        let mut t = traversal(3, 1..=12);
        let dead = launch(&mut t, t0);
        assert_eq!(dead.iter().map(|x| x.1).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(launch(&mut t, t0).is_empty(), "α queries active");
        assert_eq!(t.wake_at(SOFT), Some(t0 + SOFT));
        assert!(
            t.expire(t0 + SOFT - Duration::from_millis(1), SOFT)
                .is_empty()
        );
        assert_eq!(t.expire(t0 + SOFT, SOFT).len(), 3);
        assert_eq!((t.active(), t.outstanding()), (0, 3));
        assert_eq!(t.wake_at(SOFT), None);
        // Three more are asked in their place, and so on; nodes 1-3 never
        // answer, yet the lookup ends once 4..=11 (the K closest that are
        // neither failed nor slow) have answered.
        let mut now = t0 + SOFT;
        while !t.finished() {
            let asked = launch(&mut t, now);
            assert!(!asked.is_empty(), "never stuck");
            assert!(asked.iter().all(|a| a.1 >= 4));
            for a in asked {
                assert!(!answer(&mut t, a, &[]));
            }
            now += Duration::from_millis(1);
        }
        assert_eq!(answered(&t), [4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(t.outstanding(), 3, "the dead ones are still outstanding");
        assert!(now < t0 + 2 * SOFT);
    }

    #[test]
    fn late_answers_are_used() {
        let t0 = Instant::now();
        let mut t = traversal(3, 2..=12);
        let first = launch(&mut t, t0);
        t.expire(t0 + SOFT, SOFT);
        let next = launch(&mut t, t0 + SOFT);
        assert_eq!(next.iter().map(|x| x.1).collect::<Vec<_>>(), [5, 6, 7]);
        // Node 3 answers late, with a node closer than any known.
        assert!(answer(&mut t, first[1], &[node(1)]), "counted as late");
        assert_eq!(answered(&t), [3]);
        // Nothing new is asked while α queries are active ...
        assert!(launch(&mut t, t0 + SOFT).is_empty());
        assert!(!answer(&mut t, next[0], &[]));
        // ... then the closest unasked node is: the one the late answer gave.
        let n1 = launch(&mut t, t0 + SOFT);
        assert_eq!(n1.iter().map(|x| x.1).collect::<Vec<_>>(), [1]);
        assert!(!t.finished());
        answer(&mut t, n1[0], &[]);
        assert_eq!(answered(&t), [1, 3, 5]);
        // The hard timeout of the other slow ones marks them failed.
        t.failed(first[0].0);
        t.failed(first[2].0);
        assert_eq!(t.outstanding(), 2);
    }

    #[test]
    fn asked_nodes_among_the_k_closest_hold_the_end_until_slow() {
        let t0 = Instant::now();
        let mut t = traversal(K, 1..=9);
        let asked = launch(&mut t, t0);
        assert_eq!(asked.len(), K);
        for a in &asked[1..] {
            answer(&mut t, *a, &[]);
        }
        // Node 1 is still within its soft timeout: wait for it; node 9 is
        // not asked, the window of the K closest being full.
        assert!(launch(&mut t, t0).is_empty());
        assert!(!t.finished());
        t.expire(t0 + SOFT, SOFT);
        let nine = launch(&mut t, t0 + SOFT);
        assert_eq!(nine.iter().map(|x| x.1).collect::<Vec<_>>(), [9]);
        assert!(!t.finished());
        answer(&mut t, nine[0], &[]);
        assert!(t.finished(), "2..=9 answered; node 1 is slow");
    }

    #[test]
    fn with_fewer_than_k_known_slow_queries_are_waited_for_only_until_an_answer() {
        let t0 = Instant::now();
        // A small network: 3 nodes; node 2 is dead.
        let mut t = traversal(3, 1..=3);
        let asked = launch(&mut t, t0);
        answer(&mut t, asked[0], &[]);
        answer(&mut t, asked[2], &[]);
        assert!(!t.finished(), "node 2 might answer within its soft timeout");
        t.expire(t0 + SOFT, SOFT);
        assert!(t.finished(), "the others answered: not waited for");
        assert_eq!(answered(&t), [1, 3]);
        // Nothing answered yet: slow queries are all there is.
        let mut t = traversal(3, 1..=2);
        let asked = launch(&mut t, t0);
        t.expire(t0 + SOFT, SOFT);
        assert!(!t.finished());
        t.failed(asked[0].0);
        assert!(!t.finished());
        assert!(answer(&mut t, asked[1], &[node(3)]), "late");
        assert!(!t.finished(), "node 3 to ask");
        let three = launch(&mut t, t0 + SOFT);
        assert_eq!(three.len(), 1);
        answer(&mut t, three[0], &[]);
        assert!(t.finished());
        assert_eq!(answered(&t), [2, 3]);
        // An error for a node that answered does not undo its answer.
        let mut t = traversal(3, [1]);
        let a = launch(&mut t, t0)[0];
        answer(&mut t, a, &[]);
        t.failed(a.0);
        assert_eq!(answered(&t), [1]);
        // Nothing known at all: over at once.
        assert!(traversal(3, []).finished());
    }

    #[test]
    fn seeds_are_asked_at_once_and_count_against_alpha() {
        let t0 = Instant::now();
        let seeds: Vec<SocketAddr> = (0..4)
            .map(|i| SocketAddr::from(([127, 0, 0, 2], 2000 + i)))
            .collect();
        let mut t = Traversal::new(
            [0; 20],
            [0xff; 20],
            "127.0.0.1:1".parse().unwrap(),
            3,
            vec![node(5)],
            seeds.clone(),
        );
        let asked = t.launch(t0);
        assert_eq!(asked.len(), 4, "every seed, no candidate: {asked:?}");
        assert!(asked.iter().all(|(_, a)| seeds.contains(a)));
        // The seeds go slow: the candidate is asked.
        t.expire(t0 + SOFT, SOFT);
        let out = t.launch(t0 + SOFT);
        assert_eq!(out.len(), 1);
        // A seed's late answer enters it under the id it gave.
        let seed_as_node = NodeInfo {
            id: node(2).id,
            addr: seeds[3],
        };
        let req = asked.iter().find(|(_, a)| *a == seeds[3]).unwrap().0;
        assert!(t.answered(req, seed_as_node, None, &[]));
        assert_eq!(t.closest_answered(1)[0].0, seed_as_node);
        // Our own id and address are never candidates.
        t.add(NodeInfo {
            id: [0xff; 20],
            addr: "127.0.0.1:9".parse().unwrap(),
        });
        t.add(NodeInfo {
            id: [7; 20],
            addr: "127.0.0.1:1".parse().unwrap(),
        });
        assert_eq!(t.cands.len(), 2);
    }

    #[test]
    fn suspects_are_asked_without_being_waited_for() {
        let t0 = Instant::now();
        let mut t = traversal(3, 1..=12);
        for i in [1, 2, 4] {
            t.suspect(node(i).addr);
        }
        let asked = launch(&mut t, t0);
        // Suspects 1, 2 and 4 go out at once, without holding a slot: 3, 5
        // and 6 hold the three.
        assert_eq!(
            asked.iter().map(|x| x.1).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!((t.active(), t.outstanding()), (3, 6));
        assert_eq!(t.wake_at(SOFT), Some(t0 + SOFT));
        for a in &asked {
            if ![1, 2, 4].contains(&a.1) {
                answer(&mut t, *a, &[]);
            }
        }
        // Suspect 2 answers after all: used, counted as late.
        assert!(answer(&mut t, asked[1], &[]));
        while !t.finished() {
            for a in launch(&mut t, t0) {
                answer(&mut t, a, &[]);
            }
        }
        assert_eq!(answered(&t), [2, 3, 5, 6, 7, 8, 9, 10]);
        // A suspect seed holds no slot either.
        let seed: SocketAddr = "127.0.0.2:7".parse().unwrap();
        let mut t = Traversal::new(
            [0; 20],
            [0xff; 20],
            "127.0.0.1:1".parse().unwrap(),
            1,
            vec![node(1)],
            vec![seed],
        );
        t.suspect(seed);
        assert_eq!(t.launch(t0).len(), 2);
    }

    #[test]
    fn a_shorter_soft_timeout_applies_to_queries_already_out() {
        // Sent before any round trip was measured (500 ms); the first
        // answers bring it down to 200 ms for every query out.
        let t0 = Instant::now();
        let mut t = traversal(3, 1..=4);
        let asked = launch(&mut t, t0);
        let initial = Duration::from_millis(500);
        assert!(t.expire(t0 + SOFT, initial).is_empty());
        assert_eq!(t.wake_at(initial), Some(t0 + initial));
        answer(&mut t, asked[0], &[]);
        assert_eq!(t.wake_at(SOFT), Some(t0 + SOFT));
        assert_eq!(t.expire(t0 + SOFT, SOFT).len(), 2);
        assert_eq!(launch(&mut t, t0 + SOFT).len(), 1, "node 4 in their place");
    }
}
