//! Seeking on a rate-limited multi-seeder swarm (issue 18): a reader that
//! jumps back and forth costs the seeders little more than it reads (the
//! blocks of each read are not fetched twice, the readahead left behind is
//! cancelled), and no request for the old position outlives a seek by a
//! second. Counted on the seeders' side (libtorrent's own upload counters,
//! `ltnode.py` `progress` events) and with our own `user.btfs.requests`
//! attribute. Not timed: generous bounds only. Each test runs in its own
//! network namespace against four python3-libtorrent seeders.

#[path = "support/mod.rs"]
mod support;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;

const PIECE: usize = 256 * 1024;
const MIB: usize = 1024 * 1024;
const SEEDERS: usize = 4;

/// `SEEDERS` seeders of `video/movie.mkv` (`size` random bytes, 256 KiB
/// pieces), each limited to `rate` bytes/s of upload; a `--no-dht` mount
/// of its magnet naming every seeder; and the file's bytes.
fn swarm(tmp: &Path, size: usize, rate: usize) -> (Vec<LtNode>, MountArgs, Vec<u8>) {
    let tree = tmp.join("video");
    make_tree(&tree, &[("movie.mkv", TreeFile::Random(size, 18))]);
    let data = std::fs::read(tree.join("movie.mkv")).unwrap();
    let torrent = tmp.join("movie.torrent");
    let rate = rate.to_string();
    let (first, magnet) = LtNode::seed_tree(
        &tree,
        PIECE,
        &[
            "--upload-limit",
            &rate,
            "--write-torrent",
            torrent.to_str().unwrap(),
        ],
    );
    let mut seeders = vec![first];
    for _ in 1..SEEDERS {
        seeders.push(LtNode::start(&[
            "--seed-torrent",
            torrent.to_str().unwrap(),
            "--save",
            tmp.to_str().unwrap(),
            "--upload-limit",
            &rate,
        ]));
    }
    let mut args = MountArgs::new(&magnet)
        .no_dht()
        .cache_dir(&tmp.join("cache"))
        .read_timeout(60);
    for s in &seeders {
        args = args.peer(&s.addr());
    }
    (seeders, args, data)
}

