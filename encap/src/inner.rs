//! What encapsulation needs to know about the inner frame: where its IP header
//! is, its TOS/TTL/DF (for the inherit options and ECN), and a stable flow hash
//! (for the outer UDP source port and IPv6 flow label, which ECMP and RSS use).

use crate::wire::{ethernet, ipv4, ipv6, l2};
use crate::DropReason;

/// The inner network layer, as far as encapsulation cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InnerL3 {
    /// Not IP (ARP, LLDP, ...): hashed on L2 addresses.
    #[default]
    Other,
    Ipv4,
    Ipv6,
}

/// Facts about an inner Ethernet frame, found by one short parse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InnerMeta {
    pub l3: InnerL3,
    /// Offset of the IP header (past the VLAN tags `wire::l2::walk` skips).
    pub l3_offset: u16,
    /// IPv4 TOS or IPv6 traffic class: DSCP << 2 | ECN.
    pub tos: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 DF bit; true for IPv6, which routers never fragment.
    pub df: bool,
    /// Stable hash of the inner flow.
    pub hash: u32,
}

const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// One round of a multiply-xorshift mix; deterministic across runs and builds,
/// so a flow keeps its outer source port (and its ECMP path) across restarts.
#[inline(always)]
fn mix(h: u64, v: u64) -> u64 {
    let x = (h ^ v).wrapping_mul(SEED);
    x ^ (x >> 29)
}

#[inline(always)]
fn finish(h: u64) -> u32 {
    let h = (h ^ (h >> 32)).wrapping_mul(SEED);
    (h >> 32) as u32
}

#[inline(always)]
fn ports(proto: u8, l4: &[u8]) -> u64 {
    // TCP, UDP, SCTP and UDP-Lite all start with 16-bit source and destination ports.
    if matches!(proto, 6 | 17 | 132 | 136) && l4.len() >= 4 {
        u32::from_be_bytes([l4[0], l4[1], l4[2], l4[3]]) as u64
    } else {
        0
    }
}

impl InnerMeta {
    /// Parses an inner Ethernet frame. Fails only for frames shorter than an
    /// Ethernet header, that end inside a VLAN tag, or that claim IP but
    /// whose IP header is not there.
    #[inline]
    pub fn parse(frame: &[u8]) -> Result<InnerMeta, DropReason> {
        if frame.len() < ethernet::HEADER_LEN {
            return Err(DropReason::InnerTooShort);
        }
        let Ok(h) = l2::walk(frame) else { return Err(DropReason::InnerMalformed) };
        let (et, l3_offset) = (h.ethertype, h.l3_offset);
        let l3 = &frame[l3_offset..];
        match et {
            0x0800 => {
                if l3.len() < ipv4::HEADER_LEN || l3[0] >> 4 != 4 || l3[0] & 0x0f < 5 {
                    return Err(DropReason::InnerMalformed);
                }
                let p = ipv4::Packet::new_unchecked(l3);
                let addrs = u64::from_be_bytes(l3[12..20].try_into().unwrap());
                let proto = l3[9];
                let hl = p.header_len() as usize;
                let l4 = if p.is_fragment() || hl > l3.len() { &[][..] } else { &l3[hl..] };
                let h = mix(mix(mix(0, addrs), proto as u64), ports(proto, l4));
                Ok(InnerMeta {
                    l3: InnerL3::Ipv4,
                    l3_offset: l3_offset as u16,
                    tos: l3[1],
                    ttl: p.ttl(),
                    df: p.dont_frag(),
                    hash: finish(h),
                })
            }
            0x86dd => {
                if l3.len() < ipv6::HEADER_LEN || l3[0] >> 4 != 6 {
                    return Err(DropReason::InnerMalformed);
                }
                let p = ipv6::Packet::new_unchecked(l3);
                let w = |i: usize| u64::from_be_bytes(l3[i..i + 8].try_into().unwrap());
                let proto = l3[6];
                let h = mix(mix(mix(mix(0, w(8)), w(16)), w(24)), w(32));
                let h = mix(mix(h, proto as u64), ports(proto, &l3[ipv6::HEADER_LEN..]));
                Ok(InnerMeta {
                    l3: InnerL3::Ipv6,
                    l3_offset: l3_offset as u16,
                    tos: p.traffic_class(),
                    ttl: p.hop_limit(),
                    df: true,
                    hash: finish(h),
                })
            }
            _ => {
                let macs = u64::from_be_bytes(frame[0..8].try_into().unwrap());
                let rest = u32::from_be_bytes(frame[8..12].try_into().unwrap()) as u64;
                let h = mix(mix(mix(0, macs), rest), et as u64);
                Ok(InnerMeta {
                    l3: InnerL3::Other,
                    l3_offset: l3_offset as u16,
                    tos: 0,
                    ttl: 0,
                    df: false,
                    hash: finish(h),
                })
            }
        }
    }

