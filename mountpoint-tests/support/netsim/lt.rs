//! libtorrent peers (`lt/ltnode.py`) on the hosts of the simulated internet.

use super::Host;
use crate::support::LtNode;

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
