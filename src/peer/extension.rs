//! The extension protocol handshake (BEP 10): extended message 0, a bencoded
//! dictionary telling the other side which extensions we speak (`m`, name →
//! the message id *we* want to receive them under) and a few facts about us.
//!
//! Decoding is lenient, as data from other clients must be: unknown keys are
//! ignored, optional fields of the wrong type or out of range read as
//! absent, and unsorted dictionary keys are accepted. Only a payload that is
//! not a bencoded dictionary at all is an error.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use crate::bencode::{self, Owned};
use crate::peer::wire::WireError;

/// Extended message id of the extension handshake itself (BEP 10).
pub const HANDSHAKE_ID: u8 = 0;
/// The id under which we receive `ut_metadata` messages (BEP 9).
pub const UT_METADATA_ID: u8 = 1;
/// The id under which we receive `ut_pex` messages (BEP 11).
pub const UT_PEX_ID: u8 = 2;
/// Extension name of BEP 9 metadata exchange in `m`.
pub const UT_METADATA: &str = "ut_metadata";
/// Extension name of BEP 11 peer exchange in `m`.
pub const UT_PEX: &str = "ut_pex";

/// A BEP 10 extension handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtHandshake {
    /// `m`: extension name → extended message id the sender receives it
    /// under. 0 means "disabled" (in a repeated handshake: switched off);
    /// entries with ids outside 0..=255 are dropped while decoding.
    pub m: BTreeMap<String, u8>,
    /// `metadata_size` (BEP 9): size of the info dictionary in bytes.
    pub metadata_size: Option<u64>,
    /// `p`: the sender's TCP listen port.
    pub listen_port: Option<u16>,
    /// `v`: client name and version.
    pub client: Option<String>,
    /// `yourip`: our address as the sender sees it (4 or 16 bytes on the wire).
    pub yourip: Option<IpAddr>,
    /// `ipv6` (BEP 7, BEP 10): the sender's global IPv6 address (16 bytes on
    /// the wire), so an IPv4 connection tells the other side where to reach
    /// it over IPv6 too.
    pub ipv6: Option<Ipv6Addr>,
    /// `reqq`: how many outstanding `request` messages the sender queues.
    pub reqq: Option<u32>,
    /// `e` (BEP 10): the sender prefers encrypted connections (MSE/PE), so
    /// a dial to it should try MSE first.
    pub prefers_encryption: bool,
}

impl ExtHandshake {
    /// Our handshake: `ut_metadata` under [`UT_METADATA_ID`] and `ut_pex`
    /// under [`UT_PEX_ID`]; fill the optional fields as needed.
    pub fn ours() -> ExtHandshake {
        let mut m = BTreeMap::new();
        m.insert(UT_METADATA.to_string(), UT_METADATA_ID);
        m.insert(UT_PEX.to_string(), UT_PEX_ID);
        ExtHandshake {
            m,
            client: Some(concat!("btfs ", env!("CARGO_PKG_VERSION")).to_string()),
            ..ExtHandshake::default()
        }
    }

    /// The id the sender wants `name` sent under, or `None` when it does not
    /// support it (absent or 0).
    pub fn id_of(&self, name: &str) -> Option<u8> {
        self.m.get(name).copied().filter(|&id| id != 0)
    }

