//! A v2-only torrent's Merkle trees at run time (BEP 52): the piece layer
//! of each file, fetched from peers with `hash request` messages, checked
//! up to the file's `pieces root`, kept in the cache (through
//! [`crate::storage::Storage::save_piece_layers`]) so that a remount needs
//! no peer for them, used to check each downloaded piece, and served to
//! other peers' hash requests.
//!
//! - A file of one piece needs no layer: its piece is checked against its
//!   root ([`crate::merkle::TreeShape::piece_hash_layer`]).
//! - A longer file's piece layer is asked in chunks of at most
//!   [`CHUNK`] nodes (`length` a power of two, `index` a multiple of it,
//!   with the proof layers that reach the root), one peer per chunk at a
//!   time, again of another peer after [`ASK_TIMEOUT`] or a `hash reject`.
//!   A `hashes` message nobody asked for, or one whose proof fails, is
//!   dropped (nothing unverified is kept) and counted against the peer.
//! - The lookup waits for every layer as it waits for the info dictionary
//!   (see [`Swarm::wait_metadata`]): pieces are verified as soon as they
//!   arrive, never held unverified.
//!
//! Hybrid torrents are checked through their v1 SHA-1 hashes and fetch no
//! layer. A hybrid whose layers the storage holds (one we made with
//! [`crate::create::build`]: they are saved with it) answers v2 peers'
//! hash requests from them: libtorrent 2.x leechers of a hybrid ask for
//! the piece layers before they download.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{ConnId, Swarm};
use crate::merkle::{self, Hash, HashRequest, Layers, ProofError, RequestError, TreeShape};
use crate::metainfo::{Info, MetaVersion, PieceLayers};

/// Most nodes of a piece layer asked in one `hash request` (libtorrent
/// asks in buckets of 512 too).
pub(crate) const CHUNK: u64 = 512;

/// How long a chunk asked of one peer waits before it is asked of another.
pub(crate) const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Most chunks asked of one peer at once.
pub(crate) const MAX_ASKED_PER_PEER: usize = 8;

/// One file's piece layer while it is fetched.
struct Partial {
    shape: TreeShape,
    /// The nodes of each chunk, once verified.
    chunks: Vec<Option<Vec<Hash>>>,
    /// Who was asked for each chunk, and when.
    asked: Vec<Option<(ConnId, Instant)>>,
    /// Who last answered `hash reject` for each chunk, and when: not asked
    /// again for it within [`ASK_TIMEOUT`].
    refused: Vec<Option<(ConnId, Instant)>>,
}

/// The Merkle state of a v2-only torrent (part of the swarm's state).
#[derive(Default)]
pub(super) struct Trees {
    /// Whether the torrent is v2-only (pieces checked by Merkle tree).
    v2_only: bool,
    /// The verified piece layers, by `pieces root`.
    held: PieceLayers,
    /// The layers still being fetched, by `pieces root`.
    partial: HashMap<Hash, Partial>,
    /// Every `pieces root` with the shape of its tree (one-piece files
    /// included), to answer requests and check pieces.
    shapes: HashMap<Hash, TreeShape>,
    /// The built layers of each root whose layer is held (or one-piece).
    built: HashMap<Hash, Layers>,
}

/// Why a `hashes` message was dropped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HashesError {
    /// Nobody asked this peer for this range.
    #[error("hashes nobody asked for")]
    Unasked,
    /// The proof does not lead to the file's root.
    #[error("hashes that do not prove: {0}")]
    Proof(#[from] ProofError),
}

impl Trees {
    /// The trees of `info`, with the layers `cached` holds (bytes of
    /// [`PieceLayers::to_bencode`]; layers that fail their check, or a file
    /// that does not decode, are ignored and, for a v2-only torrent,
    /// fetched again). A hybrid keeps the layers cached only to answer
    /// hash requests; a v1 torrent has none.
    pub(super) fn new(info: &Info, cached: Option<Vec<u8>>) -> Trees {
        let mut t = Trees {
            v2_only: info.version == MetaVersion::V2,
            ..Trees::default()
        };
        let hybrid_with_layers = info.version == MetaVersion::Hybrid && cached.is_some();
        if !(t.v2_only || hybrid_with_layers) {
            return t;
        }
        if let Some(buf) = cached {
            match PieceLayers::from_bencode(&buf, info) {
                Ok(l) => t.held = l,
                Err(e) => tracing::warn!("ignoring the cached piece layers: {e}"),
            }
        }
        for (i, f) in info.files.iter().enumerate() {
            let (Some(root), Some(shape)) = (f.pieces_root, info.file_tree(i)) else {
                continue;
            };
            t.shapes.insert(root, shape);
            if t.built.contains_key(&root) || t.partial.contains_key(&root) {
                continue;
            }
            match t.held.file_layers(info, i) {
                Some(layers) => {
                    t.built.insert(root, layers);
                }
                None if !t.v2_only => {}
                None => {
                    let n = shape.layer_len(shape.piece_layer()).div_ceil(CHUNK) as usize;
                    t.partial.insert(
                        root,
                        Partial {
                            shape,
                            chunks: vec![None; n],
                            asked: vec![None; n],
                            refused: vec![None; n],
                        },
                    );
                }
            }
        }
        t
    }

