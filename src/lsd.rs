//! Local Service Discovery (BEP 14): finding peers of our torrents on the
//! local network by UDP multicast, without the DHT.
//!
//! Every participant sends, for each torrent it is in, an HTTP-like
//! `BT-SEARCH` announce to the multicast groups `239.192.152.143:6771`
//! (IPv4, org-local) and `[ff15::efc0:988f]:6771` (IPv6, site-local):
//!
//! ```text
//! BT-SEARCH * HTTP/1.1\r\n
//! Host: 239.192.152.143:6771\r\n
//! Port: <our TCP listen port, decimal>\r\n
//! Infohash: <40 hex>\r\n            (one or more, consecutive)
//! cookie: <opaque, per process>\r\n
//! \r\n
//! \r\n
//! ```
//!
//! A receiver takes the peer's IP from the datagram's source address and the
//! port from the `Port` header, ignores announces carrying its own cookie
//! (multicast loopback), and ignores headers it does not know.
//!
//! [`Lsd::start`] binds `:6771` on both families with `SO_REUSEADDR` (other
//! BitTorrent clients on the host share the port), joins the groups on the
//! chosen interface (or the one the kernel routes multicast to) and sends
//! announces from the same sockets. IPv6 is best effort: when the group
//! cannot be joined (no IPv6, or an interface without multicast, such as
//! `lo`) it is logged at debug level and LSD runs on IPv4 alone.
//!
//! Sockets are set up with `socket2` (`SO_REUSEADDR` must be set before
//! `bind`, which `std` cannot do) and then handed to tokio.
//!
//! Incoming announces are parsed with bounds (datagrams over
//! [`MAX_DATAGRAM`] bytes are dropped, at most [`MAX_INFOHASHES`] info-hashes
//! are read from one) and rate-limited per source address and overall
//! ([`RateLimiter`]); nothing in a datagram can make the parser panic.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, InterfaceIndexOrAddress, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::InfoHash;

/// The LSD UDP port (BEP 14).
pub const LSD_PORT: u16 = 6771;
/// The IPv4 multicast group (BEP 14, "A", org-local).
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(239, 192, 152, 143);
/// The IPv6 multicast group (BEP 14, "B", site-local).
pub const GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0xefc0, 0x988f);
/// How often a torrent is announced while we take part in it (BEP 14:
/// "every 5 minutes").
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(300);
/// Shortest time between two announces of one info-hash (BEP 14: "no more
/// than 1 announce per minute").
pub const MIN_ANNOUNCE_GAP: Duration = Duration::from_secs(60);
/// Largest announce we send, in bytes (BEP 14: at most 1400 to avoid
/// fragmentation).
pub const MAX_PACKET: usize = 1400;
/// Largest datagram we parse, in bytes; longer ones are dropped.
pub const MAX_DATAGRAM: usize = 2048;
/// Most info-hashes read from one announce; the rest are ignored.
pub const MAX_INFOHASHES: usize = 64;

/// Settings of the LSD service.
#[derive(Debug, Clone)]
pub struct LsdConfig {
    /// The interface to send on and join the groups on, named by one of its
    /// addresses (`--lsd-interface`). An IPv4 address selects the IPv4
    /// interface directly; for IPv6 (and for an IPv6 address) the interface
    /// holding that address is looked up. `None`: the kernel chooses (the
    /// interface its multicast route points at).
    pub interface: Option<IpAddr>,
    /// UDP port of the groups (default [`LSD_PORT`]).
    pub port: u16,
    /// Also use the IPv6 group (best effort).
    pub ipv6: bool,
}

impl Default for LsdConfig {
    fn default() -> Self {
        LsdConfig {
            interface: None,
            port: LSD_PORT,
            ipv6: true,
        }
    }
}

/// A peer announced on the local network for one of the info-hashes it
/// listed: the datagram's source IP with the announced TCP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsdPeer {
    pub info_hash: InfoHash,
    pub addr: SocketAddr,
}

