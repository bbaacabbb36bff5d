//! The hashes of a downloaded piece, computed by the swarm's writer
//! ([`super::write`]) as the piece's blocks are written, so that a complete
//! piece is verified without reading it back from the storage (a `pread`
//! of every byte: issue 19):
//! - v1 and hybrid torrents: the piece's SHA-1 (BEP 3, `pieces`),
//!   [`InOrder`]; for a hybrid it is the SHA-1 that makes a piece had;
//! - v2-only torrents: the SHA-256 leaf hash of each 16 KiB block (BEP 52),
//!   [`Leaves`], whose Merkle root over the piece is compared with the
//!   piece layer's entry (or the `pieces root` of a file of one piece).
//!
//! Both are kept in [`AsWritten`]; what is kept per piece in flight is
//! bounded, and a piece whose hashes were dropped is hashed from the
//! storage as before ([`super::verify`]).
//!
//! **SHA-1.** At loopback rates the blocks of a piece mostly arrive in
//! order, and hashing each as it goes to the storage spares reading the
//! whole piece back once it is complete. A block
//! that arrives ahead of the hash is only noted (a bit per block), and
//! read back from the storage when the hash gets to it. What is kept per
//! piece in flight is a SHA-1 state (about 100 bytes) and that bitfield
//! (a bit per 16 KiB block: 32 bytes for a 4 MiB piece), never the piece,
//! for at most [`MAX_PIECES`] pieces.
//!
//! The hash always covers exactly what the storage holds in the range it
//! has hashed, `[0, next)`: a block is hashed when it is written at
//! `next`, or read back from the storage once `next` reaches it. A write
//! inside the hashed range (a block written again) changes what the
//! storage holds there: the hash starts over when it is the first block,
//! and is dropped otherwise. So a piece whose hash is [`InOrder::take`]n
//! complete is hashed exactly as a read of the whole piece from the
//! storage would hash it (the swarm punches out only pieces that are held
//! or being verified, never a piece being downloaded), with most of its
//! blocks never read back. A piece whose hash was dropped is hashed from
//! the storage as before ([`super::verify`]).
//!
//! **Leaves.** A v2 leaf covers one block alone, so the order blocks
//! arrive in does not matter and nothing is ever read back: each written
//! block's leaf is stored in its slot (a block written again replaces it:
//! the leaf is of what the storage holds), and the bytes of a block past
//! its file's end (the alignment gap of the piece space) must be zeros.
//! Kept per piece: 32 bytes per block of file data and a bit per block
//! (8 KiB for a 4 MiB piece), for at most [`MAX_PIECES`] pieces and
//! [`MAX_LEAF_BYTES`] in all, counted in the memory budget.
use std::io;

use sha1::Digest;

use super::BLOCK;
use super::budget::Reservation;
use crate::merkle::{self, Hash};

/// Most pieces hashed at once; past it the least recently written one is
/// dropped (and hashed from the storage when complete). Pieces in flight
/// are bounded by the picker far below this. With libtorrent's longest
/// pieces (32767 blocks, a 4 KiB bitfield), 64 pieces hold 260 KiB at
/// most.
pub(super) const MAX_PIECES: usize = 64;

/// Most bytes of leaf hashes kept for pieces in flight (v2): 4 MiB, 512
/// pieces of 4 MiB or 4 pieces of the longest (32767 blocks, 1 MiB of
/// leaves); past it the least recently written pieces are dropped.
pub(super) const MAX_LEAF_BYTES: usize = 4 << 20;

/// Where the hash of one piece stands.
enum Progress {
    /// `[0, next)` hashed; `ahead` has a bit set for each block past
    /// `next` written since (empty until one is).
    Hashing {
        next: u32,
        sha1: sha1::Sha1,
        ahead: Vec<u64>,
    },
    /// Every block hashed: the piece's SHA-1.
    Done([u8; 20]),
}

/// The hashes of the pieces being downloaded (see the module docs), owned
/// by the swarm's writer.
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

/// Bit `block` of `bits`.
fn bit(bits: &[u64], block: u32) -> bool {
    bits.get(block as usize / 64)
        .is_some_and(|w| w & (1 << (block % 64)) != 0)
}

