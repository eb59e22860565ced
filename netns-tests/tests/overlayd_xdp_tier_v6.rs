//! The XDP tier over an IPv6 underlay with real traffic, against host B's
//! kernel VXLAN device (`netns_tests::kernel_peer`), which sends and
//! demands UDP checksums over IPv6 (its defaults):
//! - encapsulation: an established flow from workload A is encapsulated by
//!   the tier with the UDP checksum IPv6 requires (tshark and B's kernel
//!   both check it), its tier counters grow and the AF_XDP socket's do not;
//! - decapsulation: B's checksummed packets are verified and decapsulated
//!   by the tier.
//!
//! ```text
//!  wa (198.51.100.1)            ha: overlayd                 hb: kernel            wb (198.51.100.2)
//!  we ---veth--- wl [workload]  up [uplink] ---veth--- ub  vx0 + br0 --- bw ---veth--- wbe
//!                               2001:db8::1                2001:db8::2
//! ```

use std::time::Duration;

use netns_tests::kernel_peer::*;
use netns_tests::*;

/// The test flows alone, so their counts are exact: A's to B's port 9000,
/// and B's to A's port 9000.
const FLOW_RULES: &str = r#"
[[rules]]
id = 11
priority = 100
match = { in_port = "wl", ip_proto = 17, l4_dst = 9000 }
actions = [{ encap = "to-b" }]

[[rules]]
id = 21
priority = 100
match = { tunnel = "to-b", vni = 42, ip_proto = 17, l4_dst = 9000 }
actions = [{ output = "wl" }]
"#;

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn rule(c: &serde_json::Value, id: u64) -> serde_json::Value {
    c["rules"].as_array().unwrap().iter().find(|x| x["id"] == id).cloned().unwrap_or_default()
}

fn why(d: &Overlayd) -> String {
    format!("status: {:#}\ncounters: {:#}\nlog:\n{}", d.status(), d.counters(), d.log())
}

/// A UDP sink on port 9000 in `ns` at `ip` (no ICMP "port unreachable").
fn sink(ns: &Netns, ip: &str) -> Background {
    let py = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('{ip}', 9000))\nwhile True: s.recv(4096)"
    );
    Background::spawn(ns.command(&["python3", "-c", &py]), "udp sink")
}

/// Sends `n` UDP packets from `src`:20000 to `dst`:9000, each payload
/// "ovltier6" + its number (u32) + (number % 61) bytes, so lengths odd
/// and even pass.
fn send(ns: &Netns, src: &str, dst: &str, n: u32) {
    const PY: &str = r#"
import socket, struct, sys, time
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 20000))
for i in range(n):
    s.sendto(b"ovltier6" + struct.pack(">I", i) + b"x" * (i % 61), (dst, 9000))
    time.sleep(0.0005)
"#;
    let n = n.to_string();
    let mut s = Background::spawn(ns.command(&["python3", "-c", PY, src, dst, &n]), "udp sender");
    assert!(s.wait_timeout(Duration::from_secs(60)).is_some_and(|s| s.success()), "sender failed");
}

/// The sequence numbers of the test packets in `frames`, whose inner frame
/// starts `inner` bytes in (0: plain frames; 70: VXLAN over IPv6).
fn sequence(frames: &[Vec<u8>], inner: usize) -> Vec<u32> {
    frames
        .iter()
        .filter_map(|f| {
            let p = f.get(inner + 42..inner + 54)?;
            (&p[..8] == b"ovltier6").then(|| u32::from_be_bytes([p[8], p[9], p[10], p[11]]))
        })
        .collect()
}

/// Waits until the tier's owner has seen that `port` takes redirected frames.
fn wait_for_output(d: &Overlayd, port: &str) {
    let ok = wait_until(Duration::from_secs(5), || {
        let st = d.status();
        let ports = st["io"]["tier"]["ports"].as_array().cloned().unwrap_or_default();
        ports.iter().any(|p| p["port"] == port && p["not_output"].is_null())
    });
    assert!(ok, "{port} is not a tier output: {}", why(d));
}