/// A parsed `BT-SEARCH` announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// `Port`: the sender's TCP listen port (1..=65535).
    pub port: u16,
    /// `Infohash` headers that were 40 hex characters, in order, at most
    /// [`MAX_INFOHASHES`].
    pub info_hashes: Vec<InfoHash>,
    /// `cookie`, if present (trimmed).
    pub cookie: Option<String>,
}

/// Why an announce was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("datagram of {0} bytes is too large")]
    TooLarge(usize),
    #[error("not a BT-SEARCH request")]
    NotBtSearch,
    #[error("no valid Port header")]
    BadPort,
    #[error("no valid Infohash header")]
    NoInfoHash,
}

/// Builds one announce for `info_hashes` (BEP 14 format), with `Host` the
/// group of `group` (`239.192.152.143:6771` or `[ff15::efc0:988f]:6771`),
/// our TCP `port` and `cookie`.
pub fn format_announce(
    group: SocketAddr,
    port: u16,
    info_hashes: &[InfoHash],
    cookie: &str,
) -> Vec<u8> {
    let mut s = String::with_capacity(128 + 52 * info_hashes.len());
    let _ = write!(
        s,
        "BT-SEARCH * HTTP/1.1\r\nHost: {group}\r\nPort: {port}\r\n"
    );
    for ih in info_hashes {
        let _ = write!(s, "Infohash: {}\r\n", ih.to_hex());
    }
    let _ = write!(s, "cookie: {cookie}\r\n\r\n\r\n");
    s.into_bytes()
}

/// Splits `info_hashes` into groups whose announces fit in [`MAX_PACKET`]
/// bytes: one info-hash per announce for up to 5 torrents (older clients
/// read only one), else as many as fit (BEP 14 allows both).
pub fn batches(info_hashes: &[InfoHash]) -> Vec<&[InfoHash]> {
    if info_hashes.len() <= 5 {
        return info_hashes.chunks(1).collect();
    }
    // Fixed part (request line, Host, Port, cookie, blank lines) is under
    // 150 bytes; each Infohash header is 52.
    let per = (MAX_PACKET - 150) / 52;
    info_hashes.chunks(per).collect()
}

/// Parses a received datagram. Lenient about what BEP 14 leaves open
/// (header-name case, `\n` or `\r\n` line ends, unknown headers, invalid
/// `Infohash` headers next to valid ones); bounded (see the module doc).
/// Errors: [`ParseError`].
pub fn parse_announce(buf: &[u8]) -> Result<Announce, ParseError> {
    if buf.len() > MAX_DATAGRAM {
        return Err(ParseError::TooLarge(buf.len()));
    }
    let text = String::from_utf8_lossy(buf);
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let first = lines.next().unwrap_or("");
    let method = first.split_ascii_whitespace().next().unwrap_or("");
    if !method.eq_ignore_ascii_case("BT-SEARCH") {
        return Err(ParseError::NotBtSearch);
    }
    let mut port = None;
    let mut info_hashes = Vec::new();
    let mut cookie = None;
    for line in lines {
        if line.is_empty() {
            break; // end of the headers
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("port") {
            port = value.parse::<u16>().ok().filter(|&p| p != 0);
        } else if name.eq_ignore_ascii_case("infohash") {
            if info_hashes.len() < MAX_INFOHASHES
                && value.len() == 40
                && let Some(ih) = InfoHash::from_hex(value)
                && !info_hashes.contains(&ih)
            {
                info_hashes.push(ih);
            }
        } else if name.eq_ignore_ascii_case("cookie") && cookie.is_none() {
            cookie = Some(value.chars().take(64).collect());
        }
    }
    let port = port.ok_or(ParseError::BadPort)?;
    if info_hashes.is_empty() {
        return Err(ParseError::NoInfoHash);
    }
    Ok(Announce {
        port,
        info_hashes,
        cookie,
    })
}

/// Token buckets limiting incoming announces: per source IP at most
/// `per_source` announces a minute (burst of the same size), and overall at
/// most `total` a second. Tracks at most 1024 sources; when full, sources
/// quiet for over a minute are forgotten, and new sources are refused until
/// one is.
#[derive(Debug)]
pub struct RateLimiter {
    per_source: f64,
    total: f64,
    total_tokens: f64,
    total_last: Instant,
    sources: HashMap<IpAddr, (f64, Instant)>,
}

impl RateLimiter {
    const MAX_SOURCES: usize = 1024;

    /// `per_source`: announces a minute from one IP; `total`: a second
    /// overall.
    pub fn new(per_source: u32, total: u32) -> RateLimiter {
        RateLimiter {
            per_source: f64::from(per_source.max(1)),
            total: f64::from(total.max(1)),
            total_tokens: f64::from(total.max(1)),
            total_last: Instant::now(),
            sources: HashMap::new(),
        }
    }

    /// Whether an announce from `ip` arriving at `now` may be processed
    /// (takes a token when it may).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.total_last).as_secs_f64();
        self.total_last = now;
        self.total_tokens = (self.total_tokens + dt * self.total).min(self.total);
        if self.total_tokens < 1.0 {
            return false;
        }
        if !self.sources.contains_key(&ip) && self.sources.len() >= Self::MAX_SOURCES {
            self.sources
                .retain(|_, (_, last)| now.saturating_duration_since(*last).as_secs() < 60);
            if self.sources.len() >= Self::MAX_SOURCES {
                return false;
            }
        }
        let (tokens, last) = self.sources.entry(ip).or_insert((self.per_source, now));
        let dt = now.saturating_duration_since(*last).as_secs_f64();
        *last = now;
        *tokens = (*tokens + dt * self.per_source / 60.0).min(self.per_source);
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        self.total_tokens -= 1.0;
        true
    }
}

