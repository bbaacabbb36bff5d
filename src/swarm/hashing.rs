//! The SHA-1 of a downloaded piece (BEP 3, `pieces`), computed by the
//! swarm's writer ([`super::write`]) as the piece's blocks are written. At
//! loopback rates the blocks of a piece mostly arrive in order, and
//! hashing each as it goes to the storage spares reading the whole piece
//! back once it is complete (a `pread` of every byte: issue 19). A block
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

use std::io;

use sha1::Digest;

use super::BLOCK;

/// Most pieces hashed at once; past it the least recently written one is
/// dropped (and hashed from the storage when complete). Pieces in flight
/// are bounded by the picker far below this. With libtorrent's longest
/// pieces (32767 blocks, a 4 KiB bitfield), 64 pieces hold 260 KiB at
/// most.
pub(super) const MAX_PIECES: usize = 64;

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
}
