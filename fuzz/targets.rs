//! The fuzz targets' bodies, shared by `cargo fuzz` (`fuzz/fuzz_targets/*.rs`)
//! and the stable-Rust smoke test (`tests/fuzz_smoke.rs`), which feeds every
//! file of `fuzz/corpus/<target>/` to the same function.
//!
//! Each function takes arbitrary bytes, as a hostile peer, DHT node or user
//! could send them, and must return without panicking. Beyond "no panic",
//! each checks invariants the parsers document: round trips through the
//! encoders, sanitized paths that cannot leave the torrent directory,
//! piece arithmetic that adds up. A failed invariant panics, which the
//! fuzzer reports as a crash.

#![allow(dead_code)] // each fuzz target binary uses one function

use std::collections::HashSet;

use btfs::bencode::{self, Limits, Owned};
use btfs::dht::krpc;
use btfs::magnet::{self, Url};
use btfs::merkle::{self, Layers, TreeShape};
use btfs::metainfo::{
    Info, MAX_PIECE_LENGTH, MAX_PIECES, MetaVersion, PieceLayers, info_span, sanitize,
};
use btfs::peer::extension::ExtHandshake;
use btfs::peer::holepunch::{HolepunchKind, HolepunchMsg};
use btfs::peer::mse;
use btfs::peer::pex::PexMessage;
use btfs::peer::ut_metadata::MetadataMsg;
use btfs::peer::wire::{
    Bitfield, DEFAULT_MAX_MESSAGE_LEN, Handshake, HashMessage, MAX_HASHES_MESSAGE_LEN, Message,
};
use btfs::utp::{HEADER_LEN, PacketHeader, PacketType};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// A fuzz target: the name of its corpus directory and fuzz binary, and
/// its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target.
pub const TARGETS: &[Target] = &[
    ("magnet", magnet),
    ("bencode_info", bencode_info),
    ("wire", wire),
    ("extension", extension),
    ("krpc", krpc_decode),
    ("utp_packet", utp_packet),
    ("mse", mse),
    ("v2_info", v2_info),
    ("hash_messages", hash_messages),
    ("gateway_request", gateway_request),
    ("holepunch", holepunch),
];

/// `magnet::parse` (BEP 9 magnet links and BEP 46 mutable URLs). A parsed
/// link printed with `to_url` must parse back to an equal value.
pub fn magnet(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match magnet::parse(s) {
        Ok(Url::Magnet(m)) => {
            let again = magnet::parse(&m.to_url()).expect("to_url output parses");
            assert_eq!(again, Url::Magnet(m), "magnet round trip");
        }
        Ok(Url::Mutable(m)) => {
            assert!(m.salt.len() <= magnet::MAX_SALT_LEN);
            let again = magnet::parse(&m.to_url()).expect("to_url output parses");
            assert_eq!(again, Url::Mutable(m), "mutable URL round trip");
        }
        Err(_) => {}
    }
}

/// `bencode::decode`/`decode_prefix`, then `Info::from_bytes` (a raw info
/// dictionary as BEP 9 delivers it) and `Info::from_torrent_file`.
pub fn bencode_info(data: &[u8]) {
    if let Ok(v) = bencode::decode(data, Limits::default()) {
        assert_eq!(v.raw, data, "decode covers the whole buffer");
        // canonical input re-encodes byte for byte
        if v.is_canonical() {
            assert_eq!(Owned::from(&v).encode(), data, "canonical re-encoding");
        }
    }
    if let Ok((v, used)) = bencode::decode_prefix(data, Limits::default()) {
        assert!(used <= data.len());
        assert_eq!(v.raw, &data[..used]);
    }
    if let Ok(info) = Info::from_bytes(data) {
        check_info(&info, data);
    }
    if let Ok(span) = info_span(data) {
        assert!(span.start <= span.end && span.end <= data.len());
    }
    if let Ok(info) = Info::from_torrent_file(data) {
        let span = info_span(data).expect("from_torrent_file used info_span");
        check_info(&info, &data[span]);
    }
    // the input as one path element: a safe component, and a non-UTF-8
    // element short enough not to be truncated is escaped losslessly
    if let Some(c) = sanitize::component(data) {
        safe_component(&c);
        if std::str::from_utf8(data).is_err() && data.len() <= sanitize::MAX_STEM / 4 {
            assert_eq!(
                sanitize::unescape(&c).as_deref(),
                Some(data),
                "lossless escape"
            );
        }
    }
}

