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
//! BitTorrent clients on the host share the port) and, like libtorrent,
//! joins the groups on every interface that is up, multicast-capable and not
//! loopback (IPv4 by index, IPv6 per interface index), and announces out of
//! each of them from a send socket per interface (`IP_MULTICAST_IF`,
//! `IPV6_MULTICAST_IF`). So LSD works with no default route and no multicast
//! route, on a host with several LANs. The interfaces are listed again every
//! 30 s (getifaddrs(3)): new ones are joined and the running torrents
//! announced there at once, vanished ones left. `--lsd-interface` narrows
//! LSD to one interface. IPv6 is best effort: when it cannot be used (no
//! IPv6, or an interface without an IPv6 address) LSD runs on IPv4 there.
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
    /// Narrows LSD to one interface, named by one of its addresses
    /// (`--lsd-interface`): the interface holding it (loopback too), IPv4
    /// announces sent from it when it is IPv4. `None` (the default): every
    /// interface that is up, multicast-capable and not loopback (see
    /// [`multicast_interfaces`]).
    pub interface: Option<IpAddr>,
    /// UDP port of the groups (default [`LSD_PORT`]).
    pub port: u16,
    /// Also use the IPv6 group (best effort).
    pub ipv6: bool,
    /// How often the interfaces are listed again to follow those that
    /// appear or go away (default 30 s).
    pub rescan: Duration,
}

