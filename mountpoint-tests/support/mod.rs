//! The one test harness of btfs-mount: for the end-to-end tests in
//! `mountpoint-tests/` and the library and protocol tests in `tests/`.
//!
//! Include it from `mountpoint-tests/X.rs` with
//! `#[path = "support/mod.rs"] mod support;`, from `tests/X.rs` with
//! `#[path = "../mountpoint-tests/support/mod.rs"] mod support;`. What is
//! here:
//!
//! - [`in_netns`]: re-runs one test inside `unshare --net --mount` (only
//!   loopback, private mounts), as the project's network rules demand, and
//!   checks that exactly one inner test ran.
//! - [`skip_or_fail`]: a loud SKIP, or a failure under `CI=true`.
//! - [`runtime`]: a tokio runtime for a test body.
//! - [`Child`] (`child.rs`): a spawned process killed by PID on drop, its
//!   stderr kept in a file and its tail printed when the test fails, its
//!   stdout read as JSON event lines ([`Child::wait_event`]).
//! - `lt.rs`: [`LtNode`], a python3-libtorrent peer (`lt/ltnode.py`) as a
//!   [`Child`]; [`LtNode::seed_tree`], a seeder fixture; [`LocalDht`], a
//!   local DHT of ltnode nodes; [`LtDht`], libtorrent DHT nodes driven by
//!   commands (`lt/lt_dht.py`).
//! - `mount.rs`: [`Mount`], a `btfs-mount` mount, unmounted and its process
//!   killed on drop; [`MountArgs`], its command line.
//! - `tree.rs`: [`make_tree`], [`sha256_file`], [`sha256_bytes`],
//!   [`tree_digests`].
//! - [`free_port`], [`wait_until`], [`wait_timeout`], [`ChildGuard`].
//!
//! Every helper panics with a clear message instead of returning errors:
//! these are test helpers, and a panic is a test failure.

#![allow(dead_code)] // each test file uses a subset

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

mod child;
mod lt;
mod mount;
mod seeded_tree;
mod tree;

// The whole harness under `support::`; each test file uses a subset.
#[allow(unused_imports)]
pub use child::Child;
#[allow(unused_imports)]
pub use lt::{
    LocalDht, LtDht, LtNode, lt_fetch, lt_node, ltnode_script, piece_sha1s, torrent_file_offset,
};
#[allow(unused_imports)]
pub use mount::{Mount, MountArgs, Tmpfs, btfs_mount_bin, btfs_mount_pids, is_mounted, unmount};
#[allow(unused_imports)]
pub use seeded_tree::SeededTree;
#[allow(unused_imports)]
pub use serde_json::Value;
#[allow(unused_imports)]
pub use tree::{
    TreeFile, drop_page_cache, make_tree, s, sample_spec, seeded_bytes, sha256_bytes, sha256_file,
    tree_digests,
};

/// How long a test may run inside its namespace before [`in_netns`] kills it
/// (seconds); overridden by env `BTFS_TEST_TIMEOUT`.
pub const DEFAULT_TEST_TIMEOUT_SECS: u64 = 600;

/// The python interpreter that has Debian's `python3-libtorrent`.
pub const PYTHON: &str = "/usr/bin/python3";

/// Writes straight to the process's stderr, past libtest's output capture.
fn loud(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

/// True under `CI=true`, where a skipped test is a failed test.
pub fn is_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// A test that cannot run here says so: under `CI=true` it panics (a skip
/// is a failure in CI); otherwise it prints one loud `SKIP test: why` line
/// on stderr, past libtest's capture, and the caller returns.
///
/// ```ignore
/// let Some(x) = what_the_test_needs() else {
///     support::skip_or_fail("my_test", "no X on this machine");
///     return;
/// };
/// ```
pub fn skip_or_fail(test: &str, why: &str) {
    let msg = format!("SKIP {test}: {why}");
    if is_ci() {
        panic!("{msg} (CI=true: a skip is a failure)");
    }
    loud(&format!("\n***** {msg} *****\n"));
}

/// A multi-thread tokio runtime (2 worker threads, I/O and time on) for a
/// test body: `support::runtime().block_on(async { ... })`. Multi-thread,
/// so that `tokio::task::block_in_place` works for blocking helper calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Environment variable naming the directory of libtorrent's crafted test
/// torrents (libtorrent's `test/test_torrents/`), for the conformance tests.
pub const TEST_TORRENTS_ENV: &str = "BTFS_TEST_TORRENTS";

/// The directory of libtorrent's crafted test torrents: `$BTFS_TEST_TORRENTS`,
/// else `../shared/torrents/libtorrent` next to the crate (where the
/// project's machines keep them). When neither exists, prints one loud
/// SKIP line naming `test` and returns None; under `CI=true` that is a
/// failure instead. `info_of.py` (the span finder) is looked for in the
/// parent directory.
pub fn test_torrents(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os(TEST_TORRENTS_ENV) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/torrents/libtorrent"),
    };
    if dir.is_dir() {
        return Some(dir);
    }
    skip_or_fail(
        test,
        &format!(
            "libtorrent's test torrents are not at {} (copy libtorrent's \
             test/test_torrents/ there, or set {TEST_TORRENTS_ENV})",
            dir.display()
        ),
    );
    None
}

