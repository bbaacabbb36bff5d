//! Node-level edits of a draft, by node id: what the FUSE adapter
//! ([`crate::fuse_writable`]) calls. Shape changes are journalled before
//! they return; file bytes are staged copy-on-write.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::SystemTime;

use super::journal::Op;
use super::tree::{Data, Kind, check_name};
use super::{Attr, COPY_CHUNK, Draft, errno};

impl Draft {
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
}
