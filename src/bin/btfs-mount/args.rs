//! The command line: every flag and subcommand, with their help texts, and
//! the checks of their values that need no network.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "btfs-mount",
    version,
    about = "Mount a BitTorrent magnet link or BEP 46 mutable URL as a directory, trackerless \
             (mainline DHT, LSD, PEX); seed directories and publish edited trees",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub mount: MountArgs,
}

/// Flags of every command that runs a node: the DHT, and the cache
/// directory (torrent data, the DHT's saved routing table, the last seq
/// published under each key).
#[derive(Args, Debug, Clone, Default)]
pub struct NodeArgs {
    /// DHT bootstrap node HOST:PORT (repeatable). Default: the public
    /// mainline routers.
    #[arg(long = "bootstrap", value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub bootstrap: Vec<String>,
    /// UDP port of our DHT node (0: any free port).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub dht_port: u16,
    /// Cache directory; torrent data lives under DIR/<info-hash>/.
    /// Default: $XDG_CACHE_HOME/btfs-mount or ~/.cache/btfs-mount.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl NodeArgs {
    /// The cache directory in use.
    pub fn cache(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(btfs::storage::default_cache_dir)
    }
}

/// [`NodeArgs`] of the `dht` command group: accepted before or after the
/// subcommand, and shown by `btfs-mount dht --help`.
#[derive(Args, Debug, Clone, Default)]
pub struct DhtGroupArgs {
    /// DHT bootstrap node HOST:PORT (repeatable). Default: the public
    /// mainline routers.
    #[arg(long = "bootstrap", value_name = "HOST:PORT", value_parser = parse_host_port, global = true)]
    pub bootstrap: Vec<String>,
    /// UDP port of our DHT node (0: any free port).
    #[arg(long, value_name = "N", default_value_t = 0, global = true)]
    pub dht_port: u16,
    /// Cache directory (the DHT's saved routing table).
    #[arg(long, value_name = "DIR", global = true)]
    pub cache_dir: Option<PathBuf>,
}

impl From<DhtGroupArgs> for NodeArgs {
    fn from(a: DhtGroupArgs) -> NodeArgs {
        NodeArgs {
            bootstrap: a.bootstrap,
            dht_port: a.dht_port,
            cache_dir: a.cache_dir,
        }
    }
}

/// Flags of every command that talks to peers (mounts and `seed`).
#[derive(Args, Debug, Clone, Default)]
pub struct PeerArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// TCP port for peer connections (0: any free port).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub port: u16,
    /// Do not use the DHT (peers then come from --peer, the magnet's x.pe,
    /// LSD and PEX).
    #[arg(long)]
    pub no_dht: bool,
    /// Do not use Local Service Discovery (BEP 14: multicast announces to
    /// peers on the local network).
    #[arg(long)]
    pub no_lsd: bool,
    /// Narrow Local Service Discovery to one interface, named by one of its
    /// addresses (default: every up, multicast-capable, non-loopback
    /// interface, IPv4 and IPv6, rescanned every 30 s).
    #[arg(long, value_name = "IP")]
    pub lsd_interface: Option<IpAddr>,
    /// Message Stream Encryption (MSE/PE) with peers: `prefer` dials
    /// encrypted and falls back to plaintext, and accepts both; `require`
    /// allows only RC4-encrypted connections, both ways; `off` speaks
    /// plaintext only.
    #[arg(long, value_name = "POLICY", default_value = "prefer")]
    pub encryption: btfs::client::Encryption,
    /// Do not use uTP (BEP 29): TCP only.
    #[arg(long)]
    pub no_utp: bool,
    /// Do not ask the home router to forward our ports (UPnP IGD,
    /// NAT-PMP/PCP). Without a mapping, peers on the internet cannot dial
    /// us behind a NAT; we still dial them.
    #[arg(long)]
    pub no_port_mapping: bool,
    /// Memory budget of the process, in bytes (suffixes K, M, G: powers of
    /// 1024) for everything that grows with traffic: blocks in flight,
    /// upload buffers, per-peer queues, metadata being assembled, hash
    /// work. At the limit nothing more is requested ahead of reads (reads
    /// already waiting still get their blocks), and the log says so.
    /// Default 8M; at least 256K.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub memory_limit: Option<u64>,
}

