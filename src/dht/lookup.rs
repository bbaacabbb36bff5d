//! Iterative lookups (BEP 5; Kademlia's node lookup): query the closest known
//! nodes to a target, α at a time, learn closer nodes from their answers, and
//! stop when the [`K`] closest nodes that answer have all been asked, or when
//! the whole-lookup bound passes. Answers are yielded as they arrive so
//! callers can stream results (first peers before the lookup ends).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Inner;
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
    New,
    InFlight,
    Done,
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

type Answer = (Option<Key>, SocketAddr, Result<Response, RpcError>);

/// One iterative lookup in progress.
pub(crate) struct Lookup {
    inner: Arc<Inner>,
    target: Id,
    query: Query,
    cands: BTreeMap<Key, Cand>,
    seeds: Vec<SocketAddr>,
    inflight: JoinSet<Answer>,
    deadline: Instant,
    alpha: usize,
    own: Id,
}

impl Lookup {
    /// Starts a lookup for `target` sending `query` to each node, seeded with
    /// the closest nodes of our table; with `use_seeds` (or a thin table) the
    /// bootstrap seeds are queried too.
    pub fn new(inner: &Arc<Inner>, target: Id, query: Query, use_seeds: bool) -> Lookup {
        let shared = &inner.shared;
        let (own, closest, seeds) = {
            let st = shared.lock();
            let closest = st.table.closest(&target, 2 * K);
            let seeds = if use_seeds || closest.len() < K {
                st.seeds.iter().take(MAX_SEEDS).copied().collect()
            } else {
                Vec::new()
            };
            (st.table.own_id(), closest, seeds)
        };
        let mut l = Lookup {
            inner: inner.clone(),
            target,
            query,
            cands: BTreeMap::new(),
            seeds,
            inflight: JoinSet::new(),
            deadline: Instant::now() + shared.cfg.lookup_timeout,
            alpha: shared.cfg.alpha.max(1),
            own,
        };
        for n in closest {
            l.add(n);
        }
        l
    }

    fn add(&mut self, n: NodeInfo) {
        if n.id == self.own || n.addr.port() == 0 || n.addr == self.inner.shared.local_addr {
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

    fn spawn(&mut self, key: Option<Key>, addr: SocketAddr) {
        let inner = self.inner.clone();
        let q = self.query.clone();
        self.inflight
            .spawn(async move { (key, addr, inner.query(addr, q).await) });
    }

    /// Sends queries while fewer than α are in flight, to the closest
    /// not-yet-asked nodes among the K closest that have not failed.
    fn launch(&mut self) {
        while let Some(s) = self.seeds.pop() {
            self.spawn(None, s);
        }
        while self.inflight.len() < self.alpha {
            let pick = self
                .cands
                .iter()
                .filter(|(_, c)| c.state != CandState::Failed)
                .take(K)
                .find(|(_, c)| c.state == CandState::New)
                .map(|(k, c)| (*k, c.info.addr));
            let Some((key, addr)) = pick else { break };
            if let Some(c) = self.cands.get_mut(&key) {
                c.state = CandState::InFlight;
            }
            self.spawn(Some(key), addr);
        }
    }

    /// True when the K closest live candidates have all answered (or, with
    /// fewer known, when nothing is in flight).
    fn finished(&self) -> bool {
        let mut n = 0;
        for c in self.cands.values().filter(|c| c.state != CandState::Failed) {
            if c.state != CandState::Done {
                return false;
            }
            n += 1;
            if n == K {
                return true;
            }
        }
        self.inflight.is_empty()
    }

    /// The next answer, as `(responder, response)`; `None` when the lookup
    /// is over (converged, exhausted, or past the whole-lookup bound).
    pub async fn next(&mut self) -> Option<(NodeInfo, Response)> {
        loop {
            self.launch();
            if self.finished() {
                self.inflight.abort_all();
                return None;
            }
            let joined =
                match tokio::time::timeout_at(self.deadline, self.inflight.join_next()).await {
                    Err(_) => {
                        self.inflight.abort_all();
                        self.seeds.clear();
                        return None;
                    }
                    Ok(None) => return None,
                    Ok(Some(Err(_))) => continue,
                    Ok(Some(Ok(a))) => a,
                };
            let (key, addr, res) = joined;
            match res {
                Ok(resp) => {
                    if let Some(k) = key {
                        self.cands.remove(&k);
                    }
                    let info = NodeInfo { id: resp.id, addr };
                    let nkey = (distance(&resp.id, &self.target), addr);
                    self.cands.insert(
                        nkey,
                        Cand {
                            info,
                            state: CandState::Done,
                            token: resp.token.clone(),
                        },
                    );
                    for n in &resp.nodes {
                        self.add(*n);
                    }
                    return Some((info, resp));
                }
                Err(_) => {
                    if let Some(k) = key
                        && let Some(c) = self.cands.get_mut(&k)
                    {
                        c.state = CandState::Failed;
                    }
                }
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
        self.cands
            .values()
            .filter(|c| c.state == CandState::Done)
            .take(n)
            .map(|c| (c.info, c.token.clone()))
            .collect()
    }
}
