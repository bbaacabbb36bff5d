//! What a status page shows of a swarm: how many bytes of a range are
//! verified, and who the connected peers are.

use std::net::SocketAddr;

use super::Swarm;
use super::cache::pieces_under;

/// One connected peer, for status output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its address (its listen address when it told us, BEP 10 `p`).
    pub addr: SocketAddr,
    /// Where we learned of it: `dht`, `lsd`, `pex`, `magnet`, `cli` or
    /// `incoming` (it dialled us).
    pub source: String,
}

impl Swarm {
    /// How many bytes of the absolute byte range `[start, end)` of the
    /// piece space lie in verified pieces (0 without metadata). Cached
    /// pieces not hashed yet since the start do not count.
    pub fn verified_bytes(&self, start: u64, end: u64) -> u64 {
        let Some(l) = self.loaded() else { return 0 };
        let end = end.min(l.info.total_length);
        if end <= start {
            return 0;
        }
        let pl = l.info.piece_length;
        let st = self.lock();
        let Some(p) = st.picker.as_ref() else {
            return 0;
        };
        let (first, last) = pieces_under(pl, start, end);
        (first..=last)
            .filter(|&i| p.has(i))
            .map(|i| {
                let ps = u64::from(i) * pl;
                let pe = ps + pl;
                pe.min(end) - ps.max(start)
            })
            .sum()
    }

    /// The connected peers and where each came from, sorted by address.
    pub fn peer_list(&self) -> Vec<PeerInfo> {
        self.lock()
            .peers
            .connected_list()
            .into_iter()
            .map(|(addr, source)| PeerInfo {
                addr,
                source: source.to_string(),
            })
            .collect()
    }
}