impl Default for LsdConfig {
    fn default() -> Self {
        LsdConfig {
            interface: None,
            port: LSD_PORT,
            ipv6: true,
            rescan: Duration::from_secs(30),
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

/// The running LSD service: one receive socket per family on `:6771`,
/// joined to the group on every interface LSD runs on, a send socket per
/// interface and family, a receive task per receive socket, a task that
/// rescans the interfaces every [`LsdConfig::rescan`], and
/// [`Lsd::announce`]. Cheap to clone (a handle). Stops with
/// [`Lsd::shutdown`] (or when the receiver of peers is dropped).
#[derive(Clone)]
pub struct Lsd {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: LsdConfig,
    /// The IPv4 receive socket; absent if IPv4 failed.
    v4: Option<Arc<UdpSocket>>,
    /// The IPv6 receive socket; absent when IPv6 is off or unavailable.
    v6: Option<Arc<UdpSocket>>,
    /// The interfaces we joined the groups on, with their send sockets.
    links: Mutex<Vec<Link>>,
    /// Our TCP listen port, announced.
    peer_port: u16,
    /// Per-process cookie: our own announces come back by multicast
    /// loopback and are recognised by it.
    cookie: String,
    /// When each info-hash was last announced: for [`MIN_ANNOUNCE_GAP`],
    /// and to announce the torrents still running on an interface that
    /// appears (entries older than two [`ANNOUNCE_INTERVAL`]s are dropped).
    last_announce: Mutex<HashMap<InfoHash, Instant>>,
    shutdown: watch::Sender<bool>,
}

/// One interface LSD runs on, with the sockets that send there.
struct Link {
    iface: LsdInterface,
    /// Sends to the IPv4 group out of this interface (`IP_MULTICAST_IF`).
    send4: Option<Arc<UdpSocket>>,
    /// Sends to the IPv6 group out of this interface (`IPV6_MULTICAST_IF`).
    send6: Option<Arc<UdpSocket>>,
}

impl Link {
    /// The send sockets with their group addresses.
    fn targets(&self, port: u16) -> Vec<(Arc<UdpSocket>, SocketAddr)> {
        let g4 = SocketAddr::new(IpAddr::V4(GROUP_V4), port);
        let g6 = SocketAddr::new(IpAddr::V6(GROUP_V6), port);
        let mut t = Vec::new();
        t.extend(self.send4.iter().map(|s| (s.clone(), g4)));
        t.extend(self.send6.iter().map(|s| (s.clone(), g6)));
        t
    }
}

impl Lsd {
    /// Opens the receive sockets, joins the groups on every interface LSD
    /// runs on (see [`multicast_interfaces`]) and starts listening and
    /// following interfaces. Announced peers arrive on the returned channel
    /// (bounded; peers are dropped while it is full). `peer_port` is our
    /// TCP listen port. Having no interface yet is not an error (they are
    /// joined when they appear). Errors: neither the IPv4 nor the IPv6
    /// receive socket could be bound (the IPv4 error is returned).
    pub async fn start(
        cfg: LsdConfig,
        peer_port: u16,
    ) -> io::Result<(Lsd, mpsc::Receiver<LsdPeer>)> {
        let v4 = match open_recv(false, cfg.port) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::warn!("LSD: cannot bind UDP 0.0.0.0:{}: {e}", cfg.port);
                None
            }
        };
        let v6 = if cfg.ipv6 {
            match open_recv(true, cfg.port) {
                Ok(s) => Some(Arc::new(s)),
                Err(e) => {
                    tracing::debug!("LSD: IPv6 unavailable ([::]:{}): {e}", cfg.port);
                    None
                }
            }
        } else {
            None
        };
        if v4.is_none() && v6.is_none() {
            return Err(io::Error::other(
                "LSD: neither the IPv4 nor the IPv6 socket could be bound",
            ));
        }
        let mut c = [0u8; 4];
        getrandom::fill(&mut c).expect("OS random source");
        let cookie = hex::encode(c);
        let (tx, rx) = mpsc::channel(256);
        let inner = Arc::new(Inner {
            cfg,
            v4,
            v6,
            links: Mutex::new(Vec::new()),
            peer_port,
            cookie,
            last_announce: Mutex::new(HashMap::new()),
            shutdown: watch::channel(false).0,
        });
        let limiter = Arc::new(Mutex::new(RateLimiter::new(10, 50)));
        for sock in inner.v4.iter().chain(inner.v6.iter()) {
            tokio::spawn(recv_loop(
                sock.clone(),
                inner.cookie.clone(),
                limiter.clone(),
                tx.clone(),
                inner.shutdown.subscribe(),
            ));
        }
        let lsd = Lsd { inner };
        lsd.sync_interfaces();
        let n = lsd.interface_count();
        tracing::info!(
            "LSD: listening on port {} (IPv4 {}, IPv6 {}) on {n} interface{}, cookie {}",
            lsd.inner.cfg.port,
            if lsd.inner.v4.is_some() { "on" } else { "off" },
            if lsd.inner.v6.is_some() { "on" } else { "off" },
            if n == 1 { "" } else { "s" },
            lsd.inner.cookie
        );
        if n == 0 {
            tracing::info!(
                "LSD: no multicast interface yet (rescanning every {} s)",
                lsd.inner.cfg.rescan.as_secs()
            );
        }
        tokio::spawn(rescan_loop(lsd.clone()));
        Ok((lsd, rx))
    }

    /// Our cookie (8 hex characters).
    pub fn cookie(&self) -> &str {
        &self.inner.cookie
    }

    /// The interfaces LSD runs on now.
    pub fn interfaces(&self) -> Vec<LsdInterface> {
        self.lock_links().iter().map(|l| l.iface.clone()).collect()
    }

    fn interface_count(&self) -> usize {
        self.lock_links().len()
    }

    fn lock_links(&self) -> std::sync::MutexGuard<'_, Vec<Link>> {
        self.inner.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Announces `info_hashes` on every interface and group we joined,
    /// skipping those announced less than [`MIN_ANNOUNCE_GAP`] ago. Returns
    /// how many datagrams were sent. Send errors are logged at debug level.
    pub async fn announce(&self, info_hashes: &[InfoHash]) -> usize {
        let due: Vec<InfoHash> = {
            let mut last = self
                .inner
                .last_announce
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            last.retain(|_, t| now.duration_since(*t) < 2 * ANNOUNCE_INTERVAL);
            let due: Vec<InfoHash> = info_hashes
                .iter()
                .copied()
                .filter(|ih| {
                    last.get(ih)
                        .is_none_or(|t| now.duration_since(*t) >= MIN_ANNOUNCE_GAP)
                })
                .collect();
            for ih in &due {
                last.insert(*ih, now);
            }
            due
        };
        let port = self.inner.cfg.port;
        let targets: Vec<_> = self
            .lock_links()
            .iter()
            .flat_map(|l| l.targets(port))
            .collect();
        self.send(&due, &targets).await
    }

    /// Sends announces of `info_hashes` to every target; returns how many
    /// were sent.
    async fn send(
        &self,
        info_hashes: &[InfoHash],
        targets: &[(Arc<UdpSocket>, SocketAddr)],
    ) -> usize {
        let mut sent = 0;
        for batch in batches(info_hashes) {
            for (sock, group) in targets {
                let pkt = format_announce(*group, self.inner.peer_port, batch, &self.inner.cookie);
                match sock.send_to(&pkt, group).await {
                    Ok(_) => sent += 1,
                    Err(e) => tracing::debug!("LSD: announce to {group} failed: {e}"),
                }
            }
        }
        sent
    }

    /// Brings the joined interfaces in line with [`multicast_interfaces`]:
    /// leaves the groups on interfaces that went away or changed, joins
    /// them on new ones. Returns the send targets of the new interfaces.
    fn sync_interfaces(&self) -> Vec<(Arc<UdpSocket>, SocketAddr)> {
        let wanted = multicast_interfaces(self.inner.cfg.interface);
        let port = self.inner.cfg.port;
        let mut links = self.lock_links();
        links.retain(|l| {
            let keep = wanted.contains(&l.iface);
            if !keep {
                self.leave(&l.iface);
                tracing::info!("LSD: interface {} is gone or changed", l.iface);
            }
            keep
        });
        let mut added = Vec::new();
        for iface in wanted {
            if links.iter().any(|l| l.iface == iface) {
                continue;
            }
            let link = self.join(iface);
            if link.send4.is_none() && link.send6.is_none() {
                continue;
            }
            tracing::info!("LSD: announcing and listening on {}", link.iface);
            added.extend(link.targets(port));
            links.push(link);
        }
        added
    }

    /// Joins the groups on `iface` and opens its send sockets; failures
    /// are logged at debug level and leave that family out.
    fn join(&self, iface: LsdInterface) -> Link {
        let index = InterfaceIndexOrAddress::Index(iface.index);
        let send4 = match (iface.v4, &self.inner.v4) {
            (Some(a), Some(r)) => socket2::SockRef::from(r.as_ref())
                .join_multicast_v4_n(&GROUP_V4, &index)
                .and_then(|()| open_send_v4(a))
                .inspect_err(|e| tracing::debug!("LSD: IPv4 group on {iface}: {e}"))
                .ok()
                .map(Arc::new),
            _ => None,
        };
        let send6 = match (iface.v6, &self.inner.v6) {
            (true, Some(r)) => socket2::SockRef::from(r.as_ref())
                .join_multicast_v6(&GROUP_V6, iface.index)
                .and_then(|()| open_send_v6(iface.index))
                .inspect_err(|e| tracing::debug!("LSD: IPv6 group on {iface}: {e}"))
                .ok()
                .map(Arc::new),
            _ => None,
        };
        Link {
            iface,
            send4,
            send6,
        }
    }

    /// Leaves the groups on `iface` (errors ignored: a removed interface
    /// has left them already).
    fn leave(&self, iface: &LsdInterface) {
        if let (Some(_), Some(r)) = (iface.v4, &self.inner.v4) {
            let index = InterfaceIndexOrAddress::Index(iface.index);
            let _ = socket2::SockRef::from(r.as_ref()).leave_multicast_v4_n(&GROUP_V4, &index);
        }
        if let (true, Some(r)) = (iface.v6, &self.inner.v6) {
            let _ = socket2::SockRef::from(r.as_ref()).leave_multicast_v6(&GROUP_V6, iface.index);
        }
    }

    /// Stops the receive and rescan tasks.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
}

/// Every [`LsdConfig::rescan`], follows the interfaces and announces the
/// running torrents on those that appeared.
async fn rescan_loop(lsd: Lsd) {
    let mut shutdown = lsd.inner.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(lsd.inner.cfg.rescan) => {}
            _ = shutdown.changed() => return,
        }
        let added = lsd.sync_interfaces();
        if added.is_empty() {
            continue;
        }
        let running: Vec<InfoHash> = lsd
            .inner
            .last_announce
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        let n = lsd.send(&running, &added).await;
        tracing::debug!("LSD: {n} announces on new interfaces");
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

/// The receive socket of one family: UDP with `SO_REUSEADDR` (and
/// `IPV6_V6ONLY` for IPv6) on the wildcard address and `port`,
/// non-blocking, receiving only the groups it joins (`IP_MULTICAST_ALL`
/// off).
fn open_recv(v6: bool, port: u16) -> io::Result<UdpSocket> {
    let (domain, any) = if v6 {
        (Domain::IPV6, IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    } else {
        (Domain::IPV4, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    };
    let sock = Socket::new(domain, Type::DGRAM.nonblocking().cloexec(), None)?;
    sock.set_reuse_address(true)?;
    if v6 {
        sock.set_only_v6(true)?;
        sock.set_multicast_all_v6(false)?;
    } else {
        sock.set_multicast_all_v4(false)?;
    }
    sock.bind(&SocketAddr::new(any, port).into())?;
    UdpSocket::from_std(sock.into())
}

/// A socket that sends to the IPv4 group out of the interface holding
/// `addr`, from `addr` (multicast loopback on: other clients on this host
/// hear us).
fn open_send_v4(addr: Ipv4Addr) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::IPV4, Type::DGRAM.nonblocking().cloexec(), None)?;
    sock.set_multicast_if_v4(&addr)?;
    sock.set_multicast_loop_v4(true)?;
    sock.bind(&SocketAddr::new(IpAddr::V4(addr), 0).into())?;
    UdpSocket::from_std(sock.into())
}

/// A socket that sends to the IPv6 group out of interface `index`.
fn open_send_v6(index: u32) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::IPV6, Type::DGRAM.nonblocking().cloexec(), None)?;
    sock.set_only_v6(true)?;
    sock.set_multicast_if_v6(index)?;
    sock.set_multicast_loop_v6(true)?;
    sock.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).into())?;
    UdpSocket::from_std(sock.into())
}

