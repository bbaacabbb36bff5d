//! MSE/PE (`btfs::peer::mse`) against a real, independent implementation:
//! Debian's python3-libtorrent 2.0.8 (`mountpoint-tests/lt/lt_mse_peer.py`),
//! with encryption forced (`out_enc_policy = in_enc_policy = 0`,
//! `allowed_enc_level = 2`), with its defaults, and with encryption
//! disabled. Plus the RC4 stream's throughput over loopback TCP.
//!
//! Every test opens sockets, so it runs inside a network namespace of its
//! own: when `BTFS_NETNS` is not set, the test re-executes itself under
//! `unshare --net --mount` (root needed; without root it prints a loud SKIP,
//! or fails when `CI=true`). Inside, only loopback exists.
//!
//! Run: `cargo test --test mse_libtorrent -- --nocapture`
//! (throughput figures: add `--release`).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use btfs::peer::PeerConn;
use btfs::peer::mse::{
    self, Crypto, Inbound, MseError, MseStream, Policy, SkeyTable, Step, Timeouts,
};
use btfs::peer::wire::{
    BLOCK_SIZE, Bitfield, BlockRequest, DEFAULT_MAX_MESSAGE_LEN, Handshake, Message,
};
use btfs::{InfoHash, PeerId};

/// Runs the calling test inside its own network namespace. Returns true when
/// the caller is inside and should run its body; false when this process
/// only supervised (or skipped) the run.
fn in_own_netns(test_name: &str) -> bool {
    if std::env::var_os("BTFS_NETNS").is_some() {
        let st = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("run ip");
        assert!(st.success(), "ip link set lo up failed");
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test_name}: needs root for unshare --net --mount");
        }
        let _ = writeln!(
            std::io::stderr(),
            "\n***** SKIP {test_name}: not root, cannot unshare a network namespace *****\n"
        );
        return false;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let st = Command::new("unshare")
        .args(["--net", "--mount", "--"])
        .arg(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env("BTFS_NETNS", "1")
        .status()
        .expect("run unshare");
    assert!(
        st.success(),
        "{test_name} failed inside its network namespace"
    );
    false
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

const STEP: Duration = Duration::from_secs(20);

fn timeouts() -> Timeouts {
    Timeouts {
        step: Duration::from_secs(5),
        total: Duration::from_secs(10),
    }
}

/// The python3-libtorrent seeder; stdin closed (and the process killed, by
/// its pid, if it lingers) on drop.
struct LtPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
    port: u16,
    info_hash: InfoHash,
    piece_length: u32,
    num_pieces: u32,
    data: Vec<u8>,
}

impl LtPeer {
    fn start(enc: &str) -> LtPeer {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/mountpoint-tests/lt/lt_mse_peer.py"
        );
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(dir.path())
            .arg(enc)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3 libtorrent peer");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let v = read_json(&mut stdout);
        assert!(v.get("error").is_none(), "libtorrent peer failed: {v}");
        eprintln!("libtorrent ({enc}): {v}");
        let data = std::fs::read(v["data_path"].as_str().unwrap()).unwrap();
        assert_eq!(data.len() as u64, v["total_size"].as_u64().unwrap());
        LtPeer {
            port: v["port"].as_u64().unwrap() as u16,
            info_hash: InfoHash::from_hex(v["info_hash"].as_str().unwrap()).unwrap(),
            piece_length: v["piece_length"].as_u64().unwrap() as u32,
            num_pieces: v["num_pieces"].as_u64().unwrap() as u32,
            data,
            child,
            stdin,
            stdout,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn command(&mut self, cmd: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
    }

    /// libtorrent's view of the peer connected from local port `port`:
    /// `(rc4_encrypted, plaintext_encrypted)` flags of its `peer_info`.
    fn peer_flags(&mut self, port: u16) -> Option<(bool, bool)> {
        self.command("peers");
        let v = read_json(&mut self.stdout);
        v["peers"].as_array().unwrap().iter().find_map(|p| {
            (p["port"].as_u64() == Some(u64::from(port))).then(|| {
                (
                    p["rc4"].as_bool().unwrap(),
                    p["plaintext_encrypted"].as_bool().unwrap(),
                )
            })
        })
    }
}

impl Drop for LtPeer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_json(r: &mut impl BufRead) -> Value {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// Peer wire messages over any stream (here an [`MseStream`]).
struct Framed<S> {
    stream: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    fn new(stream: S) -> Framed<S> {
        Framed {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let k = timeout(STEP, self.stream.read_buf(&mut self.buf))
                .await
                .expect("bytes in time")
                .unwrap();
            assert!(k > 0, "peer closed");
        }
        self.buf.split_to(n).to_vec()
    }

