//! One torrent's swarm: peer candidates and connections, metadata, pieces.
//!
//! A [`Swarm`] exists per info-hash. Before the info dictionary is known it
//! gathers peers (DHT, LSD, PEX, the magnet's `x.pe`, the command line) and
//! asks them for the metadata (BEP 9); after, the same connections download
//! the pieces that reads wait on ([`crate::picker`]), verify them (SHA-1,
//! off the network tasks), store them ([`crate::storage`]) and serve them to
//! other peers (seeding).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use sha1::Digest;
use tokio::sync::{Notify, broadcast, watch};

use crate::metainfo::Info;
use crate::picker::Picker;
use crate::storage::{FileStorage, MemStorage, Storage};
use crate::{InfoHash, PeerId};

/// Where a peer address came from (logged, and counted in the progress).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerSource {
    Dht,
    Lsd,
    Pex,
    /// `x.pe` in the magnet link.
    Magnet,
    /// `--peer` on the command line or `LookupOptions::peers`.
    Cli,
    /// It connected to us.
    Incoming,
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
        })
    }
}

pub use crate::storage::StorageKind;

/// Settings of one swarm.
#[derive(Debug, Clone)]
pub struct SwarmConfig {
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
    /// Memory for partial pieces other than those reads wait on, in bytes.
    pub max_partial_bytes: u64,
    /// Largest info dictionary accepted over BEP 9, in bytes.
    pub max_metadata_size: u64,
    pub storage: StorageKind,
    /// Most bytes of cached pieces kept in the cache (`--cache-size`);
    /// least recently read pieces are evicted past it. None: unlimited for
    /// a torrent whose `have` file lists every piece at load, else half the
    /// free space of the cache directory's filesystem at load plus what the
    /// torrent already holds (see [`Swarm::cache_budget`]).
    pub cache_size: Option<u64>,
}

/// The loaded torrent: info dictionary and its storage.
pub struct Loaded {
    pub info: Arc<Info>,
    pub storage: Arc<dyn Storage>,
}

/// A peer address we may connect to.
struct Candidate {
    source: PeerSource,
    failures: u32,
    next_try: Instant,
    connected: bool,
    /// False for the ephemeral address of an incoming connection.
    dialable: bool,
}

/// Mutable swarm state, under one lock (held briefly, never across I/O).
pub(crate) struct State {
    candidates: HashMap<SocketAddr, Candidate>,
    /// Live connections: id → (address, waker).
    pub(crate) conns: HashMap<u64, (SocketAddr, Arc<Notify>)>,
    /// Live connections we may tell other peers about (BEP 11): id → (an
    /// address that accepts connections, `ut_pex` flags). Set by the
    /// session once that address is known.
    /// id → (address, flags, sent us good data).
    pex: HashMap<u64, (SocketAddr, u8, bool)>,
    /// Listen addresses of incoming connections' peers (BEP 10 `p`), by
    /// connection: their candidates count as connected while it lives.
    listen_addrs: HashMap<u64, SocketAddr>,
    /// Set once the info dictionary is known.
    pub(crate) picker: Option<Picker>,
    /// Why the metadata was refused, if it was (the lookup fails with it).
    pub(crate) metadata_error: Option<String>,
    next_conn: u64,
    unchoked: usize,
    /// Pieces whose read timed out, and when: the kernel retries a failed
    /// readahead at once, and that retry must not wait a second timeout.
    read_failures: HashMap<u32, Instant>,
    /// Dials in progress (they hold a connection slot until they end).
    dialing: usize,
    /// Banned peers, by IP address: never dialled or accepted again.
    banned: HashSet<IpAddr>,
    /// Pieces proven bad per IP address; [`MAX_STRIKES`] means a ban.
    strikes: HashMap<IpAddr, u32>,
    /// Pieces that failed their hash check with blocks from several peers:
    /// per failed attempt, each block's sender and SHA-1. When the piece
    /// later verifies, the senders of blocks that differ from the good
    /// data are struck ("smart ban"): nobody is blamed on a guess.
    suspects: HashMap<u32, Vec<Attempt>>,
    /// Pieces whose verified data could not be stored, with the error kind:
    /// reads waiting on them fail with it (ENOSPC on a full cache disk).
    store_errors: HashMap<u32, io::ErrorKind>,
    /// Stored pieces, least recently read (or stored) last out: the
    /// eviction order of a bounded cache.
    lru: lru::LruCache<u32, ()>,
    /// Bytes of the pieces in `lru`.
    cached_bytes: u64,
    /// The cache bound in bytes (None: unlimited), set at load.
    budget: Option<u64>,
    /// Pieces being read (from the cache, for a reader or an upload, or
    /// hashed by [`Swarm::start_verify`]), with the number of reads: never
    /// evicted meanwhile.
    pins: HashMap<u32, u32>,
    /// Cached, unverified pieces being hashed now (each hashed once, by
    /// whichever read or the background verifier asked first).
    hashing: HashSet<u32>,
    /// The IP address of every connection id, also after it closed: blocks
    /// it sent may complete a piece later, and blame must find it.
    conn_ips: HashMap<u64, IpAddr>,
}

/// One failed attempt at a piece: each block's sender and SHA-1.
type Attempt = Vec<(IpAddr, [u8; 20])>;

/// Pieces proven bad from one IP address before it is banned.
const MAX_STRIKES: u32 = 3;
/// Failed attempts of one piece remembered for the smart ban.
const MAX_SUSPECT_ATTEMPTS: usize = 4;
/// Longest the background verifier waits for reads to leave the cache
/// alone before it hashes its next piece anyway.
const VERIFY_YIELD_MAX: Duration = Duration::from_millis(250);

/// Counters shown in the progress line and logs.
#[derive(Default)]
pub struct Counters {
    pub downloaded: AtomicU64,
    pub uploaded: AtomicU64,
    pub metadata_bytes: AtomicU64,
    pub hash_failures: AtomicU64,
    /// Cached pieces hashed since the start (by reads or the background
    /// verifier), each at most once.
    pub cached_hashed: AtomicU64,
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
    /// Pieces in the cache not verified yet since the start (see
    /// [`crate::picker`]): neither advertised nor served until hashed.
    pub pieces_unverified: u32,
    pub pieces_total: u32,
    pub downloaded: u64,
    pub uploaded: u64,
}

/// One torrent's swarm. Shared by its peer tasks, readers and the client.
pub struct Swarm {
    pub info_hash: InfoHash,
    pub cfg: SwarmConfig,
    loaded: OnceLock<Loaded>,
    /// Held while the metadata is being loaded (see [`Swarm::set_metadata`]).
    loading: Mutex<()>,
    state: Mutex<State>,
    /// Fires when the metadata is set or refused.
    pub(crate) metadata_ready: Notify,
    /// Fires (notify_waiters) each time a piece is verified or lost.
    piece_event: Notify,
    /// Newly verified pieces, for HAVE messages.
    pub(crate) have_tx: broadcast::Sender<u32>,
    /// Set to true to stop every task of this swarm.
    pub(crate) shutdown: watch::Sender<bool>,
    /// Fires when new peer candidates arrive.
    pub(crate) candidates_changed: Notify,
    pub counters: Counters,
    /// Reads ([`Swarm::read`]) reading the cache right now: the background
    /// verifier yields to them.
    cache_reads: AtomicUsize,
}

/// Counts one read of the cache in progress while it lives (also when the
/// read's future is dropped halfway).
struct CacheRead<'a>(&'a AtomicUsize);

