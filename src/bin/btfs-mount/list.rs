//! `btfs-mount list` and `btfs-mount stop MNT|PID` (see [`crate::registry`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::registry::{self, Entry};

/// Prints one block per running process: PID, kind and state, then the
/// mountpoint, URL, magnet link, published URL and log, each on its own
/// line when known (magnet links are long; a block stays readable and
/// easy to grep).
///
/// A process in another mount namespace (a container, `unshare --mount`)
/// whose mountpoint is not a mount here is listed with a `namespace`
/// line: that path names a directory of its own namespace.
pub fn list() -> anyhow::Result<()> {
    let entries = registry::entries()?;
    if entries.is_empty() {
        eprintln!("btfs-mount: no btfs-mount process is running");
        return Ok(());
    }
    for e in entries {
        println!("{}  {} ({})", e.pid, e.kind, e.state);
        let fields = [
            (
                "mountpoint",
                e.mountpoint.as_ref().map(|p| p.display().to_string()),
            ),
            // A seed's "URL" is the directory it seeds.
            (if e.kind == "seed" { "directory" } else { "url" }, e.url),
            ("magnet", e.magnet),
            ("published", e.published),
            ("log", e.log.map(|p| p.display().to_string())),
            (
                "namespace",
                elsewhere(e.pid, e.mountpoint.as_deref())
                    .map(|ns| format!("{ns}, not ours: its mountpoint is not mounted here")),
            ),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                println!("  {k:<10} {v}");
            }
        }
    }
    Ok(())
}

/// Stops the process serving mountpoint `target` (or with PID `target`):
/// SIGTERM, which unmounts a mount; a writable mount then publishes and
/// starts seeding, and gets a second SIGTERM once it seeds. Waits up to
/// `timeout` for it to exit.
pub fn stop(target: &str, timeout: Duration) -> anyhow::Result<()> {
    let entries = registry::entries()?;
    let found = match target.parse::<u32>() {
        Ok(pid) => entries.into_iter().find(|e| e.pid == pid),
        // The same path in another mount namespace is another directory,
        // unless that mount is visible here too: such a process is
        // stopped by PID only.
        Err(_) => {
            let want = std::fs::canonicalize(target).unwrap_or_else(|_| Path::new(target).into());
            entries.into_iter().find(|e| {
                e.mountpoint.as_deref() == Some(want.as_path())
                    && elsewhere(e.pid, Some(&want)).is_none()
            })
        }
    };
    let Some(entry) = found else {
        bail!("no btfs-mount process serves {target} (see `btfs-mount list`)");
    };
    let pid = Pid::from_raw(entry.pid as i32);
    let mut signalled_state = entry.state.clone();
    kill(pid, Signal::SIGTERM)?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        // Stopped once the process itself is gone (or a zombie): it
        // removes its registry entry before its last teardown steps.
        if !entry.alive() {
            let what = entry.mountpoint.as_ref().map_or_else(
                || entry.kind.clone(),
                |m| format!("{} on {}", entry.kind, m.display()),
            );
            eprintln!("btfs-mount: stopped {} ({what})", entry.pid);
            return Ok(());
        }
        let Some(now) = current(entry.pid) else {
            continue;
        };
        // A writable mount went from mounted to seeding what it
        // published: the first signal unmounted it, this one ends it.
        if now.state == "seeding" && signalled_state != "seeding" {
            signalled_state = now.state.clone();
            if let Some(m) = &now.magnet {
                eprintln!("btfs-mount: {} published {m}", entry.pid);
            }
            kill(pid, Signal::SIGTERM)?;
        }
    }
    bail!(
        "process {} is still running {} s after SIGTERM",
        entry.pid,
        timeout.as_secs()
    )
}

/// The mount namespace of `pid` (`mnt:[inode]`, as `/proc/<pid>/ns/mnt`
/// names it) when it is not ours and its `mountpoint` is not a mount in
/// ours (a namespace made by `unshare --mount` starts with copies of its
/// parent's mounts, which are the same mount for the user). `None` when
/// it is ours, visible here, or cannot be read.
fn elsewhere(pid: u32, mountpoint: Option<&Path>) -> Option<String> {
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()?;
    let ours = std::fs::read_link("/proc/self/ns/mnt").ok()?;
    if theirs == ours || mountpoint.is_some_and(mounted_here) {
        return None;
    }
    Some(theirs.display().to_string())
}

/// Whether `path` is a mount point in this process's mount namespace
/// (field 5 of `/proc/self/mountinfo`, whose spaces, tabs, newlines and
/// backslashes are written as octal escapes such as `\040`).
fn mounted_here(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_encoded_bytes();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_octal(m) == want)
}

/// `\ooo` escapes of `/proc/self/mountinfo` back to their bytes.
fn unescape_octal(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let digits = b.get(i + 1..i + 4);
        match digits {
            Some(d) if b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)) => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// The entry of `pid` if it still runs.
fn current(pid: u32) -> Option<Entry> {
    registry::entries().ok()?.into_iter().find(|e| e.pid == pid)
}
