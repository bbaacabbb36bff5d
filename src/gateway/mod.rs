//! The HTTP gateway: archives by URL, for browsers, video players and
//! anything that speaks HTTP, from the same engine and cache as the FUSE
//! mounts.
//!
//! ```text
//! GET  /                                    status page (HTML, refreshes itself)
//! GET  /api/status                          the same as JSON
//! GET  /bt/<info-hash>/<path>               a file or directory of a torrent (BEP 3)
//! GET  /bt/<public key>[.<salt>]/<path>     ... of a BEP 46 mutable URL, following updates
//! HEAD the same                             headers only
//! POST /bt/[?name=NAME]                     multipart upload -> new torrent, seeded (201)
//! PUT, DELETE /bt/<public key>[.<salt>]/<path>   edit a mutable archive, publish seq+1
//! ```
//!
//! One file per concept: [`addr`] (what a URL names), [`range`] (byte
//! ranges), [`file`](mod@file) (serving files and directories), [`listing`]
//! (directory listings), [`error`] (status codes), [`publish`] (writes,
//! the bearer token), [`status`] (the status page and JSON). Archives are
//! opened, shared and closed by a [`Manager`], which a FUSE root
//! ([`crate::fuse::root`]) can share.
//!
//! **HTTP stack: axum 0.8 on hyper 1.** Routing here is a handful of fixed
//! paths plus one catch-all under `/bt/` that parses the raw path itself
//! (it must see `%2F` and `..` before any decoding), so axum's router
//! saves little; what it does save is the glue plain hyper needs: the
//! accept loop with graceful shutdown (`axum::serve`), streaming bodies
//! from a `Stream`, and a multipart parser (`multer`) for uploads. It costs
//! four small crates over hyper (axum-core, matchit, tower, sync_wrapper),
//! with default features off (no JSON/form extractors, no HTTP/2).
//! Content types come from `mime_guess` (by file extension).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::keepalive::KeepAlive;
use crate::keypair::Keypair;
use crate::manager::{Lease, Manager, Name};

pub mod addr;
pub mod error;
pub mod file;
pub mod listing;
pub mod publish;
pub mod range;
pub mod status;

pub use error::HttpError;

/// Settings of a [`Gateway`].
#[derive(Clone)]
pub struct GatewayConfig {
    /// Whether writes (POST, PUT, DELETE) are served at all: true on a
    /// loopback listener, false elsewhere unless the user allowed them.
    pub allow_writes: bool,
    /// The bearer token writes must carry (see [`new_token`]).
    pub token: String,
    /// Keys held: PUT/DELETE on their mutable archives publish.
    pub keys: Vec<Keypair>,
    /// The cache directory (drafts of writes, installed torrents).
    pub cache_dir: PathBuf,
}

/// The gateway's state, shared by every request.
pub struct Gateway {
    pub manager: Manager,
    pub cfg: GatewayConfig,
    /// Payload bytes sent in file bodies since the start.
    pub bytes_served: Arc<AtomicU64>,
    /// Leases on what this daemon published (seeded until it stops), by name.
    pins: Mutex<HashMap<Name, Lease>>,
    /// Items kept alive on the DHT, by mutable name.
    keepalives: Mutex<HashMap<Name, KeepAlive>>,
    /// One edit at a time per mutable name.
    edits: Mutex<HashMap<Name, Arc<tokio::sync::Mutex<()>>>>,
}

impl Gateway {
    /// A gateway over `manager`'s archives.
    pub fn new(manager: Manager, cfg: GatewayConfig) -> Arc<Gateway> {
        Arc::new(Gateway {
            manager,
            cfg,
            bytes_served: Arc::new(AtomicU64::new(0)),
            pins: Mutex::new(HashMap::new()),
            keepalives: Mutex::new(HashMap::new()),
            edits: Mutex::new(HashMap::new()),
        })
    }

    /// Keeps `lease` (what was just published under `name`), replacing the
    /// one kept before (whose version may then close).
    fn pin(&self, name: Name, lease: Lease) {
        let old = self
            .pins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, lease);
        drop(old);
    }

    fn keep_alive(&self, name: Name, k: KeepAlive) {
        self.keepalives
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, k);
    }

    fn edit_lock(&self, name: &Name) -> Arc<tokio::sync::Mutex<()>> {
        self.edits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.clone())
            .or_default()
            .clone()
    }
}

