//! A simulated internet for end-to-end tests: network namespaces joined by
//! veth pairs and Linux bridges, home routers doing NAT with nftables,
//! Debian's `miniupnpd` on demand, plain LAN segments, and delay, loss and
//! rate limits on any link. It exists only inside the test's own network and
//! mount namespace ([`in_netns`](crate::support::in_netns)) and vanishes with
//! it. Include after the harness:
//!
//! ```ignore
//! #[path = "support/mod.rs"]
//! mod support;
//! #[path = "support/netsim.rs"]
//! mod netsim;
//! ```
//!
//! Home routers and miniupnpd are in `netsim/home.rs`; the delay/loss wire
//! in `netsim/wire.rs`; the STUN server (and a client for tests) in
//! `netsim/stun.rs`; namespace plumbing in `netsim/sys.rs`; socket helpers
//! for tests (TCP and UDP between hosts, multicast, round trips) in
//! `netsim/sockets.rs`.
//!
//! ```ignore
//! let net = Internet::new();                       // inside in_netns only
//! let a = net.public_host("a");                    // 198.51.100.10, 2001:db8::10
//! let home = net.home("h1", HomeOpts { upnp: true, ..HomeOpts::default() });
//! let x = home.host("x");                          // 10.0.1.10 behind NAT 203.0.113.11
//! let listener = x.enter(|| TcpListener::bind((x.ip(), 7000)).unwrap());
//! let seeder = x.lt_node(&["--listen-ip", &x.ip().to_string(), "--upnp", ..]);
//! a.iface(0).link.set_delay(Duration::from_millis(50));   // userspace wire
//! ```
//!
//! # Address plan
//!
//! | what | IPv4 | IPv6 |
//! | --- | --- | --- |
//! | the internet (bridge `br0` in netns `inet`, also its router) | 198.51.100.1/24 and 203.0.113.1/24 | 2001:db8::1/64 |
//! | STUN server on the internet (for miniupnpd, see [`Home::start_miniupnpd`]) | 198.51.100.2 and .3, UDP 3478 and 3479 | – |
//! | public host number n (n = 0, 1, ..) | 198.51.100.(10+n)/24 | 2001:db8::(10+n)/64 |
//! | home k (k = 1, 2, ..): router WAN `wan` | 203.0.113.(10+k)/24 | 2001:db8::(100+k)/64 |
//! | home k: router LAN (bridge `lan`), the hosts' gateway | 10.0.k.1/24 | 2001:db8:(100+k)::1/64 |
//! | home k: LAN host n | 10.0.k.(10+n)/24 | 2001:db8:(100+k)::(10+n)/64 |
//! | segment s (s = 1, 2, ..): host n, no gateway | 10.1.s.(10+n)/24 | 2001:db8:(200+s)::(10+n)/64 |
//!
//! The internet routes between its two IPv4 subnets and to each home's IPv6
//! /64; it has no route to 10.0.0.0/8. IPv6 groups are written with the decimal digits of the number (host 10 is
//! `::10`, home 1 is `2001:db8:101::`) so they read like the IPv4 plan. A
//! host's interfaces are `eth0`, `eth1`, ... in the order of its segments.
//! Duplicate address detection is off everywhere, so addresses are usable at
//! once. Every bridge has a fixed MAC address (`netsim/bridge.rs`), so a gateway's
//! address never changes when a host joins later.
//!
//! # What a home router does (measured by `netsim_selftest`)
//!
//! IPv4: masquerade on `wan` (nftables, `table inet nat`), and a forward
//! filter that passes LAN→WAN and replies only. That is Linux conntrack NAT,
//! in RFC 4787's terms: endpoint-independent mapping (a LAN socket keeps one
//! external address and port for every destination); the source port is
//! kept unless another LAN host already uses it towards the same
//! destination, in which case the second host gets another port (and keeps
//! that one for every destination); address-and-port-dependent filtering;
//! no hairpinning. UDP mappings live 30 s without a reply and 120 s once
//! both ways saw traffic. A public host cannot connect in unless miniupnpd
//! maps a port: the router rejects what is sent to itself (TCP reset, ICMP
//! port unreachable) and drops what is sent to the LAN. IPv6: no NAT; each
//! home has a routed /64 and the same stateful filter (outbound and replies
//! only), like most home routers; miniupnpd runs IPv4 only, so nothing opens
//! an IPv6 pinhole.
//!
//! # Running programs on a host
//!
//! [`Host::command`] makes a [`Command`] that joins the host's network
//! namespace (`setns` before `exec`) and keeps the test's mount namespace: a
//! `btfs-mount` started that way mounts where the test and every other
//! host's programs see it, so readers may run anywhere. [`Host::enter`] runs
//! Rust code (sockets, [`LtNode::start`], `Mount::background`) with the
//! current thread inside the host's namespace. `ip netns exec NAME cmd` works
//! too (NAME is [`Host::netns`]) but gives each invocation a private mount
//! namespace: a FUSE mount made inside is visible only to that one
//! invocation, so a mount and its readers would have to run in a single
//! `ip netns exec NAME sh -c '...'`. `nsenter --net=/run/netns/NAME` keeps
//! the mount namespace, like [`Host::command`].
//!
//! # Clean-up
//!
//! [`Internet`]'s drop stops the wires and the STUN server, stops miniupnpd,
//! kills (by PID, SIGTERM then SIGKILL) every process still inside one of
//! its namespaces, and deletes the namespaces. `/run/netns` is a private
//! overlay of this test's mount namespace (see [`Internet::new`]), so the
//! namespaces are never visible to other tests or on the host, and nothing
//! stays behind if the test process is killed: its private mounts go with
//! it, and the processes it started get SIGKILL (`PR_SET_PDEATHSIG`).

