//! The BEP 52 `file tree`: read for v2-only torrents (it is their file
//! list), and for hybrids checked against the v1 `files` list (libtorrent
//! refuses hybrids whose two descriptions disagree, and so do we: a client
//! that trusted only one half would accept metadata that other peers see
//! differently).
//!
//! The piece space of a v2 torrent (BEP 52, "piece length"): files in tree
//! order, each non-empty file starting on a piece boundary. For v2-only
//! torrents the gaps are listed as pad entries `<name>/.pad/<length>`, as a
//! hybrid's v1 part lists them and as libtorrent lays v2 torrents out: a pad
//! after every non-empty file that does not end on a piece boundary, the
//! last one included, except in a single-file torrent. libtorrent 2.0.8
//! requests the alignment gap after a file's end as part of its last piece
//! (zeros), so the gap belongs to the piece space.

use super::{
    Attr, Entry, MAX_FILE_LENGTH, MAX_PATH_DEPTH, MetainfoError, field_err, sanitize, type_name,
};
use crate::bencode::Value;
use crate::merkle::Hash;

/// One file of a `file tree`, in tree order (canonical, hence sorted).
#[derive(Debug)]
pub(super) struct V2File {
    /// Sanitized path components under the torrent root (the tree keys),
    /// made with [`sanitize::path`] like a v1 `path`.
    pub path: Vec<String>,
    /// File size in bytes (0 for a symlink, whatever `length` says).
    pub length: u64,
    /// Sanitized symlink target (components under the torrent root).
    pub symlink: Option<Vec<String>>,
    /// `pieces root`: present exactly for non-empty regular files.
    pub pieces_root: Option<Hash>,
    /// `attr` flags `x` and `h`.
    pub attr: Attr,
}

/// A walked `file tree`.
pub(super) struct Tree {
    pub files: Vec<V2File>,
    /// The raw key of the one top-level entry, when that entry is a file:
    /// a single-file torrent (BEP 52, "interpreting paths").
    pub single_file_key: Option<Vec<u8>>,
}

/// Walks the `file tree` (BEP 52: directories are dictionaries keyed by
/// name; a file is a dictionary whose only key is the empty string, holding
/// `length`, `pieces root`, optional `attr` and `symlink path`).
///
/// Errors, all naming `file tree`: a node that is not a dictionary, an empty
/// name outside a leaf, a pad file (`attr` with `p`, not allowed in v2), a
/// bad `length`, a missing or all-zero `pieces root` on a non-empty file,
/// a root that is itself a file, deeper than [`MAX_PATH_DEPTH`], no files.
pub(super) fn files(tree: &Value<'_>) -> Result<Tree, MetainfoError> {
    let mut out = Vec::new();
    let mut prefix = Vec::new();
    walk(tree, &mut prefix, &mut out)?;
    if out.is_empty() {
        return Err(field_err("file tree", "holds no files"));
    }
    let single_file_key = match tree.as_dict() {
        Some([(key, child)]) if is_leaf(child) => Some(key.to_vec()),
        _ => None,
    };
    Ok(Tree {
        files: out,
        single_file_key,
    })
}

fn is_leaf(node: &Value<'_>) -> bool {
    matches!(node.as_dict(), Some([(k, _)]) if k.is_empty())
}

fn walk<'a>(
    node: &Value<'a>,
    prefix: &mut Vec<&'a [u8]>,
    out: &mut Vec<V2File>,
) -> Result<(), MetainfoError> {
    if prefix.len() >= MAX_PATH_DEPTH {
        return Err(field_err(
            "file tree",
            format!("is nested deeper than {MAX_PATH_DEPTH} directories"),
        ));
    }
    let Some(dict) = node.as_dict() else {
        return Err(field_err(
            "file tree",
            format!(
                "has a directory that is {}, not a dictionary",
                type_name(node)
            ),
        ));
    };
    for (key, child) in dict {
        if key.is_empty() {
            return Err(field_err(
                "file tree",
                "has an empty file name outside a file entry",
            ));
        }
        if child.as_dict().is_none() {
            return Err(field_err(
                "file tree",
                format!(
                    "entry '{}' is {}, not a dictionary",
                    sanitize::filter(key),
                    type_name(child)
                ),
            ));
        }
        prefix.push(key);
        if is_leaf(child) {
            let (_, leaf_v) = &child.as_dict().expect("checked")[0];
            out.push(leaf(leaf_v, sanitize::path(prefix.iter().copied()))?);
        } else {
            walk(child, prefix, out)?;
        }
        prefix.pop();
    }
    Ok(())
}

