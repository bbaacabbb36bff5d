//! The SHA-256 Merkle trees of BEP 52 (v2 torrents): a file's `pieces
//! root`, its piece layer, and the hashes carried by the `hash request`,
//! `hashes` and `hash reject` peer messages.
//!
//! Every non-empty file of a v2 torrent has its own binary tree (BEP 52,
//! "pieces root"):
//! - the leaves are the SHA-256 of each 16 KiB block of the file; the last
//!   block may be shorter and is hashed as it is ([`block_hash`]);
//! - the leaf layer is padded to a power of two with all-zero hashes, so the
//!   pad of a higher layer is the root of an all-zero subtree ([`pad_hash`]);
//! - each inner node is SHA-256(left ‖ right); the top node is the `pieces
//!   root`.
//!
//! **Layers are numbered from the leaves**, as BEP 52 numbers the "base
//! layer" of a hash request: layer 0 holds block hashes, layer `k` holds
//! nodes that cover 2^k blocks, and the root is layer
//! [`TreeShape::root_layer`]. The *piece layer* is layer log2(piece length /
//! 16 KiB): one node per piece. A file of one piece has no piece layer in a
//! .torrent; its one piece is checked against the root
//! ([`TreeShape::piece_hash_layer`]).
//!
//! Hash messages (BEP 52, "peer messages") name `length` consecutive nodes
//! of a base layer, starting at `index`, plus `proof_layers`: the receiver
//! hashes the nodes up to the root of their subtree (layer `base +
//! log2(length)`), then climbs one layer per *uncle* hash (the sibling of
//! the node reached so far). Uncles are sent for the layers `base +
//! log2(length)` up to `base + proof_layers`, so there are
//! [`uncle_count`]`(length, proof_layers)` of them, as libtorrent counts
//! them (the first log2(length) − 1 proof layers are implied by the nodes).
//!
//! Bounds: files up to [`MAX_FILE_LENGTH`] bytes (fewer than 2^30 blocks,
//! so a tree has at most 30 layers above its leaves), piece lengths that are
//! powers of two from 16 KiB to [`MAX_PIECE_LENGTH`], layers held in memory
//! of at most [`MAX_LAYER_NODES`] nodes, requests of at most
//! [`MAX_REQUEST_LENGTH`] nodes. Everything beyond is refused with an error,
//! never a panic or an unbounded allocation.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

pub use crate::metainfo::{MAX_FILE_LENGTH, MAX_PIECE_LENGTH};

/// A SHA-256 digest: a node of a Merkle tree.
pub type Hash = [u8; 32];

/// Bytes per leaf block (BEP 52: "16KiB blocks of the file").
pub const BLOCK_SIZE: u64 = 16384;

/// Most nodes [`Layers`] and [`FileHasher`] keep for one layer of one file
/// (2^21, libtorrent's limit on the pieces of a whole torrent): a piece layer
/// always fits; a leaf layer fits for files up to 32 GiB.
pub const MAX_LAYER_NODES: u64 = 1 << 21;

/// Most nodes one hash request may ask for (libtorrent refuses more; BEP 52
/// says requests "SHOULD NOT" exceed 512).
pub const MAX_REQUEST_LENGTH: u32 = 8192;

/// Most uncle hashes a `hashes` message can carry: a tree has at most 30
/// layers above its leaves (files of fewer than 2^30 blocks), so a proof
/// never needs more than 31; anything above 64 is malformed.
pub const MAX_UNCLES: u32 = 64;

