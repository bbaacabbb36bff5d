//! A framed peer connection (BEP 3): dial or accept, exchange the 68-byte
//! handshakes, then read and write [`Message`]s. The transport is any byte
//! stream ([`TransportRead`], [`TransportWrite`]): TCP, which
//! [`PeerConn::connect`] and [`PeerConn::accept`] use, or any other
//! (MSE-encrypted, uTP) through [`PeerConn::from_stream`] and the
//! `handshake_*` methods.
//!
//! Reading keeps one `BytesMut` buffer per connection: [`Message::check`]
//! decides whether a whole frame is buffered, and only then is the frame split
//! off (no copy) and parsed, so `piece` data arrives as a slice of the read
//! buffer. Writing goes through a `BufWriter`; call `flush` after a batch.
//! [`PeerConn::split`] gives a [`PeerReader`] and a [`PeerWriter`] that two
//! tasks can own, so a slow write never stalls reading and vice versa.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use crate::hash::InfoHash;
use crate::peer::wire::{DEFAULT_MAX_MESSAGE_LEN, Handshake, Message, WireError};

/// Initial capacity of the read buffer: a couple of blocks.
const READ_BUF: usize = 64 * 1024;

/// The reading half of a peer connection's transport: any byte stream
/// (plain TCP, MSE-encrypted TCP, uTP, an in-memory pipe), with an optional
/// hook run after each read.
pub trait TransportRead: AsyncRead + Send + Unpin + 'static {
    /// Runs after every read from the stream. TCP re-arms `TCP_QUICKACK`
    /// here; the default does nothing.
    fn after_read(&self) {}
}

impl TransportRead for OwnedReadHalf {
    fn after_read(&self) {
        quick_ack(self);
    }
}

impl<S: AsyncRead + Send + 'static> TransportRead for tokio::io::ReadHalf<S> {}

/// The writing half of a peer connection's transport.
pub trait TransportWrite: AsyncWrite + Send + Unpin + 'static {}

impl<W: AsyncWrite + Send + Unpin + 'static> TransportWrite for W {}

/// The reading half of a peer connection.
pub struct PeerReader {
    /// The transport's read half.
    half: Box<dyn TransportRead>,
    /// Bytes received but not yet parsed (at most one partial frame after a
    /// message is returned, plus whatever else the last read brought).
    buf: BytesMut,
    /// Largest accepted length prefix, in bytes.
    max_message_len: u32,
    /// The remote address, for logs.
    peer_addr: SocketAddr,
}

/// The writing half of a peer connection.
pub struct PeerWriter {
    /// The transport's write half, buffered so small messages coalesce.
    half: BufWriter<Box<dyn TransportWrite>>,
    /// Reused encoding buffer.
    scratch: BytesMut,
    /// The remote address, for logs.
    peer_addr: SocketAddr,
}

impl std::fmt::Debug for PeerReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerReader")
            .field("peer_addr", &self.peer_addr)
            .field("buffered", &self.buf.len())
            .finish()
    }
}

impl std::fmt::Debug for PeerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerWriter")
            .field("peer_addr", &self.peer_addr)
            .finish()
    }
}

/// A peer connection after the handshake: both halves together. Use it
/// directly from one task, or [`PeerConn::split`] it.
#[derive(Debug)]
pub struct PeerConn {
    reader: PeerReader,
    writer: PeerWriter,
}

impl PeerConn {
    /// A connection over separate transport halves (before the handshake):
    /// see [`PeerConn::handshake_outgoing`] and
    /// [`PeerConn::handshake_incoming`].
    pub fn from_halves(
        r: impl TransportRead,
        w: impl TransportWrite,
        peer_addr: SocketAddr,
    ) -> PeerConn {
        PeerConn {
            reader: PeerReader {
                half: Box::new(r),
                buf: BytesMut::with_capacity(READ_BUF),
                max_message_len: DEFAULT_MAX_MESSAGE_LEN,
                peer_addr,
            },
            writer: PeerWriter {
                half: BufWriter::new(Box::new(w)),
                scratch: BytesMut::new(),
                peer_addr,
            },
        }
    }

    /// A connection over any byte stream (split with `tokio::io::split`),
    /// before the handshake.
    pub fn from_stream(
        stream: impl AsyncRead + AsyncWrite + Send + 'static,
        peer_addr: SocketAddr,
    ) -> PeerConn {
        let (r, w) = tokio::io::split(stream);
        PeerConn::from_halves(r, w, peer_addr)
    }

