//! The live trace tells the truth: on a running overlayd (AF_XDP, VXLAN to
//! the kernel's VXLAN device), a trace made just before a real packet is sent
//! predicts exactly what the datapath then does with it: the frame it sends
//! and where, or the drop reason, and every counter the packet moves; and
//! where the packet's flow runs after it (the XDP tier or AF_XDP, and why),
//! which the flow's next packets then show.
//!
//! ```text
//!  wa                          ha: overlayd                 hb: kernel              wb (198.51.100.2)
//!  we ---veth--- wl [workload]  up [uplink] ---veth--- ub  vx0 + br0 --- bw ---veth--- wbe
//!                               192.0.2.1                  192.0.2.2   (192.0.2.3: nobody)
//! ```
//!
//! Frames are injected with a source MAC no host owns and sent to a
//! destination MAC no host owns, so nothing answers them and no other traffic
//! moves the counters between the trace and the check; IPv6 is off in every
//! namespace for the same reason.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::counters::FlowSnapshot;
use engine::trace::{CounterMoves, PortMoves, TunnelMoves};
use netns_tests::*;
use serde_json::Value;

/// Source and destination MACs of the injected inner frames: nobody's.
const SRC: &str = "02:00:00:00:0a:aa";
const DST: &str = "02:00:00:00:0b:bb";

struct Topology {
    wa: Netns,
    hb: Netns,
    _wb: Netns,
    d: Overlayd,
    ha: Netns,
    we: String,
    up: String,
    ub: String,
}

fn build() -> Topology {
    let kernel_peer::Hosts { ha, hb, wa, wb, up, ub, wl, we, wbe, .. } =
        kernel_peer::hosts(kernel_peer::no_ipv6);
    wb.ip(&["addr", "add", "198.51.100.2/24", "dev", &wbe]);

    // to-c's remote is on the underlay subnet, but no host has it: its next
    // hop never resolves.
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
id = 10
priority = 100
match = {{ in_port = "wl" }}
actions = [{{ encap = "to-b" }}]

[[rules]]
id = 20
priority = 100
match = {{ tunnel = "to-b", vni = 42 }}
actions = [{{ output = "wl" }}]

[[rules]]
id = 30
priority = 200
match = {{ in_port = "wl", ip_dst = "198.51.100.66" }}
actions = ["count", "drop"]

[[rules]]
id = 40
priority = 200
match = {{ in_port = "wl", ip_dst = "198.51.100.3" }}
actions = [{{ encap = "to-c" }}]

[[rules]]
id = 50
priority = 200
match = {{ in_port = "wl", ip_dst = "198.51.100.77" }}
actions = [{{ encap = "to-b" }}]
xdp_tier = "off"
"#
    );
    let d = Overlayd::start(&ha, &config);
    let resolved = wait_until(Duration::from_secs(10), || {
        d.status()["io"]["neighbours"]
            .as_array()
            .is_some_and(|v| v.iter().any(|n| n["remote"] == "192.0.2.2" && n["mac"].is_string()))
    });
    assert!(resolved, "to-b's next hop did not resolve: {:#}", d.status()["io"]);
    Topology { wa, hb, _wb: wb, d, ha, we, up, ub }
}

