//! End-to-end tests of the write side (issue 5): `btfs-mount seed DIR` and
//! `btfs-mount --writable [URL] MNT`. Each test re-runs itself in a network
//! namespace of its own (only loopback). Files are written through the
//! mount with real shell tools (`cp`, `echo >`, `dd conv=notrunc`, `mv`,
//! `rm`); what btfs-mount then seeds is downloaded by an independent peer,
//! python3-libtorrent (`lt/ltnode.py --fetch`), and compared byte for byte
//! with the same edits made on an ordinary directory.
//!
//! New torrents are hybrid v1+v2 (BEP 52) unless `--v1-only`: the seed
//! test fetches one with libtorrent by its `btmh` link alone (metadata by
//! the truncated v2 info-hash, piece layers by our answers to its hash
//! requests) and by its `btih` link alone, and `--v1-only` by its v1 link;
//! the mutable test checks the BEP 46 item names the v1 info-hash.
//!
//! Needs root (namespaces, FUSE) and /usr/bin/python3 with libtorrent.
//! Without them each test prints a loud SKIP and passes.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{
    Child, LocalDht, Mount, MountArgs, TreeFile, btfs_mount_bin, free_port, in_netns, lt_fetch,
    make_tree, s, sample_spec, tree_digests, wait_until,
};

/// `btfs-mount ARGS` as a [`Child`] (its own cache dir under `tmp`).
fn btfs(name: &str, tmp: &Path, args: &[&str]) -> Child {
    let mut cmd = Command::new(btfs_mount_bin());
    cmd.args(args)
        .arg("--cache-dir")
        .arg(tmp.join(format!("cache-{name}")));
    Child::spawn(name, cmd)
}

/// Waits for the `n`th (1-based) non-JSON stdout line of `c`.
fn stdout_line(c: &mut Child, n: usize, timeout: Duration) -> String {
    let ok = wait_until(timeout, || {
        c.stdout_lines().len() >= n || c.try_wait().is_some()
    });
    let lines = c.stdout_lines();
    assert!(
        ok && lines.len() >= n,
        "no stdout line {n} within {timeout:?} (got {lines:?})\n{}",
        c.stderr_tail(30)
    );
    lines[n - 1].trim().to_string()
}

/// The info-hash (40 hex) of a magnet link.
fn info_hash_of(magnet: &str) -> String {
    let i = magnet.find("btih:").expect("btih in magnet") + 5;
    magnet[i..i + 40].to_lowercase()
}

/// The v2 info-hash (64 hex) of a magnet link (`xt=urn:btmh:1220...`).
fn info_hash_v2_of(magnet: &str) -> String {
    let i = magnet.find("btmh:1220").expect("btmh in magnet") + 9;
    magnet[i..i + 64].to_lowercase()
}

/// The magnet link naming only the v1 info-hash, or only the v2 one.
fn btih_only(magnet: &str) -> String {
    format!("magnet:?xt=urn:btih:{}", info_hash_of(magnet))
}

fn btmh_only(magnet: &str) -> String {
    format!("magnet:?xt=urn:btmh:1220{}", info_hash_v2_of(magnet))
}

