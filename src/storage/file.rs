//! [`FileStorage`]: a torrent's piece space kept in sparse files under its
//! cache directory ([`super::layout::TorrentDir`]).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{FallocateFlags, Flock, FlockArg};

use super::layout::TorrentDir;
use super::{Storage, for_each_extent, write_atomic};
use crate::metainfo::Info;

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
    dir: TorrentDir,
    extents: Vec<Extent>,
    piece_length: u64,
    total_length: u64,
    /// Open files, by extent index; bounded so huge torrents don't exhaust fds.
    open: Mutex<lru::LruCache<usize, Arc<File>>>,
    /// Extents whose file is known to be this cache's alone (one link):
    /// written to without another check (see [`FileStorage::private_file`]).
    private: Mutex<std::collections::HashSet<usize>>,
    /// `<dir>/lock`, held with an exclusive `flock` while this storage
    /// lives: two processes must never share one torrent's cache (one could
    /// evict or rewrite a piece the other believes it holds). The kernel
    /// drops the lock when the process dies, even by `kill -9`.
    _lock: Flock<File>,
}

/// Fails as [`FileStorage::open`] would when another process has the cache
/// directory `dir` of a torrent (`AddrInUse`, naming its pid), so a lookup
/// can say so before it talks to any peer. Takes the lock for a moment
/// only; a directory without a `lock` file is free.
pub fn check_cache_free(dir: &Path) -> io::Result<()> {
    let dir = TorrentDir::at(dir);
    if !dir.lock().exists() {
        return Ok(());
    }
    lock_cache_dir(&dir).map(drop)
}

/// How long a cache directory held by another process is waited for
/// before it is refused: a process that was just unmounted holds the lock
/// until it has exited (measured: ~0.1 s), and a remount at once must not
/// fail for that.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the exclusive lock of the cache directory `dir` (see
/// [`FileStorage`]), waiting up to [`LOCK_WAIT`] for another holder to go;
/// `AddrInUse` with the holder's pid when it does not. Blocking.
fn lock_cache_dir(dir: &TorrentDir) -> io::Result<Flock<File>> {
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
fn try_lock_cache_dir(dir: &TorrentDir) -> io::Result<Flock<File>> {
    use std::io::{Read, Seek, Write};
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.lock())?;
    let mut f = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((mut f, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            // The holder may be this very process: a storage of an earlier
            // `Client` (or archive) that is still alive. Say so, rather
            // than naming our own pid as "another btfs-mount".
            let who = if pid.trim() == std::process::id().to_string() {
                "this process (an earlier storage of it has not let go)"
            } else {
                "another btfs-mount"
            };
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use by {who} (pid {}): one torrent's cache serves one process at a time",
                    dir.root().display(),
                    pid.trim()
                ),
            ));
        }
        Err((_, e)) => return Err(e.into()),
    };
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
        let dir = TorrentDir::at(dir);
        fs::create_dir_all(dir.files())?;
        let lock = lock_cache_dir(&dir)?;
        let info_path = dir.info();
        if fs::read(&info_path).ok().as_deref() != Some(&info.raw[..]) {
            write_atomic(&info_path, &info.raw)?;
        }
        let extents = info
            .files
            .iter()
            .map(|f| Extent {
                offset: f.offset,
                length: f.length,
                path: (!f.pad && f.symlink.is_none()).then(|| dir.file(&f.path)),
            })
            .collect();
        Ok(FileStorage {
            dir,
            extents,
            piece_length: info.piece_length,
            total_length: info.total_length,
            open: Mutex::new(lru::LruCache::new(std::num::NonZeroUsize::new(64).unwrap())),
            private: Mutex::new(std::collections::HashSet::new()),
            _lock: lock,
        })
    }

    /// The directory this storage lives in.
    pub fn root(&self) -> &Path {
        self.dir.root()
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

    /// The file of extent `idx`, to be written to or punched: one this
    /// cache shares with another by a hard link (`create::install` links an
    /// unchanged file to the base torrent's cache file) is first made a copy
    /// of its own, so unverified blocks or a discarded piece never change
    /// bytes the other cache holds as verified. Created if missing.
    fn private_file(&self, idx: usize) -> io::Result<Arc<File>> {
        use std::os::unix::fs::MetadataExt;
        let known = self
            .private
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&idx);
        let f = self.file(idx, true)?;
        if known {
            return Ok(f);
        }
        if f.metadata()?.nlink() > 1 {
            let path = self.extents[idx].path.as_ref().expect("not a pad file");
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(format!(".{}.unlink.tmp", std::process::id()));
            let tmp = PathBuf::from(tmp);
            fs::copy(path, &tmp)?;
            fs::rename(&tmp, path)?;
            tracing::debug!(
                "{}: unshared hard-linked {}",
                self.root().display(),
                path.display()
            );
            self.open
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop(&idx);
        }
        self.private
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(idx);
        self.file(idx, true)
    }

    /// Calls `each(extent index, offset in file, range in buf)` for every
    /// extent that `[offset, offset + len)` touches.
    fn split(
        &self,
        offset: u64,
        len: usize,
        each: impl FnMut(usize, u64, Range<usize>) -> io::Result<()>,
    ) -> io::Result<()> {
        for_each_extent(
            &self.extents,
            |e| (e.offset, e.length),
            self.total_length,
            offset,
            len,
            each,
        )
    }
}

