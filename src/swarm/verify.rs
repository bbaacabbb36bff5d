//! Verification: every piece is hashed (SHA-1, BEP 3; a v2-only piece's
//! Merkle root, BEP 52) before it is stored,
//! served or advertised, off the network tasks: pieces completed from
//! peers' blocks, and pieces found in the cache at start (by the read that
//! needs one first, or by a background verifier). A piece that fails is
//! fetched again, and its senders are blamed only on proof ("smart ban"):
//! [`MAX_STRIKES`] bad pieces ban an IP address.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sha1::Digest;

use super::{BLOCK, ConnId, State, Swarm};

/// Pieces proven bad from one IP address before it is banned.
const MAX_STRIKES: u32 = 3;
/// Failed attempts of one piece remembered for the smart ban.
const MAX_SUSPECT_ATTEMPTS: usize = 4;
/// Bytes read from the storage per step when a piece is hashed.
pub(super) const HASH_CHUNK: usize = 64 * 1024;
/// Longest the background verifier waits for reads to leave the cache
/// alone before it hashes its next piece anyway.
const VERIFY_YIELD_MAX: Duration = Duration::from_millis(250);

/// One failed attempt at a piece: each block's sender and SHA-1.
type Attempt = Vec<(IpAddr, [u8; 20])>;

/// The verification part of the swarm's state.
#[derive(Default)]
pub(super) struct Verify {
    /// Pieces proven bad per IP address; [`MAX_STRIKES`] means a ban.
    strikes: HashMap<IpAddr, u32>,
    /// Pieces that failed their hash check with blocks from several peers:
    /// per failed attempt, each block's sender and SHA-1. When the piece
    /// later verifies, the senders of blocks that differ from the good
    /// data are struck ("smart ban"): nobody is blamed on a guess.
    suspects: HashMap<u32, Vec<Attempt>>,
    /// Cached, unverified pieces being hashed now (each hashed once, by
    /// whichever read or the background verifier asked first).
    hashing: HashSet<u32>,
}

impl Verify {
    #[cfg(test)]
    pub(super) fn strikes(&self, ip: IpAddr) -> Option<u32> {
        self.strikes.get(&ip).copied()
    }
}

impl Swarm {
    /// Starts hashing cached, unverified piece `index` on the blocking pool
    /// (the caller holds the lock, `st`), unless it is not unverified or is
    /// being hashed already: each piece is hashed once however many reads
    /// want it. The piece is pinned (never evicted) while it is hashed.
    /// Returns the task, or None when nothing was started. The outcome is
    /// applied by [`Swarm::finish_verify`], which fires `piece_event`.
    pub(super) fn start_verify(
        self: &Arc<Self>,
        st: &mut State,
        index: u32,
    ) -> Option<tokio::task::JoinHandle<()>> {
        self.loaded()?;
        let p = st.picker.as_ref()?;
        if !p.is_unverified(index) || st.verify.hashing.contains(&index) {
            return None;
        }
        st.verify.hashing.insert(index);
        st.cache.pin_quietly(index);
        let swarm = self.clone();
        Some(tokio::task::spawn_blocking(move || {
            let hashed = {
                let _work = super::budget::global().force(HASH_CHUNK as u64);
                swarm.piece_is_good(index)
            };
            let good = match hashed {
                Ok(g) => g == Some(true),
                Err(e) => {
                    tracing::debug!("{}: cached piece {index}: {e}", swarm.info_hash);
                    false
                }
            };
            swarm.counters.cached_hashed.fetch_add(1, Ordering::Relaxed);
            swarm.finish_verify(index, good);
        }))
    }

