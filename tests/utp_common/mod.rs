//! Test-side BitTorrent peer over any byte stream (uTP here), and the
//! uTP-only python3-libtorrent peers of `mountpoint-tests/lt/lt_utp.py`.
//! Included by `tests/utp_libtorrent.rs` and `tests/utp_hostile.rs` with `#[path]`.
//!
//! The peer speaks just enough BEP 3 to move a whole torrent: handshake,
//! bitfield, interested/unchoke, request/piece, with the crate's codec
//! (`btfs::peer::wire`). `btfs::peer::PeerConn` is bound to `TcpStream`, so
//! the framing loop is written out here over `AsyncRead + AsyncWrite`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use sha1::Digest;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use btfs::InfoHash;
use btfs::peer::wire::{
    BLOCK_SIZE, Bitfield, BlockRequest, DEFAULT_MAX_MESSAGE_LEN, Handshake, Message,
};

use crate::support::{Child, PYTHON, piece_sha1s};

/// What a downloader needs to know about a torrent.
#[derive(Debug, Clone)]
pub struct TorrentShape {
    pub info_hash: InfoHash,
    pub piece_length: u32,
    pub num_pieces: u32,
    pub total: u64,
    pub piece_sha1: Vec<[u8; 20]>,
}

impl TorrentShape {
    pub fn piece_len(&self, i: u32) -> u32 {
        if i + 1 == self.num_pieces {
            (self.total - u64::from(i) * u64::from(self.piece_length)) as u32
        } else {
            self.piece_length
        }
    }

    /// Every block of the torrent, in order.
    pub fn blocks(&self) -> Vec<BlockRequest> {
        let mut out = Vec::new();
        for index in 0..self.num_pieces {
            let len = self.piece_len(index);
            let mut begin = 0;
            while begin < len {
                let length = BLOCK_SIZE.min(len - begin);
                out.push(BlockRequest {
                    index,
                    begin,
                    length,
                });
                begin += length;
            }
        }
        out
    }
}

/// A length-prefixed message reader/writer over any stream.
pub struct Framed<S> {
    pub s: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    pub fn new(s: S) -> Framed<S> {
        Framed {
            s,
            buf: BytesMut::with_capacity(1 << 17),
        }
    }

    /// Sends our handshake and reads theirs (68 bytes each way).
    pub async fn handshake(&mut self, ih: InfoHash, peer_id: [u8; 20]) -> Handshake {
        self.s
            .write_all(&Handshake::new(ih, peer_id).encode())
            .await
            .expect("write handshake");
        self.s.flush().await.expect("flush handshake");
        self.read_handshake().await
    }

    /// Reads the peer's 68-byte handshake.
    pub async fn read_handshake(&mut self) -> Handshake {
        while self.buf.len() < Handshake::LEN {
            assert!(
                self.fill().await.expect("read handshake"),
                "EOF in handshake"
            );
        }
        let mut raw = [0u8; Handshake::LEN];
        self.buf.copy_to_slice(&mut raw);
        Handshake::decode(&raw).expect("a BitTorrent handshake")
    }

    /// Reads more bytes; false at EOF.
    async fn fill(&mut self) -> std::io::Result<bool> {
        self.buf.reserve(1 << 16);
        Ok(self.s.read_buf(&mut self.buf).await? > 0)
    }

    /// A message already buffered, without reading.
    pub fn buffered(&mut self) -> Option<Message> {
        let n = Message::check(&self.buf, DEFAULT_MAX_MESSAGE_LEN).expect("valid frame")?;
        Some(Message::parse(self.buf.split_to(n).freeze()).expect("valid message"))
    }

    /// The next message; None at EOF or on a connection error.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(m) = self.buffered() {
                return Some(m);
            }
            match self.fill().await {
                Ok(true) => {}
                _ => return None,
            }
        }
    }

    pub async fn send(&mut self, msgs: &[Message]) {
        let mut out = BytesMut::new();
        for m in msgs {
            m.encode_into(&mut out);
        }
        self.s.write_all(&out).await.expect("write messages");
        self.s.flush().await.expect("flush");
    }
}