/// What every accepted info dictionary must satisfy.
fn check_info(info: &Info, raw: &[u8]) {
    assert_eq!(info.raw, raw);
    let v2 = btfs::InfoHashV2::of_info(raw);
    match info.version {
        MetaVersion::V1 => {
            assert_eq!(info.info_hash, btfs::InfoHash::of_info(raw));
            assert_eq!(info.info_hash_v2, None);
        }
        MetaVersion::Hybrid => {
            assert_eq!(info.info_hash, btfs::InfoHash::of_info(raw));
            assert_eq!(info.info_hash_v2, Some(v2));
        }
        MetaVersion::V2 => {
            assert_eq!(info.info_hash, v2.truncated(), "v2-only: truncated SHA-256");
            assert_eq!(info.info_hash_v2, Some(v2));
        }
    }
    assert!(info.piece_length > 0 && info.piece_length <= MAX_PIECE_LENGTH);
    assert!(info.total_length > 0);
    let n = info.total_length.div_ceil(info.piece_length);
    assert!(n <= MAX_PIECES);
    if info.version == MetaVersion::V2 {
        assert!(info.pieces.is_empty(), "v2-only: no SHA-1 pieces");
    } else {
        assert_eq!(info.pieces.len() as u64, n, "one hash per piece");
    }
    let sum: u64 = (0..info.num_pieces()).map(|i| info.piece_size(i)).sum();
    assert_eq!(sum, info.total_length, "piece sizes add up");
    assert!(info.piece_size(info.num_pieces()) == 0);
    safe_component(&info.name);
    let mut offset = 0u64;
    let mut seen = HashSet::new();
    for (i, f) in info.files.iter().enumerate() {
        assert_eq!(f.offset, offset, "file {i} offset");
        offset += f.length;
        assert!(!f.path.is_empty());
        assert_eq!(f.path[0], info.name, "every path starts with the name");
        for c in &f.path {
            safe_component(c);
        }
        if let Some(t) = &f.symlink {
            assert_eq!(f.length, 0);
            for c in t {
                safe_component(c);
            }
        }
        if info.multi_file && !f.pad {
            assert!(seen.insert(f.path.clone()), "duplicate path {:?}", f.path);
        }
        let pieces = info.file_pieces(i);
        assert!(pieces.start <= pieces.end && pieces.end <= info.num_pieces());
        // BEP 52: every non-empty regular file has a root and its own pieces
        let data_file = !f.pad && f.symlink.is_none() && f.length > 0;
        let has_root = info.version != MetaVersion::V1 && data_file;
        assert_eq!(f.pieces_root.is_some(), has_root, "file {i} root");
        if has_root {
            assert_eq!(f.offset % info.piece_length, 0, "file {i} aligned");
            let shape = info.file_tree(i).expect("a tree");
            assert_eq!(u64::from(pieces.end - pieces.start), shape.num_pieces());
            for p in pieces {
                assert_eq!(info.piece_file(p), Some(i), "piece {p} belongs to file {i}");
            }
        }
    }
    for p in 0..info.num_pieces() {
        assert!(info.piece_data_size(p) <= info.piece_size(p));
    }
    assert_eq!(offset, info.total_length);
    if info.multi_file {
        // no file may have the path of a directory (a prefix of another path)
        for f in info.files.iter().filter(|f| !f.pad) {
            for k in 1..f.path.len() {
                assert!(
                    !seen.contains(&f.path[..k]),
                    "{:?} is both a file and a directory",
                    &f.path[..k]
                );
            }
        }
    }
}

/// A path component that is safe to join to a directory.
fn safe_component(c: &str) {
    assert!(
        !c.is_empty() && c != "." && c != ".." && !c.contains(['/', '\0']) && c.len() <= 255,
        "unsafe component {c:?}"
    );
}

