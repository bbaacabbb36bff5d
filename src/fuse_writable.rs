//! The FUSE adapter of a writable mount: a [`Draft`] as a read-write
//! filesystem (`fuser`).
//!
//! Inode numbers are the draft's node ids (the root is 1). Operations:
//! lookup, getattr, setattr (size: truncate or extend; mtime/atime:
//! utimens; mode and owner are accepted and ignored, BEP 3 has no place
//! for them), create, open (O_TRUNC included), read, write (any offset),
//! fsync, flush, release, mkdir, rmdir, unlink, rename (files and
//! directories; `RENAME_NOREPLACE`; `RENAME_EXCHANGE` is refused with
//! EINVAL), opendir/readdir, statfs (of the disk holding the staging
//! directory). Symlinks, hard links and special files are refused with
//! EPERM, extended attributes with ENOTSUP/ENODATA: a torrent cannot hold
//! them faithfully.
//!
//! Writes go to the draft's staging directory before the reply (no
//! writeback cache); `fsync` makes them durable (see
//! [`crate::staging`]). Reads and writes that need the base torrent (a
//! read of an unchanged file, the copy-up of a file's first write) run as
//! tokio tasks so they never block the FUSE threads.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::fuse::{Mount, alike};
use crate::staging::{Attr, Draft};

/// Attributes change only through us; a short TTL keeps `ls -l` honest
/// while a file is being written.
const TTL: Duration = Duration::from_secs(1);

/// A mounted [`Draft`].
pub struct WritableFs {
    draft: Arc<Draft>,
    rt: tokio::runtime::Handle,
    uid: u32,
    gid: u32,
}

impl WritableFs {
    /// A filesystem over `draft`; base reads and copy-ups run on `rt`.
    pub fn new(draft: Arc<Draft>, rt: tokio::runtime::Handle) -> WritableFs {
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        WritableFs {
            draft,
            rt,
            uid,
            gid,
        }
    }

    fn fattr(&self, a: &Attr) -> FileAttr {
        file_attr(a, self.uid, self.gid)
    }
}

fn file_attr(a: &Attr, uid: u32, gid: u32) -> FileAttr {
    let (kind, perm, nlink) = if a.is_dir {
        (FileType::Directory, 0o755, 2 + a.subdirs)
    } else {
        (FileType::RegularFile, 0o644, 1)
    };
    FileAttr {
        ino: INodeNo(a.id),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind,
        perm,
        nlink,
        uid,
        gid,
        rdev: 0,
        blksize: 128 * 1024,
        flags: 0,
    }
}

fn errno_of(e: &io::Error) -> Errno {
    if let Some(code) = e.raw_os_error() {
        return Errno::from_i32(code);
    }
    match e.kind() {
        io::ErrorKind::NotFound => Errno::ENOENT,
        io::ErrorKind::StorageFull => Errno::ENOSPC,
        io::ErrorKind::InvalidInput => Errno::EINVAL,
        _ => Errno::EIO,
    }
}

/// A name from the kernel as the draft keeps it: itself when UTF-8, else
/// its lossless `\xHH` escape (the form the read-only mount shows such
/// names in; publishing writes the raw bytes back). Never fails today; kept
/// fallible for names the draft cannot hold.
fn name_str(name: &OsStr) -> Result<std::borrow::Cow<'_, str>, Errno> {
    Ok(match name.to_str() {
        Some(s) => s.into(),
        None => crate::metainfo::sanitize::escape(name.as_encoded_bytes()).into(),
    })
}

