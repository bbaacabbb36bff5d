//! [`UtpSocket`]: one UDP socket that dials and accepts uTP connections
//! (BEP 29), and [`UtpStream`], one connection as a tokio byte stream.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use librqbit_utp::{SocketOpts, UtpSocketUdp};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long the first `ST_SYN` of [`UtpSocket::connect`] waits for its
/// `ST_STATE` answer before a new `ST_SYN` is sent; each later wait doubles.
/// libtorrent waits 3 s for its first SYN; we retry sooner because a lost
/// SYN is the common case on a lossy path and the answer normally takes one
/// round trip.
const FIRST_SYN_WAIT: Duration = Duration::from_millis(1000);

/// How long a connection may go without hearing from the peer before
/// librqbit-utp closes it ("remote was inactive for too long").
///
/// The crate's default is 10 s, and its timer is buggy for us (librqbit-utp
/// 0.7.0, `stream_dispatch.rs`): every `ST_DATA` received re-arms it, and
/// only an ACK of our own data turns it off. A peer that sends a message
/// after all of ours was acknowledged (a `have`, `ut_pex`, libtorrent's
/// `upload_only`) and then nothing for 10 s was dropped, although nothing
/// was outstanding either way; BitTorrent peers sit quiet far longer than
/// that (keep-alives come every 1-2 minutes). Above the peer session's own
/// idle timeout (150 s), it leaves idleness to the session, as over TCP. A
/// dead peer with our data unacknowledged is still detected by the crate's
/// retransmission limit (5 tries with a doubling timeout: seconds).
const REMOTE_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(180);

/// Limits and buffer sizes of a [`UtpSocket`].
#[derive(Debug, Clone)]
pub struct UtpConfig {
    /// Most live connections on the socket, incoming and outgoing together,
    /// half-open ones included (an `ST_SYN` answered but not yet confirmed
    /// counts; so does a closed stream until its `ST_FIN` exchange ends).
    /// Past it, new `ST_SYN`s wait in the crate's cache of 32 and beyond
    /// that are answered with `ST_RESET`, and [`UtpSocket::connect`] fails
    /// with [`UtpError::Connect`]. Each connection's buffers grow with use
    /// up to `recv_window + send_buffer`, so this also bounds memory.
    /// Default 200.
    pub max_connections: usize,
    /// Most accepted connections from one remote IP address (any port)
    /// alive at once; more are closed as soon as they arrive. Bounds what a
    /// single host can take, e.g. with a flood of `ST_SYN`s from many
    /// source ports. Default 8.
    pub max_per_ip: usize,
    /// Most accepted connections waiting for [`UtpSocket::accept`]; more are
    /// closed as they arrive. Default 32.
    pub accept_backlog: usize,
    /// Receive buffer of each connection in bytes: data received but not yet
    /// read, plus out-of-order segments. It is the window advertised to the
    /// sender (BEP 29 `wnd_size`), so it caps a download at about
    /// `recv_window / RTT`. Default 1 MiB.
    pub recv_window: usize,
    /// Send buffer of each connection in bytes (written but not yet
    /// acknowledged); a write waits when it is full. Default 1 MiB.
    pub send_buffer: usize,
    /// `SO_SNDBUF` asked for the UDP socket, in bytes: datagrams of every
    /// connection queued in the kernel. When it is full, librqbit-utp 0.7
    /// drops the datagram ("UDP socket full, could not send packet") and
    /// sends it again only on its retransmission timeout, so a small one
    /// stalls many busy connections at once. The kernel caps it at
    /// `net.core.wmem_max` (and doubles it for its bookkeeping). Default
    /// 4 MiB.
    pub udp_send_buffer: usize,
    /// `SO_RCVBUF` asked for the UDP socket, in bytes: datagrams received
    /// but not yet read by the socket's task; beyond it the kernel drops
    /// them. Capped at `net.core.rmem_max`. Default 4 MiB.
    pub udp_recv_buffer: usize,
}

impl Default for UtpConfig {
    fn default() -> UtpConfig {
        UtpConfig {
            max_connections: 200,
            max_per_ip: 8,
            accept_backlog: 32,
            recv_window: 1 << 20,
            send_buffer: 1 << 20,
            udp_send_buffer: 4 << 20,
            udp_recv_buffer: 4 << 20,
        }
    }
}

