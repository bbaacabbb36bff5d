//! Hostile input against our uTP listener (`btfs::utp`, BEP 29; issue 16
//! part 6): garbage datagrams and hostile packets inside a live connection
//! never panic and never stop the socket from serving; a flood of `ST_SYN`s
//! from many source addresses costs bounded memory and bounded state per
//! remote IP; and the memory of an established connection, measured.
//!
//! Every test runs inside its own network namespace (`support::in_netns`);
//! the flood's sources are addresses of `127.0.0.0/8` on that namespace's
//! loopback. Numbers are printed as `UTP-RESULT ...` lines.
//!
//! Run: `cargo test --test utp_hostile -- --nocapture --test-threads=1`

#[path = "../mountpoint-tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdp};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use btfs::utp::{UtpConfig, UtpSocket};
use support::in_netns;

fn runtime() -> tokio::runtime::Runtime {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Panics anywhere in the process (the crate's tasks swallow theirs into
/// a `JoinError` nobody reads, so count them from the hook).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        prev(info);
    }));
}

/// Resident set size of this process in KiB (`VmRSS`), or its peak (`VmHWM`).
fn rss_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A uTP packet (BEP 29 "header format", version 1): `ty` 0 ST_DATA,
/// 1 ST_FIN, 2 ST_STATE, 3 ST_RESET, 4 ST_SYN; `exts` is a list of
/// (type, bytes) extensions chained after the header.
fn packet(
    ty: u8,
    conn_id: u16,
    seq: u16,
    ack: u16,
    wnd: u32,
    exts: &[(u8, &[u8])],
    payload: &[u8],
) -> Vec<u8> {
    let mut p = vec![(ty << 4) | 1, exts.first().map_or(0, |e| e.0)];
    p.extend_from_slice(&conn_id.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&wnd.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ack.to_be_bytes());
    for (i, (_, data)) in exts.iter().enumerate() {
        p.push(exts.get(i + 1).map_or(0, |e| e.0));
        p.push(data.len() as u8);
        p.extend_from_slice(data);
    }
    p.extend_from_slice(payload);
    p
}

/// xorshift64* for reproducible garbage.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Hand-crafted bad datagrams: short, wrong version, unknown type,
/// extension chains that overrun or loop, payloads where none belong.
fn crafted() -> Vec<Vec<u8>> {
    let mut v = vec![
        vec![],
        vec![0x41],
        vec![0x41; 19],
        packet(4, 1, 1, 0, 0, &[], &[])
            .into_iter()
            .map(|b| b ^ 0x01)
            .collect(), // version 0
        {
            let mut p = packet(4, 1, 1, 0, 0, &[], &[]);
            p[0] = 0x51; // type 5
            p
        },
        {
            let mut p = packet(4, 1, 1, 0, 0, &[], &[]);
            p[0] = 0xf1; // type 15
            p
        },
        packet(4, 7, 7, 0, 0, &[], b"SYN with a payload"),
        packet(0, 9, 1, 0, 0, &[], &[]), // ST_DATA without payload
        packet(2, 9, 1, 0, 0, &[], b"ST_STATE with a payload"),
        packet(1, 9, 1, 0, 0, &[], &[]),
        packet(3, 9, 1, 0, 0, &[], &[]),
        packet(4, 11, 1, 0, u32::MAX, &[(1, &[0xff; 255])], &[]), // huge SACK
        packet(4, 12, 1, 0, 0, &[(1, &[])], &[]),                 // empty SACK
        packet(4, 13, 1, 0, 0, &[(3, &[1, 2])], &[]),             // short close reason
        packet(4, 14, 1, 0, 0, &[(200, &[0; 10])], &[]),          // unknown extension
    ];
    // extension header promising more bytes than the datagram has
    let mut p = packet(4, 15, 1, 0, 0, &[], &[]);
    p[1] = 1;
    p.extend_from_slice(&[0, 200, 1, 2, 3]);
    v.push(p);
    // a chain of 600 empty extensions (1220 bytes)
    let mut p = packet(4, 16, 1, 0, 0, &[], &[]);
    p[1] = 2;
    for i in 0..600 {
        p.extend_from_slice(&[if i < 599 { 2 } else { 0 }, 0]);
    }
    v.push(p);
    v
}

