//! What reaches the client from outside: incoming peer connections (each
//! handed to the swarm of its info-hash after the handshake) and peers
//! announced on the local network (BEP 14).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::Inner;
use crate::InfoHash;
use crate::lsd::LsdPeer;
use crate::peer::conn::PeerConn;
use crate::peer::session;
use crate::swarm::PeerSource;

/// Most incoming connections in their handshake at once. Each holds a
/// socket, a task and read/write buffers (~72 KiB) for up to 10 s; past this
/// limit new connections are closed at once, so a flood of connections that
/// never handshake costs a bounded amount of memory and file descriptors.
/// (Connections past the handshake are bounded per torrent by `max_peers`.)
pub const MAX_PENDING_HANDSHAKES: usize = 32;

/// Accepts incoming peer connections and hands each to its swarm; at most
/// [`MAX_PENDING_HANDSHAKES`] handshakes run at once (others are closed).
pub(super) async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    let mut shutdown = inner.shutdown.subscribe();
    let pending = Arc::new(tokio::sync::Semaphore::new(MAX_PENDING_HANDSHAKES));
    let mut refused = 0u64;
    let mut last_warn: Option<tokio::time::Instant> = None;
    loop {
        let (stream, addr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            drop(stream);
            refused += 1;
            if last_warn.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(
                    "incoming connection from {addr} closed: {MAX_PENDING_HANDSHAKES} handshakes already pending ({refused} refused so far)"
                );
                last_warn = Some(tokio::time::Instant::now());
            }
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let known = |ih: &InfoHash| inner.swarm_of(ih).is_some_and(|s| s.cfg.seed);
            let r = PeerConn::accept(stream, known, inner.peer_id.0, Duration::from_secs(10)).await;
            drop(permit);
            match r {
                Ok((conn, hs)) => {
                    if let Some(swarm) = inner.swarm_of(&hs.info_hash) {
                        session::run(swarm, conn, hs, addr, PeerSource::Incoming).await;
                    }
                }
                Err(e) => tracing::debug!("incoming {addr}: {e}"),
            }
        });
    }
}

/// Hands peers announced by LSD (BEP 14) to the swarms of their
/// info-hashes; announces of torrents we are not in are ignored.
pub(super) async fn lsd_peers_loop(
    inner: Arc<Inner>,
    mut rx: tokio::sync::mpsc::Receiver<LsdPeer>,
) {
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let p = tokio::select! {
            p = rx.recv() => match p {
                Some(p) => p,
                None => return,
            },
            _ = shutdown.changed() => return,
        };
        let Some(swarm) = inner.swarm_of(&p.info_hash) else {
            continue;
        };
        if swarm.loaded().is_some_and(|l| l.info.private) {
            continue; // BEP 27: private torrents use no local discovery
        }
        if swarm.add_peers([p.addr], PeerSource::Lsd) > 0 {
            tracing::info!("{}: peer {} from LSD", swarm.info_hash, p.addr);
        }
    }
}
