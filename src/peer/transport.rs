//! How a peer connection is opened and answered: the byte transport (TCP,
//! uTP) and the encryption on it (MSE/PE, see [`crate::peer::mse`]), below
//! the BitTorrent handshake.
//!
//! Why a module of its own: public swarms are not plaintext TCP. Many
//! clients dial uTP first, some only accept uTP; many dial with MSE only
//! (webtorrent's default sends nothing else), and some users require it.
//! A connection is therefore tried several ways, and what worked with a
//! peer is remembered ([`Route`]) so the next dial goes straight to it.
//!
//! Dialling ([`Transports::dial`]):
//! 1. the transport: with both on and nothing known of the peer, one is
//!    dialled first and the other [`STAGGER`] later (or as soon as the
//!    first fails), and the first to connect wins (the other is dropped).
//!    So a uTP-only peer and a TCP-only peer are both connected within
//!    about a round trip, where a strict "one, then the other after a
//!    timeout" would cost seconds. Which goes first depends on where the
//!    peer is ([`crate::peer::near`]): TCP to a peer on loopback, a
//!    private or link-local range or a subnet we are attached to (kernel
//!    TCP is 2-3 times faster than our userspace uTP there, and neither
//!    LEDBAT nor a NAT mapping matters); uTP to everyone else, as
//!    libtorrent and Transmission dial (it yields to other traffic on an
//!    uplink, some peers accept only uTP, and a BEP 55 relay can pass on
//!    our address only if our connection to it is uTP). A remembered
//!    route, or a transport peer exchange names, goes first instead.
//! 2. the encryption, by [`Policy`]: `prefer` runs MSE offering RC4 and
//!    plaintext, and on a failure that means "this peer does not speak MSE"
//!    ([`MseError::retry_plaintext`]) dials again with a plaintext
//!    handshake; `require` runs MSE with RC4 only; `off` sends a plaintext
//!    handshake.
//! 3. the BitTorrent handshake (BEP 3), through the encrypted stream.
//!
//! Answering ([`Transports::answer`]): one listening port serves both
//! plaintext and MSE, told apart by the first bytes
//! ([`crate::peer::mse::accept_inbound`]); an MSE handshake is matched
//! against every info-hash we serve ([`SkeyTable`]).

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::InfoHash;
use crate::peer::conn::{PeerConn, TransportRead, TransportWrite};
use crate::peer::mse::{self, Crypto, Inbound, MseError, MseReader, Policy, SkeyTable, Timeouts};
use crate::peer::near;
use crate::peer::wire::{Handshake, WireError};
use crate::utp::{UtpSocket, UtpStream};

/// With nothing known of a peer, how long after starting the dial of the
/// first transport the other one starts too, unless the first failed
/// sooner (the first to connect wins). Long enough for a connection and
/// handshake round trip on a LAN or a near peer, short enough that a peer
/// without the first transport is not kept waiting.
pub const STAGGER: Duration = Duration::from_millis(250);

/// The byte transport of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Tcp,
    Utp,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Tcp => "tcp",
            Kind::Utp => "utp",
        })
    }
}

/// How a connection was made: the transport, and whether the handshake
/// was obfuscated (MSE) and with which payload encryption. Remembered per
/// peer address so the next dial tries what worked first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub kind: Kind,
    /// None: a plaintext BitTorrent handshake (no MSE at all).
    pub mse: Option<Crypto>,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mse {
            None => write!(f, "{}", self.kind),
            Some(c) => write!(f, "{}+mse/{c}", self.kind),
        }
    }
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("encryption: {0}")]
    Mse(#[from] MseError),
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("timed out")]
    Timeout,
}

/// A connected byte stream of one transport, before any handshake: how it
/// splits into the halves a [`PeerConn`] reads and writes.
trait RawStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    const KIND: Kind;
    type R: TransportRead;
    type W: TransportWrite;
    fn halves(self) -> (Self::R, Self::W);
}

impl RawStream for TcpStream {
    const KIND: Kind = Kind::Tcp;
    type R = tokio::net::tcp::OwnedReadHalf;
    type W = tokio::net::tcp::OwnedWriteHalf;
    fn halves(self) -> (Self::R, Self::W) {
        self.into_split()
    }
}

impl RawStream for UtpStream {
    const KIND: Kind = Kind::Utp;
    type R = tokio::io::ReadHalf<UtpStream>;
    type W = tokio::io::WriteHalf<UtpStream>;
    fn halves(self) -> (Self::R, Self::W) {
        tokio::io::split(self)
    }
}

