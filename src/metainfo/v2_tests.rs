//! v2-only and hybrid info dictionaries, piece layers and the v2 builder.

use super::*;
use crate::bencode::Owned;
use crate::merkle::{FileHasher, Layers};

fn leaf(length: i64, root: Option<[u8; 32]>) -> Owned {
    let mut d = Owned::dict().insert("length", length);
    if let Some(r) = root {
        d = d.insert("pieces root", r.to_vec());
    }
    Owned::dict().insert("", d)
}

fn v2_info(tree: Owned, name: &str, piece_length: i64) -> Vec<u8> {
    Owned::dict()
        .insert("file tree", tree)
        .insert("meta version", 2)
        .insert("name", name)
        .insert("piece length", piece_length)
        .encode()
}

fn err(raw: &[u8]) -> String {
    Info::from_bytes(raw).unwrap_err().to_string()
}

/// Deterministic file contents: file `i` of `len` bytes.
fn content(i: usize, len: u64) -> Vec<u8> {
    (0..len)
        .map(|k| ((k * 7 + i as u64 * 13 + k / 977) % 256) as u8)
        .collect()
}

fn build(files: &[(Vec<String>, u64)], pl: u64, flavor: Flavor) -> BuiltV2 {
    let mut read = |file: usize, offset: u64, buf: &mut [u8]| {
        let c = content(file, files[file].1);
        buf.copy_from_slice(&c[offset as usize..offset as usize + buf.len()]);
        Ok(())
    };
    build_v2("root", files, pl, flavor, &mut read).unwrap()
}

fn p(s: &str) -> Vec<String> {
    s.split('/').map(str::to_string).collect()
}

#[test]
fn v2_only_single_file() {
    let raw = v2_info(
        Owned::dict().insert("test1MB", leaf(1048576, Some([5; 32]))),
        "ignored",
        65536,
    );
    let info = Info::from_bytes(&raw).unwrap();
    assert_eq!(info.version, MetaVersion::V2);
    let v2 = InfoHashV2::of_info(&raw);
    assert_eq!(info.info_hash_v2, Some(v2));
    assert_eq!(info.info_hash, v2.truncated());
    assert_eq!(info.info_hash_v1(), None);
    // named after its one file, as libtorrent names it
    assert_eq!(info.name, "test1MB");
    assert!(!info.multi_file);
    assert!(info.pieces.is_empty());
    assert_eq!(info.files.len(), 1);
    assert_eq!(info.files[0].path, ["test1MB"]);
    assert_eq!(info.files[0].pieces_root, Some([5; 32]));
    assert_eq!((info.num_pieces(), info.total_length), (16, 1048576));
    assert_eq!(info.piece_size(15), 65536);
    assert_eq!(info.piece_size(16), 0);
    // a single file has no pad: its short last piece ends the piece space
    let raw = v2_info(
        Owned::dict().insert("f", leaf(20000, Some([5; 32]))),
        "f",
        16384,
    );
    let one = Info::from_bytes(&raw).unwrap();
    assert_eq!(one.files.len(), 1);
    assert_eq!(
        (one.total_length, one.piece_size(1), one.piece_data_size(1)),
        (20000, 3616, 3616)
    );
    assert_eq!(info.piece_file(3), Some(0));
    let shape = info.file_tree(0).unwrap();
    assert_eq!((shape.num_pieces(), shape.root_layer()), (16, 6));
    // the name comes from the key, sanitized; a key that sanitizes to
    // nothing is refused like a v1 single-file name
    let raw = v2_info(
        Owned::dict().insert(&b"\x82est/MB"[..], leaf(5, Some([5; 32]))),
        "x",
        16384,
    );
    assert_eq!(Info::from_bytes(&raw).unwrap().name, "\\x82est\\x2fMB");
    let raw = v2_info(
        Owned::dict().insert("..", leaf(5, Some([5; 32]))),
        "x",
        16384,
    );
    assert!(err(&raw).contains("`name` is empty after sanitizing"));
    // `name` is still required
    let raw = Owned::dict()
        .insert(
            "file tree",
            Owned::dict().insert("f", leaf(5, Some([5; 32]))),
        )
        .insert("meta version", 2)
        .insert("piece length", 16384)
        .encode();
    assert!(err(&raw).contains("`name` is missing"));
}

