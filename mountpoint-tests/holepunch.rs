//! NAT holepunch (BEP 55, `ut_holepunch`) on the simulated internet of
//! `support/netsim.rs` (issue 17, item 4 and test (c)), against
//! libtorrent, which implements BEP 55 on the other side.
//!
//! Two homes, each behind its own NAT router without UPnP, so neither side
//! can be dialled from outside: the mount in one, a libtorrent seeder in
//! the other. A public libtorrent peer, the relay, knows the torrent but
//! holds none of its pieces (upload mode, empty save directory); both homes
//! dial it. It tells each side of the other by peer exchange (BEP 11, with
//! the holepunch flag 0x08). Dials of the other home fail (the router
//! drops them), a rendezvous goes to the relay, the relay sends `connect`
//! to both sides, and both dial over uTP at once: each router has seen a
//! datagram go out to the other's address before the other's arrives, so
//! it lets it in. The only bytes of the torrent anywhere are in the
//! libtorrent seeder's home: every byte the mount reads came through the
//! holepunched connection.
//!
//! Real-world cases:
//! - `mount_reads_from_a_natted_libtorrent_seeder_by_holepunch`: two home
//!   users behind ordinary routers without port forwarding (UPnP off, or
//!   CGNAT), who meet in a swarm through a public peer: the only copy of
//!   the data is at the other home.
//! - `mount_relays_a_rendezvous_between_two_natted_libtorrent_peers`: a
//!   mount on a public address (a seedbox, a VPS, a university machine)
//!   introduces two home users to each other.
//!
//! How libtorrent 2.0.8 takes part (peer_connection.cpp `connect_failed`,
//! bt_peer_connection.cpp `on_holepunch`): it sends a rendezvous only when
//! its TCP dial of a peer fails (after uTP did), if PEX said the peer speaks
//! holepunch, and only to the connection whose PEX named it; it ignores
//! `error` answers; a `connect` makes it dial over uTP in holepunch mode.
//! It tries again only when its peer list picks the peer again (10 s later
//! here) and stops after a few failed rounds (`max_failcount`, 3; seen: two
//! rendezvous, then no more). One introduction lost on
//! the way, say by a relay's link to the target that is down for half a
//! minute, is thus final for that pair: the relay test fails on any such
//! outage, which is why `netsim` keeps every gateway's MAC address fixed.
//!
//! What the NAT does matters: simultaneous open needs a router that keeps
//! one external port for a UDP socket whatever the destination
//! (endpoint-independent mapping; Linux masquerade also keeps the source
//! port when it is free, measured by `netsim_selftest`), because the relay
//! passes on the address it sees. A router that picks a new port per
//! destination (symmetric NAT) defeats BEP 55 for libtorrent and for us.

#[path = "support/netsim.rs"]
mod netsim;
#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netsim::*;
use support::*;

/// Prints a timing line past libtest's capture.
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "holepunch: {msg}");
}

/// A public libtorrent peer that has the torrent but no piece of it (upload
/// mode: it never downloads either), with a DHT node the mount bootstraps
/// from. Redundant connections are kept: it wants nothing from anyone.
fn start_relay(host: &Host, content: &Content, empty: &Path) -> LtNode {
    fs::create_dir_all(empty).unwrap();
    host.lt_node(&[
        "--listen-ip",
        &host.ip().to_string(),
        "--seed-torrent",
        s(&content.torrent),
        "--save",
        s(empty),
        "--upload-only",
        "--keep-redundant",
        "--dht",
        "--bootstrap",
        "198.51.100.1:1",
        "--verbose",
    ])
}

/// The mount's log file.
fn mount_log(cache: &Path, info_hash: &str) -> String {
    fs::read_to_string(cache.join(info_hash).join("btfs-mount.log")).unwrap_or_default()
}

/// The lines of a log that mention any of `words` (printed past the
/// capture).
fn note_lines(log: &str, words: &[&str]) {
    for l in log.lines().filter(|l| words.iter().any(|w| l.contains(w))) {
        note(l);
    }
}

