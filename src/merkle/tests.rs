use super::*;

/// The test data the known answers below were made from:
/// `bytes((i * 31 + 7 + i // 65536) % 256 for i in range(n))` in Python.
fn data(n: u64) -> Vec<u8> {
    (0..n)
        .map(|i| ((i * 31 + 7 + i / 65536) % 256) as u8)
        .collect()
}

/// Data whose blocks all differ (unlike [`data`], whose blocks repeat every
/// 16 KiB below 64 KiB).
fn mixed(n: u64) -> Vec<u8> {
    (0..n)
        .map(|i| ((i * 31 + 7 + (i / 251) * 17) % 256) as u8)
        .collect()
}

fn h(hex: &str) -> Hash {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).unwrap();
    out
}

/// (file length, piece length, pieces root, piece layer hashes, SHA-256 of
/// the concatenated piece layer), as python3-libtorrent 2.0.8's
/// `create_torrent(..., flags=v2_only)` + `set_piece_hashes` wrote them for
/// [`data`].
const LIBTORRENT: &[(u64, u64, &str, usize, &str)] = &[
    (
        1,
        16384,
        "ca358758f6d27e6cf45272937977a748fd88391db679ceda7dc7bf1f005ee879",
        0,
        "",
    ),
    (
        16383,
        16384,
        "4ec02ea4d34056322abca5e9c6ae6ee3c9cfe8a87e5fa40d74ec98e23ca8fd73",
        0,
        "",
    ),
    (
        16384,
        16384,
        "9038ac64e659335ccbfdd3f684f35a26a2c9e580d9af6b4807af3adbe2c257e3",
        0,
        "",
    ),
    (
        16385,
        16384,
        "f8e5d977fedb5e7216b0a5447273be907002da13e65219777df56e4948327727",
        2,
        "f8e5d977fedb5e7216b0a5447273be907002da13e65219777df56e4948327727",
    ),
    (
        100000,
        16384,
        "9e505196d468c3060b17ae2c417efaf89f5c6ad67e2774a0a4d4ece11e5b084b",
        7,
        "2e52e164a42a55cdae574a657a9792df4f1a0ed639cdcf20cc48f08d233469e2",
    ),
    (
        100000,
        65536,
        "9e505196d468c3060b17ae2c417efaf89f5c6ad67e2774a0a4d4ece11e5b084b",
        2,
        "9e505196d468c3060b17ae2c417efaf89f5c6ad67e2774a0a4d4ece11e5b084b",
    ),
    (
        1048576,
        65536,
        "619a2b6b50598c83c649101e971c3d1626296a6c61dd92ae2a6cf1115ce13123",
        16,
        "415c369076aa3b4c95c8908310d6db315b59e0ccc9752339c3138c7fd9f62f36",
    ),
    (
        81937,
        32768,
        "af7815f81f7f8cf79a1d6977e5cf97c90ea06cdfb852e0208950530a8a811c71",
        3,
        "4b342fa359684b75ac5c0d32d98ec948f1e6a667fa133df1ddf152483cde899a",
    ),
    (
        3145733,
        1048576,
        "95a13916484df5679e256da9950846ffd7b60420cd54ac9dd1d294f1a4aec2c0",
        4,
        "072efea2143d0b6de7329ea30d8d2f0bd47893cf441cc27a70e2177cf471d87f",
    ),
    (
        3145733,
        16384,
        "95a13916484df5679e256da9950846ffd7b60420cd54ac9dd1d294f1a4aec2c0",
        193,
        "7a5521252b184e6156504c2497cb1d4aa04ab7cf8346dc1442faf2382a2c3e6d",
    ),
    (
        262144,
        262144,
        "d237dea5d0c7e36c8e05e86e8c999f9d88766294cfbbc137e8919be6c873c203",
        0,
        "",
    ),
    (
        262145,
        131072,
        "e3297319b12e4cf237f363ece68935b468329415658c32d4dc53140e9c92669d",
        3,
        "448809afcffe1b019aebeae7e2cbec7bc8d44d5394b18865a0b28d4f42007818",
    ),
];

fn hash_file(d: &[u8], piece_length: u64, chunk: usize) -> FileHashes {
    let mut hasher = FileHasher::new(piece_length).unwrap();
    for c in d.chunks(chunk) {
        hasher.update(c).unwrap();
    }
    hasher.finish().unwrap()
}

