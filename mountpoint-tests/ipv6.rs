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
/// Mounts `args` (a foreground mount) at `tmp/mnt`, waiting up to
/// `wait_s` seconds, and checks that every file of the archive's `site`
/// directory reads as `site` does (SHA-256 of each); `what` names the
/// source in the failure.
fn mount_reads_site(tmp: &Path, args: &MountArgs, wait_s: u64, site: &Path, what: &str) -> Mount {
    let m = Mount::foreground(&tmp.join("mnt"), &args.build(), Duration::from_secs(wait_s));
    assert_eq!(
        tree_digests(&m.path().join("site")),
        tree_digests(site),
        "{what}"
    );
    m
}

/// Waits for libtorrent's `fetcher` to finish, then checks every file it
/// saved under `dl` against `site` (SHA-256 of each).
fn fetched(fetcher: &mut LtNode, dl: &Path, site: &Path, what: &str) {
    fetcher.wait_event("finished", Duration::from_secs(120));
    assert_eq!(tree_digests(&dl.join("site")), tree_digests(site), "{what}");
}

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
    let mut m = mount_reads_site(
        tmp.path(),
        &args,
        70,
        &site,
        "bytes read from the IPv6 seeder differ",
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
    fetched(
        &mut fetcher,
        &dl,
        &site,
        "libtorrent's IPv6 download from btfs-mount differs",
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
    let name = "ipv6_only_libtorrent_found_over_the_ipv6_dht";
    if !in_netns(name) {
        return;
    }
    if !has_ipv6_loopback() {
        skip_or_fail(name, "no [::1] here");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    tree(&site);
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
    let args = MountArgs::new(&magnet)
        .foreground()
        .verbose()
        .bootstrap(&boot_addr)
        .port(port)
        .cache_dir(&tmp.path().join("cache"))
        .timeout(90);
    let mut m = mount_reads_site(
        tmp.path(),
        &args,
        100,
        &site,
        "bytes read from the IPv6 seeder found on the DHT differ",
    );
    let log = m.child().expect("foreground").stderr();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("connected to {their}")) && l.contains("(from dht)")),
        "no connection to the seeder {their} found on the DHT in the log:\n{log}"
    );
    drop(seeder);

    let dl = tmp.path().join("download");
    std::fs::create_dir_all(&dl).unwrap();
    let mut fetcher = lt_node(&[
        "--listen-ip",
        "[::1]",
        "--dht",
        "--bootstrap",
        &boot_addr,
        "--fetch",
        &magnet,
        "--save",
        s(&dl),
    ]);
    fetched(
        &mut fetcher,
        &dl,
        &site,
        "libtorrent's download from btfs-mount, found over the IPv6 DHT, differs",
    );
    let log = m.child().expect("foreground").stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("announced port") && !l.contains("to 0 DHT nodes")),
        "no DHT announce in the log:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("connected to [::1]:") && l.contains("(from incoming)")),
        "no incoming IPv6 connection in the log:\n{log}"
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
    let name = "ipv6_utp_only_libtorrent_both_directions";
    if !in_netns(name) {
        return;
    }
    if !has_ipv6_loopback() {
        skip_or_fail(name, "no [::1] here");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    tree(&site);
    let mut seeder = lt_node(&["--listen-ip", "[::1]", "--utp-only", "--seed", s(&site)]);
    seeder.wait_event("seeding", Duration::from_secs(60));
    let magnet = seeder.magnet();
    let their = format!("[::1]:{}", seeder.port());

    let port = free_port();
    let args = MountArgs::new(&magnet)
        .foreground()
        .verbose()
        .bootstrap("[::1]:1")
        .arg("--no-lsd")
        .peer(&their)
        .port(port)
        .cache_dir(&tmp.path().join("cache"))
        .timeout(60);
    let mut m = mount_reads_site(
        tmp.path(),
        &args,
        70,
        &site,
        "bytes read over uTP from the IPv6 seeder differ",
    );
    let log = m.child().expect("foreground").stderr();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("connected to {their}")) && l.contains(" over utp")),
        "no uTP connection to {their} in the log:\n{log}"
    );
    drop(seeder);

    let dl = tmp.path().join("download");
    std::fs::create_dir_all(&dl).unwrap();
    let bare: String = magnet.split('&').next().unwrap().to_string();
    let ours = format!("[::1]:{port}");
    let mut fetcher = lt_node(&[
        "--listen-ip",
        "[::1]",
        "--utp-only",
        "--fetch",
        &bare,
        "--save",
        s(&dl),
        "--connect",
        &ours,
    ]);
    fetched(
        &mut fetcher,
        &dl,
        &site,
        "libtorrent's uTP download over IPv6 from btfs-mount differs",
    );
    let log = m.child().expect("foreground").stderr();
    assert!(
        log.lines()
            .any(|l| l.contains("connected to [::1]:") && l.contains("(from incoming) over utp")),
        "no incoming IPv6 uTP connection in the log:\n{log}"
    );
    drop(fetcher);
    m.unmount_and_wait(Duration::from_secs(10));
}
