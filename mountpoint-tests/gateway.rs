//! End-to-end tests of `btfs-mount serve` (issue 15): the HTTP gateway
//! driven by curl and by headless Chromium, the FUSE root, and the
//! `user.btfs.*` extended attributes. Every test re-runs itself in a
//! network namespace of its own (only loopback); torrents are seeded by
//! python3-libtorrent (`lt/ltnode.py`), published torrents are fetched
//! back by it, and BEP 46 items go through a local DHT of libtorrent nodes.
//!
//! Needs root (namespaces, FUSE), /usr/bin/python3 with libtorrent,
//! curl, chromium and getfattr (scripts/setup installs them).

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Child, LtNode, TreeFile, btfs_mount_bin, free_port, in_netns, lt_fetch, make_tree, s,
    seeded_bytes, sha256_bytes, wait_until,
};

/// An HTTP answer as curl saw it.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    /// The value of header `name` (case-insensitive), if present.
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Runs `curl -s -i ARGS` (no `Expect: 100-continue`) and parses the answer.
fn curl(args: &[&str]) -> Resp {
    let out = Command::new("curl")
        .args(["-s", "-S", "-i", "--max-time", "90", "-H", "Expect:"])
        .args(args)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rest: &[u8] = &out.stdout;
    loop {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(rest)));
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let body = &rest[end + 4..];
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .expect("status line");
        if (100..200).contains(&status) {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        return Resp {
            status,
            headers,
            body: body.to_vec(),
        };
    }
}

/// A foreground `btfs-mount serve -f -v ...`, stopped on drop.
struct Serve {
    child: Child,
    http: String,
    cache: PathBuf,
}

impl Serve {
    /// Starts `serve` on 127.0.0.1:<free port> with a cache dir under
    /// `tmp` and `extra` flags; waits until it listens (and mounts).
    fn start(tmp: &Path, extra: &[&str]) -> Serve {
        let port = free_port();
        Self::start_on(tmp, &format!("127.0.0.1:{port}"), extra)
    }

    fn start_on(tmp: &Path, addr: &str, extra: &[&str]) -> Serve {
        let cache = tmp.join(format!("cache-{}", addr.replace([':', '.'], "-")));
        let mut cmd = Command::new(btfs_mount_bin());
        cmd.args([
            "serve",
            "-f",
            "-v",
            "--http",
            addr,
            "--cache-dir",
            s(&cache),
        ])
        .args(extra);
        let mut child = Child::spawn("btfs-mount serve", cmd);
        let ok = wait_until(Duration::from_secs(30), || {
            child.stderr().contains("serving http://") && child.try_wait().is_none()
                || child.try_wait().is_some()
        });
        assert!(
            ok && child.try_wait().is_none(),
            "serve did not start:\n{}",
            child.stderr()
        );
        if extra.contains(&"--mount") {
            assert!(
                wait_until(Duration::from_secs(10), || child
                    .stderr()
                    .contains("FUSE root on")),
                "{}",
                child.stderr()
            );
        }
        Serve {
            child,
            http: format!("http://{addr}"),
            cache,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    fn get(&self, path: &str) -> Resp {
        curl(&[&self.url(path)])
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.cache.join("serve.token"))
            .expect("token file")
            .trim()
            .to_string()
    }

    fn log(&self) -> String {
        self.child.stderr()
    }

    fn status(&self) -> Value {
        self.get("/api/status").json()
    }
}

/// A libtorrent seeder of `dir` (no DHT), 64 KiB pieces.
fn seeder(dir: &Path) -> LtNode {
    let mut lt = LtNode::start(&["--seed", s(dir), "--piece-size", "65536"]);
    lt.info_hash();
    lt
}

/// The info-hash (40 hex) of a magnet link.
fn info_hash_of(magnet: &str) -> String {
    let i = magnet.find("btih:").expect("btih in magnet") + 5;
    magnet[i..i + 40].to_lowercase()
}

/// `getfattr -n NAME --only-values PATH`.
fn getfattr(path: &Path, name: &str) -> String {
    let out = Command::new("getfattr")
        .args(["-n", name, "--only-values", s(path)])
        .output()
        .expect("run getfattr (package attr)");
    assert!(
        out.status.success(),
        "getfattr {name} {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn http_status_codes_ranges_directories_and_uploads() {
    if !in_netns("http_status_codes_ranges_directories_and_uploads") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let big = seeded_bytes(3_000_000, 1);
    make_tree(
        &tmp.path().join("site"),
        &[
            ("index.html", TreeFile::Text("<h1>home</h1>\n")),
            ("docs/readme.txt", TreeFile::Text("read me\n")),
            ("docs/a b.txt", TreeFile::Text("spaced\n")),
            ("media/big.bin", TreeFile::Bytes(big.clone())),
        ],
    );
    let mut lt = seeder(&tmp.path().join("site"));
    let ih = lt.info_hash();
    // A second torrent whose seeder goes away after the metadata: 504.
    make_tree(
        &tmp.path().join("gone"),
        &[("data.bin", TreeFile::Random(2_000_000, 9))],
    );
    let mut lt_gone = seeder(&tmp.path().join("gone"));
    let ih_gone = lt_gone.info_hash();
    // A slow seeder (200 kB/s): a read of its 8 MB file lasts.
    let slow_dir = tmp.path().join("slow");
    make_tree(&slow_dir, &[("slow.bin", TreeFile::Random(8_000_000, 5))]);
    let mut slow = LtNode::start(&[
        "--seed",
        s(&slow_dir),
        "--piece-size",
        "65536",
        "--upload-limit",
        "200000",
    ]);
    let ih_slow = slow.info_hash();
    let peer_port = free_port();
    let (p1, p2, p3) = (lt.addr(), lt_gone.addr(), slow.addr());
    let sv = Serve::start(
        tmp.path(),
        &[
            "--no-dht",
            "--no-lsd",
            "--peer",
            &p1,
            "--peer",
            &p2,
            "--peer",
            &p3,
            "--port",
            &peer_port.to_string(),
            "--timeout",
            "10",
            "--read-timeout",
            "3",
        ],
    );
    let base = format!("/bt/{ih}");

    // Directories: redirect to the trailing slash, index.html, listings.
    let r = sv.get(&base);
    assert_eq!(r.status, 301, "{r:?}\n{}", sv.log());
    assert_eq!(r.header("location"), Some(&*format!("{base}/")));
    let r = sv.get(&format!("{base}/site"));
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some(&*format!("{base}/site/")));
    let r = sv.get(&format!("{base}/site/"));
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>home</h1>\n"));
    assert_eq!(r.header("content-type"), Some("text/html"));
    let r = sv.get(&format!("{base}/site/docs/"));
    assert_eq!(r.status, 200);
    assert!(
        r.text().contains("href=\"./a%20b.txt\"") && r.text().contains("readme.txt"),
        "{}",
        r.text()
    );
    let r = curl(&[
        "-H",
        "Accept: application/json",
        &sv.url(&format!("{base}/site/docs/")),
    ]);
    let j = r.json();
    assert_eq!(j["info_hash"], ih);
    let names: Vec<&str> = j["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a b.txt", "readme.txt"]);
    assert_eq!(j["entries"][0]["size"], 7);
    let r = sv.get(&format!("{base}/site/docs/a%20b.txt"));
    assert_eq!((r.status, r.text().as_str()), (200, "spaced\n"));