impl<'a> CacheRead<'a> {
    fn new(n: &'a AtomicUsize) -> CacheRead<'a> {
        n.fetch_add(1, Ordering::Relaxed);
        CacheRead(n)
    }
}

impl Drop for CacheRead<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Swarm {
    /// A swarm with no metadata yet.
    pub fn new(info_hash: InfoHash, cfg: SwarmConfig) -> Arc<Swarm> {
        Arc::new(Swarm {
            info_hash,
            cfg,
            loaded: OnceLock::new(),
            loading: Mutex::new(()),
            state: Mutex::new(State {
                candidates: HashMap::new(),
                conns: HashMap::new(),
                pex: HashMap::new(),
                listen_addrs: HashMap::new(),
                picker: None,
                metadata_error: None,
                next_conn: 1,
                unchoked: 0,
                read_failures: HashMap::new(),
                dialing: 0,
                banned: HashSet::new(),
                strikes: HashMap::new(),
                suspects: HashMap::new(),
                store_errors: HashMap::new(),
                lru: lru::LruCache::unbounded(),
                cached_bytes: 0,
                budget: None,
                pins: HashMap::new(),
                hashing: HashSet::new(),
                conn_ips: HashMap::new(),
            }),
            metadata_ready: Notify::new(),
            piece_event: Notify::new(),
            have_tx: broadcast::channel(1024).0,
            shutdown: watch::channel(false).0,
            candidates_changed: Notify::new(),
            counters: Counters::default(),
            cache_reads: AtomicUsize::new(0),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The torrent, once its info dictionary is known.
    pub fn loaded(&self) -> Option<&Loaded> {
        self.loaded.get()
    }

    /// The metadata refusal, if the info dictionary was refused.
    pub fn metadata_error(&self) -> Option<String> {
        self.lock().metadata_error.clone()
    }

    /// Whether `stop` was called.
    pub fn is_stopped(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Stops every task of this swarm and saves the resume bitfield.
    pub fn stop(&self) {
        self.shutdown.send_replace(true);
        self.save_resume();
        self.piece_event.notify_waiters();
        self.metadata_ready.notify_waiters();
    }

    /// Saves the cache's `have` file: every piece the cache holds, verified
    /// or not yet (an unverified piece is hashed again at the next start
    /// anyway; one found bad is no longer listed).
    fn save_resume(&self) {
        if let Some(l) = self.loaded() {
            let bf = self.lock().picker.as_ref().map(|p| p.cached_bitfield());
            if let Some(bf) = bf
                && let Err(e) = l.storage.save_have(&bf)
            {
                tracing::warn!("{}: cannot save resume data: {e}", self.info_hash);
            }
        }
    }

    /// Sets the info dictionary (from BEP 9, or from the cache), opens the
    /// storage and marks the pieces its `have` file lists as cached but
    /// unverified (nothing is hashed here: reads hash what they need, and a
    /// background task, started when a Tokio runtime is current, hashes the
    /// rest). Runs blocking I/O: call from a blocking context. Errors:
    /// parse errors of the info dictionary, storage errors; both are also
    /// kept for the lookup.
    pub fn set_metadata(self: &Arc<Self>, raw: &[u8]) -> Result<(), String> {
        // Two peers may complete the metadata at once: load it only once.
        let _once = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if self.loaded.get().is_some() {
            return Ok(());
        }
        let res = self.load(raw);
        match res {
            Ok(loaded) => {
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
                // cached but unverified: a read hashes them first, the
                // background verifier hashes the rest (see
                // `verify_cached_loop`), and none is advertised or served
                // before its hash matched. Nothing is hashed here, so the
                // mount is usable at once whatever the cache holds.
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
                        "{}: {} of {n} pieces in the cache; each is hashed before it is served or advertised",
                        self.info_hash,
                        held.len()
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
                let mut st = self.lock();
                st.picker = Some(picker);
                st.budget = budget;
                for &i in &held {
                    st.lru.put(i, ());
                }
                st.cached_bytes = held_bytes;
                drop(st);
                let _ = self.loaded.set(loaded);
                self.evict_over_budget();
                if !held.is_empty() {
                    match tokio::runtime::Handle::try_current() {
                        Ok(rt) => {
                            rt.spawn(self.clone().verify_cached_loop());
                        }
                        // Without a runtime nothing is verified in the
                        // background; reads still hash what they need.
                        Err(_) => tracing::debug!(
                            "{}: no runtime: cached pieces are verified on read only",
                            self.info_hash
                        ),
                    }
                }
                self.metadata_ready.notify_waiters();
                for (_, w) in self.lock().conns.values() {
                    w.notify_one();
                }
                Ok(())
            }
            Err(e) => {
                self.lock().metadata_error = Some(e.clone());
                self.metadata_ready.notify_waiters();
                Err(e)
            }
        }
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
    ) -> Result<(), String> {
        if self.loaded.get().is_some() {
            return Ok(());
        }
        if InfoHash::of_info(raw) != self.info_hash {
            return Err("info dictionary does not match the info-hash".into());
        }
        let info = Arc::new(Info::from_bytes(raw).map_err(|e| format!("metadata refused: {e}"))?);
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
        self.lock().picker = Some(picker);
        let _ = self.loaded.set(Loaded { info, storage });
        self.metadata_ready.notify_waiters();
        self.wake_peers();
        Ok(())
    }

    fn load(&self, raw: &[u8]) -> Result<Loaded, String> {
        if InfoHash::of_info(raw) != self.info_hash {
            return Err("info dictionary does not match the info-hash".into());
        }
        let info = Info::from_bytes(raw).map_err(|e| format!("metadata refused: {e}"))?;
        let info = Arc::new(info);
        let storage: Arc<dyn Storage> = match &self.cfg.storage {
            StorageKind::Files(dir) => Arc::new(
                FileStorage::open(&dir.join(self.info_hash.to_hex()), &info)
                    .map_err(|e| format!("cannot open the cache in {}: {e}", dir.display()))?,
            ),
            StorageKind::Memory => Arc::new(MemStorage::new(&info)),
        };
        Ok(Loaded { info, storage })
    }

    /// Waits until the metadata is known (Ok) or refused (Err), or `timeout`.
    pub async fn wait_metadata(&self, timeout: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.metadata_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.loaded.get().is_some() {
                return Ok(());
            }
            if let Some(e) = self.metadata_error() {
                return Err(e);
            }
            if self.is_stopped() {
                return Err("stopped".into());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let s = self.stats();
                return Err(format!(
                    "metadata not found within {} s ({} peers known, {} connected, {} metadata bytes received)",
                    timeout.as_secs(),
                    s.peers_known,
                    s.peers_connected,
                    s.metadata_bytes
                ));
            }
        }
    }

    /// Adds peer candidates from `source`; returns how many were new.
    pub fn add_peers(
        &self,
        addrs: impl IntoIterator<Item = SocketAddr>,
        source: PeerSource,
    ) -> usize {
        let mut st = self.lock();
        let mut new = 0;
        for a in addrs {
            if let Some((_, true)) = candidate_entry(&mut st, a, source) {
                new += 1;
                tracing::debug!("{}: peer {a} from {source}", self.info_hash);
            }
        }
        drop(st);
        if new > 0 {
            self.candidates_changed.notify_one();
        }
        new
    }

    /// Candidates to dial now (not connected, not banned, backoff elapsed),
    /// at most as many as free connection slots (live connections and dials
    /// in progress both take one); marks them connected and counts them as
    /// dialling until [`Swarm::dial_done`].
    pub(crate) fn take_dial_candidates(&self) -> Vec<(SocketAddr, PeerSource)> {
        let mut st = self.lock();
        let free = self
            .cfg
            .max_peers
            .saturating_sub(st.conns.len() + st.dialing);
        let now = Instant::now();
        let banned = &st.banned;
        let mut out: Vec<(SocketAddr, PeerSource)> = st
            .candidates
            .iter()
            .filter(|(a, c)| {
                c.dialable && !c.connected && c.next_try <= now && !banned.contains(&a.ip())
            })
            .map(|(a, c)| (*a, c.source))
            .take(free)
            .collect();
        out.sort_by_key(|(a, _)| *a);
        for (a, _) in &out {
            if let Some(c) = st.candidates.get_mut(a) {
                c.connected = true;
            }
        }
        st.dialing += out.len();
        out
    }

    /// A dial taken with [`Swarm::take_dial_candidates`] ended (connected
    /// or not): its slot is free again.
    pub(crate) fn dial_done(&self) {
        let mut st = self.lock();
        st.dialing = st.dialing.saturating_sub(1);
    }

    /// A dial failed: back off exponentially (2 s, 4 s, ... up to 5 min).
    pub(crate) fn dial_failed(&self, addr: SocketAddr) {
        let mut st = self.lock();
        if let Some(c) = st.candidates.get_mut(&addr) {
            c.connected = false;
            c.failures += 1;
            let secs = 2u64.saturating_pow(c.failures.min(8)).min(300);
            c.next_try = Instant::now() + Duration::from_secs(secs);
        }
    }

    /// Registers a live connection; returns its id and waker, or None when
    /// the connection limit is reached or the address is banned.
    pub(crate) fn register_conn(
        &self,
        addr: SocketAddr,
        source: PeerSource,
    ) -> Option<(u64, Arc<Notify>)> {
        let mut st = self.lock();
        if st.conns.len() >= self.cfg.max_peers || st.banned.contains(&addr.ip()) {
            return None;
        }
        if st.conns.values().any(|(a, _)| *a == addr) {
            return None;
        }
        let c = st.candidates.entry(addr).or_insert_with(|| Candidate {
            source,
            failures: 0,
            next_try: Instant::now(),
            connected: true,
            dialable: source != PeerSource::Incoming,
        });
        c.connected = true;
        c.failures = 0;
        let id = st.next_conn;
        st.next_conn += 1;
        let waker = Arc::new(Notify::new());
        st.conns.insert(id, (addr, waker.clone()));
        if st.conn_ips.len() >= 100_000 {
            st.conn_ips.clear();
        }
        st.conn_ips.insert(id, addr.ip());
        Some((id, waker))
    }

    /// The peer of incoming connection `id` listens on `addr` (BEP 10 `p`):
    /// a peer to dial, but not while this connection lives, so two clients
    /// that both dial never keep two connections to each other.
    pub(crate) fn note_listen_addr(&self, id: u64, addr: SocketAddr) {
        let mut st = self.lock();
        if !st.conns.contains_key(&id) {
            return;
        }
        if let Some((c, _)) = candidate_entry(&mut st, addr, PeerSource::Incoming) {
            c.connected = true;
            st.listen_addrs.insert(id, addr);
        }
    }

    /// A connection ended: its requests go back to the picker.
    pub(crate) fn unregister_conn(&self, id: u64, was_unchoked: bool) {
        let mut st = self.lock();
        st.pex.remove(&id);
        if let Some(addr) = st.listen_addrs.remove(&id)
            && let Some(c) = st.candidates.get_mut(&addr)
        {
            c.connected = false;
            c.next_try = Instant::now() + Duration::from_secs(5);
        }
        if let Some((addr, _)) = st.conns.remove(&id) {
            if let Some(c) = st.candidates.get_mut(&addr) {
                c.connected = false;
                c.next_try = Instant::now() + Duration::from_secs(5);
            }
        }
        if was_unchoked {
            st.unchoked = st.unchoked.saturating_sub(1);
        }
        if let Some(p) = st.picker.as_mut() {
            p.release(id);
        }
        drop(st);
        self.wake_peers();
        self.candidates_changed.notify_one();
    }

    /// Records (or updates) the reachable address and `ut_pex` flags of
    /// live connection `id`, for peer exchange (BEP 11).
    pub(crate) fn set_pex_entry(&self, id: u64, addr: SocketAddr, flags: u8) {
        let mut st = self.lock();
        if st.conns.contains_key(&id) {
            let useful = st.pex.get(&id).is_some_and(|e| e.2);
            st.pex.insert(id, (addr, flags, useful));
        }
    }

    /// The reachable addresses and `ut_pex` flags of the live connections
    /// (BEP 11 `added`), sorted by address. Only peers that sent us blocks
    /// of a piece that verified, and are not banned, are passed on: a peer
    /// sending bad data, or one that never serves anything, is not
    /// advertised to the swarm.
    pub(crate) fn pex_peers(&self) -> Vec<(SocketAddr, u8)> {
        let st = self.lock();
        let mut v: Vec<(SocketAddr, u8)> = st
            .pex
            .values()
            .filter(|(a, _, useful)| *useful && !st.banned.contains(&a.ip()))
            .map(|(a, f, _)| (*a, *f))
            .collect();
        v.sort();
        v
    }

    /// Takes an upload slot for a peer that is interested; false when all 16
    /// slots are taken.
    pub(crate) fn take_unchoke_slot(&self) -> bool {
        let mut st = self.lock();
        if st.unchoked >= 16 {
            return false;
        }
        st.unchoked += 1;
        true
    }

    pub(crate) fn release_unchoke_slot(&self) {
        let mut st = self.lock();
        st.unchoked = st.unchoked.saturating_sub(1);
    }

    /// `addr` turned out to be our own listen address: it is never dialled
    /// again (and not counted as a failure).
    pub(crate) fn forget_self(&self, addr: SocketAddr) {
        if let Some(c) = self.lock().candidates.get_mut(&addr) {
            c.connected = false;
            c.dialable = false;
        }
    }

    /// Bans a peer (bad data, wrong metadata) by IP address: its live
    /// connections are closed (their sessions see [`Swarm::is_banned`] when
    /// woken) and it is never dialled or accepted again.
    pub(crate) fn ban(&self, addr: SocketAddr, why: &str) {
        self.ban_ip(addr.ip(), why);
    }

    fn ban_ip(&self, ip: IpAddr, why: &str) {
        let st = &mut *self.lock();
        if !st.banned.insert(ip) {
            return;
        }
        tracing::warn!("{}: banning peer {ip}: {why}", self.info_hash);
        // Its blocks in pieces still being assembled are suspect: drop them.
        let ids: Vec<u64> = st
            .conn_ips
            .iter()
            .filter(|(_, i)| **i == ip)
            .map(|(id, _)| *id)
            .collect();
        if let Some(p) = st.picker.as_mut() {
            p.discard_blocks_from(&ids);
        }
        for (a, w) in st.conns.values() {
            if a.ip() == ip {
                w.notify_one();
            }
        }
    }

    /// Whether peers at `ip` are banned.
    pub(crate) fn is_banned(&self, ip: IpAddr) -> bool {
        self.lock().banned.contains(&ip)
    }

    /// One more piece proven bad from `ip`; bans it at [`MAX_STRIKES`].
    fn strike(&self, ip: IpAddr, index: u32) {
        let n = {
            let mut st = self.lock();
            let n = st.strikes.entry(ip).or_default();
            *n += 1;
            *n
        };
        tracing::info!(
            "{}: peer {ip} sent bad data for piece {index} ({n} of {MAX_STRIKES} strikes)",
            self.info_hash
        );
        if n >= MAX_STRIKES {
            self.ban_ip(ip, &format!("sent {n} pieces that failed their hash check"));
        }
    }

    /// Wakes every peer task so it re-runs the picker.
    pub fn wake_peers(&self) {
        for (_, w) in self.lock().conns.values() {
            w.notify_one();
        }
    }

    /// The cache bound for a torrent that holds `held` bytes at load (see
    /// [`SwarmConfig::cache_size`]); None means unlimited. A bound of at
    /// least the torrent's size is no bound.
    fn cache_budget(&self, info: &crate::metainfo::Info, held: u64, complete: bool) -> Option<u64> {
        let budget = match (self.cfg.cache_size, &self.cfg.storage) {
            (Some(b), _) => b,
            (None, _) if complete => return None,
            (None, StorageKind::Memory) => return None,
            (None, StorageKind::Files(dir)) => held.saturating_add(free_space(dir)? / 2),
        };
        (budget < info.total_length).then_some(budget)
    }

    /// Evicts least recently read pieces (not pinned by a read, not waited
    /// on) until the cache is within its bound: each is forgotten first
    /// (no longer had, so never advertised in a bitfield, served or read
    /// again), then its space is freed. Runs blocking I/O.
    fn evict_over_budget(&self) {
        self.evict_to_fit(0);
    }

    /// Evicts (as [`Swarm::evict_over_budget`]) until `extra` more bytes
    /// fit within the bound; false when they do not (everything left is
    /// being read or waited on).
    fn evict_to_fit(&self, extra: u64) -> bool {
        let (victims, fits) = {
            let guard = &mut *self.lock();
            let Some(budget) = guard.budget else {
                return true;
            };
            let Some(picker) = guard.picker.as_mut() else {
                return true;
            };
            let mut victims = Vec::new();
            while guard.cached_bytes + extra > budget {
                let pins = &guard.pins;
                let Some(i) = guard
                    .lru
                    .iter()
                    .rev()
                    .map(|(i, _)| *i)
                    .find(|i| !pins.contains_key(i) && !picker.is_urgent(*i))
                else {
                    break; // everything left is being read
                };
                guard.lru.pop(&i);
                guard.cached_bytes -= picker.piece_size(i) as u64;
                picker.evict(i);
                victims.push(i);
            }
            (victims, guard.cached_bytes + extra <= budget)
        };
        if victims.is_empty() {
            return fits;
        }
        let Some(loaded) = self.loaded() else {
            return fits;
        };
        for &i in &victims {
            if let Err(e) = loaded.storage.discard_piece(i) {
                tracing::warn!(
                    "{}: cannot free the space of evicted piece {i}: {e}",
                    self.info_hash
                );
            }
        }
        tracing::debug!("{}: evicted pieces {victims:?}", self.info_hash);
        {
            let mut st = self.lock();
            if let Some(p) = st.picker.as_mut() {
                for &i in &victims {
                    p.verify_failed(i); // wantable again
                }
            }
        }
        // A read may wait on an evicted piece again: ask for it.
        self.wake_peers();
        fits
    }

    /// Pins pieces `first..=last` if all are held (true): they are not
    /// evicted until [`Swarm::unpin`], and count as just read.
    pub(crate) fn pin(&self, first: u32, last: u32) -> bool {
        let mut st = self.lock();
        pin_locked(&mut st, first, last)
    }

    /// Pins the pieces under absolute byte range `[start, end)` if all are
    /// verified and stored: they are not evicted while the returned guard
    /// lives (for readers that bypass [`Swarm::read`], such as a FUSE
    /// passthrough open of a cache file). `None` if one is missing or the
    /// range is empty.
    pub fn pin_range(self: &Arc<Self>, start: u64, end: u64) -> Option<PiecePin> {
        let pl = self.loaded()?.info.piece_length;
        if end <= start {
            return None;
        }
        let (first, last) = pieces_under(pl, start, end);
        self.pin(first, last).then(|| PiecePin {
            swarm: self.clone(),
            first,
            last,
        })
    }

    /// Releases a [`Swarm::pin`].
    pub(crate) fn unpin(&self, first: u32, last: u32) {
        let mut st = self.lock();
        for i in first..=last {
            if let Some(n) = st.pins.get_mut(&i) {
                *n -= 1;
                if *n == 0 {
                    st.pins.remove(&i);
                }
            }
        }
    }

    /// Starts hashing cached, unverified piece `index` on the blocking pool
    /// (the caller holds the lock, `st`), unless it is not unverified or is
    /// being hashed already: each piece is hashed once however many reads
    /// want it. The piece is pinned (never evicted) while it is hashed.
    /// Returns the task, or None when nothing was started. The outcome is
    /// applied by [`Swarm::finish_verify`], which fires `piece_event`.
    fn start_verify(
        self: &Arc<Self>,
        st: &mut State,
        index: u32,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let loaded = self.loaded()?;
        let p = st.picker.as_ref()?;
        if !p.is_unverified(index) || st.hashing.contains(&index) {
            return None;
        }
        let size = p.piece_size(index) as usize;
        st.hashing.insert(index);
        *st.pins.entry(index).or_default() += 1;
        let swarm = self.clone();
        let storage = loaded.storage.clone();
        let offset = u64::from(index) * loaded.info.piece_length;
        let want = loaded.info.piece_hash(index);
        Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; size];
            let good = match storage.read_at(offset, &mut buf) {
                Ok(()) => sha1::Sha1::digest(&buf)[..] == want[..],
                Err(e) => {
                    tracing::debug!("{}: cached piece {index}: {e}", swarm.info_hash);
                    false
                }
            };
            drop(buf);
            swarm.counters.cached_hashed.fetch_add(1, Ordering::Relaxed);
            swarm.finish_verify(index, good);
        }))
    }

