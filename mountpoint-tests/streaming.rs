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

fn seed_big(tmp: &Path, extra: &[&str]) -> (LtNode, Vec<u8>) {
    let tree = tmp.join("video");
    make_tree(&tree, &[("movie.mkv", TreeFile::Random(BIG, 7))]);
    let data = std::fs::read(tree.join("movie.mkv")).unwrap();
    let mut args = vec!["--seed", tree.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut seeder = LtNode::start(&args);
    seeder.wait_event("seeding", Duration::from_secs(60));
    (seeder, data)
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
    let (mut seeder, data) = seed_big(tmp.path(), &["--piece-size", "65536"]);
    let magnet = seeder.magnet();
    let peer = seeder.addr();
    let mnt = tmp.path().join("mnt");
    let cache = tmp.path().join("cache");
    let m = Mount::background(
        &mnt,
        &[
            &magnet,
            "--no-dht",
            "--peer",
            &peer,
            "--cache-dir",
            s(&cache),
        ],
    );
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
    let (mut seeder, data) = seed_big(
        tmp.path(),
        &["--piece-size", "262144", "--upload-limit", "2000000"],
    );
    let magnet = seeder.magnet();
    let peer = seeder.addr();
    let mnt = tmp.path().join("mnt");
    let cache = tmp.path().join("cache");
    let m = Mount::background(
        &mnt,
        &[
            &magnet,
            "--no-dht",
            "--peer",
            &peer,
            "--cache-dir",
            s(&cache),
        ],
    );
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
    let (mut seeder, _data) = seed_big(
        tmp.path(),
        &["--piece-size", "262144", "--upload-limit", "200000"],
    );
    let magnet = seeder.magnet();
    let peer = seeder.addr();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut mount = Command::new(btfs_mount_bin())
        .arg(&magnet)
        .arg(&mnt)
        .args(["-f", "--no-dht", "--peer", &peer, "--read-timeout", "600"])
        .args(["--cache-dir", s(&tmp.path().join("cache"))])
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
