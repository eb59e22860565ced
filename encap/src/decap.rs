//! Decapsulation: validate the outer headers of a packet that arrived on an
//! uplink, strip them in place, apply RFC 6040 to the inner ECN field, and say
//! which tunnel it came through, or why it must be dropped.
//!
//! Which VNIs and keys are configured is the engine's business (it owns the
//! tunnel table); everything the wire itself can prove wrong is checked here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ecn;
use crate::packet::PacketBuf;
use crate::wire::checksum;
use crate::wire::ethernet::{self, EtherType};
use crate::wire::geneve;
use crate::wire::gre::{self, GreRepr};
use crate::wire::ipv4;
use crate::wire::ipv6;
use crate::wire::l2;
use crate::wire::udp;
use crate::wire::vxlan::{self, VxlanRepr};
use crate::DropReason;

/// Receive-side policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecapConfig {
    /// Local VTEP addresses; a packet to any other address is `NotLocalVtep`.
    pub local_v4: Vec<[u8; 4]>,
    pub local_v6: Vec<[u8; 16]>,
    /// UDP destination ports that carry VXLAN.
    pub vxlan_ports: Vec<u16>,
    /// Drop VXLAN headers with reserved bits set (RFC 7348 says to ignore them).
    pub vxlan_strict: bool,
    /// Verify non-zero UDP checksums over IPv4 (zero always means "none").
    pub verify_udp_checksum_v4: bool,
    /// Accept UDP over IPv6 with a zero checksum (RFC 6935/6936 opt-in).
    pub accept_zero_checksum_v6: bool,
    /// Verify GRE checksums when present.
    pub verify_gre_checksum: bool,
    /// UDP destination ports that carry Geneve.
    pub geneve_ports: Vec<u16>,
    /// Geneve options rules match on (at most [`MAX_GENEVE_MATCHES`]): bit
    /// `i` of [`Decapped::geneve_options`] says the packet carried an option
    /// equal to entry `i`. Their (class, type) pairs are the options this
    /// endpoint understands; any other critical option drops the packet.
    pub geneve_matches: Vec<GeneveOptionMatch>,
}

/// Most Geneve option matches: one bit each in the flow key.
pub const MAX_GENEVE_MATCHES: usize = 24;

/// A Geneve option a rule matches: class, type (critical bit included) and
/// the exact option data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GeneveOptionMatch {
    pub class: u16,
    pub kind: u8,
    pub data: Vec<u8>,
}

impl Default for DecapConfig {
    fn default() -> Self {
        DecapConfig {
            local_v4: Vec::new(),
            local_v6: Vec::new(),
            vxlan_ports: vec![vxlan::IANA_PORT],
            vxlan_strict: false,
            verify_udp_checksum_v4: true,
            accept_zero_checksum_v6: false,
            verify_gre_checksum: true,
            geneve_ports: vec![geneve::IANA_PORT],
            geneve_matches: Vec::new(),
        }
    }
}

/// Which tunnel a decapsulated packet came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TunnelId {
    Vxlan { vni: u32 },
    Gre { key: Option<u32> },
    Geneve { vni: u32 },
}

/// What decapsulation found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decapped {
    pub tunnel: TunnelId,
    /// Outer destination (a local VTEP) and source (the remote VTEP).
    pub local: IpAddr,
    pub remote: IpAddr,
    /// `TransEther` for Ethernet payloads (VXLAN, gretap); `Ipv4` / `Ipv6` for
    /// L3 GRE, whose packet is handed back behind a synthesised Ethernet header
    /// (destination and source copied from the outer header).
    pub payload: EtherType,
    /// Outer UDP source port (0 for GRE).
    pub src_port: u16,
    /// GRE sequence number, when present.
    pub seq: Option<u32>,
    /// Outer ECN field, before RFC 6040 was applied to the inner header.
    pub outer_ecn: u8,
    /// Geneve: which of `DecapConfig::geneve_matches` the options matched
    /// (bit `i` for entry `i`); 0 for other tunnels.
    pub geneve_options: u32,
}

struct Outer {
    local: IpAddr,
    remote: IpAddr,
    ecn: u8,
    proto: u8,
    /// Offset and length of the IP payload within the frame.
    l4: usize,
    l4_len: usize,
    /// Pseudo-header sum (without length) for the UDP checksum.
    pseudo: u32,
    v6: bool,
}

