//! ARP and IPv6 neighbour discovery seen from a workload port: which address
//! a frame asks about, which IP -> MAC binding it announces, and the answer
//! written in place of the question.
//!
//! Only untagged frames whose headers are exactly what the protocols require
//! are understood (ARP for IPv4 over Ethernet; an ICMPv6 NS or NA directly
//! behind the IPv6 header with hop limit 255, RFC 4861 section 7.1). Anything
//! else is `None` and takes the ordinary path: flooding an odd frame is
//! always safe, answering one wrongly is not.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use encap::wire::checksum;
use encap::PacketBuf;

const ETH: usize = 14;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ARP_LEN: usize = 28;
const IPV6_LEN: usize = 40;
const ICMPV6: u8 = 58;
const NS: u8 = 135;
const NA: u8 = 136;
/// ICMPv6 NS/NA without options: type, code, checksum, flags, target.
const ND_LEN: usize = 24;
/// A link-layer address option for Ethernet: type, length (in 8 bytes), MAC.
const LLA_OPT_LEN: usize = 8;
const OPT_SOURCE_LLA: u8 = 1;
const OPT_TARGET_LLA: u8 = 2;
/// NA flags: Solicited and Override (not Router: we answer for workloads).
const NA_FLAGS: [u8; 4] = [0x60, 0, 0, 0];

/// A question a workload asked: who has `target`?
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Question {
    pub target: IpAddr,
}

/// What a neighbour frame says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Neighbour {
    /// The binding the sender announces about itself (ARP sender, NA
    /// target), to be learned.
    pub binding: Option<(IpAddr, [u8; 6])>,
    /// The question, if the frame is a request that could be answered: a
    /// broadcast or multicast ARP request or NS that is not a probe or
    /// gratuitous announcement.
    pub question: Option<Question>,
}

fn ethertype(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[12], f[13]])
}

fn mac_at(f: &[u8], at: usize) -> [u8; 6] {
    f[at..at + 6].try_into().unwrap()
}

/// Reads an ARP or NS/NA frame; `None` for every other frame.
pub fn inspect(f: &[u8]) -> Option<Neighbour> {
    if f.len() < ETH {
        return None;
    }
    match ethertype(f) {
        ETHERTYPE_ARP => arp(f),
        ETHERTYPE_IPV6 => nd(f),
        _ => None,
    }
}

fn arp(f: &[u8]) -> Option<Neighbour> {
    let a = f.get(ETH..ETH + ARP_LEN)?;
    // Ethernet, IPv4, 6-byte and 4-byte addresses.
    if a[0..6] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    let op = u16::from_be_bytes([a[6], a[7]]);
    let sha = mac_at(a, 8);
    let spa = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
    let tpa = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
    let mut n = Neighbour::default();
    // A probe (sender 0.0.0.0, RFC 5227) announces nothing.
    if !spa.is_unspecified() && sha[0] & 1 == 0 && (op == 1 || op == 2) {
        n.binding = Some((IpAddr::V4(spa), sha));
    }
    let to_all = f[0] & 1 == 1;
    if op == 1 && to_all && !spa.is_unspecified() && spa != tpa {
        n.question = Some(Question { target: IpAddr::V4(tpa) });
    }
    Some(n)
}

fn nd(f: &[u8]) -> Option<Neighbour> {
    let ip = f.get(ETH..ETH + IPV6_LEN)?;
    let payload = u16::from_be_bytes([ip[4], ip[5]]) as usize;
    if ip[0] >> 4 != 6 || ip[6] != ICMPV6 || ip[7] != 255 || payload < ND_LEN {
        return None;
    }
    let icmp = f.get(ETH + IPV6_LEN..ETH + IPV6_LEN + payload)?;
    if icmp[1] != 0 || !matches!(icmp[0], NS | NA) {
        return None;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap());
    let dst: [u8; 16] = ip[24..40].try_into().unwrap();
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&icmp[8..24]).unwrap());
    if target.is_multicast() {
        return None;
    }
    let sum = checksum::add(checksum::pseudo_v6(&src.octets(), &dst, ICMPV6, payload as u32), icmp);
    if !checksum::verify(sum) {
        return None;
    }
    let mut n = Neighbour::default();
    if icmp[0] == NA {
        let mac = option(&icmp[ND_LEN..], OPT_TARGET_LLA).unwrap_or_else(|| mac_at(f, 6));
        n.binding = Some((IpAddr::V6(target), mac));
    } else if !src.is_unspecified() {
        // A solicitation names its sender's address (not during DAD,
        // RFC 4862 section 5.4, whose source is unspecified).
        if let Some(mac) = option(&icmp[ND_LEN..], OPT_SOURCE_LLA) {
            n.binding = Some((IpAddr::V6(src), mac));
        }
        if dst[0] == 0xff {
            n.question = Some(Question { target: IpAddr::V6(target) });
        }
    }
    Some(n)
}

