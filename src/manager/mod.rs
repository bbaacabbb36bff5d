//! The archives of one long-running process (`btfs-mount serve`): opened on
//! first use, shared by every reader, closed after an idle time.
//!
//! One [`Client`] (one DHT node, one peer port, one cache directory) serves
//! any number of torrents. Readers name an archive by a [`Name`]: an
//! info-hash (BEP 3) or a BEP 46 mutable URL's public key and salt. The
//! first [`Manager::open`] of a name looks it up (waiting for the metadata
//! up to the lookup timeout); concurrent opens of the same name share that
//! one lookup. A mutable name is followed like `--refresh` does
//! ([`Client::follow`]): each newer version becomes the name's current
//! archive, and [`Manager::watch`] tells who wants to know.
//!
//! Each open returns a [`Lease`]: while one lives (an HTTP response being
//! streamed, a file open through FUSE), its torrent stays open. A torrent
//! with no lease closes (its swarm stops) once nothing used it for the idle
//! time, or at once when it is an old version of a mutable name that no
//! lease holds. The HTTP gateway ([`crate::gateway`]) and the FUSE root
//! ([`crate::fuse::root`]) share one manager.
//!
//! ```no_run
//! # async fn demo(client: btfs::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use btfs::manager::{Manager, ManagerConfig, Name};
//! let m = Manager::new(client, ManagerConfig::default());
//! let name = Name::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
//! let opened = m.open(&name).await?;          // looks it up the first time
//! let page = opened.archive.read_file("site/index.html").await?;
//! drop(opened);                               // closes after the idle time
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::InfoHash;
use crate::archive::Archive;
use crate::client::{Client, Error, LookupOptions};
use crate::magnet::{MAX_SALT_LEN, MutableUrl};
mod status;

pub use status::{ArchiveStatus, FileStatus, LookupState, LookupStatus, STATUS_FILES};

/// How an archive is named: by info-hash, or by a BEP 46 mutable URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Name {
    /// An immutable torrent by a 20-byte info-hash: the v1 info-hash (BEP
    /// 3), or a v2 one truncated to 20 bytes (BEP 52).
    InfoHash(InfoHash),
    /// A BEP 46 mutable URL: the ed25519 public key and the salt (0 to 64
    /// bytes).
    Mutable { public_key: [u8; 32], salt: Vec<u8> },
}

/// Why a [`Name`] does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "{0:?} is not an archive name: 40 hex digits (an info-hash) or 64 (a public key, \
         optionally followed by `.` and the salt in hex)"
    )]
    Malformed(String),
    #[error("the salt is {0} bytes; BEP 44 allows 64")]
    SaltTooLong(usize),
}

impl Name {
    /// Parses one path segment: `<40 hex>` (an info-hash), `<64 hex>` (a
    /// public key, empty salt) or `<64 hex>.<salt hex>`. Hex digits may be
    /// of either case. Errors: [`NameError`].
    pub fn parse(segment: &str) -> Result<Name, NameError> {
        let bad = || NameError::Malformed(segment.chars().take(100).collect());
        let (key, salt) = match segment.split_once('.') {
            Some((k, s)) => (k, Some(s)),
            None => (segment, None),
        };
        if !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        match (key.len(), salt) {
            (40, None) => Ok(Name::InfoHash(InfoHash::from_hex(key).ok_or_else(bad)?)),
            (64, salt) => {
                let mut public_key = [0u8; 32];
                hex::decode_to_slice(key, &mut public_key).map_err(|_| bad())?;
                let salt = match salt {
                    None => Vec::new(),
                    Some(s) if !s.is_empty() => hex::decode(s).map_err(|_| bad())?,
                    Some(_) => return Err(bad()),
                };
                if salt.len() > MAX_SALT_LEN {
                    return Err(NameError::SaltTooLong(salt.len()));
                }
                Ok(Name::Mutable { public_key, salt })
            }
            _ => Err(bad()),
        }
    }

    /// The canonical path segment (lowercase hex), the inverse of
    /// [`Name::parse`].
    pub fn segment(&self) -> String {
        match self {
            Name::InfoHash(ih) => ih.to_hex(),
            Name::Mutable { public_key, salt } if salt.is_empty() => hex::encode(public_key),
            Name::Mutable { public_key, salt } => {
                format!("{}.{}", hex::encode(public_key), hex::encode(salt))
            }
        }
    }

