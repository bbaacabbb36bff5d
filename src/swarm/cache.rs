//! The cache of one torrent: which stored pieces to keep within its byte
//! budget (least recently read are evicted first), and pins that keep the
//! pieces a read or an upload is using from being evicted meanwhile.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::picker::Picker;
use super::{State, StorageKind, Swarm};
use crate::metainfo::Info;

/// The cache part of the swarm's state.
pub(super) struct Cache {
    /// Stored pieces, least recently read (or stored) last out: the
    /// eviction order of a bounded cache.
    lru: lru::LruCache<u32, ()>,
    /// Bytes of the pieces in `lru`.
    cached_bytes: u64,
    /// Pieces being downloaded (their blocks are written to the cache as
    /// they arrive) or verified, with their sizes: they count against the
    /// bound from their first block on, so the cache never holds more than
    /// its bound, partial pieces included.
    partial: HashMap<u32, u64>,
    /// Bytes of the pieces in `partial`.
    partial_bytes: u64,
    /// The cache bound in bytes (None: unlimited), set at load.
    budget: Option<u64>,
    /// Pieces being read (from the cache, for a reader or an upload, or
    /// hashed by the verifier), with the number of reads: never evicted
    /// meanwhile.
    pins: HashMap<u32, u32>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            lru: lru::LruCache::unbounded(),
            cached_bytes: 0,
            partial: HashMap::new(),
            partial_bytes: 0,
            budget: None,
            pins: HashMap::new(),
        }
    }
}

impl Cache {
    /// At load: the bound, and the pieces (of `bytes` in all) the cache
    /// holds, in index order.
    pub(super) fn load(&mut self, budget: Option<u64>, held: &[u32], bytes: u64) {
        self.budget = budget;
        for &i in held {
            self.lru.put(i, ());
        }
        self.cached_bytes = bytes;
    }

    pub(super) fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Piece `index` (of `size` bytes) gets its first block: true if it was
    /// not counted yet (room is to be made for it).
    pub(super) fn begin_partial(&mut self, index: u32, size: u64) -> bool {
        if self.partial.contains_key(&index) {
            return false;
        }
        self.partial.insert(index, size);
        self.partial_bytes += size;
        true
    }

    /// Piece `index` is no longer being downloaded or verified.
    pub(super) fn end_partial(&mut self, index: u32) {
        if let Some(size) = self.partial.remove(&index) {
            self.partial_bytes -= size;
        }
    }

    /// Piece `index` (of `size` bytes) was stored: the most recently used.
    pub(super) fn insert(&mut self, index: u32, size: u64) {
        self.end_partial(index);
        if self.lru.put(index, ()).is_none() {
            self.cached_bytes += size;
        }
    }

    /// Piece `index` (of `size` bytes) is no longer stored.
    pub(super) fn remove(&mut self, index: u32, size: u64) {
        if self.lru.pop(&index).is_some() {
            self.cached_bytes -= size;
        }
    }

    /// One more read of piece `index`; it counts as just used.
    pub(super) fn pin(&mut self, index: u32) {
        *self.pins.entry(index).or_default() += 1;
        self.lru.promote(&index);
    }

    /// One read of piece `index` fewer.
    pub(super) fn unpin(&mut self, index: u32) {
        if let Some(n) = self.pins.get_mut(&index) {
            *n -= 1;
            if *n == 0 {
                self.pins.remove(&index);
            }
        }
    }

    /// Pins piece `index` without making it recently used (the verifier).
    pub(super) fn pin_quietly(&mut self, index: u32) {
        *self.pins.entry(index).or_default() += 1;
    }

    #[cfg(test)]
    pub(super) fn cached_bytes(&self) -> u64 {
        self.cached_bytes
    }

    /// Forgets least recently used pieces (not pinned, not urgent in
    /// `picker`) until `extra` more bytes fit within the budget. Returns
    /// the pieces evicted (the picker already forgot them; their space is
    /// still to be freed) and whether `extra` fits now.
    fn evict_for(&mut self, picker: &mut Picker, extra: u64) -> (Vec<u32>, bool) {
        let Some(budget) = self.budget else {
            return (Vec::new(), true);
        };
        let mut victims = Vec::new();
        while self.cached_bytes + self.partial_bytes + extra > budget {
            let pins = &self.pins;
            let Some(i) = self
                .lru
                .iter()
                .rev()
                .map(|(i, _)| *i)
                .find(|i| !pins.contains_key(i) && !picker.is_urgent(*i))
            else {
                break; // everything left is being read
            };
            self.lru.pop(&i);
            self.cached_bytes -= picker.piece_size(i) as u64;
            picker.evict(i);
            victims.push(i);
        }
        (
            victims,
            self.cached_bytes + self.partial_bytes + extra <= budget,
        )
    }
}

impl Swarm {
    /// Saves the cache's `have` file: every piece the cache holds, verified
    /// or not yet (an unverified piece is hashed again at the next start
    /// anyway; one found bad is no longer listed).
    pub(super) fn save_resume(&self) {
        if let Some(l) = self.loaded() {
            let bf = self.lock().picker.as_ref().map(|p| p.cached_bitfield());
            if let Some(bf) = bf
                && let Err(e) = l.storage.save_have(&bf)
            {
                tracing::warn!("{}: cannot save resume data: {e}", self.info_hash);
            }
        }
    }

