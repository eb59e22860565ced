//! Workloads with their devices' default offloads (checksum offload, TSO and
//! GSO on, as a container's veth has them) across the overlay to the
//! kernel's VXLAN device, through every workload-port backend: AF_XDP (the
//! default), AF_PACKET, TAP and the TSO-keeping tc port. A workload's kernel
//! leaves every TCP and UDP checksum partial for an offload; overlayd
//! finishes them (AF_XDP: from the bytes, `encap::settle`; the others: as
//! the virtio-net header says; the tc port's tier flows: the uplink's
//! transmit, as for any skb the kernel encapsulates).
//!
//! Each test moves 50 MB of TCP each way over IPv4 inner packets, and 5 MB
//! over IPv6 ones, compared by SHA-256 at both ends; echoes UDP datagrams of
//! assorted sizes both ways over both; has tshark check every inner TCP
//! checksum on the underlay; checks that neither workload's kernel refused a
//! segment for its checksum; and fails if a workload's offloads changed.
//!
//! The topology is `netns_tests::kernel_peer`. Host B's uplink veth has
//! checksum offload off in the first tests, standing in for a NIC that
//! finishes what its kernel leaves partial (each test says so on its output);
//! the `peer_leaves_*` tests leave it on, so B's tunnel packets reach
//! overlayd with partial outer or inner checksums, as from a peer whose
//! uplink is itself a veth.

use std::time::Instant;

use netns_tests::kernel_peer::*;
use netns_tests::*;

const BULK: usize = 50_000_000;
const BULK_V6: usize = 5_000_000;
const DATAGRAMS: u32 = 150;

/// What a case checks beyond the common ones.
struct Case<'a> {
    opts: Opts<'a>,
    /// Bytes of TCP each way over IPv4 inner packets.
    bulk: usize,
}

/// Runs the exchange and returns the overlay (still running), the number of
/// inner TCP checksums from B that were partial on the wire, and the status.
fn run_case(c: &Case) -> (Overlay, usize, serde_json::Value) {
    let started = Instant::now();
    let o = build_opts(&c.opts);
    // The tc tier hands host A's uplink veth GSO super-frames with partial
    // inner checksums, which its peer (and a capture there) would get as
    // they are; a NIC cuts and finishes them on the wire, as `tx off` does.
    finish_checksums_like_a_nic(&o.ha, &o.up);
    for f in &o.workload_features {
        assert!(f.is_on("tx-checksumming"), "a workload starts with checksum offload off: {f:?}");
    }
    let why = |d: &Overlayd| {
        format!("counters: {:#}\nstatus: {:#}\nlog:\n{}", d.counters(), d.status(), d.log())
    };
    assert!(pings(&o.wa, WB_IP, 2), "A -> B ping failed; {}", why(&o.d));
    assert!(pings(&o.wb, WA_IP6, 2), "B -> A IPv6 ping failed; {}", why(&o.d));
    let before = o.d.settled_counters();

    let dir = TempDir::new("csum");
    let pcap = dir.join("underlay.pcap");
    let cap = Capture::start(&o.hb, &o.ub, "udp port 4789", &pcap, 1_000_000, 240);
    tcp_transfer(&o.wa, &o.wb, WB_IP, c.bulk);
    tcp_transfer(&o.wb, &o.wa, WA_IP, c.bulk);
    tcp_transfer(&o.wa, &o.wb, WB_IP6, BULK_V6);
    tcp_transfer(&o.wb, &o.wa, WA_IP6, BULK_V6);
    udp_echo(&o.wa, &o.wb, WB_IP, DATAGRAMS, 1380);
    udp_echo(&o.wb, &o.wa, WA_IP, DATAGRAMS, 1380);
    udp_echo(&o.wa, &o.wb, WB_IP6, DATAGRAMS, 1380);
    udp_echo(&o.wb, &o.wa, WA_IP6, DATAGRAMS, 1380);
    let file = cap.finish();

    // tshark: 1 good, 0 bad, 2 unverified. Everything overlayd sent is
    // complete; from B too when its uplink finishes checksums.
    let a_ip = if c.opts.v6 { "2001:db8::1" } else { "192.0.2.1" };
    let src = if c.opts.v6 { "ipv6.src" } else { "ip.src" };
    let fields =
        [src, "tcp.checksum.status", "tcp.checksum", "tcp.checksum_calculated", "frame.number"];
    let rows = tshark_fields(&file, "vxlan && tcp", &fields);
    // Linux's skb_checksum_help writes a computed zero as 0xffff (the same
    // number in ones' complement, which receivers accept); tshark calls it
    // bad (RFC 1624). One segment in 65,536 of what B's kernel finishes.
    let valid = |r: &[String]| r[1] == "1" || (r[2] == "0xffff" && r[3] == "0x0000");
    let from_a = rows.iter().filter(|r| r[0] == a_ip).count();
    // At the tc tier's rate the capture socket may miss some (on a loaded
    // VM): enough to show A's traffic crossed is half of it.
    assert!(from_a > c.bulk / 3000, "only {from_a} inner TCP packets from A captured");
    let mut partial_from_b = 0;
    for r in &rows {
        if r[0] == a_ip || c.opts.peer_uplink_tx_off {
            assert!(valid(r), "an inner TCP checksum on the underlay is not valid: {r:?}");
        } else if !valid(r) {
            partial_from_b += 1;
        }
    }
    let udp = tshark_fields(&file, "vxlan && udp.checksum.status == 0", &[src, "udp.srcport"]);
    let bad_udp_from_a: Vec<_> = udp.iter().filter(|r| r[0] == a_ip).collect();
    assert!(bad_udp_from_a.is_empty(), "bad UDP checksums from A: {bad_udp_from_a:?}");
    eprintln!(
        "{} inner TCP packets captured, {from_a} from A, {partial_from_b} partial from B",
        rows.len()
    );

    for ns in [&o.wa, &o.wb] {
        let errs = checksum_errors(ns);
        assert!(
            errs.iter().all(|(_, n)| *n == 0),
            "{}'s kernel refused checksums: {errs:?}",
            ns.name()
        );
    }
    let after = o.d.settled_counters();
    assert_eq!(after["dropped"], before["dropped"], "drops during the exchange: {after:#}");
    o.assert_workload_offloads_unchanged();
    let st = o.d.status();
    eprintln!("ports: {:#}", st["io"]["ports"]);
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
    (o, partial_from_b, st)
}

