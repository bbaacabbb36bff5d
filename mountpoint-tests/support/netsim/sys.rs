//! The system side of the simulated internet: the private `/run`, entering
//! network namespaces, finding and ending the processes inside them, and
//! running the helper commands (`ip`, `nft`, `tc`) with a time limit.

use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Once;
use std::time::Duration;

use crate::support::{all_pids, wait_until};

/// How long a helper command (`ip`, `nft`, `tc`) may take.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// Panics with an install hint unless `program` is on the PATH.
pub fn require(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "netsim needs `{program}`: apt-get install {package} (scripts/setup installs it)"
    );
}

/// `/run/netns/<name>`, where `ip netns add` keeps a named namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Makes `/run` in this process's (private) mount namespace an overlay of
/// the real `/run` with a tmpfs on top, once per process: `/run/netns` and
/// whatever else is written under `/run` later lands in the tmpfs, which
/// nobody else sees and which vanishes with the namespace.
pub fn private_run_overlay() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let scratch = tempfile::Builder::new()
            .prefix("netsim-run-")
            .tempdir()
            .expect("temp dir for the /run overlay");
        let s = scratch.path().display();
        run(&format!("mount -t tmpfs -o mode=755 netsim-run {s}"));
        fs::create_dir(scratch.path().join("upper")).expect("mkdir upper");
        fs::create_dir(scratch.path().join("work")).expect("mkdir work");
        run(&format!(
            "mount -t overlay netsim-run -o lowerdir=/run,upperdir={s}/upper,workdir={s}/work /run"
        ));
        // The overlay keeps the tmpfs alive; detach it from the temp dir so
        // the temp dir can go.
        run(&format!("umount -l {s}"));
        drop(scratch);
    });
}

/// Runs `f` with the current thread in network namespace `ns` (a name in
/// `/run/netns`), then puts the thread back where it was (aborts the process
/// if that fails, since the thread would carry on in the wrong network).
pub fn with_netns<T>(ns: &str, f: impl FnOnce() -> T) -> T {
    struct Back(File);
    impl Drop for Back {
        fn drop(&mut self) {
            // SAFETY: setns on an open namespace fd; no memory involved.
            if unsafe { libc::setns(self.0.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                eprintln!(
                    "netsim: cannot return to the original network namespace: {}",
                    std::io::Error::last_os_error()
                );
                std::process::abort();
            }
        }
    }
    let home = File::open("/proc/thread-self/ns/net").expect("open /proc/thread-self/ns/net");
    let target = File::open(netns_path(ns)).unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
    // SAFETY: as above.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        panic!("setns into {ns}: {}", std::io::Error::last_os_error());
    }
    let _back = Back(home);
    f()
}

/// Writes `value` to `/proc/sys/net/<key>` of namespace `ns`.
pub fn sysctl(ns: &str, key: &str, value: &str) {
    with_netns(ns, || {
        let path = format!("/proc/sys/net/{key}");
        fs::write(&path, value).unwrap_or_else(|e| panic!("write {path} in netns {ns}: {e}"));
    })
}

/// PIDs of processes (other than this one) whose network namespace is one
/// of `inodes` (as `/proc/PID/ns/net` and `stat /run/netns/NAME` show it).
pub fn pids_in_netns(inodes: &[u64]) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    for pid in all_pids() {
        let in_ns =
            fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| inodes.contains(&m.ino()));
        if pid != me && in_ns {
            pids.push(pid);
        }
    }
    pids
}

/// Sends SIGTERM to every process in the namespaces `inodes` (all started by
/// this test: the namespaces are private to it), SIGKILL to those left after
/// 3 s.
pub fn kill_in_netns(inodes: &[u64]) {
    for (signal, grace) in [(libc::SIGTERM, 3), (libc::SIGKILL, 2)] {
        let pids = pids_in_netns(inodes);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // SAFETY: kill(2) on a PID in one of our own namespaces.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
        }
        wait_until(Duration::from_secs(grace), || {
            pids_in_netns(inodes).is_empty()
        });
    }
}

/// Runs `cmdline` (split at whitespace: the names in it never contain any)
/// in the test's own namespace; panics with its stderr unless it exits 0.
/// Returns stdout.
pub fn run(cmdline: &str) -> String {
    try_run(cmdline).unwrap_or_else(|e| panic!("netsim: {e}"))
}

/// Like [`run`], but Err with the command and its stderr on failure.
pub fn try_run(cmdline: &str) -> Result<String, String> {
    let mut words = cmdline.split_whitespace();
    let mut cmd = Command::new(words.next().expect("a command"));
    cmd.args(words);
    let out = output(cmd, CMD_TIMEOUT);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{cmdline}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `cmd` with stdin from /dev/null, stdout and stderr captured, killing
/// it (by PID) after `timeout`.
pub fn output(cmd: Command, timeout: Duration) -> Output {
    output_with_input(cmd, None, timeout)
}

/// Runs `cmd` with `input` (if any, else /dev/null) on stdin, stdout and
/// stderr captured, killing it (by PID) after `timeout`.
pub fn output_with_input(mut cmd: Command, input: Option<&str>, timeout: Duration) -> Output {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    cmd.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {cmd:?}: {err}"));
    if let (Some(text), Some(mut pipe)) = (input, child.stdin.take()) {
        // Small inputs: the pipe buffer takes them whole.
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => out.unwrap_or_else(|e| panic!("wait for {cmd:?}: {e}")),
        Err(_) => {
            // SAFETY: kill(2) on the PID of the child spawned above, not yet
            // reaped (its waiting thread has not returned).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{cmd:?} still running after {timeout:?}; killed");
        }
    }
}

/// Runs `cmd` with `input` on stdin (at most 20 s); panics unless it exits 0.
pub fn run_with_stdin(cmd: Command, input: &str) {
    let out = output_with_input(cmd, Some(input), CMD_TIMEOUT);
    assert!(
        out.status.success(),
        "netsim: command failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
