//! Ethernet II frames and 802.1Q / 802.1ad tags.
//!
//! After `check_len` succeeds no accessor panics.

use crate::DropReason;

/// A MAC address.
pub type MacAddr = [u8; 6];

/// Length of an untagged Ethernet header.
pub const HEADER_LEN: usize = 14;
/// Length of one VLAN tag.
pub const TAG_LEN: usize = 4;

/// EtherType values the dataplane looks at; everything else is kept as `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtherType {
    Ipv4,
    Arp,
    Ipv6,
    /// 802.1Q customer tag (0x8100).
    Vlan,
    /// 802.1ad service tag (0x88a8).
    QinQ,
    /// Transparent Ethernet bridging (0x6558), GRE's protocol for Ethernet payloads.
    TransEther,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x86dd => EtherType::Ipv6,
            0x8100 => EtherType::Vlan,
            0x88a8 => EtherType::QinQ,
            0x6558 => EtherType::TransEther,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(v: EtherType) -> u16 {
        match v {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Vlan => 0x8100,
            EtherType::QinQ => 0x88a8,
            EtherType::TransEther => 0x6558,
            EtherType::Unknown(v) => v,
        }
    }
}

/// Byte ranges of the Ethernet header, for writers that patch a frame in place.
pub mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
}

/// Byte ranges within a [`VlanTag`] view, which starts at the tag's TCI (its
/// TPID is the EtherType field before it).
pub mod tag_field {
    use core::ops::Range;
    pub const TCI: Range<usize> = 0..2;
    pub const ETHERTYPE: Range<usize> = 2..4;
}

/// A read/write view of an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    pub fn check_len(&self) -> Result<(), DropReason> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(DropReason::EthTruncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn dst_addr(&self) -> MacAddr {
        self.buffer.as_ref()[field::DST].try_into().unwrap()
    }

    pub fn src_addr(&self) -> MacAddr {
        self.buffer.as_ref()[field::SRC].try_into().unwrap()
    }

    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType::from(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a)
    }

    pub fn set_src_addr(&mut self, a: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a)
    }

    pub fn set_ethertype(&mut self, t: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(t).to_be_bytes())
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// High-level representation of an Ethernet header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthernetRepr {
    pub src: MacAddr,
    pub dst: MacAddr,
    pub ethertype: EtherType,
}

impl EthernetRepr {
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Self, DropReason> {
        frame.check_len()?;
        Ok(EthernetRepr {
            src: frame.src_addr(),
            dst: frame.dst_addr(),
            ethertype: frame.ethertype(),
        })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_dst_addr(self.dst);
        frame.set_src_addr(self.src);
        frame.set_ethertype(self.ethertype);
    }
}

/// A tag control information word: priority, drop eligibility, VLAN id.
#[inline(always)]
pub const fn tci(pcp: u8, dei: bool, vid: u16) -> u16 {
    ((pcp as u16 & 7) << 13) | ((dei as u16) << 12) | (vid & 0x0fff)
}

/// The four bytes that push a tag in front of a frame's EtherType field: the
/// TPID (taking the EtherType's place, which now follows the tag), then the TCI.
#[inline(always)]
pub const fn tag_bytes(tpid: u16, tci: u16) -> [u8; TAG_LEN] {
    let (t, c) = (tpid.to_be_bytes(), tci.to_be_bytes());
    [t[0], t[1], c[0], c[1]]
}

/// A view of one VLAN tag: the 2-byte TCI followed by the next EtherType. The
/// tag's own TPID is the EtherType of the header before it.
#[derive(Debug, Clone)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, DropReason> {
        let t = Self::new_unchecked(buffer);
        t.check_len()?;
        Ok(t)
    }

    pub fn check_len(&self) -> Result<(), DropReason> {
        if self.buffer.as_ref().len() < TAG_LEN {
            Err(DropReason::VlanTruncated)
        } else {
            Ok(())
        }
    }

    pub fn tci(&self) -> u16 {
        let b = &self.buffer.as_ref()[tag_field::TCI];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    pub fn vlan_id(&self) -> u16 {
        self.tci() & 0x0fff
    }

    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[tag_field::ETHERTYPE];
        EtherType::from(u16::from_be_bytes([b[0], b[1]]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    pub fn set_tci(&mut self, pcp: u8, dei: bool, vid: u16) {
        self.buffer.as_mut()[tag_field::TCI].copy_from_slice(&tci(pcp, dei, vid).to_be_bytes());
    }

    /// Sets the VLAN id, keeping the priority and DEI bits.
    pub fn set_vlan_id(&mut self, vid: u16) {
        let keep = self.tci() & 0xf000;
        self.buffer.as_mut()[tag_field::TCI]
            .copy_from_slice(&(keep | (vid & 0x0fff)).to_be_bytes());
    }

    pub fn set_ethertype(&mut self, t: EtherType) {
        self.buffer.as_mut()[tag_field::ETHERTYPE].copy_from_slice(&u16::from(t).to_be_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static FRAME: [u8; 22] = [
        0x02, 0, 0, 0, 0, 0x02, // dst
        0x02, 0, 0, 0, 0, 0x01, // src
        0x81, 0x00, // 802.1Q
        0xa0, 0x64, // pcp 5, vid 100
        0x08, 0x00, // IPv4
        0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn deconstruct() {
        let f = Frame::new_checked(&FRAME[..]).unwrap();
        assert_eq!(f.dst_addr(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(f.src_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.ethertype(), EtherType::Vlan);
        let t = VlanTag::new_checked(f.payload()).unwrap();
        assert_eq!((t.pcp(), t.dei(), t.vlan_id()), (5, false, 100));
        assert_eq!(t.ethertype(), EtherType::Ipv4);
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; 22];
        let mut f = Frame::new_unchecked(&mut buf[..]);
        EthernetRepr {
            src: [2, 0, 0, 0, 0, 1],
            dst: [2, 0, 0, 0, 0, 2],
            ethertype: EtherType::Vlan,
        }
        .emit(&mut f);
        let mut t = VlanTag::new_unchecked(&mut f.payload_mut()[..4]);
        t.set_tci(5, false, 100);
        t.set_ethertype(EtherType::Ipv4);
        buf[18..].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(buf, FRAME);
    }

    #[test]
    fn tag_bytes_are_what_a_tagged_frame_holds() {
        assert_eq!(tci(5, false, 100), 0xa064);
        assert_eq!(tci(7, true, 0xffff), 0xffff, "the VID is cut to 12 bits");
        assert_eq!(tag_bytes(0x8100, tci(5, false, 100)), FRAME[12..16]);
    }

    #[test]
    fn set_vlan_id_keeps_priority_and_dei() {
        let mut b = [0xa5u8; 4];
        let mut t = VlanTag::new_unchecked(&mut b[..]);
        t.set_tci(5, true, 1);
        t.set_vlan_id(0x0123);
        assert_eq!((t.pcp(), t.dei(), t.vlan_id(), t.tci()), (5, true, 0x0123, 0xb123));
        assert_eq!(b[2..], [0xa5, 0xa5], "the next EtherType is untouched");
    }

    #[test]
    fn truncated() {
        assert_eq!(Frame::new_checked(&FRAME[..13]).unwrap_err(), DropReason::EthTruncated);
        assert_eq!(VlanTag::new_checked(&FRAME[14..17]).unwrap_err(), DropReason::VlanTruncated);
    }

    #[test]
    fn unknown_ethertype_is_kept() {
        assert_eq!(EtherType::from(0x1234), EtherType::Unknown(0x1234));
        assert_eq!(u16::from(EtherType::Unknown(0x1234)), 0x1234);
    }
}
