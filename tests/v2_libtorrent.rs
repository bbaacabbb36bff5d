//! BEP 52 against a real, independent implementation: Debian's
//! python3-libtorrent 2.0.8 (`mountpoint-tests/lt/lt_v2_peer.py`).
//!
//! - [`builder_agrees_with_libtorrent`]: torrents made by
//!   [`btfs::metainfo::build_v2`] (v2-only and hybrid) load in libtorrent
//!   with the same v1 and v2 info-hashes, file roots and layout, and
//!   libtorrent's own `create_torrent` of the same files writes the same
//!   info dictionary, byte for byte. No socket.
//! - [`libtorrent_answers_our_hash_requests`]: libtorrent seeds a v2-only
//!   torrent; we connect with the truncated v2 info-hash and ask for the
//!   piece layer, a piece's block hashes and single-block proofs, and check
//!   every answer with [`btfs::merkle::verify_hashes`]; out-of-range
//!   requests get `hash reject`; blocks are checked one by one.
//! - [`libtorrent_downloads_with_our_hash_answers`]: libtorrent gets only the
//!   info dictionary (no piece layers) and downloads from a scripted seed
//!   that answers its hash requests with [`btfs::merkle::Layers::answer`].
//!
//! The socket tests run inside a network namespace of their own
//! (`unshare --net --mount`, loopback only).
//!
//! Run: `cargo test --test v2_libtorrent -- --nocapture`

#[path = "dht_common/mod.rs"]
mod dht_common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::time::timeout;

use btfs::PeerId;
use btfs::merkle::{self, Hash, HashRequest, Layers, TreeShape};
use btfs::metainfo::{BuiltV2, Flavor, Info, build_v2};
use btfs::peer::PeerConn;
use btfs::peer::wire::{
    BLOCK_SIZE, Bitfield, BlockRequest, HashMessage, MAX_HASHES_MESSAGE_LEN, Message,
};

use dht_common::enter_netns;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/mountpoint-tests/lt/lt_v2_peer.py"
);
const STEP: Duration = Duration::from_secs(20);

/// `(path components, length)` of each file of a torrent to build.
type Files = Vec<(Vec<String>, u64)>;

/// Deterministic, block-unique contents of input file `i`.
fn content(i: usize, len: u64) -> Vec<u8> {
    (0..len)
        .map(|k| ((k * 7 + i as u64 * 13 + k / 977 + k / 16384 * 5) % 256) as u8)
        .collect()
}

/// Writes `files` under `dir/data/root/` and builds the torrent from the
/// disk.
fn make(dir: &Path, files: &[(Vec<String>, u64)], pl: u64, flavor: Flavor) -> BuiltV2 {
    let root = dir.join("data").join("root");
    for (i, (path, len)) in files.iter().enumerate() {
        let p = if path.is_empty() {
            root.clone()
        } else {
            path.iter().fold(root.clone(), |p, c| p.join(c))
        };
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content(i, *len)).unwrap();
    }
    let mut read = |file: usize, offset: u64, buf: &mut [u8]| {
        let (path, _) = &files[file];
        let p = path.iter().fold(root.clone(), |p, c| p.join(c));
        use std::os::unix::fs::FileExt;
        std::fs::File::open(p)?.read_exact_at(buf, offset)
    };
    build_v2("root", files, pl, flavor, &mut read).unwrap()
}

fn p(s: &str) -> Vec<String> {
    s.split('/').map(str::to_string).collect()
}

