//! Proves the simulated internet of `support/netsim.rs` with real sockets,
//! real miniupnpd, upnpc, natpmpc and python3-libtorrent (and btfs-mount only
//! in the last test, to show how a mount runs in a host):
//! NAT lets out and keeps out, and how it maps (measured); UPnP IGD and
//! NAT-PMP mappings made and deleted; IPv6 between public hosts; multicast on
//! each interface of a three-legged host with no default route; delay, loss
//! and rate limits on a link; nothing left behind; libtorrent mapping its
//! port through miniupnpd and serving a public peer; a btfs-mount started in
//! a home, reading from a public seeder, its mount seen by the test.

#[path = "support/netsim.rs"]
mod netsim;
#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use netsim::*;
use support::*;

/// LSD's IPv4 group and port (BEP 14).
const LSD4: Ipv4Addr = Ipv4Addr::new(239, 192, 152, 143);
/// LSD's IPv6 group (BEP 14).
const LSD6: Ipv6Addr = Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0xefc0, 0x988f);
const LSD_PORT: u16 = 6771;

/// Prints a timing line past libtest's capture.
fn note(msg: &str) {
    let _ = writeln!(io::stderr(), "netsim: {msg}");
}

/// Accepts one connection on `l` (within 10 s) in a thread, reads to EOF,
/// and returns the peer's address and the bytes.
fn accept_one(l: TcpListener) -> JoinHandle<(SocketAddr, Vec<u8>)> {
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
fn connect(host: &Host, to: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    host.enter(|| TcpStream::connect_timeout(&to, timeout))
}

/// Sends `data` from `from` to the listener `l` (on `to`); returns the
/// address the listener saw and checks the bytes.
fn tcp_send(from: &Host, l: TcpListener, to: SocketAddr, data: &[u8]) -> SocketAddr {
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

fn udp(host: &Host, addr: impl Into<SocketAddr>) -> UdpSocket {
    let addr = addr.into();
    host.enter(|| UdpSocket::bind(addr))
        .unwrap_or_else(|e| panic!("{}: bind {addr}: {e}", host.name()))
}

/// One datagram within `timeout`, or None.
fn recv(s: &UdpSocket, timeout: Duration) -> Option<(Vec<u8>, SocketAddr)> {
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

/// Panics with an install hint unless `program` is installed.
fn require_tool(program: &str, package: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "this test needs `{program}`: apt-get install {package} (scripts/setup)"
    );
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

#[test]
fn nat_lets_out_and_keeps_out() {
    if !in_netns("nat_lets_out_and_keeps_out") {
        return;
    }
    let t0 = Instant::now();
    let net = Internet::new();
    let a = net.public_host("a");
    let home = net.home("h1", HomeOpts::default());
    let x = home.host("x");
    note(&format!(
        "internet + home + 2 hosts built in {:?}",
        t0.elapsed()
    ));
    assert_eq!(home.wan_ip(), Ipv4Addr::new(203, 0, 113, 11));
    assert_eq!(x.ip(), Ipv4Addr::new(10, 0, 1, 10));
    assert_eq!(a.ip(), Ipv4Addr::new(198, 51, 100, 10));

    // Out over TCP: the public host sees the router's address.
    let data = seeded_bytes(200_000, 1);
    let l = a.enter(|| TcpListener::bind((a.ip(), 7000))).unwrap();
    let peer = tcp_send(&x, l, sa(a.ip(), 7000), &data);
    assert_eq!(
        peer.ip(),
        IpAddr::V4(home.wan_ip()),
        "TCP out is masqueraded"
    );

    // Out over UDP, and the reply comes back in.
    let ua = udp(&a, sa(a.ip(), 7001));
    let ux = udp(&x, sa(x.ip(), 0));
    ux.send_to(b"ping", sa(a.ip(), 7001)).unwrap();
    let (msg, from) = recv(&ua, Duration::from_secs(2)).expect("UDP out arrives");
    assert_eq!(
        (msg.as_slice(), from.ip()),
        (&b"ping"[..], IpAddr::V4(home.wan_ip()))
    );
    ua.send_to(b"pong", from).unwrap();
    let (msg, _) = recv(&ux, Duration::from_secs(2)).expect("the UDP reply comes back in");
    assert_eq!(msg, b"pong");

    // In: nothing gets to x, neither through the router's address nor to
    // its private one (not routed on the internet).
    let lx = x.enter(|| TcpListener::bind((x.ip(), 7002))).unwrap();
    lx.set_nonblocking(true).unwrap();
    let t = Instant::now();
    let to_wan = connect(&a, sa(home.wan_ip(), 7002), Duration::from_secs(1));
    let to_lan = connect(&a, sa(x.ip(), 7002), Duration::from_secs(1));
    note(&format!(
        "inbound attempts: via WAN {to_wan:?}, to the LAN address {to_lan:?} ({:?})",
        t.elapsed()
    ));
    assert!(to_wan.is_err() && to_lan.is_err(), "a public host got in");
    assert_eq!(
        lx.accept().map(|_| ()).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    let ua2 = udp(&a, sa(a.ip(), 7003));
    ua2.send_to(
        b"unsolicited",
        sa(home.wan_ip(), ux.local_addr().unwrap().port()),
    )
    .unwrap();
    assert!(
        recv(&ux, Duration::from_millis(300)).is_none(),
        "an unsolicited datagram got in"
    );

    // IPv6: no NAT, out works with the host's own address, in is filtered.
    let l6 = a.enter(|| TcpListener::bind((a.ip6(), 7004))).unwrap();
    let peer = tcp_send(&x, l6, sa(a.ip6(), 7004), &data);
    assert_eq!(
        peer.ip(),
        IpAddr::V6(x.ip6()),
        "IPv6 out keeps the host's address"
    );
    let _lx6 = x.enter(|| TcpListener::bind((x.ip6(), 7005))).unwrap();
    assert!(
        connect(&a, sa(x.ip6(), 7005), Duration::from_secs(1)).is_err(),
        "IPv6 in must be filtered"
    );
    note(&format!("nat_lets_out_and_keeps_out: {:?}", t0.elapsed()));
}

#[test]
fn nat_behaviour_measured() {
    if !in_netns("nat_behaviour_measured") {
        return;
    }
    let net = Internet::new();
    let a = net.public_host("a");
    let b = net.public_host("b");
    let home = net.home("h1", HomeOpts::default());
    let x = home.host("x");
    let y = home.host("y");
    let wan = home.wan_ip();
    let short = Duration::from_millis(300);
    let long = Duration::from_secs(2);

    let a1 = udp(&a, sa(a.ip(), 5000));
    let a2 = udp(&a, sa(a.ip(), 5001));
    let b1 = udp(&b, sa(b.ip(), 5000));
    let seen = |from: &UdpSocket, to: &UdpSocket| -> SocketAddr {
        from.send_to(b"probe", to.local_addr().unwrap()).unwrap();
        recv(to, long).expect("probe arrives").1
    };

    // Mapping: one LAN socket to three destinations.
    let xs = udp(&x, sa(x.ip(), 40000));
    let m1 = seen(&xs, &a1);
    // Filtering, before x has sent to a2 or b1.
    let from_other_port = {
        a2.send_to(b"in", m1).unwrap();
        recv(&xs, short).is_some()
    };
    let from_other_host = {
        b1.send_to(b"in", m1).unwrap();
        recv(&xs, short).is_some()
    };
    let from_contacted = {
        a1.send_to(b"in", m1).unwrap();
        recv(&xs, long).is_some()
    };
    let m2 = seen(&xs, &a2);
    let m3 = seen(&xs, &b1);
    let eim = m1 == m2 && m2 == m3;
    let preserved = m1.port() == 40000;

    // Hairpinning: y sends to x's public mapping.
    let ys = udp(&y, sa(y.ip(), 40001));
    ys.send_to(b"hairpin", m1).unwrap();
    let hairpin = recv(&xs, short).is_some();

    // Port collision: y uses the same source port as x, to the same
    // destination (the external tuple is taken) and to a new one.
    let yc = udp(&y, sa(y.ip(), 40000));
    let c_same = seen(&yc, &a1);
    let a3 = udp(&a, sa(a.ip(), 5002));
    let c_new = seen(&yc, &a3);

    // TCP keeps the source port too.
    let l = a.enter(|| TcpListener::bind((a.ip(), 7000))).unwrap();
    let srv = accept_one(l);
    let s = connect(&x, sa(a.ip(), 7000), long).unwrap();
    let local = s.local_addr().unwrap();
    drop(s);
    let (tcp_peer, _) = srv.join().unwrap();

    // The internet's STUN server sees the same mapping.
    let (stun_seen, _) = stun::binding(&xs, net.stun(), 0, long).expect("STUN answer");
    assert_eq!(SocketAddr::V4(stun_seen), m1, "STUN sees x's mapping");
    let timeouts = home.router().run(
        "cat",
        &[
            "/proc/sys/net/netfilter/nf_conntrack_udp_timeout",
            "/proc/sys/net/netfilter/nf_conntrack_udp_timeout_stream",
            "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_established",
        ],
    );
    let t: Vec<&str> = timeouts.split_whitespace().collect();
    note(&format!(
        "NAT measured: mapping {m1} {m2} {m3} -> endpoint-independent: {eim}; source port kept: {preserved}; \
         inbound from the contacted endpoint: {from_contacted}, from another port of that host: {from_other_port}, \
         from another host: {from_other_host} -> address-and-port-dependent filtering; hairpinning: {hairpin}; \
         second LAN host on the same port: to the same destination {c_same}, to a new one {c_new}; \
         TCP {local} -> seen as {tcp_peer}; conntrack timeouts UDP {}s / {}s (assured), TCP established {}s",
        t[0], t[1], t[2]
    ));
    assert_eq!(m1.ip(), IpAddr::V4(wan));
    assert!(eim, "mapping is endpoint-independent");
    assert!(preserved, "the source port is kept");
    assert!(
        from_contacted && !from_other_port && !from_other_host,
        "address-and-port-dependent filtering"
    );
    assert!(!hairpin, "no hairpinning");
    assert_ne!(
        c_same.port(),
        40000,
        "a taken external tuple gets another port"
    );
    assert_eq!(
        c_new, c_same,
        "and that mapping is endpoint-independent too"
    );
    assert_eq!(tcp_peer, sa(wan, local.port()), "TCP keeps the source port");
}

#[test]
fn upnp_mapping_through_miniupnpd() {
    if !in_netns("upnp_mapping_through_miniupnpd") {
        return;
    }
    require_tool("upnpc", "miniupnpc");
    let t0 = Instant::now();
    let net = Internet::new();
    let a = net.public_host("a");
    let home = net.home(
        "h1",
        HomeOpts {
            upnp: true,
            ..HomeOpts::default()
        },
    );
    let x = home.host("x");
    note(&format!("home with miniupnpd up in {:?}", t0.elapsed()));
    let wan_port = sa(home.wan_ip(), 7001);
    let lx = x.enter(|| TcpListener::bind((x.ip(), 7001))).unwrap();
    assert!(
        connect(&a, wan_port, Duration::from_secs(1)).is_err(),
        "in before mapping"
    );
    assert!(home.mappings().is_empty());

    // upnpc -i: miniupnpc calls an IGD whose external address is reserved
    // (203.0.113.0/24) "not connected"; -i goes on anyway.
    let t = Instant::now();
    let ip = x.ip().to_string();
    let out = x.run("upnpc", &["-i", "-a", &ip, "7001", "7001", "TCP"]);
    note(&format!("upnpc -a took {:?}", t.elapsed()));
    assert!(
        out.contains("external 203.0.113.11:7001 TCP is redirected to internal 10.0.1.10:7001"),
        "upnpc -a:\n{out}"
    );
    assert_eq!(
        home.mappings(),
        vec![Mapping {
            protocol: "tcp",
            external_port: 7001,
            internal: SocketAddrV4::new(x.ip(), 7001)
        }]
    );
    // Later calls skip the 2 s SSDP discovery (-u: the description URL).
    let url = format!(
        "http://{}:{MINIUPNPD_HTTP_PORT}/rootDesc.xml",
        home.gateway()
    );
    let out = x.run("upnpc", &["-i", "-u", &url, "-l"]);
    assert!(
        out.contains("TCP  7001->10.0.1.10:7001"),
        "upnpc -l:\n{out}"
    );

    // A public host connects in; x sees its real address.
    let data = seeded_bytes(300_000, 2);
    let peer = tcp_send(&a, lx.try_clone().unwrap(), wan_port, &data);
    assert_eq!(peer.ip(), IpAddr::V4(a.ip()));

    // Deleted: gone from the router, and the way in is shut.
    x.run("upnpc", &["-i", "-u", &url, "-d", "7001", "TCP"]);
    assert!(home.mappings().is_empty(), "mapping left after upnpc -d");
    assert!(
        connect(&a, wan_port, Duration::from_secs(1)).is_err(),
        "in after delete"
    );
    note(&format!(
        "upnp_mapping_through_miniupnpd: {:?}",
        t0.elapsed()
    ));
}

#[test]
fn natpmp_mapping_through_miniupnpd() {
    if !in_netns("natpmp_mapping_through_miniupnpd") {
        return;
    }
    require_tool("natpmpc", "natpmpc");
    let t0 = Instant::now();
    let net = Internet::new();
    let a = net.public_host("a");
    let home = net.home(
        "h1",
        HomeOpts {
            natpmp: true,
            ..HomeOpts::default()
        },
    );
    let x = home.host("x");
    let ux = udp(&x, sa(x.ip(), 7002));
    let ua = udp(&a, sa(a.ip(), 6000));
    let gw = home.gateway().to_string();

    ua.send_to(b"before", sa(home.wan_ip(), 7002)).unwrap();
    assert!(
        recv(&ux, Duration::from_millis(300)).is_none(),
        "in before mapping"
    );

    let t = Instant::now();
    let out = x.run("natpmpc", &["-g", &gw, "-a", "7002", "7002", "udp", "60"]);
    note(&format!("natpmpc -a took {:?}", t.elapsed()));
    assert!(
        out.contains("Public IP address : 203.0.113.11"),
        "natpmpc:\n{out}"
    );
    assert!(
        out.contains("Mapped public port 7002 protocol UDP to local port 7002"),
        "natpmpc:\n{out}"
    );
    assert_eq!(
        home.mappings(),
        vec![Mapping {
            protocol: "udp",
            external_port: 7002,
            internal: SocketAddrV4::new(x.ip(), 7002)
        }]
    );
    ua.send_to(b"through", sa(home.wan_ip(), 7002)).unwrap();
    let (msg, from) =
        recv(&ux, Duration::from_secs(2)).expect("datagram through the NAT-PMP mapping");
    assert_eq!((msg.as_slice(), from), (&b"through"[..], sa(a.ip(), 6000)));

    // Lifetime 0 deletes (RFC 6886 section 3.4).
    let out = x.run("natpmpc", &["-g", &gw, "-a", "7002", "7002", "udp", "0"]);
    assert!(
        home.mappings().is_empty(),
        "mapping left after delete:\n{out}"
    );
    ua.send_to(b"after", sa(home.wan_ip(), 7002)).unwrap();
    assert!(
        recv(&ux, Duration::from_millis(300)).is_none(),
        "in after delete"
    );
    note(&format!(
        "natpmp_mapping_through_miniupnpd: {:?}",
        t0.elapsed()
    ));
}

#[test]
fn ipv6_between_public_hosts() {
    if !in_netns("ipv6_between_public_hosts") {
        return;
    }
    let net = Internet::new();
    let a = net.public_host("a");
    let b = net.public_host("b");
    assert_eq!(a.ip6(), "2001:db8::10".parse::<Ipv6Addr>().unwrap());
    assert_eq!(b.ip6(), "2001:db8::11".parse::<Ipv6Addr>().unwrap());
    let data = seeded_bytes(500_000, 3);
    let l = a.enter(|| TcpListener::bind((a.ip6(), 7000))).unwrap();
    let peer = tcp_send(&b, l, sa(a.ip6(), 7000), &data);
    assert_eq!(peer.ip(), IpAddr::V6(b.ip6()));
    let ua = udp(&a, sa(a.ip6(), 7001));
    let ub = udp(&b, sa(b.ip6(), 0));
    ub.send_to(b"v6", sa(a.ip6(), 7001)).unwrap();
    let (msg, from) = recv(&ua, Duration::from_secs(2)).expect("UDP over IPv6");
    assert_eq!(
        (msg.as_slice(), from.ip()),
        (&b"v6"[..], IpAddr::V6(b.ip6()))
    );
    // A home host reaches a public one over IPv6 too (routed /64, no NAT).
    let home = net.home("h1", HomeOpts::default());
    let x = home.host("x");
    assert_eq!(x.ip6(), "2001:db8:101::10".parse::<Ipv6Addr>().unwrap());
    let ux = udp(&x, sa(x.ip6(), 0));
    ux.send_to(b"from home", sa(a.ip6(), 7001)).unwrap();
    let (_, from) = recv(&ua, Duration::from_secs(2)).expect("UDP from a home over IPv6");
    assert_eq!(from.ip(), IpAddr::V6(x.ip6()));
}

/// Sets the interface multicast leaves by: an IPv4 address of it.
fn set_multicast_if_v4(s: &UdpSocket, ip: Ipv4Addr) {
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
fn set_multicast_if_v6(s: &UdpSocket, ifindex: u32) {
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
fn ifindex(host: &Host, dev: &str) -> u32 {
    let name = CString::new(dev).unwrap();
    // SAFETY: a valid C string.
    let idx = host.enter(|| unsafe { libc::if_nametoindex(name.as_ptr()) });
    assert_ne!(idx, 0, "no interface {dev} on {}", host.name());
    idx
}

/// Datagrams arriving on `s`: the first `want` (waiting up to 3 s for
/// each, which a loaded machine may need), then any more until `quiet`
/// passes with none.
fn collect(s: &UdpSocket, want: usize, quiet: Duration) -> Vec<(String, IpAddr)> {
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

#[test]
fn multicast_on_each_of_three_interfaces() {
    if !in_netns("multicast_on_each_of_three_interfaces") {
        return;
    }
    let net = Internet::new();
    let segs: Vec<Segment> = (1..=3).map(|i| net.segment(&format!("s{i}"))).collect();
    let multi = net.host("multi", &[&segs[0], &segs[1], &segs[2]]);
    let peers: Vec<Host> = (0..3)
        .map(|i| net.host(&format!("p{}", i + 1), &[&segs[i]]))
        .collect();
    assert_eq!(
        multi.run("ip", &["route", "show", "default"]).trim(),
        "",
        "no default route"
    );
    assert_eq!(multi.iface(2).ip, Ipv4Addr::new(10, 1, 3, 10));
    assert_eq!(peers[2].ip(), Ipv4Addr::new(10, 1, 3, 11));
    let wait = Duration::from_millis(150);

    // IPv4. Without IP_MULTICAST_IF and with no default route, a send fails:
    // the case of an offline LAN (issue 17).
    let m = udp(&multi, sa(Ipv4Addr::UNSPECIFIED, LSD_PORT));
    let err = m.send_to(b"nowhere", sa(LSD4, LSD_PORT)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENETUNREACH), "{err}");
    for iface in multi.ifaces() {
        m.join_multicast_v4(&LSD4, &iface.ip).unwrap();
    }
    let ps: Vec<UdpSocket> = peers
        .iter()
        .map(|p| {
            let s = udp(p, sa(Ipv4Addr::UNSPECIFIED, LSD_PORT));
            s.join_multicast_v4(&LSD4, &p.ip()).unwrap();
            set_multicast_if_v4(&s, p.ip());
            s
        })
        .collect();
    for (p, s) in peers.iter().zip(&ps) {
        s.send_to(format!("from {}", p.name()).as_bytes(), sa(LSD4, LSD_PORT))
            .unwrap();
    }
    let got: BTreeSet<_> = collect(&m, 3, wait).into_iter().collect();
    let want: BTreeSet<_> = peers
        .iter()
        .map(|p| (format!("from {}", p.name()), IpAddr::V4(p.ip())))
        .collect();
    assert_eq!(got, want, "multi hears each segment");
    for (i, iface) in multi.ifaces().iter().enumerate() {
        set_multicast_if_v4(&m, iface.ip);
        m.send_to(format!("to s{}", i + 1).as_bytes(), sa(LSD4, LSD_PORT))
            .unwrap();
    }
    for (i, s) in ps.iter().enumerate() {
        // Each peer also hears its own send (IP_MULTICAST_LOOP), sent before.
        let got = collect(s, 2, wait);
        let from_multi: Vec<_> = got
            .iter()
            .filter(|(_, ip)| *ip == IpAddr::V4(multi.iface(i).ip))
            .collect();
        assert_eq!(from_multi.len(), 1, "p{} got {got:?}", i + 1);
        assert_eq!(from_multi[0].0, format!("to s{}", i + 1));
        assert!(
            got.iter()
                .all(|(msg, _)| !msg.starts_with("to ") || *msg == format!("to s{}", i + 1))
        );
    }
    drop((m, ps));

    // IPv6, LSD's group ff15::efc0:988f, by interface index.
    let m = udp(&multi, sa(Ipv6Addr::UNSPECIFIED, LSD_PORT));
    let idx: Vec<u32> = multi
        .ifaces()
        .iter()
        .map(|i| ifindex(&multi, &i.dev))
        .collect();
    for &i in &idx {
        m.join_multicast_v6(&LSD6, i).unwrap();
    }
    let ps: Vec<UdpSocket> = peers
        .iter()
        .map(|p| {
            let s = udp(p, sa(Ipv6Addr::UNSPECIFIED, LSD_PORT));
            let i = ifindex(p, "eth0");
            s.join_multicast_v6(&LSD6, i).unwrap();
            set_multicast_if_v6(&s, i);
            s
        })
        .collect();
    for (p, s) in peers.iter().zip(&ps) {
        s.send_to(format!("from {}", p.name()).as_bytes(), sa(LSD6, LSD_PORT))
            .unwrap();
    }
    let got: BTreeSet<String> = collect(&m, 3, wait)
        .into_iter()
        .map(|(msg, _)| msg)
        .collect();
    let want: BTreeSet<String> = peers.iter().map(|p| format!("from {}", p.name())).collect();
    assert_eq!(got, want, "multi hears each segment over IPv6");
    for (k, &i) in idx.iter().enumerate() {
        set_multicast_if_v6(&m, i);
        m.send_to(format!("to s{}", k + 1).as_bytes(), sa(LSD6, LSD_PORT))
            .unwrap();
    }
    for (k, s) in ps.iter().enumerate() {
        let got: Vec<String> = collect(s, 2, wait)
            .into_iter()
            .map(|(msg, _)| msg)
            .filter(|m| m.starts_with("to "))
            .collect();
        assert_eq!(got, vec![format!("to s{}", k + 1)], "p{} over IPv6", k + 1);
    }
}

/// A UDP echo server on `host`:`port`, stopped when the flag is set.
fn echo_server(host: &Host, port: u16) -> (Arc<AtomicBool>, JoinHandle<()>) {
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
fn median_rtt(s: &UdpSocket, to: SocketAddr, n: usize) -> Duration {
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

/// Sends `data` from `from` to a fresh listener on `to` port 7100 and
/// returns how long it took.
fn timed_tcp(from: &Host, to: &Host, data: &[u8]) -> Duration {
    let l = to.enter(|| TcpListener::bind((to.ip(), 0))).unwrap();
    let addr = l.local_addr().unwrap();
    let t = Instant::now();
    tcp_send(from, l, addr, data);
    t.elapsed()
}

#[test]
fn delay_loss_and_rate_on_a_link() {
    if !in_netns("delay_loss_and_rate_on_a_link") {
        return;
    }
    let t0 = Instant::now();
    let net = Internet::new();
    let a = net.public_host("a");
    let b = net.public_host("b");
    let (stop, echo) = echo_server(&b, 9000);
    let s = udp(&a, sa(a.ip(), 0));
    let to = sa(b.ip(), 9000);
    let base = median_rtt(&s, to, 20);
    assert!(base < Duration::from_millis(5), "baseline RTT {base:?}");

    let link = &a.iface(0).link;
    link.set_delay(Duration::from_millis(40));
    let delayed = median_rtt(&s, to, 20);
    note(&format!(
        "RTT a<->b: {base:?} plain, {delayed:?} with 40 ms one-way delay on a's link"
    ));
    assert!(
        delayed >= Duration::from_millis(80) && delayed < Duration::from_millis(110),
        "RTT with 2 x 40 ms delay: {delayed:?}"
    );

    // Loss: 30 % per direction, counted one way.
    link.set_delay(Duration::ZERO);
    link.set_loss(0.3);
    let sink = udp(&b, sa(b.ip(), 9001));
    // Read as they come: a socket buffer holds only a few hundred.
    let counter = thread::spawn(move || collect(&sink, 0, Duration::from_millis(500)).len());
    let n = 1000;
    for i in 0..n as u32 {
        s.send_to(&i.to_be_bytes(), sa(b.ip(), 9001)).unwrap();
        if i % 20 == 0 {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let got = counter.join().unwrap();
    let ratio = got as f64 / n as f64;
    let (passed, lost, overflowed) = link.impairment().counters();
    note(&format!(
        "30 % loss: {got}/{n} datagrams arrived; wire counters passed {passed} lost {lost} overflowed {overflowed}"
    ));
    assert!((0.64..=0.76).contains(&ratio), "delivered ratio {ratio}");
    assert_eq!(overflowed, 0);

    // TCP across loss and delay still delivers the exact bytes.
    link.set_loss(0.05);
    link.set_delay(Duration::from_millis(5));
    let data = seeded_bytes(2 << 20, 4);
    let took = timed_tcp(&a, &b, &data);
    note(&format!(
        "2 MiB over TCP with 5 % loss and 10 ms RTT: {took:?}"
    ));

    // Back to a clean link.
    link.set_loss(0.0);
    link.set_delay(Duration::ZERO);
    let after = median_rtt(&s, to, 20);
    assert!(
        after < Duration::from_millis(5),
        "RTT after clearing: {after:?}"
    );
    let took = timed_tcp(&a, &b, &data);
    note(&format!(
        "2 MiB over TCP through the wire with no delay or loss: {took:?} ({:.0} MB/s)",
        data.len() as f64 / took.as_secs_f64() / 1e6
    ));
    assert!(
        took < Duration::from_secs(2),
        "the idle wire is slow: {took:?}"
    );

    // Rate: 16 Mbit/s on b's link, 2 MiB take about a second.
    b.iface(0).link.rate_limit(16_000_000);
    let took = timed_tcp(&a, &b, &data);
    note(&format!("2 MiB over TCP at 16 Mbit/s: {took:?}"));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "2 MiB at 16 Mbit/s took {took:?}"
    );
    b.iface(0).link.clear_rate_limit();
    let took = timed_tcp(&a, &b, &data);
    assert!(
        took < Duration::from_millis(700),
        "unlimited again: {took:?}"
    );
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
    note(&format!(
        "delay_loss_and_rate_on_a_link: {:?}",
        t0.elapsed()
    ));
}

/// The host's /run/netns as seen from PID 1's root (None if absent).
fn host_run_netns() -> Option<BTreeSet<String>> {
    let dir = fs::read_dir("/proc/1/root/run/netns").ok()?;
    Some(
        dir.flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
    )
}

/// Threads of this process named `netsim-*` (wires, STUN).
fn netsim_threads() -> usize {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("netsim-"))
        })
        .count()
}

/// Names this test gives its hosts, homes and segments: distinctive, so the
/// check on the host's `/run/netns` (shared with other helpers' work) only
/// looks for ours.
const NLB: [&str; 5] = ["nlb-a", "nlb-h", "nlb-x", "nlb-s", "nlb-m"];

#[test]
fn nothing_left_behind() {
    // Outside (the supervising process, on the host): none of our
    // namespaces may appear in the host's /run/netns, during or after.
    let host_before = host_run_netns().unwrap_or_default();
    if !in_netns("nothing_left_behind") {
        let after = host_run_netns().unwrap_or_default();
        let ours: Vec<&String> = after
            .difference(&host_before)
            .filter(|n| NLB.iter().any(|p| n.starts_with(p)))
            .collect();
        assert!(ours.is_empty(), "left in the host's /run/netns: {ours:?}");
        return;
    }
    let (inodes, mut sleeper) = {
        let net = Internet::new();
        let a = net.public_host(NLB[0]);
        let home = net.home(
            NLB[1],
            HomeOpts {
                upnp: true,
                natpmp: true,
                ..HomeOpts::default()
            },
        );
        let x = home.host(NLB[2]);
        let s1 = net.segment(NLB[3]);
        let _m = net.host(NLB[4], &[&s1, home.lan()]);
        a.iface(0).link.set_delay(Duration::from_millis(1));
        x.iface(0).link.set_loss(0.01);
        // A process the test leaves running: the Internet must end it.
        let sleeper = x.command("sleep").arg("600").spawn().unwrap();
        let mut names: Vec<String> = fs::read_dir("/run/netns")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want = net.netns_names();
        want.sort();
        assert_eq!(names, want, "our /run/netns");
        let inodes = net.netns_inodes();
        // The host's /run/netns holds none of them (by namespace inode).
        for name in host_run_netns().unwrap_or_default() {
            let ino = fs::metadata(format!("/proc/1/root/run/netns/{name}")).map(|m| m.ino());
            assert!(
                !ino.is_ok_and(|i| inodes.contains(&i)),
                "{name} is visible on the host"
            );
        }
        let pids = pids_in_netns(&inodes);
        assert!(pids.contains(&sleeper.id()), "sleep runs in x");
        assert!(pids.len() >= 2, "miniupnpd and sleep run: {pids:?}");
        assert!(netsim_threads() >= 5, "4 wire threads and the STUN server");
        (inodes, sleeper)
    };
    assert_eq!(
        fs::read_dir("/run/netns").unwrap().count(),
        0,
        "namespaces left in /run/netns"
    );
    assert_eq!(
        pids_in_netns(&inodes),
        Vec::<u32>::new(),
        "processes left in our namespaces"
    );
    assert!(
        sleeper.try_wait().unwrap().is_some(),
        "the sleep process still runs"
    );
    assert_eq!(netsim_threads(), 0, "netsim threads left");
}

#[test]
fn mounts_made_in_a_host_are_seen_by_the_test() {
    if !in_netns("mounts_made_in_a_host_are_seen_by_the_test") {
        return;
    }
    let net = Internet::new();
    let x = net.public_host("x");
    let tmp = tempfile::tempdir().unwrap();
    let (shared, private) = (tmp.path().join("shared"), tmp.path().join("private"));
    fs::create_dir(&shared).unwrap();
    fs::create_dir(&private).unwrap();
    // Host::command keeps the test's mount namespace (as for a FUSE mount by
    // btfs-mount): the test sees the mount.
    x.run(
        "mount",
        &["-t", "tmpfs", "netsim-shared", &shared.to_string_lossy()],
    );
    assert!(is_mounted(&shared), "a mount made through Host::command");
    // `ip netns exec` gives the command a mount namespace of its own.
    let out = Command::new("ip")
        .args(["netns", "exec", x.netns(), "sh", "-c"])
        .arg(format!(
            "mount -t tmpfs netsim-private {0} && grep -c netsim-private /proc/self/mountinfo && ip -4 -o addr show eth0",
            private.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("1\n"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("198.51.100.10/24"),
        "ip netns exec runs in x: {text}"
    );
    assert!(!is_mounted(&private), "an ip netns exec mount leaked out");
    assert!(unmount(&shared));
}

#[test]
fn libtorrent_maps_its_port_through_miniupnpd() {
    if !in_netns("libtorrent_maps_its_port_through_miniupnpd") {
        return;
    }
    let t0 = Instant::now();
    let net = Internet::new();
    let home = net.home(
        "h1",
        HomeOpts {
            upnp: true,
            ..HomeOpts::default()
        },
    );
    let seed_host = home.host("seeder");
    let leech_host = net.public_host("leecher");
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    make_tree(
        &site,
        &[
            ("big.bin", TreeFile::Random(3 * 1024 * 1024 + 777, 5)),
            (
                "small.txt",
                TreeFile::Text("behind a NAT, mapped by UPnP\n"),
            ),
        ],
    );
    let seed_ip = seed_host.ip().to_string();
    let mut seeder = seed_host.lt_node(&[
        "--listen-ip",
        &seed_ip,
        "--seed",
        &site.to_string_lossy(),
        "--upnp",
    ]);
    let port = seeder.port();
    let mut mapped = BTreeSet::new();
    while mapped.len() < 2 {
        let ev = seeder.wait_for("portmap or portmap_error", Duration::from_secs(20), |v| {
            v["event"] == "portmap" || v["event"] == "portmap_error"
        });
        assert_eq!(ev["event"], "portmap", "libtorrent could not map: {ev}");
        assert_eq!(ev["transport"], "upnp");
        assert_eq!(ev["external_port"].as_u64(), Some(u64::from(port)), "{ev}");
        mapped.insert(ev["protocol"].as_str().unwrap().to_string());
    }
    note(&format!(
        "libtorrent mapped TCP and UDP port {port} by UPnP at {:?}",
        t0.elapsed()
    ));
    let internal = SocketAddrV4::new(seed_host.ip(), port);
    let mut rules = home.mappings();
    rules.sort_by_key(|m| m.protocol);
    assert_eq!(
        rules,
        vec![
            Mapping {
                protocol: "tcp",
                external_port: port,
                internal
            },
            Mapping {
                protocol: "udp",
                external_port: port,
                internal
            },
        ]
    );
    seeder.wait_event("seeding", Duration::from_secs(60));
    let magnet = seeder.magnet();

    // The public leecher knows only the router's address and mapped port;
    // the seeder knows nothing of it, so every byte comes through the mapping.
    let save = tmp.path().join("got");
    let leech_ip = leech_host.ip().to_string();
    let wan = format!("{}:{port}", home.wan_ip());
    let mut leecher = leech_host.lt_node(&[
        "--listen-ip",
        &leech_ip,
        "--fetch",
        &magnet,
        "--save",
        &save.to_string_lossy(),
        "--connect",
        &wan,
    ]);
    let conn = leecher.wait_event("peer_connected", Duration::from_secs(30));
    assert_eq!(conn["addr"], wan.as_str());
    leecher.wait_event("finished", Duration::from_secs(60));
    note(&format!(
        "public libtorrent downloaded from the NATed one at {:?}",
        t0.elapsed()
    ));
    for f in ["big.bin", "small.txt"] {
        assert_eq!(
            sha256_file(&save.join("site").join(f)),
            sha256_file(&site.join(f)),
            "{f}"
        );
    }

    // On exit libtorrent deletes its mappings.
    drop(leecher);
    seeder.close_stdin();
    seeder
        .wait_exit(Duration::from_secs(15))
        .expect("ltnode exits");
    let gone = wait_until(Duration::from_secs(5), || home.mappings().is_empty());
    note(&format!(
        "mappings after libtorrent exited: {:?}",
        home.mappings()
    ));
    assert!(gone, "libtorrent left its mappings");
    note(&format!(
        "libtorrent_maps_its_port_through_miniupnpd: {:?}",
        t0.elapsed()
    ));
}

#[test]
fn btfs_mount_in_a_home_reads_from_a_public_seeder() {
    if !in_netns("btfs_mount_in_a_home_reads_from_a_public_seeder") {
        return;
    }
    let t0 = Instant::now();
    let net = Internet::new();
    let a = net.public_host("a");
    let home = net.home("h1", HomeOpts::default());
    let x = home.host("x");
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    make_tree(&site, &sample_spec());
    let a_ip = a.ip().to_string();
    let mut seeder = a.lt_node(&["--listen-ip", &a_ip, "--seed", &site.to_string_lossy()]);
    seeder.wait_event("seeding", Duration::from_secs(60));
    let magnet = seeder.magnet();
    let peer = format!("{}:{}", a.ip(), seeder.port());
    let cache = tmp.path().join("cache");
    // Started inside x (it dials out through the NAT), mounted in the test's
    // mount namespace: the test reads the files itself.
    let mount = x.enter(|| {
        Mount::background(
            &tmp.path().join("mnt"),
            &[
                &magnet,
                "--no-dht",
                "--peer",
                &peer,
                "--cache-dir",
                &cache.to_string_lossy(),
            ],
        )
    });
    let x_ns = fs::metadata(x.netns_path()).unwrap().ino();
    let in_x = pids_in_netns(&[x_ns]);
    assert!(
        mount.pids().iter().all(|p| in_x.contains(p)) && !mount.pids().is_empty(),
        "btfs-mount {:?} runs in x ({in_x:?})",
        mount.pids()
    );
    for f in ["index.html", "media/big.bin", "café/naïve résumé.txt"] {
        assert_eq!(
            sha256_file(&mount.path().join("site").join(f)),
            sha256_file(&site.join(f)),
            "{f}"
        );
    }
    note(&format!(
        "btfs-mount in a home read from a public seeder: {:?}",
        t0.elapsed()
    ));
    mount.unmount_and_wait(Duration::from_secs(10));
}
