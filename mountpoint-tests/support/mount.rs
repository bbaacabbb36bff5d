//! `btfs-mount` mounts: [`Mount`] (unmounted and its process killed on
//! drop), [`MountArgs`] (the command line), and the mount table helpers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Child, all_pids, kill_pid, loud, pid_alive, wait_timeout, wait_until};
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
    for pid in all_pids() {
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

/// The command line of a `btfs-mount` mount, built flag by flag: the URL
/// (or `--writable`) first, then options in the order given. [`Mount`]
/// puts the mountpoint after the first argument; [`MountArgs::at`] gives
/// the whole argument list for a `Command` of your own.
///
/// ```ignore
/// let args = MountArgs::new(&magnet).no_dht().peer(&seeder.addr()).cache_dir(&cache);
/// let m = Mount::background(&mnt, &args.build());
/// let m = Mount::foreground(&mnt, &args.foreground().verbose().build(), timeout);
/// ```
#[derive(Clone, Debug)]
pub struct MountArgs {
    args: Vec<String>,
}

impl MountArgs {
    /// `btfs-mount URL ...` (a magnet link, a mutable URL or a bare
    /// info-hash).
    pub fn new(url: &str) -> MountArgs {
        MountArgs {
            args: vec![url.to_string()],
        }
    }

    /// `btfs-mount --writable ...`: an empty writable mount.
    pub fn writable() -> MountArgs {
        MountArgs::new("--writable")
    }

    /// One more argument, as is.
    pub fn arg(mut self, arg: &str) -> MountArgs {
        self.args.push(arg.to_string());
        self
    }

    /// More arguments, as they are.
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> MountArgs {
        self.args
            .extend(args.iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// `-f`: stay in the foreground (for [`Mount::foreground`]).
    pub fn foreground(self) -> MountArgs {
        self.arg("-f")
    }

    /// `-v`: info logs on stderr.
    pub fn verbose(self) -> MountArgs {
        self.arg("-v")
    }

    /// `--no-dht`.
    pub fn no_dht(self) -> MountArgs {
        self.arg("--no-dht")
    }

    /// `--peer ADDR` (`HOST:PORT`).
    pub fn peer(self, addr: &str) -> MountArgs {
        self.arg("--peer").arg(addr)
    }

    /// `--bootstrap ADDR` (`HOST:PORT`).
    pub fn bootstrap(self, addr: &str) -> MountArgs {
        self.arg("--bootstrap").arg(addr)
    }

    /// `--cache-dir DIR`.
    pub fn cache_dir(self, dir: &Path) -> MountArgs {
        self.arg("--cache-dir")
            .arg(dir.to_str().expect("UTF-8 path"))
    }

    /// `--port PORT`: our listen port.
    pub fn port(self, port: u16) -> MountArgs {
        self.arg("--port").arg(&port.to_string())
    }

    /// `--read-timeout SECS`.
    pub fn read_timeout(self, secs: u64) -> MountArgs {
        self.arg("--read-timeout").arg(&secs.to_string())
    }

    /// `--timeout SECS` (for the metadata).
    pub fn timeout(self, secs: u64) -> MountArgs {
        self.arg("--timeout").arg(&secs.to_string())
    }

    /// The arguments, URL first, without the mountpoint: what
    /// [`Mount::background`] and [`Mount::foreground`] take.
    pub fn build(&self) -> Vec<String> {
        self.args.clone()
    }

    /// The whole argument list `URL MNT OPTIONS..` of `btfs-mount`.
    pub fn at(&self, mnt: &Path) -> Vec<String> {
        let mut v = self.args.clone();
        v.insert(1, mnt.to_str().expect("UTF-8 path").to_string());
        v
    }
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
    pub fn background<S: AsRef<str>>(mnt: &Path, args: &[S]) -> Mount {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        fs::create_dir_all(mnt).expect("create mountpoint");
        let mnt = fs::canonicalize(mnt).expect("canonicalize mountpoint");
        let mut child = Child::spawn("btfs-mount", mount_command(&mnt, &args));
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
    pub fn temp_background<S: AsRef<str>>(args: &[S]) -> Mount {
        let (dir, mnt) = Mount::temp_dir();
        let mut m = Mount::background(&mnt, args);
        m._dir = Some(dir);
        m
    }

    /// Spawns `btfs-mount ARGS[0] MNT ARGS[1..]` as a [`Child`] that stays
    /// in the foreground (the caller includes the foreground flag) and waits
    /// up to `timeout` for `mnt` to be mounted. Panics with its stderr if it
    /// exits first.
    pub fn foreground<S: AsRef<str>>(mnt: &Path, args: &[S], timeout: Duration) -> Mount {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        fs::create_dir_all(mnt).expect("create mountpoint");
        let mnt = fs::canonicalize(mnt).expect("canonicalize mountpoint");
        let child = Child::spawn("btfs-mount", mount_command(&mnt, &args));
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

/// A tmpfs mounted on a directory (a small disk of its own, e.g. to fill
/// it up, or to measure a cache's disk usage exactly); lazily unmounted
/// (`umount -l`) on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Creates `dir` if missing and mounts a tmpfs of `size` bytes there
    /// (`mount -t tmpfs -o size=SIZE`, SIZE such as `2m` or `64m`).
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(dir).expect("create the tmpfs mountpoint");
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {}: {st}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
