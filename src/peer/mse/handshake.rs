//! The MSE handshake itself, both roles: [`initiate`] (A, who dials) and
//! [`accept`] (B, who listens), over any `AsyncRead + AsyncWrite`
//! transport. One receive buffer per handshake, bounded by the spec's
//! limits; every read and write under a step timeout, the whole under a
//! total timeout.

use std::collections::HashMap;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::crypto::{DH_LEN, DhKey, Rc4Drop, skey_hash, skey_mask, stream_keys, sync_hash, xor20};
use super::stream::MseStream;
use super::{
    Crypto, Incoming, MAX_IA_LEN, MAX_PAD, MseError, PLAINTEXT_PREFIX, Policy, Step, Timeouts,
    sniff,
};
use crate::hash::InfoHash;

/// The verification constant: eight zero bytes.
const VC: [u8; 8] = [0; 8];

/// Largest single read during the handshake, in bytes. What is read past
/// the handshake's end is kept for the stream, so this only bounds how
/// much one read may bring at once.
const READ_CHUNK: usize = 1024;

/// The precomputed `HASH('req2', info-hash)` of every torrent we serve, so
/// an incoming MSE handshake finds its torrent with one map lookup however
/// many torrents there are. SKEY is the 20-byte v1 info-hash (for a v2
/// torrent, libtorrent uses the SHA-256 info-hash truncated to 20 bytes:
/// insert that as well).
#[derive(Debug, Clone, Default)]
pub struct SkeyTable {
    /// `HASH('req2', SKEY)` → SKEY.
    by_hash: HashMap<[u8; 20], InfoHash>,
}

impl SkeyTable {
    /// An empty table.
    pub fn new() -> SkeyTable {
        SkeyTable::default()
    }

    /// Serves `info_hash` (idempotent).
    pub fn insert(&mut self, info_hash: InfoHash) {
        self.by_hash.insert(skey_hash(&info_hash.0), info_hash);
    }

    /// Stops serving `info_hash`.
    pub fn remove(&mut self, info_hash: &InfoHash) {
        self.by_hash.remove(&skey_hash(&info_hash.0));
    }

    /// The info-hash whose `HASH('req2', SKEY)` is `req2`, if we serve it.
    /// Pass `|h| table.find(h)` to [`accept`].
    pub fn find(&self, req2: &[u8; 20]) -> Option<InfoHash> {
        self.by_hash.get(req2).copied()
    }

    /// Number of torrents served.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// True when no torrent is served.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

impl FromIterator<InfoHash> for SkeyTable {
    fn from_iter<I: IntoIterator<Item = InfoHash>>(iter: I) -> SkeyTable {
        let mut t = SkeyTable::new();
        for ih in iter {
            t.insert(ih);
        }
        t
    }
}

/// A successful responder handshake.
#[derive(Debug)]
pub struct Accepted<S> {
    /// The connection, RC4 or plaintext as selected ([`MseStream::crypto`]).
    pub stream: MseStream<S>,
    /// The torrent whose obfuscated SKEY the initiator sent. The BitTorrent
    /// handshake that follows should name the same info-hash.
    pub info_hash: InfoHash,
    /// The initiator's initial payload (IA), decrypted: usually its whole
    /// 68-byte BitTorrent handshake, but it may be empty or a part of it
    /// (the rest then comes through `stream`).
    pub initial_payload: Vec<u8>,
}

impl<S> Accepted<S> {
    /// The stream with the initial payload put back in front, so the
    /// BitTorrent handshake is read from the stream in every case.
    pub fn into_stream(self) -> (MseStream<S>, InfoHash) {
        let mut stream = self.stream;
        stream.unread(&self.initial_payload);
        (stream, self.info_hash)
    }
}

/// An incoming connection after [`accept_inbound`].
#[derive(Debug)]
pub enum Inbound<S> {
    /// A plaintext BitTorrent handshake: the stream passes bytes through
    /// and first replays the ones read to recognise it.
    Plaintext(MseStream<S>),
    /// A completed MSE handshake.
    Encrypted(Accepted<S>),
}

/// Padding lengths for one handshake.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pads {
    /// PadA (initiator) or PadB (responder): random bytes after the key.
    pub(crate) key: usize,
    /// PadC (initiator) or PadD (responder): zeros, encrypted.
    pub(crate) crypto: usize,
}