    /// ECN bits of the inner IP header (Not-ECT for non-IP frames).
    pub fn ecn(&self) -> u8 {
        self.tos & 3
    }

    pub fn dscp(&self) -> u8 {
        self.tos >> 2
    }
}

/// Maps a flow hash into the inclusive port range `[lo, hi]` (lo <= hi).
#[inline(always)]
pub const fn port_in_range(hash: u32, lo: u16, hi: u16) -> u16 {
    let span = (hi - lo) as u64 + 1;
    lo + ((hash as u64 * span) >> 32) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_udp(sport: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0xb9, 0, 28, 0, 1, 0x40, 0, 17, 17, 0, 0]);
        f.extend_from_slice(&[198, 51, 100, 1, 198, 51, 100, 2]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&[0, 80, 0, 8, 0, 0]);
        f
    }

    #[test]
    fn ipv4_fields() {
        let m = InnerMeta::parse(&v4_udp(1000)).unwrap();
        assert_eq!(m.l3, InnerL3::Ipv4);
        assert_eq!((m.l3_offset, m.dscp(), m.ecn(), m.ttl, m.df), (14, 46, 1, 17, true));
    }

    #[test]
    fn hash_is_stable_and_depends_on_ports() {
        let a = InnerMeta::parse(&v4_udp(1000)).unwrap().hash;
        assert_eq!(a, InnerMeta::parse(&v4_udp(1000)).unwrap().hash);
        let spread: std::collections::HashSet<u16> = (0..64)
            .map(|p| port_in_range(InnerMeta::parse(&v4_udp(p)).unwrap().hash, 49152, 65535))
            .collect();
        assert!(spread.len() > 48, "64 flows map to only {} source ports", spread.len());
    }

    #[test]
    fn vlan_tags_are_skipped() {
        let mut f = v4_udp(1);
        f.splice(12..12, [0x81, 0x00, 0x00, 0x64, 0x88, 0xa8, 0x00, 0x0a]);
        f[12..14].copy_from_slice(&[0x88, 0xa8]);
        f[16..18].copy_from_slice(&[0x81, 0x00]);
        let m = InnerMeta::parse(&f).unwrap();
        assert_eq!((m.l3, m.l3_offset), (InnerL3::Ipv4, 22));
        // A frame that ends inside a tag is malformed, not too short.
        assert_eq!(InnerMeta::parse(&f[..17]).unwrap_err(), DropReason::InnerMalformed);
        // A third tag is the EtherType: not IP, hashed on L2.
        let mut three = v4_udp(1);
        three.splice(12..12, [0x81, 0x00, 0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00, 0, 3]);
        let m = InnerMeta::parse(&three).unwrap();
        assert_eq!((m.l3, m.l3_offset), (InnerL3::Other, 22));
    }

    #[test]
    fn short_and_malformed() {
        assert_eq!(InnerMeta::parse(&[0; 13]).unwrap_err(), DropReason::InnerTooShort);
        let f = v4_udp(1);
        assert_eq!(InnerMeta::parse(&f[..30]).unwrap_err(), DropReason::InnerMalformed);
        let arp = [0xff; 14];
        assert_eq!(InnerMeta::parse(&arp).unwrap().l3, InnerL3::Other);
    }

    #[test]
    fn port_range_edges() {
        assert_eq!(port_in_range(0, 49152, 65535), 49152);
        assert_eq!(port_in_range(u32::MAX, 49152, 65535), 65535);
        assert_eq!(port_in_range(u32::MAX, 7, 7), 7);
    }
}
