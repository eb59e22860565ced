//! The virtio-net header that TAP devices (`IFF_VNET_HDR`) and packet
//! sockets (`PACKET_VNET_HDR`) put in front of every frame: the hook through
//! which a workload hands over checksum work and TCP/UDP super-frames, and
//! through which we tell it which checksums we checked.
//!
//! Layout (struct virtio_net_hdr, 10 bytes, host byte order as the kernel
//! uses for TAP without TUNSETVNETLE/BE on little-endian hosts):
//!
//! ```text
//!  0       1          2        4          6           8            10
//!  | flags | gso_type | hdr_len | gso_size | csum_start | csum_offset |
//! ```

use encap::wire::{checksum, ipv4, ipv6, l2, tcp, udp};

pub const HDR_LEN: usize = 10;

/// Byte offsets of `struct virtio_net_hdr`'s fields.
mod field {
    use core::ops::Range;
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Range<usize> = 2..4;
    pub const GSO_SIZE: Range<usize> = 4..6;
    pub const CSUM_START: Range<usize> = 6..8;
    pub const CSUM_OFFSET: Range<usize> = 8..10;
}

pub const F_NEEDS_CSUM: u8 = 1;
pub const F_DATA_VALID: u8 = 2;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..HDR_LEN)?;
        let u = |r: core::ops::Range<usize>| u16::from_ne_bytes([b[r.start], b[r.start + 1]]);
        Some(VnetHdr {
            flags: b[field::FLAGS],
            gso_type: b[field::GSO_TYPE],
            hdr_len: u(field::HDR_LEN),
            gso_size: u(field::GSO_SIZE),
            csum_start: u(field::CSUM_START),
            csum_offset: u(field::CSUM_OFFSET),
        })
    }

    pub fn write(&self, b: &mut [u8]) {
        b[field::FLAGS] = self.flags;
        b[field::GSO_TYPE] = self.gso_type;
        b[field::HDR_LEN].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[field::GSO_SIZE].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[field::CSUM_START].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[field::CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

/// Why a frame's virtio-net header cannot be honoured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffloadError {
    /// The checksum start or field lies outside the frame.
    BadChecksumOffsets,
    /// Segmentation of a kind we do not do (legacy UFO), or without the
    /// partial checksum that must come with it, or of a frame that is not
    /// the IP/TCP or IP/UDP the header claims.
    BadSegmentation,
}

/// Finishes a partial checksum (`F_NEEDS_CSUM`): the field at
/// `csum_start + csum_offset` holds the pseudo-header sum, and the checksum
/// covers everything from `csum_start` to the end of the frame.
pub fn complete_checksum(frame: &mut [u8], h: &VnetHdr) -> Result<(), OffloadError> {
    let start = h.csum_start as usize;
    let field = start + h.csum_offset as usize;
    if field + 2 > frame.len() || start > frame.len() {
        return Err(OffloadError::BadChecksumOffsets);
    }
    let c = checksum::checksum(&frame[start..]);
    // A computed zero goes out as 0xffff: for UDP zero means "no checksum",
    // and in ones' complement both are the same number.
    let c = if c == 0 { 0xffff } else { c };
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// True if the frame is IPv4 or IPv6 (no extension headers) carrying TCP or
/// UDP whose checksum is present and correct: what a TAP port may mark
/// `F_DATA_VALID` so the workload's kernel does not check it again.
pub fn l4_checksum_valid(frame: &[u8]) -> bool {
    let Ok(l2) = l2::walk(frame) else { return false };
    let ip = &frame[l2.l3_offset..];
    let (proto, l4, acc) = match l2.ethertype {
        0x0800 if ip.len() >= ipv4::HEADER_LEN => {
            let p = ipv4::Packet::new_unchecked(ip);
            let (ihl, total) = (p.header_len() as usize, p.total_len() as usize);
            if p.is_fragment() || ihl < ipv4::HEADER_LEN || total < ihl || total > ip.len() {
                return false;
            }
            let l4 = &ip[ihl..total];
            let proto = u8::from(p.next_header());
            (proto, l4, checksum::pseudo_v4(p.src_addr(), p.dst_addr(), proto, l4.len() as u16))
        }
        0x86dd if ip.len() >= ipv6::HEADER_LEN => {
            let p = ipv6::Packet::new_unchecked(ip);
            let plen = p.payload_len() as usize;
            if ipv6::HEADER_LEN + plen > ip.len() {
                return false;
            }
            let l4 = &ip[ipv6::HEADER_LEN..ipv6::HEADER_LEN + plen];
            let proto = u8::from(p.next_header());
            (proto, l4, checksum::pseudo_v6(&p.src_addr(), &p.dst_addr(), proto, plen as u32))
        }
        _ => return false,
    };
    match proto {
        6 if l4.len() >= tcp::HEADER_LEN => checksum::verify(checksum::add(acc, l4)),
        // A zero UDP checksum over IPv4 means none was sent: nothing verified.
        17 if l4.len() >= udp::HEADER_LEN && udp::Packet::new_unchecked(l4).checksum() != 0 => {
            checksum::verify(checksum::add(acc, l4))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        engine::packet_spec::build(&format!(
            "eth/ipv4(src=192.0.2.1,dst=192.0.2.2)/udp(sport=1,dport=2,csum=auto)/hex(data={})",
            payload.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ))
        .unwrap()
    }

    #[test]
    fn header_round_trips() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 66,
            gso_size: 1398,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut b = [0u8; HDR_LEN];
        h.write(&mut b);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert!(h.is_gso());
        assert_eq!(VnetHdr::parse(&b[..9]), None);
    }

    #[test]
    fn completes_a_partial_udp_checksum() {
        let good = udp_frame(b"hello, overlay");
        assert!(l4_checksum_valid(&good));
        // What a sender with checksum offload hands over: the field holds the
        // pseudo-header sum only.
        let mut partial = good.clone();
        let ip = &good[14..34];
        let plen = (good.len() - 34) as u16;
        let seed = checksum::pseudo_v4(
            ip[12..16].try_into().unwrap(),
            ip[16..20].try_into().unwrap(),
            17,
            plen,
        );
        partial[40..42].copy_from_slice(&checksum::fold(seed).to_be_bytes());
        assert!(!l4_checksum_valid(&partial));
        let h =
            VnetHdr { flags: F_NEEDS_CSUM, csum_start: 34, csum_offset: 6, ..Default::default() };
        complete_checksum(&mut partial, &h).unwrap();
        assert_eq!(partial, good);
    }

    #[test]
    fn refuses_offsets_outside_the_frame() {
        let mut f = udp_frame(b"x");
        let n = f.len() as u16;
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: n - 1,
            csum_offset: 6,
            ..Default::default()
        };
        assert_eq!(complete_checksum(&mut f, &h), Err(OffloadError::BadChecksumOffsets));
    }

    #[test]
    fn data_valid_only_for_correct_checksums() {
        let mut f = udp_frame(b"abc");
        assert!(l4_checksum_valid(&f));
        let n = f.len();
        f[n - 1] ^= 1;
        assert!(!l4_checksum_valid(&f));
        let zero = engine::packet_spec::build(
            "eth/ipv4(src=192.0.2.1,dst=192.0.2.2)/udp(sport=1,dport=2,csum=0)/hex(data=0102)",
        )
        .unwrap();
        assert!(!l4_checksum_valid(&zero), "a zero UDP checksum verifies nothing");
        let arp = engine::packet_spec::build("eth(type=0x0806)/hex(data=0001)").unwrap();
        assert!(!l4_checksum_valid(&arp));
        let tcp6 = engine::packet_spec::build(
            "eth/ipv6(src=2001:db8::1,dst=2001:db8::2)/tcp(sport=1,dport=2)/hex(data=00)",
        )
        .unwrap();
        assert!(l4_checksum_valid(&tcp6));
    }

    #[test]
    fn finds_ip_past_vlan_tags() {
        let f = engine::packet_spec::build(
            "eth/vlan(vid=5)/ipv4(src=192.0.2.1,dst=192.0.2.2)/udp(sport=1,dport=2,csum=auto)",
        )
        .unwrap();
        assert!(l4_checksum_valid(&f));
        // Two tags (802.1ad outside) are walked too; a third is not IP.
        let mut qinq = f.clone();
        qinq.splice(12..12, [0x88, 0xa8, 0x00, 0x07]);
        assert!(l4_checksum_valid(&qinq));
        let mut three = qinq.clone();
        three.splice(12..12, [0x81, 0x00, 0x00, 0x08]);
        assert!(!l4_checksum_valid(&three));
        assert!(!l4_checksum_valid(&qinq[..20]), "cut inside the tags");
    }
}
