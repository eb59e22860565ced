//! `overlayd` (AF_XDP, VXLAN) against the Linux kernel's VXLAN device on the
//! other host (`netns_tests::kernel_peer`): pings and a TCP transfer between
//! the two workloads in both directions, over an IPv4 and an IPv6 underlay.
//! The workloads keep their default offloads.

use std::time::Duration;

use netns_tests::kernel_peer::*;
use netns_tests::*;

fn case(v6: bool, udp_checksum: bool) {
    case_on(v6, udp_checksum, "af_xdp");
}

/// The interop case with the XDP tier on (the default) and off.
fn case_on(v6: bool, udp_checksum: bool, backend: &str) {
    for tier in TierMode::BOTH {
        eprintln!("xdp_tier = \"{}\"", tier.name());
        case_in(v6, udp_checksum, backend, tier);
    }
}

fn case_in(v6: bool, udp_checksum: bool, backend: &str, tier: TierMode) {
    let o = build_opts(&Opts { v6, udp_checksum, backend, tier, ..Opts::default() });
    let mode = format!("xdp_tier = \"{}\"", tier.name());
    let why = |d: &Overlayd| {
        format!("{mode}\ncounters: {:#}\nstatus: {:#}\nlog:\n{}", d.counters(), d.status(), d.log())
    };
    tier.assert_in_status(&o.d.status());
    assert!(pings(&o.wa, "198.51.100.2", 5), "A -> B ping failed; {}", why(&o.d));
    assert!(pings(&o.wb, "198.51.100.1", 5), "B -> A ping failed; {}", why(&o.d));
    tcp_transfer(&o.wa, &o.wb, "198.51.100.2", 2_000_000);
    tcp_transfer(&o.wb, &o.wa, "198.51.100.1", 2_000_000);
    // The host's own traffic on the uplink still reaches its kernel.
    let a_ip = if v6 { "2001:db8::1" } else { "192.0.2.1" };
    assert!(pings(&o.hb, a_ip, 2), "{mode}: host A's kernel stopped answering on the uplink");

    let c = o.d.settled_counters();
    let t = &c["tunnels"][0];
    assert!(t["encap"]["packets"].as_u64().unwrap() > 1000, "{mode}: {c:#}");
    assert!(t["decap"]["packets"].as_u64().unwrap() > 1000, "{mode}: {c:#}");
    assert_eq!(c["dropped"], 0, "{mode}: unexpected drops: {c:#}");
    let st = o.d.status();
    assert_eq!(st["io"]["ports"][1]["backend"], backend, "{mode}: {st:#}");
    assert_eq!(st["io"]["ports"][0]["xdp_mode"], "native", "{mode}: {st:#}");
    tier.assert_in_status(&st);
    if backend == "af_packet" {
        // The packet socket took tunnel traffic and left the host's own to the kernel.
        let steer = &st["io"]["ports"][1]["steering"];
        assert!(steer["redirected"].as_u64().unwrap() > 1000, "{mode}: {st:#}");
        assert!(steer["pass_not_tunnel"].as_u64().unwrap() > 0, "{mode}: {st:#}");
    }

    o.assert_workload_offloads_unchanged();
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha), "{mode}: an XDP program was left attached");
}

#[test]
fn vxlan_ipv4_underlay_against_kernel() {
    if require_root("vxlan_ipv4_underlay_against_kernel") {
        case(false, false);
    }
}

#[test]
fn vxlan_ipv4_underlay_udp_checksum_against_kernel() {
    if require_root("vxlan_ipv4_underlay_udp_checksum_against_kernel") {
        case(false, true);
    }
}

#[test]
fn vxlan_ipv4_underlay_against_kernel_af_packet() {
    if require_root("vxlan_ipv4_underlay_against_kernel_af_packet") {
        case_on(false, true, "af_packet");
    }
}

#[test]
fn vxlan_ipv6_underlay_against_kernel_af_packet() {
    if require_root("vxlan_ipv6_underlay_against_kernel_af_packet") {
        case_on(true, true, "af_packet");
    }
}

#[test]
fn vxlan_ipv6_underlay_against_kernel() {
    if require_root("vxlan_ipv6_underlay_against_kernel") {
        case(true, true);
    }
}

