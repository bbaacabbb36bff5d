//! Initiator ↔ responder over `tokio::io::duplex` for every policy pair,
//! random and extreme padding, data in both directions checked byte for
//! byte (and checked to be ciphertext on the wire under RC4), and hostile
//! peers built from the public primitives: endless padding, garbage, a
//! wrong VC or SKEY, oversized fields, a half handshake then silence.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

use super::crypto::*;
use super::handshake::{Pads, accept_with, initiate_with};
use super::*;
use crate::hash::InfoHash;
use crate::peer::wire::Handshake;

const IH: InfoHash = InfoHash([0x5a; 20]);

fn served() -> SkeyTable {
    [InfoHash([1; 20]), IH, InfoHash([2; 20]), InfoHash([3; 20])]
        .into_iter()
        .collect()
}

fn bt_handshake(ih: InfoHash, id: u8) -> [u8; 68] {
    Handshake::new(ih, [id; 20]).encode()
}

fn quick() -> Timeouts {
    Timeouts {
        step: Duration::from_millis(300),
        total: Duration::from_millis(1500),
    }
}

fn random_vec(n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    getrandom::fill(&mut v).unwrap();
    v
}

fn random_len(max: usize) -> usize {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    u32::from_le_bytes(b) as usize % (max + 1)
}

