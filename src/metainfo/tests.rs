use super::*;
use crate::bencode::Owned;

fn file(path: &[&[u8]], len: i64) -> Owned {
    Owned::dict().insert("length", len).insert(
        "path",
        Owned::List(path.iter().map(|p| Owned::from(*p)).collect()),
    )
}

/// A multi-file info dict named `name` with the given entries and enough
/// piece hashes (16 KiB pieces).
fn multi(name: &[u8], files: Vec<Owned>) -> Vec<u8> {
    let total: i64 = files
        .iter()
        .map(|f| match f {
            Owned::Dict(d) => match (d.get(&b"length"[..]), d.get(&b"attr"[..])) {
                (Some(Owned::Int(n)), Some(Owned::Bytes(a))) if a.contains(&b'l') => {
                    let _ = n;
                    0
                }
                (Some(Owned::Int(n)), _) => *n,
                _ => 0,
            },
            _ => 0,
        })
        .sum();
    // tests with huge sizes fail before `pieces` is read: keep it small then
    let n = (total as u64).div_ceil(16384).clamp(1, 4096) as usize;
    Owned::dict()
        .insert("name", name)
        .insert("piece length", 16384)
        .insert("pieces", vec![0u8; 20 * n])
        .insert("files", Owned::List(files))
        .encode()
}

fn paths(info: &Info) -> Vec<String> {
    info.files.iter().map(|f| f.path.join("/")).collect()
}

fn err(raw: &[u8]) -> String {
    Info::from_bytes(raw).unwrap_err().to_string()
}

#[test]
fn hostile_paths_never_leave_the_torrent() {
    let raw = multi(
        b"t",
        vec![
            file(&[b"..", b"..", b"x"], 1),
            file(&[b"/etc", b"passwd"], 1),
            file(&[b"..\\..\\y"], 1),
            file(&[b"a\0b", b"c"], 1),
            file(&[b"", b"", b"z"], 1),
            file(&[b"..", b".."], 1),
            file(&[b".", b"w"], 1),
            file(&[b"/"], 1),
            file(&[b"..\\"], 1),
        ],
    );
    let info = Info::from_bytes(&raw).unwrap();
    assert_eq!(
        paths(&info),
        [
            "t/x",
            "t/etc/passwd",
            "t/....y",
            "t/ab/c",
            "t/_/_/z",
            // `t/_` is a directory (line above), so the files are renamed
            "t/_.1",
            "t/_/w",
            "t/_.2",
            "t/_.3",
        ]
    );
    for f in &info.files {
        assert_eq!(f.path[0], "t");
        for c in &f.path {
            assert!(!c.is_empty() && c != "." && c != "..");
            assert!(!c.contains('/') && !c.contains('\0') && !c.contains('\\'));
        }
    }
}

#[test]
fn hostile_names() {
    // single-file: a name that sanitizes to nothing is refused
    for name in [&b".."[..], b"/", b"\0\0", b"", b"."] {
        let raw = Owned::dict()
            .insert("name", name)
            .insert("length", 5)
            .insert("piece length", 16384)
            .insert("pieces", vec![0u8; 20])
            .encode();
        let e = err(&raw);
        assert!(e.contains("`name`") && e.contains("empty"), "{e}");
    }
    // multi-file: named after the info-hash
    let raw = multi(b"..", vec![file(&[b"a"], 1)]);
    let info = Info::from_bytes(&raw).unwrap();
    assert_eq!(info.name, InfoHash::of_info(&raw).to_hex());
    assert_eq!(paths(&info), [format!("{}/a", info.name)]);
    // slashes inside the name are removed
    let raw = multi(b"/abs/../name", vec![file(&[b"a"], 1)]);
    assert_eq!(Info::from_bytes(&raw).unwrap().name, "abs..name");
}

#[test]
fn duplicates_renamed_case_sensitively() {
    let raw = multi(
        b"t",
        vec![
            file(&[b"foo", b"bar.txt"], 1),
            file(&[b"foo", b"bar.txt"], 1),
            file(&[b"foo", b"bar.txt"], 1),
            file(&[b"foo", b"BAR.txt"], 1),
            file(&[b"d"], 1),
            file(&[b"d", b"inner"], 1),
            file(&[b"foo", b"bar.1.txt"], 1),
        ],
    );
    let info = Info::from_bytes(&raw).unwrap();
    assert_eq!(
        paths(&info),
        [
            "t/foo/bar.txt",
            "t/foo/bar.1.txt",
            "t/foo/bar.2.txt",
            "t/foo/BAR.txt",
            "t/d.1",
            "t/d/inner",
            "t/foo/bar.1.1.txt",
        ]
    );
}