    /// Applies the hash check of cached piece `index` started by
    /// [`Swarm::start_verify`]: a good piece becomes had (HAVE sent to
    /// peers); a bad or unreadable one is dropped from the cache (forgotten,
    /// its space freed, no longer in the `have` file) and becomes missing,
    /// so a read that waits on it fetches it from peers. Runs blocking I/O.
    fn finish_verify(&self, index: u32, good: bool) {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.hashing.remove(&index);
        if let Some(n) = st.pins.get_mut(&index) {
            *n -= 1;
            if *n == 0 {
                st.pins.remove(&index);
            }
        }
        let Some(p) = st.picker.as_mut() else { return };
        if !p.is_unverified(index) {
            // Forgotten meanwhile (a failed read of its range): nothing to do.
            drop(guard);
            self.piece_event.notify_waiters();
            return;
        }
        if good {
            p.set_have(index);
            drop(guard);
            let _ = self.have_tx.send(index);
            self.piece_event.notify_waiters();
            return;
        }
        // Neither had nor wanted until its space is freed: a new copy is
        // never written before the bad one is punched out.
        p.evict(index);
        if st.lru.pop(&index).is_some() {
            st.cached_bytes -= p.piece_size(index) as u64;
        }
        drop(guard);
        tracing::warn!(
            "{}: cached piece {index} is missing or corrupt; it will be fetched again",
            self.info_hash
        );
        if let Some(l) = self.loaded()
            && let Err(e) = l.storage.discard_piece(index)
        {
            tracing::warn!(
                "{}: cannot free the space of bad cached piece {index}: {e}",
                self.info_hash
            );
        }
        if let Some(p) = self.lock().picker.as_mut() {
            p.verify_failed(index); // wanted again
        }
        self.piece_event.notify_waiters();
        self.wake_peers();
    }

