//! Frames the encap crate emits, dissected by tshark (Wireshark's dissectors,
//! which nobody here wrote): VNI, GRE flags, key and sequence, UDP ports, UDP,
//! IPv4 and GRE checksum validity, DF, IPv6 lengths and the inner frame.

use std::path::Path;
use std::process::Command;

use encap::wire::gre::nvgre_key;
use encap::*;

const HEADROOM: usize = 128;

fn tshark_available() {
    let ok = Command::new("tshark").arg("-v").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "tshark is not installed: run scripts/setup.sh (as root)");
}

/// A minimal classic pcap writer (Ethernet link type).
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut b = Vec::new();
    b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    b.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0]);
    for (i, f) in frames.iter().enumerate() {
        b.extend_from_slice(&(i as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(&(f.len() as u32).to_le_bytes());
        b.extend_from_slice(f);
    }
    std::fs::write(path, b).unwrap();
}

/// One row per frame, one column per field (first occurrence unless the field
/// name is followed by `#2`, meaning the second: the inner header).
fn dissect(frames: &[Vec<u8>], fields: &[&str]) -> Vec<Vec<String>> {
    let dir = std::env::temp_dir().join(format!(
        "encap-tshark-{}-{}",
        std::process::id(),
        fields.join("").len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("f{}.pcap", frames.len() * 1000 + fields.len()));
    write_pcap(&path, frames);
    let mut bases: Vec<&str> = Vec::new();
    for f in fields {
        let b = f.split('#').next().unwrap();
        if !bases.contains(&b) {
            bases.push(b);
        }
    }
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(&path);
    cmd.args(["-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE"]);
    cmd.args(["-T", "fields", "-E", "separator=|", "-E", "occurrence=a", "-E", "aggregator=;"]);
    for b in &bases {
        cmd.args(["-e", b]);
    }
    let out = cmd.output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split('|').collect();
            fields
                .iter()
                .map(|f| {
                    let mut it = f.split('#');
                    let base = it.next().unwrap();
                    let occ: usize = it.next().map_or(1, |n| n.parse().unwrap());
                    let col = bases.iter().position(|b| *b == base).unwrap();
                    cols.get(col).and_then(|v| v.split(';').nth(occ - 1)).unwrap_or("").to_string()
                })
                .collect()
        })
        .collect()
}

/// Inner IPv4/UDP frame with a given source port and TOS.
fn inner(sport: u16, tos: u8, df: bool) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x0b, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x00];
    let repr = wire::ipv4::Ipv4Repr {
        src: [198, 51, 100, 1],
        dst: [198, 51, 100, 2],
        protocol: wire::IpProtocol::Udp,
        payload_len: 8 + 20,
        ttl: 33,
        dscp: tos >> 2,
        ecn: tos & 3,
        dont_frag: df,
        ident: 9,
    };
    let mut ip = [0u8; 20];
    repr.emit(&mut wire::ipv4::Packet::new_unchecked(&mut ip[..]));
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&[0, 53, 0, 28, 0, 0]);
    f.extend_from_slice(&[0x61; 20]);
    f
}

fn params(encap: Encapsulation, v6: bool, options: EncapOptions) -> TunnelParams {
    let underlay = if v6 {
        let a: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let b: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
        Underlay::V6 { src: a.octets(), dst: b.octets() }
    } else {
        Underlay::V4 { src: [192, 0, 2, 1], dst: [192, 0, 2, 2] }
    };
    TunnelParams {
        encap,
        underlay,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        outer_vlan: None,
        options,
    }
}

fn encap_all(p: &TunnelParams, inners: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut tpl = EncapTemplate::new(p).unwrap();
    inners
        .iter()
        .map(|f| {
            let mut b = vec![0u8; HEADROOM + f.len()];
            b[HEADROOM..].copy_from_slice(f);
            let mut pkt = PacketBuf::new(&mut b, HEADROOM, f.len()).unwrap();
            tpl.encap(&mut pkt).unwrap();
            pkt.data().to_vec()
        })
        .collect()
}

// Wireshark's checksum status values.
const GOOD: &str = "1";

#[test]
fn vxlan_over_ipv4_dissects_as_expected() {
    tshark_available();
    let flows: Vec<Vec<u8>> = (0..16).map(|i| inner(1000 + i, 0, true)).collect();
    for udp_checksum in [false, true] {
        let p = params(
            Encapsulation::Vxlan { vni: 4242, dst_port: 4789 },
            false,
            EncapOptions { udp_checksum, ..EncapOptions::default() },
        );
        let rows = dissect(
            &encap_all(&p, &flows),
            &[
                "vxlan.vni",
                "udp.dstport",
                "udp.srcport",
                "udp.checksum",
                "udp.checksum.status",
                "ip.checksum.status",
                "ip.flags.df",
                "ip.ttl",
                "ip.src#2",
                "ip.dst#2",
                "ip.ttl#2",
            ],
        );
        assert_eq!(rows.len(), 16);
        let mut ports = std::collections::HashSet::new();
        for r in &rows {
            assert_eq!(r[0], "4242", "{r:?}");
            assert_eq!(r[1], "4789");
            let sport: u16 = r[2].parse().unwrap();
            assert!((49152..=65535).contains(&sport));
            ports.insert(sport);
            if udp_checksum {
                assert_eq!(r[4], GOOD, "UDP checksum valid: {r:?}");
            } else {
                assert_eq!(r[3], "0x0000", "no UDP checksum over IPv4 by default: {r:?}");
            }
            assert_eq!(r[5], GOOD, "outer IPv4 header checksum: {r:?}");
            assert_eq!(r[6], "1", "DF set by default");
            assert_eq!(r[7], "64");
            assert_eq!(
                (r[8].as_str(), r[9].as_str(), r[10].as_str()),
                ("198.51.100.1", "198.51.100.2", "33")
            );
        }
        assert!(ports.len() >= 12, "16 flows, only {} source ports", ports.len());
    }
}

