//! The tc tier (dataplane/tc/tier.bpf.c) with real traffic: workloads at
//! their default veth offloads, overlayd on host A (AF_XDP on both ports,
//! tiers at their defaults), the kernel's VXLAN device on host B
//! (`netns_tests::kernel_peer`). Established TCP flows from workload A have
//! partial checksums, so the XDP program passes them up to the tc tier,
//! which encapsulates the (GRO-coalesced) skbs and redirects them to the
//! uplink. 50 MB of TCP each way, SHA-256 compared at both ends; tshark on
//! the underlay finds every inner TCP checksum from A valid; the tc tier's
//! work is in the counters, which are conserved; the workloads' offloads
//! are left alone, and nothing is left attached.
//!
//! Host A's uplink veth has `tx off` in this test, standing in for a NIC:
//! a veth hands its peer the skb as it is (one GSO super-frame, inner
//! checksum still partial), which a capture on host B would show as such;
//! with `tx off` the kernel cuts the segments and finishes the checksums on
//! the way out, as a NIC would on the wire.

use netns_tests::kernel_peer::*;
use netns_tests::*;

const BULK: usize = 50_000_000;

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

#[test]
fn bulk_tcp_with_default_offloads_runs_in_the_tc_tier() {
    if !require_root("bulk_tcp_with_default_offloads_runs_in_the_tc_tier") {
        return;
    }
    let o = build_opts(&Opts::default());
    for f in &o.workload_features {
        assert!(f.is_on("tx-checksumming"), "a workload starts with checksum offload off: {f:?}");
    }
    finish_checksums_like_a_nic(&o.ha, &o.up);
    let why = |d: &Overlayd| format!("status: {:#}\nlog:\n{}", d.status(), d.log());
    assert!(pings(&o.wa, WB_IP, 2), "A -> B ping failed; {}", why(&o.d));
    let before = o.d.settled_counters();
    let tier0 = o.d.status()["io"]["ports"][0]["tier"].clone();
    assert!(tier0.is_object(), "no tier on the workload port; {}", why(&o.d));

    let dir = TempDir::new("tctier");
    let pcap = dir.join("underlay.pcap");
    let cap = Capture::start(&o.hb, &o.ub, "udp port 4789", &pcap, 1_000_000, 240);
    tcp_transfer(&o.wa, &o.wb, WB_IP, BULK);
    tcp_transfer(&o.wb, &o.wa, WA_IP, BULK);
    let file = cap.finish();

    let st = o.d.status();
    let t = &st["io"]["ports"][0]["tier"];
    let (to_tc, hit, lost) = (
        u(&t["to_tc"]) - u(&tier0["to_tc"]),
        u(&t["tc_hit"]) - u(&tier0["tc_hit"]),
        u(&t["tc_lost"]) - u(&tier0["tc_lost"]),
    );
    eprintln!("tc tier: {to_tc} frames passed up, {hit} skbs encapsulated, {lost} lost");
    assert!(to_tc as usize > BULK / 1500 / 2, "few frames went to the tc tier: {t:#}");
    assert!(hit > 0 && hit <= to_tc, "the tc tier encapsulated {hit} skbs: {t:#}");
    assert_eq!(lost, 0, "the tc tier dropped skbs: {t:#}");

    // tshark: 1 good. What A sent was cut and finished on A's way out.
    let fields = ["tcp.checksum.status", "tcp.checksum", "tcp.checksum_calculated", "frame.len"];
    let rows = tshark_fields(&file, "vxlan && tcp && ip.src == 192.0.2.1", &fields);
    // The capture socket may miss some at this rate on a loaded VM.
    assert!(rows.len() > BULK / 3000, "only {} inner TCP packets from A captured", rows.len());
    // skb_checksum_help writes a computed zero as 0xffff (see default_offloads.rs).
    let valid = |r: &[String]| r[0] == "1" || (r[1] == "0xffff" && r[2] == "0x0000");
    let bad: Vec<_> = rows.iter().filter(|r| !valid(r)).take(5).collect();
    assert!(bad.is_empty(), "inner TCP checksums from A that are not valid: {bad:?}");
    let longest = rows.iter().filter_map(|r| r[3].parse::<usize>().ok()).max().unwrap_or(0);
    assert!(longest <= 1514, "a frame of {longest} bytes on a 1500-byte underlay");

    for ns in [&o.wa, &o.wb] {
        let errs = checksum_errors(ns);
        assert!(
            errs.iter().all(|(_, n)| *n == 0),
            "{}'s kernel refused checksums: {errs:?}",
            ns.name()
        );
    }
    // The tc tier's segments are counted where the engine would have
    // counted them, and nothing is lost: rx = tx + dropped.
    let after = o.d.settled_counters();
    assert_eq!(after["dropped"], before["dropped"], "drops during the exchange: {after:#}");
    let wl_rx = |c: &serde_json::Value| u(&c["ports"][0]["rx"]["packets"]);
    let rx = wl_rx(&after) - wl_rx(&before);
    assert!(
        rx >= to_tc,
        "port wl counted {rx} frames received, the tc tier alone had {to_tc}: {after:#}"
    );
    o.assert_workload_offloads_unchanged();
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
    let net = ha.exec(&["bpftool", "net", "show"]);
    assert!(!net.contains("overlayd_tc"), "a tc program was left attached: {net}");
}