    // A whole file, and its headers.
    let file = format!("{base}/site/media/big.bin");
    let r = sv.get(&file);
    assert_eq!(r.status, 200);
    assert_eq!(sha256_bytes(&r.body), sha256_bytes(&big));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("content-length"), Some("3000000"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(r.header("link").is_none());
    let etag = r.header("etag").expect("etag").to_string();
    assert!(etag.starts_with(&format!("\"{ih}-")), "{etag}");
    // HEAD: the same headers, no body.
    let r = curl(&["-I", &sv.url(&file)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("3000000"));
    assert_eq!(r.header("etag"), Some(&*etag));
    assert!(r.body.is_empty());
    // Conditional GET.
    let r = curl(&["-H", &format!("If-None-Match: {etag}"), &sv.url(&file)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());

    // Ranges: 206 with Content-Range, suffix, open-ended, 416, multi-range.
    let r = curl(&["-r", "100-199", &sv.url(&file)]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/3000000"));
    assert_eq!(r.body, big[100..200]);
    let r = curl(&["-r", "-1000", &sv.url(&file)]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, big[big.len() - 1000..]);
    let r = curl(&["-r", "2999990-", &sv.url(&file)]);
    assert_eq!(
        (r.status, r.header("content-range")),
        (206, Some("bytes 2999990-2999999/3000000"))
    );
    assert_eq!(r.body, big[2_999_990..]);
    let r = curl(&["-I", "-r", "1000000-1000009", &sv.url(&file)]);
    assert_eq!((r.status, r.header("content-length")), (206, Some("10")));
    let r = curl(&["-r", "3000000-", &sv.url(&file)]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */3000000"));
    let r = curl(&["-r", "0-1,10-11", &sv.url(&file)]);
    assert_eq!(r.status, 200, "several ranges: the whole file");
    assert_eq!(r.body.len(), 3_000_000);
    let r = curl(&["-r", "0-9", "-H", "If-Range: \"stale\"", &sv.url(&file)]);
    assert_eq!(
        r.status, 200,
        "If-Range that does not match: the whole file"
    );

    // 400: malformed hashes, paths that try to escape, encoded separators.
    for bad in [
        "/bt/0123/x".to_string(),
        format!("/bt/{}/x", &ih[..39]),
        format!("/bt/{}zz/x", &ih[..38]),
        format!("{base}/site/%2e%2e/%2e%2e/etc/passwd"),
        format!("{base}/site/docs%2Freadme.txt"),
        format!("{base}/site/a%00b"),
        format!("{base}/site/%ff"),
    ] {
        let r = curl(&["--path-as-is", &sv.url(&bad)]);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert!(!r.text().trim().is_empty());
    }
    let r = curl(&["--path-as-is", &sv.url(&format!("{base}/site/../../x"))]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("leave the archive"), "{}", r.text());

    // 404: unknown paths.
    let r = sv.get(&format!("{base}/site/nope.txt"));
    assert_eq!(r.status, 404);
    assert!(r.text().contains("nope.txt"), "{}", r.text());
    assert_eq!(sv.get("/elsewhere").status, 404);

    // 504: the metadata of an info-hash nobody has, within --timeout.
    let t = Instant::now();
    let r = sv.get(&format!("/bt/{}/", "ab".repeat(20)));
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(
        r.text().contains("metadata not found within 10 s"),
        "{}",
        r.text()
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    // 504: a read whose pieces cannot arrive within --read-timeout.
    let r = sv.get(&format!("/bt/{ih_gone}/"));
    assert_eq!(r.status, 200, "{}", r.text());
    lt_gone.stop(Duration::from_secs(3));
    let t = Instant::now();
    let r = sv.get(&format!("/bt/{ih_gone}/gone/data.bin"));
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(r.text().contains("not received"), "{}", r.text());
    assert!(t.elapsed() < Duration::from_secs(10));
    // Its status says no peer is connected, and why the known one is not
    // (it refuses the connection now), instead of an empty list.
    let gone_section = |html: &str| {
        let start = html.find(&format!("id=\"{ih_gone}\"")).unwrap_or(0);
        let end = html[start..]
            .find("</section>")
            .map_or(html.len(), |e| start + e);
        html[start..end].to_string()
    };
    // (the other --peer seeders, known to every swarm, refuse this torrent)
    let want = format!("<code>{p2}</code> refused the connection (nothing listens on that port)");
    assert!(
        wait_until(Duration::from_secs(20), || {
            let html = gone_section(&sv.get("/").text());
            html.contains("no peer connected (3 known); last failures: ") && html.contains(&want)
        }),
        "{want}\n{}\n{}",
        gone_section(&sv.get("/").text()),
        sv.log()
    );
    let st = sv.status();
    let g = st["archives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["info_hash"] == ih_gone)
        .cloned()
        .expect("the gone archive in /api/status");
    assert_eq!(g["name"], "gone", "{g}");
    assert_eq!(g["peers"].as_array().map(Vec::len), Some(0), "{g}");
    assert!(
        g["peer_failures"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["addr"] == p2
                && f["why"] == "refused the connection (nothing listens on that port)"),
        "{g}"
    );

    // A client that goes away: its response (its lease, its reads and its
    // reader's readahead) is dropped.
    // (--max-time: it ends by itself should the test fail before the kill.)
    let mut gone = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "--max-time", "60"])
        .arg(sv.url(&format!("/bt/{ih_slow}/slow/slow.bin")))
        .spawn()
        .unwrap();
    let readers = |sv: &Serve| {
        sv.status()["archives"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["info_hash"] == ih_slow)
            .map_or(0, |a| a["readers"].as_u64().unwrap())
    };
    assert!(
        wait_until(Duration::from_secs(20), || readers(&sv) == 1),
        "the slow read never started\n{}",
        sv.log()
    );
    gone.kill().unwrap();
    gone.wait().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || readers(&sv) == 0),
        "the response outlived its client\n{}",
        sv.log()
    );
    drop(slow);

    // Uploads: the token is checked; a POST makes a torrent that libtorrent
    // fetches back from us.
    let token_path = sv.cache.join("serve.token");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let token = sv.token();
    assert_eq!(token.len(), 64);
    let up = tmp.path().join("up");
    make_tree(
        &up,
        &[
            ("page.html", TreeFile::Text("<p>uploaded</p>\n")),
            ("blob.bin", TreeFile::Random(300_000, 3)),
        ],
    );
    let form = |p: &str, name: &str| format!("file=@{};filename={name}", s(&up.join(p)));
    let post = |auth: Option<&str>| {
        let mut args = vec![
            "-X".to_string(),
            "POST".into(),
            "-F".into(),
            form("page.html", "page.html"),
            "-F".into(),
            form("blob.bin", "data/blob.bin"),
        ];
        if let Some(a) = auth {
            args.extend(["-H".to_string(), format!("Authorization: Bearer {a}")]);
        }
        args.push(sv.url("/bt/?name=uploaded"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&refs)
    };
    let r = post(None);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("www-authenticate").is_some());
    assert_eq!(post(Some("0000")).status, 401);
    let r = post(Some(&token));
    assert_eq!(r.status, 201, "{}\n{}", r.text(), sv.log());
    let magnet = r.text().trim().to_string();
    let new_ih = info_hash_of(&magnet);
    assert_eq!(r.header("location"), Some(&*format!("/bt/{new_ih}/")));
    let r = sv.get(&format!("/bt/{new_ih}/uploaded/data/blob.bin"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, seeded_bytes(300_000, 3));
    let got = lt_fetch(
        tmp.path(),
        &magnet,
        &format!("127.0.0.1:{peer_port}"),
        "uploaded",
    );
    assert_eq!(
        std::fs::read(got.join("uploaded/page.html")).unwrap(),
        b"<p>uploaded</p>\n"
    );
    assert_eq!(
        sha256_bytes(&std::fs::read(got.join("uploaded/data/blob.bin")).unwrap()),
        sha256_bytes(&seeded_bytes(300_000, 3))
    );
    // Writes elsewhere: PUT on an info-hash is 405, on a key not held 403.
    let auth = format!("Authorization: Bearer {token}");
    let r = curl(&[
        "-X",
        "PUT",
        "-H",
        &auth,
        "--data-binary",
        "x",
        &sv.url(&format!("{base}/x")),
    ]);
    assert_eq!(r.status, 405, "{}", r.text());
    let r = curl(&[
        "-X",
        "PUT",
        "-H",
        &auth,
        "--data-binary",
        "x",
        &sv.url(&format!("/bt/{}/x", "cd".repeat(32))),
    ]);
    assert_eq!(r.status, 403, "{}", r.text());
    let r = curl(&["-X", "PATCH", &sv.url(&format!("{base}/x"))]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, DELETE"));

    // The status page lists what is open.
    let st = sv.status();
    let ours = st["archives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["info_hash"] == ih)
        .cloned()
        .expect("the archive in /api/status");
    assert_eq!(ours["name"], "site", "the torrent's name: {ours}");
    assert!(ours["public_key"].is_null(), "{ours}");
    assert_eq!(ours["files"].as_array().unwrap().len(), 4);
    // (libtorrent drops a seed-to-seed connection: the peer may be gone.)
    assert!(ours["peers_known"].as_u64().unwrap() >= 1, "{ours}");
    for p in ours["peers"].as_array().unwrap() {
        assert_eq!(p["source"], "cli", "{ours}");
    }
    let html = sv.get("/").text();
    assert!(html.contains(&ih) && html.contains("<progress"), "{html}");
    assert!(html.contains("http-equiv=\"refresh\""));
}

/// A local DHT of three libtorrent nodes; returns them and their addresses.
fn local_dht() -> (Vec<LtNode>, Vec<String>) {
    let n1 = LtNode::start(&["--dht", "--bootstrap", "127.0.0.1:1"]);
    let boot = n1.addr();
    let mut nodes = vec![n1];
    for _ in 0..2 {
        nodes.push(LtNode::start(&["--dht", "--bootstrap", &boot]));
    }
    let addrs = nodes.iter().map(LtNode::addr).collect();
    std::thread::sleep(Duration::from_secs(2));
    (nodes, addrs)
}

/// `--bootstrap A --bootstrap B ...` for every node of the local DHT.
fn boot_flags(addrs: &[String]) -> Vec<String> {
    addrs
        .iter()
        .flat_map(|a| ["--bootstrap".to_string(), a.clone()])
        .collect()
}

/// Runs `btfs-mount ARGS` (with a cache of its own); panics on failure;
/// returns stdout.
fn btfs(tmp: &Path, args: &[&str]) -> String {
    let cache = tempfile::tempdir_in(tmp).unwrap();
    let mut cmd = Command::new(btfs_mount_bin());
    cmd.args(args);
    if args.first() != Some(&"keygen") {
        cmd.arg("--cache-dir").arg(cache.path());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "btfs-mount {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn mutable_urls_follow_versions_and_put_delete_publish() {
    if !in_netns("mutable_urls_follow_versions_and_put_delete_publish") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (_nodes, addrs) = local_dht();
    let boots = boot_flags(&addrs);
    let mut seeders = Vec::new();
    let mut magnets = Vec::new();
    for v in ["v1", "v2"] {
        let dir = tmp.path().join(v).join("site");
        make_tree(
            &dir,
            &[
                (
                    "version.txt",
                    TreeFile::Text(if v == "v1" { "v1\n" } else { "v2\n" }),
                ),
                ("shared.bin", TreeFile::Random(200_000, 4)),
            ],
        );
        let mut s = LtNode::start(&[
            "--dht",
            "--bootstrap",
            &addrs[0],
            "--announce-interval",
            "2",
            "--piece-size",
            "65536",
            "--seed",
            s(&dir),
        ]);
        magnets.push(s.magnet());
        seeders.push(s);
    }
    let key = tmp.path().join("site.key");
    let out = btfs(tmp.path(), &["keygen", "--out", s(&key)]);
    let pk = out
        .lines()
        .find_map(|l| l.strip_prefix("public key"))
        .unwrap()
        .trim()
        .to_string();
    let publish = |target: &str| {
        let mut args = vec!["publish", target, "--key", s(&key), "--once"];
        args.extend(boots.iter().map(String::as_str));
        btfs(tmp.path(), &args);
    };
    publish(&magnets[0]);
    let ih1 = info_hash_of(&magnets[0]);
    let ih2 = info_hash_of(&magnets[1]);

    let peer_port = free_port();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let mut flags = vec![
        "--refresh",
        "2",
        "--timeout",
        "30",
        "--key",
        s(&key),
        "--no-lsd",
        "--mount",
        s(&root),
        "--port",
    ];
    let pp = peer_port.to_string();
    flags.push(&pp);
    flags.extend(boots.iter().map(String::as_str));
    let sv = Serve::start(tmp.path(), &flags);
    let url = format!("/bt/{pk}/site/version.txt");
    let r = sv.get(&url);
    assert_eq!((r.status, r.text().as_str()), (200, "v1\n"), "{}", sv.log());
    assert_eq!(
        r.header("link"),
        Some(&*format!("</bt/{ih1}/site/version.txt>; rel=\"canonical\""))
    );
    assert_eq!(r.header("cache-control"), Some("public, max-age=30"));
    // The canonical URL serves the same bytes, immutable.
    let c = sv.get(&format!("/bt/{ih1}/site/version.txt"));
    assert_eq!(c.text(), "v1\n");
    // The directory of a mutable URL redirects like any other (302: it may
    // become a file in a later version).
    let r = sv.get(&format!("/bt/{pk}/site"));
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some(&*format!("/bt/{pk}/site/")));

    // The FUSE root shows the same mutable archive.
    let in_root = root.join(&pk).join("site/version.txt");
    assert_eq!(std::fs::read(&in_root).unwrap(), b"v1\n");

    // The key holder points the URL at v2: the gateway follows.
    publish(&magnets[1]);
    assert!(
        wait_until(Duration::from_secs(60), || sv.get(&url).text() == "v2\n"),
        "v2 not served in 60 s\n{}",
        sv.log()
    );
    let r = sv.get(&url);
    assert_eq!(
        r.header("link"),
        Some(&*format!("</bt/{ih2}/site/version.txt>; rel=\"canonical\""))
    );
    // ... and so does the FUSE root (its root entries live 1 s).
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read(&in_root)
            .is_ok_and(|b| b == b"v2\n")),
        "the FUSE root still shows v1\n{}",
        sv.log()
    );
    let st = sv.status();
    let m = st["archives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["public_key"] == pk)
        .cloned()
        .expect("the mutable name in /api/status");
    assert_eq!(m["info_hash"], ih2);
    assert_eq!(m["seq"], 2);

    // PUT and DELETE with the key publish seq 3 and 4.
    let token = sv.token();
    let auth = format!("Authorization: Bearer {token}");
    let r = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        "new",
        &sv.url(&format!("/bt/{pk}/site/new.txt")),
    ]);
    assert_eq!(r.status, 401);
    let r = curl(&[
        "-X",
        "PUT",
        "-H",
        "Authorization: Bearer nope",
        "--data-binary",
        "new",
        &sv.url(&format!("/bt/{pk}/site/new.txt")),
    ]);
    assert_eq!(r.status, 401);
    let body = seeded_bytes(150_000, 8);
    let body_file = tmp.path().join("put.bin");
    std::fs::write(&body_file, &body).unwrap();
    let r = curl(&[
        "-X",
        "PUT",
        "-H",
        &auth,
        "--data-binary",
        &format!("@{}", s(&body_file)),
        &sv.url(&format!("/bt/{pk}/site/new/put.bin")),
    ]);
    assert_eq!(r.status, 201, "{}\n{}", r.text(), sv.log());
    assert!(r.text().contains("seq 3"), "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some(&*format!("/bt/{pk}/site/new/put.bin"))
    );
    // Served at once (no refresh needed), the rest of v2 kept.
    let r = sv.get(&format!("/bt/{pk}/site/new/put.bin"));
    assert_eq!(r.status, 200);
    assert_eq!(sha256_bytes(&r.body), sha256_bytes(&body));
    assert_eq!(sv.get(&url).text(), "v2\n");
    // Replacing a file: 200.
    let r = curl(&[
        "-X",
        "PUT",
        "-H",
        &auth,
        "--data-binary",
        "v4\n",
        &sv.url(&url),
    ]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("seq 4"), "{}", r.text());
    assert_eq!(sv.get(&url).text(), "v4\n");
    // DELETE.
    let r = curl(&[
        "-X",
        "DELETE",
        "-H",
        &auth,
        &sv.url(&format!("/bt/{pk}/site/shared.bin")),
    ]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("seq 5"), "{}", r.text());
    let magnet5 = r.text().lines().next().unwrap().to_string();
    assert_eq!(sv.get(&format!("/bt/{pk}/site/shared.bin")).status, 404);
    let r = curl(&[
        "-X",
        "DELETE",
        "-H",
        &auth,
        &sv.url(&format!("/bt/{pk}/site/shared.bin")),
    ]);
    assert_eq!(r.status, 404);
    // libtorrent reads the newest version back from us (the daemon seeds
    // the newest version it published; older ones close).
    let got = lt_fetch(
        tmp.path(),
        &magnet5,
        &format!("127.0.0.1:{peer_port}"),
        "v5",
    );
    assert_eq!(std::fs::read(got.join("site/new/put.bin")).unwrap(), body);
    assert_eq!(
        std::fs::read(got.join("site/version.txt")).unwrap(),
        b"v4\n"
    );
    assert!(!got.join("site/shared.bin").exists());
    // And the DHT says seq 5 (our own resolver, a fresh node).
    let mut args = vec!["dht", "get", &pk];
    args.extend(boots.iter().map(String::as_str));
    let out = btfs(tmp.path(), &args);
    assert!(out.contains("seq 5"), "{out}");
}

/// The test site of the browser test: a page whose script reports what
/// the browser rendered (`window.results`, a Promise), a stylesheet, a PNG,
/// a page behind a relative link, and 10 minutes of audio (a PCM WAV, 26 MB:
/// more than the browser buffers ahead) in a `<video>` element that the
/// script seeks to 90 %. (No video encoder is installed here: an
/// audio-only file in a `<video>` element goes through the same media
/// pipeline and the same Range requests.)
fn write_browser_site(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("index.html"),
        r#"<!DOCTYPE html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="css/style.css"><title>btfs site</title></head><body>
<h1 id="t">Hello from a torrent</h1>
<img id="i" src="img/dot.png"><a id="l" href="page2.html">next page</a>
<video id="v" preload="metadata" src="media/tone.wav" muted></video>
<pre id="out">pending</pre>
<script>
const r = {};
let resolve;
window.results = new Promise(ok => resolve = ok);
const finish = () => { document.getElementById('out').textContent = JSON.stringify(r); resolve(r); };
window.addEventListener('load', async () => {
  r.color = getComputedStyle(document.getElementById('t')).color;
  r.img = document.getElementById('i').naturalWidth;
  const link = document.getElementById('l');
  r.href = link.href;
  const page = await fetch(link.href);
  r.link = page.status + ' ' + (await page.text()).trim();
  const v = document.getElementById('v');
  v.addEventListener('error', () => { r.error = v.error && v.error.code; finish(); });
  v.addEventListener('seeked', () => { r.seeked = v.currentTime; r.duration = v.duration; finish(); });
  const seek = () => { v.currentTime = v.duration * 0.9; };
  if (v.readyState >= 1) seek(); else v.addEventListener('loadedmetadata', seek);
});
</script></body></html>
"#,
    )
    .unwrap();
    let py = r#"
import struct, sys, wave, zlib, math, os
d = sys.argv[1]
os.makedirs(d + '/css', exist_ok=True); os.makedirs(d + '/img', exist_ok=True)
os.makedirs(d + '/media', exist_ok=True)
open(d + '/css/style.css', 'w').write('h1 { color: rgb(200, 30, 40); }\n')
open(d + '/page2.html', 'w').write('<p>page two</p>\n')
def chunk(t, b): return struct.pack('>I', len(b)) + t + b + struct.pack('>I', zlib.crc32(t + b))
raw = b''.join(b'\x00' + b'\x10\x80\xf0' * 7 for _ in range(5))
open(d + '/img/dot.png', 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 7, 5, 8, 2, 0, 0, 0))
    + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
w = wave.open(d + '/media/tone.wav', 'wb'); w.setnchannels(1); w.setsampwidth(2); w.setframerate(22050)
second = b''.join(struct.pack('<h', int(8000 * math.sin(i * 2 * math.pi * 441 / 22050))) for i in range(22050))
w.writeframes(second * 600)
w.close()
"#;
    let st = Command::new(support::PYTHON)
        .args(["-c", py, s(dir)])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn chromium_renders_a_site_and_seeks_a_media_element() {
    if !in_netns("chromium_renders_a_site_and_seeks_a_media_element") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write_browser_site(&site);
    let mut lt = seeder(&site);
    let ih = lt.info_hash();
    let p = lt.addr();
    let sv = Serve::start(tmp.path(), &["--no-dht", "--no-lsd", "--peer", &p]);
    let page = sv.url(&format!("/bt/{ih}/site/"));
    let out = Command::new(support::PYTHON)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("mountpoint-tests/browser/cdp.py"))
        .args([&page, "--timeout", "60"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let j: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
        panic!(
            "cdp.py: {e}: {line}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            sv.log()
        )
    });
    assert_eq!(j["ok"], true, "{j}\n{}", sv.log());
    let v = &j["value"];
    eprintln!("the browser saw: {v}");
    // The stylesheet applied, the image decoded, the relative link resolved
    // inside the same archive URL.
    assert_eq!(v["color"], "rgb(200, 30, 40)", "{v}");
    assert_eq!(v["img"], 7, "{v}");
    assert_eq!(
        v["href"],
        sv.url(&format!("/bt/{ih}/site/page2.html")),
        "{v}"
    );
    assert_eq!(v["link"], "200 <p>page two</p>", "{v}");
    assert!(
        j["dom"].as_str().unwrap().contains("Hello from a torrent"),
        "{j}"
    );
    // The media element seeked to 90 % of 600 s, by a Range request at a
    // non-zero offset.
    let seeked = v["seeked"]
        .as_f64()
        .unwrap_or_else(|| panic!("no seek: {v}"));
    assert!((539.0..=541.0).contains(&seeked), "{v}");
    let log = sv.log();
    let offsets: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("site/media/tone.wav: bytes "))
        .filter_map(|l| l.split("bytes ").nth(1)?.split('-').next()?.parse().ok())
        .collect();
    assert!(
        offsets.iter().any(|&o| o > 20_000_000),
        "no Range request far into the media: {offsets:?}\n{log}"
    );
}

