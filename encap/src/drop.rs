//! Why a packet was dropped: one enum for the whole dataplane.
//!
//! Every rejection path in every layer returns one of these reasons, so a counter
//! table indexed by `DropReason as usize` accounts for every packet that was not
//! forwarded. The list is declared once, as data (name + description), in the
//! manner of VPP's `*_error.def` files: the stable `name` is what counters, logs,
//! metrics and the API show, and must never change once released.

macro_rules! drop_reasons {
    ($( $(#[$m:meta])* $variant:ident = $code:literal, $name:literal, $desc:literal; )*) => {
        /// A named reason for dropping a packet. Small and `Copy`: the fast path
        /// passes it by value.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum DropReason {
            $( $(#[$m])* $variant = $code, )*
        }

        impl DropReason {
            /// Every reason, in code order.
            pub const ALL: &'static [DropReason] = &[ $( DropReason::$variant, )* ];

            /// Stable snake_case name used by counters, metrics and the API.
            pub const fn name(self) -> &'static str {
                match self { $( DropReason::$variant => $name, )* }
            }

            /// One line that tells an operator what happened.
            pub const fn description(self) -> &'static str {
                match self { $( DropReason::$variant => $desc, )* }
            }
        }
    };
}

drop_reasons! {
    // --- encapsulation ---
    InnerTooShort = 1, "inner_too_short", "inner frame is shorter than an Ethernet header";
    InnerMalformed = 2, "inner_malformed", "inner IP header is inconsistent (bad version, length or header length)";
    NoHeadroom = 3, "no_headroom", "buffer has too little headroom for the outer headers";
    MtuExceeded = 4, "mtu_exceeded", "inner frame plus tunnel overhead exceeds the underlay MTU (never fragmented)";
    InnerNotIp = 5, "inner_not_ip", "L3 GRE tunnel can only carry IPv4 or IPv6 inner packets";

    // --- outer headers on receive ---
    EthTruncated = 20, "eth_truncated", "frame is shorter than an Ethernet header";
    VlanTruncated = 21, "vlan_truncated", "frame ends inside an 802.1Q tag";
    NotIp = 22, "not_ip", "outer EtherType is neither IPv4 nor IPv6";
    Ipv4Truncated = 23, "ipv4_truncated", "frame ends inside the outer IPv4 header";
    Ipv4BadVersion = 24, "ipv4_bad_version", "outer IPv4 header has a version other than 4";
    Ipv4BadHeaderLen = 25, "ipv4_bad_header_len", "outer IPv4 header length is below 20 bytes or beyond the packet";
    Ipv4BadChecksum = 26, "ipv4_bad_checksum", "outer IPv4 header checksum is wrong";
    Ipv4BadTotalLen = 27, "ipv4_bad_total_len", "outer IPv4 total length disagrees with the frame length";
    Ipv4Fragment = 28, "ipv4_fragment", "outer IPv4 packet is a fragment (tunnel packets are never reassembled)";
    Ipv6Truncated = 29, "ipv6_truncated", "frame ends inside the outer IPv6 header";
    Ipv6BadVersion = 30, "ipv6_bad_version", "outer IPv6 header has a version other than 6";
    Ipv6BadPayloadLen = 31, "ipv6_bad_payload_len", "outer IPv6 payload length disagrees with the frame length";
    Ipv6ExtensionHeader = 32, "ipv6_extension_header", "outer IPv6 packet carries an extension header not accepted on tunnels (mobility, HIP, shim6), or option headers out of order";
    NotLocalVtep = 33, "not_local_vtep", "outer destination address is not a local tunnel endpoint";
    UnknownIpProtocol = 34, "unknown_ip_protocol", "outer IP protocol is neither UDP nor GRE";
    Ipv6OptionDiscard = 35, "ipv6_option_discard", "outer IPv6 Hop-by-Hop or Destination Options header carries an option whose action bits say discard (RFC 8200 4.2)";
    Ipv6OptionsMalformed = 36, "ipv6_options_malformed", "outer IPv6 Hop-by-Hop or Destination Options header is cut short, or an option runs past its end";
    Ipv6RoutingHeader = 37, "ipv6_routing_header", "outer IPv6 packet carries a Routing header (not accepted on tunnels)";
    Ipv6FragmentHeader = 38, "ipv6_fragment", "outer IPv6 packet is a fragment (tunnel packets are never reassembled)";
    Ipv6Esp = 39, "ipv6_esp", "outer IPv6 packet carries ESP (IPsec is not terminated here)";

    // --- UDP / VXLAN ---
    UdpTruncated = 40, "udp_truncated", "packet ends inside the UDP header";
    UdpBadLength = 41, "udp_bad_length", "UDP length field disagrees with the IP payload length";
    UdpWrongPort = 42, "udp_wrong_port", "UDP destination port is not the tunnel port";
    UdpBadChecksum = 43, "udp_bad_checksum", "UDP checksum is wrong";
    UdpZeroChecksumV6 = 44, "udp_zero_checksum_v6", "UDP over IPv6 with a zero checksum, and zero-checksum receive is off (RFC 6935)";
    VxlanTruncated = 45, "vxlan_truncated", "packet ends inside the VXLAN header";
    VxlanNoIFlag = 46, "vxlan_no_i_flag", "VXLAN I flag (valid VNI) is not set";
    VxlanReservedBits = 47, "vxlan_reserved_bits", "VXLAN reserved bits are set and strict mode is on";

    // --- GRE ---
    GreTruncated = 50, "gre_truncated", "packet ends inside the GRE header";
    GreBadVersion = 51, "gre_bad_version", "GRE version is not 0";
    GreReservedBits = 52, "gre_reserved_bits", "GRE reserved bits 1-5 (routing included) are set";
    GreBadChecksum = 53, "gre_bad_checksum", "GRE checksum is wrong";
    GreUnknownProtocol = 54, "gre_unknown_protocol", "GRE protocol type is not 0x6558, 0x0800 or 0x86DD";
    GrePayloadMismatch = 55, "gre_payload_mismatch", "GRE protocol type does not match the tunnel's kind (gretap and NVGRE carry Ethernet 0x6558, L3 GRE carries IPv4 or IPv6)";
    Ipv6Ah = 56, "ipv6_ah", "outer IPv6 packet carries an Authentication Header (IPsec is not terminated here)";

    // --- after decapsulation ---
    InnerTruncated = 60, "inner_truncated", "decapsulated frame is shorter than an Ethernet header";
    EcnCeNotEct = 61, "ecn_ce_not_ect", "outer header is CE but the inner packet is Not-ECT (RFC 6040)";
    UnknownTunnel = 62, "unknown_tunnel", "no tunnel is configured for this local endpoint and VNI or key";

    // --- engine ---
    NoMatchingRule = 70, "no_matching_rule", "no rule matched the packet";
    RuleDrop = 71, "rule_drop", "a rule's action dropped the packet";
    UnknownPort = 72, "unknown_port", "the packet arrived on, or was sent to, a port that is not configured";
    NoNeighbour = 73, "no_neighbour", "the remote tunnel endpoint's next-hop MAC address is not resolved yet";
    VlanTagFull = 74, "vlan_tag_full", "push VLAN on a frame that already has two tags";
    NoVlanTag = 75, "no_vlan_tag", "pop or set VLAN on a frame that has no tag";
    FloodListEmpty = 76, "flood_list_empty", "broadcast or unknown unicast with no flood list for its VNI";
    TxRingFull = 77, "tx_ring_full", "the output ring had no room";
    SelfLoop = 78, "self_loop", "output to the input port (hairpin) is not allowed by the rule";
    NoFreeFrame = 79, "no_free_frame", "no free frame to copy a replicated packet or build a reply into";
    PortNotAttached = 80, "port_not_attached", "the output port has no socket on this worker (no interface, or fewer queues than workers)";
    TxFailed = 81, "tx_failed", "the kernel refused to send the packet (an error from the write: interface down or gone)";
    OffloadInvalid = 82, "offload_invalid", "a received frame's virtio-net header asks for a checksum or segmentation the frame does not fit";
    RxTooLarge = 83, "rx_too_large", "a received frame larger than a packet buffer (3840 bytes) and not marked for segmentation";

    // --- L4 checksums of frames from or to workloads, settled where no offload metadata says their state ---
    L4ChecksumBad = 84, "l4_checksum_bad", "a TCP or UDP checksum is wrong, and not a partial one left for an offload to finish";
    L4Truncated = 85, "l4_truncated", "a TCP or UDP packet ends inside its header, or its UDP length exceeds the IP payload, so its checksum cannot be checked";

    // --- Geneve (RFC 8926) ---
    GeneveTruncated = 90, "geneve_truncated", "packet ends inside the Geneve header or the option area its length field announces";
    GeneveBadVersion = 91, "geneve_bad_version", "Geneve version is not 0";
    GeneveControl = 92, "geneve_control", "Geneve O bit set: a control message for the tunnel endpoint, which has no control channel here";
    GeneveCriticalOption = 93, "geneve_unknown_critical_option", "Geneve option with the critical bit set that this endpoint does not understand (RFC 8926 3.5)";
    GeneveBadOption = 94, "geneve_bad_option", "a Geneve option's length runs past the end of the option area";
    GeneveUnknownProtocol = 95, "geneve_unknown_protocol", "Geneve protocol type is not Ethernet (0x6558)";
}

impl DropReason {
    /// Number of counter slots needed to index by `reason as usize`.
    pub const SLOTS: usize = 96;

    /// Looks a reason up by its stable name.
    pub fn from_name(name: &str) -> Option<DropReason> {
        Self::ALL.iter().copied().find(|r| r.name() == name)
    }
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_codes_are_unique_and_fit_the_counter_table() {
        let mut names = std::collections::HashSet::new();
        let mut codes = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert!(names.insert(r.name()), "duplicate name {}", r.name());
            assert!(codes.insert(*r as u16), "duplicate code {}", *r as u16);
            assert!((*r as usize) < DropReason::SLOTS);
            assert!(!r.description().is_empty());
            assert_eq!(DropReason::from_name(r.name()), Some(*r));
        }
    }
}
