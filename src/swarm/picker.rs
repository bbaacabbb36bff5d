//! The piece picker: which blocks (16 KiB, BEP 3) to request from which peer.
//!
//! Reads drive everything. Pieces fall into three priorities:
//! 1. **urgent**: a pending read waits on them (FUSE `read`, `Archive` reads),
//!    ascending piece index. These may exceed the in-progress budget, and in
//!    end-game they get duplicate requests to a second peer.
//! 2. **readahead**: the window ahead of each open file handle, in window
//!    order.
//! 3. **prefetch**: every other piece, only when prefetching is enabled.
//!
//! Nothing else is ever requested, so a mount never downloads the whole
//! torrent unless asked to. The picker keeps the partial pieces and their
//! per-block state; the swarm owns the picker under one lock.
//!
//! A piece is in one of these states: missing (wanted when a priority above
//! covers it), partial (blocks requested or received), verifying (complete,
//! being hashed or written; also an evicted piece until its space is freed),
//! had (verified and stored: advertised in our bitfield and HAVEs, served),
//! or **cached, unverified**: listed in the cache's `have` file at start,
//! its bytes on disk but not hashed yet. An unverified piece is neither had
//! (never advertised or served) nor wanted (never requested from peers):
//! the swarm hashes it, and it becomes had, or missing if it is bad.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

mod arrival;
mod share;

/// A block is 16 KiB (BEP 3: the de facto request size; larger requests are
/// refused by most peers). The last block of a piece may be shorter.
pub const BLOCK: u32 = 16 * 1024;

/// Identifies one peer connection within a swarm.
pub type ConnId = u64;

/// A block request: piece index, offset within the piece, length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Req {
    pub index: u32,
    pub begin: u32,
    pub length: u32,
}

/// Download rate assumed for a connection not measured yet, or slower
/// than this, in bytes/s: a libtorrent seeder that was idle sends about one
/// 16 KiB block per 100 ms until its own rate estimate recovers.
pub const MIN_RATE: f64 = 160_000.0;

/// Allowance for the round trip and the peer's own latency before a block
/// of a waiting read counts as late (on top of its transfer time at the
/// peer's measured rate).
const LATE_SLACK: Duration = Duration::from_millis(150);

/// What the picker is told of a connection when it picks for it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnLoad {
    /// Measured download rate from the peer in bytes/s (0: not measured).
    pub rate: f64,
    /// Requests outstanding at the peer before this pick (queued ahead of
    /// the new ones).
    pub outstanding: usize,
}

impl ConnLoad {
    /// The rate used to share and time blocks: the measured one, at least
    /// [`MIN_RATE`].
    fn weight(&self) -> f64 {
        self.rate.max(MIN_RATE)
    }

    /// When a block queued behind `queued` others at this peer is due:
    /// after the round-trip allowance and 1.5 times the transfer time of
    /// those blocks and itself at the peer's rate (libtorrent's
    /// `set_piece_deadline` bookkeeping, kept per block).
    fn due(&self, now: Instant, queued: usize) -> Instant {
        let secs = 1.5 * (queued + 1) as f64 * BLOCK as f64 / self.weight();
        now + LATE_SLACK + Duration::from_secs_f64(secs.min(60.0))
    }
}

/// One request of a block: the connection asked, and when the block is due
/// from it (see [`ConnLoad::due`]).
#[derive(Debug, Clone, Copy)]
struct Ask {
    conn: ConnId,
    due: Instant,
}

#[derive(Debug, Clone)]
enum BlockState {
    Missing,
    /// Requested from these connections (more than one only when a block a
    /// read waits on was late from the first).
    Requested(Vec<Ask>),
    /// Arrived from `conn` and being written to the storage. Nobody else's
    /// copy is taken meanwhile, so two writes of one block never race.
    /// `discard`: its sender was banned meanwhile; missing once written.
    Writing {
        conn: ConnId,
        discard: bool,
    },
    /// Written to the storage (not verified: the piece is hashed whole).
    Received,
}

/// A piece being downloaded: per-block state. Its bytes are in the
/// storage, written block by block as they arrive (never in memory).
struct Partial {
    blocks: Vec<BlockState>,
    received: usize,
    /// Blocks being written now.
    writing: usize,
    /// Connections that sent blocks of this piece (penalised on hash failure).
    contributors: Vec<ConnId>,
    /// The connection each received block came from (by block index), so a
    /// hash failure can be pinned on the peer whose blocks were wrong.
    sources: Vec<Option<ConnId>>,
    /// Blocks verified alone against their file's Merkle tree (BEP 52,
    /// see [`super::block_verify`]): readable before the piece is complete,
    /// while their state is `Received`. Cleared when a block is claimed.
    alone: Vec<bool>,
}

