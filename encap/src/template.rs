//! Encapsulation with a per-tunnel header template.
//!
//! The outer Ethernet, IP and UDP/VXLAN or GRE headers are built once per tunnel
//! (as Open vSwitch's `tnl_push` does), together with partial checksums over
//! their constant words. Per packet, the template is copied into the headroom in
//! front of the inner frame and only what changes is patched: lengths, IPv4
//! identification and TOS/TTL/DF, the header checksum (from the partial sum), the
//! UDP source port, the GRE sequence number, and the UDP or GRE checksum where
//! one is sent.

use crate::ecn;
use crate::inner::{port_in_range, InnerL3, InnerMeta};
use crate::packet::PacketBuf;
use crate::tunnel::{
    DfMode, DscpMode, Encapsulation, ParamsError, TtlMode, TunnelParams, Underlay, DEFAULT_TTL,
};
use crate::wire::checksum;
use crate::wire::ethernet::{EtherType, EthernetRepr, Frame, VlanTag, HEADER_LEN, TAG_LEN};
use crate::wire::gre::{self, GreRepr};
use crate::wire::ipv4::{self, Ipv4Repr};
use crate::wire::ipv6::{self, Ipv6Repr};
use crate::wire::udp::{self, UdpRepr};
use crate::wire::vxlan::{self, VxlanRepr};
use crate::wire::IpProtocol;
use crate::DropReason;

/// Longest outer header: Ethernet + VLAN tag + IPv6 + GRE with every option.
pub const MAX_OUTER_LEN: usize = HEADER_LEN + TAG_LEN + ipv6::HEADER_LEN + gre::MAX_LEN;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    UdpV4,
    UdpV6,
    GreV4,
    GreV6,
}

/// A tunnel's prebuilt outer header and the state that changes per packet.
/// Each worker owns its copy (identification and GRE sequence are per copy).
#[derive(Clone, Debug)]
pub struct EncapTemplate {
    bytes: [u8; MAX_OUTER_LEN],
    len: u8,
    /// Offset of the outer IP header.
    l3: u8,
    /// Offset of the UDP or GRE header.
    l4: u8,
    kind: Kind,
    /// GRE L3: the inner Ethernet header is stripped and the GRE protocol set
    /// from the inner EtherType.
    ip_payload: bool,
    /// IPv4: ones-complement sum of the header words that never change.
    ip_sum: u32,
    /// UDP: pseudo-header addresses and protocol plus the constant UDP/VXLAN
    /// words. GRE: the constant GRE words (flags, protocol, key).
    l4_sum: u32,
    params: TunnelParams,
    ident: u16,
    seq: u32,
}

