//! Errors of the gateway as HTTP answers: a status code and a short
//! `text/plain` body of one line saying why.
//!
//! | status | when |
//! |---|---|
//! | 400 | a malformed name or path, a path that tries to leave the archive, a bad upload |
//! | 401 | a write without the right bearer token |
//! | 403 | writes refused on this listener, or a key this daemon does not hold |
//! | 404 | no such file in the archive; no BEP 46 item for a key |
//! | 405 | a method the URL does not take |
//! | 409 | a write that would leave an empty torrent |
//! | 502 | the metadata or the BEP 46 item was refused (bad signature, bad value, unsafe fields) |
//! | 504 | the metadata, or a read's pieces, did not arrive in time (`--timeout`, `--read-timeout`) |
//! | 500 | anything else (I/O of the cache) |

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::client::Error as ClientError;

/// An error answer: a status and one line of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: StatusCode,
    pub message: String,
}

impl HttpError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> HttpError {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> HttpError {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn forbidden(m: impl Into<String>) -> HttpError {
        Self::new(StatusCode::FORBIDDEN, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> HttpError {
        Self::new(StatusCode::UNAUTHORIZED, m)
    }
    pub fn timeout(m: impl Into<String>) -> HttpError {
        Self::new(StatusCode::GATEWAY_TIMEOUT, m)
    }
    pub fn internal(m: impl Into<String>) -> HttpError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }

    /// A lookup's failure: 504 when it ran out of time, 404 when no BEP 46
    /// item exists, 502 when what arrived was refused, 500 otherwise.
    pub fn of_lookup(e: &ClientError) -> HttpError {
        use crate::swarm::MetadataError as M;
        let status = match e {
            ClientError::Metadata(M::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            ClientError::Mutable(m) if m.contains("did not finish") => StatusCode::GATEWAY_TIMEOUT,
            ClientError::NoItem { .. } => StatusCode::NOT_FOUND,
            ClientError::Metadata(M::Mismatch | M::Refused(_))
            | ClientError::BadSignature { .. }
            | ClientError::BadValue { .. } => StatusCode::BAD_GATEWAY,
            ClientError::BadUrl(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }

    /// A read's failure: 504 when its pieces did not arrive within the read
    /// timeout, 404 for a missing file, 500 otherwise.
    pub fn of_read(e: &std::io::Error) -> HttpError {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::TimedOut => Self::timeout(format!("read timed out: {e} (see --read-timeout)")),
            K::NotFound => Self::not_found(e.to_string()),
            _ => Self::internal(format!("read failed: {e}")),
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let mut body = self.message.replace('\n', " ");
        body.push('\n');
        let mut r = (self.status, body).into_response();
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"btfs-mount\""),
            );
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_failures_map_to_statuses() {
        let t = ClientError::Metadata(crate::swarm::MetadataError::Timeout {
            secs: 5,
            known: 0,
            connected: 0,
            bytes: 0,
            failures: Default::default(),
        });
        assert_eq!(HttpError::of_lookup(&t).status, StatusCode::GATEWAY_TIMEOUT);
        let n = ClientError::NoItem {
            url: "u".into(),
            answered: 3,
        };
        assert_eq!(HttpError::of_lookup(&n).status, StatusCode::NOT_FOUND);
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "piece 3 not received");
        let e = HttpError::of_read(&io);
        assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT);
        assert!(e.message.contains("piece 3"));
    }
}