    async fn handshake(&mut self) -> Handshake {
        let raw: [u8; 68] = self.read_exact(68).await.try_into().unwrap();
        Handshake::decode(&raw).expect("a BitTorrent handshake")
    }

    async fn read_message(&mut self) -> Message {
        loop {
            if let Some(n) = Message::check(&self.buf, DEFAULT_MAX_MESSAGE_LEN).unwrap() {
                return Message::parse(self.buf.split_to(n).freeze()).unwrap();
            }
            let k = timeout(STEP, self.stream.read_buf(&mut self.buf))
                .await
                .expect("message in time")
                .unwrap();
            assert!(k > 0, "peer closed");
        }
    }

    async fn send(&mut self, m: &Message) {
        self.stream.write_all(&m.encode()).await.unwrap();
        self.stream.flush().await.unwrap();
    }
}

/// After the BitTorrent handshakes: the seed's bitfield (all pieces), then
/// interested → unchoke → one 16 KiB block of piece 1, checked against the
/// file's bytes.
async fn bitfield_and_one_block<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Framed<S>,
    lt: &LtPeer,
) {
    let bits = loop {
        match conn.read_message().await {
            Message::Bitfield(b) => break b,
            Message::Extended { .. } | Message::KeepAlive | Message::Unknown { .. } => {}
            other => panic!("unexpected message before the bitfield: {other:?}"),
        }
    };
    let bits = Bitfield::from_bytes(&bits, lt.num_pieces).unwrap();
    assert!(bits.all(), "libtorrent seeds every piece: {bits:?}");
    conn.send(&Message::Interested).await;
    loop {
        match conn.read_message().await {
            Message::Unchoke => break,
            Message::Choke | Message::Have(_) | Message::KeepAlive => {}
            Message::Extended { .. } | Message::Unknown { .. } | Message::Port(_) => {}
            other => panic!("unexpected message before unchoke: {other:?}"),
        }
    }
    let req = BlockRequest {
        index: 1,
        begin: BLOCK_SIZE,
        length: BLOCK_SIZE,
    };
    conn.send(&Message::Request(req)).await;
    loop {
        match conn.read_message().await {
            Message::Piece { index, begin, data } => {
                assert_eq!((index, begin), (1, BLOCK_SIZE));
                let off = (lt.piece_length + BLOCK_SIZE) as usize;
                assert!(
                    data[..] == lt.data[off..off + BLOCK_SIZE as usize],
                    "block bytes equal the file's"
                );
                break;
            }
            Message::Choke => panic!("choked"),
            _ => {}
        }
    }
}

/// (a) Our initiator dials libtorrent: the MSE handshake with our
/// BitTorrent handshake as the initial payload, libtorrent's handshake for
/// the same info-hash through the stream, its bitfield, and one block
/// checked against the file. Against libtorrent forced to RC4, and against
/// its defaults (which select plaintext from our `prefer` offer, RC4 from
/// `require`); libtorrent's own peer list confirms the method.
#[test]
fn our_initiator_downloads_from_libtorrent() {
    if !in_own_netns("our_initiator_downloads_from_libtorrent") {
        return;
    }
    let mut lt = LtPeer::start("forced");
    let rt = runtime();
    let cases = [
        ("forced", Policy::Require, Crypto::Rc4),
        ("forced", Policy::Prefer, Crypto::Rc4),
        ("enabled", Policy::Prefer, Crypto::Plaintext),
        ("enabled", Policy::Require, Crypto::Rc4),
    ];
    let mut current = "forced";
    for (enc, policy, want) in cases {
        if enc != current {
            lt.command(&format!("enc {enc}"));
            // settings are applied by the session thread
            std::thread::sleep(Duration::from_millis(500));
            current = enc;
        }
        let ih = lt.info_hash;
        let (mut conn, local_port) = rt.block_on(async {
            let tcp = TcpStream::connect(lt.addr()).await.unwrap();
            let local_port = tcp.local_addr().unwrap().port();
            let ours = Handshake::new(ih, PeerId::generate().0).encode();
            let t0 = Instant::now();
            let s = mse::initiate(tcp, ih, policy, &ours, timeouts())
                .await
                .unwrap_or_else(|e| panic!("libtorrent {enc}, we {policy}: {e}"));
            eprintln!(
                "libtorrent {enc}, we {policy}: MSE handshake in {:?}, {}",
                t0.elapsed(),
                s.crypto()
            );
            assert_eq!(s.crypto(), want, "libtorrent {enc}, we {policy}");
            let mut conn = Framed::new(s);
            let theirs = conn.handshake().await;
            assert_eq!(theirs.info_hash, ih);
            assert!(theirs.peer_id.starts_with(b"-LT"), "{:?}", theirs.peer_id);
            bitfield_and_one_block(&mut conn, &lt).await;
            (conn, local_port)
        });
        let flags = lt.peer_flags(local_port).expect("libtorrent lists us");
        match want {
            Crypto::Rc4 => assert_eq!(flags, (true, false), "libtorrent sees RC4"),
            Crypto::Plaintext => assert_eq!(
                flags,
                (false, true),
                "libtorrent sees an obfuscated handshake, plaintext body"
            ),
        }
        rt.block_on(async { conn.stream.shutdown().await.unwrap() });
    }
}

/// (b) libtorrent, forced to RC4, dials our listener (`connect_peer`). Our
/// responder matches its obfuscated SKEY among six served info-hashes,
/// returns its BitTorrent handshake from the initial payload, and the RC4
/// stream carries our handshake, its bitfield and a block. Meanwhile three
/// hostile connections to the same listener (endless garbage, half a
/// handshake then silence, a plaintext handshake under `require`) are each
/// dropped within the timeouts without disturbing it.
#[test]
fn libtorrent_dials_our_mse_listener() {
    if !in_own_netns("libtorrent_dials_our_mse_listener") {
        return;
    }
    let mut lt = LtPeer::start("forced");
    let rt = runtime();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut table: SkeyTable = (1..=5u8).map(|i| InfoHash([i; 20])).collect();
    table.insert(lt.info_hash);
    let table = std::sync::Arc::new(table);
    let t = Timeouts {
        step: Duration::from_secs(2),
        total: Duration::from_secs(4),
    };

    // the listener: one task per connection, results by channel
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let accept_loop = {
        let table = table.clone();
        rt.spawn(async move {
            loop {
                let (stream, from) = listener.accept().await.unwrap();
                let table = table.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let t0 = Instant::now();
                    let r =
                        mse::accept_inbound(stream, |h| table.find(h), Policy::Require, t).await;
                    let _ = tx.send((from.port(), r, t0.elapsed()));
                });
            }
        })
    };

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let hostile = rt.block_on(async {
        // endless garbage
        let mut garbage = TcpStream::connect(addr).await.unwrap();
        let g_port = garbage.local_addr().unwrap().port();
        let spew = tokio::spawn(async move {
            let chunk = vec![0xA5u8; 4096];
            let mut sent = 0usize;
            while garbage.write_all(&chunk).await.is_ok() && sent < (256 << 20) {
                sent += chunk.len();
            }
            sent
        });
        // a valid public key, then silence
        let mut half = TcpStream::connect(addr).await.unwrap();
        let h_port = half.local_addr().unwrap().port();
        half.write_all(mse::crypto::DhKey::generate().unwrap().public_key())
            .await
            .unwrap();
        // a plaintext handshake
        let mut plain = TcpStream::connect(addr).await.unwrap();
        let p_port = plain.local_addr().unwrap().port();
        plain
            .write_all(&Handshake::new(InfoHash([1; 20]), [0; 20]).encode())
            .await
            .unwrap();
        (g_port, h_port, p_port, spew, half, plain)
    });
    let (g_port, h_port, p_port, spew, _half, _plain) = hostile;

    lt.command(&format!("connect {port}"));
    let mut conn = None;
    let mut hostile_seen = 0;
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while conn.is_none() || hostile_seen < 3 {
            let left = deadline.saturating_duration_since(Instant::now());
            let (from, r, took) = timeout(left, rx.recv())
                .await
                .expect("libtorrent's connection and the hostile ones end in time")
                .unwrap();
            eprintln!(
                "connection from port {from}: {:?} after {took:?}",
                r.as_ref().map(|_| ())
            );
            assert!(took <= t.total + Duration::from_millis(500), "{took:?}");
            if from == g_port {
                assert!(matches!(r, Err(MseError::SyncHashNotFound)), "{r:?}");
                hostile_seen += 1;
            } else if from == h_port {
                assert!(matches!(r, Err(MseError::Timeout(Step::SyncHash))), "{r:?}");
                assert!(took >= t.step);
                hostile_seen += 1;
            } else if from == p_port {
                assert!(matches!(r, Err(MseError::PlaintextRefused)), "{r:?}");
                hostile_seen += 1;
            } else {
                match r {
                    Ok(Inbound::Encrypted(acc)) => conn = Some(acc),
                    other => panic!("libtorrent's connection: {other:?}"),
                }
            }
        }
    });
    let sent = rt.block_on(spew).unwrap();
    assert!(
        sent < (256 << 20),
        "the garbage connection was closed (it sent {sent} bytes)"
    );
    let acc = conn.unwrap();
    assert_eq!(acc.info_hash, lt.info_hash, "SKEY matched among six");
    assert_eq!(acc.stream.crypto(), Crypto::Rc4);
    assert_eq!(
        acc.initial_payload.len(),
        68,
        "libtorrent sends its handshake as IA"
    );
    let theirs = Handshake::decode(acc.initial_payload[..].try_into().unwrap()).unwrap();
    assert_eq!(theirs.info_hash, lt.info_hash);
    assert!(theirs.peer_id.starts_with(b"-LT"));
    // the connection stays open until libtorrent has been asked about it
    let _conn = rt.block_on(async {
        let (stream, ih) = acc.into_stream();
        let mut conn = Framed::new(stream);
        // the initial payload was put back: the handshake reads again
        assert_eq!(conn.handshake().await, theirs);
        conn.stream
            .write_all(&Handshake::new(ih, PeerId::generate().0).encode())
            .await
            .unwrap();
        bitfield_and_one_block(&mut conn, &lt).await;
        conn
    });
    // libtorrent lists us by the address it dialled
    assert_eq!(
        lt.peer_flags(port),
        Some((true, false)),
        "libtorrent sees RC4"
    );
    accept_loop.abort();
}

