//! Per-block verification on reads (BEP 52, issue 14 item 4): a read of a
//! v2 or hybrid torrent waits only for the 16 KiB blocks under it, each
//! checked against its file's Merkle tree as it arrives, not for its whole
//! piece.
//!
//! - **Block hashes.** We hold a file's piece layer at most (v2-only) or
//!   only its `pieces root` (hybrid). A read of a piece not had asks a
//!   peer that has the piece for the leaf hashes under it: a `hash
//!   request` with base layer 0, `length` the piece's blocks (at most
//!   [`LEAVES_PER_ASK`], a power of two, aligned), and the proof layers
//!   that reach the `pieces root` ([`crate::merkle::verify_hashes`]; a few
//!   uncles, e.g. 8 for a 1 GiB file of 4 MiB pieces). What proves is kept
//!   per chunk of leaves ([`BlockHashes`]), at most [`MAX_HELD`] chunks,
//!   counted in the memory budget ([`super::budget`]; never refused, a
//!   read waits on them), least recently used dropped first; what does not prove is dropped and counted against the
//!   peer, as for piece layers ([`super::trees`]).
//! - **Blocks.** A block whose leaf hash is held is checked when it
//!   arrives, before it is written ([`Swarm::check_block`]): a bad one is
//!   discarded (missing again, asked anew) and struck against its sender's
//!   IP address (the smart ban's strikes, [`super::verify`]); a good one is
//!   marked verified alone once written. Blocks written before their
//!   hashes came are read back and checked when the hashes arrive.
//! - **Reads** ([`Swarm::read_by_blocks`]) are answered once every block
//!   under them is verified alone (or its piece is had), from the storage,
//!   and only if nothing under them moved while they read (the picker's
//!   data epoch). Their blocks are asked first
//!   ([`super::picker::Picker::set_hot`]). Only reads that leave at least
//!   [`MIN_BLOCKS_SAVED`] blocks of their piece out, not asked for yet, go
//!   this way: for the others the leaf hashes' round trip (and the
//!   seeder's work to answer) costs more than the rest of the piece
//!   (`scripts/bench --v2`: 256 KiB pieces on loopback; a sequential
//!   reader, whose pieces are fetched ahead).
//! - **Had** stays what it was: a piece is had (HAVE, bitfield, uploads,
//!   seeding) only once it is complete and verified whole — Merkle root
//!   against the piece layer for v2-only, SHA-1 for hybrids (their v1
//!   hash still gates "had"; the v2 tree serves reads). A block verified
//!   alone answers our reads, never a peer's request.
//! - **Latency.** A read's leaf request and block requests go out in one
//!   write (the session asks hashes, then blocks, then flushes); each read
//!   answered block by block is traced in the debug log (`read of N bytes
//!   at X by blocks`: when its leaves were asked and came, when its data
//!   was readable, in ms since the read). Measured on loopback against
//!   python3-libtorrent 2.0.8 with 4 MiB pieces (`scripts/bench --v2`
//!   data): the leaves come 7–9 ms after the ask and the read is readable
//!   0.1–1 ms after them; its blocks mostly arrive after the leaves. So
//!   the seeder's answer is the floor: asking 16 leaves (256 KiB) instead
//!   of the piece's 256 took as long, as if it read and hashed the whole
//!   piece for any leaf of it. A read whose leaves were held already took
//!   0.5 ms. Asking leaves of pieces no read wants yet would move that
//!   work (a whole-torrent hash for random reads) onto every seeder: not
//!   done.
//! - **Fallback.** A peer that answers a base-layer request with `hash
//!   reject` is not asked again for leaves (python3-libtorrent 2.0.8
//!   answers them); one that does not answer within [`ASK_TIMEOUT`] has
//!   its request moved to another peer. Without leaves, reads wait for
//!   their whole pieces, as v1 reads do.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::budget::Reservation;
use super::cache::pieces_under;
use super::trees::HashesError;
use super::{BLOCK, ConnId, Swarm};
use crate::merkle::{self, Hash, HashRequest, TreeShape};
use crate::metainfo::MetaVersion;

/// Most leaf hashes asked in one request (BEP 52: requests "SHOULD NOT"
/// exceed 512; libtorrent asks in buckets of 512 too): a piece of up to
/// 8 MiB in one request, larger pieces in several.
pub(crate) const LEAVES_PER_ASK: u32 = 512;

