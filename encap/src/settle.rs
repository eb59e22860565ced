//! Settling the TCP or UDP checksum of a frame that arrives without its
//! checksum state.
//!
//! A Linux sender whose device offers checksum offload (a container's veth
//! does, by default) leaves TCP and UDP checksums *partial*
//! (CHECKSUM_PARTIAL): the checksum field holds the folded sum of the
//! pseudo-header alone, and the device is to add the sum of the segment. Where
//! the skb's state travels with the frame (the virtio-net header of TAP
//! devices and packet sockets) the I/O layer finishes exactly what it names.
//! A frame taken through XDP (AF_XDP) carries no such state: [`settle`] reads
//! it from the bytes.
//!
//! One pass over the segment tells the three states apart:
//! - the checksum verifies: valid, left alone;
//! - it does not, and the field equals the folded pseudo-header sum: partial,
//!   finished in place;
//! - neither: corrupt, [`DropReason::L4ChecksumBad`].
//!
//! A partial checksum and a valid one cannot be confused: if the field holds
//! the pseudo-header sum *and* the whole verifies, that field already is the
//! complete checksum. A corrupt frame whose field happens to equal the
//! pseudo-header sum (one in 65536 corruptions of that field) is taken for a
//! partial one, as a NIC would.
//!
//! What is not checked, and why: IPv4 fragments (the kernel finishes a
//! partial checksum before it fragments, and one fragment cannot be checked
//! alone), IPv6 packets with a routing or fragment header (the pseudo-header
//! of the first names the final destination), protocols other than TCP and
//! UDP, and non-IP frames. A UDP checksum of zero is "none sent" (over IPv6
//! RFC 6935 allows it for tunnels; whether to accept it is the receiver's
//! policy), so it is left alone too.
//!
//! No allocation, no panics on any input; wire-level only.

use crate::wire::{checksum, udp, vxlan};
use crate::DropReason;

/// What [`settle`] found, and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// A TCP or UDP checksum that verifies.
    Valid,
    /// A partial checksum, now finished.
    Completed,
    /// UDP without a checksum (zero).
    NoChecksum,
    /// Not a TCP or UDP packet whose checksum can be checked on its own
    /// (see the module documentation).
    NotChecked,
}

/// Where a frame's L4 segment and its checksum field are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    start: usize,
    end: usize,
    /// Offset of the checksum field in the frame.
    field: usize,
    /// Pseudo-header sum, length included.
    pseudo: u32,
    udp: bool,
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// Finds the TCP or UDP segment of an Ethernet frame. `Ok(None)`: nothing to
/// check; `Err`: headers that contradict each other or the frame length.
#[inline(always)]
fn locate(frame: &[u8]) -> Result<Option<Segment>, DropReason> {
    let Some((l3, et)) = l3_offset(frame) else { return Ok(None) };
    let ip = &frame[l3..];
    // `addrs`: the sum of the source and destination addresses, the part of
    // the pseudo-header that lies in the IP header as it is.
    let (proto, l4, l4_len, addrs) = match et {
        0x0800 => {
            if ip.len() < 20 || ip[0] >> 4 != 4 {
                return Err(DropReason::InnerMalformed);
            }
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            if ihl < 20 || total < ihl || total > ip.len() {
                return Err(DropReason::InnerMalformed);
            }
            // More fragments, or a fragment offset: not one whole datagram.
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return Ok(None);
            }
            (ip[9], l3 + ihl, total - ihl, &ip[12..20])
        }
        0x86dd => {
            if ip.len() < 40 || ip[0] >> 4 != 6 {
                return Err(DropReason::InnerMalformed);
            }
            let end = 40 + u16::from_be_bytes([ip[4], ip[5]]) as usize;
            if end > ip.len() {
                return Err(DropReason::InnerMalformed);
            }
            let (mut next, mut off) = (ip[6], 40);
            // Hop-by-hop and destination options change nothing in the
            // pseudo-header; anything else ends the walk unchecked.
            while matches!(next, 0 | 60) {
                if off + 8 > end {
                    return Err(DropReason::InnerMalformed);
                }
                next = ip[off];
                off += (ip[off + 1] as usize + 1) * 8;
                if off > end {
                    return Err(DropReason::InnerMalformed);
                }
            }
            (next, l3 + off, end - off, &ip[8..40])
        }
        _ => return Ok(None),
    };
    let (end, field, udp) = match proto {
        TCP if l4_len >= 20 => (l4 + l4_len, l4 + 16, false),
        UDP if l4_len >= 8 => {
            // The UDP length bounds the datagram (what follows is padding),
            // and it is what the pseudo-header carries.
            let ulen = u16::from_be_bytes([frame[l4 + 4], frame[l4 + 5]]) as usize;
            if ulen < 8 || ulen > l4_len {
                return Err(DropReason::L4Truncated);
            }
            (l4 + ulen, l4 + 6, true)
        }
        TCP | UDP => return Err(DropReason::L4Truncated),
        _ => return Ok(None),
    };
    // Protocol and length complete the pseudo-header, the same sum for IPv4
    // (16-bit length) and IPv6 (32-bit) since a segment here is below 64 KiB.
    let pseudo = add_words(addrs);
    let pseudo = checksum::add_u32(checksum::add_u16(pseudo, proto as u16), (end - l4) as u32);
    Ok(Some(Segment { start: l4, end, field, pseudo, udp }))
}

