//! NAT holepunching in the swarm (BEP 55): which live connections speak
//! `ut_holepunch` and how to reach their sessions, the three roles, and
//! the limits on rendezvous we relay.
//!
//! - Initiator ([`Swarm::maybe_rendezvous`]): a peer learned by peer
//!   exchange (BEP 11) could not be dialled; if it says it speaks
//!   holepunch (`added.f` 0x08) or the peer that told us of it does, that
//!   peer (else any other connected one that speaks it) is asked to
//!   introduce us, at most once a minute per target.
//! - Relay ([`Swarm::relay_rendezvous`]): a connected peer asks to be
//!   introduced to another connected peer; both get a `connect` with the
//!   other's address, or the asker gets an `error`.
//! - Target, and initiator once introduced ([`Swarm::holepunch_connect`]):
//!   the peer named in a `connect` is dialled at once, over uTP first.
//!
//! Every table here is bounded: one entry per live connection (at most
//! `max_peers`), each with at most [`RENDEZVOUS_PER_PEER`] timestamps, and
//! at most [`RENDEZVOUS_GLOBAL`] more for the whole swarm.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{ConnId, PeerSource, Swarm};
use crate::peer::holepunch::{HolepunchError, HolepunchMsg};
use crate::peer::mse::Crypto;
use crate::peer::pex::{FLAG_HOLEPUNCH, FLAG_UTP};
use crate::peer::transport::{Kind, Route};

/// Most rendezvous one peer may ask us to relay per [`RENDEZVOUS_WINDOW`];
/// more are ignored.
pub(crate) const RENDEZVOUS_PER_PEER: usize = 10;
/// Most rendezvous we relay for the whole swarm per [`RENDEZVOUS_WINDOW`].
pub(crate) const RENDEZVOUS_GLOBAL: usize = 50;
/// The window of the rendezvous limits.
pub(crate) const RENDEZVOUS_WINDOW: Duration = Duration::from_secs(60);
/// Shortest time between two rendezvous we send for one target.
pub(crate) const RENDEZVOUS_AGAIN: Duration = Duration::from_secs(60);
/// Messages waiting for one session to send them to its peer; more are
/// dropped (a peer that does not read holds nothing of ours).
pub(crate) const OUTBOX: usize = 8;

/// Hands holepunch messages to a session, which sends them to its peer.
pub(crate) type Outbox = mpsc::Sender<HolepunchMsg>;

/// A live connection whose peer speaks `ut_holepunch`.
struct Speaker {
    /// The connection's remote address: for uTP, the address and port its
    /// datagrams come from (what a NAT router mapped), which is where the
    /// other side of an introduction must send its own.
    conn_addr: SocketAddr,
    /// Where it listens (BEP 10 `p`), when it told us.
    listen_addr: Option<SocketAddr>,
    utp: bool,
    outbox: Outbox,
    /// When it asked us to relay, within the last window.
    asked: VecDeque<Instant>,
    /// When it told us to dial someone, within the last window.
    connects: VecDeque<Instant>,
}

impl Speaker {
    fn is(&self, addr: SocketAddr) -> bool {
        self.conn_addr == addr || self.listen_addr == Some(addr)
    }

    /// The address a peer introduced to it should dial: where its uTP
    /// datagrams come from, or its listen address for TCP.
    fn dial_addr(&self) -> SocketAddr {
        if self.utp {
            self.conn_addr
        } else {
            self.listen_addr.unwrap_or(self.conn_addr)
        }
    }
}

/// The swarm's holepunch state (inside its peers' lock).
#[derive(Default)]
pub(crate) struct HolepunchTable {
    speakers: HashMap<ConnId, Speaker>,
    /// Rendezvous relayed for the swarm within the last window.
    relayed: VecDeque<Instant>,
}

impl HolepunchTable {
    /// Connection `id` ended.
    pub(super) fn remove(&mut self, id: ConnId) {
        self.speakers.remove(&id);
    }
}