/// (c) libtorrent with encryption disabled (`in_enc_policy = 2`) drops our
/// MSE attempt before answering: the error says a plaintext retry may
/// help, and the plaintext handshake on a new connection works.
#[test]
fn plaintext_fallback_when_libtorrent_refuses_mse() {
    if !in_own_netns("plaintext_fallback_when_libtorrent_refuses_mse") {
        return;
    }
    let lt = LtPeer::start("disabled");
    let rt = runtime();
    rt.block_on(async {
        for policy in [Policy::Prefer, Policy::Require] {
            let tcp = TcpStream::connect(lt.addr()).await.unwrap();
            let ours = Handshake::new(lt.info_hash, PeerId::generate().0).encode();
            let t0 = Instant::now();
            let e = mse::initiate(tcp, lt.info_hash, policy, &ours, timeouts())
                .await
                .expect_err("libtorrent refuses MSE");
            eprintln!("we {policy}: {e} after {:?}", t0.elapsed());
            assert!(e.retry_plaintext(), "{e:?}");
            assert!(t0.elapsed() < Duration::from_secs(2), "fails fast");
            assert_eq!(policy.falls_back_to_plaintext(), policy == Policy::Prefer);
        }
        let (_conn, hs) = PeerConn::connect(lt.addr(), lt.info_hash, PeerId::generate().0, STEP)
            .await
            .expect("plaintext handshake after the MSE refusal");
        assert_eq!(hs.info_hash, lt.info_hash);
    });
}

