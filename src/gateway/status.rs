//! The status page (`GET /`, HTML that refreshes itself every 2 s) and its
//! JSON twin (`GET /api/status`): each open archive with its name,
//! info-hash, BEP 46 seq, peers and where each came from, download and
//! upload rates, and a progress bar per file.
//!
//! JSON shape: `{"archives": [{"name": "<the torrent's name>", "url":
//! "/bt/<segment>/", "magnet": "...", "info_hash": "<40 hex>",
//! "public_key": "<64 hex>"|null, "salt": "<hex>"|null, "seq": N|null,
//! "peers": [{"addr": "ip:port", "source": "dht"}], "peers_known": N,
//! "peer_failures": [{"addr": "ip:port", "why": "..."}],
//! "download_rate": B/s, "upload_rate": B/s, "downloaded": B,
//! "uploaded": B, "readers": N, "size": B, "verified": B, "num_files": N,
//! "files": [{"path": "a/b", "size": B, "verified": B}]}],
//! "lookups": [{"url": "/bt/<segment>/", "state": "resolving"|"failed",
//! "seconds": S, "error": "..."|null}], "bytes_served": B}`. `lookups`:
//! the names not open, being looked up (for `seconds`) or whose lookup
//! failed `seconds` ago (kept a minute), with the error a request got
//! (for an info-hash, the peers that failed and why), so a user waiting on
//! a name sees what happens. `name` is the info dictionary's `name` (an archive
//! is listed once its metadata is known); the segment of its URL is the
//! info-hash, or for a mutable URL (BEP 46) the public key and salt, each
//! in a field of its own. `peer_failures`: the last known peers (at most
//! 3) that could not be connected and why, most recent first.

use crate::manager::{ArchiveStatus, LookupState, LookupStatus, Name};
use crate::plural::count;

use super::listing::escape;

/// The JSON of one archive.
fn archive_json(a: &ArchiveStatus) -> serde_json::Value {
    let (public_key, salt) = match &a.name {
        Name::Mutable { public_key, salt } => {
            (Some(hex::encode(public_key)), Some(hex::encode(salt)))
        }
        Name::InfoHash(_) => (None, None),
    };
    serde_json::json!({
        "name": a.title,
        "url": format!("/bt/{}/", a.name.segment()),
        "magnet": a.magnet,
        "info_hash": a.info_hash.to_hex(),
        "public_key": public_key,
        "salt": salt,
        "seq": a.seq,
        "peers": a.peers.iter().map(|p| serde_json::json!({
            "addr": p.addr.to_string(), "source": p.source,
        })).collect::<Vec<_>>(),
        "peers_known": a.peers_known,
        "peer_failures": a.peer_failures.recent.iter().map(|(addr, why)| serde_json::json!({
            "addr": addr.to_string(), "why": why,
        })).collect::<Vec<_>>(),
        "download_rate": a.download_rate,
        "upload_rate": a.upload_rate,
        "downloaded": a.downloaded,
        "uploaded": a.uploaded,
        "readers": a.readers,
        "size": a.size,
        "verified": a.verified,
        "num_files": a.num_files,
        "files": a.files.iter().map(|f| serde_json::json!({
            "path": f.path, "size": f.size, "verified": f.verified,
        })).collect::<Vec<_>>(),
    })
}

/// The JSON of one name that is not open (see the module docs).
fn lookup_json(l: &LookupStatus) -> serde_json::Value {
    let (state, took, error) = match &l.state {
        LookupState::Resolving(d) => ("resolving", d, None),
        LookupState::Failed(d, e) => ("failed", d, Some(e)),
    };
    serde_json::json!({
        "url": format!("/bt/{}/", l.name.segment()),
        "state": state,
        "seconds": (took.as_secs_f64() * 10.0).round() / 10.0,
        "error": error,
    })
}

/// `GET /api/status`.
pub fn json(archives: &[ArchiveStatus], lookups: &[LookupStatus], bytes_served: u64) -> String {
    serde_json::json!({
        "archives": archives.iter().map(archive_json).collect::<Vec<_>>(),
        "lookups": lookups.iter().map(lookup_json).collect::<Vec<_>>(),
        "bytes_served": bytes_served,
    })
    .to_string()
}

