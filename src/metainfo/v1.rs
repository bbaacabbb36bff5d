//! The BEP 3 half of an info dictionary: `length` or `files` (with BEP 47
//! `attr`, pad files and symlinks) and the SHA-1 `pieces`.

use super::{
    Attr, Entry, MAX_FILE_LENGTH, MAX_PATH_DEPTH, MetainfoError, field_err, sanitize, type_name,
};
use crate::bencode::Value;

fn attr_of(file: &Value<'_>) -> Attr {
    let a = file.get(b"attr").and_then(Value::as_bytes).unwrap_or(b"");
    Attr {
        pad: a.contains(&b'p'),
        symlink: a.contains(&b'l'),
        executable: a.contains(&b'x'),
        hidden: a.contains(&b'h'),
    }
}

/// Reads a length field: a non-negative integer of at most
/// [`MAX_FILE_LENGTH`] bytes.
fn length_of(v: Option<&Value<'_>>, field: &str) -> Result<u64, MetainfoError> {
    let v = v.ok_or_else(|| field_err(field, "is missing"))?;
    let n = v
        .as_int()
        .ok_or_else(|| field_err(field, format!("must be an integer, got {}", type_name(v))))?;
    if n < 0 {
        return Err(field_err(field, format!("must not be negative, got {n}")));
    }
    if n as u64 > MAX_FILE_LENGTH {
        return Err(field_err(
            field,
            format!("is {n} bytes, more than the limit of {MAX_FILE_LENGTH} bytes per file"),
        ));
    }
    Ok(n as u64)
}

/// Reads a list of path elements (`path`, `symlink path`): at most
/// [`MAX_PATH_DEPTH`] byte strings.
fn elements<'a>(v: &Value<'a>, field: &str) -> Result<Vec<&'a [u8]>, MetainfoError> {
    let list = v
        .as_list()
        .ok_or_else(|| field_err(field, format!("must be a list, got {}", type_name(v))))?;
    if list.len() > MAX_PATH_DEPTH {
        return Err(field_err(
            field,
            format!(
                "has {} elements, more than the limit of {MAX_PATH_DEPTH}",
                list.len()
            ),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, e)| {
            e.as_bytes().ok_or_else(|| {
                field_err(
                    field,
                    format!("element {i} must be a byte string, got {}", type_name(e)),
                )
            })
        })
        .collect()
}

/// The v1 entries (`files`, or `length` for a single file) with their
/// offsets in the piece space, and the total length.
pub(super) fn entries(
    info: &Value<'_>,
    files_v: Option<&Value<'_>>,
) -> Result<(Vec<Entry>, u64), MetainfoError> {
    let mut entries = match files_v {
        Some(fv) => multi_file_entries(fv)?,
        None => {
            let attr = attr_of(info);
            vec![Entry {
                rel: Vec::new(),
                length: length_of(info.get(b"length"), "length")?,
                offset: 0,
                attr: Attr {
                    pad: false,
                    symlink: false,
                    ..attr
                },
                symlink: None,
                pieces_root: None,
            }]
        }
    };
    let mut total: u64 = 0;
    for e in &mut entries {
        e.offset = total;
        total = total
            .checked_add(e.length)
            .ok_or_else(|| field_err("files", "lengths add up to more than 2^64 bytes"))?;
    }
    Ok((entries, total))
}

/// The v1 `pieces`: `num_pieces` SHA-1 hashes (count already bounded by
/// [`MAX_PIECES`]).
pub(super) fn pieces(
    info: &Value<'_>,
    total: u64,
    piece_length: u64,
    num_pieces: u64,
) -> Result<Vec<[u8; 20]>, MetainfoError> {
    let pieces_v = info
        .get(b"pieces")
        .ok_or_else(|| field_err("pieces", "is missing"))?;
    let pieces_raw = pieces_v.as_bytes().ok_or_else(|| {
        field_err(
            "pieces",
            format!("must be a byte string, got {}", type_name(pieces_v)),
        )
    })?;
    if pieces_raw.len() % 20 != 0 {
        return Err(field_err(
            "pieces",
            format!("is {} bytes, not a multiple of 20", pieces_raw.len()),
        ));
    }
    if (pieces_raw.len() / 20) as u64 != num_pieces {
        return Err(field_err(
            "pieces",
            format!(
                "holds {} hashes, but {total} bytes in pieces of {piece_length} bytes need {num_pieces}",
                pieces_raw.len() / 20
            ),
        ));
    }
    Ok(pieces_raw
        .chunks_exact(20)
        .map(|c| c.try_into().expect("chunks of 20"))
        .collect())
}

/// Reads a `files` list into entries (relative paths, no offsets yet).
fn multi_file_entries(fv: &Value<'_>) -> Result<Vec<Entry>, MetainfoError> {
    let list = fv
        .as_list()
        .ok_or_else(|| field_err("files", format!("must be a list, got {}", type_name(fv))))?;
    if list.is_empty() {
        return Err(field_err("files", "is empty: no files in the torrent"));
    }
    let mut entries = Vec::with_capacity(list.len());
    for (i, f) in list.iter().enumerate() {
        let field = |k: &str| format!("files[{i}].{k}");
        if f.as_dict().is_none() {
            return Err(field_err(
                format!("files[{i}]"),
                format!("must be a dictionary, got {}", type_name(f)),
            ));
        }
        let mut attr = attr_of(f);
        let path_v = f
            .get(b"path.utf-8")
            .filter(|v| v.as_list().is_some())
            .or_else(|| f.get(b"path"));
        let raw_path = match path_v {
            Some(pv) => elements(pv, &field("path"))?,
            None => Vec::new(),
        };
        // symlinks take no room in the piece space; `length` is optional
        let symlink_v = if attr.symlink && !attr.pad {
            f.get(b"symlink path")
        } else {
            None
        };
        let length = if attr.symlink && !attr.pad {
            0
        } else {
            length_of(f.get(b"length"), &field("length"))?
        };
        let symlink = match symlink_v {
            Some(sv) => Some(
                elements(sv, &field("symlink path"))?
                    .into_iter()
                    .filter_map(sanitize::component)
                    .collect::<Vec<_>>(),
            ),
            None => None,
        };
        attr.symlink = symlink.is_some();
        let rel = if !raw_path.is_empty() {
            sanitize::path(raw_path)
        } else if attr.pad {
            vec![".pad".to_string(), length.to_string()]
        } else {
            return Err(field_err(
                field("path"),
                "is missing or empty (only pad files may omit it)",
            ));
        };
        if rel.iter().any(|c| c.contains("_____padding_file_")) {
            attr.pad = true;
        }
        let symlink = if attr.pad { None } else { symlink };
        entries.push(Entry {
            rel,
            length,
            offset: 0,
            attr,
            symlink,
            pieces_root: None,
        });
    }
    Ok(entries)
}
