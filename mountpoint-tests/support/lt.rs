//! python3-libtorrent peers: [`LtNode`] (`lt/ltnode.py`, one peer),
//! [`LtNode::seed_tree`] (a seeder fixture), [`torrent_file_offset`],
//! [`piece_sha1s`],
//! [`LocalDht`] (a local DHT of ltnode nodes) and [`LtDht`]
//! (`lt/lt_dht.py`, DHT nodes driven by commands).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::{Child, PYTHON};
/// A python3-libtorrent peer running `mountpoint-tests/lt/ltnode.py` (see
/// its docstring for flags and events). Dereferences to its [`Child`].
pub struct LtNode {
    pub child: Child,
    /// The `ready` event: port, dht_port, node_id.
    ready: Value,
    /// The `torrent` event, once read.
    torrent: Option<Value>,
}

/// Path of `ltnode.py`.
pub fn ltnode_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mountpoint-tests/lt/ltnode.py")
}

/// Starts an [`LtNode`] with `args` and waits for its `ready` event.
pub fn lt_node(args: &[&str]) -> LtNode {
    LtNode::start(args)
}

/// Downloads `magnet` with a libtorrent peer that dials `peer`
/// (`HOST:PORT`, the side under test) into the new directory `tmp/lt-NAME`,
/// over TCP in plaintext (`--no-utp --no-encryption`: the transfer does not
/// wait on libtorrent's uTP and MSE attempts). Returns that directory once
/// libtorrent has every piece (its `finished` event, within 90 s); logs
/// how long it took.
pub fn lt_fetch(tmp: &Path, magnet: &str, peer: &str, name: &str) -> PathBuf {
    let save = tmp.join(format!("lt-{name}"));
    std::fs::create_dir_all(&save).unwrap();
    let t = std::time::Instant::now();
    let mut lt = LtNode::start(&[
        "--fetch",
        magnet,
        "--save",
        save.to_str().expect("UTF-8 path"),
        "--connect",
        peer,
        "--no-utp",
        "--no-encryption",
    ]);
    lt.wait_event("finished", Duration::from_secs(90));
    eprintln!(
        "libtorrent fetched {name} in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    drop(lt);
    save
}

impl LtNode {
    /// Starts `ltnode.py ARGS` and waits (up to 20 s) for `ready`. With
    /// `--seed`, also waits (up to 120 s) until it seeds; with a torrent file
    /// or magnet, 300 ms more. Either way it is started once more if
    /// python3-libtorrent crashed meanwhile: Debian's 2.0.8 was seen to
    /// segfault right after adding or hashing a torrent when the whole suite
    /// runs, which is no fault of the code under test (said loudly on
    /// stderr).
    pub fn start(args: &[&str]) -> LtNode {
        let seeding = args.contains(&"--seed");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut cmd = Command::new(PYTHON);
            cmd.arg(ltnode_script()).args(args);
            let mut child = Child::spawn("ltnode", cmd);
            let ready = child.wait_event("ready", Duration::from_secs(20));
            let has_torrent = args.contains(&"--seed-torrent") || args.contains(&"--fetch");
            if has_torrent && attempt < 2 {
                // The same crash was seen right after checking a torrent
                // given by file or magnet: give it a moment to show.
                if let Some(st) = child.wait_exit(Duration::from_millis(300)) {
                    if std::os::unix::process::ExitStatusExt::signal(&st).is_some() {
                        eprintln!(
                            "WARNING: python3-libtorrent crashed at start ({st}); starting it again\n{}",
                            child.report()
                        );
                        continue;
                    }
                    panic!("ltnode {args:?} exited at start ({st})\n{}", child.report());
                }
            }
            if seeding {
                if let Err(why) = child.peek_event("seeding", Duration::from_secs(120)) {
                    let crashed = child.wait_exit(Duration::from_secs(2)).is_some_and(|st| {
                        std::os::unix::process::ExitStatusExt::signal(&st).is_some()
                    });
                    if crashed && attempt < 2 {
                        eprintln!(
                            "WARNING: python3-libtorrent crashed before seeding ({why}); starting it again\n{}",
                            child.report()
                        );
                        continue;
                    }
                    panic!("ltnode {args:?}: {why}\n{}", child.report());
                }
            }
            return LtNode {
                child,
                ready,
                torrent: None,
            };
        }
    }

    /// The seeder fixture: `ltnode.py --seed DIR` (a v1 torrent of `dir`, a
    /// directory or a single file) with `piece_size`-byte pieces (0:
    /// libtorrent's choice) and the `extra` ltnode flags (`--no-utp`,
    /// `--write-torrent F`, `--dht --bootstrap A`, ...). Returns once it
    /// seeds (every piece checked; its `seeding` event taken), with its
    /// magnet link.
    pub fn seed_tree(dir: &Path, piece_size: usize, extra: &[&str]) -> (LtNode, String) {
        let dir = dir.to_str().expect("UTF-8 path");
        let piece = piece_size.to_string();
        let mut args = vec!["--seed", dir];
        if piece_size != 0 {
            args.extend(["--piece-size", piece.as_str()]);
        }
        args.extend_from_slice(extra);
        let mut node = LtNode::start(&args);
        node.wait_event("seeding", Duration::from_secs(30));
        let magnet = node.magnet();
        (node, magnet)
    }

    /// The `ready` event.
    pub fn ready(&self) -> &Value {
        &self.ready
    }

    /// The TCP (and UDP) listen port.
    pub fn port(&self) -> u16 {
        self.ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("ready.port")
    }

    /// `127.0.0.1:<port>`, for `--connect`, `--bootstrap` or `--peer`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// The DHT's UDP port; panics if the node runs without `--dht`.
    pub fn dht_port(&self) -> u16 {
        self.ready["dht_port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("dht_port: this ltnode runs without --dht")
    }

    /// The DHT node id (40 hex digits), if the DHT is on.
    pub fn node_id(&self) -> Option<String> {
        self.ready["node_id"].as_str().map(str::to_string)
    }

    /// The `torrent` event (waits up to 60 s for it the first time): keys
    /// info_hash, magnet, name, files [{path, size}], piece_length,
    /// num_pieces, total_size, torrent_file.
    pub fn torrent(&mut self) -> Value {
        if self.torrent.is_none() {
            self.torrent = Some(self.child.wait_event("torrent", Duration::from_secs(60)));
        }
        self.torrent.clone().expect("set above")
    }

    /// The torrent's magnet link.
    pub fn magnet(&mut self) -> String {
        self.torrent()["magnet"]
            .as_str()
            .expect("torrent.magnet")
            .to_string()
    }

    /// The torrent's v1 info-hash, 40 lowercase hex digits.
    pub fn info_hash(&mut self) -> String {
        self.torrent()["info_hash"]
            .as_str()
            .expect("torrent.info_hash")
            .to_string()
    }
}

impl std::ops::Deref for LtNode {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for LtNode {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// The piece hashes a seeder script reported under `key` of `event` (a list
/// of 40-hex SHA-1s, e.g. `piece_sha1` of lt_wire_seed.py's and lt_utp.py's
/// `seeding` events), as bytes.
pub fn piece_sha1s(event: &Value, key: &str) -> Vec<[u8; 20]> {
    event[key]
        .as_array()
        .unwrap_or_else(|| panic!("no list {key:?} in {event}"))
        .iter()
        .map(|h| {
            let mut a = [0u8; 20];
            hex::decode_to_slice(h.as_str().expect("a hex string"), &mut a)
                .unwrap_or_else(|e| panic!("{key}: {h}: {e}"));
            a
        })
        .collect()
}

/// Absolute offset (bytes) of the file `path` (as the `torrent` event names
/// it, e.g. `data/big.bin`) in the torrent's piece space: the files are
/// laid out in the order of the event (ltnode leaves pad files out, so this
/// holds for the v1 torrents it makes). Panics if there is no such file.
pub fn torrent_file_offset(torrent: &Value, path: &str) -> u64 {
    let mut off = 0;
    for f in torrent["files"].as_array().expect("torrent.files") {
        if f["path"] == path {
            return off;
        }
        off += f["size"].as_u64().expect("files[].size");
    }
    panic!("no {path} in {torrent}")
}

/// A local DHT of `ltnode.py --dht` nodes on 127.0.0.1: the first node is
/// alone (it bootstraps from `127.0.0.1:1`, where nothing answers), every
/// other one bootstraps from the first. Each node's DHT port is its listen
/// port. The nodes stop when this is dropped.
pub struct LocalDht {
    pub nodes: Vec<LtNode>,
}

impl LocalDht {
    /// Starts `n` (at least 1) nodes, each up (`ready`) before the next.
    pub fn start(n: usize) -> LocalDht {
        assert!(n >= 1, "a DHT of no node");
        let first = LtNode::start(&["--dht", "--bootstrap", "127.0.0.1:1"]);
        let boot = first.addr();
        let mut nodes = vec![first];
        for _ in 1..n {
            nodes.push(LtNode::start(&["--dht", "--bootstrap", &boot]));
        }
        LocalDht { nodes }
    }

    /// `127.0.0.1:P` of the first node: where a newcomer bootstraps.
    pub fn boot(&self) -> String {
        self.nodes[0].addr()
    }

    /// `127.0.0.1:P` of every node.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(LtNode::addr).collect()
    }

    /// `--bootstrap A --bootstrap B ...` for every node (btfs-mount and
    /// ltnode flags). A fresh libtorrent DHT takes a while before its nodes
    /// know each other; naming every node makes lookups reach them all at
    /// once.
    pub fn bootstrap_flags(&self) -> Vec<String> {
        self.addrs()
            .into_iter()
            .flat_map(|a| ["--bootstrap".to_string(), a])
            .collect()
    }
}

/// Path of `lt_dht.py`.
pub fn lt_dht_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mountpoint-tests/lt/lt_dht.py")
}

/// libtorrent DHT nodes in one Python process (`lt/lt_dht.py`), driven by
/// JSON commands on its stdin, each answered by one JSON event (see the
/// script's docstring for the commands). For tests of our DHT node against
/// libtorrent's: announce, get_peers, BEP 44 gets and puts, raw KRPC puts.
pub struct LtDht {
    child: Child,
    /// DHT (UDP) ports of the libtorrent sessions on 127.0.0.1.
    pub ports: Vec<u16>,
}

impl LtDht {
    /// Starts `n` libtorrent sessions on 127.0.0.1:`base_port`.. that
    /// bootstrap from `bootstrap` and from each other; waits (up to 30 s)
    /// for them to be up.
    pub fn start(n: usize, base_port: u16, bootstrap: &[SocketAddr]) -> LtDht {
        let boot: Vec<String> = bootstrap.iter().map(|a| a.to_string()).collect();
        let mut cmd = Command::new(PYTHON);
        cmd.arg(lt_dht_script())
            .args(["--nodes", &n.to_string()])
            .args(["--base-port", &base_port.to_string()])
            .args(["--bootstrap", &boot.join(",")]);
        let mut child = Child::spawn("lt_dht", cmd);
        let ready = child.wait_event("ready", Duration::from_secs(30));
        let ports = ready["ports"]
            .as_array()
            .expect("ready.ports")
            .iter()
            .map(|p| {
                p.as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .expect("port")
            })
            .collect();
        LtDht { child, ports }
    }

    /// `127.0.0.1:P` of every session.
    pub fn addrs(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect()
    }

    /// Sends one command (a JSON object such as
    /// `json!({"cmd": "nodes", "node": 0})`) and waits up to `limit` for
    /// the answer, the next event named `event`. Panics on timeout, and
    /// when the script reports an `error` event instead.
    pub fn cmd(&mut self, cmd: Value, event: &str, limit: Duration) -> Value {
        self.child.send_line(&cmd.to_string());
        self.child.wait_event_ok(event, limit)
    }
}
