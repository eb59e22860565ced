//! `overlayctl why` on a running overlayd (AF_XDP, VXLAN to the kernel's
//! VXLAN device) names each blocker as it is created on the real topology,
//! and the path once it is clear; and `/metrics` exports the per-tunnel,
//! socket, steering and neighbour series with the values `status` shows.
//!
//! ```text
//!  wa (198.51.100.1)            ha: overlayd                 hb: kernel              wb (198.51.100.2)
//!  we ---veth--- wl [workload]  up [uplink] ---veth--- ub  vx0 + br0 --- bw ---veth--- wbe
//!                               192.0.2.1                  192.0.2.2   (192.0.2.3: nobody)
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use netns_tests::*;
use serde_json::Value;

struct Topology {
    wa: Netns,
    _wb: Netns,
    _hb: Netns,
    d: Overlayd,
    ha: Netns,
    wl: String,
    we: String,
    up: String,
    /// Workload B's MAC address.
    b_mac: String,
}

/// Both hosts, workloads with MTU 1450 (room for the 50 bytes of VXLAN), and
/// overlayd with tunnel to-b (the kernel's VTEP) and to-c (a remote nobody
/// has: its next hop never resolves).
fn build() -> Topology {
    let kernel_peer::Hosts { ha, hb, wa, wb, up, ub, wl, we, wbe, .. } =
        kernel_peer::hosts(kernel_peer::no_ipv6);
    for (ns, dev, ip) in [(&wa, &we, "198.51.100.1/24"), (&wb, &wbe, "198.51.100.2/24")] {
        ns.ip(&["link", "set", dev, "mtu", "1450"]);
        ns.ip(&["addr", "add", ip, "dev", dev]);
    }
    ha.ip(&["link", "set", &wl, "mtu", "1450"]);
    // Host B's uplink is a veth with tx off: a real NIC would finish the
    // checksums the kernel VTEP leaves partial (the workloads keep theirs on).
    hb.exec(&["ethtool", "-K", &ub, "tx", "off"]);
    let b_mac = wb.mac(&wbe);

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
vni = 43

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
id = 40
priority = 200
match = {{ in_port = "wl", ip_dst = "198.51.100.3" }}
actions = [{{ encap = "to-c" }}]
"#
    );
    let d = Overlayd::start(&ha, &config);
    let resolved = wait_until(Duration::from_secs(10), || {
        d.status()["io"]["neighbours"]
            .as_array()
            .is_some_and(|v| v.iter().any(|n| n["remote"] == "192.0.2.2" && n["mac"].is_string()))
    });
    assert!(resolved, "to-b's next hop did not resolve: {:#}", d.status()["io"]);
    Topology { wa, _wb: wb, _hb: hb, d, ha, wl, we, up, b_mac }
}

/// `overlayctl why` as JSON and as text.
fn why(d: &Overlayd, args: &[&str]) -> (Value, String) {
    let mut a = vec!["why"];
    a.extend_from_slice(args);
    let json = d.ctl_json(&a);
    (json, d.ctl(&a))
}

/// The blocker's tag, or "none".
fn blocker(r: &Value) -> &str {
    r["blocker"]["blocker"].as_str().unwrap_or("none")
}

