//! Turning a draft into a torrent: its final tree as the [`Content`] to
//! hash, and the bookkeeping after it was published.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use super::tree::{Data, Kind};
use super::{Draft, ROOT};
use crate::create::{Content, Source, SourceFile};
use crate::storage::Storage;

impl Draft {
    /// The final tree as the [`Content`] of a new torrent. Layout: when the
    /// root holds exactly one directory, the torrent is named after it and
    /// holds its files (so a draft started from a multi-file torrent keeps
    /// its shape); exactly one file gives a single-file torrent; otherwise
    /// the torrent is named [`crate::staging::DraftMeta::name`] and holds the root's
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
