//! A small STUN server (RFC 5389 Binding, with RFC 5780's CHANGE-REQUEST
//! answered from the other address and/or port) for the simulated internet,
//! and a client for tests.
//!
//! miniupnpd 2.3 needs it: with a WAN address from 203.0.113.0/24, which it
//! counts as reserved, it maps ports only after STUN shows that its WAN
//! address is reachable without filtering. It sends four Binding requests
//! (no change, change port, change IP, change both) and wants all four
//! answered, from the matching address and port. Tests can use [`binding`]
//! to learn how a NAT maps a socket.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// RFC 5389's magic cookie.
const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_CHANGE_REQUEST: u16 = 0x0003;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_RESPONSE_ORIGIN: u16 = 0x802b;
const ATTR_OTHER_ADDRESS: u16 = 0x802c;
/// CHANGE-REQUEST flags (RFC 5780 section 7.2).
const CHANGE_IP: u8 = 0x04;
const CHANGE_PORT: u8 = 0x02;

/// The server: four UDP sockets (two addresses × two ports) served by one
/// thread, stopped and joined on drop.
pub struct StunServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StunServer {
    /// Binds `ips[i]:ports[j]` for all four pairs in the calling thread's
    /// network namespace and serves them from a new thread.
    pub fn start(ips: [Ipv4Addr; 2], ports: [u16; 2]) -> StunServer {
        let mut socks = Vec::new();
        for ip in ips {
            for port in ports {
                let s = UdpSocket::bind((ip, port))
                    .unwrap_or_else(|e| panic!("STUN server: bind {ip}:{port}: {e}"));
                s.set_nonblocking(true).expect("nonblocking");
                socks.push(s);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = thread::Builder::new()
            .name("netsim-stun".into())
            .spawn(move || serve(&socks, ips, ports, &stop2))
            .expect("spawn STUN thread");
        StunServer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StunServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Socket index for address `i` and port `j` (see [`StunServer::start`]).
fn index(i: usize, j: usize) -> usize {
    i * 2 + j
}

fn serve(socks: &[UdpSocket], ips: [Ipv4Addr; 2], ports: [u16; 2], stop: &AtomicBool) {
    let mut buf = [0u8; 1500];
    while !stop.load(Ordering::Relaxed) {
        let mut pfds: Vec<libc::pollfd> = socks
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: pfds is a valid array of pollfd of the given length.
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 50) };
        for (k, sock) in socks.iter().enumerate() {
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let SocketAddr::V4(from) = from else { continue };
                let Some(flags) = parse_request(&buf[..n]) else {
                    continue;
                };
                let (i, j) = (k / 2, k % 2);
                let i = if flags & CHANGE_IP != 0 { 1 - i } else { i };
                let j = if flags & CHANGE_PORT != 0 { 1 - j } else { j };
                let origin = SocketAddrV4::new(ips[i], ports[j]);
                let other = SocketAddrV4::new(ips[1 - i], ports[1 - j]);
                let resp = response(&buf[..n], from, origin, other);
                let _ = socks[index(i, j)].send_to(&resp, from);
            }
        }
    }
}

/// The CHANGE-REQUEST flags of a Binding request (0 without one); None if
/// `msg` is not a Binding request.
fn parse_request(msg: &[u8]) -> Option<u8> {
    if msg.len() < 20 || msg[0..2] != BINDING_REQUEST {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    let body = msg.get(20..20 + len)?;
    let mut flags = 0;
    let mut pos = 0;
    while pos + 4 <= body.len() {
        let ty = u16::from_be_bytes([body[pos], body[pos + 1]]);
        let alen = usize::from(u16::from_be_bytes([body[pos + 2], body[pos + 3]]));
        let val = body.get(pos + 4..pos + 4 + alen)?;
        if ty == ATTR_CHANGE_REQUEST && alen == 4 {
            flags = val[3];
        }
        pos += 4 + alen.div_ceil(4) * 4;
    }
    Some(flags)
}

/// An IPv4 address attribute (family 1), XORed with the cookie if `xor`.
fn addr_attr(out: &mut Vec<u8>, ty: u16, addr: SocketAddrV4, xor: bool) {
    let mut port = addr.port().to_be_bytes();
    let mut ip = addr.ip().octets();
    if xor {
        port[0] ^= COOKIE[0];
        port[1] ^= COOKIE[1];
        for (b, c) in ip.iter_mut().zip(COOKIE) {
            *b ^= c;
        }
    }
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&8u16.to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&port);
    out.extend_from_slice(&ip);
}

/// A Binding success response to `req` telling `from` how it was seen.
fn response(req: &[u8], from: SocketAddrV4, origin: SocketAddrV4, other: SocketAddrV4) -> Vec<u8> {
    let mut body = Vec::new();
    addr_attr(&mut body, ATTR_MAPPED_ADDRESS, from, false);
    addr_attr(&mut body, ATTR_XOR_MAPPED_ADDRESS, from, true);
    addr_attr(&mut body, ATTR_RESPONSE_ORIGIN, origin, false);
    addr_attr(&mut body, ATTR_OTHER_ADDRESS, other, false);
    let mut out = Vec::with_capacity(20 + body.len());
    out.extend_from_slice(&BINDING_SUCCESS);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&req[4..20]); // cookie and transaction id, echoed
    out.extend_from_slice(&body);
    out
}

