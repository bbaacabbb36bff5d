//! Magnet links (BEP 9, section "magnet URI format") and BEP 46 mutable
//! torrent URLs, parsed into what btfs-mount needs to find the torrent.
//!
//! Shapes:
//! - `magnet:?xt=urn:btih:<info-hash>&dn=<name>&x.pe=<ip:port>&tr=<url>` →
//!   [`Url::Magnet`]. The info-hash is 40 hex or 32 base32 characters, any
//!   case. BEP 52 v2 links carry `xt=urn:btmh:1220<64 hex>` (the SHA-256 v2
//!   info-hash as a multihash: function 0x12, length 0x20) instead, hybrid
//!   links carry both. `dn` is percent-decoded (`+` read as a space). `x.pe` (repeatable)
//!   must be a literal `ip:port` (`[v6]:port` for IPv6); a `host:port` with a
//!   name is skipped with a warning (we never resolve names), anything else
//!   is an error. `tr` is kept only so the caller can log it as ignored (this
//!   client is trackerless).
//! - `magnet:?xs=urn:btpk:<64 hex public key>&s=<salt hex>` →
//!   [`Url::Mutable`] (BEP 46). The salt is at most 64 bytes.
//!
//! Unknown parameters are ignored. Several `xt` are allowed: the first
//! `urn:btih` and the first `urn:btmh` win. A link with only `urn:btmh` is a
//! v2 link: its [`Magnet::info_hash`] is the v2 info-hash truncated to 20
//! bytes, the one peers and the DHT know (BEP 52). When
//! a link carries both `xs=urn:btpk:` and `xt=urn:btih:`, the mutable form
//! wins: such a link asks to follow the publisher's updates.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::hash::{InfoHash, InfoHashV2};

/// Longest salt BEP 46 (through BEP 44) allows, in bytes.
pub const MAX_SALT_LEN: usize = 64;

/// A parsed link: an immutable torrent or a BEP 46 mutable pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Url {
    /// `magnet:?xt=urn:btih:...` (BEP 9).
    Magnet(Magnet),
    /// `magnet:?xs=urn:btpk:...` (BEP 46).
    Mutable(MutableUrl),
}

/// A BEP 9 magnet link (v1, v2 or hybrid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    /// The 20-byte info-hash to find the torrent by (handshake, BEP 9, DHT):
    /// the v1 info-hash (`xt=urn:btih:`) when the link has one, otherwise
    /// the v2 info-hash truncated to 20 bytes (BEP 52).
    pub info_hash: InfoHash,
    /// The v2 info-hash (`xt=urn:btmh:1220...`, BEP 52), when given.
    pub info_hash_v2: Option<InfoHashV2>,
    /// True when [`Magnet::info_hash`] is a v1 info-hash (`xt=urn:btih:`);
    /// false for a v2-only link.
    pub has_v1: bool,
    /// `dn`, percent-decoded: a suggested name, shown until the metadata
    /// arrives. Never used as a path.
    pub display_name: Option<String>,
    /// `x.pe` peers to dial directly, literal addresses only.
    pub peers: Vec<SocketAddr>,
    /// `tr` tracker URLs, percent-decoded. Kept only to be logged as ignored.
    pub trackers: Vec<String>,
}

/// A BEP 46 mutable torrent URL: the ed25519 public key and salt under which
/// a BEP 44 mutable item holds `{ih: <info-hash>}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutableUrl {
    /// The publisher's ed25519 public key (`xs=urn:btpk:`, 64 hex characters).
    pub public_key: [u8; 32],
    /// The BEP 44 salt (`s=`, hex in the URL), 0 to 64 bytes.
    pub salt: Vec<u8>,
}

