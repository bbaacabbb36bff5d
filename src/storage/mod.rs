//! Where verified pieces live (BEP 3 piece space mapped onto files).
//!
//! A torrent's content is one byte space of `total_length` bytes cut into
//! pieces; files are consecutive ranges of it (BEP 3, "info dictionary").
//! [`Storage`] reads and writes that space by absolute offset (u64, so files
//! over 4 GiB work). Two implementations:
//! - [`FileStorage`], the default: each file of the torrent is a sparse file
//!   under `<cache-dir>/<info-hash>/files/` with its sanitized path, written
//!   with positional I/O (no seeks, safe from many threads). BEP 47 pad files
//!   are never stored: they read as zeros. Beside them, `info` holds the raw
//!   info dictionary (a second mount needs no metadata exchange) and `have`
//!   the bitfield of pieces the cache holds (resume). Pieces listed in
//!   `have` are trusted for nothing: the swarm hashes each one before it is
//!   served or advertised (lazily, on the first read or in the background,
//!   see the swarm's `read`), so a corrupt, truncated or deleted
//!   cache file is never served.
//! - [`MemStorage`]: pieces in memory, for embedding and tests.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

mod file;
pub mod layout;
mod mem;

pub use file::{FileStorage, check_cache_free};
pub use layout::{CacheLayout, DraftDir, TorrentDir, default_cache_dir};
pub use mem::MemStorage;

/// Byte-addressed storage of one torrent's piece space.
///
/// Offsets are absolute in the torrent (0 ..= `total_length`). Callers only
/// write whole verified pieces and only read ranges of pieces they hold.
pub trait Storage: Send + Sync + 'static {
    /// Writes the whole piece `index` (`data.len()` = that piece's size).
    /// Errors: the underlying I/O error (ENOSPC on a full disk).
    fn write_piece(&self, index: u32, data: &[u8]) -> io::Result<()>;
    /// Writes `data` at absolute offset `offset` of the piece space: one
    /// received block (BEP 3, 16 KiB) of a piece not verified yet. The
    /// swarm writes blocks as they arrive and hashes the piece from here
    /// once complete, so a piece never sits whole in memory; its bytes are
    /// neither read for a reader nor uploaded before it verifies. Errors:
    /// the underlying I/O error (ENOSPC), `InvalidInput` past the end.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Writes `blocks` back to back from absolute offset `offset`, as
    /// [`Storage::write_at`] of their concatenation would, without copying
    /// them together: the received blocks of one run of a piece, written
    /// in one system call per file where the storage can
    /// ([`FileStorage`]: `pwritev`). The default writes each in turn.
    /// Errors: as [`Storage::write_at`]; after an error, any part of the
    /// range may have been written.
    fn write_vectored_at(&self, offset: u64, blocks: &[&[u8]]) -> io::Result<()> {
        let mut at = offset;
        for b in blocks {
            self.write_at(at, b)?;
            at += b.len() as u64;
        }
        Ok(())
    }
    /// Fills `buf` from absolute offset `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// The persisted bitfield of the pieces stored (BEP 3 layout: high bit
    /// of byte 0 = piece 0), if any. A hint only: callers hash each piece
    /// it lists before trusting it.
    fn load_have(&self) -> Option<Vec<u8>>;
    /// Persists the bitfield of the pieces stored (verified, or stored
    /// earlier and not hashed yet since the start). Errors: I/O errors.
    fn save_have(&self, bitfield: &[u8]) -> io::Result<()>;
    /// The persisted piece layers of a v2 torrent (BEP 52, bencoded as a
    /// .torrent's `piece layers`), if any. A hint only: each layer is
    /// checked against its `pieces root` before use. None by default.
    fn load_piece_layers(&self) -> Option<Vec<u8>> {
        None
    }
    /// Persists the piece layers (see [`Storage::load_piece_layers`]); by
    /// default they are not kept. Errors: I/O errors.
    fn save_piece_layers(&self, _layers: &[u8]) -> io::Result<()> {
        Ok(())
    }
    /// Frees the space of piece `index` (evicted from a bounded cache, or
    /// found wrong). Its bytes read as zeros or fail afterwards: callers
    /// forget the piece first. Errors: the underlying I/O error.
    fn discard_piece(&self, _index: u32) -> io::Result<()> {
        Ok(())
    }
    /// The file on disk that holds exactly the bytes of the torrent's file
    /// `file_index` (an index into `Info::files`), when the storage keeps
    /// one file per torrent file. `None` for other layouts (memory) and for
    /// pad files and symlinks. Only the ranges of verified pieces hold the
    /// torrent's bytes.
    fn file_path(&self, _file_index: usize) -> Option<&Path> {
        None
    }
    /// The file on disk that holds exactly the bytes at absolute
    /// `[offset, offset + length)`, when that range is one whole torrent
    /// file kept in a file of its own (see [`Storage::file_path`]).
    fn file_at(&self, _offset: u64, _length: u64) -> Option<&Path> {
        None
    }
}

/// Calls `each(extent index, offset in that extent, range in the request)`
/// for every extent that absolute range `[offset, offset + len)` touches,
/// in order. `extents` lie back to back in offset order; `span` gives one's
/// `(offset, length)`; `total` is the piece space's size. Errors:
/// `InvalidInput` for a range past `total`, and the first error of `each`.
pub(crate) fn for_each_extent<T>(
    extents: &[T],
    span: impl Fn(&T) -> (u64, u64),
    total: u64,
    offset: u64,
    len: usize,
    mut each: impl FnMut(usize, u64, std::ops::Range<usize>) -> io::Result<()>,
) -> io::Result<()> {
    let end = offset
        .checked_add(len as u64)
        .filter(|&e| e <= total)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range past the end"))?;
    // First extent whose end is past `offset`.
    let mut i = extents.partition_point(|e| {
        let (o, l) = span(e);
        o + l <= offset
    });
    let mut pos = offset;
    while pos < end && i < extents.len() {
        let (o, l) = span(&extents[i]);
        let s = pos.max(o);
        let t = end.min(o + l);
        if s < t {
            each(i, s - o, (s - offset) as usize..(t - offset) as usize)?;
            pos = t;
        }
        i += 1;
    }
    Ok(())
}

/// Where verified pieces are kept.
#[derive(Debug, Clone)]
pub enum StorageKind {
    /// Files under `<dir>/<info-hash>/` (see [`FileStorage`] and
    /// [`layout`]).
    Files(PathBuf),
    /// In memory only ([`MemStorage`]).
    Memory,
}

/// Writes `path` through a temporary file and a rename, so a crash leaves
/// either the old or the new content.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.{n}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, data)?;
    fs::rename(&tmp, path)
}
