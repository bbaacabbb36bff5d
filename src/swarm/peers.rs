//! The swarm's peers: candidate addresses (with dial backoff), live
//! connections, bans, upload (unchoke) slots and the entries other peers
//! learn through peer exchange (BEP 11).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::holepunch::HolepunchTable;
use super::{ConnId, PeerSource, Swarm};
use crate::peer::pex::{FLAG_ENCRYPTION, FLAG_HOLEPUNCH, FLAG_UTP};
use crate::peer::transport::{Kind, Route};

/// Most dialable addresses remembered per torrent.
const MAX_CANDIDATES: usize = 2000;
/// Most peers we upload to at once (unchoked).
const UNCHOKE_SLOTS: usize = 16;

/// A peer address we may connect to.
pub(super) struct Candidate {
    pub(super) source: PeerSource,
    failures: u32,
    pub(super) next_try: Instant,
    pub(super) connected: bool,
    /// False for the ephemeral address of an incoming connection.
    dialable: bool,
    /// How the last successful dial reached it: the next dial tries that
    /// first.
    pub(super) route: Option<Route>,
    /// What peer exchange said of it (BEP 11 `added.f`: prefers
    /// encryption, supports uTP, supports holepunch), a hint while no dial
    /// has worked.
    pub(super) pex_flags: u8,
    /// The connection whose `ut_pex` told us of it first: the preferred
    /// relay of a BEP 55 rendezvous when it cannot be dialled.
    pub(super) pex_from: Option<ConnId>,
    /// When we last asked a relay to introduce us to it (BEP 55).
    pub(super) rendezvous_sent: Option<Instant>,
}

/// A candidate taken for dialling.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DialTarget {
    pub addr: SocketAddr,
    pub source: PeerSource,
    /// What worked before, or what PEX said it speaks (see
    /// [`Candidate::pex_flags`]); None when nothing is known.
    pub hint: Option<Route>,
}

/// The peers part of the swarm's state.
pub(super) struct Peers {
    pub(super) candidates: HashMap<SocketAddr, Candidate>,
    /// Live connections: id → (address, waker).
    pub(super) conns: HashMap<ConnId, (SocketAddr, Arc<Notify>)>,
    /// Live connections we may tell other peers about (BEP 11): id → (an
    /// address that accepts connections, `ut_pex` flags, sent us good
    /// data). Set by the session once that address is known.
    pex: HashMap<ConnId, (SocketAddr, u8, bool)>,
    /// Listen addresses of incoming connections' peers (BEP 10 `p`), by
    /// connection: their candidates count as connected while it lives.
    pub(super) listen_addrs: HashMap<ConnId, SocketAddr>,
    /// Another address a connection's peer told us it has (BEP 7 `ipv6` in
    /// the extension handshake), by connection: a candidate that counts as
    /// connected while that connection lives, dialled after it ends.
    alt_addrs: HashMap<ConnId, SocketAddr>,
    next_conn: ConnId,
    unchoked: usize,
    /// Dials in progress (they hold a connection slot until they end).
    dialing: usize,
    /// Banned peers, by IP address: never dialled or accepted again.
    pub(super) banned: HashSet<IpAddr>,
    /// Live connections that speak `ut_holepunch` (BEP 55) and the
    /// rendezvous rate limits.
    pub(super) holepunch: HolepunchTable,
    /// The IP address of every connection id, also after it closed: blocks
    /// it sent may complete a piece later, and blame must find it.
    conn_ips: HashMap<ConnId, IpAddr>,
}

impl Default for Peers {
    fn default() -> Self {
        Peers {
            candidates: HashMap::new(),
            conns: HashMap::new(),
            pex: HashMap::new(),
            listen_addrs: HashMap::new(),
            alt_addrs: HashMap::new(),
            next_conn: 1,
            unchoked: 0,
            dialing: 0,
            banned: HashSet::new(),
            holepunch: HolepunchTable::default(),
            conn_ips: HashMap::new(),
        }
    }
}

impl Peers {
    /// Wakes every live connection's session.
    pub(super) fn wake_all(&self) {
        for (_, w) in self.conns.values() {
            w.notify_one();
        }
    }

    pub(super) fn known(&self) -> usize {
        self.candidates.len()
    }

    pub(super) fn connected(&self) -> usize {
        self.conns.len()
    }

