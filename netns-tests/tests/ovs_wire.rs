//! The encap crate against Open vSwitch's userspace tunnels (datapath_type=netdev),
//! at the wire level. This kernel has no GRE or Geneve module, so OVS is the
//! GRE and Geneve peer.
//!
//! Frames encapsulated by `EncapTemplate` are injected at OVS's VTEP; OVS must
//! decapsulate them and deliver the inner ping to its bridge's own address,
//! whose kernel answers; OVS encapsulates the reply, and `encap::decap` must
//! turn it back into a valid echo reply.

use std::time::Duration;

use encap::*;
use netns_tests::*;

const PINGS: u16 = 3;
const WL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const WL_IP: [u8; 4] = [198, 51, 100, 1];
const OVS_WL_IP: [u8; 4] = [198, 51, 100, 2];

struct Case {
    name: &'static str,
    /// OVS interface type and options.
    ovs_type: &'static str,
    ovs_options: &'static [&'static str],
    encap: Encapsulation,
    gre_checksum: bool,
}

fn run_case(c: &Case) {
    let inj = Netns::new("oinj");
    let ons = Netns::new("ovs");
    let (i0, o0) = (unique("vi"), unique("vo"));
    veth(&inj, &i0, &ons, &o0);
    inj.ip(&["addr", "add", "192.0.2.1/24", "dev", &i0]);
    // Let OVS's side compute checksums itself (veth would leave them partial).
    finish_checksums_like_a_nic(&ons, &o0);
    let ovs = Ovs::start(&ons);
    ovs.vsctl(&["add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev"]);
    let mut port = vec![
        "add-port".to_string(),
        "br-int".into(),
        "tun0".into(),
        "--".into(),
        "set".into(),
        "interface".into(),
        "tun0".into(),
        format!("type={}", c.ovs_type),
        "options:remote_ip=192.0.2.1".into(),
        "options:local_ip=192.0.2.2".into(),
    ];
    port.extend(c.ovs_options.iter().map(|s| s.to_string()));
    ovs.vsctl(&port.iter().map(String::as_str).collect::<Vec<_>>());
    let hw = format!("other_config:hwaddr={}", ons.mac(&o0));
    ovs.vsctl(&["add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev", &hw]);
    ovs.vsctl(&["add-port", "br-phy", &o0]);
    ons.ip(&["addr", "add", "192.0.2.2/24", "dev", "br-phy"]);
    ons.ip(&["link", "set", "br-phy", "up"]);
    ons.ip(&["addr", "add", "198.51.100.2/24", "dev", "br-int"]);
    ons.ip(&["link", "set", "br-int", "up"]);
    ons.ip(&[
        "neigh",
        "replace",
        "198.51.100.1",
        "lladdr",
        "02:00:00:00:00:01",
        "dev",
        "br-int",
        "nud",
        "permanent",
    ]);
    let i0_mac = inj.mac(&i0);
    ovs.appctl(&["tnl/neigh/set", "br-phy", "192.0.2.1", &i0_mac]);
    let br_int_mac = mac_bytes(&ons.mac("br-int"));

    let params = TunnelParams {
        encap: c.encap,
        underlay: Underlay::V4 { src: [192, 0, 2, 1], dst: [192, 0, 2, 2] },
        src_mac: mac_bytes(&i0_mac),
        dst_mac: mac_bytes(&ons.mac(&o0)),
        outer_vlan: None,
        options: EncapOptions { gre_checksum: c.gre_checksum, ..EncapOptions::default() },
    };
    let mut tpl = EncapTemplate::new(&params).unwrap();
    let frames: Vec<Vec<u8>> = (1..=PINGS)
        .map(|seq| {
            let inner = echo_request(WL_MAC, br_int_mac, WL_IP, OVS_WL_IP, seq);
            let mut buf = vec![0u8; 128 + inner.len()];
            buf[128..].copy_from_slice(&inner);
            let mut p = PacketBuf::new(&mut buf, 128, inner.len()).unwrap();
            tpl.encap(&mut p).unwrap();
            p.data().to_vec()
        })
        .collect();

    let dir = TempDir::new("ovsw");
    let pcap = dir.join("replies.pcap");
    let filter = "(ip proto 47 or udp dst port 4789 or udp dst port 6081) and src host 192.0.2.2";
    let cap = Capture::start(&inj, &i0, filter, &pcap, 50, 10);
    // OVS sets up its datapath flows on the first packets: give it a moment
    // between pings rather than a burst.
    for f in &frames {
        inject(&inj, &i0, std::slice::from_ref(f));
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let file = cap.finish();

    let rx = DecapConfig { local_v4: vec![[192, 0, 2, 1]], ..DecapConfig::default() };
    let mut seqs = Vec::new();
    for mut data in read_pcap(&file) {
        let len = data.len();
        let mut p = PacketBuf::new(&mut data, 0, len).unwrap();
        let d =
            decap(&rx, &mut p).unwrap_or_else(|e| panic!("{}: decap of OVS's packet: {e}", c.name));
        let want = match c.encap {
            Encapsulation::Vxlan { vni, .. } => TunnelId::Vxlan { vni },
            Encapsulation::Geneve { vni, .. } => TunnelId::Geneve { vni },
            Encapsulation::GreTap { key } | Encapsulation::GreL3 { key } => TunnelId::Gre { key },
        };
        assert_eq!(d.tunnel, want, "{}", c.name);
        let inner = p.data();
        // OVS also floods the bridge's own IPv6 neighbour discovery; count the pings.
        if inner[12..14] == [0x08, 0x00] && inner.len() > 34 && inner[14 + 9] == 1 {
            seqs.push(check_echo_reply(inner, OVS_WL_IP, WL_IP));
        }
    }
    seqs.sort();
    assert_eq!(seqs, (1..=PINGS).collect::<Vec<_>>(), "{}: echo replies through OVS", c.name);
}

/// One experimental-class option (RFC 8926 section 7: 0xfff0-0xffff), not critical.
fn geneve_option() -> GeneveOptions {
    let mut o = GeneveOptions::default();
    o.push(0xfff0, 0x01, &[0xca, 0xfe, 0xf0, 0x0d]).unwrap();
    o
}

#[test]
fn encap_crate_interoperates_with_open_vswitch_tunnels() {
    if !require_root("ovs_wire") {
        return;
    }
    require_program("tshark");
    let cases = [
        Case {
            name: "gretap without key",
            ovs_type: "gre",
            ovs_options: &[],
            encap: Encapsulation::GreTap { key: None },
            gre_checksum: false,
        },
        Case {
            name: "gretap key 7",
            ovs_type: "gre",
            ovs_options: &["options:key=7"],
            encap: Encapsulation::GreTap { key: Some(7) },
            gre_checksum: false,
        },
        Case {
            name: "gretap key and checksum",
            ovs_type: "gre",
            ovs_options: &["options:key=9", "options:csum=true"],
            encap: Encapsulation::GreTap { key: Some(9) },
            gre_checksum: true,
        },
        Case {
            name: "NVGRE key layout (VSID 5000, flow 0)",
            ovs_type: "gre",
            ovs_options: &["options:key=1280000"],
            encap: Encapsulation::GreTap { key: Some(wire::gre::nvgre_key(5000, 0)) },
            gre_checksum: false,
        },
        Case {
            name: "VXLAN VNI 42",
            ovs_type: "vxlan",
            ovs_options: &["options:key=42"],
            encap: Encapsulation::Vxlan { vni: 42, dst_port: 4789 },
            gre_checksum: false,
        },
        Case {
            name: "Geneve VNI 42",
            ovs_type: "geneve",
            ovs_options: &["options:key=42"],
            encap: Encapsulation::Geneve {
                vni: 42,
                dst_port: 6081,
                options: GeneveOptions::default(),
            },
            gre_checksum: false,
        },
        Case {
            name: "Geneve VNI 43 with a non-critical option OVS does not map",
            ovs_type: "geneve",
            ovs_options: &["options:key=43"],
            encap: Encapsulation::Geneve { vni: 43, dst_port: 6081, options: geneve_option() },
            gre_checksum: false,
        },
    ];
    for c in &cases {
        run_case(c);
    }
}