/// Sets bit `block` of `bits` (of a piece of `blocks` blocks).
fn set_bit(bits: &mut Vec<u64>, block: u32, blocks: u32) {
    if bits.is_empty() {
        bits.resize(blocks.div_ceil(64) as usize, 0);
    }
    if let Some(w) = bits.get_mut(block as usize / 64) {
        *w |= 1 << (block % 64);
    }
}

impl InOrder {
    /// The block `data` at offset `begin` of piece `index` (of
    /// `piece_size` bytes) is in the storage now: hashed (at the hash's
    /// end, then with the blocks written ahead that follow it, read with
    /// `read(begin, buf)` from the storage), noted (ahead of the hash's
    /// end), or it restarts or drops the hash (inside what was hashed: see
    /// the module docs).
    pub(super) fn written(
        &mut self,
        index: u32,
        begin: u32,
        data: &[u8],
        piece_size: u32,
        read: &mut dyn FnMut(u32, &mut [u8]) -> io::Result<()>,
    ) {
        let blocks = piece_size.div_ceil(BLOCK);
        if !self.pieces.contains(&index) {
            let mut ahead = Vec::new();
            if begin > 0 {
                set_bit(&mut ahead, begin / BLOCK, blocks);
            }
            let p = Progress::Hashing {
                next: 0,
                sha1: sha1::Sha1::new(),
                ahead,
            };
            self.pieces.put(index, p);
            if begin > 0 {
                return;
            }
        }
        let p = self.pieces.get_mut(&index).expect("present");
        let again = match p {
            Progress::Hashing { next, ahead, .. } if begin < *next && begin == 0 => {
                // The first block again: start over; what was hashed past
                // it is on the storage, to be read back in turn.
                for b in 1..next.div_ceil(BLOCK) {
                    set_bit(ahead, b, blocks);
                }
                *p = Progress::Hashing {
                    next: 0,
                    sha1: sha1::Sha1::new(),
                    ahead: std::mem::take(ahead),
                };
                true
            }
            Progress::Hashing { next, .. } => begin >= *next,
            Progress::Done(_) if begin == 0 => {
                for_restart(p, piece_size);
                true
            }
            Progress::Done(_) => false,
        };
        if !again {
            self.pieces.pop(&index);
            return;
        }
        let Progress::Hashing { next, sha1, ahead } = p else {
            unreachable!("hashing")
        };
        if begin > *next {
            set_bit(ahead, begin / BLOCK, blocks);
            return;
        }
        sha1.update(data);
        *next = next.saturating_add(data.len() as u32);
        // Blocks written ahead, now at the hash's end: read back.
        let mut buf = Vec::new();
        while *next < piece_size && bit(ahead, *next / BLOCK) {
            let len = (piece_size - *next).min(BLOCK) as usize;
            buf.resize(len, 0);
            if read(*next, &mut buf).is_err() {
                self.pieces.pop(&index);
                return;
            }
            sha1.update(&buf);
            *next += len as u32;
        }
        if *next >= piece_size {
            let h = sha1.clone().finalize().into();
            *p = Progress::Done(h);
        }
    }

    /// A block of piece `index` could not be written (what the storage
    /// holds is unknown): its hash is dropped.
    pub(super) fn forget(&mut self, index: u32) {
        self.pieces.pop(&index);
    }

    /// Piece `index` is complete: its SHA-1 if the whole piece was hashed
    /// (see the module docs), else None (hash it from the storage). Its
    /// hash is dropped either way.
    pub(super) fn take(&mut self, index: u32) -> Option<[u8; 20]> {
        match self.pieces.pop(&index) {
            Some(Progress::Done(h)) => Some(h),
            _ => None,
        }
    }
}

/// A complete hash whose first block is written again: started over,
/// every other block to be read back from the storage in turn.
fn for_restart(p: &mut Progress, piece_size: u32) {
    let blocks = piece_size.div_ceil(BLOCK);
    let mut ahead = Vec::new();
    for b in 1..blocks {
        set_bit(&mut ahead, b, blocks);
    }
    *p = Progress::Hashing {
        next: 0,
        sha1: sha1::Sha1::new(),
        ahead,
    };
}

