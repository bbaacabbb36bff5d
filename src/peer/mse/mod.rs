//! Message Stream Encryption (MSE), also called Protocol Encryption (PE):
//! the obfuscated handshake and RC4 stream that libtorrent, Transmission,
//! Vuze/BiglyBT and µTorrent speak before (or instead of) the plaintext
//! BitTorrent handshake. Spec: Vuze wiki, "Message Stream Encryption".
//!
//! ```text
//! 1 A->B: Ya, PadA
//! 2 B->A: Yb, PadB
//! 3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!         ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! 4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload)
//! 5 A->B: ENCRYPT2(payload)
//! ```
//!
//! Y = 2^X mod P over the 768-bit prime [`crypto::P`], X 160 random bits,
//! S the shared secret (96 bytes), SKEY the torrent's info-hash, VC eight
//! zero bytes. ENCRYPT is RC4 keyed with `HASH('keyA', S, SKEY)` from A
//! to B and `HASH('keyB', S, SKEY)` from B to A, the first 1024 keystream
//! bytes dropped; the IA (initial payload: we send the 68-byte BitTorrent
//! handshake) is always RC4. ENCRYPT2 is what `crypto_select` chose: RC4
//! continuing the same keystreams ([`Crypto::Rc4`], 0x02), or nothing
//! ([`Crypto::Plaintext`], 0x01: only the handshake was obfuscated).
//!
//! # Use
//! - Dialling: [`initiate`] over a connected transport, with our BitTorrent
//!   handshake as the initial payload; read the peer's handshake from the
//!   returned [`MseStream`]. If it fails with an error for which
//!   [`MseError::retry_plaintext`] is true, the peer probably does not
//!   speak MSE: under [`Policy::Prefer`] dial again and send a plaintext
//!   handshake (and remember that for this peer).
//! - Listening: [`accept_inbound`] on every accepted transport. It reads the
//!   first bytes ([`sniff`], [`classify`]): a plaintext handshake
//!   (`\x13BitTorrent protocol`) gives [`Inbound::Plaintext`], a stream
//!   that replays those bytes; anything else runs the MSE responder
//!   ([`accept`]), which recovers the torrent by matching the obfuscated
//!   SKEY against every info-hash we serve ([`SkeyTable`]) and hands back
//!   the initial payload ([`Accepted`]).
//!
//! # Policy (`--encryption prefer|require|off`)
//!
//! | policy  | we dial: offer (crypto_provide)        | peer dials with MSE: we select | peer dials in plaintext |
//! |---------|----------------------------------------|--------------------------------|-------------------------|
//! | prefer  | MSE first, RC4 \| plaintext (0x03); on [`MseError::retry_plaintext`] redial in plaintext | RC4 if offered, else plaintext | accepted                |
//! | require | MSE only, RC4 only (0x02); a peer selecting plaintext is refused | RC4 if offered, else refused ([`MseError::NoCommonCrypto`]) | refused ([`MseError::PlaintextRefused`]) |
//! | off     | plaintext handshake only ([`initiate`] returns [`MseError::Disabled`]) | refused ([`MseError::Disabled`]), no byte sent | accepted |
//!
//! `prefer` is libtorrent's default ("enabled", `out_enc_policy = in_enc_policy
//! = pe_enabled`, `allowed_enc_level = pe_both`): dial with MSE offering
//! both methods and fall back to plaintext on the next connection if the
//! encrypted handshake fails, accept both kinds of incoming connection.
//! Offering both as the initiator lets the responder choose, so a peer that
//! allows only the obfuscated handshake with a plaintext body (libtorrent's
//! `allowed_enc_level = pe_plaintext`) still connects on the first try, and
//! a default libtorrent (which keeps the lowest offered bit unless
//! `prefer_rc4` is set) picks plaintext: header obfuscation at full speed.
//! As the responder the choice is ours, and `prefer` takes RC4 when offered,
//! like Transmission's "prefer encryption" and libtorrent with `prefer_rc4`:
//! the point of the setting is to obfuscate when we can, and RC4 costs
//! little (see `tests/mse_libtorrent.rs`, throughput test). `require` is
//! libtorrent's `pe_forced` with `allowed_enc_level = pe_rc4` and
//! Transmission's `encryption: 2`.
//!
//! # Bounds
//! Every read and write of the handshake has [`Timeouts::step`], and the
//! whole handshake [`Timeouts::total`]. PadA/PadB/PadC/PadD longer than
//! [`MAX_PAD`] (512) bytes are refused: the sync search for
//! `HASH('req1', S)` looks at most 512 + 20 = 532 bytes past Ya, the one
//! for `ENCRYPT(VC)` at most 512 + 8 = 520 bytes past Yb, and the initial
//! payload is at most [`MAX_IA_LEN`] bytes. So one handshake holds a few
//! KiB at most. Each failure is a typed [`MseError`] and ends only the
//! connection it came from; no input panics (fuzzed: `fuzz/` target `mse`).
//!
//! # Big integers
//! The 768-bit modular exponentiation uses `num-bigint`: pure Rust, kept by
//! rust-num, within our minimum Rust version. `crypto-bigint` would be
//! constant time, but its current release needs a newer compiler than
//! `rust-version` allows, and constant time buys nothing here: X is fresh
//! for each connection and used for two exponentiations, and the exchange
//! is unauthenticated, so an attacker who can time us could as well sit in
//! the middle. libtorrent also uses a variable-time exponentiation.

