//! How many requests for pieces no read waits on (readahead, prefetch) a
//! connection keeps queued at its peer: enough to keep the peer sending
//! at its measured rate, and no more (issue 18).
//!
//! Why a bound: a block asked of a peer waits behind every block asked of
//! it before, and a `cancel` (BEP 3) does not recall the blocks the peer
//! has already read into its send buffer (libtorrent keeps up to
//! `send_buffer_watermark`, 500 KB, there: 170 ms at 3 MB/s). When a
//! player seeks, the blocks of the new position go to peers whose queues
//! hold readahead; with half a second of readahead queued at each peer
//! they waited up to a quarter of a second behind it. The queue of
//! readahead requests is therefore sized like a TCP window: the peer's
//! measured rate times the time it takes to answer a request (measured
//! when its queue was empty: the round trip plus the peer's own latency)
//! plus one libtorrent tick of slack (a rate-limited libtorrent peer sends
//! in bursts once per `tick_interval`, 50–100 ms), plus a few blocks,
//! and at least [`MIN_AHEAD_BLOCKS`]. Blocks reads wait on are not
//! bounded by this (see [`crate::swarm::Swarm::plan_requests`]).

use std::time::{Duration, Instant};

use crate::swarm::{BLOCK, Req};

/// Time a peer's queue of readahead requests covers beyond its answer
/// time: one tick of a rate-limited libtorrent peer (`tick_interval`,
/// 50–100 ms), which sends in bursts once per tick.
pub(super) const AHEAD_SLACK: Duration = Duration::from_millis(60);
/// Blocks added to the readahead queue on top of rate × time (the block
/// being sent and those in the peer's hands).
pub(super) const AHEAD_EXTRA_BLOCKS: usize = 4;
/// Fewest readahead requests a connection may keep queued (256 KiB): a
/// peer not measured yet (or measured slow while it was asked little)
/// still gets enough to send 2.6 MB/s at a 100 ms answer time, so a
/// stream starts at full rate and its measured rate can grow.
pub(super) const MIN_AHEAD_BLOCKS: usize = 16;
/// Answer time assumed before one is measured.
pub(super) const DEFAULT_ANSWER: Duration = Duration::from_millis(100);
/// Longest answer time taken into account (a stalled peer must not make
/// the queue unbounded).
const MAX_ANSWER: Duration = Duration::from_secs(2);

/// A connection's request pipeline: its peer's measured answer time.
#[derive(Debug, Default)]
pub(super) struct Pipeline {
    /// Smoothed time from a request sent to an idle peer (none of ours
    /// outstanding) to its block: the round trip plus the peer's latency.
    answer: Option<Duration>,
    /// The request that measures the next answer time, and when it left.
    probe: Option<(Req, Instant)>,
}

impl Pipeline {
    /// Requests were sent at `now`, `first` the first of them, to a peer
    /// with `queued` of ours outstanding before them: when none were, the
    /// first one's answer measures the answer time.
    pub(super) fn sent(&mut self, first: Req, queued: usize, now: Instant) {
        if queued == 0 {
            self.probe = Some((first, now));
        }
    }

    /// Block `r` arrived at `now`: an answer time sample when it is the
    /// probe (smoothed over samples as TCP smooths its RTT, 1/4 weight).
    pub(super) fn arrived(&mut self, r: &Req, now: Instant) {
        let Some((p, at)) = self.probe else {
            return;
        };
        if p != *r {
            return;
        }
        self.probe = None;
        let sample = now.saturating_duration_since(at).min(MAX_ANSWER);
        self.answer = Some(match self.answer {
            None => sample,
            Some(a) => (a * 3 + sample) / 4,
        });
    }

    /// The measured answer time (None before a sample).
    #[cfg(test)]
    pub(super) fn answer(&self) -> Option<Duration> {
        self.answer
    }

    /// Most requests a connection to a peer sending `rate` bytes/s (0: not
    /// measured) keeps outstanding past which only blocks reads wait on
    /// are asked: rate × (answer time + [`AHEAD_SLACK`]) in blocks, plus
    /// [`AHEAD_EXTRA_BLOCKS`], at least [`MIN_AHEAD_BLOCKS`].
    pub(super) fn ahead_cap(&self, rate: f64) -> usize {
        let answer = self.answer.unwrap_or(DEFAULT_ANSWER);
        let secs = (answer + AHEAD_SLACK).as_secs_f64();
        let blocks = (rate.max(0.0) * secs / f64::from(BLOCK)).ceil();
        // `as` saturates: a huge or NaN rate gives a large (or 0) count,
        // and the caller bounds it by the request depth anyway.
        (blocks as usize)
            .saturating_add(AHEAD_EXTRA_BLOCKS)
            .max(MIN_AHEAD_BLOCKS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(index: u32) -> Req {
        Req {
            index,
            begin: 0,
            length: BLOCK,
        }
    }

    #[test]
    fn unmeasured_peers_get_the_minimum_queue() {
        let p = Pipeline::default();
        assert_eq!(p.ahead_cap(0.0), MIN_AHEAD_BLOCKS);
        assert_eq!(p.ahead_cap(f64::NAN), MIN_AHEAD_BLOCKS);
    }

    #[test]
    fn the_queue_covers_rate_times_answer_time_plus_a_tick() {
        let mut p = Pipeline::default();
        let t = Instant::now();
        p.sent(req(1), 0, t);
        p.arrived(&req(1), t + Duration::from_millis(50));
        assert_eq!(p.answer(), Some(Duration::from_millis(50)));
        // 3 MB/s × (50 + 60) ms = 330 kB = 20.1 blocks → 21, + 4.
        assert_eq!(p.ahead_cap(3_000_000.0), 25);
        // A slow peer: the minimum.
        assert_eq!(p.ahead_cap(100_000.0), MIN_AHEAD_BLOCKS);
        // A far peer (500 ms): a deeper queue at the same rate.
        p.sent(req(2), 0, t);
        p.arrived(&req(2), t + Duration::from_millis(1250));
        // (50 × 3 + 1250) / 4 = 350 ms.
        assert_eq!(p.answer(), Some(Duration::from_millis(350)));
        // 3 MB/s × 410 ms = 75.1 blocks → 76, + 4.
        assert_eq!(p.ahead_cap(3_000_000.0), 80);
    }

    #[test]
    fn only_a_request_to_an_idle_peer_measures() {
        let mut p = Pipeline::default();
        let t = Instant::now();
        // Queued behind others: its answer time includes theirs.
        p.sent(req(1), 5, t);
        p.arrived(&req(1), t + Duration::from_millis(400));
        assert_eq!(p.answer(), None);
        p.sent(req(2), 0, t);
        // Another block first: not the probe.
        p.arrived(&req(3), t + Duration::from_millis(10));
        assert_eq!(p.answer(), None);
        p.arrived(&req(2), t + Duration::from_millis(60));
        assert_eq!(p.answer(), Some(Duration::from_millis(60)));
        // Answered once only.
        p.arrived(&req(2), t + Duration::from_millis(900));
        assert_eq!(p.answer(), Some(Duration::from_millis(60)));
    }

    #[test]
    fn a_stalled_answer_is_bounded() {
        let mut p = Pipeline::default();
        let t = Instant::now();
        p.sent(req(1), 0, t);
        p.arrived(&req(1), t + Duration::from_secs(3600));
        assert_eq!(p.answer(), Some(MAX_ANSWER));
        assert!(p.ahead_cap(3_000_000.0) < 400);
    }
}
