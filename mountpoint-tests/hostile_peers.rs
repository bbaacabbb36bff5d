//! Hostile peers (issue 7, part 2): a scripted fake peer
//! (`lt/fake_peer.py --behaviour ...`) speaks the wire protocol badly on
//! purpose, in the same swarm as an honest libtorrent seeder. The mount must
//! still read correct bytes (SHA-256 against the original), drop or ban the
//! fake peer, and never blame the honest one. Each test runs in its own
//! network namespace; the fake peer listens on 127.0.0.2 and libtorrent on
//! 127.0.0.1, so a ban (by IP address) can tell them apart.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Piece length of the test torrent: 64 KiB, 4 blocks.
const PIECE: usize = 65536;

/// A honest seeder and a fake peer of the same torrent.
struct Swarm {
    tmp: tempfile::TempDir,
    tree: PathBuf,
    torrent_file: PathBuf,
    magnet: String,
    good: Option<LtNode>,
    fake: Child,
    fake_addr: String,
}

fn fake_peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mountpoint-tests/lt/fake_peer.py")
}

/// Starts `fake_peer.py --behaviour B --torrent T --data D EXTRA..` and waits
/// for its `ready` event; returns it and its port.
fn start_fake(torrent: &Path, data: &Path, behaviour: &str, extra: &[&str]) -> (Child, u16) {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(fake_peer_script())
        .args([
            "--behaviour",
            behaviour,
            "--torrent",
            s(torrent),
            "--data",
            s(data),
        ])
        .args(extra);
    let mut c = Child::spawn("fake_peer", cmd);
    let ready = c.wait_event("ready", Duration::from_secs(20));
    let port = ready["port"].as_u64().expect("ready.port") as u16;
    (c, port)
}

/// The torrent: `data/big.bin` (4 MiB + 1000 bytes, 65 pieces) and a small
/// file. With `good_now` false, the honest seeder is not started yet
/// (see [`Swarm::start_good`]).
fn swarm(behaviour: &str, good_now: bool) -> Swarm {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("data");
    make_tree(
        &tree,
        &[
            ("big.bin", TreeFile::Random(4 * 1024 * 1024 + 1000, 7)),
            ("small.txt", TreeFile::Text("small and honest\n")),
        ],
    );
    let torrent_file = tmp.path().join("t.torrent");
    let (first, magnet) = LtNode::seed_tree(
        &tree,
        PIECE,
        &["--write-torrent", s(&torrent_file), "--no-utp"],
    );
    let good = if good_now {
        Some(first)
    } else {
        drop(first);
        None
    };
    let (fake, port) = start_fake(&torrent_file, tmp.path(), behaviour, &[]);
    Swarm {
        tmp,
        tree,
        torrent_file,
        magnet,
        good,
        fake,
        fake_addr: format!("127.0.0.2:{port}"),
    }
}

impl Swarm {
    fn good_addr(&self) -> String {
        self.good.as_ref().expect("good peer started").addr()
    }

    /// Starts the honest seeder (from the torrent file) on `port`.
    fn start_good(&mut self, port: u16) {
        let mut n = LtNode::start(&[
            "--seed-torrent",
            s(&self.torrent_file),
            "--save",
            s(self.tmp.path()),
            "--listen-port",
            &port.to_string(),
            "--no-utp",
        ]);
        n.wait_event("seeding", Duration::from_secs(30));
        self.good = Some(n);
    }

    fn mnt(&self) -> PathBuf {
        self.tmp.path().join("mnt")
    }

    /// A foreground mount's arguments (`-f -v`, logs kept) with both
    /// peers: the fake one and `good`.
    fn args(&self, good: &str) -> MountArgs {
        MountArgs::new(&self.magnet)
            .foreground()
            .verbose()
            .no_dht()
            .peer(&self.fake_addr)
            .peer(good)
            .cache_dir(&self.tmp.path().join("cache"))
    }

