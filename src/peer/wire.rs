//! Peer wire messages (BEP 3, "peer messages"; BEP 5 `port`; BEP 10 message
//! id 20; BEP 52 `hash request`, `hashes` and `hash reject`, ids 21 to 23):
//! the handshake, the length-prefixed message frames, and the piece bit
//! vector.
//!
//! The BEP 52 hash messages travel as [`Message::Unknown`] frames (their
//! sizes are checked by [`Message::check`] and [`Message::parse`]) and are
//! read with [`HashMessage::from_message`]; [`HashMessage::to_message`]
//! makes the frame to send.
//!
//! Framing follows a two-step shape: [`Message::check`] looks at the start of
//! a read buffer and only answers "is a whole frame buffered, and how long is
//! it" (no allocation), then [`Message::parse`] turns exactly that frame into
//! a [`Message`], slicing `piece`, `bitfield` and extended payloads out of the
//! frame without copying. "Incomplete" (`Ok(None)` from `check`) means "read
//! more"; every `Err` means the peer sent something that can never become
//! valid, and the caller closes that one connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::bencode;
use crate::hash::InfoHash;
pub use crate::merkle::HashRequest;
use crate::merkle::{Hash, MAX_REQUEST_LENGTH, MAX_UNCLES, uncle_count};

/// The size of a block, the unit of `request`/`piece` (BEP 3: "usually 2^14",
/// and the largest request most clients serve), in bytes.
pub const BLOCK_SIZE: u32 = 16384;

/// The protocol string sent after its length byte (19) in the handshake (BEP 3).
pub const PROTOCOL: &[u8; 19] = b"BitTorrent protocol";

/// Default limit on the length prefix of one message, in bytes: 1 MiB + 13.
/// Large enough for the bitfield of a torrent with 8 million pieces and for
/// any `piece` message carrying a 16 KiB block.
pub const DEFAULT_MAX_MESSAGE_LEN: u32 = (1 << 20) + 13;

/// A message-length limit (bytes, excluding the 4-byte prefix) suited to a
/// torrent of `num_pieces` pieces: room for its bitfield
/// (`ceil(num_pieces / 8) + 1`) and at least 32 KiB, which covers a `piece`
/// message with one 16 KiB block (16 393 bytes) and a BEP 9 `data` message
/// (16 KiB plus its dictionary).
pub fn max_message_len_for(num_pieces: u32) -> u32 {
    (num_pieces.div_ceil(8) + 1).max(2 * BLOCK_SIZE)
}

/// Why bytes from a peer were refused, or why a connection step failed.
///
/// Every variant except [`WireError::Io`] and [`WireError::Timeout`] is a
/// protocol violation by the peer: close that connection.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("peer i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A step (dial, handshake) did not finish in time.
    #[error("peer {0} timed out")]
    Timeout(&'static str),
    /// The peer closed the connection in the middle of a frame or handshake.
    #[error("peer closed the connection in the middle of a {0}")]
    UnexpectedEof(&'static str),
    /// A message length prefix above the configured maximum (bytes).
    #[error("peer message of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { len: u32, max: u32 },
    /// A message whose payload does not fit its type; `message` names it
    /// (`"have"`, `"request"`, `"ut_metadata"`, ...).
    #[error("malformed {message} message: {reason}")]
    Malformed {
        message: &'static str,
        reason: String,
    },
    /// The first 20 bytes were not `\x13BitTorrent protocol` (BEP 3).
    #[error("not a BitTorrent handshake")]
    BadHandshake,
    /// The peer answered our handshake with another info-hash.
    #[error("peer answered for info-hash {got}, we asked for {expected}")]
    InfoHashMismatch { expected: InfoHash, got: InfoHash },
    /// An incoming connection asked for an info-hash we do not serve.
    #[error("peer asked for info-hash {0}, which we do not serve")]
    UnknownInfoHash(InfoHash),
    /// A bencoded payload (BEP 10, 9, 11) that does not decode.
    #[error("invalid bencode in {message} message: {err}")]
    Bencode {
        message: &'static str,
        err: bencode::Error,
    },
}

impl WireError {
    pub(crate) fn malformed(message: &'static str, reason: impl Into<String>) -> WireError {
        WireError::Malformed {
            message,
            reason: reason.into(),
        }
    }
}

/// The 68-byte handshake that opens every connection (BEP 3 "handshake"):
/// `\x13BitTorrent protocol`, 8 reserved bytes, the info-hash, the peer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// Extension bits. We use `reserved[5] & 0x10` (BEP 10 extension
    /// protocol) and `reserved[7] & 0x01` (BEP 5 DHT, the peer accepts `port`).
    pub reserved: [u8; 8],
    /// The torrent this connection is about.
    pub info_hash: InfoHash,
    /// The sender's peer id.
    pub peer_id: [u8; 20],
}

impl Handshake {
    /// Encoded length in bytes.
    pub const LEN: usize = 68;

    /// Our handshake: announces the extension protocol (BEP 10) and DHT
    /// support (BEP 5), nothing else (no fast extension).
    pub fn new(info_hash: InfoHash, peer_id: [u8; 20]) -> Handshake {
        let mut reserved = [0u8; 8];
        reserved[5] |= 0x10;
        reserved[7] |= 0x01;
        Handshake {
            reserved,
            info_hash,
            peer_id,
        }
    }

    /// The 68 bytes sent on the wire.
    pub fn encode(&self) -> [u8; 68] {
        let mut out = [0u8; 68];
        out[0] = 19;
        out[1..20].copy_from_slice(PROTOCOL);
        out[20..28].copy_from_slice(&self.reserved);
        out[28..48].copy_from_slice(&self.info_hash.0);
        out[48..68].copy_from_slice(&self.peer_id);
        out
    }

