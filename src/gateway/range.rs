//! Byte ranges (RFC 9110 §14): the `Range` request header, `If-Range`,
//! and what to answer.
//!
//! One range (`bytes=A-B`, `bytes=A-`, `bytes=-N`) is answered with 206
//! Partial Content and `Content-Range`, or 416 Range Not Satisfiable with
//! `Content-Range: bytes */SIZE` when it starts at or past the end. That is
//! what a `<video>` element, `mpv` and `ffplay` send when they seek.
//!
//! Several ranges in one request (`bytes=0-1,5-9`) are answered with the
//! whole file (200), as RFC 9110 §14.2 allows ("a server MAY ignore the
//! Range header field"); Amazon S3 and many CDNs do the same. No player or
//! browser sends them, and a `multipart/byteranges` answer is a well-known
//! amplification vector (many small or overlapping ranges). A malformed
//! header, or a unit other than `bytes`, is ignored the same way.

/// What a request asks of a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The whole representation (no usable `Range`): 200.
    Full,
    /// Bytes `[start, end)` (never empty): 206.
    Part { start: u64, end: u64 },
    /// A range that starts at or past the end: 416.
    Unsatisfiable,
}

/// Longest `Range` header value looked at (longer ones are ignored).
const MAX_HEADER: usize = 1024;

/// What `range` (the `Range` header's value, if any) asks of `size` bytes.
/// `if_range` is the `If-Range` header's value and `etag` our entity tag:
/// when `If-Range` is present and is not exactly `etag` (a date, or an old
/// tag), the whole representation is sent (RFC 9110 §13.1.5).
pub fn want(range: Option<&str>, if_range: Option<&str>, etag: &str, size: u64) -> Want {
    let Some(range) = range else {
        return Want::Full;
    };
    if if_range.is_some_and(|v| v.trim() != etag) {
        return Want::Full;
    }
    match parse_one(range) {
        Some(spec) => spec.resolve(size),
        None => Want::Full,
    }
}

/// One byte-range-spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `A-B` (inclusive) or `A-` (B = None).
    From(u64, Option<u64>),
    /// `-N`: the last N bytes.
    Suffix(u64),
}

impl Spec {
    fn resolve(self, size: u64) -> Want {
        match self {
            Spec::From(first, _) if first >= size => Want::Unsatisfiable,
            Spec::From(first, last) => Want::Part {
                start: first,
                end: last.map_or(size, |l| l.saturating_add(1).min(size)),
            },
            Spec::Suffix(0) => Want::Unsatisfiable,
            Spec::Suffix(_) if size == 0 => Want::Unsatisfiable,
            Spec::Suffix(n) => Want::Part {
                start: size.saturating_sub(n),
                end: size,
            },
        }
    }
}

/// Parses `bytes=<one spec>`; None for anything else (several ranges, a
/// malformed spec, another unit), which is then ignored.
fn parse_one(header: &str) -> Option<Spec> {
    if header.len() > MAX_HEADER {
        return None;
    }
    let (unit, set) = header.trim().split_once('=')?;
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return None;
    }
    let set = set.trim();
    if set.contains(',') {
        return None;
    }
    let (a, b) = set.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    if a.is_empty() {
        return Some(Spec::Suffix(num(b)?));
    }
    let first = num(a)?;
    if b.is_empty() {
        return Some(Spec::From(first, None));
    }
    let last = num(b)?;
    (last >= first).then_some(Spec::From(first, Some(last)))
}

/// The `Content-Range` of a 206 for `[start, end)` of `size` bytes.
pub fn content_range(start: u64, end: u64, size: u64) -> String {
    format!("bytes {start}-{}/{size}", end - 1)
}

/// The `Content-Range` of a 416 for `size` bytes.
pub fn unsatisfied_range(size: u64) -> String {
    format!("bytes */{size}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: &str = "\"x\"";

    fn w(r: &str, size: u64) -> Want {
        want(Some(r), None, E, size)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(w("bytes=0-99", 1000), Want::Part { start: 0, end: 100 });
        assert_eq!(
            w("bytes=500-", 1000),
            Want::Part {
                start: 500,
                end: 1000
            }
        );
        assert_eq!(
            w("bytes=-100", 1000),
            Want::Part {
                start: 900,
                end: 1000
            }
        );
        assert_eq!(
            w("bytes=-5000", 1000),
            Want::Part {
                start: 0,
                end: 1000
            }
        );
        assert_eq!(
            w("bytes=990-5000", 1000),
            Want::Part {
                start: 990,
                end: 1000
            }
        );
        assert_eq!(w("Bytes = 1-1", 1000), Want::Part { start: 1, end: 2 });
        assert_eq!(w("bytes=1000-", 1000), Want::Unsatisfiable);
        assert_eq!(w("bytes=-0", 1000), Want::Unsatisfiable);
        assert_eq!(w("bytes=0-", 0), Want::Unsatisfiable);
        assert_eq!(w(&format!("bytes={}-", u64::MAX), 10), Want::Unsatisfiable);
        assert_eq!(
            w(&format!("bytes=0-{}", u64::MAX), 10),
            Want::Part { start: 0, end: 10 }
        );
    }

    #[test]
    fn ignored_headers_give_the_whole_file() {
        for r in [
            "bytes=0-1,5-9",
            "bytes=9-1",
            "bytes=a-b",
            "bytes=-",
            "items=0-1",
            "bytes 0-1",
            "bytes=+1-2",
            "",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(w(r, 1000), Want::Full, "{r}");
        }
        assert_eq!(w(&format!("bytes=0-1{}", " ".repeat(2000)), 10), Want::Full);
        assert_eq!(want(None, None, E, 10), Want::Full);
    }

    #[test]
    fn if_range_must_match_the_etag() {
        assert_eq!(
            want(Some("bytes=0-0"), Some(E), E, 10),
            Want::Part { start: 0, end: 1 }
        );
        assert_eq!(want(Some("bytes=0-0"), Some("\"old\""), E, 10), Want::Full);
        assert_eq!(
            want(
                Some("bytes=0-0"),
                Some("Tue, 15 Nov 1994 08:12:31 GMT"),
                E,
                10
            ),
            Want::Full
        );
        assert_eq!(content_range(0, 100, 1000), "bytes 0-99/1000");
        assert_eq!(unsatisfied_range(7), "bytes */7");
    }
}
