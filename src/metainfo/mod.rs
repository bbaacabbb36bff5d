//! Info dictionaries: BEP 3 (single- and multi-file), BEP 47 (pad files and
//! the `attr` flags `p`, `l`, `x`, `h`, `symlink path`) and BEP 52 (v2-only
//! and hybrid v1+v2 torrents; [`piece_layers`] reads the `piece layers` of a
//! .torrent, [`build_v2`] makes v2 and hybrid torrents).
//!
//! [`Info::from_bytes`] takes the raw info dictionary, exactly what BEP 9
//! delivers, and returns the file layout with every path sanitized. The
//! expected behaviour on libtorrent's test torrents is recorded in
//! `shared/torrents/EXPECTATIONS.md` and checked by `tests/conformance.rs`.
//!
//! Rules, in the order they are applied:
//! 1. The info-hashes are of the bytes as given, never a re-encoding: SHA-1
//!    (v1), and SHA-256 when `meta version` is 2 ([`Info::info_hash_v2`]).
//! 2. Decoding is lenient (unsorted keys are fine, the first of duplicate
//!    keys wins) and bounded: nesting depth 100, 3,000,000 tokens. When
//!    `meta version` is present the dictionary must be canonical bencoding
//!    (BEP 52); a version above 2 is refused.
//! 3. `meta version` 2 without `pieces` is a v2-only torrent
//!    ([`MetaVersion::V2`]): its files come from the `file tree`, in tree
//!    order, each non-empty file starting on a piece boundary, the gaps
//!    after files listed as pad entries `<name>/.pad/<length>`, as
//!    libtorrent lists them (the last file's too, except in a single-file
//!    torrent). Its [`Info::info_hash`] is the v2 info-hash truncated to 20
//!    bytes, the one peers and the DHT use. A tree holding one file at its
//!    top is a single-file torrent named after that file (as libtorrent
//!    names it). With `pieces` it is a hybrid ([`MetaVersion::Hybrid`]):
//!    loaded through its v1 keys, after checking that the `file tree`
//!    describes the same files at the same piece-aligned offsets; each file
//!    then also gets its `pieces root`.
//! 4. `name.utf-8` is preferred over `name`, `path.utf-8` over `path`.
//! 5. Limits, checked before anything is allocated per piece or per file:
//!    `piece length` in 1..=536 854 528 bytes ([`MAX_PIECE_LENGTH`], as
//!    libtorrent; with `meta
//!    version` 2 a power of two of at least 16 KiB), at most [`MAX_PIECES`] pieces, at
//!    most [`MAX_PATH_DEPTH`] elements in a path, each file at most
//!    [`MAX_FILE_LENGTH`] bytes, sizes summed with overflow checks.
//! 6. Paths are sanitized one element at a time by [`sanitize::component`]
//!    (current libtorrent's rewrite for valid UTF-8; an element that is not
//!    UTF-8 is shown in a lossless `\xHH` escape, see [`sanitize`]). A single-file torrent whose name is
//!    empty after sanitizing is refused; a multi-file one is named after its
//!    hex info-hash.
//! 7. Pad files (`attr` containing `p`, or a path element containing
//!    `_____padding_file_`) are flagged [`FileEntry::pad`]; they may lack a
//!    `path` (then they get `<name>/.pad/<length>`, libtorrent says
//!    `.pad/<length>`). In a hybrid every pad file is named
//!    `<name>/.pad/<length>` (BEP 52; as libtorrent shows them). They take
//!    space in the piece layout and belong to no namespace: they are not
//!    de-duplicated and must not be shown.
//! 8. Symlinks (`attr` containing `l` with a `symlink path`) have size 0.
//!    Their target is sanitized with the same function and rooted at the
//!    directory holding the torrent root (it starts with the torrent name).
//!    As in libtorrent, a target that names nothing in the torrent is tried
//!    relative to the link's directory, may go through other symlinks, and
//!    otherwise is replaced by the link's own path (an inert loop): a target
//!    can never point outside the torrent. A symlink without `symlink path`
//!    becomes an empty regular file (as in libtorrent). In a single-file
//!    torrent `l` and `p` are ignored.
//! 9. After sanitizing, no two entries share a path and no file has the path
//!    of a directory: later entries are renamed `bar.1.txt`, `bar.2.txt`, ...
//!    Names are compared **case-sensitively** (Linux file systems are; a
//!    torrent with `A.txt` and `a.txt` keeps both). The total number of
//!    names tried is bounded by [`MAX_RENAME_PROBES`]; beyond it the torrent
//!    is refused, as current libtorrent refuses `duplicate_files2`.

