//! KRPC messages (BEP 5, section "KRPC Protocol"): decode from and encode to
//! single UDP datagrams, with the extension keys of BEP 42 (`ip`), BEP 43
//! (`ro`), BEP 44 (`get`/`put`) and BEP 32 (`nodes6`, `want`, 18-byte
//! `values`).
//!
//! Decoding is lenient where other clients differ (unsorted dictionary keys,
//! unknown keys, transaction ids of any length up to [`MAX_TID_LEN`]) and
//! strict where a wrong value would mislead us (20-byte ids, 32-byte keys,
//! 64-byte signatures). It never panics: anything else is a [`DecodeError`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bencode::{self, Kind, Limits, Owned, Value};

/// Longest transaction id we echo (bytes). Longer ones are dropped.
pub const MAX_TID_LEN: usize = 32;
/// Largest datagram we accept (bytes). A BEP 44 `put` with a 1000-byte `v`,
/// a 64-byte salt, a key, a signature and a token fits comfortably.
pub const MAX_DATAGRAM: usize = 2048;
/// Limits for decoding a datagram: nesting and tokens are bounded by size.
pub const LIMITS: Limits = Limits {
    max_depth: 64,
    max_tokens: 4096,
};

/// A 20-byte node id, info-hash or BEP 44 target.
pub type Id = [u8; 20];

/// A node as carried in compact node info (BEP 5: 26 bytes for IPv4; BEP 32:
/// 38 bytes for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeInfo {
    /// The node's 160-bit id.
    pub id: Id,
    /// Where it receives KRPC datagrams.
    pub addr: SocketAddr,
}

/// Arguments of a BEP 44 `put`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PutArgs {
    /// Write token from a previous `get` to this node.
    pub token: Vec<u8>,
    /// The raw bencoded value (any type).
    pub v: Vec<u8>,
    /// Mutable items: the ed25519 public key.
    pub k: Option<[u8; 32]>,
    /// Mutable items: the signature over the buffer of BEP 44.
    pub sig: Option<[u8; 64]>,
    /// Mutable items: the sequence number.
    pub seq: Option<i64>,
    /// Mutable items: the salt (empty when absent).
    pub salt: Vec<u8>,
    /// Mutable items: compare-and-swap, the sequence number expected to be
    /// stored now.
    pub cas: Option<i64>,
}

/// BEP 32 `want`: which address families of nodes the querier wants in the
/// answer of a `find_node`, `get_peers` or BEP 44 `get` (`n4`: `nodes`,
/// compact 26-byte IPv4 entries; `n6`: `nodes6`, 38-byte IPv6 entries).
/// Neither set means the key is absent: the responder answers with nodes
/// of the family the query came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Want {
    /// `n4`: IPv4 nodes wanted.
    pub n4: bool,
    /// `n6`: IPv6 nodes wanted.
    pub n6: bool,
}

impl Want {
    /// Both families (`want = ["n4", "n6"]`).
    pub const BOTH: Want = Want { n4: true, n6: true };

    /// Whether the key is absent (neither family named).
    pub fn is_absent(&self) -> bool {
        !self.n4 && !self.n6
    }

    /// The families to answer with for a query that came in over IPv4
    /// (`v4 = true`) or IPv6: the ones asked for, else that family (BEP 32).
    /// Returns `(ipv4 nodes, ipv6 nodes)`.
    pub fn families(&self, v4: bool) -> (bool, bool) {
        if self.is_absent() {
            (v4, !v4)
        } else {
            (self.n4, self.n6)
        }
    }

    /// Reads a `want` value: a list of strings; unknown entries (and
    /// anything that is not a list of strings) are ignored.
    fn decode(v: Option<&Value<'_>>) -> Want {
        let mut w = Want::default();
        if let Some(Kind::List(l)) = v.map(|v| &v.kind) {
            for e in l.iter().take(8) {
                match e.as_bytes() {
                    Some(b"n4") => w.n4 = true,
                    Some(b"n6") => w.n6 = true,
                    _ => {}
                }
            }
        }
        w
    }