/// Forgets timestamps older than the window; whether another one fits
/// under `limit` (then it is recorded).
fn take_slot(times: &mut VecDeque<Instant>, limit: usize, now: Instant) -> bool {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= RENDEZVOUS_WINDOW)
    {
        times.pop_front();
    }
    if times.len() >= limit {
        return false;
    }
    times.push_back(now);
    true
}

impl Swarm {
    /// The peer of live connection `id` speaks `ut_holepunch`: it may relay
    /// for us and be introduced to others. `addr` is the connection's
    /// remote address, `utp` whether it runs over uTP, `outbox` reaches its
    /// session.
    pub(crate) fn holepunch_register(
        &self,
        id: ConnId,
        addr: SocketAddr,
        utp: bool,
        outbox: Outbox,
    ) {
        let p = &mut self.lock().peers;
        if !p.conns.contains_key(&id) {
            return;
        }
        let listen_addr = p.listen_addrs.get(&id).copied();
        p.holepunch.speakers.insert(
            id,
            Speaker {
                conn_addr: addr,
                listen_addr,
                utp,
                outbox,
                asked: VecDeque::new(),
                connects: VecDeque::new(),
            },
        );
    }

    /// The peer of connection `id` no longer speaks `ut_holepunch`.
    pub(crate) fn holepunch_unregister(&self, id: ConnId) {
        self.lock().peers.holepunch.remove(id);
    }

    /// The peer of connection `id` listens at `addr` (BEP 10 `p`).
    pub(crate) fn holepunch_listen_addr(&self, id: ConnId, addr: SocketAddr) {
        if let Some(s) = self.lock().peers.holepunch.speakers.get_mut(&id) {
            s.listen_addr = Some(addr);
        }
    }

    /// Relay: connection `from` asks to be introduced to `target` (BEP 55
    /// rendezvous). On success the target's session is handed a `connect`
    /// with `from`'s address, and the `connect` for `from` is returned;
    /// otherwise the `error` to send back. `None`: over a rate limit
    /// ([`RENDEZVOUS_PER_PEER`], [`RENDEZVOUS_GLOBAL`]), or `from` does not
    /// speak holepunch: nothing is sent.
    pub(crate) fn relay_rendezvous(
        &self,
        from: ConnId,
        target: SocketAddr,
    ) -> Option<HolepunchMsg> {
        let now = Instant::now();
        let mut guard = self.lock();
        let p = &mut guard.peers;
        let hp = &mut p.holepunch;
        let asker = hp.speakers.get_mut(&from)?;
        if !take_slot(&mut asker.asked, RENDEZVOUS_PER_PEER, now) {
            tracing::debug!(
                "{}: rendezvous from {} over its limit; ignored",
                self.info_hash,
                asker.conn_addr
            );
            return None;
        }
        let (from_addr, from_dial) = (asker.conn_addr, asker.dial_addr());
        if asker.is(target) {
            return Some(HolepunchMsg::error(target, HolepunchError::NoSelf));
        }
        if !take_slot(&mut hp.relayed, RENDEZVOUS_GLOBAL, now) {
            tracing::debug!(
                "{}: rendezvous limit of the swarm reached; {from_addr} ignored",
                self.info_hash
            );
            return None;
        }
        let found = hp
            .speakers
            .iter()
            .find(|(id, s)| **id != from && s.is(target))
            .map(|(_, s)| s.outbox.clone());
        let why = match found {
            Some(outbox) => {
                if outbox.try_send(HolepunchMsg::connect(from_dial)).is_err() {
                    return Some(HolepunchMsg::error(target, HolepunchError::NotConnected));
                }
                tracing::info!(
                    "{}: holepunch: introducing {from_addr} and {target} (BEP 55 rendezvous relayed)",
                    self.info_hash
                );
                return Some(HolepunchMsg::connect(target));
            }
            None => {
                let connected = p.conns.iter().any(|(id, (a, _))| {
                    *id != from && (*a == target || p.listen_addrs.get(id) == Some(&target))
                });
                if connected {
                    HolepunchError::NoSupport
                } else if p.candidates.contains_key(&target) {
                    HolepunchError::NotConnected
                } else {
                    HolepunchError::NoSuchPeer
                }
            }
        };
        tracing::debug!(
            "{}: rendezvous from {from_addr} for {target}: {why}",
            self.info_hash
        );
        Some(HolepunchMsg::error(target, why))
    }

