//! The write side: a [`Draft`] is a file tree being edited before it is
//! published as a new torrent.
//!
//! A draft starts empty, or from the tree of an existing torrent (its
//! *base*, an [`Archive`]), copy-on-write: files nobody touched are read
//! from the base's swarm and cache; a file that is created, written or
//! truncated gets *staged*, its bytes living in a data file of the draft's
//! staging directory:
//!
//! ```text
//! <cache-dir>/staging/<id>/
//!     meta        what the draft is: mountpoint, URL, base info-hash, name
//!     journal     metadata operations, one line each, fsynced before they return
//!     data/<n>    the bytes of staged file n
//!     published   the magnet link, once the draft was published
//! ```
//!
//! The journal records every change of the tree's shape (`mkdir P`,
//! `file P N`: path P is now staged file N, `rm P`, `mv A B`; paths are
//! `/`-separated and percent-encoded) and is fsynced before the operation
//! returns; data files are written in place (`pwrite`) and fsynced by
//! [`Draft::fsync`]. Reopening a staging directory ([`Draft::open`]) rebuilds
//! the base tree and replays the journal (a torn last line is ignored), so
//! a process killed at any point loses no file that was fsynced, and no
//! shape change that returned.
//!
//! Node ids are stable for the life of a `Draft` (the root is
//! [`ROOT`]); the FUSE adapter ([`crate::fuse_writable`]) uses them as
//! inode numbers. [`Draft::content`] turns the final tree into a
//! [`Content`] for [`crate::create::build`]: see there for how the torrent
//! name and layout are chosen. Modification times are kept in memory only
//! (BEP 3 has no place for them). Symlinks of a base torrent are left out.
//!
//! ```no_run
//! # async fn demo(client: btfs::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use btfs::staging::{Draft, DraftMeta};
//! let draft = Draft::create(std::path::Path::new("/tmp/cache"), DraftMeta::named("site"), None)?;
//! draft.create_dir("site/css")?;
//! draft.write_file("site/index.html", b"<h1>hi</h1>").await?;
//! draft.remove("site/css")?;
//! let archive = client.seed(&draft).await?;
//! println!("{}", archive.magnet());
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::archive::{Archive, NodeKind};
use crate::create::{Content, Source, SourceFile};
use crate::storage::{CacheLayout, DraftDir, Storage};

/// Node id of the root directory (the FUSE root inode).
pub const ROOT: u64 = 1;

/// Bytes copied per step when a base file is copied up.
const COPY_CHUNK: usize = 1 << 20;

/// What is escaped in journal and meta fields.
const ENC: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'/').add(b'\\');

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// Where a file's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Data {
    /// Unchanged from the base torrent: absolute offset in its piece space.
    Base { offset: u64 },
    /// Staged in `data/<n>`.
    Staged(u64),
}

#[derive(Debug, Clone)]
enum Kind {
    Dir(BTreeMap<String, u64>),
    File { data: Data, size: u64 },
}

#[derive(Debug, Clone)]
struct Node {
    parent: u64,
    name: String,
    kind: Kind,
    mtime: SystemTime,
    /// False once unlinked or replaced (open handles may still use it).
    linked: bool,
}

/// The tree and its counters, under one lock.
struct Tree {
    nodes: HashMap<u64, Node>,
    next_id: u64,
    next_data: u64,
}

/// Attributes of a draft node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub id: u64,
    pub is_dir: bool,
    /// Bytes (0 for directories).
    pub size: u64,
    pub mtime: SystemTime,
    /// For directories: how many subdirectories it has.
    pub subdirs: u32,
}

/// What a draft is, kept in its `meta` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DraftMeta {
    /// The name given to a torrent whose root holds several entries.
    pub name: String,
    /// The mountpoint it was edited on, if any (`--resume` finds it by this).
    pub mountpoint: Option<PathBuf>,
    /// The URL it was started from, if any.
    pub url: Option<String>,
    /// The info-hash (40 hex) of the base torrent, if any.
    pub base: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
}

impl DraftMeta {
    /// A meta with just a name (created now).
    pub fn named(name: &str) -> DraftMeta {
        DraftMeta {
            name: name.to_string(),
            created: now_secs(),
            ..Default::default()
        }
    }

    fn encode(&self) -> String {
        let opt = |s: Option<&str>| s.map_or("-".to_string(), enc);
        format!(
            "version 1\ncreated {}\nname {}\nmountpoint {}\nurl {}\nbase {}\n",
            self.created,
            enc(&self.name),
            opt(self.mountpoint.as_ref().and_then(|p| p.to_str())),
            opt(self.url.as_deref()),
            opt(self.base.as_deref()),
        )
    }

    fn decode(text: &str) -> Option<DraftMeta> {
        let mut m = DraftMeta::default();
        for line in text.lines() {
            let (k, v) = line.split_once(' ')?;
            let val = || (v != "-").then(|| dec(v)).flatten();
            match k {
                "created" => m.created = v.parse().ok()?,
                "name" => m.name = dec(v)?,
                "mountpoint" => m.mountpoint = val().map(PathBuf::from),
                "url" => m.url = val(),
                "base" => m.base = val(),
                _ => {}
            }
        }
        Some(m)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, ENC).to_string()
}

