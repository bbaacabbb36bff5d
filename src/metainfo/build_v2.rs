//! Making v2-only and hybrid v1+v2 torrents (BEP 52), for `seed` and for
//! tests.
//!
//! [`build_v2`] hashes each file once, in torrent order, into its `pieces
//! root` and piece layer ([`FileHasher`]) and, for a hybrid, the v1 SHA-1
//! `pieces` of the same bytes. The output is deterministic (keys sorted, no
//! creation date, no `attr`), and laid out as libtorrent 2.0.8's
//! `create_torrent` lays it out, so the same files, name and piece length
//! give the same info dictionary byte for byte:
//! - files in `file tree` order: sorted by their raw path elements;
//! - a hybrid's v1 `files` list has a pad file `.pad/<length>` (`attr` `p`)
//!   after every non-empty file that does not end on a piece boundary, the
//!   last one included, so every file starts on a piece boundary as v2
//!   requires; empty files get no pad and no `pieces root`;
//! - one file with an empty path makes a single-file torrent (`length` and
//!   a one-entry `file tree` named after the torrent).

use std::io;

use sha1::{Digest, Sha1};

use super::{Info, PieceLayers, sanitize};
use crate::bencode::Owned;
use crate::hash::{InfoHash, InfoHashV2};
use crate::magnet::Magnet;
use crate::merkle::{BLOCK_SIZE, FileHasher, Hash, MAX_PIECE_LENGTH, MerkleError};

/// Which hashes [`build_v2`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// BEP 52 only: `file tree`, `meta version` 2, no `pieces`.
    V2Only,
    /// BEP 52 and BEP 3 in one info dictionary, with pad files.
    Hybrid,
}

/// Where [`build_v2`] reads the files' bytes: `read_at(file, offset, buf)`
/// fills all of `buf` with the bytes of input file `file` (an index into
/// the list given to [`build_v2`]) starting at byte `offset`.
pub trait V2Source {
    /// Fills `buf` from `offset` of input file `file`.
    fn read_at(&mut self, file: usize, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl<F: FnMut(usize, u64, &mut [u8]) -> io::Result<()>> V2Source for F {
    fn read_at(&mut self, file: usize, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self(file, offset, buf)
    }
}

/// One file of a built torrent, in torrent order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltFile {
    /// Its index in the list given to [`build_v2`].
    pub input: usize,
    /// Path components under the torrent root (empty for a single file).
    pub path: Vec<String>,
    /// Bytes.
    pub length: u64,
    /// Byte offset in the piece space (a multiple of the piece length for
    /// non-empty files).
    pub offset: u64,
    /// `pieces root`; `None` for an empty file.
    pub pieces_root: Option<Hash>,
}

/// What [`build_v2`] made.
#[derive(Debug, Clone)]
pub struct BuiltV2 {
    /// The info dictionary, canonical bencoding.
    pub info_raw: Vec<u8>,
    /// SHA-256 of `info_raw`.
    pub info_hash_v2: InfoHashV2,
    /// SHA-1 of `info_raw`, for a hybrid.
    pub info_hash_v1: Option<InfoHash>,
    /// Bytes per piece.
    pub piece_length: u64,
    /// The files in torrent order (pad files not listed).
    pub files: Vec<BuiltFile>,
    /// The piece layer of every file larger than one piece.
    pub piece_layers: PieceLayers,
    /// The parsed info dictionary (what a peer gets by BEP 9).
    pub info: Info,
}

impl BuiltV2 {
    /// A whole .torrent: `info` and `piece layers`, nothing else (no
    /// announce, no creation date), keys sorted.
    pub fn torrent_file(&self) -> Vec<u8> {
        Owned::dict()
            .insert("info", Owned::Raw(self.info_raw.clone()))
            .insert("piece layers", self.piece_layers.to_bencode())
            .encode()
    }