    /// Initiator: the dial of `addr` failed. When it was learned by peer
    /// exchange and may be reached by holepunch (its `added.f` says so, or
    /// the peer that told us of it speaks holepunch), asks a relay to
    /// introduce us: the peer that told us of it if it speaks holepunch,
    /// else the first other one that does. At most once per
    /// [`RENDEZVOUS_AGAIN`] per target. Returns the relay's address when a
    /// rendezvous went out.
    pub(crate) fn maybe_rendezvous(&self, addr: SocketAddr) -> Option<SocketAddr> {
        let now = Instant::now();
        let mut guard = self.lock();
        let p = &mut guard.peers;
        let c = p.candidates.get_mut(&addr)?;
        if c.source != PeerSource::Pex
            || c.connected
            || c.rendezvous_sent
                .is_some_and(|t| now.duration_since(t) < RENDEZVOUS_AGAIN)
        {
            return None;
        }
        let introducer = c
            .pex_from
            .filter(|id| p.holepunch.speakers.contains_key(id));
        if c.pex_flags & FLAG_HOLEPUNCH == 0 && introducer.is_none() {
            return None;
        }
        let relay = introducer
            .and_then(|id| p.holepunch.speakers.get(&id))
            .or_else(|| {
                let mut others: Vec<&Speaker> = p
                    .holepunch
                    .speakers
                    .values()
                    .filter(|s| !s.is(addr))
                    .collect();
                others.sort_by_key(|s| s.conn_addr);
                others.into_iter().next()
            })?;
        if relay
            .outbox
            .try_send(HolepunchMsg::rendezvous(addr))
            .is_err()
        {
            return None;
        }
        c.rendezvous_sent = Some(now);
        let relay_addr = relay.conn_addr;
        drop(guard);
        tracing::info!(
            "{}: holepunch: cannot dial {addr}; asking {relay_addr} to introduce us (BEP 55 rendezvous)",
            self.info_hash
        );
        Some(relay_addr)
    }