#[test]
fn duplicate_renaming_is_bounded() {
    let files: Vec<Owned> = (0..40).map(|_| file(&[b"same"], 1)).collect();
    let e = Info::from_bytes(&multi(b"t", files)).unwrap_err();
    assert_eq!(e, MetainfoError::TooManyDuplicates(MAX_RENAME_PROBES));
    assert!(e.to_string().contains("too many duplicate file names"));
    let files: Vec<Owned> = (0..30).map(|_| file(&[b"same"], 1)).collect();
    let info = Info::from_bytes(&multi(b"t", files)).unwrap();
    assert_eq!(info.files[29].path, ["t", "same.29"]);
}

#[test]
fn pad_files() {
    let pad = Owned::dict().insert("attr", "p").insert("length", 16383);
    let raw = multi(
        b"t",
        vec![
            file(&[b"a"], 1),
            pad,
            file(&[b"b"], 5),
            file(&[b"x", b"_____padding_file_0"], 16379),
            file(&[b"c"], 3),
        ],
    );
    let info = Info::from_bytes(&raw).unwrap();
    let pads: Vec<bool> = info.files.iter().map(|f| f.pad).collect();
    assert_eq!(pads, [false, true, false, true, false]);
    assert_eq!(info.files[1].path, ["t", ".pad", "16383"]);
    let offsets: Vec<u64> = info.files.iter().map(|f| f.offset).collect();
    assert_eq!(offsets, [0, 1, 16384, 16389, 32768]);
    assert_eq!(info.file_pieces(2), 1..2);
    assert_eq!(info.file_pieces(4), 2..3);
    // a non-pad file without path is refused
    let raw = multi(b"t", vec![Owned::dict().insert("length", 3)]);
    assert!(err(&raw).contains("`files[0].path` is missing"));
}

#[test]
fn symlinks_are_confined_and_sanitized_like_paths() {
    let link = |target: &[&[u8]]| {
        Owned::dict()
            .insert("attr", "lx")
            .insert(
                "path",
                Owned::List(vec![Owned::from("a"), Owned::from("link")]),
            )
            .insert(
                "symlink path",
                Owned::List(target.iter().map(|p| Owned::from(*p)).collect()),
            )
    };
    let raw = multi(
        b"t",
        vec![file(&[b"a", b"/", b"bar"], 10), link(&[b"a", b"/", b"bar"])],
    );
    let info = Info::from_bytes(&raw).unwrap();
    assert_eq!(info.files[0].path, ["t", "a", "_", "bar"]);
    assert_eq!(
        info.files[1].symlink.as_deref(),
        Some(&["t", "a", "_", "bar"].map(String::from)[..])
    );
    assert_eq!(info.files[1].length, 0);
    assert!(info.files[1].executable);

    for target in [
        &[&b".."[..], b"..", b"..", b"etc", b"passwd"][..],
        &[b"/etc/passwd"],
        &[b"/"],
        &[],
    ] {
        let raw = multi(b"t", vec![file(&[b"f"], 10), link(target)]);
        let info = Info::from_bytes(&raw).unwrap();
        let t = info.files[1].symlink.clone().unwrap();
        assert_eq!(t[0], "t", "{target:?}");
        assert!(t.iter().all(|c| c != ".." && c != "." && !c.contains('/')));
        // none of these exists in the torrent: the link points to itself;
        // an empty target names the torrent's root directory
        if target.is_empty() {
            assert_eq!(t, ["t"]);
        } else {
            assert_eq!(t, info.files[1].path, "{target:?}");
        }
    }
    // a symlink without `symlink path` is an empty regular file
    let raw = multi(
        b"t",
        vec![
            file(&[b"f"], 10),
            Owned::dict()
                .insert("attr", "l")
                .insert("path", Owned::List(vec![Owned::from("g")])),
        ],
    );
    let info = Info::from_bytes(&raw).unwrap();
    assert_eq!(info.files[1].symlink, None);
    assert_eq!(info.files[1].length, 0);
}