fn leaf(v: &Value<'_>, path: Vec<String>) -> Result<V2File, MetainfoError> {
    let shown = path.join("/");
    if v.as_dict().is_none() {
        return Err(field_err(
            "file tree",
            format!("file '{shown}' is {}, not a dictionary", type_name(v)),
        ));
    }
    let attr_raw = v.get(b"attr").and_then(Value::as_bytes).unwrap_or(b"");
    if attr_raw.contains(&b'p') {
        return Err(field_err(
            "file tree",
            format!("file '{shown}' has the pad attribute, which BEP 52 does not allow"),
        ));
    }
    let length = match v.get(b"length").map(|l| (l, l.as_int())) {
        Some((_, Some(n))) if n >= 0 && (n as u64) <= MAX_FILE_LENGTH => n as u64,
        Some((_, Some(n))) => {
            return Err(field_err(
                "file tree",
                format!("file '{shown}' has an invalid length {n}"),
            ));
        }
        Some((l, None)) => {
            return Err(field_err(
                "file tree",
                format!("file '{shown}' has a length that is {}", type_name(l)),
            ));
        }
        None => {
            return Err(field_err(
                "file tree",
                format!("file '{shown}' has no length"),
            ));
        }
    };
    let symlink = if attr_raw.contains(&b'l') {
        match v.get(b"symlink path").and_then(Value::as_list) {
            Some(list) if list.len() <= MAX_PATH_DEPTH => {
                let mut target = Vec::new();
                for e in list {
                    let b = e.as_bytes().ok_or_else(|| {
                        field_err(
                            "file tree",
                            format!("file '{shown}' has a non-string symlink path element"),
                        )
                    })?;
                    target.extend(sanitize::component(b));
                }
                Some(target)
            }
            Some(_) => {
                return Err(field_err(
                    "file tree",
                    format!(
                        "file '{shown}' has a symlink path of more than {MAX_PATH_DEPTH} elements"
                    ),
                ));
            }
            None => {
                return Err(field_err(
                    "file tree",
                    format!("file '{shown}' is a symlink without `symlink path`"),
                ));
            }
        }
    } else {
        None
    };
    let mut pieces_root = None;
    if symlink.is_none() && length > 0 {
        match v.get(b"pieces root").and_then(Value::as_bytes) {
            Some(root) if root.len() == 32 && root.iter().any(|&b| b != 0) => {
                pieces_root = Some(root.try_into().expect("32 bytes"));
            }
            _ => {
                return Err(field_err(
                    "file tree",
                    format!("file '{shown}' has no valid `pieces root` (32 non-zero bytes)"),
                ));
            }
        }
    }
    Ok(V2File {
        path,
        length: if symlink.is_some() { 0 } else { length },
        symlink,
        pieces_root,
        attr: Attr {
            pad: false,
            symlink: attr_raw.contains(&b'l'),
            executable: attr_raw.contains(&b'x'),
            hidden: attr_raw.contains(&b'h'),
        },
    })
}

/// The entries of a v2-only torrent in tree order, with pad entries
/// `.pad/<length>` after each non-empty file that does not end on a piece
/// boundary (none in a single-file torrent). Returns them and the total
/// length of the piece space.
///
/// `single_file`: the one file is the torrent itself (its path is the
/// torrent name, so its relative path is empty, like a v1 `length`).
///
/// Errors: sizes that overflow the piece space (`file tree`).
pub(super) fn layout(
    files: Vec<V2File>,
    piece_length: u64,
    single_file: bool,
) -> Result<(Vec<Entry>, u64), MetainfoError> {
    let mut entries = Vec::with_capacity(files.len() * 2);
    let mut offset: u64 = 0;
    let overflow = || field_err("file tree", "lengths add up to more than 2^64 bytes");
    for f in files {
        let length = f.length;
        entries.push(Entry {
            rel: if single_file { Vec::new() } else { f.path },
            length,
            offset,
            attr: f.attr,
            symlink: f.symlink,
            pieces_root: f.pieces_root,
        });
        if length == 0 {
            continue;
        }
        offset = offset.checked_add(length).ok_or_else(overflow)?;
        let gap = offset.next_multiple_of(piece_length) - offset;
        if gap > 0 && !single_file {
            entries.push(Entry {
                rel: vec![".pad".to_string(), gap.to_string()],
                length: gap,
                offset,
                attr: Attr {
                    pad: true,
                    ..Attr::default()
                },
                symlink: None,
                pieces_root: None,
            });
            offset = offset.checked_add(gap).ok_or_else(overflow)?;
        }
    }
    Ok((entries, offset))
}

/// Checks a hybrid's v1 entries against its `file tree`: the same non-pad
/// files, in the same order, with the same paths, sizes and symlink targets,
/// each non-empty file starting on the piece boundary BEP 52 puts it on,
/// and no v1 bytes beyond the last file's padded end. Then gives each v1
/// entry its `pieces root`.
pub(super) fn check_hybrid(
    v1: &mut [Entry],
    v2: &[V2File],
    multi_file: bool,
    name: &str,
    piece_length: u64,
    total: u64,
) -> Result<(), MetainfoError> {
    let mismatch = |m: String| Err(MetainfoError::V1V2Mismatch(m));
    let real = v1.iter().filter(|e| !e.attr.pad).count();
    if real != v2.len() {
        return mismatch(format!(
            "{real} files in `files`, {} in `file tree`",
            v2.len()
        ));
    }
    let mut v2_offset: u64 = 0;
    for (e, f) in v1.iter_mut().filter(|e| !e.attr.pad).zip(v2) {
        let v1_path: Vec<String> = if multi_file {
            e.rel.clone()
        } else {
            vec![name.to_string()]
        };
        let shown = f.path.join("/");
        if v1_path != f.path {
            return mismatch(format!(
                "file '{}' in `files` is '{shown}' in `file tree`",
                v1_path.join("/")
            ));
        }
        if e.length != f.length {
            return mismatch(format!(
                "file '{shown}' is {} bytes in `files`, {} in `file tree`",
                e.length, f.length
            ));
        }
        if e.symlink != f.symlink {
            return mismatch(format!("file '{shown}' has different symlink targets"));
        }
        if f.length > 0 {
            if e.offset != v2_offset {
                return mismatch(format!(
                    "file '{shown}' starts at byte {} in `files`, but v2 aligns it to {v2_offset}",
                    e.offset
                ));
            }
            v2_offset = v2_offset
                .checked_add(f.length)
                .and_then(|end| end.div_ceil(piece_length).checked_mul(piece_length))
                .ok_or_else(|| field_err("file tree", "lengths overflow"))?;
        }
        e.pieces_root = f.pieces_root;
    }
    if total > v2_offset {
        return mismatch(format!(
            "`files` holds {total} bytes, more than the {v2_offset} the `file tree` needs"
        ));
    }
    Ok(())
}
