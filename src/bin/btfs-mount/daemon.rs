//! Going to the background like `sshfs`, and the log.
//!
//! A mount command re-runs itself as a detached child (its own session, no
//! terminal) and waits on a pipe until the child says the tree is mounted,
//! so `btfs-mount URL MNT && ls MNT` works and a failure is reported by the
//! command itself, with its exit status. Once mounted, the child's stderr
//! (the log) goes to a file, at info level for our own events, so the
//! file says what happened without `-v`; the terminal saw warnings only.

use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Environment variable naming the pipe fd on which a background child
/// reports that the mount is ready.
const READY_FD_ENV: &str = "BTFS_MOUNT_READY_FD";

/// Whether this process is the background child of a mount command.
pub fn is_background_child() -> bool {
    std::env::var_os(READY_FD_ENV).is_some()
}

/// Re-runs this command as a detached child that mounts and reports
/// readiness on a pipe; returns once the tree is mounted (exit 0) or with
/// the child's failure (its one-line reason was already printed on our
/// stderr, which it shares until it is ready).
pub fn spawn_background() -> anyhow::Result<()> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let (rfd, wfd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let raw_w: RawFd = wfd.as_raw_fd();
    let exe = std::env::current_exe().context("cannot find our own executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(READY_FD_ENV, raw_w.to_string())
        .stdin(std::process::Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, fcntl) between fork and
    // exec; `raw_w` stays open in the parent until after spawn.
    unsafe {
        cmd.pre_exec(move || {
            let _ = nix::unistd::setsid();
            // Keep the write end open across exec.
            let fd = BorrowedFd::borrow_raw(raw_w);
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the background process")?;
    // Our copy of the write end goes, so EOF arrives when the child exits.
    drop(wfd);
    let mut pipe = std::fs::File::from(rfd);
    let mut msg = String::new();
    let _ = pipe.read_to_string(&mut msg);
    if msg.starts_with("ready") {
        return Ok(());
    }
    let status = child.wait()?;
    match status.code() {
        // It said why on our stderr already: one line, its exit status.
        Some(code) if code != 0 => std::process::exit(code),
        _ => bail!("the mount did not come up ({status})"),
    }
}

/// Tells a waiting parent that the mount is up, then detaches from the
/// terminal: stderr (the log) is appended to `log`, and stdout goes to
/// /dev/null, or to the log too with `stdout_to_log` (a writable mount
/// prints its magnet there after unmount: the caller's stdout is never
/// kept, so `$(btfs-mount ...)` returns once mounted). The log level for
/// our own events becomes info (see [`Logging::to_file`]). A no-op in the
/// foreground.
pub fn report_ready(log: &Path, stdout_to_log: bool, logging: &Logging) {
    let Some(fd) = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<RawFd>().ok())
    else {
        return;
    };
    // SAFETY: the parent passed us this fd for this one use; nothing else
    // in this process owns it.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let _ = f.write_all(b"ready\n");
    drop(f);
    let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") else {
        return;
    };
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log);
    let target: BorrowedFd<'_> = match &logf {
        Ok(l) => std::os::fd::AsFd::as_fd(l),
        Err(_) => std::os::fd::AsFd::as_fd(&null),
    };
    let out = if stdout_to_log {
        target
    } else {
        std::os::fd::AsFd::as_fd(&null)
    };
    let _ = nix::unistd::dup2_stdout(out);
    let _ = nix::unistd::dup2_stderr(target);
    logging.to_file();
}

/// Where log lines go, and at which level.
///
/// In the foreground, and in a background child until it is ready, lines
/// go to stderr (the user's terminal) at warn level (-v: info, -vv:
/// debug; `RUST_LOG` overrides). A background child also keeps its own
/// events at info level in memory from the start, so its log file, once
/// opened, tells the whole story: the lookup, the peers, the mount.
pub struct Logging {
    /// The stderr layer's filter, raised once stderr is the log file.
    term: reload::Handle<EnvFilter, Registry>,
    /// Lines kept for the log file until it is opened (background child
    /// only); None once written there.
    early: Arc<Mutex<Option<Vec<u8>>>>,
    /// -v count.
    verbose: u8,
}

/// Most bytes of early log lines kept for the log file.
const EARLY_MAX: usize = 1 << 20;

/// A writer into [`Logging::early`]; drops lines once the buffer is gone
/// or full.
#[derive(Clone)]
struct EarlyWriter(Arc<Mutex<Option<Vec<u8>>>>);

impl Write for EarlyWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut early = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = early.as_mut()
            && v.len() + buf.len() <= EARLY_MAX
        {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logging {
    /// Starts logging (see [`Logging`]); `verbose` is the -v count.
    pub fn init(verbose: u8) -> Logging {
        use std::io::IsTerminal;
        use tracing_subscriber::Layer;
        use tracing_subscriber::prelude::*;
        let (term_filter, term) = reload::Layer::new(Self::filter(verbose, false));
        let early = Arc::new(Mutex::new(is_background_child().then(Vec::new)));
        let stderr_layer = tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .with_filter(term_filter);
        let writer = EarlyWriter(early.clone());
        let early_layer = is_background_child().then(|| {
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .with_filter(Self::filter(verbose, true))
        });
        tracing_subscriber::registry()
            .with(stderr_layer)
            .with(early_layer)
            .init();
        Logging {
            term,
            early,
            verbose,
        }
    }

    fn filter(verbose: u8, file: bool) -> EnvFilter {
        if let Ok(f) = EnvFilter::try_from_default_env() {
            return f;
        }
        // librqbit_utp warns at every start when the kernel caps the UDP
        // receive buffer below the 250 MB it asks for (net.core.rmem_max):
        // nothing a user can act on per mount; shown with -vv.
        EnvFilter::new(match (verbose, file) {
            (0, false) => "warn,librqbit_utp=error",
            // A log file says what happened without -v: our own events at
            // info, other crates' warnings.
            (0, true) | (1, _) => "warn,librqbit_utp=error,btfs=info,btfs_mount=info",
            _ => "debug",
        })
    }

    /// Stderr is the log file from now on: the lines kept so far go there
    /// first, then every line at the log file's level.
    fn to_file(&self) {
        if let Some(early) = self.early.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = std::io::stderr().write_all(&early);
        }
        let _ = self.term.reload(Self::filter(self.verbose, true));
    }
}