/// Keeps the logs of a failed test: when it panics, the files named with
/// [`KeepLogs::add`] (the mount's log, the libtorrent peers' stderr with
/// their `--verbose` peer logs) are copied to
/// `target/tmp/holepunch-logs/TEST-UNIXTIME/`, which is named on stderr.
/// Declare it after the peers it names: locals drop in reverse order, and
/// a peer's stderr file goes with it.
struct KeepLogs {
    test: &'static str,
    files: Vec<(&'static str, PathBuf)>,
}

impl KeepLogs {
    fn new(test: &'static str) -> KeepLogs {
        KeepLogs {
            test,
            files: Vec::new(),
        }
    }

    /// Keeps `path` as `name` if the test fails.
    fn add(&mut self, name: &'static str, path: &Path) {
        self.files.push((name, path.to_path_buf()));
    }
}

impl Drop for KeepLogs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("holepunch-logs")
            .join(format!("{}-{secs}", self.test));
        if fs::create_dir_all(&dir).is_err() {
            return;
        }
        for (name, path) in &self.files {
            let _ = fs::copy(path, dir.join(name));
        }
        note(&format!(
            "logs of the failed test kept in {}",
            dir.display()
        ));
    }
}

/// libtorrent's own BEP 55 log lines (its peer log, `--verbose`).
fn lt_holepunch_lines(node: &LtNode) -> Vec<String> {
    node.stderr()
        .lines()
        .filter(|l| l.contains("HOLEPUNCH"))
        .map(str::to_string)
        .collect()
}

#[test]
fn mount_reads_from_a_natted_libtorrent_seeder_by_holepunch() {
    if !in_netns("mount_reads_from_a_natted_libtorrent_seeder_by_holepunch") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let net = Internet::new();
    let content = make_content(&net, tmp.path());

    let r = net.public_host("relay");
    let mut relay = start_relay(&r, &content, &tmp.path().join("relay-empty"));
    let relay_addr = format!("{}:{}", r.ip(), relay.port());

    // The seeder's home: libtorrent with every piece, dialling the relay.
    let hs = net.home("home-seed", HomeOpts::default());
    let y = hs.host("y");
    let mut seeder = y.lt_node(&[
        "--listen-ip",
        &y.ip().to_string(),
        "--seed-torrent",
        s(&content.torrent),
        "--save",
        s(tmp.path()),
        "--keep-redundant",
        // It would otherwise dial the mount as soon as the relay tells it
        // of the mount by PEX; that uTP datagram opens its own router for
        // the mount's address, and the mount's next dial gets in without
        // any introduction. Here the seeder dials only the relay, and the
        // mount when the relay says so (BEP 55 connect).
        "--ignore-pex",
        "--connect",
        &relay_addr,
        "--verbose",
    ]);
    seeder.wait_event("seeding", Duration::from_secs(60));
    let seeder_port = seeder.port();
    let seeder_public = format!("{}:{seeder_port}", hs.wan_ip());
    // The relay sees the seeder at its router's address; with uTP (what
    // libtorrent dials first) and the router keeping the source port, at
    // the seeder's own port: where a holepunch must aim.
    let ev = relay.wait_for("seeder connected", Duration::from_secs(30), |v| {
        v["event"] == "peer_connected"
            && v["addr"]
                .as_str()
                .is_some_and(|a| a.starts_with(&hs.wan_ip().to_string()))
    });
    note(&format!("relay sees the seeder at {}", ev["addr"]));

    // The mount's home, defaults only: the relay is named, the DHT is
    // bootstrapped from the relay's node.
    let hm = net.home("home-mount", HomeOpts::default());
    let x = hm.host("x");
    let cache = tmp.path().join("cache");
    let mnt = tmp.path().join("mnt");
    let args = MountArgs::new(&content.magnet)
        .bootstrap(&format!("{}:{}", r.ip(), relay.dht_port()))
        .peer(&relay_addr)
        .cache_dir(&cache);
    let mount = x.enter(|| Mount::background(&mnt, &args.build()));

    let want = tree_digests(&content.site);
    let got = tree_digests(&mnt.join("site"));
    let log = mount_log(&cache, &content.info_hash);
    note_lines(&log, &["holepunch", &seeder_public]);
    for l in lt_holepunch_lines(&seeder) {
        note(&format!("seeder: {l}"));
    }
    for l in lt_holepunch_lines(&relay) {
        note(&format!("relay: {l}"));
    }
    assert_eq!(
        got, want,
        "the mounted tree differs from the seeder's (sha256)\n{log}"
    );
    // The relay introduced us: we were told to connect to the seeder's
    // public address, and a connection to it came up.
    assert!(
        log.contains(&format!("says connect to {seeder_public}")),
        "no BEP 55 connect for {seeder_public} in the log:\n{log}"
    );
    assert!(
        log.contains(&format!("connected to {seeder_public}")),
        "no connection to {seeder_public} in the log:\n{log}"
    );
    // The relay holds no piece: it served nothing.
    let relay_up = relay
        .events()
        .iter()
        .filter(|v| v["event"] == "progress")
        .filter_map(|v| v["total_upload"].as_u64())
        .max()
        .unwrap_or(0);
    assert_eq!(relay_up, 0, "the relay uploaded {relay_up} bytes");
    note(&format!(
        "read {} files from the other home by holepunch in {:?}",
        want.len(),
        t0.elapsed()
    ));
    mount.unmount_and_wait(Duration::from_secs(15));
}

