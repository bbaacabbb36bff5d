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
use btfs::peer::pex::PexMessage;
use btfs::peer::ut_metadata::MetadataMsg;
use btfs::peer::wire::{
    Bitfield, DEFAULT_MAX_MESSAGE_LEN, Handshake, HashMessage, MAX_HASHES_MESSAGE_LEN, Message,
};
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
    ("v2_info", v2_info),
    ("hash_messages", hash_messages),
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