    /// Whether every piece can be checked: not v2-only, or every file's
    /// layer is held.
    pub(super) fn ready(&self) -> bool {
        self.partial.is_empty()
    }

    /// The hash piece `index` of `info` must have, and the layer it is at
    /// (its Merkle subtree over the piece's blocks, padded to 2^layer
    /// leaves). `None` when the torrent is not v2-only, the piece holds no
    /// file data, or its file's layer is not held.
    pub(super) fn piece_hash(&self, info: &Info, index: u32) -> Option<(u32, Hash)> {
        if !self.v2_only {
            return None;
        }
        let file = info.piece_file(index)?;
        let root = info.files[file].pieces_root?;
        let layers = self.built.get(&root)?;
        let shape = layers.shape();
        let first = info.file_pieces(file).start;
        let layer = shape.piece_hash_layer();
        let h = layers.node(layer, u64::from(index - first))?;
        Some((layer, h))
    }

    /// The next chunk to ask `conn` for, marked as asked; `None` when
    /// nothing is missing, or everything missing is asked of someone
    /// already (within [`ASK_TIMEOUT`]), or `conn` has
    /// [`MAX_ASKED_PER_PEER`] asked.
    fn next_request(&mut self, conn: ConnId, now: Instant) -> Option<HashRequest> {
        let mine = self
            .partial
            .values()
            .flat_map(|p| p.asked.iter())
            .filter(|a| a.is_some_and(|(c, t)| c == conn && now.duration_since(t) < ASK_TIMEOUT))
            .count();
        if mine >= MAX_ASKED_PER_PEER {
            return None;
        }
        for (root, p) in &mut self.partial {
            for k in 0..p.chunks.len() {
                let recent = |a: Option<(ConnId, Instant)>, by_conn: bool| {
                    a.is_some_and(|(c, t)| {
                        (!by_conn || c == conn) && now.duration_since(t) < ASK_TIMEOUT
                    })
                };
                if p.chunks[k].is_some() || recent(p.asked[k], false) || recent(p.refused[k], true)
                {
                    continue;
                }
                p.asked[k] = Some((conn, now));
                return Some(chunk_request(root, &p.shape, k));
            }
        }
        None
    }

    /// A `hashes` answer from `conn` to a chunk asked of some peer (a late
    /// answer from one whose turn timed out is welcome too): verified
    /// against the root and kept. A proof that fails frees the chunk for
    /// another peer at once.
    /// Returns the completed layer's root and bytes when this answer
    /// completed one. Errors: [`HashesError`]; nothing is kept then.
    fn on_hashes(
        &mut self,
        conn: ConnId,
        req: &HashRequest,
        hashes: &[Hash],
    ) -> Result<Option<Hash>, HashesError> {
        let root = req.pieces_root;
        let Some(p) = self.partial.get_mut(&root) else {
            return Err(HashesError::Unasked);
        };
        let k = (0..p.chunks.len())
            .find(|&k| chunk_request(&root, &p.shape, k) == *req)
            .filter(|&k| p.chunks[k].is_none() && (p.asked[k].is_some() || p.refused[k].is_some()))
            .ok_or(HashesError::Unasked)?;
        let v = match merkle::verify_hashes(&p.shape, &root, req, hashes, |_, _| None) {
            Ok(v) => v,
            Err(e) => {
                // asked of another peer at once, not of this one for a while
                if p.asked[k].is_some_and(|(c, _)| c == conn) {
                    p.asked[k] = None;
                }
                p.refused[k] = Some((conn, Instant::now()));
                return Err(e.into());
            }
        };
        p.chunks[k] = Some(v.nodes);
        if p.chunks.iter().any(Option::is_none) {
            return Ok(None);
        }
        let p = self.partial.remove(&root).expect("present");
        let layer: Vec<Hash> = p.chunks.into_iter().flatten().flatten().collect();
        let layers = Layers::from_piece_hashes(p.shape, layer.clone(), &root)
            .map_err(|_| ProofError::RootMismatch)?;
        self.built.insert(root, layers);
        self.held.insert(root, layer);
        Ok(Some(root))
    }