/// Marks the panic of a [`Child`] that died by a signal (a crash).
const CRASHED: &str = "CRASHED: ";

/// Runs `setup` (which starts helper processes and waits for them to be
/// ready), and once more, loudly, when it panicked because a helper died
/// by a signal: Debian's python3-libtorrent 2.0.8 was seen to segfault at
/// random while the whole suite runs, which is no fault of the code under
/// test. Any other panic, or a second crash, fails the test.
pub fn retry_if_a_helper_crashed<T>(what: &str, setup: impl Fn() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&setup)) {
        Ok(v) => v,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.contains(CRASHED) {
                std::panic::resume_unwind(payload);
            }
            loud(&format!(
                "\n***** WARNING: a helper crashed while setting up {what}; setting up once more *****\n"
            ));
            setup()
        }
    }
}

/// Runs the calling test inside a network namespace of its own.
///
/// Returns true when the caller is inside the namespace and should run its
/// body; false when this process only supervised the run (or skipped it),
/// in which case the caller returns at once:
///
/// ```ignore
/// #[test]
/// fn foo() {
///     if !support::in_netns("foo") { return; }
///     // ... body, with only loopback networking and private mounts ...
/// }
/// ```
///
/// `test_name` is the name libtest knows the test by: just `foo` at the top
/// level of a test file, `module::foo` inside a module.
///
/// - With env `BTFS_NETNS` set, we are inside: bring `lo` up (once per
///   process) and return true.
/// - Not root: print a loud `SKIP` to stderr and return false; with env
///   `CI=true` panic instead (a skip is a failure in CI).
/// - Root: re-run this test binary as `unshare --net --mount --propagation
///   private -- <exe> --exact <test_name> --nocapture --test-threads=1` with
///   `BTFS_NETNS=1`, stream its output to stderr, and assert that it exited 0
///   having run exactly one test, within `BTFS_TEST_TIMEOUT` seconds
///   (default [`DEFAULT_TEST_TIMEOUT_SECS`]). Return false.
pub fn in_netns(test_name: &str) -> bool {
    if std::env::var_os("BTFS_NETNS").is_some() {
        static LO_UP: Once = Once::new();
        LO_UP.call_once(|| {
            let st = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("run `ip` (package iproute2)");
            assert!(st.success(), "ip link set lo up failed: {st}");
        });
        return true;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        skip_or_fail(test_name, "needs root for network namespaces and FUSE");
        return false;
    }
    let timeout = std::env::var("BTFS_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_TEST_TIMEOUT_SECS);
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(&exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env("BTFS_NETNS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run unshare (package util-linux)");
    // Stream the inner run's stdout, and learn how many tests it ran.
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = thread::spawn(move || {
        let mut passed = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("test result: ") {
                passed = rest
                    .split(';')
                    .find_map(|part| part.trim().strip_suffix(" passed"))
                    .and_then(|n| n.rsplit(' ').next())
                    .and_then(|n| n.parse::<u32>().ok());
            }
            loud(&line);
        }
        passed
    });
    let status = wait_timeout(&mut child, Duration::from_secs(timeout));
    let Some(status) = status else {
        kill_pid(child.id(), Duration::from_secs(0));
        let _ = child.wait();
        panic!("{test_name}: still running after {timeout} s in its namespace; killed");
    };
    let passed = reader.join().unwrap_or(None);
    assert!(
        status.success(),
        "{test_name} failed inside its network namespace ({status})"
    );
    assert_eq!(
        passed,
        Some(1),
        "{test_name}: the namespaced run did not run exactly one test; \
         is the name right (`module::name` inside a module)?"
    );
    false
}

/// Sends SIGTERM to `pid`, waits up to `grace` for it to go, then SIGKILL.
/// Only ever called with PIDs of processes this harness started.
fn kill_pid(pid: u32, grace: Duration) {
    let pid = pid as libc::pid_t;
    // SAFETY: kill(2) on a PID we spawned; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pid_alive(pid as u32) {
        thread::sleep(Duration::from_millis(20));
    }
    if pid_alive(pid as u32) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The PIDs of every process `/proc` lists now (in this PID namespace).
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// True while `/proc/<pid>` exists and the process is not a zombie.
fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits up to `timeout` for `child` to exit; None if it is still running.
pub fn wait_timeout(child: &mut std::process::Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("wait for pid {}: {e}", child.id()),
        }
    }
}

/// Polls `cond` every 20 ms until it is true (returns true) or `timeout`
/// passes (returns false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Kills process `.0` (SIGTERM, then SIGKILL after 3 s) on drop: a guard for
/// a process spawned without [`Child`]. `std::mem::forget` it once the
/// process has been reaped.
pub struct ChildGuard(pub u32);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        kill_pid(self.0, Duration::from_secs(3));
    }
}

/// A port free on 127.0.0.1 for both TCP and UDP at the time of the call
/// (bind port 0, read it, release it). In a fresh namespace nothing else
/// takes it in between; use [`free_ports`] for several distinct ones.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct ports, each free on 127.0.0.1 for TCP and UDP.
pub fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..n * 100 {
        if ports.len() == n {
            break;
        }
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = tcp.local_addr().expect("local_addr").port();
        if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)) {
            ports.push(port);
            held.push((tcp, udp));
        }
    }
    assert_eq!(ports.len(), n, "could not find {n} free TCP+UDP ports");
    ports
}