    /// The background verifier: hashes the cached pieces no read has asked
    /// for yet, one at a time, so that a seeding mount soon advertises what
    /// it really holds (each piece's HAVE goes out as it verifies). Pieces
    /// in a readahead window go first. Low priority: before each piece it
    /// waits while reads use the cache (reading it, or hashing pieces they
    /// wait on), up to [`VERIFY_YIELD_MAX`] per piece, so it neither
    /// starves nor slows reads much. Uploads do not hold it back: the
    /// sooner it ends, the more a seeding mount can offer. Ends when no
    /// unverified piece is left or the swarm stops.
    async fn verify_cached_loop(self: Arc<Self>) {
        let started = Instant::now();
        let mut next = 0u32;
        let mut hashed = 0u32;
        loop {
            let yield_until = tokio::time::Instant::now() + VERIFY_YIELD_MAX;
            while !self.is_stopped() && tokio::time::Instant::now() < yield_until {
                let busy =
                    self.cache_reads.load(Ordering::Relaxed) > 0 || !self.lock().hashing.is_empty();
                if !busy {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if self.is_stopped() {
                return;
            }
            let task = {
                let mut guard = self.lock();
                let st = &mut *guard;
                let Some(p) = st.picker.as_ref() else { return };
                let hashing = &st.hashing;
                let pick = p.next_unverified(next, &|i| hashing.contains(&i));
                match pick {
                    // A read is hashing every piece left: wait for it.
                    None if !st.hashing.is_empty() => None,
                    None => break,
                    Some(i) => {
                        if i >= next {
                            next = i + 1;
                        }
                        self.start_verify(st, i)
                    }
                }
            };
            match task {
                Some(t) => {
                    let _ = t.await;
                    hashed += 1;
                }
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        let s = self.stats();
        tracing::info!(
            "{}: cached pieces verified in {:.2} s ({hashed} hashed in the background): {} of {} pieces held",
            self.info_hash,
            started.elapsed().as_secs_f64(),
            s.pieces_have,
            s.pieces_total
        );
    }

    /// Verifies a completed piece off the network task, stores it, and
    /// announces it. `sources` names the connection each 16 KiB block came
    /// from (empty for pieces copied locally).
    ///
    /// On a hash failure the piece is fetched again. Blame: a piece whose
    /// blocks all came from one peer is a strike against it; a piece mixed
    /// from several peers is remembered, and once it verifies, the peers
    /// whose blocks differed from the good data get the strike (an honest
    /// peer is never blamed for another's blocks). [`MAX_STRIKES`] strikes
    /// ban the IP address. A piece that cannot be stored (ENOSPC) fails the
    /// reads waiting on it with that error.
    pub(crate) fn complete_piece(self: &Arc<Self>, index: u32, data: Vec<u8>, sources: Vec<u64>) {
        let ips: Vec<Option<IpAddr>> = {
            let st = self.lock();
            sources
                .iter()
                .map(|id| st.conn_ips.get(id).copied())
                .collect()
        };
        let swarm = self.clone();
        tokio::task::spawn_blocking(move || {
            let Some(loaded) = swarm.loaded() else { return };
            let ok = sha1::Sha1::digest(&data)[..] == loaded.info.piece_hash(index)[..];
            if ok
                && swarm
                    .lock()
                    .picker
                    .as_ref()
                    .is_some_and(|p| p.is_unverified(index))
            {
                // A copy of a piece the cache holds unverified (never one
                // from a peer: those are not requested): the cached copy is
                // being or will be hashed; writing over it meanwhile could
                // race with dropping it if it is bad.
                return;
            }
            if ok {
                // Its senders served good data: PEX may pass them on.
                let mut st = swarm.lock();
                for id in &sources {
                    if let Some(e) = st.pex.get_mut(id) {
                        e.2 = true;
                    }
                }
            }
            let block_hashes = || -> Vec<[u8; 20]> {
                data.chunks(crate::picker::BLOCK as usize)
                    .map(|b| sha1::Sha1::digest(b).into())
                    .collect()
            };
            if !ok {
                swarm.counters.hash_failures.fetch_add(1, Ordering::Relaxed);
                let senders: HashSet<IpAddr> = ips.iter().flatten().copied().collect();
                {
                    let mut st = swarm.lock();
                    if let Some(p) = st.picker.as_mut() {
                        p.verify_failed(index);
                    }
                    if senders.len() > 1 {
                        let attempt: Attempt = ips
                            .iter()
                            .zip(block_hashes())
                            .filter_map(|(ip, h)| ip.map(|ip| (ip, h)))
                            .collect();
                        let tries = st.suspects.entry(index).or_default();
                        if tries.len() < MAX_SUSPECT_ATTEMPTS {
                            tries.push(attempt);
                        }
                    }
                }
                tracing::warn!(
                    "{}: piece {index} failed its SHA-1 check (blocks from {}); fetching it again",
                    swarm.info_hash,
                    if senders.is_empty() {
                        "no live peer".to_string()
                    } else {
                        senders
                            .iter()
                            .map(|i| i.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                );
                if senders.len() == 1 {
                    let ip = *senders.iter().next().expect("one sender");
                    swarm.strike(ip, index);
                }
                swarm.wake_peers();
                return;
            }
            // Verified: settle earlier failed attempts of this piece.
            let tries = swarm.lock().suspects.remove(&index);
            if let Some(tries) = tries {
                let good = block_hashes();
                let mut culprits = HashSet::new();
                for attempt in tries {
                    for ((ip, h), g) in attempt.iter().zip(&good) {
                        if h != g {
                            culprits.insert(*ip);
                        }
                    }
                }
                for ip in culprits {
                    swarm.strike(ip, index);
                }
            }
            // Room first, so the cache never holds more than its bound
            // (pieces a read waits on excepted: they are stored anyway).
            if !swarm.evict_to_fit(data.len() as u64) {
                let mut st = swarm.lock();
                if let Some(p) = st.picker.as_mut()
                    && !p.is_urgent(index)
                {
                    p.verify_failed(index);
                    drop(st);
                    tracing::debug!(
                        "{}: piece {index} dropped: the cache is full of pieces being read",
                        swarm.info_hash
                    );
                    return;
                }
            }
            if let Err(e) = loaded.storage.write_piece(index, &data) {
                tracing::error!(
                    "{}: cannot store piece {index} in the cache: {e}; reads of it fail",
                    swarm.info_hash
                );
                {
                    let mut st = swarm.lock();
                    st.store_errors.insert(index, e.kind());
                    if let Some(p) = st.picker.as_mut() {
                        p.verify_failed(index);
                    }
                }
                swarm.piece_event.notify_waiters();
                return;
            }
            swarm
                .counters
                .downloaded
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            let complete = {
                let mut st = swarm.lock();
                st.store_errors.remove(&index);
                if st.lru.put(index, ()).is_none() {
                    st.cached_bytes += data.len() as u64;
                }
                let p = st.picker.as_mut().expect("loaded implies picker");
                p.set_have(index);
                p.is_complete()
            };
            swarm.evict_over_budget();
            let _ = swarm.have_tx.send(index);
            swarm.piece_event.notify_waiters();
            if complete {
                tracing::info!("{}: all pieces verified", swarm.info_hash);
                swarm.save_resume();
            } else if index % 64 == 0 {
                swarm.save_resume();
            }
            swarm.wake_peers();
        });
    }

    /// Reads `len` bytes at absolute offset `offset` of the piece space,
    /// waiting for missing pieces (they become urgent) up to the read
    /// timeout. Cached pieces not verified since the start are hashed first
    /// (once, however many reads want them); a bad one is dropped and
    /// fetched like a missing piece. Errors: `TimedOut` with the reason
    /// logged, storage errors.
    pub async fn read(self: &Arc<Self>, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let Some(loaded) = self.loaded() else {
            return Err(io::Error::other("no metadata"));
        };
        let total = loaded.info.total_length;
        if offset >= total || len == 0 {
            return Ok(Vec::new());
        }
        let len = (len as u64).min(total - offset) as usize;
        let pl = loaded.info.piece_length;
        let (first, last) = pieces_under(pl, offset, offset + len as u64);
        for attempt in 0..2 {
            // Pinned on success: not evicted while we read them. The guard
            // unpins even if this future is dropped mid-read.
            self.wait_pieces(first, last).await?;
            let pin = PiecePin {
                swarm: self.clone(),
                first,
                last,
            };
            let storage = loaded.storage.clone();
            let reading = CacheRead::new(&self.cache_reads);
            let res = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; len];
                storage.read_at(offset, &mut buf).map(|_| buf)
            })
            .await
            .map_err(io::Error::other);
            drop(reading);
            let res = match res {
                Ok(r) => r,
                Err(e) => {
                    drop(pin);
                    return Err(e);
                }
            };
            if res.is_err() && attempt == 0 {
                let mut st = self.lock();
                let st = &mut *st;
                if let Some(p) = st.picker.as_mut() {
                    for i in first..=last {
                        p.unset_have(i);
                        if st.lru.pop(&i).is_some() {
                            st.cached_bytes -= p.piece_size(i) as u64;
                        }
                    }
                }
            }
            drop(pin);
            match res {
                Ok(buf) => return Ok(buf),
                Err(e) if attempt == 0 => {
                    tracing::warn!(
                        "{}: stored pieces {first}..={last} unreadable ({e}); fetching them again",
                        self.info_hash
                    );
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Waits until pieces `first..=last` are all verified, and pins them
    /// (the caller must [`Swarm::unpin`] them) on success. Cached,
    /// unverified pieces of the range are hashed now (see
    /// [`Swarm::start_verify`]); missing ones are requested from peers.
    async fn wait_pieces(self: &Arc<Self>, first: u32, last: u32) -> io::Result<()> {
        let missing: Vec<u32> = {
            let mut st = self.lock();
            if pin_locked(&mut st, first, last) {
                return Ok(());
            }
            let recent = (first..=last).find(|i| {
                st.read_failures
                    .get(i)
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
            });
            let p = st
                .picker
                .as_mut()
                .ok_or_else(|| io::Error::other("no metadata"))?;
            if let Some(i) = recent
                && !p.has(i)
            {
                // The kernel retries a failed readahead at once: fail the
                // retry now instead of waiting a second read timeout.
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("piece {i} timed out moments ago"),
                ));
            }
            let m: Vec<u32> = (first..=last)
                .filter(|&i| !p.has(i) && !p.is_unverified(i))
                .collect();
            let unverified: Vec<u32> = (first..=last).filter(|&i| p.is_unverified(i)).collect();
            // Every piece of the range is urgent while the read waits, the
            // ones already held too: urgent pieces are never evicted, so
            // the read cannot lose them before the rest arrives.
            for i in first..=last {
                p.add_urgent(i);
            }
            // A new read tries again pieces that could not be stored before.
            for i in &m {
                st.store_errors.remove(i);
            }
            // Cached pieces are hashed before they are served.
            for i in unverified {
                self.start_verify(&mut st, i);
            }
            m
        };
        if !missing.is_empty() {
            self.wake_peers();
        }
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.cfg.read_timeout;
        let result = loop {
            let notified = self.piece_event.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (still, store_error) = {
                let mut st = self.lock();
                // Pinned under the same lock that sees them all: an
                // eviction cannot slip in between.
                if pin_locked(&mut st, first, last) {
                    (Vec::new(), None)
                } else {
                    let p = st.picker.as_ref().expect("loaded");
                    let still: Vec<u32> = (first..=last).filter(|&i| !p.has(i)).collect();
                    let err = still
                        .iter()
                        .find_map(|i| st.store_errors.get(i).map(|k| (*i, *k)));
                    (still, err)
                }
            };
            if still.is_empty() {
                break Ok(());
            }
            if let Some((i, kind)) = store_error {
                break Err(io::Error::new(
                    kind,
                    format!("piece {i} was received but cannot be stored in the cache"),
                ));
            }
            if self.is_stopped() {
                break Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "the mount is stopping",
                ));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let s = self.stats();
                tracing::error!(
                    "{}: read failed after {:.1} s: {} not received ({} peers connected, {} known); \
                     the read returns EIO (see --read-timeout)",
                    self.info_hash,
                    started.elapsed().as_secs_f64(),
                    piece_list(&still),
                    s.peers_connected,
                    s.peers_known
                );
                let mut st = self.lock();
                st.read_failures
                    .retain(|_, t| t.elapsed() < Duration::from_secs(2));
                for &i in &still {
                    st.read_failures.insert(i, Instant::now());
                }
                drop(st);
                break Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} not received within the read timeout",
                        piece_list(&still)
                    ),
                ));
            }
        };
        let mut st = self.lock();
        if let Some(p) = st.picker.as_mut() {
            for i in first..=last {
                p.remove_urgent(i);
            }
        }
        result
    }

    /// Sets the readahead window (absolute byte range) of a file handle.
    pub fn set_readahead(&self, handle: u64, start: u64, end: u64) {
        let Some(l) = self.loaded() else { return };
        let pl = l.info.piece_length;
        let (s, e) = if end > start {
            ((start / pl) as u32, end.div_ceil(pl) as u32)
        } else {
            (0, 0)
        };
        let changed = {
            let mut st = self.lock();
            // With a bounded cache, readahead gets at most a quarter of it:
            // pieces fetched ahead must not evict each other (or the
            // pieces being read) before they are read.
            let e = match st.budget {
                Some(b) => e.min(s.saturating_add(((b / pl) / 4).max(1) as u32)),
                None => e,
            };
            match st.picker.as_mut() {
                Some(p) => {
                    p.set_readahead(handle, s, e);
                    true
                }
                None => false,
            }
        };
        if changed {
            self.wake_peers();
        }
    }

    /// Whether every piece in absolute byte range `[start, end)` is cached,
    /// verified or not yet (see [`Swarm::has_range`]): readable without the
    /// network unless a piece turns out bad when a read hashes it.
    pub fn holds_range(&self, start: u64, end: u64) -> bool {
        self.range_all(start, end, |p, i| p.has(i) || p.is_unverified(i))
    }

    /// Whether `pred` holds for every piece under absolute byte range
    /// `[start, end)` (true for an empty range; false without metadata).
    fn range_all(&self, start: u64, end: u64, pred: impl Fn(&Picker, u32) -> bool) -> bool {
        let Some(l) = self.loaded() else { return false };
        if end <= start {
            return true;
        }
        let pl = l.info.piece_length;
        let st = self.lock();
        let Some(p) = st.picker.as_ref() else {
            return false;
        };
        let (first, last) = pieces_under(pl, start, end);
        (first..=last).all(|i| pred(p, i))
    }

    /// Whether every piece in absolute byte range `[start, end)` is verified
    /// (cached pieces not hashed yet since the start do not count).
    pub fn has_range(&self, start: u64, end: u64) -> bool {
        self.range_all(start, end, |p, i| p.has(i))
    }

    /// A snapshot for progress output.
    pub fn stats(&self) -> SwarmStats {
        let st = self.lock();
        let mut by: HashMap<PeerSource, usize> = HashMap::new();
        for c in st.candidates.values() {
            *by.entry(c.source).or_default() += 1;
        }
        let mut by_source: Vec<(String, usize)> =
            by.into_iter().map(|(s, n)| (s.to_string(), n)).collect();
        by_source.sort();
        SwarmStats {
            peers_known: st.candidates.len(),
            peers_connected: st.conns.len(),
            by_source,
            metadata_bytes: self.counters.metadata_bytes.load(Ordering::Relaxed),
            pieces_have: st.picker.as_ref().map_or(0, |p| p.have_count()),
            pieces_unverified: st.picker.as_ref().map_or(0, |p| p.unverified_count()),
            pieces_total: st.picker.as_ref().map_or(0, |p| p.num_pieces()),
            downloaded: self.counters.downloaded.load(Ordering::Relaxed),
            uploaded: self.counters.uploaded.load(Ordering::Relaxed),
        }
    }
}

