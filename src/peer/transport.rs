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
//! 1. the transport: with both on and nothing known of the peer, uTP is
//!    dialled first and TCP [`TCP_STAGGER`] later, and the first to connect
//!    wins (the other is dropped). So a uTP-only peer and a TCP-only peer
//!    are both connected within about a round trip, where a strict "uTP,
//!    then TCP after a timeout" would cost a TCP-only peer seconds.
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

use tokio::net::TcpStream;

use crate::InfoHash;
use crate::peer::conn::{PeerConn, TransportRead};
use crate::peer::mse::{self, Crypto, Inbound, MseError, MseReader, Policy, SkeyTable, Timeouts};
use crate::peer::wire::{Handshake, WireError};

/// With nothing known of a peer, how long after starting a uTP dial a TCP
/// dial starts too (the first to connect wins). Long enough for a uTP
/// SYN/STATE round trip on a LAN or a near peer, short enough that a
/// TCP-only peer is not kept waiting.
pub const TCP_STAGGER: Duration = Duration::from_millis(250);

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

/// The transports and encryption setting of a client, shared by its dial
/// tasks and its accept loops.
#[derive(Clone)]
pub struct Transports {
    /// MSE setting (`--encryption`).
    pub policy: Policy,
    /// Every info-hash we accept incoming connections for, as MSE matches
    /// them (`HASH('req2', info-hash)`).
    skeys: Arc<RwLock<SkeyTable>>,
    /// Per-step limits of the MSE handshake.
    timeouts: Timeouts,
}

