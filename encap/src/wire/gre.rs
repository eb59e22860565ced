//! GRE headers (RFC 2784 with the key and sequence extensions of RFC 2890), and
//! the NVGRE key layout (RFC 7637).
//!
//! ```text
//! |C| |K|S| Reserved0       | Ver |         Protocol Type         |
//! |      Checksum (optional)      |       Reserved1 (optional)    |
//! |                         Key (optional)                        |
//! |                 Sequence Number (optional)                    |
//! ```
//! The optional fields appear in that order, each only when its flag is set.
//! After `check_len` succeeds no accessor panics.

use super::checksum;
use super::ethernet::EtherType;
use crate::DropReason;

/// Length of the fixed part.
pub const BASE_LEN: usize = 4;
/// Longest header: all three optional fields.
pub const MAX_LEN: usize = 16;

pub const FLAG_C: u16 = 0x8000;
pub const FLAG_K: u16 = 0x2000;
pub const FLAG_S: u16 = 0x1000;
/// Bits 1-5 less K and S: routing present (bit 1), strict source route (bit 4)
/// and the top recursion bit (bit 5). RFC 2784 says a receiver must discard a
/// packet with any of these set.
pub const MUST_BE_ZERO: u16 = 0x4000 | 0x0800 | 0x0400;
/// Bits 6-12: sent as zero, ignored on receipt (RFC 2784 section 2.2).
pub const IGNORED: u16 = 0x03f8;
pub const VERSION_MASK: u16 = 0x0007;

/// Byte offsets of the fixed fields, for writers that patch a header in
/// place. Key and sequence number move with the flags: use the setters.
pub mod field {
    use core::ops::Range;
    pub const FLAGS_VERSION: Range<usize> = 0..2;
    pub const PROTOCOL: Range<usize> = 2..4;
    /// Present when the C flag is set, followed by two reserved bytes.
    pub const CHECKSUM: Range<usize> = 4..6;
}

