//! The walk from the start of an Ethernet frame past its VLAN tags to its
//! network layer: the one place that decides what counts as a tag.
//!
//! # The rule
//!
//! [`TagRule::UpToTwo`], used by everything that parses frames in the
//! dataplane (flow key, inner metadata for encap, decap's outer header,
//! ECN, ICMP replies, virtio checksums and GSO), skips at most two tags,
//! each an 802.1Q customer tag (TPID 0x8100) or an 802.1ad service tag
//! (0x88a8), in either order. That is Open vSwitch's rule (two tags,
//! `eth_type_vlan`) and the Linux flow dissector's, so a rule offloaded to
//! tc flower sees the frame as the software path does. Whatever follows the
//! second tag is the frame's EtherType, even a third TPID: such a frame is
//! simply not IP to us.
//!
//! 0x9100 is not a tag. It is the pre-standard Q-in-Q TPID some switches
//! still emit, but IEEE never assigned it, the kernel (`eth_type_vlan`),
//! tc flower and Open vSwitch do not parse it, and skipping it here would
//! make the software path see IP where every offload tier and peer sees an
//! unknown EtherType.
//!
//! [`TagRule::XdpSteer`] is the XDP steering program's narrower rule (one
//! 802.1Q tag, `dataplane/xdp/steer.bpf.c`), for its Rust twin, which must
//! decide exactly as the program does.
//!
//! A frame shorter than an Ethernet header, or that ends inside a tag the
//! rule would skip, is an error; the walk never panics.

use super::ethernet::{self, field, HEADER_LEN, TAG_LEN};
use crate::DropReason;

/// TPID of an 802.1Q customer tag (C-tag).
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of an 802.1ad service tag (S-tag).
pub const TPID_8021AD: u16 = 0x88a8;

/// How many tags a walk skips, and of which TPIDs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagRule {
    /// The dataplane's rule: up to two 802.1Q or 802.1ad tags, in any order.
    UpToTwo,
    /// The XDP steering program's rule: at most one tag, 802.1Q only
    /// (`steer.bpf.c`, `if (proto == bpf_htons(ETH_P_8021Q))` in
    /// `overlayd_steer`). A frame with an 802.1ad tag, or a second tag, is
    /// not IP under this rule and stays with the kernel.
    XdpSteer,
}

impl TagRule {
    #[inline(always)]
    const fn max_tags(self) -> u8 {
        match self {
            TagRule::UpToTwo => 2,
            TagRule::XdpSteer => 1,
        }
    }

    /// True if `tpid` introduces a tag this rule skips.
    #[inline(always)]
    pub const fn is_tag(self, tpid: u16) -> bool {
        match self {
            TagRule::UpToTwo => tpid == TPID_8021Q || tpid == TPID_8021AD,
            TagRule::XdpSteer => tpid == TPID_8021Q,
        }
    }
}

/// What a walk found: the tags it skipped and where the network layer starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L2Header {
    /// The EtherType after the tags (raw, so callers compare and store it
    /// without a conversion).
    pub ethertype: u16,
    /// Offset of the network-layer header: 14 plus 4 per tag.
    pub l3_offset: usize,
    /// Number of tags skipped.
    pub tags: u8,
    /// TCI of the outermost tag (0 when untagged).
    pub outer_tci: u16,
}

impl L2Header {
    /// The outermost tag's VLAN id (0 when untagged, and for priority tags).
    #[inline(always)]
    pub const fn outer_vid(&self) -> u16 {
        self.outer_tci & 0x0fff
    }
}

#[inline(always)]
fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

/// Walks `frame` under the dataplane's rule, [`TagRule::UpToTwo`].
#[inline(always)]
pub fn walk(frame: &[u8]) -> Result<L2Header, DropReason> {
    walk_with(frame, TagRule::UpToTwo)
}

