//! One peer connection's life: handshakes, metadata exchange, requests,
//! uploads (BEP 3 message flow, BEP 10 extension handshake, BEP 9).
//!
//! A reader task turns the socket into [`Message`]s; the session loop owns
//! the writer and reacts to: messages, its waker (the picker has new wants),
//! newly verified pieces (HAVE), a 1 s tick (timeouts, keep-alives), and the
//! swarm's shutdown. Any protocol violation ends this connection only.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::peer::conn::{PeerConn, PeerWriter};
use crate::peer::extension::{ExtHandshake, UT_METADATA_ID, UT_PEX, UT_PEX_ID};
use crate::peer::pex::{self, PexMessage};
use crate::peer::ut_metadata::{self, MetadataAssembler, MetadataMsg};
use crate::peer::wire::{BlockRequest, Handshake, Message};
use crate::picker::{BlockOutcome, Req};
use crate::swarm::{PeerSource, Swarm};

/// A peer that sends nothing for this long is dropped (BEP 3 suggests
/// keep-alives every 2 minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(150);
/// Outstanding requests with no block arriving for this long: the peer is
/// snubbing us; its requests go back to the picker and it is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Most blocks we queue for upload to one peer.
const MAX_UPLOAD_QUEUE: usize = 512;
/// Blocks read from storage in one blocking task and sent per loop turn.
const UPLOAD_BATCH: usize = 32;
/// Shortest time between two `ut_pex` messages we send on one connection
/// (BEP 11: at most one a minute).
const PEX_INTERVAL: Duration = Duration::from_secs(60);
/// Most `added` and most `dropped` entries in one `ut_pex` message we send,
/// and most `added` entries we take from one we receive (BEP 11: 50).
const PEX_MAX_PEERS: usize = 50;
/// `ut_pex` messages arriving sooner than this after the previous one are
/// ignored (a flood).
const PEX_MIN_RECV_GAP: Duration = Duration::from_secs(20);

/// Runs a connected, handshaken peer until it closes, misbehaves or the
/// swarm stops. `addr` is the peer's address (for bans and logs).
pub async fn run(
    swarm: Arc<Swarm>,
    conn: PeerConn,
    theirs: Handshake,
    addr: SocketAddr,
    source: PeerSource,
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
    tracing::info!("{}: connected to {addr} (from {source})", swarm.info_hash);
    let mut s = Session::new(swarm.clone(), id, addr);
    if source != PeerSource::Incoming {
        // We dialled it: the address accepts connections (BEP 11 flag 0x10).
        s.pex_flags = pex::FLAG_OUTGOING;
        s.pex_addr = Some(addr);
        swarm.set_pex_entry(id, addr, s.pex_flags);
    }
    let mut conn = conn;
    conn.set_max_message_len(max_message_len(&swarm));
    let (mut reader, writer) = conn.split();
    let (tx, rx) = mpsc::channel(256);
    let reader_task = tokio::spawn(async move {
        loop {
            let r = reader.read_message().await;
            let end = !matches!(r, Ok(Some(_)));
            if tx.send(r).await.is_err() || end {
                break;
            }
        }
    });
    let result = s
        .run_loop(writer, rx, waker, theirs.supports_extensions())
        .await;
    reader_task.abort();
    match result {
        Ok(()) => tracing::debug!("{}: {addr} closed", swarm.info_hash),
        Err(why) => tracing::info!("{}: dropping {addr}: {why}", swarm.info_hash),
    }
    swarm.unregister_conn(id, s.we_unchoke);
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
    crate::peer::wire::max_message_len_for(pieces)
}

/// Most requests remembered per connection after we stopped waiting for
/// them (choked, cancelled): their blocks may still arrive and are kept.
const MAX_RELEASED: usize = 4096;

struct Session {
    swarm: Arc<Swarm>,
    id: u64,
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
    we_unchoke: bool,
    /// Their extension ids (BEP 10 `m`).
    their_ut_metadata: Option<u8>,
    their_metadata_size: Option<u64>,
    assembler: Option<MetadataAssembler>,
    /// Blocks requested from them, oldest first.
    outstanding: VecDeque<Req>,
    /// Blocks requested from them that we stopped waiting for (a choke
    /// discarded them, or we cancelled): a late block is still welcome.
    /// Any other block was never asked of this peer and is dropped unread,
    /// so garbage nobody requested never reaches a piece.
    released: HashSet<Req>,
    /// Target number of outstanding requests (grows with the measured rate).
    depth: usize,
    /// Their `reqq` (BEP 10): most requests they queue.
    their_reqq: usize,
    /// Since when requests sent to them have gone without any block in
    /// return (None: nothing asked since their last block). Requests we
    /// cancel still count: a peer that answers none of them for
    /// [`REQUEST_TIMEOUT`] is snubbing us, whoever else delivered.
    waiting_since: Option<Instant>,
    last_recv: Instant,
    last_sent: Instant,
    /// Bytes received since `rate_since` (for the request depth).
    rate_bytes: u64,
    rate_since: Instant,
    /// Blocks they asked us for.
    uploads: VecDeque<BlockRequest>,
    /// Blocks with a bad index, offset or size (a protocol violation).
    bad_blocks: u32,
    /// Blocks we had not asked this peer for (tolerated up to a bound).
    stray_blocks: u32,
    got_bitfield: bool,
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
    our_ip: Option<std::net::IpAddr>,
}

