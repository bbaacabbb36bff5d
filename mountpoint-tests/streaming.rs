//! End-to-end streaming tests (issue: "Streaming reads at the speed of the
//! link"): read patterns return the right bytes, a seeking reader is not
//! held up by pieces it left behind, and a signal during a large blocked read
//! unmounts promptly. Untimed except for generous bounds that only a
//! priority bug would miss. Each test runs in its own network namespace
//! against a python3-libtorrent seeder.

#[path = "support/mod.rs"]
mod support;

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

const BIG: usize = 24 * 1024 * 1024 + 777;

/// A seeder of `video/movie.mkv` (`BIG` random bytes) with `piece_size`
/// pieces and the `extra` ltnode flags: the seeder, its magnet and a
/// `--no-dht --peer SEEDER --cache-dir TMP/cache` mount of it, and the
/// file's bytes.
fn seed_big(tmp: &Path, piece_size: usize, extra: &[&str]) -> (LtNode, MountArgs, Vec<u8>) {
    let tree = tmp.join("video");
    make_tree(&tree, &[("movie.mkv", TreeFile::Random(BIG, 7))]);
    let data = std::fs::read(tree.join("movie.mkv")).unwrap();
    let (seeder, magnet) = LtNode::seed_tree(&tree, piece_size, extra);
    let args = MountArgs::new(&magnet)
        .no_dht()
        .peer(&seeder.addr())
        .cache_dir(&tmp.join("cache"));
    (seeder, args, data)
}

