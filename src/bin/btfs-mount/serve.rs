//! `btfs-mount serve [--http ADDR] [--mount DIR]`: one process, many
//! archives, through the library's [`btfs::gateway`] (HTTP) and
//! [`btfs::fuse::root`] (FUSE), sharing one [`btfs::manager::Manager`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use btfs::client::LookupOptions;
use btfs::gateway::{Gateway, GatewayConfig};
use btfs::keypair::Keypair;
use btfs::manager::{Manager, ManagerConfig};
use btfs::storage::layout::CacheLayout;

use crate::args::ServeArgs;
use crate::daemon::{self, Logging};
use crate::{Engine, registry, start_client};

/// Checks the flags, the keys and the mountpoint, goes to the background
/// unless `-f`, then serves until stopped.
pub fn main(args: ServeArgs, logging: &Logging) -> anyhow::Result<()> {
    if args.no_http && args.mount.is_none() {
        bail!("--no-http needs --mount DIR: there would be nothing to serve");
    }
    if !args.no_http && !args.http.ip().is_loopback() && !args.allow_remote {
        bail!(
            "--http {} is reachable from the network: anyone there could read every archive \
             this machine can reach, and make it download them; pass --allow-remote to mean it",
            args.http
        );
    }
    let keys = load_keys(&args.keys)?;
    let mountpoint = match &args.mount {
        Some(m) => Some(crate::mount::check_mountpoint(m)?),
        None => None,
    };
    if !args.foreground && !daemon::is_background_child() {
        return daemon::spawn_background();
    }
    crate::run_async(run(args, keys, mountpoint, logging))
}

/// The `--key` files, each refused at once when unreadable.
fn load_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<Keypair>> {
    paths
        .iter()
        .map(|p| Keypair::from_file(p).with_context(|| format!("--key {}", p.display())))
        .collect()
}

async fn run(
    args: ServeArgs,
    keys: Vec<Keypair>,
    mountpoint: Option<PathBuf>,
    logging: &Logging,
) -> anyhow::Result<()> {
    let stop = crate::stop_signal();
    let url = (!args.no_http).then(|| format!("http://{}/", args.http));
    registry::register("serve", mountpoint.as_deref(), url.as_deref(), None);
    let client = start_client(&args.peer, Engine::of(&args.engine)).await?;
    crate::with_client(&client, async {
        let mut peers = Vec::new();
        for p in &args.peers {
            let mut a = tokio::net::lookup_host(p.as_str())
                .await
                .with_context(|| format!("--peer {p}"))?;
            peers.extend(a.next());
        }
        let manager = Manager::new(
            client.clone(),
            ManagerConfig {
                lookup: LookupOptions {
                    timeout: Duration::from_secs(args.timeout),
                    seed: !args.no_seed,
                    peers,
                    progress: None,
                },
                idle: Duration::from_secs(args.idle),
                refresh: Duration::from_secs(args.refresh),
            },
        );
        let cache = args.peer.node.cache();
        let layout = CacheLayout::new(&cache);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let mut http_task = None;
        if !args.no_http {
            let listener = tokio::net::TcpListener::bind(args.http)
                .await
                .with_context(|| format!("cannot listen on {} (--http)", args.http))?;
            let addr = listener.local_addr()?;
            let token = btfs::gateway::new_token()?;
            let token_path = layout.serve_token();
            btfs::gateway::write_token(&token_path, &token)
                .with_context(|| format!("cannot write {}", token_path.display()))?;
            let allow_writes = addr.ip().is_loopback() || args.allow_remote_writes;
            let gw = Gateway::new(
                manager.clone(),
                GatewayConfig {
                    allow_writes,
                    token,
                    keys,
                    cache_dir: cache.clone(),
                },
            );
            http_task = Some(tokio::spawn(btfs::gateway::serve(listener, gw, async {
                let _ = done_rx.await;
            })));
            eprintln!(
                "btfs-mount: serving http://{addr}/ (archives at /bt/<info-hash>/ and /bt/<public key>/); \
                 the write token is in {}{}",
                token_path.display(),
                if allow_writes { "" } else { " (writes are refused on this address)" }
            );
            registry::update(|e| e.url = Some(format!("http://{addr}/")));
        }
        let mut mount = None;
        if let Some(mp) = &mountpoint {
            let (m, mp2, rt) = (manager.clone(), mp.clone(), tokio::runtime::Handle::current());
            let options = btfs::fuse::FsOptions {
                passthrough: !args.no_passthrough,
            };
            let mounted = tokio::task::spawn_blocking(move || {
                btfs::fuse::root::spawn_root(m, &mp2, rt, options)
            })
            .await?
            .with_context(|| format!("cannot mount on {}", mp.display()))?;
            eprintln!(
                "btfs-mount: FUSE root on {} ({}/<info-hash>/ opens an archive)",
                mp.display(),
                mp.display()
            );
            mount = Some(mounted);
        }
        let log = layout.serve_log();
        registry::update(|e| {
            e.state = "serving".into();
            e.log = daemon::is_background_child().then(|| log.clone());
        });
        if daemon::is_background_child() {
            eprintln!("btfs-mount: log: {}", log.display());
        }
        daemon::report_ready(&log, false, logging);
        let ended = async {
            match mount.as_mut() {
                Some(m) => {
                    m.ended().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = stop => {}
            _ = ended => tracing::info!("the FUSE root was unmounted; stopping"),
        }
        let _ = done_tx.send(());
        manager.close_all();
        client.stop().await;
        if let Some(m) = mount {
            m.unmount().await;
        }
        if let Some(t) = http_task {
            // Answers in flight end with the engine; do not wait on a stuck one.
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        Ok(())
    })
    .await
}
