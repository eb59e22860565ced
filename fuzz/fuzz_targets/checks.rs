//! The fuzz targets' bodies. Shared by the cargo-fuzz binaries and by
//! encap/tests/fuzz_corpus.rs, which runs the committed seed corpus through the
//! same checks in every test run.
//!
//! Each target must never panic on any input, and where a value parses, emitting
//! it and parsing again must give the same value back.

#![allow(dead_code)]

use encap::wire::ethernet::{self, EthernetRepr};
use encap::wire::geneve::{self, GeneveRepr};
use encap::wire::gre::{self, GreRepr};
use encap::wire::ipv4::{self, Ipv4Repr};
use encap::wire::ipv6::{self, Ipv6Repr};
use encap::wire::l2;
use encap::wire::udp::{self, UdpRepr};
use encap::wire::vxlan::{self, VxlanRepr};
use encap::*;

pub fn ethernet(data: &[u8]) {
    // The tag walker, under both rules: its offset is inside the frame and
    // agrees with the tags it counted.
    for rule in [l2::TagRule::UpToTwo, l2::TagRule::XdpSteer] {
        if let Ok(h) = l2::walk_with(data, rule) {
            assert_eq!(h.l3_offset, ethernet::HEADER_LEN + ethernet::TAG_LEN * h.tags as usize);
            assert!(h.l3_offset <= data.len());
        }
    }
    if let Ok(f) = ethernet::Frame::new_checked(data) {
        let r = EthernetRepr::parse(&f).expect("checked frame parses");
        let mut b = [0u8; ethernet::HEADER_LEN];
        r.emit(&mut ethernet::Frame::new_unchecked(&mut b[..]));
        assert_eq!(EthernetRepr::parse(&ethernet::Frame::new_unchecked(&b[..])).unwrap(), r);
        if let Ok(t) = ethernet::VlanTag::new_checked(f.payload()) {
            let _ = (t.pcp(), t.dei(), t.vlan_id(), t.ethertype());
        }
    }
}

pub fn ipv4(data: &[u8]) {
    let Ok(p) = ipv4::Packet::new_checked(data) else { return };
    let _ =
        (p.version(), p.dscp(), p.ecn(), p.ident(), p.frag_offset(), p.more_frags(), p.checksum());
    let payload = p.payload().to_vec();
    if let Ok(r) = Ipv4Repr::parse(&p) {
        let mut b = vec![0u8; 20 + r.payload_len as usize];
        let mut q = ipv4::Packet::new_unchecked(&mut b[..]);
        r.emit(&mut q);
        q.payload_mut().copy_from_slice(&payload);
        assert_eq!(Ipv4Repr::parse(&ipv4::Packet::new_checked(&b[..]).unwrap()).unwrap(), r);
    }
}

pub fn ipv6(data: &[u8]) {
    let Ok(p) = ipv6::Packet::new_checked(data) else { return };
    let _ = (p.flow_label(), p.dscp(), p.ecn(), p.payload().len());
    if let Ok(r) = Ipv6Repr::parse(&p) {
        let mut b = vec![0u8; 40 + r.payload_len as usize];
        r.emit(&mut ipv6::Packet::new_unchecked(&mut b[..]));
        assert_eq!(Ipv6Repr::parse(&ipv6::Packet::new_checked(&b[..]).unwrap()).unwrap(), r);
    }
}

pub fn udp(data: &[u8]) {
    let Ok(p) = udp::Packet::new_checked(data) else { return };
    let r = UdpRepr::parse(&p).expect("checked datagram parses");
    let mut b = vec![0u8; data.len()];
    r.emit(&mut udp::Packet::new_unchecked(&mut b[..]), data.len() - 8);
    assert_eq!(UdpRepr::parse(&udp::Packet::new_checked(&b[..]).unwrap()).unwrap(), r);
}

pub fn vxlan(data: &[u8]) {
    let Ok(p) = vxlan::Packet::new_checked(data) else { return };
    let _ = (p.flags(), p.has_reserved_bits(), p.payload().len());
    for strict in [false, true] {
        if let Ok(r) = VxlanRepr::parse(&p, strict) {
            let mut b = [0u8; 8];
            r.emit(&mut vxlan::Packet::new_unchecked(&mut b[..]));
            assert_eq!(VxlanRepr::parse(&vxlan::Packet::new_unchecked(&b[..]), true).unwrap(), r);
        }
    }
}

pub fn geneve(data: &[u8]) {
    let Ok(p) = geneve::Packet::new_checked(data) else { return };
    let _ = (p.version(), p.is_control(), p.has_critical(), p.has_reserved_bits(), p.protocol());
    // The option walk stays inside the option area and stops after an error.
    let mut walked = 0;
    let mut errors = 0;
    for o in p.option_iter() {
        match o {
            Ok(o) => walked += o.wire_len(),
            Err(_) => errors += 1,
        }
    }
    assert!(errors <= 1 && walked <= p.options_len());
    if let Ok(r) = GeneveRepr::parse(&p) {
        assert_eq!(walked, p.options_len(), "a parsed header's options fill the area");
        let payload = p.payload();
        let mut b = vec![0u8; r.buffer_len() + payload.len()];
        r.emit(&mut geneve::Packet::new_unchecked(&mut b[..]));
        b[r.buffer_len()..].copy_from_slice(payload);
        let q = geneve::Packet::new_checked(&b[..]).unwrap();
        assert_eq!(GeneveRepr::parse(&q).unwrap(), r);
        assert_eq!(q.payload(), payload);
    }
}

