//! `btfs-mount`: mount a magnet link or BEP 46 mutable URL as a directory.
//! A thin adapter over [`btfs::Client`] and [`btfs::fuse`].

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use btfs::client::{Client, LookupOptions, Version};
use btfs::keypair::Keypair;
use btfs::swarm::StorageKind;

mod cli_write;

/// Environment variable naming the pipe fd on which a background child
/// reports that the mount is ready.
const READY_FD_ENV: &str = "BTFS_MOUNT_READY_FD";

#[derive(Parser, Debug)]
#[command(
    name = "btfs-mount",
    version,
    about = "Mount a BitTorrent magnet link (or BEP 46 mutable URL) as a read-only directory, trackerless, through the mainline DHT",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    mount: MountArgs,
}

/// Flags shared by every command that runs a node.
#[derive(Args, Debug, Clone)]
struct NetArgs {
    /// DHT bootstrap node HOST:PORT (repeatable). Default: the public mainline routers.
    #[arg(long = "bootstrap", value_name = "HOST:PORT")]
    bootstrap: Vec<String>,
    /// UDP port of our DHT node (0: any free port).
    #[arg(long, default_value_t = 0)]
    dht_port: u16,
    /// TCP port for peer connections (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Do not use the DHT (peers then come from --peer, the magnet's x.pe,
    /// LSD and PEX).
    #[arg(long)]
    no_dht: bool,
    /// Do not use Local Service Discovery (BEP 14: multicast announces to
    /// peers on the local network).
    #[arg(long)]
    no_lsd: bool,
    /// Interface for Local Service Discovery, named by one of its addresses
    /// (default: the interface the kernel routes multicast to).
    #[arg(long, value_name = "IP")]
    lsd_interface: Option<std::net::IpAddr>,
    /// Cache directory; data lives under DIR/<info-hash>/.
    /// Default: $XDG_CACHE_HOME/btfs-mount or ~/.cache/btfs-mount.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// More logging (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
}

#[derive(Args, Debug, Clone)]
struct MountArgs {
    /// magnet:?xt=urn:btih:<info-hash> (BEP 9) or magnet:?xs=urn:btpk:<key> (BEP 46).
    url: Option<String>,
    /// Where to mount (an existing empty directory).
    mountpoint: Option<PathBuf>,
    #[command(flatten)]
    net: NetArgs,
    /// A peer to try (repeatable), in addition to those found.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// Seconds to wait for the metadata before giving up.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Seconds a read may wait for data before failing with EIO.
    #[arg(long, default_value_t = 60)]
    read_timeout: u64,
    /// Do not upload to peers or announce on the DHT.
    #[arg(long)]
    no_seed: bool,
    /// Download the whole torrent in the background (lowest priority).
    #[arg(long)]
    prefetch: bool,
    /// Serve every read through btfs-mount, never by FUSE passthrough (by
    /// default a fully cached file is read by the kernel straight from the
    /// cache file, when the kernel (>= 6.9) and root privileges allow).
    #[arg(long)]
    no_passthrough: bool,
    /// Most cache space per torrent, in bytes (suffixes K, M, G, T: powers
    /// of 1024): least recently read pieces are evicted past it. Default:
    /// unlimited for a torrent already complete in the cache, else half the
    /// free space of the cache directory's filesystem (at mount time) plus
    /// what the torrent already holds.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    cache_size: Option<u64>,
    /// Stay in the foreground (Ctrl-C or SIGTERM unmounts and exits).
    #[arg(short, long)]
    foreground: bool,
    /// For a mutable URL (BEP 46): seconds between checks for a newer
    /// version; the mount switches to it atomically. 0: never check.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    refresh: u64,
    /// Mount read-write: empty (`--writable MNT`) or starting from URL's
    /// tree. Changes are staged under the cache dir; unmounting makes a new
    /// torrent of the final tree, prints its magnet on stdout and seeds it
    /// (and with --key publishes it as the next BEP 46 seq) until Ctrl-C.
    #[arg(long)]
    writable: bool,
    /// With --writable: continue the unpublished draft last edited on this
    /// mountpoint (after a crash or kill).
    #[arg(long, requires = "writable")]
    resume: bool,
    /// With --writable: key file (`btfs-mount keygen`) to publish the new
    /// torrent under, as a BEP 46 mutable item.
    #[arg(long, value_name = "FILE", requires = "writable")]
    key: Option<PathBuf>,
    /// With --key: salt in hex (default: the salt of the mutable URL mounted).
    #[arg(long, value_name = "HEX", requires = "key")]
    salt: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// DHT debugging commands.
    #[command(subcommand)]
    Dht(DhtCommand),
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
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
    },
    /// Make a torrent of a directory (or file) and seed it in place: prints
    /// its magnet link on stdout (and, with --key, the mutable URL it is
    /// published under as the second line), then seeds until Ctrl-C.
    Seed {
        /// The directory (multi-file torrent) or file (single-file torrent).
        path: PathBuf,
        /// Key file from `btfs-mount keygen`: also publish the torrent as a
        /// BEP 46 mutable item (next seq).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// Salt in hex (at most 64 bytes), with --key.
        #[arg(long, value_name = "HEX", default_value = "", requires = "key")]
        salt: String,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Publish a torrent under a key as a BEP 46 mutable item: prints the
    /// mutable URL, then keeps the item alive on the DHT (puts it again
    /// every 30 minutes) until Ctrl-C, unless --once.
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
        net: NetArgs,
    },
}

