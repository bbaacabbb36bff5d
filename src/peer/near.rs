//! Whether a peer address is *near*: on this host or on a network we are
//! attached to, where TCP is the better first transport to dial.
//!
//! Why: uTP (BEP 29) exists for paths through the internet. Its delay-based
//! congestion control yields to other traffic on a shared uplink, and its
//! UDP mapping is what NAT holepunching (BEP 55) reuses: a relay passes on
//! the address it sees our connection at, which is a usable UDP mapping
//! only when that connection is uTP. Neither matters on loopback or a LAN,
//! and there a userspace uTP stack costs throughput and CPU that kernel TCP
//! does not (measured: 81 MB/s over uTP against 219 MB/s over TCP on
//! loopback, `bench/RESULTS.md`). So [`crate::peer::transport::Transports::dial`]
//! dials TCP first to a near peer and uTP first to everyone else.
//!
//! Near means any of:
//! - loopback (`127.0.0.0/8`, `::1`) or one of our own addresses;
//! - a private or link-local range: `10.0.0.0/8`, `172.16.0.0/12`,
//!   `192.168.0.0/16` (RFC 1918), `169.254.0.0/16` (RFC 3927),
//!   `fc00::/7` (unique local, RFC 4193), `fe80::/10`; IPv4-mapped IPv6
//!   addresses count as their IPv4 address;
//! - inside the subnet of an address of one of our interfaces (a LAN with
//!   public addresses, e.g. an IPv6 /64), read with getifaddrs(3) and kept
//!   for [`SUBNETS_TTL`].
//!
//! The carrier-grade NAT range `100.64.0.0/10` is not near: it spans a
//! carrier's network, where NAT traversal does matter.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the subnets read from our interfaces are reused before they
/// are read again (interfaces and addresses change rarely; a dial must not
/// cost a netlink dump).
pub const SUBNETS_TTL: Duration = Duration::from_secs(30);

/// Whether `ip` is on this host or a network we are attached to (module
/// docs). Reads the interfaces at most once per [`SUBNETS_TTL`]; when
/// getifaddrs(3) fails only the fixed ranges count.
pub fn is_near(ip: IpAddr) -> bool {
    // An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) counts as IPv4.
    let ip = ip.to_canonical();
    in_fixed_ranges(ip) || attached_subnets().iter().any(|s| s.contains(ip))
}

/// Loopback, RFC 1918 private, link-local, unique local (module docs).
pub fn in_fixed_ranges(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(a) => a.is_loopback() || a.is_private() || a.is_link_local(),
        IpAddr::V6(a) => {
            a.is_loopback()
                || (a.segments()[0] & 0xfe00) == 0xfc00
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// An address with its prefix length: the subnet of an interface address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The interface's address.
    pub addr: IpAddr,
    /// Prefix length in bits (0..=32 for IPv4, 0..=128 for IPv6).
    pub prefix: u8,
}

impl Subnet {
    /// Whether `ip` is inside this subnet (same family, same first
    /// `prefix` bits). A prefix of 0 contains nothing: an interface with a
    /// default-route-sized netmask says nothing about nearness.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                same_prefix(u32::from(a).into(), u32::from(b).into(), 32, self.prefix)
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                same_prefix(u128::from(a), u128::from(b), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// Whether `a` and `b`, numbers of `bits` bits, agree in their first
/// `prefix` bits (false for a prefix of 0 or above `bits`).
fn same_prefix(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    if prefix == 0 || prefix > bits {
        return false;
    }
    let shift = u32::from(bits - prefix);
    (a >> shift) == (b >> shift)
}

/// The subnets of our interfaces' addresses, read at most once per
/// [`SUBNETS_TTL`].
fn attached_subnets() -> Vec<Subnet> {
    static CACHE: Mutex<Option<(Instant, Vec<Subnet>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    match &*cache {
        Some((at, subnets)) if at.elapsed() < SUBNETS_TTL => subnets.clone(),
        _ => {
            let subnets = read_subnets();
            *cache = Some((Instant::now(), subnets.clone()));
            subnets
        }
    }
}

/// Every interface address with its netmask, from getifaddrs(3); empty
/// when it fails.
fn read_subnets() -> Vec<Subnet> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| {
            let addr = ifa.address.as_ref()?;
            let mask = ifa.netmask.as_ref()?;
            if let (Some(a), Some(m)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) {
                let prefix = u32::from(m.ip()).leading_ones() as u8;
                return Some(Subnet {
                    addr: IpAddr::V4(a.ip()),
                    prefix,
                });
            }
            let (a, m) = (addr.as_sockaddr_in6()?, mask.as_sockaddr_in6()?);
            Some(Subnet {
                addr: IpAddr::V6(a.ip()),
                prefix: u128::from(m.ip()).leading_ones() as u8,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn fixed_ranges() {
        for near in [
            "127.0.0.1",
            "127.9.9.9",
            "10.0.1.10",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.2",
            "169.254.3.4",
            "::1",
            "fd00::1",
            "fc12::1",
            "fe80::1",
            "::ffff:10.1.2.3",
            "::ffff:127.0.0.1",
        ] {
            assert!(in_fixed_ranges(ip(near)), "{near} should be near");
        }
        for far in [
            "8.8.8.8",
            "100.64.0.1",
            "172.32.0.1",
            "192.0.2.1",
            "198.51.100.10",
            "203.0.113.11",
            "2001:db8::10",
            "2001:db8:101::10",
            "::ffff:203.0.113.5",
            "fec0::1",
        ] {
            assert!(!in_fixed_ranges(ip(far)), "{far} should not be near");
        }
    }

    #[test]
    fn subnet_contains() {
        let s = Subnet {
            addr: ip("198.51.100.10"),
            prefix: 24,
        };
        assert!(s.contains(ip("198.51.100.200")));
        assert!(!s.contains(ip("198.51.101.1")));
        assert!(!s.contains(ip("2001:db8::1")));
        let s6 = Subnet {
            addr: ip("2001:db8:101::10"),
            prefix: 64,
        };
        assert!(s6.contains(ip("2001:db8:101::ffff:1")));
        assert!(!s6.contains(ip("2001:db8:102::10")));
        let host = Subnet {
            addr: ip("203.0.113.5"),
            prefix: 32,
        };
        assert!(host.contains(ip("203.0.113.5")));
        assert!(!host.contains(ip("203.0.113.6")));
        let none = Subnet {
            addr: ip("203.0.113.5"),
            prefix: 0,
        };
        assert!(!none.contains(ip("203.0.113.5")));
        assert!(!none.contains(ip("8.8.8.8")));
        let bad = Subnet {
            addr: ip("203.0.113.5"),
            prefix: 33,
        };
        assert!(!bad.contains(ip("203.0.113.5")));
    }

    #[test]
    fn our_own_loopback_subnet_is_read() {
        // every Linux host has 127.0.0.1/8 on lo
        assert!(
            read_subnets()
                .iter()
                .any(|s| s.addr == ip("127.0.0.1") && s.prefix == 8),
            "{:?}",
            read_subnets()
        );
        assert!(is_near(ip("127.0.0.1")));
    }
}
