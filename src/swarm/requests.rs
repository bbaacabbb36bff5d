//! What a peer session asks of its swarm (the only way it reaches the
//! picker and the cache): what we have, what to request next from a peer
//! with a given bitfield, a block arrived, may a block be uploaded, read
//! the blocks to upload. Each call takes the swarm's lock briefly.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::picker::ConnLoad;
use super::{BLOCK, ConnId, Req, Swarm};

/// Largest block a peer may ask us for (BEP 3 clients ask 16 KiB; we allow
/// up to 128 KiB, as libtorrent does).
const MAX_UPLOAD_BLOCK: u32 = 128 * 1024;

/// What became of a block a peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockArrival {
    /// Kept (it may have completed its piece, which is being verified).
    Stored,
    /// A block we already had (end-game duplicates): dropped.
    Duplicate,
    /// Not a block of a piece being assembled (bad index, offset or size,
    /// or no metadata yet): dropped.
    Unrequested,
}

/// Whether a peer's block request may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UploadCheck {
    /// Serve it.
    Serve,
    /// A block of a piece we no longer hold (evicted from a bounded cache
    /// after we announced it: BEP 3 has no way to take a HAVE back).
    NotHeld,
    /// No such block in this torrent (or no metadata): a protocol violation.
    Invalid,
}

/// Requests to cancel and to send to one peer, from [`Swarm::plan_requests`].
#[derive(Debug, Default)]
pub(crate) struct RequestPlan {
    /// Outstanding requests nobody waits for any more (cancel them).
    pub stale: Vec<Req>,
    /// Readahead requests given up to make room for blocks a read waits
    /// on (cancel them).
    pub preempted: Vec<Req>,
    /// New requests to send, in order.
    pub new: Vec<Req>,
}

/// How many requests one connection may keep outstanding at its peer, for
/// [`Swarm::plan_requests`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueCaps {
    /// Most requests in all (the request depth, at most the peer's `reqq`).
    pub cap: usize,
    /// Requests in all past which only blocks that reads wait on are
    /// asked: what the memory budget allows this connection.
    pub budget: usize,
    /// The same bound from the peer's rate and answer time: readahead
    /// that keeps the peer sending, and no more (see
    /// `crate::peer::session::pipeline`).
    pub ahead: usize,
}

/// A stored block could not be read for upload.
#[derive(Debug, thiserror::Error)]
#[error("cannot read piece {index} for upload: {source}")]
pub(crate) struct UploadReadError {
    pub index: u32,
    #[source]
    pub source: io::Error,
}

impl Swarm {
    /// Our bitfield (BEP 3 layout), or None when we have no piece yet (or
    /// no metadata): BEP 3 lets a client with nothing send no bitfield.
    pub(crate) fn our_bitfield(&self) -> Option<Vec<u8>> {
        let st = self.lock();
        let p = st.picker.as_ref()?;
        (p.have_count() > 0).then(|| p.bitfield())
    }

    /// Every piece we have (verified and stored), ascending.
    pub(crate) fn have_pieces(&self) -> Vec<u32> {
        let st = self.lock();
        st.picker.as_ref().map_or_else(Vec::new, |p| {
            (0..p.num_pieces()).filter(|&i| p.has(i)).collect()
        })
    }

    /// Whether we hold every piece.
    pub(crate) fn is_complete(&self) -> bool {
        self.lock().picker.as_ref().is_some_and(|p| p.is_complete())
    }

    /// Whether a peer holding `peer_pieces` (by index) has a piece we want.
    pub(crate) fn wants_from(&self, peer_pieces: &[bool]) -> bool {
        let has = |i: u32| peer_pieces.get(i as usize).copied().unwrap_or(false);
        self.lock()
            .picker
            .as_ref()
            .is_some_and(|p| p.interesting(&has))
    }

    /// Plans connection `conn`'s requests: drops from `outstanding` (and
    /// returns) those nobody waits for any more; when reads wait on blocks
    /// the peer has and its queue of `cap` requests is full, gives up the
    /// newest readahead requests to make room; then picks up to `caps.cap`
    /// new requests in all from what the peer has (`peer_pieces`: None
    /// before its pieces are known, when nothing new is picked). Past
    /// `caps.budget` requests in all, only blocks that reads wait on are
    /// picked, and the log says the memory budget held readahead back; the
    /// same past `caps.ahead`, silently. `rate`: the peer's measured download rate in
    /// bytes/s (0 before it is measured), which sizes this connection's
    /// share of the blocks reads wait on and their deadlines (see
    /// [`super::picker::Picker::pick_within`]). The new requests are not in
    /// `outstanding`: the caller adds them as it sends them. None without
    /// metadata.
    pub(crate) fn plan_requests(
        &self,
        conn: ConnId,
        peer_pieces: Option<&[bool]>,
        outstanding: &mut VecDeque<Req>,
        caps: QueueCaps,
        rate: f64,
    ) -> Option<RequestPlan> {
        let cap = caps.cap;
        let mut guard = self.lock();
        let st = &mut *guard;
        let p = st.picker.as_mut()?;
        let mut plan = RequestPlan::default();
        for i in p.drop_unwanted() {
            st.cache.end_partial(i);
        }
        // Requests nobody waits for any more: blocks received from another
        // peer, and blocks of pieces no read or readahead window wants now
        // (a reader sought away): those go back to missing, so a piece
        // begun for an old position is not finished unless wanted again.
        let (keep, stale): (Vec<Req>, Vec<Req>) = outstanding
            .drain(..)
            .partition(|r| p.is_outstanding(conn, r) && !p.has(r.index) && p.wanted(r.index));
        for r in &stale {
            p.release_one(conn, r);
        }
        *outstanding = keep.into();
        plan.stale = stale;
        let Some(pieces) = peer_pieces else {
            return Some(plan);
        };
        let has = |i: u32| pieces.get(i as usize).copied().unwrap_or(false);
        // A read waits on blocks this peer has, and the queue is full of
        // readahead: cancel the newest readahead requests to make room, so
        // a seek costs one piece, not the abandoned window.
        p.note_queue(conn, outstanding.len());
        let need = p.urgent_unrequested(&has).min(p.urgent_room(conn));
        let free = cap.saturating_sub(outstanding.len());
        let mut k = need.saturating_sub(free);
        let mut i = outstanding.len();
        while k > 0 && i > 0 {
            i -= 1;
            let r = outstanding[i];
            if !p.is_urgent(r.index) {
                p.release_one(conn, &r);
                outstanding.remove(i);
                plan.preempted.push(r);
                k -= 1;
            }
        }
        let want = cap.saturating_sub(outstanding.len());
        if want > 0 {
            let bound = caps.ahead.min(cap);
            let ahead = caps.budget.min(bound).saturating_sub(outstanding.len());
            let load = ConnLoad {
                rate,
                outstanding: outstanding.len(),
            };
            let (new, limited) = p.pick_within(conn, &has, want, ahead, load, Instant::now());
            plan.new = new;
            if limited && caps.budget < bound {
                drop(guard);
                super::budget::global().note_limited(
                    "no more blocks are requested ahead of reads until some is freed",
                );
            }
        }
        Some(plan)
    }

