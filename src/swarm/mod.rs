//! One torrent's swarm: peer candidates and connections, metadata, pieces.
//!
//! A [`Swarm`] exists per info-hash. Before the info dictionary is known it
//! gathers peers ([`discovery`]: the DHT, LSD; PEX, the magnet's `x.pe` and
//! the command line add theirs) and its connections ask them for the
//! metadata ([`metadata`], BEP 9); after, the same connections download the
//! pieces that reads wait on ([`read`], chosen by [`picker`] through the
//! session-facing API of [`requests`]). Blocks go to the cache as they
//! arrive ([`write`]); a complete piece is verified from it ([`verify`],
//! SHA-1 off the network tasks, smart ban), kept within the cache's bound
//! ([`cache`]) in [`crate::storage`], and served to other peers. What
//! grows with traffic is held within the process's memory budget
//! ([`budget`]), so memory never grows with the piece length.
//!
//! One file per concept; each owns its part of the state:
//! - [`peers`]: candidates, connections, bans, unchoke slots, PEX entries.
//! - [`metadata`]: setting, loading and waiting for the info dictionary.
//! - [`requests`]: what a peer session asks the swarm (what to request
//!   next, a block arrived, what we have, may we upload).
//! - [`picker`]: which blocks to request, by priority.
//! - [`write`]: received blocks to the cache, as they arrive.
//! - [`hashing`]: the SHA-1 of pieces computed as their blocks are written.
//! - [`verify`]: hashing completed and cached pieces from the cache,
//!   blame and strikes.
//! - [`trees`]: a v2-only torrent's piece layers (BEP 52 hash exchange),
//!   against which [`verify`] checks its pieces.
//! - [`block_verify`]: reads of v2 and hybrid torrents answered block by
//!   block, each block checked against its file's Merkle tree (leaf hashes
//!   fetched for the blocks under a read), before its piece is complete.
//! - [`ids`]: the info-hashes a swarm is known by (v1, v2, hybrid).
//! - [`budget`]: the process-wide memory budget (`--memory-limit`).
//! - [`cache`]: the cache's byte budget, eviction, pins, LRU order.
//! - [`read`]: reads that wait for pieces, readahead windows.
//! - [`discovery`]: the dial, DHT and LSD-announce loops of a swarm.
//! - [`failures`]: the last peers that failed and why, for the lookup's
//!   error.
//!
//! All mutable state sits behind one lock ([`State`], private), held
//! briefly and never across I/O or an `.await`. Peer sessions
//! ([`crate::peer::session`]) never see it: they call [`Swarm`] methods.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, watch};

use crate::metainfo::Info;
use crate::storage::Storage;
use crate::{InfoHash, PeerId};

mod block_verify;
pub mod budget;
mod cache;
pub(crate) mod discovery;
mod failures;
mod hashing;
mod holepunch;
mod ids;
mod metadata;
mod peers;
pub(crate) mod picker;
mod progress;
mod read;
mod requests;
#[cfg(test)]
mod tests;
mod trees;
mod verify;
mod write;

pub use crate::storage::StorageKind;
pub use cache::PiecePin;
pub use failures::PeerFailures;
pub(crate) use holepunch::{OUTBOX as HOLEPUNCH_OUTBOX, Outbox as HolepunchOutbox};
pub(crate) use ids::Ids;
pub(crate) use metadata::AssemblyPermit;
pub use metadata::MetadataError;
pub(crate) use peers::DialTarget;
pub(crate) use picker::{BLOCK, ConnId, Req};
pub use progress::PeerInfo;
pub(crate) use requests::{BlockArrival, QueueCaps, UploadCheck, UploadReadError};

use picker::Picker;

/// Where a peer address came from (logged, and counted in the progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum PeerSource {
    Dht,
    Lsd,
    Pex,
    /// `x.pe` in the magnet link.
    Magnet,
    /// `--peer` on the command line or `LookupOptions::peers`.
    Cli,
    /// It connected to us.
    Incoming,
    /// A relay told us to dial it (BEP 55 `connect`).
    Holepunch,
}

impl fmt::Display for PeerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerSource::Dht => "dht",
            PeerSource::Lsd => "lsd",
            PeerSource::Pex => "pex",
            PeerSource::Magnet => "magnet",
            PeerSource::Cli => "cli",
            PeerSource::Incoming => "incoming",
            PeerSource::Holepunch => "holepunch",
        })
    }
}

