//! The other major BitTorrent clients as real test peers of btfs-mount
//! (issue 16, part 4): Transmission 3.00, aria2 1.36, webtorrent 3.0.21 and
//! rqbit 9.1.0, each run by a small driver in `mountpoint-tests/clients/`
//! that reports JSON event lines on stdout like `lt/ltnode.py` does. Include
//! after the harness:
//!
//! ```ignore
//! #[path = "support/mod.rs"]
//! mod support;
//! #[path = "support/clients.rs"]
//! mod clients;
//! ```
//!
//! Each client has a builder ([`Transmission`], [`Aria2`], [`Webtorrent`],
//! [`Rqbit`]) whose `seed(path)` or `fetch(magnet, save_dir)` starts the
//! driver and returns a [`Peer`] once it is `ready` (a seeder: once it has
//! checked every piece). A [`Peer`] is a [`Child`]: killed by PID on drop,
//! its stderr (the client's own debug log) kept and its tail printed when
//! the test fails. [`Tracker`] is the harness's minimal HTTP tracker, for
//! clients that cannot be handed a peer address.
//!
//! Driver events (every driver): `ready` {client, version, port (peer TCP
//! listen port), rpc_port, pid}, `torrent` {info_hash, magnet, name,
//! total_size}, `seeding` {info_hash}, `progress` {info_hash, state, done,
//! total, peers, download_rate, upload_rate, uploaded}, `finished`
//! {info_hash, seconds}, `error` {message}, `exit` {reason}.
//!
//! Addresses: Transmission never dials 127.0.0.0/8 (`isMartianAddr`,
//! libtransmission/net.c), and its DHT (jech/dht) drops such nodes too, so
//! tests that need Transmission to dial call [`add_test_ip`] and name peers
//! by [`TEST_IP`] (10.77.0.1, on `lo`, inside the test's namespace only).

#![allow(dead_code)] // each test file uses a subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// An address only the test's own network namespace has (on `lo`, added
/// by [`add_test_ip`]), for clients that refuse loopback peers.
pub const TEST_IP: &str = "10.77.0.1";

/// How long a driver may take to report `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a seeder may take to check its files and report `seeding`.
const SEEDING_TIMEOUT: Duration = Duration::from_secs(120);

/// Adds [`TEST_IP`]/32 to `lo`. Call inside [`in_netns`] only (it changes
/// the namespace's network). Idempotent.
pub fn add_test_ip() {
    let out = Command::new("ip")
        .args(["addr", "add", &format!("{TEST_IP}/32"), "dev", "lo"])
        .output()
        .expect("run `ip` (package iproute2)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("File exists"),
        "ip addr add {TEST_IP}/32 dev lo: {err}"
    );
}

/// `mountpoint-tests/clients/`, where the drivers live.
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mountpoint-tests/clients")
}

/// `interop/node/`, where `scripts/interop-setup` installs webtorrent.
pub fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/node")
}

/// True if webtorrent is installed where the driver loads it from.
pub fn webtorrent_installed() -> bool {
    node_dir()
        .join("node_modules/webtorrent/package.json")
        .is_file()
}

/// The rqbit binary: env `RQBIT`, else `rqbit` on PATH, else
/// `~/.cargo/bin/rqbit`; None if there is none.
pub fn rqbit_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RQBIT") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("rqbit"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let home = PathBuf::from(std::env::var_os("HOME")?).join(".cargo/bin/rqbit");
        home.is_file().then_some(home)
    })
}

/// MSE/PE (message stream encryption) policy of a client, mapped to each
/// client's own setting (see each builder's `encryption`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encryption {
    /// Plaintext BitTorrent handshakes only (or preferred, where the client
    /// has no "off").
    Plaintext,
    /// The client's default kind of "prefer encrypted, accept both".
    Prefer,
    /// Encrypted (RC4) connections only.
    Require,
}

