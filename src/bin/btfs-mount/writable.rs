//! `btfs-mount --writable [URL] MNT`: an editable tree that becomes a new
//! torrent on unmount, seeded and optionally published as the next version
//! of a BEP 46 mutable URL.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};

use btfs::client::Client;
use btfs::keypair::Keypair;
use btfs::staging::{Draft, DraftMeta};
use btfs::storage::layout::CacheLayout;

use crate::args::{MountArgs, parse_salt};
use crate::daemon::{self, Logging};
use crate::seed::{hashing_progress, seed_until_stopped};
use crate::{Engine, registry, start_client};

/// The base torrent of a draft: a magnet link or mutable URL looked up.
async fn lookup_base(
    client: &Client,
    url: &str,
    args: &MountArgs,
) -> anyhow::Result<btfs::Archive> {
    let opts = crate::mount::lookup_options(args).await?;
    let parsed = btfs::magnet::parse_arg(url).map_err(|e| anyhow::anyhow!("{e}"))?;
    let r = match &parsed {
        btfs::magnet::Url::Mutable(m) => {
            let v = client.lookup_mutable(m, opts).await;
            v.map(|v| {
                eprintln!(
                    "btfs-mount: {url} is at seq {}: {}",
                    v.seq,
                    v.archive.magnet()
                );
                v.archive
            })
        }
        btfs::magnet::Url::Magnet(_) => client.lookup(&parsed, opts).await,
    };
    r.map_err(|e| anyhow::anyhow!("{e}"))
}

/// `btfs-mount --writable [URL] MNT [--resume] [--key FILE] [--salt HEX]`,
/// in the foreground (or the background child): mount the draft, and on
/// unmount (or SIGINT/SIGTERM) make its torrent, seed it, publish it.
pub async fn run(args: MountArgs, mountpoint: PathBuf, logging: &Logging) -> anyhow::Result<()> {
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
    let stop = crate::stop_signal();
    registry::register("writable", Some(&mountpoint), args.url.as_deref(), None);
    let client = start_client(&args.peer, Engine::of(&args.engine)).await?;
    crate::with_client(&client, async {
        let draft = Arc::new(open_draft(&client, &args, &mountpoint).await?);
        let (d, mp, rt) = (
            draft.clone(),
            mountpoint.clone(),
            tokio::runtime::Handle::current(),
        );
        let mut mount =
            tokio::task::spawn_blocking(move || btfs::fuse_writable::spawn_mount(d, &mp, rt))
                .await?
                .with_context(|| format!("cannot mount on {}", mountpoint.display()))?;
        // Beside the draft, not in it: the draft directory goes once published.
        let log = draft.log_path();
        let background = daemon::is_background_child();
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
        registry::update(|e| {
            e.state = "mounted".into();
            e.log = background.then(|| log.clone());
        });
        daemon::report_ready(&log, true, logging);
        // A signal unmounts (which publishes); the next one stops seeding.
        tokio::pin!(stop);
        tokio::select! {
            _ = mount.ended() => {}
            _ = &mut stop => mount.unmount().await,
        }
        registry::update(|e| e.state = "publishing".into());
        let stop = crate::stop_signal();

        let content = match draft.content().await {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                eprintln!(
                    "btfs-mount: {e}; nothing published (the draft stays in {})",
                    draft.dir().display()
                );
                return Ok(());
            }
            Err(e) => bail!(
                "cannot build the torrent: {e} (the draft stays in {}; mount it again with --resume)",
                draft.dir().display()
            ),
        };
        match draft.prune_data() {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                "{} deleted",
                btfs::plural::count(n, "unused staged file", "unused staged files")
            ),
            Err(e) => tracing::warn!("cannot delete unused staged files: {e}"),
        }
        let (archive, installed) = client
            .seed_into_cache(
                content,
                crate::seed::format(args.v1_only),
                Some(hashing_progress()),
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot build the torrent: {e} (the draft stays in {})",
                    draft.dir().display()
                )
            })?;
        if !installed {
            eprintln!(
                "btfs-mount: cannot copy the new torrent into the cache (see the log); seeding it from the draft, which is kept"
            );
        }
        if installed {
            // Every byte is in the cache now: the draft is done.
            if let Err(e) = std::fs::remove_dir_all(draft.dir()) {
                tracing::warn!("cannot delete {}: {e}", draft.dir().display());
            }
        } else if let Err(e) = draft.mark_published(&archive.magnet()) {
            eprintln!("btfs-mount: cannot mark the draft published: {e}");
        }
        seed_until_stopped(&client, &archive, kp.map(|k| (k, salt)), stop).await
    })
    .await
}

/// The draft to mount: resumed (`--resume`, or an unpublished draft of the
/// same URL and base), or new.
async fn open_draft(client: &Client, args: &MountArgs, mountpoint: &Path) -> anyhow::Result<Draft> {
    let cache = args.peer.node.cache();
    if args.resume {
        let (dir, meta) = Draft::find(&cache, |m| m.mountpoint.as_deref() == Some(mountpoint))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no unpublished draft of {} under {}",
                    mountpoint.display(),
                    CacheLayout::new(&cache).staging().display()
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