/// Every node of every layer, from the leaves: the reference tree.
fn full(d: &[u8], piece_length: u64) -> Layers {
    let shape = TreeShape::new(d.len() as u64, piece_length).unwrap();
    Layers::build(shape, 0, block_hashes(d)).unwrap()
}

#[test]
fn pad_hashes() {
    assert_eq!(pad_hash(0), [0; 32]);
    // SHA-256 of 64 zero bytes
    assert_eq!(
        pad_hash(1),
        h("f5a5fd42d16a20302798ef6ed309979b43003d2320d9f0e8ea9831a92759fb4b")
    );
    for l in 0..70 {
        assert_eq!(pad_hash(l + 1), hash_pair(&pad_hash(l), &pad_hash(l)));
    }
    // a subtree of zero leaves is the pad of its height
    assert_eq!(root_of(&[[0; 32]; 8], 0, 8), pad_hash(3));
    assert_eq!(root_of(&[], 2, 4), pad_hash(4));
}

#[test]
fn roots_and_piece_layers_match_libtorrent() {
    for &(len, pl, root, n, layer_sha) in LIBTORRENT {
        let d = data(len);
        for chunk in [1usize, 7, 16384, 100_003, d.len()] {
            if chunk == 1 && len > 20000 {
                continue;
            }
            let got = hash_file(&d, pl, chunk);
            assert_eq!(hex::encode(got.root), root, "{len} {pl} chunk {chunk}");
            assert_eq!(got.piece_layer.len(), n, "{len} {pl}");
            if n > 0 {
                let sha: Hash = Sha256::digest(got.piece_layer.concat()).into();
                assert_eq!(hex::encode(sha), layer_sha, "{len} {pl}");
            }
        }
        // the same from the leaves, from the piece layer, and from pieces
        let shape = TreeShape::new(len, pl).unwrap();
        let tree = full(&d, pl);
        assert_eq!(hex::encode(tree.root()), root);
        let hashes = hash_file(&d, pl, 65536);
        let piece_hashes: Vec<Hash> = if n > 0 {
            hashes.piece_layer.clone()
        } else {
            vec![hashes.root]
        };
        let from_pieces = Layers::from_piece_hashes(shape, piece_hashes.clone(), &h(root)).unwrap();
        assert_eq!(from_pieces.base_layer(), shape.piece_hash_layer());
        assert_eq!(
            tree.layer(shape.piece_hash_layer()).unwrap(),
            &piece_hashes[..]
        );
        // each piece's bytes hash to its piece hash
        for (p, want) in piece_hashes.iter().enumerate() {
            let start = p as u64 * pl;
            let end = (start + pl).min(len);
            let got = data_hash(shape.piece_hash_layer(), &d[start as usize..end as usize]);
            assert_eq!(got.unwrap(), *want, "{len} {pl} piece {p}");
        }
        if n > 0 {
            let layer = verify_piece_layer(&shape, &h(root), &hashes.piece_layer.concat()).unwrap();
            assert_eq!(layer, hashes.piece_layer);
        }
    }
}

#[test]
fn shape_numbers() {
    let s = TreeShape::new(100_000, 16384).unwrap();
    assert_eq!(
        (s.blocks(), s.leaves(), s.root_layer(), s.piece_layer()),
        (7, 8, 3, 0)
    );
    assert_eq!(
        (s.num_pieces(), s.has_piece_layer(), s.piece_hash_layer()),
        (7, true, 0)
    );
    assert_eq!((s.layer_width(0), s.layer_len(0)), (8, 7));
    assert_eq!((s.layer_width(2), s.layer_len(2)), (2, 2));
    assert_eq!((s.layer_width(3), s.layer_len(3)), (1, 1));
    assert_eq!((s.layer_width(4), s.layer_len(4)), (0, 0));
    assert_eq!(s.node_data_len(0, 6), 100_000 - 6 * 16384);
    assert_eq!(s.node_data_len(0, 7), 0);
    assert_eq!(s.node_data_len(2, 1), 100_000 - 65536);
    assert_eq!(s.node_data_len(9, 0), 0);
    // a one-piece file: its piece hash is the root, over 4 leaf slots
    let s = TreeShape::new(50_000, 1 << 20).unwrap();
    assert_eq!((s.num_pieces(), s.has_piece_layer()), (1, false));
    assert_eq!(
        (s.piece_layer(), s.root_layer(), s.piece_hash_layer()),
        (6, 2, 2)
    );
    // exactly one piece: still no piece layer
    let s = TreeShape::new(1 << 20, 1 << 20).unwrap();
    assert_eq!(
        (s.num_pieces(), s.has_piece_layer(), s.piece_hash_layer()),
        (1, false, 6)
    );
    // the largest file: 2^30 leaves, 30 layers
    let s = TreeShape::new(MAX_FILE_LENGTH, 16384).unwrap();
    assert_eq!((s.blocks(), s.root_layer()), ((1 << 30) - 1, 30));
}