fn parse_outer(cfg: &DecapConfig, f: &[u8]) -> Result<Outer, DropReason> {
    let h = l2::walk(f)?;
    let off = h.l3_offset;
    let l3 = &f[off..];
    match EtherType::from(h.ethertype) {
        EtherType::Ipv4 => {
            if l3.len() < ipv4::HEADER_LEN {
                return Err(DropReason::Ipv4Truncated);
            }
            let p = ipv4::Packet::new_unchecked(l3);
            if p.version() != 4 {
                return Err(DropReason::Ipv4BadVersion);
            }
            p.check_len()?;
            if !p.verify_checksum() {
                return Err(DropReason::Ipv4BadChecksum);
            }
            if p.is_fragment() {
                return Err(DropReason::Ipv4Fragment);
            }
            let dst = p.dst_addr();
            if !cfg.local_v4.contains(&dst) {
                return Err(DropReason::NotLocalVtep);
            }
            let hl = p.header_len() as usize;
            let proto = u8::from(p.next_header());
            Ok(Outer {
                local: IpAddr::V4(Ipv4Addr::from(dst)),
                remote: IpAddr::V4(Ipv4Addr::from(p.src_addr())),
                ecn: p.ecn(),
                proto,
                l4: off + hl,
                l4_len: p.total_len() as usize - hl,
                pseudo: checksum::pseudo_v4(p.src_addr(), dst, proto, 0),
                v6: false,
            })
        }
        EtherType::Ipv6 => {
            if l3.len() < ipv6::HEADER_LEN {
                return Err(DropReason::Ipv6Truncated);
            }
            let p = ipv6::Packet::new_unchecked(l3);
            if p.version() != 6 {
                return Err(DropReason::Ipv6BadVersion);
            }
            p.check_len()?;
            let dst = p.dst_addr();
            if !cfg.local_v6.contains(&dst) {
                return Err(DropReason::NotLocalVtep);
            }
            let payload_len = p.payload_len() as usize;
            let mut proto = u8::from(p.next_header());
            let mut ext = 0;
            if proto == HOP_BY_HOP || proto == DEST_OPTS {
                let payload = &l3[ipv6::HEADER_LEN..ipv6::HEADER_LEN + payload_len];
                (proto, ext) = skip_option_headers(proto, payload)?;
            }
            match proto {
                ROUTING => return Err(DropReason::Ipv6RoutingHeader),
                FRAGMENT => return Err(DropReason::Ipv6FragmentHeader),
                ESP => return Err(DropReason::Ipv6Esp),
                AH => return Err(DropReason::Ipv6Ah),
                // Mobility, HIP, shim6: a tunnel packet never needs them.
                135 | 139 | 140 => return Err(DropReason::Ipv6ExtensionHeader),
                _ => {}
            }
            let src = p.src_addr();
            Ok(Outer {
                local: IpAddr::V6(Ipv6Addr::from(dst)),
                remote: IpAddr::V6(Ipv6Addr::from(src)),
                ecn: p.ecn(),
                proto,
                l4: off + ipv6::HEADER_LEN + ext,
                l4_len: payload_len - ext,
                pseudo: checksum::pseudo_v6(&src, &dst, proto, 0),
                v6: true,
            })
        }
        _ => Err(DropReason::NotIp),
    }
}

// IPv6 extension header numbers (IANA "IPv6 Extension Header Types").
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const ESP: u8 = 50;
const AH: u8 = 51;
const DEST_OPTS: u8 = 60;

/// Most option headers walked: RFC 8200 4.1 allows a Hop-by-Hop header first
/// and one Destination Options header before the upper layer (a second one
/// only comes with a Routing header, which is dropped anyway).
const MAX_OPTION_HEADERS: usize = 2;