    /// The magnet link or mutable URL (BEP 9 / BEP 46) of this name.
    pub fn url(&self) -> String {
        match self {
            Name::InfoHash(ih) => format!("magnet:?xt=urn:btih:{ih}"),
            Name::Mutable { public_key, salt } => MutableUrl {
                public_key: *public_key,
                salt: salt.clone(),
            }
            .to_url(),
        }
    }

    /// Whether this names a mutable URL.
    pub fn is_mutable(&self) -> bool {
        matches!(self, Name::Mutable { .. })
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segment())
    }
}

/// Settings of a [`Manager`].
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// How a name is looked up (`timeout` bounds the wait for the metadata
    /// and, for a mutable name, the DHT lookup of its item).
    pub lookup: LookupOptions,
    /// A torrent nothing used for this long closes (default 10 minutes).
    pub idle: Duration,
    /// How often a mutable name is looked up again for a newer version
    /// (default 300 s; zero: never).
    pub refresh: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            lookup: LookupOptions::default(),
            idle: Duration::from_secs(600),
            refresh: Duration::from_secs(300),
        }
    }
}

/// The archive a name shows now.
#[derive(Clone)]
pub struct Current {
    pub archive: Archive,
    /// The BEP 46 item's `seq` (None for an info-hash name).
    pub seq: Option<i64>,
}

/// An open archive, kept open while this lives (see [`Lease`]).
pub struct Opened {
    pub archive: Archive,
    /// The BEP 46 `seq` it was published under (mutable names only).
    pub seq: Option<i64>,
    pub lease: Lease,
}

/// Keeps one torrent open while it lives. Cheap; dropping it marks the
/// torrent used now.
pub struct Lease {
    inner: Weak<Inner>,
    info_hash: InfoHash,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner.release(self.info_hash);
        }
    }
}

/// One open torrent.
struct Torrent {
    archive: Archive,
    /// Live leases.
    users: usize,
    last_used: Instant,
    /// Download and upload rates, bytes/s, from the last housekeeping tick.
    rates: (u64, u64),
    /// Counters at the last tick (downloaded, uploaded, when).
    sample: (u64, u64, Instant),
}

/// One open name.
struct Named {
    current: Current,
    last_used: Instant,
    /// Sends each new current version (mutable names).
    tx: watch::Sender<Current>,
    /// The follower of a mutable name (aborted when the name closes).
    follow: Option<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    names: HashMap<Name, Named>,
    torrents: HashMap<InfoHash, Torrent>,
    /// One lock per name being looked up: concurrent opens wait for it.
    opening: HashMap<Name, Arc<tokio::sync::Mutex<()>>>,
    /// The last failed lookup of a name, for the opens that waited on it.
    failures: HashMap<Name, (Instant, Arc<Error>)>,
    /// Names being looked up now, since when (status pages).
    resolving: HashMap<Name, Instant>,
}

/// Lists a name in [`State::resolving`] while its lookup runs, and
/// takes it out when the lookup ends or its future is dropped (an HTTP
/// client that went away).
struct ResolvingGuard<'a> {
    inner: &'a Inner,
    name: Name,
}

impl<'a> ResolvingGuard<'a> {
    fn new(inner: &'a Inner, name: &Name) -> Self {
        inner.lock().resolving.insert(name.clone(), Instant::now());
        ResolvingGuard {
            inner,
            name: name.clone(),
        }
    }
}

impl Drop for ResolvingGuard<'_> {
    fn drop(&mut self) {
        self.inner.lock().resolving.remove(&self.name);
    }
}

/// Called with each name that closed.
type CloseHook = Box<dyn Fn(&Name) + Send + Sync>;

struct Inner {
    client: Client,
    cfg: ManagerConfig,
    state: Mutex<State>,
    on_close: Mutex<Vec<CloseHook>>,
}

/// The archives of a long-running process; see the module docs. Cheap to
/// clone (a handle).
#[derive(Clone)]
pub struct Manager {
    inner: Arc<Inner>,
    /// Stops the housekeeping task when the last handle goes.
    _tick: Arc<TickGuard>,
}

struct TickGuard(tokio::task::JoinHandle<()>);

impl Drop for TickGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a failed lookup stays on the status page ([`Manager::lookups`]);
/// failures are kept this long for the opens that wait on them, too.
const FAILURE_SHOWN: Duration = Duration::from_secs(60);