/// Settings of one swarm.
#[derive(Debug, Clone)]
pub(crate) struct SwarmConfig {
    pub peer_id: PeerId,
    /// Our TCP listen port, advertised in the extension handshake (BEP 10 `p`).
    pub listen_port: u16,
    /// Upload to peers and announce (false: `--no-seed`).
    pub seed: bool,
    /// Download every piece at the lowest priority (`--prefetch`).
    pub prefetch: bool,
    /// How long a read waits for its pieces before failing.
    pub read_timeout: Duration,
    /// Most peer connections at once.
    pub max_peers: usize,
    /// Cache space for partial pieces other than those reads wait on, in
    /// bytes (their blocks are in the cache, not in memory).
    pub max_partial_bytes: u64,
    /// Largest info dictionary accepted over BEP 9, in bytes.
    pub max_metadata_size: u64,
    pub storage: StorageKind,
    /// Most bytes of cached pieces kept in the cache (`--cache-size`);
    /// least recently read pieces are evicted past it. None: unlimited for
    /// a torrent whose `have` file lists every piece at load, else half the
    /// free space of the cache directory's filesystem at load plus what the
    /// torrent already holds.
    pub cache_size: Option<u64>,
    /// We want RC4-encrypted connections (MSE `require`): said to peers in
    /// the extension handshake (BEP 10 `e`), so they dial us with MSE.
    pub prefers_encryption: bool,
    /// Whether and where peers on the internet reach us (port mapping,
    /// `yourip` claims): a PEX entry naming our mapped address is us.
    pub reach: crate::reach::Reach,
}

/// The loaded torrent: info dictionary and its storage.
pub(crate) struct Loaded {
    pub info: Arc<Info>,
    pub storage: Arc<dyn Storage>,
}

/// Mutable swarm state, under one lock (held briefly, never across I/O).
/// Each concept keeps its part in a struct of its own file.
struct State {
    peers: peers::Peers,
    /// Set once the info dictionary is known.
    picker: Option<Picker>,
    /// Why the metadata was refused, if it was (the lookup fails with it).
    metadata_error: Option<MetadataError>,
    verify: verify::Verify,
    cache: cache::Cache,
    reads: read::Reads,
    /// A v2-only torrent's piece layers ([`trees`]).
    trees: trees::Trees,
    /// Leaf hashes for reads verified block by block ([`block_verify`]).
    blocks: block_verify::BlockHashes,
    /// The last peers that failed and why ([`failures`]).
    failures: failures::Failures,
}

/// Counters shown in the progress line and logs.
#[derive(Default)]
pub(crate) struct Counters {
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    pub metadata_bytes: AtomicU64,
    pub hash_failures: AtomicU64,
    /// Cached pieces hashed since the start (by reads or the background
    /// verifier), each at most once.
    pub cached_hashed: AtomicU64,
    /// Downloaded pieces verified by the SHA-1 the writer computed as
    /// their blocks were written ([`hashing`]).
    pub hashed_as_written: AtomicU64,
    /// Downloaded (or locally copied) pieces hashed by reading them back
    /// from the storage.
    pub hashed_read_back: AtomicU64,
}

/// A snapshot of a swarm for progress output.
#[derive(Debug, Clone, Default)]
pub struct SwarmStats {
    pub peers_known: usize,
    pub peers_connected: usize,
    pub by_source: Vec<(String, usize)>,
    pub metadata_bytes: u64,
    /// Pieces verified and stored (advertised to peers).
    pub pieces_have: u32,
    /// Pieces in the cache not verified yet since the start: neither
    /// advertised nor served until hashed.
    pub pieces_unverified: u32,
    pub pieces_total: u32,
    pub downloaded: u64,
    pub uploaded: u64,
}