    fn encode(&self) -> Owned {
        let mut l = Vec::new();
        if self.n4 {
            l.push(Owned::from("n4"));
        }
        if self.n6 {
            l.push(Owned::from("n6"));
        }
        Owned::List(l)
    }
}

/// A query (`y = q`) and its method-specific arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// BEP 5 `ping`.
    Ping,
    /// BEP 5 `find_node`.
    FindNode { target: Id },
    /// BEP 5 `get_peers`.
    GetPeers { info_hash: Id },
    /// BEP 5 `announce_peer`; `implied_port` means "use the source port".
    AnnouncePeer {
        info_hash: Id,
        port: u16,
        implied_port: bool,
        token: Vec<u8>,
    },
    /// BEP 44 `get`; with `seq`, the value is only wanted if newer.
    Get { target: Id, seq: Option<i64> },
    /// BEP 44 `put`.
    Put(PutArgs),
}

impl Query {
    /// The method name sent in `q`.
    pub fn method(&self) -> &'static str {
        match self {
            Query::Ping => "ping",
            Query::FindNode { .. } => "find_node",
            Query::GetPeers { .. } => "get_peers",
            Query::AnnouncePeer { .. } => "announce_peer",
            Query::Get { .. } => "get",
            Query::Put(_) => "put",
        }
    }
}

/// A response (`y = r`). Every method's reply keys are parsed; absent ones
/// are empty or `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// The responder's id.
    pub id: Id,
    /// Closer nodes (`nodes` and `nodes6` merged).
    pub nodes: Vec<NodeInfo>,
    /// Peers for a `get_peers` (compact 6- or 18-byte entries).
    pub values: Vec<SocketAddr>,
    /// Write token (`get_peers`, BEP 44 `get`).
    pub token: Option<Vec<u8>>,
    /// BEP 44: the raw bencoded stored value.
    pub v: Option<Vec<u8>>,
    /// BEP 44: public key of a mutable item.
    pub k: Option<[u8; 32]>,
    /// BEP 44: signature of a mutable item.
    pub sig: Option<[u8; 64]>,
    /// BEP 44: sequence number of a mutable item.
    pub seq: Option<i64>,
}

/// What a message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A query from the node with id `id`; `want` (BEP 32) is read for any
    /// method and sent when not absent.
    Query { id: Id, query: Query, want: Want },
    /// A response to one of our queries.
    Response(Response),
    /// An error reply: code (201 generic, 202 server, 203 protocol, 204
    /// method unknown; BEP 44: 205, 206, 207, 301, 302) and message.
    Error { code: i64, message: String },
}

/// One KRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Transaction id, echoed exactly in the reply (1..=32 bytes).
    pub tid: Vec<u8>,
    /// The query, response or error.
    pub body: Body,
    /// BEP 42: the requester's address as seen by the responder (`ip`).
    pub ip: Option<SocketAddr>,
    /// BEP 43: the sender is read-only (`ro = 1`).
    pub read_only: bool,
}

/// Why a datagram was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a KRPC message we can answer: drop it silently.
    #[error("malformed KRPC datagram: {0}")]
    Malformed(&'static str),
    /// A query we can identify but not serve: answer with this error.
    #[error("KRPC error {code}: {message}")]
    Reply {
        tid: Vec<u8>,
        code: i64,
        message: &'static str,
    },
}

fn fixed<const N: usize>(v: Option<&Value<'_>>) -> Option<[u8; N]> {
    v?.as_bytes()?.try_into().ok()
}

/// Parses compact node info: 26-byte (v4) or 38-byte (v6) entries. A string
/// whose length is not a multiple is ignored whole.
pub fn parse_nodes(b: &[u8], v6: bool, out: &mut Vec<NodeInfo>) {
    let n = if v6 { 38 } else { 26 };
    if b.len() % n != 0 {
        return;
    }
    for c in b.chunks_exact(n) {
        let mut id = [0u8; 20];
        id.copy_from_slice(&c[..20]);
        if let Some(addr) = parse_compact_addr(&c[20..]) {
            out.push(NodeInfo { id, addr });
        }
    }
}