fn dec(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// A journal line's path: components percent-encoded, joined with `/`.
fn enc_path(p: &[String]) -> String {
    p.iter().map(|c| enc(c)).collect::<Vec<_>>().join("/")
}

fn dec_path(s: &str) -> Option<Vec<String>> {
    s.split('/').map(dec).collect()
}

/// Splits a user path (`a/b/c`, leading and trailing `/` ignored) into
/// components. Errors: `.`/`..` or an empty path.
fn split_path(path: &str) -> io::Result<Vec<String>> {
    let comps: Vec<String> = path
        .split('/')
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect();
    if comps.is_empty() || comps.iter().any(|c| c == "." || c == "..") {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{path:?}: not a path inside the draft"),
        ));
    }
    Ok(comps)
}

fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(errno(libc::EINVAL));
    }
    if name.len() > 255 {
        return Err(errno(libc::ENAMETOOLONG));
    }
    Ok(())
}

/// One journal operation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Mkdir(Vec<String>),
    File(Vec<String>, u64),
    Rm(Vec<String>),
    Mv(Vec<String>, Vec<String>),
}

impl Op {
    fn line(&self) -> String {
        match self {
            Op::Mkdir(p) => format!("mkdir {}\n", enc_path(p)),
            Op::File(p, n) => format!("file {} {n}\n", enc_path(p)),
            Op::Rm(p) => format!("rm {}\n", enc_path(p)),
            Op::Mv(a, b) => format!("mv {} {}\n", enc_path(a), enc_path(b)),
        }
    }

    fn parse(line: &str) -> Option<Op> {
        let mut it = line.split(' ');
        let op = match (it.next()?, it.next(), it.next()) {
            ("mkdir", Some(p), None) => Op::Mkdir(dec_path(p)?),
            ("file", Some(p), Some(n)) => Op::File(dec_path(p)?, n.parse().ok()?),
            ("rm", Some(p), None) => Op::Rm(dec_path(p)?),
            ("mv", Some(a), Some(b)) => Op::Mv(dec_path(a)?, dec_path(b)?),
            _ => return None,
        };
        it.next().is_none().then_some(op)
    }
}

/// A file tree being edited; see the module docs. Cheap to share behind an
/// `Arc`; every method takes `&self` and is safe from many threads.
pub struct Draft {
    dir: DraftDir,
    meta: DraftMeta,
    base: Option<Archive>,
    tree: Mutex<Tree>,
    journal: Mutex<File>,
    /// Open data files (at most 256 kept open).
    files: Mutex<lru::LruCache<u64, Arc<File>>>,
    /// Serializes copy-ups of base files.
    copy_lock: tokio::sync::Mutex<()>,
}