/// The ones' complement sum of `b`, whose length is a multiple of four (the
/// addresses of a pseudo-header), as an accumulator for `checksum`: a few
/// instructions where the general `checksum::add` takes some fifty.
#[inline(always)]
fn add_words(b: &[u8]) -> u32 {
    let s: u64 =
        b.chunks_exact(4).map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]) as u64).sum();
    // 2^32 is 1 modulo 0xffff: folding the high half in keeps the sum.
    let s = (s & 0xffff_ffff) + (s >> 32);
    ((s & 0xffff_ffff) + (s >> 32)) as u32
}

/// Where the IP header starts and its EtherType, past up to two VLAN tags;
/// `None` for a frame too short to say.
fn l3_offset(frame: &[u8]) -> Option<(usize, u16)> {
    let mut off = 12;
    for _ in 0..3 {
        let et = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
        match et {
            0x8100 | 0x88a8 => off += 4,
            _ => return Some((off + 2, et)),
        }
    }
    None
}

/// Settles the TCP or UDP checksum of an Ethernet `frame`: verifies it, or
/// finishes it if it is partial. Fails with `L4ChecksumBad` if it is neither,
/// `L4Truncated` if the segment is shorter than its header (or than the UDP
/// length says), and `InnerMalformed` if the IP header contradicts the frame;
/// the frame is then unchanged.
#[inline]
pub fn settle(frame: &mut [u8]) -> Result<Settled, DropReason> {
    let Some(s) = locate(frame)? else { return Ok(Settled::NotChecked) };
    let field = u16::from_be_bytes([frame[s.field], frame[s.field + 1]]);
    if s.udp && field == 0 {
        return Ok(Settled::NoChecksum);
    }
    let sum = checksum::add(0, &frame[s.start..s.end]);
    if checksum::verify(checksum::add_u32(s.pseudo, sum)) {
        return Ok(Settled::Valid);
    }
    if field != checksum::fold(s.pseudo) {
        return Err(DropReason::L4ChecksumBad);
    }
    // The field holds the pseudo-header sum, so `sum` already covers the
    // pseudo-header, the segment and a zero field: finish it.
    write(frame, &s, sum);
    Ok(Settled::Completed)
}

/// Finishes the TCP or UDP checksum of `frame` if it is partial, and leaves
/// everything else, corrupt checksums included, to whoever checks next.
/// Costs a pass over the segment only when the field holds the pseudo-header
/// sum; true if it finished one. For the outer header of tunnel packets, whose
/// checksum decapsulation verifies (or not) by its own configuration.
#[inline]
pub fn complete_partial(frame: &mut [u8]) -> bool {
    let Ok(Some(s)) = locate(frame) else { return false };
    let field = u16::from_be_bytes([frame[s.field], frame[s.field + 1]]);
    if field != checksum::fold(s.pseudo) {
        return false;
    }
    // If the field was in fact the complete checksum, this writes it again.
    let sum = checksum::add(0, &frame[s.start..s.end]);
    write(frame, &s, sum);
    true
}

