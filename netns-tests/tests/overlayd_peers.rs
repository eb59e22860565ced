//! `overlayd` (AF_XDP) against other tunnel peers: Open vSwitch's userspace
//! tunnels (datapath_type=netdev; this kernel has no GRE module) over gretap
//! with and without a key, L3 GRE with and without a key and VXLAN; and a
//! second `overlayd`. Pings and TCP transfers both ways between the two
//! workloads, counter conservation, and the underlay dissected by tshark.
//!
//! ```text
//!  wa (198.51.100.1)            ha: overlayd                hb: OVS (netdev)            wb (198.51.100.2)
//!  we ---veth--- wl [workload]  up [uplink] ---veth--- ub  br-phy (192.0.2.2)
//!                 192.0.2.1                                br-int: tun0 + bw ---veth--- wbe
//! ```
//!
//! overlayd against overlayd puts an underlay switch between the two hosts, so
//! the tunnel packets can be captured on a link with no XDP program on it (a
//! capture on the uplink itself sees neither what AF_XDP sends nor what XDP
//! redirects to it):
//!
//! ```text
//!  wa --- ha: overlayd  up ---veth--- ua  ul: bridge  ub ---veth--- up  hb: overlayd --- wb
//! ```

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use netns_tests::one_tunnel::{OneTunnel, TierMode};
use netns_tests::*;

const A_IP: &str = "192.0.2.1";
const B_IP: &str = "192.0.2.2";
const WA_IP: &str = "198.51.100.1";
const WB_IP: &str = "198.51.100.2";
/// Bytes sent over TCP in each direction.
const TCP_BYTES: usize = 2_000_000;

/// Everything useful about a daemon when an exchange fails.
fn why(d: &Overlayd) -> String {
    format!("counters: {:#}\nstatus: {:#}\nlog:\n{}", d.counters(), d.status(), d.log())
}

/// Pings and a TCP transfer in both directions between the two workloads.
fn exchange(wa: &Netns, wb: &Netns, daemons: &[&Overlayd], extra: &dyn Fn() -> String) {
    let why_all = || {
        let mut s: String = daemons.iter().map(|d| why(d)).collect::<Vec<_>>().join("\n---\n");
        s.push_str(&extra());
        s
    };
    // The first packets set up OVS's datapath flows (and ARP across the
    // overlay): allow one retry before calling it a failure.
    let first = pings(wa, WB_IP, 3) || pings(wa, WB_IP, 3);
    assert!(first, "A -> B ping failed; {}", why_all());
    assert!(pings(wb, WA_IP, 3), "B -> A ping failed; {}", why_all());
    tcp_transfer(wa, wb, WB_IP, TCP_BYTES);
    tcp_transfer(wb, wa, WA_IP, TCP_BYTES);
}

/// The workload's side of a namespace: address and MTU; its offloads stay
/// as they are (a container's veth: checksum offload, TSO and GSO on).
fn workload(ns: &Netns, dev: &str, ip: &str, mtu: u32) {
    ns.ip(&["link", "set", dev, "mtu", &mtu.to_string()]);
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", dev]);
}

/// No IPv6 on links created from now on in `ns` (for L3 GRE, whose rules
/// carry IPv4 only, so that no router solicitation or MLD report shows up as
/// an unmatched packet).
fn no_ipv6(ns: &Netns) {
    ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"]);
    ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
}

/// One overlayd host's configuration: workload port `wl`, uplink `up` (with
/// its MAC address `up_mac` written in, when given), one tunnel (`tunnel`
/// holds its type and type-specific fields) from `local` to `remote`. With
/// `l3_dst`, the tunnel carries IP (L3 GRE): only IPv4 is encapsulated, and
/// decapsulated packets get the workload's MAC address.
#[allow(clippy::too_many_arguments)]
fn overlayd_config(
    wl: &str,
    up: &str,
    up_mac: Option<&str>,
    local: &str,
    remote: &str,
    tunnel: &str,
    id: Option<u32>,
    l3_dst: Option<&str>,
    backend: &str,
    tier: TierMode,
) -> String {
    let id_match = id.map(|v| format!(", vni = {v}")).unwrap_or_default();
    let mac = up_mac.map(|m| format!("\nmac = \"{m}\"")).unwrap_or_default();
    let (encap_match, set_dst) = match l3_dst {
        Some(mac) => (", ethertype = 0x0800", format!("{{ set_eth_dst = \"{mac}\" }}, ")),
        None => ("", String::new()),
    };
    OneTunnel {
        wl,
        up,
        up_port: &format!("backend = \"{backend}\"{mac}"),
        tunnel_body: &format!("local = \"{local}\"\nremote = \"{remote}\"\n{tunnel}"),
        encap_match,
        decap_match: &id_match,
        decap_actions: &set_dst,
        tier,
        ..OneTunnel::default()
    }
    .render()
}