    /// How many connections pick blocks from their peers now (unchoked,
    /// with the metadata): they share the memory budget's blocks in flight.
    pub(crate) fn picking_conns(&self) -> usize {
        self.lock().picker.as_ref().map_or(0, |p| p.picking_conns())
    }

    /// Pieces with block requests outstanding at peers, with the number of
    /// such blocks (16 KiB) each, ascending: what the swarm is asking for
    /// now (empty without metadata).
    pub fn requested_pieces(&self) -> Vec<(u32, usize)> {
        self.lock()
            .picker
            .as_ref()
            .map_or_else(Vec::new, |p| p.requested_pieces())
    }

    /// The peer of `conn` choked us: every request it had goes back to
    /// the picker (BEP 3: a choke discards them), for other peers.
    pub(crate) fn requests_discarded(&self, conn: ConnId) {
        if let Some(p) = self.lock().picker.as_mut() {
            p.release(conn);
        }
        self.wake_peers();
    }

    /// Whether (`index`, `begin`, `len`) is a block-aligned range inside a
    /// piece of this torrent (false without metadata).
    pub(crate) fn is_block_in_range(&self, index: u32, begin: u32, len: u32) -> bool {
        self.lock().picker.as_ref().is_some_and(|p| {
            index < p.num_pieces()
                && begin % BLOCK == 0
                && begin as u64 + len as u64 <= p.piece_size(index) as u64
        })
    }

    /// Whether a peer's request for `r` may be served now.
    pub(crate) fn check_upload(&self, r: &Req) -> UploadCheck {
        let st = self.lock();
        let Some(p) = st.picker.as_ref() else {
            return UploadCheck::Invalid;
        };
        let valid = r.index < p.num_pieces()
            && r.length > 0
            && r.length <= MAX_UPLOAD_BLOCK
            && r.begin as u64 + r.length as u64 <= p.piece_size(r.index) as u64;
        match (valid, valid && p.has(r.index)) {
            (false, _) => UploadCheck::Invalid,
            (true, false) => UploadCheck::NotHeld,
            (true, true) => UploadCheck::Serve,
        }
    }

    /// Reads the blocks `reqs` from the cache for upload, in one blocking
    /// task, each piece pinned while it is read. Blocks of pieces no longer
    /// held (evicted since they were asked for) are left out: an evicted
    /// piece is never sent (its punched-out bytes would read as zeros).
    /// The bytes returned count as uploaded. Errors: the first read error.
    pub(crate) async fn read_for_upload(
        self: &Arc<Self>,
        reqs: Vec<Req>,
    ) -> Result<Vec<(Req, Vec<u8>)>, UploadReadError> {
        let Some(l) = self.loaded() else {
            return Ok(Vec::new());
        };
        let batch: Vec<Req> = reqs
            .into_iter()
            .filter(|r| self.pin(r.index, r.index))
            .collect();
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let storage = l.storage.clone();
        let pl = l.info.piece_length;
        let reqs = batch.clone();
        let data = tokio::task::spawn_blocking(move || {
            reqs.into_iter()
                .map(|r| {
                    let mut buf = vec![0u8; r.length as usize];
                    let offset = r.index as u64 * pl + r.begin as u64;
                    storage
                        .read_at(offset, &mut buf)
                        .map(|_| (r, buf))
                        .map_err(|source| UploadReadError {
                            index: r.index,
                            source,
                        })
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await;
        for r in &batch {
            self.unpin(r.index, r.index);
        }
        let data = data.map_err(|e| UploadReadError {
            index: batch[0].index,
            source: io::Error::other(e),
        })??;
        let bytes: usize = data.iter().map(|(_, d)| d.len()).sum();
        self.counters
            .uploaded
            .fetch_add(bytes as u64, Ordering::Relaxed);
        Ok(data)
    }

    /// `n` bytes of metadata (BEP 9 pieces) arrived.
    pub(crate) fn note_metadata_bytes(&self, n: usize) {
        self.counters
            .metadata_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}
