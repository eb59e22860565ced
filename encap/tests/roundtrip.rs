//! Property tests: parse(emit(x)) == x for every header representation, and
//! decap(encap(frame)) == frame for random frames and tunnel settings, with the
//! outer headers checked by etherparse, a parser nobody here wrote.

use encap::wire::ethernet::{self, EtherType, EthernetRepr};
use encap::wire::geneve::{self, GeneveRepr};
use encap::wire::gre::{self, GreRepr};
use encap::wire::ipv4::{self, Ipv4Repr};
use encap::wire::ipv6::{self, Ipv6Repr};
use encap::wire::udp::{self, UdpRepr};
use encap::wire::vxlan::{self, VxlanRepr};
use encap::wire::IpProtocol;
use encap::*;
use proptest::prelude::*;

/// Room for the longest outer header (Geneve over IPv6 with options).
const HEADROOM: usize = 256;

fn ip_proto() -> impl Strategy<Value = IpProtocol> {
    any::<u8>().prop_map(IpProtocol::from)
}

fn ethertype() -> impl Strategy<Value = EtherType> {
    any::<u16>().prop_map(EtherType::from)
}

proptest! {
    #[test]
    fn ethernet_repr_roundtrip(src: [u8; 6], dst: [u8; 6], et in ethertype()) {
        let r = EthernetRepr { src, dst, ethertype: et };
        let mut b = [0xa5u8; 14];
        r.emit(&mut ethernet::Frame::new_unchecked(&mut b[..]));
        prop_assert_eq!(EthernetRepr::parse(&ethernet::Frame::new_checked(&b[..]).unwrap()).unwrap(), r);
    }

    #[test]
    fn ipv4_repr_roundtrip(src: [u8; 4], dst: [u8; 4], protocol in ip_proto(), payload_len in 0u16..1480,
                           ttl: u8, dscp in 0u8..64, ecn in 0u8..4, dont_frag: bool, ident: u16) {
        let r = Ipv4Repr { src, dst, protocol, payload_len, ttl, dscp, ecn, dont_frag, ident };
        let mut b = vec![0xa5u8; 20 + payload_len as usize];
        r.emit(&mut ipv4::Packet::new_unchecked(&mut b[..]));
        let p = ipv4::Packet::new_checked(&b[..]).unwrap();
        prop_assert_eq!(Ipv4Repr::parse(&p).unwrap(), r);
        // etherparse agrees on the checksum and the fields.
        let (h, _) = etherparse::Ipv4Header::from_slice(&b).unwrap();
        prop_assert_eq!(h.header_checksum, h.calc_header_checksum());
        prop_assert_eq!(h.time_to_live, ttl);
        prop_assert_eq!(h.dont_fragment, dont_frag);
    }

    #[test]
    fn ipv6_repr_roundtrip(src: [u8; 16], dst: [u8; 16], next_header in ip_proto(), payload_len in 0u16..1460,
                           hop_limit: u8, traffic_class: u8, flow_label in 0u32..0x10_0000) {
        let r = Ipv6Repr { src, dst, next_header, payload_len, hop_limit, traffic_class, flow_label };
        let mut b = vec![0xa5u8; 40 + payload_len as usize];
        r.emit(&mut ipv6::Packet::new_unchecked(&mut b[..]));
        prop_assert_eq!(Ipv6Repr::parse(&ipv6::Packet::new_checked(&b[..]).unwrap()).unwrap(), r);
    }

    #[test]
    fn udp_repr_roundtrip(src_port: u16, dst_port: u16, payload_len in 0usize..64) {
        let r = UdpRepr { src_port, dst_port };
        let mut b = vec![0xa5u8; 8 + payload_len];
        r.emit(&mut udp::Packet::new_unchecked(&mut b[..]), payload_len);
        prop_assert_eq!(UdpRepr::parse(&udp::Packet::new_checked(&b[..]).unwrap()).unwrap(), r);
    }

    #[test]
    fn vxlan_repr_roundtrip(vni in 0u32..=vxlan::MAX_VNI) {
        let r = VxlanRepr { vni };
        let mut b = [0xa5u8; 8];
        r.emit(&mut vxlan::Packet::new_unchecked(&mut b[..]));
        prop_assert_eq!(VxlanRepr::parse(&vxlan::Packet::new_checked(&b[..]).unwrap(), true).unwrap(), r);
    }

    #[test]
    fn geneve_repr_roundtrip(vni in 0u32..=geneve::MAX_VNI, control: bool, critical: bool,
                             proto in prop_oneof![Just(EtherType::TransEther), Just(EtherType::Ipv4), Just(EtherType::Ipv6)],
                             opts in geneve_options(), payload in proptest::collection::vec(any::<u8>(), 0..40)) {
        let bytes = encode_options(&opts);
        let r = GeneveRepr { vni, protocol: proto, control, critical, options: &bytes };
        let mut b = vec![0xa5u8; r.buffer_len() + payload.len()];
        r.emit(&mut geneve::Packet::new_unchecked(&mut b[..]));
        b[r.buffer_len()..].copy_from_slice(&payload);
        let p = geneve::Packet::new_checked(&b[..]).unwrap();
        prop_assert_eq!(GeneveRepr::parse(&p).unwrap(), r);
        prop_assert!(!p.has_reserved_bits());
        prop_assert_eq!(p.payload(), &payload[..]);
        let back: Vec<(u16, u8, Vec<u8>)> =
            p.option_iter().map(|o| o.unwrap()).map(|o| (o.class, o.kind, o.data.to_vec())).collect();
        prop_assert_eq!(back, opts);
    }

    #[test]
    fn gre_repr_roundtrip(proto in prop_oneof![Just(EtherType::TransEther), Just(EtherType::Ipv4), Just(EtherType::Ipv6)],
                          checksum: bool, key: Option<u32>, seq: Option<u32>, payload in proptest::collection::vec(any::<u8>(), 0..40)) {
        let r = GreRepr { protocol: proto, checksum, key, seq };
        let mut b = vec![0xa5u8; r.buffer_len() + payload.len()];
        let mut p = gre::Packet::new_unchecked(&mut b[..]);
        r.emit(&mut p);
        p.payload_mut().copy_from_slice(&payload);
        p.fill_checksum();
        let p = gre::Packet::new_checked(&b[..]).unwrap();
        prop_assert_eq!(GreRepr::parse(&p, true).unwrap(), r);
        prop_assert_eq!(p.payload(), &payload[..]);
    }
}