#[test]
fn bounds_are_refused() {
    assert_eq!(TreeShape::new(0, 16384), Err(MerkleError::EmptyFile));
    assert_eq!(
        TreeShape::new(MAX_FILE_LENGTH + 1, 16384),
        Err(MerkleError::FileTooLarge(MAX_FILE_LENGTH + 1))
    );
    for pl in [0, 1, 8192, 16383, 16385, 3 << 14, 1 << 31, u64::MAX] {
        assert_eq!(TreeShape::new(1, pl), Err(MerkleError::BadPieceLength(pl)));
        assert!(FileHasher::new(pl).is_err());
    }
    // the largest power of two within libtorrent's piece-length limit
    // (MAX_PIECE_LENGTH, 32767 blocks) is 2^28; 2^29 is above it
    assert!(TreeShape::new(1, 1 << 28).is_ok());
    assert_eq!(
        TreeShape::new(1, 1 << 29),
        Err(MerkleError::BadPieceLength(1 << 29))
    );
    // a leaf layer of 2^30 nodes is refused before anything is allocated
    let big = TreeShape::new(MAX_FILE_LENGTH, 16384).unwrap();
    assert_eq!(
        Layers::build(big, 0, Vec::new()),
        Err(MerkleError::TooManyNodes {
            layer: 0,
            nodes: (1 << 30) - 1
        })
    );
    // ... but its top layers are fine
    let top = Layers::build(big, 28, vec![[1; 32]; 4]).unwrap();
    assert_eq!(top.layer(30).unwrap().len(), 1);
    let s = TreeShape::new(100_000, 16384).unwrap();
    assert_eq!(
        Layers::build(s, 4, vec![]),
        Err(MerkleError::NoSuchLayer {
            layer: 4,
            root_layer: 3
        })
    );
    assert_eq!(
        Layers::build(s, 0, vec![[0; 32]; 8]),
        Err(MerkleError::LayerLength {
            layer: 0,
            got: 8,
            want: 7
        })
    );
    assert_eq!(
        data_hash(1, &[0; 32769]),
        Err(MerkleError::DataTooLong {
            got: 32769,
            layer: 1,
            max: 32768
        })
    );
    assert!(data_hash(60, b"x").is_err());
    // an empty file has no root
    assert_eq!(
        FileHasher::new(16384).unwrap().finish(),
        Err(MerkleError::EmptyFile)
    );
}

#[test]
fn piece_layer_checks() {
    let d = data(100_000);
    let shape = TreeShape::new(100_000, 16384).unwrap();
    let hashes = hash_file(&d, 16384, 4096);
    let bytes = hashes.piece_layer.concat();
    assert_eq!(
        verify_piece_layer(&shape, &hashes.root, &bytes[..bytes.len() - 1]),
        Err(MerkleError::NotWholeHashes(223))
    );
    assert_eq!(
        verify_piece_layer(&shape, &hashes.root, &bytes[..192]),
        Err(MerkleError::LayerLength {
            layer: 0,
            got: 6,
            want: 7
        })
    );
    let mut bad = bytes.clone();
    bad[40] ^= 1;
    assert_eq!(
        verify_piece_layer(&shape, &hashes.root, &bad),
        Err(MerkleError::RootMismatch)
    );
    // pad slots are never listed: a layer with the pads appended is refused
    let mut padded = bytes.clone();
    padded.extend_from_slice(&pad_hash(0));
    assert!(verify_piece_layer(&shape, &hashes.root, &padded).is_err());
    // a one-piece file has no layer at all
    let small = TreeShape::new(16384, 16384).unwrap();
    let root = block_hash(&d[..16384]);
    assert_eq!(verify_piece_layer(&small, &root, &[]), Ok(vec![]));
    assert!(verify_piece_layer(&small, &root, &root).is_err());
    // wrong root for the right layer
    assert_eq!(
        Layers::from_piece_hashes(shape, hashes.piece_layer.clone(), &[9; 32]),
        Err(MerkleError::RootMismatch)
    );
}

