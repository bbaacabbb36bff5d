//! The swarm's own tests: eviction, smart ban, resume verification.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sha1::Digest;

use super::picker::Picker;
use super::read::piece_list;
use super::*;
use crate::storage::CacheLayout;

#[test]
fn piece_lists_stay_short() {
    assert_eq!(piece_list(&[7]), "piece 7");
    assert_eq!(piece_list(&[3, 4, 9]), "pieces 3, 4, 9");
    let many: Vec<u32> = (0..128).collect();
    assert_eq!(
        piece_list(&many),
        "pieces 0, 1, 2, 3, 4, 5, 6, 7, ... (128 in all)"
    );
}

pub(super) const PL: usize = 32 * 1024; // two 16 KiB blocks per piece

pub(super) fn piece(i: u32) -> Vec<u8> {
    (0..PL).map(|j| (i as usize * 7 + j * 13) as u8).collect()
}

/// The info dictionary of a single file `t.bin` of the 8 pieces.
fn raw_info() -> Vec<u8> {
    let hashes = (0..8)
        .map(|i| sha1::Sha1::digest(piece(i)).into())
        .collect();
    crate::metainfo::build_info(&[(Vec::new(), 8 * PL as u64)], "t.bin", PL as u64, hashes)
}

/// A swarm over 8 pieces in memory, with the given cache bound.
pub(super) fn swarm(cache_size: Option<u64>) -> Arc<Swarm> {
    let s = swarm_in(cache_size, StorageKind::Memory);
    s.set_metadata(&raw_info()).unwrap();
    s
}

/// The settings of the swarms of these tests: seeding, no prefetch, 1 s
/// read timeout, in `storage`.
pub(super) fn test_config(cache_size: Option<u64>, storage: StorageKind) -> SwarmConfig {
    SwarmConfig {
        peer_id: PeerId::generate(),
        listen_port: 0,
        seed: true,
        prefetch: false,
        read_timeout: Duration::from_secs(1),
        max_peers: 10,
        max_partial_bytes: 1 << 20,
        max_metadata_size: 1 << 20,
        storage,
        cache_size,
        prefers_encryption: false,
        reach: crate::reach::Reach::default(),
    }
}

/// A swarm over 8 pieces in `storage`, its metadata not set yet.
fn swarm_in(cache_size: Option<u64>, storage: StorageKind) -> Arc<Swarm> {
    let raw = raw_info();
    Swarm::new(InfoHash::of_info(&raw), test_config(cache_size, storage))
}

/// Waits for the verification tasks spawned by `complete_piece`.
async fn settle(s: &Swarm, have: impl Fn(&Picker) -> bool) {
    wait(|| s.lock().picker.as_ref().is_some_and(&have)).await
}

/// Waits until `cond` (which may lock the swarm) holds, up to 10 s: the
/// verification and write threads may be slow to run on a loaded machine
/// (1 s was too short for 2 of 20 runs at load 8).
pub(super) async fn wait(cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the swarm did not settle within 10 s");
}

fn held(s: &Swarm) -> Vec<u32> {
    let st = s.lock();
    let p = st.picker.as_ref().unwrap();
    (0..8).filter(|&i| p.has(i)).collect()
}

#[tokio::test]
async fn bounded_cache_evicts_least_recently_read_and_stops_advertising() {
    let s = swarm(Some(3 * PL as u64));
    for i in 0..8 {
        s.complete_piece(i, piece(i), Vec::new());
        settle(&s, |p| p.has(i)).await;
    }
    assert_eq!(held(&s), vec![5, 6, 7]);
    // The bitfield we would send a new peer lists only what we hold.
    let bf = s.lock().picker.as_ref().unwrap().bitfield();
    assert_eq!(bf, vec![0b0000_0111]);
    // Evicted bytes are gone from the storage.
    let storage = s.loaded().unwrap().storage.clone();
    let mut buf = vec![0u8; 16];
    assert!(storage.read_at(0, &mut buf).is_err());
    // Reading piece 5 makes it the most recently used: 6 goes next.
    let data = s.read(5 * PL as u64, PL).await.unwrap();
    assert_eq!(data, piece(5));
    s.complete_piece(0, piece(0), Vec::new());
    settle(&s, |p| p.has(0)).await;
    assert_eq!(held(&s), vec![0, 5, 7]);
    assert!(s.lock().cache.cached_bytes() <= 3 * PL as u64);
}