/// SHA-256(left ‖ right): the parent of two nodes.
pub fn hash_pair(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The leaf hash of one block: SHA-256 of its bytes (at most 16 KiB; the
/// last block of a file is hashed at its real length, not zero-filled).
pub fn block_hash(data: &[u8]) -> Hash {
    Sha256::digest(data).into()
}

/// The leaf hashes of `data`, cut into 16 KiB blocks (the last may be
/// shorter). Empty data gives no leaves.
pub fn block_hashes(data: &[u8]) -> Vec<Hash> {
    data.chunks(BLOCK_SIZE as usize).map(block_hash).collect()
}

/// The pad node of layer `layer`: the root of a subtree of 2^layer all-zero
/// leaves (layer 0: 32 zero bytes). It stands for every node that covers
/// only blocks past the end of the file.
pub fn pad_hash(layer: u32) -> Hash {
    static PADS: OnceLock<Vec<Hash>> = OnceLock::new();
    let pads = PADS.get_or_init(|| {
        let mut v = vec![[0u8; 32]];
        for i in 0..63 {
            let next = hash_pair(&v[i], &v[i]);
            v.push(next);
        }
        v
    });
    match pads.get(layer as usize) {
        Some(h) => *h,
        None => {
            // never needed by a real tree (at most 30 layers); computed, not panicked
            let mut h = pads[63];
            for _ in 63..layer {
                h = hash_pair(&h, &h);
            }
            h
        }
    }
}

/// The root of a subtree whose layer `layer` holds `nodes` followed by pad
/// nodes up to `width` slots (`width` is rounded up to a power of two and to
/// at least `nodes.len()`). The root is at layer `layer + log2(width)`.
/// Takes O(`nodes.len()`) hashing and half that in scratch memory.
pub fn root_of(nodes: &[Hash], layer: u32, width: u64) -> Hash {
    let mut width = width.max(nodes.len() as u64).max(1).next_power_of_two();
    let mut layer = layer;
    if nodes.is_empty() {
        return pad_hash(layer + width.trailing_zeros());
    }
    let mut cur: Vec<Hash> = nodes.to_vec();
    while width > 1 {
        let pad = pad_hash(layer);
        let next: Vec<Hash> = cur
            .chunks(2)
            .map(|p| hash_pair(&p[0], p.get(1).unwrap_or(&pad)))
            .collect();
        cur = next;
        layer += 1;
        width /= 2;
    }
    cur[0]
}

/// Hashes `node`, at position `index` of layer `layer`, up through
/// `uncles`: the first uncle is its sibling, each next one the sibling of
/// the parent just computed. Returns `(layer, index, hash)` of the node
/// reached, `uncles.len()` layers higher.
pub fn climb(layer: u32, index: u64, node: Hash, uncles: &[Hash]) -> (u32, u64, Hash) {
    let (mut layer, mut index, mut node) = (layer, index, node);
    for u in uncles {
        node = if index & 1 == 0 {
            hash_pair(&node, u)
        } else {
            hash_pair(u, &node)
        };
        index >>= 1;
        layer += 1;
    }
    (layer, index, node)
}

/// Why a tree cannot be built or a layer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// A 0-byte file has no tree and no `pieces root` (BEP 52).
    #[error("an empty file has no Merkle tree")]
    EmptyFile,
    /// Longer than [`MAX_FILE_LENGTH`].
    #[error("a file of {0} bytes is larger than the limit of {MAX_FILE_LENGTH} bytes")]
    FileTooLarge(u64),
    /// Not a power of two from 16 KiB to [`MAX_PIECE_LENGTH`].
    #[error("piece length {0} is not a power of two from 16384 to {MAX_PIECE_LENGTH}")]
    BadPieceLength(u64),
    /// A layer above the root of this file's tree.
    #[error("layer {layer} is above the root, layer {root_layer}")]
    NoSuchLayer { layer: u32, root_layer: u32 },
    /// A layer longer than [`MAX_LAYER_NODES`].
    #[error("layer {layer} would hold {nodes} hashes, more than the limit of {MAX_LAYER_NODES}")]
    TooManyNodes { layer: u32, nodes: u64 },
    /// A layer with the wrong number of hashes for the file.
    #[error("layer {layer} must hold {want} hashes for this file, got {got}")]
    LayerLength { layer: u32, got: u64, want: u64 },
    /// A piece layer whose byte length is not a multiple of 32.
    #[error("a piece layer of {0} bytes is not a whole number of 32-byte hashes")]
    NotWholeHashes(usize),
    /// The hashes do not lead to the `pieces root`.
    #[error("the hashes do not lead to the file's `pieces root`")]
    RootMismatch,
    /// More data than the subtree holds.
    #[error("{got} bytes do not fit under one node of layer {layer} ({max} bytes)")]
    DataTooLong { got: u64, layer: u32, max: u64 },
}

/// The shape of one file's tree: how many blocks, leaves and layers it has,
/// and where its piece layer is. Built only for valid sizes, so every
/// method is infallible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TreeShape {
    length: u64,
    piece_length: u64,
}