    /// A `hash reject` from `conn`: the chunk may be asked of others now.
    fn on_reject(&mut self, conn: ConnId, req: &HashRequest) {
        if let Some(p) = self.partial.get_mut(&req.pieces_root) {
            for k in 0..p.asked.len() {
                if p.asked[k].is_some_and(|(c, _)| c == conn)
                    && chunk_request(&req.pieces_root, &p.shape, k) == *req
                {
                    // asked again of another peer at once, not of this one
                    p.asked[k] = None;
                    p.refused[k] = Some((conn, Instant::now()));
                }
            }
        }
    }

    /// The answer to another peer's hash request, from the layers held.
    /// Errors: [`RequestError`] (answer with `hash reject`): a root that is
    /// no file of ours or whose layer we lack, a range out of the tree, a
    /// node below the piece layer (we keep no block hashes).
    fn answer(&self, req: &HashRequest) -> Result<Vec<Hash>, RequestError> {
        match self.built.get(&req.pieces_root) {
            Some(l) => l.answer(req),
            None => Err(RequestError::OtherFile),
        }
    }
}

/// The request for chunk `k` of the piece layer of the file with `root`:
/// `length` the layer's width when it fits in [`CHUNK`], else [`CHUNK`];
/// the proof reaches the root (`proof_layers` = root layer − piece layer −
/// 1, so no uncle for a whole layer).
fn chunk_request(root: &Hash, shape: &TreeShape, k: usize) -> HashRequest {
    let base = shape.piece_layer();
    let length = shape.layer_width(base).min(CHUNK) as u32;
    HashRequest {
        pieces_root: *root,
        base_layer: base,
        index: k as u32 * length,
        length,
        proof_layers: shape.root_layer() - base - 1,
    }
}

impl Swarm {
    /// Whether every piece can be checked (every v2 piece layer held).
    pub(crate) fn trees_ready(&self) -> bool {
        self.lock().trees.ready()
    }

    /// The next `hash request` to send to connection `conn`, if a piece
    /// layer is missing (see [`Trees`]).
    pub(crate) fn next_hash_request(&self, conn: ConnId) -> Option<HashRequest> {
        self.loaded()?;
        self.lock().trees.next_request(conn, Instant::now())
    }

    /// A `hashes` message from `conn`: checked and kept; once the last
    /// layer is held the lookup may go on and the layers are saved to the
    /// cache. Errors: [`HashesError`] (the caller counts it against the
    /// peer).
    pub(crate) fn on_hashes(
        &self,
        conn: ConnId,
        req: &HashRequest,
        hashes: &[Hash],
    ) -> Result<(), HashesError> {
        let mut st = self.lock();
        let Some(root) = st.trees.on_hashes(conn, req, hashes)? else {
            return Ok(());
        };
        let ready = st.trees.ready();
        let bytes = st.trees.held.to_bencode().encode();
        drop(st);
        tracing::info!(
            "{}: piece layer of {} verified{}",
            self.info_hash,
            hex::encode(&root[..8]),
            if ready {
                "; every piece layer held"
            } else {
                ""
            }
        );
        if let Some(l) = self.loaded()
            && let Err(e) = l.storage.save_piece_layers(&bytes)
        {
            tracing::warn!("{}: cannot save the piece layers: {e}", self.info_hash);
        }
        if ready {
            self.metadata_ready.notify_waiters();
            self.wake_peers();
        }
        Ok(())
    }

    /// A `hash reject` from `conn`.
    pub(crate) fn on_hash_reject(&self, conn: ConnId, req: &HashRequest) {
        self.lock().trees.on_reject(conn, req);
    }

    /// Our answer to a peer's `hash request` (see [`Trees::answer`]).
    pub(crate) fn answer_hash_request(&self, req: &HashRequest) -> Result<Vec<Hash>, RequestError> {
        self.lock().trees.answer(req)
    }