#[test]
fn mount_relays_a_rendezvous_between_two_natted_libtorrent_peers() {
    if !in_netns("mount_relays_a_rendezvous_between_two_natted_libtorrent_peers") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let net = Internet::new();
    let content = make_content(&net, tmp.path());

    // A lone DHT node for the mount to bootstrap from (nothing else uses it).
    let (_dht, dht_addr) = net.public_host("dht").lt_dht_node();
    // The mount, on a public address, is the relay; it is started once the
    // seeder dials it (every 2 s), which gives it the metadata.
    let m = net.public_host("mount");
    let port = 7881;
    let mount_addr = format!("{}:{port}", m.ip());

    // The seeder, in its home, dials the mount; the mount reads one small
    // file from it, so the seeder has sent good data and the mount passes
    // it on by PEX (with the holepunch flag).
    let hs = net.home("home-seed", HomeOpts::default());
    let y = hs.host("y");
    let mut seeder = y.lt_node(&[
        "--listen-ip",
        &y.ip().to_string(),
        "--seed-torrent",
        s(&content.torrent),
        "--save",
        s(tmp.path()),
        "--connect",
        &mount_addr,
        "--verbose",
    ]);
    seeder.wait_event("seeding", Duration::from_secs(60));
    let seeder_public = format!("{}:{}", hs.wan_ip(), seeder.port());
    let cache = tmp.path().join("cache");
    let mnt = tmp.path().join("mnt");
    let args = MountArgs::new(&content.magnet)
        .bootstrap(&dht_addr)
        .port(port)
        .cache_dir(&cache);
    let mount = m.enter(|| Mount::background(&mnt, &args.build()));
    let index = fs::read(mnt.join("site/index.html")).unwrap();
    assert_eq!(
        sha256_bytes(&index),
        sha256_file(&content.site.join("index.html"))
    );

    // The fetcher, in another home, dials the mount too, learns of the
    // seeder by PEX, cannot dial it, and asks the mount to introduce it.
    let hf = net.home("home-fetch", HomeOpts::default());
    let z = hf.host("z");
    let save = tmp.path().join("fetched");
    let mut fetcher = z.lt_node(&[
        "--listen-ip",
        &z.ip().to_string(),
        "--fetch",
        s(&content.torrent),
        "--save",
        s(&save),
        "--connect",
        &mount_addr,
        "--verbose",
    ]);
    let fetcher_public = format!("{}:{}", hf.wan_ip(), fetcher.port());
    let mut keep = KeepLogs::new("mount_relays_a_rendezvous_between_two_natted_libtorrent_peers");
    keep.add(
        "btfs-mount.log",
        &cache.join(&content.info_hash).join("btfs-mount.log"),
    );
    keep.add("seeder.log", seeder.stderr_path());
    keep.add("fetcher.log", fetcher.stderr_path());
    // libtorrent 2.0.8 posts `peer_connect_alert` (ltnode's
    // `peer_connected`) when it starts dialling: this is the fetcher
    // trying the seeder it learnt by PEX, which fails until introduced.
    let dialled = fetcher.wait_for("fetcher dials the seeder", Duration::from_secs(90), |v| {
        v["event"] == "peer_connected" && v["addr"] == seeder_public.as_str()
    });
    note(&format!("fetcher dials the seeder: {dialled}"));
    fetcher.wait_event("finished", Duration::from_secs(120));
    let log = mount_log(&cache, &content.info_hash);
    note_lines(&log, &["holepunch"]);
    for l in lt_holepunch_lines(&fetcher) {
        note(&format!("fetcher: {l}"));
    }
    assert_eq!(
        tree_digests(&save.join("site")),
        tree_digests(&content.site),
        "the fetcher's tree differs from the seeder's (sha256)"
    );
    assert!(
        log.contains(&format!(
            "holepunch: introducing {fetcher_public} and {seeder_public}"
        )),
        "the mount did not relay the fetcher's rendezvous:\n{log}"
    );
    note(&format!(
        "relayed a rendezvous between two homes in {:?}",
        t0.elapsed()
    ));
    mount.unmount_and_wait(Duration::from_secs(15));
}