    /// The bencoded payload (canonical, keys sorted), to send as
    /// `Message::Extended { id: HANDSHAKE_ID, payload }`.
    pub fn encode(&self) -> Vec<u8> {
        let mut m = Owned::dict();
        for (name, id) in &self.m {
            m = m.insert(name.as_bytes(), Owned::Int(i64::from(*id)));
        }
        let mut d = Owned::dict().insert("m", m);
        if let Some(size) = self.metadata_size {
            d = d.insert(
                "metadata_size",
                Owned::Int(size.min(i64::MAX as u64) as i64),
            );
        }
        if let Some(p) = self.listen_port {
            d = d.insert("p", Owned::Int(i64::from(p)));
        }
        if let Some(v) = &self.client {
            d = d.insert("v", v.as_str());
        }
        if let Some(ip) = self.yourip {
            let bytes = match ip {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            d = d.insert("yourip", bytes);
        }
        if let Some(a) = self.ipv6 {
            d = d.insert("ipv6", a.octets().to_vec());
        }
        if let Some(q) = self.reqq {
            d = d.insert("reqq", Owned::Int(i64::from(q)));
        }
        if self.prefers_encryption {
            d = d.insert("e", Owned::Int(1));
        }
        d.encode()
    }

    /// Decodes a received handshake payload. Errors: [`WireError::Bencode`]
    /// when it does not start with valid bencode, [`WireError::Malformed`]
    /// (message `"extension handshake"`) when that value is not a
    /// dictionary. Bytes after the dictionary are ignored.
    pub fn decode(payload: &[u8]) -> Result<ExtHandshake, WireError> {
        const NAME: &str = "extension handshake";
        let (v, _) = bencode::decode_prefix(payload, bencode::Limits::default())
            .map_err(|err| WireError::Bencode { message: NAME, err })?;
        if v.as_dict().is_none() {
            return Err(WireError::malformed(NAME, "not a dictionary"));
        }
        let mut m = BTreeMap::new();
        if let Some(entries) = v.get(b"m").and_then(|m| m.as_dict()) {
            for (name, id) in entries {
                let (Ok(name), Some(id)) = (std::str::from_utf8(name), id.as_int()) else {
                    continue;
                };
                let Ok(id) = u8::try_from(id) else { continue };
                // first occurrence wins, like bencode::Value::get
                m.entry(name.to_string()).or_insert(id);
            }
        }
        let int = |key: &[u8]| v.get(key).and_then(|x| x.as_int());
        Ok(ExtHandshake {
            m,
            metadata_size: int(b"metadata_size").and_then(|s| u64::try_from(s).ok()),
            listen_port: int(b"p")
                .and_then(|p| u16::try_from(p).ok())
                .filter(|&p| p != 0),
            client: v.get(b"v").and_then(|c| c.as_bytes()).map(|c| {
                // bounded: a client string is short; keep at most 128 bytes
                String::from_utf8_lossy(&c[..c.len().min(128)]).into_owned()
            }),
            yourip: v
                .get(b"yourip")
                .and_then(|y| y.as_bytes())
                .and_then(|b| match b.len() {
                    4 => Some(IpAddr::from(<[u8; 4]>::try_from(b).ok()?)),
                    16 => Some(IpAddr::from(<[u8; 16]>::try_from(b).ok()?)),
                    _ => None,
                }),
            ipv6: v
                .get(b"ipv6")
                .and_then(|y| y.as_bytes())
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
                .map(Ipv6Addr::from)
                .filter(|a| is_global_v6(*a)),
            reqq: int(b"reqq").and_then(|q| u32::try_from(q).ok()),
            prefers_encryption: int(b"e") == Some(1),
        })
    }
}

/// Whether `a` can be a peer's address from anywhere: not unspecified,
/// loopback, multicast, link-local (`fe80::/10`), unique-local
/// (`fc00::/7`) or IPv4-mapped.
pub fn is_global_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0] & 0xfe00) == 0xfc00
        || a.to_ipv4_mapped().is_some())
}

