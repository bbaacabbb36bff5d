//! Making torrents from local data, and seeding them in place.
//!
//! A [`Content`] is the list of files a new torrent will hold: for each,
//! its path inside the torrent, its length in bytes and where its bytes
//! are read from ([`Source`]: a local file, or the storage of another
//! torrent). [`build`] chooses the piece length ([`choose_piece_length`]:
//! a power of two from 16 KiB to 16 MiB), reads every byte once and makes
//! the info dictionary in the chosen [`Format`]:
//! - [`Format::Hybrid`] (the default): BEP 52 and BEP 3 in one dictionary
//!   ([`build_v2`]: `file tree` with each file's `pieces root`, SHA-1
//!   `pieces` over the files aligned to pieces by pad files), with its
//!   piece layers; peers reach it by its v1 and its (truncated) v2
//!   info-hash, and its magnet names both;
//! - [`Format::V1Only`]: BEP 3 only ([`build_info`]), files back to back.
//!
//! Both are deterministic: keys sorted, no creation date, no `attr` beyond
//! pad files, no private flag, so the same files under the same name always
//! give the same info-hashes. The [`SourceStorage`] it returns implements
//! [`crate::storage::Storage`] read-only over those sources (pad files read
//! as zeros): a seed serves peers straight from the user's files, without a
//! copy.
//!
//! [`scan_dir`] makes the [`Content`] of a directory (multi-file torrent
//! named after the directory) or of one regular file (single-file torrent):
//! entries are visited in byte order of their names; symlinks, devices,
//! sockets, FIFOs and unreadable files are skipped and reported in
//! [`Scan::skipped`]. A name that is not UTF-8 keeps its raw bytes in the
//! torrent. Symlinks are never followed, so nothing
//! outside the directory is read. Empty directories cannot be represented in
//! BEP 3 and are left out.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha1::Digest;

use crate::InfoHash;
use crate::hash::InfoHashV2;
use crate::metainfo::{BuildV2Error, Flavor, build_info, build_v2, choose_piece_length};
use crate::storage::{FileStorage, Storage, for_each_extent};

/// Where the bytes of one file of a new torrent come from.
#[derive(Clone)]
pub enum Source {
    /// A local regular file, read in place (it must keep its length).
    File(PathBuf),
    /// A range of another torrent's piece space: `length` bytes at absolute
    /// offset `offset` of `storage` (every piece covering it must be stored
    /// there before [`build`] hashes).
    Storage {
        storage: Arc<dyn Storage>,
        offset: u64,
    },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "File({})", p.display()),
            Source::Storage { offset, .. } => write!(f, "Storage(offset {offset})"),
        }
    }
}

/// One file of a new torrent.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path components under the torrent root; empty for the one file of a
    /// single-file torrent.
    pub path: Vec<String>,
    /// Bytes.
    pub length: u64,
    pub source: Source,
}

/// The files of a new torrent, in torrent order, and its name.
#[derive(Debug, Clone)]
pub struct Content {
    /// The torrent's `name` (the root directory, or the single file's name).
    pub name: String,
    pub files: Vec<SourceFile>,
}

impl Content {
    /// Total bytes.
    pub fn total_length(&self) -> u64 {
        self.files.iter().map(|f| f.length).sum()
    }
}