#[test]
fn uncle_counts_as_libtorrent() {
    // count + max(0, proof_layers - log2(count) + 1)
    assert_eq!(uncle_count(512, 8), 0);
    assert_eq!(uncle_count(512, 9), 1);
    assert_eq!(uncle_count(512, 12), 4);
    assert_eq!(uncle_count(2, 0), 0);
    assert_eq!(uncle_count(2, 3), 3);
    assert_eq!(uncle_count(1, 0), 1);
    assert_eq!(uncle_count(1, 4), 5);
    assert_eq!(uncle_count(3, 4), 3); // rounded up to 4
    assert_eq!(uncle_count(0, 4), 5);
    assert_eq!(uncle_count(u32::MAX, u32::MAX), u32::MAX - 31);
}

/// Every valid request of a few small trees: answered from the full tree,
/// and from a tree held from the piece layer up (with the lower nodes given
/// separately), verified against the root or against a known node; every
/// tampered hash is caught.
#[test]
fn every_request_round_trips() {
    for (len, pl) in [
        (16384u64 * 5, 16384u64),
        (16384 * 13 + 5, 32768),
        (16384 * 16, 65536),
        (16384 * 17, 16384),
        (1 + 16384 * 2, 65536),
    ] {
        let d = mixed(len);
        let tree = full(&d, pl);
        let shape = tree.shape();
        let root = tree.root();
        let mut checked = 0;
        for base in 0..shape.root_layer() {
            let width = shape.layer_width(base);
            let mut length = 1u32;
            while u64::from(length) <= width {
                for index in (0..width as u32).step_by(length as usize) {
                    for proof_layers in 0..shape.root_layer() - base {
                        let req = HashRequest {
                            pieces_root: root,
                            base_layer: base,
                            index,
                            length,
                            proof_layers,
                        };
                        let hashes = tree.answer(&req).unwrap();
                        assert_eq!(
                            hashes.len() as u32,
                            length + uncle_count(length, proof_layers)
                        );
                        // anchored at the root, or at the node the proof reaches
                        let v = verify_hashes(&shape, &root, &req, &hashes, |l, i| tree.node(l, i))
                            .unwrap_or_else(|e| panic!("{len} {req:?}: {e}"));
                        let data_nodes = shape.layer_len(base).saturating_sub(u64::from(index));
                        let want: Vec<Hash> = (u64::from(index)
                            ..u64::from(index) + u64::from(length).min(data_nodes))
                            .map(|i| tree.node(base, i).unwrap())
                            .collect();
                        assert_eq!(v.nodes, want);
                        for (l, i, hh) in &v.uncles {
                            assert_eq!(tree.node(*l, *i), Some(*hh));
                        }
                        // without anything known, only a proof up to the root passes
                        let top = base + (proof_layers + 1).max(length.trailing_zeros());
                        let alone = verify_hashes(&shape, &root, &req, &hashes, |_, _| None);
                        assert_eq!(alone.is_ok(), top == shape.root_layer(), "{req:?}");
                        // every hash matters
                        for k in 0..hashes.len() {
                            let mut bad = hashes.clone();
                            bad[k][k % 32] ^= 0x40;
                            assert!(
                                verify_hashes(&shape, &root, &req, &bad, |l, i| tree.node(l, i))
                                    .is_err(),
                                "{req:?}: hash {k} changed but accepted"
                            );
                        }
                        // one hash too many or too few
                        let mut more = hashes.clone();
                        more.push([0; 32]);
                        assert!(matches!(
                            verify_hashes(&shape, &root, &req, &more, |l, i| tree.node(l, i)),
                            Err(ProofError::Count { .. })
                        ));
                        assert!(matches!(
                            verify_hashes(
                                &shape,
                                &root,
                                &req,
                                &hashes[..hashes.len() - 1],
                                |l, i| tree.node(l, i)
                            ),
                            Err(ProofError::Count { .. })
                        ));
                        // held from the piece layer: nodes below it come from
                        // the data (as a seed computes them per piece)
                        let held = Layers::build(
                            shape,
                            shape.piece_hash_layer(),
                            tree.layer(shape.piece_hash_layer()).unwrap().to_vec(),
                        )
                        .unwrap();
                        let leaves = block_hashes(&d);
                        let lookup = |l: u32, i: u64| {
                            held.node(l, i).or_else(|| {
                                let first = (i << l) as usize;
                                let n = 1usize << l;
                                let slice = leaves.get(first..(first + n).min(leaves.len()))?;
                                Some(root_of(slice, 0, n as u64))
                            })
                        };
                        assert_eq!(answer(&shape, &req, lookup).unwrap(), hashes);
                        checked += 1;
                    }
                }
                length *= 2;
            }
        }
        assert!(checked > 10, "{len}: {checked}");
    }
}

