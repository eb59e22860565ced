//! `overlayd` (AF_XDP) against Open vSwitch's userspace Geneve port
//! (datapath_type=netdev; this kernel has no geneve module), over IPv4 and
//! IPv6 underlays, without and with Geneve options. Pings and TCP transfers both
//! ways between the two workloads, counter conservation with no drop, and the
//! underlay dissected by tshark.
//!
//! ```text
//!  wa (198.51.100.1)            ha: overlayd                hb: OVS (netdev)            wb (198.51.100.2)
//!  we ---veth--- wl [workload]  up [uplink] ---veth--- ub  br-phy (192.0.2.2)
//!                 192.0.2.1                                br-int: tun0 (geneve) + bw ---veth--- wbe
//! ```
//!
//! With options, each side sends OVN's critical option (class 0x0102, type
//! 0x80, 4 bytes) with its own value: overlayd 0x0000000b (its tunnel's
//! `options`), OVS 0x0000002a (a TLV map to `tun_metadata0` and a flow that
//! sets it). Each side accepts only packets carrying the other's value: OVS
//! by a flow on `tun_metadata0`, overlayd by a rule on `geneve_option`; a
//! packet without it would be a drop (`no_matching_rule` at overlayd), and
//! the test requires none. The critical bit also means OVS drops the option
//! unless its TLV map names it, and overlayd drops an unknown one
//! (`geneve_unknown_critical_option`): both sides must understand it.

use std::collections::HashSet;
use std::path::Path;
use std::time::Instant;

use netns_tests::one_tunnel::{OneTunnel, TierMode};
use netns_tests::*;

/// The underlay: VTEP addresses and prefix length.
#[derive(Clone, Copy)]
struct Underlay {
    a: &'static str,
    b: &'static str,
    prefix: u8,
    /// Outer IP + UDP + Geneve + inner Ethernet.
    overhead: u32,
}

const V4: Underlay = Underlay { a: "192.0.2.1", b: "192.0.2.2", prefix: 24, overhead: 50 };
const V6: Underlay = Underlay { a: "2001:db8::1", b: "2001:db8::2", prefix: 64, overhead: 70 };

const WA_IP: &str = "198.51.100.1";
const WB_IP: &str = "198.51.100.2";
const VNI: u32 = 42;
const TCP_BYTES: usize = 2_000_000;
/// OVN's option class and a critical type.
const OPT_CLASS: u16 = 0x0102;
const OPT_TYPE: u8 = 0x80;
const A_VALUE: &str = "0000000b";
const B_VALUE: &str = "0000002a";

fn why(d: &Overlayd) -> String {
    format!("counters: {:#}\nstatus: {:#}\nlog:\n{}", d.counters(), d.status(), d.log())
}

fn workload(ns: &Netns, dev: &str, ip: &str, mtu: u32) {
    ns.ip(&["link", "set", dev, "mtu", &mtu.to_string()]);
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", dev]);
}

/// overlayd's configuration: one Geneve tunnel to OVS; with `options`, it
/// sends option A and takes from the tunnel only packets with option B.
fn config(
    wl: &str,
    up: &str,
    up_mac: &str,
    options: bool,
    u: Underlay,
    next_hop: Option<&str>,
    tier: TierMode,
) -> String {
    let next_hop = next_hop.map(|m| format!("next_hop_mac = \"{m}\"")).unwrap_or_default();
    let (send, take) = if options {
        (
            format!("options = [{{ class = {OPT_CLASS:#06x}, type = {OPT_TYPE:#04x}, data = \"{A_VALUE}\" }}]"),
            format!(
                ", geneve_option = {{ class = {OPT_CLASS:#06x}, type = {OPT_TYPE:#04x}, data = \"{B_VALUE}\" }}"
            ),
        )
    } else {
        (String::new(), String::new())
    };
    let tunnel_body = format!(
        "type = \"geneve\"\nlocal = \"{a}\"\nremote = \"{b}\"\nvni = {VNI}\n{next_hop}\n{send}",
        a = u.a,
        b = u.b,
    );
    OneTunnel {
        wl,
        up,
        up_port: &format!("mac = \"{up_mac}\""),
        tunnel: "to-ovs",
        tunnel_body: &tunnel_body,
        decap_match: &format!(", vni = {VNI}{take}"),
        tier,
        ..OneTunnel::default()
    }
    .render()
}

