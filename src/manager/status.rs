//! What status pages show of the manager's names: each open archive
//! ([`ArchiveStatus`]) and each name being looked up or whose lookup failed
//! lately ([`LookupStatus`]).

use std::time::Duration;

use super::{Current, Name};
use crate::InfoHash;
use crate::swarm::PeerInfo;

/// One file's progress, for status pages.
#[derive(Debug, Clone)]
pub struct FileStatus {
    /// Its path in the torrent (`/`-separated, under the torrent's root).
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Bytes in verified pieces.
    pub verified: u64,
}

/// One open archive, for status pages ([`Manager::status`]).
#[derive(Debug, Clone)]
pub struct ArchiveStatus {
    pub name: Name,
    pub info_hash: InfoHash,
    /// The torrent's name (its info dictionary's `name`).
    pub title: String,
    /// The torrent's magnet link, every info-hash it has ([`Archive::magnet`]).
    pub magnet: String,
    /// The BEP 46 `seq` shown (mutable names).
    pub seq: Option<i64>,
    pub peers: Vec<PeerInfo>,
    pub peers_known: usize,
    /// The last known peers that could not be connected, and why.
    pub peer_failures: crate::swarm::PeerFailures,
    /// Bytes/s over the last second.
    pub download_rate: u64,
    pub upload_rate: u64,
    pub downloaded: u64,
    pub uploaded: u64,
    /// Leases held now (responses streaming, files open).
    pub readers: usize,
    /// The first [`STATUS_FILES`] files, in torrent order.
    pub files: Vec<FileStatus>,
    /// How many files the torrent has in all.
    pub num_files: usize,
    /// Bytes, and bytes in verified pieces, of the whole torrent.
    pub size: u64,
    pub verified: u64,
}

/// Most files listed per archive in [`ArchiveStatus::files`].
pub const STATUS_FILES: usize = 500;

impl ArchiveStatus {
    pub(super) fn of(
        name: Name,
        cur: &Current,
        rates: (u64, u64),
        readers: usize,
    ) -> ArchiveStatus {
        let a = &cur.archive;
        let info = a.info();
        let s = a.stats();
        let real: Vec<&crate::metainfo::FileEntry> = info.files.iter().filter(|f| !f.pad).collect();
        let files = real
            .iter()
            .take(STATUS_FILES)
            .map(|f| FileStatus {
                path: f.path.join("/"),
                size: f.length,
                verified: a.swarm().verified_bytes(f.offset, f.offset + f.length),
            })
            .collect();
        ArchiveStatus {
            info_hash: a.info_hash(),
            title: info.name.clone(),
            magnet: a.magnet(),
            seq: cur.seq,
            peers: a.peers(),
            peers_known: s.peers_known,
            peer_failures: a.swarm().peer_failures(),
            download_rate: rates.0,
            upload_rate: rates.1,
            downloaded: s.downloaded,
            uploaded: s.uploaded,
            readers,
            files,
            num_files: real.len(),
            size: info.total_length,
            verified: a.swarm().verified_bytes(0, info.total_length),
            name,
        }
    }
}

/// A name that is not open: being looked up, or its last lookup failed
/// (kept 60 s), for status pages ([`super::Manager::lookups`]).
#[derive(Debug, Clone)]
pub struct LookupStatus {
    pub name: Name,
    pub state: LookupState,
}

/// Where a [`LookupStatus`] stands.
#[derive(Debug, Clone)]
pub enum LookupState {
    /// Looking for peers and the metadata for this long.
    Resolving(Duration),
    /// Failed this long ago, with this error (for an info-hash: the peers
    /// that failed and why, see [`crate::swarm::PeerFailures`]).
    Failed(Duration, String),
}