/// Up to three options, critical or not, of 0-16 bytes of data each.
fn geneve_options() -> impl Strategy<Value = Vec<(u16, u8, Vec<u8>)>> {
    proptest::collection::vec(
        (
            any::<u16>(),
            any::<u8>(),
            (0usize..=4).prop_flat_map(|w| proptest::collection::vec(any::<u8>(), w * 4)),
        ),
        0..=3,
    )
}

fn encode_options(opts: &[(u16, u8, Vec<u8>)]) -> Vec<u8> {
    let mut o = GeneveOptions::default();
    for (c, t, d) in opts {
        o.push(*c, *t, d).unwrap();
    }
    o.as_bytes().to_vec()
}

/// A random inner Ethernet frame: IPv4, IPv6 (with UDP or TCP ports) or non-IP.
fn inner_frame() -> impl Strategy<Value = Vec<u8>> {
    let l4 = (any::<u16>(), any::<u16>(), proptest::collection::vec(any::<u8>(), 0..1300));
    (0u8..3, any::<u8>(), 1u8..=255, any::<bool>(), l4, any::<bool>()).prop_map(
        |(kind, tos, ttl, df, (sp, dp, body), tcp)| {
            let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
            let proto = if tcp { 6 } else { 17 };
            let mut l4 = sp.to_be_bytes().to_vec();
            l4.extend_from_slice(&dp.to_be_bytes());
            l4.extend_from_slice(&body);
            match kind {
                0 => {
                    f.extend_from_slice(&[0x08, 0x00]);
                    let r = Ipv4Repr {
                        src: [198, 51, 100, 1],
                        dst: [198, 51, 100, 2],
                        protocol: IpProtocol::from(proto),
                        payload_len: l4.len() as u16,
                        ttl,
                        dscp: tos >> 2,
                        ecn: tos & 3,
                        dont_frag: df,
                        ident: 7,
                    };
                    let mut h = [0u8; 20];
                    r.emit(&mut ipv4::Packet::new_unchecked(&mut h[..]));
                    f.extend_from_slice(&h);
                }
                1 => {
                    f.extend_from_slice(&[0x86, 0xdd]);
                    let mut src = [0u8; 16];
                    src[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
                    let mut dst = src;
                    dst[15] = 2;
                    let r = Ipv6Repr {
                        src,
                        dst,
                        next_header: IpProtocol::from(proto),
                        payload_len: l4.len() as u16,
                        hop_limit: ttl,
                        traffic_class: tos,
                        flow_label: 0,
                    };
                    let mut h = [0u8; 40];
                    r.emit(&mut ipv6::Packet::new_unchecked(&mut h[..]));
                    f.extend_from_slice(&h);
                }
                _ => f.extend_from_slice(&[0x08, 0x06]),
            }
            f.extend_from_slice(&l4);
            f
        },
    )
}

fn options() -> impl Strategy<Value = EncapOptions> {
    (
        prop_oneof![Just(DfMode::Set), Just(DfMode::Unset), Just(DfMode::Inherit)],
        prop_oneof![(1u8..=255).prop_map(TtlMode::Fixed), Just(TtlMode::Inherit)],
        prop_oneof![(0u8..64).prop_map(DscpMode::Fixed), Just(DscpMode::Inherit)],
        prop_oneof![Just(EcnMode::Normal), Just(EcnMode::Compat)],
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (any::<u16>(), any::<u16>()),
    )
        .prop_map(
            |(df, ttl, dscp, ecn, (udp_checksum, gre_checksum, gre_sequence), (a, b))| {
                EncapOptions {
                    df,
                    ttl,
                    dscp,
                    ecn,
                    udp_checksum,
                    gre_checksum,
                    gre_sequence,
                    src_port_min: a.min(b),
                    src_port_max: a.max(b),
                    underlay_mtu: 1500,
                }
            },
        )
}

fn tunnel() -> impl Strategy<Value = TunnelParams> {
    let encap = prop_oneof![
        (0u32..=vxlan::MAX_VNI, prop_oneof![Just(4789u16), Just(8472)])
            .prop_map(|(vni, dst_port)| Encapsulation::Vxlan { vni, dst_port }),
        any::<Option<u32>>().prop_map(|key| Encapsulation::GreTap { key }),
        any::<Option<u32>>().prop_map(|key| Encapsulation::GreL3 { key }),
        (0u32..=geneve::MAX_VNI, prop_oneof![Just(6081u16), Just(7000)], geneve_options())
            .prop_map(|(vni, dst_port, opts)| {
                let mut options = GeneveOptions::default();
                for (c, t, d) in &opts {
                    options.push(*c, *t, d).unwrap();
                }
                Encapsulation::Geneve { vni, dst_port, options }
            }),
    ];
    let mut v6a = [0u8; 16];
    v6a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    let mut v6b = v6a;
    v6a[15] = 1;
    v6b[15] = 2;
    let underlay = prop_oneof![
        Just(Underlay::V4 { src: [192, 0, 2, 1], dst: [192, 0, 2, 2] }),
        Just(Underlay::V6 { src: v6a, dst: v6b }),
    ];
    (encap, underlay, options(), proptest::option::of(1u16..4095)).prop_map(
        |(encap, underlay, options, outer_vlan)| TunnelParams {
            encap,
            underlay,
            src_mac: [0x02, 0, 0, 0, 0, 0x11],
            dst_mac: [0x02, 0, 0, 0, 0, 0x22],
            outer_vlan,
            options,
        },
    )
}

/// The receiver's view of the same tunnel, with the addresses reversed.
fn receiver(t: &TunnelParams) -> DecapConfig {
    let mut cfg = DecapConfig {
        vxlan_ports: vec![4789, 8472],
        geneve_ports: vec![6081, 7000],
        ..DecapConfig::default()
    };
    // The receiver understands (matches on) every option the sender adds.
    if let Encapsulation::Geneve { options, .. } = &t.encap {
        for o in geneve::Options::new(options.as_bytes()) {
            let o = o.unwrap();
            cfg.geneve_matches.push(GeneveOptionMatch {
                class: o.class,
                kind: o.kind,
                data: o.data.to_vec(),
            });
        }
    }
    match t.underlay {
        Underlay::V4 { dst, .. } => cfg.local_v4.push(dst),
        Underlay::V6 { dst, .. } => cfg.local_v6.push(dst),
    }
    cfg
}

/// Checks the outer headers with etherparse: IP header checksum, lengths, UDP
/// checksum (zero allowed only over IPv4 with checksums off), DF and ports.
fn check_outer(t: &TunnelParams, frame: &[u8], meta: &InnerMeta) -> Result<(), TestCaseError> {
    let p = etherparse::SlicedPacket::from_ethernet(frame)
        .map_err(|e| TestCaseError::fail(format!("etherparse refused the frame: {e}")))?;
    let o = &t.options;
    match &p.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            prop_assert_eq!(h.header_checksum, h.calc_header_checksum());
            let want_df = match o.df {
                DfMode::Set => true,
                DfMode::Unset => false,
                DfMode::Inherit => meta.df,
            };
            prop_assert_eq!(h.dont_fragment, want_df);
            prop_assert!(h.total_len as usize <= o.underlay_mtu as usize);
        }
        Some(etherparse::NetSlice::Ipv6(ip)) => {
            prop_assert_eq!(ip.header().flow_label().value(), meta.hash & 0xfffff);
        }
        _ => return Err(TestCaseError::fail("no outer IP header")),
    }
    if let Some(etherparse::TransportSlice::Udp(u)) = &p.transport {
        let (lo, hi) = (o.src_port_min, o.src_port_max);
        prop_assert!((lo..=hi).contains(&u.source_port()));
        let h = u.to_header();
        let c = u.checksum();
        match &p.net {
            Some(etherparse::NetSlice::Ipv4(ip)) => {
                if o.udp_checksum {
                    let want = h.calc_checksum_ipv4(&ip.header().to_header(), u.payload()).unwrap();
                    prop_assert_eq!(c, want);
                } else {
                    prop_assert_eq!(c, 0);
                }
            }
            Some(etherparse::NetSlice::Ipv6(ip)) => {
                let want = h.calc_checksum_ipv6(&ip.header().to_header(), u.payload()).unwrap();
                prop_assert_eq!(c, want);
                prop_assert_ne!(c, 0);
            }
            _ => unreachable!(),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decap_of_encap_is_identity(t in tunnel(), frame in inner_frame()) {
        let mut tpl = EncapTemplate::new(&t).unwrap();
        let meta = InnerMeta::parse(&frame).unwrap();
        let mut buf = vec![0xa5u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(&frame);
        let mut pkt = PacketBuf::new(&mut buf, HEADROOM, frame.len()).unwrap();
        let r = tpl.encap(&mut pkt);
        let l3_gre = matches!(t.encap, Encapsulation::GreL3 { .. });
        if l3_gre && meta.l3 == InnerL3::Other {
            prop_assert_eq!(r, Err(DropReason::InnerNotIp));
            return Ok(());
        }
        let carried = if l3_gre { frame.len() - meta.l3_offset as usize } else { frame.len() };
        if t.ip_overhead() + carried > t.options.underlay_mtu as usize {
            prop_assert_eq!(r, Err(DropReason::MtuExceeded));
            prop_assert_eq!(pkt.data(), &frame[..], "a dropped packet is left untouched");
            return Ok(());
        }
        prop_assert_eq!(r, Ok(()));
        prop_assert_eq!(pkt.len(), tpl.outer_len() + carried);
        check_outer(&t, pkt.data(), &meta)?;

        let d = decap(&receiver(&t), &mut pkt).map_err(|e| TestCaseError::fail(format!("decap: {e}")))?;
        match t.encap {
            Encapsulation::Vxlan { vni, .. } => prop_assert_eq!(d.tunnel, TunnelId::Vxlan { vni }),
            Encapsulation::Geneve { vni, options, .. } => {
                prop_assert_eq!(d.tunnel, TunnelId::Geneve { vni });
                let n = geneve::Options::new(options.as_bytes()).count();
                prop_assert_eq!(d.geneve_options, (1u32 << n) - 1, "every option matched");
            }
            Encapsulation::GreTap { key } | Encapsulation::GreL3 { key } => {
                prop_assert_eq!(d.tunnel, TunnelId::Gre { key })
            }
        }
        if l3_gre {
            // Only the IP packet crossed; it comes back behind a synthesised header.
            let ip = &frame[meta.l3_offset as usize..];
            prop_assert_eq!(&pkt.data()[14..], ip);
            let et = if meta.l3 == InnerL3::Ipv4 { [0x08, 0x00] } else { [0x86, 0xdd] };
            prop_assert_eq!(&pkt.data()[12..14], &et[..]);
        } else {
            prop_assert_eq!(pkt.data(), &frame[..]);
        }
    }

    #[test]
    fn encap_never_panics_on_garbage(t in tunnel(), frame in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut tpl = EncapTemplate::new(&t).unwrap();
        let mut buf = vec![0u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(&frame);
        let mut pkt = PacketBuf::new(&mut buf, HEADROOM, frame.len()).unwrap();
        if tpl.encap(&mut pkt).is_err() {
            prop_assert_eq!(pkt.data(), &frame[..]);
        }
    }

    #[test]
    fn decap_never_panics_on_garbage(frame in proptest::collection::vec(any::<u8>(), 0..200), strict: bool) {
        let cfg = DecapConfig {
            local_v4: vec![[192, 0, 2, 2]],
            vxlan_strict: strict,
            ..DecapConfig::default()
        };
        let mut buf = frame.clone();
        let mut pkt = PacketBuf::new(&mut buf, 0, frame.len()).unwrap();
        if decap(&cfg, &mut pkt).is_ok() {
            prop_assert!(pkt.len() >= 14);
        }
    }
}

/// VXLAN over IPv4 from 192.0.2.1 to 192.0.2.2 with default options.
fn vxlan_v4(vni: u32) -> TunnelParams {
    TunnelParams {
        encap: Encapsulation::Vxlan { vni, dst_port: 4789 },
        underlay: Underlay::V4 { src: [192, 0, 2, 1], dst: [192, 0, 2, 2] },
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        outer_vlan: None,
        options: EncapOptions::default(),
    }
}

#[test]
fn no_headroom_is_a_named_drop() {
    let t = vxlan_v4(42);
    let mut tpl = EncapTemplate::new(&t).unwrap();
    let mut buf = [0u8; 60 + 49];
    let mut pkt = PacketBuf::new(&mut buf, 49, 60).unwrap();
    assert_eq!(tpl.encap(&mut pkt), Err(DropReason::NoHeadroom));
    let mut buf = [0u8; 60 + 50];
    let mut pkt = PacketBuf::new(&mut buf, 50, 60).unwrap();
    assert_eq!(tpl.encap(&mut pkt), Ok(()));
}

#[test]
fn mtu_boundary_is_exact() {
    let mut t = vxlan_v4(42);
    t.options.underlay_mtu = 1500;
    let mut tpl = EncapTemplate::new(&t).unwrap();
    // 1500 - 20 (IPv4) - 8 (UDP) - 8 (VXLAN) = 1464 bytes of inner frame fit exactly.
    for (len, want) in [(1464usize, Ok(())), (1465, Err(DropReason::MtuExceeded))] {
        let mut buf = vec![0u8; HEADROOM + len];
        buf[HEADROOM + 12..HEADROOM + 14].copy_from_slice(&[0x88, 0xb5]);
        let mut pkt = PacketBuf::new(&mut buf, HEADROOM, len).unwrap();
        assert_eq!(tpl.encap(&mut pkt), want, "inner length {len}");
    }
}

#[test]
fn params_are_validated() {
    let base = TunnelParams {
        encap: Encapsulation::Vxlan { vni: 1 << 24, dst_port: 4789 },
        underlay: Underlay::V4 { src: [192, 0, 2, 1], dst: [192, 0, 2, 2] },
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        outer_vlan: None,
        options: EncapOptions::default(),
    };
    assert_eq!(EncapTemplate::new(&base).unwrap_err(), ParamsError::VniOutOfRange(1 << 24));
    let mut t = base;
    t.encap = Encapsulation::Vxlan { vni: 1, dst_port: 4789 };
    t.options.src_port_min = 2;
    t.options.src_port_max = 1;
    assert!(matches!(EncapTemplate::new(&t), Err(ParamsError::SrcPortRange { .. })));
    t.options = EncapOptions { underlay_mtu: 1279, ..EncapOptions::default() };
    t.underlay = Underlay::V6 { src: [0x20; 16], dst: [0x20; 16] };
    assert!(matches!(EncapTemplate::new(&t), Err(ParamsError::MtuTooSmall { min: 1280, .. })));
    assert!(ParamsError::VniOutOfRange(1 << 24).to_string().contains("16777216"));
}

#[test]
fn batch_api_gives_a_verdict_per_packet() {
    let t = vxlan_v4(7);
    let mut tpl = EncapTemplate::new(&t).unwrap();
    let mut bufs: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; HEADROOM + 64]).collect();
    let lens = [64usize, 10, 64, 64];
    let mut pkts: Vec<PacketBuf> =
        bufs.iter_mut().zip(lens).map(|(b, l)| PacketBuf::new(b, HEADROOM, l).unwrap()).collect();
    let mut v = [Ok(()); 4];
    encap_batch(&mut tpl, &mut pkts, &mut v);
    assert_eq!(v, [Ok(()), Err(DropReason::InnerTooShort), Ok(()), Ok(())]);
    let cfg = DecapConfig { local_v4: vec![[192, 0, 2, 2]], ..DecapConfig::default() };
    let mut d = [Err(DropReason::NotIp); 4];
    decap_batch(&cfg, &mut pkts, &mut d);
    assert!(d[0].is_ok() && d[2].is_ok() && d[3].is_ok());
    // the 10-byte frame was never encapsulated, so it is not a tunnel packet
    assert_eq!(d[1], Err(DropReason::EthTruncated));
}

/// Geneve's options count against the MTU: with one 8-byte option (4-byte
/// header, 4 bytes of data), 1500 - 20 (IPv4) - 8 (UDP) - 8 (Geneve) - 8 =
/// 1456 bytes of inner frame fit exactly. Same DF and source-port rules as
/// VXLAN: DF set by default, ports from the configured range.
#[test]
fn geneve_mtu_boundary_counts_the_options() {
    let mut options = GeneveOptions::default();
    options.push(0x0102, 0x80, &[0, 0, 0, 1]).unwrap();
    let mut t = vxlan_v4(42);
    t.encap = Encapsulation::Geneve { vni: 42, dst_port: 6081, options };
    t.options.src_port_min = 40000;
    t.options.src_port_max = 40003;
    assert_eq!(t.ip_overhead(), 44);
    let mut tpl = EncapTemplate::new(&t).unwrap();
    for (len, want) in [(1456usize, Ok(())), (1457, Err(DropReason::MtuExceeded))] {
        let mut buf = vec![0u8; HEADROOM + len];
        buf[HEADROOM + 12..HEADROOM + 14].copy_from_slice(&[0x88, 0xb5]);
        let mut pkt = PacketBuf::new(&mut buf, HEADROOM, len).unwrap();
        assert_eq!(tpl.encap(&mut pkt), want, "inner length {len}");
        if want.is_ok() {
            let f = pkt.data();
            assert_eq!(u16::from_be_bytes([f[16], f[17]]), 1500, "outer IPv4 total length");
            assert_eq!(f[20] & 0x40, 0x40, "DF set by default");
            let sport = u16::from_be_bytes([f[34], f[35]]);
            assert!((40000..=40003).contains(&sport), "source port {sport}");
            assert_eq!(&f[42..46], &[0x02, 0x40, 0x65, 0x58], "opt len 2 words, C bit, Ethernet");
        }
    }
}
