//! Ed25519 key pairs for BEP 44 mutable items (and BEP 46 URLs).
//!
//! A key pair is made from a 32-byte seed (the RFC 8032 private key); the same
//! seed gives the same public key as libtorrent's `ed25519_create_keypair`
//! and Python's `Ed25519PrivateKey.from_private_bytes`.

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

/// An ed25519 key pair (BEP 44, section "mutable items").
#[derive(Clone)]
pub struct Keypair {
    signing: SigningKey,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the seed.
        write!(f, "Keypair(public {})", hex::encode(self.public_key()))
    }
}

impl Keypair {
    /// A new key pair from 32 bytes of the OS random source.
    pub fn generate() -> Keypair {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("OS random source");
        Keypair::from_seed(&seed)
    }

    /// The key pair derived from a 32-byte seed (deterministic).
    pub fn from_seed(seed: &[u8; 32]) -> Keypair {
        Keypair {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte seed this key pair was made from (keep it secret).
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The 32-byte public key (BEP 44 `k`).
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The 64-byte ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }
}

/// True when `signature` is a valid ed25519 signature of `message` by
/// `public_key`. A malformed public key is simply invalid (false).
pub fn verify(public_key: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let sig = ed25519_dalek::Signature::from_bytes(signature);
    vk.verify(message, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let kp = Keypair::from_seed(&[7u8; 32]);
        let kp2 = Keypair::from_seed(&kp.seed());
        assert_eq!(kp.public_key(), kp2.public_key());
        let sig = kp.sign(b"hello");
        assert!(verify(&kp.public_key(), b"hello", &sig));
        assert!(!verify(&kp.public_key(), b"hellp", &sig));
        assert_ne!(Keypair::generate().public_key(), kp.public_key());
    }

    #[test]
    fn rfc8032_test_1() {
        // RFC 8032 section 7.1, TEST 1: seed -> public key.
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        assert_eq!(
            hex::encode(Keypair::from_seed(&seed).public_key()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }
}
