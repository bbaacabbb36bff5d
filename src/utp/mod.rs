//! uTP, the Micro Transport Protocol (BEP 29): BitTorrent's reliable,
//! ordered byte stream over UDP, a second transport beside TCP for the peer
//! wire protocol.
//!
//! This module is a thin adapter over the `librqbit-utp` crate (0.7), which
//! implements the packet format (BEP 29 "header format", `ST_DATA`,
//! `ST_FIN`, `ST_STATE`, `ST_RESET`, `ST_SYN`), the connection state
//! machine ("connection setup"), selective ACK (BEP 29 "extension 1"),
//! retransmission, delayed ACKs and path-MTU probing. Its congestion
//! controller is CUBIC, not LEDBAT (BEP 29 "congestion control"): the crate
//! exposes no hook to plug another one, so our uploads over uTP compete with
//! other traffic like TCP does instead of yielding to it. Downloads are paced
//! by the sender's controller and are not affected. `docs/utp.md` has the
//! evaluation behind this choice.
//!
//! What the adapter adds on top of the crate:
//! - [`UtpSocket::connect`] retransmits the `ST_SYN` (the crate sends one
//!   and waits forever) and gives up after a caller-chosen timeout;
//! - [`UtpSocket::accept`] is fed by a background task that takes every
//!   incoming connection from the crate at once (so its small SYN cache
//!   never fills), refuses more than [`UtpConfig::max_per_ip`] live
//!   connections per remote IP, and keeps at most
//!   [`UtpConfig::accept_backlog`] connections waiting for `accept`;
//! - every stream carries a permit of a per-socket limit
//!   ([`UtpConfig::max_connections`]), released when the stream is dropped;
//! - the UDP socket is bound here, not by the crate, so that its kernel
//!   buffers are ours to size ([`UtpConfig::udp_send_buffer`],
//!   [`UtpConfig::udp_recv_buffer`]): the crate drops a datagram the kernel
//!   does not take at once and leaves it to the retransmission timer.
//!
//! A [`UtpStream`] implements `tokio::io::AsyncRead + AsyncWrite + Unpin +
//! Send + 'static`, so the peer session and MSE run over it as over a
//! `TcpStream`.

mod packet;
mod socket;

pub use packet::{HEADER_LEN, PacketHeader, PacketType};
pub use socket::{UtpConfig, UtpError, UtpSocket, UtpStream};