fn stop(o: Overlay) {
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}

/// Sum of a per-queue statistic over a port's sockets.
fn queue_sum(st: &serde_json::Value, port: usize, field: &str) -> u64 {
    st["io"]["ports"][port]["sockets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[field].as_u64().unwrap_or(0))
        .sum()
}

/// B -> A's bulk segments reached the workload on `port` merged into
/// super-frames (io/gro.rs): many, of many segments each.
fn assert_merged_towards_workload(st: &serde_json::Value, port: usize) {
    let supers = queue_sum(st, port, "tx_super_frames");
    let merged = queue_sum(st, port, "tx_merged_segments");
    assert!(supers > 10, "{supers} super-frames written to the workload: {st:#}");
    assert!(merged >= 8 * supers, "{merged} segments in {supers} super-frames: {st:#}");
    eprintln!("towards the workload: {merged} segments merged into {supers} super-frames");
}

#[test]
fn af_xdp_workload_with_default_offloads() {
    if !require_root("af_xdp_workload_with_default_offloads") {
        return;
    }
    let (o, _, st) = run_case(&Case { opts: Opts::default(), bulk: BULK });
    assert_eq!(st["io"]["ports"][0]["backend"], "af_xdp", "{st:#}");
    // Attaching XDP to the host side pins the workload's TSO off: it sends
    // MTU-sized segments, each with a partial checksum that overlayd finished.
    let tso = o.wa.exec(&["ethtool", "-k", o.workload_features[1].dev()]);
    assert!(tso.contains("tcp-segmentation-offload: off"), "{tso}");
    // ...and status says so, with the backend that keeps TSO.
    let advice = st["io"]["ports"][0]["advice"].to_string();
    assert!(advice.contains("TSO") && advice.contains(r#"backend = \"tc\""#), "{st:#}");
    // Finished by overlayd on AF_XDP, or (established flows) by the XDP
    // tier, or passed to the tc tier, whose skbs keep their checksum state
    // (where host B's uplink refuses XDP frames, as here: veth defaults).
    let done = queue_sum(&st, 0, "rx_checksums_completed");
    let tier = &st["io"]["ports"][0]["tier"];
    let to_tc = tier["to_tc"].as_u64().unwrap_or(0);
    let finished = tier["finished_checksum"].as_u64().unwrap_or(0);
    assert!(
        (done + to_tc + finished) as usize > BULK / 1500,
        "only {done} + {to_tc} + {finished} checksums finished: {st:#}"
    );
    stop(o);
}

#[test]
fn af_packet_workload_with_default_offloads() {
    if !require_root("af_packet_workload_with_default_offloads") {
        return;
    }
    let opts = Opts { wl_backend: "af_packet", ..Opts::default() };
    let (o, _, st) = run_case(&Case { opts, bulk: BULK });
    assert_eq!(st["io"]["ports"][0]["backend"], "af_packet", "{st:#}");
    // TSO stays on: the workload hands over super-frames, which overlayd cuts.
    assert!(queue_sum(&st, 0, "rx_super_frames") > 10, "{st:#}");
    assert!(queue_sum(&st, 0, "rx_checksums_completed") > 0, "{st:#}");
    // ...and gets B's segments back as super-frames.
    assert_merged_towards_workload(&st, 0);
    stop(o);
}

/// The TSO-keeping port (`backend = "tc"`): no XDP program on the
/// workload's veth, so the workload keeps TSO and hands over super-frames;
/// tc encapsulates the tier's flows whole (segmented at the uplink's
/// transmit) and punts the rest to overlayd through the punt device.
#[test]
fn tc_workload_with_default_offloads() {
    if !require_root("tc_workload_with_default_offloads") {
        return;
    }
    let opts = Opts { wl_backend: "tc", ..Opts::default() };
    let (o, _, st) = run_case(&Case { opts, bulk: BULK });
    let port = &st["io"]["ports"][0];
    assert_eq!(port["backend"], "tc", "{st:#}");
    let wl = port["interface"].as_str().unwrap().to_string();
    let link = o.ha.ip(&["-d", "link", "show", "dev", &wl]);
    assert!(!link.contains("prog/xdp"), "an XDP program on the tc port: {link}");
    let tso = o.wa.exec(&["ethtool", "-k", o.workload_features[1].dev()]);
    assert!(tso.contains("tcp-segmentation-offload: on"), "{tso}");
    assert!(port.get("advice").is_none(), "advice for a tc port: {st:#}");
    // The tier took the bulk flows in tc, as super-frames: far fewer skbs
    // than the 1,398-byte segments 2 x 50 MB of TCP make.
    let tier = &port["tier"];
    let tc_hit = tier["tc_hit"].as_u64().unwrap_or(0);
    assert!(tc_hit > 100, "the tc port encapsulated {tc_hit} skbs: {st:#}");
    let segments = (BULK / 1398) as u64;
    assert!(tc_hit < segments / 2, "{tc_hit} skbs for {segments} segments: no GSO kept: {st:#}");
    assert_eq!(tier["tc_lost"].as_u64(), Some(0), "{st:#}");
    // The first packets and everything else reached the engine by the punt
    // device's socket.
    assert!(queue_sum(&st, 0, "rx_packets") > 0, "{st:#}");
    let Overlay { d, ha, .. } = o;
    assert!(ha.ip(&["link", "show"]).contains("ovp"), "no punt device");
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
    let links = ha.ip(&["link", "show"]);
    assert!(!links.contains("ovp"), "the punt device was left behind: {links}");
}

/// The default configuration (`backend` left out, so `auto`) on veths:
/// `run` chooses tc for the workload port and the uplink, so neither the
/// workload nor the peer host loses TSO, and says so in status.
#[test]
fn the_default_backend_on_veths_is_tc_and_keeps_tso() {
    if !require_root("the_default_backend_on_veths_is_tc_and_keeps_tso") {
        return;
    }
    let opts = Opts { backend: "auto", wl_backend: "auto", ns_prefix: "auto", ..Opts::default() };
    let (o, _, st) = run_case(&Case { opts, bulk: BULK });
    for port in st["io"]["ports"].as_array().unwrap() {
        assert_eq!(port["backend"], "tc", "{st:#}");
        assert_eq!(port["backend_auto"], true, "{st:#}");
        assert!(port.get("advice").is_none(), "advice for a tc port: {st:#}");
    }
    // Neither veth carries an XDP program, so both other ends keep TSO.
    assert!(!xdp_attached(&o.ha), "an XDP program on a port left to auto");
    let tso = o.wa.exec(&["ethtool", "-k", o.workload_features[1].dev()]);
    assert!(tso.contains("tcp-segmentation-offload: on"), "{tso}");
    let peer = o.hb.exec(&["ethtool", "-k", &o.ub]);
    assert!(peer.contains("generic-segmentation-offload: on"), "{peer}");
    // The bulk flows went through the tier in tc, as super-frames.
    let tc_hit = st["io"]["ports"][0]["tier"]["tc_hit"].as_u64().unwrap_or(0);
    assert!(tc_hit > 100, "the tc port encapsulated {tc_hit} skbs: {st:#}");
    // `rule list` names the tier and the software path of the port's
    // backend: every rule here runs in the tc tier or on the punt socket.
    let rules = o.d.ctl(&["rule", "list"]);
    let runs_in: Vec<&str> = rules.lines().skip(1).filter(|l| !l.trim().is_empty()).collect();
    assert!(!runs_in.is_empty(), "{rules}");
    assert!(
        runs_in.iter().any(|l| l.ends_with("tc tier after the first packet")),
        "no rule in the tc tier: {rules}"
    );
    assert!(!rules.contains("XDP tier") && !rules.contains("AF_XDP"), "{rules}");
    o.d.stop();
}

/// `auto` needs the XDP tier to choose tc (without it a tc port sends every
/// packet through overlayd): with `xdp_tier = "off"` a veth gets AF_XDP,
/// and the advice that says what that costs.
#[test]
fn the_default_backend_without_the_tier_is_af_xdp() {
    if !require_root("the_default_backend_without_the_tier_is_af_xdp") {
        return;
    }
    let opts = Opts {
        backend: "auto",
        wl_backend: "auto",
        tier: TierMode::Off,
        ns_prefix: "autooff",
        ..Opts::default()
    };
    let o = build_opts(&opts);
    assert!(pings(&o.wa, WB_IP, 2), "A -> B ping failed: {:#}", o.d.counters());
    let st = o.d.status();
    for port in st["io"]["ports"].as_array().unwrap() {
        assert_eq!(port["backend"], "af_xdp", "{st:#}");
        assert_eq!(port["backend_auto"], true, "{st:#}");
        assert!(port["advice"].to_string().contains("TSO"), "{st:#}");
    }
    stop(o);
}

/// kill -9 leaves the tc port's punt device (a network device, which no
/// process exit removes); `overlayd pinned` lists it and `overlayd cleanup`
/// removes it with its peer.
#[test]
fn tc_port_punt_device_after_kill_9_is_cleaned_up() {
    if !require_root("tc_port_punt_device_after_kill_9_is_cleaned_up") {
        return;
    }
    let o = build_opts(&Opts { wl_backend: "tc", ..Opts::default() });
    // The first packets of a flow go through the punt device to the engine.
    assert!(pings(&o.wa, WB_IP, 2), "A -> B ping failed: {:#}", o.d.status());
    let Overlay { d, ha, .. } = o;
    let pid = d.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    for _ in 0..50 {
        if !std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let links = ha.ip(&["-br", "link", "show"]);
    let punts: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("ovp") || n.starts_with("ovq"))
        .collect();
    assert_eq!(punts.len(), 2, "kill -9 did not leave the punt pair: {links}");
    let bin = project_bin("overlayd");
    let bin = bin.to_str().unwrap();
    let listed = ha.exec(&[bin, "pinned"]);
    let punt = punts.iter().find(|n| n.starts_with("ovp")).unwrap();
    let punt = punt.split('@').next().unwrap();
    assert!(listed.contains(&format!("punt device {punt}")), "`overlayd pinned`: {listed}");
    let said = ha.exec(&[bin, "cleanup"]);
    assert!(said.contains(&format!("removed the punt device {punt}")), "cleanup said: {said}");
    let links = ha.ip(&["-br", "link", "show"]);
    assert!(!links.contains("ovp") && !links.contains("ovq"), "left after cleanup: {links}");
    drop(d);
}

#[test]
fn tap_workload_with_default_offloads() {
    if !require_root("tap_workload_with_default_offloads") {
        return;
    }
    let opts = Opts { tap_offloads: Some("on"), ..Opts::default() };
    let (o, _, st) = run_case(&Case { opts, bulk: BULK });
    assert_eq!(st["io"]["ports"][0]["backend"], "tap", "{st:#}");
    assert!(queue_sum(&st, 0, "rx_super_frames") > 10, "{st:#}");
    assert_merged_towards_workload(&st, 0);
    stop(o);
}

/// Host B's uplink keeps checksum offload on, so its kernel leaves the inner
/// checksum of what it sends partial (the outer UDP checksum is zero).
#[test]
fn peer_leaves_inner_checksums_partial() {
    if !require_root("peer_leaves_inner_checksums_partial") {
        return;
    }
    let opts = Opts { peer_uplink_tx_off: false, ..Opts::default() };
    let (o, partial_from_b, st) = run_case(&Case { opts, bulk: 20_000_000 });
    assert!(partial_from_b > 100, "B left few inner checksums partial ({partial_from_b})");
    let done = queue_sum(&st, 1, "rx_checksums_completed");
    assert!(done as usize >= partial_from_b, "the uplink finished {done} checksums: {st:#}");
    stop(o);
}

/// As above over an IPv6 underlay, where the outer UDP checksum is
/// mandatory. B's kernel leaves the inner checksum partial and computes the
/// outer one for it finished (local checksum offload), so the outer one only
/// verifies once overlayd has finished the inner; when nothing inside is
/// partial (an ICMP echo) it leaves the outer one partial instead.
#[test]
fn peer_leaves_outer_checksums_partial_over_ipv6() {
    if !require_root("peer_leaves_outer_checksums_partial_over_ipv6") {
        return;
    }
    let opts = Opts { v6: true, peer_uplink_tx_off: false, ..Opts::default() };
    let (o, partial_from_b, st) = run_case(&Case { opts, bulk: 20_000_000 });
    assert!(partial_from_b > 100, "B left few inner checksums partial ({partial_from_b})");
    let done = queue_sum(&st, 1, "rx_checksums_completed");
    assert!(done as usize >= partial_from_b, "the uplink finished {done} checksums: {st:#}");
    let before = o.d.settled_counters();
    assert!(pings(&o.wb, WA_IP, 3), "B -> A ping failed: {:#}", o.d.counters());
    // Queue statistics are published every half second.
    std::thread::sleep(std::time::Duration::from_millis(700));
    let st = o.d.status();
    let outer = queue_sum(&st, 1, "rx_checksums_completed") - done;
    assert!(outer >= 3, "{outer} partial outer checksums finished for 3 echo requests: {st:#}");
    let after = o.d.settled_counters();
    assert_eq!(after["dropped"], before["dropped"], "{after:#}");
    stop(o);
}

/// The offload check itself: it notices `tx off` on a workload.
#[test]
fn offload_check_notices_a_changed_workload() {
    if !require_root("offload_check_notices_a_changed_workload") {
        return;
    }
    let (a, b) = (Netns::new("oca"), Netns::new("ocb"));
    let (da, db) = (unique("oc"), unique("oc"));
    veth(&a, &da, &b, &db);
    let f = Features::read(&a, &da);
    assert_eq!(f.changes(), Vec::<String>::new());
    a.exec(&["ethtool", "-K", &da, "tx", "off"]);
    let changes = f.changes();
    for c in ["tx-checksum-ip-generic: true -> false", "tx-checksumming is off"] {
        assert!(changes.iter().any(|x| x == c), "{c:?} not among {changes:?}");
    }
}

/// The tc uplink (`backend = "tc"` on host A's uplink veth, beside a tc
/// workload port): no XDP program on the uplink, so host B's uplink keeps
/// its TSO and B's kernel hands over VXLAN super-frames whole (B's uplink
/// keeps checksum offload on here: nothing cuts them before A; its VXLAN
/// device sends outer UDP checksums, partial in its super-frames). tc on A's
/// uplink decapsulates the tier's flows as super-frames into the workload's
/// veth and punts the rest to the engine; the engine's sends leave by a
/// packet socket on the uplink.
#[test]
fn tc_uplink_takes_super_frames_whole() {
    if !require_root("tc_uplink_takes_super_frames_whole") {
        return;
    }
    let opts = Opts {
        backend: "tc",
        wl_backend: "tc",
        peer_uplink_tx_off: false,
        udp_checksum: true,
        ..Opts::default()
    };
    let (o, _, st) = run_case(&Case { opts, bulk: BULK });
    let up = &st["io"]["ports"][1];
    assert_eq!(up["backend"], "tc", "{st:#}");
    let link = o.ha.ip(&["-d", "link", "show", "dev", &o.up]);
    assert!(!link.contains("prog/xdp"), "an XDP program on the tc uplink: {link}");
    let tso = o.hb.exec(&["ethtool", "-k", &o.ub]);
    assert!(tso.contains("tcp-segmentation-offload: on"), "B's uplink lost TSO: {tso}");
    // B -> A's bulk flows were decapsulated in tc as super-frames: far
    // fewer skbs than the 1,398-byte segments 50 MB of TCP make.
    let tier = &up["tier"];
    let tc_hit = tier["tc_hit"].as_u64().unwrap_or(0);
    let segments = (BULK / 1398) as u64;
    assert!(tc_hit > 100, "the tc uplink decapsulated {tc_hit} skbs: {st:#}");
    assert!(tc_hit < segments / 4, "{tc_hit} skbs for {segments} segments: no GSO kept: {st:#}");
    assert_eq!(tier["tc_lost"].as_u64(), Some(0), "{st:#}");
    eprintln!("tc uplink: {tc_hit} skbs decapsulated in tc for {segments}+ segments B -> A");
    eprintln!("{}", tc_uplink_run_time(&o));
    // Its first packets reached the engine through the punt device.
    assert!(queue_sum(&st, 1, "rx_packets") > 0, "{st:#}");
    let c = o.d.settled_counters();
    assert_eq!(c["conserved"], true, "{c:#}");
    let Overlay { d, ha, .. } = o;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
    let links = ha.ip(&["link", "show"]);
    assert!(!links.contains("ovp"), "a punt device was left behind: {links}");
}

/// The tc uplink without the tier: every tunnel packet goes to the engine
/// through the punt device, B's super-frames whole, and the engine cuts
/// them inside their outer headers (io/gso.rs) before decapsulating, then
/// merges the segments again on the way to the workload (io/gro.rs).
#[test]
fn tc_uplink_without_the_tier_cuts_super_frames_in_the_engine() {
    if !require_root("tc_uplink_without_the_tier_cuts_super_frames_in_the_engine") {
        return;
    }
    let opts = Opts {
        backend: "tc",
        wl_backend: "tc",
        peer_uplink_tx_off: false,
        udp_checksum: true,
        tier: TierMode::Off,
        ..Opts::default()
    };
    let (o, _, st) = run_case(&Case { opts, bulk: 20_000_000 });
    let up = &st["io"]["ports"][1];
    assert_eq!(up["backend"], "tc", "{st:#}");
    let supers = queue_sum(&st, 1, "rx_super_frames");
    let segs = queue_sum(&st, 1, "rx_segments");
    assert!(supers > 10, "the engine cut {supers} super-frames from the uplink: {st:#}");
    assert!(segs > supers, "{segs} segments from {supers} super-frames: {st:#}");
    eprintln!("tc uplink, no tier: {supers} tunnel super-frames cut into {segs} segments");
    // Cut to be decapsulated, merged again for the workload.
    assert_merged_towards_workload(&st, 0);
    stop(o);
}

/// The tc uplink over an IPv6 underlay (2001:db8::/32): as
/// `tc_uplink_takes_super_frames_whole`, with 70-byte outer headers and the
/// outer UDP checksum mandatory (B's VXLAN device sends it; its uplink keeps
/// checksum offload on, so its super-frames' are partial, computed when cut).
/// 5 MB of TCP each way over IPv4 and over IPv6 inner packets, SHA-256
/// compared; tc took B's super-frames whole: far fewer skbs than segments.
#[test]
fn tc_uplink_takes_super_frames_whole_over_ipv6() {
    if !require_root("tc_uplink_takes_super_frames_whole_over_ipv6") {
        return;
    }
    const BULK_SMALL: usize = 5_000_000;
    let opts = tc_uplink_v6();
    let (o, _, st) = run_case(&Case { opts, bulk: BULK_SMALL });
    let up = &st["io"]["ports"][1];
    assert_eq!(up["backend"], "tc", "{st:#}");
    let link = o.ha.ip(&["-d", "link", "show", "dev", &o.up]);
    assert!(!link.contains("prog/xdp"), "an XDP program on the tc uplink: {link}");
    // B -> A: 5 MB over IPv4 and 5 MB over IPv6 inner packets, in segments
    // of at most 1,378 bytes of payload (MTU 1430).
    let tier = &up["tier"];
    let tc_hit = tier["tc_hit"].as_u64().unwrap_or(0);
    let segments = ((BULK_SMALL + BULK_V6) / 1378) as u64;
    assert!(tc_hit > 20, "the tc uplink decapsulated {tc_hit} skbs: {st:#}");
    assert!(tc_hit < segments / 4, "{tc_hit} skbs for {segments} segments: no GSO kept: {st:#}");
    assert_eq!(tier["tc_lost"].as_u64(), Some(0), "{st:#}");
    eprintln!("tc uplink over IPv6: {tc_hit} skbs decapsulated in tc for {segments}+ segments");
    eprintln!("{}", tc_uplink_run_time(&o));
    let c = o.d.settled_counters();
    assert_eq!(c["conserved"], true, "{c:#}");
    let Overlay { d, ha, .. } = o;
    d.stop();
    let links = ha.ip(&["link", "show"]);
    assert!(!links.contains("ovp"), "a punt device was left behind: {links}");
}

/// The tc uplink program's `run_cnt` and `run_time_ns`, as a line to print.
/// The per-skb cost in docs/decisions.md.
fn tc_uplink_run_time(o: &Overlay) -> String {
    match tc_uplink_stats(o) {
        Ok((runs, ns)) => format!(
            "tc uplink program: {runs} runs, {ns} ns, {:.0} ns per skb",
            ns as f64 / runs.max(1) as f64
        ),
        Err(why) => why,
    }
}

/// The tc uplink program's `run_cnt` and `run_time_ns` (counted while
/// `kernel.bpf_stats_enabled` is 1), from overlayd's own descriptors
/// (`/proc/PID/fdinfo`: its TCX link on the uplink names the program;
/// bpftool cannot list programs on these VMs).
fn tc_uplink_stats(o: &Overlay) -> Result<(u64, u64), String> {
    type Info = std::collections::HashMap<String, String>;
    let link = o.ha.ip(&["-o", "link", "show", "dev", &o.up]);
    let ifindex = link.split(':').next().unwrap_or("").trim().to_string();
    let dir = format!("/proc/{}/fdinfo", o.d.pid());
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))?;
    let infos: Vec<Info> = entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|text| {
            let kv = text.lines().filter_map(|l| l.split_once(':'));
            kv.map(|(k, v)| (k.to_string(), v.trim().to_string())).collect()
        })
        .collect();
    let get = |i: &Info, k: &str| i.get(k).cloned().unwrap_or_default();
    let prog_id = infos
        .iter()
        .find(|i| {
            get(i, "link_type") == "tcx"
                && get(i, "ifindex") == ifindex
                && get(i, "attach_type").contains("ingress")
        })
        .map(|i| get(i, "prog_id"))
        .ok_or_else(|| format!("no TCX link of overlayd's on {} (ifindex {ifindex})", o.up))?;
    let p = infos
        .iter()
        .find(|i| get(i, "prog_id") == prog_id && i.contains_key("run_cnt"))
        .ok_or_else(|| format!("overlayd holds no descriptor of program {prog_id}"))?;
    let n = |k: &str| get(p, k).parse::<u64>().unwrap_or(0);
    Ok((n("run_cnt"), n("run_time_ns")))
}

