//! MAC learning and ARP/ND suppression end to end: `overlayd` on host A
//! and the Linux kernel's VXLAN device on hosts B and C, all three on one
//! underlay bridge. B and C flood to A only (A is the hub); A floods to
//! both. Workload M starts behind B and moves to C.
//!
//! ```text
//!  wa ---- A (overlayd) --+                 +-- B (kernel vx0 + br0) -- m (moves)
//!                         +-- ul: bridge ---+
//!                                           +-- C (kernel vx0 + br0)
//! ```

use std::time::{Duration, Instant};

use netns_tests::kernel_peer::no_ipv6;
use netns_tests::*;

const WA_IP: &str = "198.51.100.1";
const M_IP: &str = "198.51.100.2";
const WA_IP6: &str = "2001:db8:1::1";
const M_IP6: &str = "2001:db8:1::2";
const M_MAC: &str = "02:00:00:00:00:0b";
const WA_MAC: &str = "02:00:00:00:00:0a";

struct Net {
    wa: Netns,
    m: Netns,
    hb: Netns,
    hc: Netns,
    /// Host B's end of m's link.
    m_at_b: String,
    d: Overlayd,
    // Kept for their drop: the namespaces go when the test ends.
    _ha: Netns,
    _ul: Netns,
}

/// A kernel VTEP host at `ip` (192.0.2.x) flooding to A, its bridge `br0`.
fn kernel_host(ul: &Netns, ip: &str, v6: bool) -> Netns {
    let h = Netns::new("lrn-h");
    if !v6 {
        no_ipv6(&h);
    }
    let (u, p) = (unique("lu"), unique("lp"));
    veth(&h, &u, ul, &p);
    ul.ip(&["link", "set", &p, "master", "br0", "up"]);
    h.ip(&["addr", "add", &format!("{ip}/24"), "dev", &u]);
    finish_checksums_like_a_nic(&h, &u);
    h.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "42",
        "local",
        ip,
        "remote",
        "192.0.2.1",
        "dstport",
        "4789",
        "dev",
        &u,
        "noudpcsum",
    ]);
    h.ip(&["link", "add", "br0", "type", "bridge"]);
    h.ip(&["link", "set", "vx0", "master", "br0", "up"]);
    h.ip(&["link", "set", "br0", "up"]);
    h
}

/// Plugs workload `m` into host `h`'s bridge, with M's MAC and addresses;
/// returns the host's end of the link.
fn plug(m: &Netns, h: &Netns) -> String {
    let (hd, md) = (unique("lhm"), "eth0");
    veth(h, &hd, m, md);
    h.ip(&["link", "set", &hd, "master", "br0", "up"]);
    m.ip(&["link", "set", md, "address", M_MAC]);
    m.ip(&["link", "set", md, "mtu", "1450"]);
    m.ip(&["addr", "add", &format!("{M_IP}/24"), "dev", md]);
    if !m.exec(&["sysctl", "-n", "net.ipv6.conf.all.disable_ipv6"]).starts_with('1') {
        m.ip(&["-6", "addr", "add", &format!("{M_IP6}/64"), "dev", md, "nodad"]);
    }
    m.ip(&["link", "set", md, "up"]);
    hd
}

