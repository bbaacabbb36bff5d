//! An [`Archive`]: a torrent seen as a read-only file tree with fs-like
//! reads. Every read turns into urgent piece requests for exactly the pieces
//! it covers; an open [`FileReader`] also keeps a readahead window that grows
//! while reads are sequential and collapses on a seek.
//!
//! The tree is built once from the info dictionary (BEP 3 `files`, BEP 47
//! pad files hidden, symlinks exposed with targets inside the torrent). Node
//! ids are stable for a given info dictionary: the FUSE layer uses them as
//! inode numbers.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::InfoHash;
use crate::metainfo::Info;
use crate::swarm::{Swarm, SwarmStats};

/// Index of a node in [`Tree::nodes`]; the root is 0.
pub type NodeId = usize;

/// What a tree node is.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// Children by name, sorted.
    Dir(BTreeMap<String, NodeId>),
    /// A file: its index in `Info::files`, its size in bytes and its
    /// absolute offset in the torrent's piece space.
    File {
        index: usize,
        size: u64,
        offset: u64,
    },
    /// A symlink with a target relative to the link's directory.
    Symlink(String),
}

/// One entry of the tree.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub parent: NodeId,
    pub kind: NodeKind,
    pub executable: bool,
}

/// The file tree of a torrent.
#[derive(Debug, Clone)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// Builds the tree of `info`'s files (pad files left out). Paths are
    /// already sanitized and de-duplicated by [`crate::metainfo`]; a path
    /// that would still collide (a file where a directory must be) is
    /// skipped with a warning.
    pub fn build(info: &Info) -> Tree {
        let mut nodes = vec![Node {
            name: String::new(),
            parent: 0,
            kind: NodeKind::Dir(BTreeMap::new()),
            executable: false,
        }];
        for (index, f) in info.files.iter().enumerate() {
            if f.pad || f.path.is_empty() {
                continue;
            }
            let mut dir = 0usize;
            let mut ok = true;
            for comp in &f.path[..f.path.len() - 1] {
                let NodeKind::Dir(children) = &nodes[dir].kind else {
                    ok = false;
                    break;
                };
                dir = match children.get(comp) {
                    Some(&c) => c,
                    None => {
                        let id = nodes.len();
                        nodes.push(Node {
                            name: comp.clone(),
                            parent: dir,
                            kind: NodeKind::Dir(BTreeMap::new()),
                            executable: false,
                        });
                        if let NodeKind::Dir(ch) = &mut nodes[dir].kind {
                            ch.insert(comp.clone(), id);
                        }
                        id
                    }
                };
            }
            let name = f.path.last().expect("non-empty").clone();
            let free = matches!(&nodes[dir].kind, NodeKind::Dir(ch) if !ch.contains_key(&name));
            if !ok || !free {
                tracing::warn!(
                    "skipping {:?}: its path collides with another entry",
                    f.path.join("/")
                );
                continue;
            }
            let kind = match &f.symlink {
                Some(target) => NodeKind::Symlink(relative_target(&f.path, target)),
                None => NodeKind::File {
                    index,
                    size: f.length,
                    offset: f.offset,
                },
            };
            let id = nodes.len();
            nodes.push(Node {
                name: name.clone(),
                parent: dir,
                kind,
                executable: f.executable,
            });
            if let NodeKind::Dir(ch) = &mut nodes[dir].kind {
                ch.insert(name, id);
            }
        }
        Tree { nodes }
    }

    /// The node at `path` (`/`-separated, relative to the root; "" is the root).
    pub fn resolve(&self, path: &str) -> Option<NodeId> {
        let mut id = 0;
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let NodeKind::Dir(ch) = &self.nodes[id].kind else {
                return None;
            };
            id = *ch.get(comp)?;
        }
        Some(id)
    }

    /// The child `name` of directory `dir`.
    pub fn child(&self, dir: NodeId, name: &str) -> Option<NodeId> {
        match &self.nodes.get(dir)?.kind {
            NodeKind::Dir(ch) => ch.get(name).copied(),
            _ => None,
        }
    }
}

/// A symlink target (components from the torrent root, as the info
/// dictionary gives it) made relative to the directory of the link at
/// `link` (components from the root). Both are sanitized, so the result
/// never leaves the torrent.
fn relative_target(link: &[String], target: &[String]) -> String {
    let dir = &link[..link.len().saturating_sub(1)];
    let common = dir.iter().zip(target).take_while(|(a, b)| a == b).count();
    let mut parts: Vec<&str> = vec![".."; dir.len() - common];
    parts.extend(target[common..].iter().map(String::as_str));
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// An entry of [`Archive::read_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub kind: EntryKind,
    /// Bytes (0 for directories and symlinks).
    pub size: u64,
}

