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

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    LocalDht, LtNode, Mount, MountArgs, PYTHON as PY, btfs_mount_bin, in_netns, seeded_bytes,
    sha256_bytes,
};

fn lt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mountpoint-tests/lt")
}

/// The one JSON object a helper script printed on stdout.
fn json(out: &[u8]) -> Value {
    let text = String::from_utf8_lossy(out);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A local DHT of three libtorrent nodes, given 2 s to find each other.
fn local_dht() -> LocalDht {
    let dht = LocalDht::start(3);
    std::thread::sleep(Duration::from_secs(2));
    dht
}

/// A libtorrent seeder (DHT on) of the directory `dir`.
fn seeder(dir: &Path, boot: &str) -> LtNode {
    let dht = ["--dht", "--bootstrap", boot, "--announce-interval", "2"];
    LtNode::seed_tree(dir, 65536, &dht).0
}

/// Runs `btfs-mount ARGS`; returns (success, stdout, stderr) and how long
/// it took.
fn run_btfs<S: AsRef<str>>(args: &[S]) -> (bool, String, String, Duration) {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let t = Instant::now();
    let mut cmd = Command::new(btfs_mount_bin());
    cmd.args(&args);
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
fn publish(target: &str, key: &Path, extra: &[&str], dht: &LocalDht) -> String {
    let mut args = vec!["publish", target, "--key", key.to_str().unwrap(), "--once"];
    args.extend_from_slice(extra);
    let boots = dht.bootstrap_flags();
    args.extend(boots.iter().map(String::as_str));
    let (ok, out, err, took) = run_btfs(&args);
    assert!(ok, "publish failed: {err}");
    eprintln!("publish took {:.2} s: {}", took.as_secs_f64(), err.trim());
    out.lines().next().unwrap().trim().to_string()
}

/// libtorrent's view of a mutable item (`lt/bep46_lt_get.py`): JSON line.
fn lt_get(pk: &str, salt: &str, want_seq: i64, dht: &LocalDht) -> Value {
    let out = Command::new(PY)
        .arg(lt_dir().join("bep46_lt_get.py"))
        .args(["--public-key", pk, "--salt", salt])
        .args(dht.bootstrap_flags())
        .args(["--want-seq", &want_seq.to_string(), "--timeout", "30"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bep46_lt_get failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    json(&out.stdout)
}

/// The log (stderr) of a foreground mount.
fn log_of(m: &mut Mount) -> String {
    m.child().map(|c| c.stderr()).unwrap_or_default()
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
    let dht = local_dht();
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
        &dht,
    );
    assert_eq!(got, format!("magnet:?xs=urn:btpk:{pk}&s=6162"));
    let item = lt_get(&pk, "6162", 1, &dht);
    eprintln!("libtorrent: {item}");
    assert_eq!(item["verified"].as_bool(), Some(true), "{item}");
    assert_eq!(item["ih"].as_str(), Some(ih1), "{item}");
    assert_eq!(item["seq"].as_i64(), Some(1), "{item}");
    assert_eq!(item["public_key"].as_str(), Some(&*pk));

    // Publish again (a bare info-hash): seq = highest found + 1.
    let ih2 = "fedcba9876543210fedcba9876543210fedcba98";
    publish(ih2, &key, &["--salt", "6162"], &dht);
    let item = lt_get(&pk, "6162", 2, &dht);
    assert_eq!(item["verified"].as_bool(), Some(true), "{item}");
    assert_eq!(item["ih"].as_str(), Some(ih2), "{item}");
    assert_eq!(item["seq"].as_i64(), Some(2), "{item}");

    // Our own resolver agrees.
    let mut args = vec!["dht", "get", &pk, "--salt", "6162"];
    let boots = dht.bootstrap_flags();
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
        &dht.boot(),
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
    let dht = local_dht();
    let site = tmp.path().join("v1/site");
    std::fs::create_dir_all(site.join("sub")).unwrap();
    std::fs::write(site.join("hello.txt"), "hello from python\n").unwrap();
    let data = seeded_bytes(300_000, 7);
    std::fs::write(site.join("sub/data.bin"), &data).unwrap();
    let mut seed = seeder(&site, &dht.boot());
    let ih = seed.info_hash();

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
    for a in &dht.addrs() {
        put.args(["--node", a]);
    }
    let out = put.output().unwrap();
    let line = json(&out.stdout);
    assert!(out.status.success(), "bep46_put: {line}");
    let pk = line["public_key"].as_str().unwrap().to_string();
    let url = format!("magnet:?xs=urn:btpk:{pk}&s=7631");

    let mnt = tmp.path().join("mnt");
    let cache = tmp.path().join("cache");
    let started = Instant::now();
    // The default mode: returns once mounted, serves from the background.
    let args = MountArgs::new(&url)
        .cache_dir(&cache)
        .args(&dht.bootstrap_flags());
    let m = Mount::background(&mnt, &args.build());
    eprintln!("mounted in {:.2} s", started.elapsed().as_secs_f64());
    assert!(ls(&mnt).contains("site"));
    assert_eq!(
        cat(&mnt.join("site/hello.txt")).unwrap(),
        b"hello from python\n"
    );
    assert_eq!(
        sha256_bytes(&cat(&mnt.join("site/sub/data.bin")).unwrap()),
        sha256_bytes(&data)
    );
    m.unmount_and_wait(Duration::from_secs(10));
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn unresolvable_mutable_urls_fail_with_specific_errors() {
    if !in_netns("unresolvable_mutable_urls_fail_with_specific_errors") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dht = local_dht();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    // `URL MNT --timeout 20 --bootstrap ...`
    let resolve = |url: &str| {
        MountArgs::new(url)
            .timeout(20)
            .args(&dht.bootstrap_flags())
            .at(&mnt)
    };

    // No item for this key.
    let (_, url) = keygen(&tmp.path().join("k"));
    let (ok, _, err, took) = run_btfs(&resolve(&url));
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
    for a in &dht.addrs() {
        put.args(["--node", a]);
    }
    let out = put.output().unwrap();
    let line = json(&out.stdout);
    assert!(out.status.success(), "bep46_put: {line}");
    let pk = line["public_key"].as_str().unwrap().to_string();
    let url2 = format!("magnet:?xs=urn:btpk:{pk}");
    let (ok, _, err, _) = run_btfs(&resolve(&url2));
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
    let port = json(first.as_bytes())["port"].as_u64().unwrap();
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
    let pk3 = json(&out.stdout)["public_key"]
        .as_str()
        .unwrap()
        .to_string();
    let args = MountArgs::new(&format!("magnet:?xs=urn:btpk:{pk3}"))
        .bootstrap(&format!("127.0.0.1:{port}"))
        .timeout(20);
    let (ok, _, err, _) = run_btfs(&args.at(&mnt));
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
    let dht = local_dht();
    let big1 = seeded_bytes(6 << 20, 1);
    let big2 = seeded_bytes(6 << 20, 2);
    // The same 1 MiB in both torrents: at least 15 of its 64 KiB pieces are
    // identical whatever order libtorrent gives the files (small files that
    // differ may come first and shift it by a few bytes).
    let shared = seeded_bytes(1 << 20, 3);
    let mut magnets = Vec::new();
    let mut seeders = Vec::new();
    for (v, big) in [("v1", &big1), ("v2", &big2)] {
        let site = tmp.path().join(v).join("site");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::write(site.join("version.txt"), format!("{v}\n")).unwrap();
        std::fs::write(site.join("a-shared.bin"), &shared).unwrap();
        std::fs::write(site.join("big.bin"), big).unwrap();
        std::fs::write(site.join(format!("only-in-{v}.txt")), v).unwrap();
        let mut s = seeder(&site, &dht.boot());
        magnets.push(s.magnet());
        seeders.push(s);
    }
    let key = tmp.path().join("key");
    let (_, _) = keygen(&key);
    let url = publish(&magnets[0], &key, &[], &dht);

    let mnt = tmp.path().join("mnt");
    let cache = tmp.path().join("cache");
    // In the foreground: its log is its stderr.
    let args = MountArgs::new(&url)
        .foreground()
        .verbose()
        .cache_dir(&cache)
        .args(&["--refresh", "2"])
        .args(&dht.bootstrap_flags());
    let mut m = Mount::foreground(&mnt, &args.build(), Duration::from_secs(60));
    assert_eq!(
        cat(&mnt.join("site/version.txt")).unwrap(),
        b"v1\n",
        "{}",
        log_of(&mut m)
    );
    assert!(ls(&mnt.join("site")).contains("only-in-v1.txt"));
    assert_eq!(
        sha256_bytes(&cat(&mnt.join("site/a-shared.bin")).unwrap()),
        sha256_bytes(&shared)
    );

    // Open v1's big file and read its first 64 KiB.
    let mut f = std::fs::File::open(mnt.join("site/big.bin")).unwrap();
    let mut head = vec![0u8; 65536];
    f.read_exact(&mut head).unwrap();
    assert_eq!(head, big1[..65536]);

    // The key holder publishes v2; the mount shows it within a refresh
    // interval (plus the DHT lookup and the metadata fetch).
    let published = Instant::now();
    publish(&magnets[1], &key, &[], &dht);
    let put_took = published.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if cat(&mnt.join("site/version.txt")).is_ok_and(|c| c == b"v2\n") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "v2 not shown in 60 s:\n{}",
            log_of(&mut m)
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
        sha256_bytes(&cat(&mnt.join("site/big.bin")).unwrap()),
        sha256_bytes(&big2)
    );
    assert!(
        log_of(&mut m).contains("switching from"),
        "{}",
        log_of(&mut m)
    );
    // The pieces v1 already had were copied, not fetched again.
    let log = log_of(&mut m);
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
        sha256_bytes(&cat(&mnt.join("site/a-shared.bin")).unwrap()),
        sha256_bytes(&shared)
    );

    // The file opened before the switch still reads v1, to the end.
    f.seek(SeekFrom::Start(65536)).unwrap();
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).unwrap();
    head.extend_from_slice(&rest);
    assert_eq!(
        sha256_bytes(&head),
        sha256_bytes(&big1),
        "the old handle reads v1"
    );
    drop(f);
    drop(m);
    drop(seeders);
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}