#![allow(dead_code)] // each test file uses a subset

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::support::Child;

#[path = "netsim/bridge.rs"]
mod bridge;
#[path = "netsim/home.rs"]
mod home;
#[path = "netsim/lt.rs"]
mod lt;
#[path = "netsim/sockets.rs"]
pub mod sockets;
#[path = "netsim/stun.rs"]
pub mod stun;
#[path = "netsim/sys.rs"]
mod sys;
#[path = "netsim/wire.rs"]
mod wire;

// Each test file uses a subset.
#[allow(unused_imports)]
pub use home::{Home, Mapping};
#[allow(unused_imports)]
pub use lt::{Content, make_content};
#[allow(unused_imports)]
pub use sys::{pids_in_netns, with_netns};
#[allow(unused_imports)]
pub use wire::LinkImpairment;

use bridge::{BRIDGE_INET, BRIDGE_SEGMENT, BRIDGE_WIRE, add_bridge};
use sys::{netns_path, run, sysctl};

/// The internet's own namespace: bridge `br0`, router between the public
/// subnets, STUN server.
const INET_NS: &str = "inet";
/// The internet's bridge, in [`INET_NS`].
const INET_BRIDGE: &str = "br0";
/// The two STUN server addresses on the internet (see [`stun`]).
pub const STUN_IPS: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 2),
    Ipv4Addr::new(198, 51, 100, 3),
];
/// The two STUN server ports.
pub const STUN_PORTS: [u16; 2] = [3478, 3479];
/// miniupnpd's HTTP (UPnP description and SOAP) port on a router's LAN side.
pub const MINIUPNPD_HTTP_PORT: u16 = 5000;

/// `n` written as decimal digits but read as hex: an IPv6 group that reads
/// like the IPv4 octet (10 → `0x10`).
fn dec_hex(n: u32) -> u16 {
    u16::from_str_radix(&n.to_string(), 16).expect("at most 4 decimal digits")
}

/// Host, home and segment names become namespace and file names, and words
/// of `ip` command lines: letters, digits, `-`, `_` and `.`, at most 32.
fn check_name(name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    assert!(
        ok,
        "netsim: bad name {name:?} (letters, digits, -_. only, at most 32)"
    );
}

/// The simulated internet: owns every namespace, process, wire and thread
/// it made, and removes them all on drop (see the module docs).
pub struct Internet {
    inner: Arc<Inner>,
    public: Segment,
}

