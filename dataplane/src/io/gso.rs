//! Software segmentation of the super-frames a workload with TSO or USO hands
//! to a TAP port (virtio-net `GSO_TCPV4`, `GSO_TCPV6`, `GSO_UDP_L4`), so that
//! every packet entering the pipeline fits the tunnel's MTU.
//!
//! Each segment is a copy of the super-frame's headers followed by its share
//! of the payload, with the IP length (and IPv4 identification and header
//! checksum), the TCP sequence number and flags or the UDP length fixed, and
//! a complete L4 checksum: what the kernel's own GSO produces.
//!
//! A VXLAN super-frame (a peer's tunnel GSO skb, punted whole by a tc
//! uplink: io/tc_port.rs) is cut the same way inside its outer headers,
//! whose lengths, IPv4 identification and checksums are fixed per segment
//! too (the kernel's `skb_udp_tunnel_segment`). The virtio-net header
//! describes such a frame by its inner protocol (`GSO_TCPV4` ...).

use encap::wire::{checksum, ipv4, ipv6, l2, tcp, udp};

use super::virtio::{OffloadError, VnetHdr, GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};

/// The outer headers of a VXLAN super-frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Outer {
    l3: usize,
    l4: usize,
    v4: bool,
}

/// The outer headers of `frame` if it is VXLAN (IPv4 or IPv6, UDP, the I
/// flag) around an untagged Ethernet frame, with the inner L3 offset and
/// ethertype.
fn vxlan_outer(frame: &[u8], l3: usize, et: u16) -> Option<(Outer, usize, u16)> {
    let ip = frame.get(l3..)?;
    let (l4, proto, v4) = match et {
        0x0800 if ip.len() >= ipv4::HEADER_LEN => {
            let p = ipv4::Packet::new_unchecked(ip);
            (l3 + p.header_len() as usize, u8::from(p.next_header()), true)
        }
        0x86dd if ip.len() >= ipv6::HEADER_LEN => {
            (l3 + ipv6::HEADER_LEN, u8::from(ipv6::Packet::new_unchecked(ip).next_header()), false)
        }
        _ => return None,
    };
    // UDP (8), VXLAN (8, flags first), the inner Ethernet header (14).
    let inner = l4 + 16;
    if proto != 17 || frame.len() < inner + 14 || frame[l4 + 8] & 0x08 == 0 {
        return None;
    }
    let et = u16::from_be_bytes([frame[inner + 12], frame[inner + 13]]);
    Some((Outer { l3, l4, v4 }, inner + 14, et))
}

/// A super-frame, parsed once, ready to be cut into segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    outer: Option<Outer>,
    l3: usize,
    l4: usize,
    /// Bytes of headers copied in front of every segment.
    hdr_len: usize,
    v4: bool,
    tcp: bool,
    /// Payload bytes per segment (the last one may carry fewer).
    mss: usize,
    payload: usize,
}

