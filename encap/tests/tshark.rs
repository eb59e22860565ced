//! Cross-check against Wireshark's dissectors (which nobody here wrote): frames
//! the encap crate emits are written to a pcap file and dissected by `tshark`
//! with checksum validation on. Every tunnel type is covered: VXLAN over IPv4
//! (UDP checksum off and on) and IPv6, gretap over IPv4 and IPv6 with every
//! combination of the GRE checksum, key and sequence options, NVGRE keys and L3
//! GRE; Geneve over IPv4 and IPv6 with and without options; and the outer IP
//! options (DF, TTL, DSCP, ECN), the VXLAN port, the UDP source port range and
//! an outer VLAN tag.
//!
//! tshark must be installed (`scripts/setup.sh`); without it these tests fail.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Command;

use common::*;
use encap::wire::gre::nvgre_key;
use encap::*;

/// Wireshark's checksum status values (`proto_checksum_enum_e`).
const CSUM_GOOD: &str = "1";
const CSUM_NOT_PRESENT: &str = "3";
/// Expert severity of a warning (`PI_WARN`); errors are above it.
const PI_WARN: u64 = 0x0060_0000;

/// One dissected frame: every occurrence of every requested field, outermost first.
struct Row {
    index: usize,
    fields: HashMap<String, Vec<String>>,
}

impl Row {
    fn all(&self, f: &str) -> Vec<&str> {
        self.fields
            .get(f)
            .unwrap_or_else(|| panic!("field {f} was not requested"))
            .iter()
            .map(String::as_str)
            .collect()
    }

    /// The only occurrence of `f`; fails if it occurs zero or several times.
    fn one(&self, f: &str) -> &str {
        let v = self.all(f);
        assert_eq!(v.len(), 1, "frame {}: field {f} occurs {} times: {v:?}", self.index, v.len());
        v[0]
    }

    /// The first (outer) occurrence of `f`.
    fn outer(&self, f: &str) -> &str {
        self.all(f).first().copied().unwrap_or_else(|| panic!("frame {}: no {f}", self.index))
    }

    /// The second occurrence of `f` (the inner header's field); fails unless
    /// there are exactly two.
    fn inner(&self, f: &str) -> &str {
        let v = self.all(f);
        assert_eq!(v.len(), 2, "frame {}: field {f} should occur twice: {v:?}", self.index);
        v[1]
    }

    fn protocols(&self) -> &str {
        self.one("frame.protocols")
    }
}

/// Dissects `frames` with tshark (checksum validation on for IPv4, UDP and
/// TCP; GRE checksums are always validated) and returns one row per frame. Also
/// asserts that no frame is malformed or carries an expert warning or error.
fn dissect(frames: &[Vec<u8>], fields: &[&str], extra_args: &[&str]) -> Vec<Row> {
    require_tshark();
    let dir = TempDir::new("tshark");
    let path = dir.path().join("frames.pcap");
    write_pcap(&path, frames);
    let mut names: Vec<&str> =
        vec!["frame.protocols", "_ws.malformed", "_ws.expert.severity", "_ws.expert.message"];
    for f in fields {
        if !names.contains(f) {
            names.push(f);
        }
    }
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(&path);
    for pref in ["ip.check_checksum:TRUE", "udp.check_checksum:TRUE", "tcp.check_checksum:TRUE"] {
        cmd.args(["-o", pref]);
    }
    cmd.args(extra_args);
    cmd.args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=|"]);
    for n in &names {
        cmd.args(["-e", n]);
    }
    let out = cmd.output().expect("running tshark");
    assert!(out.status.success(), "tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Row> = text
        .lines()
        .enumerate()
        .map(|(index, line)| {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), names.len(), "frame {index}: {line:?}");
            let fields = names
                .iter()
                .zip(&cols)
                .map(|(n, c)| {
                    let v = if c.is_empty() {
                        vec![]
                    } else {
                        c.split('|').map(String::from).collect()
                    };
                    (n.to_string(), v)
                })
                .collect();
            Row { index, fields }
        })
        .collect();
    assert_eq!(
        rows.len(),
        frames.len(),
        "tshark printed {} rows for {} frames",
        rows.len(),
        frames.len()
    );
    for (r, f) in rows.iter().zip(frames) {
        assert!(
            r.all("_ws.malformed").is_empty(),
            "frame {} is malformed for tshark: {:?}\n{}",
            r.index,
            r.all("_ws.malformed"),
            hex(f)
        );
        for (sev, msg) in r.all("_ws.expert.severity").iter().zip(r.all("_ws.expert.message")) {
            let sev: u64 = sev.parse().unwrap();
            assert!(
                sev < PI_WARN,
                "frame {}: tshark expert warning/error: {msg}\n{}",
                r.index,
                hex(f)
            );
        }
    }
    rows
}

/// One inner frame to encapsulate and what tshark must find inside the tunnel.
#[derive(Clone)]
struct Inner {
    frame: Vec<u8>,
    /// The `frame.protocols` suffix after the inner Ethernet header (or, for L3
    /// GRE, after `gre:`).
    protos: &'static str,
    kind: Kind,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Ipv4Udp { sport: u16 },
    Ipv6Tcp,
    Arp,
    VlanIcmp,
}

const IN4_SRC: [u8; 4] = [198, 51, 100, 10];
const IN4_DST: [u8; 4] = [198, 51, 100, 20];
const IN6_SRC: &str = "2001:db8:100::10";
const IN6_DST: &str = "2001:db8:100::20";
/// Inner UDP destination port: "discard", which tshark leaves as plain data.
const IN_DPORT: u16 = 9;