/// A transport that records every byte written through it.
#[derive(Debug)]
struct Tap<S> {
    inner: S,
    wrote: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            self.wrote.lock().unwrap().extend_from_slice(&data[..n]);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A transport whose reads return at most one byte: every boundary of the
/// handshake's parsing falls between two reads somewhere.
#[derive(Debug)]
struct Trickle<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for Trickle<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut one = [0u8; 1];
        let mut b = ReadBuf::new(&mut one);
        let r = Pin::new(&mut self.0).poll_read(cx, &mut b);
        if let Poll::Ready(Ok(())) = r {
            buf.put_slice(b.filled());
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Trickle<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Sends `n` random bytes each way through a connected pair and checks
/// they arrive intact; returns the bytes each side wrote.
async fn exchange<A, B>(a: &mut A, b: &mut B, n: usize) -> (Vec<u8>, Vec<u8>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let from_a = random_vec(n);
    let from_b = random_vec(n);
    let (ra, rb) = tokio::join!(
        async {
            a.write_all(&from_a).await.unwrap();
            a.flush().await.unwrap();
            let mut got = vec![0; n];
            a.read_exact(&mut got).await.unwrap();
            got
        },
        async {
            b.write_all(&from_b).await.unwrap();
            b.flush().await.unwrap();
            let mut got = vec![0; n];
            b.read_exact(&mut got).await.unwrap();
            got
        }
    );
    assert_eq!(ra, from_b, "B → A bytes");
    assert_eq!(rb, from_a, "A → B bytes");
    (from_a, from_b)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Runs our initiator against our responder (through [`accept_inbound`]),
/// over a duplex whose both directions are tapped.
async fn pair(
    init: Policy,
    resp: Policy,
) -> (
    Result<MseStream<Tap<DuplexStream>>, MseError>,
    Result<Inbound<Tap<DuplexStream>>, MseError>,
    Arc<Mutex<Vec<u8>>>,
    Arc<Mutex<Vec<u8>>>,
) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let a_wrote = Arc::new(Mutex::new(Vec::new()));
    let b_wrote = Arc::new(Mutex::new(Vec::new()));
    let a = Tap {
        inner: a,
        wrote: a_wrote.clone(),
    };
    let b = Tap {
        inner: b,
        wrote: b_wrote.clone(),
    };
    let table = served();
    let ia = bt_handshake(IH, 0xA1);
    let (ra, rb) = tokio::join!(
        initiate(a, IH, init, &ia, quick()),
        accept_inbound(b, |h| table.find(h), resp, quick())
    );
    (ra, rb, a_wrote, b_wrote)
}

#[tokio::test]
async fn every_policy_pair() {
    use Policy::*;
    for init in [Prefer, Require, Off] {
        for resp in [Prefer, Require, Off] {
            let (ra, rb, a_wrote, b_wrote) = pair(init, resp).await;
            let what = format!("initiator {init}, responder {resp}");
            match (init, resp) {
                (Off, _) => {
                    assert!(matches!(ra, Err(MseError::Disabled)), "{what}: {ra:?}");
                    assert!(a_wrote.lock().unwrap().is_empty(), "{what}: sent nothing");
                    // the responder saw the stream close before any byte
                    assert!(
                        matches!(rb, Err(MseError::UnexpectedEof(Step::Sniff))),
                        "{what}: {rb:?}"
                    );
                }
                (_, Off) => {
                    assert!(matches!(rb, Err(MseError::Disabled)), "{what}: {rb:?}");
                    assert!(
                        b_wrote.lock().unwrap().is_empty(),
                        "{what}: answered nothing"
                    );
                    let e = ra.expect_err(&what);
                    assert!(
                        e.retry_plaintext(),
                        "{what}: {e:?} should allow a plaintext retry"
                    );
                }
                _ => {
                    let mut a = ra.unwrap_or_else(|e| panic!("{what}: initiator {e}"));
                    let Ok(Inbound::Encrypted(acc)) = rb else {
                        panic!("{what}: responder {rb:?}")
                    };
                    assert_eq!(acc.info_hash, IH, "{what}");
                    assert_eq!(acc.initial_payload, bt_handshake(IH, 0xA1), "{what}");
                    assert_eq!(a.crypto(), Crypto::Rc4, "{what}");
                    assert_eq!(acc.stream.crypto(), Crypto::Rc4, "{what}");
                    let mut b = acc.stream;
                    let before = (a_wrote.lock().unwrap().len(), b_wrote.lock().unwrap().len());
                    let (from_a, from_b) = exchange(&mut a, &mut b, 5000).await;
                    // on the wire: ciphertext, never the plaintext
                    let wire_a = a_wrote.lock().unwrap()[before.0..].to_vec();
                    let wire_b = b_wrote.lock().unwrap()[before.1..].to_vec();
                    assert_eq!(wire_a.len(), 5000);
                    assert_ne!(wire_a, from_a, "{what}: A's bytes encrypted");
                    assert_ne!(wire_b, from_b, "{what}: B's bytes encrypted");
                    // nor the handshake in the initial payload
                    assert!(!contains(&a_wrote.lock().unwrap(), b"BitTorrent protocol"));
                }
            }
        }
    }
}

/// An initiator offering plaintext only (libtorrent's
/// `allowed_enc_level = pe_plaintext`): `prefer` selects it, `require`
/// refuses it.
#[tokio::test]
async fn plaintext_selection_and_refusal() {
    for resp in [Policy::Prefer, Policy::Require] {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let a_wrote = Arc::new(Mutex::new(Vec::new()));
        let a = Tap {
            inner: a,
            wrote: a_wrote.clone(),
        };
        let table = served();
        let pads = Pads {
            key: random_len(MAX_PAD),
            crypto: random_len(MAX_PAD),
        };
        let ia = bt_handshake(IH, 7);
        let (ra, rb) = tokio::join!(
            initiate_with(a, IH, 0x01, &ia, quick(), pads, DhKey::generate().unwrap()),
            accept_inbound(b, |h| table.find(h), resp, quick())
        );
        if resp == Policy::Require {
            assert!(
                matches!(rb, Err(MseError::NoCommonCrypto { provide: 1 })),
                "{rb:?}"
            );
            let e = ra.unwrap_err();
            assert!(!e.retry_plaintext(), "{e:?}");
            assert!(matches!(e, MseError::UnexpectedEof(Step::VcSync)), "{e:?}");
            continue;
        }
        let mut a = ra.unwrap();
        let Ok(Inbound::Encrypted(acc)) = rb else {
            panic!("{rb:?}")
        };
        assert_eq!(a.crypto(), Crypto::Plaintext);
        assert_eq!(acc.stream.crypto(), Crypto::Plaintext);
        // the initial payload is RC4 even so
        assert_eq!(acc.initial_payload, ia);
        assert!(!contains(&a_wrote.lock().unwrap(), b"BitTorrent protocol"));
        let mut b = acc.stream;
        let before = a_wrote.lock().unwrap().len();
        let (from_a, _) = exchange(&mut a, &mut b, 3000).await;
        assert_eq!(
            &a_wrote.lock().unwrap()[before..],
            &from_a[..],
            "plaintext body"
        );
    }
}

/// Many handshakes with random padding, plus the extremes (0 and 512 for
/// every pad), over a transport delivering one byte per read on one side.
#[tokio::test]
async fn random_and_extreme_padding() {
    let mut cases: Vec<(Pads, Pads)> = (0..24)
        .map(|_| {
            let p = || Pads {
                key: random_len(MAX_PAD),
                crypto: random_len(MAX_PAD),
            };
            (p(), p())
        })
        .collect();
    for k in [0, MAX_PAD] {
        for c in [0, MAX_PAD] {
            cases.push((Pads { key: k, crypto: c }, Pads { key: k, crypto: c }));
        }
    }
    for (i, (pa, pb)) in cases.into_iter().enumerate() {
        let (a, b) = tokio::io::duplex(8 * 1024);
        let table = served();
        let ia = bt_handshake(IH, i as u8);
        let trickle = i % 3 == 0;
        let (ra, rb) = tokio::join!(
            async {
                if trickle {
                    initiate_with(
                        Trickle(a),
                        IH,
                        0x03,
                        &ia,
                        quick(),
                        pa,
                        DhKey::generate().unwrap(),
                    )
                    .await
                    .map(|s| Box::new(s) as Box<dyn Rw>)
                } else {
                    initiate_with(a, IH, 0x03, &ia, quick(), pa, DhKey::generate().unwrap())
                        .await
                        .map(|s| Box::new(s) as Box<dyn Rw>)
                }
            },
            async {
                let b: Box<dyn Rw> = if trickle {
                    Box::new(b)
                } else {
                    Box::new(Trickle(b))
                };
                accept_with(
                    b,
                    &[],
                    |h| table.find(h),
                    Policy::Prefer,
                    quick(),
                    pb,
                    DhKey::generate().unwrap(),
                )
                .await
            }
        );
        let mut a = ra.unwrap_or_else(|e| panic!("case {i} {pa:?} {pb:?}: {e}"));
        let acc = rb.unwrap_or_else(|e| panic!("case {i} {pa:?} {pb:?}: {e}"));
        assert_eq!(acc.initial_payload, ia);
        let mut b = acc.stream;
        exchange(&mut a, &mut b, 700).await;
    }
}

trait Rw: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Rw for T {}

/// A hand-driven initiator with every field under the test's control, as
/// a buggy or hostile peer would send them.
#[derive(Clone)]
struct Script {
    pad_a: Vec<u8>,
    skey: [u8; 20],
    vc: [u8; 8],
    provide: u32,
    pad_c_field: u16,
    pad_c: usize,
    ia_field: u16,
    ia: Vec<u8>,
    /// Bytes sent right after IA in the same write, RC4 with keyA
    /// continued (the start of the payload stream when RC4 is selected).
    after: Vec<u8>,
}

impl Script {
    fn honest() -> Script {
        let ia = bt_handshake(IH, 9).to_vec();
        Script {
            pad_a: random_vec(random_len(MAX_PAD)),
            skey: IH.0,
            vc: [0; 8],
            provide: 0x02,
            pad_c_field: 17,
            pad_c: 17,
            ia_field: ia.len() as u16,
            ia,
            after: Vec::new(),
        }
    }

    /// Plays messages 1 and 3 on `s`; returns A's ciphers (encrypt,
    /// decrypt) positioned after message 3.
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(&self, s: &mut S) -> (Rc4Drop, Rc4Drop) {
        let key = DhKey::generate().unwrap();
        let mut m = key.public_key().to_vec();
        m.extend_from_slice(&self.pad_a);
        s.write_all(&m).await.unwrap();
        let mut yb = [0u8; DH_LEN];
        s.read_exact(&mut yb).await.unwrap();
        let secret = key.shared_secret(&yb).unwrap();
        let (ka, kb) = stream_keys(&secret, &self.skey);
        let mut enc = Rc4Drop::new(&ka);
        let mut m = sync_hash(&secret).to_vec();
        m.extend_from_slice(&xor20(&skey_hash(&self.skey), &skey_mask(&secret)));
        let from = m.len();
        m.extend_from_slice(&self.vc);
        m.extend_from_slice(&self.provide.to_be_bytes());
        m.extend_from_slice(&self.pad_c_field.to_be_bytes());
        m.resize(m.len() + self.pad_c, 0);
        m.extend_from_slice(&self.ia_field.to_be_bytes());
        m.extend_from_slice(&self.ia);
        m.extend_from_slice(&self.after);
        enc.apply(&mut m[from..]);
        // ignore errors: the responder may have closed already
        let _ = s.write_all(&m).await;
        (enc, Rc4Drop::new(&kb))
    }
}

/// Runs `script` against our responder (policy `prefer`); returns the
/// responder's result.
async fn against_responder(script: Script) -> Result<Accepted<DuplexStream>, MseError> {
    let (mut a, b) = tokio::io::duplex(64 * 1024);
    let table = served();
    let (_, rb) = tokio::join!(
        async {
            let r = script.run(&mut a).await;
            (r, a)
        },
        accept(b, &[], |h| table.find(h), Policy::Prefer, quick())
    );
    rb
}

/// Bytes the initiator pipelines after IA reach the reader of the stream,
/// decrypted, even though the handshake read them along with IA.
#[tokio::test]
async fn pipelined_payload_after_ia() {
    let mut script = Script::honest();
    script.after = b"\x00\x00\x00\x01\x02 interested, and more".to_vec();
    let after = script.after.clone();
    let (mut a, b) = tokio::io::duplex(64 * 1024);
    let table = served();
    // no PadB, so message 4 follows Yb directly
    let pads = Pads { key: 0, crypto: 33 };
    let ((mut enc, mut dec), rb) = tokio::join!(
        script.run(&mut a),
        accept_with(
            b,
            &[],
            |h| table.find(h),
            Policy::Prefer,
            quick(),
            pads,
            DhKey::generate().unwrap()
        )
    );
    let acc = rb.unwrap();
    assert_eq!(acc.initial_payload, bt_handshake(IH, 9));
    let (mut b, ih) = acc.into_stream();
    assert_eq!(ih, IH);
    let mut got = vec![0; 68 + after.len()];
    b.read_exact(&mut got).await.unwrap();
    assert_eq!(&got[..68], &bt_handshake(IH, 9));
    assert_eq!(&got[68..], &after[..]);
    // message 4 then the responder's payload, decrypted with keyB
    b.write_all(b"reply").await.unwrap();
    b.flush().await.unwrap();
    let mut m4 = [0u8; 14];
    a.read_exact(&mut m4).await.unwrap();
    dec.apply(&mut m4);
    assert_eq!(&m4[..8], &[0; 8]);
    assert_eq!(u32::from_be_bytes(m4[8..12].try_into().unwrap()), 2);
    let pad_d = u16::from_be_bytes([m4[12], m4[13]]) as usize;
    let mut rest = vec![0u8; pad_d + 5];
    a.read_exact(&mut rest).await.unwrap();
    dec.apply(&mut rest);
    assert_eq!(&rest[pad_d..], b"reply");
    // and A's continued keystream decrypts at B
    let mut more = *b"later";
    enc.apply(&mut more);
    a.write_all(&more).await.unwrap();
    let mut got = [0u8; 5];
    b.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"later");
}

#[tokio::test]
async fn responder_refuses_bad_fields() {
    let mut s = Script::honest();
    s.vc = [0, 0, 0, 0, 0, 0, 0, 1];
    assert!(matches!(against_responder(s).await, Err(MseError::BadVc)));

    let mut s = Script::honest();
    s.skey = [0x77; 20];
    assert!(matches!(
        against_responder(s).await,
        Err(MseError::UnknownSkey)
    ));

    let mut s = Script::honest();
    s.pad_c_field = 513;
    s.pad_c = 513;
    assert!(matches!(
        against_responder(s).await,
        Err(MseError::PadTooLong {
            step: Step::PadC,
            len: 513
        })
    ));

    let mut s = Script::honest();
    s.ia_field = (MAX_IA_LEN + 1) as u16;
    assert!(matches!(
        against_responder(s).await,
        Err(MseError::IaTooLong(1025))
    ));

    // a length field promising more than is sent, then the peer stops
    let mut s = Script::honest();
    s.ia_field = 900;
    assert!(matches!(
        against_responder(s).await,
        Err(MseError::Timeout(Step::InitialPayload))
    ));

    let mut s = Script::honest();
    s.provide = 0xFFFF_FFFC; // no known method
    assert!(matches!(
        against_responder(s).await,
        Err(MseError::NoCommonCrypto { .. })
    ));

    // PadA of 513 bytes puts the sync hash one byte too far
    let mut s = Script::honest();
    s.pad_a = random_vec(513);
    assert!(matches!(
        against_responder(s).await,
        Err(MseError::SyncHashNotFound)
    ));

    // and 512 is still found; an IA of MAX_IA_LEN passes
    let mut s = Script::honest();
    s.pad_a = random_vec(512);
    s.ia = vec![0xEE; MAX_IA_LEN];
    s.ia_field = MAX_IA_LEN as u16;
    let acc = against_responder(s).await.unwrap();
    assert_eq!(acc.initial_payload, vec![0xEE; MAX_IA_LEN]);
}

/// A peer sending an endless stream of random bytes: the responder gives up
/// after 532 bytes past the key, the initiator after 520, whatever the
/// timeouts, and neither reads much more than that.
#[tokio::test]
async fn endless_garbage_is_bounded() {
    let generous = Timeouts {
        step: Duration::from_secs(30),
        total: Duration::from_secs(60),
    };
    let spew = |mut s: DuplexStream| async move {
        let mut sent = 0usize;
        let chunk = random_vec(4096);
        // stops when the other side closes (write fails)
        while s.write_all(&chunk).await.is_ok() {
            sent += chunk.len();
            if sent > 64 << 20 {
                panic!("kept reading garbage");
            }
        }
        sent
    };
    let t0 = Instant::now();
    let (a, b) = tokio::io::duplex(4096);
    let table = served();
    let (sent, rb) = tokio::join!(spew(a), async {
        accept(b, &[], |h| table.find(h), Policy::Prefer, generous)
            .await
            .map(|_| ())
    });
    assert!(
        matches!(rb, Err(MseError::SyncHashNotFound)),
        "responder: {rb:?}"
    );
    assert!(sent < 16 * 4096, "responder read {sent} bytes of garbage");

    let (a, b) = tokio::io::duplex(4096);
    let (sent, ra) = tokio::join!(spew(b), async {
        initiate(a, IH, Policy::Prefer, &[], generous)
            .await
            .map(|_| ())
    });
    assert!(matches!(ra, Err(MseError::VcNotFound)), "initiator: {ra:?}");
    assert!(sent < 16 * 4096, "initiator read {sent} bytes of garbage");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// Half a handshake, then silence; and a peer trickling one byte just
/// inside each step timeout: both end within the total timeout.
#[tokio::test]
async fn silence_and_trickle_time_out() {
    let t = quick();
    // responder: Ya then nothing
    let (mut a, b) = tokio::io::duplex(4096);
    let t0 = Instant::now();
    let table = served();
    let key = DhKey::generate().unwrap();
    a.write_all(key.public_key()).await.unwrap();
    let r = accept(b, &[], |h| table.find(h), Policy::Prefer, t).await;
    assert!(matches!(r, Err(MseError::Timeout(Step::SyncHash))), "{r:?}");
    assert!(t0.elapsed() < t.step * 2);
    drop(a);

    // initiator: a responder that sends nothing at all
    let (a, _b) = tokio::io::duplex(4096);
    let t0 = Instant::now();
    let r = initiate(a, IH, Policy::Prefer, &[], t).await;
    let e = r.unwrap_err();
    assert!(matches!(e, MseError::Timeout(Step::PublicKey)), "{e:?}");
    assert!(e.retry_plaintext());
    assert!(t0.elapsed() < t.step * 2);

    // responder: a byte every 200 ms (under the 300 ms step timeout)
    let (mut a, b) = tokio::io::duplex(4096);
    let t0 = Instant::now();
    let (_, r) = tokio::join!(
        async {
            for _ in 0..100 {
                if a.write_all(&[0x42]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
        async {
            let r = accept(b, &[], |h| table.find(h), Policy::Prefer, t).await;
            (r.map(|_| ()), t0.elapsed())
        }
    );
    assert!(
        matches!(r.0, Err(MseError::Timeout(Step::PublicKey))),
        "{:?}",
        r.0
    );
    assert!(r.1 >= t.total && r.1 < t.total + t.step, "{:?}", r.1);
}

#[tokio::test]
async fn initiator_refuses_bad_responses() {
    // a degenerate key (Yb = 1)
    let (a, mut b) = tokio::io::duplex(4096);
    let mut one = [0u8; DH_LEN];
    one[DH_LEN - 1] = 1;
    b.write_all(&one).await.unwrap();
    let r = initiate(a, IH, Policy::Prefer, &[], quick()).await;
    assert!(matches!(r, Err(MseError::BadPublicKey)), "{r:?}");

    // a plaintext handshake in reply
    let (a, mut b) = tokio::io::duplex(4096);
    b.write_all(&bt_handshake(IH, 3)).await.unwrap();
    b.write_all(&[0; 40]).await.unwrap();
    let e = initiate(a, IH, Policy::Prefer, &[], quick())
        .await
        .unwrap_err();
    assert!(matches!(e, MseError::PlaintextReply), "{e:?}");
    assert!(e.retry_plaintext());

    // crypto_select: plaintext when we required RC4, both bits, and a
    // PadD over 512
    for (policy, select, pad_d, want) in [
        (Policy::Require, 1u32, 0u16, "select"),
        (Policy::Prefer, 3, 0, "select"),
        (Policy::Prefer, 0, 0, "select"),
        (Policy::Prefer, 2, 513, "pad"),
    ] {
        let (a, mut b) = tokio::io::duplex(64 * 1024);
        let (ra, _) = tokio::join!(initiate(a, IH, policy, &[], quick()), async {
            // a responder that plays messages 2 and 4 by hand
            let mut ya = [0u8; DH_LEN];
            b.read_exact(&mut ya).await.unwrap();
            let key = DhKey::generate().unwrap();
            let secret = key.shared_secret(&ya).unwrap();
            b.write_all(key.public_key()).await.unwrap();
            let (_, kb) = stream_keys(&secret, &IH.0);
            let mut m = VC_ZERO.to_vec();
            m.extend_from_slice(&select.to_be_bytes());
            m.extend_from_slice(&pad_d.to_be_bytes());
            Rc4Drop::new(&kb).apply(&mut m);
            b.write_all(&m).await.unwrap();
            b
        });
        let e = ra.unwrap_err();
        match want {
            "select" => assert!(
                matches!(e, MseError::BadCryptoSelect { select: s, .. } if s == select),
                "{policy} {select}: {e:?}"
            ),
            _ => assert!(
                matches!(
                    e,
                    MseError::PadTooLong {
                        step: Step::PadD,
                        len: 513
                    }
                ),
                "{e:?}"
            ),
        }
        assert!(!e.retry_plaintext());
    }
}

const VC_ZERO: [u8; 8] = [0; 8];

#[tokio::test]
async fn sniff_tells_plaintext_from_mse() {
    assert_eq!(classify(b""), None);
    assert_eq!(classify(b"\x13Bit"), None);
    assert_eq!(classify(b"\x13Bix"), Some(Incoming::Mse));
    assert_eq!(classify(b"\x00"), Some(Incoming::Mse));
    assert_eq!(classify(PLAINTEXT_PREFIX), Some(Incoming::Plaintext));
    assert_eq!(classify(&bt_handshake(IH, 1)), Some(Incoming::Plaintext));

    // a plaintext handshake arriving a byte at a time passes through whole
    for policy in [Policy::Prefer, Policy::Off, Policy::Require] {
        let (mut a, b) = tokio::io::duplex(4096);
        let hs = bt_handshake(IH, 4);
        let table = served();
        let (_, r) = tokio::join!(
            async {
                for byte in hs {
                    // fails once a refusing responder has closed
                    if a.write_all(&[byte]).await.is_err() {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                a
            },
            accept_inbound(b, |h| table.find(h), policy, quick())
        );
        if policy == Policy::Require {
            assert!(matches!(r, Err(MseError::PlaintextRefused)), "{r:?}");
            continue;
        }
        let Ok(Inbound::Plaintext(mut s)) = r else {
            panic!("{policy}: {r:?}")
        };
        assert_eq!(s.crypto(), Crypto::Plaintext);
        let mut got = [0u8; 68];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, hs);
    }
}

/// The RC4 stream through a 61-byte duplex (writes and reads constantly
/// pending), split into halves, 2 MiB each way in odd-sized writes. No
/// padding: with padding, both sides' first messages would not fit such a
/// small pipe at once (TCP buffers hold several KiB).
#[tokio::test]
async fn split_stream_under_backpressure() {
    let (a, b) = tokio::io::duplex(61);
    let table = served();
    let no_pad = Pads { key: 0, crypto: 0 };
    let (ra, rb) = tokio::join!(
        initiate_with(
            a,
            IH,
            0x02,
            &[],
            quick(),
            no_pad,
            DhKey::generate().unwrap()
        ),
        accept_with(
            b,
            &[],
            |h| table.find(h),
            Policy::Require,
            quick(),
            no_pad,
            DhKey::generate().unwrap()
        )
    );
    let a = ra.unwrap();
    let b = rb.unwrap().stream;
    let (ar, aw) = a.into_split_with(tokio::io::split);
    let (br, bw) = b.into_split_with(tokio::io::split);
    let n = 2 << 20;
    let data_a = random_vec(n);
    let data_b = random_vec(n);
    let send = |mut w: MseWriter<_>, data: Vec<u8>| async move {
        let mut off = 0;
        let mut step = 1;
        while off < data.len() {
            let end = (off + step).min(data.len());
            w.write_all(&data[off..end]).await.unwrap();
            off = end;
            step = (step * 7 + 3) % 70_000 + 1;
        }
        w.flush().await.unwrap();
        w
    };
    let recv = |mut r: MseReader<_>| async move {
        let mut got = vec![0; n];
        r.read_exact(&mut got).await.unwrap();
        got
    };
    let (_, _, got_b, got_a) = tokio::join!(
        send(aw, data_a.clone()),
        send(bw, data_b.clone()),
        recv(br),
        recv(ar)
    );
    assert!(got_b == data_a, "A → B over the split RC4 stream");
    assert!(got_a == data_b, "B → A over the split RC4 stream");
}

#[test]
fn policy_table() {
    use Policy::*;
    assert_eq!(Prefer.crypto_provide(), Some(0x03));
    assert_eq!(Require.crypto_provide(), Some(0x02));
    assert_eq!(Off.crypto_provide(), None);
    assert_eq!(Prefer.select(0x03), Some(Crypto::Rc4));
    assert_eq!(Prefer.select(0x01), Some(Crypto::Plaintext));
    assert_eq!(Prefer.select(0x02), Some(Crypto::Rc4));
    assert_eq!(Prefer.select(0x04), None);
    assert_eq!(Require.select(0x01), None);
    assert_eq!(Require.select(0xFF), Some(Crypto::Rc4));
    assert_eq!(Off.select(0x03), None);
    assert!(Prefer.falls_back_to_plaintext() && !Require.falls_back_to_plaintext());
    assert!(!Require.accepts_plaintext() && Off.accepts_plaintext());
    assert!(!Off.accepts_mse() && !Off.dials_mse());
    for p in [Prefer, Require, Off] {
        assert_eq!(p.to_string().parse::<Policy>(), Ok(p));
    }
    assert!("enabled".parse::<Policy>().is_err());
    assert_eq!(Policy::default(), Prefer);
}

#[test]
fn skey_table() {
    let mut t = served();
    assert_eq!(t.len(), 4);
    assert_eq!(t.find(&skey_hash(&IH.0)), Some(IH));
    assert_eq!(t.find(&IH.0), None);
    t.remove(&IH);
    assert_eq!(t.find(&skey_hash(&IH.0)), None);
    assert!(!t.is_empty());
}