/// How long a leaf request asked of one peer waits before it is asked of
/// another (a read waits on it).
pub(crate) const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// Most leaf requests asked of one peer at once.
const MAX_ASKED_PER_PEER: usize = 4;

/// Most chunks of leaves held (each at most [`LEAVES_PER_ASK`] hashes,
/// 16 KiB; 8 KiB for a 4 MiB piece): 1 MiB at most, counted in the memory
/// budget.
pub(crate) const MAX_HELD: usize = 64;

/// Most chunks wanted at once (reads waiting): more are left to the
/// whole-piece check.
const MAX_WANTED: usize = 1024;

/// Most connections remembered as refusing leaf requests.
const MAX_REFUSERS: usize = 1024;

/// Fewest blocks of its piece a read must leave out for it to be answered
/// block by block (512 KiB): with fewer, the rest of the piece costs little
/// more than a round trip for the leaf hashes (a 4 KiB read of a 256 KiB
/// piece, or a 1 MiB read of a 1 MiB piece, waits for the piece).
const MIN_BLOCKS_SAVED: u32 = 32;

/// How often a read waiting on blocks has peers look for late blocks.
const LATE_CHECK: Duration = Duration::from_millis(50);

/// A chunk of leaves: (piece index, chunk within the piece).
type Key = (u32, u32);

/// Where a piece's blocks are in their file's tree.
#[derive(Debug, Clone, Copy)]
struct Place {
    root: Hash,
    shape: TreeShape,
    /// The file's block index of the piece's first block.
    first_block: u64,
    /// Leaves per chunk (a power of two, at least 2).
    chunk: u32,
}

impl Place {
    /// The request for chunk `sub` of the piece: its leaves, with proof
    /// layers up to the root.
    fn request(&self, sub: u32) -> HashRequest {
        HashRequest {
            pieces_root: self.root,
            base_layer: 0,
            index: (self.first_block + u64::from(sub) * u64::from(self.chunk)) as u32,
            length: self.chunk,
            proof_layers: self.shape.root_layer() - 1,
        }
    }
}

/// Verified leaves of one chunk.
struct Held {
    /// The leaves that cover file data, from the chunk's first block.
    leaves: Vec<Hash>,
    used: Instant,
    /// When they were asked (of the peer that answered) and came: for
    /// the reads' trace (debug log).
    asked: Option<Instant>,
    came: Instant,
    _bytes: Reservation,
}

/// A chunk reads wait on.
#[derive(Default)]
struct Want {
    /// Reads waiting (0: kept only until an answer asked for comes).
    readers: usize,
    /// Who was asked, and when.
    asked: Option<(ConnId, Instant)>,
    /// Connections whose answer failed its proof: not asked again for it.
    failed: Vec<ConnId>,
}

/// The leaf hashes held and wanted (part of the swarm's state).
#[derive(Default)]
pub(super) struct BlockHashes {
    held: HashMap<Key, Held>,
    wanted: HashMap<Key, Want>,
    /// Connections that answered a leaf request with `hash reject`.
    refusers: HashSet<ConnId>,
}

/// What the leaf hash of an arrived block says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlockCheck {
    /// It matches (this leaf hash): the block may answer reads once
    /// written.
    Good(Hash),
    /// It does not: the block is discarded and its sender blamed.
    Bad,
    /// No leaf hash held (or not a v2 tree): checked with its piece.
    Unknown,
}

impl BlockHashes {
    /// The leaf of block `b` of piece `index` (`place` its place), if held.
    fn leaf(&mut self, place: &Place, index: u32, b: u32) -> Option<Hash> {
        let h = self.held.get_mut(&(index, b / place.chunk))?;
        h.used = Instant::now();
        h.leaves.get((b % place.chunk) as usize).copied()
    }

    /// The next chunk to ask `conn` for, marked as asked.
    fn next_request(
        &mut self,
        conn: ConnId,
        now: Instant,
        peer_has: &dyn Fn(u32) -> bool,
    ) -> Option<Key> {
        if self.refusers.contains(&conn) {
            return None;
        }
        let live = |a: &Option<(ConnId, Instant)>| {
            a.is_some_and(|(_, t)| now.duration_since(t) < ASK_TIMEOUT)
        };
        let mine = self
            .wanted
            .values()
            .filter(|w| live(&w.asked) && w.asked.is_some_and(|(c, _)| c == conn))
            .count();
        if mine >= MAX_ASKED_PER_PEER {
            return None;
        }
        let (&key, w) = self.wanted.iter_mut().find(|(k, w)| {
            w.readers > 0
                && !self.held.contains_key(k)
                && !live(&w.asked)
                && !w.failed.contains(&conn)
                && peer_has(k.0)
        })?;
        w.asked = Some((conn, now));
        Some(key)
    }

