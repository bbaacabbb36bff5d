//! Blocks arriving from peers, as the picker sees them: claimed (being
//! written to the storage, so a second copy is a duplicate), written
//! (received; the piece's last block hands the piece to verification), or
//! failed to write (missing again). Kept apart from picking, which decides
//! what to ask for; this decides what an answer is worth.

use super::{BLOCK, BlockOutcome, BlockState, ConnId, Picker, block_req};

impl Picker {
    /// A block arrived from `conn`: [`BlockOutcome::Write`] when it is to
    /// be written to the storage (the block is then being written: a copy
    /// from anyone else is a duplicate until [`Picker::block_written`]).
    ///
    /// A block of an in-progress piece is taken whoever it was requested
    /// from (it is verified with the whole piece anyway): a peer may still
    /// deliver requests we released after a choke or cancelled.
    pub fn claim_block(&mut self, conn: ConnId, index: u32, begin: u32, len: u32) -> BlockOutcome {
        let Some(size) = self.piece_size_checked(index) else {
            return BlockOutcome::Unrequested;
        };
        let Some(part) = self.partial.get_mut(&index) else {
            // Had, being verified, or dropped as no longer wanted.
            return BlockOutcome::Duplicate;
        };
        if begin % BLOCK != 0 {
            return BlockOutcome::Unrequested;
        }
        let b = (begin / BLOCK) as usize;
        if b >= part.blocks.len() || len != block_req(index, b, size).length {
            return BlockOutcome::Unrequested;
        }
        if matches!(
            part.blocks[b],
            BlockState::Received | BlockState::Writing { .. }
        ) {
            return BlockOutcome::Duplicate;
        }
        if std::mem::take(&mut part.alone[b]) {
            self.epoch += 1;
        }
        part.blocks[b] = BlockState::Writing {
            conn,
            discard: false,
        };
        part.writing += 1;
        BlockOutcome::Write
    }

    /// The block at `begin` of piece `index` that `conn` sent (taken by
    /// [`Picker::claim_block`]) is in the storage: received, unless its
    /// sender was banned meanwhile. [`BlockOutcome::Complete`] when it was
    /// the piece's last block (the piece is then being verified).
    pub fn block_written(&mut self, conn: ConnId, index: u32, begin: u32) -> BlockOutcome {
        let Some(part) = self.partial.get_mut(&index) else {
            return BlockOutcome::Duplicate;
        };
        let b = (begin / BLOCK) as usize;
        let Some(BlockState::Writing { conn: c, discard }) = part.blocks.get(b).cloned() else {
            return BlockOutcome::Duplicate;
        };
        part.writing -= 1;
        if discard || c != conn {
            part.blocks[b] = BlockState::Missing;
            return BlockOutcome::Duplicate;
        }
        part.blocks[b] = BlockState::Received;
        part.sources[b] = Some(conn);
        part.received += 1;
        if !part.contributors.contains(&conn) {
            part.contributors.push(conn);
        }
        if part.received < part.blocks.len() {
            return BlockOutcome::Stored;
        }
        let part = self.partial.remove(&index).expect("present");
        self.verifying.insert(index);
        self.epoch += 1;
        BlockOutcome::Complete {
            index,
            contributors: part.contributors,
            sources: part
                .sources
                .into_iter()
                .map(|c| c.unwrap_or(conn))
                .collect(),
        }
    }

    /// The block at `begin` of piece `index` taken by
    /// [`Picker::claim_block`] could not be written: missing again.
    pub fn block_write_failed(&mut self, index: u32, begin: u32) {
        if let Some(part) = self.partial.get_mut(&index)
            && let Some(st) = part.blocks.get_mut((begin / BLOCK) as usize)
            && matches!(st, BlockState::Writing { .. })
        {
            *st = BlockState::Missing;
            part.writing -= 1;
        }
    }

    /// Block `begin` of piece `index`, written and received, was verified
    /// alone against its file's Merkle tree: true when it is still
    /// received (not claimed again, the piece not completed meanwhile).
    pub fn mark_verified_alone(&mut self, index: u32, begin: u32) -> bool {
        let b = (begin / BLOCK) as usize;
        match self.partial.get_mut(&index) {
            Some(part) if matches!(part.blocks.get(b), Some(BlockState::Received)) => {
                part.alone[b] = true;
                true
            }
            _ => false,
        }
    }

    /// Whether the bytes `[start, end)` of piece `index` (offsets within the
    /// piece) can be read: the piece is had, or every block under the range
    /// is received and verified alone.
    pub fn range_readable(&self, index: u32, start: u32, end: u32) -> bool {
        if self.has(index) {
            return true;
        }
        let Some(part) = self.partial.get(&index) else {
            return false;
        };
        let (first, last) = ((start / BLOCK) as usize, (end.max(start + 1) - 1) / BLOCK);
        (first..=last as usize).all(|b| {
            matches!(part.blocks.get(b), Some(BlockState::Received))
                && part.alone.get(b).copied().unwrap_or(false)
        })
    }

    /// Blocks of piece `index` received but not verified alone yet (their
    /// `begin` offsets): written before their hashes came.
    pub fn received_unverified(&self, index: u32) -> Vec<u32> {
        self.partial.get(&index).map_or_else(Vec::new, |part| {
            (0..part.blocks.len())
                .filter(|&b| matches!(part.blocks[b], BlockState::Received) && !part.alone[b])
                .map(|b| b as u32 * BLOCK)
                .collect()
        })
    }

    /// Blocks of piece `index` asked of a peer, being written or received
    /// (0 for a piece not in progress).
    pub fn blocks_under_way(&self, index: u32) -> u32 {
        self.partial.get(&index).map_or(0, |part| {
            part.blocks
                .iter()
                .filter(|b| !matches!(b, BlockState::Missing))
                .count() as u32
        })
    }

    /// The urgent piece `index` is picked from block `block` on first.
    pub fn set_hot(&mut self, index: u32, block: u32) {
        if self.urgent.contains_key(&index) {
            self.hot.insert(index, block);
        }
    }

    /// See the `epoch` field: equal before and after a read of stored
    /// bytes means nothing under it changed.
    pub fn data_epoch(&self) -> u64 {
        self.epoch
    }
}
