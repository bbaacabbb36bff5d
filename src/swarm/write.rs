//! Received blocks go to the storage as they arrive: a piece being
//! downloaded is never assembled in memory, whatever its length. Each
//! block is taken by the picker (so two copies of one block are never
//! written at once), queued for the swarm's writer, written off the async
//! threads, then counted as received; the piece's last block starts its
//! verification from the storage ([`super::verify`]). Until a piece
//! verifies, its bytes in the storage are neither read for a reader nor
//! uploaded.
//!
//! Why one writer per swarm rather than a write per block: at loopback
//! rates a peer sends a block every ~100 µs, and a round trip through the
//! blocking pool for each one, awaited by the peer's task, cost 40 % of
//! the throughput (issue 19). The writer takes every block queued since
//! its last pass and writes them in one blocking call, while the peers'
//! tasks go on reading their sockets. The queue is bounded
//! ([`QUEUE_BLOCKS`]) and its blocks count in the memory budget, so a
//! slow disk slows the peers down (their tasks wait to queue) instead of
//! filling memory.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::block_verify::BlockCheck;
use super::budget::Reservation;
use super::picker::BlockOutcome;
use super::{BlockArrival, ConnId, Swarm};

/// Most blocks queued for the writer of one swarm: 64 blocks of 16 KiB,
/// 1 MiB. A peer task that finds the queue full waits (back-pressure).
pub(super) const QUEUE_BLOCKS: usize = 64;

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
    /// once written.
    alone: bool,
    /// The block's bytes, counted in the memory budget until written.
    _held: Reservation,
}

/// The sending side of a swarm's writer (see the module docs), started on
/// the first block.
pub(super) type WriterTx = mpsc::Sender<PendingWrite>;

impl Swarm {
    /// A block that connection `conn` requested arrived: claimed, then
    /// queued for the swarm's writer, which writes it to the storage off
    /// the async threads and counts it (see the module docs). Waits only
    /// while the writer's queue is full. A block that completes its piece
    /// starts the piece's verification (see [`Swarm::verify_downloaded`]).
    /// A block that cannot be written (ENOSPC) becomes missing again and
    /// fails the reads waiting on its piece with that error.
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
            BlockCheck::Good => true,
            BlockCheck::Unknown => false,
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
        let tx = self
            .writer
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel(QUEUE_BLOCKS);
                tokio::spawn(run_writer(Arc::downgrade(self), rx));
                tx
            })
            .clone();
        if tx.send(pending).await.is_err() {
            // The writer is gone: only when the runtime shuts down.
            if let Some(p) = self.lock().picker.as_mut() {
                p.block_write_failed(index, begin);
            }
            return BlockArrival::Duplicate;
        }
        BlockArrival::Stored
    }

    /// Counts blocks the writer wrote (or failed to write), in the order
    /// they were queued; starts the verification of completed pieces.
    fn blocks_written(self: &Arc<Self>, done: Vec<Written>) {
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
            self.verify_downloaded(index, sources);
        }
    }
}

/// A written block: (sender, piece, offset in the piece, verified alone),
/// and how its write went.
type Written = ((ConnId, u32, u32, bool), std::io::Result<()>);

/// The writer of one swarm: takes every block queued since its last pass
/// (at most [`QUEUE_BLOCKS`]), writes them in one blocking call, counts
/// them. Ends when the swarm is dropped (its sender with it).
async fn run_writer(swarm: Weak<Swarm>, mut rx: mpsc::Receiver<PendingWrite>) {
    let mut batch = Vec::with_capacity(QUEUE_BLOCKS);
    while rx.recv_many(&mut batch, QUEUE_BLOCKS).await > 0 {
        let Some(swarm) = swarm.upgrade() else { return };
        let Some(storage) = swarm.loaded().map(|l| l.storage.clone()) else {
            // Blocks are claimed only once the metadata is loaded.
            batch.clear();
            continue;
        };
        let items = std::mem::take(&mut batch);
        let keys: Vec<(ConnId, u32, u32, bool)> = items
            .iter()
            .map(|p| (p.conn, p.index, p.begin, p.alone))
            .collect();
        let s2 = swarm.clone();
        let results = tokio::task::spawn_blocking(move || {
            items
                .into_iter()
                .map(|p| {
                    if p.first {
                        // Room first, so the cache never holds more than
                        // its bound (pieces being read excepted: they are
                        // kept anyway).
                        s2.evict_over_budget();
                    }
                    storage.write_at(p.offset, &p.data)
                    // `p` (its bytes and its budget share) is dropped here.
                })
                .collect::<Vec<_>>()
        })
        .await;
        let done = match results {
            Ok(results) => keys.into_iter().zip(results).collect(),
            Err(e) => {
                tracing::error!("{}: the cache writer failed: {e}", swarm.info_hash);
                keys.into_iter()
                    .map(|k| (k, Err(std::io::Error::other(e.to_string()))))
                    .collect()
            }
        };
        swarm.blocks_written(done);
    }
}
