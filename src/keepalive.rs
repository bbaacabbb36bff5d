//! Keeping a published BEP 46 mutable item alive on the DHT.
//!
//! DHT nodes forget a BEP 44 item about two hours after it was put (BEP 44,
//! "Expiration"), so a publisher puts it again while it wants the URL to
//! resolve. [`KeepAlive`] publishes a torrent under a key (the next `seq`,
//! see [`Client::publish_item`]), retries a failed publish every minute, and
//! puts the signed item again every 30 minutes, until it is dropped or the
//! client stops. What happens is reported through a callback, so a command
//! line can print it and a daemon can log it.

use std::time::Duration;

use tokio::task::JoinHandle;

use crate::client::{Client, Published};
use crate::keypair::Keypair;

/// How often the item is put again (BEP 44 items expire after about 2
/// hours on most nodes).
pub const REPUBLISH_EVERY: Duration = Duration::from_secs(30 * 60);
/// How soon a failed first publish is tried again.
pub const PUBLISH_RETRY: Duration = Duration::from_secs(60);

/// What a [`KeepAlive`] did.
#[derive(Debug)]
pub enum Event {
    /// The item is stored (the first time).
    Published(Published),
    /// The same item was put again on this many nodes.
    Refreshed { seq: i64, nodes: usize },
    /// Publishing or putting again failed; tried again after `retry_in`.
    Failed {
        error: crate::client::Error,
        retry_in: Duration,
    },
}

/// A task that publishes a torrent under a key and keeps the item alive.
/// Dropping it stops the task.
pub struct KeepAlive {
    task: JoinHandle<()>,
}

impl KeepAlive {
    /// Publishes `target` (a magnet link or 40-hex info-hash) under `key`
    /// and `salt` (BEP 46), then puts the item again every
    /// [`REPUBLISH_EVERY`]; `on_event` hears of each step. Must be called
    /// within a Tokio runtime.
    pub fn start(
        client: Client,
        target: String,
        key: Keypair,
        salt: Vec<u8>,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> KeepAlive {
        let task = tokio::spawn(async move {
            let published = loop {
                match client.publish_item(&target, &key, &salt).await {
                    Ok(p) => break p,
                    Err(error) => {
                        on_event(Event::Failed {
                            error,
                            retry_in: PUBLISH_RETRY,
                        });
                        tokio::time::sleep(PUBLISH_RETRY).await;
                    }
                }
            };
            let item = published.item.clone();
            on_event(Event::Published(published));
            Self::refresh_forever(&client, item, &on_event).await;
        });
        KeepAlive { task }
    }

    /// Keeps an item that is already published alive (see
    /// [`KeepAlive::start`]); the first put again is after
    /// [`REPUBLISH_EVERY`].
    pub fn refresh(
        client: Client,
        published: &Published,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> KeepAlive {
        let item = published.item.clone();
        let task = tokio::spawn(async move {
            Self::refresh_forever(&client, item, &on_event).await;
        });
        KeepAlive { task }
    }

    async fn refresh_forever(
        client: &Client,
        item: crate::dht::MutableItem,
        on_event: &(impl Fn(Event) + Send + Sync),
    ) {
        loop {
            tokio::time::sleep(REPUBLISH_EVERY).await;
            match client.republish(&item).await {
                Ok(nodes) => on_event(Event::Refreshed {
                    seq: item.seq,
                    nodes,
                }),
                Err(error) => on_event(Event::Failed {
                    error,
                    retry_in: REPUBLISH_EVERY,
                }),
            }
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}