/// Downloads the whole torrent from a peer that has it, over `s` (already
/// connected): handshake, interested, wait for unchoke, then `depth`
/// requests in flight. Checks every piece's SHA-1; returns the bytes and
/// when the last block arrived (then sends `ST_FIN` / a TCP FIN).
pub async fn download<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    t: &TorrentShape,
    depth: usize,
) -> (Vec<u8>, std::time::Instant) {
    let mut f = Framed::new(s);
    let theirs = f.handshake(t.info_hash, btfs::PeerId::generate().0).await;
    assert_eq!(theirs.info_hash, t.info_hash);
    download_after_handshake(f, t, depth).await
}

/// [`download`] on a stream whose handshakes were already exchanged
/// (messages the peer sent since are still buffered in `f`).
pub async fn download_after_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut f: Framed<S>,
    t: &TorrentShape,
    depth: usize,
) -> (Vec<u8>, std::time::Instant) {
    f.send(&[Message::Interested]).await;
    loop {
        match f.next().await.expect("unchoke before EOF") {
            Message::Unchoke => break,
            Message::Choke | Message::Bitfield(_) | Message::Have(_) => {}
            Message::Extended { .. } | Message::Unknown { .. } | Message::KeepAlive => {}
            other => panic!("unexpected before unchoke: {other:?}"),
        }
    }
    let blocks = t.blocks();
    let mut data = vec![0u8; t.total as usize];
    let mut next = 0;
    let mut got = 0;
    let first: Vec<Message> = blocks[..depth.min(blocks.len())]
        .iter()
        .map(|b| Message::Request(*b))
        .collect();
    next += first.len();
    f.send(&first).await;
    while got < blocks.len() {
        let msg = tokio::time::timeout(Duration::from_secs(60), f.next())
            .await
            .expect("a message within 60 s")
            .expect("connection open until the last block");
        let Message::Piece {
            index,
            begin,
            data: block,
        } = msg
        else {
            continue;
        };
        let at = u64::from(index) * u64::from(t.piece_length) + u64::from(begin);
        data[at as usize..at as usize + block.len()].copy_from_slice(&block);
        got += 1;
        // answer every buffered block with one batch of new requests
        let mut more = Vec::new();
        if next < blocks.len() {
            more.push(Message::Request(blocks[next]));
            next += 1;
        }
        while let Some(m) = f.buffered() {
            if let Message::Piece {
                index,
                begin,
                data: block,
            } = m
            {
                let at = u64::from(index) * u64::from(t.piece_length) + u64::from(begin);
                data[at as usize..at as usize + block.len()].copy_from_slice(&block);
                got += 1;
                if next < blocks.len() {
                    more.push(Message::Request(blocks[next]));
                    next += 1;
                }
            }
        }
        if !more.is_empty() {
            f.send(&more).await;
        }
    }
    let done = std::time::Instant::now();
    for i in 0..t.num_pieces {
        let at = i as usize * t.piece_length as usize;
        let piece = &data[at..at + t.piece_len(i) as usize];
        assert_eq!(
            <[u8; 20]>::from(sha1::Sha1::digest(piece)),
            t.piece_sha1[i as usize],
            "piece {i} hash"
        );
    }
    // ST_FIN, so the peer drops the connection now (dropping the socket
    // would kill it silently)
    let _ = f.s.shutdown().await;
    (data, done)
}

/// Serves `data` (the whole torrent) to one peer over `s` until it closes:
/// answers the handshake, sends a full bitfield, unchokes when interested,
/// answers requests. Returns the payload bytes sent.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    t: &TorrentShape,
    data: Arc<Vec<u8>>,
) -> u64 {
    let mut f = Framed::new(s);
    let theirs = f.read_handshake().await;
    assert_eq!(theirs.info_hash, t.info_hash, "they asked for our torrent");
    f.s.write_all(&Handshake::new(t.info_hash, *b"-BT0001-utp-test-up-").encode())
        .await
        .expect("write handshake");
    f.send(&[Message::Bitfield(
        Bitfield::full(t.num_pieces).as_bytes().to_vec().into(),
    )])
    .await;
    let mut sent = 0u64;
    let mut out = BytesMut::new();
    while let Some(first) = f.next().await {
        let mut msg = Some(first);
        while let Some(m) = msg.take().or_else(|| f.buffered()) {
            match m {
                Message::Interested => Message::Unchoke.encode_into(&mut out),
                Message::Request(r) => {
                    let at = r.index as usize * t.piece_length as usize + r.begin as usize;
                    Message::Piece {
                        index: r.index,
                        begin: r.begin,
                        data: bytes::Bytes::copy_from_slice(&data[at..at + r.length as usize]),
                    }
                    .encode_into(&mut out);
                    sent += u64::from(r.length);
                }
                _ => {}
            }
        }
        if !out.is_empty() {
            if f.s.write_all(&out).await.is_err() || f.s.flush().await.is_err() {
                break;
            }
            out.clear();
        }
    }
    sent
}

