//! The engine's entry point: a [`Client`] owns the DHT node, the TCP
//! listener and every swarm, and turns URLs into [`Archive`]s.
//!
//! Shape (the original sketch): `Client::builder()...start()`,
//! `client.lookup(url, LookupOptions { timeout, seed, .. })` → [`Archive`],
//! `client.stop()`.
//!
//! BEP 46 (mutable torrents): [`Client::resolve_mutable`] reads the signed
//! item behind a `magnet:?xs=urn:btpk:` URL, [`Client::publish`] signs and
//! stores one, and [`Client::follow`] watches a mutable URL for newer
//! versions.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;

use crate::archive::Archive;
use crate::dht::{Dht, DhtConfig, DhtError, MutableItem};
use crate::keypair::Keypair;
use crate::lsd::{Lsd, LsdConfig, LsdPeer};
use crate::magnet::{self, MutableUrl, Url};
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
    /// BEP 46: no DHT node answered with an item for the key and salt.
    #[error(
        "mutable URL {url}: no item found on the DHT for this key and salt ({answered} DHT nodes answered)"
    )]
    NoItem { url: String, answered: usize },
    /// BEP 46: items were found, but none is signed by the key (for the salt).
    #[error(
        "mutable URL {url}: {refused} items found, none with a valid signature for this key and salt"
    )]
    BadSignature { url: String, refused: usize },
    /// BEP 46: the newest valid item's value is not `{ih: <info-hash>}`.
    #[error("mutable URL {url}: item seq {seq} is not a BEP 46 value: {reason}")]
    BadValue {
        url: String,
        seq: i64,
        reason: String,
    },
    /// Publishing (BEP 44 `put`) failed.
    #[error("publish: {0}")]
    Publish(String),
    #[error("{0}")]
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
    lsd: bool,
    lsd_interface: Option<IpAddr>,
    cache_size: Option<u64>,
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
    /// Most bytes of verified pieces kept per torrent in the cache; least
    /// recently read pieces are evicted past it (see
    /// [`SwarmConfig::cache_size`] for the default, `None`).
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
                    StorageKind::Files(d) => Some(d.clone()),
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

/// A progress callback (see [`LookupOptions::progress`]).
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

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
    pub progress: Option<ProgressFn>,
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

/// A BEP 46 item resolved by [`Client::resolve_mutable`].
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The valid item with the highest `seq`.
    pub item: MutableItem,
    /// The info-hash in its value.
    pub info_hash: InfoHash,
}

/// One version of a mutable URL: the item's `seq` and the torrent it
/// points at.
#[derive(Clone)]
pub struct Version {
    pub seq: i64,
    pub archive: Archive,
}

/// What [`Client::publish_item`] stored.
#[derive(Debug, Clone)]
pub struct Published {
    /// `magnet:?xs=urn:btpk:<key hex>[&s=<salt hex>]`.
    pub url: String,
    /// The signed item (put it again with [`Client::republish`]).
    pub item: MutableItem,
    /// DHT nodes that accepted it.
    pub nodes: usize,
    /// The highest `seq` found before (None: the first item).
    pub previous_seq: Option<i64>,
    /// The info-hash published.
    pub info_hash: InfoHash,
}

/// The info-hash of a publish target: a magnet link (BEP 9) or 40 hex
/// characters.
fn publish_target(target: &str) -> Result<InfoHash, Error> {
    let t = target.trim();
    if let Some(ih) = InfoHash::from_hex(t) {
        return Ok(ih);
    }
    match magnet::parse(t) {
        Ok(Url::Magnet(m)) => Ok(m.info_hash),
        Ok(Url::Mutable(_)) => Err(Error::Publish(
            "publish a magnet link (xt=urn:btih:) or an info-hash, not a mutable URL".into(),
        )),
        Err(e) => Err(Error::Publish(format!(
            "{target:?} is neither a magnet link nor a 40-hex info-hash ({e})"
        ))),
    }
}

