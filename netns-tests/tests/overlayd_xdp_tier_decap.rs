//! Decapsulation in the XDP tier with real traffic: host B's kernel VXLAN
//! device sends to overlayd on host A (`netns_tests::kernel_peer`), over an
//! IPv4 and an IPv6 underlay; and malformed tunnel packets of a flow the
//! tier holds get the drop reasons they get with the tier off.
//!
//! ```text
//!  wa (198.51.100.1)            ha: overlayd                 hb: kernel            wb (198.51.100.2)
//!  we ---veth--- wl [workload]  up [uplink] ---veth--- ub  vx0 + br0 --- bw ---veth--- wbe
//! ```
//!
//! Workload A's end has GRO on: a veth takes frames redirected by XDP only
//! while its peer has NAPI, so the tier can send out of `wl`.

use std::collections::BTreeMap;
use std::time::Duration;

use netns_tests::kernel_peer::*;
use netns_tests::*;

/// The test flow alone, so its counts are exact.
const FLOW_RULE: &str = r#"
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

/// Recreates host B's VXLAN device over IPv6 sending zero UDP checksums
/// (`udp6zerocsumtx`, RFC 6935), bridged as before.
fn kernel_vtep_v6_zero_checksums(o: &Overlay) {
    o.hb.ip(&["link", "del", "vx0"]);
    o.hb.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "local",
        "2001:db8::2",
        "remote",
        "2001:db8::1",
        "dstport",
        "4789",
        "dev",
        &o.ub,
        "udp6zerocsumtx",
        "udp6zerocsumrx",
    ]);
    o.hb.ip(&["link", "set", "vx0", "master", "br0", "up"]);
}

/// Workload B sends `n` UDP packets to A's port 9000, each payload
/// "ovldecap" + its number (u32); A's capture on its end proves arrival.
fn send_from_b(o: &Overlay, n: u32) {
    const PY: &str = r#"
import socket, struct, sys, time
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.2", 20000))
for i in range(n):
    s.sendto(b"ovldecap" + struct.pack(">I", i), ("198.51.100.1", 9000))
    time.sleep(0.0005)
"#;
    let n = n.to_string();
    let mut s = Background::spawn(o.wb.command(&["python3", "-c", PY, &n]), "udp sender");
    assert!(s.wait_timeout(Duration::from_secs(60)).is_some_and(|s| s.success()), "sender failed");
}

/// The sequence numbers of the test packets in `frames` (plain IPv4 frames).
fn sequence(frames: &[Vec<u8>]) -> Vec<u32> {
    frames
        .iter()
        .filter_map(|f| {
            let p = f.get(42..54)?;
            (&p[..8] == b"ovldecap").then(|| u32::from_be_bytes([p[8], p[9], p[10], p[11]]))
        })
        .collect()
}