/// The parts of `blocks`, taken back to back, that fall in `range` of
/// their concatenation.
fn slices<'a>(blocks: &[&'a [u8]], range: Range<usize>) -> Vec<io::IoSlice<'a>> {
    let mut out = Vec::with_capacity(blocks.len());
    let mut start = 0usize;
    for b in blocks {
        let end = start + b.len();
        let (s, e) = (range.start.max(start), range.end.min(end));
        if s < e {
            out.push(io::IoSlice::new(&b[s - start..e - start]));
        }
        start = end;
    }
    out
}

/// Most buffers one `pwritev` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Writes all of `bufs` at offset `at` of `file` with `pwritev`, again
/// after a short write or EINTR. Errors: the system call's; `InvalidInput`
/// for an offset past `i64::MAX`.
fn pwritev_all(file: &File, mut bufs: &mut [io::IoSlice<'_>], mut at: u64) -> io::Result<()> {
    io::IoSlice::advance_slices(&mut bufs, 0); // skips empty buffers
    while !bufs.is_empty() {
        let off = i64::try_from(at)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset past i64::MAX"))?;
        let n = bufs.len().min(IOV_MAX);
        match nix::sys::uio::pwritev(file, &bufs[..n], off) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => {
                io::IoSlice::advance_slices(&mut bufs, w);
                at += w as u64;
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

impl Storage for FileStorage {
    fn write_piece(&self, index: u32, data: &[u8]) -> io::Result<()> {
        self.write_at(index as u64 * self.piece_length, data)
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.split(offset, data.len(), |i, at, r| {
            if self.extents[i].path.is_none() {
                return Ok(()); // pad file
            }
            self.private_file(i)?.write_all_at(&data[r], at)
        })
    }

    /// One `pwritev` per file the range touches (more only for a short
    /// write or past `IOV_MAX` buffers).
    fn write_vectored_at(&self, offset: u64, blocks: &[&[u8]]) -> io::Result<()> {
        let len = blocks.iter().map(|b| b.len()).sum();
        self.split(offset, len, |i, at, r| {
            if self.extents[i].path.is_none() {
                return Ok(()); // pad file
            }
            let f = self.private_file(i)?;
            pwritev_all(&f, &mut slices(blocks, r), at)
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
        fs::read(self.dir.have()).ok()
    }

    /// Punches a hole (`fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`)
    /// over the piece in each sparse file it touches: the blocks go back to
    /// the filesystem, file sizes stay. Filesystem blocks shared with a
    /// neighbouring piece are zeroed in the piece's range only, never freed.
    /// A file that was never created is skipped. Errors: EOPNOTSUPP on
    /// filesystems without hole punching, other I/O errors.
    fn discard_piece(&self, index: u32) -> io::Result<()> {
        let offset = index as u64 * self.piece_length;
        if offset >= self.total_length {
            return Ok(());
        }
        let len = (self.total_length - offset).min(self.piece_length) as usize;
        self.split(offset, len, |i, at, r| {
            if self.extents[i].path.is_none() {
                return Ok(());
            }
            match self.file(i, false) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            let f = self.private_file(i)?;
            nix::fcntl::fallocate(
                &*f,
                FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
                at as i64,
                (r.end - r.start) as i64,
            )?;
            Ok(())
        })
    }

    fn save_have(&self, bitfield: &[u8]) -> io::Result<()> {
        write_atomic(&self.dir.have(), bitfield)
    }

    fn load_piece_layers(&self) -> Option<Vec<u8>> {
        fs::read(self.dir.piece_layers()).ok()
    }

    fn save_piece_layers(&self, layers: &[u8]) -> io::Result<()> {
        write_atomic(&self.dir.piece_layers(), layers)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> Info {
        let raw = crate::metainfo::build_info(&[(Vec::new(), 5)], "f.bin", 16384, vec![[0; 20]]);
        Info::from_bytes(&raw).unwrap()
    }

    #[test]
    fn one_process_per_torrent_cache_and_holes_for_discarded_pieces() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        let s = FileStorage::open(&dir, &info()).unwrap();
        // A second open (another open file description, as another process
        // would have) is refused with the holder's pid.
        let e = FileStorage::open(&dir, &info()).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(
            e.to_string()
                .contains(&format!("(pid {})", std::process::id())),
            "{e}"
        );
        // ... and, the holder being this process, says so.
        assert!(e.to_string().contains("in use by this process"), "{e}");
        assert_eq!(
            check_cache_free(&dir).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        s.write_piece(0, b"hello").unwrap();
        let mut b = [0u8; 5];
        s.read_at(0, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        // A file hard-linked into another cache is unshared before it is
        // written to or punched: the other copy keeps its bytes.
        let other = tmp.path().join("other");
        fs::hard_link(s.file_path(0).unwrap(), &other).unwrap();
        let s2 = {
            drop(s);
            FileStorage::open(&dir, &info()).unwrap()
        };
        s2.discard_piece(0).unwrap();
        s2.read_at(0, &mut b).unwrap();
        assert_eq!(b, [0; 5], "punched out");
        assert_eq!(fs::read(&other).unwrap(), b"hello");
        s2.write_at(0, b"HELLO").unwrap();
        assert_eq!(fs::read(&other).unwrap(), b"hello");
        let s = s2;
        drop(s);
        check_cache_free(&dir).unwrap();
        FileStorage::open(&dir, &info()).unwrap();
    }

    #[test]
    fn a_vectored_write_lands_as_its_blocks_would_across_files() {
        // three files (5, 20000 and 40000 bytes) under 16 KiB pieces
        let files = [
            (vec!["a".to_string()], 5),
            (vec!["b".into()], 20_000),
            (vec!["c".into()], 40_000),
        ];
        let total = 60_005usize;
        let raw = crate::metainfo::build_info(&files, "d", 16384, vec![[0; 20]; 4]);
        let info = Info::from_bytes(&raw).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let s = FileStorage::open(&tmp.path().join("t"), &info).unwrap();
        let data: Vec<u8> = (0..total).map(|i| (i * 7 % 253) as u8).collect();
        // blocks of uneven lengths, one of them empty, from offset 3 on
        let cuts = [3usize, 10, 10, 16_384, 20_010, 40_000, total];
        let blocks: Vec<&[u8]> = cuts.windows(2).map(|w| &data[w[0]..w[1]]).collect();
        s.write_vectored_at(3, &blocks).unwrap();
        s.write_at(0, &data[..3]).unwrap();
        let mut back = vec![0u8; total];
        s.read_at(0, &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(fs::read(s.file_path(1).unwrap()).unwrap(), data[5..20_005]);
        // past the end: refused, as write_at
        let e = s
            .write_vectored_at(60_000, &[&data[..3], &data[..3]])
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            slices(&[&data[..4], &data[4..8]], 2..6)
                .iter()
                .map(|b| b.len())
                .sum::<usize>(),
            4
        );
    }
}
