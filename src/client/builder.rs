//! [`ClientBuilder`]: the client's settings, and [`ClientBuilder::start`],
//! which binds the sockets and starts the DHT node, LSD and the accept loop.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;

use super::accept::{MAX_PENDING_HANDSHAKES, accept_loop, lsd_peers_loop, utp_accept_loop};
use super::{Client, Error, Inner};
use crate::PeerId;
use crate::dht::{Dht, DhtConfig};
use crate::lsd::{Lsd, LsdConfig};
use crate::peer::mse::Policy;
use crate::peer::transport::Transports;
use crate::storage::{CacheLayout, StorageKind, default_cache_dir};
use crate::utp::{UtpConfig, UtpSocket};

/// The public mainline DHT routers, used when no bootstrap node is given.
pub const DEFAULT_BOOTSTRAP: &[&str] = &[
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
    "dht.libtorrent.org:25401",
];

/// Builds a [`Client`]. Every setting has a default.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    pub(super) bootstrap: Vec<String>,
    pub(super) dht: bool,
    pub(super) dht_port: u16,
    pub(super) peer_port: u16,
    pub(super) bind_ip: IpAddr,
    pub(super) peer_id: Option<PeerId>,
    pub(super) storage: StorageKind,
    pub(super) read_timeout: Duration,
    pub(super) max_peers: usize,
    pub(super) prefetch: bool,
    pub(super) max_partial_bytes: u64,
    pub(super) lsd: bool,
    pub(super) lsd_interface: Option<IpAddr>,
    pub(super) cache_size: Option<u64>,
    pub(super) memory_limit: Option<u64>,
    pub(super) encryption: Policy,
    pub(super) utp: bool,
    pub(super) port_mapping: bool,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            bootstrap: DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect(),
            dht: true,
            dht_port: 0,
            peer_port: 0,
            bind_ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            peer_id: None,
            storage: StorageKind::Files(default_cache_dir()),
            read_timeout: Duration::from_secs(60),
            max_peers: 50,
            prefetch: false,
            max_partial_bytes: 16 << 20,
            lsd: true,
            lsd_interface: None,
            cache_size: None,
            memory_limit: None,
            encryption: Policy::default(),
            utp: true,
            port_mapping: true,
        }
    }
}

impl ClientBuilder {
    /// DHT bootstrap nodes as `HOST:PORT` (replaces the public routers).
    pub fn bootstrap(mut self, nodes: Vec<String>) -> Self {
        self.bootstrap = nodes;
        self
    }
    /// Turns the DHT off (peers then come only from the URL and `peers`).
    pub fn dht(mut self, on: bool) -> Self {
        self.dht = on;
        self
    }
    /// UDP port of the DHT node; 0 picks a free one.
    pub fn dht_port(mut self, port: u16) -> Self {
        self.dht_port = port;
        self
    }
    /// TCP port for incoming peer connections; 0 picks a free one.
    pub fn peer_port(mut self, port: u16) -> Self {
        self.peer_port = port;
        self
    }
    /// Address to bind the peer sockets (TCP and uTP) and the DHT to.
    /// Default `::`: the peer sockets listen on both families (a dual-stack
    /// socket; `0.0.0.0` when the host has no IPv6) and the DHT on
    /// `0.0.0.0` (it is IPv4 only).
    pub fn bind_ip(mut self, ip: IpAddr) -> Self {
        self.bind_ip = ip;
        self
    }
    pub fn peer_id(mut self, id: PeerId) -> Self {
        self.peer_id = Some(id);
        self
    }
    /// Where verified pieces live (default: files under the cache dir).
    pub fn storage(mut self, s: StorageKind) -> Self {
        self.storage = s;
        self
    }
    /// How long a read waits for its pieces before failing (default 60 s).
    pub fn read_timeout(mut self, t: Duration) -> Self {
        self.read_timeout = t;
        self
    }
    /// Most peer connections per torrent (default 50).
    pub fn max_peers(mut self, n: usize) -> Self {
        self.max_peers = n.max(1);
        self
    }
    /// Most bytes of verified pieces kept per torrent in the cache; least
    /// recently read pieces are evicted past it. The default, `None`:
    /// unlimited for a torrent whose cache holds every piece at load, else
    /// half the free space of the cache directory's filesystem at load plus
    /// what the torrent already holds.
    pub fn cache_size(mut self, bytes: Option<u64>) -> Self {
        self.cache_size = bytes;
        self
    }
    /// The process's memory budget in bytes, set when the client starts
    /// (see [`crate::swarm::budget`]): one figure for everything that grows
    /// with traffic (blocks in flight, upload buffers, per-peer queues, the
    /// metadata being assembled, hash work), shared by every client and
    /// archive of the process. None (the default) leaves it as it is
    /// ([`crate::swarm::budget::DEFAULT_MEMORY_LIMIT`] unless set).
    pub fn memory_limit(mut self, bytes: Option<u64>) -> Self {
        self.memory_limit = bytes;
        self
    }
    /// Download every piece in the background, at the lowest priority.
    pub fn prefetch(mut self, on: bool) -> Self {
        self.prefetch = on;
        self
    }

