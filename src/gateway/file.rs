//! `GET` and `HEAD` of `/bt/<name>/<path>`: files with byte ranges and
//! caching headers, directories (redirect, `index.html`, listing),
//! symlinks (redirect), all streamed from the swarm.
//!
//! A file's body is read chunk by chunk through one [`FileReader`], the
//! same reader a FUSE `open` gets: every chunk makes its pieces urgent and
//! moves the reader's readahead window (doubling while the client reads on,
//! collapsing on a seek), exactly as `cat` on a mount does. The first
//! chunk is read before the status line is sent, so a torrent that cannot
//! deliver within `--read-timeout` gives a 504 with the reason instead of a
//! 200 with no bytes. When the client goes away, hyper drops the body: the
//! read in flight is dropped (its pieces stop being urgent) and the reader
//! with it (its readahead window is cleared).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::archive::{Archive, FileReader, NodeId, NodeKind};
use crate::manager::{Lease, Name};

use super::addr::{Target, url_of};
use super::error::HttpError;
use super::range::{Want, content_range, unsatisfied_range, want};
use super::{Gateway, listing};

/// Largest chunk read from the swarm at once.
const CHUNK: u64 = 1 << 20;
/// Chunks read ahead of the one being sent (like the kernel's parallel
/// FUSE reads).
const CHUNKS_IN_FLIGHT: usize = 4;
/// `max-age` of a mutable URL's answers, seconds: a new version shows
/// within this plus the refresh interval.
pub const MUTABLE_MAX_AGE: u64 = 30;

/// What a `GET`/`HEAD` resolved to.
struct Resolved {
    name: Name,
    archive: Archive,
    lease: Lease,
}

/// Answers `GET`/`HEAD` on an archive URL.
pub async fn get(
    gw: &Arc<Gateway>,
    method: &Method,
    target: Target,
    raw_path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let opened = gw
        .manager
        .open(&target.name)
        .await
        .map_err(|e| HttpError::of_lookup(&e))?;
    let r = Resolved {
        name: target.name.clone(),
        archive: opened.archive,
        lease: opened.lease,
    };
    let tree = r.archive.tree();
    let path = target.joined();
    let id = tree
        .resolve(&path)
        .ok_or_else(|| HttpError::not_found(format!("{path}: no such file in the archive")))?;
    match &tree.nodes[id].kind {
        NodeKind::Dir(ch) => {
            if !target.trailing_slash {
                let mut loc = format!("{raw_path}/");
                if let Some(q) = query {
                    loc.push('?');
                    loc.push_str(q);
                }
                let status = if r.name.is_mutable() {
                    StatusCode::FOUND
                } else {
                    StatusCode::MOVED_PERMANENTLY
                };
                return Ok(redirect(status, &loc));
            }
            if let Some(&index) = ch.get("index.html")
                && matches!(tree.nodes[index].kind, NodeKind::File { .. })
            {
                let mut p = target.path.clone();
                p.push("index.html".into());
                return file(gw, method, r, index, &p, headers).await;
            }
            let json =
                listing::wants_json(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
            let (body, ctype) = if json {
                (
                    listing::json(&r.name, &r.archive, id, &path),
                    "application/json",
                )
            } else {
                (
                    listing::html(&r.name, &r.archive, id, &path),
                    "text/html; charset=utf-8",
                )
            };
            let mut resp = (StatusCode::OK, body).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            // A listing shows download progress: never cached.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            h.insert(header::VARY, HeaderValue::from_static("Accept"));
            canonical(h, &r, &target.path, true);
            Ok(resp)
        }
        NodeKind::Symlink(t) => {
            let mut p: Vec<String> = target.path[..target.path.len().saturating_sub(1)].to_vec();
            for c in t.split('/') {
                match c {
                    "" | "." => {}
                    ".." => {
                        if p.pop().is_none() {
                            return Err(HttpError::not_found(
                                "the symlink points outside the archive",
                            ));
                        }
                    }
                    c => p.push(c.to_string()),
                }
            }
            Ok(redirect(
                StatusCode::FOUND,
                &url_of(&target.name, &p, false),
            ))
        }
        NodeKind::File { .. } => file(gw, method, r, id, &target.path, headers).await,
    }
}

fn redirect(status: StatusCode, location: &str) -> Response {
    let mut resp = (status, format!("{location}\n")).into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// `Link: </bt/<info-hash>/<path>>; rel="canonical"` for a mutable name.
fn canonical(h: &mut HeaderMap, r: &Resolved, path: &[String], dir: bool) {
    if !r.name.is_mutable() {
        return;
    }
    let url = url_of(&Name::InfoHash(r.archive.info_hash()), path, dir);
    if let Ok(v) = HeaderValue::from_str(&format!("<{url}>; rel=\"canonical\"")) {
        h.insert(header::LINK, v);
    }
}

/// Serves file node `id` (at `path`) of the archive.
async fn file(
    gw: &Arc<Gateway>,
    method: &Method,
    r: Resolved,
    id: NodeId,
    path: &[String],
    headers: &HeaderMap,
) -> Result<Response, HttpError> {
    let reader = r
        .archive
        .open_node(id)
        .map_err(|e| HttpError::of_read(&e))?;
    let size = reader.size();
    let NodeKind::File { index, offset, .. } = r.archive.tree().nodes[id].kind else {
        unreachable!("a file node")
    };
    let etag = format!("\"{}-{index}\"", r.archive.info_hash());
    let hv = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    let mut h = HeaderMap::new();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex and digits"),
    );
    let cache = if r.name.is_mutable() {
        format!("public, max-age={MUTABLE_MAX_AGE}")
    } else {
        "public, max-age=31536000, immutable".to_string()
    };
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(&cache).expect("ascii"),
    );
    let name = path.last().map_or("", String::as_str);
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(mime.essence_str())
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    canonical(&mut h, &r, path, false);
    if hv(header::IF_NONE_MATCH)
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return Ok((StatusCode::NOT_MODIFIED, h).into_response());
    }
    let (status, start, end) = match want(hv(header::RANGE), hv(header::IF_RANGE), &etag, size) {
        Want::Full => (StatusCode::OK, 0, size),
        Want::Part { start, end } => {
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&content_range(start, end, size)).expect("ascii"),
            );
            (StatusCode::PARTIAL_CONTENT, start, end)
        }
        Want::Unsatisfiable => {
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&unsatisfied_range(size)).expect("ascii"),
            );
            let mut resp = HttpError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("the range starts past the end ({size} bytes)"),
            )
            .into_response();
            h.remove(header::CONTENT_TYPE);
            h.remove(header::CACHE_CONTROL);
            resp.headers_mut().extend(h);
            return Ok(resp);
        }
    };
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if status == StatusCode::PARTIAL_CONTENT {
        tracing::info!(
            "{} {}/{}: bytes {start}-{} of {size}",
            method,
            r.name,
            path.join("/"),
            end.saturating_sub(1)
        );
    }
    if *method == Method::HEAD || start == end {
        let mut resp = (status, h).into_response();
        // hyper keeps our Content-Length on a HEAD; the body stays empty.
        *resp.body_mut() = Body::empty();
        return Ok(resp);
    }
    let pl = r.archive.info().piece_length;
    let reader = Arc::new(reader);
    // The first chunk decides the status: a timeout here is a 504.
    let first_len = chunk_len(offset + start, offset + end, pl, true);
    let first = reader
        .read_at(start, first_len as usize)
        .await
        .map_err(|e| {
            tracing::warn!("{}/{}: {e}", r.name, path.join("/"));
            HttpError::of_read(&e)
        })?;
    let body = stream(
        reader,
        start + first.len() as u64,
        end,
        offset,
        pl,
        first,
        r.lease,
        gw,
    );
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = h;
    Ok(resp)
}

