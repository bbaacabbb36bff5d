//! BEP 52 at run time (issue 14): v2 and hybrid torrents seeded by
//! python3-libtorrent 2.0.8 (`lt/ltnode.py --seed DIR --flavor hybrid|v2`),
//! mounted by `xt=urn:btmh` magnet links, alone or beside `xt=urn:btih`.
//! Every file's SHA-256 through the mount is compared with the source.
//!
//! - [`hybrid_by_btmh_alone_is_one_swarm`]: a hybrid mounted by its v2
//!   info-hash alone (metadata over BEP 9 under the truncated v2 hash,
//!   checked by its full SHA-256); then a libtorrent leecher that knows only
//!   the v1 magnet downloads everything from the mount: peers on the v1 and
//!   the v2 info-hash are one swarm; then one that knows only the btmh
//!   link.
//! - [`v2_hash_found_on_the_dht`]: a hybrid and a v2-only seeder on a
//!   local DHT of libtorrent nodes; the mount of the hybrid's btmh link
//!   finds its seeder by the truncated v2 info-hash, with no `--peer`.
//! - [`hybrid_by_both_and_by_btih`]: the magnet libtorrent prints (both
//!   `xt`), then the same torrent by `btih` alone, each from a fresh cache.
//! - [`btmh_with_wrong_full_hash_is_refused`]: a link whose SHA-256 agrees
//!   with the torrent on the 20 bytes of the handshake but not on the rest:
//!   the metadata is refused, nothing is mounted.
//! - [`v2_only_by_btmh_both_ways`]: a v2-only torrent mounted by its btmh
//!   link: metadata by BEP 9, piece layers by BEP 52 hash requests, every
//!   piece checked against its file's Merkle tree; then a libtorrent
//!   leecher given only the btmh link downloads it from the mount alone
//!   (we serve the metadata and answer its hash requests); then a remount
//!   with no peer at all reads every file from the cache (piece layers
//!   kept there).
//!
//! - [`hostile_hash_exchange`]: `lt/v2_hostile_peer.py` answers hash
//!   requests with hashes that prove nothing (alone: the mount is refused,
//!   naming the piece layers; beside libtorrent: correct bytes), asks for
//!   out-of-range, huge and unheld ranges (each rejected) and sends
//!   `hashes` nobody asked for (disconnected after a bounded number).
//! - [`wrong_v2_data_is_never_served`]: the same peer with true piece
//!   layers and random blocks: every piece fails its Merkle check, the
//!   read fails (EIO), nothing wrong is served.
//!
//! Run: `cargo test --test v2 -- --nocapture` (as root: each test enters a
//! network namespace of its own).

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

/// Files of the test torrents: several pieces, a file smaller than a
/// piece, an empty file, nested directories.
fn tree(dir: &Path) {
    make_tree(
        dir,
        &[
            ("index.html", TreeFile::Text("<h1>hello v2 swarm</h1>\n")),
            ("empty.txt", TreeFile::Text("")),
            (
                "media/big.bin",
                TreeFile::Random(3 * 1024 * 1024 + 12345, 1),
            ),
            ("media/deep/small.bin", TreeFile::Random(70_000, 2)),
        ],
    );
}

/// A libtorrent seeder of a `flavor` ("hybrid" or "v2") torrent of a fresh
/// tree with 64 KiB pieces, and its `torrent` event.
fn seed(tmp: &Path, flavor: &str) -> (LtNode, serde_json::Value, std::path::PathBuf) {
    let site = tmp.join("site");
    tree(&site);
    let (mut seeder, _) = LtNode::seed_tree(&site, 65536, &["--flavor", flavor]);
    let torrent = seeder.torrent();
    (seeder, torrent, site)
}

fn btmh(torrent: &serde_json::Value) -> String {
    let v2 = torrent["info_hash_v2"].as_str().expect("info_hash_v2");
    assert_eq!(v2.len(), 64, "a v2 info-hash: {torrent}");
    format!("magnet:?xt=urn:btmh:1220{v2}")
}

fn btih(torrent: &serde_json::Value) -> String {
    format!(
        "magnet:?xt=urn:btih:{}",
        torrent["info_hash"].as_str().expect("info_hash")
    )
}