    /// Forgets chunks no read waits on whose request is answered or timed
    /// out (a peer that never answers leaves them behind).
    fn prune(&mut self, now: Instant) {
        self.wanted.retain(|_, w| {
            w.readers > 0
                || w.asked
                    .is_some_and(|(_, t)| now.duration_since(t) < ASK_TIMEOUT)
        });
    }

    /// Keeps the verified `leaves` of `key`, at most [`MAX_HELD`] chunks
    /// (least recently used dropped first), counted in the memory budget
    /// (never refused: a read waits on them, and [`MAX_HELD`] bounds them).
    fn keep(&mut self, key: Key, leaves: Vec<Hash>, asked: Option<Instant>) {
        while self.held.len() >= MAX_HELD {
            let Some(oldest) = self
                .held
                .iter()
                .min_by_key(|(_, h)| h.used)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.held.remove(&oldest);
        }
        let bytes = (leaves.len() * 32) as u64;
        self.held.insert(
            key,
            Held {
                leaves,
                used: Instant::now(),
                asked,
                came: Instant::now(),
                _bytes: super::budget::global().force(bytes),
            },
        );
    }
}

/// The registration of one read waiting on blocks: its pieces are urgent
/// and its chunks wanted while it lives (also when its future is dropped).
struct BlockRead<'a> {
    swarm: &'a Swarm,
    pieces: Vec<u32>,
    keys: Vec<Key>,
}

impl Drop for BlockRead<'_> {
    fn drop(&mut self) {
        let mut st = self.swarm.lock();
        if let Some(p) = st.picker.as_mut() {
            for &i in &self.pieces {
                p.remove_urgent(i);
            }
        }
        let now = Instant::now();
        for k in &self.keys {
            if let Some(w) = st.blocks.wanted.get_mut(k) {
                w.readers = w.readers.saturating_sub(1);
                let live = w
                    .asked
                    .is_some_and(|(_, t)| now.duration_since(t) < ASK_TIMEOUT);
                if w.readers == 0 && !live {
                    st.blocks.wanted.remove(k);
                }
            }
        }
    }
}

impl Swarm {
    /// Where piece `index`'s blocks are in their file's Merkle tree; `None`
    /// for a v1 torrent, a piece of padding, or a piece of one block (its
    /// piece check is a block check already).
    fn place(&self, index: u32) -> Option<Place> {
        let info = &self.loaded()?.info;
        if info.version == MetaVersion::V1 {
            return None;
        }
        let file = info.piece_file(index)?;
        let root = info.files[file].pieces_root?;
        let shape = info.file_tree(file)?;
        let per_piece = 1u64 << shape.piece_layer();
        let chunk = (1u64 << shape.piece_hash_layer()).min(u64::from(LEAVES_PER_ASK)) as u32;
        if chunk < 2 {
            return None;
        }
        Some(Place {
            root,
            shape,
            first_block: u64::from(index - info.file_pieces(file).start) * per_piece,
            chunk,
        })
    }

    /// Checks block `begin` of piece `index` (`data`, as the picker sized
    /// it) against its leaf hash, if held: its file data must hash to the
    /// leaf, and the bytes after its file's end (the alignment gap) must
    /// be zeros. Hashes off the swarm's lock.
    pub(super) fn check_block(&self, index: u32, begin: u32, data: &[u8]) -> BlockCheck {
        let Some(place) = self.place(index) else {
            return BlockCheck::Unknown;
        };
        let b = begin / BLOCK;
        let want = place
            .shape
            .node_data_len(0, place.first_block + u64::from(b)) as usize;
        if want == 0 {
            return BlockCheck::Unknown;
        }
        let Some(leaf) = self.lock().blocks.leaf(&place, index, b) else {
            return BlockCheck::Unknown;
        };
        if data.len() < want
            || merkle::block_hash(&data[..want]) != leaf
            || data[want..].iter().any(|&x| x != 0)
        {
            BlockCheck::Bad
        } else {
            BlockCheck::Good(leaf)
        }
    }