/// A running client driver: a [`Child`] plus its `ready` event and, once
/// read, its `torrent` event. Dereferences to its [`Child`].
pub struct Peer {
    pub child: Child,
    /// "transmission", "aria2", "webtorrent", "rqbit", "tracker".
    pub client: &'static str,
    ready: Value,
    torrent: Option<Value>,
}

impl Peer {
    /// Spawns `cmd` as a [`Child`] named `client` and waits for `ready`.
    fn start(client: &'static str, cmd: Command) -> Peer {
        let mut child = Child::spawn(client, cmd);
        let ready = child.wait_event("ready", READY_TIMEOUT);
        Peer {
            child,
            client,
            ready,
            torrent: None,
        }
    }

    /// The `ready` event.
    pub fn ready(&self) -> &Value {
        &self.ready
    }

    /// The peer TCP listen port.
    pub fn port(&self) -> u16 {
        self.ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("ready.port")
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// `10.77.0.1:<port>` (see [`TEST_IP`]).
    pub fn test_addr(&self) -> String {
        format!("{TEST_IP}:{}", self.port())
    }

    /// The `torrent` event (waits up to 120 s the first time): info_hash,
    /// magnet, name, total_size.
    pub fn torrent(&mut self) -> Value {
        if self.torrent.is_none() {
            self.torrent = Some(self.child.wait_event("torrent", Duration::from_secs(120)));
        }
        self.torrent.clone().expect("set above")
    }

    /// The torrent's magnet link as the client gave it.
    pub fn magnet(&mut self) -> String {
        self.torrent()["magnet"]
            .as_str()
            .expect("torrent.magnet")
            .to_string()
    }

    /// The bare magnet `magnet:?xt=urn:btih:<info-hash>`: no name, no
    /// tracker, no peer.
    pub fn bare_magnet(&mut self) -> String {
        format!("magnet:?xt=urn:btih:{}", self.info_hash())
    }

    /// The v1 info-hash, 40 lowercase hex digits.
    pub fn info_hash(&mut self) -> String {
        self.torrent()["info_hash"]
            .as_str()
            .expect("torrent.info_hash")
            .to_lowercase()
    }

    /// The last `progress` event read so far, if any (for messages).
    pub fn last_progress(&mut self) -> Option<Value> {
        self.child
            .events()
            .into_iter()
            .rev()
            .find(|v| v["event"] == "progress")
    }

    /// Waits up to `timeout` for `finished` (a fetcher has every byte);
    /// panics with the last progress and the driver's stderr tail.
    pub fn wait_finished(&mut self, timeout: Duration) -> Value {
        if let Err(why) = self.child.peek_event("finished", timeout) {
            let last = self.last_progress();
            panic!(
                "{} did not finish: {why}; last progress: {last:?}\n--- stderr tail ---\n{}",
                self.client,
                self.child.stderr_tail(60)
            );
        }
        self.child.wait_event("finished", Duration::ZERO)
    }

    /// Waits up to `timeout` for `seeding`.
    pub fn wait_seeding(&mut self, timeout: Duration) -> Value {
        self.child.wait_event("seeding", timeout)
    }
}

impl std::ops::Deref for Peer {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for Peer {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// A python driver `clients/<script>` run with Debian's interpreter (the
/// one with python3-libtorrent, which makes the .torrent for clients that
/// cannot).
fn python_driver(script: &str) -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(clients_dir().join(script));
    cmd
}

/// `seed(path)` shared tail: start, wait for `seeding`, read `torrent`.
fn start_seeder(client: &'static str, cmd: Command) -> Peer {
    let mut p = Peer::start(client, cmd);
    p.wait_seeding(SEEDING_TIMEOUT);
    p.torrent();
    p
}

/// Transmission 3.00 (`transmission-daemon`, driven over its RPC by
/// `clients/transmission.py`). Defaults are Transmission's own: encryption
/// preferred (1), uTP on; DHT, LPD and port mapping off.
///
/// It cannot be handed a peer: give it a [`Tracker`] URL (added to the
/// torrent over RPC, so the magnet stays bare) or DHT bootstrap nodes.
/// Transmission 3.00 announces on the DHT only once its routing table holds
/// at least 4 good and more than 8 nodes (TR_DHT_POOR in tr-dht.c), and it
/// never dials 127.0.0.0/8: name peers by [`TEST_IP`].
#[derive(Clone, Debug)]
pub struct Transmission {
    encryption: Encryption,
    utp: bool,
    trackers: Vec<String>,
    dht_bootstrap: Vec<String>,
    port: u16,
}

impl Default for Transmission {
    fn default() -> Self {
        Transmission {
            encryption: Encryption::Prefer,
            utp: true,
            trackers: Vec::new(),
            dht_bootstrap: Vec::new(),
            port: 0,
        }
    }
}

impl Transmission {
    /// Transmission with its defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// settings.json `encryption`: Plaintext 0 (prefer plaintext), Prefer 1
    /// (prefer encrypted, its default), Require 2.
    pub fn encryption(mut self, e: Encryption) -> Self {
        self.encryption = e;
        self
    }

