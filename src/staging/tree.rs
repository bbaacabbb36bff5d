//! The draft's tree in memory: nodes by id (stable for the draft's life,
//! used as inode numbers), where each file's bytes are, and the operations
//! the journal replays.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io;
use std::time::SystemTime;

use super::journal::Op;
use super::{Attr, ROOT, errno};
use crate::storage::DraftDir;

/// Where a file's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Data {
    /// Unchanged from the base torrent: absolute offset in its piece space.
    Base { offset: u64 },
    /// Staged in `data/<n>`.
    Staged(u64),
}

#[derive(Debug, Clone)]
pub(super) enum Kind {
    Dir(BTreeMap<String, u64>),
    File { data: Data, size: u64 },
}

#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) parent: u64,
    pub(super) name: String,
    pub(super) kind: Kind,
    pub(super) mtime: SystemTime,
    /// False once unlinked or replaced (open handles may still use it).
    pub(super) linked: bool,
}

/// The tree and its counters, under one lock.
pub(super) struct Tree {
    pub(super) nodes: HashMap<u64, Node>,
    pub(super) next_id: u64,
    pub(super) next_data: u64,
}

/// Splits a user path (`a/b/c`, leading and trailing `/` ignored) into
/// components. Errors: `.`/`..` or an empty path.
pub(super) fn split_path(path: &str) -> io::Result<Vec<String>> {
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

pub(super) fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(errno(libc::EINVAL));
    }
    if name.len() > 255 {
        return Err(errno(libc::ENAMETOOLONG));
    }
    Ok(())
}

impl Tree {
    pub(super) fn node(&self, id: u64) -> io::Result<&Node> {
        self.nodes.get(&id).ok_or_else(|| errno(libc::ENOENT))
    }

    pub(super) fn node_mut(&mut self, id: u64) -> io::Result<&mut Node> {
        self.nodes.get_mut(&id).ok_or_else(|| errno(libc::ENOENT))
    }

    pub(super) fn attr(&self, id: u64) -> io::Result<Attr> {
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

    pub(super) fn file(&self, id: u64) -> io::Result<(Data, u64)> {
        match self.node(id)?.kind {
            Kind::File { data, size } => Ok((data, size)),
            Kind::Dir(_) => Err(errno(libc::EISDIR)),
        }
    }

    pub(super) fn set_file(&mut self, id: u64, data: Data, size: u64) {
        if let Some(n) = self.nodes.get_mut(&id) {
            n.kind = Kind::File { data, size };
            n.mtime = SystemTime::now();
        }
    }

    pub(super) fn child(&self, dir: u64, name: &str) -> io::Result<Option<u64>> {
        match &self.node(dir)?.kind {
            Kind::Dir(ch) => Ok(ch.get(name).copied()),
            Kind::File { .. } => Err(errno(libc::ENOTDIR)),
        }
    }

    /// Path components of `id` from the root.
    pub(super) fn path(&self, mut id: u64) -> io::Result<Vec<String>> {
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

    pub(super) fn reachable(&self, id: u64) -> bool {
        self.path(id).is_ok()
    }

    pub(super) fn add(&mut self, parent: u64, name: &str, kind: Kind, mtime: SystemTime) -> u64 {
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
    pub(super) fn detach(&mut self, id: u64) {
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

    pub(super) fn check_rename(
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

    pub(super) fn do_rename(&mut self, id: u64, new_parent: u64, new_name: &str) {
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

    pub(super) fn resolve(&self, path: &[String]) -> io::Result<u64> {
        let mut id = ROOT;
        for c in path {
            id = self.child(id, c)?.ok_or_else(|| errno(libc::ENOENT))?;
        }
        Ok(id)
    }

    pub(super) fn split<'a>(&self, path: &'a [String]) -> io::Result<(u64, &'a str)> {
        let (name, dir) = path.split_last().ok_or_else(|| errno(libc::EINVAL))?;
        Ok((self.resolve(dir)?, name))
    }

    /// Applies a journal operation during replay.
    pub(super) fn apply(&mut self, op: &Op, dir: &DraftDir, now: SystemTime) -> io::Result<()> {
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
    pub(super) fn collect(
        &self,
        id: u64,
        prefix: &mut Vec<String>,
        out: &mut Vec<(Vec<String>, u64, Data)>,
    ) {
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