/// State shared by [`Internet`] and its handles ([`Host`], [`Home`],
/// [`Segment`], [`Link`]).
struct Inner {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Every namespace made, in creation order (deleted in reverse).
    namespaces: Vec<String>,
    /// Host, home and segment names taken (names must be unique).
    names: BTreeSet<String>,
    /// Links made so far (names `v<id>` on the switch side).
    links: u32,
    homes: u8,
    segments: u8,
    /// Next host number on each segment, by segment name.
    next_host: BTreeMap<String, u32>,
    /// Running miniupnpd processes, by home name, with their config dirs.
    miniupnpd: BTreeMap<String, (Child, tempfile::TempDir)>,
    /// Wires inserted into links, by link id.
    wires: BTreeMap<u32, wire::Wire>,
    /// The STUN server, once something needed it.
    stun: Option<stun::StunServer>,
    /// Set by [`Internet`]'s drop: handles that outlive it panic.
    closed: bool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        assert!(!st.closed, "netsim: the Internet was dropped");
        st
    }
}

/// Options for [`Internet::home`].
#[derive(Clone, Copy, Debug, Default)]
pub struct HomeOpts {
    /// Start miniupnpd with UPnP IGD on the router at once.
    pub upnp: bool,
    /// Start miniupnpd with NAT-PMP and PCP on the router at once.
    pub natpmp: bool,
    /// No IPv6 in this home (the LAN gets IPv4 only), like many ISPs.
    pub ipv4_only: bool,
}

/// One L2 network: a Linux bridge in some namespace, with an address plan.
/// Attach hosts with [`Internet::host`]. Cheap to clone.
#[derive(Clone)]
pub struct Segment {
    inner: Arc<Inner>,
    name: String,
    /// The namespace that holds the bridge.
    switch_ns: String,
    bridge: String,
    /// First three octets of the hosts' /24.
    net4: [u8; 3],
    /// Third group of the hosts' 2001:db8:X::/64, or None for IPv4 only.
    net6: Option<u16>,
    /// The gateway hosts route through, if the segment has one.
    gw4: Option<Ipv4Addr>,
    gw6: Option<Ipv6Addr>,
}

impl Segment {
    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The hosts' IPv4 network, e.g. `10.1.1.0`, always a /24.
    pub fn net4(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.net4[0], self.net4[1], self.net4[2], 0)
    }

    /// The IPv4 gateway, if any.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.gw4
    }

    fn next_addrs(&self) -> (Ipv4Addr, Option<Ipv6Addr>) {
        let mut st = self.inner.lock();
        let n = st.next_host.entry(self.name.clone()).or_insert(10);
        let host = *n;
        *n += 1;
        assert!(
            host < 255,
            "netsim: too many hosts on segment {}",
            self.name
        );
        let ip4 = Ipv4Addr::new(self.net4[0], self.net4[1], self.net4[2], host as u8);
        let ip6 = self
            .net6
            .map(|g| Ipv6Addr::new(0x2001, 0xdb8, g, 0, 0, 0, 0, dec_hex(host)));
        (ip4, ip6)
    }
}

/// One interface of a [`Host`].
#[derive(Clone)]
pub struct Iface {
    /// Device name inside the host: `eth0`, `eth1`, ... (`wan` on a router).
    pub dev: String,
    /// IPv4 address (prefix /24).
    pub ip: Ipv4Addr,
    /// IPv6 address (prefix /64), if the segment has IPv6.
    pub ip6: Option<Ipv6Addr>,
    /// The segment's name.
    pub segment: String,
    /// The cable to the segment's bridge.
    pub link: Link,
}

/// A machine: one network namespace with one interface per segment. Cheap
/// to clone.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
    name: String,
    netns: String,
    ifaces: Vec<Iface>,
}

impl Host {
    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace's name (for `ip netns exec`, `ip -n`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// `/run/netns/<netns>`, for `nsenter --net=`.
    pub fn netns_path(&self) -> PathBuf {
        netns_path(&self.netns)
    }

    /// The interfaces, in the order of the segments given at creation.
    pub fn ifaces(&self) -> &[Iface] {
        &self.ifaces
    }

    /// Interface `i`; panics if there is none.
    pub fn iface(&self, i: usize) -> &Iface {
        self.ifaces
            .get(i)
            .unwrap_or_else(|| panic!("host {} has no interface {i}", self.name))
    }

