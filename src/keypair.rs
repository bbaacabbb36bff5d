//! Ed25519 key pairs for BEP 44 mutable items (and BEP 46 URLs).
//!
//! A key pair is made from a 32-byte seed (the RFC 8032 private key); the same
//! seed gives the same public key as libtorrent's `ed25519_create_keypair`
//! and Python's `Ed25519PrivateKey.from_private_bytes`.
//!
//! Key file format (`btfs-mount keygen`): the 32-byte seed as 64 lowercase
//! hex characters and a newline, mode 0600. A key file that group or others
//! may access is refused, like ssh does.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};

/// Why a key file could not be read or written. Each message names the file
/// and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be opened, read or created.
    #[error("key file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `to_file` never overwrites a file.
    #[error("key file {0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// Group or others have permissions on the file.
    #[error(
        "key file {path} is accessible by group or others (mode {mode:04o}); \
         it holds a secret key: run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    /// The content is not 64 hex characters (and an optional newline).
    #[error("key file {0} must hold the 32-byte secret seed as 64 hex characters")]
    Malformed(PathBuf),
}

/// Longest key file we read, in bytes (64 hex, CRLF, some spaces).
const MAX_KEY_FILE: u64 = 256;

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

    /// Reads a key file (64 hex characters of the seed, optional trailing
    /// whitespace). Errors: [`KeyFileError::TooOpen`] when its mode gives
    /// group or others any access; [`KeyFileError::Malformed`];
    /// [`KeyFileError::Io`].
    pub fn from_file(path: &Path) -> Result<Keypair, KeyFileError> {
        use std::io::Read;
        let io = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let md = f.metadata().map_err(io)?;
        let mode = md.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = String::new();
        f.take(MAX_KEY_FILE + 1)
            .read_to_string(&mut text)
            .map_err(|_| KeyFileError::Malformed(path.to_path_buf()))?;
        let hexs = text.trim_end();
        let mut seed = [0u8; 32];
        if text.len() as u64 > MAX_KEY_FILE
            || hexs.len() != 64
            || hex::decode_to_slice(hexs, &mut seed).is_err()
        {
            return Err(KeyFileError::Malformed(path.to_path_buf()));
        }
        Ok(Keypair::from_seed(&seed))
    }

    /// Writes the seed to a new file `path` with mode 0600 (64 hex
    /// characters and a newline). Never overwrites: errors with
    /// [`KeyFileError::Exists`] when `path` exists, else [`KeyFileError::Io`].
    pub fn to_file(&self, path: &Path) -> Result<(), KeyFileError> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => KeyFileError::Exists(path.to_path_buf()),
                _ => KeyFileError::Io {
                    path: path.to_path_buf(),
                    source: e,
                },
            })?;
        let io = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        // The umask cannot widen 0600, but make sure anyway.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        f.write_all(format!("{}\n", hex::encode(self.seed())).as_bytes())
            .map_err(io)?;
        f.sync_all().map_err(io)
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
    fn key_files_round_trip_are_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let kp = Keypair::generate();
        kp.to_file(&path).unwrap();
        let md = std::fs::metadata(&path).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        assert_eq!(
            Keypair::from_file(&path).unwrap().public_key(),
            kp.public_key()
        );
        // Never overwritten.
        let other = Keypair::generate();
        assert!(matches!(other.to_file(&path), Err(KeyFileError::Exists(_))));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        // Readable by others: refused, with the fix in the message.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keypair::from_file(&path).unwrap_err();
        assert!(
            matches!(e, KeyFileError::TooOpen { mode: 0o644, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
        // Malformed content.
        let bad = dir.path().join("bad");
        for content in ["abcd\n", &"zz".repeat(32), &"ab".repeat(40)] {
            let _ = std::fs::remove_file(&bad);
            std::fs::write(&bad, content).unwrap();
            std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
            assert!(matches!(
                Keypair::from_file(&bad),
                Err(KeyFileError::Malformed(_))
            ));
        }
        // Missing file.
        assert!(matches!(
            Keypair::from_file(&dir.path().join("none")),
            Err(KeyFileError::Io { .. })
        ));
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
