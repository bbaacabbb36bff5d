//! A userspace wire for the simulated internet: copies Ethernet frames
//! between two tap devices, delaying and dropping them. This kernel has no
//! `netem`, so this is how a link gets latency and loss; it works for every
//! protocol (TCP segments are really lost and retransmitted) and keeps frame
//! order. [`super::Link::set_delay`] inserts one into a link.
//!
//! Each direction is one thread: it reads every frame its tap offers, drops
//! it with the loss probability, queues it until `arrival + delay`, then
//! writes it to the other tap. At most [`QUEUE_FRAMES`] frames wait per
//! direction; more are dropped, like a router's full buffer. The clock is
//! `ppoll`'s, so delays are exact to well under a millisecond on an idle
//! machine and late by scheduling noise on a busy one.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Frames queued per direction before tail drop.
pub const QUEUE_FRAMES: usize = 4096;

/// A wire's settings, changeable while it runs, and its counters.
#[derive(Default, Debug)]
pub struct LinkImpairment {
    /// One-way delay in microseconds.
    delay_us: AtomicU64,
    /// Loss probability in parts per million.
    loss_ppm: AtomicU64,
    /// Frames delivered (both directions).
    passed: AtomicU64,
    /// Frames dropped by the loss probability (both directions).
    lost: AtomicU64,
    /// Frames dropped because the queue was full (both directions).
    overflowed: AtomicU64,
}

impl LinkImpairment {
    /// Sets the one-way delay (each direction). Frames already queued keep
    /// their old delay.
    pub fn set_delay(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        self.delay_us.store(us, Ordering::Relaxed);
    }

    /// Sets the loss probability per frame and direction, 0.0 ..= 1.0.
    pub fn set_loss(&self, loss: f64) {
        assert!(
            (0.0..=1.0).contains(&loss),
            "loss {loss} is not a probability"
        );
        self.loss_ppm
            .store((loss * 1_000_000.0).round() as u64, Ordering::Relaxed);
    }

    /// The one-way delay.
    pub fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_us.load(Ordering::Relaxed))
    }

    /// The loss probability.
    pub fn loss(&self) -> f64 {
        self.loss_ppm.load(Ordering::Relaxed) as f64 / 1_000_000.0
    }

    /// (delivered, lost, dropped at a full queue) frames so far, both
    /// directions together.
    pub fn counters(&self) -> (u64, u64, u64) {
        (
            self.passed.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
            self.overflowed.load(Ordering::Relaxed),
        )
    }
}

/// Opens (creating it) tap device `name` in the calling thread's network
/// namespace: Ethernet frames without packet information, non-blocking.
pub fn open_tap(name: &str) -> File {
    assert!(name.len() < 16, "tap name {name:?} longer than 15 bytes");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .expect("open /dev/net/tun");
    // struct ifreq: a 16-byte name, then (for TUNSETIFF) a short of flags,
    // padded to 40 bytes.
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReq lays out.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc != 0 {
        panic!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
    }
    file
}

/// A running wire between two taps; stops its threads on drop.
pub struct Wire {
    imp: Arc<LinkImpairment>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Wire {
    /// Starts copying frames both ways between taps `a` and `b`, with no
    /// delay and no loss until told. `seed` seeds the loss draws.
    pub fn start(a: File, b: File, seed: u64) -> Wire {
        let imp = Arc::new(LinkImpairment::default());
        let stop = Arc::new(AtomicBool::new(false));
        let a2 = a.try_clone().expect("dup tap fd");
        let b2 = b.try_clone().expect("dup tap fd");
        let mut threads = Vec::new();
        for (i, (src, dst)) in [(a, b2), (b, a2)].into_iter().enumerate() {
            let (imp, stop) = (imp.clone(), stop.clone());
            let seed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64 + 1);
            threads.push(
                thread::Builder::new()
                    .name(format!("netsim-wire-{i}"))
                    .spawn(move || forward(src, dst, &imp, &stop, seed))
                    .expect("spawn wire thread"),
            );
        }
        Wire { imp, stop, threads }
    }

    /// The live settings and counters.
    pub fn impairment(&self) -> Arc<LinkImpairment> {
        self.imp.clone()
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One direction: `src` → queue → `dst`, until `stop`.
fn forward(mut src: File, mut dst: File, imp: &LinkImpairment, stop: &AtomicBool, seed: u64) {
    let mut rng = seed | 1;
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        // Sleep until a frame arrives, the head of the queue is due, or
        // 50 ms pass (to notice `stop`).
        let now = Instant::now();
        let wait = queue
            .front()
            .map_or(Duration::from_millis(50), |(due, _)| {
                due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(50));
        let mut pfd = libc::pollfd {
            fd: src.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: wait.as_secs() as libc::time_t,
            tv_nsec: wait.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd; ts outlives the call; no signal mask.
        unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        loop {
            match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let arrived = Instant::now();
                    // xorshift64: plenty for loss draws.
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    if rng % 1_000_000 < imp.loss_ppm.load(Ordering::Relaxed) {
                        imp.lost.fetch_add(1, Ordering::Relaxed);
                    } else if queue.len() >= QUEUE_FRAMES {
                        imp.overflowed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let due =
                            arrived + Duration::from_micros(imp.delay_us.load(Ordering::Relaxed));
                        queue.push_back((due, buf[..n].to_vec()));
                    }
                }
                Err(_) => break, // EAGAIN: nothing more now
            }
        }
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            let (_, frame) = queue.pop_front().expect("front checked");
            // A tap write injects the frame at once; it fails only if the
            // device is going away.
            if dst.write(&frame).is_ok() {
                imp.passed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