#[test]
fn v2_only_layout_is_piece_aligned() {
    // tree order: a, b, d, sub/c (what libtorrent's create_torrent writes)
    let tree = Owned::dict()
        .insert("a", leaf(100, Some([1; 32])))
        .insert("b", leaf(0, None))
        .insert("d", leaf(5, Some([2; 32])))
        .insert("sub", Owned::dict().insert("c", leaf(20480, Some([3; 32]))));
    let info = Info::from_bytes(&v2_info(tree, "root", 16384)).unwrap();
    let got: Vec<(String, u64, u64, bool)> = info
        .files
        .iter()
        .map(|f| (f.path.join("/"), f.length, f.offset, f.pad))
        .collect();
    let want = [
        ("root/a", 100, 0, false),
        ("root/.pad/16284", 16284, 100, true),
        ("root/b", 0, 16384, false),
        ("root/d", 5, 16384, false),
        ("root/.pad/16379", 16379, 16389, true),
        ("root/sub/c", 20480, 32768, false),
        ("root/.pad/12288", 12288, 53248, true),
    ];
    let want: Vec<(String, u64, u64, bool)> = want
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), *b, *c, *d))
        .collect();
    assert_eq!(got, want);
    // the last file is padded too, as libtorrent pads it
    assert_eq!((info.total_length, info.num_pieces()), (65536, 4));
    let sizes: Vec<u64> = (0..5).map(|i| info.piece_size(i)).collect();
    assert_eq!(sizes, [16384, 16384, 16384, 16384, 0]);
    // the bytes each piece's Merkle hash covers
    let data: Vec<u64> = (0..5).map(|i| info.piece_data_size(i)).collect();
    assert_eq!(data, [100, 5, 16384, 4096, 0]);
    let owners: Vec<Option<usize>> = (0..5).map(|i| info.piece_file(i)).collect();
    assert_eq!(owners, [Some(0), Some(3), Some(5), Some(5), None]);
    assert_eq!(info.file_pieces(5), 2..4);
    assert_eq!(info.file_tree(2), None); // empty file: no tree
    assert_eq!(info.file_tree(1), None); // pad
    // a v1 torrent has no v2 piece owners
    let v1 = build_info(&[(vec![], 5)], "x", 16384, vec![[0; 20]]);
    assert_eq!(Info::from_bytes(&v1).unwrap().piece_file(0), None);
}

#[test]
fn v2_only_names_are_sanitized_and_deduplicated() {
    let tree = Owned::dict()
        .insert("//", leaf(16384, Some([1; 32])))
        .insert("\\", leaf(16384, Some([2; 32])))
        .insert("stress_test2", leaf(16384, Some([3; 32])));
    let info = Info::from_bytes(&v2_info(tree, "test", 16384)).unwrap();
    let paths: Vec<String> = info.files.iter().map(|f| f.path.join("/")).collect();
    assert_eq!(paths, ["test/_", "test/_.1", "test/stress_test2"]);
    // symlinks: length 0, no root, target rooted at the torrent
    let link = Owned::dict().insert(
        "",
        Owned::dict()
            .insert("attr", "l")
            .insert("length", 0)
            .insert("symlink path", Owned::List(vec!["dir".into(), "f".into()])),
    );
    let tree = Owned::dict()
        .insert("dir", Owned::dict().insert("f", leaf(10, Some([1; 32]))))
        .insert("link", link);
    let info = Info::from_bytes(&v2_info(tree, "t", 16384)).unwrap();
    // the file's pad follows it, the link takes no room
    assert_eq!(info.files[1].path, ["t", ".pad", "16374"]);
    assert_eq!(info.files[2].path, ["t", "link"]);
    assert_eq!(info.files[2].symlink, Some(p("t/dir/f")));
    assert_eq!(info.files[2].pieces_root, None);
    assert_eq!(info.files[2].offset, 16384);
    assert_eq!(info.total_length, 16384);
}