/// Walks the Hop-by-Hop and Destination Options headers at the start of an
/// outer IPv6 payload as a destination does (RFC 8200 4.2): options whose
/// action bits (the two high bits of the type) are 00 are skipped, Pad1 and
/// PadN among them; any other is not understood, so the packet is discarded.
/// Returns the header that follows and the bytes the walk covered.
#[inline(never)]
fn skip_option_headers(mut proto: u8, payload: &[u8]) -> Result<(u8, usize), DropReason> {
    let mut off = 0;
    for i in 0..MAX_OPTION_HEADERS {
        match proto {
            DEST_OPTS => {}
            // Hop-by-Hop is only valid right after the IPv6 header.
            HOP_BY_HOP if i == 0 => {}
            HOP_BY_HOP => return Err(DropReason::Ipv6ExtensionHeader),
            _ => return Ok((proto, off)),
        }
        let len = match payload.get(off + 1) {
            Some(&units) => (units as usize + 1) * 8,
            None => return Err(DropReason::Ipv6OptionsMalformed),
        };
        let header = payload.get(off..off + len).ok_or(DropReason::Ipv6OptionsMalformed)?;
        check_options(&header[2..])?;
        proto = header[0];
        off += len;
    }
    if proto == HOP_BY_HOP || proto == DEST_OPTS {
        return Err(DropReason::Ipv6ExtensionHeader);
    }
    Ok((proto, off))
}

/// Checks the TLV-encoded options of one option header.
fn check_options(mut o: &[u8]) -> Result<(), DropReason> {
    const PAD1: u8 = 0;
    while let Some(&kind) = o.first() {
        if kind == PAD1 {
            o = &o[1..];
            continue;
        }
        let len = match o.get(1) {
            Some(&l) if o.len() >= 2 + l as usize => l as usize,
            _ => return Err(DropReason::Ipv6OptionsMalformed),
        };
        // 00: skip over this option (PadN, 0x01, is one); 01, 10, 11: discard.
        if kind >> 6 != 0 {
            return Err(DropReason::Ipv6OptionDiscard);
        }
        o = &o[2 + len..];
    }
    Ok(())
}

/// Applies RFC 6040 to the inner IP header of the Ethernet frame `f`.
fn apply_ecn(outer: u8, f: &mut [u8]) -> Result<(), DropReason> {
    // A frame cut inside its tags has no IP header to carry CE: nothing to do.
    let Ok(h) = l2::walk(f) else { return Ok(()) };
    apply_ecn_ip(outer, h.ethertype, &mut f[h.l3_offset..])
}

/// Applies RFC 6040 to the IP packet `l3`, of EtherType `et`.
fn apply_ecn_ip(outer: u8, et: u16, l3: &mut [u8]) -> Result<(), DropReason> {
    match et {
        0x0800 if l3.len() >= ipv4::HEADER_LEN && l3[0] >> 4 == 4 => {
            let mut p = ipv4::Packet::new_unchecked(l3);
            let inner = p.ecn();
            let new = ecn::decap(outer, inner)?;
            if new != inner {
                p.set_ecn_and_update_checksum(new);
            }
        }
        0x86dd if l3.len() >= ipv6::HEADER_LEN && l3[0] >> 4 == 6 => {
            let mut p = ipv6::Packet::new_unchecked(l3);
            let inner = p.ecn();
            let new = ecn::decap(outer, inner)?;
            if new != inner {
                p.set_ecn(new);
            }
        }
        // Not IP: there is no inner ECN field to carry CE, so nothing to do.
        _ => {}
    }
    Ok(())
}