    /// Local Service Discovery (BEP 14) on or off (default on): announce
    /// our torrents to the local network by multicast and connect to peers
    /// announced there.
    pub fn lsd(mut self, on: bool) -> Self {
        self.lsd = on;
        self
    }
    /// Narrows LSD to one interface, named by one of its addresses
    /// (default `None`: every up, multicast-capable, non-loopback
    /// interface, followed as interfaces come and go).
    pub fn lsd_interface(mut self, ip: Option<IpAddr>) -> Self {
        self.lsd_interface = ip;
        self
    }

    /// Message Stream Encryption (MSE/PE) for peer connections: `Prefer`
    /// (the default: dial encrypted, fall back to plaintext, accept both),
    /// `Require` (RC4 only, both ways) or `Off` (plaintext only). See
    /// [`crate::peer::mse`].
    pub fn encryption(mut self, policy: Policy) -> Self {
        self.encryption = policy;
        self
    }

    /// uTP (BEP 29) on or off (default on): dialled first, beside TCP, and
    /// accepted on the UDP port numbered like the TCP listen port.
    pub fn utp(mut self, on: bool) -> Self {
        self.utp = on;
        self
    }

    /// Port mapping on the home router (default on): UPnP IGD, else
    /// NAT-PMP/PCP, for the TCP peer port and the UDP ports (uTP, DHT),
    /// renewed while the client runs and deleted by [`Client::stop`]. The
    /// router's external address becomes the DHT's (BEP 42 node id). See
    /// [`crate::reach`]; [`Client::reachability`] says how it went.
    pub fn port_mapping(mut self, on: bool) -> Self {
        self.port_mapping = on;
        self
    }