/// How the engine fetches and keeps pieces, alike for a mount and for
/// `serve` (each torrent it opens).
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Seconds a read may wait for data before failing (FUSE EIO, HTTP
    /// 504).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub read_timeout: u64,
    /// Download every open torrent whole in the background (lowest
    /// priority).
    #[arg(long)]
    pub prefetch: bool,
    /// Most cache space per torrent, in bytes (suffixes K, M, G, T: powers
    /// of 1024): least recently read pieces are evicted past it. Default:
    /// unlimited for a torrent already complete in the cache, else half the
    /// free space of the cache directory's filesystem (when the torrent is
    /// opened) plus what the torrent already holds.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub cache_size: Option<u64>,
}

/// Mounting (the command without a subcommand).
#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// magnet:?xt=urn:btih:<info-hash> (BEP 9; 40 hex or 32 base32),
    /// magnet:?xt=urn:btmh:1220<64 hex> (BEP 52 v2, alone or beside btih),
    /// a bare info-hash, or magnet:?xs=urn:btpk:<key> (BEP 46).
    pub url: Option<String>,
    /// Where to mount: an existing directory (normally empty: what it holds
    /// is hidden while mounted).
    pub mountpoint: Option<PathBuf>,
    #[command(flatten)]
    pub peer: PeerArgs,
    /// A peer to try (repeatable), in addition to those found.
    #[arg(long = "peer", value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub peers: Vec<String>,
    /// Seconds to wait for the metadata before giving up.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Do not upload to peers or announce on the DHT.
    #[arg(long)]
    pub no_seed: bool,
    /// Serve every read through btfs-mount, never by FUSE passthrough (by
    /// default a fully cached file is read by the kernel straight from the
    /// cache file, when the kernel (>= 6.9) and root privileges allow).
    #[arg(long)]
    pub no_passthrough: bool,
    /// Stay in the foreground (Ctrl-C or SIGTERM unmounts and exits).
    #[arg(short, long)]
    pub foreground: bool,
    /// For a mutable URL (BEP 46): seconds between checks for a newer
    /// version; the mount switches to it atomically. 0: never check.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub refresh: u64,
    /// Mount read-write: empty (`--writable MNT`) or starting from URL's
    /// tree. Changes are staged under the cache dir; unmounting makes a new
    /// torrent of the final tree (hybrid v1+v2, BEP 52, unless --v1-only),
    /// prints its magnet on stdout and seeds it (and with --key publishes
    /// it as the next BEP 46 seq, `ih` the v1 info-hash) until stopped.
    #[arg(long)]
    pub writable: bool,
    /// With --writable: publish a v1-only torrent (BEP 3) instead of a
    /// hybrid v1+v2 one.
    #[arg(long, requires = "writable")]
    pub v1_only: bool,
    /// With --writable: continue the unpublished draft last edited on this
    /// mountpoint (after a crash or kill).
    #[arg(long, requires = "writable")]
    pub resume: bool,
    /// With --writable: key file (`btfs-mount keygen`) to publish the new
    /// torrent under, as a BEP 46 mutable item.
    #[arg(long, value_name = "FILE", requires = "writable")]
    pub key: Option<PathBuf>,
    /// With --key: salt in hex (default: the salt of the mutable URL mounted).
    #[arg(long, value_name = "HEX", requires = "key")]
    pub salt: Option<String>,
    /// More logging (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make a torrent of a directory (or file) and seed it in place: a
    /// hybrid v1+v2 torrent (BEP 52) unless --v1-only. Prints its magnet
    /// link on stdout (`xt=urn:btih` and `xt=urn:btmh`; with --key, the
    /// mutable URL it is published under as the second line, whose item
    /// names the v1 info-hash), then seeds until stopped.
    Seed {
        /// The directory (multi-file torrent) or file (single-file torrent).
        path: PathBuf,
        /// Make a v1-only torrent (BEP 3; the info-hash seeds made before
        /// BEP 52 support) instead of a hybrid v1+v2 one.
        #[arg(long)]
        v1_only: bool,
        /// Key file from `btfs-mount keygen`: also publish the torrent as a
        /// BEP 46 mutable item (next seq).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Salt in hex (at most 64 bytes), with --key.
        #[arg(long, value_name = "HEX", default_value = "", requires = "key")]
        salt: String,
        #[command(flatten)]
        peer: PeerArgs,
    },
    /// Create an ed25519 key for publishing mutable URLs (BEP 46): writes
    /// its secret seed (64 hex characters) to a new file with mode 0600 and
    /// prints the public key and the mutable URL.
    Keygen {
        /// The key file to create; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Salt (hex) to show in the printed mutable URL.
        #[arg(long, value_name = "HEX", default_value = "")]
        salt: String,
    },
    /// Publish a torrent under a key as a BEP 46 mutable item: prints the
    /// mutable URL, then keeps the item alive on the DHT (puts it again
    /// every 30 minutes) until stopped, unless --once.
    Publish {
        /// magnet:?xt=urn:btih:<info-hash>, or a 40-hex info-hash.
        target: String,
        /// Key file from `btfs-mount keygen`.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Salt in hex (at most 64 bytes): several URLs under one key.
        #[arg(long, value_name = "HEX", default_value = "")]
        salt: String,
        /// Put the item once and exit.
        #[arg(long)]
        once: bool,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// List the btfs-mount processes of this user that run now: mounts,
    /// writable mounts (and what they published), seeds and publishers,
    /// with their PID, mountpoint, magnet link and log file.
    List,
    /// Stop a btfs-mount process, named by its mountpoint or PID (see
    /// `list`): a mount is unmounted (a writable one publishes first), a
    /// seed or publisher stops. Waits until it has exited.
    Stop {
        /// A mountpoint, or a PID from `btfs-mount list`.
        target: String,
        /// Seconds to wait for the process to exit.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        timeout: u64,
    },
    /// Serve many archives from one process: an HTTP gateway
    /// (/bt/<info-hash>/<path>, /bt/<public key>[.<salt>]/<path>, a status
    /// page at /) and/or a FUSE root (--mount DIR: DIR/<info-hash>/...).
    /// Archives open on first use and close when idle; one DHT node, one
    /// peer port and one cache serve them all. Goes to the background once
    /// listening, like a mount (-f stays in the foreground).
    Serve(Box<ServeArgs>),
    /// DHT debugging commands.
    Dht {
        #[command(subcommand)]
        command: DhtCommand,
        #[command(flatten)]
        dht: DhtGroupArgs,
    },
}