/// The transports and encryption setting of a client, shared by its dial
/// tasks and its accept loops.
#[derive(Clone)]
pub struct Transports {
    /// MSE setting (`--encryption`).
    pub policy: Policy,
    /// Our uTP socket (on the UDP port numbered like our TCP listen port),
    /// unless uTP is off or could not be bound.
    utp: Option<Arc<UtpSocket>>,
    /// Every info-hash we accept incoming connections for, as MSE matches
    /// them (`HASH('req2', info-hash)`).
    skeys: Arc<RwLock<SkeyTable>>,
    /// Per-step limits of the MSE handshake.
    timeouts: Timeouts,
}

impl Transports {
    /// Transports with MSE `policy`, over TCP and, when given, uTP.
    pub fn new(policy: Policy, utp: Option<Arc<UtpSocket>>) -> Transports {
        Transports {
            policy,
            utp,
            skeys: Arc::new(RwLock::new(SkeyTable::new())),
            timeouts: Timeouts::default(),
        }
    }

    /// The uTP socket, if uTP is on.
    pub fn utp(&self) -> Option<&Arc<UtpSocket>> {
        self.utp.as_ref()
    }

    /// Incoming MSE handshakes for `info_hash` are accepted from now on.
    pub fn serve(&self, info_hash: InfoHash) {
        self.skeys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(info_hash);
    }

    /// Incoming MSE handshakes for `info_hash` are no longer matched.
    pub fn unserve(&self, info_hash: &InfoHash) {
        self.skeys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(info_hash);
    }

    /// Dials `addr` for `info_hash` and exchanges BitTorrent handshakes,
    /// trying routes as the module docs say; with `upgrade` (the truncated
    /// v2 info-hash of a hybrid dialled by its v1 info-hash) our handshake
    /// offers the BEP 52 upgrade, and the peer may answer on that hash (the
    /// returned handshake's `info_hash` says which; MSE stays keyed by
    /// `info_hash`); `hint` is what worked with
    /// this peer before (or what peer exchange said it speaks). The whole
    /// dial, fallbacks included, must finish within `timeout`. Returns the
    /// connection, the peer's handshake and the route that worked.
    ///
    /// Errors: the failure of the route tried first ([`DialError`]);
    /// [`DialError::Timeout`].
    pub async fn dial(
        &self,
        addr: SocketAddr,
        info_hash: InfoHash,
        upgrade: Option<InfoHash>,
        peer_id: [u8; 20],
        hint: Option<Route>,
        timeout: Duration,
    ) -> Result<(PeerConn, Handshake, Route), DialError> {
        let hashes = (info_hash, upgrade);
        let mse_first = match (self.policy, hint) {
            (Policy::Off, _) => false,
            (Policy::Require, _) => true,
            // What worked before: plaintext stays plaintext.
            (Policy::Prefer, Some(r)) => r.mse.is_some(),
            (Policy::Prefer, None) => true,
        };
        let utp = self
            .utp
            .as_ref()
            .filter(|u| u.local_addr().is_ipv4() == addr.is_ipv4() || dual_stack(u));
        let steps = async {
            let Some(utp) = utp else {
                return self.dial_tcp(addr, hashes, peer_id, mse_first).await;
            };
            let on_utp = self.dial_utp(utp, addr, hashes, peer_id, mse_first);
            let on_tcp = self.dial_tcp(addr, hashes, peer_id, mse_first);
            match hint.map(|r| r.kind) {
                // Known: that transport first, the other only if it fails.
                Some(Kind::Tcp) => match on_tcp.await {
                    Ok(c) => Ok(c),
                    Err(e) => on_utp.await.map_err(|_| e),
                },
                Some(Kind::Utp) => match on_utp.await {
                    Ok(c) => Ok(c),
                    Err(e) => on_tcp.await.map_err(|_| e),
                },
                // Unknown: by where the peer is, one now and the other a
                // moment later (or when the first fails); the first wins.
                None if near::is_near(addr.ip()) => {
                    tracing::debug!("{addr}: near, dialling TCP first");
                    first_ok_staggered(on_tcp, on_utp, STAGGER).await
                }
                None => first_ok_staggered(on_utp, on_tcp, STAGGER).await,
            }
        };
        tokio::time::timeout(timeout, steps)
            .await
            .map_err(|_| DialError::Timeout)?
    }

