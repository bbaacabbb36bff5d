//! Turning torrent path elements into safe path components, and making every
//! path in a torrent unique.
//!
//! For elements that are valid UTF-8 the rewrite follows current
//! libtorrent's (`sanitize_append_path_element` with a forced element), as
//! described in the project's `shared/torrents/EXPECTATIONS.md`, rule 5:
//! - `/`, `\` and NUL are removed inside an element (`abc/../../def` →
//!   `abc....def`), and so are the Unicode direction overrides U+200E, U+200F,
//!   U+202A..U+202E (they disguise extensions);
//! - an element longer than 240 bytes is cut to 240 bytes (at a character
//!   boundary), keeping an extension of up to 10 bytes (`.` included), so no
//!   component exceeds 250 bytes (NAME_MAX is 255);
//! - then an element that is empty or `.` becomes `_`, and an element that is
//!   `..` is dropped.
//!
//! An element that is **not** valid UTF-8 (and came without a `.utf-8` key)
//! is shown in a lossless escape instead of libtorrent's `_` per invalid
//! sequence: every byte of an invalid sequence, and every `\`, `/`, NUL and
//! byte of a direction override in that element, is written `\xHH` (two
//! lowercase hex digits); everything else is kept. Since the rewrite of valid
//! elements removes every `\`, a `\` in a shown name always starts such an
//! escape, so the raw bytes are recovered exactly by [`unescape`] (unless the
//! element was truncated for length, which never cuts inside an escape).
//! Example: `b"\x82est/MB"` is shown as `\x82est\x2fMB` (libtorrent: `_estMB`).
//!
//! The result of [`component`] is therefore never empty, `.`, `..`, and never
//! contains `/` or NUL: a path built from such components cannot leave the
//! directory it is joined to. The same function serves file paths and
//! symlink targets, so links still point where they should.

/// Longest kept stem of an element, in bytes (before the extension).
pub const MAX_STEM: usize = 240;
/// Longest extension (including the dot) kept when truncating, in bytes.
pub const MAX_EXTENSION: usize = 10;

/// Unicode characters that change the writing direction; removed.
const BIDI: [char; 7] = [
    '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}',
];

/// Filters one raw element: removes separators, NUL and direction overrides
/// from a valid UTF-8 element, escapes a non-UTF-8 one losslessly with
/// [`escape`], and truncates. May return "", "." or ".."; callers decide
/// what those mean ([`component`], or the torrent name).
pub fn filter(raw: &[u8]) -> String {
    match std::str::from_utf8(raw) {
        Ok(s) => truncate(s.chars().filter(|&c| !is_unsafe(c)).collect()),
        Err(_) => truncate(escape(raw)),
    }
}

/// Characters a valid element loses and a non-UTF-8 one escapes: `/`,
/// `\`, NUL and the direction overrides in [`BIDI`].
fn is_unsafe(c: char) -> bool {
    matches!(c, '/' | '\\' | '\0') || BIDI.contains(&c)
}

/// The lossless escape of `raw` (any bytes): every byte of an invalid UTF-8
/// sequence, and every byte of a `\`, `/`, NUL or direction override, is
/// written `\xHH` (lowercase hex); everything else is kept. [`unescape`]
/// inverts it. Not truncated.
pub fn escape(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_unsafe(c) {
                let mut buf = [0u8; 4];
                for &b in c.encode_utf8(&mut buf).as_bytes() {
                    push_escape(&mut out, b);
                }
            } else {
                out.push(c);
            }
        }
        for &b in chunk.invalid() {
            push_escape(&mut out, b);
        }
    }
    out
}

/// Appends `\xHH` for byte `b`.
fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('\\');
    out.push('x');
    out.push(HEX[usize::from(b >> 4)] as char);
    out.push(HEX[usize::from(b & 15)] as char);
}

