//! What reaches the client from outside: incoming peer connections (each
//! handed to the swarm of its info-hash after the handshake) and peers
//! announced on the local network (BEP 14).

use std::sync::Arc;
use std::time::Duration;

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Inner;
use crate::InfoHash;
use crate::lsd::LsdPeer;
use crate::peer::conn::PeerConn;
use crate::peer::session;
use crate::peer::transport::{DialError, Route};
use crate::peer::wire::Handshake;
use crate::swarm::PeerSource;
use crate::utp::UtpSocket;

/// Most incoming connections in their handshake at once. Each holds a
/// socket, a task and read/write buffers (~72 KiB) for up to 10 s; past this
/// limit new connections are closed at once, so a flood of connections that
/// never handshake costs a bounded amount of memory and file descriptors.
/// (Connections past the handshake are bounded per torrent by `max_peers`.)
pub const MAX_PENDING_HANDSHAKES: usize = 32;

/// How long an incoming connection may take to finish its handshakes (MSE
/// included).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts incoming TCP peer connections and hands each to its swarm;
/// at most [`MAX_PENDING_HANDSHAKES`] handshakes (TCP and uTP together,
/// `pending`) run at once, others are closed.
pub(super) async fn accept_loop(inner: Arc<Inner>, listener: TcpListener, pending: Arc<Semaphore>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut refused = Refused::default();
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
        // An IPv4 peer on our dual-stack listener arrives IPv4-mapped.
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            refused.note(addr);
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let known = |ih: &InfoHash| inner.swarm_of(ih).is_some_and(|s| s.cfg.seed);
            let r = inner
                .transports
                .answer_tcp(
                    stream,
                    addr,
                    known,
                    |ih| upgrade(&inner, ih),
                    inner.peer_id.0,
                    HANDSHAKE_TIMEOUT,
                )
                .await;
            drop(permit);
            run_incoming(&inner, r, addr).await;
        });
    }
}

/// Accepts incoming uTP connections, as [`accept_loop`] does for TCP.
pub(super) async fn utp_accept_loop(
    inner: Arc<Inner>,
    utp: Arc<UtpSocket>,
    pending: Arc<Semaphore>,
) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut refused = Refused::default();
    loop {
        let stream = tokio::select! {
            r = utp.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("uTP accept: {e}");
                    return;
                }
            },
            _ = shutdown.changed() => return,
        };
        let addr = stream.peer_addr();
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            refused.note(addr);
            continue;
        };
        let inner = inner.clone();
        tokio::spawn(async move {
            let known = |ih: &InfoHash| inner.swarm_of(ih).is_some_and(|s| s.cfg.seed);
            let r = inner
                .transports
                .answer_utp(
                    stream,
                    known,
                    |ih| upgrade(&inner, ih),
                    inner.peer_id.0,
                    HANDSHAKE_TIMEOUT,
                )
                .await;
            drop(permit);
            run_incoming(&inner, r, addr).await;
        });
    }
}

/// The truncated v2 info-hash to answer a dialler on that names `ih`
/// and offers the BEP 52 upgrade: the swarm's when it is a hybrid, `ih`
/// is its v1 info-hash and the v2 one reaches the same swarm.
fn upgrade(inner: &Inner, ih: &InfoHash) -> Option<InfoHash> {
    let swarm = inner.swarm_of(ih)?;
    let v2 = swarm.hybrid_v2_hash().filter(|v2| v2 != ih)?;
    inner
        .swarm_of(&v2)
        .is_some_and(|s| Arc::ptr_eq(&s, &swarm))
        .then_some(v2)
}

/// Runs the session of an answered incoming connection.
async fn run_incoming(
    inner: &Inner,
    r: Result<(PeerConn, Handshake, Route), DialError>,
    addr: SocketAddr,
) {
    match r {
        Ok((conn, hs, route)) => {
            if let Some(swarm) = inner.swarm_of(&hs.info_hash) {
                session::run(swarm, conn, hs, addr, PeerSource::Incoming, route).await;
            }
        }
        Err(e) => tracing::debug!("incoming {addr}: {e}"),
    }
}

/// Counts connections closed because too many handshakes were pending,
/// and says so in the log at most every 10 s.
#[derive(Default)]
struct Refused {
    count: u64,
    last_warn: Option<tokio::time::Instant>,
}

impl Refused {
    fn note(&mut self, addr: SocketAddr) {
        self.count += 1;
        if self
            .last_warn
            .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            tracing::warn!(
                "incoming connection from {addr} closed: {MAX_PENDING_HANDSHAKES} handshakes already pending ({} refused so far)",
                self.count
            );
            self.last_warn = Some(tokio::time::Instant::now());
        }
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
