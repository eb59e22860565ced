//! Path-MTU replies for frames too big for their tunnel: ICMPv4 "fragmentation
//! needed" (RFC 792, RFC 1191) and ICMPv6 "packet too big" (RFC 4443), built
//! back towards the inner source so its PMTU discovery shrinks the flow instead
//! of the tunnel fragmenting it.
//!
//! Like Linux's bridged tunnels (`iptunnel_pmtud_build_icmp`), the reply comes
//! from the original destination's address and MAC: the tunnel endpoint is
//! invisible to the workload, which only knows its peer. Rate limiting is the
//! caller's job (it has the clock).

use crate::wire::checksum;
use crate::wire::ethernet::{self, EtherType};
use crate::wire::{ipv4, ipv6, l2};

/// IPv4: the reply, IP header included, is at most 576 bytes (RFC 1812 4.3.2.3).
const V4_MAX: usize = 576;
/// IPv6: the reply must not exceed the minimum MTU (RFC 4443 2.4 (c)).
const V6_MAX: usize = 1280;
/// Space a caller must provide for any reply.
pub const MAX_REPLY_LEN: usize = ethernet::HEADER_LEN + V6_MAX;

/// Builds the reply to an inner Ethernet frame that did not fit a tunnel whose
/// inner IP MTU is `mtu`. Writes an Ethernet frame into `out` and returns its
/// length, or `None` when no reply is due: not IP, IPv4 without DF, a
/// non-initial fragment, an ICMP error (never answer an error with an error),
/// a source that cannot be answered (unspecified, multicast, broadcast), or
/// `out` shorter than `MAX_REPLY_LEN`. A VLAN-tagged frame is answered untagged;
/// the caller re-tags it if needed.
pub fn too_big_reply(frame: &[u8], mtu: u16, out: &mut [u8]) -> Option<usize> {
    if frame.len() < ethernet::HEADER_LEN || out.len() < MAX_REPLY_LEN {
        return None;
    }
    // A frame cut inside its tags is not IP: no reply.
    let h = l2::walk(frame).ok()?;
    let ip = &frame[h.l3_offset..];
    // Reply goes back where the frame came from, and seems to come from its peer.
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&frame[0..6]);
    match EtherType::from(h.ethertype) {
        EtherType::Ipv4 => v4(ip, mtu, out),
        EtherType::Ipv6 => v6(ip, mtu, out),
        _ => None,
    }
}

fn v4(ip: &[u8], mtu: u16, out: &mut [u8]) -> Option<usize> {
    let p = ipv4::Packet::new_checked(ip).ok()?;
    if p.version() != 4 || !p.dont_frag() || p.frag_offset() != 0 {
        return None;
    }
    let src = p.src_addr();
    if src == [0; 4] || src == [255; 4] || src[0] >= 224 {
        return None;
    }
    let hl = p.header_len() as usize;
    if p.next_header() == crate::wire::IpProtocol::Icmp {
        // Types 3, 4, 5, 11 and 12 are errors; a truncated ICMP header is treated
        // as one, to be safe.
        let t = ip.get(hl).copied().unwrap_or(3);
        if matches!(t, 3 | 4 | 5 | 11 | 12) {
            return None;
        }
    }
    let quoted = (p.total_len() as usize).min(V4_MAX - 20 - 8);
    let total = 20 + 8 + quoted;
    let e = ethernet::HEADER_LEN;
    out[12..14].copy_from_slice(&u16::from(EtherType::Ipv4).to_be_bytes());
    let repr = ipv4::Ipv4Repr {
        src: p.dst_addr(),
        dst: src,
        protocol: crate::wire::IpProtocol::Icmp,
        payload_len: (8 + quoted) as u16,
        ttl: 64,
        dscp: 0,
        ecn: 0,
        dont_frag: false,
        ident: 0,
    };
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut out[e..e + 20]));
    let icmp = &mut out[e + 20..e + total];
    icmp[0..8].copy_from_slice(&[3, 4, 0, 0, 0, 0, (mtu >> 8) as u8, mtu as u8]);
    icmp[8..].copy_from_slice(&ip[..quoted]);
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(e + total)
}