/// Copies the verified pieces of `old` whose SHA-1 matches a piece of `new`
/// into `new` (read from `old`'s storage, verified again when stored), so a
/// new version of a mutable URL does not fetch data the old one has.
/// Pieces `new` already caches (verified or not yet) are skipped. Returns
/// how many pieces were copied. Only pieces verified in `old` are read
/// (not those its background verifier has not reached: a bad one would
/// make the copy wait for the network); nothing goes to the network.
async fn copy_shared_pieces(old: &Archive, new: &Archive) -> usize {
    let (oi, ni) = (old.info().clone(), new.info().clone());
    let mut by_hash: HashMap<[u8; 20], u32> = HashMap::new();
    for j in 0..oi.num_pieces() {
        let (start, end) = piece_range(&oi, j);
        if old.swarm().has_range(start, end) {
            by_hash.insert(oi.piece_hash(j), j);
        }
    }
    let mut copied = 0;
    for i in 0..ni.num_pieces() {
        let (ns, ne) = piece_range(&ni, i);
        if new.swarm().holds_range(ns, ne) {
            continue;
        }
        let Some(&j) = by_hash.get(&ni.piece_hash(i)) else {
            continue;
        };
        let (os, oe) = piece_range(&oi, j);
        if oe - os != ne - ns {
            continue;
        }
        match old.swarm().read(os, (oe - os) as usize).await {
            Ok(data) => {
                new.swarm().complete_piece(i, data, Vec::new());
                copied += 1;
            }
            Err(e) => tracing::debug!("piece {j} of {}: {e}", old.info_hash()),
        }
    }
    copied
}

/// The `seq` in a memo file (one decimal number), if readable.
fn read_seq_memo(path: &std::path::Path) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Writes `seq` to a memo file, creating its directory.
fn write_seq_memo(path: &std::path::Path, seq: i64) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    crate::storage::write_atomic(path, format!("{seq}\n").as_bytes())
}

