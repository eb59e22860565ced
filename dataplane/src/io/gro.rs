//! Software GRO on the way to a workload: consecutive TCP segments of one
//! flow, in the order a batch sends them, are copied into one super-frame
//! that is written with a virtio-net GSO header (packet sockets and TAP
//! queues take one), so the workload's stack receives one skb for many
//! segments, as it does from the kernel's own VXLAN device after its GRO
//! cells. Per segment this costs a copy of its payload; it saves a write, an
//! skb and a pass through the workload's TCP receive.
//!
//! What merges follows the kernel's `tcp_gro_receive`: the same Ethernet
//! header, IP header (but its length, IPv4 identification and checksum),
//! ports, acknowledgment, window and options (timestamps included); the
//! next sequence number; only ACK, with PSH allowed on the last segment;
//! payloads no larger than the first's, a smaller one or a PSH ending the
//! run; an IPv4 packet with DF and no options or fragment bits. Only
//! segments whose checksum the worker verified or completed
//! (`encap::settle`) are offered: the super-frame's checksum is left
//! partial, which the receiving stack trusts.
//!
//! A buffer holds the virtio-net header (`HDR_LEN` bytes), then the frame.

use encap::wire::checksum;

use super::virtio::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, HDR_LEN};

const ETH: usize = 14;
/// The largest IPv4 total length, and the largest IPv6 payload length.
const MAX_IP_LEN: usize = 65535;
/// Segments at most in one super-frame (the kernel's GRO stops at 64 too).
pub const MAX_SEGS: usize = 64;
/// Bytes a buffer must have room for: the header and the largest frame.
pub const BUF_LEN: usize = HDR_LEN + ETH + 40 + MAX_IP_LEN;

const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// A TCP segment that may join a super-frame: where its headers are, its
/// sequence number and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    l4: usize,
    hdr_len: usize,
    v4: bool,
    seq: u32,
    payload: usize,
    push: bool,
}

/// `frame` as a segment that may merge, or None: not untagged Ethernet,
/// IPv4 (DF, no options, no fragment) or IPv6 (no extension header), TCP
/// with only ACK (and perhaps PSH) set and a payload, lengths that agree.
pub fn segment(frame: &[u8]) -> Option<Segment> {
    let (l4, v4) = match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        0x0800 => {
            let ip = frame.get(ETH..ETH + 20)?;
            let ok = ip[0] == 0x45
                && ip[9] == 6
                && ip[6..8] == [0x40, 0]
                && u16::from_be_bytes([ip[2], ip[3]]) as usize == frame.len() - ETH;
            (ok.then_some(ETH + 20)?, true)
        }
        0x86dd => {
            let ip = frame.get(ETH..ETH + 40)?;
            let ok = ip[0] >> 4 == 6
                && ip[6] == 6
                && u16::from_be_bytes([ip[4], ip[5]]) as usize == frame.len() - ETH - 40;
            (ok.then_some(ETH + 40)?, false)
        }
        _ => return None,
    };
    let t = frame.get(l4..l4 + 20)?;
    let hdr_len = l4 + (t[12] >> 4) as usize * 4;
    if hdr_len < l4 + 20 || hdr_len >= frame.len() || t[13] & !TCP_PSH != TCP_ACK {
        return None;
    }
    Some(Segment {
        l4,
        hdr_len,
        v4,
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        payload: frame.len() - hdr_len,
        push: t[13] & TCP_PSH != 0,
    })
}

/// True if `g` (segment `b`) belongs to the flow whose first frame is `f`
/// (segment `a`), header for header as `tcp_gro_receive` compares them.
fn same_flow(f: &[u8], a: &Segment, g: &[u8], b: &Segment) -> bool {
    let same = |r: std::ops::Range<usize>| f[r.clone()] == g[r];
    let t = a.l4;
    let ip = if a.v4 {
        // Version, header length and TOS; flags, TTL, protocol; addresses.
        same(ETH..ETH + 2) && same(ETH + 6..ETH + 10) && same(ETH + 12..ETH + 20)
    } else {
        // Version, class and flow label; next header, hop limit, addresses.
        same(ETH..ETH + 4) && same(ETH + 6..ETH + 40)
    };
    a.v4 == b.v4
        && a.hdr_len == b.hdr_len
        && same(0..ETH)
        && ip
        // Ports; acknowledgment and data offset; flags but PSH; window;
        // urgent pointer and options.
        && same(t..t + 4)
        && same(t + 8..t + 13)
        && f[t + 13] | TCP_PSH == g[t + 13] | TCP_PSH
        && same(t + 14..t + 16)
        && same(t + 18..a.hdr_len)
}