/// Flags of `btfs-mount serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address of the HTTP gateway. A non-loopback address exposes every
    /// archive this machine can reach to the network: it needs
    /// --allow-remote.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub http: std::net::SocketAddr,
    /// No HTTP gateway (with --mount: a FUSE root only).
    #[arg(long, conflicts_with = "http")]
    pub no_http: bool,
    /// Allow --http on a non-loopback address (reads only: see
    /// --allow-remote-writes).
    #[arg(long)]
    pub allow_remote: bool,
    /// Also serve writes (POST, PUT, DELETE, with the bearer token) on a
    /// non-loopback --http address.
    #[arg(long, requires = "allow_remote")]
    pub allow_remote_writes: bool,
    /// A FUSE root: DIR lists the open archives, DIR/<info-hash>/ and
    /// DIR/<public key>[.<salt hex>]/ open one on first lookup.
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// Key file (`btfs-mount keygen`), repeatable: PUT and DELETE on
    /// /bt/<its public key>[.<salt>]/<path> edit that archive and publish
    /// the next BEP 46 seq.
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    #[command(flatten)]
    pub peer: PeerArgs,
    /// A peer to try for every archive (repeatable).
    #[arg(long = "peer", value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub peers: Vec<String>,
    /// Seconds a first use waits for an archive's metadata (and a mutable
    /// URL's item) before failing (HTTP 504, FUSE ENOENT).
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Seconds an archive stays open with nothing reading it.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub idle: u64,
    /// Seconds between checks of a mutable URL for a newer version (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub refresh: u64,
    /// Do not upload to peers or announce on the DHT.
    #[arg(long)]
    pub no_seed: bool,
    /// Never use FUSE passthrough under --mount.
    #[arg(long)]
    pub no_passthrough: bool,
    /// Stay in the foreground (Ctrl-C or SIGTERM stops).
    #[arg(short, long)]
    pub foreground: bool,
}