/// What [`scan_dir`] found.
#[derive(Debug, Clone)]
pub struct Scan {
    pub content: Content,
    /// Entries left out, each with the reason (one line).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Makes the [`Content`] of `path`: a directory gives a multi-file torrent
/// named after it (its regular files, depth first, names in byte order), a
/// regular file a single-file torrent. Nothing behind a symlink is read.
///
/// A name that is not UTF-8 is kept: the torrent gets its raw bytes.
///
/// Errors: `path` missing or unreadable, not a directory or regular file,
/// or no regular file found (`NotFound`); each message starts with `path`
/// (every error is about it: what is wrong deeper down is skipped).
pub fn scan_dir(path: &Path) -> io::Result<Scan> {
    scan_top(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// [`scan_dir`], its errors not naming `path` yet.
fn scan_top(path: &Path) -> io::Result<Scan> {
    let md = fs::symlink_metadata(path)?;
    let name = path
        .canonicalize()?
        .file_name()
        .map(shown_name)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "has no name"))?;
    let mut skipped = Vec::new();
    let mut files = Vec::new();
    if md.is_file() {
        File::open(path)?;
        files.push(SourceFile {
            path: Vec::new(),
            length: md.len(),
            source: Source::File(path.to_path_buf()),
        });
    } else if md.is_dir() {
        walk(path, &mut Vec::new(), &mut files, &mut skipped)?;
        if files.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no readable regular file to seed",
            ));
        }
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a directory or regular file",
        ));
    }
    Ok(Scan {
        content: Content { name, files },
        skipped,
    })
}

/// A file name as a path element of a new torrent (shown form, see
/// [`crate::metainfo::sanitize::raw_element`]): itself when it is UTF-8,
/// else its lossless `\\xHH` escape, which
/// [`crate::metainfo::build_info`] writes back as the raw bytes. (A UTF-8
/// name that literally spells such an escape, like `a\\xff`, is taken as
/// the escape: vanishingly rare, and documented.)
fn shown_name(name: &std::ffi::OsStr) -> String {
    match name.to_str() {
        Some(s) => s.to_string(),
        None => crate::metainfo::sanitize::escape(name.as_encoded_bytes()),
    }
}

/// Appends the regular files under `dir` (whose path in the torrent is
/// `prefix`) to `out`, in byte order of names, depth first.
fn walk(
    dir: &Path,
    prefix: &mut Vec<String>,
    out: &mut Vec<SourceFile>,
    skipped: &mut Vec<(PathBuf, String)>,
) -> io::Result<()> {
    let mut entries: Vec<(std::ffi::OsString, PathBuf)> = Vec::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if !prefix.is_empty() => {
            skipped.push((dir.to_path_buf(), format!("unreadable directory: {e}")));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for e in rd {
        let e = e?;
        entries.push((e.file_name(), e.path()));
    }
    entries.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
    for (name, path) in entries {
        let name = shown_name(&name);
        let md = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                skipped.push((path, format!("cannot stat: {e}")));
                continue;
            }
        };
        let ft = md.file_type();
        if ft.is_symlink() {
            skipped.push((path, "symlink (not followed)".into()));
        } else if ft.is_dir() {
            prefix.push(name);
            walk(&path, prefix, out, skipped)?;
            prefix.pop();
        } else if ft.is_file() {
            if let Err(e) = File::open(&path) {
                skipped.push((path, format!("unreadable: {e}")));
                continue;
            }
            let mut p = prefix.clone();
            p.push(name);
            out.push(SourceFile {
                path: p,
                length: md.len(),
                source: Source::File(path),
            });
        } else {
            skipped.push((path, "not a regular file".into()));
        }
    }
    Ok(())
}

/// One file's range in the piece space and its source.
struct Extent {
    offset: u64,
    length: u64,
    /// `None` for a pad file (BEP 47): zeros.
    source: Option<Source>,
}

/// Read-only [`Storage`] over a [`Content`]'s sources: the piece space of a
/// torrent made by [`build`], served from the files it was made of.
///
/// `write_piece` fails with `PermissionDenied` (a seed never downloads);
/// the resume bitfield is neither loaded nor saved (the swarm is created
/// with every piece had). A source file that shrank since hashing makes
/// reads fail (`UnexpectedEof`); one whose bytes changed is served as is and
/// refused by the peer's hash check.
pub struct SourceStorage {
    extents: Vec<Extent>,
    total_length: u64,
    /// Open source files by extent index (at most 64 kept open).
    open: Mutex<lru::LruCache<usize, Arc<File>>>,
    /// The bencoded piece layers of a hybrid torrent (BEP 52).
    piece_layers: Option<Vec<u8>>,
}