/// An honest peer (127.0.0.1:1000) and one that sends wrong blocks
/// (127.0.0.2:1000), connected to `s`: each one's address and connection.
pub(super) fn good_and_bad(s: &Swarm) -> ((SocketAddr, ConnId), (SocketAddr, ConnId)) {
    let good: SocketAddr = "127.0.0.1:1000".parse().unwrap();
    let bad: SocketAddr = "127.0.0.2:1000".parse().unwrap();
    let (g, _) = s.register_conn(good, PeerSource::Cli).unwrap();
    let (b, _) = s.register_conn(bad, PeerSource::Cli).unwrap();
    ((good, g), (bad, b))
}

#[tokio::test]
async fn a_mixed_bad_piece_blames_only_the_peer_whose_blocks_differed() {
    let s = swarm(None);
    let ((good, g), (bad, b)) = good_and_bad(&s);
    for round in 0..3u32 {
        let i = round;
        // Block 0 from the honest peer, block 1 (wrong) from the other.
        let mut data = piece(i);
        data[PL - 1] ^= 1;
        s.lock().picker.as_mut().unwrap().add_urgent(i);
        s.complete_piece(i, data, vec![g, b]);
        settle(&s, |_| {
            s.counters.hash_failures.load(Ordering::Relaxed) > round as u64
        })
        .await;
        // Nobody is blamed on a guess...
        assert!(!s.is_banned(good.ip()) && !s.is_banned(bad.ip()));
        // ...until the piece verifies: then the sender of the block that
        // differed gets the strike.
        s.complete_piece(i, piece(i), vec![g, g]);
        settle(&s, |p| p.has(i)).await;
        assert_eq!(s.lock().verify.strikes(bad.ip()), Some(round + 1));
    }
    assert!(s.is_banned(bad.ip()), "3 strikes: banned");
    assert!(!s.is_banned(good.ip()), "the honest peer is never blamed");
    assert!(
        s.register_conn("127.0.0.2:2000".parse().unwrap(), PeerSource::Incoming)
            .is_none()
    );
    // A piece wrong from one peer alone is a strike at once.
    s.complete_piece(3, vec![0; PL], vec![g, g]);
    wait(|| s.lock().verify.strikes(good.ip()).is_some()).await;
}

#[tokio::test]
async fn a_peer_that_dialled_us_is_not_dialled_back_while_connected() {
    let s = swarm(None);
    let ephemeral: SocketAddr = "127.0.0.9:40000".parse().unwrap();
    let listen: SocketAddr = "127.0.0.9:6881".parse().unwrap();
    let (id, _) = s.register_conn(ephemeral, PeerSource::Incoming).unwrap();
    s.note_listen_addr(id, listen);
    assert!(
        s.take_dial_candidates().is_empty(),
        "no second connection to a connected peer"
    );
    // Gone: its listen address may be dialled again (after a backoff).
    s.unregister_conn(id, false);
    assert_eq!(s.candidate_state(listen), Some((false, true)));
}

#[tokio::test]
async fn a_peers_ipv6_address_is_dialled_once_its_ipv4_connection_ends() {
    let s = swarm(None);
    let v4: SocketAddr = "192.0.2.7:6881".parse().unwrap();
    let v6: SocketAddr = "[2001:db8::7]:6881".parse().unwrap();
    let (id, _) = s.register_conn(v4, PeerSource::Cli).unwrap();
    assert!(s.note_alt_addr(id, v6), "BEP 7 ipv6: a new candidate");
    assert!(!s.note_alt_addr(id, v6), "once per connection");
    assert!(
        s.take_dial_candidates().iter().all(|t| t.addr != v6),
        "not dialled while the IPv4 connection lives"
    );
    s.unregister_conn(id, false);
    assert_eq!(
        s.candidate_state(v6),
        Some((false, true)),
        "dialable after a backoff"
    );
}

