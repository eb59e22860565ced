//! GRE decapsulation in the XDP tier with real traffic, against Open
//! vSwitch's userspace GRE port (datapath_type=netdev; this kernel has no
//! GRE module): workload B sends sequence-numbered UDP packets to workload
//! A; OVS encapsulates them (gretap with key and checksum, L3 GRE with a
//! key); once the engine has decided the flow's first packet, the uplink's
//! program decapsulates every later one (its tier hits are at least the
//! packets after the first, the uplink's AF_XDP socket gets none of them),
//! workload A gets every packet once, and tshark finds each frame valid
//! (IPv4 and UDP checksums good, A's MAC as the destination). Each packet
//! is counted once, where the engine counts it.
//!
//! The hosts: `netns_tests::one_tunnel::OvsGre`.

use std::time::Duration;

use netns_tests::one_tunnel::{OvsGre, OvsGreOpts, TierMode, WA_IP, WA_MAC};
use netns_tests::*;

struct Case {
    name: &'static str,
    /// overlayd's tunnel: type and options (TOML).
    tunnel: &'static str,
    ovs_options: &'static [&'static str],
    l3: bool,
    /// The outer headers decapsulation takes off (what the uplink counts
    /// beyond the inner frame).
    outer: u64,
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn why(d: &Overlayd) -> String {
    format!("status: {:#}\ncounters: {:#}\nlog:\n{}", d.status(), d.counters(), d.log())
}

fn rule(c: &serde_json::Value, id: u64) -> serde_json::Value {
    c["rules"].as_array().unwrap().iter().find(|x| x["id"] == id).cloned().unwrap_or_default()
}

/// The sequence numbers of the test packets in `frames` (plain IPv4 frames).
fn sequence(frames: &[Vec<u8>]) -> Vec<u32> {
    frames
        .iter()
        .filter_map(|f| {
            let p = f.get(42..54)?;
            (&p[..8] == b"ovlgrede").then(|| u32::from_be_bytes([p[8], p[9], p[10], p[11]]))
        })
        .collect()
}

/// Workload B sends packets `from..to` to A's port 9000, each payload
/// "ovlgrede" + its number (u32) + a few bytes more (lengths vary).
fn send_from_b(g: &OvsGre, from: u32, to: u32) {
    const PY: &str = r#"
import socket, struct, sys, time
a, b = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.2", 20000))
for i in range(a, b):
    s.sendto(b"ovlgrede" + struct.pack(">I", i) + b"z" * (i % 29), ("198.51.100.1", 9000))
    time.sleep(0.0005)
"#;
    let (a, b) = (from.to_string(), to.to_string());
    let mut s = Background::spawn(g.wb.command(&["python3", "-c", PY, &a, &b]), "udp sender");
    assert!(s.wait_timeout(Duration::from_secs(60)).is_some_and(|s| s.success()), "sender failed");
}