/// Why a string is not a usable magnet link or BEP 46 URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    #[error("not a magnet link (must start with magnet:?)")]
    NotMagnet,
    #[error("missing xt=urn:btih:, xt=urn:btmh: or xs=urn:btpk:")]
    MissingTopic,
    #[error("info-hash must be 40 hex or 32 base32 characters, got {0}")]
    BadInfoHash(usize),
    #[error("info-hash of {0} characters must be {1}")]
    BadInfoHashDigits(usize, &'static str),
    /// `xt=urn:btmh:` that is not 68 hex characters (a 2-byte multihash
    /// header and a 32-byte digest); the length seen.
    #[error("v2 info-hash (xt=urn:btmh:) must be 68 hex characters (1220 and a SHA-256), got {0}")]
    BadV2InfoHash(usize),
    /// `xt=urn:btmh:` with a multihash other than SHA-256 (`1220`); the
    /// header seen.
    #[error(
        "v2 info-hash (xt=urn:btmh:) must be a SHA-256 multihash (starting 1220), got one starting {0}"
    )]
    UnsupportedMultihash(String),
    #[error("bad x.pe peer address '{0}'")]
    BadPeer(String),
    #[error("public key (xs=urn:btpk:) must be 64 hex characters, got '{0}'")]
    BadPublicKey(String),
    #[error("salt (s=) must be hex, got '{0}'")]
    BadSaltHex(String),
    #[error("salt longer than 64 bytes ({0} bytes)")]
    SaltTooLong(usize),
    #[error("parameter '{0}' is not valid UTF-8 after percent-decoding")]
    NotUtf8(String),
}

/// Parses a magnet link or BEP 46 URL. See the module docs for the rules.
///
/// Errors: [`MagnetError`], one variant per problem.
pub fn parse(url: &str) -> Result<Url, MagnetError> {
    let url = url.trim();
    let query = match url.get(..8) {
        Some(p) if p.eq_ignore_ascii_case("magnet:?") => &url[8..],
        _ => return Err(MagnetError::NotMagnet),
    };

    let mut info_hash: Option<InfoHash> = None;
    let mut info_hash_v2: Option<InfoHashV2> = None;
    let mut public_key: Option<[u8; 32]> = None;
    let mut salt: Vec<u8> = Vec::new();
    let mut display_name = None;
    let mut peers = Vec::new();
    let mut trackers = Vec::new();

    for param in query.split('&') {
        let Some((key, value)) = param.split_once('=') else {
            continue;
        };
        match key {
            "xt" => {
                let v = decode(key, value, false)?;
                if let Some(h) = strip_prefix_ci(&v, "urn:btih:") {
                    let ih = parse_info_hash(h)?;
                    info_hash.get_or_insert(ih);
                } else if let Some(h) = strip_prefix_ci(&v, "urn:btmh:") {
                    let v2 = parse_btmh(h)?;
                    info_hash_v2.get_or_insert(v2);
                }
            }
            "xs" => {
                let v = decode(key, value, false)?;
                if let Some(k) = strip_prefix_ci(&v, "urn:btpk:") {
                    let mut pk = [0u8; 32];
                    hex::decode_to_slice(k, &mut pk)
                        .map_err(|_| MagnetError::BadPublicKey(k.to_string()))?;
                    public_key.get_or_insert(pk);
                }
                // other `xs` (exact source URLs) are ignored
            }
            "s" => {
                let v = decode(key, value, false)?;
                if v.len() > 2 * MAX_SALT_LEN {
                    return Err(MagnetError::SaltTooLong(v.len().div_ceil(2)));
                }
                salt = hex::decode(&v).map_err(|_| MagnetError::BadSaltHex(v.clone()))?;
            }
            "dn" => display_name = Some(decode(key, value, true)?),
            "tr" => trackers.push(decode(key, value, false)?),
            "x.pe" => {
                let v = decode(key, value, false)?;
                if let Some(addr) = parse_peer(&v)? {
                    peers.push(addr);
                }
            }
            _ => {}
        }
    }

    if let Some(public_key) = public_key {
        return Ok(Url::Mutable(MutableUrl { public_key, salt }));
    }
    let (info_hash, has_v1) = match (info_hash, info_hash_v2) {
        (Some(v1), _) => (v1, true),
        (None, Some(v2)) => (v2.truncated(), false),
        (None, None) => return Err(MagnetError::MissingTopic),
    };
    Ok(Url::Magnet(Magnet {
        info_hash,
        info_hash_v2,
        has_v1,
        display_name,
        peers,
        trackers,
    }))
}