/// The running LSD service: sockets on `:6771` joined to the groups, a
/// receive task per socket, and [`Lsd::announce`]. Cheap to clone (a
/// handle). Stops with [`Lsd::shutdown`] (or when the receiver of peers is
/// dropped).
#[derive(Clone)]
pub struct Lsd {
    inner: Arc<Inner>,
}

struct Inner {
    /// The IPv4 socket and its group address; absent if IPv4 failed.
    v4: Option<(Arc<UdpSocket>, SocketAddr)>,
    /// The IPv6 socket and its group address; absent when IPv6 is off or
    /// unavailable.
    v6: Option<(Arc<UdpSocket>, SocketAddr)>,
    /// Our TCP listen port, announced.
    peer_port: u16,
    /// Per-process cookie: our own announces come back by multicast
    /// loopback and are recognised by it.
    cookie: String,
    /// When each info-hash was last announced (for [`MIN_ANNOUNCE_GAP`]).
    last_announce: Mutex<HashMap<InfoHash, Instant>>,
    shutdown: watch::Sender<bool>,
}

impl Lsd {
    /// Opens the sockets and starts listening. Announced peers arrive on
    /// the returned channel (bounded; peers are dropped while it is full).
    /// `peer_port` is our TCP listen port. Errors: neither IPv4 nor IPv6
    /// could be set up (the IPv4 error is returned).
    pub async fn start(
        cfg: LsdConfig,
        peer_port: u16,
    ) -> io::Result<(Lsd, mpsc::Receiver<LsdPeer>)> {
        let ifindex = cfg.interface.and_then(ifindex_of);
        let v4 = match open_v4(&cfg, ifindex) {
            Ok(s) => Some((Arc::new(s), SocketAddr::new(IpAddr::V4(GROUP_V4), cfg.port))),
            Err(e) => {
                let msg = format!("LSD: IPv4 group {GROUP_V4}:{} unavailable: {e}", cfg.port);
                if cfg.interface.is_some() {
                    tracing::warn!("{msg}");
                } else {
                    tracing::info!("{msg} (choose an interface with --lsd-interface)");
                }
                None
            }
        };
        let v6 = if cfg.ipv6 {
            match open_v6(&cfg, ifindex.unwrap_or(0)) {
                Ok(s) => Some((Arc::new(s), SocketAddr::new(IpAddr::V6(GROUP_V6), cfg.port))),
                Err(e) => {
                    tracing::debug!("LSD: IPv6 group [{GROUP_V6}]:{} unavailable: {e}", cfg.port);
                    None
                }
            }
        } else {
            None
        };
        if v4.is_none() && v6.is_none() {
            return Err(io::Error::other(
                "LSD: neither the IPv4 nor the IPv6 group could be joined",
            ));
        }
        let mut c = [0u8; 4];
        getrandom::fill(&mut c).expect("OS random source");
        let cookie = hex::encode(c);
        let (tx, rx) = mpsc::channel(256);
        let inner = Arc::new(Inner {
            v4,
            v6,
            peer_port,
            cookie,
            last_announce: Mutex::new(HashMap::new()),
            shutdown: watch::channel(false).0,
        });
        let limiter = Arc::new(Mutex::new(RateLimiter::new(10, 50)));
        for (sock, _) in inner.v4.iter().chain(inner.v6.iter()) {
            tokio::spawn(recv_loop(
                sock.clone(),
                inner.cookie.clone(),
                limiter.clone(),
                tx.clone(),
                inner.shutdown.subscribe(),
            ));
        }
        tracing::info!(
            "LSD: listening on port {} (IPv4 {}, IPv6 {}), cookie {}",
            cfg.port,
            if inner.v4.is_some() { "on" } else { "off" },
            if inner.v6.is_some() { "on" } else { "off" },
            inner.cookie
        );
        Ok((Lsd { inner }, rx))
    }

