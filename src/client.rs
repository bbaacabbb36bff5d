//! The engine's entry point: a [`Client`] owns the DHT node, the TCP
//! listener and every swarm, and turns URLs into [`Archive`]s.
//!
//! Shape (the original sketch): `Client::builder()...start()`,
//! `client.lookup(url, LookupOptions { timeout, seed, .. })` → [`Archive`],
//! `client.stop()`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::archive::Archive;
use crate::dht::{Dht, DhtConfig};
use crate::magnet::{self, Url};
use crate::peer::session;
use crate::swarm::{PeerSource, StorageKind, Swarm, SwarmConfig, SwarmStats};
use crate::{InfoHash, PeerId};

/// The public mainline DHT routers, used when no bootstrap node is given.
pub const DEFAULT_BOOTSTRAP: &[&str] = &[
    "router.bittorrent.com:6881",
    "dht.transmissionbt.com:6881",
    "router.utorrent.com:6881",
    "dht.libtorrent.org:25401",
];

/// Errors of the client API. Each message is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadUrl(#[from] magnet::MagnetError),
    #[error("{0}")]
    Metadata(String),
    #[error("mutable item: {0}")]
    Mutable(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the client is stopped")]
    Stopped,
}

/// Builds a [`Client`]. Every setting has a default.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    bootstrap: Vec<String>,
    dht: bool,
    dht_port: u16,
    peer_port: u16,
    bind_ip: IpAddr,
    peer_id: Option<PeerId>,
    storage: StorageKind,
    read_timeout: Duration,
    max_peers: usize,
    prefetch: bool,
    max_partial_bytes: u64,
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
            max_partial_bytes: 32 << 20,
        }
    }
}

/// `$XDG_CACHE_HOME/btfs-mount`, else `~/.cache/btfs-mount`, else
/// `/tmp/btfs-mount`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("btfs-mount");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".cache/btfs-mount");
    }
    PathBuf::from("/tmp/btfs-mount")
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
    /// Download every piece in the background, at the lowest priority.
    pub fn prefetch(mut self, on: bool) -> Self {
        self.prefetch = on;
        self
    }

    /// Binds the sockets and starts the DHT node (bootstrapping in the
    /// background). Errors: a port already in use.
    pub async fn start(self) -> Result<Client, Error> {
        let listener = TcpListener::bind(SocketAddr::new(self.bind_ip, self.peer_port)).await?;
        let peer_port = listener.local_addr()?.port();
        let dht = if self.dht {
            let cfg = DhtConfig {
                bind: SocketAddr::new(self.bind_ip, self.dht_port),
                bootstrap: self.bootstrap.clone(),
                state_dir: match &self.storage {
                    StorageKind::Files(d) => Some(d.clone()),
                    StorageKind::Memory => None,
                },
                ..DhtConfig::default()
            };
            let dht = Dht::start(cfg).await?;
            let d = dht.clone();
            tokio::spawn(async move {
                let n = d.bootstrap().await;
                tracing::info!("DHT bootstrapped: {n} nodes in the routing table");
            });
            Some(dht)
        } else {
            None
        };
        let inner = Arc::new(Inner {
            cfg: self.clone(),
            peer_id: self.peer_id.unwrap_or_else(PeerId::generate),
            peer_port,
            dht,
            swarms: Mutex::new(HashMap::new()),
            shutdown: tokio::sync::watch::channel(false).0,
        });
        tokio::spawn(accept_loop(inner.clone(), listener));
        Ok(Client { inner })
    }
}

/// Options of one [`Client::lookup`].
#[derive(Clone)]
pub struct LookupOptions {
    /// How long to wait for the metadata (default 60 s).
    pub timeout: Duration,
    /// Upload to other peers and announce on the DHT (default true).
    pub seed: bool,
    /// Extra peers to try (`--peer`).
    pub peers: Vec<SocketAddr>,
    /// Called about twice a second while the metadata is resolved.
    pub progress: Option<Arc<dyn Fn(&Progress) + Send + Sync>>,
}

impl Default for LookupOptions {
    fn default() -> Self {
        LookupOptions {
            timeout: Duration::from_secs(60),
            seed: true,
            peers: Vec::new(),
            progress: None,
        }
    }
}

impl std::fmt::Debug for LookupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupOptions")
            .field("timeout", &self.timeout)
            .field("seed", &self.seed)
            .field("peers", &self.peers)
            .finish()
    }
}