/// One torrent's swarm. Shared by its peer tasks, readers and the client.
pub(crate) struct Swarm {
    pub info_hash: InfoHash,
    /// The hashes the link named ([`ids`]).
    ids: Ids,
    pub cfg: SwarmConfig,
    loaded: OnceLock<Loaded>,
    /// Held while the metadata is being loaded (see [`Swarm::set_metadata`]).
    loading: Mutex<()>,
    state: Mutex<State>,
    /// Fires when the metadata is set or refused.
    metadata_ready: Notify,
    /// Fires (notify_waiters) each time a piece is verified or lost.
    piece_event: Notify,
    /// Newly verified pieces, for HAVE messages.
    have_tx: broadcast::Sender<u32>,
    /// Set to true to stop every task of this swarm.
    shutdown: watch::Sender<bool>,
    /// Fires when new peer candidates arrive.
    candidates_changed: Notify,
    pub counters: Counters,
    /// Reads ([`Swarm::read`]) reading the cache right now: the background
    /// verifier yields to them.
    cache_reads: AtomicUsize,
    /// Connections assembling the metadata now (see
    /// [`Swarm::metadata_permit`]).
    metadata_assemblers: AtomicUsize,
    /// The swarm's cache writer ([`write`]), created on the
    /// first block received.
    writer: OnceLock<Arc<write::Writer>>,
}

impl Swarm {
    /// A swarm with no metadata yet, known by `info_hash` alone (its info
    /// dictionary's SHA-1, or SHA-256 truncated to 20 bytes).
    #[cfg(test)]
    pub fn new(info_hash: InfoHash, cfg: SwarmConfig) -> Arc<Swarm> {
        Swarm::with_ids(info_hash, Ids::bare(), cfg)
    }

    /// A swarm with no metadata yet, keyed by `info_hash` and checking its
    /// info dictionary against the hashes of `ids` (see [`ids`]).
    pub fn with_ids(info_hash: InfoHash, ids: Ids, cfg: SwarmConfig) -> Arc<Swarm> {
        Arc::new(Swarm {
            info_hash,
            ids,
            cfg,
            loaded: OnceLock::new(),
            loading: Mutex::new(()),
            state: Mutex::new(State {
                peers: peers::Peers::default(),
                picker: None,
                metadata_error: None,
                verify: verify::Verify::default(),
                cache: cache::Cache::default(),
                reads: read::Reads::default(),
                trees: trees::Trees::default(),
                blocks: block_verify::BlockHashes::default(),
                failures: failures::Failures::default(),
            }),
            metadata_ready: Notify::new(),
            piece_event: Notify::new(),
            have_tx: broadcast::channel(1024).0,
            shutdown: watch::channel(false).0,
            candidates_changed: Notify::new(),
            counters: Counters::default(),
            cache_reads: AtomicUsize::new(0),
            metadata_assemblers: AtomicUsize::new(0),
            writer: OnceLock::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The torrent, once its info dictionary is known.
    pub fn loaded(&self) -> Option<&Loaded> {
        self.loaded.get()
    }

    /// Whether `stop` was called.
    pub fn is_stopped(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// A receiver that changes (to true) when the swarm stops.
    pub(crate) fn subscribe_shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Newly verified pieces, each once, for HAVE messages (a receiver
    /// that lags has missed some: see [`Swarm::have_pieces`]).
    pub(crate) fn subscribe_haves(&self) -> broadcast::Receiver<u32> {
        self.have_tx.subscribe()
    }

    /// Stops every task of this swarm and saves the resume bitfield.
    pub fn stop(&self) {
        let (written, read_back) = (
            self.counters.hashed_as_written.load(Ordering::Relaxed),
            self.counters.hashed_read_back.load(Ordering::Relaxed),
        );
        if written + read_back > 0 {
            tracing::info!(
                "{}: {} downloaded pieces hashed: {written} as their blocks were written, {read_back} read back from the cache",
                self.info_hash,
                written + read_back
            );
        }
        self.shutdown.send_replace(true);
        self.save_resume();
        self.piece_event.notify_waiters();
        self.metadata_ready.notify_waiters();
    }

    /// Wakes every peer task so it re-runs the picker.
    pub fn wake_peers(&self) {
        self.lock().peers.wake_all();
    }

    /// A snapshot for progress output.
    pub fn stats(&self) -> SwarmStats {
        let st = self.lock();
        SwarmStats {
            peers_known: st.peers.known(),
            peers_connected: st.peers.connected(),
            by_source: st.peers.by_source(),
            metadata_bytes: self.counters.metadata_bytes.load(Ordering::Relaxed),
            pieces_have: st.picker.as_ref().map_or(0, |p| p.have_count()),
            pieces_unverified: st.picker.as_ref().map_or(0, |p| p.unverified_count()),
            pieces_total: st.picker.as_ref().map_or(0, |p| p.num_pieces()),
            downloaded: self.counters.downloaded.load(Ordering::Relaxed),
            uploaded: self.counters.uploaded.load(Ordering::Relaxed),
        }
    }
}
