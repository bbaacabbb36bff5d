//! IPv6 peers (issue 17, item 2), against python3-libtorrent listening on
//! `[::1]` only, inside the test's own network namespace.
//!
//! Real-world case: a peer reachable only over IPv6 (an IPv6-only host, or
//! a home whose IPv4 is behind carrier-grade NAT). btfs-mount, with its
//! defaults (DHT off, no LSD needed), reads from such a peer named by
//! `--peer [::1]:PORT`, and such a peer downloads from btfs-mount over
//! IPv6: we listen on both families by default (a dual-stack `[::]`
//! socket, TCP and uTP).

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use support::*;

/// Whether `[::1]` can be bound here (some containers have no IPv6).
fn has_ipv6_loopback() -> bool {
    std::net::UdpSocket::bind("[::1]:0").is_ok()
}

/// The torrent's files.
fn tree(dir: &Path) {
    make_tree(
        dir,
        &[
            ("index.html", TreeFile::Text("<h1>over IPv6</h1>\n")),
            ("media/big.bin", TreeFile::Random(3 * 1024 * 1024 + 99, 81)),
            ("media/small.bin", TreeFile::Random(40_000, 82)),
        ],
    );
}

/// btfs-mount reads correct bytes from a libtorrent seeder on `[::1]` only,
/// then a libtorrent session on `[::1]` only downloads everything from
/// btfs-mount over IPv6 (after the first seeder left).
#[test]
fn ipv6_only_libtorrent_both_directions() {
    if !in_netns("ipv6_only_libtorrent_both_directions") {
        return;
    }
    if !has_ipv6_loopback() {
        skip_or_fail("ipv6_only_libtorrent_both_directions", "no [::1] here");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    tree(&site);
    let mut seeder = lt_node(&["--listen-ip", "[::1]", "--seed", s(&site)]);
    seeder.wait_event("seeding", Duration::from_secs(60));
    let magnet = seeder.magnet();
    let their = format!("[::1]:{}", seeder.port());

    let port = free_port();
    let args = MountArgs::new(&magnet)
        .foreground()
        .verbose()
        .no_dht()
        .arg("--no-lsd")
        .peer(&their)
        .port(port)
        .cache_dir(&tmp.path().join("cache"))
        .timeout(60);
    let mut m = Mount::foreground(
        &tmp.path().join("mnt"),
        &args.build(),
        Duration::from_secs(70),
    );
    assert_eq!(
        tree_digests(&m.path().join("site")),
        tree_digests(&site),
        "bytes read from the IPv6 seeder differ"
    );
    drop(seeder);

    let dl = tmp.path().join("download");
    std::fs::create_dir_all(&dl).unwrap();
    let ours = format!("[::1]:{port}");
    let mut fetcher = lt_node(&[
        "--listen-ip",
        "[::1]",
        "--fetch",
        &magnet,
        "--save",
        s(&dl),
        "--connect",
        &ours,
    ]);
    fetcher.wait_event("finished", Duration::from_secs(120));
    assert_eq!(
        tree_digests(&dl.join("site")),
        tree_digests(&site),
        "libtorrent's IPv6 download from btfs-mount differs"
    );
    let log = m.child().expect("foreground").stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("connected to [::1]:") && l.contains("(from incoming)")),
        "no incoming IPv6 connection in the log:\n{log}"
    );
    drop(fetcher);
    m.unmount_and_wait(Duration::from_secs(10));
}