fn time_of(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for WritableFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.draft.lookup(parent.0, &name) {
            Ok(a) => reply.entry(&TTL, &self.fattr(&a), Generation(0)),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.draft.attr(ino.0) {
            Ok(a) => reply.attr(&TTL, &self.fattr(&a)),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let draft = self.draft.clone();
        let (uid, gid) = (self.uid, self.gid);
        self.rt.spawn(async move {
            let r = async {
                if let Some(s) = size {
                    draft.set_size(ino.0, s).await?;
                }
                match mtime {
                    Some(t) => draft.set_mtime(ino.0, time_of(t)),
                    None => draft.attr(ino.0),
                }
            }
            .await;
            match r {
                Ok(a) => reply.attr(&TTL, &file_attr(&a, uid, gid)),
                Err(e) => reply.error(errno_of(&e)),
            }
        });
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.draft.mkdir(parent.0, &name) {
            Ok(a) => reply.entry(&TTL, &self.fattr(&a), Generation(0)),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self.draft.create_file(parent.0, &name, true) {
            Ok(a) => reply.entry(&TTL, &self.fattr(&a), Generation(0)),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_str(name) {
            Ok(n) => n,
            Err(e) => return reply.error(e),
        };
        match self
            .draft
            .create_file(parent.0, &name, flags & libc::O_EXCL != 0)
        {
            Ok(a) => reply.created(
                &TTL,
                &self.fattr(&a),
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let a = match self.draft.attr(ino.0) {
            Ok(a) => a,
            Err(e) => return reply.error(errno_of(&e)),
        };
        if a.is_dir {
            return reply.error(Errno::EISDIR);
        }
        let writing = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
        if writing && flags.0 & libc::O_TRUNC != 0 {
            let draft = self.draft.clone();
            self.rt.spawn(async move {
                match draft.set_size(ino.0, 0).await {
                    Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
                    Err(e) => reply.error(errno_of(&e)),
                }
            });
            return;
        }
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let draft = self.draft.clone();
        self.rt.spawn(async move {
            match draft.read(ino.0, offset, size as usize).await {
                Ok(d) => reply.data(&d),
                Err(e) => {
                    tracing::warn!("read of inode {} at {offset}: {e}", ino.0);
                    reply.error(errno_of(&e))
                }
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let draft = self.draft.clone();
        let data = data.to_vec();
        self.rt.spawn(async move {
            match draft.write(ino.0, offset, &data).await {
                Ok(n) => reply.written(n as u32),
                Err(e) => {
                    tracing::warn!("write of inode {} at {offset}: {e}", ino.0);
                    reply.error(errno_of(&e))
                }
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.draft.fsync(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno_of(&e)),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok(); // the journal is synced on every change
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r =
            name_str(name).and_then(|n| self.draft.unlink(parent.0, &n).map_err(|e| errno_of(&e)));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r =
            name_str(name).and_then(|n| self.draft.rmdir(parent.0, &n).map_err(|e| errno_of(&e)));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return reply.error(Errno::EINVAL);
        }
        let r = (|| {
            let (a, b) = (name_str(name)?, name_str(newname)?);
            self.draft
                .rename(
                    parent.0,
                    &a,
                    newparent.0,
                    &b,
                    flags.contains(RenameFlags::RENAME_NOREPLACE),
                )
                .map_err(|e| errno_of(&e))
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.draft.attr(ino.0) {
            Ok(a) if a.is_dir => reply.opened(FileHandle(0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno_of(&e)),
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
        let children = match self.draft.children(ino.0) {
            Ok(c) => c,
            Err(e) => return reply.error(errno_of(&e)),
        };
        let parent = self.draft.parent(ino.0).unwrap_or(ino.0);
        let dots = [
            (ino.0, FileType::Directory, ".".to_string()),
            (parent, FileType::Directory, "..".to_string()),
        ];
        let entries = dots.into_iter().chain(children.into_iter().map(|(n, a)| {
            let kind = if a.is_dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            (a.id, kind, n)
        }));
        for (i, (id, kind, name)) in entries.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(id), i as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        reply.error(Errno::NO_XATTR); // BEP 3 has no extended attributes
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, size: u32, reply: fuser::ReplyXattr) {
        if size == 0 {
            reply.size(0)
        } else {
            reply.data(&[])
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOTSUP);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (files, _) = self.draft.usage();
        match nix::sys::statvfs::statvfs(self.draft.dir()) {
            Ok(st) => reply.statfs(
                st.blocks(),
                st.blocks_free(),
                st.blocks_available(),
                files,
                st.files_free(),
                st.block_size() as u32,
                255,
                st.fragment_size() as u32,
            ),
            Err(_) => alike::reply_statfs(reply, 0, files),
        }
    }

    alike::ioctl_not_a_terminal!();
}

/// Mount options of a writable mount: read-write, named `btfs-mount`.
pub fn mount_config() -> fuser::Config {
    crate::fuse::config_with(MountOption::RW)
}

/// Mounts `draft` read-write at `mountpoint` (see [`Mount::spawn`]).
pub fn spawn_mount(
    draft: Arc<Draft>,
    mountpoint: &Path,
    rt: tokio::runtime::Handle,
) -> io::Result<Mount> {
    Mount::spawn(WritableFs::new(draft, rt), mountpoint, &mount_config())
}
