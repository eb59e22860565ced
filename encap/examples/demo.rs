//! A walk through the encap crate on built-in frames: encapsulate a workload's
//! ping into VXLAN, gretap and L3 GRE, decapsulate it again, and show what
//! happens to packets that break the wire rules.
//!
//! `cargo run -p encap --example demo`

use encap::wire::ethernet::EtherType;
use encap::*;

const HEADROOM: usize = 128;

/// 198.51.100.1 -> 198.51.100.2 ICMP echo request, ECT(0), TTL 64, DF.
fn inner_ping() -> Vec<u8> {
    let mut f = vec![
        0x02, 0, 0, 0, 0, 0xb2, 0x02, 0, 0, 0, 0, 0xa1, 0x08, 0x00, // Ethernet
        0x45, 0x02, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0x00, 0x00, // IPv4
        198, 51, 100, 1, 198, 51, 100, 2, //
        0x08, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, // ICMP echo
    ];
    f.resize(14 + 84, 0x61);
    let c = wire::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

fn hex(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| c.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n    ")
}

fn tunnel(encap: Encapsulation) -> TunnelParams {
    TunnelParams {
        encap,
        underlay: Underlay::V4 { src: [192, 0, 2, 1], dst: [192, 0, 2, 2] },
        src_mac: [0x02, 0, 0, 0, 0, 0x01],
        dst_mac: [0x02, 0, 0, 0, 0, 0x02],
        outer_vlan: None,
        options: EncapOptions { gre_sequence: true, ..EncapOptions::default() },
    }
}

fn main() {
    let frame = inner_ping();
    let rx = DecapConfig { local_v4: vec![[192, 0, 2, 2]], ..DecapConfig::default() };
    println!("inner frame ({} bytes): workload 198.51.100.1 pings 198.51.100.2\n", frame.len());

    for (name, e) in [
        ("VXLAN VNI 42 over IPv4", Encapsulation::Vxlan { vni: 42, dst_port: 4789 }),
        ("gretap key 7 over IPv4", Encapsulation::GreTap { key: Some(7) }),
        ("L3 GRE over IPv4", Encapsulation::GreL3 { key: None }),
    ] {
        let mut tpl = EncapTemplate::new(&tunnel(e)).expect("valid tunnel");
        let mut buf = vec![0u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(&frame);
        let mut pkt = PacketBuf::new(&mut buf, HEADROOM, frame.len()).unwrap();
        tpl.encap(&mut pkt).expect("encap");
        println!("== {name}: {} bytes on the wire, outer header:", pkt.len());
        println!("    {}", hex(&pkt.data()[..tpl.outer_len()]));
        let d = decap(&rx, &mut pkt).expect("decap");
        let same = if d.payload == EtherType::TransEther {
            pkt.data() == &frame[..]
        } else {
            pkt.data()[14..] == frame[14..]
        };
        println!(
            "   decap: tunnel {:?} from {}, payload {:?}, inner frame identical: {same}\n",
            d.tunnel, d.remote, d.payload
        );
    }

    println!("== what is refused, and why");
    let mut tpl = EncapTemplate::new(&tunnel(Encapsulation::Vxlan { vni: 42, dst_port: 4789 }))
        .expect("valid tunnel");
    let good = {
        let mut buf = vec![0u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(&frame);
        let mut pkt = PacketBuf::new(&mut buf, HEADROOM, frame.len()).unwrap();
        tpl.encap(&mut pkt).unwrap();
        pkt.data().to_vec()
    };
    type Mangle = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: [(&str, Mangle); 5] = [
        ("VXLAN I flag cleared", Box::new(|f| f[42] = 0)),
        ("outer IPv4 checksum corrupted", Box::new(|f| f[24] ^= 0xff)),
        (
            "addressed to 192.0.2.99",
            Box::new(|f| {
                f[33] = 99;
                f[24..26].copy_from_slice(&[0, 0]);
                let c = wire::checksum::checksum(&f[14..34]);
                f[24..26].copy_from_slice(&c.to_be_bytes());
            }),
        ),
        ("frame cut short of its IP length", Box::new(|f| f.truncate(46))),
        (
            "outer CE over a Not-ECT inner packet",
            Box::new(|f| {
                f[15] |= 3; // outer CE
                f[24..26].copy_from_slice(&[0, 0]);
                let c = wire::checksum::checksum(&f[14..34]);
                f[24..26].copy_from_slice(&c.to_be_bytes());
                f[50 + 15] &= !3; // inner Not-ECT
            }),
        ),
    ];
    for (what, mangle) in cases {
        let mut f = good.clone();
        mangle(&mut f);
        let len = f.len();
        let mut pkt = PacketBuf::new(&mut f, 0, len).unwrap();
        match decap(&rx, &mut pkt) {
            Ok(_) => println!("   {what:40} -> accepted"),
            Err(r) => println!("   {what:40} -> drop {:22} {}", r.name(), r.description()),
        }
    }
}