pub fn gre(data: &[u8]) {
    let Ok(p) = gre::Packet::new_checked(data) else { return };
    let _ = (p.checksum(), p.key(), p.seq(), p.version(), p.protocol(), p.payload().len());
    if let Ok(r) = GreRepr::parse(&p, false) {
        let payload = p.payload().to_vec();
        let mut b = vec![0u8; r.buffer_len() + payload.len()];
        let mut q = gre::Packet::new_unchecked(&mut b[..]);
        r.emit(&mut q);
        q.payload_mut().copy_from_slice(&payload);
        q.fill_checksum();
        assert_eq!(GreRepr::parse(&gre::Packet::new_checked(&b[..]).unwrap(), true).unwrap(), r);
    }
}

pub fn inner_meta(data: &[u8]) {
    if let Ok(m) = InnerMeta::parse(data) {
        assert!((m.l3_offset as usize) <= data.len());
    }
}

fn receiver(strict: bool) -> DecapConfig {
    DecapConfig {
        local_v4: vec![[192, 0, 2, 1]],
        local_v6: vec![{
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            a[15] = 1;
            a
        }],
        vxlan_ports: vec![4789, 8472],
        vxlan_strict: strict,
        // OVN's critical option is understood (and matched on one value).
        geneve_matches: vec![GeneveOptionMatch {
            class: 0x0102,
            kind: 0x80,
            data: vec![0, 0, 0, 1],
        }],
        ..DecapConfig::default()
    }
}

pub fn decap(data: &[u8]) {
    for strict in [false, true] {
        let mut b = data.to_vec();
        let mut p = PacketBuf::new(&mut b, 0, data.len()).unwrap();
        if encap::decap(&receiver(strict), &mut p).is_ok() {
            assert!(p.len() >= 14 && p.head() + p.len() <= data.len());
        }
    }
}

/// The first bytes choose the tunnel and its options; the rest is the inner frame.
pub fn encap_roundtrip(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let (sel, frame) = data.split_at(4);
    let key = (sel[1] & 1 == 1).then_some(u32::from_be_bytes([sel[0], sel[1], sel[2], sel[3]]));
    let encap = match sel[0] % 4 {
        0 => Encapsulation::Vxlan {
            vni: u32::from_be_bytes([0, sel[1], sel[2], sel[3]]),
            dst_port: 4789,
        },
        1 => Encapsulation::GreTap { key },
        2 => Encapsulation::GreL3 { key },
        _ => {
            // Options the receiver understands: none, or OVN's critical one.
            let mut options = GeneveOptions::default();
            if sel[1] & 2 == 2 {
                options.push(0x0102, 0x80, sel).unwrap();
            }
            Encapsulation::Geneve {
                vni: u32::from_be_bytes([0, sel[1], sel[2], sel[3]]),
                dst_port: 6081,
                options,
            }
        }
    };
    let v6 = sel[2] & 1 == 1;
    let mut dst6 = [0u8; 16];
    dst6[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
    let mut src6 = dst6;
    dst6[15] = 1;
    src6[15] = 2;
    let t = TunnelParams {
        encap,
        underlay: if v6 {
            Underlay::V6 { src: src6, dst: dst6 }
        } else {
            Underlay::V4 { src: [192, 0, 2, 2], dst: [192, 0, 2, 1] }
        },
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        outer_vlan: (sel[3] & 2 == 2).then_some(100),
        options: EncapOptions {
            df: [DfMode::Set, DfMode::Unset, DfMode::Inherit][(sel[3] as usize >> 2) % 3],
            ttl: if sel[3] & 16 == 0 { TtlMode::Fixed(64) } else { TtlMode::Inherit },
            dscp: if sel[3] & 32 == 0 { DscpMode::Fixed(10) } else { DscpMode::Inherit },
            ecn: if sel[3] & 64 == 0 { EcnMode::Normal } else { EcnMode::Compat },
            udp_checksum: sel[2] & 2 == 2,
            gre_checksum: sel[2] & 4 == 4,
            gre_sequence: sel[2] & 8 == 8,
            ..EncapOptions::default()
        },
    };
    let mut tpl = EncapTemplate::new(&t).expect("valid parameters");
    let mut b = vec![0u8; 256 + frame.len()];
    b[256..].copy_from_slice(frame);
    let mut p = PacketBuf::new(&mut b, 256, frame.len()).unwrap();
    let Ok(()) = tpl.encap(&mut p) else {
        assert_eq!(p.data(), frame, "a refused frame is left untouched");
        return;
    };
    let d = encap::decap(&receiver(false), &mut p);
    let meta = InnerMeta::parse(frame).expect("encap accepted it");
    match d {
        // Outer CE can only come from a CE inner header, which decap keeps.
        Ok(_) if matches!(encap, Encapsulation::GreL3 { .. }) => {
            assert_eq!(&p.data()[14..], &frame[meta.l3_offset as usize..])
        }
        Ok(_) => assert_eq!(p.data(), frame),
        Err(e) => panic!("decap refused what encap built: {e}"),
    }
}