/// What happened to a received block.
#[derive(Debug, PartialEq, Eq)]
pub enum BlockOutcome {
    /// Taken: write it to the storage, then call [`Picker::block_written`]
    /// (or [`Picker::block_write_failed`]).
    Write,
    /// Written; the piece is not complete yet.
    Stored,
    /// Written, and this completed the piece: verify it from the storage.
    Complete {
        index: u32,
        contributors: Vec<ConnId>,
        /// The connection each block came from, one per block (16 KiB).
        sources: Vec<ConnId>,
    },
    /// A block we already had or are writing (end-game duplicates), or of a
    /// piece no longer in progress: harmless, dropped.
    Duplicate,
    /// Never requested, or with a wrong offset or size: a protocol violation.
    Unrequested,
}

/// Per-swarm picker state. See the module docs for the priorities.
pub struct Picker {
    piece_length: u64,
    total_length: u64,
    num_pieces: u32,
    have: Vec<bool>,
    have_count: u32,
    /// Cached pieces not verified yet (see the module docs).
    unverified: BTreeSet<u32>,
    partial: HashMap<u32, Partial>,
    /// Pieces being hashed or written: neither wanted nor had.
    verifying: BTreeSet<u32>,
    /// Pieces pending reads wait on, with the number of waiting reads.
    urgent: BTreeMap<u32, usize>,
    /// Readahead windows by file handle: `[start, end)` piece ranges.
    readahead: HashMap<u64, (u32, u32)>,
    prefetch: bool,
    /// Budget of non-urgent partial pieces (a bound on the cache space of
    /// pieces begun and not finished: count × piece length).
    max_partial: usize,
    /// Measured download rate (bytes/s) of every connection that picks,
    /// until it is choked or closed: blocks reads wait on are shared out
    /// in proportion (see [`Picker::urgent_room`]).
    rates: HashMap<ConnId, f64>,
    /// Requests outstanding at each picking connection's peer for pieces
    /// no read waits on, at its latest pick: a peer busy with readahead
    /// gets the blocks of a new read only after the idle ones (see
    /// [`Picker::urgent_room`]).
    backlog: HashMap<ConnId, usize>,
    /// The block each urgent piece is picked from first (the first block a
    /// read waits on, when its blocks are verified alone): blocks are
    /// asked in order from there, wrapping around.
    hot: HashMap<u32, u32>,
    /// Bumped whenever stored bytes may leave the cache or be overwritten
    /// (a piece completes, fails, is evicted or dropped, a verified block
    /// is claimed again): a read of partial pieces checks it did not move
    /// while it read ([`Picker::data_epoch`]).
    epoch: u64,
    /// Counts the reads that made pieces urgent ([`Picker::add_urgent`]).
    urgent_epoch: u64,
    /// The `urgent_epoch` at each picking connection's last pick: whether
    /// it had its chance at the blocks of the latest read.
    picked_epoch: HashMap<ConnId, u64>,
}

impl Picker {
    /// A picker for `num_pieces` pieces of `piece_length` bytes (the last one
    /// shorter, `total_length` in all). `max_partial_bytes` bounds the cache
    /// space of partial pieces other than urgent ones (at least two pieces).
    pub fn new(
        piece_length: u64,
        total_length: u64,
        num_pieces: u32,
        max_partial_bytes: u64,
    ) -> Picker {
        let max_partial = (max_partial_bytes / piece_length.max(1)).max(2) as usize;
        Picker {
            piece_length,
            total_length,
            num_pieces,
            have: vec![false; num_pieces as usize],
            have_count: 0,
            unverified: BTreeSet::new(),
            partial: HashMap::new(),
            verifying: BTreeSet::new(),
            urgent: BTreeMap::new(),
            readahead: HashMap::new(),
            prefetch: false,
            max_partial,
            rates: HashMap::new(),
            backlog: HashMap::new(),
            hot: HashMap::new(),
            epoch: 0,
            urgent_epoch: 0,
            picked_epoch: HashMap::new(),
        }
    }

    /// Size in bytes of piece `index` (the last one may be shorter).
    pub fn piece_size(&self, index: u32) -> u32 {
        let start = index as u64 * self.piece_length;
        (self.total_length - start).min(self.piece_length) as u32
    }