    /// A connection over TCP: Nagle off (requests and small control
    /// messages should not wait), `TCP_QUICKACK` after each read.
    fn from_tcp(stream: TcpStream) -> Result<PeerConn, WireError> {
        let peer_addr = stream.peer_addr()?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok(PeerConn::from_halves(r, w, peer_addr))
    }

    /// Dials `addr`, sends our handshake ([`Handshake::new`]: extension
    /// protocol and DHT bits set) and reads the peer's. The whole exchange
    /// must finish within `timeout`.
    ///
    /// Errors: [`WireError::Timeout`], [`WireError::Io`] (refused, reset),
    /// [`WireError::UnexpectedEof`], [`WireError::BadHandshake`],
    /// [`WireError::InfoHashMismatch`] when the peer answers for another
    /// torrent.
    pub async fn connect(
        addr: SocketAddr,
        info_hash: InfoHash,
        peer_id: [u8; 20],
        timeout: Duration,
    ) -> Result<(PeerConn, Handshake), WireError> {
        let steps = async {
            let stream = TcpStream::connect(addr).await?;
            PeerConn::from_tcp(stream)?
                .outgoing(info_hash, None, peer_id)
                .await
        };
        tokio::time::timeout(timeout, steps)
            .await
            .map_err(|_| WireError::Timeout("connect and handshake"))?
    }

    /// Answers an incoming TCP connection: see
    /// [`PeerConn::handshake_incoming`].
    pub async fn accept(
        stream: TcpStream,
        lookup: impl Fn(&InfoHash) -> bool,
        our_peer_id: [u8; 20],
        timeout: Duration,
    ) -> Result<(PeerConn, Handshake), WireError> {
        let steps = async {
            PeerConn::from_tcp(stream)?
                .incoming(lookup, |_| None, our_peer_id)
                .await
        };
        tokio::time::timeout(timeout, steps)
            .await
            .map_err(|_| WireError::Timeout("handshake"))?
    }

    /// On a connection we opened (any transport): sends our handshake and
    /// reads the peer's, within `timeout`. Errors as [`PeerConn::connect`].
    pub async fn handshake_outgoing(
        self,
        info_hash: InfoHash,
        peer_id: [u8; 20],
        timeout: Duration,
    ) -> Result<(PeerConn, Handshake), WireError> {
        tokio::time::timeout(timeout, self.outgoing(info_hash, None, peer_id))
            .await
            .map_err(|_| WireError::Timeout("handshake"))?
    }

    /// On a connection the peer opened (any transport): reads the peer's
    /// handshake up to the info-hash, answers with ours only when
    /// `lookup(info_hash)` is true, then reads the peer's id (some clients
    /// send it only after our handshake). Must finish within `timeout`.
    ///
    /// Errors: [`WireError::UnknownInfoHash`] (nothing was sent),
    /// [`WireError::BadHandshake`], [`WireError::Timeout`],
    /// [`WireError::UnexpectedEof`], [`WireError::Io`].
    pub async fn handshake_incoming(
        self,
        lookup: impl Fn(&InfoHash) -> bool,
        our_peer_id: [u8; 20],
        timeout: Duration,
    ) -> Result<(PeerConn, Handshake), WireError> {
        tokio::time::timeout(timeout, self.incoming(lookup, |_| None, our_peer_id))
            .await
            .map_err(|_| WireError::Timeout("handshake"))?
    }

    /// Our handshake for a dial naming `info_hash`: 68 bytes, with the
    /// BEP 52 v2 bit set when `upgrade` is given (see [`PeerConn::outgoing`]).
    pub(crate) fn our_handshake(
        info_hash: InfoHash,
        upgrade: Option<InfoHash>,
        peer_id: [u8; 20],
    ) -> Vec<u8> {
        let ours = Handshake::new(info_hash, peer_id);
        let ours = if upgrade.is_some() {
            ours.with_v2_bit()
        } else {
            ours
        };
        ours.encode().to_vec()
    }