/// What moved between two `/v1/counters` answers, in the shape of a trace's
/// prediction (only what moved; no cache or batch counters).
fn moved(before: &Value, after: &Value) -> CounterMoves {
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let flow = |a: &Value, b: Option<&Value>| FlowSnapshot {
        packets: n(a, "packets") - b.map_or(0, |b| n(b, "packets")),
        bytes: n(a, "bytes") - b.map_or(0, |b| n(b, "bytes")),
    };
    let find = |list: &Value, key: &str, v: &Value| {
        list.as_array().and_then(|l| l.iter().find(|x| x[key] == *v)).cloned()
    };
    let any = |f: &FlowSnapshot| f.packets != 0 || f.bytes != 0;
    let mut m = CounterMoves {
        rx: n(after, "rx") - n(before, "rx"),
        tx: n(after, "tx") - n(before, "tx"),
        replicas: n(after, "replicas") - n(before, "replicas"),
        generated: n(after, "generated") - n(before, "generated"),
        ..CounterMoves::default()
    };
    for (reason, c) in after["drops"].as_object().into_iter().flatten() {
        let d = c.as_u64().unwrap() - before["drops"][reason].as_u64().unwrap_or(0);
        if d > 0 {
            m.drops.insert(reason.clone(), d);
        }
    }
    for p in after["ports"].as_array().into_iter().flatten() {
        let b = find(&before["ports"], "name", &p["name"]);
        let pm = PortMoves {
            rx: flow(&p["rx"], b.as_ref().map(|b| &b["rx"])),
            tx: flow(&p["tx"], b.as_ref().map(|b| &b["tx"])),
        };
        if any(&pm.rx) || any(&pm.tx) {
            m.ports.insert(p["name"].as_str().unwrap().to_string(), pm);
        }
    }
    for t in after["tunnels"].as_array().into_iter().flatten() {
        let b = find(&before["tunnels"], "name", &t["name"]);
        let mut tm = TunnelMoves {
            encap: flow(&t["encap"], b.as_ref().map(|b| &b["encap"])),
            decap: flow(&t["decap"], b.as_ref().map(|b| &b["decap"])),
            ..TunnelMoves::default()
        };
        for (reason, c) in t["drops"].as_object().into_iter().flatten() {
            let was = b.as_ref().and_then(|b| b["drops"][reason].as_u64()).unwrap_or(0);
            let d = c.as_u64().unwrap() - was;
            if d > 0 {
                tm.drops.insert(reason.clone(), d);
            }
        }
        if any(&tm.encap) || any(&tm.decap) || !tm.drops.is_empty() {
            m.tunnels.insert(t["name"].as_str().unwrap().to_string(), tm);
        }
    }
    for r in after["rules"].as_array().into_iter().flatten() {
        let b = find(&before["rules"], "id", &r["id"]);
        let f = flow(r, b.as_ref());
        if any(&f) {
            m.rules.insert(r["id"].as_u64().unwrap() as u32, f);
        }
    }
    m
}

