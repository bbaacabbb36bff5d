//! Reads verified block by block (BEP 52, issue 14 item 4): with a v2 or
//! hybrid torrent, a read waits only for the 16 KiB blocks under it, each
//! checked against its file's Merkle tree (leaf hashes asked of a peer with
//! a `hash request` of base layer 0, proven up to the `pieces root`), not
//! for its whole piece.
//!
//! - [`v2_only_read_before_its_piece`], [`hybrid_read_before_its_piece`]:
//!   python3-libtorrent 2.0.8 seeds a 16 MiB file in 4 MiB pieces,
//!   uploading at most 256 KB/s (every address moved to libtorrent's
//!   global peer class, `ltnode.py --upload-limit`, so the limit applies
//!   on loopback). A 4 KiB `pread` in the middle of piece 1, with kernel
//!   readahead off (`POSIX_FADV_RANDOM`), returns the source's bytes while
//!   the seeder has sent far less than that piece (its payload counter,
//!   `progress` events): the read did not wait for the piece, and no piece
//!   is had yet (`user.btfs.progress` of the file is 0). Then the whole
//!   file reads right (pieces had only once verified whole).
//! - [`hybrid_by_both_xt_dialling_read_before_its_piece`],
//!   [`hybrid_by_both_xt_dialled_read_before_its_piece`]: the same with the
//!   hybrid mounted by libtorrent's magnet (both `xt`): the swarm is keyed
//!   by the v1 info-hash, and the connection becomes a v2 one by BEP 52's
//!   upgrade path. Dialling: our handshake sets the v2 bit and libtorrent
//!   answers on the truncated v2 info-hash (the seeder runs plaintext:
//!   libtorrent 2.0.8 picks v1 or v2 for an encrypted incoming connection
//!   from its MSE key alone, and we key MSE by the v1 hash). Dialled: the
//!   seeder, on its default settings (MSE preferred), dials the mount with
//!   the bit set and we answer on the v2 hash, keeping its MSE key.
//! - [`one_bad_block_is_caught_alone`]: the scripted peer `lt/v2_hostile_peer.py
//!   --behaviour one-bad-block` on 127.0.0.2 answers leaf requests truly
//!   and sends one block of random bytes, libtorrent on 127.0.0.1 is the
//!   good peer: reads return the source's bytes, and the log blames the
//!   block on 127.0.0.2 alone.
//!
//! Run: `cargo test --test v2_blocks -- --nocapture` (as root: each test
//! enters a network namespace of its own).

#[path = "support/mod.rs"]
mod support;

use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

const PIECE: usize = 4 << 20;
/// The seeder's upload limit, bytes/s: a 4 MiB piece takes 16 s.
const RATE: &str = "262144";
/// A 16 MiB file and a bit: 5 pieces, the last one short.
const LEN: usize = 16 * 1024 * 1024 + 12345;

fn btmh(torrent: &serde_json::Value) -> String {
    let v2 = torrent["info_hash_v2"].as_str().expect("info_hash_v2");
    format!("magnet:?xt=urn:btmh:1220{v2}")
}

/// The seeder's payload bytes sent so far: the largest `total_upload` of
/// its `progress` events within `wait`.
fn seeder_sent(seeder: &mut LtNode, wait: Duration) -> u64 {
    std::thread::sleep(wait);
    seeder
        .events()
        .iter()
        .filter(|v| v["event"] == "progress")
        .filter_map(|v| v["total_upload"].as_u64())
        .max()
        .unwrap_or(0)
}

/// How the mount of [`read_before_piece`] finds its torrent and seeder.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    /// `xt=urn:btmh` alone; the mount dials the seeder.
    Btmh,
    /// libtorrent's magnet (both `xt`); the mount dials the (plaintext)
    /// seeder.
    BothDialling,
    /// libtorrent's magnet (both `xt`); the seeder dials the mount.
    BothDialled,
}

