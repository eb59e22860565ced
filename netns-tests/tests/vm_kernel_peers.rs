//! `overlayd` against the Linux kernel's own tunnel devices and its Open
//! vSwitch datapath: the VM lane (netns-tests/vm/run.sh boots Debian's stock
//! kernel, which has ip_gre, ip6_gre, geneve and openvswitch; this host's
//! kernel may have none of them). Each case: pings both ways, a TCP
//! transfer both ways, counter conservation, and the underlay dissected by
//! tshark on the peer's end of the link.
//!
//! ```text
//!  wa (198.51.100.1)            ha: overlayd                hb: kernel               wb (198.51.100.2)
//!  we ---veth--- wl [workload]  up [uplink] ---veth--- ub  gretap|ip6gretap|geneve + br0 --- bw ---veth--- wbe
//!                192.0.2.1 | 2001:db8::1          192.0.2.2 | 2001:db8::2
//! ```
//!
//! L3 GRE (`gre`, `ip6gre`): host B routes between its tunnel device and
//! workload B instead of bridging. Open vSwitch: host B's bridge is a kernel
//! datapath bridge with a VXLAN or GRE port.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use netns_tests::vm_lane::{require_kernel, Dumpcap};
use netns_tests::*;

const WA_IP: &str = "198.51.100.1";
const WB_IP: &str = "198.51.100.2";
const WA_IP6: &str = "2001:db8:1::1";
const WB_IP6: &str = "2001:db8:1::2";
/// Bytes sent over TCP in each direction: enough for full-sized segments
/// and a window of them, small enough for an emulated CPU.
const TCP_BYTES: usize = 400_000;
/// Room for the largest outer header of these cases (IPv6, GRE with key,
/// checksum and sequence, inner Ethernet: 70 bytes) and Geneve options.
const WORKLOAD_MTU: &str = "1400";

/// The underlay of a case.
#[derive(Clone, Copy, PartialEq)]
enum Under {
    V4,
    V6,
}

impl Under {
    fn a(self) -> &'static str {
        match self {
            Under::V4 => "192.0.2.1",
            Under::V6 => "2001:db8::1",
        }
    }
    fn b(self) -> &'static str {
        match self {
            Under::V4 => "192.0.2.2",
            Under::V6 => "2001:db8::2",
        }
    }
    fn plen(self) -> &'static str {
        match self {
            Under::V4 => "24",
            Under::V6 => "64",
        }
    }
}

/// Whether the tunnel carries Ethernet (bridged on host B) or IP (routed).
#[derive(Clone, Copy, PartialEq)]
enum Payload {
    Ethernet,
    Ipv4,
}

