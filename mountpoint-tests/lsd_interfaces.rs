//! Local Service Discovery (BEP 14) with its defaults on a host with
//! several interfaces and no default route (issue 17, item 1 and test (d)),
//! on the simulated internet of `support/netsim.rs`.
//!
//! Real-world cases: a laptop on an offline LAN with Ethernet, Wi-Fi and a
//! docker bridge, where the seeder sits on the second or third of them and
//! the kernel has no route to send multicast anywhere; and a cable plugged
//! in (or a Wi-Fi network joined) while a mount already waits for peers.
//! btfs-mount runs with its defaults (`--no-dht` only, no
//! `--lsd-interface`), against a libtorrent seeder with LSD on.

#[path = "support/netsim.rs"]
mod netsim;
#[path = "support/mod.rs"]
mod support;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use netsim::*;
use support::*;

/// Prints a timing line past libtest's capture.
fn note(msg: &str) {
    let _ = writeln!(std::io::stderr(), "lsd_interfaces: {msg}");
}

/// The torrent's files: a few MB not piece-aligned and a small file.
fn tree(dir: &Path) {
    make_tree(
        dir,
        &[
            ("index.html", TreeFile::Text("<h1>found on the LAN</h1>\n")),
            ("media/big.bin", TreeFile::Random(2 * 1024 * 1024 + 777, 71)),
            ("media/small.bin", TreeFile::Random(50_000, 72)),
        ],
    );
}

/// A libtorrent seeder with LSD on, listening on `host`'s first address;
/// returns it and its magnet (which names no peer).
fn lsd_seeder(host: &Host, site: &Path) -> (LtNode, String) {
    let ip = host.ip().to_string();
    let mut seeder = host.lt_node(&["--listen-ip", &ip, "--lsd", "--seed", s(site)]);
    seeder.wait_event("seeding", Duration::from_secs(60));
    let magnet = seeder.magnet();
    assert!(!magnet.contains("x.pe"), "{magnet}");
    (seeder, magnet)
}

/// Whether btfs-mount's log shows the seeder at `ip` found by LSD (we heard
/// its announce) or dialling us after hearing ours.
fn found_by_lsd(log: &str, ip: &str) -> bool {
    log.lines().any(|l| {
        (l.contains(&format!("peer {ip}:")) && l.contains("from LSD"))
            || (l.contains(&format!("connected to {ip}:")) && l.contains("(from incoming)"))
    })
}

/// Test (d): a host on three LAN segments with no default route finds a
/// libtorrent seeder on the third segment by LSD, with the defaults, and
/// reads correct bytes.
#[test]
fn lsd_finds_a_seeder_on_the_third_interface_with_defaults() {
    if !in_netns("lsd_finds_a_seeder_on_the_third_interface_with_defaults") {
        return;
    }
    let t0 = Instant::now();
    let net = Internet::new();
    let segs: Vec<Segment> = (1..=3).map(|i| net.segment(&format!("lan{i}"))).collect();
    let laptop = net.host("laptop", &[&segs[0], &segs[1], &segs[2]]);
    let peer = net.host("seeder", &[&segs[2]]);
    assert_eq!(
        laptop.run("ip", &["route", "show", "default"]).trim(),
        "",
        "the laptop has no default route"
    );
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    tree(&site);
    let (seeder, magnet) = lsd_seeder(&peer, &site);

    let args = MountArgs::new(&magnet)
        .foreground()
        .verbose()
        .no_dht()
        .cache_dir(&tmp.path().join("cache"))
        .timeout(100);
    let mut m = laptop.enter(|| {
        Mount::foreground(
            &tmp.path().join("mnt"),
            &args.build(),
            Duration::from_secs(110),
        )
    });
    let resolved = t0.elapsed();
    assert_eq!(
        tree_digests(&m.path().join("site")),
        tree_digests(&site),
        "the mounted tree differs from the original"
    );
    let log = m.child().expect("foreground").stderr();
    assert!(
        found_by_lsd(&log, &peer.ip().to_string()),
        "the seeder was not found by LSD:\n{log}"
    );
    assert!(
        log.contains("LSD: announcing and listening on eth2"),
        "LSD did not run on eth2:\n{log}"
    );
    note(&format!(
        "seeder on the third interface: mounted in {resolved:?}"
    ));
    m.unmount_and_wait(Duration::from_secs(10));
    drop(seeder);
}

/// An interface that appears after the mount started (a cable plugged in)
/// is joined within a minute (we rescan every 30 s), and the seeder behind
/// it is found by LSD.
#[test]
fn lsd_picks_up_an_interface_added_after_start() {
    if !in_netns("lsd_picks_up_an_interface_added_after_start") {
        return;
    }
    let net = Internet::new();
    let home_lan = net.segment("lan1");
    let other = net.segment("lan2");
    let mut laptop = net.host("laptop", &[&home_lan]);
    let peer = net.host("seeder", &[&other]);
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    tree(&site);
    let (seeder, magnet) = lsd_seeder(&peer, &site);

    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let args = MountArgs::new(&magnet)
        .foreground()
        .verbose()
        .no_dht()
        .cache_dir(&tmp.path().join("cache"))
        .timeout(150);
    let mut cmd = laptop.command(btfs_mount_bin());
    cmd.args(args.at(&mnt));
    let mut child = Child::spawn("btfs-mount", cmd);
    // Running, on lan1 only: nothing to find there.
    assert!(
        wait_until(Duration::from_secs(20), || child
            .stderr()
            .contains("LSD: listening")),
        "LSD did not start:\n{}",
        child.report()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(!is_mounted(&mnt), "mounted with no peer reachable");

    let plugged = Instant::now();
    let eth1 = laptop.attach(&other);
    assert_eq!(eth1.dev, "eth1");
    let mounted = wait_until(Duration::from_secs(90), || {
        is_mounted(&mnt) || child.try_wait().is_some()
    });
    assert!(
        mounted && is_mounted(&mnt),
        "not mounted 90 s after eth1 appeared:\n{}",
        child.report()
    );
    let took = plugged.elapsed();
    assert_eq!(tree_digests(&mnt.join("site")), tree_digests(&site));
    let log = child.stderr();
    assert!(
        log.contains("LSD: announcing and listening on eth1"),
        "eth1 was not joined:\n{log}"
    );
    assert!(
        found_by_lsd(&log, &peer.ip().to_string()),
        "the seeder was not found by LSD:\n{log}"
    );
    assert!(
        took < Duration::from_secs(60),
        "found only {took:?} after eth1 appeared"
    );
    note(&format!(
        "interface added after start: mounted {took:?} later"
    ));
    assert!(unmount(&mnt), "unmount");
    child.wait_exit(Duration::from_secs(10));
    drop(seeder);
}
