//! Port mapping on the home router: UPnP IGD (`igd-next`) first, then
//! NAT-PMP/PCP (`crab_nat`), for our TCP listen port and our UDP ports
//! (uTP, the DHT). Mappings are renewed at half their lease and deleted
//! when the client stops.
//!
//! The router is looked for only on the IPv4 default route's network: with
//! no default route (an offline LAN, a test namespace with loopback only)
//! nothing is sent at all. UPnP discovery is an SSDP `M-SEARCH` multicast
//! to 239.255.255.250:1900 sent from our address towards the gateway, so it
//! leaves by the default route's interface only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, PortMappingType, TimeoutConfig};
use igd_next::aio::Gateway;
use igd_next::aio::tokio::Tokio;
use igd_next::{AddPortError, PortMappingProtocol, SearchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{MapMethod, Reach, Reachability};

/// Lease asked for each mapping (seconds); renewed at half of what the
/// router grants.
pub const LEASE_SECS: u32 = 3600;
/// How long an SSDP search for a UPnP gateway waits for an answer.
const SSDP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one UPnP control request (HTTP to the router) may take.
const UPNP_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Retries of NAT-PMP/PCP requests: 250 ms, 500 ms, 1 s (RFC 6886 allows
/// up to 64 s; a router that answers does so within milliseconds).
const PMP_TIMEOUTS: TimeoutConfig = TimeoutConfig {
    initial_timeout: Duration::from_millis(250),
    max_retries: 2,
    max_retry_timeout: Some(Duration::from_secs(1)),
};
/// After a failure, when the router is asked again (it may come up later).
const RETRY_AFTER: Duration = Duration::from_secs(300);
/// The longest wait between renewals (also for permanent UPnP leases: a
/// router that rebooted forgot them).
const MAX_RENEW_INTERVAL: Duration = Duration::from_secs(1200);
/// How long deleting the mappings on exit may take in all.
pub const DELETE_TIMEOUT: Duration = Duration::from_secs(3);
/// The mapping description routers show (UPnP).
const DESCRIPTION: &str = "btfs-mount";

/// The ports to map: TCP (peer connections) and UDP (uTP, the DHT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    pub tcp: u16,
    pub udp: Vec<u16>,
}

/// Starts the port mapper: sets `reach` to [`Reachability::Probing`], then
/// to `Mapped` or `Unreachable`; calls `on_external` with the router's
/// external address each time a mapping is made. Runs until `shutdown`
/// becomes true, then deletes its mappings (within [`DELETE_TIMEOUT`]) and
/// ends: await the handle to know they are gone.
pub fn start(
    reach: Reach,
    ports: Ports,
    on_external: Box<dyn Fn(IpAddr) + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        reach.set(Reachability::Probing);
        loop {
            let established = tokio::select! {
                s = establish(&ports) => s,
                _ = stopped(&mut shutdown) => return,
            };
            let mut session = match established {
                Ok(s) => s,
                Err(reason) => {
                    tracing::info!(
                        "not reachable from the internet: {reason}; peers are reached by dialling out only"
                    );
                    reach.set(Reachability::Unreachable { reason });
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY_AFTER) => continue,
                        _ = stopped(&mut shutdown) => return,
                    }
                }
            };
            let external = session.external();
            tracing::info!(
                "reachable from the internet at {external} ({}): {}",
                session.method,
                session.describe()
            );
            on_external(external.ip());
            reach.set(Reachability::Mapped {
                external,
                method: session.method,
            });
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(session.renew_at().into()) => {
                        if let Err(e) = session.renew().await {
                            tracing::warn!("port mapping: renewing at the router failed: {e}");
                            break;
                        }
                        tracing::debug!("port mapping renewed: {}", session.describe());
                    }
                    _ = stopped(&mut shutdown) => {
                        session.delete().await;
                        return;
                    }
                }
            }
            reach.set(Reachability::Probing);
        }
    })
}

/// Resolves once `shutdown` is true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// One router's mappings, all made by the same method.
struct Session {
    method: MapMethod,
    /// The router's external address.
    external_ip: IpAddr,
    kind: Kind,
}

enum Kind {
    Upnp {
        gateway: Box<Gateway<Tokio>>,
        /// Our LAN address the router forwards to.
        local: Ipv4Addr,
        /// The lease granted (0: permanent).
        lease: u32,
        maps: Vec<UpnpMap>,
        renewed: Instant,
    },
    Pmp {
        maps: Vec<PortMapping>,
    },
}

/// One UPnP mapping: protocol, our port, the router's port.
struct UpnpMap {
    protocol: PortMappingProtocol,
    internal: u16,
    external: u16,
}

impl Session {
    /// Where peers dial us: the external address and the TCP port mapped.
    fn external(&self) -> SocketAddr {
        let port = match &self.kind {
            Kind::Upnp { maps, .. } => maps
                .iter()
                .find(|m| m.protocol == PortMappingProtocol::TCP)
                .map(|m| m.external),
            Kind::Pmp { maps } => maps
                .iter()
                .find(|m| matches!(m.protocol(), InternetProtocol::Tcp))
                .map(|m| m.external_port().get()),
        };
        SocketAddr::new(self.external_ip, port.unwrap_or(0))
    }