fn udp_flow(sport: u16, tos: u8, ttl: u8, df: bool) -> Inner {
    Inner {
        frame: ipv4_udp(IN4_SRC, IN4_DST, sport, IN_DPORT, tos, ttl, df, 24),
        protos: "ip:udp:data",
        kind: Kind::Ipv4Udp { sport },
    }
}

fn tcp6_flow(tclass: u8, hlim: u8) -> Inner {
    Inner {
        frame: ipv6_tcp(v6(IN6_SRC), v6(IN6_DST), 40000, 80, tclass, hlim),
        protos: "ipv6:tcp",
        kind: Kind::Ipv6Tcp,
    }
}

fn arp() -> Inner {
    Inner { frame: arp_request(IN4_SRC, IN4_DST), protos: "arp", kind: Kind::Arp }
}

fn vlan_icmp() -> Inner {
    Inner {
        frame: vlan_tagged(&ipv4_icmp_echo(IN4_SRC, IN4_DST, 0, 64, true), 7),
        protos: "vlan:ethertype:ip:icmp:data",
        kind: Kind::VlanIcmp,
    }
}

/// A mix of every inner kind: `n` IPv4/UDP flows plus IPv6/TCP, ARP and a
/// VLAN-tagged IPv4/ICMP frame.
fn mixed_inners(n: u16) -> Vec<Inner> {
    let mut v: Vec<Inner> = (0..n).map(|i| udp_flow(20000 + i * 7, 0, 64, true)).collect();
    v.extend([tcp6_flow(0, 64), arp(), vlan_icmp()]);
    v
}

fn mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn ip4(a: [u8; 4]) -> String {
    std::net::Ipv4Addr::from(a).to_string()
}

/// Fields [`check_inner`] reads.
const INNER_FIELDS: &[&str] = &[
    "eth.src",
    "eth.dst",
    "ip.src",
    "ip.dst",
    "ip.checksum.status",
    "ipv6.src",
    "ipv6.dst",
    "udp.srcport",
    "udp.dstport",
    "udp.checksum.status",
    "tcp.srcport",
    "tcp.dstport",
    "tcp.checksum.status",
    "arp.src.proto_ipv4",
    "arp.dst.proto_ipv4",
    "vlan.id",
    "icmp.checksum.status",
];

/// Checks the inner frame as tshark dissected it: addresses, ports and the
/// inner checksums (encapsulation must not have touched a byte of it). The
/// outer header is IPv4 when `outer_v4`; `l2` is false for L3 GRE, which
/// carries no inner Ethernet header.
fn check_inner(r: &Row, inner: &Inner, outer_v4: bool, l2: bool) {
    let ctx = format!("frame {} ({:?})", r.index, inner.kind);
    // The last occurrence of an IPv4 field belongs to the inner header when
    // there is one; the outer one (if IPv4) comes first.
    let last = |f: &str| -> String { r.all(f).last().map(|s| s.to_string()).unwrap_or_default() };
    if l2 {
        assert_eq!(r.all("eth.src").len(), 2, "{ctx}: outer and inner Ethernet");
        let (isrc, idst) = (r.inner("eth.src"), r.inner("eth.dst"));
        assert_eq!(isrc, mac(INNER_SRC_MAC), "{ctx}: inner eth.src");
        let dst = if inner.kind == Kind::Arp {
            "ff:ff:ff:ff:ff:ff".to_string()
        } else {
            mac(INNER_DST_MAC)
        };
        assert_eq!(idst, dst, "{ctx}: inner eth.dst");
    } else {
        assert_eq!(r.all("eth.src").len(), 1, "{ctx}: L3 GRE carries no inner Ethernet");
    }
    let n_ip4 = r.all("ip.src").len();
    match inner.kind {
        Kind::Ipv4Udp { sport } => {
            assert_eq!(n_ip4, if outer_v4 { 2 } else { 1 }, "{ctx}");
            assert_eq!((last("ip.src"), last("ip.dst")), (ip4(IN4_SRC), ip4(IN4_DST)), "{ctx}");
            assert_eq!(last("ip.checksum.status"), CSUM_GOOD, "{ctx}: inner IPv4 checksum");
            assert_eq!(last("udp.srcport"), sport.to_string(), "{ctx}: inner UDP source port");
            assert_eq!(
                last("udp.dstport"),
                IN_DPORT.to_string(),
                "{ctx}: inner UDP destination port"
            );
            assert_eq!(last("udp.checksum.status"), CSUM_GOOD, "{ctx}: inner UDP checksum");
        }
        Kind::Ipv6Tcp => {
            assert_eq!(n_ip4, if outer_v4 { 1 } else { 0 }, "{ctx}");
            assert_eq!(last("ipv6.src"), IN6_SRC, "{ctx}");
            assert_eq!(last("ipv6.dst"), IN6_DST, "{ctx}");
            assert_eq!(r.one("tcp.srcport"), "40000", "{ctx}");
            assert_eq!(r.one("tcp.dstport"), "80", "{ctx}");
            assert_eq!(r.one("tcp.checksum.status"), CSUM_GOOD, "{ctx}: inner TCP checksum");
        }
        Kind::Arp => {
            assert_eq!(n_ip4, if outer_v4 { 1 } else { 0 }, "{ctx}");
            assert_eq!(r.one("arp.src.proto_ipv4"), ip4(IN4_SRC), "{ctx}");
            assert_eq!(r.one("arp.dst.proto_ipv4"), ip4(IN4_DST), "{ctx}");
        }
        Kind::VlanIcmp => {
            assert_eq!(r.one("vlan.id"), "7", "{ctx}: inner 802.1Q tag");
            assert_eq!((last("ip.src"), last("ip.dst")), (ip4(IN4_SRC), ip4(IN4_DST)), "{ctx}");
            assert_eq!(r.one("icmp.checksum.status"), CSUM_GOOD, "{ctx}: inner ICMP checksum");
        }
    }
}

