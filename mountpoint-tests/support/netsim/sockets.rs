//! Socket helpers for tests on the simulated internet: TCP and UDP between
//! hosts (each socket made inside its host with [`Host::enter`]), multicast
//! interface selection, an echo server and round-trip timing.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Host;

/// Accepts one connection on `l` (within 10 s) in a thread, reads to EOF,
/// and returns the peer's address and the bytes.
pub fn accept_one(l: TcpListener) -> JoinHandle<(SocketAddr, Vec<u8>)> {
    thread::spawn(move || {
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut s, peer) = loop {
            match l.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        (peer, got)
    })
}

/// Connects from `host` to `to` within `timeout`.
pub fn connect(host: &Host, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    host.enter(|| TcpStream::connect_timeout(&to, timeout))
}

/// Sends `data` over TCP from `from` to the listener `l` (reached at `to`)
/// and closes; returns the address the listener saw the connection come
/// from. Panics unless exactly `data` arrived.
pub fn tcp_send(from: &Host, l: TcpListener, to: SocketAddr, data: &[u8]) -> SocketAddr {
    let srv = accept_one(l);
    let mut s = connect(from, to, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{} cannot connect to {to}: {e}", from.name()));
    s.write_all(data).unwrap();
    drop(s);
    let (peer, got) = srv.join().unwrap();
    // Compared in place: hashing in a debug build would dominate the timings.
    assert!(
        got == data,
        "bytes differ over TCP to {to}: {} received, {} sent",
        got.len(),
        data.len()
    );
    peer
}

/// A UDP socket bound to `addr` inside `host`.
pub fn udp(host: &Host, addr: impl Into<SocketAddr>) -> UdpSocket {
    let addr = addr.into();
    host.enter(|| UdpSocket::bind(addr))
        .unwrap_or_else(|e| panic!("{}: bind {addr}: {e}", host.name()))
}

/// One datagram within `timeout`, or None.
pub fn recv(s: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 2048];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => Some((buf[..n].to_vec(), from)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("recv_from: {e}"),
    }
}

/// `ip:port` as a socket address.
pub fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// Sets the interface multicast leaves by: an IPv4 address of it.
pub fn set_multicast_if_v4(s: &UdpSocket, ip: Ipv4Addr) {
    let addr = libc::in_addr {
        s_addr: u32::from_ne_bytes(ip.octets()),
    };
    // SAFETY: setsockopt with a valid in_addr and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&addr as *const libc::in_addr).cast(),
            std::mem::size_of::<libc::in_addr>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IP_MULTICAST_IF: {}", io::Error::last_os_error());
}

/// Sets the interface IPv6 multicast leaves by: its index.
pub fn set_multicast_if_v6(s: &UdpSocket, ifindex: u32) {
    let idx = ifindex as libc::c_int;
    // SAFETY: setsockopt with a valid int and its size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_IF,
            (&idx as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IPV6_MULTICAST_IF: {}", io::Error::last_os_error());
}

/// The index of interface `dev` of `host`.
pub fn ifindex(host: &Host, dev: &str) -> u32 {
    let name = CString::new(dev).unwrap();
    // SAFETY: a valid C string.
    let idx = host.enter(|| unsafe { libc::if_nametoindex(name.as_ptr()) });
    assert_ne!(idx, 0, "no interface {dev} on {}", host.name());
    idx
}

/// Datagrams arriving on `s`: the first `want` (waiting up to 3 s for
/// each, which a loaded machine may need), then any more until `quiet`
/// passes with none.
pub fn collect(s: &UdpSocket, want: usize, quiet: Duration) -> Vec<(String, IpAddr)> {
    let mut v = Vec::new();
    loop {
        let wait = if v.len() < want {
            Duration::from_secs(3)
        } else {
            quiet
        };
        match recv(s, wait) {
            Some((msg, from)) => v.push((String::from_utf8_lossy(&msg).into_owned(), from.ip())),
            None => return v,
        }
    }
}

/// A UDP echo server on `host`:`port`, stopped when the flag is set.
pub fn echo_server(host: &Host, port: u16) -> (Arc<AtomicBool>, JoinHandle<()>) {
    let s = udp(host, sa(host.ip(), port));
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
    (stop, t)
}

/// Median round trip of `n` echoes from `s` to `to`.
pub fn median_rtt(s: &UdpSocket, to: SocketAddr, n: usize) -> Duration {
    let mut v = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        s.send_to(&(i as u32).to_be_bytes(), to).unwrap();
        loop {
            let (msg, _) = recv(s, Duration::from_secs(2)).expect("echo");
            if msg == (i as u32).to_be_bytes() {
                break;
            }
        }
        v.push(t.elapsed());
    }
    v.sort();
    v[n / 2]
}

/// Sends `data` over TCP from `from` to a fresh listener on `to` (any port)
/// and returns how long it took, bytes checked.
pub fn timed_tcp(from: &Host, to: &Host, data: &[u8]) -> Duration {
    let l = to.enter(|| TcpListener::bind((to.ip(), 0))).unwrap();
    let addr = l.local_addr().unwrap();
    let t = Instant::now();
    tcp_send(from, l, addr, data);
    t.elapsed()
}
