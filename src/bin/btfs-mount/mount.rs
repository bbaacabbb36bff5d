//! `btfs-mount URL MNT`: resolve, mount, serve until unmounted.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use btfs::client::{LookupOptions, Progress, Version};
use btfs::fuse::{Mount, prepare_mountpoint};
use btfs::plural::count;
use btfs::storage::layout::CacheLayout;

use crate::args::MountArgs;
use crate::daemon::{self, Logging};
use crate::{Engine, registry, start_client};

/// Checks the arguments and the mountpoint, goes to the background unless
/// `-f`, then mounts (read-only, or `--writable`).
pub fn main(mut args: MountArgs, logging: &Logging) -> anyhow::Result<()> {
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
            // A bare info-hash becomes its magnet link here, once.
            let parsed = btfs::magnet::parse_arg(url).map_err(|e| anyhow::anyhow!("{e}"))?;
            args.url = Some(parsed.to_string());
        }
        let mountpoint = check_mountpoint(&mountpoint)?;
        if !args.foreground && !daemon::is_background_child() {
            return daemon::spawn_background();
        }
        return crate::run_async(crate::writable::run(args, mountpoint, logging));
    }
    let (Some(url), Some(mountpoint)) = (args.url.clone(), args.mountpoint.clone()) else {
        bail!("usage: btfs-mount [OPTIONS] <URL> <MOUNTPOINT> (see --help)");
    };
    // Check the URL before anything else: a malformed one mounts nothing.
    let parsed = btfs::magnet::parse_arg(&url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mountpoint = check_mountpoint(&mountpoint)?;
    if !args.foreground && !daemon::is_background_child() {
        return daemon::spawn_background();
    }
    crate::run_async(serve(args, parsed, mountpoint, logging))
}

/// [`prepare_mountpoint`], with a warning (once, not again in the
/// background child) when the directory is not empty.
pub fn check_mountpoint(mp: &std::path::Path) -> anyhow::Result<PathBuf> {
    let mp = prepare_mountpoint(mp)?;
    if !daemon::is_background_child() && !btfs::fuse::mount::is_empty_dir(&mp) {
        eprintln!(
            "btfs-mount: warning: {} is not empty; its contents are hidden while mounted",
            mp.display()
        );
    }
    Ok(mp)
}

/// The progress line while the metadata resolves, e.g. `3 DHT nodes, 2
/// peers found (dht 2), 1 connected (IPv4 1, IPv6 0), 1200 metadata bytes;
/// reachable at 203.0.113.11:6881 (UPnP)`.
pub fn progress_line(p: &Progress, dht: bool) -> String {
    let s = &p.swarm;
    let sources = if s.by_source.is_empty() {
        String::new()
    } else {
        let by: Vec<String> = s
            .by_source
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        format!(" ({})", by.join(", "))
    };
    format!(
        "btfs-mount: {}{} found{sources}, {} connected (IPv4 {}, IPv6 {}), {} metadata bytes; {}",
        if dht {
            format!("{}, ", count(p.dht_nodes, "DHT node", "DHT nodes"))
        } else {
            String::new()
        },
        count(s.peers_known, "peer", "peers"),
        s.peers_connected,
        p.peers_v4,
        p.peers_v6,
        s.metadata_bytes,
        p.reach
    )
}

/// The status line of a mounted torrent, for the log, e.g. `status: 2
/// peers connected (IPv4 2, IPv6 0), 40/40 pieces; reachable at
/// 203.0.113.11:6881 (UPnP)`.
pub fn status_line(p: &Progress) -> String {
    let s = &p.swarm;
    format!(
        "status: {} connected (IPv4 {}, IPv6 {}), {}/{}; {}",
        count(s.peers_connected, "peer", "peers"),
        p.peers_v4,
        p.peers_v6,
        s.pieces_have,
        count(s.pieces_total, "piece", "pieces"),
        p.reach
    )
}