fn build(network: &str, v6: bool) -> Net {
    let prep = |ns: &Netns| {
        if !v6 {
            no_ipv6(ns);
        }
    };
    let ul = Netns::new("lrn-ul");
    ul.ip(&["link", "add", "br0", "type", "bridge"]);
    ul.ip(&["link", "set", "br0", "up"]);
    let ha = Netns::new("lrn-ha");
    no_ipv6(&ha);
    let (wa, m) = (Netns::new("lrn-wa"), Netns::new("lrn-m"));
    prep(&wa);
    prep(&m);
    let (up, p) = (unique("lup"), unique("lp"));
    veth(&ha, &up, &ul, &p);
    ul.ip(&["link", "set", &p, "master", "br0", "up"]);
    ha.ip(&["addr", "add", "192.0.2.1/24", "dev", &up]);
    let hb = kernel_host(&ul, "192.0.2.2", v6);
    let hc = kernel_host(&ul, "192.0.2.3", v6);
    let (wl, we) = (unique("lwl"), unique("lwe"));
    veth(&ha, &wl, &wa, &we);
    wa.ip(&["link", "set", &we, "address", WA_MAC]);
    wa.ip(&["link", "set", &we, "mtu", "1450"]);
    wa.ip(&["addr", "add", &format!("{WA_IP}/24"), "dev", &we]);
    if v6 {
        wa.ip(&["-6", "addr", "add", &format!("{WA_IP6}/64"), "dev", &we, "nodad"]);
    }
    let m_at_b = plug(&m, &hb);
    let config = format!(
        r#"
[[ports]]
name = "wl"
kind = "workload"
interface = "{wl}"
backend = "af_xdp"

[[ports]]
name = "up"
kind = "uplink"
interface = "{up}"
backend = "af_xdp"

[[tunnels]]
name = "to-b"
type = "vxlan"
uplink = "up"
local = "192.0.2.1"
remote = "192.0.2.2"
vni = 42

[[tunnels]]
name = "to-c"
type = "vxlan"
uplink = "up"
local = "192.0.2.1"
remote = "192.0.2.3"
vni = 42

[[rules]]
id = 1
match = {{ in_port = "wl" }}
actions = [{{ forward_l2 = 42 }}]

[[rules]]
id = 2
match = {{ tunnel = "to-b" }}
actions = [{{ forward_l2 = 42 }}]

[[rules]]
id = 3
match = {{ tunnel = "to-c" }}
actions = [{{ forward_l2 = 42 }}]

[[flood]]
vni = 42
tunnels = ["to-b", "to-c"]
ports = ["wl"]

{network}
"#
    );
    let d = Overlayd::start(&ha, &config);
    d.wait_neighbours();
    Net { wa, m, hb, hc, m_at_b, d, _ha: ha, _ul: ul }
}

fn learned(d: &Overlayd) -> serde_json::Value {
    d.ctl_json(&["fdb", "list"])["learned"].clone()
}

/// The learned entry of `mac`, if any.
fn entry(d: &Overlayd, mac: &str) -> Option<serde_json::Value> {
    learned(d)["macs"].as_array().unwrap().iter().find(|e| e["mac"] == mac).cloned()
}

fn why(d: &Overlayd) -> String {
    format!("fdb: {}\ncounters: {:#}\nlog:\n{}", d.ctl(&["fdb", "list"]), d.counters(), d.log())
}

#[test]
fn a_moved_workload_talks_at_once_from_its_new_host_and_entries_age_out() {
    if !require_root("a_moved_workload_talks_at_once_from_its_new_host_and_entries_age_out") {
        return;
    }
    let n = build("[[networks]]\nvni = 42\nageing_secs = 3", false);
    assert!(pings(&n.wa, M_IP, 3), "wa -> m (behind B) failed; {}", why(&n.d));
    let e = entry(&n.d, M_MAC).unwrap_or_else(|| panic!("m not learned; {}", why(&n.d)));
    assert_eq!(e["tunnel"], "to-b", "{e}");
    assert_eq!(entry(&n.d, WA_MAC).unwrap()["port"], "wl");
    let text = n.d.ctl(&["fdb", "list"]);
    assert!(
        text.lines().any(|l| l.split_whitespace().take(4).eq(["42", M_MAC, "to-b", "learned"])),
        "{text}"
    );

    // m moves to C: its link on B goes, a new one on C comes (same MAC and
    // address). Its first packet from there is an ARP request; A learns
    // the move from it and sends wa's answer to C.
    n.hb.ip(&["link", "del", &n.m_at_b]);
    plug(&n.m, &n.hc);
    let t0 = Instant::now();
    let first = n.m.exec_output(&["ping", "-c", "1", "-W", "2", WA_IP]);
    let took = t0.elapsed();
    assert!(
        first.status.success(),
        "m's first ping from C went unanswered; {}\n{}",
        String::from_utf8_lossy(&first.stdout),
        why(&n.d)
    );
    eprintln!(
        "moved workload: first exchange from the new host (ARP + ping) answered in {:.1} ms",
        took.as_secs_f64() * 1000.0
    );
    assert!(took < Duration::from_millis(1000), "took {took:?}: an ARP retry was needed");
    assert!(pings(&n.wa, M_IP, 2), "wa -> m (behind C) failed; {}", why(&n.d));
    let e = entry(&n.d, M_MAC).unwrap();
    assert_eq!((e["tunnel"].as_str(), e["moves"].as_u64()), (Some("to-c"), Some(1)), "{e}");
    assert!(learned(&n.d)["counters"]["moved"].as_u64() >= Some(1));

    // Silence: every entry ages out after 3 s.
    let gone = wait_until(Duration::from_secs(8), || {
        learned(&n.d)["macs"].as_array().is_some_and(|v| v.is_empty())
    });
    assert!(gone, "entries did not age out; {}", why(&n.d));
    assert!(learned(&n.d)["counters"]["aged"].as_u64() >= Some(2), "{}", why(&n.d));
    n.d.settled_counters();
    n.d.stop();
}