impl Segment {
    /// True if nothing may follow it in a super-frame (PSH).
    pub fn ends_run(&self) -> bool {
        self.push
    }
}

/// True if `g` (segment `b`) may follow `f` (segment `a`, the first of a
/// run) in a super-frame.
pub fn follows(f: &[u8], a: &Segment, g: &[u8], b: &Segment) -> bool {
    !a.push
        && b.seq == a.seq.wrapping_add(a.payload as u32)
        && b.payload <= a.payload
        && same_flow(f, a, g, b)
}

/// A super-frame being built in a buffer.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    first: Segment,
    mss: usize,
    next_seq: u32,
    /// Bytes of the frame so far.
    len: usize,
    segs: usize,
    closed: bool,
}

impl Run {
    /// Starts a run with `frame` (segment `s`), copied into `buf`.
    pub fn start(buf: &mut [u8], frame: &[u8], s: Segment) -> Run {
        buf[HDR_LEN..HDR_LEN + frame.len()].copy_from_slice(frame);
        Run {
            first: s,
            mss: s.payload,
            next_seq: s.seq.wrapping_add(s.payload as u32),
            len: frame.len(),
            segs: 1,
            closed: s.push,
        }
    }

    /// Appends `frame` (segment `s`) to the run in `buf` if it continues
    /// it; false (nothing changed) if the run ends before it.
    pub fn append(&mut self, buf: &mut [u8], frame: &[u8], s: &Segment) -> bool {
        let first = &buf[HDR_LEN..HDR_LEN + self.first.hdr_len];
        let ip_len = self.len + s.payload - ETH - if self.first.v4 { 0 } else { 40 };
        if self.closed
            || self.segs == MAX_SEGS
            || s.seq != self.next_seq
            || s.payload > self.mss
            || ip_len > MAX_IP_LEN
            || !same_flow(first, &self.first, frame, s)
        {
            return false;
        }
        let at = HDR_LEN + self.len;
        buf[at..at + s.payload].copy_from_slice(&frame[s.hdr_len..]);
        self.len += s.payload;
        self.segs += 1;
        self.next_seq = s.seq.wrapping_add(s.payload as u32);
        if s.push {
            buf[HDR_LEN + self.first.l4 + 13] |= TCP_PSH;
        }
        self.closed = s.push || s.payload < self.mss;
        true
    }

    pub fn segments(&self) -> usize {
        self.segs
    }

    /// True once nothing more may join (a short segment, PSH, or full).
    pub fn closed(&self) -> bool {
        self.closed || self.segs == MAX_SEGS
    }

