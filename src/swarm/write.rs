//! Received blocks go to the storage as they arrive: a piece being
//! downloaded is never assembled in memory, whatever its length. Each
//! block is taken by the picker (so two copies of one block are never
//! written at once), queued for the swarm's writer, written off the async
//! threads, then counted as received; the piece's last block starts its
//! verification ([`super::verify`]). Until a piece verifies, its bytes in
//! the storage are neither read for a reader nor uploaded.
//!
//! Why one writer per swarm rather than a write per block: at loopback
//! rates a peer sends a block every ~100 µs, and a round trip through the
//! blocking pool for each one, awaited by the peer's task, cost 40 % of
//! the throughput (issue 19). The writer takes every block queued since
//! its last pass and writes them in one go (adjacent blocks of one file in
//! one `pwritev`), while the peers' tasks go on reading their sockets. It
//! runs on a thread of the blocking pool that stays while blocks keep
//! coming (it waits up to [`WRITER_IDLE`] for the next one): a block then
//! costs its peer's task one queue push and, at most, one wake-up of that
//! thread, and no hop back to the async threads. The writer also counts
//! the blocks written (picker) and hashes each piece as its blocks are
//! written ([`super::hashing`]: the SHA-1 of a v1 or hybrid piece, where a
//! block that came ahead of the hash is read back when the hash gets to
//! it; the leaf hash of each block of a v2-only piece, in any order): a
//! complete piece is verified on the spot, without reading it back whole.
//! A piece whose hash was dropped (a block written again, or too many
//! pieces in flight) is hashed from the storage on another thread of the
//! pool.
//!
//! The queue is bounded ([`QUEUE_BLOCKS`]) and its blocks count in the
//! memory budget, so a slow disk slows the peers down (their tasks wait
//! for room) instead of filling memory.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::block_verify::BlockCheck;
use super::budget::Reservation;
use super::hashing::{AsWritten, Hashed};
use super::picker::BlockOutcome;
use super::{BlockArrival, ConnId, Swarm};
use crate::metainfo::MetaVersion;

/// Most blocks queued for the writer of one swarm: 64 blocks of 16 KiB,
/// 1 MiB. A peer task that finds the queue full waits (back-pressure).
pub(super) const QUEUE_BLOCKS: usize = 64;

/// How long the writer's thread waits for the next block before it goes
/// back to the blocking pool (the next block starts it again). Short, so
/// that an idle swarm holds no thread and a runtime shutting down waits
/// for it no longer than this.
pub(super) const WRITER_IDLE: Duration = Duration::from_millis(100);

/// A block claimed by the picker, on its way to the storage.
pub(super) struct PendingWrite {
    conn: ConnId,
    index: u32,
    begin: u32,
    /// Absolute offset in the piece space.
    offset: u64,
    data: Bytes,
    /// The piece's first block: room is made in the cache first.
    first: bool,
    /// Checked against its leaf hash ([`super::block_verify`]): readable
    /// once written; that leaf hash.
    alone: Option<crate::merkle::Hash>,
    /// The block's bytes, counted in the memory budget until written.
    _held: Reservation,
}

/// The writer of one swarm (see the module docs), created on its first
/// block.
pub(super) struct Writer {
    /// Free places in the queue ([`QUEUE_BLOCKS`]): a peer's task takes
    /// one per block, waiting while there is none.
    room: Semaphore,
    queue: Mutex<Queue>,
    /// Signalled when a block is queued while the writer's thread waits.
    more: Condvar,
    /// The hashes of the pieces being written, as written; used by the
    /// writer's thread only.
    hashes: Mutex<AsWritten>,
}

/// The writer's queue and whether a thread serves it.
#[derive(Default)]
struct Queue {
    blocks: VecDeque<PendingWrite>,
    /// A thread of the blocking pool runs [`run_writer`].
    running: bool,
    /// That thread waits on [`Writer::more`].
    waiting: bool,
}