/// Host A over IPv6 with the test rules; workload A keeps its default
/// offloads (partial checksums, which the tier finishes), B's uplink end has NAPI
/// (GRO) so the tier may redirect out of A's uplink, and workload A's end
/// has GRO so it may redirect out of `wl`.
fn overlay() -> Overlay {
    let o = build_opts(&Opts { v6: true, extra: FLOW_RULES, ..Opts::default() });
    let we = o.workload_features[1].dev().to_string();
    o.wa.exec(&["ethtool", "-K", &we, "gro", "on"]);
    o.hb.exec(&["ethtool", "-K", &o.ub, "gro", "on"]);
    o
}

/// An established flow from workload A is encapsulated by the tier over
/// IPv6: B's kernel VTEP (which drops bad UDP checksums) delivers every
/// packet, tshark finds each outer UDP checksum good with VNI 42, the flow
/// label and source port fixed for the flow, the tier's hits grow and the
/// workload port's AF_XDP socket sees only the first packets; `rule list`
/// puts the rule in the XDP tier; every packet is counted once.
#[test]
fn ipv6_underlay_encap_in_the_tier() {
    if !require_root("ipv6_underlay_encap_in_the_tier") {
        return;
    }
    let o = overlay();
    let _sink = sink(&o.wb, WB_IP);
    assert!(pings(&o.wa, WB_IP, 2), "A -> B ping failed: {}", why(&o.d));
    wait_for_output(&o.d, "up");
    let list = o.d.ctl_json(&["rule", "list"]);
    let r11 = list.as_array().unwrap().iter().find(|r| r["id"] == 11).cloned().unwrap_or_default();
    assert_eq!(r11["tier"]["in_tier"], true, "rule 11 is not placed in the tier: {list:#}");

    let dir = TempDir::new("tierwire6");
    let (under, at_b) = (dir.join("underlay.pcap"), dir.join("wb.pcap"));
    let cap = Capture::start(&o.hb, &o.ub, "udp port 4789", &under, 100_000, 60);
    let wbe = o.workload_features[0].dev().to_string();
    let cap_b = Capture::start(&o.wb, &wbe, "udp port 9000", &at_b, 100_000, 60);
    let before = o.d.settled_counters();
    std::thread::sleep(Duration::from_millis(600)); // socket statistics published
    let st = o.d.status();
    let wl_rx0 = u(&st["io"]["ports"][0]["sockets"][0]["rx_packets"]);
    let hits0 = u(&st["io"]["tier"]["hits"]);
    const N: u32 = 3000;
    send(&o.wa, WA_IP, WB_IP, N);
    let after = o.d.settled_counters();
    std::thread::sleep(Duration::from_millis(600));
    let (file, file_b) = (cap.finish(), cap_b.finish());

    // B's kernel verified each outer checksum: it delivered every packet.
    let mut got = sequence(&read_pcap(&file_b), 0);
    got.sort_unstable();
    assert_eq!(got, (0..N).collect::<Vec<_>>(), "B's workload did not get every packet once");
    let frames = read_pcap(&file);
    let mut seq = sequence(&frames, 70);
    seq.sort_unstable();
    assert_eq!(seq, (0..N).collect::<Vec<_>>(), "the underlay did not carry every packet once");
    let rows = tshark_fields(
        &file,
        "vxlan && ipv6.src == 2001:db8::1 && udp.dstport == 9000",
        &["udp.checksum.status", "vxlan.vni", "udp.srcport", "ipv6.flow", "udp.checksum"],
    );
    assert_eq!(rows.len(), N as usize, "{rows:?}");
    for row in &rows {
        assert_eq!(row[0], "1", "outer UDP checksum not good: {row:?}");
        assert_eq!(row[1], "42", "{row:?}");
        let sport: u32 = row[2].parse().unwrap();
        assert!((49152..=65535).contains(&sport), "{row:?}");
        assert_ne!(row[4], "0x0000", "{row:?}");
    }
    let same = |i: usize| rows.iter().map(|r| &r[i]).collect::<std::collections::HashSet<_>>();
    assert_eq!(same(2).len(), 1, "one source port for the flow");
    assert_eq!(same(3).len(), 1, "one flow label for the flow");

    let st = o.d.status();
    let hits = u(&st["io"]["tier"]["hits"]) - hits0;
    let rx = u(&st["io"]["ports"][0]["sockets"][0]["rx_packets"]) - wl_rx0;
    assert!(hits >= N as u64 * 9 / 10, "only {hits} of {N} packets in the tier: {}", why(&o.d));
    assert!(rx <= N as u64 / 10, "the AF_XDP socket still received {rx}: {}", why(&o.d));
    let tier_wl = &st["io"]["ports"][0]["tier"];
    assert_eq!(u(&tier_wl["too_long"]), 0, "{}", why(&o.d));
    // Every packet counted once, where the engine counts it: the rule by
    // the inner frame, the uplink by the outer one (70 bytes more).
    let d = |f: &dyn Fn(&serde_json::Value) -> u64| f(&after) - f(&before);
    let inner: u64 = frames
        .iter()
        .filter(|f| sequence(&[f.to_vec()], 70).len() == 1)
        .map(|f| f.len() as u64 - 70)
        .sum();
    assert_eq!(d(&|c| u(&rule(c, 11)["packets"])), N as u64, "{after:#}");
    assert_eq!(d(&|c| u(&rule(c, 11)["bytes"])), inner, "{after:#}");
    assert!(d(&|c| u(&c["tunnels"][0]["encap"]["packets"])) >= N as u64, "{after:#}");
    assert!(
        d(&|c| u(&c["ports"][1]["tx"]["bytes"])) >= inner + 70 * N as u64,
        "uplink bytes are the outer packets': {after:#}"
    );
    assert_eq!(after["dropped"], before["dropped"], "{after:#}");
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}