/// Why a uTP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UtpError {
    /// The UDP socket could not be bound (port in use, address not local),
    /// or a limit in [`UtpConfig`] is zero.
    #[error("cannot bind uTP on UDP {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// No `ST_STATE` answered our `ST_SYN`s (BEP 29 "connection setup")
    /// within the timeout: the peer is gone, filters UDP, or refused us.
    #[error("uTP connect to {0} timed out")]
    Timeout(SocketAddr),
    /// The connection could not be started: too many live connections
    /// ([`UtpConfig::max_connections`]) or the `ST_SYN` could not be sent.
    #[error("uTP connect to {addr}: {reason}")]
    Connect {
        /// The peer dialled.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// An IPv6 peer dialled from an IPv4-only socket or the reverse.
    #[error("uTP socket on {local} cannot reach {remote} (address family)")]
    AddressFamily {
        /// Our socket's address.
        local: SocketAddr,
        /// The peer dialled.
        remote: SocketAddr,
    },
    /// The socket was shut down.
    #[error("uTP socket closed")]
    Closed,
}

/// Live accepted connections per remote IP, shared by the accept task and
/// the [`IpSlot`]s of the streams it handed out.
type PerIp = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One counted accepted connection from an IP; uncounted on drop.
#[derive(Debug)]
struct IpSlot {
    per_ip: PerIp,
    ip: IpAddr,
}

