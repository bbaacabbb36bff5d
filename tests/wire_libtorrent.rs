//! The peer wire codecs (`btfs::peer`) against a real, independent peer:
//! Debian's python3-libtorrent 2.0.8, seeding on 127.0.0.1 from
//! `mountpoint-tests/lt/lt_wire_seed.py`. Plus the connection error paths
//! against hand-written fake peers.
//!
//! Every test opens sockets, so it runs inside a network namespace of its
//! own (`support::in_netns`: root needed; without root a loud SKIP, or a
//! failure when `CI=true`). Inside, only loopback exists.
//!
//! Run: `cargo test --test wire_libtorrent -- --nocapture`

#[path = "../mountpoint-tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha1::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::timeout;

use btfs::bencode;
use btfs::peer::PeerConn;
use btfs::peer::extension::{self, ExtHandshake, UT_METADATA_ID};
use btfs::peer::ut_metadata::{self, MetadataAssembler, MetadataMsg};
use btfs::peer::wire::{BLOCK_SIZE, Bitfield, BlockRequest, Handshake, Message, WireError};
use btfs::{InfoHash, PeerId};
use support::{Child, PYTHON, in_netns, piece_sha1s, runtime};

/// The python3-libtorrent seeder (`lt/lt_wire_seed.py`) as a
/// [`support::Child`] (killed by PID on drop), and the torrent it seeds.
struct Seeder {
    child: Child,
    port: u16,
    info_hash: InfoHash,
    piece_length: u32,
    num_pieces: u32,
    total_size: u64,
    info_size: u64,
    piece_sha1: Vec<[u8; 20]>,
    /// The seeded files; removed after the process is gone.
    _dir: tempfile::TempDir,
}