/// B's kernel VTEP sends non-zero UDP checksums over IPv6 (its default):
/// the tier verifies them and decapsulates the established flow, which no
/// longer needs `udp6zerocsumtx` to leave the AF_XDP path.
#[test]
fn ipv6_underlay_decap_of_checksummed_packets_in_the_tier() {
    if !require_root("ipv6_underlay_decap_of_checksummed_packets_in_the_tier") {
        return;
    }
    let o = overlay();
    let _sink = sink(&o.wa, WA_IP);
    assert!(pings(&o.wb, WA_IP, 2), "B -> A ping failed: {}", why(&o.d));
    wait_for_output(&o.d, "wl");
    let we = o.workload_features[1].dev().to_string();
    let dir = TempDir::new("tierwire6d");
    let pcap = dir.join("wa.pcap");
    let cap = Capture::start(&o.wa, &we, "udp port 9000", &pcap, 100_000, 60);
    let before = o.d.settled_counters();
    std::thread::sleep(Duration::from_millis(600));
    let st = o.d.status();
    let up_rx0 = u(&st["io"]["ports"][1]["sockets"][0]["rx_packets"]);
    let hit0 = u(&st["io"]["ports"][1]["tier"]["hit"]);
    const N: u32 = 3000;
    send(&o.wb, WB_IP, WA_IP, N);
    let after = o.d.settled_counters();
    std::thread::sleep(Duration::from_millis(600));
    let file = cap.finish();

    let mut seq = sequence(&read_pcap(&file), 0);
    seq.sort_unstable();
    assert_eq!(seq, (0..N).collect::<Vec<_>>(), "A did not get every packet once");
    let st = o.d.status();
    let up = &st["io"]["ports"][1];
    let hits = u(&up["tier"]["hit"]) - hit0;
    let rx = u(&up["sockets"][0]["rx_packets"]) - up_rx0;
    assert!(hits >= N as u64 * 9 / 10, "only {hits} of {N} packets in the tier: {}", why(&o.d));
    assert!(rx <= N as u64 / 10, "the uplink's AF_XDP socket still got {rx}: {}", why(&o.d));
    assert_eq!(u(&up["tier"]["decap_bad_checksum"]), 0, "{}", why(&o.d));
    let d = |f: &dyn Fn(&serde_json::Value) -> u64| f(&after) - f(&before);
    assert_eq!(d(&|c| u(&rule(c, 21)["packets"])), N as u64, "{after:#}");
    assert_eq!(after["dropped"], before["dropped"], "{after:#}");
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}