/// The kind of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
}

/// What [`Archive::metadata`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub kind: EntryKind,
    /// Bytes.
    pub size: u64,
    /// How many of the file's bytes are verified and stored locally.
    pub local: bool,
}

/// A torrent as a read-only file tree. Cheap to clone.
#[derive(Clone)]
pub struct Archive {
    swarm: Arc<Swarm>,
    tree: Arc<Tree>,
    next_handle: Arc<AtomicU64>,
}

impl Archive {
    pub(crate) fn new(swarm: Arc<Swarm>) -> Archive {
        let info = swarm.loaded().expect("archive needs metadata").info.clone();
        Archive {
            tree: Arc::new(Tree::build(&info)),
            swarm,
            next_handle: Arc::new(AtomicU64::new(1)),
        }
    }

    pub(crate) fn swarm(&self) -> &Arc<Swarm> {
        &self.swarm
    }

    /// The info dictionary.
    pub fn info(&self) -> &Arc<Info> {
        &self.swarm.loaded().expect("archive has metadata").info
    }

    pub fn info_hash(&self) -> InfoHash {
        self.swarm.info_hash
    }

    /// The magnet link of this torrent (BEP 9), with its name as `dn`:
    /// `xt=urn:btih` for a v1 torrent, `xt=urn:btmh` for a v2-only one, both
    /// for a hybrid (BEP 52).
    pub fn magnet(&self) -> String {
        use crate::magnet::Magnet;
        let info = self.info();
        let mut m = match (info.info_hash_v1(), info.info_hash_v2) {
            (Some(v1), Some(v2)) => Magnet::hybrid(v1, v2),
            (None, Some(v2)) => Magnet::v2(v2),
            _ => Magnet::new(self.info_hash()),
        };
        m.display_name = Some(self.info().name.clone());
        m.to_url()
    }

    /// The file tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Peers, pieces and byte counters.
    pub fn stats(&self) -> SwarmStats {
        self.swarm.stats()
    }

    /// Pieces with block requests outstanding at peers, with the number of
    /// such blocks (16 KiB) each, ascending by piece index.
    pub fn requested_pieces(&self) -> Vec<(u32, usize)> {
        self.swarm.requested_pieces()
    }

    /// The connected peers and where each came from (BEP 5 DHT, BEP 14
    /// LSD, BEP 11 PEX, the URL, the command line, or incoming).
    pub fn peers(&self) -> Vec<crate::swarm::PeerInfo> {
        self.swarm.peer_list()
    }

    /// Progress of tree node `id`: (bytes in verified pieces, size in
    /// bytes). A directory sums every file under it; a symlink is (0, 0).
    /// `None` for an unknown node.
    pub fn node_progress(&self, id: NodeId) -> Option<(u64, u64)> {
        let mut stack = vec![id];
        let (mut verified, mut size) = (0u64, 0u64);
        self.tree.nodes.get(id)?;
        while let Some(n) = stack.pop() {
            match &self.tree.nodes[n].kind {
                NodeKind::Dir(ch) => stack.extend(ch.values().copied()),
                NodeKind::File {
                    size: s, offset, ..
                } => {
                    size += s;
                    verified += self.swarm.verified_bytes(*offset, offset + s);
                }
                NodeKind::Symlink(_) => {}
            }
        }
        Some((verified, size))
    }