    /// Target or introduced initiator: the peer of connection `from`, a
    /// relay, says to dial `peer` (BEP 55 connect). It becomes a candidate
    /// due now, over uTP first (a simultaneous open through both NAT
    /// routers), with source [`PeerSource::Holepunch`]. False when `from`
    /// does not speak holepunch or sent more than [`RENDEZVOUS_PER_PEER`]
    /// connects in the window (no peer makes us dial addresses at will),
    /// or `peer` is banned, us, already connected or being dialled, or an
    /// address no one can dial.
    pub(crate) fn holepunch_connect(&self, from: ConnId, peer: SocketAddr) -> bool {
        let mut guard = self.lock();
        let p = &mut guard.peers;
        let Some(relay) = p.holepunch.speakers.get_mut(&from) else {
            return false;
        };
        if !take_slot(&mut relay.connects, RENDEZVOUS_PER_PEER, Instant::now()) {
            return false;
        }
        if p.banned.contains(&peer.ip())
            || self.cfg.reach.is_us(&peer)
            || p.conns.values().any(|(a, _)| *a == peer)
        {
            return false;
        }
        let Some((c, _)) = p.candidate_entry(peer, PeerSource::Holepunch) else {
            return false;
        };
        if c.connected {
            return false;
        }
        c.source = PeerSource::Holepunch;
        c.pex_flags |= FLAG_UTP;
        c.route = Some(Route {
            kind: Kind::Utp,
            mse: c.route.and_then(|r| r.mse).filter(|m| *m == Crypto::Rc4),
        });
        c.next_try = Instant::now();
        drop(guard);
        self.candidates_changed.notify_one();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::holepunch::HolepunchKind;
    use crate::swarm::tests::swarm;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A live connection at `addr` that speaks holepunch, with its outbox.
    fn speaker(s: &Swarm, addr: &str, utp: bool) -> (ConnId, mpsc::Receiver<HolepunchMsg>) {
        let (id, _) = s.register_conn(a(addr), PeerSource::Cli).unwrap();
        let (tx, rx) = mpsc::channel(OUTBOX);
        s.holepunch_register(id, a(addr), utp, tx);
        (id, rx)
    }

    #[test]
    fn relay_introduces_connected_speakers_and_refuses_the_rest() {
        let s = swarm(None);
        let (ia, mut ra) = speaker(&s, "203.0.113.11:40000", true);
        let (_ib, mut rb) = speaker(&s, "203.0.113.12:50000", true);
        // a TCP speaker is introduced at its listen address
        let (ic, mut rc) = speaker(&s, "203.0.113.13:61000", false);
        s.holepunch_listen_addr(ic, a("203.0.113.13:6881"));
        s.register_conn(a("198.51.100.5:1"), PeerSource::Cli)
            .unwrap();
        s.add_peers([a("198.51.100.6:1")], PeerSource::Dht);

        let target = a("203.0.113.12:50000");
        assert_eq!(
            s.relay_rendezvous(ia, target),
            Some(HolepunchMsg::connect(target))
        );
        assert_eq!(
            rb.try_recv().unwrap(),
            HolepunchMsg::connect(a("203.0.113.11:40000"))
        );
        assert_eq!(
            s.relay_rendezvous(ic, target),
            Some(HolepunchMsg::connect(target))
        );
        assert_eq!(
            rb.try_recv().unwrap(),
            HolepunchMsg::connect(a("203.0.113.13:6881"))
        );
        // by listen address too
        assert_eq!(
            s.relay_rendezvous(ia, a("203.0.113.13:6881")),
            Some(HolepunchMsg::connect(a("203.0.113.13:6881")))
        );
        assert_eq!(rc.try_recv().unwrap().kind, HolepunchKind::Connect);
        for (t, why) in [
            ("203.0.113.11:40000", HolepunchError::NoSelf),
            ("198.51.100.5:1", HolepunchError::NoSupport),
            ("198.51.100.6:1", HolepunchError::NotConnected),
            ("192.0.2.1:9", HolepunchError::NoSuchPeer),
        ] {
            assert_eq!(
                s.relay_rendezvous(ia, a(t)),
                Some(HolepunchMsg::error(a(t), why)),
                "{t}"
            );
        }
        assert!(ra.try_recv().is_err(), "nothing sent to the asker's outbox");
        // a peer that does not speak holepunch gets no answer
        let (other, _) = s
            .register_conn(a("198.51.100.7:1"), PeerSource::Cli)
            .unwrap();
        assert_eq!(s.relay_rendezvous(other, target), None);
    }

    #[test]
    fn relay_limits_rendezvous_per_peer_and_per_swarm() {
        let s = swarm(None);
        let (ia, _ra) = speaker(&s, "203.0.113.11:40000", true);
        let (_ib, _rb) = speaker(&s, "203.0.113.12:50000", true);
        let target = a("192.0.2.1:9");
        for _ in 0..RENDEZVOUS_PER_PEER {
            assert!(s.relay_rendezvous(ia, target).is_some());
        }
        assert_eq!(s.relay_rendezvous(ia, target), None, "per-peer limit");
        // the swarm-wide limit: more askers, each under its own limit
        let mut answered = RENDEZVOUS_PER_PEER;
        for n in 0..8 {
            let (id, _r) = speaker(&s, &format!("203.0.113.{}:1", 20 + n), true);
            for _ in 0..RENDEZVOUS_PER_PEER {
                answered += usize::from(s.relay_rendezvous(id, target).is_some());
            }
        }
        assert_eq!(answered, RENDEZVOUS_GLOBAL);
    }

    #[test]
    fn initiator_asks_the_peer_that_told_it_once_a_minute() {
        let s = swarm(None);
        let (ir, mut rr) = speaker(&s, "198.51.100.10:6881", true);
        let (_io, mut ro) = speaker(&s, "198.51.100.11:6881", true);
        let t = a("203.0.113.12:50000");
        s.add_peers_with_flags([(t, FLAG_HOLEPUNCH)], PeerSource::Pex, Some(ir));
        // the same peer named later by another connection changes nothing
        s.add_peers_with_flags([(t, 0)], PeerSource::Pex, None);
        assert!(s.take_dial_candidates().iter().any(|c| c.addr == t));
        s.dial_done();
        s.dial_failed(t);
        assert_eq!(s.maybe_rendezvous(t), Some(a("198.51.100.10:6881")));
        assert_eq!(rr.try_recv().unwrap(), HolepunchMsg::rendezvous(t));
        assert!(ro.try_recv().is_err());
        assert_eq!(s.maybe_rendezvous(t), None, "asked already");

        // no holepunch flag and a non-speaking introducer: no rendezvous
        let (plain, _) = s
            .register_conn(a("198.51.100.12:1"), PeerSource::Cli)
            .unwrap();
        let u = a("203.0.113.13:1");
        s.add_peers_with_flags([(u, FLAG_UTP)], PeerSource::Pex, Some(plain));
        assert_eq!(s.maybe_rendezvous(u), None);
        // with the flag, another speaker relays
        s.add_peers_with_flags([(u, FLAG_HOLEPUNCH)], PeerSource::Pex, None);
        assert_eq!(s.maybe_rendezvous(u), Some(a("198.51.100.10:6881")));
        // peers not from PEX are never holepunched
        let v = a("203.0.113.14:1");
        s.add_peers_with_flags([(v, FLAG_HOLEPUNCH)], PeerSource::Dht, Some(ir));
        assert_eq!(s.maybe_rendezvous(v), None);
    }

    #[test]
    fn connect_makes_a_due_utp_candidate_once() {
        let s = swarm(None);
        let (r, _rr) = speaker(&s, "198.51.100.10:6881", true);
        let x = a("203.0.113.11:40000");
        assert!(s.holepunch_connect(r, x));
        let due = s.take_dial_candidates();
        let c = due.iter().find(|c| c.addr == x).expect("due now");
        assert_eq!(c.source, PeerSource::Holepunch);
        assert_eq!(c.hint.map(|r| r.kind), Some(Kind::Utp));
        assert!(!s.holepunch_connect(r, x), "being dialled");
        s.dial_done();
        s.register_conn(x, PeerSource::Holepunch).unwrap();
        assert!(!s.holepunch_connect(r, x), "connected");
        // only from a peer that speaks holepunch, and not at will
        let (plain, _) = s
            .register_conn(a("198.51.100.5:1"), PeerSource::Cli)
            .unwrap();
        assert!(!s.holepunch_connect(plain, a("203.0.113.12:1")));
        let mut n = 3; // three connects from `r` above
        while s.holepunch_connect(r, a(&format!("192.0.2.1:{}", 100 + n))) {
            n += 1;
            s.take_dial_candidates();
            assert!(n <= RENDEZVOUS_PER_PEER, "no limit");
        }
        assert_eq!(n, RENDEZVOUS_PER_PEER);
    }

    #[test]
    fn slots_are_bounded_and_expire() {
        let t0 = Instant::now();
        let mut q = VecDeque::new();
        for _ in 0..3 {
            assert!(take_slot(&mut q, 3, t0));
        }
        assert!(!take_slot(&mut q, 3, t0 + Duration::from_secs(59)));
        assert_eq!(q.len(), 3);
        assert!(take_slot(&mut q, 3, t0 + RENDEZVOUS_WINDOW));
        assert_eq!(q.len(), 1);
    }
}
