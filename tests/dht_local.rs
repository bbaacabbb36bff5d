//! Our DHT nodes among themselves on loopback, inside a private network
//! namespace: wire robustness (garbage, transaction ids, unsorted keys),
//! peers, BEP 44 items, and restart from the saved routing table.

#[path = "../mountpoint-tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use btfs::dht::{Dht, DhtConfig, DhtError, MutableItem, immutable_target};
use btfs::{InfoHash, Keypair};
use support::{in_netns, runtime};
use tokio::net::UdpSocket;

fn cfg(bootstrap: Vec<String>) -> DhtConfig {
    DhtConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        bootstrap,
        request_timeout: Duration::from_millis(500),
        lookup_timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

async fn swarm(n: usize) -> Vec<Dht> {
    let first = Dht::start(cfg(vec![])).await.unwrap();
    let boot = vec![first.local_addr().to_string()];
    let mut nodes = vec![first];
    for _ in 1..n {
        nodes.push(Dht::start(cfg(boot.clone())).await.unwrap());
    }
    for d in nodes.iter().skip(1) {
        d.bootstrap().await;
    }
    // A second round so early nodes learn the late ones.
    for d in &nodes {
        d.bootstrap().await;
    }
    nodes
}

async fn exchange(sock: &UdpSocket, to: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    sock.send_to(msg, to).await.unwrap();
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[test]
fn dht_wire_robustness() {
    if !in_netns("dht_wire_robustness") {
        return;
    }
    runtime().block_on(async {
        let d = Dht::start(cfg(vec![])).await.unwrap();
        let to = d.local_addr();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        // Garbage, oversized, truncated, non-dict, huge length prefixes.
        let mut garbage: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"hello".to_vec(),
            b"d1:t".to_vec(),
            b"i42e".to_vec(),
            b"d1:t2:aa1:y1:r1:rd2:id3:abcee".to_vec(),
            b"d99999999999999999999:xe".to_vec(),
            vec![b'l'; 1500],
            vec![b'x'; 3000],
        ];
        garbage.push(b"d1:t2:aa1:y1:rd2:id20:abcdefghij0123456789ee".to_vec()); // unsolicited
        for g in &garbage {
            assert!(exchange(&sock, to, g).await.is_none(), "no answer to {g:?}");
        }
        let dropped = d.stats().dropped_datagrams;
        assert_eq!(dropped, garbage.len() as u64, "{:?}", d.stats());

        // Transaction ids of 1, 2 (libtorrent), 9 and 32 bytes are echoed
        // exactly; 33 bytes is dropped. Keys unsorted, unknown keys added.
        for n in [1usize, 2, 9, 32, 33] {
            let tid: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37)).collect();
            let mut q = b"d1:y1:q1:t".to_vec();
            q.extend_from_slice(format!("{n}:").as_bytes());
            q.extend_from_slice(&tid);
            q.extend_from_slice(b"1:q4:ping5:zzzzzi1e1:ad2:id20:abcdefghij01234567895:extra3:xyzee");
            let r = exchange(&sock, to, &q).await;
            if n > 32 {
                assert!(r.is_none());
                continue;
            }
            let r = r.expect("ping answered");
            let v = btfs::bencode::decode(&r, Default::default()).unwrap();
            assert_eq!(v.get(b"t").unwrap().as_bytes().unwrap(), &tid[..]);
            assert_eq!(v.get(b"y").unwrap().as_bytes().unwrap(), b"r");
            assert_eq!(
                v.get(b"r").unwrap().get(b"id").unwrap().as_bytes().unwrap(),
                &d.node_id()
            );
            // BEP 42: the requester's address is echoed in `ip`.
            assert_eq!(v.get(b"ip").unwrap().as_bytes().unwrap().len(), 6);
        }
        // Unknown method: error 204 with our tid; missing argument: 203.
        let r = exchange(
            &sock,
            to,
            b"d1:ad2:id20:abcdefghij0123456789e1:q6:frobni1:t3:abc1:y1:qe",
        )
        .await
        .unwrap();
        assert!(r.windows(3).any(|w| w == b"204") && r.windows(3).any(|w| w == b"abc"));
        let r = exchange(
            &sock,
            to,
            b"d1:ad2:id20:abcdefghij0123456789e1:q9:find_node1:t2:xy1:y1:qe",
        )
        .await
        .unwrap();
        assert!(r.windows(3).any(|w| w == b"203"));
        // announce_peer with a bad token: 203.
        let r = exchange(&sock, to, b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:porti6881e5:token3:bade1:q13:announce_peer1:t2:an1:y1:qe").await.unwrap();
        assert!(r.windows(13).any(|w| w == b"invalid token"), "{r:?}");
        assert_eq!(d.stats().queries_in, 7, "4 pings, 204, 203, bad token");
        d.shutdown().await;
        // BEP 43: a read-only node answers no query.
        let ro = Dht::start(DhtConfig {
            read_only: true,
            ..cfg(vec![])
        })
        .await
        .unwrap();
        let ping = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        assert!(exchange(&sock, ro.local_addr(), ping).await.is_none());
        assert_eq!(ro.stats().queries_in, 1);
        ro.shutdown().await;
    });
}

