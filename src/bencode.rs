//! Bencoding (BEP 3, section "bencoding"): a bounded, lenient decoder that
//! keeps the raw bytes of every value, and a canonical encoder.
//!
//! Why not `bendy`'s decoder: data from the network (info dictionaries sent by
//! BEP 9, KRPC messages from other DHT implementations) may have unsorted
//! dictionary keys, which libtorrent accepts and `bendy` refuses. We also need
//! the exact byte span of a value (the info-hash is the SHA-1 of the raw
//! `info` bytes, BEP 44 keeps `v` as raw bencode) and hard limits checked
//! before allocating (nesting depth, token count). The decoder records whether
//! the input was canonical so strict users (BEP 52 info dictionaries) can
//! refuse non-canonical input.
//!
//! Shapes: [`decode`] takes a whole buffer and returns a borrowed [`Value`];
//! [`decode_prefix`] returns the value and the number of bytes it used (for
//! `ut_metadata` messages, where piece data follows the dictionary).
//! [`Owned`] builds values to encode; dictionaries encode with sorted keys.

use std::collections::BTreeMap;
use std::fmt;

/// Limits checked while decoding, before anything is allocated for a token.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum nesting of lists and dictionaries (libtorrent: 100).
    pub max_depth: usize,
    /// Maximum number of tokens (integers, strings, list and dict openings).
    pub max_tokens: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 100,
            max_tokens: 3_000_000,
        }
    }
}

/// Why a buffer is not acceptable bencode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer ends inside a value: more bytes may make it valid.
    #[error("bencode: unexpected end of data at offset {0}")]
    Incomplete(usize),
    /// The bytes can never be valid bencode.
    #[error("bencode: {msg} at offset {offset}")]
    Invalid { offset: usize, msg: &'static str },
    /// Nesting deeper than [`Limits::max_depth`].
    #[error("bencode: nesting deeper than {0} levels")]
    TooDeep(usize),
    /// More tokens than [`Limits::max_tokens`].
    #[error("bencode: more than {0} tokens")]
    TooManyTokens(usize),
    /// [`decode`] found bytes after the value.
    #[error("bencode: {0} trailing bytes after the value")]
    Trailing(usize),
}

/// A decoded value borrowing from the input buffer.
#[derive(Clone, PartialEq, Eq)]
pub struct Value<'a> {
    /// The exact bytes this value was decoded from.
    pub raw: &'a [u8],
    /// What the value is.
    pub kind: Kind<'a>,
}

/// The four bencode types.
#[derive(Clone, PartialEq, Eq)]
pub enum Kind<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    /// Pairs in the order they appeared (possibly unsorted, possibly with
    /// duplicate keys; [`Value::get`] returns the first).
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

impl fmt::Debug for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Int(i) => write!(f, "{i}"),
            Kind::Bytes(b) => write!(f, "{}", Printable(b)),
            Kind::List(l) => f.debug_list().entries(l).finish(),
            Kind::Dict(d) => f
                .debug_map()
                .entries(d.iter().map(|(k, v)| (Printable(k), v)))
                .finish(),
        }
    }
}

/// Shows a byte string as text when it is printable UTF-8, else as hex.
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(self.0) {
            Ok(s) if s.chars().all(|c| !c.is_control()) => write!(f, "{s:?}"),
            _ => write!(f, "0x{}", hex::encode(self.0)),
        }
    }
}

