//! Discovery: the tasks that find peers for one swarm and make them
//! connections. The dial loop dials candidates while connection slots are
//! free; the DHT loop asks the DHT for peers (BEP 5) and announces us while
//! seeding; the LSD loop announces the torrent on the local network
//! (BEP 14). Peers announced *to* us by LSD, and incoming connections,
//! arrive through the client, which knows every swarm.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::peers::DialTarget;
use super::{PeerSource, Swarm};
use crate::dht::Dht;
use crate::lsd::Lsd;

/// Connects to a peer for a swarm and runs the connection until it ends
/// (the client's choice of transport and session). It must call
/// [`Swarm::dial_done`] once the dial itself ended, connected or not.
pub(crate) type Dialer =
    Arc<dyn Fn(Arc<Swarm>, DialTarget) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Starts the discovery tasks of `swarm`: dialling with `dialer`, the DHT
/// (when there is one) announcing `port`, LSD announces (when on). They
/// end when the swarm stops.
pub(crate) fn start(
    swarm: &Arc<Swarm>,
    dialer: Dialer,
    dht: Option<&Dht>,
    lsd: Option<&Lsd>,
    port: u16,
) {
    tokio::spawn(dial_loop(swarm.clone(), dialer));
    if let Some(dht) = dht {
        tokio::spawn(dht_loop(swarm.clone(), dht.clone(), port));
    }
    if let Some(lsd) = lsd {
        tokio::spawn(lsd_announce_loop(swarm.clone(), lsd.clone()));
    }
}

/// Announces a swarm on the local network (BEP 14) when it starts and
/// every 5 minutes while it runs, if it accepts incoming peers (seeding on)
/// and is not private (BEP 27).
async fn lsd_announce_loop(swarm: Arc<Swarm>, lsd: Lsd) {
    if !swarm.cfg.seed {
        return;
    }
    let mut shutdown = swarm.subscribe_shutdown();
    loop {
        if !swarm.loaded().is_some_and(|l| l.info.private) {
            let n = lsd.announce(&swarm.info_hashes()).await;
            tracing::debug!("{}: LSD announce ({n} datagrams)", swarm.info_hash);
        }
        tokio::select! {
            _ = tokio::time::sleep(crate::lsd::ANNOUNCE_INTERVAL) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Dials peer candidates while there are free connection slots.
async fn dial_loop(swarm: Arc<Swarm>, dialer: Dialer) {
    let mut shutdown = swarm.subscribe_shutdown();
    loop {
        for target in swarm.take_dial_candidates() {
            tokio::spawn(dialer(swarm.clone(), target));
        }
        tokio::select! {
            _ = swarm.candidates_changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Finds peers on the DHT (repeating `get_peers` while more are wanted) and
/// announces our port while seeding (BEP 5), under each of the swarm's
/// info-hashes (a hybrid's v1 and truncated v2 info-hash, BEP 52).
async fn dht_loop(swarm: Arc<Swarm>, dht: Dht, port: u16) {
    let mut shutdown = swarm.subscribe_shutdown();
    let mut last_announce: Option<tokio::time::Instant> = None;
    let mut announced = 0usize;
    let mut round = 0u32;
    loop {
        let hashes = swarm.info_hashes();
        for &ih in &hashes {
            let mut rx = dht.get_peers(ih);
            loop {
                tokio::select! {
                    b = rx.recv() => match b {
                        Some(batch) => {
                            let n = swarm.add_peers(batch, PeerSource::Dht);
                            if n > 0 {
                                tracing::info!(
                                    "{}: {} from the DHT (under {ih})",
                                    swarm.info_hash,
                                    crate::plural::count(n, "new peer", "new peers")
                                );
                            }
                        }
                        None => break,
                    },
                    _ = shutdown.changed() => return,
                }
            }
        }
        round += 1;
        let seeding = swarm.cfg.seed && swarm.loaded().is_some();
        // a hash learnt since the last announce (a hybrid's other one) is
        // announced at once
        if seeding
            && (hashes.len() > announced
                || last_announce.is_none_or(|t| t.elapsed() > Duration::from_secs(600)))
        {
            let mut any = false;
            // Behind a port mapping, the port the router forwards to us.
            let port = swarm.cfg.reach.advertised_port(port, None);
            for &ih in &hashes {
                let n = dht.announce_peer(ih, Some(port)).await;
                tracing::info!(
                    "{}: announced port {port} to {n} DHT nodes under {ih}",
                    swarm.info_hash
                );
                any |= n > 0;
            }
            if any {
                last_announce = Some(tokio::time::Instant::now());
                announced = hashes.len();
            }
        }
        let s = swarm.stats();
        // Look again soon while we have few peers or no metadata.
        let wait = if s.peers_connected == 0 || swarm.loaded().is_none() {
            Duration::from_secs(if round < 5 { 1 } else { 5 })
        } else if s.peers_connected < 5 {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(300)
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
    }
}