#[test]
fn v2_only_refusals() {
    let ok_leaf = || leaf(5, Some([1; 32]));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            Owned::dict()
                .insert("meta version", 2)
                .insert("name", "x")
                .insert("piece length", 16384)
                .encode(),
            "`file tree` is missing",
        ),
        (
            v2_info(Owned::dict(), "x", 16384),
            "`file tree` holds no files",
        ),
        (
            v2_info(Owned::dict().insert("", Owned::dict()), "x", 16384),
            "empty file name outside a file entry",
        ),
        (
            v2_info(Owned::dict().insert("f", leaf(5, None)), "x", 16384),
            "no valid `pieces root`",
        ),
        (
            v2_info(
                Owned::dict().insert("f", leaf(5, Some([0; 32]))),
                "x",
                16384,
            ),
            "no valid `pieces root`",
        ),
        (
            v2_info(Owned::dict().insert("f", leaf(-1, None)), "x", 16384),
            "invalid length -1",
        ),
        (
            v2_info(Owned::dict().insert("f", Owned::Int(1)), "x", 16384),
            "entry 'f' is an integer",
        ),
        (
            v2_info(Owned::dict().insert("f", ok_leaf()), "x", 32768 + 16384),
            "`piece length` must be a power of two",
        ),
        (
            v2_info(Owned::dict().insert("f", ok_leaf()), "x", 8192),
            "`piece length` must be a power of two",
        ),
        (
            v2_info(
                Owned::dict().insert(
                    "f",
                    Owned::dict().insert(
                        "",
                        Owned::dict()
                            .insert("attr", "p")
                            .insert("length", 5)
                            .insert("pieces root", vec![1u8; 32]),
                    ),
                ),
                "x",
                16384,
            ),
            "pad attribute",
        ),
        (
            v2_info(
                Owned::dict()
                    .insert("e", leaf(0, None))
                    .insert("f", leaf(0, None)),
                "x",
                16384,
            ),
            "no content",
        ),
    ];
    for (raw, want) in cases {
        let e = err(&raw);
        assert!(e.contains(want), "'{e}' lacks '{want}'");
    }
    // sizes: 3 files just under 16 TiB in 16 KiB pieces
    let big = (MAX_FILE_LENGTH) as i64;
    let tree = Owned::dict()
        .insert("a", leaf(big, Some([1; 32])))
        .insert("b", leaf(big, Some([1; 32])));
    assert!(err(&v2_info(tree, "x", 16384)).contains("too many pieces"));
    let too_big = MAX_FILE_LENGTH as i64 + 1;
    let tree = Owned::dict().insert("a", leaf(too_big, Some([1; 32])));
    assert!(err(&v2_info(tree, "x", 16384)).contains("invalid length"));
}

#[test]
fn hybrid_files_get_their_roots() {
    let built = build(
        &[(p("a"), 100), (p("b"), 0), (p("sub/c"), 40000)],
        16384,
        Flavor::Hybrid,
    );
    let info = &built.info;
    assert_eq!(info.version, MetaVersion::Hybrid);
    assert_eq!(info.info_hash_v1(), built.info_hash_v1);
    assert_eq!(info.info_hash_v2, Some(built.info_hash_v2));
    let roots: Vec<(String, bool)> = info
        .files
        .iter()
        .map(|f| (f.path.join("/"), f.pieces_root.is_some()))
        .collect();
    assert_eq!(
        roots,
        [
            ("root/a".to_string(), true),
            ("root/.pad/16284".to_string(), false),
            ("root/b".to_string(), false),
            ("root/sub/c".to_string(), true),
            ("root/.pad/9152".to_string(), false),
        ]
    );
    // the hybrid's roots are the files' Merkle roots
    let mut h = FileHasher::new(16384).unwrap();
    h.update(&content(2, 40000)).unwrap();
    let hashes = h.finish().unwrap();
    assert_eq!(info.files[3].pieces_root, Some(hashes.root));
    assert_eq!(
        built.piece_layers.get(&hashes.root),
        Some(&hashes.piece_layer[..])
    );
    // hybrids keep v1 piece sizes, pads included
    assert_eq!(info.piece_size(0), 16384);
    assert_eq!(info.piece_file(0), Some(0));
    assert_eq!(info.piece_file(1), Some(3));
}

