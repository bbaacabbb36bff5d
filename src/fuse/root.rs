//! A FUSE root: any number of archives under one mountpoint, opened on
//! first lookup like an automounter (`btfs-mount serve --mount DIR`).
//!
//! ```text
//! DIR/                          lists the archives open now (also those opened over HTTP)
//! DIR/<40 hex info-hash>/...    a torrent, looked up on first use
//! DIR/<64 hex public key>[.<salt hex>]/...   a BEP 46 mutable URL, following updates
//! ```
//!
//! A lookup of a name that is not open asks the shared [`Manager`] to open
//! it and answers once the metadata is there, or after the lookup timeout
//! with ENOENT (and a log line saying why). Each archive is served by its
//! own [`ArchiveFs`], with everything a single mount has: passthrough for
//! fully cached files, lazy resume, mutable URLs switching versions.
//!
//! Inodes: the root is 1; archive `s` (a slot number, one per name for the
//! life of the process, from 1) owns the inodes `s << 48 | i`, where `i` is
//! the inode its [`ArchiveFs`] would use alone (so versions of a mutable
//! archive are told apart up to generation 65535). The root's entries have
//! a 1 s TTL: an archive closed for idleness disappears from `ls DIR` and
//! is opened again by the next path lookup through it. A file open
//! through the root holds a [`Lease`], so its archive does not close under it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use super::{ArchiveFs, FsOptions, Mount, alike, negotiate, xattr};
use crate::manager::{Lease, Manager, Name};

/// The bits of an inode that an archive's own [`ArchiveFs`] numbers.
pub(crate) const INNER_MASK: u64 = (1 << 48) - 1;
/// Inode of the root directory.
const ROOT: u64 = 1;
/// TTL of the root's attributes and entries: archives come and go.
const ROOT_TTL: Duration = Duration::from_secs(1);
/// Most slots (names) over the life of the process.
const MAX_SLOTS: usize = u16::MAX as usize;

/// How long a name whose lookup failed (no metadata within the timeout)
/// answers ENOENT at once. One `ls DIR/<hash>` makes several lookups of
/// the same name (stat, lstat, getxattr...), each of which would otherwise
/// wait the whole timeout again; after this, a lookup tries the swarm
/// again (the torrent may have found a seeder since).
const FAILED_TTL: Duration = Duration::from_secs(10);

/// Most names remembered as failed; the oldest go first.
const MAX_FAILED: usize = 1024;

/// One archive shown under the root.
struct Shown {
    fs: ArchiveFs,
    /// Forwards a mutable name's new versions to `fs`.
    follower: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Shown {
    fn drop(&mut self) {
        if let Some(f) = &self.follower {
            f.abort();
        }
    }
}

#[derive(Default)]
struct Slots {
    /// Slot of each name ever listed or looked up (never reused).
    by_name: HashMap<Name, u16>,
    /// Name of slot `s` at index `s - 1`.
    names: Vec<Name>,
    /// The filesystem of each slot whose archive is shown now.
    shown: HashMap<u16, Arc<Shown>>,
}

impl Slots {
    /// The slot of `name`, assigned if new (None when all are used).
    fn slot(&mut self, name: &Name) -> Option<u16> {
        if let Some(&s) = self.by_name.get(name) {
            return Some(s);
        }
        if self.names.len() >= MAX_SLOTS {
            return None;
        }
        self.names.push(name.clone());
        let s = self.names.len() as u16;
        self.by_name.insert(name.clone(), s);
        Some(s)
    }
}

/// What the root and its hooks share.
struct Shared {
    slots: RwLock<Slots>,
    /// Leases of files open through the root, by inode (one per open).
    leases: Mutex<HashMap<u64, Vec<Lease>>>,
    /// Names whose last lookup failed, and when ([`FAILED_TTL`]).
    failed: Mutex<HashMap<Name, std::time::Instant>>,
}

impl Shared {
    /// Whether `name` failed a lookup less than [`FAILED_TTL`] ago.
    fn failed_recently(&self, name: &Name) -> bool {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed.retain(|_, at| at.elapsed() < FAILED_TTL);
        failed.contains_key(name)
    }

    /// Remembers that a lookup of `name` failed now.
    fn note_failed(&self, name: &Name) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.len() >= MAX_FAILED
            && let Some(oldest) = failed
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(n, _)| n.clone())
        {
            failed.remove(&oldest);
        }
        failed.insert(name.clone(), std::time::Instant::now());
    }
}

/// The FUSE root filesystem; see the module docs.
pub struct RootFs {
    manager: Manager,
    rt: tokio::runtime::Handle,
    shared: Arc<Shared>,
    options: FsOptions,
    /// Passthrough granted by the kernel at init.
    passthrough: Arc<AtomicBool>,
    uid: u32,
    gid: u32,
    mtime: SystemTime,
}

