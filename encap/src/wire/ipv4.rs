//! IPv4 headers (RFC 791), with the ECN field of RFC 3168.
//!
//! After `check_len` succeeds no accessor panics.

use super::checksum;
use super::IpProtocol;
use crate::DropReason;

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;

/// Byte offsets of the header fields, for writers that patch a header in place.
pub mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Flag bits of the flags/fragment-offset word.
pub const FLAG_DF: u16 = 0x4000;
pub const FLAG_MF: u16 = 0x2000;

/// A read/write view of an IPv4 packet.
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

    /// Checks that the buffer holds the header the header-length field announces
    /// and at least the total length the packet claims. A buffer longer than the
    /// total length is accepted (Ethernet padding); use `payload` to cut it off.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DropReason::Ipv4Truncated);
        }
        let hl = self.header_len() as usize;
        if hl < HEADER_LEN || hl > len {
            return Err(DropReason::Ipv4BadHeaderLen);
        }
        let tl = self.total_len() as usize;
        if tl < hl || tl > len {
            return Err(DropReason::Ipv4BadTotalLen);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    pub fn header_len(&self) -> u8 {
        (self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn dscp(&self) -> u8 {
        self.buffer.as_ref()[field::TOS] >> 2
    }

    pub fn ecn(&self) -> u8 {
        self.buffer.as_ref()[field::TOS] & 0x03
    }

    pub fn total_len(&self) -> u16 {
        u16::from_be_bytes(self.buffer.as_ref()[field::LENGTH].try_into().unwrap())
    }

    pub fn ident(&self) -> u16 {
        u16::from_be_bytes(self.buffer.as_ref()[field::IDENT].try_into().unwrap())
    }

    fn flg_off(&self) -> u16 {
        u16::from_be_bytes(self.buffer.as_ref()[field::FLG_OFF].try_into().unwrap())
    }

    pub fn dont_frag(&self) -> bool {
        self.flg_off() & FLAG_DF != 0
    }

    pub fn more_frags(&self) -> bool {
        self.flg_off() & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.flg_off() & 0x1fff) * 8
    }

    pub fn is_fragment(&self) -> bool {
        self.flg_off() & (FLAG_MF | 0x1fff) != 0
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn next_header(&self) -> IpProtocol {
        IpProtocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes(self.buffer.as_ref()[field::CHECKSUM].try_into().unwrap())
    }

    pub fn src_addr(&self) -> [u8; 4] {
        self.buffer.as_ref()[field::SRC].try_into().unwrap()
    }

    pub fn dst_addr(&self) -> [u8; 4] {
        self.buffer.as_ref()[field::DST].try_into().unwrap()
    }

    pub fn verify_checksum(&self) -> bool {
        let hl = self.header_len() as usize;
        checksum::verify(checksum::add(0, &self.buffer.as_ref()[..hl]))
    }

    /// The payload, cut to the total length.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[self.header_len() as usize..self.total_len() as usize]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_version_and_header_len(&mut self, version: u8, header_len: u8) {
        self.buffer.as_mut()[field::VER_IHL] = (version << 4) | ((header_len / 4) & 0x0f);
    }

    pub fn set_dscp_ecn(&mut self, dscp: u8, ecn: u8) {
        self.buffer.as_mut()[field::TOS] = (dscp << 2) | (ecn & 3);
    }

    /// Sets the ECN field and patches the header checksum incrementally.
    pub fn set_ecn_and_update_checksum(&mut self, ecn: u8) {
        let b = self.buffer.as_mut();
        let old = u16::from_be_bytes([b[0], b[1]]);
        b[field::TOS] = (b[field::TOS] & !3) | (ecn & 3);
        let new = u16::from_be_bytes([b[0], b[1]]);
        let c = u16::from_be_bytes([b[10], b[11]]);
        b[field::CHECKSUM].copy_from_slice(&checksum::update16(c, old, new).to_be_bytes());
    }

    pub fn set_total_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes())
    }

    pub fn set_ident(&mut self, v: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&v.to_be_bytes())
    }

    /// Sets DF/MF and the fragment offset (in bytes, a multiple of 8).
    pub fn set_flags_and_offset(&mut self, df: bool, mf: bool, offset: u16) {
        let v = (if df { FLAG_DF } else { 0 }) | (if mf { FLAG_MF } else { 0 }) | (offset / 8);
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&v.to_be_bytes())
    }

    pub fn set_ttl(&mut self, v: u8) {
        self.buffer.as_mut()[field::TTL] = v
    }

    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::PROTOCOL] = p.into()
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes())
    }

    pub fn set_src_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a)
    }

    pub fn set_dst_addr(&mut self, a: [u8; 4]) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a)
    }

    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len() as usize;
        let c = checksum::checksum(&self.buffer.as_ref()[..hl]);
        self.set_checksum(c);
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len() as usize, self.total_len() as usize);
        &mut self.buffer.as_mut()[hl..tl]
    }
}