/// How often `publish` puts its item again (BEP 44 items expire after
/// about 2 hours on most nodes).
const REPUBLISH_EVERY: Duration = Duration::from_secs(30 * 60);

#[derive(Subcommand, Debug)]
enum DhtCommand {
    /// Print each peer of an info-hash found on the DHT as a HOST:PORT line.
    GetPeers {
        /// 40 hex characters.
        info_hash: String,
        #[command(flatten)]
        net: NetArgs,
        /// Seconds to search.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Print the BEP 44 mutable item of a public key: its seq and value.
    Get {
        /// 64 hex characters (ed25519 public key).
        public_key: String,
        /// Salt, in hex.
        #[arg(long, default_value = "")]
        salt: String,
        #[command(flatten)]
        net: NetArgs,
        /// Seconds to search.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    // Piece buffers (≥ 16 KiB blocks, 256 KiB–16 MiB pieces) come from mmap
    // and go back to the OS when freed, and few malloc arenas: otherwise
    // glibc keeps tens of MiB of freed buffers per thread arena (measured:
    // peak RSS 90 → ~40 MiB streaming 1 GiB with 4 MiB pieces).
    // SAFETY: mallopt only tunes the allocator, before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    let verbose = match &cli.command {
        Some(Command::Dht(DhtCommand::GetPeers { net, .. } | DhtCommand::Get { net, .. })) => {
            net.verbose
        }
        Some(Command::Publish { net, .. } | Command::Seed { net, .. }) => net.verbose,
        Some(Command::Keygen { verbose, .. }) => *verbose,
        None => cli.mount.net.verbose,
    };
    init_logging(verbose);
    let result = match cli.command {
        Some(Command::Dht(cmd)) => run_async(dht_command(cmd)),
        Some(Command::Keygen { out, salt, .. }) => keygen(&out, &salt),
        Some(Command::Publish {
            target,
            key,
            salt,
            once,
            net,
        }) => run_async(publish(target, key, salt, once, net)),
        Some(Command::Seed {
            path,
            key,
            salt,
            net,
        }) => run_async(cli_write::seed(path, key, salt, net)),
        None => mount_main(cli.mount),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("btfs-mount: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `dht 3, cli 1` or `-`.
fn sources(by: &[(String, usize)]) -> String {
    if by.is_empty() {
        return "-".into();
    }
    by.iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The progress line while the metadata resolves.
fn progress_line(p: &btfs::client::Progress, dht: bool) -> String {
    format!(
        "btfs-mount: {}{} peers found ({}), {} connected, {} metadata bytes",
        if dht {
            format!("{} DHT nodes, ", p.dht_nodes)
        } else {
            String::new()
        },
        p.swarm.peers_known,
        sources(&p.swarm.by_source),
        p.swarm.peers_connected,
        p.swarm.metadata_bytes
    )
}

/// On a terminal the line is rewritten in place; elsewhere (a log file, a
/// pipe) it is printed as a new line, and only when it changed.
fn print_progress(line: &str, last: &std::sync::Mutex<String>) {
    use std::io::IsTerminal;
    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
    if std::io::stderr().is_terminal() {
        eprint!("\r{line}   ");
    } else if *last != line {
        eprintln!("{line}");
    }
    *last = line.to_string();
}

/// The error and its causes on one line, skipping a cause whose text the
/// message already contains (a wrapped io::Error would repeat itself).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,btfs=info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run_async<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

async fn start_client(
    net: &NetArgs,
    read_timeout: Duration,
    prefetch: bool,
    cache_size: Option<u64>,
) -> anyhow::Result<Client> {
    let mut b = Client::builder()
        .cache_size(cache_size)
        .dht(!net.no_dht)
        .lsd(!net.no_lsd)
        .lsd_interface(net.lsd_interface)
        .dht_port(net.dht_port)
        .peer_port(net.port)
        .read_timeout(read_timeout)
        .prefetch(prefetch);
    if !net.bootstrap.is_empty() {
        b = b.bootstrap(net.bootstrap.clone());
    }
    if let Some(dir) = &net.cache_dir {
        b = b.storage(StorageKind::Files(dir.clone()));
    }
    b.start().await.context("cannot start the client")
}

fn mount_main(mut args: MountArgs) -> anyhow::Result<()> {
    if args.writable {
        // `--writable MNT`: the one positional is the mountpoint.
        if args.mountpoint.is_none() {
            args.mountpoint = args.url.take().map(PathBuf::from);
        }
        let Some(mountpoint) = args.mountpoint.clone() else {
            bail!("usage: btfs-mount --writable [URL] <MOUNTPOINT> (see --help)");
        };
        if let Some(url) = &args.url {
            if args.resume {
                bail!("--resume takes no URL: the draft remembers where it started");
            }
            btfs::magnet::parse(url).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let mountpoint = prepare_mountpoint(&mountpoint)?;
        if !args.foreground && std::env::var_os(READY_FD_ENV).is_none() {
            return spawn_background();
        }
        return run_async(cli_write::mount_writable(args, mountpoint));
    }
    let (Some(url), Some(mountpoint)) = (args.url.clone(), args.mountpoint.clone()) else {
        bail!("usage: btfs-mount [OPTIONS] <URL> <MOUNTPOINT> (see --help)");
    };
    // Check the URL before anything else: a malformed one mounts nothing.
    btfs::magnet::parse(&url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mountpoint = prepare_mountpoint(&mountpoint)?;
    if !args.foreground && std::env::var_os(READY_FD_ENV).is_none() {
        return spawn_background();
    }
    run_async(mount_foreground(args, url, mountpoint))
}

/// Checks the mountpoint; clears a stale mount left by a crashed process
/// ("Transport endpoint is not connected").
fn prepare_mountpoint(mp: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    // stat may be answered from the kernel's attribute cache; opening the
    // directory reaches the (dead) daemon.
    let stale = |p: &Path| {
        if statfs_errno(p) == Some(libc::ENOTCONN) {
            return true;
        }
        std::fs::read_dir(p)
            .err()
            .or_else(|| std::fs::metadata(p).err())
            .is_some_and(|e| e.raw_os_error() == Some(libc::ENOTCONN))
    };
    if stale(mp) {
        eprintln!(
            "btfs-mount: {} is a stale mount (its process died); unmounting it",
            mp.display()
        );
        detach(mp);
    }
    if stale(mp) {
        bail!(
            "mountpoint {} is a stale mount that could not be cleared; run: fusermount3 -uz {}",
            mp.display(),
            mp.display()
        );
    }
    let md = match std::fs::metadata(mp) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => bail!(
            "mountpoint {} is a stale mount that could not be cleared; run: fusermount3 -uz {}",
            mp.display(),
            mp.display()
        ),
        Err(e) => bail!("mountpoint {}: {e}", mp.display()),
        Ok(md) => md,
    };
    if !md.is_dir() {
        bail!("mountpoint {} is not a directory", mp.display());
    }
    let mp = std::fs::canonicalize(mp).with_context(|| format!("mountpoint {}", mp.display()))?;
    if let Some(parent) = mp.parent()
        && std::fs::metadata(parent).is_ok_and(|p| p.dev() != md.dev())
    {
        bail!(
            "{} is already a mount point; unmount it first (fusermount3 -u {})",
            mp.display(),
            mp.display()
        );
    }
    let background_child = std::env::var_os(READY_FD_ENV).is_some();
    if !background_child && std::fs::read_dir(&mp).is_ok_and(|mut d| d.next().is_some()) {
        eprintln!(
            "btfs-mount: warning: {} is not empty; its contents are hidden while mounted",
            mp.display()
        );
    }
    Ok(mp)
}

/// Lazily detaches the mount at `mp` (root: umount2 MNT_DETACH; otherwise
/// `fusermount3 -uz`).
fn detach(mp: &Path) {
    if let Ok(c) = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes()) {
        // SAFETY: umount2 with a valid C string.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return;
        }
    }
    let _ = std::process::Command::new("fusermount3")
        .args(["-u", "-z"])
        .arg(mp)
        .status();
}

/// The errno of `statfs(path)`, None on success.
fn statfs_errno(path: &Path) -> Option<i32> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs fills the zeroed struct for a valid path.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } == 0 {
        None
    } else {
        std::io::Error::last_os_error().raw_os_error()
    }
}

/// Re-runs this command as a detached child that mounts and reports
/// readiness on a pipe; returns once the tree is mounted (exit 0) or with
/// the child's failure.
fn spawn_background() -> anyhow::Result<()> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe: {}", std::io::Error::last_os_error());
    }
    let (rfd, wfd) = (fds[0], fds[1]);
    let exe = std::env::current_exe().context("cannot find our own executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(READY_FD_ENV, wfd.to_string())
        .stdin(std::process::Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            // Keep the write end open across exec.
            let flags = libc::fcntl(wfd, libc::F_GETFD);
            libc::fcntl(wfd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the background process")?;
    // SAFETY: we own wfd; close our copy so EOF arrives when the child exits.
    unsafe { libc::close(wfd) };
    // SAFETY: rfd is a valid fd we own.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(rfd) };
    let mut msg = String::new();
    let _ = pipe.read_to_string(&mut msg);
    if msg.starts_with("ready") {
        return Ok(());
    }
    let status = child.wait()?;
    match status.code() {
        // It said why on our stderr already: one line, its exit status.
        Some(code) if code != 0 => std::process::exit(code),
        _ => bail!("the mount did not come up ({status})"),
    }
}

/// The `--peer HOST:PORT` addresses, resolved (the first address of each).
pub(crate) async fn resolve_peers(peers: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for p in peers {
        let mut addrs = tokio::net::lookup_host(p.as_str())
            .await
            .with_context(|| format!("--peer {p}: not a HOST:PORT"))?;
        out.extend(addrs.next());
    }
    Ok(out)
}

async fn mount_foreground(args: MountArgs, url: String, mountpoint: PathBuf) -> anyhow::Result<()> {
    let started = Instant::now();
    let peers = resolve_peers(&args.peers).await?;
    let client = start_client(
        &args.net,
        Duration::from_secs(args.read_timeout),
        args.prefetch,
        args.cache_size,
    )
    .await?;
    let progress: Arc<dyn Fn(&btfs::client::Progress) + Send + Sync> = {
        let last = std::sync::Mutex::new(String::new());
        let dht = !args.net.no_dht;
        Arc::new(move |p| print_progress(&progress_line(p, dht), &last))
    };
    let opts = LookupOptions {
        timeout: Duration::from_secs(args.timeout),
        seed: !args.no_seed,
        peers,
        progress: Some(progress),
    };
    let mutable = match btfs::magnet::parse(&url) {
        Ok(btfs::magnet::Url::Mutable(m)) => Some(m),
        _ => None,
    };
    let follow_opts = LookupOptions {
        progress: None,
        ..opts.clone()
    };
    let looked_up = match &mutable {
        Some(m) => client.lookup_mutable(m, opts).await,
        None => client
            .lookup(&url, opts)
            .await
            .map(|archive| Version { seq: 0, archive }),
    };
    let version = match looked_up {
        Ok(v) => v,
        Err(e) => {
            if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                eprintln!();
            }
            client.stop().await;
            bail!("{}", one_line(&anyhow::Error::new(e)));
        }
    };
    let archive = version.archive.clone();
    // The final state of the progress line.
    let s = archive.stats();
    eprintln!(
        "\rbtfs-mount: {} peers found ({}), {} connected, {} metadata bytes    ",
        s.peers_known,
        sources(&s.by_source),
        s.peers_connected,
        archive.info().raw.len()
    );
    if mutable.is_some() {
        eprintln!(
            "btfs-mount: {url} is at seq {}: {}",
            version.seq,
            archive.magnet()
        );
    }
    eprintln!(
        "btfs-mount: {} ({} files, {} bytes) resolved in {:.2} s; mounting on {}",
        archive.info().name,
        archive.info().files.iter().filter(|f| !f.pad).count(),
        archive.info().total_length,
        started.elapsed().as_secs_f64(),
        mountpoint.display()
    );
    let rt = tokio::runtime::Handle::current();
    let fs_options = btfs::fuse::FsOptions {
        passthrough: !args.no_passthrough,
    };
    let session = match &mutable {
        None => btfs::fuse::spawn_mount_with(archive.clone(), &mountpoint, rt, fs_options),
        Some(m) => {
            let c = client.clone();
            let retire: btfs::fuse::Retire = Arc::new(move |a: &btfs::Archive| c.close(a));
            btfs::fuse::spawn_mount_mutable_with(
                archive.clone(),
                &mountpoint,
                rt,
                retire,
                fs_options,
            )
            .map(|(session, switcher)| {
                if args.refresh > 0 {
                    let mut updates = client.follow(
                        m.clone(),
                        &version,
                        follow_opts,
                        Duration::from_secs(args.refresh),
                    );
                    tokio::spawn(async move {
                        while let Some(v) = updates.recv().await {
                            switcher.switch(v.archive);
                        }
                    });
                }
                session
            })
        }
    }
    .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    // The tree is visible once the mountpoint lists.
    let mp = mountpoint.clone();
    tokio::task::spawn_blocking(move || std::fs::read_dir(&mp).map(|d| d.count()))
        .await?
        .with_context(|| format!("the mount on {} does not answer", mountpoint.display()))?;
    // The FUSE connection id, to abort a busy mount on shutdown.
    let dev = std::fs::metadata(&mountpoint).ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.dev()
    });
    let cache_dir = args
        .net
        .cache_dir
        .clone()
        .unwrap_or_else(btfs::client::default_cache_dir);
    report_ready(
        &cache_dir
            .join(archive.info_hash().to_hex())
            .join("btfs-mount.log"),
    );
    wait_for_unmount(session, &mountpoint, dev, Some(&client)).await;
    client.stop().await;
    Ok(())
}

