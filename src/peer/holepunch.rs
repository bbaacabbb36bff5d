//! The holepunch extension (BEP 55, `ut_holepunch`): a peer that cannot
//! dial another one (both behind NAT routers) asks a third peer connected
//! to both (the relay) to introduce them; the relay tells each side the
//! other's address and both dial over uTP at once, so each router sees an
//! outgoing packet to the other before the other's packet arrives
//! ("simultaneous open").
//!
//! One message, an extended message (BEP 10) under the id the receiver
//! gave for `ut_holepunch` in its extension handshake:
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | `msg_type`: 0 rendezvous, 1 connect, 2 error |
//! | 1 | `addr_type`: 0 IPv4, 1 IPv6 |
//! | 4 or 16 | address, network order |
//! | 2 | port, network order |
//! | 4 | `err_code` (0 unless `msg_type` is error) |
//!
//! libtorrent (2.0.8 included) writes `err_code` only in error messages, so
//! a rendezvous or connect of 8 (IPv4) or 20 (IPv6) bytes is accepted as
//! having no error. We always write the field, as BEP 55 says; libtorrent
//! ignores it in rendezvous and connect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::peer::wire::WireError;

/// Extension name of BEP 55 in the extension handshake's `m`.
pub const UT_HOLEPUNCH: &str = "ut_holepunch";
/// The id under which we receive `ut_holepunch` messages.
pub const UT_HOLEPUNCH_ID: u8 = 4;

/// What a holepunch message asks (BEP 55 `msg_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HolepunchKind {
    /// 0x00, initiator → relay: introduce me to the peer at `addr`.
    Rendezvous,
    /// 0x01, relay → both sides: dial the peer at `addr` (over uTP) now.
    Connect,
    /// 0x02, relay → initiator: the rendezvous for `addr` failed.
    Error,
}

/// Why a relay refused a rendezvous (BEP 55 `err_code` of an error message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HolepunchError {
    /// 0x01: the relay knows no peer at that address.
    NoSuchPeer,
    /// 0x02: the relay is not connected to that peer.
    NotConnected,
    /// 0x03: that peer does not speak `ut_holepunch`.
    NoSupport,
    /// 0x04: the initiator asked to be introduced to itself.
    NoSelf,
    /// Any other code (kept as received, so it can be logged).
    Other(u32),
}

impl HolepunchError {
    /// The wire value (BEP 55 `err_code`).
    pub fn code(self) -> u32 {
        match self {
            HolepunchError::NoSuchPeer => 1,
            HolepunchError::NotConnected => 2,
            HolepunchError::NoSupport => 3,
            HolepunchError::NoSelf => 4,
            HolepunchError::Other(c) => c,
        }
    }

    /// The error with wire value `code` (0 is not an error: `None`).
    pub fn from_code(code: u32) -> Option<HolepunchError> {
        Some(match code {
            0 => return None,
            1 => HolepunchError::NoSuchPeer,
            2 => HolepunchError::NotConnected,
            3 => HolepunchError::NoSupport,
            4 => HolepunchError::NoSelf,
            c => HolepunchError::Other(c),
        })
    }
}

impl std::fmt::Display for HolepunchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HolepunchError::NoSuchPeer => f.write_str("no such peer"),
            HolepunchError::NotConnected => f.write_str("not connected"),
            HolepunchError::NoSupport => f.write_str("no support"),
            HolepunchError::NoSelf => f.write_str("no self"),
            HolepunchError::Other(c) => write!(f, "error code {c}"),
        }
    }
}

/// One `ut_holepunch` message (BEP 55).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HolepunchMsg {
    /// What it asks (`msg_type`).
    pub kind: HolepunchKind,
    /// The peer the message is about: the target of a rendezvous or error,
    /// the peer to dial for a connect. IPv4-mapped IPv6 addresses are
    /// written and read as IPv4.
    pub addr: SocketAddr,
    /// The reason of an error message; `None` for rendezvous and connect
    /// (and for an error message with code 0).
    pub error: Option<HolepunchError>,
}

impl HolepunchMsg {
    /// A rendezvous for `target`.
    pub fn rendezvous(target: SocketAddr) -> HolepunchMsg {
        HolepunchMsg {
            kind: HolepunchKind::Rendezvous,
            addr: target,
            error: None,
        }
    }

    /// A connect to `peer`.
    pub fn connect(peer: SocketAddr) -> HolepunchMsg {
        HolepunchMsg {
            kind: HolepunchKind::Connect,
            addr: peer,
            error: None,
        }
    }

    /// An error about `target`.
    pub fn error(target: SocketAddr, why: HolepunchError) -> HolepunchMsg {
        HolepunchMsg {
            kind: HolepunchKind::Error,
            addr: target,
            error: Some(why),
        }
    }

