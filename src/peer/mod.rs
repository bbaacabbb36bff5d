//! The peer wire protocol (BEP 3) and its extensions (BEP 10, 9, 11).
//!
//! One file per layer:
//! - [`wire`]: the handshake, message framing ([`wire::Message::check`] then
//!   [`wire::Message::parse`]) and the piece [`wire::Bitfield`] (BEP 3, BEP 5 `port`).
//! - [`conn`]: a framed connection over TCP or any other byte stream: dial
//!   or accept, exchange handshakes, then read and write messages,
//!   optionally from two tasks after [`conn::PeerConn::split`].
//! - [`extension`]: the extension protocol handshake (BEP 10).
//! - [`ut_metadata`]: fetching and serving the info dictionary (BEP 9).
//! - [`pex`]: peer exchange (BEP 11).
//! - [`holepunch`]: NAT holepunching through a relay peer (BEP 55).
//! - `session`: one connection's life in a swarm (crate-internal): the
//!   loop, metadata, PEX, downloading and uploading.
//! - [`mse`]: Message Stream Encryption, the obfuscated handshake and RC4
//!   stream ("BitTorrent protocol encryption").
//! - [`transport`]: dialling and answering over TCP or uTP, with MSE;
//!   [`near`]: which peers are dialled over TCP first.
//!
//! Errors are [`wire::WireError`]; any error other than I/O or a timeout is a
//! protocol violation by that peer and should close that one connection.

pub mod conn;
pub mod extension;
pub mod holepunch;
pub mod mse;
pub mod near;
pub mod pex;
pub(crate) mod session;
pub mod transport;
pub mod ut_metadata;
pub mod wire;

pub use conn::{PeerConn, PeerReader, PeerWriter};
pub use extension::ExtHandshake;
pub use wire::{BLOCK_SIZE, Bitfield, BlockRequest, Handshake, Message, WireError};