/// Mounts `magnet` from `peer` with a fresh cache under `dir` and checks
/// every file against `site`. Returns the mount.
fn mount_and_check(magnet: &str, peer: &str, dir: &Path, site: &Path, port: u16) -> Mount {
    let args = MountArgs::new(magnet)
        .no_dht()
        .peer(peer)
        .port(port)
        .cache_dir(&dir.join("cache"));
    let mount = Mount::background(&dir.join("mnt"), &args.build());
    assert_eq!(
        tree_digests(&mount.path().join("site")),
        tree_digests(site),
        "every file through the mount of {magnet}"
    );
    mount
}

/// A libtorrent leecher given only `magnet` and the mount's peer port
/// `port` on 127.0.0.1 downloads every byte into `dl` (the metadata, and for
/// v2 the piece layers, from the mount too); every file's SHA-256 must
/// match `site`'s.
fn lt_fetches_from_mount(dl: &Path, magnet: &str, port: u16, site: &Path) {
    std::fs::create_dir_all(dl).unwrap();
    let ours = format!("127.0.0.1:{port}");
    let mut fetcher = LtNode::start(&["--fetch", magnet, "--save", s(dl), "--connect", &ours]);
    fetcher.wait_event("finished", Duration::from_secs(90));
    assert_eq!(tree_digests(&dl.join("site")), tree_digests(site));
}