pub mod crypto;
mod handshake;
mod stream;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

pub use handshake::{Accepted, Inbound, SkeyTable, accept, accept_inbound, initiate};
pub use stream::{MseReader, MseStream, MseWriter, WRITE_BUF};

/// Longest PadA, PadB, PadC or PadD, in bytes (spec: "0 to 512").
pub const MAX_PAD: usize = 512;

/// Longest initial payload we accept from an initiator, in bytes. The spec
/// allows 65535; libtorrent refuses more than 68 (one BitTorrent handshake)
/// and Transmission and anacrolix send exactly 68. 1 KiB leaves room for a
/// handshake followed by a first message while keeping a half-open
/// handshake small.
pub const MAX_IA_LEN: usize = 1024;

/// The first 20 bytes of a plaintext BitTorrent handshake (BEP 3).
pub const PLAINTEXT_PREFIX: &[u8; 20] = b"\x13BitTorrent protocol";

/// How bytes travel after the handshake (`crypto_provide`/`crypto_select`
/// bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Crypto {
    /// 0x01: the handshake was obfuscated, the payload is not.
    Plaintext,
    /// 0x02: the payload is RC4 in both directions.
    Rc4,
}

impl Crypto {
    /// The method's bit in `crypto_provide`/`crypto_select`.
    pub fn bit(self) -> u32 {
        match self {
            Crypto::Plaintext => 0x01,
            Crypto::Rc4 => 0x02,
        }
    }
}

impl fmt::Display for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Crypto::Plaintext => "plaintext",
            Crypto::Rc4 => "rc4",
        })
    }
}

/// The encryption setting (`--encryption`, `ClientBuilder`). See the module
/// documentation for how each behaves when dialling and when accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Dial with MSE offering RC4 and plaintext, fall back to a plaintext
    /// handshake; accept both; select RC4 when offered.
    #[default]
    Prefer,
    /// MSE with RC4 only, both directions; plaintext peers are refused.
    Require,
    /// No MSE: plaintext handshakes only, MSE connections refused.
    Off,
}

impl Policy {
    /// What our initiator offers in `crypto_provide`; `None` under
    /// [`Policy::Off`] (no MSE at all).
    pub fn crypto_provide(self) -> Option<u32> {
        match self {
            Policy::Prefer => Some(Crypto::Plaintext.bit() | Crypto::Rc4.bit()),
            Policy::Require => Some(Crypto::Rc4.bit()),
            Policy::Off => None,
        }
    }

    /// What our responder selects from a peer's `crypto_provide` bits, or
    /// `None` when nothing offered is acceptable. Unknown bits are ignored.
    pub fn select(self, crypto_provide: u32) -> Option<Crypto> {
        let rc4 = crypto_provide & Crypto::Rc4.bit() != 0;
        let plain = crypto_provide & Crypto::Plaintext.bit() != 0;
        match self {
            Policy::Prefer if rc4 => Some(Crypto::Rc4),
            Policy::Prefer if plain => Some(Crypto::Plaintext),
            Policy::Require if rc4 => Some(Crypto::Rc4),
            _ => None,
        }
    }

    /// Whether dialling starts with an MSE handshake.
    pub fn dials_mse(self) -> bool {
        self != Policy::Off
    }

