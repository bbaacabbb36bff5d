//! The extension protocol (BEP 10) on this connection: the handshakes, and
//! the metadata exchange (BEP 9): asking for the info dictionary's pieces
//! while we lack it, and serving it once we have it.

use std::net::SocketAddr;

use bytes::Bytes;

use super::{MAX_UPLOAD_QUEUE, Session, SessionError, send};
use crate::peer::conn::PeerWriter;
use crate::peer::extension::{ExtHandshake, UT_METADATA_ID, UT_PEX, UT_PEX_ID};
use crate::peer::holepunch::{UT_HOLEPUNCH, UT_HOLEPUNCH_ID};
use crate::peer::pex as pex_wire;
use crate::peer::ut_metadata::{self, MetadataAssembler, MetadataMsg};
use crate::peer::wire::Message;
use crate::swarm::PeerSource;

/// Most requests a peer may queue with us (our BEP 10 `reqq`).
const OUR_REQQ: u32 = MAX_UPLOAD_QUEUE as u32;
/// The range we accept for a peer's `reqq`.
const THEIR_REQQ: std::ops::RangeInclusive<usize> = 1..=2000;

impl Session {
    /// Our extension handshake (BEP 10): the extensions we speak, the
    /// metadata size once known, our listen port, their address.
    pub(super) fn our_ext_handshake(&self) -> ExtHandshake {
        let mut hs = ExtHandshake::default();
        hs.m.insert("ut_metadata".into(), UT_METADATA_ID);
        if !self.is_private() {
            hs.m.insert(UT_PEX.into(), UT_PEX_ID);
            hs.m.insert(UT_HOLEPUNCH.into(), UT_HOLEPUNCH_ID);
        }
        hs.metadata_size = self.swarm.loaded().map(|l| l.info.raw.len() as u64);
        // BEP 10 `p`: behind a port mapping, the external port (to peers
        // on the internet).
        hs.listen_port = Some(self.swarm.cfg.listen_port)
            .filter(|&p| p != 0)
            .map(|p| self.swarm.cfg.reach.advertised_port(p, self.addr.ip()));
        hs.client = Some(concat!("btfs-mount ", env!("CARGO_PKG_VERSION")).into());
        hs.reqq = Some(OUR_REQQ);
        hs.yourip = Some(self.addr.ip());
        hs.ipv6 = crate::peer::extension::our_global_ipv6();
        hs.prefers_encryption = self.swarm.cfg.prefers_encryption;
        hs
    }

    /// Asks the peer for every piece of the metadata at once (it is small),
    /// once its handshake told us its size and extension id.
    pub(super) async fn request_metadata(
        &mut self,
        w: &mut PeerWriter,
    ) -> Result<(), SessionError> {
        let (Some(id), Some(size)) = (self.their_ut_metadata, self.their_metadata_size) else {
            return Ok(());
        };
        if self.assembler.is_some() {
            return Ok(());
        }
        let limit = self.swarm.cfg.max_metadata_size;
        if size > limit {
            return Err(SessionError::MetadataTooLarge { size, limit });
        }
        let a =
            MetadataAssembler::new(self.swarm.info_hash, size).map_err(SessionError::Assembly)?;
        let Some(permit) = self.swarm.metadata_permit(size) else {
            return Ok(()); // asked again at a later tick
        };
        self.assembler = Some((a, permit));
        let pieces = size.div_ceil(ut_metadata::METADATA_PIECE as u64) as u32;
        for piece in 0..pieces {
            let payload = MetadataMsg::Request { piece }.encode();
            send(
                w,
                &Message::Extended {
                    id,
                    payload: Bytes::from(payload),
                },
            )
            .await?;
        }
        Ok(())
    }

    /// An extension message: the handshake (id 0), `ut_metadata`, `ut_pex`;
    /// others are ignored.
    pub(super) async fn on_extended(
        &mut self,
        w: &mut PeerWriter,
        id: u8,
        payload: Bytes,
    ) -> Result<(), SessionError> {
        if id == 0 {
            return self.on_ext_handshake(w, &payload).await;
        }
        if id == UT_METADATA_ID {
            let msg = MetadataMsg::decode(&payload).map_err(SessionError::UtMetadata)?;
            self.on_ut_metadata(w, msg).await?;
        }
        if id == UT_PEX_ID {
            self.on_pex(&payload);
        }
        if id == UT_HOLEPUNCH_ID {
            self.on_holepunch(w, &payload).await?;
        }
        Ok(())
    }

    async fn on_ext_handshake(
        &mut self,
        w: &mut PeerWriter,
        payload: &[u8],
    ) -> Result<(), SessionError> {
        let hs = ExtHandshake::decode(payload).map_err(SessionError::ExtHandshake)?;
        self.their_ut_metadata = hs.m.get("ut_metadata").copied().filter(|&i| i != 0);
        self.their_ut_pex = hs.id_of(UT_PEX);
        self.on_holepunch_support(hs.id_of(UT_HOLEPUNCH));
        self.our_ip = hs.yourip;
        if let Some(ip) = hs.yourip {
            self.swarm.cfg.reach.vote(self.addr.ip(), ip);
        }
        self.their_metadata_size = hs.metadata_size;
        if let Some(q) = hs.reqq {
            self.their_reqq = (q as usize).clamp(*THEIR_REQQ.start(), *THEIR_REQQ.end());
        }
        if let Some(p) = hs.listen_port.filter(|&p| p != 0) {
            self.on_listen_port(p);
        }
        if let Some(v6) = hs.ipv6 {
            self.on_their_ipv6(v6, hs.listen_port.filter(|&p| p != 0));
        }
        if self.swarm.loaded().is_none() {
            self.request_metadata(w).await?;
        }
        Ok(())
    }

