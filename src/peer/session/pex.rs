//! Peer exchange (BEP 11) on this connection: the peers it tells us about
//! become candidates; we tell it about our other good peers, at most once
//! a minute. Private torrents (BEP 27) exchange nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Session, SessionError, send};
use crate::peer::conn::PeerWriter;
use crate::peer::pex::{self as pex_wire, PexMessage};
use crate::peer::wire::Message;
use crate::swarm::PeerSource;

/// Shortest time between two `ut_pex` messages we send on one connection
/// (BEP 11: at most one a minute).
const PEX_INTERVAL: Duration = Duration::from_secs(60);
/// Most `added` and most `dropped` entries in one `ut_pex` message we send,
/// and most `added` entries we take from one we receive (BEP 11: 50).
const PEX_MAX_PEERS: usize = 50;
/// `ut_pex` messages arriving sooner than this after the previous one are
/// ignored (a flood).
const PEX_MIN_RECV_GAP: Duration = Duration::from_secs(20);

impl Session {
    /// A received `ut_pex` message (BEP 11): its `added` peers (at most
    /// [`PEX_MAX_PEERS`], never the sender itself) become candidates.
    /// Malformed or too frequent messages are ignored, not fatal.
    pub(super) fn on_pex(&mut self, payload: &[u8]) {
        let now = Instant::now();
        if self.is_private() {
            return;
        }
        if self
            .last_pex_recv
            .is_some_and(|t| now.duration_since(t) < PEX_MIN_RECV_GAP)
        {
            tracing::debug!(
                "{}: {} sends ut_pex too often; ignored",
                self.swarm.info_hash,
                self.addr
            );
            return;
        }
        self.last_pex_recv = Some(now);
        let msg = match PexMessage::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("{}: {}: ut_pex: {e}", self.swarm.info_hash, self.addr);
                return;
            }
        };
        let own = self.pex_addr;
        let port = self.swarm.cfg.listen_port;
        // Our own listen address comes back when they know us.
        let is_us = |a: &SocketAddr| {
            (a.port() == port && (a.ip().is_loopback() || Some(a.ip()) == self.our_ip))
                || self.swarm.cfg.reach.is_us(a)
        };
        let added: Vec<(SocketAddr, u8)> = msg
            .added
            .iter()
            .copied()
            .filter(|(a, _)| *a != self.addr && Some(*a) != own && !is_us(a))
            .take(PEX_MAX_PEERS)
            .collect();
        let n =
            self.swarm
                .add_peers_with_flags(added.iter().copied(), PeerSource::Pex, Some(self.id));
        tracing::info!(
            "{}: ut_pex from {}: {} added ({n} new), {} dropped",
            self.swarm.info_hash,
            self.addr,
            msg.added.len(),
            msg.dropped.len()
        );
    }

    /// Sends a `ut_pex` message (BEP 11) when they speak it, the last one
    /// went out at least [`PEX_INTERVAL`] ago, and the set of our other
    /// connected peers changed since: `added` peers connected since the
    /// last message, `dropped` peers gone since, at most [`PEX_MAX_PEERS`]
    /// each, never their own address.
    pub(super) async fn maybe_send_pex(&mut self, w: &mut PeerWriter) -> Result<(), SessionError> {
        let Some(id) = self.their_ut_pex else {
            return Ok(());
        };
        let now = Instant::now();
        if self
            .last_pex_sent
            .is_some_and(|t| now.duration_since(t) < PEX_INTERVAL)
            || self.is_private()
        {
            return Ok(());
        }
        let own = self.pex_addr;
        let current: Vec<(SocketAddr, u8)> = self
            .swarm
            .pex_peers()
            .into_iter()
            .filter(|(a, _)| *a != self.addr && Some(*a) != own)
            .collect();
        let added: Vec<(SocketAddr, u8)> = current
            .iter()
            .filter(|(a, _)| !self.pex_told.contains(a))
            .take(PEX_MAX_PEERS)
            .copied()
            .collect();
        let mut dropped: Vec<SocketAddr> = self
            .pex_told
            .iter()
            .filter(|a| !current.iter().any(|(c, _)| c == *a))
            .copied()
            .collect();
        dropped.sort();
        dropped.truncate(PEX_MAX_PEERS);
        if added.is_empty() && dropped.is_empty() {
            return Ok(());
        }
        for (a, _) in &added {
            self.pex_told.insert(*a);
        }
        for a in &dropped {
            self.pex_told.remove(a);
        }
        self.last_pex_sent = Some(now);
        tracing::debug!(
            "{}: ut_pex to {}: {} added, {} dropped",
            self.swarm.info_hash,
            self.addr,
            added.len(),
            dropped.len()
        );
        let payload = PexMessage { added, dropped }.encode();
        send(
            w,
            &Message::Extended {
                id,
                payload: Bytes::from(payload),
            },
        )
        .await
    }

    /// Keeps the flags other peers learn for this peer current: its seed
    /// flag follows its pieces.
    pub(super) fn update_pex_flags(&mut self) {
        let seed = self
            .peer_pieces
            .as_ref()
            .is_some_and(|p| !p.is_empty() && p.iter().all(|&h| h));
        let flags = if seed {
            self.pex_flags | pex_wire::FLAG_SEED
        } else {
            self.pex_flags & !pex_wire::FLAG_SEED
        };
        if flags != self.pex_flags {
            self.pex_flags = flags;
            if let Some(a) = self.pex_addr {
                self.swarm.set_pex_entry(self.id, a, flags);
            }
        }
    }
}
