//! A read-only view of a uTP packet header (BEP 29 "header format"), parsed
//! by `librqbit-utp`'s own parser, the one its dispatcher runs on every
//! datagram. For logs, for telling uTP datagrams apart from other UDP
//! traffic (KRPC messages start with `d`, which is never a valid uTP first
//! byte), and for fuzzing that parser.

use librqbit_utp::raw::{Type, UtpHeader};

/// The 20-byte fixed header size (BEP 29).
pub const HEADER_LEN: usize = 20;

/// uTP packet types (BEP 29 "type"), the high nibble of byte 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// 0: data.
    Data,
    /// 1: the last packet of the sender's stream.
    Fin,
    /// 2: an ACK without data.
    State,
    /// 3: the connection is terminated.
    Reset,
    /// 4: opens a connection.
    Syn,
}

/// The header of one uTP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    /// The packet type.
    pub kind: PacketType,
    /// `connection_id`: the receiver's id for an `ST_SYN`'s answer and
    /// everything after, the sender's receive id in the `ST_SYN` itself.
    pub connection_id: u16,
    /// `timestamp_microseconds` of the sender's clock (wraps).
    pub timestamp_us: u32,
    /// `timestamp_difference_microseconds`: the sender's last one-way
    /// delay sample, the input of LEDBAT.
    pub timestamp_difference_us: u32,
    /// `wnd_size`: bytes the sender can still receive.
    pub wnd_size: u32,
    /// `seq_nr` of this packet.
    pub seq_nr: u16,
    /// `ack_nr`: the last packet the sender received in order.
    pub ack_nr: u16,
    /// Whether a selective ACK extension (type 1) was present.
    pub selective_ack: bool,
    /// Bytes of header including extensions; the payload follows.
    pub len: usize,
}

impl PacketHeader {
    /// Parses the header at the start of `datagram`. `None` when it is not a
    /// uTP packet: shorter than 20 bytes, a version other than 1, a type
    /// above 4, or an extension chain that runs past the end. Never panics,
    /// never allocates.
    pub fn parse(datagram: &[u8]) -> Option<PacketHeader> {
        let (h, len) = UtpHeader::deserialize(datagram)?;
        let kind = match h.get_type() {
            Type::ST_DATA => PacketType::Data,
            Type::ST_FIN => PacketType::Fin,
            Type::ST_STATE => PacketType::State,
            Type::ST_RESET => PacketType::Reset,
            Type::ST_SYN => PacketType::Syn,
        };
        Some(PacketHeader {
            kind,
            connection_id: u16::from_be_bytes([datagram[2], datagram[3]]),
            timestamp_us: h.timestamp_microseconds,
            timestamp_difference_us: h.timestamp_difference_microseconds,
            wnd_size: h.wnd_size,
            seq_nr: u16::from_be_bytes([datagram[16], datagram[17]]),
            ack_nr: u16::from_be_bytes([datagram[18], datagram[19]]),
            selective_ack: h.extensions.selective_ack.is_some(),
            len,
        })
    }
}
