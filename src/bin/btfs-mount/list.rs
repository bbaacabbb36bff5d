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
pub fn list() -> anyhow::Result<()> {
    let entries = registry::entries()?;
    if entries.is_empty() {
        eprintln!("btfs-mount: no btfs-mount process is running");
        return Ok(());
    }
    for e in entries {
        println!("{}  {} ({})", e.pid, e.kind, e.state);
        let fields = [
            ("mountpoint", e.mountpoint.map(|p| p.display().to_string())),
            ("url", e.url),
            ("magnet", e.magnet),
            ("published", e.published),
            ("log", e.log.map(|p| p.display().to_string())),
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
        Err(_) => {
            let want = std::fs::canonicalize(target).unwrap_or_else(|_| Path::new(target).into());
            entries
                .into_iter()
                .find(|e| e.mountpoint.as_deref() == Some(want.as_path()))
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
        let now = current(entry.pid);
        let Some(now) = now else {
            let what = entry.mountpoint.as_ref().map_or_else(
                || entry.kind.clone(),
                |m| format!("{} on {}", entry.kind, m.display()),
            );
            eprintln!("btfs-mount: stopped {} ({what})", entry.pid);
            return Ok(());
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

/// The entry of `pid` if it still runs.
fn current(pid: u32) -> Option<Entry> {
    registry::entries().ok()?.into_iter().find(|e| e.pid == pid)
}