impl TreeShape {
    /// The tree of a file of `length` bytes in a torrent with pieces of
    /// `piece_length` bytes.
    ///
    /// Errors: [`MerkleError::EmptyFile`] for 0 bytes,
    /// [`MerkleError::FileTooLarge`] above [`MAX_FILE_LENGTH`],
    /// [`MerkleError::BadPieceLength`] unless `piece_length` is a power of
    /// two from 16 KiB to [`MAX_PIECE_LENGTH`] (BEP 52, "piece length").
    pub fn new(length: u64, piece_length: u64) -> Result<TreeShape, MerkleError> {
        if length == 0 {
            return Err(MerkleError::EmptyFile);
        }
        if length > MAX_FILE_LENGTH {
            return Err(MerkleError::FileTooLarge(length));
        }
        if !piece_length.is_power_of_two()
            || !(BLOCK_SIZE..=MAX_PIECE_LENGTH).contains(&piece_length)
        {
            return Err(MerkleError::BadPieceLength(piece_length));
        }
        Ok(TreeShape {
            length,
            piece_length,
        })
    }

    /// File length in bytes.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Piece length in bytes.
    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    /// Number of 16 KiB blocks (the last may be shorter).
    pub fn blocks(&self) -> u64 {
        self.length.div_ceil(BLOCK_SIZE)
    }

    /// Number of leaf slots: blocks rounded up to a power of two.
    pub fn leaves(&self) -> u64 {
        self.blocks().next_power_of_two()
    }

    /// The root's layer: log2 of [`TreeShape::leaves`] (0 for a one-block
    /// file, whose root is its block hash).
    pub fn root_layer(&self) -> u32 {
        self.leaves().trailing_zeros()
    }

    /// log2(piece length / 16 KiB): the layer with one node per piece.
    pub fn piece_layer(&self) -> u32 {
        (self.piece_length / BLOCK_SIZE).trailing_zeros()
    }

    /// Pieces of this file: length / piece length, rounded up.
    pub fn num_pieces(&self) -> u64 {
        self.length.div_ceil(self.piece_length)
    }

    /// True when the file is larger than one piece, so a .torrent lists its
    /// piece layer (BEP 52, "piece layers").
    pub fn has_piece_layer(&self) -> bool {
        self.num_pieces() > 1
    }

    /// The layer a piece's data is checked against: the piece layer, or the
    /// root layer for a one-piece file (then the one piece hash is the
    /// `pieces root`, over [`TreeShape::leaves`] leaf slots, not a whole
    /// piece's worth).
    pub fn piece_hash_layer(&self) -> u32 {
        self.piece_layer().min(self.root_layer())
    }

    /// Slots of layer `layer`, pads included (0 above the root).
    pub fn layer_width(&self, layer: u32) -> u64 {
        if layer > self.root_layer() {
            0
        } else {
            self.leaves() >> layer
        }
    }

    /// Nodes of layer `layer` that cover file data (0 above the root); the
    /// rest of the layer's slots are pads.
    pub fn layer_len(&self, layer: u32) -> u64 {
        if layer > self.root_layer() {
            0
        } else {
            self.blocks().div_ceil(1 << layer)
        }
    }

    /// Bytes of file data under node `index` of layer `layer` (0 for a pad
    /// or a node out of range).
    pub fn node_data_len(&self, layer: u32, index: u64) -> u64 {
        if layer > self.root_layer() {
            return 0;
        }
        let span = BLOCK_SIZE << layer;
        let start = index.saturating_mul(span);
        self.length.saturating_sub(start).min(span)
    }
}

/// The hash of `data` as the node of layer `layer` it fills from its first
/// block: its blocks are hashed, zero leaves pad the rest of the 2^`layer`
/// slots. With `layer` = [`TreeShape::piece_hash_layer`] and a piece's
/// bytes, this is the hash the piece must have.
///
/// Errors: [`MerkleError::DataTooLong`] when `data` is more than
/// 2^`layer` blocks.
pub fn data_hash(layer: u32, data: &[u8]) -> Result<Hash, MerkleError> {
    let max = BLOCK_SIZE.checked_shl(layer).unwrap_or(u64::MAX);
    if data.len() as u64 > max || layer > 47 {
        return Err(MerkleError::DataTooLong {
            got: data.len() as u64,
            layer,
            max,
        });
    }
    Ok(root_of(&block_hashes(data), 0, 1 << layer))
}