/// Tells a waiting parent that the mount is up, then detaches from the
/// terminal: stdout goes to /dev/null and stderr (the log: why a read
/// failed, which peers were dropped) is appended to `log`.
fn report_ready(log: &Path) {
    report_ready_to(log, false);
}

/// [`report_ready`]; with `stdout_to_log` stdout goes to the log too (a
/// writable mount prints its magnet there after unmount: the caller's
/// stdout is never kept, so `$(btfs-mount ...)` returns once mounted).
fn report_ready_to(log: &Path, stdout_to_log: bool) {
    let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return;
    };
    // SAFETY: the parent passed us this fd; we own it from here on.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    let _ = f.write_all(b"ready\n");
    drop(f);
    use std::os::fd::AsRawFd;
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log);
        let target = logf.as_ref().map_or(null.as_raw_fd(), |l| l.as_raw_fd());
        let out = if stdout_to_log {
            target
        } else {
            null.as_raw_fd()
        };
        // SAFETY: dup2 onto standard fds.
        unsafe {
            libc::dup2(out, 1);
            libc::dup2(target, 2);
        }
    }
}

/// Returns when the filesystem is unmounted (by `fusermount3 -u`), or
/// unmounts on SIGINT/SIGTERM: the engine stops first, so reads blocked on
/// pieces return EIO at once; a mount still busy after that is detached
/// lazily and its FUSE connection aborted, so neither readers nor this
/// process hang. `client` is None when the engine must keep running after
/// the unmount (a writable mount seeds its result).
async fn wait_for_unmount(
    session: fuser::BackgroundSession,
    mountpoint: &Path,
    dev: Option<u64>,
    client: Option<&Client>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    let mut hup = signal(SignalKind::hangup()).expect("signal handler");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if session.guard.is_finished() {
                    tracing::info!("{} was unmounted", mountpoint.display());
                    // Already unmounted: dropping the session would try again.
                    std::mem::forget(session);
                    return;
                }
                if !in_mount_table(mountpoint) {
                    tracing::info!(
                        "{} was detached while in use; failing pending reads",
                        mountpoint.display()
                    );
                    if let Some(client) = client {
                        client.stop().await;
                    }
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while !session.guard.is_finished() && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    return;
                }
            }
        }
    }
    tracing::info!("unmounting {}", mountpoint.display());
    if let Some(client) = client {
        client.stop().await;
    }
    let mp = mountpoint.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || unmount(&mp, dev)).await;
    for _ in 0..50 {
        if session.guard.is_finished() {
            std::mem::forget(session);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(
        "the FUSE session of {} did not end; exiting anyway",
        mountpoint.display()
    );
    std::mem::forget(session); // dropping it would try to unmount again
}

/// Unmounts `mp`; when it is busy, detaches it lazily and aborts its FUSE
/// connection (`/sys/fs/fuse/connections/<minor>/abort`, root only), so
/// every pending and future request fails instead of hanging.
fn unmount(mp: &Path, dev: Option<u64>) {
    let Ok(c) = std::ffi::CString::new(mp.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: umount2 with a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return;
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EPERM) {
        // Not root: fusermount3 does it for the mount's owner.
        let ok = std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(mp)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            detach(mp);
        }
        return;
    }
    tracing::warn!(
        "{} is busy ({err}); detaching it and aborting its FUSE connection",
        mp.display()
    );
    detach(mp);
    if let Some(dev) = dev {
        let minor = libc::minor(dev);
        let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
    }
}