    /// Whether a failed MSE dial ([`MseError::retry_plaintext`]) may be
    /// retried with a plaintext handshake.
    pub fn falls_back_to_plaintext(self) -> bool {
        self == Policy::Prefer
    }

    /// Whether an incoming plaintext BitTorrent handshake is accepted.
    pub fn accepts_plaintext(self) -> bool {
        self != Policy::Require
    }

    /// Whether an incoming MSE handshake is answered.
    pub fn accepts_mse(self) -> bool {
        self != Policy::Off
    }
}

impl FromStr for Policy {
    type Err = String;
    /// `prefer`, `require` or `off`.
    fn from_str(s: &str) -> Result<Policy, String> {
        match s {
            "prefer" => Ok(Policy::Prefer),
            "require" => Ok(Policy::Require),
            "off" => Ok(Policy::Off),
            _ => Err(format!(
                "unknown encryption policy {s:?} (prefer, require or off)"
            )),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::Prefer => "prefer",
            Policy::Require => "require",
            Policy::Off => "off",
        })
    }
}

/// Time limits of one handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for one read or write (each step of the exchange).
    pub step: Duration,
    /// Longest time for the whole handshake, from the first byte to the
    /// returned stream.
    pub total: Duration,
}

impl Default for Timeouts {
    /// 10 s per step, 20 s in all (libtorrent's handshake timeout is 10 s,
    /// Transmission's 30 s).
    fn default() -> Timeouts {
        Timeouts {
            step: Duration::from_secs(10),
            total: Duration::from_secs(20),
        }
    }
}

/// Where in the handshake something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Reading the first bytes of an incoming connection ([`sniff`]).
    Sniff,
    /// Sending our public key and PadA/PadB, reading the peer's public key.
    PublicKey,
    /// Responder: scanning PadA for `HASH('req1', S)`.
    SyncHash,
    /// Responder: the obfuscated SKEY, VC, `crypto_provide`, `len(PadC)`.
    CryptoProvide,
    /// Responder: PadC and `len(IA)`.
    PadC,
    /// Responder: the initial payload.
    InitialPayload,
    /// Initiator: sending message 3, then scanning PadB for `ENCRYPT(VC)`.
    VcSync,
    /// Initiator: `crypto_select` and `len(PadD)`; responder: sending them.
    CryptoSelect,
    /// Initiator: PadD.
    PadD,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Sniff => "first bytes",
            Step::PublicKey => "Diffie-Hellman key exchange",
            Step::SyncHash => "sync hash search",
            Step::CryptoProvide => "crypto_provide",
            Step::PadC => "PadC",
            Step::InitialPayload => "initial payload",
            Step::VcSync => "verification constant search",
            Step::CryptoSelect => "crypto_select",
            Step::PadD => "PadD",
        })
    }
}

/// Why an MSE handshake failed. Each closes that one connection (the
/// stream is dropped). Variants other than [`MseError::Io`],
/// [`MseError::Timeout`], [`MseError::UnexpectedEof`] and the policy
/// refusals are protocol violations by the peer.
#[derive(Debug, thiserror::Error)]
pub enum MseError {
    /// The policy is [`Policy::Off`]: no MSE handshake is made or answered.
    #[error("encryption is off: MSE handshake refused")]
    Disabled,
    /// A plaintext BitTorrent handshake under [`Policy::Require`].
    #[error("encryption is required: plaintext handshake refused")]
    PlaintextRefused,
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
    /// The transport failed.
    #[error("MSE {step}: {source}")]
    Io {
        step: Step,
        #[source]
        source: std::io::Error,
    },
    /// The peer closed the connection.
    #[error("peer closed the connection during MSE {0}")]
    UnexpectedEof(Step),
    /// A step, or the whole handshake, took longer than its [`Timeouts`].
    #[error("MSE {0} timed out")]
    Timeout(Step),
    /// The peer's public key is outside `[2, P-2]`.
    #[error("peer's Diffie-Hellman public key is degenerate")]
    BadPublicKey,
    /// The peer answered our public key with a plaintext BitTorrent
    /// handshake: it does not speak MSE.
    #[error("peer answered MSE with a plaintext BitTorrent handshake")]
    PlaintextReply,
    /// No `HASH('req1', S)` within 532 bytes after the initiator's key.
    #[error("MSE sync hash not found within 532 bytes")]
    SyncHashNotFound,
    /// No `ENCRYPT(VC)` within 520 bytes after the responder's key.
    #[error("MSE verification constant not found within 520 bytes")]
    VcNotFound,
    /// The obfuscated SKEY matches no torrent we serve.
    #[error("MSE handshake for a torrent we do not serve")]
    UnknownSkey,
    /// The decrypted verification constant is not eight zero bytes (a
    /// wrong key: the peer derived it from another secret or SKEY).
    #[error("MSE verification constant mismatch")]
    BadVc,
    /// A padding length field above [`MAX_PAD`].
    #[error("MSE {step} length {len} exceeds 512")]
    PadTooLong { step: Step, len: u16 },
    /// `len(IA)` above [`MAX_IA_LEN`].
    #[error("MSE initial payload of {0} bytes exceeds {MAX_IA_LEN}")]
    IaTooLong(u16),
    /// Responder: nothing in the peer's `crypto_provide` is allowed by our
    /// policy.
    #[error("MSE crypto_provide {provide:#x} has no method our policy allows")]
    NoCommonCrypto { provide: u32 },
    /// Initiator: `crypto_select` is not exactly one method we offered.
    #[error("MSE crypto_select {select:#x} is not one of the offered {provide:#x}")]
    BadCryptoSelect { select: u32, provide: u32 },
    /// Our own initial payload is longer than 65535 bytes.
    #[error("initial payload of {0} bytes does not fit len(IA)")]
    PayloadTooLong(usize),
}