    /// Applies the hash check of cached piece `index` started by
    /// [`Swarm::start_verify`]: a good piece becomes had (HAVE sent to
    /// peers); a bad or unreadable one is dropped from the cache (forgotten,
    /// its space freed, no longer in the `have` file) and becomes missing,
    /// so a read that waits on it fetches it from peers. Runs blocking I/O.
    fn finish_verify(&self, index: u32, good: bool) {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.verify.hashing.remove(&index);
        st.cache.unpin(index);
        let Some(p) = st.picker.as_mut() else { return };
        if !p.is_unverified(index) {
            // Forgotten meanwhile (a failed read of its range): nothing to do.
            drop(guard);
            self.piece_event.notify_waiters();
            return;
        }
        if good {
            p.set_have(index);
            drop(guard);
            let _ = self.have_tx.send(index);
            self.piece_event.notify_waiters();
            return;
        }
        // Neither had nor wanted until its space is freed: a new copy is
        // never written before the bad one is punched out.
        p.evict(index);
        st.cache.remove(index, p.piece_size(index) as u64);
        drop(guard);
        tracing::warn!(
            "{}: cached piece {index} is missing or corrupt; it will be fetched again",
            self.info_hash
        );
        if let Some(l) = self.loaded()
            && let Err(e) = l.storage.discard_piece(index)
        {
            tracing::warn!(
                "{}: cannot free the space of bad cached piece {index}: {e}",
                self.info_hash
            );
        }
        if let Some(p) = self.lock().picker.as_mut() {
            p.verify_failed(index); // wanted again
        }
        self.piece_event.notify_waiters();
        self.wake_peers();
    }

