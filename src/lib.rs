//! btfs: a trackerless BitTorrent engine that resolves magnet links (BEP 9)
//! and BEP 46 mutable URLs through the mainline DHT (BEP 5) and serves the
//! archive's files with fs-like reads.
//!
//! Data flows one way: URL ([`magnet`]) → info-hash → peers ([`dht`]) →
//! metadata ([`peer::ut_metadata`]) → file tree ([`metainfo`]) → reads
//! ([`archive`]) → piece requests ([`picker`], [`peer`]) → verified pieces →
//! [`storage`] → reads and uploads.

pub mod bencode;
pub mod dht;
pub mod hash;
pub mod keypair;
pub mod magnet;
pub mod metainfo;
pub mod peer;

pub use hash::{InfoHash, PeerId};
pub use keypair::Keypair;