    /// settings.json `utp-enabled`. Transmission 3.00 dials uTP first; its
    /// uTP timer only starts once a UDP datagram arrives (tr-utp.c), so with
    /// no DHT and a peer without uTP it never falls back to TCP.
    pub fn utp(mut self, on: bool) -> Self {
        self.utp = on;
        self
    }

    /// An announce URL to add to the torrent (RPC `trackerAdd`).
    pub fn tracker(mut self, url: &str) -> Self {
        self.trackers.push(url.to_string());
        self
    }

    /// A DHT bootstrap node (written to `dht.bootstrap`; turns the DHT on).
    pub fn dht_bootstrap(mut self, addr: &str) -> Self {
        self.dht_bootstrap.push(addr.to_string());
        self
    }

    /// The peer port (0: a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn command(&self) -> Command {
        let mut cmd = python_driver("transmission.py");
        let enc = match self.encryption {
            Encryption::Plaintext => "0",
            Encryption::Prefer => "1",
            Encryption::Require => "2",
        };
        cmd.args(["--encryption", enc, "--port", &self.port.to_string()]);
        if !self.utp {
            cmd.arg("--no-utp");
        }
        for t in &self.trackers {
            cmd.args(["--tracker", t]);
        }
        for b in &self.dht_bootstrap {
            cmd.args(["--dht-bootstrap", b]);
        }
        cmd
    }

    /// Seeds `path` (a file or directory; the torrent is made by
    /// python3-libtorrent) once Transmission has verified it.
    pub fn seed(&self, path: &Path) -> Peer {
        let mut cmd = self.command();
        cmd.args(["--seed", s(path)]);
        start_seeder("transmission", cmd)
    }

    /// Downloads `magnet` into `save`; returns once the driver is ready.
    pub fn fetch(&self, magnet: &str, save: &Path) -> Peer {
        let mut cmd = self.command();
        cmd.args(["--fetch", magnet, "--save", s(save)]);
        Peer::start("transmission", cmd)
    }
}

/// aria2 1.36 (`aria2c`, driven over its JSON-RPC by `clients/aria2.py`),
/// with its defaults unless set; LPD off, DHT off unless [`Aria2::dht_entry`].
///
/// It cannot be handed a peer: give it a DHT entry point (a node of the
/// test: libtorrent's or btfs-mount's) or a [`Tracker`] URL.
#[derive(Clone, Debug)]
pub struct Aria2 {
    encryption: Encryption,
    dht_entry: Option<String>,
    trackers: Vec<String>,
    port: u16,
}

impl Default for Aria2 {
    fn default() -> Self {
        Aria2 {
            encryption: Encryption::Prefer,
            dht_entry: None,
            trackers: Vec::new(),
            port: 0,
        }
    }
}

impl Aria2 {
    /// aria2 with its defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Plaintext: `--bt-require-crypto=false --bt-min-crypto-level=plain`;
    /// Prefer: aria2's defaults (the same two values); Require:
    /// `--bt-require-crypto=true --bt-min-crypto-level=arc4`.
    pub fn encryption(mut self, e: Encryption) -> Self {
        self.encryption = e;
        self
    }