    /// The magnet link: `xt=urn:btih` (hybrid) and `xt=urn:btmh`, `dn` the
    /// torrent name.
    pub fn magnet(&self) -> Magnet {
        let mut m = match self.info_hash_v1 {
            Some(v1) => Magnet::hybrid(v1, self.info_hash_v2),
            None => Magnet::v2(self.info_hash_v2),
        };
        m.display_name = Some(self.info.name.clone());
        m
    }
}

/// Why [`build_v2`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildV2Error {
    /// No files, or only empty ones.
    #[error("a torrent needs at least one byte of content")]
    NoContent,
    /// Not a power of two from 16 KiB to 1 GiB.
    #[error("piece length {0} is not a power of two from 16384 to {MAX_PIECE_LENGTH}")]
    BadPieceLength(u64),
    /// A name or path element a torrent cannot hold (empty, `.`, `..`, a
    /// `/`, a NUL).
    #[error("'{0}' is not a name a torrent can hold")]
    BadName(String),
    /// Two files with the same path, or a file where another file's
    /// directory is.
    #[error("path '{0}' is given twice, or is both a file and a directory")]
    PathConflict(String),
    /// A single-file torrent must have exactly one file.
    #[error("a file with an empty path makes a single-file torrent, which holds only that file")]
    SingleFile,
    /// Reading input file `file` failed.
    #[error("reading file {file} ('{path}'): {err}")]
    Io {
        file: usize,
        path: String,
        err: io::Error,
    },
    /// A file too large for a tree.
    #[error("file '{path}': {err}")]
    Merkle { path: String, err: MerkleError },
    /// The result does not load back (a bug, or limits such as the piece
    /// count).
    #[error("the built torrent does not load: {0}")]
    Invalid(#[from] super::MetainfoError),
}

/// Whether `raw` can be a name or path element of a new torrent: not
/// empty, `.` or `..`, no `/` or NUL. (Loading may still show it changed,
/// as it shows any torrent's names: a `\` or a direction override is
/// dropped, a long name truncated; the dictionary keeps the raw bytes, as
/// [`super::build_info`] does for v1.)
fn keepable(raw: &[u8]) -> bool {
    !matches!(raw, b"" | b"." | b"..") && !raw.contains(&b'/') && !raw.contains(&0)
}

/// Bytes read and hashed at a time.
const CHUNK: u64 = 1 << 20;

/// Builds a v2-only or hybrid torrent of `files` (`(path components under
/// the torrent root, length in bytes)`; one file with an empty path makes a
/// single-file torrent) named `name`, with pieces of `piece_length` bytes,
/// reading every byte once from `source`. See the module docs for the
/// layout.
///
/// Errors: [`BuildV2Error`]; the result is parsed back with
/// [`Info::from_bytes`] before it is returned.
pub fn build_v2(
    name: &str,
    files: &[(Vec<String>, u64)],
    piece_length: u64,
    flavor: Flavor,
    source: &mut impl V2Source,
) -> Result<BuiltV2, BuildV2Error> {
    if !piece_length.is_power_of_two() || !(BLOCK_SIZE..=MAX_PIECE_LENGTH).contains(&piece_length) {
        return Err(BuildV2Error::BadPieceLength(piece_length));
    }
    if files.iter().all(|(_, len)| *len == 0) {
        return Err(BuildV2Error::NoContent);
    }
    if !keepable(&sanitize::raw_element(name)) {
        return Err(BuildV2Error::BadName(name.to_string()));
    }
    let single = files.iter().any(|(p, _)| p.is_empty());
    if single && files.len() != 1 {
        return Err(BuildV2Error::SingleFile);
    }
    // raw path elements, and the torrent (tree) order
    let mut order: Vec<(Vec<Vec<u8>>, usize)> = Vec::with_capacity(files.len());
    for (i, (path, _)) in files.iter().enumerate() {
        let mut raw = Vec::with_capacity(path.len());
        for c in path {
            if !keepable(&sanitize::raw_element(c)) {
                return Err(BuildV2Error::BadName(c.clone()));
            }
            raw.push(sanitize::raw_element(c).into_owned());
        }
        order.push((raw, i));
    }
    order.sort();
    for w in order.windows(2) {
        let (a, b) = (&w[0].0, &w[1].0);
        if b.starts_with(a) {
            return Err(BuildV2Error::PathConflict(files[w[1].1].0.join("/")));
        }
    }

    let mut hasher_v1 = (flavor == Flavor::Hybrid).then(|| V1Hasher::new(piece_length));
    let mut built = Vec::with_capacity(files.len());
    let mut layers = PieceLayers::default();
    let mut v1_files = Vec::new();
    let mut offset: u64 = 0;
    let mut buf = vec![0u8; CHUNK.min(piece_length.max(BLOCK_SIZE)) as usize];
    for (raw_path, i) in &order {
        let (path, length) = (&files[*i].0, files[*i].1);
        let shown = if path.is_empty() {
            name.to_string()
        } else {
            path.join("/")
        };
        let mut hasher = FileHasher::new(piece_length).expect("piece length checked");
        let mut pos = 0u64;
        while pos < length {
            let n = (length - pos).min(buf.len() as u64) as usize;
            source
                .read_at(*i, pos, &mut buf[..n])
                .map_err(|err| BuildV2Error::Io {
                    file: *i,
                    path: shown.clone(),
                    err,
                })?;
            hasher
                .update(&buf[..n])
                .map_err(|err| BuildV2Error::Merkle {
                    path: shown.clone(),
                    err,
                })?;
            if let Some(h) = &mut hasher_v1 {
                h.update(&buf[..n]);
            }
            pos += n as u64;
        }
        let pieces_root = if length > 0 {
            let hashes = hasher.finish().map_err(|err| BuildV2Error::Merkle {
                path: shown.clone(),
                err,
            })?;
            if !hashes.piece_layer.is_empty() {
                layers.insert(hashes.root, hashes.piece_layer);
            }
            Some(hashes.root)
        } else {
            None
        };
        built.push(BuiltFile {
            input: *i,
            path: path.clone(),
            length,
            offset,
            pieces_root,
        });
        v1_files.push(
            Owned::dict()
                .insert("length", int(length))
                .insert("path", raw_list(raw_path)),
        );
        offset += length;
        let gap = offset.next_multiple_of(piece_length) - offset;
        if gap > 0 && length > 0 && !single {
            if let Some(h) = &mut hasher_v1 {
                h.zeros(gap);
            }
            v1_files.push(
                Owned::dict()
                    .insert("attr", "p")
                    .insert("length", int(gap))
                    .insert(
                        "path",
                        Owned::List(vec![".pad".into(), gap.to_string().as_str().into()]),
                    ),
            );
        }
        offset = offset.next_multiple_of(piece_length);
    }

    let raw_name = sanitize::raw_element(name).into_owned();
    let tree = if single {
        Owned::dict().insert(raw_name.clone(), leaf(&built[0]))
    } else {
        let entries: Vec<(&[Vec<u8>], &BuiltFile)> = order
            .iter()
            .zip(&built)
            .map(|((raw, _), f)| (raw.as_slice(), f))
            .collect();
        subtree(&entries)
    };
    let mut info = Owned::dict()
        .insert("file tree", tree)
        .insert("meta version", Owned::Int(2))
        .insert("name", raw_name)
        .insert("piece length", int(piece_length));
    if let Some(h) = hasher_v1 {
        info = info.insert("pieces", h.finish());
        info = if single {
            info.insert("length", int(built[0].length))
        } else {
            info.insert("files", Owned::List(v1_files))
        };
    }
    let info_raw = info.encode();
    let parsed = Info::from_bytes(&info_raw)?;
    Ok(BuiltV2 {
        info_hash_v2: InfoHashV2::of_info(&info_raw),
        info_hash_v1: (flavor == Flavor::Hybrid).then(|| InfoHash::of_info(&info_raw)),
        piece_length,
        files: built,
        piece_layers: layers,
        info: parsed,
        info_raw,
    })
}

fn int(n: u64) -> Owned {
    Owned::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

fn raw_list(raw: &[Vec<u8>]) -> Owned {
    Owned::List(raw.iter().map(|c| Owned::Bytes(c.clone())).collect())
}

/// `{"": {length, pieces root}}` (no root for an empty file).
fn leaf(f: &BuiltFile) -> Owned {
    let mut d = Owned::dict().insert("length", int(f.length));
    if let Some(root) = f.pieces_root {
        d = d.insert("pieces root", root.to_vec());
    }
    Owned::dict().insert("", d)
}

/// The `file tree` dictionary of `entries` (sorted, no path a prefix of
/// another), grouped by their first element.
fn subtree(entries: &[(&[Vec<u8>], &BuiltFile)]) -> Owned {
    let mut d = Owned::dict();
    let mut i = 0;
    while i < entries.len() {
        let head = &entries[i].0[0];
        let mut j = i;
        while j < entries.len() && &entries[j].0[0] == head {
            j += 1;
        }
        let node = if entries[i].0.len() == 1 {
            leaf(entries[i].1)
        } else {
            let rest: Vec<(&[Vec<u8>], &BuiltFile)> =
                entries[i..j].iter().map(|(p, f)| (&p[1..], *f)).collect();
            subtree(&rest)
        };
        d = d.insert(head.clone(), node);
        i = j;
    }
    d
}

/// SHA-1 of each piece of the v1 piece space, fed file bytes and pad zeros.
struct V1Hasher {
    piece_length: u64,
    in_piece: u64,
    sha: Sha1,
    pieces: Vec<u8>,
}

impl V1Hasher {
    fn new(piece_length: u64) -> V1Hasher {
        V1Hasher {
            piece_length,
            in_piece: 0,
            sha: Sha1::new(),
            pieces: Vec::new(),
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = ((self.piece_length - self.in_piece) as usize).min(data.len());
            self.sha.update(&data[..n]);
            self.in_piece += n as u64;
            data = &data[n..];
            if self.in_piece == self.piece_length {
                self.end_piece();
            }
        }
    }

    fn zeros(&mut self, mut n: u64) {
        let zeros = [0u8; 4096];
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            self.update(&zeros[..k]);
            n -= k as u64;
        }
    }

    fn end_piece(&mut self) {
        let sha = std::mem::replace(&mut self.sha, Sha1::new());
        self.pieces.extend_from_slice(&sha.finalize());
        self.in_piece = 0;
    }

    fn finish(mut self) -> Vec<u8> {
        if self.in_piece > 0 {
            self.end_piece();
        }
        self.pieces
    }
}
