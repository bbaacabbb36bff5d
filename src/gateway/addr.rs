//! Addressing: what a `/bt/...` request path names.
//!
//! ```text
//! /bt/<40 hex info-hash>/<path>          an immutable torrent (BEP 3)
//! /bt/<64 hex public key>/<path>         a BEP 46 mutable URL, empty salt
//! /bt/<64 hex public key>.<salt hex>/<path>   ... with a salt
//! ```
//!
//! The salt is part of the first path segment, not the query string, so
//! relative links inside a site (`<a href="b.html">`, `../img/x.png`)
//! resolve to URLs of the same archive. The path is taken from the raw
//! request target, before any decoding, and each segment is
//! percent-decoded on its own: a segment that decodes to something with a
//! `/` (`%2F`), a NUL (`%00`), or that is `.` or `..` (raw or encoded) is
//! refused, so a request can never name anything outside the archive.

use crate::manager::{Name, NameError};

/// The prefix of every archive URL.
pub const PREFIX: &str = "/bt/";

/// A parsed `/bt/...` request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: Name,
    /// The path inside the archive, one decoded component each (empty:
    /// the archive's root).
    pub path: Vec<String>,
    /// The request path ended with `/` (directories are served only so:
    /// relative links inside them resolve).
    pub trailing_slash: bool,
}

impl Target {
    /// The path inside the archive, `/`-separated ("" for the root).
    pub fn joined(&self) -> String {
        self.path.join("/")
    }
}

/// Why a request path is refused (400 Bad Request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("{0}")]
    Name(#[from] NameError),
    #[error("the path tries to leave the archive ({0:?} segment)")]
    Escape(String),
    #[error("a path segment holds an encoded slash, backslash or NUL")]
    EncodedSeparator,
    #[error("a path segment is not valid percent-encoded UTF-8")]
    BadEncoding,
    #[error("not an archive URL: /bt/<info-hash>/<path> or /bt/<public key>[.<salt>]/<path>")]
    NotArchive,
}

/// Parses the raw (still percent-encoded) path of a request under
/// [`PREFIX`]. The query string must already be cut off. Errors:
/// [`AddrError`]; every one is a 400.
pub fn parse(raw_path: &str) -> Result<Target, AddrError> {
    let rest = raw_path.strip_prefix(PREFIX).ok_or(AddrError::NotArchive)?;
    let (first, tail) = match rest.split_once('/') {
        Some((f, t)) => (f, Some(t)),
        None => (rest, None),
    };
    if first.is_empty() {
        return Err(AddrError::NotArchive);
    }
    let name = Name::parse(&decode(first)?)?;
    let mut path = Vec::new();
    let Some(tail) = tail else {
        return Ok(Target {
            name,
            path,
            trailing_slash: false,
        });
    };
    let trailing_slash = tail.is_empty() || tail.ends_with('/');
    for seg in tail.split('/') {
        if seg.is_empty() {
            continue;
        }
        let d = decode(seg)?;
        if d == "." || d == ".." {
            return Err(AddrError::Escape(d));
        }
        if d.contains(['/', '\\', '\0']) {
            return Err(AddrError::EncodedSeparator);
        }
        path.push(d);
    }
    Ok(Target {
        name,
        path,
        trailing_slash,
    })
}

/// Percent-decodes one segment. Errors: invalid UTF-8 after decoding, or a
/// `%` not followed by two hex digits.
fn decode(seg: &str) -> Result<String, AddrError> {
    let b = seg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok =
                b.len() >= i + 3 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(AddrError::BadEncoding);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    percent_encoding::percent_decode_str(seg)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| AddrError::BadEncoding)
}

/// The characters escaped in a path segment of a URL we write (RFC 3986
/// `pchar` minus sub-delims that confuse HTML or shells).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path component for a URL.
pub fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// `/bt/<segment>/<encoded path>` (with a trailing `/` when `dir`).
pub fn url_of(name: &Name, path: &[String], dir: bool) -> String {
    let mut u = format!("{PREFIX}{}/", name.segment());
    let enc: Vec<String> = path.iter().map(|c| encode_segment(c)).collect();
    u.push_str(&enc.join("/"));
    if dir && !path.is_empty() {
        u.push('/');
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    const IH: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn archive_paths_parse() {
        let t = parse(&format!("/bt/{IH}/site/a%20b.html")).unwrap();
        assert_eq!(t.name.segment(), IH);
        assert_eq!(t.path, ["site", "a b.html"]);
        assert!(!t.trailing_slash);
        let t = parse(&format!("/bt/{IH}/site/")).unwrap();
        assert_eq!(t.path, ["site"]);
        assert!(t.trailing_slash);
        let t = parse(&format!("/bt/{IH}")).unwrap();
        assert!(t.path.is_empty() && !t.trailing_slash);
        let t = parse(&format!("/bt/{IH}/")).unwrap();
        assert!(t.path.is_empty() && t.trailing_slash);
        let pk = "cd".repeat(32);
        let t = parse(&format!("/bt/{pk}.6e/x")).unwrap();
        assert_eq!(t.name.segment(), format!("{pk}.6e"));
        assert_eq!(
            parse(&format!("/bt/{IH}/caf%C3%A9")).unwrap().path,
            ["café"]
        );
    }

    #[test]
    fn escapes_and_bad_names_are_refused() {
        for p in [
            format!("/bt/{IH}/../x"),
            format!("/bt/{IH}/a/%2e%2e/x"),
            format!("/bt/{IH}/./x"),
        ] {
            assert!(matches!(parse(&p), Err(AddrError::Escape(_))), "{p}");
        }
        for p in [
            format!("/bt/{IH}/a%2Fb"),
            format!("/bt/{IH}/a%00b"),
            format!("/bt/{IH}/a%5cb"),
        ] {
            assert_eq!(parse(&p), Err(AddrError::EncodedSeparator), "{p}");
        }
        assert_eq!(parse(&format!("/bt/{IH}/%ff")), Err(AddrError::BadEncoding));
        assert_eq!(parse(&format!("/bt/{IH}/%4")), Err(AddrError::BadEncoding));
        assert!(matches!(parse("/bt/xyz/a"), Err(AddrError::Name(_))));
        assert!(matches!(
            parse(&format!("/bt/{}/", &IH[2..])),
            Err(AddrError::Name(_))
        ));
        assert_eq!(parse("/bt/"), Err(AddrError::NotArchive));
        assert_eq!(parse("/other"), Err(AddrError::NotArchive));
    }

    #[test]
    fn urls_are_encoded_back() {
        let n = Name::parse(IH).unwrap();
        assert_eq!(
            url_of(&n, &["a b".into(), "c#d".into()], false),
            format!("/bt/{IH}/a%20b/c%23d")
        );
        assert_eq!(url_of(&n, &["d".into()], true), format!("/bt/{IH}/d/"));
        assert_eq!(url_of(&n, &[], true), format!("/bt/{IH}/"));
        let t = parse(&url_of(&n, &["x%y".into(), "ü".into()], false)).unwrap();
        assert_eq!(t.path, ["x%y", "ü"]);
    }
}