/// A cache of all 8 pieces under `dir`, written by a first swarm whose
/// stop saved the `have` file; returns the cache file of `t.bin`.
fn full_cache(dir: &Path) -> PathBuf {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = swarm_in(None, StorageKind::Files(dir.into()));
        s.set_metadata(&raw_info()).unwrap();
        for i in 0..8 {
            s.complete_piece(i, piece(i), Vec::new());
            settle(&s, |p| p.has(i)).await;
        }
        s.stop();
        CacheLayout::new(dir)
            .torrent(s.info_hash)
            .file(&["t.bin".into()])
    })
}

#[test]
fn cached_pieces_are_hashed_before_they_are_served_or_advertised() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let file = full_cache(dir.path());
    // Corrupt one byte of piece 3 behind the cache's back.
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    f.write_all_at(&[!piece(3)[100]], 3 * PL as u64 + 100)
        .unwrap();
    drop(f);

    // Loaded without a runtime: no background verifier, nothing hashed
    // at load, nothing advertised.
    let s = swarm_in(None, StorageKind::Files(dir.path().into()));
    let mut haves = s.have_tx.subscribe();
    s.set_metadata(&raw_info()).unwrap();
    let st = s.stats();
    assert_eq!((st.pieces_have, st.pieces_unverified), (0, 8));
    assert_eq!(s.counters.cached_hashed.load(Ordering::Relaxed), 0);
    assert_eq!(s.lock().picker.as_ref().unwrap().bitfield(), vec![0]);
    assert!(!s.has_range(0, PL as u64) && s.holds_range(0, 8 * PL as u64));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Two reads of the same cached piece at once: hashed once, then
        // served, advertised (HAVE), and nothing else is.
        let (a, b) = tokio::join!(
            s.read(5 * PL as u64, 100),
            s.read(5 * PL as u64 + 7, PL - 7)
        );
        assert_eq!(a.unwrap(), piece(5)[..100]);
        assert_eq!(b.unwrap(), piece(5)[7..]);
        assert_eq!(s.counters.cached_hashed.load(Ordering::Relaxed), 1);
        assert_eq!(haves.try_recv().unwrap(), 5);
        assert!(haves.try_recv().is_err());
        assert_eq!(
            s.lock().picker.as_ref().unwrap().bitfield(),
            vec![0b0000_0100]
        );

        // The corrupt piece is never served: with no peer, the read
        // times out; it is dropped from the cache and the `have` file.
        let err = s.read(3 * PL as u64, 10).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        {
            let st = s.lock();
            let p = st.picker.as_ref().unwrap();
            assert!(!p.has(3) && !p.is_unverified(3));
            assert_eq!(p.cached_bitfield(), vec![0b1110_1111]);
            assert_eq!(st.cache.cached_bytes(), 7 * PL as u64);
        }
        assert!(haves.try_recv().is_err(), "no HAVE for the bad piece");
        // A good copy from a peer is stored and served.
        s.complete_piece(3, piece(3), Vec::new());
        settle(&s, |p| p.has(3)).await;
        assert_eq!(s.read(3 * PL as u64, PL).await.unwrap(), piece(3));
        s.stop();
    });
}

#[test]
fn the_background_verifier_advertises_only_good_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let file = full_cache(dir.path());
    // Piece 6 corrupt, piece 7 (the file's tail) gone.
    let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[!piece(6)[0]], 6 * PL as u64).unwrap();
    f.set_len(7 * PL as u64).unwrap();
    drop(f);

    let s = swarm_in(None, StorageKind::Files(dir.path().into()));
    let mut haves = s.have_tx.subscribe();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s2 = s.clone();
    rt.block_on(async { tokio::task::spawn_blocking(move || s2.set_metadata(&raw_info())).await })
        .unwrap()
        .unwrap();
    rt.block_on(wait(|| s.stats().pieces_unverified == 0));
    let st = s.stats();
    assert_eq!(st.pieces_have, 6);
    assert_eq!(s.counters.cached_hashed.load(Ordering::Relaxed), 8);
    let bf = s.lock().picker.as_ref().unwrap().bitfield();
    assert_eq!(bf, vec![0b1111_1100]);
    let mut announced = Vec::new();
    while let Ok(i) = haves.try_recv() {
        announced.push(i);
    }
    announced.sort();
    assert_eq!(announced, vec![0, 1, 2, 3, 4, 5], "HAVE as each verified");
    s.stop();
    // The `have` file no longer lists the bad pieces.
    let have = std::fs::read(CacheLayout::new(dir.path()).torrent(s.info_hash).have()).unwrap();
    assert_eq!(have, vec![0b1111_1100]);
}