/// The MAC of the first link-layer address option of `kind`.
fn option(mut opts: &[u8], kind: u8) -> Option<[u8; 6]> {
    while opts.len() >= 2 {
        let len = opts[1] as usize * 8;
        if len == 0 || len > opts.len() {
            return None;
        }
        if opts[0] == kind && len == LLA_OPT_LEN {
            return Some(mac_at(opts, 2));
        }
        opts = &opts[len..];
    }
    None
}

/// Rewrites the question in `pkt` (as `inspect` read it) into the answer
/// "`q.target` is at `mac`", addressed to the asker. False (and the frame
/// unchanged) if the frame has no room for the answer.
pub fn answer(pkt: &mut PacketBuf<'_>, q: &Question, mac: [u8; 6]) -> bool {
    match q.target {
        IpAddr::V4(_) => {
            let f = pkt.data_mut();
            let asker = mac_at(f, 6);
            let a = &mut f[ETH..ETH + ARP_LEN];
            let (spa, tpa): ([u8; 4], [u8; 4]) =
                (a[14..18].try_into().unwrap(), a[24..28].try_into().unwrap());
            a[6..8].copy_from_slice(&2u16.to_be_bytes());
            a[8..14].copy_from_slice(&mac);
            a[14..18].copy_from_slice(&tpa);
            a[18..24].copy_from_slice(&asker);
            a[24..28].copy_from_slice(&spa);
            f[0..6].copy_from_slice(&asker);
            f[6..12].copy_from_slice(&mac);
            true
        }
        IpAddr::V6(target) => {
            let want = ETH + IPV6_LEN + ND_LEN + LLA_OPT_LEN;
            if pkt.len() < want && pkt.push_back(want - pkt.len()).is_none() {
                return false;
            }
            pkt.truncate(want);
            let f = pkt.data_mut();
            let asker = mac_at(f, 6);
            let asker_ip: [u8; 16] = f[ETH + 8..ETH + 24].try_into().unwrap();
            f[0..6].copy_from_slice(&asker);
            f[6..12].copy_from_slice(&mac);
            let ip = &mut f[ETH..ETH + IPV6_LEN];
            let len = (ND_LEN + LLA_OPT_LEN) as u16;
            ip[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
            ip[4..6].copy_from_slice(&len.to_be_bytes());
            ip[6] = ICMPV6;
            ip[7] = 255;
            ip[8..24].copy_from_slice(&target.octets());
            ip[24..40].copy_from_slice(&asker_ip);
            let icmp = &mut f[ETH + IPV6_LEN..];
            icmp[0] = NA;
            icmp[1] = 0;
            icmp[2..4].copy_from_slice(&[0, 0]);
            icmp[4..8].copy_from_slice(&NA_FLAGS);
            icmp[8..24].copy_from_slice(&target.octets());
            icmp[24] = OPT_TARGET_LLA;
            icmp[25] = 1;
            icmp[26..32].copy_from_slice(&mac);
            let sum = checksum::pseudo_v6(&target.octets(), &asker_ip, ICMPV6, len as u32);
            let c = checksum::finish(checksum::add(sum, icmp));
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            true
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const ASKER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
    pub const OWNER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

    /// A broadcast ARP request from 192.0.2.10 (ASKER) for `target`.
    pub fn arp_request(target: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&ASKER);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&ASKER);
        f.extend_from_slice(&[192, 0, 2, 10]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target);
        f.resize(60, 0);
        f
    }

    /// An NS from 2001:db8::a (ASKER) for `target`, to its solicited-node
    /// group, with a source link-layer option.
    pub fn ns(target: Ipv6Addr) -> Vec<u8> {
        let t = target.octets();
        let src: Ipv6Addr = "2001:db8::a".parse().unwrap();
        let group: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15]];
        let mut icmp = vec![NS, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&t);
        icmp.extend_from_slice(&[OPT_SOURCE_LLA, 1]);
        icmp.extend_from_slice(&ASKER);
        let sum = checksum::pseudo_v6(&src.octets(), &group, ICMPV6, icmp.len() as u32);
        let c = checksum::finish(checksum::add(sum, &icmp));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut f = vec![0x33, 0x33, 0xff, t[13], t[14], t[15]];
        f.extend_from_slice(&ASKER);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[ICMPV6, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&group);
        f.extend_from_slice(&icmp);
        f
    }

    fn answered(frame: &[u8], q: &Question) -> Vec<u8> {
        let mut buf = vec![0xa5u8; 512];
        let mut p = PacketBuf::new(&mut buf, 64, 0).unwrap();
        assert!(p.reset(64, frame));
        assert!(answer(&mut p, q, OWNER));
        p.data().to_vec()
    }

    #[test]
    fn arp_request_is_a_question_and_a_binding() {
        let n = inspect(&arp_request([192, 0, 2, 11])).unwrap();
        assert_eq!(n.question, Some(Question { target: "192.0.2.11".parse().unwrap() }));
        assert_eq!(n.binding, Some(("192.0.2.10".parse().unwrap(), ASKER)));
    }

    #[test]
    fn gratuitous_and_probe_arp_are_not_questions() {
        let mut g = arp_request([192, 0, 2, 10]);
        assert_eq!(inspect(&g).unwrap().question, None);
        g[28..32].copy_from_slice(&[0; 4]);
        g[38..42].copy_from_slice(&[192, 0, 2, 11]);
        let n = inspect(&g).unwrap();
        assert_eq!((n.question, n.binding), (None, None));
    }

    #[test]
    fn arp_answer_is_a_reply_from_the_owner() {
        let req = arp_request([192, 0, 2, 11]);
        let q = inspect(&req).unwrap().question.unwrap();
        let r = answered(&req, &q);
        assert_eq!(r.len(), req.len());
        assert_eq!(&r[0..6], &ASKER);
        assert_eq!(&r[6..12], &OWNER);
        assert_eq!(&r[20..22], &[0, 2]);
        assert_eq!(&r[22..28], &OWNER);
        assert_eq!(&r[28..32], &[192, 0, 2, 11]);
        assert_eq!(&r[32..38], &ASKER);
        assert_eq!(&r[38..42], &[192, 0, 2, 10]);
        // The reply, read back, announces the owner's binding.
        assert_eq!(inspect(&r).unwrap().binding, Some(("192.0.2.11".parse().unwrap(), OWNER)));
    }

    #[test]
    fn ns_answer_is_a_valid_na() {
        let target: Ipv6Addr = "2001:db8::b".parse().unwrap();
        let req = ns(target);
        let n = inspect(&req).unwrap();
        assert_eq!(n.question, Some(Question { target: IpAddr::V6(target) }));
        assert_eq!(n.binding, Some(("2001:db8::a".parse().unwrap(), ASKER)));
        let r = answered(&req, &n.question.unwrap());
        assert_eq!(r.len(), ETH + IPV6_LEN + ND_LEN + LLA_OPT_LEN);
        assert_eq!((&r[0..6], &r[6..12]), (&ASKER[..], &OWNER[..]));
        // `inspect` verifies the checksum: the answer reads back as an NA
        // binding the target to the owner.
        let back = inspect(&r).unwrap();
        assert_eq!(back.binding, Some((IpAddr::V6(target), OWNER)));
        assert_eq!(back.question, None);
    }

    #[test]
    fn bad_checksums_and_hop_limits_are_left_alone() {
        let target: Ipv6Addr = "2001:db8::b".parse().unwrap();
        let mut bad = ns(target);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(inspect(&bad), None);
        let mut hop = ns(target);
        hop[ETH + 7] = 64;
        assert_eq!(inspect(&hop), None);
        assert_eq!(inspect(&[0u8; 10]), None);
    }
}
