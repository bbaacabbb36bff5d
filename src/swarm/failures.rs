//! Why the peers we know are of no use: the last dial failures and dropped
//! connections of a swarm, each as one phrase, so that a lookup that finds
//! no metadata can say why (every peer refused our encrypted handshake,
//! refused the connection, did not answer) without `-vv`.
//!
//! Bounded: the last [`KEPT`] addresses with their reason (each at most
//! [`MAX_REASON`] bytes), and a count of distinct failed addresses that
//! stops growing at [`MAX_COUNTED`].

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;

use super::Swarm;
use crate::peer::mse::MseError;
use crate::peer::transport::DialError;
use crate::peer::wire::WireError;

/// Failures kept with their reason.
const KEPT: usize = 3;
/// Longest reason kept, in bytes (cut at a character boundary).
const MAX_REASON: usize = 200;
/// Most distinct failed addresses counted.
const MAX_COUNTED: usize = 4096;

/// The swarm's record of failed peers (part of its locked state).
#[derive(Default)]
pub(super) struct Failures {
    /// Most recent last; one entry per address.
    recent: VecDeque<(SocketAddr, String)>,
    /// Every address that failed (up to [`MAX_COUNTED`]).
    addrs: HashSet<SocketAddr>,
}

impl Failures {
    fn note(&mut self, addr: SocketAddr, mut why: String) {
        if why.len() > MAX_REASON {
            let mut end = MAX_REASON;
            while !why.is_char_boundary(end) {
                end -= 1;
            }
            why.truncate(end);
            why.push('…');
        }
        self.recent.retain(|(a, _)| *a != addr);
        self.recent.push_back((addr, why));
        while self.recent.len() > KEPT {
            self.recent.pop_front();
        }
        if self.addrs.len() < MAX_COUNTED {
            self.addrs.insert(addr);
        }
    }
}

/// The peers that could not be used, for an error message: the last few
/// with their reason, and how many failed in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerFailures {
    /// The last failures, most recent first (at most 3): the peer's
    /// address and why, one phrase starting with a verb ("refused the
    /// connection ...").
    pub recent: Vec<(SocketAddr, String)>,
    /// Distinct peers that failed in all (at least `recent.len()`;
    /// counting stops at 4096).
    pub peers: usize,
}

impl PeerFailures {
    /// `": ADDR WHY; ADDR WHY; and N other peers failed"`, or `""` when
    /// no peer failed: the tail of a message that names the counts first.
    pub fn suffix(&self) -> String {
        if self.recent.is_empty() {
            return String::new();
        }
        let mut s = String::from(": ");
        let each: Vec<String> = self
            .recent
            .iter()
            .map(|(a, why)| format!("{a} {why}"))
            .collect();
        s.push_str(&each.join("; "));
        let more = self.peers.saturating_sub(self.recent.len());
        if more > 0 {
            s.push_str(&format!(
                "; and {} failed too",
                crate::plural::count(more, "other peer", "other peers")
            ));
        }
        s
    }
}

impl fmt::Display for PeerFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix().trim_start_matches(": "))
    }
}

/// Why a dial failed, as one phrase for a user: what the peer did, then
/// the low-level error in parentheses.
pub(crate) fn dial_reason(e: &DialError) -> String {
    use std::io::ErrorKind;
    match e {
        // Under `prefer` such a dial falls back to plaintext: this error
        // reaches us only when encryption is required.
        DialError::Mse(m) if m.retry_plaintext() => format!(
            "refused our encrypted handshake ({m}): it may accept plaintext only, \
             which --encryption require forbids"
        ),
        DialError::Mse(
            m @ (MseError::NoCommonCrypto { .. } | MseError::BadCryptoSelect { .. }),
        ) => {
            format!("agreed on no encryption method with us ({m})")
        }
        DialError::Mse(m) => format!("failed the encrypted handshake ({m})"),
        DialError::Connect(io) if io.kind() == ErrorKind::ConnectionRefused => {
            "refused the connection (nothing listens on that port)".to_string()
        }
        DialError::Connect(io) => format!("could not be reached ({io})"),
        DialError::Timeout => "did not complete the handshake in time".to_string(),
        DialError::Wire(w @ (WireError::UnexpectedEof(_) | WireError::Io(_))) => format!(
            "closed the connection at our BitTorrent handshake ({w}): it may not have this \
             torrent, or accept encrypted connections only (--encryption off forbids them)"
        ),
        DialError::Wire(w @ WireError::Timeout(_)) => {
            format!("did not complete the handshake in time ({w})")
        }
        DialError::Wire(WireError::InfoHashMismatch { .. }) => {
            "answered for another torrent".to_string()
        }
        DialError::Wire(w) => format!("sent a bad handshake ({w})"),
    }
}