    /// The mappings, e.g. `TCP 6881 -> 6881, UDP 6881 -> 6881`.
    fn describe(&self) -> String {
        let list: Vec<String> = match &self.kind {
            Kind::Upnp { maps, .. } => maps
                .iter()
                .map(|m| format!("{} {} -> {}", m.protocol, m.external, m.internal))
                .collect(),
            Kind::Pmp { maps } => maps
                .iter()
                .map(|m| {
                    format!(
                        "{} {} -> {} ({} s)",
                        m.protocol(),
                        m.external_port(),
                        m.internal_port(),
                        m.lifetime()
                    )
                })
                .collect(),
        };
        list.join(", ")
    }

    /// When the mappings must be renewed: half their lease from the last
    /// renewal, at most [`MAX_RENEW_INTERVAL`].
    fn renew_at(&self) -> Instant {
        let now = Instant::now();
        let at = match &self.kind {
            Kind::Upnp { lease, renewed, .. } if *lease > 0 => {
                *renewed + Duration::from_secs(u64::from(*lease) / 2)
            }
            Kind::Upnp { renewed, .. } => *renewed + MAX_RENEW_INTERVAL,
            Kind::Pmp { maps } => maps
                .iter()
                .map(|m| {
                    let half = Duration::from_secs(u64::from(m.lifetime()) / 2);
                    m.expiration().checked_sub(half).unwrap_or(now)
                })
                .min()
                .unwrap_or(now + MAX_RENEW_INTERVAL),
        };
        at.min(now + MAX_RENEW_INTERVAL)
    }

