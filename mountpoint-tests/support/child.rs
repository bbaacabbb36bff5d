//! [`Child`]: a process a test started, killed by PID on drop, its stderr
//! kept in a file, its stdout read as JSON event lines.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{CRASHED, kill_pid, loud, wait_timeout};

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

    /// Like [`Child::wait_event`], for a script that reports failures as
    /// `error` events: an `error` event that comes first fails the test,
    /// with the event.
    pub fn wait_event_ok(&mut self, event: &str, timeout: Duration) -> Value {
        let got = self.wait_for(&format!("{event:?} event"), timeout, |v| {
            v["event"] == event || v["event"] == "error"
        });
        assert_ne!(
            got["event"],
            "error",
            "{} [{}] failed before {event:?}: {got}\n{}",
            self.name,
            self.pid(),
            self.report()
        );
        got
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

    /// The file the child's stderr goes to (removed when the child is
    /// dropped).
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
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

    /// The last 40 lines of stderr, framed, for a failure message.
    pub fn report(&self) -> String {
        format!(
            "--- last stderr lines of {} [{}] ---\n{}\n--- end ---",
            self.name,
            self.pid(),
            self.stderr_tail(40)
        )
    }

    /// Writes `line` and a newline to the child's stdin and flushes (a
    /// command for a script driven over stdin). Panics if stdin was closed
    /// or the write fails.
    pub fn send_line(&mut self, line: &str) {
        let (name, pid) = (self.name.clone(), self.pid());
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{name} [{pid}]: stdin already closed"));
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{name} [{pid}]: write {line:?} to stdin: {e}"));
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