/// Compact address: 6 bytes (IPv4 + port) or 18 bytes (IPv6 + port), big
/// endian (BEP 5, BEP 32).
pub fn parse_compact_addr(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => {
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([b[4], b[5]]),
            ))
        }
        18 => {
            let o: [u8; 16] = b[..16].try_into().ok()?;
            Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(o)),
                u16::from_be_bytes([b[16], b[17]]),
            ))
        }
        _ => None,
    }
}

/// The compact form of `addr` (6 or 18 bytes).
pub fn compact_addr(addr: &SocketAddr) -> Vec<u8> {
    let mut out = match addr.ip() {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    };
    out.extend_from_slice(&addr.port().to_be_bytes());
    out
}

/// Decodes one datagram. `Err(Malformed)` must be dropped; `Err(Reply)`
/// should be answered with an error message.
pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
    use DecodeError::Malformed;
    if buf.len() > MAX_DATAGRAM {
        return Err(Malformed("datagram too large"));
    }
    let root = bencode::decode(buf, LIMITS).map_err(|_| Malformed("not bencode"))?;
    if root.as_dict().is_none() {
        return Err(Malformed("not a dictionary"));
    }
    let tid = root
        .get(b"t")
        .and_then(|t| t.as_bytes())
        .ok_or(Malformed("no transaction id"))?;
    if tid.is_empty() || tid.len() > MAX_TID_LEN {
        return Err(Malformed("bad transaction id length"));
    }
    let tid = tid.to_vec();
    let y = root
        .get(b"y")
        .and_then(|y| y.as_bytes())
        .ok_or(Malformed("no message type"))?;
    let ip = root
        .get(b"ip")
        .and_then(|v| v.as_bytes())
        .and_then(parse_compact_addr);
    let read_only = root.get(b"ro").and_then(|v| v.as_int()) == Some(1);
    let body = match y {
        b"q" => decode_query(&root, &tid)?,
        b"r" => {
            let r = root.get(b"r").ok_or(Malformed("response without r"))?;
            Body::Response(decode_response(r).ok_or(Malformed("bad response"))?)
        }
        b"e" => {
            let e = root.get(b"e").and_then(|e| e.as_list());
            let code = e
                .and_then(|l| l.first())
                .and_then(|c| c.as_int())
                .unwrap_or(201);
            let message = e
                .and_then(|l| l.get(1))
                .and_then(|m| m.as_bytes())
                .map(|m| String::from_utf8_lossy(m).into_owned())
                .unwrap_or_default();
            Body::Error { code, message }
        }
        _ => return Err(Malformed("unknown message type")),
    };
    Ok(Message {
        tid,
        body,
        ip,
        read_only,
    })
}

