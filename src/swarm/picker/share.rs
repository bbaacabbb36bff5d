//! How the blocks that reads wait on are shared out over the connections
//! that pick (issue 18): in proportion to their measured download rates
//! and, for a read that needs few blocks, over only as many of the fastest
//! measured connections as it takes to give each [`BLOCKS_PER_PEER`].
//!
//! Why few peers for a small read: a read waits for the slowest of the
//! peers it asked, and a peer's answer comes one round trip plus its own
//! latency later, with a long tail (on the internet-like bench swarm a
//! seeder's first block of a read arrives p50 55–68 ms, p90 111–129 ms
//! after the request), while up to about 6 blocks come in that first burst
//! (a libtorrent seeder sends the rest one of its 50 ms ticks later). The
//! slowest of 3 answers is sooner than the slowest of 8. A read of many
//! blocks (a 1 MiB seek, a 4 MiB piece) still goes to every peer: there
//! the transfer time dominates.
//!
//! Why idle peers first: a block waits behind every block asked of its
//! peer before it, and a `cancel` does not recall those already in the
//! peer's send buffer. When a player seeks back inside its readahead
//! window, the readahead still queued stays wanted: a peer with 31 such
//! requests queued sent the new read's blocks 340 ms after the seek, the
//! seven idle peers theirs within 50–100 ms (trace of the player test,
//! 256 KiB pieces). A peer whose readahead queue takes more than
//! [`BUSY_BACKLOG`] to send at its rate gets blocks of a read only when
//! the idle ones have had their turn and left some.

use std::time::Duration;

use super::{BLOCK, BlockState, ConnId, MIN_RATE, Picker};

/// Blocks a waiting read gives each of the fastest measured peers before
/// the next one is asked (6 blocks, 96 KiB: what a seeder sends in its
/// first burst): a read of one 256 KiB piece goes to 3 peers.
pub const BLOCKS_PER_PEER: usize = 6;

/// Most peers a read is narrowed to: a read of more blocks than
/// `FEW_PEERS` × [`BLOCKS_PER_PEER`] is shared by rate over every peer. A
/// player's read after a seek (2 pieces, 32 blocks) went slower from the 6
/// fastest (by rate: the peers that were streaming, whose cancelled
/// requests for the old position still fill the seeder's send buffer)
/// than from all 8: p50 144–267 ms against 85–155 in the same runs.
const FEW_PEERS: usize = 3;

/// Readahead queued at a peer, in time to send it at the peer's rate,
/// past which the peer is busy: the blocks of a new read go to the idle
/// peers first (see the module docs).
pub const BUSY_BACKLOG: Duration = Duration::from_millis(50);

impl Picker {
    /// How many more blocks that reads wait on connection `conn` may be
    /// asked for now: its share of those blocks not received yet, less
    /// what it has been asked already.
    ///
    /// When `k` = pending blocks / [`BLOCKS_PER_PEER`] (rounded up) is at
    /// most [`FEW_PEERS`] and less than the connections picking, and at
    /// least `k` of them have a measured rate, the blocks are for the `k` fastest of those (rate,
    /// then connection id), in equal parts; a connection outside them gets
    /// nothing until each of them has picked since the latest read (blocks
    /// they left are then for the others, by rate: they lack the piece or
    /// have no room). Otherwise every picking connection shares them in
    /// proportion to its measured rate (at least one block), unmeasured
    /// ones at [`MIN_RATE`] (nothing is known yet: spread wide).
    pub fn urgent_room(&self, conn: ConnId) -> usize {
        let (pending, mine) = self.urgent_pending(conn);
        if pending == 0 {
            return 0;
        }
        let weight = |r: f64| r.max(MIN_RATE);
        // Every picking connection and this one (which may not be recorded
        // yet: its first pick records it after this is asked).
        let own = self.rates.get(&conn).copied().unwrap_or(0.0);
        let mut all: Vec<(ConnId, f64)> = self
            .rates
            .iter()
            .filter(|&(&c, _)| c != conn)
            .map(|(&c, &r)| (c, r))
            .collect();
        all.push((conn, own));
        // Busy peers (readahead queued) only after the idle ones. A
        // backlog noted before the latest read began is not trusted: a
        // seek makes readahead stale, which each connection cancels at its
        // next pick, so until then it counts as idle (else the first to
        // pick after a seek would take the whole read).
        let busy = |&(c, r): &(ConnId, f64)| {
            let fresh = c == conn || self.picked_epoch.get(&c) == Some(&self.urgent_epoch);
            let queued = self.backlog.get(&c).copied().unwrap_or(0);
            fresh && queued as f64 * f64::from(BLOCK) / weight(r) > BUSY_BACKLOG.as_secs_f64()
        };
        if all.iter().any(busy) && !all.iter().all(busy) {
            let (busy_ones, idle): (Vec<_>, Vec<_>) = all.iter().copied().partition(|a| busy(a));
            if !idle.iter().any(|&(c, _)| c == conn) {
                if !idle
                    .iter()
                    .all(|(c, _)| self.picked_epoch.get(c) == Some(&self.urgent_epoch))
                {
                    return 0;
                }
                let total: f64 = busy_ones.iter().map(|&(_, r)| weight(r)).sum();
                let share = ((pending as f64 * weight(own) / total).ceil() as usize).max(1);
                return share.saturating_sub(mine);
            }
            all = idle;
        }
        let k = pending.div_ceil(BLOCKS_PER_PEER);
        let mut fastest: Vec<(ConnId, f64)> =
            all.iter().copied().filter(|&(_, r)| r > 0.0).collect();
        let pool = if k <= FEW_PEERS && k < all.len() && fastest.len() >= k {
            fastest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            fastest.truncate(k);
            if fastest.iter().any(|&(c, _)| c == conn) {
                return pending.div_ceil(k).saturating_sub(mine);
            } else if fastest
                .iter()
                .all(|(c, _)| self.picked_epoch.get(c) == Some(&self.urgent_epoch))
            {
                all.retain(|a| !fastest.contains(a));
                all
            } else {
                return 0;
            }
        } else {
            all
        };
        let total: f64 = pool.iter().map(|&(_, r)| weight(r)).sum();
        let share = ((pending as f64 * weight(own) / total).ceil() as usize).max(1);
        share.saturating_sub(mine)
    }

