//! End-to-end tests of BEP 46 mutable URLs (issue 8): `btfs-mount keygen`,
//! `btfs-mount publish`, mounting `magnet:?xs=urn:btpk:...` and following
//! updates. Each test re-runs itself in a network namespace of its own
//! (only loopback) with a local DHT of python3-libtorrent nodes; items are
//! checked against libtorrent (`dht_get_mutable_item`) and against an
//! independent publisher (`lt/bep46_put.py`: python3-cryptography + raw
//! KRPC), and mounts are read with real `ls` and `cat`.
//!
//! Needs root (namespaces, FUSE), /usr/bin/python3 with libtorrent and
//! cryptography. Without them each test prints a loud SKIP and passes.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const NETNS_ENV: &str = "BTFS_BEP46_IN_NETNS";
const PY: &str = "/usr/bin/python3";

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_btfs-mount")
}

fn lt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mountpoint-tests/lt")
}

/// True inside the test's own network namespace. Outside, re-runs this one
/// test under `unshare --net --mount` (loopback up), asserts it passed and
/// returns false. Prints a loud SKIP when namespaces or libtorrent are
/// unavailable.
fn in_netns(test: &str) -> bool {
    if std::env::var_os(NETNS_ENV).is_some() {
        return true;
    }
    let have_lt = Command::new(PY)
        .args(["-c", "import libtorrent, cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    let have_ns = Command::new("unshare")
        .args(["--net", "--mount", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !have_lt || !have_ns {
        // Bypass the test harness's capture so the skip is seen.
        let _ = std::fs::write(
            "/dev/tty",
            format!("\n*** SKIP {test}: needs root namespaces and python3-libtorrent ***\n"),
        );
        eprintln!("*** SKIP {test}: needs root namespaces and python3-libtorrent ***");
        return false;
    }
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--", "sh", "-c"])
        .arg("ip link set lo up && exec \"$0\" \"$@\"")
        .arg(&exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, "1")
        .status()
        .expect("unshare runs");
    assert!(status.success(), "{test} failed inside its namespace");
    false
}

/// The string value of `"key": "..."` in a flat JSON line (no escapes
/// expected in the fields we read).
fn json_str(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\": \"");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_string())
}

/// The number or literal value of `"key": ...` in a flat JSON line.
fn json_raw(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\": ");
    let start = line.find(&pat)? + pat.len();
    let end = line[start..]
        .find([',', '}'])
        .map_or(line.len(), |e| e + start);
    Some(line[start..end].trim().to_string())
}

/// A python3-libtorrent node (`lt/ltnode.py`), killed on drop.
struct LtNode {
    child: Child,
    events: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl LtNode {
    fn start(args: &[&str]) -> LtNode {
        let mut child = Command::new(PY)
            .arg(lt_dir().join("ltnode.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ltnode.py starts");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut n = LtNode {
            child,
            events: rx,
            seen: Vec::new(),
        };
        n.wait_event("ready", Duration::from_secs(20));
        n
    }

    /// The first line with `"event": "<name>"` (already seen or new).
    fn wait_event(&mut self, name: &str, limit: Duration) -> String {
        let pat = format!("\"event\": \"{name}\"");
        if let Some(l) = self.seen.iter().find(|l| l.contains(&pat)) {
            return l.clone();
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(&pat) {
                        return line;
                    }
                    assert!(
                        !line.contains("\"event\": \"error\""),
                        "ltnode error: {line}"
                    );
                }
                Err(_) => panic!("ltnode: no {name} event within {limit:?}: {:?}", self.seen),
            }
        }
    }

    fn port(&mut self) -> u16 {
        let ready = self.wait_event("ready", Duration::from_secs(1));
        json_raw(&ready, "port").unwrap().parse().unwrap()
    }

    /// (info-hash hex, magnet) of the seeded torrent.
    fn torrent(&mut self) -> (String, String) {
        let t = self.wait_event("torrent", Duration::from_secs(30));
        (
            json_str(&t, "info_hash").unwrap(),
            json_str(&t, "magnet").unwrap(),
        )
    }
}

impl Drop for LtNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local DHT of three libtorrent nodes; returns them and their addresses.
fn local_dht() -> (Vec<LtNode>, Vec<String>) {
    let mut n1 = LtNode::start(&["--dht", "--bootstrap", "127.0.0.1:1"]);
    let boot = format!("127.0.0.1:{}", n1.port());
    let mut nodes = vec![n1];
    for _ in 0..2 {
        nodes.push(LtNode::start(&["--dht", "--bootstrap", &boot]));
    }
    let addrs = nodes
        .iter_mut()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    // Let the nodes find each other.
    std::thread::sleep(Duration::from_secs(2));
    (nodes, addrs)
}

/// `--bootstrap A --bootstrap B ...` for every node of the local DHT. A
/// fresh libtorrent DHT takes a while before its nodes know each other;
/// giving every node as a bootstrap makes lookups reach them all at once.
fn boot_flags(addrs: &[String]) -> Vec<String> {
    addrs
        .iter()
        .flat_map(|a| ["--bootstrap".to_string(), a.clone()])
        .collect()
}

/// A libtorrent seeder (DHT on) of the directory `dir`.
fn seeder(dir: &Path, boot: &str) -> LtNode {
    let mut s = LtNode::start(&[
        "--dht",
        "--bootstrap",
        boot,
        "--announce-interval",
        "2",
        "--piece-size",
        "65536",
        "--seed",
        dir.to_str().unwrap(),
    ]);
    s.wait_event("seeding", Duration::from_secs(30));
    s
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Runs `btfs-mount ARGS`; returns (success, stdout, stderr) and how long
/// it took.
fn run_btfs(args: &[&str]) -> (bool, String, String, Duration) {
    let t = Instant::now();
    let mut cmd = Command::new(bin());
    cmd.args(args);
    // A cache (and saved DHT routing table) of this run only: nodes saved
    // by other runs would be dead and slow every lookup down.
    let cache = tempfile::tempdir().unwrap();
    if args.first() != Some(&"keygen") {
        cmd.arg("--cache-dir").arg(cache.path());
    }
    let out = cmd.output().expect("btfs-mount runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t.elapsed(),
    )
}

/// `btfs-mount keygen --out FILE`; returns the public key (hex) and URL.
fn keygen(path: &Path) -> (String, String) {
    let (ok, out, err, _) = run_btfs(&["keygen", "--out", path.to_str().unwrap()]);
    assert!(ok, "keygen failed: {err}");
    let pk = out
        .lines()
        .find_map(|l| l.strip_prefix("public key"))
        .unwrap()
        .trim()
        .to_string();
    let url = out
        .lines()
        .find_map(|l| l.strip_prefix("mutable URL"))
        .unwrap()
        .trim()
        .to_string();
    (pk, url)
}

/// `btfs-mount publish TARGET --key KEY --once ...`: the printed URL.
fn publish(target: &str, key: &Path, extra: &[&str], addrs: &[String]) -> String {
    let mut args = vec!["publish", target, "--key", key.to_str().unwrap(), "--once"];
    args.extend_from_slice(extra);
    let boots = boot_flags(addrs);
    args.extend(boots.iter().map(String::as_str));
    let (ok, out, err, took) = run_btfs(&args);
    assert!(ok, "publish failed: {err}");
    eprintln!("publish took {:.2} s: {}", took.as_secs_f64(), err.trim());
    out.lines().next().unwrap().trim().to_string()
}

/// libtorrent's view of a mutable item (`lt/bep46_lt_get.py`): JSON line.
fn lt_get(pk: &str, salt: &str, want_seq: i64, addrs: &[String]) -> String {
    let out = Command::new(PY)
        .arg(lt_dir().join("bep46_lt_get.py"))
        .args(["--public-key", pk, "--salt", salt])
        .args(boot_flags(addrs))
        .args(["--want-seq", &want_seq.to_string(), "--timeout", "30"])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "bep46_lt_get failed: {s} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s
}

/// A foreground `btfs-mount -f URL MNT ...` child; SIGTERM (clean unmount)
/// on drop.
struct Mount {
    child: Child,
    mnt: PathBuf,
    log: PathBuf,
}

impl Mount {
    fn start(url: &str, mnt: &Path, log: &Path, extra: &[&str]) -> Mount {
        std::fs::create_dir_all(mnt).unwrap();
        let logf = std::fs::File::create(log).unwrap();
        let child = Command::new(bin())
            .arg("-f")
            .arg(url)
            .arg(mnt)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap();
        let mut m = Mount {
            child,
            mnt: mnt.to_path_buf(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !m.mounted() {
            if let Ok(Some(st)) = m.child.try_wait() {
                panic!(
                    "btfs-mount exited ({st}) before mounting:\n{}",
                    m.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "not mounted in 60 s:\n{}",
                m.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    fn mounted(&self) -> bool {
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mnt = self.mnt.to_str().unwrap();
        mi.lines()
            .any(|l| l.split(' ').nth(4) == Some(mnt) && l.contains("btfs"))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cat(path: &Path) -> Result<Vec<u8>, String> {
    let out = Command::new("cat").arg(path).output().unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn ls(path: &Path) -> String {
    let out = Command::new("ls").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn published_item_is_read_by_libtorrent_with_a_valid_signature() {
    if !in_netns("published_item_is_read_by_libtorrent_with_a_valid_signature") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let (_nodes, addrs) = local_dht();
    let key = tmp.path().join("key");
    let (pk, url) = keygen(&key);
    assert_eq!(url, format!("magnet:?xs=urn:btpk:{pk}"));

    // The key file: 64 hex and a newline, mode 0600, never overwritten.
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(&key).unwrap();
    assert_eq!(text.len(), 65, "{text:?}");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (ok, _, err, _) = run_btfs(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(!ok && err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);

    // Publish v1 under salt "ab": libtorrent reads it, signature valid.
    let ih1 = "0123456789abcdef0123456789abcdef01234567";
    let got = publish(
        &format!("magnet:?xt=urn:btih:{ih1}&dn=x"),
        &key,
        &["--salt", "6162"],
        &addrs,
    );
    assert_eq!(got, format!("magnet:?xs=urn:btpk:{pk}&s=6162"));
    let item = lt_get(&pk, "6162", 1, &addrs);
    eprintln!("libtorrent: {item}");
    assert_eq!(
        json_raw(&item, "verified").as_deref(),
        Some("true"),
        "{item}"
    );
    assert_eq!(json_str(&item, "ih").as_deref(), Some(ih1), "{item}");
    assert_eq!(json_raw(&item, "seq").as_deref(), Some("1"), "{item}");
    assert_eq!(json_str(&item, "public_key").as_deref(), Some(&*pk));

    // Publish again (a bare info-hash): seq = highest found + 1.
    let ih2 = "fedcba9876543210fedcba9876543210fedcba98";
    publish(ih2, &key, &["--salt", "6162"], &addrs);
    let item = lt_get(&pk, "6162", 2, &addrs);
    assert_eq!(
        json_raw(&item, "verified").as_deref(),
        Some("true"),
        "{item}"
    );
    assert_eq!(json_str(&item, "ih").as_deref(), Some(ih2), "{item}");
    assert_eq!(json_raw(&item, "seq").as_deref(), Some("2"), "{item}");

    // Our own resolver agrees.
    let mut args = vec!["dht", "get", &pk, "--salt", "6162"];
    let boots = boot_flags(&addrs);
    args.extend(boots.iter().map(String::as_str));
    let (ok, out, err, _) = run_btfs(&args);
    assert!(ok, "{err}");
    assert!(out.contains("seq 2") && out.contains(ih2), "{out}");

    // A key file others can read is refused, saying how to fix it.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, _, err, _) = run_btfs(&[
        "publish",
        ih1,
        "--key",
        key.to_str().unwrap(),
        "--once",
        "--bootstrap",
        &addrs[0],
    ]);
    assert!(!ok && err.contains("chmod 600"), "{err}");
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn item_from_an_independent_publisher_is_resolved_and_mounted() {
    if !in_netns("item_from_an_independent_publisher_is_resolved_and_mounted") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let (_nodes, addrs) = local_dht();
    let site = tmp.path().join("v1/site");
    std::fs::create_dir_all(site.join("sub")).unwrap();
    std::fs::write(site.join("hello.txt"), "hello from python\n").unwrap();
    let data = random_bytes(300_000, 7);
    std::fs::write(site.join("sub/data.bin"), &data).unwrap();
    let mut seed = seeder(&site, &addrs[0]);
    let (ih, _) = seed.torrent();

    // python3-cryptography signs, raw KRPC get + put to libtorrent nodes.
    let key_hex = "11".repeat(32);
    let mut put = Command::new(PY);
    put.arg(lt_dir().join("bep46_put.py")).args([
        "--seed-hex",
        &key_hex,
        "--salt",
        "7631",
        "--ih",
        &ih,
    ]);
    for a in &addrs {
        put.args(["--node", a]);
    }
    let out = put.output().unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "bep46_put: {line}");
    let pk = json_str(&line, "public_key").unwrap();
    let url = format!("magnet:?xs=urn:btpk:{pk}&s=7631");

    let mnt = tmp.path().join("mnt");
    let cache = tmp.path().join("cache");
    let started = Instant::now();
    let m = Mount::start(
        &url,
        &mnt,
        &tmp.path().join("mount.log"),
        &[
            boot_flags(&addrs)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            vec!["--cache-dir", cache.to_str().unwrap()],
        ]
        .concat(),
    );
    eprintln!("mounted in {:.2} s", started.elapsed().as_secs_f64());
    assert!(ls(&mnt).contains("site"), "{}", m.log_text());
    assert_eq!(
        cat(&mnt.join("site/hello.txt")).unwrap(),
        b"hello from python\n"
    );
    assert_eq!(
        sha256(&cat(&mnt.join("site/sub/data.bin")).unwrap()),
        sha256(&data)
    );
    assert!(m.log_text().contains(&ih), "the log names the info-hash");
    drop(m);
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn unresolvable_mutable_urls_fail_with_specific_errors() {
    if !in_netns("unresolvable_mutable_urls_fail_with_specific_errors") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let (_nodes, addrs) = local_dht();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let m = mnt.to_str().unwrap();

    // No item for this key.
    let (_, url) = keygen(&tmp.path().join("k"));
    let boots = boot_flags(&addrs);
    let boots: Vec<&str> = boots.iter().map(String::as_str).collect();
    let (ok, _, err, took) = run_btfs(&[&[&*url, m, "--timeout", "20"], &boots[..]].concat());
    assert!(!ok && err.contains("no item found"), "{err}");
    eprintln!("no item: {:.1} s: {}", took.as_secs_f64(), err.trim());

    // A valid signature over a value that is not {ih: <info-hash>}.
    let key_hex = "22".repeat(32);
    let mut put = Command::new(PY);
    put.arg(lt_dir().join("bep46_put.py")).args([
        "--seed-hex",
        &key_hex,
        "--raw-value",
        &hex::encode("d2:ih3:abce"),
    ]);
    for a in &addrs {
        put.args(["--node", a]);
    }
    let out = put.output().unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "bep46_put: {line}");
    let pk = json_str(&line, "public_key").unwrap();
    let url2 = format!("magnet:?xs=urn:btpk:{pk}");
    let (ok, _, err, _) = run_btfs(&[&[&*url2, m, "--timeout", "20"], &boots[..]].concat());
    assert!(
        !ok && err.contains("not a BEP 46 value") && err.contains("3 bytes"),
        "{err}"
    );

    // Only a node that serves a badly signed item.
    let mut fake = Command::new(PY)
        .arg(lt_dir().join("bep46_put.py"))
        .args([
            "--serve-bad",
            "--seed-hex",
            &"33".repeat(32),
            "--ih",
            &"ab".repeat(20),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(fake.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let port = json_raw(&first, "port").unwrap();
    let out = Command::new(PY)
        .arg(lt_dir().join("bep46_put.py"))
        .args([
            "--seed-hex",
            &"33".repeat(32),
            "--ih",
            &"ab".repeat(20),
            "--node",
            "127.0.0.1:1",
        ])
        .output()
        .unwrap();
    let pk3 = json_str(&String::from_utf8_lossy(&out.stdout), "public_key").unwrap();
    let (ok, _, err, _) = run_btfs(&[
        &format!("magnet:?xs=urn:btpk:{pk3}"),
        m,
        "--bootstrap",
        &format!("127.0.0.1:{port}"),
        "--timeout",
        "20",
    ]);
    let _ = fake.kill();
    let _ = fake.wait();
    assert!(!ok && err.contains("none with a valid signature"), "{err}");
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn mount_follows_the_publisher_and_open_files_keep_their_version() {
    if !in_netns("mount_follows_the_publisher_and_open_files_keep_their_version") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let (_nodes, addrs) = local_dht();
    let big1 = random_bytes(6 << 20, 1);
    let big2 = random_bytes(6 << 20, 2);
    // The same 1 MiB in both torrents: at least 15 of its 64 KiB pieces are
    // identical whatever order libtorrent gives the files (small files that
    // differ may come first and shift it by a few bytes).
    let shared = random_bytes(1 << 20, 3);
    let mut magnets = Vec::new();
    let mut seeders = Vec::new();
    for (v, big) in [("v1", &big1), ("v2", &big2)] {
        let site = tmp.path().join(v).join("site");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::write(site.join("version.txt"), format!("{v}\n")).unwrap();
        std::fs::write(site.join("a-shared.bin"), &shared).unwrap();
        std::fs::write(site.join("big.bin"), big).unwrap();
        std::fs::write(site.join(format!("only-in-{v}.txt")), v).unwrap();
        let mut s = seeder(&site, &addrs[0]);
        magnets.push(s.torrent().1);
        seeders.push(s);
    }
    let key = tmp.path().join("key");
    let (_, _) = keygen(&key);
    let url = publish(&magnets[0], &key, &[], &addrs);

    let mnt = tmp.path().join("mnt");
    let cache = tmp.path().join("cache");
    let m = Mount::start(
        &url,
        &mnt,
        &tmp.path().join("mount.log"),
        &[
            boot_flags(&addrs)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            vec!["--cache-dir", cache.to_str().unwrap(), "--refresh", "2"],
        ]
        .concat(),
    );
    assert_eq!(
        cat(&mnt.join("site/version.txt")).unwrap(),
        b"v1\n",
        "{}",
        m.log_text()
    );
    assert!(ls(&mnt.join("site")).contains("only-in-v1.txt"));
    assert_eq!(
        sha256(&cat(&mnt.join("site/a-shared.bin")).unwrap()),
        sha256(&shared)
    );

    // Open v1's big file and read its first 64 KiB.
    let mut f = std::fs::File::open(mnt.join("site/big.bin")).unwrap();
    let mut head = vec![0u8; 65536];
    f.read_exact(&mut head).unwrap();
    assert_eq!(head, big1[..65536]);

    // The key holder publishes v2; the mount shows it within a refresh
    // interval (plus the DHT lookup and the metadata fetch).
    let published = Instant::now();
    publish(&magnets[1], &key, &[], &addrs);
    let put_took = published.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if cat(&mnt.join("site/version.txt")).is_ok_and(|c| c == b"v2\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v2 not shown in 60 s:\n{}",
            m.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let switched = published.elapsed();
    eprintln!(
        "v2 shown {:.2} s after publish started (publish took {:.2} s)",
        switched.as_secs_f64(),
        put_took.as_secs_f64()
    );
    let listing = ls(&mnt.join("site"));
    assert!(
        listing.contains("only-in-v2.txt") && !listing.contains("only-in-v1.txt"),
        "{listing}"
    );
    assert_eq!(
        sha256(&cat(&mnt.join("site/big.bin")).unwrap()),
        sha256(&big2)
    );
    assert!(m.log_text().contains("switching from"), "{}", m.log_text());
    // The pieces v1 already had were copied, not fetched again.
    let log = m.log_text();
    let copied = log.lines().find_map(|l| {
        l.split(" pieces copied from ")
            .next()?
            .rsplit(' ')
            .next()?
            .parse::<u32>()
            .ok()
    });
    assert!(
        copied.is_some_and(|n| n >= 15),
        "no piece copy logged:\n{log}"
    );
    assert_eq!(
        sha256(&cat(&mnt.join("site/a-shared.bin")).unwrap()),
        sha256(&shared)
    );

    // The file opened before the switch still reads v1, to the end.
    f.seek(SeekFrom::Start(65536)).unwrap();
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).unwrap();
    head.extend_from_slice(&rest);
    assert_eq!(sha256(&head), sha256(&big1), "the old handle reads v1");
    drop(f);
    drop(m);
    drop(seeders);
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}