/// A new random bearer token: 32 random bytes in hex. Errors: the OS
/// random source failed.
pub fn new_token() -> std::io::Result<String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(b))
}

/// Writes `token` to `path` with mode 0600 (replacing what was there),
/// creating the directory. Errors: I/O.
pub fn write_token(path: &std::path::Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{token}\n").as_bytes())?;
    f.sync_all()
}

/// The router of every gateway URL.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/api/status", get(status_json))
        .fallback(archive)
        .layer(DefaultBodyLimit::disable())
        .with_state(gw)
}

/// Serves `router(gw)` on `listener` until `shutdown` resolves (then
/// stops accepting and lets answers in flight finish). Errors: the
/// listener failed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(gw).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn status_page(State(gw): State<Arc<Gateway>>) -> Response {
    let body = status::html(&gw.manager.status(), &gw.manager.lookups(), served(&gw));
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn status_json(State(gw): State<Arc<Gateway>>) -> Response {
    let body = status::json(&gw.manager.status(), &gw.manager.lookups(), served(&gw));
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn served(gw: &Gateway) -> u64 {
    gw.bytes_served.load(std::sync::atomic::Ordering::Relaxed)
}

/// Everything else: `/bt/...` by method; one access-log line each.
async fn archive(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let method = req.method().clone();
    let raw = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let resp = match dispatch(&gw, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!("{method} {raw}: {e}");
            e.into_response()
        }
    };
    tracing::debug!(
        "{method} {raw} -> {} in {:.3} s",
        resp.status().as_u16(),
        started.elapsed().as_secs_f64()
    );
    resp
}

async fn dispatch(gw: &Arc<Gateway>, req: Request) -> Result<Response, HttpError> {
    let method = req.method().clone();
    let raw = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    if raw == "/bt" || raw == "/bt/" {
        return match method {
            Method::POST => {
                if let Err(e) = publish::authorize(gw, req.headers()) {
                    drain(req.into_body()).await;
                    return Err(e);
                }
                let mp = Multipart::from_request(req, &())
                    .await
                    .map_err(|e| HttpError::bad_request(format!("not a multipart upload: {e}")))?;
                publish::post(gw, query.as_deref(), mp).await
            }
            Method::GET | Method::HEAD => {
                let mut r = (StatusCode::FOUND, "/\n").into_response();
                r.headers_mut()
                    .insert(header::LOCATION, HeaderValue::from_static("/"));
                Ok(r)
            }
            _ => Ok(not_allowed("GET, HEAD, POST")),
        };
    }
    if !raw.starts_with(addr::PREFIX) {
        return Err(HttpError::not_found(format!(
            "{raw}: not found (archives are under /bt/<info-hash>/ and /bt/<public key>/)"
        )));
    }
    let target = addr::parse(&raw).map_err(|e| HttpError::bad_request(e.to_string()))?;
    match method {
        Method::GET | Method::HEAD => {
            let headers = req.headers().clone();
            file::get(gw, &method, target, &raw, query.as_deref(), &headers).await
        }
        Method::PUT => {
            let (parts, body): (_, Body) = req.into_parts();
            if let Err(e) = publish::authorize(gw, &parts.headers) {
                drain(body).await;
                return Err(e);
            }
            publish::edit(gw, target, &parts.headers, Some(body)).await
        }
        Method::DELETE => {
            let headers = req.headers().clone();
            publish::edit(gw, target, &headers, None).await
        }
        _ => Ok(not_allowed("GET, HEAD, PUT, DELETE")),
    }
}

/// Most bytes of a refused write's body read (and dropped) before the
/// answer, so that the client, still sending, reads the answer instead of
/// a broken connection.
const DRAIN_MAX: usize = 64 << 20;

/// Reads and drops up to [`DRAIN_MAX`] bytes of `body`, for at most 10 s.
async fn drain(body: Body) {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let mut seen = 0;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(Ok(chunk)) = stream.next().await {
            seen += chunk.len();
            if seen > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}

/// 405 with the `Allow` header.
fn not_allowed(allow: &'static str) -> Response {
    let mut r = HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed here (allowed: {allow})"),
    )
    .into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}