/// One Geneve packet on the underlay, as tshark dissects it.
#[derive(Debug)]
struct Outer {
    eth_src: String,
    src: String,
    df: bool,
    sport: u16,
    dport: u16,
    udp_checksum: u16,
    udp_status: String,
    version: String,
    oam: String,
    critical: String,
    vni: Option<u32>,
    /// (class, type, data) of each option.
    options: Vec<(String, String, String)>,
}

fn num(s: &str) -> Option<u32> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `v6`: the underlay is IPv6, so the first `ipv6.src` is the outer source
/// (the first `ip.src` would be an inner packet's).
fn dissect(file: &Path, v6: bool) -> Vec<Outer> {
    let fields = [
        "eth.src",
        "ip.src",
        "ipv6.src",
        "ip.flags.df",
        "udp.srcport",
        "udp.dstport",
        "udp.checksum",
        "udp.checksum.status",
        "geneve.version",
        "geneve.flags.oam",
        "geneve.flags.critical",
        "geneve.vni",
        "geneve.option.class",
        "geneve.option.type",
        "geneve.option.unknown.data",
    ];
    // First occurrences only (tshark_fields), except for the options: a
    // second pass lists every option of every packet, aligned by frame.
    let rows = tshark_fields(file, "geneve", &fields);
    let opts = tshark_all(
        file,
        &["geneve.option.class", "geneve.option.type", "geneve.option.unknown.data"],
    );
    assert_eq!(rows.len(), opts.len(), "both passes see the same packets");
    rows.into_iter()
        .zip(opts)
        .map(|(r, o)| {
            let f = |i: usize| r.get(i).map(|s| s.trim().to_string()).unwrap_or_default();
            let split = |i: usize| -> Vec<String> {
                o.get(i)
                    .map(|s| s.split(',').map(str::to_string).filter(|s| !s.is_empty()).collect())
                    .unwrap_or_default()
            };
            let (c, t, d) = (split(0), split(1), split(2));
            let options = (0..c.len())
                .map(|i| {
                    (
                        c[i].clone(),
                        t.get(i).cloned().unwrap_or_default(),
                        d.get(i).cloned().unwrap_or_default(),
                    )
                })
                .collect();
            Outer {
                eth_src: f(0),
                src: if v6 { f(2) } else { f(1) },
                df: matches!(f(3).as_str(), "1" | "True"),
                sport: num(&f(4)).unwrap_or(0) as u16,
                dport: num(&f(5)).unwrap_or(0) as u16,
                udp_checksum: num(&f(6)).unwrap_or(0) as u16,
                udp_status: f(7),
                version: f(8),
                oam: f(9),
                critical: f(10),
                vni: num(&f(11)),
                options,
            }
        })
        .collect()
}

/// Every occurrence of each field, comma-separated, one row per Geneve packet.
fn tshark_all(file: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let f = file.to_string_lossy().into_owned();
    let mut args =
        vec!["tshark", "-n", "-r", &f, "-Y", "geneve", "-T", "fields", "-E", "separator=|"];
    args.extend_from_slice(&["-E", "occurrence=a", "-E", "aggregator=,"]);
    for fl in fields {
        args.extend_from_slice(&["-e", fl]);
    }
    run(&args).lines().map(|l| l.split('|').map(str::to_string).collect()).collect()
}