/// A read/write view of a GRE header and its payload.
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

    /// Checks that the fixed part and every optional field its flags announce fit.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < BASE_LEN || len < self.header_len() {
            Err(DropReason::GreTruncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn flags_version(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::FLAGS_VERSION];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn has_checksum(&self) -> bool {
        self.flags_version() & FLAG_C != 0
    }

    pub fn has_key(&self) -> bool {
        self.flags_version() & FLAG_K != 0
    }

    pub fn has_seq(&self) -> bool {
        self.flags_version() & FLAG_S != 0
    }

    pub fn version(&self) -> u8 {
        (self.flags_version() & VERSION_MASK) as u8
    }

    pub fn protocol(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::PROTOCOL];
        EtherType::from(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Header length implied by the flags (needs only the first two bytes).
    pub fn header_len(&self) -> usize {
        let b = self.buffer.as_ref();
        if b.len() < 2 {
            return BASE_LEN;
        }
        header_len_for(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32_at(&self, off: usize) -> u32 {
        u32::from_be_bytes(self.buffer.as_ref()[off..off + 4].try_into().unwrap())
    }

    fn key_offset(&self) -> usize {
        BASE_LEN + if self.has_checksum() { 4 } else { 0 }
    }

    fn seq_offset(&self) -> usize {
        self.key_offset() + if self.has_key() { 4 } else { 0 }
    }

    pub fn checksum(&self) -> Option<u16> {
        let b = self.buffer.as_ref();
        self.has_checksum().then(|| u16::from_be_bytes([b[4], b[5]]))
    }

    pub fn key(&self) -> Option<u32> {
        self.has_key().then(|| self.u32_at(self.key_offset()))
    }

    pub fn seq(&self) -> Option<u32> {
        self.has_seq().then(|| self.u32_at(self.seq_offset()))
    }

    /// Verifies the checksum over the header and payload (true if absent).
    pub fn verify_checksum(&self) -> bool {
        !self.has_checksum() || checksum::verify(checksum::add(0, self.buffer.as_ref()))
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_flags_version(&mut self, v: u16) {
        self.buffer.as_mut()[field::FLAGS_VERSION].copy_from_slice(&v.to_be_bytes())
    }

    pub fn set_protocol(&mut self, p: EtherType) {
        self.buffer.as_mut()[field::PROTOCOL].copy_from_slice(&u16::from(p).to_be_bytes())
    }

    /// Writes checksum + reserved1; only valid when the C flag is set.
    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[4..8].copy_from_slice(&[(c >> 8) as u8, c as u8, 0, 0])
    }

    /// Writes the key; only valid when the K flag is set.
    pub fn set_key(&mut self, k: u32) {
        let o = self.key_offset();
        self.buffer.as_mut()[o..o + 4].copy_from_slice(&k.to_be_bytes())
    }

    /// Writes the sequence number; only valid when the S flag is set.
    pub fn set_seq(&mut self, s: u32) {
        let o = self.seq_offset();
        self.buffer.as_mut()[o..o + 4].copy_from_slice(&s.to_be_bytes())
    }

    /// Computes and writes the checksum over the whole buffer (header + payload).
    pub fn fill_checksum(&mut self) {
        if self.has_checksum() {
            self.set_checksum(0);
            let c = checksum::checksum(self.buffer.as_ref());
            self.set_checksum(c);
        }
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buffer.as_mut()[hl..]
    }
}

/// Header length for a flags/version word.
#[inline]
pub const fn header_len_for(flags: u16) -> usize {
    BASE_LEN
        + 4 * ((flags & FLAG_C != 0) as usize
            + (flags & FLAG_K != 0) as usize
            + (flags & FLAG_S != 0) as usize)
}

/// High-level representation of a GRE header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GreRepr {
    pub protocol: EtherType,
    pub checksum: bool,
    pub key: Option<u32>,
    pub seq: Option<u32>,
}

impl GreRepr {
    /// Parses and validates a header: version 0, bits 1-5 (less K and S) clear, a
    /// known protocol type, and the checksum when present and `verify_checksum`.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>, verify_checksum: bool) -> Result<Self, DropReason> {
        p.check_len()?;
        let fv = p.flags_version();
        if fv & VERSION_MASK != 0 {
            return Err(DropReason::GreBadVersion);
        }
        if fv & MUST_BE_ZERO != 0 {
            return Err(DropReason::GreReservedBits);
        }
        let protocol = p.protocol();
        if !matches!(protocol, EtherType::TransEther | EtherType::Ipv4 | EtherType::Ipv6) {
            return Err(DropReason::GreUnknownProtocol);
        }
        if verify_checksum && !p.verify_checksum() {
            return Err(DropReason::GreBadChecksum);
        }
        Ok(GreRepr { protocol, checksum: p.has_checksum(), key: p.key(), seq: p.seq() })
    }

    pub const fn flags(&self) -> u16 {
        (if self.checksum { FLAG_C } else { 0 })
            | (if self.key.is_some() { FLAG_K } else { 0 })
            | (if self.seq.is_some() { FLAG_S } else { 0 })
    }

    pub const fn buffer_len(&self) -> usize {
        header_len_for(self.flags())
    }

    /// Emits the header. The checksum field, if any, is written as zero: call
    /// `Packet::fill_checksum` once the payload is in place.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_flags_version(self.flags());
        p.set_protocol(self.protocol);
        if self.checksum {
            p.set_checksum(0);
        }
        if let Some(k) = self.key {
            p.set_key(k);
        }
        if let Some(s) = self.seq {
            p.set_seq(s);
        }
    }
}

/// NVGRE (RFC 7637) packs a 24-bit Virtual Subnet ID and an 8-bit FlowID into the key.
pub const fn nvgre_key(vsid: u32, flow_id: u8) -> u32 {
    ((vsid & 0x00ff_ffff) << 8) | flow_id as u32
}

