//! `btfs-mount`: mount a magnet link or BEP 46 mutable URL as a directory,
//! seed a directory, publish under a key.
//!
//! A thin adapter over the `btfs` library: the arguments ([`args`]), going
//! to the background and the log ([`daemon`]), the progress line, and one
//! small module per command. Mount lifecycles, drafts and publishing are
//! the library's ([`btfs::fuse::Mount`], [`btfs::staging::Draft`],
//! [`btfs::Client`]).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use btfs::StorageKind;
use btfs::client::Client;

mod args;
mod daemon;
mod dht;
mod list;
mod mount;
mod publish;
mod registry;
mod seed;
mod serve;
mod writable;

use args::{Cli, Command, NodeArgs, PeerArgs};

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
    let logging = daemon::Logging::init(cli.mount.verbose);
    let result = match cli.command {
        Some(Command::Dht { command, dht }) => run_async(dht::run(command, dht.into())),
        Some(Command::Keygen { out, salt }) => publish::keygen(&out, &salt),
        Some(Command::Publish {
            target,
            key,
            salt,
            once,
            node,
        }) => run_async(publish::run(target, key, salt, once, node)),
        Some(Command::Seed {
            path,
            v1_only,
            key,
            salt,
            peer,
        }) => run_async(seed::run(path, v1_only, key, salt, peer)),
        Some(Command::Serve(args)) => serve::main(*args, &logging),
        Some(Command::List) => list::list(),
        Some(Command::Stop { target, timeout }) => {
            list::stop(&target, Duration::from_secs(timeout))
        }
        None => mount::main(cli.mount, &logging),
    };
    registry::unregister();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("btfs-mount: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
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

fn run_async<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// What a client is started with, besides its network flags.
#[derive(Default)]
struct Engine {
    read_timeout: Option<Duration>,
    prefetch: bool,
    cache_size: Option<u64>,
}

impl Engine {
    /// The settings given by a mount's or `serve`'s options.
    fn of(args: &args::EngineArgs) -> Engine {
        Engine {
            read_timeout: Some(Duration::from_secs(args.read_timeout)),
            prefetch: args.prefetch,
            cache_size: args.cache_size,
        }
    }
}

/// Starts the engine with the node flags only (no peers: `publish`, `dht`).
async fn start_dht_client(node: &NodeArgs) -> anyhow::Result<Client> {
    let peer = PeerArgs {
        node: node.clone(),
        no_lsd: true,
        no_port_mapping: true,
        ..PeerArgs::default()
    };
    start_client(&peer, Engine::default()).await
}

/// Starts the engine with the network flags `peer` and `engine`'s settings.
async fn start_client(peer: &PeerArgs, engine: Engine) -> anyhow::Result<Client> {
    let mut b = Client::builder()
        .cache_size(engine.cache_size)
        .memory_limit(peer.memory_limit)
        .dht(!peer.no_dht)
        .lsd(!peer.no_lsd)
        .lsd_interface(peer.lsd_interface)
        .encryption(peer.encryption)
        .utp(!peer.no_utp)
        .port_mapping(!peer.no_port_mapping)
        .dht_port(peer.node.dht_port)
        .peer_port(peer.port)
        .read_timeout(engine.read_timeout.unwrap_or(Duration::from_secs(60)))
        .prefetch(engine.prefetch);
    if !peer.node.bootstrap.is_empty() {
        b = b.bootstrap(peer.node.bootstrap.clone());
    }
    if let Some(dir) = peer.node.cache_dir.clone() {
        b = b.storage(StorageKind::Files(dir));
    }
    b.start().await.context("cannot start the client")
}

/// Runs `f` with `client`, then stops the client whatever `f` returned.
async fn with_client<T>(
    client: &Client,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let r = f.await;
    client.stop().await;
    r
}

/// A future that resolves at the first SIGINT or SIGTERM after this call
/// (SIGHUP is ignored: a background process has no terminal to lose). The
/// handlers are installed now, so a signal that arrives before the future
/// is first polled is not lost: create it once, before the work it ends.
fn stop_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("signal handler");
    let mut int = signal(SignalKind::interrupt()).expect("signal handler");
    let mut hup = signal(SignalKind::hangup()).expect("signal handler");
    async move {
        loop {
            tokio::select! {
                _ = term.recv() => return,
                _ = int.recv() => return,
                _ = hup.recv() => {}
            }
        }
    }
}
