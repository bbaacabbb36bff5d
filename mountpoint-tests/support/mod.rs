//! Shared helpers for btfs-mount's end-to-end tests.
//!
//! Use from a test file in `mountpoint-tests/` with
//! `#[path = "support/mod.rs"] mod support;`. What is here:
//!
//! - [`in_netns`]: re-runs one test inside `unshare --net --mount` (only
//!   loopback, private mounts), as the project's network rules demand.
//! - [`Child`]: a spawned process killed by PID on drop, its stderr kept in a
//!   file and its tail printed when the test fails, its stdout read as JSON
//!   event lines ([`Child::wait_event`]).
//! - [`LtNode`]: a python3-libtorrent peer (`lt/ltnode.py`) as a [`Child`].
//! - [`Mount`]: a `btfs-mount` mount, unmounted and its process killed on drop.
//! - [`make_tree`], [`sha256_file`], [`sha256_bytes`], [`tree_digests`],
//!   [`free_port`], [`wait_until`], [`wait_timeout`], [`ChildGuard`].
//!
//! Every helper panics with a clear message instead of returning errors:
//! these are test helpers, and a panic is a test failure.

#![allow(dead_code)] // each test file uses a subset

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Once;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

pub use serde_json::Value;

/// How long a test may run inside its namespace before [`in_netns`] kills it
/// (seconds); overridden by env `BTFS_TEST_TIMEOUT`.
pub const DEFAULT_TEST_TIMEOUT_SECS: u64 = 600;

/// The python interpreter that has Debian's `python3-libtorrent`.
pub const PYTHON: &str = "/usr/bin/python3";