    /// Each live connection's address (the peer's listen address when it
    /// told us) and where we learned of it (`incoming` when it dialled us
    /// and is no known candidate), sorted by address.
    pub(super) fn connected_list(&self) -> Vec<(SocketAddr, PeerSource)> {
        let mut v: Vec<(SocketAddr, PeerSource)> = self
            .conns
            .iter()
            .map(|(id, (addr, _))| {
                let addr = self.listen_addrs.get(id).copied().unwrap_or(*addr);
                let source = self
                    .candidates
                    .get(&addr)
                    .map_or(PeerSource::Incoming, |c| c.source);
                (addr, source)
            })
            .collect();
        v.sort_by_key(|(a, _)| *a);
        v
    }

    /// Candidates per source, sorted by source name.
    pub(super) fn by_source(&self) -> Vec<(String, usize)> {
        let mut by: HashMap<PeerSource, usize> = HashMap::new();
        for c in self.candidates.values() {
            *by.entry(c.source).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = by.into_iter().map(|(s, n)| (s.to_string(), n)).collect();
        v.sort();
        v
    }

    /// The IP address of each connection in `ids` (None: never known).
    pub(super) fn ips_of(&self, ids: &[ConnId]) -> Vec<Option<IpAddr>> {
        ids.iter()
            .map(|id| self.conn_ips.get(id).copied())
            .collect()
    }

    /// The connections in `ids` sent good data: PEX may pass them on.
    pub(super) fn mark_useful(&mut self, ids: &[ConnId]) {
        for id in ids {
            if let Some(e) = self.pex.get_mut(id) {
                e.2 = true;
            }
        }
    }

    /// The candidate for `addr`, added (not connected, dialable, from
    /// `source`) when new; with whether it was new. `None` for an address
    /// no one can dial (port 0, unspecified IP) or a new one past
    /// [`MAX_CANDIDATES`].
    pub(super) fn candidate_entry(
        &mut self,
        addr: SocketAddr,
        source: PeerSource,
    ) -> Option<(&mut Candidate, bool)> {
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return None;
        }
        let new = !self.candidates.contains_key(&addr);
        if new && self.candidates.len() >= MAX_CANDIDATES {
            return None;
        }
        let c = self.candidates.entry(addr).or_insert_with(|| Candidate {
            source,
            failures: 0,
            next_try: Instant::now(),
            connected: false,
            dialable: true,
            route: None,
            pex_flags: 0,
            pex_from: None,
            rendezvous_sent: None,
        });
        Some((c, new))
    }

    /// The candidate at `addr` lost its connection: dial it again after a
    /// short pause.
    fn disconnected(&mut self, addr: SocketAddr) {
        if let Some(c) = self.candidates.get_mut(&addr) {
            c.connected = false;
            c.next_try = Instant::now() + Duration::from_secs(5);
        }
    }
}

impl Swarm {
    /// Adds peer candidates from `source`; returns how many were new.
    pub fn add_peers(
        &self,
        addrs: impl IntoIterator<Item = SocketAddr>,
        source: PeerSource,
    ) -> usize {
        self.add_peers_with_flags(addrs.into_iter().map(|a| (a, 0)), source, None)
    }

    /// [`Swarm::add_peers`] with what peer exchange says of each (BEP 11
    /// `added.f` flags), kept as a dialling hint, and the connection whose
    /// `ut_pex` message named them (`from`).
    pub(crate) fn add_peers_with_flags(
        &self,
        addrs: impl IntoIterator<Item = (SocketAddr, u8)>,
        source: PeerSource,
        from: Option<ConnId>,
    ) -> usize {
        let mut st = self.lock();
        let mut new = 0;
        for (a, flags) in addrs {
            if let Some((c, is_new)) = st.peers.candidate_entry(a, source) {
                c.pex_flags |= flags & (FLAG_ENCRYPTION | FLAG_UTP | FLAG_HOLEPUNCH);
                if c.pex_from.is_none() {
                    c.pex_from = from;
                }
                if is_new {
                    new += 1;
                    tracing::debug!("{}: peer {a} from {source}", self.info_hash);
                }
            }
        }
        drop(st);
        if new > 0 {
            self.candidates_changed.notify_one();
        }
        new
    }

