//! One peer connection's life: handshakes, metadata exchange, requests,
//! uploads (BEP 3 message flow, BEP 10 extension handshake, BEP 9, BEP 11).
//!
//! A reader task turns the transport into [`Message`]s; the session loop
//! ([`dispatch`]) owns the writer and reacts to: messages, its waker (the
//! picker has new wants), newly verified pieces (HAVE), a 1 s tick
//! (timeouts, keep-alives), and the swarm's shutdown. One file per concern:
//! [`metadata`] (BEP 10 handshake, BEP 9), [`pex`] (BEP 11), [`holepunch`]
//! (BEP 55), [`download`]
//! (their pieces, our interest, requests, blocks), [`upload`] (serving).
//! The session reaches its swarm only through [`Swarm`] methods. Any
//! protocol violation ends this connection only, with a [`SessionError`].

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::peer::conn::{PeerConn, PeerWriter};
use crate::peer::mse::Crypto;
use crate::peer::pex as pex_wire;
use crate::peer::transport::{Kind, Route, Transports};
use crate::peer::ut_metadata::MetadataAssembler;
use crate::peer::wire::{BlockRequest, Handshake, Message, WireError};
use crate::swarm::budget::Reservation;
use crate::swarm::{AssemblyPermit, ConnId, DialTarget, PeerSource, Req, Swarm};

mod dispatch;
mod download;
mod hashes;
mod holepunch;
mod metadata;
mod pex;
mod pipeline;
mod upload;

