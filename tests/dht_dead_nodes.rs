//! Lookups among dead and slow nodes, on loopback inside a private network
//! namespace, with the default 2 s request timeout. A dead node is a node
//! that every routing table learned and that then stopped: its UDP port is
//! held by a socket that never answers (no ICMP "port unreachable", as a
//! vanished host on the Internet). A slow node is a live node behind a UDP
//! relay that delays each query past the lookup's soft timeout.

#[path = "../mountpoint-tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use btfs::dht::{Dht, DhtConfig, MutableItem, mutable_target};
use btfs::{InfoHash, Keypair};
use support::{in_netns, runtime};
use tokio::net::UdpSocket;

/// Bound asserted on a lookup's end: well under the 2 s request timeout that
/// each dead node would cost if waited for.
const FAST: Duration = Duration::from_millis(1500);

fn cfg(bootstrap: Vec<String>, node_id: Option<[u8; 20]>) -> DhtConfig {
    DhtConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        bootstrap,
        node_id,
        ..Default::default()
    }
}

/// `target` with byte `at` replaced by `b`: at XOR distance about
/// 2^(8·(19 − at)) from it.
fn near(target: &[u8; 20], at: usize, b: u8) -> [u8; 20] {
    let mut id = *target;
    id[at] ^= b;
    id
}

/// Stops `d` and holds its port with a socket that never answers.
async fn kill(d: Dht) -> UdpSocket {
    let addr = d.local_addr();
    d.shutdown().await;
    UdpSocket::bind(addr)
        .await
        .expect("rebind the dead node's port")
}

#[test]
fn dht_lookup_passes_over_dead_nodes() {
    if !in_netns("dht_lookup_passes_over_dead_nodes") {
        return;
    }
    runtime().block_on(async {
        // The item's target decides where the dead nodes sit: the 10 nodes
        // closest to it die; 8 live ones sit a little farther; 20 elsewhere.
        let kp = Keypair::generate();
        let target = mutable_target(&kp.public_key(), b"dead");
        let first = Dht::start(cfg(vec![], None)).await.unwrap();
        let boot = vec![first.local_addr().to_string()];
        let mut doomed = Vec::new();
        for i in 1..=10u8 {
            let id = near(&target, 19, i);
            doomed.push(Dht::start(cfg(boot.clone(), Some(id))).await.unwrap());
        }
        let mut live = vec![first];
        for i in 1..=8u8 {
            let id = near(&target, 2, i);
            live.push(Dht::start(cfg(boot.clone(), Some(id))).await.unwrap());
        }
        for _ in 0..20 {
            live.push(Dht::start(cfg(boot.clone(), None)).await.unwrap());
        }
        for _round in 0..2 {
            for d in doomed.iter().chain(live.iter().skip(1)) {
                d.bootstrap().await;
            }
        }
        let mut holes = Vec::new();
        for d in doomed {
            holes.push(kill(d).await);
        }

        // A live node near the target announces and puts: its lookups meet
        // the 10 dead nodes first.
        let ih = InfoHash(target);
        let t = Instant::now();
        let accepted = live[1].announce_peer(ih, Some(4242)).await;
        eprintln!(
            "announce_peer past 10 dead nodes: {:?}, accepted by {accepted}",
            t.elapsed()
        );
        assert!(accepted >= 3, "{accepted}");
        let item = MutableItem::sign(&kp, b"dead", 7, b"d2:ih20:aaaaaaaaaaaaaaaaaaaae");
        let t = Instant::now();
        assert!(live[2].put_mutable(item.clone()).await.unwrap() >= 3);
        eprintln!("put_mutable past 10 dead nodes: {:?}", t.elapsed());

        // A node far from the target looks the peer and the item up.
        let searcher = &live[live.len() - 1];
        let t = Instant::now();
        let mut rx = searcher.get_peers(ih);
        let mut got = Vec::new();
        let mut first_peer = None;
        while let Some(b) = rx.recv().await {
            if first_peer.is_none() && b.iter().any(|p| p.port() == 4242) {
                first_peer = Some(t.elapsed());
            }
            got.extend(b);
        }
        let end = t.elapsed();
        eprintln!("get_peers past 10 dead nodes: first peer {first_peer:?}, lookup end {end:?}");
        let want: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        assert!(got.contains(&want), "{got:?}");
        assert!(end < FAST, "lookup took {end:?}");

        let t = Instant::now();
        let found = searcher.get_mutable(kp.public_key(), b"dead").await;
        let end = t.elapsed();
        eprintln!("get_mutable past 10 dead nodes: {end:?}");
        assert_eq!(found, Some(item));
        assert!(end < FAST, "get took {end:?}");
        let s = searcher.stats();
        eprintln!("searcher: {s:?}");
        assert!(s.soft_timeouts >= 3, "dead nodes were queried: {s:?}");
        assert!(s.round_trip.is_some_and(|r| r < FAST));

        // The get above already found the dead nodes suspect (they were past
        // their soft timeout in the get_peers lookup). Once the request
        // timeout has passed too, they count as failed: the next get (a
        // BEP 46 refresh) still asks them but does not wait for them.
        tokio::time::sleep(Duration::from_millis(2700)).await;
        assert!(searcher.stats().timeouts >= 10, "{:?}", searcher.stats());
        let t = Instant::now();
        let found = searcher.get_mutable(kp.public_key(), b"dead").await;
        let end = t.elapsed();
        let soft = searcher.stats().soft_timeouts - s.soft_timeouts;
        eprintln!("get_mutable again, dead nodes known: {end:?}, {soft} soft timeouts");
        assert!(found.is_some());
        assert!(end < Duration::from_millis(500), "get took {end:?}");

        for d in &live {
            d.shutdown().await;
        }
        drop(holes);
    });
}