/// Sends a Binding request from `sock` to `server` (with CHANGE-REQUEST
/// `flags` if non-zero, see RFC 5780) and returns the mapped address from
/// the answer and the address that answered. Retries twice; Err(TimedOut)
/// if no answer comes within `timeout` each time.
pub fn binding(
    sock: &UdpSocket,
    server: SocketAddrV4,
    flags: u8,
    timeout: Duration,
) -> io::Result<(SocketAddrV4, SocketAddrV4)> {
    let mut req = Vec::with_capacity(28);
    req.extend_from_slice(&BINDING_REQUEST);
    req.extend_from_slice(&(if flags != 0 { 8u16 } else { 0 }).to_be_bytes());
    req.extend_from_slice(&COOKIE);
    // A fresh transaction id: a per-process counter and the clock.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut tid = [0u8; 12];
    tid[..8].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    tid[8..].copy_from_slice(&nanos.to_be_bytes());
    req.extend_from_slice(&tid);
    if flags != 0 {
        req.extend_from_slice(&ATTR_CHANGE_REQUEST.to_be_bytes());
        req.extend_from_slice(&4u16.to_be_bytes());
        req.extend_from_slice(&[0, 0, 0, flags]);
    }
    sock.set_read_timeout(Some(timeout))?;
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        sock.send_to(&req, server)?;
        loop {
            let (n, from) = match sock.recv_from(&mut buf) {
                Ok(r) => r,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => return Err(e),
            };
            let SocketAddr::V4(from) = from else { continue };
            if let Some(mapped) = parse_response(&buf[..n], &tid) {
                return Ok((mapped, from));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("no STUN answer from {server}"),
    ))
}

/// The XOR-MAPPED-ADDRESS of a Binding success with transaction id `tid`.
fn parse_response(msg: &[u8], tid: &[u8; 12]) -> Option<SocketAddrV4> {
    if msg.len() < 20 || msg[0..2] != BINDING_SUCCESS || msg[4..8] != COOKIE || &msg[8..20] != tid {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    let body = msg.get(20..20 + len)?;
    let mut pos = 0;
    while pos + 4 <= body.len() {
        let ty = u16::from_be_bytes([body[pos], body[pos + 1]]);
        let alen = usize::from(u16::from_be_bytes([body[pos + 2], body[pos + 3]]));
        let val = body.get(pos + 4..pos + 4 + alen)?;
        if ty == ATTR_XOR_MAPPED_ADDRESS && alen == 8 && val[1] == 1 {
            let port = u16::from_be_bytes([val[2] ^ COOKIE[0], val[3] ^ COOKIE[1]]);
            let ip = Ipv4Addr::new(
                val[4] ^ COOKIE[0],
                val[5] ^ COOKIE[1],
                val[6] ^ COOKIE[2],
                val[7] ^ COOKIE[3],
            );
            return Some(SocketAddrV4::new(ip, port));
        }
        pos += 4 + alen.div_ceil(4) * 4;
    }
    None
}