    /// Whether the cached piece `index` is right: its SHA-1 (v1, hybrid),
    /// or for a v2-only torrent the Merkle root of its file data against
    /// the piece layer, and zeros in the gap after its file's end. `Ok(None)` when it cannot be checked yet (no
    /// metadata, or its file's layer is not held). Runs blocking I/O.
    /// Errors: the storage's.
    pub(super) fn piece_is_good(&self, index: u32) -> std::io::Result<Option<bool>> {
        let Some(l) = self.loaded() else {
            return Ok(None);
        };
        let info = &l.info;
        let offset = u64::from(index) * info.piece_length;
        if info.version != MetaVersion::V2 {
            let size = info.piece_size(index) as u32;
            let h = super::verify::hash_stored(&*l.storage, offset, size)?;
            return Ok(Some(h == info.piece_hash(index)));
        }
        let Some((layer, want)) = self.v2_piece_hash(index) else {
            return Ok(None);
        };
        let data = info.piece_data_size(index);
        let got = merkle_stored(&*l.storage, offset, data, layer)?;
        if got != want {
            return Ok(Some(false));
        }
        // the alignment gap after the file's end (pad, BEP 47/52) is zeros:
        // nothing unchecked is uploaded
        let pad = (info.piece_size(index) - data) as usize;
        let mut buf = vec![0u8; pad.min(merkle::BLOCK_SIZE as usize)];
        let mut done = 0usize;
        while done < pad {
            let n = (pad - done).min(buf.len());
            l.storage
                .read_at(offset + data + done as u64, &mut buf[..n])?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(Some(false));
            }
            done += n;
        }
        Ok(Some(true))
    }

    /// The Merkle hash piece `index` must have and its layer, for a
    /// v2-only torrent (see [`Trees::piece_hash`]).
    pub(super) fn v2_piece_hash(&self, index: u32) -> Option<(u32, Hash)> {
        let info = &self.loaded()?.info;
        self.lock().trees.piece_hash(info, index)
    }
}

