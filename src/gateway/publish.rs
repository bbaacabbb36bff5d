//! Writes: `POST /bt/` (a multipart upload becomes a new torrent, seeded)
//! and `PUT`/`DELETE` on `/bt/<public key>[.<salt>]/<path>` (an edit of a
//! mutable archive whose key this daemon holds, published as the next BEP
//! 46 seq).
//!
//! Every write needs `Authorization: Bearer <token>`, the token the daemon
//! wrote to a 0600 file at start; reads need none. A daemon listening on a
//! non-loopback address refuses every write unless it was started with
//! writes allowed there ([`super::GatewayConfig::allow_writes`]).
//!
//! A write goes through a [`Draft`] (the same editable tree a `--writable`
//! mount uses) started from the archive's current version: the new tree is
//! hashed into a hybrid v1+v2 torrent ([`crate::create::build`]),
//! installed in the cache (so it survives the daemon) and seeded from
//! there; a PUT or DELETE
//! then signs and stores the next BEP 46 item ([`Client::publish_item`])
//! and keeps it alive ([`KeepAlive`]). What the daemon published stays
//! open and seeded until it stops.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Multipart;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::archive::Archive;
use crate::client::Error as ClientError;
use crate::keepalive::{Event, KeepAlive};
use crate::manager::Name;
use crate::staging::{Draft, DraftMeta, ROOT};

use super::Gateway;
use super::addr::{Target, url_of};
use super::error::HttpError;

/// Checks that writes are allowed here and that the request carries the
/// bearer token. Errors: 403 (writes refused on this listener), 401.
pub fn authorize(gw: &Gateway, headers: &HeaderMap) -> Result<(), HttpError> {
    if !gw.cfg.allow_writes {
        return Err(HttpError::forbidden(
            "writes are refused on a non-loopback listener (start serve with --allow-remote-writes)",
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), gw.cfg.token.as_bytes()) => Ok(()),
        Some(_) => Err(HttpError::unauthorized("wrong bearer token")),
        None => Err(HttpError::unauthorized(
            "writes need Authorization: Bearer <token> (the token file's path is in the log)",
        )),
    }
}

/// Compares without an early exit (the time does not tell how much matched).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Streams `body` into file `path` of `draft` (created with its parents, or
/// truncated). Errors: 400 for a bad path, 409 when a directory is there.
async fn write_body<S, E>(draft: &Draft, path: &[String], body: S) -> Result<(), HttpError>
where
    S: futures_util::Stream<Item = Result<axum::body::Bytes, E>>,
    E: std::fmt::Display,
{
    let (name, dirs) = path
        .split_last()
        .ok_or_else(|| HttpError::bad_request("no file name"))?;
    let parent = if dirs.is_empty() {
        ROOT
    } else {
        let p = dirs.join("/");
        draft.create_dir(&p).map_err(edit_error)?;
        draft.resolve(&p).map_err(edit_error)?
    };
    let id = draft
        .create_file(parent, name, false)
        .map_err(edit_error)?
        .id;
    let mut stream = std::pin::pin!(body);
    let mut pos = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| HttpError::bad_request(format!("reading the body: {e}")))?;
        draft.write(id, pos, &chunk).await.map_err(edit_error)?;
        pos += chunk.len() as u64;
    }
    draft.fsync(id).map_err(edit_error)
}

/// An edit's error: bad names 400, a directory in the way 409, else 500.
fn edit_error(e: std::io::Error) -> HttpError {
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENAMETOOLONG) => HttpError::bad_request(format!("bad path: {e}")),
        Some(libc::EISDIR | libc::EEXIST | libc::ENOTDIR) => HttpError::new(
            StatusCode::CONFLICT,
            format!("a file and a directory collide: {e}"),
        ),
        Some(libc::EFBIG) => HttpError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        _ if e.kind() == std::io::ErrorKind::InvalidInput => HttpError::bad_request(e.to_string()),
        _ if e.kind() == std::io::ErrorKind::NotFound => HttpError::not_found(e.to_string()),
        _ => HttpError::internal(format!("staging: {e}")),
    }
}

/// The draft's tree as a torrent, seeded; the draft directory is deleted.
async fn finish(gw: &Gateway, draft: Draft) -> Result<Archive, HttpError> {
    let content = draft.content().await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => HttpError::new(StatusCode::CONFLICT, e.to_string()),
        _ => HttpError::of_read(&e),
    })?;
    let (archive, _installed) = gw
        .manager
        .client()
        .seed_into_cache(content, crate::create::Format::default(), None)
        .await
        .map_err(|e| HttpError::internal(format!("cannot make the torrent: {e}")))?;
    let dir = draft.dir().to_path_buf();
    drop(draft);
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        tracing::warn!("cannot delete {}: {e}", dir.display());
    }
    Ok(archive)
}