/// Mounts `flavor` ("v2" or "hybrid") seeded rate-limited, found by
/// `link`, reads 4 KiB in the middle of piece 1, checks the bytes and what
/// the seeder sent, then the whole file.
fn read_before_piece(name: &str, flavor: &str, link: Link) {
    if !in_netns(name) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    make_tree(
        &site,
        &[
            ("big.bin", TreeFile::Random(LEN, 7)),
            (
                "z.txt",
                TreeFile::Text("a second file: a directory torrent\n"),
            ),
        ],
    );
    let src = std::fs::read(site.join("big.bin")).unwrap();
    let mut seeder_args = vec!["--flavor", flavor, "--upload-limit", RATE];
    let mount_port = free_port();
    let mount_addr = format!("127.0.0.1:{mount_port}");
    match link {
        Link::Btmh => {}
        Link::BothDialling => seeder_args.push("--no-encryption"),
        Link::BothDialled => seeder_args.extend(["--connect", mount_addr.as_str()]),
    }
    let (mut seeder, magnet) = LtNode::seed_tree(&site, PIECE, &seeder_args);
    let torrent = seeder.torrent();
    // By its btmh link alone, the swarm is keyed by the truncated v2
    // info-hash: the connections are v2 ones, over which hash messages may
    // go. By both `xt`, it is keyed by the v1 hash, and a connection is a
    // v2 one only after BEP 52's upgrade.
    let url = match link {
        Link::Btmh => btmh(&torrent),
        Link::BothDialling | Link::BothDialled => {
            assert!(
                magnet.contains("xt=urn:btih:") && magnet.contains("xt=urn:btmh:"),
                "libtorrent's magnet names both hashes: {magnet}"
            );
            magnet
        }
    };
    let mut args = MountArgs::new(&url)
        .no_dht()
        .port(mount_port)
        .read_timeout(60)
        .cache_dir(&tmp.path().join("cache"));
    if link != Link::BothDialled {
        args = args.peer(&seeder.addr());
    }
    let mount = Mount::background(&tmp.path().join("mnt"), &args.build());
    let before = seeder_sent(&mut seeder, Duration::from_millis(1100));
    let f = std::fs::File::open(mount.path().join("site/big.bin")).unwrap();
    // SAFETY: a valid open fd; POSIX_FADV_RANDOM only turns off readahead.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    assert_eq!(rc, 0, "posix_fadvise");
    let off = PIECE as u64 + PIECE as u64 / 2 + 4096 * 3;
    let mut buf = vec![0u8; 4096];
    let t0 = Instant::now();
    f.read_exact_at(&mut buf, off).unwrap();
    let took = t0.elapsed();
    assert!(
        buf == src[off as usize..off as usize + 4096],
        "the 4 KiB at {off} are the source's"
    );
    let sent = seeder_sent(&mut seeder, Duration::from_millis(1500)) - before;
    eprintln!("{flavor}: 4 KiB read in {took:?}; the seeder had sent {sent} bytes");
    assert!(
        sent < (PIECE / 2) as u64,
        "the read returned before its 4 MiB piece came: {sent} bytes sent by then"
    );
    // Blocks verified alone answer reads but are not had: no piece of the
    // file is verified whole yet (nor advertised or uploaded).
    let progress = xattr(&mount.path().join("site/big.bin"), "user.btfs.progress");
    assert!(
        progress.starts_with("0/"),
        "no piece had after the read: {progress}"
    );
    // A second 4 KiB elsewhere in the same piece, and then everything.
    let off2 = PIECE as u64 + 40960;
    f.read_exact_at(&mut buf, off2).unwrap();
    assert!(buf == src[off2 as usize..off2 as usize + 4096]);
    drop(f);
    assert_eq!(
        sha256_file(&mount.path().join("site/big.bin")),
        sha256_bytes(&src),
        "the whole file through the mount"
    );
    mount.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn v2_only_read_before_its_piece() {
    read_before_piece("v2_only_read_before_its_piece", "v2", Link::Btmh);
}

#[test]
fn hybrid_read_before_its_piece() {
    read_before_piece("hybrid_read_before_its_piece", "hybrid", Link::Btmh);
}

#[test]
fn hybrid_by_both_xt_dialling_read_before_its_piece() {
    read_before_piece(
        "hybrid_by_both_xt_dialling_read_before_its_piece",
        "hybrid",
        Link::BothDialling,
    );
}

#[test]
fn hybrid_by_both_xt_dialled_read_before_its_piece() {
    read_before_piece(
        "hybrid_by_both_xt_dialled_read_before_its_piece",
        "hybrid",
        Link::BothDialled,
    );
}

/// Starts `lt/v2_hostile_peer.py --behaviour one-bad-block` on 127.0.0.2
/// for the v2 .torrent `torrent` of `num_pieces` pieces over `data`.
fn hostile(torrent: &Path, data: &Path, num_pieces: u64) -> (Child, String) {
    let mut cmd = std::process::Command::new(PYTHON);
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/mountpoint-tests/lt/v2_hostile_peer.py"
    ))
    .args(["--torrent", s(torrent), "--behaviour", "one-bad-block"])
    .args(["--data", s(data), "--listen-ip", "127.0.0.2"])
    .args(["--bad-delay", "0.3"])
    .args(["--num-pieces", &num_pieces.to_string()]);
    let mut c = Child::spawn("v2_hostile_peer", cmd);
    let ready = c.wait_event("ready", Duration::from_secs(20));
    let port = ready["port"].as_u64().expect("ready.port");
    (c, format!("127.0.0.2:{port}"))
}