    /// `--enable-dht --dht-entry-point=ADDR`.
    pub fn dht_entry(mut self, addr: &str) -> Self {
        self.dht_entry = Some(addr.to_string());
        self
    }

    /// `--bt-tracker=URL`.
    pub fn tracker(mut self, url: &str) -> Self {
        self.trackers.push(url.to_string());
        self
    }

    /// `--listen-port` (0: a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn command(&self) -> Command {
        let mut cmd = python_driver("aria2.py");
        let enc = match self.encryption {
            Encryption::Plaintext => "plain",
            Encryption::Prefer => "prefer",
            Encryption::Require => "require",
        };
        cmd.args(["--encryption", enc, "--port", &self.port.to_string()]);
        if let Some(e) = &self.dht_entry {
            cmd.args(["--dht-entry", e]);
        }
        for t in &self.trackers {
            cmd.args(["--tracker", t]);
        }
        cmd
    }

    /// Seeds `path` (torrent made by python3-libtorrent) once aria2 checked it.
    pub fn seed(&self, path: &Path) -> Peer {
        let mut cmd = self.command();
        cmd.args(["--seed", s(path)]);
        start_seeder("aria2", cmd)
    }

    /// Downloads `magnet` into `save`; returns once the driver is ready.
    pub fn fetch(&self, magnet: &str, save: &Path) -> Peer {
        let mut cmd = self.command();
        cmd.args(["--fetch", magnet, "--save", s(save)]);
        Peer::start("aria2", cmd)
    }
}

/// webtorrent 3.0.21, the npm library run by `clients/webtorrent.mjs`
/// (installed by `scripts/interop-setup`), with DHT, trackers, LSD,
/// UPnP/NAT-PMP, web seeds, WebRTC, uTP and ut_pex off unless set.
#[derive(Clone, Debug)]
pub struct Webtorrent {
    encryption: Encryption,
    peers: Vec<String>,
    utp: bool,
    pex: bool,
    port: u16,
}

impl Default for Webtorrent {
    fn default() -> Self {
        Webtorrent {
            encryption: Encryption::Prefer,
            peers: Vec::new(),
            utp: false,
            pex: false,
            port: 0,
        }
    }
}

impl Webtorrent {
    /// webtorrent with its defaults (as the module header says).
    pub fn new() -> Self {
        Self::default()
    }

    /// The client's `secure` option: Plaintext 0; Prefer 1 (its default:
    /// every outgoing connection starts the MSE handshake, RC4 or plaintext
    /// may be selected inside it; a peer that does not speak MSE is never
    /// reached); Require 2 (RC4 only).
    pub fn encryption(mut self, e: Encryption) -> Self {
        self.encryption = e;
        self
    }

    /// A peer given with `torrent.addPeer(addr)` (again every 2 s while no
    /// peer is connected).
    pub fn peer(mut self, addr: &str) -> Self {
        self.peers.push(addr.to_string());
        self
    }

    /// Turns uTP on (`utp: true`).
    pub fn utp(mut self, on: bool) -> Self {
        self.utp = on;
        self
    }

    /// Turns ut_pex on.
    pub fn pex(mut self, on: bool) -> Self {
        self.pex = on;
        self
    }

