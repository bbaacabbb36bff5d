//! Identifiers: the v1 info-hash (BEP 3: SHA-1 of the bencoded info
//! dictionary), the v2 info-hash (BEP 52: SHA-256 of it) and the peer id
//! (BEP 3, handshake).

use std::fmt;

/// The v1 info-hash: SHA-1 of the exact bytes of the info dictionary (BEP 3).
/// Displayed as 40 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

impl InfoHash {
    /// SHA-1 of `raw_info`, the bytes of an info dictionary as received.
    pub fn of_info(raw_info: &[u8]) -> InfoHash {
        use sha1::Digest;
        InfoHash(sha1::Sha1::digest(raw_info).into())
    }
    /// 40 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses 40 hex characters (any case).
    pub fn from_hex(s: &str) -> Option<InfoHash> {
        let mut out = [0u8; 20];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(InfoHash(out))
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", self.to_hex())
    }
}

/// The v2 info-hash (BEP 52, "infohash"): SHA-256 of the exact bytes of
/// an info dictionary that has `meta version` 2. Displayed as 64 lowercase
/// hex characters. Peers, trackers and the DHT use it truncated to 20 bytes
/// ([`InfoHashV2::truncated`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHashV2(pub [u8; 32]);

impl InfoHashV2 {
    /// SHA-256 of `raw_info`, the bytes of an info dictionary as received.
    pub fn of_info(raw_info: &[u8]) -> InfoHashV2 {
        use sha2::Digest;
        InfoHashV2(sha2::Sha256::digest(raw_info).into())
    }
    /// The first 20 bytes: the info-hash a v2 torrent has in the peer
    /// handshake, in BEP 9 and in the DHT (BEP 52, "infohash").
    pub fn truncated(&self) -> InfoHash {
        let mut out = [0u8; 20];
        out.copy_from_slice(&self.0[..20]);
        InfoHash(out)
    }
    /// 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses 64 hex characters (any case).
    pub fn from_hex(s: &str) -> Option<InfoHashV2> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(InfoHashV2(out))
    }
}

impl fmt::Display for InfoHashV2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}
impl fmt::Debug for InfoHashV2 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHashV2({})", self.to_hex())
    }
}

/// Our 20-byte peer id (BEP 3 handshake; Azureus style `-FM0100-` + random; "FM": FUSE mount, a code no other client uses).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(pub [u8; 20]);

impl PeerId {
    /// `-FM0100-` followed by 12 random bytes.
    pub fn generate() -> PeerId {
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(b"-FM0100-");
        getrandom::fill(&mut id[8..]).expect("OS random source");
        PeerId(id)
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", crate::bencode::Printable(&self.0))
    }
}
