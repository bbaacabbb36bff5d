//! Reachability: whether peers on the internet can dial us, and our
//! external address.
//!
//! A home router (NAT) drops connections from the internet unless a port is
//! forwarded to us. [`portmap`] asks the router for that forwarding by UPnP
//! IGD or NAT-PMP/PCP, keeps it renewed, and deletes it on exit. What it
//! learns (the router's external address and the mapped port) goes into a
//! [`Reach`], the client-wide handle that the status line, the log, the DHT
//! (BEP 42 node id) and the peer sessions read. Peers also tell us our
//! address in the extension handshake (BEP 10 `yourip`): those claims are
//! counted here as our view of ourselves when no mapping says it.

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

pub mod portmap;

/// How a port mapping was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapMethod {
    /// UPnP Internet Gateway Device (`WANIPConnection` `AddPortMapping`).
    Upnp,
    /// NAT-PMP (RFC 6886).
    NatPmp,
    /// PCP (RFC 6887), NAT-PMP's successor on the same UDP port 5351.
    Pcp,
}

impl fmt::Display for MapMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MapMethod::Upnp => "UPnP",
            MapMethod::NatPmp => "NAT-PMP",
            MapMethod::Pcp => "PCP",
        })
    }
}

/// Whether peers on the internet can dial us (IPv4; see [`portmap`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Reachability {
    /// Port mapping is turned off (`--no-port-mapping`): nothing is known.
    #[default]
    Off,
    /// Looking for the router and asking it for mappings.
    Probing,
    /// The router forwards our listen port: peers dial `external` (the
    /// router's external IPv4 address and the TCP port mapped to us).
    Mapped {
        external: SocketAddr,
        method: MapMethod,
    },
    /// No mapping: we reach peers by dialling out only. `reason` is one
    /// line (no default route, no gateway answered, the gateway refused).
    Unreachable { reason: String },
}

impl Reachability {
    /// True when peers on the internet can dial us.
    pub fn is_reachable(&self) -> bool {
        matches!(self, Reachability::Mapped { .. })
    }
}

impl fmt::Display for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reachability::Off => f.write_str("port mapping off"),
            Reachability::Probing => f.write_str("mapping the port"),
            Reachability::Mapped { external, method } => {
                write!(f, "reachable at {external} ({method})")
            }
            Reachability::Unreachable { reason } => write!(f, "not reachable ({reason})"),
        }
    }
}

/// How many peers' `yourip` claims are remembered (one per peer IP).
const MAX_VOTES: usize = 32;
/// How many distinct peers must agree on a `yourip` before it is believed.
const VOTES_NEEDED: usize = 2;

/// The client-wide reachability state. Cheap to clone (a handle).
#[derive(Clone, Default)]
pub struct Reach {
    inner: Arc<ReachInner>,
}

#[derive(Default)]
struct ReachInner {
    /// What the port mapper found; subscribers see every change.
    status: watch::Sender<Reachability>,
    /// BEP 10 `yourip` claims: (the peer's IP, the IP it says we have),
    /// newest last, one per peer.
    votes: Mutex<VecDeque<(IpAddr, IpAddr)>>,
}

impl fmt::Debug for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reach")
            .field("status", &self.status())
            .finish()
    }
}

impl Reach {
    /// The current reachability.
    pub fn status(&self) -> Reachability {
        self.inner.status.borrow().clone()
    }

    /// A receiver that sees each change of [`Reach::status`].
    pub fn subscribe(&self) -> watch::Receiver<Reachability> {
        self.inner.status.subscribe()
    }

    /// Sets the status (the port mapper does).
    pub(crate) fn set(&self, r: Reachability) {
        self.inner.status.send_if_modified(|old| {
            let changed = *old != r;
            *old = r;
            changed
        });
    }

    /// The address peers on the internet dial, when a mapping is in force.
    pub fn mapped(&self) -> Option<SocketAddr> {
        match &*self.inner.status.borrow() {
            Reachability::Mapped { external, .. } => Some(*external),
            _ => None,
        }
    }

