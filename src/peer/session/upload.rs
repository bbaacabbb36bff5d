//! Uploading to the peer: unchoking it when a slot is free, queueing the
//! blocks it asks for, and serving them from the cache in batches.

use bytes::Bytes;

use super::{MAX_UPLOAD_QUEUE, Session, SessionError, send};
use crate::peer::conn::PeerWriter;
use crate::peer::wire::{BlockRequest, Message};
use crate::swarm::budget::Reservation;
use crate::swarm::{Req, UploadCheck};

/// Blocks read from storage in one blocking task and sent per loop turn.
const UPLOAD_BATCH: usize = 32;

impl Session {
    /// The peer wants to download: unchoke it if we seed, know the
    /// torrent and have a free upload slot.
    pub(super) async fn on_interested(&mut self, w: &mut PeerWriter) -> Result<(), SessionError> {
        self.peer_interested = true;
        if !self.we_unchoke
            && self.swarm.cfg.seed
            && self.swarm.loaded().is_some()
            && self.swarm.take_unchoke_slot()
        {
            self.we_unchoke = true;
            send(w, &Message::Unchoke).await?;
        }
        Ok(())
    }

    /// The peer wants nothing more: choke it, freeing its slot and queue.
    pub(super) async fn on_not_interested(
        &mut self,
        w: &mut PeerWriter,
    ) -> Result<(), SessionError> {
        self.peer_interested = false;
        if self.we_unchoke {
            self.we_unchoke = false;
            self.swarm.release_unchoke_slot();
            self.uploads.clear();
            send(w, &Message::Choke).await?;
        }
        Ok(())
    }

    /// The peer asks for a block: queued when we hold its piece.
    pub(super) fn on_request(&mut self, r: BlockRequest) -> Result<(), SessionError> {
        if !self.we_unchoke {
            return Ok(()); // BEP 3: requests while choked are dropped
        }
        match self.swarm.check_upload(&to_req(r)) {
            UploadCheck::Invalid => return Err(SessionError::BadRequest(r)),
            UploadCheck::NotHeld => {
                // A piece we no longer hold (evicted from a bounded cache
                // after we announced it). Ignored: the peer asks someone
                // else when its request times out.
                tracing::debug!(
                    "{}: {} asked for piece {} we no longer hold; ignored",
                    self.swarm.info_hash,
                    self.addr,
                    r.index
                );
                return Ok(());
            }
            UploadCheck::Serve => {}
        }
        if self.uploads.len() < MAX_UPLOAD_QUEUE {
            self.uploads.push_back(r);
        }
        Ok(())
    }

    /// Serves a bounded batch per loop turn so downloads are not starved;
    /// the batch is read from storage in one blocking task, its buffers
    /// counted in the memory budget until sent (at the limit, one block per
    /// turn). Blocks of pieces evicted since they were asked for are
    /// dropped.
    pub(super) async fn serve_uploads(&mut self, w: &mut PeerWriter) -> Result<(), SessionError> {
        if self.uploads.is_empty() || self.swarm.loaded().is_none() {
            return Ok(());
        }
        let n = self.uploads.len().min(UPLOAD_BATCH);
        let want: u64 = self
            .uploads
            .iter()
            .take(n)
            .map(|r| u64::from(r.length))
            .sum();
        let mut buffers = Reservation::empty();
        let granted = buffers.grow_to(want);
        let mut fits = 0u64;
        let k = self
            .uploads
            .iter()
            .take(n)
            .take_while(|r| {
                fits += u64::from(r.length);
                fits <= granted
            })
            .count()
            .max(1);
        if k < n {
            crate::swarm::budget::global().note_limited("uploads are served a block at a time");
        }
        let first = u64::from(self.uploads[0].length);
        buffers.set(buffers.bytes().max(first));
        let batch: Vec<Req> = self.uploads.drain(..k).map(to_req).collect();
        for (r, data) in self.swarm.read_for_upload(batch).await? {
            send(
                w,
                &Message::Piece {
                    index: r.index,
                    begin: r.begin,
                    data: Bytes::from(data),
                },
            )
            .await?;
        }
        drop(buffers);
        Ok(())
    }
}

fn to_req(r: BlockRequest) -> Req {
    Req {
        index: r.index,
        begin: r.begin,
        length: r.length,
    }
}