/// The verified layers of one file's tree, from a base layer up to the root
/// (pads are implied, never stored). What a client holds to check pieces or
/// blocks and to answer hash requests: usually built from the piece layer
/// (from a .torrent, or fetched with hash requests), or from the leaves
/// while hashing local data. Uses about twice the base layer in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layers {
    shape: TreeShape,
    base: u32,
    /// `layers[k]`: the nodes of layer `base + k` that cover data; the last
    /// holds the root alone.
    layers: Vec<Vec<Hash>>,
}

impl Layers {
    /// Builds the layers above `nodes`, which must be every data node of
    /// layer `base` ([`TreeShape::layer_len`] of them).
    ///
    /// Errors: [`MerkleError::NoSuchLayer`] above the root,
    /// [`MerkleError::TooManyNodes`] beyond [`MAX_LAYER_NODES`],
    /// [`MerkleError::LayerLength`] for the wrong count.
    pub fn build(shape: TreeShape, base: u32, nodes: Vec<Hash>) -> Result<Layers, MerkleError> {
        let root_layer = shape.root_layer();
        if base > root_layer {
            return Err(MerkleError::NoSuchLayer {
                layer: base,
                root_layer,
            });
        }
        let want = shape.layer_len(base);
        if want > MAX_LAYER_NODES {
            return Err(MerkleError::TooManyNodes {
                layer: base,
                nodes: want,
            });
        }
        if nodes.len() as u64 != want {
            return Err(MerkleError::LayerLength {
                layer: base,
                got: nodes.len() as u64,
                want,
            });
        }
        let mut layers = vec![nodes];
        for layer in base..root_layer {
            let pad = pad_hash(layer);
            let below = layers.last().expect("at least the base layer");
            let up: Vec<Hash> = below
                .chunks(2)
                .map(|p| hash_pair(&p[0], p.get(1).unwrap_or(&pad)))
                .collect();
            layers.push(up);
        }
        Ok(Layers {
            shape,
            base,
            layers,
        })
    }

    /// Builds the layers from the hashes pieces are checked against (layer
    /// [`TreeShape::piece_hash_layer`]: the piece layer, or the root alone
    /// for a one-piece file) and checks that they lead to `root`.
    ///
    /// Errors: as [`Layers::build`], and [`MerkleError::RootMismatch`].
    pub fn from_piece_hashes(
        shape: TreeShape,
        hashes: Vec<Hash>,
        root: &Hash,
    ) -> Result<Layers, MerkleError> {
        let layers = Layers::build(shape, shape.piece_hash_layer(), hashes)?;
        if layers.root() != *root {
            return Err(MerkleError::RootMismatch);
        }
        Ok(layers)
    }

    /// The tree's shape.
    pub fn shape(&self) -> TreeShape {
        self.shape
    }

    /// The lowest layer held.
    pub fn base_layer(&self) -> u32 {
        self.base
    }

    /// The `pieces root`.
    pub fn root(&self) -> Hash {
        self.layers.last().expect("at least one layer")[0]
    }

    /// The data nodes of `layer`; `None` below the base or above the root.
    pub fn layer(&self, layer: u32) -> Option<&[Hash]> {
        let k = layer.checked_sub(self.base)?;
        self.layers.get(k as usize).map(Vec::as_slice)
    }

    /// Node `index` of `layer`: a held node, or the pad hash for a slot past
    /// the data. `None` below the base, above the root or past the layer's
    /// width.
    pub fn node(&self, layer: u32, index: u64) -> Option<Hash> {
        let nodes = self.layer(layer)?;
        if index >= self.shape.layer_width(layer) {
            return None;
        }
        Some(
            nodes
                .get(index as usize)
                .copied()
                .unwrap_or_else(|| pad_hash(layer)),
        )
    }

    /// The hashes to send for `req` (see [`answer`]), from these layers.
    pub fn answer(&self, req: &HashRequest) -> Result<Vec<Hash>, RequestError> {
        answer(&self.shape, req, |l, i| self.node(l, i))
    }

    /// The proof of one block (see [`block_proof`]), when the base layer is
    /// the leaf layer.
    pub fn block_proof(&self, block: u64, top_layer: u32) -> Option<Vec<Hash>> {
        block_proof(&self.shape, block, top_layer, |l, i| self.node(l, i))
    }
}