impl Draft {
    /// A new draft in a fresh `<cache_dir>/staging/<random id>/`, starting
    /// from `base`'s tree (or empty). `meta.base` is set from `base`.
    /// Errors: I/O creating the directory.
    pub fn create(
        cache_dir: &Path,
        mut meta: DraftMeta,
        base: Option<Archive>,
    ) -> io::Result<Draft> {
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| io::Error::other(e.to_string()))?;
        let dir = CacheLayout::new(cache_dir).draft(&hex::encode(id));
        fs::create_dir_all(dir.data_dir())?;
        meta.base = base.as_ref().map(|a| a.info_hash().to_hex());
        if meta.created == 0 {
            meta.created = now_secs();
        }
        crate::storage::write_atomic(&dir.meta(), meta.encode().as_bytes())?;
        File::create(dir.journal())?.sync_all()?;
        sync_dir(dir.root())?;
        sync_dir(&dir.data_dir())?;
        if let Some(parent) = dir.root().parent() {
            sync_dir(parent)?;
        }
        Self::open_with(dir, meta, base)
    }

    /// Reopens the staging directory `dir` (replaying its journal) with
    /// `base`, which must be the torrent named in its `meta` (or None when
    /// it has none). Errors: unreadable meta or journal; a base mismatch
    /// (`InvalidInput`).
    pub fn open(dir: &Path, base: Option<Archive>) -> io::Result<Draft> {
        let meta = Self::read_meta(dir)?;
        if meta.base != base.as_ref().map(|a| a.info_hash().to_hex()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: the draft's base is {}, not the torrent given",
                    dir.display(),
                    meta.base.as_deref().unwrap_or("empty")
                ),
            ));
        }
        Self::open_with(DraftDir::at(dir), meta, base)
    }

    /// The `meta` of the staging directory `dir`.
    pub fn read_meta(dir: &Path) -> io::Result<DraftMeta> {
        let text = fs::read_to_string(DraftDir::at(dir).meta())?;
        DraftMeta::decode(&text).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: unreadable meta", dir.display()),
            )
        })
    }

    /// The newest unpublished staging directory under `cache_dir` whose
    /// meta satisfies `pred`.
    pub fn find(
        cache_dir: &Path,
        pred: impl Fn(&DraftMeta) -> bool,
    ) -> Option<(PathBuf, DraftMeta)> {
        let rd = fs::read_dir(CacheLayout::new(cache_dir).staging()).ok()?;
        rd.flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir() && !DraftDir::at(p).published().exists())
            .filter_map(|p| Self::read_meta(&p).ok().map(|m| (p, m)))
            .filter(|(_, m)| pred(m))
            .max_by_key(|(_, m)| m.created)
    }

    fn open_with(dir: DraftDir, meta: DraftMeta, base: Option<Archive>) -> io::Result<Draft> {
        let now = SystemTime::now();
        let mut tree = Tree {
            nodes: HashMap::new(),
            next_id: ROOT + 1,
            next_data: 1,
        };
        tree.nodes.insert(
            ROOT,
            Node {
                parent: ROOT,
                name: String::new(),
                kind: Kind::Dir(BTreeMap::new()),
                mtime: now,
                linked: true,
            },
        );
        if let Some(a) = &base {
            let bt = a.tree();
            // Base node index -> draft id, parents before children.
            let mut map: HashMap<usize, u64> = HashMap::new();
            map.insert(0, ROOT);
            let mut stack = vec![0usize];
            while let Some(n) = stack.pop() {
                let NodeKind::Dir(ch) = &bt.nodes[n].kind else {
                    continue;
                };
                for (name, &c) in ch {
                    let kind = match &bt.nodes[c].kind {
                        NodeKind::Dir(_) => Kind::Dir(BTreeMap::new()),
                        NodeKind::File { size, offset, .. } => Kind::File {
                            data: Data::Base { offset: *offset },
                            size: *size,
                        },
                        NodeKind::Symlink(_) => {
                            tracing::warn!("{name}: symlinks of the base torrent are left out");
                            continue;
                        }
                    };
                    let parent = map[&n];
                    let id = tree.add(parent, name, kind, now);
                    map.insert(c, id);
                    stack.push(c);
                }
            }
        }
        let jpath = dir.journal();
        let mut replayed = 0;
        if let Ok(f) = File::open(&jpath) {
            for line in io::BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                let Some(op) = Op::parse(&line) else {
                    tracing::warn!("{}: ignoring a torn journal line", jpath.display());
                    break;
                };
                if let Op::File(_, n) = op {
                    tree.next_data = tree.next_data.max(n + 1);
                }
                if let Err(e) = tree.apply(&op, &dir, now) {
                    tracing::warn!("{}: journal {op:?}: {e}", jpath.display());
                }
                replayed += 1;
            }
        }
        if replayed > 0 {
            tracing::info!(
                "{}: {replayed} journal entries replayed",
                dir.root().display()
            );
        }
        let journal = OpenOptions::new().append(true).create(true).open(&jpath)?;
        Ok(Draft {
            dir,
            meta,
            base,
            tree: Mutex::new(tree),
            journal: Mutex::new(journal),
            files: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(256).expect("256 > 0"),
            )),
            copy_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The staging directory.
    pub fn dir(&self) -> &Path {
        self.dir.root()
    }

    /// The log of a background writable mount of this draft
    /// (`<cache>/staging/<id>.log`, see [`crate::storage::layout`]).
    pub fn log_path(&self) -> PathBuf {
        self.dir.log()
    }

    pub fn meta(&self) -> &DraftMeta {
        &self.meta
    }

    /// The torrent this draft started from, if any.
    pub fn base(&self) -> Option<&Archive> {
        self.base.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn data_path(&self, n: u64) -> PathBuf {
        self.dir.data(n)
    }

    fn data_file(&self, n: u64) -> io::Result<Arc<File>> {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = files.get(&n) {
            return Ok(f.clone());
        }
        let f = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(self.data_path(n))?,
        );
        files.put(n, f.clone());
        Ok(f)
    }

    /// Appends `op` to the journal and fsyncs it.
    fn log(&self, op: &Op) -> io::Result<()> {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        j.write_all(op.line().as_bytes())?;
        j.sync_data()
    }

    /// A new empty data file, durable (its directory entry fsynced).
    fn new_data(&self, tree: &mut Tree) -> io::Result<u64> {
        let n = tree.next_data;
        tree.next_data += 1;
        let f = self.data_file(n)?;
        f.set_len(0)?;
        sync_dir(&self.dir.data_dir())?;
        Ok(n)
    }

    // ---- node-level operations (the FUSE adapter) ----

    /// Attributes of node `id`. Errors: `ENOENT`.
    pub fn attr(&self, id: u64) -> io::Result<Attr> {
        self.lock().attr(id)
    }

    /// The child `name` of directory `parent`. Errors: `ENOENT`, `ENOTDIR`.
    pub fn lookup(&self, parent: u64, name: &str) -> io::Result<Attr> {
        let t = self.lock();
        let id = t.child(parent, name)?.ok_or_else(|| errno(libc::ENOENT))?;
        t.attr(id)
    }

    /// The parent of directory `id` (the root is its own parent).
    pub fn parent(&self, id: u64) -> io::Result<u64> {
        Ok(self.lock().node(id)?.parent)
    }

    /// Entries of directory `id`: (name, attributes), sorted by name.
    /// Errors: `ENOENT`, `ENOTDIR`.
    pub fn children(&self, id: u64) -> io::Result<Vec<(String, Attr)>> {
        let t = self.lock();
        let Kind::Dir(ch) = &t.node(id)?.kind else {
            return Err(errno(libc::ENOTDIR));
        };
        ch.iter()
            .map(|(n, &c)| Ok((n.clone(), t.attr(c)?)))
            .collect()
    }

    /// Creates directory `name` in `parent`. Errors: `EEXIST`, `ENOENT`,
    /// `ENOTDIR`, `EINVAL` (bad name), I/O.
    pub fn mkdir(&self, parent: u64, name: &str) -> io::Result<Attr> {
        check_name(name)?;
        let mut t = self.lock();
        if t.child(parent, name)?.is_some() {
            return Err(errno(libc::EEXIST));
        }
        let mut p = t.path(parent)?;
        p.push(name.to_string());
        self.log(&Op::Mkdir(p))?;
        let id = t.add(parent, name, Kind::Dir(BTreeMap::new()), SystemTime::now());
        t.attr(id)
    }

    /// Creates (or, with `exclusive` false, truncates to 0) the regular file
    /// `name` in `parent`. Errors: `EEXIST` (exclusive), `EISDIR`, `ENOENT`,
    /// `ENOTDIR`, `EINVAL`, I/O.
    pub fn create_file(&self, parent: u64, name: &str, exclusive: bool) -> io::Result<Attr> {
        check_name(name)?;
        let mut t = self.lock();
        if let Some(id) = t.child(parent, name)? {
            if exclusive {
                return Err(errno(libc::EEXIST));
            }
            if matches!(t.node(id)?.kind, Kind::Dir(_)) {
                return Err(errno(libc::EISDIR));
            }
            drop(t);
            return self.truncate_sync(id);
        }
        let mut p = t.path(parent)?;
        p.push(name.to_string());
        let n = self.new_data(&mut t)?;
        self.log(&Op::File(p, n))?;
        let id = t.add(
            parent,
            name,
            Kind::File {
                data: Data::Staged(n),
                size: 0,
            },
            SystemTime::now(),
        );
        t.attr(id)
    }

    /// Truncates file `id` to 0 bytes (a staged file in place; a base file
    /// becomes a new empty staged file).
    fn truncate_sync(&self, id: u64) -> io::Result<Attr> {
        let mut t = self.lock();
        match t.node(id)?.kind {
            Kind::Dir(_) => Err(errno(libc::EISDIR)),
            Kind::File {
                data: Data::Staged(n),
                ..
            } => {
                self.data_file(n)?.set_len(0)?;
                t.set_file(id, Data::Staged(n), 0);
                t.attr(id)
            }
            Kind::File {
                data: Data::Base { .. },
                ..
            } => {
                let n = self.new_data(&mut t)?;
                if t.reachable(id) {
                    let p = t.path(id)?;
                    self.log(&Op::File(p, n))?;
                }
                t.set_file(id, Data::Staged(n), 0);
                t.attr(id)
            }
        }
    }

    /// Removes the file `name` from `parent` (open handles keep working).
    /// Errors: `ENOENT`, `EISDIR`, I/O.
    pub fn unlink(&self, parent: u64, name: &str) -> io::Result<()> {
        let mut t = self.lock();
        let id = t.child(parent, name)?.ok_or_else(|| errno(libc::ENOENT))?;
        if matches!(t.node(id)?.kind, Kind::Dir(_)) {
            return Err(errno(libc::EISDIR));
        }
        self.log(&Op::Rm(t.path(id)?))?;
        t.detach(id);
        Ok(())
    }

    /// Removes the empty directory `name` from `parent`. Errors: `ENOENT`,
    /// `ENOTDIR`, `ENOTEMPTY`, I/O.
    pub fn rmdir(&self, parent: u64, name: &str) -> io::Result<()> {
        let mut t = self.lock();
        let id = t.child(parent, name)?.ok_or_else(|| errno(libc::ENOENT))?;
        match &t.node(id)?.kind {
            Kind::Dir(ch) if !ch.is_empty() => return Err(errno(libc::ENOTEMPTY)),
            Kind::Dir(_) => {}
            Kind::File { .. } => return Err(errno(libc::ENOTDIR)),
        }
        self.log(&Op::Rm(t.path(id)?))?;
        t.detach(id);
        Ok(())
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing a file or
    /// an empty directory there (unless `noreplace`). Errors: `ENOENT`,
    /// `EEXIST` (noreplace), `EISDIR`, `ENOTDIR`, `ENOTEMPTY`, `EINVAL`
    /// (a directory into itself), I/O.
    pub fn rename(
        &self,
        parent: u64,
        name: &str,
        new_parent: u64,
        new_name: &str,
        noreplace: bool,
    ) -> io::Result<()> {
        check_name(new_name)?;
        let mut t = self.lock();
        let id = t.child(parent, name)?.ok_or_else(|| errno(libc::ENOENT))?;
        t.check_rename(id, new_parent, new_name, noreplace)?;
        let from = t.path(id)?;
        let mut to = t.path(new_parent)?;
        to.push(new_name.to_string());
        if from == to {
            return Ok(());
        }
        self.log(&Op::Mv(from, to))?;
        t.do_rename(id, new_parent, new_name);
        Ok(())
    }

    /// Sets the modification time of `id` (kept in memory only).
    pub fn set_mtime(&self, id: u64, mtime: SystemTime) -> io::Result<Attr> {
        let mut t = self.lock();
        t.node_mut(id)?.mtime = mtime;
        t.attr(id)
    }

    /// Reads up to `len` bytes of file `id` at `offset` (short at the end,
    /// empty past it). Base files are read through the base torrent's swarm
    /// (waiting for pieces up to its read timeout). Errors: `ENOENT`,
    /// `EISDIR`, I/O and timeouts.
    pub async fn read(&self, id: u64, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let (data, size) = self.lock().file(id)?;
        if offset >= size || len == 0 {
            return Ok(Vec::new());
        }
        let len = (len as u64).min(size - offset) as usize;
        match data {
            Data::Staged(n) => {
                let f = self.data_file(n)?;
                let mut buf = vec![0u8; len];
                let mut got = 0;
                while got < len {
                    let k = f.read_at(&mut buf[got..], offset + got as u64)?;
                    if k == 0 {
                        break; // shorter on disk than recorded: zeros
                    }
                    got += k;
                }
                Ok(buf)
            }
            Data::Base { offset: base } => self.base_read(base + offset, len).await,
        }
    }

    async fn base_read(&self, at: u64, len: usize) -> io::Result<Vec<u8>> {
        let a = self
            .base
            .as_ref()
            .ok_or_else(|| io::Error::other("a base file without a base torrent"))?;
        a.swarm().read(at, len).await
    }

    /// Makes file `id` staged (copying its base bytes, at most `keep`
    /// of them, into a new data file, fsynced) and returns its data number.
    async fn copy_up(&self, id: u64, keep: u64) -> io::Result<u64> {
        let _guard = self.copy_lock.lock().await;
        let (data, size) = self.lock().file(id)?;
        let offset = match data {
            Data::Staged(n) => return Ok(n),
            Data::Base { offset } => offset,
        };
        let n = {
            let mut t = self.lock();
            self.new_data(&mut t)?
        };
        let f = self.data_file(n)?;
        let keep = keep.min(size);
        let mut pos = 0u64;
        while pos < keep {
            let want = (keep - pos).min(COPY_CHUNK as u64) as usize;
            let chunk = self.base_read(offset + pos, want).await?;
            if chunk.len() != want {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "base torrent shorter than its file",
                ));
            }
            f.write_all_at(&chunk, pos)?;
            pos += want as u64;
        }
        f.sync_all()?;
        let mut t = self.lock();
        // It may have been replaced while we copied.
        if let Data::Staged(m) = t.file(id)?.0 {
            return Ok(m);
        }
        if t.reachable(id) {
            let p = t.path(id)?;
            self.log(&Op::File(p, n))?;
        }
        t.set_file(id, Data::Staged(n), keep);
        Ok(n)
    }

    /// Writes `data` at `offset` of file `id` (a base file is copied up
    /// first); the file grows as needed, a gap reads as zeros. Returns the
    /// bytes written. Not durable until [`Draft::fsync`]. Errors: `ENOENT`,
    /// `EISDIR`, `EFBIG`, I/O.
    pub async fn write(&self, id: u64, offset: u64, data: &[u8]) -> io::Result<usize> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= crate::metainfo::MAX_FILE_LENGTH)
            .ok_or_else(|| errno(libc::EFBIG))?;
        let current = self.lock().file(id)?.0;
        let n = match current {
            Data::Staged(n) => n,
            Data::Base { .. } => self.copy_up(id, u64::MAX).await?,
        };
        self.data_file(n)?.write_all_at(data, offset)?;
        let mut t = self.lock();
        let (d, size) = t.file(id)?;
        if d == Data::Staged(n) {
            t.set_file(id, d, size.max(end));
        }
        Ok(data.len())
    }

    /// Sets the size of file `id` (truncate or extend with zeros).
    /// Errors: `ENOENT`, `EISDIR`, `EFBIG`, I/O.
    pub async fn set_size(&self, id: u64, size: u64) -> io::Result<Attr> {
        if size > crate::metainfo::MAX_FILE_LENGTH {
            return Err(errno(libc::EFBIG));
        }
        if size == 0 {
            return self.truncate_sync(id);
        }
        let data = self.lock().file(id)?.0;
        let n = match data {
            Data::Staged(n) => n,
            Data::Base { .. } => self.copy_up(id, size).await?,
        };
        self.data_file(n)?.set_len(size)?;
        let mut t = self.lock();
        t.set_file(id, Data::Staged(n), size);
        t.attr(id)
    }

    /// Makes file `id`'s bytes and size durable (fsync of its data file;
    /// the journal is always synced). A base file needs nothing.
    pub fn fsync(&self, id: u64) -> io::Result<()> {
        let file = self.lock().file(id);
        match file {
            Ok((Data::Staged(n), _)) => self.data_file(n)?.sync_all(),
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Number of nodes and total bytes of files (for statfs).
    pub fn usage(&self) -> (u64, u64) {
        let t = self.lock();
        let mut bytes = 0;
        let mut n = 0;
        for node in t.nodes.values().filter(|n| n.linked) {
            n += 1;
            if let Kind::File { size, .. } = node.kind {
                bytes += size;
            }
        }
        (n, bytes)
    }

    // ---- path-level operations (the library API) ----

    /// The node at `path` (`a/b/c`; "" is the root).
    pub fn resolve(&self, path: &str) -> io::Result<u64> {
        let t = self.lock();
        let mut id = ROOT;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            id = t.child(id, c)?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{path}: not in the draft"))
            })?;
        }
        Ok(id)
    }

    /// Creates directory `path` and its missing parents (like `mkdir -p`).
    /// Errors: a file in the way (`ENOTDIR`/`EEXIST`), bad paths, I/O.
    pub fn create_dir(&self, path: &str) -> io::Result<()> {
        let mut id = ROOT;
        for c in split_path(path)? {
            let child = self.lock().child(id, &c)?;
            id = match child {
                Some(c) if self.attr(c)?.is_dir => c,
                Some(_) => return Err(errno(libc::EEXIST)),
                None => self.mkdir(id, &c)?.id,
            };
        }
        Ok(())
    }

    /// Writes the whole file `path` (created with its parents, or
    /// replaced) and fsyncs it.
    pub async fn write_file(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let mut comps = split_path(path)?;
        let name = comps.pop().expect("non-empty");
        let parent = if comps.is_empty() {
            ROOT
        } else {
            let p = comps.join("/");
            self.create_dir(&p)?;
            self.resolve(&p)?
        };
        let id = self.create_file(parent, &name, false)?.id;
        self.write(id, 0, bytes).await?;
        self.fsync(id)
    }

    /// Reads the whole file at `path`.
    pub async fn read_file(&self, path: &str) -> io::Result<Vec<u8>> {
        let id = self.resolve(path)?;
        let size = self.attr(id)?.size;
        let mut out = Vec::new();
        while (out.len() as u64) < size {
            let chunk = self.read(id, out.len() as u64, 4 << 20).await?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Removes `path`: a file, or a directory with everything under it.
    pub fn remove(&self, path: &str) -> io::Result<()> {
        let mut comps = split_path(path)?;
        let name = comps.pop().expect("non-empty");
        let parent = self.resolve(&comps.join("/"))?;
        let id = self.lock().child(parent, &name)?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{path}: not in the draft"))
        })?;
        if self.attr(id)?.is_dir {
            for (child, _) in self.children(id)? {
                self.remove(&format!("{path}/{child}"))?;
            }
            self.rmdir(parent, &name)
        } else {
            self.unlink(parent, &name)
        }
    }

    /// Moves `from` to `to` (replacing a file or empty directory there).
    pub fn rename_path(&self, from: &str, to: &str) -> io::Result<()> {
        let mut a = split_path(from)?;
        let mut b = split_path(to)?;
        let (an, bn) = (a.pop().expect("non-empty"), b.pop().expect("non-empty"));
        let (ap, bp) = (self.resolve(&a.join("/"))?, self.resolve(&b.join("/"))?);
        self.rename(ap, &an, bp, &bn, false)
    }

    /// The final tree as the [`Content`] of a new torrent. Layout: when the
    /// root holds exactly one directory, the torrent is named after it and
    /// holds its files (so a draft started from a multi-file torrent keeps
    /// its shape); exactly one file gives a single-file torrent; otherwise
    /// the torrent is named [`DraftMeta::name`] and holds the root's
    /// entries. Empty directories are left out (BEP 3 cannot hold them).
    ///
    /// Unchanged base files are downloaded first if they are not all local
    /// (waiting on the base swarm). Call it once no more writes happen: the
    /// staged data files are read in place by the seed.
    pub async fn content(&self) -> io::Result<Content> {
        // (path, size, data), depth first in name order.
        let (files, root_entries) = {
            let t = self.lock();
            let mut out = Vec::new();
            t.collect(ROOT, &mut Vec::new(), &mut out);
            let Kind::Dir(ch) = &t.node(ROOT)?.kind else {
                unreachable!("the root is a directory")
            };
            let entries: Vec<(String, bool)> = ch
                .iter()
                .map(|(n, c)| (n.clone(), matches!(t.nodes[c].kind, Kind::Dir(_))))
                .collect();
            (out, entries)
        };
        if files.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "nothing to publish: the draft has no files",
            ));
        }
        let base_storage: Option<Arc<dyn Storage>> = self
            .base
            .as_ref()
            .and_then(|a| a.swarm().loaded().map(|l| l.storage.clone()));
        let mut out = Vec::with_capacity(files.len());
        for (path, size, data) in &files {
            let source = match *data {
                Data::Staged(n) => Source::File(self.data_path(n)),
                Data::Base { offset } => {
                    let a = self.base.as_ref().expect("base data has a base");
                    if !a.swarm().has_range(offset, offset + size) {
                        tracing::info!(
                            "fetching {} ({size} bytes) from the base torrent",
                            path.join("/")
                        );
                        let mut pos = 0;
                        while pos < *size {
                            let want = (*size - pos).min(4 << 20) as usize;
                            a.swarm().read(offset + pos, want).await?;
                            pos += want as u64;
                        }
                    }
                    Source::Storage {
                        storage: base_storage.clone().expect("base has storage"),
                        offset,
                    }
                }
            };
            out.push(SourceFile {
                path: path.clone(),
                length: *size,
                source,
            });
        }
        let (name, strip) = match root_entries.as_slice() {
            [(n, true)] => (n.clone(), 1),
            [(n, false)] => (n.clone(), 1),
            _ => (self.meta.name.clone(), 0),
        };
        for f in &mut out {
            f.path.drain(..strip);
        }
        let name = if name.is_empty() {
            "draft".to_string()
        } else {
            name
        };
        Ok(Content { name, files: out })
    }

    /// Deletes the data files no file of the tree uses any more (unlinked
    /// or replaced files). Call it only when nothing has a file of the draft
    /// open (after unmount). Returns how many were deleted.
    pub fn prune_data(&self) -> io::Result<usize> {
        let used: std::collections::HashSet<u64> = {
            let t = self.lock();
            let mut out = Vec::new();
            t.collect(ROOT, &mut Vec::new(), &mut out);
            out.iter()
                .filter_map(|(_, _, d)| match d {
                    Data::Staged(n) => Some(*n),
                    Data::Base { .. } => None,
                })
                .collect()
        };
        let mut removed = 0;
        for e in fs::read_dir(self.dir.data_dir())? {
            let e = e?;
            let n = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok());
            if let Some(n) = n
                && !used.contains(&n)
            {
                self.files.lock().unwrap_or_else(|e| e.into_inner()).pop(&n);
                fs::remove_file(e.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Records `mountpoint` as where the draft is edited now (so
    /// `--resume` on it finds the draft). Errors: I/O writing `meta`.
    pub fn set_mountpoint(&mut self, mountpoint: &Path) -> io::Result<()> {
        self.meta.mountpoint = Some(mountpoint.to_path_buf());
        crate::storage::write_atomic(&self.dir.meta(), self.meta.encode().as_bytes())
    }

    /// Records that the draft was published as `magnet` (a later
    /// [`Draft::find`] skips it). The staging directory stays: the new
    /// torrent is seeded from it.
    pub fn mark_published(&self, magnet: &str) -> io::Result<()> {
        crate::storage::write_atomic(&self.dir.published(), format!("{magnet}\n").as_bytes())
    }
}

impl Tree {
    fn node(&self, id: u64) -> io::Result<&Node> {
        self.nodes.get(&id).ok_or_else(|| errno(libc::ENOENT))
    }

    fn node_mut(&mut self, id: u64) -> io::Result<&mut Node> {
        self.nodes.get_mut(&id).ok_or_else(|| errno(libc::ENOENT))
    }

    fn attr(&self, id: u64) -> io::Result<Attr> {
        let n = self.node(id)?;
        Ok(match &n.kind {
            Kind::Dir(ch) => Attr {
                id,
                is_dir: true,
                size: 0,
                mtime: n.mtime,
                subdirs: ch
                    .values()
                    .filter(|c| matches!(self.nodes[c].kind, Kind::Dir(_)))
                    .count() as u32,
            },
            Kind::File { size, .. } => Attr {
                id,
                is_dir: false,
                size: *size,
                mtime: n.mtime,
                subdirs: 0,
            },
        })
    }

    fn file(&self, id: u64) -> io::Result<(Data, u64)> {
        match self.node(id)?.kind {
            Kind::File { data, size } => Ok((data, size)),
            Kind::Dir(_) => Err(errno(libc::EISDIR)),
        }
    }

    fn set_file(&mut self, id: u64, data: Data, size: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.kind = Kind::File { data, size };
            n.mtime = SystemTime::now();
        }
    }

    fn child(&self, dir: u64, name: &str) -> io::Result<Option<u64>> {
        match &self.node(dir)?.kind {
            Kind::Dir(ch) => Ok(ch.get(name).copied()),
            Kind::File { .. } => Err(errno(libc::ENOTDIR)),
        }
    }

    /// Path components of `id` from the root.
    fn path(&self, mut id: u64) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        while id != ROOT {
            let n = self.node(id)?;
            if !n.linked {
                return Err(errno(libc::ENOENT));
            }
            out.push(n.name.clone());
            id = n.parent;
        }
        out.reverse();
        Ok(out)
    }

    fn reachable(&self, id: u64) -> bool {
        self.path(id).is_ok()
    }

    fn add(&mut self, parent: u64, name: &str, kind: Kind, mtime: SystemTime) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.nodes.insert(
            id,
            Node {
                parent,
                name: name.to_string(),
                kind,
                mtime,
                linked: true,
            },
        );
        if let Some(p) = self.nodes.get_mut(&parent) {
            if let Kind::Dir(ch) = &mut p.kind {
                ch.insert(name.to_string(), id);
            }
            p.mtime = mtime;
        }
        id
    }

    /// Takes `id` out of its directory (the node stays for open handles).
    fn detach(&mut self, id: u64) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        n.linked = false;
        let (parent, name) = (n.parent, n.name.clone());
        if let Some(p) = self.nodes.get_mut(&parent) {
            if let Kind::Dir(ch) = &mut p.kind {
                ch.remove(&name);
            }
            p.mtime = SystemTime::now();
        }
    }

    fn check_rename(
        &self,
        id: u64,
        new_parent: u64,
        new_name: &str,
        noreplace: bool,
    ) -> io::Result<()> {
        let is_dir = matches!(self.node(id)?.kind, Kind::Dir(_));
        if is_dir {
            // Not into itself or below.
            let mut p = new_parent;
            loop {
                if p == id {
                    return Err(errno(libc::EINVAL));
                }
                if p == ROOT {
                    break;
                }
                p = self.node(p)?.parent;
            }
        }
        if let Some(target) = self.child(new_parent, new_name)? {
            if target == id {
                return Ok(());
            }
            if noreplace {
                return Err(errno(libc::EEXIST));
            }
            match (&self.node(target)?.kind, is_dir) {
                (Kind::Dir(ch), true) if !ch.is_empty() => return Err(errno(libc::ENOTEMPTY)),
                (Kind::Dir(_), false) => return Err(errno(libc::EISDIR)),
                (Kind::File { .. }, true) => return Err(errno(libc::ENOTDIR)),
                _ => {}
            }
        }
        Ok(())
    }

    fn do_rename(&mut self, id: u64, new_parent: u64, new_name: &str) {
        if let Ok(Some(target)) = self.child(new_parent, new_name)
            && target != id
        {
            self.detach(target);
        }
        self.detach(id);
        let now = SystemTime::now();
        if let Some(n) = self.nodes.get_mut(&id) {
            n.linked = true;
            n.parent = new_parent;
            n.name = new_name.to_string();
        }
        if let Some(p) = self.nodes.get_mut(&new_parent) {
            if let Kind::Dir(ch) = &mut p.kind {
                ch.insert(new_name.to_string(), id);
            }
            p.mtime = now;
        }
    }

    fn resolve(&self, path: &[String]) -> io::Result<u64> {
        let mut id = ROOT;
        for c in path {
            id = self.child(id, c)?.ok_or_else(|| errno(libc::ENOENT))?;
        }
        Ok(id)
    }

    fn split<'a>(&self, path: &'a [String]) -> io::Result<(u64, &'a str)> {
        let (name, dir) = path.split_last().ok_or_else(|| errno(libc::EINVAL))?;
        Ok((self.resolve(dir)?, name))
    }

    /// Applies a journal operation during replay.
    fn apply(&mut self, op: &Op, dir: &DraftDir, now: SystemTime) -> io::Result<()> {
        match op {
            Op::Mkdir(p) => {
                let (parent, name) = self.split(p)?;
                if self.child(parent, name)?.is_none() {
                    self.add(parent, name, Kind::Dir(BTreeMap::new()), now);
                }
            }
            Op::File(p, n) => {
                let (parent, name) = self.split(p)?;
                let size = fs::metadata(dir.data(*n)).map(|m| m.len()).unwrap_or(0);
                let kind = Kind::File {
                    data: Data::Staged(*n),
                    size,
                };
                match self.child(parent, name)? {
                    Some(id) => {
                        if matches!(self.node(id)?.kind, Kind::Dir(_)) {
                            return Err(errno(libc::EISDIR));
                        }
                        self.node_mut(id)?.kind = kind;
                    }
                    None => {
                        self.add(parent, name, kind, now);
                    }
                }
            }
            Op::Rm(p) => {
                let id = self.resolve(p)?;
                self.detach(id);
            }
            Op::Mv(a, b) => {
                let id = self.resolve(a)?;
                let (np, nn) = self.split(b)?;
                self.check_rename(id, np, nn, false)?;
                self.do_rename(id, np, nn);
            }
        }
        Ok(())
    }

    /// Every linked file under `id`: (path, size, data), in name order.
    fn collect(&self, id: u64, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, u64, Data)>) {
        let Some(Kind::Dir(ch)) = self.nodes.get(&id).map(|n| &n.kind) else {
            return;
        };
        for (name, c) in ch {
            prefix.push(name.clone());
            match &self.nodes[c].kind {
                Kind::Dir(_) => self.collect(*c, prefix, out),
                Kind::File { data, size } => out.push((prefix.clone(), *size, *data)),
            }
            prefix.pop();
        }
    }
}

