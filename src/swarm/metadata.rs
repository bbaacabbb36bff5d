//! The swarm's metadata: the info dictionary, from BEP 9, from the cache,
//! or from a torrent we made; and the wait for it.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::picker::Picker;
use super::{Loaded, StorageKind, Swarm};
use crate::metainfo::{Info, MetainfoError};
use crate::storage::{CacheLayout, FileStorage, MemStorage, Storage};

/// Why a swarm has no metadata. Each message is one line a user can act on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MetadataError {
    /// The info dictionary received does not hash to the info-hash (BEP 9).
    #[error("info dictionary does not match the info-hash")]
    Mismatch,
    /// The info dictionary parsed badly or has unsafe fields.
    #[error("metadata refused: {0}")]
    Refused(#[from] MetainfoError),
    /// The torrent's cache could not be opened (locked by another process,
    /// unwritable, full).
    #[error("cannot open the cache in {}: {source}", dir.display())]
    Cache {
        dir: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// No peer delivered the metadata in time. The message ends with the
    /// last peers that failed and why (a refused encrypted handshake, a
    /// refused connection, ...), at most three of them.
    #[error(
        "metadata not found within {secs} s ({}, {connected} connected, {bytes} metadata bytes received){}",
        crate::plural::count(*known, "peer known", "peers known"),
        failures.suffix()
    )]
    Timeout {
        secs: u64,
        known: usize,
        connected: usize,
        bytes: u64,
        /// The last peers that failed, and how many failed in all.
        failures: super::PeerFailures,
    },
    /// A v2 torrent's info dictionary arrived, but not every file's piece
    /// layer (BEP 52 hash requests) in time.
    #[error(
        "the piece layers of this v2 torrent were not received within {secs} s ({}): no peer answered our hash requests",
        crate::plural::count(*connected, "peer connected", "peers connected")
    )]
    PieceLayers { secs: u64, connected: usize },
    /// The swarm was stopped while waiting.
    #[error("stopped")]
    Stopped,
    /// An info dictionary found by its v2 info-hash (`xt=urn:btmh`, BEP 52)
    /// that has no `meta version` 2.
    #[error("the info dictionary found by its v2 info-hash (btmh) is not a v2 torrent")]
    NotV2,
}

/// The memory of one metadata assembly (BEP 9) in the process's budget;
/// dropping it ends the assembly's share.
pub(crate) struct AssemblyPermit {
    swarm: Arc<Swarm>,
    _mem: super::budget::Reservation,
}

