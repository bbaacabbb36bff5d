//! Downloading from the peer: its pieces (bitfield, HAVE), our interest,
//! the requests we keep in flight (asked of the swarm's picker), and the
//! blocks that come back.

use std::time::Instant;

use bytes::Bytes;

use super::{NOT_INTERESTED_AFTER, Session, SessionError, send};
use crate::peer::conn::PeerWriter;
use crate::peer::wire::{Bitfield, BlockRequest, Message};
use crate::swarm::{BLOCK, BlockArrival, QueueCaps, Req, budget};

/// Blocks in flight a connection may always take of the memory budget
/// (if the budget has room), however many connections share it.
const MIN_FAIR_BLOCKS: u64 = 4;
/// Most requests remembered per connection after we stopped waiting for
/// them (choked, cancelled): their blocks may still arrive and are kept.
const MAX_RELEASED: usize = 4096;
/// Blocks with a bad index, offset or size tolerated from one peer.
const MAX_BAD_BLOCKS: u32 = 16;
/// Blocks we never asked for tolerated from one peer.
const MAX_STRAY_BLOCKS: u32 = 1024;
/// HAVEs remembered from a peer before the metadata is known.
const MAX_EARLY_HAVES: usize = 1 << 20;

impl Session {
    /// Whether the peer said it has piece `i` (bitfield or HAVE).
    pub(super) fn peer_has(&self, i: u32) -> bool {
        self.peer_pieces
            .as_ref()
            .and_then(|p| p.get(i as usize).copied())
            .unwrap_or(false)
    }

    /// Whether the peer has every piece (true for a torrent of none).
    pub(super) fn peer_has_every_piece(&self) -> bool {
        self.peer_pieces
            .as_ref()
            .is_some_and(|p| p.iter().all(|&h| h))
    }

    /// Once the metadata is known: parse their bitfield, send interest.
    /// Before: ask for the metadata.
    pub(super) async fn after_metadata(&mut self, w: &mut PeerWriter) -> Result<(), SessionError> {
        let Some(loaded) = self.swarm.loaded() else {
            return self.request_metadata(w).await;
        };
        self.assembler = None;
        let n = loaded.info.num_pieces();
        if self.peer_pieces.is_none() {
            let mut pieces = vec![false; n as usize];
            if let Some(bf) = self.peer_bitfield.take() {
                if bf.len() != n.div_ceil(8) as usize {
                    return Err(SessionError::BitfieldSize {
                        len: bf.len(),
                        pieces: n,
                    });
                }
                for (i, p) in pieces.iter_mut().enumerate() {
                    *p = bf[i / 8] & (0x80 >> (i % 8)) != 0;
                }
                if (n as usize..bf.len() * 8).any(|i| bf[i / 8] & (0x80 >> (i % 8)) != 0) {
                    return Err(SessionError::SpareBits);
                }
            }
            for &i in &self.peer_have {
                if i >= n {
                    return Err(SessionError::HaveBeyond {
                        index: i,
                        pieces: n,
                    });
                }
                pieces[i as usize] = true;
            }
            self.peer_have.clear();
            self.peer_pieces = Some(pieces);
        }
        self.request_hashes(w).await?;
        self.update_interest(w).await
    }

    /// Tells the peer whether we want something it has (now).
    pub(super) async fn update_interest(&mut self, w: &mut PeerWriter) -> Result<(), SessionError> {
        let Some(pieces) = &self.peer_pieces else {
            return Ok(());
        };
        let want = self.swarm.wants_from(pieces);
        if want {
            self.unwanted_since = None;
        }
        if want && !self.we_interested {
            self.we_interested = true;
            send(w, &Message::Interested).await?;
        } else if !want && self.we_interested && self.outstanding.is_empty() {
            // Only after a while without wants (see NOT_INTERESTED_AFTER),
            // or once we have every piece.
            let since = *self.unwanted_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= NOT_INTERESTED_AFTER || self.swarm.is_complete() {
                self.we_interested = false;
                self.unwanted_since = None;
                send(w, &Message::NotInterested).await?;
            }
        }
        Ok(())
    }