impl fmt::Debug for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<'a> Value<'a> {
    /// The value under `key` if this is a dictionary holding it (first match).
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        match &self.kind {
            Kind::Dict(d) => d.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn as_int(&self) -> Option<i64> {
        match self.kind {
            Kind::Int(i) => Some(i),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match self.kind {
            Kind::Bytes(b) => Some(b),
            _ => None,
        }
    }
    /// The byte string as UTF-8, if it is one.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
    pub fn as_list(&self) -> Option<&[Value<'a>]> {
        match &self.kind {
            Kind::List(l) => Some(l),
            _ => None,
        }
    }
    pub fn as_dict(&self) -> Option<&[(&'a [u8], Value<'a>)]> {
        match &self.kind {
            Kind::Dict(d) => Some(d),
            _ => None,
        }
    }
    /// True when the value is in canonical form (BEP 3): dictionary keys
    /// sorted as raw strings and unique, integers and string lengths without
    /// leading zeros and no `-0`. BEP 52 requires this of v2 info dictionaries.
    pub fn is_canonical(&self) -> bool {
        match &self.kind {
            Kind::Int(_) => {
                let body = &self.raw[1..self.raw.len() - 1];
                let digits = body.strip_prefix(b"-").unwrap_or(body);
                !(digits.len() > 1 && digits[0] == b'0') && body != b"-0"
            }
            Kind::Bytes(b) => {
                let len_digits = self.raw.len() - b.len() - 1;
                !(len_digits > 1 && self.raw[0] == b'0')
            }
            Kind::List(l) => l.iter().all(Value::is_canonical),
            Kind::Dict(d) => {
                if !d.windows(2).all(|w| w[0].0 < w[1].0) {
                    return false;
                }
                // Keys are not `Value`s: walk the raw bytes (`d` is in input
                // order, each key followed by its value) to check each key's
                // own length prefix.
                let mut pos = 1;
                for (k, v) in d {
                    let Some(colon) = self.raw[pos..].iter().position(|&c| c == b':') else {
                        return false;
                    };
                    if colon > 1 && self.raw[pos] == b'0' {
                        return false;
                    }
                    pos += colon + 1 + k.len() + v.raw.len();
                    if !v.is_canonical() {
                        return false;
                    }
                }
                true
            }
        }
    }
}

/// Decodes exactly one value that fills the whole buffer.
///
/// Errors: [`Error::Trailing`] when bytes follow the value, and every error
/// of [`decode_prefix`].
pub fn decode(buf: &[u8], limits: Limits) -> Result<Value<'_>, Error> {
    let (v, used) = decode_prefix(buf, limits)?;
    if used != buf.len() {
        return Err(Error::Trailing(buf.len() - used));
    }
    Ok(v)
}

/// Decodes one value at the start of `buf`; returns it and its length in bytes.
pub fn decode_prefix(buf: &[u8], limits: Limits) -> Result<(Value<'_>, usize), Error> {
    let mut d = Decoder {
        buf,
        pos: 0,
        tokens: 0,
        limits,
    };
    let v = d.value(0)?;
    Ok((v, d.pos))
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    tokens: usize,
    limits: Limits,
}

impl<'a> Decoder<'a> {
    fn invalid(&self, msg: &'static str) -> Error {
        Error::Invalid {
            offset: self.pos,
            msg,
        }
    }

    fn peek(&self) -> Result<u8, Error> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(Error::Incomplete(self.pos))
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, Error> {
        self.tokens += 1;
        if self.tokens > self.limits.max_tokens {
            return Err(Error::TooManyTokens(self.limits.max_tokens));
        }
        let start = self.pos;
        let kind = match self.peek()? {
            b'i' => Kind::Int(self.int()?),
            b'0'..=b'9' => Kind::Bytes(self.bytes()?),
            c @ (b'l' | b'd') => {
                if depth >= self.limits.max_depth {
                    return Err(Error::TooDeep(self.limits.max_depth));
                }
                self.pos += 1;
                if c == b'l' {
                    let mut items = Vec::new();
                    while self.peek()? != b'e' {
                        items.push(self.value(depth + 1)?);
                    }
                    self.pos += 1;
                    Kind::List(items)
                } else {
                    let mut pairs = Vec::new();
                    while self.peek()? != b'e' {
                        if !self.peek()?.is_ascii_digit() {
                            return Err(self.invalid("dictionary key is not a string"));
                        }
                        self.tokens += 1;
                        let key = self.bytes()?;
                        if self.peek()? == b'e' {
                            return Err(self.invalid("dictionary key without a value"));
                        }
                        let v = self.value(depth + 1)?;
                        pairs.push((key, v));
                    }
                    self.pos += 1;
                    Kind::Dict(pairs)
                }
            }
            _ => return Err(self.invalid("unexpected byte")),
        };
        Ok(Value {
            raw: &self.buf[start..self.pos],
            kind,
        })
    }