impl Pads {
    /// Uniform lengths in `0..=512`.
    fn random() -> Result<Pads, MseError> {
        let mut r = [0u8; 4];
        getrandom::fill(&mut r).map_err(|e| MseError::Random(e.to_string()))?;
        let len = |a: u8, b: u8| usize::from(u16::from_be_bytes([a, b])) % (MAX_PAD + 1);
        Ok(Pads {
            key: len(r[0], r[1]),
            crypto: len(r[2], r[3]),
        })
    }
}

/// Dials MSE over a connected `stream`, as the initiator (A), for the
/// torrent `info_hash` (SKEY), sending `initial_payload` (normally our
/// 68-byte BitTorrent handshake, `Handshake::encode`) encrypted inside
/// message 3. The peer's BitTorrent handshake is then read from the
/// returned stream.
///
/// Errors: [`MseError::Disabled`] under [`Policy::Off`] (nothing sent);
/// [`MseError::PayloadTooLong`]; any failure of the exchange (see
/// [`MseError`]). On an error for which [`MseError::retry_plaintext`] is
/// true and [`Policy::falls_back_to_plaintext`], dial again in plaintext.
pub async fn initiate<S>(
    stream: S,
    info_hash: InfoHash,
    policy: Policy,
    initial_payload: &[u8],
    timeouts: Timeouts,
) -> Result<MseStream<S>, MseError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let provide = policy.crypto_provide().ok_or(MseError::Disabled)?;
    initiate_with(
        stream,
        info_hash,
        provide,
        initial_payload,
        timeouts,
        Pads::random()?,
        DhKey::generate()?,
    )
    .await
}

/// [`initiate`] with chosen offer, padding and key (tests, fuzzing).
pub(crate) async fn initiate_with<S>(
    stream: S,
    info_hash: InfoHash,
    provide: u32,
    initial_payload: &[u8],
    timeouts: Timeouts,
    pads: Pads,
    key: DhKey,
) -> Result<MseStream<S>, MseError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    if initial_payload.len() > usize::from(u16::MAX) {
        return Err(MseError::PayloadTooLong(initial_payload.len()));
    }
    let mut hs = Hs::new(stream, Vec::new(), timeouts);
    let r = tokio::time::timeout(
        timeouts.total,
        hs.initiator(key, &info_hash.0, provide, initial_payload, pads),
    )
    .await;
    let (decrypt, encrypt, crypto) = match r {
        Err(_) => return Err(MseError::Timeout(hs.step)),
        Ok(r) => r?,
    };
    let (stream, leftover) = hs.into_parts();
    Ok(MseStream::new(
        stream,
        crypto,
        Some(decrypt),
        Some(encrypt),
        leftover,
    ))
}

/// Answers an incoming MSE handshake, as the responder (B). `already_read`
/// holds bytes of the connection already consumed (from [`super::sniff`]);
/// `find_skey` maps `HASH('req2', SKEY)` to the info-hash we serve with that
/// SKEY, or `None` (use [`SkeyTable::find`]). Selects the method with
/// [`Policy::select`].
///
/// Errors: [`MseError::Disabled`] under [`Policy::Off`] (nothing read or
/// sent); [`MseError::UnknownSkey`], [`MseError::NoCommonCrypto`] and the
/// other failures of [`MseError`].
pub async fn accept<S, F>(
    stream: S,
    already_read: &[u8],
    find_skey: F,
    policy: Policy,
    timeouts: Timeouts,
) -> Result<Accepted<S>, MseError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    F: FnOnce(&[u8; 20]) -> Option<InfoHash>,
{
    if !policy.accepts_mse() {
        return Err(MseError::Disabled);
    }
    accept_with(
        stream,
        already_read,
        find_skey,
        policy,
        timeouts,
        Pads::random()?,
        DhKey::generate()?,
    )
    .await
}