/// Writes straight to the process's stderr, past libtest's output capture.
fn loud(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn is_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
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
    let msg = format!(
        "SKIP {test}: libtorrent's test torrents are not at {} (copy libtorrent's \
         test/test_torrents/ there, or set {TEST_TORRENTS_ENV})",
        dir.display()
    );
    if is_ci() {
        panic!("{msg} (CI=true: a skip is a failure)");
    }
    loud(&format!("\n***** {msg} *****\n"));
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
        let msg = format!("SKIP {test_name}: needs root for network namespaces and FUSE");
        if is_ci() {
            panic!("{msg} (CI=true: a skip is a failure)");
        }
        loud(&format!("\n***** {msg} *****\n"));
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

/// A spawned process: stdin kept open as a pipe (closing it tells ltnode to
/// exit), stdout read line by line, stderr written to a file.
///
/// On drop: SIGTERM by PID, SIGKILL after a 3 s grace; if the thread is
/// panicking (the test failed), the last 40 lines of its stderr are printed.
/// The child also gets SIGKILL if the spawning thread dies
/// (`PR_SET_PDEATHSIG`), so spawn and drop it on the test's own thread.
pub struct Child {
    /// Short label for messages ("ltnode", "btfs-mount").
    name: String,
    proc: std::process::Child,
    /// Kept open so the child sees EOF only when we mean it.
    stdin: Option<std::process::ChildStdin>,
    /// Lines from the child's stdout; disconnected at EOF.
    lines: Receiver<String>,
    /// Every stdout line that parsed as a JSON object with an "event" field,
    /// with whether a `wait_*` call has returned it yet.
    events: Vec<(Value, bool)>,
    /// Stdout lines that are not JSON events.
    other_lines: Vec<String>,
    eof: bool,
    stderr_path: PathBuf,
    /// Holds the stderr file; removed on drop.
    _dir: tempfile::TempDir,
}

impl Child {
    /// Spawns `cmd`, with stdin and stdout piped and stderr to a file.
    /// Panics if it cannot be spawned.
    pub fn spawn(name: &str, mut cmd: Command) -> Child {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-log-"))
            .tempdir()
            .expect("temp dir for logs");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = fs::File::create(&stderr_path).expect("create stderr log");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut proc = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({cmd:?}): {e}"));
        let stdin = proc.stdin.take();
        let stdout = proc.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Child {
            name: name.to_string(),
            proc,
            stdin,
            lines: rx,
            events: Vec::new(),
            other_lines: Vec::new(),
            eof: false,
            stderr_path,
            _dir: dir,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// Reads one stdout line (waiting up to `timeout`) and files it as an
    /// event or a plain line. Returns false on timeout or EOF.
    fn pump(&mut self, timeout: Duration) -> bool {
        if self.eof {
            return false;
        }
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) if v.get("event").is_some() => {
                        if v["event"] == "error" {
                            loud(&format!("{} [{}] reported: {line}", self.name, self.pid()));
                        }
                        self.events.push((v, false));
                    }
                    _ => self.other_lines.push(line),
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                false
            }
        }
    }

    /// Reads every stdout line already available, without waiting.
    pub fn drain(&mut self) {
        while self.pump(Duration::ZERO) {}
    }

    /// Waits up to `timeout` for the first event, not yet returned by a
    /// `wait_*` call, for which `pred` holds; marks it returned and returns
    /// it. Panics (with the stderr tail) on timeout or if stdout closes.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut seen = 0;
        loop {
            for (v, taken) in self.events.iter_mut().skip(seen) {
                if !*taken && pred(v) {
                    *taken = true;
                    return v.clone();
                }
            }
            seen = self.events.len();
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "{} [{}]: no {what} within {timeout:?}\n{}",
                    self.name,
                    self.pid(),
                    self.report()
                );
            }
            if !self.pump(deadline - now) && self.eof {
                let status = self.wait_exit(Duration::from_secs(2));
                let crashed = status
                    .and_then(|st| std::os::unix::process::ExitStatusExt::signal(&st))
                    .is_some();
                panic!(
                    "{} [{}]: {}stdout closed (exit {status:?}) before {what}\n{}",
                    self.name,
                    self.pid(),
                    if crashed { CRASHED } else { "" },
                    self.report()
                );
            }
        }
    }

    /// Waits up to `timeout` for an event named `event` without taking it
    /// (a later `wait_event` still returns it). Err with the exit status
    /// when stdout closes first, or on timeout.
    pub fn peek_event(&mut self, event: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.events.iter().any(|(v, _)| v["event"] == event) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("no {event:?} event within {timeout:?}"));
            }
            if !self.pump(deadline - now) && self.eof {
                let status = self.proc.try_wait().ok().flatten();
                return Err(format!("stdout closed (exit {status:?}) before {event:?}"));
            }
        }
    }

    /// Waits for the next event named `event` (see [`Child::wait_for`]).
    pub fn wait_event(&mut self, event: &str, timeout: Duration) -> Value {
        self.wait_for(&format!("{event:?} event"), timeout, |v| {
            v["event"] == event
        })
    }

    /// Every event read so far (returned or not), in order.
    pub fn events(&mut self) -> Vec<Value> {
        self.drain();
        self.events.iter().map(|(v, _)| v.clone()).collect()
    }

    /// Every non-JSON stdout line read so far.
    pub fn stdout_lines(&mut self) -> Vec<String> {
        self.drain();
        self.other_lines.clone()
    }

    /// The whole stderr written so far (lossy UTF-8).
    pub fn stderr(&self) -> String {
        let mut buf = Vec::new();
        if let Ok(mut f) = fs::File::open(&self.stderr_path) {
            let _ = f.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// The last `n` lines of stderr.
    pub fn stderr_tail(&self, n: usize) -> String {
        let all = self.stderr();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn report(&self) -> String {
        format!(
            "--- last stderr lines of {} [{}] ---\n{}\n--- end ---",
            self.name,
            self.pid(),
            self.stderr_tail(40)
        )
    }

    /// Writes `line` and a newline to the child's stdin (a command for
    /// scripts that read them, e.g. `lt/lt_utp.py`). Panics if stdin is
    /// closed.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("child stdin open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: write stdin: {e}", self.name));
    }

    /// Closes the child's stdin (ltnode exits on that).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.proc.try_wait().expect("try_wait")
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_timeout(&mut self.proc, timeout)
    }

    /// SIGTERM, then SIGKILL after `grace`; reaps the process.
    pub fn stop(&mut self, grace: Duration) -> ExitStatus {
        if let Some(st) = self.try_wait() {
            return st;
        }
        kill_pid(self.pid(), grace);
        self.proc.wait().expect("wait")
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
        if thread::panicking() {
            loud(&self.report());
        }
    }
}

