//! End-to-end tests of `btfs-mount MAGNET MNT` (issue: "Mount a magnet link
//! from a DHT-only swarm"). Each test runs in a network namespace of its own
//! (only loopback), against real python3-libtorrent peers and a local DHT,
//! and uses real `ls`, `cat`, `stat` and `dd` on a real FUSE mount.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Files of the test torrent: nested directories, a zero-length file, a
/// file of several MB, and a non-ASCII name.
fn sample_tree(dir: &Path) {
    make_tree(
        dir,
        &[
            ("index.html", TreeFile::Text("<h1>hello swarm</h1>\n")),
            ("empty.txt", TreeFile::Text("")),
            (
                "media/big.bin",
                TreeFile::Random(6 * 1024 * 1024 + 12345, 1),
            ),
            ("media/deep/er/small.bin", TreeFile::Random(70_000, 2)),
            (
                "café/naïve résumé.txt",
                TreeFile::Text("non-ASCII names survive\n"),
            ),
        ],
    );
}

/// A local DHT of three libtorrent nodes, plus a libtorrent seeder (DHT on)
/// of `tree` with `piece_size`-byte pieces, bootstrapped to them. Returns
/// (the DHT, the seeder, the bootstrap addr).
fn local_swarm(tree: &Path, piece_size: usize) -> (LocalDht, LtNode, String) {
    let dht = LocalDht::start(3);
    let boot = dht.boot();
    let dht_flags = ["--dht", "--bootstrap", &boot, "--announce-interval", "2"];
    let (seeder, _) = LtNode::seed_tree(tree, piece_size, &dht_flags);
    (dht, seeder, boot)
}

