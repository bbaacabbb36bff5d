//! Faults (issue 7, part 4): a mount killed with SIGKILL while reading, a
//! cache damaged between mounts (a corrupt byte, a truncated file, a deleted
//! file), a full cache disk, an unmount while reads are blocked, and a lazy
//! unmount while a file is open (served until closed). Each
//! test runs in its own network and mount namespace, against a libtorrent
//! seeder; every byte read is compared (SHA-256) with the original.

#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const PIECE: usize = 65536;

/// A seeded tree: `big.bin` (3 MiB + 100, not piece-aligned), `mid.bin`
/// (1 MiB), `small.txt`.
struct Fixture {
    tmp: tempfile::TempDir,
    tree: PathBuf,
    seeder: Option<LtNode>,
    magnet: String,
    info_hash: String,
    peer: String,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("data");
    make_tree(
        &tree,
        &[
            ("big.bin", TreeFile::Random(3 * 1024 * 1024 + 100, 11)),
            ("mid.bin", TreeFile::Random(1024 * 1024, 12)),
            ("small.txt", TreeFile::Text("cached and small\n")),
        ],
    );
    let (mut seeder, magnet) = LtNode::seed_tree(&tree, PIECE, &[]);
    let info_hash = seeder.info_hash();
    let peer = seeder.addr();
    Fixture {
        tmp,
        tree,
        seeder: Some(seeder),
        magnet,
        info_hash,
        peer,
    }
}

impl Fixture {
    fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }
    fn mnt(&self) -> PathBuf {
        self.tmp.path().join("mnt")
    }
    /// `MAGNET --no-dht --peer SEEDER --cache-dir CACHE`.
    fn args(&self) -> MountArgs {
        MountArgs::new(&self.magnet)
            .no_dht()
            .peer(&self.peer)
            .cache_dir(&self.cache())
    }
    /// `<cache>/<info-hash>/files/data/<rel>`.
    fn cache_file(&self, rel: &str) -> PathBuf {
        self.cache()
            .join(&self.info_hash)
            .join("files/data")
            .join(rel)
    }
    fn original(&self, rel: &str) -> Vec<u8> {
        fs::read(self.tree.join(rel)).unwrap()
    }
}

/// Reads `path` whole; the error if the read fails.
fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    fs::read(path)
}