    /// IPv4 address of the first interface.
    pub fn ip(&self) -> Ipv4Addr {
        self.iface(0).ip
    }

    /// IPv6 address of the first interface; panics if it has none.
    pub fn ip6(&self) -> Ipv6Addr {
        self.iface(0)
            .ip6
            .unwrap_or_else(|| panic!("host {} has no IPv6 address", self.name))
    }

    /// A command that runs `program` inside this host's network namespace
    /// (it joins it with `setns` between fork and exec) and in the test's
    /// mount namespace. It gets SIGKILL if the thread that spawns it dies
    /// (`PR_SET_PDEATHSIG`, as [`Child`] does), so a test killed outright
    /// leaves no process behind: spawn from the test's own thread. (A
    /// process that forks into the background, like `btfs-mount` without
    /// `--foreground`, loses that; [`Internet`]'s drop still ends it.)
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let ns = File::open(self.netns_path())
            .unwrap_or_else(|e| panic!("open netns {}: {e}", self.netns));
        let mut cmd = Command::new(program);
        // SAFETY: the closure only calls setns(2) and prctl(2), which are
        // async-signal-safe; `ns` is moved in and stays open until the
        // Command is dropped.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Spawns `program args` in this host as a [`Child`] (killed on drop),
    /// labelled `label` in messages.
    pub fn spawn(&self, label: &str, program: &str, args: &[&str]) -> Child {
        let mut cmd = self.command(program);
        cmd.args(args);
        Child::spawn(label, cmd)
    }

    /// Runs `program args` in this host to completion (killed after 30 s)
    /// and returns its output, whatever the exit status.
    pub fn output(&self, program: &str, args: &[&str]) -> Output {
        let mut cmd = self.command(program);
        cmd.args(args);
        sys::output(cmd, Duration::from_secs(30))
    }

    /// Like [`Host::output`] but panics unless it exits 0; returns stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.output(program, args);
        assert!(
            out.status.success(),
            "on {}: {program} {args:?} failed ({}):\n{}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` with the current thread inside this host's network
    /// namespace, then moves the thread back. Sockets made in `f` stay in
    /// this host; processes and threads started in `f` start in it (a tokio
    /// runtime built in `f` has its workers there).
    pub fn enter<T>(&self, f: impl FnOnce() -> T) -> T {
        with_netns(&self.netns, f)
    }

    /// Plugs a new interface (`ethN`, the next number) into `seg` while the
    /// host runs, as a cable or a Wi-Fi network that appears later; no
    /// route is added. Returns it (also in [`Host::ifaces`] of this handle).
    pub fn attach(&mut self, seg: &Segment) -> Iface {
        let dev = format!("eth{}", self.ifaces.len());
        let (ip4, ip6) = seg.next_addrs();
        let link = attach(&self.inner, &self.netns, &dev, seg, ip4, ip6, None);
        let iface = Iface {
            dev,
            ip: ip4,
            ip6,
            segment: seg.name.clone(),
            link,
        };
        self.ifaces.push(iface.clone());
        iface
    }
}

/// The cable between a host's interface and a segment's bridge: a veth
/// pair, into which a userspace wire is inserted the first time delay or
/// loss is asked for. Cheap to clone.
#[derive(Clone)]
pub struct Link {
    inner: Arc<Inner>,
    id: u32,
    host_ns: String,
    host_dev: String,
    switch_ns: String,
    switch_dev: String,
    bridge: String,
}

impl Link {
    /// Limits the rate in both directions to `bits_per_sec` with a token
    /// bucket (`tc qdisc tbf`, queue up to 100 ms, burst 1/100 s or 16 KiB
    /// at least) on each end of the veth.
    pub fn rate_limit(&self, bits_per_sec: u64) {
        let burst = (bits_per_sec / 8 / 100).max(16 * 1024);
        for (ns, dev) in self.ends() {
            run(&format!(
                "tc -n {ns} qdisc replace dev {dev} root tbf rate {bits_per_sec}bit burst {burst} latency 100ms"
            ));
        }
    }