/// A python3-libtorrent peer running `mountpoint-tests/lt/ltnode.py` (see
/// its docstring for flags and events). Dereferences to its [`Child`].
pub struct LtNode {
    pub child: Child,
    /// The `ready` event: port, dht_port, node_id.
    ready: Value,
    /// The `torrent` event, once read.
    torrent: Option<Value>,
}

/// Path of `ltnode.py`.
pub fn ltnode_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("mountpoint-tests/lt/ltnode.py")
}

/// Starts an [`LtNode`] with `args` and waits for its `ready` event.
pub fn lt_node(args: &[&str]) -> LtNode {
    LtNode::start(args)
}

impl LtNode {
    /// Starts `ltnode.py ARGS` and waits (up to 20 s) for `ready`. With
    /// `--seed`, also waits (up to 120 s) until it seeds; with a torrent file
    /// or magnet, 300 ms more. Either way it is started once more if
    /// python3-libtorrent crashed meanwhile: Debian's 2.0.8 was seen to
    /// segfault right after adding or hashing a torrent when the whole suite
    /// runs, which is no fault of the code under test (said loudly on
    /// stderr).
    pub fn start(args: &[&str]) -> LtNode {
        let seeding = args.contains(&"--seed");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut cmd = Command::new(PYTHON);
            cmd.arg(ltnode_script()).args(args);
            let mut child = Child::spawn("ltnode", cmd);
            let ready = child.wait_event("ready", Duration::from_secs(20));
            let has_torrent = args.contains(&"--seed-torrent") || args.contains(&"--fetch");
            if has_torrent && attempt < 2 {
                // The same crash was seen right after checking a torrent
                // given by file or magnet: give it a moment to show.
                if let Some(st) = child.wait_exit(Duration::from_millis(300)) {
                    if std::os::unix::process::ExitStatusExt::signal(&st).is_some() {
                        eprintln!(
                            "WARNING: python3-libtorrent crashed at start ({st}); starting it again\n{}",
                            child.report()
                        );
                        continue;
                    }
                    panic!("ltnode {args:?} exited at start ({st})\n{}", child.report());
                }
            }
            if seeding {
                if let Err(why) = child.peek_event("seeding", Duration::from_secs(120)) {
                    let crashed = child.wait_exit(Duration::from_secs(2)).is_some_and(|st| {
                        std::os::unix::process::ExitStatusExt::signal(&st).is_some()
                    });
                    if crashed && attempt < 2 {
                        eprintln!(
                            "WARNING: python3-libtorrent crashed before seeding ({why}); starting it again\n{}",
                            child.report()
                        );
                        continue;
                    }
                    panic!("ltnode {args:?}: {why}\n{}", child.report());
                }
            }
            return LtNode {
                child,
                ready,
                torrent: None,
            };
        }
    }

    /// The `ready` event.
    pub fn ready(&self) -> &Value {
        &self.ready
    }

    /// The TCP (and UDP) listen port.
    pub fn port(&self) -> u16 {
        self.ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("ready.port")
    }

    /// `127.0.0.1:<port>`, for `--connect`, `--bootstrap` or `--peer`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port())
    }

    /// The DHT's UDP port; panics if the node runs without `--dht`.
    pub fn dht_port(&self) -> u16 {
        self.ready["dht_port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .expect("dht_port: this ltnode runs without --dht")
    }

    /// The DHT node id (40 hex digits), if the DHT is on.
    pub fn node_id(&self) -> Option<String> {
        self.ready["node_id"].as_str().map(str::to_string)
    }

    /// The `torrent` event (waits up to 60 s for it the first time): keys
    /// info_hash, magnet, name, files [{path, size}], piece_length,
    /// num_pieces, total_size, torrent_file.
    pub fn torrent(&mut self) -> Value {
        if self.torrent.is_none() {
            self.torrent = Some(self.child.wait_event("torrent", Duration::from_secs(60)));
        }
        self.torrent.clone().expect("set above")
    }

    /// The torrent's magnet link.
    pub fn magnet(&mut self) -> String {
        self.torrent()["magnet"]
            .as_str()
            .expect("torrent.magnet")
            .to_string()
    }

    /// The torrent's v1 info-hash, 40 lowercase hex digits.
    pub fn info_hash(&mut self) -> String {
        self.torrent()["info_hash"]
            .as_str()
            .expect("torrent.info_hash")
            .to_string()
    }
}

