//! BEP 46 values: the mutable item value `{ih: <20-byte info-hash>}` that a
//! `magnet:?xs=urn:btpk:...` URL resolves to.

use crate::InfoHash;
use crate::bencode::{self, Limits, Owned};

/// The bencoded BEP 46 value for `info_hash`: `d2:ih20:<info-hash>e`.
pub fn value_for(info_hash: InfoHash) -> Vec<u8> {
    Owned::dict()
        .insert("ih", Owned::Bytes(info_hash.0.to_vec()))
        .encode()
}

/// The info-hash in a BEP 46 value. `ih` must be 20 raw bytes; 40 hex
/// characters are also accepted (some publishers write that).
///
/// Errors (one line each): not bencode, not a dictionary, no `ih`, `ih` of
/// the wrong type or size.
pub fn info_hash_of_value(raw: &[u8]) -> Result<InfoHash, String> {
    let v = bencode::decode(raw, Limits::default())
        .map_err(|e| format!("the item's value is not valid bencode ({e})"))?;
    if v.as_dict().is_none() {
        return Err("the item's value is not a dictionary (BEP 46 wants {ih: <info-hash>})".into());
    }
    let ih = v
        .get(b"ih")
        .ok_or("the item's value has no `ih` key (BEP 46)")?
        .as_bytes()
        .ok_or("the item's `ih` is not a byte string")?;
    match ih.len() {
        20 => Ok(InfoHash(ih.try_into().expect("20 bytes"))),
        40 => std::str::from_utf8(ih)
            .ok()
            .and_then(InfoHash::from_hex)
            .ok_or_else(|| "the item's `ih` is 40 bytes but not hex".to_string()),
        n => Err(format!("the item's `ih` is {n} bytes; BEP 46 wants 20")),
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
        assert!(
            info_hash_of_value(b"i1e")
                .unwrap_err()
                .contains("dictionary")
        );
        assert!(info_hash_of_value(b"de").unwrap_err().contains("no `ih`"));
        assert!(
            info_hash_of_value(b"d2:ih3:abce")
                .unwrap_err()
                .contains("3 bytes")
        );
        assert!(
            info_hash_of_value(b"d2:ih")
                .unwrap_err()
                .contains("bencode")
        );
    }
}