/// Throughput of the RC4 stream over loopback TCP, next to the same
/// transfer in plaintext (raw `TcpStream`, and `MseStream::passthrough`),
/// plus the cipher alone. Prints MB/s (10^6 bytes per second of wall time)
/// and CPU seconds per GiB (user + system time of this process, both ends
/// included, so the figure holds on a loaded machine); build with
/// `--release` for meaningful figures. Every received byte is compared.
#[test]
fn rc4_stream_throughput_loopback() {
    if !in_own_netns("rc4_stream_throughput_loopback") {
        return;
    }
    let total: usize = if cfg!(debug_assertions) {
        32 << 20
    } else {
        512 << 20
    };
    let rt = runtime();
    // the cipher alone, in place, 64 MiB, on this thread
    let mut c = mse::crypto::Rc4Drop::new(&[7; 20]);
    let mut buf = vec![0u8; 64 << 20];
    let (t0, cpu0) = (Instant::now(), thread_cpu());
    c.apply(&mut buf);
    let gib = buf.len() as f64 / f64::from(1u32 << 30);
    let cipher = (
        buf.len() as f64 / t0.elapsed().as_secs_f64() / 1e6,
        (thread_cpu() - cpu0) / gib,
    );
    drop(buf);

    let mut rows = vec![("RC4 cipher alone, one thread".to_string(), cipher)];
    for mode in ["raw TcpStream", "MseStream plaintext", "MseStream RC4"] {
        let cpu0 = process_cpu();
        let mbps = rt.block_on(transfer(mode, total));
        let cpu = (process_cpu() - cpu0) / (total as f64 / f64::from(1u32 << 30));
        rows.push((format!("{mode}, loopback TCP"), (mbps, cpu)));
    }
    eprintln!(
        "\nthroughput, {} MiB one way, {} build:",
        total >> 20,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for (what, (mbps, cpu)) in &rows {
        eprintln!("  {what:<36} {mbps:>7.0} MB/s  {cpu:>6.2} CPU s/GiB");
    }
}

/// CPU seconds (user + system) used by this process so far.
fn process_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU seconds used by the calling thread so far.
fn thread_cpu() -> f64 {
    // SAFETY: clock_gettime fills the struct it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Sends `total` bytes one way over loopback TCP in 64 KiB writes and
/// returns MB/s; the receiver checks every byte.
async fn transfer(mode: &str, total: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ih = InfoHash([0x42; 20]);
    let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (a, b) = (a.unwrap(), b.unwrap().0);
    let (mut tx, mut rx): (Box<dyn Rw>, Box<dyn Rw>) = match mode {
        "raw TcpStream" => (Box::new(a), Box::new(b)),
        "MseStream plaintext" => (
            Box::new(MseStream::passthrough(a, Vec::new())),
            Box::new(MseStream::passthrough(b, Vec::new())),
        ),
        _ => {
            let table: SkeyTable = [ih].into_iter().collect();
            let (ra, rb) = tokio::join!(
                mse::initiate(a, ih, Policy::Require, &[], timeouts()),
                mse::accept(b, &[], |h| table.find(h), Policy::Require, timeouts())
            );
            (Box::new(ra.unwrap()), Box::new(rb.unwrap().stream))
        }
    };
    let mut pattern = vec![0u8; 1 << 20];
    getrandom::fill(&mut pattern).unwrap();
    let pattern = std::sync::Arc::new(pattern);
    let p2 = pattern.clone();
    let t0 = Instant::now();
    let sender = tokio::spawn(async move {
        let mut sent = 0;
        while sent < total {
            let off = sent % p2.len();
            let n = (64 << 10).min(p2.len() - off).min(total - sent);
            tx.write_all(&p2[off..off + n]).await.unwrap();
            sent += n;
        }
        tx.flush().await.unwrap();
        tx.shutdown().await.unwrap();
    });
    let receiver = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0;
        loop {
            let n = rx.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            let mut done = 0;
            while done < n {
                let off = (got + done) % pattern.len();
                let k = (n - done).min(pattern.len() - off);
                assert!(buf[done..done + k] == pattern[off..off + k], "byte {got}");
                done += k;
            }
            got += n;
        }
        got
    });
    sender.await.unwrap();
    let got = receiver.await.unwrap();
    assert_eq!(got, total);
    total as f64 / t0.elapsed().as_secs_f64() / 1e6
}

trait Rw: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Rw for T {}