/// fsyncs a directory (so entries created in it are durable).
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_round_trip() {
        let ops = [
            Op::Mkdir(vec!["a b".into(), "c%d/e".into()]),
            Op::File(vec!["café".into(), "x\ny".into()], 7),
            Op::Rm(vec!["z".into()]),
            Op::Mv(vec!["a".into()], vec!["b".into(), "c".into()]),
        ];
        for op in ops {
            let line = op.line();
            assert_eq!(line.matches('\n').count(), 1);
            assert_eq!(Op::parse(line.trim_end()), Some(op));
        }
        assert_eq!(Op::parse("file a"), None);
        assert_eq!(Op::parse("mv a"), None);
    }

    #[tokio::test]
    async fn edits_survive_a_reopen() {
        let t = tempfile::tempdir().unwrap();
        let d = Draft::create(t.path(), DraftMeta::named("d"), None).unwrap();
        d.write_file("site/a.txt", b"hello").await.unwrap();
        d.write_file("site/b.txt", b"bbb").await.unwrap();
        d.create_dir("site/sub/deeper").unwrap();
        d.write_file("site/sub/deeper/c", b"ccc").await.unwrap();
        d.rename_path("site/sub", "site/moved").unwrap();
        d.remove("site/b.txt").unwrap();
        let id = d.resolve("site/a.txt").unwrap();
        d.write(id, 10, b"XY").await.unwrap();
        d.fsync(id).unwrap();
        assert_eq!(
            d.read_file("site/a.txt").await.unwrap(),
            b"hello\0\0\0\0\0XY"
        );
        let dir = d.dir().to_path_buf();
        drop(d);
        let d = Draft::open(&dir, None).unwrap();
        assert_eq!(
            d.read_file("site/a.txt").await.unwrap(),
            b"hello\0\0\0\0\0XY"
        );
        assert_eq!(d.read_file("site/moved/deeper/c").await.unwrap(), b"ccc");
        assert!(d.resolve("site/b.txt").is_err());
        assert!(d.resolve("site/sub").is_err());
        let c = d.content().await.unwrap();
        assert_eq!(c.name, "site");
        let paths: Vec<String> = c.files.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(paths, ["a.txt", "moved/deeper/c"]);
        let b = crate::create::build(&c, &mut |_, _| {}).unwrap();
        assert_eq!(b.total_length, 15);
        // b.txt's data file is unused after its removal.
        assert_eq!(d.prune_data().unwrap(), 1);
        assert_eq!(d.read_file("site/moved/deeper/c").await.unwrap(), b"ccc");
        let found = Draft::find(t.path(), |m| m.name == "d").unwrap();
        assert_eq!(found.0, dir);
        d.mark_published("magnet:?xt=urn:btih:00").unwrap();
        assert!(Draft::find(t.path(), |_| true).is_none());
    }

    #[tokio::test]
    async fn posix_errors() {
        let t = tempfile::tempdir().unwrap();
        let d = Draft::create(t.path(), DraftMeta::named("d"), None).unwrap();
        let a = d.mkdir(ROOT, "a").unwrap().id;
        d.create_file(a, "f", true).unwrap();
        let code = |r: io::Result<()>| r.unwrap_err().raw_os_error();
        assert_eq!(code(d.rmdir(ROOT, "a")), Some(libc::ENOTEMPTY));
        assert_eq!(code(d.unlink(ROOT, "a")), Some(libc::EISDIR));
        assert_eq!(code(d.rename(ROOT, "a", a, "x", false)), Some(libc::EINVAL));
        assert_eq!(
            d.create_file(a, "f", true).unwrap_err().raw_os_error(),
            Some(libc::EEXIST)
        );
        d.mkdir(ROOT, "b").unwrap();
        assert_eq!(code(d.rename(a, "f", ROOT, "b", false)), Some(libc::EISDIR));
        assert_eq!(
            code(d.rename(ROOT, "b", ROOT, "a", true)),
            Some(libc::EEXIST)
        );
        // An unlinked file stays writable through its id.
        let f = d.lookup(a, "f").unwrap().id;
        d.unlink(a, "f").unwrap();
        d.write(f, 0, b"x").await.unwrap();
        assert_eq!(d.read(f, 0, 10).await.unwrap(), b"x");
    }
}