    /// A foreground mount that knows both peers, the honest one on a free
    /// port where nothing listens yet (start it there with
    /// [`Swarm::start_good`]); not waited for. Returns the process and the
    /// honest peer's port.
    fn spawn_before_good(&self) -> (Child, u16) {
        let good_port = free_port();
        let args = self.args(&format!("127.0.0.1:{good_port}"));
        (spawn_mount(&self.mnt(), &args), good_port)
    }

    /// A foreground mount of the torrent with both peers.
    fn mount(&self, extra: &[&str]) -> Mount {
        let args = self.args(&self.good_addr()).read_timeout(60).args(extra);
        Mount::foreground(&self.mnt(), &args.build(), Duration::from_secs(60))
    }

    /// Reads every file of the mount and compares it with the original.
    fn assert_content(&self, mount: &Mount) {
        for rel in ["big.bin", "small.txt"] {
            let t = Instant::now();
            assert_eq!(
                sha256_file(&mount.path().join("data").join(rel)),
                sha256_file(&self.tree.join(rel)),
                "content of {rel}"
            );
            eprintln!("read {rel} in {:.2} s", t.elapsed().as_secs_f64());
        }
    }
}

fn log_of(mount: &mut Mount) -> String {
    mount.child().expect("foreground mount").stderr()
}

/// The fake peer's next `closed` event (its connection ended).
fn wait_closed(fake: &mut Child, timeout: Duration) -> Value {
    fake.wait_event("closed", timeout)
}

/// The honest peer was never banned nor blamed.
fn assert_good_peer_never_blamed(log: &str) {
    assert!(
        !log.contains("banning peer 127.0.0.1"),
        "the honest peer was banned:\n{log}"
    );
}

#[test]
fn wrong_piece_data_is_refetched_and_the_peer_banned() {
    if !in_netns("wrong_piece_data_is_refetched_and_the_peer_banned") {
        return;
    }
    // Only the liar at first, so it is asked for every piece until its
    // third bad piece bans it (with the honest seeder there from the
    // start, it could finish every piece before that: a race). Then the
    // honest seeder comes, and the read completes with the right bytes.
    let mut sw = swarm("wrong-data", false);
    let mnt = sw.mnt();
    let (mut mount, good_port) = sw.spawn_before_good();
    wait_mounted(&mut mount, &mnt, Duration::from_secs(30));
    let file = mnt.join("data/big.bin");
    let reader = std::thread::spawn(move || std::fs::read(file));
    sw.fake
        .wait_for("wrong data sent", Duration::from_secs(10), |v| {
            v["event"] == "sent" && v["what"] == "wrong-data"
        });
    assert!(
        wait_until(Duration::from_secs(30), || mount
            .stderr()
            .contains("banning peer 127.0.0.2")),
        "the fake peer is banned after repeated failures:\n{}",
        mount.stderr()
    );
    assert!(mount.stderr().contains("failed its SHA-1 check"));
    // The ban also ends the live connection, and it is not dialled again.
    let closed = wait_closed(&mut sw.fake, Duration::from_secs(10));
    eprintln!("fake peer closed: {closed}");
    sw.start_good(good_port);
    let t = Instant::now();
    let got = reader.join().unwrap().expect("big.bin reads");
    eprintln!(
        "big.bin read {:.2} s after the honest seeder started",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        sha256_bytes(&got),
        sha256_file(&sw.tree.join("big.bin")),
        "every piece refetched from the honest seeder"
    );
    let conns = sw
        .fake
        .events()
        .iter()
        .filter(|v| v["event"] == "connection")
        .count();
    assert_eq!(conns, 1, "a banned peer is not dialled again");
    assert_good_peer_never_blamed(&mount.stderr());
    unmount_child(mount, &mnt);
}

