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
//!   see [`crate::swarm::Swarm::read`]), so a corrupt, truncated or deleted
//!   cache file is never served.
//! - [`MemStorage`]: pieces in memory, for embedding and tests.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::metainfo::Info;

/// Byte-addressed storage of one torrent's piece space.
///
/// Offsets are absolute in the torrent (0 ..= `total_length`). Callers only
/// write whole verified pieces and only read ranges of pieces they hold.
pub trait Storage: Send + Sync + 'static {
    /// Writes the verified piece `index` (`data.len()` = that piece's size).
    /// Errors: the underlying I/O error (ENOSPC on a full disk).
    fn write_piece(&self, index: u32, data: &[u8]) -> io::Result<()>;
    /// Fills `buf` from absolute offset `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// The persisted bitfield of the pieces stored (BEP 3 layout: high bit
    /// of byte 0 = piece 0), if any. A hint only: callers hash each piece
    /// it lists before trusting it.
    fn load_have(&self) -> Option<Vec<u8>>;
    /// Persists the bitfield of the pieces stored (verified, or stored
    /// earlier and not hashed yet since the start). Errors: I/O errors.
    fn save_have(&self, bitfield: &[u8]) -> io::Result<()>;
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

/// One stored file: its range in the piece space and where it lives.
#[derive(Debug, Clone)]
struct Extent {
    offset: u64,
    length: u64,
    /// `None` for BEP 47 pad files (zeros, never stored).
    path: Option<PathBuf>,
}

/// File-backed storage under `<cache-dir>/<info-hash>/`.
pub struct FileStorage {
    /// `<cache-dir>/<info-hash>`.
    root: PathBuf,
    extents: Vec<Extent>,
    piece_length: u64,
    total_length: u64,
    /// Open files, by extent index; bounded so huge torrents don't exhaust fds.
    open: Mutex<lru::LruCache<usize, Arc<File>>>,
    /// `<dir>/lock`, held with an exclusive `flock` while this storage
    /// lives: two processes must never share one torrent's cache (one could
    /// evict or rewrite a piece the other believes it holds). The kernel
    /// drops the lock when the process dies, even by `kill -9`.
    _lock: File,
}

/// Fails as [`FileStorage::open`] would when another process has the cache
/// directory `dir` of a torrent (`AddrInUse`, naming its pid), so a lookup
/// can say so before it talks to any peer. Takes the lock for a moment
/// only; a directory without a `lock` file is free.
pub fn check_cache_free(dir: &Path) -> io::Result<()> {
    if !dir.join("lock").exists() {
        return Ok(());
    }
    lock_cache_dir(dir).map(drop)
}

/// How long a cache directory held by another process is waited for
/// before it is refused: a process that was just unmounted holds the lock
/// until it has exited (measured: ~0.1 s), and a remount at once must not
/// fail for that.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the exclusive lock of the cache directory `dir` (see
/// [`FileStorage`]), waiting up to [`LOCK_WAIT`] for another holder to go;
/// `AddrInUse` with the holder's pid when it does not. Blocking.
fn lock_cache_dir(dir: &Path) -> io::Result<File> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match try_lock_cache_dir(dir) {
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// One try of [`lock_cache_dir`].
fn try_lock_cache_dir(dir: &Path) -> io::Result<File> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("lock"))?;
    // SAFETY: flock on a valid fd.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use by another btfs-mount (pid {}): one torrent's cache serves one process at a time",
                    dir.display(),
                    pid.trim()
                ),
            ));
        }
        return Err(e);
    }
    f.set_len(0)?;
    f.seek(io::SeekFrom::Start(0))?;
    write!(f, "{}", std::process::id())?;
    Ok(f)
}

impl FileStorage {
    /// Prepares storage for `info` under `dir` (= `<cache-dir>/<info-hash>`),
    /// creating the directory and writing the raw info dictionary to `info`.
    /// Files are created lazily, on the first write that touches them.
    ///
    /// Errors: I/O errors, and `AddrInUse` when another process (or another
    /// live `FileStorage`) has this directory (see the `lock` file).
    pub fn open(dir: &Path, info: &Info) -> io::Result<FileStorage> {
        fs::create_dir_all(dir.join("files"))?;
        let lock = lock_cache_dir(dir)?;
        let info_path = dir.join("info");
        if fs::read(&info_path).ok().as_deref() != Some(&info.raw[..]) {
            write_atomic(&info_path, &info.raw)?;
        }
        let extents = info
            .files
            .iter()
            .map(|f| Extent {
                offset: f.offset,
                length: f.length,
                path: (!f.pad && f.symlink.is_none()).then(|| {
                    let mut p = dir.join("files");
                    for c in &f.path {
                        p.push(c);
                    }
                    p
                }),
            })
            .collect();
        Ok(FileStorage {
            root: dir.to_path_buf(),
            extents,
            piece_length: info.piece_length,
            total_length: info.total_length,
            open: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(64).unwrap())),
            _lock: lock,
        })
    }

    /// The directory this storage lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn file(&self, idx: usize, create: bool) -> io::Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = open.get(&idx) {
            return Ok(f.clone());
        }
        let ext = &self.extents[idx];
        let path = ext.path.as_ref().expect("pad extents are never opened");
        let f = if create {
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)?;
            if f.metadata()?.len() != ext.length {
                f.set_len(ext.length)?;
            }
            f
        } else {
            OpenOptions::new().read(true).write(true).open(path)?
        };
        let f = Arc::new(f);
        open.put(idx, f.clone());
        Ok(f)
    }

    /// Calls `each(extent index, offset in file, range in buf)` for every
    /// extent that `[offset, offset + len)` touches.
    fn split(
        &self,
        offset: u64,
        len: usize,
        mut each: impl FnMut(usize, u64, std::ops::Range<usize>) -> io::Result<()>,
    ) -> io::Result<()> {
        let end = offset
            .checked_add(len as u64)
            .filter(|&e| e <= self.total_length)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "range past the end"))?;
        // First extent whose end is past `offset`.
        let mut i = self
            .extents
            .partition_point(|e| e.offset + e.length <= offset);
        let mut pos = offset;
        while pos < end && i < self.extents.len() {
            let e = &self.extents[i];
            let s = pos.max(e.offset);
            let t = end.min(e.offset + e.length);
            if s < t {
                each(
                    i,
                    s - e.offset,
                    (s - offset) as usize..(t - offset) as usize,
                )?;
                pos = t;
            }
            i += 1;
        }
        Ok(())
    }
}