/// Walks `frame` past the tags `rule` accepts. Fails with `EthTruncated` for
/// a frame shorter than an Ethernet header and `VlanTruncated` for one that
/// ends inside a tag the rule would skip (its TCI or the EtherType after it).
#[inline(always)]
pub fn walk_with(frame: &[u8], rule: TagRule) -> Result<L2Header, DropReason> {
    if frame.len() < HEADER_LEN {
        return Err(DropReason::EthTruncated);
    }
    let mut h = L2Header {
        ethertype: be16(&frame[field::ETHERTYPE]),
        l3_offset: HEADER_LEN,
        ..L2Header::default()
    };
    while h.tags < rule.max_tags() && rule.is_tag(h.ethertype) {
        let Some(tag) = frame.get(h.l3_offset..h.l3_offset + TAG_LEN) else {
            return Err(DropReason::VlanTruncated);
        };
        if h.tags == 0 {
            h.outer_tci = be16(&tag[ethernet::tag_field::TCI]);
        }
        h.ethertype = be16(&tag[ethernet::tag_field::ETHERTYPE]);
        h.l3_offset += TAG_LEN;
        h.tags += 1;
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACS: [u8; 12] = [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];

    fn frame(rest: &[u8]) -> Vec<u8> {
        let mut f = MACS.to_vec();
        f.extend_from_slice(rest);
        f
    }

    static UNTAGGED: [u8; 18] = [
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, // macs
        0x08, 0x00, // IPv4
        0x45, 0x00, 0x00, 0x14, // start of the IP header
    ];

    static QINQ: [u8; 26] = [
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, // macs
        0x88, 0xa8, // 802.1ad
        0xa0, 0x64, // pcp 5, vid 100
        0x81, 0x00, // 802.1Q
        0x00, 0x07, // vid 7
        0x86, 0xdd, // IPv6
        0x60, 0x00, 0x00, 0x00, // start of the IP header
    ];

    #[test]
    fn untagged() {
        let h = walk(&UNTAGGED).unwrap();
        assert_eq!(h, L2Header { ethertype: 0x0800, l3_offset: 14, tags: 0, outer_tci: 0 });
        assert_eq!(h.outer_vid(), 0);
    }

    #[test]
    fn one_tag() {
        let f = frame(&[0x81, 0x00, 0x20, 0x05, 0x08, 0x06, 0, 1]);
        let h = walk(&f).unwrap();
        assert_eq!((h.ethertype, h.l3_offset, h.tags), (0x0806, 18, 1));
        assert_eq!((h.outer_tci, h.outer_vid()), (0x2005, 5));
    }

    #[test]
    fn service_then_customer_tag() {
        let h = walk(&QINQ).unwrap();
        assert_eq!((h.ethertype, h.l3_offset, h.tags), (0x86dd, 22, 2));
        assert_eq!(h.outer_vid(), 100);
    }

    #[test]
    fn either_tpid_in_either_position() {
        for (a, b) in [(0x81, 0x81), (0x88, 0x88), (0x81, 0x88)] {
            let tpid = |x: u8| if x == 0x81 { [0x81, 0x00] } else { [0x88, 0xa8] };
            let mut rest = Vec::new();
            rest.extend_from_slice(&tpid(a));
            rest.extend_from_slice(&[0x00, 0x0a]);
            rest.extend_from_slice(&tpid(b));
            rest.extend_from_slice(&[0x00, 0x0b, 0x08, 0x00]);
            let h = walk(&frame(&rest)).unwrap();
            assert_eq!((h.ethertype, h.l3_offset, h.tags, h.outer_vid()), (0x0800, 22, 2, 10));
        }
    }

    #[test]
    fn a_third_tag_is_the_ethertype() {
        let f = frame(&[0x81, 0x00, 0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00, 0, 3, 0x08, 0x00]);
        let h = walk(&f).unwrap();
        assert_eq!((h.ethertype, h.l3_offset, h.tags, h.outer_vid()), (TPID_8021Q, 22, 2, 1));
    }

    #[test]
    fn pre_standard_9100_is_not_a_tag() {
        let f = frame(&[0x91, 0x00, 0, 1, 0x08, 0x00]);
        let h = walk(&f).unwrap();
        assert_eq!((h.ethertype, h.l3_offset, h.tags), (0x9100, 14, 0));
    }

    #[test]
    fn truncation_is_an_error_at_every_length() {
        assert_eq!(walk(&[]), Err(DropReason::EthTruncated));
        assert_eq!(walk(&QINQ[..13]), Err(DropReason::EthTruncated));
        for len in 14..22 {
            assert_eq!(walk(&QINQ[..len]), Err(DropReason::VlanTruncated), "len {len}");
        }
        assert_eq!(walk(&QINQ[..22]).unwrap().l3_offset, 22);
        // An untagged header is complete at 14 bytes: the payload is not ours to check.
        assert_eq!(walk(&UNTAGGED[..14]).unwrap().l3_offset, 14);
    }

    #[test]
    fn xdp_steer_takes_one_8021q_tag_only() {
        let one = frame(&[0x81, 0x00, 0, 3, 0x08, 0x00]);
        let h = walk_with(&one, TagRule::XdpSteer).unwrap();
        assert_eq!((h.ethertype, h.l3_offset, h.tags), (0x0800, 18, 1));
        // A second tag is the EtherType, not skipped.
        let two = frame(&[0x81, 0x00, 0, 3, 0x81, 0x00, 0, 4, 0x08, 0x00]);
        let h = walk_with(&two, TagRule::XdpSteer).unwrap();
        assert_eq!((h.ethertype, h.l3_offset, h.tags), (TPID_8021Q, 18, 1));
        // 802.1ad is not a tag to the XDP program.
        let h = walk_with(&QINQ, TagRule::XdpSteer).unwrap();
        assert_eq!((h.ethertype, h.l3_offset, h.tags), (TPID_8021AD, 14, 0));
        // What UpToTwo accepts there, it walks fully.
        assert_eq!(walk(&two).unwrap().ethertype, 0x0800);
        assert_eq!(walk_with(&one[..17], TagRule::XdpSteer), Err(DropReason::VlanTruncated));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn tpid() -> impl Strategy<Value = u16> {
            prop_oneof![Just(TPID_8021Q), Just(TPID_8021AD), Just(0x9100u16), any::<u16>()]
        }

        proptest! {
            /// Any byte string: the walk never panics, and when it succeeds
            /// its offset is inside the frame and agrees with its tag count.
            #[test]
            fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
                for rule in [TagRule::UpToTwo, TagRule::XdpSteer] {
                    if let Ok(h) = walk_with(&bytes, rule) {
                        prop_assert!(h.l3_offset <= bytes.len());
                        prop_assert_eq!(h.l3_offset, HEADER_LEN + TAG_LEN * h.tags as usize);
                    }
                }
            }

            /// A frame built from a list of tags walks back to that list
            /// (up to two of them), and cutting it anywhere before the
            /// network layer is an error.
            #[test]
            fn walks_back_what_was_built(
                tags in proptest::collection::vec((tpid(), any::<u16>()), 0..4),
                et in any::<u16>(),
            ) {
                let mut f = MACS.to_vec();
                for (tpid, tci) in &tags {
                    f.extend_from_slice(&tpid.to_be_bytes());
                    f.extend_from_slice(&tci.to_be_bytes());
                }
                f.extend_from_slice(&et.to_be_bytes());
                let skipped = tags
                    .iter()
                    .take(2)
                    .take_while(|(t, _)| *t == TPID_8021Q || *t == TPID_8021AD)
                    .count();
                let want_et = tags.get(skipped).map_or(et, |(t, _)| *t);
                let h = walk(&f).unwrap();
                prop_assert_eq!(h.tags as usize, skipped);
                prop_assert_eq!(h.ethertype, want_et);
                prop_assert_eq!(h.l3_offset, HEADER_LEN + TAG_LEN * skipped);
                if skipped > 0 {
                    prop_assert_eq!(h.outer_tci, tags[0].1);
                }
                for cut in 0..h.l3_offset {
                    prop_assert!(walk(&f[..cut]).is_err());
                }
            }
        }
    }
}