    /// Our cookie (8 hex characters).
    pub fn cookie(&self) -> &str {
        &self.inner.cookie
    }

    /// Announces `info_hashes` on every group we joined, skipping those
    /// announced less than [`MIN_ANNOUNCE_GAP`] ago. Returns how many
    /// datagrams were sent. Send errors are logged at debug level.
    pub async fn announce(&self, info_hashes: &[InfoHash]) -> usize {
        let due: Vec<InfoHash> = {
            let mut last = self
                .inner
                .last_announce
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            last.retain(|_, t| now.duration_since(*t) < MIN_ANNOUNCE_GAP);
            let due: Vec<InfoHash> = info_hashes
                .iter()
                .copied()
                .filter(|ih| !last.contains_key(ih))
                .collect();
            for ih in &due {
                last.insert(*ih, now);
            }
            due
        };
        let mut sent = 0;
        for batch in batches(&due) {
            for (sock, group) in self.inner.v4.iter().chain(self.inner.v6.iter()) {
                let pkt = format_announce(*group, self.inner.peer_port, batch, &self.inner.cookie);
                match sock.send_to(&pkt, group).await {
                    Ok(_) => sent += 1,
                    Err(e) => tracing::debug!("LSD: announce to {group} failed: {e}"),
                }
            }
        }
        sent
    }

    /// Stops the receive tasks.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

/// Receives announces on `sock` until shutdown or until nobody reads the
/// peers any more.
async fn recv_loop(
    sock: Arc<UdpSocket>,
    cookie: String,
    limiter: Arc<Mutex<RateLimiter>>,
    tx: mpsc::Sender<LsdPeer>,
    mut shutdown: watch::Receiver<bool>,
) {
    // One byte more than we accept, to detect longer datagrams.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        let (n, from) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("LSD: receive: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let a = match parse_announce(&buf[..n]) {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!("LSD: ignoring datagram from {from}: {e}");
                continue;
            }
        };
        if a.cookie.as_deref() == Some(cookie.as_str()) {
            continue; // our own, looped back
        }
        let ip = from.ip().to_canonical();
        let allowed = limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allow(ip, Instant::now());
        if !allowed {
            tracing::debug!("LSD: rate limit: dropping an announce from {from}");
            continue;
        }
        let addr = match (ip, from) {
            // Link-local IPv6 needs its scope to be dialled.
            (IpAddr::V6(v6), SocketAddr::V6(f)) => {
                SocketAddr::V6(std::net::SocketAddrV6::new(v6, a.port, 0, f.scope_id()))
            }
            _ => SocketAddr::new(ip, a.port),
        };
        for ih in a.info_hashes {
            tracing::debug!("LSD: {addr} announced {ih}");
            match tx.try_send(LsdPeer {
                info_hash: ih,
                addr,
            }) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    }
}