impl SourceStorage {
    /// Storage over `files`, laid out back to back in order.
    pub fn new(files: &[SourceFile]) -> SourceStorage {
        let mut offset = 0u64;
        let extents = files
            .iter()
            .map(|f| {
                let e = Extent {
                    offset,
                    length: f.length,
                    source: Some(f.source.clone()),
                };
                offset += f.length;
                e
            })
            .collect();
        SourceStorage::of_extents(extents, offset, None)
    }

    fn of_extents(
        extents: Vec<Extent>,
        total_length: u64,
        piece_layers: Option<Vec<u8>>,
    ) -> SourceStorage {
        SourceStorage {
            extents,
            total_length,
            open: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(64).expect("64 > 0"),
            )),
            piece_layers,
        }
    }

    /// The piece space of the torrent `info` built from `files` (`order[k]`
    /// the index in `files` of the `k`-th non-pad entry of `info.files`):
    /// pad files read as zeros. `piece_layers` (the bencoded BEP 52 `piece
    /// layers`) is what [`Storage::load_piece_layers`] gives, so the swarm
    /// answers v2 peers' hash requests.
    fn of_torrent(
        files: &[SourceFile],
        info: &crate::metainfo::Info,
        order: &[usize],
        piece_layers: Option<Vec<u8>>,
    ) -> SourceStorage {
        let mut next = order.iter();
        let extents = info
            .files
            .iter()
            .map(|f| Extent {
                offset: f.offset,
                length: f.length,
                source: if f.pad {
                    None
                } else {
                    next.next().map(|&i| files[i].source.clone())
                },
            })
            .collect();
        SourceStorage::of_extents(extents, info.total_length, piece_layers)
    }

    /// Total bytes of the piece space.
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    fn file(&self, idx: usize, path: &Path) -> io::Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = open.get(&idx) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(path)?);
        open.put(idx, f.clone());
        Ok(f)
    }
}

impl Storage for SourceStorage {
    fn write_piece(&self, index: u32, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("piece {index}: a seeded directory is read-only"),
        ))
    }

    fn write_at(&self, offset: u64, _data: &[u8]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("offset {offset}: a seeded directory is read-only"),
        ))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let extents = &self.extents;
        let span = |e: &Extent| (e.offset, e.length);
        for_each_extent(
            extents,
            span,
            self.total_length,
            offset,
            buf.len(),
            |i, at, r| {
                let dst = &mut buf[r];
                match &extents[i].source {
                    Some(Source::File(p)) => self.file(i, p)?.read_exact_at(dst, at),
                    Some(Source::Storage {
                        storage,
                        offset: base,
                    }) => storage.read_at(base + at, dst),
                    None => {
                        dst.fill(0);
                        Ok(())
                    }
                }
            },
        )
    }

    fn load_have(&self) -> Option<Vec<u8>> {
        None
    }

    fn save_have(&self, _bitfield: &[u8]) -> io::Result<()> {
        Ok(())
    }

    fn load_piece_layers(&self) -> Option<Vec<u8>> {
        self.piece_layers.clone()
    }
}

/// Which hashes a new torrent gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// BEP 52 and BEP 3 in one info dictionary (the default, as libtorrent
    /// 2.x makes them): `pieces` and `file tree`, every file starting on a
    /// piece boundary (pad files `.pad/N`, BEP 47). Its magnet names both
    /// info-hashes (`xt=urn:btih` and `xt=urn:btmh`); v1 peers and v2
    /// peers can both fetch it.
    #[default]
    Hybrid,
    /// BEP 3 only, files back to back: what every version before BEP 52
    /// support made (the same files give the same info-hash as then).
    V1Only,
}