impl Session {
    fn new(swarm: Arc<Swarm>, id: u64, addr: SocketAddr) -> Session {
        let now = Instant::now();
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
            we_unchoke: false,
            their_ut_metadata: None,
            their_metadata_size: None,
            assembler: None,
            outstanding: VecDeque::new(),
            released: HashSet::new(),
            depth: 64,
            their_reqq: 250,
            waiting_since: None,
            last_recv: now,
            last_sent: now,
            rate_bytes: 0,
            rate_since: now,
            uploads: VecDeque::new(),
            bad_blocks: 0,
            stray_blocks: 0,
            got_bitfield: false,
            their_ut_pex: None,
            pex_addr: None,
            pex_flags: 0,
            pex_told: HashSet::new(),
            last_pex_sent: None,
            last_pex_recv: None,
            our_ip: None,
        }
    }

    async fn run_loop(
        &mut self,
        mut w: PeerWriter,
        mut rx: mpsc::Receiver<Result<Option<Message>, crate::peer::wire::WireError>>,
        waker: Arc<tokio::sync::Notify>,
        extensions: bool,
    ) -> Result<(), String> {
        let mut shutdown = self.swarm.shutdown.subscribe();
        let mut haves = self.swarm.have_tx.subscribe();
        // Our bitfield first (BEP 3: only right after the handshake).
        if let Some(bf) = self.our_bitfield() {
            send(&mut w, &Message::Bitfield(bf)).await?;
        }
        if extensions {
            let hs = self.our_ext_handshake();
            send(
                &mut w,
                &Message::Extended {
                    id: 0,
                    payload: Bytes::from(hs.encode()),
                },
            )
            .await?;
        }
        self.after_metadata(&mut w).await?;
        w.flush().await.map_err(|e| e.to_string())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                m = rx.recv() => {
                    match m {
                        Some(Ok(Some(msg))) => {
                            self.last_recv = Instant::now();
                            self.on_message(&mut w, msg).await?;
                            // Drain what is already buffered before writing.
                            while let Ok(m) = rx.try_recv() {
                                match m {
                                    Ok(Some(msg)) => self.on_message(&mut w, msg).await?,
                                    Ok(None) => return Ok(()),
                                    Err(e) => return Err(format!("protocol error: {e}")),
                                }
                            }
                        }
                        Some(Ok(None)) | None => return Ok(()),
                        Some(Err(e)) => return Err(format!("protocol error: {e}")),
                    }
                }
                _ = waker.notified() => {
                    if self.swarm.is_banned(self.addr.ip()) {
                        return Err("banned".into());
                    }
                    self.after_metadata(&mut w).await?;
                }
                h = haves.recv() => {
                    match h {
                        // HAVE suppression: a peer that has the piece
                        // needs no HAVE. Besides saving bytes, this keeps a
                        // seeder from counting HAVEs of pieces a bounded
                        // cache has since evicted and taking us for a
                        // seeder too (libtorrent then disconnects:
                        // "upload to upload connection").
                        Ok(i) => {
                            if !self.peer_has(i) {
                                send(&mut w, &Message::Have(i)).await?;
                            }
                        }
                        // HAVEs were missed (a burst: cached pieces verified
                        // in the background, a fast download): tell the
                        // peer about every piece we hold that it lacks
                        // (one HAVE twice is harmless, one missing is not).
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            let ours: Vec<u32> = {
                                let st = self.swarm.lock();
                                st.picker.as_ref().map_or_else(Vec::new, |p| {
                                    (0..p.num_pieces()).filter(|&i| p.has(i)).collect()
                                })
                            };
                            tracing::debug!(
                                "{}: {n} HAVEs to {} missed; sending what it lacks",
                                self.swarm.info_hash,
                                self.addr
                            );
                            for i in ours {
                                if !self.peer_has(i) {
                                    send(&mut w, &Message::Have(i)).await?;
                                }
                            }
                        }
                        Err(_) => return Ok(()),
                    }
                }
                _ = tick.tick() => {
                    self.on_tick(&mut w).await?;
                }
                _ = shutdown.changed() => return Ok(()),
                // Blocks still queued for upload: serve the next batch now
                // rather than after the peer's next message or tick (one
                // 16-block batch per message made seeding latency-bound).
                _ = std::future::ready(()), if !self.uploads.is_empty() => {}
            }
            self.fill_requests(&mut w).await?;
            self.serve_uploads(&mut w).await?;
            w.flush().await.map_err(|e| e.to_string())?;
        }
    }

    /// Whether the peer said it has piece `i` (bitfield or HAVE).
    fn peer_has(&self, i: u32) -> bool {
        self.peer_pieces
            .as_ref()
            .and_then(|p| p.get(i as usize).copied())
            .unwrap_or(false)
    }

    fn our_bitfield(&self) -> Option<Bytes> {
        let st = self.swarm.lock();
        let p = st.picker.as_ref()?;
        (p.have_count() > 0).then(|| Bytes::from(p.bitfield()))
    }

    fn our_ext_handshake(&self) -> ExtHandshake {
        let mut hs = ExtHandshake::default();
        hs.m.insert("ut_metadata".into(), UT_METADATA_ID);
        if !self.is_private() {
            hs.m.insert(UT_PEX.into(), UT_PEX_ID);
        }
        hs.metadata_size = self.swarm.loaded().map(|l| l.info.raw.len() as u64);
        hs.listen_port = Some(self.swarm.cfg.listen_port).filter(|&p| p != 0);
        hs.client = Some(concat!("btfs-mount ", env!("CARGO_PKG_VERSION")).into());
        hs.reqq = Some(MAX_UPLOAD_QUEUE as u32);
        hs.yourip = Some(self.addr.ip());
        hs
    }

    /// Once the metadata is known: parse their bitfield, send interest.
    async fn after_metadata(&mut self, w: &mut PeerWriter) -> Result<(), String> {
        let Some(loaded) = self.swarm.loaded() else {
            return self.request_metadata(w).await;
        };
        self.assembler = None;
        let n = loaded.info.num_pieces();
        if self.peer_pieces.is_none() {
            let mut pieces = vec![false; n as usize];
            if let Some(bf) = self.peer_bitfield.take() {
                if bf.len() != n.div_ceil(8) as usize {
                    return Err(format!("bitfield of {} bytes for {n} pieces", bf.len()));
                }
                for (i, p) in pieces.iter_mut().enumerate() {
                    *p = bf[i / 8] & (0x80 >> (i % 8)) != 0;
                }
                if (n as usize..bf.len() * 8).any(|i| bf[i / 8] & (0x80 >> (i % 8)) != 0) {
                    return Err("bitfield has spare bits set".into());
                }
            }
            for &i in &self.peer_have {
                if i >= n {
                    return Err(format!("HAVE for piece {i} of {n}"));
                }
                pieces[i as usize] = true;
            }
            self.peer_have.clear();
            self.peer_pieces = Some(pieces);
        }
        self.update_interest(w).await
    }

    async fn update_interest(&mut self, w: &mut PeerWriter) -> Result<(), String> {
        let Some(pieces) = &self.peer_pieces else {
            return Ok(());
        };
        let want = {
            let st = self.swarm.lock();
            st.picker.as_ref().is_some_and(|p| {
                let has = |i: u32| pieces.get(i as usize).copied().unwrap_or(false);
                p.interesting(&has)
            })
        };
        if want && !self.we_interested {
            self.we_interested = true;
            send(w, &Message::Interested).await?;
        } else if !want && self.we_interested && self.outstanding.is_empty() {
            self.we_interested = false;
            send(w, &Message::NotInterested).await?;
        }
        Ok(())
    }

    async fn request_metadata(&mut self, w: &mut PeerWriter) -> Result<(), String> {
        let (Some(id), Some(size)) = (self.their_ut_metadata, self.their_metadata_size) else {
            return Ok(());
        };
        if self.assembler.is_none() {
            if size > self.swarm.cfg.max_metadata_size {
                return Err(format!(
                    "metadata of {size} bytes exceeds the limit of {}",
                    self.swarm.cfg.max_metadata_size
                ));
            }
            let a =
                MetadataAssembler::new(self.swarm.info_hash, size).map_err(|e| e.to_string())?;
            self.assembler = Some(a);
            // Ask for every piece at once: the info dictionary is small.
            let pieces = size.div_ceil(ut_metadata::METADATA_PIECE as u64) as u32;
            for piece in 0..pieces {
                let payload = MetadataMsg::Request { piece }.encode();
                send(
                    w,
                    &Message::Extended {
                        id,
                        payload: Bytes::from(payload),
                    },
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn on_message(&mut self, w: &mut PeerWriter, msg: Message) -> Result<(), String> {
        match msg {
            Message::KeepAlive => {}
            Message::Choke => {
                self.peer_choking = true;
                // BEP 3: a choke discards every outstanding request.
                let dropped: Vec<Req> = self.outstanding.drain(..).collect();
                self.waiting_since = None;
                self.release(dropped);
                if let Some(p) = self.swarm.lock().picker.as_mut() {
                    p.release(self.id);
                }
                self.swarm.wake_peers();
            }
            Message::Unchoke => {
                self.peer_choking = false;
            }
            Message::Interested => {
                self.peer_interested = true;
                if !self.we_unchoke
                    && self.swarm.cfg.seed
                    && self.swarm.loaded().is_some()
                    && self.swarm.take_unchoke_slot()
                {
                    self.we_unchoke = true;
                    send(w, &Message::Unchoke).await?;
                }
            }
            Message::NotInterested => {
                self.peer_interested = false;
                if self.we_unchoke {
                    self.we_unchoke = false;
                    self.swarm.release_unchoke_slot();
                    self.uploads.clear();
                    send(w, &Message::Choke).await?;
                }
            }
            Message::Have(i) => {
                match &mut self.peer_pieces {
                    Some(p) => {
                        let slot = p
                            .get_mut(i as usize)
                            .ok_or_else(|| format!("HAVE for piece {i} out of range"))?;
                        *slot = true;
                    }
                    None => {
                        if self.peer_have.len() < 1 << 20 {
                            self.peer_have.insert(i);
                        }
                    }
                }
                self.update_interest(w).await?;
            }
            Message::Bitfield(bf) => {
                if self.got_bitfield {
                    return Err("second bitfield".into());
                }
                self.got_bitfield = true;
                match (&mut self.peer_pieces, self.swarm.loaded()) {
                    (Some(pieces), Some(l)) => {
                        let n = l.info.num_pieces();
                        let bits = crate::peer::wire::Bitfield::from_bytes(&bf, n)
                            .map_err(|e| format!("bitfield: {e}"))?;
                        for (i, p) in pieces.iter_mut().enumerate() {
                            *p |= bits.get(i as u32);
                        }
                        self.update_interest(w).await?;
                    }
                    _ => self.peer_bitfield = Some(bf),
                }
            }
            Message::Request(r) => {
                if !self.we_unchoke {
                    return Ok(()); // BEP 3: requests while choked are dropped
                }
                let (valid, had) = {
                    let st = self.swarm.lock();
                    st.picker.as_ref().map_or((false, false), |p| {
                        let valid = r.index < p.num_pieces()
                            && r.length > 0
                            && r.length <= 128 * 1024
                            && r.begin as u64 + r.length as u64 <= p.piece_size(r.index) as u64;
                        (valid, valid && p.has(r.index))
                    })
                };
                if !valid {
                    return Err(format!(
                        "request for a block that does not exist (piece {}, offset {}, {} bytes)",
                        r.index, r.begin, r.length
                    ));
                }
                if !had {
                    // A piece we no longer hold (evicted from a bounded
                    // cache after we announced it: BEP 3 has no way to take
                    // a HAVE back). Ignored: the peer asks someone else when
                    // its request times out.
                    tracing::debug!(
                        "{}: {} asked for piece {} we no longer hold; ignored",
                        self.swarm.info_hash,
                        self.addr,
                        r.index
                    );
                    return Ok(());
                }
                if self.uploads.len() < MAX_UPLOAD_QUEUE {
                    self.uploads.push_back(r);
                }
            }
            Message::Cancel(r) => {
                self.uploads.retain(|u| *u != r);
            }
            Message::Piece { index, begin, data } => {
                self.on_piece(index, begin, data)?;
            }
            Message::Port(_) => {}
            Message::Extended { id, payload } => self.on_extended(w, id, payload).await?,
            Message::Unknown { .. } => {}
        }
        Ok(())
    }

    fn on_piece(&mut self, index: u32, begin: u32, data: Bytes) -> Result<(), String> {
        let len = data.len() as u32;
        let req = Req {
            index,
            begin,
            length: len,
        };
        match self.outstanding.iter().position(|r| *r == req) {
            Some(pos) => {
                self.outstanding.remove(pos);
            }
            // Requested, then cancelled or discarded by a choke: kept.
            None if self.released.remove(&req) => {}
            None => {
                // Never asked of this peer (or with a wrong offset or size):
                // dropped unread. A flood of them ends the connection.
                self.stray_blocks += 1;
                tracing::debug!(
                    "{}: {} sent a block we never asked it for (piece {index}, offset {begin}, {len} bytes)",
                    self.swarm.info_hash,
                    self.addr
                );
                let bad = {
                    let st = self.swarm.lock();
                    st.picker.as_ref().is_none_or(|p| {
                        index >= p.num_pieces()
                            || begin % crate::picker::BLOCK != 0
                            || begin as u64 + len as u64 > p.piece_size(index) as u64
                    })
                };
                if bad {
                    self.bad_blocks += 1;
                    if self.bad_blocks > 16 {
                        return Err("too many blocks with a bad index, offset or size".into());
                    }
                }
                if self.stray_blocks > 1024 {
                    return Err("too many blocks we never requested".into());
                }
                return Ok(());
            }
        }
        self.waiting_since = (!self.outstanding.is_empty()).then(Instant::now);
        self.rate_bytes += len as u64;
        let outcome = {
            let mut st = self.swarm.lock();
            match st.picker.as_mut() {
                Some(p) => p.on_block(self.id, index, begin, &data),
                None => BlockOutcome::Unrequested,
            }
        };
        match outcome {
            BlockOutcome::Stored | BlockOutcome::Duplicate => {}
            BlockOutcome::Complete {
                index,
                data,
                sources,
                ..
            } => self.swarm.complete_piece(index, data, sources),
            BlockOutcome::Unrequested => {
                self.bad_blocks += 1;
                tracing::debug!(
                    "{}: {} sent a block with a bad index, offset or size (piece {index}, offset {begin}, {len} bytes)",
                    self.swarm.info_hash,
                    self.addr
                );
                if self.bad_blocks > 16 {
                    return Err("too many blocks with a bad index, offset or size".into());
                }
            }
        }
        Ok(())
    }

    async fn on_extended(
        &mut self,
        w: &mut PeerWriter,
        id: u8,
        payload: Bytes,
    ) -> Result<(), String> {
        if id == 0 {
            let hs =
                ExtHandshake::decode(&payload).map_err(|e| format!("extension handshake: {e}"))?;
            self.their_ut_metadata = hs.m.get("ut_metadata").copied().filter(|&i| i != 0);
            self.their_ut_pex = hs.id_of(UT_PEX);
            self.our_ip = hs.yourip;
            self.their_metadata_size = hs.metadata_size;
            if let Some(q) = hs.reqq {
                self.their_reqq = (q as usize).clamp(1, 2000);
            }
            if let Some(p) = hs.listen_port.filter(|&p| p != 0) {
                // Their listen port (we may have seen an ephemeral one).
                let a = SocketAddr::new(self.addr.ip(), p);
                if a != self.addr {
                    if self.pex_flags & pex::FLAG_OUTGOING == 0 {
                        // They dialled us: dial them back only once this
                        // connection is gone (never a second connection).
                        self.swarm.note_listen_addr(self.id, a);
                    } else {
                        self.swarm.add_peers([a], PeerSource::Incoming);
                    }
                }
                if self.pex_flags & pex::FLAG_OUTGOING == 0 {
                    self.pex_addr = Some(a);
                    self.swarm.set_pex_entry(self.id, a, self.pex_flags);
                }
            }
            if self.swarm.loaded().is_none() {
                self.request_metadata(w).await?;
            }
            return Ok(());
        }
        if id == UT_METADATA_ID {
            let msg = MetadataMsg::decode(&payload).map_err(|e| format!("ut_metadata: {e}"))?;
            match msg {
                MetadataMsg::Request { piece } => {
                    let Some(their_id) = self.their_ut_metadata else {
                        return Ok(());
                    };
                    let reply = match self.swarm.loaded() {
                        Some(l) => ut_metadata::data_response(&l.info.raw, piece)
                            .unwrap_or(MetadataMsg::Reject { piece }),
                        None => MetadataMsg::Reject { piece },
                    };
                    send(
                        w,
                        &Message::Extended {
                            id: their_id,
                            payload: Bytes::from(reply.encode()),
                        },
                    )
                    .await?;
                }
                MetadataMsg::Data {
                    piece,
                    total_size,
                    data,
                } => {
                    if self.swarm.loaded().is_some() {
                        return Ok(());
                    }
                    let Some(a) = self.assembler.as_mut() else {
                        return Ok(());
                    };
                    if Some(total_size) != self.their_metadata_size {
                        return Err(format!(
                            "ut_metadata total_size {total_size} differs from the handshake's {:?}",
                            self.their_metadata_size
                        ));
                    }
                    self.swarm
                        .counters
                        .metadata_bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    a.add(piece, data)
                        .map_err(|e| format!("ut_metadata: {e}"))?;
                    if a.is_complete() {
                        let mut a = self.assembler.take().expect("present");
                        match a.finish() {
                            Ok(raw) => {
                                tracing::info!(
                                    "{}: metadata ({} bytes) received from {}",
                                    self.swarm.info_hash,
                                    raw.len(),
                                    self.addr
                                );
                                let swarm = self.swarm.clone();
                                let r =
                                    tokio::task::spawn_blocking(move || swarm.set_metadata(&raw))
                                        .await
                                        .map_err(|e| e.to_string())?;
                                if let Err(e) = r {
                                    tracing::info!("{}: {e}", self.swarm.info_hash); // the lookup reports it
                                    return Err(e);
                                }
                                self.after_metadata(w).await?;
                            }
                            Err(e) => {
                                self.swarm.ban(
                                    self.addr,
                                    "sent metadata that does not match the info-hash",
                                );
                                return Err(format!("metadata: {e}"));
                            }
                        }
                    }
                }
                MetadataMsg::Reject { piece } => {
                    tracing::debug!(
                        "{}: {} rejected metadata piece {piece}",
                        self.swarm.info_hash,
                        self.addr
                    );
                    self.assembler = None;
                    self.their_ut_metadata = None; // try other peers
                }
                MetadataMsg::Unknown { msg_type } => {
                    tracing::debug!(
                        "{}: unknown ut_metadata msg_type {msg_type}",
                        self.swarm.info_hash
                    );
                }
            }
        }
        if id == UT_PEX_ID {
            self.on_pex(&payload);
        }
        // Other extensions are ignored.
        Ok(())
    }

    /// Whether the torrent is private (BEP 27: no peer exchange).
    fn is_private(&self) -> bool {
        self.swarm.loaded().is_some_and(|l| l.info.private)
    }

    /// A received `ut_pex` message (BEP 11): its `added` peers (at most
    /// [`PEX_MAX_PEERS`], never the sender itself) become candidates.
    /// Malformed or too frequent messages are ignored, not fatal.
    fn on_pex(&mut self, payload: &[u8]) {
        let now = Instant::now();
        if self.is_private() {
            return;
        }
        if self
            .last_pex_recv
            .is_some_and(|t| now.duration_since(t) < PEX_MIN_RECV_GAP)
        {
            tracing::debug!(
                "{}: {} sends ut_pex too often; ignored",
                self.swarm.info_hash,
                self.addr
            );
            return;
        }
        self.last_pex_recv = Some(now);
        let msg = match PexMessage::decode(payload) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("{}: {}: ut_pex: {e}", self.swarm.info_hash, self.addr);
                return;
            }
        };
        let own = self.pex_addr;
        let port = self.swarm.cfg.listen_port;
        // Our own listen address comes back when they know us.
        let is_us = |a: &SocketAddr| {
            a.port() == port && (a.ip().is_loopback() || Some(a.ip()) == self.our_ip)
        };
        let added: Vec<SocketAddr> = msg
            .added
            .iter()
            .map(|(a, _)| *a)
            .filter(|a| *a != self.addr && Some(*a) != own && !is_us(a))
            .take(PEX_MAX_PEERS)
            .collect();
        let n = self.swarm.add_peers(added.iter().copied(), PeerSource::Pex);
        tracing::info!(
            "{}: ut_pex from {}: {} added ({n} new), {} dropped",
            self.swarm.info_hash,
            self.addr,
            msg.added.len(),
            msg.dropped.len()
        );
    }

    /// Sends a `ut_pex` message (BEP 11) when they speak it, the last one
    /// went out at least [`PEX_INTERVAL`] ago, and the set of our other
    /// connected peers changed since: `added` peers connected since the
    /// last message, `dropped` peers gone since, at most [`PEX_MAX_PEERS`]
    /// each, never their own address.
    async fn maybe_send_pex(&mut self, w: &mut PeerWriter) -> Result<(), String> {
        let Some(id) = self.their_ut_pex else {
            return Ok(());
        };
        let now = Instant::now();
        if self
            .last_pex_sent
            .is_some_and(|t| now.duration_since(t) < PEX_INTERVAL)
            || self.is_private()
        {
            return Ok(());
        }
        let own = self.pex_addr;
        let current: Vec<(SocketAddr, u8)> = self
            .swarm
            .pex_peers()
            .into_iter()
            .filter(|(a, _)| *a != self.addr && Some(*a) != own)
            .collect();
        let added: Vec<(SocketAddr, u8)> = current
            .iter()
            .filter(|(a, _)| !self.pex_told.contains(a))
            .take(PEX_MAX_PEERS)
            .copied()
            .collect();
        let mut dropped: Vec<SocketAddr> = self
            .pex_told
            .iter()
            .filter(|a| !current.iter().any(|(c, _)| c == *a))
            .copied()
            .collect();
        dropped.sort();
        dropped.truncate(PEX_MAX_PEERS);
        if added.is_empty() && dropped.is_empty() {
            return Ok(());
        }
        for (a, _) in &added {
            self.pex_told.insert(*a);
        }
        for a in &dropped {
            self.pex_told.remove(a);
        }
        self.last_pex_sent = Some(now);
        tracing::debug!(
            "{}: ut_pex to {}: {} added, {} dropped",
            self.swarm.info_hash,
            self.addr,
            added.len(),
            dropped.len()
        );
        let payload = PexMessage { added, dropped }.encode();
        send(
            w,
            &Message::Extended {
                id,
                payload: Bytes::from(payload),
            },
        )
        .await
    }

    async fn fill_requests(&mut self, w: &mut PeerWriter) -> Result<(), String> {
        if self.peer_choking || self.swarm.loaded().is_none() {
            return Ok(());
        }
        // Cancel what nobody waits for any more.
        let stale: Vec<Req> = {
            let mut st = self.swarm.lock();
            let Some(p) = st.picker.as_mut() else {
                return Ok(());
            };
            p.drop_unwanted();
            let (keep, stale): (Vec<Req>, Vec<Req>) = self
                .outstanding
                .drain(..)
                .partition(|r| p.is_outstanding(r) && !p.has(r.index));
            self.outstanding = keep.into();
            stale
        };
        for r in &stale {
            send(w, &Message::Cancel(to_block(*r))).await?;
        }
        let cap = self.depth.min(self.their_reqq);
        // A read waits on blocks this peer has, and the queue is full of
        // readahead: cancel the newest readahead requests to make room, so a
        // seek costs one piece, not the abandoned window.
        let preempted: Vec<Req> = match &self.peer_pieces {
            Some(pieces) => {
                let mut st = self.swarm.lock();
                let Some(p) = st.picker.as_mut() else {
                    return Ok(());
                };
                let has = |i: u32| pieces.get(i as usize).copied().unwrap_or(false);
                let need = p.urgent_unrequested(&has);
                let free = cap.saturating_sub(self.outstanding.len());
                let mut k = need.saturating_sub(free);
                let mut out = Vec::new();
                let mut i = self.outstanding.len();
                while k > 0 && i > 0 {
                    i -= 1;
                    let r = self.outstanding[i];
                    if !p.is_urgent(r.index) {
                        p.release_one(self.id, &r);
                        self.outstanding.remove(i);
                        out.push(r);
                        k -= 1;
                    }
                }
                out
            }
            None => Vec::new(),
        };
        for r in &preempted {
            send(w, &Message::Cancel(to_block(*r))).await?;
        }
        self.release(stale);
        self.release(preempted);
        let want = cap.saturating_sub(self.outstanding.len());
        if want == 0 {
            return Ok(());
        }
        let Some(pieces) = &self.peer_pieces else {
            return Ok(());
        };
        let reqs = {
            let mut st = self.swarm.lock();
            let Some(p) = st.picker.as_mut() else {
                return Ok(());
            };
            let has = |i: u32| pieces.get(i as usize).copied().unwrap_or(false);
            p.pick(self.id, &has, want)
        };
        if reqs.is_empty() {
            return Ok(());
        }
        if !self.we_interested {
            self.we_interested = true;
            send(w, &Message::Interested).await?;
        }
        if self.waiting_since.is_none() {
            self.waiting_since = Some(Instant::now());
        }
        for r in reqs {
            send(w, &Message::Request(to_block(r))).await?;
            self.outstanding.push_back(r);
        }
        Ok(())
    }

    async fn serve_uploads(&mut self, w: &mut PeerWriter) -> Result<(), String> {
        // Serve a bounded batch per loop turn so downloads are not starved;
        // the batch is read from storage in one blocking task.
        let Some(l) = self.swarm.loaded() else {
            return Ok(());
        };
        let mut batch = Vec::with_capacity(UPLOAD_BATCH);
        while batch.len() < UPLOAD_BATCH {
            let Some(r) = self.uploads.pop_front() else {
                break;
            };
            // Pinned while read: an evicted piece is never sent (its
            // punched-out bytes would read as zeros).
            if self.swarm.pin(r.index, r.index) {
                batch.push(r);
            } // else evicted since they asked: ignored
        }
        if batch.is_empty() {
            return Ok(());
        }
        let storage = l.storage.clone();
        let pl = l.info.piece_length;
        let reqs = batch.clone();
        let data = tokio::task::spawn_blocking(move || {
            reqs.iter()
                .map(|r| {
                    let mut buf = vec![0u8; r.length as usize];
                    let offset = r.index as u64 * pl + r.begin as u64;
                    storage
                        .read_at(offset, &mut buf)
                        .map(|_| buf)
                        .map_err(|e| format!("cannot read piece {} for upload: {e}", r.index))
                })
                .collect::<Result<Vec<_>, String>>()
        })
        .await;
        for r in &batch {
            self.swarm.unpin(r.index, r.index);
        }
        let data = data.map_err(|e| e.to_string())??;
        for (r, data) in batch.into_iter().zip(data) {
            self.swarm
                .counters
                .uploaded
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            send(
                w,
                &Message::Piece {
                    index: r.index,
                    begin: r.begin,
                    data: Bytes::from(data),
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Remembers requests we stopped waiting for (bounded).
    fn release(&mut self, reqs: Vec<Req>) {
        if self.released.len() + reqs.len() > MAX_RELEASED {
            self.released.clear();
        }
        self.released.extend(reqs);
    }

    async fn on_tick(&mut self, w: &mut PeerWriter) -> Result<(), String> {
        let now = Instant::now();
        if self.swarm.is_banned(self.addr.ip()) {
            return Err("banned".into());
        }
        if now.duration_since(self.last_recv) > IDLE_TIMEOUT {
            return Err("idle for too long".into());
        }
        if self
            .waiting_since
            .is_some_and(|t| now.duration_since(t) > REQUEST_TIMEOUT)
        {
            return Err(format!(
                "requests unanswered for {} s ({} still outstanding)",
                REQUEST_TIMEOUT.as_secs(),
                self.outstanding.len()
            ));
        }
        // Request depth from the measured rate: enough blocks in flight to
        // cover ~0.5 s of transfer at the current rate (at least 16, at most
        // their reqq and 1000). Deeper queues only add latency to seeks.
        let secs = now.duration_since(self.rate_since).as_secs_f64();
        if secs >= 1.0 {
            let rate = self.rate_bytes as f64 / secs;
            let blocks = (rate * 0.5 / crate::picker::BLOCK as f64) as usize;
            self.depth = blocks.clamp(16, 1000);
            self.rate_bytes = 0;
            self.rate_since = now;
        }
        // Their seed flag for peer exchange.
        let seed = self
            .peer_pieces
            .as_ref()
            .is_some_and(|p| !p.is_empty() && p.iter().all(|&h| h));
        let flags = if seed {
            self.pex_flags | pex::FLAG_SEED
        } else {
            self.pex_flags & !pex::FLAG_SEED
        };
        if flags != self.pex_flags {
            self.pex_flags = flags;
            if let Some(a) = self.pex_addr {
                self.swarm.set_pex_entry(self.id, a, flags);
            }
        }
        self.maybe_send_pex(w).await?;
        // Wants change without a message from this peer (reads, evictions):
        // say so, or a peer that choked us while we wanted nothing never
        // unchokes us again.
        self.update_interest(w).await?;
        if now.duration_since(self.last_sent) > Duration::from_secs(90) {
            send(w, &Message::KeepAlive).await?;
            self.last_sent = now;
        }
        // A peer that has nothing we want and wants nothing from us, once we
        // are complete: both seeders, close.
        let complete = self
            .swarm
            .lock()
            .picker
            .as_ref()
            .is_some_and(|p| p.is_complete());
        if complete
            && self
                .peer_pieces
                .as_ref()
                .is_some_and(|p| p.iter().all(|&h| h))
        {
            return Err("both sides are seeders".into());
        }
        Ok(())
    }
}

fn to_block(r: Req) -> BlockRequest {
    BlockRequest {
        index: r.index,
        begin: r.begin,
        length: r.length,
    }
}

async fn send(w: &mut PeerWriter, m: &Message) -> Result<(), String> {
    w.write_message(m).await.map_err(|e| format!("write: {e}"))
}

/// Dials `addr`, handshakes for the swarm's info-hash, and runs the session.
pub async fn dial(swarm: Arc<Swarm>, addr: SocketAddr, source: PeerSource) {
    let r = crate::peer::conn::PeerConn::connect(
        addr,
        swarm.info_hash,
        swarm.cfg.peer_id.0,
        Duration::from_secs(10),
    )
    .await;
    swarm.dial_done();
    match r {
        Ok((conn, hs)) => run(swarm, conn, hs, addr, source).await,
        Err(e) => {
            tracing::debug!(
                "{}: cannot connect to {addr} ({source}): {e}",
                swarm.info_hash
            );
            swarm.dial_failed(addr);
        }
    }
}