#[test]
fn oversized_message_drops_the_peer() {
    if !in_netns("oversized_message_drops_the_peer") {
        return;
    }
    let mut sw = swarm("oversize", true);
    let mut mount = sw.mount(&[]);
    let closed = wait_closed(&mut sw.fake, Duration::from_secs(10));
    assert_eq!(closed["by"], "peer", "{closed}");
    sw.assert_content(&mount);
    let log = log_of(&mut mount);
    assert!(log.contains("dropping 127.0.0.2"), "{log}");
    mount.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn bitfield_of_the_wrong_length_drops_the_peer() {
    if !in_netns("bitfield_of_the_wrong_length_drops_the_peer") {
        return;
    }
    let mut sw = swarm("bad-bitfield", true);
    let mut mount = sw.mount(&[]);
    sw.assert_content(&mount);
    let closed = wait_closed(&mut sw.fake, Duration::from_secs(10));
    assert_eq!(closed["by"], "peer", "{closed}");
    let log = log_of(&mut mount);
    assert!(log.contains("bitfield"), "{log}");
    mount.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn blocks_never_requested_are_not_stored() {
    if !in_netns("blocks_never_requested_are_not_stored") {
        return;
    }
    let mut sw = swarm("unrequested", true);
    let mut mount = sw.mount(&[]);
    sw.assert_content(&mount);
    sw.fake
        .wait_for("unrequested blocks sent", Duration::from_secs(5), |v| {
            v["event"] == "sent" && v["what"] == "unrequested"
        });
    let log = log_of(&mut mount);
    assert!(
        !log.contains("failed its SHA-1 check"),
        "garbage nobody asked for must never reach a piece:\n{log}"
    );
    assert_good_peer_never_blamed(&log);
    mount.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn blocks_of_the_wrong_size_or_offset_drop_the_peer() {
    if !in_netns("blocks_of_the_wrong_size_or_offset_drop_the_peer") {
        return;
    }
    let mut sw = swarm("bad-block", true);
    let mut mount = sw.mount(&[]);
    sw.assert_content(&mount);
    for what in ["short-block", "offset-block", "index-block"] {
        sw.fake.wait_for(what, Duration::from_secs(5), |v| {
            v["event"] == "sent" && v["what"] == what
        });
    }
    let closed = wait_closed(&mut sw.fake, Duration::from_secs(30));
    assert_eq!(closed["by"], "peer", "{closed}");
    let log = log_of(&mut mount);
    assert!(log.contains("dropping 127.0.0.2"), "{log}");
    assert!(!log.contains("failed its SHA-1 check"), "{log}");
    mount.unmount_and_wait(Duration::from_secs(10));
}

/// `btfs-mount URL MNT ARGS..` started without waiting (the harness's
/// [`Mount`] waits for the mount, and the caller needs to act meanwhile).
/// Stop it with [`unmount_child`].
fn spawn_mount(mnt: &Path, args: &MountArgs) -> Child {
    std::fs::create_dir_all(mnt).unwrap();
    let mut cmd = Command::new(btfs_mount_bin());
    cmd.args(args.at(mnt));
    Child::spawn("btfs-mount", cmd)
}

fn wait_mounted(mount: &mut Child, mnt: &Path, timeout: Duration) {
    let ok = wait_until(timeout, || is_mounted(mnt) || mount.try_wait().is_some());
    assert!(
        ok && is_mounted(mnt),
        "not mounted within {timeout:?}:\n{}",
        mount.stderr_tail(40)
    );
}

/// `fusermount3 -u`, then the foreground process exits by itself.
fn unmount_child(mut mount: Child, mnt: &Path) {
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(mnt)
        .status()
        .unwrap();
    assert!(st.success(), "fusermount3 -u: {st}");
    assert!(
        mount.wait_exit(Duration::from_secs(10)).is_some(),
        "btfs-mount exits after the unmount"
    );
}

/// The fake peer serves bad metadata first; the honest seeder starts only
/// after that (the mount's dials to its port are refused until then, and
/// retried with backoff), so the bad answer is always seen first.
fn bad_metadata_then_good_peer(behaviour: &str, expect_log: &str) {
    let mut sw = swarm(behaviour, false);
    let mnt = sw.mnt();
    let t = Instant::now();
    let (mut mount, good_port) = sw.spawn_before_good();
    sw.fake
        .wait_for("bad metadata sent", Duration::from_secs(20), |v| {
            v["event"] == "sent" && v["what"] == behaviour
        });
    let closed = wait_closed(&mut sw.fake, Duration::from_secs(20));
    assert_eq!(closed["by"], "peer", "{closed}");
    sw.start_good(good_port);
    wait_mounted(&mut mount, &mnt, Duration::from_secs(60));
    eprintln!("mounted after {:.2} s", t.elapsed().as_secs_f64());
    for rel in ["big.bin", "small.txt"] {
        assert_eq!(
            sha256_file(&mnt.join("data").join(rel)),
            sha256_file(&sw.tree.join(rel)),
            "content of {rel}"
        );
    }
    let log = mount.stderr();
    assert!(
        log.contains(expect_log),
        "expected {expect_log:?} in:\n{log}"
    );
    assert!(log.contains("metadata ("), "{log}");
    assert_good_peer_never_blamed(&log);
    unmount_child(mount, &mnt);
}

#[test]
fn metadata_with_a_wrong_total_size_is_refused() {
    if !in_netns("metadata_with_a_wrong_total_size_is_refused") {
        return;
    }
    bad_metadata_then_good_peer("meta-total-size", "differs from the handshake");
}

#[test]
fn metadata_of_the_wrong_size_is_refused_and_the_peer_banned() {
    if !in_netns("metadata_of_the_wrong_size_is_refused_and_the_peer_banned") {
        return;
    }
    bad_metadata_then_good_peer("meta-wrong-size", "banning peer 127.0.0.2");
}

#[test]
fn wrong_info_dictionary_is_refused_and_the_peer_banned() {
    if !in_netns("wrong_info_dictionary_is_refused_and_the_peer_banned") {
        return;
    }
    bad_metadata_then_good_peer("meta-wrong-info", "banning peer 127.0.0.2");
}

#[test]
fn silent_peer_times_out_and_frees_its_slot() {
    if !in_netns("silent_peer_times_out_and_frees_its_slot") {
        return;
    }
    let mut sw = swarm("silent", true);
    let mut mount = sw.mount(&[]);
    sw.assert_content(&mount);
    let closed = wait_closed(&mut sw.fake, Duration::from_secs(30));
    let secs = closed["seconds"].as_f64().unwrap();
    assert!((5.0..=20.0).contains(&secs), "handshake timeout: {closed}");
    let _ = log_of(&mut mount);
    mount.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn stalling_peer_is_dropped_and_its_requests_go_elsewhere() {
    if !in_netns("stalling_peer_is_dropped_and_its_requests_go_elsewhere") {
        return;
    }
    // Only the staller at first (it serves the metadata, then never a
    // block); the honest seeder comes once requests are stuck with it.
    let mut sw = swarm("stall", false);
    let mnt = sw.mnt();
    let (mut mount, good_port) = sw.spawn_before_good();
    wait_mounted(&mut mount, &mnt, Duration::from_secs(30));
    let file = mnt.join("data/big.bin");
    let t = Instant::now();
    let reader = std::thread::spawn(move || {
        Command::new("dd")
            .arg(format!("if={}", file.display()))
            .args(["bs=65536", "count=4", "status=none"])
            .output()
            .unwrap()
    });
    sw.fake
        .wait_for("a stalled request", Duration::from_secs(10), |v| {
            v["event"] == "sent" && v["what"] == "stall"
        });
    sw.start_good(good_port);
    let out = reader.join().unwrap();
    eprintln!("read 256 KiB in {:.2} s", t.elapsed().as_secs_f64());
    assert!(out.status.success());
    let original = std::fs::read(sw.tree.join("big.bin")).unwrap();
    assert_eq!(
        sha256_bytes(&out.stdout),
        sha256_bytes(&original[..4 * PIECE])
    );
    // The staller's requests time out: it is dropped and its slot freed.
    // (If readahead fetched the whole 4 MiB from the honest seeder first,
    // the mount is a seeder itself and drops the "seeder" staller for that
    // reason before the request timeout: its slot is freed all the same.)
    let closed = wait_closed(&mut sw.fake, Duration::from_secs(40));
    assert_eq!(closed["by"], "peer", "{closed}");
    assert!(
        wait_until(Duration::from_secs(5), || {
            let log = mount.stderr();
            log.contains("requests unanswered")
                || (log.contains("all pieces verified")
                    && log.contains(&format!(
                        "dropping {}: both sides are seeders",
                        sw.fake_addr
                    )))
        }),
        "{}",
        mount.stderr()
    );
    eprintln!("staller dropped after {} s", closed["seconds"]);
    unmount_child(mount, &mnt);
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    st.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Open fds of `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn connection_flood_is_bounded_in_connections_and_memory() {
    if !in_netns("connection_flood_is_bounded_in_connections_and_memory") {
        return;
    }
    let sw = swarm("good", true);
    let port = free_port();
    let port_s = port.to_string();
    let mut mount = sw.mount(&["--port", &port_s]);
    sw.assert_content(&mount);
    let pid = mount.pids()[0];
    let before = rss_kib(pid);
    let fds_before = fd_count(pid);
    let target = format!("127.0.0.1:{port}");
    for (mode, count) in [("silent", 2000usize), ("handshake", 2000)] {
        let mut extra = vec![
            "--flood",
            &target,
            "--hold",
            "12",
            "--listen-ip",
            "127.0.0.3",
        ];
        let count_s = count.to_string();
        extra.extend_from_slice(&["--count", &count_s]);
        if mode == "handshake" {
            extra.push("--flood-handshake");
        }
        let (mut flood, _) = start_fake(&sw.torrent_file, sw.tmp.path(), "good", &extra);
        let opened = flood.wait_event("flood_open", Duration::from_secs(120));
        eprintln!("{mode} flood: {opened}");
        // While the flood holds its connections: measure, and read.
        let mut peak = 0;
        let mut max_fds = 0;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(4) {
            peak = peak.max(rss_kib(pid));
            max_fds = max_fds.max(fd_count(pid));
            std::thread::sleep(Duration::from_millis(100));
        }
        let done = flood.wait_event("flood", Duration::from_secs(60));
        eprintln!(
            "{mode} flood of {count}: {done}; mount RSS {before} KiB before, peak {peak} KiB, fds {fds_before} before, peak {max_fds}"
        );
        assert!(
            max_fds < fds_before + 200,
            "incoming connections must be bounded: {max_fds} fds (before: {fds_before})"
        );
        let closed = done["closed_by_peer"].as_u64().unwrap() as usize;
        let opened = done["opened"].as_u64().unwrap() as usize;
        assert!(
            closed + 200 >= opened,
            "connections over the limit are closed: {done}"
        );
        assert!(
            peak < before + 64 * 1024,
            "memory stays bounded: {before} KiB -> {peak} KiB"
        );
        assert!(mount.is_mounted());
    }
    // Still serving, and nothing lingers.
    std::thread::sleep(Duration::from_secs(2));
    let after = rss_kib(pid);
    eprintln!("RSS after the floods: {after} KiB (before: {before} KiB)");
    assert_eq!(
        std::fs::read_to_string(mount.path().join("data/small.txt")).unwrap(),
        "small and honest\n"
    );
    let _ = log_of(&mut mount);
    mount.unmount_and_wait(Duration::from_secs(10));
}
