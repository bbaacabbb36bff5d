//! Helpers for end-to-end tests that serve an info dictionary, byte for
//! byte, from the scripted BEP 9 peer `lt/bep9_peer.py`, and mount it with
//! `btfs-mount --no-dht --peer`. Include after the harness:
//!
//! ```ignore
//! #[path = "support/mod.rs"]
//! mod support;
//! #[path = "support/bep9.rs"]
//! mod bep9;
//! ```
//!
//! - [`Bep9Peer`]: the scripted peer as a [`Child`] (killed on drop).
//! - [`Sandbox`]: a temp tree `root/a/b/c/{cache,mnt}`, so that anything
//!   written through `..` from the cache lands inside `root` and is caught
//!   by [`Sandbox::assert_confined`].
//! - [`mount_ok`] / [`mount_refused`]: `btfs-mount` in its default background
//!   mode, expected to mount, or to exit non-zero with a given message.
//! - [`listing`]: the mounted tree as path → [`Node`]; [`ls_r`] runs
//!   `ls -R -l`, [`ls`] any `ls`, timed.

#![allow(dead_code)] // each test file uses a subset

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// Path of `bep9_peer.py`.
pub fn bep9_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mountpoint-tests/lt/bep9_peer.py")
}

/// The scripted peer serving one raw info dictionary (and optionally data).
pub struct Bep9Peer {
    pub child: Child,
    ready: Value,
    /// Holds the info and blob files.
    _dir: tempfile::TempDir,
}

impl Bep9Peer {
    /// Serves `info` (raw bytes, as is) and no piece data.
    pub fn metadata_only(info: &[u8]) -> Bep9Peer {
        Bep9Peer::start(info, &[], &["--no-data"])
    }

    /// Serves the v2 info dictionary `info` under its truncated SHA-256
    /// (BEP 52; [`Bep9Peer::magnet`] is then a `btmh` link), claims all
    /// `num_pieces` pieces but sends none, and answers hash requests for
    /// whole piece layers from the `piece layers` of the .torrent file
    /// `torrent`.
    pub fn v2_metadata_and_layers(info: &[u8], torrent: &Path, num_pieces: u32) -> Bep9Peer {
        let n = num_pieces.to_string();
        let t = torrent.to_str().expect("UTF-8 path");
        Bep9Peer::start(
            info,
            &[],
            &["--no-data", "--v2", "--torrent", t, "--have-pieces", &n],
        )
    }

    /// Serves `info` and the piece space: zeros overlaid with each
    /// `(offset, bytes)` blob. `extra` adds `bep9_peer.py` flags.
    pub fn start(info: &[u8], blobs: &[(u64, &[u8])], extra: &[&str]) -> Bep9Peer {
        let dir = tempfile::Builder::new()
            .prefix("bep9-peer-")
            .tempdir()
            .expect("temp dir");
        let info_path = dir.path().join("info");
        fs::write(&info_path, info).expect("write info");
        let mut cmd = Command::new(PYTHON);
        cmd.arg(bep9_script()).arg("--info").arg(&info_path);
        for (i, (offset, bytes)) in blobs.iter().enumerate() {
            let p = dir.path().join(format!("blob{i}"));
            fs::write(&p, bytes).expect("write blob");
            cmd.arg("--blob").arg(format!("{offset}:{}", p.display()));
        }
        cmd.args(extra);
        let mut child = Child::spawn("bep9_peer", cmd);
        let ready = child.wait_event("ready", Duration::from_secs(60));
        Bep9Peer {
            child,
            ready,
            _dir: dir,
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.ready["port"].as_u64().expect("port"))
    }

    /// `magnet:?xt=urn:btih:<sha1 of the info bytes>` (no peer in it), or
    /// with `--v2` `magnet:?xt=urn:btmh:1220<sha256 of them>`.
    pub fn magnet(&self) -> String {
        self.ready["magnet"].as_str().expect("magnet").to_string()
    }

    /// The SHA-1 of the served bytes, 40 hex digits.
    pub fn info_hash(&self) -> String {
        self.ready["info_hash"]
            .as_str()
            .expect("info_hash")
            .to_string()
    }
}