fn run_check(dir: &Path, built: &BuiltV2, flavor: Flavor) -> Value {
    let torrent = dir.join("ours.torrent");
    std::fs::write(&torrent, built.torrent_file()).unwrap();
    let out = Command::new("/usr/bin/python3")
        .arg(SCRIPT)
        .arg("check")
        .arg(&torrent)
        .arg(dir.join("data"))
        .arg(built.piece_length.to_string())
        .arg(if flavor == Flavor::V2Only {
            "v2"
        } else {
            "hybrid"
        })
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "lt_v2_peer.py check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

#[test]
fn builder_agrees_with_libtorrent() {
    let sets: Vec<(Files, u64)> = vec![
        (
            vec![
                (p("a"), 100),
                (p("b"), 0),
                (p("d"), 5),
                (p("sub/c"), 20480),
                (p("sub/e.bin"), 300_000),
                (p("z"), 32768),
            ],
            16384,
        ),
        (
            vec![(p("x/one"), 1_000_003), (p("x/two"), 65536), (p("y"), 1)],
            65536,
        ),
        (vec![(vec![], 1_000_003)], 65536),
        (
            vec![
                (p("big.bin"), 1_300_000),
                (p("mid.bin"), 150_000),
                (p("small.txt"), 1000),
            ],
            65536,
        ),
        (vec![(vec![], 16384)], 16384),
    ];
    for (files, pl) in sets {
        for flavor in [Flavor::V2Only, Flavor::Hybrid] {
            let dir = tempfile::tempdir().unwrap();
            let built = make(dir.path(), &files, pl, flavor);
            let v = run_check(dir.path(), &built, flavor);
            let label = format!("{flavor:?} {files:?} {pl}");
            let ours = &v["ours"];
            assert_eq!(
                ours["v2"].as_str(),
                Some(built.info_hash_v2.to_hex().as_str()),
                "{label}"
            );
            assert_eq!(
                ours["v1"].as_str().map(str::to_string),
                built.info_hash_v1.map(|h| h.to_hex()),
                "{label}"
            );
            assert_eq!(
                ours["num_pieces"],
                u64::from(built.info.num_pieces()),
                "{label}"
            );
            // libtorrent's own torrent of the same files: the same bytes
            assert_eq!(
                v["theirs_info"].as_str().unwrap(),
                hex::encode(&built.info_raw),
                "{label}: libtorrent's create_torrent differs"
            );
            // ... and the same .torrent (info and piece layers)
            assert_eq!(
                v["theirs_torrent"].as_str().unwrap(),
                hex::encode(built.torrent_file()),
                "{label}: libtorrent's piece layers differ"
            );
            // roots and offsets of every real file, as libtorrent reads ours
            let lt_files: Vec<&Value> = ours["files"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["pad"] == false)
                .collect();
            let our_files: Vec<_> = built.info.files.iter().filter(|f| !f.pad).collect();
            assert_eq!(lt_files.len(), our_files.len(), "{label}");
            for (l, o) in lt_files.iter().zip(&our_files) {
                let root = o.pieces_root.map(hex::encode).unwrap_or("0".repeat(64));
                assert_eq!(l["root"].as_str().unwrap(), root, "{label} {:?}", o.path);
                assert_eq!(l["size"], o.length, "{label}");
                if o.length > 0 {
                    assert_eq!(l["offset"], o.offset, "{label} {:?}", o.path);
                }
                assert_eq!(l["path"].as_str().unwrap(), o.path.join("/"), "{label}");
            }
            let theirs: Vec<&str> = v["theirs_files"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["pad"] == false)
                .map(|f| f["root"].as_str().unwrap())
                .collect();
            let roots: Vec<String> = lt_files
                .iter()
                .map(|f| f["root"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(theirs, roots, "{label}");
            eprintln!("{label}: same info dictionary and roots as libtorrent");
        }
    }
}

/// The python3-libtorrent process; stdin closed (and killed by pid if it
/// lingers) on drop.
struct Lt {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Lt {
    fn start(args: &[&str]) -> Lt {
        let mut child = Command::new("/usr/bin/python3")
            .arg(SCRIPT)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Lt {
            child,
            stdin,
            stdout,
        }
    }

    fn line(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"))
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        drop(self.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test torrent for the socket tests: one file of 80 blocks in 64 KiB
/// pieces (a 20-hash piece layer, 7 layers), one of 3 pieces, one small.
fn socket_torrent(dir: &Path) -> BuiltV2 {
    let files = vec![
        (p("big.bin"), 1_300_000),
        (p("mid.bin"), 150_000),
        (p("small.txt"), 1000),
    ];
    make(dir, &files, 65536, Flavor::V2Only)
}

async fn next_message(conn: &mut PeerConn) -> Message {
    timeout(STEP, conn.read_message())
        .await
        .expect("a message in time")
        .expect("a valid message")
        .expect("connection open")
}

/// Sends a hash request and returns libtorrent's answer (other messages
/// are skipped; an unchoke among them is noted in `unchoked`).
async fn ask(conn: &mut PeerConn, req: HashRequest, unchoked: &mut bool) -> HashMessage {
    conn.send(&HashMessage::Request(req).to_message())
        .await
        .unwrap();
    loop {
        let msg = next_message(conn).await;
        match HashMessage::from_message(&msg) {
            Some(Ok(m)) if *m.request() == req => return m,
            Some(other) => panic!("unexpected hash message {other:?}"),
            None => *unchoked |= msg == Message::Unchoke,
        }
    }
}

#[test]
fn libtorrent_answers_our_hash_requests() {
    if !enter_netns("libtorrent_answers_our_hash_requests") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let built = socket_torrent(dir.path());
    let torrent = dir.path().join("t.torrent");
    std::fs::write(&torrent, built.torrent_file()).unwrap();
    let data_dir = dir.path().join("data");
    let mut lt = Lt::start(&[
        "seed",
        torrent.to_str().unwrap(),
        data_dir.to_str().unwrap(),
    ]);
    let ready = lt.line();
    let port = ready["port"]
        .as_u64()
        .unwrap_or_else(|| panic!("seed: {ready}")) as u16;
    let info = built.info.clone();
    let big = &info.files[0];
    assert_eq!(big.path, ["root", "big.bin"]);
    let root = big.pieces_root.unwrap();
    let shape = info.file_tree(0).unwrap();
    assert_eq!(
        (shape.num_pieces(), shape.root_layer(), shape.piece_layer()),
        (20, 7, 2)
    );
    let data = content(0, 1_300_000);

    dht_common::runtime().block_on(async {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let (mut conn, hs) = PeerConn::connect(addr, info.info_hash, PeerId::generate().0, STEP)
            .await
            .expect("connect to libtorrent with the truncated v2 info-hash");
        assert_eq!(hs.info_hash, built.info_hash_v2.truncated());
        conn.set_max_message_len(MAX_HASHES_MESSAGE_LEN);
        conn.send(&Message::Interested).await.unwrap();
        let mut unchoked = false;

        // 1. the whole piece layer, proven up to the root
        let req = HashRequest {
            pieces_root: root,
            base_layer: 2,
            index: 0,
            length: 32,
            proof_layers: 4,
        };
        let HashMessage::Hashes { hashes, .. } = ask(&mut conn, req, &mut unchoked).await else {
            panic!("piece layer rejected")
        };
        let v = merkle::verify_hashes(&shape, &root, &req, &hashes, |_, _| None).unwrap();
        assert_eq!(v.nodes, built.piece_layers.get(&root).unwrap());
        let layers = Layers::build(shape, 2, v.nodes.clone()).unwrap();
        assert_eq!(layers.root(), root);
        eprintln!("piece layer: 20 hashes + 12 pads, verified to the root");

        // 2. the 4 block hashes of piece 3, anchored at its verified hash
        let req = HashRequest {
            pieces_root: root,
            base_layer: 0,
            index: 12,
            length: 4,
            proof_layers: 1,
        };
        let HashMessage::Hashes { hashes, .. } = ask(&mut conn, req, &mut unchoked).await else {
            panic!("block hashes rejected")
        };
        let leaves = merkle::verify_hashes(&shape, &root, &req, &hashes, |l, i| layers.node(l, i))
            .unwrap()
            .nodes;
        assert_eq!(leaves, merkle::block_hashes(&data[12 * 16384..16 * 16384]));

        // 3. two blocks with a proof all the way up (6 uncles)
        let req = HashRequest {
            pieces_root: root,
            base_layer: 0,
            index: 78,
            length: 2,
            proof_layers: 6,
        };
        let HashMessage::Hashes { hashes, .. } = ask(&mut conn, req, &mut unchoked).await else {
            panic!("proof rejected")
        };
        assert_eq!(hashes.len(), 2 + 6);
        let v = merkle::verify_hashes(&shape, &root, &req, &hashes, |_, _| None).unwrap();
        // block 79 is the file's short last block; 78 and 79 are real
        assert_eq!(v.nodes.len(), 2);
        assert_eq!(v.nodes[1], merkle::block_hash(&data[79 * 16384..]));

        // 3b. one node (length 1): libtorrent 2.0.8 answers with one uncle
        // too few (its sender leaves out the node's own sibling, which its
        // receiver expects), so the answer cannot be verified and our
        // decoder refuses it. Requesters must ask for pairs (BEP 52: length
        // at least 2).
        let req = HashRequest {
            pieces_root: root,
            base_layer: 0,
            index: 13,
            length: 1,
            proof_layers: 6,
        };
        conn.send(&HashMessage::Request(req).to_message())
            .await
            .unwrap();
        loop {
            let msg = next_message(&mut conn).await;
            if let Message::Unknown { id: 22, payload } = &msg {
                assert_eq!(payload.len(), 48 + 7 * 32, "libtorrent's length-1 answer");
                let e = HashMessage::from_message(&msg).unwrap().unwrap_err();
                assert!(
                    e.to_string()
                        .contains("7 hashes where length 1 and 6 proof layers need 8")
                );
                break;
            }
            unchoked |= msg == Message::Unchoke;
        }

        // 4. out of range, base layer at the root, too long: hash reject
        for bad in [
            HashRequest {
                index: 128,
                length: 2,
                base_layer: 0,
                proof_layers: 0,
                pieces_root: root,
            },
            HashRequest {
                index: 0,
                length: 1,
                base_layer: 7,
                proof_layers: 0,
                pieces_root: root,
            },
            HashRequest {
                index: 0,
                length: 2,
                base_layer: 0,
                proof_layers: 7,
                pieces_root: root,
            },
            HashRequest {
                index: 0,
                length: 2,
                base_layer: 0,
                proof_layers: 0,
                pieces_root: [9; 32],
            },
        ] {
            match ask(&mut conn, bad, &mut unchoked).await {
                HashMessage::Reject(r) => assert_eq!(r, bad),
                other => panic!("{bad:?} answered with {other:?}"),
            }
            // and our own check refuses the same ranges
            if bad.pieces_root == root {
                assert!(merkle::check_request(&shape, &bad).is_err(), "{bad:?}");
            }
        }
        eprintln!("out-of-range requests: hash reject, as our check_request says");

        // 5. piece 3, block by block, each block checked alone against the
        // piece hash with the leaves fetched in step 2
        while !unchoked {
            unchoked = matches!(next_message(&mut conn).await, Message::Unchoke);
        }
        for b in 0..4u32 {
            conn.send(&Message::Request(BlockRequest {
                index: 3,
                begin: b * BLOCK_SIZE,
                length: BLOCK_SIZE,
            }))
            .await
            .unwrap();
        }
        let piece_hash = layers.node(2, 3).unwrap();
        let mut got = 0;
        while got < 4 {
            if let Message::Piece { index, begin, data } = next_message(&mut conn).await {
                assert_eq!(index, 3);
                let k = (begin / BLOCK_SIZE) as usize;
                let block = 12 + k as u64;
                let proof = [
                    leaves[k ^ 1],
                    merkle::hash_pair(&leaves[(k ^ 2) & !1], &leaves[(k ^ 2) | 1]),
                ];
                merkle::verify_block(&shape, block, &data, &proof, &piece_hash).unwrap();
                let mut bad = data.to_vec();
                bad[100] ^= 1;
                assert!(merkle::verify_block(&shape, block, &bad, &proof, &piece_hash).is_err());
                got += 1;
            }
        }
        eprintln!("piece 3: 4 blocks, each verified alone against the piece hash");
    });
}

/// What the scripted seed saw and answered.
#[derive(Default)]
struct SeedLog {
    requests: Vec<HashRequest>,
    rejected: usize,
    blocks: usize,
    /// Block requests reaching past a file's end into the alignment gap.
    into_gap: usize,
}

#[test]
fn libtorrent_downloads_with_our_hash_answers() {
    if !enter_netns("libtorrent_downloads_with_our_hash_answers") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    download_from_us(socket_torrent(&dir.path().join("multi")));
    // one file: no pad in our layout, but 2.0.8 pads its last piece
    let one = make(
        &dir.path().join("single"),
        &[(vec![], 1_000_000)],
        65536,
        Flavor::V2Only,
    );
    download_from_us(one);
}

/// libtorrent downloads `built` (info dictionary only) from the scripted
/// seed; every byte it wrote must be the files'.
fn download_from_us(built: BuiltV2) {
    let info = Arc::new(built.info.clone());
    // what the seed holds: each file's bytes and its verified layers
    let mut by_root: HashMap<Hash, (usize, Layers)> = HashMap::new();
    let mut bytes: HashMap<usize, Vec<u8>> = HashMap::new();
    for (i, f) in info.files.iter().enumerate() {
        if let Some(root) = f.pieces_root {
            let layers = built.piece_layers.file_layers(&info, i).expect("layers");
            by_root.insert(root, (i, layers));
            let input = built
                .files
                .iter()
                .find(|b| b.pieces_root == Some(root))
                .unwrap();
            bytes.insert(i, content(input.input, input.length));
        }
    }
    let log = Arc::new(Mutex::new(SeedLog::default()));
    let leech_dir = tempfile::tempdir().unwrap();
    let info_file = leech_dir.path().join("info");
    std::fs::write(&info_file, &built.info_raw).unwrap();

    dht_common::runtime().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seed_info = info.clone();
        let seed_log = log.clone();
        let server = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (info, log) = (seed_info.clone(), seed_log.clone());
                let (by_root, bytes) = (by_root.clone(), bytes.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &info, &by_root, &bytes, &log).await;
                });
            }
        });
        let save = leech_dir.path().join("save");
        let (info_s, save_s, port_s) = (
            info_file.to_str().unwrap().to_string(),
            save.to_str().unwrap().to_string(),
            port.to_string(),
        );
        let result = tokio::task::spawn_blocking(move || {
            let mut lt = Lt::start(&["leech", &info_s, &save_s, &port_s]);
            lt.line()
        })
        .await
        .unwrap();
        server.abort();
        eprintln!("libtorrent: {result}");
        let log = log.lock().unwrap();
        eprintln!(
            "seed: {} hash requests ({} rejected), {} blocks served ({} into an alignment gap)",
            log.requests.len(),
            log.rejected,
            log.blocks,
            log.into_gap
        );
        for r in &log.requests {
            eprintln!(
                "  hash request: base {} index {} length {} proof layers {}",
                r.base_layer, r.index, r.length, r.proof_layers
            );
        }
        assert_eq!(result["num_pieces"], result["total_pieces"], "{result}");
        assert_eq!(log.rejected, 0);
        assert!(
            log.requests.iter().any(|r| r.base_layer == 2),
            "libtorrent fetched the piece layers from us"
        );
        assert!(
            log.into_gap > 0,
            "libtorrent 2.0.8 asks for the alignment gap"
        );
        // the bytes libtorrent wrote are the files'
        for bf in &built.files {
            let path = if bf.path.is_empty() {
                save.join("root")
            } else {
                save.join("root").join(bf.path.join("/"))
            };
            let got = std::fs::read(path).unwrap();
            assert_eq!(got, content(bf.input, bf.length), "{:?}", bf.path);
        }
    });
}

