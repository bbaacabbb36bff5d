//! The process's memory budget: one figure for everything that grows with
//! traffic, shared by every swarm (every archive) of the process.
//!
//! What it covers, each counted while it is held:
//! - blocks in flight: every block (16 KiB, BEP 3) requested from a peer
//!   and not yet written to the cache, from the request until the write
//!   (the block itself passes through memory once);
//! - upload buffers: blocks read from the cache to be sent to a peer;
//! - per-peer queues: messages read from a peer and not handled yet
//!   (bitfields, extension messages; their blocks count as in flight);
//! - the metadata being assembled (BEP 9), per connection assembling it;
//! - hash work: the buffer a piece is hashed through, and the buffers of
//!   reads being answered.
//!
//! Blocks go to the cache as they arrive and pieces are hashed from it
//! ([`super::write`], [`super::verify`]), so none of these grows with the
//! piece length.
//!
//! At the limit, nothing new is requested ahead of reads (readahead,
//! prefetch), uploads are served a block at a time, and the metadata is
//! asked of one peer at a time; blocks that reads already wait on are
//! still requested (a waiting read never stalls on the budget) and hash
//! work is never refused. The log says when the budget limits us (at most
//! every [`NOTE_EVERY`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The default budget: 8 MiB per process (`--memory-limit`).
pub const DEFAULT_MEMORY_LIMIT: u64 = 8 << 20;
/// Smallest budget accepted: 256 KiB (smaller figures are raised to it).
pub const MIN_MEMORY_LIMIT: u64 = 256 << 10;
/// How often, at most, the log says that the budget limits us.
const NOTE_EVERY: Duration = Duration::from_secs(30);

/// A byte budget shared by the tasks of a process (see the module docs).
pub struct MemoryBudget {
    limit: AtomicU64,
    used: AtomicU64,
    /// When the log last said that the budget limits us.
    last_note: Mutex<Option<Instant>>,
}

static GLOBAL: MemoryBudget = MemoryBudget {
    limit: AtomicU64::new(DEFAULT_MEMORY_LIMIT),
    used: AtomicU64::new(0),
    last_note: Mutex::new(None),
};

/// The process's budget.
pub(crate) fn global() -> &'static MemoryBudget {
    &GLOBAL
}

/// Sets the process's memory budget, in bytes (at least
/// [`MIN_MEMORY_LIMIT`]; default [`DEFAULT_MEMORY_LIMIT`]). It applies at
/// once to every swarm of the process; memory already held above a lower
/// figure is released as it is used.
pub fn set_memory_limit(bytes: u64) {
    GLOBAL
        .limit
        .store(bytes.max(MIN_MEMORY_LIMIT), Ordering::Relaxed);
}

/// The process's memory budget, in bytes.
pub fn memory_limit() -> u64 {
    GLOBAL.limit.load(Ordering::Relaxed)
}

/// Bytes of the process's memory budget in use now.
pub fn memory_in_use() -> u64 {
    GLOBAL.used.load(Ordering::Relaxed)
}

impl MemoryBudget {
    /// Counts `bytes` whatever the limit (work that must go on: hashing,
    /// a read already waiting); released when the reservation drops.
    pub(crate) fn force(&'static self, bytes: u64) -> Reservation {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        Reservation {
            budget: self,
            bytes,
        }
    }

    /// Counts `bytes` if they fit within the limit.
    pub(crate) fn try_reserve(&'static self, bytes: u64) -> Option<Reservation> {
        let mut r = Reservation {
            budget: self,
            bytes: 0,
        };
        (r.grow_to(bytes) == bytes).then_some(r)
    }

    /// Logs (at most every [`NOTE_EVERY`]) that the budget kept us from
    /// doing `what`.
    pub(crate) fn note_limited(&self, what: &str) {
        let now = Instant::now();
        {
            let mut last = self.last_note.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| now.duration_since(t) < NOTE_EVERY) {
                tracing::debug!("memory budget reached: {what}");
                return;
            }
            *last = Some(now);
        }
        tracing::info!(
            "memory budget of {} KiB reached ({} KiB in use): {what} (see --memory-limit)",
            self.limit.load(Ordering::Relaxed) >> 10,
            self.used.load(Ordering::Relaxed) >> 10
        );
    }
}

/// Bytes counted in a [`MemoryBudget`] until this drops.
pub(crate) struct Reservation {
    budget: &'static MemoryBudget,
    bytes: u64,
}

impl Reservation {
    /// Nothing counted yet, in the process's budget.
    pub(crate) fn empty() -> Reservation {
        Reservation {
            budget: global(),
            bytes: 0,
        }
    }

    /// The bytes counted.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Grows toward `want` bytes as far as the limit allows (never
    /// shrinks); returns the bytes now counted.
    pub(crate) fn grow_to(&mut self, want: u64) -> u64 {
        if want <= self.bytes {
            return self.bytes;
        }
        let b = self.budget;
        let mut used = b.used.load(Ordering::Relaxed);
        loop {
            let room = b.limit.load(Ordering::Relaxed).saturating_sub(used);
            let add = (want - self.bytes).min(room);
            if add == 0 {
                return self.bytes;
            }
            match b.used.compare_exchange_weak(
                used,
                used + add,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.bytes += add;
                    return self.bytes;
                }
                Err(now) => used = now,
            }
        }
    }

    /// Counts exactly `bytes` from now on, whatever the limit.
    pub(crate) fn set(&mut self, bytes: u64) {
        if bytes > self.bytes {
            self.budget
                .used
                .fetch_add(bytes - self.bytes, Ordering::Relaxed);
        } else {
            self.budget
                .used
                .fetch_sub(self.bytes - bytes, Ordering::Relaxed);
        }
        self.bytes = bytes;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_give_back_on_drop() {
        static B: MemoryBudget = MemoryBudget {
            limit: AtomicU64::new(100),
            used: AtomicU64::new(0),
            last_note: Mutex::new(None),
        };
        let mut a = Reservation {
            budget: &B,
            bytes: 0,
        };
        assert_eq!(a.grow_to(60), 60);
        assert!(B.try_reserve(50).is_none());
        let c = B.try_reserve(40).unwrap();
        assert_eq!(a.grow_to(80), 60, "nothing left");
        let f = B.force(30);
        assert_eq!(B.used.load(Ordering::Relaxed), 130);
        drop(c);
        drop(f);
        assert_eq!(a.grow_to(200), 100);
        a.set(10);
        assert_eq!(B.used.load(Ordering::Relaxed), 10);
        drop(a);
        assert_eq!(B.used.load(Ordering::Relaxed), 0);
    }
}
