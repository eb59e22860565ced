//! The encap crate against the Linux kernel's own VXLAN device, at the wire
//! level: frames encapsulated by `EncapTemplate` are injected at a kernel VTEP,
//! which must decapsulate them and answer the inner ping; the kernel's
//! encapsulated replies are captured and must decapsulate with `encap::decap`
//! to a valid echo reply. IPv4 underlay (UDP checksum off and on) and IPv6
//! underlay (checksum mandatory both ways).

use std::time::Duration;

use encap::*;
use netns_tests::*;

const VNI: u32 = 42;
const WL_LOCAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const WL_PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const PINGS: u16 = 5;

struct Case {
    name: &'static str,
    v6: bool,
    udp_checksum: bool,
}

fn run_case(case: &Case) {
    // inj (our frames) --veth-- kv (kernel VXLAN VTEP with the peer workload's address)
    let inj = Netns::new("inj");
    let kv = Netns::new("kvx");
    let (i0, k0) = (unique("vi"), unique("vk"));
    veth(&inj, &i0, &kv, &k0);
    let (inj_ip, kv_ip, plen, fam) = if case.v6 {
        ("2001:db8::1", "2001:db8::2", "64", "-6")
    } else {
        ("192.0.2.1", "192.0.2.2", "24", "-4")
    };
    inj.ip(&[fam, "addr", "add", &format!("{inj_ip}/{plen}"), "dev", &i0, "nodad"]);
    kv.ip(&[fam, "addr", "add", &format!("{kv_ip}/{plen}"), "dev", &k0, "nodad"]);
    let mut vx = vec![
        "link", "add", "vx0", "type", "vxlan", "id", "42", "local", kv_ip, "remote", inj_ip,
        "dstport", "4789", "dev", &k0,
    ];
    // Say it explicitly: kernels differ in their default.
    if !case.v6 {
        vx.push(if case.udp_checksum { "udpcsum" } else { "noudpcsum" });
    }
    kv.ip(&vx);
    // veth leaves offloaded checksums partial (a NIC would fill them in): make the
    // kernel compute them, so what we capture is what a wire would carry.
    finish_checksums_like_a_nic(&kv, &k0);
    kv.exec(&["sysctl", "-qw", "net.ipv6.conf.vx0.disable_ipv6=1"]);
    kv.ip(&["link", "set", "vx0", "address", "02:00:00:00:00:02", "up"]);
    kv.ip(&["addr", "add", "198.51.100.2/24", "dev", "vx0"]);
    kv.ip(&[
        "neigh",
        "add",
        "198.51.100.1",
        "lladdr",
        "02:00:00:00:00:01",
        "dev",
        "vx0",
        "nud",
        "permanent",
    ]);
    // The kernel must be able to reach us on the underlay without asking.
    let i0_mac = inj.mac(&i0);
    kv.ip(&["neigh", "replace", inj_ip, "lladdr", &i0_mac, "dev", &k0, "nud", "permanent"]);

    let underlay = if case.v6 {
        let a: std::net::Ipv6Addr = inj_ip.parse().unwrap();
        let b: std::net::Ipv6Addr = kv_ip.parse().unwrap();
        Underlay::V6 { src: a.octets(), dst: b.octets() }
    } else {
        let a: std::net::Ipv4Addr = inj_ip.parse().unwrap();
        let b: std::net::Ipv4Addr = kv_ip.parse().unwrap();
        Underlay::V4 { src: a.octets(), dst: b.octets() }
    };
    let params = TunnelParams {
        encap: Encapsulation::Vxlan { vni: VNI, dst_port: 4789 },
        underlay,
        src_mac: mac_bytes(&i0_mac),
        dst_mac: mac_bytes(&kv.mac(&k0)),
        outer_vlan: None,
        options: EncapOptions { udp_checksum: case.udp_checksum, ..EncapOptions::default() },
    };
    let mut tpl = EncapTemplate::new(&params).unwrap();
    let frames: Vec<Vec<u8>> = (1..=PINGS)
        .map(|seq| {
            let inner =
                echo_request(WL_LOCAL_MAC, WL_PEER_MAC, [198, 51, 100, 1], [198, 51, 100, 2], seq);
            let mut buf = vec![0u8; 128 + inner.len()];
            buf[128..].copy_from_slice(&inner);
            let mut p = PacketBuf::new(&mut buf, 128, inner.len()).unwrap();
            tpl.encap(&mut p).unwrap();
            p.data().to_vec()
        })
        .collect();

    let dir = TempDir::new("kvx");
    let pcap = dir.join("replies.pcap");
    let filter = format!("udp dst port 4789 and dst host {inj_ip}");
    let cap = Capture::start(&inj, &i0, &filter, &pcap, 50, 10);
    inject(&inj, &i0, &frames);
    std::thread::sleep(Duration::from_millis(800));
    let file = cap.finish();
    let records = read_pcap(&file);

    let mut rx = DecapConfig::default();
    match params.underlay {
        Underlay::V4 { src, .. } => rx.local_v4.push(src),
        Underlay::V6 { src, .. } => rx.local_v6.push(src),
    }
    let mut seqs = Vec::new();
    for r in records {
        let mut data = r.clone();
        let len = data.len();
        let mut p = PacketBuf::new(&mut data, 0, len).unwrap();
        let d = decap(&rx, &mut p)
            .unwrap_or_else(|e| panic!("{}: decap of the kernel's reply: {e}", case.name));
        assert_eq!(d.tunnel, TunnelId::Vxlan { vni: VNI });
        assert!(d.src_port >= 1024, "kernel picks an ephemeral source port");
        let udp_csum = u16::from_be_bytes([r[40], r[41]]);
        if !case.v6 {
            assert_eq!(
                udp_csum != 0,
                case.udp_checksum,
                "{}: kernel UDP checksum {udp_csum:#x}",
                case.name
            );
        }
        let inner = p.data();
        // Only the pings' replies count; anything else the kernel sends through
        // the tunnel (IPv6 neighbour discovery, say) must still decapsulate.
        if inner[12..14] == [0x08, 0x00] && inner.len() > 34 && inner[14 + 9] == 1 {
            assert_eq!(&inner[0..6], &WL_LOCAL_MAC, "reply goes to the workload's MAC");
            seqs.push(check_echo_reply(inner, [198, 51, 100, 2], [198, 51, 100, 1]));
        }
    }
    seqs.sort();
    assert_eq!(
        seqs,
        (1..=PINGS).collect::<Vec<_>>(),
        "{}: echo replies from the kernel",
        case.name
    );
}

#[test]
fn encap_crate_interoperates_with_the_kernel_vxlan_device() {
    if !require_root("kernel_vxlan_wire") {
        return;
    }
    require_program("tshark");
    for case in [
        Case { name: "IPv4 underlay, no UDP checksum", v6: false, udp_checksum: false },
        Case { name: "IPv4 underlay, UDP checksum", v6: false, udp_checksum: true },
        Case { name: "IPv6 underlay", v6: true, udp_checksum: true },
    ] {
        run_case(&case);
    }
}
