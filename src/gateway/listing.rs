//! Directory listings: an HTML page with relative links (so it works under
//! any URL of the archive, mutable or not), or JSON when the client asks
//! for `application/json` in `Accept`.
//!
//! JSON shape:
//! `{"name": "<segment>", "info_hash": "<40 hex>", "path": "a/b",
//!   "entries": [{"name": "x", "type": "file"|"dir"|"symlink", "size": N,
//!   "verified": N}]}` (sizes and verified bytes in bytes).

use crate::archive::{Archive, NodeId, NodeKind};
use crate::manager::Name;

use super::addr::encode_segment;

/// One listed entry.
struct Entry<'a> {
    name: &'a str,
    kind: &'static str,
    size: u64,
    verified: u64,
}

fn entries(archive: &Archive, dir: NodeId) -> Vec<Entry<'_>> {
    let tree = archive.tree();
    let NodeKind::Dir(ch) = &tree.nodes[dir].kind else {
        return Vec::new();
    };
    ch.iter()
        .map(|(name, &c)| {
            let (kind, size) = match &tree.nodes[c].kind {
                NodeKind::Dir(_) => ("dir", 0),
                NodeKind::File { size, .. } => ("file", *size),
                NodeKind::Symlink(t) => ("symlink", t.len() as u64),
            };
            let verified = match kind {
                "file" => archive.node_progress(c).map_or(0, |p| p.0),
                _ => 0,
            };
            Entry {
                name,
                kind,
                size,
                verified,
            }
        })
        .collect()
}

/// Whether an `Accept` header value prefers JSON.
pub fn wants_json(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .any(|t| t.split(';').next().unwrap_or("").trim() == "application/json")
    })
}

/// The JSON listing of directory node `dir` at `path`.
pub fn json(name: &Name, archive: &Archive, dir: NodeId, path: &str) -> String {
    let list: Vec<serde_json::Value> = entries(archive, dir)
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name, "type": e.kind, "size": e.size, "verified": e.verified,
            })
        })
        .collect();
    serde_json::json!({
        "name": name.segment(),
        "info_hash": archive.info_hash().to_hex(),
        "path": path,
        "entries": list,
    })
    .to_string()
}

/// The HTML listing of directory node `dir` at `path`.
pub fn html(name: &Name, archive: &Archive, dir: NodeId, path: &str) -> String {
    let title = format!("/{}", path);
    let mut out = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif}}td{{padding:0 1em}}td.n{{text-align:right}}</style>\
         </head><body><h1>{t}</h1><p>{n} · <a href=\"/\">status</a></p><table>\n",
        t = escape(&title),
        n = escape(&format!("{} ({})", archive.info().name, name.segment())),
    );
    if !path.is_empty() {
        out.push_str("<tr><td><a href=\"../\">../</a></td><td></td></tr>\n");
    }
    for e in entries(archive, dir) {
        let slash = if e.kind == "dir" { "/" } else { "" };
        out.push_str(&format!(
            "<tr><td><a href=\"./{href}{slash}\">{name}{slash}</a></td><td class=\"n\">{size}</td>\
             <td class=\"n\">{pct}</td></tr>\n",
            href = escape(&encode_segment(e.name)),
            name = escape(e.name),
            size = if e.kind == "dir" {
                String::new()
            } else {
                e.size.to_string()
            },
            pct = if e.kind == "file" && e.size > 0 {
                format!("{}%", e.verified * 100 / e.size)
            } else {
                String::new()
            },
        ));
    }
    out.push_str("</table></body></html>\n");
    out
}

/// Escapes text for HTML element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_and_escapes() {
        assert!(wants_json(Some("application/json")));
        assert!(wants_json(Some("text/html;q=0.5, application/json;q=0.9")));
        assert!(!wants_json(Some("text/html,*/*")));
        assert!(!wants_json(None));
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