impl Writer {
    pub(super) fn new() -> Writer {
        Writer {
            room: Semaphore::new(QUEUE_BLOCKS),
            queue: Mutex::new(Queue::default()),
            more: Condvar::new(),
            hashes: Mutex::new(AsWritten::default()),
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Swarm {
    /// A block that connection `conn` requested arrived: claimed, then
    /// queued for the swarm's writer, which writes it to the storage off
    /// the async threads and counts it (see the module docs). Waits only
    /// while the writer's queue is full. A block that completes its piece
    /// starts the piece's verification. A block that cannot be written
    /// (ENOSPC) becomes missing again and fails the reads waiting on its
    /// piece with that error.
    ///
    /// Returns [`BlockArrival::Stored`] for a block taken for writing,
    /// [`BlockArrival::Duplicate`] for one already received or being
    /// written, [`BlockArrival::Unrequested`] for a bad index, offset or
    /// length.
    pub(crate) async fn block_arrived(
        self: &Arc<Self>,
        conn: ConnId,
        index: u32,
        begin: u32,
        data: Bytes,
    ) -> BlockArrival {
        let Some(loaded) = self.loaded() else {
            return BlockArrival::Unrequested;
        };
        let (claim, first) = {
            let mut guard = self.lock();
            let st = &mut *guard;
            match st.picker.as_mut() {
                Some(p) => {
                    let c = p.claim_block(conn, index, begin, data.len() as u32);
                    // A piece's first block: the piece counts against the
                    // cache's bound from now on.
                    let first = c == BlockOutcome::Write
                        && st
                            .cache
                            .begin_partial(index, u64::from(p.piece_size(index)));
                    (c, first)
                }
                None => (BlockOutcome::Unrequested, false),
            }
        };
        match claim {
            BlockOutcome::Write => {}
            BlockOutcome::Unrequested => return BlockArrival::Unrequested,
            _ => return BlockArrival::Duplicate,
        }
        // v2 and hybrid: checked alone if its leaf hash is held.
        let alone = match self.check_block(index, begin, &data) {
            BlockCheck::Good(leaf) => Some(leaf),
            BlockCheck::Unknown => None,
            BlockCheck::Bad => {
                if let Some(p) = self.lock().picker.as_mut() {
                    p.block_write_failed(index, begin);
                }
                self.bad_block(conn, index, begin);
                return BlockArrival::Duplicate;
            }
        };
        let pending = PendingWrite {
            conn,
            index,
            begin,
            offset: u64::from(index) * loaded.info.piece_length + u64::from(begin),
            _held: super::budget::global().force(data.len() as u64),
            data,
            first,
            alone,
        };
        let writer = self.writer.get_or_init(|| Arc::new(Writer::new())).clone();
        match writer.room.acquire().await {
            Ok(permit) => permit.forget(), // given back when the writer takes the block
            Err(_) => unreachable!("the writer's semaphore is never closed"),
        }
        let (start, wake) = {
            let mut q = writer.queue();
            q.blocks.push_back(pending);
            if q.running {
                (false, std::mem::take(&mut q.waiting))
            } else {
                q.running = true;
                (true, false)
            }
        };
        if wake {
            writer.more.notify_one();
        }
        if start {
            let swarm = Arc::downgrade(self);
            tokio::task::spawn_blocking(move || run_writer(swarm, writer));
        }
        BlockArrival::Stored
    }

    /// Writes `batch` (drained) to the storage, adjacent blocks of one
    /// file in one call, feeds the pieces' hashes, then counts the blocks
    /// (see [`Swarm::blocks_written`]). Runs blocking I/O.
    fn write_batch(self: &Arc<Self>, batch: &mut Vec<PendingWrite>, hashes: &Mutex<AsWritten>) {
        let Some(loaded) = self.loaded() else {
            // Blocks are claimed only once the metadata is loaded.
            batch.clear();
            return;
        };
        if batch.iter().any(|p| p.first) {
            // Room first, so the cache never holds more than its bound
            // (pieces being read excepted: they are kept anyway).
            self.evict_over_budget();
        }
        let info = &loaded.info;
        // A v2-only piece is checked against its Merkle root instead: the
        // leaf hash of each block. (A hybrid piece is had on its SHA-1.)
        let sha1 = info.version != MetaVersion::V2;
        let mut hashes = hashes.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = Vec::with_capacity(batch.len());
        let mut rest = &batch[..];
        while !rest.is_empty() {
            // A run of blocks back to back in the piece space.
            let mut n = 1;
            while n < rest.len()
                && rest[n].offset == rest[n - 1].offset + rest[n - 1].data.len() as u64
            {
                n += 1;
            }
            let (run, next) = rest.split_at(n);
            rest = next;
            let res = if let [p] = run {
                loaded.storage.write_at(p.offset, &p.data)
            } else {
                let blocks: Vec<&[u8]> = run.iter().map(|p| &p.data[..]).collect();
                loaded.storage.write_vectored_at(run[0].offset, &blocks)
            };
            for p in run {
                if !sha1 {
                    match res {
                        Ok(()) => {
                            let size = info.piece_size(p.index) as u32;
                            let data = info.piece_data_size(p.index) as u32;
                            let l = &mut hashes.leaves;
                            l.written(p.index, p.begin, &p.data, p.alone, size, data)
                        }
                        Err(_) => hashes.forget(p.index),
                    }
                } else {
                    match res {
                        Ok(()) => {
                            let at = u64::from(p.index) * info.piece_length;
                            let mut read = |begin: u32, buf: &mut [u8]| {
                                let _work = super::budget::global().force(buf.len() as u64);
                                loaded.storage.read_at(at + u64::from(begin), buf)
                            };
                            let size = info.piece_size(p.index) as u32;
                            let h = &mut hashes.sha1;
                            h.written(p.index, p.begin, &p.data, size, &mut read)
                        }
                        Err(_) => hashes.forget(p.index),
                    }
                }
                let res = match &res {
                    Ok(()) => Ok(()),
                    Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                };
                done.push(((p.conn, p.index, p.begin, p.alone.is_some()), res));
            }
        }
        // The blocks' bytes and budget shares go.
        batch.clear();
        self.blocks_written(done, &mut hashes);
    }

    /// Counts blocks the writer wrote (or failed to write), in the order
    /// they were queued; verifies completed pieces: on this thread when
    /// `hashes` has the piece's hash as written, else from the storage on
    /// another thread of the blocking pool.
    fn blocks_written(self: &Arc<Self>, done: Vec<Written>, hashes: &mut AsWritten) {
        let mut complete = Vec::new();
        let mut errors = Vec::new();
        let mut alone = false;
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            for ((conn, index, begin, verified), res) in done {
                match res {
                    Ok(()) => {
                        if let Some(p) = st.picker.as_mut() {
                            match p.block_written(conn, index, begin) {
                                BlockOutcome::Complete { index, sources, .. } => {
                                    complete.push((index, sources));
                                }
                                BlockOutcome::Stored if verified => {
                                    alone |= p.mark_verified_alone(index, begin);
                                }
                                _ => {}
                            }
                        }
                    }
                    Err(e) => {
                        if let Some(p) = st.picker.as_mut() {
                            p.block_write_failed(index, begin);
                        }
                        if st.reads.store_error(index, e.kind()) {
                            errors.push((index, e));
                        }
                    }
                }
            }
        }
        for (index, e) in &errors {
            tracing::error!(
                "{}: cannot store piece {index} in the cache (writing a block: {e}); reads of it fail",
                self.info_hash
            );
        }
        if !errors.is_empty() || alone {
            self.piece_event.notify_waiters();
        }
        for (index, sources) in complete {
            match hashes.take(index) {
                Some(Hashed::Sha1(sha1)) => self.verify_hashed(index, sources, sha1),
                Some(Hashed::Leaves(leaves)) => self.verify_leaves(index, sources, &leaves),
                None => self.verify_downloaded(index, sources),
            }
        }
    }
}

/// A written block: (sender, piece, offset in the piece, verified alone),
/// and how its write went.
type Written = ((ConnId, u32, u32, bool), std::io::Result<()>);

/// The writer's thread (see the module docs): takes every block queued
/// since its last pass (at most [`QUEUE_BLOCKS`]) and writes them, until
/// no block came for [`WRITER_IDLE`] or the swarm is gone. Runs on the
/// blocking pool.
fn run_writer(swarm: Weak<Swarm>, writer: Arc<Writer>) {
    /// Leaves the queue without a thread if this one ends otherwise than
    /// idle (a panic, the swarm gone).
    struct Running<'a>(&'a Writer, bool);
    impl Drop for Running<'_> {
        fn drop(&mut self) {
            if self.1 {
                self.0.queue().running = false;
            }
        }
    }
    let mut running = Running(&writer, true);
    let mut batch = Vec::with_capacity(QUEUE_BLOCKS);
    loop {
        {
            let mut q = writer.queue();
            let idle_since = Instant::now();
            while q.blocks.is_empty() {
                let idle = idle_since.elapsed();
                if idle >= WRITER_IDLE || swarm.strong_count() == 0 {
                    // Under the lock that a peer's task takes to queue a
                    // block: its next block starts a thread again.
                    q.running = false;
                    running.1 = false;
                    return;
                }
                q.waiting = true;
                q = writer
                    .more
                    .wait_timeout(q, WRITER_IDLE - idle)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                q.waiting = false;
            }
            let n = q.blocks.len().min(QUEUE_BLOCKS);
            batch.extend(q.blocks.drain(..n));
        }
        writer.room.add_permits(batch.len());
        let Some(swarm) = swarm.upgrade() else { return };
        swarm.write_batch(&mut batch, &writer.hashes);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering;

    use super::super::tests::{PL, good_and_bad, piece, swarm, wait};
    use super::super::{BLOCK, PeerSource};
    use super::*;

    /// Piece `index` is waited on, and its blocks are requested of `conn`.
    fn request(s: &Swarm, conn: ConnId, index: u32) {
        let mut st = s.lock();
        let p = st.picker.as_mut().unwrap();
        p.add_urgent(index);
        let reqs = p.pick(conn, &|_| true, 16);
        assert!(reqs.iter().any(|r| r.index == index), "{reqs:?}");
    }

    /// Piece `index`, which failed its check, is asked of `conn` again once
    /// it is discarded (missing: its blocks can be picked; until then it
    /// is being verified, wanted or not).
    async fn request_again(s: &Swarm, conn: ConnId, index: u32) {
        wait(|| {
            let mut st = s.lock();
            let p = st.picker.as_mut().unwrap();
            p.pick(conn, &|_| true, 16).iter().any(|r| r.index == index)
        })
        .await
    }

    /// `conn` sends blocks `blocks` of `data` as piece `index`, in that
    /// order.
    async fn send(s: &Arc<Swarm>, conn: ConnId, index: u32, data: &[u8], blocks: &[u32]) {
        for &b in blocks {
            let begin = b * BLOCK;
            let block = Bytes::copy_from_slice(&data[begin as usize..][..BLOCK as usize]);
            let arrival = s.block_arrived(conn, index, begin, block).await;
            assert_eq!(arrival, BlockArrival::Stored);
        }
    }

    fn has(s: &Swarm, index: u32) -> bool {
        s.lock().picker.as_ref().unwrap().has(index)
    }

    #[tokio::test]
    async fn a_downloaded_piece_is_verified_without_reading_it_back_whole() {
        let s = swarm(None);
        let addr: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let (g, _) = s.register_conn(addr, PeerSource::Cli).unwrap();
        let (as_written, read_back) = (
            || s.counters.hashed_as_written.load(Ordering::Relaxed),
            || s.counters.hashed_read_back.load(Ordering::Relaxed),
        );
        request(&s, g, 2);
        send(&s, g, 2, &piece(2), &[0, 1]).await;
        wait(|| has(&s, 2)).await;
        assert_eq!((as_written(), read_back()), (1, 0));
        assert_eq!(s.read(2 * PL as u64, PL).await.unwrap(), piece(2));
        // Out of order: block 1 is read back once the hash gets to it,
        // and the piece is not read back whole.
        request(&s, g, 5);
        send(&s, g, 5, &piece(5), &[1, 0]).await;
        wait(|| has(&s, 5)).await;
        assert_eq!((as_written(), read_back()), (2, 0));
        assert_eq!(s.read(5 * PL as u64, PL).await.unwrap(), piece(5));
    }

    #[tokio::test]
    async fn a_bad_piece_written_in_order_is_refetched_and_blames_only_the_bad_blocks_sender() {
        let s = swarm(None);
        let ((good, g), (bad, b)) = good_and_bad(&s);
        for round in 0..3u32 {
            let i = round;
            // Block 0 from the honest peer, then block 1, wrong, from the
            // other: the writer has the (wrong) SHA-1, and the piece is
            // read back to decide and to blame.
            let mut wrong = piece(i);
            wrong[PL - 1] ^= 1;
            request(&s, g, i);
            send(&s, g, i, &wrong, &[0]).await;
            send(&s, b, i, &wrong, &[1]).await;
            wait(|| s.counters.hash_failures.load(Ordering::Relaxed) > u64::from(round)).await;
            // discarded, then asked again
            request_again(&s, g, i).await;
            // Never held, nobody blamed on a guess...
            assert!(!has(&s, i));
            assert!(!s.is_banned(good.ip()) && !s.is_banned(bad.ip()));
            // ...until a good copy verifies: the sender of the block that
            // differed gets the strike.
            send(&s, g, i, &piece(i), &[0, 1]).await;
            wait(|| has(&s, i)).await;
            assert_eq!(s.lock().verify.strikes(bad.ip()), Some(round + 1));
            assert_eq!(
                s.read(u64::from(i) * PL as u64, PL).await.unwrap(),
                piece(i)
            );
        }
        assert!(s.is_banned(bad.ip()), "3 strikes: banned");
        assert!(!s.is_banned(good.ip()), "the honest peer is never blamed");
        assert_eq!(s.counters.hashed_as_written.load(Ordering::Relaxed), 3);
    }
    /// A v2-only swarm (BEP 52) over a file of 2 pieces and 20000 bytes
    /// and a file of 3000 bytes (one piece, checked against its `pieces
    /// root`), 64 KiB pieces, its piece layers held; and the bytes of its
    /// 4 pieces (each file's last piece ends in zeros: the piece space
    /// aligns files to pieces).
    fn v2_swarm(flavor: crate::metainfo::Flavor) -> (Arc<Swarm>, Vec<Vec<u8>>) {
        use crate::metainfo::build_v2;
        const V2PL: usize = 4 * BLOCK as usize;
        let big: Vec<u8> = (0..2 * V2PL + 20000).map(|k| (k * 7 % 251) as u8).collect();
        let small: Vec<u8> = (0..3000).map(|k| (k * 11 % 253) as u8).collect();
        let files = vec![
            (vec!["big.bin".to_string()], big.len() as u64),
            (vec!["small.bin".to_string()], small.len() as u64),
        ];
        let data = [big.clone(), small.clone()];
        let mut src = |f: usize, off: u64, buf: &mut [u8]| -> std::io::Result<()> {
            let off = off as usize;
            buf.copy_from_slice(&data[f][off..off + buf.len()]);
            Ok(())
        };
        let built = build_v2("t", &files, V2PL as u64, flavor, &mut src).unwrap();
        let cfg = super::super::tests::test_config(None, crate::storage::StorageKind::Memory);
        let s = Swarm::new(built.info_hash_v2.truncated(), cfg);
        s.set_metadata(&built.info_raw).unwrap();
        let layers = built.piece_layers.to_bencode().encode();
        let trees = super::super::trees::Trees::new(&built.info, Some(layers));
        assert!(trees.ready());
        s.lock().trees = trees;
        let mut last = big[2 * V2PL..].to_vec();
        last.resize(V2PL, 0);
        let mut small = small;
        small.resize(V2PL, 0);
        let pieces = vec![
            big[..V2PL].to_vec(),
            big[V2PL..2 * V2PL].to_vec(),
            last,
            small,
        ];
        (s, pieces)
    }

    /// v2-only pieces are verified from the leaf hashes of their blocks as
    /// written, in any order, without reading them back; the root as
    /// written is the one a read-back computes; a wrong block, or a byte
    /// of the alignment gap that is not zero, is still caught (read back,
    /// refused, fetched again).
    #[tokio::test]
    async fn a_v2_piece_is_verified_from_its_leaves_as_written() {
        use crate::metainfo::Flavor::V2Only;
        let (s, pieces) = v2_swarm(V2Only);
        assert_eq!(s.loaded().unwrap().info.version, MetaVersion::V2);
        let addr: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let (g, _) = s.register_conn(addr, PeerSource::Cli).unwrap();
        let (as_written, read_back, failures) = (
            || s.counters.hashed_as_written.load(Ordering::Relaxed),
            || s.counters.hashed_read_back.load(Ordering::Relaxed),
            || s.counters.hash_failures.load(Ordering::Relaxed),
        );
        let pl = 4 * u64::from(BLOCK);
        let orders: [&[u32]; 4] = [&[0, 1, 2, 3], &[3, 1, 0, 2], &[2, 3, 0, 1], &[1, 0, 3, 2]];
        for (i, order) in orders.iter().enumerate() {
            let i = i as u32;
            request(&s, g, i);
            send(&s, g, i, &pieces[i as usize], order).await;
            wait(|| has(&s, i)).await;
            assert_eq!((as_written(), read_back()), (u64::from(i) + 1, 0));
            // the read-back check agrees
            assert_eq!(s.piece_is_good(i).unwrap(), Some(true));
            let got = s.read(u64::from(i) * pl, pl as usize).await.unwrap();
            assert_eq!(got, pieces[i as usize], "piece {i}");
        }
        assert_eq!(failures(), 0);
        // A wrong byte in file data, then in the alignment gap: read back,
        // refused, wanted again; then a good copy verifies as written.
        let (s, pieces) = v2_swarm(V2Only);
        let (g, _) = s.register_conn(addr, PeerSource::Cli).unwrap();
        let (as_written, read_back, failures) = (
            || s.counters.hashed_as_written.load(Ordering::Relaxed),
            || s.counters.hashed_read_back.load(Ordering::Relaxed),
            || s.counters.hash_failures.load(Ordering::Relaxed),
        );
        request(&s, g, 2);
        for (round, at) in [(0u64, BLOCK as usize + 77), (1, 3 * BLOCK as usize + 5)] {
            let mut wrong = pieces[2].clone();
            wrong[at] ^= 1;
            send(&s, g, 2, &wrong, &[0, 1, 2, 3]).await;
            wait(|| failures() > round).await;
            request_again(&s, g, 2).await;
            assert!(!has(&s, 2));
            assert_eq!((as_written(), read_back()), (0, round + 1));
        }
        send(&s, g, 2, &pieces[2], &[1, 3, 2, 0]).await;
        wait(|| has(&s, 2)).await;
        assert_eq!((as_written(), read_back()), (1, 2));
        let got = s.read(2 * pl, pl as usize).await.unwrap();
        assert_eq!(got, pieces[2]);
        assert_eq!(s.lock().verify.strikes(addr.ip()), Some(2));
    }
    /// A hybrid's pieces are had on their SHA-1 (BEP 52 keeps the v1
    /// `pieces`), hashed as written too: its leaves are not hashed again.
    #[tokio::test]
    async fn a_hybrid_piece_is_had_on_its_sha1_as_written() {
        let (s, pieces) = v2_swarm(crate::metainfo::Flavor::Hybrid);
        assert_eq!(s.loaded().unwrap().info.version, MetaVersion::Hybrid);
        let addr: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let (g, _) = s.register_conn(addr, PeerSource::Cli).unwrap();
        let pl = 4 * u64::from(BLOCK);
        for i in [0u32, 2] {
            request(&s, g, i);
            send(&s, g, i, &pieces[i as usize], &[0, 1, 2, 3]).await;
            wait(|| has(&s, i)).await;
            let got = s.read(u64::from(i) * pl, pl as usize).await.unwrap();
            assert_eq!(got, pieces[i as usize], "piece {i}");
        }
        let c = &s.counters;
        assert_eq!(c.hashed_as_written.load(Ordering::Relaxed), 2);
        assert_eq!(c.hashed_read_back.load(Ordering::Relaxed), 0);
        let w = s.writer.get().unwrap();
        assert_eq!(w.hashes.lock().unwrap().leaves.len(), 0, "no leaves kept");
    }
}