pub mod build_v2;
pub mod encode;
mod paths;
pub mod piece_layers;
pub mod sanitize;
mod v1;
mod v2;

use std::ops::Range;

pub use build_v2::{BuildV2Error, BuiltV2, Flavor, V2Source, build_v2};
pub use encode::{build_info, choose_piece_length};
pub use piece_layers::PieceLayers;

use crate::bencode::{self, Kind, Limits, Value};
use crate::hash::{InfoHash, InfoHashV2};
use crate::merkle::{Hash, TreeShape};

// The piece and file length limits are defined beside the Merkle trees
// they bound (v2 trees are shaped by them) and apply to v1 torrents too.
pub use crate::merkle::{MAX_FILE_LENGTH, MAX_PIECE_LENGTH};
/// Most pieces a torrent may have (libtorrent's loading limit).
pub const MAX_PIECES: u64 = 2_097_152;
/// Most elements in a `path` or `symlink path` list (libtorrent: 100).
pub const MAX_PATH_DEPTH: usize = 100;
/// Total candidate names tried while renaming duplicates before giving up
/// (libtorrent: 500).
pub const MAX_RENAME_PROBES: u32 = 500;

/// Which hashes a torrent carries (BEP 52).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaVersion {
    /// BEP 3 only: SHA-1 `pieces`, no `meta version` 2.
    V1,
    /// BEP 52 only: `meta version` 2 and a `file tree`, no `pieces`.
    V2,
    /// Both, describing the same files (checked).
    Hybrid,
}

/// A parsed info dictionary: v1, v2-only or hybrid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The 20-byte info-hash peers (handshake, BEP 9) and the DHT know the
    /// torrent by: the SHA-1 of [`Info::raw`] (v1 and hybrid), or for a
    /// v2-only torrent its v2 info-hash truncated to 20 bytes (BEP 52).
    pub info_hash: InfoHash,
    /// SHA-256 of [`Info::raw`] when `meta version` is 2 (v2 and hybrid).
    pub info_hash_v2: Option<InfoHashV2>,
    /// v1, v2-only or hybrid.
    pub version: MetaVersion,
    /// The exact bytes of the info dictionary (served to peers by BEP 9).
    pub raw: Vec<u8>,
    /// The torrent's name, sanitized: one safe path component (the hex
    /// info-hash when a multi-file torrent's name sanitizes to nothing).
    pub name: String,
    /// Bytes per piece (the last piece may be shorter).
    pub piece_length: u64,
    /// SHA-1 of each piece, in order (v1 and hybrid; empty for v2-only,
    /// whose pieces are checked against [`FileEntry::pieces_root`]).
    pub pieces: Vec<[u8; 20]>,
    /// Size of the piece space in bytes: all file lengths, pad files
    /// included.
    pub total_length: u64,
    /// Every entry in the order of the info dictionary (v2-only: tree
    /// order), pad files included.
    pub files: Vec<FileEntry>,
    /// True for a `files` list (even with one file) or a `file tree` that is
    /// not one top-level file; false for a single-file torrent.
    pub multi_file: bool,
    /// `private` is 1 (BEP 27).
    pub private: bool,
}