    /// Candidates to dial now (not connected, not banned, backoff elapsed),
    /// at most as many as free connection slots (live connections and dials
    /// in progress both take one); marks them connected and counts them as
    /// dialling until [`Swarm::dial_done`].
    pub(crate) fn take_dial_candidates(&self) -> Vec<DialTarget> {
        let mut guard = self.lock();
        let p = &mut guard.peers;
        let free = self.cfg.max_peers.saturating_sub(p.conns.len() + p.dialing);
        let now = Instant::now();
        let banned = &p.banned;
        let mut out: Vec<DialTarget> = p
            .candidates
            .iter()
            .filter(|(a, c)| {
                c.dialable && !c.connected && c.next_try <= now && !banned.contains(&a.ip())
            })
            .map(|(a, c)| DialTarget {
                addr: *a,
                source: c.source,
                hint: c.route.or_else(|| pex_hint(*a, c.pex_flags)),
            })
            .take(free)
            .collect();
        out.sort_by_key(|t| t.addr);
        for t in &out {
            if let Some(c) = p.candidates.get_mut(&t.addr) {
                c.connected = true;
            }
        }
        p.dialing += out.len();
        out
    }

    /// The dial of `addr` worked by `route`: the next dial tries it first.
    pub(crate) fn note_route(&self, addr: SocketAddr, route: Route) {
        if let Some(c) = self.lock().peers.candidates.get_mut(&addr) {
            c.route = Some(route);
        }
    }

    /// A dial taken with [`Swarm::take_dial_candidates`] ended (connected
    /// or not): its slot is free again.
    pub(crate) fn dial_done(&self) {
        let p = &mut self.lock().peers;
        p.dialing = p.dialing.saturating_sub(1);
    }

    /// A dial failed: back off exponentially (2 s, 4 s, ... up to 5 min).
    /// Not a failure when a live connection has that address (the peer
    /// dialled us meanwhile, as both sides of a BEP 55 holepunch do).
    pub(crate) fn dial_failed(&self, addr: SocketAddr) {
        let p = &mut self.lock().peers;
        if p.conns.values().any(|(a, _)| *a == addr) {
            return;
        }
        if let Some(c) = p.candidates.get_mut(&addr) {
            c.connected = false;
            c.failures += 1;
            let secs = 2u64.saturating_pow(c.failures.min(8)).min(300);
            c.next_try = Instant::now() + Duration::from_secs(secs);
        }
    }

    /// Waits until new candidates arrive or a connection ends (a slot may
    /// be free).
    pub(crate) async fn candidates_changed(&self) {
        self.candidates_changed.notified().await
    }

    /// Registers a live connection; returns its id and waker, or None when
    /// the connection limit is reached or the address is banned.
    ///
    /// A connection to an address we already have a connection to is
    /// refused, except an incoming one: a peer that dials us again from the
    /// very address (IP and port) of a live connection has given that one
    /// up. Over uTP (BEP 29) a peer's connections all come from its one UDP
    /// port: Transmission 3.00 closes its connection once it has the
    /// metadata and dials again half a second later, often before its
    /// `ST_FIN` reached us; refusing the new connection cost 10 s (its
    /// reconnect backoff after a fruitless connection), then minutes. So
    /// the new connection replaces the old one, which is woken to close
    /// (it sees [`Swarm::is_live`] false). Over TCP the same address means
    /// the old socket is dead already.
    pub(crate) fn register_conn(
        &self,
        addr: SocketAddr,
        source: PeerSource,
    ) -> Option<(ConnId, Arc<Notify>)> {
        let p = &mut self.lock().peers;
        if p.banned.contains(&addr.ip()) {
            return None;
        }
        let old: Vec<ConnId> = p
            .conns
            .iter()
            .filter(|(_, (a, _))| *a == addr)
            .map(|(id, _)| *id)
            .collect();
        if !old.is_empty() && source != PeerSource::Incoming {
            return None;
        }
        if p.conns.len() - old.len() >= self.cfg.max_peers {
            return None;
        }
        let c = p.candidates.entry(addr).or_insert_with(|| Candidate {
            source,
            failures: 0,
            next_try: Instant::now(),
            connected: true,
            dialable: source != PeerSource::Incoming,
            route: None,
            pex_flags: 0,
            pex_from: None,
            rendezvous_sent: None,
        });
        c.connected = true;
        c.failures = 0;
        let id = p.next_conn;
        p.next_conn += 1;
        for o in old {
            // The same peer: what we learned of it stays connected.
            if let Some(a) = p.listen_addrs.remove(&o) {
                p.listen_addrs.insert(id, a);
            }
            if let Some(a) = p.alt_addrs.remove(&o) {
                p.alt_addrs.insert(id, a);
            }
            if let Some((_, w)) = p.conns.remove(&o) {
                w.notify_one();
            }
        }
        let waker = Arc::new(Notify::new());
        p.conns.insert(id, (addr, waker.clone()));
        if p.conn_ips.len() >= 100_000 {
            p.conn_ips.clear();
        }
        p.conn_ips.insert(id, addr.ip());
        Some((id, waker))
    }

