//! Peer exchange (BEP 11, `ut_pex`): connected peers tell each other which
//! peers they connected to (`added`, with one flag byte each) and which they
//! dropped, in compact form (6 bytes per IPv4 peer, 18 per IPv6 peer: address
//! then big-endian port).
//!
//! Decoding is lenient and bounded: missing keys read as empty lists, a
//! trailing partial entry is ignored, missing flags read as 0, entries with
//! port 0 are skipped, and at most [`MAX_ENTRIES`] entries of each list are
//! kept (BEP 11 asks senders for at most 50 added and 50 dropped).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bencode::{self, Owned};
use crate::peer::wire::WireError;

/// `added.f` flag: the peer prefers encryption (BEP 11).
pub const FLAG_ENCRYPTION: u8 = 0x01;
/// `added.f` flag: the peer is a seed or upload-only.
pub const FLAG_SEED: u8 = 0x02;
/// `added.f` flag: the peer supports uTP (BEP 29).
pub const FLAG_UTP: u8 = 0x04;
/// `added.f` flag: the peer supports the holepunch extension (BEP 55).
pub const FLAG_HOLEPUNCH: u8 = 0x08;
/// `added.f` flag: the sender reached the peer by an outgoing connection, so
/// it is known to be reachable.
pub const FLAG_OUTGOING: u8 = 0x10;

/// Entries kept per list (IPv4 added, IPv6 added, IPv4 dropped, IPv6
/// dropped) when decoding; the rest are ignored.
pub const MAX_ENTRIES: usize = 200;

/// One `ut_pex` message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMessage {
    /// Peers the sender connected to since its last message, with their
    /// `FLAG_*` bits.
    pub added: Vec<(SocketAddr, u8)>,
    /// Peers the sender disconnected from since its last message.
    pub dropped: Vec<SocketAddr>,
}

impl PexMessage {
    /// The bencoded payload (`added`, `added.f`, `added6`, `added6.f`,
    /// `dropped`, `dropped6`; empty lists are left out), to send as
    /// `Message::Extended { id: <the peer's ut_pex id>, payload }`.
    pub fn encode(&self) -> Vec<u8> {
        let (mut a4, mut f4, mut a6, mut f6) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (addr, flags) in &self.added {
            if put_compact(addr, &mut a4, &mut a6) {
                f4.push(*flags);
            } else {
                f6.push(*flags);
            }
        }
        let (mut d4, mut d6) = (Vec::new(), Vec::new());
        for addr in &self.dropped {
            put_compact(addr, &mut d4, &mut d6);
        }
        let mut d = Owned::dict();
        for (key, v) in [
            ("added", a4),
            ("added.f", f4),
            ("added6", a6),
            ("added6.f", f6),
            ("dropped", d4),
            ("dropped6", d6),
        ] {
            if !v.is_empty() {
                d = d.insert(key, v);
            }
        }
        d.encode()
    }

    /// Decodes a received payload. Errors: [`WireError::Bencode`] when it
    /// is not bencode, [`WireError::Malformed`] (message `"ut_pex"`) when it
    /// is not a dictionary; everything else is lenient (see the module doc).
    pub fn decode(payload: &[u8]) -> Result<PexMessage, WireError> {
        const NAME: &str = "ut_pex";
        let (v, _) = bencode::decode_prefix(payload, bencode::Limits::default())
            .map_err(|err| WireError::Bencode { message: NAME, err })?;
        if v.as_dict().is_none() {
            return Err(WireError::malformed(NAME, "not a dictionary"));
        }
        let bytes = |key: &[u8]| v.get(key).and_then(|x| x.as_bytes()).unwrap_or(&[]);
        let mut msg = PexMessage::default();
        for (list, flags, width) in [
            (b"added".as_slice(), b"added.f".as_slice(), 6),
            (b"added6", b"added6.f", 18),
        ] {
            let flags = bytes(flags);
            msg.added.extend(
                parse_compact(bytes(list), width)
                    .enumerate()
                    .filter(|(_, a)| a.port() != 0)
                    .take(MAX_ENTRIES)
                    .map(|(i, a)| (a, flags.get(i).copied().unwrap_or(0))),
            );
        }
        for (list, width) in [(b"dropped".as_slice(), 6), (b"dropped6", 18)] {
            msg.dropped.extend(
                parse_compact(bytes(list), width)
                    .filter(|a| a.port() != 0)
                    .take(MAX_ENTRIES),
            );
        }
        Ok(msg)
    }
}

/// Appends `addr` in compact form to `v4` or `v6`; true when it went to `v4`.
/// IPv4-mapped IPv6 addresses are sent as IPv4.
fn put_compact(addr: &SocketAddr, v4: &mut Vec<u8>, v6: &mut Vec<u8>) -> bool {
    let ip = addr.ip().to_canonical();
    match ip {
        IpAddr::V4(a) => {
            v4.extend_from_slice(&a.octets());
            v4.extend_from_slice(&addr.port().to_be_bytes());
            true
        }
        IpAddr::V6(a) => {
            v6.extend_from_slice(&a.octets());
            v6.extend_from_slice(&addr.port().to_be_bytes());
            false
        }
    }
}

