//! A bounded cache (issue 7, part 5): `--cache-size` keeps the cache of a
//! torrent within its bound while a bigger file is read through, evicting
//! the least recently read pieces (holes punched in the sparse files), and
//! every byte read is still right. The cache lives on a tmpfs of its own so
//! disk usage (st_blocks) is exact.

#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::*;

const PIECE: u64 = 256 * 1024;
const BOUND: u64 = 4 << 20;

/// Bytes allocated (st_blocks × 512) by the files under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    for e in rd.flatten() {
        let Ok(md) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        if md.is_dir() {
            total += disk_usage(&e.path());
        } else {
            total += md.blocks() * 512;
        }
    }
    total
}

#[test]
fn cache_size_bounds_disk_usage_and_reads_stay_correct() {
    if !in_netns("cache_size_bounds_disk_usage_and_reads_stay_correct") {
        return;
    }
    let fx = SeededTree::new(
        &[
            ("big.bin", TreeFile::Random(16 * 1024 * 1024 + 777, 21)),
            ("small.txt", TreeFile::Text("tiny\n")),
        ],
        PIECE as usize,
    );
    let tree = &fx.tree;
    let cache = fx.path("cache");
    let _tmpfs = Tmpfs::mount(&cache, "64m");
    let mnt = fx.path("mnt");
    let args = fx
        .mount_args()
        .foreground()
        .verbose()
        .cache_dir(&cache)
        .args(&["--cache-size", "4M"]);
    let mut m = Mount::foreground(&mnt, &args.build(), Duration::from_secs(30));
    // Sample the cache's disk usage while the file is read through.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, cache) = (stop.clone(), peak.clone(), cache.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(disk_usage(&cache), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let big = mnt.join("data/big.bin");
    let t = Instant::now();
    assert_eq!(sha256_file(&big), sha256_file(&tree.join("big.bin")));
    eprintln!(
        "read 16 MiB through a 4 MiB cache in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    // Read the beginning again: it was evicted, so it is fetched again.
    drop_page_cache(&big);
    let mut head = vec![0u8; 1 << 20];
    {
        use std::os::unix::fs::FileExt;
        fs::File::open(&big)
            .unwrap()
            .read_exact_at(&mut head, 0)
            .unwrap();
    }
    assert_eq!(head, fs::read(tree.join("big.bin")).unwrap()[..1 << 20]);
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let end = disk_usage(&cache);
    let peak = peak.load(Ordering::Relaxed).max(end);
    eprintln!(
        "cache disk usage: peak {peak} bytes, at the end {end} bytes (bound {BOUND} + one piece {PIECE})"
    );
    // The info dictionary, resume data and directory entries: a few KiB.
    let slack = 64 * 1024;
    let log = m.child().unwrap().stderr();
    assert!(
        log.contains("the cache keeps at most 4194304 bytes"),
        "{log}"
    );
    assert!(
        peak <= BOUND + PIECE + slack,
        "the cache grew past its bound: {peak} bytes"
    );
    assert!(end >= BOUND / 2, "the cache is used: {end} bytes");
    m.unmount_and_wait(Duration::from_secs(10));
}