#[test]
fn why_names_each_blocker_on_a_real_topology() {
    if !require_root("why_names_each_blocker_on_a_real_topology") {
        return;
    }
    let t = build();
    let d = &t.d;
    let to_b = ["--from", "198.51.100.1", "--to", "198.51.100.2"];

    // A working path: why says so, and the ping agrees.
    assert!(pings(&t.wa, "198.51.100.2", 3), "A -> B ping failed; log:\n{}", d.log());
    let (r, text) = why(d, &to_b);
    assert_eq!((r["basis"].as_str(), blocker(&r)), (Some("live"), "none"), "{text}");
    assert_eq!(r["port"], "wl", "{text}");
    assert_eq!(r["path"]["rule"], 10, "{text}");
    let hop = &r["path"]["hops"][0];
    assert_eq!((&hop["to"], &hop["tunnel"]), (&"tunnel".into(), &"to-b".into()), "{text}");
    assert!(hop["next_hop"].is_string(), "the learned next hop: {text}");
    // The tier is on by default; its state on wl comes from status.
    let tier = r["tier"].as_str().unwrap_or_default();
    assert!(tier.starts_with("XDP tier for the established flows it takes"), "{text}");
    assert!(text.contains("path: port wl -> rule 10"), "{text}");
    assert!(text.contains(&format!(" on {})", t.up)), "the neighbour's state: {text}");
    // The pings moved this path's counters.
    let moved = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"]["what"] == "counters")
        .map(|f| f["check"]["moved"].clone())
        .expect("a counters check");
    assert!(moved["tunnel to-b sent"].as_u64().unwrap_or(0) >= 3, "{text}");
    assert!(moved["rule 10"].as_u64().unwrap_or(0) >= 3, "{text}");
    // Where this flow runs after its first packet, and why: a ping is not
    // the tier's; a UDP flow of the same rule is.
    let flow_tier = |r: &Value| {
        r["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"]["what"] == "tier")
            .map_or(Value::Null, |f| f["check"]["flow"].clone())
    };
    let flow = flow_tier(&r);
    assert_eq!(
        (&flow["in_tier"], &flow["reason"]),
        (&false.into(), &"not_tcp_udp".into()),
        "{text}"
    );
    assert!(text.contains("this flow: AF_XDP: the tier takes untagged"), "{text}");
    let (r, text) = why(d, &[&to_b[..], &["--proto", "udp", "--dport", "53"]].concat());
    assert_eq!(flow_tier(&r)["in_tier"], true, "{text}");
    assert!(text.contains("this flow: XDP tier after the first packet"), "{text}");
    // rule list says the same of rule 10 (VXLAN, next hop resolved).
    let rules = d.ctl(&["rule", "list"]);
    let row = rules.lines().find(|l| l.starts_with("10 ")).unwrap_or_default();
    assert!(row.ends_with("XDP tier after the first packet"), "{rules}");

    // A drop rule.
    d.ctl(&[
        "rule",
        "add",
        "--id",
        "30",
        "--priority",
        "200",
        "--match",
        "in_port=wl,ip_dst=198.51.100.2",
        "--action",
        "drop",
    ]);
    let (r, text) = why(d, &to_b);
    assert_eq!(blocker(&r), "rule_drops", "{text}");
    assert_eq!(r["blocker"]["rule"], 30, "{text}");
    assert!(text.contains("blocked: rule 30 (priority 200) drops it"), "{text}");
    assert!(text.contains("overlayctl rule del 30"), "{text}");
    assert!(!pings(&t.wa, "198.51.100.2", 1), "the drop rule let a ping through");
    d.ctl(&["rule", "del", "30"]);

    // L2 forwarding without an FDB entry or a flood list; then the fix why
    // suggests, applied as it is written.
    d.ctl(&["rule", "del", "10"]);
    d.ctl(&["rule", "add", "--id", "11", "--match", "in_port=wl", "--action", "forward_l2=42"]);
    let to_b_mac = format!("{},198.51.100.2", t.b_mac);
    let l2 = ["--from", "198.51.100.1", "--to", to_b_mac.as_str()];
    let (r, text) = why(d, &l2);
    assert_eq!(blocker(&r), "no_fdb_entry", "{text}");
    assert_eq!(
        (&r["blocker"]["vni"], &r["blocker"]["mac"]),
        (&42.into(), &t.b_mac.as_str().into())
    );
    let fix = format!("overlayctl fdb add --vni 42 --mac {} --tunnel to-b", t.b_mac);
    assert!(text.contains(&format!("no FDB entry for {} in VNI 42", t.b_mac)), "{text}");
    assert!(text.contains(&fix), "{text}");
    let args: Vec<&str> = fix.split_whitespace().skip(1).collect();
    d.ctl(&args);
    let (r, text) = why(d, &l2);
    assert_eq!(blocker(&r), "none", "after `{fix}`: {text}");
    let fdb = r["checks"].as_array().unwrap().iter().find(|f| f["check"]["what"] == "fdb").unwrap();
    assert_eq!((&fdb["verdict"], &fdb["check"]["entry"]), (&"ok".into(), &"to-b".into()), "{text}");
    d.ctl(&["rule", "del", "11"]);
    d.ctl(&["rule", "add", "--id", "10", "--match", "in_port=wl", "--action", "encap=to-b"]);

    // An unresolved neighbour: nobody has 192.0.2.3.
    let to_c = ["--from", "198.51.100.1", "--to", "198.51.100.3"];
    let mut last = (Value::Null, String::new());
    let named = wait_until(Duration::from_secs(10), || {
        last = why(d, &to_c);
        blocker(&last.0) == "neighbour_unresolved"
            && last.0["blocker"]["state"] != "no neighbour entry"
    });
    let (r, text) = last;
    assert!(named, "{text}\nlog:\n{}", d.log());
    assert_eq!(
        (&r["blocker"]["tunnel"], &r["blocker"]["hop"], &r["blocker"]["interface"]),
        (&"to-c".into(), &"192.0.2.3".into(), &t.up.as_str().into()),
        "{text}"
    );
    assert!(text.contains(&format!("neighbour 192.0.2.3 on {} is", t.up)), "{text}");
    assert!(text.contains("check the underlay link"), "{text}");

    // An MTU too small: the workload goes back to 1500.
    t.ha.ip(&["link", "set", &t.wl, "mtu", "1500"]);
    t.wa.ip(&["link", "set", &t.we, "mtu", "1500"]);
    let (r, text) = why(d, &to_b);
    assert_eq!(blocker(&r), "mtu_too_small", "{text}");
    assert_eq!(
        (&r["blocker"]["inner_mtu"], &r["blocker"]["workload_mtu"], &r["blocker"]["assumed"]),
        (&1450.into(), &1500.into(), &false.into()),
        "{text}"
    );
    assert!(text.contains("inner MTU 1450 < the workload's 1500"), "{text}");
    // And the datapath agrees: a full-size packet is dropped under to-b.
    let big =
        t.wa.exec_output(&["ping", "-c", "1", "-W", "1", "-M", "do", "-s", "1472", "198.51.100.2"]);
    assert!(!big.status.success(), "a 1500-byte packet crossed a 1450-byte tunnel");
    assert!(pings(&t.wa, "198.51.100.2", 1), "small packets still pass");
    let counted = wait_until(Duration::from_secs(5), || {
        let st = d.status();
        let tb = st["tunnels"].as_array().unwrap().iter().find(|x| x["name"] == "to-b").cloned();
        tb.is_some_and(|x| x["drops"]["mtu_exceeded"].as_u64().unwrap_or(0) >= 1)
    });
    assert!(counted, "mtu_exceeded not counted under to-b: {:#}", d.status()["tunnels"]);

    // Once the workload's MTU fits, what is left is the drops just counted.
    t.ha.ip(&["link", "set", &t.wl, "mtu", "1450"]);
    let (r, text) = why(d, &to_b);
    assert_eq!(blocker(&r), "recent_drops", "{text}");
    assert_eq!(r["blocker"]["tunnel"], "to-b", "{text}");
    assert!(r["blocker"]["drops"]["mtu_exceeded"].as_u64().unwrap_or(0) >= 1, "{text}");
    assert!(text.contains("tunnel to-b dropped packets in the last"), "{text}");

    let Topology { d, ha, .. } = t;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}