    /// Block `begin` of piece `index` from `conn` failed its leaf hash: it
    /// was not written (missing again); its sender's IP is struck.
    pub(super) fn bad_block(&self, conn: ConnId, index: u32, begin: u32) {
        self.counters.hash_failures.fetch_add(1, Ordering::Relaxed);
        let ip = self.lock().peers.ips_of(&[conn]).pop().flatten();
        tracing::warn!(
            "{}: block {} of piece {index} from {} failed its Merkle check; fetching it again",
            self.info_hash,
            begin / BLOCK,
            ip.map_or_else(|| "a closed connection".to_string(), |ip| ip.to_string())
        );
        if let Some(ip) = ip {
            self.strike(ip, index);
        }
    }

    /// Whether a connection whose handshake named `ih` is a v2 connection
    /// (BEP 52): `ih` is the torrent's truncated v2 info-hash. Hash
    /// messages go over such connections only.
    pub(crate) fn is_v2_handshake(&self, ih: &crate::InfoHash) -> bool {
        self.loaded()
            .and_then(|l| l.info.info_hash_v2)
            .is_some_and(|v2| v2.truncated() == *ih)
    }

    /// The next leaf `hash request` to send to `conn`, whose peer has the
    /// pieces `peer_has` says, for a read waiting on blocks.
    pub(crate) fn next_block_hash_request(
        &self,
        conn: ConnId,
        peer_has: &dyn Fn(u32) -> bool,
    ) -> Option<HashRequest> {
        self.loaded()?;
        let (index, sub) = self
            .lock()
            .blocks
            .next_request(conn, Instant::now(), peer_has)?;
        Some(self.place(index)?.request(sub))
    }

    /// The chunk a leaf request or answer `req` names, if we asked it.
    fn key_of(&self, st: &BlockHashes, req: &HashRequest) -> Option<Key> {
        if req.base_layer != 0 {
            return None;
        }
        st.wanted
            .keys()
            .copied()
            .find(|&(i, sub)| self.place(i).is_some_and(|p| p.request(sub) == *req))
    }

    /// A `hashes` message from `conn`: `None` when it answers no leaf
    /// request of ours (then it is the piece layers' concern, see
    /// [`Swarm::on_hashes`]). Else the leaves are verified up to the
    /// `pieces root` and kept, and blocks of their piece already written
    /// are checked now. Errors: [`HashesError::Proof`] (nothing is kept;
    /// the chunk is asked of another peer).
    pub(crate) fn on_block_hashes(
        self: &Arc<Self>,
        conn: ConnId,
        req: &HashRequest,
        hashes: &[Hash],
    ) -> Option<Result<(), HashesError>> {
        let mut st = self.lock();
        let key = self.key_of(&st.blocks, req)?;
        let place = self.place(key.0)?;
        let verified = merkle::verify_hashes(&place.shape, &place.root, req, hashes, |_, _| None);
        let w = st.blocks.wanted.get_mut(&key)?;
        let v = match verified {
            Ok(v) => v,
            Err(e) => {
                if w.asked.is_some_and(|(c, _)| c == conn) {
                    w.asked = None;
                }
                if w.failed.len() < 16 {
                    w.failed.push(conn);
                }
                return Some(Err(e.into()));
            }
        };
        let asked = st.blocks.wanted.remove(&key).and_then(|w| w.asked);
        st.blocks.keep(key, v.nodes, asked.map(|(_, t)| t));
        let first = key.1 * place.chunk * BLOCK;
        let end = first + place.chunk * BLOCK;
        let epoch = st.picker.as_ref().map(|p| p.data_epoch());
        let late: Vec<u32> = st
            .picker
            .as_ref()
            .map(|p| p.received_unverified(key.0))
            .unwrap_or_default()
            .into_iter()
            .filter(|b| (first..end).contains(b))
            .collect();
        drop(st);
        if let (Some(epoch), false) = (epoch, late.is_empty()) {
            let swarm = self.clone();
            tokio::task::spawn_blocking(move || swarm.check_written(key.0, late, epoch));
        }
        Some(Ok(()))
    }