fn decode_query(root: &Value<'_>, tid: &[u8]) -> Result<Body, DecodeError> {
    let err = |code, message| DecodeError::Reply {
        tid: tid.to_vec(),
        code,
        message,
    };
    let method = root
        .get(b"q")
        .and_then(|q| q.as_bytes())
        .ok_or(err(203, "missing method"))?;
    let a = root.get(b"a").ok_or(err(203, "missing arguments"))?;
    if a.as_dict().is_none() {
        return Err(err(203, "arguments are not a dictionary"));
    }
    let id: Id = fixed(a.get(b"id")).ok_or(err(203, "missing or bad id"))?;
    let id20 = |key: &[u8]| -> Option<Id> { fixed(a.get(key)) };
    let query = match method {
        b"ping" => Query::Ping,
        b"find_node" => Query::FindNode {
            target: id20(b"target").ok_or(err(203, "missing or bad target"))?,
        },
        b"get_peers" => Query::GetPeers {
            info_hash: id20(b"info_hash").ok_or(err(203, "missing or bad info_hash"))?,
        },
        b"announce_peer" => {
            let info_hash = id20(b"info_hash").ok_or(err(203, "missing or bad info_hash"))?;
            let implied_port = a.get(b"implied_port").and_then(|v| v.as_int()) == Some(1);
            let port = a.get(b"port").and_then(|v| v.as_int());
            let port = match (port, implied_port) {
                (Some(p), _) if (1..=65535).contains(&p) => p as u16,
                (_, true) => 0,
                _ => return Err(err(203, "missing or bad port")),
            };
            let token = a
                .get(b"token")
                .and_then(|v| v.as_bytes())
                .ok_or(err(203, "missing token"))?
                .to_vec();
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            }
        }
        b"get" => Query::Get {
            target: id20(b"target").ok_or(err(203, "missing or bad target"))?,
            seq: a.get(b"seq").and_then(|v| v.as_int()),
        },
        b"put" => {
            let token = a
                .get(b"token")
                .and_then(|v| v.as_bytes())
                .ok_or(err(203, "missing token"))?
                .to_vec();
            let v = a.get(b"v").ok_or(err(203, "missing v"))?.raw.to_vec();
            let k = match a.get(b"k") {
                None => None,
                Some(k) => Some(fixed(Some(k)).ok_or(err(203, "bad k"))?),
            };
            let sig = match a.get(b"sig") {
                None => None,
                Some(s) => Some(fixed(Some(s)).ok_or(err(206, "invalid signature"))?),
            };
            let salt = match a.get(b"salt") {
                None => Vec::new(),
                Some(s) => s.as_bytes().ok_or(err(203, "bad salt"))?.to_vec(),
            };
            Query::Put(PutArgs {
                token,
                v,
                k,
                sig,
                seq: a.get(b"seq").and_then(|v| v.as_int()),
                salt,
                cas: a.get(b"cas").and_then(|v| v.as_int()),
            })
        }
        _ => return Err(err(204, "method unknown")),
    };
    let want = Want::decode(a.get(b"want"));
    Ok(Body::Query { id, query, want })
}

fn decode_response(r: &Value<'_>) -> Option<Response> {
    r.as_dict()?;
    let id: Id = fixed(r.get(b"id"))?;
    let mut nodes = Vec::new();
    if let Some(b) = r.get(b"nodes").and_then(|v| v.as_bytes()) {
        parse_nodes(b, false, &mut nodes);
    }
    if let Some(b) = r.get(b"nodes6").and_then(|v| v.as_bytes()) {
        parse_nodes(b, true, &mut nodes);
    }
    let values = match r.get(b"values").map(|v| &v.kind) {
        Some(Kind::List(l)) => l
            .iter()
            .filter_map(|v| v.as_bytes().and_then(parse_compact_addr))
            .collect(),
        _ => Vec::new(),
    };
    Some(Response {
        id,
        nodes,
        values,
        token: r
            .get(b"token")
            .and_then(|v| v.as_bytes())
            .map(|t| t.to_vec()),
        v: r.get(b"v").map(|v| v.raw.to_vec()),
        k: fixed(r.get(b"k")),
        sig: fixed(r.get(b"sig")),
        seq: r.get(b"seq").and_then(|v| v.as_int()),
    })
}

/// Compact node info for `nodes` (IPv4 entries) and `nodes6` (IPv6 entries).
pub fn compact_nodes(nodes: &[NodeInfo]) -> (Vec<u8>, Vec<u8>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for n in nodes {
        let out = if n.addr.is_ipv4() { &mut v4 } else { &mut v6 };
        out.extend_from_slice(&n.id);
        out.extend_from_slice(&compact_addr(&n.addr));
    }
    (v4, v6)
}

