//! Round-trip times of our queries and the *soft timeout* lookups derive
//! from them.
//!
//! BEP 5 leaves timeouts to implementations. A lookup (see `lookup`) waits at
//! most the request timeout ([`super::DhtConfig::request_timeout`], 2 s) for
//! a node before calling it failed, but most answers come within a few round
//! trips. A query unanswered after the soft timeout stops holding one of the
//! α parallel slots of its lookup, so the next candidate is asked in its
//! place; the query stays outstanding and a late answer is still used (what
//! libtorrent calls a short timeout).
//!
//! The estimate is smoothed as TCP smooths its retransmission timer
//! (RFC 6298): `srtt ← 7/8·srtt + 1/8·rtt`, `rttvar ← 3/4·rttvar +
//! 1/4·|srtt − rtt|`, and the soft timeout is `srtt + 4·rttvar`, kept between
//! [`SOFT_TIMEOUT_MIN`] and half the request timeout. Samples come from
//! every node we query, so `rttvar` measures the spread between nodes as
//! well as the jitter of each.

use std::time::Duration;

/// Lower bound of the soft timeout: 200 ms. On loopback or a LAN round
/// trips are well under a millisecond; this keeps a node that is merely busy
/// for a moment from being passed over.
pub const SOFT_TIMEOUT_MIN: Duration = Duration::from_millis(200);

/// Soft timeout before any round trip was measured: 500 ms (still bounded by
/// half the request timeout).
pub const SOFT_TIMEOUT_INITIAL: Duration = Duration::from_millis(500);

/// Smoothed round-trip time of answered queries (responses and error
/// replies alike; a query that got no answer gives no sample).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundTrip {
    srtt: Option<Duration>,
    rttvar: Duration,
    samples: u64,
}

impl RoundTrip {
    /// Adds one measured round trip (time from sending a query to its
    /// answer).
    pub fn sample(&mut self, rtt: Duration) {
        self.samples = self.samples.saturating_add(1);
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(s) => {
                let diff = s.abs_diff(rtt);
                self.rttvar = self.rttvar.saturating_mul(3).saturating_add(diff) / 4;
                self.srtt = Some(s.saturating_mul(7).saturating_add(rtt) / 8);
            }
        }
    }

    /// The smoothed round-trip time, once one was measured.
    pub fn smoothed(&self) -> Option<Duration> {
        self.srtt
    }

    /// Number of round trips measured.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The soft timeout now (a query out for longer is slow):
    /// `srtt + 4·rttvar` (or
    /// [`SOFT_TIMEOUT_INITIAL`] before any sample), at least
    /// [`SOFT_TIMEOUT_MIN`] and at most half of `request_timeout`.
    pub fn soft_timeout(&self, request_timeout: Duration) -> Duration {
        let raw = match self.srtt {
            Some(s) => s.saturating_add(self.rttvar.saturating_mul(4)),
            None => SOFT_TIMEOUT_INITIAL,
        };
        raw.max(SOFT_TIMEOUT_MIN).min(request_timeout / 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn soft_timeout_follows_round_trips_within_bounds() {
        let two_s = Duration::from_secs(2);
        let mut r = RoundTrip::default();
        assert_eq!(r.soft_timeout(two_s), SOFT_TIMEOUT_INITIAL);
        // Loopback: sub-millisecond answers give the floor.
        for _ in 0..20 {
            r.sample(MS / 4);
        }
        assert!(r.smoothed().unwrap() < MS);
        assert_eq!(r.soft_timeout(two_s), SOFT_TIMEOUT_MIN);
        // Internet: 100-300 ms answers give a few hundred ms.
        let mut r = RoundTrip::default();
        for i in 0..100u32 {
            r.sample(MS * (100 + (i * 37) % 200));
        }
        let s = r.soft_timeout(two_s);
        assert!(s > Duration::from_millis(250) && s < two_s / 2, "{s:?}");
        // Very slow answers: capped at half the request timeout.
        let mut r = RoundTrip::default();
        r.sample(Duration::from_secs(3));
        assert_eq!(r.soft_timeout(two_s), two_s / 2);
        assert_eq!(r.samples(), 1);
        // A tiny request timeout wins over the floor.
        assert_eq!(
            RoundTrip::default().soft_timeout(300 * MS),
            150 * MS,
            "never past half the request timeout"
        );
        // Huge samples do not overflow.
        let mut r = RoundTrip::default();
        r.sample(Duration::MAX);
        r.sample(Duration::MAX);
        assert_eq!(r.soft_timeout(two_s), two_s / 2);
    }
}