/// `name{labels} value` lines of an OpenMetrics text, as a map.
fn samples(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

fn get_metrics(d: &Overlayd) -> String {
    let r = dataplane::client::request(&d.socket(), "GET", "/metrics", &[], None).unwrap();
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

/// What of `status` the metrics must show (everything but the ages).
fn comparable(st: &Value) -> Value {
    let mut st = st.clone();
    for t in st["tunnels"].as_array_mut().into_iter().flatten() {
        t["last_rx_secs"] = Value::Null;
        t["last_tx_secs"] = Value::Null;
    }
    serde_json::json!({ "io": st["io"], "tunnels": st["tunnels"], "memory": st["memory"] })
}

#[test]
fn metrics_export_what_status_shows() {
    if !require_root("metrics_export_what_status_shows") {
        return;
    }
    let t = build();
    let d = &t.d;
    assert!(pings(&t.wa, "198.51.100.2", 3), "A -> B ping failed; log:\n{}", d.log());
    // One packet towards the unresolved to-c: a drop counted under it.
    let frame = engine::packet_spec::build(
        "eth(src=02:00:00:00:0a:aa,dst=02:00:00:00:0b:bb)/ipv4(src=198.51.100.1,dst=198.51.100.3)/udp(sport=40000,dport=9)",
    )
    .unwrap();
    inject(&t.wa, &t.we, &[frame]);
    // Both neighbours known (to-c's as unresolved), and the sampler has run.
    let known = wait_until(Duration::from_secs(10), || {
        d.status()["io"]["neighbours"].as_array().is_some_and(|v| v.len() == 2)
    });
    assert!(known, "{:#}", d.status()["io"]);
    std::thread::sleep(Duration::from_millis(1500));

    // Status, metrics, status: compared when nothing moved in between.
    let mut found = None;
    for _ in 0..20 {
        let a = d.status();
        let m = get_metrics(d);
        let b = d.status();
        if comparable(&a) == comparable(&b) {
            found = Some((a, m));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (st, text) = found.expect("status never stood still for a scrape");
    let m = samples(&text);
    let has = |key: String, want: u64| {
        assert_eq!(
            m.get(&key).map(String::as_str),
            Some(want.to_string().as_str()),
            "{key}\n{text}"
        );
    };

    let tunnels = st["tunnels"].as_array().unwrap();
    let c = tunnels.iter().find(|x| x["name"] == "to-c").unwrap();
    assert!(c["drops"]["no_neighbour"].as_u64().unwrap() >= 1, "{st:#}");
    for tn in tunnels {
        let name = tn["name"].as_str().unwrap();
        for (reason, n) in tn["drops"].as_object().unwrap() {
            has(
                format!("overlayd_tunnel_drops_total{{tunnel=\"{name}\",reason=\"{reason}\"}}"),
                n.as_u64().unwrap(),
            );
        }
        if tn["drops"]["mtu_exceeded"].is_null() {
            has(
                format!("overlayd_tunnel_drops_total{{tunnel=\"{name}\",reason=\"mtu_exceeded\"}}"),
                0,
            );
        }
        let src = &tn["next_hop"]["source"];
        let resolved = src == "static" || (src == "neighbour" && tn["next_hop"]["mac"].is_string());
        has(format!("overlayd_tunnel_next_hop_resolved{{tunnel=\"{name}\"}}"), resolved as u64);
        for dir in ["rx", "tx"] {
            let key = format!("overlayd_tunnel_seconds_since_last_packet{{tunnel=\"{name}\",direction=\"{dir}\"}}");
            match tn[format!("last_{dir}_secs")].as_u64() {
                // Ages are read a moment apart.
                Some(s) => {
                    let v: u64 = m[&key].parse().unwrap();
                    assert!(v.abs_diff(s) <= 2, "{key}: {v} vs status {s}");
                }
                None => assert!(!m.contains_key(&key), "{key} before any packet\n{text}"),
            }
        }
    }
    let b = tunnels.iter().find(|x| x["name"] == "to-b").unwrap();
    assert!(
        b["last_tx_secs"].is_u64() && b["last_rx_secs"].is_u64(),
        "pings went both ways: {b:#}"
    );
    assert!(b["encap"]["packets"].as_u64().unwrap() >= 3, "{b:#}");

    let mut sockets = 0;
    for p in st["io"]["ports"].as_array().unwrap() {
        let port = p["port"].as_str().unwrap();
        for q in p["sockets"].as_array().unwrap() {
            let queue = q["queue"].as_u64().unwrap();
            for (field, metric) in [
                ("rx_dropped", "overlayd_xsk_rx_dropped_total"),
                ("rx_ring_full", "overlayd_xsk_rx_ring_full_total"),
                ("rx_fill_ring_empty", "overlayd_xsk_rx_fill_ring_empty_total"),
                ("tx_invalid_descs", "overlayd_xsk_tx_invalid_descs_total"),
            ] {
                has(
                    format!("{metric}{{port=\"{port}\",queue=\"{queue}\"}}"),
                    q[field].as_u64().unwrap(),
                );
            }
            sockets += 1;
        }
        if let Some(steer) = p["steering"].as_object() {
            for (decision, n) in steer {
                has(
                    format!(
                        "overlayd_steer_packets_total{{port=\"{port}\",decision=\"{decision}\"}}"
                    ),
                    n.as_u64().unwrap(),
                );
            }
        }
    }
    assert_eq!(sockets, 2, "one AF_XDP socket per port: {st:#}");
    let up = st["io"]["ports"].as_array().unwrap().iter().find(|p| p["port"] == "up").unwrap();
    assert!(up["steering"]["redirected"].as_u64().unwrap() >= 3, "the pings' replies: {up:#}");

    for n in st["io"]["neighbours"].as_array().unwrap() {
        let (remote, iface) = (n["remote"].as_str().unwrap(), n["interface"].as_str().unwrap());
        let state = n["state"].as_str().unwrap();
        has(format!("overlayd_neighbour_state{{remote=\"{remote}\",interface=\"{iface}\",state=\"{state}\"}}"), 1);
        has(
            format!("overlayd_neighbour_resolved{{remote=\"{remote}\",interface=\"{iface}\"}}"),
            n["mac"].is_string() as u64,
        );
    }
    has(format!("overlayd_neighbour_resolved{{remote=\"192.0.2.2\",interface=\"{}\"}}", t.up), 1);
    has(format!("overlayd_neighbour_resolved{{remote=\"192.0.2.3\",interface=\"{}\"}}", t.up), 0);

    // Memory after the last purge: the same reading in both.
    let mem = &st["memory"];
    assert!(mem["purges"].as_u64().unwrap() >= 1, "the tick has run: {mem}");
    has("overlayd_memory_purges_total".into(), mem["purges"].as_u64().unwrap());
    for (field, kind) in [("resident_kib", "resident"), ("anon_kib", "anonymous")] {
        let kib = mem[field].as_u64().unwrap();
        assert!(kib > 0, "{mem}");
        has(format!("overlayd_memory_after_purge_bytes{{kind=\"{kind}\"}}"), kib * 1024);
    }

    let Topology { d, ha, .. } = t;
    d.stop();
    assert!(!xdp_attached(&ha), "an XDP program was left attached");
}