impl std::ops::Deref for LtNode {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.child
    }
}

impl std::ops::DerefMut for LtNode {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.child
    }
}

/// The `btfs-mount` binary cargo built for this test run.
pub fn btfs_mount_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_btfs-mount"))
}

/// True if `path` is a mount point in this process's mount namespace (per
/// `/proc/self/mountinfo`).
pub fn is_mounted(path: &Path) -> bool {
    let want = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| Path::new(&unescape_mount_path(mp)) == want)
}

/// Decodes the octal escapes (`\040` for space, ...) of mountinfo paths.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts `path`: `fusermount3 -u` (given 5 s), then `umount -l`.
/// Returns true if it is no longer mounted.
pub fn unmount(path: &Path) -> bool {
    if !is_mounted(path) {
        return true;
    }
    if let Ok(mut c) = Command::new("fusermount3")
        .arg("-u")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        if wait_timeout(&mut c, Duration::from_secs(5)).is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    if is_mounted(path) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    !is_mounted(path)
}

/// PIDs of running processes whose executable is `btfs-mount` and whose
/// command line names `mountpoint` (the daemon of a background mount).
pub fn btfs_mount_pids(mountpoint: &Path) -> Vec<u32> {
    let bin = fs::canonicalize(btfs_mount_bin()).unwrap_or_else(|_| btfs_mount_bin());
    let mp = mountpoint.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let exe = fs::read_link(format!("/proc/{pid}/exe")).ok();
        // A rebuilt binary shows as "<path> (deleted)".
        let exe_matches = exe.is_some_and(|e| {
            e == bin
                || e.as_os_str()
                    .as_encoded_bytes()
                    .starts_with(bin.as_os_str().as_encoded_bytes())
        });
        if !exe_matches || !pid_alive(pid) {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|&b| b == 0).any(|arg| arg == mp) {
            pids.push(pid);
        }
    }
    pids
}

/// A `btfs-mount` mount. On drop: unmount if still mounted
/// (`fusermount3 -u`, then `umount -l`) and kill the btfs-mount process by
/// PID (SIGTERM, SIGKILL after 3 s).
pub struct Mount {
    mountpoint: PathBuf,
    /// The foreground process, when started with [`Mount::foreground`].
    child: Option<Child>,
    /// Daemon PIDs of a background mount, found by executable and mountpoint.
    daemon_pids: Vec<u32>,
    /// A temp dir holding the mountpoint, when [`Mount::temp`] made it.
    _dir: Option<tempfile::TempDir>,
}

/// `btfs-mount ARGS[0] MNT ARGS[1..]` (the URL first, as the CLI shows it).
fn mount_command(mnt: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(btfs_mount_bin());
    if let Some((first, rest)) = args.split_first() {
        cmd.arg(first).arg(mnt).args(rest);
    } else {
        cmd.arg(mnt);
    }
    cmd
}

