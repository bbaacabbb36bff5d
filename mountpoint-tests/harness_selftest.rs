//! Self-test of the end-to-end harness (`support/mod.rs`, `lt/ltnode.py`)
//! with no btfs code at all: real python3-libtorrent peers on loopback, each
//! test in a network namespace of its own.
//!
//! - A DHT of three libtorrent nodes, a seeder on it, and a fetcher given
//!   only the magnet link: the fetcher must find the seeder through the DHT
//!   alone. The time that takes is printed ("DHT discovery took").
//! - A fetcher with the DHT off, given the seeder's address (`--connect`).
//! - A fetch from a `.torrent` file; ltnode exits when its stdin closes.
//! - The [`support::Mount`] guard's unmount fallback, on a tmpfs.
//! - [`support::in_netns`] fails a test whose name matches no test.
//! - [`support::MountArgs`] builds the command line in order.
//!
//! Run: `cargo test --test harness_selftest` (as root; otherwise each
//! namespaced test prints a loud SKIP, and fails under CI=true).

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;

/// The sample tree under `dir/site`; returns that root.
fn sample_site(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("site");
    make_tree(&root, &sample_spec());
    root
}

#[test]
fn dht_only_discovery_between_libtorrent_nodes() {
    if !in_netns("dht_only_discovery_between_libtorrent_nodes") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = sample_site(tmp.path());

    // Three DHT-only nodes, each joining through the other two.
    let ports = free_ports(3);
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let mut nodes = Vec::new();
    for (i, &p) in ports.iter().enumerate() {
        let port = p.to_string();
        let others: Vec<String> = ports
            .iter()
            .filter(|&&q| q != p)
            .map(|&q| addr(q))
            .collect();
        let n = lt_node(&[
            "--listen-port",
            &port,
            "--dht",
            "--bootstrap",
            &others[0],
            "--bootstrap",
            &others[1],
        ]);
        assert_eq!(n.dht_port(), p, "node {i} listens where asked");
        assert_eq!(
            n.node_id().map(|id| id.len()),
            Some(40),
            "node {i} reports its node id"
        );
        nodes.push(n);
    }
    let boot = addr(ports[0]);

    // The seeder, on the DHT through node 1 only.
    let mut seeder = lt_node(&[
        "--dht",
        "--bootstrap",
        &boot,
        "--seed",
        s(&site),
        "--piece-size",
        "65536",
    ]);
    let torrent = seeder.torrent();
    let magnet = seeder.magnet();
    assert!(magnet.starts_with("magnet:?xt=urn:btih:"), "{magnet}");
    assert!(
        !magnet.contains("x.pe=") && !magnet.contains("tr="),
        "only the info-hash: {magnet}"
    );
    assert_eq!(torrent["name"], "site");
    assert_eq!(torrent["piece_length"], 65536);
    assert_eq!(
        torrent["files"].as_array().unwrap().len(),
        sample_spec().len()
    );
    seeder.wait_event("seeding", Duration::from_secs(30));

    // The fetcher: only the magnet link, the DHT on, no peer address.
    let dl = tmp.path().join("download");
    let started = Instant::now();
    let mut fetcher = lt_node(&[
        "--dht",
        "--bootstrap",
        &boot,
        "--fetch",
        &magnet,
        "--save",
        s(&dl),
    ]);
    let peer = fetcher.wait_event("peer_connected", Duration::from_secs(60));
    let discovered = started.elapsed();
    assert_eq!(
        peer["addr"],
        seeder.addr(),
        "the only peer with the torrent is the seeder"
    );
    let finished = fetcher.wait_event("finished", Duration::from_secs(60));
    let total = started.elapsed();
    assert_eq!(finished["info_hash"], torrent["info_hash"]);
    eprintln!(
        "DHT discovery took {:.3} s (fetcher start to first peer); whole fetch {:.3} s",
        discovered.as_secs_f64(),
        total.as_secs_f64()
    );
    assert!(
        discovered < Duration::from_secs(15),
        "DHT discovery took {discovered:?}"
    );

    assert_eq!(
        tree_digests(&dl.join("site")),
        tree_digests(&site),
        "fetched files equal the originals"
    );

    // Every DHT node has nodes in its routing table.
    for n in nodes.iter_mut() {
        n.wait_for("dht_nodes > 0", Duration::from_secs(10), |v| {
            v["event"] == "dht_nodes" && v["count"].as_u64().unwrap_or(0) > 0
        });
    }
}

#[test]
fn direct_connect_without_dht() {
    if !in_netns("direct_connect_without_dht") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = sample_site(tmp.path());
    let mut seeder = lt_node(&["--no-dht", "--seed", s(&site)]);
    assert!(seeder.ready()["dht_port"].is_null(), "no DHT: no dht_port");
    seeder.wait_event("seeding", Duration::from_secs(30));
    let magnet = seeder.magnet();

    let dl = tmp.path().join("download");
    let started = Instant::now();
    let mut fetcher = lt_node(&[
        "--no-dht",
        "--connect",
        &seeder.addr(),
        "--fetch",
        &magnet,
        "--save",
        s(&dl),
    ]);
    fetcher.wait_event("finished", Duration::from_secs(60));
    eprintln!("direct fetch took {:.3} s", started.elapsed().as_secs_f64());
    assert_eq!(tree_digests(&dl.join("site")), tree_digests(&site));
    // The seeder saw the upload.
    seeder.wait_for("an upload", Duration::from_secs(10), |v| {
        v["event"] == "progress" && v["total_upload"].as_u64().unwrap_or(0) > 0
    });
}