    /// Decodes 68 received bytes. Errors: [`WireError::BadHandshake`] when
    /// the protocol string is not BEP 3's.
    pub fn decode(buf: &[u8; 68]) -> Result<Handshake, WireError> {
        if !Self::is_protocol_prefix(&buf[..20]) {
            return Err(WireError::BadHandshake);
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&buf[20..28]);
        let mut info_hash = [0u8; 20];
        info_hash.copy_from_slice(&buf[28..48]);
        let mut peer_id = [0u8; 20];
        peer_id.copy_from_slice(&buf[48..68]);
        Ok(Handshake {
            reserved,
            info_hash: InfoHash(info_hash),
            peer_id,
        })
    }

    /// True when `prefix` (20 bytes) is `\x13BitTorrent protocol`.
    pub(crate) fn is_protocol_prefix(prefix: &[u8]) -> bool {
        prefix.len() == 20 && prefix[0] == 19 && &prefix[1..20] == PROTOCOL
    }

    /// The sender supports the extension protocol (BEP 10, `reserved[5] & 0x10`).
    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    /// The sender runs a DHT node and accepts `port` messages (BEP 5,
    /// `reserved[7] & 0x01`).
    pub fn supports_dht(&self) -> bool {
        self.reserved[7] & 0x01 != 0
    }

    /// The sender also knows the torrent's v2 info-hash and may be switched
    /// to it (BEP 52, "upgrade path": the 4th most significant bit of the
    /// last reserved byte, `reserved[7] & 0x10`).
    pub fn supports_v2(&self) -> bool {
        self.reserved[7] & 0x10 != 0
    }

    /// This handshake with the BEP 52 "upgrade path" bit set
    /// (`reserved[7] & 0x10`): sent on the v1 info-hash of a hybrid
    /// torrent, it tells the answering peer that it may answer with the
    /// truncated v2 info-hash, which makes the connection a v2 one.
    pub fn with_v2_bit(mut self) -> Handshake {
        self.reserved[7] |= 0x10;
        self
    }
}

/// The info-hash our answering handshake names (BEP 52, "upgrade path"),
/// given the dialler's `reserved` bytes, the info-hash `named` in its
/// handshake, and `v2`, the truncated v2 info-hash of the same torrent
/// when it is a hybrid that we would switch the connection to (`None`
/// for v1-only and v2-only torrents). The truncated v2 hash when the
/// dialler set the v2 bit and named another hash; else `named` (a client
/// that does not set the bit keeps its v1 connection).
pub fn upgrade_answer(reserved: &[u8; 8], named: InfoHash, v2: Option<InfoHash>) -> InfoHash {
    match v2 {
        Some(v2) if reserved[7] & 0x10 != 0 => v2,
        _ => named,
    }
}

/// Whether the info-hash `got` that the answering peer's handshake named
/// is acceptable on a connection we dialled naming `sent` (BEP 52,
/// "upgrade path"): `sent` itself, or, when we set the v2 bit for a hybrid
/// (`upgrade` = its truncated v2 info-hash), the truncated v2 info-hash,
/// which makes the connection a v2 one.
pub fn reply_accepted(sent: InfoHash, upgrade: Option<InfoHash>, got: InfoHash) -> bool {
    got == sent || upgrade == Some(got)
}

/// A block: `length` bytes at byte offset `begin` of piece `index` (BEP 3
/// `request`/`cancel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRequest {
    /// Zero-based piece index.
    pub index: u32,
    /// Byte offset within the piece.
    pub begin: u32,
    /// Length in bytes (normally [`BLOCK_SIZE`], less for a piece's last block).
    pub length: u32,
}

/// One peer wire message (BEP 3), after its 4-byte length prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Length 0: keeps the connection open.
    KeepAlive,
    /// id 0.
    Choke,
    /// id 1.
    Unchoke,
    /// id 2.
    Interested,
    /// id 3.
    NotInterested,
    /// id 4: the sender now has this piece.
    Have(u32),
    /// id 5: raw bit vector, MSB of byte 0 = piece 0; check it with
    /// [`Bitfield::from_bytes`] once the number of pieces is known.
    Bitfield(Bytes),
    /// id 6.
    Request(BlockRequest),
    /// id 7: a block of data.
    Piece { index: u32, begin: u32, data: Bytes },
    /// id 8.
    Cancel(BlockRequest),
    /// id 9 (BEP 5): the sender's DHT node listens on this UDP port.
    Port(u16),
    /// id 20 (BEP 10): extended message `id` (0 = extension handshake,
    /// otherwise an id *we* assigned in our handshake's `m`), then its payload.
    Extended { id: u8, payload: Bytes },
    /// Any other id (e.g. BEP 6 fast extension), kept so the caller can
    /// ignore it. BEP 52 hash messages (ids 21 to 23) arrive here too, size
    /// checked; read them with [`HashMessage::from_message`].
    Unknown { id: u8, payload: Bytes },
}

const ID_CHOKE: u8 = 0;
const ID_UNCHOKE: u8 = 1;
const ID_INTERESTED: u8 = 2;
const ID_NOT_INTERESTED: u8 = 3;
const ID_HAVE: u8 = 4;
const ID_BITFIELD: u8 = 5;
const ID_REQUEST: u8 = 6;
const ID_PIECE: u8 = 7;
const ID_CANCEL: u8 = 8;
const ID_PORT: u8 = 9;
const ID_EXTENDED: u8 = 20;
/// BEP 52 `hash request`.
pub const ID_HASH_REQUEST: u8 = 21;
/// BEP 52 `hashes`.
pub const ID_HASHES: u8 = 22;
/// BEP 52 `hash reject`.
pub const ID_HASH_REJECT: u8 = 23;

