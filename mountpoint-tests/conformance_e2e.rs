//! Info-dictionary conformance end to end (issue 9, part 3).
//!
//! A few of libtorrent's crafted test torrents (found by
//! `support::test_torrents`: `$BTFS_TEST_TORRENTS` or
//! `../shared/torrents/libtorrent/` next to the crate, never copied into the
//! repository) have their raw `info` bytes cut out at the span `info_of.py`
//! found (`tests/data/conformance.tsv`) and served over ut_metadata (BEP 9)
//! by the scripted peer `lt/bep9_peer.py`. `btfs-mount MAGNET MNT --peer`
//! then either mounts, and the tree `ls -R` shows (names, kinds, sizes, link
//! targets) is exactly the one `tests/data/conformance_files.tsv` expects
//! with pad files hidden; or it exits non-zero with the table's error. After
//! each, nothing may have been written outside the cache directory.
//!
//! The content of these torrents does not exist, so no file is read: the
//! peer serves metadata only. v2-only torrents (`v2_only`, `v2_symlinks`)
//! are served under their v2 info-hash and mounted by their `btmh` link;
//! the peer also answers our hash requests (BEP 52) from the piece layers
//! of the .torrent file, which the mount needs before it lists the tree.

#[path = "support/mod.rs"]
mod support;

#[path = "support/bep9.rs"]
mod bep9;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bep9::*;
use support::*;

/// One row of `tests/data/conformance.tsv`.
struct Row {
    start: usize,
    end: usize,
    sha1: String,
    expect: String,
    detail: String,
    /// The v2 info-hash (64 hex), for v2 and hybrid torrents; empty else.
    sha256: String,
}

fn table(file: &str) -> Row {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/conformance.tsv");
    let text = std::fs::read_to_string(&path).expect("read conformance.tsv");
    let cols: Vec<&str> = text
        .lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|c| c[0] == file)
        .unwrap_or_else(|| panic!("{file} not in conformance.tsv"))
        .clone();
    Row {
        start: cols[1].parse().expect("info_start"),
        end: cols[2].parse().expect("info_end"),
        sha1: cols[3].to_string(),
        expect: cols[4].to_string(),
        detail: cols[5].to_string(),
        sha256: cols.get(8).map_or(String::new(), |c| c.to_string()),
    }
}

/// The non-pad entries `conformance_files.tsv` expects for `file`.
fn expected_entries(file: &str) -> Vec<(String, Node)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/conformance_files.tsv");
    let text = std::fs::read_to_string(&path).expect("read conformance_files.tsv");
    let mut out = Vec::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let c: Vec<&str> = l.split('\t').collect();
        if c[0] != file || c[5] == "pad" {
            continue;
        }
        let node = if c[6] != "-" {
            // the table gives the target from the directory holding the
            // torrent root; the mount shows it relative to the link
            let link_dir: Vec<&str> = c[2].split('/').collect();
            let link_dir = &link_dir[..link_dir.len() - 1];
            let target: Vec<&str> = c[6].split('/').collect();
            let common = link_dir
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            let mut rel: Vec<&str> = vec![".."; link_dir.len() - common];
            rel.extend(&target[common..]);
            Node::Link(rel.join("/"))
        } else {
            Node::File(c[3].parse().expect("length"))
        };
        out.push((c[2].to_string(), node));
    }
    out
}

/// The raw info dict of `file`, cut at the table's span; its SHA-1 must be
/// the table's.
fn info_bytes(dir: &Path, file: &str, row: &Row) -> Vec<u8> {
    let torrent =
        std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("read shared torrent {file}: {e}"));
    let info = torrent[row.start..row.end].to_vec();
    assert_eq!(
        btfs::InfoHash::of_info(&info).to_hex(),
        row.sha1,
        "{file}: info span"
    );
    info
}