    /// Removes the rate limit of [`Link::rate_limit`].
    pub fn clear_rate_limit(&self) {
        for (ns, dev) in self.ends() {
            let _ = sys::try_run(&format!("tc -n {ns} qdisc del dev {dev} root"));
        }
    }

    /// Delays every frame by `delay` in each direction (so a round trip
    /// over this link takes 2 × `delay` more), keeping their order.
    pub fn set_delay(&self, delay: Duration) {
        self.impairment().set_delay(delay);
    }

    /// Drops each frame, in each direction independently, with probability
    /// `loss` (0.0 ..= 1.0).
    pub fn set_loss(&self, loss: f64) {
        self.impairment().set_loss(loss);
    }

    /// The wire's live settings and counters; inserts the wire on first use.
    pub fn impairment(&self) -> Arc<LinkImpairment> {
        let mut st = self.inner.lock();
        if let Some(w) = st.wires.get(&self.id) {
            return w.impairment();
        }
        let w = self.insert_wire();
        let imp = w.impairment();
        st.wires.insert(self.id, w);
        imp
    }

    /// (namespace, device) of both ends of the veth.
    fn ends(&self) -> [(&str, &str); 2] {
        [
            (&self.host_ns, &self.host_dev),
            (&self.switch_ns, &self.switch_dev),
        ]
    }