/// One entry of the torrent: a file, a pad file or a symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Sanitized, de-duplicated components. Multi-file torrents start with the
    /// torrent name (`["temp", "foo", "bar.txt"]`); a single-file torrent is
    /// `["temp"]`. No component is empty, `.`, `..`, or holds `/` or NUL.
    pub path: Vec<String>,
    /// Size in bytes (0 for symlinks).
    pub length: u64,
    /// Byte offset of the entry's first byte in the torrent's piece space.
    pub offset: u64,
    /// A BEP 47 pad file: zeros that only align the next file; never shown.
    pub pad: bool,
    /// For a symlink, the sanitized target as components from the directory
    /// that holds the torrent root (it starts with the torrent name, like
    /// libtorrent shows it: `["temp", "a", "b", "bar"]`). Never outside the
    /// torrent; it may name a path the torrent does not contain.
    pub symlink: Option<Vec<String>>,
    /// `attr` contains `x`.
    pub executable: bool,
    /// `attr` contains `h`.
    pub hidden: bool,
    /// The file's BEP 52 `pieces root` (v2 and hybrid torrents): the root of
    /// its SHA-256 Merkle tree ([`crate::merkle`]). `None` for v1 torrents,
    /// pad files, empty files and symlinks.
    pub pieces_root: Option<Hash>,
}

/// Why an info dictionary (or a .torrent file) is refused. Messages name the
/// field and the problem, e.g. "info dictionary: `piece length` must be a
/// positive integer, got -1".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetainfoError {
    /// The bytes are not acceptable bencoding (including the depth and token
    /// limits).
    #[error("info dictionary: not valid bencoding: {0}")]
    Bencode(#[from] bencode::Error),
    /// The metadata decodes but is not a dictionary.
    #[error("info dictionary: the metadata is not a dictionary")]
    NotADictionary,
    /// A .torrent file without a usable `info` (only from
    /// [`Info::from_torrent_file`] and [`info_span`]).
    #[error("torrent file: {0}")]
    TorrentFile(&'static str),
    /// A field is missing, has the wrong type, or a bad value.
    #[error("info dictionary: `{field}` {problem}")]
    Field { field: String, problem: String },
    /// `meta version` is present but the dictionary is not canonical.
    #[error(
        "info dictionary: not canonical bencoding (unsorted or duplicate keys, or numbers with \
         leading zeros), which BEP 52 requires once `meta version` is present"
    )]
    NotCanonical,
    /// A hybrid whose `files` and `file tree` describe different files.
    #[error("info dictionary: `files` and `file tree` disagree (v1 and v2 metadata): {0}")]
    V1V2Mismatch(String),
    /// The `piece layers` of a .torrent are invalid (BEP 52: the torrent is
    /// then invalid); only from [`PieceLayers::from_torrent_file`].
    #[error("torrent file: `piece layers` {0}")]
    PieceLayers(String),
    /// Renaming duplicate names would take more than [`MAX_RENAME_PROBES`].
    #[error(
        "info dictionary: `files` has too many duplicate file names (more than {0} renames needed)"
    )]
    TooManyDuplicates(u32),
}

impl MetainfoError {
    /// The info dictionary field the error is about, when there is one
    /// (`"piece length"`, `"files[2].path"`, `"file tree"`, ...).
    pub fn field(&self) -> Option<&str> {
        match self {
            MetainfoError::Field { field, .. } => Some(field),
            MetainfoError::V1V2Mismatch(_) => Some("file tree"),
            MetainfoError::PieceLayers(_) => Some("piece layers"),
            MetainfoError::TooManyDuplicates(_) => Some("files"),
            MetainfoError::NotCanonical => Some("meta version"),
            _ => None,
        }
    }
}

pub(crate) fn field_err(field: impl Into<String>, problem: impl Into<String>) -> MetainfoError {
    MetainfoError::Field {
        field: field.into(),
        problem: problem.into(),
    }
}