    /// Connection `conn` has `outstanding` requests at its peer (those of
    /// blocks reads wait on among them): its readahead backlog, which
    /// makes it busy (see [`BUSY_BACKLOG`]).
    pub fn note_queue(&mut self, conn: ConnId, outstanding: usize) {
        let (_, mine) = self.urgent_pending(conn);
        self.backlog.insert(conn, outstanding.saturating_sub(mine));
    }

    /// How many connections pick now (each until it is choked or closed).
    pub fn picking_conns(&self) -> usize {
        self.rates.len()
    }

    /// Blocks of pieces reads wait on not received yet, and how many of
    /// them are asked of `conn`.
    fn urgent_pending(&self, conn: ConnId) -> (usize, usize) {
        let mut pending = 0usize;
        let mut mine = 0usize;
        for &p in self.urgent.keys() {
            if self.has(p) || self.verifying.contains(&p) || self.unverified.contains(&p) {
                continue;
            }
            match self.partial.get(&p) {
                None => pending += self.piece_size(p).div_ceil(BLOCK) as usize,
                Some(part) => {
                    for st in &part.blocks {
                        match st {
                            BlockState::Missing => pending += 1,
                            BlockState::Requested(by) => {
                                pending += 1;
                                if by.iter().any(|a| a.conn == conn) {
                                    mine += 1;
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        (pending, mine)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::super::{ConnLoad, Req};
    use super::*;

    /// 16 pieces of 256 KiB (16 blocks each).
    fn picker() -> Picker {
        Picker::new(16 * BLOCK as u64, 16 * 16 * BLOCK as u64, 16, 1 << 30)
    }

    fn pick(p: &mut Picker, conn: ConnId, rate: f64) -> Vec<Req> {
        let load = ConnLoad {
            rate,
            outstanding: 0,
        };
        p.pick_within(conn, &|_| true, 64, 64, load, Instant::now())
            .0
    }

    #[test]
    fn unmeasured_peers_share_a_small_read_evenly() {
        let mut p = picker();
        for c in 1..=8 {
            assert!(pick(&mut p, c, 0.0).is_empty());
        }
        p.add_urgent(3);
        for c in 1..=8 {
            assert_eq!(pick(&mut p, c, 0.0).len(), 2, "connection {c}");
        }
    }

    #[test]
    fn a_small_read_goes_to_the_fastest_measured_peers() {
        let mut p = picker();
        let rate = |c: ConnId| 100_000.0 * c as f64;
        for c in 1..=8 {
            assert!(pick(&mut p, c, rate(c)).is_empty());
        }
        p.add_urgent(3);
        // One piece: 16 blocks, three peers: the fastest (8, 7 and 6) take
        // up to 6 each, whatever order they pick in; the others nothing.
        let mut total = 0;
        for c in 1..=8 {
            let got = pick(&mut p, c, rate(c));
            assert_eq!(got.is_empty(), c < 6, "connection {c}");
            assert!(got.len() <= BLOCKS_PER_PEER);
            assert!(got.iter().all(|r| r.index == 3));
            total += got.len();
        }
        assert_eq!(total, 16);
        // Five pieces (80 blocks): every peer, in proportion to its rate.
        for i in 4..9 {
            p.add_urgent(i);
        }
        let total: usize = (1..=8).map(|c| pick(&mut p, c, rate(c)).len()).sum();
        assert_eq!(total, 80);
    }

    #[test]
    fn a_read_of_two_pieces_goes_to_every_peer() {
        let mut p = picker();
        let rate = |c: ConnId| 100_000.0 * c as f64;
        for c in 1..=8 {
            assert!(pick(&mut p, c, rate(c)).is_empty());
        }
        p.add_urgent(3);
        p.add_urgent(4);
        let got: Vec<usize> = (1..=8).map(|c| pick(&mut p, c, rate(c)).len()).collect();
        assert!(got.iter().all(|&n| n > 0), "{got:?}");
        assert_eq!(got.iter().sum::<usize>(), 32);
    }

    #[test]
    fn blocks_the_fastest_leave_go_to_the_others() {
        let mut p = picker();
        let rate = |c: ConnId| 100_000.0 * c as f64;
        for c in 1..=8 {
            assert!(pick(&mut p, c, rate(c)).is_empty());
        }
        p.add_urgent(3);
        // The three fastest lack piece 3: once they have picked, the
        // others take its blocks.
        for c in [8, 7, 6] {
            let load = ConnLoad {
                rate: rate(c),
                outstanding: 0,
            };
            let got = p.pick_within(c, &|i| i != 3, 64, 64, load, Instant::now());
            assert!(got.0.is_empty());
        }
        let total: usize = (1..=5).map(|c| pick(&mut p, c, rate(c)).len()).sum();
        assert_eq!(total, 16);
    }

    /// Four connections at 1 MB/s, connection 1 busy with 20 requests of
    /// readahead queued (330 ms at 1 MB/s, more than BUSY_BACKLOG), then a
    /// read of `urgent` pieces: connection 1 is not given any of it yet.
    /// Returns the picker, connection 1's load and the time of its pick.
    fn one_busy_peer_then_a_read(urgent: &[u32]) -> (Picker, ConnLoad, Instant) {
        let mut p = picker();
        let rate = 1_000_000.0;
        for c in 1..=4 {
            assert!(pick(&mut p, c, rate).is_empty());
        }
        p.note_queue(1, 20);
        for &i in urgent {
            p.add_urgent(i);
        }
        let busy = ConnLoad {
            rate,
            outstanding: 20,
        };
        let now = Instant::now();
        assert!(p.pick_within(1, &|_| true, 64, 64, busy, now).0.is_empty());
        (p, busy, now)
    }

    #[test]
    fn a_peer_busy_with_readahead_gets_a_read_only_after_the_idle_ones() {
        let (mut p, busy, now) = one_busy_peer_then_a_read(&[3, 4]);
        let rate = busy.rate;
        // The idle three take the read's 32 blocks.
        let idle: usize = (2..=4).map(|c| pick(&mut p, c, rate).len()).sum();
        assert_eq!(idle, 32);
        assert!(p.pick_within(1, &|_| true, 64, 64, busy, now).0.is_empty());
    }

    #[test]
    fn a_busy_peer_takes_the_blocks_the_idle_ones_cannot() {
        let (mut p, busy, now) = one_busy_peer_then_a_read(&[3]);
        let rate = busy.rate;
        // The idle ones lack piece 3.
        for c in 2..=4 {
            let load = ConnLoad {
                rate,
                outstanding: 0,
            };
            assert!(
                p.pick_within(c, &|i| i != 3, 64, 64, load, now)
                    .0
                    .is_empty()
            );
        }
        let got = p.pick_within(1, &|_| true, 64, 64, busy, now).0;
        assert_eq!(got.len(), 16);
        assert!(got.iter().all(|r| r.index == 3));
    }

    #[test]
    fn blocks_of_reads_asked_of_a_peer_do_not_make_it_busy() {
        let mut p = picker();
        let rate = 1_000_000.0;
        for c in 1..=2 {
            assert!(pick(&mut p, c, rate).is_empty());
        }
        p.add_urgent(3);
        p.add_urgent(4);
        let got = pick(&mut p, 1, rate);
        assert_eq!(got.len(), 16);
        // Its 16 outstanding requests are all of the read: not busy, so
        // connection 2 is not held back waiting on it, and vice versa.
        p.note_queue(1, got.len());
        assert_eq!(pick(&mut p, 2, rate).len(), 16);
    }

    #[test]
    fn a_backlog_noted_before_the_read_does_not_count() {
        let mut p = picker();
        let rate = 1_000_000.0;
        for c in 1..=4 {
            assert!(pick(&mut p, c, rate).is_empty());
        }
        // Readahead queued before a seek: stale once the read begins, and
        // cancelled at connection 1's next pick.
        p.note_queue(1, 20);
        p.add_urgent(3);
        p.add_urgent(4);
        let idle: usize = (2..=4).map(|c| pick(&mut p, c, rate).len()).sum();
        assert_eq!(idle, 24);
        assert_eq!(pick(&mut p, 1, rate).len(), 8);
    }
}