    /// Sends our handshake naming `info_hash` and reads the peer's. With
    /// `upgrade` (the truncated v2 info-hash of a hybrid dialled by its v1
    /// info-hash) our handshake sets the BEP 52 v2 bit and the peer may
    /// answer with that hash instead: the returned handshake's `info_hash`
    /// is then the one the connection is on ([`super::wire::reply_accepted`]).
    pub(crate) async fn outgoing(
        mut self,
        info_hash: InfoHash,
        upgrade: Option<InfoHash>,
        peer_id: [u8; 20],
    ) -> Result<(PeerConn, Handshake), WireError> {
        let ours = PeerConn::our_handshake(info_hash, upgrade, peer_id);
        self.writer.half.write_all(&ours).await?;
        self.writer.flush().await?;
        self.outgoing_sent(info_hash, upgrade).await
    }

    /// [`PeerConn::outgoing`] after our handshake already went out (in the
    /// initial payload of an MSE handshake, which saves a round trip):
    /// reads and checks the peer's.
    pub(crate) async fn outgoing_sent(
        mut self,
        info_hash: InfoHash,
        upgrade: Option<InfoHash>,
    ) -> Result<(PeerConn, Handshake), WireError> {
        let theirs = self.reader.read_handshake().await?;
        if !super::wire::reply_accepted(info_hash, upgrade, theirs.info_hash) {
            return Err(WireError::InfoHashMismatch {
                expected: info_hash,
                got: theirs.info_hash,
            });
        }
        Ok((self, theirs))
    }

    /// Answers the peer's handshake when `lookup(info_hash)`; `upgrade`
    /// gives, for a hybrid torrent we serve by that hash, its truncated v2
    /// info-hash: a dialler that set the BEP 52 v2 bit is then answered
    /// with it ([`super::wire::upgrade_answer`]), as libtorrent does. The
    /// returned handshake is the peer's, except that its `info_hash` is the
    /// one the connection is on (the one our answer named).
    pub(crate) async fn incoming(
        mut self,
        lookup: impl Fn(&InfoHash) -> bool,
        upgrade: impl Fn(&InfoHash) -> Option<InfoHash>,
        our_peer_id: [u8; 20],
    ) -> Result<(PeerConn, Handshake), WireError> {
        // the protocol string first: refuse non-BitTorrent (or MSE
        // encrypted) streams as early as possible
        self.reader.fill(20, "handshake").await?;
        if !Handshake::is_protocol_prefix(&self.reader.buf[..20]) {
            return Err(WireError::BadHandshake);
        }
        self.reader.fill(48, "handshake").await?;
        let mut info_hash = [0u8; 20];
        info_hash.copy_from_slice(&self.reader.buf[28..48]);
        let info_hash = InfoHash(info_hash);
        if !lookup(&info_hash) {
            return Err(WireError::UnknownInfoHash(info_hash));
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&self.reader.buf[20..28]);
        let answer = super::wire::upgrade_answer(&reserved, info_hash, upgrade(&info_hash));
        if answer != info_hash {
            tracing::debug!(
                "{}: dialled on {info_hash} with the v2 bit: answering on the v2 info-hash {answer} (BEP 52 upgrade)",
                self.reader.peer_addr
            );
        }
        self.writer
            .half
            .write_all(&Handshake::new(answer, our_peer_id).encode())
            .await?;
        self.writer.flush().await?;
        let mut theirs = self.reader.read_handshake().await?;
        theirs.info_hash = answer;
        Ok((self, theirs))
    }

    /// The remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.reader.peer_addr
    }

    /// Sets the largest accepted message length (bytes, excluding the 4-byte
    /// prefix); see [`crate::peer::wire::max_message_len_for`].
    pub fn set_max_message_len(&mut self, max: u32) {
        self.reader.set_max_message_len(max);
    }

    /// See [`PeerReader::read_message`].
    pub async fn read_message(&mut self) -> Result<Option<Message>, WireError> {
        self.reader.read_message().await
    }

    /// See [`PeerWriter::write_message`].
    pub async fn write_message(&mut self, msg: &Message) -> Result<(), WireError> {
        self.writer.write_message(msg).await
    }

    /// See [`PeerWriter::send`].
    pub async fn send(&mut self, msg: &Message) -> Result<(), WireError> {
        self.writer.send(msg).await
    }

    /// See [`PeerWriter::flush`].
    pub async fn flush(&mut self) -> Result<(), WireError> {
        self.writer.flush().await
    }

    /// The two halves, for a reading task and a writing task. Bytes the peer
    /// sent right after its handshake stay in the reader.
    pub fn split(self) -> (PeerReader, PeerWriter) {
        (self.reader, self.writer)
    }
}