impl Mount {
    /// A fresh temp directory with an empty `mnt` inside; mount there with
    /// `Mount::background(m.path(), ..)` or use [`Mount::temp_background`].
    pub fn temp_dir() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mnt = dir.path().join("mnt");
        fs::create_dir_all(&mnt).expect("create mountpoint");
        (dir, mnt)
    }

    /// Runs `btfs-mount ARGS[0] MNT ARGS[1..]` in its default background
    /// mode: waits (up to 120 s) for that command to exit 0 and for `mnt`
    /// to be mounted. `mnt` is created if missing. Panics with the command's
    /// output otherwise.
    pub fn background(mnt: &Path, args: &[&str]) -> Mount {
        fs::create_dir_all(mnt).expect("create mountpoint");
        let mnt = fs::canonicalize(mnt).expect("canonicalize mountpoint");
        let mut child = Child::spawn("btfs-mount", mount_command(&mnt, args));
        let status = child.wait_exit(Duration::from_secs(120));
        let mut m = Mount {
            mountpoint: mnt.clone(),
            child: None,
            daemon_pids: btfs_mount_pids(&mnt),
            _dir: None,
        };
        match status {
            Some(st) if st.success() => {}
            Some(st) => panic!(
                "btfs-mount {args:?} {} exited with {st}\nstdout: {:?}\n{}",
                mnt.display(),
                child.stdout_lines(),
                child.report()
            ),
            None => panic!(
                "btfs-mount {args:?} still in the foreground after 120 s\n{}",
                child.report()
            ),
        }
        if !wait_until(Duration::from_secs(10), || is_mounted(&mnt)) {
            panic!(
                "btfs-mount exited 0 but {} is not mounted\n{}",
                mnt.display(),
                child.report()
            );
        }
        m.daemon_pids = btfs_mount_pids(&mnt);
        m
    }

    /// Like [`Mount::background`] on a fresh temp mountpoint.
    pub fn temp_background(args: &[&str]) -> Mount {
        let (dir, mnt) = Mount::temp_dir();
        let mut m = Mount::background(&mnt, args);
        m._dir = Some(dir);
        m
    }

    /// Spawns `btfs-mount ARGS[0] MNT ARGS[1..]` as a [`Child`] that stays
    /// in the foreground (the caller includes the foreground flag) and waits
    /// up to `timeout` for `mnt` to be mounted. Panics with its stderr if it
    /// exits first.
    pub fn foreground(mnt: &Path, args: &[&str], timeout: Duration) -> Mount {
        fs::create_dir_all(mnt).expect("create mountpoint");
        let mnt = fs::canonicalize(mnt).expect("canonicalize mountpoint");
        let child = Child::spawn("btfs-mount", mount_command(&mnt, args));
        let mut m = Mount {
            mountpoint: mnt.clone(),
            child: Some(child),
            daemon_pids: Vec::new(),
            _dir: None,
        };
        let ok = wait_until(timeout, || {
            is_mounted(&mnt) || m.child.as_mut().and_then(|c| c.try_wait()).is_some()
        });
        let c = m.child.as_mut().expect("set above");
        if let Some(st) = c.try_wait() {
            panic!(
                "btfs-mount {args:?} exited ({st}) before mounting\n{}",
                c.report()
            );
        }
        if !ok {
            panic!(
                "btfs-mount {args:?}: {} not mounted within {timeout:?}\n{}",
                mnt.display(),
                c.report()
            );
        }
        m
    }

    /// The mountpoint (canonical path).
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The foreground process, if this mount has one.
    pub fn child(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// PIDs of the btfs-mount process(es) serving this mount.
    pub fn pids(&self) -> Vec<u32> {
        let mut v = self.daemon_pids.clone();
        if let Some(c) = &self.child {
            v.push(c.pid());
        }
        v
    }

    /// True while the mountpoint is mounted.
    pub fn is_mounted(&self) -> bool {
        is_mounted(&self.mountpoint)
    }

    /// `fusermount3 -u`, then waits up to `timeout` for every btfs-mount
    /// process of this mount to exit by itself (panics if one does not, or
    /// if the mount stays).
    pub fn unmount_and_wait(mut self, timeout: Duration) {
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mountpoint)
            .status()
            .expect("run fusermount3 (package fuse3)");
        assert!(
            st.success(),
            "fusermount3 -u {} failed: {st}",
            self.mountpoint.display()
        );
        assert!(
            !self.is_mounted(),
            "{} still mounted after fusermount3 -u",
            self.mountpoint.display()
        );
        let pids = self.daemon_pids.clone();
        let exited = wait_until(timeout, || {
            pids.iter().all(|&p| !pid_alive(p))
                && self.child.as_mut().is_none_or(|c| c.try_wait().is_some())
        });
        assert!(
            exited,
            "btfs-mount did not exit within {timeout:?} after unmount"
        );
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.is_mounted() && !unmount(&self.mountpoint) {
            loud(&format!("could not unmount {}", self.mountpoint.display()));
        }
        for &pid in &self.daemon_pids {
            if pid_alive(pid) {
                kill_pid(pid, Duration::from_secs(3));
            }
        }
        // A foreground child is stopped (and its stderr shown on failure)
        // by its own Drop.
        self.child = None;
    }
}

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
