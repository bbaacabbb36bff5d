//! Reads of the piece space: a read waits until the pieces under it are
//! verified (missing pieces become urgent for the picker, cached ones are
//! hashed first), up to the read timeout; readahead windows of open files.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::cache::{PiecePin, pieces_under, pin_locked};
use super::picker::Picker;
use super::{State, Swarm};

/// A piece whose read timed out this recently fails the next read at once.
const RECENT_FAILURE: Duration = Duration::from_secs(2);

/// How often peers look for late blocks while a read waits.
const LATE_CHECK: Duration = Duration::from_millis(50);

/// The reads part of the swarm's state.
#[derive(Default)]
pub(super) struct Reads {
    /// Pieces whose read timed out, and when: the kernel retries a failed
    /// readahead at once, and that retry must not wait a second timeout.
    read_failures: HashMap<u32, Instant>,
    /// Pieces whose verified data could not be stored, with the error kind:
    /// reads waiting on them fail with it (ENOSPC on a full cache disk).
    store_errors: HashMap<u32, io::ErrorKind>,
}

impl Reads {
    /// Piece `index` could not be stored: reads waiting on it fail so.
    /// False when that was known already.
    pub(super) fn store_error(&mut self, index: u32, kind: io::ErrorKind) -> bool {
        self.store_errors.insert(index, kind).is_none()
    }

    /// Piece `index` was stored (or is asked for again): no error stands.
    pub(super) fn stored(&mut self, index: u32) {
        self.store_errors.remove(&index);
    }

    /// The first of `pieces` that could not be stored, with the error.
    fn store_error_of(&self, pieces: &[u32]) -> Option<(u32, io::ErrorKind)> {
        pieces
            .iter()
            .find_map(|i| self.store_errors.get(i).map(|k| (*i, *k)))
    }

    /// Whether a read of piece `index` timed out moments ago.
    fn failed_recently(&self, index: u32) -> bool {
        self.read_failures
            .get(&index)
            .is_some_and(|t| t.elapsed() < RECENT_FAILURE)
    }

    /// A read timed out waiting for `pieces`.
    fn timed_out(&mut self, pieces: &[u32]) {
        self.read_failures
            .retain(|_, t| t.elapsed() < RECENT_FAILURE);
        for &i in pieces {
            self.read_failures.insert(i, Instant::now());
        }
    }
}

/// Counts one read of the cache in progress while it lives (also when the
/// read's future is dropped halfway).
struct CacheRead<'a>(&'a AtomicUsize);

impl<'a> CacheRead<'a> {
    fn new(n: &'a AtomicUsize) -> CacheRead<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        CacheRead(n)
    }
}

