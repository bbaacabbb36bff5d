//! The write side of the command line: `btfs-mount seed PATH` and
//! `btfs-mount --writable [URL] MNT` (make a torrent, seed it, optionally
//! publish it as a BEP 46 mutable item, keep seeding until Ctrl-C).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use btfs::client::{Client, LookupOptions, Published};
use btfs::keypair::Keypair;
use btfs::staging::{Draft, DraftMeta};

use super::{
    MountArgs, NetArgs, REPUBLISH_EVERY, parse_salt, report_ready_to, start_client,
    wait_for_unmount,
};

/// How soon a failed publish is tried again.
const PUBLISH_RETRY: Duration = Duration::from_secs(60);

/// A hashing progress callback that prints `hashing X of Y MiB (P%)` on
/// stderr at most twice a second, once hashing has taken 0.5 s.
fn hashing_progress() -> Box<dyn FnMut(u64, u64) + Send> {
    let started = Instant::now();
    let mut last = Instant::now();
    let mut printed = false;
    Box::new(move |done, total| {
        let now = Instant::now();
        let end = done == total;
        if (now.duration_since(last) >= Duration::from_millis(500)
            && started.elapsed() >= Duration::from_millis(500))
            || (end && printed)
        {
            last = now;
            printed = true;
            eprint!(
                "\rbtfs-mount: hashing {:.1} of {:.1} MiB ({}%)   ",
                done as f64 / 1048576.0,
                total as f64 / 1048576.0,
                (done * 100).checked_div(total).unwrap_or(100)
            );
            if end {
                eprintln!();
            }
        }
    })
}

/// `btfs-mount seed PATH [--key FILE] [--salt HEX]`.
pub(crate) async fn seed(
    path: PathBuf,
    key: Option<PathBuf>,
    salt: String,
    net: NetArgs,
) -> anyhow::Result<()> {
    let salt = parse_salt(&salt)?;
    let kp = key.as_deref().map(Keypair::from_file).transpose()?;
    let p = path.clone();
    let scan = tokio::task::spawn_blocking(move || btfs::create::scan_dir(&p))
        .await?
        .with_context(|| format!("cannot seed {}", path.display()))?;
    for (p, why) in &scan.skipped {
        eprintln!("btfs-mount: skipping {}: {why}", p.display());
    }
    let client = start_client(&net, Duration::from_secs(60), false, None).await?;
    let archive = match client
        .seed_content(scan.content, Some(hashing_progress()))
        .await
    {
        Ok(a) => a,
        Err(e) => {
            client.stop().await;
            bail!("cannot seed {}: {e}", path.display());
        }
    };
    seed_until_stopped(&client, &archive, kp.map(|k| (k, salt))).await
}

/// Prints `archive`'s magnet (stdout, first line), publishes it under the
/// key if given (the mutable URL as the second stdout line), then seeds and
/// keeps the item alive until SIGINT or SIGTERM.
async fn seed_until_stopped(
    client: &Client,
    archive: &btfs::Archive,
    key: Option<(Keypair, Vec<u8>)>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let magnet = archive.magnet();
    println!("{magnet}");
    std::io::stdout().flush()?;
    let info = archive.info();
    eprintln!(
        "btfs-mount: seeding {:?}: {} files, {} bytes, info-hash {}, peer port {}; Ctrl-C stops",
        info.name,
        info.files.len(),
        info.total_length,
        archive.info_hash(),
        client.peer_port()
    );
    let mut term = signal(SignalKind::terminate()).context("signal handler")?;
    let mut int = signal(SignalKind::interrupt()).context("signal handler")?;
    let mut published: Option<Published> = None;
    let mut next_put = tokio::time::Instant::now();
    loop {
        if let Some((kp, salt)) = &key
            && tokio::time::Instant::now() >= next_put
        {
            match &published {
                None => match client.publish_item(&magnet, kp, salt).await {
                    Ok(p) => {
                        println!("{}", p.url);
                        std::io::stdout().flush()?;
                        eprintln!(
                            "btfs-mount: published seq {} (previous: {}) on {} DHT nodes",
                            p.item.seq,
                            p.previous_seq
                                .map_or_else(|| "none".to_string(), |s| s.to_string()),
                            p.nodes
                        );
                        published = Some(p);
                        next_put = tokio::time::Instant::now() + REPUBLISH_EVERY;
                    }
                    Err(e) => {
                        eprintln!("btfs-mount: {e}; trying again in a minute");
                        next_put = tokio::time::Instant::now() + PUBLISH_RETRY;
                    }
                },
                Some(p) => {
                    match client.republish(&p.item).await {
                        Ok(n) => tracing::info!("seq {} put again on {n} DHT nodes", p.item.seq),
                        Err(e) => eprintln!("btfs-mount: {e}"),
                    }
                    next_put = tokio::time::Instant::now() + REPUBLISH_EVERY;
                }
            }
        }
        let wait = if key.is_some() {
            next_put
        } else {
            tokio::time::Instant::now() + REPUBLISH_EVERY
        };
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tokio::time::sleep_until(wait) => {}
        }
    }
    client.stop().await;
    Ok(())
}

