//! Proves the simulated internet of `support/netsim.rs` with real sockets,
//! real miniupnpd, upnpc, natpmpc and python3-libtorrent, and no btfs code:
//! NAT lets out and keeps out, and how it maps (measured); UPnP IGD and
//! NAT-PMP mappings made and deleted; IPv6 between public hosts; multicast on
//! each interface of a three-legged host with no default route; delay, loss
//! and rate limits on a link; libtorrent mapping its port through miniupnpd
//! and serving a public peer; the gateways keep their MAC address while
//! hosts join. `netsim_hosts.rs` covers programs, mounts and clean-up.

#[path = "support/netsim.rs"]
mod netsim;
#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, UdpSocket};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use netsim::sockets::*;
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

    // A router reboot: stopping miniupnpd drops every mapping; once it runs
    // again, mapping works again.
    let add = ["-i", "-u", &url, "-a", &ip, "7001", "7001", "TCP"];
    x.run("upnpc", &add);
    assert_eq!(home.mappings().len(), 1);
    home.stop_miniupnpd();
    assert!(
        home.mappings().is_empty(),
        "mappings survive stop_miniupnpd"
    );
    assert!(
        connect(&a, wan_port, Duration::from_secs(1)).is_err(),
        "in after stop"
    );
    home.start_miniupnpd(true, false);
    x.run("upnpc", &add);
    let peer = tcp_send(&a, lx, wan_port, &data);
    assert_eq!(peer.ip(), IpAddr::V4(a.ip()));
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

/// The MAC address of `dev` on `host` (from `ip -o link show DEV`).
fn mac_of(host: &Host, dev: &str) -> String {
    let out = host.run("ip", &["-o", "link", "show", dev]);
    out.split("link/ether ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no MAC in {out:?}"))
        .to_string()
}

/// The gateways (the internet's `br0`, a home's `lan`) keep their MAC
/// address while hosts and homes join, and a home router that learnt the
/// internet's gateway address before keeps getting through it. A bridge
/// whose address was never set takes its lowest port's, so each join used
/// to change it at random; a router kept sending to the old address, which
/// the internet dropped, for as long as its ARP entry lived (up to ~45 s).
/// That cut a seeder's home from the mount relaying its holepunch in
/// `holepunch.rs` whenever the fetcher's home was created.
#[test]
fn hosts_of_one_home_reach_each_other() {
    if !in_netns("hosts_of_one_home_reach_each_other") {
        return;
    }
    // A home LAN is one bridge on the router: two machines there talk
    // directly (a laptop and a NAS), whatever the router forwards to
    // and from the internet.
    let net = Internet::new();
    let home = net.home("h1", HomeOpts::default());
    let (x, y) = (home.host("x"), home.host("y"));
    let data = seeded_bytes(100_000, 2);
    let l = y.enter(|| TcpListener::bind((y.ip(), 7000))).unwrap();
    let peer = tcp_send(&x, l, sa(y.ip(), 7000), &data);
    assert_eq!(peer.ip(), IpAddr::V4(x.ip()), "no NAT inside the home");
    let uy = udp(&y, sa(y.ip(), 7001));
    let ux = udp(&x, sa(x.ip(), 0));
    ux.send_to(b"ping", sa(y.ip(), 7001)).unwrap();
    let (msg, from) = recv(&uy, Duration::from_secs(2)).expect("UDP inside the home");
    assert_eq!(
        (msg.as_slice(), from.ip()),
        (&b"ping"[..], IpAddr::V4(x.ip()))
    );
    let l6 = y.enter(|| TcpListener::bind((y.ip6(), 7002))).unwrap();
    let peer = tcp_send(&x, l6, sa(y.ip6(), 7002), &data);
    assert_eq!(peer.ip(), IpAddr::V6(x.ip6()));
}

#[test]
fn gateways_keep_their_mac_when_hosts_join() {
    if !in_netns("gateways_keep_their_mac_when_hosts_join") {
        return;
    }
    let net = Internet::new();
    let a = net.public_host("a");
    let home = net.home("h1", HomeOpts::default());
    let x = home.host("x");
    let ua = udp(&a, sa(a.ip(), 7000));
    let ux = udp(&x, sa(x.ip(), 0));
    // The router learns the internet's gateway address (ARP) on the way.
    ux.send_to(b"before", sa(a.ip(), 7000)).unwrap();
    recv(&ua, Duration::from_secs(2)).expect("UDP from the home before the joins");
    let inet_mac = mac_of(&net.backbone(), "br0");
    let lan_mac = mac_of(home.router(), "lan");
    let mut joined = Vec::new();
    for i in 0..6 {
        joined.push(net.public_host(&format!("p{i}")));
        joined.push(home.host(&format!("y{i}")));
    }
    let others: Vec<Home> = (2..5)
        .map(|k| net.home(&format!("h{k}"), HomeOpts::default()))
        .collect();
    assert_eq!(
        mac_of(&net.backbone(), "br0"),
        inet_mac,
        "br0 changed its MAC"
    );
    assert_eq!(mac_of(home.router(), "lan"), lan_mac, "lan changed its MAC");
    for n in 0..3 {
        ux.send_to(format!("after {n}").as_bytes(), sa(a.ip(), 7000))
            .unwrap();
        let (msg, from) = recv(&ua, Duration::from_secs(2))
            .expect("UDP from the home through the internet's gateway after the joins");
        assert_eq!(msg, format!("after {n}").into_bytes());
        assert_eq!(from.ip(), IpAddr::V4(home.wan_ip()));
    }
    note(&format!(
        "br0 {inet_mac} and lan {lan_mac} kept while {} hosts and {} homes joined",
        joined.len(),
        others.len()
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
