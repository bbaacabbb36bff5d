//! Conformance with libtorrent's crafted test torrents (issue 9, parts 1 and
//! 2; issue 14 for v2).
//!
//! For every file of libtorrent's crafted test torrents (libtorrent's
//! `test/test_torrents/`, found by `support::test_torrents`:
//! `$BTFS_TEST_TORRENTS` or `../shared/torrents/libtorrent/` next to the
//! crate; a loud SKIP without them, a failure under `CI=true`),
//! the raw `info` bytes are cut out as a BEP 9 peer would serve them and
//! handed to [`Info::from_bytes`]. The test checks:
//! 1. the info-hash is the SHA-1 of exactly those bytes, and equals the one
//!    `info_of.py` printed (precomputed in `tests/data/conformance.tsv`, with
//!    the byte span), and our own [`info_span`] finds the same span; for
//!    `meta version` 2, the v2 info-hash is their SHA-256 (as libtorrent
//!    computed it), and a v2-only torrent's 20-byte info-hash is that
//!    SHA-256 truncated;
//! 2. the torrent loads or is refused as the table says; a refusal's message
//!    names the field;
//! 3. for loaded torrents: name, piece length, piece count, total size and
//!    every entry (path after sanitizing, size, offset, pad flag, symlink
//!    target) match `tests/data/conformance_files.tsv`.
//!
//! The data files are written by `tests/data/make_conformance.py` from
//! `shared/torrents/EXPECTATIONS.md` and python3-libtorrent 2.0.8's
//! `lt.torrent_info` output; where 2.0.8 and current libtorrent differ the
//! script encodes current libtorrent's expectation. Every place where we
//! deliberately differ from current libtorrent is listed in [`DIFFERENCES`]
//! (and marked `btfs` in the data); the test fails if the two lists drift.
//!
//! Deliberate differences no file in this set exercises (documented in
//! `src/metainfo/mod.rs`): `_____padding_file_` marks a pad file only in a
//! path element, never through the torrent name; `attr` `l` and `p` are
//! ignored on a single-file torrent.
//!
//! The `piece layers` outside the info dictionary are checked by
//! [`piece_layers_of_whole_torrents`] against current libtorrent's
//! expectations (EXPECTATIONS.md, group H).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use btfs::InfoHash;
use btfs::metainfo::{Info, MetaVersion, PieceLayers, info_span};

#[path = "../mountpoint-tests/support/mod.rs"]
mod support;

/// Files whose expected outcome deliberately differs from current
/// libtorrent's, with the reason.
const DIFFERENCES: &[(&str, &str)] = &[
    (
        "pad_file_no_path.torrent",
        "a pad file without `path` gets `<name>/.pad/<length>` (libtorrent: `.pad/<length>`, \
         outside the torrent's directory); every entry path starts with the torrent name, and \
         pad files are never shown anyway",
    ),
    (
        "empty-files-2.torrent",
        "a hybrid is listed in its v1 `files` order, the order its v1 pieces hash: the empty \
         `2-empty` keeps its place before the pad file, at offset 512 (libtorrent lists the v2 \
         layout, with the empty file after the pad, at 16384); an empty file's offset holds no data",
    ),
    (
        "v2_invalid_filename.torrent",
        "a path element that is not valid UTF-8 is shown in a lossless `\\xHH` escape \
         (`\\x82est\\x2fMB`) rather than libtorrent's `_` per invalid sequence (`_estMB`), \
         issue 7",
    ),
];

/// Files whose whole .torrent our [`info_span`] refuses (the info dict is
/// then taken from the precomputed span), with the reason.
const SPAN_REFUSED: &[(&str, &str)] = &[
    (
        "v2_deep_recursion.torrent",
        "nested ~1000 levels: the decoder's depth limit (100) refuses the whole file",
    ),
    ("string.torrent", "not a dictionary: no info dict at all"),
];

/// Reads a generated TSV: skips `#` comments and the header line.
fn tsv(name: &str) -> Vec<Vec<String>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .skip(1)
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

struct Row {
    file: String,
    span: Option<(usize, usize)>,
    sha1: String,
    expect: String,
    detail: String,
    source: String,
    /// SHA-256 of the info bytes, for `meta version` 2.
    sha256: Option<String>,
}

#[derive(Debug, PartialEq)]
struct EntryRow {
    path: String,
    length: u64,
    offset: u64,
    pad: bool,
    symlink: Option<String>,
}