/// Malformed and foreign packets sent at the uplink: each is dropped under
/// its own reason (or, when not addressed to a local VTEP, left to the
/// kernel by the XDP program), none reaches the workload, and the host's own
/// traffic keeps working.
#[test]
fn malformed_and_foreign_packets_at_the_uplink() {
    if !require_root("malformed_and_foreign_packets_at_the_uplink") {
        return;
    }
    let gre = r#"
[[tunnels]]
name = "gre-b"
type = "gretap"
uplink = "up"
local = "192.0.2.1"
remote = "192.0.2.2"
key = 7
"#;
    let o = build_with(false, false, gre);
    // One good exchange first, so the counters below start from a working overlay.
    assert!(pings(&o.wa, "198.51.100.2", 1));
    let ub = o.ub.clone();
    let a_mac = o.ha.mac(&o.up);
    let outer = |rest: &str, dst: &str| {
        engine::packet_spec::build(&format!(
            "eth(dst={a_mac})/ipv4(src=192.0.2.2,dst={dst})/{rest}"
        ))
        .unwrap()
    };
    let inner = "eth(src=02:00:00:00:0b:01,dst=02:00:00:00:0a:01)/ipv4(src=198.51.100.2,dst=198.51.100.1)/udp(dport=9)";
    let bad_flags = outer(&format!("udp(dport=4789)/vxlan(vni=42,flags=0)/{inner}"), "192.0.2.1");
    let mut routing = outer(&format!("gre(key=7)/{inner}"), "192.0.2.1");
    routing[14 + 20] |= 0x40; // GRE routing bit
    let mut bad_udp =
        outer(&format!("udp(dport=4789,csum=auto)/vxlan(vni=42)/{inner}"), "192.0.2.1");
    let n = bad_udp.len();
    bad_udp[n - 1] ^= 0xff;
    let mut bad_ip = outer(&format!("udp(dport=4789)/vxlan(vni=42)/{inner}"), "192.0.2.1");
    bad_ip[14 + 10] ^= 0xff; // IPv4 header checksum
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown_tunnel", outer(&format!("udp(dport=4789)/vxlan(vni=43)/{inner}"), "192.0.2.1")),
        ("vxlan_no_i_flag", bad_flags),
        ("gre_reserved_bits", routing),
        ("vxlan_truncated", outer("udp(dport=4789)/hex(data=0800)", "192.0.2.1")),
        ("gre_truncated", outer("hex(data=20)", "192.0.2.1,proto=47")),
        ("udp_bad_checksum", bad_udp),
        ("ipv4_bad_checksum", bad_ip),
    ];
    let before = o.d.settled_counters();
    let steer_before = o.d.status()["io"]["ports"][1]["steering"].clone();
    const N: usize = 3;
    for (_, f) in &cases {
        inject(&o.hb, &ub, &vec![f.clone(); N]);
    }
    // Foreign: VXLAN to an address that is not a local VTEP goes to the kernel.
    inject(
        &o.hb,
        &ub,
        &vec![outer(&format!("udp(dport=4789)/vxlan(vni=42)/{inner}"), "192.0.2.99"); N],
    );
    let after = o.d.settled_counters();
    for (reason, _) in &cases {
        assert_eq!(
            drops(&after, reason) - drops(&before, reason),
            N as u64,
            "{reason}: counters {after:#}"
        );
    }
    // The workload keeps receiving B's own chatter (ARP, IPv6 neighbour
    // discovery) through the tunnel; everything it got must be a valid
    // decapsulated packet, none of the malformed ones.
    let delta = |c: &serde_json::Value,
                 b: &serde_json::Value,
                 f: &dyn Fn(&serde_json::Value) -> u64| f(c) - f(b);
    let wl_tx = delta(&after, &before, &|c| c["ports"][0]["tx"]["packets"].as_u64().unwrap());
    let decap = delta(&after, &before, &|c| c["tunnels"][0]["decap"]["packets"].as_u64().unwrap());
    let gre_decap =
        delta(&after, &before, &|c| c["tunnels"][1]["decap"]["packets"].as_u64().unwrap());
    assert_eq!(gre_decap, 0, "a malformed GRE packet was decapsulated: {after:#}");
    assert_eq!(
        wl_tx, decap,
        "the workload got something other than valid tunnel packets: {after:#}"
    );
    let steer = o.d.status()["io"]["ports"][1]["steering"].clone();
    let d = |k: &str| steer[k].as_u64().unwrap() - steer_before[k].as_u64().unwrap();
    assert!(d("pass_not_local_vtep") >= N as u64, "steering: {steer:#}");
    assert!(pings(&o.hb, "192.0.2.1", 2), "host traffic on the uplink stopped reaching the kernel");
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha));
}