/// Host B's uplink veth keeps its defaults (no XDP program, GRO off), so its
/// peer, host A's uplink, refuses XDP frames, as in the bulk harness. With
/// workload A's checksum offload off (turned off here on purpose: its
/// frames then carry full checksums, which the XDP tier would forward
/// itself), every frame of the established flow goes to the tc tier
/// instead of AF_XDP: `to_tc` grows with the transfer, `no_tx` does not.
#[test]
fn full_checksums_go_to_the_tc_tier_when_the_uplink_refuses_xdp_frames() {
    if !require_root("full_checksums_go_to_the_tc_tier_when_the_uplink_refuses_xdp_frames") {
        return;
    }
    let o = build_opts(&Opts::default());
    let why = |d: &Overlayd| format!("status: {:#}\nlog:\n{}", d.status(), d.log());
    let dev = o.wa.exec(&["sh", "-c", "ls /sys/class/net | grep -v '^lo$'"]);
    let dev = dev.trim();
    o.wa.exec(&["ethtool", "-K", dev, "tx", "off"]);
    assert!(pings(&o.wa, WB_IP, 2), "A -> B ping failed; {}", why(&o.d));
    // The owner probes the outputs every second.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let st = o.d.status();
    let ports = st["io"]["tier"]["ports"].as_array().cloned().unwrap_or_default();
    let up = ports.iter().find(|p| p["port"] == "up").cloned().unwrap_or_default();
    assert!(up["not_output"].is_string(), "host A's uplink takes XDP frames here: {st:#}");
    let tier0 = st["io"]["ports"][0]["tier"].clone();

    let dir = TempDir::new("tcfull");
    let pcap = dir.join("underlay.pcap");
    let cap = Capture::start(&o.hb, &o.ub, "udp port 4789", &pcap, 1_000_000, 240);
    tcp_transfer(&o.wa, &o.wb, WB_IP, BULK);
    let file = cap.finish();

    let t = o.d.status()["io"]["ports"][0]["tier"].clone();
    let d = |k: &str| u(&t[k]) - u(&tier0[k]);
    eprintln!("tc tier: to_tc {}, tc_hit {}, no_tx {}", d("to_tc"), d("tc_hit"), d("no_tx"));
    assert!(d("to_tc") as usize > BULK / 1500 / 2, "few frames went to the tc tier: {t:#}");
    assert_eq!(d("tc_hit"), d("to_tc"), "the tc tier did not take all it was passed: {t:#}");
    assert_eq!(d("no_tx") + d("tc_lost") + d("partial_checksum"), 0, "{t:#}");

    let fields = ["tcp.checksum.status", "tcp.checksum", "tcp.checksum_calculated"];
    let rows = tshark_fields(&file, "vxlan && tcp && ip.src == 192.0.2.1", &fields);
    assert!(rows.len() > BULK / 3000, "only {} inner TCP packets from A captured", rows.len());
    let bad: Vec<_> = rows.iter().filter(|r| r[0] != "1").take(5).collect();
    assert!(bad.is_empty(), "inner TCP checksums from A that are not valid: {bad:?}");
    let c = o.d.settled_counters();
    assert_eq!(c["dropped"], 0, "drops: {c:#}");
    o.d.stop();
}
