//! Metadata exchange (BEP 9, `ut_metadata`): fetching the info dictionary
//! from peers in 16 KiB pieces, checking it against the info-hash, and
//! serving ours.
//!
//! A message is an extended message (BEP 10) whose payload is a bencoded
//! dictionary (`msg_type`: 0 request, 1 data, 2 reject; `piece`; and for data
//! `total_size`), followed, for data, by the raw piece bytes.

use bytes::Bytes;
use sha1::Digest;

use crate::bencode::{self, Owned};
use crate::hash::InfoHash;
use crate::peer::wire::WireError;

/// Size of a metadata piece in bytes; every piece but the last is exactly this.
pub const METADATA_PIECE: usize = 16384;

/// Default cap on the size of an info dictionary we agree to fetch: 16 MiB
/// (a torrent of 800 000 pieces). Larger `metadata_size` values are refused
/// before anything is allocated.
pub const MAX_METADATA_SIZE: u64 = 16 << 20;

const MSG_REQUEST: i64 = 0;
const MSG_DATA: i64 = 1;
const MSG_REJECT: i64 = 2;

/// One `ut_metadata` message (BEP 9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMsg {
    /// `msg_type` 0: please send metadata piece `piece`.
    Request { piece: u32 },
    /// `msg_type` 1: metadata piece `piece` of an info dictionary of
    /// `total_size` bytes.
    Data {
        piece: u32,
        total_size: u64,
        data: Bytes,
    },
    /// `msg_type` 2: the sender will not send `piece`.
    Reject { piece: u32 },
    /// Any other `msg_type`; BEP 9 says such messages must be ignored.
    Unknown { msg_type: i64 },
}

impl MetadataMsg {
    /// The extended-message payload: the bencoded dictionary, followed by
    /// the piece bytes for `Data`. Send it as
    /// `Message::Extended { id: <the peer's ut_metadata id>, payload }`.
    pub fn encode(&self) -> Vec<u8> {
        let (msg_type, piece) = match self {
            MetadataMsg::Request { piece } => (MSG_REQUEST, Some(*piece)),
            MetadataMsg::Data { piece, .. } => (MSG_DATA, Some(*piece)),
            MetadataMsg::Reject { piece } => (MSG_REJECT, Some(*piece)),
            MetadataMsg::Unknown { msg_type } => (*msg_type, None),
        };
        let mut d = Owned::dict().insert("msg_type", Owned::Int(msg_type));
        if let Some(p) = piece {
            d = d.insert("piece", Owned::Int(i64::from(p)));
        }
        if let MetadataMsg::Data { total_size, .. } = self {
            d = d.insert(
                "total_size",
                Owned::Int((*total_size).min(i64::MAX as u64) as i64),
            );
        }
        let mut out = d.encode();
        if let MetadataMsg::Data { data, .. } = self {
            out.extend_from_slice(data);
        }
        out
    }

    /// Decodes an extended-message payload; `Data` bytes are a slice of
    /// `payload` (no copy).
    ///
    /// Errors ([`WireError::Bencode`] or [`WireError::Malformed`] with
    /// message `"ut_metadata"`): not a bencoded dictionary; `msg_type`
    /// missing; `piece` missing or outside 0..2^32 for request, data and
    /// reject; `total_size` missing or not positive in data; more than
    /// [`METADATA_PIECE`] bytes of data.
    pub fn decode(payload: &Bytes) -> Result<MetadataMsg, WireError> {
        const NAME: &str = "ut_metadata";
        let (v, used) = bencode::decode_prefix(payload, bencode::Limits::default())
            .map_err(|err| WireError::Bencode { message: NAME, err })?;
        if v.as_dict().is_none() {
            return Err(WireError::malformed(NAME, "not a dictionary"));
        }
        let msg_type = v
            .get(b"msg_type")
            .and_then(|t| t.as_int())
            .ok_or_else(|| WireError::malformed(NAME, "no integer msg_type"))?;
        if !(MSG_REQUEST..=MSG_REJECT).contains(&msg_type) {
            return Ok(MetadataMsg::Unknown { msg_type });
        }
        let piece = v
            .get(b"piece")
            .and_then(|p| p.as_int())
            .and_then(|p| u32::try_from(p).ok())
            .ok_or_else(|| WireError::malformed(NAME, "no valid piece"))?;
        Ok(match msg_type {
            MSG_REQUEST => MetadataMsg::Request { piece },
            MSG_REJECT => MetadataMsg::Reject { piece },
            _ => {
                let total_size = v
                    .get(b"total_size")
                    .and_then(|t| t.as_int())
                    .and_then(|t| u64::try_from(t).ok())
                    .filter(|&t| t > 0)
                    .ok_or_else(|| WireError::malformed(NAME, "data without a valid total_size"))?;
                let data = payload.slice(used..);
                if data.len() > METADATA_PIECE {
                    return Err(WireError::malformed(
                        NAME,
                        format!("{} bytes of data in one piece", data.len()),
                    ));
                }
                MetadataMsg::Data {
                    piece,
                    total_size,
                    data,
                }
            }
        })
    }
}

