//! The status page (`GET /`, HTML that refreshes itself every 2 s) and its
//! JSON twin (`GET /api/status`): each open archive with its name,
//! info-hash, BEP 46 seq, peers and where each came from, download and
//! upload rates, and a progress bar per file.
//!
//! JSON shape: `{"archives": [{"name": "<segment>", "url": "/bt/<segment>/",
//! "magnet": "...", "info_hash": "<40 hex>", "title": "...", "seq": N|null,
//! "peers": [{"addr": "ip:port", "source": "dht"}], "peers_known": N,
//! "download_rate": B/s, "upload_rate": B/s, "downloaded": B,
//! "uploaded": B, "readers": N, "size": B, "verified": B, "num_files": N,
//! "files": [{"path": "a/b", "size": B, "verified": B}]}],
//! "bytes_served": B}`.

use crate::manager::ArchiveStatus;

use super::listing::escape;

/// The JSON of one archive.
fn archive_json(a: &ArchiveStatus) -> serde_json::Value {
    serde_json::json!({
        "name": a.name.segment(),
        "url": format!("/bt/{}/", a.name.segment()),
        "magnet": a.name.url(),
        "info_hash": a.info_hash.to_hex(),
        "title": a.title,
        "seq": a.seq,
        "peers": a.peers.iter().map(|p| serde_json::json!({
            "addr": p.addr.to_string(), "source": p.source,
        })).collect::<Vec<_>>(),
        "peers_known": a.peers_known,
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

/// `GET /api/status`.
pub fn json(archives: &[ArchiveStatus], bytes_served: u64) -> String {
    serde_json::json!({
        "archives": archives.iter().map(archive_json).collect::<Vec<_>>(),
        "bytes_served": bytes_served,
    })
    .to_string()
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

/// `GET /`.
pub fn html(archives: &[ArchiveStatus], bytes_served: u64) -> String {
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
             <p>info-hash <code>{ih}</code>{seq}<br>{name}<br>\
             ↓ {down}/s · ↑ {up}/s · {done} of {size} verified · {readers} reading</p>\n",
            ih = a.info_hash,
            seg = escape(&seg),
            title = escape(&a.title),
            seq = match a.seq {
                Some(s) => format!(" · seq {s}"),
                None => String::new(),
            },
            name = if a.name.is_mutable() {
                format!("mutable <code>{}</code>", escape(&seg))
            } else {
                String::new()
            },
            down = human(a.download_rate),
            up = human(a.upload_rate),
            done = human(a.verified),
            size = human(a.size),
            readers = a.readers,
        ));
        o.push_str(&format!(
            "<p>{} peer{} connected ({} known): ",
            a.peers.len(),
            if a.peers.len() == 1 { "" } else { "s" },
            a.peers_known
        ));
        let peers: Vec<String> = a
            .peers
            .iter()
            .map(|p| format!("<code>{}</code> ({})", p.addr, escape(&p.source)))
            .collect();
        o.push_str(&peers.join(", "));
        o.push_str("</p>\n<table>\n");
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
                "<p>... and {} more files</p>\n",
                a.num_files - a.files.len()
            ));
        }
        o.push_str("</section>\n");
    }
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(5), "5 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
