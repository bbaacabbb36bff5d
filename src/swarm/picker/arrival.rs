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
}