/// Host B's side of a case.
enum Peer {
    /// A kernel tunnel device: `ip link add tun0 type ARGS...`.
    Kernel(Vec<String>),
    /// Open vSwitch's kernel datapath, with a port of this type and options.
    Ovs { kind: &'static str, options: Vec<String> },
}

struct Case {
    name: &'static str,
    under: Under,
    payload: Payload,
    peer: Peer,
    /// overlayd's tunnel: type and type-specific fields (TOML).
    tunnel: String,
    /// GRE key or VNI, matched on decapsulation and checked on the wire.
    id: Option<u32>,
    /// What the tunnel packets must carry, both ways.
    wire: Wire,
}

#[derive(Clone, Copy, Default)]
struct Wire {
    /// GRE (rather than UDP: VXLAN, Geneve).
    gre: bool,
    gre_checksum: bool,
    gre_sequence: bool,
    /// UDP destination port (VXLAN, Geneve).
    udp_port: Option<u16>,
}

fn workload(ns: &Netns, dev: &str, ip: &str, ip6: Option<&str>) {
    ns.ip(&["link", "set", dev, "mtu", WORKLOAD_MTU]);
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", dev]);
    if let Some(ip6) = ip6 {
        ns.ip(&["-6", "addr", "add", &format!("{ip6}/64"), "dev", dev, "nodad"]);
    }
}

fn overlayd_config(c: &Case, wl: &str, up: &str, we_mac: &str) -> String {
    let (a, b) = (c.under.a(), c.under.b());
    let tunnel = &c.tunnel;
    let id_match = c.id.map(|v| format!(", vni = {v}")).unwrap_or_default();
    let (encap_match, set_dst) = match c.payload {
        Payload::Ipv4 => (", ethertype = 0x0800", format!("{{ set_eth_dst = \"{we_mac}\" }}, ")),
        Payload::Ethernet => ("", String::new()),
    };
    format!(
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
uplink = "up"
local = "{a}"
remote = "{b}"
{tunnel}

[[rules]]
id = 10
match = {{ in_port = "wl"{encap_match} }}
actions = [{{ encap = "to-b" }}]

[[rules]]
id = 20
match = {{ tunnel = "to-b"{id_match} }}
actions = [{set_dst}{{ output = "wl" }}]
"#
    )
}

/// Host B: the kernel device (bridged with workload B, or routed to it), or
/// an Open vSwitch kernel-datapath bridge. Returns the OVS instance, which
/// must live as long as the test.
fn peer(c: &Case, hb: &Netns, wb: &Netns, bw: &str, wbe: &str) -> Option<Ovs> {
    let (a, b) = (c.under.a(), c.under.b());
    match &c.peer {
        Peer::Kernel(args) => {
            let mut v = vec!["link", "add", "tun0", "type"];
            v.extend(args.iter().map(String::as_str));
            hb.ip(&v);
            // No link-local address, so no router solicitation of host B's
            // own crosses the tunnel.
            hb.ip(&["link", "set", "tun0", "addrgenmode", "none"]);
            hb.ip(&["link", "set", "tun0", "mtu", "1430"]);
            match c.payload {
                Payload::Ethernet => {
                    hb.ip(&["link", "add", "br0", "type", "bridge"]);
                    hb.ip(&["link", "set", "br0", "addrgenmode", "none"]);
                    hb.ip(&["link", "set", "tun0", "master", "br0", "up"]);
                    hb.ip(&["link", "set", bw, "master", "br0", "up"]);
                    hb.ip(&["link", "set", "br0", "up"]);
                }
                Payload::Ipv4 => {
                    // Host B forwards between the tunnel and workload B;
                    // workload B sends to host B's MAC address.
                    hb.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
                    hb.exec(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
                    hb.ip(&["link", "set", "tun0", "up"]);
                    hb.ip(&["route", "add", &format!("{WA_IP}/32"), "dev", "tun0"]);
                    hb.ip(&["route", "add", &format!("{WB_IP}/32"), "dev", bw]);
                    let wbe_mac = wb.mac(wbe);
                    hb.ip(&["neigh", "replace", WB_IP, "lladdr", &wbe_mac, "dev", bw]);
                    let bw_mac = hb.mac(bw);
                    wb.ip(&["neigh", "replace", WA_IP, "lladdr", &bw_mac, "dev", wbe]);
                }
            }
            None
        }
        Peer::Ovs { kind, options } => {
            let ovs = Ovs::start(hb);
            ovs.vsctl(&[
                "add-br",
                "br-int",
                "--",
                "set",
                "bridge",
                "br-int",
                "datapath_type=system",
            ]);
            let mut port: Vec<String> = [
                "add-port",
                "br-int",
                "tun0",
                "--",
                "set",
                "interface",
                "tun0",
                &format!("type={kind}"),
                &format!("options:remote_ip={a}"),
                &format!("options:local_ip={b}"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            port.extend(options.iter().cloned());
            ovs.vsctl(&port.iter().map(String::as_str).collect::<Vec<_>>());
            ovs.vsctl(&["add-port", "br-int", bw]);
            hb.ip(&["link", "set", "br-int", "up"]);
            Some(ovs)
        }
    }
}

/// The tunnel packets of a capture, dissected by tshark.
#[derive(Debug)]
struct Outer {
    src: String,
    /// GRE key, or VNI.
    id: Option<u32>,
    gre_proto: Option<u16>,
    csum_flag: bool,
    /// tshark's verdict on the GRE or UDP checksum: "1" good, "2" not
    /// checked, "3" not present (UDP only).
    csum_status: String,
    seq: Option<u32>,
    udp_dst: Option<u16>,
}

fn num(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        _ if s.is_empty() => None,
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn dissect(file: &Path, w: &Wire, geneve: bool, v6: bool) -> Vec<Outer> {
    let (filter, fields): (&str, &[&str]) = if w.gre {
        (
            "gre",
            &[
                "ip.src",
                "ipv6.src",
                "gre.key",
                "gre.proto",
                "gre.flags.checksum",
                "gre.checksum.status",
                "gre.sequence_number",
            ],
        )
    } else if geneve {
        ("geneve", &["ip.src", "ipv6.src", "geneve.vni", "udp.checksum.status", "udp.dstport"])
    } else {
        ("vxlan", &["ip.src", "ipv6.src", "vxlan.vni", "udp.checksum.status", "udp.dstport"])
    };
    tshark_fields(file, filter, fields)
        .into_iter()
        .map(|r| {
            let f = |i: usize| r.get(i).map(|s| s.trim()).unwrap_or("");
            // The outer header's address: the first ip.src of a packet over
            // IPv6 is the inner one.
            let src = if v6 { f(1) } else { f(0) }.to_string();
            if w.gre {
                Outer {
                    src,
                    id: num(f(2)),
                    gre_proto: num(f(3)).map(|p| p as u16),
                    csum_flag: matches!(f(4), "1" | "True" | "true"),
                    csum_status: f(5).to_string(),
                    seq: num(f(6)),
                    udp_dst: None,
                }
            } else {
                Outer {
                    src,
                    id: num(f(2)),
                    gre_proto: None,
                    csum_flag: false,
                    csum_status: f(3).to_string(),
                    seq: None,
                    udp_dst: num(f(4)).map(|p| p as u16),
                }
            }
        })
        .collect()
}

/// Both peers' tunnel packets: enough of them, each with the case's key or
/// VNI, GRE protocol type, checksum (present and right) and sequence
/// numbers (present and increasing), or UDP port.
fn check_wire(c: &Case, pkts: &[Outer]) {
    let proto = match c.payload {
        Payload::Ethernet => 0x6558,
        Payload::Ipv4 => 0x0800,
    };
    let mut by_src: HashMap<&str, Vec<&Outer>> = HashMap::new();
    for p in pkts {
        by_src.entry(p.src.as_str()).or_default().push(p);
    }
    for src in [c.under.a(), c.under.b()] {
        let mine = by_src.get(src).map(Vec::as_slice).unwrap_or_default();
        assert!(mine.len() > 50, "{}: only {} tunnel packets from {src}", c.name, mine.len());
        let mut last_seq: Option<u32> = None;
        for p in mine {
            assert_eq!(p.id, c.id, "{}: key or VNI of a packet from {src}: {p:?}", c.name);
            if c.wire.gre {
                assert_eq!(p.gre_proto, Some(proto), "{}: GRE protocol from {src}: {p:?}", c.name);
                assert_eq!(
                    p.csum_flag, c.wire.gre_checksum,
                    "{}: GRE C bit from {src}: {p:?}",
                    c.name
                );
                if c.wire.gre_checksum {
                    assert_eq!(
                        p.csum_status, "1",
                        "{}: bad GRE checksum from {src}: {p:?}",
                        c.name
                    );
                }
                assert_eq!(
                    p.seq.is_some(),
                    c.wire.gre_sequence,
                    "{}: GRE S bit from {src}: {p:?}",
                    c.name
                );
                if let (Some(s), Some(l)) = (p.seq, last_seq) {
                    assert!(s > l, "{}: GRE sequence from {src} went from {l} to {s}", c.name);
                }
                last_seq = p.seq;
            } else {
                assert_eq!(p.udp_dst, c.wire.udp_port, "{}: UDP port from {src}: {p:?}", c.name);
                // 1 good, 3 absent (a zero checksum over IPv4).
                assert!(
                    matches!(p.csum_status.as_str(), "1" | "3"),
                    "{}: bad UDP checksum from {src}: {p:?}",
                    c.name
                );
            }
        }
    }
}

fn run_case(c: &Case) {
    let start = Instant::now();
    let mut phases = Phases::new();
    let (ha, hb, wa, wb) =
        (Netns::new("vmha"), Netns::new("vmhb"), Netns::new("vmwa"), Netns::new("vmwb"));
    if c.payload == Payload::Ipv4 {
        // overlayd's L3 GRE carries IPv4 only: no IPv6 chatter from the workloads.
        kernel_peer::no_ipv6(&wa);
        kernel_peer::no_ipv6(&wb);
    }
    let (up, ub) = (unique("vmu"), unique("vmb"));
    let (wl, we) = (unique("vml"), unique("vme"));
    let (bw, wbe) = (unique("vmw"), unique("vmx"));
    veth(&ha, &up, &hb, &ub);
    veth(&ha, &wl, &wa, &we);
    veth(&hb, &bw, &wb, &wbe);
    let fam = if c.under == Under::V6 { "-6" } else { "-4" };
    let plen = c.under.plen();
    ha.ip(&[fam, "addr", "add", &format!("{}/{plen}", c.under.a()), "dev", &up, "nodad"]);
    hb.ip(&[fam, "addr", "add", &format!("{}/{plen}", c.under.b()), "dev", &ub, "nodad"]);
    let v6_inner = c.payload == Payload::Ethernet;
    workload(&wa, &we, WA_IP, v6_inner.then_some(WA_IP6));
    workload(&wb, &wbe, WB_IP, v6_inner.then_some(WB_IP6));
    if c.payload == Payload::Ipv4 {
        // No ARP crosses an L3 tunnel: workload A's neighbour is any MAC
        // address (the tunnel drops it).
        wa.ip(&["neigh", "replace", WB_IP, "lladdr", "02:00:00:00:00:02", "dev", &we]);
    }
    finish_checksums_like_a_nic(&hb, &ub);
    let ovs = peer(c, &hb, &wb, &bw, &wbe);

    phases.mark("hosts");
    let config = overlayd_config(c, &wl, &up, &wa.mac(&we));
    let d = Overlayd::start(&ha, &config);
    d.wait_neighbours();
    phases.mark("overlayd up");

    let dir = TempDir::new("vmpeer");
    let pcap = dir.join("underlay.pcap");
    let filter = match c.wire.udp_port {
        Some(p) => format!("udp port {p}"),
        None => "ip proto 47 or ip6 proto 47".into(),
    };
    let cap = Dumpcap::start(&hb, &ub, &filter, &pcap, 20_000, 240);
    let why = || {
        let ovs_flows = ovs.as_ref().map(|o| o.appctl(&["dpctl/dump-flows"])).unwrap_or_default();
        format!(
            "counters: {:#}\nstatus: {:#}\nlog:\n{}\nhost B links:\n{}\n{ovs_flows}",
            d.counters(),
            d.status(),
            d.log(),
            hb.ip(&["-s", "-d", "link", "show"])
        )
    };
    // The first packets may meet unresolved neighbours (and OVS's first
    // flow set-up): one retry before calling it a failure.
    assert!(
        pings(&wa, WB_IP, 3) || pings(&wa, WB_IP, 3),
        "{}: A -> B ping failed; {}",
        c.name,
        why()
    );
    assert!(pings(&wb, WA_IP, 3), "{}: B -> A ping failed; {}", c.name, why());
    if v6_inner {
        assert!(
            pings(&wa, WB_IP6, 3) || pings(&wa, WB_IP6, 3),
            "{}: A -> B IPv6 ping failed; {}",
            c.name,
            why()
        );
    }
    phases.mark("pings");
    tcp_transfer(&wa, &wb, WB_IP, TCP_BYTES);
    tcp_transfer(&wb, &wa, WA_IP, TCP_BYTES);
    let file = cap.finish();
    phases.mark("tcp");

    let geneve = c.tunnel.contains("geneve");
    check_wire(c, &dissect(&file, &c.wire, geneve, c.under == Under::V6));
    phases.mark("tshark");

    let counters = d.settled_counters();
    let t = &counters["tunnels"][0];
    assert!(t["encap"]["packets"].as_u64().unwrap() > 100, "{}: {counters:#}", c.name);
    assert!(t["decap"]["packets"].as_u64().unwrap() > 100, "{}: {counters:#}", c.name);
    assert_eq!(
        counters["dropped"],
        0,
        "{}: unexpected drops: {counters:#}\nlog:\n{}",
        c.name,
        d.log()
    );
    phases.mark("counters");
    d.stop();
    assert!(!xdp_attached(&ha), "{}: an XDP program was left attached", c.name);
    drop(ovs);
    drop((ha, hb, wa, wb));
    phases.mark("teardown");
    eprintln!("{}: {:.1} s ({})", c.name, start.elapsed().as_secs_f64(), phases);
}

/// Where a case's time goes (the emulated guest is slow; the lane's budget
/// is minutes).
struct Phases {
    last: Instant,
    done: Vec<(&'static str, f64)>,
}

impl Phases {
    fn new() -> Phases {
        Phases { last: Instant::now(), done: Vec::new() }
    }
    fn mark(&mut self, what: &'static str) {
        self.done.push((what, self.last.elapsed().as_secs_f64()));
        self.last = Instant::now();
    }
}

impl std::fmt::Display for Phases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.done.iter().map(|(w, s)| format!("{w} {s:.1}")).collect();
        f.write_str(&parts.join(", "))
    }
}

fn kernel(args: &str) -> Peer {
    Peer::Kernel(args.split_whitespace().map(str::to_string).collect())
}

/// `ip link add tun0 type KIND local B remote A EXTRA`.
fn kernel_dev(kind: &str, under: Under, extra: &str) -> Peer {
    // ip6gre devices add an encapsulation-limit option header by default;
    // overlayd (like most VTEPs) sends and expects none.
    let limit = if under == Under::V6 { "encaplimit none" } else { "" };
    kernel(&format!("{kind} local {} remote {} {extra} {limit}", under.b(), under.a()))
}

const GRE: Wire = Wire { gre: true, gre_checksum: false, gre_sequence: false, udp_port: None };

/// Every GRE flavour once, spread over the two underlays (each case costs
/// tens of seconds in the emulated guest).
fn gre_cases() -> Vec<Case> {
    use Under::{V4, V6};
    let eth = Payload::Ethernet;
    let csum_seq = Wire { gre_checksum: true, gre_sequence: true, ..GRE };
    let case = |name, under, payload, peer, tunnel: &str, id, wire| Case {
        name,
        under,
        payload,
        peer,
        tunnel: tunnel.into(),
        id,
        wire,
    };
    vec![
        case(
            "gretap without key",
            V4,
            eth,
            kernel_dev("gretap", V4, ""),
            "type = \"gretap\"",
            None,
            GRE,
        ),
        // csum and seq: the kernel sends both and drops what lacks them.
        case(
            "gretap key 9, checksum and sequence numbers",
            V4,
            eth,
            kernel_dev("gretap", V4, "key 9 csum seq"),
            "type = \"gretap\"\nkey = 9\ngre_checksum = true\ngre_sequence = true",
            Some(9),
            csum_seq,
        ),
        // NVGRE: VSID 5000 and flow id 0 are the GRE key 5000 << 8.
        case(
            "NVGRE VSID 5000",
            V4,
            eth,
            kernel_dev("gretap", V4, "key 1280000"),
            "type = \"nvgre\"\nvsid = 5000\nflow_id = 0",
            Some(1_280_000),
            GRE,
        ),
        case(
            "L3 gre without key",
            V4,
            Payload::Ipv4,
            kernel_dev("gre", V4, ""),
            "type = \"gre\"",
            None,
            GRE,
        ),
        case(
            "ip6gretap key 7",
            V6,
            eth,
            kernel_dev("ip6gretap", V6, "key 7"),
            "type = \"gretap\"\nkey = 7",
            Some(7),
            GRE,
        ),
        case(
            "ip6gretap without key, checksum and sequence numbers",
            V6,
            eth,
            kernel_dev("ip6gretap", V6, "csum seq"),
            "type = \"gretap\"\ngre_checksum = true\ngre_sequence = true",
            None,
            csum_seq,
        ),
        case(
            "L3 ip6gre key 11",
            V6,
            Payload::Ipv4,
            kernel_dev("ip6gre", V6, "key 11"),
            "type = \"gre\"\nkey = 11",
            Some(11),
            GRE,
        ),
    ]
}

/// Runs the case of `cases` named `name`, if this kernel (or the guest) has
/// every device kind in `kinds`.
fn run_named(test: &str, kinds: &[&str], cases: Vec<Case>, name: &str) {
    if !require_kernel(test, kinds) {
        return;
    }
    require_program("tshark");
    let c = cases.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no case {name:?}"));
    run_case(c);
}

fn gre(test: &str, name: &str) {
    run_named(test, &["gretap", "ip6gretap", "gre", "ip6gre"], gre_cases(), name);
}

#[test]
fn kernel_gretap_without_key() {
    gre("kernel_gretap_without_key", "gretap without key");
}

#[test]
fn kernel_gretap_key_checksum_sequence() {
    gre("kernel_gretap_key_checksum_sequence", "gretap key 9, checksum and sequence numbers");
}

#[test]
fn kernel_gretap_nvgre_key() {
    gre("kernel_gretap_nvgre_key", "NVGRE VSID 5000");
}

#[test]
fn kernel_l3_gre() {
    gre("kernel_l3_gre", "L3 gre without key");
}

#[test]
fn kernel_ip6gretap_key() {
    gre("kernel_ip6gretap_key", "ip6gretap key 7");
}

#[test]
fn kernel_ip6gretap_checksum_sequence() {
    gre(
        "kernel_ip6gretap_checksum_sequence",
        "ip6gretap without key, checksum and sequence numbers",
    );
}

#[test]
fn kernel_l3_ip6gre_key() {
    gre("kernel_l3_ip6gre_key", "L3 ip6gre key 11");
}

fn ovs_cases() -> Vec<Case> {
    vec![
        Case {
            name: "OVS kernel datapath, VXLAN VNI 42",
            under: Under::V4,
            payload: Payload::Ethernet,
            peer: Peer::Ovs { kind: "vxlan", options: vec!["options:key=42".into()] },
            tunnel: "type = \"vxlan\"\nvni = 42\nudp_checksum = true".into(),
            id: Some(42),
            wire: Wire { udp_port: Some(4789), ..Wire::default() },
        },
        Case {
            name: "OVS kernel datapath, GRE key 7",
            under: Under::V4,
            payload: Payload::Ethernet,
            peer: Peer::Ovs { kind: "gre", options: vec!["options:key=7".into()] },
            tunnel: "type = \"gretap\"\nkey = 7".into(),
            id: Some(7),
            wire: GRE,
        },
    ]
}

fn ovs(test: &str, name: &str) {
    require_program("ovs-vswitchd");
    if require_kernel(test, &["gretap", "vxlan"]) {
        assert!(in_kernel_ovs(), "{test}: the openvswitch kernel module cannot be loaded");
    }
    run_named(test, &["gretap", "vxlan"], ovs_cases(), name);
}

#[test]
fn kernel_ovs_datapath_vxlan() {
    ovs("kernel_ovs_datapath_vxlan", "OVS kernel datapath, VXLAN VNI 42");
}

#[test]
fn kernel_ovs_datapath_gre() {
    ovs("kernel_ovs_datapath_gre", "OVS kernel datapath, GRE key 7");
}

/// Loads the openvswitch module (OVS's kernel datapath) if it is not in.
fn in_kernel_ovs() -> bool {
    Path::new("/sys/module/openvswitch").exists()
        || output(&["modprobe", "openvswitch"]).status.success()
}

/// The kernel's `geneve` device, with and without options from overlayd.
/// The kernel device (not collect_metadata) skips options whose critical
/// bit is clear and sends none.
#[test]
fn kernel_geneve() {
    if !require_kernel("kernel_geneve", &["geneve"]) {
        return;
    }
    require_program("tshark");
    let wire = Wire { udp_port: Some(6081), ..Wire::default() };
    let mut cases = Vec::new();
    for under in [Under::V4, Under::V6] {
        let peer =
            || kernel(&format!("geneve id 42 remote {} dstport 6081 udp6zerocsumrx", under.a()));
        cases.push(Case {
            name: if under == Under::V4 { "geneve VNI 42" } else { "geneve VNI 42 over IPv6" },
            under,
            payload: Payload::Ethernet,
            peer: peer(),
            tunnel: "type = \"geneve\"\nvni = 42\nudp_checksum = true".into(),
            id: Some(42),
            wire,
        });
        cases.push(Case {
            name: if under == Under::V4 {
                "geneve VNI 42 with an option"
            } else {
                "geneve VNI 42 with an option, over IPv6"
            },
            under,
            payload: Payload::Ethernet,
            peer: peer(),
            tunnel: "type = \"geneve\"\nvni = 42\nudp_checksum = true\n\
                     options = [{ class = 0x0102, type = 0x01, data = \"0a0b0c0d\" }]"
                .into(),
            id: Some(42),
            wire,
        });
    }
    for c in &cases {
        run_case(c);
    }
}