impl Plan {
    /// Parses `frame` as the super-frame `h` describes, cutting payloads of at
    /// most `h.gso_size` bytes, and fewer if a segment's IP packet would
    /// exceed `max_ip` bytes (the smallest inner MTU of the tunnels).
    pub fn new(frame: &[u8], h: &VnetHdr, max_ip: usize) -> Result<Plan, OffloadError> {
        let bad = OffloadError::BadSegmentation;
        let l2 = l2::walk(frame).map_err(|_| bad)?;
        let (mut l3, mut et) = (l2.l3_offset, l2.ethertype);
        let kind = h.gso_type & !GSO_ECN;
        // TCP segmentation of a UDP packet: only a tunnel's makes sense.
        let mut outer = None;
        if kind == GSO_TCPV4 || kind == GSO_TCPV6 {
            if let Some((o, inner_l3, inner_et)) = vxlan_outer(frame, l3, et) {
                (outer, l3, et) = (Some(o), inner_l3, inner_et);
            }
        }
        let (v4, is_tcp) = match (kind, et) {
            (GSO_TCPV4, 0x0800) => (true, true),
            (GSO_TCPV6, 0x86dd) => (false, true),
            (GSO_UDP_L4, 0x0800) => (true, false),
            (GSO_UDP_L4, 0x86dd) => (false, false),
            _ => return Err(bad),
        };
        let ip = &frame[l3..];
        let (l4, proto) = if v4 {
            if ip.len() < ipv4::HEADER_LEN {
                return Err(bad);
            }
            let p = ipv4::Packet::new_unchecked(ip);
            let ihl = p.header_len() as usize;
            if ihl < ipv4::HEADER_LEN || ip.len() < ihl {
                return Err(bad);
            }
            (l3 + ihl, u8::from(p.next_header()))
        } else {
            if ip.len() < ipv6::HEADER_LEN {
                return Err(bad);
            }
            (l3 + ipv6::HEADER_LEN, u8::from(ipv6::Packet::new_unchecked(ip).next_header()))
        };
        let hdr_len = if is_tcp {
            let doff = tcp::header_len(*frame.get(l4 + tcp::field::DATA_OFF).ok_or(bad)?);
            if proto != 6 || doff < tcp::HEADER_LEN {
                return Err(bad);
            }
            l4 + doff
        } else {
            if proto != 17 {
                return Err(bad);
            }
            l4 + udp::HEADER_LEN
        };
        if hdr_len > frame.len() || h.gso_size == 0 {
            return Err(bad);
        }
        let room = (l3 + max_ip).checked_sub(hdr_len).filter(|r| *r > 0).ok_or(bad)?;
        let mss = (h.gso_size as usize).min(room);
        Ok(Plan { outer, l3, l4, hdr_len, v4, tcp: is_tcp, mss, payload: frame.len() - hdr_len })
    }

    pub fn segments(&self) -> usize {
        self.payload.div_ceil(self.mss).max(1)
    }

    /// Length of segment `i`.
    pub fn segment_len(&self, i: usize) -> usize {
        let start = i * self.mss;
        self.hdr_len + (self.payload - start).min(self.mss)
    }

    /// Writes segment `i` of `frame` into `out` (at least `segment_len(i)`
    /// bytes) and returns its length.
    pub fn write(&self, frame: &[u8], i: usize, out: &mut [u8]) -> usize {
        let start = i * self.mss;
        let chunk = (self.payload - start).min(self.mss);
        let len = self.hdr_len + chunk;
        let last = i + 1 == self.segments();
        out[..self.hdr_len].copy_from_slice(&frame[..self.hdr_len]);
        out[self.hdr_len..len]
            .copy_from_slice(&frame[self.hdr_len + start..self.hdr_len + start + chunk]);
        let l4_len = len - self.l4;

        let ip = &mut out[self.l3..self.l4];
        let proto = if self.tcp { 6 } else { 17 };
        let acc = if self.v4 {
            let mut p = ipv4::Packet::new_unchecked(ip);
            p.set_total_len((len - self.l3) as u16);
            p.set_ident(p.ident().wrapping_add(i as u16));
            p.fill_checksum();
            checksum::pseudo_v4(p.src_addr(), p.dst_addr(), proto, l4_len as u16)
        } else {
            let mut p = ipv6::Packet::new_unchecked(ip);
            p.set_payload_len((len - self.l3 - ipv6::HEADER_LEN) as u16);
            checksum::pseudo_v6(&p.src_addr(), &p.dst_addr(), proto, l4_len as u32)
        };
        let l4 = &mut out[self.l4..len];
        let csum = if self.tcp {
            let seq = u32::from_be_bytes(l4[tcp::field::SEQ].try_into().unwrap());
            l4[tcp::field::SEQ].copy_from_slice(&seq.wrapping_add(start as u32).to_be_bytes());
            // FIN and PSH end the burst: only the last segment carries them;
            // CWR answers congestion once: only the first.
            if !last {
                l4[tcp::field::FLAGS] &= !(tcp::FLAG_FIN | tcp::FLAG_PSH);
            }
            if i > 0 {
                l4[tcp::field::FLAGS] &= !tcp::FLAG_CWR;
            }
            tcp::field::CHECKSUM
        } else {
            udp::Packet::new_unchecked(&mut l4[..]).set_len(l4_len as u16);
            udp::field::CHECKSUM
        };
        l4[csum.clone()].fill(0);
        let c = match checksum::finish(checksum::add(acc, l4)) {
            0 if !self.tcp => 0xffff,
            c => c,
        };
        l4[csum].copy_from_slice(&c.to_be_bytes());
        if let Some(o) = self.outer {
            write_outer(o, i, &mut out[..len]);
        }
        len
    }
}