#[test]
fn requests_out_of_bounds_are_refused() {
    let d = data(16384 * 13 + 5); // 14 blocks, 16 leaves, root layer 4
    let tree = full(&d, 16384);
    let shape = tree.shape();
    let root = tree.root();
    let req = |base_layer, index, length, proof_layers| HashRequest {
        pieces_root: root,
        base_layer,
        index,
        length,
        proof_layers,
    };
    let cases = [
        (req(0, 0, 0, 0), RequestError::Empty),
        (req(0, 0, 8193, 0), RequestError::TooLong(8193)),
        (req(0, 0, u32::MAX, 0), RequestError::TooLong(u32::MAX)),
        (req(0, 0, 3, 0), RequestError::NotPowerOfTwo(3)),
        (
            req(0, 2, 4, 0),
            RequestError::Misaligned {
                index: 2,
                length: 4,
            },
        ),
        (
            req(4, 0, 1, 0),
            RequestError::BaseLayer {
                base: 4,
                root_layer: 4,
            },
        ),
        (
            req(u32::MAX, 0, 1, 0),
            RequestError::BaseLayer {
                base: u32::MAX,
                root_layer: 4,
            },
        ),
        (
            req(0, 16, 2, 0),
            RequestError::OutOfRange {
                base: 0,
                index: 16,
                end: 18,
                width: 16,
            },
        ),
        (
            req(0, u32::MAX - 1, 2, 0),
            RequestError::OutOfRange {
                base: 0,
                index: u32::MAX - 1,
                end: u64::from(u32::MAX) + 1,
                width: 16,
            },
        ),
        (
            req(2, 0, 8, 0),
            RequestError::OutOfRange {
                base: 2,
                index: 0,
                end: 8,
                width: 4,
            },
        ),
        (
            req(1, 0, 2, 3),
            RequestError::ProofLayers {
                base: 1,
                proof_layers: 3,
                root_layer: 4,
            },
        ),
        (
            req(0, 0, 2, u32::MAX),
            RequestError::ProofLayers {
                base: 0,
                proof_layers: u32::MAX,
                root_layer: 4,
            },
        ),
    ];
    for (r, want) in cases {
        assert_eq!(tree.answer(&r), Err(want.clone()), "{r:?}");
        assert_eq!(
            verify_hashes(&shape, &root, &r, &[[0; 32]; 4], |_, _| None),
            Err(ProofError::Range(want)),
            "{r:?}"
        );
    }
    // another file's root
    assert_eq!(
        tree.answer(&HashRequest {
            pieces_root: [1; 32],
            ..req(0, 0, 2, 3)
        }),
        Err(RequestError::OtherFile)
    );
    // the pads past the data are answered; a held tree missing nodes rejects
    let ok = req(0, 14, 2, 3);
    let hashes = tree.answer(&ok).unwrap();
    assert_eq!(&hashes[..2], &[pad_hash(0), pad_hash(0)]);
    let top_only = Layers::build(shape, 3, tree.layer(3).unwrap().to_vec()).unwrap();
    assert_eq!(
        top_only.answer(&req(0, 0, 2, 3)),
        Err(RequestError::Missing { layer: 0, index: 0 })
    );
    assert!(top_only.answer(&req(3, 0, 2, 0)).is_ok());
    // a one-block file: nothing to ask, the root is the block hash
    let one = full(b"x", 16384);
    assert!(matches!(
        one.answer(&HashRequest {
            pieces_root: one.root(),
            ..req(0, 0, 1, 0)
        }),
        Err(RequestError::BaseLayer { .. })
    ));
    // a proof that stops below the root needs a known node there
    let partial = req(0, 0, 2, 1);
    let hashes = tree.answer(&partial).unwrap();
    assert_eq!(
        verify_hashes(&shape, &root, &partial, &hashes, |_, _| None),
        Err(ProofError::Unanchored { layer: 2, index: 0 })
    );
    assert_eq!(
        verify_hashes(&shape, &root, &partial, &hashes, |_, _| Some([7; 32])),
        Err(ProofError::Mismatch { layer: 2, index: 0 })
    );
    // all the way up, but to another root
    let full_req = req(0, 0, 2, 3);
    let hashes = tree.answer(&full_req).unwrap();
    assert_eq!(
        verify_hashes(&shape, &[1; 32], &full_req, &hashes, |_, _| None),
        Err(ProofError::RootMismatch)
    );
}

