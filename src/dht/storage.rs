//! What our node stores for others: announced peers (BEP 5 `announce_peer`),
//! BEP 44 items, and the write tokens that guard both. Everything is bounded
//! in count and expires.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

use super::bep44::{immutable_target, mutable_target, signed_buffer};
use super::krpc::{Id, PutArgs};

/// How long a token secret is current; tokens from the previous secret are
/// still accepted (BEP 5: "tokens up to ten minutes old are accepted").
pub const TOKEN_ROTATION: Duration = Duration::from_secs(5 * 60);
/// How long an announced peer is kept.
pub const PEER_TTL: Duration = Duration::from_secs(30 * 60);
/// Info-hashes we keep peers for, at most.
pub const MAX_TORRENTS: usize = 2000;
/// Peers kept per info-hash, at most.
pub const MAX_PEERS_PER_TORRENT: usize = 200;
/// Peers returned in one `get_peers` reply (fits a datagram).
pub const MAX_VALUES: usize = 50;
/// How long a BEP 44 item is kept without a new put (BEP 44: 2 hours).
pub const ITEM_TTL: Duration = Duration::from_secs(2 * 60 * 60);
/// BEP 44 items kept, at most.
pub const MAX_ITEMS: usize = 1000;
/// BEP 44: largest `v` (bytes of its bencoding).
pub const MAX_V_LEN: usize = 1000;
/// BEP 44: largest salt (bytes).
pub const MAX_SALT_LEN: usize = 64;

/// Write tokens (BEP 5): `SHA-1(secret ++ requester IP)`, first 8 bytes,
/// with a secret that rotates every [`TOKEN_ROTATION`].
#[derive(Debug)]
pub struct Tokens {
    current: [u8; 16],
    previous: [u8; 16],
    rotated: Instant,
}

fn secret() -> [u8; 16] {
    let mut s = [0u8; 16];
    getrandom::fill(&mut s).expect("OS random source");
    s
}

impl Default for Tokens {
    fn default() -> Self {
        Tokens {
            current: secret(),
            previous: secret(),
            rotated: Instant::now(),
        }
    }
}

impl Tokens {
    fn make(secret: &[u8; 16], ip: &IpAddr) -> Vec<u8> {
        let mut h = Sha1::new();
        h.update(secret);
        match ip {
            IpAddr::V4(v4) => h.update(v4.octets()),
            IpAddr::V6(v6) => h.update(v6.octets()),
        }
        h.finalize()[..8].to_vec()
    }

    /// The token to hand to `ip` now.
    pub fn issue(&self, ip: &IpAddr) -> Vec<u8> {
        Self::make(&self.current, ip)
    }

    /// True when `token` was issued to `ip` by the current or previous secret.
    pub fn check(&self, token: &[u8], ip: &IpAddr) -> bool {
        token == Self::make(&self.current, ip).as_slice()
            || token == Self::make(&self.previous, ip).as_slice()
    }

    /// Rotates the secret if [`TOKEN_ROTATION`] has passed since the last
    /// rotation.
    pub fn maybe_rotate(&mut self, now: Instant) {
        if now.duration_since(self.rotated) >= TOKEN_ROTATION {
            self.rotate(now);
        }
    }

    /// Rotates now: current becomes previous.
    pub fn rotate(&mut self, now: Instant) {
        self.previous = self.current;
        self.current = secret();
        self.rotated = now;
    }
}

#[derive(Debug, Default)]
struct Swarm {
    /// Peer address and when it last announced, newest last.
    peers: Vec<(SocketAddr, Instant)>,
    last_announce: Option<Instant>,
}

/// Peers announced to us, per info-hash.
#[derive(Debug, Default)]
pub struct PeerStore {
    swarms: HashMap<Id, Swarm>,
}

impl PeerStore {
    /// Adds or refreshes `peer` for `info_hash`. When full, the least
    /// recently announced swarm or peer is forgotten.
    pub fn announce(&mut self, info_hash: Id, peer: SocketAddr, now: Instant) {
        if !self.swarms.contains_key(&info_hash) && self.swarms.len() >= MAX_TORRENTS {
            if let Some(oldest) = self
                .swarms
                .iter()
                .min_by_key(|(_, s)| s.last_announce)
                .map(|(k, _)| *k)
            {
                self.swarms.remove(&oldest);
            }
        }
        let s = self.swarms.entry(info_hash).or_default();
        s.peers.retain(|(a, _)| *a != peer);
        if s.peers.len() >= MAX_PEERS_PER_TORRENT {
            s.peers.remove(0);
        }
        s.peers.push((peer, now));
        s.last_announce = Some(now);
    }

