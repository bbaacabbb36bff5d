//! The primitives of Message Stream Encryption: the 768-bit Diffie-Hellman
//! exchange, the SHA-1 derived hashes and keys, and RC4 with the first 1024
//! keystream bytes dropped. The handshake ([`super::initiate`],
//! [`super::accept`]) is built from these; they are public so that tests,
//! fuzz targets and known-answer checks can drive each step on their own.
//!
//! Spec: Vuze wiki, "Message Stream Encryption" (P, G, the `req1`/`req2`/
//! `req3`/`keyA`/`keyB` hashes, "RC4-drop1024").

use std::sync::OnceLock;

use num_bigint::BigUint;
use rc4::{KeyInit, Rc4, StreamCipher};
use sha1::{Digest, Sha1};

use super::MseError;

/// The Diffie-Hellman prime P, 768 bits, big-endian (the spec's
/// `0xFFFFFFFFFFFFFFFFC90FDAA2...0000000000090563`).
pub const P: [u8; DH_LEN] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC9, 0x0F, 0xDA, 0xA2, 0x21, 0x68, 0xC2, 0x34,
    0xC4, 0xC6, 0x62, 0x8B, 0x80, 0xDC, 0x1C, 0xD1, 0x29, 0x02, 0x4E, 0x08, 0x8A, 0x67, 0xCC, 0x74,
    0x02, 0x0B, 0xBE, 0xA6, 0x3B, 0x13, 0x9B, 0x22, 0x51, 0x4A, 0x08, 0x79, 0x8E, 0x34, 0x04, 0xDD,
    0xEF, 0x95, 0x19, 0xB3, 0xCD, 0x3A, 0x43, 0x1B, 0x30, 0x2B, 0x0A, 0x6D, 0xF2, 0x5F, 0x14, 0x37,
    0x4F, 0xE1, 0x35, 0x6D, 0x6D, 0x51, 0xC2, 0x45, 0xE4, 0x85, 0xB5, 0x76, 0x62, 0x5E, 0x7E, 0xC6,
    0xF4, 0x4C, 0x42, 0xE9, 0xA6, 0x3A, 0x36, 0x21, 0x00, 0x00, 0x00, 0x00, 0x00, 0x09, 0x05, 0x63,
];

/// The generator G.
pub const G: u32 = 2;

/// Length of a public key (Ya, Yb) and of the shared secret S on the wire:
/// 96 bytes, big-endian, left-padded with zeros.
pub const DH_LEN: usize = 96;

/// Length of the private exponents Xa, Xb: 160 bits (the spec's minimum,
/// and what libtorrent and Transmission use).
pub const SECRET_LEN: usize = 20;

/// RC4 keystream bytes discarded after keying ("RC4-drop1024").
pub const RC4_DROP: usize = 1024;

fn prime() -> &'static BigUint {
    static P_INT: OnceLock<BigUint> = OnceLock::new();
    P_INT.get_or_init(|| BigUint::from_bytes_be(&P))
}

/// `n` as 96 big-endian bytes. `n < P` always holds here, so it fits.
fn to_wire(n: &BigUint) -> [u8; DH_LEN] {
    let bytes = n.to_bytes_be();
    let mut out = [0u8; DH_LEN];
    let skip = DH_LEN.saturating_sub(bytes.len());
    let take = bytes.len().min(DH_LEN);
    out[skip..].copy_from_slice(&bytes[bytes.len() - take..]);
    out
}

/// One side's ephemeral Diffie-Hellman key: the private exponent X (160
/// random bits) and the public key `Y = G^X mod P`. Made fresh for every
/// connection and dropped after the shared secret is computed.
pub struct DhKey {
    /// X, the private exponent.
    secret: BigUint,
    /// Y = G^X mod P, as sent on the wire.
    public: [u8; DH_LEN],
}