/// The peer wire decoder: `Handshake::decode` on the first 68 bytes, then
/// frames delimited by `Message::check` and decoded by `Message::parse`, as
/// a connection reads them. Every parsed message re-encodes to its frame.
pub fn wire(data: &[u8]) {
    if let Some(hs) = data.first_chunk::<68>() {
        if let Ok(h) = Handshake::decode(hs) {
            assert_eq!(&h.encode(), hs, "handshake round trip");
        }
    }
    // the first byte picks the maximum frame length, so short limits get
    // exercised too
    let Some((&sel, mut rest)) = data.split_first() else {
        return;
    };
    let max = match sel % 4 {
        0 => DEFAULT_MAX_MESSAGE_LEN,
        1 => 0,
        2 => 13,
        _ => u32::from(sel) * 97,
    };
    while let Ok(Some(n)) = Message::check(rest, max) {
        assert!(n >= 4 && n <= rest.len());
        let frame = Bytes::copy_from_slice(&rest[..n]);
        match Message::parse(frame.clone()) {
            Ok(m) => {
                assert_eq!(m.encode(), frame, "message round trip");
                assert_eq!(m.encoded_len() + 4, n);
                if let Message::Bitfield(b) = &m {
                    let pieces = (b.len() as u32)
                        .saturating_mul(8)
                        .saturating_sub(u32::from(sel) % 8);
                    if let Ok(bf) = Bitfield::from_bytes(b, pieces) {
                        assert_eq!(bf.len(), pieces);
                        assert!(bf.count() <= pieces);
                        assert!(!bf.get(pieces));
                    }
                }
            }
            Err(_) => break,
        }
        rest = &rest[n..];
    }
}

/// The BEP 10 extension messages: `ExtHandshake::decode`, `MetadataMsg::decode`
/// (BEP 9) and `PexMessage::decode` (BEP 11) on the same payload. Decoded
/// metadata and PEX messages survive an encode/decode round trip.
pub fn extension(data: &[u8]) {
    let _ = ExtHandshake::decode(data);
    let payload = Bytes::copy_from_slice(data);
    if let Ok(m) = MetadataMsg::decode(&payload) {
        if let MetadataMsg::Data { data, .. } = &m {
            assert!(data.len() <= btfs::peer::ut_metadata::METADATA_PIECE);
        }
        let again = MetadataMsg::decode(&Bytes::from(m.encode())).expect("re-decodes");
        assert_eq!(again, m, "ut_metadata round trip");
    }
    if let Ok(p) = PexMessage::decode(data) {
        assert!(p.added.len() <= btfs::peer::pex::MAX_ENTRIES * 2);
        assert!(p.dropped.len() <= btfs::peer::pex::MAX_ENTRIES * 2);
        let again = PexMessage::decode(&p.encode()).expect("re-decodes");
        // `encode` sends IPv4-mapped IPv6 addresses as IPv4 (so they may
        // change list and order, and meet the per-list limit): compare
        // canonical addresses, and exactly when there is none
        let mapped = |a: &std::net::SocketAddr| a.ip().to_canonical() != a.ip();
        if p.added.iter().any(|(a, _)| mapped(a)) || p.dropped.iter().any(mapped) {
            let canon = |a: &std::net::SocketAddr| (a.ip().to_canonical(), a.port());
            let before: HashSet<_> = p.added.iter().map(|(a, f)| (canon(a), *f)).collect();
            assert!(
                again
                    .added
                    .iter()
                    .all(|(a, f)| before.contains(&(canon(a), *f)))
            );
            let before: HashSet<_> = p.dropped.iter().map(canon).collect();
            assert!(again.dropped.iter().all(|a| before.contains(&canon(a))));
        } else {
            assert_eq!(again, p, "ut_pex round trip");
        }
    }
}

