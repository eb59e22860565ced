//! Geneve headers (RFC 8926) and their option TLVs.
//!
//! ```text
//!  0                   1                   2                   3
//! |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
//! |        Virtual Network Identifier (VNI)       |    Reserved   |
//! |                    Variable-Length Options                    |
//!
//! an option:
//! |          Option Class         |      Type     |R|R|R| Length  |
//! |                 Variable-Length Option Data                   |
//! ```
//! `Opt Len` and an option's `Length` count 4-byte words (the option's own
//! 4-byte header not included). The high bit of an option's type marks it
//! critical: a receiver that does not understand it must drop the packet
//! (RFC 8926 3.5). After `check_len` succeeds no accessor panics, and
//! [`Options`] yields only options that lie wholly inside the option area.

use super::ethernet::EtherType;
use crate::DropReason;

/// Length of the fixed part.
pub const BASE_LEN: usize = 8;
/// IANA-assigned UDP port.
pub const IANA_PORT: u16 = 6081;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;
/// Largest option area (`Opt Len` is 6 bits of 4-byte words).
pub const MAX_OPTIONS_LEN: usize = 63 * 4;
/// Largest option data (`Length` is 5 bits of 4-byte words).
pub const MAX_OPTION_DATA_LEN: usize = 31 * 4;
/// Length of an option's own header.
pub const OPTION_HEADER_LEN: usize = 4;

/// Byte 1: O, control packet.
pub const FLAG_O: u8 = 0x80;
/// Byte 1: C, critical options present.
pub const FLAG_C: u8 = 0x40;
/// An option type's critical bit.
pub const OPTION_CRITICAL: u8 = 0x80;

/// Byte offsets of the fixed fields, for writers that patch a header in place.
pub mod field {
    use core::ops::Range;
    /// Version (2 bits) and option length (6 bits).
    pub const VER_OPT_LEN: usize = 0;
    /// O and C flags and 6 reserved bits.
    pub const FLAGS: usize = 1;
    pub const PROTOCOL: Range<usize> = 2..4;
    pub const VNI: Range<usize> = 4..7;
    pub const RESERVED: usize = 7;
    pub const OPTIONS: usize = 8;
}

/// A read/write view of a Geneve header, its options and its payload.
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

    /// Checks that the fixed part and the option area `Opt Len` announces fit.
    pub fn check_len(&self) -> Result<(), DropReason> {
        let len = self.buffer.as_ref().len();
        if len < BASE_LEN || len < self.header_len() {
            Err(DropReason::GeneveTruncated)
        } else {
            Ok(())
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_OPT_LEN] >> 6
    }

    /// Length of the option area in bytes.
    pub fn options_len(&self) -> usize {
        (self.buffer.as_ref()[field::VER_OPT_LEN] & 0x3f) as usize * 4
    }

    /// Fixed part plus options (needs only the first byte).
    pub fn header_len(&self) -> usize {
        match self.buffer.as_ref().first() {
            Some(b) => BASE_LEN + (b & 0x3f) as usize * 4,
            None => BASE_LEN,
        }
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// O: a control message for the tunnel endpoint, not a data packet.
    pub fn is_control(&self) -> bool {
        self.flags() & FLAG_O != 0
    }

    /// C: the sender says at least one option is critical.
    pub fn has_critical(&self) -> bool {
        self.flags() & FLAG_C != 0
    }

    pub fn protocol(&self) -> EtherType {
        EtherType::from(self.protocol_type())
    }

    /// The protocol type as sent (what the fast path compares).
    pub fn protocol_type(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::PROTOCOL];
        u16::from_be_bytes([b[0], b[1]])
    }

    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// True if a reserved bit of the fixed part is set.
    pub fn has_reserved_bits(&self) -> bool {
        let b = self.buffer.as_ref();
        b[field::FLAGS] & !(FLAG_O | FLAG_C) != 0 || b[field::RESERVED] != 0
    }

    /// The raw option area.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[field::OPTIONS..self.header_len()]
    }

    /// The options, in order.
    pub fn option_iter(&self) -> Options<'_> {
        Options { rest: self.options() }
    }

    /// The encapsulated frame (after the options).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_version_and_options_len(&mut self, version: u8, options_len: usize) {
        self.buffer.as_mut()[field::VER_OPT_LEN] = (version << 6) | ((options_len / 4) as u8 & 0x3f)
    }

    pub fn set_flags(&mut self, v: u8) {
        self.buffer.as_mut()[field::FLAGS] = v
    }

    pub fn set_protocol(&mut self, p: EtherType) {
        self.buffer.as_mut()[field::PROTOCOL].copy_from_slice(&u16::from(p).to_be_bytes())
    }

    pub fn set_vni(&mut self, vni: u32) {
        self.buffer.as_mut()[field::VNI].copy_from_slice(&vni.to_be_bytes()[1..])
    }

    pub fn clear_reserved(&mut self) {
        self.buffer.as_mut()[field::RESERVED] = 0;
    }

    pub fn options_mut(&mut self) -> &mut [u8] {
        let end = self.header_len();
        &mut self.buffer.as_mut()[field::OPTIONS..end]
    }
}