fn fields_with(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = INNER_FIELDS.to_vec();
    v.extend_from_slice(extra);
    v
}

fn encap_all(p: &TunnelParams, inners: &[Inner]) -> Vec<Vec<u8>> {
    let mut tpl = EncapTemplate::new(p).unwrap();
    inners.iter().map(|i| encap_one(&mut tpl, &i.frame).unwrap()).collect()
}

fn vxlan(vni: u32) -> Encapsulation {
    Encapsulation::Vxlan { vni, dst_port: 4789 }
}

#[test]
fn vxlan_over_ipv4_with_udp_checksum_off_and_on() {
    const VNI: u32 = 5001;
    let inners = mixed_inners(24);
    let fields = fields_with(&[
        "eth.type",
        "ip.proto",
        "ip.len",
        "ip.id",
        "ip.flags.df",
        "ip.flags.mf",
        "ip.frag_offset",
        "ip.ttl",
        "ip.dsfield.dscp",
        "ip.dsfield.ecn",
        "udp.length",
        "udp.checksum",
        "vxlan.flags",
        "vxlan.flag_i",
        "vxlan.vni",
    ]);
    let mut ports_by_mode = Vec::new();
    for udp_checksum in [false, true] {
        let p = params(vxlan(VNI), false, EncapOptions { udp_checksum, ..EncapOptions::default() });
        let frames = encap_all(&p, &inners);
        let rows = dissect(&frames, &fields, &[]);
        let mut ids = HashSet::new();
        let mut ports = Vec::new();
        for ((r, f), inner) in rows.iter().zip(&frames).zip(&inners) {
            let ctx = format!("udp_checksum={udp_checksum} frame {} ({:?})", r.index, inner.kind);
            let want = format!("eth:ethertype:ip:udp:vxlan:eth:ethertype:{}", inner.protos);
            assert_eq!(r.protocols(), want, "{ctx}");
            assert_eq!(r.outer("eth.src"), mac(OUTER_SRC_MAC), "{ctx}");
            assert_eq!(r.outer("eth.dst"), mac(OUTER_DST_MAC), "{ctx}");
            assert_eq!(r.outer("eth.type"), "0x0800", "{ctx}");
            assert_eq!(r.outer("ip.src"), "192.0.2.1", "{ctx}");
            assert_eq!(r.outer("ip.dst"), "192.0.2.2", "{ctx}");
            assert_eq!(r.outer("ip.proto"), "17", "{ctx}");
            assert_eq!(r.outer("ip.len"), (f.len() - 14).to_string(), "{ctx}: IPv4 total length");
            assert_eq!(
                r.outer("ip.checksum.status"),
                CSUM_GOOD,
                "{ctx}: outer IPv4 header checksum"
            );
            assert_eq!(r.outer("ip.flags.df"), "1", "{ctx}: DF set by default");
            assert_eq!(r.outer("ip.flags.mf"), "0", "{ctx}");
            assert_eq!(r.outer("ip.frag_offset"), "0", "{ctx}");
            assert_eq!(r.outer("ip.ttl"), "64", "{ctx}: default TTL");
            assert_eq!(r.outer("ip.dsfield.dscp"), "0", "{ctx}: default DSCP");
            assert_eq!(r.outer("ip.dsfield.ecn"), "0", "{ctx}: inner is Not-ECT");
            assert!(ids.insert(r.outer("ip.id").to_string()), "{ctx}: IPv4 identification repeats");
            let sport: u16 = r.outer("udp.srcport").parse().unwrap();
            assert!((49152..=65535).contains(&sport), "{ctx}: source port {sport}");
            ports.push(sport);
            assert_eq!(r.outer("udp.dstport"), "4789", "{ctx}");
            assert_eq!(r.outer("udp.length"), (f.len() - 34).to_string(), "{ctx}: UDP length");
            if udp_checksum {
                assert_eq!(r.outer("udp.checksum.status"), CSUM_GOOD, "{ctx}: outer UDP checksum");
                assert_ne!(r.outer("udp.checksum"), "0x0000", "{ctx}");
            } else {
                assert_eq!(
                    r.outer("udp.checksum"),
                    "0x0000",
                    "{ctx}: no UDP checksum over IPv4 by default"
                );
                assert_eq!(r.outer("udp.checksum.status"), CSUM_NOT_PRESENT, "{ctx}");
            }
            assert_eq!(r.one("vxlan.flags"), "0x0800", "{ctx}: only the I flag");
            assert_eq!(r.one("vxlan.flag_i"), "1", "{ctx}");
            assert_eq!(r.one("vxlan.vni"), VNI.to_string(), "{ctx}");
            check_inner(r, inner, true, true);
        }
        let distinct: HashSet<u16> = ports[..24].iter().copied().collect();
        assert!(
            distinct.len() >= 20,
            "24 inner UDP flows map to only {} source ports",
            distinct.len()
        );
        ports_by_mode.push(ports);
    }
    assert_eq!(
        ports_by_mode[0], ports_by_mode[1],
        "the source port is a stable function of the inner flow"
    );
}