#[test]
fn vxlan_over_ipv6_has_a_valid_mandatory_checksum() {
    tshark_available();
    let p = params(Encapsulation::Vxlan { vni: 7, dst_port: 4789 }, true, EncapOptions::default());
    let frames = encap_all(&p, &[inner(1, 0, true), inner(2, 0, true)]);
    let rows =
        dissect(&frames, &["vxlan.vni", "udp.checksum.status", "ipv6.plen", "ipv6.flow", "ip.src"]);
    for (r, f) in rows.iter().zip(&frames) {
        assert_eq!(r[0], "7");
        assert_eq!(r[1], GOOD, "UDP over IPv6 checksum: {r:?}");
        assert_eq!(r[2], (f.len() - 14 - 40).to_string());
        assert_ne!(r[3], "0x00000", "flow label carries the inner flow hash");
        assert_eq!(r[4], "198.51.100.1", "inner IPv4 dissected");
    }
}

#[test]
fn gre_flags_key_sequence_and_checksum_dissect() {
    tshark_available();
    for (csum, key, seq, v6) in [
        (false, None, false, false),
        (true, None, false, false),
        (false, Some(7), false, false),
        (false, None, true, false),
        (true, Some(0xdead_beef), true, false),
        (true, Some(nvgre_key(5000, 3)), true, true),
    ] {
        let opts =
            EncapOptions { gre_checksum: csum, gre_sequence: seq, ..EncapOptions::default() };
        let p = params(Encapsulation::GreTap { key }, v6, opts);
        let frames = encap_all(&p, &[inner(5, 0, true), inner(6, 0, true), inner(7, 0, true)]);
        let rows = dissect(
            &frames,
            &[
                "gre.flags.checksum",
                "gre.key",
                "gre.sequence_number",
                "gre.checksum.status",
                "gre.proto",
                "ip.src#2",
                "ip.src",
            ],
        );
        let case = format!("C={csum} K={key:?} S={seq} v6={v6}");
        assert_eq!(rows.len(), 3, "{case}");
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r[0], if csum { "1" } else { "0" }, "{case}: {r:?}");
            assert_eq!(r[1], key.map(|k| format!("{k:#010x}")).unwrap_or_default(), "{case}: key");
            assert_eq!(
                r[2],
                if seq { (i + 1).to_string() } else { String::new() },
                "{case}: sequence"
            );
            if csum {
                assert_eq!(r[3], GOOD, "{case}: GRE checksum");
            }
            assert_eq!(r[4], "0x6558", "{case}: transparent Ethernet bridging");
            let inner_src = if v6 { &r[6] } else { &r[5] };
            assert_eq!(inner_src, "198.51.100.1", "{case}: inner frame dissected");
        }
    }
}

#[test]
fn l3_gre_carries_the_ip_packet_and_df_follows_the_option() {
    tshark_available();
    let cases = [
        (DfMode::Set, true, "1"),
        (DfMode::Unset, true, "0"),
        (DfMode::Inherit, false, "0"),
        (DfMode::Inherit, true, "1"),
    ];
    for (df, inner_df, want) in cases {
        let opts = EncapOptions {
            df,
            ttl: TtlMode::Inherit,
            dscp: DscpMode::Inherit,
            ..EncapOptions::default()
        };
        let p = params(Encapsulation::GreL3 { key: Some(9) }, false, opts);
        let rows = dissect(
            &encap_all(&p, &[inner(1, 0xb8 | 2, inner_df)]),
            &[
                "gre.proto",
                "gre.key",
                "ip.flags.df",
                "ip.ttl",
                "ip.dsfield.dscp",
                "ip.dsfield.ecn",
                "ip.src#2",
                "eth.type",
            ],
        );
        let r = &rows[0];
        assert_eq!(r[0], "0x0800", "{df:?}: L3 GRE carries IPv4");
        assert_eq!(r[1], "0x00000009");
        assert_eq!(r[2], want, "{df:?} with inner DF {inner_df}");
        assert_eq!(r[3], "33", "TTL inherited");
        assert_eq!(r[4], "46", "DSCP inherited (EF)");
        assert_eq!(r[5], "2", "ECN copied (RFC 6040 normal mode)");
        assert_eq!(r[6], "198.51.100.1");
    }
}