/// Rules changed through the API while traffic flows: each change takes effect
/// at once, without a restart, and the unchanged flow (a ping stream) loses
/// and misdirects nothing.
#[test]
fn rule_changes_while_traffic_flows() {
    if !require_root("rule_changes_while_traffic_flows") {
        return;
    }
    let o = build(false, false);
    assert!(pings(&o.wa, "198.51.100.2", 1));
    let mut stream = Background::spawn(
        o.wa.command(&["ping", "-q", "-c", "400", "-i", "0.01", "-W", "2", "198.51.100.2"]),
        "ping stream",
    );
    let mut generations = Vec::new();
    for i in 0..10 {
        // A rule for an unrelated flow, added and removed while the stream runs.
        o.d.ctl(&[
            "rule",
            "add",
            "--id",
            "77",
            "--priority",
            "300",
            "--match",
            "in_port=wl,ip_proto=6,l4_dst=23",
            "--action",
            "count",
            "--action",
            "drop",
        ]);
        let s = o.d.status();
        generations.push(s["generation"].as_u64().unwrap());
        // It applies at once: a telnet SYN is dropped by it.
        let _ = o.wa.exec_output(&["timeout", "1", "nc", "-z", "-w", "1", "198.51.100.2", "23"]);
        let c = o.d.counters();
        let hits = c["rules"].as_array().unwrap().iter().find(|r| r["id"] == 77).unwrap()
            ["packets"]
            .as_u64()
            .unwrap();
        assert!(hits >= 1, "round {i}: rule 77 did not take effect: {c:#}");
        o.d.ctl(&["rule", "del", "77"]);
    }
    let st = stream.wait_timeout(Duration::from_secs(30)).expect("the ping stream did not finish");
    assert!(st.success(), "the ping stream lost packets while rules changed");
    assert!(generations.windows(2).all(|w| w[1] > w[0]), "{generations:?}");
    let c = o.d.settled_counters();
    assert!(drops(&c, "rule_drop") >= 10, "{c:#}");
    for r in ["no_matching_rule", "unknown_port", "port_not_attached", "tx_ring_full"] {
        assert_eq!(drops(&c, r), 0, "{r}: {c:#}");
    }
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha));
}

/// Interfaces with two queues: two pinned workers, each serving its queue of
/// both ports, carry flows spread over the queues by hash, and both
/// directions stay intact.
#[test]
fn two_queues_served_by_two_workers() {
    if !require_root("two_queues_served_by_two_workers") {
        return;
    }
    let o = build_opts(&Opts { queues: 2, ..Opts::default() });
    let st = o.d.status();
    assert_eq!(st["io"]["workers"], 2, "{st:#}");
    for p in st["io"]["ports"].as_array().unwrap() {
        assert_eq!(p["queues"], 2, "{st:#}");
    }
    assert!(pings(&o.wa, "198.51.100.2", 2), "A -> B ping failed");
    // Each TCP connection gets its own random flow hash, which picks the
    // queue: sixteen of them land on both queues but with odds of 2^-15.
    for i in 0..8 {
        tcp_transfer(&o.wa, &o.wb, "198.51.100.2", 100_000 + i);
        tcp_transfer(&o.wb, &o.wa, "198.51.100.1", 100_000 + i);
    }
    // Socket statistics are published every half second.
    std::thread::sleep(Duration::from_millis(700));
    let st = o.d.status();
    for p in st["io"]["ports"].as_array().unwrap() {
        let socks = p["sockets"].as_array().unwrap();
        assert_eq!(socks.len(), 2, "one socket per queue: {st:#}");
        for s in socks {
            assert!(
                s["rx_packets"].as_u64().unwrap() > 0,
                "port {} queue {} received nothing: {st:#}",
                p["port"],
                s["queue"]
            );
        }
    }
    let c = o.d.settled_counters();
    assert_eq!(c["dropped"], 0, "unexpected drops: {c:#}");
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}