/// The hashes of the pieces being written, per the torrent's kind (see the
/// module docs), owned by the swarm's writer.
#[derive(Default)]
pub(super) struct AsWritten {
    /// v1 and hybrid torrents.
    pub(super) sha1: InOrder,
    /// v2-only torrents.
    pub(super) leaves: Leaves,
}

/// A complete piece's hash as its blocks were written.
pub(super) enum Hashed {
    /// Its SHA-1 (v1, hybrid).
    Sha1([u8; 20]),
    /// The leaf hash of each 16 KiB block of file data (v2), every byte
    /// after the file data zero.
    Leaves(Vec<Hash>),
}

impl AsWritten {
    /// Piece `index` is complete: its hash as written if whole, else None
    /// (hash it from the storage). Dropped either way.
    pub(super) fn take(&mut self, index: u32) -> Option<Hashed> {
        match self.leaves.take(index) {
            Some(l) => Some(Hashed::Leaves(l)),
            None => self.sha1.take(index).map(Hashed::Sha1),
        }
    }

    /// A block of piece `index` could not be written: its hashes go.
    pub(super) fn forget(&mut self, index: u32) {
        self.sha1.forget(index);
        self.leaves.forget(index);
    }
}

/// The leaves of one piece being written (v2).
struct PieceLeaves {
    /// One per block of file data, in order (zeros until written).
    leaves: Vec<Hash>,
    /// A bit per block of the piece: written.
    seen: Vec<u64>,
    /// Blocks of the piece not written yet.
    left: u32,
    /// Every byte written past the file data is zero.
    zeros: bool,
    _bytes: Reservation,
}

impl PieceLeaves {
    fn bytes(&self) -> usize {
        self.leaves.len() * 32 + self.seen.len() * 8
    }
}

/// The leaf hashes of the v2 pieces being written (see the module docs).
pub(super) struct Leaves {
    pieces: lru::LruCache<u32, PieceLeaves>,
    /// Bytes held by `pieces`, at most [`MAX_LEAF_BYTES`].
    bytes: usize,
}

impl Default for Leaves {
    fn default() -> Self {
        Leaves {
            pieces: lru::LruCache::new(std::num::NonZeroUsize::new(MAX_PIECES).expect("not zero")),
            bytes: 0,
        }
    }
}

impl Leaves {
    /// The block `data` at offset `begin` of piece `index` (of
    /// `piece_size` bytes, the first `data_size` of them file data) is in
    /// the storage now: its leaf is stored (`leaf` when the caller has it
    /// already, checked against the tree: else hashed here), and its bytes
    /// past the file data checked for zeros. A block that does not fit
    /// the piece drops the piece's leaves.
    pub(super) fn written(
        &mut self,
        index: u32,
        begin: u32,
        data: &[u8],
        leaf: Option<Hash>,
        piece_size: u32,
        data_size: u32,
    ) {
        let blocks = piece_size.div_ceil(BLOCK);
        let b = begin / BLOCK;
        let fits = begin % BLOCK == 0
            && b < blocks
            && data.len() == (piece_size - begin).min(BLOCK) as usize
            && data_size <= piece_size;
        if !fits {
            self.forget(index);
            return;
        }
        let want = (data_size.saturating_sub(begin) as usize).min(data.len());
        let leaf = (want > 0).then(|| leaf.unwrap_or_else(|| merkle::block_hash(&data[..want])));
        let zeros = data[want..].iter().all(|&x| x == 0);
        if !self.pieces.contains(&index) {
            let n = data_size.div_ceil(BLOCK) as usize;
            let words = blocks.div_ceil(64) as usize;
            let need = n * 32 + words * 8;
            while self.bytes + need > MAX_LEAF_BYTES || self.pieces.len() >= MAX_PIECES {
                match self.pieces.pop_lru() {
                    Some((_, p)) => self.bytes -= p.bytes(),
                    None => break,
                }
            }
            self.bytes += need;
            self.pieces.put(
                index,
                PieceLeaves {
                    leaves: vec![[0; 32]; n],
                    seen: vec![0; words],
                    left: blocks,
                    zeros: true,
                    _bytes: super::budget::global().force(need as u64),
                },
            );
        }
        let p = self.pieces.get_mut(&index).expect("present");
        if let (Some(leaf), Some(slot)) = (leaf, p.leaves.get_mut(b as usize)) {
            *slot = leaf;
        }
        p.zeros &= zeros;
        if !bit(&p.seen, b) {
            set_bit(&mut p.seen, b, blocks);
            p.left -= 1;
        }
    }