/// KRPC datagrams (BEP 5, BEP 44): `krpc::decode`. A decoded message
/// re-encodes to a datagram that decodes to the same message.
pub fn krpc_decode(data: &[u8]) {
    if let Ok(m) = krpc::decode(data) {
        let enc = m.encode();
        match krpc::decode(&enc) {
            Ok(again) => assert_eq!(again, m, "KRPC round trip"),
            // a re-encoding may exceed the datagram limit only if the input
            // was already near it
            Err(e) => assert!(enc.len() > krpc::MAX_DATAGRAM, "re-decode failed: {e}"),
        }
    }
}

/// `utp::PacketHeader::parse`, i.e. `librqbit-utp`'s header parser, the
/// first thing its dispatcher runs on every datagram (BEP 29 "header
/// format"). A parsed header must lie inside the datagram and agree with
/// the fixed 20 bytes; a valid fixed header without extensions must parse.
pub fn utp_packet(data: &[u8]) {
    match PacketHeader::parse(data) {
        Some(h) => {
            assert!(
                h.len >= HEADER_LEN && h.len <= data.len(),
                "header length {}",
                h.len
            );
            assert_eq!(data[0] & 0x0f, 1, "version 1 only");
            let kind = match h.kind {
                PacketType::Data => 0,
                PacketType::Fin => 1,
                PacketType::State => 2,
                PacketType::Reset => 3,
                PacketType::Syn => 4,
            };
            assert_eq!(data[0] >> 4, kind, "type nibble");
            assert_eq!(h.wnd_size.to_be_bytes(), data[12..16], "wnd_size");
            assert_eq!(h.timestamp_us.to_be_bytes(), data[4..8], "timestamp");
            assert_eq!(
                data[1] == 0,
                h.len == HEADER_LEN,
                "no extension, no extension bytes"
            );
        }
        None => {
            let plain = data.len() >= HEADER_LEN
                && data[0] & 0x0f == 1
                && data[0] >> 4 <= 4
                && data[1] == 0;
            assert!(
                !plain,
                "a valid 20-byte header without extensions was refused"
            );
        }
    }
}
/// The MSE handshake (`btfs::peer::mse`), both roles, in a current-thread
/// runtime. The first byte picks the mode:
/// - 0: our responder ([`mse::accept_inbound`], policy `prefer`) reads the
///   rest as the whole incoming connection (in reads of a fuzzed size).
/// - 1: our initiator ([`mse::initiate`]) reads the rest as the whole answer.
/// - 2: a scripted initiator, whose fields (PadA, SKEY, VC, crypto_provide,
///   len(PadC), PadC, len(IA), IA, a truncation point, bytes after IA) come
///   from the input, runs the real key exchange with our responder over a
///   duplex, so the fuzzed fields arrive correctly encrypted.
/// - 3: a scripted responder (Yb or a plaintext handshake, PadB, VC,
///   crypto_select, len(PadD), PadD, truncation, payload) against our
///   initiator (`prefer` or `require`).
///
/// Invariants: an accepted handshake names a served torrent; an honest
/// script (every field within the spec and consistent) is accepted, with
/// the initial payload, the selected method and the bytes after the
/// handshake delivered exactly; a plaintext peer is recognised.
pub fn mse(data: &[u8]) {
    use std::cell::RefCell;
    thread_local! {
        static RT: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
    }
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    RT.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a tokio runtime")
        });
        rt.block_on(async {
            match mode % 4 {
                0 => mse_raw_responder(rest).await,
                1 => mse_raw_initiator(rest).await,
                2 => mse_scripted_initiator(rest).await,
                _ => mse_scripted_responder(rest).await,
            }
        })
    });
}

const MSE_IH: btfs::InfoHash = btfs::InfoHash([0x5a; 20]);

fn mse_served() -> mse::SkeyTable {
    [btfs::InfoHash([1; 20]), MSE_IH, btfs::InfoHash([2; 20])]
        .into_iter()
        .collect()
}

fn mse_timeouts() -> mse::Timeouts {
    // nothing here waits on time (every script ends with EOF): a slow unit
    // would be a bug
    mse::Timeouts {
        step: std::time::Duration::from_secs(5),
        total: std::time::Duration::from_secs(10),
    }
}

