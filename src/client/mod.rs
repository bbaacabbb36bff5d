//! The engine's entry point: a [`Client`] owns the DHT node, the TCP
//! listener and every swarm, and turns URLs into [`Archive`]s.
//!
//! Shape: `Client::builder()...start()` (`builder.rs`),
//! `client.lookup(url, LookupOptions { timeout, seed, .. })` → [`Archive`]
//! (`lookup.rs`), `client.seed(dir)` (`seed.rs`), `client.stop()`.
//!
//! BEP 46 (mutable torrents, `mutable.rs`): [`Client::resolve_mutable`]
//! reads the signed item behind a `magnet:?xs=urn:btpk:` URL,
//! [`Client::publish`] signs and stores one, and [`Client::follow`] watches
//! a mutable URL for newer versions. Incoming connections and peers
//! announced by LSD reach their swarms through `accept.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::archive::Archive;
use crate::dht::Dht;
use crate::lsd::Lsd;
use crate::peer::session;
use crate::peer::transport::Transports;
use crate::swarm::{Ids, Swarm, SwarmConfig, discovery};
use crate::{InfoHash, PeerId};

mod accept;
mod builder;
mod lookup;
mod mutable;
mod seed;

pub use crate::peer::mse::Policy as Encryption;
pub use crate::storage::default_cache_dir;
pub use accept::MAX_PENDING_HANDSHAKES;
pub use builder::{ClientBuilder, DEFAULT_BOOTSTRAP};
pub use lookup::{LookupOptions, Progress, ProgressFn};
pub use mutable::{Published, Resolved, Version};
pub use seed::SeedSource;

/// Errors of the client API. Each message is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadUrl(#[from] crate::magnet::MagnetError),
    #[error("{0}")]
    Metadata(#[from] crate::swarm::MetadataError),
    #[error("mutable item: {0}")]
    Mutable(String),
    /// BEP 46: no DHT node answered with an item for the key and salt.
    #[error(
        "mutable URL {url}: no item found on the DHT for this key and salt ({} answered)",
        crate::plural::count(*answered, "DHT node", "DHT nodes")
    )]
    NoItem { url: String, answered: usize },
    /// BEP 46: items were found, but none is signed by the key (for the salt).
    #[error(
        "mutable URL {url}: {} found, none with a valid signature for this key and salt",
        crate::plural::count(*refused, "item", "items")
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
    /// How peers are dialled and answered (TCP, uTP, MSE), and the
    /// info-hashes an incoming MSE handshake may name.
    transports: Transports,
    /// Whether peers on the internet can dial us (see [`crate::reach`]).
    reach: crate::reach::Reach,
    /// The port mapper, until [`Client::stop`] waits for it to delete its
    /// mappings.
    portmap: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Inner {
    /// The swarms by info-hash, locked.
    fn swarms(&self) -> std::sync::MutexGuard<'_, HashMap<InfoHash, Arc<Swarm>>> {
        self.swarms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The swarm of `info_hash`, if this client runs one.
    fn swarm_of(&self, info_hash: &InfoHash) -> Option<Arc<Swarm>> {
        self.swarms().get(info_hash).cloned()
    }
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

    /// Whether peers on the internet can dial us: the external address and
    /// port mapped at the router by UPnP or NAT-PMP/PCP, or why not.
    pub fn reachability(&self) -> crate::reach::Reachability {
        self.inner.reach.status()
    }

    /// The reachability handle: status changes ([`crate::reach::Reach::subscribe`]),
    /// our external IP as the router or peers see it, a status phrase.
    pub fn reach(&self) -> &crate::reach::Reach {
        &self.inner.reach
    }

    /// The DHT node, unless the DHT is off.
    pub fn dht(&self) -> Option<&Dht> {
        self.inner.dht.as_ref()
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

    /// Whether this client runs a swarm for `info_hash`.
    fn has_swarm(&self, info_hash: InfoHash) -> bool {
        self.inner.swarm_of(&info_hash).is_some()
    }

    /// The swarm for `info_hash`, created and its discovery started if new;
    /// its info dictionary is checked against `ids` (see [`Ids`]). A hybrid
    /// is also reached by its other info-hash (see [`Client::add_aliases`]).
    fn swarm(&self, info_hash: InfoHash, ids: Ids, seed: bool) -> Arc<Swarm> {
        let mut swarms = self.inner.swarms();
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
            prefers_encryption: self.inner.transports.policy == crate::peer::mse::Policy::Require,
            reach: self.inner.reach.clone(),
        };
        let swarm = Swarm::with_ids(info_hash, ids, cfg);
        swarms.insert(info_hash, swarm.clone());
        drop(swarms);
        if seed {
            self.inner.transports.serve(info_hash);
        }
        self.add_aliases(&swarm);
        let transports = self.inner.transports.clone();
        let dialer: discovery::Dialer = Arc::new(move |swarm, target| {
            Box::pin(session::dial(swarm, target, transports.clone()))
        });
        discovery::start(
            &swarm,
            dialer,
            self.inner.dht.as_ref(),
            self.inner.lsd.as_ref(),
            self.inner.peer_port,
        );
        swarm
    }

    /// Makes `swarm` reachable by its other info-hash too, once it is known
    /// (a hybrid torrent, BEP 52: peers on the v1 and the v2 info-hash are
    /// one swarm): incoming connections and LSD announces naming it reach
    /// this swarm. A hash another swarm holds already stays with that one.
    pub(crate) fn add_aliases(&self, swarm: &Arc<Swarm>) {
        let Some(other) = swarm.other_info_hash() else {
            return;
        };
        let mut swarms = self.inner.swarms();
        if swarms.contains_key(&other) {
            return;
        }
        swarms.insert(other, swarm.clone());
        drop(swarms);
        if swarm.cfg.seed {
            self.inner.transports.serve(other);
        }
        tracing::info!(
            "{}: also reached by its other info-hash {other} (hybrid torrent)",
            swarm.info_hash
        );
    }

    fn remove_swarm(&self, swarm: &Arc<Swarm>) {
        swarm.stop();
        let keys: Vec<InfoHash> = {
            let mut swarms = self.inner.swarms();
            let keys: Vec<InfoHash> = swarms
                .iter()
                .filter(|(_, s)| Arc::ptr_eq(s, swarm))
                .map(|(k, _)| *k)
                .collect();
            for k in &keys {
                swarms.remove(k);
            }
            keys
        };
        for k in keys {
            self.inner.transports.unserve(&k);
        }
    }

    /// Stops one archive's swarm (its connections and announces).
    pub fn close(&self, archive: &Archive) {
        self.remove_swarm(archive.swarm());
    }

    /// Stops every swarm and the DHT node (saving its routing table), and
    /// deletes the port mappings at the router (waits at most
    /// [`crate::reach::portmap::DELETE_TIMEOUT`] and a little more for it).
    pub async fn stop(&self) {
        self.inner.shutdown.send_replace(true);
        let portmap = self
            .inner
            .portmap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = portmap {
            let limit = crate::reach::portmap::DELETE_TIMEOUT + Duration::from_secs(1);
            let _ = tokio::time::timeout(limit, task).await;
        }
        let swarms: Vec<Arc<Swarm>> = self
            .inner
            .swarms()
            .drain()
            .filter(|(k, s)| *k == s.info_hash)
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