/// The serving side: the answer to a request for `piece` of our info
/// dictionary `raw_info`, or `None` when the piece does not exist (answer
/// with [`MetadataMsg::Reject`]).
pub fn data_response(raw_info: &[u8], piece: u32) -> Option<MetadataMsg> {
    let start = (piece as usize).checked_mul(METADATA_PIECE)?;
    if start >= raw_info.len() {
        return None;
    }
    let end = (start + METADATA_PIECE).min(raw_info.len());
    Some(MetadataMsg::Data {
        piece,
        total_size: raw_info.len() as u64,
        data: Bytes::copy_from_slice(&raw_info[start..end]),
    })
}

/// Why metadata could not be assembled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// `metadata_size` of 0.
    #[error("metadata size of 0 bytes")]
    Empty,
    /// `metadata_size` above the cap (bytes).
    #[error("metadata size of {size} bytes exceeds the cap of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    /// A data message announced another `total_size` than the one we assemble.
    #[error("data message says total_size {got}, expected {expected}")]
    TotalSizeMismatch { expected: u64, got: u64 },
    /// A piece index past the end of the metadata.
    #[error("metadata piece {piece} out of range (have {num_pieces} pieces)")]
    PieceOutOfRange { piece: u32, num_pieces: u32 },
    /// A piece of the wrong length (bytes): all are 16 KiB but the last.
    #[error("metadata piece {piece} has {got} bytes, expected {expected}")]
    WrongPieceSize {
        piece: u32,
        expected: usize,
        got: usize,
    },
    /// [`MetadataAssembler::finish`] before every piece arrived.
    #[error("metadata incomplete")]
    Incomplete,
    /// The assembled bytes do not hash to the info-hash; the assembler was
    /// reset so the pieces can be fetched again (from another peer).
    #[error("metadata does not match the info-hash")]
    HashMismatch,
}

/// Collects the pieces of an info dictionary of known size (from a peer's
/// `metadata_size`, BEP 9) and checks the result against the 20-byte
/// info-hash it was asked by: its SHA-1 (v1 and hybrid torrents), or its
/// SHA-256 truncated to 20 bytes (a v2 torrent found by its v2 info-hash,
/// BEP 52). The caller checks the full SHA-256 when it knows it.
///
/// Pieces are kept as received (no buffer of `total_size` is allocated up
/// front), so a lying `metadata_size` costs nothing until data arrives.
#[derive(Debug)]
pub struct MetadataAssembler {
    /// What the metadata must hash to.
    info_hash: InfoHash,
    /// Size of the info dictionary in bytes.
    total_size: u64,
    /// One slot per 16 KiB piece.
    pieces: Vec<Option<Bytes>>,
    /// Number of filled slots.
    received: u32,
}