/// One connection of the scripted v2 seed: handshake on the truncated v2
/// info-hash, full bitfield, unchoke, then blocks and hash answers.
async fn serve(
    stream: tokio::net::TcpStream,
    info: &Info,
    by_root: &HashMap<Hash, (usize, Layers)>,
    bytes: &HashMap<usize, Vec<u8>>,
    log: &Mutex<SeedLog>,
) -> Result<(), btfs::peer::wire::WireError> {
    let ih = info.info_hash;
    let (mut conn, _) = PeerConn::accept(stream, |h| *h == ih, PeerId::generate().0, STEP).await?;
    conn.set_max_message_len(MAX_HASHES_MESSAGE_LEN);
    let n = info.num_pieces();
    conn.write_message(&Message::Bitfield(Bytes::copy_from_slice(
        Bitfield::full(n).as_bytes(),
    )))
    .await?;
    conn.send(&Message::Unchoke).await?;
    while let Some(msg) = conn.read_message().await? {
        if let Some(hm) = HashMessage::from_message(&msg) {
            let HashMessage::Request(req) = hm? else {
                continue;
            };
            log.lock().unwrap().requests.push(req);
            let answer = by_root.get(&req.pieces_root).and_then(|(file, layers)| {
                let data = &bytes[file];
                let shape: TreeShape = layers.shape();
                // nodes below the held layers come from the data
                merkle::answer(&shape, &req, |l, i| {
                    layers.node(l, i).or_else(|| {
                        let start = ((i << l) * 16384) as usize;
                        let end = (start + (16384 << l)).min(data.len());
                        merkle::data_hash(l, data.get(start..end)?).ok()
                    })
                })
                .ok()
            });
            let reply = match answer {
                Some(hashes) => HashMessage::Hashes {
                    request: req,
                    hashes,
                },
                None => {
                    log.lock().unwrap().rejected += 1;
                    HashMessage::Reject(req)
                }
            };
            conn.send(&reply.to_message()).await?;
            continue;
        }
        if let Message::Request(r) = msg {
            // a block of the piece space: file bytes, zeros in the alignment
            // gap after a file's end (libtorrent 2.0.8 asks for whole 16 KiB
            // blocks there, up to the piece length even in the last piece)
            let Some(file) = info.piece_file(r.index) else {
                continue;
            };
            let f = &info.files[file];
            let start = u64::from(r.index) * info.piece_length + u64::from(r.begin);
            let end = start + u64::from(r.length);
            if r.length > BLOCK_SIZE || u64::from(r.begin) + u64::from(r.length) > info.piece_length
            {
                continue;
            }
            let data = &bytes[&file];
            let mut block = vec![0u8; r.length as usize];
            let data_end = f.offset + f.length;
            if start < data_end {
                let n = (data_end.min(end) - start) as usize;
                let from = (start - f.offset) as usize;
                block[..n].copy_from_slice(&data[from..from + n]);
            }
            {
                let mut log = log.lock().unwrap();
                log.blocks += 1;
                if end > data_end {
                    log.into_gap += 1;
                }
            }
            conn.send(&Message::Piece {
                index: r.index,
                begin: r.begin,
                data: Bytes::from(block),
            })
            .await?;
        }
    }
    Ok(())
}