/// A temp tree where the cache sits three levels below the root.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub cache: PathBuf,
    pub mnt: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("btfs-sandbox-")
            .tempdir()
            .expect("temp dir");
        let deep = dir.path().join("a/b/c");
        let cache = deep.join("cache");
        let mnt = deep.join("mnt");
        fs::create_dir_all(&cache).expect("mkdir cache");
        fs::create_dir_all(&mnt).expect("mkdir mnt");
        Sandbox { dir, cache, mnt }
    }

    /// Asserts that nothing exists in the sandbox but `a/b/c/{cache,mnt}`
    /// (and what is under the cache), that the mountpoint (when nothing is
    /// mounted on it) is empty, and that nothing under the cache is a
    /// symlink or has a name that could climb out. Returns every path under
    /// the cache, relative to it.
    pub fn assert_confined(&self) -> Vec<String> {
        let mut outside = Vec::new();
        walk(self.dir.path(), &mut |p| {
            if !p.starts_with(&self.cache) && !p.starts_with(&self.mnt) {
                let rel = p.strip_prefix(self.dir.path()).expect("in sandbox");
                if !["a", "a/b", "a/b/c"].contains(&rel.to_str().unwrap_or("?")) {
                    outside.push(p.display().to_string());
                }
            }
        });
        assert!(
            outside.is_empty(),
            "written outside the cache dir: {outside:?}"
        );
        if !is_mounted(&self.mnt) {
            let left: Vec<_> = fs::read_dir(&self.mnt).expect("read mnt").collect();
            assert!(left.is_empty(), "the mountpoint directory was written to");
        }
        let mut inside = Vec::new();
        walk(&self.cache, &mut |p| {
            let md = fs::symlink_metadata(p).expect("metadata");
            assert!(
                !md.file_type().is_symlink(),
                "symlink in the cache: {}",
                p.display()
            );
            let rel = p.strip_prefix(&self.cache).expect("in cache");
            for c in rel.components() {
                let s = c.as_os_str().as_encoded_bytes();
                assert!(
                    !s.is_empty() && s != b"." && s != b".." && s.len() <= 255,
                    "bad name in the cache: {}",
                    p.display()
                );
            }
            inside.push(rel.to_string_lossy().into_owned());
        });
        inside
    }
}

/// Calls `f` on every path under `root` (not `root` itself), depth first,
/// without following symlinks and without entering mount points.
fn walk(root: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = fs::read_dir(root) else { return };
    for e in rd {
        let p = e.expect("dir entry").path();
        f(&p);
        let md = fs::symlink_metadata(&p).expect("metadata");
        if md.is_dir() && !is_mounted(&p) {
            walk(&p, f);
        }
    }
}

/// Common `btfs-mount` arguments: the peer only, no DHT, the sandbox cache.
fn mount_args(peer: &Bep9Peer, sb: &Sandbox, extra: &[&str]) -> MountArgs {
    MountArgs::new(&peer.magnet())
        .no_dht()
        .peer(&peer.addr())
        .cache_dir(&sb.cache)
        .timeout(60)
        .read_timeout(60)
        .args(extra)
}

/// Mounts `peer`'s torrent on the sandbox's mountpoint in the default
/// background mode; panics with btfs-mount's output if it does not mount.
pub fn mount_ok(peer: &Bep9Peer, sb: &Sandbox, extra: &[&str]) -> Mount {
    Mount::background(&sb.mnt, &mount_args(peer, sb, extra).build())
}

/// Runs `btfs-mount` (background mode) and expects it to exit non-zero
/// within 90 s, with nothing mounted, and a stderr that contains `expect`.
/// Returns its stderr.
pub fn mount_refused(peer: &Bep9Peer, sb: &Sandbox, expect: &str) -> String {
    let mut cmd = Command::new(btfs_mount_bin());
    cmd.args(mount_args(peer, sb, &[]).at(&sb.mnt));
    let started = Instant::now();
    let mut child = Child::spawn("btfs-mount", cmd);
    let status = child
        .wait_exit(Duration::from_secs(90))
        .expect("btfs-mount still running after 90 s");
    let stderr = child.stderr();
    eprintln!(
        "btfs-mount exited with {status} after {:.2} s: {}",
        started.elapsed().as_secs_f64(),
        stderr.trim()
    );
    assert!(!status.success(), "btfs-mount should fail:\n{stderr}");
    assert!(!is_mounted(&sb.mnt), "nothing may be mounted");
    assert!(
        stderr.contains(expect),
        "stderr should say {expect:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "btfs-mount panicked:\n{stderr}"
    );
    stderr
}

/// One entry of a mounted tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(u64),
    Link(String),
}

/// Every entry under `root` as relative path → [`Node`] (symlinks not
/// followed).
pub fn listing(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
            let p = e.expect("dir entry").path();
            let md = fs::symlink_metadata(&p).expect("metadata");
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let node = if md.file_type().is_symlink() {
                Node::Link(
                    fs::read_link(&p)
                        .expect("readlink")
                        .to_string_lossy()
                        .into_owned(),
                )
            } else if md.is_dir() {
                todo.push(p.clone());
                Node::Dir
            } else {
                Node::File(md.len())
            };
            out.insert(rel, node);
        }
    }
    out
}

/// Runs `ls -R -l ROOT`; returns its output and how long it took.
pub fn ls_r(root: &Path) -> (String, Duration) {
    ls(root, &["-R", "-l"])
}

/// Runs `ls ARGS ROOT` (stdout is a pipe: no colours, so plain `ls -R`
/// reads directories without a lookup per entry); returns its output and
/// how long it took.
pub fn ls(root: &Path, args: &[&str]) -> (String, Duration) {
    let started = Instant::now();
    let out = Command::new("ls")
        .args(args)
        .arg(root)
        .output()
        .expect("run ls");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "ls {args:?} {} failed: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), took)
}

/// The expected tree of a list of non-pad entries `(path, Node)`: the
/// entries plus every parent directory.
pub fn expected_tree(entries: &[(String, Node)]) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    for (path, node) in entries {
        let mut prefix = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            out.insert(prefix.clone(), Node::Dir);
        }
        out.insert(path.clone(), node.clone());
    }
    out
}