/// A tiny deterministic PRNG (xorshift) for offsets.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn sequential_and_random_reads_return_the_right_bytes() {
    if !in_netns("sequential_and_random_reads_return_the_right_bytes") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_seeder, args, data) = seed_big(tmp.path(), 65536, &[]);
    let mnt = tmp.path().join("mnt");
    let m = Mount::background(&mnt, &args.build());
    let path = mnt.join("video/movie.mkv");

    // Random access first, on a cold cache: 200 reads of random sizes.
    let mut f = std::fs::File::open(&path).unwrap();
    let mut rng = Rng(0x5eed);
    for _ in 0..200 {
        let off = (rng.next() % BIG as u64) as usize;
        let len = ((rng.next() % 300_000) as usize).min(BIG - off);
        let mut buf = vec![0u8; len];
        f.seek(SeekFrom::Start(off as u64)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert!(
            buf == data[off..off + len],
            "random read at {off} of {len} bytes"
        );
    }
    // Reads at and past the end are short.
    f.seek(SeekFrom::Start(BIG as u64 - 10)).unwrap();
    let mut buf = vec![0u8; 100];
    assert_eq!(f.read(&mut buf).unwrap(), 10);
    assert_eq!(f.read(&mut buf).unwrap(), 0);
    drop(f);

    // Then a plain sequential cat of the whole file.
    let out = Command::new("cat").arg(&path).output().unwrap();
    assert!(out.status.success());
    assert_eq!(sha256_bytes(&out.stdout), sha256_bytes(&data));
    m.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn a_seeking_reader_is_not_held_up_by_pieces_it_left_behind() {
    if !in_netns("a_seeking_reader_is_not_held_up_by_pieces_it_left_behind") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // A slow seeder (2 MB/s): reading the whole file would take 12 s.
    let (_seeder, args, data) = seed_big(tmp.path(), 262144, &["--upload-limit", "2000000"]);
    let mnt = tmp.path().join("mnt");
    let m = Mount::background(&mnt, &args.build());
    let path = mnt.join("video/movie.mkv");

    // Like a video player: read the start, then jump around. Each jump must
    // cost about one piece at the link rate, not the readahead left behind.
    let mut f = std::fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    f.read_exact(&mut buf).unwrap();
    assert!(buf == data[..buf.len()]);
    let mut worst = Duration::ZERO;
    for &frac in &[0.8f64, 0.3, 0.95, 0.55, 0.1] {
        let off = (BIG as f64 * frac) as usize & !4095;
        let t = Instant::now();
        f.seek(SeekFrom::Start(off as u64)).unwrap();
        let mut b = vec![0u8; 4096];
        f.read_exact(&mut b).unwrap();
        let took = t.elapsed();
        assert!(b == data[off..off + 4096], "bytes at {off}");
        eprintln!("seek to {off}: {took:?}");
        worst = worst.max(took);
        // Linger like a player decoding a little, so readahead starts.
        std::thread::sleep(Duration::from_millis(300));
    }
    // At 2 MB/s one 256 KiB piece takes ~0.13 s; waiting behind the
    // abandoned readahead windows would take seconds.
    assert!(worst < Duration::from_secs(3), "a seek waited {worst:?}");
    drop(f);
    m.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn a_signal_during_a_large_blocked_read_unmounts_promptly() {
    if !in_netns("a_signal_during_a_large_blocked_read_unmounts_promptly") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Very slow seeder: the cat below cannot finish during the test.
    let (_seeder, args, _data) = seed_big(tmp.path(), 262144, &["--upload-limit", "200000"]);
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut mount = Command::new(btfs_mount_bin())
        .args(args.foreground().read_timeout(600).at(&mnt))
        .spawn()
        .unwrap();
    let _guard = ChildGuard(mount.id());
    assert!(wait_until(Duration::from_secs(30), || mnt
        .join("video/movie.mkv")
        .exists()));
    let mut cat = Command::new("cat")
        .arg(mnt.join("video/movie.mkv"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _cat_guard = ChildGuard(cat.id());
    std::thread::sleep(Duration::from_secs(2));
    assert!(cat.try_wait().unwrap().is_none(), "cat is still reading");

    let t = Instant::now();
    // SAFETY: kill(2) on the child we started.
    unsafe { libc::kill(mount.id() as i32, libc::SIGTERM) };
    let status =
        wait_timeout(&mut mount, Duration::from_secs(10)).expect("btfs-mount exits promptly");
    eprintln!("btfs-mount exited after {:?} with {status:?}", t.elapsed());
    let cat_status = wait_timeout(&mut cat, Duration::from_secs(10)).expect("cat returns promptly");
    assert!(!cat_status.success(), "the interrupted read fails");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(!is_mounted(&mnt), "nothing left mounted");
}

/// How many opens the mount's log shows in passthrough mode.
fn passthrough_opens(m: &mut Mount) -> usize {
    m.child()
        .unwrap()
        .stderr()
        .matches("opened in passthrough mode")
        .count()
}

#[test]
fn fully_cached_files_are_read_by_passthrough_and_stay_pinned() {
    if !in_netns("fully_cached_files_are_read_by_passthrough_and_stay_pinned") {
        return;
    }
    use std::os::unix::fs::FileExt;
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("data");
    const A: usize = 3 * 1024 * 1024 + 5;
    const B: usize = 6 * 1024 * 1024 + 3;
    make_tree(
        &tree,
        &[
            ("a.bin", TreeFile::Random(A, 31)),
            ("b.bin", TreeFile::Random(B, 32)),
        ],
    );
    let a_data = std::fs::read(tree.join("a.bin")).unwrap();
    let (mut seeder, magnet) = LtNode::seed_tree(&tree, 262144, &[]);
    let ih = seeder.info_hash();
    let cache = tmp.path().join("cache");
    let mnt = tmp.path().join("mnt");
    let args = MountArgs::new(&magnet)
        .foreground()
        .arg("-vv")
        .no_dht()
        .peer(&seeder.addr())
        .cache_dir(&cache);
    // A 5 MiB cache: reading b.bin (6 MiB) must evict, but never the
    // pieces of a.bin while a passthrough open of it pins them.
    let mut m = Mount::foreground(
        &mnt,
        &args.clone().args(&["--cache-size", "5M"]).build(),
        Duration::from_secs(60),
    );
    let a = mnt.join("data/a.bin");
    let read_all = |f: &std::fs::File| {
        let mut buf = vec![0u8; A];
        f.read_exact_at(&mut buf, 0).unwrap();
        buf
    };
    // Opened before it is complete: served through btfs-mount. A second
    // open while the first is still open must keep that mode (the kernel
    // fails an open in another mode with EIO).
    let f0 = std::fs::File::open(&a).unwrap();
    assert!(read_all(&f0) == a_data, "a.bin through btfs-mount");
    let f1 = std::fs::File::open(&a).unwrap();
    assert!(read_all(&f1) == a_data, "a.bin, second open");
    assert_eq!(passthrough_opens(&mut m), 0);
    drop((f0, f1));
    // Once closed (FUSE release is asynchronous), a new open of the fully
    // cached file goes to passthrough.
    let mut f2 = None;
    for _ in 0..50 {
        let f = std::fs::File::open(&a).unwrap();
        if passthrough_opens(&mut m) > 0 {
            f2 = Some(f);
            break;
        }
        drop(f);
        std::thread::sleep(Duration::from_millis(100));
    }
    let f2 = f2.expect("a fully cached file is opened in passthrough mode");
    assert!(read_all(&f2) == a_data, "a.bin by passthrough");
    // Reading all of b.bin through the 5 MiB cache evicts its own pieces,
    // never a.bin's, which stay readable from the cache file.
    assert_eq!(
        sha256_file(&mnt.join("data/b.bin")),
        sha256_file(&tree.join("b.bin"))
    );
    let cached_a = cache.join(&ih).join("files/data/a.bin");
    assert!(
        std::fs::read(&cached_a).unwrap() == a_data,
        "a.bin's pieces were evicted while open in passthrough mode"
    );
    drop_page_cache(&cached_a);
    assert!(read_all(&f2) == a_data, "a.bin by passthrough, from disk");
    // mmap works on a passthrough file too (what `cp` and players may use).
    let out = Command::new("sha256sum").arg(&a).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&sha256_bytes(&a_data)));
    drop(f2);
    m.unmount_and_wait(Duration::from_secs(10));

    // --no-passthrough: the same cache, every read through btfs-mount.
    let mut m = Mount::foreground(
        &mnt,
        &args.arg("--no-passthrough").build(),
        Duration::from_secs(60),
    );
    assert_eq!(sha256_file(&a), sha256_bytes(&a_data));
    assert_eq!(passthrough_opens(&mut m), 0);
    m.unmount_and_wait(Duration::from_secs(10));
}
