//! Received blocks go to the storage as they arrive: a piece being
//! downloaded is never assembled in memory, whatever its length. Each
//! block is taken by the picker (so two copies of one block are never
//! written at once), written off the async threads, then counted as
//! received; the piece's last block starts its verification from the
//! storage ([`super::verify`]). Until a piece verifies, its bytes in the
//! storage are neither read for a reader nor uploaded.

use std::sync::Arc;

use bytes::Bytes;

use super::picker::BlockOutcome;
use super::{BlockArrival, ConnId, Swarm};

impl Swarm {
    /// A block that connection `conn` requested arrived: it is written to
    /// the storage (on the blocking pool; the caller awaits the write, so a
    /// peer's blocks queue in its socket rather than in memory), then
    /// counted. A block that completes its piece starts the piece's
    /// verification (see [`Swarm::verify_downloaded`]). A block that cannot
    /// be written (ENOSPC) becomes missing again and fails the reads
    /// waiting on its piece with that error.
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
        let storage = loaded.storage.clone();
        let offset = u64::from(index) * loaded.info.piece_length + u64::from(begin);
        let swarm = self.clone();
        let written = tokio::task::spawn_blocking(move || {
            if first {
                // Room first, so the cache never holds more than its bound
                // (pieces being read excepted: they are kept anyway).
                swarm.evict_over_budget();
            }
            storage.write_at(offset, &data)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            let new = {
                let mut st = self.lock();
                if let Some(p) = st.picker.as_mut() {
                    p.block_write_failed(index, begin);
                }
                st.reads.store_error(index, e.kind())
            };
            if new {
                tracing::error!(
                    "{}: cannot store piece {index} in the cache (writing a block: {e}); reads of it fail",
                    self.info_hash
                );
            }
            self.piece_event.notify_waiters();
            return BlockArrival::Stored;
        }
        let outcome = match self.lock().picker.as_mut() {
            Some(p) => p.block_written(conn, index, begin),
            None => BlockOutcome::Duplicate,
        };
        match outcome {
            BlockOutcome::Complete { index, sources, .. } => {
                self.verify_downloaded(index, sources);
                BlockArrival::Stored
            }
            BlockOutcome::Duplicate => BlockArrival::Duplicate,
            _ => BlockArrival::Stored,
        }
    }
}
