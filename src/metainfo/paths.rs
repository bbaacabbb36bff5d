//! The paths of a multi-file torrent's files: duplicates renamed (as
//! libtorrent does) and symlink targets settled inside the torrent.

use std::collections::HashMap;

use super::{FileEntry, MAX_RENAME_PROBES, MetainfoError, sanitize};

/// The names of a multi-file torrent as a tree, for de-duplication and for
/// resolving symlink targets without hashing whole paths.
pub(super) struct Tree {
    /// (parent node, name) -> node. Node 0 is the directory that holds the
    /// torrent root; directories, files and symlinks all have nodes.
    children: HashMap<(usize, String), usize>,
    /// For each node, the index in `files` of the symlink it is, if any.
    link_of: Vec<Option<usize>>,
}

impl Tree {
    fn node(&mut self, parent: usize, name: String, link: Option<usize>) -> usize {
        let id = self.link_of.len();
        self.link_of.push(link);
        self.children.insert((parent, name), id);
        id
    }

    /// Finds `path` (components from node 0), following symlinks met on the
    /// way as directories. `budget` bounds the links followed in total.
    fn lookup(&self, path: &[String], files: &[FileEntry], budget: &mut u32) -> Option<usize> {
        let mut node = 0;
        for (i, comp) in path.iter().enumerate() {
            node = *self.children.get(&(node, comp.clone()))?;
            if let Some(link) = self.link_of[node] {
                if i + 1 < path.len() {
                    *budget = budget.checked_sub(1)?;
                    let target = files[link].symlink.as_ref()?;
                    node = self.lookup(target, files, budget)?;
                }
            }
        }
        Some(node)
    }
}

/// Renames later entries whose path is already taken by a file, a symlink
/// or a directory (pad files are skipped). Case-sensitive. Bounded by
/// [`MAX_RENAME_PROBES`] candidate names in total. Returns the name tree.
pub(super) fn dedup(files: &mut [FileEntry]) -> Result<Tree, MetainfoError> {
    let mut tree = Tree {
        children: HashMap::new(),
        link_of: vec![None],
    };
    // every directory first, so a file never takes a directory's name
    let mut parents = Vec::with_capacity(files.len());
    for f in files.iter() {
        let mut parent = 0;
        if !f.pad {
            for comp in &f.path[..f.path.len() - 1] {
                parent = match tree.children.get(&(parent, comp.clone())) {
                    Some(&id) => id,
                    None => tree.node(parent, comp.clone(), None),
                };
            }
        }
        parents.push(parent);
    }
    let mut probes = 0u32;
    for (i, (f, &parent)) in files.iter_mut().zip(&parents).enumerate() {
        if f.pad {
            continue;
        }
        let leaf = f.path.last().expect("paths are never empty").clone();
        let mut candidate = leaf.clone();
        let mut n = 0u32;
        while tree.children.contains_key(&(parent, candidate.clone())) {
            probes += 1;
            if probes > MAX_RENAME_PROBES {
                return Err(MetainfoError::TooManyDuplicates(MAX_RENAME_PROBES));
            }
            n += 1;
            candidate = sanitize::with_counter(&leaf, n);
        }
        tree.node(parent, candidate.clone(), f.symlink.is_some().then_some(i));
        *f.path.last_mut().expect("paths are never empty") = candidate;
    }
    Ok(tree)
}

/// Links followed in total while validating one symlink target.
const MAX_LINK_HOPS: u32 = 40;

/// Settles symlink targets like libtorrent: a target is read from the
/// torrent root; if nothing is there, it is read relative to the link's own
/// directory (older torrents); a target reached through other symlinks
/// counts. A target that names nothing in the torrent is replaced by the
/// link's own path (an inert self-loop), so every link stays inside.
/// Two passes, so a link may go through a link listed after it.
pub(super) fn settle_symlinks(files: &mut [FileEntry], tree: &Tree) {
    let links: Vec<usize> = (0..files.len())
        .filter(|&i| files[i].symlink.is_some())
        .collect();
    let mut unresolved = Vec::new();
    for pass in 0..2 {
        unresolved.clear();
        for &i in &links {
            let target = files[i].symlink.clone().expect("a symlink");
            let mut budget = MAX_LINK_HOPS;
            if tree.lookup(&target, files, &mut budget).is_some() {
                continue;
            }
            // relative to the link's directory: parent + target minus the name
            let mut relative = files[i].path[..files[i].path.len() - 1].to_vec();
            relative.extend_from_slice(&target[1..]);
            let mut budget = MAX_LINK_HOPS;
            if tree.lookup(&relative, files, &mut budget).is_some() {
                files[i].symlink = Some(relative);
                continue;
            }
            unresolved.push(i);
        }
        if pass == 0 && unresolved.is_empty() {
            break;
        }
    }
    for &i in &unresolved {
        files[i].symlink = Some(files[i].path.clone());
    }
}
