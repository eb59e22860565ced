//! VXLAN headers (RFC 7348).
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//! After `check_len` succeeds no accessor panics.

use crate::DropReason;

pub const HEADER_LEN: usize = 8;
/// IANA-assigned UDP port.
pub const IANA_PORT: u16 = 4789;
/// The port Linux uses when none is given.
pub const LINUX_PORT: u16 = 8472;
/// The I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// Byte offsets of the header fields, for writers that patch a header in place.
pub mod field {
    use core::ops::Range;
    pub const FLAGS: usize = 0;
    pub const RESERVED1: Range<usize> = 1..4;
    pub const VNI: Range<usize> = 4..7;
    pub const RESERVED2: usize = 7;
}

/// A read/write view of a VXLAN header and its payload (the inner frame).
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

    pub fn check_len(&self) -> Result<(), DropReason> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(DropReason::VxlanTruncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// True if any bit other than I is set in the header's reserved fields.
    pub fn has_reserved_bits(&self) -> bool {
        let b = self.buffer.as_ref();
        b[field::FLAGS] & !FLAG_I != 0
            || b[field::RESERVED1] != [0, 0, 0]
            || b[field::RESERVED2] != 0
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v
    }

    pub fn set_vni(&mut self, vni: u32) {
        self.buffer.as_mut()[field::VNI].copy_from_slice(&vni.to_be_bytes()[1..])
    }

    pub fn clear_reserved(&mut self) {
        let b = self.buffer.as_mut();
        b[field::RESERVED1].copy_from_slice(&[0, 0, 0]);
        b[field::RESERVED2] = 0;
    }
}

/// High-level representation of a VXLAN header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanRepr {
    pub vni: u32,
}

impl VxlanRepr {
    /// Parses a header. The I flag must be set; other reserved bits are ignored
    /// unless `strict` (RFC 7348: "reserved fields ... MUST be ignored on receipt").
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>, strict: bool) -> Result<Self, DropReason> {
        p.check_len()?;
        if p.flags() & FLAG_I == 0 {
            return Err(DropReason::VxlanNoIFlag);
        }
        if strict && p.has_reserved_bits() {
            return Err(DropReason::VxlanReservedBits);
        }
        Ok(VxlanRepr { vni: p.vni() })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_flags(FLAG_I);
        p.clear_reserved();
        p.set_vni(self.vni & MAX_VNI);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static HEADER: [u8; 10] = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0xee, 0xff];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&HEADER[..]).unwrap();
        assert_eq!((p.flags(), p.vni()), (0x08, 0x123456));
        assert!(!p.has_reserved_bits());
        assert_eq!(p.payload(), &[0xee, 0xff]);
    }

    #[test]
    fn parse_and_emit() {
        let p = Packet::new_checked(&HEADER[..]).unwrap();
        let r = VxlanRepr::parse(&p, true).unwrap();
        assert_eq!(r, VxlanRepr { vni: 0x123456 });
        let mut buf = [0xa5u8; 8];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, HEADER[..8]);
    }

    #[test]
    fn flags() {
        let mut h = HEADER;
        h[0] = 0x00;
        let p = Packet::new_checked(&h[..]).unwrap();
        assert_eq!(VxlanRepr::parse(&p, false).unwrap_err(), DropReason::VxlanNoIFlag);
        for (i, v) in [(0, 0x0c), (2, 1), (7, 1)] {
            let mut h = HEADER;
            h[i] = v;
            let p = Packet::new_checked(&h[..]).unwrap();
            assert_eq!(
                VxlanRepr::parse(&p, false).unwrap().vni,
                0x123456,
                "lenient ignores byte {i}"
            );
            assert_eq!(VxlanRepr::parse(&p, true).unwrap_err(), DropReason::VxlanReservedBits);
        }
        assert_eq!(Packet::new_checked(&HEADER[..7]).unwrap_err(), DropReason::VxlanTruncated);
    }
}