/// "an integer", "a byte string", "a list", "a dictionary".
pub(crate) fn type_name(v: &Value<'_>) -> &'static str {
    match v.kind {
        Kind::Int(_) => "an integer",
        Kind::Bytes(_) => "a byte string",
        Kind::List(_) => "a list",
        Kind::Dict(_) => "a dictionary",
    }
}

/// The byte range of the `info` value inside a .torrent file (the bytes a
/// BEP 9 peer serves). Bytes after the top-level dictionary are ignored.
///
/// Errors: [`MetainfoError::Bencode`] when the file does not decode (within
/// the default limits), [`MetainfoError::TorrentFile`] when it is not a
/// dictionary or has no `info`.
pub fn info_span(torrent: &[u8]) -> Result<Range<usize>, MetainfoError> {
    let (top, _) = bencode::decode_prefix(torrent, Limits::default())?;
    if top.as_dict().is_none() {
        return Err(MetainfoError::TorrentFile("not a dictionary"));
    }
    let info = top
        .get(b"info")
        .ok_or(MetainfoError::TorrentFile("no `info` key"))?;
    let start = info.raw.as_ptr() as usize - torrent.as_ptr() as usize;
    Ok(start..start + info.raw.len())
}

/// What `attr` says (BEP 47).
#[derive(Debug, Default, Clone, Copy)]
struct Attr {
    pad: bool,
    symlink: bool,
    executable: bool,
    hidden: bool,
}

/// An entry before the torrent name is prepended and before de-duplication.
struct Entry {
    /// Components under the torrent root (empty for a single-file torrent).
    rel: Vec<String>,
    length: u64,
    offset: u64,
    attr: Attr,
    /// Target components under the torrent root.
    symlink: Option<Vec<String>>,
    /// BEP 52 `pieces root` (v2 and hybrid torrents, non-empty files).
    pieces_root: Option<Hash>,
}

impl Info {
    /// Parses a raw info dictionary as received by BEP 9 (`ut_metadata`).
    /// See the module docs for the rules.
    ///
    /// Errors: [`MetainfoError`]; nothing in the input can make it panic,
    /// recurse without bound or allocate per piece or per file beyond what
    /// the input itself holds.
    pub fn from_bytes(raw: &[u8]) -> Result<Info, MetainfoError> {
        let info = bencode::decode(raw, Limits::default())?;
        if info.as_dict().is_none() {
            return Err(MetainfoError::NotADictionary);
        }

        // BEP 52: `meta version` first, then strict bencoding
        let meta_version = match info.get(b"meta version") {
            None => None,
            Some(v) => match v.as_int() {
                Some(n @ 1..=2) => Some(n),
                Some(n) if n > 2 => {
                    return Err(field_err(
                        "meta version",
                        format!("is {n}, an unknown version (only 1 and 2 exist)"),
                    ));
                }
                _ => {
                    return Err(field_err(
                        "meta version",
                        format!("must be 1 or 2, got {v:?}"),
                    ));
                }
            },
        };
        if meta_version.is_some() && !info.is_canonical() {
            return Err(MetainfoError::NotCanonical);
        }
        let version = match (meta_version == Some(2), info.get(b"pieces").is_some()) {
            (false, _) => MetaVersion::V1,
            (true, true) => MetaVersion::Hybrid,
            (true, false) => MetaVersion::V2,
        };
        let info_hash_v2 = (version != MetaVersion::V1).then(|| InfoHashV2::of_info(raw));
        let info_hash = match info_hash_v2 {
            Some(v2) if version == MetaVersion::V2 => v2.truncated(),
            _ => InfoHash::of_info(raw),
        };
        let tree = match version {
            MetaVersion::V1 => None,
            _ => {
                let tree_v = info.get(b"file tree").ok_or_else(|| {
                    field_err("file tree", "is missing although `meta version` is 2")
                })?;
                Some(v2::files(tree_v)?)
            }
        };

        // name (a v2-only single-file torrent is named after its one file)
        let name_v = info
            .get(b"name.utf-8")
            .filter(|v| v.as_bytes().is_some())
            .or_else(|| info.get(b"name"))
            .ok_or_else(|| field_err("name", "is missing"))?;
        let mut name_raw = name_v.as_bytes().ok_or_else(|| {
            field_err(
                "name",
                format!("must be a byte string, got {}", type_name(name_v)),
            )
        })?;
        let files_v = info.get(b"files");
        let multi_file = match (&tree, version) {
            (Some(t), MetaVersion::V2) => {
                if let Some(key) = &t.single_file_key {
                    name_raw = key;
                }
                t.single_file_key.is_none()
            }
            _ => files_v.is_some(),
        };
        let filtered = sanitize::filter(name_raw);
        let name = match filtered.as_str() {
            "" | "." | ".." if multi_file => info_hash.to_hex(),
            "" | "." | ".." => {
                return Err(field_err(
                    "name",
                    format!(
                        "is empty after sanitizing (was {})",
                        bencode::Printable(name_raw)
                    ),
                ));
            }
            _ => filtered,
        };

        // piece length
        let pl_v = info
            .get(b"piece length")
            .ok_or_else(|| field_err("piece length", "is missing"))?;
        let pl = pl_v.as_int().ok_or_else(|| {
            field_err(
                "piece length",
                format!("must be a positive integer, got {}", type_name(pl_v)),
            )
        })?;
        if pl <= 0 {
            return Err(field_err(
                "piece length",
                format!("must be a positive integer, got {pl}"),
            ));
        }
        let piece_length = pl as u64;
        if piece_length > MAX_PIECE_LENGTH {
            return Err(field_err(
                "piece length",
                format!(
                    "is {piece_length} bytes, more than the largest accepted, {MAX_PIECE_LENGTH} bytes \
                     (libtorrent's limit: 32767 blocks of 16 KiB)"
                ),
            ));
        }
        if version != MetaVersion::V1 && (!piece_length.is_power_of_two() || piece_length < 16384) {
            return Err(field_err(
                "piece length",
                format!(
                    "must be a power of two of at least 16384 when `meta version` is 2, got {piece_length}"
                ),
            ));
        }

        // files
        let (entries, total) = match tree {
            Some(t) if version == MetaVersion::V2 => {
                v2::layout(t.files, piece_length, !multi_file)?
            }
            _ => {
                let (mut entries, total) = v1::entries(&info, files_v)?;
                if total == 0 {
                    return Err(no_content());
                }
                if let Some(t) = tree {
                    // a hybrid's two descriptions must agree (checked before
                    // `pieces`: a misaligned v1 layout usually also has the
                    // wrong piece count)
                    v2::check_hybrid(
                        &mut entries,
                        &t.files,
                        multi_file,
                        &name,
                        piece_length,
                        total,
                    )?;
                    // BEP 52: the v1 pad files of a hybrid are implied by the
                    // v2 layout; name them `.pad/<length>` whatever `path` said
                    for e in entries.iter_mut().filter(|e| e.attr.pad) {
                        e.rel = vec![".pad".to_string(), e.length.to_string()];
                    }
                }
                (entries, total)
            }
        };
        if total == 0 {
            return Err(no_content());
        }

        // pieces: count checked before anything is allocated per piece
        let num_pieces = total.div_ceil(piece_length);
        if num_pieces > MAX_PIECES {
            return Err(field_err(
                if version == MetaVersion::V2 {
                    "file tree"
                } else {
                    "pieces"
                },
                format!(
                    "would need too many pieces: {total} bytes in pieces of {piece_length} \
                     bytes make {num_pieces}, more than the limit of {MAX_PIECES}"
                ),
            ));
        }
        let pieces = match version {
            MetaVersion::V2 => Vec::new(),
            _ => v1::pieces(&info, total, piece_length, num_pieces)?,
        };

        let mut files: Vec<FileEntry> = entries
            .into_iter()
            .map(|e| {
                let mut path = Vec::with_capacity(e.rel.len() + 1);
                path.push(name.clone());
                path.extend(e.rel);
                FileEntry {
                    path,
                    length: e.length,
                    offset: e.offset,
                    pad: e.attr.pad,
                    symlink: e.symlink.map(|t| {
                        let mut full = Vec::with_capacity(t.len() + 1);
                        full.push(name.clone());
                        full.extend(t);
                        full
                    }),
                    executable: e.attr.executable,
                    hidden: e.attr.hidden,
                    pieces_root: e.pieces_root,
                }
            })
            .collect();
        if multi_file {
            let tree = paths::dedup(&mut files)?;
            paths::settle_symlinks(&mut files, &tree);
        }

        Ok(Info {
            info_hash,
            info_hash_v2,
            version,
            raw: raw.to_vec(),
            name,
            piece_length,
            pieces,
            total_length: total,
            files,
            multi_file,
            private: info.get(b"private").and_then(Value::as_int) == Some(1),
        })
    }

    /// Parses the `info` dictionary of a whole .torrent file: its raw bytes
    /// are cut out with [`info_span`] and given to [`Info::from_bytes`], so
    /// the info-hash is that of the bytes in the file. Outer keys (announce,
    /// nodes, piece layers, ...) are ignored.
    pub fn from_torrent_file(buf: &[u8]) -> Result<Info, MetainfoError> {
        let span = info_span(buf)?;
        Info::from_bytes(&buf[span])
    }

    /// Number of pieces: [`Info::total_length`] / [`Info::piece_length`],
    /// rounded up (at most [`MAX_PIECES`]).
    pub fn num_pieces(&self) -> u32 {
        self.total_length.div_ceil(self.piece_length) as u32
    }

    /// Size of piece `index` in bytes: [`Info::piece_length`], except the
    /// last piece, which holds the remainder; 0 for an index out of range.
    /// Pad bytes count (they are zeros on the wire and in the v1 SHA-1).
    pub fn piece_size(&self, index: u32) -> u64 {
        let n = self.num_pieces();
        if index >= n {
            0
        } else if index + 1 == n {
            self.total_length - self.piece_length * u64::from(n - 1)
        } else {
            self.piece_length
        }
    }

    /// Bytes of file data in piece `index`. For v2 and hybrid torrents,
    /// where a piece holds data of one file only, these are the bytes its
    /// Merkle hash covers: [`Info::piece_size`] less the alignment gap
    /// after its file's end (BEP 52: "the last piece of each file may be
    /// shorter"); a v2 client may request just these. For v1 torrents, and
    /// out of range, the same as [`Info::piece_size`].
    pub fn piece_data_size(&self, index: u32) -> u64 {
        let size = self.piece_size(index);
        if self.version == MetaVersion::V1 {
            return size;
        }
        let start = u64::from(index) * self.piece_length;
        match self.piece_file(index).map(|i| &self.files[i]) {
            Some(f) => (f.offset + f.length).min(start + size) - start,
            None => 0,
        }
    }

    /// The v1 info-hash (SHA-1 of [`Info::raw`]) of a v1 or hybrid torrent;
    /// `None` for a v2-only torrent.
    pub fn info_hash_v1(&self) -> Option<InfoHash> {
        (self.version != MetaVersion::V2).then_some(self.info_hash)
    }

    /// The entry (an index into [`Info::files`]) whose data piece `index`
    /// holds, for v2 and hybrid torrents, where a piece never spans two
    /// files (BEP 52). `None` for a v1 torrent, an index out of range, or a
    /// piece of padding only.
    pub fn piece_file(&self, index: u32) -> Option<usize> {
        if self.version == MetaVersion::V1 || index >= self.num_pieces() {
            return None;
        }
        let start = u64::from(index) * self.piece_length;
        let after = self.files.partition_point(|f| f.offset <= start);
        let i = (0..after)
            .rev()
            .find(|&i| !self.files[i].pad && self.files[i].length > 0)?;
        let f = &self.files[i];
        (start < f.offset + f.length).then_some(i)
    }

    /// The shape of the Merkle tree of entry `file` (an index into
    /// [`Info::files`]), when it has a `pieces root`.
    pub fn file_tree(&self, file: usize) -> Option<TreeShape> {
        let f = self.files.get(file)?;
        f.pieces_root?;
        TreeShape::new(f.length, self.piece_length).ok()
    }

    /// SHA-1 of piece `index`; all zeros for an index out of range.
    pub fn piece_hash(&self, index: u32) -> [u8; 20] {
        self.pieces.get(index as usize).copied().unwrap_or([0; 20])
    }

    /// The pieces overlapping entry `file` (an index into
    /// [`Info::files`]); empty for a 0-byte entry or an index out of range.
    pub fn file_pieces(&self, file: usize) -> Range<u32> {
        match self.files.get(file) {
            Some(f) if f.length > 0 => {
                let first = f.offset / self.piece_length;
                let end = (f.offset + f.length).div_ceil(self.piece_length);
                first as u32..end as u32
            }
            _ => 0..0,
        }
    }
}

/// The refusal of a torrent whose files hold no byte.
fn no_content() -> MetainfoError {
    field_err("length", "adds up to 0 bytes: the torrent has no content")
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod v2_tests;