/// [`accept`] with chosen padding and key (tests, fuzzing).
pub(crate) async fn accept_with<S, F>(
    stream: S,
    already_read: &[u8],
    find_skey: F,
    policy: Policy,
    timeouts: Timeouts,
    pads: Pads,
    key: DhKey,
) -> Result<Accepted<S>, MseError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    F: FnOnce(&[u8; 20]) -> Option<InfoHash>,
{
    let mut hs = Hs::new(stream, already_read.to_vec(), timeouts);
    let r = tokio::time::timeout(timeouts.total, hs.responder(key, find_skey, policy, pads)).await;
    let (info_hash, initial_payload, decrypt, encrypt, crypto) = match r {
        Err(_) => return Err(MseError::Timeout(hs.step)),
        Ok(r) => r?,
    };
    let (stream, leftover) = hs.into_parts();
    Ok(Accepted {
        stream: MseStream::new(stream, crypto, Some(decrypt), Some(encrypt), leftover),
        info_hash,
        initial_payload,
    })
}

/// One-stop handling of an accepted connection: [`sniff`] its first bytes
/// (within `timeouts.step`), then either pass a plaintext handshake through
/// or run [`accept`] (the whole within `timeouts.total`).
///
/// Errors: [`MseError::PlaintextRefused`] for a plaintext handshake under
/// [`Policy::Require`], [`MseError::Disabled`] for MSE under
/// [`Policy::Off`], and those of [`sniff`] and [`accept`].
pub async fn accept_inbound<S, F>(
    mut stream: S,
    find_skey: F,
    policy: Policy,
    timeouts: Timeouts,
) -> Result<Inbound<S>, MseError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    F: FnOnce(&[u8; 20]) -> Option<InfoHash>,
{
    let started = tokio::time::Instant::now();
    let (kind, first) = sniff(&mut stream, timeouts.step.min(timeouts.total)).await?;
    match kind {
        Incoming::Plaintext if policy.accepts_plaintext() => {
            Ok(Inbound::Plaintext(MseStream::passthrough(stream, first)))
        }
        Incoming::Plaintext => Err(MseError::PlaintextRefused),
        Incoming::Mse => {
            // the sniffing counts against the whole handshake's time
            let left = Timeouts {
                total: timeouts.total.saturating_sub(started.elapsed()),
                ..timeouts
            };
            accept(stream, &first, find_skey, policy, left)
                .await
                .map(Inbound::Encrypted)
        }
    }
}

