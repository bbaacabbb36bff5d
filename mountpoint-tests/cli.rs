//! The command line as a newcomer meets it (issue 20): `list` and `stop`,
//! what the background log holds, flags checked before anything runs, a
//! bare info-hash, a remount right after an unmount, and the library
//! example. Each test runs in its own network and mount namespace against
//! a libtorrent seeder, with the product's default settings except where a
//! test says why.

#[path = "support/mod.rs"]
mod support;

use std::ffi::OsStr;
use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::*;

/// A libtorrent seeder of `data/` (three files), its magnet and address.
struct Seeded {
    tmp: tempfile::TempDir,
    _seeder: LtNode,
    magnet: String,
    peer: String,
}

fn seeded() -> Seeded {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("data");
    make_tree(
        &tree,
        &[
            ("big.bin", TreeFile::Random(2 * 1024 * 1024 + 7, 3)),
            ("notes.txt", TreeFile::Text("hello from libtorrent\n")),
        ],
    );
    let (seeder, magnet) = LtNode::seed_tree(&tree, 0, &[]);
    let peer = seeder.addr();
    Seeded {
        tmp,
        _seeder: seeder,
        magnet,
        peer,
    }
}

impl Seeded {
    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// `URL --no-dht --peer SEEDER --cache-dir CACHE`, `URL` the magnet
    /// link or the bare info-hash `url`.
    fn args(&self, url: &str, cache: &Path) -> MountArgs {
        MountArgs::new(url)
            .no_dht()
            .peer(&self.peer)
            .cache_dir(cache)
    }
}

/// `btfs-mount ARGS` to completion, with a private run directory for
/// `list` (`XDG_RUNTIME_DIR`), within 60 s.
fn btfs<S: AsRef<OsStr> + Debug>(run_dir: &Path, args: &[S]) -> Output {
    let out = Command::new("timeout")
        .arg("60")
        .arg(btfs_mount_bin())
        .args(args)
        .env("XDG_RUNTIME_DIR", run_dir)
        .output()
        .expect("run btfs-mount");
    eprintln!(
        "btfs-mount {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Unmounts its mountpoints and stops their btfs-mount processes on drop
/// (a test that fails half-way leaves nothing running).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for mp in &self.0 {
            if is_mounted(mp) {
                unmount(mp);
            }
            for pid in btfs_mount_pids(mp) {
                drop(ChildGuard(pid));
            }
        }
    }
}