    /// The peer of incoming connection `id` listens on `addr` (BEP 10 `p`):
    /// a peer to dial, but not while this connection lives, so two clients
    /// that both dial never keep two connections to each other.
    pub(crate) fn note_listen_addr(&self, id: ConnId, addr: SocketAddr) {
        let p = &mut self.lock().peers;
        if !p.conns.contains_key(&id) {
            return;
        }
        if let Some((c, _)) = p.candidate_entry(addr, PeerSource::Incoming) {
            c.connected = true;
            p.listen_addrs.insert(id, addr);
        }
    }

    /// The peer of connection `id` also has `addr` (BEP 7: the `ipv6` of
    /// its extension handshake over IPv4): a candidate learned from a peer
    /// (dialled like a PEX one), but not while this connection lives, so
    /// a peer is not connected twice. Returns true when it is new; one
    /// such address per connection.
    pub(crate) fn note_alt_addr(&self, id: ConnId, addr: SocketAddr) -> bool {
        let p = &mut self.lock().peers;
        if !p.conns.contains_key(&id) || p.alt_addrs.contains_key(&id) {
            return false;
        }
        match p.candidate_entry(addr, PeerSource::Pex) {
            Some((c, _)) if !c.connected => {
                c.connected = true;
                p.alt_addrs.insert(id, addr);
                true
            }
            _ => false,
        }
    }