fn slot_of(ino: INodeNo) -> Option<u16> {
    let s = u64::from(ino) >> 48;
    (s > 0 && s <= MAX_SLOTS as u64).then_some(s as u16)
}

fn base_of(slot: u16) -> u64 {
    u64::from(slot) << 48
}

impl RootFs {
    /// A root over `manager`'s archives; FUSE requests that wait (a lookup
    /// opening an archive, reads) run on `rt`.
    pub fn new(manager: Manager, rt: tokio::runtime::Handle, options: FsOptions) -> RootFs {
        let shared = Arc::new(Shared {
            slots: RwLock::new(Slots::default()),
            leases: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&shared);
        // A closed archive stops being shown: its ArchiveFs (and with it
        // the archive and its cache lock) goes.
        manager.on_close(move |name| {
            if let Some(sh) = weak.upgrade() {
                let mut slots = sh.slots.write().unwrap_or_else(|e| e.into_inner());
                if let Some(&s) = slots.by_name.get(name) {
                    slots.shown.remove(&s);
                }
            }
        });
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        RootFs {
            manager,
            rt,
            shared,
            options,
            passthrough: Arc::new(AtomicBool::new(false)),
            uid,
            gid,
            mtime: SystemTime::now(),
        }
    }

    fn root_attr(&self) -> FileAttr {
        FileAttr {
            ino: INodeNo(ROOT),
            size: 0,
            blocks: 0,
            atime: self.mtime,
            mtime: self.mtime,
            ctime: self.mtime,
            crtime: self.mtime,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 128 * 1024,
            flags: 0,
        }
    }

    /// The filesystem of the archive inode `ino` belongs to, if shown; its
    /// name is marked used.
    fn shown(&self, ino: INodeNo) -> Option<Arc<Shown>> {
        let slot = slot_of(ino)?;
        let (shown, name) = {
            let slots = self.shared.slots.read().unwrap_or_else(|e| e.into_inner());
            (
                slots.shown.get(&slot).cloned()?,
                slots.names.get(usize::from(slot) - 1).cloned()?,
            )
        };
        self.manager.touch(&name);
        Some(shown)
    }

    /// Answers a lookup of `name` in the root: shows the archive (opening
    /// it first if needed, on the runtime).
    fn lookup_archive(&self, name: &str, reply: ReplyEntry) {
        let Ok(name) = Name::parse(name) else {
            return reply.error(Errno::ENOENT);
        };
        if self.shared.failed_recently(&name) {
            return reply.error(Errno::ENOENT);
        }
        let Some(slot) = self
            .shared
            .slots
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .slot(&name)
        else {
            tracing::warn!("{name}: no inode slot left in the FUSE root");
            return reply.error(Errno::ENOSPC);
        };
        let (manager, shared, rt) = (self.manager.clone(), self.shared.clone(), self.rt.clone());
        let (passthrough, options) = (self.passthrough.clone(), self.options);
        self.rt.spawn(async move {
            let opened = match manager.open(&name).await {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!(
                        "FUSE root: lookup of {name} failed: {e} (ENOENT at once for {} s)",
                        FAILED_TTL.as_secs()
                    );
                    shared.note_failed(&name);
                    return reply.error(Errno::ENOENT);
                }
            };
            let shown = {
                let mut slots = shared.slots.write().unwrap_or_else(|e| e.into_inner());
                match slots.shown.get(&slot) {
                    Some(s) => s.clone(),
                    None => {
                        let pt = options.passthrough && passthrough.load(Ordering::Relaxed);
                        let archive = opened.archive.clone();
                        let fs = if name.is_mutable() {
                            let retire: super::Retire = Arc::new(|_| {});
                            ArchiveFs::mutable(archive, rt.clone(), retire)
                        } else {
                            ArchiveFs::new(archive, rt.clone())
                        }
                        .with_options(options)
                        .nested(base_of(slot), pt);
                        let follower =
                            manager
                                .watch(&name)
                                .filter(|_| name.is_mutable())
                                .map(|mut rx| {
                                    let switcher = fs.switcher();
                                    tokio::spawn(async move {
                                        while rx.changed().await.is_ok() {
                                            let a = rx.borrow_and_update().archive.clone();
                                            if a.info_hash() != switcher.current().info_hash() {
                                                switcher.switch(a);
                                            }
                                        }
                                    })
                                });
                        let s = Arc::new(Shown { fs, follower });
                        slots.shown.insert(slot, s.clone());
                        s
                    }
                }
            };
            drop(opened);
            let (ttl, attr) = shown.fs.root_attr();
            reply.entry(&ttl.min(ROOT_TTL), &attr, Generation(0));
        });
    }
}