#[test]
fn same_flow_keeps_its_source_port_and_flows_spread() {
    // The same inner flow encapsulated repeatedly (and by a second template) keeps
    // its outer source port; packets of one flow that differ only in payload too.
    let p = params(vxlan(77), false, EncapOptions::default());
    let a = udp_flow(33000, 0, 64, true);
    // Same flow, another packet (longer payload).
    let b =
        Inner { frame: ipv4_udp(IN4_SRC, IN4_DST, 33000, IN_DPORT, 0, 64, true, 100), ..a.clone() };
    let c = udp_flow(33001, 0, 64, true);
    let inners = vec![a.clone(), a.clone(), b, c];
    let mut frames = encap_all(&p, &inners);
    frames.extend(encap_all(&p, &[a]));
    let rows = dissect(&frames, &["udp.srcport", "ip.id"], &[]);
    let sport: Vec<&str> = rows.iter().map(|r| r.outer("udp.srcport")).collect();
    assert_eq!(sport[0], sport[1], "same packet twice");
    assert_eq!(sport[0], sport[2], "same flow, other payload");
    assert_ne!(sport[0], sport[3], "another flow (inner source port + 1)");
    assert_eq!(sport[0], sport[4], "a second template");
    let ids: Vec<&str> = rows.iter().map(|r| r.outer("ip.id")).collect();
    assert_eq!(
        &ids[..4],
        &["0x0001", "0x0002", "0x0003", "0x0004"],
        "identification counts per packet"
    );
}

#[test]
fn vxlan_over_ipv6_has_a_valid_mandatory_checksum_and_lengths() {
    const VNI: u32 = 0x00ab_cdef;
    let inners = mixed_inners(12);
    let fields = fields_with(&[
        "eth.type",
        "ipv6.nxt",
        "ipv6.plen",
        "ipv6.hlim",
        "ipv6.flow",
        "ipv6.tclass.dscp",
        "ipv6.tclass.ecn",
        "udp.length",
        "udp.checksum",
        "vxlan.vni",
    ]);
    // Checksum option off: over IPv6 it is computed anyway.
    let p = params(vxlan(VNI), true, EncapOptions::default());
    let frames = encap_all(&p, &inners);
    let rows = dissect(&frames, &fields, &[]);
    let mut labels = HashSet::new();
    for ((r, f), inner) in rows.iter().zip(&frames).zip(&inners) {
        let ctx = format!("frame {} ({:?})", r.index, inner.kind);
        let want = format!("eth:ethertype:ipv6:udp:vxlan:eth:ethertype:{}", inner.protos);
        assert_eq!(r.protocols(), want, "{ctx}");
        assert_eq!(r.outer("eth.type"), "0x86dd", "{ctx}");
        assert_eq!(r.outer("ipv6.src"), "2001:db8::1", "{ctx}");
        assert_eq!(r.outer("ipv6.dst"), "2001:db8::2", "{ctx}");
        assert_eq!(r.outer("ipv6.nxt"), "17", "{ctx}");
        assert_eq!(r.outer("ipv6.plen"), (f.len() - 54).to_string(), "{ctx}: IPv6 payload length");
        assert_eq!(r.outer("udp.length"), (f.len() - 54).to_string(), "{ctx}: UDP length");
        assert_eq!(r.outer("ipv6.hlim"), "64", "{ctx}");
        assert_eq!(r.outer("ipv6.tclass.dscp"), "0", "{ctx}");
        assert_eq!(r.outer("ipv6.tclass.ecn"), "0", "{ctx}");
        assert_ne!(r.outer("udp.checksum"), "0x0000", "{ctx}: mandatory over IPv6");
        assert_eq!(r.outer("udp.checksum.status"), CSUM_GOOD, "{ctx}: outer UDP checksum");
        let sport: u16 = r.outer("udp.srcport").parse().unwrap();
        assert!((49152..=65535).contains(&sport), "{ctx}: source port {sport}");
        assert_eq!(r.one("vxlan.vni"), VNI.to_string(), "{ctx}");
        labels.insert(r.outer("ipv6.flow").to_string());
        check_inner(r, inner, false, true);
    }
    assert!(labels.len() >= 12, "the flow label follows the inner flow: {labels:?}");
}