/// The payload size rule of message `id` (payload = frame body after the id
/// byte): `(name, min, exact)`. `None` for ids we don't know.
fn payload_rule(id: u8) -> Option<(&'static str, usize, bool)> {
    Some(match id {
        ID_CHOKE => ("choke", 0, true),
        ID_UNCHOKE => ("unchoke", 0, true),
        ID_INTERESTED => ("interested", 0, true),
        ID_NOT_INTERESTED => ("not interested", 0, true),
        ID_HAVE => ("have", 4, true),
        ID_BITFIELD => ("bitfield", 0, false),
        ID_REQUEST => ("request", 12, true),
        ID_PIECE => ("piece", 8, false),
        ID_CANCEL => ("cancel", 12, true),
        ID_PORT => ("port", 2, true),
        ID_EXTENDED => ("extended", 1, false),
        ID_HASH_REQUEST => ("hash request", HASH_HEADER_LEN, true),
        ID_HASHES => ("hashes", HASH_HEADER_LEN + 32, false),
        ID_HASH_REJECT => ("hash reject", HASH_HEADER_LEN, true),
        _ => return None,
    })
}

/// Checks a message body length (`len` = length prefix) against `id`'s rule.
fn check_payload(id: u8, len: usize) -> Result<(), WireError> {
    if let Some((name, min, exact)) = payload_rule(id) {
        let payload = len - 1;
        if exact && payload != min {
            return Err(WireError::malformed(
                name,
                format!("payload of {payload} bytes, expected {min}"),
            ));
        }
        if payload < min {
            return Err(WireError::malformed(
                name,
                format!("payload of {payload} bytes, expected at least {min}"),
            ));
        }
    }
    Ok(())
}

impl Message {
    /// Is a whole frame at the start of `buf`? Returns the frame length in
    /// bytes including the 4-byte length prefix, or `Ok(None)` when more
    /// bytes are needed. Never allocates.
    ///
    /// Errors (the connection must be closed): [`WireError::TooLong`] when
    /// the length prefix exceeds `max_len`; [`WireError::Malformed`] as soon
    /// as the id byte shows a fixed-size message with the wrong length.
    pub fn check(buf: &[u8], max_len: u32) -> Result<Option<usize>, WireError> {
        let Some(prefix) = buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        if len > max_len {
            return Err(WireError::TooLong { len, max: max_len });
        }
        // byte 4 is the id only when the frame is not a keep-alive
        if len > 0
            && let Some(&id) = buf.get(4)
        {
            check_payload(id, len as usize)?;
        }
        let total = 4 + len as usize;
        Ok((buf.len() >= total).then_some(total))
    }

    /// Parses one whole frame (length prefix included), as delimited by
    /// [`Message::check`]. `Bitfield`, `Piece`, `Extended` and `Unknown`
    /// payloads are slices of `frame` (no copy).
    ///
    /// Errors: [`WireError::Malformed`] when the prefix does not match the
    /// frame's length or a payload has the wrong size for its message.
    pub fn parse(mut frame: Bytes) -> Result<Message, WireError> {
        if frame.len() < 4 {
            return Err(WireError::malformed(
                "frame",
                "shorter than its length prefix",
            ));
        }
        let len = frame.get_u32() as usize;
        if len != frame.len() {
            return Err(WireError::malformed(
                "frame",
                format!("length prefix {len} but {} bytes follow", frame.len()),
            ));
        }
        if len == 0 {
            return Ok(Message::KeepAlive);
        }
        let id = frame.get_u8();
        check_payload(id, len)?;
        let block = |f: &mut Bytes| BlockRequest {
            index: f.get_u32(),
            begin: f.get_u32(),
            length: f.get_u32(),
        };
        Ok(match id {
            ID_CHOKE => Message::Choke,
            ID_UNCHOKE => Message::Unchoke,
            ID_INTERESTED => Message::Interested,
            ID_NOT_INTERESTED => Message::NotInterested,
            ID_HAVE => Message::Have(frame.get_u32()),
            ID_BITFIELD => Message::Bitfield(frame),
            ID_REQUEST => Message::Request(block(&mut frame)),
            ID_PIECE => {
                let index = frame.get_u32();
                let begin = frame.get_u32();
                Message::Piece {
                    index,
                    begin,
                    data: frame,
                }
            }
            ID_CANCEL => Message::Cancel(block(&mut frame)),
            ID_PORT => Message::Port(frame.get_u16()),
            ID_EXTENDED => {
                let id = frame.get_u8();
                Message::Extended { id, payload: frame }
            }
            id => Message::Unknown { id, payload: frame },
        })
    }

    /// Length of the encoded body (excluding the 4-byte prefix), in bytes.
    pub fn encoded_len(&self) -> usize {
        match self {
            Message::KeepAlive => 0,
            Message::Choke | Message::Unchoke | Message::Interested | Message::NotInterested => 1,
            Message::Have(_) => 5,
            Message::Bitfield(b) => 1 + b.len(),
            Message::Request(_) | Message::Cancel(_) => 13,
            Message::Piece { data, .. } => 9 + data.len(),
            Message::Port(_) => 3,
            Message::Extended { payload, .. } => 2 + payload.len(),
            Message::Unknown { payload, .. } => 1 + payload.len(),
        }
    }