    /// Lists the directory at `path` (`/`-separated, "" for the root).
    /// Errors: `NotFound`, or `NotADirectory`.
    pub fn read_dir(&self, path: &str) -> io::Result<Vec<DirEntry>> {
        let id = self.tree.resolve(path).ok_or_else(|| not_found(path))?;
        let NodeKind::Dir(ch) = &self.tree.nodes[id].kind else {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                path.to_string(),
            ));
        };
        Ok(ch
            .iter()
            .map(|(name, &c)| {
                let (kind, size) = kind_size(&self.tree.nodes[c].kind);
                DirEntry {
                    name: name.clone(),
                    kind,
                    size,
                }
            })
            .collect())
    }

    /// Kind and size of the entry at `path`. Errors: `NotFound`.
    pub fn metadata(&self, path: &str) -> io::Result<Metadata> {
        let id = self.tree.resolve(path).ok_or_else(|| not_found(path))?;
        let node = &self.tree.nodes[id];
        let (kind, size) = kind_size(&node.kind);
        let local = match node.kind {
            NodeKind::File { offset, size, .. } => self.swarm.has_range(offset, offset + size),
            _ => true,
        };
        Ok(Metadata { kind, size, local })
    }

    /// Reads a whole file. Errors: `NotFound`, `IsADirectory`, `TimedOut`
    /// (a piece did not arrive within the read timeout). Meant for small
    /// files: large ones are better read through [`Archive::open`].
    pub async fn read_file(&self, path: &str) -> io::Result<Vec<u8>> {
        let r = self.open(path)?;
        let size = r.size();
        let mut out = Vec::with_capacity(size.min(64 << 20) as usize);
        while (out.len() as u64) < size {
            let chunk = r.read_at(out.len() as u64, 4 << 20).await?;
            if chunk.is_empty() {
                break;
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Opens the file at `path` for reads at any offset.
    ///
    /// Errors name `path`: `NotFound` (`"PATH: no such file in the
    /// torrent"`), `IsADirectory` (`"PATH: is a directory"`),
    /// `InvalidInput` for a symlink.
    pub fn open(&self, path: &str) -> io::Result<FileReader> {
        let id = self.tree.resolve(path).ok_or_else(|| not_found(path))?;
        self.open_node(id)
            .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
    }

    /// Opens the file node `id` (FUSE passes node ids).
    pub fn open_node(&self, id: NodeId) -> io::Result<FileReader> {
        match self.tree.nodes.get(id).map(|n| &n.kind) {
            Some(NodeKind::File {
                index,
                size,
                offset,
            }) => Ok(FileReader {
                archive: self.clone(),
                handle: self.next_handle.fetch_add(1, Ordering::Relaxed),
                index: *index,
                offset: *offset,
                size: *size,
                ra: std::sync::Mutex::new(Readahead::default()),
            }),
            Some(NodeKind::Dir(_)) => Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "is a directory",
            )),
            Some(NodeKind::Symlink(_)) => {
                Err(io::Error::new(io::ErrorKind::InvalidInput, "is a symlink"))
            }
            None => Err(not_found(&id.to_string())),
        }
    }

    /// Stops this archive's swarm: no more downloads or uploads.
    pub fn close(&self) {
        self.swarm.stop();
    }
}

fn kind_size(k: &NodeKind) -> (EntryKind, u64) {
    match k {
        NodeKind::Dir(_) => (EntryKind::Dir, 0),
        NodeKind::File { size, .. } => (EntryKind::File, *size),
        NodeKind::Symlink(t) => (EntryKind::Symlink, t.len() as u64),
    }
}

fn not_found(path: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{path}: no such file in the torrent"),
    )
}

/// Readahead state of one open file: like the kernel's, the window doubles
/// while reads are sequential and collapses to its minimum on a seek.
#[derive(Debug, Default)]
struct Readahead {
    /// Where the next sequential read would start (file offset).
    next: u64,
    /// Current window in bytes (0 until the first sequential read).
    window: u64,
}

/// Smallest readahead window after a seek, in bytes.
const RA_MIN: u64 = 1 << 20;
/// Largest readahead window, in bytes.
const RA_MAX: u64 = 32 << 20;

/// An open file of an [`Archive`]. Reads at any offset; dropping it clears
/// its readahead window.
pub struct FileReader {
    archive: Archive,
    handle: u64,
    /// Index of the file in `Info::files`.
    index: usize,
    /// Absolute offset of the file in the torrent's piece space.
    offset: u64,
    size: u64,
    ra: std::sync::Mutex<Readahead>,
}

/// A file of the torrent whose bytes are all verified and stored in a
/// cache file: readers may read that file directly (FUSE passthrough),
/// bypassing the swarm. Its pieces are not evicted while this lives.
pub struct LocalFile {
    /// The cache file, opened read-only; exactly the torrent file's bytes.
    pub file: std::fs::File,
    _pin: crate::swarm::PiecePin,
}