/// Validates and strips the outer headers of `pkt` in place. On success `pkt`
/// holds the inner Ethernet frame; on failure it is unchanged, except that
/// RFC 6040 may have been applied to the inner header.
pub fn decap(cfg: &DecapConfig, pkt: &mut PacketBuf<'_>) -> Result<Decapped, DropReason> {
    let f = pkt.data_mut();
    let outer = parse_outer(cfg, f)?;
    let l4 = &mut f[outer.l4..outer.l4 + outer.l4_len];
    let mut geneve_options = 0;
    let (tunnel, payload, src_port, seq, hdr_len) = match outer.proto {
        17 => {
            let u = udp::Packet::new_checked(&*l4)?;
            let geneve = !cfg.vxlan_ports.contains(&u.dst_port());
            if geneve && !cfg.geneve_ports.contains(&u.dst_port()) {
                return Err(DropReason::UdpWrongPort);
            }
            let c = u.checksum();
            if c == 0 {
                if outer.v6 && !cfg.accept_zero_checksum_v6 {
                    return Err(DropReason::UdpZeroChecksumV6);
                }
            } else if outer.v6 || cfg.verify_udp_checksum_v4 {
                let acc = checksum::add_u16(outer.pseudo, u.len());
                if !checksum::verify(checksum::add(acc, &l4[..])) {
                    return Err(DropReason::UdpBadChecksum);
                }
            }
            let src_port = u.src_port();
            if geneve {
                let g = geneve::Packet::new_checked(&l4[udp::HEADER_LEN..])?;
                geneve_options = check_geneve(cfg, &g)?;
                let hl = udp::HEADER_LEN + g.header_len();
                (TunnelId::Geneve { vni: g.vni() }, EtherType::TransEther, src_port, None, hl)
            } else {
                let v = vxlan::Packet::new_checked(&l4[udp::HEADER_LEN..])?;
                let repr = VxlanRepr::parse(&v, cfg.vxlan_strict)?;
                let hl = udp::HEADER_LEN + vxlan::HEADER_LEN;
                (TunnelId::Vxlan { vni: repr.vni }, EtherType::TransEther, src_port, None, hl)
            }
        }
        47 => {
            let g = gre::Packet::new_checked(&*l4)?;
            let repr = GreRepr::parse(&g, cfg.verify_gre_checksum)?;
            let hl = repr.buffer_len();
            (TunnelId::Gre { key: repr.key }, repr.protocol, 0, repr.seq, hl)
        }
        _ => return Err(DropReason::UnknownIpProtocol),
    };
    let mut start = outer.l4 + hdr_len;
    let end = outer.l4 + outer.l4_len;
    if payload == EtherType::TransEther {
        if end - start < ethernet::HEADER_LEN {
            return Err(DropReason::InnerTruncated);
        }
        apply_ecn(outer.ecn, &mut f[start..end])?;
    } else {
        if end == start {
            return Err(DropReason::InnerTruncated);
        }
        // RFC 6040 before the Ethernet header is written over the outer headers,
        // so that a packet dropped for ECN is left unchanged.
        apply_ecn_ip(outer.ecn, u16::from(payload), &mut f[start..end])?;
        // Synthesise an Ethernet header in the space the outer headers used; it
        // never overlaps the outer MAC addresses it copies (the outer headers are
        // at least 14 + 20 + 4 bytes long).
        let macs: [u8; 12] = f[..12].try_into().unwrap();
        start -= ethernet::HEADER_LEN;
        f[start..start + 12].copy_from_slice(&macs);
        f[start + 12..start + 14].copy_from_slice(&u16::from(payload).to_be_bytes());
    }
    pkt.truncate(end);
    pkt.pull_front(start);
    Ok(Decapped {
        tunnel,
        local: outer.local,
        remote: outer.remote,
        payload,
        src_port,
        seq,
        outer_ecn: outer.ecn,
        geneve_options,
    })
}

/// What RFC 8926 asks of a Geneve endpoint receiving a length-checked header:
/// version 0 only; a control packet (O bit) is not data; Ethernet is the one
/// payload carried; options are walked (each length checked) and a critical
/// one this endpoint does not understand drops the packet (3.5). Options are
/// always walked, so the C bit is honoured whether or not the sender set it.
/// Returns which of the configured option matches the packet carried. Works
/// on the view, not `GeneveRepr`: a header without options costs a few
/// compares.
#[inline]
fn check_geneve(cfg: &DecapConfig, g: &geneve::Packet<&[u8]>) -> Result<u32, DropReason> {
    if g.version() != 0 {
        return Err(DropReason::GeneveBadVersion);
    }
    if g.is_control() {
        return Err(DropReason::GeneveControl);
    }
    if g.protocol_type() != u16::from(EtherType::TransEther) {
        return Err(DropReason::GeneveUnknownProtocol);
    }
    if g.options_len() == 0 {
        return Ok(0);
    }
    geneve_options(cfg, g.options())
}

/// Walks a Geneve option area: see [`check_geneve`].
#[inline(never)]
fn geneve_options(cfg: &DecapConfig, area: &[u8]) -> Result<u32, DropReason> {
    let mut bits = 0u32;
    for o in geneve::Options::new(area) {
        let o = o?;
        let mut known = false;
        for (i, m) in cfg.geneve_matches.iter().enumerate().take(MAX_GENEVE_MATCHES) {
            if m.class == o.class && m.kind == o.kind {
                known = true;
                if m.data == o.data {
                    bits |= 1 << i;
                }
            }
        }
        if o.is_critical() && !known {
            return Err(DropReason::GeneveCriticalOption);
        }
    }
    Ok(bits)
}
