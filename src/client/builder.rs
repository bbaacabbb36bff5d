//! [`ClientBuilder`]: the client's settings, and [`ClientBuilder::start`],
//! which binds the sockets and starts the DHT node, LSD and the accept loop.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;

use super::accept::{accept_loop, lsd_peers_loop};
use super::{Client, Error, Inner};
use crate::PeerId;
use crate::dht::{Dht, DhtConfig};
use crate::lsd::{Lsd, LsdConfig};
use crate::storage::{CacheLayout, StorageKind, default_cache_dir};

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
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            bootstrap: DEFAULT_BOOTSTRAP.iter().map(|s| s.to_string()).collect(),
            dht: true,
            dht_port: 0,
            peer_port: 0,
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            peer_id: None,
            storage: StorageKind::Files(default_cache_dir()),
            read_timeout: Duration::from_secs(60),
            max_peers: 50,
            prefetch: false,
            max_partial_bytes: 16 << 20,
            lsd: true,
            lsd_interface: None,
            cache_size: None,
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
    /// Address to bind both sockets to (default 0.0.0.0).
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
    /// The interface for LSD multicast, named by one of its addresses
    /// (default: the one the kernel routes multicast to).
    pub fn lsd_interface(mut self, ip: Option<IpAddr>) -> Self {
        self.lsd_interface = ip;
        self
    }

    /// Binds the sockets and starts the DHT node (bootstrapping in the
    /// background). Errors: a port already in use.
    pub async fn start(self) -> Result<Client, Error> {
        let peer_addr = SocketAddr::new(self.bind_ip, self.peer_port);
        let listener = TcpListener::bind(peer_addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen for peers on TCP {peer_addr} (--port): {e}"),
            )
        })?;
        let peer_port = listener.local_addr()?.port();
        let dht = if self.dht {
            let cfg = DhtConfig {
                bind: SocketAddr::new(self.bind_ip, self.dht_port),
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
                tracing::info!("DHT bootstrapped: {n} nodes in the routing table");
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
        let inner = Arc::new(Inner {
            cfg: self.clone(),
            peer_id: self.peer_id.unwrap_or_else(PeerId::generate),
            peer_port,
            dht,
            lsd,
            bootstrapped,
            swarms: Mutex::new(HashMap::new()),
            shutdown: tokio::sync::watch::channel(false).0,
        });
        tokio::spawn(accept_loop(inner.clone(), listener));
        if let Some(rx) = lsd_rx {
            tokio::spawn(lsd_peers_loop(inner.clone(), rx));
        }
        Ok(Client { inner })
    }
}