impl FileReader {
    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads up to `len` bytes at file offset `pos`; short at the end of the
    /// file, empty at or past it. Waits for missing pieces (they are
    /// requested before anything else) up to the read timeout. Errors:
    /// `TimedOut` when the pieces did not arrive in time.
    pub async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        if pos >= self.size || len == 0 {
            return Ok(Vec::new());
        }
        let len = (len as u64).min(self.size - pos);
        let window = self.update_readahead(pos, len);
        self.archive
            .swarm
            .read_in_window(self.handle, window, self.offset + pos, len as usize)
            .await
    }

    /// The cache file holding this file's bytes, when every piece under
    /// the file is verified and the storage keeps one file per torrent file
    /// (the default file cache; not memory storage). The pieces stay pinned
    /// (never evicted by `--cache-size`) while the [`LocalFile`] lives.
    /// `None` for an empty file, a file with a missing piece, or a cache
    /// file that cannot be opened or has the wrong size.
    pub fn local_file(&self) -> Option<LocalFile> {
        let loaded = self.archive.swarm.loaded()?;
        let path = loaded.storage.file_path(self.index)?.to_path_buf();
        let pin = self
            .archive
            .swarm
            .pin_range(self.offset, self.offset + self.size)?;
        let file = std::fs::File::open(&path).ok()?;
        (file.metadata().ok()?.len() == self.size).then_some(LocalFile { file, _pin: pin })
    }

    /// Records a read of `len` bytes at `pos` and returns the handle's
    /// readahead window after it (absolute byte range; empty: none).
    fn update_readahead(&self, pos: u64, len: u64) -> (u64, u64) {
        let (start, end) = {
            let mut ra = self.ra.lock().unwrap_or_else(|e| e.into_inner());
            ra.advance(pos, len);
            if ra.window == 0 {
                (ra.next, ra.next)
            } else {
                // The window starts RA_MIN behind the furthest read, so
                // the pieces of reads that reach us slightly out of order
                // (the kernel's FUSE threads) stay wanted: leaving the
                // window cancels their requests (see Swarm::plan_requests).
                let start = ra.next.saturating_sub(RA_MIN);
                (start, (ra.next + ra.window).min(self.size))
            }
        };
        (self.offset + start, self.offset + end)
    }
}

impl Readahead {
    /// Records a read of `len` bytes at `pos`. A read near where the last
    /// one ended is sequential (the kernel's 4 FUSE threads may deliver a
    /// stream's reads slightly out of order): the window doubles, from
    /// [`RA_MIN`] up to [`RA_MAX`]. Anything else is a seek: no readahead
    /// until the reader shows it goes on sequentially, so a random read
    /// fetches only its own piece.
    fn advance(&mut self, pos: u64, len: u64) {
        let slack = self.window.max(RA_MIN);
        let sequential = if self.next == 0 {
            pos == 0
        } else {
            pos + slack >= self.next && pos <= self.next + slack
        };
        if sequential {
            self.window = (self.window * 2).clamp(RA_MIN, RA_MAX);
            self.next = self.next.max(pos + len);
        } else {
            self.window = 0;
            self.next = pos + len;
        }
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        self.archive.swarm.set_readahead(self.handle, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn readahead_grows_while_sequential_and_stops_on_a_seek() {
        let mut ra = Readahead::default();
        ra.advance(0, 131072);
        assert_eq!(ra.window, RA_MIN);
        ra.advance(131072, 131072);
        assert_eq!(ra.window, 2 * RA_MIN);
        // slightly out of order (another FUSE thread): still sequential
        ra.advance(393216, 131072);
        ra.advance(262144, 131072);
        assert_eq!(ra.window, 8 * RA_MIN);
        assert_eq!(ra.next, 524288);
        // a seek: no readahead until the reader goes on sequentially
        ra.advance(500 << 20, 4096);
        assert_eq!(ra.window, 0);
        ra.advance((500 << 20) + 4096, 4096);
        assert_eq!(ra.window, RA_MIN);
        for _ in 0..20 {
            let n = ra.next;
            ra.advance(n, 1 << 20);
        }
        assert_eq!(ra.window, RA_MAX);
    }

    #[test]
    fn symlink_targets_are_relative_to_the_link() {
        assert_eq!(
            relative_target(&s(&["t", "a", "b", "foo"]), &s(&["t", "a", "b", "bar"])),
            "bar"
        );
        assert_eq!(
            relative_target(&s(&["F", "SDL2"]), &s(&["F", "Versions", "A", "SDL2"])),
            "Versions/A/SDL2"
        );
        assert_eq!(
            relative_target(&s(&["F", "x", "l"]), &s(&["F", "y"])),
            "../y"
        );
    }
}
