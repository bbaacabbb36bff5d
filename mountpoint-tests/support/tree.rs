//! Test trees and digests: [`make_tree`], [`sample_spec`], [`sha256_file`],
//! [`tree_digests`].

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
/// One file of a [`make_tree`] spec.
#[derive(Clone, Debug)]
pub enum TreeFile {
    /// UTF-8 text (an empty string gives a zero-length file).
    Text(&'static str),
    /// Exact bytes.
    Bytes(Vec<u8>),
    /// `len` pseudo-random bytes from a splitmix64 generator seeded with
    /// `seed`: the same (len, seed) always gives the same bytes.
    Random(usize, u64),
}

/// `len` deterministic pseudo-random bytes (splitmix64 seeded with `seed`).
pub fn seeded_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Creates `dir` and, under it, each `(relative path, content)` of `spec`
/// (parent directories included). Paths use `/`; names may be non-ASCII.
pub fn make_tree(dir: &Path, spec: &[(&str, TreeFile)]) {
    fs::create_dir_all(dir).expect("create tree root");
    for (rel, content) in spec {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dir");
        }
        let bytes = match content {
            TreeFile::Text(s) => s.as_bytes().to_vec(),
            TreeFile::Bytes(b) => b.clone(),
            TreeFile::Random(len, seed) => seeded_bytes(*len, *seed),
        };
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// The standard sample tree: nested directories, a zero-length file, a
/// 5 MiB + 12345 byte random file (not piece-aligned), a small random file
/// deep down, and a non-ASCII name (`café/naïve résumé.txt`).
pub fn sample_spec() -> Vec<(&'static str, TreeFile)> {
    vec![
        ("index.html", TreeFile::Text("<h1>hello swarm</h1>\n")),
        ("empty.txt", TreeFile::Text("")),
        (
            "media/big.bin",
            TreeFile::Random(5 * 1024 * 1024 + 12345, 1),
        ),
        ("media/deep/er/small.bin", TreeFile::Random(70_000, 2)),
        (
            "café/naïve résumé.txt",
            TreeFile::Text("non-ASCII names survive\n"),
        ),
    ]
}

/// Drops the page cache of `path` (so the next read reaches the FUSE
/// filesystem, or the disk, again).
pub fn drop_page_cache(path: &Path) {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).unwrap();
    // SAFETY: a valid fd; fadvise only drops clean cached pages.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// SHA-256 of `bytes`, 64 lowercase hex digits.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// SHA-256 of the file at `path` (streamed), 64 lowercase hex digits.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

/// Every regular file under `root` as (path relative to root, SHA-256);
/// compare two trees with `assert_eq!(tree_digests(a), tree_digests(b))`.
pub fn tree_digests(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let rd = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
        for entry in rd {
            let path = entry.expect("dir entry").path();
            let ft = fs::symlink_metadata(&path).expect("metadata").file_type();
            if ft.is_dir() {
                walk(root, &path, out);
            } else if ft.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, sha256_file(&path));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `path` as `&str` (test paths are UTF-8), for argument lists.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}
