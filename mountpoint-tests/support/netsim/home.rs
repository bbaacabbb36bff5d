//! Homes on the simulated internet: a NAT router namespace with nftables and,
//! on demand, Debian's miniupnpd; the hosts on its LAN.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use super::bridge::{BRIDGE_HOME, add_bridge};
use super::sys::{self, run_with_stdin};
use super::{
    HomeOpts, Host, INET_NS, Iface, Inner, Internet, Link, MINIUPNPD_HTTP_PORT, STUN_IPS,
    STUN_PORTS, Segment, add_ns, attach, check_name, dec_hex, ensure_stun, ipn, new_host,
};
use crate::support::{Child, wait_until};

/// The router's nftables ruleset. miniupnpd (if started) adds its rules to
/// the three empty chains; their names are set in its config.
///
/// The input chain answers what the internet sends to the router itself
/// with a TCP reset or ICMP port unreachable, like OpenWrt's default, except
/// replies, ICMP, and the STUN server's answers (miniupnpd's STUN check asks
/// for answers from another address and port, which must get in). Refusing
/// in the filter hook matters: a packet the router accepted for itself would
/// leave a conntrack entry that takes the external port of a later outbound
/// flow to the same peer (seen as a new mapping, which breaks holepunching),
/// or that shadows a port mapping added later.
///
/// The forward chain lets the LAN out and lets hosts of the LAN reach each
/// other: with `br_netfilter` loaded (it is on the CI machine), frames
/// bridged between two ports of `lan` pass this hook too, as `lan` to
/// `lan`, and a home LAN that drops them is not a home LAN.
const ROUTER_RULESET: &str = r#"
table inet filter {
    chain miniupnpd {
    }
    chain input {
        type filter hook input priority filter; policy accept;
        ct state established,related accept
        iifname { "lo", "lan" } accept
        meta l4proto { icmp, ipv6-icmp } accept
        udp sport { 3478, 3479 } accept
        meta l4proto tcp reject with tcp reset
        reject
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname { "lan", "wan" } accept
        jump miniupnpd
    }
}
table inet nat {
    chain prerouting_miniupnpd {
    }
    chain postrouting_miniupnpd {
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        jump prerouting_miniupnpd
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        jump postrouting_miniupnpd
        meta nfproto ipv4 oifname "wan" masquerade
    }
}
"#;

/// A home: a NAT router namespace (`<name>-gw`) with `wan` on the internet
/// and bridge `lan`, and the hosts on that LAN. Cheap to clone.
#[derive(Clone)]
pub struct Home {
    inner: Arc<Inner>,
    name: String,
    /// k in the address plan.
    index: u8,
    router: Host,
    lan: Segment,
}

impl Internet {
    /// A new home `name` behind a NAT router (see [`Home`] and the address
    /// plan), with miniupnpd started as `opts` asks.
    pub fn home(&self, name: &str, opts: HomeOpts) -> Home {
        check_name(name);
        let k = {
            let mut st = self.inner.lock();
            assert!(
                st.names.insert(name.to_string()),
                "netsim: name {name:?} is taken"
            );
            st.homes += 1;
            assert!(st.homes < 90, "netsim: too many homes");
            st.homes
        };
        let gw_ns = format!("{name}-gw");
        add_ns(&self.inner, &gw_ns, true);
        let wan_ip = Ipv4Addr::new(203, 0, 113, 10 + k);
        let wan_ip6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, dec_hex(100 + u32::from(k)));
        let internet_gw = (Ipv4Addr::new(203, 0, 113, 1), self.public.gw6);
        let wan = attach(
            &self.inner,
            &gw_ns,
            "wan",
            &self.public,
            wan_ip,
            Some(wan_ip6),
            Some(internet_gw),
        );
        let net6 = (!opts.ipv4_only).then(|| dec_hex(100 + u32::from(k)));
        let gw4 = Ipv4Addr::new(10, 0, k, 1);
        let gw6 = net6.map(|g| Ipv6Addr::new(0x2001, 0xdb8, g, 0, 0, 0, 0, 1));
        add_bridge(&gw_ns, "lan", BRIDGE_HOME, u32::from(k));
        ipn(&gw_ns, "link set lan up");
        ipn(&gw_ns, &format!("addr add {gw4}/24 dev lan"));
        if let (Some(g), Some(gw6)) = (net6, gw6) {
            ipn(&gw_ns, &format!("addr add {gw6}/64 dev lan nodad"));
            let prefix = Ipv6Addr::new(0x2001, 0xdb8, g, 0, 0, 0, 0, 0);
            ipn(INET_NS, &format!("-6 route add {prefix}/64 via {wan_ip6}"));
        }
        let router = Host {
            inner: self.inner.clone(),
            name: format!("{name} router"),
            netns: gw_ns.clone(),
            ifaces: vec![Iface {
                dev: "wan".into(),
                ip: wan_ip,
                ip6: Some(wan_ip6),
                segment: self.public.name.clone(),
                link: wan,
            }],
        };
        let mut nft = router.command("nft");
        nft.args(["-f", "-"]);
        run_with_stdin(nft, ROUTER_RULESET);
        let lan = Segment {
            inner: self.inner.clone(),
            name: format!("{name} lan"),
            switch_ns: gw_ns,
            bridge: "lan".into(),
            net4: [10, 0, k],
            net6,
            gw4: Some(gw4),
            gw6,
        };
        let home = Home {
            inner: self.inner.clone(),
            name: name.into(),
            index: k,
            router,
            lan,
        };
        if opts.upnp || opts.natpmp {
            home.start_miniupnpd(opts.upnp, opts.natpmp);
        }
        home
    }
}