/// The range of nodes a `hash request`, `hashes` or `hash reject` message
/// names (BEP 52, "peer messages"), for the file whose tree has root
/// `pieces_root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashRequest {
    /// The file's `pieces root`.
    pub pieces_root: Hash,
    /// Layers above the leaves of the first requested node (0: block
    /// hashes).
    pub base_layer: u32,
    /// Position of the first requested node in the base layer.
    pub index: u32,
    /// Number of nodes requested from the base layer.
    pub length: u32,
    /// Ancestor layers the proof reaches, counted from the base layer (the
    /// first log2(`length`) − 1 are implied by the nodes themselves).
    pub proof_layers: u32,
}

/// Uncle hashes a `hashes` message carries after its `length` nodes, as
/// libtorrent counts them: `proof_layers + 1 - log2(length)` (length
/// rounded up to a power of two), or 0.
pub fn uncle_count(length: u32, proof_layers: u32) -> u32 {
    let log = u64::from(length.max(1))
        .next_power_of_two()
        .trailing_zeros();
    (u64::from(proof_layers) + 1).saturating_sub(u64::from(log)) as u32
}

/// Why a hash request is refused (answered with `hash reject`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `length` 0.
    #[error("asks for no hashes")]
    Empty,
    /// More than [`MAX_REQUEST_LENGTH`].
    #[error("asks for {0} hashes, more than the limit of {MAX_REQUEST_LENGTH}")]
    TooLong(u32),
    /// `length` is not a power of two (BEP 52: it MUST be).
    #[error("length {0} is not a power of two")]
    NotPowerOfTwo(u32),
    /// `index` is not a multiple of `length` (BEP 52: it MUST be).
    #[error("index {index} is not a multiple of length {length}")]
    Misaligned { index: u32, length: u32 },
    /// The base layer is the root's or above.
    #[error("base layer {base} is not below the root, layer {root_layer}")]
    BaseLayer { base: u32, root_layer: u32 },
    /// The range runs past the end of the (padded) layer.
    #[error("nodes {index}..{end} are past the {width} nodes of layer {base}")]
    OutOfRange {
        base: u32,
        index: u32,
        end: u64,
        width: u64,
    },
    /// The proof would reach the root or beyond.
    #[error(
        "{proof_layers} proof layers from layer {base} reach past the root, layer {root_layer}"
    )]
    ProofLayers {
        base: u32,
        proof_layers: u32,
        root_layer: u32,
    },
    /// A node the answer needs is not held.
    #[error("node {index} of layer {layer} is not held")]
    Missing { layer: u32, index: u64 },
}

/// Checks a request against the file's tree: `length` a power of two from 1
/// to [`MAX_REQUEST_LENGTH`], `index` a multiple of it, the base layer
/// below the root, the range within the layer's slots (pads count, as in
/// libtorrent), and `base_layer + proof_layers` below the root layer.
pub fn check_request(shape: &TreeShape, req: &HashRequest) -> Result<(), RequestError> {
    let (base, index, length) = (req.base_layer, req.index, req.length);
    if length == 0 {
        return Err(RequestError::Empty);
    }
    if length > MAX_REQUEST_LENGTH {
        return Err(RequestError::TooLong(length));
    }
    if !length.is_power_of_two() {
        return Err(RequestError::NotPowerOfTwo(length));
    }
    if index % length != 0 {
        return Err(RequestError::Misaligned { index, length });
    }
    let root_layer = shape.root_layer();
    if base >= root_layer {
        return Err(RequestError::BaseLayer { base, root_layer });
    }
    let width = shape.layer_width(base);
    let end = u64::from(index) + u64::from(length);
    if end > width {
        return Err(RequestError::OutOfRange {
            base,
            index,
            end,
            width,
        });
    }
    if req.proof_layers >= root_layer - base {
        return Err(RequestError::ProofLayers {
            base,
            proof_layers: req.proof_layers,
            root_layer,
        });
    }
    Ok(())
}

/// The hashes that answer `req` (BEP 52 `hashes`): its `length` nodes of
/// the base layer (pads past the data), then [`uncle_count`] uncles, lowest
/// first. `node(layer, index)` gives a data node the caller holds (pads are
/// filled in here); any missing node makes the answer a
/// [`RequestError::Missing`] (send `hash reject`).
///
/// Errors: [`check_request`]'s, and [`RequestError::Missing`].
pub fn answer(
    shape: &TreeShape,
    req: &HashRequest,
    node: impl Fn(u32, u64) -> Option<Hash>,
) -> Result<Vec<Hash>, RequestError> {
    check_request(shape, req)?;
    let base = req.base_layer;
    let first = u64::from(req.index);
    let length = u64::from(req.length);
    let get = |layer: u32, index: u64| -> Result<Hash, RequestError> {
        if index >= shape.layer_len(layer) {
            Ok(pad_hash(layer))
        } else {
            node(layer, index).ok_or(RequestError::Missing { layer, index })
        }
    };
    let uncles = uncle_count(req.length, req.proof_layers);
    let mut out = Vec::with_capacity((length + u64::from(uncles)) as usize);
    for i in first..first + length {
        out.push(get(base, i)?);
    }
    let log = req.length.trailing_zeros();
    for j in log..log + uncles {
        let layer = base + j;
        out.push(get(layer, (first >> j) ^ 1)?);
    }
    Ok(out)
}