    /// The payload of the extended message: 12 bytes for IPv4, 24 for IPv6,
    /// `err_code` always included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(24);
        out.push(match self.kind {
            HolepunchKind::Rendezvous => 0,
            HolepunchKind::Connect => 1,
            HolepunchKind::Error => 2,
        });
        let ip = match self.addr.ip() {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(a) => {
                out.push(0);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.push(1);
                out.extend_from_slice(&a.octets());
            }
        }
        out.extend_from_slice(&self.addr.port().to_be_bytes());
        let code = self.error.map_or(0, HolepunchError::code);
        out.extend_from_slice(&code.to_be_bytes());
        out
    }

    /// Decodes a received payload. `err_code` may be missing in a
    /// rendezvous or connect (libtorrent's form); bytes after it are
    /// ignored. Errors ([`WireError::Malformed`], message `"ut_holepunch"`):
    /// an unknown `msg_type` or `addr_type`, a payload too short for its
    /// address, an error message without `err_code`.
    pub fn decode(payload: &[u8]) -> Result<HolepunchMsg, WireError> {
        const NAME: &str = "ut_holepunch";
        let bad = |why: &str| WireError::malformed(NAME, why.to_string());
        let [kind, addr_type, rest @ ..] = payload else {
            return Err(bad("shorter than 2 bytes"));
        };
        let kind = match kind {
            0 => HolepunchKind::Rendezvous,
            1 => HolepunchKind::Connect,
            2 => HolepunchKind::Error,
            k => return Err(bad(&format!("unknown msg_type {k}"))),
        };
        let (ip, rest): (IpAddr, &[u8]) = match addr_type {
            0 => {
                let (a, rest) = rest
                    .split_first_chunk::<4>()
                    .ok_or_else(|| bad("IPv4 address cut short"))?;
                (Ipv4Addr::from(*a).into(), rest)
            }
            1 => {
                let (a, rest) = rest
                    .split_first_chunk::<16>()
                    .ok_or_else(|| bad("IPv6 address cut short"))?;
                let a = Ipv6Addr::from(*a);
                (a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4), rest)
            }
            t => return Err(bad(&format!("unknown addr_type {t}"))),
        };
        let (port, rest) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| bad("port cut short"))?;
        let code = match rest.split_first_chunk::<4>() {
            Some((c, _)) => u32::from_be_bytes(*c),
            None if kind == HolepunchKind::Error => return Err(bad("error without err_code")),
            None => 0,
        };
        Ok(HolepunchMsg {
            kind,
            addr: SocketAddr::new(ip, u16::from_be_bytes(*port)),
            error: HolepunchError::from_code(code),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn exact_bytes_and_round_trip() {
        let m = HolepunchMsg::rendezvous(a("203.0.113.12:6881"));
        let b = m.encode();
        assert_eq!(b, [0, 0, 203, 0, 113, 12, 0x1a, 0xe1, 0, 0, 0, 0]);
        assert_eq!(HolepunchMsg::decode(&b).unwrap(), m);

        let m = HolepunchMsg::error(a("[2001:db8::5]:80"), HolepunchError::NoSupport);
        let b = m.encode();
        assert_eq!(b.len(), 24);
        assert_eq!(&b[..2], &[2, 1]);
        assert_eq!(&b[18..], &[0, 80, 0, 0, 0, 3]);
        assert_eq!(HolepunchMsg::decode(&b).unwrap(), m);

        for e in 1..=5 {
            let m = HolepunchMsg::error(a("10.0.0.1:1"), HolepunchError::from_code(e).unwrap());
            assert_eq!(HolepunchMsg::decode(&m.encode()).unwrap(), m);
            assert_eq!(m.error.unwrap().code(), e);
        }
        // IPv4-mapped goes out as IPv4
        let m = HolepunchMsg::connect(a("[::ffff:198.51.100.7]:9"));
        assert_eq!(m.encode()[1], 0);
        assert_eq!(
            HolepunchMsg::decode(&m.encode()).unwrap().addr,
            a("198.51.100.7:9")
        );
    }

    #[test]
    fn libtorrent_form_without_err_code() {
        // libtorrent's write_holepunch_msg: no err_code for rendezvous/connect
        let m = HolepunchMsg::decode(&[1, 0, 203, 0, 113, 11, 0x1a, 0xe1]).unwrap();
        assert_eq!(m, HolepunchMsg::connect(a("203.0.113.11:6881")));
        let mut v6 = vec![0, 1];
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 1]);
        assert_eq!(
            HolepunchMsg::decode(&v6).unwrap(),
            HolepunchMsg::rendezvous(a("[2001:db8::1]:1"))
        );
        // trailing bytes after err_code are ignored
        let mut b = HolepunchMsg::connect(a("10.0.0.1:2")).encode();
        b.extend_from_slice(b"junk");
        assert_eq!(
            HolepunchMsg::decode(&b).unwrap(),
            HolepunchMsg::connect(a("10.0.0.1:2"))
        );
    }

    /// What the fuzz target checks, over many pseudo-random payloads with
    /// a valid-looking start: never a panic, and a decoded message
    /// survives a round trip.
    #[test]
    fn random_payloads_decode_or_fail_cleanly() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut ok = 0;
        for _ in 0..50_000 {
            let len = (next() % 30) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if len >= 2 {
                b[0] %= 4;
                b[1] %= 3;
            }
            if let Ok(m) = HolepunchMsg::decode(&b) {
                ok += 1;
                assert_eq!(HolepunchMsg::decode(&m.encode()).unwrap(), m, "{b:?}");
            }
        }
        assert!(ok > 1000, "only {ok} decoded");
    }

    #[test]
    fn malformed() {
        for bad in [
            &[][..],
            &[0],
            &[3, 0, 1, 2, 3, 4, 0, 1],       // unknown msg_type
            &[0, 2, 1, 2, 3, 4, 0, 1],       // unknown addr_type
            &[0, 0, 1, 2, 3],                // address cut short
            &[0, 0, 1, 2, 3, 4, 0],          // port cut short
            &[0, 1, 1, 2, 3, 4, 0, 1, 0, 0], // IPv6 cut short
            &[2, 0, 1, 2, 3, 4, 0, 1],       // error without err_code
            &[2, 0, 1, 2, 3, 4, 0, 1, 0, 0], // err_code cut short
        ] {
            assert!(
                matches!(
                    HolepunchMsg::decode(bad),
                    Err(WireError::Malformed {
                        message: "ut_holepunch",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }
}