async fn dht_command(cmd: DhtCommand) -> anyhow::Result<()> {
    match cmd {
        DhtCommand::GetPeers {
            info_hash,
            net,
            timeout,
        } => {
            let ih = btfs::InfoHash::from_hex(&info_hash)
                .ok_or_else(|| anyhow::anyhow!("info-hash must be 40 hex characters"))?;
            let client = start_client(&net, Duration::from_secs(60), false, None).await?;
            let dht = client.dht().context("the DHT is off (--no-dht)")?.clone();
            dht.bootstrap().await;
            let mut seen = std::collections::HashSet::<SocketAddr>::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            let mut rx = dht.get_peers(ih);
            let mut out = std::io::stdout();
            while let Ok(Some(batch)) = tokio::time::timeout_at(deadline, rx.recv()).await {
                for p in batch {
                    if seen.insert(p) {
                        writeln!(out, "{p}")?;
                        out.flush()?;
                    }
                }
            }
            client.stop().await;
            if seen.is_empty() {
                if dht.stats().nodes == 0 {
                    bail!("no DHT node answered (check --bootstrap); no peers found for {ih}");
                }
                bail!(
                    "no peers found for {ih} ({} DHT nodes known)",
                    dht.stats().nodes
                );
            }
            Ok(())
        }
        DhtCommand::Get {
            public_key,
            salt,
            net,
            timeout,
        } => {
            let mut pk = [0u8; 32];
            hex::decode_to_slice(&public_key, &mut pk)
                .map_err(|_| anyhow::anyhow!("public key must be 64 hex characters"))?;
            let salt = hex::decode(&salt).map_err(|_| anyhow::anyhow!("--salt must be hex"))?;
            let client = start_client(&net, Duration::from_secs(60), false, None).await?;
            let dht = client.dht().context("the DHT is off (--no-dht)")?.clone();
            dht.bootstrap().await;
            let report = tokio::time::timeout(
                Duration::from_secs(timeout),
                dht.get_mutable_report(pk, &salt),
            )
            .await
            .ok();
            client.stop().await;
            let report = report.ok_or_else(|| {
                anyhow::anyhow!("the DHT lookup did not finish within {timeout} s")
            })?;
            let item = match report.item {
                Some(i) => i,
                None if report.refused > 0 => bail!(
                    "{} items found, none with a valid signature for this key and salt",
                    report.refused
                ),
                None => bail!(
                    "no item found for this key and salt ({} DHT nodes answered)",
                    report.answered
                ),
            };
            println!("seq {}", item.seq);
            println!("{}", btfs::dht::format_value(&item.value));
            Ok(())
        }
    }
}