impl Seeder {
    /// Starts the script and waits (up to 120 s) for its `seeding` event.
    fn start() -> Seeder {
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/mountpoint-tests/lt/lt_wire_seed.py"
        );
        let mut cmd = Command::new(PYTHON);
        cmd.arg(script).arg(dir.path());
        let mut child = Child::spawn("lt_wire_seed", cmd);
        let ev = child.wait_event_ok("seeding", Duration::from_secs(120));
        let text = ev.to_string();
        eprintln!("seeder: {}", &text[..text.len().min(200)]);
        let num = |key: &str| ev[key].as_u64().unwrap_or_else(|| panic!("{key} in {ev}"));
        let piece_sha1 = piece_sha1s(&ev, "piece_sha1");
        Seeder {
            port: num("port") as u16,
            info_hash: InfoHash::from_hex(ev["info_hash"].as_str().unwrap()).unwrap(),
            piece_length: num("piece_length") as u32,
            num_pieces: num("num_pieces") as u32,
            total_size: num("total_size"),
            info_size: num("info_size"),
            piece_sha1,
            child,
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn command(&mut self, cmd: &str) {
        self.child.send_line(cmd);
    }

    /// Asks the script whether the magnet torrent `ih` has its metadata.
    fn has_metadata(&mut self, ih: InfoHash) -> bool {
        self.command(&format!("has_metadata {}", ih.to_hex()));
        let ev = self.child.wait_event("has_metadata", STEP);
        ev["has_metadata"].as_bool().expect("has_metadata: bool")
    }

    fn piece_len(&self, index: u32) -> u32 {
        if index + 1 == self.num_pieces {
            (self.total_size - u64::from(index) * u64::from(self.piece_length)) as u32
        } else {
            self.piece_length
        }
    }
}

const STEP: Duration = Duration::from_secs(20);

/// Handshake, extension handshake, the whole info dictionary over
/// ut_metadata, interested/unchoke, then every piece block by block, each
/// checked against the SHA-1 computed by the seeder script.
#[test]
fn libtorrent_seed_serves_metadata_and_pieces() {
    if !in_netns("libtorrent_seed_serves_metadata_and_pieces") {
        return;
    }
    let seeder = Seeder::start();
    runtime().block_on(async {
        let our_id = PeerId::generate().0;
        let (mut conn, hs) = PeerConn::connect(seeder.addr(), seeder.info_hash, our_id, STEP)
            .await
            .expect("connect to libtorrent");
        assert_eq!(hs.info_hash, seeder.info_hash);
        assert!(hs.supports_extensions(), "libtorrent sets the BEP 10 bit");
        eprintln!("peer id {}", bencode::Printable(&hs.peer_id));

        // BEP 10: our extension handshake; read until theirs arrives
        let mut ours = ExtHandshake::ours();
        ours.reqq = Some(250);
        conn.send(&Message::Extended {
            id: extension::HANDSHAKE_ID,
            payload: Bytes::from(ours.encode()),
        })
        .await
        .unwrap();
        let mut bitfield = None;
        let mut choked = true;
        let theirs = loop {
            let msg = timeout(STEP, conn.read_message())
                .await
                .expect("extension handshake in time")
                .unwrap()
                .expect("connection open");
            match msg {
                Message::Extended { id: 0, payload } => {
                    break ExtHandshake::decode(&payload).unwrap();
                }
                other => note(other, &mut bitfield, &mut choked),
            }
        };
        eprintln!("their extension handshake: {theirs:?}");
        assert_eq!(theirs.metadata_size, Some(seeder.info_size));
        let their_ut_metadata = theirs.id_of(extension::UT_METADATA).expect("ut_metadata");

        // BEP 9: all metadata pieces, pipelined
        let mut asm = MetadataAssembler::new(seeder.info_hash, seeder.info_size).unwrap();
        assert!(
            asm.num_pieces() >= 3,
            "the test wants several metadata pieces"
        );
        for piece in asm.missing().collect::<Vec<_>>() {
            let req = MetadataMsg::Request { piece }.encode();
            conn.write_message(&Message::Extended {
                id: their_ut_metadata,
                payload: Bytes::from(req),
            })
            .await
            .unwrap();
        }
        conn.flush().await.unwrap();
        while !asm.is_complete() {
            let msg = timeout(STEP, conn.read_message())
                .await
                .expect("metadata in time")
                .unwrap()
                .expect("connection open");
            match msg {
                Message::Extended {
                    id: UT_METADATA_ID,
                    payload,
                } => match MetadataMsg::decode(&payload).unwrap() {
                    MetadataMsg::Data {
                        piece,
                        total_size,
                        data,
                    } => asm.add_data(piece, total_size, data).unwrap(),
                    other => panic!("unexpected ut_metadata message {other:?}"),
                },
                other => note(other, &mut bitfield, &mut choked),
            }
        }
        let raw_info = asm.finish().expect("metadata hashes to the info-hash");
        // a piece past the end is rejected (BEP 9 msg_type 2)
        let past_end = asm.num_pieces();
        conn.send(&Message::Extended {
            id: their_ut_metadata,
            payload: Bytes::from(MetadataMsg::Request { piece: past_end }.encode()),
        })
        .await
        .unwrap();
        loop {
            let msg = timeout(STEP, conn.read_message())
                .await
                .expect("reject in time")
                .unwrap()
                .expect("connection open");
            match msg {
                Message::Extended {
                    id: UT_METADATA_ID,
                    payload,
                } => {
                    assert_eq!(
                        MetadataMsg::decode(&payload).unwrap(),
                        MetadataMsg::Reject { piece: past_end }
                    );
                    break;
                }
                other => note(other, &mut bitfield, &mut choked),
            }
        }
        assert_eq!(InfoHash::of_info(&raw_info), seeder.info_hash);
        let info = bencode::decode(&raw_info, bencode::Limits::default()).unwrap();
        assert_eq!(
            info.get(b"piece length").unwrap().as_int(),
            Some(i64::from(seeder.piece_length))
        );
        let pieces = info.get(b"pieces").unwrap().as_bytes().unwrap();
        assert_eq!(pieces.len(), 20 * seeder.num_pieces as usize);
        for (i, h) in seeder.piece_sha1.iter().enumerate() {
            assert_eq!(
                &pieces[20 * i..20 * i + 20],
                h,
                "piece {i} hash in the info dict"
            );
        }
        eprintln!(
            "metadata: {} bytes in {} pieces, verified",
            raw_info.len(),
            asm.num_pieces()
        );

        // BEP 3: interested → unchoke, from two tasks over the split halves
        let (mut reader, mut writer) = conn.split();
        writer.send(&Message::Interested).await.unwrap();
        while choked {
            let msg = timeout(STEP, reader.read_message())
                .await
                .expect("unchoke in time")
                .unwrap()
                .expect("connection open");
            note(msg, &mut bitfield, &mut choked);
        }
        let bits = bitfield.expect("a seed sends its bitfield");
        let bits = Bitfield::from_bytes(&bits, seeder.num_pieces).unwrap();
        assert!(bits.all(), "libtorrent is a seed: {bits:?}");

        let mut requests = Vec::new();
        for index in 0..seeder.num_pieces {
            let len = seeder.piece_len(index);
            let mut begin = 0;
            while begin < len {
                let length = BLOCK_SIZE.min(len - begin);
                requests.push(BlockRequest {
                    index,
                    begin,
                    length,
                });
                begin += length;
            }
        }
        let n_blocks = requests.len();
        let writer_task = tokio::spawn(async move {
            for r in requests {
                writer.write_message(&Message::Request(r)).await?;
            }
            writer.flush().await?;
            Ok::<_, WireError>(writer)
        });
        let mut pieces: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let mut got = 0;
        while got < n_blocks {
            let msg = timeout(STEP, reader.read_message())
                .await
                .expect("blocks in time")
                .unwrap()
                .expect("connection open");
            match msg {
                Message::Piece { index, begin, data } => {
                    assert!(index < seeder.num_pieces);
                    let buf = pieces
                        .entry(index)
                        .or_insert_with(|| vec![0; seeder.piece_len(index) as usize]);
                    buf[begin as usize..begin as usize + data.len()].copy_from_slice(&data);
                    got += 1;
                }
                Message::Choke => panic!("choked while downloading"),
                _ => {}
            }
        }
        let mut writer = writer_task.await.unwrap().unwrap();
        for (index, data) in &pieces {
            let h: [u8; 20] = sha1::Sha1::digest(data).into();
            assert_eq!(h, seeder.piece_sha1[*index as usize], "piece {index} SHA-1");
        }
        assert_eq!(pieces.len() as u32, seeder.num_pieces);
        eprintln!(
            "downloaded and verified {} pieces ({} blocks, {} bytes) from libtorrent",
            pieces.len(),
            n_blocks,
            seeder.total_size
        );
        writer.shutdown().await.unwrap();
        // libtorrent closes its side too: a clean end of stream
        loop {
            match timeout(STEP, reader.read_message())
                .await
                .expect("close in time")
            {
                Ok(None) => break,
                Ok(Some(_)) => continue,
                Err(e) => panic!("expected a clean close, got {e}"),
            }
        }
    });
}

/// Bookkeeping for messages that may arrive at any point.
fn note(msg: Message, bitfield: &mut Option<Bytes>, choked: &mut bool) {
    match msg {
        Message::Bitfield(b) => *bitfield = Some(b),
        Message::Unchoke => *choked = false,
        Message::Choke => *choked = true,
        Message::KeepAlive
        | Message::Port(_)
        | Message::Have(_)
        | Message::Extended { .. }
        | Message::Unknown { .. } => {}
        other => panic!("unexpected message from a seed: {other:?}"),
    }
}

/// libtorrent dials us (`connect_peer`): our `accept` reads its handshake,
/// answers, and the extension handshakes are exchanged. libtorrent's default
/// settings are kept (it may try uTP and an encrypted handshake first; those
/// attempts are refused and it falls back to plaintext TCP).
#[test]
fn libtorrent_dials_us_and_we_accept() {
    if !in_netns("libtorrent_dials_us_and_we_accept") {
        return;
    }
    let mut seeder = Seeder::start();
    let rt = runtime();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let ih = seeder.info_hash;
    let started = Instant::now();
    seeder.command(&format!("connect {port}"));
    let (mut conn, hs) = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last_connect = Instant::now();
        let mut refused = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "libtorrent never completed a plaintext handshake"
            );
            let Ok(accepted) = timeout(Duration::from_secs(3), listener.accept()).await else {
                if last_connect.elapsed() > Duration::from_secs(5) {
                    seeder.command(&format!("connect {port}"));
                    last_connect = Instant::now();
                }
                continue;
            };
            let (stream, from) = accepted.unwrap();
            match PeerConn::accept(stream, |h| *h == ih, PeerId::generate().0, STEP).await {
                Ok(x) => break x,
                Err(e) => {
                    refused += 1;
                    eprintln!("refused a connection from {from}: {e} ({refused} so far)");
                }
            }
        }
    });
    eprintln!("libtorrent connected after {:?}", started.elapsed());
    assert_eq!(hs.info_hash, ih);
    assert!(hs.supports_extensions());
    rt.block_on(async {
        conn.send(&Message::Extended {
            id: 0,
            payload: Bytes::from(ExtHandshake::ours().encode()),
        })
        .await
        .unwrap();
        let mut bitfield = None;
        let mut choked = true;
        let mut theirs = None;
        while theirs.is_none() || bitfield.is_none() {
            let msg = timeout(STEP, conn.read_message())
                .await
                .expect("messages in time")
                .unwrap()
                .expect("connection open");
            match msg {
                Message::Extended { id: 0, payload } => {
                    theirs = Some(ExtHandshake::decode(&payload).unwrap())
                }
                other => note(other, &mut bitfield, &mut choked),
            }
        }
        let theirs = theirs.unwrap();
        assert!(theirs.id_of(extension::UT_METADATA).is_some());
        let bits = Bitfield::from_bytes(&bitfield.unwrap(), seeder.num_pieces).unwrap();
        assert!(bits.all());
    });
}