/// Why a session ended. Each message is one line for the log.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// The peer sent something that is not the peer protocol.
    #[error("protocol error: {0}")]
    Protocol(WireError),
    /// Writing to the peer failed (it closed, reset).
    #[error("write: {0}")]
    Write(WireError),
    /// The peer was banned (bad data, wrong metadata).
    #[error("banned")]
    Banned,
    /// The peer connected again from the same address; the new
    /// connection replaced this one (`Swarm::register_conn`).
    #[error("replaced by its new connection from the same address")]
    Replaced,
    #[error("idle for too long")]
    Idle,
    /// Requests went unanswered (the peer is snubbing us).
    #[error("requests unanswered for {secs} s ({outstanding} still outstanding)")]
    Snubbed { secs: u64, outstanding: usize },
    /// Both sides have every piece: nothing to exchange.
    #[error("both sides are seeders")]
    BothSeeders,
    #[error("bitfield of {len} bytes for {pieces} pieces")]
    BitfieldSize { len: usize, pieces: u32 },
    #[error("bitfield has spare bits set")]
    SpareBits,
    #[error("bitfield: {0}")]
    Bitfield(WireError),
    /// A HAVE (sent before the metadata was known) past the last piece.
    #[error("HAVE for piece {index} of {pieces}")]
    HaveBeyond { index: u32, pieces: u32 },
    #[error("HAVE for piece {0} out of range")]
    HaveOutOfRange(u32),
    #[error(
        "request for a block that does not exist (piece {}, offset {}, {} bytes)",
        .0.index, .0.begin, .0.length
    )]
    BadRequest(BlockRequest),
    #[error("too many blocks with a bad index, offset or size")]
    BadBlocks,
    #[error("too many blocks we never requested")]
    StrayBlocks,
    /// `hashes` messages (BEP 52) unasked or not proving, past the bound.
    #[error("{0} hashes messages dropped (unasked or not proving)")]
    BadHashes(u32),
    #[error("extension handshake: {0}")]
    ExtHandshake(WireError),
    #[error("ut_metadata: {0}")]
    UtMetadata(WireError),
    /// The metadata the peer offers is over our limit (bytes).
    #[error("metadata of {size} bytes exceeds the limit of {limit}")]
    MetadataTooLarge { size: u64, limit: u64 },
    #[error("ut_metadata total_size {total} differs from the handshake's {handshake:?}")]
    MetadataSizeMismatch { total: u64, handshake: Option<u64> },
    /// The size the peer gave for the metadata is refused.
    #[error("{0}")]
    Assembly(crate::peer::ut_metadata::MetadataError),
    /// A piece of the metadata does not fit (index, size).
    #[error("ut_metadata: {0}")]
    MetadataPiece(crate::peer::ut_metadata::MetadataError),
    /// The assembled metadata does not hash to the info-hash.
    #[error("metadata: {0}")]
    BadMetadata(crate::peer::ut_metadata::MetadataError),
    /// The metadata assembled from this peer was refused by the swarm.
    #[error("{0}")]
    Metadata(#[from] crate::swarm::MetadataError),
    #[error("{0}")]
    Upload(#[from] crate::swarm::UploadReadError),
    /// A blocking task of the session failed (a panic).
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A peer that sends nothing for this long is dropped (BEP 3 suggests
/// keep-alives every 2 minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(150);
/// Outstanding requests with no block arriving for this long: the peer is
/// snubbing us; its requests go back to the picker and it is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// We stay interested this long after the last wanted piece before we say
/// NOT_INTERESTED. A reader's next read (a seek) comes within moments:
/// libtorrent chokes a peer that says it is not interested and unchokes it
/// when it is again, and the choke arriving after our new requests would
/// discard them (BEP 3), so every block would be asked twice.
const NOT_INTERESTED_AFTER: Duration = Duration::from_secs(10);
/// Most blocks we queue for upload to one peer.
const MAX_UPLOAD_QUEUE: usize = 512;
/// A keep-alive goes to a TCP peer we sent nothing to for this long (BEP 3
/// suggests every 2 minutes).
const KEEPALIVE_TCP: Duration = Duration::from_secs(90);
/// A keep-alive goes to a uTP peer we sent nothing to for this long.
/// Transmission 3.00 over uTP reads only when a datagram arrives
/// (peer-io.c), so our BITFIELD and extension handshake, arriving with the
/// end of the BitTorrent handshake, waited unread for our next message;
/// after the metadata it then had no reason to send INTERESTED. The
/// keep-alive also keeps the uTP crate's inactivity timer from closing a
/// connection whose peer waits quietly (it fired 10 s after the peer's last
/// data before `utp::socket` raised it; see docs/utp.md).
const KEEPALIVE_UTP: Duration = Duration::from_secs(4);
/// Most messages read from a peer and not handled yet (then its socket
/// holds the rest: TCP flow control, not our memory).
const READ_QUEUE: usize = 64;

/// Bytes a message read from a peer holds while it waits in the read
/// queue, other than a block's (counted as in flight already).
fn queued_bytes(m: &Message) -> u64 {
    match m {
        Message::Bitfield(b) => b.len() as u64,
        Message::Extended { payload, .. } => payload.len() as u64,
        Message::Unknown { payload, .. } => payload.len() as u64,
        _ => 0,
    }
}

/// Runs a connected, handshaken peer until it closes, misbehaves or the
/// swarm stops. `addr` is the peer's address (for bans and logs).
pub(crate) async fn run(
    swarm: Arc<Swarm>,
    conn: PeerConn,
    theirs: Handshake,
    addr: SocketAddr,
    source: PeerSource,
    route: Route,
) {
    if theirs.peer_id == swarm.cfg.peer_id.0 {
        // Our own listen address came back (PEX, LSD, DHT): never again.
        tracing::debug!("{}: {addr} is ourselves ({source})", swarm.info_hash);
        if source != PeerSource::Incoming {
            swarm.forget_self(addr);
        }
        return;
    }
    let Some((id, waker)) = swarm.register_conn(addr, source) else {
        tracing::debug!(
            "{}: not keeping {addr}: connection limit or banned",
            swarm.info_hash
        );
        swarm.dial_failed(addr);
        return;
    };
    tracing::info!(
        "{}: connected to {addr} (from {source}) over {route}",
        swarm.info_hash
    );
    let mut s = Session::new(swarm.clone(), id, addr);
    s.utp = route.kind == Kind::Utp;
    s.handshake_hash = theirs.info_hash;
    // What other peers learn of this one (BEP 11 `added.f`).
    if route.kind == Kind::Utp {
        s.pex_flags |= pex_wire::FLAG_UTP;
        s.keepalive_every = KEEPALIVE_UTP;
    }
    if route.mse == Some(Crypto::Rc4) {
        s.pex_flags |= pex_wire::FLAG_ENCRYPTION;
    }
    if source != PeerSource::Incoming {
        // We dialled it: the address accepts connections (BEP 11 flag 0x10).
        s.pex_flags |= pex_wire::FLAG_OUTGOING;
        s.pex_addr = Some(addr);
        swarm.set_pex_entry(id, addr, s.pex_flags);
    }
    let mut conn = conn;
    conn.set_max_message_len(max_message_len(&swarm));
    let (mut reader, writer) = conn.split();
    let (tx, rx) = mpsc::channel(READ_QUEUE);
    let (hp_tx, hp_rx) = mpsc::channel(crate::swarm::HOLEPUNCH_OUTBOX);
    s.hp_outbox = Some(hp_tx);
    let reader_task = tokio::spawn(async move {
        loop {
            let r = reader.read_message().await;
            let end = !matches!(r, Ok(Some(_)));
            // Counted in the memory budget while queued (blocks count as
            // in flight from their request on).
            let held = match &r {
                Ok(Some(m)) => queued_bytes(m),
                _ => 0,
            };
            let queued = crate::swarm::budget::global().force(held);
            if tx.send((r, queued)).await.is_err() || end {
                break;
            }
        }
    });
    let result = s
        .run_loop(writer, rx, hp_rx, waker, theirs.supports_extensions())
        .await;
    reader_task.abort();
    match &result {
        Ok(()) => tracing::debug!("{}: {addr} closed", swarm.info_hash),
        Err(why) => tracing::info!("{}: dropping {addr}: {why}", swarm.info_hash),
    }
    swarm.note_peer_gone(addr, result.as_ref().err().map(|e| e as _));
    swarm.unregister_conn(id, s.we_unchoke);
}

/// How long one dial may take, fallbacks (another transport, plaintext
/// after MSE) included.
const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Dials `target` with `transports` (see [`Transports::dial`]), handshakes
/// for the swarm's info-hash, remembers the route that worked, and runs
/// the session.
pub(crate) async fn dial(swarm: Arc<Swarm>, target: DialTarget, transports: Transports) {
    let DialTarget { addr, source, hint } = target;
    let r = transports
        .dial(
            addr,
            swarm.info_hash,
            swarm.v2_upgrade_hash(),
            swarm.cfg.peer_id.0,
            hint,
            DIAL_TIMEOUT,
        )
        .await;
    swarm.dial_done();
    match r {
        Ok((conn, hs, route)) => {
            swarm.note_route(addr, route);
            run(swarm, conn, hs, addr, source, route).await
        }
        Err(e) => {
            if source == PeerSource::Holepunch {
                tracing::info!(
                    "{}: holepunch: dial of {addr} over uTP failed: {e}",
                    swarm.info_hash
                );
            } else {
                tracing::debug!(
                    "{}: cannot connect to {addr} ({source}): {e}",
                    swarm.info_hash
                );
            }
            swarm.note_dial_failure(addr, &e);
            swarm.dial_failed(addr);
            // BEP 55: a peer learned by PEX may be behind a NAT router;
            // a peer connected to both can introduce us.
            swarm.maybe_rendezvous(addr);
        }
    }
}

/// The largest message accepted from a peer of `swarm`, in bytes: room for
/// the bitfield of the torrent (or, before the metadata is known, of the
/// largest torrent whose info dictionary we accept: 20 bytes per piece) and
/// for a 16 KiB block or BEP 9 metadata piece. A longer length prefix ends
/// the connection before anything is allocated for it.
fn max_message_len(swarm: &Swarm) -> u32 {
    let pieces = match swarm.loaded() {
        Some(l) => l.info.num_pieces(),
        None => (swarm.cfg.max_metadata_size / 20).min(u32::MAX as u64) as u32,
    };
    let len = crate::peer::wire::max_message_len_for(pieces);
    // a v2 torrent's peers exchange `hashes` messages (BEP 52)
    match swarm.loaded() {
        Some(l) if l.info.version == crate::metainfo::MetaVersion::V1 => len,
        _ => len.max(crate::peer::wire::MAX_HASHES_MESSAGE_LEN),
    }
}

/// One connection's state.
struct Session {
    swarm: Arc<Swarm>,
    id: ConnId,
    addr: SocketAddr,
    // Their state toward us.
    peer_choking: bool,
    peer_interested: bool,
    /// Their pieces; before the metadata is known, a raw bitfield and HAVEs.
    peer_bitfield: Option<Bytes>,
    peer_have: HashSet<u32>,
    peer_pieces: Option<Vec<bool>>,
    // Our state toward them.
    we_interested: bool,
    /// Since when we have wanted nothing the peer has while interested
    /// (None: we want something, or are not interested).
    unwanted_since: Option<Instant>,
    we_unchoke: bool,
    /// Their extension ids (BEP 10 `m`).
    their_ut_metadata: Option<u8>,
    their_metadata_size: Option<u64>,
    /// The metadata being assembled from this peer, with its share of the
    /// memory budget.
    assembler: Option<(MetadataAssembler, AssemblyPermit)>,
    /// Blocks requested from them, oldest first.
    outstanding: VecDeque<Req>,
    /// Blocks requested from them that we stopped waiting for (a choke
    /// discarded them, or we cancelled): a late block is still welcome.
    /// Any other block was never asked of this peer and is dropped unread,
    /// so garbage nobody requested never reaches a piece.
    released: HashSet<Req>,
    /// `outstanding` as blocks in flight in the process's memory budget.
    inflight: Reservation,
    /// Target number of outstanding requests (grows with the measured rate).
    depth: usize,
    /// The peer's measured answer time, which sizes the queue of
    /// readahead requests (see [`pipeline`]).
    pipeline: pipeline::Pipeline,
    /// Their `reqq` (BEP 10): most requests they queue.
    their_reqq: usize,
    /// Since when requests sent to them have gone without any block in
    /// return (None: nothing asked since their last block). Requests we
    /// cancel still count: a peer that answers none of them for
    /// [`REQUEST_TIMEOUT`] is snubbing us, whoever else delivered.
    waiting_since: Option<Instant>,
    last_recv: Instant,
    /// When our last keep-alive went out (or the session started).
    last_sent: Instant,
    /// [`KEEPALIVE_TCP`] or [`KEEPALIVE_UTP`], by transport.
    keepalive_every: Duration,
    /// Bytes received since `rate_since` (for the request depth).
    rate_bytes: u64,
    rate_since: Instant,
    /// Measured download rate from the peer, bytes/s (0 until measured):
    /// sizes its share of the blocks reads wait on.
    rate: f64,
    /// Blocks they asked us for.
    uploads: VecDeque<BlockRequest>,
    /// Blocks with a bad index, offset or size (a protocol violation).
    bad_blocks: u32,
    /// Blocks we had not asked this peer for (tolerated up to a bound).
    stray_blocks: u32,
    /// `hashes` messages dropped (BEP 52; tolerated up to a bound).
    bad_hashes: u32,
    /// Their `ut_pex` extension id (BEP 11), if they speak it.
    their_ut_pex: Option<u8>,
    /// The address we tell other peers about (BEP 11): ours when we dialled
    /// it, else their IP with the listen port of their extension handshake.
    pex_addr: Option<SocketAddr>,
    /// The `ut_pex` flags other peers learn for this peer.
    pex_flags: u8,
    /// Peers we told them about in `added` and have not dropped since.
    pex_told: HashSet<SocketAddr>,
    last_pex_sent: Option<Instant>,
    last_pex_recv: Option<Instant>,
    /// Our IP as they see it (BEP 10 `yourip`).
    our_ip: Option<IpAddr>,
    /// Whether this connection runs over uTP.
    utp: bool,
    /// The info-hash the connection is on (the peer's answer to our
    /// handshake, or ours to theirs, after a BEP 52 upgrade the truncated
    /// v2 info-hash): hash messages (BEP 52) go only over a connection on
    /// the truncated v2 info-hash (libtorrent drops a v1 connection of a
    /// hybrid that sends one).
    handshake_hash: crate::InfoHash,
    /// Their `ut_holepunch` extension id (BEP 55), if they speak it.
    their_ut_holepunch: Option<u8>,
    /// Where the swarm hands this session holepunch messages for its peer
    /// (given to the swarm once they say they speak `ut_holepunch`).
    hp_outbox: Option<crate::swarm::HolepunchOutbox>,
}

impl Session {
    fn new(swarm: Arc<Swarm>, id: ConnId, addr: SocketAddr) -> Session {
        let now = Instant::now();
        let swarm_ih = swarm.info_hash;
        Session {
            swarm,
            id,
            addr,
            peer_choking: true,
            peer_interested: false,
            peer_bitfield: None,
            peer_have: HashSet::new(),
            peer_pieces: None,
            we_interested: false,
            unwanted_since: None,
            we_unchoke: false,
            their_ut_metadata: None,
            their_metadata_size: None,
            assembler: None,
            outstanding: VecDeque::new(),
            released: HashSet::new(),
            inflight: Reservation::empty(),
            depth: 64,
            pipeline: pipeline::Pipeline::default(),
            their_reqq: 250,
            waiting_since: None,
            last_recv: now,
            last_sent: now,
            keepalive_every: KEEPALIVE_TCP,
            rate_bytes: 0,
            rate_since: now,
            rate: 0.0,
            uploads: VecDeque::new(),
            bad_blocks: 0,
            stray_blocks: 0,
            bad_hashes: 0,
            their_ut_pex: None,
            pex_addr: None,
            pex_flags: 0,
            pex_told: HashSet::new(),
            last_pex_sent: None,
            last_pex_recv: None,
            our_ip: None,
            utp: false,
            handshake_hash: swarm_ih,
            their_ut_holepunch: None,
            hp_outbox: None,
        }
    }

    /// Whether the torrent is private (BEP 27: no peer exchange).
    fn is_private(&self) -> bool {
        self.swarm.loaded().is_some_and(|l| l.info.private)
    }
}

/// Queues `m` for the peer (sent at the loop's next flush).
async fn send(w: &mut PeerWriter, m: &Message) -> Result<(), SessionError> {
    w.write_message(m).await.map_err(SessionError::Write)
}
