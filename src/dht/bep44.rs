//! BEP 44 ("Storing arbitrary data in the DHT"): targets, the signed buffer,
//! and signed mutable items.

use sha1::{Digest, Sha1};

use crate::keypair::{self, Keypair};

/// The target of a mutable item: SHA-1 of the public key followed by the salt
/// (BEP 44, section "mutable items").
pub fn mutable_target(public_key: &[u8; 32], salt: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(public_key);
    h.update(salt);
    h.finalize().into()
}

/// The target of an immutable item: SHA-1 of its raw bencoded value.
pub fn immutable_target(v: &[u8]) -> [u8; 20] {
    Sha1::digest(v).into()
}

/// The exact buffer a mutable item's signature covers (BEP 44, section
/// "signature verification"): `4:salt<len>:<salt>3:seqi<seq>e1:v<raw v>`,
/// with the salt part left out when the salt is empty.
pub fn signed_buffer(salt: &[u8], seq: i64, v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(salt.len() + v.len() + 40);
    if !salt.is_empty() {
        out.extend_from_slice(b"4:salt");
        crate::bencode::encode_bytes(salt, &mut out);
    }
    out.extend_from_slice(format!("3:seqi{seq}e1:v").as_bytes());
    out.extend_from_slice(v);
    out
}

/// A signed BEP 44 mutable item.
#[derive(Clone, PartialEq, Eq)]
pub struct MutableItem {
    /// ed25519 public key (`k`).
    pub public_key: [u8; 32],
    /// Salt (`salt`), 0..=64 bytes; empty means none.
    pub salt: Vec<u8>,
    /// Sequence number (`seq`); newer items have higher numbers.
    pub seq: i64,
    /// The raw bencoded value (`v`), of any bencode type, at most 1000 bytes.
    pub value: Vec<u8>,
    /// ed25519 signature (`sig`) over [`signed_buffer`].
    pub signature: [u8; 64],
}

impl std::fmt::Debug for MutableItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutableItem")
            .field("public_key", &hex::encode(self.public_key))
            .field("salt", &crate::bencode::Printable(&self.salt))
            .field("seq", &self.seq)
            .field("value", &super::format_value(&self.value))
            .finish()
    }
}

impl MutableItem {
    /// Signs `value` (raw bencode) with `keypair` under `salt` and `seq`.
    pub fn sign(keypair: &Keypair, salt: &[u8], seq: i64, value: &[u8]) -> MutableItem {
        let signature = keypair.sign(&signed_buffer(salt, seq, value));
        MutableItem {
            public_key: keypair.public_key(),
            salt: salt.to_vec(),
            seq,
            value: value.to_vec(),
            signature,
        }
    }

    /// True when the signature is valid for the key, salt, seq and value.
    pub fn verify(&self) -> bool {
        keypair::verify(
            &self.public_key,
            &signed_buffer(&self.salt, self.seq, &self.value),
            &self.signature,
        )
    }

    /// The DHT target: [`mutable_target`] of the key and salt.
    pub fn target(&self) -> [u8; 20] {
        mutable_target(&self.public_key, &self.salt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// BEP 44, section "test vectors".
    #[test]
    fn bep44_test_vectors() {
        let pk: [u8; 32] = h("77ff84905a91936367c01360803104f92432fcd904a43511876df5cdf3e7e548");
        let v = b"12:Hello World!";
        // Test 1: mutable, no salt.
        assert_eq!(signed_buffer(b"", 1, v), b"3:seqi1e1:v12:Hello World!");
        let item = MutableItem {
            public_key: pk,
            salt: vec![],
            seq: 1,
            value: v.to_vec(),
            signature: h(
                "305ac8aeb6c9c151fa120f120ea2cfb923564e11552d06a5d856091e5e853cff1260d3f39e4999684aa92eb73ffd136e6f4f3ecbfda0ce53a1608ecd7ae21f01",
            ),
        };
        assert!(item.verify());
        assert_eq!(
            hex::encode(item.target()),
            "4a533d47ec9c7d95b1ad75f576cffc641853b750"
        );
        // Test 2: mutable with salt "foobar".
        assert_eq!(
            signed_buffer(b"foobar", 1, v),
            b"4:salt6:foobar3:seqi1e1:v12:Hello World!"
        );
        let salted = MutableItem {
            salt: b"foobar".to_vec(),
            signature: h(
                "6834284b6b24c3204eb2fea824d82f88883a3d95e8b4a21b8c0ded553d17d17ddf9a8a7104b1258f30bed3787e6cb896fca78c58f8e03b5f18f14951a87d9a08",
            ),
            ..item.clone()
        };
        assert!(salted.verify());
        assert_eq!(
            hex::encode(salted.target()),
            "411eba73b6f087ca51a3795d9c8c938d365e32c1"
        );
        // Signatures do not transfer between salts or sequence numbers.
        assert!(
            !MutableItem {
                seq: 2,
                ..item.clone()
            }
            .verify()
        );
        assert!(
            !MutableItem {
                salt: vec![],
                ..salted.clone()
            }
            .verify()
        );
        // Test 3: immutable.
        assert_eq!(
            hex::encode(immutable_target(v)),
            "e5f96f6f38320f0f33959cb4d3d656452117aadb"
        );
    }

    #[test]
    fn sign_round_trip_with_dict_value() {
        let kp = Keypair::from_seed(&[3; 32]);
        let v = b"d2:ih20:\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13e";
        let item = MutableItem::sign(&kp, b"", 7, v);
        assert!(item.verify());
        assert_eq!(item.target(), mutable_target(&kp.public_key(), b""));
    }
}