/// The base torrent of a draft: a magnet link or mutable URL looked up.
async fn lookup_base(
    client: &Client,
    url: &str,
    args: &MountArgs,
) -> anyhow::Result<btfs::Archive> {
    let opts = LookupOptions {
        timeout: Duration::from_secs(args.timeout),
        seed: !args.no_seed,
        peers: crate::resolve_peers(&args.peers).await?,
        ..Default::default()
    };
    let r = match btfs::magnet::parse(url).map_err(|e| anyhow::anyhow!("{e}"))? {
        btfs::magnet::Url::Mutable(m) => {
            let v = client.lookup_mutable(&m, opts).await;
            v.map(|v| {
                eprintln!(
                    "btfs-mount: {url} is at seq {}: {}",
                    v.seq,
                    v.archive.magnet()
                );
                v.archive
            })
        }
        btfs::magnet::Url::Magnet(_) => client.lookup(url, opts).await,
    };
    r.map_err(|e| anyhow::anyhow!("{e}"))
}

/// `btfs-mount --writable [URL] MNT [--resume] [--key FILE] [--salt HEX]`,
/// in the foreground (or the background child).
pub(crate) async fn mount_writable(args: MountArgs, mountpoint: PathBuf) -> anyhow::Result<()> {
    let kp = args.key.as_deref().map(Keypair::from_file).transpose()?;
    let mutable = match args.url.as_deref().map(btfs::magnet::parse) {
        Some(Ok(btfs::magnet::Url::Mutable(m))) => Some(m),
        _ => None,
    };
    if let (Some(kp), Some(m)) = (&kp, &mutable)
        && kp.public_key() != m.public_key
    {
        bail!(
            "--key is not the key of {}: its new version could not be published there",
            m.to_url()
        );
    }
    let salt = match (&args.salt, &mutable) {
        (Some(s), _) => parse_salt(s)?,
        (None, Some(m)) => m.salt.clone(),
        (None, None) => Vec::new(),
    };
    let client = start_client(
        &args.net,
        Duration::from_secs(args.read_timeout),
        args.prefetch,
        args.cache_size,
    )
    .await?;
    let r = open_draft(&client, &args, &mountpoint).await;
    let draft = match r {
        Ok(d) => Arc::new(d),
        Err(e) => {
            client.stop().await;
            return Err(e);
        }
    };
    let session = btfs::fuse_writable::spawn_mount(
        draft.clone(),
        &mountpoint,
        tokio::runtime::Handle::current(),
    )
    .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
    let mp = mountpoint.clone();
    tokio::task::spawn_blocking(move || std::fs::read_dir(&mp).map(|d| d.count()))
        .await?
        .with_context(|| format!("the mount on {} does not answer", mountpoint.display()))?;
    // Beside the draft, not in it: the draft directory goes once published.
    let log = draft.dir().with_extension("log");
    let background = std::env::var_os(crate::READY_FD_ENV).is_some();
    eprintln!(
        "btfs-mount: {} is writable (changes staged in {}); unmount to publish{}",
        mountpoint.display(),
        draft.dir().display(),
        if background {
            format!(
                "; the magnet link and the log go to {} (-f prints them here)",
                log.display()
            )
        } else {
            String::new()
        }
    );
    let dev = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&mountpoint).ok().map(|m| m.dev())
    };
    report_ready_to(&log, true);
    wait_for_unmount(session, &mountpoint, dev, None).await;

    let content = match draft.content().await {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "btfs-mount: {e}; nothing published (the draft stays in {})",
                draft.dir().display()
            );
            client.stop().await;
            return Ok(());
        }
        Err(e) => {
            client.stop().await;
            bail!(
                "cannot build the torrent: {e} (the draft stays in {}; mount it again with --resume)",
                draft.dir().display()
            );
        }
    };
    match draft.prune_data() {
        Ok(0) => {}
        Ok(n) => tracing::info!("{n} unused staged files deleted"),
        Err(e) => tracing::warn!("cannot delete unused staged files: {e}"),
    }
    let cache = args
        .net
        .cache_dir
        .clone()
        .unwrap_or_else(btfs::client::default_cache_dir);
    let archive = match publish_into_cache(&client, content, &cache).await {
        Ok((a, installed)) => {
            if installed {
                // Every byte is in the cache now: the draft is done.
                if let Err(e) = std::fs::remove_dir_all(draft.dir()) {
                    tracing::warn!("cannot delete {}: {e}", draft.dir().display());
                }
            } else if let Err(e) = draft.mark_published(&a.magnet()) {
                eprintln!("btfs-mount: cannot mark the draft published: {e}");
            }
            a
        }
        Err(e) => {
            client.stop().await;
            bail!(
                "cannot build the torrent: {e} (the draft stays in {})",
                draft.dir().display()
            );
        }
    };
    seed_until_stopped(&client, &archive, kp.map(|k| (k, salt))).await
}

