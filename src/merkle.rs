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
//!
//! What python3-libtorrent 2.0.8 does (`tests/v2_libtorrent.rs`):
//! - it asks for piece layers in buckets of up to 512 hashes (`length` the
//!   bucket rounded up to a power of two, pads included), with the proof
//!   layers that reach the root; it accepts our answers ([`Layers::answer`])
//!   and downloads whole torrents with them;
//! - its answers to our requests verify with [`verify_hashes`], and it
//!   answers out-of-range requests with `hash reject`, as
//!   [`check_request`] refuses them;
//! - asked for a single node (`length` 1), it sends one uncle too few (it
//!   leaves out the node's own sibling, which its own receiver counts), so
//!   that answer cannot be verified and is refused as malformed: ask for
//!   pairs (BEP 52: `length` at least 2). We answer `length` 1 the way its
//!   receiver counts.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// Largest accepted `piece length`, in bytes: 536 854 528 ((2^15 - 1)
/// blocks of 16 KiB, just under 512 MiB), libtorrent's limit since 2.0.10
/// (`file_storage::max_piece_size`: its piece picker counts at most 2^15 - 1
/// blocks per piece). A torrent with larger pieces is refused, naming it.
/// Pieces never sit whole in memory (blocks go to the cache as they
/// arrive), so any length up to this one costs no more memory than 16 KiB.
pub const MAX_PIECE_LENGTH: u64 = ((1 << 15) - 1) * 16384;
/// Largest accepted file, in bytes: just under (2^30 - 1) blocks of 16 KiB,
/// about 16 TiB (libtorrent refuses a file of (2^30 - 1) x 16 KiB).
pub const MAX_FILE_LENGTH: u64 = ((1 << 30) - 1) * 16384 - 1;

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
    /// Errors: [`RequestError::OtherFile`] when `req` names another root,
    /// and [`answer`]'s.
    pub fn answer(&self, req: &HashRequest) -> Result<Vec<Hash>, RequestError> {
        if req.pieces_root != self.root() {
            return Err(RequestError::OtherFile);
        }
        answer(&self.shape, req, |l, i| self.node(l, i))
    }

    /// The proof of one block (see [`block_proof`]), when the base layer is
    /// the leaf layer.
    pub fn block_proof(&self, block: u64, top_layer: u32) -> Option<Vec<Hash>> {
        block_proof(&self.shape, block, top_layer, |l, i| self.node(l, i))
    }
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

pub use hasher::{FileHasher, FileHashes};
pub use proof::{
    HashRequest, ProofError, RequestError, Verified, answer, block_proof, check_request,
    uncle_count, verify_block, verify_hashes,
};

mod hasher;
mod proof;

#[cfg(test)]
mod tests;