#[test]
fn fuse_root_serves_two_archives_at_once_with_xattrs() {
    if !in_netns("fuse_root_serves_two_archives_at_once_with_xattrs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut seeds = Vec::new();
    let mut hashes = Vec::new();
    // "one" a v1 torrent, named by its info-hash; "two" a v2-only one
    // (BEP 52), named by its v2 info-hash truncated to 40 hex digits, as
    // its cache directory is.
    for (name, seed, flavor) in [("one", 11u64, "v1"), ("two", 12, "v2")] {
        let dir = tmp.path().join(name);
        // Two files: a directory torrent named `name` (ltnode seeds a
        // one-file v2 torrent as a single file, not under `name/`).
        make_tree(
            &dir,
            &[
                ("data.bin", TreeFile::Random(4_000_000, seed)),
                ("note.txt", TreeFile::Text("two archives\n")),
            ],
        );
        let mut lt = LtNode::start(&[
            "--seed",
            s(&dir),
            "--piece-size",
            "65536",
            "--flavor",
            flavor,
        ]);
        let t = lt.torrent();
        hashes.push(match flavor {
            "v1" => t["info_hash"].as_str().unwrap().to_string(),
            _ => t["info_hash_v2"].as_str().unwrap()[..40].to_string(),
        });
        seeds.push(lt);
    }
    let v2_full = seeds[1].torrent()["info_hash_v2"]
        .as_str()
        .unwrap()
        .to_string();
    let mnt = tmp.path().join("root");
    std::fs::create_dir_all(&mnt).unwrap();
    let (p1, p2) = (seeds[0].addr(), seeds[1].addr());
    let sv = Serve::start(
        tmp.path(),
        &[
            "--no-dht",
            "--no-lsd",
            "--peer",
            &p1,
            "--peer",
            &p2,
            "--mount",
            s(&mnt),
            "--timeout",
            "5",
        ],
    );
    let listed = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert!(listed().is_empty(), "{:?}", listed());
    // Both read at once, each through its own path.
    let readers: Vec<_> = [("one", 0usize, 11u64), ("two", 1, 12)]
        .into_iter()
        .map(|(name, i, seed)| {
            let path = mnt.join(&hashes[i]).join(name).join("data.bin");
            std::thread::spawn(move || {
                let t = Instant::now();
                let got =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(
                    sha256_bytes(&got),
                    sha256_bytes(&seeded_bytes(4_000_000, seed))
                );
                t.elapsed()
            })
        })
        .collect();
    for r in readers {
        let took = r.join().expect("a reader failed");
        eprintln!(
            "read 4 MB through the FUSE root in {:.2} s",
            took.as_secs_f64()
        );
    }
    let mut want = hashes.clone();
    want.sort();
    assert_eq!(listed(), want);
    // The same archives over HTTP: one engine.
    let st = sv.status();
    let archives = st["archives"].as_array().unwrap();
    assert_eq!(archives.len(), 2);
    // The v2-only archive's magnet names its full v2 info-hash.
    assert!(
        archives.iter().any(|a| a["magnet"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("xt=urn:btmh:1220{v2_full}")))),
        "{st}"
    );
    let r = curl(&[&sv.url(&format!("/bt/{}/two/data.bin", hashes[1]))]);
    assert_eq!(r.status, 200);
    assert_eq!(
        sha256_bytes(&r.body),
        sha256_bytes(&seeded_bytes(4_000_000, 12))
    );
    // Extended attributes on a file and a directory of the root.
    let f = mnt.join(&hashes[0]).join("one/data.bin");
    assert_eq!(getfattr(&f, "user.btfs.progress"), "4000000/4000000");
    assert_eq!(getfattr(&f, "user.btfs.info_hash"), hashes[0]);
    assert!(getfattr(&f, "user.btfs.peers").parse::<u32>().is_ok());
    assert_eq!(
        getfattr(&mnt.join(&hashes[1]), "user.btfs.info_hash"),
        hashes[1]
    );
    // An info-hash nobody has: ENOENT after --timeout, and a log line.
    let nobody = mnt.join("cd".repeat(20));
    let t = Instant::now();
    let stat = {
        let nobody = nobody.clone();
        std::thread::spawn(move || std::fs::metadata(&nobody).unwrap_err())
    };
    // Meanwhile the status page lists it as being looked up...
    let lookup_url = format!("/bt/{}/", "cd".repeat(20));
    let lookup_state = |st: &Value| {
        st["lookups"]
            .as_array()
            .and_then(|v| v.iter().find(|l| l["url"] == lookup_url.as_str()).cloned())
    };
    assert!(
        wait_until(Duration::from_secs(4), || lookup_state(&sv.status())
            .is_some_and(|l| l["state"] == "resolving")),
        "{}",
        sv.status()
    );
    let e = stat.join().unwrap();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    // ... and then as failed, with the lookup's error.
    let failed = lookup_state(&sv.status()).expect("the failed lookup is listed");
    assert_eq!(failed["state"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("metadata not found within 5 s")),
        "{failed}"
    );
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(
        sv.log()
            .contains(&format!("lookup of {} failed", "cd".repeat(20))),
        "{}",
        sv.log()
    );
    // `ls` of it looks the name up several times: after one failure the
    // next lookups answer at once, not after another --timeout each.
    let t = Instant::now();
    let o = Command::new("ls").arg(&nobody).output().unwrap();
    assert!(!o.status.success());
    assert!(std::fs::metadata(&nobody).is_err());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // A name that is not one: ENOENT at once.
    assert!(std::fs::metadata(mnt.join("not-a-hash")).is_err());
    drop(sv);
    assert!(wait_until(
        Duration::from_secs(10),
        || !support::is_mounted(&mnt)
    ));
}