/// `btfs-mount keygen --out FILE`: a new key in a new 0600 file.
fn keygen(out: &Path, salt: &str) -> anyhow::Result<()> {
    let salt = parse_salt(salt)?;
    let kp = Keypair::generate();
    kp.to_file(out)?;
    let url = btfs::magnet::MutableUrl {
        public_key: kp.public_key(),
        salt,
    };
    eprintln!("btfs-mount: secret key written to {}", out.display());
    println!("public key  {}", hex::encode(kp.public_key()));
    println!("mutable URL {}", url.to_url());
    Ok(())
}

/// A size in bytes: digits with an optional suffix K, M, G or T (powers of
/// 1024; `KiB`, `MB`... are read the same).
fn parse_size(s: &str) -> Result<u64, String> {
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

/// A `--salt` argument: hex, at most 64 bytes.
fn parse_salt(salt: &str) -> anyhow::Result<Vec<u8>> {
    let s = hex::decode(salt.trim()).map_err(|_| anyhow::anyhow!("--salt must be hex"))?;
    if s.len() > btfs::magnet::MAX_SALT_LEN {
        bail!(
            "--salt is {} bytes; BEP 44 allows {}",
            s.len(),
            btfs::magnet::MAX_SALT_LEN
        );
    }
    Ok(s)
}

/// `btfs-mount publish TARGET --key FILE [--salt HEX] [--once]`.
async fn publish(
    target: String,
    key: PathBuf,
    salt: String,
    once: bool,
    net: NetArgs,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let salt = parse_salt(&salt)?;
    let kp = Keypair::from_file(&key)?;
    let client = start_client(&net, Duration::from_secs(60), false, None).await?;
    let published = match client.publish_item(&target, &kp, &salt).await {
        Ok(p) => p,
        Err(e) => {
            client.stop().await;
            bail!("{e}");
        }
    };
    println!("{}", published.url);
    std::io::stdout().flush()?;
    eprintln!(
        "btfs-mount: seq {} (previous: {}) -> {} stored on {} DHT nodes",
        published.item.seq,
        published
            .previous_seq
            .map_or_else(|| "none".to_string(), |s| s.to_string()),
        published.info_hash,
        published.nodes
    );
    if once {
        client.stop().await;
        return Ok(());
    }
    eprintln!("btfs-mount: keeping the item alive (put again every 30 minutes); Ctrl-C stops");
    let mut term = signal(SignalKind::terminate()).context("signal handler")?;
    let mut int = signal(SignalKind::interrupt()).context("signal handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep(REPUBLISH_EVERY) => {
                match client.republish(&published.item).await {
                    Ok(n) => tracing::info!("seq {} put again on {n} DHT nodes", published.item.seq),
                    Err(e) => eprintln!("btfs-mount: {e}"),
                }
            }
        }
    }
    client.stop().await;
    Ok(())
}

/// Whether `mp` is a mount point of a btfs-mount filesystem in our mount
/// namespace (per `/proc/self/mountinfo`). True when it cannot be read.
fn in_mount_table(mp: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return true;
    };
    let want = mp.to_string_lossy();
    info.lines().any(|l| {
        let mut f = l.split(' ');
        let point = f.nth(4).map(unescape_mountinfo);
        let source = l.split(" - ").nth(1).and_then(|r| r.split(' ').nth(1));
        point.as_deref() == Some(&*want) && source == Some("btfs-mount")
    })
}

/// Decodes the octal escapes (`\040` for a space) of mountinfo fields.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
