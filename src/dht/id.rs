//! Node ids: XOR distance (BEP 5) and the id restriction of BEP 42
//! ("DHT Security extension"), which ties the first 21 bits of a node's id to
//! its external IP address.

use std::net::IpAddr;

use super::krpc::Id;

/// XOR distance between two ids (BEP 5, section "Routing Table").
pub fn distance(a: &Id, b: &Id) -> Id {
    let mut d = [0u8; 20];
    for i in 0..20 {
        d[i] = a[i] ^ b[i];
    }
    d
}

/// Number of leading zero bits of `a ^ b` (160 when equal).
pub fn common_prefix_bits(a: &Id, b: &Id) -> usize {
    for i in 0..20 {
        let x = a[i] ^ b[i];
        if x != 0 {
            return i * 8 + x.leading_zeros() as usize;
        }
    }
    160
}

/// 20 random bytes.
pub fn random_id() -> Id {
    let mut id = [0u8; 20];
    getrandom::fill(&mut id).expect("OS random source");
    id
}

/// A random id that shares exactly the first `bits` bits with `base` and
/// differs at bit `bits` (when `bits < 160`); with `exact = false` the bit
/// after the prefix is random too.
pub fn random_id_with_prefix(base: &Id, bits: usize, exact: bool) -> Id {
    let mut id = random_id();
    let bits = bits.min(160);
    for i in 0..bits {
        let (byte, mask) = (i / 8, 0x80u8 >> (i % 8));
        id[byte] = (id[byte] & !mask) | (base[byte] & mask);
    }
    if exact && bits < 160 {
        let (byte, mask) = (bits / 8, 0x80u8 >> (bits % 8));
        id[byte] = (id[byte] & !mask) | (!base[byte] & mask);
    }
    id
}

/// CRC-32C (Castagnoli), as used by BEP 42.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// True for addresses BEP 42 exempts from the id check: loopback, private
/// (RFC 1918), link-local, unspecified, and IPv6 unique-local/link-local.
pub fn is_exempt(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_unspecified()
        }
        IpAddr::V6(v6) => {
            let s = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (s & 0xfe00) == 0xfc00
                || (s & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_exempt(&IpAddr::V4(v4)))
        }
    }
}

/// The 32-bit CRC that fixes the first 21 bits of an id for `ip` and the
/// 3-bit value `r` (BEP 42, section "Node ID restriction").
fn bep42_crc(ip: &IpAddr, r: u8) -> u32 {
    match ip {
        IpAddr::V4(v4) => {
            let mut o = v4.octets();
            for (b, m) in o.iter_mut().zip([0x03, 0x0f, 0x3f, 0xff]) {
                *b &= m;
            }
            o[0] |= (r & 7) << 5;
            crc32c(&o)
        }
        IpAddr::V6(v6) => {
            let mut o: [u8; 8] = v6.octets()[..8].try_into().expect("8 of 16");
            for (b, m) in o
                .iter_mut()
                .zip([0x01, 0x03, 0x07, 0x0f, 0x1f, 0x3f, 0x7f, 0xff])
            {
                *b &= m;
            }
            o[0] |= (r & 7) << 5;
            crc32c(&o)
        }
    }
}

/// A node id valid for `ip` under BEP 42, with last byte `rand` and the rest
/// random.
pub fn bep42_id(ip: &IpAddr, rand: u8) -> Id {
    let crc = bep42_crc(ip, rand & 7);
    let mut id = random_id();
    id[0] = (crc >> 24) as u8;
    id[1] = (crc >> 16) as u8;
    id[2] = ((crc >> 8) as u8 & 0xf8) | (id[2] & 7);
    id[19] = rand;
    id
}

/// True when `id` satisfies BEP 42 for `ip` (always true for exempt IPs).
pub fn bep42_valid(id: &Id, ip: &IpAddr) -> bool {
    if is_exempt(ip) {
        return true;
    }
    let crc = bep42_crc(ip, id[19] & 7);
    id[0] == (crc >> 24) as u8
        && id[1] == (crc >> 16) as u8
        && (id[2] & 0xf8) == ((crc >> 8) as u8 & 0xf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bep42_test_vectors() {
        // BEP 42, section "Test vectors": IP, rand, first 3 bytes of the id.
        for (ip, r, prefix) in [
            ("124.31.75.21", 1u8, "5fbfbf"),
            ("21.75.31.124", 86, "5a3ce9"),
            ("65.23.51.170", 22, "a5d432"),
            ("84.124.73.14", 65, "1b0321"),
            ("43.213.53.83", 90, "e56f6c"),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let id = bep42_id(&ip, r);
            let p = hex::decode(prefix).unwrap();
            assert_eq!(&id[..2], &p[..2], "{ip}");
            assert_eq!(id[2] & 0xf8, p[2] & 0xf8, "{ip}");
            assert_eq!(id[19], r);
            assert!(bep42_valid(&id, &ip));
            let mut bad = id;
            bad[0] ^= 1;
            assert!(!bep42_valid(&bad, &ip));
        }
        assert!(bep42_valid(&[0; 20], &"127.0.0.1".parse().unwrap()));
        assert!(bep42_valid(&[0; 20], &"192.168.1.1".parse().unwrap()));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(bep42_valid(&bep42_id(&v6, 3), &v6));
    }

    #[test]
    fn prefixes() {
        let base = [0xAA; 20];
        for bits in [0, 1, 7, 8, 100, 159] {
            let id = random_id_with_prefix(&base, bits, true);
            assert_eq!(common_prefix_bits(&base, &id), bits);
        }
        assert_eq!(common_prefix_bits(&base, &base), 160);
    }
}