impl Swarm {
    /// A dial of `addr` failed with `e`: kept for [`Swarm::peer_failures`].
    pub(crate) fn note_dial_failure(&self, addr: SocketAddr, e: &DialError) {
        let why = dial_reason(e);
        self.lock().failures.note(addr, why);
    }

    /// The connection to `addr` ended, with the session's error if it
    /// failed: kept for [`Swarm::peer_failures`] while the metadata is
    /// not known (then it is what a lookup that times out explains).
    pub(crate) fn note_peer_gone(&self, addr: SocketAddr, why: Option<&dyn fmt::Display>) {
        if self.loaded().is_some() || self.is_stopped() {
            return;
        }
        let why = match why {
            Some(w) => format!("connected, then was dropped: {w}"),
            None => "connected, then closed the connection before sending the metadata".to_string(),
        };
        self.lock().failures.note(addr, why);
    }

    /// The last peers that failed (most recent first), leaving out those
    /// connected now, and how many failed in all.
    pub fn peer_failures(&self) -> PeerFailures {
        let st = self.lock();
        let live = |a: &SocketAddr| st.peers.conns.values().any(|(c, _)| c == a);
        PeerFailures {
            recent: st
                .failures
                .recent
                .iter()
                .rev()
                .filter(|(a, _)| !live(a))
                .cloned()
                .collect(),
            peers: st.failures.addrs.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, i], 6881))
    }

    #[test]
    fn keeps_the_last_three_addresses_and_counts_every_one() {
        let mut f = Failures::default();
        for i in 1..=5 {
            f.note(addr(i), format!("reason {i}"));
        }
        // a repeated address moves to the end, not counted twice
        f.note(addr(3), "again".to_string());
        let p = PeerFailures {
            recent: f.recent.iter().rev().cloned().collect(),
            peers: f.addrs.len(),
        };
        assert_eq!(
            p.suffix(),
            ": 192.0.2.3:6881 again; 192.0.2.5:6881 reason 5; 192.0.2.4:6881 reason 4; \
             and 2 other peers failed too"
        );
        let one = PeerFailures {
            recent: vec![(addr(1), "x".into())],
            peers: 2,
        };
        assert_eq!(
            one.suffix(),
            ": 192.0.2.1:6881 x; and 1 other peer failed too"
        );
        assert_eq!(PeerFailures::default().suffix(), "");
    }

    #[test]
    fn a_long_reason_is_cut() {
        let mut f = Failures::default();
        f.note(addr(1), "é".repeat(500));
        let (_, why) = &f.recent[0];
        assert!(why.len() <= MAX_REASON + '…'.len_utf8(), "{}", why.len());
        assert!(why.ends_with('…'));
    }

    #[test]
    fn dial_errors_are_phrased_for_people() {
        let mse = DialError::Mse(MseError::UnexpectedEof(crate::peer::mse::Step::PublicKey));
        assert!(dial_reason(&mse).starts_with("refused our encrypted handshake"));
        let refused = DialError::Connect(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(
            dial_reason(&refused),
            "refused the connection (nothing listens on that port)"
        );
        assert!(dial_reason(&DialError::Timeout).contains("in time"));
    }
}
