//! btfs: a trackerless BitTorrent engine that resolves magnet links (BEP 9)
//! and BEP 46 mutable URLs through the mainline DHT (BEP 5) and serves the
//! archive's files with fs-like reads.
//!
//! Data flows one way: URL ([`magnet`]) → info-hash → peers ([`dht`]) →
//! metadata ([`peer::ut_metadata`]) → file tree ([`metainfo`]) → reads
//! ([`archive`]) → piece requests ([`picker`], [`peer`]) → verified pieces →
//! [`storage`] → reads and uploads.
//!
//! The write side goes the other way: a directory ([`create::scan_dir`]) or
//! an edited tree ([`staging::Draft`], mounted read-write by
//! [`fuse_writable`]) → pieces hashed into a v1 info dictionary
//! ([`create::build`]) → [`Client::seed_torrent`] serves them in place →
//! [`Client::publish`] points a BEP 46 mutable URL at it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), btfs::client::Error> {
//! let client = btfs::Client::builder()
//!     .bootstrap(vec!["127.0.0.1:6881".into()])
//!     .start()
//!     .await?;
//! let archive = client
//!     .lookup("magnet:?xt=urn:btih:0123456789abcdef0123456789abcdef01234567", Default::default())
//!     .await?;
//! for entry in archive.read_dir("")? {
//!     println!("{} {}", entry.name, entry.size);
//! }
//! client.stop().await;
//! # Ok(()) }
//! ```

pub mod archive;
pub mod bencode;
pub mod client;
pub mod create;
pub mod dht;
pub mod fuse;
pub mod fuse_writable;
pub mod hash;
pub mod keypair;
pub mod lsd;
pub mod magnet;
pub mod merkle;
pub mod metainfo;
pub mod peer;
pub mod picker;
pub mod publish;
pub mod staging;
pub mod storage;
pub mod swarm;

pub use archive::Archive;
pub use client::{Client, LookupOptions};
pub use hash::{InfoHash, InfoHashV2, PeerId};
pub use keypair::Keypair;
pub use swarm::StorageKind;