/// The paragraph of one name that is not open: looking up for how long,
/// or why it failed.
fn lookup_html(l: &LookupStatus) -> String {
    let seg = escape(&l.name.segment());
    match &l.state {
        LookupState::Resolving(d) => format!(
            "<p class=\"lookup\"><code>{seg}</code>: looking for peers and the metadata \
             ({:.0} s)</p>\n",
            d.as_secs_f64()
        ),
        LookupState::Failed(d, e) => format!(
            "<p class=\"lookup failed\"><code>{seg}</code>: lookup failed {:.0} s ago: {}</p>\n",
            d.as_secs_f64(),
            escape(e)
        ),
    }
}

/// A byte count for people: `1.5 MiB`.
fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The peers paragraph of an archive: those connected and where each came
/// from, or, when none is, that none is and why the last known ones failed.
fn peers_html(a: &ArchiveStatus) -> String {
    if a.peers.is_empty() {
        let mut o = format!(
            "<p class=\"peers\">no peer connected ({} known)",
            a.peers_known
        );
        if !a.peer_failures.recent.is_empty() {
            let each: Vec<String> = a
                .peer_failures
                .recent
                .iter()
                .map(|(addr, why)| format!("<code>{addr}</code> {}", escape(why)))
                .collect();
            o.push_str(&format!("; last failures: {}", each.join("; ")));
        }
        o.push_str("</p>\n");
        return o;
    }
    let peers: Vec<String> = a
        .peers
        .iter()
        .map(|p| format!("<code>{}</code> ({})", p.addr, escape(&p.source)))
        .collect();
    format!(
        "<p class=\"peers\">{} connected ({} known): {}</p>\n",
        count(a.peers.len(), "peer", "peers"),
        a.peers_known,
        peers.join(", ")
    )
}