/// Pins `first..=last` (see [`Swarm::pin`]) if all are held.
/// "piece 7", or "pieces 3, 4, 9" (at most 8 named, then "... (N in all)"),
/// for messages about missing pieces.
fn piece_list(pieces: &[u32]) -> String {
    const SHOWN: usize = 8;
    let named: Vec<String> = pieces.iter().take(SHOWN).map(u32::to_string).collect();
    let more = if pieces.len() > SHOWN {
        format!(", ... ({} in all)", pieces.len())
    } else {
        String::new()
    };
    match pieces.len() {
        1 => format!("piece {}", pieces[0]),
        _ => format!("pieces {}{more}", named.join(", ")),
    }
}

/// Pieces pinned by [`Swarm::pin_range`]: never evicted while this lives.
pub struct PiecePin {
    swarm: Arc<Swarm>,
    first: u32,
    last: u32,
}

impl Drop for PiecePin {
    fn drop(&mut self) {
        self.swarm.unpin(self.first, self.last);
    }
}

/// The first and last piece (inclusive) under the non-empty absolute byte
/// range `[start, end)`, pieces being `pl` bytes.
fn pieces_under(pl: u64, start: u64, end: u64) -> (u32, u32) {
    debug_assert!(end > start);
    ((start / pl) as u32, ((end - 1) / pl) as u32)
}