/// libtorrent's view of the BEP 46 item of public key `pk` (64 hex) and
/// salt `salt` (hex), once its seq is at least `want_seq`
/// (`lt/bep46_lt_get.py`): its JSON line (`seq`, `ih` in hex).
fn lt_get_item(pk: &str, salt: &str, want_seq: i64, dht: &LocalDht) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("mountpoint-tests/lt/bep46_lt_get.py");
    let out = Command::new(support::PYTHON)
        .arg(script)
        .args(["--public-key", pk, "--salt", salt])
        .args(dht.bootstrap_flags())
        .args(["--want-seq", &want_seq.to_string(), "--timeout", "30"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bep46_lt_get failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Runs `sh -c SCRIPT` in `dir`; panics with its stderr on failure.
fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sh -c {script:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shell edits of the writable test, run in the tree's root.
const EDITS: &str = "set -e
cp -r ../site/* .
echo hi > new.txt
dd if=/dev/urandom of=patch.bin bs=1000 count=70 2>/dev/null
dd if=patch.bin of=media/big.bin bs=1000 seek=1000 conv=notrunc 2>/dev/null
mkdir -p docs/old
mv index.html docs/home.html
mv media docs/media
rm empty.txt
rm patch.bin
rmdir docs/old
truncate -s 1000 docs/media/deep/er/small.bin
truncate -s 100 grown.txt
touch -m -d @1577836800 docs/home.html
";

/// The v1 info-hash `seed DIR` gave a `site` directory of
/// [`sample_spec`] before BEP 52 support (and `seed --v1-only` gives now).
const SAMPLE_V1_INFO_HASH: &str = "b68febcb438375b52a044d3236cbd40ddc1e2f9a";

#[test]
fn seed_dir_is_fetched_by_libtorrent_and_its_info_hash_is_stable() {
    if !in_netns("seed_dir_is_fetched_by_libtorrent_and_its_info_hash_is_stable") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("a/site");
    make_tree(&site, &sample_spec());
    std::os::unix::fs::symlink("/etc/passwd", site.join("passwd-link")).unwrap();
    let port = free_port().to_string();
    let mut seed = btfs(
        "seed",
        tmp.path(),
        &["seed", s(&site), "--no-dht", "--port", &port, "-vv"],
    );
    let magnet = stdout_line(&mut seed, 1, Duration::from_secs(60));
    // A hybrid by default: both `xt`.
    assert!(
        magnet.starts_with("magnet:?xt=urn:btih:") && magnet.contains("&xt=urn:btmh:1220"),
        "{magnet}"
    );
    assert!(
        seed.stderr().contains("skipping") && seed.stderr().contains("passwd-link"),
        "{}",
        seed.stderr()
    );
    let ours = format!("127.0.0.1:{port}");
    // A libtorrent leecher that knows only the v2 info-hash: metadata by
    // BEP 9 under the truncated v2 hash, piece layers by hash requests.
    let got = lt_fetch(tmp.path(), &btmh_only(&magnet), &ours, "by-btmh");
    assert_eq!(tree_digests(&got.join("site")), tree_digests(&site));
    assert!(!got.join("site/passwd-link").exists());
    // libtorrent 2.0.8 asks each file's piece layer (here, with 16 KiB
    // pieces, the block layer 0) before it downloads: every request is
    // answered from the layers made with the torrent, none rejected.
    let log = seed.stderr();
    assert!(log.contains("hash request answered"), "{log}");
    assert!(!log.contains("hash request rejected"), "{log}");
    // One that knows only the v1 info-hash.
    let got = lt_fetch(tmp.path(), &btih_only(&magnet), &ours, "by-btih");
    assert_eq!(tree_digests(&got.join("site")), tree_digests(&site));
    seed.stop(Duration::from_secs(5));

    // The same files elsewhere, written later: the same info-hashes.
    let other = tmp.path().join("b/site");
    make_tree(&other, &sample_spec());
    let mut again = btfs(
        "seed2",
        tmp.path(),
        &["seed", s(&other), "--no-dht", "--port", "0"],
    );
    let magnet2 = stdout_line(&mut again, 1, Duration::from_secs(60));
    assert_eq!(info_hash_of(&magnet2), info_hash_of(&magnet));
    assert_eq!(info_hash_v2_of(&magnet2), info_hash_v2_of(&magnet));
    again.stop(Duration::from_secs(5));

    // --v1-only: a BEP 3 torrent, the link and info-hash of before BEP 52
    // support (pinned: sample_spec's bytes are fixed), fetched by libtorrent.
    let port = free_port().to_string();
    let mut v1 = btfs(
        "seed-v1",
        tmp.path(),
        &["seed", s(&other), "--v1-only", "--no-dht", "--port", &port],
    );
    let magnet_v1 = stdout_line(&mut v1, 1, Duration::from_secs(60));
    assert!(!magnet_v1.contains("btmh"), "{magnet_v1}");
    assert_eq!(info_hash_of(&magnet_v1), SAMPLE_V1_INFO_HASH, "{magnet_v1}");
    let got = lt_fetch(
        tmp.path(),
        &magnet_v1,
        &format!("127.0.0.1:{port}"),
        "v1-only",
    );
    assert_eq!(tree_digests(&got.join("site")), tree_digests(&site));
    v1.stop(Duration::from_secs(5));
    eprintln!("seed test took {:.2} s", t0.elapsed().as_secs_f64());
}

#[test]
fn shell_edits_on_a_writable_mount_are_published_and_fetched_by_libtorrent() {
    if !in_netns("shell_edits_on_a_writable_mount_are_published_and_fetched_by_libtorrent") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    make_tree(&site, &sample_spec());
    // The expected result: the same edits on a plain directory.
    let reference = tmp.path().join("ref");
    std::fs::create_dir_all(&reference).unwrap();
    sh(&reference, EDITS);

    let mnt = tmp.path().join("mnt");
    let port = free_port();
    let cache = tmp.path().join("cache");
    let args = MountArgs::writable()
        .foreground()
        .verbose()
        .no_dht()
        .port(port)
        .cache_dir(&cache);
    let mut m = Mount::foreground(&mnt, &args.build(), Duration::from_secs(30));
    // `patch.bin` is random: the mount gets the reference's bytes (taken
    // back from the patched file).
    let patch = tmp.path().join("patch.bin");
    {
        let big = std::fs::read(reference.join("docs/media/big.bin")).unwrap();
        std::fs::write(&patch, &big[1_000_000..1_070_000]).unwrap();
    }
    let edits = EDITS.replace(
        "dd if=/dev/urandom of=patch.bin bs=1000 count=70 2>/dev/null",
        &format!("cp {} patch.bin", s(&patch)),
    );
    let mp = m.path().to_path_buf();
    sh(&mp, &edits);
    // Reads see what was written, before any unmount.
    assert_eq!(std::fs::read(mp.join("new.txt")).unwrap(), b"hi\n");
    assert_eq!(tree_digests(&mp), tree_digests(&reference));
    let mtime = Command::new("stat")
        .args(["-c", "%Y", s(&mp.join("docs/home.html"))])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&mtime.stdout).trim(), "1577836800");
    let statfs = Command::new("stat").args(["-f", s(&mp)]).output().unwrap();
    assert!(statfs.status.success());

    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mp)
        .status()
        .unwrap();
    assert!(st.success());
    let child = m.child().expect("foreground");
    let magnet = stdout_line(child, 1, Duration::from_secs(60));
    assert!(magnet.contains("&dn=mnt"), "{magnet}");
    let got = lt_fetch(tmp.path(), &magnet, &format!("127.0.0.1:{port}"), "draft");
    assert_eq!(tree_digests(&got.join("mnt")), tree_digests(&reference));

    // The new torrent went into the cache and the draft is gone: once the
    // seeding process stops, its magnet mounts from the cache alone.
    let drafts: Vec<_> = std::fs::read_dir(cache.join("staging"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(drafts.is_empty(), "staging left behind: {drafts:?}");
    child.stop(Duration::from_secs(10));
    let again = tmp.path().join("again");
    let args = MountArgs::new(&magnet)
        .foreground()
        .no_dht()
        .arg("--no-lsd")
        .read_timeout(5)
        .cache_dir(&cache);
    let reader = Mount::foreground(&again, &args.build(), Duration::from_secs(30));
    assert_eq!(
        tree_digests(&reader.path().join("mnt")),
        tree_digests(&reference)
    );
    reader.unmount_and_wait(Duration::from_secs(10));
    eprintln!("writable test took {:.2} s", t0.elapsed().as_secs_f64());
}

#[test]
fn kill_9_loses_no_fsynced_file_and_resume_publishes_it() {
    if !in_netns("kill_9_loses_no_fsynced_file_and_resume_publishes_it") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let cache = tmp.path().join("cache");
    let args = |port: u16| {
        MountArgs::writable()
            .foreground()
            .verbose()
            .no_dht()
            .port(port)
            .cache_dir(&cache)
    };
    let m = Mount::foreground(&mnt, &args(0).build(), Duration::from_secs(30));
    let mp = m.path().to_path_buf();
    make_tree(
        &tmp.path().join("src"),
        &[("big.bin", TreeFile::Random(3_000_000, 9))],
    );
    sh(
        &mp,
        &format!(
            "set -e
mkdir -p d/e
echo synced > d/e/a.txt
sync d/e/a.txt
dd if={} of=big.bin bs=64k conv=fsync 2>/dev/null
echo moved > tmp.txt && sync tmp.txt && mv tmp.txt d/moved.txt
echo later > b.txt
sync b.txt
dd if=/dev/zero of=b.txt bs=1 count=3 seek=1 conv=notrunc,fsync 2>/dev/null",
            s(&tmp.path().join("src/big.bin"))
        ),
    );
    // kill -9 in the middle of a write: a file being written, not synced.
    let mut writer = std::process::Command::new("sh")
        .arg("-c")
        .arg("while true; do echo x; done > unsynced.txt")
        .current_dir(&mp)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for pid in m.pids() {
        // SAFETY: kill(2) on the btfs-mount process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    let _ = writer.kill();
    let _ = writer.wait();
    drop(m); // unmounts the dead mount
    assert!(!support::is_mounted(&mnt));

    let port = free_port();
    let resume = args(port).arg("--resume");
    let mut m = Mount::foreground(&mnt, &resume.build(), Duration::from_secs(30));
    let mp = m.path().to_path_buf();
    assert_eq!(std::fs::read(mp.join("d/e/a.txt")).unwrap(), b"synced\n");
    assert_eq!(std::fs::read(mp.join("d/moved.txt")).unwrap(), b"moved\n");
    assert_eq!(std::fs::read(mp.join("b.txt")).unwrap(), b"l\0\0\0r\n");
    assert_eq!(
        support::sha256_file(&mp.join("big.bin")),
        support::sha256_file(&tmp.path().join("src/big.bin"))
    );
    assert!(!mp.join("tmp.txt").exists());
    sh(&mp, "rm -f unsynced.txt; echo resumed > r.txt");
    let expected = tree_digests(&mp);
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mp)
        .status()
        .unwrap();
    assert!(st.success());
    let magnet = stdout_line(m.child().unwrap(), 1, Duration::from_secs(60));
    let got = lt_fetch(tmp.path(), &magnet, &format!("127.0.0.1:{port}"), "resumed");
    assert_eq!(tree_digests(&got.join("mnt")), expected);
    eprintln!("kill -9 test took {:.2} s", t0.elapsed().as_secs_f64());
}

#[test]
fn writable_mount_of_a_mutable_url_publishes_the_next_seq() {
    if !in_netns("writable_mount_of_a_mutable_url_publishes_the_next_seq") {
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dht = LocalDht::start(3);
    std::thread::sleep(Duration::from_secs(2));
    let boots = dht.bootstrap_flags();
    let boots: Vec<&str> = boots.iter().map(String::as_str).collect();
    let key = tmp.path().join("site.key");
    let out = Command::new(btfs_mount_bin())
        .args(["keygen", "--out", s(&key)])
        .output()
        .unwrap();
    assert!(out.status.success());

    // Version 1: `seed DIR --key` prints the magnet, then the mutable URL.
    let site = tmp.path().join("site");
    make_tree(&site, &sample_spec());
    let seed_port = free_port().to_string();
    let mut args = vec![
        "seed",
        s(&site),
        "--key",
        s(&key),
        "--salt",
        "6e",
        "--port",
        &seed_port,
    ];
    args.extend(&boots);
    let mut seed = btfs("seed", tmp.path(), &args);
    let magnet1 = stdout_line(&mut seed, 1, Duration::from_secs(60));
    let url = stdout_line(&mut seed, 2, Duration::from_secs(60));
    assert!(
        url.starts_with("magnet:?xs=urn:btpk:") && url.ends_with("&s=6e"),
        "{url}"
    );
    eprintln!("v1 published at {:.2} s", t0.elapsed().as_secs_f64());

    // Edit the latest version through a writable mount of the URL.
    let mnt = tmp.path().join("mnt");
    let port = free_port();
    let cache = tmp.path().join("cache-w");
    let args = MountArgs::new(&url)
        .arg("--writable")
        .foreground()
        .verbose()
        .args(&["--key", s(&key)])
        .port(port)
        .cache_dir(&cache)
        .peer(&format!("127.0.0.1:{seed_port}"))
        .args(&boots);
    let mut m = Mount::foreground(&mnt, &args.build(), Duration::from_secs(60));
    let mp = m.path().to_path_buf();
    assert_eq!(
        std::fs::read(mp.join("site/index.html")).unwrap(),
        std::fs::read(site.join("index.html")).unwrap()
    );
    // The same edits on a copy of the site: the expected version 2.
    let reference = tmp.path().join("ref/site");
    std::fs::create_dir_all(&reference).unwrap();
    let script = "set -e
echo v2 > new.txt
rm index.html
printf 'ABCD' | dd of=media/big.bin bs=1 seek=4000000 conv=notrunc 2>/dev/null
mv café renamed
truncate -s 1000 media/deep/er/small.bin";
    sh(&reference, &format!("cp -r {}/. . && {script}", s(&site)));
    sh(&mp.join("site"), script);
    assert_eq!(tree_digests(&mp.join("site")), tree_digests(&reference));
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mp)
        .status()
        .unwrap();
    assert!(st.success());
    let child = m.child().unwrap();
    let magnet2 = stdout_line(child, 1, Duration::from_secs(60));
    let url2 = stdout_line(child, 2, Duration::from_secs(60));
    assert_eq!(url2, url);
    assert_ne!(info_hash_of(&magnet2), info_hash_of(&magnet1));
    assert!(magnet2.contains("&xt=urn:btmh:1220"), "a hybrid: {magnet2}");
    // The URL is printed on stdout just before "published seq" on stderr.
    assert!(
        wait_until(Duration::from_secs(5), || child
            .stderr()
            .contains("published seq 2")),
        "{}",
        child.stderr_tail(20)
    );
    // libtorrent reads the item: seq 2, `ih` the hybrid's v1 info-hash (so
    // readers that know only BEP 46 + v1 understand it).
    let pk = &url["magnet:?xs=urn:btpk:".len()..][..64];
    let item = lt_get_item(pk, "6e", 2, &dht);
    assert_eq!(item["seq"], 2, "{item}");
    assert_eq!(
        item["ih"].as_str(),
        Some(info_hash_of(&magnet2).as_str()),
        "{item}"
    );
    eprintln!("v2 published at {:.2} s", t0.elapsed().as_secs_f64());
    // v2 went into the cache; its unchanged (renamed) file shares the bytes
    // of v1's cache file (a hard link, not a copy).
    {
        use std::os::unix::fs::MetadataExt;
        let v1 = cache
            .join(info_hash_of(&magnet1))
            .join("files/site/café/naïve résumé.txt");
        let v2 = cache
            .join(info_hash_of(&magnet2))
            .join("files/site/renamed/naïve résumé.txt");
        let (m1, m2) = (
            std::fs::metadata(&v1).unwrap(),
            std::fs::metadata(&v2).unwrap(),
        );
        assert_eq!((m1.dev(), m1.ino()), (m2.dev(), m2.ino()), "not linked");
        assert_eq!(std::fs::read(&v2).unwrap(), b"non-ASCII names survive\n");
    }

    // A second btfs-mount resolving the URL sees version 2.
    let mnt2 = tmp.path().join("mnt2");
    let cache2 = tmp.path().join("cache-r");
    let peer = format!("127.0.0.1:{port}");
    let args = MountArgs::new(&url)
        .foreground()
        .verbose()
        .cache_dir(&cache2)
        .peer(&peer)
        .args(&boots);
    let reader = Mount::foreground(&mnt2, &args.build(), Duration::from_secs(60));
    assert_eq!(
        tree_digests(&reader.path().join("site")),
        tree_digests(&reference)
    );
    reader.unmount_and_wait(Duration::from_secs(10));
    // The hybrid's piece layers are in the cache beside its files (hash
    // requests are answered from them, after a remount too).
    let layers = cache.join(info_hash_of(&magnet2)).join("piece_layers");
    assert!(
        std::fs::metadata(&layers).is_ok_and(|m| m.len() > 32),
        "{}",
        layers.display()
    );
    // libtorrent downloads version 2 from the writable mount's seed, given
    // only its v2 info-hash.
    let got = lt_fetch(tmp.path(), &btmh_only(&magnet2), &peer, "v2");
    assert_eq!(tree_digests(&got.join("site")), tree_digests(&reference));
    eprintln!(
        "mutable writable test took {:.2} s",
        t0.elapsed().as_secs_f64()
    );
}

/// How the one-byte name `\xff` is shown: a `\` and three ASCII characters
/// (not a Windows path separator, whatever clippy thinks of the literal).
const ESCAPED_FF: &str = "\\xff";

#[test]
fn names_that_are_not_utf8_survive_seed_mount_edit_and_publish() {
    if !in_netns("names_that_are_not_utf8_survive_seed_mount_edit_and_publish") {
        return;
    }
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let tmp = tempfile::tempdir().unwrap();
    // Latin-1 names on disk: `café.txt`, `ÿ/x`, and a valid name with `\`.
    let site = tmp.path().join("names");
    std::fs::create_dir_all(site.join(OsStr::from_bytes(b"\xff"))).unwrap();
    std::fs::write(site.join(OsStr::from_bytes(b"caf\xe9.txt")), b"latin-1\n").unwrap();
    std::fs::write(site.join(OsStr::from_bytes(b"\xff/x")), b"x\n").unwrap();
    let seed_port = free_port().to_string();
    let mut seed = btfs(
        "seed",
        tmp.path(),
        &["seed", s(&site), "--no-dht", "--port", &seed_port],
    );
    let magnet1 = stdout_line(&mut seed, 1, Duration::from_secs(60));
    assert!(!seed.stderr().contains("skipping"), "{}", seed.stderr());

    // A writable mount shows them escaped; a name typed with `\xHH` stands
    // for the byte.
    let mnt = tmp.path().join("mnt");
    let port = free_port();
    let peer1 = format!("127.0.0.1:{seed_port}");
    let args = MountArgs::new(&magnet1)
        .arg("--writable")
        .foreground()
        .verbose()
        .no_dht()
        .port(port)
        .cache_dir(&tmp.path().join("cache-w"))
        .peer(&peer1);
    let mut m = Mount::foreground(&mnt, &args.build(), Duration::from_secs(60));
    let mp = m.path().join("names");
    let mut shown: Vec<String> = std::fs::read_dir(&mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    shown.sort();
    assert_eq!(shown, ["\\xff", "caf\\xe9.txt"]);
    assert_eq!(
        std::fs::read(mp.join("caf\\xe9.txt")).unwrap(),
        b"latin-1\n"
    );
    assert_eq!(
        std::fs::read(mp.join(ESCAPED_FF).join("x")).unwrap(),
        b"x\n"
    );
    sh(&mp, "printf new > 'new\\xe8.txt'");
    // A raw non-UTF-8 name is taken too (kept in its escaped form); a
    // literal `\x41` spells no invalid byte, so it stays literal.
    sh(
        &mp,
        "printf raw > \"$(printf 'raw\\347.txt')\" && printf lit > 'ok\\x41.txt'",
    );
    assert_eq!(std::fs::read(mp.join("raw\\xe7.txt")).unwrap(), b"raw");
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(m.path())
        .status()
        .unwrap();
    assert!(st.success());
    let child = m.child().unwrap();
    let magnet2 = stdout_line(child, 1, Duration::from_secs(60));
    assert_ne!(info_hash_of(&magnet2), info_hash_of(&magnet1));

    // A fresh read-only mount of the new torrent: the same names, and the
    // info dictionary holds the raw bytes.
    let mnt2 = tmp.path().join("mnt2");
    let cache_r = tmp.path().join("cache-r");
    let peer2 = format!("127.0.0.1:{port}");
    let args = MountArgs::new(&magnet2)
        .foreground()
        .no_dht()
        .cache_dir(&cache_r)
        .peer(&peer2);
    let reader = Mount::foreground(&mnt2, &args.build(), Duration::from_secs(60));
    let r = reader.path().join("names");
    assert_eq!(std::fs::read(r.join("caf\\xe9.txt")).unwrap(), b"latin-1\n");
    assert_eq!(std::fs::read(r.join(ESCAPED_FF).join("x")).unwrap(), b"x\n");
    assert_eq!(std::fs::read(r.join("new\\xe8.txt")).unwrap(), b"new");
    assert_eq!(std::fs::read(r.join("raw\\xe7.txt")).unwrap(), b"raw");
    // the literal backslash is removed on display, as libtorrent does
    assert_eq!(std::fs::read(r.join("okx41.txt")).unwrap(), b"lit");
    let info = std::fs::read(cache_r.join(info_hash_of(&magnet2)).join("info")).unwrap();
    for raw in [
        &b"8:caf\xe9.txt"[..],
        b"8:new\xe8.txt",
        b"8:raw\xe7.txt",
        b"10:ok\\x41.txt",
        b"1:\xff",
        b"1:x",
    ] {
        assert!(
            info.windows(raw.len()).any(|w| w == raw),
            "{} not in the info dictionary",
            String::from_utf8_lossy(raw)
        );
    }
    reader.unmount_and_wait(Duration::from_secs(10));
}

#[test]
fn background_writable_mount_returns_at_once_and_logs_its_magnet() {
    if !in_netns("background_writable_mount_returns_at_once_and_logs_its_magnet") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(&mnt).unwrap();
    // `$(...)` returns once mounted: the daemon keeps no copy of our stdout.
    let t = Instant::now();
    let out = Command::new("timeout")
        .arg("60")
        .arg("sh")
        .arg("-c")
        .arg(format!(
            "x=$('{}' --writable '{}' --no-dht --no-lsd --cache-dir '{}'); echo \"[$x]\"",
            btfs_mount_bin().display(),
            mnt.display(),
            cache.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
    eprintln!(
        "background writable mount returned in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        stderr.contains("the magnet link and the log go to"),
        "{stderr}"
    );
    let pids = support::btfs_mount_pids(&std::fs::canonicalize(&mnt).unwrap());
    assert!(!pids.is_empty(), "no daemon found");
    std::fs::write(mnt.join("hello.txt"), b"hi\n").unwrap();
    let st = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    // The magnet goes to the log beside the (then deleted) draft.
    let log_with_magnet = || -> Option<String> {
        std::fs::read_dir(cache.join("staging"))
            .ok()?
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .find(|t| t.contains("magnet:?xt=urn:btih:"))
    };
    let found = support::wait_until(Duration::from_secs(30), || log_with_magnet().is_some());
    for pid in &pids {
        // SAFETY: a process this test started (its mountpoint is ours).
        unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
    }
    assert!(found, "no magnet link in the log");
    let log = log_with_magnet().unwrap();
    let magnet = log
        .lines()
        .find(|l| l.starts_with("magnet:?xt=urn:btih:"))
        .expect("the magnet on a line of its own");
    // one file at the root: a single-file torrent named after it
    assert!(magnet.contains("&dn=hello.txt"), "{magnet}");
    let dirs: Vec<_> = std::fs::read_dir(cache.join("staging"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(dirs.is_empty(), "the published draft is left: {dirs:?}");
    let ih = info_hash_of(magnet);
    assert_eq!(
        std::fs::read(cache.join(&ih).join("files/hello.txt")).unwrap(),
        b"hi\n"
    );
}
