//! Turning torrent path elements into safe path components, and making every
//! path in a torrent unique.
//!
//! The rewrite follows current libtorrent's (`sanitize_append_path_element`
//! with a forced element), as described in the project's
//! `shared/torrents/EXPECTATIONS.md`, rule 5:
//! - `/`, `\` and NUL are removed inside an element (`abc/../../def` →
//!   `abc....def`), and so are the Unicode direction overrides U+200E, U+200F,
//!   U+202A..U+202E (they disguise extensions);
//! - each invalid UTF-8 sequence becomes one `_`;
//! - an element longer than 240 bytes is cut to 240 bytes (at a character
//!   boundary), keeping an extension of up to 10 bytes (`.` included), so no
//!   component exceeds 250 bytes (NAME_MAX is 255);
//! - then an element that is empty or `.` becomes `_`, and an element that is
//!   `..` is dropped.
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

/// Filters one raw element: removes separators, NUL and direction overrides,
/// replaces invalid UTF-8 and truncates. May return "", "." or "..";
/// callers decide what those mean ([`component`], or the torrent name).
pub fn filter(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len().min(MAX_STEM + MAX_EXTENSION));
    for chunk in raw.utf8_chunks() {
        for c in chunk.valid().chars() {
            if matches!(c, '/' | '\\' | '\0') || BIDI.contains(&c) {
                continue;
            }
            out.push(c);
        }
        if !chunk.invalid().is_empty() {
            out.push('_');
        }
    }
    truncate(out)
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
        assert_eq!(c(b"\x82est/MB").as_deref(), Some("_estMB"));
        assert_eq!(c(b"a\xff\xfeb").as_deref(), Some("a__b"));
        assert_eq!(
            c("evil\u{202e}txt.exe".as_bytes()).as_deref(),
            Some("eviltxt.exe")
        );
        assert_eq!(c("é ü".as_bytes()).as_deref(), Some("é ü"));
        assert_eq!(c(b"trailing ").as_deref(), Some("trailing "));
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