/// One option TLV, borrowed from the packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneveOption<'a> {
    pub class: u16,
    /// The full type byte, critical bit included.
    pub kind: u8,
    pub data: &'a [u8],
}

impl GeneveOption<'_> {
    pub fn is_critical(&self) -> bool {
        self.kind & OPTION_CRITICAL != 0
    }

    /// Bytes the option takes on the wire.
    pub fn wire_len(&self) -> usize {
        OPTION_HEADER_LEN + self.data.len()
    }
}

/// Walks an option area. Yields `Err(GeneveBadOption)` once, and then
/// nothing, if an option's length runs past the end of the area.
#[derive(Clone, Debug)]
pub struct Options<'a> {
    rest: &'a [u8],
}

impl<'a> Options<'a> {
    pub fn new(area: &'a [u8]) -> Self {
        Options { rest: area }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<GeneveOption<'a>, DropReason>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let r = self.rest;
        let bad = || Some(Err(DropReason::GeneveBadOption));
        if r.len() < OPTION_HEADER_LEN {
            self.rest = &[];
            return bad();
        }
        let data_len = (r[3] & 0x1f) as usize * 4;
        let Some(data) = r.get(OPTION_HEADER_LEN..OPTION_HEADER_LEN + data_len) else {
            self.rest = &[];
            return bad();
        };
        self.rest = &r[OPTION_HEADER_LEN + data_len..];
        Some(Ok(GeneveOption { class: u16::from_be_bytes([r[0], r[1]]), kind: r[2], data }))
    }
}

/// Writes one option at the start of `buf`; returns the bytes written.
/// `data` must be a multiple of 4 bytes, at most [`MAX_OPTION_DATA_LEN`], and
/// `buf` long enough (the caller checked both when the options were configured).
pub fn emit_option(buf: &mut [u8], class: u16, kind: u8, data: &[u8]) -> usize {
    buf[0..2].copy_from_slice(&class.to_be_bytes());
    buf[2] = kind;
    buf[3] = (data.len() / 4) as u8 & 0x1f;
    buf[OPTION_HEADER_LEN..OPTION_HEADER_LEN + data.len()].copy_from_slice(data);
    OPTION_HEADER_LEN + data.len()
}

/// High-level representation of the fixed part of a Geneve header; the
/// options are carried as raw bytes (already encoded TLVs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeneveRepr<'a> {
    pub vni: u32,
    pub protocol: EtherType,
    pub control: bool,
    pub critical: bool,
    pub options: &'a [u8],
}

