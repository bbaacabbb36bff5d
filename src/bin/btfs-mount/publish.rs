//! `btfs-mount keygen` and `btfs-mount publish`: keys and BEP 46 items.

use std::io::Write;
use std::path::{Path, PathBuf};

use btfs::keepalive::KeepAlive;
use btfs::keypair::Keypair;

use crate::args::{NodeArgs, parse_salt};
use crate::registry;

/// `btfs-mount keygen --out FILE`: a new key in a new 0600 file.
pub fn keygen(out: &Path, salt: &str) -> anyhow::Result<()> {
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

/// `btfs-mount publish TARGET --key FILE [--salt HEX] [--once]`: the first
/// put must succeed (else the command fails with why); then, unless
/// `--once`, the item is put again every 30 minutes until stopped.
pub async fn run(
    target: String,
    key: PathBuf,
    salt: String,
    once: bool,
    node: NodeArgs,
) -> anyhow::Result<()> {
    let salt = parse_salt(&salt)?;
    let kp = Keypair::from_file(&key)?;
    let stop = crate::stop_signal();
    let client = crate::start_dht_client(&node).await?;
    crate::with_client(&client, async {
        let published = client
            .publish_item(&target, &kp, &salt)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        eprintln!(
            "btfs-mount: seq {} (previous: {}) -> {} stored on {}",
            published.item.seq,
            published
                .previous_seq
                .map_or_else(|| "none".to_string(), |s| s.to_string()),
            published.info_hash,
            btfs::plural::count(published.nodes, "DHT node", "DHT nodes")
        );
        println!("{}", published.url);
        std::io::stdout().flush()?;
        if once {
            return Ok(());
        }
        registry::register("publish", None, Some(&target), None);
        registry::update(|e| {
            e.state = "publishing".into();
            e.published = Some(published.url.clone());
        });
        eprintln!("btfs-mount: keeping the item alive (put again every 30 minutes); Ctrl-C stops");
        let _keep = KeepAlive::refresh(client.clone(), &published, crate::seed::print_event);
        stop.await;
        Ok(())
    })
    .await
}