#[test]
fn xattrs_on_a_single_archive_mount() {
    if !in_netns("xattrs_on_a_single_archive_mount") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("x");
    make_tree(
        &dir,
        &[
            ("a.bin", TreeFile::Random(500_000, 21)),
            ("sub/b.bin", TreeFile::Random(300_000, 22)),
        ],
    );
    let mut lt = seeder(&dir);
    let ih = lt.info_hash();
    let magnet = lt.magnet();
    let cache = tmp.path().join("cache");
    let m = support::Mount::temp_background(&[
        &magnet,
        "--no-dht",
        "--no-lsd",
        "--peer",
        &lt.addr(),
        "--cache-dir",
        s(&cache),
    ]);
    let root = m.path().join("x");
    assert_eq!(getfattr(&root.join("a.bin"), "user.btfs.info_hash"), ih);
    assert_eq!(getfattr(&root, "user.btfs.info_hash"), ih);
    assert_eq!(
        getfattr(&root.join("sub/b.bin"), "user.btfs.progress"),
        "0/300000"
    );
    let got = std::fs::read(root.join("sub/b.bin")).unwrap();
    assert_eq!(got, seeded_bytes(300_000, 22));
    assert_eq!(
        getfattr(&root.join("sub/b.bin"), "user.btfs.progress"),
        "300000/300000"
    );
    // The directory sums its files; pieces shared with a.bin count for it.
    let dirp = getfattr(&root, "user.btfs.progress");
    let (v, t) = dirp.split_once('/').unwrap();
    assert_eq!(t, "800000");
    assert!(v.parse::<u64>().unwrap() >= 300_000, "{dirp}");
    assert_eq!(getfattr(&root.join("a.bin"), "user.btfs.peers"), "1");
    let out = Command::new("getfattr")
        .args(["-d", "-m", "-", s(&root.join("a.bin"))])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    for n in [
        "user.btfs.progress",
        "user.btfs.info_hash",
        "user.btfs.peers",
    ] {
        assert!(listed.contains(n), "{listed}");
    }
    // Unknown attributes stay quietly absent.
    let st = Command::new("getfattr")
        .args(["-n", "user.other", s(&root.join("a.bin"))])
        .output()
        .unwrap();
    assert!(!st.status.success());
}