/// The handshake's transport and receive buffer.
struct Hs<S> {
    stream: S,
    /// Received bytes; `buf[pos..]` not yet consumed. Holds at most what the
    /// handshake still needs plus one [`READ_CHUNK`].
    buf: Vec<u8>,
    pos: usize,
    /// The step in progress, for errors (and for the total timeout, which
    /// drops the future that updates it).
    step: Step,
    timeouts: Timeouts,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Hs<S> {
    fn new(stream: S, already_read: Vec<u8>, timeouts: Timeouts) -> Hs<S> {
        Hs {
            stream,
            buf: already_read,
            pos: 0,
            step: Step::PublicKey,
            timeouts,
        }
    }

    fn avail(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// One read of at most [`READ_CHUNK`] bytes, within the step timeout.
    async fn read_more(&mut self) -> Result<(), MseError> {
        let mut chunk = [0u8; READ_CHUNK];
        let step = self.step;
        let n = tokio::time::timeout(self.timeouts.step, self.stream.read(&mut chunk))
            .await
            .map_err(|_| MseError::Timeout(step))?
            .map_err(|source| MseError::Io { step, source })?;
        if n == 0 {
            return Err(MseError::UnexpectedEof(step));
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads until `n` unconsumed bytes are buffered.
    async fn fill(&mut self, n: usize) -> Result<(), MseError> {
        while self.avail() < n {
            self.read_more().await?;
        }
        Ok(())
    }

    /// Consumes `n` buffered bytes (after [`Hs::fill`]).
    fn take(&mut self, n: usize) -> &mut [u8] {
        let start = self.pos;
        self.pos += n;
        &mut self.buf[start..start + n]
    }

    /// Reads and consumes `n` bytes, decrypting them with `cipher`.
    async fn read_decrypt(&mut self, n: usize, cipher: &mut Rc4Drop) -> Result<&[u8], MseError> {
        self.fill(n).await?;
        let b = self.take(n);
        cipher.apply(b);
        Ok(b)
    }

    /// Writes and flushes `data` within the step timeout.
    async fn send(&mut self, data: &[u8]) -> Result<(), MseError> {
        let step = self.step;
        let w = async {
            self.stream.write_all(data).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(self.timeouts.step, w)
            .await
            .map_err(|_| MseError::Timeout(step))?
            .map_err(|source| MseError::Io { step, source })
    }

    /// Consumes bytes up to and including `pattern`, which must start
    /// within the next `max_skip + 1` bytes; `not_found` otherwise. Each
    /// start offset is compared once, however the bytes arrive.
    async fn sync(
        &mut self,
        pattern: &[u8],
        max_skip: usize,
        not_found: MseError,
    ) -> Result<(), MseError> {
        let limit = max_skip + pattern.len();
        let mut from = 0;
        loop {
            let window = &self.buf[self.pos..self.pos + self.avail().min(limit)];
            if window.len() >= pattern.len() {
                if let Some(i) = window[from..]
                    .windows(pattern.len())
                    .position(|w| w == pattern)
                {
                    self.pos += from + i + pattern.len();
                    return Ok(());
                }
                from = window.len() + 1 - pattern.len();
            }
            if window.len() >= limit {
                return Err(not_found);
            }
            self.read_more().await?;
        }
    }

    fn into_parts(self) -> (S, Vec<u8>) {
        let leftover = self.buf[self.pos..].to_vec();
        (self.stream, leftover)
    }

    /// A's side: messages 1 and 3 out, 2 and 4 in. Returns the decrypting
    /// and encrypting ciphers positioned after the handshake, and the
    /// selected method.
    async fn initiator(
        &mut self,
        key: DhKey,
        skey: &[u8; 20],
        provide: u32,
        ia: &[u8],
        pads: Pads,
    ) -> Result<(Rc4Drop, Rc4Drop, Crypto), MseError> {
        // 1: Ya, PadA
        self.step = Step::PublicKey;
        let mut msg = Vec::with_capacity(DH_LEN + MAX_PAD);
        msg.extend_from_slice(key.public_key());
        msg.extend_from_slice(&random_bytes(pads.key.min(MAX_PAD))?);
        self.send(&msg).await?;

        // 2: Yb (PadB is skipped by the VC search)
        self.fill(DH_LEN).await?;
        let yb: [u8; DH_LEN] = self.take(DH_LEN).try_into().expect("DH_LEN bytes");
        if yb.starts_with(PLAINTEXT_PREFIX) {
            return Err(MseError::PlaintextReply);
        }
        let secret = key.shared_secret(&yb)?;
        drop(key);
        let (key_a, key_b) = stream_keys(&secret, skey);
        let mut encrypt = Rc4Drop::new(&key_a);
        let mut decrypt = Rc4Drop::new(&key_b);

        // 3: HASH('req1', S), HASH('req2', SKEY) ^ HASH('req3', S),
        //    ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
        self.step = Step::VcSync;
        let pad_c = pads.crypto.min(MAX_PAD);
        msg.clear();
        msg.extend_from_slice(&sync_hash(&secret));
        msg.extend_from_slice(&xor20(&skey_hash(skey), &skey_mask(&secret)));
        let enc_from = msg.len();
        msg.extend_from_slice(&VC);
        msg.extend_from_slice(&provide.to_be_bytes());
        msg.extend_from_slice(&(pad_c as u16).to_be_bytes());
        msg.resize(msg.len() + pad_c, 0);
        msg.extend_from_slice(&(ia.len() as u16).to_be_bytes());
        msg.extend_from_slice(ia);
        encrypt.apply(&mut msg[enc_from..]);
        self.send(&msg).await?;
        drop(msg);

        // 4: find ENCRYPT(VC) after PadB, then crypto_select, len(PadD), PadD
        let mut vc = VC;
        decrypt.apply(&mut vc);
        self.sync(&vc, MAX_PAD, MseError::VcNotFound).await?;
        self.step = Step::CryptoSelect;
        let f = self.read_decrypt(6, &mut decrypt).await?;
        let select = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
        let pad_d = u16::from_be_bytes([f[4], f[5]]);
        let crypto = match select {
            0x01 if provide & 0x01 != 0 => Crypto::Plaintext,
            0x02 if provide & 0x02 != 0 => Crypto::Rc4,
            _ => return Err(MseError::BadCryptoSelect { select, provide }),
        };
        if usize::from(pad_d) > MAX_PAD {
            return Err(MseError::PadTooLong {
                step: Step::PadD,
                len: pad_d,
            });
        }
        self.step = Step::PadD;
        self.read_decrypt(usize::from(pad_d), &mut decrypt).await?;
        Ok((decrypt, encrypt, crypto))
    }

    /// B's side: messages 1 and 3 in, 2 and 4 out. Returns the torrent, the
    /// initial payload, the decrypting and encrypting ciphers positioned
    /// after the handshake, and the selected method.
    async fn responder<F>(
        &mut self,
        key: DhKey,
        find_skey: F,
        policy: Policy,
        pads: Pads,
    ) -> Result<(InfoHash, Vec<u8>, Rc4Drop, Rc4Drop, Crypto), MseError>
    where
        F: FnOnce(&[u8; 20]) -> Option<InfoHash>,
    {
        // 1: Ya
        self.step = Step::PublicKey;
        self.fill(DH_LEN).await?;
        let ya: [u8; DH_LEN] = self.take(DH_LEN).try_into().expect("DH_LEN bytes");
        let secret = key.shared_secret(&ya)?;

        // 2: Yb, PadB
        let mut msg = Vec::with_capacity(DH_LEN + MAX_PAD);
        msg.extend_from_slice(key.public_key());
        msg.extend_from_slice(&random_bytes(pads.key.min(MAX_PAD))?);
        drop(key);
        self.send(&msg).await?;

        // 3: find HASH('req1', S) after PadA
        self.step = Step::SyncHash;
        self.sync(&sync_hash(&secret), MAX_PAD, MseError::SyncHashNotFound)
            .await?;
        self.step = Step::CryptoProvide;
        self.fill(20).await?;
        let obfuscated: [u8; 20] = self.take(20).try_into().expect("20 bytes");
        let req2 = xor20(&obfuscated, &skey_mask(&secret));
        let info_hash = find_skey(&req2).ok_or(MseError::UnknownSkey)?;
        let (key_a, key_b) = stream_keys(&secret, &info_hash.0);
        let mut decrypt = Rc4Drop::new(&key_a);
        let mut encrypt = Rc4Drop::new(&key_b);

        let f = self.read_decrypt(8 + 4 + 2, &mut decrypt).await?;
        if f[..8] != VC {
            return Err(MseError::BadVc);
        }
        let provide = u32::from_be_bytes([f[8], f[9], f[10], f[11]]);
        let pad_c = u16::from_be_bytes([f[12], f[13]]);
        if usize::from(pad_c) > MAX_PAD {
            return Err(MseError::PadTooLong {
                step: Step::PadC,
                len: pad_c,
            });
        }
        self.step = Step::PadC;
        let p = self
            .read_decrypt(usize::from(pad_c) + 2, &mut decrypt)
            .await?;
        let ia_len = u16::from_be_bytes([p[p.len() - 2], p[p.len() - 1]]);
        if usize::from(ia_len) > MAX_IA_LEN {
            return Err(MseError::IaTooLong(ia_len));
        }
        self.step = Step::InitialPayload;
        let ia = self
            .read_decrypt(usize::from(ia_len), &mut decrypt)
            .await?
            .to_vec();
        let crypto = policy
            .select(provide)
            .ok_or(MseError::NoCommonCrypto { provide })?;

        // 4: ENCRYPT(VC, crypto_select, len(PadD), PadD)
        self.step = Step::CryptoSelect;
        let pad_d = pads.crypto.min(MAX_PAD);
        msg.clear();
        msg.extend_from_slice(&VC);
        msg.extend_from_slice(&crypto.bit().to_be_bytes());
        msg.extend_from_slice(&(pad_d as u16).to_be_bytes());
        msg.resize(msg.len() + pad_d, 0);
        encrypt.apply(&mut msg);
        self.send(&msg).await?;
        Ok((info_hash, ia, decrypt, encrypt, crypto))
    }
}

/// `n` bytes from the operating system's random source.
fn random_bytes(n: usize) -> Result<Vec<u8>, MseError> {
    let mut v = vec![0u8; n];
    getrandom::fill(&mut v).map_err(|e| MseError::Random(e.to_string()))?;
    Ok(v)
}