impl EncapTemplate {
    /// Builds the template, refusing parameters that are out of range.
    pub fn new(params: &TunnelParams) -> Result<Self, ParamsError> {
        params.validate()?;
        let mut bytes = [0u8; MAX_OUTER_LEN];
        let mut off = HEADER_LEN;
        let ip_type = match params.underlay {
            Underlay::V4 { .. } => EtherType::Ipv4,
            Underlay::V6 { .. } => EtherType::Ipv6,
        };
        let mut eth = Frame::new_unchecked(&mut bytes[..]);
        EthernetRepr { src: params.src_mac, dst: params.dst_mac, ethertype: ip_type }
            .emit(&mut eth);
        if let Some(vid) = params.outer_vlan {
            eth.set_ethertype(EtherType::Vlan);
            let mut tag = VlanTag::new_unchecked(&mut bytes[off..off + TAG_LEN]);
            tag.set_tci(0, false, vid);
            tag.set_ethertype(ip_type);
            off += TAG_LEN;
        }
        let l3 = off;
        let (is_udp, proto) = match params.encap {
            Encapsulation::Vxlan { .. } => (true, IpProtocol::Udp),
            _ => (false, IpProtocol::Gre),
        };
        // Emit the IP header with zero in every per-packet field, so its sum is
        // exactly the sum of the constant words.
        let l4 = match params.underlay {
            Underlay::V4 { src, dst } => {
                let repr = Ipv4Repr {
                    src,
                    dst,
                    protocol: proto,
                    payload_len: 0,
                    ttl: 0,
                    dscp: 0,
                    ecn: 0,
                    dont_frag: false,
                    ident: 0,
                };
                let mut p = ipv4::Packet::new_unchecked(&mut bytes[l3..l3 + ipv4::HEADER_LEN]);
                repr.emit(&mut p);
                p.set_total_len(0);
                p.set_checksum(0);
                l3 + ipv4::HEADER_LEN
            }
            Underlay::V6 { src, dst } => {
                let repr = Ipv6Repr {
                    src,
                    dst,
                    next_header: proto,
                    payload_len: 0,
                    hop_limit: 0,
                    traffic_class: 0,
                    flow_label: 0,
                };
                repr.emit(&mut ipv6::Packet::new_unchecked(&mut bytes[l3..l3 + ipv6::HEADER_LEN]));
                l3 + ipv6::HEADER_LEN
            }
        };
        let kind = match (is_udp, params.underlay) {
            (true, Underlay::V4 { .. }) => Kind::UdpV4,
            (true, Underlay::V6 { .. }) => Kind::UdpV6,
            (false, Underlay::V4 { .. }) => Kind::GreV4,
            (false, Underlay::V6 { .. }) => Kind::GreV6,
        };
        let (len, l4_const) = match params.encap {
            Encapsulation::Vxlan { vni, dst_port } => {
                let u = &mut bytes[l4..l4 + udp::HEADER_LEN + vxlan::HEADER_LEN];
                let mut up = udp::Packet::new_unchecked(&mut u[..]);
                UdpRepr { src_port: 0, dst_port }.emit(&mut up, 0);
                up.set_len(0);
                VxlanRepr { vni }.emit(&mut vxlan::Packet::new_unchecked(up.payload_mut()));
                let len = l4 + udp::HEADER_LEN + vxlan::HEADER_LEN;
                (len, checksum::add(0, &bytes[l4..len]))
            }
            Encapsulation::GreTap { key } | Encapsulation::GreL3 { key } => {
                let o = &params.options;
                let repr = GreRepr {
                    protocol: EtherType::TransEther,
                    checksum: o.gre_checksum,
                    key,
                    seq: o.gre_sequence.then_some(0),
                };
                let hl = repr.buffer_len();
                repr.emit(&mut gre::Packet::new_unchecked(&mut bytes[l4..l4 + hl]));
                // The protocol of GRE L3 is patched per packet: keep it out of the sum.
                let mut sum = checksum::add(0, &bytes[l4..l4 + hl]);
                if matches!(params.encap, Encapsulation::GreL3 { .. }) {
                    let proto = gre::field::PROTOCOL;
                    sum = checksum::add(0, &bytes[l4..l4 + proto.start]);
                    sum = checksum::add(sum, &bytes[l4 + proto.end..l4 + hl]);
                }
                (l4 + hl, sum)
            }
        };
        let (ip_sum, l4_sum) = match params.underlay {
            Underlay::V4 { src, dst } => {
                let ip_sum = checksum::add(0, &bytes[l3..l4]);
                let pseudo = checksum::pseudo_v4(src, dst, u8::from(proto), 0);
                (ip_sum, if is_udp { checksum::add_u32(pseudo, l4_const) } else { l4_const })
            }
            Underlay::V6 { src, dst } => {
                let pseudo = checksum::pseudo_v6(&src, &dst, u8::from(proto), 0);
                (0, if is_udp { checksum::add_u32(pseudo, l4_const) } else { l4_const })
            }
        };
        Ok(EncapTemplate {
            bytes,
            len: len as u8,
            l3: l3 as u8,
            l4: l4 as u8,
            kind,
            ip_payload: matches!(params.encap, Encapsulation::GreL3 { .. }),
            ip_sum,
            l4_sum,
            params: *params,
            ident: 0,
            seq: 0,
        })
    }

    /// The parameters the template was built from.
    pub fn params(&self) -> &TunnelParams {
        &self.params
    }

    /// Bytes of headroom the template needs in front of the inner frame.
    pub fn outer_len(&self) -> usize {
        self.len as usize
    }