#[test]
fn a_non_loopback_listener_needs_flags_and_refuses_writes() {
    if !in_netns("a_non_loopback_listener_needs_flags_and_refuses_writes") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // An address of this namespace only (a test range).
    let st = Command::new("ip")
        .args(["addr", "add", "10.77.0.1/32", "dev", "lo"])
        .status()
        .unwrap();
    assert!(st.success());
    let addr = format!("10.77.0.1:{}", free_port());
    let out = Command::new(btfs_mount_bin())
        .args([
            "serve",
            "-f",
            "--no-dht",
            "--no-lsd",
            "--http",
            &addr,
            "--cache-dir",
        ])
        .arg(tmp.path().join("c0"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--allow-remote"),
        "{err}"
    );
    let sv = Serve::start_on(
        tmp.path(),
        &addr,
        &["--no-dht", "--no-lsd", "--allow-remote"],
    );
    assert!(sv.log().contains("writes are refused"), "{}", sv.log());
    assert_eq!(sv.get("/").status, 200);
    let auth = format!("Authorization: Bearer {}", sv.token());
    let f = tmp.path().join("f.txt");
    std::fs::write(&f, "x").unwrap();
    let form = format!("file=@{}", s(&f));
    let r = curl(&["-X", "POST", "-H", &auth, "-F", &form, &sv.url("/bt/")]);
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("--allow-remote-writes"), "{}", r.text());
    // `list` shows the daemon and its URL; `stop` ends it.
    let out = Command::new(btfs_mount_bin()).arg("list").output().unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    let pid = sv.child.pid().to_string();
    assert!(
        listed.contains(&format!("{pid}  serve (serving)")) && listed.contains(&sv.http),
        "{listed}"
    );
    let st = Command::new(btfs_mount_bin())
        .args(["stop", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    let mut sv = sv;
    assert!(sv.child.try_wait().is_some_and(|s| s.success()));
}