    /// One dial over TCP: MSE first when `mse_first` (falling back to a
    /// new plaintext connection as the policy allows), else plaintext.
    /// `hashes`: the info-hash and the upgrade hash of [`Transports::dial`].
    async fn dial_tcp(
        &self,
        addr: SocketAddr,
        hashes: (InfoHash, Option<InfoHash>),
        peer_id: [u8; 20],
        mse_first: bool,
    ) -> Result<(PeerConn, Handshake, Route), DialError> {
        let connect = || async {
            let s = TcpStream::connect(addr).await.map_err(DialError::Connect)?;
            s.set_nodelay(true).map_err(DialError::Connect)?;
            Ok(s)
        };
        self.dial_on(connect, addr, hashes, peer_id, mse_first)
            .await
    }

    /// One dial over uTP, as [`Transports::dial_tcp`].
    async fn dial_utp(
        &self,
        utp: &UtpSocket,
        addr: SocketAddr,
        hashes: (InfoHash, Option<InfoHash>),
        peer_id: [u8; 20],
        mse_first: bool,
    ) -> Result<(PeerConn, Handshake, Route), DialError> {
        let connect = || async {
            utp.connect(addr, UTP_CONNECT_TIMEOUT)
                .await
                .map_err(|e| DialError::Connect(std::io::Error::other(e)))
        };
        self.dial_on(connect, addr, hashes, peer_id, mse_first)
            .await
    }

    /// The encryption and BitTorrent handshake of a dial on any transport;
    /// `connect` opens a fresh connection (twice when MSE falls back to
    /// plaintext).
    async fn dial_on<S: RawStream, F: Future<Output = Result<S, DialError>>>(
        &self,
        connect: impl Fn() -> F,
        addr: SocketAddr,
        hashes: (InfoHash, Option<InfoHash>),
        peer_id: [u8; 20],
        mse_first: bool,
    ) -> Result<(PeerConn, Handshake, Route), DialError> {
        let info_hash = hashes.0;
        let plain = |s: S| {
            let (r, w) = s.halves();
            let route = Route {
                kind: S::KIND,
                mse: None,
            };
            handshake_out(PeerConn::from_halves(r, w, addr), hashes, peer_id, route)
        };
        let stream = connect().await?;
        if !mse_first {
            return plain(stream).await;
        }
        // With RC4 the only choice offered, our BitTorrent handshake rides
        // in MSE's initial payload (IA), as Transmission and Vuze send it:
        // the peer's handshake then follows its MSE answer, one round trip
        // sooner. Not when plaintext is offered too: Transmission 3.00,
        // answering with plaintext selected, never answered a handshake
        // sent that way (interop::mount_fetches_from_transmission_plaintext).
        // Its handshake.c (2.x to 4.0) waits for len(IA) bytes but never
        // takes them off its buffer: the payload stream is then parsed from
        // the IA on, decrypted only when RC4 was selected. With plaintext
        // selected it reads our still RC4-encrypted IA as a plaintext
        // handshake and drops the connection (tried: our dial then failed
        // with "peer closed the connection during MSE verification constant
        // search", its answer never arrived). The MSE spec sends IA as
        // ENCRYPT(IA) before the method is chosen ("may be 0-sized if you
        // want to wait for the encryption negotiation"), so Transmission is
        // wrong; we keep IA empty unless RC4 is the only method offered.
        let in_ia = self.policy == Policy::Require;
        let ours = PeerConn::our_handshake(info_hash, hashes.1, peer_id);
        let ia: &[u8] = if in_ia { &ours } else { &[] };
        let e = match mse::initiate(stream, info_hash, self.policy, ia, self.timeouts).await {
            Ok(s) => {
                let route = Route {
                    kind: S::KIND,
                    mse: Some(s.crypto()),
                };
                let (r, w) = s.into_split_with(S::halves);
                let conn = PeerConn::from_halves(r, w, addr);
                if !in_ia {
                    return handshake_out(conn, hashes, peer_id, route).await;
                }
                let (conn, hs) = conn.outgoing_sent(info_hash, hashes.1).await?;
                return Ok((conn, hs, route));
            }
            Err(e) => e,
        };
        if !(e.retry_plaintext() && self.policy.falls_back_to_plaintext()) {
            return Err(DialError::Mse(e));
        }
        tracing::debug!(
            "{addr}: no MSE over {} ({e}); dialling again in plaintext",
            S::KIND
        );
        plain(connect().await?).await
    }