/// Workload A behind a TAP port (io_uring) with offloads `offloads`, VXLAN
/// with UDP checksums to the kernel on host B: a TCP stream each way,
/// checked byte for byte, and the underlay capture dissected by tshark.
/// Returns host A's TAP queue statistics.
fn tap_case(offloads: &str) -> serde_json::Value {
    let o =
        build_opts(&Opts { udp_checksum: true, tap_offloads: Some(offloads), ..Opts::default() });
    let st = o.d.status();
    let tap = &st["io"]["ports"][0];
    assert_eq!(tap["backend"], "tap", "{st:#}");
    let wl = tap["interface"].as_str().unwrap().to_string();
    let features = o.wa.exec(&["ethtool", "-k", &wl]);
    let tso_on = features.contains("tcp-segmentation-offload: on");
    assert_eq!(tso_on, offloads == "on", "TSO on the workload's TAP: {features}");
    if offloads == "on" {
        assert!(tap["offloads"]["enabled"].as_array().unwrap().contains(&"tso4".into()), "{st:#}");
    } else {
        assert!(tap["offloads"]["enabled"].as_array().unwrap().is_empty(), "{st:#}");
    }

    assert!(pings(&o.wa, "198.51.100.2", 2), "A -> B ping failed: {:#}", o.d.status());
    // While the TAP device moved namespaces it was down, and the kernel
    // refused what overlayd wrote to it (B's neighbour discovery) as
    // tx_failed; from here on nothing may be dropped.
    let before = o.d.settled_counters();
    let dir = TempDir::new("tap");
    let pcap = dir.join("underlay.pcap");
    let cap = Capture::start(&o.hb, &o.ub, "udp port 4789", &pcap, 400_000, 120);
    tcp_transfer(&o.wa, &o.wb, "198.51.100.2", 8_000_000);
    tcp_transfer(&o.wb, &o.wa, "198.51.100.1", 8_000_000);
    let file = cap.finish();

    // Every outer packet fits the underlay's 1500-byte MTU, and every
    // checksum, outer UDP and inner TCP, is valid (tshark: 1 good).
    let rows = tshark_fields(
        &file,
        "vxlan",
        &["ip.src", "ip.len", "udp.checksum.status", "tcp.checksum.status", "tcp.len"],
    );
    let from_a: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "192.0.2.1").collect();
    assert!(from_a.len() > 1000, "only {} packets from A captured", from_a.len());
    let mut full = 0;
    for r in &from_a {
        let ip_len: usize = r[1].parse().unwrap();
        assert!(ip_len <= 1500, "an outer packet of {ip_len} bytes: {r:?}");
        assert_eq!(r[2], "1", "bad outer UDP checksum from A: {r:?}");
        if !r[3].is_empty() {
            assert_eq!(r[3], "1", "bad inner TCP checksum from A: {r:?}");
        }
        if ip_len > 1400 {
            full += 1;
        }
    }
    assert!(full > 1000, "A sent few full-size packets ({full}): segments too small?");

    let c = o.d.settled_counters();
    assert_eq!(c["dropped"], before["dropped"], "unexpected drops: {c:#}");
    let st = o.d.status();
    let q = st["io"]["ports"][0]["sockets"][0].clone();
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
    q
}

/// With TSO and checksum offload on, the workload hands over super-frames
/// and partial checksums; overlayd cuts and finishes them, and marks what it
/// delivers DATA_VALID.
#[test]
fn tap_workload_with_tso_across_the_overlay() {
    if !require_root("tap_workload_with_tso_across_the_overlay") {
        return;
    }
    let q = tap_case("on");
    eprintln!("TAP queue with offloads: {q:#}");
    assert!(q["rx_super_frames"].as_u64().unwrap() > 10, "no TSO super-frame seen: {q:#}");
    assert!(q["rx_segments"].as_u64().unwrap() > q["rx_super_frames"].as_u64().unwrap(), "{q:#}");
    assert!(q["tx_data_valid"].as_u64().unwrap() > 1000, "{q:#}");
}

/// With offloads off the workload's kernel does the work itself.
#[test]
fn tap_workload_without_offloads() {
    if !require_root("tap_workload_without_offloads") {
        return;
    }
    let q = tap_case("off");
    assert_eq!(q["rx_super_frames"], 0, "{q:#}");
    assert_eq!(q["rx_checksums_completed"], 0, "{q:#}");
}

/// A multi-queue TAP port (`IFF_MULTI_QUEUE`), one queue per worker: the
/// workload's flows spread over both queues and both directions stay intact.
#[test]
fn tap_workload_two_queues_two_workers() {
    if !require_root("tap_workload_two_queues_two_workers") {
        return;
    }
    let o = build_opts(&Opts { queues: 2, tap_offloads: Some("on"), ..Opts::default() });
    let st = o.d.status();
    assert_eq!(st["io"]["workers"], 2, "{st:#}");
    assert!(pings(&o.wa, "198.51.100.2", 2), "A -> B ping failed: {st:#}");
    let before = o.d.settled_counters();
    // Each connection's random flow hash picks the TAP queue it is sent on.
    for i in 0..8 {
        tcp_transfer(&o.wa, &o.wb, "198.51.100.2", 200_000 + i);
    }
    std::thread::sleep(Duration::from_millis(700));
    let st = o.d.status();
    let socks = st["io"]["ports"][0]["sockets"].as_array().unwrap();
    assert_eq!(socks.len(), 2, "one io_uring queue per TAP queue: {st:#}");
    for s in socks {
        assert!(
            s["rx_packets"].as_u64().unwrap() > 0,
            "TAP queue {} got nothing: {st:#}",
            s["queue"]
        );
    }
    let c = o.d.settled_counters();
    assert_eq!(c["dropped"], before["dropped"], "unexpected drops: {c:#}");
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}