/// The serving side of BEP 9: libtorrent knows only an info-hash, dials us,
/// and fetches the info dictionary from our `data_response` answers; it
/// must then report having the metadata (it checked the SHA-1 itself).
#[test]
fn libtorrent_fetches_metadata_from_us() {
    if !in_netns("libtorrent_fetches_metadata_from_us") {
        return;
    }
    let mut seeder = Seeder::start();
    // a single-file info dictionary of about 40 KB (3 metadata pieces)
    let num_pieces: i64 = 2000;
    let mut piece_hashes = vec![0u8; 20 * num_pieces as usize];
    getrandom::fill(&mut piece_hashes).unwrap();
    let raw_info = bencode::Owned::dict()
        .insert("length", num_pieces * 16384 - 1000)
        .insert("name", "served-by-btfs.bin")
        .insert("piece length", 16384)
        .insert("pieces", piece_hashes)
        .encode();
    let ih = InfoHash::of_info(&raw_info);
    let rt = runtime();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    let magnet = format!("magnet {} {port}", ih.to_hex());
    seeder.command(&magnet);
    let started = Instant::now();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last_connect = Instant::now();
        let mut conn = loop {
            assert!(Instant::now() < deadline, "libtorrent never connected");
            let Ok(accepted) = timeout(Duration::from_secs(3), listener.accept()).await else {
                if last_connect.elapsed() > Duration::from_secs(5) {
                    seeder.command(&magnet);
                    last_connect = Instant::now();
                }
                continue;
            };
            let (stream, from) = accepted.unwrap();
            match PeerConn::accept(stream, |h| *h == ih, PeerId::generate().0, STEP).await {
                Ok((conn, hs)) => {
                    assert!(hs.supports_extensions());
                    break conn;
                }
                Err(e) => eprintln!("refused a connection from {from}: {e}"),
            }
        };
        eprintln!("libtorrent connected after {:?}", started.elapsed());
        let mut ours = ExtHandshake::ours();
        ours.metadata_size = Some(raw_info.len() as u64);
        conn.send(&Message::Extended {
            id: 0,
            payload: Bytes::from(ours.encode()),
        })
        .await
        .unwrap();
        let mut their_ut_metadata = None;
        let mut served = std::collections::BTreeSet::new();
        let total = raw_info.len().div_ceil(16384) as u32;
        loop {
            assert!(
                Instant::now() < deadline,
                "libtorrent never got the metadata"
            );
            if served.len() as u32 == total && seeder.has_metadata(ih) {
                break;
            }
            let msg = match timeout(Duration::from_millis(200), conn.read_message()).await {
                Err(_) => continue,
                Ok(msg) => msg.unwrap().expect("connection open"),
            };
            match msg {
                Message::Extended { id: 0, payload } => {
                    let theirs = ExtHandshake::decode(&payload).unwrap();
                    their_ut_metadata = theirs.id_of(extension::UT_METADATA);
                }
                Message::Extended {
                    id: UT_METADATA_ID,
                    payload,
                } => {
                    let MetadataMsg::Request { piece } = MetadataMsg::decode(&payload).unwrap()
                    else {
                        panic!("libtorrent sent us something else than a request");
                    };
                    let answer = ut_metadata::data_response(&raw_info, piece)
                        .unwrap_or(MetadataMsg::Reject { piece });
                    let id = their_ut_metadata.expect("their handshake came first");
                    conn.send(&Message::Extended {
                        id,
                        payload: Bytes::from(answer.encode()),
                    })
                    .await
                    .unwrap();
                    served.insert(piece);
                }
                _ => {}
            }
        }
        eprintln!(
            "libtorrent has the metadata we served ({} bytes, {} pieces) after {:?}",
            raw_info.len(),
            total,
            started.elapsed()
        );
    });
}