#[test]
fn builder_output_is_deterministic_and_loads() {
    let files = vec![
        (p("z/last"), 70000),
        (p("a"), 100),
        (p("empty"), 0),
        (p("m/x"), 16384),
        (p("m/y"), 16385),
    ];
    for flavor in [Flavor::Hybrid, Flavor::V2Only] {
        let one = build(&files, 16384, flavor);
        let two = build(&files, 16384, flavor);
        assert_eq!(one.info_raw, two.info_raw);
        assert_eq!(one.torrent_file(), two.torrent_file());
        // the input order does not matter
        let mut rev = files.clone();
        rev.reverse();
        let mut read = |file: usize, offset: u64, buf: &mut [u8]| {
            let orig = files.iter().position(|f| f.0 == rev[file].0).unwrap();
            let c = content(orig, rev[file].1);
            buf.copy_from_slice(&c[offset as usize..offset as usize + buf.len()]);
            Ok(())
        };
        let three = build_v2("root", &rev, 16384, flavor, &mut read).unwrap();
        assert_eq!(three.info_raw, one.info_raw);
        // tree order, piece-aligned offsets, roots, layers
        let order: Vec<String> = one.files.iter().map(|f| f.path.join("/")).collect();
        assert_eq!(order, ["a", "empty", "m/x", "m/y", "z/last"]);
        let offsets: Vec<u64> = one.files.iter().map(|f| f.offset).collect();
        assert_eq!(offsets, [0, 16384, 16384, 32768, 65536]);
        assert_eq!(one.piece_layers.len(), 2); // m/y and z/last
        let info = Info::from_bytes(&one.info_raw).unwrap();
        assert_eq!(info, one.info);
        for bf in &one.files {
            let e = info
                .files
                .iter()
                .find(|f| f.path[1..] == bf.path[..])
                .unwrap();
            assert_eq!(
                (e.offset, e.length, e.pieces_root),
                (bf.offset, bf.length, bf.pieces_root)
            );
        }
        // the whole .torrent: its piece layers check out
        let torrent = one.torrent_file();
        let back = Info::from_torrent_file(&torrent).unwrap();
        assert_eq!(back, info);
        let layers = PieceLayers::from_torrent_file(&torrent, &back).unwrap();
        assert_eq!(layers, one.piece_layers);
        for i in 0..info.files.len() {
            if info.files[i].pieces_root.is_some() {
                let l: Layers = layers.file_layers(&info, i).unwrap();
                assert_eq!(Some(l.root()), info.files[i].pieces_root);
            }
        }
        // v1 pieces of a hybrid are the SHA-1 of the padded piece space
        if flavor == Flavor::Hybrid {
            use sha1::Digest;
            let mut space = vec![0u8; info.total_length as usize];
            for bf in &one.files {
                let c = content(bf.input, bf.length);
                space[bf.offset as usize..(bf.offset + bf.length) as usize].copy_from_slice(&c);
            }
            for (i, chunk) in space.chunks(16384).enumerate() {
                assert_eq!(sha1::Sha1::digest(chunk)[..], info.pieces[i][..]);
            }
            assert_eq!(info.total_length, 65536 + 81920); // tail pad included
        }
        // v2-only: the same piece space (libtorrent pads the last file too)
        assert_eq!(info.total_length, 65536 + 81920);
        // the magnet names both hashes (or the v2 one)
        let url = one.magnet().to_url();
        assert!(url.contains(&format!("urn:btmh:1220{}", one.info_hash_v2.to_hex())));
        assert_eq!(url.contains("urn:btih:"), flavor == Flavor::Hybrid);
    }
    // a single file: `length` and a one-entry tree named after the torrent
    let single = build(&[(vec![], 20000)], 16384, Flavor::Hybrid);
    assert!(!single.info.multi_file);
    assert_eq!(single.info.files.len(), 1);
    assert_eq!(single.info.total_length, 20000);
    assert_eq!(single.info.name, "root");
}

/// A [`V2Source`] as a trait object.
type Reader<'a> = dyn FnMut(usize, u64, &mut [u8]) -> std::io::Result<()> + 'a;