fn rows() -> Vec<Row> {
    tsv("conformance.tsv")
        .into_iter()
        .map(|c| {
            assert_eq!(c.len(), 9, "bad row {c:?}");
            Row {
                file: c[0].clone(),
                span: (c[1] != "-").then(|| (c[1].parse().unwrap(), c[2].parse().unwrap())),
                sha1: c[3].clone(),
                expect: c[4].clone(),
                detail: c[5].clone(),
                source: c[6].clone(),
                sha256: (c[8] != "-").then(|| c[8].clone()),
            }
        })
        .collect()
}

fn entry_rows() -> BTreeMap<String, Vec<EntryRow>> {
    let mut out: BTreeMap<String, Vec<EntryRow>> = BTreeMap::new();
    for c in tsv("conformance_files.tsv") {
        assert_eq!(c.len(), 7, "bad row {c:?}");
        let list = out.entry(c[0].clone()).or_default();
        assert_eq!(
            c[1].parse::<usize>().unwrap(),
            list.len(),
            "rows out of order"
        );
        list.push(EntryRow {
            path: c[2].clone(),
            length: c[3].parse().unwrap(),
            offset: c[4].parse().unwrap(),
            pad: c[5] == "pad",
            symlink: (c[6] != "-").then(|| c[6].clone()),
        });
    }
    out
}

fn ours(info: &Info) -> Vec<EntryRow> {
    info.files
        .iter()
        .map(|f| EntryRow {
            path: f.path.join("/"),
            length: f.length,
            offset: f.offset,
            pad: f.pad,
            symlink: f.symlink.as_ref().map(|t| t.join("/")),
        })
        .collect()
}