impl Transports {
    /// Transports with MSE `policy`.
    pub fn new(policy: Policy) -> Transports {
        Transports {
            policy,
            skeys: Arc::new(RwLock::new(SkeyTable::new())),
            timeouts: Timeouts::default(),
        }
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
    /// trying routes as the module docs say; `hint` is what worked with
    /// this peer before. The whole dial, fallbacks included, must finish
    /// within `timeout`. Returns the connection, the peer's handshake and
    /// the route that worked.
    ///
    /// Errors: the last failure ([`DialError`]); [`DialError::Timeout`].
    pub async fn dial(
        &self,
        addr: SocketAddr,
        info_hash: InfoHash,
        peer_id: [u8; 20],
        hint: Option<Route>,
        timeout: Duration,
    ) -> Result<(PeerConn, Handshake, Route), DialError> {
        let steps = async {
            let mse_first = match (self.policy, hint) {
                (Policy::Off, _) => false,
                (Policy::Require, _) => true,
                // What worked before: plaintext stays plaintext.
                (Policy::Prefer, Some(r)) => r.mse.is_some(),
                (Policy::Prefer, None) => true,
            };
            let stream = connect_tcp(addr).await?;
            if !mse_first {
                return handshake_tcp(stream, info_hash, peer_id).await;
            }
            let r = match mse::initiate(stream, info_hash, self.policy, &[], self.timeouts).await {
                Ok(s) => {
                    let crypto = s.crypto();
                    let (r, w) = s.into_split_with(TcpStream::into_split);
                    let conn = PeerConn::from_halves(r, w, addr);
                    let route = Route {
                        kind: Kind::Tcp,
                        mse: Some(crypto),
                    };
                    return Ok(handshake_out(conn, info_hash, peer_id, route).await?);
                }
                Err(e) => e,
            };
            if !(r.retry_plaintext() && self.policy.falls_back_to_plaintext()) {
                return Err(DialError::Mse(r));
            }
            tracing::debug!("{addr}: no MSE ({r}); dialling again in plaintext");
            let stream = connect_tcp(addr).await?;
            handshake_tcp(stream, info_hash, peer_id).await
        };
        tokio::time::timeout(timeout, steps)
            .await
            .map_err(|_| DialError::Timeout)?
    }

    /// Answers a connection a peer opened on `kind` (TCP here; uTP streams
    /// come through the same path): plaintext or MSE, told apart by the
    /// first bytes; then the BitTorrent handshake, answered only when
    /// `known(info_hash)` (and, for MSE, only for the info-hash the
    /// obfuscated handshake named). Must finish within `timeout`.
    ///
    /// Errors: [`DialError::Mse`] (garbage, an unknown torrent, a refused
    /// method), [`DialError::Wire`], [`DialError::Timeout`].
    pub async fn answer_tcp(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        known: impl Fn(&InfoHash) -> bool,
        peer_id: [u8; 20],
        timeout: Duration,
    ) -> Result<(PeerConn, Handshake, Route), DialError> {
        let steps = async {
            stream.set_nodelay(true).map_err(DialError::Connect)?;
            let find = |h: &[u8; 20]| self.skeys.read().unwrap_or_else(|e| e.into_inner()).find(h);
            let timeouts = Timeouts {
                total: timeout,
                ..self.timeouts
            };
            match mse::accept_inbound(stream, find, self.policy, timeouts).await? {
                Inbound::Plaintext(s) => {
                    let (r, w) = s.into_split_with(TcpStream::into_split);
                    let conn = PeerConn::from_halves(r, w, addr);
                    let route = Route {
                        kind: Kind::Tcp,
                        mse: None,
                    };
                    handshake_in(conn, known, None, peer_id, route).await
                }
                Inbound::Encrypted(acc) => {
                    let (s, ih) = acc.into_stream();
                    let route = Route {
                        kind: Kind::Tcp,
                        mse: Some(s.crypto()),
                    };
                    let (r, w) = s.into_split_with(TcpStream::into_split);
                    let conn = PeerConn::from_halves(r, w, addr);
                    handshake_in(conn, known, Some(ih), peer_id, route).await
                }
            }
        };
        tokio::time::timeout(timeout, steps)
            .await
            .map_err(|_| DialError::Timeout)?
    }
}

/// Connects over TCP.
async fn connect_tcp(addr: SocketAddr) -> Result<TcpStream, DialError> {
    let s = TcpStream::connect(addr).await.map_err(DialError::Connect)?;
    s.set_nodelay(true).map_err(DialError::Connect)?;
    Ok(s)
}

/// A plaintext BitTorrent handshake on a fresh TCP connection.
async fn handshake_tcp(
    stream: TcpStream,
    info_hash: InfoHash,
    peer_id: [u8; 20],
) -> Result<(PeerConn, Handshake, Route), DialError> {
    let addr = stream.peer_addr().map_err(DialError::Connect)?;
    let (r, w) = stream.into_split();
    let conn = PeerConn::from_halves(r, w, addr);
    let route = Route {
        kind: Kind::Tcp,
        mse: None,
    };
    handshake_out(conn, info_hash, peer_id, route).await
}

async fn handshake_out(
    conn: PeerConn,
    info_hash: InfoHash,
    peer_id: [u8; 20],
    route: Route,
) -> Result<(PeerConn, Handshake, Route), DialError> {
    // (The caller's timeout bounds the whole dial.)
    let (conn, hs) = conn.outgoing(info_hash, peer_id).await?;
    Ok((conn, hs, route))
}

/// The BitTorrent handshake of an incoming connection; with `mse_ih`, the
/// peer must name the torrent its MSE handshake named.
async fn handshake_in(
    conn: PeerConn,
    known: impl Fn(&InfoHash) -> bool,
    mse_ih: Option<InfoHash>,
    peer_id: [u8; 20],
    route: Route,
) -> Result<(PeerConn, Handshake, Route), DialError> {
    let lookup = |ih: &InfoHash| mse_ih.is_none_or(|m| m == *ih) && known(ih);
    // (The caller's timeout bounds the whole exchange.)
    let (conn, hs) = conn.incoming(lookup, peer_id).await?;
    Ok((conn, hs, route))
}

impl<R: TransportRead> TransportRead for MseReader<R> {
    fn after_read(&self) {
        self.get_ref().after_read();
    }
}