    /// Appends the frame (4-byte big-endian length prefix, id, payload) to `out`.
    pub fn encode_into(&self, out: &mut BytesMut) {
        let len = self.encoded_len();
        out.reserve(4 + len);
        out.put_u32(len as u32);
        let block = |out: &mut BytesMut, id: u8, r: &BlockRequest| {
            out.put_u8(id);
            out.put_u32(r.index);
            out.put_u32(r.begin);
            out.put_u32(r.length);
        };
        match self {
            Message::KeepAlive => {}
            Message::Choke => out.put_u8(ID_CHOKE),
            Message::Unchoke => out.put_u8(ID_UNCHOKE),
            Message::Interested => out.put_u8(ID_INTERESTED),
            Message::NotInterested => out.put_u8(ID_NOT_INTERESTED),
            Message::Have(i) => {
                out.put_u8(ID_HAVE);
                out.put_u32(*i);
            }
            Message::Bitfield(b) => {
                out.put_u8(ID_BITFIELD);
                out.put_slice(b);
            }
            Message::Request(r) => block(out, ID_REQUEST, r),
            Message::Piece { index, begin, data } => {
                out.put_u8(ID_PIECE);
                out.put_u32(*index);
                out.put_u32(*begin);
                out.put_slice(data);
            }
            Message::Cancel(r) => block(out, ID_CANCEL, r),
            Message::Port(p) => {
                out.put_u8(ID_PORT);
                out.put_u16(*p);
            }
            Message::Extended { id, payload } => {
                out.put_u8(ID_EXTENDED);
                out.put_u8(*id);
                out.put_slice(payload);
            }
            Message::Unknown { id, payload } => {
                out.put_u8(*id);
                out.put_slice(payload);
            }
        }
    }

    /// The encoded frame as a new buffer (see [`Message::encode_into`]).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(4 + self.encoded_len());
        self.encode_into(&mut out);
        out.freeze()
    }
}

/// Bytes of the payload shared by the three BEP 52 hash messages: the
/// `pieces root` (32), then base layer, index, length and proof layers
/// (4 bytes each, big-endian).
pub const HASH_HEADER_LEN: usize = 48;

/// A bound on the hashes one `hashes` message may carry:
/// [`MAX_REQUEST_LENGTH`] nodes and [`MAX_UNCLES`] uncles (no valid message
/// has both at once).
pub const MAX_HASHES_PER_MESSAGE: usize = (MAX_REQUEST_LENGTH + MAX_UNCLES) as usize;

/// A bound on the length of a valid `hashes` message body (id, header,
/// hashes), in bytes (264,241). A connection that exchanges v2 hashes needs a message-length
/// limit of at least this ([`Message::check`]'s `max_len`).
pub const MAX_HASHES_MESSAGE_LEN: u32 = (1 + HASH_HEADER_LEN + 32 * MAX_HASHES_PER_MESSAGE) as u32;

/// A BEP 52 hash message ("peer messages": ids 21, 22, 23).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashMessage {
    /// id 21: asks for a range of a file's Merkle tree.
    Request(HashRequest),
    /// id 22: answers a request: `request.length` nodes of the base layer,
    /// then [`uncle_count`] uncle hashes, lowest first. Check them with
    /// [`crate::merkle::verify_hashes`].
    Hashes {
        request: HashRequest,
        hashes: Vec<Hash>,
    },
    /// id 23: the request will not be answered (same payload as the
    /// request).
    Reject(HashRequest),
}

fn get_hash(b: &mut &[u8]) -> Hash {
    let mut h = [0u8; 32];
    b.copy_to_slice(&mut h);
    h
}

impl HashMessage {
    /// Its message id.
    pub fn id(&self) -> u8 {
        match self {
            HashMessage::Request(_) => ID_HASH_REQUEST,
            HashMessage::Hashes { .. } => ID_HASHES,
            HashMessage::Reject(_) => ID_HASH_REJECT,
        }
    }

    /// The range the message names.
    pub fn request(&self) -> &HashRequest {
        match self {
            HashMessage::Request(r) | HashMessage::Reject(r) => r,
            HashMessage::Hashes { request, .. } => request,
        }
    }

    /// Decodes the payload (after the id byte) of message `id`. `None` when
    /// `id` is not 21, 22 or 23.
    ///
    /// Errors ([`WireError::Malformed`], the connection must be closed): a
    /// request or reject that is not exactly 48 bytes; a `hashes` message
    /// whose hash bytes are not whole 32-byte hashes, whose length is 0 or
    /// above [`MAX_REQUEST_LENGTH`], whose proof layers are
    /// [`MAX_UNCLES`] or more, or which does not carry exactly `length`
    /// + [`uncle_count`] hashes. Whether a range fits a file is checked
    ///   later, against its tree ([`crate::merkle::check_request`]).
    pub fn decode(id: u8, payload: &[u8]) -> Option<Result<HashMessage, WireError>> {
        let name = match id {
            ID_HASH_REQUEST => "hash request",
            ID_HASHES => "hashes",
            ID_HASH_REJECT => "hash reject",
            _ => return None,
        };
        Some(Self::decode_known(id, name, payload))
    }

    fn decode_known(id: u8, name: &'static str, payload: &[u8]) -> Result<HashMessage, WireError> {
        if payload.len() < HASH_HEADER_LEN || (id != ID_HASHES && payload.len() != HASH_HEADER_LEN)
        {
            return Err(WireError::malformed(
                name,
                format!(
                    "payload of {} bytes, expected {HASH_HEADER_LEN}{}",
                    payload.len(),
                    if id == ID_HASHES { " and hashes" } else { "" }
                ),
            ));
        }
        let mut b = payload;
        let request = HashRequest {
            pieces_root: get_hash(&mut b),
            base_layer: b.get_u32(),
            index: b.get_u32(),
            length: b.get_u32(),
            proof_layers: b.get_u32(),
        };
        Ok(match id {
            ID_HASH_REQUEST => HashMessage::Request(request),
            ID_HASH_REJECT => HashMessage::Reject(request),
            _ => {
                if b.len() % 32 != 0 {
                    return Err(WireError::malformed(
                        name,
                        format!("{} bytes of hashes, not a multiple of 32", b.len()),
                    ));
                }
                if request.length == 0 || request.length > MAX_REQUEST_LENGTH {
                    return Err(WireError::malformed(
                        name,
                        format!(
                            "length {} is not from 1 to {MAX_REQUEST_LENGTH}",
                            request.length
                        ),
                    ));
                }
                if request.proof_layers >= MAX_UNCLES {
                    return Err(WireError::malformed(
                        name,
                        format!(
                            "{} proof layers, more than a tree can have",
                            request.proof_layers
                        ),
                    ));
                }
                let want = request.length as usize
                    + uncle_count(request.length, request.proof_layers) as usize;
                if b.len() / 32 != want {
                    return Err(WireError::malformed(
                        name,
                        format!(
                            "{} hashes where length {} and {} proof layers need {want}",
                            b.len() / 32,
                            request.length,
                            request.proof_layers
                        ),
                    ));
                }
                let mut hashes = Vec::with_capacity(want);
                while !b.is_empty() {
                    hashes.push(get_hash(&mut b));
                }
                HashMessage::Hashes { request, hashes }
            }
        })
    }

