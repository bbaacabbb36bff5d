//! Bridges of the simulated internet: each gets a fixed MAC address.

use super::ipn;

/// Adds bridge `name` in `ns` with multicast snooping off and the fixed,
/// locally administered MAC address `02:00:KIND:N:N:N` (`n`, below 2^24,
/// in the last three bytes).
///
/// The fixed address matters: a Linux bridge whose address was never set
/// takes the lowest address among its ports, so it would change whenever a
/// host joins later with a lower one (a random veth address). A bridge
/// that is a gateway (`br0`, a home's `lan`) would then leave every host
/// that has its old address in its ARP cache sending to an address it no
/// longer accepts, for as long as that entry lives (up to ~45 s, then
/// probes): a home router forwarding through the internet went silent
/// that long when the next home was created. Real routers keep their MAC.
pub fn add_bridge(ns: &str, name: &str, kind: u8, n: u32) {
    let [top, b2, b1, b0] = n.to_be_bytes();
    assert_eq!(top, 0, "netsim: bridge number {n} too big");
    ipn(
        ns,
        &format!(
            "link add {name} address 02:00:{kind:02x}:{b2:02x}:{b1:02x}:{b0:02x} type bridge mcast_snooping 0"
        ),
    );
}

/// [`add_bridge`] kinds: the internet's `br0`, a home's `lan`, a segment's
/// `sw`, a wire's `x<id>`.
pub const BRIDGE_INET: u8 = 1;
pub const BRIDGE_HOME: u8 = 2;
pub const BRIDGE_SEGMENT: u8 = 3;
pub const BRIDGE_WIRE: u8 = 4;