impl DhKey {
    /// A fresh key from the operating system's random source. Errors:
    /// [`MseError::Random`] when that source fails.
    pub fn generate() -> Result<DhKey, MseError> {
        loop {
            let mut x = [0u8; SECRET_LEN];
            getrandom::fill(&mut x).map_err(|e| MseError::Random(e.to_string()))?;
            // X = 0 would give Y = 1, which every peer refuses
            if x != [0; SECRET_LEN] {
                return Ok(DhKey::from_secret(x));
            }
        }
    }

    /// The key with private exponent `x` (160 bits, big-endian). For
    /// known-answer tests and deterministic fuzzing; real connections use
    /// [`DhKey::generate`]. `x = 0` gives the public key 1, which peers refuse.
    pub fn from_secret(x: [u8; SECRET_LEN]) -> DhKey {
        let secret = BigUint::from_bytes_be(&x);
        let public = to_wire(&BigUint::from(G).modpow(&secret, prime()));
        DhKey { secret, public }
    }

    /// Our public key Y, 96 bytes big-endian, as sent on the wire.
    pub fn public_key(&self) -> &[u8; DH_LEN] {
        &self.public
    }

    /// The shared secret `S = Y_peer^X mod P`, 96 bytes big-endian.
    ///
    /// Errors: [`MseError::BadPublicKey`] when the peer's key is outside
    /// `[2, P-2]`: 0, 1 and P-1 (and anything not reduced mod P) would pin
    /// S to a value an attacker knows (libtorrent refuses the same keys).
    pub fn shared_secret(&self, theirs: &[u8; DH_LEN]) -> Result<[u8; DH_LEN], MseError> {
        let y = BigUint::from_bytes_be(theirs);
        let p_minus_2 = prime() - 2u32;
        if y < BigUint::from(2u32) || y > p_minus_2 {
            return Err(MseError::BadPublicKey);
        }
        Ok(to_wire(&y.modpow(&self.secret, prime())))
    }
}

impl std::fmt::Debug for DhKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never print the private exponent
        f.debug_struct("DhKey")
            .field("public", &hex::encode(&self.public[..8]))
            .finish_non_exhaustive()
    }
}