/// Reads the fuzz input in fields; exhausted input reads as zeros.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        std::array::from_fn(|_| self.u8())
    }
    /// `n` bytes, zero-filled past the end of the input.
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let k = n.min(self.0.len());
        let mut v = self.0[..k].to_vec();
        self.0 = &self.0[k..];
        v.resize(n, 0);
        v
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// A transport whose reads return `input` in pieces of `chunk` bytes, then
/// end of stream; writes are accepted and dropped.
struct Replay<'a> {
    input: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Replay<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.chunk.min(self.input.len()).min(buf.remaining());
        buf.put_slice(&self.input[..n]);
        self.input = &self.input[n..];
        std::task::Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay<'_> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(data.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

async fn mse_raw_responder(data: &[u8]) {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    if let Some(kind) = mse::classify(input) {
        let plain = input.len() >= 20 && input[..20] == mse::PLAINTEXT_PREFIX[..];
        assert_eq!(kind == mse::Incoming::Plaintext, plain, "classify");
    }
    let table = mse_served();
    let stream = Replay {
        input,
        chunk: usize::from(chunk) + 1,
    };
    match mse::accept_inbound(
        stream,
        |h| table.find(h),
        mse::Policy::Prefer,
        mse_timeouts(),
    )
    .await
    {
        Ok(mse::Inbound::Plaintext(mut s)) => {
            // the stream replays the whole input
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.expect("replay");
            assert_eq!(got, input, "plaintext passthrough");
        }
        Ok(mse::Inbound::Encrypted(acc)) => {
            assert!(
                table
                    .find(&mse::crypto::skey_hash(&acc.info_hash.0))
                    .is_some()
            );
        }
        Err(e) => assert!(!matches!(e, mse::MseError::Timeout(_)), "{e}"),
    }
}

async fn mse_raw_initiator(data: &[u8]) {
    let Some((&chunk, input)) = data.split_first() else {
        return;
    };
    let stream = Replay {
        input,
        chunk: usize::from(chunk) + 1,
    };
    let hs = Handshake::new(MSE_IH, [7; 20]).encode();
    if let Err(e) = mse::initiate(stream, MSE_IH, mse::Policy::Prefer, &hs, mse_timeouts()).await {
        assert!(!matches!(e, mse::MseError::Timeout(_)), "{e}");
    }
}

/// Writes `msg` (cut at `cut` if given), closes the write side, then reads
/// until the other side closes, so the other side never meets a broken pipe
/// while it still has something to say.
async fn mse_send_then_drain(s: &mut tokio::io::DuplexStream, msg: &[u8], cut: Option<usize>) {
    let msg = &msg[..cut.unwrap_or(msg.len()).min(msg.len())];
    if s.write_all(msg).await.is_ok() {
        let _ = s.shutdown().await;
        let mut sink = [0u8; 4096];
        while let Ok(n) = s.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    }
}

