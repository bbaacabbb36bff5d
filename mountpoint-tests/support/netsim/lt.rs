//! libtorrent peers (`lt/ltnode.py`) on the hosts of the simulated internet.

use std::path::{Path, PathBuf};

use super::{Host, Internet};
use crate::support::{LtNode, make_tree, s, sample_spec};

impl Host {
    /// Starts `ltnode.py ARGS` in this host (see [`LtNode::start`]). Pass
    /// `--listen-ip` with one of this host's addresses.
    pub fn lt_node(&self, args: &[&str]) -> LtNode {
        self.enter(|| LtNode::start(args))
    }

    /// A lone libtorrent DHT node on this host's first address, for mounts
    /// (whose defaults keep the DHT on) to bootstrap from: its router is
    /// itself (ltnode), its `--bootstrap` the internet's gateway at port 1,
    /// where nothing answers. Returns it and its `IP:PORT`.
    pub fn lt_dht_node(&self) -> (LtNode, String) {
        let ip = self.ip().to_string();
        let node = self.lt_node(&["--listen-ip", &ip, "--dht", "--bootstrap", "198.51.100.1:1"]);
        let addr = format!("{ip}:{}", node.dht_port());
        (node, addr)
    }
}

/// The tree of `sample_spec()` under `tmp/site`, and a .torrent of it made
/// by a short-lived libtorrent seeder on a public host (`maker`), so that
/// several seeders (or a relay) can be started from the file.
pub struct Content {
    /// The tree's directory, `tmp/site`.
    pub site: PathBuf,
    /// The .torrent file, `tmp/site.torrent` (v1).
    pub torrent: PathBuf,
    /// The maker's magnet link.
    pub magnet: String,
    /// The v1 info-hash, 40 hex digits.
    pub info_hash: String,
}

/// Makes the [`Content`] under `tmp` on `net` (adds the public host
/// `maker`, whose seeder is gone once this returns).
pub fn make_content(net: &Internet, tmp: &Path) -> Content {
    let site = tmp.join("site");
    make_tree(&site, &sample_spec());
    let torrent = tmp.join("site.torrent");
    let maker = net.public_host("maker");
    let mut node = maker.lt_node(&[
        "--listen-ip",
        &maker.ip().to_string(),
        "--seed",
        s(&site),
        "--write-torrent",
        s(&torrent),
    ]);
    let magnet = node.magnet();
    let info_hash = node.info_hash();
    drop(node);
    Content {
        site,
        torrent,
        magnet,
        info_hash,
    }
}