    /// The cache bound for a torrent that holds `held` bytes at load (see
    /// [`super::SwarmConfig::cache_size`]); None means unlimited. A bound of
    /// at least the torrent's size is no bound.
    pub(super) fn cache_budget(&self, info: &Info, held: u64, complete: bool) -> Option<u64> {
        let budget = match (self.cfg.cache_size, &self.cfg.storage) {
            (Some(b), _) => b,
            (None, _) if complete => return None,
            (None, StorageKind::Memory) => return None,
            (None, StorageKind::Files(dir)) => held.saturating_add(free_space(dir)? / 2),
        };
        (budget < info.total_length).then_some(budget)
    }

    /// Evicts least recently read pieces (not pinned by a read, not waited
    /// on) until the cache is within its bound: each is forgotten first
    /// (no longer had, so never advertised in a bitfield, served or read
    /// again), then its space is freed. Runs blocking I/O.
    pub(super) fn evict_over_budget(&self) {
        self.evict_to_fit(0);
    }

    /// Evicts (as [`Swarm::evict_over_budget`]) until `extra` more bytes
    /// fit within the bound; false when they do not (everything left is
    /// being read or waited on).
    pub(super) fn evict_to_fit(&self, extra: u64) -> bool {
        let (victims, fits) = {
            let st = &mut *self.lock();
            let Some(picker) = st.picker.as_mut() else {
                return true;
            };
            st.cache.evict_for(picker, extra)
        };
        if victims.is_empty() {
            return fits;
        }
        let Some(loaded) = self.loaded() else {
            return fits;
        };
        for &i in &victims {
            if let Err(e) = loaded.storage.discard_piece(i) {
                tracing::warn!(
                    "{}: cannot free the space of evicted piece {i}: {e}",
                    self.info_hash
                );
            }
        }
        tracing::debug!("{}: evicted pieces {victims:?}", self.info_hash);
        {
            let mut st = self.lock();
            if let Some(p) = st.picker.as_mut() {
                for &i in &victims {
                    p.verify_failed(i); // wantable again
                }
            }
        }
        // A read may wait on an evicted piece again: ask for it.
        self.wake_peers();
        fits
    }

    /// Pins pieces `first..=last` if all are held (true): they are not
    /// evicted until [`Swarm::unpin`], and count as just read.
    pub(super) fn pin(&self, first: u32, last: u32) -> bool {
        pin_locked(&mut self.lock(), first, last)
    }

    /// Pins the pieces under absolute byte range `[start, end)` if all are
    /// verified and stored: they are not evicted while the returned guard
    /// lives (for readers that bypass [`Swarm::read`], such as a FUSE
    /// passthrough open of a cache file). `None` if one is missing or the
    /// range is empty.
    pub fn pin_range(self: &Arc<Self>, start: u64, end: u64) -> Option<PiecePin> {
        let pl = self.loaded()?.info.piece_length;
        if end <= start {
            return None;
        }
        let (first, last) = pieces_under(pl, start, end);
        self.pin(first, last).then(|| PiecePin {
            swarm: self.clone(),
            first,
            last,
        })
    }

    /// Releases a [`Swarm::pin`].
    pub(super) fn unpin(&self, first: u32, last: u32) {
        let mut st = self.lock();
        for i in first..=last {
            st.cache.unpin(i);
        }
    }
}

/// Pieces pinned by `Swarm::pin_range` (or by a read): never evicted
/// while this lives.
pub struct PiecePin {
    pub(super) swarm: Arc<Swarm>,
    pub(super) first: u32,
    pub(super) last: u32,
}

impl Drop for PiecePin {
    fn drop(&mut self) {
        self.swarm.unpin(self.first, self.last);
    }
}

/// Pins `first..=last` (see [`Swarm::pin`]) if all are held, under the
/// caller's lock.
pub(super) fn pin_locked(st: &mut State, first: u32, last: u32) -> bool {
    let Some(p) = st.picker.as_ref() else {
        return false;
    };
    if !(first..=last).all(|i| p.has(i)) {
        return false;
    }
    for i in first..=last {
        st.cache.pin(i);
    }
    true
}

/// The first and last piece (inclusive) under the non-empty absolute byte
/// range `[start, end)`, pieces being `pl` bytes.
pub(super) fn pieces_under(pl: u64, start: u64, end: u64) -> (u32, u32) {
    debug_assert!(end > start);
    ((start / pl) as u32, ((end - 1) / pl) as u32)
}

/// Bytes available to us on the filesystem holding `dir` (or its nearest
/// existing ancestor), per `statvfs`; None when it cannot be asked.
fn free_space(dir: &Path) -> Option<u64> {
    let mut d = dir;
    while !d.exists() {
        d = d.parent()?;
    }
    let vfs = nix::sys::statvfs::statvfs(d).ok()?;
    Some((vfs.blocks_available() as u64).saturating_mul(vfs.fragment_size() as u64))
}
