//! The FUSE adapter: an [`Archive`] as a read-only filesystem (`fuser`).
//!
//! Reads are answered from tokio tasks, so a read waiting for pieces never
//! blocks the FUSE loop or other operations. Content under an info-hash
//! never changes, so attributes and entries get long TTLs and open files
//! keep the page cache (`FOPEN_KEEP_CACHE`).
//!
//! **Passthrough.** A file whose pieces are all verified in the file cache
//! is opened in FUSE passthrough mode (Linux ≥ 6.9, `FUSE_PASSTHROUGH`,
//! needs CAP_SYS_ADMIN): the kernel reads the cache file directly, so reads
//! run at the speed of the disk's page cache and never reach this process.
//! Its pieces are pinned against eviction while it is open. The kernel
//! wants one I/O mode per inode at a time (an open in the other mode fails
//! with EIO), so an inode already open through this process stays so until
//! its last handle closes, and all passthrough opens of an inode share one
//! backing file. When the kernel or the privileges do not allow it, files
//! are served through this process as before (logged once).
//!
//! A mounted BEP 46 mutable URL changes torrent when its publisher puts a
//! newer item: [`Switcher::switch`] swaps the tree atomically. Each torrent
//! shown is a *version* with a generation number `g` (0, 1, 2, ...), and
//! the inode of tree node `n` of version `g` is `g << 32 | (n + 1)`, so
//! inodes never collide between versions (version 0 keeps the plain
//! `n + 1`). The root is always inode 1 and shows the current version; a
//! lookup under the root returns the current version's inodes, while an
//! inode of an older version keeps answering (getattr, lookup, readdir,
//! read) for as long as that version is kept: while a file of it is open.
//! Files opened before a switch keep reading the version they opened. For
//! mutable mounts the root's entries get a 1 s TTL and the root listing is
//! not cached, so `ls` and path lookups see a switch within a second.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, Request,
};

use crate::archive::{Archive, FileReader, LocalFile, NodeKind};

pub(crate) mod alike;
pub mod mount;
pub mod root;
mod xattr;
pub use mount::{Ended, Mount, MountpointError, detach, in_mount_table, prepare_mountpoint};

/// The source name of every btfs-mount filesystem in the mount table.
pub const FS_NAME: &str = "btfs-mount";

/// Attributes and entries never change under one info-hash.
const TTL: Duration = Duration::from_secs(24 * 3600);
/// TTL of the root's entries on a mutable mount (a switch shows this fast).
const ROOT_TTL_MUTABLE: Duration = Duration::from_secs(1);
/// Inode of the root directory (FUSE_ROOT_ID).
const ROOT: u64 = 1;

/// Called with the archive of a version that is no longer shown and no
/// longer open (and whose info-hash no shown version uses): stop its swarm.
pub type Retire = Arc<dyn Fn(&Archive) + Send + Sync>;

/// One torrent shown by the filesystem.
struct Version {
    archive: Archive,
    /// mtime and ctime of every entry: when this version was mounted.
    mtime: SystemTime,
}

/// The versions of a mount, under one lock.
struct Versions {
    /// Generation of the version the root shows.
    current: u32,
    /// Versions still reachable: the current one and those with open files.
    by_gen: BTreeMap<u32, Version>,
}

/// How the filesystem serves files; see [`spawn_mount_with`].
#[derive(Debug, Clone, Copy)]
pub struct FsOptions {
    /// Open fully cached files in FUSE passthrough mode when the kernel and
    /// our privileges allow it (default true; see the module docs).
    pub passthrough: bool,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions { passthrough: true }
    }
}

/// One open file handle.
struct OpenFile {
    generation: u32,
    ino: u64,
    reader: Arc<FileReader>,
    /// Opened in passthrough mode (counted in [`InodeIo::passthrough`]).
    passthrough: bool,
}