    /// Answers a TCP connection a peer opened; see [`Transports::answer`].
    pub async fn answer_tcp(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        known: impl Fn(&InfoHash) -> bool,
        upgrade: impl Fn(&InfoHash) -> Option<InfoHash>,
        peer_id: [u8; 20],
        timeout: Duration,
    ) -> Result<(PeerConn, Handshake, Route), DialError> {
        stream.set_nodelay(true).map_err(DialError::Connect)?;
        self.answer(stream, addr, (known, upgrade), peer_id, timeout)
            .await
    }

    /// Answers a uTP connection a peer opened; see [`Transports::answer`].
    pub async fn answer_utp(
        &self,
        stream: UtpStream,
        known: impl Fn(&InfoHash) -> bool,
        upgrade: impl Fn(&InfoHash) -> Option<InfoHash>,
        peer_id: [u8; 20],
        timeout: Duration,
    ) -> Result<(PeerConn, Handshake, Route), DialError> {
        let addr = stream.peer_addr();
        self.answer(stream, addr, (known, upgrade), peer_id, timeout)
            .await
    }

    /// Answers a connection a peer opened: plaintext or MSE, told apart by
    /// the first bytes; then the BitTorrent handshake, answered only when
    /// `known(info_hash)` (and, for MSE, only for the info-hash the
    /// obfuscated handshake named). `upgrade(info_hash)` is the truncated
    /// v2 info-hash of a hybrid served by its v1 hash: a dialler offering
    /// the BEP 52 upgrade is answered on it (the returned handshake's
    /// `info_hash` is the one the connection is on; MSE keeps the key the
    /// dialler chose). Must finish within `timeout`.
    ///
    /// Errors: [`DialError::Mse`] (garbage, an unknown torrent, a refused
    /// method), [`DialError::Wire`], [`DialError::Timeout`].
    async fn answer<S: RawStream>(
        &self,
        stream: S,
        addr: SocketAddr,
        (known, upgrade): (
            impl Fn(&InfoHash) -> bool,
            impl Fn(&InfoHash) -> Option<InfoHash>,
        ),
        peer_id: [u8; 20],
        timeout: Duration,
    ) -> Result<(PeerConn, Handshake, Route), DialError> {
        let steps = async {
            let find = |h: &[u8; 20]| self.skeys.read().unwrap_or_else(|e| e.into_inner()).find(h);
            let timeouts = Timeouts {
                total: timeout,
                ..self.timeouts
            };
            let (s, mse_ih) = match mse::accept_inbound(stream, find, self.policy, timeouts).await?
            {
                Inbound::Plaintext(s) => (s, None),
                Inbound::Encrypted(acc) => {
                    let (s, ih) = acc.into_stream();
                    (s, Some(ih))
                }
            };
            let route = Route {
                kind: S::KIND,
                mse: mse_ih.map(|_| s.crypto()),
            };
            let (r, w) = s.into_split_with(S::halves);
            let conn = PeerConn::from_halves(r, w, addr);
            handshake_in(conn, (known, upgrade), mse_ih, peer_id, route).await
        };
        tokio::time::timeout(timeout, steps)
            .await
            .map_err(|_| DialError::Timeout)?
    }
}

/// How long a uTP dial waits for the peer's answer to its `ST_SYN` (sent
/// again after 1, 2, ... s).
const UTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(6);

/// Whether `utp` is bound to `[::]`, which reaches IPv4 peers too.
fn dual_stack(utp: &UtpSocket) -> bool {
    let a = utp.local_addr();
    a.is_ipv6() && a.ip().is_unspecified()
}

/// The first of `first` and `second` to succeed, where `second` starts
/// `stagger` after `first` or as soon as `first` fails, whichever comes
/// sooner; when both fail, `first`'s error.
async fn first_ok_staggered<T, E>(
    first: impl Future<Output = Result<T, E>>,
    second: impl Future<Output = Result<T, E>>,
    stagger: Duration,
) -> Result<T, E> {
    tokio::pin!(first);
    tokio::pin!(second);
    let delay = tokio::time::sleep(stagger);
    tokio::pin!(delay);
    let (mut started, mut first_err, mut second_done) = (false, None, false);
    loop {
        tokio::select! {
            r = &mut first, if first_err.is_none() => match r {
                Ok(v) => return Ok(v),
                Err(e) if second_done => return Err(e),
                Err(e) => {
                    first_err = Some(e);
                    started = true;
                }
            },
            () = &mut delay, if !started => started = true,
            r = &mut second, if started && !second_done => match (r, first_err.take()) {
                (Ok(v), _) => return Ok(v),
                (Err(_), Some(fe)) => return Err(fe),
                (Err(_), None) => second_done = true,
            },
        }
    }
}