/// `cat FILE | sha256`, through a real `cat` process.
fn cat_sha256(path: &Path) -> String {
    let out = Command::new("cat").arg(path).output().expect("cat runs");
    assert!(
        out.status.success(),
        "cat {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    sha256_bytes(&out.stdout)
}

#[test]
fn magnet_from_dht_mounts_and_reads_verified_bytes_then_seeds_back() {
    if !in_netns("magnet_from_dht_mounts_and_reads_verified_bytes_then_seeds_back") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("site");
    sample_tree(&tree);
    let (_dht, mut seeder, boot) = local_swarm(&tree, 262144);
    let torrent = seeder.torrent();
    let magnet = torrent["magnet"].as_str().unwrap().to_string();
    assert!(
        !magnet.contains("x.pe"),
        "the magnet must carry no peer address"
    );
    let port = free_port();

    // Mount in the background (the default): returns once the tree is there.
    let mnt = tmp.path().join("mnt");
    let cache = tmp.path().join("cache");
    let started = Instant::now();
    let args = MountArgs::new(&magnet)
        .bootstrap(&boot)
        .cache_dir(&cache)
        .port(port)
        .timeout(60);
    let mount = Mount::background(&mnt, &args.build());
    eprintln!("mounted after {:.2} s", started.elapsed().as_secs_f64());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with("btfs-mount ") && l.contains(mnt.to_str().unwrap())),
        "mount should name its source btfs-mount: {mounts}"
    );

    // ls -R shows the whole tree.
    let ls = Command::new("ls").arg("-R").arg(&mnt).output().unwrap();
    assert!(ls.status.success());
    let ls = String::from_utf8(ls.stdout).unwrap();
    for name in [
        "site",
        "index.html",
        "empty.txt",
        "media",
        "big.bin",
        "deep",
        "er",
        "small.bin",
        "café",
        "naïve résumé.txt",
    ] {
        assert!(ls.contains(name), "ls -R lacks {name}:\n{ls}");
    }

    // stat sizes and SHA-256 of every file read with cat.
    for rel in [
        "index.html",
        "empty.txt",
        "media/big.bin",
        "media/deep/er/small.bin",
        "café/naïve résumé.txt",
    ] {
        let original = tree.join(rel);
        let mounted = mnt.join("site").join(rel);
        let st = Command::new("stat")
            .args(["-c", "%s"])
            .arg(&mounted)
            .output()
            .unwrap();
        let size: u64 = String::from_utf8(st.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(
            size,
            std::fs::metadata(&original).unwrap().len(),
            "size of {rel}"
        );
        assert_eq!(
            cat_sha256(&mounted),
            sha256_file(&original),
            "content of {rel}"
        );
    }

    // dd from the middle of the big file.
    let dd = Command::new("dd")
        .arg(format!("if={}", mnt.join("site/media/big.bin").display()))
        .args(["bs=4096", "skip=777", "count=3", "status=none"])
        .output()
        .unwrap();
    assert!(dd.status.success());
    let original = std::fs::read(tree.join("media/big.bin")).unwrap();
    assert_eq!(dd.stdout, original[777 * 4096..780 * 4096]);

    // The reverse: with the original seeder gone, a fresh libtorrent
    // session given only our address downloads the torrent from btfs-mount.
    drop(seeder);
    let dl = tmp.path().join("download");
    std::fs::create_dir_all(&dl).unwrap();
    let ours = format!("127.0.0.1:{port}");
    let mut fetcher = LtNode::start(&[
        "--fetch",
        &magnet,
        "--save",
        dl.to_str().unwrap(),
        "--connect",
        &ours,
    ]);
    fetcher.wait_event("finished", Duration::from_secs(90));
    for rel in [
        "index.html",
        "media/big.bin",
        "media/deep/er/small.bin",
        "café/naïve résumé.txt",
    ] {
        assert_eq!(
            sha256_file(&dl.join("site").join(rel)),
            sha256_file(&tree.join(rel)),
            "libtorrent's download of {rel} from btfs-mount"
        );
    }
    drop(fetcher);

    // Unmount: the background process exits.
    mount.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn cached_pieces_need_no_network_and_missing_ones_fail_with_eio() {
    if !in_netns("cached_pieces_need_no_network_and_missing_ones_fail_with_eio") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("site");
    sample_tree(&tree);
    let (seeder, magnet) = LtNode::seed_tree(&tree, 65536, &[]);
    let mnt = tmp.path().join("mnt");
    let cache = tmp.path().join("cache");

    // First mount: read one small file, then unmount.
    let args = MountArgs::new(&magnet)
        .no_dht()
        .peer(&seeder.addr())
        .cache_dir(&cache);
    let m = Mount::background(&mnt, &args.build());
    assert_eq!(
        cat_sha256(&mnt.join("site/media/deep/er/small.bin")),
        sha256_file(&tree.join("media/deep/er/small.bin"))
    );
    m.unmount_and_wait(Duration::from_secs(10));
    drop(seeder);

    // Second mount, no peer anywhere: the metadata and the pieces already
    // read come from the cache; anything else fails with EIO after
    // --read-timeout, and the log says why.
    let args = MountArgs::new(&magnet)
        .no_dht()
        .cache_dir(&cache)
        .read_timeout(3)
        .timeout(5);
    let m = Mount::background(&mnt, &args.build());
    assert_eq!(
        cat_sha256(&mnt.join("site/media/deep/er/small.bin")),
        sha256_file(&tree.join("media/deep/er/small.bin"))
    );
    let t = Instant::now();
    let err = std::fs::read(mnt.join("site/media/big.bin")).expect_err("no peer has these pieces");
    let waited = t.elapsed();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_secs(20),
        "EIO after {waited:?}"
    );
    // The background process logs why, in the cache directory.
    let ih = magnet.split("btih:").nth(1).unwrap()[..40].to_lowercase();
    let log = std::fs::read_to_string(cache.join(&ih).join("btfs-mount.log")).unwrap_or_default();
    assert!(
        log.contains("read failed after"),
        "the log says why:\n{log}"
    );
    m.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn malformed_magnet_and_metadata_timeout_exit_nonzero_with_a_reason() {
    if !in_netns("malformed_magnet_and_metadata_timeout_exit_nonzero_with_a_reason") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let bin = btfs_mount_bin();

    for (url, expect) in [
        ("magnet:?xt=urn:btih:zzzz", "info-hash"),
        ("http://example.com/x.torrent", "magnet"),
        ("magnet:?dn=nothing", "xt"),
    ] {
        let out = Command::new(&bin).arg(url).arg(&mnt).output().unwrap();
        assert!(!out.status.success(), "{url} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.to_lowercase().contains(expect), "{url}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }

    // A valid magnet nobody serves: non-zero after --timeout, nothing mounted.
    let dht = LocalDht::start(1);
    let args = MountArgs::new("magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567")
        .bootstrap(&dht.boot())
        .timeout(3)
        .cache_dir(&tmp.path().join("cache"));
    let t = Instant::now();
    let out = Command::new(&bin).args(args.at(&mnt)).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metadata not found within 3 s"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(20));
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(mnt.to_str().unwrap()),
        "nothing may be mounted"
    );
}

#[test]
fn foreground_mount_unmounts_cleanly_on_sigterm() {
    if !in_netns("foreground_mount_unmounts_cleanly_on_sigterm") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("site");
    sample_tree(&tree);
    let (seeder, magnet) = LtNode::seed_tree(&tree, 0, &[]);
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let args = MountArgs::new(&magnet)
        .foreground()
        .no_dht()
        .peer(&seeder.addr())
        .cache_dir(&tmp.path().join("cache"));
    let mut child = Command::new(btfs_mount_bin())
        .args(args.at(&mnt))
        .spawn()
        .unwrap();
    let kid = ChildGuard(child.id());
    assert!(
        wait_until(Duration::from_secs(30), || mnt
            .join("site/index.html")
            .exists()),
        "mounted"
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("site/index.html")).unwrap(),
        "<h1>hello swarm</h1>\n"
    );
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_timeout(&mut child, Duration::from_secs(10)).expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    std::mem::forget(kid);
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(!mounts.contains(mnt.to_str().unwrap()), "unmounted");
}