/// Finds an inner frame whose outer UDP checksum computes to zero (by a sum
/// written here), and checks it is sent as 0xFFFF (RFC 768 / RFC 8200 8.1) and
/// that tshark accepts it.
#[test]
fn a_computed_zero_udp_checksum_is_sent_as_all_ones() {
    let mut frames = Vec::new();
    for v6_outer in [false, true] {
        let p = params(
            vxlan(9),
            v6_outer,
            EncapOptions { udp_checksum: true, ..EncapOptions::default() },
        );
        let mut tpl = EncapTemplate::new(&p).unwrap();
        // Non-IP inner frame (local experimental EtherType): its flow hash, and so
        // the source port, ignores the payload, whose last word we vary.
        let mut inner = arp_request(IN4_SRC, IN4_DST);
        inner[12..14].copy_from_slice(&[0x88, 0xb5]);
        inner.extend_from_slice(&[0, 0]);
        let ip_len = if v6_outer { 40 } else { 20 };
        let l4 = 14 + ip_len;
        let mut found = None;
        for w in 0..=u16::MAX {
            let n = inner.len();
            inner[n - 2..].copy_from_slice(&w.to_be_bytes());
            let f = encap_one(&mut tpl, &inner).unwrap();
            let mut udp = f[l4..].to_vec();
            let sent = u16::from_be_bytes([udp[6], udp[7]]);
            udp[6..8].copy_from_slice(&[0, 0]);
            let mut pseudo = Vec::new();
            if v6_outer {
                pseudo.extend_from_slice(&f[22..54]);
                pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
                pseudo.extend_from_slice(&[0, 0, 0, 17]);
            } else {
                pseudo.extend_from_slice(&f[26..34]);
                pseudo.extend_from_slice(&[0, 17]);
                pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
            }
            let computed = inet_checksum(&[&pseudo, &udp]);
            if computed == 0 {
                assert_eq!(sent, 0xffff, "v6={v6_outer}: a computed zero must be sent as 0xFFFF");
                found = Some(f);
                break;
            }
            assert_eq!(sent, computed, "v6={v6_outer} word {w:#06x}: UDP checksum");
        }
        frames.push(found.expect("some payload word makes the checksum zero"));
    }
    let rows = dissect(&frames, &["udp.checksum", "udp.checksum.status"], &[]);
    for r in &rows {
        assert_eq!(r.one("udp.checksum"), "0xffff", "frame {}", r.index);
        assert_eq!(r.one("udp.checksum.status"), CSUM_GOOD, "frame {}", r.index);
    }
}

const GRE_FIELDS: &[&str] = &[
    "ip.proto",
    "ip.len",
    "ip.checksum.status",
    "ipv6.nxt",
    "ipv6.plen",
    "gre.flags.checksum",
    "gre.flags.routing",
    "gre.flags.key",
    "gre.flags.sequence_number",
    "gre.flags.strict_source_route",
    "gre.flags.recursion_control",
    "gre.flags.version",
    "gre.proto",
    "gre.key",
    "gre.sequence_number",
    "gre.checksum.status",
];

/// Checks the outer IP and GRE headers of a GRE frame. `ip_hdr_len` is the
/// outer IP header length, `inner_len` what the tunnel carries.
#[allow(clippy::too_many_arguments)]
fn check_gre(
    r: &Row,
    f: &[u8],
    ctx: &str,
    v6_outer: bool,
    csum: bool,
    key: Option<u32>,
    seq: Option<u32>,
    proto: &str,
    inner_len: usize,
) {
    let gre_len = 4 + 4 * (csum as usize + key.is_some() as usize + seq.is_some() as usize);
    let ip_hdr = if v6_outer { 40 } else { 20 };
    assert_eq!(f.len(), 14 + ip_hdr + gre_len + inner_len, "{ctx}: GRE header length");
    if v6_outer {
        assert_eq!(r.outer("ipv6.nxt"), "47", "{ctx}");
        assert_eq!(r.outer("ipv6.plen"), (f.len() - 54).to_string(), "{ctx}: IPv6 payload length");
    } else {
        assert_eq!(r.outer("ip.proto"), "47", "{ctx}");
        assert_eq!(r.outer("ip.len"), (f.len() - 14).to_string(), "{ctx}: IPv4 total length");
        assert_eq!(r.outer("ip.checksum.status"), CSUM_GOOD, "{ctx}: outer IPv4 checksum");
    }
    let b = |x: bool| if x { "1" } else { "0" };
    assert_eq!(r.one("gre.flags.checksum"), b(csum), "{ctx}: C");
    assert_eq!(r.one("gre.flags.key"), b(key.is_some()), "{ctx}: K");
    assert_eq!(r.one("gre.flags.sequence_number"), b(seq.is_some()), "{ctx}: S");
    assert_eq!(r.one("gre.flags.routing"), "0", "{ctx}: R");
    assert_eq!(r.one("gre.flags.strict_source_route"), "0", "{ctx}");
    assert_eq!(r.one("gre.flags.recursion_control"), "0", "{ctx}");
    assert_eq!(r.one("gre.flags.version"), "0", "{ctx}");
    assert_eq!(r.one("gre.proto"), proto, "{ctx}: protocol");
    let want_key: Vec<String> = key.map(|k| format!("{k:#010x}")).into_iter().collect();
    assert_eq!(r.all("gre.key"), want_key, "{ctx}: key");
    let want_seq: Vec<String> = seq.map(|s| s.to_string()).into_iter().collect();
    assert_eq!(r.all("gre.sequence_number"), want_seq, "{ctx}: sequence number");
    if csum {
        assert_eq!(r.one("gre.checksum.status"), CSUM_GOOD, "{ctx}: GRE checksum");
    } else {
        assert!(r.all("gre.checksum.status").is_empty(), "{ctx}: no GRE checksum");
    }
}

#[test]
fn gretap_every_checksum_key_sequence_combination_over_ipv4_and_ipv6() {
    let inners = mixed_inners(2);
    let mut fields = fields_with(GRE_FIELDS);
    fields.push("eth.type");
    for v6_outer in [false, true] {
        for combo in 0..8u32 {
            let (csum, use_key, use_seq) = (combo & 1 != 0, combo & 2 != 0, combo & 4 != 0);
            let key = use_key.then_some(0x0102_0300 + combo);
            let opts = EncapOptions {
                gre_checksum: csum,
                gre_sequence: use_seq,
                ..EncapOptions::default()
            };
            let p = params(Encapsulation::GreTap { key }, v6_outer, opts);
            let frames = encap_all(&p, &inners);
            let rows = dissect(&frames, &fields, &[]);
            for (i, ((r, f), inner)) in rows.iter().zip(&frames).zip(&inners).enumerate() {
                let ctx = format!(
                    "gretap v6={v6_outer} C={csum} K={key:?} S={use_seq} frame {i} ({:?})",
                    inner.kind
                );
                let ip = if v6_outer { "ipv6" } else { "ip" };
                assert_eq!(
                    r.protocols(),
                    format!("eth:ethertype:{ip}:gre:eth:ethertype:{}", inner.protos),
                    "{ctx}"
                );
                let seq = use_seq.then_some(i as u32 + 1);
                check_gre(r, f, &ctx, v6_outer, csum, key, seq, "0x6558", inner.frame.len());
                check_inner(r, inner, !v6_outer, true);
            }
        }
    }
}