/// What a case's packet must come to.
enum Fate {
    /// Sent out of this port.
    Sent(&'static str),
    /// Dropped under this reason.
    Dropped(&'static str),
}

/// Where a case's flow runs after its packet: the trace's `flow_runs_in`
/// step (`place`, `reason`).
type Place = (&'static str, Option<&'static str>);
const TIER: Place = ("xdp_tier", None);

/// The outer frame with the per-packet IPv4 identification and header
/// checksum zeroed: each worker numbers its own packets.
fn without_ident(f: &[u8]) -> Vec<u8> {
    let mut f = f.to_vec();
    f[18..20].fill(0);
    f[24..26].fill(0);
    f
}

#[test]
fn live_trace_predicts_the_datapath() {
    if !require_root("live_trace_predicts_the_datapath") {
        return;
    }
    let t = build();
    let up_mac = t.ha.mac(&t.up);
    let ub_mac = t.hb.mac(&t.ub);
    let inner = |dst: &str, rest: &str| {
        engine::packet_spec::build(&format!(
            "eth(src={SRC},dst={DST})/ipv4(src=198.51.100.1,dst={dst})/{rest}"
        ))
        .unwrap()
    };
    let from_b = engine::packet_spec::build(&format!(
        "eth(src={ub_mac},dst={up_mac})/ipv4(src=192.0.2.2,dst=192.0.2.1)/udp(sport=50123,dport=4789,csum=0)/vxlan(vni=42)/eth(src=02:00:00:00:0b:01,dst={SRC})/ipv4(src=198.51.100.2,dst=198.51.100.1)/udp(sport=7,dport=9)/payload(len=20)"
    ))
    .unwrap();
    // 20 + 8 + 1432 = 1460 bytes of IP, over the tunnel's 1450 (1500 - 50).
    let cases: Vec<(&str, &str, Vec<u8>, Fate, Place)> = vec![
        (
            "encapsulation",
            "wl",
            inner("198.51.100.2", "udp(sport=40000,dport=9)/payload(len=30)"),
            Fate::Sent("up"),
            TIER,
        ),
        ("decapsulation", "up", from_b, Fate::Sent("wl"), TIER),
        (
            "rule drop",
            "wl",
            inner("198.51.100.66", "udp(sport=40000,dport=9)"),
            Fate::Dropped("rule_drop"),
            TIER,
        ),
        (
            "mtu drop",
            "wl",
            inner("198.51.100.2", "udp(sport=40000,dport=9)/payload(len=1432)"),
            Fate::Dropped("mtu_exceeded"),
            TIER,
        ),
        (
            "unresolved neighbour",
            "wl",
            inner("198.51.100.3", "udp(sport=40000,dport=9)"),
            Fate::Dropped("no_neighbour"),
            ("userspace", Some("no_next_hop")),
        ),
        (
            "opted out of the tier",
            "wl",
            inner("198.51.100.77", "udp(sport=40001,dport=9)/payload(len=30)"),
            Fate::Sent("up"),
            ("userspace", Some("rule_opt_out")),
        ),
    ];

    let dir = TempDir::new("livetrace");
    let (ub_pcap, we_pcap) = (dir.join("ub.pcap"), dir.join("we.pcap"));
    let ub_cap = Capture::start(&t.hb, &t.ub, "udp port 4789", &ub_pcap, 100, 60);
    let we_cap = Capture::start(&t.wa, &t.we, "", &we_pcap, 100, 60);
    let start = t.d.settled_counters();

    // (where, frame) the traces say the datapath sends.
    let mut promised: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for (what, in_port, frame, fate, place) in &cases {
        let before = t.d.counters();
        let trace = t.d.ctl_json(&["trace", "--in-port", in_port, "--hex", &hex(frame)]);
        let why = format!("{what}: trace {trace:#}\nlog:\n{}", t.d.log());
        assert_eq!(trace["live"], true, "{why}");
        let steps = trace["steps"].as_array().expect("steps");
        let outputs: Vec<(String, Vec<u8>)> = trace["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let h = o[1].as_str().unwrap();
                let bytes = (0..h.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
                    .collect();
                (o[0].as_str().unwrap().to_string(), bytes)
            })
            .collect();
        // The trace's own verdict is this case's.
        match fate {
            Fate::Sent(port) => {
                assert!(
                    outputs.len() == 1 && outputs[0].0 == *port,
                    "{what}: not sent to {port}; {why}"
                );
                assert!(!steps.iter().any(|s| s["step"] == "dropped"), "{why}");
            }
            Fate::Dropped(reason) => {
                let last = steps.last().unwrap();
                assert_eq!(
                    (&last["step"], &last["reason"]),
                    (&"dropped".into(), &(*reason).into()),
                    "{why}"
                );
            }
        }
        // Where the flow runs next, after the rule it matched (and where
        // that rule runs).
        let at = |step: &str| steps.iter().position(|s| s["step"] == step);
        let runs_in = at("flow_runs_in").unwrap_or_else(|| panic!("no flow_runs_in: {why}"));
        assert!(at("matched").is_some_and(|m| m < runs_in), "{why}");
        let runs_in = &steps[runs_in];
        let got = (runs_in["place"].as_str().unwrap_or("-"), runs_in["reason"].as_str());
        assert_eq!(got, *place, "{why}");
        for (port, f) in &outputs {
            promised.push((what, port.clone(), f.clone()));
        }
        let predicted: CounterMoves =
            serde_json::from_value(trace["counters"].clone()).expect("the trace's counters");

        // Now the real packet.
        match *in_port {
            "wl" => inject(&t.wa, &t.we, std::slice::from_ref(frame)),
            _ => inject(&t.hb, &t.ub, std::slice::from_ref(frame)),
        }
        let arrived = wait_until(Duration::from_secs(5), || {
            t.d.counters()["rx"].as_u64().unwrap() >= before["rx"].as_u64().unwrap() + predicted.rx
        });
        assert!(arrived, "{what}: the datapath never counted the packet; {why}");
        // Let anything else the packet causes be counted too.
        std::thread::sleep(Duration::from_millis(300));
        let after = t.d.counters();
        assert_eq!(moved(&before, &after), predicted, "{what}: the datapath did otherwise; {why}");
    }

    // Encapsulation used the learned next hop and the uplink's own MAC, as
    // the workers do.
    let encap = &promised.iter().find(|p| p.0 == "encapsulation").unwrap().2;
    assert_eq!(hex(&encap[0..6]), hex(&mac_bytes(&ub_mac)), "next hop MAC");
    assert_eq!(hex(&encap[6..12]), hex(&mac_bytes(&up_mac)), "outer source MAC");
    // The no_neighbour trace says why.
    let unresolved = t.d.ctl_json(&["trace", "--in-port", "wl", "--hex", &hex(&cases[4].2)]);
    let hop = unresolved["steps"].as_array().unwrap().iter().find(|s| s["step"] == "next_hop");
    assert!(
        hop.is_some_and(|h| h["mac"].is_null()
            && h["remote"] == "192.0.2.3"
            && h["detail"].as_str().unwrap().contains("no usable neighbour entry")),
        "{unresolved:#}"
    );

    // Every frame a trace promised went out where it said, byte for byte
    // (outer IPv4 identification and checksum aside).
    let at_ub = read_pcap(&ub_cap.finish());
    let at_we = read_pcap(&we_cap.finish());
    for (what, port, frame) in &promised {
        let seen = match port.as_str() {
            "up" => at_ub.iter().any(|f| without_ident(f) == without_ident(frame)),
            _ => at_we.iter().any(|f| f == frame),
        };
        assert!(
            seen,
            "{what}: the frame the trace promised on {port} was not seen: {}",
            hex(frame)
        );
    }
    let mut per_port: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, port, _) in &promised {
        *per_port.entry(port.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_port,
        BTreeMap::from([("up", 2), ("wl", 2)]),
        "encap twice; decap and the ICMP reply"
    );

    let end = t.d.settled_counters();
    assert_eq!(
        end["rx"].as_u64().unwrap() - start["rx"].as_u64().unwrap(),
        cases.len() as u64,
        "only the test's packets reached the datapath: {end:#}"
    );
    next_packets_run_where_the_trace_said(&t, &cases[0].2, &cases[5].2);
    let Topology { d, ha, .. } = t;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}

/// The flows' next packets: the encapsulated flow's are forwarded by the
/// kernel tier (its hits grow, the workload's AF_XDP socket's do not), the
/// opted-out flow's by AF_XDP (the other way round), each packet once. The
/// uplink's peer runs no XDP program, so its driver takes no redirected
/// frames: the XDP tier hands such encapsulations to the tc tier.
fn next_packets_run_where_the_trace_said(t: &Topology, in_tier: &[u8], opted_out: &[u8]) {
    const N: u64 = 20;
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    // (packets the tiers forwarded from wl, packets wl's AF_XDP socket
    // received, rule 10, rule 50)
    let sample = || {
        let st = t.d.status();
        let c = t.d.counters();
        let rule = |id: u64| {
            let r = c["rules"].as_array().unwrap().iter().find(|r| r["id"] == id).cloned();
            u(&r.unwrap_or_default()["packets"])
        };
        let wl = &st["io"]["ports"][0];
        let tier = u(&wl["tier"]["hit"]) + u(&wl["tier"]["tc_hit"]);
        (tier, u(&wl["sockets"][0]["rx_packets"]), rule(10), rule(50))
    };
    let flows = [("tier flow", in_tier, true), ("opted-out flow", opted_out, false)];
    for (what, frame, tier) in flows {
        std::thread::sleep(Duration::from_millis(600)); // statistics published
        let (tier0, rx0, r10, r50) = sample();
        inject(&t.wa, &t.we, &vec![frame.to_vec(); N as usize]);
        let counted = wait_until(Duration::from_secs(5), || {
            let (tier1, rx1, _, _) = sample();
            (tier1 - tier0) + (rx1 - rx0) >= N
        });
        std::thread::sleep(Duration::from_millis(600));
        let (tier1, rx1, r10b, r50b) = sample();
        let why = format!(
            "{what}: tier +{}, AF_XDP rx +{} (counted: {counted})\nwl: {:#}\n{}",
            tier1 - tier0,
            rx1 - rx0,
            t.d.status()["io"]["ports"][0],
            t.d.log()
        );
        let want = if tier { (N, 0) } else { (0, N) };
        assert_eq!((tier1 - tier0, rx1 - rx0), want, "{why}");
        assert_eq!((r10b - r10, r50b - r50), want, "{why}");
    }
}
