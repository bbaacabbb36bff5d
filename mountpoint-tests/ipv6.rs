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

use std::path::{Path, PathBuf};
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

/// The start of every test here: runs test `name` in its own network
/// namespace and only where `[::1]` can be bound (else `skip_or_fail`).
/// Gives the temporary directory and the torrent's tree written at its
/// `site`, or `None` where the test stops (in the parent of the namespace,
/// or without IPv6).
fn ipv6_site(name: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    if !in_netns(name) {
        return None;
    }
    if !has_ipv6_loopback() {
        skip_or_fail(name, "no [::1] here");
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    tree(&site);
    Some((tmp, site))
}

/// Mounts the torrent with `args` (the test's own flags) plus
/// `--foreground --verbose`, peer port `port`, a cache at `tmp/cache` and
/// a metadata timeout of `timeout_s` seconds, at `tmp/mnt` (waiting up to
/// 10 s longer), and checks that every file of the archive's `site`
/// directory reads as `site` does (SHA-256 of each); `what` names the
/// source in the failure.
fn mount_reads_site(
    tmp: &Path,
    args: MountArgs,
    port: u16,
    timeout_s: u64,
    site: &Path,
    what: &str,
) -> Mount {
    let args = args
        .foreground()
        .verbose()
        .port(port)
        .cache_dir(&tmp.join("cache"))
        .timeout(timeout_s);
    let m = Mount::foreground(
        &tmp.join("mnt"),
        &args.build(),
        Duration::from_secs(timeout_s + 10),
    );
    assert_eq!(
        tree_digests(&m.path().join("site")),
        tree_digests(site),
        "{what}"
    );
    m
}

/// Starts a libtorrent downloader listening on `[::1]` only (`opts`: its
/// further options, before `--fetch`) that fetches `magnet` into
/// `tmp/download`, dialing `connect` (HOST:PORT) if given; waits for it to
/// finish, then checks every file it saved against `site` (SHA-256 of
/// each). Gives the downloader, still running.
fn fetch_over_ipv6(
    tmp: &Path,
    opts: &[&str],
    magnet: &str,
    connect: Option<&str>,
    site: &Path,
    what: &str,
) -> LtNode {
    let dl = tmp.join("download");
    std::fs::create_dir_all(&dl).unwrap();
    let mut args = vec!["--listen-ip", "[::1]"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["--fetch", magnet, "--save", s(&dl)]);
    if let Some(peer) = connect {
        args.extend_from_slice(&["--connect", peer]);
    }
    let mut fetcher = lt_node(&args);
    fetcher.wait_event("finished", Duration::from_secs(120));
    assert_eq!(tree_digests(&dl.join("site")), tree_digests(site), "{what}");
    fetcher
}

/// Asserts that the foreground mount `m` logged a line for which `found`
/// holds; `what` names the line in the failure, followed by the log.
fn assert_logged(m: &mut Mount, found: impl Fn(&str) -> bool, what: &str) {
    let log = m.child().expect("foreground").stderr();
    assert!(log.lines().any(found), "{what} in the log:\n{log}");
}

/// btfs-mount reads correct bytes from a libtorrent seeder on `[::1]` only,
/// then a libtorrent session on `[::1]` only downloads everything from
/// btfs-mount over IPv6 (after the first seeder left).
#[test]
fn ipv6_only_libtorrent_both_directions() {
    let Some((tmp, site)) = ipv6_site("ipv6_only_libtorrent_both_directions") else {
        return;
    };
    let mut seeder = lt_node(&["--listen-ip", "[::1]", "--seed", s(&site)]);
    seeder.wait_event("seeding", Duration::from_secs(60));
    let magnet = seeder.magnet();
    let their = format!("[::1]:{}", seeder.port());

    let port = free_port();
    let mut m = mount_reads_site(
        tmp.path(),
        MountArgs::new(&magnet)
            .no_dht()
            .arg("--no-lsd")
            .peer(&their),
        port,
        60,
        &site,
        "bytes read from the IPv6 seeder differ",
    );
    drop(seeder);

    let ours = format!("[::1]:{port}");
    let fetcher = fetch_over_ipv6(
        tmp.path(),
        &[],
        &magnet,
        Some(&ours),
        &site,
        "libtorrent's IPv6 download from btfs-mount differs",
    );
    assert_logged(
        &mut m,
        |l| l.contains("connected to [::1]:") && l.contains("(from incoming)"),
        "no incoming IPv6 connection",
    );
    drop(fetcher);
    m.unmount_and_wait(Duration::from_secs(10));
}

/// BEP 32 and BEP 7 over the DHT: libtorrent nodes on `[::1]` only (a DHT
/// bootstrap node, and a seeder with its DHT on, announcing), and
/// btfs-mount given only the magnet link (no `x.pe`) and the IPv6
/// bootstrap node, with its default settings (DHT on, both families). It
/// finds the seeder over the IPv6 DHT (18-byte `values` in `get_peers`
/// answers), reads correct bytes, and announces itself over IPv6: a
/// libtorrent downloader on `[::1]` only, told nothing but the magnet and
/// the bootstrap node, finds us on the DHT and downloads everything from
/// us (after the seeder left).
///
/// Real-world case: an IPv6-only host (or an IPv4 home behind
/// carrier-grade NAT) whose only way to a swarm is the IPv6 DHT.
#[test]
fn ipv6_only_libtorrent_found_over_the_ipv6_dht() {
    let Some((tmp, site)) = ipv6_site("ipv6_only_libtorrent_found_over_the_ipv6_dht") else {
        return;
    };
    let boot = lt_node(&["--listen-ip", "[::1]", "--dht", "--bootstrap", "[::1]:1"]);
    let boot_addr = format!("[::1]:{}", boot.dht_port());
    let mut seeder = lt_node(&[
        "--listen-ip",
        "[::1]",
        "--dht",
        "--bootstrap",
        &boot_addr,
        "--seed",
        s(&site),
    ]);
    seeder.wait_event("seeding", Duration::from_secs(60));
    let magnet = seeder.magnet();
    assert!(
        !magnet.contains("x.pe"),
        "the magnet names a peer: {magnet}"
    );
    let their = format!("[::1]:{}", seeder.port());

    let port = free_port();
    let mut m = mount_reads_site(
        tmp.path(),
        MountArgs::new(&magnet).bootstrap(&boot_addr),
        port,
        90,
        &site,
        "bytes read from the IPv6 seeder found on the DHT differ",
    );
    assert_logged(
        &mut m,
        |l| l.contains(&format!("connected to {their}")) && l.contains("(from dht)"),
        &format!("no connection to the seeder {their} found on the DHT"),
    );
    drop(seeder);

    let fetcher = fetch_over_ipv6(
        tmp.path(),
        &["--dht", "--bootstrap", &boot_addr],
        &magnet,
        None,
        &site,
        "libtorrent's download from btfs-mount, found over the IPv6 DHT, differs",
    );
    assert_logged(
        &mut m,
        |l| l.contains("announced port") && !l.contains("to 0 DHT nodes"),
        "no DHT announce",
    );
    assert_logged(
        &mut m,
        |l| l.contains("connected to [::1]:") && l.contains("(from incoming)"),
        "no incoming IPv6 connection",
    );
    drop(fetcher);
    drop(boot);
    m.unmount_and_wait(Duration::from_secs(10));
}

/// uTP (BEP 29) over IPv6 in both directions: a libtorrent seeder on
/// `[::1]` only and restricted to uTP (no TCP in or out) serves btfs-mount,
/// which reads every file (SHA-256 of each compared with the source); then
/// a libtorrent downloader, also uTP-only on `[::1]`, fetches everything
/// from btfs-mount by the bare magnet and our address. btfs-mount runs with
/// its defaults, the DHT included (bootstrapped from a dead `[::1]:1`): the
/// dual-stack uTP socket on the TCP port number runs beside the DHT's IPv4
/// and IPv6 (`IPV6_V6ONLY`) sockets on their own port, so this also checks
/// that no DHT socket takes the uTP datagrams. The log must show both
/// connections over `utp`.
///
/// Real-world case: an IPv6-only host talking to a libtorrent,
/// Transmission or uTorrent peer that dials uTP first (or only).
#[test]
fn ipv6_utp_only_libtorrent_both_directions() {
    let Some((tmp, site)) = ipv6_site("ipv6_utp_only_libtorrent_both_directions") else {
        return;
    };
    let mut seeder = lt_node(&["--listen-ip", "[::1]", "--utp-only", "--seed", s(&site)]);
    seeder.wait_event("seeding", Duration::from_secs(60));
    let magnet = seeder.magnet();
    let their = format!("[::1]:{}", seeder.port());

    let port = free_port();
    let mut m = mount_reads_site(
        tmp.path(),
        MountArgs::new(&magnet)
            .bootstrap("[::1]:1")
            .arg("--no-lsd")
            .peer(&their),
        port,
        60,
        &site,
        "bytes read over uTP from the IPv6 seeder differ",
    );
    assert_logged(
        &mut m,
        |l| l.contains(&format!("connected to {their}")) && l.contains(" over utp"),
        &format!("no uTP connection to {their}"),
    );
    drop(seeder);

    let bare: String = magnet.split('&').next().unwrap().to_string();
    let ours = format!("[::1]:{port}");
    let fetcher = fetch_over_ipv6(
        tmp.path(),
        &["--utp-only"],
        &bare,
        Some(&ours),
        &site,
        "libtorrent's uTP download over IPv6 from btfs-mount differs",
    );
    assert_logged(
        &mut m,
        |l| l.contains("connected to [::1]:") && l.contains("(from incoming) over utp"),
        "no incoming IPv6 uTP connection",
    );
    drop(fetcher);
    m.unmount_and_wait(Duration::from_secs(10));
}
