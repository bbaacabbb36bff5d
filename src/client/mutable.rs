//! Mutable torrents (BEP 46, over BEP 44 items): resolving a mutable URL,
//! publishing and republishing one, following it to newer versions.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::lookup::LookupOptions;
use super::{Client, Error};
use crate::InfoHash;
use crate::archive::Archive;
use crate::bep46;
use crate::dht::{DhtError, MutableItem};
use crate::keypair::Keypair;
use crate::magnet::{self, MutableUrl, Url};
use crate::storage::{CacheLayout, StorageKind};
use crate::swarm::Ids;

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

impl Client {
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
        let archive = self
            .lookup_info_hash(r.info_hash, Ids::bare(), Vec::new(), opts)
            .await?;
        Ok(Version {
            seq: r.item.seq,
            archive,
        })
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
                "{}: ignored {} with invalid signatures",
                url.to_url(),
                crate::plural::count(report.refused, "item", "items")
            );
        }
        let info_hash = bep46::info_hash_of_value(&item.value).map_err(|e| Error::BadValue {
            url: url.to_url(),
            seq: item.seq,
            reason: e.to_string(),
        })?;
        Ok(Resolved { item, info_hash })
    }

    /// Publishes `target` (a magnet link, or a bare 40-hex info-hash) under
    /// `keypair` and `salt` (0..=64 bytes) as a BEP 46 mutable item, and
    /// returns its mutable URL `magnet:?xs=urn:btpk:<key>[&s=<salt>]`. The
    /// item's `ih` is the link's v1 info-hash (`xt=urn:btih`), also for a
    /// hybrid link naming both (what [`Client::seed`] prints), so readers
    /// that know only BEP 46 and v1 understand it; a v2-only link
    /// (`xt=urn:btmh` alone) gives its v2 info-hash truncated to 20 bytes
    /// (BEP 52). See [`Client::publish_item`].
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
        let value = bep46::value_for(info_hash);
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
                        "{}: seq {seq} -> {info_hash} stored on {}",
                        url.to_url(),
                        crate::plural::count(nodes, "DHT node", "DHT nodes")
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
            StorageKind::Files(dir) => Some(
                CacheLayout::new(dir)
                    .seq_memo(&crate::dht::mutable_target(&url.public_key, &url.salt)),
            ),
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
                    .lookup_info_hash(r.info_hash, Ids::bare(), Vec::new(), opts.clone())
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
                    tracing::info!(
                        "{}: {} copied from {}",
                        r.info_hash,
                        crate::plural::count(copied, "piece", "pieces"),
                        info_hash
                    );
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
}
