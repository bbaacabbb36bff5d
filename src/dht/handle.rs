//! The handle to one address family's node task (BEP 32 runs one per
//! family): what [`super::Dht`], its per-family operations
//! ([`super::family`]) and lookups ([`super::lookup`]) hold to query the
//! node and read its shared state. A module of its own so that lookups
//! need not depend on the family operations that start them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::krpc::{Query, Response};
use super::node::{Cmd, RpcError, Shared};

/// What handles and lookups hold for one family's node: the shared state
/// and the way to its task.
pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) cmd: mpsc::Sender<Cmd>,
}

impl Inner {
    /// Sends one query and waits for its response (bounded by the request
    /// timeout).
    pub(crate) async fn query(&self, addr: SocketAddr, query: Query) -> Result<Response, RpcError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Cmd::Query {
                addr,
                query: Box::new(query),
                reply: Some(tx),
            })
            .await
            .map_err(|_| RpcError::Closed)?;
        let limit = self.shared.cfg.request_timeout + Duration::from_millis(500);
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RpcError::Closed),
            Err(_) => Err(RpcError::Timeout),
        }
    }

    /// Whether this node's socket is IPv4.
    pub(crate) fn is_v4(&self) -> bool {
        self.shared.local_addr.is_ipv4()
    }
}
