//! The BEP 52 `file tree` of a hybrid torrent, read only to check that it
//! agrees with the v1 `files` list (libtorrent refuses hybrids whose two
//! descriptions disagree, and so do we: a client that trusted only the v1
//! half would accept metadata that v2 peers see differently).

use super::{MAX_FILE_LENGTH, MAX_PATH_DEPTH, MetainfoError, field_err, sanitize, type_name};
use crate::bencode::Value;

/// One file of a `file tree`, in tree order (canonical, hence sorted).
#[derive(Debug)]
pub(super) struct V2File {
    /// Sanitized path components under the torrent root (the tree keys).
    pub path: Vec<String>,
    /// File size in bytes.
    pub length: u64,
    /// Sanitized symlink target (components under the torrent root).
    pub symlink: Option<Vec<String>>,
}

/// Walks the `file tree` (BEP 52: directories are dictionaries keyed by
/// name; a file is a dictionary whose only key is the empty string, holding
/// `length`, `pieces root`, optional `attr` and `symlink path`).
///
/// Errors, all naming `file tree`: a node that is not a dictionary, an empty
/// name outside a leaf, a pad file (`attr` with `p`, not allowed in v2), a
/// bad `length`, a missing or all-zero `pieces root` on a non-empty file,
/// deeper than [`MAX_PATH_DEPTH`].
pub(super) fn files(tree: &Value<'_>) -> Result<Vec<V2File>, MetainfoError> {
    let mut out = Vec::new();
    let mut prefix = Vec::new();
    walk(tree, &mut prefix, &mut out)?;
    if out.is_empty() {
        return Err(field_err("file tree", "holds no files"));
    }
    Ok(out)
}

fn walk(
    node: &Value<'_>,
    prefix: &mut Vec<String>,
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
        let Some(child_dict) = child.as_dict() else {
            return Err(field_err(
                "file tree",
                format!(
                    "entry '{}' is {}, not a dictionary",
                    sanitize::filter(key),
                    type_name(child)
                ),
            ));
        };
        let comp = sanitize::component(key);
        let pushed = comp.is_some();
        if let Some(c) = comp {
            prefix.push(c);
        }
        let is_leaf = child_dict.len() == 1 && child_dict[0].0.is_empty();
        if is_leaf {
            out.push(leaf(&child_dict[0].1, prefix)?);
        } else {
            walk(child, prefix, out)?;
        }
        if pushed {
            prefix.pop();
        }
    }
    Ok(())
}

fn leaf(v: &Value<'_>, path: &[String]) -> Result<V2File, MetainfoError> {
    let shown = path.join("/");
    if v.as_dict().is_none() {
        return Err(field_err(
            "file tree",
            format!("file '{shown}' is {}, not a dictionary", type_name(v)),
        ));
    }
    let attr = v.get(b"attr").and_then(Value::as_bytes).unwrap_or(b"");
    if attr.contains(&b'p') {
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
    let symlink = if attr.contains(&b'l') {
        match v.get(b"symlink path").and_then(Value::as_list) {
            Some(list) => {
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
    if symlink.is_none() && length > 0 {
        match v.get(b"pieces root").and_then(Value::as_bytes) {
            Some(root) if root.len() == 32 && root.iter().any(|&b| b != 0) => {}
            _ => {
                return Err(field_err(
                    "file tree",
                    format!("file '{shown}' has no valid `pieces root` (32 non-zero bytes)"),
                ));
            }
        }
    }
    Ok(V2File {
        path: path.to_vec(),
        length,
        symlink,
    })
}