/// High-level representation of an IPv4 header without options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub protocol: IpProtocol,
    pub payload_len: u16,
    pub ttl: u8,
    pub dscp: u8,
    pub ecn: u8,
    pub dont_frag: bool,
    pub ident: u16,
}

impl Ipv4Repr {
    /// Parses a header, verifying version and header checksum. Fragments and
    /// options are reported by the view, not refused here.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, DropReason> {
        p.check_len()?;
        if p.version() != 4 {
            return Err(DropReason::Ipv4BadVersion);
        }
        if !p.verify_checksum() {
            return Err(DropReason::Ipv4BadChecksum);
        }
        Ok(Ipv4Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            protocol: p.next_header(),
            payload_len: p.total_len() - p.header_len() as u16,
            ttl: p.ttl(),
            dscp: p.dscp(),
            ecn: p.ecn(),
            dont_frag: p.dont_frag(),
            ident: p.ident(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Emits the header (with a correct checksum) into the first 20 bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version_and_header_len(4, HEADER_LEN as u8);
        p.set_dscp_ecn(self.dscp, self.ecn);
        p.set_total_len(HEADER_LEN as u16 + self.payload_len);
        p.set_ident(self.ident);
        p.set_flags_and_offset(self.dont_frag, false, 0);
        p.set_ttl(self.ttl);
        p.set_next_header(self.protocol);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
        p.set_checksum(0);
        let c = checksum::checksum(&p.buffer.as_ref()[..HEADER_LEN]);
        p.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 192.0.2.1 -> 192.0.2.2, UDP, 8 bytes of payload, DF, TTL 64, id 0x1234.
    static PACKET: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0xa4, 0x99, 192, 0, 2, 1, 192,
        0, 2, 2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x00, 0x11,
    ];

    fn repr() -> Ipv4Repr {
        Ipv4Repr {
            src: [192, 0, 2, 1],
            dst: [192, 0, 2, 2],
            protocol: IpProtocol::Udp,
            payload_len: 8,
            ttl: 64,
            dscp: 0,
            ecn: 0,
            dont_frag: true,
            ident: 0x1234,
        }
    }

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.next_header(), IpProtocol::Udp);
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &PACKET[20..]);
    }

    #[test]
    fn parse_and_emit() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p).unwrap(), repr());
        let mut buf = [0xa5u8; 28];
        repr().emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(&buf[..20], &PACKET[..20]);
    }

    #[test]
    fn rejects() {
        let mut bad = PACKET;
        bad[11] ^= 1;
        let p = Packet::new_checked(&bad[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p).unwrap_err(), DropReason::Ipv4BadChecksum);
        assert_eq!(Packet::new_checked(&PACKET[..19]).unwrap_err(), DropReason::Ipv4Truncated);
        assert_eq!(Packet::new_checked(&PACKET[..27]).unwrap_err(), DropReason::Ipv4BadTotalLen);
        let mut ihl = PACKET;
        ihl[0] = 0x44;
        assert_eq!(Packet::new_checked(&ihl[..]).unwrap_err(), DropReason::Ipv4BadHeaderLen);
        let mut ver = PACKET;
        ver[0] = 0x65;
        let p = Packet::new_checked(&ver[..]).unwrap();
        assert_eq!(Ipv4Repr::parse(&p).unwrap_err(), DropReason::Ipv4BadVersion);
    }

    #[test]
    fn ecn_update_keeps_checksum_valid() {
        let mut buf = PACKET;
        let mut p = Packet::new_unchecked(&mut buf[..]);
        p.set_ecn_and_update_checksum(3);
        assert_eq!(p.ecn(), 3);
        assert!(p.verify_checksum());
    }
}