/// Why received hashes are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The message's range is not one a valid request could name.
    #[error("bad hash range: {0}")]
    Range(#[from] RequestError),
    /// The message carries the wrong number of hashes for its range.
    #[error("{got} hashes where the range needs {want}")]
    Count { got: usize, want: u64 },
    /// The hashes lead to a root other than the file's `pieces root`.
    #[error("the hashes do not lead to the file's `pieces root`")]
    RootMismatch,
    /// The hashes lead to a verified node, but not to its hash.
    #[error("the hashes do not lead to the verified node {index} of layer {layer}")]
    Mismatch { layer: u32, index: u64 },
    /// The hashes lead to a node not verified yet: nothing to check against.
    #[error("the hashes lead to node {index} of layer {layer}, which is not verified yet")]
    Unanchored { layer: u32, index: u64 },
    /// A block index past the end of the file.
    #[error("block {block} is past the end of the file ({blocks} blocks)")]
    NoSuchBlock { block: u64, blocks: u64 },
    /// A block of the wrong size.
    #[error("block {block} is {got} bytes, it must be {want}")]
    BlockLength { block: u64, got: usize, want: u64 },
    /// A proof of the wrong length.
    #[error("a proof of {got} hashes where {want} are needed")]
    ProofLength { got: usize, want: u32 },
}

/// Hashes proven by a `hashes` message, for the caller to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The base layer of the range.
    pub base_layer: u32,
    /// The position of `nodes[0]` in that layer.
    pub index: u64,
    /// The range's nodes that cover file data (pads past the data are
    /// dropped), in order.
    pub nodes: Vec<Hash>,
    /// The uncles, now proven too: `(layer, index, hash)`, lowest first.
    pub uncles: Vec<(u32, u64, Hash)>,
}

/// Checks a received `hashes` message: `hashes` must be the range's
/// `length` nodes followed by [`uncle_count`] uncles, and lead to the
/// file's `root`, or, when the proof stops below the root (the requester
/// asked for fewer proof layers), to the node `known(layer, index)` returns
/// (a node verified earlier). Hashes that cover only padding must be the
/// pad hashes, which the root check ensures.
///
/// Errors: [`ProofError`]; nothing is returned unverified.
pub fn verify_hashes(
    shape: &TreeShape,
    root: &Hash,
    req: &HashRequest,
    hashes: &[Hash],
    known: impl Fn(u32, u64) -> Option<Hash>,
) -> Result<Verified, ProofError> {
    check_request(shape, req)?;
    let uncles = uncle_count(req.length, req.proof_layers);
    let want = u64::from(req.length) + u64::from(uncles);
    if hashes.len() as u64 != want {
        return Err(ProofError::Count {
            got: hashes.len(),
            want,
        });
    }
    let (nodes, uncle_hashes) = hashes.split_at(req.length as usize);
    let base = req.base_layer;
    let log = req.length.trailing_zeros();
    let first = u64::from(req.index);
    let sub_root = root_of(nodes, base, u64::from(req.length));
    let (layer, index, top) = climb(base + log, first >> log, sub_root, uncle_hashes);
    if layer == shape.root_layer() {
        if top != *root {
            return Err(ProofError::RootMismatch);
        }
    } else {
        match known(layer, index) {
            Some(h) if h == top => {}
            Some(_) => return Err(ProofError::Mismatch { layer, index }),
            None => return Err(ProofError::Unanchored { layer, index }),
        }
    }
    let data_nodes = shape
        .layer_len(base)
        .saturating_sub(first)
        .min(nodes.len() as u64);
    let proven = uncle_hashes
        .iter()
        .enumerate()
        .map(|(k, h)| {
            let j = log + k as u32;
            (base + j, (first >> j) ^ 1, *h)
        })
        .collect();
    Ok(Verified {
        base_layer: base,
        index: first,
        nodes: nodes[..data_nodes as usize].to_vec(),
        uncles: proven,
    })
}