fn v6(ip: &[u8], mtu: u16, out: &mut [u8]) -> Option<usize> {
    let p = ipv6::Packet::new_checked(ip).ok()?;
    if p.version() != 6 {
        return None;
    }
    let src = p.src_addr();
    if src == [0; 16] || src[0] == 0xff {
        return None;
    }
    if p.next_header() == crate::wire::IpProtocol::Icmpv6 {
        // Types below 128 are errors.
        let t = ip.get(ipv6::HEADER_LEN).copied().unwrap_or(0);
        if t < 128 {
            return None;
        }
    }
    let quoted = (ipv6::HEADER_LEN + p.payload_len() as usize).min(V6_MAX - 40 - 8);
    let e = ethernet::HEADER_LEN;
    out[12..14].copy_from_slice(&u16::from(EtherType::Ipv6).to_be_bytes());
    let dst = src;
    let src = p.dst_addr();
    let len = 8 + quoted;
    let repr = ipv6::Ipv6Repr {
        src,
        dst,
        next_header: crate::wire::IpProtocol::Icmpv6,
        payload_len: len as u16,
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
    };
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut out[e..e + 40]));
    let icmp = &mut out[e + 40..e + 40 + len];
    let m = (mtu as u32).to_be_bytes();
    icmp[0..8].copy_from_slice(&[2, 0, 0, 0, m[0], m[1], m[2], m[3]]);
    icmp[8..].copy_from_slice(&ip[..quoted]);
    let acc = checksum::pseudo_v6(&src, &dst, 58, len as u32);
    let c = checksum::finish(checksum::add(acc, icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(e + 40 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_frame(df: bool, proto: u8, first_payload_byte: u8, len: usize) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa, 0x08, 0x00];
        let repr = ipv4::Ipv4Repr {
            src: [198, 51, 100, 1],
            dst: [198, 51, 100, 2],
            protocol: proto.into(),
            payload_len: (len - 20) as u16,
            ttl: 64,
            dscp: 0,
            ecn: 0,
            dont_frag: df,
            ident: 1,
        };
        let mut ip = vec![0u8; len];
        repr.emit(&mut ipv4::Packet::new_unchecked(&mut ip[..]));
        ip[20] = first_payload_byte;
        f.extend_from_slice(&ip);
        f
    }

    #[test]
    fn ipv4_frag_needed() {
        let f = v4_frame(true, 6, 0, 1500);
        let mut out = [0xa5u8; MAX_REPLY_LEN];
        let n = too_big_reply(&f, 1450, &mut out).unwrap();
        assert_eq!(n, 14 + 576);
        assert_eq!(&out[0..6], &f[6..12]);
        assert_eq!(&out[6..12], &f[0..6]);
        let p = ipv4::Packet::new_checked(&out[14..n]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!((p.src_addr(), p.dst_addr()), ([198, 51, 100, 2], [198, 51, 100, 1]));
        let icmp = p.payload();
        assert_eq!(&icmp[..2], &[3, 4]);
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1450);
        assert_eq!(checksum::checksum(icmp), 0);
        assert_eq!(&icmp[8..28], &f[14..34], "quotes the original header");
    }

    #[test]
    fn ipv4_no_reply_cases() {
        let mut out = [0u8; MAX_REPLY_LEN];
        assert!(too_big_reply(&v4_frame(false, 6, 0, 1500), 1450, &mut out).is_none(), "DF clear");
        assert!(too_big_reply(&v4_frame(true, 1, 3, 1500), 1450, &mut out).is_none(), "ICMP error");
        assert!(too_big_reply(&v4_frame(true, 1, 8, 1500), 1450, &mut out).is_some(), "echo");
        let mut short = [0u8; 100];
        assert!(too_big_reply(&v4_frame(true, 6, 0, 1500), 1450, &mut short).is_none());
        let arp = [0u8; 60];
        assert!(too_big_reply(&arp, 1450, &mut out).is_none());
    }

    #[test]
    fn ipv6_packet_too_big() {
        let mut f = vec![2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa, 0x86, 0xdd];
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        let mut dst = src;
        src[15] = 1;
        dst[15] = 2;
        let repr = ipv6::Ipv6Repr {
            src,
            dst,
            next_header: 17.into(),
            payload_len: 1460,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        };
        let mut ip = vec![0u8; 1500];
        repr.emit(&mut ipv6::Packet::new_unchecked(&mut ip[..]));
        f.extend_from_slice(&ip);
        let mut out = [0u8; MAX_REPLY_LEN];
        let n = too_big_reply(&f, 1430, &mut out).unwrap();
        assert_eq!(n, 14 + 1280);
        let p = ipv6::Packet::new_checked(&out[14..n]).unwrap();
        assert_eq!((p.src_addr(), p.dst_addr()), (dst, src));
        let icmp = p.payload();
        assert_eq!(&icmp[..2], &[2, 0]);
        assert_eq!(u32::from_be_bytes(icmp[4..8].try_into().unwrap()), 1430);
        let acc = checksum::pseudo_v6(&dst, &src, 58, icmp.len() as u32);
        assert!(checksum::verify(checksum::add(acc, icmp)));
    }
}