#[test]
fn field_errors_name_the_field() {
    let base = |pl: Owned| {
        Owned::dict()
            .insert("name", "x")
            .insert("length", 5)
            .insert("piece length", pl)
            .insert("pieces", vec![0u8; 20])
            .encode()
    };
    assert_eq!(
        err(&base(Owned::Int(-1))),
        "info dictionary: `piece length` must be a positive integer, got -1"
    );
    assert_eq!(
        err(&base(Owned::Int(0))),
        "info dictionary: `piece length` must be a positive integer, got 0"
    );
    assert!(
        err(&base(Owned::from("16384")))
            .contains("`piece length` must be a positive integer, got a byte string")
    );
    assert!(err(&base(Owned::Int(1 << 30))).contains(
        "`piece length` is 1073741824 bytes, more than the largest accepted, 536854528 bytes"
    ));
    assert!(err(&base(Owned::Int(MAX_PIECE_LENGTH as i64 + 1))).contains("536854529 bytes"));
    assert!(Info::from_bytes(&base(Owned::Int(MAX_PIECE_LENGTH as i64))).is_ok());

    let e = Info::from_bytes(b"d4:name1:x6:lengthi5ee").unwrap_err();
    assert_eq!(e.field(), Some("piece length"));
    let e = Info::from_bytes(b"le").unwrap_err();
    assert_eq!(e, MetainfoError::NotADictionary);
    let e = Info::from_bytes(b"d4:name").unwrap_err();
    assert!(matches!(e, MetainfoError::Bencode(_)));
    // negative and overlong lengths
    let raw = multi(b"t", vec![file(&[b"a"], -45)]);
    assert_eq!(
        err(&raw),
        "info dictionary: `files[0].length` must not be negative, got -45"
    );
    let raw = multi(b"t", vec![file(&[b"a"], MAX_FILE_LENGTH as i64 + 1)]);
    assert!(err(&raw).contains("`files[0].length` is"));
    // wrong types inside path
    let raw = multi(
        b"t",
        vec![
            Owned::dict()
                .insert("length", 1)
                .insert("path", Owned::List(vec![Owned::from("a"), Owned::Int(4)])),
        ],
    );
    assert!(err(&raw).contains("`files[0].path` element 1 must be a byte string"));
    // empty files list, zero total
    assert!(err(&multi(b"t", vec![])).contains("`files` is empty"));
    assert!(err(&multi(b"t", vec![file(&[b"a"], 0)])).contains("`length` adds up to 0 bytes"));
}

#[test]
fn path_depth_limited() {
    let deep: Vec<&[u8]> = vec![b"d"; MAX_PATH_DEPTH + 1];
    let e = err(&multi(b"t", vec![file(&deep, 1)]));
    assert!(e.contains("`files[0].path` has 101 elements"), "{e}");
    let ok: Vec<&[u8]> = vec![b"d"; MAX_PATH_DEPTH];
    assert!(Info::from_bytes(&multi(b"t", vec![file(&ok, 1)])).is_ok());
}

#[test]
fn piece_count_checked_before_allocating() {
    // 1.76 TB at 16 KiB pieces with a single hash: refused as too many pieces
    let raw = Owned::dict()
        .insert("name", "x")
        .insert("length", 1_759_218_597_889i64)
        .insert("piece length", 16384)
        .insert("pieces", vec![0u8; 20])
        .encode();
    let e = err(&raw);
    assert!(e.contains("`pieces` would need too many pieces"), "{e}");
    // many huge files: the count is computed from the lengths, not allocated
    let big = MAX_FILE_LENGTH as i64;
    let files: Vec<Owned> = (0..50)
        .map(|i: i32| file(&[i.to_string().as_bytes()], big))
        .collect();
    let raw = Owned::dict()
        .insert("name", "t")
        .insert("piece length", 16384)
        .insert("pieces", vec![0u8; 20])
        .insert("files", Owned::List(files))
        .encode();
    let e = err(&raw);
    assert!(e.contains("`pieces` would need too many pieces"), "{e}");
    // hash count must match
    let raw = Owned::dict()
        .insert("name", "x")
        .insert("length", 16385)
        .insert("piece length", 16384)
        .insert("pieces", vec![0u8; 20])
        .encode();
    assert!(err(&raw).contains("`pieces` holds 1 hashes"));
    let raw = Owned::dict()
        .insert("name", "x")
        .insert("length", 1)
        .insert("piece length", 16384)
        .insert("pieces", vec![0u8; 24])
        .encode();
    assert!(err(&raw).contains("not a multiple of 20"));
}