#[test]
fn builder_refusals() {
    let mut zeros = |_: usize, _: u64, buf: &mut [u8]| {
        buf.fill(0);
        Ok(())
    };
    let b = |files: &[(Vec<String>, u64)], pl: u64, read: &mut Reader| {
        let mut f = |a: usize, o: u64, buf: &mut [u8]| read(a, o, buf);
        build_v2("root", files, pl, Flavor::Hybrid, &mut f).map(|_| ())
    };
    assert!(matches!(
        b(&[(p("a"), 0)], 16384, &mut zeros),
        Err(BuildV2Error::NoContent)
    ));
    assert!(matches!(
        b(&[], 16384, &mut zeros),
        Err(BuildV2Error::NoContent)
    ));
    assert!(matches!(
        b(&[(p("a"), 1)], 16385, &mut zeros),
        Err(BuildV2Error::BadPieceLength(16385))
    ));
    assert!(matches!(
        b(&[(p("a"), 1), (p("a"), 2)], 16384, &mut zeros),
        Err(BuildV2Error::PathConflict(_))
    ));
    assert!(matches!(
        b(&[(p("a"), 1), (p("a/b"), 2)], 16384, &mut zeros),
        Err(BuildV2Error::PathConflict(_))
    ));
    for bad in ["..", ".", "", "a/b", "x\0y"] {
        let r = b(&[(vec![bad.to_string()], 1)], 16384, &mut zeros);
        assert!(matches!(r, Err(BuildV2Error::BadName(_))), "{bad}: {r:?}");
    }
    assert!(matches!(
        b(&[(vec![], 1), (p("a"), 1)], 16384, &mut zeros),
        Err(BuildV2Error::SingleFile)
    ));
    let mut failing = |_: usize, _: u64, _: &mut [u8]| Err(std::io::Error::other("disk on fire"));
    let r = b(&[(p("x"), 5)], 16384, &mut failing);
    assert!(matches!(&r, Err(BuildV2Error::Io { file: 0, .. })), "{r:?}");
    assert!(r.unwrap_err().to_string().contains("disk on fire"));
    let mut zeros2 = |_: usize, _: u64, buf: &mut [u8]| {
        buf.fill(0);
        Ok(())
    };
    assert!(matches!(
        build_v2("..", &[(p("a"), 1)], 16384, Flavor::V2Only, &mut zeros2),
        Err(BuildV2Error::BadName(_))
    ));
}

#[test]
fn piece_layer_refusals() {
    let built = build(
        &[(p("big"), 100_000), (p("small"), 10)],
        16384,
        Flavor::V2Only,
    );
    let info = &built.info;
    let root = info.files[0].pieces_root.unwrap();
    let small_root = info.files[2].pieces_root.unwrap();
    let layer = built.piece_layers.get(&root).unwrap().concat();
    let torrent = |layers: Owned| {
        Owned::dict()
            .insert("info", Owned::Raw(built.info_raw.clone()))
            .insert("piece layers", layers)
            .encode()
    };
    let refused = |layers: Owned| {
        PieceLayers::from_torrent_file(&torrent(layers), info)
            .unwrap_err()
            .to_string()
    };
    let mut bad = layer.clone();
    bad[0] ^= 1;
    assert!(refused(Owned::dict().insert(root.to_vec(), bad)).contains("`pieces root`"));
    assert!(
        refused(Owned::dict().insert(root.to_vec(), layer[..32].to_vec())).contains("must hold 7")
    );
    assert!(
        refused(Owned::dict().insert(root.to_vec(), layer[..33].to_vec())).contains("whole number")
    );
    assert!(refused(Owned::dict().insert(root.to_vec(), 5)).contains("byte string"));
    assert!(
        refused(Owned::dict().insert(vec![7u8; 32], layer.clone())).contains("root of no file")
    );
    assert!(refused(Owned::dict().insert(vec![7u8; 31], layer.clone())).contains("31 bytes"));
    assert!(refused(Owned::List(vec![])).contains("must be a dictionary"));
    // a one-piece file has no layer to give
    assert!(
        refused(Owned::dict().insert(small_root.to_vec(), small_root.to_vec()))
            .contains("must hold 0")
    );
    // absent: fine, fetched later
    let none = Owned::dict()
        .insert("info", Owned::Raw(built.info_raw.clone()))
        .encode();
    assert!(
        PieceLayers::from_torrent_file(&none, info)
            .unwrap()
            .is_empty()
    );
    // a .torrent whose info is another torrent's
    let other = build(&[(p("q"), 5)], 16384, Flavor::V2Only);
    assert!(matches!(
        PieceLayers::from_torrent_file(&other.torrent_file(), info),
        Err(MetainfoError::TorrentFile(_))
    ));
    // v1 torrents have none, whatever the file says
    let v1 = build_info(&[(vec![], 5)], "x", 16384, vec![[0; 20]]);
    let v1_info = Info::from_bytes(&v1).unwrap();
    let t = Owned::dict()
        .insert("info", Owned::Raw(v1))
        .insert("piece layers", 5)
        .encode();
    assert!(
        PieceLayers::from_torrent_file(&t, &v1_info)
            .unwrap()
            .is_empty()
    );
}