async fn mse_scripted_initiator(data: &[u8]) {
    use mse::crypto::*;
    let mut f = Fields(data);
    let x: [u8; 20] = f.array();
    let flags = f.u8();
    let pad_a = usize::from(f.u16()) % 600;
    let skey = if flags & 1 != 0 { f.array() } else { MSE_IH.0 };
    let vc: [u8; 8] = if flags & 2 != 0 { f.array() } else { [0; 8] };
    let provide = if flags & 4 != 0 {
        f.u32()
    } else {
        u32::from(f.u8() % 4)
    };
    let pad_c = usize::from(f.u16()) % 600;
    let pad_c_field = if flags & 8 != 0 {
        f.u16()
    } else {
        pad_c as u16
    };
    let ia_len = usize::from(f.u16()) % 1100;
    let ia_field = if flags & 16 != 0 {
        f.u16()
    } else {
        ia_len as u16
    };
    let cut = (flags & 32 != 0).then(|| usize::from(f.u16()));
    let ia = f.bytes(ia_len);
    let after = f.rest().to_vec();
    let selected = mse::Policy::Prefer.select(provide);
    let honest = x != [0; 20]
        && pad_a <= mse::MAX_PAD
        && skey == MSE_IH.0
        && vc == [0; 8]
        && selected.is_some()
        && pad_c <= mse::MAX_PAD
        && usize::from(pad_c_field) == pad_c
        && ia_len <= mse::MAX_IA_LEN
        && usize::from(ia_field) == ia_len
        && cut.is_none();

    let (mut a, b) = tokio::io::duplex(64 * 1024);
    let table = mse_served();
    let evil = async {
        let key = DhKey::from_secret(x);
        let mut m = key.public_key().to_vec();
        m.resize(DH_LEN + pad_a, 0xC3);
        if a.write_all(&m).await.is_err() {
            return;
        }
        let mut yb = [0u8; DH_LEN];
        if a.read_exact(&mut yb).await.is_err() {
            return;
        }
        let secret = key
            .shared_secret(&yb)
            .expect("our responder's key is valid");
        let (key_a, _) = stream_keys(&secret, &skey);
        let mut enc = Rc4Drop::new(&key_a);
        let mut m = sync_hash(&secret).to_vec();
        m.extend_from_slice(&xor20(&skey_hash(&skey), &skey_mask(&secret)));
        let from = m.len();
        m.extend_from_slice(&vc);
        m.extend_from_slice(&provide.to_be_bytes());
        m.extend_from_slice(&pad_c_field.to_be_bytes());
        m.resize(m.len() + pad_c, 0);
        m.extend_from_slice(&ia_field.to_be_bytes());
        m.extend_from_slice(&ia);
        enc.apply(&mut m[from..]);
        let mut tail = after.clone();
        if selected == Some(mse::Crypto::Rc4) {
            enc.apply(&mut tail);
        }
        m.extend_from_slice(&tail);
        mse_send_then_drain(&mut a, &m, cut).await;
    };
    let ours = async {
        let r = mse::accept(
            b,
            &[],
            |h| table.find(h),
            mse::Policy::Prefer,
            mse_timeouts(),
        )
        .await;
        match r {
            Ok(acc) => {
                assert!(table.find(&skey_hash(&acc.info_hash.0)).is_some());
                let crypto = acc.stream.crypto();
                let payload = acc.initial_payload.clone();
                let (mut s, ih) = acc.into_stream();
                let mut got = Vec::new();
                let read = s.read_to_end(&mut got).await;
                if honest {
                    assert_eq!(ih, MSE_IH);
                    assert_eq!(Some(crypto), selected, "selected method");
                    assert_eq!(payload, ia, "initial payload");
                    read.expect("read after the handshake");
                    assert_eq!(&got[..ia.len()], &ia[..], "payload replayed");
                    assert_eq!(&got[ia.len()..], &after[..], "bytes after IA");
                }
            }
            Err(e) => {
                assert!(!honest, "honest initiator refused: {e}");
                assert!(!matches!(e, mse::MseError::Timeout(_)), "{e}");
            }
        }
    };
    tokio::join!(evil, ours);
}