fn lt_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mountpoint-tests/lt/lt_utp.py")
}

/// A uTP-only libtorrent seeder of one file of random bytes.
pub struct LtSeed {
    pub child: Child,
    pub port: u16,
    pub shape: TorrentShape,
    pub torrent: PathBuf,
    pub file: PathBuf,
    pub _dir: tempfile::TempDir,
}

impl LtSeed {
    /// Seeds `size` random bytes, listening on `listen` (comma-separated
    /// IPs) at `port` (0: any).
    pub fn start(size: u64, listen: &str, port: u16) -> LtSeed {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(PYTHON);
        cmd.arg(lt_script())
            .arg("seed")
            .arg(dir.path())
            .arg(size.to_string())
            .args(["--listen", listen, "--port", &port.to_string()]);
        let mut child = Child::spawn("lt_utp seed", cmd);
        let ev = child.wait_event_ok("seeding", Duration::from_secs(120));
        let piece_sha1 = piece_sha1s(&ev, "piece_sha1");
        LtSeed {
            port: ev["port"].as_u64().unwrap() as u16,
            shape: TorrentShape {
                info_hash: InfoHash::from_hex(ev["info_hash"].as_str().unwrap()).unwrap(),
                piece_length: ev["piece_length"].as_u64().unwrap() as u32,
                num_pieces: ev["num_pieces"].as_u64().unwrap() as u32,
                total: ev["total_size"].as_u64().unwrap(),
                piece_sha1,
            },
            torrent: ev["torrent"].as_str().unwrap().into(),
            file: ev["file"].as_str().unwrap().into(),
            child,
            _dir: dir,
        }
    }

    pub fn content(&self) -> Vec<u8> {
        std::fs::read(&self.file).unwrap()
    }
}

/// A uTP-only libtorrent downloader of `torrent`.
pub struct LtFetch {
    pub child: Child,
    pub port: u16,
    pub save: tempfile::TempDir,
}

impl LtFetch {
    pub fn start(torrent: &Path, listen: &str) -> LtFetch {
        let save = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(PYTHON);
        cmd.arg(lt_script())
            .arg("fetch")
            .arg(torrent)
            .arg(save.path())
            .args(["--listen", listen]);
        let mut child = Child::spawn("lt_utp fetch", cmd);
        let ev = child.wait_event("ready", Duration::from_secs(30));
        LtFetch {
            port: ev["port"].as_u64().unwrap() as u16,
            child,
            save,
        }
    }

    /// Tells it to dial `addr` over uTP.
    pub fn connect(&mut self, addr: std::net::SocketAddr) {
        self.child
            .send_line(&format!("connect {} {}", addr.ip(), addr.port()));
    }

    /// Waits for `finished`; returns its rate in bytes/s.
    pub fn wait_finished(&mut self, timeout: Duration) -> f64 {
        let ev = self.child.wait_event("finished", timeout);
        ev["rate"].as_f64().unwrap()
    }

    /// The downloaded file.
    pub fn content(&self) -> Vec<u8> {
        std::fs::read(self.save.path().join("content.bin")).unwrap()
    }
}

/// This namespace's UDP counters from `/proc/net/snmp` (`InDatagrams`,
/// `RcvbufErrors`, ...), as "name=value" pairs, for reports: datagrams
/// the kernel dropped because a socket's receive buffer was full show up
/// as `RcvbufErrors`.
pub fn udp_counters() -> String {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return String::new();
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .filter(|(n, _)| ["InDatagrams", "RcvbufErrors", "SndbufErrors", "InErrors"].contains(n))
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// MB/s (10^6 bytes per second) for printing.
pub fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}