/// A global IPv6 address of this host ([`is_global_v6`]), for our `ipv6`
/// key; `None` without one. Read with getifaddrs(3) at most once a minute.
pub fn our_global_ipv6() -> Option<Ipv6Addr> {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static CACHE: Mutex<Option<(Instant, Option<Ipv6Addr>)>> = Mutex::new(None);
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((t, a)) = *c
        && t.elapsed() < Duration::from_secs(60)
    {
        return a;
    }
    let a = nix::ifaddrs::getifaddrs().ok().and_then(|mut it| {
        it.find_map(|ifa| {
            let a = ifa.address.as_ref()?.as_sockaddr_in6()?.ip();
            is_global_v6(a).then_some(a)
        })
    });
    *c = Some((Instant::now(), a));
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn round_trip() {
        let mut hs = ExtHandshake::ours();
        hs.metadata_size = Some(31_235);
        hs.listen_port = Some(6881);
        hs.yourip = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        hs.reqq = Some(250);
        let bytes = hs.encode();
        assert!(
            bencode::decode(&bytes, bencode::Limits::default())
                .unwrap()
                .is_canonical()
        );
        assert_eq!(ExtHandshake::decode(&bytes).unwrap(), hs);
        assert_eq!(hs.id_of(UT_METADATA), Some(UT_METADATA_ID));
        assert_eq!(hs.id_of(UT_PEX), Some(UT_PEX_ID));

        hs.yourip = Some(IpAddr::V6(Ipv6Addr::LOCALHOST));
        assert_eq!(ExtHandshake::decode(&hs.encode()).unwrap(), hs);
        // BEP 7 `ipv6`: 16 bytes; a non-global address reads as absent
        hs.ipv6 = Some("2001:db8::5".parse().unwrap());
        assert!(hs.encode().windows(6).any(|w| w == b"4:ipv6"));
        assert_eq!(ExtHandshake::decode(&hs.encode()).unwrap(), hs);
        hs.ipv6 = Some("fe80::1".parse().unwrap());
        assert_eq!(ExtHandshake::decode(&hs.encode()).unwrap().ipv6, None);
        hs.ipv6 = None;
        assert_eq!(
            ExtHandshake::decode(&ExtHandshake::default().encode()).unwrap(),
            ExtHandshake::default()
        );
    }

    #[test]
    fn exact_bytes() {
        let hs = ExtHandshake {
            m: [(UT_METADATA.to_string(), 3)].into(),
            metadata_size: Some(100),
            ..Default::default()
        };
        assert_eq!(
            hs.encode(),
            b"d1:md11:ut_metadatai3ee13:metadata_sizei100ee".to_vec()
        );
    }

    #[test]
    fn unsorted_keys_and_libtorrent_shape() {
        // keys out of order, extra keys of every type, as real clients send
        let payload = b"d1:v14:libtorrent 2.01:md6:ut_pexi2e11:ut_metadatai3e11:lt_donthavei7ee\
            12:complete_agoi-1e13:metadata_sizei5000e4:reqqi500e1:pi6881e6:yourip4:\x7f\x00\x00\x01\
            11:upload_onlyi1ee";
        let hs = ExtHandshake::decode(payload).unwrap();
        assert_eq!(hs.id_of(UT_METADATA), Some(3));
        assert_eq!(hs.id_of(UT_PEX), Some(2));
        assert_eq!(hs.m.len(), 3);
        assert_eq!(hs.metadata_size, Some(5000));
        assert_eq!(hs.listen_port, Some(6881));
        assert_eq!(hs.reqq, Some(500));
        assert_eq!(hs.client.as_deref(), Some("libtorrent 2.0"));
        assert_eq!(hs.yourip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn bad_optional_fields_read_as_absent() {
        let payload =
            b"d1:md11:ut_metadatai256e6:ut_pexi-1e3:fooi0e3:bar3:xyz4:\xff\xfe\xfd\xfci4ee\
            13:metadata_sizei-5e1:pi70000e1:vi3e6:yourip3:abc4:reqq1:xe";
        let hs = ExtHandshake::decode(payload).unwrap();
        // 256 and -1 are out of range; "bar" is not an int; the non-UTF-8 name is dropped
        assert_eq!(hs.m, [("foo".to_string(), 0)].into());
        assert_eq!(hs.id_of("foo"), None, "0 means disabled");
        assert_eq!(hs.metadata_size, None);
        assert_eq!(hs.listen_port, None);
        assert_eq!(hs.client, None);
        assert_eq!(hs.yourip, None);
        assert_eq!(hs.reqq, None);
        // `m` of the wrong type, or missing
        assert!(ExtHandshake::decode(b"d1:mi1ee").unwrap().m.is_empty());
        assert!(ExtHandshake::decode(b"de").unwrap().m.is_empty());
        // trailing bytes after the dictionary are ignored
        assert!(ExtHandshake::decode(b"deJUNK").is_ok());
    }

    #[test]
    fn junk_is_an_error() {
        assert!(matches!(
            ExtHandshake::decode(b""),
            Err(WireError::Bencode { .. })
        ));
        assert!(matches!(
            ExtHandshake::decode(b"\x00\x01garbage"),
            Err(WireError::Bencode { .. })
        ));
        assert!(matches!(
            ExtHandshake::decode(b"d1:md"),
            Err(WireError::Bencode { .. })
        ));
        assert!(matches!(
            ExtHandshake::decode(b"li1ee"),
            Err(WireError::Malformed { .. })
        ));
        assert!(matches!(
            ExtHandshake::decode(b"4:spam"),
            Err(WireError::Malformed { .. })
        ));
    }
}