    /// Binds the sockets and starts the DHT node (bootstrapping in the
    /// background). Errors: a port already in use.
    pub async fn start(self) -> Result<Client, Error> {
        if let Some(bytes) = self.memory_limit {
            crate::swarm::budget::set_memory_limit(bytes);
        }
        let (listener, utp) = self.bind_peer_sockets().await?;
        let peer_port = listener.local_addr()?.port();
        let dht = if self.dht {
            let cfg = DhtConfig {
                bind: SocketAddr::new(self.dht_ip(), self.dht_port),
                bind6: is_dual_stack(self.bind_ip).then_some(self.bind_ip),
                bootstrap: self.bootstrap.clone(),
                state_dir: match &self.storage {
                    StorageKind::Files(d) => Some(CacheLayout::new(d).root().to_path_buf()),
                    StorageKind::Memory => None,
                },
                ..DhtConfig::default()
            };
            let dht_addr = cfg.bind;
            let dht = Dht::start(cfg).await.map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot bind the DHT node to UDP {dht_addr} (--dht-port): {e}"),
                )
            })?;
            Some(dht)
        } else {
            None
        };
        let bootstrapped = tokio::sync::watch::channel(dht.is_none()).0;
        if let Some(d) = dht.clone() {
            let done = bootstrapped.clone();
            tokio::spawn(async move {
                let n = d.bootstrap().await;
                tracing::info!(
                    "DHT bootstrapped: {} in the routing table",
                    crate::plural::count(n, "node", "nodes")
                );
                done.send_replace(true);
            });
        }
        // LSD is best effort: a failure is logged and the client runs on.
        let (lsd, lsd_rx) = if self.lsd {
            let cfg = LsdConfig {
                interface: self.lsd_interface,
                ..LsdConfig::default()
            };
            match Lsd::start(cfg, peer_port).await {
                Ok((l, rx)) => (Some(l), Some(rx)),
                Err(e) => {
                    tracing::info!("local service discovery is off: {e}");
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        let shutdown = tokio::sync::watch::channel(false).0;
        let reach = crate::reach::Reach::default();
        let portmap = self.port_mapping.then(|| {
            let mut udp: Vec<u16> = Vec::new();
            if utp.is_some() {
                udp.push(peer_port);
            }
            if let Some(d) = &dht {
                udp.push(d.local_addr().port());
            }
            udp.dedup();
            let ports = crate::reach::portmap::Ports {
                tcp: peer_port,
                udp,
            };
            let d = dht.clone();
            let on_external = Box::new(move |ip| {
                if let Some(d) = &d {
                    d.set_external_ip(ip);
                }
            });
            crate::reach::portmap::start(reach.clone(), ports, on_external, shutdown.subscribe())
        });
        let inner = Arc::new(Inner {
            cfg: self.clone(),
            peer_id: self.peer_id.unwrap_or_else(PeerId::generate),
            peer_port,
            dht,
            lsd,
            bootstrapped,
            swarms: Mutex::new(HashMap::new()),
            shutdown,
            transports: Transports::new(self.encryption, utp.clone()),
            reach,
            portmap: Mutex::new(portmap),
        });
        let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
        tokio::spawn(accept_loop(inner.clone(), listener, pending.clone()));
        if let Some(utp) = utp {
            tokio::spawn(utp_accept_loop(inner.clone(), utp, pending));
        }
        if let Some(rx) = lsd_rx {
            tokio::spawn(lsd_peers_loop(inner.clone(), rx));
        }
        Ok(Client { inner })
    }
}

/// Whether `ip` is `::`, which we bind as a dual-stack socket (both
/// families).
fn is_dual_stack(ip: IpAddr) -> bool {
    ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
}

/// A TCP listener on `addr`; on `::` a dual-stack one (`IPV6_V6ONLY` off),
/// which accepts IPv4 peers as IPv4-mapped addresses.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = if addr.is_ipv6() {
        let s = tokio::net::TcpSocket::new_v6()?;
        socket2::SockRef::from(&s).set_only_v6(!is_dual_stack(addr.ip()))?;
        s
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

/// How many TCP ports are tried (with port 0) before uTP is given up when
/// the UDP port of the same number is taken each time.
const PORT_PAIR_TRIES: usize = 8;

impl ClientBuilder {
    /// The DHT's first node's address: [`ClientBuilder::bind_ip`], but
    /// `0.0.0.0` for `::`, which also starts the IPv6 node on `[::]`
    /// (BEP 32: one node, socket and routing table per family).
    fn dht_ip(&self) -> IpAddr {
        if is_dual_stack(self.bind_ip) {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            self.bind_ip
        }
    }

    /// The TCP listener on `peer_port` (0: a free port) and, with uTP on,
    /// the uTP socket on the UDP port of the same number (BEP 29: a DHT
    /// announce then reaches us by both). A free TCP port whose UDP twin is
    /// taken is given back and another tried; a fixed port whose UDP twin
    /// is taken runs without uTP (logged).
    async fn bind_peer_sockets(&self) -> Result<(TcpListener, Option<Arc<UtpSocket>>), Error> {
        let tries = if self.peer_port == 0 && self.utp {
            PORT_PAIR_TRIES
        } else {
            1
        };
        let mut bind_ip = self.bind_ip;
        for attempt in 1..=tries {
            let peer_addr = SocketAddr::new(bind_ip, self.peer_port);
            let listener = match listen(peer_addr) {
                Err(e) if is_dual_stack(bind_ip) => {
                    // No IPv6 on this host: IPv4 alone.
                    tracing::info!("cannot listen on TCP {peer_addr} ({e}): IPv4 only");
                    bind_ip = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
                    listen(SocketAddr::new(bind_ip, self.peer_port))
                }
                r => r,
            }
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot listen for peers on TCP {peer_addr} (--port): {e}"),
                )
            })?;
            if !self.utp {
                return Ok((listener, None));
            }
            let udp = SocketAddr::new(bind_ip, listener.local_addr()?.port());
            match UtpSocket::bind(udp, UtpConfig::default()).await {
                Ok(u) => return Ok((listener, Some(Arc::new(u)))),
                Err(e) if attempt < tries => tracing::debug!("uTP: {e}; trying another port"),
                Err(e) => {
                    tracing::warn!("uTP is off: {e}");
                    return Ok((listener, None));
                }
            }
        }
        unreachable!("the loop returns")
    }
}