/// `GET /`.
pub fn html(archives: &[ArchiveStatus], lookups: &[LookupStatus], bytes_served: u64) -> String {
    let mut o = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"2\"><title>btfs-mount</title>\
         <style>body{font-family:sans-serif;margin:1em 2em}section{border-top:1px solid #ccc;\
         padding:.5em 0}code{font-size:90%}td{padding:0 .6em}progress{width:12em}</style>\
         </head><body><h1>btfs-mount</h1>\n",
    );
    o.push_str(&format!(
        "<p>{} open archive{} · {} served over HTTP · <a href=\"/api/status\">JSON</a></p>\n",
        archives.len(),
        if archives.len() == 1 { "" } else { "s" },
        human(bytes_served)
    ));
    for a in archives {
        let seg = a.name.segment();
        o.push_str(&format!(
            "<section class=\"archive\" id=\"{ih}\"><h2><a href=\"/bt/{seg}/\">{title}</a></h2>\n\
             <p>info-hash <code>{ih}</code>{seq}<br>{name}\
             ↓ {down}/s · ↑ {up}/s · {done} of {size} verified · {readers} reading</p>\n",
            ih = a.info_hash,
            seg = escape(&seg),
            title = escape(&a.title),
            seq = match a.seq {
                Some(s) => format!(" · seq {s}"),
                None => String::new(),
            },
            name = if a.name.is_mutable() {
                format!("mutable <code>{}</code><br>", escape(&seg))
            } else {
                String::new()
            },
            down = human(a.download_rate),
            up = human(a.upload_rate),
            done = human(a.verified),
            size = human(a.size),
            readers = a.readers,
        ));
        o.push_str(&peers_html(a));
        o.push_str("<table>\n");
        for f in &a.files {
            o.push_str(&format!(
                "<tr><td>{path}</td><td><progress max=\"{size}\" value=\"{v}\"></progress></td>\
                 <td>{pct}%</td><td>{hs}</td></tr>\n",
                path = escape(&f.path),
                size = f.size.max(1),
                v = f.verified,
                pct = (f.verified * 100).checked_div(f.size).unwrap_or(100),
                hs = human(f.size),
            ));
        }
        o.push_str("</table>\n");
        if a.num_files > a.files.len() {
            o.push_str(&format!(
                "<p>... and {} more</p>\n",
                count(a.num_files - a.files.len(), "file", "files")
            ));
        }
        o.push_str("</section>\n");
    }
    for l in lookups {
        o.push_str(&lookup_html(l));
    }
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(name: Name, peers: usize, failures: usize) -> ArchiveStatus {
        let addr = |i: u8| std::net::SocketAddr::from(([192, 0, 2, i], 6881));
        ArchiveStatus {
            name,
            info_hash: crate::InfoHash([0xab; 20]),
            title: "site <1>".into(),
            magnet: format!("magnet:?xt=urn:btih:{}", "ab".repeat(20)),
            seq: None,
            peers: (1..=peers as u8)
                .map(|i| crate::swarm::PeerInfo {
                    addr: addr(i),
                    source: "dht".into(),
                })
                .collect(),
            peers_known: 3,
            peer_failures: crate::swarm::PeerFailures {
                recent: (10..10 + failures as u8)
                    .map(|i| (addr(i), "refused the connection".to_string()))
                    .collect(),
                peers: failures,
            },
            download_rate: 0,
            upload_rate: 0,
            downloaded: 0,
            uploaded: 0,
            readers: 0,
            files: Vec::new(),
            num_files: 1,
            size: 1,
            verified: 0,
        }
    }

    #[test]
    fn no_peer_connected_says_none_and_why() {
        let ih = Name::InfoHash(crate::InfoHash([0xab; 20]));
        let page = html(&[archive(ih.clone(), 0, 0)], &[], 0);
        assert!(
            page.contains("<p class=\"peers\">no peer connected (3 known)</p>"),
            "{page}"
        );
        let page = html(&[archive(ih.clone(), 0, 2)], &[], 0);
        assert!(
            page.contains(
                "no peer connected (3 known); last failures: <code>192.0.2.10:6881</code> \
                 refused the connection; <code>192.0.2.11:6881</code> refused the connection</p>"
            ),
            "{page}"
        );
        let page = html(&[archive(ih.clone(), 1, 1)], &[], 0);
        assert!(
            page.contains("1 peer connected (3 known): <code>192.0.2.1:6881</code> (dht)</p>"),
            "{page}"
        );
        let page = html(&[archive(ih, 2, 0)], &[], 0);
        assert!(page.contains("2 peers connected (3 known): "), "{page}");
    }

    #[test]
    fn json_names_the_torrent_and_keys_apart() {
        let ih = Name::InfoHash(crate::InfoHash([0xab; 20]));
        let j: serde_json::Value =
            serde_json::from_str(&json(&[archive(ih, 0, 1)], &[], 0)).unwrap();
        let a = &j["archives"][0];
        assert_eq!(a["name"], "site <1>");
        assert_eq!(a["info_hash"], "ab".repeat(20));
        assert_eq!(a["url"], format!("/bt/{}/", "ab".repeat(20)));
        assert!(a["public_key"].is_null() && a["salt"].is_null());
        assert_eq!(a["peer_failures"][0]["addr"], "192.0.2.10:6881");
        assert_eq!(a["peer_failures"][0]["why"], "refused the connection");
        let m = Name::Mutable {
            public_key: [0xcd; 32],
            salt: b"s".to_vec(),
        };
        let j: serde_json::Value =
            serde_json::from_str(&json(&[archive(m, 0, 0)], &[], 0)).unwrap();
        let a = &j["archives"][0];
        assert_eq!(a["name"], "site <1>");
        assert_eq!(a["public_key"], "cd".repeat(32));
        assert_eq!(a["salt"], "73");
        assert_eq!(a["url"], format!("/bt/{}.73/", "cd".repeat(32)));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(5), "5 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }

    #[test]
    fn names_being_looked_up_or_failed_are_shown() {
        use std::time::Duration;
        let ih = Name::parse(&"cd".repeat(20)).unwrap();
        let lookups = [
            LookupStatus {
                name: ih.clone(),
                state: LookupState::Failed(
                    Duration::from_secs(3),
                    "metadata not found within 5 s: <why>".into(),
                ),
            },
            LookupStatus {
                name: Name::parse(&"ef".repeat(20)).unwrap(),
                state: LookupState::Resolving(Duration::from_millis(1500)),
            },
        ];
        let page = html(&[], &lookups, 0);
        assert!(page.contains("lookup failed 3 s ago: metadata not found within 5 s: &lt;why&gt;"));
        assert!(page.contains(&format!(
            "<code>{}</code>: looking for peers",
            "ef".repeat(20)
        )));
        let j: serde_json::Value = serde_json::from_str(&json(&[], &lookups, 0)).unwrap();
        assert_eq!(j["lookups"][0]["url"], format!("/bt/{}/", "cd".repeat(20)));
        assert_eq!(j["lookups"][0]["state"], "failed");
        assert_eq!(j["lookups"][0]["seconds"], 3.0);
        assert_eq!(j["lookups"][1]["state"], "resolving");
        assert_eq!(j["lookups"][1]["seconds"], 1.5);
        assert!(j["lookups"][1]["error"].is_null());
    }
}