impl Message {
    /// The bencoded datagram (keys sorted). `version` is our client version
    /// (`v`, BEP 5), sent on every message.
    pub fn encode(&self) -> Vec<u8> {
        let mut root = Owned::dict()
            .insert("t", self.tid.clone())
            .insert("v", &b"BF01"[..]);
        if let Some(ip) = &self.ip {
            root = root.insert("ip", compact_addr(ip));
        }
        if self.read_only {
            root = root.insert("ro", 1);
        }
        match &self.body {
            Body::Query { id, query, want } => {
                let mut a = encode_args(id, query);
                if !want.is_absent() {
                    a = a.insert("want", want.encode());
                }
                root = root
                    .insert("y", "q")
                    .insert("q", query.method())
                    .insert("a", a);
            }
            Body::Response(r) => {
                root = root.insert("y", "r").insert("r", encode_response(r));
            }
            Body::Error { code, message } => {
                root = root.insert("y", "e").insert(
                    "e",
                    Owned::List(vec![Owned::Int(*code), Owned::from(message.as_str())]),
                );
            }
        }
        root.encode()
    }
}

fn encode_args(id: &Id, q: &Query) -> Owned {
    let a = Owned::dict().insert("id", id);
    match q {
        Query::Ping => a,
        Query::FindNode { target } => a.insert("target", target),
        Query::GetPeers { info_hash } => a.insert("info_hash", info_hash),
        Query::AnnouncePeer {
            info_hash,
            port,
            implied_port,
            token,
        } => a
            .insert("info_hash", info_hash)
            .insert("port", *port as i64)
            .insert("implied_port", *implied_port as i64)
            .insert("token", token.clone()),
        Query::Get { target, seq } => {
            let a = a.insert("target", target);
            match seq {
                Some(s) => a.insert("seq", *s),
                None => a,
            }
        }
        Query::Put(p) => {
            let mut a = a
                .insert("token", p.token.clone())
                .insert("v", Owned::Raw(p.v.clone()));
            if let Some(k) = &p.k {
                a = a.insert("k", k);
            }
            if let Some(sig) = &p.sig {
                a = a.insert("sig", sig);
            }
            if let Some(seq) = p.seq {
                a = a.insert("seq", seq);
            }
            if !p.salt.is_empty() {
                a = a.insert("salt", p.salt.clone());
            }
            if let Some(cas) = p.cas {
                a = a.insert("cas", cas);
            }
            a
        }
    }
}