#[test]
fn a_bounded_cache_evicts_unverified_pieces_without_hashing_them() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let file = full_cache(dir.path());
    // Remounted with room for 3 pieces: the 5 least recently stored go
    // at load, unhashed, their space freed.
    let s = swarm_in(Some(3 * PL as u64), StorageKind::Files(dir.path().into()));
    s.set_metadata(&raw_info()).unwrap();
    assert_eq!(s.counters.cached_hashed.load(Ordering::Relaxed), 0);
    {
        let st = s.lock();
        let p = st.picker.as_ref().unwrap();
        assert_eq!(p.cached_bitfield(), vec![0b0000_0111]);
        assert_eq!((p.have_count(), p.unverified_count()), (0, 3));
        assert_eq!(st.cache.cached_bytes(), 3 * PL as u64);
    }
    let mut buf = vec![1u8; PL];
    std::fs::File::open(&file)
        .unwrap()
        .read_exact_at(&mut buf, 0)
        .unwrap();
    assert!(buf.iter().all(|&b| b == 0), "evicted: punched out");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        assert_eq!(s.read(6 * PL as u64, PL).await.unwrap(), piece(6));
        let err = s.read(PL as u64, 10).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "evicted: {err}");
        // A new piece evicts the least recently used one, unverified
        // piece 5 (6 was just read).
        s.complete_piece(0, piece(0), Vec::new());
        settle(&s, |p| p.has(0)).await;
        let st = s.lock();
        let p = st.picker.as_ref().unwrap();
        assert_eq!(p.cached_bitfield(), vec![0b1000_0011]);
        assert_eq!(p.bitfield(), vec![0b1000_0010]);
        assert!(p.is_unverified(7));
        assert_eq!(st.cache.cached_bytes(), 3 * PL as u64);
        drop(st);
        s.stop();
    });
}

/// A read whose future is dropped while it waits (an HTTP client that
/// disconnected) takes its pieces' urgency back at once.
#[tokio::test]
async fn a_dropped_read_is_no_longer_urgent() {
    let s = swarm(None);
    let reader = {
        let s = s.clone();
        tokio::spawn(async move { s.read(3 * PL as u64, 10).await })
    };
    wait(|| s.lock().picker.as_ref().is_some_and(|p| p.is_urgent(3))).await;
    reader.abort();
    let _ = reader.await;
    assert!(!s.lock().picker.as_ref().unwrap().is_urgent(3));
}

#[tokio::test]
async fn a_new_incoming_connection_from_the_same_address_replaces_the_old_one() {
    // Over uTP a peer's connections share its UDP port: Transmission dials
    // again from the same address right after closing the one it got the
    // metadata over, often before we saw that one close.
    let s = swarm(None);
    let utp: SocketAddr = "192.0.2.8:51413".parse().unwrap();
    let (old, old_waker) = s.register_conn(utp, PeerSource::Incoming).unwrap();
    s.note_listen_addr(old, utp);
    let (new, _) = s
        .register_conn(utp, PeerSource::Incoming)
        .expect("the peer's new connection is kept");
    assert_ne!(old, new);
    assert!(s.is_live(new));
    assert!(!s.is_live(old), "the old connection is told to close");
    tokio::time::timeout(Duration::from_secs(1), old_waker.notified())
        .await
        .expect("the old session is woken");
    // The old session ends: the peer stays connected through the new one.
    s.unregister_conn(old, false);
    assert_eq!(s.candidate_state(utp).map(|c| c.0), Some(true));
    assert!(s.take_dial_candidates().is_empty());
    // We never dial an address we are connected to.
    assert!(s.register_conn(utp, PeerSource::Pex).is_none());
    assert!(s.is_live(new));
}