async fn mse_scripted_responder(data: &[u8]) {
    use mse::crypto::*;
    let mut f = Fields(data);
    let x: [u8; 20] = f.array();
    let flags = f.u8();
    let policy = if flags & 1 != 0 {
        mse::Policy::Require
    } else {
        mse::Policy::Prefer
    };
    let plaintext_reply = flags & 2 != 0;
    let pad_b = usize::from(f.u16()) % 600;
    let vc: [u8; 8] = if flags & 4 != 0 { f.array() } else { [0; 8] };
    let select = if flags & 8 != 0 {
        f.u32()
    } else {
        u32::from(f.u8() % 4)
    };
    let pad_d = usize::from(f.u16()) % 600;
    let pad_d_field = if flags & 16 != 0 {
        f.u16()
    } else {
        pad_d as u16
    };
    let cut = (flags & 32 != 0).then(|| usize::from(f.u16()));
    let after = f.rest().to_vec();
    let provide = policy.crypto_provide().expect("an MSE policy");
    let selected = match select {
        1 if provide & 1 != 0 => Some(mse::Crypto::Plaintext),
        2 if provide & 2 != 0 => Some(mse::Crypto::Rc4),
        _ => None,
    };
    let honest = x != [0; 20]
        && !plaintext_reply
        && pad_b <= mse::MAX_PAD
        && vc == [0; 8]
        && selected.is_some()
        && pad_d <= mse::MAX_PAD
        && usize::from(pad_d_field) == pad_d
        && cut.is_none();

    let (a, mut b) = tokio::io::duplex(64 * 1024);
    let hs = Handshake::new(MSE_IH, [7; 20]).encode();
    let evil = async {
        let mut ya = [0u8; DH_LEN];
        if b.read_exact(&mut ya).await.is_err() {
            return;
        }
        let key = DhKey::from_secret(x);
        let mut m = if plaintext_reply {
            Handshake::new(MSE_IH, [8; 20]).encode().to_vec()
        } else {
            key.public_key().to_vec()
        };
        m.resize(m.len() + pad_b, 0x3C);
        let secret = key
            .shared_secret(&ya)
            .expect("our initiator's key is valid");
        let (_, key_b) = stream_keys(&secret, &MSE_IH.0);
        let mut enc = Rc4Drop::new(&key_b);
        let from = m.len();
        m.extend_from_slice(&vc);
        m.extend_from_slice(&select.to_be_bytes());
        m.extend_from_slice(&pad_d_field.to_be_bytes());
        m.resize(m.len() + pad_d, 0);
        enc.apply(&mut m[from..]);
        let mut tail = after.clone();
        if selected == Some(mse::Crypto::Rc4) {
            enc.apply(&mut tail);
        }
        m.extend_from_slice(&tail);
        mse_send_then_drain(&mut b, &m, cut).await;
    };
    let ours = async {
        match mse::initiate(a, MSE_IH, policy, &hs, mse_timeouts()).await {
            Ok(mut s) => {
                let mut got = Vec::new();
                let read = s.read_to_end(&mut got).await;
                if honest {
                    assert_eq!(Some(s.crypto()), selected, "selected method");
                    read.expect("read after the handshake");
                    assert_eq!(got, after, "bytes after PadD");
                }
            }
            Err(e) => {
                assert!(!honest, "honest responder refused: {e}");
                if plaintext_reply {
                    assert!(e.retry_plaintext(), "{e}");
                }
                assert!(!matches!(e, mse::MseError::Timeout(_)), "{e}");
            }
        }
    };
    tokio::join!(evil, ours);
}

/// v2 metadata (BEP 52): `Info::from_bytes` on an info dictionary (v2,
/// hybrid or not), then the input as a whole .torrent: its info dictionary
/// and `PieceLayers::from_torrent_file`. Every accepted piece layer must
/// build its file's tree up to the file's `pieces root`.
pub fn v2_info(data: &[u8]) {
    if let Ok(info) = Info::from_bytes(data) {
        check_info(&info, data);
    }
    let Ok(info) = Info::from_torrent_file(data) else {
        return;
    };
    let span = info_span(data).expect("from_torrent_file used info_span");
    check_info(&info, &data[span]);
    if let Ok(layers) = PieceLayers::from_torrent_file(data, &info) {
        assert!(layers.is_empty() || info.version != MetaVersion::V1);
        for (i, f) in info.files.iter().enumerate() {
            let Some(root) = f.pieces_root else { continue };
            let shape = info.file_tree(i).expect("a tree");
            if !shape.has_piece_layer() || layers.get(&root).is_some() {
                let l = layers.file_layers(&info, i).expect("layers verified");
                assert_eq!(l.root(), root);
            }
        }
    }
}

/// A fixed file's tree for [`hash_messages`]: 14 blocks (the last short) in
/// 32 KiB pieces.
fn fixed_tree() -> &'static Layers {
    static TREE: std::sync::OnceLock<Layers> = std::sync::OnceLock::new();
    TREE.get_or_init(|| {
        let data: Vec<u8> = (0..16384u32 * 13 + 5)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let shape = TreeShape::new(data.len() as u64, 32768).expect("valid");
        Layers::build(shape, 0, merkle::block_hashes(&data)).expect("valid")
    })
}

