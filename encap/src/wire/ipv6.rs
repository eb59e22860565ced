//! IPv6 fixed headers (RFC 8200). Extension headers are not walked: a tunnel
//! packet must carry UDP or GRE directly after the fixed header.
//!
//! After `check_len` succeeds no accessor panics.

use super::IpProtocol;
use crate::DropReason;

/// Length of the IPv6 fixed header.
pub const HEADER_LEN: usize = 40;

/// Byte offsets of the header fields, for writers that patch a header in place.
pub mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// A read/write view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the fixed header fits and that the buffer holds the payload length
    /// the header claims (a longer buffer is Ethernet padding).
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DropReason::Ipv6Truncated);
        }
        if HEADER_LEN + self.payload_len() as usize > len {
            return Err(DropReason::Ipv6BadPayloadLen);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn word0(&self) -> u32 {
        u32::from_be_bytes(self.buffer.as_ref()[field::VER_TC_FLOW].try_into().unwrap())
    }

    pub fn version(&self) -> u8 {
        (self.word0() >> 28) as u8
    }

    pub fn traffic_class(&self) -> u8 {
        (self.word0() >> 20) as u8
    }

    pub fn dscp(&self) -> u8 {
        self.traffic_class() >> 2
    }

    pub fn ecn(&self) -> u8 {
        self.traffic_class() & 3
    }

    pub fn flow_label(&self) -> u32 {
        self.word0() & 0x000f_ffff
    }

    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes(self.buffer.as_ref()[field::LENGTH].try_into().unwrap())
    }

    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::NXT_HDR])
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src_addr(&self) -> [u8; 16] {
        self.buffer.as_ref()[field::SRC].try_into().unwrap()
    }

    pub fn dst_addr(&self) -> [u8; 16] {
        self.buffer.as_ref()[field::DST].try_into().unwrap()
    }

    /// The payload, cut to the payload length.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..HEADER_LEN + self.payload_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let w = (6u32 << 28) | ((traffic_class as u32) << 20) | (flow_label & 0x000f_ffff);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&w.to_be_bytes())
    }

    /// Sets the ECN bits, keeping version, DSCP and flow label.
    pub fn set_ecn(&mut self, ecn: u8) {
        let w = (self.word0() & !(3 << 20)) | (((ecn & 3) as u32) << 20);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&w.to_be_bytes())
    }

    pub fn set_payload_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes())
    }

    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::NXT_HDR] = p.into()
    }

    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v
    }

    pub fn set_src_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a)
    }

    pub fn set_dst_addr(&mut self, a: [u8; 16]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a)
    }
}

/// High-level representation of an IPv6 fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub next_header: IpProtocol,
    pub payload_len: u16,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
}

impl Ipv6Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, DropReason> {
        p.check_len()?;
        if p.version() != 6 {
            return Err(DropReason::Ipv6BadVersion);
        }
        Ok(Ipv6Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version_tc_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(self.payload_len);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2001:db8::1 -> 2001:db8::2, UDP, 4 bytes payload, TC 0xb8, flow 0x12345, hop limit 64
    static PACKET: [u8; 44] = [
        0x6b, 0x81, 0x23, 0x45, 0x00, 0x04, 0x11, 0x40, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, //
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, //
        1, 2, 3, 4,
    ];

    fn repr() -> Ipv6Repr {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let mut dst = src;
        src[15] = 1;
        dst[15] = 2;
        Ipv6Repr {
            src,
            dst,
            next_header: IpProtocol::Udp,
            payload_len: 4,
            hop_limit: 64,
            traffic_class: 0xb8,
            flow_label: 0x12345,
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!((p.version(), p.dscp(), p.ecn()), (6, 46, 0));
        assert_eq!(p.flow_label(), 0x12345);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn parse_and_emit() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p).unwrap(), repr());
        let mut buf = [0xa5u8; 44];
        repr().emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[..40], &PACKET[..40]);
    }

    #[test]
    fn rejects() {
        assert_eq!(Packet::new_checked(&PACKET[..39]).unwrap_err(), DropReason::Ipv6Truncated);
        assert_eq!(Packet::new_checked(&PACKET[..43]).unwrap_err(), DropReason::Ipv6BadPayloadLen);
        let mut v = PACKET;
        v[0] = 0x4b;
        let p = Packet::new_checked(&v[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p).unwrap_err(), DropReason::Ipv6BadVersion);
    }

    #[test]
    fn set_ecn_keeps_the_rest() {
        let mut buf = PACKET;
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_ecn(3);
        assert_eq!((p.version(), p.dscp(), p.ecn(), p.flow_label()), (6, 46, 3, 0x12345));
    }
}