impl MetadataAssembler {
    /// An assembler for `total_size` bytes, capped at [`MAX_METADATA_SIZE`].
    /// Errors: [`MetadataError::Empty`], [`MetadataError::TooLarge`].
    pub fn new(info_hash: InfoHash, total_size: u64) -> Result<Self, MetadataError> {
        Self::with_limit(info_hash, total_size, MAX_METADATA_SIZE)
    }

    /// Like [`MetadataAssembler::new`] with a cap of `max_size` bytes.
    pub fn with_limit(
        info_hash: InfoHash,
        total_size: u64,
        max_size: u64,
    ) -> Result<Self, MetadataError> {
        if total_size == 0 {
            return Err(MetadataError::Empty);
        }
        if total_size > max_size {
            return Err(MetadataError::TooLarge {
                size: total_size,
                max: max_size,
            });
        }
        let n = total_size.div_ceil(METADATA_PIECE as u64);
        let n = usize::try_from(n).map_err(|_| MetadataError::TooLarge {
            size: total_size,
            max: max_size,
        })?;
        Ok(MetadataAssembler {
            info_hash,
            total_size,
            pieces: vec![None; n],
            received: 0,
        })
    }

    /// The info-hash being fetched.
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// Size of the info dictionary in bytes.
    pub fn total_size(&self) -> u64 {
        self.total_size
    }

    /// Number of 16 KiB pieces.
    pub fn num_pieces(&self) -> u32 {
        self.pieces.len() as u32
    }

    /// Expected length of `piece` in bytes.
    fn piece_len(&self, piece: u32) -> usize {
        let start = piece as u64 * METADATA_PIECE as u64;
        (self.total_size - start).min(METADATA_PIECE as u64) as usize
    }

    /// The lowest piece not received yet; `None` when complete.
    pub fn next_wanted(&self) -> Option<u32> {
        self.missing().next()
    }