/// BEP 52 hash messages: the first byte picks the message id (21, 22, 23,
/// or another), the rest is the payload. A decoded message re-encodes to
/// the same frame. Against a fixed tree: a request that passes
/// `check_request` is answered, and its answer verifies; a received
/// `hashes` message that verifies holds exactly the tree's nodes.
pub fn hash_messages(data: &[u8]) {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let id = 21 + sel % 4;
    let Some(Ok(m)) = HashMessage::decode(id, payload) else {
        return;
    };
    let frame = m.encode();
    assert_eq!(&frame[5..], payload, "hash message round trip");
    assert!(frame.len() - 4 <= MAX_HASHES_MESSAGE_LEN as usize);
    assert_eq!(
        Message::check(&frame, MAX_HASHES_MESSAGE_LEN)
            .ok()
            .flatten(),
        Some(frame.len())
    );
    let tree = fixed_tree();
    let shape = tree.shape();
    let root = tree.root();
    let mut req = *m.request();
    req.pieces_root = root;
    match &m {
        HashMessage::Request(_) | HashMessage::Reject(_) => {
            let checked = merkle::check_request(&shape, &req);
            match tree.answer(&req) {
                Ok(hashes) => {
                    assert!(checked.is_ok());
                    let v =
                        merkle::verify_hashes(&shape, &root, &req, &hashes, |l, i| tree.node(l, i))
                            .expect("our answer verifies");
                    assert!(v.nodes.len() <= req.length as usize);
                }
                Err(e) => assert_eq!(checked, Err(e), "only refused ranges fail"),
            }
        }
        HashMessage::Hashes { hashes, .. } => {
            if let Ok(v) =
                merkle::verify_hashes(&shape, &root, &req, hashes, |l, i| tree.node(l, i))
            {
                for (k, h) in v.nodes.iter().enumerate() {
                    assert_eq!(tree.node(v.base_layer, v.index + k as u64), Some(*h));
                }
                for (l, i, h) in &v.uncles {
                    assert_eq!(tree.node(*l, *i), Some(*h));
                }
            }
        }
    }
}

/// The HTTP gateway's request parsers: the first line is a raw `/bt/...`
/// request path ([`btfs::gateway::addr::parse`]), the second a `Range`
/// header ([`btfs::gateway::range::want`]) against sizes derived from the
/// input. A parsed path never holds `.`, `..`, `/`, `\` or NUL in a
/// component, and its URL parses back to it; a range is inside the file.
pub fn gateway_request(data: &[u8]) {
    use btfs::gateway::{addr, range};
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = s.splitn(2, '\n');
    let path = lines.next().unwrap_or("");
    let header = lines.next().unwrap_or("");
    if let Ok(t) = addr::parse(path) {
        for c in &t.path {
            assert!(!c.is_empty() && c != "." && c != "..", "{c:?}");
            assert!(!c.contains(['/', '\\', '\0']), "{c:?}");
        }
        let again = addr::parse(&addr::url_of(&t.name, &t.path, false)).expect("url_of parses");
        assert_eq!(again.path, t.path);
        assert_eq!(again.name, t.name);
    }
    let size = data.len() as u64 * 977;
    for size in [0, 1, size, u64::MAX] {
        match range::want(Some(header), None, "\"x\"", size) {
            range::Want::Part { start, end } => assert!(start < end && end <= size),
            range::Want::Unsatisfiable | range::Want::Full => {}
        }
    }
}

/// `HolepunchMsg::decode` (BEP 55 `ut_holepunch`). A decoded message
/// survives an encode/decode round trip (`err_code` then always present),
/// and an error message always carries its code.
pub fn holepunch(data: &[u8]) {
    let Ok(m) = HolepunchMsg::decode(data) else {
        return;
    };
    let bytes = m.encode();
    assert!(bytes.len() == 12 || bytes.len() == 24);
    assert_eq!(HolepunchMsg::decode(&bytes).expect("re-decodes"), m);
    if m.kind == HolepunchKind::Error {
        assert!(data.len() >= 12);
    }
}