#[test]
fn hybrid_by_btmh_alone_is_one_swarm() {
    if !in_netns("hybrid_by_btmh_alone_is_one_swarm") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (seeder, torrent, site) = seed(tmp.path(), "hybrid");
    let port = free_port();
    let m = tmp.path().join("m");
    let mount = mount_and_check(&btmh(&torrent), &seeder.addr(), &m, &site, port);
    let log = std::fs::read_to_string(find_log(&m.join("cache"))).unwrap_or_default();
    assert!(
        log.contains("also reached by its other info-hash"),
        "the hybrid's v1 info-hash is an alias:\n{log}"
    );

    // With the seeder gone, a libtorrent leecher that knows only the v1
    // info-hash downloads every byte from the mount.
    drop(seeder);
    lt_fetches_from_mount(&tmp.path().join("download"), &btih(&torrent), port, &site);

    // And one that knows only the v2 info-hash.
    lt_fetches_from_mount(&tmp.path().join("download2"), &btmh(&torrent), port, &site);
    mount.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn v2_hash_found_on_the_dht() {
    if !in_netns("v2_hash_found_on_the_dht") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    tree(&site);
    let dht = LocalDht::start(3);
    let boot = dht.boot();
    let flags = [
        "--flavor",
        "hybrid",
        "--dht",
        "--bootstrap",
        &boot,
        "--announce-interval",
        "2",
    ];
    let (mut seeder, _) = LtNode::seed_tree(&site, 65536, &flags);
    let torrent = seeder.torrent();
    let args = MountArgs::new(&btmh(&torrent))
        .bootstrap(&boot)
        .timeout(60)
        .cache_dir(&tmp.path().join("cache"));
    let mount = Mount::background(&tmp.path().join("mnt"), &args.build());
    assert_eq!(
        tree_digests(&mount.path().join("site")),
        tree_digests(&site)
    );
    mount.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn hybrid_by_both_and_by_btih() {
    if !in_netns("hybrid_by_both_and_by_btih") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (seeder, torrent, site) = seed(tmp.path(), "hybrid");
    let both = torrent["magnet"].as_str().unwrap().to_string();
    assert!(
        both.contains("urn:btih:") && both.contains("urn:btmh:"),
        "{both}"
    );
    for (i, magnet) in [both, btih(&torrent)].iter().enumerate() {
        let dir = tmp.path().join(format!("m{i}"));
        let mount = mount_and_check(magnet, &seeder.addr(), &dir, &site, free_port());
        mount.unmount_and_wait(Duration::from_secs(10));
    }
}

#[test]
fn btmh_with_wrong_full_hash_is_refused() {
    if !in_netns("btmh_with_wrong_full_hash_is_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (seeder, torrent, _site) = seed(tmp.path(), "hybrid");
    let mut v2 = torrent["info_hash_v2"].as_str().unwrap().to_string();
    // the last byte differs: the handshake's 20 bytes still match
    let last = if v2.ends_with('0') { "1" } else { "0" };
    v2.replace_range(63.., last);
    let magnet = format!("magnet:?xt=urn:btmh:1220{v2}");
    std::fs::create_dir_all(tmp.path().join("mnt")).unwrap();
    let out = std::process::Command::new(btfs_mount_bin())
        .args(
            MountArgs::new(&magnet)
                .no_dht()
                .peer(&seeder.addr())
                .timeout(20)
                .cache_dir(&tmp.path().join("cache"))
                .at(&tmp.path().join("mnt")),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail:\n{stderr}");
    assert!(!is_mounted(&tmp.path().join("mnt")));
    assert!(
        stderr.contains("does not match the info-hash"),
        "names the mismatch:\n{stderr}"
    );
}

#[test]
fn v2_only_by_btmh_both_ways() {
    if !in_netns("v2_only_by_btmh_both_ways") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (seeder, torrent, site) = seed(tmp.path(), "v2");
    assert_eq!(torrent["info_hash"].as_str(), Some(&"0".repeat(40)[..]));
    let port = free_port();
    let m = tmp.path().join("m");
    let mount = mount_and_check(&btmh(&torrent), &seeder.addr(), &m, &site, port);
    let log = std::fs::read_to_string(find_log(&m.join("cache"))).unwrap_or_default();
    assert!(
        log.contains("every piece layer held"),
        "the piece layers came by hash requests:\n{log}"
    );

    // With the seeder gone, a libtorrent leecher given only the v2 magnet
    // gets the metadata, the piece layers (our answers to its hash
    // requests) and every byte from the mount.
    drop(seeder);
    lt_fetches_from_mount(&tmp.path().join("download"), &btmh(&torrent), port, &site);
    mount.unmount_and_wait(Duration::from_secs(10));

    // A remount from the cache alone: the info dictionary and the piece
    // layers are there, every piece is hashed against them; no peer.
    let args = MountArgs::new(&btmh(&torrent))
        .no_dht()
        .timeout(10)
        .cache_dir(&m.join("cache"));
    let mount = Mount::background(&m.join("mnt"), &args.build());
    assert_eq!(
        tree_digests(&mount.path().join("site")),
        tree_digests(&site)
    );
    mount.unmount_and_wait(Duration::from_secs(10));
}

/// Starts `lt/v2_hostile_peer.py --behaviour B` for the v2 .torrent
/// `torrent` of `num_pieces` pieces; returns it and its address.
fn hostile(torrent: &Path, num_pieces: u64, behaviour: &str) -> (Child, String) {
    let mut cmd = std::process::Command::new(PYTHON);
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/mountpoint-tests/lt/v2_hostile_peer.py"
    ))
    .args(["--torrent", s(torrent), "--behaviour", behaviour])
    .args(["--num-pieces", &num_pieces.to_string()]);
    let mut c = Child::spawn("v2_hostile_peer", cmd);
    let ready = c.wait_event("ready", Duration::from_secs(20));
    let port = ready["port"].as_u64().expect("ready.port");
    (c, format!("127.0.0.1:{port}"))
}

#[test]
fn hostile_hash_exchange() {
    if !in_netns("hostile_hash_exchange") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    tree(&site);
    let torrent_file = tmp.path().join("t.torrent");
    let (mut seeder, _) = LtNode::seed_tree(
        &site,
        65536,
        &["--flavor", "v2", "--write-torrent", s(&torrent_file)],
    );
    let torrent = seeder.torrent();
    let pieces = torrent["num_pieces"].as_u64().unwrap();

    // 1. Only a peer whose hashes prove nothing: no layer is ever
    //    accepted, the mount is refused naming the piece layers.
    let (mut liar, liar_addr) = hostile(&torrent_file, pieces, "bad-hashes");
    std::fs::create_dir_all(tmp.path().join("mnt1")).unwrap();
    let out = std::process::Command::new(btfs_mount_bin())
        .args(
            MountArgs::new(&btmh(&torrent))
                .no_dht()
                .peer(&liar_addr)
                .timeout(15)
                .cache_dir(&tmp.path().join("cache1"))
                .at(&tmp.path().join("mnt1")),
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail:\n{stderr}");
    assert!(
        stderr.contains("piece layers"),
        "names the piece layers:\n{stderr}"
    );
    liar.wait_for("bad hashes sent", Duration::from_secs(5), |v| {
        v["event"] == "sent" && v["what"] == "bad-hashes"
    });
    drop(liar);

    // 2. The same liar beside libtorrent: the layers come from libtorrent
    //    (a failed proof moves the request to another peer at once), and
    //    every file reads right.
    let (liar, liar_addr) = hostile(&torrent_file, pieces, "bad-hashes");
    let args = MountArgs::new(&btmh(&torrent))
        .no_dht()
        .peer(&liar_addr)
        .peer(&seeder.addr())
        .timeout(30)
        .cache_dir(&tmp.path().join("cache2"));
    let mount = Mount::background(&tmp.path().join("mnt2"), &args.build());
    assert_eq!(
        tree_digests(&mount.path().join("site")),
        tree_digests(&site)
    );
    drop(liar);

    // 3. A peer that asks out-of-range, huge and unheld ranges gets a
    //    `hash reject` for each, and one that sends `hashes` nobody asked
    //    for is disconnected after a bounded number of them.
    let (mut pest, pest_addr) = hostile(&torrent_file, pieces, "unasked");
    let args = MountArgs::new(&btmh(&torrent))
        .no_dht()
        .peer(&pest_addr)
        .peer(&seeder.addr())
        .timeout(30)
        .cache_dir(&tmp.path().join("cache3"));
    let mount3 = Mount::background(&tmp.path().join("mnt3"), &args.build());
    for _ in 0..3 {
        let a = pest.wait_event("hash_answer", Duration::from_secs(20));
        assert_eq!(a["id"], 23, "every bad request is rejected: {a}");
    }
    let closed = pest.wait_event("closed", Duration::from_secs(30));
    assert_eq!(closed["by"], "peer", "the mount closed it: {closed}");
    assert_eq!(
        tree_digests(&mount3.path().join("site")),
        tree_digests(&site)
    );
    mount3.unmount_and_wait(Duration::from_secs(10));
    mount.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn wrong_v2_data_is_never_served() {
    if !in_netns("wrong_v2_data_is_never_served") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    tree(&site);
    let torrent_file = tmp.path().join("t.torrent");
    let (mut seeder, _) = LtNode::seed_tree(
        &site,
        65536,
        &["--flavor", "v2", "--write-torrent", s(&torrent_file)],
    );
    let torrent = seeder.torrent();
    let pieces = torrent["num_pieces"].as_u64().unwrap();
    drop(seeder);
    // true metadata and piece layers, random blocks
    let (mut liar, liar_addr) = hostile(&torrent_file, pieces, "wrong-data");
    let cache = tmp.path().join("cache");
    let args = MountArgs::new(&btmh(&torrent))
        .no_dht()
        .peer(&liar_addr)
        .read_timeout(5)
        .cache_dir(&cache);
    let mount = Mount::background(&tmp.path().join("mnt"), &args.build());
    liar.wait_for("true hashes sent", Duration::from_secs(5), |v| {
        v["event"] == "sent" && v["what"] == "true-hashes"
    });
    let read = std::fs::read(mount.path().join("site/media/big.bin"));
    assert!(
        read.is_err(),
        "no byte that fails its Merkle check is served"
    );
    let log = std::fs::read_to_string(find_log(&cache)).unwrap_or_default();
    assert!(
        log.contains("failed its Merkle check"),
        "each piece is checked against the piece layer:\n{log}"
    );
    mount.unmount_and_wait(Duration::from_secs(10));
}

/// The one `btfs-mount.log` under the cache directory `cache`.
fn find_log(cache: &Path) -> std::path::PathBuf {
    for e in std::fs::read_dir(cache).expect("cache dir").flatten() {
        let p = e.path().join("btfs-mount.log");
        if p.exists() {
            return p;
        }
    }
    panic!("no btfs-mount.log under {}", cache.display());
}