/// Whole `width`-byte entries of a compact list (6: IPv4, 18: IPv6); a
/// trailing partial entry is ignored.
fn parse_compact(b: &[u8], width: usize) -> impl Iterator<Item = SocketAddr> + '_ {
    b.chunks_exact(width).map(move |c| {
        let (ip, port) = c.split_at(width - 2);
        let port = u16::from_be_bytes([port[0], port[1]]);
        let ip = match <[u8; 4]>::try_from(ip) {
            Ok(a) => IpAddr::V4(Ipv4Addr::from(a)),
            Err(_) => {
                let mut a = [0u8; 16];
                a.copy_from_slice(ip);
                IpAddr::V6(Ipv6Addr::from(a))
            }
        };
        SocketAddr::new(ip, port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn round_trip() {
        let m = PexMessage {
            added: vec![
                (a("10.0.0.1:6881"), FLAG_SEED | FLAG_OUTGOING),
                (a("[2001:db8::1]:51413"), FLAG_UTP),
                (a("192.168.1.2:80"), 0),
            ],
            dropped: vec![a("1.2.3.4:5"), a("[::1]:7")],
        };
        let bytes = m.encode();
        assert!(
            bencode::decode(&bytes, bencode::Limits::default())
                .unwrap()
                .is_canonical()
        );
        let back = PexMessage::decode(&bytes).unwrap();
        // IPv4 entries come before IPv6 ones after a round trip
        assert_eq!(back.added, vec![m.added[0], m.added[2], m.added[1]]);
        assert_eq!(back.dropped, m.dropped);
        assert_eq!(
            PexMessage::decode(&PexMessage::default().encode()).unwrap(),
            PexMessage::default()
        );
    }

    #[test]
    fn exact_bytes() {
        let m = PexMessage {
            added: vec![(a("1.2.3.4:258"), FLAG_ENCRYPTION)],
            dropped: vec![],
        };
        assert_eq!(
            m.encode(),
            b"d5:added6:\x01\x02\x03\x04\x01\x027:added.f1:\x01e".to_vec()
        );
        // a mapped IPv6 address travels as IPv4
        let mapped = PexMessage {
            added: vec![(a("[::ffff:1.2.3.4]:258"), FLAG_ENCRYPTION)],
            dropped: vec![],
        };
        assert_eq!(mapped.encode(), m.encode());
    }

    #[test]
    fn lenient_decoding() {
        // truncated compact list: the partial entry is dropped; flags missing → 0
        let p = b"d5:added8:\x01\x02\x03\x04\x00\x50\x09\x097:dropped5:\x01\x02\x03\x04\x00e";
        let m = PexMessage::decode(p).unwrap();
        assert_eq!(m.added, vec![(a("1.2.3.4:80"), 0)]);
        assert!(m.dropped.is_empty());
        // truncated IPv6 list, flags longer than the list, wrong-typed keys
        let mut p = b"d6:added620:".to_vec();
        p.extend_from_slice(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 9, 0xaa, 0xbb,
        ]);
        p.extend_from_slice(b"8:added6.f3:\x04\x02\x027:droppedi5ee");
        let m = PexMessage::decode(&p).unwrap();
        assert_eq!(m.added, vec![(a("[::1]:9"), FLAG_UTP)]);
        assert!(m.dropped.is_empty());
        // port 0 is skipped, empty dictionary is fine, unknown keys ignored
        let m = PexMessage::decode(b"d5:added6:\x01\x02\x03\x04\x00\x001:xi1ee").unwrap();
        assert!(m.added.is_empty());
        assert_eq!(PexMessage::decode(b"de").unwrap(), PexMessage::default());
    }

    #[test]
    fn bounded() {
        let mut list = Vec::new();
        for i in 0..1000u32 {
            list.extend_from_slice(&i.to_be_bytes());
            list.extend_from_slice(&1u16.to_be_bytes());
        }
        let p = Owned::dict()
            .insert("added", list.clone())
            .insert("dropped", list)
            .encode();
        let m = PexMessage::decode(&p).unwrap();
        assert_eq!(m.added.len(), MAX_ENTRIES);
        assert_eq!(m.dropped.len(), MAX_ENTRIES);
    }

    #[test]
    fn junk_is_an_error() {
        assert!(matches!(
            PexMessage::decode(b"xyz"),
            Err(WireError::Bencode { .. })
        ));
        assert!(matches!(
            PexMessage::decode(b""),
            Err(WireError::Bencode { .. })
        ));
        assert!(matches!(
            PexMessage::decode(b"le"),
            Err(WireError::Malformed {
                message: "ut_pex",
                ..
            })
        ));
    }
}