#[test]
fn libtorrent_test_torrents() {
    let Some(dir) = support::test_torrents("libtorrent_test_torrents") else {
        return;
    };
    let rows = rows();
    let entries = entry_rows();
    let mut failures: Vec<String> = Vec::new();
    let mut fail = |file: &str, msg: String| failures.push(format!("{file}: {msg}"));

    // the table covers exactly the files on disk
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let in_table: BTreeSet<String> = rows.iter().map(|r| r.file.clone()).collect();
    assert_eq!(
        on_disk, in_table,
        "the data file and the directory disagree"
    );
    assert_eq!(on_disk.len(), 108);

    // the `btfs` rows are exactly the listed differences
    let marked: BTreeSet<&str> = rows
        .iter()
        .filter(|r| r.source == "btfs")
        .map(|r| r.file.as_str())
        .collect();
    let listed: BTreeSet<&str> = DIFFERENCES.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        marked, listed,
        "DIFFERENCES and the data's `btfs` rows disagree"
    );

    let (mut loaded, mut refused) = (0, 0);
    for row in &rows {
        let f = row.file.as_str();
        let buf = std::fs::read(dir.join(f)).unwrap();
        let span_refused = SPAN_REFUSED.iter().any(|(s, _)| *s == f);
        let Some((start, end)) = row.span else {
            assert_eq!(row.expect, "none");
            if info_span(&buf).is_ok() || Info::from_torrent_file(&buf).is_ok() {
                fail(f, "has no info dict, but we found one".into());
            }
            continue;
        };
        let raw = &buf[start..end];

        // 1. the span and the info-hash
        match info_span(&buf) {
            Ok(span) if span == (start..end) => {}
            Ok(span) => fail(f, format!("info_span {span:?}, info_of.py {start}..{end}")),
            Err(e) if !span_refused => fail(f, format!("info_span refused: {e}")),
            Err(_) => {}
        }
        let hash = InfoHash::of_info(raw);
        {
            use sha1::Digest;
            let direct: [u8; 20] = sha1::Sha1::digest(raw).into();
            assert_eq!(hash.0, direct);
        }
        if hash.to_hex() != row.sha1 {
            fail(f, format!("info-hash {hash}, info_of.py {}", row.sha1));
        }

        // 2. and 3. the outcome
        let result = Info::from_bytes(raw);
        match (row.expect.as_str(), &result) {
            ("load", Ok(info)) => {
                loaded += 1;
                let v2 = info.info_hash_v2.map(|h| h.to_hex());
                if v2 != row.sha256 {
                    fail(f, format!("v2 info-hash {v2:?}, want {:?}", row.sha256));
                }
                let want_id = match info.version {
                    MetaVersion::V2 => info.info_hash_v2.unwrap().truncated(),
                    _ => hash,
                };
                if info.info_hash != want_id || info.raw != raw {
                    fail(f, "Info's hash or raw bytes differ from the input".into());
                }
                let want_version = match (&row.sha256, info.pieces.is_empty()) {
                    (None, _) => MetaVersion::V1,
                    (Some(_), true) => MetaVersion::V2,
                    (Some(_), false) => MetaVersion::Hybrid,
                };
                if info.version != want_version {
                    fail(f, format!("{:?}, want {want_version:?}", info.version));
                }
                // a v2 or hybrid torrent: every non-empty regular file has its root
                for fe in &info.files {
                    let want_root = want_version != MetaVersion::V1
                        && !fe.pad
                        && fe.symlink.is_none()
                        && fe.length > 0;
                    if fe.pieces_root.is_some() != want_root {
                        fail(
                            f,
                            format!("{}: pieces root {:?}", fe.path.join("/"), fe.pieces_root),
                        );
                    }
                }
                let summary = format!(
                    "{}|{}|{}|{}",
                    info.name,
                    info.piece_length,
                    info.num_pieces(),
                    info.total_length
                );
                if summary != row.detail {
                    fail(
                        f,
                        format!(
                            "name|piece length|pieces|total: {summary}, want {}",
                            row.detail
                        ),
                    );
                }
                let want = entries.get(f).map(Vec::as_slice).unwrap_or(&[]);
                let got = ours(info);
                if got != want {
                    fail(f, format!("entries\n  got  {got:?}\n  want {want:?}"));
                }
                if !span_refused {
                    match Info::from_torrent_file(&buf) {
                        Ok(whole) if &whole == info => {}
                        other => fail(f, format!("from_torrent_file differs: {other:?}")),
                    }
                }
            }
            ("refuse", Err(e)) => {
                refused += 1;
                let msg = e.to_string();
                if !msg.contains(&row.detail) {
                    fail(
                        f,
                        format!("refused with '{msg}', which does not name '{}'", row.detail),
                    );
                }
            }
            ("load", Err(e)) => fail(f, format!("refused ({e}), but should load")),
            ("refuse", Ok(info)) => fail(
                f,
                format!(
                    "loaded ({} entries), but should be refused: {}",
                    info.files.len(),
                    row.detail
                ),
            ),
            (other, _) => fail(f, format!("unknown expectation {other}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        (loaded, refused),
        (72, 35),
        "loaded / refused counts changed"
    );
}

/// The precomputed hashes agree with `python3 info_of.py` (a missing
/// python3 fails the test: it is a dependency of the suite).
#[test]
fn info_of_py_agrees_with_the_data() {
    let Some(dir) = support::test_torrents("info_of_py_agrees_with_the_data") else {
        return;
    };
    let script = dir.join("../info_of.py");
    let mut checked = 0;
    for row in rows().iter().filter(|r| r.span.is_some()).take(12) {
        let out = std::process::Command::new(support::PYTHON)
            .arg(&script)
            .arg(dir.join(&row.file))
            .output()
            .unwrap_or_else(|e| panic!("{} {}: {e}", support::PYTHON, script.display()));
        let printed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(printed.trim(), row.sha1, "{}", row.file);
        checked += 1;
    }
    assert_eq!(checked, 12);
}

/// Hostile variations of every info dict (bytes changed, truncated, digits
/// bumped) are refused or loaded, never a panic, and whatever loads keeps
/// every path inside the torrent.
#[test]
fn mutated_info_dicts_never_panic() {
    let Some(dir) = support::test_torrents("mutated_info_dicts_never_panic") else {
        return;
    };
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut tried = 0;
    for row in rows() {
        let Some((start, end)) = row.span else {
            continue;
        };
        let buf = std::fs::read(dir.join(&row.file)).unwrap();
        let raw = &buf[start..end];
        if raw.len() > 20_000 {
            continue; // the big ones only add time
        }
        for _ in 0..60 {
            let mut m = raw.to_vec();
            match next() % 4 {
                0 => {
                    let i = (next() as usize) % m.len();
                    m[i] = next() as u8;
                }
                1 => m.truncate((next() as usize) % m.len()),
                2 => {
                    // bump a digit: lengths, counts and string sizes change
                    let digits: Vec<usize> =
                        (0..m.len()).filter(|&i| m[i].is_ascii_digit()).collect();
                    if let Some(&i) = digits.get((next() as usize) % digits.len().max(1)) {
                        m[i] = b'0' + (next() % 10) as u8;
                    }
                }
                _ => {
                    let i = (next() as usize) % m.len();
                    let bytes: &[&[u8]] = &[b"..", b"/", b"\\", b"\0", b"l", b"d", b"e", b"i-1e"];
                    let ins = bytes[(next() as usize) % bytes.len()];
                    m.splice(i..i, ins.iter().copied());
                }
            }
            tried += 1;
            if let Ok(info) = Info::from_bytes(&m) {
                for f in &info.files {
                    for c in f.path.iter().chain(f.symlink.iter().flatten()) {
                        assert!(
                            !c.is_empty() && c != "." && c != ".." && !c.contains('/'),
                            "{}: bad component {c:?}",
                            row.file
                        );
                    }
                    assert_eq!(f.path[0], info.name);
                }
            }
        }
    }
    assert!(tried > 5000);
}

/// The `piece layers` of each whole .torrent that loads, as current
/// libtorrent judges them (EXPECTATIONS.md, group H, and its
/// `test_torrent_info.cpp` / `test_add_torrent.cpp`): refused when a layer
/// is not a string, not whole hashes, of the wrong length, does not hash to
/// its file's root, or is keyed by no file's root; accepted when absent or
/// incomplete (fetched from peers later). Accepted layers are checked
/// against libtorrent's own roots, so the Merkle code agrees with
/// libtorrent's on real data (up to 1000-piece layers).
#[test]
fn piece_layers_of_whole_torrents() {
    let Some(dir) = support::test_torrents("piece_layers_of_whole_torrents") else {
        return;
    };
    // file -> Err(what the message names) or Ok(number of layers)
    let want: &[(&str, Result<usize, &str>)] = &[
        (
            "v2_invalid_piece_layer.torrent",
            Err("must be a byte string"),
        ),
        (
            "v2_invalid_piece_layer_root.torrent",
            Err("do not lead to the file's `pieces root`"),
        ),
        (
            "v2_invalid_piece_layer_size.torrent",
            Err("must hold 16 hashes for this file, got 32"),
        ),
        (
            "v2_invalid_root_hash.torrent",
            Err("do not lead to the file's `pieces root`"),
        ),
        (
            "v2_non_multiple_piece_layer.torrent",
            Err("not a whole number of 32-byte hashes"),
        ),
        (
            "v2_piece_layer_invalid_file_hash.torrent",
            Err("a key of 33 bytes"),
        ),
        (
            "v2_unknown_piece_layer_entry.torrent",
            Err("the root of no file"),
        ),
        ("v2_only.torrent", Ok(1)),
        ("v2_no_piece_layers.torrent", Ok(0)),
        ("v2_multiple_files.torrent", Ok(3)),
        ("v2_incomplete_piece_layer.torrent", Ok(2)),
        ("v2_symlinks.torrent", Ok(1)),
        ("v2_invalid_filename.torrent", Ok(1)),
        ("v2_invalid_filename2.torrent", Ok(0)),
        ("v2_multipiece_file.torrent", Ok(1)),
        ("v2.torrent", Ok(0)),
        ("v2_empty_file.torrent", Ok(2)),
        ("v2_hybrid.torrent", Ok(8)),
        ("v2_hybrid-missing-tailpad.torrent", Ok(8)),
        ("empty-files-1.torrent", Ok(1)),
    ];
    let mut failures = Vec::new();
    for (file, expect) in want {
        let buf = std::fs::read(dir.join(file)).unwrap();
        let info = Info::from_torrent_file(&buf).unwrap_or_else(|e| panic!("{file}: {e}"));
        match (PieceLayers::from_torrent_file(&buf, &info), expect) {
            (Ok(layers), Ok(n)) => {
                if layers.len() != *n {
                    failures.push(format!("{file}: {} layers, want {n}", layers.len()));
                }
                // every layer held builds its file's tree up to the root
                for (i, fe) in info.files.iter().enumerate() {
                    let Some(root) = fe.pieces_root else { continue };
                    let shape = info.file_tree(i).unwrap();
                    if shape.has_piece_layer() && layers.get(&root).is_none() {
                        continue; // missing: fetched from peers
                    }
                    match layers.file_layers(&info, i) {
                        Some(l) if l.root() == root => {}
                        other => failures.push(format!("{file}: file {i}: {other:?}")),
                    }
                }
            }
            (Err(e), Err(part)) => {
                let msg = e.to_string();
                if !msg.contains(part) || !msg.contains("`piece layers`") {
                    failures.push(format!("{file}: refused with '{msg}', want '{part}'"));
                }
            }
            (got, _) => failures.push(format!("{file}: {got:?}, want {expect:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