    /// A connection ended: its requests go back to the picker, its upload
    /// slot (if `was_unchoked`) is free again.
    pub(crate) fn unregister_conn(&self, id: ConnId, was_unchoked: bool) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let p = &mut st.peers;
        p.pex.remove(&id);
        p.holepunch.remove(id);
        if let Some(addr) = p.listen_addrs.remove(&id) {
            p.disconnected(addr);
        }
        if let Some(addr) = p.alt_addrs.remove(&id) {
            p.disconnected(addr);
        }
        if let Some((addr, _)) = p.conns.remove(&id) {
            p.disconnected(addr);
        }
        if was_unchoked {
            p.unchoked = p.unchoked.saturating_sub(1);
        }
        if let Some(picker) = st.picker.as_mut() {
            picker.release(id);
        }
        drop(guard);
        self.wake_peers();
        self.candidates_changed.notify_one();
    }

    /// Records (or updates) the reachable address and `ut_pex` flags of
    /// live connection `id`, for peer exchange (BEP 11).
    pub(crate) fn set_pex_entry(&self, id: ConnId, addr: SocketAddr, flags: u8) {
        let p = &mut self.lock().peers;
        if p.conns.contains_key(&id) {
            let useful = p.pex.get(&id).is_some_and(|e| e.2);
            p.pex.insert(id, (addr, flags, useful));
        }
    }

    /// The reachable addresses and `ut_pex` flags of the live connections
    /// (BEP 11 `added`), sorted by address. Only peers that sent us blocks
    /// of a piece that verified, and are not banned, are passed on: a peer
    /// sending bad data, or one that never serves anything, is not
    /// advertised to the swarm.
    pub(crate) fn pex_peers(&self) -> Vec<(SocketAddr, u8)> {
        let st = self.lock();
        let p = &st.peers;
        let mut v: Vec<(SocketAddr, u8)> = p
            .pex
            .values()
            .filter(|(a, _, useful)| *useful && !p.banned.contains(&a.ip()))
            .map(|(a, f, _)| (*a, *f))
            .collect();
        v.sort();
        v
    }

    /// Takes an upload slot for a peer that is interested; false when all
    /// [`UNCHOKE_SLOTS`] are taken.
    pub(crate) fn take_unchoke_slot(&self) -> bool {
        let p = &mut self.lock().peers;
        if p.unchoked >= UNCHOKE_SLOTS {
            return false;
        }
        p.unchoked += 1;
        true
    }

    /// Gives back a slot taken with [`Swarm::take_unchoke_slot`].
    pub(crate) fn release_unchoke_slot(&self) {
        let p = &mut self.lock().peers;
        p.unchoked = p.unchoked.saturating_sub(1);
    }

    /// `addr` turned out to be our own listen address: it is never dialled
    /// again (and not counted as a failure).
    pub(crate) fn forget_self(&self, addr: SocketAddr) {
        if let Some(c) = self.lock().peers.candidates.get_mut(&addr) {
            c.connected = false;
            c.dialable = false;
        }
    }

    /// Bans a peer (bad data, wrong metadata) by IP address: its live
    /// connections are closed (their sessions see [`Swarm::is_banned`] when
    /// woken) and it is never dialled or accepted again.
    pub(crate) fn ban(&self, addr: SocketAddr, why: &str) {
        self.ban_ip(addr.ip(), why);
    }

    pub(super) fn ban_ip(&self, ip: IpAddr, why: &str) {
        let st = &mut *self.lock();
        let p = &mut st.peers;
        if !p.banned.insert(ip) {
            return;
        }
        tracing::warn!("{}: banning peer {ip}: {why}", self.info_hash);
        // Its blocks in pieces still being assembled are suspect: drop them.
        let ids: Vec<ConnId> = p
            .conn_ips
            .iter()
            .filter(|(_, i)| **i == ip)
            .map(|(id, _)| *id)
            .collect();
        if let Some(picker) = st.picker.as_mut() {
            picker.discard_blocks_from(&ids);
        }
        for (a, w) in p.conns.values() {
            if a.ip() == ip {
                w.notify_one();
            }
        }
    }

    /// Whether peers at `ip` are banned.
    pub(crate) fn is_banned(&self, ip: IpAddr) -> bool {
        self.lock().peers.banned.contains(&ip)
    }

    /// True while connection `id` is registered: false once it ended or a
    /// new connection from the same address replaced it
    /// ([`Swarm::register_conn`]).
    pub(crate) fn is_live(&self, id: ConnId) -> bool {
        self.lock().peers.conns.contains_key(&id)
    }

    #[cfg(test)]
    pub(super) fn candidate_state(&self, addr: SocketAddr) -> Option<(bool, bool)> {
        let st = self.lock();
        let c = st.peers.candidates.get(&addr)?;
        Some((c.connected, c.dialable))
    }
}

/// The dialling hint that BEP 11 `added.f` flags give for `addr`, while
/// no dial has told us what works: `0x04` says the peer supports uTP, and
/// `0x01` that it prefers encryption. "Supports uTP" is a capability, not
/// a route: a near peer ([`crate::peer::near`]) still gets the transport
/// order by nearness (TCP first), so it has no kind hint then.
fn pex_hint(addr: SocketAddr, flags: u8) -> Option<Route> {
    let utp = flags & FLAG_UTP != 0;
    let mse = (flags & FLAG_ENCRYPTION != 0).then_some(crate::peer::mse::Crypto::Rc4);
    if utp && crate::peer::near::is_near(addr.ip()) || flags & (FLAG_UTP | FLAG_ENCRYPTION) == 0 {
        return None;
    }
    Some(Route {
        kind: if utp { Kind::Utp } else { Kind::Tcp },
        mse,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pex_utp_flag_orders_far_peers_only() {
        let far: SocketAddr = "203.0.113.5:6881".parse().unwrap();
        let near: SocketAddr = "127.0.0.1:6881".parse().unwrap();
        assert_eq!(pex_hint(far, FLAG_UTP).map(|r| r.kind), Some(Kind::Utp));
        assert_eq!(
            pex_hint(near, FLAG_UTP),
            None,
            "near: TCP first by nearness"
        );
        let enc = pex_hint(far, FLAG_ENCRYPTION).unwrap();
        assert_eq!((enc.kind, enc.mse.is_some()), (Kind::Tcp, true));
        assert_eq!(pex_hint(far, 0), None);
    }
}