/// What overlayd counts for malformed IPv6 tunnel packets of a flow the tc
/// uplink holds, injected at B's uplink after the flow's good ones: every
/// drop reason, and the skbs tc decapsulated. `backend`: the uplink's;
/// `tier`: `xdp_tier`.
fn malformed_v6_counts(
    backend: &str,
    tier: TierMode,
) -> (std::collections::BTreeMap<String, u64>, u64) {
    let opts =
        Opts { v6: true, backend, wl_backend: "tc", tier, ns_prefix: "tcv6", ..Opts::default() };
    let o = build_opts(&opts);
    assert!(pings(&o.wb, WA_IP, 1), "B -> A ping failed: {:#}", o.d.counters());
    let we = o.workload_features[1].dev().to_string();
    let (a_mac, wa_mac) = (o.ha.mac(&o.up), o.wa.mac(&we));
    let inner = "eth(src=02:00:00:00:0b:01,dst=WA)/ipv4(src=198.51.100.2,dst=198.51.100.1)/udp(sport=20001,dport=9000)/payload(len=40)".replace("WA", &wa_mac);
    let outer = |udp: &str| {
        engine::packet_spec::build(&format!(
            "eth(dst={a_mac})/ipv6(src=2001:db8::2,dst=2001:db8::1)/{udp}/{inner}"
        ))
        .unwrap()
    };
    let good = outer("udp(sport=50000,dport=4789,csum=auto)/vxlan(vni=42)");
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut f = good.clone();
        edit(&mut f);
        f
    };
    let cases = [
        with(&|f| *f.last_mut().unwrap() ^= 0xff), // udp_bad_checksum (outer)
        outer("udp(sport=50000,dport=4789,csum=0)/vxlan(vni=42)"), // udp_zero_checksum_v6
        outer("udp(sport=50000,dport=4789,csum=auto)/vxlan(vni=42,flags=0)"),
        outer("udp(sport=50000,dport=4789,csum=auto)/vxlan(vni=43)"),
        with(&|f| f.extend_from_slice(&[0; 4])), // trailing bytes
        // RFC 8200: an unknown destination option whose action bits say
        // discard (0x5e: 01), behind which the packet is dropped by name
        with(&|f| v6_option(f, 60, 0x5e)), // ipv6_option_discard
    ];
    // ...and one with a Hop-by-Hop header of padding only, which a
    // destination skips: delivered.
    let padded = with(&|f| v6_option(f, 0, 1));
    // The flow first, so its entry is installed (with the tier on) before
    // the malformed packets of the same inner flow arrive.
    inject(&o.hb, &o.ub, &vec![good.clone(); 20]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let u = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let tc_hit = |o: &Overlay| u(&o.d.status()["io"]["ports"][1]["tier"]["tc_hit"]);
    let before = o.d.settled_counters();
    let hits0 = tc_hit(&o);
    inject(&o.hb, &o.ub, &vec![good.clone(); 20]);
    for f in &cases {
        inject(&o.hb, &o.ub, &vec![f.clone(); 3]);
    }
    inject(&o.hb, &o.ub, &vec![padded; 3]);
    let after = o.d.settled_counters();
    if backend == "tc" && tier == TierMode::Auto {
        // The cost of a hit alone (a single 124-byte inner frame: both
        // checksums walked), while kernel.bpf_stats_enabled is 1.
        let before = tc_uplink_stats(&o);
        inject(&o.hb, &o.ub, &vec![good.clone(); 200]);
        if let (Ok((r0, t0)), Ok((r1, t1))) = (before, tc_uplink_stats(&o)) {
            let per = (t1 - t0) as f64 / (r1 - r0).max(1) as f64;
            eprintln!(
                "tc uplink, 200 single hits over IPv6: {} runs, {per:.0} ns per skb",
                r1 - r0
            );
        }
    }
    // Tier statistics are published every half second.
    std::thread::sleep(std::time::Duration::from_millis(700));
    let hits = tc_hit(&o) - hits0;
    assert_eq!(after["conserved"], true, "{after:#}");
    let drops = Overlayd::drops_since(&before, &after);
    stop(o);
    (drops, hits)
}