#[test]
fn nvgre_key_carries_the_vsid_and_flow_id() {
    let inners = mixed_inners(1);
    let key = nvgre_key(0x00ab_cdef, 0x5a);
    assert_eq!(key, 0xabcd_ef5a);
    let fields = fields_with(GRE_FIELDS);
    for v6_outer in [false, true] {
        let p = params(Encapsulation::GreTap { key: Some(key) }, v6_outer, EncapOptions::default());
        let frames = encap_all(&p, &inners);
        for ((r, f), inner) in dissect(&frames, &fields, &[]).iter().zip(&frames).zip(&inners) {
            let ctx = format!("NVGRE v6={v6_outer} frame {} ({:?})", r.index, inner.kind);
            check_gre(r, f, &ctx, v6_outer, false, Some(key), None, "0x6558", inner.frame.len());
            // The VSID is the top 24 bits of the key on the wire.
            let off = 14 + if v6_outer { 40 } else { 20 } + 4;
            assert_eq!(&f[off..off + 4], &[0xab, 0xcd, 0xef, 0x5a], "{ctx}: VSID then flow id");
            check_inner(r, inner, !v6_outer, true);
        }
    }
}

#[test]
fn l3_gre_carries_only_the_ip_packet() {
    let inners = vec![udp_flow(1111, 0, 64, true), tcp6_flow(0, 64), vlan_icmp()];
    let mut fields = fields_with(GRE_FIELDS);
    fields.push("eth.type");
    for v6_outer in [false, true] {
        for (csum, key, use_seq) in
            [(false, None, false), (true, Some(0xfeed_f00d), true), (false, Some(3), false)]
        {
            let opts = EncapOptions {
                gre_checksum: csum,
                gre_sequence: use_seq,
                ..EncapOptions::default()
            };
            let p = params(Encapsulation::GreL3 { key }, v6_outer, opts);
            let mut tpl = EncapTemplate::new(&p).unwrap();
            assert_eq!(
                encap_one(&mut tpl, &arp().frame),
                Err(DropReason::InnerNotIp),
                "ARP over L3 GRE"
            );
            let frames = encap_all(&p, &inners);
            let rows = dissect(&frames, &fields, &[]);
            for (i, ((r, f), inner)) in rows.iter().zip(&frames).zip(&inners).enumerate() {
                let ctx = format!(
                    "L3 GRE v6={v6_outer} C={csum} K={key:?} S={use_seq} frame {i} ({:?})",
                    inner.kind
                );
                let ip = if v6_outer { "ipv6" } else { "ip" };
                // The inner 802.1Q tag is dropped with the Ethernet header.
                let (protos, proto, l2_len) = match inner.kind {
                    Kind::Ipv6Tcp => ("ipv6:tcp", "0x86dd", 14),
                    Kind::VlanIcmp => ("ip:icmp:data", "0x0800", 18),
                    _ => ("ip:udp:data", "0x0800", 14),
                };
                assert_eq!(r.protocols(), format!("eth:ethertype:{ip}:gre:{protos}"), "{ctx}");
                assert_eq!(r.one("eth.type"), if v6_outer { "0x86dd" } else { "0x0800" }, "{ctx}");
                let seq = use_seq.then_some(i as u32 + 1);
                check_gre(r, f, &ctx, v6_outer, csum, key, seq, proto, inner.frame.len() - l2_len);
                assert_eq!(
                    &f[f.len() - (inner.frame.len() - l2_len)..],
                    &inner.frame[l2_len..],
                    "{ctx}: IP packet intact"
                );
                if inner.kind == Kind::VlanIcmp {
                    assert!(r.all("vlan.id").is_empty(), "{ctx}");
                    assert_eq!(r.all("ip.src").last().copied(), Some("198.51.100.10"), "{ctx}");
                    assert_eq!(r.one("icmp.checksum.status"), CSUM_GOOD, "{ctx}");
                } else {
                    check_inner(r, inner, !v6_outer, false);
                }
            }
        }
    }
}

/// What the outer header must carry for one inner frame under one set of options.
struct OptCase {
    inner: Inner,
    /// Inner IPv4 DF (None: not IPv4), TTL / hop limit (None: not IP), TOS.
    df: Option<bool>,
    ttl: Option<u8>,
    tos: u8,
}

fn option_inners() -> Vec<OptCase> {
    let mut v = Vec::new();
    for ecn in 0..4u8 {
        let tos = (46 << 2) | ecn;
        v.push(OptCase {
            inner: udp_flow(5000 + ecn as u16, tos, 33, true),
            df: Some(true),
            ttl: Some(33),
            tos,
        });
        let tos = (10 << 2) | ecn;
        v.push(OptCase {
            inner: udp_flow(6000 + ecn as u16, tos, 200, false),
            df: Some(false),
            ttl: Some(200),
            tos,
        });
        let tos = (26 << 2) | ecn;
        v.push(OptCase { inner: tcp6_flow(tos, 44), df: None, ttl: Some(44), tos });
    }
    v.push(OptCase { inner: arp(), df: None, ttl: None, tos: 0 });
    v
}