/// Our BitTorrent handshake on a connection we opened (naming `hashes.0`,
/// offering the BEP 52 upgrade to `hashes.1`), and the peer's answer (the
/// caller's timeout bounds it).
async fn handshake_out(
    conn: PeerConn,
    (info_hash, upgrade): (InfoHash, Option<InfoHash>),
    peer_id: [u8; 20],
    route: Route,
) -> Result<(PeerConn, Handshake, Route), DialError> {
    let (conn, hs) = conn.outgoing(info_hash, upgrade, peer_id).await?;
    Ok((conn, hs, route))
}

/// The BitTorrent handshake of an incoming connection; with `mse_ih`, the
/// peer must name the torrent its MSE handshake named (the connection may
/// then move to the truncated v2 info-hash by `upgrade`, keeping its keys).
async fn handshake_in(
    conn: PeerConn,
    (known, upgrade): (
        impl Fn(&InfoHash) -> bool,
        impl Fn(&InfoHash) -> Option<InfoHash>,
    ),
    mse_ih: Option<InfoHash>,
    peer_id: [u8; 20],
    route: Route,
) -> Result<(PeerConn, Handshake, Route), DialError> {
    let lookup = |ih: &InfoHash| mse_ih.is_none_or(|m| m == *ih) && known(ih);
    let (conn, hs) = conn.incoming(lookup, upgrade, peer_id).await?;
    Ok((conn, hs, route))
}

impl<R: TransportRead> TransportRead for MseReader<R> {
    fn after_read(&self) {
        self.get_ref().after_read();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::time::Instant;

    /// A future that records it was polled, then waits `after` and gives
    /// `r`.
    async fn step(
        started: &AtomicBool,
        after: Duration,
        r: Result<u8, &'static str>,
    ) -> Result<u8, &'static str> {
        started.store(true, Ordering::SeqCst);
        tokio::time::sleep(after).await;
        r
    }

    const LONG: Duration = Duration::from_secs(30);
    const STAG: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn first_wins_and_second_never_starts() {
        let (a, b) = (AtomicBool::new(false), AtomicBool::new(false));
        let r = first_ok_staggered(
            step(&a, Duration::from_millis(10), Ok(1)),
            step(&b, Duration::ZERO, Ok(2)),
            STAG,
        )
        .await;
        assert_eq!(r, Ok(1));
        assert!(a.load(Ordering::SeqCst));
        assert!(
            !b.load(Ordering::SeqCst),
            "second started before the stagger"
        );
    }

    #[tokio::test]
    async fn a_failed_first_starts_the_second_at_once() {
        let (a, b) = (AtomicBool::new(false), AtomicBool::new(false));
        let t = Instant::now();
        let r = first_ok_staggered(
            step(&a, Duration::ZERO, Err("refused")),
            step(&b, Duration::ZERO, Ok(2)),
            LONG,
        )
        .await;
        assert_eq!(r, Ok(2));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn a_silent_first_loses_to_the_second_after_the_stagger() {
        let (a, b) = (AtomicBool::new(false), AtomicBool::new(false));
        let t = Instant::now();
        let r =
            first_ok_staggered(step(&a, LONG, Ok(1)), step(&b, Duration::ZERO, Ok(2)), STAG).await;
        assert_eq!(r, Ok(2));
        let took = t.elapsed();
        assert!(took >= STAG && took < Duration::from_secs(5), "{took:?}");
    }

    #[tokio::test]
    async fn both_failing_gives_the_first_error() {
        let (a, b) = (AtomicBool::new(false), AtomicBool::new(false));
        // second fails first, then first
        let r = first_ok_staggered(
            step(&a, Duration::from_millis(300), Err("first")),
            step(&b, Duration::ZERO, Err("second")),
            Duration::from_millis(10),
        )
        .await;
        assert_eq!(r, Err("first"));
        // first fails first, then second
        let r = first_ok_staggered(
            step(&a, Duration::ZERO, Err("first")),
            step(&b, Duration::from_millis(50), Err("second")),
            LONG,
        )
        .await;
        assert_eq!(r, Err("first"));
        // second fails, first then succeeds
        let r = first_ok_staggered(
            step(&a, Duration::from_millis(300), Ok(1)),
            step(&b, Duration::ZERO, Err("second")),
            Duration::from_millis(10),
        )
        .await;
        assert_eq!(r, Ok(1));
    }
}