/// The I/O mode of an inode while it has open handles (the kernel allows
/// one at a time).
#[derive(Default)]
struct InodeIo {
    /// Handles served through this process.
    cached: usize,
    /// Handles in passthrough mode, and the backing file they share (kept
    /// registered, and its pieces pinned, until the last one closes).
    passthrough: usize,
    backing: Option<(BackingId, LocalFile)>,
}

/// What the filesystem and its [`Switcher`]s share.
struct Shared {
    versions: RwLock<Versions>,
    /// Open files by file handle.
    open: Mutex<HashMap<u64, OpenFile>>,
    /// I/O mode of inodes with open handles.
    io: Mutex<HashMap<u64, InodeIo>>,
    /// Set for mutable mounts: short root TTL, and old versions retired.
    retire: Option<Retire>,
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Versions> {
        self.versions.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops versions that are neither current nor open, retiring their
    /// archives unless a kept version shares the info-hash.
    fn prune(&self) {
        let in_use: std::collections::HashSet<u32> = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|f| f.generation)
            .collect();
        let dropped: Vec<Version> = {
            let mut v = self.versions.write().unwrap_or_else(|e| e.into_inner());
            let current = v.current;
            let gone: Vec<u32> = v
                .by_gen
                .keys()
                .copied()
                .filter(|g| *g != current && !in_use.contains(g))
                .collect();
            let dropped: Vec<Version> = gone.iter().filter_map(|g| v.by_gen.remove(g)).collect();
            dropped
                .into_iter()
                .filter(|d| {
                    !v.by_gen
                        .values()
                        .any(|k| k.archive.info_hash() == d.archive.info_hash())
                })
                .collect()
        };
        for d in dropped {
            tracing::info!(
                "{}: no longer shown or open; stopping its swarm",
                d.archive.info_hash()
            );
            if let Some(r) = &self.retire {
                r(&d.archive);
            }
        }
    }
}

/// Swaps the torrent a mutable mount shows (see the module docs). Cheap to
/// clone; usable from any thread.
#[derive(Clone)]
pub struct Switcher {
    shared: Arc<Shared>,
}

impl Switcher {
    /// Shows `archive` from now on: new lookups and opens see it, files
    /// already open keep reading the version they opened. Returns the new
    /// generation number.
    pub fn switch(&self, archive: Archive) -> u32 {
        let generation = {
            let mut v = self
                .shared
                .versions
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let g = v.current + 1;
            tracing::info!(
                "now showing {} ({:?}) as version {g}",
                archive.info_hash(),
                archive.info().name
            );
            v.by_gen.insert(
                g,
                Version {
                    archive,
                    mtime: SystemTime::now(),
                },
            );
            v.current = g;
            g
        };
        self.shared.prune();
        generation
    }

    /// The archive the root shows now.
    pub fn current(&self) -> Archive {
        let v = self.shared.read();
        v.by_gen[&v.current].archive.clone()
    }

    /// How many versions are kept (the current one and those with open files).
    pub fn versions_kept(&self) -> usize {
        self.shared.read().by_gen.len()
    }
}

/// The inode of node `id` of version `generation`.
fn ino_of(generation: u32, id: usize) -> INodeNo {
    if id == 0 {
        INodeNo(ROOT)
    } else {
        INodeNo(u64::from(generation) << 32 | (id as u64 + 1))
    }
}

/// The (generation, node) of inode `ino` when version `current` is shown:
/// the inverse of [`ino_of`]. `None` for inode 0 and for the never-issued
/// per-version root inodes `g << 32 | 1`.
fn split_ino(ino: INodeNo, current: u32) -> Option<(u32, usize)> {
    let ino = u64::from(ino);
    if ino == ROOT {
        return Some((current, 0));
    }
    let low = ino & 0xffff_ffff;
    let id = (low as usize).checked_sub(1).filter(|i| *i > 0)?;
    Some(((ino >> 32) as u32, id))
}