/// A UDP socket with `SO_REUSEADDR` (and `IPV6_V6ONLY` for IPv6), bound
/// to the wildcard address and `port`, non-blocking.
fn bind_reuse(v6: bool, port: u16) -> io::Result<Socket> {
    let (domain, any) = if v6 {
        (Domain::IPV6, IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    } else {
        (Domain::IPV4, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    };
    let sock = Socket::new(domain, Type::DGRAM.nonblocking().cloexec(), None)?;
    sock.set_reuse_address(true)?;
    if v6 {
        sock.set_only_v6(true)?;
    }
    sock.bind(&SocketAddr::new(any, port).into())?;
    Ok(sock)
}

/// The interface for IPv4 multicast: by its IPv4 address when one was
/// given, else by index, else "any" (index 0: the kernel routes).
fn v4_interface(cfg: &LsdConfig, ifindex: Option<u32>) -> InterfaceIndexOrAddress {
    match cfg.interface {
        Some(IpAddr::V4(a)) if !a.is_unspecified() => InterfaceIndexOrAddress::Address(a),
        _ => InterfaceIndexOrAddress::Index(ifindex.unwrap_or(0)),
    }
}

fn open_v4(cfg: &LsdConfig, ifindex: Option<u32>) -> io::Result<UdpSocket> {
    let sock = bind_reuse(false, cfg.port)?;
    let interface = v4_interface(cfg, ifindex);
    sock.join_multicast_v4_n(&GROUP_V4, &interface)?;
    // Only datagrams of groups this socket joined (not of every group any
    // socket on the host joined on this port).
    sock.set_multicast_all_v4(false)?;
    if cfg.interface.is_some() {
        // IP_MULTICAST_IF takes an address: the one given, or an IPv4
        // address of the interface named by another address.
        let out = match interface {
            InterfaceIndexOrAddress::Address(a) => Some(a),
            InterfaceIndexOrAddress::Index(i) => ipv4_of_ifindex(i),
        };
        match out {
            Some(a) => sock.set_multicast_if_v4(&a)?,
            None => tracing::debug!("LSD: the chosen interface has no IPv4 address to send from"),
        }
    }
    sock.set_multicast_loop_v4(true)?;
    UdpSocket::from_std(sock.into())
}

fn open_v6(cfg: &LsdConfig, ifindex: u32) -> io::Result<UdpSocket> {
    let sock = bind_reuse(true, cfg.port)?;
    sock.join_multicast_v6(&GROUP_V6, ifindex)?;
    sock.set_multicast_all_v6(false)?;
    if ifindex != 0 {
        sock.set_multicast_if_v6(ifindex)?;
    }
    sock.set_multicast_loop_v6(true)?;
    UdpSocket::from_std(sock.into())
}

/// Index of the interface that holds address `ip`, if any (getifaddrs(3)).
pub fn ifindex_of(ip: IpAddr) -> Option<u32> {
    let name = nix::ifaddrs::getifaddrs()
        .ok()?
        .find(|ifa| ifa.address.as_ref().and_then(ip_of) == Some(ip))?
        .interface_name;
    nix::net::if_::if_nametoindex(name.as_str()).ok()
}

/// An IPv4 address of the interface with index `index`, if it has one.
fn ipv4_of_ifindex(index: u32) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
        let a = ifa.address.as_ref()?.as_sockaddr_in()?.ip();
        (nix::net::if_::if_nametoindex(ifa.interface_name.as_str()).ok()? == index).then_some(a)
    })
}

