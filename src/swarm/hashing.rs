//! The SHA-1 of a downloaded piece (BEP 3, `pieces`), computed by the
//! swarm's writer ([`super::write`]) as the piece's blocks are written,
//! when they are written in order. At loopback rates the blocks of a piece
//! mostly arrive in order, and hashing each as it goes to the storage
//! spares reading the whole piece back once it is complete (a `pread` of
//! every byte: issue 19). Only a SHA-1 state per piece in flight is kept
//! (about 100 bytes, never the piece), for at most [`MAX_PIECES`] pieces.
//!
//! The hash covers exactly the bytes written: it is started by the write
//! of a piece's first block (offset 0) and continued only by a write at
//! the offset where it stopped. Any other write to the piece (a block
//! written out of order, written again, or a failed write) drops it, and
//! the piece is then hashed from the storage as before
//! ([`super::verify`]). So a piece whose hash is [`InOrder::take`]n
//! complete had each of its blocks written once, in order, since its first
//! block's last write: the storage holds exactly the hashed bytes (the
//! swarm punches out only pieces that are held or being verified, never a
//! piece being downloaded).

use sha1::Digest;

/// Most pieces hashed in order at once; past it the least recently written
/// one is dropped (and hashed from the storage when complete). Pieces in
/// flight are bounded by the picker far below this.
pub(super) const MAX_PIECES: usize = 256;

/// Where the hash of one piece stands.
enum Progress {
    /// Blocks `[0, next)` hashed.
    Hashing { next: u32, sha1: sha1::Sha1 },
    /// Every block hashed: the piece's SHA-1.
    Done([u8; 20]),
}

/// The in-order hashes of the pieces being downloaded (see the module
/// docs), owned by the swarm's writer.
pub(super) struct InOrder {
    pieces: lru::LruCache<u32, Progress>,
}

impl Default for InOrder {
    fn default() -> Self {
        InOrder {
            pieces: lru::LruCache::new(std::num::NonZeroUsize::new(MAX_PIECES).expect("not zero")),
        }
    }
}

impl InOrder {
    /// The block `data` at offset `begin` of piece `index` (of
    /// `piece_size` bytes) is in the storage now: it starts the piece's
    /// hash (offset 0), continues it (the offset where it stopped) or
    /// drops it (anywhere else).
    pub(super) fn written(&mut self, index: u32, begin: u32, data: &[u8], piece_size: u32) {
        let len = data.len() as u32;
        if begin == 0 {
            let mut sha1 = sha1::Sha1::new();
            sha1.update(data);
            let p = if len >= piece_size {
                Progress::Done(sha1.finalize().into())
            } else {
                Progress::Hashing { next: len, sha1 }
            };
            self.pieces.put(index, p);
            return;
        }
        let done = match self.pieces.get_mut(&index) {
            Some(Progress::Hashing { next, sha1 }) if *next == begin => {
                sha1.update(data);
                *next = next.saturating_add(len);
                (*next >= piece_size).then(|| sha1.clone().finalize().into())
            }
            Some(_) => {
                self.pieces.pop(&index);
                return;
            }
            None => return,
        };
        if let Some(h) = done {
            self.pieces.put(index, Progress::Done(h));
        }
    }

    /// A block of piece `index` could not be written (what the storage
    /// holds is unknown): its hash is dropped.
    pub(super) fn forget(&mut self, index: u32) {
        self.pieces.pop(&index);
    }

    /// Piece `index` is complete: its SHA-1 if every block was hashed in
    /// order (see the module docs), else None (hash it from the storage).
    /// Its hash is dropped either way.
    pub(super) fn take(&mut self, index: u32) -> Option<[u8; 20]> {
        match self.pieces.pop(&index) {
            Some(Progress::Done(h)) => Some(h),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: usize = 16 * 1024;

    fn piece() -> Vec<u8> {
        (0..4 * B).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn write(h: &mut InOrder, index: u32, data: &[u8], blocks: &[usize]) {
        for &b in blocks {
            h.written(
                index,
                (b * B) as u32,
                &data[b * B..(b + 1) * B],
                data.len() as u32,
            );
        }
    }

    #[test]
    fn blocks_in_order_give_the_pieces_sha1() {
        let data = piece();
        let mut h = InOrder::default();
        write(&mut h, 3, &data, &[0, 1, 2, 3]);
        assert_eq!(h.take(3), Some(sha1::Sha1::digest(&data).into()));
        assert_eq!(h.take(3), None, "taken once");
    }

    #[test]
    fn any_block_out_of_order_or_written_again_drops_the_hash() {
        let data = piece();
        let mut h = InOrder::default();
        write(&mut h, 1, &data, &[0, 2, 1, 3]);
        assert_eq!(h.take(1), None);
        // block 1 written again after block 2: what the storage holds at
        // block 1 is the second write, which the hash did not see in place
        write(&mut h, 1, &data, &[0, 1, 2, 1, 3]);
        assert_eq!(h.take(1), None);
        // a complete piece written again from block 1 on
        write(&mut h, 1, &data, &[0, 1, 2, 3, 1]);
        assert_eq!(h.take(1), None);
        // a failed write
        write(&mut h, 1, &data, &[0, 1]);
        h.forget(1);
        write(&mut h, 1, &data, &[2, 3]);
        assert_eq!(h.take(1), None);
        // starting again from block 0 hashes what is written from then on
        write(&mut h, 1, &data, &[2, 0, 1, 2, 3]);
        assert_eq!(h.take(1), Some(sha1::Sha1::digest(&data).into()));
    }

    #[test]
    fn a_short_last_piece_and_a_one_block_piece() {
        let data = &piece()[..B + 100];
        let mut h = InOrder::default();
        h.written(7, 0, &data[..B], data.len() as u32);
        h.written(7, B as u32, &data[B..], data.len() as u32);
        assert_eq!(h.take(7), Some(sha1::Sha1::digest(data).into()));
        h.written(8, 0, &data[..100], 100);
        assert_eq!(h.take(8), Some(sha1::Sha1::digest(&data[..100]).into()));
    }

    #[test]
    fn at_most_max_pieces_are_kept() {
        let data = piece();
        let mut h = InOrder::default();
        for i in 0..=MAX_PIECES as u32 {
            h.written(i, 0, &data[..B], data.len() as u32);
        }
        assert_eq!(h.pieces.len(), MAX_PIECES);
        // the least recently written one went
        write(&mut h, 0, &data, &[1, 2, 3]);
        assert_eq!(h.take(0), None);
        write(&mut h, 1, &data, &[1, 2, 3]);
        assert_eq!(h.take(1), Some(sha1::Sha1::digest(&data).into()));
    }
}