/// Finishes the one partial checksum a VXLAN packet from a Linux peer may
/// carry, outer or inner, and leaves verifying to decapsulation (outer) and
/// to the way out to a workload (inner); true if it finished one.
///
/// A kernel VTEP whose device leaves checksums to an offload sends either a
/// partial outer UDP checksum (over a complete inner packet, as when it cut
/// the packet from a super-frame) or a partial inner one; in the latter case
/// the outer checksum, if any, was computed for the inner one finished (local
/// checksum offload), so it verifies only once that is done. Looking at the
/// inner packet costs a header parse, and a pass over it only if its checksum
/// field holds its pseudo-header sum.
#[inline]
pub fn complete_partial_vxlan(frame: &mut [u8]) -> bool {
    let Ok(Some(s)) = locate(frame) else { return false };
    if !s.udp {
        return false;
    }
    let field = u16::from_be_bytes([frame[s.field], frame[s.field + 1]]);
    if field != 0 && field == checksum::fold(s.pseudo) {
        let sum = checksum::add(0, &frame[s.start..s.end]);
        write(frame, &s, sum);
        return true;
    }
    let inner = s.start + udp::HEADER_LEN + vxlan::HEADER_LEN;
    match frame.get_mut(inner..s.end) {
        Some(inner) => complete_partial(inner),
        None => false,
    }
}