/// The Merkle root, at `layer`, of the `len` bytes at absolute `offset` of
/// `storage` (a piece's file data: its 16 KiB blocks hashed, padded with
/// zero hashes to 2^`layer` leaves). Errors: the storage's.
pub(super) fn merkle_stored(
    storage: &dyn crate::storage::Storage,
    offset: u64,
    len: u64,
    layer: u32,
) -> std::io::Result<Hash> {
    let block = merkle::BLOCK_SIZE;
    let mut buf = vec![0u8; block.min(len) as usize];
    let mut leaves = Vec::with_capacity(len.div_ceil(block) as usize);
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(block) as usize;
        storage.read_at(offset + done, &mut buf[..n])?;
        leaves.push(merkle::block_hash(&buf[..n]));
        done += n as u64;
    }
    Ok(merkle::root_of(&leaves, 0, 1 << layer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::{Flavor, build_v2};

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|k| (k * 7 % 251) as u8).collect()
    }

    /// A v2-only torrent of one 10-piece file and one small file, 32 KiB
    /// pieces, as an `Info`.
    fn torrent() -> (Info, Vec<u8>) {
        let big = content(32768 * 9 + 5000);
        let small = content(3000);
        let files = vec![
            (vec!["big.bin".to_string()], big.len() as u64),
            (vec!["small.bin".to_string()], small.len() as u64),
        ];
        let data = [big.clone(), small];
        let mut src = |f: usize, off: u64, buf: &mut [u8]| -> std::io::Result<()> {
            let off = off as usize;
            buf.copy_from_slice(&data[f][off..off + buf.len()]);
            Ok(())
        };
        let built = build_v2("t", &files, 32768, Flavor::V2Only, &mut src).unwrap();
        (Info::from_bytes(&built.info_raw).unwrap(), big)
    }

    #[test]
    fn fetches_verifies_and_answers_a_piece_layer() {
        let (info, big) = torrent();
        let mut t = Trees::new(&info, None);
        assert!(!t.ready());
        let now = Instant::now();
        let req = t.next_request(1, now).expect("the big file's layer");
        assert_eq!((req.base_layer, req.index, req.length), (1, 0, 16));
        assert_eq!(t.next_request(2, now), None, "asked of peer 1 already");
        // the true layer, hashed from the data
        let shape = info.file_tree(0).unwrap();
        let layer: Vec<Hash> = big
            .chunks(32768)
            .map(|p| merkle::root_of(&merkle::block_hashes(p), 0, 2))
            .collect();
        let good = Layers::from_piece_hashes(shape, layer, &req.pieces_root).unwrap();
        let answer = good.answer(&req).unwrap();
        // a range nobody asked for, then forged hashes: refused, nothing kept
        let mut other = req;
        other.index = 16;
        assert!(matches!(
            t.on_hashes(2, &other, &answer),
            Err(HashesError::Unasked)
        ));
        let mut forged = answer.clone();
        forged[3][0] ^= 1;
        assert!(matches!(
            t.on_hashes(1, &req, &forged),
            Err(HashesError::Proof(_))
        ));
        assert!(!t.ready());
        // the chunk goes to another peer at once, not back to the forger
        assert_eq!(t.next_request(1, now), None);
        assert_eq!(t.next_request(2, now), Some(req));
        assert_eq!(
            t.on_hashes(2, &req, &answer).unwrap(),
            Some(req.pieces_root)
        );
        assert!(t.ready());
        // pieces are checked against the layer; the small file's against its root
        let (layer, h) = t.piece_hash(&info, 3).unwrap();
        assert_eq!(layer, 1);
        assert_eq!(h, good.node(1, 3).unwrap());
        let (_, h) = t.piece_hash(&info, 10).unwrap();
        assert_eq!(
            Some(h),
            info.files
                .iter()
                .find(|f| f.length == 3000)
                .unwrap()
                .pieces_root
        );
        // we answer what we hold, and reject what we do not
        assert_eq!(t.answer(&req).unwrap(), answer);
        let mut bad = req;
        bad.base_layer = 0;
        assert!(t.answer(&bad).is_err());
        bad = req;
        bad.length = 1 << 20;
        assert!(t.answer(&bad).is_err());
        // a remount from the saved layers needs no peer
        let saved = t.held.to_bencode().encode();
        let again = Trees::new(&info, Some(saved));
        assert!(again.ready());
        assert_eq!(again.piece_hash(&info, 3), t.piece_hash(&info, 3));
        // a damaged cache is ignored, the layer fetched again
        let damaged = Trees::new(&info, Some(b"garbage".to_vec()));
        assert!(!damaged.ready());
    }

    #[test]
    fn reject_and_timeout_move_the_chunk_to_another_peer() {
        let (info, _) = torrent();
        let mut t = Trees::new(&info, None);
        let now = Instant::now();
        let req = t.next_request(1, now).unwrap();
        t.on_reject(1, &req);
        assert_eq!(
            t.next_request(1, now),
            None,
            "not of the peer that rejected"
        );
        assert_eq!(t.next_request(2, now), Some(req));
        assert_eq!(t.next_request(3, now + ASK_TIMEOUT), Some(req));
    }

    /// A hybrid fetches no layer and checks pieces by SHA-1; with its
    /// layers cached (one we made) it answers hash requests from them,
    /// without them it rejects.
    #[test]
    fn hybrid_answers_from_cached_layers_only() {
        let big = content(32768 * 9 + 5000);
        let files = vec![(vec!["big.bin".to_string()], big.len() as u64)];
        let mut src = |_: usize, off: u64, buf: &mut [u8]| -> std::io::Result<()> {
            let off = off as usize;
            buf.copy_from_slice(&big[off..off + buf.len()]);
            Ok(())
        };
        let built = build_v2("t", &files, 32768, Flavor::Hybrid, &mut src).unwrap();
        let info = Info::from_bytes(&built.info_raw).unwrap();
        let root = built.files[0].pieces_root.unwrap();
        let shape = info.file_tree(0).unwrap();
        let req = chunk_request(&root, &shape, 0);

        let mut bare = Trees::new(&info, None);
        assert!(bare.ready(), "a hybrid waits for no layer");
        assert_eq!(bare.next_request(1, Instant::now()), None);
        assert!(matches!(bare.answer(&req), Err(RequestError::OtherFile)));

        let cached = built.piece_layers.to_bencode().encode();
        let mut t = Trees::new(&info, Some(cached));
        assert!(t.ready());
        assert_eq!(t.next_request(1, Instant::now()), None);
        assert_eq!(t.piece_hash(&info, 0), None, "pieces are checked by SHA-1");
        let layer = built.piece_layers.file_layers(&info, 0).unwrap();
        assert_eq!(t.answer(&req).unwrap(), layer.answer(&req).unwrap());
        // hashes nobody asked for are still dropped
        let answer = t.answer(&req).unwrap();
        assert!(matches!(
            t.on_hashes(1, &req, &answer),
            Err(HashesError::Unasked)
        ));
    }
}