    /// Blocks `begins` of piece `index`, written before their leaves came:
    /// read back and checked; the good ones are marked verified alone if
    /// nothing under them moved since `epoch`. Runs blocking I/O.
    fn check_written(&self, index: u32, begins: Vec<u32>, epoch: u64) {
        let Some(l) = self.loaded() else { return };
        let base = u64::from(index) * l.info.piece_length;
        let size = l.info.piece_size(index) as u32;
        let mut buf = vec![0u8; BLOCK as usize];
        let mut good = Vec::new();
        let begins_len = begins.len();
        for begin in begins {
            let n = (size.saturating_sub(begin)).min(BLOCK) as usize;
            if n == 0
                || l.storage
                    .read_at(base + u64::from(begin), &mut buf[..n])
                    .is_err()
            {
                continue;
            }
            if matches!(
                self.check_block(index, begin, &buf[..n]),
                BlockCheck::Good(_)
            ) {
                good.push(begin);
            }
        }
        let marked = {
            let mut st = self.lock();
            match st.picker.as_mut() {
                Some(p) if p.data_epoch() == epoch => good
                    .iter()
                    .filter(|&&b| p.mark_verified_alone(index, b))
                    .count(),
                _ => 0,
            }
        };
        tracing::debug!(
            "{}: piece {index}: {} blocks written before their leaves came, read back: {} good, {marked} readable",
            self.info_hash,
            begins_len,
            good.len()
        );
        if marked > 0 {
            self.piece_event.notify_waiters();
        }
    }

    /// A `hash reject` from `conn`: true when it refused a leaf request of
    /// ours (the peer is not asked for leaves again; the chunk goes to
    /// another peer at once).
    pub(crate) fn on_block_hash_reject(&self, conn: ConnId, req: &HashRequest) -> bool {
        let mut st = self.lock();
        let Some(key) = self.key_of(&st.blocks, req) else {
            return false;
        };
        if let Some(w) = st.blocks.wanted.get_mut(&key)
            && w.asked.is_some_and(|(c, _)| c == conn)
        {
            w.asked = None;
        }
        if st.blocks.refusers.len() >= MAX_REFUSERS {
            st.blocks.refusers.clear();
        }
        st.blocks.refusers.insert(conn);
        tracing::debug!(
            "{}: a peer refuses block hashes; its pieces are checked whole",
            self.info_hash
        );
        true
    }