/// Frames of `display_filter` the capture at `file` holds.
fn count(file: &std::path::Path, display_filter: &str) -> usize {
    tshark_fields(file, display_filter, &["frame.number"]).len()
}

#[test]
fn suppressed_arp_and_nd_send_no_copy_to_a_third_host() {
    if !require_root("suppressed_arp_and_nd_send_no_copy_to_a_third_host") {
        return;
    }
    let network = format!(
        "[[networks]]\nvni = 42\nsuppress_arp_nd = true\nbindings = [\
         {{ ip = \"{M_IP}\", mac = \"{M_MAC}\" }}, {{ ip = \"{M_IP6}\", mac = \"{M_MAC}\" }}]"
    );
    let n = build(&network, true);
    let dir = TempDir::new("lrn-cap");
    let file = dir.join("c.pcap");
    // What C's VTEP receives, decapsulated.
    let cap = Capture::start(&n.hc, "vx0", "", &file, 10_000, 20);
    assert!(pings(&n.wa, M_IP, 2), "wa -> m failed; {}", why(&n.d));
    let ok = n.wa.exec_output(&["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", M_IP6]);
    assert!(ok.status.success(), "wa -> m over IPv6 failed; {}", why(&n.d));
    // A question nobody's binding answers floods, to C too.
    let _ = n.wa.exec_output(&["arping", "-c", "1", "-w", "1", "198.51.100.99"]);
    let _ = n.wa.exec_output(&["ping", "-c", "1", "-W", "1", "198.51.100.99"]);
    let file = cap.finish();
    let arp_for_m = count(&file, &format!("arp.opcode == 1 && arp.dst.proto_ipv4 == {M_IP}"));
    let ns_for_m =
        count(&file, &format!("icmpv6.type == 135 && icmpv6.nd.ns.target_address == {M_IP6}"));
    let arp_other = count(&file, "arp.opcode == 1 && arp.dst.proto_ipv4 == 198.51.100.99");
    assert_eq!((arp_for_m, ns_for_m), (0, 0), "C received a flooded question; {}", why(&n.d));
    assert!(arp_other >= 1, "the unknown question did not reach C: the count proves nothing");
    eprintln!(
        "host C received {arp_for_m} ARP requests and {ns_for_m} NS for m, \
         {arp_other} for the unbound 198.51.100.99"
    );
    let c = &learned(&n.d)["counters"];
    assert!(c["answered"].as_u64() >= Some(2), "{c}");
    assert!(c["flooded"].as_u64() >= Some(1), "{c}");
    // The trace shows the decision.
    let t = n.d.ctl(&[
        "trace",
        "--in-port",
        "wl",
        "--packet",
        &format!(
            "eth(src={WA_MAC},dst=ff:ff:ff:ff:ff:ff)/arp(op=1,sha={WA_MAC},spa={WA_IP},tpa={M_IP})"
        ),
    ]);
    assert!(t.contains(&format!("{M_IP} is at {M_MAC}, answered")), "{t}");
    n.d.settled_counters();
    n.d.stop();
}