fn gre_decap_in_the_tier(c: &Case) {
    // The test flow alone, so its counts are exact. Over L3 GRE the frame
    // decapsulation makes up is addressed to A's uplink: give it A's MAC.
    let set_dst = if c.l3 { format!("{{ set_eth_dst = \"{WA_MAC}\" }}, ") } else { String::new() };
    let flow_rule = format!(
        "\n[[rules]]\nid = 21\npriority = 100\nmatch = {{ tunnel = \"to-peer\", ip_proto = 17, l4_dst = 9000 }}\nactions = [{set_dst}{{ output = \"wl\" }}]\n"
    );
    let g = OvsGre::start(&OvsGreOpts {
        prefix: "gredecap",
        tunnel: c.tunnel,
        ovs_options: c.ovs_options,
        l3: c.l3,
        encap_match: if c.l3 { ", ethertype = 0x0800" } else { "" },
        decap_actions: if c.l3 { "{ set_eth_dst = \"02:00:00:00:0a:01\" }, " } else { "" },
        extra: &flow_rule,
        tier: TierMode::Auto,
    });
    let d = &g.d;
    assert!(g.wait_for_tier_output("wl"), "{}: wl is not a tier output: {}", c.name, why(d));
    let sink = Background::spawn(
        g.wa.command(&[
            "python3",
            "-c",
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('198.51.100.1', 9000))\nwhile True: s.recv(4096)",
        ]),
        "udp sink",
    );
    let dir = TempDir::new("gredecap");
    let pcap = dir.join("wa.pcap");
    let cap = Capture::start(&g.wa, &g.we, "udp port 9000", &pcap, 100_000, 60);
    let before = d.settled_counters();
    std::thread::sleep(Duration::from_millis(600)); // socket statistics published
    let st = d.status();
    let up_rx0 = u(&st["io"]["ports"][1]["sockets"][0]["rx_packets"]);
    let hit0 = u(&st["io"]["ports"][1]["tier"]["hit"]);
    let installs0 = u(&st["io"]["tier"]["installs"]);

    // The first packet: the engine decides it and offers the flow's entry.
    send_from_b(&g, 0, 1);
    let installed =
        wait_until(Duration::from_secs(5), || u(&d.status()["io"]["tier"]["installs"]) > installs0);
    assert!(installed, "{}: no entry installed: {}", c.name, why(d));
    std::thread::sleep(Duration::from_millis(600));
    let up_rx1 = u(&d.status()["io"]["ports"][1]["sockets"][0]["rx_packets"]);
    const N: u32 = 2000;
    send_from_b(&g, 1, N);
    let after = d.settled_counters();
    std::thread::sleep(Duration::from_millis(600));
    let file = cap.finish();
    drop(sink);

    let frames = read_pcap(&file);
    let mut seq = sequence(&frames);
    seq.sort_unstable();
    assert_eq!(seq, (0..N).collect::<Vec<_>>(), "{}: A did not get every packet once", c.name);
    let rows = tshark_fields(
        &file,
        &format!("ip.dst == {WA_IP} && udp.dstport == 9000"),
        &["eth.dst", "ip.checksum.status", "udp.checksum.status", "gre"],
    );
    assert_eq!(rows.len(), N as usize, "{}: {rows:?}", c.name);
    for row in &rows {
        assert_eq!(row[0], WA_MAC, "{}: not addressed to A: {row:?}", c.name);
        assert_eq!(row[1], "1", "{}: inner IPv4 checksum not good: {row:?}", c.name);
        assert_eq!(row[2], "1", "{}: UDP checksum not good: {row:?}", c.name);
        assert_eq!(row[3], "", "{}: a GRE header left: {row:?}", c.name);
    }

    let st = d.status();
    let hits = u(&st["io"]["ports"][1]["tier"]["hit"]) - hit0;
    let rx = u(&st["io"]["ports"][1]["sockets"][0]["rx_packets"]) - up_rx1;
    let up = &st["io"]["ports"][1]["tier"];
    assert!(hits >= (N - 1) as u64, "{}: only {hits} of {N} in the tier: {}", c.name, why(d));
    assert_eq!(
        rx,
        0,
        "{}: the uplink's AF_XDP socket got {rx} after the first: {}",
        c.name,
        why(d)
    );
    assert!(u(&st["io"]["ports"][1]["sockets"][0]["rx_packets"]) > up_rx0, "{}", why(d));
    assert_eq!(u(&up["decap_punt"]) + u(&up["decap_gre_sequence"]), 0, "{}: {up:#}", c.name);
    let text = d.ctl(&["status"]);
    assert!(text.contains("XDP tier:"), "{text}");

    // Every packet counted once, where the engine counts it: the rule and
    // the workload port by the inner frame, the uplink by the outer one.
    let delta = |f: &dyn Fn(&serde_json::Value) -> u64| f(&after) - f(&before);
    let inner: u64 =
        frames.iter().filter(|f| sequence(&[f.to_vec()]).len() == 1).map(|f| f.len() as u64).sum();
    assert_eq!(delta(&|c| u(&rule(c, 21)["packets"])), N as u64, "{after:#}");
    assert_eq!(delta(&|c| u(&rule(c, 21)["bytes"])), inner, "{after:#}");
    assert_eq!(delta(&|c| u(&c["tunnels"][0]["decap"]["packets"])), N as u64, "{after:#}");
    assert_eq!(delta(&|c| u(&c["tunnels"][0]["decap"]["bytes"])), inner, "{after:#}");
    assert!(delta(&|c| u(&c["ports"][0]["tx"]["packets"])) >= N as u64, "{after:#}");
    assert!(
        delta(&|c| u(&c["ports"][1]["rx"]["bytes"])) >= inner + N as u64 * c.outer,
        "{}: uplink bytes are the outer packets': {after:#}",
        c.name
    );
    assert_eq!(after["dropped"], before["dropped"], "{after:#}");
    assert_eq!(after["conserved"], true, "{after:#}");
    let OvsGre { d, ha, ovs: _ovs, .. } = g;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}

#[test]
fn gretap_with_key_and_checksum_decapsulated_in_the_tier_from_ovs() {
    if require_root("gretap_with_key_and_checksum_decapsulated_in_the_tier_from_ovs") {
        gre_decap_in_the_tier(&Case {
            name: "gretap key 7 csum",
            tunnel: "type = \"gretap\"\nkey = 7\ngre_checksum = true",
            ovs_options: &["options:key=7", "options:csum=true"],
            l3: false,
            outer: 14 + 20 + 12,
        });
    }
}

#[test]
fn l3_gre_with_key_decapsulated_in_the_tier_from_ovs() {
    if require_root("l3_gre_with_key_decapsulated_in_the_tier_from_ovs") {
        gre_decap_in_the_tier(&Case {
            name: "L3 GRE key 9",
            tunnel: "type = \"gre\"\nkey = 9",
            ovs_options: &["options:key=9", "options:packet_type=legacy_l3"],
            l3: true,
            outer: 20 + 8,
        });
    }
}