impl MseError {
    /// True when the peer probably does not speak MSE: it closed, reset,
    /// stayed silent or answered in plaintext before sending its public
    /// key. Under [`Policy::Prefer`] the caller then dials again with a
    /// plaintext handshake, as libtorrent and Transmission do.
    pub fn retry_plaintext(&self) -> bool {
        match self {
            MseError::Io { step, .. } | MseError::UnexpectedEof(step) | MseError::Timeout(step) => {
                *step == Step::PublicKey
            }
            MseError::PlaintextReply => true,
            _ => false,
        }
    }
}

/// What an incoming connection speaks, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    /// `\x13BitTorrent protocol`: a plaintext handshake (BEP 3).
    Plaintext,
    /// Anything else: an MSE public key (random-looking bytes).
    Mse,
}

/// Tells a plaintext handshake from MSE by the first bytes of an incoming
/// connection; `None` while `first` is a proper prefix of
/// [`PLAINTEXT_PREFIX`] (read more). Usually one byte decides (a public key
/// starts with 19 once in 256 connections); at most 20 bytes are needed.
/// A public key starting with all 20 bytes of the prefix (chance 2^-160)
/// would be taken for plaintext.
pub fn classify(first: &[u8]) -> Option<Incoming> {
    let n = first.len().min(PLAINTEXT_PREFIX.len());
    if first[..n] != PLAINTEXT_PREFIX[..n] {
        Some(Incoming::Mse)
    } else if n == PLAINTEXT_PREFIX.len() {
        Some(Incoming::Plaintext)
    } else {
        None
    }
}

/// Reads the first bytes of an incoming connection until [`classify`]
/// decides, within `timeout`. Returns the verdict and every byte read (at
/// most 96), which the caller must replay: pass them to [`accept`] as
/// `already_read`, or to [`MseStream::passthrough`].
///
/// Errors: [`MseError::Timeout`], [`MseError::UnexpectedEof`],
/// [`MseError::Io`], all with [`Step::Sniff`].
pub async fn sniff<S: AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> Result<(Incoming, Vec<u8>), MseError> {
    let steps = async {
        let mut buf = [0u8; crypto::DH_LEN];
        let mut len = 0;
        loop {
            if let Some(kind) = classify(&buf[..len]).filter(|_| len > 0) {
                return Ok((kind, buf[..len].to_vec()));
            }
            let n = stream
                .read(&mut buf[len..])
                .await
                .map_err(|source| MseError::Io {
                    step: Step::Sniff,
                    source,
                })?;
            if n == 0 {
                return Err(MseError::UnexpectedEof(Step::Sniff));
            }
            len += n;
        }
    };
    tokio::time::timeout(timeout, steps)
        .await
        .map_err(|_| MseError::Timeout(Step::Sniff))?
}

#[cfg(test)]
mod tests;
