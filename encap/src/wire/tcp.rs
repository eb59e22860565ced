//! TCP header fields (RFC 9293) that the dataplane patches when it cuts a
//! TSO super-frame into segments. The dataplane never parses TCP beyond its
//! ports, so there is no view here, only the layout.

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = 20;

/// Byte offsets of the header fields, for writers that patch a header in place.
pub mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const ACK: Range<usize> = 8..12;
    /// Data offset (header length in 32-bit words) in the high nibble.
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Range<usize> = 14..16;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const URGENT: Range<usize> = 18..20;
}

/// Bits of the flags byte.
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_SYN: u8 = 0x02;
pub const FLAG_RST: u8 = 0x04;
pub const FLAG_PSH: u8 = 0x08;
pub const FLAG_ACK: u8 = 0x10;
pub const FLAG_URG: u8 = 0x20;
pub const FLAG_ECE: u8 = 0x40;
pub const FLAG_CWR: u8 = 0x80;

/// Header length in bytes from the data-offset byte.
#[inline(always)]
pub const fn header_len(data_off: u8) -> usize {
    (data_off >> 4) as usize * 4
}

#[cfg(test)]
mod tests {
    use super::*;

    // A SYN from 1234 to 80 with one MSS option (24-byte header).
    static SEGMENT: [u8; 24] = [
        0x04, 0xd2, 0x00, 0x50, // ports
        0x00, 0x00, 0x00, 0x01, // seq
        0x00, 0x00, 0x00, 0x00, // ack
        0x60, 0x02, // data offset 6, SYN
        0xff, 0xff, // window
        0x12, 0x34, // checksum
        0x00, 0x00, // urgent
        0x02, 0x04, 0x05, 0xb4, // MSS 1460
    ];

    #[test]
    fn layout_matches_a_real_segment() {
        let s = &SEGMENT;
        assert_eq!(u16::from_be_bytes(s[field::SRC_PORT].try_into().unwrap()), 1234);
        assert_eq!(u16::from_be_bytes(s[field::DST_PORT].try_into().unwrap()), 80);
        assert_eq!(u32::from_be_bytes(s[field::SEQ].try_into().unwrap()), 1);
        assert_eq!(u32::from_be_bytes(s[field::ACK].try_into().unwrap()), 0);
        assert_eq!(header_len(s[field::DATA_OFF]), 24);
        assert_eq!(s[field::FLAGS], FLAG_SYN);
        assert_eq!(u16::from_be_bytes(s[field::WINDOW].try_into().unwrap()), 0xffff);
        assert_eq!(u16::from_be_bytes(s[field::CHECKSUM].try_into().unwrap()), 0x1234);
        assert_eq!(field::URGENT.end, HEADER_LEN);
        let all =
            FLAG_FIN | FLAG_SYN | FLAG_RST | FLAG_PSH | FLAG_ACK | FLAG_URG | FLAG_ECE | FLAG_CWR;
        assert_eq!(all, 0xff);
    }
}