/// Most dialable addresses remembered per torrent.
const MAX_CANDIDATES: usize = 2000;

/// The candidate for `addr`, added (not connected, dialable, from `source`)
/// when new; with whether it was new. `None` for an address no one can dial
/// (port 0, unspecified IP) or a new one past [`MAX_CANDIDATES`].
fn candidate_entry(
    st: &mut State,
    addr: SocketAddr,
    source: PeerSource,
) -> Option<(&mut Candidate, bool)> {
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return None;
    }
    let new = !st.candidates.contains_key(&addr);
    if new && st.candidates.len() >= MAX_CANDIDATES {
        return None;
    }
    let c = st.candidates.entry(addr).or_insert_with(|| Candidate {
        source,
        failures: 0,
        next_try: Instant::now(),
        connected: false,
        dialable: true,
    });
    Some((c, new))
}

fn pin_locked(st: &mut State, first: u32, last: u32) -> bool {
    let Some(p) = st.picker.as_ref() else {
        return false;
    };
    if !(first..=last).all(|i| p.has(i)) {
        return false;
    }
    for i in first..=last {
        *st.pins.entry(i).or_default() += 1;
        st.lru.promote(&i);
    }
    true
}

/// Bytes available to us on the filesystem holding `dir` (or its nearest
/// existing ancestor), per `statvfs`; None when it cannot be asked.
fn free_space(dir: &std::path::Path) -> Option<u64> {
    let mut d = dir;
    while !d.exists() {
        d = d.parent()?;
    }
    let vfs = nix::sys::statvfs::statvfs(d).ok()?;
    Some((vfs.blocks_available() as u64).saturating_mul(vfs.fragment_size() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_lists_stay_short() {
        assert_eq!(piece_list(&[7]), "piece 7");
        assert_eq!(piece_list(&[3, 4, 9]), "pieces 3, 4, 9");
        let many: Vec<u32> = (0..128).collect();
        assert_eq!(
            piece_list(&many),
            "pieces 0, 1, 2, 3, 4, 5, 6, 7, ... (128 in all)"
        );
    }

    const PL: usize = 32 * 1024; // two 16 KiB blocks per piece

    fn piece(i: u32) -> Vec<u8> {
        (0..PL).map(|j| (i as usize * 7 + j * 13) as u8).collect()
    }

    /// The info dictionary of a single file `t.bin` of the 8 pieces.
    fn raw_info() -> Vec<u8> {
        let hashes = (0..8)
            .map(|i| sha1::Sha1::digest(piece(i)).into())
            .collect();
        crate::metainfo::create::build_info(
            &[(Vec::new(), 8 * PL as u64)],
            "t.bin",
            PL as u64,
            hashes,
        )
    }

    /// A swarm over 8 pieces in memory, with the given cache bound.
    fn swarm(cache_size: Option<u64>) -> Arc<Swarm> {
        let s = swarm_in(cache_size, StorageKind::Memory);
        s.set_metadata(&raw_info()).unwrap();
        s
    }

    /// A swarm over 8 pieces in `storage`, its metadata not set yet.
    fn swarm_in(cache_size: Option<u64>, storage: StorageKind) -> Arc<Swarm> {
        let raw = raw_info();
        let cfg = SwarmConfig {
            peer_id: PeerId::generate(),
            listen_port: 0,
            seed: true,
            prefetch: false,
            read_timeout: Duration::from_secs(1),
            max_peers: 10,
            max_partial_bytes: 1 << 20,
            max_metadata_size: 1 << 20,
            storage,
            cache_size,
        };
        Swarm::new(InfoHash::of_info(&raw), cfg)
    }

    /// Waits for the verification tasks spawned by `complete_piece`.
    async fn settle(s: &Swarm, have: impl Fn(&Picker) -> bool) {
        wait(|| s.lock().picker.as_ref().is_some_and(&have)).await
    }

    /// Waits until `cond` (which may lock the swarm) holds.
    async fn wait(cond: impl Fn() -> bool) {
        for _ in 0..200 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the swarm did not settle");
    }

    fn held(s: &Swarm) -> Vec<u32> {
        let st = s.lock();
        let p = st.picker.as_ref().unwrap();
        (0..8).filter(|&i| p.has(i)).collect()
    }

    #[tokio::test]
    async fn bounded_cache_evicts_least_recently_read_and_stops_advertising() {
        let s = swarm(Some(3 * PL as u64));
        for i in 0..8 {
            s.complete_piece(i, piece(i), Vec::new());
            settle(&s, |p| p.has(i)).await;
        }
        assert_eq!(held(&s), vec![5, 6, 7]);
        // The bitfield we would send a new peer lists only what we hold.
        let bf = s.lock().picker.as_ref().unwrap().bitfield();
        assert_eq!(bf, vec![0b0000_0111]);
        // Evicted bytes are gone from the storage.
        let storage = s.loaded().unwrap().storage.clone();
        let mut buf = vec![0u8; 16];
        assert!(storage.read_at(0, &mut buf).is_err());
        // Reading piece 5 makes it the most recently used: 6 goes next.
        let data = s.read(5 * PL as u64, PL).await.unwrap();
        assert_eq!(data, piece(5));
        s.complete_piece(0, piece(0), Vec::new());
        settle(&s, |p| p.has(0)).await;
        assert_eq!(held(&s), vec![0, 5, 7]);
        assert!(s.lock().cached_bytes <= 3 * PL as u64);
    }

    #[tokio::test]
    async fn a_mixed_bad_piece_blames_only_the_peer_whose_blocks_differed() {
        let s = swarm(None);
        let good: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let bad: SocketAddr = "127.0.0.2:1000".parse().unwrap();
        let (g, _) = s.register_conn(good, PeerSource::Cli).unwrap();
        let (b, _) = s.register_conn(bad, PeerSource::Cli).unwrap();
        for round in 0..3u32 {
            let i = round;
            // Block 0 from the honest peer, block 1 (wrong) from the other.
            let mut data = piece(i);
            data[PL - 1] ^= 1;
            s.lock().picker.as_mut().unwrap().add_urgent(i);
            s.complete_piece(i, data, vec![g, b]);
            settle(&s, |_| {
                s.counters.hash_failures.load(Ordering::Relaxed) > round as u64
            })
            .await;
            // Nobody is blamed on a guess...
            assert!(!s.is_banned(good.ip()) && !s.is_banned(bad.ip()));
            // ...until the piece verifies: then the sender of the block that
            // differed gets the strike.
            s.complete_piece(i, piece(i), vec![g, g]);
            settle(&s, |p| p.has(i)).await;
            assert_eq!(s.lock().strikes.get(&bad.ip()).copied(), Some(round + 1));
        }
        assert!(s.is_banned(bad.ip()), "3 strikes: banned");
        assert!(!s.is_banned(good.ip()), "the honest peer is never blamed");
        assert!(
            s.register_conn("127.0.0.2:2000".parse().unwrap(), PeerSource::Incoming)
                .is_none()
        );
        // A piece wrong from one peer alone is a strike at once.
        s.complete_piece(3, vec![0; PL], vec![g, g]);
        wait(|| s.lock().strikes.contains_key(&good.ip())).await;
    }

    #[tokio::test]
    async fn a_peer_that_dialled_us_is_not_dialled_back_while_connected() {
        let s = swarm(None);
        let ephemeral: SocketAddr = "127.0.0.9:40000".parse().unwrap();
        let listen: SocketAddr = "127.0.0.9:6881".parse().unwrap();
        let (id, _) = s.register_conn(ephemeral, PeerSource::Incoming).unwrap();
        s.note_listen_addr(id, listen);
        assert!(
            s.take_dial_candidates().is_empty(),
            "no second connection to a connected peer"
        );
        // Gone: its listen address may be dialled again (after a backoff).
        s.unregister_conn(id, false);
        let st = s.lock();
        let c = &st.candidates[&listen];
        assert!(!c.connected && c.dialable);
    }

    /// A cache of all 8 pieces under `dir`, written by a first swarm whose
    /// stop saved the `have` file; returns the cache file of `t.bin`.
    fn full_cache(dir: &std::path::Path) -> PathBuf {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let s = swarm_in(None, StorageKind::Files(dir.into()));
            s.set_metadata(&raw_info()).unwrap();
            for i in 0..8 {
                s.complete_piece(i, piece(i), Vec::new());
                settle(&s, |p| p.has(i)).await;
            }
            s.stop();
            dir.join(s.info_hash.to_hex()).join("files/t.bin")
        })
    }

    #[test]
    fn cached_pieces_are_hashed_before_they_are_served_or_advertised() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let file = full_cache(dir.path());
        // Corrupt one byte of piece 3 behind the cache's back.
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(&[!piece(3)[100]], 3 * PL as u64 + 100)
            .unwrap();
        drop(f);

        // Loaded without a runtime: no background verifier, nothing hashed
        // at load, nothing advertised.
        let s = swarm_in(None, StorageKind::Files(dir.path().into()));
        let mut haves = s.have_tx.subscribe();
        s.set_metadata(&raw_info()).unwrap();
        let st = s.stats();
        assert_eq!((st.pieces_have, st.pieces_unverified), (0, 8));
        assert_eq!(s.counters.cached_hashed.load(Ordering::Relaxed), 0);
        assert_eq!(s.lock().picker.as_ref().unwrap().bitfield(), vec![0]);
        assert!(!s.has_range(0, PL as u64) && s.holds_range(0, 8 * PL as u64));

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            // Two reads of the same cached piece at once: hashed once, then
            // served, advertised (HAVE), and nothing else is.
            let (a, b) = tokio::join!(
                s.read(5 * PL as u64, 100),
                s.read(5 * PL as u64 + 7, PL - 7)
            );
            assert_eq!(a.unwrap(), piece(5)[..100]);
            assert_eq!(b.unwrap(), piece(5)[7..]);
            assert_eq!(s.counters.cached_hashed.load(Ordering::Relaxed), 1);
            assert_eq!(haves.try_recv().unwrap(), 5);
            assert!(haves.try_recv().is_err());
            assert_eq!(
                s.lock().picker.as_ref().unwrap().bitfield(),
                vec![0b0000_0100]
            );

            // The corrupt piece is never served: with no peer, the read
            // times out; it is dropped from the cache and the `have` file.
            let err = s.read(3 * PL as u64, 10).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
            {
                let st = s.lock();
                let p = st.picker.as_ref().unwrap();
                assert!(!p.has(3) && !p.is_unverified(3));
                assert_eq!(p.cached_bitfield(), vec![0b1110_1111]);
                assert_eq!(st.cached_bytes, 7 * PL as u64);
            }
            assert!(haves.try_recv().is_err(), "no HAVE for the bad piece");
            // A good copy from a peer is stored and served.
            s.complete_piece(3, piece(3), Vec::new());
            settle(&s, |p| p.has(3)).await;
            assert_eq!(s.read(3 * PL as u64, PL).await.unwrap(), piece(3));
            s.stop();
        });
    }

    #[test]
    fn the_background_verifier_advertises_only_good_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let file = full_cache(dir.path());
        // Piece 6 corrupt, piece 7 (the file's tail) gone.
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[!piece(6)[0]], 6 * PL as u64).unwrap();
        f.set_len(7 * PL as u64).unwrap();
        drop(f);

        let s = swarm_in(None, StorageKind::Files(dir.path().into()));
        let mut haves = s.have_tx.subscribe();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let s2 = s.clone();
        rt.block_on(async {
            tokio::task::spawn_blocking(move || s2.set_metadata(&raw_info())).await
        })
        .unwrap()
        .unwrap();
        rt.block_on(wait(|| s.stats().pieces_unverified == 0));
        let st = s.stats();
        assert_eq!(st.pieces_have, 6);
        assert_eq!(s.counters.cached_hashed.load(Ordering::Relaxed), 8);
        let bf = s.lock().picker.as_ref().unwrap().bitfield();
        assert_eq!(bf, vec![0b1111_1100]);
        let mut announced = Vec::new();
        while let Ok(i) = haves.try_recv() {
            announced.push(i);
        }
        announced.sort();
        assert_eq!(announced, vec![0, 1, 2, 3, 4, 5], "HAVE as each verified");
        s.stop();
        // The `have` file no longer lists the bad pieces.
        let have = std::fs::read(dir.path().join(s.info_hash.to_hex()).join("have")).unwrap();
        assert_eq!(have, vec![0b1111_1100]);
    }

    #[test]
    fn a_bounded_cache_evicts_unverified_pieces_without_hashing_them() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let file = full_cache(dir.path());
        // Remounted with room for 3 pieces: the 5 least recently stored go
        // at load, unhashed, their space freed.
        let s = swarm_in(Some(3 * PL as u64), StorageKind::Files(dir.path().into()));
        s.set_metadata(&raw_info()).unwrap();
        assert_eq!(s.counters.cached_hashed.load(Ordering::Relaxed), 0);
        {
            let st = s.lock();
            let p = st.picker.as_ref().unwrap();
            assert_eq!(p.cached_bitfield(), vec![0b0000_0111]);
            assert_eq!((p.have_count(), p.unverified_count()), (0, 3));
            assert_eq!(st.cached_bytes, 3 * PL as u64);
        }
        let mut buf = vec![1u8; PL];
        std::fs::File::open(&file)
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        assert!(buf.iter().all(|&b| b == 0), "evicted: punched out");

        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            assert_eq!(s.read(6 * PL as u64, PL).await.unwrap(), piece(6));
            let err = s.read(PL as u64, 10).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut, "evicted: {err}");
            // A new piece evicts the least recently used one, unverified
            // piece 5 (6 was just read).
            s.complete_piece(0, piece(0), Vec::new());
            settle(&s, |p| p.has(0)).await;
            let st = s.lock();
            let p = st.picker.as_ref().unwrap();
            assert_eq!(p.cached_bitfield(), vec![0b1000_0011]);
            assert_eq!(p.bitfield(), vec![0b1000_0010]);
            assert!(p.is_unverified(7));
            assert_eq!(st.cached_bytes, 3 * PL as u64);
            drop(st);
            s.stop();
        });
    }
}