/// Byte range `[start, end)` of piece `index` in the torrent's piece space.
fn piece_range(info: &crate::metainfo::Info, index: u32) -> (u64, u64) {
    let start = u64::from(index) * info.piece_length;
    (start, start + info.piece_size(index))
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
    /// Local Service Discovery (BEP 14), unless off or unavailable.
    lsd: Option<Lsd>,
    /// True once the first DHT bootstrap has finished (or without a DHT).
    bootstrapped: tokio::sync::watch::Sender<bool>,
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
    ///
    /// A mutable URL fails with [`Error::NoItem`], [`Error::BadSignature`]
    /// or [`Error::BadValue`] when it does not resolve to an info-hash.
    pub async fn lookup(&self, url: &str, opts: LookupOptions) -> Result<Archive, Error> {
        match magnet::parse(url)? {
            Url::Magnet(m) => {
                for t in &m.trackers {
                    tracing::info!("ignoring tracker {t}: btfs-mount uses the DHT only");
                }
                self.lookup_info_hash(m.info_hash, m.peers, opts).await
            }
            Url::Mutable(m) => Ok(self.lookup_mutable(&m, opts).await?.archive),
        }
    }

    /// Resolves a BEP 46 mutable URL and fetches the metadata of the torrent
    /// it points at: the [`Version`] (item `seq` and [`Archive`]). Errors as
    /// [`Client::resolve_mutable`], then as [`Client::lookup`].
    pub async fn lookup_mutable(
        &self,
        url: &MutableUrl,
        opts: LookupOptions,
    ) -> Result<Version, Error> {
        let started = tokio::time::Instant::now();
        let r = self.resolve_mutable(url, opts.timeout).await?;
        tracing::info!(
            "{}: seq {} points at {}",
            url.to_url(),
            r.item.seq,
            r.info_hash
        );
        let opts = LookupOptions {
            timeout: opts.timeout.saturating_sub(started.elapsed()),
            ..opts
        };
        let archive = self.lookup_info_hash(r.info_hash, Vec::new(), opts).await?;
        Ok(Version {
            seq: r.item.seq,
            archive,
        })
    }

    /// The lookup of one info-hash: swarm, cached or fetched metadata.
    async fn lookup_info_hash(
        &self,
        info_hash: InfoHash,
        extra: Vec<SocketAddr>,
        opts: LookupOptions,
    ) -> Result<Archive, Error> {
        // Another process's cache: refuse before any peer is dialled (our
        // own swarm of this torrent holds the lock legitimately).
        if let StorageKind::Files(dir) = &self.inner.cfg.storage
            && !self.has_swarm(info_hash)
        {
            let torrent_dir = dir.join(info_hash.to_hex());
            tokio::task::spawn_blocking(move || crate::storage::check_cache_free(&torrent_dir))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| {
                    Error::Metadata(format!("cannot open the cache in {}: {e}", dir.display()))
                })?;
        }
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

    /// Seeds a torrent whose data is complete locally: `info_raw` is its
    /// info dictionary (BEP 3) and `storage` holds every piece (typically a
    /// [`crate::create::SourceStorage`] from [`crate::create::build`]).
    /// Creates the swarm with all pieces had, accepts peers and announces
    /// our port on the DHT (BEP 5); [`Archive::magnet`] is the link to share.
    /// Errors: [`Error::Metadata`] when `info_raw` is refused.
    pub fn seed_torrent(
        &self,
        info_raw: &[u8],
        storage: Arc<dyn crate::storage::Storage>,
    ) -> Result<Archive, Error> {
        let info_hash = InfoHash::of_info(info_raw);
        let swarm = self.swarm(info_hash, true);
        if let Err(e) = swarm.set_complete(info_raw, storage) {
            self.remove_swarm(&swarm);
            return Err(Error::Metadata(e));
        }
        Ok(Archive::new(swarm))
    }

    /// Makes a torrent of `what` (a directory or file read in place, or a
    /// [`crate::staging::Draft`]'s current tree) and seeds it: see
    /// [`Client::seed_content`]. The magnet link is `archive.magnet()`.
    pub async fn seed<'a>(
        &self,
        what: impl Into<crate::create::SeedSource<'a>>,
    ) -> Result<Archive, Error> {
        let content = match what.into() {
            crate::create::SeedSource::Dir(dir) => {
                let dir = dir.to_path_buf();
                let scan = tokio::task::spawn_blocking(move || crate::create::scan_dir(&dir))
                    .await
                    .map_err(std::io::Error::other)??;
                for (p, why) in &scan.skipped {
                    tracing::warn!("skipping {}: {why}", p.display());
                }
                scan.content
            }
            crate::create::SeedSource::Draft(d) => d.content().await?,
        };
        self.seed_content(content, None).await
    }

    /// Hashes `content` off the async threads ([`crate::create::build`];
    /// `progress(done, total)` in bytes after each piece) and seeds it with
    /// [`Client::seed_torrent`]. Errors: [`Error::Io`] from reading or an
    /// empty content, [`Error::Metadata`].
    pub async fn seed_content(
        &self,
        content: crate::create::Content,
        progress: Option<Box<dyn FnMut(u64, u64) + Send>>,
    ) -> Result<Archive, Error> {
        let built = tokio::task::spawn_blocking(move || {
            let mut progress = progress;
            let mut cb = |d: u64, t: u64| {
                if let Some(p) = progress.as_mut() {
                    p(d, t)
                }
            };
            crate::create::build(&content, &mut cb)
        })
        .await
        .map_err(std::io::Error::other)??;
        tracing::info!(
            "{}: {} files, {} bytes in pieces of {} bytes; seeding",
            built.info_hash,
            built.num_files,
            built.total_length,
            built.piece_length
        );
        self.seed_torrent(&built.info_raw, built.storage)
    }

    /// Waits (at most `limit`) until the DHT has nodes to ask: the first
    /// bootstrap finished, or at least one node answered (a lookup from a
    /// thin routing table also asks the bootstrap nodes).
    pub async fn wait_bootstrapped(&self, limit: Duration) {
        let Some(dht) = &self.inner.dht else { return };
        let mut rx = self.inner.bootstrapped.subscribe();
        let ready = async {
            loop {
                if *rx.borrow_and_update() || dht.stats().nodes > 0 {
                    return;
                }
                tokio::select! {
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        };
        let _ = tokio::time::timeout(limit, ready).await;
    }

    fn dht_for(&self, what: &str) -> Result<&Dht, Error> {
        self.inner
            .dht
            .as_ref()
            .ok_or_else(|| Error::Mutable(format!("{what} needs the DHT (drop --no-dht)")))
    }

    /// Resolves a BEP 46 mutable URL through the DHT (BEP 44 `get`): the
    /// valid item with the highest `seq` signed by the URL's key for its
    /// salt, and the info-hash in its value `{ih: <20 bytes>}` (40 hex
    /// characters are accepted too).
    ///
    /// Errors: [`Error::NoItem`] when no node has an item,
    /// [`Error::BadSignature`] when items were found but none verifies,
    /// [`Error::BadValue`] when the newest item is not a BEP 46 value,
    /// [`Error::Mutable`] without a DHT or when `timeout` passes.
    pub async fn resolve_mutable(
        &self,
        url: &MutableUrl,
        timeout: Duration,
    ) -> Result<Resolved, Error> {
        let dht = self.dht_for("resolving a mutable URL")?;
        let started = tokio::time::Instant::now();
        self.wait_bootstrapped(timeout).await;
        let left = timeout.saturating_sub(started.elapsed());
        let report = tokio::time::timeout(left, dht.get_mutable_report(url.public_key, &url.salt))
            .await
            .map_err(|_| {
                Error::Mutable(format!(
                    "{}: the DHT lookup did not finish within {} s",
                    url.to_url(),
                    timeout.as_secs()
                ))
            })?;
        let Some(item) = report.item else {
            if report.refused > 0 {
                return Err(Error::BadSignature {
                    url: url.to_url(),
                    refused: report.refused,
                });
            }
            return Err(Error::NoItem {
                url: url.to_url(),
                answered: report.answered,
            });
        };
        if report.refused > 0 {
            tracing::warn!(
                "{}: ignored {} items with invalid signatures",
                url.to_url(),
                report.refused
            );
        }
        let info_hash =
            crate::publish::info_hash_of_value(&item.value).map_err(|reason| Error::BadValue {
                url: url.to_url(),
                seq: item.seq,
                reason,
            })?;
        Ok(Resolved { item, info_hash })
    }

    /// Publishes `target` (a magnet link, or a bare 40-hex info-hash) under
    /// `keypair` and `salt` (0..=64 bytes) as a BEP 46 mutable item, and
    /// returns its mutable URL `magnet:?xs=urn:btpk:<key>[&s=<salt>]`. See
    /// [`Client::publish_item`].
    pub async fn publish(
        &self,
        target: &str,
        keypair: &Keypair,
        salt: &[u8],
    ) -> Result<String, Error> {
        Ok(self.publish_item(target, keypair, salt).await?.url)
    }

    /// Publishes `target` like [`Client::publish`] and returns the signed
    /// item (for [`Client::republish`]) with the URL and node count.
    ///
    /// The sequence number is 1 + the highest valid `seq` found on the DHT
    /// for the key and salt (1 when none), so a `seq` is never reused with
    /// another value; the signature covers salt, seq and value (BEP 44,
    /// "signature verification"). With file storage the last `seq` this
    /// machine published for a key and salt is also remembered (in
    /// `<cache>/bep46/<target hex>`), so a DHT lookup that misses the
    /// newest item still gets a higher `seq`. When nodes refuse the item because they
    /// hold a newer one (error 302), the DHT is asked again, up to 3 times.
    ///
    /// Errors: [`Error::Publish`] for a target that is not a magnet link or
    /// info-hash, a salt over 64 bytes, no node accepting the item;
    /// [`Error::Mutable`] without a DHT.
    pub async fn publish_item(
        &self,
        target: &str,
        keypair: &Keypair,
        salt: &[u8],
    ) -> Result<Published, Error> {
        let info_hash = publish_target(target)?;
        if salt.len() > magnet::MAX_SALT_LEN {
            return Err(Error::Publish(format!(
                "the salt is {} bytes; BEP 44 allows {}",
                salt.len(),
                magnet::MAX_SALT_LEN
            )));
        }
        let dht = self.dht_for("publishing")?;
        self.wait_bootstrapped(Duration::from_secs(30)).await;
        let value = crate::publish::value_for(info_hash);
        let url = MutableUrl {
            public_key: keypair.public_key(),
            salt: salt.to_vec(),
        };
        let memo = self.seq_memo_path(&url);
        let mut last = None;
        for _ in 0..3 {
            let report = dht.get_mutable_report(keypair.public_key(), salt).await;
            let remembered = memo.as_ref().and_then(|p| read_seq_memo(p));
            let previous_seq = report.item.as_ref().map(|i| i.seq).max(remembered);
            let seq = match previous_seq {
                None => 1,
                Some(s) => s.checked_add(1).ok_or_else(|| {
                    Error::Publish("the highest sequence number is already i64::MAX".into())
                })?,
            };
            let item = MutableItem::sign(keypair, salt, seq, &value);
            match dht.put_mutable(item.clone()).await {
                Ok(nodes) => {
                    if let Some(p) = &memo
                        && let Err(e) = write_seq_memo(p, seq)
                    {
                        tracing::warn!("cannot remember seq {seq} in {}: {e}", p.display());
                    }
                    tracing::info!(
                        "{}: seq {seq} -> {info_hash} stored on {nodes} DHT nodes",
                        url.to_url()
                    );
                    return Ok(Published {
                        url: url.to_url(),
                        item,
                        nodes,
                        previous_seq,
                        info_hash,
                    });
                }
                Err(DhtError::Rejected { code: 302, message }) => {
                    tracing::info!(
                        "seq {seq} refused ({message}): a newer item exists; asking again"
                    );
                    last = Some(DhtError::Rejected { code: 302, message });
                }
                Err(e) => return Err(Error::Publish(e.to_string())),
            }
        }
        Err(Error::Publish(format!(
            "{}; the DHT holds a newer item than the ones we can see",
            last.map_or_else(String::new, |e| e.to_string())
        )))
    }

    /// Where the last published `seq` of `url`'s key and salt is kept
    /// (file storage only).
    fn seq_memo_path(&self, url: &MutableUrl) -> Option<PathBuf> {
        match &self.inner.cfg.storage {
            StorageKind::Files(dir) => Some(dir.join("bep46").join(hex::encode(
                crate::dht::mutable_target(&url.public_key, &url.salt),
            ))),
            StorageKind::Memory => None,
        }
    }

    /// Stores `item` again (BEP 44 items expire, typically after 2 hours,
    /// unless put again). Returns how many nodes accepted it. Errors:
    /// [`Error::Publish`] (e.g. a newer item now exists: error 302).
    pub async fn republish(&self, item: &MutableItem) -> Result<usize, Error> {
        let dht = self.dht_for("publishing")?;
        dht.put_mutable(item.clone())
            .await
            .map_err(|e| Error::Publish(e.to_string()))
    }

    /// Follows a mutable URL (BEP 46): every `every`, resolves it again;
    /// when a valid item with a higher `seq` than `current` points at
    /// another info-hash, fetches that torrent's metadata (within
    /// `opts.timeout`) and sends the new [`Version`]. Failures are logged
    /// and retried at the next poll. The task ends when the receiver is
    /// dropped or the client stops.
    pub fn follow(
        &self,
        url: MutableUrl,
        current: &Version,
        opts: LookupOptions,
        every: Duration,
    ) -> tokio::sync::mpsc::Receiver<Version> {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let client = self.clone();
        let mut seq = current.seq;
        let mut info_hash = current.archive.info_hash();
        let mut prev = current.archive.clone();
        let opts = LookupOptions {
            progress: None,
            ..opts
        };
        let mut shutdown = self.inner.shutdown.subscribe();
        tokio::spawn(async move {
            let u = url.to_url();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = tx.closed() => return,
                    _ = shutdown.changed() => return,
                }
                let r = match client.resolve_mutable(&url, opts.timeout).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::info!("refresh: {e}");
                        continue;
                    }
                };
                if r.item.seq <= seq {
                    tracing::debug!("{u}: seq {} is current", r.item.seq);
                    continue;
                }
                if r.info_hash == info_hash {
                    tracing::info!("{u}: seq {} still points at {info_hash}", r.item.seq);
                    seq = r.item.seq;
                    continue;
                }
                tracing::info!(
                    "{u}: seq {} points at {}; fetching its metadata",
                    r.item.seq,
                    r.info_hash
                );
                let archive = match client
                    .lookup_info_hash(r.info_hash, Vec::new(), opts.clone())
                    .await
                {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(
                            "{u}: seq {}: {e}; retrying at the next refresh",
                            r.item.seq
                        );
                        continue;
                    }
                };
                let copied = copy_shared_pieces(&prev, &archive).await;
                if copied > 0 {
                    tracing::info!("{}: {copied} pieces copied from {}", r.info_hash, info_hash);
                }
                tracing::info!(
                    "{u}: switching from {info_hash} (seq {seq}) to {} (seq {}, {:?})",
                    r.info_hash,
                    r.item.seq,
                    archive.info().name
                );
                seq = r.item.seq;
                info_hash = r.info_hash;
                prev = archive.clone();
                if tx.send(Version { seq, archive }).await.is_err() {
                    return;
                }
            }
        });
        rx
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
            Ok(Err(e)) => tracing::debug!("{}: cached metadata refused: {e}", swarm.info_hash),
            Err(e) => tracing::warn!("{}: {e}", swarm.info_hash),
        }
    }

    /// The swarm for `info_hash`, created and started if new.
    /// Whether this client runs a swarm for `info_hash`.
    fn has_swarm(&self, info_hash: InfoHash) -> bool {
        self.inner
            .swarms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&info_hash)
    }

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
            cache_size: self.inner.cfg.cache_size,
            max_metadata_size: 16 << 20,
            storage: self.inner.cfg.storage.clone(),
        };
        let swarm = Swarm::new(info_hash, cfg);
        swarms.insert(info_hash, swarm.clone());
        tokio::spawn(dial_loop(swarm.clone()));
        if let Some(dht) = &self.inner.dht {
            tokio::spawn(dht_loop(swarm.clone(), dht.clone(), self.inner.peer_port));
        }
        if let Some(lsd) = &self.inner.lsd {
            tokio::spawn(lsd_announce_loop(swarm.clone(), lsd.clone()));
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
        if let Some(l) = &self.inner.lsd {
            l.shutdown();
        }
        if let Some(d) = &self.inner.dht {
            d.shutdown().await;
        }
    }
}