#[test]
fn one_bad_block_is_caught_alone() {
    if !in_netns("one_bad_block_is_caught_alone") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    make_tree(
        &site,
        &[
            ("big.bin", TreeFile::Random(LEN, 8)),
            (
                "z.txt",
                TreeFile::Text("a second file: a directory torrent\n"),
            ),
        ],
    );
    let src = std::fs::read(site.join("big.bin")).unwrap();
    let torrent_file = tmp.path().join("t.torrent");
    let (mut seeder, _) = LtNode::seed_tree(
        &site,
        PIECE,
        &[
            "--flavor",
            "v2",
            "--upload-limit",
            RATE,
            "--write-torrent",
            s(&torrent_file),
        ],
    );
    let torrent = seeder.torrent();
    let pieces = torrent["num_pieces"].as_u64().unwrap();
    let (mut liar, liar_addr) = hostile(&torrent_file, &site.join("big.bin"), pieces);
    let cache = tmp.path().join("cache");
    let args = MountArgs::new(&btmh(&torrent))
        .no_dht()
        .peer(&liar_addr)
        .peer(&seeder.addr())
        .read_timeout(60)
        .cache_dir(&cache);
    let mount = Mount::background(&tmp.path().join("mnt"), &args.build());
    let f = std::fs::File::open(mount.path().join("site/big.bin")).unwrap();
    // SAFETY: a valid open fd; POSIX_FADV_RANDOM only turns off readahead.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    assert_eq!(rc, 0, "posix_fadvise");
    let mut buf = vec![0u8; 4096];
    for k in 0..4u64 {
        let off = k * PIECE as u64 + PIECE as u64 / 3;
        f.read_exact_at(&mut buf, off).unwrap();
        assert!(
            buf == src[off as usize..off as usize + 4096],
            "the 4 KiB at {off} are the source's"
        );
    }
    let bad = liar.wait_event("bad_block", Duration::from_secs(30));
    liar.wait_for("leaf hashes answered", Duration::from_secs(10), |v| {
        v["event"] == "sent" && v["what"] == "block-hashes"
    });
    drop(f);
    assert_eq!(
        sha256_file(&mount.path().join("site/big.bin")),
        sha256_bytes(&src),
        "the whole file through the mount"
    );
    let log = std::fs::read_to_string(find_log(&cache)).unwrap_or_default();
    let blamed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("failed its Merkle check"))
        .collect();
    assert!(
        blamed
            .iter()
            .any(|l| l.contains("from 127.0.0.2 failed its Merkle check")),
        "the bad block ({bad}) is caught alone and blamed on 127.0.0.2:\n{log}"
    );
    assert!(
        !blamed.iter().any(|l| l.contains("127.0.0.1")),
        "the good peer is never blamed:\n{log}"
    );
    mount.unmount_and_wait(Duration::from_secs(10));
}

/// The value of extended attribute `name` of `path`, as text.
fn xattr(path: &Path, name: &str) -> String {
    let p = std::ffi::CString::new(s(path)).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(len >= 0, "getxattr {name} of {}", path.display());
    String::from_utf8_lossy(&buf[..len as usize]).into_owned()
}

/// The one `btfs-mount.log` under the cache directory `cache`.
fn find_log(cache: &Path) -> std::path::PathBuf {
    for e in std::fs::read_dir(cache).expect("cache dir").flatten() {
        let p = e.path().join("btfs-mount.log");
        if p.exists() {
            return p;
        }
    }
    panic!("no btfs-mount.log under {}", cache.display());
}
