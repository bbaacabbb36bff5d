//! Benchmark (not a test): a testnet of our own DHT nodes in one process on
//! loopback. Measures, over many random info-hashes, the time from
//! `get_peers` to the first peer and to the end of the lookup, and the time
//! of a BEP 44 `get` of a mutable item (which returns at the end of its
//! lookup), then of the same `get` again from the same node (what a BEP 46
//! mount does at each refresh).
//!
//! Run it inside a private network namespace (it only uses 127.0.0.1):
//!
//! ```sh
//! cargo build --release --example dht_testnet
//! unshare --net -- sh -c 'ip link set lo up && target/release/examples/dht_testnet 200 50 0.3'
//! ```
//! Arguments: number of nodes (default 200), number of lookups (default 50),
//! fraction of nodes that die after bootstrap (default 0). A dead node is a
//! node that was shut down after every routing table learned it; its UDP
//! port is then held by a socket that never answers (a black hole, as a
//! vanished host on the Internet: no ICMP "port unreachable"). Dead nodes
//! are drawn at random, so about that fraction of the closest nodes to any
//! target is dead. Every node uses the default 2 s request timeout.

use std::time::{Duration, Instant};

use btfs::InfoHash;
use btfs::Keypair;
use btfs::dht::{Dht, DhtConfig, MutableItem};

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random");
    u64::from_le_bytes(b)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let trials: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let dead_fraction: f64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0.0_f64)
        .clamp(0.0, 0.9);
    let cfg = |bootstrap: Vec<String>| DhtConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        bootstrap,
        ..Default::default()
    };
    let t0 = Instant::now();
    let first = Dht::start(cfg(vec![])).await.expect("bind");
    let mut nodes = vec![first];
    for i in 1..n {
        // Each node knows the first node and a random earlier one.
        let other = &nodes[(rand_u64() as usize) % i];
        let boot = vec![
            nodes[0].local_addr().to_string(),
            other.local_addr().to_string(),
        ];
        nodes.push(Dht::start(cfg(boot)).await.expect("bind"));
    }
    // Bootstrap in waves of 20 concurrent nodes, twice, so that early nodes
    // also learn about late ones.
    for _round in 0..2 {
        for chunk in nodes.chunks(20) {
            let mut set = tokio::task::JoinSet::new();
            for d in chunk {
                let d = d.clone();
                set.spawn(async move { d.bootstrap().await });
            }
            set.join_all().await;
        }
    }
    let sizes: Vec<usize> = nodes.iter().map(|d| d.stats().nodes).collect();
    let avg = sizes.iter().sum::<usize>() as f64 / n as f64;
    println!(
        "{n} nodes up and bootstrapped in {:.1?}; routing table size avg {avg:.1}, min {}",
        t0.elapsed(),
        sizes.iter().min().unwrap()
    );

    // Kill a random fraction (never node 0, which others bootstrapped from;
    // it stays as one live node among many).
    let want_dead = ((n as f64) * dead_fraction).round() as usize;
    let mut holes = Vec::new();
    let mut alive: Vec<Dht> = Vec::new();
    let mut order: Vec<usize> = (1..n).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (rand_u64() as usize) % (i + 1));
    }
    let doomed: std::collections::HashSet<usize> = order.into_iter().take(want_dead).collect();
    for (i, d) in nodes.into_iter().enumerate() {
        if doomed.contains(&i) {
            let addr = d.local_addr();
            d.shutdown().await;
            holes.push(tokio::net::UdpSocket::bind(addr).await.expect("rebind"));
        } else {
            alive.push(d);
        }
    }
    let nodes = alive;
    let live = nodes.len();
    println!(
        "{} of {n} nodes dead ({:.0} %), {live} alive",
        holes.len(),
        100.0 * holes.len() as f64 / n as f64
    );

    let mut first_peer = Vec::new();
    let mut lookup_end = Vec::new();
    let mut get_end = Vec::new();
    let mut reget_end = Vec::new();
    let mut missed = 0;
    let mut missed_items = 0;
    for t in 0..trials {
        let mut ih = [0u8; 20];
        getrandom::fill(&mut ih).expect("random");
        let ih = InfoHash(ih);
        let a = (rand_u64() as usize) % live;
        let mut s = (rand_u64() as usize) % live;
        if s == a {
            s = (s + 1) % live;
        }
        let port = 10_000 + t as u16;
        let accepted = nodes[a].announce_peer(ih, Some(port)).await;
        let start = Instant::now();
        let mut rx = nodes[s].get_peers(ih);
        let mut first = None;
        while let Some(batch) = rx.recv().await {
            if first.is_none() && batch.iter().any(|p| p.port() == port) {
                first = Some(start.elapsed());
            }
        }
        let end = start.elapsed();
        match first {
            Some(f) => first_peer.push(f),
            None => missed += 1,
        }
        lookup_end.push(end);

        // BEP 44: put from the announcing node, get from the searching one.
        let kp = Keypair::generate();
        let item = MutableItem::sign(&kp, b"", 1, b"i1e");
        let _ = nodes[a].put_mutable(item.clone()).await;
        let start = Instant::now();
        let got = nodes[s].get_mutable(kp.public_key(), b"").await;
        get_end.push(start.elapsed());
        if got.as_ref() != Some(&item) {
            missed_items += 1;
        }
        let start = Instant::now();
        let again = nodes[s].get_mutable(kp.public_key(), b"").await;
        reget_end.push(start.elapsed());
        if again.as_ref() != Some(&item) {
            missed_items += 1;
        }
        if t < 3 {
            println!(
                "trial {t}: announce accepted by {accepted}, first peer {first:?}, lookup end {end:?}, get {:?}",
                get_end[t]
            );
        }
    }
    println!(
        "{trials} lookups: first peer median {:?} (p90 {:?}); lookup end median {:?} (p90 {:?}); {missed} found no peer",
        percentile(&mut first_peer, 0.5),
        percentile(&mut first_peer, 0.9),
        percentile(&mut lookup_end, 0.5),
        percentile(&mut lookup_end, 0.9),
    );
    println!(
        "{trials} mutable gets: end median {:?} (p90 {:?}); the same again: median {:?} (p90 {:?}); {missed_items} missed the item",
        percentile(&mut get_end, 0.5),
        percentile(&mut get_end, 0.9),
        percentile(&mut reget_end, 0.5),
        percentile(&mut reget_end, 0.9),
    );
    let s: Vec<_> = nodes.iter().map(|d| d.stats()).collect();
    println!(
        "totals: queries out {}, timeouts {}, dropped datagrams {}",
        s.iter().map(|x| x.queries_out).sum::<u64>(),
        s.iter().map(|x| x.timeouts).sum::<u64>(),
        s.iter().map(|x| x.dropped_datagrams).sum::<u64>()
    );
    for d in &nodes {
        d.shutdown().await;
    }
    drop(holes);
}
