//! The holepunch extension (BEP 55) on this connection: whether the peer
//! speaks it (then the swarm may use it as a relay, or introduce it to
//! others), and what its `ut_holepunch` messages ask. The decisions are the
//! swarm's (`swarm/holepunch.rs`); this file moves messages. Malformed
//! messages are ignored, as libtorrent does, never fatal.

use bytes::Bytes;

use super::{Session, SessionError, send};
use crate::peer::conn::PeerWriter;
use crate::peer::holepunch::{HolepunchKind, HolepunchMsg};
use crate::peer::pex as pex_wire;
use crate::peer::wire::Message;

impl Session {
    /// Their extension handshake gave `id` for `ut_holepunch` (None: they
    /// do not speak it, or switched it off). Private torrents (BEP 27)
    /// exchange no peers, so no holepunching either.
    pub(super) fn on_holepunch_support(&mut self, id: Option<u8>) {
        let id = id.filter(|_| !self.is_private());
        let was = std::mem::replace(&mut self.their_ut_holepunch, id);
        if was.is_some() && id.is_none() {
            // switched off in a repeated handshake (BEP 10)
            self.swarm.holepunch_unregister(self.id);
        }
        if was.is_some() || id.is_none() {
            return;
        }
        if let Some(outbox) = self.hp_outbox.clone() {
            self.swarm
                .holepunch_register(self.id, self.addr, self.utp, outbox);
        }
        // Other peers learn by PEX that this one can be reached by holepunch.
        self.pex_flags |= pex_wire::FLAG_HOLEPUNCH;
        if let Some(a) = self.pex_addr {
            self.swarm.set_pex_entry(self.id, a, self.pex_flags);
        }
    }

    /// A `ut_holepunch` message from the peer.
    pub(super) async fn on_holepunch(
        &mut self,
        w: &mut PeerWriter,
        payload: &[u8],
    ) -> Result<(), SessionError> {
        let ih = self.swarm.info_hash;
        if self.is_private() {
            return Ok(());
        }
        let msg = match HolepunchMsg::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("{ih}: {}: {e}", self.addr);
                return Ok(());
            }
        };
        match msg.kind {
            HolepunchKind::Rendezvous => {
                if let Some(reply) = self.swarm.relay_rendezvous(self.id, msg.addr) {
                    self.send_holepunch(w, reply).await?;
                }
            }
            HolepunchKind::Connect => {
                let dialling = self.swarm.holepunch_connect(self.id, msg.addr);
                tracing::info!(
                    "{ih}: holepunch: {} says connect to {}{}",
                    self.addr,
                    msg.addr,
                    if dialling {
                        "; dialling it over uTP"
                    } else {
                        " (ignored: connected or being dialled already, banned, \
                         or too many connects from that peer)"
                    }
                );
            }
            HolepunchKind::Error => {
                let why = msg
                    .error
                    .map_or("no error code".to_string(), |e| e.to_string());
                tracing::info!(
                    "{ih}: holepunch: {} cannot introduce us to {}: {why}",
                    self.addr,
                    msg.addr
                );
            }
        }
        Ok(())
    }

    /// Sends `m` to the peer, if it speaks `ut_holepunch`.
    pub(super) async fn send_holepunch(
        &mut self,
        w: &mut PeerWriter,
        m: HolepunchMsg,
    ) -> Result<(), SessionError> {
        let Some(id) = self.their_ut_holepunch else {
            return Ok(());
        };
        send(
            w,
            &Message::Extended {
                id,
                payload: Bytes::from(m.encode()),
            },
        )
        .await
    }
}