    /// `torrentPort` (0: any).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn command(&self) -> Command {
        assert!(
            webtorrent_installed(),
            "webtorrent is not installed in {}: run scripts/interop-setup",
            node_dir().display()
        );
        let mut cmd = Command::new("node");
        cmd.arg(clients_dir().join("webtorrent.mjs"));
        let secure = match self.encryption {
            Encryption::Plaintext => "0",
            Encryption::Prefer => "1",
            Encryption::Require => "2",
        };
        cmd.args(["--secure", secure, "--port", &self.port.to_string()]);
        for p in &self.peers {
            cmd.args(["--peer", p]);
        }
        if self.utp {
            cmd.arg("--utp");
        }
        if self.pex {
            cmd.arg("--pex");
        }
        cmd.env("DEBUG", "webtorrent*,bittorrent-protocol*");
        cmd.env("BTFS_INTEROP_NODE", node_dir());
        cmd
    }

    /// Seeds `path` (webtorrent makes the torrent itself).
    pub fn seed(&self, path: &Path) -> Peer {
        let mut cmd = self.command();
        cmd.args(["--seed", s(path)]);
        start_seeder("webtorrent", cmd)
    }

    /// Downloads `magnet` into `save` from the [`Webtorrent::peer`]s.
    pub fn fetch(&self, magnet: &str, save: &Path) -> Peer {
        let mut cmd = self.command();
        cmd.args(["--fetch", magnet, "--save", s(save)]);
        Peer::start("webtorrent", cmd)
    }
}

/// rqbit 9.1.0 (`rqbit download` / `rqbit share`, stateless, polled over
/// its HTTP API by `clients/rqbit.py`), with DHT, LSD, trackers and UPnP
/// off. rqbit has no MSE: plaintext only. Tests skip loudly when
/// [`rqbit_binary`] finds none (it is built by `scripts/interop`).
#[derive(Clone, Debug, Default)]
pub struct Rqbit {
    peers: Vec<String>,
    dht_bootstrap: Vec<String>,
    utp: bool,
    port: u16,
}

impl Rqbit {
    /// rqbit with the settings above.
    pub fn new() -> Self {
        Self::default()
    }

    /// A peer given with `--initial-peers` and the API's `add_peers`.
    pub fn peer(mut self, addr: &str) -> Self {
        self.peers.push(addr.to_string());
        self
    }

    /// Turns the DHT on, bootstrapped from `addr` only.
    pub fn dht_bootstrap(mut self, addr: &str) -> Self {
        self.dht_bootstrap.push(addr.to_string());
        self
    }

    /// `--experimental-enable-utp-listen`.
    pub fn utp(mut self, on: bool) -> Self {
        self.utp = on;
        self
    }

    /// `--listen-port` (0: a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn command(&self) -> Command {
        let bin = rqbit_binary().expect("rqbit is not installed (scripts/interop builds it)");
        let mut cmd = python_driver("rqbit.py");
        cmd.env("RQBIT", bin);
        cmd.args(["--port", &self.port.to_string()]);
        for p in &self.peers {
            cmd.args(["--peer", p]);
        }
        for b in &self.dht_bootstrap {
            cmd.args(["--dht-bootstrap", b]);
        }
        if self.utp {
            cmd.arg("--utp");
        }
        cmd
    }

    /// `rqbit share path` (rqbit makes the torrent itself).
    pub fn seed(&self, path: &Path) -> Peer {
        let mut cmd = self.command();
        cmd.args(["--seed", s(path)]);
        start_seeder("rqbit", cmd)
    }

    /// `rqbit download magnet -o save`.
    pub fn fetch(&self, magnet: &str, save: &Path) -> Peer {
        let mut cmd = self.command();
        cmd.args(["--fetch", magnet, "--save", s(save)]);
        Peer::start("rqbit", cmd)
    }
}

/// The harness's minimal HTTP tracker (`clients/tracker.py`): answers
/// every announce with the given peers plus those that announced the same
/// info-hash. Test harness only; btfs-mount is trackerless.
pub struct Tracker;

impl Tracker {
    /// Starts the tracker on `listen_ip` (a free port), returning `peers`
    /// (`HOST:PORT`) to every announce. Its `ready` event has `url`.
    pub fn start(listen_ip: &str, peers: &[&str]) -> Peer {
        let mut cmd = python_driver("tracker.py");
        cmd.args(["--listen", listen_ip]);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        Peer::start("tracker", cmd)
    }

    /// The announce URL of a tracker [`Peer`].
    pub fn url(tracker: &Peer) -> String {
        tracker.ready()["url"]
            .as_str()
            .expect("tracker ready.url")
            .to_string()
    }
}