/// Bytes of the next chunk at absolute offset `pos` (of `[pos, end)`):
/// at most [`CHUNK`] (the first at most one piece, for a fast first byte),
/// and ending on a piece boundary when one lies in between, so that each
/// chunk waits for as few pieces as it can.
fn chunk_len(pos: u64, end: u64, piece_length: u64, first: bool) -> u64 {
    let limit = if first {
        piece_length.clamp(16 << 10, CHUNK)
    } else {
        CHUNK
    };
    let e = (pos + limit).min(end);
    let boundary = e / piece_length * piece_length;
    let e = if boundary > pos && e < end {
        boundary
    } else {
        e
    };
    e - pos
}

/// The body after its first chunk: reads `[pos, end)` (file offsets) with
/// [`CHUNKS_IN_FLIGHT`] reads ahead, holding the lease until it ends or is
/// dropped.
#[allow(clippy::too_many_arguments)]
fn stream(
    reader: Arc<FileReader>,
    pos: u64,
    end: u64,
    file_offset: u64,
    pl: u64,
    first: Vec<u8>,
    lease: Lease,
    gw: &Arc<Gateway>,
) -> Body {
    let mut chunks = Vec::new();
    let mut p = pos;
    while p < end {
        let n = chunk_len(file_offset + p, file_offset + end, pl, false);
        chunks.push((p, n));
        p += n;
    }
    let served = gw.bytes_served.clone();
    let rest = futures_util::stream::iter(chunks)
        .map(move |(p, n)| {
            let r = reader.clone();
            async move {
                r.read_at(p, n as usize)
                    .await
                    .map(Bytes::from)
                    .inspect_err(|e| {
                        tracing::warn!("read of {n} bytes at {p} failed mid-response: {e}")
                    })
            }
        })
        .buffered(CHUNKS_IN_FLIGHT);
    let body =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(first)) })
            .chain(rest)
            .map(move |c| {
                let _held = &lease;
                if let Ok(b) = &c {
                    served.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                c
            });
    Body::from_stream(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_end_on_piece_boundaries() {
        let pl = 256 << 10;
        assert_eq!(chunk_len(0, 10 << 20, pl, true), pl);
        assert_eq!(chunk_len(100, 10 << 20, pl, true), pl - 100);
        assert_eq!(chunk_len(0, 10 << 20, pl, false), CHUNK);
        assert_eq!(chunk_len(100, 10 << 20, pl, false), CHUNK - 100);
        assert_eq!(chunk_len(0, 1000, pl, false), 1000);
        let big = 4 << 20;
        assert_eq!(chunk_len(0, 1 << 30, big, true), CHUNK);
        assert_eq!(chunk_len(CHUNK * 3 + 5, 1 << 30, big, false), CHUNK - 5);
        assert_eq!(chunk_len(0, 1 << 30, 16 << 10, true), 16 << 10);
    }
}