impl IpSlot {
    /// Counts one more connection from `ip`, or `None` when it already has
    /// `max` of them.
    fn take(per_ip: &PerIp, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut map = per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            per_ip: per_ip.clone(),
            ip,
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// A UDP socket speaking uTP (BEP 29): dials peers with
/// [`UtpSocket::connect`] and takes their connections with
/// [`UtpSocket::accept`].
///
/// Bind it to the port number of the TCP peer listener, so that a peer that
/// learnt our port (DHT `announce_peer` with `implied_port`, PEX, the BEP 10
/// `p` key) reaches us by either transport. Bound to `[::]:PORT` it is
/// dual-stack and serves IPv4 peers too (their addresses are reported as
/// plain IPv4); bound to `0.0.0.0:PORT` or one address it serves that
/// family only.
///
/// Incoming datagrams are read by a task of the crate; each connection is a
/// task too. Everything stops when the `UtpSocket` is dropped (live streams
/// then fail their reads and writes).
#[derive(Debug)]
pub struct UtpSocket {
    /// The crate's socket and dispatcher.
    inner: Arc<UtpSocketUdp>,
    /// The bound address (with the port chosen when 0 was asked for).
    local: SocketAddr,
    /// Connections accepted by the background task, waiting for `accept`.
    incoming: tokio::sync::Mutex<mpsc::Receiver<UtpStream>>,
    /// Stops the crate's tasks on drop.
    cancel: CancellationToken,
    /// The background accept task, aborted on drop.
    accept_task: JoinHandle<()>,
}

impl UtpSocket {
    /// Binds a UDP socket at `addr` (port 0 picks one) and starts serving
    /// uTP on it with `config`'s limits. Must be called inside a tokio
    /// runtime.
    ///
    /// Errors: [`UtpError::Bind`].
    pub async fn bind(addr: SocketAddr, config: UtpConfig) -> Result<UtpSocket, UtpError> {
        let bind_err = |reason: String| UtpError::Bind { addr, reason };
        let nz = |n: usize, what: &str| {
            NonZeroUsize::new(n).ok_or_else(|| bind_err(format!("{what} must be above 0")))
        };
        let cancel = CancellationToken::new();
        let opts = SocketOpts {
            vsock_rx_bufsize_bytes: Some(nz(config.recv_window, "recv_window")?),
            vsock_tx_bufsize_bytes_max: Some(nz(config.send_buffer, "send_buffer")?),
            max_live_vsocks: Some(nz(config.max_connections, "max_connections")?),
            // like TCP_NODELAY on our TCP peers: a 17-byte request must not
            // wait for the previous segment's ACK
            disable_nagle: true,
            remote_inactivity_timeout: Some(REMOTE_INACTIVITY_TIMEOUT),
            cancellation_token: cancel.clone(),
            ..Default::default()
        };
        nz(config.max_per_ip, "max_per_ip")?;
        nz(config.accept_backlog, "accept_backlog")?;
        let udp = librqbit_dualstack_sockets::UdpSocket::bind_udp(
            addr,
            librqbit_dualstack_sockets::BindOpts {
                request_dualstack: true,
                reuseport: false,
                device: None,
            },
        )
        .map_err(|e| bind_err(e.to_string()))?;
        configure_udp(udp.socket(), addr.is_ipv4(), &config);
        let inner = UtpSocketUdp::new_with_opts(udp, Default::default(), opts)
            .map_err(|e| bind_err(e.to_string()))?;
        let local = inner.bind_addr();
        let (tx, rx) = mpsc::channel(config.accept_backlog);
        let per_ip: PerIp = Arc::default();
        let accept_task = tokio::spawn(accept_loop(inner.clone(), tx, per_ip, config.max_per_ip));
        Ok(UtpSocket {
            inner,
            local,
            incoming: tokio::sync::Mutex::new(rx),
            cancel,
            accept_task,
        })
    }

    /// The bound address; its port is the one to advertise.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Dials `addr` (BEP 29 "connection setup": `ST_SYN`, answered by
    /// `ST_STATE`), sending a new `ST_SYN` after 1 s, 2 s, 4 s... without an
    /// answer, until `timeout` has passed. The returned stream is ready for
    /// the BitTorrent handshake.
    ///
    /// Errors: [`UtpError::Timeout`] (no answer; a peer that refuses with
    /// `ST_RESET` also ends here), [`UtpError::Connect`],
    /// [`UtpError::AddressFamily`], [`UtpError::Closed`].
    pub async fn connect(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<UtpStream, UtpError> {
        let dual = self.local.is_ipv6() && self.local.ip().is_unspecified();
        if !dual && addr.is_ipv4() != self.local.is_ipv4() {
            return Err(UtpError::AddressFamily {
                local: self.local,
                remote: addr,
            });
        }
        let deadline = Instant::now() + timeout;
        let mut wait = FIRST_SYN_WAIT;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(UtpError::Timeout(addr));
            }
            let this_try = wait.min(deadline - now);
            match tokio::time::timeout(this_try, self.inner.connect(addr)).await {
                Ok(Ok(stream)) => {
                    return Ok(UtpStream {
                        peer: stream.remote_addr(),
                        inner: stream,
                        _slot: None,
                    });
                }
                Ok(Err(librqbit_utp::Error::DispatcherDead)) => return Err(UtpError::Closed),
                Ok(Err(e)) => {
                    return Err(UtpError::Connect {
                        addr,
                        reason: e.to_string(),
                    });
                }
                // dropping the attempt forgets its SYN; the next one is new
                Err(_) => wait *= 2,
            }
        }
    }

    /// The next incoming connection (its `ST_SYN` answered), in arrival
    /// order. Connections over [`UtpConfig::max_per_ip`] or
    /// [`UtpConfig::accept_backlog`] were already closed and never show up.
    /// Cancel-safe.
    ///
    /// Errors: [`UtpError::Closed`] when the socket's dispatcher stopped.
    pub async fn accept(&self) -> Result<UtpStream, UtpError> {
        self.incoming
            .lock()
            .await
            .recv()
            .await
            .ok_or(UtpError::Closed)
    }
}

impl Drop for UtpSocket {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cancel.cancel();
    }
}

/// What librqbit-utp's own `new_udp_with_opts` sets on its socket, with
/// our buffer sizes: don't-fragment (its path-MTU probing needs it) and
/// `SO_SNDBUF`/`SO_RCVBUF` from `config` (logged when the kernel gives
/// less). Failures are logged, not fatal: the socket works with the
/// defaults, only slower under load.
fn configure_udp(sock: &tokio::net::UdpSocket, v4: bool, config: &UtpConfig) {
    let s = socket2::SockRef::from(sock);
    if let Err(e) = set_dontfrag(sock, v4) {
        tracing::debug!("uTP: cannot set don't-fragment: {e}");
    }
    let set = |what: &str,
               want: usize,
               set: &dyn Fn(usize) -> io::Result<()>,
               get: &dyn Fn() -> io::Result<usize>| {
        if let Err(e) = set(want) {
            tracing::warn!("uTP: cannot set the UDP {what} to {want} bytes: {e}");
        }
        match get() {
            // Linux reports twice what it grants (bookkeeping included)
            Ok(got) if got >= want => tracing::debug!("uTP: UDP {what} {got} bytes"),
            Ok(got) => tracing::info!(
                "uTP: UDP {what} is {got} bytes, {want} asked for (raise net.core.{}_max)",
                if what == "send buffer" {
                    "wmem"
                } else {
                    "rmem"
                }
            ),
            Err(e) => tracing::debug!("uTP: cannot read the UDP {what}: {e}"),
        }
    };
    set(
        "send buffer",
        config.udp_send_buffer,
        &|n| s.set_send_buffer_size(n),
        &|| s.send_buffer_size(),
    );
    set(
        "receive buffer",
        config.udp_recv_buffer,
        &|n| s.set_recv_buffer_size(n),
        &|| s.recv_buffer_size(),
    );
}

