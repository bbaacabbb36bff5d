//! The session loop: what wakes a session (a message, its waker, a HAVE to
//! send, the 1 s tick, shutdown), which handler each message goes to, and
//! the tick's timeouts and keep-alives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, broadcast, mpsc};

use super::{IDLE_TIMEOUT, REQUEST_TIMEOUT, Session, SessionError, send};
use crate::peer::conn::PeerWriter;
use crate::peer::holepunch::HolepunchMsg;
use crate::peer::wire::{Message, WireError};
use crate::swarm::BLOCK;
use crate::swarm::budget::Reservation;

/// What the reader task hands the loop: a message, the end of the stream
/// (`Ok(None)`), or why reading failed; with the message's bytes counted
/// in the memory budget while it waits.
pub(super) type Incoming = (Result<Option<Message>, WireError>, Reservation);

impl Session {
    pub(super) async fn run_loop(
        &mut self,
        mut w: PeerWriter,
        mut rx: mpsc::Receiver<Incoming>,
        mut hp_rx: mpsc::Receiver<HolepunchMsg>,
        waker: Arc<Notify>,
        extensions: bool,
    ) -> Result<(), SessionError> {
        let mut shutdown = self.swarm.subscribe_shutdown();
        let mut haves = self.swarm.subscribe_haves();
        // Our bitfield first (BEP 3: only right after the handshake).
        if let Some(bf) = self.swarm.our_bitfield() {
            send(&mut w, &Message::Bitfield(Bytes::from(bf))).await?;
        }
        if extensions {
            let hs = self.our_ext_handshake();
            send(
                &mut w,
                &Message::Extended {
                    id: 0,
                    payload: Bytes::from(hs.encode()),
                },
            )
            .await?;
        }
        self.after_metadata(&mut w).await?;
        w.flush().await.map_err(SessionError::Write)?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                m = rx.recv() => {
                    match m.map(|(m, _queued)| m) {
                        Some(Ok(Some(msg))) => {
                            self.last_recv = Instant::now();
                            self.on_message(&mut w, msg).await?;
                            // Drain what is already buffered before writing.
                            while let Ok((m, _queued)) = rx.try_recv() {
                                match m {
                                    Ok(Some(msg)) => self.on_message(&mut w, msg).await?,
                                    Ok(None) => return Ok(()),
                                    Err(e) => return Err(SessionError::Protocol(e)),
                                }
                            }
                        }
                        Some(Ok(None)) | None => return Ok(()),
                        Some(Err(e)) => return Err(SessionError::Protocol(e)),
                    }
                }
                _ = waker.notified() => {
                    if self.swarm.is_banned(self.addr.ip()) {
                        return Err(SessionError::Banned);
                    }
                    if !self.swarm.is_live(self.id) {
                        return Err(SessionError::Replaced);
                    }
                    self.after_metadata(&mut w).await?;
                }
                h = haves.recv() => {
                    if matches!(h, Err(broadcast::error::RecvError::Closed)) {
                        return Ok(());
                    }
                    self.on_have_event(&mut w, h).await?;
                }
                Some(m) = hp_rx.recv() => {
                    self.send_holepunch(&mut w, m).await?;
                }
                _ = tick.tick() => {
                    self.on_tick(&mut w).await?;
                }
                _ = shutdown.changed() => return Ok(()),
                // Blocks still queued for upload: serve the next batch now
                // rather than after the peer's next message or tick (one
                // 16-block batch per message made seeding latency-bound).
                _ = std::future::ready(()), if !self.uploads.is_empty() => {}
            }
            self.fill_requests(&mut w).await?;
            self.serve_uploads(&mut w).await?;
            w.flush().await.map_err(SessionError::Write)?;
        }
    }

    /// A piece we verified (or word that some were missed): HAVEs for what
    /// the peer lacks.
    async fn on_have_event(
        &mut self,
        w: &mut PeerWriter,
        h: Result<u32, broadcast::error::RecvError>,
    ) -> Result<(), SessionError> {
        match h {
            // HAVE suppression: a peer that has the piece needs no HAVE.
            // Besides saving bytes, this keeps a seeder from counting HAVEs
            // of pieces a bounded cache has since evicted and taking us for
            // a seeder too (libtorrent then disconnects: "upload to upload
            // connection").
            Ok(i) => {
                if !self.peer_has(i) {
                    send(w, &Message::Have(i)).await?;
                }
            }
            // HAVEs were missed (a burst: cached pieces verified in the
            // background, a fast download): tell the peer about every piece
            // we hold that it lacks (one HAVE twice is harmless, one
            // missing is not).
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let ours = self.swarm.have_pieces();
                tracing::debug!(
                    "{}: {n} HAVEs to {} missed; sending what it lacks",
                    self.swarm.info_hash,
                    self.addr
                );
                for i in ours {
                    if !self.peer_has(i) {
                        send(w, &Message::Have(i)).await?;
                    }
                }
            }
            Err(broadcast::error::RecvError::Closed) => {}
        }
        Ok(())
    }

    async fn on_message(&mut self, w: &mut PeerWriter, msg: Message) -> Result<(), SessionError> {
        match msg {
            Message::KeepAlive => {}
            Message::Choke => self.on_choke(),
            Message::Unchoke => {
                self.peer_choking = false;
            }
            Message::Interested => self.on_interested(w).await?,
            Message::NotInterested => self.on_not_interested(w).await?,
            Message::Have(i) => self.on_have(w, i).await?,
            Message::Bitfield(bf) => self.on_bitfield(w, bf).await?,
            Message::Request(r) => self.on_request(r)?,
            Message::Cancel(r) => {
                self.uploads.retain(|u| *u != r);
            }
            Message::Piece { index, begin, data } => {
                self.on_piece(index, begin, data).await?;
            }
            Message::Port(_) => {}
            Message::Extended { id, payload } => self.on_extended(w, id, payload).await?,
            Message::Unknown { id, payload } => self.on_hash_message(w, id, &payload).await?,
        }
        Ok(())
    }

    async fn on_tick(&mut self, w: &mut PeerWriter) -> Result<(), SessionError> {
        let now = Instant::now();
        if self.swarm.is_banned(self.addr.ip()) {
            return Err(SessionError::Banned);
        }
        if now.duration_since(self.last_recv) > IDLE_TIMEOUT {
            return Err(SessionError::Idle);
        }
        if self
            .waiting_since
            .is_some_and(|t| now.duration_since(t) > REQUEST_TIMEOUT)
        {
            return Err(SessionError::Snubbed {
                secs: REQUEST_TIMEOUT.as_secs(),
                outstanding: self.outstanding.len(),
            });
        }
        // Request depth from the measured rate: enough blocks in flight to
        // cover ~0.5 s of transfer at the current rate (at least 16, at most
        // their reqq and 1000). Deeper queues only add latency to seeks.
        let secs = now.duration_since(self.rate_since).as_secs_f64();
        if secs >= 1.0 {
            let rate = self.rate_bytes as f64 / secs;
            let blocks = (rate * 0.5 / BLOCK as f64) as usize;
            self.depth = blocks.clamp(16, 1000);
            // The rate that shares out blocks reads wait on: a moving
            // average over the seconds it was asked for something (an idle
            // peer is not a slow one; one that sends nothing while asked is).
            if self.rate_bytes > 0 || !self.outstanding.is_empty() {
                self.rate = if self.rate == 0.0 {
                    rate
                } else {
                    0.5 * self.rate + 0.5 * rate
                };
            }
            self.rate_bytes = 0;
            self.rate_since = now;
        }
        self.update_pex_flags();
        self.maybe_send_pex(w).await?;
        // The metadata, if the memory budget kept us from asking before.
        if self.swarm.loaded().is_none() && self.assembler.is_none() {
            self.request_metadata(w).await?;
        }
        // Piece layers (BEP 52) still missing, or asked of a peer that
        // did not answer in time.
        self.request_hashes(w).await?;
        // Wants change without a message from this peer (reads, evictions):
        // say so, or a peer that choked us while we wanted nothing never
        // unchokes us again.
        self.update_interest(w).await?;
        if now.duration_since(self.last_sent) >= self.keepalive_every {
            send(w, &Message::KeepAlive).await?;
            self.last_sent = now;
        }
        // A peer that has nothing we want and wants nothing from us, once we
        // are complete: both seeders, close.
        if self.swarm.is_complete() && self.peer_has_every_piece() {
            return Err(SessionError::BothSeeders);
        }
        Ok(())
    }
}
