//! The cache directory's layout: the one place that names its paths.
//!
//! ```text
//! <cache>/
//!     <info-hash>/              one torrent's cache (TorrentDir)
//!         info                  its raw info dictionary (a later mount needs no metadata exchange)
//!         have                  bitfield of the pieces held (resume; a hint, hashed before use)
//!         piece_layers          a v2 torrent's piece layers fetched from peers (BEP 52; checked against each `pieces root` before use)
//!         lock                  flock'ed by the one process using the cache; holds its pid
//!         files/<path>          the torrent's files, sparse, at their sanitized paths
//!         btfs-mount.log        the log of a background mount of the torrent
//!     staging/                  drafts being edited (the write side)
//!         <id>/                 one draft (DraftDir)
//!             meta              what the draft is: mountpoint, URL, base, name
//!             journal           its tree's shape changes, one line each
//!             data/<n>          the bytes of staged file n
//!             published         the magnet link, once published
//!         <id>.log              the log of a background writable mount of it
//!     bep46/<target hex>        the last BEP 46 seq published for a key and salt
//!     serve.token               the bearer token of `btfs-mount serve`'s writes (0600)
//!     serve.log                 the log of a background `btfs-mount serve`
//!     dht_nodes                 the DHT's routing table (named by crate::dht)
//! ```
//!
//! Nothing else in the crate joins these names: a path into the cache is
//! asked of [`CacheLayout`], [`TorrentDir`] or [`DraftDir`].

use std::path::{Path, PathBuf};

use crate::InfoHash;

/// A cache directory (`<cache>`): where torrents, drafts and memos live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheLayout {
    root: PathBuf,
}

impl CacheLayout {
    /// The layout under `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> CacheLayout {
        CacheLayout { root: root.into() }
    }

    /// `<cache>` itself (also where the DHT keeps its state file).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<cache>/<info-hash>`: the cache of one torrent.
    pub fn torrent(&self, info_hash: InfoHash) -> TorrentDir {
        TorrentDir(self.root.join(info_hash.to_hex()))
    }

    /// `<cache>/staging`: the parent of every draft.
    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }

    /// `<cache>/staging/<id>`: the draft named `id` (hex).
    pub fn draft(&self, id: &str) -> DraftDir {
        DraftDir(self.staging().join(id))
    }

    /// `<cache>/serve.token`: the bearer token HTTP writes to the gateway
    /// of `btfs-mount serve` must carry, written (mode 0600) at its start.
    pub fn serve_token(&self) -> PathBuf {
        self.root.join("serve.token")
    }

    /// `<cache>/serve.log`: the log of a background `btfs-mount serve`.
    pub fn serve_log(&self) -> PathBuf {
        self.root.join("serve.log")
    }

    /// `<cache>/bep46/<target hex>`: the memo of the last `seq` this
    /// machine published for a BEP 44 target (SHA-1 of key and salt).
    pub fn seq_memo(&self, target: &[u8; 20]) -> PathBuf {
        self.root.join("bep46").join(hex::encode(target))
    }
}

/// `$XDG_CACHE_HOME/btfs-mount`, else `~/.cache/btfs-mount`, else
/// `/tmp/btfs-mount`: the cache directory when none is given.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("btfs-mount");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".cache/btfs-mount");
    }
    PathBuf::from("/tmp/btfs-mount")
}

/// One torrent's cache directory, `<cache>/<info-hash>` (see the module
/// docs for what it holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentDir(PathBuf);