/// Don't-fragment on `sock`: `IP_MTU_DISCOVER` (or `IPV6_MTU_DISCOVER`)
/// = `IP_PMTUDISC_DO`, as the `dontfrag` crate under librqbit-utp sets it.
fn set_dontfrag(sock: &tokio::net::UdpSocket, v4: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let (level, name, value) = if v4 {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
        )
    } else {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
        )
    };
    // SAFETY: a valid open fd (borrowed from `sock`), and a pointer to a
    // c_int with its exact length, as setsockopt(2) reads it.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes every connection the crate accepts, so its SYN cache (32 entries)
/// never fills while `accept` is not being called, and applies the per-IP
/// and backlog limits. Dropping a refused stream makes the crate close it.
async fn accept_loop(
    inner: Arc<UtpSocketUdp>,
    tx: mpsc::Sender<UtpStream>,
    per_ip: PerIp,
    max_per_ip: usize,
) {
    loop {
        let stream = match inner.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("uTP accept loop ends: {e}");
                return;
            }
        };
        let peer = stream.remote_addr();
        let Some(slot) = IpSlot::take(&per_ip, peer.ip(), max_per_ip) else {
            tracing::debug!(%peer, "uTP: too many connections from this IP, closing");
            continue;
        };
        let stream = UtpStream {
            inner: stream,
            peer,
            _slot: Some(slot),
        };
        match tx.try_send(stream) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::debug!(%peer, "uTP: accept backlog full, closing");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// One uTP connection: a reliable, ordered byte stream in both directions,
/// used like a `TcpStream`. Reads return 0 at the peer's `ST_FIN`; an
/// `ST_RESET`, the peer going silent with data unacknowledged (5
/// retransmissions with a doubling timeout), nothing heard from the peer
/// for 180 s (the peer session's idle timeout, 150 s, normally acts
/// first), or the socket shutting down fail reads and writes with an
/// `io::Error`.
/// `flush` returns at once, as a `TcpStream`'s does; `shutdown` waits until
/// written data is acknowledged, then queues `ST_FIN`. Dropping the stream
/// closes it (after unsent data and a FIN, as long as the socket lives).
pub struct UtpStream {
    inner: librqbit_utp::UtpStream,
    /// The peer's address (IPv4 peers on a dual-stack socket as IPv4).
    peer: SocketAddr,
    /// The per-IP count of an accepted stream.
    _slot: Option<IpSlot>,
}

impl std::fmt::Debug for UtpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UtpStream")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl UtpStream {
    /// The peer's UDP address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

impl AsyncRead for UtpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for UtpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    /// Like a `TcpStream`'s: nothing to wait for once `poll_write` took the
    /// bytes. (The crate's own flush waits until every written byte is
    /// acknowledged, which would cost a round trip per flushed batch of
    /// peer messages.) Fails only when the connection is dead with data
    /// still unsent.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Sends `ST_FIN` after the written data: waits until that data is
    /// acknowledged, then returns as soon as the FIN is queued. (The
    /// crate's own shutdown also waits for the peer's FIN and the final
    /// ACK, seconds with some peers.) Reading goes on until the peer's FIN.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inner = Pin::new(&mut self.inner);
        match inner.poll_flush(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        // with nothing left unacknowledged, this marks the writer shut
        // down (the crate then sends ST_FIN) and waits for the full close,
        // which we do not
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => Poll::Ready(Ok(())),
        }
    }
}
