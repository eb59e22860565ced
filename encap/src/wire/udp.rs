//! UDP headers (RFC 768). Checksums need the IP pseudo-header, so they are
//! computed by the caller with `wire::checksum`.
//!
//! After `check_len` succeeds no accessor panics.

use crate::DropReason;

pub const HEADER_LEN: usize = 8;

/// Byte offsets of the header fields, for writers that patch a header in place.
pub mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// A read/write view of a UDP datagram.
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

    /// Checks the header fits and that the length field equals the buffer's
    /// length (the buffer is the IP payload, already cut to the IP length).
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(DropReason::UdpTruncated);
        }
        if self.len() as usize != len {
            return Err(DropReason::UdpBadLength);
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn u16_at(&self, r: core::ops::Range<usize>) -> u16 {
        u16::from_be_bytes(self.buffer.as_ref()[r].try_into().unwrap())
    }

    pub fn src_port(&self) -> u16 {
        self.u16_at(field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        self.u16_at(field::DST_PORT)
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        self.u16_at(field::LENGTH)
    }

    pub fn checksum(&self) -> u16 {
        self.u16_at(field::CHECKSUM)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_src_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&v.to_be_bytes())
    }

    pub fn set_dst_port(&mut self, v: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&v.to_be_bytes())
    }

    pub fn set_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&v.to_be_bytes())
    }

    pub fn set_checksum(&mut self, v: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&v.to_be_bytes())
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// High-level representation of a UDP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpRepr {
    pub src_port: u16,
    pub dst_port: u16,
}

impl UdpRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Result<Self, DropReason> {
        p.check_len()?;
        Ok(UdpRepr { src_port: p.src_port(), dst_port: p.dst_port() })
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Emits the header for a payload of `payload_len` bytes with a zero checksum.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>, payload_len: usize) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len((HEADER_LEN + payload_len) as u16);
        p.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static PACKET: [u8; 12] = [0xc0, 0x00, 0x12, 0xb5, 0x00, 0x0c, 0x00, 0x00, 1, 2, 3, 4];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len(), p.checksum()), (49152, 4789, 12, 0));
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn parse_and_emit() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        let r = UdpRepr::parse(&p).unwrap();
        assert_eq!(r, UdpRepr { src_port: 49152, dst_port: 4789 });
        let mut buf = [0xa5u8; 12];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]), 4);
        assert_eq!(&buf[..8], &PACKET[..8]);
    }

    #[test]
    fn rejects() {
        assert_eq!(Packet::new_checked(&PACKET[..7]).unwrap_err(), DropReason::UdpTruncated);
        assert_eq!(Packet::new_checked(&PACKET[..11]).unwrap_err(), DropReason::UdpBadLength);
    }
}