#[test]
fn sigkill_while_reading_then_remount_serves_verified_bytes() {
    if !in_netns("sigkill_while_reading_then_remount_serves_verified_bytes") {
        return;
    }
    let fx = fixture();
    let mnt = fx.mnt();
    let args = fx.args().build();
    let m = Mount::background(&mnt, &args);
    let pid = m.pids()[0];
    // Read part of the big file, then SIGKILL the daemon in the middle of
    // another read.
    let mut head = vec![0u8; 1 << 20];
    fs::File::open(mnt.join("data/big.bin"))
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();
    assert_eq!(head, fx.original("big.bin")[..1 << 20]);
    let mut reader = Command::new("cat")
        .arg(mnt.join("data/mid.bin"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = wait_timeout(&mut reader, Duration::from_secs(10)).expect("the reader ends");
    assert!(
        wait_until(Duration::from_secs(10), || !Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "the daemon is gone"
    );
    // The mountpoint is stale now ("Transport endpoint is not connected";
    // stat may still be answered from the kernel's attribute cache).
    assert_eq!(statfs_errno(&mnt), Some(libc::ENOTCONN));
    assert!(is_mounted(&mnt), "the dead mount is still in the table");
    std::mem::forget(m); // its Drop would unmount the stale mount for us

    // The same mountpoint mounts again (the stale mount is cleared), and
    // every byte served comes out right.
    let t = Instant::now();
    let m = Mount::background(&mnt, &args);
    eprintln!("remounted in {:.2} s", t.elapsed().as_secs_f64());
    for rel in ["big.bin", "mid.bin", "small.txt"] {
        assert_eq!(
            sha256_file(&mnt.join("data").join(rel)),
            sha256_file(&fx.tree.join(rel)),
            "{rel} after the restart"
        );
    }
    m.unmount_and_wait(Duration::from_secs(10));
    // Nothing stale left underneath.
    assert!(
        !is_mounted(&mnt),
        "the stale mount was cleared, not stacked"
    );
}

/// The errno of `statfs(path)` (always reaches a FUSE server), None on
/// success.
fn statfs_errno(path: &Path) -> Option<i32> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statfs fills the zeroed struct for a valid path.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } == 0 {
        None
    } else {
        std::io::Error::last_os_error().raw_os_error()
    }
}

#[test]
fn damaged_cache_is_detected_and_never_served() {
    if !in_netns("damaged_cache_is_detected_and_never_served") {
        return;
    }
    let mut fx = fixture();
    let mnt = fx.mnt();
    let cache = fx.cache();
    // First mount: read everything; a clean unmount saves the resume data.
    let m = Mount::background(&mnt, &fx.args().build());
    for rel in ["big.bin", "mid.bin", "small.txt"] {
        assert_eq!(
            sha256_file(&mnt.join("data").join(rel)),
            sha256_file(&fx.tree.join(rel))
        );
    }
    m.unmount_and_wait(Duration::from_secs(10));

    // Damage the cache: one byte of big.bin, mid.bin truncated to half,
    // small.txt deleted.
    let torrent = fx.seeder.as_mut().unwrap().torrent();
    let big_off = torrent_file_offset(&torrent, "data/big.bin");
    let corrupt_at = 5 * PIECE as u64 + 1234;
    let corrupt_piece = (big_off + corrupt_at) / PIECE as u64;
    let intact_at = 20 * PIECE as u64; // far from every damage
    eprintln!("big.bin at {big_off}: corrupting piece {corrupt_piece}");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fx.cache_file("big.bin"))
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, corrupt_at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], corrupt_at).unwrap();
    drop(f);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(fx.cache_file("mid.bin"))
        .unwrap();
    f.set_len(512 * 1024).unwrap();
    drop(f);
    fs::remove_file(fx.cache_file("small.txt")).unwrap();

    // Second mount, no peer: undamaged pieces are served, damaged ones are
    // never served (EIO after the read timeout), and the log says why.
    let seeder = fx.seeder.take().unwrap();
    let args = MountArgs::new(&fx.magnet)
        .foreground()
        .verbose()
        .no_dht()
        .cache_dir(&cache)
        .read_timeout(2);
    let mut m = Mount::foreground(&mnt, &args.build(), Duration::from_secs(30));
    // Cached pieces are hashed after the mount is up (on first read, or
    // by the background verifier): the log names the bad ones soon.
    let child = m.child().unwrap();
    for piece in [0, corrupt_piece] {
        let said = format!("cached piece {piece} is missing or corrupt");
        assert!(
            wait_until(Duration::from_secs(10), || child.stderr().contains(&said)),
            "piece {piece}: {}",
            child.stderr()
        );
    }
    let big = mnt.join("data/big.bin");
    let f = fs::File::open(&big).unwrap();
    let mut good = vec![0u8; PIECE];
    f.read_exact_at(&mut good, intact_at).unwrap();
    let at = intact_at as usize;
    assert_eq!(
        good,
        fx.original("big.bin")[at..at + PIECE],
        "intact piece served"
    );
    let mut bad = vec![0u8; 4096];
    let err = f
        .read_exact_at(&mut bad, corrupt_at)
        .expect_err("the corrupt piece is never served");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let err = read(&mnt.join("data/mid.bin")).expect_err("truncated: not served");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let err = read(&mnt.join("data/small.txt")).expect_err("deleted: not served");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(f);
    m.unmount_and_wait(Duration::from_secs(10));

    // Third mount, with the seeder back: the damaged pieces are fetched again.
    drop(seeder);
    let (seeder, _) = LtNode::seed_tree(&fx.tree, PIECE, &[]);
    let args = MountArgs::new(&fx.magnet)
        .no_dht()
        .peer(&seeder.addr())
        .cache_dir(&cache);
    let m = Mount::background(&mnt, &args.build());
    for rel in ["big.bin", "mid.bin", "small.txt"] {
        assert_eq!(
            sha256_file(&mnt.join("data").join(rel)),
            sha256_file(&fx.tree.join(rel)),
            "{rel} after the repair"
        );
    }
    m.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn full_cache_disk_fails_reads_and_the_mount_survives() {
    if !in_netns("full_cache_disk_fails_reads_and_the_mount_survives") {
        return;
    }
    let fx = fixture();
    let mnt = fx.mnt();
    let _tmpfs = Tmpfs::mount(&fx.cache(), "2m");
    let args = fx.args().foreground().args(&["--cache-size", "1G"]);
    let mut m = Mount::foreground(&mnt, &args.build(), Duration::from_secs(30));
    let small = mnt.join("data/small.txt");
    assert_eq!(read(&small).unwrap(), b"cached and small\n");
    // 3 MiB do not fit in 2 MiB.
    let t = Instant::now();
    let err = read(&mnt.join("data/big.bin")).expect_err("the disk is full");
    eprintln!(
        "big.bin failed after {:.2} s: {err}",
        t.elapsed().as_secs_f64()
    );
    assert!(
        matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EIO)),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(30), "fails promptly");
    let log = m.child().unwrap().stderr();
    assert!(log.contains("cannot store piece"), "{log}");
    // Still alive, and cached data still reads.
    assert!(
        m.child().unwrap().try_wait().is_none(),
        "the mount survives"
    );
    drop_page_cache(&small);
    assert_eq!(read(&small).unwrap(), b"cached and small\n");
    m.unmount_and_wait(Duration::from_secs(10));

    // The default cache size (no --cache-size) is a share of the free
    // space: on the same tiny disk, big.bin now reads through, evicting.
    let args = fx.args().foreground().verbose();
    let mut m = Mount::foreground(&mnt, &args.build(), Duration::from_secs(30));
    assert_eq!(
        sha256_file(&mnt.join("data/big.bin")),
        sha256_file(&fx.tree.join("big.bin")),
        "read through a default-bounded cache on a full disk"
    );
    let log = m.child().unwrap().stderr();
    assert!(log.contains("the cache keeps at most"), "{log}");
    assert!(!log.contains("cannot store piece"), "{log}");
    m.unmount_and_wait(Duration::from_secs(10));
}

