//! Interoperability of our DHT node with libtorrent 2.0's (python3-libtorrent),
//! on loopback inside a private network namespace: bootstrap both ways,
//! get_peers/announce_peer both ways, and BEP 44 mutable items both ways.

#[path = "../mountpoint-tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use btfs::dht::{Dht, DhtConfig, MutableItem, mutable_target};
use btfs::{InfoHash, Keypair};
use serde_json::json;
use support::{LtDht, in_netns, runtime};

const LT_NODES: usize = 4;

fn cfg(bootstrap: Vec<String>) -> DhtConfig {
    DhtConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        bootstrap,
        request_timeout: Duration::from_secs(1),
        lookup_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

/// Our node A first, then libtorrent nodes bootstrapping from A, then A and
/// two more of ours (B, C) bootstrapping from libtorrent and A.
async fn mixed_network(base_port: u16) -> (Vec<Dht>, LtDht) {
    let a = Dht::start(cfg(vec![])).await.unwrap();
    let lt = LtDht::start(LT_NODES, base_port, &[a.local_addr()]);
    let lt_addrs = lt.addrs();
    // Give libtorrent a moment to come up and ping A.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a = {
        // Restart-free: A's bootstrap list is fixed at start, so ask a
        // second node to bootstrap through libtorrent, and A via add_node.
        for addr in &lt_addrs {
            a.add_node(addr.parse().unwrap()).await;
        }
        a
    };
    let mut boot = lt_addrs.clone();
    boot.push(a.local_addr().to_string());
    let b = Dht::start(cfg(boot.clone())).await.unwrap();
    let c = Dht::start(cfg(boot)).await.unwrap();
    let na = a.bootstrap().await;
    let nb = b.bootstrap().await;
    let nc = c.bootstrap().await;
    eprintln!("our tables after bootstrap: A {na}, B {nb}, C {nc}");
    assert!(na >= LT_NODES, "A knows {na} nodes");
    assert!(nb >= LT_NODES, "B knows {nb} nodes");
    (vec![a, b, c], lt)
}