    /// How many pieces have leaves kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.pieces.len()
    }

    /// A block of piece `index` could not be written (what the storage
    /// holds is unknown): its leaves are dropped.
    pub(super) fn forget(&mut self, index: u32) {
        if let Some(p) = self.pieces.pop(&index) {
            self.bytes -= p.bytes();
        }
    }

    /// Piece `index` is complete: the leaves of its file data if every
    /// block was written and every byte past the file data is zero, else
    /// None (hash it from the storage). Dropped either way.
    pub(super) fn take(&mut self, index: u32) -> Option<Vec<Hash>> {
        let p = self.pieces.pop(&index)?;
        self.bytes -= p.bytes();
        (p.left == 0 && p.zeros).then_some(p.leaves)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: usize = BLOCK as usize;

    fn piece() -> Vec<u8> {
        (0..4 * B).map(|i| (i * 31 % 251) as u8).collect()
    }

    /// The storage of one piece, and the hashes of what is written to it.
    struct Disk {
        bytes: Vec<u8>,
        hashes: InOrder,
        reads: usize,
    }

    impl Disk {
        fn new(size: usize) -> Disk {
            Disk {
                bytes: vec![0; size],
                hashes: InOrder::default(),
                reads: 0,
            }
        }

        /// Writes blocks `blocks` of `data` as piece `index`, in order.
        fn write(&mut self, index: u32, data: &[u8], blocks: &[usize]) {
            for &b in blocks {
                let r = b * B..((b + 1) * B).min(data.len());
                self.bytes[r.clone()].copy_from_slice(&data[r.clone()]);
                let (bytes, reads) = (&self.bytes, &mut self.reads);
                let mut read = |at: u32, buf: &mut [u8]| {
                    *reads += 1;
                    buf.copy_from_slice(&bytes[at as usize..at as usize + buf.len()]);
                    Ok(())
                };
                let size = data.len() as u32;
                self.hashes
                    .written(index, (b * B) as u32, &data[r], size, &mut read);
            }
        }
    }

    fn sha1(data: &[u8]) -> Option<[u8; 20]> {
        Some(sha1::Sha1::digest(data).into())
    }

    #[test]
    fn blocks_in_order_give_the_pieces_sha1_with_nothing_read_back() {
        let data = piece();
        let mut d = Disk::new(data.len());
        d.write(3, &data, &[0, 1, 2, 3]);
        assert_eq!(d.hashes.take(3), sha1(&data));
        assert_eq!(d.hashes.take(3), None, "taken once");
        assert_eq!(d.reads, 0);
    }

    #[test]
    fn blocks_written_ahead_are_read_back_when_the_hash_gets_to_them() {
        let data = piece();
        let mut d = Disk::new(data.len());
        d.write(1, &data, &[2, 0, 3, 1]);
        assert_eq!(d.hashes.take(1), sha1(&data));
        assert_eq!(d.reads, 2, "blocks 2 and 3 only");
        let mut d = Disk::new(data.len());
        d.write(1, &data, &[3, 2, 1, 0]);
        assert_eq!(d.hashes.take(1), sha1(&data));
        assert_eq!(d.reads, 3);
    }

    #[test]
    fn a_block_written_again_inside_the_hash_restarts_or_drops_it() {
        let data = piece();
        let mut other = piece();
        other[B + 5] ^= 1;
        // block 1 written again (other bytes) after the hash passed it:
        // dropped, whatever comes next
        let mut d = Disk::new(data.len());
        d.write(1, &data, &[0, 1, 2]);
        d.write(1, &other, &[1]);
        d.write(1, &data, &[3]);
        assert_eq!(d.hashes.take(1), None);
        // a complete piece whose block 2 is written again
        d.write(1, &data, &[0, 1, 2, 3]);
        d.write(1, &data, &[2]);
        assert_eq!(d.hashes.take(1), None);
        // the first block written again starts over: the rest is read
        // back, so the hash is of what the storage holds
        let mut d = Disk::new(data.len());
        d.write(1, &other, &[0, 1, 2]);
        d.write(1, &data, &[0, 3]);
        assert_eq!(d.hashes.take(1), sha1(&d.bytes.clone()));
        assert_eq!(d.bytes, other);
        // once dropped, what was hashed is forgotten: blocks 1 to 3 would
        // have to be written again
        let mut d = Disk::new(data.len());
        d.write(1, &data, &[0, 1, 2, 3]);
        d.write(1, &other, &[1]);
        d.write(1, &data, &[0]);
        assert_eq!(d.hashes.take(1), None);
        // a failed write
        d.write(1, &data, &[0, 1]);
        d.hashes.forget(1);
        d.write(1, &data, &[2, 3]);
        assert_eq!(d.hashes.take(1), None);
    }

    #[test]
    fn a_failed_read_back_drops_the_hash() {
        let data = piece();
        let mut h = InOrder::default();
        let mut fail = |_: u32, _: &mut [u8]| Err(io::ErrorKind::Other.into());
        let size = data.len() as u32;
        h.written(4, B as u32, &data[B..2 * B], size, &mut fail);
        h.written(4, 0, &data[..B], size, &mut fail);
        h.written(4, 2 * B as u32, &data[2 * B..3 * B], size, &mut fail);
        h.written(4, 3 * B as u32, &data[3 * B..], size, &mut fail);
        assert_eq!(h.take(4), None);
    }

    #[test]
    fn a_short_last_piece_and_a_one_block_piece() {
        let data = &piece()[..B + 100];
        let mut d = Disk::new(data.len());
        d.write(7, data, &[1, 0]);
        assert_eq!(d.hashes.take(7), sha1(data));
        let mut d = Disk::new(100);
        d.write(8, &data[..100], &[0]);
        assert_eq!(d.hashes.take(8), sha1(&data[..100]));
    }

    #[test]
    fn at_most_max_pieces_are_kept() {
        let data = piece();
        let mut d = Disk::new(data.len());
        for i in 0..=MAX_PIECES as u32 {
            d.write(i, &data, &[0]);
        }
        assert_eq!(d.hashes.pieces.len(), MAX_PIECES);
        // the least recently written one went
        d.write(1, &data, &[1, 2, 3]);
        assert_eq!(d.hashes.take(1), sha1(&data));
        d.write(0, &data, &[1, 2, 3]);
        assert_eq!(d.hashes.take(0), None);
    }
    /// Writes blocks `blocks` of `data` (a piece of `size` bytes, the
    /// first `data_size` file data) into `l` as piece `index`.
    fn leaves_of(l: &mut Leaves, index: u32, data: &[u8], data_size: u32, blocks: &[usize]) {
        for &b in blocks {
            let r = b * B..((b + 1) * B).min(data.len());
            let size = data.len() as u32;
            l.written(index, (b * B) as u32, &data[r], None, size, data_size);
        }
    }

    /// The Merkle root of a piece's file data as a read back from the
    /// storage computes it (`super::super::trees::merkle_stored`): every
    /// block read and hashed, padded to `width` leaves.
    fn read_back_root(data: &[u8], width: u64) -> Hash {
        merkle::root_of(&merkle::block_hashes(data), 0, width)
    }

    #[test]
    fn leaves_in_any_order_give_the_read_back_root_with_nothing_read() {
        let data = piece();
        for order in [[0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0]] {
            let mut l = Leaves::default();
            leaves_of(&mut l, 5, &data, data.len() as u32, &order);
            let leaves = l.take(5).expect("whole");
            assert_eq!(leaves, merkle::block_hashes(&data));
            assert_eq!(merkle::root_of(&leaves, 0, 4), read_back_root(&data, 4));
            assert_eq!(l.take(5), None, "taken once");
            assert_eq!(l.bytes, 0);
        }
        // a leaf given by the caller (checked against the tree already)
        // is used as it is
        let mut l = Leaves::default();
        let given = merkle::block_hash(&data[..B]);
        l.written(1, 0, &data[..B], Some(given), B as u32, B as u32);
        assert_eq!(l.take(1), Some(vec![given]));
    }

    #[test]
    fn a_piece_past_its_files_end_has_leaves_for_file_data_only_and_zeros_after() {
        // 1.5 blocks of file data, then the alignment gap up to 4 blocks
        let file = B + B / 2;
        let mut data = piece();
        data[file..].fill(0);
        let mut l = Leaves::default();
        leaves_of(&mut l, 2, &data, file as u32, &[3, 2, 1, 0]);
        let leaves = l.take(2).expect("whole");
        assert_eq!(leaves, merkle::block_hashes(&data[..file]));
        assert_eq!(
            merkle::root_of(&leaves, 0, 4),
            read_back_root(&data[..file], 4)
        );
        // a byte past the file's end that is not zero: no hash as
        // written (the read-back check refuses the piece)
        for at in [file, 3 * B + 7] {
            let mut bad = data.clone();
            bad[at] = 1;
            let mut l = Leaves::default();
            leaves_of(&mut l, 2, &bad, file as u32, &[0, 1, 2, 3]);
            assert_eq!(l.take(2), None, "byte {at}");
        }
    }

    #[test]
    fn a_wrong_block_gives_a_wrong_root_and_a_block_written_again_replaces_its_leaf() {
        let data = piece();
        let mut wrong = data.clone();
        wrong[2 * B + 9] ^= 1;
        let good = read_back_root(&data, 4);
        let mut l = Leaves::default();
        leaves_of(&mut l, 0, &wrong, data.len() as u32, &[0, 1, 2, 3]);
        let leaves = l.take(0).unwrap();
        assert_ne!(merkle::root_of(&leaves, 0, 4), good);
        // the wrong block written again, right this time, before the end:
        // the leaves are of what the storage holds
        leaves_of(&mut l, 0, &wrong, data.len() as u32, &[0, 1, 2]);
        leaves_of(&mut l, 0, &data, data.len() as u32, &[2, 3]);
        let leaves = l.take(0).unwrap();
        assert_eq!(merkle::root_of(&leaves, 0, 4), good);
    }

    #[test]
    fn incomplete_failed_or_misfit_pieces_give_no_leaves() {
        let data = piece();
        let size = data.len() as u32;
        let mut l = Leaves::default();
        leaves_of(&mut l, 0, &data, size, &[0, 1, 3]);
        assert_eq!(l.take(0), None, "block 2 never written");
        leaves_of(&mut l, 0, &data, size, &[0, 1, 2]);
        l.forget(0);
        leaves_of(&mut l, 0, &data, size, &[3]);
        assert_eq!(l.take(0), None, "a failed write");
        // a block of the wrong length or offset, or past the piece
        for (begin, len) in [(0, B - 1), (5, B), (4 * B, B)] {
            let mut l = Leaves::default();
            leaves_of(&mut l, 0, &data, size, &[0, 1, 2, 3]);
            l.written(0, begin as u32, &data[..len], None, size, size);
            assert_eq!(l.take(0), None, "{begin} {len}");
            assert_eq!(l.bytes, 0);
        }
    }

    #[test]
    fn leaves_are_bounded_in_pieces_and_bytes() {
        let data = piece();
        let size = data.len() as u32;
        let mut l = Leaves::default();
        for i in 0..=MAX_PIECES as u32 {
            leaves_of(&mut l, i, &data, size, &[0]);
        }
        assert_eq!(l.pieces.len(), MAX_PIECES);
        leaves_of(&mut l, 0, &data, size, &[1, 2, 3]);
        assert_eq!(l.take(0), None, "the least recently written went");
        // libtorrent's longest pieces: 32767 blocks, 1 MiB of leaves each
        let mut l = Leaves::default();
        let long = 32767 * BLOCK;
        for i in 0..8 {
            l.written(i, 0, &data[..B], None, long, long);
            assert!(l.bytes <= MAX_LEAF_BYTES);
        }
        assert!(l.pieces.len() < 8);
        assert!(!l.pieces.contains(&0));
    }
}
