//! The draft's two text files: `meta` (what the draft is) and the
//! `journal` (its tree's shape changes, one line each). Fields and paths
//! are percent-encoded, so a line never holds a space, `/` or newline of
//! its own.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// What is escaped in journal and meta fields.
pub(super) const ENC: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'/').add(b'\\');

/// What a draft is, kept in its `meta` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DraftMeta {
    /// The name given to a torrent whose root holds several entries.
    pub name: String,
    /// The mountpoint it was edited on, if any (`--resume` finds it by this).
    pub mountpoint: Option<PathBuf>,
    /// The URL it was started from, if any.
    pub url: Option<String>,
    /// The info-hash (40 hex) of the base torrent, if any.
    pub base: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
}

impl DraftMeta {
    /// A meta with just a name (created now).
    pub fn named(name: &str) -> DraftMeta {
        DraftMeta {
            name: name.to_string(),
            created: now_secs(),
            ..Default::default()
        }
    }

    pub(super) fn encode(&self) -> String {
        let opt = |s: Option<&str>| s.map_or("-".to_string(), enc);
        format!(
            "version 1\ncreated {}\nname {}\nmountpoint {}\nurl {}\nbase {}\n",
            self.created,
            enc(&self.name),
            opt(self.mountpoint.as_ref().and_then(|p| p.to_str())),
            opt(self.url.as_deref()),
            opt(self.base.as_deref()),
        )
    }

    pub(super) fn decode(text: &str) -> Option<DraftMeta> {
        let mut m = DraftMeta::default();
        for line in text.lines() {
            let (k, v) = line.split_once(' ')?;
            let val = || (v != "-").then(|| dec(v)).flatten();
            match k {
                "created" => m.created = v.parse().ok()?,
                "name" => m.name = dec(v)?,
                "mountpoint" => m.mountpoint = val().map(PathBuf::from),
                "url" => m.url = val(),
                "base" => m.base = val(),
                _ => {}
            }
        }
        Some(m)
    }
}

pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn enc(s: &str) -> String {
    utf8_percent_encode(s, ENC).to_string()
}

pub(super) fn dec(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// A journal line's path: components percent-encoded, joined with `/`.
pub(super) fn enc_path(p: &[String]) -> String {
    p.iter().map(|c| enc(c)).collect::<Vec<_>>().join("/")
}

pub(super) fn dec_path(s: &str) -> Option<Vec<String>> {
    s.split('/').map(dec).collect()
}

/// One journal operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Op {
    Mkdir(Vec<String>),
    File(Vec<String>, u64),
    Rm(Vec<String>),
    Mv(Vec<String>, Vec<String>),
}

impl Op {
    pub(super) fn line(&self) -> String {
        match self {
            Op::Mkdir(p) => format!("mkdir {}\n", enc_path(p)),
            Op::File(p, n) => format!("file {} {n}\n", enc_path(p)),
            Op::Rm(p) => format!("rm {}\n", enc_path(p)),
            Op::Mv(a, b) => format!("mv {} {}\n", enc_path(a), enc_path(b)),
        }
    }

    pub(super) fn parse(line: &str) -> Option<Op> {
        let mut it = line.split(' ');
        let op = match (it.next()?, it.next(), it.next()) {
            ("mkdir", Some(p), None) => Op::Mkdir(dec_path(p)?),
            ("file", Some(p), Some(n)) => Op::File(dec_path(p)?, n.parse().ok()?),
            ("rm", Some(p), None) => Op::Rm(dec_path(p)?),
            ("mv", Some(a), Some(b)) => Op::Mv(dec_path(a)?, dec_path(b)?),
            _ => return None,
        };
        it.next().is_none().then_some(op)
    }
}