    /// `i<digits>e` with an optional minus sign; leading zeros accepted
    /// (lenient), overflow refused.
    fn int(&mut self) -> Result<i64, Error> {
        self.pos += 1; // 'i'
        let neg = self.peek()? == b'-';
        if neg {
            self.pos += 1;
        }
        let digits_start = self.pos;
        let mut n: i64 = 0;
        loop {
            let c = self.peek()?;
            match c {
                b'0'..=b'9' => {
                    let d = (c - b'0') as i64;
                    n = n
                        .checked_mul(10)
                        .and_then(|n| {
                            if neg {
                                n.checked_sub(d)
                            } else {
                                n.checked_add(d)
                            }
                        })
                        .ok_or_else(|| self.invalid("integer overflows 64 bits"))?;
                    self.pos += 1;
                }
                b'e' => break,
                _ => return Err(self.invalid("bad byte in integer")),
            }
        }
        if self.pos == digits_start {
            return Err(self.invalid("integer without digits"));
        }
        self.pos += 1; // 'e'
        Ok(n)
    }

    /// `<len>:<bytes>`; the length is checked against the buffer before use.
    fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let mut len: usize = 0;
        let digits_start = self.pos;
        loop {
            let c = self.peek()?;
            match c {
                b'0'..=b'9' => {
                    len = len
                        .checked_mul(10)
                        .and_then(|l| l.checked_add((c - b'0') as usize))
                        .ok_or_else(|| self.invalid("string length overflows"))?;
                    self.pos += 1;
                }
                b':' => break,
                _ => return Err(self.invalid("bad byte in string length")),
            }
        }
        if self.pos == digits_start {
            return Err(self.invalid("string without a length"));
        }
        self.pos += 1; // ':'
        let end = self
            .pos
            .checked_add(len)
            .ok_or_else(|| self.invalid("string length overflows"))?;
        if end > self.buf.len() {
            return Err(Error::Incomplete(self.buf.len()));
        }
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
}

/// An owned value to encode. Dictionaries are kept sorted, so [`Owned::encode`]
/// is canonical BEP 3 bencoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owned {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Owned>),
    Dict(BTreeMap<Vec<u8>, Owned>),
    /// Already-encoded bencode, copied verbatim (e.g. a BEP 44 `v`, a raw
    /// info dictionary). The caller guarantees it is one valid value.
    Raw(Vec<u8>),
}

impl Owned {
    /// An empty dictionary, to fill with [`Owned::insert`].
    pub fn dict() -> Owned {
        Owned::Dict(BTreeMap::new())
    }

    /// Inserts `key` into a dictionary (no-op on other types); returns self
    /// for chaining.
    pub fn insert(mut self, key: impl Into<Vec<u8>>, value: impl Into<Owned>) -> Owned {
        if let Owned::Dict(d) = &mut self {
            d.insert(key.into(), value.into());
        }
        self
    }

    /// The bencoded bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the bencoded bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Owned::Int(i) => {
                out.push(b'i');
                out.extend_from_slice(i.to_string().as_bytes());
                out.push(b'e');
            }
            Owned::Bytes(b) => encode_bytes(b, out),
            Owned::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Owned::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    encode_bytes(k, out);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Owned::Raw(r) => out.extend_from_slice(r),
        }
    }
}

/// Appends `<len>:<bytes>`.
pub fn encode_bytes(b: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(b);
}

impl From<i64> for Owned {
    fn from(i: i64) -> Self {
        Owned::Int(i)
    }
}
impl From<Vec<u8>> for Owned {
    fn from(b: Vec<u8>) -> Self {
        Owned::Bytes(b)
    }
}
impl From<&[u8]> for Owned {
    fn from(b: &[u8]) -> Self {
        Owned::Bytes(b.to_vec())
    }
}
impl<const N: usize> From<&[u8; N]> for Owned {
    fn from(b: &[u8; N]) -> Self {
        Owned::Bytes(b.to_vec())
    }
}
impl From<&str> for Owned {
    fn from(s: &str) -> Self {
        Owned::Bytes(s.as_bytes().to_vec())
    }
}
impl From<Vec<Owned>> for Owned {
    fn from(l: Vec<Owned>) -> Self {
        Owned::List(l)
    }
}