impl Drop for AssemblyPermit {
    fn drop(&mut self) {
        self.swarm
            .metadata_assemblers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Swarm {
    /// Counts a metadata assembly of `size` bytes in the memory budget.
    /// None when the budget is reached and another connection of this
    /// swarm assembles the metadata already (the first one always may: a
    /// lookup never stalls on the budget).
    pub(crate) fn metadata_permit(self: &Arc<Self>, size: u64) -> Option<AssemblyPermit> {
        use std::sync::atomic::Ordering;
        let budget = super::budget::global();
        let mem = match budget.try_reserve(size) {
            Some(r) => r,
            None if self.metadata_assemblers.load(Ordering::Relaxed) == 0 => budget.force(size),
            None => {
                budget.note_limited("the metadata is asked of one peer at a time");
                return None;
            }
        };
        self.metadata_assemblers.fetch_add(1, Ordering::Relaxed);
        Some(AssemblyPermit {
            swarm: self.clone(),
            _mem: mem,
        })
    }

    /// The metadata refusal, if the info dictionary was refused.
    pub fn metadata_error(&self) -> Option<MetadataError> {
        self.lock().metadata_error.clone()
    }

    /// Sets the info dictionary (from BEP 9, or from the cache), opens the
    /// storage and marks the pieces its `have` file lists as cached but
    /// unverified (nothing is hashed here: reads hash what they need, and a
    /// background task, started when a Tokio runtime is current, hashes the
    /// rest). Runs blocking I/O: call from a blocking context. Errors:
    /// parse errors of the info dictionary, storage errors; both are also
    /// kept for the lookup.
    pub fn set_metadata(self: &Arc<Self>, raw: &[u8]) -> Result<(), MetadataError> {
        // Two peers may complete the metadata at once: load it only once.
        let _once = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if self.loaded.get().is_some() {
            return Ok(());
        }
        let loaded = match self.load(raw) {
            Ok(l) => l,
            Err(e) => {
                self.lock().metadata_error = Some(e.clone());
                self.metadata_ready.notify_waiters();
                return Err(e);
            }
        };
        let n = loaded.info.num_pieces();
        let info = loaded.info.clone();
        let storage = loaded.storage.clone();
        let mut picker = Picker::new(
            info.piece_length,
            info.total_length,
            n,
            self.cfg.max_partial_bytes,
        );
        picker.set_prefetch(self.cfg.prefetch);
        // Resume: trust nothing yet. Pieces the `have` file lists are
        // cached but unverified: a read hashes them first, the background
        // verifier hashes the rest, and none is advertised or served
        // before its hash matched. Nothing is hashed here, so the mount is
        // usable at once whatever the cache holds.
        let mut held = Vec::new();
        if let Some(bf) = storage.load_have() {
            for i in 0..n {
                if bf
                    .get(i as usize / 8)
                    .is_some_and(|b| b & (0x80 >> (i % 8)) != 0)
                {
                    picker.set_unverified(i);
                    held.push(i);
                }
            }
            tracing::info!(
                "{}: {} of {} in the cache; each is hashed before it is served or advertised",
                self.info_hash,
                held.len(),
                crate::plural::count(n, "piece", "pieces")
            );
        }
        let held_bytes: u64 = held.iter().map(|&i| picker.piece_size(i) as u64).sum();
        let complete = held.len() as u64 == u64::from(n);
        let budget = self.cache_budget(&info, held_bytes, complete);
        if let Some(b) = budget {
            tracing::info!(
                "{}: the cache keeps at most {b} bytes of this torrent's {} (least recently read pieces are evicted)",
                self.info_hash,
                info.total_length
            );
        }
        let trees = super::trees::Trees::new(&info, storage.load_piece_layers());
        if !trees.ready() {
            tracing::info!(
                "{}: a v2 torrent: fetching its piece layers from peers (BEP 52 hash requests)",
                self.info_hash
            );
        }
        let mut st = self.lock();
        st.picker = Some(picker);
        st.cache.load(budget, &held, held_bytes);
        st.trees = trees;
        drop(st);
        let _ = self.loaded.set(loaded);
        self.evict_over_budget();
        if !held.is_empty() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(self.clone().verify_cached_loop());
                }
                // Without a runtime nothing is verified in the background;
                // reads still hash what they need.
                Err(_) => tracing::debug!(
                    "{}: no runtime: cached pieces are verified on read only",
                    self.info_hash
                ),
            }
        }
        self.metadata_ready.notify_waiters();
        self.wake_peers();
        Ok(())
    }

    /// Loads a torrent whose pieces are all held already (one we made and
    /// hashed ourselves, see [`crate::create`]): the info dictionary `raw`
    /// with `storage` as its piece space, every piece marked had without
    /// hashing it again. A no-op when the metadata is already set. Errors:
    /// `raw` does not hash to the info-hash or is refused by the parser.
    pub(crate) fn set_complete(
        self: &Arc<Self>,
        raw: &[u8],
        storage: Arc<dyn Storage>,
    ) -> Result<(), MetadataError> {
        if self.loaded.get().is_some() {
            return Ok(());
        }
        let info = Arc::new(self.parse(raw)?);
        let n = info.num_pieces();
        let mut picker = Picker::new(
            info.piece_length,
            info.total_length,
            n,
            self.cfg.max_partial_bytes,
        );
        for i in 0..n {
            picker.set_have(i);
        }
        // a hybrid we made comes with its piece layers: v2 peers' hash
        // requests are answered from them (BEP 52)
        let trees = super::trees::Trees::new(&info, storage.load_piece_layers());
        let mut st = self.lock();
        st.picker = Some(picker);
        st.trees = trees;
        drop(st);
        let _ = self.loaded.set(Loaded { info, storage });
        self.metadata_ready.notify_waiters();
        self.wake_peers();
        Ok(())
    }

    /// `raw` as this swarm's info dictionary. Errors: it does not hash to
    /// the info-hashes the link named ([`super::Ids::check`]), it was found
    /// by a v2 info-hash but has no `meta version` 2, or the parser refuses
    /// it.
    pub(crate) fn parse(&self, raw: &[u8]) -> Result<Info, MetadataError> {
        let by_v2 = self.ids.check(self.info_hash, raw)?;
        let info = Info::from_bytes(raw)?;
        if by_v2 && info.version == crate::metainfo::MetaVersion::V1 {
            return Err(MetadataError::NotV2);
        }
        Ok(info)
    }

    fn load(&self, raw: &[u8]) -> Result<Loaded, MetadataError> {
        let info = Arc::new(self.parse(raw)?);
        let storage: Arc<dyn Storage> = match &self.cfg.storage {
            StorageKind::Files(dir) => {
                let tdir = CacheLayout::new(dir).torrent(self.info_hash);
                Arc::new(FileStorage::open(tdir.root(), &info).map_err(|e| {
                    MetadataError::Cache {
                        dir: dir.clone(),
                        source: Arc::new(e),
                    }
                })?)
            }
            StorageKind::Memory => Arc::new(MemStorage::new(&info)),
        };
        Ok(Loaded { info, storage })
    }

    /// Waits until the metadata is known (Ok) or refused (Err), or `timeout`.
    /// For a v2-only torrent the metadata includes every file's piece layer
    /// (fetched with BEP 52 hash requests, or from the cache).
    pub async fn wait_metadata(&self, timeout: Duration) -> Result<(), MetadataError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.metadata_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.loaded.get().is_some() && self.trees_ready() {
                return Ok(());
            }
            if let Some(e) = self.metadata_error() {
                return Err(e);
            }
            if self.is_stopped() {
                return Err(MetadataError::Stopped);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                if self.loaded.get().is_some() {
                    return Err(MetadataError::PieceLayers {
                        secs: timeout.as_secs(),
                        connected: self.stats().peers_connected,
                    });
                }
                let s = self.stats();
                return Err(MetadataError::Timeout {
                    secs: timeout.as_secs(),
                    known: s.peers_known,
                    connected: s.peers_connected,
                    bytes: s.metadata_bytes,
                    failures: self.peer_failures(),
                });
            }
        }
    }
}