/// The IP address of an interface address entry (IPv4 or IPv6).
fn ip_of(sa: &nix::sys::socket::SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = sa.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ih(b: u8) -> InfoHash {
        InfoHash([b; 20])
    }

    #[test]
    fn format_and_parse_round_trip() {
        let group = SocketAddr::new(IpAddr::V4(GROUP_V4), LSD_PORT);
        let pkt = format_announce(group, 51413, &[ih(0xab), ih(0x01)], "deadbeef");
        let text = String::from_utf8(pkt.clone()).unwrap();
        assert!(text.starts_with("BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\n"));
        assert!(text.ends_with("cookie: deadbeef\r\n\r\n\r\n"));
        let a = parse_announce(&pkt).unwrap();
        assert_eq!(a.port, 51413);
        assert_eq!(a.info_hashes, vec![ih(0xab), ih(0x01)]);
        assert_eq!(a.cookie.as_deref(), Some("deadbeef"));
        let g6 = SocketAddr::new(IpAddr::V6(GROUP_V6), LSD_PORT);
        let pkt = format_announce(g6, 1, &[ih(2)], "c");
        assert!(
            String::from_utf8(pkt)
                .unwrap()
                .contains("Host: [ff15::efc0:988f]:6771\r\n")
        );
    }

    #[test]
    fn parses_libtorrent_style() {
        // As libtorrent sends it (hex cookie, lowercase hash).
        let p = b"BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n\
Infohash: 0123456789ABCDEF0123456789abcdef01234567\r\ncookie: 1a2b3c\r\n\r\n\r\n";
        let a = parse_announce(p).unwrap();
        assert_eq!(a.port, 6881);
        assert_eq!(
            a.info_hashes,
            vec![InfoHash::from_hex("0123456789abcdef0123456789abcdef01234567").unwrap()]
        );
        assert_eq!(a.cookie.as_deref(), Some("1a2b3c"));
        // bare \n, odd case, unknown headers, no cookie
        let p = b"bt-search * HTTP/1.1\nPORT:  80 \nX-Other: y\ninfohash:0101010101010101010101010101010101010101\n\n";
        let a = parse_announce(p).unwrap();
        assert_eq!((a.port, a.info_hashes.len(), a.cookie), (80, 1, None));
    }

    #[test]
    fn refuses_junk_without_panicking() {
        assert_eq!(parse_announce(b""), Err(ParseError::NotBtSearch));
        assert_eq!(
            parse_announce(b"M-SEARCH * HTTP/1.1\r\n\r\n"),
            Err(ParseError::NotBtSearch)
        );
        let no_port =
            b"BT-SEARCH * HTTP/1.1\r\nInfohash: 0101010101010101010101010101010101010101\r\n\r\n";
        assert_eq!(parse_announce(no_port), Err(ParseError::BadPort));
        for port in ["0", "65536", "-1", "x", ""] {
            let p = format!(
                "BT-SEARCH * HTTP/1.1\r\nPort: {port}\r\nInfohash: 0101010101010101010101010101010101010101\r\n\r\n"
            );
            assert_eq!(
                parse_announce(p.as_bytes()),
                Err(ParseError::BadPort),
                "{port}"
            );
        }
        let bad_ih = b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: 01\r\nInfohash: zz01010101010101010101010101010101010101\r\n\r\n";
        assert_eq!(parse_announce(bad_ih), Err(ParseError::NoInfoHash));
        // headers after the blank line are not headers
        let late = b"BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n\r\nInfohash: 0101010101010101010101010101010101010101\r\n";
        assert_eq!(parse_announce(late), Err(ParseError::NoInfoHash));
        assert_eq!(
            parse_announce(&vec![b'a'; MAX_DATAGRAM + 1]),
            Err(ParseError::TooLarge(MAX_DATAGRAM + 1))
        );
        // invalid UTF-8 and multi-byte characters next to the colon
        let p = b"BT-SEARCH\xff\xfe * HTTP/1.1\r\n\xc3\xa9:\xc3\xa9\r\nPort: 9\r\nInfohash: 0101010101010101010101010101010101010101\r\n";
        assert!(parse_announce(p).is_err());
        let p = "BT-SEARCH * HTTP/1.1\r\né:é\r\nPort: 9\r\nInfohash: 0101010101010101010101010101010101010101\r\n";
        assert_eq!(parse_announce(p.as_bytes()).unwrap().port, 9);
        // a 40-character header of multi-byte characters is not hex
        let p = format!(
            "BT-SEARCH * HTTP/1.1\r\nPort: 9\r\nInfohash: {}\r\n",
            "é".repeat(20)
        );
        assert_eq!(parse_announce(p.as_bytes()), Err(ParseError::NoInfoHash));
    }

    #[test]
    fn bounded_infohash_count_and_dedup() {
        let mut p = String::from("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n");
        for i in 0..(MAX_INFOHASHES as u8 + 10) {
            let _ = write!(p, "Infohash: {}\r\n", ih(i).to_hex());
            let _ = write!(p, "Infohash: {}\r\n", ih(i).to_hex());
        }
        p.truncate(MAX_DATAGRAM);
        let a = parse_announce(p.as_bytes()).unwrap();
        assert!(a.info_hashes.len() <= MAX_INFOHASHES);
        let mut d = a.info_hashes.clone();
        d.dedup();
        assert_eq!(d.len(), a.info_hashes.len());
    }

    #[test]
    fn batches_fit_in_a_packet() {
        let many: Vec<InfoHash> = (0..100u8).map(ih).collect();
        assert_eq!(batches(&many[..3]).len(), 3);
        let b = batches(&many);
        assert_eq!(b.iter().map(|x| x.len()).sum::<usize>(), 100);
        let g6 = SocketAddr::new(IpAddr::V6(GROUP_V6), LSD_PORT);
        for batch in b {
            assert!(format_announce(g6, 65535, batch, "ffffffff").len() <= MAX_PACKET);
        }
    }

    #[test]
    fn rate_limiter() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(3, 100);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!((0..3).all(|_| r.allow(a, t0)));
        assert!(!r.allow(a, t0));
        assert!(r.allow(b, t0));
        // 3 a minute: one token back after 20 s
        assert!(r.allow(a, t0 + Duration::from_secs(21)));
        assert!(!r.allow(a, t0 + Duration::from_secs(21)));
        // overall limit
        let mut r = RateLimiter::new(1000, 5);
        let n = (0..20u8)
            .filter(|&i| r.allow(IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)), t0))
            .count();
        assert_eq!(n, 5);
        // many sources do not grow the table without bound
        let mut r = RateLimiter::new(1, 1_000_000);
        for i in 0..5000u32 {
            r.allow(IpAddr::V4(Ipv4Addr::from(i)), t0);
        }
        assert!(r.sources.len() <= RateLimiter::MAX_SOURCES);
    }

    /// Two services in one network namespace find each other on loopback
    /// (IP_MULTICAST_IF = 127.0.0.1). Needs root: runs under `unshare`.
    #[test]
    fn loopback_exchange_in_a_namespace() {
        if std::env::var_os("BTFS_LSD_NETNS").is_none() {
            // SAFETY: geteuid has no preconditions.
            if !nix::unistd::geteuid().is_root() {
                eprintln!("SKIP loopback_exchange_in_a_namespace: needs root");
                return;
            }
            let exe = std::env::current_exe().unwrap();
            let st = std::process::Command::new("unshare")
                .args(["--net", "--"])
                .arg(exe)
                .args([
                    "--exact",
                    "lsd::tests::loopback_exchange_in_a_namespace",
                    "--test-threads=1",
                ])
                .env("BTFS_LSD_NETNS", "1")
                .status()
                .unwrap();
            assert!(st.success());
            return;
        }
        let st = std::process::Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(st.success());
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let cfg = LsdConfig {
                interface: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                port: LSD_PORT,
                ipv6: true,
            };
            let (a, mut ra) = Lsd::start(cfg.clone(), 1111).await.unwrap();
            let (b, mut rb) = Lsd::start(cfg, 2222).await.unwrap();
            assert_ne!(a.cookie(), b.cookie());
            assert!(a.announce(&[ih(7)]).await >= 1);
            // within a minute the same info-hash is not announced again
            assert_eq!(a.announce(&[ih(7)]).await, 0);
            let got = tokio::time::timeout(Duration::from_secs(5), rb.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got.info_hash, ih(7));
            assert_eq!(got.addr, "127.0.0.1:1111".parse().unwrap());
            // a does not hear itself
            assert!(
                tokio::time::timeout(Duration::from_millis(300), ra.recv())
                    .await
                    .is_err()
            );
            b.announce(&[ih(8)]).await;
            let got = tokio::time::timeout(Duration::from_secs(5), ra.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (got.info_hash, got.addr),
                (ih(8), "127.0.0.1:2222".parse().unwrap())
            );
            a.shutdown();
            b.shutdown();
        });
    }
}