/// `POST /bt/[?name=NAME]`: each file part of the multipart body (its
/// `filename` may hold `/`-separated directories) becomes a file of a new
/// torrent named NAME (default `upload`; a single file gives a single-file
/// torrent), seeded until the daemon stops. Answers 201 with
/// `Location: /bt/<info-hash>/` and the magnet link as the body.
pub async fn post(
    gw: &Arc<Gateway>,
    query: Option<&str>,
    mut multipart: Multipart,
) -> Result<Response, HttpError> {
    let name = query
        .and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("name="))
                .and_then(|v| percent_encoding::percent_decode_str(v).decode_utf8().ok())
                .map(|v| v.into_owned())
        })
        .filter(|n| !n.is_empty() && !n.contains('/') && n != "." && n != "..")
        .unwrap_or_else(|| "upload".to_string());
    let draft = Draft::create(&gw.cfg.cache_dir, DraftMeta::named(&name), None)
        .map_err(|e| HttpError::internal(format!("cannot create a draft: {e}")))?;
    let mut files = 0;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| HttpError::bad_request(format!("multipart: {e}")))?
    {
        let Some(fname) = field.file_name().map(str::to_string) else {
            continue; // a text field
        };
        let path: Vec<String> = fname
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        if path.is_empty()
            || path
                .iter()
                .any(|c| c == "." || c == ".." || c.contains(['\\', '\0']))
        {
            return Err(HttpError::bad_request(format!("bad file name {fname:?}")));
        }
        write_body(&draft, &path, field).await?;
        files += 1;
    }
    if files == 0 {
        return Err(HttpError::bad_request(
            "the upload holds no file (multipart parts with a filename)",
        ));
    }
    let archive = finish(gw, draft).await?;
    let ih = archive.info_hash();
    let opened = gw
        .manager
        .open(&Name::InfoHash(ih))
        .await
        .map_err(|e| HttpError::of_lookup(&e))?;
    gw.pin(Name::InfoHash(ih), opened.lease);
    tracing::info!(
        "upload: {} seeded as {ih} ({:?})",
        crate::plural::count(files, "file", "files"),
        archive.info().name
    );
    let loc = format!("/bt/{ih}/");
    let mut resp = (StatusCode::CREATED, format!("{}\n", archive.magnet())).into_response();
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_str(&loc).expect("hex"));
    Ok(resp)
}

/// `PUT` (with a body: the file's new bytes) or `DELETE` (`body` None) of
/// `target` in a mutable archive whose key this daemon holds: the edited
/// tree is published as the next seq. Answers 201 (created) or 200 with
/// the new magnet link and seq; `Link: rel="canonical"` names the new
/// version's URL of the path.
pub async fn edit(
    gw: &Arc<Gateway>,
    target: Target,
    headers: &HeaderMap,
    body: Option<Body>,
) -> Result<Response, HttpError> {
    authorize(gw, headers)?;
    let (public_key, salt) = match &target.name {
        Name::Mutable { public_key, salt } => (*public_key, salt.clone()),
        Name::InfoHash(_) => {
            let mut r = HttpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "an info-hash names immutable content; PUT and DELETE take /bt/<public key>/<path>",
            )
            .into_response();
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Ok(r);
        }
    };
    let key = gw
        .cfg
        .keys
        .iter()
        .find(|k| k.public_key() == public_key)
        .cloned()
        .ok_or_else(|| {
            HttpError::forbidden(format!(
                "this daemon holds no key for {} (start serve with --key FILE)",
                hex::encode(public_key)
            ))
        })?;
    if target.path.is_empty() {
        return Err(HttpError::bad_request(
            "name a file: /bt/<public key>/<path>",
        ));
    }
    let lock = gw.edit_lock(&target.name);
    let _turn = lock.lock().await;
    let base = match gw.manager.open(&target.name).await {
        Ok(o) => Some(o),
        Err(e) if matches!(*e, ClientError::NoItem { .. }) => None,
        Err(e) => return Err(HttpError::of_lookup(&e)),
    };
    let existed = base
        .as_ref()
        .and_then(|o| o.archive.tree().resolve(&target.joined()))
        .is_some();
    let meta = DraftMeta {
        url: Some(target.name.url()),
        ..DraftMeta::named(
            base.as_ref()
                .map_or("site", |o| o.archive.info().name.as_str()),
        )
    };
    let draft = Draft::create(
        &gw.cfg.cache_dir,
        meta,
        base.as_ref().map(|o| o.archive.clone()),
    )
    .map_err(|e| HttpError::internal(format!("cannot create a draft: {e}")))?;
    let created = match body {
        Some(b) => {
            write_body(&draft, &target.path, b.into_data_stream()).await?;
            !existed
        }
        None => {
            draft.remove(&target.joined()).map_err(edit_error)?;
            false
        }
    };
    let archive = finish(gw, draft).await?;
    let published = gw
        .manager
        .client()
        .publish_item(&archive.magnet(), &key, &salt)
        .await
        .map_err(|e| {
            HttpError::new(
                StatusCode::BAD_GATEWAY,
                format!("seeding {} but: {e}", archive.info_hash()),
            )
        })?;
    let seq = published.item.seq;
    let lease = gw.manager.set_current(&target.name, archive.clone(), seq);
    gw.pin(target.name.clone(), lease);
    let name = target.name.clone();
    let keep = KeepAlive::refresh(gw.manager.client().clone(), &published, move |e| match e {
        Event::Failed { error, .. } => tracing::warn!("{name}: {error}"),
        e => tracing::info!("{name}: {e:?}"),
    });
    gw.keep_alive(target.name.clone(), keep);
    drop(base);
    tracing::info!(
        "{}: {} {} published as seq {seq} -> {}",
        target.name,
        if created { "created" } else { "changed" },
        target.joined(),
        archive.info_hash()
    );
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut resp = (status, format!("{}\nseq {seq}\n", archive.magnet())).into_response();
    let h = resp.headers_mut();
    let canonical = url_of(&Name::InfoHash(archive.info_hash()), &target.path, false);
    if let Ok(v) = HeaderValue::from_str(&format!("<{canonical}>; rel=\"canonical\"")) {
        h.insert(header::LINK, v);
    }
    if created && let Ok(v) = HeaderValue::from_str(&url_of(&target.name, &target.path, false)) {
        h.insert(header::LOCATION, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
