//! Seeding: making a torrent of local data (a directory, a file, a
//! draft's tree) and serving it in place, or seeding a torrent whose
//! pieces are all held already.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Client, Error};
use crate::InfoHash;
use crate::archive::Archive;
use crate::create::{self, Content};
use crate::staging::Draft;
use crate::storage::{CacheLayout, Storage, StorageKind};

/// What [`Client::seed`] makes a torrent of.
#[derive(Clone, Copy)]
pub enum SeedSource<'a> {
    /// A directory or regular file, read in place ([`create::scan_dir`]).
    Dir(&'a Path),
    /// The current tree of a writable draft.
    Draft(&'a Draft),
}

impl<'a> From<&'a Path> for SeedSource<'a> {
    fn from(p: &'a Path) -> Self {
        SeedSource::Dir(p)
    }
}

impl<'a> From<&'a PathBuf> for SeedSource<'a> {
    fn from(p: &'a PathBuf) -> Self {
        SeedSource::Dir(p)
    }
}

impl<'a> From<&'a Draft> for SeedSource<'a> {
    fn from(d: &'a Draft) -> Self {
        SeedSource::Draft(d)
    }
}

impl Client {
    /// Seeds a torrent whose data is complete locally: `info_raw` is its
    /// info dictionary (BEP 3, or a BEP 52 hybrid) and `storage` holds
    /// every piece (typically a [`crate::create::SourceStorage`] from
    /// [`create::build`]) and, for a hybrid, its piece layers
    /// ([`Storage::load_piece_layers`], served to v2 peers' hash requests).
    /// Creates the swarm (keyed by the v1 info-hash; a hybrid is reached
    /// by its truncated v2 info-hash too) with all pieces had, accepts
    /// peers and announces our port on the DHT (BEP 5); [`Archive::magnet`]
    /// is the link to share (both `xt` for a hybrid).
    /// Errors: [`Error::Metadata`] when `info_raw` is refused.
    pub fn seed_torrent(
        &self,
        info_raw: &[u8],
        storage: Arc<dyn Storage>,
    ) -> Result<Archive, Error> {
        let info_hash = InfoHash::of_info(info_raw);
        // a hybrid is reached by its truncated v2 info-hash too (BEP 52)
        let ids = match crate::metainfo::Info::from_bytes(info_raw) {
            Ok(info) if info.version == crate::metainfo::MetaVersion::Hybrid => crate::swarm::Ids {
                v1: Some(info_hash),
                v2: info.info_hash_v2,
            },
            _ => crate::swarm::Ids::bare(),
        };
        let swarm = self.swarm(info_hash, ids, true);
        if let Err(e) = swarm.set_complete(info_raw, storage) {
            self.remove_swarm(&swarm);
            return Err(Error::Metadata(e));
        }
        Ok(Archive::new(swarm))
    }

    /// Makes a hybrid v1+v2 torrent ([`create::Format::Hybrid`], BEP 52)
    /// of `what` (a directory or file read in place, or a
    /// [`crate::staging::Draft`]'s current tree) and seeds it: see
    /// [`Client::seed_content`]. The magnet link is `archive.magnet()`
    /// (`xt=urn:btih` and `xt=urn:btmh`). [`Client::seed_as`] makes a
    /// v1-only one.
    pub async fn seed<'a>(&self, what: impl Into<SeedSource<'a>>) -> Result<Archive, Error> {
        self.seed_as(what, create::Format::default()).await
    }

    /// [`Client::seed`] with the torrent's [`create::Format`]
    /// ([`create::Format::V1Only`]: BEP 3 only, as before BEP 52 support).
    pub async fn seed_as<'a>(
        &self,
        what: impl Into<SeedSource<'a>>,
        format: create::Format,
    ) -> Result<Archive, Error> {
        let content = match what.into() {
            SeedSource::Dir(dir) => {
                let dir = dir.to_path_buf();
                let scan = tokio::task::spawn_blocking(move || create::scan_dir(&dir))
                    .await
                    .map_err(std::io::Error::other)??;
                for (p, why) in &scan.skipped {
                    tracing::warn!("skipping {}: {why}", p.display());
                }
                scan.content
            }
            SeedSource::Draft(d) => d.content().await?,
        };
        self.seed_content(content, format, None).await
    }

    /// Hashes `content` into a torrent of `format` off the async threads
    /// ([`create::build`]; `progress(done, total)` in bytes as it goes)
    /// and seeds it with
    /// [`Client::seed_torrent`]. Errors: [`Error::Io`] from reading or an
    /// empty content, [`Error::Metadata`].
    pub async fn seed_content(
        &self,
        content: Content,
        format: create::Format,
        progress: Option<Box<dyn FnMut(u64, u64) + Send>>,
    ) -> Result<Archive, Error> {
        let built = tokio::task::spawn_blocking(move || {
            let mut progress = progress;
            let mut cb = |d: u64, t: u64| {
                if let Some(p) = progress.as_mut() {
                    p(d, t)
                }
            };
            create::build(&content, format, &mut cb)
        })
        .await
        .map_err(std::io::Error::other)??;
        tracing::info!(
            "{}: {}, {} bytes in pieces of {} bytes; seeding",
            built.info_hash,
            crate::plural::count(built.num_files, "file", "files"),
            built.total_length,
            built.piece_length
        );
        self.seed_torrent(&built.info_raw, built.storage)
    }

    /// Hashes `content` into a new torrent of `format` ([`create::build`], off the
    /// async threads; `progress(done, total)` in bytes), installs it into
    /// the file cache as any downloaded torrent ([`create::install`]:
    /// `<cache>/<info-hash>/`, files hard-linked where they can be), and
    /// seeds it from there, so that mounting its magnet later needs no
    /// peer. When the install fails (a full disk), it is seeded from its
    /// sources instead, with a warning in the log. Returns the archive and
    /// whether it was installed (the caller may then delete the sources of
    /// a draft). Errors: [`Error::Io`] reading the sources,
    /// [`Error::Metadata`]; a client with in-memory storage only seeds.
    pub async fn seed_into_cache(
        &self,
        content: Content,
        format: create::Format,
        progress: Option<Box<dyn FnMut(u64, u64) + Send>>,
    ) -> Result<(Archive, bool), Error> {
        let StorageKind::Files(cache) = self.inner.cfg.storage.clone() else {
            return Ok((self.seed_content(content, format, progress).await?, false));
        };
        let (built, installed) = tokio::task::spawn_blocking(move || {
            let mut progress = progress;
            let mut cb = |d: u64, t: u64| {
                if let Some(p) = progress.as_mut() {
                    p(d, t)
                }
            };
            let built = create::build(&content, format, &mut cb)?;
            let dir = CacheLayout::new(&cache).torrent(built.info_hash);
            let installed = create::install(&content, &built, dir.root())
                .inspect_err(|e| {
                    tracing::warn!(
                        "cannot put the new torrent into the cache ({e}); seeding it from its sources"
                    )
                })
                .ok();
            Ok::<_, std::io::Error>((built, installed))
        })
        .await
        .map_err(std::io::Error::other)??;
        let was_installed = installed.is_some();
        let storage: Arc<dyn Storage> = match installed {
            Some(s) => s,
            None => built.storage.clone(),
        };
        Ok((self.seed_torrent(&built.info_raw, storage)?, was_installed))
    }
}