/// An established flow from B's kernel VTEP is decapsulated by the tier:
/// the uplink program's tier hits grow, the uplink's AF_XDP socket sees
/// only the first packets, workload A gets every packet, and each is
/// counted once where the engine counts it.
fn decap_flow_in_the_tier(v6: bool) {
    let extra = if v6 {
        format!("{FLOW_RULE}\n[decap]\naccept_zero_checksum_v6 = true\n")
    } else {
        FLOW_RULE.to_string()
    };
    let o = build_opts(&Opts { v6, udp_checksum: false, extra: &extra, ..Opts::default() });
    if v6 {
        kernel_vtep_v6_zero_checksums(&o);
    }
    let we = workload_a(&o);
    o.wa.exec(&["ethtool", "-K", &we, "gro", "on"]);
    assert!(pings(&o.wb, WA_IP, 2), "B -> A ping failed: {}", why(&o.d));
    let sink = Background::spawn(
        o.wa.command(&[
            "python3",
            "-c",
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.bind(('198.51.100.1', 9000))\nwhile True: s.recv(4096)",
        ]),
        "udp sink",
    );
    wait_for_wl_output(&o);
    let dir = TempDir::new("decap");
    let pcap = dir.join("wa.pcap");
    let cap = Capture::start(&o.wa, &we, "udp port 9000", &pcap, 100_000, 60);
    let before = o.d.settled_counters();
    std::thread::sleep(Duration::from_millis(600)); // socket statistics published
    let st = o.d.status();
    let up_rx0 = u(&st["io"]["ports"][1]["sockets"][0]["rx_packets"]);
    let hit0 = u(&st["io"]["ports"][1]["tier"]["hit"]);
    const N: u32 = 3000;
    send_from_b(&o, N);
    let after = o.d.settled_counters();
    std::thread::sleep(Duration::from_millis(600));
    let file = cap.finish();
    drop(sink);

    let mut seq = sequence(&read_pcap(&file));
    seq.sort_unstable();
    assert_eq!(seq, (0..N).collect::<Vec<_>>(), "A did not get every packet once");
    let st = o.d.status();
    let hits = u(&st["io"]["ports"][1]["tier"]["hit"]) - hit0;
    let rx = u(&st["io"]["ports"][1]["sockets"][0]["rx_packets"]) - up_rx0;
    assert!(hits >= N as u64 * 9 / 10, "only {hits} of {N} packets in the tier: {}", why(&o.d));
    assert!(rx <= N as u64 / 10, "the uplink's AF_XDP socket still got {rx}: {}", why(&o.d));
    assert!(u(&st["io"]["tier"]["installs"]) >= 1, "{}", why(&o.d));
    let text = o.d.ctl(&["status"]);
    assert!(text.contains("XDP tier:"), "{text}");

    // Every packet counted once, where the engine counts it: the rule and
    // the workload port by the inner frame, the uplink by the outer one.
    let d = |f: &dyn Fn(&serde_json::Value) -> u64| f(&after) - f(&before);
    let frames: Vec<Vec<u8>> = read_pcap(&file);
    let inner: u64 =
        frames.iter().filter(|f| sequence(&[f.to_vec()]).len() == 1).map(|f| f.len() as u64).sum();
    assert_eq!(d(&|c| u(&rule(c, 21)["packets"])), N as u64, "{after:#}");
    assert_eq!(d(&|c| u(&rule(c, 21)["bytes"])), inner, "{after:#}");
    let outer = if v6 { 70 } else { 50 };
    assert!(d(&|c| u(&c["tunnels"][0]["decap"]["packets"])) >= N as u64, "{after:#}");
    assert!(d(&|c| u(&c["ports"][0]["tx"]["packets"])) >= N as u64, "{after:#}");
    assert!(
        d(&|c| u(&c["ports"][1]["rx"]["bytes"])) >= inner + N as u64 * outer,
        "uplink bytes are the outer packets': {after:#}"
    );
    assert_eq!(after["dropped"], before["dropped"], "{after:#}");
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}

#[test]
fn decap_flow_in_the_tier_ipv4_underlay() {
    if require_root("decap_flow_in_the_tier_ipv4_underlay") {
        decap_flow_in_the_tier(false);
    }
}

#[test]
fn decap_flow_in_the_tier_ipv6_underlay() {
    if require_root("decap_flow_in_the_tier_ipv6_underlay") {
        decap_flow_in_the_tier(true);
    }
}

