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

/// How often a seeding swarm announces itself again on the DHT (BEP 5
/// `announce_peer`) when nothing changed; nodes drop peers not announced
/// again within about 30 minutes.
const REANNOUNCE: Duration = Duration::from_secs(600);

/// What was last announced on the DHT for a swarm, and whether it must be
/// announced again.
#[derive(Debug, Default)]
struct Announced {
    /// When the last announce that some node accepted ended.
    at: Option<tokio::time::Instant>,
    /// How many of the swarm's info-hashes it covered.
    hashes: usize,
    /// The ports it gave over IPv4 and IPv6 (the router's mapped port, or
    /// our listen port).
    ports: Option<(u16, u16)>,
}

impl Announced {
    /// Whether a seeding swarm with `hashes` info-hashes, whose ports as
    /// peers on the internet dial it are now `ports` (IPv4, IPv6), announces
    /// again: never
    /// announced, a hash learnt since (a hybrid's other one), the port
    /// changed since (the router mapped another port than our listen port
    /// after the first announce, or the mapping went away: peers given the
    /// old port could not dial us for up to [`REANNOUNCE`]), or
    /// [`REANNOUNCE`] elapsed.
    fn due(&self, hashes: usize, ports: (u16, u16)) -> bool {
        hashes > self.hashes
            || self.ports != Some(ports)
            || self.at.is_none_or(|t| t.elapsed() > REANNOUNCE)
    }
}

/// Finds peers on the DHT (repeating `get_peers` while more are wanted) and
/// announces our port while seeding (BEP 5), under each of the swarm's
/// info-hashes (a hybrid's v1 and truncated v2 info-hash, BEP 52). Behind
/// a port mapping the announced port is the router's external one, and a
/// change of it (the mapping is made or lost) is announced at once.
async fn dht_loop(swarm: Arc<Swarm>, dht: Dht, port: u16) {
    let mut shutdown = swarm.subscribe_shutdown();
    let mut reach = Some(swarm.cfg.reach.subscribe());
    let mut announced = Announced::default();
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
        // Behind a port mapping, the port the router forwards to us (IPv4
        // only: IPv6 peers dial our listen port).
        let r = &swarm.cfg.reach;
        let ports = (r.dht_port(port, false), r.dht_port(port, true));
        if seeding && announced.due(hashes.len(), ports) {
            let mut any = false;
            for &ih in &hashes {
                let n = dht
                    .announce_peer_ports(ih, Some(ports.0), Some(ports.1))
                    .await;
                let (p4, p6) = ports;
                let shown = if p4 == p6 {
                    format!("port {p4}")
                } else {
                    format!("port {p4} (IPv6: {p6})")
                };
                tracing::info!(
                    "{}: announced {shown} to {} under {ih}",
                    swarm.info_hash,
                    crate::plural::count(n, "DHT node", "DHT nodes")
                );
                any |= n > 0;
            }
            if any {
                announced = Announced {
                    at: Some(tokio::time::Instant::now()),
                    hashes: hashes.len(),
                    ports: Some(ports),
                };
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
        // A new mapping (or its loss) changes the port to announce: go
        // round at once rather than after `wait` (up to 5 minutes).
        let reach_changed = async {
            match reach.as_mut() {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            ok = reach_changed => {
                if !ok {
                    // The port mapper's state is gone: nothing to wait for.
                    reach = None;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_port_is_announced_again() {
        let never = Announced::default();
        assert!(never.due(1, (6881, 6881)), "never announced");
        let a = Announced {
            at: Some(tokio::time::Instant::now()),
            hashes: 1,
            ports: Some((6881, 6881)),
        };
        assert!(!a.due(1, (6881, 6881)), "nothing changed since");
        // Announced with the listen port before the router mapped another.
        assert!(
            a.due(1, (40000, 6881)),
            "the router's external port differs"
        );
        assert!(a.due(2, (6881, 6881)), "a hybrid's second info-hash");
        let old = Announced {
            at: tokio::time::Instant::now().checked_sub(REANNOUNCE + Duration::from_secs(1)),
            ..a
        };
        assert!(old.due(1, (6881, 6881)), "the announce expired");
    }
}