/// Checks the packets one side sent: its MAC, the VNI, port 6081, version 0,
/// O clear, a valid or zero UDP checksum, DF when required, the option (and
/// the C bit) when expected, and several source ports (one per inner flow).
fn check_sent(pkts: &[Outer], ip: &str, mac: &str, df: bool, option: Option<&str>) {
    let mine: Vec<&Outer> = pkts.iter().filter(|p| p.src == ip).collect();
    assert!(mine.len() > 100, "only {} Geneve packets from {ip} captured", mine.len());
    let mut ports = HashSet::new();
    for p in &mine {
        assert_eq!(p.eth_src, mac, "outer source MAC: {p:?}");
        assert_eq!(p.vni, Some(VNI), "VNI: {p:?}");
        assert_eq!(p.dport, 6081, "{p:?}");
        assert_eq!((p.version.as_str(), p.oam.as_str()), ("0", "0"), "version, O bit: {p:?}");
        let ok = if p.udp_checksum == 0 { p.udp_status == "3" } else { p.udp_status == "1" };
        assert!(ok, "bad UDP checksum: {p:?}");
        if df {
            assert!(p.df, "DF not set: {p:?}");
        }
        match option {
            Some(value) => {
                assert_eq!(p.critical, "1", "C bit with a critical option: {p:?}");
                let want =
                    (format!("{OPT_CLASS:#06x}"), format!("{OPT_TYPE:#04x}"), value.to_string());
                assert_eq!(p.options, vec![want], "options: {p:?}");
            }
            None => {
                assert_eq!(p.critical, "0", "{p:?}");
                assert!(p.options.is_empty(), "no options expected: {p:?}");
            }
        }
        ports.insert(p.sport);
    }
    assert!(ports.len() >= 2, "{ip} used a single UDP source port: {ports:?}");
}

/// The interop case with the XDP tier on (the default) and off.
fn against_ovs(options: bool, u: Underlay) {
    for tier in TierMode::BOTH {
        eprintln!("Geneve over {}, options {options}, xdp_tier = \"{}\"", u.a, tier.name());
        against_ovs_in(options, u, tier);
    }
}