    /// The outer header as built (per-packet fields zero).
    pub fn header(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Points the template at a new next hop (the neighbour table changed).
    pub fn set_dst_mac(&mut self, mac: [u8; 6]) {
        Frame::new_unchecked(&mut self.bytes[..]).set_dst_addr(mac);
        self.params.dst_mac = mac;
    }

    /// Sets the largest outer IP packet the template lets out: the
    /// configured underlay MTU, or the uplink interface's when that is
    /// smaller (the interface's MTU was lowered under a running daemon).
    pub fn set_underlay_mtu(&mut self, mtu: u16) {
        self.params.options.underlay_mtu = mtu;
    }

    /// Sets the outer source MAC address (the uplink interface's, when the
    /// configuration does not give one).
    pub fn set_src_mac(&mut self, mac: [u8; 6]) {
        Frame::new_unchecked(&mut self.bytes[..]).set_src_addr(mac);
        self.params.src_mac = mac;
    }

    /// Encapsulates the inner Ethernet frame in `pkt` in place.
    #[inline]
    pub fn encap(&mut self, pkt: &mut PacketBuf<'_>) -> Result<(), DropReason> {
        let meta = InnerMeta::parse(pkt.data())?;
        self.encap_with_meta(pkt, &meta)
    }

    /// Encapsulates with inner facts the caller already parsed (the engine
    /// parses every packet once for classification).
    #[inline]
    pub fn encap_with_meta(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        meta: &InnerMeta,
    ) -> Result<(), DropReason> {
        let o = &self.params.options;
        let (strip, gre_proto) = if self.ip_payload {
            match meta.l3 {
                InnerL3::Ipv4 => (meta.l3_offset as usize, EtherType::Ipv4),
                InnerL3::Ipv6 => (meta.l3_offset as usize, EtherType::Ipv6),
                InnerL3::Other => return Err(DropReason::InnerNotIp),
            }
        } else {
            (0, EtherType::TransEther)
        };
        let len = self.len as usize;
        let (l3, l4) = (self.l3 as usize, self.l4 as usize);
        let payload_len = pkt.len() - strip;
        let ip_total = len - l3 + payload_len;
        if ip_total > o.underlay_mtu as usize {
            return Err(DropReason::MtuExceeded);
        }
        let data = pkt.push_front(len - strip).ok_or(DropReason::NoHeadroom)?;
        data[..len].copy_from_slice(&self.bytes[..len]);

        let dscp = match o.dscp {
            DscpMode::Fixed(d) => d,
            DscpMode::Inherit => meta.dscp(),
        };
        let ecn = ecn::encap(o.ecn, meta.ecn());
        let tos = (dscp << 2) | ecn;
        let ttl = match (o.ttl, meta.l3) {
            (TtlMode::Fixed(t), _) => t,
            (TtlMode::Inherit, InnerL3::Other) => DEFAULT_TTL,
            (TtlMode::Inherit, _) => meta.ttl,
        };
        let l4_len = (ip_total - (l4 - l3)) as u16;

        match self.kind {
            Kind::UdpV4 | Kind::GreV4 => {
                let df = match o.df {
                    DfMode::Set => true,
                    DfMode::Unset => false,
                    DfMode::Inherit => meta.df,
                };
                self.ident = self.ident.wrapping_add(1);
                let mut h = ipv4::Packet::new_unchecked(&mut data[l3..l4]);
                h.set_dscp_ecn(dscp, ecn);
                h.set_total_len(ip_total as u16);
                h.set_ident(self.ident);
                h.set_flags_and_offset(df, false, 0);
                h.set_ttl(ttl);
                let mut acc = checksum::add_u16(self.ip_sum, tos as u16);
                acc = checksum::add_u16(acc, ip_total as u16);
                acc = checksum::add_u16(acc, self.ident);
                acc = checksum::add_u16(acc, if df { ipv4::FLAG_DF } else { 0 });
                acc = checksum::add_u16(acc, (ttl as u16) << 8);
                h.set_checksum(checksum::finish(acc));
            }
            Kind::UdpV6 | Kind::GreV6 => {
                let mut h = ipv6::Packet::new_unchecked(&mut data[l3..l4]);
                h.set_version_tc_flow(tos, meta.hash);
                h.set_payload_len(l4_len);
                h.set_hop_limit(ttl);
            }
        }

        match self.kind {
            Kind::UdpV4 | Kind::UdpV6 => {
                let sport = port_in_range(meta.hash, o.src_port_min, o.src_port_max);
                let mut u = udp::Packet::new_unchecked(&mut data[l4..]);
                u.set_src_port(sport);
                u.set_len(l4_len);
                if self.kind == Kind::UdpV6 || o.udp_checksum {
                    // Pseudo-header length and UDP length are the same value: add it twice.
                    let mut acc = checksum::add_u16(self.l4_sum, sport);
                    acc = checksum::add_u16(acc, l4_len);
                    acc = checksum::add_u16(acc, l4_len);
                    acc = checksum::add(acc, &u.payload()[vxlan::HEADER_LEN..]);
                    // A computed zero is sent as all ones (RFC 768, RFC 8200 8.1).
                    let c = match checksum::finish(acc) {
                        0 => 0xffff,
                        c => c,
                    };
                    u.set_checksum(c);
                }
            }
            Kind::GreV4 | Kind::GreV6 => {
                let mut g = gre::Packet::new_unchecked(&mut data[l4..]);
                let mut acc = self.l4_sum;
                if self.ip_payload {
                    g.set_protocol(gre_proto);
                    acc = checksum::add_u16(acc, u16::from(gre_proto));
                }
                if g.has_seq() {
                    self.seq = self.seq.wrapping_add(1);
                    g.set_seq(self.seq);
                    acc = checksum::add_u32(acc, self.seq);
                }
                if g.has_checksum() {
                    acc = checksum::add(acc, g.payload());
                    g.set_checksum(checksum::finish(acc));
                }
            }
        }
        Ok(())
    }
}