fn fuzz_corpus() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/utp_packet");
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// A real connection to `to` from a fresh socket: sends `n` bytes, reads
/// them back (the other side runs [`echo_server`]) and compares.
async fn echo_roundtrip(to: SocketAddr, n: usize) {
    let client = UtpSocket::bind("127.0.0.1:0".parse().unwrap(), UtpConfig::default())
        .await
        .unwrap();
    let mut s = client
        .connect(to, Duration::from_secs(10))
        .await
        .expect("a real peer still connects");
    let data = Rng(n as u64 | 1).bytes(n);
    let (mut r, mut w) = tokio::io::split(&mut s);
    let d = data.clone();
    let writer = async move {
        w.write_all(&d).await.unwrap();
        w.flush().await.unwrap();
    };
    let reader = async move {
        let mut back = vec![0u8; n];
        r.read_exact(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("echo within 60 s");
    assert!(back == data, "echoed bytes differ");
}

/// Accepts connections and echoes each one's bytes back.
fn echo_server(sock: Arc<UtpSocket>) {
    tokio::spawn(async move {
        while let Ok(s) = sock.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
}

/// Garbage datagrams (crafted, the fuzz corpus, 20 000 random ones, half
/// of them with a plausible first byte) from 16 source addresses, then
/// hostile packets inside a connection we opened by hand (data far out of
/// window, acks of data never sent, bad SACKs, window 0, duplicate FINs,
/// a reset): no panic anywhere, and afterwards a real peer still gets a
/// connection that moves 1 MiB both ways intact.
#[test]
fn garbage_never_breaks_the_listener() {
    if !in_netns("garbage_never_breaks_the_listener") {
        return;
    }
    count_panics();
    let rt = runtime();
    let sock = Arc::new(
        rt.block_on(UtpSocket::bind(
            "127.0.0.1:0".parse().unwrap(),
            UtpConfig::default(),
        ))
        .unwrap(),
    );
    let to = sock.local_addr();
    let _g = rt.enter();
    echo_server(sock.clone());

    let mut rng = Rng(0xdead_beef_0bad_f00d);
    let mut sent = 0;
    let sources: Vec<StdUdp> = (0..16)
        .map(|_| StdUdp::bind("127.0.0.1:0").unwrap())
        .collect();
    let mut all = crafted();
    all.extend(fuzz_corpus());
    for i in 0..20_000 {
        let len = (rng.next() % 1500) as usize;
        let mut d = rng.bytes(len);
        if i % 2 == 0 && !d.is_empty() {
            d[0] = (((rng.next() % 5) as u8) << 4) | 1;
            if d.len() > 1 {
                d[1] = (rng.next() % 4) as u8;
            }
        }
        all.push(d);
    }
    for (i, d) in all.iter().enumerate() {
        sources[i % sources.len()].send_to(d, to).unwrap();
        sent += 1;
        if i % 500 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    // a connection by hand: SYN (our recv id R, seq S), ST_STATE back
    let raw = StdUdp::bind("127.0.0.1:0").unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (r_id, s_seq) = (0x4000u16, 100u16);
    raw.send_to(&packet(4, r_id, s_seq, 0, 1 << 20, &[], &[]), to)
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = loop {
        let (n, from) = raw.recv_from(&mut buf).expect("ST_STATE for our SYN");
        if from == to && n >= 20 && buf[0] >> 4 == 2 {
            break (n, from);
        }
    };
    assert_eq!(
        u16::from_be_bytes([buf[2], buf[3]]),
        r_id,
        "answer carries our recv id"
    );
    assert_eq!(
        u16::from_be_bytes([buf[18], buf[19]]),
        s_seq,
        "answer acks our SYN"
    );
    let their_seq = u16::from_be_bytes([buf[16], buf[17]]);
    let _ = n;
    let send_id = r_id.wrapping_add(1);
    let ack = their_seq.wrapping_sub(1);
    let s1 = s_seq.wrapping_add(1);
    let hostile = [
        packet(0, send_id, s1, ack, 1 << 20, &[], b"hello"), // legit first data
        packet(
            0,
            send_id,
            s1.wrapping_add(30_000),
            ack,
            1 << 20,
            &[],
            b"far ahead",
        ),
        packet(
            0,
            send_id,
            s1.wrapping_sub(30_000),
            ack,
            1 << 20,
            &[],
            b"far behind",
        ),
        packet(
            0,
            send_id,
            s1.wrapping_add(60),
            ack,
            1 << 20,
            &[],
            &[7u8; 1400],
        ),
        packet(2, send_id, s1, ack.wrapping_add(5000), 1 << 20, &[], &[]), // acks the future
        packet(2, send_id, s1, ack, 0, &[], &[]),                          // window 0
        packet(2, send_id, s1, ack, u32::MAX, &[(1, &[0xff; 32])], &[]),   // SACK of nothing sent
        packet(2, send_id, s1, ack, 1 << 20, &[(1, &[0xaa; 3])], &[]),     // odd SACK length
        packet(
            0,
            send_id,
            s1.wrapping_add(1),
            ack,
            1 << 20,
            &[],
            &[1u8; 1500],
        ),
        packet(4, send_id, s1, ack, 1 << 20, &[], &[]), // SYN inside
        packet(1, send_id, s1.wrapping_add(2), ack, 1 << 20, &[], &[]),
        packet(1, send_id, s1.wrapping_add(9), ack, 1 << 20, &[], &[]), // second FIN
        packet(
            0,
            send_id,
            s1.wrapping_add(3),
            ack,
            1 << 20,
            &[],
            b"after FIN",
        ),
        packet(3, send_id, 0, ack, 0, &[], &[]),
        packet(
            0,
            send_id,
            s1.wrapping_add(4),
            ack,
            1 << 20,
            &[],
            b"after RESET",
        ),
    ];
    for p in &hostile {
        raw.send_to(p, to).unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));

    rt.block_on(echo_roundtrip(to, 1 << 20));
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked");
    eprintln!("UTP-RESULT garbage: {sent} hostile datagrams, no panic, listener still serves");
}

/// 20 000 `ST_SYN`s from 1 000 source ports spread over 40 IPs
/// (127.0.0.2..=41) while we accept and hold every connection as a
/// session would: our RSS stays bounded, no IP ever has more than
/// `max_per_ip` live accepted connections, and once the flood stops a
/// real peer connects and moves 1 MiB.
#[test]
fn syn_flood_costs_bounded_memory() {
    if !in_netns("syn_flood_costs_bounded_memory") {
        return;
    }
    count_panics();
    let rt = runtime();
    let cfg = UtpConfig::default();
    let max_per_ip = cfg.max_per_ip;
    let sock = Arc::new(
        rt.block_on(UtpSocket::bind("127.0.0.1:0".parse().unwrap(), cfg))
            .unwrap(),
    );
    let to = sock.local_addr();
    let _g = rt.enter();
    // one accept loop counting live connections per IP
    let live: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    let peak_per_ip = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    {
        let (sock, live, peak, accepted) = (
            sock.clone(),
            live.clone(),
            peak_per_ip.clone(),
            accepted.clone(),
        );
        tokio::spawn(async move {
            while let Ok(mut s) = sock.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let ip = s.peer_addr().ip();
                {
                    let mut m = live.lock().unwrap();
                    let n = m.entry(ip).or_insert(0);
                    *n += 1;
                    peak.fetch_max(*n, Ordering::SeqCst);
                }
                let live = live.clone();
                tokio::spawn(async move {
                    // echo until EOF, or 5 s of silence (as a session's
                    // handshake deadline would drop a silent peer)
                    let mut b = vec![0u8; 1 << 16];
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await
                    {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                    drop(s);
                    *live.lock().unwrap().get_mut(&ip).unwrap() -= 1;
                });
            }
        });
    }
    rt.block_on(async {
        // warm up: one real connection through an echo on a second socket
        let echo = Arc::new(
            UtpSocket::bind("127.0.0.1:0".parse().unwrap(), UtpConfig::default())
                .await
                .unwrap(),
        );
        echo_server(echo.clone());
        echo_roundtrip(echo.local_addr(), 64 << 10).await;
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib("VmRSS:");

    let mut sources = Vec::new();
    for ip in 2..=41u8 {
        for _ in 0..25 {
            sources
                .push(StdUdp::bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, ip), 0))).unwrap());
        }
    }
    let mut rng = Rng(0x5111_f100d);
    let mut peak_rss = before;
    let t0 = std::time::Instant::now();
    for round in 0..20 {
        for s in &sources {
            let id = rng.next() as u16;
            let _ = s.send_to(&packet(4, id, rng.next() as u16, 0, 1 << 20, &[], &[]), to);
        }
        std::thread::sleep(Duration::from_millis(50));
        peak_rss = peak_rss.max(rss_kib("VmRSS:"));
        let _ = round;
    }
    let flood_secs = t0.elapsed().as_secs_f64();
    // half-open connections expire (SYN-ACK resent 5 times, 200 ms apart)
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(100));
        peak_rss = peak_rss.max(rss_kib("VmRSS:"));
    }
    let after = rss_kib("VmRSS:");
    rt.block_on(echo_roundtrip(to, 1 << 20));
    let accepted = accepted.load(Ordering::SeqCst);
    let peak_ip = peak_per_ip.load(Ordering::SeqCst);
    eprintln!(
        "UTP-RESULT syn flood: {} SYNs from {} sockets on 40 IPs in {flood_secs:.1} s; \
         RSS before {before} KiB, peak {peak_rss} KiB (+{} KiB), after {after} KiB; \
         {accepted} connections accepted, peak {peak_ip} live per IP",
        20 * sources.len(),
        sources.len(),
        peak_rss - before
    );
    assert!(
        peak_ip <= max_per_ip,
        "{peak_ip} live connections from one IP"
    );
    assert!(
        peak_rss - before < 64 * 1024,
        "a SYN flood grew RSS by {} KiB",
        peak_rss - before
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "something panicked");
}