    /// Reads `len` bytes at absolute `offset` as soon as every 16 KiB block
    /// under them is verified alone or its piece is had (see the module
    /// docs). `None` when this does not apply (a v1 torrent, every piece
    /// had, a cached piece not hashed yet, a piece of one block or of
    /// padding, a read that leaves fewer than [`MIN_BLOCKS_SAVED`] blocks
    /// of a piece out that are not asked for yet): [`Swarm::read`] waits for whole pieces then. Errors:
    /// `TimedOut` after the read timeout, `Interrupted` when the swarm
    /// stops, the storage's.
    pub(super) async fn read_by_blocks(
        self: &Arc<Self>,
        offset: u64,
        len: usize,
    ) -> Option<io::Result<Vec<u8>>> {
        let l = self.loaded()?;
        let pl = l.info.piece_length;
        let end = offset + len as u64;
        let (first, last) = pieces_under(pl, offset, end);
        // (piece, start, end within the piece), and the place of each
        let segs: Vec<(u32, u32, u32)> = (first..=last)
            .map(|i| {
                let base = u64::from(i) * pl;
                let s = offset.max(base) - base;
                let e = end.min(base + pl) - base;
                (i, s as u32, e as u32)
            })
            .collect();
        let places: Vec<Option<Place>> = segs.iter().map(|s| self.place(s.0)).collect();
        let guard = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let p = st.picker.as_mut()?;
            // Worth it only when the blocks under the read are few beside
            // the piece's blocks not under way yet (a piece fetched ahead
            // by a sequential reader is nearly there: no leaf hashes).
            let saves = |&(i, s, e): &(u32, u32, u32)| {
                let under = (e - 1) / BLOCK - s / BLOCK + 1;
                let idle = p
                    .piece_size(i)
                    .div_ceil(BLOCK)
                    .saturating_sub(p.blocks_under_way(i));
                idle.saturating_sub(under) >= MIN_BLOCKS_SAVED
            };
            if segs.iter().all(|s| p.has(s.0))
                || segs.iter().any(|s| p.is_unverified(s.0))
                || segs
                    .iter()
                    .zip(&places)
                    .any(|(s, pl)| !p.has(s.0) && (pl.is_none() || !saves(s)))
            {
                return None;
            }
            let mut pieces = Vec::new();
            let mut keys = Vec::new();
            if st.blocks.wanted.len() >= MAX_WANTED / 2 {
                st.blocks.prune(Instant::now());
            }
            for (&(i, s, e), place) in segs.iter().zip(&places) {
                if p.has(i) {
                    continue;
                }
                p.add_urgent(i);
                p.set_hot(i, s / BLOCK);
                pieces.push(i);
                let place = place.expect("checked above");
                for sub in (s / BLOCK / place.chunk)..=((e - 1) / BLOCK / place.chunk) {
                    let k = (i, sub);
                    if st.blocks.held.contains_key(&k)
                        || (!st.blocks.wanted.contains_key(&k)
                            && st.blocks.wanted.len() >= MAX_WANTED)
                    {
                        continue;
                    }
                    st.blocks.wanted.entry(k).or_default().readers += 1;
                    keys.push(k);
                }
            }
            BlockRead {
                swarm: self,
                pieces,
                keys,
            }
        };
        let started = Instant::now();
        self.wake_peers();
        let deadline = tokio::time::Instant::now() + self.cfg.read_timeout;
        let mut readable = None;
        let result = loop {
            let notified = self.piece_event.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (ready, epoch) = {
                let st = self.lock();
                let p = st.picker.as_ref().expect("loaded");
                (
                    segs.iter().all(|&(i, s, e)| p.range_readable(i, s, e)),
                    p.data_epoch(),
                )
            };
            if ready {
                readable.get_or_insert_with(Instant::now);
                let res = self
                    .read_stored(&l.storage, offset, len)
                    .await
                    .and_then(|r| r);
                let st = self.lock();
                let p = st.picker.as_ref().expect("loaded");
                let same = p.data_epoch() == epoch
                    && segs.iter().all(|&(i, s, e)| p.range_readable(i, s, e));
                drop(st);
                match res {
                    Ok(buf) if same => break Ok(buf),
                    // Something under the read moved: read it again.
                    Ok(_) => continue,
                    Err(e) => break Err(e),
                }
            }
            if self.is_stopped() {
                break Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the mount is stopping",
                ));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                tracing::error!(
                    "{}: read of {len} bytes at {offset} failed: its blocks were not received \
                     within the read timeout; the read returns EIO (see --read-timeout)",
                    self.info_hash
                );
                break Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("blocks at {offset} not received within the read timeout"),
                ));
            }
            let check = (now + LATE_CHECK).min(deadline);
            if tokio::time::timeout_at(check, notified).await.is_err() {
                self.wake_peers();
            }
        };
        if result.is_ok() && tracing::enabled!(tracing::Level::DEBUG) {
            self.trace_read(offset, len, started, readable, &guard.keys);
        }
        drop(guard);
        Some(result)
    }

    /// The debug trace of a read answered block by block that started at
    /// `started`, its data readable from `readable`, waiting on the leaves
    /// of `keys`: when each was asked and came, in ms since the start (a
    /// read whose leaves came after its blocks waited for the round trip).
    fn trace_read(
        &self,
        offset: u64,
        len: usize,
        started: Instant,
        readable: Option<Instant>,
        keys: &[Key],
    ) {
        let ms = |t: Instant| {
            let d = if t >= started {
                t.duration_since(started).as_secs_f64()
            } else {
                -started.duration_since(t).as_secs_f64()
            };
            format!("{:+.1}", d * 1e3)
        };
        let leaves: Vec<String> = {
            let st = self.lock();
            keys.iter()
                .map(|k| match st.blocks.held.get(k) {
                    Some(h) => format!(
                        "piece {} chunk {}: asked {} came {} ms",
                        k.0,
                        k.1,
                        h.asked.map_or_else(|| "-".to_string(), ms),
                        ms(h.came)
                    ),
                    None => format!("piece {} chunk {}: gone", k.0, k.1),
                })
                .collect()
        };
        tracing::debug!(
            "{}: read of {len} bytes at {offset} by blocks: {} ms, readable {} ms; leaves: {}",
            self.info_hash,
            ms(Instant::now()),
            readable.map_or_else(|| "-".to_string(), ms),
            if leaves.is_empty() {
                "held before".to_string()
            } else {
                leaves.join("; ")
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks verified alone make their range readable before the piece
    /// completes; a claim of such a block again, or the piece completing,
    /// moves the data epoch (a read in flight reads again).
    #[test]
    fn blocks_verified_alone_are_readable_until_something_moves() {
        use super::super::picker::{BlockOutcome, Picker};
        let pl = 4 * u64::from(BLOCK);
        let mut p = Picker::new(pl, 2 * pl, 2, 8 * pl);
        p.add_urgent(1);
        p.set_hot(1, 2);
        let reqs = p.pick(7, &|_| true, 2);
        assert_eq!(
            reqs.iter()
                .map(|r| (r.index, r.begin / BLOCK))
                .collect::<Vec<_>>(),
            vec![(1, 2), (1, 3)],
            "the read's blocks are asked first"
        );
        let e0 = p.data_epoch();
        assert_eq!(p.claim_block(7, 1, 2 * BLOCK, BLOCK), BlockOutcome::Write);
        assert_eq!(p.block_written(7, 1, 2 * BLOCK), BlockOutcome::Stored);
        assert!(
            !p.range_readable(1, 2 * BLOCK, 2 * BLOCK + 4096),
            "not verified"
        );
        assert_eq!(p.received_unverified(1), vec![2 * BLOCK]);
        assert!(p.mark_verified_alone(1, 2 * BLOCK));
        assert!(p.range_readable(1, 2 * BLOCK, 2 * BLOCK + 4096));
        assert!(
            !p.range_readable(1, 2 * BLOCK, 3 * BLOCK + 1),
            "block 3 is missing"
        );
        assert!(
            !p.mark_verified_alone(1, 3 * BLOCK),
            "block 3 was never received"
        );
        assert_eq!(p.data_epoch(), e0);
        // the rest of the piece: it completes, the epoch moves, and the
        // range waits for the piece to be had
        for b in [0, 1, 3] {
            p.pick(7, &|_| true, 4);
            assert_eq!(p.claim_block(7, 1, b * BLOCK, BLOCK), BlockOutcome::Write);
            let last = b == 3;
            let out = p.block_written(7, 1, b * BLOCK);
            assert_eq!(matches!(out, BlockOutcome::Complete { .. }), last);
        }
        assert_ne!(p.data_epoch(), e0);
        assert!(!p.range_readable(1, 2 * BLOCK, 2 * BLOCK + 4096));
        p.set_have(1);
        assert!(p.range_readable(1, 0, 4 * BLOCK));
    }

    #[test]
    fn leaves_are_bounded_and_least_recently_used_go_first() {
        let mut b = BlockHashes::default();
        for i in 0..(MAX_HELD as u32 + 10) {
            b.keep((i, 0), vec![[i as u8; 32]; 4], None);
        }
        assert_eq!(b.held.len(), MAX_HELD);
        assert!(!b.held.contains_key(&(0, 0)), "the oldest went first");
        assert!(b.held.contains_key(&(MAX_HELD as u32 + 9, 0)));
    }

    #[test]
    fn requests_go_to_peers_that_have_the_piece_once_at_a_time() {
        let mut b = BlockHashes::default();
        let now = Instant::now();
        b.wanted.entry((3, 0)).or_default().readers = 1;
        assert_eq!(b.next_request(1, now, &|i| i != 3), None);
        assert_eq!(b.next_request(1, now, &|_| true), Some((3, 0)));
        // asked of 1: not of 2 until it times out
        assert_eq!(b.next_request(2, now, &|_| true), None);
        let later = now + ASK_TIMEOUT + Duration::from_millis(1);
        assert_eq!(b.next_request(2, later, &|_| true), Some((3, 0)));
        // a peer that refused leaves is never asked again
        b.refusers.insert(4);
        b.wanted.entry((5, 0)).or_default().readers = 1;
        assert_eq!(b.next_request(4, later, &|_| true), None);
        // a chunk no read waits on is not asked
        b.wanted.entry((6, 0)).or_default();
        b.wanted.remove(&(5, 0));
        assert_eq!(b.next_request(7, later, &|_| true), None);
        // and is forgotten once its request timed out
        b.wanted.get_mut(&(3, 0)).unwrap().readers = 0;
        b.prune(later);
        assert_eq!(b.wanted.len(), 1, "asked of 2 just now: kept");
        b.prune(later + ASK_TIMEOUT);
        assert!(b.wanted.is_empty());
    }
}