/// A torrent made by [`build`], ready for [`crate::Client::seed_torrent`].
pub struct Built {
    /// The raw info dictionary (canonical bencoding).
    pub info_raw: Vec<u8>,
    /// The v1 info-hash (SHA-1 of `info_raw`): the one a hybrid's BEP 46
    /// item names.
    pub info_hash: InfoHash,
    /// The v2 info-hash (SHA-256 of `info_raw`) of a hybrid.
    pub info_hash_v2: Option<InfoHashV2>,
    /// Its piece space, read from the sources (pad files read as zeros);
    /// a hybrid's piece layers come with it
    /// ([`Storage::load_piece_layers`]).
    pub storage: Arc<SourceStorage>,
    pub piece_length: u64,
    /// Bytes of the piece space, pad files included.
    pub total_length: u64,
    pub num_files: usize,
    /// The bencoded BEP 52 `piece layers` of a hybrid.
    pub piece_layers: Option<Vec<u8>>,
    /// For each file of the content, its index in the info dictionary's
    /// file list (pad files included).
    file_index: Vec<usize>,
}

/// Hashes `content` into a torrent of `format` and makes its info
/// dictionary (see the module docs; a hybrid is laid out by
/// [`crate::metainfo::build_v2`]). `progress(done, total)` (bytes of
/// content) is called as it goes.
///
/// Errors: no files, a total of 0 bytes (BEP 3 has no empty torrent),
/// a path component that is empty, `.` or `..` or contains `/`, and read
/// errors of the sources (a file that shrank: `UnexpectedEof`).
pub fn build(
    content: &Content,
    format: Format,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<Built> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    if content.files.is_empty() {
        return Err(bad("nothing to seed: no files".into()));
    }
    if content.name.is_empty() || content.name.contains('/') {
        return Err(bad(format!("bad torrent name {:?}", content.name)));
    }
    for f in &content.files {
        if f.path
            .iter()
            .any(|c| c.is_empty() || c == "." || c == ".." || c.contains('/'))
            || (f.path.is_empty() && content.files.len() > 1)
        {
            return Err(bad(format!("bad path {:?}", f.path)));
        }
    }
    let total = content.total_length();
    if total == 0 {
        return Err(bad(
            "nothing to seed: every file is empty (a torrent needs at least one byte)".into(),
        ));
    }
    let piece_length = choose_piece_length(total);
    let storage = Arc::new(SourceStorage::new(&content.files));
    let files: Vec<(Vec<String>, u64)> = content
        .files
        .iter()
        .map(|f| (f.path.clone(), f.length))
        .collect();
    if format == Format::V1Only {
        let hashes = hash_pieces(&*storage, total, piece_length, progress)?;
        let info_raw = build_info(&files, &content.name, piece_length, hashes);
        return Ok(Built {
            info_hash: InfoHash::of_info(&info_raw),
            info_hash_v2: None,
            info_raw,
            storage,
            piece_length,
            total_length: total,
            num_files: content.files.len(),
            piece_layers: None,
            file_index: (0..content.files.len()).collect(),
        });
    }
    // each input file's offset in the contiguous reading space
    let starts: Vec<u64> = content
        .files
        .iter()
        .scan(0u64, |o, f| {
            let s = *o;
            *o += f.length;
            Some(s)
        })
        .collect();
    let mut done = 0u64;
    let mut source = |file: usize, offset: u64, buf: &mut [u8]| -> io::Result<()> {
        storage.read_at(starts[file] + offset, buf)?;
        done += buf.len() as u64;
        progress(done, total);
        Ok(())
    };
    let built = build_v2(
        &content.name,
        &files,
        piece_length,
        Flavor::Hybrid,
        &mut source,
    )
    .map_err(|e| match e {
        BuildV2Error::Io { err, .. } => err,
        e => bad(e.to_string()),
    })?;
    let info = &built.info;
    // the non-pad entries of `info.files` are `built.files`, in order
    let order: Vec<usize> = built.files.iter().map(|f| f.input).collect();
    let mut file_index = vec![0usize; content.files.len()];
    let mut k = 0;
    for (j, f) in info.files.iter().enumerate() {
        if !f.pad {
            file_index[order[k]] = j;
            k += 1;
        }
    }
    let layers = built.piece_layers.to_bencode().encode();
    Ok(Built {
        info_hash: built
            .info_hash_v1
            .unwrap_or_else(|| InfoHash::of_info(&built.info_raw)),
        info_hash_v2: Some(built.info_hash_v2),
        storage: Arc::new(SourceStorage::of_torrent(
            &content.files,
            info,
            &order,
            Some(layers.clone()),
        )),
        piece_length,
        total_length: info.total_length,
        num_files: content.files.len(),
        piece_layers: Some(layers),
        file_index,
        info_raw: built.info_raw,
    })
}