/// The proof of block `block`: its sibling, then the sibling of each
/// ancestor, up to (not including) layer `top_layer` — `top_layer` hashes,
/// from `node(layer, index)` (pads filled in). With `top_layer` =
/// [`TreeShape::root_layer`] the proof reaches the root; with
/// [`TreeShape::piece_hash_layer`] it reaches the block's piece hash.
/// `None` when a node is missing or `top_layer` is above the root.
pub fn block_proof(
    shape: &TreeShape,
    block: u64,
    top_layer: u32,
    node: impl Fn(u32, u64) -> Option<Hash>,
) -> Option<Vec<Hash>> {
    if top_layer > shape.root_layer() || block >= shape.blocks() {
        return None;
    }
    (0..top_layer)
        .map(|layer| {
            let sib = (block >> layer) ^ 1;
            if sib >= shape.layer_len(layer) {
                Some(pad_hash(layer))
            } else {
                node(layer, sib)
            }
        })
        .collect()
}

/// Checks one block against a verified node above it: `data` must be the
/// whole block `block` (16 KiB, or the file's short last block), and its
/// hash, climbed through `proof` (one uncle per layer, as
/// [`block_proof`] gives), must reach `anchor`, the node of layer
/// `proof.len()` above the block — the `pieces root` when the proof has
/// [`TreeShape::root_layer`] hashes, the piece hash with
/// [`TreeShape::piece_hash_layer`] hashes.
///
/// Errors: [`ProofError::NoSuchBlock`], [`ProofError::BlockLength`],
/// [`ProofError::ProofLength`] (longer than the tree is high),
/// [`ProofError::Mismatch`].
pub fn verify_block(
    shape: &TreeShape,
    block: u64,
    data: &[u8],
    proof: &[Hash],
    anchor: &Hash,
) -> Result<(), ProofError> {
    let blocks = shape.blocks();
    if block >= blocks {
        return Err(ProofError::NoSuchBlock { block, blocks });
    }
    let want = shape.node_data_len(0, block);
    if data.len() as u64 != want {
        return Err(ProofError::BlockLength {
            block,
            got: data.len(),
            want,
        });
    }
    if proof.len() as u64 > u64::from(shape.root_layer()) {
        return Err(ProofError::ProofLength {
            got: proof.len(),
            want: shape.root_layer(),
        });
    }
    let (layer, index, top) = climb(0, block, block_hash(data), proof);
    if top != *anchor {
        return Err(ProofError::Mismatch { layer, index });
    }
    Ok(())
}

/// Checks a file's piece layer as a .torrent carries it (BEP 52, "piece
/// layers": the concatenated hashes of the piece layer, none for pad
/// slots) against the file's `pieces root`, and returns the hashes.
///
/// Errors: [`MerkleError::NotWholeHashes`], [`MerkleError::LayerLength`]
/// (the file has another number of pieces, or has one piece and so no
/// layer), [`MerkleError::TooManyNodes`], [`MerkleError::RootMismatch`].
pub fn verify_piece_layer(
    shape: &TreeShape,
    root: &Hash,
    layer: &[u8],
) -> Result<Vec<Hash>, MerkleError> {
    if layer.len() % 32 != 0 {
        return Err(MerkleError::NotWholeHashes(layer.len()));
    }
    let got = (layer.len() / 32) as u64;
    let want = if shape.has_piece_layer() {
        shape.num_pieces()
    } else {
        0
    };
    if got == 0 && want == 0 {
        return Ok(Vec::new());
    }
    if got != want {
        return Err(MerkleError::LayerLength {
            layer: shape.piece_layer(),
            got,
            want,
        });
    }
    if got > MAX_LAYER_NODES {
        return Err(MerkleError::TooManyNodes {
            layer: shape.piece_layer(),
            nodes: got,
        });
    }
    let hashes: Vec<Hash> = layer
        .chunks_exact(32)
        .map(|c| c.try_into().expect("chunks of 32"))
        .collect();
    let width = shape.layer_width(shape.piece_layer());
    if root_of(&hashes, shape.piece_layer(), width) != *root {
        return Err(MerkleError::RootMismatch);
    }
    Ok(hashes)
}