/// Memory of established connections: 100 connections between two
/// sockets of this process, each having moved 256 KiB, all kept open;
/// RSS growth per connection is reported and bounded.
#[test]
fn memory_per_connection() {
    if !in_netns("memory_per_connection") {
        return;
    }
    const N: usize = 100;
    const BYTES: usize = 256 << 10;
    let rt = runtime();
    rt.block_on(async {
        let cfg = UtpConfig {
            max_per_ip: N + 1,
            accept_backlog: N + 1,
            ..UtpConfig::default()
        };
        let server = Arc::new(
            UtpSocket::bind("127.0.0.1:0".parse().unwrap(), cfg.clone())
                .await
                .unwrap(),
        );
        let client = UtpSocket::bind("127.0.0.1:0".parse().unwrap(), cfg)
            .await
            .unwrap();
        let to = server.local_addr();
        let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
        {
            let (server, held) = (server.clone(), held.clone());
            tokio::spawn(async move {
                let payload = vec![0x5au8; BYTES];
                while let Ok(mut s) = server.accept().await {
                    // the dialer speaks first, as in BitTorrent (the crate
                    // confirms an accepted connection on its first packet)
                    let mut hello = [0u8; 1];
                    s.read_exact(&mut hello).await.unwrap();
                    s.write_all(&payload).await.unwrap();
                    s.flush().await.unwrap();
                    held.lock().await.push(s);
                }
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = rss_kib("VmRSS:");
        let mut mine = Vec::new();
        for _ in 0..N {
            let mut s = client.connect(to, Duration::from_secs(10)).await.unwrap();
            s.write_all(b"!").await.unwrap();
            let mut buf = vec![0u8; BYTES];
            s.read_exact(&mut buf).await.unwrap();
            assert!(buf.iter().all(|&b| b == 0x5a));
            mine.push(s);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib("VmRSS:");
        let per = (after.saturating_sub(before)) as f64 / (2 * N) as f64;
        eprintln!(
            "UTP-RESULT memory: {N} connections (both ends in this process) after {} KiB each: \
             RSS {before} -> {after} KiB, {per:.0} KiB per connection end",
            BYTES >> 10
        );
        assert!(per < 2048.0, "{per} KiB per connection");
        drop(mine);
    });
}