impl PeerReader {
    /// Reads the peer's whole 68-byte handshake.
    async fn read_handshake(&mut self) -> Result<Handshake, WireError> {
        self.fill(Handshake::LEN, "handshake").await?;
        let mut raw = [0u8; Handshake::LEN];
        self.buf.copy_to_slice(&mut raw);
        Handshake::decode(&raw)
    }

    /// Reads until the buffer holds at least `n` bytes.
    async fn fill(&mut self, n: usize, what: &'static str) -> Result<(), WireError> {
        while self.buf.len() < n {
            self.buf.reserve(n - self.buf.len());
            if self.half.read_buf(&mut self.buf).await? == 0 {
                return Err(WireError::UnexpectedEof(what));
            }
        }
        Ok(())
    }

    /// The next message, `Ok(None)` when the peer closed the connection
    /// between messages.
    ///
    /// Errors: [`WireError::UnexpectedEof`] when it closed in the middle of
    /// one, [`WireError::TooLong`], [`WireError::Malformed`],
    /// [`WireError::Io`]. Cancel-safe (usable in `tokio::select!`): bytes
    /// already read stay buffered.
    pub async fn read_message(&mut self) -> Result<Option<Message>, WireError> {
        loop {
            if let Some(n) = Message::check(&self.buf, self.max_message_len)? {
                let frame = self.buf.split_to(n).freeze();
                return Message::parse(frame).map(Some);
            }
            // room for the rest of the frame when its length is known
            let want = match self.buf.get(..4) {
                Some(p) => 4 + u32::from_be_bytes([p[0], p[1], p[2], p[3]]) as usize,
                None => 4,
            };
            self.buf
                .reserve(want.saturating_sub(self.buf.len()).max(4096));
            let n = self.half.read_buf(&mut self.buf).await?;
            self.half.after_read();
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(WireError::UnexpectedEof("message"))
                };
            }
        }
    }

    /// Sets the largest accepted message length (bytes, excluding the 4-byte
    /// prefix). Default [`DEFAULT_MAX_MESSAGE_LEN`].
    pub fn set_max_message_len(&mut self, max: u32) {
        self.max_message_len = max;
    }

    /// The remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }
}

impl PeerWriter {
    /// Queues `msg` in the write buffer; it is sent when the buffer fills or
    /// on [`PeerWriter::flush`]. Errors: [`WireError::Io`].
    pub async fn write_message(&mut self, msg: &Message) -> Result<(), WireError> {
        self.scratch.clear();
        msg.encode_into(&mut self.scratch);
        self.half.write_all(&self.scratch).await?;
        Ok(())
    }

    /// Writes everything buffered to the socket. Errors: [`WireError::Io`].
    pub async fn flush(&mut self) -> Result<(), WireError> {
        self.half.flush().await?;
        Ok(())
    }

    /// [`PeerWriter::write_message`] then [`PeerWriter::flush`].
    pub async fn send(&mut self, msg: &Message) -> Result<(), WireError> {
        self.write_message(msg).await?;
        self.flush().await
    }

    /// Flushes, then closes our sending direction (TCP FIN).
    pub async fn shutdown(&mut self) -> Result<(), WireError> {
        self.half.shutdown().await?;
        Ok(())
    }

    /// The remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }
}

