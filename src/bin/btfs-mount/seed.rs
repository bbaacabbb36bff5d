//! `btfs-mount seed PATH`: make a torrent of a directory and seed it; and
//! the seeding loop a writable mount ends in.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use btfs::client::Client;
use btfs::keepalive::{Event, KeepAlive};
use btfs::keypair::Keypair;

use crate::args::{PeerArgs, parse_salt};
use crate::{Engine, registry, start_client};

/// A hashing progress callback that prints `hashing X of Y MiB (P%)` on
/// stderr at most twice a second, once hashing has taken 0.5 s.
pub fn hashing_progress() -> Box<dyn FnMut(u64, u64) + Send> {
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

/// `btfs-mount seed PATH [--v1-only] [--key FILE] [--salt HEX]`.
pub async fn run(
    path: PathBuf,
    v1_only: bool,
    key: Option<PathBuf>,
    salt: String,
    peer: PeerArgs,
) -> anyhow::Result<()> {
    let salt = parse_salt(&salt)?;
    let kp = key.as_deref().map(Keypair::from_file).transpose()?;
    let stop = crate::stop_signal();
    let p = path.clone();
    let scan = tokio::task::spawn_blocking(move || btfs::create::scan_dir(&p))
        .await?
        .context("cannot seed")?;
    for (p, why) in &scan.skipped {
        eprintln!("btfs-mount: skipping {}: {why}", p.display());
    }
    registry::register("seed", None, Some(&path.display().to_string()), None);
    let client = start_client(&peer, Engine::default()).await?;
    crate::with_client(&client, async {
        let archive = client
            .seed_content(scan.content, format(v1_only), Some(hashing_progress()))
            .await
            .map_err(|e| anyhow::anyhow!("cannot seed {}: {e}", path.display()))?;
        seed_until_stopped(&client, &archive, kp.map(|k| (k, salt)), stop).await
    })
    .await
}

/// The format of a new torrent: hybrid v1+v2 unless `--v1-only`.
pub fn format(v1_only: bool) -> btfs::create::Format {
    if v1_only {
        btfs::create::Format::V1Only
    } else {
        btfs::create::Format::Hybrid
    }
}

/// Prints `archive`'s magnet (stdout, first line), publishes it under the
/// key if given (the mutable URL as the second stdout line) and keeps the
/// item alive, and seeds until `stop` resolves.
pub async fn seed_until_stopped(
    client: &Client,
    archive: &btfs::Archive,
    key: Option<(Keypair, Vec<u8>)>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let magnet = archive.magnet();
    println!("{magnet}");
    std::io::stdout().flush()?;
    let info = archive.info();
    eprintln!(
        "btfs-mount: seeding {:?}: {}, {} bytes, info-hash {}, peer port {}; Ctrl-C stops",
        info.name,
        // The files as `ls` shows them: BEP 47 pad files left out.
        btfs::plural::count(
            info.files.iter().filter(|f| !f.pad).count(),
            "file",
            "files"
        ),
        info.files
            .iter()
            .filter(|f| !f.pad)
            .map(|f| f.length)
            .sum::<u64>(),
        archive.info_hash(),
        client.peer_port()
    );
    registry::update(|e| {
        e.state = "seeding".into();
        e.magnet = Some(magnet.clone());
    });
    let _keep = key
        .map(|(kp, salt)| KeepAlive::start(client.clone(), magnet.clone(), kp, salt, print_event));
    stop.await;
    Ok(())
}

/// Prints what a [`KeepAlive`] did: the mutable URL on stdout the first
/// time (the second line a script reads), the rest on stderr or the log.
pub fn print_event(event: Event) {
    match event {
        Event::Published(p) => {
            // stderr first: a script that reads the URL from stdout finds
            // the line about it already written.
            eprintln!(
                "btfs-mount: published seq {} (previous: {}) -> {} on {}; put again every 30 minutes",
                p.item.seq,
                p.previous_seq
                    .map_or_else(|| "none".to_string(), |s| s.to_string()),
                p.info_hash,
                btfs::plural::count(p.nodes, "DHT node", "DHT nodes")
            );
            registry::update(|e| e.published = Some(p.url.clone()));
            println!("{}", p.url);
            let _ = std::io::stdout().flush();
        }
        Event::Refreshed { seq, nodes } => {
            tracing::info!(
                "seq {seq} put again on {}",
                btfs::plural::count(nodes, "DHT node", "DHT nodes")
            )
        }
        Event::Failed { error, retry_in } => eprintln!(
            "btfs-mount: {error}; trying again in {} s",
            retry_in.as_secs()
        ),
    }
}