/// Checks a daemon's settled counters (conservation, traffic both ways
/// through the tunnel, no drops), that its workload port ran in native XDP
/// mode and its uplink on `backend`, stops it and checks it detached its XDP
/// programs.
fn check_and_stop(d: Overlayd, ns: &Netns, backend: &str) {
    let c = d.settled_counters();
    let t = &c["tunnels"][0];
    assert!(t["encap"]["packets"].as_u64().unwrap() > 1000, "{c:#}");
    assert!(t["decap"]["packets"].as_u64().unwrap() > 1000, "{c:#}");
    assert_eq!(c["dropped"], 0, "unexpected drops: {c:#}\nlog:\n{}", d.log());
    let st = d.status();
    let ports = st["io"]["ports"].as_array().unwrap();
    assert_eq!(ports[0]["backend"], "af_xdp", "{st:#}");
    assert_eq!(ports[0]["xdp_mode"], "native", "{st:#}");
    assert_eq!(ports[1]["backend"], backend, "{st:#}");
    if backend == "af_xdp" {
        assert_eq!(ports[1]["xdp_mode"], "native", "{st:#}");
    }
    d.stop();
    assert!(!xdp_attached(ns), "an XDP program was left attached in {}", ns.name());
}

/// The tunnel packets of a capture, dissected.
#[derive(Debug)]
struct Outer {
    eth_src: String,
    src: String,
    df: bool,
    /// VNI or GRE key, if present.
    id: Option<u32>,
    udp: Option<Udp>,
    /// GRE protocol type.
    gre_proto: Option<u16>,
}

#[derive(Debug)]
struct Udp {
    src: u16,
    dst: u16,
    checksum: u16,
    /// tshark's verdict with checksum checking on: "1" good, "0" bad, "2"
    /// not checked (a zero checksum).
    status: String,
}

fn num(s: &str) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

fn flag(s: &str) -> bool {
    matches!(s.trim(), "1" | "True" | "true")
}

fn dissect(file: &Path, vxlan: bool) -> Vec<Outer> {
    let (filter, fields): (&str, &[&str]) = if vxlan {
        (
            "vxlan",
            &[
                "eth.src",
                "ip.src",
                "ip.flags.df",
                "vxlan.vni",
                "udp.srcport",
                "udp.dstport",
                "udp.checksum",
                "udp.checksum.status",
            ],
        )
    } else {
        ("gre", &["eth.src", "ip.src", "ip.flags.df", "gre.key", "gre.proto"])
    };
    tshark_fields(file, filter, fields)
        .into_iter()
        .map(|r| {
            let f = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
            Outer {
                eth_src: f(0).to_string(),
                src: f(1).to_string(),
                df: flag(f(2)),
                id: num(f(3)),
                udp: vxlan.then(|| Udp {
                    src: num(f(4)).unwrap_or(0) as u16,
                    dst: num(f(5)).unwrap_or(0) as u16,
                    checksum: num(f(6)).unwrap_or(0) as u16,
                    status: f(7).trim().to_string(),
                }),
                gre_proto: if vxlan { None } else { num(f(4)).map(|p| p as u16) },
            }
        })
        .collect()
}

/// What a peer's tunnel packets must look like on the wire.
struct Sent<'a> {
    /// Outer source IP and MAC addresses.
    ip: &'a str,
    mac: &'a str,
    /// VNI or GRE key.
    id: Option<u32>,
    /// GRE protocol type (for GRE).
    gre_proto: Option<u16>,
    /// Whether DF must be set.
    df: bool,
}