/// Connection-level error paths against hand-written fake peers: a peer
/// answering for another torrent, a silent peer, a handshake for a torrent
/// we don't serve, a non-BitTorrent stream, and frames that are too long,
/// malformed or cut off. Each error closes only that one connection.
#[test]
fn connection_errors() {
    if !in_netns("connection_errors") {
        return;
    }
    runtime().block_on(async {
        let ih = InfoHash([1; 20]);
        let other = InfoHash([2; 20]);
        let id = PeerId::generate().0;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        // 1. a peer that answers with another info-hash
        let server = tokio::spawn({
            async move {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 68];
                s.read_exact(&mut buf).await.unwrap();
                s.write_all(&Handshake::new(other, [9; 20]).encode())
                    .await
                    .unwrap();
                // 2. a peer that never answers
                let (silent, _) = listener.accept().await.unwrap();
                (listener, silent)
            }
        });
        match PeerConn::connect(addr, ih, id, STEP).await {
            Err(WireError::InfoHashMismatch { expected, got }) => {
                assert_eq!((expected, got), (ih, other))
            }
            other => panic!("{other:?}"),
        }
        let t = Instant::now();
        assert!(matches!(
            PeerConn::connect(addr, ih, id, Duration::from_millis(300)).await,
            Err(WireError::Timeout(_))
        ));
        assert!(t.elapsed() < Duration::from_secs(5));
        let (listener, _silent) = server.await.unwrap();

        // 3. accept: unknown info-hash → refused, and we send nothing back
        let (mut c, s) = pair(&listener, addr).await;
        c.write_all(&Handshake::new(other, [9; 20]).encode())
            .await
            .unwrap();
        match PeerConn::accept(s, |h| *h == ih, id, STEP).await {
            Err(WireError::UnknownInfoHash(h)) => assert_eq!(h, other),
            other => panic!("{other:?}"),
        }
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "nothing sent for an unknown info-hash");

        // 4. accept: not BitTorrent (e.g. an MSE key exchange)
        let (mut c, s) = pair(&listener, addr).await;
        c.write_all(&[0x5a; 96]).await.unwrap();
        assert!(matches!(
            PeerConn::accept(s, |_| true, id, STEP).await,
            Err(WireError::BadHandshake)
        ));

        // 5. accept: closed in the middle of the handshake
        let (mut c, s) = pair(&listener, addr).await;
        c.write_all(&Handshake::new(ih, [9; 20]).encode()[..30])
            .await
            .unwrap();
        drop(c);
        assert!(matches!(
            PeerConn::accept(s, |_| true, id, STEP).await,
            Err(WireError::UnexpectedEof(_))
        ));

        // 6. a good handshake whose peer id arrives after ours, then frames
        //    sent in the same segment as the handshake; then a too-long frame
        let (mut c, s) = pair(&listener, addr).await;
        let hs = Handshake::new(ih, [7; 20]).encode();
        c.write_all(&hs[..48]).await.unwrap();
        let acc = tokio::spawn(PeerConn::accept(s, move |h| *h == ih, id, STEP));
        let mut answer = [0u8; 68];
        c.read_exact(&mut answer).await.unwrap();
        let ours = Handshake::decode(&answer).unwrap();
        assert_eq!((ours.info_hash, ours.peer_id), (ih, id));
        let mut tail = hs[48..].to_vec();
        tail.extend_from_slice(&Message::Have(3).encode());
        tail.extend_from_slice(&Message::Unchoke.encode());
        tail.extend_from_slice(&(BLOCK_SIZE + 14).to_be_bytes());
        c.write_all(&tail).await.unwrap();
        let (mut conn, theirs) = acc.await.unwrap().unwrap();
        assert_eq!(theirs.peer_id, [7; 20]);
        conn.set_max_message_len(BLOCK_SIZE + 13);
        assert_eq!(conn.read_message().await.unwrap(), Some(Message::Have(3)));
        assert_eq!(conn.read_message().await.unwrap(), Some(Message::Unchoke));
        assert!(matches!(
            conn.read_message().await,
            Err(WireError::TooLong { len, .. }) if len == BLOCK_SIZE + 14
        ));

        // 7. a malformed fixed-size message, a frame cut off by EOF, a clean EOF
        for (bytes, want) in [
            (vec![0, 0, 0, 3, 4, 0, 0], "malformed"),
            (vec![0, 0, 0, 13, 6, 0, 0], "eof"),
            (vec![0, 0, 0, 1, 1], "clean"),
        ] {
            let (mut c, s) = pair(&listener, addr).await;
            c.write_all(&Handshake::new(ih, [7; 20]).encode())
                .await
                .unwrap();
            let (mut conn, _) = PeerConn::accept(s, |_| true, id, STEP).await.unwrap();
            // read our handshake first: closing with unread data would reset
            let mut answer = [0u8; 68];
            c.read_exact(&mut answer).await.unwrap();
            c.write_all(&bytes).await.unwrap();
            drop(c);
            let first = conn.read_message().await;
            match want {
                "malformed" => assert!(matches!(
                    first,
                    Err(WireError::Malformed {
                        message: "have",
                        ..
                    })
                )),
                "eof" => assert!(
                    matches!(first, Err(WireError::UnexpectedEof(_))),
                    "{first:?}"
                ),
                _ => {
                    assert_eq!(first.unwrap(), Some(Message::Unchoke));
                    assert_eq!(conn.read_message().await.unwrap(), None);
                }
            }
        }
    });
}

/// A connected (client, server-side) stream pair through `listener`.
async fn pair(
    listener: &TcpListener,
    addr: SocketAddr,
) -> (tokio::net::TcpStream, tokio::net::TcpStream) {
    let (c, s) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
    (c.unwrap(), s.unwrap().0)
}