    /// Records that the peer at `voter` sees us as `ip` (BEP 10 `yourip`).
    pub(crate) fn vote(&self, voter: IpAddr, ip: IpAddr) {
        let mut v = self.inner.votes.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|(p, _)| *p != voter);
        if v.len() >= MAX_VOTES {
            v.pop_front();
        }
        v.push_back((voter, ip));
    }

    /// Our IP as peers see it: the mapped external address, else the
    /// `yourip` claim most peers agree on (at least two of them), else None.
    /// Loopback and unspecified claims are ignored.
    pub fn external_ip(&self) -> Option<IpAddr> {
        if let Some(a) = self.mapped() {
            return Some(a.ip());
        }
        let v = self.inner.votes.lock().unwrap_or_else(|e| e.into_inner());
        let mut counts: Vec<(IpAddr, usize)> = Vec::new();
        for (_, ip) in v.iter() {
            if ip.is_loopback() || ip.is_unspecified() {
                continue;
            }
            match counts.iter_mut().find(|(i, _)| i == ip) {
                Some((_, n)) => *n += 1,
                None => counts.push((*ip, 1)),
            }
        }
        counts
            .into_iter()
            .filter(|(_, n)| *n >= VOTES_NEEDED)
            .max_by_key(|(_, n)| *n)
            .map(|(ip, _)| ip)
    }

    /// The port to advertise to the peer at `to` (BEP 10 `p`), where our
    /// peer listener has `listen_port`: the router's mapped external port
    /// while a mapping is in force and `to` is on the internet in the
    /// mapping's address family (the router may map another port than
    /// ours, e.g. when ours is taken by another host), else `listen_port`.
    /// A peer on our own network (loopback, private, link-local, CGNAT
    /// 100.64.0.0/10, IPv6 unique-local) dials us directly, not through the
    /// router, so it gets `listen_port`; so does a peer of the other family:
    /// UPnP IGD and NAT-PMP map IPv4 ports only, and an IPv6 peer reaches
    /// our own address and listen port. The DHT's port: [`Reach::dht_port`].
    pub fn advertised_port(&self, listen_port: u16, to: IpAddr) -> u16 {
        match self.mapped() {
            Some(ext) if is_internet(to) && to.to_canonical().is_ipv6() == ext.is_ipv6() => {
                ext.port()
            }
            _ => listen_port,
        }
    }

    /// The port to announce on the DHT of one address family (BEP 5
    /// `announce_peer` over IPv4 when `v6` is false, over IPv6, BEP 32, when
    /// true): the mapped external port when the mapping is of that family,
    /// else `listen_port`.
    pub fn dht_port(&self, listen_port: u16, v6: bool) -> u16 {
        match self.mapped() {
            Some(ext) if ext.is_ipv6() == v6 => ext.port(),
            _ => listen_port,
        }
    }

    /// Whether `addr` is our own listen address as others know it: the
    /// mapped external address (a peer handing it to us by PEX).
    pub fn is_us(&self, addr: &SocketAddr) -> bool {
        self.mapped() == Some(*addr)
    }

    /// One status phrase for the progress line and the log, e.g. `reachable
    /// at 203.0.113.11:6881 (UPnP)` or `not reachable (no UPnP or NAT-PMP
    /// gateway answered); peers see us as 203.0.113.11`.
    pub fn summary(&self) -> String {
        let status = self.status();
        match (&status, self.external_ip()) {
            (Reachability::Mapped { .. }, _) | (_, None) => status.to_string(),
            (_, Some(ip)) => format!("{status}; peers see us as {ip}"),
        }
    }
}

/// Whether `ip` is an internet address (not on our own network: see
/// [`Reach::advertised_port`]).
fn is_internet(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            let cgnat = o[0] == 100 && (o[1] & 0xc0) == 64;
            !(a.is_loopback() || a.is_private() || a.is_link_local() || a.is_unspecified() || cgnat)
        }
        IpAddr::V6(a) => {
            let seg = a.segments()[0];
            let ula = (seg & 0xfe00) == 0xfc00;
            let link_local = (seg & 0xffc0) == 0xfe80;
            match a.to_ipv4_mapped() {
                Some(v4) => is_internet(IpAddr::V4(v4)),
                None => !(a.is_loopback() || a.is_unspecified() || ula || link_local),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yourip_needs_two_peers_and_mapping_wins() {
        let r = Reach::default();
        let us: IpAddr = "203.0.113.11".parse().unwrap();
        r.vote("198.51.100.10".parse().unwrap(), us);
        r.vote("198.51.100.10".parse().unwrap(), us);
        assert_eq!(r.external_ip(), None, "one peer twice is one vote");
        r.vote("198.51.100.11".parse().unwrap(), us);
        assert_eq!(r.external_ip(), Some(us));
        assert!(r.summary().contains("peers see us as 203.0.113.11"));
        let ext: SocketAddr = "203.0.113.12:7000".parse().unwrap();
        r.set(Reachability::Mapped {
            external: ext,
            method: MapMethod::Upnp,
        });
        assert_eq!(r.external_ip(), Some(ext.ip()));
        assert!(r.is_us(&ext));
        assert_eq!(r.summary(), "reachable at 203.0.113.12:7000 (UPnP)");
    }

    #[test]
    fn the_mapped_port_is_advertised_to_the_internet_only() {
        let r = Reach::default();
        let internet: IpAddr = "198.51.100.20".parse().unwrap();
        assert_eq!(r.dht_port(6881, false), 6881, "no mapping");
        assert_eq!(r.advertised_port(6881, internet), 6881);
        // The router mapped another external port than our listen port.
        r.set(Reachability::Mapped {
            external: "203.0.113.12:7000".parse().unwrap(),
            method: MapMethod::NatPmp,
        });
        assert_eq!(r.advertised_port(6881, internet), 7000);
        let v6: IpAddr = "2001:db8::20".parse().unwrap();
        // The mapping is IPv4: an IPv6 peer dials our own address and port.
        assert_eq!(r.advertised_port(6881, v6), 6881);
        assert_eq!(r.dht_port(6881, false), 7000, "the IPv4 DHT");
        assert_eq!(r.dht_port(6881, true), 6881, "the IPv6 DHT");
        let mapped_v4: IpAddr = "::ffff:198.51.100.20".parse().unwrap();
        assert_eq!(r.advertised_port(6881, mapped_v4), 7000);
        for lan in [
            "10.0.0.7",
            "192.168.1.7",
            "172.16.0.7",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.7",
            "::1",
            "fd00::7",
            "fe80::7",
            "::ffff:192.168.1.7",
        ] {
            let ip: IpAddr = lan.parse().unwrap();
            assert_eq!(r.advertised_port(6881, ip), 6881, "{lan}");
        }
    }

    #[test]
    fn loopback_claims_are_ignored() {
        let r = Reach::default();
        for i in 1..=5u8 {
            r.vote(IpAddr::from([10, 0, 0, i]), IpAddr::from([127, 0, 0, 1]));
        }
        assert_eq!(r.external_ip(), None);
    }
}