fn write(frame: &mut [u8], s: &Segment, sum: u32) {
    let c = match checksum::finish(sum) {
        // A computed zero goes out as all ones: for UDP zero means "none".
        0 if s.udp => 0xffff,
        c => c,
    };
    frame[s.field..s.field + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated with scapy; each `_PARTIAL` frame is its valid twin with the
    // checksum field replaced by the folded pseudo-header sum, as a Linux
    // sender with checksum offload leaves it. tshark checks the valid ones.

    /// Ethernet / IPv4 (DF) / TCP PSH ACK / "overlay".
    const TCP4: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x2f, 0x00, 0x01, 0x40, 0x00, 0x40, 0x06, 0xe6, 0x5d, 0xc6, 0x33, 0x64, 0x01,
        0xc6, 0x33, 0x64, 0x02, 0x9c, 0x40, 0x13, 0x89, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x01, 0x50, 0x18, 0x01, 0xf6, 0xef, 0x4e, 0x00, 0x00, 0x6f, 0x76, 0x65, 0x72, 0x6c, 0x61,
        0x79,
    ];
    const TCP4_PARTIAL: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x2f, 0x00, 0x01, 0x40, 0x00, 0x40, 0x06, 0xe6, 0x5d, 0xc6, 0x33, 0x64, 0x01,
        0xc6, 0x33, 0x64, 0x02, 0x9c, 0x40, 0x13, 0x89, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x01, 0x50, 0x18, 0x01, 0xf6, 0x54, 0x8c, 0x00, 0x00, 0x6f, 0x76, 0x65, 0x72, 0x6c, 0x61,
        0x79,
    ];
    /// Ethernet / IPv4 / UDP / "hello".
    const UDP4: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x21, 0x00, 0x02, 0x00, 0x00, 0x40, 0x11, 0x26, 0x60, 0xc6, 0x33, 0x64, 0x01,
        0xc6, 0x33, 0x64, 0x02, 0x9c, 0x40, 0x13, 0x89, 0x00, 0x0d, 0xb7, 0xcd, 0x68, 0x65, 0x6c,
        0x6c, 0x6f,
    ];
    const UDP4_PARTIAL: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x21, 0x00, 0x02, 0x00, 0x00, 0x40, 0x11, 0x26, 0x60, 0xc6, 0x33, 0x64, 0x01,
        0xc6, 0x33, 0x64, 0x02, 0x9c, 0x40, 0x13, 0x89, 0x00, 0x0d, 0x54, 0x89, 0x68, 0x65, 0x6c,
        0x6c, 0x6f,
    ];
    /// Ethernet / IPv6 / TCP PSH ACK / "overlay".
    const TCP6: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x1b, 0x06, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x9c, 0x40, 0x13, 0x89, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x50, 0x18, 0x01, 0xf6, 0xe8, 0x44, 0x00, 0x00, 0x6f,
        0x76, 0x65, 0x72, 0x6c, 0x61, 0x79,
    ];
    const TCP6_PARTIAL: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x1b, 0x06, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x9c, 0x40, 0x13, 0x89, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x50, 0x18, 0x01, 0xf6, 0x5b, 0x96, 0x00, 0x00, 0x6f,
        0x76, 0x65, 0x72, 0x6c, 0x61, 0x79,
    ];
    /// Ethernet / IPv6 / UDP / "hello".
    const UDP6: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x0d, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x9c, 0x40, 0x13, 0x89, 0x00, 0x0d,
        0xb0, 0xc3, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
    ];
    const UDP6_PARTIAL: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x0d, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x9c, 0x40, 0x13, 0x89, 0x00, 0x0d,
        0x5b, 0x93, 0x68, 0x65, 0x6c, 0x6c, 0x6f,
    ];
    /// Ethernet / 802.1Q (VLAN 5) / IPv4 / TCP SYN.
    const VLAN_TCP4: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0x00,
        0x05, 0x08, 0x00, 0x45, 0x00, 0x00, 0x28, 0x00, 0x03, 0x00, 0x00, 0x40, 0x06, 0x26, 0x63,
        0xc6, 0x33, 0x64, 0x01, 0xc6, 0x33, 0x64, 0x02, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0x20, 0x00, 0x3b, 0x75, 0x00, 0x00,
    ];
    const VLAN_TCP4_PARTIAL: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00, 0x00,
        0x05, 0x08, 0x00, 0x45, 0x00, 0x00, 0x28, 0x00, 0x03, 0x00, 0x00, 0x40, 0x06, 0x26, 0x63,
        0xc6, 0x33, 0x64, 0x01, 0xc6, 0x33, 0x64, 0x02, 0x00, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x50, 0x02, 0x20, 0x00, 0x54, 0x85, 0x00, 0x00,
    ];
    /// Ethernet / IPv6 / hop-by-hop options / UDP / "xyz".
    const HBH_UDP6: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x13, 0x00, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x11, 0x00, 0x01, 0x04, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x0b, 0xb1, 0xe6, 0x78, 0x79, 0x7a,
    ];
    const HBH_UDP6_PARTIAL: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x13, 0x00, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x11, 0x00, 0x01, 0x04, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x0b, 0x5b, 0x91, 0x78, 0x79, 0x7a,
    ];

    // VXLAN (UDP port 4789, VNI 42) carrying Ethernet / IPv4 / TCP ACK /
    // "overlay": over IPv6 with the outer checksum complete, over IPv4 with
    // none (zero). `_INNER_PARTIAL`: the inner TCP checksum left partial
    // (over IPv6 the outer one stays as computed for the finished inner one:
    // local checksum offload); `_OUTER_PARTIAL`: the outer UDP one.
    const VX6: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x4d, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xc3, 0x50, 0x12, 0xb5, 0x00, 0x4d,
        0xcb, 0x60, 0x0c, 0x00, 0x00, 0x03, 0x00, 0x00, 0x2a, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0b,
        0x01, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x08, 0x00, 0x45, 0x00, 0x00, 0x2f, 0x00, 0x07,
        0x00, 0x00, 0x40, 0x06, 0x26, 0x58, 0xc6, 0x33, 0x64, 0x01, 0xc6, 0x33, 0x64, 0x02, 0x9c,
        0x40, 0x13, 0x89, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x50, 0x10, 0x01, 0xf6,
        0xef, 0x56, 0x00, 0x00, 0x6f, 0x76, 0x65, 0x72, 0x6c, 0x61, 0x79,
    ];
    const VX6_INNER_PARTIAL: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x4d, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xc3, 0x50, 0x12, 0xb5, 0x00, 0x4d,
        0xcb, 0x60, 0x0c, 0x00, 0x00, 0x03, 0x00, 0x00, 0x2a, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0b,
        0x01, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x08, 0x00, 0x45, 0x00, 0x00, 0x2f, 0x00, 0x07,
        0x00, 0x00, 0x40, 0x06, 0x26, 0x58, 0xc6, 0x33, 0x64, 0x01, 0xc6, 0x33, 0x64, 0x02, 0x9c,
        0x40, 0x13, 0x89, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x50, 0x10, 0x01, 0xf6,
        0x54, 0x8c, 0x00, 0x00, 0x6f, 0x76, 0x65, 0x72, 0x6c, 0x61, 0x79,
    ];
    const VX6_OUTER_PARTIAL: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x86, 0xdd, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x4d, 0x11, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xc3, 0x50, 0x12, 0xb5, 0x00, 0x4d,
        0x5b, 0xd3, 0x0c, 0x00, 0x00, 0x03, 0x00, 0x00, 0x2a, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0b,
        0x01, 0x02, 0x00, 0x00, 0x00, 0x0a, 0x01, 0x08, 0x00, 0x45, 0x00, 0x00, 0x2f, 0x00, 0x07,
        0x00, 0x00, 0x40, 0x06, 0x26, 0x58, 0xc6, 0x33, 0x64, 0x01, 0xc6, 0x33, 0x64, 0x02, 0x9c,
        0x40, 0x13, 0x89, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x50, 0x10, 0x01, 0xf6,
        0xef, 0x56, 0x00, 0x00, 0x6f, 0x76, 0x65, 0x72, 0x6c, 0x61, 0x79,
    ];
    const VX4: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x61, 0x00, 0x09, 0x00, 0x00, 0x40, 0x11, 0xf6, 0x7f, 0xc0, 0x00, 0x02, 0x01,
        0xc0, 0x00, 0x02, 0x02, 0xc3, 0x50, 0x12, 0xb5, 0x00, 0x4d, 0x00, 0x00, 0x0c, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x2a, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0b, 0x01, 0x02, 0x00, 0x00, 0x00,
        0x0a, 0x01, 0x08, 0x00, 0x45, 0x00, 0x00, 0x2f, 0x00, 0x07, 0x00, 0x00, 0x40, 0x06, 0x26,
        0x58, 0xc6, 0x33, 0x64, 0x01, 0xc6, 0x33, 0x64, 0x02, 0x9c, 0x40, 0x13, 0x89, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x50, 0x10, 0x01, 0xf6, 0xef, 0x56, 0x00, 0x00, 0x6f,
        0x76, 0x65, 0x72, 0x6c, 0x61, 0x79,
    ];
    const VX4_INNER_PARTIAL: &[u8] = &[
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x61, 0x00, 0x09, 0x00, 0x00, 0x40, 0x11, 0xf6, 0x7f, 0xc0, 0x00, 0x02, 0x01,
        0xc0, 0x00, 0x02, 0x02, 0xc3, 0x50, 0x12, 0xb5, 0x00, 0x4d, 0x00, 0x00, 0x0c, 0x00, 0x00,
        0x03, 0x00, 0x00, 0x2a, 0x00, 0x02, 0x00, 0x00, 0x00, 0x0b, 0x01, 0x02, 0x00, 0x00, 0x00,
        0x0a, 0x01, 0x08, 0x00, 0x45, 0x00, 0x00, 0x2f, 0x00, 0x07, 0x00, 0x00, 0x40, 0x06, 0x26,
        0x58, 0xc6, 0x33, 0x64, 0x01, 0xc6, 0x33, 0x64, 0x02, 0x9c, 0x40, 0x13, 0x89, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x50, 0x10, 0x01, 0xf6, 0x54, 0x8c, 0x00, 0x00, 0x6f,
        0x76, 0x65, 0x72, 0x6c, 0x61, 0x79,
    ];

    const VALID: [&[u8]; 6] = [TCP4, UDP4, TCP6, UDP6, VLAN_TCP4, HBH_UDP6];
    const PARTIAL: [&[u8]; 6] = [
        TCP4_PARTIAL,
        UDP4_PARTIAL,
        TCP6_PARTIAL,
        UDP6_PARTIAL,
        VLAN_TCP4_PARTIAL,
        HBH_UDP6_PARTIAL,
    ];

    /// Offset of the checksum field in each of `VALID`.
    const FIELD: [usize; 6] = [50, 40, 70, 60, 54, 68];

    fn settled(frame: &[u8]) -> (Result<Settled, DropReason>, Vec<u8>) {
        let mut f = frame.to_vec();
        let r = settle(&mut f);
        (r, f)
    }

    #[test]
    fn valid_checksums_are_left_alone() {
        for f in VALID {
            assert_eq!(settled(f), (Ok(Settled::Valid), f.to_vec()));
        }
    }

    #[test]
    fn partial_checksums_are_finished() {
        for (p, v) in PARTIAL.iter().zip(VALID) {
            assert_eq!(settled(p), (Ok(Settled::Completed), v.to_vec()));
        }
    }

    #[test]
    fn corrupt_checksums_are_named_and_left_unchanged() {
        for (i, v) in VALID.iter().enumerate() {
            // The last byte: payload, or for the bare SYN its urgent pointer.
            let mut f = v.to_vec();
            *f.last_mut().unwrap() ^= 0x01;
            assert_eq!(settled(&f), (Err(DropReason::L4ChecksumBad), f.clone()), "frame {i}");
            // The checksum field itself, off by one.
            let mut f = v.to_vec();
            f[FIELD[i] + 1] ^= 0x01;
            assert_eq!(settled(&f), (Err(DropReason::L4ChecksumBad), f.clone()), "frame {i}");
        }
    }

    #[test]
    fn zero_udp_checksum_means_none_over_ipv4_and_ipv6() {
        for (f, field) in [(UDP4, 40), (UDP6, 60)] {
            let mut f = f.to_vec();
            f[field..field + 2].fill(0);
            assert_eq!(settled(&f), (Ok(Settled::NoChecksum), f.clone()));
            assert!(!complete_partial(&mut f.clone()));
        }
    }

    #[test]
    fn a_finished_udp_checksum_of_zero_is_sent_as_all_ones() {
        // Change two payload bytes of the partial frame so that its finished
        // checksum comes to zero.
        let mut f = UDP4_PARTIAL.to_vec();
        let s = checksum::fold(checksum::add(0, &f[34..]));
        let w = u16::from_be_bytes([f[42], f[43]]);
        // Adding (0xffff - s) to a word brings the folded sum to 0xffff.
        let w = checksum::fold(w as u32 + (0xffff - s) as u32);
        f[42..44].copy_from_slice(&w.to_be_bytes());
        assert_eq!(checksum::fold(checksum::add(0, &f[34..])), 0xffff);
        let (r, out) = settled(&f);
        assert_eq!(r, Ok(Settled::Completed));
        assert_eq!(&out[40..42], &[0xff, 0xff]);
        assert_eq!(settled(&out).0, Ok(Settled::Valid));
    }

    #[test]
    fn ethernet_padding_is_not_summed() {
        for (p, v) in PARTIAL.iter().zip(VALID) {
            let pad = |f: &[u8]| {
                let mut f = f.to_vec();
                f.resize(f.len().max(60) + 4, 0xa5);
                f
            };
            assert_eq!(settled(&pad(v)), (Ok(Settled::Valid), pad(v)));
            assert_eq!(settled(&pad(p)), (Ok(Settled::Completed), pad(v)));
        }
    }

    #[test]
    fn complete_partial_finishes_partials_only() {
        for (p, v) in PARTIAL.iter().zip(VALID) {
            let mut f = p.to_vec();
            assert!(complete_partial(&mut f));
            assert_eq!(f, v.to_vec());
            let mut f = v.to_vec();
            assert!(!complete_partial(&mut f), "a valid checksum is not partial");
            assert_eq!(f, v.to_vec());
            // Corrupt: left for decapsulation to judge.
            *f.last_mut().unwrap() ^= 0x80;
            let before = f.clone();
            assert!(!complete_partial(&mut f));
            assert_eq!(f, before);
        }
    }

    #[test]
    fn headers_that_contradict_the_frame() {
        // IPv4 total length beyond the frame (a truncated frame).
        let (r, _) = settled(&TCP4[..TCP4.len() - 1]);
        assert_eq!(r, Err(DropReason::InnerMalformed));
        // IPv6 payload length beyond the frame.
        assert_eq!(settled(&UDP6[..UDP6.len() - 1]).0, Err(DropReason::InnerMalformed));
        // IPv4 header length below 20 bytes.
        let mut f = TCP4.to_vec();
        f[14] = 0x44;
        assert_eq!(settled(&f).0, Err(DropReason::InnerMalformed));
        // A hop-by-hop header running past the payload.
        let mut f = HBH_UDP6.to_vec();
        f[55] = 4;
        assert_eq!(settled(&f).0, Err(DropReason::InnerMalformed));
        // TCP shorter than its 20-byte header (IPv4 total length 20 + 19).
        let mut f = TCP4.to_vec();
        f[16..18].copy_from_slice(&39u16.to_be_bytes());
        assert_eq!(settled(&f).0, Err(DropReason::L4Truncated));
        // UDP length longer than the IP payload, and shorter than a header.
        for ulen in [14u16, 7] {
            let mut f = UDP4.to_vec();
            f[38..40].copy_from_slice(&ulen.to_be_bytes());
            assert_eq!(settled(&f).0, Err(DropReason::L4Truncated), "UDP length {ulen}");
        }
    }

    #[test]
    fn udp_length_bounds_the_datagram() {
        // Two bytes of junk inside the IP packet after the datagram: not summed.
        let mut f = UDP4.to_vec();
        f.extend_from_slice(&[0xde, 0xad]);
        f[16..18].copy_from_slice(&(33u16 + 2).to_be_bytes());
        assert_eq!(settled(&f), (Ok(Settled::Valid), f.clone()));
    }

    #[test]
    fn what_cannot_be_checked_alone_is_not_checked() {
        let not_checked = |f: &[u8], what: &str| {
            assert_eq!(settled(f), (Ok(Settled::NotChecked), f.to_vec()), "{what}")
        };
        // A bad checksum in each, to show it is not looked at.
        let mut frag = TCP4.to_vec();
        frag[20] |= 0x20; // more fragments
        frag[50] ^= 0xff;
        not_checked(&frag, "IPv4 first fragment");
        let mut later = TCP4.to_vec();
        later[21] = 0x10; // fragment offset
        later[50] ^= 0xff;
        not_checked(&later, "IPv4 later fragment");
        let mut icmp = TCP4.to_vec();
        icmp[23] = 1;
        icmp[50] ^= 0xff;
        not_checked(&icmp, "ICMP");
        let mut routing = HBH_UDP6.to_vec();
        routing[54] = 43; // the hop-by-hop header says a routing header follows
        not_checked(&routing, "IPv6 routing header");
        let mut arp = TCP4.to_vec();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        not_checked(&arp, "ARP");
        not_checked(&TCP4[..13], "runt");
        let mut tags = VLAN_TCP4.to_vec();
        tags.splice(12..12, [0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2]);
        not_checked(&tags, "three VLAN tags");
    }

    #[test]
    fn vxlan_from_a_linux_peer_gets_its_one_partial_checksum_finished() {
        // (partial, valid, where the inner frame starts)
        for (partial, valid, inner) in [
            (VX6_INNER_PARTIAL, VX6, 70),
            (VX6_OUTER_PARTIAL, VX6, 70),
            (VX4_INNER_PARTIAL, VX4, 50),
        ] {
            let mut f = partial.to_vec();
            assert!(complete_partial_vxlan(&mut f));
            assert_eq!(f, valid.to_vec());
            assert_eq!(settle(&mut f[inner..]), Ok(Settled::Valid), "inner");
        }
        // Over IPv6, a partial inner checksum makes the outer one fail.
        assert_eq!(settle(&mut VX6_INNER_PARTIAL.to_vec()), Err(DropReason::L4ChecksumBad));
        for valid in [VX6, VX4] {
            let mut f = valid.to_vec();
            assert!(!complete_partial_vxlan(&mut f));
            assert_eq!(f, valid.to_vec());
        }
        // Corruption is left for decapsulation to find.
        let mut f = VX6.to_vec();
        *f.last_mut().unwrap() ^= 1;
        let before = f.clone();
        assert!(!complete_partial_vxlan(&mut f));
        assert_eq!(f, before);
    }

    #[test]
    fn no_input_makes_it_panic() {
        let vxlan = [VX6, VX6_INNER_PARTIAL, VX6_OUTER_PARTIAL, VX4, VX4_INNER_PARTIAL];
        for f in VALID.iter().chain(PARTIAL.iter()).chain(vxlan.iter()) {
            for n in 0..=f.len() {
                let _ = settle(&mut f[..n].to_vec());
                let _ = complete_partial(&mut f[..n].to_vec());
                let _ = complete_partial_vxlan(&mut f[..n].to_vec());
            }
            // Every header byte at a few values.
            for i in 0..f.len().min(80) {
                for b in [0x00, 0x01, 0x3c, 0x45, 0x60, 0x80, 0xff] {
                    let mut g = f.to_vec();
                    g[i] = b;
                    let _ = settle(&mut g.clone());
                    let _ = complete_partial_vxlan(&mut g.clone());
                    let _ = complete_partial(&mut g);
                }
            }
        }
    }
}