/// uTP over IPv6 across the simulated internet, before any holepunch: a
/// uTP-only libtorrent seeder on a public host (`2001:db8::1x`) and a mount
/// (its defaults, DHT bootstrapped from a dead address) on another public
/// host, then one in a home behind the router's stateful IPv6 filter
/// (outbound and replies only). Both read every file, SHA-256 compared.
#[test]
fn mount_reads_over_utp_across_the_ipv6_internet() {
    if !in_netns("mount_reads_over_utp_across_the_ipv6_internet") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let net = Internet::new();
    let content = make_content(&net, tmp.path());
    let p = net.public_host("seeder");
    let mut seeder = p.lt_node(&[
        "--listen-ip",
        &format!("[{}]", p.ip6()),
        "--utp-only",
        "--seed-torrent",
        s(&content.torrent),
        "--save",
        s(tmp.path()),
    ]);
    seeder.wait_event("seeding", Duration::from_secs(60));
    let their = format!("[{}]:{}", p.ip6(), seeder.port());
    let want = tree_digests(&content.site);

    let public = net.public_host("mount");
    let home = net.home("home", HomeOpts::default());
    let x = home.host("x");
    for (i, host) in [&public, &x].into_iter().enumerate() {
        let t = Instant::now();
        let cache = tmp.path().join(format!("cache{i}"));
        let mnt = tmp.path().join(format!("mnt{i}"));
        let args = MountArgs::new(&content.magnet)
            .bootstrap("[2001:db8::1]:1")
            .arg("--no-lsd")
            .peer(&their)
            .cache_dir(&cache);
        let mount = host.enter(|| Mount::background(&mnt, &args.build()));
        let got = tree_digests(&mnt.join("site"));
        let log = mount_log(&cache, &content.info_hash);
        assert_eq!(
            got,
            want,
            "the tree read over IPv6 uTP from {} differs (sha256)\n{log}",
            host.name()
        );
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("connected to {their}")) && l.contains(" over utp")),
            "no uTP connection to {their} from {} in the log:\n{log}",
            host.name()
        );
        note(&format!(
            "{} read {} files over IPv6 uTP in {:?}",
            host.name(),
            want.len(),
            t.elapsed()
        ));
        mount.unmount_and_wait(Duration::from_secs(15));
    }
}
