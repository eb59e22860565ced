//! The offload path's tc flower filters, parsed and run by a real kernel:
//! the VM lane (netns-tests/vm/run.sh; Debian's kernel has cls_flower,
//! act_tunnel_key, act_mirred, act_vlan and act_gact, this host's may not).
//!
//! The real `Offloader` places the rules and sends its netlink messages to
//! the kernel, with two differences from a NIC: every veth is reported as a
//! port of one embedded switch, and each filter goes in with `skip_hw`
//! instead of `skip_sw` (the same message otherwise), so the kernel's
//! software classifier runs it. Traffic then proves each filter matches
//! what it was meant for and acts on it: tunnel_key set and mirred to the
//! kernel's collect_md tunnel device carry workload A's frames to host B's
//! kernel VTEP; flower's tunnel keys, tunnel_key unset and mirred bring the
//! answers back; vlan push, pop and modify carry tagged traffic between two
//! workloads; gact drops what the drop rule names. The filters' own counters
//! (tc -s) and a tshark capture of the underlay check the rest.
//!
//! ```text
//!  wa ---veth--- pa [port a]  sw: filters      up ---veth--- ub  hb: kernel VTEP + br0 --- bw ---veth--- wbe  wb
//!  wc ---veth--- pc [port c]      ofvx0 (vxlan external), ofgt0 (gretap external)
//! ```

use dataplane::offload::{nl, Backend, Kernel, Offloader};
use engine::compile::compile;
use engine::model::Config;
use engine::placement::PortHw;
use netns_tests::vm_lane::{in_netns, require_kernel, Dumpcap};
use netns_tests::*;

const RTM_NEWTFILTER: u16 = 44;
const TCA_OPTIONS: u16 = 2;
const TCA_FLOWER_FLAGS: u16 = 22;
const SKIP_HW: u32 = 1;
const SKIP_SW: u32 = 2;