/// Progress while a lookup resolves metadata.
#[derive(Debug, Clone)]
pub struct Progress {
    pub info_hash: InfoHash,
    pub dht_nodes: usize,
    pub swarm: SwarmStats,
}

/// The engine. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ClientBuilder,
    peer_id: PeerId,
    peer_port: u16,
    dht: Option<Dht>,
    swarms: Mutex<HashMap<InfoHash, Arc<Swarm>>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl Client {
    /// A builder with defaults (public DHT routers, cache under
    /// `~/.cache/btfs-mount`, free ports).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Our TCP peer port.
    pub fn peer_port(&self) -> u16 {
        self.inner.peer_port
    }

    /// The DHT node, unless the DHT is off.
    pub fn dht(&self) -> Option<&Dht> {
        self.inner.dht.as_ref()
    }

    /// Resolves `url` (a magnet link, BEP 9; or a BEP 46 mutable URL) to an
    /// [`Archive`]: finds peers, fetches and checks the info dictionary (or
    /// loads it from the cache), and starts the swarm.
    ///
    /// Errors: a malformed URL; [`Error::Metadata`] when the metadata is not
    /// found within `opts.timeout` or is refused (bad paths, bad fields).
    pub async fn lookup(&self, url: &str, opts: LookupOptions) -> Result<Archive, Error> {
        let (info_hash, extra) = match magnet::parse(url)? {
            Url::Magnet(m) => {
                for t in &m.trackers {
                    tracing::info!("ignoring tracker {t}: btfs-mount uses the DHT only");
                }
                (m.info_hash, m.peers)
            }
            Url::Mutable(m) => (self.resolve_mutable(&m, opts.timeout).await?, Vec::new()),
        };
        let swarm = self.swarm(info_hash, opts.seed);
        swarm.add_peers(extra, PeerSource::Magnet);
        swarm.add_peers(opts.peers.iter().copied(), PeerSource::Cli);
        if swarm.loaded().is_none() {
            self.load_cached_metadata(&swarm).await;
        }
        let progress_task = opts.progress.clone().map(|cb| {
            let swarm = swarm.clone();
            let dht = self.inner.dht.clone();
            tokio::spawn(async move {
                loop {
                    cb(&Progress {
                        info_hash: swarm.info_hash,
                        dht_nodes: dht.as_ref().map_or(0, |d| d.stats().nodes),
                        swarm: swarm.stats(),
                    });
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        });
        let r = swarm.wait_metadata(opts.timeout).await;
        if let Some(t) = progress_task {
            t.abort();
        }
        if let Err(e) = r {
            self.remove_swarm(&swarm);
            return Err(Error::Metadata(e));
        }
        Ok(Archive::new(swarm))
    }

    async fn resolve_mutable(
        &self,
        m: &magnet::MutableUrl,
        timeout: Duration,
    ) -> Result<InfoHash, Error> {
        let dht = self
            .inner
            .dht
            .as_ref()
            .ok_or_else(|| Error::Mutable("resolving a mutable URL needs the DHT".into()))?;
        let item = tokio::time::timeout(timeout, dht.get_mutable(m.public_key, &m.salt))
            .await
            .map_err(|_| Error::Mutable(format!("no item found within {} s", timeout.as_secs())))?
            .ok_or_else(|| {
                Error::Mutable("no item with a valid signature found for that key and salt".into())
            })?;
        crate::publish::info_hash_of_value(&item.value).map_err(Error::Mutable)
    }

    /// Loads `<cache>/<info-hash>/info` when present and matching.
    async fn load_cached_metadata(&self, swarm: &Arc<Swarm>) {
        let StorageKind::Files(dir) = &swarm.cfg.storage else {
            return;
        };
        let path = dir.join(swarm.info_hash.to_hex()).join("info");
        let Ok(raw) = tokio::fs::read(&path).await else {
            return;
        };
        if InfoHash::of_info(&raw) != swarm.info_hash {
            tracing::warn!(
                "ignoring {}: it does not match the info-hash",
                path.display()
            );
            return;
        }
        let s = swarm.clone();
        match tokio::task::spawn_blocking(move || s.set_metadata(&raw)).await {
            Ok(Ok(())) => tracing::info!("{}: metadata loaded from the cache", swarm.info_hash),
            Ok(Err(e)) => tracing::warn!("{}: cached metadata refused: {e}", swarm.info_hash),
            Err(e) => tracing::warn!("{}: {e}", swarm.info_hash),
        }
    }

    /// The swarm for `info_hash`, created and started if new.
    fn swarm(&self, info_hash: InfoHash, seed: bool) -> Arc<Swarm> {
        let mut swarms = self.inner.swarms.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = swarms.get(&info_hash) {
            return s.clone();
        }
        let cfg = SwarmConfig {
            peer_id: self.inner.peer_id,
            listen_port: self.inner.peer_port,
            seed,
            prefetch: self.inner.cfg.prefetch,
            read_timeout: self.inner.cfg.read_timeout,
            max_peers: self.inner.cfg.max_peers,
            max_partial_bytes: self.inner.cfg.max_partial_bytes,
            max_metadata_size: 16 << 20,
            storage: self.inner.cfg.storage.clone(),
        };
        let swarm = Swarm::new(info_hash, cfg);
        swarms.insert(info_hash, swarm.clone());
        tokio::spawn(dial_loop(swarm.clone()));
        if let Some(dht) = &self.inner.dht {
            tokio::spawn(dht_loop(swarm.clone(), dht.clone(), self.inner.peer_port));
        }
        swarm
    }

    fn remove_swarm(&self, swarm: &Arc<Swarm>) {
        swarm.stop();
        self.inner
            .swarms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&swarm.info_hash);
    }

    /// Stops one archive's swarm (its connections and announces).
    pub fn close(&self, archive: &Archive) {
        self.remove_swarm(archive.swarm());
    }

    /// Stops every swarm and the DHT node (saving its routing table).
    pub async fn stop(&self) {
        self.inner.shutdown.send_replace(true);
        let swarms: Vec<Arc<Swarm>> = self
            .inner
            .swarms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in swarms {
            s.stop();
        }
        if let Some(d) = &self.inner.dht {
            d.shutdown().await;
        }
    }
}

/// Accepts incoming peer connections and hands each to its swarm.
async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let known = |ih: &InfoHash| {
                inner
                    .swarms
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(ih)
                    .is_some_and(|s| s.cfg.seed)
            };
            let r = crate::peer::conn::PeerConn::accept(
                stream,
                known,
                inner.peer_id.0,
                Duration::from_secs(10),
            )
            .await;
            match r {
                Ok((conn, hs)) => {
                    let swarm = inner
                        .swarms
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&hs.info_hash)
                        .cloned();
                    if let Some(swarm) = swarm {
                        session::run(swarm, conn, hs, addr, PeerSource::Incoming).await;
                    }
                }
                Err(e) => tracing::debug!("incoming {addr}: {e}"),
            }
        });
    }
}