/// Runs `btfs-mount ARGS` (one shell word list, paths without spaces) in
/// a new mount namespace after the shell commands `before`, and returns
/// its stdout and stderr.
fn elsewhere(run_dir: &Path, before: &str, args: &str) -> String {
    let bin = btfs_mount_bin();
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(format!("{before}exec {} {args} 2>&1", bin.display()))
        .env("XDG_RUNTIME_DIR", run_dir)
        .output()
        .expect("run unshare");
    let out = stdout(&o);
    eprintln!("elsewhere: {before}btfs-mount {args}: {}\n{out}", o.status);
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn list_shows_mounts_and_stop_ends_them_a_writable_one_after_it_published() {
    if !in_netns("list_shows_mounts_and_stop_ends_them_a_writable_one_after_it_published") {
        return;
    }
    let sw = seeded();
    let run = sw.path("run");
    fs::create_dir_all(&run).unwrap();
    let cache = sw.path("cache");
    let (mnt, draft) = (sw.path("mnt"), sw.path("draft"));
    fs::create_dir_all(&mnt).unwrap();
    fs::create_dir_all(&draft).unwrap();
    let _cleanup = Cleanup(vec![mnt.clone(), draft.clone()]);
    let o = btfs(&run, &sw.args(&sw.magnet, &cache).at(&mnt));
    assert!(o.status.success());
    let o = btfs(
        &run,
        &MountArgs::writable().no_dht().cache_dir(&cache).at(&draft),
    );
    assert!(o.status.success());
    fs::write(draft.join("new.txt"), b"written in a draft\n").unwrap();

    let listed = stdout(&btfs(&run, &["list"]));
    let ih = sw.magnet.split("btih:").nth(1).unwrap()[..40].to_string();
    assert!(listed.contains("mount (mounted)"), "{listed}");
    assert!(listed.contains("writable (mounted)"), "{listed}");
    assert!(
        listed.contains(s(&mnt)) && listed.contains(s(&draft)),
        "{listed}"
    );
    assert!(
        listed.contains(&ih),
        "the magnet link of the mount: {listed}"
    );
    let log = cache.join(&ih).join("btfs-mount.log");
    assert!(listed.contains(s(&log)), "its log: {listed}");
    assert!(!listed.contains("namespace"), "ours: {listed}");

    // Seen from a namespace made by `unshare --mount`, which starts with
    // copies of our mounts: the same mounts, nothing marked.
    let copied = elsewhere(&run, "", "list");
    assert!(!copied.contains("not ours"), "{copied}");
    // Seen from a namespace where those paths are plain directories (the
    // copies unmounted there, not here): listed, marked, and not
    // stoppable by path.
    let unmount_copies = format!("umount -l {} {} && ", s(&mnt), s(&draft));
    let other = elsewhere(&run, &unmount_copies, "list");
    assert_eq!(
        other
            .matches("not ours: its mountpoint is not mounted here")
            .count(),
        2,
        "{other}"
    );
    let stop = elsewhere(&run, &unmount_copies, &format!("stop {}", s(&mnt)));
    assert!(stop.contains("no btfs-mount process serves"), "{stop}");
    assert!(is_mounted(&mnt), "a stop by path from elsewhere left it");

    // A writable mount: stop unmounts it (which publishes), then ends the
    // seeding that follows.
    let t = Instant::now();
    let o = btfs(&run, &["stop", s(&draft)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("published magnet:?xt=urn:btih:"),
        "{}",
        stderr(&o)
    );
    eprintln!(
        "stop of the writable mount: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert!(!is_mounted(&draft));
    let published = stderr(&o)
        .split("published ")
        .nth(1)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let new_ih = &published.split("btih:").nth(1).unwrap()[..40];
    assert_eq!(
        fs::read(cache.join(new_ih).join("files/new.txt")).unwrap(),
        b"written in a draft\n",
        "the published torrent is in the cache"
    );

    // The read-only mount, by PID.
    let listed = stdout(&btfs(&run, &["list"]));
    assert!(!listed.contains("writable"), "{listed}");
    let pid = listed
        .lines()
        .find(|l| l.contains("mount (mounted)"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let o = btfs(&run, &["stop", &pid]);
    assert!(o.status.success());
    assert!(!is_mounted(&mnt));
    assert!(stdout(&btfs(&run, &["list"])).is_empty());
    let o = btfs(&run, &["stop", s(&mnt)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no btfs-mount process serves"));
}

#[test]
fn the_background_log_tells_what_happened_without_flags() {
    if !in_netns("the_background_log_tells_what_happened_without_flags") {
        return;
    }
    let sw = seeded();
    let cache = sw.path("cache");
    let mnt = sw.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let _cleanup = Cleanup(vec![mnt.clone()]);
    let o = btfs(&sw.path("run"), &sw.args(&sw.magnet, &cache).at(&mnt));
    assert!(o.status.success());
    let ih = &sw.magnet.split("btih:").nth(1).unwrap()[..40];
    let log = cache.join(ih).join("btfs-mount.log");
    assert!(
        stderr(&o).contains(&format!("log: {}", log.display())),
        "the mount says where its log is: {}",
        stderr(&o)
    );
    // What shells and file managers do on every file: isatty (ioctl
    // TCGETS), getxattr (security.selinux), listxattr (only btfs's own
    // user.btfs.* attributes).
    let file = mnt.join("data/notes.txt");
    let py = format!(
        "import os\n\
         fd = os.open({file:?}, os.O_RDONLY)\n\
         assert not os.isatty(fd)\n\
         try:\n    os.getxattr({file:?}, 'security.selinux'); raise SystemExit('xattr?')\n\
         except OSError as e:\n    assert e.errno == 61, e\n\
         assert os.listxattr({file:?}) == ['user.btfs.progress', 'user.btfs.info_hash', 'user.btfs.peers', 'user.btfs.requests']\n\
         print(os.read(fd, 100).decode(), end='')\n",
        file = s(&file)
    );
    let out = Command::new(PYTHON).arg("-c").arg(py).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), "hello from libtorrent\n");
    assert!(unmount(&mnt));
    assert!(wait_until(Duration::from_secs(10), || btfs_mount_pids(
        &mnt
    )
    .is_empty()));
    let text = fs::read_to_string(&log).unwrap();
    eprintln!("---- log ----\n{text}");
    assert!(
        text.contains(&format!("connected to {}", sw.peer)),
        "our events at info level"
    );
    assert!(text.contains("was unmounted"), "{text}");
    assert!(!text.contains("Not Implemented"), "no fuser warnings");
    assert!(!text.contains("WARN"), "nothing went wrong: {text}");
}

#[test]
fn bad_bootstrap_and_peer_flags_fail_at_once_and_a_silent_dht_is_named() {
    if !in_netns("bad_bootstrap_and_peer_flags_fail_at_once_and_a_silent_dht_is_named") {
        return;
    }
    let run = tempfile::tempdir().unwrap();
    let mnt = run.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let magnet = "magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567";
    for (flag, value, why) in [
        ("--bootstrap", "nosuchhost.invalid:6881", "cannot resolve"),
        ("--bootstrap", "127.0.0.1", "the port is missing"),
        ("--peer", "127.0.0.1:0", "port 0"),
        ("--peer", "[::1]", "is not HOST:PORT"),
    ] {
        let t = Instant::now();
        let o = btfs(run.path(), &[magnet, s(&mnt), flag, value]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains(why), "{flag} {value}: {}", stderr(&o));
        assert!(t.elapsed() < Duration::from_secs(10));
    }
    // A bootstrap node that never answers: the timeout says so.
    let args = MountArgs::new(magnet)
        .bootstrap("127.0.0.1:9")
        .timeout(3)
        .cache_dir(&run.path().join("cache"));
    let o = btfs(run.path(), &args.at(&mnt));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("no DHT node ever answered"), "{e}");
    assert_eq!(
        e.lines()
            .filter(|l| l.starts_with("btfs-mount: ") && l.contains("metadata not found"))
            .count(),
        1,
        "one line says why: {e}"
    );
    assert!(!is_mounted(&mnt));
}

/// A lookup that fails says why the peers it found were of no use, in its
/// one line: `--encryption require` against a libtorrent seeder with
/// encryption disabled names the seeder and its refusal of our encrypted
/// handshake (before, only `-vv` showed it); peers that all refuse the
/// connection are named, the last three, and the rest counted, the line
/// staying short. Counts of one are singular ("1 peer found").
#[test]
fn a_failed_lookup_names_the_peers_that_failed_and_why() {
    if !in_netns("a_failed_lookup_names_the_peers_that_failed_and_why") {
        return;
    }
    let run = tempfile::tempdir().unwrap();
    let tree = run.path().join("data");
    make_tree(&tree, &[("a.bin", TreeFile::Random(300_000, 7))]);
    let (seeder, magnet) = LtNode::seed_tree(&tree, 0, &["--no-encryption"]);
    let peer = seeder.addr();
    let mnt = run.path().join("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let _cleanup = Cleanup(vec![mnt.clone()]);
    let args = MountArgs::new(&magnet)
        .no_dht()
        .peer(&peer)
        .args(&["--encryption", "require"])
        .timeout(5)
        .cache_dir(&run.path().join("cache"));
    let o = btfs(run.path(), &args.at(&mnt));
    assert!(!o.status.success());
    assert!(!is_mounted(&mnt));
    let e = stderr(&o);
    assert!(
        e.contains("btfs-mount: 1 peer found (cli 1), 0 connected"),
        "{e}"
    );
    assert!(!e.contains("1 peers"), "{e}");
    let why: Vec<&str> = e
        .lines()
        .filter(|l| l.starts_with("btfs-mount: metadata not found"))
        .collect();
    assert_eq!(why.len(), 1, "one line says why: {e}");
    let head = format!(
        "btfs-mount: metadata not found within 5 s (1 peer known, 0 connected, 0 metadata bytes \
         received): {peer} refused our encrypted handshake (peer closed the connection during \
         MSE Diffie-Hellman key exchange"
    );
    assert!(why[0].starts_with(&head), "{}\nwanted {head}", why[0]);
    assert!(
        why[0].ends_with("it may accept plaintext only, which --encryption require forbids"),
        "{}",
        why[0]
    );
    drop(seeder);

    // Five peers with nothing listening (default settings otherwise: TCP
    // and uTP are both tried, so give the uTP dial its 6 s).
    let ports = free_ports(5);
    let mut args = MountArgs::new(&magnet)
        .no_dht()
        .timeout(10)
        .cache_dir(&run.path().join("cache2"));
    for p in &ports {
        args = args.peer(&format!("127.0.0.1:{p}"));
    }
    let o = btfs(run.path(), &args.at(&mnt));
    assert!(!o.status.success());
    let e = stderr(&o);
    let why: Vec<&str> = e
        .lines()
        .filter(|l| l.starts_with("btfs-mount: metadata not found"))
        .collect();
    assert_eq!(why.len(), 1, "one line says why: {e}");
    let line = why[0];
    assert!(
        line.starts_with(
            "btfs-mount: metadata not found within 10 s (5 peers known, 0 connected, 0 metadata \
             bytes received): 127.0.0.1:"
        ),
        "{line}"
    );
    let refused = "refused the connection (nothing listens on that port)";
    assert_eq!(line.matches(refused).count(), 3, "the last three: {line}");
    assert!(
        line.ends_with(&format!("{refused}; and 2 other peers failed too")),
        "{line}"
    );
    assert!(line.len() < 400, "{} bytes: {line}", line.len());

    // A peer that accepts the connection and never says a word: named once
    // its dial gives up (15 s, both handshakes tried).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let args = MountArgs::new(&magnet)
        .no_dht()
        .peer(&silent_addr.to_string())
        .timeout(20)
        .cache_dir(&run.path().join("cache3"));
    let o = btfs(run.path(), &args.at(&mnt));
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.lines().any(|l| l
            == format!(
                "btfs-mount: metadata not found within 20 s (1 peer known, 0 connected, 0 \
                 metadata bytes received): {silent_addr} did not complete the handshake in time"
            )),
        "{e}"
    );
    drop(silent);
}

#[test]
fn a_bare_info_hash_mounts_and_a_remount_right_after_unmount_works() {
    if !in_netns("a_bare_info_hash_mounts_and_a_remount_right_after_unmount_works") {
        return;
    }
    let sw = seeded();
    let cache = sw.path("cache");
    let ih = sw.magnet.split("btih:").nth(1).unwrap()[..40].to_string();
    let args = sw.args(&ih, &cache).build();
    let mnt = sw.path("mnt");
    let want = sha256_file(&sw.path("data/big.bin"));
    for round in 0..3 {
        let m = Mount::background(&mnt, &args);
        assert_eq!(
            sha256_file(&m.path().join("data/big.bin")),
            want,
            "round {round}"
        );
        // Unmounted, and mounted again at once: the old process may still
        // be exiting and hold the cache's lock for a moment.
        assert!(unmount(&mnt));
        std::mem::forget(m);
    }
    assert!(wait_until(Duration::from_secs(10), || btfs_mount_pids(
        &mnt
    )
    .is_empty()));
}

#[test]
fn the_library_example_streams_a_file() {
    if !in_netns("the_library_example_streams_a_file") {
        return;
    }
    let sw = seeded();
    let example = btfs_mount_bin().parent().unwrap().join("examples/cat");
    assert!(
        example.exists(),
        "{} (built by cargo test)",
        example.display()
    );
    let out = Command::new(&example)
        .args([&sw.magnet, "data/big.bin", "--no-dht", "--peer", &sw.peer])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sha256_bytes(&out.stdout),
        sha256_file(&sw.path("data/big.bin"))
    );
    let out = Command::new(&example)
        .args([&sw.magnet, "", "--no-dht", "--peer", &sw.peer])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("2097159 data/big.bin"), "{listing}");
    assert!(listing.contains("22 data/notes.txt"), "{listing}");
}