/// Most incoming connections in their handshake at once. Each holds a
/// socket, a task and read/write buffers (~72 KiB) for up to 10 s; past this
/// limit new connections are closed at once, so a flood of connections that
/// never handshake costs a bounded amount of memory and file descriptors.
/// (Connections past the handshake are bounded per torrent by `max_peers`.)
pub const MAX_PENDING_HANDSHAKES: usize = 32;

/// Accepts incoming peer connections and hands each to its swarm; at most
/// [`MAX_PENDING_HANDSHAKES`] handshakes run at once (others are closed).
async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut shutdown = inner.shutdown.subscribe();
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    let mut refused = 0u64;
    let mut last_warn: Option<tokio::time::Instant> = None;
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
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            drop(stream);
            refused += 1;
            if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(
                    "incoming connection from {addr} closed: {MAX_PENDING_HANDSHAKES} handshakes already pending ({refused} refused so far)"
                );
                last_warn = Some(tokio::time::Instant::now());
            }
            continue;
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
            drop(permit);
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

/// Hands peers announced by LSD (BEP 14) to the swarms of their
/// info-hashes; announces of torrents we are not in are ignored.
async fn lsd_peers_loop(inner: Arc<Inner>, mut rx: tokio::sync::mpsc::Receiver<LsdPeer>) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let p = tokio::select! {
            p = rx.recv() => match p {
                Some(p) => p,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        let swarm = inner
            .swarms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&p.info_hash)
            .cloned();
        let Some(swarm) = swarm else { continue };
        if swarm.loaded().is_some_and(|l| l.info.private) {
            continue; // BEP 27: private torrents use no local discovery
        }
        if swarm.add_peers([p.addr], PeerSource::Lsd) > 0 {
            tracing::info!("{}: peer {} from LSD", swarm.info_hash, p.addr);
        }
    }
}

/// Announces a swarm on the local network (BEP 14) when it starts and
/// every 5 minutes while it runs, if it accepts incoming peers (seeding on)
/// and is not private (BEP 27).
async fn lsd_announce_loop(swarm: Arc<Swarm>, lsd: Lsd) {
    if !swarm.cfg.seed {
        return;
    }
    let mut shutdown = swarm.shutdown.subscribe();
    loop {
        if !swarm.loaded().is_some_and(|l| l.info.private) {
            let n = lsd.announce(&[swarm.info_hash]).await;
            tracing::debug!("{}: LSD announce ({n} datagrams)", swarm.info_hash);
        }
        tokio::select! {
            _ = tokio::time::sleep(crate::lsd::ANNOUNCE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
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