    /// Puts a wire between the switch-side veth and the bridge: the veth
    /// goes into a two-port bridge `x<id>` with tap `t<id>a`; tap `t<id>b`
    /// joins the segment's bridge; a pair of threads copies frames between
    /// the taps, delaying and dropping them.
    fn insert_wire(&self) -> wire::Wire {
        let (id, ns) = (self.id, &self.switch_ns);
        add_bridge(ns, &format!("x{id}"), BRIDGE_WIRE, id);
        let (fa, fb) = with_netns(ns, || {
            (
                wire::open_tap(&format!("t{id}a")),
                wire::open_tap(&format!("t{id}b")),
            )
        });
        let w = wire::Wire::start(fa, fb, u64::from(id));
        ipn(ns, &format!("link set t{id}a master x{id} up"));
        ipn(ns, &format!("link set t{id}b master {} up", self.bridge));
        ipn(ns, &format!("link set {} nomaster", self.switch_dev));
        ipn(ns, &format!("link set {} master x{id}", self.switch_dev));
        ipn(ns, &format!("link set x{id} up"));
        w
    }
}

impl Internet {
    /// Builds the internet: namespace `inet` with bridge `br0`, routing
    /// between 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/64.
    ///
    /// Panics unless called inside [`in_netns`](crate::support::in_netns)
    /// (env `BTFS_NETNS`): it mounts a private overlay on `/run` so that
    /// `ip netns add` writes only into this test's mount namespace (`ip`
    /// keeps named namespaces in `/run/netns`, on the host's disk
    /// otherwise), which needs a mount namespace of the test's own. One
    /// `Internet` at a time per test (namespace names are fixed). Takes
    /// about 50 ms; a home with two hosts about 150 ms more.
    pub fn new() -> Internet {
        assert!(
            std::env::var_os("BTFS_NETNS").is_some(),
            "netsim::Internet::new() must run inside support::in_netns (a private network and mount namespace)"
        );
        for (program, package) in [("ip", "iproute2"), ("nft", "nftables"), ("tc", "iproute2")] {
            sys::require(program, package);
        }
        sys::private_run_overlay();
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
        });
        add_ns(&inner, INET_NS, true);
        add_bridge(INET_NS, INET_BRIDGE, BRIDGE_INET, 0);
        ipn(INET_NS, &format!("link set {INET_BRIDGE} up"));
        ipn(
            INET_NS,
            &format!("addr add 198.51.100.1/24 dev {INET_BRIDGE}"),
        );
        ipn(
            INET_NS,
            &format!("addr add 203.0.113.1/24 dev {INET_BRIDGE}"),
        );
        ipn(
            INET_NS,
            &format!("addr add 2001:db8::1/64 dev {INET_BRIDGE} nodad"),
        );
        let public = Segment {
            inner: inner.clone(),
            name: "internet".into(),
            switch_ns: INET_NS.into(),
            bridge: INET_BRIDGE.into(),
            net4: [198, 51, 100],
            net6: Some(0),
            gw4: Some(Ipv4Addr::new(198, 51, 100, 1)),
            gw6: Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        };
        inner.lock().names.insert("internet".into());
        Internet { inner, public }
    }

    /// The internet's segment (198.51.100.0/24, 2001:db8::/64).
    pub fn public(&self) -> &Segment {
        &self.public
    }

    /// The internet's own namespace as a host without interfaces of its own
    /// (bridge `br0`, the router between the public subnets, STUN server).
    pub fn backbone(&self) -> Host {
        Host {
            inner: self.inner.clone(),
            name: INET_NS.into(),
            netns: INET_NS.into(),
            ifaces: Vec::new(),
        }
    }

    /// The STUN server's primary address (starting it if need be); it also
    /// answers on the other [`STUN_IPS`] and [`STUN_PORTS`].
    pub fn stun(&self) -> SocketAddrV4 {
        ensure_stun(&self.inner);
        SocketAddrV4::new(STUN_IPS[0], STUN_PORTS[0])
    }

    /// A new host on the internet with public addresses and default routes.
    pub fn public_host(&self, name: &str) -> Host {
        new_host(&self.inner, name, &[&self.public])
    }

    /// A new isolated LAN segment (a bridge in namespace `<name>-sw`) with
    /// no gateway and no route anywhere: 10.1.s.0/24, 2001:db8:(200+s)::/64.
    pub fn segment(&self, name: &str) -> Segment {
        check_name(name);
        let s = {
            let mut st = self.inner.lock();
            assert!(
                st.names.insert(name.to_string()),
                "netsim: name {name:?} is taken"
            );
            st.segments += 1;
            assert!(st.segments < 250, "netsim: too many segments");
            st.segments
        };
        let ns = format!("{name}-sw");
        add_ns(&self.inner, &ns, false);
        add_bridge(&ns, "sw", BRIDGE_SEGMENT, u32::from(s));
        ipn(&ns, "link set sw up");
        Segment {
            inner: self.inner.clone(),
            name: name.into(),
            switch_ns: ns,
            bridge: "sw".into(),
            net4: [10, 1, s],
            net6: Some(dec_hex(200 + u32::from(s))),
            gw4: None,
            gw6: None,
        }
    }

    /// A new host with one interface on each of `segments` (`eth0`, `eth1`,
    /// ...). Its default routes go via the first segment that has a gateway;
    /// with none (plain [`Internet::segment`]s), it has no default route.
    pub fn host(&self, name: &str, segments: &[&Segment]) -> Host {
        new_host(&self.inner, name, segments)
    }

    /// Names of the namespaces made so far (creation order).
    pub fn netns_names(&self) -> Vec<String> {
        self.inner.lock().namespaces.clone()
    }

    /// Inode numbers of those namespaces (as `/proc/PID/ns/net` shows them),
    /// to check afterwards that no process is left in one.
    pub fn netns_inodes(&self) -> Vec<u64> {
        netns_inodes(&self.netns_names())
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let (daemons, wires, stun, namespaces) = {
            let mut st = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            st.closed = true;
            (
                std::mem::take(&mut st.miniupnpd),
                std::mem::take(&mut st.wires),
                st.stun.take(),
                std::mem::take(&mut st.namespaces),
            )
        };
        drop(daemons); // each Child stops its process (SIGTERM, SIGKILL) and reaps it
        drop(wires); // each Wire stops and joins its threads
        drop(stun);
        sys::kill_in_netns(&netns_inodes(&namespaces));
        for ns in namespaces.iter().rev() {
            if let Err(e) = sys::try_run(&format!("ip netns del {ns}")) {
                eprintln!("netsim: {e}");
            }
        }
    }
}

fn netns_inodes(names: &[String]) -> Vec<u64> {
    names
        .iter()
        .filter_map(|n| fs::metadata(netns_path(n)).ok().map(|m| m.ino()))
        .collect()
}

/// `ip -n NS ARGS`, panicking on failure.
fn ipn(ns: &str, args: &str) {
    run(&format!("ip -n {ns} {args}"));
}

