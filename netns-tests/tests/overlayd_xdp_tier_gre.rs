//! GRE encapsulation in the XDP tier with real traffic, against Open
//! vSwitch's userspace GRE port (datapath_type=netdev; this kernel has no
//! GRE module): an established UDP flow from workload A is encapsulated by
//! the tier (its hits grow, the AF_XDP socket's receive count does not),
//! OVS delivers every packet to workload B, tshark finds each GRE header
//! right (key, protocol, and the checksum where one is sent).
//!
//! The hosts: `netns_tests::one_tunnel::OvsGre`.

use std::time::Duration;

use netns_tests::one_tunnel::{OvsGre, OvsGreOpts, TierMode};
use netns_tests::*;

struct Case {
    name: &'static str,
    /// overlayd's tunnel: type and options (TOML).
    tunnel: &'static str,
    ovs_options: &'static [&'static str],
    key: u32,
    csum: bool,
    l3: bool,
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn why(d: &Overlayd) -> String {
    format!("status: {:#}\ncounters: {:#}\nlog:\n{}", d.status(), d.counters(), d.log())
}

/// The sequence numbers of the test packets in `frames` at `inner` bytes
/// in (an IPv4 packet's start less 14: 0 for plain frames).
fn sequence(frames: &[Vec<u8>], inner: usize) -> Vec<u32> {
    frames
        .iter()
        .filter_map(|f| {
            let p = f.get(inner + 42..inner + 54)?;
            (&p[..8] == b"ovltierg").then(|| u32::from_be_bytes([p[8], p[9], p[10], p[11]]))
        })
        .collect()
}

fn gre_flow_in_the_tier(c: &Case) {
    let rule = "\n[[rules]]\nid = 11\npriority = 100\nmatch = { in_port = \"wl\", ip_proto = 17, l4_dst = 9000 }\nactions = [{ encap = \"to-peer\" }]\n";
    let OvsGre { ha, hb, wa, wb, ub, wbe, d, ovs: _ovs, .. } = OvsGre::start(&OvsGreOpts {
        prefix: "tiergre",
        tunnel: c.tunnel,
        ovs_options: c.ovs_options,
        l3: c.l3,
        encap_match: if c.l3 { ", ethertype = 0x0800" } else { "" },
        decap_actions: "",
        extra: rule,
        tier: TierMode::Auto,
    });
    let sink = Background::spawn(
        wb.command(&[
            "python3",
            "-c",
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('198.51.100.2', 9000))\nwhile True: s.recv(4096)",
        ]),
        "udp sink",
    );
    let ok = wait_until(Duration::from_secs(5), || {
        let st = d.status();
        let ports = st["io"]["tier"]["ports"].as_array().cloned().unwrap_or_default();
        ports.iter().any(|p| p["port"] == "up" && p["not_output"].is_null())
    });
    assert!(ok, "{}: up is not a tier output: {}", c.name, why(&d));

    let dir = TempDir::new("tierwireg");
    let (under, at_b) = (dir.join("underlay.pcap"), dir.join("wb.pcap"));
    let cap = Capture::start(&hb, &ub, "ip proto 47", &under, 100_000, 60);
    let cap_b = Capture::start(&wb, &wbe, "udp port 9000", &at_b, 100_000, 60);
    let before = d.settled_counters();
    std::thread::sleep(Duration::from_millis(600)); // socket statistics published
    let st = d.status();
    let rx0 = u(&st["io"]["ports"][0]["sockets"][0]["rx_packets"]);
    let hits0 = u(&st["io"]["tier"]["hits"]);
    const N: u32 = 2000;
    const PY: &str = r#"
import socket, struct, sys, time
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.1", 20000))
for i in range(n):
    s.sendto(b"ovltierg" + struct.pack(">I", i) + b"y" * (i % 37), ("198.51.100.2", 9000))
    time.sleep(0.0005)
"#;
    let n = N.to_string();
    let mut s = Background::spawn(wa.command(&["python3", "-c", PY, &n]), "udp sender");
    assert!(s.wait_timeout(Duration::from_secs(60)).is_some_and(|s| s.success()), "sender failed");
    let after = d.settled_counters();
    std::thread::sleep(Duration::from_millis(600));
    let (file, file_b) = (cap.finish(), cap_b.finish());
    drop(sink);

    let mut got = sequence(&read_pcap(&file_b), 0);
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "{}: B did not get every packet once", c.name);
    let fields = ["gre.key", "gre.proto", "gre.checksum.status", "ip.checksum.status"];
    let rows = tshark_fields(&file, "gre && ip.src == 192.0.2.1 && udp.dstport == 9000", &fields);
    assert_eq!(rows.len(), N as usize, "{}: {rows:?}", c.name);
    let proto = if c.l3 { "0x0800" } else { "0x6558" };
    for row in &rows {
        let key = match row[0].strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => row[0].parse().ok(),
        };
        assert_eq!(key, Some(c.key), "{}: {row:?}", c.name);
        assert_eq!(row[1], proto, "{}: {row:?}", c.name);
        if c.csum {
            assert_eq!(row[2], "1", "{}: GRE checksum not good: {row:?}", c.name);
        }
        assert_eq!(row[3], "1", "{}: outer IPv4 checksum not good: {row:?}", c.name);
    }

    let st = d.status();
    let hits = u(&st["io"]["tier"]["hits"]) - hits0;
    let rx = u(&st["io"]["ports"][0]["sockets"][0]["rx_packets"]) - rx0;
    assert!(hits >= N as u64 * 9 / 10, "{}: only {hits} of {N} in the tier: {}", c.name, why(&d));
    assert!(rx <= N as u64 / 10, "{}: the AF_XDP socket still got {rx}: {}", c.name, why(&d));
    let r11 = |v: &serde_json::Value| {
        v["rules"].as_array().unwrap().iter().find(|x| x["id"] == 11).cloned().unwrap_or_default()
    };
    assert_eq!(u(&r11(&after)["packets"]) - u(&r11(&before)["packets"]), N as u64, "{after:#}");
    assert_eq!(after["dropped"], before["dropped"], "{after:#}");
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}

#[test]
fn gretap_with_key_and_checksum_in_the_tier_against_ovs() {
    if require_root("gretap_with_key_and_checksum_in_the_tier_against_ovs") {
        gre_flow_in_the_tier(&Case {
            name: "gretap key 7 csum",
            tunnel: "type = \"gretap\"\nkey = 7\ngre_checksum = true",
            ovs_options: &["options:key=7", "options:csum=true"],
            key: 7,
            csum: true,
            l3: false,
        });
    }
}

#[test]
fn l3_gre_with_key_in_the_tier_against_ovs() {
    if require_root("l3_gre_with_key_in_the_tier_against_ovs") {
        gre_flow_in_the_tier(&Case {
            name: "L3 GRE key 9",
            tunnel: "type = \"gre\"\nkey = 9",
            ovs_options: &["options:key=9", "options:packet_type=legacy_l3"],
            key: 9,
            csum: false,
            l3: true,
        });
    }
}
