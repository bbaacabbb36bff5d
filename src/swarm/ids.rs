//! The info-hashes a swarm is known by (BEP 52, "infohash" and "magnet
//! links"), and the check of an info dictionary against them.
//!
//! A swarm is keyed by one 20-byte info-hash, [`Swarm::info_hash`]: the v1
//! info-hash (`xt=urn:btih`) when the link has one, otherwise the v2
//! info-hash (`xt=urn:btmh`) truncated to 20 bytes. That is the hash of
//! our handshakes, of BEP 9 and of our DHT lookups. A hybrid torrent is
//! known to peers by both its v1 and its truncated v2 info-hash; BEP 52:
//! peers on either "are one swarm". [`Swarm::other_info_hash`] gives the
//! second one (from a link naming both, or from the info dictionary once a
//! `btmh` link turned out hybrid), under which the client also accepts
//! incoming connections and looks peers up on the DHT.

use super::{MetadataError, Swarm};
use crate::hash::{InfoHash, InfoHashV2};
use crate::metainfo::{Info, MetaVersion};

/// The hashes a link named for a torrent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ids {
    /// The v1 info-hash (`xt=urn:btih`), when named.
    pub v1: Option<InfoHash>,
    /// The full v2 info-hash (`xt=urn:btmh`), when named.
    pub v2: Option<InfoHashV2>,
}

impl Ids {
    /// What a magnet link names.
    pub fn of_magnet(m: &crate::magnet::Magnet) -> Ids {
        Ids {
            v1: m.has_v1.then_some(m.info_hash),
            v2: m.info_hash_v2,
        }
    }

    /// Only a 20-byte info-hash (a bare hash, a BEP 46 `ih`, a torrent we
    /// made): the SHA-1 of the info dictionary, or its SHA-256 truncated.
    pub fn bare() -> Ids {
        Ids { v1: None, v2: None }
    }

    /// Checks the info dictionary `raw` against these hashes, or (neither
    /// named) against `primary`: SHA-1 equal to the v1 info-hash, full
    /// SHA-256 equal to the v2 info-hash, each one named. Returns whether
    /// the dictionary was matched by its SHA-256 (it must then be a v2 or
    /// hybrid dictionary). Errors: [`MetadataError::Mismatch`].
    pub fn check(&self, primary: InfoHash, raw: &[u8]) -> Result<bool, MetadataError> {
        let sha1 = || InfoHash::of_info(raw);
        let sha256 = || InfoHashV2::of_info(raw);
        match (self.v1, self.v2) {
            (None, None) if sha1() == primary => Ok(false),
            (None, None) if sha256().truncated() == primary => Ok(true),
            (None, None) => Err(MetadataError::Mismatch),
            (v1, v2) => {
                if v1.is_some_and(|h| h != sha1()) || v2.is_some_and(|h| h != sha256()) {
                    return Err(MetadataError::Mismatch);
                }
                Ok(v2.is_some())
            }
        }
    }
}

impl Swarm {
    /// The hashes the link named (see [`Ids`]).
    pub(crate) fn ids(&self) -> Ids {
        self.ids
    }

    /// The torrent's other 20-byte info-hash, when it is a hybrid (BEP 52):
    /// the truncated v2 info-hash of a swarm keyed by the v1 one, or the
    /// reverse. Known from a link naming both, or from the loaded info
    /// dictionary. `None` for v1-only and v2-only torrents, and while a
    /// one-hash link's metadata is unknown.
    pub(crate) fn other_info_hash(&self) -> Option<InfoHash> {
        if let Some(l) = self.loaded() {
            return other_of(&l.info, self.info_hash);
        }
        match (self.ids.v1, self.ids.v2) {
            (Some(_), Some(v2)) => Some(v2.truncated()).filter(|h| *h != self.info_hash),
            _ => None,
        }
    }

    /// The truncated v2 info-hash of a hybrid swarm (whichever hash keys
    /// it), known from a link naming both or from the loaded info
    /// dictionary; `None` for v1-only and v2-only torrents and while a
    /// one-hash link's metadata is unknown.
    pub(crate) fn hybrid_v2_hash(&self) -> Option<InfoHash> {
        let v2 = match self.loaded() {
            Some(l) => l.info.info_hash_v2?.truncated(),
            None => self.ids.v2?.truncated(),
        };
        self.other_info_hash().is_some().then_some(v2)
    }

    /// The truncated v2 info-hash to offer a peer dialled on
    /// [`Swarm::info_hash`] (BEP 52, "upgrade path": our handshake sets the
    /// v2 bit and the peer may answer on this hash, making the connection
    /// one over which hash messages go): `Some` only for a hybrid keyed by
    /// its v1 info-hash.
    pub(crate) fn v2_upgrade_hash(&self) -> Option<InfoHash> {
        self.hybrid_v2_hash().filter(|h| *h != self.info_hash)
    }

    /// Every 20-byte info-hash of this swarm: [`Swarm::info_hash`] first,
    /// then [`Swarm::other_info_hash`].
    pub(crate) fn info_hashes(&self) -> Vec<InfoHash> {
        let mut v = vec![self.info_hash];
        v.extend(self.other_info_hash());
        v
    }
}

/// The 20-byte info-hash of hybrid `info` that is not `primary`.
fn other_of(info: &Info, primary: InfoHash) -> Option<InfoHash> {
    if info.version != MetaVersion::Hybrid {
        return None;
    }
    let v1 = info.info_hash;
    let v2 = info.info_hash_v2?.truncated();
    [v1, v2].into_iter().find(|h| *h != primary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_by_each_hash() {
        let raw = b"d4:name1:ae".to_vec();
        let v1 = InfoHash::of_info(&raw);
        let v2 = InfoHashV2::of_info(&raw);
        let bare = Ids::bare();
        assert!(!bare.check(v1, &raw).unwrap());
        assert!(bare.check(v2.truncated(), &raw).unwrap());
        assert!(bare.check(InfoHash([1; 20]), &raw).is_err());
        let only2 = Ids {
            v1: None,
            v2: Some(v2),
        };
        assert!(only2.check(v2.truncated(), &raw).unwrap());
        // the truncated hash matches but the full one differs
        let mut wrong = v2;
        wrong.0[31] ^= 1;
        let other = Ids {
            v1: None,
            v2: Some(wrong),
        };
        assert!(other.check(v2.truncated(), &raw).is_err());
        let both = Ids {
            v1: Some(v1),
            v2: Some(v2),
        };
        assert!(both.check(v1, &raw).unwrap());
        let bad_v1 = Ids {
            v1: Some(InfoHash([2; 20])),
            v2: Some(v2),
        };
        assert!(bad_v1.check(InfoHash([2; 20]), &raw).is_err());
    }
}