impl TorrentDir {
    /// The torrent cache at `dir` (= `<cache>/<info-hash>`).
    pub fn at(dir: impl Into<PathBuf>) -> TorrentDir {
        TorrentDir(dir.into())
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// `info`: the raw info dictionary.
    pub fn info(&self) -> PathBuf {
        self.0.join("info")
    }

    /// `have`: the bitfield of the pieces held.
    pub fn have(&self) -> PathBuf {
        self.0.join("have")
    }

    /// `piece_layers`: the piece layers of a v2 torrent's files, verified
    /// when fetched (BEP 52 hash exchange), bencoded as a .torrent's
    /// `piece layers` (`pieces root` → the layer's hashes concatenated).
    pub fn piece_layers(&self) -> PathBuf {
        self.0.join("piece_layers")
    }

    /// `lock`: flock'ed by the process using this cache, holding its pid.
    pub fn lock(&self) -> PathBuf {
        self.0.join("lock")
    }

    /// `files`: the torrent's files live under it.
    pub fn files(&self) -> PathBuf {
        self.0.join("files")
    }

    /// `files/<c1>/<c2>/...`: where the torrent file with (sanitized) path
    /// components `path` is kept.
    pub fn file(&self, path: &[String]) -> PathBuf {
        let mut p = self.files();
        for c in path {
            p.push(c);
        }
        p
    }

    /// `btfs-mount.log`: the log of a background mount of this torrent.
    pub fn log(&self) -> PathBuf {
        self.0.join("btfs-mount.log")
    }
}

/// One draft's staging directory, `<cache>/staging/<id>` (see the module
/// docs and [`crate::staging`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftDir(PathBuf);

impl DraftDir {
    /// The staging directory at `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> DraftDir {
        DraftDir(dir.into())
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// `meta`: what the draft is.
    pub fn meta(&self) -> PathBuf {
        self.0.join("meta")
    }

    /// `journal`: the tree's shape changes.
    pub fn journal(&self) -> PathBuf {
        self.0.join("journal")
    }

    /// `data`: the staged files' bytes live under it.
    pub fn data_dir(&self) -> PathBuf {
        self.0.join("data")
    }

    /// `data/<n>`: the bytes of staged file `n`.
    pub fn data(&self, n: u64) -> PathBuf {
        self.data_dir().join(n.to_string())
    }

    /// `published`: the magnet link, once the draft was published.
    pub fn published(&self) -> PathBuf {
        self.0.join("published")
    }

    /// `<cache>/staging/<id>.log`, beside the directory: the log of a
    /// background writable mount. It outlives the draft's directory.
    pub fn log(&self) -> PathBuf {
        self.0.with_extension("log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_of_the_layout() {
        let c = CacheLayout::new("/c");
        let ih = InfoHash([0xab; 20]);
        let t = c.torrent(ih);
        let h = "ab".repeat(20);
        assert_eq!(t.root(), Path::new(&format!("/c/{h}")));
        assert_eq!(t.info(), PathBuf::from(format!("/c/{h}/info")));
        assert_eq!(t.have(), PathBuf::from(format!("/c/{h}/have")));
        assert_eq!(t.lock(), PathBuf::from(format!("/c/{h}/lock")));
        assert_eq!(
            t.file(&["a".into(), "b.txt".into()]),
            PathBuf::from(format!("/c/{h}/files/a/b.txt"))
        );
        assert_eq!(t.log(), PathBuf::from(format!("/c/{h}/btfs-mount.log")));
        let d = c.draft("0011");
        assert_eq!(d.root(), Path::new("/c/staging/0011"));
        assert_eq!(d.meta(), PathBuf::from("/c/staging/0011/meta"));
        assert_eq!(d.journal(), PathBuf::from("/c/staging/0011/journal"));
        assert_eq!(d.data(7), PathBuf::from("/c/staging/0011/data/7"));
        assert_eq!(d.published(), PathBuf::from("/c/staging/0011/published"));
        assert_eq!(d.log(), PathBuf::from("/c/staging/0011.log"));
        assert_eq!(c.serve_token(), PathBuf::from("/c/serve.token"));
        assert_eq!(c.serve_log(), PathBuf::from("/c/serve.log"));
        assert_eq!(
            c.seq_memo(&[1; 20]),
            PathBuf::from(format!("/c/bep46/{}", "01".repeat(20)))
        );
    }
}