/// The kernel, with every port on one software "switch" and each filter
/// run by the kernel's software classifier (`skip_hw`) instead of a NIC.
struct SoftwareSwitch {
    kernel: Kernel,
    /// Filters rewritten from skip_sw to skip_hw.
    rewritten: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Backend for SoftwareSwitch {
    fn ifindex(&mut self, ifname: &str) -> Result<u32, nl::IfindexError> {
        self.kernel.ifindex(ifname)
    }
    fn probe_port(
        &mut self,
        ifname: &str,
    ) -> Result<PortHw, dataplane::offload::switchdev::SwitchdevError> {
        Ok(PortHw { ifname: ifname.into(), switch_id: "0000vm".into() })
    }
    fn request(&mut self, mut msg: Vec<u8>) -> Result<Vec<Vec<u8>>, nl::NlError> {
        if nl::msg_type(&msg) == RTM_NEWTFILTER {
            skip_hw_instead_of_skip_sw(&mut msg);
            self.rewritten.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.kernel.request(msg)
    }
    fn num_vfs(&mut self, pf: &str) -> Result<(u32, u32), dataplane::offload::vf::SriovError> {
        self.kernel.num_vfs(pf)
    }
    fn set_num_vfs(&mut self, pf: &str, n: u32) -> Result<(), dataplane::offload::vf::SriovError> {
        self.kernel.set_num_vfs(pf, n)
    }
}

/// Rewrites TCA_FLOWER_FLAGS = skip_sw to skip_hw in an RTM_NEWTFILTER
/// message; panics if the message has no such attribute.
fn skip_hw_instead_of_skip_sw(msg: &mut [u8]) {
    let attr_at = |b: &[u8], at: usize| -> (usize, u16) {
        let len = u16::from_ne_bytes([b[at], b[at + 1]]) as usize;
        let ty = u16::from_ne_bytes([b[at + 2], b[at + 3]]) & !nl::NLA_F_NESTED;
        (len, ty)
    };
    // nlmsghdr (16 bytes), tcmsg (20), then attributes.
    let mut at = 36;
    while at + 4 <= msg.len() {
        let (len, ty) = attr_at(msg, at);
        if ty == TCA_OPTIONS {
            let end = at + len;
            let mut inner = at + 4;
            while inner + 4 <= end {
                let (l, t) = attr_at(msg, inner);
                if t == TCA_FLOWER_FLAGS && l == 8 {
                    let v = &mut msg[inner + 4..inner + 8];
                    assert_eq!(u32::from_ne_bytes(v.try_into().unwrap()), SKIP_SW);
                    v.copy_from_slice(&SKIP_HW.to_ne_bytes());
                    return;
                }
                inner += (l + 3) & !3;
            }
        }
        at += (len.max(4) + 3) & !3;
    }
    panic!("RTM_NEWTFILTER without TCA_FLOWER_FLAGS");
}

/// One filter as the kernel reports it (`tc -s -j filter show`).
#[derive(Debug)]
struct Shown {
    handle: u64,
    packets: u64,
    skip_hw: bool,
    /// The kinds of its actions, in order.
    actions: Vec<String>,
}

fn filters(ns: &Netns, dev: &str) -> Vec<Shown> {
    let out = ns.exec(&["tc", "-s", "-j", "filter", "show", "dev", dev, "ingress"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| {
            let o = f.get("options")?;
            let acts = o["actions"].as_array()?;
            Some(Shown {
                handle: o["handle"].as_u64()?,
                packets: acts.first()?["stats"]["packets"].as_u64().unwrap_or(0),
                skip_hw: o["skip_hw"].as_bool().unwrap_or(false),
                actions: acts
                    .iter()
                    .map(|a| a["kind"].as_str().unwrap_or("").to_string())
                    .collect(),
            })
        })
        .collect()
}

/// The packets counted by rule `id`'s filter on `dev` (handle = id + 1),
/// checking its actions are the ones expected.
fn counted(ns: &Netns, dev: &str, id: u32, actions: &[&str]) -> u64 {
    let all = filters(ns, dev);
    let f = all
        .iter()
        .find(|f| f.handle == id as u64 + 1)
        .unwrap_or_else(|| panic!("no filter of rule {id} on {dev}: {all:?}"));
    assert!(f.skip_hw, "rule {id}'s filter on {dev} is not skip_hw: {f:?}");
    assert_eq!(f.actions, actions, "rule {id}'s actions on {dev}: {f:?}");
    f.packets
}

struct Case {
    name: &'static str,
    /// overlayd's tunnel (TOML fields after name, uplink, local, remote).
    tunnel: &'static str,
    v6: bool,
    /// Host B's kernel VTEP: `ip link add vtep0 type ...`.
    vtep: &'static str,
    /// Capture filter and tshark display filter of the tunnel packets, and
    /// the tshark field holding their key or VNI.
    capture: &'static str,
    dissector: &'static str,
    id_field: &'static str,
    id: u32,
    /// Add the VLAN and drop rules and their traffic.
    vlan_and_drop: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "VXLAN VNI 42 over IPv4, with VLAN push/pop/modify and drop",
        tunnel: "type = \"vxlan\"\nvni = 42",
        v6: false,
        vtep: "vxlan id 42 local 192.0.2.2 remote 192.0.2.1 dstport 4789 noudpcsum",
        capture: "udp port 4789",
        dissector: "vxlan",
        id_field: "vxlan.vni",
        id: 42,
        vlan_and_drop: true,
    },
    Case {
        name: "VXLAN VNI 43 over IPv6",
        tunnel: "type = \"vxlan\"\nvni = 43",
        v6: true,
        vtep: "vxlan id 43 local 2001:db8::2 remote 2001:db8::1 dstport 4789",
        capture: "udp port 4789",
        dissector: "vxlan",
        id_field: "vxlan.vni",
        id: 43,
        vlan_and_drop: false,
    },
    Case {
        name: "gretap key 7",
        tunnel: "type = \"gretap\"\nkey = 7",
        v6: false,
        vtep: "gretap key 7 local 192.0.2.2 remote 192.0.2.1",
        capture: "ip proto 47",
        dissector: "gre",
        id_field: "gre.key",
        id: 7,
        vlan_and_drop: false,
    },
    Case {
        name: "NVGRE VSID 5000",
        tunnel: "type = \"nvgre\"\nvsid = 5000\nflow_id = 0",
        v6: false,
        vtep: "gretap key 1280000 local 192.0.2.2 remote 192.0.2.1",
        capture: "ip proto 47",
        dissector: "gre",
        id_field: "gre.key",
        id: 1_280_000,
        vlan_and_drop: false,
    },
];

/// VLAN and drop rules: tagged traffic between workloads A and C, and a
/// UDP port that is dropped.
const VLAN_AND_DROP_RULES: &str = r#"
# A's IPv4 to C's tagged address: push VLAN 100 towards C.
[[rules]]
id = 30
priority = 30
match = { in_port = "a", ip_dst = "203.0.113.3/32" }
actions = [{ push_vlan = 100 }, { output = "c" }]

# C's IPv4 on VLAN 100: untagged towards A.
[[rules]]
id = 31
priority = 30
match = { in_port = "c", vlan = 100, ethertype = 0x0800 }
actions = ["pop_vlan", { output = "a" }]

# A's IPv6 on VLAN 200 to C: re-tagged 100.
[[rules]]
id = 32
priority = 32
match = { in_port = "a", vlan = 200, ip_dst = "2001:db8:200::3/128" }
actions = [{ set_vlan = 100 }, { output = "c" }]

# C's IPv6 on VLAN 100 back to A: re-tagged 200.
[[rules]]
id = 33
priority = 33
match = { in_port = "c", vlan = 100, ip_src = "2001:db8:200::3/128" }
actions = [{ set_vlan = 200 }, { output = "a" }]

# UDP to port 9 from A never leaves.
[[rules]]
id = 40
priority = 40
match = { in_port = "a", ip_src = "198.51.100.1/32", ip_proto = 17, l4_dst = 9 }
actions = ["drop"]
"#;

fn config(c: &Case, pa: &str, pc: &str, up: &str, ea_mac: &str) -> String {
    let (local, remote) =
        if c.v6 { ("2001:db8::1", "2001:db8::2") } else { ("192.0.2.1", "192.0.2.2") };
    let tunnel = c.tunnel;
    let vni = c.id;
    let extra = if c.vlan_and_drop { VLAN_AND_DROP_RULES } else { "" };
    format!(
        r#"
[offload]
enabled = true
vxlan_device = "ofvx0"
gretap_device = "ofgt0"

[[ports]]
name = "a"
kind = "workload"
interface = "{pa}"
backend = "af_xdp"

[[ports]]
name = "c"
kind = "workload"
interface = "{pc}"
backend = "af_xdp"

[[ports]]
name = "up"
kind = "uplink"
interface = "{up}"
backend = "af_xdp"

[[tunnels]]
name = "t"
uplink = "up"
local = "{local}"
remote = "{remote}"
{tunnel}

# Workload A's frames (by source MAC) into the tunnel.
[[rules]]
id = 10
match = {{ in_port = "a", eth_src = "{ea_mac}" }}
actions = [{{ encap = "t" }}]

[[rules]]
id = 20
match = {{ tunnel = "t", vni = {vni} }}
actions = [{{ output = "a" }}]
{extra}
"#
    )
}

fn run_case(c: &Case) {
    let start = std::time::Instant::now();
    let (sw, hb, wa, wb, wc) = (
        Netns::new("vmsw"),
        Netns::new("vmhb"),
        Netns::new("vmwa"),
        Netns::new("vmwb"),
        Netns::new("vmwc"),
    );
    let (pa, ea) = (unique("vfa"), unique("vfe"));
    let (pc, ec) = (unique("vfc"), unique("vfd"));
    let (up, ub) = (unique("vfu"), unique("vfb"));
    let (bw, wbe) = (unique("vfw"), unique("vfx"));
    veth(&sw, &pa, &wa, &ea);
    veth(&sw, &pc, &wc, &ec);
    veth(&sw, &up, &hb, &ub);
    veth(&hb, &bw, &wb, &wbe);
    sw.ip(&["addr", "add", "192.0.2.1/24", "dev", &up]);
    sw.ip(&["-6", "addr", "add", "2001:db8::1/64", "dev", &up, "nodad"]);
    hb.ip(&["addr", "add", "192.0.2.2/24", "dev", &ub]);
    hb.ip(&["-6", "addr", "add", "2001:db8::2/64", "dev", &ub, "nodad"]);
    finish_checksums_like_a_nic(&hb, &ub);
    finish_checksums_like_a_nic(&sw, &up);
    // The kernel's collect_md tunnel devices tunnel_key actions send through.
    sw.ip(&["link", "add", "ofvx0", "type", "vxlan", "external", "dstport", "4789"]);
    sw.ip(&["link", "add", "ofgt0", "type", "gretap", "external"]);
    sw.ip(&["link", "set", "ofvx0", "up"]);
    sw.ip(&["link", "set", "ofgt0", "up"]);
    // Host B: its kernel VTEP bridged to workload B.
    let mut vtep = vec!["link", "add", "vtep0", "type"];
    vtep.extend(c.vtep.split_whitespace());
    hb.ip(&vtep);
    hb.ip(&["link", "add", "br0", "type", "bridge"]);
    hb.ip(&["link", "set", "vtep0", "master", "br0", "up"]);
    hb.ip(&["link", "set", &bw, "master", "br0", "up"]);
    hb.ip(&["link", "set", "br0", "up"]);
    for (ns, dev, ip) in [(&wa, &ea, "198.51.100.1/24"), (&wb, &wbe, "198.51.100.2/24")] {
        ns.ip(&["link", "set", dev, "mtu", "1400"]);
        ns.ip(&["addr", "add", ip, "dev", dev]);
    }
    let ea_mac = wa.mac(&ea);

    let rewritten = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let cfg = Config::from_toml(&config(c, &pa, &pc, &up, &ea_mac))
        .unwrap_or_else(|e| panic!("{}: configuration: {e}", c.name));
    let rs = compile(&cfg).unwrap_or_else(|e| panic!("{}: compile: {e}", c.name));
    let backend = SoftwareSwitch { kernel: Kernel::default(), rewritten: rewritten.clone() };
    let off = Offloader::new(Box::new(backend));
    in_netns(&sw, || off.sync(&rs));
    let placement = off.placement();
    let status = off.status();
    for p in &placement {
        assert!(
            p.hardware.is_some(),
            "{}: rule {} was not installed: {:?}\n{status:#?}",
            c.name,
            p.rule,
            p.software
        );
    }
    assert_eq!(
        rewritten.load(std::sync::atomic::Ordering::Relaxed) as usize,
        placement.len(),
        "{}: every filter went to the kernel once",
        c.name
    );

    let dir = TempDir::new("vmflower");
    let pcap = dir.join("underlay.pcap");
    let cap = Dumpcap::start(&hb, &ub, c.capture, &pcap, 2_000, 120);
    let why = || {
        format!(
            "filters on {pa}: {:?}\nfilters on tunnel devices: {:?} {:?}\nsw links:\n{}",
            filters(&sw, &pa),
            filters(&sw, "ofvx0"),
            filters(&sw, "ofgt0"),
            sw.ip(&["-s", "link", "show"])
        )
    };
    // A <-> B through the filters and both kernel VTEPs (ARP included).
    assert!(pings(&wa, "198.51.100.2", 5), "{}: A -> B ping failed\n{}", c.name, why());
    assert!(pings(&wb, "198.51.100.1", 5), "{}: B -> A ping failed\n{}", c.name, why());
    if c.vlan_and_drop {
        // Full-sized and GSO frames through tunnel_key and mirred (once:
        // the emulated CPU makes every transfer count).
        tcp_transfer(&wa, &wb, "198.51.100.2", 200_000);
    }

    if c.vlan_and_drop {
        vlan_traffic(&wa, &wc, &pa, &ea, &ec, &why);
        // Five datagrams to the dropped port, and five to another one
        // (bash's /dev/udp: python takes tens of seconds to start in the guest.)
        let send = "for p in 9 10; do for i in 1 2 3 4 5; do echo x > /dev/udp/198.51.100.2/$p; done; done";
        wa.exec(&["bash", "-c", send]);
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let file = cap.finish();

    // The tunnel packets from A carry the tunnel's key or VNI and TTL 64.
    let (src_field, ttl_field) =
        if c.v6 { ("ipv6.src", "ipv6.hlim") } else { ("ip.src", "ip.ttl") };
    let local = if c.v6 { "2001:db8::1" } else { "192.0.2.1" };
    let rows = tshark_fields(
        &file,
        &format!("{} && {src_field} == {local}", c.dissector),
        &[c.id_field, ttl_field, "udp.dstport"],
    );
    assert!(rows.len() >= 10, "{}: only {} tunnel packets from A: {rows:?}", c.name, rows.len());
    for r in &rows {
        let id = r[0].trim();
        let id = match id.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16),
            None => id.parse(),
        }
        .unwrap_or_else(|_| panic!("{}: {r:?}", c.name));
        assert_eq!(id, c.id, "{}: key or VNI of a tunnel packet from A: {r:?}", c.name);
        assert_eq!(r[1].trim(), "64", "{}: TTL of a tunnel packet from A: {r:?}", c.name);
    }
    if c.vlan_and_drop {
        let udp = |port: u16| {
            // Not counting the port unreachable errors that quote them.
            let f = format!("vxlan && udp.dstport == {port} && !icmp");
            tshark_fields(&file, &f, &["frame.number"]).len()
        };
        assert_eq!(udp(9), 0, "{}: datagrams to the dropped port reached host B", c.name);
        assert_eq!(udp(10), 5, "{}: datagrams to port 10 through the tunnel", c.name);
    }

    // The filters' own counters: each one took the traffic meant for it.
    let tdev = if c.dissector == "vxlan" { "ofvx0" } else { "ofgt0" };
    let enc = counted(&sw, &pa, 10, &["tunnel_key", "mirred"]);
    let dec = counted(&sw, tdev, 20, &["tunnel_key", "mirred"]);
    assert!(enc >= 10 && dec >= 10, "{}: encap {enc}, decap {dec} packets\n{}", c.name, why());
    if c.vlan_and_drop {
        assert!(counted(&sw, &pa, 30, &["vlan", "mirred"]) >= 3, "{}: push\n{}", c.name, why());
        assert!(counted(&sw, &pc, 31, &["vlan", "mirred"]) >= 3, "{}: pop\n{}", c.name, why());
        assert!(counted(&sw, &pa, 32, &["vlan", "mirred"]) >= 3, "{}: modify\n{}", c.name, why());
        assert!(counted(&sw, &pc, 33, &["vlan", "mirred"]) >= 3, "{}: modify\n{}", c.name, why());
        assert_eq!(counted(&sw, &pa, 40, &["gact"]), 5, "{}: drop\n{}", c.name, why());
    }

    // Removal: with offload off, the offloader deletes every filter.
    let mut cfg_off = cfg.clone();
    cfg_off.offload.enabled = false;
    let rs_off = compile(&cfg_off).unwrap();
    in_netns(&sw, || off.sync(&rs_off));
    for dev in [pa.as_str(), pc.as_str(), "ofvx0", "ofgt0"] {
        let left = filters(&sw, dev);
        assert!(left.is_empty(), "{}: filters left on {dev}: {left:?}", c.name);
    }
    assert!(!pings(&wa, "198.51.100.2", 1), "{}: traffic still crosses without filters", c.name);
    eprintln!("{}: {:.1} s", c.name, start.elapsed().as_secs_f64());
}

/// IPv4 from untagged A to C on VLAN 100 (push, then pop on the way back)
/// and IPv6 from A on VLAN 200 to C on VLAN 100 (modify both ways). No
/// ARP or ND crosses these rules: the neighbours are static.
fn vlan_traffic(wa: &Netns, wc: &Netns, pa: &str, ea: &str, ec: &str, why: &dyn Fn() -> String) {
    let (ea_mac, ec_mac) = (wa.mac(ea), wc.mac(ec));
    wc.ip(&["link", "add", "link", ec, "name", "ec.100", "type", "vlan", "id", "100"]);
    wc.ip(&["link", "set", "ec.100", "up"]);
    wc.ip(&["addr", "add", "203.0.113.3/24", "dev", "ec.100"]);
    wc.ip(&["-6", "addr", "add", "2001:db8:200::3/64", "dev", "ec.100", "nodad"]);
    wc.ip(&["neigh", "replace", "203.0.113.1", "lladdr", &ea_mac, "dev", "ec.100"]);
    wc.ip(&["-6", "neigh", "replace", "2001:db8:200::1", "lladdr", &ea_mac, "dev", "ec.100"]);
    wa.ip(&["addr", "add", "203.0.113.1/24", "dev", ea]);
    wa.ip(&["neigh", "replace", "203.0.113.3", "lladdr", &ec_mac, "dev", ea]);
    wa.ip(&["link", "add", "link", ea, "name", "ea.200", "type", "vlan", "id", "200"]);
    wa.ip(&["link", "set", "ea.200", "up"]);
    wa.ip(&["-6", "addr", "add", "2001:db8:200::1/64", "dev", "ea.200", "nodad"]);
    wa.ip(&["-6", "neigh", "replace", "2001:db8:200::3", "lladdr", &ec_mac, "dev", "ea.200"]);
    assert!(pings(wa, "203.0.113.3", 3), "A -> C (VLAN push and pop) failed on {pa}\n{}", why());
    assert!(pings(wa, "2001:db8:200::3", 3), "A -> C (VLAN modify) failed on {pa}\n{}", why());
}

/// Runs the case named `name` in the kernel's software classifier.
fn flower(test: &str, name: &str) {
    if !require_kernel(test, &["vxlan", "gretap"]) {
        return;
    }
    require_program("tshark");
    require_program("tc");
    // A flower filter the way tc adds one: the kernel must have cls_flower.
    let probe = Netns::new("vmfp");
    probe.ip(&["link", "add", "p0", "type", "dummy"]);
    probe.exec(&["tc", "qdisc", "add", "dev", "p0", "clsact"]);
    probe.exec(&[
        "tc", "filter", "add", "dev", "p0", "ingress", "flower", "skip_hw", "action", "drop",
    ]);
    drop(probe);
    run_case(CASES.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no case {name:?}")));
}

#[test]
fn flower_vxlan_vlan_drop() {
    flower("flower_vxlan_vlan_drop", "VXLAN VNI 42 over IPv4, with VLAN push/pop/modify and drop");
}

#[test]
fn flower_vxlan_ipv6_underlay() {
    flower("flower_vxlan_ipv6_underlay", "VXLAN VNI 43 over IPv6");
}

#[test]
fn flower_gretap_key() {
    flower("flower_gretap_key", "gretap key 7");
}

#[test]
fn flower_nvgre() {
    flower("flower_nvgre", "NVGRE VSID 5000");
}