#[test]
fn dht_local_peers_and_items() {
    if !in_netns("dht_local_peers_and_items") {
        return;
    }
    runtime().block_on(async {
        let nodes = swarm(12).await;
        for d in &nodes {
            assert!(d.stats().nodes >= 8, "{:?}", d.stats());
        }
        // Explicit port and implied port.
        let ih = InfoHash([0xab; 20]);
        assert!(nodes[3].announce_peer(ih, Some(4000)).await >= 3);
        assert!(nodes[4].announce_peer(ih, None).await >= 3);
        let mut rx = nodes[9].get_peers(ih);
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            got.extend(b);
        }
        let want1: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert!(got.contains(&want1), "{got:?}");
        assert!(got.contains(&nodes[4].local_addr()), "{got:?}");
        let mut dedup = got.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), got.len(), "no peer repeated across batches");

        // Mutable: put seq 1 then 2 from different nodes; highest wins.
        let kp = Keypair::generate();
        let v1 = MutableItem::sign(&kp, b"s", 1, b"d2:ih20:aaaaaaaaaaaaaaaaaaaae");
        let v2 = MutableItem::sign(&kp, b"s", 2, b"d2:ih20:bbbbbbbbbbbbbbbbbbbbe");
        assert!(nodes[1].put_mutable(v1.clone()).await.unwrap() >= 3);
        assert!(nodes[2].put_mutable(v2.clone()).await.unwrap() >= 3);
        let got = nodes[10].get_mutable(kp.public_key(), b"s").await.unwrap();
        assert_eq!(got, v2);
        assert!(
            nodes[10]
                .get_mutable(kp.public_key(), b"other")
                .await
                .is_none()
        );
        // An older seq is refused (302) by the nodes holding seq 2. A node
        // the seq 2 put did not reach (two lookups can see slightly
        // different closest sets) still holds seq 1 and takes the same seq 1
        // again (BEP 44: an equal seq with the same value is a refresh); it
        // was seen on main before the lookup changes too. What must hold is
        // that no reader is rolled back: a get still returns seq 2.
        match nodes[5].put_mutable(v1).await {
            Err(DhtError::Rejected { code: 302, .. }) => {}
            Ok(n) => eprintln!("seq 1 accepted by {n} node(s) seq 2 had not reached"),
            r => panic!("expected 302, got {r:?}"),
        }
        for n in [0, 5, 10, 11] {
            let got = nodes[n].get_mutable(kp.public_key(), b"s").await.unwrap();
            assert_eq!(got.seq, 2, "node {n} read seq {}", got.seq);
        }
        // Client-side checks.
        let mut bad = v2.clone();
        bad.seq = 3;
        assert_eq!(
            nodes[0].put_mutable(bad).await,
            Err(DhtError::InvalidSignature)
        );
        let big = format!("1000:{}", "x".repeat(1000)).into_bytes();
        assert!(matches!(
            nodes[0]
                .put_mutable(MutableItem::sign(&kp, b"", 1, &big))
                .await,
            Err(DhtError::ValueTooLarge(_))
        ));
        assert_eq!(
            nodes[0].put_immutable(b"not bencode".to_vec()).await,
            Err(DhtError::InvalidValue)
        );

        // Immutable.
        let v = b"l5:helloi42ee".to_vec();
        let t = nodes[6].put_immutable(v.clone()).await.unwrap();
        assert_eq!(t, immutable_target(&v));
        assert_eq!(nodes[11].get_immutable(t).await, Some(v));
        assert_eq!(nodes[11].get_immutable([9; 20]).await, None);
        for d in &nodes {
            d.shutdown().await;
        }
    });
}