/// What overlayd (tier `tier`) counts for an established flow's packets
/// from B followed by malformed variants of them, injected at the uplink:
/// every drop reason, and what reached the workload; and the tier's hits.
fn malformed_counts(tier: &str) -> (BTreeMap<String, u64>, u64, u64) {
    let tier = match tier {
        "off" => TierMode::Off,
        _ => TierMode::Auto,
    };
    let o = build_opts(&Opts { tier, extra: FLOW_RULE, ..Opts::default() });
    let we = workload_a(&o);
    o.wa.exec(&["ethtool", "-K", &we, "gro", "on"]);
    assert!(pings(&o.wb, WA_IP, 1), "B -> A ping failed: {}", why(&o.d));
    if tier == TierMode::Auto {
        wait_for_wl_output(&o);
    }
    let (a_mac, wa_mac) = (o.ha.mac(&o.up), o.wa.mac(&we));
    let inner = |tos: u8| {
        format!(
            "eth(src=02:00:00:00:0b:01,dst={wa_mac})/ipv4(src=198.51.100.2,dst=198.51.100.1,tos={tos})/udp(sport=20001,dport=9000)/payload(len=40)"
        )
    };
    let outer = |tos: u8, rest: &str| {
        engine::packet_spec::build(&format!(
            "eth(dst={a_mac})/ipv4(src=192.0.2.2,dst=192.0.2.1,tos={tos})/{rest}"
        ))
        .unwrap()
    };
    let vxlan = "udp(sport=50000,dport=4789,csum=0)/vxlan(vni=42)";
    let good = outer(0, &format!("{vxlan}/{}", inner(0)));
    let with = |f: &[u8], edit: &dyn Fn(&mut Vec<u8>)| {
        let mut f = f.to_vec();
        edit(&mut f);
        f
    };
    let checked =
        outer(0, &format!("udp(sport=50000,dport=4789,csum=auto)/vxlan(vni=42)/{}", inner(0)));
    let cases: Vec<Vec<u8>> = vec![
        with(&good, &|f| f[24] ^= 0xff), // ipv4_bad_checksum
        with(&checked, &|f| *f.last_mut().unwrap() ^= 0xff), // udp_bad_checksum
        checked.clone(),                 // delivered: a checksum the tier verifies
        outer(0, &format!("udp(sport=50000,dport=4789,csum=0)/vxlan(vni=42,flags=0)/{}", inner(0))),
        outer(
            0,
            &format!("udp(sport=50000,dport=4789,csum=0)/vxlan(vni=42,flags=12)/{}", inner(0)),
        ),
        outer(3, &format!("{vxlan}/{}", inner(0))), // ecn_ce_not_ect
        outer(3, &format!("{vxlan}/{}", inner(2))), // delivered, CE carried in
        outer(0, &format!("{vxlan}/{}", inner(1))), // delivered, ECT(1) kept
        with(&good, &|f| f.extend_from_slice(&[0; 4])), // trailing bytes
        with(&good, &|f| *f.last_mut().unwrap() ^= 0xff), // l4_checksum_bad (inner)
        outer(0, &format!("udp(sport=50000,dport=4789,csum=0)/vxlan(vni=43)/{}", inner(0))),
        outer(0, "udp(sport=50000,dport=4789,csum=0)/vxlan(vni=42)/hex(data=0102)"),
        outer(0, "udp(sport=50000,dport=4789,csum=0)/hex(data=0800)"),
    ];
    // The flow first, so its entry is installed (with the tier on) before
    // the malformed packets of the same inner flow arrive.
    inject(&o.hb, &o.ub, &vec![good.clone(); 20]);
    std::thread::sleep(Duration::from_millis(500));
    let before = o.d.settled_counters();
    let hits0 = u(&o.d.status()["io"]["ports"][1]["tier"]["hit"]);
    inject(&o.hb, &o.ub, &vec![good.clone(); 20]);
    for f in &cases {
        inject(&o.hb, &o.ub, &vec![f.clone(); 3]);
    }
    inject(&o.hb, &o.ub, &vec![good.clone(); 20]);
    let after = o.d.settled_counters();
    let hits = u(&o.d.status()["io"]["ports"][1]["tier"]["hit"]) - hits0;
    let drops: BTreeMap<String, u64> = Overlayd::drops_since(&before, &after);
    let delivered = u(&rule(&after, 21)["packets"]) - u(&rule(&before, 21)["packets"]);
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
    (drops, delivered, hits)
}

/// Waits until the tier's owner has seen that `wl` takes redirected frames
/// (its peer has GRO on; the owner probes every second).
fn wait_for_wl_output(o: &Overlay) {
    let ok = wait_until(Duration::from_secs(5), || {
        let st = o.d.status();
        let ports = st["io"]["tier"]["ports"].as_array().cloned().unwrap_or_default();
        ports.iter().any(|p| p["port"] == "wl" && p["not_output"].is_null())
    });
    assert!(ok, "wl is not a tier output: {}", why(&o.d));
}

/// Workload A's end of its link (in `wa`).
fn workload_a(o: &Overlay) -> String {
    o.workload_features[1].dev().to_string()
}

/// Malformed tunnel packets of a flow the tier holds get exactly the drop
/// reasons they get with the tier off (so does every well-formed packet
/// the tier leaves to the engine), and the same packets reach the workload.
#[test]
fn malformed_packets_get_the_same_drops_with_the_tier_on_and_off() {
    if !require_root("malformed_packets_get_the_same_drops_with_the_tier_on_and_off") {
        return;
    }
    let (on, on_tx, on_hits) = malformed_counts("auto");
    let (off, off_tx, _) = malformed_counts("off");
    // The flow's 40 packets, the 3 whose UDP checksum the tier verified
    // and the 3 with ECT(1) kept: every other case was left to the engine.
    assert_eq!(on_hits, 40 + 3 + 3, "tier hits");
    assert_eq!(on, off, "drop reasons differ with the tier on");
    for reason in [
        "ipv4_bad_checksum",
        "udp_bad_checksum",
        "vxlan_no_i_flag",
        "ecn_ce_not_ect",
        "unknown_tunnel",
        "inner_truncated",
        "vxlan_truncated",
        "l4_checksum_bad",
    ] {
        assert_eq!(on.get(reason), Some(&3), "{reason}: {on:?}");
    }
    // 40 of the flow (after the first 20), and 3 each of: a verified checksum, reserved VXLAN
    // flags (ignored), CE carried in, ECT(1) kept, trailing bytes; and the 3 with a wrong
    // inner checksum, which the rule counts before they are dropped on their way out.
    assert_eq!(on_tx, 40 + 6 * 3);
    assert_eq!(on_tx, off_tx, "the workload got different packets with the tier on");
}