/// A UDP relay in front of `to` that holds each datagram from its client
/// for `delay` before passing it on; answers come back at once. Returns the
/// relay's address.
async fn slow_relay(to: SocketAddr, delay: Duration) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = front.local_addr().unwrap();
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let (f, b, c) = (front.clone(), back.clone(), client.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            *c.lock().unwrap() = Some(from);
            let (b, data) = (b.clone(), buf[..n].to_vec());
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = b.send_to(&data, to).await;
            });
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            let to_client = *client.lock().unwrap();
            if let Some(c) = to_client {
                let _ = front.send_to(&buf[..n], c).await;
            }
        }
    });
    addr
}

#[test]
fn dht_late_answers_of_slow_nodes_are_used() {
    if !in_netns("dht_late_answers_of_slow_nodes_are_used") {
        return;
    }
    runtime().block_on(async {
        let first = Dht::start(cfg(vec![], None)).await.unwrap();
        let boot = vec![first.local_addr().to_string()];
        let mut live = vec![first];
        for _ in 0..11 {
            live.push(Dht::start(cfg(boot.clone(), None)).await.unwrap());
        }
        for _round in 0..2 {
            for d in live.iter().skip(1) {
                d.bootstrap().await;
            }
        }
        let ih = InfoHash([0x3c; 20]);
        assert!(live[5].announce_peer(ih, Some(5555)).await >= 3);

        // The searcher restarts from a saved routing table where 6 nodes
        // are dead and the only live one answers in 800 ms: past the soft
        // timeout (500 ms before any round trip is measured), well before
        // the 2 s request timeout.
        let relay = slow_relay(live[3].local_addr(), Duration::from_millis(800)).await;
        let mut holes = Vec::new();
        let mut saved = format!("id {}\n", hex::encode([0x99u8; 20]));
        saved.push_str(&format!(
            "node {} {relay}\n",
            hex::encode(live[3].node_id())
        ));
        for i in 0..6u8 {
            let hole = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            saved.push_str(&format!(
                "node {} {}\n",
                hex::encode([i; 20]),
                hole.local_addr().unwrap()
            ));
            holes.push(hole);
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dht_nodes"), saved).unwrap();
        let searcher = Dht::start(DhtConfig {
            state_dir: Some(dir.path().to_path_buf()),
            ..cfg(vec![], None)
        })
        .await
        .unwrap();

        let t = Instant::now();
        let mut rx = searcher.get_peers(ih);
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            got.extend(b);
        }
        let end = t.elapsed();
        let s = searcher.stats();
        eprintln!("get_peers through one slow node among dead ones: {end:?}; {s:?}");
        let want: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        assert!(got.contains(&want), "{got:?}");
        assert!(
            s.late_answers >= 1,
            "the slow node's answer was used: {s:?}"
        );
        assert!(
            s.soft_timeouts >= 7,
            "7 saved nodes went past the soft timeout: {s:?}"
        );
        assert!(end < FAST, "lookup took {end:?}");

        searcher.shutdown().await;
        for d in &live {
            d.shutdown().await;
        }
        drop(holes);
    });
}