/// The raw bytes behind a component shown by [`filter`]: every `\xHH` is
/// turned back into its byte. A component without `\` is returned as is.
/// `None` when a `\` does not start a well-formed escape (the name was not
/// made by [`filter`]).
pub fn unescape(shown: &str) -> Option<Vec<u8>> {
    let b = shown.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            let hex = b.get(i + 1..i + 4)?;
            if hex[0] != b'x' {
                return None;
            }
            let digits = std::str::from_utf8(&hex[1..]).ok()?;
            if !digits
                .bytes()
                .all(|d| d.is_ascii_digit() || (b'a'..=b'f').contains(&d))
            {
                return None;
            }
            out.push(u8::from_str_radix(digits, 16).ok()?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The bytes to write into a new torrent for a name in shown form: a name
/// that is exactly the [`escape`] of some bytes that are not valid UTF-8
/// and hold no `/` or NUL gives those bytes (so a non-UTF-8 name survives a
/// mount → write → publish round trip, and `seed DIR` keeps names that are
/// not UTF-8); any other name is its own UTF-8, literally. This is the
/// inverse of what [`filter`] shows, and it is one-to-one: two different
/// names never give the same bytes (decoded bytes are never valid UTF-8;
/// literal names always are), and no element ever gets a `/` or NUL.
pub fn raw_element(shown: &str) -> std::borrow::Cow<'_, [u8]> {
    if shown.contains('\\')
        && let Some(raw) = unescape(shown)
        && std::str::from_utf8(&raw).is_err()
        && !raw.contains(&b'/')
        && !raw.contains(&0)
        && escape(&raw) == shown
    {
        return raw.into();
    }
    shown.as_bytes().into()
}

/// Cuts `s` to [`MAX_STEM`] bytes plus an extension of at most
/// [`MAX_EXTENSION`] bytes, if it is longer than that stem.
fn truncate(s: String) -> String {
    if s.len() <= MAX_STEM {
        return s;
    }
    let ext_start = s
        .rfind('.')
        .filter(|&dot| dot > 0 && s.len() - dot <= MAX_EXTENSION);
    let (stem, ext) = match ext_start {
        Some(dot) => (&s[..dot], &s[dot..]),
        None => (s.as_str(), ""),
    };
    let mut cut = stem.len().min(MAX_STEM);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    // never cut inside a `\xHH` escape (a `\` only ever starts one)
    if let Some(bs) = stem[..cut].rfind('\\') {
        if cut - bs < 4 {
            cut = bs;
        }
    }
    format!("{}{}", &stem[..cut], ext)
}

/// One path component from one raw element: `None` when the element is
/// dropped (it is `..` after filtering), else a non-empty safe name.
pub fn component(raw: &[u8]) -> Option<String> {
    let s = filter(raw);
    match s.as_str() {
        ".." => None,
        "" | "." => Some("_".to_string()),
        _ => Some(s),
    }
}

/// The components of a path given as raw elements (a `path` list, a
/// `symlink path` list). Dropped elements leave no trace; a path that ends up
/// with no component at all becomes `["_"]`, so it never names the directory
/// it is joined to.
pub fn path<'a>(raw: impl IntoIterator<Item = &'a [u8]>) -> Vec<String> {
    let mut out: Vec<String> = raw.into_iter().filter_map(component).collect();
    if out.is_empty() {
        out.push("_".to_string());
    }
    out
}