/// Asks the kernel to acknowledge received data at once instead of
/// delaying the ACK (Linux `TCP_QUICKACK`, which the kernel clears again by
/// itself, hence after every read). A peer that sends with Nagle's
/// algorithm on (libtorrent does) otherwise holds the last, partial segment
/// of a burst until our delayed ACK: measured ~40 ms at the end of nearly
/// every 4 MiB piece on loopback. Best effort.
fn quick_ack(half: &OwnedReadHalf) {
    let _ = socket2::SockRef::from(half.as_ref()).set_tcp_quickack(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both handshakes and a message over an in-memory stream: the
    /// connection needs no TCP (MSE and uTP transports plug in here).
    #[tokio::test]
    async fn handshakes_and_messages_over_any_stream() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let addr: SocketAddr = "192.0.2.1:6881".parse().unwrap();
        let ih = InfoHash([7; 20]);
        let dialer =
            PeerConn::from_stream(a, addr).handshake_outgoing(ih, [1; 20], Duration::from_secs(5));
        let answerer = PeerConn::from_stream(b, addr).handshake_incoming(
            |h| *h == ih,
            [2; 20],
            Duration::from_secs(5),
        );
        let (out, inc) = tokio::join!(dialer, answerer);
        let (mut out, theirs) = out.unwrap();
        let (mut inc, ours) = inc.unwrap();
        assert_eq!((theirs.peer_id, ours.peer_id), ([2; 20], [1; 20]));
        assert_eq!(ours.info_hash, ih);
        out.send(&Message::Have(42)).await.unwrap();
        assert_eq!(inc.read_message().await.unwrap(), Some(Message::Have(42)));
        drop(out);
        assert_eq!(inc.read_message().await.unwrap(), None, "closed");

        // An unknown info-hash is refused before anything is sent back.
        let (a, b) = tokio::io::duplex(1024);
        let dialer =
            PeerConn::from_stream(a, addr).handshake_outgoing(ih, [1; 20], Duration::from_secs(5));
        let answerer = PeerConn::from_stream(b, addr).handshake_incoming(
            |_| false,
            [2; 20],
            Duration::from_secs(5),
        );
        let (out, inc) = tokio::join!(dialer, answerer);
        assert!(matches!(inc, Err(WireError::UnknownInfoHash(h)) if h == ih));
        assert!(out.is_err());
    }

    /// Dials a hybrid on `v1` (offering the upgrade to `v2` when
    /// `offer`); the answerer serves `v1` and upgrades to `v2` when
    /// `upgrades`. Returns the hash each side says the connection is on.
    async fn hybrid_dial(offer: bool, upgrades: bool) -> (InfoHash, InfoHash) {
        let (v1, v2) = (InfoHash([1; 20]), InfoHash([2; 20]));
        let addr: SocketAddr = "192.0.2.1:6881".parse().unwrap();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let dialer = PeerConn::from_stream(a, addr).outgoing(v1, offer.then_some(v2), [1; 20]);
        let answerer = PeerConn::from_stream(b, addr).incoming(
            |h| *h == v1 || *h == v2,
            |h| (upgrades && *h == v1).then_some(v2),
            [2; 20],
        );
        let (out, inc) = tokio::join!(dialer, answerer);
        let ((mut out, theirs), (mut inc, ours)) = (out.unwrap(), inc.unwrap());
        // the connection works after the upgrade
        out.send(&Message::Have(3)).await.unwrap();
        assert_eq!(inc.read_message().await.unwrap(), Some(Message::Have(3)));
        assert_eq!(ours.supports_v2(), offer, "the v2 bit as sent");
        (theirs.info_hash, ours.info_hash)
    }

    /// BEP 52 upgrade path: a hybrid's v1 connection becomes a v2 one
    /// only when the dialler sets the v2 bit and the answerer upgrades.
    #[tokio::test]
    async fn hybrid_connection_upgrade() {
        let (v1, v2) = (InfoHash([1; 20]), InfoHash([2; 20]));
        assert_eq!(hybrid_dial(true, true).await, (v2, v2), "upgraded");
        assert_eq!(hybrid_dial(false, true).await, (v1, v1), "no bit: v1");
        assert_eq!(
            hybrid_dial(true, false).await,
            (v1, v1),
            "the answerer keeps v1 (libtorrent over MSE): accepted"
        );
        // an answer naming the v2 hash we did not offer is refused
        let addr: SocketAddr = "192.0.2.1:6881".parse().unwrap();
        let (a, b) = tokio::io::duplex(64 * 1024);
        let dialer = PeerConn::from_stream(a, addr).outgoing(v1, None, [1; 20]);
        let liar = async move {
            let mut conn = PeerConn::from_stream(b, addr);
            let hs = Handshake::new(v2, [2; 20]).encode();
            conn.writer.half.write_all(&hs).await.unwrap();
            conn.flush().await.unwrap();
            conn
        };
        let (out, _conn) = tokio::join!(dialer, liar);
        assert!(matches!(out, Err(WireError::InfoHashMismatch { got, .. }) if got == v2));
    }
}
