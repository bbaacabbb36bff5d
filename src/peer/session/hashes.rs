//! The session's side of the BEP 52 hash exchange ("peer messages": `hash
//! request` 21, `hashes` 22, `hash reject` 23; codec in
//! [`crate::peer::wire::HashMessage`]): asking a peer that has pieces for
//! the piece layers the swarm lacks ([`Swarm::next_hash_request`]), handing
//! its answers to the swarm to verify, and answering its requests from the
//! layers we hold (a `hash reject` for anything else, decided with work
//! bounded by the request's checked length).

use bytes::Bytes;

use super::{Session, SessionError, send};
use crate::peer::conn::PeerWriter;
use crate::peer::wire::HashMessage;

/// Most `hashes` messages a peer may send that we drop (unasked, or not
/// proving) before it is disconnected.
pub(super) const MAX_BAD_HASHES: u32 = 8;

impl Session {
    /// Asks this peer for missing piece layers, if it has pieces (a peer
    /// with nothing would only reject).
    pub(super) async fn request_hashes(&mut self, w: &mut PeerWriter) -> Result<(), SessionError> {
        if !self
            .peer_pieces
            .as_ref()
            .is_some_and(|p| p.iter().any(|&b| b))
        {
            return Ok(());
        }
        while let Some(req) = self.swarm.next_hash_request(self.id) {
            send(w, &HashMessage::Request(req).to_message()).await?;
        }
        // Leaf hashes for reads verified block by block: only over a
        // connection on the v2 info-hash.
        if !self.swarm.is_v2_handshake(&self.handshake_hash) {
            return Ok(());
        }
        while let Some(req) = self
            .swarm
            .next_block_hash_request(self.id, &|i| self.peer_has(i))
        {
            send(w, &HashMessage::Request(req).to_message()).await?;
        }
        Ok(())
    }

    /// A message with id 21, 22 or 23 (`payload` after the id). Errors:
    /// a malformed message ([`SessionError::Protocol`]), or more than
    /// [`MAX_BAD_HASHES`] dropped `hashes` messages
    /// ([`SessionError::BadHashes`]).
    pub(super) async fn on_hash_message(
        &mut self,
        w: &mut PeerWriter,
        id: u8,
        payload: &Bytes,
    ) -> Result<(), SessionError> {
        let Some(m) = HashMessage::decode(id, payload) else {
            return Ok(());
        };
        match m.map_err(SessionError::Protocol)? {
            HashMessage::Request(req) => {
                let reply = match self.swarm.answer_hash_request(&req) {
                    Ok(hashes) => {
                        tracing::debug!(
                            "{}: {}: hash request answered: root {}, base layer {}, index {}, length {}, proof layers {}",
                            self.swarm.info_hash,
                            self.addr,
                            hex::encode(&req.pieces_root[..8]),
                            req.base_layer,
                            req.index,
                            req.length,
                            req.proof_layers
                        );
                        HashMessage::Hashes {
                            request: req,
                            hashes,
                        }
                    }
                    Err(e) => {
                        tracing::debug!(
                            "{}: {}: hash request rejected: {e} (root {}, base layer {}, index {}, length {})",
                            self.swarm.info_hash,
                            self.addr,
                            hex::encode(&req.pieces_root[..8]),
                            req.base_layer,
                            req.index,
                            req.length
                        );
                        HashMessage::Reject(req)
                    }
                };
                send(w, &reply.to_message()).await?;
            }
            HashMessage::Hashes { request, hashes } => {
                let res = match self.swarm.on_block_hashes(self.id, &request, &hashes) {
                    Some(r) => r,
                    None => self.swarm.on_hashes(self.id, &request, &hashes),
                };
                match res {
                    Ok(()) => self.request_hashes(w).await?,
                    Err(e) => {
                        self.bad_hashes += 1;
                        tracing::info!(
                            "{}: {}: dropped {e} ({} so far)",
                            self.swarm.info_hash,
                            self.addr,
                            self.bad_hashes
                        );
                        if self.bad_hashes > MAX_BAD_HASHES {
                            return Err(SessionError::BadHashes(self.bad_hashes));
                        }
                    }
                }
            }
            HashMessage::Reject(req) => {
                tracing::debug!(
                    "{}: {} rejected a hash request",
                    self.swarm.info_hash,
                    self.addr
                );
                if !self.swarm.on_block_hash_reject(self.id, &req) {
                    self.swarm.on_hash_reject(self.id, &req);
                }
            }
        }
        Ok(())
    }
}