impl<'a> GeneveRepr<'a> {
    /// Parses a header: the version must be 0 (RFC 8926 3.4: a receiver drops
    /// versions it does not know), and the option area must be a well-formed
    /// sequence of TLVs. Reserved bits are ignored. Whether a control packet
    /// or a critical option is acceptable is the caller's decision.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &'a Packet<&'a T>) -> Result<Self, DropReason> {
        p.check_len()?;
        if p.version() != 0 {
            return Err(DropReason::GeneveBadVersion);
        }
        let options = p.options();
        for o in Options::new(options) {
            o?;
        }
        Ok(GeneveRepr {
            vni: p.vni(),
            protocol: p.protocol(),
            control: p.is_control(),
            critical: p.has_critical(),
            options,
        })
    }

    pub fn buffer_len(&self) -> usize {
        BASE_LEN + self.options.len()
    }

    /// Writes the header and options; `options` must be a multiple of 4 bytes
    /// and at most [`MAX_OPTIONS_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Packet<T>) {
        p.set_version_and_options_len(0, self.options.len());
        let mut flags = 0;
        if self.control {
            flags |= FLAG_O;
        }
        if self.critical {
            flags |= FLAG_C;
        }
        p.set_flags(flags);
        p.set_protocol(self.protocol);
        p.set_vni(self.vni & MAX_VNI);
        p.clear_reserved();
        p.options_mut().copy_from_slice(self.options);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Geneve, VNI 0x123456, Ethernet, C set, one critical option (class
    /// 0x0102, type 0x80, 4 bytes of data), then two payload bytes.
    static HEADER: [u8; 18] = [
        0x02, 0x40, 0x65, 0x58, 0x12, 0x34, 0x56, 0x00, // fixed part, opt len 2 words
        0x01, 0x02, 0x80, 0x01, 0xde, 0xad, 0xbe, 0xef, // option
        0xee, 0xff, // payload
    ];

    #[test]
    fn deconstruct() {
        let p = Packet::new_checked(&HEADER[..]).unwrap();
        assert_eq!(p.version(), 0);
        assert_eq!(p.options_len(), 8);
        assert_eq!(p.header_len(), 16);
        assert!(!p.is_control());
        assert!(p.has_critical());
        assert!(!p.has_reserved_bits());
        assert_eq!(p.protocol(), EtherType::TransEther);
        assert_eq!(p.vni(), 0x123456);
        assert_eq!(p.payload(), &[0xee, 0xff]);
        let opts: Vec<_> = p.option_iter().collect();
        assert_eq!(
            opts,
            vec![Ok(GeneveOption { class: 0x0102, kind: 0x80, data: &[0xde, 0xad, 0xbe, 0xef] })]
        );
        assert!(opts[0].unwrap().is_critical());
    }

    #[test]
    fn parse_and_emit() {
        let p = Packet::new_checked(&HEADER[..]).unwrap();
        let r = GeneveRepr::parse(&p).unwrap();
        assert_eq!(r.vni, 0x123456);
        assert!(r.critical && !r.control);
        assert_eq!(r.buffer_len(), 16);
        let mut buf = [0xa5u8; 16];
        r.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(buf, HEADER[..16]);
    }

    #[test]
    fn construct_option() {
        let mut buf = [0xa5u8; 12];
        let n = emit_option(&mut buf, 0xffff, 0x01, &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(n, 12);
        assert_eq!(buf, [0xff, 0xff, 0x01, 0x02, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn lengths_are_checked() {
        for n in 0..16 {
            assert_eq!(
                Packet::new_checked(&HEADER[..n]).unwrap_err(),
                DropReason::GeneveTruncated,
                "cut at {n}"
            );
        }
        // The option claims 8 bytes of data but the area holds 4.
        let mut h = HEADER;
        h[11] = 0x02;
        let p = Packet::new_checked(&h[..]).unwrap();
        assert_eq!(GeneveRepr::parse(&p).unwrap_err(), DropReason::GeneveBadOption);
        assert_eq!(p.option_iter().collect::<Vec<_>>(), vec![Err(DropReason::GeneveBadOption)]);
        // Option area shorter than an option header.
        let h = [0x01, 0, 0x65, 0x58, 0, 0, 1, 0, 0x01, 0x02, 0x03, 0x00];
        let p = Packet::new_checked(&h[..]).unwrap();
        assert_eq!(p.option_iter().count(), 1);
        let h = [0x01, 0, 0x65, 0x58, 0, 0, 1, 0, 0x01, 0x02, 0x03, 0x01];
        let p = Packet::new_checked(&h[..]).unwrap();
        assert_eq!(GeneveRepr::parse(&p).unwrap_err(), DropReason::GeneveBadOption);
    }

    #[test]
    fn version_and_reserved_bits() {
        let mut h = HEADER;
        h[0] |= 0x40;
        let p = Packet::new_checked(&h[..]).unwrap();
        assert_eq!(GeneveRepr::parse(&p).unwrap_err(), DropReason::GeneveBadVersion);
        for (i, v) in [(1, 0x41), (7, 0x01)] {
            let mut h = HEADER;
            h[i] = v;
            let p = Packet::new_checked(&h[..]).unwrap();
            assert!(p.has_reserved_bits(), "byte {i}");
            assert_eq!(GeneveRepr::parse(&p).unwrap().vni, 0x123456, "ignored on receipt");
        }
    }
}