    /// Asks the router again for every mapping (same ports).
    async fn renew(&mut self) -> Result<(), String> {
        match &mut self.kind {
            Kind::Upnp {
                gateway,
                local,
                lease,
                maps,
                renewed,
            } => {
                for m in maps.iter() {
                    let local = SocketAddr::from((*local, m.internal));
                    let r = gateway.add_port(m.protocol, m.external, local, *lease, DESCRIPTION);
                    tokio::time::timeout(UPNP_REQUEST_TIMEOUT, r)
                        .await
                        .map_err(|_| "UPnP: the router did not answer".to_string())?
                        .map_err(|e| format!("UPnP {} {}: {e}", m.protocol, m.external))?;
                }
                *renewed = Instant::now();
            }
            Kind::Pmp { maps } => {
                for m in maps.iter_mut() {
                    m.renew().await.map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Deletes every mapping at the router, within [`DELETE_TIMEOUT`].
    async fn delete(self) {
        let method = self.method;
        let work = async move {
            match self.kind {
                Kind::Upnp { gateway, maps, .. } => {
                    for m in maps {
                        if let Err(e) = gateway.remove_port(m.protocol, m.external).await {
                            tracing::info!("UPnP: deleting {} {}: {e}", m.protocol, m.external);
                        }
                    }
                }
                Kind::Pmp { maps } => {
                    for m in maps {
                        if let Err((e, _)) = m.try_drop().await {
                            tracing::info!("{method}: deleting a mapping: {e}");
                        }
                    }
                }
            }
        };
        match tokio::time::timeout(DELETE_TIMEOUT, work).await {
            Ok(()) => tracing::info!("port mappings deleted ({method})"),
            Err(_) => tracing::warn!("port mapping: the router did not confirm the deletion"),
        }
    }
}

/// Finds the router and maps every port, by UPnP, else by NAT-PMP/PCP.
/// Errors: one line saying why we are not reachable.
async fn establish(ports: &Ports) -> Result<Session, String> {
    let gateway = default_gateway().ok_or("no IPv4 default route")?;
    let local = local_ip_towards(gateway).map_err(|e| format!("no route to {gateway}: {e}"))?;
    let upnp_err = match upnp(local, ports).await {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    tracing::debug!("port mapping: UPnP: {upnp_err}");
    match pmp(gateway, local, ports).await {
        Ok(s) => Ok(s),
        Err(e) => {
            tracing::info!("port mapping: UPnP: {upnp_err}; NAT-PMP/PCP at {gateway}: {e}");
            Err("no UPnP or NAT-PMP/PCP gateway mapped our ports".into())
        }
    }
}

/// UPnP IGD: SSDP search from `local`, the router's external address, then
/// `AddPortMapping` for each port (another external port if ours is taken).
async fn upnp(local: Ipv4Addr, ports: &Ports) -> Result<Session, String> {
    let mut opts = SearchOptions::default();
    opts.bind_addr = SocketAddr::from((local, 0));
    opts.timeout = Some(SSDP_TIMEOUT);
    opts.single_search_timeout = Some(SSDP_TIMEOUT);
    let gateway = igd_next::aio::tokio::search_gateway(opts)
        .await
        .map_err(|e| format!("no gateway answered the SSDP search ({e})"))?;
    let external_ip = tokio::time::timeout(UPNP_REQUEST_TIMEOUT, gateway.get_external_ip())
        .await
        .map_err(|_| format!("{} did not answer", gateway.addr))?
        .map_err(|e| format!("{}: external address: {e}", gateway.addr))?;
    let mut lease = LEASE_SECS;
    let mut maps = Vec::new();
    let wanted = std::iter::once((PortMappingProtocol::TCP, ports.tcp))
        .chain(ports.udp.iter().map(|p| (PortMappingProtocol::UDP, *p)));
    for (protocol, port) in wanted {
        let to = SocketAddr::from((local, port));
        let add = async {
            match gateway
                .add_port(protocol, port, to, lease, DESCRIPTION)
                .await
            {
                Ok(()) => Ok(port),
                Err(AddPortError::OnlyPermanentLeasesSupported) => {
                    lease = 0;
                    gateway
                        .add_port(protocol, port, to, 0, DESCRIPTION)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(port)
                }
                Err(AddPortError::PortInUse) => gateway
                    .add_any_port(protocol, to, lease, DESCRIPTION)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        let external = tokio::time::timeout(UPNP_REQUEST_TIMEOUT, add)
            .await
            .map_err(|_| format!("{} did not answer", gateway.addr))
            .and_then(|r: Result<u16, String>| r);
        match external {
            Ok(external) => maps.push(UpnpMap {
                protocol,
                internal: port,
                external,
            }),
            Err(e) => {
                let s = Session {
                    method: MapMethod::Upnp,
                    external_ip,
                    kind: Kind::Upnp {
                        gateway: Box::new(gateway.clone()),
                        local,
                        lease,
                        maps,
                        renewed: Instant::now(),
                    },
                };
                s.delete().await;
                return Err(format!("{} refused {protocol} {port}: {e}", gateway.addr));
            }
        }
    }
    Ok(Session {
        method: MapMethod::Upnp,
        external_ip,
        kind: Kind::Upnp {
            gateway: Box::new(gateway),
            local,
            lease,
            maps,
            renewed: Instant::now(),
        },
    })
}

/// NAT-PMP/PCP at the default gateway: a mapping for each port (PCP
/// first, NAT-PMP if the router speaks only that), and the external address.
async fn pmp(gateway: Ipv4Addr, local: Ipv4Addr, ports: &Ports) -> Result<Session, String> {
    let wanted = std::iter::once((InternetProtocol::Tcp, ports.tcp))
        .chain(ports.udp.iter().map(|p| (InternetProtocol::Udp, *p)));
    let mut maps: Vec<PortMapping> = Vec::new();
    for (protocol, port) in wanted {
        let Some(internal) = NonZeroU16::new(port) else {
            continue;
        };
        let opts = PortMappingOptions {
            external_port: Some(internal),
            lifetime_seconds: Some(LEASE_SECS),
            timeout_config: Some(PMP_TIMEOUTS),
        };
        match PortMapping::new(gateway.into(), local.into(), protocol, internal, opts).await {
            Ok(m) => maps.push(m),
            Err(e) => {
                for m in maps {
                    let _ = m.try_drop().await;
                }
                return Err(format!("{protocol} {port}: {e}"));
            }
        }
    }
    let first = maps.first().ok_or("nothing to map")?;
    let (method, external_ip) = match first.mapping_type() {
        PortMappingType::Pcp { external_ip, .. } => (MapMethod::Pcp, external_ip),
        PortMappingType::NatPmp => {
            let ip = crab_nat::natpmp::external_address(gateway.into(), Some(PMP_TIMEOUTS))
                .await
                .map_err(|e| format!("external address: {e}"))?;
            (MapMethod::NatPmp, IpAddr::V4(ip))
        }
    };
    Ok(Session {
        method,
        external_ip,
        kind: Kind::Pmp { maps },
    })
}

/// The IPv4 default route's gateway, from `/proc/net/route` (Linux).
fn default_gateway() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_default_gateway(&text)
}

/// The gateway of the first default route (destination 0, flag
/// `RTF_GATEWAY`) in `/proc/net/route` text, whose addresses are
/// little-endian hex.
fn parse_default_gateway(text: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let hex = |s: &str| u32::from_str_radix(s, 16).ok();
        let (dest, gw, flags) = (hex(f.get(1)?)?, hex(f.get(2)?)?, hex(f.get(3)?)?);
        let mask = hex(f.get(7)?)?;
        (dest == 0 && mask == 0 && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY)
            .then(|| Ipv4Addr::from(gw.to_le_bytes()))
    })
}

/// Our address on the way to `gateway` (a connected UDP socket; nothing is
/// sent).
fn local_ip_towards(gateway: Ipv4Addr) -> std::io::Result<Ipv4Addr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    s.connect(SocketAddrV4::new(gateway, crab_nat::GATEWAY_PORT))?;
    match s.local_addr()?.ip() {
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(_) => Err(std::io::Error::other("an IPv6 source address")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_gateway_from_proc_net_route() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t0001000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                    eth0\t00000000\t0101000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(
            parse_default_gateway(text),
            Some(Ipv4Addr::new(10, 0, 1, 1))
        );
        let no_default = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
                          eth0\t0001000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(parse_default_gateway(no_default), None);
        assert_eq!(parse_default_gateway("garbage\n\n1 2 3"), None);
    }
}