    /// Reads a received [`Message::Unknown`] with id 21, 22 or 23; `None`
    /// for any other message. Errors: as [`HashMessage::decode`].
    pub fn from_message(msg: &Message) -> Option<Result<HashMessage, WireError>> {
        match msg {
            Message::Unknown { id, payload } => HashMessage::decode(*id, payload),
            _ => None,
        }
    }

    /// The payload after the id byte.
    pub fn payload(&self) -> Bytes {
        let r = self.request();
        let extra = match self {
            HashMessage::Hashes { hashes, .. } => 32 * hashes.len(),
            _ => 0,
        };
        let mut out = BytesMut::with_capacity(HASH_HEADER_LEN + extra);
        out.put_slice(&r.pieces_root);
        out.put_u32(r.base_layer);
        out.put_u32(r.index);
        out.put_u32(r.length);
        out.put_u32(r.proof_layers);
        if let HashMessage::Hashes { hashes, .. } = self {
            for h in hashes {
                out.put_slice(h);
            }
        }
        out.freeze()
    }

    /// The message to send (a [`Message::Unknown`] with this id).
    pub fn to_message(&self) -> Message {
        Message::Unknown {
            id: self.id(),
            payload: self.payload(),
        }
    }

    /// The whole frame (length prefix, id, payload).
    pub fn encode(&self) -> Bytes {
        self.to_message().encode()
    }
}

/// Which pieces a peer (or we) have: a bit vector of `len` bits, the most
/// significant bit of byte 0 being piece 0 (BEP 3 `bitfield`).
#[derive(Clone, PartialEq, Eq)]
pub struct Bitfield {
    /// `ceil(len / 8)` bytes; spare bits at the end are always zero.
    bits: Vec<u8>,
    /// Number of pieces.
    len: u32,
}

impl std::fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bitfield({}/{})", self.count(), self.len)
    }
}

impl Bitfield {
    /// `num_pieces` bits, all clear.
    pub fn new(num_pieces: u32) -> Bitfield {
        Bitfield {
            bits: vec![0; num_pieces.div_ceil(8) as usize],
            len: num_pieces,
        }
    }

    /// `num_pieces` bits, all set (a seed).
    pub fn full(num_pieces: u32) -> Bitfield {
        let mut b = Bitfield {
            bits: vec![0xff; num_pieces.div_ceil(8) as usize],
            len: num_pieces,
        };
        if num_pieces % 8 != 0
            && let Some(last) = b.bits.last_mut()
        {
            *last = 0xffu8 << (8 - num_pieces % 8);
        }
        b
    }

    /// Checks a received `bitfield` payload against the torrent's number of
    /// pieces. Errors ([`WireError::Malformed`], message `"bitfield"`): the
    /// payload is not exactly `ceil(num_pieces / 8)` bytes, or a spare bit
    /// after the last piece is set (BEP 3: "clients should drop the
    /// connection").
    pub fn from_bytes(bytes: &[u8], num_pieces: u32) -> Result<Bitfield, WireError> {
        let want = num_pieces.div_ceil(8) as usize;
        if bytes.len() != want {
            return Err(WireError::malformed(
                "bitfield",
                format!(
                    "{} bytes for {num_pieces} pieces, expected {want}",
                    bytes.len()
                ),
            ));
        }
        if num_pieces % 8 != 0 {
            let spare_mask = 0xffu8 >> (num_pieces % 8);
            if bytes[want - 1] & spare_mask != 0 {
                return Err(WireError::malformed("bitfield", "spare bits set"));
            }
        }
        Ok(Bitfield {
            bits: bytes.to_vec(),
            len: num_pieces,
        })
    }

    /// Whether piece `index` is set; false when out of range.
    pub fn get(&self, index: u32) -> bool {
        if index >= self.len {
            return false;
        }
        self.bits[(index / 8) as usize] & (0x80 >> (index % 8)) != 0
    }

    /// Sets piece `index`. Returns true when the bit was newly set; false
    /// when it was already set or `index` is out of range (nothing changes).
    pub fn set(&mut self, index: u32) -> bool {
        if index >= self.len || self.get(index) {
            return false;
        }
        self.bits[(index / 8) as usize] |= 0x80 >> (index % 8);
        true
    }

    /// Clears piece `index`; returns true when it was set.
    pub fn clear(&mut self, index: u32) -> bool {
        if !self.get(index) {
            return false;
        }
        self.bits[(index / 8) as usize] &= !(0x80 >> (index % 8));
        true
    }

    /// Number of set pieces.
    pub fn count(&self) -> u32 {
        self.bits.iter().map(|b| b.count_ones()).sum()
    }

    /// True when every piece is set (true for an empty bitfield).
    pub fn all(&self) -> bool {
        self.count() == self.len
    }

