//! Path-level edits of a draft (`a/b/c`): the library API.

use std::io;

use super::tree::split_path;
use super::{Draft, ROOT, errno};

impl Draft {
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
}