    /// The background verifier: hashes the cached pieces no read has asked
    /// for yet, one at a time, so that a seeding mount soon advertises what
    /// it really holds (each piece's HAVE goes out as it verifies). Pieces
    /// in a readahead window go first. Low priority: before each piece it
    /// waits while reads use the cache (reading it, or hashing pieces they
    /// wait on), up to [`VERIFY_YIELD_MAX`] per piece, so it neither
    /// starves nor slows reads much. Uploads do not hold it back: the
    /// sooner it ends, the more a seeding mount can offer. Ends when no
    /// unverified piece is left or the swarm stops. Starts once a v2
    /// torrent's piece layers are all held.
    pub(super) async fn verify_cached_loop(self: Arc<Self>) {
        // A v2 torrent's pieces are checked against its piece layers:
        // wait for them (from peers) rather than drop what cannot be
        // checked yet.
        while !self.trees_ready() {
            if self.is_stopped() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let started = Instant::now();
        let mut next = 0u32;
        let mut hashed = 0u32;
        loop {
            let yield_until = tokio::time::Instant::now() + VERIFY_YIELD_MAX;
            while !self.is_stopped() && tokio::time::Instant::now() < yield_until {
                let busy = self.cache_reads.load(Ordering::Relaxed) > 0
                    || !self.lock().verify.hashing.is_empty();
                if !busy {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if self.is_stopped() {
                return;
            }
            let task = {
                let mut guard = self.lock();
                let st = &mut *guard;
                let Some(p) = st.picker.as_ref() else { return };
                let hashing = &st.verify.hashing;
                let pick = p.next_unverified(next, &|i| hashing.contains(&i));
                match pick {
                    // A read is hashing every piece left: wait for it.
                    None if !st.verify.hashing.is_empty() => None,
                    None => break,
                    Some(i) => {
                        if i >= next {
                            next = i + 1;
                        }
                        self.start_verify(st, i)
                    }
                }
            };
            match task {
                Some(t) => {
                    let _ = t.await;
                    hashed += 1;
                }
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        let s = self.stats();
        tracing::info!(
            "{}: cached pieces verified in {:.2} s ({hashed} hashed in the background): {} of {} pieces held",
            self.info_hash,
            started.elapsed().as_secs_f64(),
            s.pieces_have,
            s.pieces_total
        );
    }

    /// Stores a whole piece copied locally (from another torrent of the
    /// same content: `sources` is empty; tests name senders) and verifies
    /// it as [`Swarm::verify_downloaded`] does. Nothing is written when the
    /// piece is held, cached, being verified or being downloaded. The piece
    /// is in memory here, so only callers that hold it already use this.
    pub(crate) fn complete_piece(
        self: &Arc<Self>,
        index: u32,
        data: Vec<u8>,
        sources: Vec<ConnId>,
    ) {
        let Some(loaded) = self.loaded() else { return };
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            let Some(p) = st.picker.as_mut() else { return };
            if !p.claim_piece(index) {
                return;
            }
            st.cache
                .begin_partial(index, u64::from(p.piece_size(index)));
        }
        let storage = loaded.storage.clone();
        let swarm = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = storage.write_piece(index, &data) {
                drop(data);
                swarm.store_failed(index, e);
                return;
            }
            drop(data);
            swarm.verify_blocking(index, sources);
        });
    }

    /// Verifies downloaded piece `index`, whose blocks are all in the
    /// storage, off the network tasks: it is hashed from the storage with
    /// sequential reads of [`HASH_CHUNK`] bytes, so memory does not grow
    /// with the piece length. `sources` names the connection each 16 KiB
    /// block came from.
    ///
    /// On a hash failure the piece is discarded from the storage, then
    /// fetched again. Blame: a piece whose blocks all came from one peer is
    /// a strike against it; a piece mixed from several peers is remembered
    /// (each block's SHA-1, read back before the discard), and once it
    /// verifies, the peers whose blocks differed from the good data get the
    /// strike (an honest peer is never blamed for another's blocks).
    /// [`MAX_STRIKES`] strikes ban the IP address.
    pub(crate) fn verify_downloaded(self: &Arc<Self>, index: u32, sources: Vec<ConnId>) {
        let swarm = self.clone();
        tokio::task::spawn_blocking(move || swarm.verify_blocking(index, sources));
    }

    /// Verifies downloaded piece `index` (as [`Swarm::verify_downloaded`])
    /// whose SHA-1 the writer computed as its blocks were written (`sha1`,
    /// see [`super::hashing`]): a match is the piece verified, on this
    /// thread, without reading it back whole. A mismatch (or a v2-only
    /// piece, which has no SHA-1: see [`Swarm::verify_leaves`]) is decided
    /// as before, by hashing the piece from the storage on another thread: what the
    /// storage holds is what is served, and a failure is blamed as
    /// [`Swarm::verify_downloaded`] says. Runs blocking I/O.
    pub(super) fn verify_hashed(
        self: &Arc<Self>,
        index: u32,
        sources: Vec<ConnId>,
        sha1: [u8; 20],
    ) {
        let Some(loaded) = self.loaded() else { return };
        let info = &loaded.info;
        let good =
            info.version != crate::metainfo::MetaVersion::V2 && sha1 == info.piece_hash(index);
        self.verified_as_written(index, sources, good);
    }

    /// Piece `index`, hashed as it was written: verified when `good`, else
    /// decided from the storage ([`Swarm::verify_downloaded`]).
    fn verified_as_written(self: &Arc<Self>, index: u32, sources: Vec<ConnId>, good: bool) {
        if good {
            self.counters
                .hashed_as_written
                .fetch_add(1, Ordering::Relaxed);
            self.piece_verified(index, &sources);
        } else {
            self.verify_downloaded(index, sources);
        }
    }

    /// Verifies downloaded piece `index` of a v2-only torrent (as
    /// [`Swarm::verify_downloaded`]) from the leaf hash of each of its
    /// blocks of file data, computed by the writer as they were written
    /// (`leaves`, see [`super::hashing`]; every byte past the file data
    /// was zero): their Merkle root (BEP 52, padded to the piece's
    /// subtree) matching the piece layer's entry, or the `pieces root` of
    /// a file of one piece, is the piece verified, on this thread, without
    /// reading it back. A mismatch, or a layer not held yet, is decided as
    /// before from the storage on another thread (blame as
    /// [`Swarm::verify_downloaded`] says). Runs blocking I/O.
    pub(super) fn verify_leaves(
        self: &Arc<Self>,
        index: u32,
        sources: Vec<ConnId>,
        leaves: &[crate::merkle::Hash],
    ) {
        let good = !leaves.is_empty()
            && self
                .v2_piece_hash(index)
                .is_some_and(|(layer, want)| crate::merkle::root_of(leaves, 0, 1 << layer) == want);
        self.verified_as_written(index, sources, good);
    }

    /// [`Swarm::verify_downloaded`], on the calling (blocking) thread.
    fn verify_blocking(self: &Arc<Self>, index: u32, sources: Vec<ConnId>) {
        let Some(loaded) = self.loaded() else { return };
        let ips: Vec<Option<IpAddr>> = self.lock().peers.ips_of(&sources);
        let size = loaded.info.piece_size(index) as u32;
        let offset = u64::from(index) * loaded.info.piece_length;
        let storage = loaded.storage.clone();
        let hashed = {
            let _work = super::budget::global().force(HASH_CHUNK as u64);
            self.piece_is_good(index)
        };
        self.counters
            .hashed_read_back
            .fetch_add(1, Ordering::Relaxed);
        let ok = match hashed {
            Ok(Some(g)) => g,
            // a v2 piece whose layer is not held yet: dropped, nobody blamed
            Ok(None) => {
                self.discard_unverified(index);
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "{}: cannot read back piece {index} from the cache: {e}; fetching it again",
                    self.info_hash
                );
                self.discard_unverified(index);
                return;
            }
        };
        if !ok {
            self.counters.hash_failures.fetch_add(1, Ordering::Relaxed);
            let senders: HashSet<IpAddr> = ips.iter().flatten().copied().collect();
            if senders.len() > 1 {
                let attempt: Attempt = ips
                    .iter()
                    .zip(block_hashes(&*storage, offset, size))
                    .filter_map(|(ip, h)| ip.map(|ip| (ip, h)))
                    .collect();
                let mut st = self.lock();
                let tries = st.verify.suspects.entry(index).or_default();
                if tries.len() < MAX_SUSPECT_ATTEMPTS {
                    tries.push(attempt);
                }
            }
            tracing::warn!(
                "{}: piece {index} failed its {} check (blocks from {}); fetching it again",
                self.info_hash,
                if loaded.info.version == crate::metainfo::MetaVersion::V2 {
                    "Merkle"
                } else {
                    "SHA-1"
                },
                if senders.is_empty() {
                    "no live peer".to_string()
                } else {
                    senders
                        .iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            self.discard_unverified(index);
            if senders.len() == 1 {
                let ip = *senders.iter().next().expect("one sender");
                self.strike(ip, index);
            }
            return;
        }
        self.piece_verified(index, &sources);
    }

    /// Downloaded piece `index` verified, its blocks from `sources` (one
    /// per 16 KiB block): earlier failed attempts are settled (smart ban),
    /// the piece is stored in the cache (within its bound) and advertised.
    /// Runs blocking I/O.
    fn piece_verified(self: &Arc<Self>, index: u32, sources: &[ConnId]) {
        let Some(loaded) = self.loaded() else { return };
        let size = loaded.info.piece_size(index) as u32;
        let offset = u64::from(index) * loaded.info.piece_length;
        // Its senders served good data: PEX may pass them on.
        self.lock().peers.mark_useful(sources);
        // Verified: settle earlier failed attempts of this piece.
        let tries = self.lock().verify.suspects.remove(&index);
        if let Some(tries) = tries {
            let good = block_hashes(&*loaded.storage, offset, size);
            let mut culprits = HashSet::new();
            for attempt in tries {
                for ((ip, h), g) in attempt.iter().zip(&good) {
                    if h != g {
                        culprits.insert(*ip);
                    }
                }
            }
            for ip in culprits {
                self.strike(ip, index);
            }
        }
        // Within the cache's bound (the piece counts since its first
        // block; pieces a read waits on are kept anyway).
        if !self.evict_to_fit(0) {
            let urgent = self
                .lock()
                .picker
                .as_ref()
                .is_some_and(|p| p.is_urgent(index));
            if !urgent {
                tracing::debug!(
                    "{}: piece {index} dropped: the cache is full of pieces being read",
                    self.info_hash
                );
                self.discard_unverified(index);
                return;
            }
        }
        self.counters
            .downloaded
            .fetch_add(u64::from(size), Ordering::Relaxed);
        let complete = {
            let mut st = self.lock();
            st.reads.stored(index);
            st.cache.insert(index, u64::from(size));
            let p = st.picker.as_mut().expect("loaded implies picker");
            p.set_have(index);
            p.is_complete()
        };
        self.evict_over_budget();
        let _ = self.have_tx.send(index);
        self.piece_event.notify_waiters();
        if complete {
            tracing::info!("{}: all pieces verified", self.info_hash);
            self.save_resume();
        } else if index % 64 == 0 {
            self.save_resume();
        }
        self.wake_peers();
    }

    /// Piece `index` (being verified: neither had nor wanted) is not kept:
    /// its bytes are discarded from the storage first, then it becomes
    /// missing (wanted again), so a new copy is never written before the
    /// old one is gone. Runs blocking I/O.
    fn discard_unverified(&self, index: u32) {
        if let Some(l) = self.loaded()
            && let Err(e) = l.storage.discard_piece(index)
        {
            tracing::warn!(
                "{}: cannot free the space of piece {index}: {e}",
                self.info_hash
            );
        }
        {
            let mut st = self.lock();
            st.cache.end_partial(index);
            if let Some(p) = st.picker.as_mut() {
                p.verify_failed(index);
            }
        }
        self.piece_event.notify_waiters();
        self.wake_peers();
    }

    /// Piece `index` (being verified) could not be written: reads waiting
    /// on it fail with the error, and it becomes missing again.
    fn store_failed(&self, index: u32, e: std::io::Error) {
        tracing::error!(
            "{}: cannot store piece {index} in the cache: {e}; reads of it fail",
            self.info_hash
        );
        {
            let mut st = self.lock();
            let _ = st.reads.store_error(index, e.kind());
            st.cache.end_partial(index);
            if let Some(p) = st.picker.as_mut() {
                p.verify_failed(index);
            }
        }
        self.piece_event.notify_waiters();
    }

    /// One more piece proven bad from `ip`; bans it at [`MAX_STRIKES`].
    pub(super) fn strike(&self, ip: IpAddr, index: u32) {
        let n = {
            let mut st = self.lock();
            let n = st.verify.strikes.entry(ip).or_default();
            *n += 1;
            *n
        };
        tracing::info!(
            "{}: peer {ip} sent bad data for piece {index} ({n} of {MAX_STRIKES} strikes)",
            self.info_hash
        );
        if n >= MAX_STRIKES {
            let pieces = crate::plural::count(n, "piece", "pieces");
            self.ban_ip(ip, &format!("sent {pieces} that failed their hash check"));
        }
    }
}

/// SHA-1 of the `size` bytes at absolute `offset` of `storage`, read in
/// sequential steps of [`HASH_CHUNK`] bytes. Errors: the storage's.
pub(super) fn hash_stored(
    storage: &dyn crate::storage::Storage,
    offset: u64,
    size: u32,
) -> std::io::Result<[u8; 20]> {
    let mut h = sha1::Sha1::new();
    let mut buf = vec![0u8; HASH_CHUNK.min(size as usize)];
    let mut done = 0u64;
    while done < u64::from(size) {
        let n = (u64::from(size) - done).min(HASH_CHUNK as u64) as usize;
        storage.read_at(offset + done, &mut buf[..n])?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(h.finalize().into())
}

/// The SHA-1 of each 16 KiB block of the `size`-byte piece at absolute
/// `offset` of `storage` (for the smart ban), within the memory budget;
/// empty if the storage fails.
fn block_hashes(storage: &dyn crate::storage::Storage, offset: u64, size: u32) -> Vec<[u8; 20]> {
    let _work = super::budget::global().force(u64::from(BLOCK));
    stored_block_hashes(storage, offset, size).unwrap_or_default()
}

/// The SHA-1 of each 16 KiB block of the `size`-byte piece at absolute
/// `offset` of `storage` (for the smart ban). Errors: the storage's.
fn stored_block_hashes(
    storage: &dyn crate::storage::Storage,
    offset: u64,
    size: u32,
) -> std::io::Result<Vec<[u8; 20]>> {
    let mut buf = vec![0u8; BLOCK as usize];
    (0..size.div_ceil(BLOCK))
        .map(|b| {
            let n = (size - b * BLOCK).min(BLOCK) as usize;
            storage.read_at(offset + u64::from(b * BLOCK), &mut buf[..n])?;
            Ok(sha1::Sha1::digest(&buf[..n]).into())
        })
        .collect()
}
