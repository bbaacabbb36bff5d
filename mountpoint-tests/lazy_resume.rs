//! Lazy resume: a mount on a large existing cache is usable at once, and
//! still never serves or advertises a cached piece before its SHA-1 matched.
//!
//! The test fills a cache with a 128 MiB torrent from a libtorrent seeder,
//! corrupts one piece in the cache file, and mounts again with no peer at
//! all: the mount must be up quickly, a cached piece must read right, the
//! corrupt one must fail with EIO after `--read-timeout`. A libtorrent
//! leecher connected to that mount only must see (bitfield and HAVEs) and
//! get every piece but the corrupt one; once a seeder connects, the corrupt
//! piece is fetched again and served right, to the mount and the leecher.

#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

/// Piece length of the test torrent (bytes).
const PIECE: usize = 256 * 1024;
/// Size of `data/big.bin` (bytes): 512 pieces.
const SIZE: usize = 128 << 20;
/// `--read-timeout` of the remount (seconds).
const READ_TIMEOUT: u64 = 4;

/// Reads `len` bytes of `path` at `at` through the mount.
fn read_at(path: &Path, at: u64, len: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    fs::File::open(path)?.read_exact_at(&mut buf, at)?;
    Ok(buf)
}

/// The piece indices missing from a `peer_pieces` event.
fn missing(v: &Value) -> Vec<u64> {
    v["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect()
}

#[test]
fn remount_of_a_large_cache_is_ready_at_once_and_serves_only_verified_pieces() {
    if !in_netns("remount_of_a_large_cache_is_ready_at_once_and_serves_only_verified_pieces") {
        return;
    }
    let mut fx = SeededTree::new(
        &[
            ("big.bin", TreeFile::Random(SIZE, 31)),
            ("small.txt", TreeFile::Text("small and cached\n")),
        ],
        PIECE,
    );
    let (tree, magnet) = (fx.tree.clone(), fx.magnet.clone());
    let original = fs::read(tree.join("big.bin")).unwrap();
    let info_hash = fx.seeder.info_hash();
    let torrent = fx.seeder.torrent();
    let total = torrent["total_size"].as_u64().unwrap();
    let cache = fx.path("cache");
    let mnt = fx.path("mnt");

    // 1. Fill the cache: read everything once; a clean unmount saves `have`.
    let t = Instant::now();
    let args = fx.mount_args().arg("--no-lsd").cache_dir(&cache);
    let m = Mount::background(&mnt, &args.build());
    assert_eq!(
        sha256_file(&mnt.join("data/big.bin")),
        sha256_bytes(&original)
    );
    assert_eq!(
        fs::read(mnt.join("data/small.txt")).unwrap(),
        b"small and cached\n"
    );
    eprintln!(
        "filled a {} MiB cache in {:.2} s",
        SIZE >> 20,
        t.elapsed().as_secs_f64()
    );
    m.unmount_and_wait(Duration::from_secs(30));
    drop(fx.seeder);

    // 2. Corrupt one byte of a piece in the middle, behind the cache's back.
    let big_off = torrent_file_offset(&torrent, "data/big.bin");
    let corrupt_at = (SIZE / 2 + 1000) as u64;
    let corrupt_piece = (big_off + corrupt_at) / PIECE as u64;
    let piece_start = corrupt_piece * PIECE as u64 - big_off; // in big.bin
    let cache_file = cache.join(&info_hash).join("files/data/big.bin");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&cache_file)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, corrupt_at).unwrap();
    f.write_all_at(&[b[0] ^ 0xff], corrupt_at).unwrap();
    drop(f);
    eprintln!("corrupted piece {corrupt_piece} of the cache");

    // 3. Remount with no peer at all: up at once, the cache hashed later.
    let port = free_port();
    let args = MountArgs::new(&magnet)
        .foreground()
        .verbose()
        .no_dht()
        .arg("--no-lsd")
        .port(port)
        .cache_dir(&cache)
        .read_timeout(READ_TIMEOUT);
    let t = Instant::now();
    let mut m = Mount::foreground(&mnt, &args.build(), Duration::from_secs(60));
    let mounted = t.elapsed();
    let mut names: Vec<String> = fs::read_dir(mnt.join("data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let listed = t.elapsed();
    assert_eq!(names, ["big.bin", "small.txt"]);
    eprintln!(
        "remount on a full {} MiB cache: mounted in {:.3} s, ls answered at {:.3} s",
        SIZE >> 20,
        mounted.as_secs_f64(),
        listed.as_secs_f64()
    );
    assert!(
        listed < Duration::from_secs(10),
        "the mount waits for no hash of the cache ({listed:?})"
    );

    // A libtorrent leecher connects to this mount only, now: most likely
    // while the cache is still being verified, so it sees our bitfield of
    // what is verified so far, then HAVEs (checked in step 6).
    let leech = fx.tmp.path().join("leech");
    let mut leecher = LtNode::start(&[
        "--fetch",
        &magnet,
        "--save",
        s(&leech),
        "--connect",
        &format!("127.0.0.1:{port}"),
        "--no-utp",
        "--report-peers",
    ]);

    // 4. A cached piece near the end (the background verifier starts at
    // the beginning) reads right at once.
    let big = mnt.join("data/big.bin");
    let at = SIZE - 3 * PIECE + 777;
    let t = Instant::now();
    let got = read_at(&big, at as u64, 100_000).unwrap();
    eprintln!(
        "first read of a cached piece: {:.3} s",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        sha256_bytes(&got),
        sha256_bytes(&original[at..at + 100_000])
    );

    // 5. The corrupt piece is never served: with no peer, EIO after the
    // read timeout.
    let t = Instant::now();
    let err = read_at(&big, corrupt_at, 4096).expect_err("the corrupt piece is never served");
    let waited = t.elapsed();
    eprintln!(
        "read of the corrupt piece failed after {:.2} s: {err}",
        waited.as_secs_f64()
    );
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(
        waited >= Duration::from_secs(READ_TIMEOUT - 1) && waited < Duration::from_secs(60),
        "EIO after --read-timeout, not before ({waited:?})"
    );
    let child = m.child().unwrap();
    let said = format!("cached piece {corrupt_piece} is missing or corrupt");
    assert!(
        wait_until(Duration::from_secs(10), || child.stderr().contains(&said)),
        "the log names the corrupt piece"
    );
    // Everything else verifies in the background.
    assert!(
        wait_until(Duration::from_secs(120), || child
            .stderr()
            .contains("cached pieces verified in")),
        "the background verification ends"
    );
    let log = child.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("cached pieces verified in"))
        .unwrap();
    eprintln!("btfs-mount: {line}");
    // The mount was up before hashing the cache could have ended (with the
    // cache hashed on the start-up path it would be the other way round).
    let verify_secs: f64 = line
        .split("verified in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        listed.as_secs_f64() < verify_secs,
        "ready in {listed:?}, hashing the cache took {verify_secs} s"
    );
    assert_eq!(
        log.matches("is missing or corrupt").count(),
        1,
        "only the corrupt piece is refused: {log}"
    );

    // 6. The leecher connected to this mount only: it was told about every
    // piece but the corrupt one, got them all right, and never got the
    // corrupt piece.
    let want = total - PIECE as u64;
    leecher.wait_for(
        "all pieces but the corrupt one",
        Duration::from_secs(300),
        |v| v["event"] == "progress" && v["total_done"].as_u64() == Some(want),
    );
    leecher.wait_for(
        "the mount's advertised pieces",
        Duration::from_secs(30),
        |v| v["event"] == "peer_pieces" && missing(v) == [corrupt_piece],
    );
    // Give it a moment to ask for more: nothing else comes.
    std::thread::sleep(Duration::from_secs(2));
    let events = leecher.events();
    let adverts: Vec<&Value> = events
        .iter()
        .filter(|v| v["event"] == "peer_pieces")
        .collect();
    assert!(!adverts.is_empty());
    eprintln!(
        "pieces the mount advertised, as the leecher saw them: {:?}",
        adverts
            .iter()
            .map(|v| v["have"].as_u64().unwrap())
            .collect::<Vec<_>>()
    );
    for v in &adverts {
        assert!(
            missing(v).contains(&corrupt_piece),
            "the corrupt piece was advertised: {v}"
        );
    }
    assert!(
        !events
            .iter()
            .any(|v| v["event"] == "error" || v["event"] == "finished"),
        "no piece failed its hash check at the leecher, and it is not complete"
    );
    let last = events
        .iter()
        .rev()
        .find(|v| v["event"] == "progress")
        .unwrap();
    assert_eq!(last["total_done"].as_u64(), Some(want), "{last}");

    // 7. A seeder connects to the mount: the corrupt piece is fetched
    // again, served right, and passed on to the leecher.
    let ours = format!("127.0.0.1:{port}");
    let (mut seeder, _) = LtNode::seed_tree(&tree, PIECE, &["--connect", &ours, "--no-utp"]);
    seeder.wait_event("peer_connected", Duration::from_secs(30));
    let mut got = None;
    for _ in 0..5 {
        // A read retried within 2 s of a timeout fails at once.
        match read_at(&big, piece_start, PIECE) {
            Ok(d) => {
                got = Some(d);
                break;
            }
            Err(e) => {
                eprintln!("read of the repaired piece: {e}; again");
                std::thread::sleep(Duration::from_millis(2100));
            }
        }
    }
    let got = got.expect("the corrupt piece is fetched again from the seeder");
    let ps = piece_start as usize;
    assert_eq!(sha256_bytes(&got), sha256_bytes(&original[ps..ps + PIECE]));
    leecher.wait_event("finished", Duration::from_secs(120));
    assert_eq!(
        sha256_file(&leech.join("data/big.bin")),
        sha256_bytes(&original),
        "the leecher's copy"
    );
    drop(leecher);
    drop(seeder);
    m.unmount_and_wait(Duration::from_secs(30));
}