impl FromStr for Url {
    type Err = MagnetError;
    fn from_str(s: &str) -> Result<Url, MagnetError> {
        parse(s)
    }
}

/// Parses what a user typed where a link is expected: a magnet link or
/// BEP 46 URL as [`parse`] does, or a bare info-hash (40 hex or 32 base32
/// characters), taken as `magnet:?xt=urn:btih:<it>`.
///
/// Errors: [`MagnetError`], as [`parse`].
pub fn parse_arg(arg: &str) -> Result<Url, MagnetError> {
    let t = arg.trim();
    let bare = (t.len() == 40 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        || (t.len() == 32 && t.bytes().all(|b| b.is_ascii_alphanumeric()));
    if bare {
        parse(&format!("magnet:?xt=urn:btih:{t}"))
    } else {
        parse(t)
    }
}

/// Something [`crate::Client::lookup`] takes as a link: an already parsed
/// [`Url`] (parsed once, by the caller), or a string parsed with
/// [`parse_arg`] (a magnet link, a BEP 46 URL or a bare info-hash).
pub trait IntoUrl {
    /// The parsed link. Errors: [`MagnetError`] for a malformed string.
    fn into_url(self) -> Result<Url, MagnetError>;
}

impl IntoUrl for Url {
    fn into_url(self) -> Result<Url, MagnetError> {
        Ok(self)
    }
}

impl IntoUrl for &Url {
    fn into_url(self) -> Result<Url, MagnetError> {
        Ok(self.clone())
    }
}

impl IntoUrl for &str {
    fn into_url(self) -> Result<Url, MagnetError> {
        parse_arg(self)
    }
}

impl IntoUrl for String {
    fn into_url(self) -> Result<Url, MagnetError> {
        parse_arg(&self)
    }
}

impl IntoUrl for &String {
    fn into_url(self) -> Result<Url, MagnetError> {
        parse_arg(self)
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Percent-decodes one parameter value; `plus_is_space` for `dn`, where many
/// generators write spaces as `+` (form encoding).
fn decode(key: &str, value: &str, plus_is_space: bool) -> Result<String, MagnetError> {
    let value = if plus_is_space {
        value.replace('+', " ")
    } else {
        value.to_string()
    };
    percent_decode_str(&value)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| MagnetError::NotUtf8(key.to_string()))
}

/// 40 hex or 32 base32 (RFC 4648, any case) characters.
fn parse_info_hash(s: &str) -> Result<InfoHash, MagnetError> {
    match s.len() {
        40 => InfoHash::from_hex(s).ok_or(MagnetError::BadInfoHashDigits(40, "hex (0-9, a-f)")),
        32 => {
            let upper = s.to_ascii_uppercase();
            let bytes = data_encoding::BASE32
                .decode(upper.as_bytes())
                .map_err(|_| MagnetError::BadInfoHashDigits(32, "base32 (A-Z, 2-7)"))?;
            let arr: [u8; 20] = bytes
                .try_into()
                .map_err(|_| MagnetError::BadInfoHashDigits(32, "base32 (A-Z, 2-7)"))?;
            Ok(InfoHash(arr))
        }
        n => Err(MagnetError::BadInfoHash(n)),
    }
}

/// `1220` followed by 64 hex characters (any case): a SHA-256 multihash
/// (BEP 52, "magnet links": `xt=urn:btmh:<tagged info-hash>`).
fn parse_btmh(s: &str) -> Result<InfoHashV2, MagnetError> {
    if s.len() != 68 || !s.is_ascii() {
        return Err(MagnetError::BadV2InfoHash(s.len()));
    }
    if !s[..4].eq_ignore_ascii_case("1220") {
        return Err(MagnetError::UnsupportedMultihash(s[..4].to_string()));
    }
    InfoHashV2::from_hex(&s[4..]).ok_or(MagnetError::BadV2InfoHash(s.len()))
}

/// A literal socket address → `Some`; `name:port` with a valid port → `None`
/// (skipped with a warning); anything else → error.
fn parse_peer(s: &str) -> Result<Option<SocketAddr>, MagnetError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(MagnetError::BadPeer(s.to_string()));
        }
        return Ok(Some(addr));
    }
    let is_hostname = s.rsplit_once(':').is_some_and(|(host, port)| {
        port.parse::<u16>().is_ok_and(|p| p != 0)
            && !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && host.bytes().any(|b| b.is_ascii_alphabetic())
    });
    if is_hostname {
        tracing::warn!(
            peer = s,
            "skipping x.pe peer given by host name (only literal IP:port is used)"
        );
        return Ok(None);
    }
    Err(MagnetError::BadPeer(s.to_string()))
}

