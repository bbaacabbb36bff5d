//! A bad-network relay for tests and benchmarks: forwards UDP datagrams or
//! TCP streams between a client and one target, adding one-way delay,
//! jitter, periodic stalls and (UDP only) random loss. This kernel has no
//! `netem` qdisc, so tests put this relay between two peers instead.
//!
//! Include it with `#[path = "relay/mod.rs"] mod relay;` (from a file
//! under `tests/`) and start it inside the test's network namespace:
//!
//! ```ignore
//! let profile = relay::Profile { delay_ms: 25, jitter_ms: 3, loss: 0.01, ..Default::default() };
//! let r = relay::Relay::udp("127.0.0.1:0".parse().unwrap(), target, profile);
//! // peers talk to r.addr() instead of target
//! eprintln!("{:?}", r.stats());
//! ```
//!
//! UDP: every new client address gets its own upstream socket (like a NAT),
//! so the target sees one distinct source per client and its answers go
//! back to the right client. TCP: every accepted connection is connected
//! to the target and both directions are pumped through the delay line.
//!
//! Each direction is a FIFO delay line (no reordering): a packet or chunk
//! leaves at `max(previous departure, arrival + delay + jitter)`. During a
//! stall (`stall_len_ms` out of every `stall_every_ms`) nothing leaves;
//! what arrived waits (nothing is dropped by a stall). A UDP line holds at
//! most `queue_packets` datagrams (tail drop past that, like a router); a
//! TCP line at most 64 chunks of 64 KiB (then reading stops, and TCP's own
//! flow control pushes back). The relay runs on its own thread and runtime,
//! so a busy test runtime does not disturb its timing, and stops on drop.

#![allow(dead_code)] // each test file uses a subset

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How the relay mistreats traffic. All delays are one way, per direction.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Base one-way delay in milliseconds (RTT adds both directions).
    pub delay_ms: u64,
    /// Extra delay drawn uniformly from `0..=jitter_ms` per packet/chunk.
    pub jitter_ms: u64,
    /// Probability in `0.0..=1.0` that a UDP datagram is dropped (TCP: unused).
    pub loss: f64,
    /// Period of the stalls in milliseconds; 0 = no stalls.
    pub stall_every_ms: u64,
    /// Length of each stall in milliseconds.
    pub stall_len_ms: u64,
    /// Most datagrams waiting in one UDP direction; more are dropped.
    pub queue_packets: usize,
    /// Seed of the loss and jitter generator (same seed, same choices).
    pub seed: u64,
}

impl Default for Profile {
    fn default() -> Profile {
        Profile {
            delay_ms: 0,
            jitter_ms: 0,
            loss: 0.0,
            stall_every_ms: 0,
            stall_len_ms: 0,
            queue_packets: 4096,
            seed: 0x5eed_1234_abcd_0001,
        }
    }
}

impl Profile {
    /// About 50 ms RTT (25 ms each way, up to 3 ms jitter) and 1 % loss:
    /// the path of issue 16's loss/delay test.
    pub fn wan_lossy() -> Profile {
        Profile {
            delay_ms: 25,
            jitter_ms: 3,
            loss: 0.01,
            ..Profile::default()
        }
    }
}

/// Counters, readable while the relay runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Datagrams (UDP) or chunks (TCP) delivered.
    pub forwarded: AtomicU64,
    /// Payload bytes delivered.
    pub bytes: AtomicU64,
    /// Datagrams dropped on purpose (loss).
    pub dropped_loss: AtomicU64,
    /// Datagrams dropped because a direction's queue was full.
    pub dropped_queue: AtomicU64,
    /// UDP client flows or TCP connections seen.
    pub flows: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub forwarded: u64,
    pub bytes: u64,
    pub dropped_loss: u64,
    pub dropped_queue: u64,
    pub flows: u64,
}

/// A running relay; stops (and closes its sockets) when dropped.
pub struct Relay {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    /// Relays UDP datagrams arriving at `listen` to `target`, and the
    /// target's answers back to each client.
    pub fn udp(listen: SocketAddr, target: SocketAddr, profile: Profile) -> Relay {
        Relay::start(listen, target, profile, true)
    }

    /// Relays TCP connections accepted at `listen` to `target`.
    pub fn tcp(listen: SocketAddr, target: SocketAddr, profile: Profile) -> Relay {
        Relay::start(listen, target, profile, false)
    }