#[test]
fn single_blocks_verify_against_root_and_piece() {
    for (len, pl) in [
        (16384u64 * 13 + 5, 65536u64),
        (16384 * 4, 16384),
        (100, 16384),
    ] {
        let d = mixed(len);
        let tree = full(&d, pl);
        let shape = tree.shape();
        let root = tree.root();
        let pieces = tree.layer(shape.piece_hash_layer()).unwrap().to_vec();
        let per_piece = 1u64 << shape.piece_hash_layer();
        for b in 0..shape.blocks() {
            let start = (b * BLOCK_SIZE) as usize;
            let block = &d[start..(start + BLOCK_SIZE as usize).min(d.len())];
            let proof = tree.block_proof(b, shape.root_layer()).unwrap();
            assert_eq!(proof.len() as u32, shape.root_layer());
            assert_eq!(verify_block(&shape, b, block, &proof, &root), Ok(()));
            // the short proof, up to the block's piece hash
            let short = tree.block_proof(b, shape.piece_hash_layer()).unwrap();
            let piece = pieces[(b / per_piece) as usize];
            assert_eq!(verify_block(&shape, b, block, &short, &piece), Ok(()));
            // a changed byte, the wrong block, the wrong anchor
            let mut bad = block.to_vec();
            bad[0] ^= 1;
            assert!(matches!(
                verify_block(&shape, b, &bad, &proof, &root),
                Err(ProofError::Mismatch { .. })
            ));
            if shape.blocks() > 1 {
                let other = (b + 1) % shape.blocks();
                let r = verify_block(&shape, other, block, &proof, &root);
                assert!(r.is_err(), "block {b} accepted as {other}");
            }
            // a block cut short or zero-filled to 16 KiB is not the block
            if block.len() > 1 {
                assert!(matches!(
                    verify_block(&shape, b, &block[1..], &proof, &root),
                    Err(ProofError::BlockLength { .. })
                ));
            }
        }
        assert_eq!(
            verify_block(&shape, shape.blocks(), b"", &[], &root),
            Err(ProofError::NoSuchBlock {
                block: shape.blocks(),
                blocks: shape.blocks()
            })
        );
        let too_long = vec![[0; 32]; shape.root_layer() as usize + 1];
        assert!(matches!(
            verify_block(&shape, 0, &d[..(d.len().min(16384))], &too_long, &root),
            Err(ProofError::ProofLength { .. })
        ));
        assert_eq!(tree.block_proof(shape.blocks(), 0), None);
        assert_eq!(tree.block_proof(0, shape.root_layer() + 1), None);
    }
}

#[test]
fn hasher_limits() {
    let mut hasher = FileHasher::new(16384).unwrap();
    hasher.update(b"abc").unwrap();
    hasher.length = MAX_FILE_LENGTH;
    assert!(matches!(
        hasher.update(b"d"),
        Err(MerkleError::FileTooLarge(_))
    ));
    let mut hasher = FileHasher::new(16384).unwrap();
    hasher.piece_layer = vec![[0; 32]; MAX_LAYER_NODES as usize];
    hasher.leaves = vec![[0; 32]; 1];
    assert!(matches!(
        hasher.update(&[0; 16384]),
        Err(MerkleError::TooManyNodes { .. })
    ));
}