/// Mounts with a long read timeout, reads `small.txt` (metadata and one
/// piece), then stops the only seeder: a read of `big.bin` blocks.
fn blocked_read(fx: &mut Fixture) -> (Mount, std::process::Child) {
    let mnt = fx.mnt();
    let args = fx.args().foreground().verbose().read_timeout(600);
    let m = Mount::foreground(&mnt, &args.build(), Duration::from_secs(30));
    assert_eq!(
        read(&mnt.join("data/small.txt")).unwrap(),
        b"cached and small\n"
    );
    drop(fx.seeder.take());
    let cat = Command::new("cat")
        .arg(mnt.join("data/big.bin"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    (m, cat)
}

#[test]
fn lazy_unmount_keeps_serving_open_files_until_they_close() {
    if !in_netns("lazy_unmount_keeps_serving_open_files_until_they_close") {
        return;
    }
    let fx = fixture();
    let mnt = fx.mnt();
    let args = fx.args().foreground().verbose();
    let mut m = Mount::foreground(&mnt, &args.build(), Duration::from_secs(30));
    // A reader has big.bin open and has read its first 64 KiB.
    let f = fs::File::open(mnt.join("data/big.bin")).unwrap();
    let want = fx.original("big.bin");
    let mut got = vec![0u8; want.len()];
    f.read_exact_at(&mut got[..PIECE], 0).unwrap();
    // What a user tries first: busy.
    let out = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a file is open: EBUSY");
    // The lazy unmount: the tree is gone for new lookups at once...
    let st = Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(!is_mounted(&mnt));
    assert!(
        !mnt.join("data").exists(),
        "new lookups no longer see the tree"
    );
    // ...but the open file is still served, every byte right (most of it
    // downloaded after the detach).
    f.read_exact_at(&mut got[PIECE..], PIECE as u64).unwrap();
    assert_eq!(sha256_bytes(&got), sha256_bytes(&want));
    assert!(
        m.child()
            .unwrap()
            .wait_exit(Duration::from_secs(1))
            .is_none(),
        "btfs-mount serves while a file is open"
    );
    // The last close ends the mount, and the process exits cleanly.
    let t = Instant::now();
    drop(f);
    let exited = m.child().unwrap().wait_exit(Duration::from_secs(10));
    eprintln!(
        "btfs-mount exited ({exited:?}) {:.2} s after the last file closed",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(exited.map(|s| s.success()), Some(true));
}

#[test]
fn sigterm_while_reads_block_fails_them_and_exits() {
    if !in_netns("sigterm_while_reads_block_fails_them_and_exits") {
        return;
    }
    let mut fx = fixture();
    let (mut m, mut cat) = blocked_read(&mut fx);
    assert!(cat.try_wait().unwrap().is_none(), "the read blocks");
    let t = Instant::now();
    let pid = m.child().unwrap().pid();
    // SAFETY: kill(2) on the process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = wait_timeout(&mut cat, Duration::from_secs(10)).expect("the read returns");
    assert!(!status.success(), "the blocked read fails");
    let exited = m.child().unwrap().wait_exit(Duration::from_secs(10));
    eprintln!(
        "btfs-mount exited ({exited:?}) {:.2} s after SIGTERM",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(exited.map(|s| s.success()), Some(true));
    assert!(!is_mounted(&fx.mnt()));
}

#[test]
fn a_second_mount_of_the_same_torrent_and_cache_is_refused() {
    if !in_netns("a_second_mount_of_the_same_torrent_and_cache_is_refused") {
        return;
    }
    let fx = fixture();
    let first = Mount::background(&fx.mnt(), &fx.args().build());
    assert_eq!(
        read(&first.path().join("data/small.txt")).unwrap(),
        fx.original("small.txt")
    );
    // The same torrent and cache elsewhere: refused with the holder's pid;
    // the first mount goes on.
    let other = fx.tmp.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let out = std::process::Command::new(btfs_mount_bin())
        .args(fx.args().at(&other))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("in use by another btfs-mount (pid"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!is_mounted(&other));
    assert_eq!(
        read(&first.path().join("data/mid.bin")).unwrap(),
        fx.original("mid.bin")
    );
    first.unmount_and_wait(Duration::from_secs(10));
}