#[test]
fn dht_restart_from_saved_nodes() {
    if !in_netns("dht_restart_from_saved_nodes") {
        return;
    }
    runtime().block_on(async {
        let nodes = swarm(6).await;
        let dir = tempfile::tempdir().unwrap();
        let c = DhtConfig {
            state_dir: Some(dir.path().to_path_buf()),
            ..cfg(vec![nodes[0].local_addr().to_string()])
        };
        let d = Dht::start(c.clone()).await.unwrap();
        assert!(d.bootstrap().await >= 5);
        let id = d.node_id();
        d.shutdown().await;
        let saved = std::fs::read_to_string(dir.path().join("dht_nodes")).unwrap();
        assert!(saved.lines().filter(|l| l.starts_with("node ")).count() >= 5);
        // Restart with no routers at all: the saved nodes are enough.
        let d = Dht::start(DhtConfig {
            bootstrap: vec![],
            ..c
        })
        .await
        .unwrap();
        let t0 = Instant::now();
        assert!(d.bootstrap().await >= 5);
        assert_eq!(d.node_id(), id, "the id is kept across restarts");
        eprintln!("re-bootstrap from saved nodes took {:?}", t0.elapsed());
        d.shutdown().await;
        for n in &nodes {
            n.shutdown().await;
        }
    });
}

#[test]
fn dht_ipv6_loopback() {
    if !in_netns("dht_ipv6_loopback") {
        return;
    }
    runtime().block_on(async {
        let v6 = |bootstrap: Vec<String>| DhtConfig {
            bind: "[::1]:0".parse().unwrap(),
            ..cfg(bootstrap)
        };
        let first = match Dht::start(v6(vec![])).await {
            Ok(d) => d,
            Err(e) => {
                support::skip_or_fail(
                    "dht_ipv6_loopback",
                    &format!("no ::1 in this namespace ({e})"),
                );
                return;
            }
        };
        let boot = vec![first.local_addr().to_string()];
        let mut nodes = vec![first];
        for _ in 0..5 {
            nodes.push(Dht::start(v6(boot.clone())).await.unwrap());
        }
        for d in nodes.iter().rev() {
            d.bootstrap().await;
        }
        assert!(nodes[5].stats().nodes >= 5, "{:?}", nodes[5].stats());
        let ih = InfoHash([0x66; 20]);
        assert!(nodes[2].announce_peer(ih, Some(6666)).await >= 3);
        let mut rx = nodes[4].get_peers(ih);
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            got.extend(b);
        }
        let want: SocketAddr = "[::1]:6666".parse().unwrap();
        assert!(got.contains(&want), "{got:?}");
        for d in &nodes {
            d.shutdown().await;
        }
    });
}

/// The reply dictionary `r` of a KRPC answer, as (nodes bytes, nodes6
/// bytes, values entries).
fn reply_parts(raw: &[u8]) -> (Option<usize>, Option<usize>, Vec<usize>) {
    let v = btfs::bencode::decode(raw, Default::default()).unwrap();
    let r = v.get(b"r").expect("a reply");
    let len = |k: &[u8]| r.get(k).and_then(|x| x.as_bytes()).map(|b| b.len());
    let values = match r.get(b"values").map(|x| &x.kind) {
        Some(btfs::bencode::Kind::List(l)) => l
            .iter()
            .map(|e| e.as_bytes().map_or(0, |b| b.len()))
            .collect(),
        _ => Vec::new(),
    };
    (len(b"nodes"), len(b"nodes6"), values)
}

