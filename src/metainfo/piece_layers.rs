//! The `piece layers` of a .torrent file (BEP 52, "metainfo files"): for
//! each file larger than one piece, the hashes of its piece layer, keyed by
//! its `pieces root`. They sit outside the info dictionary, so BEP 9 never
//! delivers them; a torrent added from a magnet fetches them from peers
//! with hash requests instead.
//!
//! BEP 52: "A torrent is not valid if this field is absent, the contained
//! hashes do not match the merkle roots or are not from the correct layer."
//! Current libtorrent (its `test_torrent_info.cpp`, see
//! `shared/torrents/EXPECTATIONS.md` group H) accepts a torrent without
//! `piece layers` or with some files' layers missing (they are fetched
//! later), and refuses: a layer that is not a string, not a whole number of
//! hashes, of the wrong length, not hashing up to its root, or keyed by
//! something that is not the root of a file of the torrent. So do we.

use std::collections::BTreeMap;

use super::{Info, MetaVersion, MetainfoError, info_span, type_name};
use crate::bencode::{self, Limits, Owned};
use crate::merkle::{self, Hash, Layers, TreeShape};

/// Verified piece layers, keyed by `pieces root`. Identical files share a
/// root, hence one layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PieceLayers {
    layers: BTreeMap<Hash, Vec<Hash>>,
}

fn bad(problem: impl Into<String>) -> MetainfoError {
    MetainfoError::PieceLayers(problem.into())
}

impl PieceLayers {
    /// Reads and checks the `piece layers` of the .torrent file `torrent`,
    /// whose info dictionary is `info` (as [`Info::from_torrent_file`]
    /// parsed it). A v1 torrent, or a torrent without the key, has none.
    ///
    /// Errors: [`MetainfoError::Bencode`] / [`MetainfoError::TorrentFile`]
    /// when the file does not decode, [`MetainfoError::PieceLayers`] for
    /// every fault listed in the module docs.
    pub fn from_torrent_file(torrent: &[u8], info: &Info) -> Result<PieceLayers, MetainfoError> {
        if info.version == MetaVersion::V1 {
            return Ok(PieceLayers::default());
        }
        let span = info_span(torrent)?;
        if torrent[span] != info.raw[..] {
            return Err(MetainfoError::TorrentFile(
                "its `info` is not the info dictionary given",
            ));
        }
        let (top, _) = bencode::decode_prefix(torrent, Limits::default())?;
        let Some(v) = top.get(b"piece layers") else {
            return Ok(PieceLayers::default());
        };
        Self::from_value(v, info)
    }

    /// Reads and checks a bencoded `piece layers` dictionary on its own
    /// (as [`PieceLayers::to_bencode`] writes it; the cache keeps the
    /// layers fetched from peers this way), for the torrent `info`. Each
    /// layer is checked against its `pieces root` as in
    /// [`PieceLayers::from_torrent_file`].
    ///
    /// Errors: [`MetainfoError::Bencode`], [`MetainfoError::PieceLayers`].
    pub fn from_bencode(buf: &[u8], info: &Info) -> Result<PieceLayers, MetainfoError> {
        let v = bencode::decode(buf, Limits::default())?;
        Self::from_value(&v, info)
    }

    fn from_value(v: &bencode::Value<'_>, info: &Info) -> Result<PieceLayers, MetainfoError> {
        let dict = v
            .as_dict()
            .ok_or_else(|| bad(format!("must be a dictionary, got {}", type_name(v))))?;
        // every file with a piece layer, by root
        let mut shapes: BTreeMap<Hash, Vec<TreeShape>> = BTreeMap::new();
        for (i, f) in info.files.iter().enumerate() {
            if let (Some(root), Some(shape)) = (f.pieces_root, info.file_tree(i)) {
                shapes.entry(root).or_default().push(shape);
            }
        }
        let mut layers = BTreeMap::new();
        for (key, value) in dict {
            let root: Hash = (*key).try_into().map_err(|_| {
                bad(format!(
                    "has a key of {} bytes, not a 32-byte `pieces root`",
                    key.len()
                ))
            })?;
            let shown = hex::encode(root);
            let files = shapes
                .get(&root)
                .ok_or_else(|| bad(format!("has a layer for {shown}, the root of no file")))?;
            let bytes = value.as_bytes().ok_or_else(|| {
                bad(format!(
                    "for {shown} must be a byte string, got {}",
                    type_name(value)
                ))
            })?;
            let mut hashes = Vec::new();
            for shape in files {
                hashes = merkle::verify_piece_layer(shape, &root, bytes)
                    .map_err(|e| bad(format!("for {shown} is invalid: {e}")))?;
            }
            layers.insert(root, hashes);
        }
        Ok(PieceLayers { layers })
    }

    /// The verified piece layer of the file with root `root`, if present.
    pub fn get(&self, root: &Hash) -> Option<&[Hash]> {
        self.layers.get(root).map(Vec::as_slice)
    }

    /// The [`Layers`] of entry `file` of `info`, from its piece layer (or,
    /// for a one-piece file, from its root alone). `None` when the file has
    /// no `pieces root` or its layer is not held.
    pub fn file_layers(&self, info: &Info, file: usize) -> Option<Layers> {
        let shape = info.file_tree(file)?;
        let root = info.files[file].pieces_root?;
        let hashes = if shape.has_piece_layer() {
            self.layers.get(&root)?.clone()
        } else {
            vec![root]
        };
        Layers::from_piece_hashes(shape, hashes, &root).ok()
    }

    /// Adds a layer that was verified elsewhere (e.g. by
    /// [`merkle::verify_piece_layer`] or fetched with hash requests).
    pub fn insert(&mut self, root: Hash, layer: Vec<Hash>) {
        self.layers.insert(root, layer);
    }

    /// Number of layers held.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// No layer held.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The layers, by root, in root order.
    pub fn iter(&self) -> impl Iterator<Item = (&Hash, &[Hash])> {
        self.layers.iter().map(|(k, v)| (k, v.as_slice()))
    }

    /// The bencoded `piece layers` dictionary (keys sorted).
    pub fn to_bencode(&self) -> Owned {
        let mut d = Owned::dict();
        for (root, layer) in &self.layers {
            d = d.insert(root.to_vec(), layer.concat());
        }
        d
    }
}