#[test]
fn outer_df_ttl_dscp_and_ecn_follow_the_options() {
    let cases = option_inners();
    let inners: Vec<Inner> = cases.iter().map(|c| c.inner.clone()).collect();
    let fields = fields_with(&[
        "ip.flags.df",
        "ip.ttl",
        "ip.dsfield.dscp",
        "ip.dsfield.ecn",
        "ipv6.hlim",
        "ipv6.tclass.dscp",
        "ipv6.tclass.ecn",
    ]);
    let dfs = [DfMode::Set, DfMode::Unset, DfMode::Inherit];
    let ttls = [TtlMode::Fixed(7), TtlMode::Inherit];
    let dscps = [DscpMode::Fixed(10), DscpMode::Inherit];
    let ecns = [EcnMode::Normal, EcnMode::Compat];
    let encaps = [vxlan(1), Encapsulation::GreTap { key: Some(1) }];
    let mut checked = 0;
    for v6_outer in [false, true] {
        for (n, encap) in encaps.iter().enumerate() {
            for (k, (&df, &ttl)) in
                dfs.iter().flat_map(|d| ttls.iter().map(move |t| (d, t))).enumerate()
            {
                // DSCP and ECN modes rotate with the DF/TTL combination so that every
                // value of each is seen with each tunnel and address family.
                let dscp = dscps[(k + n) % 2];
                let ecn = ecns[(k / 2 + n) % 2];
                let opts = EncapOptions { df, ttl, dscp, ecn, ..EncapOptions::default() };
                let frames = encap_all(&params(*encap, v6_outer, opts), &inners);
                let rows = dissect(&frames, &fields, &[]);
                for (r, c) in rows.iter().zip(&cases) {
                    let ctx = format!(
                        "{encap:?} v6={v6_outer} {df:?} {ttl:?} {dscp:?} {ecn:?} frame {} ({:?})",
                        r.index, c.inner.kind
                    );
                    let want_ttl = match ttl {
                        TtlMode::Fixed(t) => t,
                        TtlMode::Inherit => c.ttl.unwrap_or(64),
                    };
                    let want_dscp = match dscp {
                        DscpMode::Fixed(d) => d,
                        DscpMode::Inherit => c.tos >> 2,
                    };
                    let want_ecn = match ecn {
                        EcnMode::Normal => c.tos & 3,
                        EcnMode::Compat => 0,
                    };
                    if v6_outer {
                        assert_eq!(r.outer("ipv6.hlim"), want_ttl.to_string(), "{ctx}: hop limit");
                        assert_eq!(
                            r.outer("ipv6.tclass.dscp"),
                            want_dscp.to_string(),
                            "{ctx}: DSCP"
                        );
                        assert_eq!(r.outer("ipv6.tclass.ecn"), want_ecn.to_string(), "{ctx}: ECN");
                    } else {
                        let want_df = match df {
                            DfMode::Set => true,
                            DfMode::Unset => false,
                            // Inner IPv6 is never fragmented by routers: DF; non-IP: no DF.
                            DfMode::Inherit => c.df.unwrap_or(c.ttl.is_some()),
                        };
                        assert_eq!(
                            r.outer("ip.flags.df"),
                            if want_df { "1" } else { "0" },
                            "{ctx}: DF"
                        );
                        assert_eq!(r.outer("ip.ttl"), want_ttl.to_string(), "{ctx}: TTL");
                        assert_eq!(
                            r.outer("ip.dsfield.dscp"),
                            want_dscp.to_string(),
                            "{ctx}: DSCP"
                        );
                        assert_eq!(r.outer("ip.dsfield.ecn"), want_ecn.to_string(), "{ctx}: ECN");
                        assert_eq!(
                            r.outer("ip.checksum.status"),
                            CSUM_GOOD,
                            "{ctx}: IPv4 checksum"
                        );
                    }
                    check_inner(r, &c.inner, !v6_outer, true);
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 2 * 2 * 6 * cases.len());
}

#[test]
fn custom_vxlan_port_source_range_outer_vlan_and_largest_vni() {
    let inners = mixed_inners(16);
    let opts = EncapOptions { src_port_min: 10000, src_port_max: 10007, ..EncapOptions::default() };
    let mut p = params(Encapsulation::Vxlan { vni: 0x00ff_ffff, dst_port: 8472 }, false, opts);
    p.outer_vlan = Some(100);
    let frames = encap_all(&p, &inners);
    let fields = fields_with(&["eth.type", "vlan.etype", "udp.length", "vxlan.vni", "ip.len"]);
    let rows = dissect(&frames, &fields, &["-d", "udp.port==8472,vxlan"]);
    let mut ports = HashSet::new();
    for ((r, f), inner) in rows.iter().zip(&frames).zip(&inners) {
        let ctx = format!("frame {} ({:?})", r.index, inner.kind);
        let want =
            format!("eth:ethertype:vlan:ethertype:ip:udp:vxlan:eth:ethertype:{}", inner.protos);
        assert_eq!(r.protocols(), want, "{ctx}");
        assert_eq!(r.outer("eth.type"), "0x8100", "{ctx}");
        assert_eq!(r.outer("vlan.id"), "100", "{ctx}: outer VLAN");
        assert_eq!(r.outer("vlan.etype"), "0x0800", "{ctx}");
        assert_eq!(r.outer("ip.len"), (f.len() - 18).to_string(), "{ctx}");
        assert_eq!(r.outer("udp.dstport"), "8472", "{ctx}");
        let sport: u16 = r.outer("udp.srcport").parse().unwrap();
        assert!((10000..=10007).contains(&sport), "{ctx}: source port {sport} outside 10000-10007");
        ports.insert(sport);
        assert_eq!(r.one("vxlan.vni"), "16777215", "{ctx}");
        if inner.kind == Kind::VlanIcmp {
            // Outer tag 100, inner tag 7 (check_inner expects only the inner one).
            assert_eq!(r.all("vlan.id"), ["100", "7"], "{ctx}");
            assert_eq!(r.inner("ip.src"), "198.51.100.10", "{ctx}");
            assert_eq!(r.one("icmp.checksum.status"), CSUM_GOOD, "{ctx}");
        } else {
            assert_eq!(r.all("vlan.id"), ["100"], "{ctx}");
            check_inner(r, inner, true, true);
        }
    }
    assert!(ports.len() >= 4, "16 flows use only {} of 8 source ports", ports.len());
}

fn geneve(vni: u32, opts: &[(u16, u8, &[u8])]) -> Encapsulation {
    let mut options = GeneveOptions::default();
    for (c, t, d) in opts {
        options.push(*c, *t, d).unwrap();
    }
    Encapsulation::Geneve { vni, dst_port: 6081, options }
}

/// Geneve over IPv4 (UDP checksum off and on) and IPv6, without options and
/// with a critical OVN option plus a non-critical experimental one: Wireshark's
/// Geneve dissector must find version 0, the VNI, the Ethernet protocol type,
/// the C bit exactly when an option is critical, and every option's class,
/// type and length; outer checksums and lengths must be valid.
#[test]
fn geneve_over_ipv4_and_ipv6_with_and_without_options() {
    const VNI: u32 = 0x00de_cade;
    let inners = mixed_inners(12);
    let fields = fields_with(&[
        "ip.proto",
        "ipv6.nxt",
        "udp.length",
        "udp.checksum",
        "geneve.version",
        "geneve.flags.oam",
        "geneve.flags.critical",
        "geneve.proto_type",
        "geneve.vni",
        "geneve.option.class",
        "geneve.option.type",
        "geneve.option.length",
    ]);
    let opts: &[(u16, u8, &[u8])] =
        &[(0x0102, 0x80, &[0, 0, 0, 7]), (0xfff0, 0x01, &[1, 2, 3, 4, 5, 6, 7, 8])];
    for (v6, udp_checksum, with_opts) in [
        (false, false, false),
        (false, true, true),
        (false, false, true),
        (true, false, false),
        (true, false, true),
    ] {
        let o = if with_opts { opts } else { &[] };
        let p =
            params(geneve(VNI, o), v6, EncapOptions { udp_checksum, ..EncapOptions::default() });
        let frames = encap_all(&p, &inners);
        let rows = dissect(&frames, &fields, &[]);
        let ip = if v6 { "ipv6" } else { "ip" };
        let outer_len = if v6 { 54 } else { 34 };
        for ((r, f), inner) in rows.iter().zip(&frames).zip(&inners) {
            let ctx = format!(
                "v6={v6} udp_checksum={udp_checksum} options={with_opts} frame {} ({:?})",
                r.index, inner.kind
            );
            let want = format!("eth:ethertype:{ip}:udp:geneve:eth:ethertype:{}", inner.protos);
            assert_eq!(r.protocols(), want, "{ctx}");
            assert_eq!(r.outer("udp.dstport"), "6081", "{ctx}");
            let sport: u16 = r.outer("udp.srcport").parse().unwrap();
            assert!((49152..=65535).contains(&sport), "{ctx}: source port {sport}");
            assert_eq!(r.outer("udp.length"), (f.len() - outer_len).to_string(), "{ctx}");
            if v6 || udp_checksum {
                assert_eq!(r.outer("udp.checksum.status"), CSUM_GOOD, "{ctx}: outer UDP checksum");
            } else {
                assert_eq!(r.outer("udp.checksum"), "0x0000", "{ctx}: no checksum over IPv4");
            }
            if !v6 {
                assert_eq!(r.outer("ip.checksum.status"), CSUM_GOOD, "{ctx}: outer IPv4 checksum");
            }
            assert_eq!(r.one("geneve.version"), "0", "{ctx}");
            assert_eq!(r.one("geneve.flags.oam"), "0", "{ctx}");
            assert_eq!(r.one("geneve.flags.critical"), if with_opts { "1" } else { "0" }, "{ctx}");
            assert_eq!(r.one("geneve.proto_type"), "0x6558", "{ctx}");
            assert_eq!(r.one("geneve.vni"), format!("{VNI:#x}"), "{ctx}");
            // `geneve.option.length` is the option area's length in bytes,
            // then each option's (its 4-byte header included).
            let (classes, types, lens) = if with_opts {
                (vec!["0x0102", "0xfff0"], vec!["0x80", "0x01"], vec!["20", "8", "12"])
            } else {
                (vec![], vec![], vec!["0"])
            };
            assert_eq!(r.all("geneve.option.class"), classes, "{ctx}");
            assert_eq!(r.all("geneve.option.type"), types, "{ctx}");
            assert_eq!(r.all("geneve.option.length"), lens, "{ctx}");
            check_inner(r, inner, !v6, true);
        }
    }
}
