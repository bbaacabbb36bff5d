//! Hash requests and their answers (BEP 52 `hash request`, `hashes`, `hash
//! reject`), and proofs of single blocks; see the [`super`] docs for the
//! layer numbering and the uncle count.

use super::{Hash, MAX_REQUEST_LENGTH, TreeShape, block_hash, climb, pad_hash, root_of};

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
    /// The request names the root of another file.
    #[error("asks for another file's tree")]
    OtherFile,
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