/// A `user.btfs.*` attribute of `path`.
fn getfattr(path: &Path, name: &str) -> String {
    let out = Command::new("getfattr")
        .args(["-n", name, "--only-values", path.to_str().unwrap()])
        .output()
        .expect("run getfattr (package attr)");
    assert!(
        out.status.success(),
        "getfattr {name} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `user.btfs.requests` of `path`: (piece, outstanding blocks) pairs.
fn requested(path: &Path) -> Vec<(u32, usize)> {
    getfattr(path, "user.btfs.requests")
        .split_whitespace()
        .map(|pair| {
            let (p, n) = pair.split_once(':').expect("PIECE:BLOCKS");
            (p.parse().unwrap(), n.parse().unwrap())
        })
        .collect()
}

/// Waits until the mount at `file` is connected to every seeder.
fn wait_for_seeders(file: &Path) {
    assert!(
        wait_until(Duration::from_secs(30), || {
            getfattr(file, "user.btfs.peers").parse::<usize>().ok() == Some(SEEDERS)
        }),
        "not connected to the {SEEDERS} seeders: {} peers",
        getfattr(file, "user.btfs.peers")
    );
}

/// Payload bytes the seeders have sent (libtorrent's total_payload_upload,
/// the latest `progress` event of each, summed).
fn seeders_sent(seeders: &mut [LtNode]) -> u64 {
    seeders
        .iter_mut()
        .map(|s| {
            s.events()
                .iter()
                .filter(|e| e["event"] == "progress")
                .filter_map(|e| e["total_upload"].as_u64())
                .max()
                .unwrap_or(0)
        })
        .sum()
}

/// Reads `len` bytes at `off` and checks them.
fn read_check(f: &std::fs::File, data: &[u8], off: usize, len: usize) {
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, off as u64).unwrap();
    assert!(buf == data[off..off + len], "bytes at {off}..{}", off + len);
}

#[test]
fn a_reader_seeking_back_and_forth_costs_the_seeders_at_most_one_and_a_half_times_what_it_reads() {
    let name = "a_reader_seeking_back_and_forth_costs_the_seeders_at_most_one_and_a_half_times_what_it_reads";
    if !in_netns(name) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // 32 MiB at 4 × 1 MB/s: the whole file would take 8 s.
    let size = 32 * MIB;
    let (mut seeders, args, data) = swarm(tmp.path(), size, 1_000_000);
    let mnt = tmp.path().join("mnt");
    let m = Mount::background(&mnt, &args.build());
    let path = mnt.join("video/movie.mkv");
    wait_for_seeders(&path);
    let f = std::fs::File::open(&path).unwrap();
    // Back and forth across the file: 1 MiB reads (whole pieces, so the
    // pieces under the reads are exactly the bytes read).
    let fracs = [
        0.9, 0.1, 0.7, 0.3, 0.5, 0.95, 0.05, 0.8, 0.2, 0.6, 0.4, 0.85,
    ];
    let mut read = 0usize;
    for frac in fracs {
        let off = ((size - MIB) as f64 * frac) as usize / PIECE * PIECE;
        read_check(&f, &data, off, MIB);
        read += MIB;
    }
    drop(f);
    m.unmount_and_wait(Duration::from_secs(10));
    // libtorrent reports its counters at most once a second: wait for the
    // last ones (connections closed by the unmount, nothing more is sent).
    std::thread::sleep(Duration::from_secs(3));
    let sent = seeders_sent(&mut seeders);
    let ratio = sent as f64 / read as f64;
    eprintln!("seeders sent {sent} bytes for {read} read: {ratio:.2}x");
    assert!(
        sent >= read as u64,
        "the seeders' counters are incomplete: {sent} < {read}"
    );
    assert!(
        ratio <= 1.5,
        "the seeders sent {sent} bytes for {read} bytes read ({ratio:.2}x, at most 1.5x)"
    );
}

#[test]
fn no_request_for_the_old_position_is_outstanding_a_second_after_a_seek() {
    if !in_netns("no_request_for_the_old_position_is_outstanding_a_second_after_a_seek") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // 64 MiB at 4 × 500 kB/s: readahead cannot finish during the test.
    let size = 64 * MIB;
    let (_seeders, args, data) = swarm(tmp.path(), size, 500_000);
    let mnt = tmp.path().join("mnt");
    let m = Mount::background(&mnt, &args.build());
    let path = mnt.join("video/movie.mkv");
    wait_for_seeders(&path);
    let f = std::fs::File::open(&path).unwrap();
    // A sequential start: the readahead window grows ahead of the reader.
    let mut off = 0;
    while off < 2 * MIB {
        read_check(&f, &data, off, 128 * 1024);
        off += 128 * 1024;
    }
    let before = requested(&path);
    let seek_to = 48 * MIB;
    let first_new = (seek_to / PIECE) as u32;
    assert!(
        before.iter().any(|&(p, _)| p >= 12 && p < first_new),
        "no readahead asked for after a sequential start: {before:?}"
    );
    // The seek: one read far ahead, then the reader stays there.
    read_check(&f, &data, seek_to, 128 * 1024);
    std::thread::sleep(Duration::from_secs(1));
    let after = requested(&path);
    let old: Vec<(u32, usize)> = after
        .iter()
        .copied()
        .filter(|&(p, _)| p < first_new)
        .collect();
    assert!(
        old.is_empty(),
        "requests for the old position 1 s after the seek: {old:?} (all: {after:?}; before the seek: {before:?})"
    );
    drop(f);
    m.unmount_and_wait(Duration::from_secs(10));
}