    fn start(listen: SocketAddr, target: SocketAddr, profile: Profile, udp: bool) -> Relay {
        let stats = Arc::new(Stats::default());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let st = stats.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("relay runtime");
            rt.block_on(async move {
                let line = Line::new(profile, st);
                if udp {
                    let sock = UdpSocket::bind(listen).await.expect("relay: bind UDP");
                    addr_tx.send(sock.local_addr().unwrap()).unwrap();
                    tokio::select! {
                        _ = udp_main(Arc::new(sock), target, line) => {}
                        _ = stop_rx => {}
                    }
                } else {
                    let l = TcpListener::bind(listen).await.expect("relay: bind TCP");
                    addr_tx.send(l.local_addr().unwrap()).unwrap();
                    tokio::select! {
                        _ = tcp_main(l, target, line) => {}
                        _ = stop_rx => {}
                    }
                }
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("relay started");
        Relay {
            addr,
            stats,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Where clients send to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters so far.
    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            forwarded: s.forwarded.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            dropped_loss: s.dropped_loss.load(Ordering::Relaxed),
            dropped_queue: s.dropped_queue.load(Ordering::Relaxed),
            flows: s.flows.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The shared mistreatment: a seeded generator, the profile, the counters.
#[derive(Clone)]
struct Line {
    profile: Profile,
    rng: Arc<std::sync::Mutex<u64>>,
    stats: Arc<Stats>,
    epoch: Instant,
}

impl Line {
    fn new(profile: Profile, stats: Arc<Stats>) -> Line {
        Line {
            profile,
            rng: Arc::new(std::sync::Mutex::new(profile.seed | 1)),
            stats,
            epoch: Instant::now(),
        }
    }

    /// xorshift64*: a uniform u64.
    fn next(&self) -> u64 {
        let mut s = self.rng.lock().unwrap();
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn lose(&self) -> bool {
        self.profile.loss > 0.0
            && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < self.profile.loss
    }

    /// When something arriving now leaves, given the previous departure.
    fn departure(&self, prev: Instant) -> Instant {
        let p = &self.profile;
        let jitter = if p.jitter_ms > 0 {
            self.next() % (p.jitter_ms * 1000 + 1)
        } else {
            0
        };
        let mut at =
            Instant::now() + Duration::from_millis(p.delay_ms) + Duration::from_micros(jitter);
        if p.stall_every_ms > 0 && p.stall_len_ms > 0 {
            let ms = at.duration_since(self.epoch).as_millis() as u64;
            if ms % p.stall_every_ms < p.stall_len_ms {
                at =
                    self.epoch + Duration::from_millis(ms - ms % p.stall_every_ms + p.stall_len_ms);
            }
        }
        at.max(prev)
    }

    fn delivered(&self, bytes: usize) {
        self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// One UDP direction: datagrams with their departure times, sent in order.
struct UdpLine {
    tx: mpsc::Sender<(Instant, Vec<u8>)>,
    last: Instant,
}

impl UdpLine {
    fn spawn(line: &Line, out: Arc<UdpSocket>, dest: SocketAddr) -> UdpLine {
        let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(line.profile.queue_packets.max(1));
        let l = line.clone();
        tokio::spawn(async move {
            while let Some((at, data)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                if out.send_to(&data, dest).await.is_ok() {
                    l.delivered(data.len());
                }
            }
        });
        UdpLine {
            tx,
            last: Instant::now(),
        }
    }

    fn push(&mut self, line: &Line, data: Vec<u8>) {
        if line.lose() {
            line.stats.dropped_loss.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let at = line.departure(self.last);
        match self.tx.try_send((at, data)) {
            Ok(()) => self.last = at,
            Err(_) => {
                line.stats.dropped_queue.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Most UDP client flows one relay keeps; datagrams from further new
/// clients are dropped (counted as `dropped_queue`).
const MAX_FLOWS: usize = 1024;

async fn udp_main(listen: Arc<UdpSocket>, target: SocketAddr, line: Line) {
    // client address -> its client-to-target line (the upstream socket
    // lives in that line's sender task and in the answering task)
    let mut flows: HashMap<SocketAddr, UdpLine> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    loop {
        let Ok((n, client)) = listen.recv_from(&mut buf).await else {
            continue;
        };
        let flow = match flows.entry(client) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let up = match UdpSocket::bind(bind).await {
                    Ok(up) if v.key().port() != 0 && flows_len_ok(&line) => Arc::new(up),
                    _ => {
                        line.stats.dropped_queue.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                line.stats.flows.fetch_add(1, Ordering::Relaxed);
                // the answers: target -> upstream socket -> line -> client
                let mut back = UdpLine::spawn(&line, listen.clone(), client);
                let (u, l) = (up.clone(), line.clone());
                tokio::spawn(async move {
                    let mut b = vec![0u8; 65536];
                    while let Ok((n, from)) = u.recv_from(&mut b).await {
                        if from == target {
                            back.push(&l, b[..n].to_vec());
                        }
                    }
                });
                v.insert(UdpLine::spawn(&line, up, target))
            }
        };
        flow.push(&line, buf[..n].to_vec());
    }
}

/// Whether another UDP flow may start ([`MAX_FLOWS`]).
fn flows_len_ok(line: &Line) -> bool {
    (line.stats.flows.load(Ordering::Relaxed) as usize) < MAX_FLOWS
}

async fn tcp_main(listener: TcpListener, target: SocketAddr, line: Line) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        line.stats.flows.fetch_add(1, Ordering::Relaxed);
        let l = line.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::join!(tcp_pump(cr, sw, l.clone()), tcp_pump(sr, cw, l));
        });
    }
}

/// One TCP direction: read chunks, hold each until its departure, write.
/// EOF is passed on as a write shutdown once the data before it is out.
async fn tcp_pump(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    line: Line,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let l = line.clone();
    let writer = async move {
        while let Some((at, data)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if w.write_all(&data).await.is_err() {
                return;
            }
            l.delivered(data.len());
        }
        let _ = w.shutdown().await;
    };
    let reader = async move {
        let mut last = Instant::now();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            last = line.departure(last);
            if tx.send((last, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    tokio::join!(reader, writer);
}
