//! The engine as a library (no FUSE): `Client::builder()...start()`,
//! `lookup(url, LookupOptions)`, and the `Archive` reads, against a real
//! python3-libtorrent seeder found through a local DHT, in a network
//! namespace of its own. Uses the in-memory storage.

#[path = "../mountpoint-tests/support/mod.rs"]
mod support;

use std::time::Duration;

use btfs::archive::EntryKind;
use btfs::swarm::StorageKind;
use btfs::{Client, LookupOptions};
use support::*;

/// A client with default settings but the bootstrap node `boot`, the
/// `storage`, and a 30 s read timeout (DHT, LSD and port mapping on, as a
/// program would run them).
async fn start_client(boot: &str, storage: StorageKind) -> Client {
    Client::builder()
        .bootstrap(vec![boot.to_string()])
        .storage(storage)
        .read_timeout(Duration::from_secs(30))
        .start()
        .await
        .expect("client starts")
}

#[test]
fn client_lookup_and_archive_reads_with_memory_storage() {
    if !in_netns("client_lookup_and_archive_reads_with_memory_storage") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("lib");
    make_tree(
        &tree,
        &[
            ("a.txt", TreeFile::Text("alpha\n")),
            ("dir/b.bin", TreeFile::Random(3 * 1024 * 1024 + 5, 11)),
            ("dir/empty", TreeFile::Text("")),
        ],
    );
    let dht = LocalDht::start(1);
    let boot = dht.boot();
    let (mut seeder, magnet) = LtNode::seed_tree(
        &tree,
        0,
        &["--dht", "--bootstrap", &boot, "--announce-interval", "2"],
    );
    let original = std::fs::read(tree.join("dir/b.bin")).unwrap();

    runtime().block_on(async {
        let client = start_client(&boot, StorageKind::Memory).await;
        let opts = LookupOptions {
            timeout: Duration::from_secs(30),
            ..Default::default()
        };
        let archive = client
            .lookup(&magnet, opts)
            .await
            .expect("metadata through the DHT");
        assert_eq!(archive.info_hash().to_hex(), seeder.info_hash());

        let root: Vec<String> = archive
            .read_dir("")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(root, vec!["lib"]);
        let dir = archive.read_dir("lib/dir").unwrap();
        assert_eq!(dir.len(), 2);
        assert_eq!(dir[0].name, "b.bin");
        assert_eq!(dir[0].size, original.len() as u64);
        assert_eq!(dir[1].kind, EntryKind::File);
        assert_eq!(archive.metadata("lib/dir").unwrap().kind, EntryKind::Dir);
        assert!(archive.metadata("lib/nope").is_err());
        assert!(archive.read_dir("lib/a.txt").is_err());
        // A failed open names the path, so `cat: <error>` says which.
        let e = archive.open("lib/dir").err().unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::IsADirectory);
        assert_eq!(e.to_string(), "lib/dir: is a directory");
        let e = archive.open("lib/nope").err().unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(e.to_string(), "lib/nope: no such file in the torrent");

        assert_eq!(archive.read_file("lib/a.txt").await.unwrap(), b"alpha\n");
        assert!(archive.read_file("lib/dir/empty").await.unwrap().is_empty());

        // open: reads of any range, in any order.
        let f = archive.open("lib/dir/b.bin").unwrap();
        let mid = f.size() / 2;
        assert_eq!(
            f.read_at(mid, 10_000).await.unwrap(),
            original[mid as usize..mid as usize + 10_000]
        );
        assert_eq!(f.read_at(0, 100).await.unwrap(), original[..100]);
        let tail = f.read_at(f.size() - 3, 100).await.unwrap();
        assert_eq!(tail, original[original.len() - 3..]);
        assert!(f.read_at(f.size(), 10).await.unwrap().is_empty());
        drop(f);
        let whole = archive.read_file("lib/dir/b.bin").await.unwrap();
        assert_eq!(sha256_bytes(&whole), sha256_bytes(&original));
        assert!(archive.metadata("lib/dir/b.bin").unwrap().local);

        archive.close();
        client.stop().await;
    });
}

/// A program that stops one `Client` and starts another on the same cache
/// (a reconfiguration, or a test suite) gets the cache back when
/// `stop().await` returns: every swarm's tasks have ended and the cache's
/// lock is released.
#[test]
fn a_stopped_client_lets_go_of_its_cache() {
    if !in_netns("a_stopped_client_lets_go_of_its_cache") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let tree = tmp.path().join("lib");
    make_tree(&tree, &[("c.bin", TreeFile::Random(2 * 1024 * 1024, 5))]);
    let original = std::fs::read(tree.join("c.bin")).unwrap();
    let dht = LocalDht::start(1);
    let boot = dht.boot();
    let (seeder, magnet) = LtNode::seed_tree(
        &tree,
        0,
        &["--dht", "--bootstrap", &boot, "--announce-interval", "2"],
    );
    let cache = tmp.path().join("cache");
    runtime().block_on(async {
        for round in 0..2 {
            let client = start_client(&boot, StorageKind::Files(cache.clone())).await;
            let opts = LookupOptions {
                timeout: Duration::from_secs(30),
                peers: vec![seeder.addr().parse().unwrap()],
                ..Default::default()
            };
            let archive = client
                .lookup(&magnet, opts)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            let whole = archive.read_file("lib/c.bin").await.unwrap();
            assert_eq!(
                sha256_bytes(&whole),
                sha256_bytes(&original),
                "round {round}"
            );
            let file = archive.open("lib/c.bin").unwrap();
            let mid = file.read_at(file.size() / 2, 4096).await.unwrap();
            assert_eq!(mid, original[original.len() / 2..][..4096]);
            // As the README's example does: stop while the archive and a
            // file are still held, and let them go afterwards.
            client.stop().await;
            drop((file, archive));
        }
    });
}