/// Fixes the outer headers of segment `i` (the whole frame in `seg`, its
/// inner packet final): lengths, IPv4 identification and header checksum,
/// and the UDP checksum if the super-frame had one (always over IPv6).
fn write_outer(o: Outer, i: usize, seg: &mut [u8]) {
    let len = seg.len();
    let udp_len = len - o.l4;
    let acc = if o.v4 {
        let mut p = ipv4::Packet::new_unchecked(&mut seg[o.l3..o.l4]);
        p.set_total_len((len - o.l3) as u16);
        p.set_ident(p.ident().wrapping_add(i as u16));
        p.fill_checksum();
        checksum::pseudo_v4(p.src_addr(), p.dst_addr(), 17, udp_len as u16)
    } else {
        let mut p = ipv6::Packet::new_unchecked(&mut seg[o.l3..o.l4]);
        p.set_payload_len(udp_len as u16);
        checksum::pseudo_v6(&p.src_addr(), &p.dst_addr(), 17, udp_len as u32)
    };
    let u = &mut seg[o.l4..];
    udp::Packet::new_unchecked(&mut u[..]).set_len(udp_len as u16);
    if o.v4 && u[udp::field::CHECKSUM] == [0, 0] {
        return; // none sent: none to fix
    }
    u[udp::field::CHECKSUM].fill(0);
    let c = match checksum::finish(checksum::add(acc, u)) {
        0 => 0xffff,
        c => c,
    };
    u[udp::field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::super::virtio::{l4_checksum_valid, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    fn payload(n: usize) -> String {
        (0..n).map(|i| format!("{:02x}", (i * 7 + 3) as u8)).collect()
    }

    /// Cuts `frame` and checks every segment with etherparse: lengths,
    /// checksums, sequence numbers, and the payloads joined back together.
    fn cut_and_check(frame: &[u8], gso_type: u8, gso_size: u16, max_ip: usize) -> Vec<Vec<u8>> {
        let h = VnetHdr { gso_type, gso_size, ..Default::default() };
        let plan = Plan::new(frame, &h, max_ip).unwrap();
        let mut segs = Vec::new();
        for i in 0..plan.segments() {
            let mut out = vec![0u8; plan.segment_len(i)];
            let n = plan.write(frame, i, &mut out);
            assert_eq!(n, out.len());
            assert!(n - 14 <= max_ip, "segment {i} is {n} bytes, over an MTU of {max_ip}");
            assert!(l4_checksum_valid(&out), "segment {i}: bad L4 checksum");
            segs.push(out);
        }
        let whole = SlicedPacket::from_ethernet(frame).unwrap();
        let want: Vec<u8> = match whole.transport.unwrap() {
            TransportSlice::Tcp(t) => t.payload().to_vec(),
            TransportSlice::Udp(u) => u.payload().to_vec(),
            _ => unreachable!(),
        };
        let mut got = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let p = SlicedPacket::from_ethernet(s).unwrap();
            match p.net.unwrap() {
                NetSlice::Ipv4(ip) => {
                    assert_eq!(ip.header().total_len() as usize, s.len() - 14);
                    let h = ip.header().to_header();
                    assert_eq!(h.header_checksum, h.calc_header_checksum(), "segment {i}");
                }
                NetSlice::Ipv6(ip) => {
                    assert_eq!(ip.header().payload_length() as usize, s.len() - 54)
                }
                _ => unreachable!(),
            }
            match p.transport.unwrap() {
                TransportSlice::Tcp(t) => {
                    assert_eq!(t.sequence_number(), 1 + got.len() as u32, "segment {i}");
                    got.extend_from_slice(t.payload());
                }
                TransportSlice::Udp(u) => {
                    assert_eq!(u.length() as usize, u.slice().len());
                    got.extend_from_slice(u.payload());
                }
                _ => unreachable!(),
            }
        }
        assert_eq!(got, want, "the segments' payloads do not join back into the original");
        segs
    }

    #[test]
    fn tcpv4_cut_at_gso_size() {
        let f = engine::packet_spec::build(&format!(
            "eth/ipv4(src=198.51.100.1,dst=198.51.100.2,id=100)/tcp(sport=5001,dport=80)/hex(data={})",
            payload(5000)
        ))
        .unwrap();
        let segs = cut_and_check(&f, GSO_TCPV4, 1400, 1500);
        assert_eq!(segs.len(), 4);
        assert_eq!(segs[0].len(), 14 + 20 + 20 + 1400);
        assert_eq!(segs[3].len(), 14 + 20 + 20 + 800);
        // Identification counts up from the super-frame's.
        let ids: Vec<u16> = segs.iter().map(|s| u16::from_be_bytes([s[18], s[19]])).collect();
        assert_eq!(ids, [100, 101, 102, 103]);
    }

    #[test]
    fn tcpv6_cut_smaller_than_gso_size_when_the_mtu_needs_it() {
        let f = engine::packet_spec::build(&format!(
            "eth/ipv6(src=2001:db8::1,dst=2001:db8::2)/tcp(sport=5001,dport=80)/hex(data={})",
            payload(3000)
        ))
        .unwrap();
        // The workload offered 1440-byte segments; the tunnel allows 1000.
        let segs = cut_and_check(&f, GSO_TCPV6, 1440, 1000);
        assert!(segs.iter().all(|s| s.len() <= 1014));
        assert_eq!(segs.len(), 3000usize.div_ceil(1000 - 60));
    }

    #[test]
    fn udp_l4_each_segment_its_own_datagram() {
        let f = engine::packet_spec::build(&format!(
            "eth/ipv4(src=198.51.100.1,dst=198.51.100.2)/udp(sport=4000,dport=4001)/hex(data={})",
            payload(2500)
        ))
        .unwrap();
        let segs = cut_and_check(&f, GSO_UDP_L4, 1000, 1500);
        assert_eq!(segs.len(), 3);
        let f6 = engine::packet_spec::build(&format!(
            "eth/ipv6(src=2001:db8::1,dst=2001:db8::2)/udp(sport=4000,dport=4001)/hex(data={})",
            payload(2500)
        ))
        .unwrap();
        assert_eq!(cut_and_check(&f6, GSO_UDP_L4, 1000, 1500).len(), 3);
    }

    #[test]
    fn fin_and_psh_only_on_the_last_segment_cwr_only_on_the_first() {
        let mut f = engine::packet_spec::build(&format!(
            "eth/ipv4(src=198.51.100.1,dst=198.51.100.2)/tcp(sport=1,dport=2)/hex(data={})",
            payload(3000)
        ))
        .unwrap();
        f[14 + 20 + 13] = 0x80 | 0x10 | 0x08 | 0x01; // CWR ACK PSH FIN
        let h = VnetHdr { gso_type: GSO_TCPV4 | GSO_ECN, gso_size: 1000, ..Default::default() };
        let plan = Plan::new(&f, &h, 1500).unwrap();
        let flags: Vec<u8> = (0..plan.segments())
            .map(|i| {
                let mut out = vec![0; plan.segment_len(i)];
                plan.write(&f, i, &mut out);
                assert!(l4_checksum_valid(&out));
                out[14 + 20 + 13]
            })
            .collect();
        assert_eq!(flags, [0x90, 0x10, 0x19]);
    }

    /// A peer's VXLAN super-frame (TSO inside the tunnel): every segment a
    /// whole VXLAN packet, outer lengths and checksums fixed, the inner
    /// segments those of the inner super-frame cut on its own.
    #[test]
    fn vxlan_super_frames_cut_inside_their_outer_headers() {
        let inner = format!(
            "eth/ipv4(src=198.51.100.2,dst=198.51.100.1,id=100)/tcp(sport=5001,dport=80)/hex(data={})",
            payload(5000)
        );
        for outer in [
            "eth/ipv4(src=192.0.2.2,dst=192.0.2.1,id=7)/udp(sport=50000,dport=4789,csum=0)",
            "eth/ipv4(src=192.0.2.2,dst=192.0.2.1,id=7)/udp(sport=50000,dport=4789,csum=auto)",
            "eth/ipv6(src=2001:db8::2,dst=2001:db8::1)/udp(sport=50000,dport=4789,csum=auto)",
        ] {
            let f = engine::packet_spec::build(&format!("{outer}/vxlan(vni=42)/{inner}")).unwrap();
            let o = if outer.contains("ipv4") { 14 + 20 } else { 14 + 40 };
            let h = VnetHdr { gso_type: GSO_TCPV4, gso_size: 1400, ..Default::default() };
            let plan = Plan::new(&f, &h, 1450).unwrap();
            assert_eq!(plan.segments(), 4, "{outer}");
            let mut joined = Vec::new();
            for i in 0..plan.segments() {
                let mut out = vec![0u8; plan.segment_len(i)];
                plan.write(&f, i, &mut out);
                // The outer UDP checksum (none stays none) and the inner TCP one.
                if outer.contains("auto") {
                    assert!(l4_checksum_valid(&out), "{outer}: segment {i}: outer checksum");
                } else {
                    assert_eq!(out[o + 6..o + 8], [0, 0], "{outer}: segment {i}");
                }
                let inner = &out[o + 16..];
                assert!(l4_checksum_valid(inner), "{outer}: segment {i}: inner checksum");
                assert!(inner.len() - 14 <= 1450);
                let p = SlicedPacket::from_ethernet(&out).unwrap();
                let TransportSlice::Udp(u) = p.transport.unwrap() else { unreachable!() };
                assert_eq!(u.length() as usize, out.len() - o, "{outer}: segment {i}");
                if outer.contains("ipv4") {
                    assert_eq!(u16::from_be_bytes([out[16], out[17]]) as usize, out.len() - 14);
                    assert_eq!(u16::from_be_bytes([out[18], out[19]]), 7 + i as u16);
                    assert_eq!(checksum::finish(checksum::add(0, &out[14..34])), 0);
                }
                let p = SlicedPacket::from_ethernet(inner).unwrap();
                let TransportSlice::Tcp(t) = p.transport.unwrap() else { unreachable!() };
                assert_eq!(t.sequence_number(), 1 + joined.len() as u32);
                joined.extend_from_slice(t.payload());
            }
            assert_eq!(joined.len(), 5000);
        }
    }

    #[test]
    fn refuses_what_the_header_does_not_describe() {
        let udp = engine::packet_spec::build(
            "eth/ipv4(src=198.51.100.1,dst=198.51.100.2)/udp(sport=1,dport=2)/payload(len=100)",
        )
        .unwrap();
        let h = |t: u8, s: u16| VnetHdr { gso_type: t, gso_size: s, ..Default::default() };
        let bad = Err(OffloadError::BadSegmentation);
        assert_eq!(Plan::new(&udp, &h(GSO_TCPV4, 50), 1500), bad, "TSO on a UDP packet");
        assert_eq!(Plan::new(&udp, &h(GSO_TCPV6, 50), 1500), bad, "TCPv6 on IPv4");
        assert_eq!(Plan::new(&udp, &h(GSO_UDP_L4, 0), 1500), bad, "zero gso_size");
        assert_eq!(Plan::new(&udp, &h(3, 50), 1500), bad, "legacy UFO");
        assert_eq!(Plan::new(&udp[..30], &h(GSO_UDP_L4, 50), 1500), bad, "truncated");
        assert_eq!(Plan::new(&udp, &h(GSO_UDP_L4, 50), 28), bad, "no room for payload");
    }
}