    /// The indices of set pieces, ascending.
    pub fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }

    /// The wire form: `ceil(len / 8)` bytes, spare bits zero.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bits
    }

    /// Number of pieces (bits).
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True for a torrent without pieces.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(msg: &Message) -> Bytes {
        msg.encode()
    }

    fn round_trip(msg: Message) {
        let f = frame(&msg);
        assert_eq!(f.len(), 4 + msg.encoded_len());
        assert_eq!(
            Message::check(&f, DEFAULT_MAX_MESSAGE_LEN).unwrap(),
            Some(f.len())
        );
        // every strict prefix is incomplete, never an error
        for cut in 0..f.len() {
            assert_eq!(
                Message::check(&f[..cut], DEFAULT_MAX_MESSAGE_LEN).unwrap(),
                None,
                "{msg:?} cut at {cut}"
            );
        }
        assert_eq!(Message::parse(f).unwrap(), msg);
    }

    #[test]
    fn messages_round_trip() {
        let r = BlockRequest {
            index: 7,
            begin: 16384,
            length: 16384,
        };
        for m in [
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(0xdead_beef),
            Message::Bitfield(Bytes::from_static(&[0xff, 0x80])),
            Message::Bitfield(Bytes::new()),
            Message::Request(r),
            Message::Cancel(r),
            Message::Piece {
                index: 3,
                begin: 32768,
                data: Bytes::from(vec![9u8; 16384]),
            },
            Message::Piece {
                index: 3,
                begin: 0,
                data: Bytes::new(),
            },
            Message::Port(6881),
            Message::Extended {
                id: 0,
                payload: Bytes::from_static(b"d1:md11:ut_metadatai1eee"),
            },
            Message::Extended {
                id: 3,
                payload: Bytes::new(),
            },
            Message::Unknown {
                id: 14,
                payload: Bytes::new(),
            },
            Message::Unknown {
                id: 13,
                payload: Bytes::from_static(&[0, 0, 0, 1]),
            },
        ] {
            round_trip(m);
        }
    }

    #[test]
    fn exact_wire_bytes() {
        assert_eq!(&Message::KeepAlive.encode()[..], &[0, 0, 0, 0]);
        assert_eq!(&Message::Interested.encode()[..], &[0, 0, 0, 1, 2]);
        assert_eq!(
            &Message::Have(258).encode()[..],
            &[0, 0, 0, 5, 4, 0, 0, 1, 2]
        );
        assert_eq!(
            &Message::Port(0x1ae1).encode()[..],
            &[0, 0, 0, 3, 9, 0x1a, 0xe1]
        );
        let req = Message::Request(BlockRequest {
            index: 1,
            begin: 2,
            length: 3,
        });
        assert_eq!(
            &req.encode()[..],
            &[0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]
        );
    }

    #[test]
    fn parse_is_zero_copy() {
        let f = Message::Piece {
            index: 1,
            begin: 0,
            data: Bytes::from(vec![1u8; 100]),
        }
        .encode();
        let base = f.as_ptr() as usize;
        match Message::parse(f).unwrap() {
            Message::Piece { data, .. } => assert_eq!(data.as_ptr() as usize, base + 13),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn several_frames_in_one_buffer() {
        let mut buf = BytesMut::new();
        Message::Unchoke.encode_into(&mut buf);
        Message::Have(5).encode_into(&mut buf);
        Message::KeepAlive.encode_into(&mut buf);
        Message::KeepAlive.encode_into(&mut buf);
        Message::Have(6).encode_into(&mut buf);
        let mut got = Vec::new();
        while let Some(n) = Message::check(&buf, 100).unwrap() {
            got.push(Message::parse(buf.split_to(n).freeze()).unwrap());
        }
        assert!(buf.is_empty());
        assert_eq!(
            got,
            [
                Message::Unchoke,
                Message::Have(5),
                Message::KeepAlive,
                Message::KeepAlive,
                Message::Have(6)
            ]
        );
    }

    #[test]
    fn too_long_is_refused_from_the_prefix_alone() {
        let prefix = (BLOCK_SIZE + 14).to_be_bytes();
        match Message::check(&prefix, BLOCK_SIZE + 13) {
            Err(WireError::TooLong { len, max }) => {
                assert_eq!((len, max), (BLOCK_SIZE + 14, BLOCK_SIZE + 13))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Message::check(&u32::MAX.to_be_bytes(), DEFAULT_MAX_MESSAGE_LEN),
            Err(WireError::TooLong { .. })
        ));
        // exactly at the limit is fine (and incomplete here)
        let at = (BLOCK_SIZE + 13).to_be_bytes();
        assert_eq!(Message::check(&at, BLOCK_SIZE + 13).unwrap(), None);
    }

    fn raw(len: u32, id: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = len.to_be_bytes().to_vec();
        v.push(id);
        v.extend_from_slice(payload);
        v
    }

    fn malformed_name(e: WireError) -> &'static str {
        match e {
            WireError::Malformed { message, .. } => message,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn wrong_fixed_sizes_are_malformed() {
        let cases: &[(u8, usize, &str)] = &[
            (0, 1, "choke"),
            (1, 4, "unchoke"),
            (2, 1, "interested"),
            (3, 2, "not interested"),
            (4, 3, "have"),
            (4, 5, "have"),
            (6, 11, "request"),
            (6, 13, "request"),
            (7, 7, "piece"),
            (8, 0, "cancel"),
            (9, 1, "port"),
            (9, 4, "port"),
            (20, 0, "extended"),
        ];
        for &(id, plen, name) in cases {
            let f = raw(1 + plen as u32, id, &vec![0u8; plen]);
            // check sees it from the id byte, before the payload arrives
            let e = Message::check(&f[..5], 100).unwrap_err();
            assert_eq!(malformed_name(e), name);
            let e = Message::check(&f, 100).unwrap_err();
            assert_eq!(malformed_name(e), name);
            // parse refuses it too, without trusting check
            let e = Message::parse(Bytes::from(f)).unwrap_err();
            assert_eq!(malformed_name(e), name);
        }
    }

    #[test]
    fn parse_refuses_inconsistent_frames() {
        assert!(Message::parse(Bytes::from_static(&[0, 0])).is_err());
        let e = Message::parse(Bytes::from_static(&[0, 0, 0, 5, 4, 0, 0])).unwrap_err();
        assert_eq!(malformed_name(e), "frame");
        let e = Message::parse(Bytes::from_static(&[0, 0, 0, 1, 2, 0])).unwrap_err();
        assert_eq!(malformed_name(e), "frame");
    }

    #[test]
    fn handshake_round_trip_and_bits() {
        let ih = InfoHash([7; 20]);
        let hs = Handshake::new(ih, *b"-FM0100-abcdefghijkl");
        assert!(hs.supports_extensions());
        assert!(hs.supports_dht());
        let bytes = hs.encode();
        assert_eq!(bytes[0], 19);
        assert_eq!(&bytes[1..20], PROTOCOL);
        assert_eq!(bytes[25], 0x10);
        assert_eq!(bytes[27], 0x01);
        assert_eq!(Handshake::decode(&bytes).unwrap(), hs);

        let mut plain = bytes;
        plain[20..28].fill(0);
        let p = Handshake::decode(&plain).unwrap();
        assert!(!p.supports_extensions() && !p.supports_dht());

        let mut bad = bytes;
        bad[0] = 18;
        assert!(matches!(
            Handshake::decode(&bad),
            Err(WireError::BadHandshake)
        ));
        let mut bad = bytes;
        bad[5] = b'x';
        assert!(matches!(
            Handshake::decode(&bad),
            Err(WireError::BadHandshake)
        ));
    }

    #[test]
    fn bitfield_bits_msb_first() {
        let mut b = Bitfield::new(10);
        assert_eq!(b.as_bytes(), &[0, 0]);
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(b.set(9));
        assert!(!b.set(10), "out of range is refused");
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert!(b.get(0) && b.get(9) && !b.get(1) && !b.get(10) && !b.get(u32::MAX));
        assert_eq!(b.count(), 2);
        assert_eq!(b.ones().collect::<Vec<_>>(), [0, 9]);
        assert!(!b.all());
        assert!(b.clear(9) && !b.clear(9));
        assert_eq!(b.len(), 10);

        let full = Bitfield::full(10);
        assert_eq!(full.as_bytes(), &[0xff, 0xc0]);
        assert!(full.all());
        assert_eq!(Bitfield::full(16).as_bytes(), &[0xff, 0xff]);
        assert!(Bitfield::new(0).all() && Bitfield::new(0).is_empty());

        let parsed = Bitfield::from_bytes(&[0xff, 0xc0], 10).unwrap();
        assert_eq!(parsed, full);
    }

    #[test]
    fn bitfield_errors() {
        // wrong length, both ways
        assert_eq!(
            malformed_name(Bitfield::from_bytes(&[0xff], 10).unwrap_err()),
            "bitfield"
        );
        assert!(Bitfield::from_bytes(&[0, 0, 0], 10).is_err());
        assert!(Bitfield::from_bytes(&[0], 0).is_err());
        // a spare bit after piece 9
        assert!(Bitfield::from_bytes(&[0xff, 0xe0], 10).is_err());
        assert!(Bitfield::from_bytes(&[0x00, 0x01], 10).is_err());
        // exact multiple of 8 has no spare bits
        assert!(Bitfield::from_bytes(&[0xff], 8).unwrap().all());
        assert!(Bitfield::from_bytes(&[], 0).unwrap().is_empty());
    }

    #[test]
    fn limit_helper() {
        assert_eq!(max_message_len_for(10), 2 * BLOCK_SIZE);
        assert_eq!(max_message_len_for(8_000_000), 1_000_001);
        assert!(max_message_len_for(0) >= BLOCK_SIZE + 13);
    }

    fn hreq(base_layer: u32, index: u32, length: u32, proof_layers: u32) -> HashRequest {
        HashRequest {
            pieces_root: [0xab; 32],
            base_layer,
            index,
            length,
            proof_layers,
        }
    }

    /// Encodes, frames, checks, parses and decodes a hash message.
    fn hash_round_trip(m: HashMessage) {
        let frame = m.encode();
        let len = Message::check(&frame, MAX_HASHES_MESSAGE_LEN)
            .unwrap()
            .unwrap();
        assert_eq!(len, frame.len());
        let parsed = Message::parse(frame).unwrap();
        assert_eq!(parsed, m.to_message());
        assert_eq!(HashMessage::from_message(&parsed).unwrap().unwrap(), m);
    }

    #[test]
    fn hash_messages_round_trip() {
        hash_round_trip(HashMessage::Request(hreq(0, 512, 512, 9)));
        hash_round_trip(HashMessage::Reject(hreq(6, 0, 2, 0)));
        hash_round_trip(HashMessage::Hashes {
            request: hreq(0, 0, 2, 3),
            hashes: vec![[1; 32], [2; 32], [3; 32], [4; 32], [5; 32]],
        });
        // one node: its own sibling is the first uncle
        hash_round_trip(HashMessage::Hashes {
            request: hreq(0, 7, 1, 0),
            hashes: vec![[1; 32], [2; 32]],
        });
        // the largest messages: 8192 nodes and 51 uncles, 1 node and 64
        let most = HashMessage::Hashes {
            request: hreq(0, 0, MAX_REQUEST_LENGTH, MAX_UNCLES - 1),
            hashes: vec![[9; 32]; MAX_REQUEST_LENGTH as usize + 51],
        };
        assert!(most.encode().len() <= 4 + MAX_HASHES_MESSAGE_LEN as usize);
        hash_round_trip(most);
        hash_round_trip(HashMessage::Hashes {
            request: hreq(0, 0, 1, MAX_UNCLES - 1),
            hashes: vec![[9; 32]; 1 + MAX_UNCLES as usize],
        });
        // other messages are not hash messages
        assert!(HashMessage::from_message(&Message::Have(1)).is_none());
        assert!(
            HashMessage::from_message(&Message::Unknown {
                id: 24,
                payload: Bytes::new()
            })
            .is_none()
        );
    }

    #[test]
    fn hash_request_exact_bytes() {
        let r = HashRequest {
            pieces_root: [7; 32],
            base_layer: 2,
            index: 0x0102_0304,
            length: 512,
            proof_layers: 9,
        };
        let mut want = vec![0, 0, 0, 49, 21];
        want.extend_from_slice(&[7; 32]);
        want.extend_from_slice(&[0, 0, 0, 2, 1, 2, 3, 4, 0, 0, 2, 0, 0, 0, 0, 9]);
        assert_eq!(&HashMessage::Request(r).encode()[..], &want[..]);
        want[4] = 23;
        assert_eq!(&HashMessage::Reject(r).encode()[..], &want[..]);
    }

    #[test]
    fn malformed_hash_messages() {
        let header = |length: u32, proof_layers: u32| {
            let mut p = vec![0xab; 32];
            p.extend_from_slice(&0u32.to_be_bytes());
            p.extend_from_slice(&0u32.to_be_bytes());
            p.extend_from_slice(&length.to_be_bytes());
            p.extend_from_slice(&proof_layers.to_be_bytes());
            p
        };
        // request and reject: exactly 48 bytes, seen from the frame header
        for id in [ID_HASH_REQUEST, ID_HASH_REJECT] {
            for n in [0usize, 47, 49, 80] {
                let f = raw(1 + n as u32, id, &vec![0; n]);
                assert!(
                    matches!(
                        Message::check(&f, 1 << 20),
                        Err(WireError::Malformed { .. })
                    ),
                    "id {id} payload {n}"
                );
                assert!(HashMessage::decode(id, &vec![0; n]).unwrap().is_err());
            }
            assert!(HashMessage::decode(id, &[0; 48]).unwrap().is_ok());
        }
        // hashes: at least one hash, whole hashes, the right count
        let f = raw(1 + 48, ID_HASHES, &[0; 48]);
        assert!(matches!(
            Message::check(&f, 1 << 20),
            Err(WireError::Malformed { .. })
        ));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            ([header(2, 0), vec![0; 65]].concat(), "not a multiple of 32"),
            (
                [header(2, 0), vec![0; 96]].concat(),
                "3 hashes where length 2",
            ),
            ([header(2, 3), vec![0; 64]].concat(), "need 5"),
            ([header(1, 0), vec![0; 32]].concat(), "need 2"),
            ([header(0, 0), vec![0; 32]].concat(), "length 0"),
            (
                [header(MAX_REQUEST_LENGTH + 1, 0), vec![0; 32]].concat(),
                "length 8193",
            ),
            (
                [header(2, MAX_UNCLES), vec![0; 32]].concat(),
                "64 proof layers",
            ),
            (
                [header(2, u32::MAX), vec![0; 32]].concat(),
                "proof layers, more than",
            ),
        ];
        for (payload, want) in cases {
            let e = HashMessage::decode(ID_HASHES, &payload)
                .unwrap()
                .unwrap_err();
            assert!(
                matches!(
                    &e,
                    WireError::Malformed {
                        message: "hashes",
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.to_string().contains(want), "'{e}' lacks '{want}'");
        }
        // a frame one byte over the largest valid `hashes` message is
        // refused from its length prefix alone
        let prefix = (MAX_HASHES_MESSAGE_LEN + 1).to_be_bytes();
        assert!(matches!(
            Message::check(&prefix, MAX_HASHES_MESSAGE_LEN),
            Err(WireError::TooLong { .. })
        ));
    }

    #[test]
    fn v2_upgrade_bit() {
        let mut h = Handshake::new(InfoHash([1; 20]), [2; 20]);
        assert!(!h.supports_v2());
        h.reserved[7] |= 0x10;
        assert!(h.supports_v2());
        assert!(h.supports_dht());
        let plain = Handshake::new(InfoHash([1; 20]), [2; 20]);
        assert_eq!(plain.with_v2_bit(), h);
        assert_eq!(plain.with_v2_bit().encode()[27], 0x11, "DHT and v2 bits");
    }

    /// The BEP 52 upgrade decision on each side of a hybrid's connection.
    #[test]
    fn v2_upgrade_decision() {
        let v1 = InfoHash([1; 20]);
        let v2 = InfoHash([2; 20]);
        let other = InfoHash([3; 20]);
        let bit = Handshake::new(v1, [9; 20]).with_v2_bit().reserved;
        let no_bit = Handshake::new(v1, [9; 20]).reserved;
        // answering: upgraded only for a hybrid dialled with the bit
        assert_eq!(upgrade_answer(&bit, v1, Some(v2)), v2);
        assert_eq!(upgrade_answer(&no_bit, v1, Some(v2)), v1);
        assert_eq!(upgrade_answer(&bit, v1, None), v1);
        // dialled on the v2 hash already: it stays
        assert_eq!(upgrade_answer(&bit, v2, None), v2);
        // dialling: the hash we sent, or the v2 one when we offered it
        assert!(reply_accepted(v1, Some(v2), v1));
        assert!(reply_accepted(v1, Some(v2), v2));
        assert!(!reply_accepted(v1, Some(v2), other));
        assert!(reply_accepted(v1, None, v1));
        assert!(!reply_accepted(v1, None, v2), "not offered: refused");
    }
}