    pub fn num_pieces(&self) -> u32 {
        self.num_pieces
    }
    pub fn has(&self, index: u32) -> bool {
        self.have.get(index as usize).copied().unwrap_or(false)
    }
    pub fn have_count(&self) -> u32 {
        self.have_count
    }
    pub fn is_complete(&self) -> bool {
        self.have_count == self.num_pieces
    }
    /// Our pieces as a BEP 3 bitfield (high bit of byte 0 = piece 0).
    pub fn bitfield(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.num_pieces.div_ceil(8) as usize];
        for (i, &h) in self.have.iter().enumerate() {
            if h {
                out[i / 8] |= 0x80 >> (i % 8);
            }
        }
        out
    }

    /// The pieces held in the cache, verified or not, as a BEP 3 bitfield:
    /// what the cache's `have` file records (resume), never what is
    /// advertised to peers (that is [`Picker::bitfield`]).
    pub fn cached_bitfield(&self) -> Vec<u8> {
        let mut out = self.bitfield();
        for &i in &self.unverified {
            out[i as usize / 8] |= 0x80 >> (i % 8);
        }
        out
    }

    /// Marks piece `index` cached but not verified (listed in the cache's
    /// `have` file at start): neither had nor wanted until
    /// [`Picker::set_have`] (it hashed right) or [`Picker::evict`] (it did
    /// not, or it is evicted). Ignored for a piece already had or out of
    /// range.
    pub fn set_unverified(&mut self, index: u32) {
        if index < self.num_pieces && !self.has(index) {
            self.unverified.insert(index);
        }
    }

    /// Whether piece `index` is cached but not verified yet.
    pub fn is_unverified(&self, index: u32) -> bool {
        self.unverified.contains(&index)
    }

    /// How many cached pieces are not verified yet.
    pub fn unverified_count(&self) -> u32 {
        self.unverified.len() as u32
    }

    /// The next cached piece to verify in the background: the first
    /// unverified piece inside a readahead window (a read is coming), else
    /// the first unverified piece at or after `from`; `skip` excludes
    /// pieces (being hashed already). None when no such piece is left.
    pub fn next_unverified(&self, from: u32, skip: &dyn Fn(u32) -> bool) -> Option<u32> {
        let mut windows: Vec<(u32, u32)> = self.readahead.values().copied().collect();
        windows.sort_unstable();
        windows
            .into_iter()
            .flat_map(|(s, e)| self.unverified.range(s..e))
            .chain(self.unverified.range(from..))
            .copied()
            .find(|&i| !skip(i))
    }

    /// Marks a piece verified and stored.
    pub fn set_have(&mut self, index: u32) {
        self.verifying.remove(&index);
        self.unverified.remove(&index);
        self.partial.remove(&index);
        if let Some(h) = self.have.get_mut(index as usize)
            && !*h
        {
            *h = true;
            self.have_count += 1;
        }
    }

    /// Forgets a piece, verified or not (its stored bytes were found wrong
    /// or missing).
    pub fn unset_have(&mut self, index: u32) {
        self.epoch += 1;
        self.verifying.remove(&index);
        self.unverified.remove(&index);
        if let Some(h) = self.have.get_mut(index as usize)
            && *h
        {
            *h = false;
            self.have_count -= 1;
        }
    }

    /// Forgets a piece that is being evicted from the cache: neither had
    /// nor wanted until [`Picker::verify_failed`] says its space is freed
    /// (so a new copy is never written before the old one is punched out).
    pub fn evict(&mut self, index: u32) {
        self.unset_have(index);
        if index < self.num_pieces {
            self.verifying.insert(index);
        }
    }

    /// Takes piece `index` for a copy made locally: true (it is then being
    /// verified) unless it is had, cached, being verified or downloaded.
    pub fn claim_piece(&mut self, index: u32) -> bool {
        if index >= self.num_pieces
            || self.has(index)
            || self.unverified.contains(&index)
            || self.verifying.contains(&index)
            || self.partial.contains_key(&index)
        {
            return false;
        }
        self.verifying.insert(index);
        true
    }

    /// Whether a pending read waits on `index`.
    pub fn is_urgent(&self, index: u32) -> bool {
        self.urgent.contains_key(&index)
    }

    /// A completed piece failed its SHA-1: it becomes missing again.
    pub fn verify_failed(&mut self, index: u32) {
        self.epoch += 1;
        self.verifying.remove(&index);
    }

    /// One more read waits on `index`.
    pub fn add_urgent(&mut self, index: u32) {
        *self.urgent.entry(index).or_default() += 1;
        self.urgent_epoch += 1;
    }
    /// A read no longer waits on `index`.
    pub fn remove_urgent(&mut self, index: u32) {
        if let Some(n) = self.urgent.get_mut(&index) {
            *n -= 1;
            if *n == 0 {
                self.urgent.remove(&index);
                self.hot.remove(&index);
            }
        }
    }
    /// Sets (or with an empty range clears) the readahead window of `handle`.
    pub fn set_readahead(&mut self, handle: u64, start: u32, end: u32) {
        if start >= end {
            self.readahead.remove(&handle);
        } else {
            self.readahead
                .insert(handle, (start, end.min(self.num_pieces)));
        }
    }
    pub fn set_prefetch(&mut self, on: bool) {
        self.prefetch = on;
    }

    /// Whether any piece that `peer_has` holds is still wanted by us.
    pub fn interesting(&self, peer_has: &dyn Fn(u32) -> bool) -> bool {
        self.candidates().any(peer_has)
    }

    /// Wanted pieces in priority order, with duplicates (cheap to skip).
    fn candidates(&self) -> impl Iterator<Item = u32> + '_ {
        let urgent = self.urgent.keys().copied();
        let mut windows: Vec<(u32, u32)> = self.readahead.values().copied().collect();
        windows.sort_unstable();
        let ahead = windows.into_iter().flat_map(|(s, e)| s..e);
        let rest = (0..self.num_pieces).filter(move |_| self.prefetch);
        urgent.chain(ahead).chain(rest).filter(|&p| {
            !self.has(p) && !self.verifying.contains(&p) && !self.unverified.contains(&p)
        })
    }

    /// Whether `index` is wanted by anyone now.
    pub fn wanted(&self, index: u32) -> bool {
        self.urgent.contains_key(&index)
            || self.prefetch
            || self
                .readahead
                .values()
                .any(|&(s, e)| (s..e).contains(&index))
    }

    /// Picks up to `max` block requests for connection `conn`, whose peer
    /// holds the pieces for which `peer_has` is true.
    #[cfg(test)]
    pub fn pick(&mut self, conn: ConnId, peer_has: &dyn Fn(u32) -> bool, max: usize) -> Vec<Req> {
        let load = ConnLoad::default();
        self.pick_within(conn, peer_has, max, max, load, Instant::now())
            .0
    }

    /// [`Picker::pick`] for a connection with `load` (its measured rate and
    /// queue), with at most `max_ahead` of the requests for pieces no read
    /// waits on (the memory budget's share); true when that bound left out
    /// a block that would have been requested.
    ///
    /// Blocks that reads wait on are shared out over the connections in
    /// proportion to their measured rates (at most [`Picker::urgent_room`]
    /// for this one), so a read's blocks come from every peer at once, the
    /// fastest taking the most, and each block is due at a time from the
    /// peer's rate and queue ([`ConnLoad::due`]). Such a block is asked of
    /// a second peer only once it is late from the first (the end-game
    /// rule, applied per block as libtorrent's piece deadlines do).
    pub fn pick_within(
        &mut self,
        conn: ConnId,
        peer_has: &dyn Fn(u32) -> bool,
        max: usize,
        max_ahead: usize,
        load: ConnLoad,
        now: Instant,
    ) -> (Vec<Req>, bool) {
        let mut out = Vec::new();
        let mut ahead = 0usize;
        let mut limited = false;
        self.rates.insert(conn, load.rate);
        self.note_queue(conn, load.outstanding);
        self.picked_epoch.insert(conn, self.urgent_epoch);
        if max == 0 {
            return (out, false);
        }
        let mut urgent_room = self.urgent_room(conn);
        let mut queued = load.outstanding;
        let cands: Vec<u32> = {
            let mut seen = BTreeSet::new();
            self.candidates()
                .filter(|&p| peer_has(p) && seen.insert(p))
                .take(4096)
                .collect()
        };
        for &p in &cands {
            if out.len() >= max {
                return (out, limited);
            }
            let urgent = self.urgent.contains_key(&p);
            if urgent && urgent_room == 0 {
                // Its share of the read's blocks is asked already: the
                // rest are for the other peers.
                continue;
            }
            if !urgent && ahead >= max_ahead {
                // Only pieces reads wait on past the budget's share.
                limited |= self.partial.get(&p).is_none_or(|part| {
                    part.blocks.iter().any(|b| matches!(b, BlockState::Missing))
                });
                continue;
            }
            if !self.partial.contains_key(&p) {
                // Pieces left partial by a reader that sought away do not
                // count: they keep their blocks for a return, and
                // `drop_unwanted` bounds them.
                let non_urgent = self
                    .partial
                    .keys()
                    .filter(|k| !self.urgent.contains_key(k) && self.wanted(**k))
                    .count();
                if !urgent && non_urgent >= self.max_partial {
                    continue;
                }
                let size = self.piece_size(p);
                let nblocks = size.div_ceil(BLOCK) as usize;
                self.partial.insert(
                    p,
                    Partial {
                        blocks: vec![BlockState::Missing; nblocks],
                        received: 0,
                        writing: 0,
                        contributors: Vec::new(),
                        sources: vec![None; nblocks],
                        alone: vec![false; nblocks],
                    },
                );
            }
            let size = self.piece_size(p);
            let hot = self.hot.get(&p).copied().unwrap_or(0) as usize;
            let part = self.partial.get_mut(&p).expect("just inserted");
            let n = part.blocks.len();
            for k in 0..n {
                let b = (hot + k) % n;
                let st = &mut part.blocks[b];
                if out.len() >= max || (urgent && urgent_room == 0) {
                    break;
                }
                if matches!(st, BlockState::Missing) {
                    if !urgent && ahead >= max_ahead {
                        limited = true;
                        break;
                    }
                    let due = load.due(now, queued);
                    *st = BlockState::Requested(vec![Ask { conn, due }]);
                    out.push(block_req(p, b, size));
                    queued += 1;
                    if urgent {
                        urgent_room -= 1;
                    } else {
                        ahead += 1;
                    }
                }
            }
        }
        // End-game, per block: a block a read waits on that is late from
        // the one peer it was asked of is asked of this peer too.
        for &p in cands.iter().filter(|p| self.urgent.contains_key(p)) {
            if out.len() >= max {
                break;
            }
            let size = self.piece_size(p);
            if let Some(part) = self.partial.get_mut(&p) {
                for (b, st) in part.blocks.iter_mut().enumerate() {
                    if out.len() >= max {
                        break;
                    }
                    if let BlockState::Requested(by) = st
                        && by.len() < 2
                        && by.iter().all(|a| a.conn != conn && a.due < now)
                    {
                        by.push(Ask {
                            conn,
                            due: load.due(now, queued),
                        });
                        out.push(block_req(p, b, size));
                        queued += 1;
                    }
                }
            }
        }
        (out, limited)
    }

    fn piece_size_checked(&self, index: u32) -> Option<u32> {
        (index < self.num_pieces).then(|| self.piece_size(index))
    }

    /// Returns to "missing" every block requested only from `conn` (it
    /// choked us, timed out or disconnected). Requests shared with another
    /// connection in end-game stay with that one.
    pub fn release(&mut self, conn: ConnId) {
        self.rates.remove(&conn);
        self.backlog.remove(&conn);
        self.picked_epoch.remove(&conn);
        // Its blocks are back for the fastest peers to take first.
        self.urgent_epoch += 1;
        for part in self.partial.values_mut() {
            for st in part.blocks.iter_mut() {
                if let BlockState::Requested(by) = st {
                    by.retain(|a| a.conn != conn);
                    if by.is_empty() {
                        *st = BlockState::Missing;
                    }
                }
            }
        }
    }

    /// Forgets every block received from `conns` in pieces still being
    /// assembled (their sender was banned): those blocks are fetched again.
    pub fn discard_blocks_from(&mut self, conns: &[ConnId]) {
        self.epoch += 1;
        for part in self.partial.values_mut() {
            for (st, src) in part.blocks.iter_mut().zip(part.sources.iter_mut()) {
                match st {
                    BlockState::Received if src.is_some_and(|c| conns.contains(&c)) => {
                        *st = BlockState::Missing;
                        *src = None;
                        part.received -= 1;
                    }
                    // Dropped once written (a second write of the block
                    // must not race with this one).
                    BlockState::Writing { conn, discard } if conns.contains(conn) => {
                        *discard = true;
                    }
                    _ => {}
                }
            }
            part.contributors.retain(|c| !conns.contains(c));
        }
    }

    /// Returns one request of `conn` to "missing" (e.g. the peer rejected it).
    pub fn release_one(&mut self, conn: ConnId, req: &Req) {
        if let Some(part) = self.partial.get_mut(&req.index)
            && let Some(st) = part.blocks.get_mut((req.begin / BLOCK) as usize)
            && let BlockState::Requested(by) = st
        {
            by.retain(|a| a.conn != conn);
            if by.is_empty() {
                *st = BlockState::Missing;
            }
        }
    }

    /// Drops partial pieces nobody wants any more and that hold no data
    /// (none written, none being written), and, past `max_partial` of them,
    /// those with the fewest blocks received (their blocks are fetched
    /// again if a reader comes back); returns their indices so their
    /// outstanding requests can be cancelled and their cache space freed.
    pub fn drop_unwanted(&mut self) -> Vec<u32> {
        let mut left: Vec<(usize, u32)> = Vec::new();
        let mut drop: Vec<u32> = Vec::new();
        for (&i, p) in &self.partial {
            if p.writing > 0 || self.wanted(i) {
                continue;
            }
            if p.received == 0 {
                drop.push(i);
            } else {
                left.push((p.received, i));
            }
        }
        if left.len() > self.max_partial {
            left.sort_unstable();
            let extra = left.len() - self.max_partial;
            drop.extend(left.iter().take(extra).map(|&(_, i)| i));
        }
        for i in &drop {
            self.partial.remove(i);
        }
        if !drop.is_empty() {
            self.epoch += 1;
        }
        drop
    }

    /// Whether block `req` is still outstanding from `conn` (requested of
    /// it and not received from anyone).
    pub fn is_outstanding(&self, conn: ConnId, req: &Req) -> bool {
        self.partial
            .get(&req.index)
            .and_then(|p| p.blocks.get((req.begin / BLOCK) as usize))
            .is_some_and(
                |b| matches!(b, BlockState::Requested(by) if by.iter().any(|a| a.conn == conn)),
            )
    }

    /// Blocks of pieces that reads wait on, held by the peer, not yet
    /// requested from anyone (so a full request queue should make room).
    pub fn urgent_unrequested(&self, peer_has: &dyn Fn(u32) -> bool) -> usize {
        self.urgent
            .keys()
            .filter(|&&p| {
                peer_has(p)
                    && !self.has(p)
                    && !self.verifying.contains(&p)
                    && !self.unverified.contains(&p)
            })
            .map(|p| match self.partial.get(p) {
                Some(part) => part
                    .blocks
                    .iter()
                    .filter(|b| matches!(b, BlockState::Missing))
                    .count(),
                None => self.piece_size(*p).div_ceil(BLOCK) as usize,
            })
            .sum()
    }

    /// Pieces with blocks requested from peers and not received yet, with
    /// how many such blocks each has, ascending by piece index.
    pub fn requested_pieces(&self) -> Vec<(u32, usize)> {
        let mut out: Vec<(u32, usize)> = self
            .partial
            .iter()
            .map(|(&i, part)| {
                let n = part
                    .blocks
                    .iter()
                    .filter(|b| matches!(b, BlockState::Requested(_)))
                    .count();
                (i, n)
            })
            .filter(|&(_, n)| n > 0)
            .collect();
        out.sort_unstable();
        out
    }

    /// Partial pieces in memory (for stats).
    #[cfg(test)]
    pub fn partial_count(&self) -> usize {
        self.partial.len()
    }
}

