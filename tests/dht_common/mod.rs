//! Helpers shared by the DHT integration tests: running a test inside a
//! network namespace of its own, and driving libtorrent DHT nodes
//! (`mountpoint-tests/lt/lt_dht.py`) over JSON lines.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Returns true when the caller should run the test body now (we are inside
/// a private network namespace). Otherwise re-runs this very test inside
/// `unshare --net --mount` (loopback up) and returns false after checking it
/// passed. Without root: a loud SKIP, or a failure when `CI=true`.
pub fn enter_netns(test_name: &str) -> bool {
    if std::env::var("BTFS_NETNS").as_deref() == Ok("1") {
        return true;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test_name}: needs root for a network namespace, and CI=true");
        }
        eprintln!("\n!!!!! SKIP {test_name}: not root, cannot make a network namespace !!!!!\n");
        return false;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--", "sh", "-c"])
        .arg("ip link set lo up && exec \"$0\" \"$@\"")
        .arg(exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env("BTFS_NETNS", "1")
        .status()
        .expect("run unshare");
    assert!(status.success(), "{test_name} failed inside its namespace");
    false
}

/// A multi-thread tokio runtime for a test body.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Reads `"key": "string"` from a JSON line printed by Python's json.dumps.
pub fn json_str(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\": \"");
    let start = line.find(&pat)? + pat.len();
    let mut out = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                c => out.push(c),
            },
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// Reads a number, `true`, `false` or `null` under `key`.
pub fn json_raw(line: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\": ");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// Reads a list of strings under `key`.
pub fn json_list(line: &str, key: &str) -> Vec<String> {
    let pat = format!("\"{key}\": [");
    let Some(start) = line.find(&pat).map(|s| s + pat.len()) else {
        return Vec::new();
    };
    let Some(end) = line[start..].find(']') else {
        return Vec::new();
    };
    line[start..start + end]
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// libtorrent DHT nodes in a Python child process.
pub struct LtNodes {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// DHT (UDP) ports of the libtorrent sessions on 127.0.0.1.
    pub ports: Vec<u16>,
}

impl LtNodes {
    /// Starts `n` libtorrent sessions on 127.0.0.1:`base_port`.. that
    /// bootstrap from `bootstrap` ("ip:port" list) and from each other.
    pub fn spawn(n: usize, base_port: u16, bootstrap: &[std::net::SocketAddr]) -> LtNodes {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/mountpoint-tests/lt/lt_dht.py");
        let boot: Vec<String> = bootstrap.iter().map(|a| a.to_string()).collect();
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .args(["--nodes", &n.to_string()])
            .args(["--base-port", &base_port.to_string()])
            .args(["--bootstrap", &boot.join(",")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start lt_dht.py");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("lt_dht.py> {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut lt = LtNodes {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            ports: Vec::new(),
        };
        let ready = lt.wait_event("ready", Duration::from_secs(30));
        lt.ports = json_list(&ready, "ports")
            .iter()
            .map(|p| p.parse().expect("port"))
            .collect();
        lt
    }

    fn wait_event(&mut self, event: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("lt_dht.py: no {event:?} event within {limit:?}"));
            let ev = json_str(&line, "event");
            if ev.as_deref() == Some(event) {
                return line;
            }
            assert_ne!(ev.as_deref(), Some("error"), "lt_dht.py error: {line}");
        }
    }

    /// Sends one JSON command and waits for the answer event.
    pub fn cmd(&mut self, json: &str, event: &str, limit: Duration) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{json}").expect("write to lt_dht.py");
        stdin.flush().expect("flush");
        self.wait_event(event, limit)
    }
}

impl Drop for LtNodes {
    fn drop(&mut self) {
        // Closing stdin makes the script exit; then reap it (by its pid).
        drop(self.stdin.take());
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