    /// Their global IPv6 address (BEP 7 and BEP 10 `ipv6`), told over an
    /// IPv4 connection: a candidate at their listen port (`p`, or the port
    /// we dialled), dialled like a peer learned by PEX once this connection
    /// is gone (never a second connection to the same peer).
    fn on_their_ipv6(&mut self, ip: std::net::Ipv6Addr, listen_port: Option<u16>) {
        let we_dialled = self.pex_flags & pex_wire::FLAG_OUTGOING != 0;
        let port = listen_port.or(we_dialled.then_some(self.addr.port()));
        if let (true, Some(port)) = (self.addr.is_ipv4(), port) {
            let a = SocketAddr::new(std::net::IpAddr::V6(ip), port);
            if self.swarm.note_alt_addr(self.id, a) {
                tracing::debug!(
                    "{}: {} says its IPv6 address is {a}",
                    self.swarm.info_hash,
                    self.addr
                );
            }
        }
    }

    /// Their listen port (BEP 10 `p`; we may have seen an ephemeral one).
    fn on_listen_port(&mut self, port: u16) {
        let a = SocketAddr::new(self.addr.ip(), port);
        let they_dialled = self.pex_flags & pex_wire::FLAG_OUTGOING == 0;
        if a != self.addr {
            if they_dialled {
                // Dial them back only once this connection is gone (never
                // a second connection).
                self.swarm.note_listen_addr(self.id, a);
            } else {
                self.swarm.add_peers([a], PeerSource::Incoming);
            }
        }
        if they_dialled {
            self.pex_addr = Some(a);
            self.swarm.set_pex_entry(self.id, a, self.pex_flags);
            self.swarm.holepunch_listen_addr(self.id, a);
        }
    }

    async fn on_ut_metadata(
        &mut self,
        w: &mut PeerWriter,
        msg: MetadataMsg,
    ) -> Result<(), SessionError> {
        match msg {
            MetadataMsg::Request { piece } => {
                let Some(their_id) = self.their_ut_metadata else {
                    return Ok(());
                };
                let reply = match self.swarm.loaded() {
                    Some(l) => ut_metadata::data_response(&l.info.raw, piece)
                        .unwrap_or(MetadataMsg::Reject { piece }),
                    None => MetadataMsg::Reject { piece },
                };
                send(
                    w,
                    &Message::Extended {
                        id: their_id,
                        payload: Bytes::from(reply.encode()),
                    },
                )
                .await?;
            }
            MetadataMsg::Data {
                piece,
                total_size,
                data,
            } => self.on_metadata_piece(w, piece, total_size, data).await?,
            MetadataMsg::Reject { piece } => {
                tracing::debug!(
                    "{}: {} rejected metadata piece {piece}",
                    self.swarm.info_hash,
                    self.addr
                );
                self.assembler = None;
                self.their_ut_metadata = None; // try other peers
            }
            MetadataMsg::Unknown { msg_type } => {
                tracing::debug!(
                    "{}: unknown ut_metadata msg_type {msg_type}",
                    self.swarm.info_hash
                );
            }
        }
        Ok(())
    }

    /// A piece of the metadata: assembled; once complete and matching the
    /// info-hash, handed to the swarm (a peer whose metadata does not match
    /// is banned).
    async fn on_metadata_piece(
        &mut self,
        w: &mut PeerWriter,
        piece: u32,
        total_size: u64,
        data: Bytes,
    ) -> Result<(), SessionError> {
        if self.swarm.loaded().is_some() {
            return Ok(());
        }
        let Some((a, _)) = self.assembler.as_mut() else {
            return Ok(());
        };
        if Some(total_size) != self.their_metadata_size {
            return Err(SessionError::MetadataSizeMismatch {
                total: total_size,
                handshake: self.their_metadata_size,
            });
        }
        self.swarm.note_metadata_bytes(data.len());
        a.add(piece, data).map_err(SessionError::MetadataPiece)?;
        if !a.is_complete() {
            return Ok(());
        }
        let (mut a, permit) = self.assembler.take().expect("present");
        let raw = a.finish();
        drop(a);
        drop(permit);
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                self.swarm
                    .ban(self.addr, "sent metadata that does not match the info-hash");
                return Err(SessionError::BadMetadata(e));
            }
        };
        tracing::info!(
            "{}: metadata ({} bytes) received from {}",
            self.swarm.info_hash,
            raw.len(),
            self.addr
        );
        let swarm = self.swarm.clone();
        let r = tokio::task::spawn_blocking(move || swarm.set_metadata(&raw)).await?;
        if let Err(e) = r {
            tracing::info!("{}: {e}", self.swarm.info_hash); // the lookup reports it
            return Err(e.into());
        }
        self.after_metadata(w).await
    }
}