/// Logs the status line of `archive` when it is mounted and then each time
/// the reachability or the peer counts change (at most every 10 s), until
/// the client stops.
pub fn log_status(client: btfs::Client, archive: btfs::Archive) {
    tokio::spawn(async move {
        let mut reach = client.reach().subscribe();
        let mut last = None;
        loop {
            let p = client.status(&archive);
            let key = (p.reach.clone(), p.peers_v4, p.peers_v6);
            if last.as_ref() != Some(&key) {
                tracing::info!("{}", status_line(&p));
                last = Some(key);
            }
            tokio::select! {
                r = reach.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
        }
    });
}

/// Prints progress lines on stderr: rewritten in place on a terminal,
/// else one line per change. Remembers the last one (to say, on failure,
/// whether any DHT node ever answered).
#[derive(Default)]
pub struct ProgressPrinter {
    last: Mutex<(String, usize)>,
}

impl ProgressPrinter {
    pub fn callback(self: &Arc<Self>, dht: bool) -> Arc<dyn Fn(&Progress) + Send + Sync> {
        let me = self.clone();
        Arc::new(move |p| me.print(&progress_line(p, dht), p.dht_nodes))
    }

    fn print(&self, line: &str, dht_nodes: usize) {
        use std::io::IsTerminal;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if std::io::stderr().is_terminal() {
            eprint!("\r{line}   ");
        } else if last.0 != line {
            eprintln!("{line}");
        }
        *last = (line.to_string(), last.1.max(dht_nodes));
    }

    /// Ends a line rewritten in place.
    pub fn finish(&self) {
        if std::io::IsTerminal::is_terminal(&std::io::stderr())
            && !self
                .last
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .is_empty()
        {
            eprintln!();
        }
    }

    /// Most DHT nodes ever seen in the routing table.
    pub fn most_dht_nodes(&self) -> usize {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// Why a lookup failed, with the hint that no DHT node ever answered when
/// that is so (a wrong or unreachable `--bootstrap`, or no network) and
/// the failure is one the DHT could explain: nothing found in time. A
/// refused cache or a bad info dictionary gets no such hint.
pub fn lookup_failure(
    e: btfs::client::Error,
    printer: &ProgressPrinter,
    dht: bool,
) -> anyhow::Error {
    use btfs::client::Error;
    use btfs::swarm::MetadataError;
    let not_found = matches!(
        e,
        Error::Metadata(MetadataError::Timeout { .. }) | Error::NoItem { .. }
    );
    let msg = crate::one_line(&anyhow::Error::new(e));
    if dht && not_found && printer.most_dht_nodes() == 0 {
        anyhow::anyhow!("{msg}; no DHT node ever answered (check --bootstrap and the network)")
    } else {
        anyhow::anyhow!("{msg}")
    }
}

/// The lookup options of a mount's arguments.
pub async fn lookup_options(args: &MountArgs) -> anyhow::Result<LookupOptions> {
    Ok(LookupOptions {
        timeout: Duration::from_secs(args.timeout),
        seed: !args.no_seed,
        peers: resolve_peers(&args.peers).await?,
        progress: None,
    })
}

/// The `--peer HOST:PORT` addresses, resolved (the first address of each).
async fn resolve_peers(peers: &[String]) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    let mut out = Vec::new();
    for p in peers {
        let mut addrs = tokio::net::lookup_host(p.as_str())
            .await
            .with_context(|| format!("--peer {p}: not a HOST:PORT"))?;
        out.extend(addrs.next());
    }
    Ok(out)
}

/// Resolves `url`, mounts it on `mountpoint` and serves it until it is
/// unmounted, or until SIGINT/SIGTERM (then unmounts).
async fn serve(
    args: MountArgs,
    parsed: btfs::magnet::Url,
    mountpoint: PathBuf,
    logging: &Logging,
) -> anyhow::Result<()> {
    let url = parsed.to_string();
    let started = Instant::now();
    let stop = crate::stop_signal();
    registry::register("mount", Some(&mountpoint), Some(&url), None);
    registry::update(|e| e.state = "resolving".into());
    let client = start_client(&args.peer, Engine::of(&args.engine)).await?;
    crate::with_client(&client, async {
        let printer = Arc::new(ProgressPrinter::default());
        let dht = !args.peer.no_dht;
        let opts = LookupOptions {
            progress: Some(printer.callback(dht)),
            ..lookup_options(&args).await?
        };
        let mutable = match &parsed {
            btfs::magnet::Url::Mutable(m) => Some(m.clone()),
            btfs::magnet::Url::Magnet(_) => None,
        };
        let follow_opts = LookupOptions {
            progress: None,
            ..opts.clone()
        };
        let looked_up = match &mutable {
            Some(m) => client.lookup_mutable(m, opts).await,
            None => client
                .lookup(&parsed, opts)
                .await
                .map(|archive| Version { seq: 0, archive }),
        };
        printer.finish();
        let version = looked_up.map_err(|e| lookup_failure(e, &printer, dht))?;
        let archive = version.archive.clone();
        let s = archive.stats();
        eprintln!(
            "btfs-mount: {} found, {} connected, {} metadata bytes",
            count(s.peers_known, "peer", "peers"),
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
        let log = CacheLayout::new(args.peer.node.cache())
            .torrent(archive.info_hash())
            .log();
        eprintln!(
            "btfs-mount: {} ({}, {} bytes) resolved in {:.2} s; mounting on {}{}",
            archive.info().name,
            count(
                archive.info().files.iter().filter(|f| !f.pad).count(),
                "file",
                "files"
            ),
            // The files' bytes, as `ls` shows them: BEP 47 pad files left out.
            archive
                .info()
                .files
                .iter()
                .filter(|f| !f.pad)
                .map(|f| f.length)
                .sum::<u64>(),
            started.elapsed().as_secs_f64(),
            mountpoint.display(),
            if daemon::is_background_child() {
                format!("; log: {}", log.display())
            } else {
                String::new()
            }
        );
        let fs_options = btfs::fuse::FsOptions {
            passthrough: !args.no_passthrough,
        };
        let rt = tokio::runtime::Handle::current();
        let (mp, a) = (mountpoint.clone(), archive.clone());
        let mut mount: Mount = match &mutable {
            None => {
                tokio::task::spawn_blocking(move || {
                    btfs::fuse::spawn_mount_with(a, &mp, rt, fs_options)
                })
                .await?
            }
            Some(m) => {
                let c = client.clone();
                let retire: btfs::fuse::Retire = Arc::new(move |a: &btfs::Archive| c.close(a));
                let (mount, switcher) = tokio::task::spawn_blocking(move || {
                    btfs::fuse::spawn_mount_mutable_with(a, &mp, rt, retire, fs_options)
                })
                .await?
                .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
                if args.refresh > 0 {
                    let mut updates = client.follow(
                        m.clone(),
                        &version,
                        follow_opts,
                        Duration::from_secs(args.refresh),
                    );
                    tokio::spawn(async move {
                        while let Some(v) = updates.recv().await {
                            registry::update(|e| e.magnet = Some(v.archive.magnet()));
                            switcher.switch(v.archive);
                        }
                    });
                }
                Ok(mount)
            }
        }
        .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
        registry::update(|e| {
            e.state = "mounted".into();
            e.magnet = Some(archive.magnet());
            e.log = daemon::is_background_child().then(|| log.clone());
        });
        daemon::report_ready(&log, false, logging);
        log_status(client.clone(), archive.clone());
        tokio::select! {
            _ = mount.ended() => {}
            _ = stop => {
                // The engine first, so reads waiting for pieces fail now.
                client.stop().await;
                mount.unmount().await;
            }
        }
        Ok(())
    })
    .await
}