/// An interface LSD runs on (from getifaddrs(3)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LsdInterface {
    /// Interface index (`if_nametoindex`).
    pub index: u32,
    /// Device name, e.g. `eth0`.
    pub name: String,
    /// The IPv4 address announces are sent from; `None`: no IPv4 here.
    pub v4: Option<Ipv4Addr>,
    /// Whether the interface has an IPv6 address (the IPv6 group is
    /// joined on it).
    pub v6: bool,
}

impl std::fmt::Display for LsdInterface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(a) = self.v4 {
            write!(f, " ({a})")?;
        }
        if self.v6 {
            write!(f, " (IPv6)")?;
        }
        Ok(())
    }
}

/// The interfaces LSD runs on now. With `only` (`--lsd-interface`): the
/// interface holding that address (even loopback), sending IPv4 from it
/// when it is IPv4. Otherwise: every interface that is up, has the
/// multicast flag and is not loopback, with IPv4 when it has an IPv4
/// address and IPv6 when it has an IPv6 one. Sorted by index. Empty when
/// getifaddrs(3) fails.
pub fn multicast_interfaces(only: Option<IpAddr>) -> Vec<LsdInterface> {
    use nix::net::if_::InterfaceFlags as F;
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut by_name: std::collections::BTreeMap<String, (F, Vec<IpAddr>)> = Default::default();
    for ifa in addrs {
        let e = by_name
            .entry(ifa.interface_name.clone())
            .or_insert((ifa.flags, Vec::new()));
        if let Some(ip) = ifa.address.as_ref().and_then(ip_of) {
            e.1.push(ip);
        }
    }
    let mut out = Vec::new();
    for (name, (flags, ips)) in by_name {
        if let Some(o) = only {
            if !ips.contains(&o) {
                continue;
            }
        } else if !flags.contains(F::IFF_UP)
            || !flags.contains(F::IFF_MULTICAST)
            || flags.contains(F::IFF_LOOPBACK)
        {
            continue;
        }
        let Ok(index) = nix::net::if_::if_nametoindex(name.as_str()) else {
            continue;
        };
        let v4 = match only {
            Some(IpAddr::V4(a)) => Some(a),
            _ => ips.iter().find_map(|ip| match ip {
                IpAddr::V4(a) => Some(*a),
                IpAddr::V6(_) => None,
            }),
        };
        let v6 = ips.iter().any(|ip| ip.is_ipv6());
        if v4.is_some() || v6 {
            out.push(LsdInterface {
                index,
                name,
                v4,
                v6,
            });
        }
    }
    out.sort_by_key(|i| i.index);
    out
}

/// Index of the interface that holds address `ip`, if any (getifaddrs(3)).
pub fn ifindex_of(ip: IpAddr) -> Option<u32> {
    let name = nix::ifaddrs::getifaddrs()
        .ok()?
        .find(|ifa| ifa.address.as_ref().and_then(ip_of) == Some(ip))?
        .interface_name;
    nix::net::if_::if_nametoindex(name.as_str()).ok()
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
                rescan: Duration::from_secs(30),
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