#[test]
fn raw_bytes_are_hashed_and_unsorted_v1_accepted() {
    let raw = b"d4:name4:temp6:lengthi425e12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
    let info = Info::from_bytes(raw).unwrap();
    assert_eq!(info.info_hash, InfoHash::of_info(raw));
    assert_eq!(info.raw, raw.to_vec());
    assert_eq!(info.piece_size(0), 425);
    assert_eq!(info.piece_size(1), 0);
    assert_eq!(info.piece_hash(0), [b'a'; 20]);
    assert_eq!(info.file_pieces(0), 0..1);
    assert!(!info.private);
    // from a .torrent file with trailing garbage
    let mut torrent = b"d8:announce3:url4:info".to_vec();
    torrent.extend_from_slice(raw);
    torrent.extend_from_slice(b"eGARBAGE");
    let from_file = Info::from_torrent_file(&torrent).unwrap();
    assert_eq!(from_file, info);
    assert_eq!(info_span(&torrent).unwrap(), 22..22 + raw.len());
    assert_eq!(
        Info::from_torrent_file(b"10:libtorrent").unwrap_err(),
        MetainfoError::TorrentFile("not a dictionary")
    );
}

#[test]
fn v2_rules() {
    let v2_only = Owned::dict()
        .insert(
            "file tree",
            Owned::dict().insert(
                "f",
                Owned::dict().insert(
                    "",
                    Owned::dict()
                        .insert("length", 5)
                        .insert("pieces root", vec![1u8; 32]),
                ),
            ),
        )
        .insert("meta version", 2)
        .insert("name", "f")
        .insert("piece length", 16384)
        .encode();
    // v2-only loads (details in v2_tests.rs)
    let info = Info::from_bytes(&v2_only).unwrap();
    assert_eq!(info.version, MetaVersion::V2);
    assert_eq!(info.files[0].pieces_root, Some([1; 32]));
    // a hybrid whose halves agree loads through v1
    let hybrid = |v1_name: &str, v1_len: i64| {
        Owned::dict()
            .insert(
                "file tree",
                Owned::dict().insert(
                    "f",
                    Owned::dict().insert(
                        "",
                        Owned::dict()
                            .insert("length", 5)
                            .insert("pieces root", vec![1u8; 32]),
                    ),
                ),
            )
            .insert("length", v1_len)
            .insert("meta version", 2)
            .insert("name", v1_name)
            .insert("piece length", 16384)
            .insert("pieces", vec![0u8; 20])
            .encode()
    };
    assert_eq!(
        Info::from_bytes(&hybrid("f", 5)).unwrap().files[0].path,
        ["f"]
    );
    assert!(matches!(
        Info::from_bytes(&hybrid("g", 5)),
        Err(MetainfoError::V1V2Mismatch(_))
    ));
    assert!(matches!(
        Info::from_bytes(&hybrid("f", 6)),
        Err(MetainfoError::V1V2Mismatch(_))
    ));
    // meta version 3, non-canonical with meta version
    let v3 = b"d12:meta versioni3e4:name1:xe";
    assert!(err(v3).contains("`meta version` is 3, an unknown version"));
    let unsorted = b"d4:name1:x12:meta versioni2ee";
    assert_eq!(
        Info::from_bytes(unsorted).unwrap_err(),
        MetainfoError::NotCanonical
    );
    let leading_zero = b"d12:meta versioni02e4:name1:xe";
    assert_eq!(
        Info::from_bytes(leading_zero).unwrap_err(),
        MetainfoError::NotCanonical
    );
}

#[test]
fn symlink_targets_settled_like_libtorrent() {
    let link = |path: &[&[u8]], target: &[&[u8]]| {
        Owned::dict()
            .insert("attr", "l")
            .insert(
                "path",
                Owned::List(path.iter().map(|p| Owned::from(*p)).collect()),
            )
            .insert(
                "symlink path",
                Owned::List(target.iter().map(|p| Owned::from(*p)).collect()),
            )
    };
    let raw = multi(
        b"t",
        vec![
            // through `v/cur`, a link listed later that only resolves relative
            link(&[b"top"], &[b"v", b"cur", b"file"]),
            file(&[b"v", b"A", b"file"], 3),
            link(&[b"v", b"cur"], &[b"A"]),
            link(&[b"v", b"rooted"], &[b"v", b"A", b"file"]),
            link(&[b"dangling"], &[b"nowhere"]),
            link(&[b"loop1"], &[b"loop2", b"x"]),
            link(&[b"loop2"], &[b"loop1", b"x"]),
        ],
    );
    let info = Info::from_bytes(&raw).unwrap();
    let targets: Vec<Option<String>> = info
        .files
        .iter()
        .map(|f| f.symlink.as_ref().map(|t| t.join("/")))
        .collect();
    assert_eq!(
        targets,
        [
            Some("t/v/cur/file".into()),
            None,
            Some("t/v/A".into()),
            Some("t/v/A/file".into()),
            Some("t/dangling".into()),
            Some("t/loop1".into()),
            Some("t/loop2".into()),
        ]
    );
}
