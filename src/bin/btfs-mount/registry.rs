//! Which btfs-mount processes run now, for `btfs-mount list` and `stop`.
//!
//! Every long-running command (a mount, a writable mount, `seed`,
//! `publish`, `serve`) writes one small file, `<run dir>/<pid>`, and keeps it up to
//! date: its kind, mountpoint, URL, magnet link, log file and state. The
//! file goes when the process exits; one left by a process that was killed
//! is ignored (and deleted) by the next `list`, because its PID is gone or
//! now belongs to another process (the start time recorded beside the PID
//! tells them apart).
//!
//! The run directory is `$XDG_RUNTIME_DIR/btfs-mount`, else
//! `/run/user/<uid>/btfs-mount` when that exists, else
//! `<tmp>/btfs-mount-<uid>` (mode 0700, refused when another user owns it).
//! The format is one `key<TAB>value` line per field, values without
//! newlines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, bail};

/// One running process, as its file says.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub pid: u32,
    /// Start time of the process, in clock ticks since boot
    /// (`/proc/<pid>/stat` field 22): a reused PID has another.
    pub start: u64,
    /// `mount`, `writable`, `seed`, `publish` or `serve`.
    pub kind: String,
    /// `starting`, `resolving`, `mounted`, `publishing` (a writable mount
    /// making its torrent, or `publish` keeping an item alive), `seeding`
    /// or `serving` (`serve`: its URL is the gateway's, its mountpoint the
    /// FUSE root's).
    pub state: String,
    pub mountpoint: Option<PathBuf>,
    /// The URL the user gave (a magnet link or a mutable URL).
    pub url: Option<String>,
    /// The magnet link of the torrent served, once known.
    pub magnet: Option<String>,
    /// The mutable URL published, if any.
    pub published: Option<String>,
    pub log: Option<PathBuf>,
}

impl Entry {
    fn encode(&self) -> String {
        let mut out = format!(
            "pid\t{}\nstart\t{}\nkind\t{}\nstate\t{}\n",
            self.pid, self.start, self.kind, self.state
        );
        let mut opt = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                out.push_str(&format!("{k}\t{}\n", v.replace('\n', " ")));
            }
        };
        opt(
            "mountpoint",
            self.mountpoint.as_ref().map(|p| p.display().to_string()),
        );
        opt("url", self.url.clone());
        opt("magnet", self.magnet.clone());
        opt("published", self.published.clone());
        opt("log", self.log.as_ref().map(|p| p.display().to_string()));
        out
    }

    fn decode(text: &str) -> Option<Entry> {
        let f: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('\t')).collect();
        Some(Entry {
            pid: f.get("pid")?.parse().ok()?,
            start: f.get("start")?.parse().ok()?,
            kind: f.get("kind")?.to_string(),
            state: f.get("state").unwrap_or(&"").to_string(),
            mountpoint: f.get("mountpoint").map(PathBuf::from),
            url: f.get("url").map(|s| s.to_string()),
            magnet: f.get("magnet").map(|s| s.to_string()),
            published: f.get("published").map(|s| s.to_string()),
            log: f.get("log").map(PathBuf::from),
        })
    }

    /// Whether the process is still the one that wrote the entry.
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// The start time of `pid` (`/proc/<pid>/stat` field 22), None when it is
/// gone or a zombie.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name, which may hold spaces.
    let rest = stat.rsplit_once(") ")?.1;
    let mut fields = rest.split(' ');
    if fields.next()? == "Z" {
        return None;
    }
    // `rest` starts at field 3 (state): field 22 is the 20th from here.
    fields.nth(18)?.parse().ok()
}

/// The run directory (see the module docs), created if missing.
pub fn run_dir() -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let uid = nix::unistd::getuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("btfs-mount"),
        _ => {
            let user = PathBuf::from(format!("/run/user/{uid}"));
            if user.is_dir() {
                user.join("btfs-mount")
            } else {
                std::env::temp_dir().join(format!("btfs-mount-{uid}"))
            }
        }
    };
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
    }
    let md = std::fs::metadata(&dir).with_context(|| dir.display().to_string())?;
    if md.uid() != uid {
        bail!("{} belongs to another user", dir.display());
    }
    Ok(dir)
}

/// This process's entry, kept up to date while it runs and removed when
/// the process ends (see [`register`]).
static OURS: Mutex<Option<(PathBuf, Entry)>> = Mutex::new(None);

/// Registers this process as `kind`. Failures are logged, never fatal: a
/// mount works without `list`.
pub fn register(kind: &str, mountpoint: Option<&Path>, url: Option<&str>, log: Option<&Path>) {
    let pid = std::process::id();
    let entry = Entry {
        pid,
        start: start_time(pid).unwrap_or(0),
        kind: kind.into(),
        state: "starting".into(),
        mountpoint: mountpoint.map(Path::to_path_buf),
        url: url.map(str::to_string),
        log: log.map(Path::to_path_buf),
        ..Entry::default()
    };
    match run_dir() {
        Ok(dir) => {
            let path = dir.join(pid.to_string());
            write(&path, &entry);
            *OURS.lock().unwrap_or_else(|e| e.into_inner()) = Some((path, entry));
        }
        Err(e) => tracing::warn!("`btfs-mount list` will not show this process: {e:#}"),
    }
}

/// Changes this process's entry (no-op when not registered).
pub fn update(f: impl FnOnce(&mut Entry)) {
    let mut ours = OURS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((path, entry)) = ours.as_mut() {
        f(entry);
        write(path, entry);
    }
}

/// Removes this process's entry (at exit).
pub fn unregister() {
    if let Some((path, _)) = OURS.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = std::fs::remove_file(path);
    }
}

fn write(path: &Path, entry: &Entry) {
    // Written beside and renamed: a reader never sees half an entry.
    let tmp = path.with_extension("tmp");
    let r = std::fs::write(&tmp, entry.encode()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = r {
        tracing::warn!("cannot write {}: {e}", path.display());
    }
}

/// Every live entry, by PID; entries of processes gone are deleted.
pub fn entries() -> anyhow::Result<Vec<Entry>> {
    let dir = run_dir()?;
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
        let path = e?.path();
        if path.extension().is_some() {
            continue; // a `.tmp` being written
        }
        let Some(entry) = std::fs::read_to_string(&path)
            .ok()
            .as_deref()
            .and_then(Entry::decode)
        else {
            continue;
        };
        if entry.alive() {
            out.push(entry);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
    out.sort_by_key(|e| e.pid);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_our_start_time_is_known() {
        let e = Entry {
            pid: 42,
            start: 7,
            kind: "writable".into(),
            state: "seeding".into(),
            mountpoint: Some("/mnt/a b".into()),
            url: None,
            magnet: Some("magnet:?xt=urn:btih:00".into()),
            published: None,
            log: Some("/x/y.log".into()),
        };
        let d = Entry::decode(&e.encode()).unwrap();
        assert_eq!(d.encode(), e.encode());
        assert!(Entry::decode("garbage").is_none());
        let me = std::process::id();
        assert!(start_time(me).is_some());
        let ours = Entry {
            pid: me,
            start: start_time(me).unwrap(),
            ..Entry::default()
        };
        assert!(ours.alive());
        assert!(
            !Entry {
                start: ours.start + 1,
                ..ours
            }
            .alive()
        );
    }
}