fn sha1_of(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// `HASH('req1', S)`: the marker the initiator sends after PadA, which the
/// responder scans for to find where PadA ends.
pub fn sync_hash(secret: &[u8; DH_LEN]) -> [u8; 20] {
    sha1_of(&[b"req1", secret])
}

/// `HASH('req2', SKEY)`, SKEY being the torrent's 20-byte info-hash. What
/// the responder recovers from the obfuscated hash; precompute it once per
/// served torrent (see [`super::SkeyTable`]).
pub fn skey_hash(skey: &[u8; 20]) -> [u8; 20] {
    sha1_of(&[b"req2", skey])
}

/// `HASH('req3', S)`: the mask XORed onto [`skey_hash`] so the info-hash
/// is not visible on the wire.
pub fn skey_mask(secret: &[u8; DH_LEN]) -> [u8; 20] {
    sha1_of(&[b"req3", secret])
}

/// The two RC4 keys: `(HASH('keyA', S, SKEY), HASH('keyB', S, SKEY))`.
/// The initiator (A) encrypts with keyA and decrypts with keyB; the
/// responder the other way round.
pub fn stream_keys(secret: &[u8; DH_LEN], skey: &[u8; 20]) -> ([u8; 20], [u8; 20]) {
    (
        sha1_of(&[b"keyA", secret, skey]),
        sha1_of(&[b"keyB", secret, skey]),
    )
}

/// XOR of two 20-byte strings.
pub fn xor20(a: &[u8; 20], b: &[u8; 20]) -> [u8; 20] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// RC4 keyed with a 20-byte MSE key, the first 1024 keystream bytes already
/// discarded. One per direction; encrypting and decrypting are the same
/// operation (XOR with the keystream), and the state advances by every byte
/// processed, so each byte of a direction must pass through exactly once,
/// in order.
pub struct Rc4Drop(Rc4);

impl Rc4Drop {
    /// RC4 keyed with `key`, 1024 keystream bytes dropped.
    pub fn new(key: &[u8; 20]) -> Rc4Drop {
        Rc4Drop::from_slice(key).expect("a 20-byte RC4 key is in 1..=256 bytes")
    }

    /// RC4 keyed with any key of 1 to 256 bytes (the RFC 6229 vectors use
    /// 5, 16 and 32), 1024 bytes dropped; `None` for other lengths.
    pub(crate) fn from_slice(key: &[u8]) -> Option<Rc4Drop> {
        let mut c = Rc4::new_from_slice(key).ok()?;
        let mut drop = [0u8; RC4_DROP];
        c.apply_keystream(&mut drop);
        Some(Rc4Drop(c))
    }

    /// XORs `buf` in place with the next `buf.len()` keystream bytes.
    #[inline]
    pub fn apply(&mut self, buf: &mut [u8]) {
        self.0.apply_keystream(buf);
    }

    /// Writes `input` XOR keystream to `output` (same length).
    #[inline]
    pub fn apply_to(&mut self, input: &[u8], output: &mut [u8]) {
        debug_assert_eq!(input.len(), output.len());
        self.0.apply_keystream_b2b(input, output);
    }
}

impl std::fmt::Debug for Rc4Drop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rc4Drop")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prime_is_the_spec_prime() {
        let hex = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
        assert_eq!(hex::encode_upper(P), hex);
        assert_eq!(prime().bits(), 768);
    }

    /// RFC 6229 keystream at offset 1024 (what RC4-drop1024 yields first)
    /// and at offset 4096.
    #[test]
    fn rc4_drop1024_matches_rfc6229() {
        let vectors = [
            (
                "0102030405",
                "30abbcc7c20b01609f23ee2d5f6bb7df",
                "ff25b58995996707e51fbdf08b34d875",
            ),
            (
                "0102030405060708090a0b0c0d0e0f10",
                "bdf0324e6083dcc6d3cedd3ca8c53c16",
                "a36a4c301ae8ac13610ccbc12256cacc",
            ),
            (
                "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
                "7fec5bfd9f9b89ce6548309092d7e958",
                "f3e4c0a2e02d1d01f7f0a74618af2b48",
            ),
        ];
        for (key, at1024, at4096) in vectors {
            let key = hex::decode(key).unwrap();
            // split the 16 bytes across two calls at every point: the state
            // must carry over between calls
            for split in 0..=16 {
                let mut c = Rc4Drop::from_slice(&key).unwrap();
                let mut buf = [0u8; 16];
                let (a, b) = buf.split_at_mut(split);
                c.apply(a);
                c.apply(b);
                assert_eq!(hex::encode(buf), at1024, "split {split}");
            }
            let mut c = Rc4Drop::from_slice(&key).unwrap();
            let mut skip = vec![0u8; 4096 - 1024];
            c.apply(&mut skip);
            let mut buf = [0u8; 16];
            let mut out = [0u8; 16];
            c.apply_to(&buf, &mut out);
            buf.copy_from_slice(&out);
            assert_eq!(hex::encode(buf), at4096);
        }
        assert!(Rc4Drop::from_slice(&[]).is_none());
    }

    #[test]
    fn degenerate_public_keys_are_refused() {
        let k = DhKey::from_secret([7; SECRET_LEN]);
        let small = |v: u8| {
            let mut a = [0u8; DH_LEN];
            a[DH_LEN - 1] = v;
            a
        };
        let minus = |n: u8| {
            let mut a = P;
            let mut borrow = n;
            for b in a.iter_mut().rev() {
                let (v, o) = b.overflowing_sub(borrow);
                *b = v;
                borrow = u8::from(o);
                if borrow == 0 {
                    break;
                }
            }
            a
        };
        for bad in [small(0), small(1), minus(1), P, [0xFF; DH_LEN]] {
            assert!(matches!(k.shared_secret(&bad), Err(MseError::BadPublicKey)));
        }
        assert!(k.shared_secret(&small(2)).is_ok());
        assert!(k.shared_secret(&minus(2)).is_ok());
    }

    #[test]
    fn both_sides_agree_on_the_secret() {
        for _ in 0..8 {
            let a = DhKey::generate().unwrap();
            let b = DhKey::generate().unwrap();
            let sa = a.shared_secret(b.public_key()).unwrap();
            let sb = b.shared_secret(a.public_key()).unwrap();
            assert_eq!(sa, sb);
            assert_ne!(sa, [0; DH_LEN]);
        }
    }

    /// Known answers computed independently of this module by
    /// `tests/data/mse_kat.py` (Python's `pow`, `hashlib.sha1` and a
    /// textbook RC4).
    #[test]
    fn key_derivation_known_answers() {
        // Xa = 0x01 * 20, Xb = 0x02 * 20, SKEY = 0xAA * 20
        let a = DhKey::from_secret([1; SECRET_LEN]);
        let b = DhKey::from_secret([2; SECRET_LEN]);
        assert_eq!(hex::encode(a.public_key()), KAT_YA);
        assert_eq!(hex::encode(b.public_key()), KAT_YB);
        let s = a.shared_secret(b.public_key()).unwrap();
        assert_eq!(hex::encode(s), KAT_S);
        let skey = [0xAA; 20];
        assert_eq!(hex::encode(sync_hash(&s)), KAT_REQ1);
        assert_eq!(
            hex::encode(xor20(&skey_hash(&skey), &skey_mask(&s))),
            KAT_REQ2_XOR_REQ3
        );
        let (ka, kb) = stream_keys(&s, &skey);
        assert_eq!(hex::encode(ka), KAT_KEY_A);
        assert_eq!(hex::encode(kb), KAT_KEY_B);
        // ENCRYPT(VC) as each side first sends it
        let mut vc = [0u8; 8];
        Rc4Drop::new(&ka).apply(&mut vc);
        assert_eq!(hex::encode(vc), KAT_VC_A);
        let mut vc = [0u8; 8];
        Rc4Drop::new(&kb).apply(&mut vc);
        assert_eq!(hex::encode(vc), KAT_VC_B);
    }

    // output of `python3 tests/data/mse_kat.py`
    const KAT_YA: &str = "d0e3956c8bb7401546dd5f47415fec488545a032debe8a9705aff32021c9ace338096db3b46ab61bd5dced30a7f7963ab0757540bd866106adbd811151f6fdbf4209b3bde658e0079aac8cd96313a29c2d63ff789e0ac4e0d60f9d1b0b387720";
    const KAT_YB: &str = "2cbb4686366f1a543bfe0a9b60b4c3d71f3e5297cb6da16bc1badd0ecbd306b49b7481972da55fe160ae98f565ecd9760619cf96f0a70ab361b66f15394b087f5890d91d57a11b4673b932ee5ff24fa494b6645494d4eb85fc8548933d189bf2";
    const KAT_S: &str = "478531421d985de779c1fd27f0fe13f8a8e15b9e171f3d1bb7d2830b0f8c94241a5fe6560179bae85b6143d1b35e936ec89d2493892249207efd26e998332ed835dd7a90481517d4c9e58175d644e232317e1e970e55b48ec7cbe8fab193d842";
    const KAT_REQ1: &str = "0a6d483c3bc61484a210fa0f37d99062fd569483";
    const KAT_REQ2_XOR_REQ3: &str = "6c6816e45dd786ccc916483dbf61bf2eac1d7b9b";
    const KAT_KEY_A: &str = "d017ab94cbc5d92234869faada8c9f02cb960bdc";
    const KAT_KEY_B: &str = "a108118d7b81c047453e4d76f06591817deb09af";
    const KAT_VC_A: &str = "29f82066c2916234";
    const KAT_VC_B: &str = "4e1a0ab34843e109";
}