/// Splits an NVGRE key into (VSID, FlowID).
pub const fn nvgre_split(key: u32) -> (u32, u8) {
    (key >> 8, key as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    // C, K and S set; protocol 0x6558; checksum over header + 2-byte payload.
    static ALL_FLAGS: [u8; 18] = [
        0xb0, 0x00, 0x65, 0x58, // flags, protocol
        0x00, 0x00, 0x00, 0x00, // checksum (filled by the test), reserved1
        0x00, 0x00, 0x2a, 0x07, // key: VSID 42, flow 7
        0x00, 0x00, 0x00, 0x09, // seq 9
        0xab, 0xcd,
    ];

    fn with_checksum() -> [u8; 18] {
        let mut b = ALL_FLAGS;
        let c = checksum::checksum(&b);
        b[4..6].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn deconstruct() {
        let b = with_checksum();
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 16);
        assert_eq!(p.protocol(), EtherType::TransEther);
        assert_eq!(p.key(), Some(nvgre_key(42, 7)));
        assert_eq!(nvgre_split(p.key().unwrap()), (42, 7));
        assert_eq!(p.seq(), Some(9));
        assert!(p.verify_checksum());
        assert_eq!(p.payload(), &[0xab, 0xcd]);
    }

    #[test]
    fn parse_and_emit_every_flag_combination() {
        for flags in 0..8u8 {
            let repr = GreRepr {
                protocol: EtherType::Ipv4,
                checksum: flags & 1 != 0,
                key: (flags & 2 != 0).then_some(0xdead_beef),
                seq: (flags & 4 != 0).then_some(77),
            };
            let len = repr.buffer_len();
            let mut buf = vec![0xa5u8; len + 3];
            let mut p = Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut p);
            p.payload_mut().copy_from_slice(&[1, 2, 3]);
            p.fill_checksum();
            let p = Packet::new_checked(&buf[..]).unwrap();
            assert_eq!(GreRepr::parse(&p, true).unwrap(), repr, "flags {flags}");
            assert_eq!(p.payload(), &[1, 2, 3]);
        }
    }

    #[test]
    fn construct_matches_static_bytes() {
        let repr = GreRepr {
            protocol: EtherType::TransEther,
            checksum: true,
            key: Some(nvgre_key(42, 7)),
            seq: Some(9),
        };
        let mut buf = [0xa5u8; 18];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        repr.emit(&mut p);
        p.payload_mut().copy_from_slice(&[0xab, 0xcd]);
        p.fill_checksum();
        assert_eq!(buf, with_checksum());
    }

    #[test]
    fn rejects() {
        let b = with_checksum();
        for cut in [0, 3, 7, 11, 15] {
            assert_eq!(
                Packet::new_checked(&b[..cut]).unwrap_err(),
                DropReason::GreTruncated,
                "cut {cut}"
            );
        }
        let parse = |b: &[u8]| GreRepr::parse(&Packet::new_checked(b).unwrap(), true);
        let mut v = [0x00, 0x01, 0x08, 0x00];
        assert_eq!(parse(&v).unwrap_err(), DropReason::GreBadVersion);
        for bit in [0x40u8, 0x08, 0x04] {
            v = [bit, 0x00, 0x08, 0x00];
            assert_eq!(parse(&v).unwrap_err(), DropReason::GreReservedBits, "bit {bit:#x}");
        }
        v = [0x00, 0x80, 0x08, 0x00]; // bits 6-12 are ignored
        assert!(parse(&v).is_ok());
        v = [0x00, 0x00, 0x88, 0x47];
        assert_eq!(parse(&v).unwrap_err(), DropReason::GreUnknownProtocol);
        let mut bad = b;
        bad[17] ^= 0xff;
        assert_eq!(parse(&bad).unwrap_err(), DropReason::GreBadChecksum);
        assert!(GreRepr::parse(&Packet::new_checked(&bad[..]).unwrap(), false).is_ok());
    }
}