/// Both of host A's ports on tc, an IPv6 underlay, host B's uplink with
/// checksum offload on (its VXLAN super-frames reach A whole).
fn tc_uplink_v6() -> Opts<'static> {
    Opts {
        v6: true,
        backend: "tc",
        wl_backend: "tc",
        peer_uplink_tx_off: false,
        ns_prefix: "tcv6",
        ..Opts::default()
    }
}

/// Frame `f` (Ethernet + IPv6 + ...) with an 8-byte extension header of
/// type `ty` inserted after the IPv6 header, holding one option of type
/// `opt` (data: four zero bytes; 1 is PadN). The outer UDP checksum does
/// not cover it.
fn v6_option(f: &mut Vec<u8>, ty: u8, opt: u8) {
    let upper = f[20];
    f[20] = ty;
    f.splice(54..54, [upper, 0, opt, 4, 0, 0, 0, 0]);
    let plen = u16::from_be_bytes([f[18], f[19]]) + 8;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
}

/// Malformed IPv6 tunnel packets of a flow the tc uplink decapsulates get
/// the drop reasons they get without its tier and with an AF_XDP uplink
/// (XDP steering and decap tier) instead: a wrong outer UDP checksum
/// is `udp_bad_checksum` (tc walks a single packet's checksum, as the XDP
/// tier does), a zero one `udp_zero_checksum_v6`; the flow's good packets
/// are decapsulated in tc.
#[test]
fn tc_uplink_malformed_ipv6_packets_keep_their_drop_reasons() {
    if !require_root("tc_uplink_malformed_ipv6_packets_keep_their_drop_reasons") {
        return;
    }
    let (on, hits) = malformed_v6_counts("tc", TierMode::Auto);
    let (off, _) = malformed_v6_counts("tc", TierMode::Off);
    let (xdp, _) = malformed_v6_counts("af_xdp", TierMode::Auto);
    eprintln!(
        "drops with the tier: {on:?}; without: {off:?}; AF_XDP uplink: {xdp:?}; tc hits {hits}"
    );
    assert_eq!(on, off, "drop reasons differ with the tc uplink's tier on");
    assert_eq!(on, xdp, "drop reasons differ between the tc and the AF_XDP uplink");
    for reason in [
        "udp_bad_checksum",
        "udp_zero_checksum_v6",
        "vxlan_no_i_flag",
        "unknown_tunnel",
        "ipv6_option_discard",
    ] {
        assert_eq!(on.get(reason), Some(&3), "{reason}: {on:?}");
    }
    // Five dropped kinds, three each (bytes after the IPv6 payload are
    // trimmed, not a drop); the padded Hop-by-Hop ones crossed.
    assert_eq!(on.values().sum::<u64>(), 15, "{on:?}");
    assert!(hits >= 20, "tc decapsulated {hits} of the flow's 20 good packets");
}