/// `name` with `.n` inserted before its extension: `bar.txt` → `bar.1.txt`,
/// `_` → `_.1`, `.hidden` → `.hidden.1` (a leading dot is not an extension).
pub fn with_counter(name: &str, n: u32) -> String {
    match name.rfind('.').filter(|&dot| dot > 0) {
        Some(dot) => format!("{}.{n}{}", &name[..dot], &name[dot..]),
        None => format!("{name}.{n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(raw: &[u8]) -> Option<String> {
        component(raw)
    }

    #[test]
    fn separators_removed_inside_elements() {
        assert_eq!(c(b"abc/../../def").as_deref(), Some("abc....def"));
        assert_eq!(c(b"foo/../../../bar").as_deref(), Some("foo......bar"));
        assert_eq!(c(b"/foobar").as_deref(), Some("foobar"));
        assert_eq!(c(b"temp/../../abc").as_deref(), Some("temp....abc"));
        assert_eq!(c(b"a\\b").as_deref(), Some("ab"));
        assert_eq!(c(b"\\est2").as_deref(), Some("est2"));
    }

    #[test]
    fn empty_dot_and_dotdot() {
        assert_eq!(c(b"").as_deref(), Some("_"));
        assert_eq!(c(b"/").as_deref(), Some("_"));
        assert_eq!(c(b"\\").as_deref(), Some("_"));
        assert_eq!(c(b"//").as_deref(), Some("_"));
        assert_eq!(c(b".").as_deref(), Some("_"));
        assert_eq!(c(b"/.").as_deref(), Some("_"));
        assert_eq!(c(b".."), None);
        assert_eq!(c(b"../"), None);
        assert_eq!(c(b"...").as_deref(), Some("..."));
        assert_eq!(c(b"..a").as_deref(), Some("..a"));
    }

    #[test]
    fn nul_bidi_and_invalid_utf8() {
        assert_eq!(c(b"\0\0\0\0").as_deref(), Some("_"));
        assert_eq!(filter(b"\0\0\0\0"), "");
        assert_eq!(c(b"a\0b").as_deref(), Some("ab"));
        assert_eq!(c(b"\x82est/MB").as_deref(), Some("\\x82est\\x2fMB"));
        assert_eq!(c(b"a\xff\xfeb").as_deref(), Some("a\\xff\\xfeb"));
        assert_eq!(
            c("evil\u{202e}txt.exe".as_bytes()).as_deref(),
            Some("eviltxt.exe")
        );
        assert_eq!(c("é ü".as_bytes()).as_deref(), Some("é ü"));
        assert_eq!(c(b"trailing ").as_deref(), Some("trailing "));
    }

    #[test]
    fn non_utf8_escape_is_lossless_and_deterministic() {
        let cases: &[&[u8]] = &[
            b"\x82est2",
            b"\xff",
            b"a\xff\xfeb",
            b"\xc3(.bin",
            b"caf\xe9 \\ 100% / x\0y",
            b"\xe2\x80\xaetxt.exe\xc0",
            b"\xe2\x80\xaeevil\xff",
            b"\xf0\x9f\x98",
            b"..\xff",
            b"\\x41\xff",
        ];
        for &raw in cases {
            let shown = c(raw).unwrap();
            assert_eq!(c(raw).unwrap(), shown, "deterministic");
            assert!(!shown.contains('/') && !shown.contains('\0'), "{shown}");
            assert_eq!(unescape(&shown).as_deref(), Some(raw), "{shown}");
        }
        assert_eq!(&*raw_element("caf\\xe9.txt"), b"caf\xe9.txt");
        // only the exact escape of non-UTF-8 bytes is decoded
        assert_eq!(&*raw_element("a\\x41"), b"a\\x41", "decodes to UTF-8");
        assert_eq!(
            &*raw_element("a\\xFF"),
            b"a\\xFF",
            "not the canonical escape"
        );
        assert_eq!(&*raw_element("a\\q\\xff"), b"a\\q\\xff", "not an escape");
        assert_eq!(&*raw_element("plain"), b"plain");
        // never a `/` or NUL inside an element
        assert_eq!(&*raw_element("x\\x2fy"), b"x\\x2fy");
        assert_eq!(&*raw_element("\\xff\\x2f"), b"\\xff\\x2f");
        assert_eq!(&*raw_element("n\\xff\\x00"), b"n\\xff\\x00");
        // what `filter` shows for non-UTF-8 bytes comes back as those bytes
        for raw in [
            &b"a\xff"[..],
            b"\xc3(a\\b",
            b"\xe2\x80\xaex\xff",
            b"\xff\xfe",
        ] {
            assert_eq!(&*raw_element(&filter(raw)), raw);
        }
        // distinct raw names stay distinct (libtorrent: `a_b` twice)
        assert_ne!(c(b"a\xffb"), c(b"a\xfeb"));
        // a valid element is never escaped, and never contains `\`
        assert_eq!(c("é\\x41".as_bytes()).as_deref(), Some("éx41"));
        assert_eq!(c(b"100% done").as_deref(), Some("100% done"));
        assert_eq!(unescape("plain"), Some(b"plain".to_vec()));
        assert_eq!(unescape("bad\\q"), None);
        assert_eq!(unescape("bad\\x4"), None);
        // escapes of long names are never cut in half
        for pad in 0..4 {
            let mut raw = vec![b'a'; pad];
            raw.extend(std::iter::repeat_n(0xffu8, 100));
            let shown = c(&raw).unwrap();
            assert!(shown.len() <= MAX_STEM, "{}", shown.len());
            let back = unescape(&shown).unwrap();
            assert!(raw.starts_with(&back), "{shown}");
        }
    }

    #[test]
    fn long_elements_truncated_keeping_extension() {
        let name249 = format!("{}.23456789", "a".repeat(240));
        assert_eq!(c(name249.as_bytes()).unwrap(), name249);
        let long = format!("{}.mkv", "b".repeat(1000));
        let out = c(long.as_bytes()).unwrap();
        assert_eq!(out, format!("{}.mkv", "b".repeat(240)));
        let noext = "c".repeat(300);
        assert_eq!(c(noext.as_bytes()).unwrap().len(), 240);
        // a dot too far from the end is not an extension
        let far = format!("{}.{}", "d".repeat(250), "e".repeat(20));
        assert_eq!(c(far.as_bytes()).unwrap(), "d".repeat(240));
        // multi-byte characters are never split
        let wide = "é".repeat(200);
        let out = c(wide.as_bytes()).unwrap();
        assert!(out.len() <= 240 && out.chars().all(|ch| ch == 'é'));
        for raw in [long.as_bytes(), noext.as_bytes(), far.as_bytes()] {
            assert!(c(raw).unwrap().len() <= MAX_STEM + MAX_EXTENSION);
        }
    }

    #[test]
    fn hostile_paths_stay_inside() {
        let cases: &[&[&[u8]]] = &[
            &[b"..", b"..", b"x"],
            &[b"/etc", b"passwd"],
            &[b"..\\..\\x"],
            &[b"a\0/b"],
            &[b"", b""],
            &[b".."],
            &[],
            &[b".", b"..", b"."],
        ];
        for raw in cases {
            let p = path(raw.iter().copied());
            assert!(!p.is_empty(), "{raw:?}");
            for comp in &p {
                assert!(
                    !comp.is_empty() && comp != "." && comp != "..",
                    "{raw:?} -> {p:?}"
                );
                assert!(!comp.contains('/') && !comp.contains('\0') && !comp.contains('\\'));
                assert!(comp.len() <= 255);
            }
        }
        assert_eq!(path([&b".."[..], b"..", b"x"]), vec!["x"]);
        assert_eq!(path([&b"/etc"[..], b"passwd"]), vec!["etc", "passwd"]);
        assert_eq!(path([&b"..\\..\\x"[..]]), vec!["....x"]);
        assert_eq!(path([&b""[..], b""]), vec!["_", "_"]);
        assert_eq!(path([&b".."[..]]), vec!["_"]);
    }

    #[test]
    fn counters_before_extension() {
        assert_eq!(with_counter("bar.txt", 1), "bar.1.txt");
        assert_eq!(with_counter("_", 1), "_.1");
        assert_eq!(with_counter("foo", 2), "foo.2");
        assert_eq!(with_counter(".hidden", 1), ".hidden.1");
        assert_eq!(with_counter("a.b.c", 3), "a.b.3.c");
    }
}