/// BEP 32: dual-stack nodes (an IPv4 socket on 127.0.0.1 and an IPv6 one
/// on ::1, two routing tables) bootstrapped through one IPv6 node only
/// fill both tables (IPv4 nodes learned from `nodes` answers to `want`;
/// only the second node is also given the first's IPv4 address, so that
/// some IPv4 table is not empty);
/// an announce goes to both DHTs, and a lookup finds the peer under both
/// addresses. Raw KRPC: `want` decides `nodes`/`nodes6`, and `values`
/// follow the family of the socket (6-byte over IPv4, 18-byte over IPv6).
#[test]
fn dht_dual_stack_bep32() {
    if !in_netns("dht_dual_stack_bep32") {
        return;
    }
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        support::skip_or_fail("dht_dual_stack_bep32", "no ::1 in this namespace");
        return;
    }
    runtime().block_on(async {
        let dual = |bootstrap: Vec<String>| DhtConfig {
            bind6: Some("::1".parse().unwrap()),
            ..cfg(bootstrap)
        };
        let first = Dht::start(dual(vec![])).await.unwrap();
        let addrs = first.local_addrs();
        assert_eq!(addrs.len(), 2, "{addrs:?}");
        assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6(), "{addrs:?}");
        assert_eq!(addrs[0].port(), addrs[1].port(), "the same port when free");
        let boot6 = vec![addrs[1].to_string()];
        let mut nodes = vec![first];
        let both = vec![addrs[1].to_string(), addrs[0].to_string()];
        nodes.push(Dht::start(dual(both)).await.unwrap());
        for _ in 0..6 {
            nodes.push(Dht::start(dual(boot6.clone())).await.unwrap());
        }
        for d in nodes.iter().skip(1) {
            d.bootstrap().await;
        }
        for d in &nodes {
            d.bootstrap().await;
        }
        for d in nodes.iter().skip(1) {
            let s = d.stats();
            assert!(s.nodes6 >= 4, "IPv6 table: {s:?}");
            assert!(
                s.nodes - s.nodes6 >= 3,
                "IPv4 table, filled only from nodes answers to want: {s:?}"
            );
        }
        let ih = InfoHash([0x32; 20]);
        assert!(nodes[3].announce_peer(ih, Some(4032)).await >= 6);
        let mut rx = nodes[6].get_peers(ih);
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            got.extend(b);
        }
        for want in ["127.0.0.1:4032", "[::1]:4032"] {
            let want: SocketAddr = want.parse().unwrap();
            assert!(got.contains(&want), "{want} not in {got:?}");
        }

        // Raw KRPC to nodes[0], over each family.
        let v4 = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let v6 = UdpSocket::bind("[::1]:0").await.unwrap();
        let find = |want: &str| {
            format!(
                "d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456{want}e1:q9:find_node1:t2:aa1:y1:qe"
            )
            .into_bytes()
        };
        let to4 = nodes[0].local_addrs()[0];
        let to6 = nodes[0].local_addrs()[1];
        let (n4, n6, _) = reply_parts(&exchange(&v4, to4, &find("")).await.unwrap());
        assert!(n4.is_some_and(|n| n > 0 && n % 26 == 0), "{n4:?}");
        assert_eq!(n6, None, "no want over IPv4: nodes only");
        let (n4, n6, _) = reply_parts(&exchange(&v4, to4, &find("4:wantl2:n6e")).await.unwrap());
        assert_eq!(n4, None, "want n6 only");
        assert!(n6.is_some_and(|n| n > 0 && n % 38 == 0), "{n6:?}");
        let (n4, n6, _) =
            reply_parts(&exchange(&v6, to6, &find("4:wantl2:n42:n6e")).await.unwrap());
        assert!(n4.is_some_and(|n| n % 26 == 0) && n6.is_some_and(|n| n % 38 == 0));
        let (n4, n6, _) = reply_parts(&exchange(&v6, to6, &find("")).await.unwrap());
        assert!(n4.is_none() && n6.is_some(), "no want over IPv6: nodes6 only");

        // Announce from each raw socket (implied port) to nodes[0], then
        // read the values back.
        let gp = |want: &str| {
            format!(
                "d1:ad2:id20:abcdefghij01234567899:info_hash20:{}{want}e1:q9:get_peers1:t2:bb1:y1:qe",
                std::str::from_utf8(&[b'z'; 20]).unwrap()
            )
            .into_bytes()
        };
        let token_of = |raw: &[u8]| -> Vec<u8> {
            let v = btfs::bencode::decode(raw, Default::default()).unwrap();
            v.get(b"r").unwrap().get(b"token").unwrap().as_bytes().unwrap().to_vec()
        };
        for (sock, to) in [(&v4, to4), (&v6, to6)] {
            let t = token_of(&exchange(sock, to, &gp("")).await.unwrap());
            let mut ann = format!(
                "d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:{}4:porti1e5:token{}:",
                std::str::from_utf8(&[b'z'; 20]).unwrap(),
                t.len()
            )
            .into_bytes();
            ann.extend_from_slice(&t);
            ann.extend_from_slice(b"e1:q13:announce_peer1:t2:cc1:y1:qe");
            let r = exchange(sock, to, &ann).await.unwrap();
            assert!(r.windows(4).any(|w| w == b"1:rd"), "{}", String::from_utf8_lossy(&r));
        }
        // Over IPv4: 6-byte values only; over IPv6: 18-byte values only,
        // whatever `want` says (it governs nodes only).
        let (_, _, vals) = reply_parts(&exchange(&v4, to4, &gp("4:wantl2:n42:n6e")).await.unwrap());
        assert_eq!(vals, vec![6], "IPv4 get_peers values");
        let (_, _, vals) = reply_parts(&exchange(&v6, to6, &gp("4:wantl2:n4e")).await.unwrap());
        assert_eq!(vals, vec![18], "IPv6 get_peers values");
        // And our lookup merges both stores: the peer under both families.
        let mut rx = nodes[5].get_peers(InfoHash([b'z'; 20]));
        let mut got = Vec::new();
        while let Some(b) = rx.recv().await {
            got.extend(b);
        }
        assert!(got.contains(&v4.local_addr().unwrap()), "{got:?}");
        assert!(got.contains(&v6.local_addr().unwrap()), "{got:?}");
        for d in &nodes {
            d.shutdown().await;
        }
    });
}