/// Hashes `content` into a new torrent, installs it into the file cache
/// (`<cache>/<info-hash>/`, see [`btfs::create::install`]) and seeds it
/// from there. When the install fails (a full disk), seeds from the
/// sources instead and says so; the bool tells which happened.
async fn publish_into_cache(
    client: &Client,
    content: btfs::create::Content,
    cache: &Path,
) -> anyhow::Result<(btfs::Archive, bool)> {
    let cache = cache.to_path_buf();
    let mut progress = hashing_progress();
    let (built, installed) = tokio::task::spawn_blocking(move || {
        let built = btfs::create::build(&content, &mut *progress)?;
        let dir = cache.join(built.info_hash.to_hex());
        let installed = btfs::create::install(&content, &built, &dir)
            .map_err(|e| {
                eprintln!(
                    "btfs-mount: cannot copy the new torrent into the cache ({e}); seeding it from the draft, which is kept"
                );
            })
            .ok();
        Ok::<_, std::io::Error>((built, installed))
    })
    .await??;
    let storage: Arc<dyn btfs::storage::Storage> = match &installed {
        Some(s) => s.clone(),
        None => built.storage.clone(),
    };
    let archive = client
        .seed_torrent(&built.info_raw, storage)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((archive, installed.is_some()))
}

/// The draft to mount: resumed (`--resume`, or an unpublished draft of the
/// same URL and base), or new.
async fn open_draft(client: &Client, args: &MountArgs, mountpoint: &Path) -> anyhow::Result<Draft> {
    let cache = args
        .net
        .cache_dir
        .clone()
        .unwrap_or_else(btfs::client::default_cache_dir);
    if args.resume {
        let (dir, meta) = Draft::find(&cache, |m| m.mountpoint.as_deref() == Some(mountpoint))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no unpublished draft of {} under {}",
                    mountpoint.display(),
                    cache.join("staging").display()
                )
            })?;
        let base = match &meta.base {
            Some(ih) => {
                Some(lookup_base(client, &format!("magnet:?xt=urn:btih:{ih}"), args).await?)
            }
            None => None,
        };
        eprintln!("btfs-mount: resuming the draft in {}", dir.display());
        return Draft::open(&dir, base).with_context(|| format!("draft {}", dir.display()));
    }
    let name = mountpoint
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("draft")
        .to_string();
    let Some(url) = &args.url else {
        let meta = DraftMeta {
            name,
            mountpoint: Some(mountpoint.to_path_buf()),
            ..DraftMeta::named("")
        };
        return Draft::create(&cache, meta, None).context("cannot create the staging directory");
    };
    let base = lookup_base(client, url, args).await?;
    let ih = base.info_hash().to_hex();
    if let Some((dir, _)) = Draft::find(&cache, |m| {
        m.url.as_deref() == Some(url.as_str()) && m.base.as_deref() == Some(ih.as_str())
    }) {
        eprintln!(
            "btfs-mount: resuming the unpublished draft of {url} in {}",
            dir.display()
        );
        let mut d =
            Draft::open(&dir, Some(base)).with_context(|| format!("draft {}", dir.display()))?;
        d.set_mountpoint(mountpoint)?;
        return Ok(d);
    }
    let meta = DraftMeta {
        name: base.info().name.clone(),
        mountpoint: Some(mountpoint.to_path_buf()),
        url: Some(url.clone()),
        ..DraftMeta::named("")
    };
    Draft::create(&cache, meta, Some(base)).context("cannot create the staging directory")
}