impl From<&Value<'_>> for Owned {
    fn from(v: &Value<'_>) -> Self {
        match &v.kind {
            Kind::Int(i) => Owned::Int(*i),
            Kind::Bytes(b) => Owned::Bytes(b.to_vec()),
            Kind::List(l) => Owned::List(l.iter().map(Owned::from).collect()),
            Kind::Dict(d) => Owned::Dict(
                d.iter()
                    .map(|(k, v)| (k.to_vec(), Owned::from(v)))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(b: &[u8]) -> Result<Value<'_>, Error> {
        decode(b, Limits::default())
    }

    #[test]
    fn round_trip_and_raw_spans() {
        let buf = b"d1:ai-42e1:bl3:xyzi0ee4:infod1:ki1eee";
        let v = dec(buf).unwrap();
        assert_eq!(v.get(b"a").unwrap().as_int(), Some(-42));
        assert_eq!(v.get(b"info").unwrap().raw, b"d1:ki1ee");
        assert_eq!(Owned::from(&v).encode(), buf.to_vec());
        assert!(v.is_canonical());
    }

    #[test]
    fn unsorted_keys_are_accepted_but_not_canonical() {
        let v = dec(b"d1:bi1e1:ai2ee").unwrap();
        assert_eq!(v.get(b"a").unwrap().as_int(), Some(2));
        assert!(!v.is_canonical());
        assert!(!dec(b"i03e").unwrap().is_canonical());
        assert!(!dec(b"i-0e").unwrap().is_canonical());
        assert!(!dec(b"03:abc").unwrap().is_canonical());
        // a key's length prefix counts too (found by fuzzing)
        assert!(!dec(b"d01:ai1ee").unwrap().is_canonical());
        assert!(!dec(b"d1:ai1e01:bi2ee").unwrap().is_canonical());
        assert!(dec(b"d1:ai1e10:bbbbbbbbbbi2ee").unwrap().is_canonical());
    }

    #[test]
    fn errors() {
        assert_eq!(dec(b"d1:a"), Err(Error::Incomplete(4)));
        assert_eq!(dec(b"5:ab"), Err(Error::Incomplete(4)));
        assert!(matches!(dec(b"x"), Err(Error::Invalid { .. })));
        assert!(matches!(dec(b"di1ei2ee"), Err(Error::Invalid { .. })));
        assert!(matches!(dec(b"d1:ae"), Err(Error::Invalid { .. })));
        assert!(matches!(dec(b"i1ex"), Err(Error::Trailing(1))));
        assert!(matches!(dec(b"ie"), Err(Error::Invalid { .. })));
        assert!(matches!(
            dec(b"i99999999999999999999e"),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            dec(b"99999999999999999999999:"),
            Err(Error::Invalid { .. })
        ));
        let deep = [vec![b'l'; 5000], vec![b'e'; 5000]].concat();
        assert_eq!(dec(&deep), Err(Error::TooDeep(100)));
        let many = [b"l".to_vec(), b"i1e".repeat(100), b"e".to_vec()].concat();
        let lim = Limits {
            max_depth: 10,
            max_tokens: 50,
        };
        assert_eq!(decode(&many, lim), Err(Error::TooManyTokens(50)));
    }

    #[test]
    fn prefix_reports_length() {
        let (v, n) = decode_prefix(b"d1:ai1eeDATA", Limits::default()).unwrap();
        assert_eq!(n, 8);
        assert_eq!(v.get(b"a").unwrap().as_int(), Some(1));
    }

    #[test]
    fn encoder_sorts_keys() {
        let o = Owned::dict()
            .insert("z", 1)
            .insert("a", "x")
            .insert("m", Owned::Raw(b"le".to_vec()));
        assert_eq!(o.encode(), b"d1:a1:x1:mle1:zi1ee".to_vec());
    }
}