fn against_ovs_in(options: bool, u: Underlay, tier: TierMode) {
    let start = Instant::now();
    let ha = Netns::new("gvha");
    let hb = Netns::new("gvhb");
    let wa = Netns::new("gvwa");
    let wb = Netns::new("gvwb");
    let (up, ub) = (unique("gvup"), unique("gvub"));
    let (wl, we) = (unique("gvwl"), unique("gvwe"));
    let (bw, wbe) = (unique("gvbw"), unique("gvwb"));
    veth(&ha, &up, &hb, &ub);
    veth(&ha, &wl, &wa, &we);
    veth(&hb, &bw, &wb, &wbe);
    ha.ip(&["addr", "add", &format!("{}/{}", u.a, u.prefix), "dev", &up, "nodad"]);
    let mtu = 1500 - u.overhead - if options { 8 } else { 0 };
    workload(&wa, &we, WA_IP, mtu);
    workload(&wb, &wbe, WB_IP, mtu);
    // OVS's workload: its userspace datapath forwards partial checksums and
    // TSO super-frames from a veth as they are; its documentation has users
    // turn tx offload off there. A's workload keeps its defaults.
    wb.exec(&["ethtool", "-K", &wbe, "tx", "off"]);
    finish_checksums_like_a_nic(&hb, &ub);
    hb.exec(&["ethtool", "-K", &bw, "tx", "off"]);

    let ovs = Ovs::start(&hb);
    ovs.vsctl(&["add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev"]);
    ovs.vsctl(&[
        "add-port",
        "br-int",
        "tun0",
        "--",
        "set",
        "interface",
        "tun0",
        "type=geneve",
        &format!("options:remote_ip={}", u.a),
        &format!("options:local_ip={}", u.b),
        &format!("options:key={VNI}"),
        "options:csum=true",
    ]);
    ovs.vsctl(&["add-port", "br-int", &bw]);
    let hw = format!("other_config:hwaddr={}", hb.mac(&ub));
    ovs.vsctl(&["add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev", &hw]);
    ovs.vsctl(&["add-port", "br-phy", &ub]);
    hb.ip(&["addr", "add", &format!("{}/{}", u.b, u.prefix), "dev", "br-phy", "nodad"]);
    hb.ip(&["link", "set", "br-phy", "up"]);
    ovs.appctl(&["tnl/neigh/set", "br-phy", u.a, &ha.mac(&up)]);
    if options {
        let map = format!("{{class={OPT_CLASS:#06x},type={OPT_TYPE:#04x},len=4}}->tun_metadata0");
        ovs.ofctl("add-tlv-map", "br-int", &[&map]);
        ovs.ofctl("del-flows", "br-int", &[]);
        let a = u32::from_str_radix(A_VALUE, 16).unwrap();
        let b = u32::from_str_radix(B_VALUE, 16).unwrap();
        ovs.ofctl(
            "add-flow",
            "br-int",
            &[&format!("priority=10,in_port=tun0,tun_metadata0={a:#x},actions=output:{bw}")],
        );
        ovs.ofctl(
            "add-flow",
            "br-int",
            &[&format!(
                "priority=10,in_port={bw},actions=set_field:{b:#x}->tun_metadata0,output:tun0"
            )],
        );
    }

    let up_mac = ha.mac(&up);
    // OVS answers from br-phy, which has its uplink veth's address. Over
    // IPv4 overlayd resolves it from the kernel's neighbours; over IPv6 it
    // is written in (br-phy answers neighbour solicitations only once OVS
    // has learnt its own address, which this test does not wait for).
    let ub_mac = hb.mac(&ub);
    let v4 = u.prefix == 24;
    let next_hop = (!v4).then_some(ub_mac.as_str());
    let d = Overlayd::start(&ha, &config(&wl, &up, &up_mac, options, u, next_hop, tier));
    d.wait_neighbours();
    tier.assert_in_status(&d.status());

    let dir = TempDir::new("gvpeer");
    let pcap = dir.join("underlay.pcap");
    // On the far end of the uplink: what overlayd sends through AF_XDP never
    // reaches a capture on the uplink itself.
    let cap = Capture::start(&hb, &ub, "udp port 6081", &pcap, 30_000, 90);
    let all_why = || {
        format!(
            "xdp_tier = \"{}\"\n{}\nOVS br-int flows:\n{}\nOVS datapath flows:\n{}",
            tier.name(),
            why(&d),
            ovs.ofctl("dump-flows", "br-int", &[]),
            ovs.appctl(&["dpctl/dump-flows"])
        )
    };
    // The first packets set up OVS's datapath flows and ARP: one retry.
    let t0 = Instant::now();
    assert!(pings(&wa, WB_IP, 3) || pings(&wa, WB_IP, 3), "A -> B ping failed; {}", all_why());
    assert!(pings(&wb, WA_IP, 3), "B -> A ping failed; {}", all_why());
    tcp_transfer(&wa, &wb, WB_IP, TCP_BYTES);
    tcp_transfer(&wb, &wa, WA_IP, TCP_BYTES);
    eprintln!("pings and {TCP_BYTES} bytes of TCP each way: {:.1} s", t0.elapsed().as_secs_f64());
    let file = cap.finish();

    let pkts = dissect(&file, !v4);
    check_sent(&pkts, u.a, &up_mac, v4, options.then_some(A_VALUE));
    check_sent(&pkts, u.b, &ub_mac, false, options.then_some(B_VALUE));

    // Conservation (settled_counters asserts it), traffic both ways through
    // the tunnel, and not one drop: with options, every packet from OVS
    // carried the value rule 20 takes.
    let c = d.settled_counters();
    let t = &c["tunnels"][0];
    assert!(t["encap"]["packets"].as_u64().unwrap() > 1000, "{c:#}");
    assert!(t["decap"]["packets"].as_u64().unwrap() > 1000, "{c:#}");
    assert_eq!(c["dropped"], 0, "unexpected drops: {}", all_why());
    let st = d.status();
    assert_eq!(st["io"]["ports"][1]["backend"], "af_xdp", "{st:#}");
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached in {}", ha.name());
    eprintln!(
        "Geneve against OVS over {}, options {options}, xdp_tier = \"{}\": {:.1} s",
        u.a,
        tier.name(),
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn geneve_against_ovs() {
    if require_root("geneve_against_ovs") {
        require_program("tshark");
        against_ovs(false, V4);
    }
}

#[test]
fn geneve_with_options_against_ovs() {
    if require_root("geneve_with_options_against_ovs") {
        require_program("tshark");
        against_ovs(true, V4);
    }
}

#[test]
fn geneve_with_options_against_ovs_over_ipv6() {
    if require_root("geneve_with_options_against_ovs_over_ipv6") {
        require_program("tshark");
        against_ovs(true, V6);
    }
}