/// Copies a torrent made by [`build`] from `content` into a file cache laid
/// out as [`FileStorage`] keeps torrents (`dir` = `<cache-dir>/<info-hash>`),
/// so a later mount of its magnet finds every piece there, whatever becomes
/// of the sources. Each file becomes `dir/files/<its path>`: hard-linked
/// when possible (same filesystem: no copy) from a local source file or
/// from the cache file of an unchanged file of another torrent (the two
/// caches then share those bytes: a piece evicted from one is found wrong
/// by the other's verification and fetched again), else copied through
/// `built.storage`. Every piece of a `Source::Storage` range must be
/// stored (as [`build`] requires). A hybrid's piece layers (BEP 52) are
/// saved as `piece_layers`, so the swarm answers v2 peers' hash requests
/// after a remount too. The raw info dictionary is written first and the
/// `have` bitfield (every piece) last, so an interrupted install never
/// passes for a complete one. Returns the storage, ready to seed.
///
/// Errors: I/O errors creating, linking or copying (ENOSPC on a full
/// disk), or an info dictionary that does not load.
pub fn install(content: &Content, built: &Built, dir: &Path) -> io::Result<Arc<FileStorage>> {
    let info = crate::metainfo::Info::from_bytes(&built.info_raw)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    if info.files.iter().filter(|f| !f.pad).count() != content.files.len()
        || built.file_index.len() != content.files.len()
    {
        return Err(io::Error::other(
            "the torrent's files do not match its content",
        ));
    }
    let storage = FileStorage::open(dir, &info)?;
    remove_if_present(&crate::storage::TorrentDir::at(dir).have())?;
    for (i, f) in content.files.iter().enumerate() {
        let j = built.file_index[i];
        let dest = storage
            .file_path(j)
            .ok_or_else(|| io::Error::other("a file of the torrent has no place in the cache"))?
            .to_path_buf();
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        remove_if_present(&dest)?;
        let linked = match &f.source {
            Source::File(src) => fs::hard_link(src, &dest).is_ok(),
            Source::Storage { storage, offset } => storage
                .file_at(*offset, f.length)
                .is_some_and(|src| fs::hard_link(src, &dest).is_ok()),
        };
        if !linked {
            copy_range(&*built.storage, info.files[j].offset, f.length, &dest)?;
        }
    }
    if let Some(layers) = &built.piece_layers {
        storage.save_piece_layers(layers)?;
    }
    let n = info.num_pieces() as usize;
    let mut have = vec![0xffu8; n.div_ceil(8)];
    if n % 8 != 0 {
        *have.last_mut().expect("n > 0") = 0xff << (8 - n % 8);
    }
    storage.save_have(&have)?;
    Ok(Arc::new(storage))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `len` bytes at absolute `offset` of `src` to a new file `dest`.
fn copy_range(src: &dyn Storage, offset: u64, len: u64, dest: &Path) -> io::Result<()> {
    let out = File::create(dest)?;
    let mut buf = vec![0u8; (1 << 20).min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_at(offset + done, &mut buf[..n])?;
        out.write_all_at(&buf[..n], done)?;
        done += n as u64;
    }
    out.set_len(len)?;
    out.sync_all()
}

/// SHA-1 of each `piece_length` piece of `storage`'s first `total` bytes
/// (the last piece may be shorter). Calls `progress(done, total)` after
/// each piece.
pub fn hash_pieces(
    storage: &dyn Storage,
    total: u64,
    piece_length: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> io::Result<Vec<[u8; 20]>> {
    let n = total.div_ceil(piece_length);
    let mut out = Vec::with_capacity(n as usize);
    let mut buf = vec![0u8; piece_length as usize];
    for i in 0..n {
        let start = i * piece_length;
        let len = piece_length.min(total - start) as usize;
        storage.read_at(start, &mut buf[..len])?;
        out.push(sha1::Sha1::digest(&buf[..len]).into());
        progress(start + len as u64, total);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::Info;

    fn tree(root: &Path) {
        fs::create_dir_all(root.join("b/c")).unwrap();
        fs::write(root.join("b/c/deep.bin"), vec![7u8; 40_000]).unwrap();
        fs::write(root.join("a.txt"), b"hello").unwrap();
        fs::write(root.join("Z.txt"), b"").unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
    }

    #[test]
    fn same_files_give_the_same_info_hash_and_sorted_paths() {
        let t = tempfile::tempdir().unwrap();
        let (one, two) = (t.path().join("x/site"), t.path().join("y/site"));
        tree(&one);
        tree(&two);
        std::os::unix::fs::symlink("/etc/passwd", one.join("link")).unwrap();
        let s1 = scan_dir(&one).unwrap();
        let s2 = scan_dir(&two).unwrap();
        assert_eq!(s1.skipped.len(), 1, "{:?}", s1.skipped);
        let paths: Vec<String> = s1.content.files.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(paths, ["Z.txt", "a.txt", "b/c/deep.bin"]);
        let b1 = build(&s1.content, Format::V1Only, &mut |_, _| {}).unwrap();
        let b2 = build(&s2.content, Format::V1Only, &mut |_, _| {}).unwrap();
        assert_eq!(b1.info_hash, b2.info_hash);
        let info = Info::from_bytes(&b1.info_raw).unwrap();
        assert_eq!(info.name, "site");
        assert_eq!(info.total_length, 40_005);
        assert_eq!(info.piece_length, 16384);
        // Every piece verifies against the storage.
        for i in 0..info.num_pieces() {
            let mut buf = vec![0u8; info.piece_size(i) as usize];
            b1.storage
                .read_at(i as u64 * info.piece_length, &mut buf)
                .unwrap();
            assert_eq!(sha1::Sha1::digest(&buf)[..], info.piece_hash(i)[..]);
        }
        assert!(b1.storage.write_piece(0, &[0]).is_err());
    }

    #[test]
    fn names_that_are_not_utf8_keep_their_bytes() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("names");
        fs::create_dir_all(root.join(OsStr::from_bytes(b"\xff"))).unwrap();
        fs::write(root.join(OsStr::from_bytes(b"caf\xe9.txt")), b"1").unwrap();
        fs::write(root.join(OsStr::from_bytes(b"back\\slash")), b"22").unwrap();
        fs::write(root.join(OsStr::from_bytes(b"\xff/x")), b"333").unwrap();
        let s = scan_dir(&root).unwrap();
        assert!(s.skipped.is_empty(), "{:?}", s.skipped);
        let b = build(&s.content, Format::V1Only, &mut |_, _| {}).unwrap();
        let raw = &b.info_raw;
        for name in [&b"8:caf\xe9.txt"[..], b"10:back\\slash", b"1:\xff"] {
            assert!(raw.windows(name.len()).any(|w| w == name), "{name:?}");
        }
        let info = Info::from_bytes(raw).unwrap();
        let mut paths: Vec<String> = info.files.iter().map(|f| f.path.join("/")).collect();
        paths.sort();
        // shown as a reader shows them: escaped, `\` removed from valid names
        assert_eq!(
            paths,
            ["names/\\xff/x", "names/backslash", "names/caf\\xe9.txt"]
        );
    }

    #[test]
    fn single_file_and_errors() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("one.bin");
        fs::write(&f, vec![1u8; 100]).unwrap();
        let s = scan_dir(&f).unwrap();
        let b = build(&s.content, Format::V1Only, &mut |_, _| {}).unwrap();
        let info = Info::from_bytes(&b.info_raw).unwrap();
        assert!(!info.multi_file);
        assert_eq!(info.name, "one.bin");
        let e = t.path().join("empty");
        fs::create_dir(&e).unwrap();
        assert_eq!(
            scan_dir(&e).unwrap_err().kind(),
            io::ErrorKind::NotFound,
            "empty dir"
        );
        fs::write(e.join("zero"), b"").unwrap();
        assert!(
            build(
                &scan_dir(&e).unwrap().content,
                Format::Hybrid,
                &mut |_, _| {}
            )
            .is_err()
        );
    }

    /// The default format is a hybrid: both info-hashes, files aligned to
    /// pieces by pad files that read as zeros, every v1 piece's SHA-1 and
    /// every file's `pieces root` right, piece layers that load back, and
    /// the same bytes give the same hashes. Installed into a cache, the
    /// files are linked and the piece layers saved next to them.
    #[test]
    fn hybrid_by_default_with_pads_and_piece_layers() {
        use crate::merkle;
        use crate::metainfo::{MetaVersion, PieceLayers};
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("site");
        tree(&root);
        let s = scan_dir(&root).unwrap();
        let b = build(&s.content, Format::default(), &mut |_, _| {}).unwrap();
        let again = build(&s.content, Format::Hybrid, &mut |_, _| {}).unwrap();
        assert_eq!(
            (b.info_hash, b.info_hash_v2),
            (again.info_hash, again.info_hash_v2)
        );
        let v1 = build(&s.content, Format::V1Only, &mut |_, _| {}).unwrap();
        assert_ne!(b.info_hash, v1.info_hash);
        assert_eq!(v1.info_hash_v2, None);
        let info = Info::from_bytes(&b.info_raw).unwrap();
        assert_eq!(info.version, MetaVersion::Hybrid);
        assert_eq!(InfoHash::of_info(&b.info_raw), b.info_hash);
        assert_eq!(info.info_hash_v2, b.info_hash_v2);
        assert_eq!(b.total_length, info.total_length);
        // a.txt (5 bytes) is padded to a piece; deep.bin starts on a piece
        assert!(info.files.iter().any(|f| f.pad));
        for i in 0..info.num_pieces() {
            let mut buf = vec![0u8; info.piece_size(i) as usize];
            b.storage
                .read_at(i as u64 * info.piece_length, &mut buf)
                .unwrap();
            assert_eq!(sha1::Sha1::digest(&buf)[..], info.piece_hash(i)[..]);
        }
        let deep = info
            .files
            .iter()
            .find(|f| f.path.last().map(String::as_str) == Some("deep.bin"))
            .unwrap();
        assert_eq!(deep.offset % info.piece_length, 0);
        let leaves = merkle::block_hashes(&[7u8; 40_000]);
        let pieces = 40_000u64.div_ceil(info.piece_length) as usize;
        let blocks_per_piece = (info.piece_length / merkle::BLOCK_SIZE) as usize;
        let padded = pieces.next_power_of_two() * blocks_per_piece;
        assert_eq!(
            deep.pieces_root,
            Some(merkle::root_of(&leaves, 0, padded as u64))
        );
        let layers = b.piece_layers.clone().unwrap();
        let held = PieceLayers::from_bencode(&layers, &info).unwrap();
        assert_eq!(held.len(), 1, "one file longer than a piece");
        assert_eq!(b.storage.load_piece_layers(), Some(layers.clone()));

        let dir = t.path().join("cache").join(b.info_hash.to_string());
        let cached = install(&s.content, &b, &dir).unwrap();
        assert_eq!(cached.load_piece_layers(), Some(layers));
        for (i, f) in info.files.iter().enumerate().filter(|(_, f)| !f.pad) {
            let mut want = vec![0u8; f.length as usize];
            b.storage.read_at(f.offset, &mut want).unwrap();
            let path = cached.file_path(i).unwrap();
            assert_eq!(fs::read(path).unwrap(), want, "{}", path.display());
        }
    }
}