/// Characters left unescaped in values we write: RFC 3986 unreserved.
const VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Magnet {
    /// A v1 magnet link with only the info-hash.
    pub fn new(info_hash: InfoHash) -> Self {
        Magnet {
            info_hash,
            info_hash_v2: None,
            has_v1: true,
            display_name: None,
            peers: Vec::new(),
            trackers: Vec::new(),
        }
    }

    /// A v2-only magnet link (`xt=urn:btmh:` alone); its
    /// [`Magnet::info_hash`] is `v2` truncated.
    pub fn v2(v2: InfoHashV2) -> Self {
        Magnet {
            info_hash: v2.truncated(),
            info_hash_v2: Some(v2),
            has_v1: false,
            ..Magnet::new(v2.truncated())
        }
    }

    /// A hybrid magnet link: both `xt`.
    pub fn hybrid(v1: InfoHash, v2: InfoHashV2) -> Self {
        Magnet {
            info_hash_v2: Some(v2),
            ..Magnet::new(v1)
        }
    }

    /// The v1 info-hash, when the link has one.
    pub fn info_hash_v1(&self) -> Option<InfoHash> {
        self.has_v1.then_some(self.info_hash)
    }

    /// `magnet:?xt=urn:btih:<40 lowercase hex>` (when the link has a v1
    /// info-hash), `&xt=urn:btmh:1220<64 lowercase hex>` (when it has a v2
    /// one), then `&dn=` (percent-encoded), one `&x.pe=ip:port` per peer and
    /// one `&tr=` (percent-encoded) per tracker. [`parse`] reads it back to
    /// an equal value.
    pub fn to_url(&self) -> String {
        let mut topics = Vec::with_capacity(2);
        if self.has_v1 || self.info_hash_v2.is_none() {
            topics.push(format!("xt=urn:btih:{}", self.info_hash.to_hex()));
        }
        if let Some(v2) = &self.info_hash_v2 {
            topics.push(format!("xt=urn:btmh:1220{}", v2.to_hex()));
        }
        let mut s = format!("magnet:?{}", topics.join("&"));
        if let Some(dn) = &self.display_name {
            s.push_str("&dn=");
            s.extend(utf8_percent_encode(dn, VALUE));
        }
        for p in &self.peers {
            s.push_str(&format!("&x.pe={p}"));
        }
        for t in &self.trackers {
            s.push_str("&tr=");
            s.extend(utf8_percent_encode(t, VALUE));
        }
        s
    }
}