/// Hashes one file's bytes, fed in order in any chunks, into its `pieces
/// root` and piece layer, keeping at most one piece of leaf hashes and the
/// piece layer in memory.
#[derive(Debug, Clone)]
pub struct FileHasher {
    piece_length: u64,
    /// Leaves per piece.
    per_piece: usize,
    /// Bytes of the block being filled.
    buf: Vec<u8>,
    /// Leaf hashes of the piece being filled.
    leaves: Vec<Hash>,
    /// Hashes of the finished pieces.
    piece_layer: Vec<Hash>,
    /// Bytes fed so far.
    length: u64,
}

/// What [`FileHasher::finish`] computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHashes {
    /// The file's length in bytes.
    pub length: u64,
    /// Its `pieces root`.
    pub root: Hash,
    /// Its piece layer: one hash per piece, empty for a one-piece file
    /// (whose piece is checked against `root`).
    pub piece_layer: Vec<Hash>,
}

impl FileHasher {
    /// A hasher for a file of a torrent with pieces of `piece_length`
    /// bytes. Errors: [`MerkleError::BadPieceLength`].
    pub fn new(piece_length: u64) -> Result<FileHasher, MerkleError> {
        if !piece_length.is_power_of_two()
            || !(BLOCK_SIZE..=MAX_PIECE_LENGTH).contains(&piece_length)
        {
            return Err(MerkleError::BadPieceLength(piece_length));
        }
        Ok(FileHasher {
            piece_length,
            per_piece: (piece_length / BLOCK_SIZE) as usize,
            buf: Vec::with_capacity(BLOCK_SIZE as usize),
            leaves: Vec::new(),
            piece_layer: Vec::new(),
            length: 0,
        })
    }

    /// Feeds the next bytes of the file.
    ///
    /// Errors: [`MerkleError::FileTooLarge`] once more than
    /// [`MAX_FILE_LENGTH`] bytes were fed, [`MerkleError::TooManyNodes`]
    /// once the piece layer would exceed [`MAX_LAYER_NODES`].
    pub fn update(&mut self, mut data: &[u8]) -> Result<(), MerkleError> {
        self.length = self.length.saturating_add(data.len() as u64);
        if self.length > MAX_FILE_LENGTH {
            return Err(MerkleError::FileTooLarge(self.length));
        }
        while !data.is_empty() {
            let take = (BLOCK_SIZE as usize - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == BLOCK_SIZE as usize {
                let leaf = block_hash(&self.buf);
                self.buf.clear();
                self.push_leaf(leaf)?;
            }
        }
        Ok(())
    }

    fn push_leaf(&mut self, leaf: Hash) -> Result<(), MerkleError> {
        if self.leaves.len() == self.per_piece {
            // a piece is complete only once the file goes on past it: a
            // one-piece file's root is over fewer leaf slots
            self.flush_piece()?;
        }
        self.leaves.push(leaf);
        Ok(())
    }

    fn flush_piece(&mut self) -> Result<(), MerkleError> {
        if self.piece_layer.len() as u64 >= MAX_LAYER_NODES {
            return Err(MerkleError::TooManyNodes {
                layer: (self.piece_length / BLOCK_SIZE).trailing_zeros(),
                nodes: self.piece_layer.len() as u64 + 1,
            });
        }
        let h = root_of(&self.leaves, 0, self.per_piece as u64);
        self.piece_layer.push(h);
        self.leaves.clear();
        Ok(())
    }

    /// The root and piece layer of the bytes fed.
    ///
    /// Errors: [`MerkleError::EmptyFile`] when nothing was fed, and
    /// [`FileHasher::update`]'s.
    pub fn finish(mut self) -> Result<FileHashes, MerkleError> {
        let shape = TreeShape::new(self.length, self.piece_length)?;
        if !self.buf.is_empty() {
            let leaf = block_hash(&self.buf);
            self.buf.clear();
            self.push_leaf(leaf)?;
        }
        if self.piece_layer.is_empty() {
            let root = root_of(&self.leaves, 0, shape.leaves());
            return Ok(FileHashes {
                length: self.length,
                root,
                piece_layer: Vec::new(),
            });
        }
        self.flush_piece()?;
        let pl = shape.piece_layer();
        let root = root_of(&self.piece_layer, pl, shape.layer_width(pl));
        Ok(FileHashes {
            length: self.length,
            root,
            piece_layer: self.piece_layer,
        })
    }
}

#[cfg(test)]
mod tests;
