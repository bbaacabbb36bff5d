//! Peer discovery without the DHT (issue 6): Local Service Discovery
//! (BEP 14) and Peer Exchange (BEP 11), against python3-libtorrent, with the
//! DHT off on every side.
//!
//! LSD tests need two hosts on one link: each test runs in its own network
//! and mount namespace (`in_netns`, where btfs-mount and its FUSE mount
//! live) and creates a second namespace with `ip netns add` for libtorrent,
//! joined to the first by a veth pair (10.213.0.1/24 here, 10.213.0.2/24
//! there). Those addresses exist only inside these namespaces, and the
//! namespace (with its veth end) is deleted when the test ends.
//!
//! The PEX test needs one namespace: btfs-mount is told only about
//! libtorrent peer A, which has the metadata and no pieces (upload-only,
//! empty save dir) and is connected to seeder B; btfs-mount learns B from
//! A's `ut_pex` message and reads from it.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Our side of the veth pair.
const OUR_IP: &str = "10.213.0.1";
/// libtorrent's side.
const THEIR_IP: &str = "10.213.0.2";

/// A network namespace made with `ip netns add`, joined to the test's own
/// namespace by a veth pair (`vA` here with [`OUR_IP`], `vB` there with
/// [`THEIR_IP`]), with no routes beyond the link's own (no multicast or
/// default route: LSD must find the interface itself). Deleted (with the
/// veth pair) on drop.
struct NetNs {
    name: String,
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    fn with_veth() -> NetNs {
        let name = format!("btfs-lsd-{}", std::process::id());
        // A namespace left by a killed earlier run of the same pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        run(&["ip", "netns", "add", &name]);
        let ns = NetNs { name };
        let n = ns.name.as_str();
        run(&["ip", "netns", "exec", n, "ip", "link", "set", "lo", "up"]);
        run(&[
            "ip", "link", "add", "vA", "type", "veth", "peer", "name", "vB", "netns", n,
        ]);
        run(&["ip", "addr", "add", &format!("{OUR_IP}/24"), "dev", "vA"]);
        run(&["ip", "link", "set", "vA", "up"]);
        run(&[
            "ip",
            "netns",
            "exec",
            n,
            "ip",
            "addr",
            "add",
            &format!("{THEIR_IP}/24"),
            "dev",
            "vB",
        ]);
        run(&["ip", "netns", "exec", n, "ip", "link", "set", "vB", "up"]);
        // Both ends up (carrier) before anyone sends.
        let up = wait_until(Duration::from_secs(10), || {
            let o = Command::new("ip")
                .args(["-o", "link", "show", "vA"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).contains("LOWER_UP")
        });
        assert!(up, "veth vA did not come up");
        ns
    }

    /// ltnode.py with `args` inside this namespace, listening on
    /// [`THEIR_IP`]; waits for its `ready` event.
    fn ltnode(&self, args: &[&str]) -> Child {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, PYTHON])
            .arg(ltnode_script())
            .args(["--listen-ip", THEIR_IP, "--no-dht"])
            .args(args);
        let mut c = Child::spawn("ltnode@netns", cmd);
        c.wait_event("ready", Duration::from_secs(20));
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys vB and with it vA.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The torrent's files: a few MB not piece-aligned, a small file deeper down.
fn tree(dir: &Path) {
    make_tree(
        dir,
        &[
            ("index.html", TreeFile::Text("<h1>found locally</h1>\n")),
            (
                "media/big.bin",
                TreeFile::Random(3 * 1024 * 1024 + 4321, 61),
            ),
            ("media/deep/small.bin", TreeFile::Random(70_000, 62)),
        ],
    );
}

/// btfs-mount in the foreground with info logs, DHT off, cache under `tmp`.
fn mount(tmp: &Path, magnet: &str, extra: &[&str]) -> Mount {
    let args = MountArgs::new(magnet)
        .foreground()
        .verbose()
        .no_dht()
        .cache_dir(&tmp.join("cache"))
        .timeout(90)
        .args(extra);
    Mount::foreground(&tmp.join("mnt"), &args.build(), Duration::from_secs(120))
}

fn stderr_of(m: &mut Mount) -> String {
    m.child().expect("foreground mount").stderr()
}

/// Prints the discovery lines of btfs-mount's log (sources, connections).
fn show_discovery(log: &str) {
    for l in log.lines() {
        if ["LSD", "ut_pex", "connected to", "from "]
            .iter()
            .any(|k| l.contains(k))
        {
            eprintln!("  | {l}");
        }
    }
}

/// Whether one line of `log` contains every one of `parts`.
fn has_line(log: &str, parts: &[&str]) -> bool {
    log.lines().any(|l| parts.iter().all(|p| l.contains(p)))
}

/// A libtorrent seeder with LSD on, in the other namespace, is found by
/// btfs-mount (DHT off, a magnet without peers), which mounts it and reads
/// correct bytes.
#[test]
fn lsd_mounts_from_a_libtorrent_seeder_on_the_link() {
    if !in_netns("lsd_mounts_from_a_libtorrent_seeder_on_the_link") {
        return;
    }
    let started = Instant::now();
    let ns = NetNs::with_veth();
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    tree(&site);
    let mut seeder = ns.ltnode(&["--lsd", "--seed", s(&site)]);
    let magnet = seeder.wait_event("torrent", Duration::from_secs(60))["magnet"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(!magnet.contains("x.pe"), "{magnet}");
    seeder.wait_event("seeding", Duration::from_secs(30));

    let mut m = mount(tmp.path(), &magnet, &[]);
    let resolved = started.elapsed();
    assert_eq!(
        tree_digests(&m.path().join("site")),
        tree_digests(&site),
        "the mounted tree differs from the original"
    );
    let log = stderr_of(&mut m);
    show_discovery(&log);
    // Either they heard our announce and dialled us, or we heard theirs.
    let heard_theirs = has_line(&log, &[&format!("peer {THEIR_IP}:"), "from LSD"]);
    let they_dialled = has_line(
        &log,
        &[&format!("connected to {THEIR_IP}:"), "(from incoming)"],
    );
    assert!(
        heard_theirs || they_dialled,
        "no LSD peer in the log:\n{log}"
    );
    eprintln!(
        "lsd seeder: resolved in {:.1} s (heard their announce: {heard_theirs}, they dialled us: {they_dialled})",
        resolved.as_secs_f64()
    );
    m.unmount_and_wait(Duration::from_secs(10));
    drop(seeder);
}

/// The reverse: btfs-mount holds the torrent (read once from a seeder on
/// loopback, which then leaves); a libtorrent session with LSD on, in the
/// other namespace and given only the magnet, finds the mount by LSD and
/// downloads correct bytes from it.
#[test]
fn lsd_libtorrent_downloads_from_our_mount() {
    if !in_netns("lsd_libtorrent_downloads_from_our_mount") {
        return;
    }
    let ns = NetNs::with_veth();
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    tree(&site);
    // The original seeder: loopback only, unreachable from the other side.
    let (origin, magnet) = LtNode::seed_tree(&site, 0, &[]);
    let mut m = mount(tmp.path(), &magnet, &["--peer", &origin.addr()]);
    assert_eq!(tree_digests(&m.path().join("site")), tree_digests(&site));
    drop(origin);

    let started = Instant::now();
    let dl = tmp.path().join("download");
    std::fs::create_dir_all(&dl).unwrap();
    let mut fetcher = ns.ltnode(&["--lsd", "--fetch", &magnet, "--save", s(&dl)]);
    fetcher.wait_event("finished", Duration::from_secs(120));
    let took = started.elapsed();
    assert_eq!(
        tree_digests(&dl.join("site")),
        tree_digests(&site),
        "libtorrent's download from btfs-mount differs"
    );
    let log = stderr_of(&mut m);
    show_discovery(&log);
    assert!(
        has_line(&log, &[&format!("peer {THEIR_IP}:"), "from LSD"]),
        "btfs-mount did not hear libtorrent's LSD announce:\n{log}"
    );
    eprintln!(
        "lsd reverse: libtorrent finished in {:.1} s",
        took.as_secs_f64()
    );
    drop(fetcher);
    m.unmount_and_wait(Duration::from_secs(10));
}

/// PEX: btfs-mount knows only peer A, which has the metadata but no pieces
/// and is connected to seeder B; A's `ut_pex` names B, and btfs-mount reads
/// every file from B. Our own `ut_pex` to A (naming B) is parsed by
/// libtorrent.
///
/// libtorrent sends its first `ut_pex` about 1 s after the extension
/// handshake (then once a minute), so no minute-long wait is needed. Our
/// first connection to B is usually closed by B as a "duplicate peer-id"
/// (B also learned us from A and is dialling us, uTP first), and the data
/// then flows over B's TCP connection to us a few seconds later.
#[test]
fn pex_finds_the_seeder_through_a_peer_without_pieces() {
    if !in_netns("pex_finds_the_seeder_through_a_peer_without_pieces") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    tree(&site);
    let (mut b, mut a, magnet) = retry_if_a_helper_crashed("seeder B and peer A", || {
        let torrent = tmp.path().join("t.torrent");
        let (b, magnet) = LtNode::seed_tree(
            &site,
            0,
            &["--keep-redundant", "--write-torrent", s(&torrent)],
        );
        let empty = tmp.path().join("a-empty");
        std::fs::create_dir_all(&empty).unwrap();
        // --verbose: A's peer log shows the ut_pex messages it receives.
        let mut a = LtNode::start(&[
            "--verbose",
            "--keep-redundant",
            "--upload-only",
            "--seed-torrent",
            s(&torrent),
            "--save",
            s(&empty),
            "--connect",
            &b.addr(),
        ]);
        let b_port = b.port();
        a.wait_for("A connected to B", Duration::from_secs(30), |v| {
            v["event"] == "peer_connected"
                && v["addr"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(&format!(":{b_port}")))
        });
        (b, a, magnet)
    });

    let started = Instant::now();
    let our_port = free_port().to_string();
    let mut m = mount(
        tmp.path(),
        &magnet,
        &["--no-lsd", "--peer", &a.addr(), "--port", &our_port],
    );
    let mounted = started.elapsed();
    assert_eq!(
        tree_digests(&m.path().join("site")),
        tree_digests(&site),
        "the mounted tree differs from the original"
    );
    let took = started.elapsed();
    let log = stderr_of(&mut m);
    show_discovery(&log);
    assert!(
        log.contains(&format!("ut_pex from {}", a.addr())),
        "no ut_pex from A in the log:\n{log}"
    );
    // PEX works both ways here: A tells us of B (we dial B, "from pex"),
    // and A tells B of us (B dials our listen port, often first over uTP).
    // Nobody else could have named B to us or us to B.
    let b_dialled_us = b.events().iter().any(|e| {
        e["event"] == "peer_connected"
            && e["addr"]
                .as_str()
                .is_some_and(|s| s.ends_with(&format!(":{our_port}")))
    });
    assert!(
        log.contains(&format!("connected to {} (from pex)", b.addr())) || b_dialled_us,
        "B was not reached through PEX:\n{log}"
    );
    // A never had a piece to give.
    for e in a.events() {
        if e["event"] == "progress" {
            assert_eq!(e["total_done"], 0, "A downloaded something: {e}");
        }
    }
    // Our ut_pex reaches A and libtorrent parses it: once B is connected
    // to us, A learns B from us (libtorrent shows our "-FM0100-" peer id as "FM 0.1.0").
    let heard = wait_until(Duration::from_secs(15), || {
        has_line(&a.stderr(), &["FM 0.1.0", "<== PEX [ dropped: 0 added: 1"])
    });
    assert!(heard, "A never logged our ut_pex message");
    assert!(
        !a.stderr().contains("too frequent pex"),
        "libtorrent found our ut_pex too frequent"
    );
    eprintln!(
        "pex: mounted in {:.1} s, read everything by {:.1} s",
        mounted.as_secs_f64(),
        took.as_secs_f64()
    );
    m.unmount_and_wait(Duration::from_secs(10));
}
