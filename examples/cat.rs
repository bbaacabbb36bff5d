//! `cat` for a file inside a torrent, with the `btfs` library and no mount.
//!
//! ```text
//! cargo run --example cat -- 'magnet:?xt=urn:btih:...' site/index.html
//! cargo run --example cat -- MAGNET PATH --bootstrap 127.0.0.1:6881
//! cargo run --example cat -- MAGNET PATH --no-dht --peer 127.0.0.1:6881
//! cargo run --example cat -- MAGNET ''          # list the whole tree instead
//! ```
//!
//! It resolves the magnet link (DHT, LSD, the given peers), then streams
//! the file to stdout in 1 MiB reads: each read waits only for the pieces
//! under it, so the first bytes come out long before the file is complete.
//! Pieces are kept in memory only; nothing is written to disk.

use std::io::Write;
use std::time::Duration;

use btfs::{Client, LookupOptions, StorageKind};

#[tokio::main]
async fn main() {
    // An error as one readable line (`cat: <reason>`), not its Debug form.
    if let Err(e) = run().await {
        eprintln!("cat: {e}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(path)) = (args.next(), args.next()) else {
        eprintln!(
            "usage: cat MAGNET PATH [--bootstrap HOST:PORT]... [--peer HOST:PORT]... [--no-dht]"
        );
        std::process::exit(2);
    };
    let mut builder = Client::builder().storage(StorageKind::Memory).lsd(false);
    let mut opts = LookupOptions {
        timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let mut bootstrap = Vec::new();
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--no-dht" => builder = builder.dht(false),
            "--bootstrap" => bootstrap.push(args.next().ok_or("--bootstrap HOST:PORT")?),
            "--peer" => opts
                .peers
                .push(args.next().ok_or("--peer HOST:PORT")?.parse()?),
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if !bootstrap.is_empty() {
        builder = builder.bootstrap(bootstrap);
    }
    let client = builder.start().await?;
    let archive = client.lookup(&url, opts).await?;
    let mut out = std::io::stdout().lock();
    if path.is_empty() {
        // No path: the tree, one `size path` line per file.
        let mut dirs = vec![String::new()];
        while let Some(dir) = dirs.pop() {
            for e in archive.read_dir(&dir)? {
                let p = if dir.is_empty() {
                    e.name.clone()
                } else {
                    format!("{dir}/{}", e.name)
                };
                match e.kind {
                    btfs::archive::EntryKind::Dir => dirs.push(p),
                    _ => writeln!(out, "{:>12} {p}", e.size)?,
                }
            }
        }
    } else {
        let file = archive.open(&path)?;
        let mut offset = 0;
        while offset < file.size() {
            let chunk = file.read_at(offset, 1 << 20).await?;
            if chunk.is_empty() {
                break;
            }
            out.write_all(&chunk)?;
            offset += chunk.len() as u64;
        }
    }
    out.flush()?;
    client.stop().await;
    Ok(())
}