/// Checks the tunnel packets a peer sent: each from its MAC address, with
/// its VNI or key, DF set (when required), its GRE protocol type, and for
/// VXLAN to port 4789 with a valid or zero UDP checksum, from at least two
/// different source ports (one per inner flow).
fn check_sent(pkts: &[Outer], want: &Sent) {
    let (src, id, gre_proto) = (want.ip, want.id, want.gre_proto);
    let mine: Vec<&Outer> = pkts.iter().filter(|p| p.src == src).collect();
    assert!(mine.len() > 100, "only {} tunnel packets from {src} captured", mine.len());
    let mut ports = HashSet::new();
    for p in &mine {
        assert_eq!(p.eth_src, want.mac, "outer source MAC of a packet from {src}: {p:?}");
        assert_eq!(p.id, id, "VNI or key of a packet from {src}: {p:?}");
        if want.df {
            assert!(p.df, "DF not set on a packet from {src}: {p:?}");
        }
        if let Some(u) = &p.udp {
            assert_eq!(u.dst, 4789, "{p:?}");
            // tshark: 1 good, 3 not present (a zero checksum over IPv4).
            let ok = if u.checksum == 0 { u.status == "3" } else { u.status == "1" };
            assert!(ok, "bad UDP checksum on a packet from {src}: {p:?}");
            ports.insert(u.src);
        }
        if let Some(proto) = gre_proto {
            assert_eq!(p.gre_proto, Some(proto), "GRE protocol of a packet from {src}: {p:?}");
        }
    }
    if mine[0].udp.is_some() {
        assert!(
            ports.len() >= 2,
            "{src} used a single UDP source port for every inner flow: {ports:?}"
        );
    }
}

/// The tunnel under test, on both sides.
struct OvsCase {
    name: &'static str,
    /// overlayd's tunnel: type and type-specific fields (TOML).
    tunnel: &'static str,
    /// VNI or GRE key (matched on decapsulation, checked on the wire).
    id: Option<u32>,
    /// OVS interface type and options.
    ovs_type: &'static str,
    ovs_options: &'static [&'static str],
    /// IP over GRE rather than Ethernet.
    l3: bool,
    /// The workloads' MTU: 1500 less the outer headers.
    mtu: u32,
}

/// The interop case with the XDP tier on (the default) and off.
fn against_ovs(c: &OvsCase, backend: &str) {
    for tier in TierMode::BOTH {
        eprintln!("{} ({backend}), xdp_tier = \"{}\"", c.name, tier.name());
        against_ovs_in(c, backend, tier);
    }
}