fn block_req(index: u32, block: usize, piece_size: u32) -> Req {
    let begin = block as u32 * BLOCK;
    Req {
        index,
        begin,
        length: (piece_size - begin).min(BLOCK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picker() -> Picker {
        // 4 pieces of 32 KiB, the last one 100 bytes.
        Picker::new(32768, 3 * 32768 + 100, 4, 1 << 20)
    }

    #[test]
    fn nothing_is_requested_unless_wanted() {
        let mut p = picker();
        assert!(p.pick(1, &|_| true, 100).is_empty());
        p.add_urgent(3);
        let reqs = p.pick(1, &|_| true, 100);
        assert_eq!(
            reqs,
            vec![Req {
                index: 3,
                begin: 0,
                length: 100
            }]
        );
    }

    #[test]
    fn urgent_before_readahead_before_prefetch() {
        let mut p = picker();
        p.set_prefetch(true);
        p.set_readahead(7, 1, 3);
        p.add_urgent(2);
        let reqs = p.pick(1, &|_| true, 100);
        let order: Vec<u32> = reqs.iter().map(|r| r.index).collect();
        assert_eq!(order, vec![2, 2, 1, 1, 0, 0, 3]);
    }

    /// A block from `conn` taken and written at once.
    fn arrive(p: &mut Picker, conn: ConnId, index: u32, begin: u32, len: u32) -> BlockOutcome {
        match p.claim_block(conn, index, begin, len) {
            BlockOutcome::Write => p.block_written(conn, index, begin),
            o => o,
        }
    }

    #[test]
    fn blocks_complete_a_piece_and_bad_blocks_are_refused() {
        let mut p = picker();
        p.add_urgent(0);
        let reqs = p.pick(1, &|_| true, 100);
        assert_eq!(reqs.len(), 2);
        assert_eq!(arrive(&mut p, 1, 9, 0, BLOCK), BlockOutcome::Unrequested);
        assert_eq!(arrive(&mut p, 1, 1, 0, BLOCK), BlockOutcome::Duplicate);
        assert_eq!(arrive(&mut p, 1, 0, 5, 10), BlockOutcome::Unrequested);
        assert_eq!(arrive(&mut p, 1, 0, 0, 10), BlockOutcome::Unrequested);
        // kept even from a peer it was not requested from
        assert_eq!(p.claim_block(2, 0, 0, BLOCK), BlockOutcome::Write);
        // a second copy while the first is being written is a duplicate
        assert_eq!(p.claim_block(1, 0, 0, BLOCK), BlockOutcome::Duplicate);
        assert_eq!(p.block_written(2, 0, 0), BlockOutcome::Stored);
        assert_eq!(arrive(&mut p, 1, 0, 0, BLOCK), BlockOutcome::Duplicate);
        match arrive(&mut p, 1, 0, BLOCK, BLOCK) {
            BlockOutcome::Complete {
                index,
                contributors,
                sources,
            } => {
                assert_eq!(sources, vec![2, 1]);
                assert_eq!(index, 0);
                assert_eq!(contributors, vec![2, 1]);
            }
            o => panic!("{o:?}"),
        }
        // verifying: not picked again
        assert!(p.pick(1, &|_| true, 100).is_empty());
        p.verify_failed(0);
        assert_eq!(p.pick(1, &|_| true, 100).len(), 2);
    }

    #[test]
    fn a_failed_write_makes_the_block_missing_again() {
        let mut p = picker();
        p.add_urgent(0);
        assert_eq!(p.pick(1, &|_| true, 100).len(), 2);
        assert_eq!(p.claim_block(1, 0, 0, BLOCK), BlockOutcome::Write);
        // a piece with a block being written is not dropped
        p.remove_urgent(0);
        assert!(p.drop_unwanted().is_empty());
        p.add_urgent(0);
        p.block_write_failed(0, 0);
        p.release(1);
        assert_eq!(p.pick(2, &|_| true, 100).len(), 2);
    }

    #[test]
    fn blocks_of_a_banned_sender_are_fetched_again() {
        let mut p = picker();
        p.add_urgent(0);
        let reqs = p.pick(1, &|_| true, 1);
        assert_eq!(reqs.len(), 1);
        assert_eq!(arrive(&mut p, 1, 0, 0, BLOCK), BlockOutcome::Stored);
        p.discard_blocks_from(&[1]);
        p.release(1); // its connection is closed
        // both blocks are wanted again, from anyone
        assert_eq!(p.pick(2, &|_| true, 10).len(), 2);
        // a block of a sender banned while it was being written is dropped
        assert_eq!(p.claim_block(3, 0, 0, BLOCK), BlockOutcome::Write);
        p.discard_blocks_from(&[3]);
        assert_eq!(p.block_written(3, 0, 0), BlockOutcome::Duplicate);
        p.release(2);
        assert_eq!(p.pick(4, &|_| true, 10).len(), 2);
    }

    /// Picks for `conn` with a measured `rate` (bytes/s) at time `now`.
    fn pick_at(p: &mut Picker, conn: ConnId, rate: f64, now: Instant, max: usize) -> Vec<Req> {
        let load = ConnLoad {
            rate,
            outstanding: 0,
        };
        p.pick_within(conn, &|_| true, max, max, load, now).0
    }

    #[test]
    fn late_blocks_of_reads_are_asked_again_once() {
        let mut p = picker();
        let now = Instant::now();
        p.add_urgent(0);
        p.set_readahead(1, 1, 2);
        let a = pick_at(&mut p, 1, 0.0, now, 100);
        assert_eq!(a.len(), 4);
        // Not late yet: nobody else asks for them.
        assert!(pick_at(&mut p, 2, 0.0, now, 100).is_empty());
        // Late: the read's blocks (not the readahead's) go to a second peer,
        // and to no third.
        let later = now + Duration::from_secs(5);
        let b = pick_at(&mut p, 2, 0.0, later, 100);
        assert_eq!(b.iter().map(|r| r.index).collect::<Vec<_>>(), vec![0, 0]);
        assert!(pick_at(&mut p, 3, 0.0, later, 100).is_empty());
        p.release(1);
        // piece 1 blocks are missing again; piece 0 blocks stay with conn 2
        let c = pick_at(&mut p, 3, 0.0, later, 100);
        assert_eq!(c.iter().map(|r| r.index).collect::<Vec<_>>(), vec![1, 1]);
    }

    #[test]
    fn blocks_of_a_read_are_shared_by_measured_rate() {
        // One urgent piece of 16 blocks; four peers, one three times
        // faster. 16 blocks are for three peers (BLOCKS_PER_PEER each): the
        // fastest three, by rate then id, in equal parts.
        let mut p = Picker::new(16 * BLOCK as u64, 16 * BLOCK as u64, 1, 1 << 20);
        let now = Instant::now();
        for (conn, rate) in [(1, 3e6), (2, 1e6), (3, 1e6), (4, 1e6)] {
            assert!(pick_at(&mut p, conn, rate, now, 0).is_empty());
        }
        p.add_urgent(0);
        let counts: Vec<usize> = [(1, 3e6), (2, 1e6), (3, 1e6), (4, 1e6)]
            .iter()
            .map(|&(c, r)| pick_at(&mut p, c, r, now, 100).len())
            .collect();
        assert_eq!(counts, vec![6, 6, 4, 0]);
        assert_eq!(p.urgent_room(1), 0);
        // Blocks asked are never asked again while on time.
        assert!(pick_at(&mut p, 1, 3e6, now, 100).is_empty());
        // A peer that went away: its blocks are for the three left, by rate.
        p.release(2);
        let again: usize = [(4, 1e6), (3, 1e6), (1, 3e6)]
            .iter()
            .map(|&(c, r)| pick_at(&mut p, c, r, now, 100).len())
            .sum();
        assert_eq!(again, 6);
    }

    #[test]
    fn unverified_pieces_are_neither_advertised_nor_requested() {
        let mut p = picker();
        p.set_unverified(1);
        p.set_unverified(2);
        p.add_urgent(1);
        p.set_readahead(5, 0, 4);
        // Piece 1 is urgent but cached: hashed locally, not requested.
        let order: Vec<u32> = p.pick(1, &|_| true, 100).iter().map(|r| r.index).collect();
        assert_eq!(order, vec![0, 0, 3]);
        assert_eq!(p.bitfield(), vec![0]);
        assert_eq!(p.cached_bitfield(), vec![0b0110_0000]);
        assert!(!p.has(1) && p.is_unverified(1));
        assert_eq!(p.next_unverified(0, &|_| false), Some(1));
        assert_eq!(p.next_unverified(0, &|i| i == 1), Some(2));
        // Verified: had and advertised.
        p.set_have(1);
        assert_eq!(p.bitfield(), vec![0b0100_0000]);
        assert_eq!(p.unverified_count(), 1);
        // Bad (or evicted): missing, wanted again once its space is freed.
        p.evict(2);
        assert!(!p.is_unverified(2) && !p.has(2));
        assert_eq!(p.cached_bitfield(), vec![0b0100_0000]);
        p.verify_failed(2);
        p.release(1);
        assert!(p.pick(2, &|_| true, 100).iter().any(|r| r.index == 2));
        assert_eq!(p.next_unverified(0, &|_| false), None);
    }

    #[test]
    fn pieces_left_partial_by_a_seek_neither_block_readahead_nor_pile_up() {
        let mut p = Picker::new(32768, 10 * 32768, 10, 0); // budget: 2 pieces
        p.set_readahead(7, 0, 2);
        assert_eq!(p.pick(1, &|_| true, 3).len(), 3);
        assert_eq!(arrive(&mut p, 1, 0, 0, BLOCK), BlockOutcome::Stored);
        assert_eq!(arrive(&mut p, 1, 1, 0, BLOCK), BlockOutcome::Stored);
        // The reader seeks: pieces 0 and 1 keep their blocks, and do not
        // count against the budget of the new readahead.
        p.set_readahead(7, 5, 7);
        assert!(p.drop_unwanted().is_empty());
        assert!(!p.wanted(0));
        let r = p.pick(1, &|_| true, 100);
        assert_eq!(
            r.iter().map(|r| r.index).collect::<Vec<_>>(),
            vec![5, 5, 6, 6]
        );
        assert_eq!(arrive(&mut p, 1, 5, 0, BLOCK), BlockOutcome::Stored);
        assert_eq!(arrive(&mut p, 1, 6, 0, BLOCK), BlockOutcome::Stored);
        assert_eq!(
            arrive(&mut p, 1, 6, BLOCK, BLOCK),
            BlockOutcome::Complete {
                index: 6,
                contributors: vec![1],
                sources: vec![1, 1],
            }
        );
        // Another seek: three pieces left partial, one past the budget:
        // one with the fewest blocks goes.
        p.set_readahead(7, 8, 10);
        p.release(1);
        let dropped = p.drop_unwanted();
        assert_eq!(dropped.len(), 1);
        assert!([0, 1, 5].contains(&dropped[0]));
        assert_eq!(p.partial_count(), 2);
    }

    #[test]
    fn partial_budget_bounds_memory_except_for_reads() {
        let mut p = Picker::new(32768, 10 * 32768, 10, 0); // budget: 2 pieces
        p.set_prefetch(true);
        let reqs = p.pick(1, &|_| true, 1000);
        assert_eq!(p.partial_count(), 2);
        assert_eq!(reqs.len(), 4);
        p.add_urgent(9);
        p.pick(1, &|_| true, 1000);
        assert_eq!(p.partial_count(), 3);
        assert_eq!(p.bitfield().len(), 2);
    }
}
