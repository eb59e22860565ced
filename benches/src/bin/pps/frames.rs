//! The frames the generator sends: an inner Ethernet/IPv4/UDP frame, bare
//! (encapsulation scenarios) or inside VXLAN (decapsulation scenarios).
//!
//! Frame sizes are Ethernet frame sizes on the wire including the 4-byte FCS,
//! as RFC 2544 counts them: a "64-byte" frame is 60 bytes in the buffer. In
//! the decapsulation scenarios the size is the inner frame's, which is what
//! the device under test delivers.

/// Addresses of the topology (documentation ranges only).
pub const GEN_IP: [u8; 4] = [192, 0, 2, 3];
pub const DUT_IP: [u8; 4] = [192, 0, 2, 1];
pub const SINK_IP: [u8; 4] = [192, 0, 2, 2];
pub const INNER_SRC: [u8; 4] = [198, 51, 100, 1];
pub const INNER_DST: [u8; 4] = [198, 51, 100, 2];
pub const INNER_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0xaa, 0x0c, 0x01];
pub const INNER_DST_MAC: [u8; 6] = [0x02, 0, 0, 0xaa, 0x0c, 0x02];
/// Inner UDP ports of flow 0 (the generator varies the source port).
pub const INNER_SPORT: u16 = 20000;
pub const INNER_DPORT: u16 = 80;
pub const VNI: u32 = 42;
pub const VXLAN_PORT: u16 = 4789;
pub const GENEVE_PORT: u16 = 6081;
/// Bytes VXLAN/IPv4 puts in front of the inner frame.
pub const VXLAN_OVERHEAD: usize = 50;

pub fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for w in h.chunks(2) {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn ipv4(total: usize, proto: u8, src: [u8; 4], dst: [u8; 4]) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    h[6] = 0x40; // DF
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src);
    h[16..20].copy_from_slice(&dst);
    let c = ipv4_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// An Ethernet/IPv4/UDP frame (flow 0) of `wire_size` bytes on the wire
/// (`wire_size - 4` in the buffer), UDP 20000 -> 80, payload 0x61.
pub fn inner(wire_size: usize) -> Vec<u8> {
    let len = wire_size.max(64) - 4;
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&INNER_DST_MAC);
    f.extend_from_slice(&INNER_SRC_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ipv4(len - 14, 17, INNER_SRC, INNER_DST));
    f.extend_from_slice(&INNER_SPORT.to_be_bytes());
    f.extend_from_slice(&INNER_DPORT.to_be_bytes());
    f.extend_from_slice(&((len - 34) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(len, 0x61);
    f
}

/// `inner` inside VXLAN (VNI 42, UDP checksum 0) from the generator's VTEP to
/// the device under test's.
pub fn vxlan(wire_size: usize, dst_mac: [u8; 6], src_mac: [u8; 6]) -> Vec<u8> {
    let inner = inner(wire_size);
    let mut h = vxlan_header(dst_mac, src_mac, GEN_IP, DUT_IP);
    h[16..18].copy_from_slice(&((inner.len() + 36) as u16).to_be_bytes());
    let c = ipv4_checksum(&h[14..34]);
    h[24..26].copy_from_slice(&c.to_be_bytes());
    h[34..36].copy_from_slice(&49152u16.to_be_bytes());
    h[38..40].copy_from_slice(&((inner.len() + 16) as u16).to_be_bytes());
    let mut f = h.to_vec();
    f.extend_from_slice(&inner);
    f
}

/// A VXLAN header (VNI 42) from `src` to `dst` with the per-frame fields
/// zero: IPv4 total length and checksum, UDP source port and length.
pub fn vxlan_header(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: [u8; 4],
    dst: [u8; 4],
) -> [u8; VXLAN_OVERHEAD] {
    let mut h = [0u8; VXLAN_OVERHEAD];
    h[0..6].copy_from_slice(&dst_mac);
    h[6..12].copy_from_slice(&src_mac);
    h[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut ip = ipv4(0, 17, src, dst);
    ip[10..12].fill(0);
    h[14..34].copy_from_slice(&ip);
    h[36..38].copy_from_slice(&VXLAN_PORT.to_be_bytes());
    h[42] = 0x08;
    h[46..50].copy_from_slice(&(VNI << 8).to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_valid_checksums_and_sizes() {
        let f = inner(64);
        assert_eq!(f.len(), 60);
        assert_eq!(ipv4_checksum(&f[14..34]), 0);
        let v = vxlan(1400, [2; 6], [4; 6]);
        assert_eq!(v.len(), 1396 + VXLAN_OVERHEAD);
        assert_eq!(ipv4_checksum(&v[14..34]), 0);
        assert_eq!(ipv4_checksum(&v[64..84]), 0);
        assert_eq!(u16::from_be_bytes([v[16], v[17]]) as usize, v.len() - 14);
    }
}
