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
//! [`crate::create::Content`] for [`crate::create::build`]: see there for how the torrent
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
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use crate::archive::{Archive, NodeKind};
use crate::storage::{CacheLayout, DraftDir};

mod edit;
mod journal;
mod paths;
mod publish;
mod tree;

pub use journal::DraftMeta;
use journal::{Op, now_secs};
use tree::{Data, Kind, Node, Tree};

/// Node id of the root directory (the FUSE root inode).
pub const ROOT: u64 = 1;

/// Bytes copied per step when a base file is copied up.
const COPY_CHUNK: usize = 1 << 20;
fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
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
        let b = crate::create::build(&c, crate::create::Format::V1Only, &mut |_, _| {}).unwrap();
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