/// `ip netns add NAME`, `lo` up, IPv6 duplicate address detection and
/// router advertisements off, forwarding on if `router`.
fn add_ns(inner: &Arc<Inner>, name: &str, router: bool) {
    {
        let mut st = inner.lock();
        assert!(
            !st.namespaces.iter().any(|n| n == name),
            "netsim: namespace {name} exists"
        );
        st.namespaces.push(name.to_string());
    }
    run(&format!("ip netns add {name}"));
    ipn(name, "link set lo up");
    for conf in ["all", "default"] {
        sysctl(name, &format!("ipv6/conf/{conf}/accept_dad"), "0");
        sysctl(name, &format!("ipv6/conf/{conf}/accept_ra"), "0");
    }
    if router {
        sysctl(name, "ipv4/ip_forward", "1");
        sysctl(name, "ipv6/conf/all/forwarding", "1");
    }
}

/// Creates the namespace and interfaces of a host on `segments`.
fn new_host(inner: &Arc<Inner>, name: &str, segments: &[&Segment]) -> Host {
    check_name(name);
    assert!(!segments.is_empty(), "netsim: host {name} needs a segment");
    assert!(
        inner.lock().names.insert(name.to_string()),
        "netsim: name {name:?} is taken"
    );
    add_ns(inner, name, false);
    let mut ifaces = Vec::new();
    let mut routed = false;
    for (i, seg) in segments.iter().enumerate() {
        let dev = format!("eth{i}");
        let (ip4, ip6) = seg.next_addrs();
        let route = match (routed, seg.gw4) {
            (false, Some(gw4)) => {
                routed = true;
                Some((gw4, seg.gw6))
            }
            _ => None,
        };
        let link = attach(inner, name, &dev, seg, ip4, ip6, route);
        ifaces.push(Iface {
            dev,
            ip: ip4,
            ip6,
            segment: seg.name.clone(),
            link,
        });
    }
    Host {
        inner: inner.clone(),
        name: name.into(),
        netns: name.into(),
        ifaces,
    }
}

/// A veth pair from `dev` in `ns` to the bridge of `seg`, addressed (/24,
/// /64), up, with default routes via `route` if given.
fn attach(
    inner: &Arc<Inner>,
    ns: &str,
    dev: &str,
    seg: &Segment,
    ip4: Ipv4Addr,
    ip6: Option<Ipv6Addr>,
    route: Option<(Ipv4Addr, Option<Ipv6Addr>)>,
) -> Link {
    let id = {
        let mut st = inner.lock();
        st.links += 1;
        st.links
    };
    let (sw_ns, sw_dev) = (&seg.switch_ns, format!("v{id}"));
    run(&format!(
        "ip link add {dev} netns {ns} type veth peer name {sw_dev} netns {sw_ns}"
    ));
    ipn(
        sw_ns,
        &format!("link set {sw_dev} master {} up", seg.bridge),
    );
    ipn(ns, &format!("link set {dev} up"));
    ipn(ns, &format!("addr add {ip4}/24 dev {dev}"));
    if let Some(ip6) = ip6 {
        ipn(ns, &format!("addr add {ip6}/64 dev {dev} nodad"));
    }
    if let Some((gw4, gw6)) = route {
        ipn(ns, &format!("route add default via {gw4}"));
        if let (Some(gw6), Some(_)) = (gw6, ip6) {
            ipn(ns, &format!("-6 route add default via {gw6}"));
        }
    }
    Link {
        inner: inner.clone(),
        id,
        host_ns: ns.into(),
        host_dev: dev.into(),
        switch_ns: sw_ns.clone(),
        switch_dev: sw_dev,
        bridge: seg.bridge.clone(),
    }
}

/// Starts the STUN server in `inet` once: two more addresses on `br0` and a
/// thread answering on both addresses and both ports.
fn ensure_stun(inner: &Arc<Inner>) {
    if inner.lock().stun.is_some() {
        return;
    }
    for ip in STUN_IPS {
        ipn(INET_NS, &format!("addr add {ip}/24 dev {INET_BRIDGE}"));
    }
    let server = with_netns(INET_NS, || stun::StunServer::start(STUN_IPS, STUN_PORTS));
    inner.lock().stun = Some(server);
}