/// Serves `file`'s info dict and checks what btfs-mount does with it.
fn check(file: &str) {
    let Some(dir) = test_torrents(file) else {
        return;
    };
    let row = table(file);
    let info = info_bytes(&dir, file, &row);
    let peer = Bep9Peer::metadata_only(&info);
    assert_eq!(peer.info_hash(), row.sha1);
    let sb = Sandbox::new();
    let started = Instant::now();
    match row.expect.as_str() {
        "load" => {
            let mount = mount_ok(&peer, &sb, &[]);
            eprintln!(
                "{file}: mounted in {:.2} s",
                started.elapsed().as_secs_f64()
            );
            let (ls, took) = ls_r(mount.path());
            eprintln!("{file}: ls -R took {took:?}:\n{ls}");
            let want = expected_tree(&expected_entries(file));
            let got: BTreeMap<String, Node> = listing(mount.path());
            assert_eq!(got, want, "{file}: mounted tree");
            // ls shows every name too
            for path in want.keys() {
                let name = path.rsplit('/').next().expect("name");
                assert!(ls.contains(name), "{file}: ls -R lacks {name}");
            }
            let cached = sb.assert_confined();
            assert!(
                cached.iter().any(|p| p == &format!("{}/info", row.sha1)),
                "{file}: the info dict is cached under its info-hash: {cached:?}"
            );
            mount.unmount_and_wait(Duration::from_secs(15));
            sb.assert_confined();
        }
        "refuse" => {
            let detail = row.detail.trim_matches('`');
            mount_refused(&peer, &sb, detail);
            let cached = sb.assert_confined();
            assert!(
                cached.is_empty(),
                "{file}: a refused torrent leaves nothing in the cache: {cached:?}"
            );
        }
        other => panic!("{file}: unknown expectation {other}"),
    }
}

/// Serves the v2-only `file`'s info dict under its v2 info-hash, with the
/// piece layers of the whole .torrent for hash requests (BEP 52), mounts
/// it by its `btmh` link and checks the tree, as [`check`] does.
fn check_v2(file: &str) {
    let Some(dir) = test_torrents(file) else {
        return;
    };
    let row = table(file);
    assert_eq!(row.expect, "load", "{file}");
    let info = info_bytes(&dir, file, &row);
    let parsed = btfs::metainfo::Info::from_bytes(&info).expect("a v2 info dict");
    let peer = Bep9Peer::v2_metadata_and_layers(&info, &dir.join(file), parsed.num_pieces());
    assert_eq!(
        peer.magnet(),
        format!("magnet:?xt=urn:btmh:1220{}", row.sha256)
    );
    let sb = Sandbox::new();
    let mount = mount_ok(&peer, &sb, &[]);
    let want = expected_tree(&expected_entries(file));
    let got: BTreeMap<String, Node> = listing(mount.path());
    assert_eq!(got, want, "{file}: mounted tree");
    let cached = sb.assert_confined();
    let dir_name = &row.sha256[..40];
    for f in ["info", "piece_layers"] {
        assert!(
            cached.iter().any(|p| p == &format!("{dir_name}/{f}")),
            "{file}: {f} is cached under the truncated v2 info-hash: {cached:?}"
        );
    }
    mount.unmount_and_wait(Duration::from_secs(15));
    sb.assert_confined();
}

#[test]
fn v2_only_by_btmh() {
    if !in_netns("v2_only_by_btmh") {
        return;
    }
    check_v2("v2_only.torrent");
}

#[test]
fn v2_symlinks_by_btmh() {
    if !in_netns("v2_symlinks_by_btmh") {
        return;
    }
    check_v2("v2_symlinks.torrent");
}

#[test]
fn pad_file_hidden() {
    if !in_netns("pad_file_hidden") {
        return;
    }
    check("pad_file.torrent");
}

#[test]
fn unordered_keys_hash_raw_bytes() {
    if !in_netns("unordered_keys_hash_raw_bytes") {
        return;
    }
    check("unordered.torrent");
}

#[test]
fn slash_path_sanitized() {
    if !in_netns("slash_path_sanitized") {
        return;
    }
    check("slash_path.torrent");
}

#[test]
fn parent_path_sanitized() {
    if !in_netns("parent_path_sanitized") {
        return;
    }
    check("parent_path.torrent");
}

#[test]
fn duplicate_files_renamed() {
    if !in_netns("duplicate_files_renamed") {
        return;
    }
    check("duplicate_files.torrent");
}

#[test]
fn v2_hybrid_through_v1() {
    if !in_netns("v2_hybrid_through_v1") {
        return;
    }
    check("v2_hybrid.torrent");
}

#[test]
fn symlink_inside_torrent() {
    if !in_netns("symlink_inside_torrent") {
        return;
    }
    check("symlink1.torrent");
}

#[test]
fn invalid_piece_len_refused() {
    if !in_netns("invalid_piece_len_refused") {
        return;
    }
    check("invalid_piece_len.torrent");
}

#[test]
fn bad_name_refused() {
    if !in_netns("bad_name_refused") {
        return;
    }
    check("bad_name.torrent");
}