/// How often rates are sampled and idle torrents closed.
const TICK: Duration = Duration::from_secs(1);

impl Manager {
    /// A manager of `client`'s archives. Starts a housekeeping task (rates,
    /// idle closing): call within a Tokio runtime.
    pub fn new(client: Client, cfg: ManagerConfig) -> Manager {
        let inner = Arc::new(Inner {
            client,
            cfg,
            state: Mutex::new(State::default()),
            on_close: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&inner);
        let tick = tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                let Some(inner) = weak.upgrade() else { return };
                inner.housekeeping();
            }
        });
        Manager {
            inner,
            _tick: Arc::new(TickGuard(tick)),
        }
    }

    /// The client serving every archive.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The settings.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.cfg
    }

    /// Calls `hook` with each name that closes (idle, or [`Manager::close_all`]).
    pub fn on_close(&self, hook: impl Fn(&Name) + Send + Sync + 'static) {
        self.inner
            .on_close
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(hook));
    }

    /// The current archive of `name`, opened (looked up) if it is not open:
    /// waits for the metadata up to the lookup timeout. Errors: as
    /// [`Client::lookup`] and [`Client::lookup_mutable`].
    ///
    /// Opens that waited for a lookup that failed get the same error (a
    /// page's twenty requests to a dead torrent wait one timeout, not
    /// twenty); an open after that tries again.
    pub async fn open(&self, name: &Name) -> Result<Opened, Arc<Error>> {
        if let Some(o) = self.inner.try_open(name) {
            return Ok(o);
        }
        let asked = Instant::now();
        let gate = self
            .inner
            .lock()
            .opening
            .entry(name.clone())
            .or_default()
            .clone();
        let _turn = gate.lock().await;
        if let Some(o) = self.inner.try_open(name) {
            return Ok(o);
        }
        if let Some((when, e)) = self.inner.lock().failures.get(name)
            && *when >= asked
        {
            return Err(e.clone());
        }
        let resolving = ResolvingGuard::new(&self.inner, name);
        let result = self.lookup(name).await;
        drop(resolving);
        let mut st = self.inner.lock();
        st.opening.remove(name);
        match result {
            Ok(current) => {
                st.failures.remove(name);
                drop(st);
                Ok(self.inner.insert(name, current, self))
            }
            Err(e) => {
                let e = Arc::new(e);
                // Bounded: failures older than a minute are dropped first.
                st.failures.retain(|_, (t, _)| t.elapsed() < FAILURE_SHOWN);
                st.failures
                    .insert(name.clone(), (Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    /// The current archive of `name` if it is open (no lookup); marks it used.
    pub fn get(&self, name: &Name) -> Option<Opened> {
        self.inner.try_open(name)
    }

    /// Marks `name` used now (it stays open another idle time).
    pub fn touch(&self, name: &Name) {
        let mut st = self.inner.lock();
        let now = Instant::now();
        let ih = st.names.get_mut(name).map(|n| {
            n.last_used = now;
            n.current.archive.info_hash()
        });
        if let Some(t) = ih.and_then(|ih| st.torrents.get_mut(&ih)) {
            t.last_used = now;
        }
    }

    /// A receiver of `name`'s current version (it changes when a mutable
    /// name switches); None when the name is not open.
    pub fn watch(&self, name: &Name) -> Option<watch::Receiver<Current>> {
        self.inner.lock().names.get(name).map(|n| n.tx.subscribe())
    }

    /// A lease on `archive`'s torrent if it is open (a FUSE file opened on
    /// an old version keeps that version open).
    pub fn lease(&self, archive: &Archive) -> Option<Lease> {
        let ih = archive.info_hash();
        let mut st = self.inner.lock();
        let t = st.torrents.get_mut(&ih)?;
        t.users += 1;
        t.last_used = Instant::now();
        Some(Lease {
            inner: Arc::downgrade(&self.inner),
            info_hash: ih,
        })
    }

    /// Makes `archive` (BEP 46 item `seq`) the current version of `name`
    /// now, as if the follower had found it (a daemon that just published
    /// it need not wait for a refresh), and returns a lease on it.
    pub fn set_current(&self, name: &Name, archive: Archive, seq: i64) -> Lease {
        let open = self.inner.lock().names.contains_key(name);
        if !open {
            let cur = Current {
                archive,
                seq: Some(seq),
            };
            return self.inner.insert(name, cur, self).lease;
        }
        self.inner.switch(
            name,
            crate::client::Version {
                seq,
                archive: archive.clone(),
            },
        );
        match self.lease(&archive) {
            Some(l) => l,
            // Closed in between (idle): open it again as this version.
            None => {
                let cur = Current {
                    archive,
                    seq: Some(seq),
                };
                self.inner.insert(name, cur, self).lease
            }
        }
    }

    /// The open names, sorted.
    pub fn names(&self) -> Vec<Name> {
        let mut v: Vec<Name> = self.inner.lock().names.keys().cloned().collect();
        v.sort();
        v
    }

    /// A snapshot of every open name, for status pages, sorted by name.
    pub fn status(&self) -> Vec<ArchiveStatus> {
        let rows: Vec<(Name, Current, (u64, u64), usize)> = {
            let st = self.inner.lock();
            st.names
                .iter()
                .map(|(n, e)| {
                    let t = st.torrents.get(&e.current.archive.info_hash());
                    (
                        n.clone(),
                        e.current.clone(),
                        t.map_or((0, 0), |t| t.rates),
                        t.map_or(0, |t| t.users),
                    )
                })
                .collect()
        };
        let mut out: Vec<ArchiveStatus> = rows
            .into_iter()
            .map(|(name, cur, rates, users)| ArchiveStatus::of(name, &cur, rates, users))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Every name that is not open but is being looked up, or whose
    /// last lookup failed within the last minute (with its error), sorted
    /// by name: what a status page shows while a user waits.
    pub fn lookups(&self) -> Vec<LookupStatus> {
        let st = self.inner.lock();
        let resolving = st
            .resolving
            .iter()
            .map(|(n, t)| (n, LookupState::Resolving(t.elapsed())));
        let failed = st
            .failures
            .iter()
            .filter(|(n, (t, _))| t.elapsed() < FAILURE_SHOWN && !st.resolving.contains_key(*n))
            .map(|(n, (t, e))| (n, LookupState::Failed(t.elapsed(), e.to_string())));
        let mut v: Vec<LookupStatus> = resolving
            .chain(failed)
            .filter(|(n, _)| !st.names.contains_key(*n))
            .map(|(n, state)| LookupStatus {
                name: n.clone(),
                state,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Closes every archive (at shutdown).
    pub fn close_all(&self) {
        let names: Vec<Name> = self.inner.lock().names.keys().cloned().collect();
        for n in names {
            self.inner.close_name(&n);
        }
        let torrents: Vec<Archive> = self
            .inner
            .lock()
            .torrents
            .drain()
            .map(|(_, t)| t.archive)
            .collect();
        for a in torrents {
            self.inner.client.close(&a);
        }
    }

    /// Looks `name` up (no lock held).
    async fn lookup(&self, name: &Name) -> Result<Current, Error> {
        let opts = LookupOptions {
            progress: None,
            ..self.inner.cfg.lookup.clone()
        };
        let client = &self.inner.client;
        match name {
            Name::InfoHash(ih) => {
                // v1 or truncated v2 (BEP 52): either matches.
                let archive = client.lookup_any_info_hash(*ih, opts).await?;
                tracing::info!("{name}: opened {:?}", archive.info().name);
                Ok(Current { archive, seq: None })
            }
            Name::Mutable { public_key, salt } => {
                let url = MutableUrl {
                    public_key: *public_key,
                    salt: salt.clone(),
                };
                let v = client.lookup_mutable(&url, opts).await?;
                tracing::info!(
                    "{name}: opened seq {} -> {} ({:?})",
                    v.seq,
                    v.archive.info_hash(),
                    v.archive.info().name
                );
                Ok(Current {
                    archive: v.archive,
                    seq: Some(v.seq),
                })
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current version of an open `name`, leased and marked used.
    fn try_open(self: &Arc<Self>, name: &Name) -> Option<Opened> {
        let mut st = self.lock();
        let now = Instant::now();
        let n = st.names.get_mut(name)?;
        n.last_used = now;
        let cur = n.current.clone();
        let ih = cur.archive.info_hash();
        let t = st.torrents.get_mut(&ih)?;
        t.users += 1;
        t.last_used = now;
        Some(Opened {
            archive: cur.archive,
            seq: cur.seq,
            lease: Lease {
                inner: Arc::downgrade(self),
                info_hash: ih,
            },
        })
    }

    /// Records a name just looked up, starts following it if mutable, and
    /// returns it leased.
    fn insert(self: &Arc<Self>, name: &Name, current: Current, mgr: &Manager) -> Opened {
        let now = Instant::now();
        let ih = current.archive.info_hash();
        let (tx, _) = watch::channel(current.clone());
        let follow = match name {
            Name::Mutable { public_key, salt } if !self.cfg.refresh.is_zero() => {
                let url = MutableUrl {
                    public_key: *public_key,
                    salt: salt.clone(),
                };
                let version = crate::client::Version {
                    seq: current.seq.unwrap_or(0),
                    archive: current.archive.clone(),
                };
                let opts = LookupOptions {
                    progress: None,
                    ..self.cfg.lookup.clone()
                };
                let mut rx = self.client.follow(url, &version, opts, self.cfg.refresh);
                let weak = Arc::downgrade(&mgr.inner);
                let name = name.clone();
                Some(tokio::spawn(async move {
                    while let Some(v) = rx.recv().await {
                        let Some(inner) = weak.upgrade() else { return };
                        inner.switch(&name, v);
                    }
                }))
            }
            _ => None,
        };
        let mut st = self.lock();
        let t = st
            .torrents
            .entry(ih)
            .or_insert_with(|| Torrent::new(&current.archive));
        t.users += 1;
        t.last_used = now;
        st.names.insert(
            name.clone(),
            Named {
                current: current.clone(),
                last_used: now,
                tx,
                follow,
            },
        );
        Opened {
            archive: current.archive,
            seq: current.seq,
            lease: Lease {
                inner: Arc::downgrade(self),
                info_hash: ih,
            },
        }
    }

    /// A mutable name moved to version `v`.
    fn switch(&self, name: &Name, v: crate::client::Version) {
        let ih = v.archive.info_hash();
        let cur = Current {
            archive: v.archive,
            seq: Some(v.seq),
        };
        let old = {
            let mut st = self.lock();
            let now = Instant::now();
            st.torrents
                .entry(ih)
                .or_insert_with(|| Torrent::new(&cur.archive))
                .last_used = now;
            let Some(n) = st.names.get_mut(name) else {
                return;
            };
            let old = n.current.archive.info_hash();
            n.current = cur.clone();
            n.tx.send_replace(cur);
            old
        };
        tracing::info!("{name}: now at seq {} -> {ih}", v.seq);
        if old != ih {
            self.close_if_unused(old);
        }
    }

    /// One lease on `ih` ended.
    fn release(&self, ih: InfoHash) {
        let unused = {
            let mut st = self.lock();
            match st.torrents.get_mut(&ih) {
                Some(t) => {
                    t.users = t.users.saturating_sub(1);
                    t.last_used = Instant::now();
                    t.users == 0
                }
                None => false,
            }
        };
        if unused {
            self.close_if_unused(ih);
        }
    }

    /// Closes torrent `ih` when no lease holds it and no name shows it.
    fn close_if_unused(&self, ih: InfoHash) {
        let archive = {
            let mut st = self.lock();
            let shown = st
                .names
                .values()
                .any(|n| n.current.archive.info_hash() == ih);
            match st.torrents.get(&ih) {
                Some(t) if t.users == 0 && !shown => st.torrents.remove(&ih).map(|t| t.archive),
                _ => None,
            }
        };
        if let Some(a) = archive {
            tracing::info!("{ih}: no longer shown nor used; closing it");
            self.client.close(&a);
        }
    }

    /// Forgets `name` (stops following it) and closes its torrent unless
    /// something else holds it.
    fn close_name(&self, name: &Name) {
        let removed = self.lock().names.remove(name);
        let Some(n) = removed else { return };
        if let Some(f) = &n.follow {
            f.abort();
        }
        for hook in self
            .on_close
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            hook(name);
        }
        self.close_if_unused(n.current.archive.info_hash());
    }

    /// Samples rates and closes what was idle too long.
    fn housekeeping(&self) {
        let now = Instant::now();
        let idle = self.cfg.idle;
        let expired: Vec<Name> = {
            let mut st = self.lock();
            for t in st.torrents.values_mut() {
                let s = t.archive.stats();
                let dt = now.duration_since(t.sample.2).as_secs_f64().max(1e-3);
                t.rates = (
                    (s.downloaded.saturating_sub(t.sample.0) as f64 / dt) as u64,
                    (s.uploaded.saturating_sub(t.sample.1) as f64 / dt) as u64,
                );
                t.sample = (s.downloaded, s.uploaded, now);
            }
            let st = &*st;
            st.names
                .iter()
                .filter(|(_, n)| {
                    let t = st.torrents.get(&n.current.archive.info_hash());
                    let busy = t.is_some_and(|t| t.users > 0);
                    let last = t.map_or(n.last_used, |t| t.last_used.max(n.last_used));
                    !busy && now.duration_since(last) >= idle
                })
                .map(|(k, _)| k.clone())
                .collect()
        };
        for name in expired {
            tracing::info!("{name}: idle for {} s; closing it", idle.as_secs());
            self.close_name(&name);
        }
    }
}

impl Torrent {
    fn new(archive: &Archive) -> Torrent {
        let s = archive.stats();
        Torrent {
            archive: archive.clone(),
            users: 0,
            last_used: Instant::now(),
            rates: (0, 0),
            sample: (s.downloaded, s.uploaded, Instant::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A seeded torrent opened through the manager stays open while a
    /// lease holds it, and closes once idle (the close hook hears of it).
    #[tokio::test]
    async fn archives_close_when_idle_and_not_while_leased() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/a.txt"), b"hello").unwrap();
        let client = Client::builder()
            .dht(false)
            .lsd(false)
            .bind_ip("127.0.0.1".parse().unwrap())
            .storage(crate::StorageKind::Memory)
            .start()
            .await
            .unwrap();
        let seeded = client.seed(&dir.path().join("t")).await.unwrap();
        let name = Name::InfoHash(seeded.info_hash());
        let m = Manager::new(
            client.clone(),
            ManagerConfig {
                idle: Duration::from_millis(1500),
                ..ManagerConfig::default()
            },
        );
        let closed = Arc::new(Mutex::new(Vec::new()));
        let c = closed.clone();
        m.on_close(move |n| c.lock().unwrap().push(n.clone()));
        let o = m.open(&name).await.unwrap();
        assert_eq!(o.archive.read_file("t/a.txt").await.unwrap(), b"hello");
        assert_eq!(m.names(), std::slice::from_ref(&name));
        let st = m.status();
        assert_eq!(st[0].readers, 1);
        // every byte of the piece space: the 5 bytes of a.txt and, in the
        // hybrid `seed` makes, the pad file that ends its piece
        assert_eq!(st[0].verified, seeded.info().total_length);
        assert_eq!(seeded.info().total_length, 16384);
        tokio::time::sleep(Duration::from_millis(3000)).await;
        assert_eq!(
            m.names(),
            std::slice::from_ref(&name),
            "a leased archive stays open"
        );
        drop(o);
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert!(m.names().is_empty(), "idle: closed");
        assert_eq!(*closed.lock().unwrap(), std::slice::from_ref(&name));
        // Opened again on the next use (a new swarm: the old one stopped).
        assert!(m.get(&name).is_none());
        client.stop().await;
    }

    #[test]
    fn names_parse_and_print_back() {
        let ih = "0123456789abcdef0123456789abcdef01234567";
        let n = Name::parse(ih).unwrap();
        assert_eq!(n.segment(), ih);
        assert_eq!(Name::parse(&ih.to_uppercase()).unwrap(), n);
        assert_eq!(n.url(), format!("magnet:?xt=urn:btih:{ih}"));
        let pk = "ab".repeat(32);
        let m = Name::parse(&pk).unwrap();
        assert!(m.is_mutable());
        assert_eq!(m.segment(), pk);
        assert_eq!(m.url(), format!("magnet:?xs=urn:btpk:{pk}"));
        let ms = Name::parse(&format!("{pk}.6e")).unwrap();
        assert_eq!(ms.segment(), format!("{pk}.6e"));
        assert_eq!(ms.url(), format!("magnet:?xs=urn:btpk:{pk}&s=6e"));
        for bad in [
            "",
            "xyz",
            &ih[1..],
            &format!("{ih}.00"),
            &format!("{pk}."),
            &format!("{pk}.0g"),
        ] {
            assert!(
                matches!(Name::parse(bad), Err(NameError::Malformed(_))),
                "{bad}"
            );
        }
        assert_eq!(
            Name::parse(&format!("{pk}.{}", "00".repeat(65))),
            Err(NameError::SaltTooLong(65))
        );
    }
}