impl Drop for CacheRead<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Swarm {
    /// Reads `len` bytes at absolute offset `offset` of `storage` on the
    /// blocking pool, counted as a cache read while it runs and in the
    /// memory budget (a read already waiting: counted, never refused).
    /// The outer error is the blocking task's failure, the inner one the
    /// storage's.
    pub(super) async fn read_stored(
        &self,
        storage: &Arc<dyn crate::storage::Storage>,
        offset: u64,
        len: usize,
    ) -> io::Result<io::Result<Vec<u8>>> {
        let storage = storage.clone();
        let _reading = CacheRead::new(&self.cache_reads);
        let _buf = super::budget::global().force(len as u64);
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len];
            storage.read_at(offset, &mut buf).map(|_| buf)
        })
        .await
        .map_err(io::Error::other)
    }

    /// Reads `len` bytes at absolute offset `offset` of the piece space,
    /// waiting for missing pieces (they become urgent) up to the read
    /// timeout. Cached pieces not verified since the start are hashed first
    /// (once, however many reads want them); a bad one is dropped and
    /// fetched like a missing piece. Errors: `TimedOut` with the reason
    /// logged, storage errors.
    pub async fn read(self: &Arc<Self>, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.read_woken(offset, len, None).await
    }

    /// A read of a file handle with its readahead window: sets the window
    /// of `handle` to the absolute byte range `window` (as
    /// [`Swarm::set_readahead`]), then reads as [`Swarm::read`]. The window
    /// and the read's urgent pieces are both set before the peers are
    /// woken, once: a peer woken by the window alone would take the read's
    /// own pieces as readahead (whole pieces from the first peer to pick,
    /// 16 blocks queued at one seeder), where an urgent piece's blocks are
    /// shared over every peer (see `Picker::pick_within`).
    pub async fn read_in_window(
        self: &Arc<Self>,
        handle: u64,
        window: (u64, u64),
        offset: u64,
        len: usize,
    ) -> io::Result<Vec<u8>> {
        self.read_woken(offset, len, Some((handle, window.0, window.1)))
            .await
    }

    /// [`Swarm::read`]; `window`: a handle's readahead window to set first
    /// (handle, absolute byte range), under the same lock as the read's
    /// urgent pieces.
    async fn read_woken(
        self: &Arc<Self>,
        offset: u64,
        len: usize,
        mut window: Option<(u64, u64, u64)>,
    ) -> io::Result<Vec<u8>> {
        let Some(loaded) = self.loaded() else {
            return Err(io::Error::other("no metadata"));
        };
        let total = loaded.info.total_length;
        if offset >= total || len == 0 {
            return Ok(Vec::new());
        }
        let len = (len as u64).min(total - offset) as usize;
        // v2 and hybrid: the blocks under the read, each verified alone.
        if let Some(r) = self.read_by_blocks(offset, len).await {
            return r;
        }
        let pl = loaded.info.piece_length;
        let (first, last) = pieces_under(pl, offset, offset + len as u64);
        for attempt in 0..2 {
            // Pinned on success: not evicted while we read them. The guard
            // unpins even if this future is dropped mid-read.
            self.wait_pieces(first, last, window.take()).await?;
            let pin = PiecePin {
                swarm: self.clone(),
                first,
                last,
            };
            let res = match self.read_stored(&loaded.storage, offset, len).await {
                Ok(r) => r,
                Err(e) => {
                    drop(pin);
                    return Err(e);
                }
            };
            if res.is_err() && attempt == 0 {
                let mut st = self.lock();
                let st = &mut *st;
                if let Some(p) = st.picker.as_mut() {
                    for i in first..=last {
                        p.unset_have(i);
                        st.cache.remove(i, p.piece_size(i) as u64);
                    }
                }
            }
            drop(pin);
            match res {
                Ok(buf) => return Ok(buf),
                Err(e) if attempt == 0 => {
                    tracing::warn!(
                        "{}: stored pieces {first}..={last} unreadable ({e}); fetching them again",
                        self.info_hash
                    );
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Waits until pieces `first..=last` are all verified, and pins them
    /// (the caller must [`Swarm::unpin`] them) on success. Cached,
    /// unverified pieces of the range are hashed now (see
    /// [`Swarm::start_verify`]); missing ones are requested from peers.
    ///
    /// Cancel-safe: when the future is dropped while it waits (an HTTP
    /// client that disconnected), its pieces stop being urgent at once.
    /// `window`: a handle's readahead window to set first, under the same
    /// lock (see [`Swarm::read_in_window`]).
    pub(super) async fn wait_pieces(
        self: &Arc<Self>,
        first: u32,
        last: u32,
        window: Option<(u64, u64, u64)>,
    ) -> io::Result<()> {
        // Set once the range is made urgent; dropping it (at the end, or
        // with this future) makes it not urgent again.
        let urgent: Urgent<'_>;
        let mut wake = false;
        let missing: Vec<u32> = {
            let mut st = self.lock();
            if let Some((handle, start, end)) = window {
                wake = self.window_locked(&mut st, handle, start, end);
            }
            if pin_locked(&mut st, first, last) {
                drop(st);
                if wake {
                    self.wake_peers();
                }
                return Ok(());
            }
            let recent = (first..=last).find(|i| st.reads.failed_recently(*i));
            let p = st
                .picker
                .as_mut()
                .ok_or_else(|| io::Error::other("no metadata"))?;
            if let Some(i) = recent
                && !p.has(i)
            {
                // The kernel retries a failed readahead at once: fail the
                // retry now instead of waiting a second read timeout.
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("piece {i} timed out moments ago"),
                ));
            }
            let m: Vec<u32> = (first..=last)
                .filter(|&i| !p.has(i) && !p.is_unverified(i))
                .collect();
            let unverified: Vec<u32> = (first..=last).filter(|&i| p.is_unverified(i)).collect();
            // Every piece of the range is urgent while the read waits, the
            // ones already held too: urgent pieces are never evicted, so
            // the read cannot lose them before the rest arrives.
            for i in first..=last {
                p.add_urgent(i);
            }
            urgent = Urgent {
                swarm: self,
                first,
                last,
            };
            // A new read tries again pieces that could not be stored before.
            for &i in &m {
                st.reads.stored(i);
            }
            // Cached pieces are hashed before they are served.
            for i in unverified {
                self.start_verify(&mut st, i);
            }
            m
        };
        if wake || !missing.is_empty() {
            self.wake_peers();
        }
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.cfg.read_timeout;
        let result = loop {
            let notified = self.piece_event.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (still, store_error) = {
                let mut st = self.lock();
                // Pinned under the same lock that sees them all: an
                // eviction cannot slip in between.
                if pin_locked(&mut st, first, last) {
                    (Vec::new(), None)
                } else {
                    let p = st.picker.as_ref().expect("loaded");
                    let still: Vec<u32> = (first..=last).filter(|&i| !p.has(i)).collect();
                    let err = st.reads.store_error_of(&still);
                    (still, err)
                }
            };
            if still.is_empty() {
                break Ok(());
            }
            if let Some((i, kind)) = store_error {
                break Err(io::Error::new(
                    kind,
                    format!("piece {i} was received but cannot be stored in the cache"),
                ));
            }
            if self.is_stopped() {
                break Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the mount is stopping",
                ));
            }
            // Every LATE_CHECK while the read waits the peers look again
            // for blocks of it that are late (asked of a second peer then,
            // see `Picker::pick_within`): no message from them may come
            // to wake them while a block is stuck.
            let check = tokio::time::Instant::now() + LATE_CHECK;
            if check < deadline {
                if tokio::time::timeout_at(check, notified).await.is_err() {
                    self.wake_peers();
                }
                continue;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let s = self.stats();
                tracing::error!(
                    "{}: read failed after {:.1} s: {} not received ({} connected, {} known); \
                     the read returns EIO (see --read-timeout)",
                    self.info_hash,
                    started.elapsed().as_secs_f64(),
                    piece_list(&still),
                    crate::plural::count(s.peers_connected, "peer", "peers"),
                    s.peers_known
                );
                self.lock().reads.timed_out(&still);
                break Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} not received within the read timeout",
                        piece_list(&still)
                    ),
                ));
            }
        };
        drop(urgent);
        result
    }

    /// Sets the readahead window (absolute byte range) of a file handle.
    pub fn set_readahead(&self, handle: u64, start: u64, end: u64) {
        if self.set_readahead_quiet(handle, start, end) {
            self.wake_peers();
        }
    }

    /// [`Swarm::set_readahead`] without waking the peers; true when the
    /// window was set (they should be woken).
    fn set_readahead_quiet(&self, handle: u64, start: u64, end: u64) -> bool {
        let mut st = self.lock();
        self.window_locked(&mut st, handle, start, end)
    }

    /// Sets a readahead window under the swarm's lock; true when set.
    fn window_locked(&self, st: &mut State, handle: u64, start: u64, end: u64) -> bool {
        let Some(l) = self.loaded() else {
            return false;
        };
        let pl = l.info.piece_length;
        let (s, e) = if end > start {
            ((start / pl) as u32, end.div_ceil(pl) as u32)
        } else {
            (0, 0)
        };
        // With a bounded cache, readahead gets at most a quarter of it:
        // pieces fetched ahead must not evict each other (or the pieces
        // being read) before they are read.
        let e = match st.cache.budget() {
            Some(b) => e.min(s.saturating_add(((b / pl) / 4).max(1) as u32)),
            None => e,
        };
        match st.picker.as_mut() {
            Some(p) => {
                p.set_readahead(handle, s, e);
                true
            }
            None => false,
        }
    }

    /// Whether every piece in absolute byte range `[start, end)` is cached,
    /// verified or not yet (see [`Swarm::has_range`]): readable without the
    /// network unless a piece turns out bad when a read hashes it.
    pub fn holds_range(&self, start: u64, end: u64) -> bool {
        self.range_all(start, end, |p, i| p.has(i) || p.is_unverified(i))
    }

    /// Whether `pred` holds for every piece under absolute byte range
    /// `[start, end)` (true for an empty range; false without metadata).
    fn range_all(&self, start: u64, end: u64, pred: impl Fn(&Picker, u32) -> bool) -> bool {
        let Some(l) = self.loaded() else { return false };
        if end <= start {
            return true;
        }
        let pl = l.info.piece_length;
        let st = self.lock();
        let Some(p) = st.picker.as_ref() else {
            return false;
        };
        let (first, last) = pieces_under(pl, start, end);
        (first..=last).all(|i| pred(p, i))
    }

    /// Whether every piece in absolute byte range `[start, end)` is verified
    /// (cached pieces not hashed yet since the start do not count).
    pub fn has_range(&self, start: u64, end: u64) -> bool {
        self.range_all(start, end, |p, i| p.has(i))
    }
}

/// Pieces `first..=last` made urgent by one waiting read; dropping it
/// takes that read's urgency back (also when the read's future is dropped).
struct Urgent<'a> {
    swarm: &'a Swarm,
    first: u32,
    last: u32,
}

impl Drop for Urgent<'_> {
    fn drop(&mut self) {
        let mut st = self.swarm.lock();
        if let Some(p) = st.picker.as_mut() {
            for i in self.first..=self.last {
                p.remove_urgent(i);
            }
        }
    }
}

/// "piece 7", or "pieces 3, 4, 9" (at most 8 named, then "... (N in all)"),
/// for messages about missing pieces.
pub(super) fn piece_list(pieces: &[u32]) -> String {
    const SHOWN: usize = 8;
    let named: Vec<String> = pieces.iter().take(SHOWN).map(u32::to_string).collect();
    let more = if pieces.len() > SHOWN {
        format!(", ... ({} in all)", pieces.len())
    } else {
        String::new()
    };
    match pieces.len() {
        1 => format!("piece {}", pieces[0]),
        _ => format!("pieces {}{more}", named.join(", ")),
    }
}