impl Filesystem for RootFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        if negotiate(config, self.options.passthrough) {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if u64::from(parent) == ROOT {
            return match name.to_str() {
                Some(n) => self.lookup_archive(n, reply),
                None => reply.error(Errno::ENOENT),
            };
        }
        match self.shown(parent) {
            Some(s) => s.fs.lookup(req, parent, name, reply),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        if u64::from(ino) == ROOT {
            return reply.attr(&ROOT_TTL, &self.root_attr());
        }
        match self.shown(ino) {
            Some(s) => s.fs.getattr(req, ino, fh, reply),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.shown(ino) {
            Some(s) => s.fs.readlink(req, ino, reply),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let Some(s) = self.shown(ino) else {
            return reply.error(Errno::ENOENT);
        };
        // The file's version stays open while the file is.
        if let Some(lease) = s.fs.file_archive(ino).and_then(|a| self.manager.lease(&a)) {
            self.shared
                .leases
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(u64::from(ino))
                .or_default()
                .push(lease);
        }
        s.fs.open(req, ino, flags, reply)
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.shown(ino) {
            Some(s) => {
                s.fs.read(req, ino, fh, offset, size, flags, lock_owner, reply)
            }
            None => reply.error(Errno::EBADF),
        }
    }

    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        flush: bool,
        reply: ReplyEmpty,
    ) {
        let lease = {
            let mut leases = self.shared.leases.lock().unwrap_or_else(|e| e.into_inner());
            let l = leases.get_mut(&u64::from(ino)).and_then(Vec::pop);
            if leases.get(&u64::from(ino)).is_some_and(Vec::is_empty) {
                leases.remove(&u64::from(ino));
            }
            l
        };
        match self.shown(ino) {
            Some(s) => s.fs.release(req, ino, fh, flags, lock_owner, flush, reply),
            None => reply.ok(),
        }
        drop(lease);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if u64::from(ino) == ROOT {
            // Not cached: archives come and go.
            return reply.opened(FileHandle(0), FopenFlags::empty());
        }
        match self.shown(ino) {
            Some(s) => s.fs.opendir(req, ino, flags, reply),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if u64::from(ino) != ROOT {
            return match self.shown(ino) {
                Some(s) => s.fs.readdir(req, ino, fh, offset, reply),
                None => reply.error(Errno::ENOENT),
            };
        }
        let names = self.manager.names();
        let entries: Vec<(u64, String)> = {
            let mut slots = self.shared.slots.write().unwrap_or_else(|e| e.into_inner());
            names
                .iter()
                .filter_map(|n| slots.slot(n).map(|s| (base_of(s) | 1, n.segment())))
                .collect()
        };
        let dots = [(ROOT, ".".to_string()), (ROOT, "..".to_string())];
        for (i, (ino, name)) in dots
            .into_iter()
            .chain(entries)
            .enumerate()
            .skip(offset as usize)
        {
            if reply.add(INodeNo(ino), i as u64 + 1, FileType::Directory, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.shown(ino) {
            Some(s) => s.fs.getxattr(req, ino, name, size, reply),
            None => reply.error(Errno::NO_XATTR),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.shown(ino) {
            Some(s) => s.fs.listxattr(req, ino, size, reply),
            None => xattr::reply_empty_list(size, reply),
        }
    }

    alike::ioctl_not_a_terminal!();

    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.shown(ino) {
            Some(s) => s.fs.statfs(req, ino, reply),
            None => alike::reply_statfs(reply, 0, 0),
        }
    }
}

/// Mounts a FUSE root over `manager`'s archives on `mountpoint` (see
/// [`Mount::spawn`]; read-only, like every archive). Blocking.
pub fn spawn_root(
    manager: Manager,
    mountpoint: &Path,
    rt: tokio::runtime::Handle,
    options: FsOptions,
) -> io::Result<Mount> {
    let fs = RootFs::new(manager, rt, options);
    Mount::spawn(fs, mountpoint, &super::mount_config())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_own_the_high_bits() {
        assert_eq!(slot_of(INodeNo(ROOT)), None);
        assert_eq!(slot_of(INodeNo(base_of(3) | 1)), Some(3));
        assert_eq!(
            slot_of(INodeNo(base_of(u16::MAX) | 7 << 32 | 9)),
            Some(u16::MAX)
        );
        assert_eq!((base_of(3) | 7 << 32 | 9) & INNER_MASK, 7 << 32 | 9);
        let mut s = Slots::default();
        let a = Name::parse(&"00".repeat(20)).unwrap();
        let b = Name::parse(&"11".repeat(20)).unwrap();
        assert_eq!(s.slot(&a), Some(1));
        assert_eq!(s.slot(&b), Some(2));
        assert_eq!(s.slot(&a), Some(1));
    }
}
