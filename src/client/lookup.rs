//! Looking up a URL: a magnet link's info-hash (BEP 9) or a mutable URL's
//! current torrent (BEP 46), then its metadata, from the cache or from
//! peers, while a progress callback is told how it goes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::{Client, Error};
use crate::InfoHash;
use crate::archive::Archive;
use crate::magnet::{self, Url};
use crate::storage::{CacheLayout, StorageKind};
use crate::swarm::{Ids, MetadataError, PeerSource, Swarm, SwarmStats};

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
    /// Connected peers over IPv4 and over IPv6.
    pub peers_v4: usize,
    pub peers_v6: usize,
    /// Whether peers on the internet can dial us, one phrase
    /// ([`crate::reach::Reach::summary`]).
    pub reach: String,
}

impl Client {
    /// Resolves `url` (a magnet link, BEP 9; or a BEP 46 mutable URL) to an
    /// [`Archive`]: finds peers, fetches and checks the info dictionary (or
    /// loads it from the cache), and starts the swarm.
    ///
    /// Errors: a malformed URL; [`Error::Metadata`] when the metadata is not
    /// found within `opts.timeout` or is refused (bad paths, bad fields).
    ///
    /// A mutable URL fails with [`Error::NoItem`], [`Error::BadSignature`]
    /// or [`Error::BadValue`] when it does not resolve to an info-hash.
    ///
    /// `url` is a parsed [`Url`] or a string ([`magnet::IntoUrl`]: a magnet
    /// link, a BEP 46 URL or a bare info-hash); a caller that parsed it to
    /// check it first passes the [`Url`] and it is not parsed again. To
    /// know a mutable URL's `seq`, use [`Client::lookup_mutable`].
    pub async fn lookup(
        &self,
        url: impl magnet::IntoUrl,
        opts: LookupOptions,
    ) -> Result<Archive, Error> {
        match url.into_url()? {
            Url::Magnet(m) => {
                for t in &m.trackers {
                    tracing::info!("ignoring tracker {t}: btfs-mount uses the DHT only");
                }
                let ids = Ids::of_magnet(&m);
                self.lookup_info_hash(m.info_hash, ids, m.peers, opts).await
            }
            Url::Mutable(m) => Ok(self.lookup_mutable(&m, opts).await?.archive),
        }
    }

    /// Resolves a bare 20-byte info-hash to an [`Archive`], whichever
    /// version it is: the SHA-1 of the info dictionary (a v1 or hybrid
    /// torrent) or its SHA-256 truncated to 20 bytes (a v2-only or hybrid
    /// torrent; BEP 52 uses the truncated hash wherever 20 bytes are
    /// expected: handshake, BEP 9, DHT). The metadata is checked against
    /// both. This is what the gateway's `/bt/<40 hex>/` names, so a v2-only
    /// torrent is reachable by the name of its cache directory. A magnet
    /// link with `xt=urn:btih` instead insists on the SHA-1.
    ///
    /// Errors: as [`Client::lookup`].
    pub async fn lookup_any_info_hash(
        &self,
        info_hash: InfoHash,
        opts: LookupOptions,
    ) -> Result<Archive, Error> {
        self.lookup_info_hash(info_hash, Ids::bare(), Vec::new(), opts)
            .await
    }

    /// The lookup of one info-hash: swarm, cached or fetched metadata,
    /// checked against the hashes of `ids`.
    pub(super) async fn lookup_info_hash(
        &self,
        info_hash: InfoHash,
        ids: Ids,
        extra: Vec<SocketAddr>,
        opts: LookupOptions,
    ) -> Result<Archive, Error> {
        // Another process's cache: refuse before any peer is dialled (our
        // own swarm of this torrent holds the lock legitimately).
        if let StorageKind::Files(dir) = &self.inner.cfg.storage
            && !self.has_swarm(info_hash)
        {
            let tdir = CacheLayout::new(dir).torrent(info_hash);
            // Blocking: it may wait a moment for a process that is exiting.
            tokio::task::spawn_blocking(move || crate::storage::check_cache_free(tdir.root()))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| MetadataError::Cache {
                    dir: dir.clone(),
                    source: Arc::new(e),
                })?;
        }
        let swarm = self.swarm(info_hash, ids, opts.seed);
        swarm.add_peers(extra, PeerSource::Magnet);
        swarm.add_peers(opts.peers.iter().copied(), PeerSource::Cli);
        if swarm.loaded().is_none() {
            self.load_cached_metadata(&swarm).await;
        }
        let progress_task = opts.progress.clone().map(|cb| {
            let swarm = swarm.clone();
            let client = self.clone();
            tokio::spawn(async move {
                loop {
                    cb(&client.progress(&swarm));
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
        self.add_aliases(&swarm);
        Ok(Archive::new(swarm))
    }

    /// A progress report of `swarm` (see [`Progress`]).
    fn progress(&self, swarm: &Swarm) -> Progress {
        let peers = swarm.peer_list();
        let v6 = peers.iter().filter(|p| p.addr.is_ipv6()).count();
        Progress {
            info_hash: swarm.info_hash,
            dht_nodes: self.inner.dht.as_ref().map_or(0, |d| d.stats().nodes),
            swarm: swarm.stats(),
            peers_v4: peers.len() - v6,
            peers_v6: v6,
            reach: self.inner.reach.summary(),
        }
    }

    /// A progress report of an archive's swarm, for a status line once it
    /// is mounted: DHT nodes, peers (by address family), reachability.
    pub fn status(&self, archive: &Archive) -> Progress {
        self.progress(archive.swarm())
    }

    /// Loads `<cache>/<info-hash>/info` when present and matching.
    async fn load_cached_metadata(&self, swarm: &Arc<Swarm>) {
        let StorageKind::Files(dir) = &swarm.cfg.storage else {
            return;
        };
        let path = CacheLayout::new(dir).torrent(swarm.info_hash).info();
        let Ok(raw) = tokio::fs::read(&path).await else {
            return;
        };
        if swarm.ids().check(swarm.info_hash, &raw).is_err() {
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
}