#[derive(Subcommand, Debug)]
pub enum DhtCommand {
    /// Print each peer of an info-hash found on the DHT as a HOST:PORT line.
    GetPeers {
        /// 40 hex characters.
        info_hash: String,
        /// Seconds to search.
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout: u64,
    },
    /// Print the BEP 44 mutable item of a public key: its seq and value.
    Get {
        /// 64 hex characters (ed25519 public key).
        public_key: String,
        /// Salt, in hex.
        #[arg(long, value_name = "HEX", default_value = "")]
        salt: String,
        /// Seconds to search.
        #[arg(long, value_name = "SECS", default_value_t = 30)]
        timeout: u64,
    },
}

/// A `HOST:PORT` argument (`--peer`, `--bootstrap`): a port is required,
/// and the host must resolve. Resolving here means a typo fails at once
/// with one line, instead of a lookup that silently finds nothing.
pub fn parse_host_port(s: &str) -> Result<String, String> {
    use std::net::ToSocketAddrs;
    let s = s.trim();
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT (the port is missing)"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{s:?} is not HOST:PORT"));
    }
    if port == "0" {
        return Err(format!("{s:?}: port 0 cannot be dialled"));
    }
    match s.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(s.to_string()),
        Ok(None) => Err(format!("{host:?} has no address")),
        Err(e) => Err(format!("cannot resolve {host:?}: {e}")),
    }
}

/// A size in bytes: digits with an optional suffix K, M, G or T (powers of
/// 1024; `KiB`, `MB`... are read the same).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = t[digits.len()..].to_ascii_lowercase();
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 500M, 2G, 1048576)"))?;
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A `--salt` argument: hex, at most 64 bytes (BEP 44).
pub fn parse_salt(salt: &str) -> anyhow::Result<Vec<u8>> {
    let s = hex::decode(salt.trim()).map_err(|_| anyhow::anyhow!("--salt must be hex"))?;
    if s.len() > btfs::magnet::MAX_SALT_LEN {
        anyhow::bail!(
            "--salt is {} bytes; BEP 44 allows {}",
            s.len(),
            btfs::magnet::MAX_SALT_LEN
        );
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn host_port_needs_a_port_and_a_resolvable_host() {
        assert!(parse_host_port("127.0.0.1:6881").is_ok());
        assert!(parse_host_port("[::1]:6881").is_ok());
        assert!(parse_host_port("localhost:1").is_ok());
        let e = parse_host_port("127.0.0.1").unwrap_err();
        assert!(e.contains("port is missing"), "{e}");
        assert!(parse_host_port("127.0.0.1:x").is_err());
        assert!(parse_host_port("127.0.0.1:0").is_err());
        // (An unresolvable name is tried end to end, in a namespace: a DNS
        // lookup opens a socket.)
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2K").unwrap(), 2048);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert!(parse_size("2Q").is_err());
    }
}