/// A tracefs instance of its own recording `net:net_dev_start_xmit` on the
/// named devices (each skb a device starts to send, with its GSO size,
/// segments and type); removed on drop.
struct XmitTrace {
    dir: std::path::PathBuf,
}

impl XmitTrace {
    fn start(devs: &[&str]) -> XmitTrace {
        // A machine that has not mounted tracefs yet (it is not always
        // mounted at boot): mount it, as perf and bpftrace do.
        if !std::path::Path::new("/sys/kernel/tracing/instances").exists() {
            let ok = std::process::Command::new("mount")
                .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "tracefs is not mounted and mounting it at /sys/kernel/tracing failed");
        }
        let dir =
            std::path::PathBuf::from(format!("/sys/kernel/tracing/instances/{}", unique("tcv6")));
        std::fs::create_dir(&dir).expect("tracefs instance (is /sys/kernel/tracing mounted?)");
        let t = XmitTrace { dir };
        let ev = t.dir.join("events/net/net_dev_start_xmit");
        let filter: Vec<String> = devs.iter().map(|d| format!("name == \"{d}\"")).collect();
        std::fs::write(ev.join("filter"), filter.join(" || ")).unwrap();
        std::fs::write(t.dir.join("buffer_size_kb"), "8192").unwrap();
        std::fs::write(ev.join("enable"), "1").unwrap();
        t
    }

    /// Per device, the GSO skbs it started to send: (gso_type, count), and
    /// how many single ones.
    fn gso_types(&self) -> std::collections::BTreeMap<String, (Vec<(String, u64)>, u64)> {
        let text = std::fs::read_to_string(self.dir.join("trace")).unwrap();
        let mut by_dev: std::collections::BTreeMap<
            String,
            (std::collections::BTreeMap<String, u64>, u64),
        > = Default::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let field = |k: &str| {
                line.split_whitespace().find_map(|w| w.strip_prefix(k)).unwrap_or("").to_string()
            };
            let e = by_dev.entry(field("dev=")).or_default();
            if field("gso_segs=") == "0" && field("gso_size=") == "0" {
                e.1 += 1;
            } else {
                *e.0.entry(field("gso_type=")).or_default() += 1;
            }
        }
        by_dev.into_iter().map(|(d, (t, n))| (d, (t.into_iter().collect(), n))).collect()
    }
}