fn against_ovs_in(c: &OvsCase, backend: &str, tier: TierMode) {
    let start = Instant::now();
    let ha = Netns::new("ha");
    let hb = Netns::new("hb");
    let wa = Netns::new("wa");
    let wb = Netns::new("wb");
    if c.l3 {
        no_ipv6(&wa);
        no_ipv6(&wb);
    }
    let (up, ub) = (unique("up"), unique("ub"));
    let (wl, we) = (unique("wl"), unique("we"));
    let (bw, wbe) = (unique("bw"), unique("wbe"));
    veth(&ha, &up, &hb, &ub);
    veth(&ha, &wl, &wa, &we);
    veth(&hb, &bw, &wb, &wbe);
    ha.ip(&["addr", "add", &format!("{A_IP}/24"), "dev", &up]);
    workload(&wa, &we, WA_IP, c.mtu);
    workload(&wb, &wbe, WB_IP, c.mtu);
    // B's workload is Open vSwitch's: its userspace datapath forwards a
    // partial checksum or a TSO super-frame from a veth as it is, and its
    // documentation has users turn tx offload off there. A's keeps its
    // defaults.
    wb.exec(&["ethtool", "-K", &wbe, "tx", "off"]);
    eprintln!(
        "note: {wbe}, Open vSwitch's workload, has tx offload off, as OVS's documentation requires"
    );
    // OVS reads and writes these through packet sockets: have the kernel
    // leave no checksum to an offload.
    finish_checksums_like_a_nic(&hb, &ub);
    hb.exec(&["ethtool", "-K", &bw, "tx", "off"]);

    let ovs = Ovs::start(&hb);
    ovs.vsctl(&["add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev"]);
    let mut port: Vec<String> = [
        "add-port",
        "br-int",
        "tun0",
        "--",
        "set",
        "interface",
        "tun0",
        &format!("type={}", c.ovs_type),
        &format!("options:remote_ip={A_IP}"),
        &format!("options:local_ip={B_IP}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    port.extend(c.ovs_options.iter().map(|s| s.to_string()));
    ovs.vsctl(&port.iter().map(String::as_str).collect::<Vec<_>>());
    ovs.vsctl(&["add-port", "br-int", &bw]);
    let hw = format!("other_config:hwaddr={}", hb.mac(&ub));
    ovs.vsctl(&["add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev", &hw]);
    ovs.vsctl(&["add-port", "br-phy", &ub]);
    hb.ip(&["addr", "add", &format!("{B_IP}/24"), "dev", "br-phy"]);
    hb.ip(&["link", "set", "br-phy", "up"]);
    ovs.appctl(&["tnl/neigh/set", "br-phy", A_IP, &ha.mac(&up)]);

    let we_mac = wa.mac(&we);
    let wbe_mac = wb.mac(&wbe);
    if c.l3 {
        // No ARP crosses an L3 tunnel: each workload gets a static neighbour
        // for the other (any MAC address; the tunnel drops it), and OVS's
        // bridge forwards IPv4 between the tunnel and the workload, giving
        // what comes out of the tunnel the workload's MAC address.
        wa.ip(&["neigh", "replace", WB_IP, "lladdr", "02:00:00:00:00:02", "dev", &we]);
        wb.ip(&["neigh", "replace", WA_IP, "lladdr", "02:00:00:00:00:01", "dev", &wbe]);
        ovs.ofctl("del-flows", "br-int", &[]);
        ovs.ofctl(
            "add-flow",
            "br-int",
            &[&format!(
                "priority=10,in_port=tun0,ip,actions=mod_dl_src:02:00:00:00:00:01,mod_dl_dst:{wbe_mac},output:{bw}"
            )],
        );
        ovs.ofctl(
            "add-flow",
            "br-int",
            &[&format!("priority=10,in_port={bw},ip,actions=output:tun0")],
        );
    }

    // The uplink's MAC address is written in: overlayd does not read it from
    // the interface (see overlayd_against_overlayd_uplink_mac_from_interface).
    let up_mac = ha.mac(&up);
    let config = overlayd_config(
        &wl,
        &up,
        Some(&up_mac),
        A_IP,
        B_IP,
        c.tunnel,
        c.id,
        c.l3.then_some(we_mac.as_str()),
        backend,
        tier,
    );
    let d = Overlayd::start(&ha, &config);
    d.wait_neighbours();
    tier.assert_in_status(&d.status());

    let dir = TempDir::new("peer");
    let pcap = dir.join("underlay.pcap");
    let vxlan = c.ovs_type == "vxlan";
    let filter = if vxlan { "udp port 4789" } else { "ip proto 47" };
    // On the far end of the uplink: what overlayd sends through AF_XDP, and
    // what XDP redirects to it, never reaches a capture on the uplink itself.
    let cap = Capture::start(&hb, &ub, filter, &pcap, 30_000, 90);
    let ovs_why = || {
        format!(
            "\nxdp_tier = \"{}\"\nOVS br-int flows:\n{}\nOVS datapath flows:\n{}",
            tier.name(),
            ovs.ofctl("dump-flows", "br-int", &[]),
            ovs.appctl(&["dpctl/dump-flows"])
        )
    };
    exchange(&wa, &wb, &[&d], &ovs_why);
    let file = cap.finish();

    let pkts = dissect(&file, vxlan);
    let gre_proto = match (vxlan, c.l3) {
        (true, _) => None,
        (false, false) => Some(0x6558),
        (false, true) => Some(0x0800),
    };
    check_sent(&pkts, &Sent { ip: A_IP, mac: &up_mac, id: c.id, gre_proto, df: true });
    // OVS sends from br-phy, which has the address of its uplink veth.
    let ub_mac = hb.mac(&ub);
    check_sent(&pkts, &Sent { ip: B_IP, mac: &ub_mac, id: c.id, gre_proto, df: false });

    check_and_stop(d, &ha, backend);
    eprintln!(
        "{} ({backend}, xdp_tier = \"{}\"): {:.1} s",
        c.name,
        tier.name(),
        start.elapsed().as_secs_f64()
    );
}

const GRETAP_WITHOUT_KEY_AGAINST_OVS: OvsCase = OvsCase {
    name: "gretap without key",
    tunnel: r#"type = "gretap""#,
    id: None,
    ovs_type: "gre",
    ovs_options: &[],
    l3: false,
    // 20 (IPv4) + 4 (GRE) + 14 (inner Ethernet)
    mtu: 1462,
};

#[test]
fn gretap_without_key_against_ovs() {
    if require_root("gretap_without_key_against_ovs") {
        against_ovs(&GRETAP_WITHOUT_KEY_AGAINST_OVS, "af_xdp");
    }
}

#[test]
fn gretap_without_key_against_ovs_af_packet() {
    if require_root("gretap_without_key_against_ovs_af_packet") {
        against_ovs(&GRETAP_WITHOUT_KEY_AGAINST_OVS, "af_packet");
    }
}

const GRETAP_WITH_KEY_AGAINST_OVS: OvsCase = OvsCase {
    name: "gretap key 7",
    tunnel: "type = \"gretap\"\nkey = 7",
    id: Some(7),
    ovs_type: "gre",
    ovs_options: &["options:key=7"],
    l3: false,
    mtu: 1458,
};

#[test]
fn gretap_with_key_against_ovs() {
    if require_root("gretap_with_key_against_ovs") {
        against_ovs(&GRETAP_WITH_KEY_AGAINST_OVS, "af_xdp");
    }
}

#[test]
fn gretap_with_key_against_ovs_af_packet() {
    if require_root("gretap_with_key_against_ovs_af_packet") {
        against_ovs(&GRETAP_WITH_KEY_AGAINST_OVS, "af_packet");
    }
}

const L3_GRE_WITHOUT_KEY_AGAINST_OVS: OvsCase = OvsCase {
    name: "L3 GRE without key",
    tunnel: r#"type = "gre""#,
    id: None,
    ovs_type: "gre",
    ovs_options: &["options:packet_type=legacy_l3"],
    l3: true,
    // 20 (IPv4) + 4 (GRE), no inner Ethernet
    mtu: 1476,
};

#[test]
fn l3_gre_without_key_against_ovs() {
    if require_root("l3_gre_without_key_against_ovs") {
        against_ovs(&L3_GRE_WITHOUT_KEY_AGAINST_OVS, "af_xdp");
    }
}

#[test]
fn l3_gre_without_key_against_ovs_af_packet() {
    if require_root("l3_gre_without_key_against_ovs_af_packet") {
        against_ovs(&L3_GRE_WITHOUT_KEY_AGAINST_OVS, "af_packet");
    }
}

const L3_GRE_WITH_KEY_AGAINST_OVS: OvsCase = OvsCase {
    name: "L3 GRE key 9",
    tunnel: "type = \"gre\"\nkey = 9",
    id: Some(9),
    ovs_type: "gre",
    ovs_options: &["options:packet_type=legacy_l3", "options:key=9"],
    l3: true,
    mtu: 1472,
};

#[test]
fn l3_gre_with_key_against_ovs() {
    if require_root("l3_gre_with_key_against_ovs") {
        against_ovs(&L3_GRE_WITH_KEY_AGAINST_OVS, "af_xdp");
    }
}

#[test]
fn l3_gre_with_key_against_ovs_af_packet() {
    if require_root("l3_gre_with_key_against_ovs_af_packet") {
        against_ovs(&L3_GRE_WITH_KEY_AGAINST_OVS, "af_packet");
    }
}

const VXLAN_AGAINST_OVS: OvsCase = OvsCase {
    name: "VXLAN VNI 42",
    tunnel: "type = \"vxlan\"\nvni = 42\nudp_checksum = true",
    id: Some(42),
    ovs_type: "vxlan",
    ovs_options: &["options:key=42"],
    l3: false,
    // 20 (IPv4) + 8 (UDP) + 8 (VXLAN) + 14 (inner Ethernet)
    mtu: 1450,
};

#[test]
fn vxlan_against_ovs() {
    if require_root("vxlan_against_ovs") {
        against_ovs(&VXLAN_AGAINST_OVS, "af_xdp");
    }
}

#[test]
fn vxlan_against_ovs_af_packet() {
    if require_root("vxlan_against_ovs_af_packet") {
        against_ovs(&VXLAN_AGAINST_OVS, "af_packet");
    }
}

/// Two hosts both running overlayd, VXLAN VNI 42; A sends UDP checksums, B
/// sends zero ones. With `write_mac`, each uplink's MAC address is written in
/// the configuration; without, overlayd must read it from the interface.
/// A's uplink runs on `backend_a`, B's on AF_XDP.
fn overlayd_pair(write_mac: bool, backend_a: &str) {
    let start = Instant::now();
    let ha = Netns::new("ha");
    let hb = Netns::new("hb");
    let ul = Netns::new("ul");
    let wa = Netns::new("wa");
    let wb = Netns::new("wb");
    let (upa, ua) = (unique("up"), unique("ua"));
    let (upb, ub) = (unique("up"), unique("ub"));
    let (wla, wea) = (unique("wl"), unique("we"));
    let (wlb, web) = (unique("wl"), unique("we"));
    veth(&ha, &upa, &ul, &ua);
    veth(&hb, &upb, &ul, &ub);
    veth(&ha, &wla, &wa, &wea);
    veth(&hb, &wlb, &wb, &web);
    ul.ip(&["link", "add", "br0", "type", "bridge"]);
    ul.ip(&["link", "set", &ua, "master", "br0"]);
    ul.ip(&["link", "set", &ub, "master", "br0"]);
    ul.ip(&["link", "set", "br0", "up"]);
    ha.ip(&["addr", "add", &format!("{A_IP}/24"), "dev", &upa]);
    hb.ip(&["addr", "add", &format!("{B_IP}/24"), "dev", &upb]);
    workload(&wa, &wea, WA_IP, 1450);
    workload(&wb, &web, WB_IP, 1450);

    let (mac_a, mac_b) = (ha.mac(&upa), hb.mac(&upb));
    let tunnel = |csum: bool| format!("type = \"vxlan\"\nvni = 42\nudp_checksum = {csum}");
    let cfg_a = overlayd_config(
        &wla,
        &upa,
        write_mac.then_some(mac_a.as_str()),
        A_IP,
        B_IP,
        &tunnel(true),
        Some(42),
        None,
        backend_a,
        TierMode::Auto,
    );
    let cfg_b = overlayd_config(
        &wlb,
        &upb,
        write_mac.then_some(mac_b.as_str()),
        B_IP,
        A_IP,
        &tunnel(false),
        Some(42),
        None,
        "af_xdp",
        TierMode::Auto,
    );
    let da = Overlayd::start(&ha, &cfg_a);
    let db = Overlayd::start(&hb, &cfg_b);
    da.wait_neighbours();
    db.wait_neighbours();

    let dir = TempDir::new("peer");
    let pcap = dir.join("underlay.pcap");
    // On the switch's port towards A: no XDP program there, so the capture
    // sees both directions.
    let cap = Capture::start(&ul, &ua, "udp port 4789", &pcap, 30_000, 90);
    exchange(&wa, &wb, &[&da, &db], &String::new);
    let file = cap.finish();

    let pkts = dissect(&file, true);
    check_sent(&pkts, &Sent { ip: A_IP, mac: &mac_a, id: Some(42), gre_proto: None, df: true });
    check_sent(&pkts, &Sent { ip: B_IP, mac: &mac_b, id: Some(42), gre_proto: None, df: true });
    for p in &pkts {
        let u = p.udp.as_ref().unwrap();
        if p.src == A_IP {
            assert_ne!(u.checksum, 0, "A is configured to send UDP checksums: {p:?}");
        } else {
            assert_eq!(u.checksum, 0, "B is configured to send zero UDP checksums: {p:?}");
        }
    }

    check_and_stop(da, &ha, backend_a);
    check_and_stop(db, &hb, "af_xdp");
    eprintln!("overlayd against overlayd: {:.1} s", start.elapsed().as_secs_f64());
}

#[test]
fn overlayd_against_overlayd() {
    if !require_root("overlayd_against_overlayd") {
        return;
    }
    overlayd_pair(true, "af_xdp");
}

/// As `overlayd_against_overlayd`, with no `mac` on the uplink ports: the
/// configuration reference says `run` then reads it from the interface.
#[test]
fn overlayd_against_overlayd_uplink_mac_from_interface() {
    if !require_root("overlayd_against_overlayd_uplink_mac_from_interface") {
        return;
    }
    overlayd_pair(false, "af_xdp");
}

/// overlayd on an AF_PACKET uplink (io_uring) against overlayd on AF_XDP.
#[test]
fn overlayd_af_packet_against_overlayd_af_xdp() {
    if require_root("overlayd_af_packet_against_overlayd_af_xdp") {
        overlayd_pair(true, "af_packet");
    }
}