    /// Every piece not received yet, ascending (to pipeline requests).
    pub fn missing(&self) -> impl Iterator<Item = u32> + '_ {
        self.pieces
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_none())
            .map(|(i, _)| i as u32)
    }

    /// Stores `data` as `piece`. A piece received twice keeps the first copy.
    /// Errors: [`MetadataError::PieceOutOfRange`],
    /// [`MetadataError::WrongPieceSize`].
    pub fn add(&mut self, piece: u32, data: Bytes) -> Result<(), MetadataError> {
        let Some(slot) = self.pieces.get(piece as usize) else {
            return Err(MetadataError::PieceOutOfRange {
                piece,
                num_pieces: self.num_pieces(),
            });
        };
        let expected = self.piece_len(piece);
        if data.len() != expected {
            return Err(MetadataError::WrongPieceSize {
                piece,
                expected,
                got: data.len(),
            });
        }
        if slot.is_none() {
            self.pieces[piece as usize] = Some(data);
            self.received += 1;
        }
        Ok(())
    }

    /// [`MetadataAssembler::add`] for a data message, first checking its
    /// `total_size`. Errors: [`MetadataError::TotalSizeMismatch`] and those
    /// of `add`.
    pub fn add_data(
        &mut self,
        piece: u32,
        total_size: u64,
        data: Bytes,
    ) -> Result<(), MetadataError> {
        if total_size != self.total_size {
            return Err(MetadataError::TotalSizeMismatch {
                expected: self.total_size,
                got: total_size,
            });
        }
        self.add(piece, data)
    }

    /// True when every piece has arrived.
    pub fn is_complete(&self) -> bool {
        self.received as usize == self.pieces.len()
    }

    /// Forgets every received piece.
    pub fn reset(&mut self) {
        self.pieces.iter_mut().for_each(|p| *p = None);
        self.received = 0;
    }

    /// The info dictionary, once its SHA-1, or its SHA-256 truncated to 20
    /// bytes (BEP 52), equals the info-hash (the assembler is left empty). Errors: [`MetadataError::Incomplete`];
    /// [`MetadataError::HashMismatch`], after which the assembler is reset so
    /// the pieces can be fetched again from another peer.
    pub fn finish(&mut self) -> Result<Vec<u8>, MetadataError> {
        if !self.is_complete() {
            return Err(MetadataError::Incomplete);
        }
        let mut out = Vec::with_capacity(self.total_size as usize);
        for p in self.pieces.iter().flatten() {
            out.extend_from_slice(p);
        }
        self.reset();
        let digest: [u8; 20] = sha1::Sha1::digest(&out).into();
        if digest != self.info_hash.0
            && crate::hash::InfoHashV2::of_info(&out).truncated() != self.info_hash
        {
            return Err(MetadataError::HashMismatch);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_of(len: usize) -> Vec<u8> {
        // a valid dictionary of exactly `len` bytes: d4:name<n>:aaa...e
        let n = (0..len)
            .rev()
            .find(|n| 7 + n.to_string().len() + 1 + n + 1 == len)
            .unwrap();
        let mut v = b"d4:name".to_vec();
        v.extend_from_slice(n.to_string().as_bytes());
        v.push(b':');
        v.extend((0..n).map(|i| b'a' + (i % 26) as u8));
        v.push(b'e');
        assert_eq!(v.len(), len);
        v
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            MetadataMsg::Request { piece: 0 },
            MetadataMsg::Reject { piece: 7 },
            MetadataMsg::Data {
                piece: 2,
                total_size: 40_000,
                data: Bytes::from(vec![5u8; 40_000 - 2 * METADATA_PIECE]),
            },
            MetadataMsg::Unknown { msg_type: 3 },
        ] {
            let bytes = Bytes::from(m.encode());
            assert_eq!(MetadataMsg::decode(&bytes).unwrap(), m);
        }
        assert_eq!(
            MetadataMsg::Request { piece: 1 }.encode(),
            b"d8:msg_typei0e5:piecei1ee".to_vec()
        );
        let d = MetadataMsg::Data {
            piece: 0,
            total_size: 3,
            data: Bytes::from_static(b"abc"),
        };
        assert_eq!(
            d.encode(),
            b"d8:msg_typei1e5:piecei0e10:total_sizei3eeabc".to_vec()
        );
    }

    #[test]
    fn decode_accepts_unsorted_keys_and_slices_data() {
        let payload = Bytes::from_static(b"d10:total_sizei3e5:piecei0e8:msg_typei1eeabc");
        match MetadataMsg::decode(&payload).unwrap() {
            MetadataMsg::Data {
                piece: 0,
                total_size: 3,
                data,
            } => {
                assert_eq!(&data[..], b"abc");
                assert_eq!(data.as_ptr(), payload[payload.len() - 3..].as_ptr());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decode_errors() {
        let bad: &[&[u8]] = &[
            b"",
            b"garbage",
            b"d8:msg_typei1e",
            b"li0ee",
            b"d5:piecei0ee",
            b"d8:msg_type1:0e",
            b"d8:msg_typei0ee",
            b"d8:msg_typei0e5:piecei-1ee",
            b"d8:msg_typei2e5:piecei4294967296ee",
            b"d8:msg_typei1e5:piecei0ee",
            b"d8:msg_typei1e5:piecei0e10:total_sizei0ee",
            b"d8:msg_typei1e5:piecei0e10:total_sizei-3ee",
        ];
        for b in bad {
            assert!(
                MetadataMsg::decode(&Bytes::from_static(b)).is_err(),
                "{}",
                bencode::Printable(b)
            );
        }
        let mut big = b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee".to_vec();
        big.extend(vec![0u8; METADATA_PIECE + 1]);
        assert!(matches!(
            MetadataMsg::decode(&Bytes::from(big)),
            Err(WireError::Malformed {
                message: "ut_metadata",
                ..
            })
        ));
    }

    #[test]
    fn assemble_and_serve() {
        let info = info_of(2 * METADATA_PIECE + 1000);
        let ih = InfoHash::of_info(&info);
        let mut a = MetadataAssembler::new(ih, info.len() as u64).unwrap();
        assert_eq!(a.num_pieces(), 3);
        assert_eq!(a.missing().collect::<Vec<_>>(), [0, 1, 2]);
        for p in [2, 0, 1] {
            assert!(!a.is_complete());
            let Some(MetadataMsg::Data {
                piece,
                total_size,
                data,
            }) = data_response(&info, p)
            else {
                panic!()
            };
            // through the wire form and back
            let msg = MetadataMsg::Data {
                piece,
                total_size,
                data,
            };
            let MetadataMsg::Data {
                piece,
                total_size,
                data,
            } = MetadataMsg::decode(&Bytes::from(msg.encode())).unwrap()
            else {
                panic!()
            };
            a.add_data(piece, total_size, data.clone()).unwrap();
            a.add(piece, data).unwrap(); // duplicate is harmless
        }
        assert_eq!(a.next_wanted(), None);
        assert!(a.is_complete());
        assert_eq!(a.finish().unwrap(), info);
        assert_eq!(data_response(&info, 3), None);
        assert_eq!(data_response(&info, u32::MAX), None);
    }

    #[test]
    fn size_checks() {
        let ih = InfoHash([0; 20]);
        assert_eq!(
            MetadataAssembler::new(ih, 0).unwrap_err(),
            MetadataError::Empty
        );
        assert!(matches!(
            MetadataAssembler::new(ih, MAX_METADATA_SIZE + 1),
            Err(MetadataError::TooLarge { .. })
        ));
        assert!(MetadataAssembler::new(ih, MAX_METADATA_SIZE).is_ok());
        assert!(matches!(
            MetadataAssembler::with_limit(ih, 1001, 1000),
            Err(MetadataError::TooLarge {
                size: 1001,
                max: 1000
            })
        ));

        let mut a = MetadataAssembler::new(ih, METADATA_PIECE as u64 + 10).unwrap();
        assert_eq!(
            a.add(0, Bytes::from(vec![0; 10])),
            Err(MetadataError::WrongPieceSize {
                piece: 0,
                expected: METADATA_PIECE,
                got: 10
            })
        );
        assert_eq!(
            a.add(1, Bytes::from(vec![0; METADATA_PIECE])),
            Err(MetadataError::WrongPieceSize {
                piece: 1,
                expected: 10,
                got: METADATA_PIECE
            })
        );
        assert!(matches!(
            a.add(2, Bytes::from(vec![0; 10])),
            Err(MetadataError::PieceOutOfRange {
                piece: 2,
                num_pieces: 2
            })
        ));
        assert_eq!(
            a.add_data(1, 99, Bytes::from(vec![0; 10])),
            Err(MetadataError::TotalSizeMismatch {
                expected: METADATA_PIECE as u64 + 10,
                got: 99
            })
        );
        assert_eq!(a.finish(), Err(MetadataError::Incomplete));
    }

    #[test]
    fn truncated_v2_info_hash_accepted() {
        // BEP 52: a v2 torrent's metadata is asked by its SHA-256 truncated
        let info = info_of(700);
        let ih = crate::hash::InfoHashV2::of_info(&info).truncated();
        let mut a = MetadataAssembler::new(ih, 700).unwrap();
        a.add(0, Bytes::from(info.clone())).unwrap();
        assert_eq!(a.finish().unwrap(), info);
        // the last 12 bytes of the SHA-256 are not enough to pass: another
        // dictionary with the same length fails
        let mut forged = info.clone();
        forged[10] ^= 1;
        a.add(0, Bytes::from(forged)).unwrap();
        assert_eq!(a.finish(), Err(MetadataError::HashMismatch));
    }

    #[test]
    fn hash_mismatch_resets() {
        let info = info_of(500);
        let mut a = MetadataAssembler::new(InfoHash::of_info(&info), 500).unwrap();
        let mut forged = info.clone();
        forged[10] ^= 1;
        a.add(0, Bytes::from(forged)).unwrap();
        assert_eq!(a.finish(), Err(MetadataError::HashMismatch));
        assert!(!a.is_complete());
        assert_eq!(a.next_wanted(), Some(0));
        a.add(0, Bytes::from(info.clone())).unwrap();
        assert_eq!(a.finish().unwrap(), info);
    }
}
