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
use btfs::metainfo::{Info, MAX_PIECE_LENGTH, MAX_PIECES, info_span, sanitize};
use btfs::peer::extension::ExtHandshake;
use btfs::peer::pex::PexMessage;
use btfs::peer::ut_metadata::MetadataMsg;
use btfs::peer::wire::{Bitfield, DEFAULT_MAX_MESSAGE_LEN, Handshake, Message};
use bytes::Bytes;

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
    ("gateway_request", gateway_request),
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
    assert_eq!(info.info_hash, btfs::InfoHash::of_info(raw));
    assert!(info.piece_length > 0 && info.piece_length <= MAX_PIECE_LENGTH);
    assert!(info.total_length > 0);
    let n = info.total_length.div_ceil(info.piece_length);
    assert!(n <= MAX_PIECES);
    assert_eq!(info.pieces.len() as u64, n, "one hash per piece");
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