    /// Up to `max` live peers for `info_hash`, newest first.
    pub fn get(&self, info_hash: &Id, max: usize, now: Instant) -> Vec<SocketAddr> {
        self.swarms
            .get(info_hash)
            .map(|s| {
                s.peers
                    .iter()
                    .rev()
                    .filter(|(_, t)| now.duration_since(*t) < PEER_TTL)
                    .take(max)
                    .map(|(a, _)| *a)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Drops expired peers and empty swarms.
    pub fn expire(&mut self, now: Instant) {
        self.swarms.retain(|_, s| {
            s.peers.retain(|(_, t)| now.duration_since(*t) < PEER_TTL);
            !s.peers.is_empty()
        });
    }

    /// Peers stored, all swarms together.
    pub fn len(&self) -> usize {
        self.swarms.values().map(|s| s.peers.len()).sum()
    }

    /// True when no peer is stored.
    pub fn is_empty(&self) -> bool {
        self.swarms.is_empty()
    }
}

/// A stored BEP 44 item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredItem {
    /// Raw bencoded value.
    pub v: Vec<u8>,
    /// Mutable items: key, signature, sequence number, salt.
    pub mutable: Option<MutableFields>,
    stored: Instant,
}

/// The signed fields of a stored mutable item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutableFields {
    pub k: [u8; 32],
    pub sig: [u8; 64],
    pub seq: i64,
    pub salt: Vec<u8>,
}

/// A BEP 44 error: code and message (sent as a KRPC error).
pub type PutError = (i64, &'static str);

/// BEP 44 items stored for others, by target.
#[derive(Debug, Default)]
pub struct ItemStore {
    items: HashMap<Id, StoredItem>,
}

impl ItemStore {
    /// Applies a `put` (token already checked) under the rules of BEP 44:
    /// 205 `v` too big, 207 salt too big, 206 bad signature, 301 CAS
    /// mismatch, 302 sequence number lower than stored, 203 missing fields.
    /// Returns the target stored under.
    pub fn put(&mut self, p: &PutArgs, now: Instant) -> Result<Id, PutError> {
        if p.v.len() > MAX_V_LEN {
            return Err((205, "message (v field) too big"));
        }
        let (target, mutable) = match p.k {
            None => (immutable_target(&p.v), None),
            Some(k) => {
                if p.salt.len() > MAX_SALT_LEN {
                    return Err((207, "salt (salt field) too big"));
                }
                let sig = p.sig.ok_or((206, "invalid signature"))?;
                let seq = p.seq.ok_or((203, "missing seq"))?;
                let buf = signed_buffer(&p.salt, seq, &p.v);
                if !crate::keypair::verify(&k, &buf, &sig) {
                    return Err((206, "invalid signature"));
                }
                let target = mutable_target(&k, &p.salt);
                if let Some(MutableFields { seq: cur, .. }) = self
                    .items
                    .get(&target)
                    .filter(|i| now.duration_since(i.stored) < ITEM_TTL)
                    .and_then(|i| i.mutable.as_ref())
                {
                    if p.cas.is_some_and(|c| c != *cur) {
                        return Err((301, "CAS mismatch"));
                    }
                    if seq < *cur {
                        return Err((302, "sequence number less than current"));
                    }
                }
                (
                    target,
                    Some(MutableFields {
                        k,
                        sig,
                        seq,
                        salt: p.salt.clone(),
                    }),
                )
            }
        };
        if !self.items.contains_key(&target) && self.items.len() >= MAX_ITEMS {
            self.expire(now);
            if self.items.len() >= MAX_ITEMS {
                if let Some(oldest) = self
                    .items
                    .iter()
                    .min_by_key(|(_, i)| i.stored)
                    .map(|(k, _)| *k)
                {
                    self.items.remove(&oldest);
                }
            }
        }
        self.items.insert(
            target,
            StoredItem {
                v: p.v.clone(),
                mutable,
                stored: now,
            },
        );
        Ok(target)
    }

    /// The live item stored under `target`.
    pub fn get(&self, target: &Id, now: Instant) -> Option<&StoredItem> {
        self.items
            .get(target)
            .filter(|i| now.duration_since(i.stored) < ITEM_TTL)
    }

    /// Drops items older than [`ITEM_TTL`].
    pub fn expire(&mut self, now: Instant) {
        self.items
            .retain(|_, i| now.duration_since(i.stored) < ITEM_TTL);
    }

    /// Items stored.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::bep44::MutableItem;
    use crate::keypair::Keypair;

    #[test]
    fn tokens_rotate() {
        let mut t = Tokens::default();
        let ip: IpAddr = "1.2.3.4".parse().unwrap();
        let other: IpAddr = "1.2.3.5".parse().unwrap();
        let tok = t.issue(&ip);
        assert_eq!(tok.len(), 8);
        assert!(t.check(&tok, &ip));
        assert!(!t.check(&tok, &other));
        let now = Instant::now();
        t.maybe_rotate(now);
        assert!(t.check(&tok, &ip), "no rotation yet");
        t.rotate(now);
        assert!(t.check(&tok, &ip), "previous secret still accepted");
        assert_ne!(t.issue(&ip), tok);
        t.rotate(now);
        assert!(!t.check(&tok, &ip), "two rotations later it is refused");
    }

    #[test]
    fn peers_are_bounded_and_expire() {
        let mut s = PeerStore::default();
        let now = Instant::now();
        for p in 0..(MAX_PEERS_PER_TORRENT as u16 + 10) {
            s.announce([1; 20], SocketAddr::from(([10, 0, 0, 1], p + 1)), now);
        }
        assert_eq!(s.len(), MAX_PEERS_PER_TORRENT);
        assert_eq!(s.get(&[1; 20], MAX_VALUES, now).len(), MAX_VALUES);
        assert!(s.get(&[1; 20], 5, now + PEER_TTL).is_empty());
        s.expire(now + PEER_TTL);
        assert!(s.is_empty());
    }

    fn put_of(item: &MutableItem, cas: Option<i64>) -> PutArgs {
        PutArgs {
            token: vec![],
            v: item.value.clone(),
            k: Some(item.public_key),
            sig: Some(item.signature),
            seq: Some(item.seq),
            salt: item.salt.clone(),
            cas,
        }
    }

    #[test]
    fn bep44_server_rules() {
        let kp = Keypair::from_seed(&[1; 32]);
        let mut st = ItemStore::default();
        let now = Instant::now();
        let i2 = MutableItem::sign(&kp, b"salt", 2, b"5:hello");
        let target = st.put(&put_of(&i2, None), now).unwrap();
        assert_eq!(target, mutable_target(&kp.public_key(), b"salt"));
        // 302: older sequence number.
        let i1 = MutableItem::sign(&kp, b"salt", 1, b"3:old");
        assert_eq!(
            st.put(&put_of(&i1, None), now).unwrap_err().0,
            302,
            "older seq refused"
        );
        // 301: CAS mismatch.
        let i3 = MutableItem::sign(&kp, b"salt", 3, b"3:new");
        assert_eq!(st.put(&put_of(&i3, Some(1)), now).unwrap_err().0, 301);
        assert!(st.put(&put_of(&i3, Some(2)), now).is_ok());
        assert_eq!(
            st.get(&target, now).unwrap().mutable.as_ref().unwrap().seq,
            3
        );
        // 206: a signature that doesn't match the value.
        let mut forged = put_of(&MutableItem::sign(&kp, b"salt", 4, b"1:a"), None);
        forged.v = b"1:b".to_vec();
        assert_eq!(st.put(&forged, now).unwrap_err().0, 206);
        // 205: v too big.
        let big = format!("1000:{}", "x".repeat(1000)).into_bytes();
        let too_big = MutableItem::sign(&kp, b"", 1, &big);
        assert_eq!(st.put(&put_of(&too_big, None), now).unwrap_err().0, 205);
        // 207: salt too big.
        let long_salt = MutableItem::sign(&kp, &[b's'; 65], 1, b"1:a");
        assert_eq!(st.put(&put_of(&long_salt, None), now).unwrap_err().0, 207);
        // Immutable: stored under SHA-1 of v; expires after 2 hours.
        let imm = PutArgs {
            v: b"12:Hello World!".to_vec(),
            ..Default::default()
        };
        let t = st.put(&imm, now).unwrap();
        assert_eq!(hex::encode(t), "e5f96f6f38320f0f33959cb4d3d656452117aadb");
        assert!(st.get(&t, now + ITEM_TTL).is_none());
        st.expire(now + ITEM_TTL);
        assert!(st.is_empty());
    }

    #[test]
    fn item_store_is_bounded() {
        let mut st = ItemStore::default();
        let now = Instant::now();
        for i in 0..(MAX_ITEMS + 5) {
            let v = format!("i{i}e").into_bytes();
            st.put(
                &PutArgs {
                    v,
                    ..Default::default()
                },
                now,
            )
            .unwrap();
        }
        assert_eq!(st.len(), MAX_ITEMS);
    }
}
