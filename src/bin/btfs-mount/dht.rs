//! `btfs-mount dht get-peers` and `dht get`: ask the DHT directly.

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::args::{DhtCommand, NodeArgs};

/// Runs a `dht` subcommand with a DHT node of its own.
pub async fn run(cmd: DhtCommand, args: NodeArgs) -> anyhow::Result<()> {
    let client = crate::start_dht_client(&args).await?;
    let dht = client.dht().context("the DHT did not start")?.clone();
    crate::with_client(&client, async {
        dht.bootstrap().await;
        match cmd {
            DhtCommand::GetPeers { info_hash, timeout } => {
                let ih = btfs::InfoHash::from_hex(&info_hash)
                    .ok_or_else(|| anyhow::anyhow!("info-hash must be 40 hex characters"))?;
                let mut seen = HashSet::<SocketAddr>::new();
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
                if seen.is_empty() {
                    let nodes = dht.stats().nodes;
                    if nodes == 0 {
                        bail!("no DHT node answered (check --bootstrap); no peers found for {ih}");
                    }
                    bail!(
                        "no peers found for {ih} ({} known)",
                        btfs::plural::count(nodes, "DHT node", "DHT nodes")
                    );
                }
                Ok(())
            }
            DhtCommand::Get {
                public_key,
                salt,
                timeout,
            } => {
                let mut pk = [0u8; 32];
                hex::decode_to_slice(&public_key, &mut pk)
                    .map_err(|_| anyhow::anyhow!("public key must be 64 hex characters"))?;
                let salt = crate::args::parse_salt(&salt)?;
                let report = tokio::time::timeout(
                    Duration::from_secs(timeout),
                    dht.get_mutable_report(pk, &salt),
                )
                .await
                .map_err(|_| anyhow::anyhow!("the DHT lookup did not finish within {timeout} s"))?;
                let item = match report.item {
                    Some(i) => i,
                    None if report.refused > 0 => bail!(
                        "{} found, none with a valid signature for this key and salt",
                        btfs::plural::count(report.refused, "item", "items")
                    ),
                    None if report.answered == 0 => bail!(
                        "no DHT node answered (check --bootstrap); no item found for this key and salt"
                    ),
                    None => bail!(
                        "no item found for this key and salt ({} answered)",
                        btfs::plural::count(report.answered, "DHT node", "DHT nodes")
                    ),
                };
                println!("seq {}", item.seq);
                println!("{}", btfs::dht::format_value(&item.value));
                Ok(())
            }
        }
    })
    .await
}
