//! [`SeededTree`]: the fixture of the tests that mount a torrent whose only
//! source is one libtorrent seeder named by `--peer` (no DHT).

use std::path::PathBuf;

use super::{LtNode, MountArgs, TreeFile, make_tree};

/// A temporary directory holding a tree of files at `tmp/data` (the
/// torrent's name: its files read at `MNT/data/...`), seeded by a
/// python3-libtorrent peer ([`LtNode::seed_tree`], v1, TCP and uTP).
/// (Fields drop in this order: the seeder stops before `tmp` goes.)
pub struct SeededTree {
    /// The seeder, seeding (every piece checked) once `new` returns.
    pub seeder: LtNode,
    /// Its magnet link (no `x.pe`).
    pub magnet: String,
    /// The tree, `tmp/data`.
    pub tree: PathBuf,
    /// Removed (with everything in it) when dropped.
    pub tmp: tempfile::TempDir,
}

impl SeededTree {
    /// Writes `spec` under `tmp/data` and starts its seeder with
    /// `piece_size`-byte pieces (0: libtorrent's choice).
    pub fn new(spec: &[(&str, TreeFile)], piece_size: usize) -> SeededTree {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("data");
        make_tree(&tree, spec);
        let (seeder, magnet) = LtNode::seed_tree(&tree, piece_size, &[]);
        SeededTree {
            seeder,
            magnet,
            tree,
            tmp,
        }
    }

    /// `tmp/NAME` (a mountpoint, a cache directory, ...), not created.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Mount options whose only source is the seeder: the magnet,
    /// `--no-dht` and `--peer` the seeder's address; the caller adds the
    /// rest (foreground, cache directory, limits).
    pub fn mount_args(&self) -> MountArgs {
        MountArgs::new(&self.magnet)
            .no_dht()
            .peer(&self.seeder.addr())
    }
}