/// A mounted archive (or mutable URL: a sequence of archives).
pub struct ArchiveFs {
    shared: Arc<Shared>,
    /// OR'ed into every inode this filesystem gives the kernel, and taken
    /// off those it gets: 0 for a mount of its own, the archive's slot
    /// (`slot << 48`) inside a FUSE root ([`root::RootFs`]).
    base: u64,
    rt: tokio::runtime::Handle,
    uid: u32,
    gid: u32,
    next_fh: AtomicU64,
    options: FsOptions,
    /// Passthrough was granted by the kernel at init and has not failed.
    passthrough: std::sync::atomic::AtomicBool,
}

impl ArchiveFs {
    /// A filesystem over `archive`; reads run on `rt`.
    pub fn new(archive: Archive, rt: tokio::runtime::Handle) -> ArchiveFs {
        Self::build(archive, rt, None)
    }

    /// A filesystem over the first version of a mutable URL; switch
    /// versions with [`ArchiveFs::switcher`]. `retire` is called with each
    /// archive that is no longer shown nor open.
    pub fn mutable(archive: Archive, rt: tokio::runtime::Handle, retire: Retire) -> ArchiveFs {
        Self::build(archive, rt, Some(retire))
    }

    fn build(archive: Archive, rt: tokio::runtime::Handle, retire: Option<Retire>) -> ArchiveFs {
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let mut by_gen = BTreeMap::new();
        by_gen.insert(
            0,
            Version {
                archive,
                mtime: SystemTime::now(),
            },
        );
        ArchiveFs {
            base: 0,
            shared: Arc::new(Shared {
                versions: RwLock::new(Versions { current: 0, by_gen }),
                open: Mutex::new(HashMap::new()),
                io: Mutex::new(HashMap::new()),
                retire,
            }),
            rt,
            uid,
            gid,
            next_fh: AtomicU64::new(1),
            options: FsOptions::default(),
            passthrough: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The same filesystem with `options`.
    pub fn with_options(mut self, options: FsOptions) -> ArchiveFs {
        self.options = options;
        self
    }

    /// The same filesystem giving inodes `base | ino` (see [`ArchiveFs`]'s
    /// `base`), with passthrough already granted (or not) by the kernel:
    /// how a FUSE root mounts it under one of its directories.
    pub(crate) fn nested(mut self, base: u64, passthrough: bool) -> ArchiveFs {
        self.base = base;
        self.passthrough.store(passthrough, Ordering::Relaxed);
        self
    }

    /// The inode of node `id` of version `generation` (see [`ino_of`]).
    fn ino(&self, generation: u32, id: usize) -> INodeNo {
        INodeNo(self.base | u64::from(ino_of(generation, id)))
    }

    /// The attributes of this filesystem's root (the current version's).
    pub(crate) fn root_attr(&self) -> (Duration, FileAttr) {
        let v = self.shared.read();
        let ver = &v.by_gen[&v.current];
        (
            self.ttl(true),
            self.attr(v.current, &ver.archive, ver.mtime, 0),
        )
    }

    /// The archive (version) inode `ino` belongs to, when it is a file.
    pub(crate) fn file_archive(&self, ino: INodeNo) -> Option<Archive> {
        let (_, archive, _, id) = self.node(ino)?;
        matches!(archive.tree().nodes[id].kind, NodeKind::File { .. }).then_some(archive)
    }

    /// A handle that swaps the version shown.
    pub fn switcher(&self) -> Switcher {
        Switcher {
            shared: self.shared.clone(),
        }
    }

    /// The version and node of inode `ino`: the root is the current
    /// version's node 0. `None` for an unknown inode or a dropped version.
    fn node(&self, ino: INodeNo) -> Option<(u32, Archive, SystemTime, usize)> {
        let v = self.shared.read();
        let ino = match self.base {
            0 => ino,
            _ => INodeNo(u64::from(ino) & root::INNER_MASK),
        };
        let (generation, id) = split_ino(ino, v.current)?;
        let ver = v.by_gen.get(&generation)?;
        (id < ver.archive.tree().nodes.len())
            .then(|| (generation, ver.archive.clone(), ver.mtime, id))
    }

    /// Entry and attribute TTL: short for the root and its entries on a
    /// mutable mount (they change with each version), else a day.
    fn ttl(&self, root_or_root_entry: bool) -> Duration {
        if root_or_root_entry && self.shared.retire.is_some() {
            ROOT_TTL_MUTABLE
        } else {
            TTL
        }
    }

    fn attr(&self, generation: u32, archive: &Archive, mtime: SystemTime, id: usize) -> FileAttr {
        let tree = archive.tree();
        let node = &tree.nodes[id];
        let (kind, size, perm, nlink) = match &node.kind {
            NodeKind::Dir(ch) => {
                let subdirs = ch
                    .values()
                    .filter(|&&c| matches!(tree.nodes[c].kind, NodeKind::Dir(_)))
                    .count();
                (FileType::Directory, 0, 0o555, 2 + subdirs as u32)
            }
            NodeKind::File { size, .. } => (
                FileType::RegularFile,
                *size,
                if node.executable { 0o555 } else { 0o444 },
                1,
            ),
            NodeKind::Symlink(t) => (FileType::Symlink, t.len() as u64, 0o777, 1),
        };
        FileAttr {
            ino: self.ino(generation, id),
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 128 * 1024,
            flags: 0,
        }
    }
}

/// At FUSE init: asks for large reads and, when `passthrough`, for FUSE
/// passthrough. Returns whether the kernel granted passthrough.
fn negotiate(config: &mut KernelConfig, passthrough: bool) -> bool {
    // Ask for large reads; the kernel caps it by the mount's readahead.
    let _ = config.set_max_readahead(1 << 20);
    if !passthrough {
        return false;
    }
    // Depth 2: the cache may itself sit on a stacked filesystem
    // (overlayfs in a container).
    match config.add_capabilities(InitFlags::FUSE_PASSTHROUGH) {
        Ok(()) if config.set_max_stack_depth(2).is_ok() => true,
        _ => {
            tracing::info!(
                "the kernel offers no FUSE passthrough (Linux >= 6.9): every read goes through btfs-mount"
            );
            false
        }
    }
}

fn errno_of(e: &io::Error) -> Errno {
    match e.kind() {
        io::ErrorKind::NotFound => Errno::ENOENT,
        io::ErrorKind::StorageFull => Errno::ENOSPC,
        _ => Errno::EIO,
    }
}

impl Filesystem for ArchiveFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if negotiate(config, self.options.passthrough) {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some((g, archive, mtime, dir)) = self.node(parent) else {
            return reply.error(Errno::ENOENT);
        };
        let Some(name) = name.to_str() else {
            return reply.error(Errno::ENOENT);
        };
        match archive.tree().child(dir, name) {
            Some(id) => reply.entry(
                &self.ttl(dir == 0),
                &self.attr(g, &archive, mtime, id),
                Generation(0),
            ),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some((g, archive, mtime, id)) => {
                reply.attr(&self.ttl(id == 0), &self.attr(g, &archive, mtime, id))
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let node = self.node(ino);
        match node.as_ref().map(|(_, a, _, id)| &a.tree().nodes[*id].kind) {
            Some(NodeKind::Symlink(t)) => reply.data(t.as_bytes()),
            Some(_) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let Some((g, archive, _, id)) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let reader = match archive.open_node(id) {
            Ok(r) => Arc::new(r),
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => return reply.error(Errno::EISDIR),
            Err(e) => return reply.error(errno_of(&e)),
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let ino = u64::from(ino);
        let mut io_modes = self.shared.io.lock().unwrap_or_else(|e| e.into_inner());
        let state = io_modes.entry(ino).or_default();
        let mut passthrough = false;
        if state.cached == 0 && self.passthrough.load(Ordering::Relaxed) {
            if state.backing.is_none()
                && let Some(local) = reader.local_file()
            {
                match reply.open_backing(&local.file) {
                    Ok(id) => state.backing = Some((id, local)),
                    Err(e) => {
                        self.passthrough.store(false, Ordering::Relaxed);
                        tracing::warn!(
                            "FUSE passthrough refused ({e}; it needs CAP_SYS_ADMIN): every read goes through btfs-mount"
                        );
                    }
                }
            }
            passthrough = state.backing.is_some();
        }
        if passthrough {
            state.passthrough += 1;
        } else {
            state.cached += 1;
        }
        self.shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                fh,
                OpenFile {
                    generation: g,
                    ino,
                    reader,
                    passthrough,
                },
            );
        match &state.backing {
            Some((id, _)) if passthrough => {
                tracing::debug!("inode {ino} opened in passthrough mode (handle {fh})");
                reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), id)
            }
            _ => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let reader = self
            .shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&fh.0)
            .map(|f| f.reader.clone());
        let reader = match reader {
            Some(r) => r,
            None => match self.node(ino).map(|(_, a, _, id)| a.open_node(id)) {
                Some(Ok(r)) => Arc::new(r),
                _ => return reply.error(Errno::EBADF),
            },
        };
        self.rt.spawn(async move {
            match reader.read_at(offset, size as usize).await {
                Ok(data) => reply.data(&data),
                Err(e) => {
                    tracing::warn!(
                        "read of {size} bytes at {offset} (inode {}) failed: {e}",
                        u64::from(ino)
                    );
                    reply.error(errno_of(&e))
                }
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let closed = self
            .shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&fh.0);
        if let Some(f) = &closed {
            let mut io_modes = self.shared.io.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = io_modes.get_mut(&f.ino) {
                if f.passthrough {
                    state.passthrough = state.passthrough.saturating_sub(1);
                    if state.passthrough == 0 {
                        // unregisters the backing file and unpins its pieces
                        state.backing = None;
                    }
                } else {
                    state.cached = state.cached.saturating_sub(1);
                }
                if state.cached == 0 && state.passthrough == 0 {
                    io_modes.remove(&f.ino);
                }
            }
        }
        reply.ok();
        // The last file of an old version closed: let that version go.
        if let Some(f) = closed
            && f.generation != self.shared.read().current
        {
            self.shared.prune();
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok(); // read-only: nothing to write back
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let node = self.node(ino);
        match node
            .as_ref()
            .map(|(_, a, _, id)| (&a.tree().nodes[*id].kind, *id))
        {
            // The root of a mutable mount changes with each version.
            Some((NodeKind::Dir(_), 0)) if self.shared.retire.is_some() => {
                reply.opened(FileHandle(0), FopenFlags::empty())
            }
            Some((NodeKind::Dir(_), _)) => reply.opened(FileHandle(0), FopenFlags::FOPEN_CACHE_DIR),
            Some(_) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some((g, archive, _, id)) = self.node(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let tree = archive.tree();
        let NodeKind::Dir(children) = &tree.nodes[id].kind else {
            return reply.error(Errno::ENOTDIR);
        };
        let parent = tree.nodes[id].parent;
        let dots = [
            (self.ino(g, id), FileType::Directory, "."),
            (self.ino(g, parent), FileType::Directory, ".."),
        ];
        let entries = dots.into_iter().chain(children.iter().map(|(name, &c)| {
            let kind = match tree.nodes[c].kind {
                NodeKind::Dir(_) => FileType::Directory,
                NodeKind::File { .. } => FileType::RegularFile,
                NodeKind::Symlink(_) => FileType::Symlink,
            };
            (self.ino(g, c), kind, name.as_str())
        }));
        for (i, (ino, kind, name)) in entries.enumerate().skip(offset as usize) {
            if reply.add(ino, i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        size: u32,
        reply: fuser::ReplyXattr,
    ) {
        // See xattr.rs: user.btfs.*; anything else is quietly absent.
        let value = self
            .node(ino)
            .and_then(|(_, archive, _, id)| xattr::value(&archive, id, name));
        xattr::reply_value(value, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        match self.node(ino) {
            Some(_) => xattr::reply_list(size, reply),
            None => reply.error(Errno::ENOENT),
        }
    }

    alike::ioctl_not_a_terminal!();

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let archive = self.switcher().current();
        let total = archive.info().total_length;
        let files = archive.tree().nodes.len() as u64;
        alike::reply_statfs(reply, total.div_ceil(alike::STATFS_BLOCK.into()), files);
    }
}

/// Mount options: read-only, named `btfs-mount` in `mount`.
pub fn mount_config() -> fuser::Config {
    config_with(MountOption::RO)
}

/// The options every btfs-mount filesystem shares (`btfs-mount` as the
/// source in `mount`, nodev, nosuid, kernel permission checks, 4 threads
/// with cloned fds), with `access` (`RO` or `RW`).
pub(crate) fn config_with(access: MountOption) -> fuser::Config {
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        MountOption::FSName(FS_NAME.into()),
        MountOption::Subtype("btfs".into()),
        access,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    cfg.n_threads = Some(4);
    cfg.clone_fd = true;
    cfg
}

/// Mounts `archive` at `mountpoint` (see [`Mount::spawn`]).
pub fn spawn_mount(
    archive: Archive,
    mountpoint: &Path,
    rt: tokio::runtime::Handle,
) -> io::Result<Mount> {
    spawn_mount_with(archive, mountpoint, rt, FsOptions::default())
}

/// [`spawn_mount`] with [`FsOptions`].
pub fn spawn_mount_with(
    archive: Archive,
    mountpoint: &Path,
    rt: tokio::runtime::Handle,
    options: FsOptions,
) -> io::Result<Mount> {
    let fs = ArchiveFs::new(archive, rt).with_options(options);
    Mount::spawn(fs, mountpoint, &mount_config())
}

/// Mounts the first version of a mutable URL at `mountpoint`; the
/// [`Switcher`] shows later versions. `retire` gets each archive no longer
/// shown nor open (typically: `client.close(archive)`).
pub fn spawn_mount_mutable(
    archive: Archive,
    mountpoint: &Path,
    rt: tokio::runtime::Handle,
    retire: Retire,
) -> io::Result<(Mount, Switcher)> {
    spawn_mount_mutable_with(archive, mountpoint, rt, retire, FsOptions::default())
}

/// [`spawn_mount_mutable`] with [`FsOptions`].
pub fn spawn_mount_mutable_with(
    archive: Archive,
    mountpoint: &Path,
    rt: tokio::runtime::Handle,
    retire: Retire,
    options: FsOptions,
) -> io::Result<(Mount, Switcher)> {
    let fs = ArchiveFs::mutable(archive, rt, retire).with_options(options);
    let switcher = fs.switcher();
    let mount = Mount::spawn(fs, mountpoint, &mount_config())?;
    Ok((mount, switcher))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inodes_of_versions_never_collide_and_round_trip() {
        // Version 0 keeps the plain `node + 1` numbering.
        assert_eq!(ino_of(0, 5), INodeNo(6));
        // The root is inode 1 in every version and shows the current one.
        assert_eq!(ino_of(7, 0), INodeNo(ROOT));
        assert_eq!(split_ino(INodeNo(ROOT), 3), Some((3, 0)));
        let mut seen = std::collections::HashSet::new();
        for g in [0u32, 1, 2, u32::MAX] {
            for id in [1usize, 2, 1000, u32::MAX as usize - 1] {
                let ino = ino_of(g, id);
                assert!(seen.insert(u64::from(ino)), "collision at {g} {id}");
                assert_eq!(split_ino(ino, 0), Some((g, id)));
            }
        }
        assert_eq!(split_ino(INodeNo(0), 0), None);
        assert_eq!(split_ino(INodeNo(1 << 32 | 1), 0), None);
    }
}