/// Dials peer candidates while there are free connection slots.
async fn dial_loop(swarm: Arc<Swarm>) {
    let mut shutdown = swarm.shutdown.subscribe();
    loop {
        for (addr, source) in swarm.take_dial_candidates() {
            tokio::spawn(session::dial(swarm.clone(), addr, source));
        }
        tokio::select! {
            _ = swarm.candidates_changed.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Finds peers on the DHT (repeating `get_peers` while more are wanted) and
/// announces our port while seeding (BEP 5).
async fn dht_loop(swarm: Arc<Swarm>, dht: Dht, port: u16) {
    let mut shutdown = swarm.shutdown.subscribe();
    let mut last_announce: Option<tokio::time::Instant> = None;
    let mut round = 0u32;
    loop {
        let mut rx = dht.get_peers(swarm.info_hash);
        loop {
            tokio::select! {
                b = rx.recv() => match b {
                    Some(batch) => {
                        let n = swarm.add_peers(batch, PeerSource::Dht);
                        if n > 0 {
                            tracing::info!("{}: {n} new peers from the DHT", swarm.info_hash);
                        }
                    }
                    None => break,
                },
                _ = shutdown.changed() => return,
            }
        }
        round += 1;
        let seeding = swarm.cfg.seed && swarm.loaded().is_some();
        if seeding && last_announce.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
            let n = dht.announce_peer(swarm.info_hash, Some(port)).await;
            tracing::info!(
                "{}: announced port {port} to {n} DHT nodes",
                swarm.info_hash
            );
            if n > 0 {
                last_announce = Some(tokio::time::Instant::now());
            }
        }
        let s = swarm.stats();
        // Look again soon while we have few peers or no metadata.
        let wait = if s.peers_connected == 0 || swarm.loaded().is_none() {
            Duration::from_secs(if round < 5 { 1 } else { 5 })
        } else if s.peers_connected < 5 {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(300)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}