fn encode_response(r: &Response) -> Owned {
    let mut d = Owned::dict().insert("id", &r.id);
    let (v4, v6) = compact_nodes(&r.nodes);
    if !v4.is_empty() {
        d = d.insert("nodes", v4);
    }
    if !v6.is_empty() {
        d = d.insert("nodes6", v6);
    }
    if !r.values.is_empty() {
        d = d.insert(
            "values",
            Owned::List(
                r.values
                    .iter()
                    .map(|a| Owned::Bytes(compact_addr(a)))
                    .collect(),
            ),
        );
    }
    if let Some(t) = &r.token {
        d = d.insert("token", t.clone());
    }
    if let Some(v) = &r.v {
        d = d.insert("v", Owned::Raw(v.clone()));
    }
    if let Some(k) = &r.k {
        d = d.insert("k", k);
    }
    if let Some(sig) = &r.sig {
        d = d.insert("sig", sig);
    }
    if let Some(seq) = r.seq {
        d = d.insert("seq", seq);
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bep5_ping_example_and_two_byte_tid() {
        let q = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
        let m = decode(q).unwrap();
        assert_eq!(m.tid, b"aa");
        assert_eq!(
            m.body,
            Body::Query {
                id: *b"abcdefghij0123456789",
                query: Query::Ping,
                want: Want::default(),
            }
        );
        let r = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re";
        let m = decode(r).unwrap();
        match m.body {
            Body::Response(r) => assert_eq!(&r.id, b"mnopqrstuvwxyz123456"),
            b => panic!("{b:?}"),
        }
    }

    #[test]
    fn unsorted_keys_unknown_keys_and_long_tids() {
        // y before t, a before q, an unknown key, a 9-byte tid.
        let q = b"d1:y1:q1:t9:1234567891:ad9:info_hash20:mnopqrstuvwxyz1234562:id20:abcdefghij0123456789e1:q9:get_peers5:extrad1:zi1eee";
        let m = decode(q).unwrap();
        assert_eq!(m.tid, b"123456789");
        assert_eq!(
            m.body,
            Body::Query {
                id: *b"abcdefghij0123456789",
                query: Query::GetPeers {
                    info_hash: *b"mnopqrstuvwxyz123456"
                },
                want: Want::default(),
            }
        );
        // 33-byte tid is dropped, 32 accepted.
        let mk = |n: usize| {
            let mut b = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t".to_vec();
            b.extend_from_slice(format!("{n}:").as_bytes());
            b.extend(std::iter::repeat_n(b'x', n));
            b.extend_from_slice(b"1:y1:qe");
            b
        };
        assert_eq!(decode(&mk(32)).unwrap().tid.len(), 32);
        assert!(matches!(decode(&mk(33)), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn round_trips() {
        let msgs = vec![
            Message {
                tid: vec![1, 2],
                body: Body::Query {
                    id: [3; 20],
                    query: Query::AnnouncePeer {
                        info_hash: [4; 20],
                        port: 6881,
                        implied_port: true,
                        token: b"tok".to_vec(),
                    },
                    want: Want::default(),
                },
                ip: None,
                read_only: true,
            },
            Message {
                tid: vec![9; 4],
                body: Body::Query {
                    id: [3; 20],
                    query: Query::Put(PutArgs {
                        token: vec![1],
                        v: b"d2:ih20:aaaaaaaaaaaaaaaaaaaae".to_vec(),
                        k: Some([5; 32]),
                        sig: Some([6; 64]),
                        seq: Some(4),
                        salt: b"s".to_vec(),
                        cas: Some(3),
                    }),
                    want: Want::default(),
                },
                ip: None,
                read_only: false,
            },
            Message {
                tid: vec![7],
                body: Body::Response(Response {
                    id: [1; 20],
                    nodes: vec![
                        NodeInfo {
                            id: [2; 20],
                            addr: ip("127.0.0.1:5"),
                        },
                        NodeInfo {
                            id: [3; 20],
                            addr: ip("[::1]:6"),
                        },
                    ],
                    values: vec![ip("10.0.0.1:80"), ip("[fe80::1]:81")],
                    token: Some(b"t".to_vec()),
                    v: Some(b"li1ee".to_vec()),
                    k: Some([8; 32]),
                    sig: Some([9; 64]),
                    seq: Some(-1),
                }),
                ip: Some(ip("1.2.3.4:5")),
                read_only: false,
            },
            Message {
                tid: vec![7, 7],
                body: Body::Error {
                    code: 302,
                    message: "sequence number less than current".into(),
                },
                ip: None,
                read_only: false,
            },
        ];
        for m in msgs {
            let enc = m.encode();
            assert!(bencode::decode(&enc, LIMITS).unwrap().is_canonical());
            assert_eq!(decode(&enc).unwrap(), m);
        }
    }

    #[test]
    fn errors_and_garbage() {
        for bad in [
            &b""[..],
            b"de",
            b"l1:te",
            b"d1:t0:1:y1:qe",
            b"d1:t2:aa1:y1:xe",
            b"d1:t2:aa1:y1:re",
            b"d1:t2:aa1:y1:rd2:id3:abcee",
            b"i1e",
            b"d1:t2:aa1:y1:q1:q4:pinge1:a",
        ] {
            assert!(
                matches!(decode(bad), Err(DecodeError::Malformed(_))),
                "{bad:?}"
            );
        }
        let big = vec![b'x'; MAX_DATAGRAM + 1];
        assert!(decode(&big).is_err());
        let unknown = b"d1:ad2:id20:abcdefghij0123456789e1:q5:hello1:t2:ab1:y1:qe";
        assert_eq!(
            decode(unknown),
            Err(DecodeError::Reply {
                tid: b"ab".to_vec(),
                code: 204,
                message: "method unknown"
            })
        );
        let no_target = b"d1:ad2:id20:abcdefghij0123456789e1:q9:find_node1:t2:ab1:y1:qe";
        assert!(matches!(
            decode(no_target),
            Err(DecodeError::Reply { code: 203, .. })
        ));
        let e = decode(b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee").unwrap();
        assert_eq!(
            e.body,
            Body::Error {
                code: 201,
                message: "A Generic Error Ocurred".into()
            }
        );
    }

    #[test]
    fn bep32_want_is_read_sent_and_answered() {
        // BEP 32's example: find_node with want = ["n4", "n6"].
        let q = b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz1234564:wantl2:n42:n6ee1:q9:find_node1:t2:aa1:y1:qe";
        let m = decode(q).unwrap();
        let Body::Query { want, .. } = &m.body else {
            panic!("{m:?}")
        };
        assert_eq!(*want, Want::BOTH);
        assert_eq!(decode(&m.encode()).unwrap(), m);
        // Only n6; unknown entries and a non-list are ignored.
        let q6 = b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz1234564:wantl2:n62:n9i4eee1:q9:get_peers1:t2:aa1:y1:qe";
        let Body::Query { want, .. } = decode(q6).unwrap().body else {
            panic!()
        };
        assert_eq!(
            want,
            Want {
                n4: false,
                n6: true
            }
        );
        let bad = b"d1:ad2:id20:abcdefghij01234567894:want2:n4e1:q4:ping1:t2:aa1:y1:qe";
        let Body::Query { want, .. } = decode(bad).unwrap().body else {
            panic!()
        };
        assert!(want.is_absent());
        // Absent: the family the query came in on; else what was asked.
        assert_eq!(Want::default().families(true), (true, false));
        assert_eq!(Want::default().families(false), (false, true));
        assert_eq!(Want::BOTH.families(true), (true, true));
        let n6 = Want {
            n4: false,
            n6: true,
        };
        assert_eq!(n6.families(true), (false, true));
    }

    #[test]
    fn nodes6_and_peers6_round_trip_in_their_keys() {
        // An IPv6 answer: 38-byte nodes in `nodes6`, 18-byte peers in
        // `values` (BEP 32, BEP 7's compact IPv6 peer form).
        let n6 = NodeInfo {
            id: [0xaa; 20],
            addr: ip("[2001:db8::1]:6881"),
        };
        let n4 = NodeInfo {
            id: [0xbb; 20],
            addr: ip("192.0.2.1:6881"),
        };
        let r = Message {
            tid: b"aa".to_vec(),
            body: Body::Response(Response {
                id: [1; 20],
                nodes: vec![n4, n6],
                values: vec![ip("[2001:db8::2]:51413")],
                token: Some(b"tk".to_vec()),
                ..Default::default()
            }),
            ip: None,
            read_only: false,
        };
        let enc = r.encode();
        let root = bencode::decode(&enc, LIMITS).unwrap();
        let rd = root.get(b"r").unwrap();
        let nodes6 = rd.get(b"nodes6").unwrap().as_bytes().unwrap();
        assert_eq!(nodes6.len(), 38);
        assert_eq!(&nodes6[..20], &[0xaa; 20]);
        assert_eq!(
            &nodes6[20..36],
            &"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&nodes6[36..], &6881u16.to_be_bytes());
        assert_eq!(rd.get(b"nodes").unwrap().as_bytes().unwrap().len(), 26);
        let Some(Kind::List(values)) = rd.get(b"values").map(|v| &v.kind) else {
            panic!()
        };
        let peer = values[0].as_bytes().unwrap();
        assert_eq!(peer.len(), 18);
        assert_eq!(&peer[16..], &51413u16.to_be_bytes());
        assert_eq!(decode(&enc).unwrap(), r);
        // A nodes6 string whose length is not a multiple of 38 is ignored.
        let mut out = Vec::new();
        parse_nodes(&[0u8; 39], true, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn compact_nodes_with_bad_length_are_ignored() {
        let mut out = Vec::new();
        parse_nodes(&[0u8; 27], false, &mut out);
        assert!(out.is_empty());
        parse_nodes(&[1u8; 52], false, &mut out);
        assert_eq!(out.len(), 2);
    }
}