    /// The peer choked us (BEP 3: every outstanding request is discarded).
    pub(super) fn on_choke(&mut self) {
        self.peer_choking = true;
        let dropped: Vec<Req> = self.outstanding.drain(..).collect();
        self.waiting_since = None;
        self.release(dropped);
        self.sync_inflight();
        self.swarm.requests_discarded(self.id);
    }

    /// Counts our outstanding requests as blocks in flight in the memory
    /// budget (see [`crate::swarm::budget`]).
    pub(super) fn sync_inflight(&mut self) {
        self.inflight
            .set(self.outstanding.len() as u64 * u64::from(BLOCK));
    }

    pub(super) async fn on_have(&mut self, w: &mut PeerWriter, i: u32) -> Result<(), SessionError> {
        match &mut self.peer_pieces {
            Some(p) => {
                let slot = p
                    .get_mut(i as usize)
                    .ok_or(SessionError::HaveOutOfRange(i))?;
                *slot = true;
            }
            None => {
                if self.peer_have.len() < MAX_EARLY_HAVES {
                    self.peer_have.insert(i);
                }
            }
        }
        self.update_interest(w).await
    }

    pub(super) async fn on_bitfield(
        &mut self,
        w: &mut PeerWriter,
        bf: Bytes,
    ) -> Result<(), SessionError> {
        // BEP 3 sends the bitfield only right after the handshake, but
        // aria2 1.36 sends BITFIELD again instead of several HAVEs whenever
        // that is shorter (DefaultBtInteractive::checkHave), and libtorrent
        // takes it (peer_connection::incoming_bitfield). A later bitfield
        // adds to what the peer has: bits are OR-ed, never cleared.
        match (&mut self.peer_pieces, self.swarm.loaded()) {
            (Some(pieces), Some(l)) => {
                let n = l.info.num_pieces();
                let bits = Bitfield::from_bytes(&bf, n).map_err(SessionError::Bitfield)?;
                for (i, p) in pieces.iter_mut().enumerate() {
                    *p |= bits.get(i as u32);
                }
                self.update_interest(w).await?;
            }
            _ => match &mut self.peer_bitfield {
                Some(old) if old.len() == bf.len() => {
                    let merged: Vec<u8> = old.iter().zip(bf.iter()).map(|(a, b)| a | b).collect();
                    *old = Bytes::from(merged);
                }
                _ => self.peer_bitfield = Some(bf),
            },
        }
        Ok(())
    }

    /// Cancels what nobody waits for any more, makes room for what reads
    /// wait on, and keeps the peer's request queue full (see
    /// [`crate::swarm::Swarm::plan_requests`]).
    pub(super) async fn fill_requests(&mut self, w: &mut PeerWriter) -> Result<(), SessionError> {
        if self.peer_choking || self.swarm.loaded().is_none() {
            return Ok(());
        }
        let cap = self.depth.min(self.their_reqq);
        // Blocks in flight beyond what the memory budget allows are asked
        // only for pieces that reads wait on. Each connection takes at most
        // its fair part of three quarters of the budget (the rest is for
        // uploads, queues and hashing): first come, first served, the
        // first peers' deep queues took it all and the others sat idle
        // (a `cat` on 8 seeders: two of them without a request for 2 s).
        let peers = self.swarm.picking_conns().max(1) as u64;
        let fair = (budget::memory_limit() / 4 * 3 / peers).max(MIN_FAIR_BLOCKS * u64::from(BLOCK));
        let granted = self
            .inflight
            .grow_to((cap as u64 * u64::from(BLOCK)).min(fair));
        let budget_cap = (granted / u64::from(BLOCK)) as usize;
        // And no more readahead than keeps the peer sending at its rate
        // (see [`super::pipeline`]): blocks of a seek's new position are
        // not queued behind much of it.
        let ahead_cap = self.pipeline.ahead_cap(self.rate);
        let plan = self.swarm.plan_requests(
            self.id,
            self.peer_pieces.as_deref(),
            &mut self.outstanding,
            QueueCaps {
                cap,
                budget: budget_cap,
                ahead: ahead_cap,
            },
            self.rate,
        );
        let Some(plan) = plan else {
            self.sync_inflight();
            return Ok(());
        };
        for r in plan.stale.iter().chain(&plan.preempted) {
            send(w, &Message::Cancel(to_block(*r))).await?;
        }
        self.release(plan.stale);
        self.release(plan.preempted);
        if plan.new.is_empty() {
            self.sync_inflight();
            return Ok(());
        }
        if !self.we_interested {
            self.we_interested = true;
            send(w, &Message::Interested).await?;
        }
        if self.waiting_since.is_none() {
            self.waiting_since = Some(Instant::now());
        }
        self.pipeline
            .sent(plan.new[0], self.outstanding.len(), Instant::now());
        for r in plan.new {
            send(w, &Message::Request(to_block(r))).await?;
            self.outstanding.push_back(r);
        }
        self.sync_inflight();
        Ok(())
    }