fn wait_lt_tables(lt: &mut LtDht, min: i64) {
    let end = Instant::now() + Duration::from_secs(30);
    for i in 0..LT_NODES {
        loop {
            let r = lt.cmd(
                json!({"cmd": "nodes", "node": i}),
                "nodes",
                Duration::from_secs(10),
            );
            let n = r["count"].as_i64().unwrap();
            if n >= min {
                break;
            }
            assert!(
                Instant::now() < end,
                "libtorrent node {i} knows only {n} nodes"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

#[test]
fn dht_lt_bootstrap_and_peers() {
    if !in_netns("dht_lt_bootstrap_and_peers") {
        return;
    }
    runtime().block_on(async {
        let (ours, mut lt) = mixed_network(17100).await;
        let our_addrs: Vec<SocketAddr> = ours.iter().map(|d| d.local_addr()).collect();
        // libtorrent nodes know ours (they bootstrapped from A and were
        // queried by B and C).
        tokio::task::block_in_place(|| wait_lt_tables(&mut lt, 2));
        for d in &ours {
            eprintln!("{:?}: {:?}", d.local_addr(), d.stats());
        }
        assert!(ours[0].stats().queries_in > 0, "libtorrent queried A");

        // A peer announced by libtorrent is found by us.
        let ih1 = InfoHash([0x11; 20]);
        let r = tokio::task::block_in_place(|| {
            lt.cmd(
                json!({"cmd": "announce", "node": 1, "ih": ih1.to_hex()}),
                "announced",
                Duration::from_secs(5),
            )
        });
        let port = r["port"].as_u64().unwrap();
        let want: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        // D is read-only (BEP 43): nobody adds it to a table, so nobody
        // announces to it, and it must find the peer through a lookup.
        let mut boot = lt.addrs();
        boot.push(ours[0].local_addr().to_string());
        let d = Dht::start(DhtConfig {
            read_only: true,
            ..cfg(boot)
        })
        .await
        .unwrap();
        assert!(d.bootstrap().await >= LT_NODES);
        let end = Instant::now() + Duration::from_secs(40);
        let mut found = false;
        while !found && Instant::now() < end {
            let mut rx = d.get_peers(ih1);
            let t0 = Instant::now();
            while let Some(batch) = rx.recv().await {
                if batch.contains(&want) {
                    eprintln!(
                        "found libtorrent's peer after {:?} of the lookup",
                        t0.elapsed()
                    );
                    found = true;
                    break;
                }
            }
            if !found {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        assert!(found, "our get_peers found the peer libtorrent announced");
        assert_eq!(d.stats().peers_stored, 0);
        for o in &ours {
            assert!(
                !o.routing_nodes().iter().any(|n| n.addr == d.local_addr()),
                "a read-only node is kept out of routing tables"
            );
        }

        // A peer announced by us is found by libtorrent, explicit port and
        // implied port.
        let ih2 = InfoHash([0x22; 20]);
        let n = ours[1].announce_peer(ih2, Some(7002)).await;
        assert!(n >= 3, "announce accepted by {n} nodes");
        let ih3 = InfoHash([0x33; 20]);
        let n = ours[0].announce_peer(ih3, None).await;
        assert!(n >= 3, "implied-port announce accepted by {n} nodes");
        for (ih, want) in [
            (ih2, "127.0.0.1:7002".to_string()),
            (ih3, our_addrs[0].to_string()),
        ] {
            let end = Instant::now() + Duration::from_secs(40);
            loop {
                let r = tokio::task::block_in_place(|| {
                    lt.cmd(
                        json!({"cmd": "get_peers", "node": 3, "ih": ih.to_hex()}),
                        "peers",
                        Duration::from_secs(40),
                    )
                });
                let peers: Vec<String> = r["peers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_string())
                    .collect();
                if peers.contains(&want) {
                    break;
                }
                assert!(
                    Instant::now() < end,
                    "libtorrent did not find {want} for {ih}: {peers:?}"
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        for d in &ours {
            d.shutdown().await;
        }
    });
}

#[test]
fn dht_lt_mutable_items() {
    if !in_netns("dht_lt_mutable_items") {
        return;
    }
    runtime().block_on(async {
        let (ours, mut lt) = mixed_network(17200).await;
        tokio::task::block_in_place(|| wait_lt_tables(&mut lt, 2));

        // We put a BEP 46 item v = {ih: <20 bytes>}; libtorrent gets it.
        let kp = Keypair::from_seed(&[0x42; 32]);
        let mut v = b"d2:ih20:".to_vec();
        v.extend((0u8..20).map(|i| i.wrapping_mul(13)));
        v.push(b'e');
        let item = MutableItem::sign(&kp, b"", 1, &v);
        let n = ours[1].put_mutable(item.clone()).await.unwrap();
        assert!(n >= 3, "put accepted by {n} nodes");
        let r = tokio::task::block_in_place(|| {
            lt.cmd(
                json!({
                    "cmd": "get_mutable",
                    "node": 2,
                    "pk": hex::encode(kp.public_key()),
                    "salt": "",
                }),
                "mutable",
                Duration::from_secs(40),
            )
        });
        assert_eq!(r["found"], true, "{r}");
        assert_eq!(r["seq"], 1);
        assert_eq!(r["value_hex"], hex::encode(&v), "{r}");
        assert_eq!(r["sig_valid"], true, "{r}");

        // libtorrent puts a string item (with a salt); we get it.
        let seed2 = [0x24u8; 32];
        let kp2 = Keypair::from_seed(&seed2);
        let r = tokio::task::block_in_place(|| {
            lt.cmd(
                json!({
                    "cmd": "put_mutable",
                    "node": 0,
                    "seed": hex::encode(seed2),
                    "value": "hello from libtorrent",
                    "salt": hex::encode(b"salty"),
                }),
                "put",
                Duration::from_secs(70),
            )
        });
        let ok = r["num_success"].as_i64().unwrap();
        assert!(ok >= 1, "libtorrent's put reached {ok} nodes");
        let got = ours[2]
            .get_mutable(kp2.public_key(), b"salty")
            .await
            .expect("our get finds libtorrent's item");
        assert_eq!(got.value, b"21:hello from libtorrent");
        assert_eq!(got.salt, b"salty");
        assert!(got.verify());
        assert_eq!(got.target(), mutable_target(&kp2.public_key(), b"salty"));

        // Raw KRPC puts signed by python3-cryptography to our node A:
        // a dict value, then BEP 44 errors 302 (older seq) and 206 (bad sig).
        let a = ours[0].local_addr();
        let seed3 = [0x33u8; 32];
        let raw = |seq: i64, sig: Option<String>| {
            json!({
                "cmd": "raw_put",
                "addr": a.to_string(),
                "seed": hex::encode(seed3),
                "salt": "",
                "seq": seq,
                "v_hex": hex::encode(&v),
                "sig_hex": sig,
            })
        };
        let r = tokio::task::block_in_place(|| {
            lt.cmd(raw(5, None), "raw_put", Duration::from_secs(10))
        });
        assert_eq!(r["reply"]["y"], "r", "raw put accepted: {r}");
        let r = tokio::task::block_in_place(|| {
            lt.cmd(raw(4, None), "raw_put", Duration::from_secs(10))
        });
        assert_eq!(r["reply"]["e"][0], 302, "older seq refused with 302: {r}");
        let r = tokio::task::block_in_place(|| {
            lt.cmd(
                raw(6, Some("00".repeat(64))),
                "raw_put",
                Duration::from_secs(10),
            )
        });
        assert_eq!(
            r["reply"]["e"][0], 206,
            "bad signature refused with 206: {r}"
        );
        let kp3 = Keypair::from_seed(&seed3);
        let got = ours[0].get_mutable(kp3.public_key(), b"").await.unwrap();
        assert_eq!((got.seq, got.value.clone()), (5, v.clone()));
        for d in &ours {
            d.shutdown().await;
        }
    });
}
