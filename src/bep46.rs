//! The BEP 46 value codec: the mutable item value `{ih: <20-byte info-hash>}` that a
//! `magnet:?xs=urn:btpk:...` URL resolves to.

use crate::InfoHash;
use crate::bencode::{self, Limits, Owned};

/// The bencoded BEP 46 value for `info_hash`: `d2:ih20:<info-hash>e`.
pub fn value_for(info_hash: InfoHash) -> Vec<u8> {
    Owned::dict()
        .insert("ih", Owned::Bytes(info_hash.0.to_vec()))
        .encode()
}

/// Why a mutable item's value is not a BEP 46 value. Each message is one
/// line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("the item's value is not valid bencode ({0})")]
    NotBencode(String),
    #[error("the item's value is not a dictionary (BEP 46 wants {{ih: <info-hash>}})")]
    NotADict,
    #[error("the item's value has no `ih` key (BEP 46)")]
    NoInfoHash,
    #[error("the item's `ih` is not a byte string")]
    NotBytes,
    #[error("the item's `ih` is 40 bytes but not hex")]
    NotHex,
    /// `ih` of a length other than 20 (or 40 hex) bytes.
    #[error("the item's `ih` is {0} bytes; BEP 46 wants 20")]
    WrongLength(usize),
}

/// The info-hash in a BEP 46 value. `ih` must be 20 raw bytes; 40 hex
/// characters are also accepted (some publishers write that).
///
/// Errors: [`ValueError`]: not bencode, not a dictionary, no `ih`, `ih` of
/// the wrong type or size.
pub fn info_hash_of_value(raw: &[u8]) -> Result<InfoHash, ValueError> {
    let v = bencode::decode(raw, Limits::default())
        .map_err(|e| ValueError::NotBencode(e.to_string()))?;
    if v.as_dict().is_none() {
        return Err(ValueError::NotADict);
    }
    let ih = v
        .get(b"ih")
        .ok_or(ValueError::NoInfoHash)?
        .as_bytes()
        .ok_or(ValueError::NotBytes)?;
    match ih.len() {
        20 => Ok(InfoHash(ih.try_into().expect("20 bytes"))),
        40 => std::str::from_utf8(ih)
            .ok()
            .and_then(InfoHash::from_hex)
            .ok_or(ValueError::NotHex),
        n => Err(ValueError::WrongLength(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_errors_are_specific() {
        let ih = InfoHash([7; 20]);
        assert_eq!(info_hash_of_value(&value_for(ih)), Ok(ih));
        let hex = format!("d2:ih40:{}e", ih.to_hex());
        assert_eq!(info_hash_of_value(hex.as_bytes()), Ok(ih));
        let err = |raw: &[u8]| info_hash_of_value(raw).unwrap_err().to_string();
        assert!(err(b"i1e").contains("dictionary"));
        assert!(err(b"de").contains("no `ih`"));
        assert!(err(b"d2:ih3:abce").contains("3 bytes"));
        assert!(err(b"d2:ih").contains("bencode"));
        assert_eq!(
            info_hash_of_value(b"d2:ih40:zz23456789abcdef0123456789abcdef01234567e"),
            Err(ValueError::NotHex)
        );
    }
}