#[test]
fn fetch_from_torrent_file_and_exit_on_stdin_close() {
    if !in_netns("fetch_from_torrent_file_and_exit_on_stdin_close") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = sample_site(tmp.path());
    let tfile = tmp.path().join("site.torrent");
    let mut seeder = lt_node(&[
        "--seed",
        s(&site),
        "--write-torrent",
        s(&tfile),
        "--no-utp",
        "--no-encryption",
    ]);
    let t = seeder.torrent();
    assert_eq!(t["torrent_file"], s(&tfile));
    assert!(tfile.exists());
    seeder.wait_event("seeding", Duration::from_secs(30));

    let dl = tmp.path().join("download");
    let mut fetcher = lt_node(&[
        "--connect",
        &seeder.addr(),
        "--fetch",
        s(&tfile),
        "--save",
        s(&dl),
        "--no-utp",
    ]);
    // From a .torrent file the torrent event comes at once, before any peer.
    assert_eq!(fetcher.torrent()["info_hash"], t["info_hash"]);
    fetcher.wait_event("finished", Duration::from_secs(60));
    assert_eq!(tree_digests(&dl.join("site")), tree_digests(&site));

    // Closing stdin makes ltnode exit by itself, cleanly.
    fetcher.close_stdin();
    let st = fetcher
        .wait_exit(Duration::from_secs(10))
        .expect("ltnode exits when stdin closes");
    assert!(st.success(), "{st}");
    let exit = fetcher.wait_event("exit", Duration::from_secs(1));
    assert_eq!(exit["reason"], "stdin closed");
}

#[test]
fn ports_are_distinct_and_mount_guard_unmounts() {
    if !in_netns("ports_are_distinct_and_mount_guard_unmounts") {
        return;
    }
    let ports = free_ports(20);
    let mut sorted = ports.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 20, "{ports:?}");

    // is_mounted and the unmount fallback (fusermount3 refuses a tmpfs;
    // `umount -l` takes it), in this test's private mount namespace.
    let (_dir, mnt) = Mount::temp_dir();
    assert!(!is_mounted(&mnt));
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(is_mounted(&mnt));
    assert!(unmount(&mnt));
    assert!(!is_mounted(&mnt));
}

#[test]
fn seeded_bytes_are_deterministic() {
    let a = seeded_bytes(100_003, 7);
    assert_eq!(a.len(), 100_003);
    assert_eq!(a, seeded_bytes(100_003, 7));
    assert_ne!(a[..64], seeded_bytes(64, 8)[..]);
    assert_eq!(
        seeded_bytes(10, 7)[..],
        a[..10],
        "a prefix does not depend on the length"
    );
    // Not constant: many distinct byte values.
    let distinct: std::collections::BTreeSet<u8> = a.iter().copied().collect();
    assert!(distinct.len() > 250);
    assert_eq!(
        sha256_bytes(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

/// A mistyped name in `in_netns` fails the test instead of passing it: the
/// namespaced run of a name that matches no test runs zero tests.
#[test]
fn in_netns_fails_when_the_name_matches_no_test() {
    if std::env::var_os("BTFS_NETNS").is_some() {
        return; // already inside: in_netns would run the body
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        skip_or_fail(
            "in_netns_fails_when_the_name_matches_no_test",
            "needs root for network namespaces",
        );
        return;
    }
    let got = std::panic::catch_unwind(|| in_netns("no_test_has_this_name"));
    let payload = got.expect_err("a name that matches no test must fail");
    let msg = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or_default();
    assert!(
        msg.contains("did not run exactly one test"),
        "the failure says why: {msg}"
    );
}

#[test]
fn mount_args_put_the_url_first_and_the_mountpoint_second() {
    let args = MountArgs::new("magnet:?xt=urn:btih:00")
        .foreground()
        .verbose()
        .no_dht()
        .peer("127.0.0.1:1")
        .bootstrap("127.0.0.1:2")
        .cache_dir(std::path::Path::new("/c"))
        .port(7)
        .read_timeout(3)
        .timeout(9)
        .arg("--no-lsd")
        .args(&["--cache-size", "4M"]);
    let want = [
        "magnet:?xt=urn:btih:00",
        "-f",
        "-v",
        "--no-dht",
        "--peer",
        "127.0.0.1:1",
        "--bootstrap",
        "127.0.0.1:2",
        "--cache-dir",
        "/c",
        "--port",
        "7",
        "--read-timeout",
        "3",
        "--timeout",
        "9",
        "--no-lsd",
        "--cache-size",
        "4M",
    ];
    assert_eq!(args.build(), want);
    let at = args.at(std::path::Path::new("/m"));
    assert_eq!(at[..3], ["magnet:?xt=urn:btih:00", "/m", "-f"]);
    assert_eq!(at[2..], want[1..]);
    assert_eq!(
        MountArgs::writable().at(std::path::Path::new("/m")),
        ["--writable", "/m"]
    );
}
