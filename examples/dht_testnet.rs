//! Benchmark (not a test): a testnet of our own DHT nodes in one process on
//! loopback. Measures, over many random info-hashes, the time from
//! `get_peers` to the first peer and to the end of the lookup.
//!
//! Run it inside a private network namespace (it only uses 127.0.0.1):
//!
//! ```sh
//! cargo build --release --example dht_testnet
//! unshare --net -- sh -c 'ip link set lo up && target/release/examples/dht_testnet 200 50'
//! ```
//! Arguments: number of nodes (default 200), number of lookups (default 50).

use std::time::{Duration, Instant};

use btfs::InfoHash;
use btfs::dht::{Dht, DhtConfig};

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

    let mut first_peer = Vec::new();
    let mut lookup_end = Vec::new();
    let mut missed = 0;
    for t in 0..trials {
        let mut ih = [0u8; 20];
        getrandom::fill(&mut ih).expect("random");
        let ih = InfoHash(ih);
        let a = (rand_u64() as usize) % n;
        let mut s = (rand_u64() as usize) % n;
        if s == a {
            s = (s + 1) % n;
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
        if t < 3 {
            println!(
                "trial {t}: announce accepted by {accepted}, first peer {first:?}, lookup end {end:?}"
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
}