    /// Remembers requests we stopped waiting for (bounded).
    fn release(&mut self, reqs: Vec<Req>) {
        if self.released.len() + reqs.len() > MAX_RELEASED {
            self.released.clear();
        }
        self.released.extend(reqs);
    }

    /// A block arrived: kept if we asked this peer for it (or did and
    /// stopped waiting), dropped unread otherwise.
    pub(super) async fn on_piece(
        &mut self,
        index: u32,
        begin: u32,
        data: Bytes,
    ) -> Result<(), SessionError> {
        let len = data.len() as u32;
        let req = Req {
            index,
            begin,
            length: len,
        };
        match self.outstanding.iter().position(|r| *r == req) {
            Some(pos) => {
                self.outstanding.remove(pos);
            }
            // Requested, then cancelled or discarded by a choke: kept.
            None if self.released.remove(&req) => {}
            None => return self.on_stray_block(index, begin, len),
        }
        self.pipeline.arrived(&req, Instant::now());
        self.waiting_since = (!self.outstanding.is_empty()).then(Instant::now);
        self.rate_bytes += len as u64;
        let arrival = self.swarm.block_arrived(self.id, index, begin, data).await;
        // Written (or dropped): no longer in flight.
        self.sync_inflight();
        match arrival {
            BlockArrival::Stored | BlockArrival::Duplicate => {}
            BlockArrival::Unrequested => {
                self.bad_blocks += 1;
                tracing::debug!(
                    "{}: {} sent a block with a bad index, offset or size (piece {index}, offset {begin}, {len} bytes)",
                    self.swarm.info_hash,
                    self.addr
                );
                if self.bad_blocks > MAX_BAD_BLOCKS {
                    return Err(SessionError::BadBlocks);
                }
            }
        }
        Ok(())
    }

    /// A block never asked of this peer (or with a wrong offset or size):
    /// dropped unread. A flood of them ends the connection.
    fn on_stray_block(&mut self, index: u32, begin: u32, len: u32) -> Result<(), SessionError> {
        self.stray_blocks += 1;
        tracing::debug!(
            "{}: {} sent a block we never asked it for (piece {index}, offset {begin}, {len} bytes)",
            self.swarm.info_hash,
            self.addr
        );
        if !self.swarm.is_block_in_range(index, begin, len) {
            self.bad_blocks += 1;
            if self.bad_blocks > MAX_BAD_BLOCKS {
                return Err(SessionError::BadBlocks);
            }
        }
        if self.stray_blocks > MAX_STRAY_BLOCKS {
            return Err(SessionError::StrayBlocks);
        }
        Ok(())
    }
}

fn to_block(r: Req) -> BlockRequest {
    BlockRequest {
        index: r.index,
        begin: r.begin,
        length: r.length,
    }
}