    /// Finishes the frame in `buf` and returns the bytes to write (header
    /// included): a run of one segment as it came, with an empty header; a
    /// longer one with the lengths and IPv4 header checksum set, the TCP
    /// checksum left partial and a GSO header describing it.
    pub fn finish(&self, buf: &mut [u8]) -> usize {
        let n = HDR_LEN + self.len;
        if self.segs == 1 {
            VnetHdr::default().write(&mut buf[..HDR_LEN]);
            return n;
        }
        let s = &self.first;
        let f = &mut buf[HDR_LEN..n];
        let l4_len = self.len - s.l4;
        let pseudo = if s.v4 {
            f[ETH + 2..ETH + 4].copy_from_slice(&((self.len - ETH) as u16).to_be_bytes());
            f[ETH + 10..ETH + 12].fill(0);
            let c = checksum::checksum(&f[ETH..ETH + 20]);
            f[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
            let a = |i: usize| [f[i], f[i + 1], f[i + 2], f[i + 3]];
            checksum::pseudo_v4(a(ETH + 12), a(ETH + 16), 6, l4_len as u16)
        } else {
            f[ETH + 4..ETH + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            let a = |i: usize| -> [u8; 16] { f[i..i + 16].try_into().unwrap() };
            checksum::pseudo_v6(&a(ETH + 8), &a(ETH + 24), 6, l4_len as u32)
        };
        // Partial: the pseudo-header's sum, which the receiver (or whoever
        // segments it again) completes.
        f[s.l4 + 16..s.l4 + 18].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: if s.v4 { GSO_TCPV4 } else { GSO_TCPV6 },
            hdr_len: s.hdr_len as u16,
            gso_size: self.mss as u16,
            csum_start: s.l4 as u16,
            csum_offset: 16,
        };
        h.write(&mut buf[..HDR_LEN]);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::gso::Plan;

    /// A TCP segment as a sender's stack makes it: full checksums, IPv4
    /// identification `id`, 12 bytes of timestamp option `ts`.
    fn seg(v4: bool, seq: u32, payload: &[u8], flags: u8, id: u16, ts: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 0xa, 2, 0, 0, 0, 0, 0xb];
        let tcp_len = 32 + payload.len();
        let mut tcp = vec![0u8; 32];
        tcp[0..2].copy_from_slice(&5201u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&40000u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&77u32.to_be_bytes());
        tcp[12] = 8 << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&500u16.to_be_bytes());
        tcp[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, ts, 0, 0, 0, 9]);
        tcp.extend_from_slice(payload);
        let pseudo = if v4 {
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&[0x40, 0, 64, 6, 0, 0, 198, 51, 100, 2, 198, 51, 100, 1]);
            let c = checksum::checksum(&f[ETH..ETH + 20]);
            f[ETH + 10..ETH + 12].copy_from_slice(&c.to_be_bytes());
            checksum::pseudo_v4([198, 51, 100, 2], [198, 51, 100, 1], 6, tcp_len as u16)
        } else {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(tcp_len as u16).to_be_bytes());
            f.extend_from_slice(&[6, 64]);
            let (s, d) = ([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], {
                let mut d = [0u8; 16];
                d[..4].copy_from_slice(&[0x20, 1, 0xd, 0xb8]);
                d[15] = 1;
                d
            });
            f.extend_from_slice(&s);
            f.extend_from_slice(&d);
            checksum::pseudo_v6(&s, &d, 6, tcp_len as u32)
        };
        let c = checksum::finish(checksum::add(pseudo, &tcp));
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&tcp);
        f
    }

    fn payload(i: usize, n: usize) -> Vec<u8> {
        (0..n).map(|j| (i * 31 + j) as u8).collect()
    }

    /// Merges `frames` as a queue would: one run while they continue.
    fn merge(frames: &[Vec<u8>]) -> (Vec<u8>, Run, usize) {
        let mut buf = vec![0u8; BUF_LEN];
        let mut run = Run::start(&mut buf, &frames[0], segment(&frames[0]).unwrap());
        let mut taken = 1;
        for f in &frames[1..] {
            if !run.append(&mut buf, f, &segment(f).unwrap()) {
                break;
            }
            taken += 1;
        }
        let n = run.finish(&mut buf);
        buf.truncate(n);
        (buf, run, taken)
    }

    #[test]
    fn a_flows_segments_merge_and_cut_back_into_the_same_frames() {
        for v4 in [true, false] {
            let mss = 1398;
            let frames: Vec<Vec<u8>> = (0..5)
                .map(|i| {
                    let flags = if i == 4 { TCP_ACK | TCP_PSH } else { TCP_ACK };
                    let p = payload(i, if i == 4 { 100 } else { mss });
                    seg(v4, 1000 + (i * mss) as u32, &p, flags, 7 + i as u16, 3)
                })
                .collect();
            let (buf, run, taken) = merge(&frames);
            assert_eq!((taken, run.segments()), (5, 5));
            let h = VnetHdr::parse(&buf).unwrap();
            assert!(h.is_gso() && h.flags == F_NEEDS_CSUM);
            assert_eq!(h.gso_size as usize, mss);
            let sup = &buf[HDR_LEN..];
            let hdr = if v4 { 66 } else { 86 };
            assert_eq!(sup.len(), frames.iter().map(|f| f.len() - hdr).sum::<usize>() + hdr);
            // The kernel's GSO (as io/gso.rs does it) gives back the
            // sender's segments, byte for byte.
            let plan = Plan::new(sup, &h, 65535).unwrap();
            assert_eq!(plan.segments(), 5);
            for (i, want) in frames.iter().enumerate() {
                let mut out = vec![0u8; 2048];
                let n = plan.write(sup, i, &mut out);
                assert_eq!(&out[..n], &want[..], "v4 {v4} segment {i}");
            }
        }
    }

    #[test]
    fn a_run_ends_where_the_kernels_gro_would_end_it() {
        let s =
            |seq: u32, n: usize, flags: u8, ts: u8| seg(true, seq, &payload(0, n), flags, 1, ts);
        let a = s(0, 1000, TCP_ACK, 1);
        // A gap in the sequence, other options (a later timestamp), a larger
        // payload, another port: each starts a new run.
        for (b, why) in [
            (s(1001, 1000, TCP_ACK, 1), "sequence gap"),
            (s(1000, 1000, TCP_ACK, 2), "timestamp"),
            (s(1000, 1200, TCP_ACK, 1), "larger payload"),
        ] {
            let (_, run, taken) = merge(&[a.clone(), b]);
            assert_eq!((taken, run.segments()), (1, 1), "{why}");
        }
        let mut other = s(1000, 1000, TCP_ACK, 1);
        other[ETH + 20 + 1] ^= 1;
        assert_eq!(merge(&[a.clone(), other]).2, 1, "another port");
        // A short segment or a PSH closes the run after itself.
        let (_, _, taken) = merge(&[a.clone(), s(1000, 500, TCP_ACK, 1), s(1500, 500, TCP_ACK, 1)]);
        assert_eq!(taken, 2);
        let psh = s(1000, 1000, TCP_ACK | TCP_PSH, 1);
        let (buf, _, taken) = merge(&[a.clone(), psh, s(2000, 1000, TCP_ACK, 1)]);
        assert_eq!(taken, 2);
        assert_ne!(buf[HDR_LEN + ETH + 20 + 13] & TCP_PSH, 0, "the super-frame keeps PSH");
        // One segment alone is written as it came, with an empty header.
        let (buf, _, _) = merge(std::slice::from_ref(&a));
        assert_eq!(VnetHdr::parse(&buf), Some(VnetHdr::default()));
        assert_eq!(&buf[HDR_LEN..], &a[..]);
    }

    #[test]
    fn only_plain_data_segments_are_candidates() {
        let ok = seg(true, 0, &payload(0, 10), TCP_ACK, 1, 1);
        assert!(segment(&ok).is_some());
        for flags in [0x02 | TCP_ACK, 0x01 | TCP_ACK, 0x04, 0x80 | TCP_ACK, 0x20 | TCP_ACK] {
            let mut f = ok.clone();
            f[ETH + 20 + 13] = flags;
            assert!(segment(&f).is_none(), "flags {flags:#x}");
        }
        assert!(segment(&seg(true, 0, &[], TCP_ACK, 1, 1)).is_none(), "no payload");
        let mut frag = ok.clone();
        frag[ETH + 6] = 0x20; // MF
        assert!(segment(&frag).is_none());
        let mut padded = ok.clone();
        padded.push(0);
        assert!(segment(&padded).is_none(), "lengths that disagree");
    }

    #[test]
    fn a_run_stops_at_the_ip_length_limit() {
        let mss = 1398;
        let frames: Vec<Vec<u8>> =
            (0..60).map(|i| seg(true, (i * mss) as u32, &payload(i, mss), TCP_ACK, 1, 1)).collect();
        let (buf, run, taken) = merge(&frames);
        // 46 segments of 1,398 bytes fit under 65,535 with 52 bytes of headers.
        assert_eq!(taken, (MAX_IP_LEN - 52) / mss);
        assert_eq!(run.segments(), taken);
        assert!(buf.len() - HDR_LEN - ETH <= MAX_IP_LEN);
    }
}
