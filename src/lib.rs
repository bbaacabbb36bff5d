//! btfs: a trackerless BitTorrent engine that resolves magnet links (BEP 9)
//! and BEP 46 mutable URLs through the mainline DHT (BEP 5) and serves the
//! archive's files with fs-like reads.
//!
//! Data flows one way. A URL is parsed ([`magnet`]) into an info-hash;
//! [`client`] makes a swarm for it, whose discovery tasks find peers
//! ([`dht`], [`lsd`]; PEX and the URL add theirs) and dial them; each
//! connection runs a peer session ([`peer`]) that fetches the metadata
//! (BEP 9) and hands it to the swarm, which parses it ([`metainfo`]) and
//! opens its [`storage`]. The file tree ([`archive`]) turns reads into
//! waits on pieces; the swarm's picker makes them urgent, sessions ask the
//! swarm what to request and hand back blocks, the swarm verifies each
//! piece and stores it; the waiting read, and uploads to other peers,
//! read it from the storage. Sessions reach the swarm only through its
//! methods; the swarm never calls a session (the client gives it a dialer).
//!
//! The write side goes the other way: a directory ([`create::scan_dir`]) or
//! an edited tree ([`staging::Draft`], mounted read-write by
//! [`fuse_writable`]) → hashed into a hybrid v1+v2 info dictionary, or a
//! v1 one on request ([`create::build`], [`metainfo::build_v2`],
//! [`metainfo::build_info`]) → [`Client::seed_torrent`] serves them in
//! place → [`Client::publish`] points a BEP 46 mutable URL at its v1
//! info-hash ([`bep46`] encodes the value).
//!
//! Modules, lowest layer first:
//! - protocols: [`bencode`], [`metainfo`] (info dictionaries, BEP 3, 47,
//!   52), [`merkle`] (BEP 52 hash trees and proofs), [`magnet`] (URLs,
//!   BEP 9 and 46), [`bep46`] (the mutable item's value), [`peer`] (wire
//!   protocol and extensions, BEP 3, 10, 9, 11, 52), [`dht`] (BEP 5, 42,
//!   43, 44), [`lsd`] (BEP 14), [`reach`] (port mapping by UPnP IGD and
//!   NAT-PMP/PCP, our external address), [`hash`] (the identifiers: info-hash, peer
//!   id), [`keypair`] (ed25519 keys);
//! - transports, under the peer sessions: TCP, [`utp`] (BEP 29, over
//!   librqbit-utp), [`peer::mse`] (Message Stream Encryption), chosen and
//!   raced per peer by [`peer::transport`];
//! - the engine: [`storage`] (piece space on disk or in memory, and the
//!   cache directory's [`storage::layout`]), [`swarm`] (one torrent: peers,
//!   metadata, picker, verification, cache, reads, discovery), [`client`]
//!   (the entry point: lookups, seeding, mutable URLs, incoming
//!   connections), [`archive`] (a torrent as a file tree), [`keepalive`]
//!   (republishing BEP 44 items before the DHT forgets them);
//! - the write side: [`create`] (torrents from local data), [`staging`]
//!   (drafts);
//! - adapters: [`fuse`], [`fuse_writable`], and for a long-running
//!   process serving many archives, [`manager`] (open on first use, close
//!   when idle) shared by [`gateway`] (HTTP) and [`fuse::root`].
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
pub mod bep46;
pub mod client;
pub mod create;
pub mod dht;
pub mod fuse;
pub mod fuse_writable;
pub mod gateway;
pub mod hash;
pub mod keepalive;
pub mod keypair;
pub mod lsd;
pub mod magnet;
pub mod manager;
pub mod merkle;
pub mod metainfo;
pub mod peer;
pub mod plural;
pub mod reach;
pub mod staging;
pub mod storage;
/// Public for [`swarm::SwarmStats`] (progress) and [`swarm::MetadataError`];
/// the swarm itself is the engine's internal.
pub mod swarm;
pub mod utp;

pub use archive::Archive;
pub use client::{Client, LookupOptions};
pub use hash::{InfoHash, InfoHashV2, PeerId};
pub use keypair::Keypair;
pub use storage::StorageKind;