impl Drop for XmitTrace {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.join("events/net/net_dev_start_xmit/enable"), "0");
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// After tc strips a GSO skb's outer headers, the kernel (6.18) leaves
/// `SKB_GSO_UDP_TUNNEL(_CSUM)` in its GSO type and `skb->encapsulation`
/// set: bpf_skb_adjust_room has no flag to clear them. What that does to a
/// workload that routes such super-frames on (ip_forward=1) to a second
/// veth `fa` -> `fc` (namespace wc, 203.0.113.2): B -> wc TCP, SHA-256
/// compared, (1) with `fa` at its default offloads (it passes GSO skbs on),
/// (2) with TSO off on `fa` (the hop segments them in software), (3) into a
/// VXLAN device of wa's own over `fa` (a nested tunnel, VNI 7, no UDP
/// checksum, to wc's). Prints the GSO types `wl` (right after tc) and the
/// hop started to send; every transfer must arrive intact.
#[test]
fn tc_uplink_super_frames_forwarded_on_by_a_workload() {
    if !require_root("tc_uplink_super_frames_forwarded_on_by_a_workload") {
        return;
    }
    const N: usize = 5_000_000;
    let opts = tc_uplink_v6();
    let o = build_opts(&opts);
    let wc = Netns::new("tcv6wc");
    let (fa, fc) = (unique("fa"), unique("fc"));
    veth(&o.wa, &fa, &wc, &fc);
    o.wa.ip(&["addr", "add", "203.0.113.1/24", "dev", &fa]);
    wc.ip(&["addr", "add", "203.0.113.2/24", "dev", &fc]);
    wc.ip(&["route", "add", "default", "via", "203.0.113.1"]);
    o.wa.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    o.wb.ip(&["route", "add", "203.0.113.0/24", "via", WA_IP]);
    // The nested tunnel: 192.0.2.0/24 inside VNI 7 between wa and wc.
    let (va, vc) = (unique("va"), unique("vc"));
    for (ns, dev, local, remote, ip) in [
        (&o.wa, &va, "203.0.113.1", "203.0.113.2", "192.0.2.1/24"),
        (&wc, &vc, "203.0.113.2", "203.0.113.1", "192.0.2.2/24"),
    ] {
        ns.ip(&[
            "link",
            "add",
            dev,
            "type",
            "vxlan",
            "id",
            "7",
            "local",
            local,
            "remote",
            remote,
            "dstport",
            "4789",
            "noudpcsum",
        ]);
        ns.ip(&["addr", "add", ip, "dev", dev]);
        ns.ip(&["link", "set", dev, "up"]);
    }
    wc.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.1"]);
    o.wb.ip(&["route", "add", "192.0.2.0/24", "via", WA_IP]);
    assert!(pings(&o.wb, "203.0.113.2", 2), "B -> wc ping failed: {:#}", o.d.counters());
    assert!(pings(&o.wb, "192.0.2.2", 2), "B -> wc (nested) ping failed");
    let wl = "wl"; // overlayd's workload port: the veth end in host A
    let wl_dev = o.ha.ip(&["-o", "link", "show"]);
    let wl_dev = wl_dev
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n))
        .find(|n| n.starts_with(wl))
        .expect("the workload port's veth in host A")
        .to_string();
    let cases: [(&str, &str, &str); 3] = [
        ("routed on, default offloads", "203.0.113.2", "on"),
        ("routed on, TSO off on the hop", "203.0.113.2", "off"),
        ("into a nested VXLAN tunnel", "192.0.2.2", "on"),
    ];
    for (what, dst, tso) in cases {
        o.wa.exec(&["ethtool", "-K", &fa, "tso", tso]);
        let trace = XmitTrace::start(&[&wl_dev, &fa, &va]);
        let before = o.d.settled_counters();
        tcp_transfer(&o.wb, &wc, dst, N);
        let seen = trace.gso_types();
        drop(trace);
        let after = o.d.settled_counters();
        eprintln!(
            "{what}: {N} bytes B -> wc intact; (GSO types, singles) started per device: {seen:?}"
        );
        assert_eq!(after["dropped"], before["dropped"], "{what}: drops: {after:#}");
        let errs = checksum_errors(&wc);
        assert!(
            errs.iter().all(|(_, n)| *n == 0),
            "{what}: wc's kernel refused checksums: {errs:?}"
        );
    }
    let c = o.d.settled_counters();
    assert_eq!(c["conserved"], true, "{c:#}");
    drop(wc);
    stop(o);
}