impl Home {
    /// The home's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The router as a host: run `nft`, `cat /proc/net/nf_conntrack`, ...
    /// there. Its only interface is `wan`; the LAN bridge is `lan`.
    pub fn router(&self) -> &Host {
        &self.router
    }

    /// The LAN segment (to attach multi-homed hosts with [`Internet::host`]).
    pub fn lan(&self) -> &Segment {
        &self.lan
    }

    /// The router's public IPv4 address, the NAT's external address.
    pub fn wan_ip(&self) -> Ipv4Addr {
        self.router.ip()
    }

    /// The router's LAN address, the hosts' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        self.lan.gw4.expect("a home LAN has a gateway")
    }

    /// The router's `wan` link (delay, loss or rate limits for the whole home).
    pub fn wan(&self) -> &Link {
        &self.router.iface(0).link
    }

    /// A new host on the LAN, its default routes via the router.
    pub fn host(&self, name: &str) -> Host {
        new_host(&self.inner, name, &[&self.lan])
    }

    /// Starts Debian's `miniupnpd` (nftables backend) on the router: UPnP IGD
    /// (HTTP on [`MINIUPNPD_HTTP_PORT`], SSDP) if `upnp`, NAT-PMP and PCP
    /// (UDP 5351) if `natpmp`, on `lan` only; IPv4 only; mappings only to
    /// the asking host's own address, ports 1024-65535; its config, leases
    /// and pid file in a temp dir under the private `/run`. Waits until it
    /// serves (a few ms); panics with its log if it does not within 10 s.
    ///
    /// It learns its external address from the internet's STUN server
    /// ([`STUN_IPS`]): miniupnpd 2.3 refuses to map ports when the WAN
    /// address is a reserved one, as 203.0.113.0/24 is, unless STUN shows
    /// that nothing filters in front of it. Clients that check the external
    /// address themselves may refuse it for the same reason: `upnpc` needs
    /// `-i` ("ignore"); libtorrent does not check.
    pub fn start_miniupnpd(&self, upnp: bool, natpmp: bool) {
        assert!(
            upnp || natpmp,
            "start_miniupnpd: neither UPnP nor NAT-PMP asked for"
        );
        assert!(
            !self.inner.lock().miniupnpd.contains_key(&self.name),
            "miniupnpd already runs in home {}",
            self.name
        );
        sys::require("miniupnpd", "miniupnpd-nftables");
        ensure_stun(&self.inner);
        // In the private /run (see Internet::new): gone with the test even
        // if it is killed.
        let dir = tempfile::Builder::new()
            .prefix(&format!("netsim-miniupnpd-{}-", self.name))
            .tempdir_in("/run")
            .expect("temp dir for miniupnpd");
        let yes = |b: bool| if b { "yes" } else { "no" };
        let conf = format!(
            "ext_ifname=wan\n\
             ext_perform_stun=yes\n\
             ext_stun_host={stun}\n\
             ext_stun_port={stun_port}\n\
             listening_ip=lan\n\
             http_port={http}\n\
             enable_upnp={upnp}\n\
             enable_natpmp={natpmp}\n\
             ipv6_disable=yes\n\
             secure_mode=yes\n\
             system_uptime=no\n\
             uuid=00000000-0000-4000-8000-0000000000{k:02x}\n\
             lease_file={dir}/leases\n\
             upnp_table_name=filter\n\
             upnp_nat_table_name=nat\n\
             upnp_forward_chain=miniupnpd\n\
             upnp_nat_chain=prerouting_miniupnpd\n\
             upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
             allow 1024-65535 10.0.{k}.0/24 1024-65535\n\
             deny 0-65535 0.0.0.0/0 0-65535\n",
            stun = STUN_IPS[0],
            stun_port = STUN_PORTS[0],
            http = MINIUPNPD_HTTP_PORT,
            upnp = yes(upnp),
            natpmp = yes(natpmp),
            k = self.index,
            dir = dir.path().display(),
        );
        let conf_path = dir.path().join("miniupnpd.conf");
        fs::write(&conf_path, conf).expect("write miniupnpd.conf");
        let mut cmd = self.router.command("miniupnpd");
        cmd.arg("-d")
            .arg("-f")
            .arg(&conf_path)
            .arg("-P")
            .arg(dir.path().join("miniupnpd.pid"));
        let mut child = Child::spawn(&format!("miniupnpd[{}]", self.name), cmd);
        let serving = |log: &str| {
            (!upnp || log.contains("HTTP listening on port"))
                && (!natpmp || log.contains("Listening for NAT-PMP/PCP traffic"))
        };
        wait_until(Duration::from_secs(10), || {
            serving(&child.stderr()) || child.try_wait().is_some()
        });
        let log = child.stderr();
        if !serving(&log)
            || child.try_wait().is_some()
            || !log.contains("Port forwarding is now enabled")
        {
            panic!(
                "miniupnpd in home {} is not serving (exit {:?}); its log:\n{log}",
                self.name,
                child.try_wait()
            );
        }
        self.inner
            .lock()
            .miniupnpd
            .insert(self.name.clone(), (child, dir));
    }

    /// Stops miniupnpd and removes every mapping it made (its nftables
    /// chains are flushed), as a router reboot would. No-op if not running.
    pub fn stop_miniupnpd(&self) {
        let entry = self.inner.lock().miniupnpd.remove(&self.name);
        if let Some((mut child, _dir)) = entry {
            child.stop(Duration::from_secs(3));
        }
        for (table, chain) in [
            ("filter", "miniupnpd"),
            ("nat", "prerouting_miniupnpd"),
            ("nat", "postrouting_miniupnpd"),
        ] {
            self.router
                .run("nft", &["flush", "chain", "inet", table, chain]);
        }
    }

    /// miniupnpd's log so far (empty if it does not run).
    pub fn miniupnpd_log(&self) -> String {
        let st = self.inner.lock();
        st.miniupnpd
            .get(&self.name)
            .map(|(c, _)| c.stderr())
            .unwrap_or_default()
    }

    /// The port mappings in force: the DNAT rules miniupnpd put into the
    /// router's `prerouting_miniupnpd` chain.
    pub fn mappings(&self) -> Vec<Mapping> {
        let text = self.router.run(
            "nft",
            &["list", "chain", "inet", "nat", "prerouting_miniupnpd"],
        );
        text.lines().filter_map(Mapping::parse).collect()
    }
}

/// A port mapping on a home router (see [`Home::mappings`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// "tcp" or "udp".
    pub protocol: &'static str,
    /// Port on the router's WAN address.
    pub external_port: u16,
    /// Where it leads on the LAN.
    pub internal: SocketAddrV4,
}

impl Mapping {
    /// Parses one nft rule as miniupnpd 2.3.1 writes it, e.g.
    /// `iif "wan" @nh,72,8 0x6 th dport 7001 dnat ip to 10.0.1.10:7001`;
    /// None for any other line.
    fn parse(line: &str) -> Option<Mapping> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |w: &str| {
            words
                .iter()
                .position(|x| *x == w)
                .and_then(|i| words.get(i + 1))
        };
        let internal = after("to")?.parse().ok()?;
        let external_port = after("dport")?.parse().ok()?;
        let protocol = match *after("@nh,72,8")? {
            "0x6" => "tcp",
            "0x11" => "udp",
            _ => return None,
        };
        Some(Mapping {
            protocol,
            external_port,
            internal,
        })
    }
}