impl MutableUrl {
    /// `magnet:?xs=urn:btpk:<64 lowercase hex>&s=<salt hex>`; `&s=` is
    /// omitted when the salt is empty.
    pub fn to_url(&self) -> String {
        let mut s = format!("magnet:?xs=urn:btpk:{}", hex::encode(self.public_key));
        if !self.salt.is_empty() {
            s.push_str("&s=");
            s.push_str(&hex::encode(&self.salt));
        }
        s
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Url::Magnet(m) => f.write_str(&m.to_url()),
            Url::Mutable(m) => f.write_str(&m.to_url()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "c14199bbec64d0e9e439aa3b6b7639e666b86eca";

    #[test]
    fn bare_info_hashes_are_links_where_a_user_types_one() {
        let want = parse(&format!("magnet:?xt=urn:btih:{HEX}")).unwrap();
        assert_eq!(parse_arg(HEX).unwrap(), want);
        assert_eq!(parse_arg(&format!(" {HEX}\n")).unwrap(), want);
        assert_eq!(HEX.into_url().unwrap(), want);
        assert_eq!(want.clone().into_url().unwrap(), want);
        // Not 40 hex: still an error, and the strict parser wants magnet:?
        assert_eq!(parse_arg(&HEX[1..]), Err(MagnetError::NotMagnet));
        assert_eq!(parse(HEX), Err(MagnetError::NotMagnet));
    }

    fn magnet(s: &str) -> Magnet {
        match parse(s).unwrap() {
            Url::Magnet(m) => m,
            other => panic!("expected a magnet, got {other:?}"),
        }
    }

    #[test]
    fn hex_info_hash_any_case() {
        let m = magnet(&format!("magnet:?xt=urn:btih:{}", HEX.to_uppercase()));
        assert_eq!(m.info_hash.to_hex(), HEX);
        assert_eq!(m, Magnet::new(InfoHash::from_hex(HEX).unwrap()));
        let m = magnet(&format!("MAGNET:?XT=urn:btih:{HEX}").replace("XT", "xt"));
        assert_eq!(m.info_hash.to_hex(), HEX);
    }

    #[test]
    fn base32_info_hash_any_case() {
        let ih = InfoHash::from_hex(HEX).unwrap();
        let b32 = data_encoding::BASE32.encode(&ih.0);
        assert_eq!(b32.len(), 32);
        assert_eq!(magnet(&format!("magnet:?xt=urn:btih:{b32}")).info_hash, ih);
        let lower = b32.to_lowercase();
        assert_eq!(
            magnet(&format!("magnet:?xt=urn:btih:{lower}")).info_hash,
            ih
        );
    }

    #[test]
    fn bad_info_hashes() {
        assert_eq!(
            parse("magnet:?xt=urn:btih:abcd"),
            Err(MagnetError::BadInfoHash(4))
        );
        let not_hex = "g".repeat(40);
        assert_eq!(
            parse(&format!("magnet:?xt=urn:btih:{not_hex}")),
            Err(MagnetError::BadInfoHashDigits(40, "hex (0-9, a-f)"))
        );
        let not_b32 = "1".repeat(32);
        assert_eq!(
            parse(&format!("magnet:?xt=urn:btih:{not_b32}")),
            Err(MagnetError::BadInfoHashDigits(32, "base32 (A-Z, 2-7)"))
        );
        assert_eq!(
            MagnetError::BadInfoHash(4).to_string(),
            "info-hash must be 40 hex or 32 base32 characters, got 4"
        );
    }

    #[test]
    fn not_a_magnet_and_missing_topic() {
        assert_eq!(parse("http://x/?xt=1"), Err(MagnetError::NotMagnet));
        assert_eq!(parse("magnet:"), Err(MagnetError::NotMagnet));
        assert_eq!(parse(""), Err(MagnetError::NotMagnet));
        assert_eq!(parse("magnet:?dn=x"), Err(MagnetError::MissingTopic));
        assert_eq!(parse("magnet:?"), Err(MagnetError::MissingTopic));
        assert_eq!(
            parse("magnet:?xt=urn:sha1:abc"),
            Err(MagnetError::MissingTopic)
        );
        assert_eq!(
            MagnetError::NotMagnet.to_string(),
            "not a magnet link (must start with magnet:?)"
        );
    }

    /// v2 info-hash of libtorrent's `v2_only.torrent` (EXPECTATIONS.md).
    const V2: &str = "95e04d0c4bad94ab206efa884666fd89777dbe4f7bd9945af1829037a85c6192";

    #[test]
    fn v2_only_link() {
        let m = magnet(&format!("magnet:?xt=urn:btmh:1220{V2}&dn=test1MB"));
        assert_eq!(m.info_hash_v2.unwrap().to_hex(), V2);
        assert!(!m.has_v1);
        assert_eq!(m.info_hash_v1(), None);
        // the 20-byte id is the truncated SHA-256
        assert_eq!(m.info_hash.to_hex(), &V2[..40]);
        assert_eq!(m.display_name.as_deref(), Some("test1MB"));
        // any case, and the multihash header in upper case too
        let upper = magnet(&format!("magnet:?xt=URN:BTMH:1220{}", V2.to_uppercase()));
        assert_eq!(upper.info_hash_v2, m.info_hash_v2);
        let v2 = InfoHashV2::from_hex(V2).unwrap();
        let mut made = Magnet::v2(v2);
        made.display_name = Some("test1MB".into());
        assert_eq!(made, m);
        assert_eq!(
            m.to_url(),
            format!("magnet:?xt=urn:btmh:1220{V2}&dn=test1MB")
        );
        assert_eq!(parse(&m.to_url()).unwrap(), Url::Magnet(m));
    }

    #[test]
    fn hybrid_link_both_orders() {
        for url in [
            format!("magnet:?xt=urn:btmh:1220{V2}&xt=urn:btih:{HEX}"),
            format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:1220{V2}"),
        ] {
            let m = magnet(&url);
            assert_eq!(m.info_hash.to_hex(), HEX);
            assert!(m.has_v1);
            assert_eq!(m.info_hash_v1().unwrap().to_hex(), HEX);
            assert_eq!(m.info_hash_v2.unwrap().to_hex(), V2);
            let made = Magnet::hybrid(
                InfoHash::from_hex(HEX).unwrap(),
                InfoHashV2::from_hex(V2).unwrap(),
            );
            assert_eq!(made, m);
            assert_eq!(
                m.to_url(),
                format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:1220{V2}")
            );
            assert_eq!(parse(&m.to_url()).unwrap(), Url::Magnet(m));
        }
        // the first of each kind wins
        let other = "cd".repeat(32);
        let m = magnet(&format!(
            "magnet:?xt=urn:btmh:1220{V2}&xt=urn:btmh:1220{other}&xt=urn:btih:{HEX}"
        ));
        assert_eq!(m.info_hash_v2.unwrap().to_hex(), V2);
    }

    #[test]
    fn bad_btmh() {
        // wrong lengths, not hex, other multihash functions
        assert_eq!(
            parse(&format!("magnet:?xt=urn:btmh:{V2}")),
            Err(MagnetError::BadV2InfoHash(64))
        );
        assert_eq!(
            parse(&format!("magnet:?xt=urn:btmh:1220{}", &V2[..62])),
            Err(MagnetError::BadV2InfoHash(66))
        );
        assert_eq!(
            parse(&format!("magnet:?xt=urn:btmh:1220{}zz", &V2[..62])),
            Err(MagnetError::BadV2InfoHash(68))
        );
        assert_eq!(
            parse(&format!("magnet:?xt=urn:btmh:1120{V2}")),
            Err(MagnetError::UnsupportedMultihash("1120".into()))
        );
        assert_eq!(
            parse(&format!("magnet:?xt=urn:btmh:1214{V2}")),
            Err(MagnetError::UnsupportedMultihash("1214".into()))
        );
        // a multi-byte character where the header is: refused, no panic
        assert_eq!(
            parse(&format!("magnet:?xt=urn:btmh:12%C3%A9{V2}")),
            Err(MagnetError::BadV2InfoHash(68))
        );
        // a bad btmh is an error even next to a good btih
        assert!(parse(&format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:12")).is_err());
        assert_eq!(
            MagnetError::UnsupportedMultihash("1120".into()).to_string(),
            "v2 info-hash (xt=urn:btmh:) must be a SHA-256 multihash (starting 1220), got one \
             starting 1120"
        );
        assert_eq!(
            MagnetError::BadV2InfoHash(64).to_string(),
            "v2 info-hash (xt=urn:btmh:) must be 68 hex characters (1220 and a SHA-256), got 64"
        );
    }

    #[test]
    fn display_name_peers_trackers_unknown() {
        let m = magnet(&format!(
            "magnet:?xt=urn:btih:{HEX}&dn=My+File%20%C3%A9.txt&x.pe=127.0.0.1:6881\
             &x.pe=%5B::1%5D:51413&x.pe=[2001:db8::1]:1&tr=udp%3A%2F%2Ft.example%3A80\
             &foo=bar&novalue&x.pe=peer.example.org:6881"
        ));
        assert_eq!(m.display_name.as_deref(), Some("My File é.txt"));
        assert_eq!(
            m.peers,
            vec![
                "127.0.0.1:6881".parse::<SocketAddr>().unwrap(),
                "[::1]:51413".parse().unwrap(),
                "[2001:db8::1]:1".parse().unwrap(),
            ]
        );
        assert_eq!(m.trackers, vec!["udp://t.example:80".to_string()]);
    }

    #[test]
    fn bad_peers() {
        for bad in [
            "foo",
            "1.2.3.4",
            "1.2.3.4:0",
            "1.2.3.4:99999",
            ":80",
            "a b:1",
        ] {
            let url = format!("magnet:?xt=urn:btih:{HEX}&x.pe={}", bad.replace(' ', "%20"));
            assert_eq!(
                parse(&url),
                Err(MagnetError::BadPeer(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(
            MagnetError::BadPeer("foo".into()).to_string(),
            "bad x.pe peer address 'foo'"
        );
    }

    #[test]
    fn mutable_urls() {
        let pk = "8543d3e6115f0f98c944077a4493dcd543e49c739fd998550a1f614ab36ed63e";
        let u = parse(&format!("magnet:?xs=urn:btpk:{pk}&s=6162")).unwrap();
        let Url::Mutable(m) = &u else { panic!("{u:?}") };
        assert_eq!(hex::encode(m.public_key), pk);
        assert_eq!(m.salt, b"ab");
        assert_eq!(m.to_url(), format!("magnet:?xs=urn:btpk:{pk}&s=6162"));
        assert_eq!(u.to_string().parse::<Url>().unwrap(), u);

        let u = parse(&format!("magnet:?xs=urn:btpk:{}", pk.to_uppercase())).unwrap();
        let Url::Mutable(m) = &u else { panic!("{u:?}") };
        assert!(m.salt.is_empty());
        assert_eq!(m.to_url(), format!("magnet:?xs=urn:btpk:{pk}"));

        // salt of exactly 64 bytes is fine, 65 is not
        let ok = "ab".repeat(64);
        assert!(parse(&format!("magnet:?xs=urn:btpk:{pk}&s={ok}")).is_ok());
        let long = "ab".repeat(65);
        assert_eq!(
            parse(&format!("magnet:?xs=urn:btpk:{pk}&s={long}")),
            Err(MagnetError::SaltTooLong(65))
        );
        assert_eq!(
            MagnetError::SaltTooLong(65).to_string(),
            "salt longer than 64 bytes (65 bytes)"
        );
        assert!(matches!(
            parse(&format!("magnet:?xs=urn:btpk:{pk}&s=zz")),
            Err(MagnetError::BadSaltHex(_))
        ));
        assert!(matches!(
            parse("magnet:?xs=urn:btpk:abcd"),
            Err(MagnetError::BadPublicKey(_))
        ));
        // an `xs` exact-source URL is not a BEP 46 key
        assert_eq!(
            parse("magnet:?xs=http%3A%2F%2Fexample.org%2Fa.torrent"),
            Err(MagnetError::MissingTopic)
        );
    }

    #[test]
    fn to_url_round_trips() {
        let mut m = Magnet::new(InfoHash::from_hex(HEX).unwrap());
        assert_eq!(m.to_url(), format!("magnet:?xt=urn:btih:{HEX}"));
        m.display_name = Some("a b&c=d/é+".into());
        m.peers = vec!["10.0.0.1:1".parse().unwrap(), "[::1]:2".parse().unwrap()];
        m.trackers = vec!["udp://t:1/announce?x=1&y=2".into()];
        let url = m.to_url();
        assert!(url.starts_with(&format!("magnet:?xt=urn:btih:{HEX}&dn=a%20b%26c%3Dd%2F")));
        assert_eq!(parse(&url).unwrap(), Url::Magnet(m));
    }
}
