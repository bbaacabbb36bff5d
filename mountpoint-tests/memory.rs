//! Bounded memory whatever the torrent (issue 19): blocks go to the cache
//! as they arrive and pieces are hashed from it, so a mount's memory does
//! not grow with the piece length; pieces longer than libtorrent accepts
//! are refused, naming the limit; a low `--memory-limit` slows readahead
//! but never stalls a read.
//!
//! Peak memory is the mount process's VmHWM (`/proc/PID/status`), read
//! while it still runs.

#[path = "support/mod.rs"]
mod support;

#[path = "support/bep9.rs"]
mod bep9;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use bep9::*;
use btfs::bencode::Owned;
use support::*;

/// Peak resident memory (VmHWM) of process `pid`, in bytes.
fn vm_hwm(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmHWM value");
    kib * 1024
}

/// The bytes of `path` at `offset`, `len` of them.
fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

const MIB: u64 = 1 << 20;

#[test]
fn pieces_of_64_mib_stream_at_bounded_memory() {
    if !in_netns("pieces_of_64_mib_stream_at_bounded_memory") {
        return;
    }
    const PIECE: u64 = 64 * MIB;
    let len = 4 * PIECE + 12_345; // five pieces, the last one short
    let fx = SeededTree::new(
        &[("big.bin", TreeFile::Random(len as usize, 19))],
        PIECE as usize,
    );
    let src = fx.tree.join("big.bin");
    let mnt = fx.path("mnt");
    let args = fx
        .mount_args()
        .foreground()
        .verbose()
        .cache_dir(&fx.path("cache"))
        .read_timeout(120);
    let m = Mount::foreground(&mnt, &args.build(), Duration::from_secs(30));
    let pid = m.pids()[0];
    let file = mnt.join("data/big.bin");
    // Four reads at once, each in a piece of its own: four 64 MiB pieces
    // downloading together.
    let t = Instant::now();
    let readers: Vec<_> = (0..4u64)
        .map(|i| {
            let (file, src) = (file.clone(), src.clone());
            std::thread::spawn(move || {
                let at = i * PIECE + 7 * MIB + i * 4099;
                let got = read_at(&file, at, MIB as usize);
                assert!(got == read_at(&src, at, MIB as usize), "read {i} wrong");
            })
        })
        .collect();
    for r in readers {
        r.join().expect("a concurrent read failed");
    }
    eprintln!(
        "four concurrent reads in four 64 MiB pieces: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    // Then the whole file.
    drop_page_cache(&file);
    let t = Instant::now();
    assert_eq!(sha256_file(&file), sha256_file(&src));
    eprintln!("whole file read in {:.2} s", t.elapsed().as_secs_f64());
    let hwm = vm_hwm(pid);
    eprintln!("mount VmHWM: {:.1} MiB", hwm as f64 / MIB as f64);
    assert!(
        hwm < 64 * MIB,
        "the mount's peak memory grew with the piece length: {hwm} bytes"
    );
    m.unmount_and_wait(Duration::from_secs(15));
}

#[test]
fn pieces_longer_than_libtorrent_accepts_are_refused_naming_the_limit() {
    if !in_netns("pieces_longer_than_libtorrent_accepts_are_refused_naming_the_limit") {
        return;
    }
    // 1 GiB pieces, two of them: a hostile magnet's way to ask gigabytes.
    let info = Owned::dict()
        .insert("name", &b"huge.bin"[..])
        .insert("length", Owned::Int(2 << 30))
        .insert("piece length", Owned::Int(1 << 30))
        .insert("pieces", vec![0x5a; 40])
        .encode();
    let peer = Bep9Peer::metadata_only(&info);
    let sb = Sandbox::new();
    let err = mount_refused(
        &peer,
        &sb,
        "`piece length` is 1073741824 bytes, more than the largest accepted, 536854528 bytes",
    );
    assert!(err.contains("libtorrent's limit"), "{err}");
    assert!(sb.assert_confined().is_empty());
}

#[test]
fn a_low_memory_limit_slows_readahead_but_reads_complete() {
    if !in_netns("a_low_memory_limit_slows_readahead_but_reads_complete") {
        return;
    }
    let fx = SeededTree::new(
        &[("film.bin", TreeFile::Random(48 * MIB as usize + 3, 23))],
        4 * MIB as usize,
    );
    let src = fx.tree.join("film.bin");
    let mnt = fx.path("mnt");
    let args = fx
        .mount_args()
        .foreground()
        .verbose()
        .cache_dir(&fx.path("cache"))
        .args(&["--memory-limit", "256K"]);
    let mut m = Mount::foreground(&mnt, &args.build(), Duration::from_secs(30));
    let file = mnt.join("data/film.bin");
    let t = Instant::now();
    assert_eq!(sha256_file(&file), sha256_file(&src));
    eprintln!(
        "48 MiB read with a 256 KiB memory budget in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    // A seek to a piece not fetched yet.
    let at = 37 * MIB + 5;
    assert!(read_at(&file, at, 100_000) == read_at(&src, at, 100_000));
    let log = m.child().unwrap().stderr();
    assert!(
        log.contains("memory budget of 256 KiB reached"),
        "the log says when the budget limits us:\n{log}"
    );
    m.unmount_and_wait(Duration::from_secs(15));
}