impl Storage for FileStorage {
    fn write_piece(&self, index: u32, data: &[u8]) -> io::Result<()> {
        let offset = index as u64 * self.piece_length;
        self.split(offset, data.len(), |i, at, r| {
            if self.extents[i].path.is_none() {
                return Ok(()); // pad file
            }
            self.file(i, true)?.write_all_at(&data[r], at)
        })
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.split(offset, buf.len(), |i, at, r| {
            if self.extents[i].path.is_none() {
                buf[r].fill(0);
                return Ok(());
            }
            self.file(i, false)?.read_exact_at(&mut buf[r], at)
        })
    }

    fn load_have(&self) -> Option<Vec<u8>> {
        fs::read(self.root.join("have")).ok()
    }

    /// Punches a hole (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`)
    /// over the piece in each sparse file it touches: the blocks go back to
    /// the filesystem, file sizes stay. Filesystem blocks shared with a
    /// neighbouring piece are zeroed in the piece's range only, never freed.
    /// A file that was never created is skipped. Errors: EOPNOTSUPP on
    /// filesystems without hole punching, other I/O errors.
    fn discard_piece(&self, index: u32) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let offset = index as u64 * self.piece_length;
        if offset >= self.total_length {
            return Ok(());
        }
        let len = (self.total_length - offset).min(self.piece_length) as usize;
        self.split(offset, len, |i, at, r| {
            if self.extents[i].path.is_none() {
                return Ok(());
            }
            let f = match self.file(i, false) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            // SAFETY: fallocate on an open fd with in-range offsets.
            let rc = unsafe {
                libc::fallocate(
                    f.as_raw_fd(),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    at as libc::off_t,
                    (r.end - r.start) as libc::off_t,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })
    }

    fn save_have(&self, bitfield: &[u8]) -> io::Result<()> {
        write_atomic(&self.root.join("have"), bitfield)
    }

    fn file_path(&self, file_index: usize) -> Option<&Path> {
        self.extents.get(file_index)?.path.as_deref()
    }

    fn file_at(&self, offset: u64, length: u64) -> Option<&Path> {
        // Extents are in offset order; zero-length ones share an offset.
        let first = self.extents.partition_point(|e| e.offset < offset);
        self.extents[first..]
            .iter()
            .take_while(|e| e.offset == offset)
            .find(|e| e.length == length && length > 0)?
            .path
            .as_deref()
    }
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

/// Pieces kept in memory (no persistence). For embedding and tests.
pub struct MemStorage {
    piece_length: u64,
    total_length: u64,
    pieces: Mutex<HashMap<u32, Arc<[u8]>>>,
}

impl MemStorage {
    /// Empty storage for `info`'s piece space.
    pub fn new(info: &Info) -> MemStorage {
        MemStorage {
            piece_length: info.piece_length,
            total_length: info.total_length,
            pieces: Mutex::new(HashMap::new()),
        }
    }
}

impl Storage for MemStorage {
    fn write_piece(&self, index: u32, data: &[u8]) -> io::Result<()> {
        self.pieces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(index, data.into());
        Ok(())
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset + buf.len() as u64 > self.total_length {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range past the end",
            ));
        }
        let pieces = self.pieces.lock().unwrap_or_else(|e| e.into_inner());
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let index = (pos / self.piece_length) as u32;
            let within = (pos % self.piece_length) as usize;
            let piece = pieces.get(&index).ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("piece {index} not stored"))
            })?;
            let n = (piece.len() - within).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&piece[within..within + n]);
            done += n;
        }
        Ok(())
    }

    fn load_have(&self) -> Option<Vec<u8>> {
        None
    }

    fn save_have(&self, _bitfield: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn discard_piece(&self, index: u32) -> io::Result<()> {
        self.pieces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&index);
        Ok(())
    }
}
